//! File corpora kept in the repository:
//!
//! * `vhd/tests/corpus/`: damaged files, named after what is wrong with them. Most come from
//!   the fuzzer's corpus (`resources/fuzz-vhd.sh`): the smallest input refused for each kind
//!   of problem `open` reports; `differencing-parent-missing.vhd` is the differencing seed
//!   without its parent. Every `*.vhd` there must be refused by `open` with an error that
//!   names the file, be reported damaged by `check`, and never make `info` or `check` panic.
//!   A file whose name starts with `opens-` is damaged in a way that opening tolerates and
//!   once made the library fail (a crash the fuzzer found, minimized): it must open, read
//!   every sector, and pass the fuzz target's write-flush-reopen round.
//! * `vhd/fuzz/corpus/<target>/seed-*`: the fuzzers' seeds, small valid images. They must
//!   open and check clean, so that a fuzz run starts from files that reach the engine.
//!   `the_fuzz_seed_generator_makes_valid_seeds` makes and checks fresh ones every run; with
//!   `KETTLE_WRITE_FUZZ_SEEDS=1 cargo test -p vhd --test corpus the_fuzz_seed` they replace
//!   the checked-in seeds.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use vhd::spec::Uuid;
use vhd::{CreateOptions, OpenOptions, SizePolicy, VhdDisk};

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn vhd_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "vhd"))
        .collect();
    v.sort();
    v
}

/// Reads every sector (skipping what is certainly zero) and checks that the disk answers
/// with data or an error.
fn read_everything(d: &VhdDisk) {
    let step = d.block_size().map_or(128, |b| b as u64 / 512);
    let mut buf = vec![0u8; 128 * 512];
    let mut s = 0;
    while s < d.sectors() {
        let n = step.min(d.sectors() - s);
        if d.may_have_data(s, n) {
            let mut t = s;
            while t < s + n {
                let m = 128.min(s + n - t);
                let _ = d.read(t, &mut buf[..m as usize * 512]);
                t += m;
            }
        }
        s += n;
    }
}

#[test]
fn damaged_corpus_is_refused_without_panic() {
    let files = vhd_files(&repo_path("tests/corpus"));
    assert!(!files.is_empty(), "the damaged-file corpus is empty");
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for src in &files {
        let name = src.file_name().unwrap().to_string_lossy().into_owned();
        // Work on a copy: the write round must not change the corpus.
        let p = dir.path().join(&name);
        fs::copy(src, &p).unwrap();
        let _ = vhd::info(&p);
        let report = vhd::check(&p).unwrap();
        if name.starts_with("opens-") {
            let d = OpenOptions::new()
                .open_parent(false)
                .open(&p)
                .unwrap_or_else(|e| panic!("{name}: expected to open: {e}"));
            read_everything(&d);
            drop(d);
            let d = OpenOptions::new()
                .read_only(false)
                .open_parent(false)
                .open(&p)
                .unwrap();
            let last = d.sectors() - 1;
            d.write(0, &[0x5A; 512]).unwrap();
            d.write(last, &[0xC3; 512]).unwrap();
            d.flush().unwrap();
            drop(d);
            let d = OpenOptions::new()
                .open_parent(false)
                .open(&p)
                .unwrap_or_else(|e| panic!("{name}: no longer opens after writes: {e}"));
            let mut b = [0u8; 512];
            d.read(last, &mut b).unwrap();
            assert_eq!(b, [0xC3; 512], "{name}: last sector");
            if last != 0 {
                d.read(0, &mut b).unwrap();
                assert_eq!(b, [0x5A; 512], "{name}: first sector");
            }
            continue;
        }
        match OpenOptions::new().open(&p) {
            Ok(_) => failures.push(format!("{name}: opened")),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(&name) {
                    failures.push(format!("{name}: the error does not name the file: {msg}"));
                }
            }
        }
        if report.is_clean() {
            failures.push(format!("{name}: check found nothing"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Fixed id of `seed-dynamic.vhd`, which is also the parent of `seed-differencing.vhd` (the
/// fuzz target writes it as `parent.vhd` beside every input).
const SEED_PARENT_UUID: Uuid = Uuid(*b"kettle-fuzz-seed");

fn seed_dir(target: &str) -> PathBuf {
    repo_path(&format!("fuzz/corpus/{target}"))
}

#[test]
fn fuzz_seeds_open_and_check_clean() {
    check_open_image_seeds(&seed_dir("open_image"));
}

/// The `open_image` seeds in `seeds` open, read and check clean (the differencing one with the
/// dynamic one as its parent).
fn check_open_image_seeds(seeds: &Path) {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        seeds.join("seed-dynamic.vhd"),
        dir.path().join("parent.vhd"),
    )
    .unwrap();
    let files = vhd_files(seeds);
    assert!(files.len() >= 4, "seeds missing in {}", seeds.display());
    for src in files {
        let p = dir.path().join(src.file_name().unwrap());
        fs::copy(&src, &p).unwrap();
        let meta = fs::metadata(&p).unwrap();
        assert!(
            meta.len() <= 16 * 1024,
            "{}: seeds stay small",
            src.display()
        );
        let d = OpenOptions::new()
            .open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        read_everything(&d);
        drop(d);
        let r = vhd::check(&p).unwrap();
        assert!(r.is_clean(), "{}: {:?}", src.display(), r.findings);
    }
    let child = OpenOptions::new()
        .open(dir.path().join("seed-differencing.vhd"))
        .unwrap();
    assert_eq!(child.parent().unwrap().footer().uuid, SEED_PARENT_UUID);
}

fn exact(uuid: Option<Uuid>) -> CreateOptions {
    CreateOptions {
        size_policy: SizePolicy::Exact,
        uuid,
        ..Default::default()
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    Rng(seed).fill(&mut v);
    v
}

/// Makes the fuzz seeds, tiny disks (16 KiB, 1 KiB blocks) so that each is a few KiB, and
/// checks them as the checked-in seeds are checked. They go to a scratch directory; with
/// `KETTLE_WRITE_FUZZ_SEEDS=1` they replace vhd/fuzz/corpus (their UUIDs and time stamps
/// differ from run to run, so the checked-in ones are not compared byte for byte).
#[test]
fn the_fuzz_seed_generator_makes_valid_seeds() {
    let scratch = tempfile::tempdir().unwrap();
    let write = std::env::var_os("KETTLE_WRITE_FUZZ_SEEDS").is_some_and(|v| v == "1");
    let seed_dir = |target: &str| {
        if write {
            seed_dir(target)
        } else {
            scratch.path().join(target)
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut np = no_progress();

    let fixed = d.join("fixed.vhd");
    vhd::create_fixed(&fixed, 8192, &exact(None), &mut np).unwrap();
    let v = OpenOptions::new().read_only(false).open(&fixed).unwrap();
    v.write(1, &pattern(1024, 1)).unwrap();
    drop(v);

    let empty = d.join("empty.vhd");
    vhd::create_dynamic(&empty, 16 * 1024, 1024, &exact(None), &mut np).unwrap();

    let parent = d.join("parent.vhd");
    vhd::create_dynamic(
        &parent,
        16 * 1024,
        1024,
        &exact(Some(SEED_PARENT_UUID)),
        &mut np,
    )
    .unwrap();
    let v = OpenOptions::new().read_only(false).open(&parent).unwrap();
    v.write(0, &pattern(1024, 2)).unwrap();
    v.write(10, &pattern(512, 3)).unwrap();
    v.write(31, &pattern(512, 4)).unwrap();
    drop(v);

    let child = d.join("child.vhd");
    vhd::create_differencing(&child, &parent, &exact(None), &mut np).unwrap();
    let v = OpenOptions::new().read_only(false).open(&child).unwrap();
    v.write(1, &pattern(512, 5)).unwrap();
    v.write(14, &pattern(1024, 6)).unwrap();
    drop(v);

    // A dynamic disk whose last allocation was cut short: no footer at the end.
    let cut = d.join("cut.vhd");
    fs::copy(&parent, &cut).unwrap();
    let v = OpenOptions::new().read_only(false).open(&cut).unwrap();
    v.write(20, &pattern(512, 7)).unwrap();
    v.flush().unwrap();
    drop(v);
    let len = fs::metadata(&cut).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 512)
        .unwrap();

    let out = seed_dir("open_image");
    fs::create_dir_all(&out).unwrap();
    for (src, name) in [
        (&fixed, "seed-fixed.vhd"),
        (&empty, "seed-dynamic-empty.vhd"),
        (&parent, "seed-dynamic.vhd"),
        (&child, "seed-differencing.vhd"),
        (&cut, "seed-dynamic-no-end-footer.vhd"),
    ] {
        fs::copy(src, out.join(name)).unwrap();
    }

    // decode_structures: footer (512) + dynamic header (1024) + locator data in entry order.
    let out = seed_dir("decode_structures");
    fs::create_dir_all(&out).unwrap();
    let c = fs::read(&child).unwrap();
    let info = vhd::info(&child).unwrap();
    let mut s = c[..1536].to_vec();
    for l in &info.locators {
        let at = l.data_offset as usize;
        s.extend_from_slice(&c[at..at + l.data_length as usize]);
    }
    fs::write(out.join("seed-differencing"), s).unwrap();
    let f = fs::read(&fixed).unwrap();
    let mut s = f[f.len() - 512..].to_vec();
    s.extend_from_slice(&fs::read(&parent).unwrap()[512..1536 + 64]);
    fs::write(out.join("seed-fixed-footer-dynamic-header"), s).unwrap();
    check_open_image_seeds(&seed_dir("open_image"));
}

/// Found when the fuzz target got its rule that what `open` refuses, `check` reports (by
/// reading the parent search against that rule; confirmed by hand): a locator naming a file
/// that is not the parent (the child itself, or a file that is no VHD) made `open` give up
/// (a "loop", or that file's corruption) while `check` went on to the next candidate and
/// found the parent. Now both go on.
#[test]
fn locators_naming_the_child_or_a_non_vhd_are_skipped() {
    use std::os::unix::fs::FileExt;
    use vhd::spec::{platform, DynamicHeader};

    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("parent.vhd");
    let child = dir.path().join("child.vhd");
    let mut np = no_progress();
    vhd::create_dynamic(&parent, 64 * 1024, 4096, &exact(None), &mut np).unwrap();
    let p = OpenOptions::new().read_only(false).open(&parent).unwrap();
    p.write(3, &[0x42; 512]).unwrap();
    drop(p);
    vhd::create_differencing(&child, &parent, &exact(None), &mut np).unwrap();
    fs::write(dir.path().join("junk.vhd"), vec![0x11u8; 4096]).unwrap();

    for name in ["child.vhd", "junk.vhd"] {
        // Point the relative locator (tried first) at `name`; the absolute one and the
        // parent name still lead to parent.vhd.
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&child)
            .unwrap();
        let mut hb = [0u8; 1024];
        f.read_exact_at(&mut hb, 512).unwrap();
        let mut h = DynamicHeader::decode(&hb);
        let l = h
            .locators
            .iter_mut()
            .find(|l| l.platform_code == platform::W2RU)
            .unwrap();
        let data = vhd::spec::utf16le(&format!(".\\{name}"));
        assert!(data.len() as u32 <= l.data_space);
        f.write_all_at(&vec![0u8; l.data_space as usize], l.data_offset)
            .unwrap();
        f.write_all_at(&data, l.data_offset).unwrap();
        l.data_length = data.len() as u32;
        f.write_all_at(&h.encode(), 512).unwrap();
        drop(f);

        let d = OpenOptions::new()
            .open(&child)
            .unwrap_or_else(|e| panic!("W2ru naming {name}: {e}"));
        assert_eq!(
            d.parent_path(),
            Some(parent.as_path()),
            "W2ru naming {name}"
        );
        let mut b = [0u8; 512];
        d.read(3, &mut b).unwrap();
        assert_eq!(b, [0x42; 512]);
        drop(d);
        let r = vhd::check(&child).unwrap();
        assert!(r.is_clean(), "W2ru naming {name}: {:?}", r.findings);
    }
}
