//! The BIOS services: what INT 08h, 09h, 10h-1Ah do, run in Rust on the caller's registers when
//! the vector's ROM stub traps into the VMM. This file holds [`Bios`] itself, the dispatch, and
//! the system (INT 11h, 12h, 15h) and clock (INT 08h, 1Ah) services; the others have their own
//! modules (`disk`, `boot`, `keyboard`, `video`, `pci`).
//!
//! Register conventions are those of the IBM PC/AT BIOS as Ralf Brown's interrupt list records
//! them; the E820 call follows the ACPI specification's "INT 15H, E820H - Query System Address
//! Map".
//!
//! A service reports failure the BIOS way (CF set, an error code in AH). When a guest-supplied
//! buffer or the guest's stack is not RAM, the service reports what it can to the guest and
//! returns [`BiosError::Memory`] for the VMM to log; it never panics.

use super::boot::BootDevice;
use super::cpu::{Call, GuestMem, IoPorts, RealModeRegs};
use super::disk::{BiosDisk, Drive};
use super::keyboard::SerialKeys;
use super::rom;
use super::spec::{self, bda, cmos, e820 as smap};
use super::BiosError;
use arch::e820::{E820Entry, E820_RAM};
use arch::layout::{MemoryLayout, HIGH_MEMORY_START};

const KIB: u64 = 1 << 10;
const SIXTEEN_MIB: u64 = 16 << 20;

/// The MC146818 CMOS, as the BIOS reads it for the clock services (the VMM implements this over
/// its RTC model).
pub trait Cmos: Send {
    fn read(&mut self, index: u8) -> u8;
    fn write(&mut self, index: u8, value: u8);
}

/// What the BIOS needs to know about the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BiosConfig {
    /// The memory map INT 15h E820 reports; also the source of E801h and 88h.
    pub e820: Vec<E820Entry>,
    /// Whether LPT1 is present (COM1 and COM2 always are).
    pub lpt: bool,
    /// The devices POST (and INT 19h) try to boot from, in order (`--boot disk,cdrom`).
    pub boot_order: Vec<BootDevice>,
}

impl BiosConfig {
    /// The configuration for `layout`: its e820 map, no LPT, boot from the first hard disk,
    /// then the first CD-ROM.
    pub fn new(layout: &MemoryLayout) -> Self {
        Self {
            e820: arch::e820::entries(layout),
            lpt: false,
            boot_order: vec![BootDevice::Disk, BootDevice::Cdrom],
        }
    }
}

/// kettle's BIOS: its configuration, its drives and the state it keeps between calls.
pub struct Bios {
    pub(super) config: BiosConfig,
    pub(super) cmos: Box<dyn Cmos>,
    /// Whether the guest's real-mode addresses reach above 1 MiB (see [`Bios::set_a20`]).
    pub(super) a20: bool,
    /// The drives INT 13h serves, in IDE order, each with its drive number.
    pub(super) drives: Vec<Drive>,
    /// What the serial console's input decoder has seen of an escape sequence.
    pub(super) serial_keys: SerialKeys,
}

impl std::fmt::Debug for Bios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bios")
            .field("config", &self.config)
            .field("a20", &self.a20)
            .field("drives", &self.drives)
            .finish_non_exhaustive()
    }
}

/// Converts a binary value 0-99 to packed BCD.
fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl Bios {
    /// A BIOS for `config`, reading the clock from `cmos` and serving `disks`.
    ///
    /// `disks` is indexed by IDE position: 0 primary master, 1 primary slave, 2 secondary
    /// master, 3 secondary slave (further entries would be a third channel and so on); `None`
    /// is an empty position. Hard disks get the drive numbers 80h, 81h, ... and CD-ROMs E0h,
    /// E1h, ... in that order; the position is what AH=48h's device path and AX=4B01h's
    /// controller index report. A20 starts enabled: KVM does not mask address line 20, so that
    /// is what the CPU sees too.
    pub fn new(
        config: BiosConfig,
        cmos: Box<dyn Cmos>,
        disks: Vec<Option<Box<dyn BiosDisk>>>,
    ) -> Self {
        Self {
            config,
            cmos,
            a20: true,
            drives: Drive::number(disks),
            serial_keys: SerialKeys::default(),
        }
    }

    pub fn config(&self) -> &BiosConfig {
        &self.config
    }

    /// Tells the BIOS whether real-mode addresses wrap at 1 MiB (A20 off) or not, when the VMM
    /// models the gate.
    pub fn set_a20(&mut self, on: bool) {
        self.a20 = on;
    }

    pub fn a20(&self) -> bool {
        self.a20
    }

    /// Runs the service of `vector` for the caller whose registers are `regs`, reaching devices
    /// through `io` (COM1, the i8042, PCI configuration space). On return the VMM writes `regs`
    /// back to the vCPU, IP included: a hardware interrupt returns through a ROM tail that
    /// acknowledges the PIC, a key wait idles in [`rom::KBD_WAIT`], and INT 18h/19h start the
    /// boot code or park the vCPU in the POST stub's `hlt` loop.
    ///
    /// An error is for the VMM to log (rate-limited); the registers are valid either way and the
    /// vCPU resumes. It means a guest address was not RAM ([`BiosError::Memory`]; the guest has
    /// been told where the service has an error return), a disk image failed
    /// ([`BiosError::Disk`]), or INT 18h/19h found nothing to boot.
    pub fn handle(
        &mut self,
        vector: u8,
        regs: &mut RealModeRegs,
        mem: &mut dyn GuestMem,
        io: &mut dyn IoPorts,
    ) -> Result<(), BiosError> {
        let ax = regs.ax();
        let mut call = Call::new(regs, mem, self.a20);
        let result = match vector {
            0x08 => self.int08_timer(&mut call),
            0x09 => self.int09_keyboard(&mut call, io),
            // IRQ 2-7 with no service: acknowledge so lower-priority lines keep working.
            0x0a..=0x0f => {
                call.regs.ip = rom::EOI_MASTER;
                Ok(())
            }
            0x70 => {
                call.regs.ip = rom::RTC_TAIL;
                Ok(())
            }
            0x71..=0x77 => {
                call.regs.ip = rom::EOI_SLAVE;
                Ok(())
            }
            0x10 => self.int10_video(&mut call, io),
            // INT 11h and 12h: the BIOS data area's equipment word and conventional memory
            // size.
            0x11 => call
                .mem
                .read_u16(bda::SEGMENT, bda::EQUIPMENT)
                .map(|v| call.regs.set_ax(v)),
            0x12 => call
                .mem
                .read_u16(bda::SEGMENT, bda::MEMORY_KIB)
                .map(|v| call.regs.set_ax(v)),
            0x13 => return self.int13_disk(&mut call),
            0x15 => self.int15_system(&mut call),
            0x16 => self.int16_keyboard(&mut call, io),
            0x18 => return self.int18_boot_failure(&mut call, io),
            0x19 => return self.int19_bootstrap(&mut call, io),
            0x1a if call.regs.ah() == spec::pci::FUNCTION_ID => self.int1a_pci(&mut call, io),
            0x1a => self.int1a_time(&mut call),
            _ => {
                log::debug!("BIOS: INT {vector:02x}h AX={ax:#06x} has no service");
                Ok(())
            }
        };
        result.map_err(|source| BiosError::Memory { vector, ax, source })
    }

    /// INT 08h, IRQ 0 (18.2 Hz): count the tick, roll over at midnight, then return through the
    /// ROM tail that calls INT 1Ch and acknowledges the PIC.
    fn int08_timer(&mut self, call: &mut Call) -> Result<(), super::MemError> {
        call.regs.ip = rom::TIMER_TAIL;
        let ticks = call.mem.read_u32(bda::SEGMENT, bda::TICKS)?.wrapping_add(1);
        if ticks >= spec::TICKS_PER_DAY {
            call.mem.write_u32(bda::SEGMENT, bda::TICKS, 0)?;
            call.mem.write_u8(bda::SEGMENT, bda::MIDNIGHT, 1)
        } else {
            call.mem.write_u32(bda::SEGMENT, bda::TICKS, ticks)
        }
    }

    // ---- INT 15h ---------------------------------------------------------------------------

    fn int15_system(&mut self, call: &mut Call) -> VResult {
        let regs = &mut *call.regs;
        match (regs.ah(), regs.al()) {
            (0xe8, 0x20) => self.e820(call),
            // AX=E801h: AX/CX KiB between 1 and 16 MiB, BX/DX 64 KiB blocks above.
            (0xe8, 0x01) => {
                let end = self.extended_memory_end();
                let low = (end.min(SIXTEEN_MIB) - HIGH_MEMORY_START) / KIB;
                let high = (end.saturating_sub(SIXTEEN_MIB) / (64 * KIB)).min(0xffff);
                regs.set_ax(low as u16);
                regs.set_cx(low as u16);
                regs.set_bx(high as u16);
                regs.set_dx(high as u16);
                call.set_carry(false)
            }
            // AH=88h: KiB of contiguous memory from 1 MiB, capped at 0xFFFF as the CMOS's
            // extended memory bytes are.
            (0x88, _) => {
                let kib = ((self.extended_memory_end() - HIGH_MEMORY_START) / KIB).min(0xffff);
                regs.set_ax(kib as u16);
                call.set_carry(false)
            }
            // AH=C0h: ES:BX = the system configuration table.
            (0xc0, _) => {
                regs.es = rom::ROM_SEGMENT;
                regs.set_bx(rom::CONFIG_TABLE);
                regs.set_ah(0);
                call.set_carry(false)
            }
            // AX=2400h-2403h, the A20 gate. KVM does not mask A20 and port 92 owns the gate a
            // guest can see, so these only answer: enabled, and settable by the keyboard
            // controller and port 92.
            (0x24, 0x00 | 0x01) => {
                regs.set_ah(0);
                call.set_carry(false)
            }
            (0x24, 0x02) => {
                regs.set_ah(0);
                regs.set_al(1);
                call.set_carry(false)
            }
            (0x24, 0x03) => {
                regs.set_ah(0);
                regs.set_bx(0x0003);
                call.set_carry(false)
            }
            // AX=EC00h, the AMD64 "detect target operating mode" hint (BL): nothing to do.
            (0xec, 0x00) => {
                regs.set_ah(0);
                call.set_carry(false)
            }
            // AH=86h wait CX:DX microseconds: kettle returns at once.
            (0x86, _) => {
                regs.set_ah(0);
                call.set_carry(false)
            }
            (ah, al) => {
                log::debug!("BIOS: INT 15h AX={ah:02x}{al:02x}h is not supported");
                regs.set_ah(spec::UNSUPPORTED);
                call.set_carry(true)
            }
        }
    }

    /// End of the RAM that starts at 1 MiB (what E801h and 88h count), from the e820 map.
    fn extended_memory_end(&self) -> u64 {
        self.config
            .e820
            .iter()
            .find(|e| {
                e.kind == E820_RAM
                    && e.addr <= HIGH_MEMORY_START
                    && HIGH_MEMORY_START < e.addr.saturating_add(e.size)
            })
            .map_or(HIGH_MEMORY_START, |e| e.addr.saturating_add(e.size))
    }

    /// INT 15h AX=E820h (ACPI "Query System Address Map"): EBX the continuation (the index of
    /// the entry to return), ES:DI the buffer, ECX its size, EDX "SMAP".
    fn e820(&mut self, call: &mut Call) -> VResult {
        let regs = &mut *call.regs;
        let index = regs.ebx as usize;
        let entry = match self.config.e820.get(index) {
            Some(e) if regs.edx == smap::SMAP && regs.ecx >= smap::ENTRY_LEN => *e,
            _ => {
                regs.set_ah(spec::UNSUPPORTED);
                return call.set_carry(true);
            }
        };
        let extended = regs.ecx >= smap::ENTRY_LEN_EXTENDED;
        let mut buf = Vec::with_capacity(smap::ENTRY_LEN_EXTENDED as usize);
        buf.extend_from_slice(&entry.addr.to_le_bytes());
        buf.extend_from_slice(&entry.size.to_le_bytes());
        buf.extend_from_slice(&entry.kind.to_le_bytes());
        if extended {
            buf.extend_from_slice(&smap::ATTR_ENABLED.to_le_bytes());
        }
        let (es, di) = (regs.es, regs.di());
        if let Err(e) = call.mem.write(es, di, &buf) {
            call.regs.set_ah(spec::UNSUPPORTED);
            call.set_carry(true)?;
            return Err(e);
        }
        let regs = &mut *call.regs;
        regs.eax = smap::SMAP;
        regs.ecx = buf.len() as u32;
        regs.ebx = if index + 1 < self.config.e820.len() {
            (index + 1) as u32
        } else {
            0
        };
        call.set_carry(false)
    }

    // ---- INT 1Ah ---------------------------------------------------------------------------

    fn int1a_time(&mut self, call: &mut Call) -> VResult {
        let regs = &mut *call.regs;
        match regs.ah() {
            // AH=00h read tick count: CX:DX ticks, AL midnight flag (cleared).
            0x00 => {
                let ticks = call.mem.read_u32(bda::SEGMENT, bda::TICKS)?;
                let midnight = call.mem.read_u8(bda::SEGMENT, bda::MIDNIGHT)?;
                call.mem.write_u8(bda::SEGMENT, bda::MIDNIGHT, 0)?;
                call.regs.set_cx((ticks >> 16) as u16);
                call.regs.set_dx(ticks as u16);
                call.regs.set_al(midnight);
                call.set_carry(false)
            }
            // AH=01h set tick count from CX:DX.
            0x01 => {
                let ticks = (u32::from(regs.cx()) << 16) | u32::from(regs.dx());
                call.mem.write_u32(bda::SEGMENT, bda::TICKS, ticks)?;
                call.mem.write_u8(bda::SEGMENT, bda::MIDNIGHT, 0)?;
                call.set_carry(false)
            }
            // AH=02h read RTC time: CH hours, CL minutes, DH seconds (BCD), DL DST.
            0x02 => match self.rtc_time() {
                Some((h, m, s, dst)) => {
                    regs.set_ch(h);
                    regs.set_cl(m);
                    regs.set_dh(s);
                    regs.set_dl(u8::from(dst));
                    call.set_carry(false)
                }
                None => call.set_carry(true),
            },
            // AH=03h set RTC time: CH hours, CL minutes, DH seconds (BCD), DL DST.
            0x03 => {
                let b = self.cmos.read(cmos::REG_B);
                let dst = if regs.dl() & 1 != 0 { cmos::B_DSE } else { 0 };
                let (h, m, s) = (regs.ch(), regs.cl(), regs.dh());
                self.set_clock(
                    &[(cmos::HOURS, h), (cmos::MINUTES, m), (cmos::SECONDS, s)],
                    (b & !(cmos::B_DM_BINARY | cmos::B_DSE)) | cmos::B_24H | dst,
                );
                call.set_carry(false)
            }
            // AH=04h read RTC date: CH century, CL year, DH month, DL day (BCD).
            0x04 => match self.rtc_date() {
                Some((century, year, month, day)) => {
                    regs.set_ch(century);
                    regs.set_cl(year);
                    regs.set_dh(month);
                    regs.set_dl(day);
                    call.set_carry(false)
                }
                None => call.set_carry(true),
            },
            // AH=05h set RTC date: CH century, CL year, DH month, DL day (BCD).
            0x05 => {
                let b = self.cmos.read(cmos::REG_B);
                let (c, y, mo, d) = (regs.ch(), regs.cl(), regs.dh(), regs.dl());
                self.set_clock(
                    &[
                        (cmos::CENTURY, c),
                        (cmos::YEAR, y),
                        (cmos::MONTH, mo),
                        (cmos::DAY_OF_MONTH, d),
                    ],
                    (b & !cmos::B_DM_BINARY) | cmos::B_24H,
                );
                call.set_carry(false)
            }
            other => {
                log::debug!("BIOS: INT 1Ah AH={other:02x}h is not supported");
                call.set_carry(true)
            }
        }
    }

    /// Reads a CMOS time or date register as BCD, whatever mode register B selects.
    fn cmos_bcd(&mut self, index: u8, b: u8) -> u8 {
        let v = self.cmos.read(index);
        if b & cmos::B_DM_BINARY != 0 {
            to_bcd(v % 100)
        } else {
            v
        }
    }

    /// The RTC's time as BCD 24-hour (hours, minutes, seconds, DST), or `None` while the clock
    /// is halted for setting.
    pub(super) fn rtc_time(&mut self) -> Option<(u8, u8, u8, bool)> {
        let b = self.cmos.read(cmos::REG_B);
        if b & cmos::B_SET != 0 {
            return None;
        }
        let raw_hours = self.cmos.read(cmos::HOURS);
        let binary = b & cmos::B_DM_BINARY != 0;
        let hours = if b & cmos::B_24H != 0 {
            if binary {
                to_bcd(raw_hours % 24)
            } else {
                raw_hours
            }
        } else {
            // 12-hour: 12 AM is 00, 12 PM is 12.
            let pm = raw_hours & cmos::HOURS_PM != 0;
            let h12 = raw_hours & !cmos::HOURS_PM;
            let h12 = if binary {
                h12
            } else {
                (h12 >> 4) * 10 + (h12 & 0xf)
            };
            let h = h12 % 12;
            to_bcd(if pm { h + 12 } else { h })
        };
        let minutes = self.cmos_bcd(cmos::MINUTES, b);
        let seconds = self.cmos_bcd(cmos::SECONDS, b);
        Some((hours, minutes, seconds, b & cmos::B_DSE != 0))
    }

    /// The RTC's date as BCD (century, year, month, day), or `None` while the clock is halted.
    pub(super) fn rtc_date(&mut self) -> Option<(u8, u8, u8, u8)> {
        let b = self.cmos.read(cmos::REG_B);
        if b & cmos::B_SET != 0 {
            return None;
        }
        Some((
            self.cmos_bcd(cmos::CENTURY, b),
            self.cmos_bcd(cmos::YEAR, b),
            self.cmos_bcd(cmos::MONTH, b),
            self.cmos_bcd(cmos::DAY_OF_MONTH, b),
        ))
    }

    /// Writes `values` with updates halted (register B SET), then restarts the clock in mode
    /// `b` (BCD, 24-hour: the format the values are in).
    fn set_clock(&mut self, values: &[(u8, u8)], b: u8) {
        self.cmos.write(cmos::REG_B, b | cmos::B_SET);
        for (index, value) in values {
            self.cmos.write(*index, *value);
        }
        self.cmos.write(cmos::REG_B, b & !cmos::B_SET);
    }
}

pub(super) type VResult = Result<(), super::MemError>;
