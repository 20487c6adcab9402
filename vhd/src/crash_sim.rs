//! Power-loss simulation of the engine's write ordering.
//!
//! The engine runs over a recording storage. At a chosen operation, a "crash image" is taken:
//! the file as of the last completed barrier (`sync`), plus a random subset of the sectors
//! written (and of the truncations done) since, in order. That is what a disk with a volatile
//! write cache may hold after a power loss, given sector-atomic writes. Each image must open,
//! show no damage, and hold every write whose flush returned before the crash; a sector
//! written after the last completed flush may hold its old or its new contents, nothing else.
//! The recovered image must then accept new writes (allocation after a crash) and keep them.

use std::sync::{Arc, Mutex};

use crate::disk::VhdDisk;
use crate::io::Storage;
use crate::parse::{self, Severity};
use crate::spec::{DiskType, Footer, Uuid, SECTOR_SIZE};

const SECTOR: usize = 512;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

struct SimState {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Op>,
    ops: u64,
    capture_at: Option<u64>,
    captured: Option<Vec<u8>>,
    rng: Rng,
}

impl SimState {
    fn tick(&mut self) {
        if self.capture_at == Some(self.ops) && self.captured.is_none() {
            let img = self.crash_image();
            self.captured = Some(img);
        }
        self.ops += 1;
    }

    fn crash_image(&mut self) -> Vec<u8> {
        let mut img = self.durable.clone();
        for op in &self.pending {
            match op {
                Op::Write(off, data) => {
                    let mut pos = *off;
                    let end = off + data.len() as u64;
                    while pos < end {
                        let piece_end = ((pos / SECTOR_SIZE + 1) * SECTOR_SIZE).min(end);
                        if self.rng.coin() {
                            if img.len() < piece_end as usize {
                                img.resize(piece_end as usize, 0);
                            }
                            let src = &data[(pos - off) as usize..(piece_end - off) as usize];
                            img[pos as usize..piece_end as usize].copy_from_slice(src);
                        }
                        pos = piece_end;
                    }
                }
                Op::SetLen(n) => {
                    if self.rng.coin() {
                        img.resize(*n as usize, 0);
                    }
                }
            }
        }
        img
    }
}

#[derive(Clone)]
struct SimStorage(Arc<Mutex<SimState>>);

impl SimStorage {
    fn new(contents: Vec<u8>, capture_at: Option<u64>, seed: u64) -> SimStorage {
        SimStorage(Arc::new(Mutex::new(SimState {
            durable: contents.clone(),
            current: contents,
            pending: Vec::new(),
            ops: 0,
            capture_at,
            captured: None,
            rng: Rng(seed),
        })))
    }
}

impl Storage for SimStorage {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let s = self.0.lock().unwrap();
        let end = offset as usize + buf.len();
        if end > s.current.len() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.copy_from_slice(&s.current[offset as usize..end]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick();
        let end = offset as usize + buf.len();
        if s.current.len() < end {
            s.current.resize(end, 0);
        }
        s.current[offset as usize..end].copy_from_slice(buf);
        s.pending.push(Op::Write(offset, buf.to_vec()));
        Ok(())
    }
    fn sync(&self) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick();
        s.durable = s.current.clone();
        s.pending.clear();
        Ok(())
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().current.len() as u64)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.tick();
        s.current.resize(len as usize, 0);
        s.pending.push(Op::SetLen(len));
        Ok(())
    }
}

/// A sector's contents identify the write that produced it: (write id, sector) repeated.
fn pattern(id: u32, sector: u64) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    for c in b.chunks_exact_mut(12) {
        c[0..4].copy_from_slice(&id.to_le_bytes());
        c[4..12].copy_from_slice(&sector.to_le_bytes());
    }
    b
}

fn tag(b: &[u8]) -> Option<u32> {
    if b.iter().all(|x| *x == 0) {
        return None;
    }
    let id = u32::from_le_bytes(b[0..4].try_into().unwrap());
    assert_eq!(
        &b[..SECTOR],
        &pattern(id, u64::from_le_bytes(b[4..12].try_into().unwrap()))[..SECTOR],
        "torn or foreign sector"
    );
    Some(id)
}

const DISK_SECTORS: u64 = 2048; // 1 MiB
const BLOCK_SIZE: u32 = 16 * 1024;
const PARENT_ID: u32 = 0xFFFF_FFFF;

fn empty_image(disk_type: DiskType, parent_uuid: Uuid) -> Vec<u8> {
    let st = SimStorage::new(Vec::new(), None, 0);
    let size = DISK_SECTORS * SECTOR_SIZE;
    let mut footer = Footer::new(disk_type, size, Uuid::random());
    footer.timestamp = 1;
    let mut header = crate::ops::new_dynamic_header(size, BLOCK_SIZE);
    header.parent_uuid = parent_uuid;
    crate::ops::write_empty_sparse(&st, std::path::Path::new("sim"), &footer, &mut header, &[])
        .unwrap();
    let v = st.0.lock().unwrap().current.clone();
    v
}

/// A parent holding a pattern in every third 8-sector run.
fn parent_disk() -> (VhdDisk, Vec<Option<u32>>) {
    let img = empty_image(DiskType::Dynamic, Uuid::NIL);
    let st = SimStorage::new(img, None, 0);
    let handle = st.clone();
    let d = VhdDisk::from_storage(std::path::Path::new("parent"), Box::new(st), false).unwrap();
    let mut model = vec![None; DISK_SECTORS as usize];
    for run in (0..DISK_SECTORS / 8).filter(|r| r % 3 == 0) {
        for s in run * 8..run * 8 + 8 {
            d.write(s, &pattern(PARENT_ID, s)).unwrap();
            model[s as usize] = Some(PARENT_ID);
        }
    }
    d.flush().unwrap();
    drop(d);
    let img = handle.0.lock().unwrap().durable.clone();
    let st = SimStorage::new(img, None, 0);
    let d = VhdDisk::from_storage(std::path::Path::new("parent"), Box::new(st), true).unwrap();
    (d, model)
}

struct Write {
    id: u32,
    sector: u64,
    count: u64,
    zeros: bool,
}

/// The deterministic workload of one seed: writes (some of zeros, some spanning blocks) and
/// flushes. Returns, if the storage captured a crash image during the run, the image, the
/// model as of the last completed flush and the writes issued since.
#[allow(clippy::type_complexity)]
fn run_workload(
    base: &[u8],
    differencing: bool,
    seed: u64,
    capture_at: Option<u64>,
) -> (u64, Option<(Vec<u8>, Vec<Option<u32>>, Vec<Write>)>) {
    let st = SimStorage::new(base.to_vec(), capture_at, seed ^ 0xC0FFEE);
    let handle = st.clone();
    let mut d = VhdDisk::from_storage(std::path::Path::new("child"), Box::new(st), false).unwrap();
    let mut model: Vec<Option<u32>> = if differencing {
        let (p, m) = parent_disk();
        d.set_parent(p);
        m
    } else {
        vec![None; DISK_SECTORS as usize]
    };
    let mut flushed = model.clone();
    let mut unflushed: Vec<Write> = Vec::new();
    let mut rng = Rng(seed);
    let mut result = None;
    for id in 1..=120u32 {
        let captured_before = handle.0.lock().unwrap().captured.is_some();
        if rng.below(8) == 0 {
            d.flush().unwrap();
            if handle.0.lock().unwrap().captured.is_none() {
                flushed = model.clone();
                unflushed.clear();
            }
        } else {
            let max = if rng.below(4) == 0 { 80 } else { 8 };
            let count = 1 + rng.below(max);
            let sector = rng.below(DISK_SECTORS - count);
            let zeros = rng.below(6) == 0;
            let mut buf = Vec::with_capacity((count as usize) * SECTOR);
            for s in sector..sector + count {
                if zeros {
                    buf.extend_from_slice(&[0u8; SECTOR]);
                } else {
                    buf.extend_from_slice(&pattern(id, s));
                }
            }
            if !captured_before {
                unflushed.push(Write {
                    id,
                    sector,
                    count,
                    zeros,
                });
            }
            d.write(sector, &buf).unwrap();
            for s in sector..sector + count {
                model[s as usize] = if zeros { None } else { Some(id) };
            }
        }
        if !captured_before {
            if let Some(img) = handle.0.lock().unwrap().captured.clone() {
                result = Some((img, flushed.clone(), std::mem::take(&mut unflushed)));
            }
        }
    }
    let captured_before = handle.0.lock().unwrap().captured.is_some();
    d.flush().unwrap();
    if !captured_before {
        if let Some(img) = handle.0.lock().unwrap().captured.clone() {
            result = Some((img, flushed, unflushed));
        }
    }
    let ops = handle.0.lock().unwrap().ops;
    (ops, result)
}

fn verify(
    img: Vec<u8>,
    differencing: bool,
    flushed: &[Option<u32>],
    unflushed: &[Write],
    what: &str,
) {
    // The image opens and shows no damage.
    let st = SimStorage::new(img, None, 1);
    let (layout, findings) = parse::inspect(&st).unwrap();
    for f in &findings {
        assert_eq!(f.severity, Severity::Note, "{what}: {}", f.problem);
    }
    assert!(layout.is_some(), "{what}: no layout");
    let mut d = VhdDisk::from_storage(std::path::Path::new("crashed"), Box::new(st.clone()), false)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    if differencing {
        d.set_parent(parent_disk().0);
    }
    let mut seen = vec![None; DISK_SECTORS as usize];
    let mut buf = vec![0u8; DISK_SECTORS as usize * SECTOR];
    d.read(0, &mut buf).unwrap();
    for s in 0..DISK_SECTORS {
        let got = tag(&buf[s as usize * SECTOR..(s as usize + 1) * SECTOR]);
        let ok = got == flushed[s as usize]
            || unflushed.iter().any(|w| {
                (w.sector..w.sector + w.count).contains(&s)
                    && if w.zeros {
                        got.is_none()
                    } else {
                        got == Some(w.id)
                    }
            });
        assert!(
            ok,
            "{what}: sector {s} holds {got:?}, flushed {:?}",
            flushed[s as usize]
        );
        seen[s as usize] = got;
    }
    // The recovered image takes new writes, allocations included, and keeps them.
    let mut rng = Rng(0xABCD);
    for i in 0..20u32 {
        let count = 1 + rng.below(40);
        let sector = rng.below(DISK_SECTORS - count);
        let id = 1000 + i;
        let mut b = Vec::new();
        for s in sector..sector + count {
            b.extend_from_slice(&pattern(id, s));
            seen[s as usize] = Some(id);
        }
        d.write(sector, &b).unwrap();
    }
    d.flush().unwrap();
    drop(d);
    let durable = st.0.lock().unwrap().durable.clone();
    let st2 = SimStorage::new(durable, None, 2);
    let (_, findings) = parse::inspect(&st2).unwrap();
    for f in &findings {
        assert_eq!(
            f.severity,
            Severity::Note,
            "{what}, after recovery: {}",
            f.problem
        );
    }
    let mut d =
        VhdDisk::from_storage(std::path::Path::new("recovered"), Box::new(st2), true).unwrap();
    if differencing {
        d.set_parent(parent_disk().0);
    }
    d.read(0, &mut buf).unwrap();
    for s in 0..DISK_SECTORS {
        let got = tag(&buf[s as usize * SECTOR..(s as usize + 1) * SECTOR]);
        assert_eq!(got, seen[s as usize], "{what}, after recovery: sector {s}");
    }
}

fn simulate(differencing: bool, seeds: u64, crashes_per_seed: u64) {
    let base = if differencing {
        let (p, _) = parent_disk();
        empty_image(DiskType::Differencing, p.footer().uuid)
    } else {
        empty_image(DiskType::Dynamic, Uuid::NIL)
    };
    let mut pick = Rng(77);
    for seed in 0..seeds {
        let (ops, _) = run_workload(&base, differencing, seed, None);
        for _ in 0..crashes_per_seed {
            let at = pick.below(ops);
            let (_, captured) = run_workload(&base, differencing, seed, Some(at));
            let (img, flushed, unflushed) = captured.expect("captured");
            verify(
                img,
                differencing,
                &flushed,
                &unflushed,
                &format!("seed {seed}, crash before operation {at} of {ops}"),
            );
        }
    }
}

#[test]
fn power_loss_dynamic() {
    simulate(false, 8, 10);
}

#[test]
fn power_loss_differencing() {
    simulate(true, 8, 10);
}
