//! The image operations: create, info, check, convert, merge, compact, resize, undo disks
//! and clones, locks.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use vhd::{
    BlockDevice, ConvertOptions, ConvertTarget, CreateOptions, DiskType, Error, ImageFormat,
    OpenOptions, ResizeOptions, SizePolicy, VhdDisk,
};

fn exact() -> CreateOptions {
    CreateOptions {
        size_policy: SizePolicy::Exact,
        ..Default::default()
    }
}

fn rw(p: &Path) -> VhdDisk {
    OpenOptions::new().read_only(false).open(p).unwrap()
}

fn ro(p: &Path) -> VhdDisk {
    OpenOptions::new().open(p).unwrap()
}

/// Content with data in some 64 KiB pieces and zeros elsewhere.
fn patchy(size: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut v = vec![0u8; size as usize];
    for chunk in v.chunks_mut(64 * 1024) {
        if rng.below(3) == 0 {
            rng.fill(chunk);
        }
    }
    v
}

#[test]
fn create_rounds_to_geometry_and_refuses_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.vhd");
    let mut calls = 0;
    let size = vhd::create_dynamic(
        &p,
        10 * MIB,
        vhd::DEFAULT_BLOCK_SIZE,
        &CreateOptions::default(),
        &mut |_, _| calls += 1,
    )
    .unwrap();
    assert!(calls > 0);
    assert_eq!(size, 20536 * 512, "qemu's size for 10 MiB");
    let d = ro(&p);
    assert_eq!(d.footer().geometry.sectors() * 512, size);
    assert_eq!(&d.footer().creator_app, b"kttl");
    assert_eq!(d.footer().creator_host_os, vhd::spec::HOST_OS_WINDOWS);
    drop(d);
    assert!(matches!(
        vhd::create_fixed(&p, MIB, &exact(), &mut no_progress()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        vhd::create_dynamic(
            &dir.path().join("b.vhd"),
            MIB,
            3000,
            &exact(),
            &mut no_progress()
        ),
        Err(Error::InvalidArgument(_))
    ));
    assert!(vhd::create_fixed(
        &dir.path().join("c.vhd"),
        3 * 1024 * 1024 * MIB,
        &exact(),
        &mut no_progress()
    )
    .is_err());
    // No temporary files left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn preallocated_fixed_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.vhd");
    let opts = CreateOptions {
        preallocate: true,
        ..exact()
    };
    let mut last = (0, 0);
    vhd::create_fixed(&p, 3 * MIB, &opts, &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(last, (3 * MIB, 3 * MIB));
    assert_eq!(fs::metadata(&p).unwrap().len(), 3 * MIB + 512);
    assert!(fs::metadata(&p).unwrap().blocks() * 512 >= 3 * MIB);
}

#[test]
fn info_reports_fields_allocation_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, 8 * MIB, 1024 * 1024, &exact(), &mut no_progress()).unwrap();
    rw(&base).write(0, &[1u8; 512]).unwrap();
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    let i = vhd::info(&base).unwrap();
    assert_eq!(i.disk_type, DiskType::Dynamic);
    assert_eq!((i.allocated_blocks, i.total_blocks), (1, 8));
    assert!((i.allocation_ratio - 0.125).abs() < 1e-9);
    assert_eq!(i.block_size, Some(1024 * 1024));
    let i = vhd::info(&child).unwrap();
    assert_eq!(i.disk_type, DiskType::Differencing);
    assert_eq!(i.chain.len(), 1);
    assert_eq!(i.chain[0].path, base);
    let h = i.header.unwrap();
    assert_eq!(h.parent_uuid, i.chain[0].uuid);
    assert!(h.parent_name.ends_with("\\base.vhd"), "{}", h.parent_name);
    let kinds: Vec<_> = i
        .locators
        .iter()
        .map(|l| (l.kind(), l.path.clone().unwrap()))
        .collect();
    assert_eq!(kinds[0].0, "W2ku");
    assert!(kinds[0].1.ends_with("\\base.vhd") && kinds[0].1.starts_with('\\'));
    assert_eq!(kinds[1], ("W2ru".to_string(), ".\\base.vhd".to_string()));
}

#[test]
fn convert_raw_vhd_round_trips_sparsely() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.img");
    let data = patchy(6 * MIB, 1);
    write_raw(&raw, &data);
    let dynp = dir.path().join("d.vhd");
    let opts = ConvertOptions {
        target: ConvertTarget::Dynamic {
            block_size: 64 * 1024,
        },
        source_format: ImageFormat::Raw,
        size_policy: SizePolicy::Exact,
    };
    let mut progress = Vec::new();
    vhd::convert(&raw, &dynp, &opts, &mut |d, t| progress.push((d, t))).unwrap();
    assert_eq!(progress.last(), Some(&(6 * MIB, 6 * MIB)));
    let d = ro(&dynp);
    assert_bytes(&read_all(&d), &data);
    let nonzero = data
        .chunks(64 * 1024)
        .filter(|c| c.iter().any(|b| *b != 0))
        .count() as u64;
    assert_eq!(
        d.allocated_blocks(),
        nonzero,
        "zero blocks stay unallocated"
    );
    drop(d);
    // Fixed, and back to raw.
    let fixed = dir.path().join("f.vhd");
    let auto = ConvertOptions {
        source_format: ImageFormat::Auto,
        ..opts
    };
    vhd::convert(
        &dynp,
        &fixed,
        &ConvertOptions {
            target: ConvertTarget::Fixed,
            ..auto
        },
        &mut no_progress(),
    )
    .unwrap();
    assert_bytes(&read_all(&ro(&fixed)), &data);
    assert_eq!(ro(&fixed).disk_type(), DiskType::Fixed);
    let back = dir.path().join("back.img");
    let to_raw = ConvertOptions {
        target: ConvertTarget::Raw,
        source_format: ImageFormat::Auto,
        ..opts
    };
    vhd::convert(&fixed, &back, &to_raw, &mut no_progress()).unwrap();
    assert_bytes(&fs::read(&back).unwrap(), &data);
    // The raw output is sparse.
    assert!(fs::metadata(&back).unwrap().blocks() * 512 < 6 * MIB);
    // Default rounding: the VHD is a little larger, with zeros at the end.
    let rounded = dir.path().join("r.vhd");
    vhd::convert(
        &raw,
        &rounded,
        &ConvertOptions {
            source_format: ImageFormat::Raw,
            ..Default::default()
        },
        &mut no_progress(),
    )
    .unwrap();
    let r = ro(&rounded);
    assert!(r.size() >= data.len() as u64);
    let all = read_all(&r);
    assert_bytes(&all[..data.len()], &data[..]);
    assert!(all[data.len()..].iter().all(|b| *b == 0));
    // The destination may not be the source.
    assert!(vhd::convert(&fixed, &fixed, &to_raw, &mut no_progress()).is_err());
    assert_bytes(&read_all(&ro(&fixed)), &data);
}

#[test]
fn convert_flattens_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let mid = dir.path().join("mid.vhd");
    let top = dir.path().join("top.vhd");
    vhd::create_dynamic(&base, 4 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    rw(&base).write(0, &patchy(2 * MIB, 3)).unwrap();
    vhd::create_differencing(&mid, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    rw(&mid).write(1024, &patchy(MIB, 4)).unwrap();
    vhd::create_differencing(&top, &mid, &CreateOptions::default(), &mut no_progress()).unwrap();
    rw(&top).write(3000, &vec![0u8; 512 * 100]).unwrap();
    let expect = read_all(&ro(&top));
    let flat = dir.path().join("flat.vhd");
    vhd::convert(
        &top,
        &flat,
        &ConvertOptions {
            size_policy: SizePolicy::Exact,
            ..Default::default()
        },
        &mut no_progress(),
    )
    .unwrap();
    let f = ro(&flat);
    assert_eq!(f.disk_type(), DiskType::Dynamic);
    assert_bytes(&read_all(&f), &expect);
    // Refuses to write over a file of the source's chain.
    assert!(vhd::convert(&top, &base, &ConvertOptions::default(), &mut no_progress()).is_err());
}

#[test]
fn merge_writes_the_child_into_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, 4 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    rw(&base).write(0, &patchy(4 * MIB, 5)).unwrap();
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    {
        let c = rw(&child);
        c.write(10, &patchy(MIB, 6)).unwrap();
        c.write(5000, &vec![0u8; 512 * 300]).unwrap(); // zeros hide the parent
    }
    let expect = read_all(&ro(&child));
    let mut last = (0, 0);
    let report = vhd::merge(&child, &mut |d, t| last = (d, t)).unwrap();
    assert_eq!(report.parent, base);
    assert_eq!(last.0, last.1);
    assert_bytes(&read_all(&ro(&base)), &expect);
    // The child still reads the same (merging again is harmless).
    assert_bytes(&read_all(&ro(&child)), &expect);
    vhd::merge(&child, &mut no_progress()).unwrap();
    assert_bytes(&read_all(&ro(&base)), &expect);
    assert!(vhd::check(&base).unwrap().is_clean());
    // A dynamic disk has nothing to merge into.
    assert!(matches!(
        vhd::merge(&base, &mut no_progress()),
        Err(Error::Unsupported { .. })
    ));
}

#[test]
fn compact_drops_zero_blocks_and_keeps_identity() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vhd");
    vhd::create_dynamic(&p, 8 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    let data = patchy(8 * MIB, 7);
    {
        let d = rw(&p);
        // Allocate everything, then zero some blocks again.
        d.write(0, &vec![0xEE; 8 * MIB as usize]).unwrap();
        d.write(0, &data).unwrap();
        assert_eq!(d.allocated_blocks(), 128);
    }
    let uuid = ro(&p).footer().uuid;
    let child = dir.path().join("child.vhd");
    vhd::create_differencing(&child, &p, &CreateOptions::default(), &mut no_progress()).unwrap();
    let report = vhd::compact(&p, &mut no_progress()).unwrap();
    let nonzero = data
        .chunks(64 * 1024)
        .filter(|c| c.iter().any(|b| *b != 0))
        .count() as u64;
    assert_eq!((report.blocks_before, report.blocks_after), (128, nonzero));
    assert!(report.file_size_after < report.file_size_before);
    let d = ro(&p);
    assert_eq!(d.footer().uuid, uuid);
    assert_bytes(&read_all(&d), &data);
    drop(d);
    // The child still finds and matches its parent.
    assert_bytes(&read_all(&ro(&child)), &data);
    // Compacting a differencing disk keeps zeros that hide the parent.
    rw(&child).write(0, &vec![0u8; 64 * 1024]).unwrap();
    let before = read_all(&ro(&child));
    vhd::compact(&child, &mut no_progress()).unwrap();
    assert_bytes(&read_all(&ro(&child)), &before);
    assert_eq!(ro(&child).allocated_blocks(), 1);
    assert!(vhd::check(&child).unwrap().is_clean());
}

#[test]
fn resize_grows_fixed_and_dynamic_disks() {
    let dir = tempfile::tempdir().unwrap();
    let ropts = ResizeOptions {
        size_policy: SizePolicy::Exact,
    };
    // Fixed.
    let f = dir.path().join("f.vhd");
    vhd::create_fixed(&f, MIB, &exact(), &mut no_progress()).unwrap();
    let data = patchy(MIB, 8);
    rw(&f).write(0, &data).unwrap();
    assert_eq!(
        vhd::resize(&f, 3 * MIB, &ropts, &mut no_progress()).unwrap(),
        3 * MIB
    );
    let d = ro(&f);
    let all = read_all(&d);
    assert_bytes(&all[..MIB as usize], &data[..]);
    assert!(all[MIB as usize..].iter().all(|b| *b == 0));
    assert_eq!(d.footer().original_size, MIB);
    drop(d);
    assert!(vhd::check(&f).unwrap().is_clean());
    assert!(matches!(
        vhd::resize(&f, MIB, &ropts, &mut no_progress()),
        Err(Error::Unsupported { .. })
    ));

    // Dynamic, BAT grows within its sector (16 -> 100 entries of 64 KiB).
    let d1 = dir.path().join("d1.vhd");
    vhd::create_dynamic(&d1, MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    rw(&d1).write(0, &data).unwrap();
    vhd::resize(&d1, 100 * 64 * 1024, &ropts, &mut no_progress()).unwrap();
    let d = rw(&d1);
    assert_eq!(d.size(), 100 * 64 * 1024);
    assert_bytes(&read_all(&d)[..MIB as usize], &data[..]);
    d.write(99 * 128, &[7u8; 512]).unwrap();
    drop(d);
    assert!(
        vhd::check(&d1).unwrap().is_clean(),
        "{:?}",
        vhd::check(&d1).unwrap().findings
    );

    // Dynamic with blocks right after the BAT: the BAT moves to the end.
    let d2 = dir.path().join("d2.vhd");
    vhd::create_dynamic(&d2, MIB, 4096, &exact(), &mut no_progress()).unwrap();
    rw(&d2).write(0, &data).unwrap();
    vhd::resize(&d2, 8 * MIB, &ropts, &mut no_progress()).unwrap();
    let d = rw(&d2);
    assert_ne!(d.header().unwrap().table_offset, 1536, "BAT relocated");
    assert_eq!(d.size(), 8 * MIB);
    let mut expect = data.clone();
    expect.resize(8 * MIB as usize, 0);
    assert_bytes(&read_all(&d), &expect);
    d.write(16000, &[9u8; 1024]).unwrap();
    expect[16000 * 512..16002 * 512].fill(9);
    drop(d);
    assert_bytes(&read_all(&ro(&d2)), &expect);
    let r = vhd::check(&d2).unwrap();
    assert!(r.is_clean(), "{:?}", r.findings);

    // A differencing disk over an empty dynamic disk (BAT followed by locators).
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    vhd::create_dynamic(&base, MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    rw(&child).write(0, &data).unwrap();
    vhd::resize(&child, 4 * MIB, &ropts, &mut no_progress()).unwrap();
    let c = ro(&child);
    let mut expect = data.clone();
    expect.resize(4 * MIB as usize, 0);
    assert_bytes(&read_all(&c), &expect);
}

#[test]
fn undo_disk_commit_and_discard() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("disk.vhd");
    vhd::create_dynamic(&base, 2 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    let original = patchy(2 * MIB, 9);
    rw(&base).write(0, &original).unwrap();
    let undo = vhd::undo::undo_path(&base);
    assert_eq!(undo, dir.path().join("disk.vud"));

    // Discard: the base is untouched.
    vhd::undo::create_undo(&base, &undo).unwrap();
    rw(&undo).write(0, &[0xFF; 4096]).unwrap();
    vhd::undo::discard_undo(&undo).unwrap();
    assert!(!undo.exists());
    assert_bytes(&read_all(&ro(&base)), &original);

    // Commit: the base takes the changes, the undo file goes away.
    vhd::undo::create_undo(&base, &undo).unwrap();
    let expect = {
        let u = rw(&undo);
        u.write(100, &[0xAB; 8192]).unwrap();
        u.flush().unwrap();
        read_all(&u)
    };
    vhd::undo::commit_undo(&undo, &mut no_progress()).unwrap();
    assert!(!undo.exists());
    assert_bytes(&read_all(&ro(&base)), &expect);
    // Discarding something that is not an undo disk is refused.
    assert!(vhd::undo::discard_undo(&base).is_err());
    assert!(base.exists());
}

#[test]
fn clones_share_a_golden_image_that_cannot_be_opened_for_writing() {
    let dir = tempfile::tempdir().unwrap();
    let golden = dir.path().join("golden.vhd");
    vhd::create_dynamic(&golden, 2 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    let data = patchy(2 * MIB, 10);
    rw(&golden).write(0, &data).unwrap();
    let clones: Vec<_> = (0..4)
        .map(|i| dir.path().join(format!("clone{i}.vhd")))
        .collect();
    let mut steps = Vec::new();
    vhd::undo::create_clones(&golden, &clones, &mut |d, t| steps.push((d, t))).unwrap();
    assert_eq!(steps.last(), Some(&(4, 4)));
    let open: Vec<_> = clones.iter().map(|c| rw(c)).collect();
    for (i, c) in open.iter().enumerate() {
        c.write(i as u64, &[i as u8 + 1; 512]).unwrap();
    }
    // While clones are open, the golden image is not writable (nor by a second writer).
    assert!(matches!(
        OpenOptions::new().read_only(false).open(&golden),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(
        OpenOptions::new().read_only(false).open(&clones[0]),
        Err(Error::Locked { .. })
    ));
    for (i, c) in open.iter().enumerate() {
        let mut expect = data.clone();
        expect[i * 512..(i + 1) * 512].fill(i as u8 + 1);
        assert_bytes(&read_all(c), &expect);
    }
    drop(open);
    // Afterwards it is.
    rw(&golden);
    // A clone cannot be made of a disk open for writing.
    let w = rw(&golden);
    assert!(matches!(
        vhd::create_differencing(
            &dir.path().join("x.vhd"),
            &golden,
            &CreateOptions::default(),
            &mut no_progress()
        ),
        Err(Error::Locked { .. })
    ));
    drop(w);
}

#[test]
fn open_image_detects_formats() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.img");
    write_raw(&raw, &[0u8; 4096]);
    assert_eq!(vhd::detect_format(&raw).unwrap(), ImageFormat::Raw);
    let v = dir.path().join("disk.bin");
    vhd::create_dynamic(&v, MIB, 4096, &exact(), &mut no_progress()).unwrap();
    assert_eq!(vhd::detect_format(&v).unwrap(), ImageFormat::Vhd);
    let d: Box<dyn BlockDevice> = vhd::open_image(&v, ImageFormat::Auto, true).unwrap();
    assert_eq!(d.sectors(), 2048);
    // A damaged .vhd is reported as a VHD problem, not read as raw.
    let bad = dir.path().join("bad.vhd");
    write_raw(&bad, &[0u8; 4096]);
    assert!(matches!(
        vhd::open_image(&bad, ImageFormat::Auto, true),
        Err(Error::Corrupt { .. })
    ));
}
