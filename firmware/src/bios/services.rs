//! The BIOS services: what INT 08h, 10h, 11h, 12h, 15h and 1Ah do, run in Rust on the caller's
//! registers when the vector's ROM stub traps into the VMM.
//!
//! Register conventions are those of the IBM PC/AT BIOS as Ralf Brown's interrupt list records
//! them; the E820 call follows the ACPI specification's "INT 15H, E820H - Query System Address
//! Map". kettle has no video adapter: INT 10h keeps the
//! cursor in the BIOS data area as a colour text adapter's BIOS would and hands every character
//! to the VMM's console (`out`), which shows it on the VGA text buffer and COM1.
//!
//! A service reports failure the BIOS way (CF set, an error code in AH). When a guest-supplied
//! buffer or the guest's stack is not RAM, the service reports what it can to the guest and
//! returns [`BiosError::Memory`] for the VMM to log; it never panics.

use super::cpu::{Call, GuestMem, RealModeRegs};
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
    /// Fixed disks, for the BIOS data area.
    pub hard_disks: u8,
    /// DL for the boot sector: 0x80 for the first fixed disk.
    pub boot_drive: u8,
}

impl BiosConfig {
    /// The configuration for `layout`: its e820 map, no LPT, no disks yet, boot from 0x80.
    pub fn new(layout: &MemoryLayout) -> Self {
        Self {
            e820: arch::e820::entries(layout),
            lpt: false,
            hard_disks: 0,
            boot_drive: 0x80,
        }
    }
}

/// kettle's BIOS: its configuration and the state it keeps between calls.
pub struct Bios {
    pub(super) config: BiosConfig,
    pub(super) cmos: Box<dyn Cmos>,
    /// Whether the guest's real-mode addresses reach above 1 MiB (see [`Bios::set_a20`]).
    pub(super) a20: bool,
}

impl std::fmt::Debug for Bios {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bios")
            .field("config", &self.config)
            .field("a20", &self.a20)
            .finish_non_exhaustive()
    }
}

/// Converts a binary value 0-99 to packed BCD.
fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl Bios {
    /// A BIOS for `config`, reading the clock from `cmos`. A20 starts enabled: KVM does not mask
    /// address line 20, so that is what the CPU sees too.
    pub fn new(config: BiosConfig, cmos: Box<dyn Cmos>) -> Self {
        Self {
            config,
            cmos,
            a20: true,
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

    /// Runs the service of `vector` for the caller whose registers are `regs`. Characters INT 10h
    /// writes go to `out`. On return the VMM writes `regs` back to the vCPU, IP included.
    ///
    /// An error means a guest address was not RAM; the guest has been told where the service
    /// has an error return. The VMM logs it (rate-limited) and resumes the vCPU either way.
    pub fn handle(
        &mut self,
        vector: u8,
        regs: &mut RealModeRegs,
        mem: &mut dyn GuestMem,
        out: &mut dyn FnMut(u8),
    ) -> Result<(), BiosError> {
        let ax = regs.ax();
        let mut call = Call::new(regs, mem, self.a20);
        let result = match vector {
            0x08 => self.int08_timer(&mut call),
            // IRQ 1-7 with no service yet: acknowledge so lower-priority lines keep working.
            0x09..=0x0f => {
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
            0x10 => self.int10_video(&mut call, out),
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
            0x15 => self.int15_system(&mut call),
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

    // ---- INT 10h ---------------------------------------------------------------------------

    fn int10_video(&mut self, call: &mut Call, out: &mut dyn FnMut(u8)) -> VResult {
        let regs = &mut *call.regs;
        match regs.ah() {
            // AH=01h set cursor shape: CH start, CL end scan line.
            0x01 => {
                let cx = regs.cx();
                call.mem.write_u16(bda::SEGMENT, bda::CURSOR_TYPE, cx)
            }
            // AH=02h set cursor position: BH page, DH row, DL column.
            0x02 => {
                let (page, row, col) = (regs.bh(), regs.dh(), regs.dl());
                set_cursor(call, page, row, col)
            }
            // AH=03h get cursor position and shape.
            0x03 => {
                let page = regs.bh();
                let (row, col) = cursor(call, page)?;
                let shape = call.mem.read_u16(bda::SEGMENT, bda::CURSOR_TYPE)?;
                call.regs.set_dh(row);
                call.regs.set_dl(col);
                call.regs.set_cx(shape);
                Ok(())
            }
            // AH=05h select active page.
            0x05 => {
                let page = regs.al() % spec::video::PAGES;
                let size = call.mem.read_u16(bda::SEGMENT, bda::VIDEO_PAGE_SIZE)?;
                call.mem.write_u8(bda::SEGMENT, bda::ACTIVE_PAGE, page)?;
                let start = size.wrapping_mul(u16::from(page));
                call.mem
                    .write_u16(bda::SEGMENT, bda::VIDEO_PAGE_START, start)
            }
            // AH=0Eh teletype output: AL character, on the active page.
            0x0e => {
                let ch = regs.al();
                let page = active_page(call)?;
                teletype(call, page, ch, out)
            }
            // AH=0Fh get video mode: AL mode, AH columns, BH active page.
            0x0f => {
                let mode = call.mem.read_u8(bda::SEGMENT, bda::VIDEO_MODE)?;
                let cols = call.mem.read_u16(bda::SEGMENT, bda::VIDEO_COLUMNS)?;
                let page = active_page(call)?;
                call.regs.set_al(mode);
                call.regs.set_ah(cols.min(0xff) as u8);
                call.regs.set_bh(page);
                Ok(())
            }
            // AH=13h write string.
            0x13 => write_string(call, out),
            other => {
                log::debug!("BIOS: INT 10h AH={other:02x}h is not implemented");
                Ok(())
            }
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

type VResult = Result<(), super::MemError>;

fn active_page(call: &Call) -> Result<u8, super::MemError> {
    Ok(call.mem.read_u8(bda::SEGMENT, bda::ACTIVE_PAGE)? % spec::video::PAGES)
}

/// The (row, column) of `page`'s cursor.
fn cursor(call: &Call, page: u8) -> Result<(u8, u8), super::MemError> {
    let off = bda::CURSOR_POS + 2 * u16::from(page % spec::video::PAGES);
    let [col, row] = call.mem.read_u16(bda::SEGMENT, off)?.to_le_bytes();
    Ok((row, col))
}

fn set_cursor(call: &mut Call, page: u8, row: u8, col: u8) -> VResult {
    let off = bda::CURSOR_POS + 2 * u16::from(page % spec::video::PAGES);
    call.mem
        .write_u16(bda::SEGMENT, off, u16::from_le_bytes([col, row]))
}

/// The text screen's (rows, columns) from the BIOS data area, never zero.
fn screen_size(call: &Call) -> Result<(u16, u16), super::MemError> {
    let cols = call.mem.read_u16(bda::SEGMENT, bda::VIDEO_COLUMNS)?;
    let rows = u16::from(call.mem.read_u8(bda::SEGMENT, bda::VIDEO_ROWS)?) + 1;
    let cols = if cols == 0 {
        spec::video::COLUMNS
    } else {
        cols
    };
    Ok((rows, cols))
}

/// Writes `ch` as a teletype on `page`: BEL, BS, LF and CR act on the cursor, everything else is
/// shown and advances it, wrapping at the end of the line; a line feed on the last row scrolls
/// (the cursor stays on it). Characters for a page that is not shown do not reach `out`.
fn teletype(call: &mut Call, page: u8, ch: u8, out: &mut dyn FnMut(u8)) -> VResult {
    let (rows, cols) = screen_size(call)?;
    let (row, col) = cursor(call, page)?;
    let (mut row, mut col) = (u16::from(row).min(rows - 1), u16::from(col).min(cols - 1));
    match ch {
        0x07 => {}
        0x08 => col = col.saturating_sub(1),
        0x0a => row += 1,
        0x0d => col = 0,
        _ => {
            col += 1;
            if col >= cols {
                col = 0;
                row += 1;
            }
        }
    }
    if page == active_page(call)? {
        out(ch);
    }
    let row = row.min(rows - 1).min(0xff) as u8;
    set_cursor(call, page, row, col.min(0xff) as u8)
}

/// INT 10h AH=13h: AL bit 0 leaves the cursor after the string, bit 1 says the string alternates
/// characters and attributes; BH page, CX length, DH/DL where to start, ES:BP the string.
fn write_string(call: &mut Call, out: &mut dyn FnMut(u8)) -> VResult {
    let regs = &*call.regs;
    let (mode, page, count) = (regs.al(), regs.bh(), usize::from(regs.cx()));
    let (row, col, es, bp) = (regs.dh(), regs.dl(), regs.es, regs.bp());
    let stride = if mode & 0x02 != 0 { 2 } else { 1 };
    let mut text = vec![0; count * stride];
    call.mem.read(es, bp, &mut text)?;
    let saved = cursor(call, page)?;
    set_cursor(call, page, row, col)?;
    for ch in text.iter().step_by(stride) {
        teletype(call, page, *ch, out)?;
    }
    if mode & 0x01 == 0 {
        set_cursor(call, page, saved.0, saved.1)?;
    }
    Ok(())
}
