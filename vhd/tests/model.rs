//! Random read/write workloads against a plain in-memory model, for every disk type and for
//! differencing chains. Fixed seeds keep them reproducible and bounded in time.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use vhd::{BlockDevice, CreateOptions, OpenOptions, SizePolicy, VhdDisk};

const SECTOR: usize = 512;

fn exact() -> CreateOptions {
    CreateOptions {
        size_policy: SizePolicy::Exact,
        ..Default::default()
    }
}

/// Random writes (random data, zeros, small and multi-block), reads checked against the
/// model, and flushes.
fn workload(dev: &dyn BlockDevice, model: &mut [u8], seed: u64, ops: usize, max_sectors: u64) {
    let mut rng = Rng(seed);
    let sectors = dev.sectors();
    assert_eq!(model.len() as u64, sectors * 512);
    for op in 0..ops {
        let max = if rng.below(5) == 0 { max_sectors } else { 16 };
        let count = (1 + rng.below(max)).min(sectors);
        let sector = rng.below(sectors - count + 1);
        let range = sector as usize * SECTOR..(sector + count) as usize * SECTOR;
        match rng.below(10) {
            0..=4 => {
                let mut data = vec![0u8; range.len()];
                if rng.below(5) != 0 {
                    rng.fill(&mut data);
                }
                dev.write(sector, &data).unwrap();
                model[range].copy_from_slice(&data);
            }
            5..=8 => {
                let mut data = vec![0u8; range.len()];
                dev.read(sector, &mut data).unwrap();
                assert!(
                    data == model[range.clone()],
                    "seed {seed} op {op}: read of {count} sectors at {sector} differs from the model"
                );
            }
            _ => dev.flush().unwrap(),
        }
    }
    dev.flush().unwrap();
}

fn assert_same(dev: &dyn BlockDevice, model: &[u8], what: &str) {
    let got = read_all(dev);
    if got != model {
        let first = got
            .chunks(SECTOR)
            .zip(model.chunks(SECTOR))
            .position(|(a, b)| a != b)
            .unwrap();
        panic!("{what}: first differing sector {first}");
    }
}

fn rw(path: &Path) -> VhdDisk {
    OpenOptions::new().read_only(false).open(path).unwrap()
}

fn ro(path: &Path) -> VhdDisk {
    OpenOptions::new().open(path).unwrap()
}

#[test]
fn fixed_disk_matches_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fixed.vhd");
    let size = vhd::create_fixed(&path, 3 * MIB + 7 * 512, &exact(), &mut no_progress()).unwrap();
    assert_eq!(size, 3 * MIB + 7 * 512);
    let mut model = vec![0u8; size as usize];
    for seed in 1..=3 {
        let d = rw(&path);
        workload(&d, &mut model, seed, 300, 200);
        drop(d);
        assert_same(&ro(&path), &model, "fixed after reopen");
    }
    assert!(vhd::check(&path).unwrap().is_clean());
}

#[test]
fn dynamic_disks_match_model_for_several_block_sizes() {
    let dir = tempfile::tempdir().unwrap();
    for (i, block_size) in [512u32, 4096, 64 * 1024, 2 * 1024 * 1024]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("dyn{i}.vhd"));
        // Not a multiple of the block size: the last block is partial.
        let size = vhd::create_dynamic(
            &path,
            5 * MIB + 3 * 512,
            block_size,
            &exact(),
            &mut no_progress(),
        )
        .unwrap();
        let mut model = vec![0u8; size as usize];
        for seed in 1..=2 {
            let d = rw(&path);
            workload(
                &d,
                &mut model,
                seed * 100 + i as u64,
                250,
                3 * (block_size as u64 / 512) + 5,
            );
            drop(d);
            let d = ro(&path);
            assert_same(&d, &model, &format!("dynamic, block size {block_size}"));
        }
        let report = vhd::check(&path).unwrap();
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(report.findings.len(), 0, "{:?}", report.findings);
    }
}

#[test]
fn zero_writes_do_not_allocate_dynamic_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.vhd");
    vhd::create_dynamic(&path, 8 * MIB, 64 * 1024, &exact(), &mut no_progress()).unwrap();
    let d = rw(&path);
    d.write(0, &vec![0u8; 4 * MIB as usize]).unwrap();
    assert_eq!(d.allocated_blocks(), 0);
    d.write(300, &[1u8; 512]).unwrap();
    assert_eq!(d.allocated_blocks(), 1);
    drop(d);
    assert_eq!(ro(&path).allocated_blocks(), 1);
}

/// Builds a dynamic base with random content and returns its model.
fn base_with_data(path: &Path, size: u64, block_size: u32, seed: u64) -> Vec<u8> {
    let size = vhd::create_dynamic(path, size, block_size, &exact(), &mut no_progress()).unwrap();
    let mut model = vec![0u8; size as usize];
    let d = rw(path);
    workload(&d, &mut model, seed, 150, 300);
    model
}

#[test]
fn differencing_disk_matches_model_and_leaves_parent_alone() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let base_model = base_with_data(&base, 4 * MIB, 64 * 1024, 7);
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    let mut model = base_model.clone();
    for seed in 1..=3 {
        let d = rw(&child);
        assert_eq!(d.disk_type(), vhd::DiskType::Differencing);
        assert!(d.parent().unwrap().read_only());
        // Zero writes must hide the parent's data.
        workload(&d, &mut model, seed, 300, 300);
        drop(d);
        assert_same(&ro(&child), &model, "differencing after reopen");
    }
    assert_same(&ro(&base), &base_model, "parent unchanged");
    let report = vhd::check(&child).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(
        report.chain,
        vec![dir
            .path()
            .join("child.vhd")
            .parent()
            .unwrap()
            .join("base.vhd")]
    );
}

#[test]
fn chain_of_depth_three_matches_model() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let mid = dir.path().join("mid.vhd");
    let top = dir.path().join("top.vhd");
    let base_model = base_with_data(&base, 3 * MIB, 32 * 1024, 11);
    vhd::create_differencing(&mid, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    let mut mid_model = base_model.clone();
    {
        let d = rw(&mid);
        workload(&d, &mut mid_model, 12, 150, 200);
    }
    vhd::create_differencing(&top, &mid, &CreateOptions::default(), &mut no_progress()).unwrap();
    let mut model = mid_model.clone();
    for seed in 20..23 {
        let d = rw(&top);
        assert_eq!(d.parent().unwrap().parent().unwrap().path(), base.as_path());
        workload(&d, &mut model, seed, 300, 200);
        drop(d);
        assert_same(&ro(&top), &model, "top of chain after reopen");
    }
    assert_same(&ro(&mid), &mid_model, "middle unchanged");
    assert_same(&ro(&base), &base_model, "base unchanged");
    let report = vhd::check(&top).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.chain.len(), 2);
}

#[test]
fn differencing_over_fixed_parent() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let size = vhd::create_fixed(&base, 2 * MIB, &exact(), &mut no_progress()).unwrap();
    let mut base_model = vec![0u8; size as usize];
    workload(&rw(&base), &mut base_model, 3, 100, 100);
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    let mut model = base_model.clone();
    workload(&rw(&child), &mut model, 4, 200, 100);
    assert_same(&ro(&child), &model, "child of fixed");
    assert_same(&ro(&base), &base_model, "fixed parent unchanged");
}

#[test]
fn raw_disk_matches_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    write_raw(&path, &vec![0u8; 2 * MIB as usize]);
    let mut model = vec![0u8; 2 * MIB as usize];
    {
        let d = vhd::RawDisk::open(&path, false).unwrap();
        workload(&d, &mut model, 5, 300, 100);
    }
    assert_eq!(std::fs::read(&path).unwrap(), model);
    let d = vhd::open_image(&path, vhd::ImageFormat::Auto, true).unwrap();
    assert_same(d.as_ref(), &model, "raw via open_image");
    assert!(d.write(0, &[0u8; 512]).is_err(), "read-only");
}

#[test]
fn byte_helpers_and_range_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.vhd");
    vhd::create_dynamic(&path, MIB, 4096, &exact(), &mut no_progress()).unwrap();
    let d = rw(&path);
    let dev: &dyn BlockDevice = &d;
    dev.write_bytes(1000, b"hello, disk").unwrap();
    let mut b = [0u8; 11];
    dev.read_bytes(1000, &mut b).unwrap();
    assert_eq!(&b, b"hello, disk");
    let mut s = [0u8; 512];
    dev.read(1, &mut s).unwrap();
    assert_eq!(&s[1000 - 512..1011 - 512], b"hello, disk");
    assert!(matches!(
        dev.read(2048, &mut s),
        Err(vhd::Error::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.read(2047, &mut [0u8; 1024]),
        Err(vhd::Error::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.write(0, &[0u8; 100]),
        Err(vhd::Error::OutOfRange { .. })
    ));
    drop(d);
    let d = ro(&path);
    assert!(matches!(
        d.write(0, &[0u8; 512]),
        Err(vhd::Error::ReadOnly { .. })
    ));
}

#[test]
fn concurrent_readers_see_consistent_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let base_model = base_with_data(&base, 2 * MIB, 16 * 1024, 31);
    vhd::create_differencing(&child, &base, &CreateOptions::default(), &mut no_progress()).unwrap();
    let mut model = base_model;
    workload(&rw(&child), &mut model, 32, 200, 100);
    let d = Arc::new(ro(&child));
    let model = Arc::new(model);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let d = d.clone();
            let model = model.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(t);
                for _ in 0..200 {
                    let count = 1 + rng.below(64);
                    let s = rng.below(d.sectors() - count);
                    let mut b = vec![0u8; count as usize * 512];
                    d.read(s, &mut b).unwrap();
                    assert!(b == model[s as usize * 512..(s + count) as usize * 512]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
