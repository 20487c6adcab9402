//! The DEC 21140A "Tulip" PCI Fast Ethernet controller (PCI 1011:0009, revision 20h), the
//! network card of Virtual PC, Virtual Server and Hyper-V generation 1, with a 93C46 serial ROM
//! and an MII PHY.
//!
//! Follows the Digital Semiconductor 21140A PCI Fast Ethernet LAN Controller Hardware Reference
//! Manual (EC-QN7NC-TE): section 3.1 (configuration registers), 3.2 (CSRs), 4.2 (descriptors and
//! the setup frame), 4.3 (receive and transmit processes); the "21X4 Serial ROM Format" 4.09;
//! IEEE 802.3 clause 22 (MII management). Where the manual leaves a choice, the behaviour is what
//! Linux's `tulip` driver (drivers/net/ethernet/dec/tulip) expects of a DC21140 with
//! HAS_MII | HAS_MEDIA_TABLE | CSR12_IN_SROM: it reads the SROM through CSR9 (probing the address
//! width), parses the 21140 info leaf, finds the PHY at MII address 1, programs the filter with
//! setup frames, and takes frames out of the receive ring without poll demands.
//!
//! Pieces:
//! - [`Tulip`]: the PCI function. BAR0 (CBIO) maps the CSRs in I/O space (128 bytes), BAR1 (CBMA)
//!   in memory space (1 KiB); the function maps [`TulipCore`] on the I/O and MMIO buses itself
//!   whenever a BAR and the command register say so. INTA#, level-triggered; the command
//!   register's bus-master bit gates DMA and its interrupt-disable bit the line. CFDD (40h) holds
//!   the sleep/snooze bits.
//! - [`TulipCore`] (`chip.rs`): the CSRs, interrupt logic, general-purpose timer and automatic
//!   transmit polling (through one [`Timer`]), shared by the vCPUs and the event loop. The host
//!   offers received frames with [`TulipCore::receive`]; transmitted frames go to a
//!   [`FrameSink`]; an [`RxNotify`] learns when a suspended receiver may take frames again.
//! - `rings.rs`: the receive and transmit descriptor engines; `filter.rs`: the setup-frame address
//!   filter; `srom.rs`: the serial ROM; `mii.rs`: the PHY and its management interface; `crc.rs`:
//!   CRC-32 and the SROM's CRC-8; `spec.rs`: the numbers.
//!
//! The wire is infinitely fast: a frame is sent inside the CSR1 write (or CSR6 start, or
//! automatic poll) that finds it, and a received frame is written inside
//! [`TulipCore::receive`]. Full duplex, port select, transmit threshold and the other media bits
//! of CSR6 are stored but change nothing; the general-purpose timer counts in 81.92 µs units when
//! CSR6 selects the 100 Mb/s MII port (PS set, TTM clear) and 204.8 µs otherwise.
//!
//! Not emulated: big-endian buffers and descriptors (CSR0 BLE/DBO; warned once, little-endian is
//! used), the boot ROM (reads give FFh), the general-purpose port's input pins (read low),
//! collisions, jabber and receive watchdogs (CSR15 is stored), transmit threshold and FIFO
//! underflow, the 21140A's early-receive/-transmit features, and power management (CFDD sleep is
//! stored only).

mod chip;
mod crc;
mod filter;
mod mii;
mod rings;
pub mod spec;
mod srom;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use crate::bus::{remap_io, remap_mmio, warn_limited, Bus, BusError, Irq, SharedDevice, Timer};
use crate::dma::GuestMemory;
use crate::pci::{spec as pci, ConfigSpace, PciFunction};
use crate::rtc::{Clock, MonotonicClock};

pub use chip::{TulipCore, TulipCoreState};
pub use filter::{FilterMode, FilterState};
pub use mii::MiiState;
pub use srom::SromState;

use spec::*;

/// Where frames the guest transmits go (the VMM's network backend). Called on the vCPU thread.
pub trait FrameSink: Send {
    fn send(&mut self, frame: &[u8]);
}

/// Told when the receive side may be able to take frames again (the guest wrote CSR2, started the
/// receiver, or returned descriptors that end a suspension). Called with the core locked: must
/// not block or call back into the device (the VMM writes an eventfd).
pub trait RxNotify: Send + Sync {
    fn rx_ready(&self);
}

/// How the VMM configures a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TulipConfig {
    pub mac: [u8; 6],
    /// I/O BAR0 as the firmware leaves it (128 bytes, CSRs at 8-byte stride); 0 = unprogrammed.
    pub io_base: u16,
    /// Memory BAR1 as the firmware leaves it (1 KiB, the CSRs in its first 128 bytes); 0 =
    /// unprogrammed.
    pub mmio_base: u32,
    /// The PCI interrupt line register value (the IRQ the PIRQ routing gives INTA#).
    pub interrupt_line: u8,
}

/// What became of a frame offered to [`TulipCore::receive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written to the guest's receive buffers (possibly truncated, with RDES0 DE, when the
    /// guest's descriptors ran out in mid-frame).
    Delivered,
    /// Not for us: the address filter rejected it (or it cannot be received at all: shorter
    /// than an address, longer than RDES0's length field).
    Filtered,
    /// The receiver is stopped (CSR6.SR clear, bus mastering off, a fatal bus error) or the link
    /// is down: dropped.
    Stopped,
    /// No receive descriptor owned by the device: the receive process is suspended (RU set,
    /// interrupt raised as the datasheet says). The caller keeps the frame and offers it again
    /// after `rx_ready()`.
    NoBuffer,
}

/// Why a saved state does not fit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TulipStateError {
    #[error("tulip saved state: {0} is out of range")]
    OutOfRange(&'static str),
}

/// Saved state of [`Tulip`]: configuration space and the chip (CSRs, process states and list
/// positions, the address filter, the serial ROM and PHY with their bit-bang state, the timer).
/// No frame is ever in flight inside the card, so none is saved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TulipState {
    #[serde(with = "serde_big_array::BigArray")]
    pub config: [u8; pci::CONFIG_SPACE_SIZE],
    pub core: TulipCoreState,
}

/// The PCI function (1011:0009, class 02/00/00).
pub struct Tulip {
    // Runtime handles.
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    core: Arc<Mutex<TulipCore>>,
    /// `core` as the buses hold it.
    device: SharedDevice,
    // Guest-visible state.
    config: ConfigSpace,
    /// Where the CSRs are inserted on `io_bus` and `mmio_bus`.
    io_mapped_at: Option<u16>,
    mmio_mapped_at: Option<u32>,
}

impl Tulip {
    /// The card as the firmware leaves it: BARs at `cfg.io_base` / `cfg.mmio_base` (mapped now;
    /// 0 leaves a BAR unprogrammed), I/O, memory and bus master enabled when a BAR is programmed,
    /// the chip reset with its link up. `timer` is the card's one timer; the VMM calls
    /// [`TulipCore::timer_expired`] when it fires.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        irq: Irq,
        mem: GuestMemory,
        timer: Box<dyn Timer>,
        tx: Box<dyn FrameSink>,
        rx_notify: Arc<dyn RxNotify>,
        cfg: TulipConfig,
    ) -> Result<Self, BusError> {
        Self::with_clock(
            io_bus,
            mmio_bus,
            irq,
            mem,
            timer,
            tx,
            rx_notify,
            cfg,
            Arc::new(MonotonicClock::new()),
        )
    }

    /// Like [`Tulip::new`] with the monotonic clock the general-purpose timer counts with (one
    /// that stops while the VM is paused, or a fake in tests).
    #[allow(clippy::too_many_arguments)]
    pub fn with_clock(
        io_bus: Arc<Bus>,
        mmio_bus: Arc<Bus>,
        irq: Irq,
        mem: GuestMemory,
        timer: Box<dyn Timer>,
        tx: Box<dyn FrameSink>,
        rx_notify: Arc<dyn RxNotify>,
        cfg: TulipConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BusError> {
        let rom = srom::contents(cfg.mac, SUBSYSTEM_VENDOR, SUBSYSTEM_ID);
        let core = Arc::new(Mutex::new(TulipCore::new(
            cfg.mac, irq, mem, timer, clock, tx, rx_notify, rom,
        )));
        let device: SharedDevice = core.clone();

        let mut c = ConfigSpace::new(VENDOR_DEC, DEVICE_21140, REVISION_21140A, CLASS_ETHERNET);
        c.set_writable_u16(pci::COMMAND, PCI_COMMAND_WRITABLE);
        c.set_u16(pci::STATUS, PCI_STATUS_RESET);
        c.set_write_one_to_clear_u16(pci::STATUS, pci::STATUS_ERRORS_W1C);
        c.set_writable_u8(pci::CACHE_LINE_SIZE, 0xff);
        c.set_writable_u8(pci::LATENCY_TIMER, 0xff);
        c.add_io_bar(CBIO_BAR, u32::from(CBIO_LEN));
        c.add_memory_bar(CBMA_BAR, CBMA_LEN, false);
        c.set_u32(
            CBIO,
            u32::from(cfg.io_base & !(CBIO_LEN - 1)) | pci::BAR_IO_SPACE,
        );
        c.set_u32(CBMA, cfg.mmio_base & !(CBMA_LEN - 1));
        c.set_u16(pci::SUBSYSTEM_VENDOR_ID, SUBSYSTEM_VENDOR);
        c.set_u16(pci::SUBSYSTEM_ID, SUBSYSTEM_ID);
        c.set_u8(pci::INTERRUPT_LINE, cfg.interrupt_line);
        c.set_writable_u8(pci::INTERRUPT_LINE, 0xff);
        c.set_u8(pci::INTERRUPT_PIN, 1);
        c.set_u8(MIN_GNT, MIN_GNT_VALUE);
        c.set_u8(MAX_LAT, MAX_LAT_VALUE);
        c.set_writable_u32(CFDD, CFDD_WRITABLE);
        let mut command = 0;
        if cfg.io_base != 0 {
            command |= pci::COMMAND_IO_SPACE;
        }
        if cfg.mmio_base != 0 {
            command |= pci::COMMAND_MEMORY_SPACE;
        }
        if command != 0 {
            command |= pci::COMMAND_BUS_MASTER;
        }
        c.set_u16(pci::COMMAND, command);

        let mut t = Self {
            io_bus,
            mmio_bus,
            core,
            device,
            config: c,
            io_mapped_at: None,
            mmio_mapped_at: None,
        };
        t.apply_command();
        if let Some(base) = t.wanted_io() {
            t.io_bus
                .insert(u64::from(base), u64::from(CBIO_LEN), t.device.clone())?;
            t.io_mapped_at = Some(base);
        }
        if let Some(base) = t.wanted_mmio() {
            t.mmio_bus
                .insert(u64::from(base), u64::from(CBMA_LEN), t.device.clone())?;
            t.mmio_mapped_at = Some(base);
        }
        Ok(t)
    }

    /// The CSR block, for the event loop (receive, timer, link changes).
    pub fn core(&self) -> Arc<Mutex<TulipCore>> {
        self.core.clone()
    }

    /// Where the CSRs are mapped in I/O and memory space, if they are.
    pub fn mapped_at(&self) -> (Option<u16>, Option<u32>) {
        (self.io_mapped_at, self.mmio_mapped_at)
    }

    pub fn state(&self) -> TulipState {
        TulipState {
            config: *self.config.bytes(),
            core: self.core.lock().unwrap().state(),
        }
    }

    /// Restores a state from [`Tulip::state`]: configuration space (remapping the BARs where it
    /// says), the chip, the interrupt line and the timer. Nothing changes when the state does not
    /// fit.
    pub fn restore(&mut self, s: &TulipState) -> Result<(), TulipStateError> {
        TulipCore::check_state(&s.core)?;
        self.config.restore_bytes(&s.config);
        let command = self.config.command();
        {
            let mut core = self.core.lock().unwrap();
            core.restore_gates(
                command & pci::COMMAND_BUS_MASTER != 0,
                command & pci::COMMAND_INTERRUPT_DISABLE != 0,
            );
            core.restore(&s.core)?;
        }
        self.update_mapping();
        Ok(())
    }

    fn wanted_io(&self) -> Option<u16> {
        let on = self.config.command() & pci::COMMAND_IO_SPACE != 0;
        let base = self.config.bar_address(CBIO_BAR) as u16;
        (on && base != 0).then_some(base)
    }

    fn wanted_mmio(&self) -> Option<u32> {
        let on = self.config.command() & pci::COMMAND_MEMORY_SPACE != 0;
        let base = self.config.bar_address(CBMA_BAR);
        (on && base != 0).then_some(base)
    }

    /// Passes bus mastering and interrupt disable down to the chip.
    fn apply_command(&mut self) {
        let command = self.config.command();
        let mut core = self.core.lock().unwrap();
        core.set_intx_disabled(command & pci::COMMAND_INTERRUPT_DISABLE != 0);
        core.set_bus_master(command & pci::COMMAND_BUS_MASTER != 0);
    }

    /// Moves the CSR windows to where the BARs and the command register say. Safe from inside a
    /// configuration write dispatched by a bus: the buses take their own locks only inside
    /// insert/remove and the core's mutex is not held here.
    fn update_mapping(&mut self) {
        let (io, mmio) = (self.wanted_io(), self.wanted_mmio());
        remap_io(
            &self.io_bus,
            &mut self.io_mapped_at,
            io,
            CBIO_LEN,
            &self.device,
            "tulip CSRs (I/O)",
        );
        remap_mmio(
            &self.mmio_bus,
            &mut self.mmio_mapped_at,
            mmio,
            CBMA_LEN,
            &self.device,
            "tulip CSRs (memory)",
        );
    }
}

impl PciFunction for Tulip {
    fn config_read(&mut self, offset: u16) -> u32 {
        let mut v = self.config.read_dword(offset);
        if offset & !3 == pci::COMMAND && self.core.lock().unwrap().interrupt_pending() {
            v |= u32::from(pci::STATUS_INTERRUPT) << 16;
        }
        v
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let end = offset + data.len() as u16;
        let touches = |reg: u16, len: u16| offset < reg + len && reg < end;
        if touches(pci::COMMAND, 2) {
            self.apply_command();
        }
        if touches(pci::COMMAND, 2) || touches(CBIO, 4) || touches(CBMA, 4) {
            self.update_mapping();
        }
        if !(end <= 0x40 || (CFDD..CFDD + 4).contains(&offset)) {
            warn_limited!(
                "tulip: write of {data:02x?} to undefined config register {offset:#04x} ignored"
            );
        }
    }
}
