//! One IDE channel: two device positions sharing a task-file bus, the device control register,
//! the interrupt line and the channel's bus-master registers (ATA/ATAPI-6 sections 5-9).
//!
//! Register model:
//! - Each position has its own task file. Writes to the command block registers other than
//!   Command reach both positions, as on a real cable; Command goes to the selected device only.
//! - An absent position next to a present device behaves as ATA-6 section 9.16.1 asks of a
//!   single-device configuration: its Status and Alternate Status read 00h and commands to it are
//!   ignored (EXECUTE DEVICE DIAGNOSTIC excepted); its other registers echo what was written, and
//!   after reset they hold the ATA signature with diagnostic code 01h. libata's classification
//!   (`ata_sff_dev_classify`: ATA signature but status 0 -> no device) then reports it absent.
//! - A channel with no device at all reads [`spec::FLOATING_BUS`] (7Fh) everywhere.
//! - While BSY is set (only during SRST here) command block reads return Status and writes are
//!   ignored.
//!
//! INTRQ is the selected device's pending interrupt unless nIEN is set; reading Status (not
//! Alternate Status) or writing Command clears it. The channel's line follows INTRQ (ISA
//! edge-triggered: raised while the device wants service). BMIS.interrupt is set whenever the
//! device asserts it, as on the PIIX4.

use std::sync::{Arc, Mutex};

use vhd::BlockDevice;

use crate::bus::{warn_limited, Irq};
use crate::dma::GuestMemory;
use crate::scsi::ScsiTarget;

use super::bmdma::BusMasterRegs;
use super::{spec, Chs, DriveIdentity, IdeDrive, IdeDriveKind, IdeStateError};

/// The task file of one device: the 48-bit FIFO registers (current and previous contents),
/// Device, Status and Error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskFile {
    pub feature: u8,
    pub hob_feature: u8,
    pub sector_count: u8,
    pub hob_sector_count: u8,
    pub lba_low: u8,
    pub hob_lba_low: u8,
    pub lba_mid: u8,
    pub hob_lba_mid: u8,
    pub lba_high: u8,
    pub hob_lba_high: u8,
    pub device: u8,
    pub status: u8,
    pub error: u8,
}

impl TaskFile {
    fn set_signature(&mut self, atapi: bool) {
        let s = if atapi {
            spec::SIGNATURE_ATAPI
        } else {
            spec::SIGNATURE_ATA
        };
        self.sector_count = s[0];
        self.lba_low = s[1];
        self.lba_mid = s[2];
        self.lba_high = s[3];
        self.device = 0;
    }

    /// The 16-bit ATAPI byte count in LBA mid/high.
    pub(super) fn byte_count(&self) -> u16 {
        u16::from_le_bytes([self.lba_mid, self.lba_high])
    }

    pub(super) fn set_byte_count(&mut self, n: u16) {
        [self.lba_mid, self.lba_high] = n.to_le_bytes();
    }
}

/// Power management state (ATA-6 section 6.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PowerMode {
    Active,
    Idle,
    Standby,
    /// Only a reset wakes the device; commands are ignored.
    Sleep,
}

/// Per-device settings the guest changes with SET FEATURES, SET MULTIPLE MODE and INITIALIZE
/// DEVICE PARAMETERS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSettings {
    /// Sectors per DRQ block of READ/WRITE MULTIPLE; 0 disables those commands.
    pub multiple: u8,
    /// The selected PIO mode (0-4).
    pub pio_mode: u8,
    /// The selected DMA mode as a SET FEATURES value (20h+n multiword, 40h+n Ultra), 0 for none.
    pub dma_mode: u8,
    pub write_cache: bool,
    pub look_ahead: bool,
    /// Whether a soft reset reverts the settings above to their power-on values (SET FEATURES
    /// 66h clears it, CCh sets it).
    pub revert_on_reset: bool,
    /// The current CHS translation (kept across soft resets).
    pub geometry: Chs,
    pub power: PowerMode,
}

/// How a command addressed the medium (and so how its position is written back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Addressing {
    Chs,
    Lba28,
    Lba48,
}

/// A READ(10)/READ(12)/READ CD the ATAPI transport splits into sub-commands of at most
/// [`spec::ATAPI_CHUNK_BYTES`], so that no data phase needs one huge buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReadSplit {
    pub next_lba: u32,
    pub remaining_blocks: u32,
    pub block_size: u32,
    pub chunk_blocks: u32,
}

/// The command a device is executing, as plain data (saved with the state).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum IdeTransfer {
    Idle,
    /// PIO data-in of one buffer that ends the command (IDENTIFY).
    PioInLast,
    /// ATA PIO read: after the buffer, `remaining` sectors from `next_lba` in blocks of `block`.
    AtaReadPio {
        next_lba: u64,
        remaining: u32,
        block: u32,
        addressing: Addressing,
    },
    /// ATA PIO write: the buffer collects the block starting at `lba`; `remaining` counts it.
    AtaWritePio {
        lba: u64,
        remaining: u32,
        block: u32,
        addressing: Addressing,
    },
    /// ATA DMA command waiting for the bus master.
    AtaDma {
        write: bool,
        lba: u64,
        count: u32,
        addressing: Addressing,
    },
    /// PACKET accepted: the buffer collects the command packet.
    PacketCdb {
        dma: bool,
        byte_count_limit: u16,
    },
    /// ATAPI data to the host: `chunk[chunk_pos..]` not yet sent (PIO: the buffer holds the DRQ
    /// block being read), `split` the sub-commands still to run.
    AtapiIn {
        cdb: [u8; spec::CDB_LEN],
        dma: bool,
        byte_count_limit: u16,
        chunk: Vec<u8>,
        chunk_pos: usize,
        split: Option<ReadSplit>,
    },
    /// ATAPI data from the host: `collected` of `length` bytes received so far.
    AtapiOut {
        cdb: [u8; spec::CDB_LEN],
        dma: bool,
        byte_count_limit: u16,
        length: usize,
        collected: Vec<u8>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PioDirection {
    In,
    Out,
}

impl IdeTransfer {
    fn pio_direction(&self) -> Option<PioDirection> {
        match self {
            IdeTransfer::PioInLast | IdeTransfer::AtaReadPio { .. } => Some(PioDirection::In),
            IdeTransfer::AtapiIn { dma: false, .. } => Some(PioDirection::In),
            IdeTransfer::AtaWritePio { .. } | IdeTransfer::PacketCdb { .. } => {
                Some(PioDirection::Out)
            }
            IdeTransfer::AtapiOut { dma: false, .. } => Some(PioDirection::Out),
            _ => None,
        }
    }

    /// True while the command waits for the bus master to move its data.
    pub(super) fn awaits_dma(&self) -> bool {
        matches!(
            self,
            IdeTransfer::AtaDma { .. }
                | IdeTransfer::AtapiIn { dma: true, .. }
                | IdeTransfer::AtapiOut { dma: true, .. }
        )
    }
}

/// Saved state of one device position.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdeDeviceState {
    /// What the position held when saved (checked against the machine on restore).
    pub kind: Option<IdeDriveKind>,
    pub task_file: TaskFile,
    pub intrq: bool,
    pub settings: DeviceSettings,
    pub transfer: IdeTransfer,
    /// The PIO data block and how much of it has moved.
    pub buffer: Vec<u8>,
    pub buffer_pos: usize,
}

/// Saved state of one channel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdeChannelState {
    /// The DEV bit last written: 0 master, 1 slave.
    pub selected: u8,
    pub device_control: u8,
    pub bus_master: BusMasterRegs,
    pub irq_level: bool,
    pub devices: [IdeDeviceState; 2],
}

pub(super) struct AtaDisk {
    pub backend: Arc<dyn BlockDevice>,
    pub sectors: u64,
    pub read_only: bool,
    pub default_geometry: Chs,
    pub identity: DriveIdentity,
}

pub(super) struct AtapiDrive {
    pub target: Arc<Mutex<dyn ScsiTarget>>,
    pub identity: DriveIdentity,
}

pub(super) enum Drive {
    Disk(AtaDisk),
    Atapi(AtapiDrive),
}

impl Drive {
    fn kind(&self) -> IdeDriveKind {
        match self {
            Drive::Disk(_) => IdeDriveKind::Disk,
            Drive::Atapi(_) => IdeDriveKind::Atapi,
        }
    }
}

pub(super) struct IdeDevice {
    // Fixed configuration.
    pub drive: Option<Drive>,
    // Guest-visible state.
    pub tf: TaskFile,
    pub intrq: bool,
    pub settings: DeviceSettings,
    pub xfer: IdeTransfer,
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl IdeDevice {
    fn new(drive: Option<Drive>) -> Self {
        let mut d = Self {
            settings: power_on_settings(drive.as_ref()),
            drive,
            tf: TaskFile::default(),
            intrq: false,
            xfer: IdeTransfer::Idle,
            buf: Vec::new(),
            pos: 0,
        };
        d.reset_registers();
        d
    }

    pub fn is_atapi(&self) -> bool {
        matches!(self.drive, Some(Drive::Atapi(_)))
    }

    pub fn disk(&self) -> Option<&AtaDisk> {
        match &self.drive {
            Some(Drive::Disk(d)) => Some(d),
            _ => None,
        }
    }

    pub fn atapi(&self) -> Option<&AtapiDrive> {
        match &self.drive {
            Some(Drive::Atapi(d)) => Some(d),
            _ => None,
        }
    }

    /// Ends any command and leaves the task file as after a reset or a diagnostic: signature,
    /// diagnostic code 01h, status DRDY|DSC for disks and 00h for ATAPI devices (ATA-6 9.1).
    fn reset_registers(&mut self) {
        self.xfer = IdeTransfer::Idle;
        self.buf.clear();
        self.pos = 0;
        self.intrq = false;
        self.tf = TaskFile::default();
        self.tf.set_signature(self.is_atapi());
        self.tf.error = spec::DIAG_PASSED;
        self.tf.status = match self.drive {
            Some(Drive::Disk(_)) => spec::STATUS_DRDY | spec::STATUS_DSC,
            _ => 0,
        };
    }
}

/// Settings at power-on: multiple mode at its maximum, UDMA mode 2 selected (what a BIOS on a
/// PIIX4 board leaves, UDMA/33), write cache and look-ahead on, the default translation.
fn power_on_settings(drive: Option<&Drive>) -> DeviceSettings {
    let (multiple, geometry) = match drive {
        Some(Drive::Disk(d)) => (spec::MAX_MULTIPLE, d.default_geometry),
        _ => (0, Chs::for_sectors(0)),
    };
    DeviceSettings {
        multiple,
        pio_mode: spec::MAX_PIO_MODE,
        dma_mode: spec::XFER_UDMA | 2,
        write_cache: true,
        look_ahead: true,
        revert_on_reset: true,
        geometry,
        power: PowerMode::Active,
    }
}

fn default_serial(channel: usize, device: usize) -> String {
    format!("KETTLE-IDE-{channel}{device}")
}

pub(super) struct IdeChannel {
    // Fixed configuration.
    pub index: usize,
    // Runtime handles.
    irq: Irq,
    pub mem: GuestMemory,
    // Guest-visible state.
    pub devices: [IdeDevice; 2],
    pub selected: usize,
    pub control: u8,
    pub bm: BusMasterRegs,
    irq_level: bool,
    /// PCICMD.IOSE and IDETIM.IDE: the legacy ports respond.
    decode: bool,
    /// PCICMD.BME: the bus master may run.
    pub bus_master_enabled: bool,
}

impl IdeChannel {
    pub fn new(index: usize, irq: Irq, mem: GuestMemory, drives: [Option<IdeDrive>; 2]) -> Self {
        let [d0, d1] = drives;
        let make = |pos: usize, d: Option<IdeDrive>| {
            let drive = d.map(|d| match d {
                IdeDrive::Disk {
                    backend,
                    mut identity,
                    geometry,
                } => {
                    if identity.serial.is_empty() {
                        identity.serial = default_serial(index, pos);
                    }
                    let sectors = backend.sectors();
                    Drive::Disk(AtaDisk {
                        read_only: backend.read_only(),
                        sectors,
                        default_geometry: geometry
                            .filter(Chs::is_valid)
                            .unwrap_or_else(|| Chs::for_sectors(sectors)),
                        backend,
                        identity,
                    })
                }
                IdeDrive::Atapi {
                    target,
                    mut identity,
                } => {
                    if identity.serial.is_empty() {
                        identity.serial = default_serial(index, pos);
                    }
                    Drive::Atapi(AtapiDrive { target, identity })
                }
            });
            IdeDevice::new(drive)
        };
        let mut bm = BusMasterRegs::default();
        // The firmware marks the drives it found DMA capable.
        if d0.is_some() {
            bm.status |= spec::BMIS_DRIVE0_DMA;
        }
        if d1.is_some() {
            bm.status |= spec::BMIS_DRIVE1_DMA;
        }
        Self {
            index,
            irq,
            mem,
            devices: [make(0, d0), make(1, d1)],
            selected: 0,
            control: 0,
            bm,
            irq_level: false,
            decode: true,
            bus_master_enabled: true,
        }
    }

    pub fn set_enables(&mut self, decode: bool, bus_master: bool) {
        self.decode = decode;
        self.bus_master_enabled = bus_master;
        if bus_master {
            self.try_dma();
        }
    }

    fn any_drive(&self) -> bool {
        self.devices.iter().any(|d| d.drive.is_some())
    }

    // ---- Interrupts ----------------------------------------------------------------------------

    /// The device asserts INTRQ (command completion or a data block ready).
    pub fn raise_irq(&mut self, d: usize) {
        self.devices[d].intrq = true;
        if d == self.selected && self.control & spec::CONTROL_NIEN == 0 {
            self.bm.status |= spec::BMIS_INTERRUPT;
        }
        self.update_irq();
    }

    fn update_irq(&mut self) {
        let level = self.devices[self.selected].intrq && self.control & spec::CONTROL_NIEN == 0;
        if level != self.irq_level {
            if level {
                self.bm.status |= spec::BMIS_INTERRUPT;
            }
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    // ---- Command completion helpers --------------------------------------------------------------

    /// The command ends successfully: DRDY|DSC, interrupt.
    pub fn complete(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        dev.xfer = IdeTransfer::Idle;
        dev.buf.clear();
        dev.pos = 0;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC;
        self.raise_irq(d);
    }

    /// The command ends with an error: DRDY|DSC|ERR, `error` in the error register, interrupt.
    pub fn fail(&mut self, d: usize, error: u8) {
        let dev = &mut self.devices[d];
        dev.xfer = IdeTransfer::Idle;
        dev.buf.clear();
        dev.pos = 0;
        dev.tf.error = error;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC | spec::STATUS_ERR;
        self.raise_irq(d);
    }

    /// Offers the buffer to the host: DRQ set, interrupt if `irq`.
    pub fn start_pio(&mut self, d: usize, xfer: IdeTransfer, buf: Vec<u8>, irq: bool) {
        let dev = &mut self.devices[d];
        dev.xfer = xfer;
        dev.buf = buf;
        dev.pos = 0;
        dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC | spec::STATUS_DRQ;
        if irq {
            self.raise_irq(d);
        }
    }

    // ---- Command block ---------------------------------------------------------------------------

    pub fn read_command_block(&mut self, offset: u64, data: &mut [u8]) {
        if !self.decode {
            data.fill(0xff);
            return;
        }
        if !self.any_drive() {
            data.fill(spec::FLOATING_BUS);
            return;
        }
        if offset == spec::REG_DATA {
            self.read_data(data);
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_register(offset + i as u64);
        }
    }

    pub fn write_command_block(&mut self, offset: u64, data: &[u8]) {
        if !self.decode || !self.any_drive() {
            return;
        }
        if offset == spec::REG_DATA {
            self.write_data(data);
            return;
        }
        for (i, &v) in data.iter().enumerate() {
            self.write_register(offset + i as u64, v);
        }
    }

    fn status_of(&self, d: usize) -> u8 {
        let dev = &self.devices[d];
        if dev.drive.is_some() {
            dev.tf.status
        } else {
            0
        }
    }

    fn read_register(&mut self, reg: u64) -> u8 {
        let sel = self.selected;
        let status = self.status_of(sel);
        if reg == spec::REG_STATUS {
            if self.devices[sel].drive.is_some() {
                self.devices[sel].intrq = false;
                self.update_irq();
            }
            return status;
        }
        if status & spec::STATUS_BSY != 0 {
            return status;
        }
        let hob = self.control & spec::CONTROL_HOB != 0;
        let tf = &self.devices[sel].tf;
        let pick = |cur: u8, prev: u8| if hob { prev } else { cur };
        match reg {
            spec::REG_ERROR => tf.error,
            spec::REG_SECTOR_COUNT => pick(tf.sector_count, tf.hob_sector_count),
            spec::REG_LBA_LOW => pick(tf.lba_low, tf.hob_lba_low),
            spec::REG_LBA_MID => pick(tf.lba_mid, tf.hob_lba_mid),
            spec::REG_LBA_HIGH => pick(tf.lba_high, tf.hob_lba_high),
            spec::REG_DEVICE => tf.device,
            _ => 0xff,
        }
    }

    fn write_register(&mut self, reg: u64, v: u8) {
        if reg == spec::REG_STATUS {
            self.command(v);
            return;
        }
        if self.status_of(self.selected) & spec::STATUS_BSY != 0 {
            warn_limited!(
                "IDE{}: write of {v:#04x} to register {reg} while busy ignored",
                self.index
            );
            return;
        }
        // ATA-6 7.9: a write to any command block register clears HOB.
        self.control &= !spec::CONTROL_HOB;
        for dev in &mut self.devices {
            let tf = &mut dev.tf;
            let shift = |cur: &mut u8, prev: &mut u8| {
                *prev = *cur;
                *cur = v;
            };
            match reg {
                spec::REG_ERROR => shift(&mut tf.feature, &mut tf.hob_feature),
                spec::REG_SECTOR_COUNT => shift(&mut tf.sector_count, &mut tf.hob_sector_count),
                spec::REG_LBA_LOW => shift(&mut tf.lba_low, &mut tf.hob_lba_low),
                spec::REG_LBA_MID => shift(&mut tf.lba_mid, &mut tf.hob_lba_mid),
                spec::REG_LBA_HIGH => shift(&mut tf.lba_high, &mut tf.hob_lba_high),
                spec::REG_DEVICE => tf.device = v,
                _ => {}
            }
        }
        if reg == spec::REG_DEVICE {
            self.selected = usize::from(v & spec::DEVICE_DEV != 0);
            self.update_irq();
        }
    }

    fn command(&mut self, cmd: u8) {
        if cmd == spec::CMD_EXECUTE_DEVICE_DIAGNOSTIC {
            self.diagnostic();
            return;
        }
        let d = self.selected;
        let dev = &mut self.devices[d];
        let Some(drive) = &dev.drive else {
            // ATA-6 9.16.1: device 0 ignores commands written for an absent device 1.
            return;
        };
        if dev.tf.status & spec::STATUS_BSY != 0 {
            return;
        }
        let atapi = matches!(drive, Drive::Atapi(_));
        if dev.settings.power == PowerMode::Sleep && !(atapi && cmd == spec::CMD_DEVICE_RESET) {
            warn_limited!(
                "IDE{}:{d}: command {cmd:#04x} to a sleeping device ignored (it needs a reset)",
                self.index
            );
            return;
        }
        if dev.xfer != IdeTransfer::Idle {
            warn_limited!(
                "IDE{}:{d}: command {cmd:#04x} abandons the command in progress",
                self.index
            );
        }
        dev.xfer = IdeTransfer::Idle;
        dev.buf.clear();
        dev.pos = 0;
        dev.intrq = false;
        // The error register describes the last command only: a command that succeeds
        // leaves it 0 (an earlier ABRT or IDNF, or the reset's diagnostic code, must not
        // show up in the registers a host reads back after a good command).
        dev.tf.error = 0;
        self.update_irq();
        if atapi {
            self.atapi_command(d, cmd);
        } else {
            self.ata_command(d, cmd);
        }
    }

    /// EXECUTE DEVICE DIAGNOSTIC: both devices run it; device 0 reports "passed" (01h) and
    /// interrupts, and device 0 is selected afterwards (ATA-6 8.11).
    fn diagnostic(&mut self) {
        if !self.any_drive() {
            return;
        }
        for dev in &mut self.devices {
            dev.reset_registers();
            dev.settings.power = PowerMode::Active;
        }
        self.selected = 0;
        let d = if self.devices[0].drive.is_some() {
            0
        } else {
            1
        };
        self.raise_irq(d);
    }

    /// DEVICE RESET (ATAPI): the device alone returns to its post-reset registers, without an
    /// interrupt; its settings stay.
    pub fn device_reset(&mut self, d: usize) {
        let dev = &mut self.devices[d];
        dev.reset_registers();
        dev.settings.power = PowerMode::Active;
        self.update_irq();
    }

    // ---- Data port -------------------------------------------------------------------------------

    fn read_data(&mut self, out: &mut [u8]) {
        let d = self.selected;
        let dev = &mut self.devices[d];
        let ready = dev.drive.is_some()
            && dev.tf.status & spec::STATUS_DRQ != 0
            && dev.xfer.pio_direction() == Some(PioDirection::In)
            && dev.pos < dev.buf.len();
        if !ready {
            out.fill(0xff);
            return;
        }
        // A 32-bit access is two 16-bit cycles on the cable; past the end of the block the
        // host gets zeros (libata reads an odd ATAPI tail this way).
        let n = out.len().min(dev.buf.len() - dev.pos);
        out[..n].copy_from_slice(&dev.buf[dev.pos..dev.pos + n]);
        out[n..].fill(0);
        dev.pos += n;
        if dev.pos == dev.buf.len() {
            self.pio_block_done(d);
        }
    }

    fn write_data(&mut self, data: &[u8]) {
        let d = self.selected;
        let dev = &mut self.devices[d];
        let ready = dev.drive.is_some()
            && dev.tf.status & spec::STATUS_DRQ != 0
            && dev.xfer.pio_direction() == Some(PioDirection::Out)
            && dev.pos < dev.buf.len();
        if !ready {
            warn_limited!(
                "IDE{}:{d}: data port write without a data request ignored",
                self.index
            );
            return;
        }
        let n = data.len().min(dev.buf.len() - dev.pos);
        let pos = dev.pos;
        dev.buf[pos..pos + n].copy_from_slice(&data[..n]);
        dev.pos += n;
        if dev.pos == dev.buf.len() {
            self.pio_block_done(d);
        }
    }

    /// The host has moved the whole PIO buffer: go on with the command.
    fn pio_block_done(&mut self, d: usize) {
        match self.devices[d].xfer {
            IdeTransfer::PioInLast => {
                let dev = &mut self.devices[d];
                dev.xfer = IdeTransfer::Idle;
                dev.buf.clear();
                dev.pos = 0;
                dev.tf.status = spec::STATUS_DRDY | spec::STATUS_DSC;
            }
            IdeTransfer::AtaReadPio { .. } => self.ata_read_pio_next(d),
            IdeTransfer::AtaWritePio { .. } => self.ata_write_pio_block(d),
            IdeTransfer::PacketCdb { .. } => self.atapi_packet(d),
            IdeTransfer::AtapiIn { .. } => self.atapi_in_next(d),
            IdeTransfer::AtapiOut { .. } => self.atapi_out_block(d),
            IdeTransfer::Idle | IdeTransfer::AtaDma { .. } => {}
        }
    }

    // ---- Control block ---------------------------------------------------------------------------

    pub fn read_control_block(&mut self, offset: u64, data: &mut [u8]) {
        if !self.decode {
            data.fill(0xff);
            return;
        }
        let alt = if self.any_drive() {
            self.status_of(self.selected)
        } else {
            spec::FLOATING_BUS
        };
        data.fill(0xff);
        if offset == 0 {
            data[0] = alt;
        }
    }

    pub fn write_control_block(&mut self, offset: u64, data: &[u8]) {
        if !self.decode || offset != 0 || data.is_empty() {
            return;
        }
        self.write_device_control(data[0]);
    }

    /// Device control: nIEN, SRST (software reset of both devices, ATA-6 9.2) and HOB.
    fn write_device_control(&mut self, v: u8) {
        let was_reset = self.control & spec::CONTROL_SRST != 0;
        self.control = v;
        let reset = v & spec::CONTROL_SRST != 0;
        if reset && !was_reset {
            for dev in &mut self.devices {
                dev.xfer = IdeTransfer::Idle;
                dev.buf.clear();
                dev.pos = 0;
                dev.intrq = false;
                if dev.drive.is_some() {
                    dev.tf.status = spec::STATUS_BSY;
                }
            }
        } else if !reset && was_reset {
            for dev in &mut self.devices {
                dev.reset_registers();
                let geometry = dev.settings.geometry;
                if dev.settings.revert_on_reset {
                    dev.settings = power_on_settings(dev.drive.as_ref());
                    dev.settings.geometry = geometry;
                }
                dev.settings.power = PowerMode::Active;
            }
            self.selected = 0;
        }
        self.update_irq();
    }

    // ---- Bus master ------------------------------------------------------------------------------

    pub fn read_bus_master(&self, offset: u64) -> u8 {
        self.bm.read_byte(offset)
    }

    pub fn write_bus_master(&mut self, offset: u64, v: u8) {
        match offset {
            spec::BMIC => {
                let was = self.bm.started();
                self.bm.command = v & spec::BMIC_WRITABLE;
                let now = self.bm.started();
                if now && !was {
                    self.bm.status |= spec::BMIS_ACTIVE;
                    self.try_dma();
                } else if was && !now {
                    // Stopping aborts whatever the engine was doing (SFF-8038i).
                    self.bm.status &= !spec::BMIS_ACTIVE;
                }
            }
            spec::BMIS => self.bm.write_status(v),
            4..=7 => self.bm.write_prd_byte(offset - spec::BMIDTP, v),
            _ => {}
        }
    }

    /// Runs a DMA command when the command, BMIC.start (with BMIS.active) and PCICMD.BME are
    /// all present, whichever came last.
    pub fn try_dma(&mut self) {
        if !self.bm.started() || !self.bm.active() || !self.bus_master_enabled {
            return;
        }
        let sel = self.selected;
        let Some(d) = [sel, 1 - sel]
            .into_iter()
            .find(|&d| self.devices[d].xfer.awaits_dma())
        else {
            return;
        };
        match self.devices[d].xfer {
            IdeTransfer::AtaDma { .. } => self.run_ata_dma(d),
            _ => self.run_atapi_dma(d),
        }
    }

    /// The end of a DMA transfer as the bus master sees it: an error (or a direction mismatch)
    /// sets BMIS.error and clears active; a table used up exactly clears active; a table with room
    /// left keeps active set (SFF-8038i: the host stops the engine).
    pub fn end_dma(&mut self, bus_error: bool, exhausted: bool) {
        if bus_error {
            self.bm.status |= spec::BMIS_ERROR;
            self.bm.status &= !spec::BMIS_ACTIVE;
        } else if exhausted {
            self.bm.status &= !spec::BMIS_ACTIVE;
        }
    }

    // ---- Saved state -----------------------------------------------------------------------------

    pub fn state(&self) -> IdeChannelState {
        IdeChannelState {
            selected: self.selected as u8,
            device_control: self.control,
            bus_master: self.bm,
            irq_level: self.irq_level,
            devices: [0, 1].map(|i| {
                let d = &self.devices[i];
                IdeDeviceState {
                    kind: d.drive.as_ref().map(Drive::kind),
                    task_file: d.tf,
                    intrq: d.intrq,
                    settings: d.settings,
                    transfer: d.xfer.clone(),
                    buffer: d.buf.clone(),
                    buffer_pos: d.pos,
                }
            }),
        }
    }

    /// Checks a saved state against this channel's drives without applying it: the drive kinds
    /// must match, and every count, position and length a command in flight will use must be
    /// one the command itself could have produced, so that nothing the guest does after the
    /// restore can index out of range, overflow or allocate without bound.
    pub fn check_state(&self, s: &IdeChannelState) -> Result<(), IdeStateError> {
        for (i, (dev, saved)) in self.devices.iter().zip(&s.devices).enumerate() {
            let configured = dev.drive.as_ref().map(Drive::kind);
            if configured != saved.kind {
                return Err(IdeStateError::DriveMismatch {
                    channel: self.index,
                    device: i,
                    saved: saved.kind,
                    configured,
                });
            }
            check_device_state(dev, saved).map_err(|detail| IdeStateError::Inconsistent {
                channel: self.index,
                device: i,
                detail,
            })?;
        }
        Ok(())
    }

    /// Loads a state that passed [`IdeChannel::check_state`] and drives the line to match.
    pub fn restore(&mut self, s: &IdeChannelState) {
        self.selected = usize::from(s.selected & 1);
        self.control = s.device_control;
        self.bm = s.bus_master;
        self.bm.command &= spec::BMIC_WRITABLE;
        self.bm.prd_table &= spec::BMIDTP_MASK;
        for (dev, saved) in self.devices.iter_mut().zip(&s.devices) {
            dev.tf = saved.task_file;
            dev.intrq = saved.intrq;
            dev.settings = saved.settings;
            dev.xfer = saved.transfer.clone();
            dev.buf = saved.buffer.clone();
            dev.pos = saved.buffer_pos;
        }
        self.irq_level =
            self.devices[self.selected].intrq && self.control & spec::CONTROL_NIEN == 0;
        self.irq.set_level(self.irq_level);
    }
}

/// The checks of [`IdeChannel::check_state`] for one position whose drive kind matches; the
/// error says what is out of range.
fn check_device_state(dev: &IdeDevice, saved: &IdeDeviceState) -> Result<(), &'static str> {
    const SECTOR: usize = spec::SECTOR_SIZE;
    /// The most sectors one ATA command transfers (a 48-bit count of 0).
    const MAX_SECTORS: u32 = 0x1_0000;
    if saved.buffer_pos > saved.buffer.len() {
        return Err("buffer position past the buffer");
    }
    let multiple = saved.settings.multiple;
    if multiple > spec::MAX_MULTIPLE || !(multiple == 0 || multiple.is_power_of_two()) {
        return Err("multiple count");
    }
    // A disk command's range must lie on the disk (which also keeps every LBA sum in range).
    let on_disk = |lba: u64, count: u32| {
        dev.disk().is_some_and(|d| {
            lba.checked_add(u64::from(count))
                .is_some_and(|e| e <= d.sectors)
        })
    };
    let read_only = dev.disk().is_some_and(|d| d.read_only);
    let block_ok = |block: u32| (1..=u32::from(spec::MAX_MULTIPLE)).contains(&block);
    match (&saved.transfer, saved.kind) {
        (IdeTransfer::Idle | IdeTransfer::PioInLast, _) => {}
        (
            &IdeTransfer::AtaReadPio {
                next_lba,
                remaining,
                block,
                ..
            },
            Some(IdeDriveKind::Disk),
        ) => {
            if !block_ok(block) || remaining > MAX_SECTORS {
                return Err("PIO read block or count");
            }
            if !on_disk(next_lba, remaining) {
                return Err("PIO read range past the end of the disk");
            }
            if saved.buffer.len() > block as usize * SECTOR {
                return Err("PIO read buffer larger than its block");
            }
        }
        (
            &IdeTransfer::AtaWritePio {
                lba,
                remaining,
                block,
                ..
            },
            Some(IdeDriveKind::Disk),
        ) => {
            if read_only {
                return Err("PIO write to a read-only disk");
            }
            if !block_ok(block) || remaining == 0 || remaining > MAX_SECTORS {
                return Err("PIO write block or count");
            }
            if !on_disk(lba, remaining) {
                return Err("PIO write range past the end of the disk");
            }
            let len = saved.buffer.len();
            if len == 0
                || !len.is_multiple_of(SECTOR)
                || len / SECTOR > block.min(remaining) as usize
            {
                return Err("PIO write buffer does not fit its block");
            }
        }
        (
            &IdeTransfer::AtaDma {
                write, lba, count, ..
            },
            Some(IdeDriveKind::Disk),
        ) => {
            if write && read_only {
                return Err("DMA write to a read-only disk");
            }
            if count == 0 || count > MAX_SECTORS {
                return Err("DMA sector count");
            }
            if !on_disk(lba, count) {
                return Err("DMA range past the end of the disk");
            }
        }
        (IdeTransfer::PacketCdb { .. }, Some(IdeDriveKind::Atapi)) => {
            if saved.buffer.len() != spec::CDB_LEN {
                return Err("command packet buffer length");
            }
        }
        (
            IdeTransfer::AtapiIn {
                chunk,
                chunk_pos,
                split,
                ..
            },
            Some(IdeDriveKind::Atapi),
        ) => {
            if *chunk_pos > chunk.len() {
                return Err("ATAPI data position past its chunk");
            }
            if chunk.len() > spec::ATAPI_MAX_UNSPLIT {
                return Err("ATAPI data chunk length");
            }
            if let Some(r) = split {
                let block = r.block_size as usize;
                let chunk_bytes = block.saturating_mul(r.chunk_blocks as usize);
                if block == 0
                    || r.chunk_blocks == 0
                    || r.remaining_blocks == 0
                    || chunk_bytes > spec::ATAPI_CHUNK_BYTES.max(block)
                    || block > spec::ATAPI_MAX_UNSPLIT
                {
                    return Err("ATAPI split read");
                }
            }
        }
        (
            IdeTransfer::AtapiOut {
                length, collected, ..
            },
            Some(IdeDriveKind::Atapi),
        ) => {
            if *length > spec::ATAPI_MAX_UNSPLIT {
                return Err("ATAPI data-out length");
            }
            if collected.len() + saved.buffer.len() > *length {
                return Err("ATAPI data-out collected past its length");
            }
        }
        _ => return Err("transfer does not fit the drive"),
    }
    Ok(())
}
