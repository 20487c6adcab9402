//! A corpus of damaged files, built by corrupting good ones: each is refused with the
//! expected error (naming field and offset), `check` reports it, and nothing panics. Plus a
//! bounded random corruption run (byte flips and truncations) that must never panic.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::*;
use vhd::spec::{DynamicHeader, Footer, BAT_UNUSED};
use vhd::{CreateOptions, Error, OpenOptions, Problem, SizePolicy, Structure};

fn exact() -> CreateOptions {
    CreateOptions {
        size_policy: SizePolicy::Exact,
        ..Default::default()
    }
}

/// A dynamic disk (4 MiB, 64 KiB blocks) with the first 20 blocks allocated.
fn good_dynamic(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    vhd::create_dynamic(&p, 4 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    let d = OpenOptions::new().read_only(false).open(&p).unwrap();
    for b in 0..20u64 {
        d.write(b * 128 + 5, &[0xA5; 512]).unwrap();
    }
    drop(d);
    p
}

fn good_fixed(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    vhd::create_fixed(&p, MIB, &exact(), &mut no_progress()).unwrap();
    p
}

fn open_err(p: &Path) -> Error {
    match OpenOptions::new().open(p) {
        Ok(_) => panic!("{} opened", p.display()),
        Err(e) => e,
    }
}

fn problem(p: &Path) -> Problem {
    let e = open_err(p);
    let msg = e.to_string();
    assert!(
        msg.contains(&p.display().to_string()),
        "message names the file: {msg}"
    );
    match e {
        Error::Corrupt { problem, .. } => problem,
        other => panic!("expected a corruption error, got {other}"),
    }
}

fn assert_check_fails(p: &Path) {
    let r = vhd::check(p).unwrap();
    assert!(!r.is_clean(), "check passed {}", p.display());
}

fn patch(p: &Path, offset: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn read_at(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let f = fs::File::open(p).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

fn header(p: &Path) -> DynamicHeader {
    DynamicHeader::decode(&read_at(p, 512, 1024).try_into().unwrap())
}

/// Rewrites the header (with a valid checksum) after `f` changed it.
fn patch_header(p: &Path, f: impl FnOnce(&mut DynamicHeader)) {
    let mut h = header(p);
    f(&mut h);
    patch(p, 512, &h.encode());
}

/// Rewrites both footers (valid checksums) after `f` changed them.
fn patch_footers(p: &Path, f: impl Fn(&mut Footer)) {
    let len = fs::metadata(p).unwrap().len();
    for off in [0, len - 512] {
        let mut ft = Footer::decode(&read_at(p, off, 512).try_into().unwrap());
        if ft.cookie != *b"conectix" {
            continue;
        }
        f(&mut ft);
        patch(p, off, &ft.encode());
    }
}

fn bat_entry(p: &Path, i: u64) -> u32 {
    let h = header(p);
    u32::from_be_bytes(read_at(p, h.table_offset + i * 4, 4).try_into().unwrap())
}

fn set_bat_entry(p: &Path, i: u64, v: u32) {
    let h = header(p);
    patch(p, h.table_offset + i * 4, &v.to_be_bytes());
}

#[test]
fn bad_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let f = good_fixed(dir.path(), "f.vhd");
    let len = fs::metadata(&f).unwrap().len();
    patch(&f, len - 512, b"conectiX");
    assert!(matches!(
        problem(&f),
        Problem::BadCookie { structure: Structure::Footer, offset, .. } if offset == len - 512
    ));
    assert_check_fails(&f);

    let d = good_dynamic(dir.path(), "d.vhd");
    let len = fs::metadata(&d).unwrap().len();
    patch(&d, len - 512, b"XXXXXXXX");
    patch(&d, 0, b"XXXXXXXX");
    assert!(matches!(
        problem(&d),
        Problem::BadCookie {
            structure: Structure::Footer,
            ..
        }
    ));

    let d = good_dynamic(dir.path(), "h.vhd");
    patch(&d, 512, b"cxsparsX");
    assert!(matches!(
        problem(&d),
        Problem::BadCookie {
            structure: Structure::DynamicHeader,
            offset: 512,
            ..
        }
    ));
    assert_check_fails(&d);
}

#[test]
fn bad_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "d.vhd");
    let len = fs::metadata(&d).unwrap().len();
    patch(&d, len - 512 + 100, &[1]);
    let p = problem(&d);
    assert!(matches!(
        p,
        Problem::ChecksumMismatch {
            structure: Structure::Footer,
            ..
        }
    ));
    let msg = p.to_string();
    assert!(
        msg.starts_with(&format!(
            "footer checksum mismatch at offset {:#x}: stored 0x",
            len - 512
        )),
        "{msg}"
    );
    assert_check_fails(&d);

    let d = good_dynamic(dir.path(), "h.vhd");
    patch(&d, 512 + 200, &[1]);
    assert!(matches!(
        problem(&d),
        Problem::ChecksumMismatch {
            structure: Structure::DynamicHeader,
            offset: 512,
            ..
        }
    ));

    // A damaged copy at offset 0 is redundant: the disk opens, check reports it.
    let d = good_dynamic(dir.path(), "c.vhd");
    patch(&d, 100, &[1]);
    let disk = OpenOptions::new().open(&d).unwrap();
    assert!(disk.notes().iter().any(|n| matches!(
        n,
        Problem::ChecksumMismatch {
            structure: Structure::FooterCopy,
            ..
        }
    )));
    drop(disk);
    assert_check_fails(&d);
}

#[test]
fn bat_entry_past_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "d.vhd");
    let len = fs::metadata(&d).unwrap().len();
    set_bat_entry(&d, 12, (len / 512) as u32 + 10);
    let p = problem(&d);
    assert!(
        matches!(p, Problem::BatEntryPastEnd { entry: 12, .. }),
        "{p}"
    );
    assert!(p
        .to_string()
        .starts_with("BAT entry 12 points past the end of the file"));
    let r = vhd::check(&d).unwrap();
    assert!(r.errors().any(|f| f.message.contains("BAT entry 12")));
}

#[test]
fn overlapping_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "d.vhd");
    let e0 = bat_entry(&d, 0);
    set_bat_entry(&d, 30, e0 + 1);
    assert!(matches!(problem(&d), Problem::BatEntriesOverlap { .. }));
    assert_check_fails(&d);

    let d = good_dynamic(dir.path(), "m.vhd");
    set_bat_entry(&d, 30, 1); // the dynamic header's sector
    assert!(matches!(
        problem(&d),
        Problem::BatEntryOverlapsMetadata {
            entry: 30,
            structure: Structure::FooterCopy | Structure::DynamicHeader,
            ..
        }
    ));
}

#[test]
fn truncated_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "d.vhd");
    let len = fs::metadata(&d).unwrap().len();
    // Cut in the middle of the last block: the end footer is gone, the copy at 0 is used,
    // and the last BAT entry now points past the end.
    fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(len - 512 - 4096)
        .unwrap();
    assert!(matches!(problem(&d), Problem::BatEntryPastEnd { .. }));
    assert_check_fails(&d);
    fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "Data Offset",
            ..
        }
    ));
    fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(100)
        .unwrap();
    assert!(matches!(problem(&d), Problem::FileTooSmall { len: 100 }));
    fs::OpenOptions::new()
        .write(true)
        .open(&d)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(matches!(problem(&d), Problem::FileTooSmall { len: 0 }));
    assert_check_fails(&d);

    // A fixed disk that lost data: the footer's size does not fit.
    let f = good_fixed(dir.path(), "f.vhd");
    let footer = read_at(&f, MIB, 512);
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(MIB / 2)
        .unwrap();
    patch(&f, MIB / 2, &footer);
    assert!(matches!(
        problem(&f),
        Problem::BadField {
            field: "Current Size",
            ..
        }
    ));
}

#[test]
fn bad_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    type Patch = Box<dyn Fn(&mut DynamicHeader)>;
    let cases: Vec<(&str, Patch, &str)> = vec![
        (
            "huge",
            Box::new(|h| h.max_table_entries = 0x7FFF_FFFF),
            "BAT",
        ),
        (
            "small",
            Box::new(|h| h.max_table_entries = 3),
            "Max Table Entries",
        ),
        ("bs0", Box::new(|h| h.block_size = 0), "Block Size"),
        (
            "bs3m",
            Box::new(|h| h.block_size = 3 * 1024 * 1024),
            "Block Size",
        ),
        ("bsbig", Box::new(|h| h.block_size = 1 << 31), "Block Size"),
        (
            "ver",
            Box::new(|h| h.header_version = 0x0002_0000),
            "Header Version",
        ),
        (
            "table",
            Box::new(|h| h.table_offset = u64::MAX - 100),
            "BAT",
        ),
    ];
    for (name, f, expect) in cases {
        let d = good_dynamic(dir.path(), &format!("{name}.vhd"));
        patch_header(&d, f);
        let p = problem(&d);
        let ok = match &p {
            Problem::BadField { field, .. } => *field == expect,
            Problem::BadExtent {
                structure: Structure::Bat,
                ..
            } => expect == "BAT",
            _ => false,
        };
        assert!(ok, "{name}: {p}");
        assert_check_fails(&d);
    }
}

#[test]
fn bad_footer_fields() {
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "t.vhd");
    patch_footers(&d, |f| f.disk_type = 7);
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "Disk Type",
            ..
        }
    ));
    let d = good_dynamic(dir.path(), "s.vhd");
    patch_footers(&d, |f| f.current_size += 100);
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "Current Size",
            ..
        }
    ));
    let d = good_dynamic(dir.path(), "v.vhd");
    patch_footers(&d, |f| f.format_version = 0x0002_0000);
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "File Format Version",
            ..
        }
    ));
    let d = good_dynamic(dir.path(), "o.vhd");
    patch_footers(&d, |f| f.data_offset = 1 << 40);
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "Data Offset",
            ..
        }
    ));
    // Bigger than the BAT maps.
    let d = good_dynamic(dir.path(), "g.vhd");
    patch_footers(&d, |f| f.current_size *= 2);
    assert!(matches!(
        problem(&d),
        Problem::BadField {
            field: "Max Table Entries",
            ..
        }
    ));
}

fn chain(dir: &Path) -> (PathBuf, PathBuf) {
    let base = good_dynamic(dir, "base.vhd");
    let child = dir.join("child.vhd");
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    (base, child)
}

#[test]
fn missing_parent_names_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path());
    fs::remove_file(&base).unwrap();
    let e = open_err(&child);
    let msg = e.to_string();
    match &e {
        Error::ParentNotFound { tried, .. } => {
            assert!(tried
                .iter()
                .any(|c| c.source.starts_with("W2ru locator") && c.path == base));
            assert!(tried.iter().any(|c| c.source.contains("W2ku locator")));
        }
        other => panic!("{other}"),
    }
    assert!(msg.contains("parent not found: looked for"), "{msg}");
    assert!(msg.contains("(from W2ru locator; W2ku locator"), "{msg}");
    assert_check_fails(&child);
    // info still describes the child and says why the chain is broken.
    let info = vhd::info(&child).unwrap();
    assert!(info.chain_error.unwrap().contains("parent not found"));
}

#[test]
fn parent_found_after_moving_the_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (_base, _child) = chain(dir.path());
    let moved = dir.path().join("moved");
    fs::create_dir(&moved).unwrap();
    fs::rename(dir.path().join("base.vhd"), moved.join("base.vhd")).unwrap();
    fs::rename(dir.path().join("child.vhd"), moved.join("child.vhd")).unwrap();
    // The absolute locator is stale; the relative one finds the parent.
    let d = OpenOptions::new().open(moved.join("child.vhd")).unwrap();
    assert_eq!(d.parent_path().unwrap(), moved.join("base.vhd"));
}

#[test]
fn wrong_parent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = chain(dir.path());
    fs::remove_file(&base).unwrap();
    good_dynamic(dir.path(), "base.vhd");
    assert!(matches!(open_err(&child), Error::ParentMismatch { .. }));
    assert_check_fails(&child);
}

#[test]
fn parent_loop_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (base, a) = chain(dir.path());
    let b = dir.path().join("b.vhd");
    vhd::create_differencing(&b, &a, &CreateOptions::default(), &mut no_progress()).unwrap();
    // a's locators name base.vhd: put b there, and make a expect b's id.
    let b_uuid = OpenOptions::new()
        .open_parent(false)
        .open(&b)
        .unwrap()
        .footer()
        .uuid;
    fs::remove_file(&base).unwrap();
    fs::rename(&b, &base).unwrap();
    patch_header(&a, |h| h.parent_uuid = b_uuid);
    assert!(
        matches!(open_err(&a), Error::ParentLoop { .. }),
        "{}",
        open_err(&a)
    );
    let r = vhd::check(&a).unwrap();
    assert!(
        r.errors().any(|f| f.message.contains("loops")),
        "{:?}",
        r.findings
    );
}

#[test]
fn chain_depth_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut parent = good_dynamic(dir.path(), "d0.vhd");
    for i in 1..vhd::MAX_CHAIN_DEPTH {
        let p = dir.path().join(format!("d{i}.vhd"));
        vhd::create_differencing(&p, &parent, &CreateOptions::default(), &mut no_progress())
            .unwrap();
        parent = p;
    }
    // 64 disks open; a 65th is one too many.
    OpenOptions::new().open(&parent).unwrap();
    let top = dir.path().join("top.vhd");
    vhd::create_differencing(&top, &parent, &CreateOptions::default(), &mut no_progress()).unwrap();
    assert!(matches!(open_err(&top), Error::ChainTooDeep { .. }));
    assert_check_fails(&top);
}

/// Random corruption of metadata and random truncation: open, read and check must never
/// panic (errors are fine).
#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_dynamic(dir.path(), "good.vhd");
    let (_, child) = chain(dir.path());
    let bytes = fs::read(&good).unwrap();
    let child_bytes = fs::read(&child).unwrap();
    let target = dir.path().join("fuzz.vhd");
    let mut rng = Rng(2024);
    let mut opened = 0;
    for i in 0..400 {
        let src = if i % 2 == 0 { &bytes } else { &child_bytes };
        let mut b = src.clone();
        let h = DynamicHeader::decode(&b[512..1536].try_into().unwrap());
        let meta_end = (h.table_offset + h.max_table_entries as u64 * 4) as usize;
        for _ in 0..1 + rng.below(4) {
            // Mostly metadata: footers, header, BAT, locators.
            let at = match rng.below(4) {
                0 => rng.below(1536) as usize,
                1 => rng.below(meta_end as u64 + 1024).min(b.len() as u64 - 1) as usize,
                2 => b.len() - 1 - rng.below(512) as usize,
                _ => rng.below(b.len() as u64) as usize,
            };
            b[at] = rng.next() as u8;
        }
        if rng.below(4) == 0 {
            for off in [0usize, b.len() - 512] {
                // Keep checksums valid sometimes so that deeper checks are reached.
                let mut f = Footer::decode(&b[off..off + 512].try_into().unwrap());
                if rng.below(2) == 0 {
                    f.current_size = rng.next() % (1 << 40);
                }
                b[off..off + 512].copy_from_slice(&f.encode());
            }
            let mut h = DynamicHeader::decode(&b[512..1536].try_into().unwrap());
            if rng.below(2) == 0 {
                h.max_table_entries = rng.next() as u32;
            }
            if rng.below(3) == 0 {
                h.block_size = 1 << rng.below(32);
            }
            b[512..1536].copy_from_slice(&h.encode());
        }
        if rng.below(5) == 0 {
            b.truncate(rng.below(b.len() as u64) as usize);
        }
        fs::write(&target, &b).unwrap();
        let _ = vhd::check(&target).unwrap();
        let _ = vhd::info(&target);
        if let Ok(d) = OpenOptions::new().lock(false).open(&target) {
            opened += 1;
            let n = d.sectors().min(8192);
            let mut buf = vec![0u8; n as usize * 512];
            let _ = d.read(0, &mut buf);
        }
    }
    assert!(
        opened > 0,
        "some corruptions (data bytes) leave an openable file"
    );
}

#[test]
fn unused_entries_are_ignored() {
    // A BAT entry equal to the unused marker anywhere is fine.
    let dir = tempfile::tempdir().unwrap();
    let d = good_dynamic(dir.path(), "d.vhd");
    set_bat_entry(&d, 3, BAT_UNUSED);
    let disk = OpenOptions::new().open(&d).unwrap();
    assert_eq!(disk.allocated_blocks(), 19);
}
