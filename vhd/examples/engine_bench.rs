//! Throughput of the VHD engine against a raw image of the same data, side by side: the
//! engine half of `resources/bench-vhd.sh` (which prepares the files and prints the table).
//! An example, so that `cargo test` builds it but never runs it.
//!
//! ```text
//! cargo run --release -p vhd --example engine_bench -- \
//!     FULL.vhd FULL.raw WORKDIR [--seq-mib N] [--rand-ops N] [--reps N] [--drop-caches]
//! ```
//!
//! FULL.vhd (a dynamic VHD) and FULL.raw hold the same data; both are written to (pass
//! copies). For the writes into an empty disk, a new dynamic VHD of the same size with
//! 2 MiB blocks and a new sparse raw file are created in WORKDIR before each run (and
//! removed at the end).
//!
//! Each measurement runs on the VHD through [`vhd::VhdDisk`] and on the raw file through
//! [`vhd::RawDisk`], both as a [`vhd::BlockDevice`], one thread, `--reps` times each
//! (default 3, alternating which goes first; the median is reported), and prints one line
//! `metric<TAB>vhd<TAB>raw<TAB>unit`:
//!
//! * sequential read of the whole disk, 1 MiB requests;
//! * sequential write of N MiB (default 512) over existing data, and into an empty disk
//!   (allocating blocks), 1 MiB requests, one flush at the end (timed);
//! * 4 KiB random reads and random writes (default 20000 each, writes followed by one timed
//!   flush), offsets 4 KiB-aligned from a fixed-seed generator, so both files see the same
//!   sequence.
//!
//! With `--drop-caches` (root) the page cache is dropped before every measurement, so reads
//! come from the disk; otherwise they are warm.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vhd::{BlockDevice, CreateOptions, OpenOptions, RawDisk, SizePolicy, DEFAULT_BLOCK_SIZE};

const MIB: u64 = 1024 * 1024;
const SECTOR: u64 = 512;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn fill(buf: &mut [u8], seed: u64) {
    let mut r = Rng(seed);
    for c in buf.chunks_mut(8) {
        let v = r.next().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
}

/// A new empty dynamic VHD and a new empty raw file of `size` bytes in `dir`.
fn fresh_empty(dir: &Path, size: u64) -> (PathBuf, PathBuf) {
    let v = dir.join("engine-empty.vhd");
    let r = dir.join("engine-empty.raw");
    let _ = fs::remove_file(&v);
    let _ = fs::remove_file(&r);
    let opts = CreateOptions {
        size_policy: SizePolicy::Exact,
        ..Default::default()
    };
    vhd::create_dynamic(&v, size, DEFAULT_BLOCK_SIZE, &opts, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{e}"));
    fs::File::create(&r).and_then(|f| f.set_len(size)).unwrap();
    (v, r)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn drop_caches(enabled: bool) {
    if !enabled {
        return;
    }
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
    if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("engine_bench: cannot drop caches ({e}); measuring warm");
    }
}

type Dev = Box<dyn BlockDevice>;

fn open_vhd(p: &Path) -> Dev {
    Box::new(
        OpenOptions::new()
            .read_only(false)
            .open(p)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn open_raw(p: &Path) -> Dev {
    Box::new(RawDisk::open(p, false).unwrap_or_else(|e| panic!("{e}")))
}

/// Sequential read of `sectors` in 1 MiB requests; MiB/s.
fn seq_read(d: &dyn BlockDevice, sectors: u64) -> f64 {
    let mut buf = vec![0u8; MIB as usize];
    let t = Instant::now();
    let mut s = 0;
    let mut sum = 0u64;
    while s < sectors {
        let n = (MIB / SECTOR).min(sectors - s);
        let b = &mut buf[..(n * SECTOR) as usize];
        d.read(s, b).unwrap();
        sum = sum.wrapping_add(b[0] as u64);
        s += n;
    }
    std::hint::black_box(sum);
    (sectors * SECTOR) as f64 / MIB as f64 / t.elapsed().as_secs_f64()
}

/// Sequential write of `mib` MiB from sector 0 in 1 MiB requests, then a flush; MiB/s.
fn seq_write(d: &dyn BlockDevice, mib: u64, seed: u64) -> f64 {
    let mut buf = vec![0u8; MIB as usize];
    fill(&mut buf, seed);
    let t = Instant::now();
    for i in 0..mib {
        buf[0..8].copy_from_slice(&i.to_le_bytes());
        d.write(i * MIB / SECTOR, &buf).unwrap();
    }
    d.flush().unwrap();
    mib as f64 / t.elapsed().as_secs_f64()
}

/// `ops` 4 KiB requests at random 4 KiB-aligned offsets below `sectors`; IOPS. Writes end
/// with a flush, inside the timing.
fn random_io(d: &dyn BlockDevice, sectors: u64, ops: u64, write: bool, seed: u64) -> f64 {
    let slots = sectors / 8;
    let mut r = Rng(seed);
    let mut buf = vec![0u8; 4096];
    fill(&mut buf, seed ^ 0x55);
    let t = Instant::now();
    for i in 0..ops {
        let s = (r.next() % slots) * 8;
        if write {
            buf[0..8].copy_from_slice(&i.to_le_bytes());
            d.write(s, &buf).unwrap();
        } else {
            d.read(s, &mut buf).unwrap();
        }
    }
    if write {
        d.flush().unwrap();
    }
    ops as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut files = Vec::new();
    let mut seq_mib = 512u64;
    let mut rand_ops = 20000u64;
    let mut cold = false;
    let mut reps = 3u32;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seq-mib" => seq_mib = it.next().expect("--seq-mib N").parse().expect("number"),
            "--rand-ops" => rand_ops = it.next().expect("--rand-ops N").parse().expect("number"),
            "--drop-caches" => cold = true,
            "--reps" => reps = it.next().expect("--reps N").parse().expect("number"),
            _ => files.push(Path::new(a).to_path_buf()),
        }
    }
    let [full_vhd, full_raw, dir] = &files[..] else {
        eprintln!("usage: engine_bench FULL.vhd FULL.raw WORKDIR [--seq-mib N] [--rand-ops N] [--reps N] [--drop-caches]");
        std::process::exit(2);
    };

    let sectors = {
        let v = open_vhd(full_vhd);
        let r = open_raw(full_raw);
        v.sectors().min(r.sectors())
    };
    let size = sectors * SECTOR;
    // Each side `reps` times, alternating which goes first, from a cold cache each time
    // (when allowed); the median is reported. Devices are opened before the clock starts:
    // the VHD's open (footer, header, BAT) is not part of the throughput. `fresh` runs use a
    // new empty VHD and raw file each time.
    let measure = |fresh: bool, f: &dyn Fn(&dyn BlockDevice, u64) -> f64| -> (f64, f64) {
        let mut results = [Vec::new(), Vec::new()];
        for rep in 0..reps {
            let order = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                let d = if fresh {
                    let (v, r) = fresh_empty(dir, size);
                    drop_caches(cold);
                    if side == 0 {
                        open_vhd(&v)
                    } else {
                        open_raw(&r)
                    }
                } else {
                    drop_caches(cold);
                    if side == 0 {
                        open_vhd(full_vhd)
                    } else {
                        open_raw(full_raw)
                    }
                };
                results[side].push(f(d.as_ref(), sectors));
            }
        }
        (median(&mut results[0]), median(&mut results[1]))
    };
    let row = |name: &str, (a, b): (f64, f64), unit: &str| {
        println!("{name}\t{a:.1}\t{b:.1}\t{unit}");
    };

    row(
        "engine: sequential read, whole disk, 1 MiB",
        measure(false, &|d, s| seq_read(d, s)),
        "MiB/s",
    );
    row(
        "engine: 4 KiB random read",
        measure(false, &|d, s| random_io(d, s, rand_ops, false, 1)),
        "IOPS",
    );
    row(
        &format!("engine: sequential write {seq_mib} MiB, allocated blocks"),
        measure(false, &|d, _| seq_write(d, seq_mib, 2)),
        "MiB/s",
    );
    row(
        "engine: 4 KiB random write, allocated blocks",
        measure(false, &|d, s| random_io(d, s, rand_ops, true, 3)),
        "IOPS",
    );
    row(
        &format!("engine: sequential write {seq_mib} MiB, empty disk"),
        measure(true, &|d, _| seq_write(d, seq_mib, 4)),
        "MiB/s",
    );
    row(
        "engine: 4 KiB random write, empty disk",
        measure(true, &|d, s| random_io(d, s, rand_ops, true, 5)),
        "IOPS",
    );
    let _ = fs::remove_file(dir.join("engine-empty.vhd"));
    let _ = fs::remove_file(dir.join("engine-empty.raw"));
}
