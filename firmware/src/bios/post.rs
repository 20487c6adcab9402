//! POST, the power-on self test, as far as kettle's BIOS needs one: the state an operating
//! system's boot loader expects to find in low memory, and the hand-off to the boot sector.
//!
//! The VMM runs [`Bios::post`] when the reset vector's trap fires (at power-on and after every
//! guest reset). It writes:
//!
//! - the interrupt vector table at 0000:0000, every vector pointing at its ROM stub (the fixed
//!   PC/AT entry point where there is one) and the data vectors at their tables
//!   ([`rom::ivt_entry`]);
//! - the BIOS data area at 0040:0000 (IBM PC/AT Technical Reference; Ralf Brown's MEMORY.LST):
//!   COM1/COM2/LPT1 bases, the equipment word, 639 KiB of conventional memory, the EBDA segment,
//!   the keyboard buffer, video mode 3 (80x25 colour text) and the tick count, set from the RTC
//!   as the PC/AT's POST does so DOS's clock starts right;
//! - a 1 KiB extended BIOS data area at 0x9FC00, just below 640 KiB, which e820 reserves;
//! - the boot sector at 0000:7C00, after checking its 0x55 0xAA signature.
//!
//! and leaves the registers a boot sector starts with: CS:IP = 0000:7C00, DL the boot drive,
//! SS:SP = 0000:7C00 (the stack grows down below the boot sector), DS = ES = 0, interrupts
//! enabled.
//!
//! Reading the boot sector is the caller's job (it needs the disk models): `post` takes the
//! sector, or `None` when there is nothing to boot. Then, or when the signature is missing,
//! `post` still writes the tables, leaves the registers alone (the vCPU stays in the POST stub's
//! `hlt` loop) and returns the error for the VMM to print.

use super::cpu::{GuestMem, RealModeRegs};
use super::rom;
use super::spec::{self, bda, ebda, equipment, flags, video};
use super::{Bios, BiosError};
use arch::layout::{COM1_PORT, COM2_PORT, EBDA_START, LPT1_PORT};

/// Where a boot sector is loaded and started: 0000:7C00.
pub const BOOT_SECTOR_ADDR: u64 = 0x7c00;
pub const BOOT_SECTOR_LEN: usize = 512;
/// The last two bytes of a bootable sector: 0x55, 0xAA.
pub const BOOT_SIGNATURE: u16 = 0xaa55;

impl Bios {
    /// The equipment word: x87, PS/2 mouse, 80x25 colour, two serial ports, LPT1 if present.
    pub fn equipment_word(&self) -> u16 {
        equipment::X87
            | equipment::PS2_MOUSE
            | equipment::VIDEO_80X25_COLOUR
            | (2 << equipment::SERIAL_SHIFT)
            | (u16::from(self.config.lpt) << equipment::PARALLEL_SHIFT)
    }

    /// Runs POST (see the module docs) and, with a bootable `boot_sector`, sets `regs` to start
    /// it.
    pub fn post(
        &mut self,
        mem: &mut dyn GuestMem,
        regs: &mut RealModeRegs,
        boot_sector: Option<&[u8; BOOT_SECTOR_LEN]>,
    ) -> Result<(), BiosError> {
        self.write_ivt(mem).map_err(BiosError::PostMemory)?;
        self.write_bda(mem).map_err(BiosError::PostMemory)?;
        write_ebda(mem).map_err(BiosError::PostMemory)?;

        let sector = boot_sector.ok_or(BiosError::NoBootDevice)?;
        let found = u16::from_le_bytes([sector[510], sector[511]]);
        if found != BOOT_SIGNATURE {
            return Err(BiosError::NoBootSignature { found });
        }
        mem.write(BOOT_SECTOR_ADDR, sector)
            .map_err(BiosError::PostMemory)?;

        *regs = RealModeRegs {
            edx: u32::from(self.config.boot_drive),
            cs: 0,
            ip: BOOT_SECTOR_ADDR as u16,
            ss: 0,
            esp: BOOT_SECTOR_ADDR as u32,
            flags: u32::from(flags::IF | flags::RESERVED_1),
            ..Default::default()
        };
        Ok(())
    }

    fn write_ivt(&self, mem: &mut dyn GuestMem) -> Result<(), super::MemError> {
        let mut ivt = Vec::with_capacity(256 * 4);
        for vector in 0..=255u8 {
            let (seg, off) = rom::ivt_entry(vector);
            ivt.extend_from_slice(&off.to_le_bytes());
            ivt.extend_from_slice(&seg.to_le_bytes());
        }
        mem.write(0, &ivt)
    }

    fn write_bda(&mut self, mem: &mut dyn GuestMem) -> Result<(), super::MemError> {
        let mut b = [0u8; bda::LEN];
        let mut word = |off: u16, v: u16| {
            let off = usize::from(off);
            b[off..off + 2].copy_from_slice(&v.to_le_bytes());
        };
        word(bda::COM_PORTS, COM1_PORT);
        word(bda::COM_PORTS + 2, COM2_PORT);
        if self.config.lpt {
            word(bda::LPT_PORTS, LPT1_PORT);
        }
        word(bda::EBDA_SEGMENT, (EBDA_START >> 4) as u16);
        word(bda::EQUIPMENT, self.equipment_word());
        word(bda::MEMORY_KIB, (EBDA_START / 1024) as u16);
        word(bda::KBD_HEAD, bda::KBD_BUFFER);
        word(bda::KBD_TAIL, bda::KBD_BUFFER);
        word(bda::KBD_BUFFER_START, bda::KBD_BUFFER);
        word(bda::KBD_BUFFER_END_PTR, bda::KBD_BUFFER_END);
        word(bda::VIDEO_COLUMNS, video::COLUMNS);
        word(bda::VIDEO_PAGE_SIZE, video::PAGE_SIZE);
        word(bda::CURSOR_TYPE, video::CURSOR_TYPE);
        word(bda::CRTC_BASE, video::CRTC_BASE);
        word(bda::CHAR_HEIGHT, video::CHAR_HEIGHT);
        b[usize::from(bda::VIDEO_MODE)] = video::MODE;
        b[usize::from(bda::VIDEO_ROWS)] = video::ROWS - 1;
        b[usize::from(bda::HARD_DISKS)] = self.config.hard_disks;
        let ticks = self.ticks_since_midnight();
        b[usize::from(bda::TICKS)..usize::from(bda::TICKS) + 4]
            .copy_from_slice(&ticks.to_le_bytes());
        mem.write(bda::BASE, &b)
    }

    /// The INT 08h tick count for the RTC's time of day (0 if the clock is halted).
    fn ticks_since_midnight(&mut self) -> u32 {
        let Some((h, m, s, _)) = self.rtc_time() else {
            return 0;
        };
        let bin = |v: u8| u64::from((v >> 4) * 10 + (v & 0xf));
        let secs = (bin(h) * 60 + bin(m)) * 60 + bin(s);
        let ticks = secs * spec::PIT_HZ / spec::TICK_DIVISOR;
        // A bogus RTC value must not yield a count past midnight.
        (ticks as u32).min(spec::TICKS_PER_DAY - 1)
    }
}

fn write_ebda(mem: &mut dyn GuestMem) -> Result<(), super::MemError> {
    let mut e = vec![0u8; usize::from(ebda::KIB) * 1024];
    e[usize::from(ebda::SIZE_KIB)] = ebda::KIB as u8;
    mem.write(EBDA_START, &e)
}
