//! An in-memory [`vhd::BlockDevice`] for the targets' unit tests, with switches to make reads,
//! writes or flushes fail, and counters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use vhd::BlockDevice;

pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
    pub read_only: bool,
    pub fail_reads: AtomicBool,
    pub fail_writes: AtomicBool,
    pub fail_flush: AtomicBool,
    pub writes: AtomicUsize,
    pub flushes: AtomicUsize,
}

impl MemDisk {
    /// A disk of `sectors` sectors where every byte of sector `n` is `n as u8`.
    pub fn patterned(sectors: u64, read_only: bool) -> MemDisk {
        let mut data = vec![0u8; sectors as usize * 512];
        for (i, chunk) in data.chunks_mut(512).enumerate() {
            chunk.fill(i as u8);
        }
        MemDisk::from_bytes(data, read_only)
    }

    pub fn from_bytes(data: Vec<u8>, read_only: bool) -> MemDisk {
        MemDisk {
            data: Mutex::new(data),
            read_only,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            writes: AtomicUsize::new(0),
            flushes: AtomicUsize::new(0),
        }
    }

    fn range(&self, sector: u64, len: usize) -> vhd::Result<std::ops::Range<usize>> {
        let start = sector as usize * 512;
        let end = start + len;
        if len & 511 != 0 || end > self.data.lock().unwrap().len() {
            return Err(vhd::Error::InvalidArgument(format!(
                "out of range: sector {sector} len {len}"
            )));
        }
        Ok(start..end)
    }
}

fn injected(what: &str) -> vhd::Error {
    vhd::Error::InvalidArgument(format!("injected {what} failure"))
}

impl BlockDevice for MemDisk {
    fn sectors(&self) -> u64 {
        self.data.lock().unwrap().len() as u64 / 512
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&self, sector: u64, buf: &mut [u8]) -> vhd::Result<()> {
        if self.fail_reads.load(Ordering::Relaxed) {
            return Err(injected("read"));
        }
        let r = self.range(sector, buf.len())?;
        buf.copy_from_slice(&self.data.lock().unwrap()[r]);
        Ok(())
    }
    fn write(&self, sector: u64, buf: &[u8]) -> vhd::Result<()> {
        if self.read_only {
            return Err(vhd::Error::ReadOnly { path: "mem".into() });
        }
        if self.fail_writes.load(Ordering::Relaxed) {
            return Err(injected("write"));
        }
        let r = self.range(sector, buf.len())?;
        self.data.lock().unwrap()[r].copy_from_slice(buf);
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> vhd::Result<()> {
        if self.fail_flush.load(Ordering::Relaxed) {
            return Err(injected("flush"));
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

use super::{Direction, ScsiTarget, Sense};

/// Runs one command the way a transport does: `plan`, then `execute` with `out` (cut to the
/// planned length) for data-out commands. Checks the contract: a data-in response never
/// exceeds the plan, and an error from `plan` is what `sense()` reports.
pub fn command(t: &mut dyn ScsiTarget, cdb: &[u8], out: &[u8]) -> Result<Vec<u8>, Sense> {
    let plan = match t.plan(cdb) {
        Ok(p) => p,
        Err(s) => {
            assert_eq!(t.sense(), s, "sense() after a failed plan");
            return Err(s);
        }
    };
    assert_eq!(
        plan.length == 0,
        plan.direction == Direction::None,
        "{plan:?}"
    );
    let mut data = match plan.direction {
        Direction::Out => out[..plan.length.min(out.len())].to_vec(),
        _ => Vec::new(),
    };
    let r = t.execute(cdb, &mut data);
    match r {
        Ok(()) => {
            if plan.direction == Direction::In {
                assert!(data.len() <= plan.length, "{} > {plan:?}", data.len());
            }
            Ok(if plan.direction == Direction::In {
                data
            } else {
                Vec::new()
            })
        }
        Err(s) => {
            assert_eq!(t.sense(), s, "sense() after a failed execute");
            Err(s)
        }
    }
}

/// REQUEST SENSE (fixed format) through [`command`]: (key, asc, ascq).
pub fn request_sense(t: &mut dyn ScsiTarget) -> Sense {
    let d = command(t, &[0x03, 0, 0, 0, 18, 0], &[]).expect("REQUEST SENSE");
    assert_eq!(d.len(), 18);
    assert_eq!(d[0], 0x70);
    assert_eq!(d[7], 10);
    Sense::new(d[2], d[12], d[13])
}

/// Clears the power-on unit attention with TEST UNIT READY.
pub fn clear_power_on(t: &mut dyn ScsiTarget) {
    assert_eq!(command(t, &[0; 6], &[]), Err(Sense::POWER_ON_RESET));
}

/// A disk of any size that reads as zeros and refuses writes: capacities tests cannot allocate.
pub struct ZeroDisk(pub u64);

impl BlockDevice for ZeroDisk {
    fn sectors(&self) -> u64 {
        self.0
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read(&self, _sector: u64, buf: &mut [u8]) -> vhd::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write(&self, _sector: u64, _buf: &[u8]) -> vhd::Result<()> {
        Err(vhd::Error::ReadOnly {
            path: "zero".into(),
        })
    }
    fn flush(&self) -> vhd::Result<()> {
        Ok(())
    }
}

/// Feeds every opcode with CDBs of every length up to 16 (zeros, ones, and a pattern) through
/// `plan` and `execute`: nothing may panic, and a response never exceeds the plan or
/// [`super::MAX_TRANSFER_BYTES`].
pub fn hammer(t: &mut dyn ScsiTarget) {
    for opcode in 0..=255u8 {
        for len in 0..=16usize {
            for fill in [0x00u8, 0xff, 0x5a] {
                let mut cdb = vec![fill; len];
                if let Some(b) = cdb.first_mut() {
                    *b = opcode;
                }
                let planned = t.plan(&cdb);
                let mut data = vec![0u8; 64];
                let r = t.execute(&cdb, &mut data);
                if let (Ok(p), Ok(())) = (planned, r) {
                    if p.direction == Direction::In {
                        assert!(data.len() <= p.length, "{cdb:02x?}: {} > {p:?}", data.len());
                    }
                    assert!(p.length <= super::MAX_TRANSFER_BYTES, "{cdb:02x?}: {p:?}");
                }
            }
        }
    }
}
