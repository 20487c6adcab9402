//! POST, the power-on self test, as far as kettle's BIOS needs one: the state an operating
//! system's boot loader expects to find in low memory, and the hand-off to the boot code.
//!
//! The reset vector's ROM code programs the interrupt controllers and the timer
//! ([`rom::POST_INIT_BYTES`]) and then traps; the VMM runs [`Bios::post`] (at power-on and after
//! every guest reset). It writes:
//!
//! - the interrupt vector table at 0000:0000, every vector pointing at its ROM stub (the fixed
//!   PC/AT entry point where there is one) and the data vectors at their tables
//!   ([`rom::ivt_entry`]);
//! - the BIOS data area at 0040:0000 (IBM PC/AT Technical Reference; Ralf Brown's MEMORY.LST):
//!   COM1/COM2/LPT1 bases, the equipment word, 639 KiB of conventional memory, the EBDA segment,
//!   the keyboard buffer, video mode 3 (80x25 colour text), the number of hard disks and the
//!   tick count, set from the RTC as the PC/AT's POST does so DOS's clock starts right;
//! - a 1 KiB extended BIOS data area at 0x9FC00, just below 640 KiB, which e820 reserves;
//! - a blank text screen (where the buffer is RAM);
//!
//! and then runs the boot selection (`boot`): the first device of the boot order that boots
//! leaves the registers its boot code starts with. When none does, the console says why, the
//! registers are left alone (the vCPU stays in the POST stub's `hlt` loop) and `post` returns
//! [`BiosError::NoBootDevice`] for the VMM to report as well.

use super::cpu::{GuestMem, IoPorts, RealMem, RealModeRegs};
use super::rom;
use super::spec::{self, bda, ebda, equipment, kbd, video};
use super::video::clear_buffer;
use super::{Bios, BiosError};
use arch::layout::{COM1_PORT, COM2_PORT, EBDA_START, LPT1_PORT};

impl Bios {
    /// The equipment word: x87, PS/2 mouse, 80x25 colour, two serial ports, LPT1 if present.
    pub fn equipment_word(&self) -> u16 {
        equipment::X87
            | equipment::PS2_MOUSE
            | equipment::VIDEO_80X25_COLOUR
            | (2 << equipment::SERIAL_SHIFT)
            | (u16::from(self.config.lpt) << equipment::PARALLEL_SHIFT)
    }

    /// Runs POST (see the module docs): writes the tables and, if a device of the boot order
    /// boots, sets `regs` to start its boot code. Console output goes to COM1 through `io`.
    pub fn post(
        &mut self,
        mem: &mut dyn GuestMem,
        regs: &mut RealModeRegs,
        io: &mut dyn IoPorts,
    ) -> Result<(), BiosError> {
        self.write_ivt(mem).map_err(BiosError::PostMemory)?;
        self.write_bda(mem).map_err(BiosError::PostMemory)?;
        write_ebda(mem).map_err(BiosError::PostMemory)?;
        self.serial_keys = Default::default();
        let mut mem = RealMem::new(mem, self.a20);
        clear_buffer(&mut mem).map_err(BiosError::PostMemory)?;
        self.boot(&mut mem, io, regs, 0)
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
        b[usize::from(bda::HARD_DISKS)] = self.hard_disk_count();
        b[usize::from(bda::KBD_STATUS_3)] = kbd::ENHANCED_KEYBOARD;
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
