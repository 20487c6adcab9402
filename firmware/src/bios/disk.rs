//! INT 13h, the fixed-disk and CD-ROM services, over the VMM's disk images.
//!
//! The VMM hands [`Bios::new`] its IDE drives as [`BiosDisk`]s, indexed by IDE position. Hard
//! disks are drives 80h, 81h, ... and CD-ROMs E0h, E1h, ... in that order. The BIOS reads and
//! writes the images directly, not through the IDE models: the guest never sees the transfer
//! on the IDE registers, as on a real machine whose BIOS already finished its command when the
//! operating system's driver takes over.
//!
//! # What is served
//!
//! Hard disks (Ralf Brown's interrupt list, INT 13h; EDD 3.0, T13/1386D):
//!
//! - AH=00h reset, 01h last status (0040:0074), 0Dh/10h/11h/14h reset, ready, recalibrate and
//!   diagnostics (all succeed), 0Ch seek (checks the CHS address);
//! - AH=02h/03h/04h CHS read, write and verify, through the logical geometry of AH=08h: the
//!   LBA-assisted translation of the PC BIOSes (and of SeaBIOS when CMOS 0x39 asks for it, as
//!   kettle's CMOS does): 63 sectors per track, 16, 32, 64, 128 or 255 heads as the disk grows
//!   past about 536 MiB, 1 GiB, 2 GiB and 4 GiB, at most 1024 cylinders. A transfer whose
//!   buffer would run past the end of the ES segment (offset BX plus the byte count above
//!   64 KiB) fails with 09h "data boundary error", as the PC BIOS's DMA-based transfers did,
//!   instead of guessing whether the caller meant the offset to wrap or the address to go on;
//! - AH=08h parameters, 15h type (03h, CX:DX sectors);
//! - AH=41h-49h, the EDD 3.0 extensions: 42h/43h/44h/47h take a disk address packet at DS:SI
//!   (10h bytes, or 18h with the 64-bit flat buffer address used when the seg:off buffer is
//!   FFFF:FFFF); a real-mode buffer is taken as the linear address seg*16+off and runs on
//!   contiguously, as SeaBIOS does; at most 127 blocks, more is rejected with 01h; on an error
//!   the packet's count says how many blocks were done. 48h fills the 1Ah, 1Eh or 42h form of
//!   the result buffer, with an EDD 3.0 device path saying "ISA"/"ATA" (or "ATAPI") with the
//!   channel's legacy base port and master/slave. 45h/49h succeed; 46h (eject) is refused on a
//!   fixed disk with B2h.
//!
//! CD-ROMs in El Torito no-emulation mode (El Torito 1.0, section 5.3): AH=41h, 42h, 44h, 47h,
//! 48h work on 2048-byte blocks (the packet's LBA counts them, 48h says 2048 bytes per
//! sector), 43h fails write-protected, 45h/46h/49h succeed, AX=4B00h/4B01h return the
//! specification packet of the boot. CHS calls fail with 01h.
//!
//! A write to a read-only image fails with 03h; an image that fails a read gives 04h, a write
//! CCh, and [`BiosError::Disk`] for the VMM to log. A write is flushed before the call returns:
//! DOS and other BIOS-disk users have no flush of their own. A buffer that is not RAM ends the
//! transfer with 01h and [`BiosError::Memory`]. Floppy drive numbers (DL below 80h) have no
//! drive behind them.

use super::cpu::{linear, Call, MemError, RealMem};
use super::spec::{bda, disk, edd, eltorito};
use super::{Bios, BiosError};

/// What kind of drive a [`BiosDisk`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    HardDisk,
    Cdrom,
}

/// A drive the BIOS serves; the VMM implements it over its disk images (the IDE models'
/// backends).
pub trait BiosDisk: Send {
    fn kind(&self) -> DiskKind;
    /// Size in 512-byte sectors (for a CD, the image size / 512).
    fn sectors(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Reads whole 512-byte sectors from 512-byte LBA `lba`.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), String>;
    fn write(&self, lba: u64, data: &[u8]) -> Result<(), String>;
    fn flush(&self) -> Result<(), String>;
}

/// A drive with the number INT 13h knows it by and its IDE position.
pub(super) struct Drive {
    pub number: u8,
    /// IDE position: channel `slot / 2`, slave if `slot` is odd.
    pub slot: usize,
    pub disk: Box<dyn BiosDisk>,
}

impl std::fmt::Debug for Drive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drive")
            .field("number", &format_args!("{:#04x}", self.number))
            .field("slot", &self.slot)
            .field("kind", &self.disk.kind())
            .field("sectors", &self.disk.sectors())
            .finish()
    }
}

/// The logical CHS geometry of a hard disk (INT 13h AH=08h and CHS transfers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub cylinders: u64,
    pub heads: u64,
    pub sectors: u64,
}

impl Geometry {
    /// The LBA-assisted translation of a disk of `sectors`: 63 sectors per track; the heads
    /// from the number of 1024-cylinder tracks of 63 sectors the disk holds, rounded up to 16,
    /// 32, 64, 128 or 255; as many whole cylinders as fit, 1-1024 (so 1024 cylinders of 255
    /// heads for anything past 1024*255*63 sectors). The same numbers as SeaBIOS's LBA translation,
    /// so a disk partitioned by CHS under one BIOS reads the same under the other.
    pub fn of(sectors: u64) -> Self {
        let spt = disk::SECTORS_PER_TRACK;
        let tracks = sectors / spt;
        let heads = match tracks / disk::MAX_CYLINDERS {
            n if n > 128 => disk::MAX_HEADS,
            n if n > 64 => 128,
            n if n > 32 => 64,
            n if n > 16 => 32,
            _ => disk::ATA_HEADS,
        };
        let cylinders = (tracks / heads).clamp(1, disk::MAX_CYLINDERS);
        Self {
            cylinders,
            heads,
            sectors: disk::SECTORS_PER_TRACK,
        }
    }
}

impl Drive {
    /// Numbers `disks` (indexed by IDE position): hard disks from 80h, CD-ROMs from E0h.
    pub fn number(disks: Vec<Option<Box<dyn BiosDisk>>>) -> Vec<Drive> {
        let (mut hd, mut cd) = (Some(disk::FIRST_HARD_DISK), Some(disk::FIRST_CDROM));
        let mut drives = Vec::new();
        for (slot, d) in disks.into_iter().enumerate() {
            let Some(d) = d else { continue };
            let next = match d.kind() {
                DiskKind::HardDisk => &mut hd,
                DiskKind::Cdrom => &mut cd,
            };
            match *next {
                Some(number) if number != disk::FIRST_CDROM || d.kind() == DiskKind::Cdrom => {
                    *next = number.checked_add(1);
                    drives.push(Drive {
                        number,
                        slot,
                        disk: d,
                    });
                }
                _ => log::warn!("BIOS: no drive number left for the disk at IDE position {slot}"),
            }
        }
        drives
    }

    fn is_cd(&self) -> bool {
        self.disk.kind() == DiskKind::Cdrom
    }

    /// The size of the blocks INT 13h counts on this drive.
    pub fn block_size(&self) -> usize {
        if self.is_cd() {
            disk::CD_SECTOR
        } else {
            disk::SECTOR
        }
    }

    /// The drive's size in its blocks.
    pub fn blocks(&self) -> u64 {
        self.disk.sectors() / (self.block_size() / disk::SECTOR) as u64
    }

    fn sectors_per_block(&self) -> u64 {
        (self.block_size() / disk::SECTOR) as u64
    }

    /// Reads `buf.len() / block_size` blocks from block `block` (which the caller has checked
    /// is inside the drive).
    pub fn read_blocks(&self, block: u64, buf: &mut [u8]) -> Result<(), String> {
        self.disk.read(block * self.sectors_per_block(), buf)
    }

    fn write_blocks(&self, block: u64, data: &[u8]) -> Result<(), String> {
        self.disk.write(block * self.sectors_per_block(), data)?;
        self.disk.flush()
    }

    fn geometry(&self) -> Geometry {
        Geometry::of(self.disk.sectors())
    }
}

/// Where a transfer's data goes in guest memory.
#[derive(Clone, Copy, Debug)]
enum Buffer {
    /// ES:BX of a CHS call, which the caller has checked does not run past the segment's end.
    Real { seg: u16, off: u16 },
    /// A guest-physical address: the linear address of a packet's seg:off, or its flat one.
    Phys(u64),
}

impl Buffer {
    fn write(&self, mem: &mut RealMem, at: usize, data: &[u8]) -> Result<(), MemError> {
        match *self {
            Buffer::Real { seg, off } => mem.write(seg, off.wrapping_add(at as u16), data),
            Buffer::Phys(addr) => mem.write_phys(addr.wrapping_add(at as u64), data),
        }
    }

    fn read(&self, mem: &RealMem, at: usize, buf: &mut [u8]) -> Result<(), MemError> {
        match *self {
            Buffer::Real { seg, off } => mem.read(seg, off.wrapping_add(at as u16), buf),
            Buffer::Phys(addr) => mem.read_phys(addr.wrapping_add(at as u64), buf),
        }
    }
}

/// A service's failure: the status for AH and, when the VMM should hear of it, why.
struct Failure {
    status: u8,
    error: Option<BiosError>,
}

impl Failure {
    fn status(status: u8) -> Self {
        Self {
            status,
            error: None,
        }
    }
}

type Status = Result<u8, Failure>;

/// What a service call on the drive found, with the caller's AX for error reports.
struct Ctx {
    ax: u16,
}

impl Ctx {
    fn mem(&self, status: u8) -> impl Fn(MemError) -> Failure + '_ {
        move |source| Failure {
            status,
            error: Some(BiosError::Memory {
                vector: 0x13,
                ax: self.ax,
                source,
            }),
        }
    }
}

impl Bios {
    /// The drive INT 13h calls `number`.
    pub(super) fn drive(&self, number: u8) -> Option<&Drive> {
        self.drives.iter().find(|d| d.number == number)
    }

    pub(super) fn hard_disk_count(&self) -> u8 {
        self.drives.iter().filter(|d| !d.is_cd()).count() as u8
    }

    /// INT 13h: see the module docs.
    pub(super) fn int13_disk(&mut self, call: &mut Call) -> Result<(), BiosError> {
        let ctx = Ctx { ax: call.regs.ax() };
        let (ah, dl) = (call.regs.ah(), call.regs.dl());
        // AH=01h answers with the last status and leaves it.
        if ah == 0x01 {
            let status = if dl >= disk::FIRST_HARD_DISK {
                call.mem
                    .read_u8(bda::SEGMENT, bda::DISK_STATUS)
                    .map_err(|source| self.mem_error(ctx.ax, source))?
            } else {
                disk::INVALID
            };
            call.regs.set_ah(status);
            return call
                .set_carry(status != disk::OK)
                .map_err(|source| self.mem_error(ctx.ax, source));
        }
        let result = if ah == 0x4b {
            self.cd_emulation_status(call, &ctx)
        } else {
            match self.drive(dl) {
                None if ah == 0x15 => Ok(disk::OK),
                None => {
                    log::debug!(
                        "BIOS: INT 13h AX={:#06x} for drive {dl:#04x}, which is absent",
                        ctx.ax
                    );
                    Err(Failure::status(disk::INVALID))
                }
                Some(drive) if drive.is_cd() => self.cd_service(call, drive, &ctx),
                Some(drive) => self.disk_service(call, drive, &ctx),
            }
        };
        let (status, error) = match result {
            Ok(status) => (status, None),
            Err(f) => (f.status, f.error),
        };
        let finish = |call: &mut Call| -> Result<(), MemError> {
            call.regs.set_ah(status);
            if dl >= disk::FIRST_HARD_DISK {
                call.mem.write_u8(bda::SEGMENT, bda::DISK_STATUS, status)?;
            }
            call.set_carry(status != disk::OK)?;
            // Two calls answer in AH with something else than the status on success.
            if status == disk::OK {
                match ah {
                    0x15 => call.regs.set_ah(match self.drive(dl) {
                        None => 0x00,
                        Some(d) if d.is_cd() => 0x02,
                        Some(_) => disk::TYPE_FIXED_DISK,
                    }),
                    0x41 => call.regs.set_ah(edd::VERSION_3_0),
                    _ => {}
                }
            }
            Ok(())
        };
        let finished = finish(call).map_err(|source| self.mem_error(ctx.ax, source));
        match error {
            Some(e) => Err(e),
            None => finished,
        }
    }

    fn mem_error(&self, ax: u16, source: MemError) -> BiosError {
        BiosError::Memory {
            vector: 0x13,
            ax,
            source,
        }
    }

    fn disk_service(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        let regs = &mut *call.regs;
        match regs.ah() {
            0x00 | 0x0d | 0x10 | 0x11 | 0x14 => Ok(disk::OK),
            0x02..=0x04 => self.chs_transfer(call, drive, ctx),
            0x08 => {
                let g = drive.geometry();
                let max_cyl = g.cylinders - 1;
                regs.set_al(0);
                regs.set_ch(max_cyl as u8);
                regs.set_cl((((max_cyl >> 2) & 0xc0) as u8) | g.sectors as u8);
                regs.set_dh((g.heads - 1) as u8);
                regs.set_dl(self.hard_disk_count());
                Ok(disk::OK)
            }
            0x0c => chs_address(regs, drive).map(|_| disk::OK),
            0x15 => {
                let sectors = drive.disk.sectors().min(u64::from(u32::MAX)) as u32;
                regs.set_cx((sectors >> 16) as u16);
                regs.set_dx(sectors as u16);
                Ok(disk::OK)
            }
            0x41..=0x49 => self.edd_service(call, drive, ctx),
            other => {
                log::debug!("BIOS: INT 13h AH={other:02x}h is not supported");
                Err(Failure::status(disk::INVALID))
            }
        }
    }

    fn cd_service(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        match call.regs.ah() {
            0x00 | 0x0d | 0x10 => Ok(disk::OK),
            0x03 | 0x43 => Err(Failure::status(disk::WRITE_PROTECTED)),
            0x15 => {
                call.regs.set_cx(0);
                call.regs.set_dx(0);
                Ok(disk::OK)
            }
            0x41..=0x49 => self.edd_service(call, drive, ctx),
            other => {
                log::debug!("BIOS: INT 13h AH={other:02x}h is not supported on a CD-ROM");
                Err(Failure::status(disk::INVALID))
            }
        }
    }

    /// AH=02h/03h/04h: AL sectors at CH/CL/DH (cylinder, sector, head), buffer ES:BX.
    fn chs_transfer(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        let regs = &mut *call.regs;
        let (ah, count) = (regs.ah(), regs.al());
        let lba = chs_address(regs, drive);
        regs.set_al(0);
        let lba = lba?;
        if count == 0 || count > disk::MAX_CHS_COUNT {
            return Err(Failure::status(disk::INVALID));
        }
        if lba + u64::from(count) > drive.blocks() {
            return Err(Failure::status(disk::READ_ERROR));
        }
        if ah == 0x04 {
            regs.set_al(count);
            return Ok(disk::OK);
        }
        let bytes = usize::from(count) * disk::SECTOR;
        if usize::from(regs.bx()) + bytes > 0x1_0000 {
            return Err(Failure::status(disk::BOUNDARY));
        }
        let buffer = Buffer::Real {
            seg: regs.es,
            off: regs.bx(),
        };
        let (done, result) = transfer(call, drive, lba, u64::from(count), buffer, ah == 0x03, ctx);
        call.regs.set_al(done as u8);
        result
    }

    /// AH=41h-49h, on hard disks and (in 2048-byte blocks) CD-ROMs.
    fn edd_service(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        let regs = &mut *call.regs;
        match regs.ah() {
            0x41 => {
                if regs.bx() != edd::CHECK_IN {
                    return Err(Failure::status(disk::INVALID));
                }
                regs.set_bx(edd::CHECK_OUT);
                regs.set_cx(edd::SUPPORT);
                Ok(disk::OK)
            }
            0x42..=0x44 | 0x47 => self.packet_transfer(call, drive, ctx),
            // Lock (AL=0), unlock (1), status (2): nothing is ever locked for long.
            0x45 => match regs.al() {
                0x00 => {
                    regs.set_al(1);
                    Ok(disk::OK)
                }
                0x01 | 0x02 => {
                    regs.set_al(0);
                    Ok(disk::OK)
                }
                _ => Err(Failure::status(disk::INVALID)),
            },
            0x46 if drive.is_cd() => {
                log::info!(
                    "BIOS: the guest asked to eject drive {:#04x}; ignored",
                    drive.number
                );
                Ok(disk::OK)
            }
            0x46 => Err(Failure::status(disk::NOT_REMOVABLE)),
            0x48 => self.drive_parameters(call, drive, ctx),
            // Media change: never.
            0x49 => Ok(disk::OK),
            _ => Err(Failure::status(disk::INVALID)),
        }
    }

    /// AH=42h/43h/44h/47h with the disk address packet at DS:SI.
    fn packet_transfer(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        let (ah, ds, si) = (call.regs.ah(), call.regs.ds, call.regs.si());
        let mut dap = [0u8; edd::DAP_LEN_FLAT as usize];
        call.mem
            .read(ds, si, &mut dap[..usize::from(edd::DAP_LEN)])
            .map_err(ctx.mem(disk::INVALID))?;
        let size = dap[0];
        if size < edd::DAP_LEN {
            return Err(Failure::status(disk::INVALID));
        }
        let field = |dap: &[u8], off: u16, len: usize| {
            let off = usize::from(off);
            let mut b = [0u8; 8];
            b[..len].copy_from_slice(&dap[off..off + len]);
            u64::from_le_bytes(b)
        };
        let count = field(&dap, edd::DAP_COUNT, 2);
        let lba = field(&dap, edd::DAP_LBA, 8);
        let seg_off = field(&dap, edd::DAP_BUFFER, 4) as u32;
        let count_at = si.wrapping_add(edd::DAP_COUNT);
        let set_count = |call: &mut Call, done: u64| {
            call.mem
                .write_u16(ds, count_at, done as u16)
                .map_err(ctx.mem(disk::INVALID))
        };
        if count > u64::from(disk::MAX_DAP_BLOCKS) {
            set_count(call, 0)?;
            return Err(Failure::status(disk::INVALID));
        }
        let in_range = lba
            .checked_add(count)
            .is_some_and(|end| end <= drive.blocks() && (ah != 0x47 || lba < drive.blocks()));
        if !in_range {
            set_count(call, 0)?;
            return Err(Failure::status(disk::READ_ERROR));
        }
        if matches!(ah, 0x44 | 0x47) {
            return Ok(disk::OK);
        }
        let buffer = if seg_off == edd::FLAT_MARKER {
            if size < edd::DAP_LEN_FLAT {
                set_count(call, 0)?;
                return Err(Failure::status(disk::INVALID));
            }
            let tail = usize::from(edd::DAP_LEN);
            call.mem
                .read(
                    ds,
                    si.wrapping_add(u16::from(edd::DAP_LEN)),
                    &mut dap[tail..],
                )
                .map_err(ctx.mem(disk::INVALID))?;
            Buffer::Phys(field(&dap, edd::DAP_FLAT_BUFFER, 8))
        } else {
            let (seg, off) = ((seg_off >> 16) as u16, seg_off as u16);
            Buffer::Phys(linear(seg, off, call.mem.a20()))
        };
        let (done, result) = transfer(call, drive, lba, count, buffer, ah == 0x43, ctx);
        if done != count {
            set_count(call, done)?;
        }
        result
    }

    /// AH=48h: the result buffer at DS:SI, its size in its first word.
    fn drive_parameters(&self, call: &mut Call, drive: &Drive, ctx: &Ctx) -> Status {
        let (ds, si) = (call.regs.ds, call.regs.si());
        let size = call.mem.read_u16(ds, si).map_err(ctx.mem(disk::INVALID))?;
        let len = if size >= edd::PARAMS_3X {
            edd::PARAMS_3X
        } else if size >= edd::PARAMS_2X {
            edd::PARAMS_2X
        } else if size >= edd::PARAMS_1X {
            edd::PARAMS_1X
        } else {
            return Err(Failure::status(disk::INVALID));
        };
        let mut b = Vec::with_capacity(usize::from(edd::PARAMS_3X));
        b.extend_from_slice(&len.to_le_bytes());
        if drive.is_cd() {
            let info = edd::INFO_REMOVABLE | edd::INFO_CHANGE_LINE | edd::INFO_LOCKABLE;
            b.extend_from_slice(&info.to_le_bytes());
            b.extend_from_slice(&[0; 12]);
        } else {
            // The physical geometry: ATA's 16 heads of 63 sectors, valid up to 16383 cylinders.
            let sectors = drive.disk.sectors();
            let per_cyl = disk::ATA_HEADS * disk::SECTORS_PER_TRACK;
            let cylinders = (sectors / per_cyl).min(disk::ATA_MAX_CYLINDERS);
            let info = if sectors <= disk::ATA_MAX_CYLINDERS * per_cyl {
                edd::INFO_CHS_VALID
            } else {
                0
            };
            b.extend_from_slice(&info.to_le_bytes());
            b.extend_from_slice(&(cylinders as u32).to_le_bytes());
            b.extend_from_slice(&(disk::ATA_HEADS as u32).to_le_bytes());
            b.extend_from_slice(&(disk::SECTORS_PER_TRACK as u32).to_le_bytes());
        }
        b.extend_from_slice(&drive.blocks().to_le_bytes());
        b.extend_from_slice(&(drive.block_size() as u16).to_le_bytes());
        if len >= edd::PARAMS_2X {
            // No device parameter table extension: FFFF:FFFF.
            b.extend_from_slice(&[0xff; 4]);
        }
        if len >= edd::PARAMS_3X {
            b.extend_from_slice(&device_path(drive));
        }
        debug_assert_eq!(b.len(), usize::from(len));
        call.mem.write(ds, si, &b).map_err(ctx.mem(disk::INVALID))?;
        Ok(disk::OK)
    }

    /// AX=4B00h (terminate emulation) and 4B01h (status): the El Torito specification packet
    /// at DS:SI. A no-emulation boot has nothing to terminate; both only report.
    fn cd_emulation_status(&self, call: &mut Call, ctx: &Ctx) -> Status {
        let record = super::boot::BootRecord::load(&call.mem);
        let Some(boot) = record.cd.as_ref().filter(|_| call.regs.al() <= 0x01) else {
            return Err(Failure::status(disk::INVALID));
        };
        let slot = self.drive(boot.drive).map_or(0, |d| d.slot);
        let mut p = vec![
            eltorito::SPEC_PACKET_LEN,
            eltorito::NO_EMULATION,
            boot.drive,
        ];
        p.push((slot / 2) as u8);
        p.extend_from_slice(&boot.image_lba.to_le_bytes());
        p.extend_from_slice(&((slot % 2) as u16).to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes()); // user buffer segment: none
        p.extend_from_slice(&boot.load_segment.to_le_bytes());
        p.extend_from_slice(&boot.sectors.to_le_bytes());
        p.extend_from_slice(&[0, 0, 0]); // CHS of an emulated disk: none
        debug_assert_eq!(p.len(), usize::from(eltorito::SPEC_PACKET_LEN));
        let (ds, si) = (call.regs.ds, call.regs.si());
        call.mem.write(ds, si, &p).map_err(ctx.mem(disk::INVALID))?;
        Ok(disk::OK)
    }
}

/// The LBA of the CHS address in CH/CL/DH, checked against the drive's logical geometry.
fn chs_address(regs: &crate::bios::RealModeRegs, drive: &Drive) -> Result<u64, Failure> {
    let g = drive.geometry();
    let sector = u64::from(regs.cl() & 0x3f);
    let cylinder = u64::from(regs.ch()) | (u64::from(regs.cl() & 0xc0) << 2);
    let head = u64::from(regs.dh());
    if sector == 0 || sector > g.sectors || head >= g.heads || cylinder >= g.cylinders {
        return Err(Failure::status(disk::INVALID));
    }
    Ok((cylinder * g.heads + head) * g.sectors + sector - 1)
}

/// The EDD 3.0 device path, bytes 1Eh-41h of the AH=48h buffer.
fn device_path(drive: &Drive) -> Vec<u8> {
    let mut p = Vec::with_capacity(usize::from(edd::PATH_LEN));
    p.extend_from_slice(&edd::PATH_KEY.to_le_bytes());
    p.extend_from_slice(&[edd::PATH_LEN, 0, 0, 0]);
    p.extend_from_slice(b"ISA ");
    p.extend_from_slice(if drive.is_cd() {
        b"ATAPI   "
    } else {
        b"ATA     "
    });
    let base = edd::IDE_BASES.get(drive.slot / 2).copied().unwrap_or(0);
    let mut interface = [0u8; 8];
    interface[..2].copy_from_slice(&base.to_le_bytes());
    p.extend_from_slice(&interface);
    let mut device = [0u8; 8];
    device[0] = (drive.slot % 2) as u8;
    p.extend_from_slice(&device);
    p.push(0);
    let sum = p.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    p.push(0u8.wrapping_sub(sum));
    p
}

/// Moves `count` blocks from block `lba` between `drive` and `buffer`; returns how many were
/// done and the status. The caller has checked the range and bounded `count`.
fn transfer(
    call: &mut Call,
    drive: &Drive,
    lba: u64,
    count: u64,
    buffer: Buffer,
    write: bool,
    ctx: &Ctx,
) -> (u64, Status) {
    let bs = drive.block_size();
    let mut data = vec![0u8; count as usize * bs];
    let disk_error = |status: u8, message: String| Failure {
        status,
        error: Some(BiosError::Disk {
            drive: drive.number,
            lba,
            message,
        }),
    };
    if write {
        if drive.disk.read_only() {
            return (0, Err(Failure::status(disk::WRITE_PROTECTED)));
        }
        // Gather what the guest's buffer holds, as far as it is RAM, and write that much.
        let mut done = 0;
        let mut mem_fail = None;
        for (i, block) in data.chunks_exact_mut(bs).enumerate() {
            if let Err(e) = buffer.read(&call.mem, i * bs, block) {
                mem_fail = Some(ctx.mem(disk::INVALID)(e));
                break;
            }
            done += 1;
        }
        if done > 0 {
            if let Err(message) = drive.write_blocks(lba, &data[..done * bs]) {
                return (0, Err(disk_error(disk::WRITE_FAULT, message)));
            }
        }
        let status = mem_fail.map_or(Ok(disk::OK), Err);
        (done as u64, status)
    } else {
        if let Err(message) = drive.read_blocks(lba, &mut data) {
            return (0, Err(disk_error(disk::READ_ERROR, message)));
        }
        for (i, block) in data.chunks_exact(bs).enumerate() {
            if let Err(e) = buffer.write(&mut call.mem, i * bs, block) {
                return (i as u64, Err(ctx.mem(disk::INVALID)(e)));
            }
        }
        (count, Ok(disk::OK))
    }
}
