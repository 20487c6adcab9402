//! Boot device selection: what POST, INT 19h (the bootstrap loader) and INT 18h (boot failure)
//! start, from the devices of [`BiosConfig::boot_order`](super::BiosConfig).
//!
//! - [`BootDevice::Disk`]: the first hard disk (80h). Its sector 0 must end in 55h AAh; it is
//!   loaded at 0000:7C00 and started there with DL=80h (IBM PC/AT Technical Reference, the
//!   bootstrap loader).
//! - [`BootDevice::Cdrom`]: the first CD-ROM (E0h), the El Torito way (El Torito specification
//!   1.0, sections 2 and 5): the boot record volume descriptor at 2048-byte sector 17 ("CD001",
//!   "EL TORITO SPECIFICATION") points at the boot catalog; its validation entry must have
//!   header 01h, the key 55h AAh and words summing to zero; its initial/default entry must be
//!   bootable (88h). kettle implements no-emulation boot (media type 0): the entry's count of
//!   512-byte virtual sectors is read from the image's 2048-byte block "load RBA" to the load
//!   segment (0 meaning 07C0h) and started at load_segment:0000 with DL=E0h. The diskette and
//!   hard-disk emulations are refused with a message. A boot image must land between the BIOS
//!   data area and the EBDA (0x500-0x9FC00); a larger one (a count of FFFFh, say) is refused.
//!
//! A device that cannot boot is reported on the console ("kettle BIOS: boot from disk failed:
//! no boot signature ...") and the next one is tried; when none boots the BIOS says "kettle
//! BIOS: no bootable device" and the vCPU stays in (or goes to) the POST stub's `hlt` loop.
//! INT 19h runs the selection again from the first device; INT 18h goes on with the device after
//! the one that booted.
//!
//! The boot code starts with CS:IP at the image, DL the drive, SS:SP = 0000:7C00, DS = ES = 0 and
//! interrupts enabled, the registers SeaBIOS and the PC/AT leave.

use super::cpu::{Call, IoPorts, MemError, RealMem, RealModeRegs};
use super::disk::Drive;
use super::rom;
use super::spec::{disk, ebda, eltorito, flags};
use super::video::print;
use super::{Bios, BiosError};
use arch::layout::EBDA_START;

/// Where a boot sector is loaded and started: 0000:7C00.
pub const BOOT_SECTOR_ADDR: u64 = 0x7c00;
pub const BOOT_SECTOR_LEN: usize = 512;
/// The last two bytes of a bootable sector: 0x55, 0xAA.
pub const BOOT_SIGNATURE: u16 = 0xaa55;
/// The lowest address a boot image may be loaded at: past the IVT and the BIOS data area.
const LOWEST_LOAD: u64 = 0x500;

/// A kind of device the BIOS can boot from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootDevice {
    /// The first hard disk, drive 80h.
    Disk,
    /// The first CD-ROM, drive E0h, El Torito no-emulation.
    Cdrom,
}

impl std::fmt::Display for BootDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "CD-ROM",
        })
    }
}

/// Why a device did not boot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootFailure {
    #[error("no hard disk")]
    NoHardDisk,
    #[error("no CD-ROM drive")]
    NoCdrom,
    #[error("reading sector {lba} failed: {message}")]
    Read { lba: u64, message: String },
    #[error("no boot signature (the boot sector ends in {found:#06x}, not 0xaa55)")]
    NoSignature { found: u16 },
    #[error("no El Torito boot record at sector 17")]
    NoBootRecord,
    #[error("the El Torito boot catalog at sector {sector} lies outside the image")]
    CatalogOutside { sector: u32 },
    #[error("the El Torito boot catalog's validation entry has a bad {0}")]
    BadValidationEntry(&'static str),
    #[error("the El Torito default entry is not bootable (indicator {0:#04x})")]
    NotBootable(u8),
    #[error("El Torito {0} emulation is not supported, only no-emulation boot")]
    Emulation(&'static str),
    #[error("the El Torito boot image ({sectors} sectors at block {lba}) {problem}")]
    BadImage {
        lba: u32,
        sectors: u16,
        problem: &'static str,
    },
    #[error("{0}")]
    Memory(MemError),
}

/// One device the boot selection tried and why it did not boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootAttempt {
    pub device: BootDevice,
    pub failure: BootFailure,
}

/// Formats the attempts for [`BiosError::NoBootDevice`].
pub(super) fn describe(attempts: &[BootAttempt]) -> String {
    attempts
        .iter()
        .map(|a| format!("; {}: {}", a.device, a.failure))
        .collect()
}

/// What booted last: the boot order's device (INT 18h goes on after it) and, for a CD, the El
/// Torito boot in effect (INT 13h AX=4B01h reports it). Kept in the EBDA
/// ([`ebda::BOOT_RECORD`]), guest memory, so that it survives a save and restore of the VM
/// with the rest of the BIOS's data areas; what the guest may have written there is read
/// back as no record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct BootRecord {
    pub booted: Option<usize>,
    pub cd: Option<CdBoot>,
}

impl BootRecord {
    pub(super) fn load(mem: &RealMem) -> Self {
        let mut b = [0u8; ebda::BOOT_RECORD_LEN];
        if mem
            .read_phys(EBDA_START + ebda::BOOT_RECORD, &mut b)
            .is_err()
            || b[0] != ebda::BOOT_RECORD_MAGIC
        {
            return Self::default();
        }
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            booted: (b[1] & ebda::BOOTED_VALID != 0).then_some(usize::from(b[2])),
            cd: (b[1] & ebda::CD_BOOT_VALID != 0).then(|| CdBoot {
                drive: b[3],
                image_lba: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                load_segment: u16_at(8),
                sectors: u16_at(10),
            }),
        }
    }

    /// Writes the record; a failure (the EBDA is RAM, so it should not happen) is logged.
    pub(super) fn store(&self, mem: &mut RealMem) {
        let mut b = [0u8; ebda::BOOT_RECORD_LEN];
        b[0] = ebda::BOOT_RECORD_MAGIC;
        if let Some(i) = self.booted {
            b[1] |= ebda::BOOTED_VALID;
            b[2] = u8::try_from(i).unwrap_or(u8::MAX);
        }
        if let Some(cd) = &self.cd {
            b[1] |= ebda::CD_BOOT_VALID;
            b[3] = cd.drive;
            b[4..8].copy_from_slice(&cd.image_lba.to_le_bytes());
            b[8..10].copy_from_slice(&cd.load_segment.to_le_bytes());
            b[10..12].copy_from_slice(&cd.sectors.to_le_bytes());
        }
        if let Err(e) = mem.write_phys(EBDA_START + ebda::BOOT_RECORD, &b) {
            log::warn!("BIOS: cannot keep the boot record in the EBDA: {e}");
        }
    }
}

/// An El Torito boot, for INT 13h AX=4B01h.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CdBoot {
    pub drive: u8,
    /// The boot image's 2048-byte block.
    pub image_lba: u32,
    pub load_segment: u16,
    /// 512-byte virtual sectors loaded.
    pub sectors: u16,
}

/// The registers boot code starts with.
fn start_regs(cs: u16, ip: u16, drive: u8) -> RealModeRegs {
    RealModeRegs {
        edx: u32::from(drive),
        cs,
        ip,
        ss: 0,
        esp: BOOT_SECTOR_ADDR as u32,
        flags: u32::from(flags::IF | flags::RESERVED_1),
        ..Default::default()
    }
}

impl Bios {
    /// Tries the boot devices from `boot_order[from]` on. On success `regs` start the boot
    /// code; otherwise they are untouched and the console has said why.
    pub(super) fn boot(
        &mut self,
        mem: &mut RealMem,
        io: &mut dyn IoPorts,
        regs: &mut RealModeRegs,
        from: usize,
    ) -> Result<(), BiosError> {
        let before = BootRecord::load(mem);
        let mut attempts = Vec::new();
        let order = self.config.boot_order.clone();
        for (i, device) in order.iter().enumerate().skip(from) {
            let result = match device {
                BootDevice::Disk => self.boot_disk(mem).map(|start| (start, None)),
                BootDevice::Cdrom => self.boot_cdrom(mem).map(|(start, cd)| (start, Some(cd))),
            };
            match result {
                Ok((start, cd)) => {
                    log::info!("BIOS: booting from the {device}");
                    BootRecord {
                        booted: Some(i),
                        cd,
                    }
                    .store(mem);
                    *regs = start;
                    return Ok(());
                }
                Err(failure) => {
                    print(
                        mem,
                        io,
                        &format!("kettle BIOS: boot from {device} failed: {failure}\r\n"),
                    );
                    attempts.push(BootAttempt {
                        device: *device,
                        failure,
                    });
                }
            }
        }
        BootRecord {
            booted: before.booted,
            cd: None,
        }
        .store(mem);
        print(mem, io, "kettle BIOS: no bootable device\r\n");
        Err(BiosError::NoBootDevice { attempts })
    }

    /// INT 19h: the boot selection from the first device again.
    pub(super) fn int19_bootstrap(
        &mut self,
        call: &mut Call,
        io: &mut dyn IoPorts,
    ) -> Result<(), BiosError> {
        self.boot_or_halt(call, io, 0)
    }

    /// INT 18h: the boot code gave up; try the device after the one it came from.
    pub(super) fn int18_boot_failure(
        &mut self,
        call: &mut Call,
        io: &mut dyn IoPorts,
    ) -> Result<(), BiosError> {
        let booted = BootRecord::load(&call.mem).booted;
        let from = booted.map_or(self.config.boot_order.len(), |i| i + 1);
        self.boot_or_halt(call, io, from)
    }

    fn boot_or_halt(
        &mut self,
        call: &mut Call,
        io: &mut dyn IoPorts,
        from: usize,
    ) -> Result<(), BiosError> {
        let mut start = RealModeRegs::default();
        match self.boot(&mut call.mem, io, &mut start, from) {
            Ok(()) => {
                *call.regs = start;
                Ok(())
            }
            Err(e) => {
                // Park the vCPU in the POST stub's hlt loop.
                call.regs.cs = rom::ROM_SEGMENT;
                call.regs.ip = rom::POST_TRAP_IP;
                Err(e)
            }
        }
    }

    fn boot_disk(&self, mem: &mut RealMem) -> Result<RealModeRegs, BootFailure> {
        let drive = self
            .drive(disk::FIRST_HARD_DISK)
            .ok_or(BootFailure::NoHardDisk)?;
        let mut sector = [0u8; BOOT_SECTOR_LEN];
        drive
            .disk
            .read(0, &mut sector)
            .map_err(|message| BootFailure::Read { lba: 0, message })?;
        let found = u16::from_le_bytes([sector[510], sector[511]]);
        if found != BOOT_SIGNATURE {
            return Err(BootFailure::NoSignature { found });
        }
        mem.write_phys(BOOT_SECTOR_ADDR, &sector)
            .map_err(BootFailure::Memory)?;
        Ok(start_regs(0, BOOT_SECTOR_ADDR as u16, drive.number))
    }

    fn boot_cdrom(&self, mem: &mut RealMem) -> Result<(RealModeRegs, CdBoot), BootFailure> {
        let drive = self.drive(disk::FIRST_CDROM).ok_or(BootFailure::NoCdrom)?;
        let image = el_torito_image(drive)?;
        let start = u64::from(image.load_segment) << 4;
        let len = usize::from(image.sectors) * disk::SECTOR;
        if start < LOWEST_LOAD || start + len as u64 > EBDA_START {
            return Err(BootFailure::BadImage {
                lba: image.image_lba,
                sectors: image.sectors,
                problem: "does not fit in conventional memory",
            });
        }
        let mut data = vec![0u8; len];
        let lba = u64::from(image.image_lba) * (disk::CD_SECTOR / disk::SECTOR) as u64;
        drive
            .disk
            .read(lba, &mut data)
            .map_err(|message| BootFailure::Read { lba, message })?;
        mem.write_phys(start, &data).map_err(BootFailure::Memory)?;
        let regs = start_regs(image.load_segment, 0, drive.number);
        Ok((regs, image))
    }
}

/// Reads the El Torito boot record and catalog of `drive` and returns the no-emulation boot
/// image its default entry describes.
fn el_torito_image(drive: &Drive) -> Result<CdBoot, BootFailure> {
    let blocks = drive.blocks();
    let read = |block: u64, buf: &mut [u8]| {
        drive
            .read_blocks(block, buf)
            .map_err(|message| BootFailure::Read {
                lba: block * (disk::CD_SECTOR / disk::SECTOR) as u64,
                message,
            })
    };
    let mut record = vec![0u8; disk::CD_SECTOR];
    if eltorito::BOOT_RECORD_SECTOR >= blocks {
        return Err(BootFailure::NoBootRecord);
    }
    read(eltorito::BOOT_RECORD_SECTOR, &mut record)?;
    let id = eltorito::BOOT_SYSTEM_ID;
    if record[0] != 0
        || &record[1..6] != eltorito::ISO_ID
        || record[6] != 1
        || &record[7..7 + id.len()] != id
    {
        return Err(BootFailure::NoBootRecord);
    }
    let at = eltorito::CATALOG_POINTER;
    let sector = u32::from_le_bytes(record[at..at + 4].try_into().unwrap_or_default());
    if u64::from(sector) >= blocks {
        return Err(BootFailure::CatalogOutside { sector });
    }
    let mut catalog = vec![0u8; disk::CD_SECTOR];
    read(u64::from(sector), &mut catalog)?;

    let validation = &catalog[..eltorito::ENTRY_LEN];
    if validation[0] != eltorito::VALIDATION_HEADER {
        return Err(BootFailure::BadValidationEntry("header ID"));
    }
    if validation[30..32] != eltorito::KEY {
        return Err(BootFailure::BadValidationEntry("key"));
    }
    let sum = validation.chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    if sum != 0 {
        return Err(BootFailure::BadValidationEntry("checksum"));
    }
    if validation[1] != 0 {
        log::info!(
            "BIOS: the El Torito catalog's platform is {:#04x}, not 80x86; trying it anyway",
            validation[1]
        );
    }

    let entry = &catalog[eltorito::ENTRY_LEN..2 * eltorito::ENTRY_LEN];
    if entry[0] != eltorito::BOOTABLE {
        return Err(BootFailure::NotBootable(entry[0]));
    }
    match entry[1] & 0x0f {
        eltorito::NO_EMULATION => {}
        1 => return Err(BootFailure::Emulation("1.2 MB diskette")),
        2 => return Err(BootFailure::Emulation("1.44 MB diskette")),
        3 => return Err(BootFailure::Emulation("2.88 MB diskette")),
        4 => return Err(BootFailure::Emulation("hard disk")),
        _ => return Err(BootFailure::Emulation("unknown media type")),
    }
    let load_segment = match u16::from_le_bytes([entry[2], entry[3]]) {
        0 => eltorito::DEFAULT_LOAD_SEGMENT,
        s => s,
    };
    let sectors = u16::from_le_bytes([entry[6], entry[7]]);
    let image_lba = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
    let bad = |problem| BootFailure::BadImage {
        lba: image_lba,
        sectors,
        problem,
    };
    if sectors == 0 {
        return Err(bad("is empty"));
    }
    let first = u64::from(image_lba) * (disk::CD_SECTOR / disk::SECTOR) as u64;
    if first + u64::from(sectors) > drive.disk.sectors() {
        return Err(bad("runs past the end of the image"));
    }
    Ok(CdBoot {
        drive: drive.number,
        image_lba,
        load_segment,
        sectors,
    })
}
