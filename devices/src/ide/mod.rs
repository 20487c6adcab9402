//! The PIIX4 IDE function (82371AB function 1, PCI 00:07.1, 8086:7111) with its two legacy
//! channels, bus-master DMA, and the ATA disks and ATAPI CD/DVD drives behind it.
//!
//! Follows the 82371AB PIIX4 datasheet (order 290562) sections 2.7 "IDE controller", 3.2 "IDE
//! configuration registers" and 3.3 "Bus master IDE I/O registers"; SFF-8038i for the bus-master
//! programming interface; ATA/ATAPI-6 (T13 1410D) for the devices. Where the datasheets leave a
//! choice, the behaviour is what Linux's `ata_piix`/libata, QEMU and old Windows/DOS drivers
//! expect, and the comment says so.
//!
//! Pieces:
//! - [`Piix4Ide`]: the PCI function. Class 01/01/80 (both channels in compatibility mode,
//!   bus-master capable), IDETIM/SIDETIM/UDMACTL/UDMATIM, and BAR4 (BMIBA), the 16 bytes of
//!   bus-master registers, which the function maps on the I/O bus itself whenever BAR4 and the
//!   command register's I/O enable say so (like [`crate::piix4::Piix4Pm`]).
//! - Each channel's legacy ports are [`BusDevice`]s that the VMM registers, from
//!   [`Piix4Ide::channel_ports`]:
//!
//!   | channel | command block (len 8) | control block (len 1) | IRQ |
//!   |---|---|---|---|
//!   | 0 (primary) | 0x1F0-0x1F7 | 0x3F6 | 14 (ISA, edge) |
//!   | 1 (secondary) | 0x170-0x177 | 0x376 | 15 (ISA, edge) |
//!
//!   The control block is one byte (alternate status / device control); 0x3F7 belongs to the
//!   floppy controller. The ports answer only while PCICMD.IOSE and the channel's IDETIM decode
//!   enable bit are set (reads give 0xFF otherwise, as an unclaimed ISA read).
//! - `channel.rs`: the task file, device selection, reset, interrupts and PIO data; `ata.rs`: the
//!   ATA command set of disks; `atapi.rs`: the PACKET transport to a [`ScsiTarget`];
//!   `bmdma.rs`: bus-master registers and PRD tables; `spec.rs`: the numbers.
//!
//! Disk I/O and DMA are synchronous: a command's data moves on the vCPU thread that issued it (the
//! write of the command register, the last data word, or BMIC.start), in chunks of at most
//! 64 KiB, so a 65536-sector command never allocates more than that.
//!
//! Not emulated: native-mode channels (the programming interface is fixed at 80h), the timing
//! registers' effect (they are stored for the guest to read back), overlapped and queued
//! commands, SMART, the host protected area, security, CFA, 16-byte packets and DMADIR. The
//! device fault bit (DF) is never set: a backend failure is reported per command (UNC/ABRT).

mod ata;
mod atapi;
mod bmdma;
mod channel;
pub mod spec;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};

use vhd::BlockDevice;

use crate::bus::{warn_limited, Bus, BusDevice, BusError, Irq, SharedDevice};
use crate::dma::GuestMemory;
use crate::pci::{spec as pci, ConfigSpace, PciFunction};
use crate::scsi::ScsiTarget;

pub use bmdma::BusMasterRegs;
pub use channel::{
    Addressing, DeviceSettings, IdeChannelState, IdeDeviceState, IdeTransfer, PowerMode, ReadSplit,
    TaskFile,
};

use channel::IdeChannel;

/// A CHS translation: cylinders, heads (1-16) and sectors per track (1-63).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Chs {
    pub cylinders: u16,
    pub heads: u8,
    pub sectors: u8,
}

impl Chs {
    /// The default translation of a disk of `total` sectors, as ATA-6 section 6.2.1 recommends:
    /// 16 heads and 63 sectors per track with up to 16383 cylinders; smaller disks keep 63
    /// sectors per track and fewer heads.
    pub fn for_sectors(total: u64) -> Self {
        let total = total.min(spec::CHS_LIMIT);
        if total >= 16 * 63 {
            return Self {
                cylinders: (total / (16 * 63)) as u16,
                heads: 16,
                sectors: 63,
            };
        }
        if total >= 63 {
            return Self {
                cylinders: 1,
                heads: (total / 63) as u8,
                sectors: 63,
            };
        }
        Self {
            cylinders: 1,
            heads: 1,
            sectors: total.max(1) as u8,
        }
    }

    /// The capacity this translation describes.
    pub fn capacity(&self) -> u64 {
        u64::from(self.cylinders) * u64::from(self.heads) * u64::from(self.sectors)
    }

    /// True for a translation ATA commands can use (heads 1-16, sectors 1-63, cylinders > 0).
    pub fn is_valid(&self) -> bool {
        (1..=16).contains(&self.heads) && (1..=63).contains(&self.sectors) && self.cylinders > 0
    }
}

/// The strings a drive reports in IDENTIFY (DEVICE or PACKET DEVICE). Longer strings are cut to
/// the field (model 40, serial 20, firmware 8 characters); an empty serial is replaced by one
/// derived from the drive's position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveIdentity {
    pub model: String,
    pub serial: String,
    pub firmware: String,
}

impl DriveIdentity {
    /// What Virtual PC / Virtual Server / Hyper-V generation 1 disks report.
    pub fn virtual_hd() -> Self {
        Self {
            model: "Virtual HD".into(),
            serial: String::new(),
            firmware: "1.1.0".into(),
        }
    }

    /// What their CD/DVD drives report.
    pub fn virtual_cd() -> Self {
        Self {
            model: "Virtual CD".into(),
            serial: String::new(),
            firmware: "1.1.0".into(),
        }
    }
}

/// A drive attached to an IDE position.
pub enum IdeDrive {
    /// An ATA disk over a block device. `geometry` overrides the default CHS translation
    /// ([`Chs::for_sectors`]) when it is valid.
    Disk {
        backend: Arc<dyn BlockDevice>,
        identity: DriveIdentity,
        geometry: Option<Chs>,
    },
    /// An ATAPI device (CD/DVD) whose commands a SCSI target executes.
    Atapi {
        target: Arc<Mutex<dyn ScsiTarget>>,
        identity: DriveIdentity,
    },
}

impl IdeDrive {
    /// A disk with the Virtual HD identity and the default geometry.
    pub fn disk(backend: Arc<dyn BlockDevice>) -> Self {
        Self::Disk {
            backend,
            identity: DriveIdentity::virtual_hd(),
            geometry: None,
        }
    }

    /// A CD/DVD drive with the Virtual CD identity.
    pub fn cdrom(target: Arc<Mutex<dyn ScsiTarget>>) -> Self {
        Self::Atapi {
            target,
            identity: DriveIdentity::virtual_cd(),
        }
    }
}

/// The drives of both channels: `[channel][device]`, device 0 the master, 1 the slave.
pub type IdeDrives = [[Option<IdeDrive>; 2]; 2];

/// What kind of drive a position holds, for checking saved state against the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdeDriveKind {
    Disk,
    Atapi,
}

impl std::fmt::Display for IdeDriveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IdeDriveKind::Disk => "a disk",
            IdeDriveKind::Atapi => "an ATAPI drive",
        })
    }
}

fn describe(kind: Option<IdeDriveKind>) -> String {
    kind.map_or_else(|| "no drive".to_string(), |k| k.to_string())
}

/// Why a saved state does not fit this controller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdeStateError {
    #[error("IDE position ide{channel}:{device}: the saved state has {}, the machine has {}", describe(*saved), describe(*configured))]
    DriveMismatch {
        channel: usize,
        device: usize,
        saved: Option<IdeDriveKind>,
        configured: Option<IdeDriveKind>,
    },
    #[error("IDE position ide{channel}:{device}: inconsistent saved transfer state ({detail})")]
    Inconsistent {
        channel: usize,
        device: usize,
        detail: &'static str,
    },
}

/// Saved state of [`Piix4Ide`]: configuration space and both channels, commands in flight
/// included (PIO buffers, pending DMA, ATAPI data not yet read).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piix4IdeState {
    #[serde(with = "serde_big_array::BigArray")]
    pub config: [u8; pci::CONFIG_SPACE_SIZE],
    pub channels: [IdeChannelState; 2],
}

/// The command block (8 ports at 0x1F0 / 0x170) of one channel.
struct CommandBlock(Arc<Mutex<IdeChannel>>);

impl BusDevice for CommandBlock {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.lock().unwrap().read_command_block(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.lock().unwrap().write_command_block(offset, data);
    }
}

/// The control block (1 port at 0x3F6 / 0x376) of one channel.
struct ControlBlock(Arc<Mutex<IdeChannel>>);

impl BusDevice for ControlBlock {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.0.lock().unwrap().read_control_block(offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.0.lock().unwrap().write_control_block(offset, data);
    }
}

/// The 16 bus-master bytes at BMIBA: primary channel at +0, secondary at +8.
struct BusMasterPorts([Arc<Mutex<IdeChannel>>; 2]);

impl BusDevice for BusMasterPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let a = offset + i as u64;
            *b = match self.0.get((a / spec::BM_CHANNEL_STRIDE) as usize) {
                Some(ch) => ch
                    .lock()
                    .unwrap()
                    .read_bus_master(a % spec::BM_CHANNEL_STRIDE),
                None => 0xff,
            };
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let a = offset + i as u64;
            if let Some(ch) = self.0.get((a / spec::BM_CHANNEL_STRIDE) as usize) {
                ch.lock()
                    .unwrap()
                    .write_bus_master(a % spec::BM_CHANNEL_STRIDE, v);
            }
        }
    }
}

/// The PIIX4 IDE function, 00:07.1.
pub struct Piix4Ide {
    // Runtime handles.
    io_bus: Arc<Bus>,
    channels: [Arc<Mutex<IdeChannel>>; 2],
    ports: [(SharedDevice, SharedDevice); 2],
    bus_master: SharedDevice,
    // Guest-visible state.
    config: ConfigSpace,
    /// Where the bus-master block is currently inserted on `io_bus`.
    mapped_at: Option<u16>,
}

impl Piix4Ide {
    /// The function as the firmware leaves it: I/O and bus master enabled, both channels
    /// decoding, BAR4 at [`spec::BMIBA_FIRMWARE`] (mapped on `io_bus` now). `irqs` are the ISA
    /// lines 14 and 15; `mem` is guest RAM for bus-master DMA.
    pub fn new(
        io_bus: Arc<Bus>,
        irqs: [Irq; 2],
        mem: GuestMemory,
        drives: IdeDrives,
    ) -> Result<Self, BusError> {
        Self::with_bmiba(io_bus, irqs, mem, drives, spec::BMIBA_FIRMWARE)
    }

    /// Like [`Piix4Ide::new`] with the bus-master block at `bmiba` (16-byte aligned; 0 leaves
    /// BAR4 unprogrammed and unmapped).
    pub fn with_bmiba(
        io_bus: Arc<Bus>,
        irqs: [Irq; 2],
        mem: GuestMemory,
        drives: IdeDrives,
        bmiba: u16,
    ) -> Result<Self, BusError> {
        let mut c = ConfigSpace::new(
            crate::piix4::spec::VENDOR_INTEL,
            spec::IDE_DEVICE_ID,
            spec::IDE_REVISION_ID,
            spec::IDE_CLASS_CODE,
        );
        c.set_u16(pci::COMMAND, spec::IDE_PCICMD_FIRMWARE);
        c.set_writable_u16(pci::COMMAND, spec::IDE_PCICMD_WRITABLE);
        c.set_u16(pci::STATUS, spec::IDE_PCISTS);
        c.set_writable_u8(pci::LATENCY_TIMER, spec::MLT_WRITABLE);
        c.add_io_bar(spec::BMIBA_BAR, u32::from(spec::BM_IO_LEN));
        c.set_u32(
            spec::BMIBA,
            u32::from(bmiba & !(spec::BM_IO_LEN - 1)) | pci::BAR_IO_SPACE,
        );
        for reg in [spec::IDETIM_PRIMARY, spec::IDETIM_SECONDARY] {
            c.set_u16(reg, spec::IDETIM_DECODE_ENABLE);
            c.set_writable_u16(reg, spec::IDETIM_WRITABLE);
        }
        c.set_writable_u8(spec::SIDETIM, 0xff);
        c.set_writable_u8(spec::UDMACTL, spec::UDMACTL_WRITABLE);
        c.set_writable_u16(spec::UDMATIM, spec::UDMATIM_WRITABLE);

        let [d0, d1] = drives;
        let [i0, i1] = irqs;
        let channels = [
            Arc::new(Mutex::new(IdeChannel::new(0, i0, mem.clone(), d0))),
            Arc::new(Mutex::new(IdeChannel::new(1, i1, mem, d1))),
        ];
        let ports = [0, 1].map(|i| {
            let cmd: SharedDevice = Arc::new(Mutex::new(CommandBlock(channels[i].clone())));
            let ctl: SharedDevice = Arc::new(Mutex::new(ControlBlock(channels[i].clone())));
            (cmd, ctl)
        });
        let bus_master: SharedDevice = Arc::new(Mutex::new(BusMasterPorts(channels.clone())));
        let mut ide = Self {
            io_bus,
            channels,
            ports,
            bus_master,
            config: c,
            mapped_at: None,
        };
        ide.apply_channel_enables();
        if let Some(base) = ide.wanted_base() {
            ide.io_bus.insert(
                u64::from(base),
                u64::from(spec::BM_IO_LEN),
                ide.bus_master.clone(),
            )?;
            ide.mapped_at = Some(base);
        }
        Ok(ide)
    }

    /// The legacy ports of channel `ch` (0 primary, 1 secondary): register the first at
    /// `spec::COMMAND_BLOCK[ch]` (0x1F0 / 0x170) with length 8 and the second at
    /// `spec::CONTROL_BLOCK[ch]` (0x3F6 / 0x376) with length 1. The channel interrupts on the
    /// `Irq` given to the constructor (ISA 14 / 15, edge-triggered).
    ///
    /// # Panics
    /// If `ch` is not 0 or 1.
    pub fn channel_ports(&self, ch: usize) -> (SharedDevice, SharedDevice) {
        let (cmd, ctl) = &self.ports[ch];
        (cmd.clone(), ctl.clone())
    }

    /// The port the bus-master block is mapped at, if it is.
    pub fn bus_master_base(&self) -> Option<u16> {
        self.mapped_at
    }

    pub fn state(&self) -> Piix4IdeState {
        Piix4IdeState {
            config: *self.config.bytes(),
            channels: [0, 1].map(|i| self.channels[i].lock().unwrap().state()),
        }
    }

    /// Restores a state from [`Piix4Ide::state`] of a machine with the same drives: the
    /// configuration space (remapping BAR4 where it says), both channels and the interrupt lines.
    /// Nothing is changed when the state does not fit.
    pub fn restore(&mut self, state: &Piix4IdeState) -> Result<(), IdeStateError> {
        for (i, ch) in self.channels.iter().enumerate() {
            ch.lock().unwrap().check_state(&state.channels[i])?;
        }
        self.config.restore_bytes(&state.config);
        for (i, ch) in self.channels.iter().enumerate() {
            ch.lock().unwrap().restore(&state.channels[i]);
        }
        self.apply_channel_enables();
        self.update_mapping();
        Ok(())
    }

    /// Where BAR4 and PCICMD.IOSE say the bus-master block belongs. A base of 0 counts as
    /// unprogrammed.
    fn wanted_base(&self) -> Option<u16> {
        let io = self.config.command() & pci::COMMAND_IO_SPACE != 0;
        let base = self.config.bar_address(spec::BMIBA_BAR) as u16;
        (io && base != 0).then_some(base)
    }

    /// Tells each channel whether its legacy ports decode (IOSE and IDETIM.IDE) and whether it
    /// may master the bus (BME); a DMA command that waited for BME runs now.
    fn apply_channel_enables(&mut self) {
        let command = self.config.command();
        let io = command & pci::COMMAND_IO_SPACE != 0;
        let bme = command & pci::COMMAND_BUS_MASTER != 0;
        for (ch, reg) in [spec::IDETIM_PRIMARY, spec::IDETIM_SECONDARY]
            .into_iter()
            .enumerate()
        {
            let decode = io && self.config.read_u16(reg) & spec::IDETIM_DECODE_ENABLE != 0;
            self.channels[ch].lock().unwrap().set_enables(decode, bme);
        }
    }

    /// Moves the bus-master block to where BAR4/IOSE now say. Safe from inside a configuration
    /// write dispatched by the same bus: the bus takes its own lock only inside insert/remove and
    /// the block's mutex is not taken here.
    fn update_mapping(&mut self) {
        let device: crate::bus::SharedDevice = self.bus_master.clone();
        let want = self.wanted_base();
        crate::bus::remap_io(
            &self.io_bus,
            &mut self.mapped_at,
            want,
            spec::BM_IO_LEN,
            &device,
            "PIIX4 IDE bus-master block",
        );
    }
}

impl PciFunction for Piix4Ide {
    fn config_read(&mut self, offset: u16) -> u32 {
        self.config.read_dword(offset)
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.config.write(offset, data);
        let end = offset + data.len() as u16;
        let touches = |reg: u16, len: u16| offset < reg + len && reg < end;
        if touches(pci::COMMAND, 2)
            || touches(spec::IDETIM_PRIMARY, 2)
            || touches(spec::IDETIM_SECONDARY, 2)
        {
            self.apply_channel_enables();
        }
        if touches(pci::COMMAND, 2) || touches(spec::BMIBA, 4) {
            self.update_mapping();
        }
        let defined = end <= 0x40
            || (spec::IDETIM_PRIMARY..spec::SIDETIM + 1).contains(&offset)
            || offset == spec::UDMACTL
            || (spec::UDMATIM..spec::UDMATIM + 2).contains(&offset);
        if !defined {
            warn_limited!(
                "PIIX4 IDE: write of {data:02x?} to undefined config register {offset:#04x} ignored"
            );
        }
    }
}
