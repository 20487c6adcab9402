//! First interoperability checks against qemu-img (Debian's qemu-utils): files kettle creates
//! are accepted and read identically by qemu, and files qemu creates (fixed and dynamic,
//! CHS-rounded and exact sizes) read identically in kettle. These tests fail, not skip, when
//! qemu-img is missing.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use vhd::{ConvertOptions, ConvertTarget, CreateOptions, ImageFormat, OpenOptions, SizePolicy};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!(
            "{cmd} is needed for the VHD interop tests but could not be run ({e}): install Debian's qemu-utils (resources/setup.sh does)"
        )
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes a recognizable pattern through qemu-io.
fn qemu_write(path: &Path, fmt: &str, offset: u64, len: u64, byte: u8) {
    run(
        "qemu-io",
        &[
            "-f",
            fmt,
            "-c",
            &format!("write -P {byte} {offset} {len}"),
            s(path),
        ],
    );
}

#[test]
fn qemu_accepts_kettle_images() {
    let dir = tempfile::tempdir().unwrap();
    for (name, dynamic) in [("dyn.vhd", true), ("fixed.vhd", false)] {
        let p = dir.path().join(name);
        let size = if dynamic {
            vhd::create_dynamic(
                &p,
                20 * MIB,
                vhd::DEFAULT_BLOCK_SIZE,
                &CreateOptions::default(),
                &mut no_progress(),
            )
        } else {
            vhd::create_fixed(&p, 20 * MIB, &CreateOptions::default(), &mut no_progress())
        }
        .unwrap();
        let mut rng = Rng(5);
        let mut model = vec![0u8; size as usize];
        {
            let d = OpenOptions::new().read_only(false).open(&p).unwrap();
            for _ in 0..40 {
                let count = 1 + rng.below(3000);
                let sector = rng.below(size / 512 - count);
                let mut b = vec![0u8; count as usize * 512];
                rng.fill(&mut b);
                d.write(sector, &b).unwrap();
                model[sector as usize * 512..][..b.len()].copy_from_slice(&b);
            }
        }
        let info = run("qemu-img", &["info", "-f", "vpc", "--output=json", s(&p)]);
        assert!(
            info.contains(&format!("\"virtual-size\": {size}")),
            "{info}"
        );
        let raw = dir.path().join(format!("{name}.raw"));
        write_raw(&raw, &model);
        run(
            "qemu-img",
            &["compare", "-f", "vpc", "-F", "raw", s(&p), s(&raw)],
        );
        // qemu's conversion to raw equals kettle's.
        let q = dir.path().join(format!("{name}.qemu.raw"));
        run(
            "qemu-img",
            &["convert", "-f", "vpc", "-O", "raw", s(&p), s(&q)],
        );
        let k = dir.path().join(format!("{name}.kettle.raw"));
        let opts = ConvertOptions {
            target: ConvertTarget::Raw,
            source_format: ImageFormat::Vhd,
            size_policy: SizePolicy::Exact,
        };
        vhd::convert(&p, &k, &opts, &mut no_progress()).unwrap();
        assert!(
            std::fs::read(&q).unwrap() == std::fs::read(&k).unwrap(),
            "{name}: raw conversions differ"
        );
    }
}

#[test]
fn kettle_reads_qemu_images() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("dyn10m.vhd", "subformat=dynamic", "10M"),
        ("dyn33m.vhd", "subformat=dynamic", "33M"),
        (
            "dyn-exact.vhd",
            "subformat=dynamic,force_size=on",
            "5000704",
        ),
        ("fixed10m.vhd", "subformat=fixed", "10M"),
        (
            "fixed-exact.vhd",
            "subformat=fixed,force_size=on",
            "3000320",
        ),
    ];
    for (name, opts, size) in cases {
        let p = dir.path().join(name);
        run(
            "qemu-img",
            &["create", "-q", "-f", "vpc", "-o", opts, s(&p), size],
        );
        qemu_write(&p, "vpc", 0, 65536, 0x11);
        qemu_write(&p, "vpc", MIB + 512, MIB, 0x22);
        let raw = dir.path().join(format!("{name}.raw"));
        run(
            "qemu-img",
            &["convert", "-f", "vpc", "-O", "raw", s(&p), s(&raw)],
        );
        let expect = std::fs::read(&raw).unwrap();
        let d = OpenOptions::new().open(&p).unwrap();
        assert_eq!(d.size(), expect.len() as u64, "{name}: size");
        assert!(
            read_all(&d) == expect,
            "{name}: contents differ from qemu-img convert"
        );
        drop(d);
        let report = vhd::check(&p).unwrap();
        assert!(report.is_clean(), "{name}: {:?}", report.findings);

        // kettle writes into qemu's file; qemu reads what kettle wrote.
        let mut model = expect;
        {
            let d = OpenOptions::new().read_only(false).open(&p).unwrap();
            let b = vec![0x5A; 700 * 512];
            d.write(1000, &b).unwrap();
            model[1000 * 512..][..b.len()].copy_from_slice(&b);
        }
        write_raw(&raw, &model);
        run(
            "qemu-img",
            &["compare", "-f", "vpc", "-F", "raw", s(&p), s(&raw)],
        );
    }
}
