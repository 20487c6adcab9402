//! The plumbing every device shares: an address bus (port I/O or MMIO) that routes accesses by
//! range, interrupt lines, one-shot timers and requests to reset or power off the machine.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Logs a warning for an access a device ignores, rate-limited per call site: the first 8,
/// then one in 1024, so a guest hammering an unimplemented register cannot flood the log.
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static SEEN: ::std::sync::atomic::AtomicU32 = ::std::sync::atomic::AtomicU32::new(0);
        let n = SEEN.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
        if n < 8 || n % 1024 == 0 {
            ::log::warn!($($arg)+);
        }
    }};
}
pub(crate) use warn_limited;

/// A device reachable through a range of port or memory addresses.
///
/// `offset` is relative to the base address the device was inserted at; `data.len()` is the
/// access size (1, 2, 4 or, for MMIO, 8). A read the device does not implement must still fill
/// `data` with a defined value (usually all ones) and must never panic.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared between the vCPU threads and the event loop.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("range {base:#x}+{len:#x} overlaps a device already at {other:#x}+{other_len:#x}")]
    Overlap {
        base: u64,
        len: u64,
        other: u64,
        other_len: u64,
    },
    #[error("empty range at {0:#x}")]
    Empty(u64),
    #[error("no device registered at {0:#x}")]
    NotFound(u64),
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Routes accesses to devices by address range. Safe to share between threads: lookups take a
/// read lock only long enough to clone the device handle, so a device may (re)map ranges from
/// inside its own access handler (PCI BAR programming) without deadlocking.
#[derive(Default)]
pub struct Bus {
    ranges: RwLock<BTreeMap<u64, Entry>>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&self, base: u64, len: u64, device: SharedDevice) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::Empty(base));
        }
        let mut ranges = self.ranges.write().unwrap();
        let end = base.saturating_add(len);
        // The nearest range starting at or below the new end - 1 is the only one that can overlap
        // from below; any range starting inside [base, end) overlaps too.
        if let Some((&other, e)) = ranges.range(..end).next_back() {
            if other.saturating_add(e.len) > base {
                return Err(BusError::Overlap {
                    base,
                    len,
                    other,
                    other_len: e.len,
                });
            }
        }
        ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Removes the device registered exactly at `base`.
    pub fn remove(&self, base: u64) -> Result<SharedDevice, BusError> {
        self.ranges
            .write()
            .unwrap()
            .remove(&base)
            .map(|e| e.device)
            .ok_or(BusError::NotFound(base))
    }

    /// Removes every device. Devices that remap themselves hold the bus they sit on (PCI BARs),
    /// so the VMM clears a bus when the VM stops to break that cycle and close the devices'
    /// files.
    pub fn clear(&self) {
        let old = std::mem::take(&mut *self.ranges.write().unwrap());
        drop(old);
    }

    /// The device covering `addr` and the offset of `addr` inside its range.
    pub fn resolve(&self, addr: u64) -> Option<(SharedDevice, u64)> {
        let ranges = self.ranges.read().unwrap();
        let (&base, e) = ranges.range(..=addr).next_back()?;
        if addr - base < e.len {
            Some((e.device.clone(), addr - base))
        } else {
            None
        }
    }

    /// Reads from the device at `addr`; returns false (and fills `data` with 0xFF) when nothing
    /// is there, as an unterminated ISA/PCI read would.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                dev.lock().unwrap().read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false when nothing is there (the write is dropped).
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr) {
            Some((dev, offset)) => {
                dev.lock().unwrap().write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Moves an I/O block that a PCI function decodes through a BAR: from `*mapped_at` (if mapped)
/// to `want` (if any), updating `*mapped_at`. A base that collides with another device leaves
/// the block unmapped, with a rate-limited warning naming `what`, until the guest fixes it.
pub fn remap_io(
    bus: &Bus,
    mapped_at: &mut Option<u16>,
    want: Option<u16>,
    len: u16,
    device: &SharedDevice,
    what: &str,
) {
    remap(bus, mapped_at, want, u64::from(len), device, what);
}

/// Like [`remap_io`] for a block a PCI function decodes through a 32-bit memory BAR, on an MMIO
/// bus.
pub fn remap_mmio(
    bus: &Bus,
    mapped_at: &mut Option<u32>,
    want: Option<u32>,
    len: u32,
    device: &SharedDevice,
    what: &str,
) {
    remap(bus, mapped_at, want, u64::from(len), device, what);
}

fn remap<T: Copy + PartialEq + Into<u64>>(
    bus: &Bus,
    mapped_at: &mut Option<T>,
    want: Option<T>,
    len: u64,
    device: &SharedDevice,
    what: &str,
) {
    if want == *mapped_at {
        return;
    }
    if let Some(old) = mapped_at.take() {
        let old: u64 = old.into();
        if let Err(e) = bus.remove(old) {
            log::warn!("{what}: unmapping at {old:#x}: {e}");
        }
    }
    if let Some(base) = want {
        let at: u64 = base.into();
        match bus.insert(at, len, device.clone()) {
            Ok(()) => {
                log::debug!("{what} now at {at:#x}");
                *mapped_at = Some(base);
            }
            Err(e) => warn_limited!("{what}: cannot map it at {at:#x}: {e}"),
        }
    }
}

/// One interrupt line into the interrupt controllers (PIC and IOAPIC input of the same number).
///
/// Edge-triggered ISA devices raise the line while they want service and lower it when serviced;
/// the controllers latch the rising edge. Level-triggered sources (SCI, PCI) hold it high.
pub trait IrqLine: Send + Sync {
    fn set_level(&self, high: bool);
}

/// A shared handle to an interrupt line.
pub type Irq = Arc<dyn IrqLine>;

/// What a device can ask of the machine as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmRequest {
    /// A hardware reset (port 0xCF9, port 0x92 bit 0, i8042 command 0xFE, triple fault).
    Reset,
    /// Soft-off (ACPI S5): the guest turned the machine off.
    PowerOff,
}

/// The machine-level lines a device may pull: reset and power-off.
pub trait VmControl: Send + Sync {
    fn request(&self, req: VmRequest);
}

/// A one-shot timer owned by one device. The VMM's event loop calls the device's expiry handler
/// when it fires. Arming replaces any earlier deadline; `None` disarms.
pub trait Timer: Send {
    fn arm(&mut self, after: Option<Duration>);
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fakes for unit tests: an interrupt line that records its level, a timer that records its
    //! deadline, a VmControl that records requests.
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    pub struct FakeIrq {
        pub level: AtomicBool,
        pub rising_edges: AtomicUsize,
    }
    impl IrqLine for FakeIrq {
        fn set_level(&self, high: bool) {
            let was = self.level.swap(high, Ordering::SeqCst);
            if high && !was {
                self.rising_edges.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    impl FakeIrq {
        pub fn is_high(&self) -> bool {
            self.level.load(Ordering::SeqCst)
        }
        pub fn edges(&self) -> usize {
            self.rising_edges.load(Ordering::SeqCst)
        }
    }

    #[derive(Default, Clone)]
    pub struct FakeTimer {
        pub armed: Arc<Mutex<Option<Duration>>>,
    }
    impl Timer for FakeTimer {
        fn arm(&mut self, after: Option<Duration>) {
            *self.armed.lock().unwrap() = after;
        }
    }

    /// An output sink whose bytes the test can look at (a UART's or printer's host side).
    #[derive(Clone, Default)]
    pub struct Sink(pub Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    pub struct FakeControl {
        pub requests: Mutex<Vec<VmRequest>>,
    }
    impl VmControl for FakeControl {
        fn request(&self, req: VmRequest) {
            self.requests.lock().unwrap().push(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn routes_by_range_and_refuses_overlaps() {
        let bus = Bus::new();
        bus.insert(0x3f8, 8, Arc::new(Mutex::new(Reg(0x10))))
            .unwrap();
        assert!(matches!(
            bus.insert(0x3f0, 9, Arc::new(Mutex::new(Reg(0)))),
            Err(BusError::Overlap { other: 0x3f8, .. })
        ));
        assert!(matches!(
            bus.insert(0x400, 1, Arc::new(Mutex::new(Reg(0)))),
            Ok(())
        ));
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 0x12);
        assert!(!bus.read(0x401, &mut b));
        assert_eq!(b[0], 0xff);
        assert!(bus.write(0x3f8, &[0x20]));
        bus.read(0x3f8, &mut b);
        assert_eq!(b[0], 0x20);
        bus.remove(0x3f8).unwrap();
        assert!(!bus.read(0x3f8, &mut b));
        assert_eq!(bus.remove(0x3f8).err(), Some(BusError::NotFound(0x3f8)));
        assert_eq!(
            bus.insert(0, 0, Arc::new(Mutex::new(Reg(0)))).err(),
            Some(BusError::Empty(0))
        );
    }
}
