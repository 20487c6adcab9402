//! Fuzz target: the structure decoders of `vhd::spec` on arbitrary bytes, without files.
//!
//! The input is cut into a footer (512 bytes), a dynamic header (1024 bytes) and the rest,
//! which serves as parent locator data, BAT bytes and a sector bitmap (short inputs are
//! padded with zeros). Checked, besides "no panic":
//! * decode → encode → decode is stable for the footer and the header (the header's parent
//!   name survives the trip), and an encoded structure carries a valid checksum;
//! * parent locator data decodes to a path and `parent_candidates` turns the header's
//!   locators into candidate paths without panicking, whatever their text;
//! * the CHS geometry of any size describes no more sectors than asked for, and
//!   `Geometry::round_up` never goes below its argument;
//! * BAT decoding and the bitmap helpers stay inside their buffers for any index in range.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vhd::spec::{
    self, platform, DynamicHeader, Footer, Geometry, DYNAMIC_HEADER_SIZE, FOOTER_SIZE,
    MAX_CHS_SECTORS,
};
use vhd::Locator;

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    b
}

fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let fb: [u8; FOOTER_SIZE] = take(&mut data);
    let hb: [u8; DYNAMIC_HEADER_SIZE] = take(&mut data);
    let rest = data;

    // Footer.
    let f = Footer::decode(&fb);
    let _ = Footer::compute_checksum(&fb);
    let _ = (
        f.kind(),
        f.creator_app_str(),
        f.uuid.to_string(),
        f.geometry.to_string(),
    );
    let _ = spec::timestamp_to_unix(f.timestamp);
    let enc = f.encode();
    assert_eq!(
        Footer::compute_checksum(&enc),
        Footer::decode(&enc).checksum
    );
    let mut f2 = Footer::decode(&enc);
    f2.checksum = f.checksum;
    assert_eq!(f2, f, "footer decode/encode round trip");

    // CHS geometry of the size the footer claims.
    let sectors = f.current_size / 512;
    let g = Geometry::from_sectors(sectors);
    assert!(g.sectors() <= sectors.min(MAX_CHS_SECTORS));
    let _ = g.sectors();
    // round_up searches upward; keep the search short by trying sizes it finishes quickly
    // on (the search steps one sector at a time and gaps are below 16 * 255 sectors).
    let small = sectors % (MAX_CHS_SECTORS + 1);
    assert!(Geometry::round_up(small) >= small);

    // Dynamic header and its parent locator entries.
    let h = DynamicHeader::decode(&hb);
    let _ = DynamicHeader::compute_checksum(&hb);
    let _ = (
        h.block_sectors(),
        h.bitmap_bytes(),
        spec::bat_bytes(h.max_table_entries),
    );
    let henc = h.encode();
    assert_eq!(
        DynamicHeader::compute_checksum(&henc),
        DynamicHeader::decode(&henc).checksum
    );
    let mut h2 = DynamicHeader::decode(&henc);
    h2.checksum = h.checksum;
    assert_eq!(h2, h, "dynamic header decode/encode round trip");

    // Locator data: each entry takes a slice of the rest, as much as its length asks for.
    let mut locators = Vec::new();
    let mut off = 0usize;
    for (i, l) in h.locators.iter().enumerate() {
        if l.platform_code == platform::NONE {
            continue;
        }
        let _ = platform::name(l.platform_code);
        let len = (l.data_length as usize).min(rest.len() - off);
        let bytes = &rest[off..off + len];
        off += len;
        let path = match l.platform_code {
            platform::W2KU | platform::W2RU => Some(spec::from_utf16le(bytes)),
            platform::WI2K | platform::WI2R | platform::MACX => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        };
        locators.push(Locator {
            index: i as u8,
            platform_code: l.platform_code,
            data_offset: l.data_offset,
            data_length: l.data_length,
            path,
        });
    }
    for c in vhd::parent_candidates(Path::new("/nonexistent/dir/child.vhd"), &h, &locators) {
        assert!(!c.source.is_empty());
    }
    let s = spec::from_utf16le(rest);
    assert!(spec::utf16le(&s).len() <= rest.len() + rest.len() / 2 + 2);

    // BAT and bitmap helpers on the rest.
    let bat = spec::decode_bat(rest);
    assert_eq!(bat.len(), rest.len() / 4);
    let enc_bat = spec::encode_bat(&bat);
    assert_eq!(spec::decode_bat(&enc_bat[..bat.len() * 4]), bat);
    if !rest.is_empty() {
        let bits = rest.len() as u64 * 8;
        let a = u64::from(fb[500]) * 256 + u64::from(fb[501]);
        let b = u64::from(fb[502]) * 256 + u64::from(fb[503]);
        let (start, end) = (a.min(b) % bits, (a.max(b) % bits) + 1);
        let (start, end) = (start.min(end - 1), end.max(start + 1));
        let (v, run_end) = spec::bitmap_run(rest, start, end);
        assert!(run_end > start && run_end <= end);
        assert_eq!(v, spec::bitmap_get(rest, start));
        let mut bm = rest.to_vec();
        spec::bitmap_set_range(&mut bm, start, end - start);
        assert!(spec::bitmap_all_set(&bm, start, end - start));
    }
});
