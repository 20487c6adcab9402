//! Fuzz target: arbitrary bytes as a VHD file.
//!
//! The input is written to a file (the library works on files; the file lives on tmpfs when
//! `/dev/shm` exists) and then, as a user of the library would:
//!
//! 1. opened read-only without its parent; if it opens, every sector the file may hold is
//!    read (blocks the BAT leaves unallocated are skipped through `may_have_data`, so a
//!    2 TiB disk in a 4 KiB file costs one look per block, and the block count is bounded
//!    by the BAT, which must fit in the file);
//! 2. opened with its parent chain: a valid `parent.vhd` lies beside the input, and locators
//!    may also name the input itself, a missing file or any path (each must end in the
//!    parent or an error, never a panic or a hang);
//! 3. `vhd::info` and `vhd::check`: a file that open refused must not check clean;
//! 4. if it opened, opened writable (without parent), the first and last sectors written
//!    and flushed: the file must then still open and return what was written.
//!
//! Every input runs a second time with its footer and header checksums made valid
//! ([`fix_checksums`]), so that mutations get past the checksum checks.
//!
//! Panics, out-of-bounds accesses, aborts, huge allocations (`-malloc_limit_mb`) and slow
//! inputs (`-timeout`) are what libFuzzer reports.

#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vhd::{spec, OpenOptions, VhdDisk};

const SECTOR: usize = 512;
/// Largest read issued at once.
const CHUNK_SECTORS: u64 = 128;

/// The parent that `seed-differencing.vhd` names (relative locator `.\parent.vhd`); it lies
/// beside every input so that mutated children reach the chain code.
const PARENT: &[u8] = include_bytes!("../corpus/open_image/seed-dynamic.vhd");

/// `$VHD_FUZZ_DIR/<pid>` (resources/fuzz-vhd.sh sets it and removes it afterwards), or
/// `vhd-fuzz-<pid>` under /dev/shm or the temporary directory.
fn work_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let pid = std::process::id();
        let d = match std::env::var_os("VHD_FUZZ_DIR") {
            Some(base) => PathBuf::from(base).join(pid.to_string()),
            None if std::path::Path::new("/dev/shm").is_dir() => {
                PathBuf::from(format!("/dev/shm/vhd-fuzz-{pid}"))
            }
            None => std::env::temp_dir().join(format!("vhd-fuzz-{pid}")),
        };
        fs::create_dir_all(&d).expect("creating the work directory");
        fs::write(d.join("parent.vhd"), PARENT).expect("writing parent.vhd");
        d
    })
}

/// Reads every sector that may hold data, in chunks of at most `CHUNK_SECTORS`.
fn read_everything(d: &VhdDisk) {
    let sectors = d.sectors();
    let step = d
        .block_size()
        .map_or(sectors.max(1), |b| b as u64 / SECTOR as u64);
    let mut buf = vec![0u8; CHUNK_SECTORS as usize * SECTOR];
    let mut s = 0u64;
    while s < sectors {
        let n = step.min(sectors - s);
        if d.may_have_data(s, n) {
            let mut t = s;
            while t < s + n {
                let m = CHUNK_SECTORS.min(s + n - t);
                let _ = d.read(t, &mut buf[..m as usize * SECTOR]);
                t += m;
            }
        }
        s += n;
    }
    let _ = d.own_extents();
    let _ = d.allocated_blocks();
    // Accesses outside the disk are errors, never panics.
    let _ = d.read(sectors, &mut buf[..SECTOR]);
    let _ = d.read(u64::MAX, &mut buf[..SECTOR]);
}

/// Recomputes the checksums of the footers (at the end and at 0) and of the dynamic header
/// the end footer points to, when their cookies are there. Mutations almost always break a
/// checksum; running every input a second time with valid checksums lets the fuzzer reach
/// the checks behind them (sizes, BAT, locators, the engine) as often as the first ones.
fn fix_checksums(b: &mut [u8]) {
    const FOOTER: usize = 512;
    const HEADER: usize = 1024;
    fn fix(b: &mut [u8], at: usize, len: usize, cookie: &[u8], sum_at: usize) {
        if at.checked_add(len).is_some_and(|e| e <= b.len()) && b[at..at + 8] == *cookie {
            let sum = spec::checksum(&b[at..at + len], sum_at);
            b[at + sum_at..at + sum_at + 4].copy_from_slice(&sum.to_be_bytes());
        }
    }
    if b.len() < FOOTER {
        return;
    }
    let end = b.len() - FOOTER;
    for at in [end, 0] {
        fix(
            b,
            at,
            FOOTER,
            &spec::FOOTER_COOKIE,
            spec::footer_field::CHECKSUM,
        );
    }
    let at = if b[end..end + 8] == spec::FOOTER_COOKIE {
        end
    } else {
        0
    };
    let off = spec::footer_field::DATA_OFFSET;
    let h = u64::from_be_bytes(b[at + off..at + off + 8].try_into().unwrap());
    if let Ok(h) = usize::try_from(h) {
        fix(
            b,
            h,
            HEADER,
            &spec::DYNAMIC_COOKIE,
            spec::header_field::CHECKSUM,
        );
    }
}

fuzz_target!(|data: &[u8]| {
    run(data);
    let mut fixed = data.to_vec();
    fix_checksums(&mut fixed);
    if fixed != data {
        run(&fixed);
    }
});

fn run(data: &[u8]) {
    let path = work_dir().join("input.vhd");
    let _ = fs::remove_file(&path);
    fs::write(&path, data).expect("writing the input file");

    let opened = OpenOptions::new().open_parent(false).open(&path);
    if let Ok(d) = &opened {
        read_everything(d);
    }
    drop(opened);
    let full = OpenOptions::new().open(&path);
    if let Ok(d) = &full {
        read_everything(d);
    }
    let full = full.map(drop);
    let _ = vhd::info(&path);
    // `check` and `open` judge a file alike: what open refuses, check reports.
    if let (Ok(report), Err(e)) = (vhd::check(&path), &full) {
        assert!(
            !report.is_clean(),
            "open refuses the file ({e}) but check finds nothing"
        );
    }

    // Writes into a file that opened must keep it openable and must read back.
    let Ok(d) = OpenOptions::new()
        .read_only(false)
        .open_parent(false)
        .open(&path)
    else {
        return;
    };
    let last = d.sectors().saturating_sub(1);
    let a = [0x5Au8; SECTOR];
    let b = [0xC3u8; SECTOR];
    let wrote = d.write(0, &a).is_ok() && d.write(last, &b).is_ok() && d.flush().is_ok();
    drop(d);
    if !wrote {
        return;
    }
    let d = OpenOptions::new()
        .open_parent(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("a file that was written and flushed no longer opens: {e}"));
    let mut got = [0u8; SECTOR];
    d.read(last, &mut got)
        .expect("reading back the last sector");
    assert!(got == b, "last sector does not read back");
    if last != 0 {
        d.read(0, &mut got).expect("reading back the first sector");
        assert!(got == a, "first sector does not read back");
    }
}
