//! The numbers of the IBM PC/AT BIOS interface: where the BIOS data area keeps what, the FLAGS
//! bits services answer in, and the MC146818 CMOS registers the clock services read.
//!
//! Sources: the IBM PC/AT Technical Reference (BIOS listing and the data area it defines), Ralf
//! Brown's interrupt list (MEMORY.LST for the data area, INTERRUP.LST for the services), the
//! ACPI specification (INT 15h E820) and the MC146818A datasheet (CMOS registers).

/// Real-mode FLAGS bits.
pub mod flags {
    /// Carry: the usual "error" flag of BIOS services.
    pub const CF: u16 = 1 << 0;
    /// Bit 1 always reads as 1.
    pub const RESERVED_1: u16 = 1 << 1;
    /// Zero: INT 16h "no key" and similar answers.
    pub const ZF: u16 = 1 << 6;
    /// Interrupt enable.
    pub const IF: u16 = 1 << 9;
}

/// The BIOS data area at segment 0040h (physical 0x400-0x4FF); offsets are from 0x400.
pub mod bda {
    pub const SEGMENT: u16 = 0x40;
    pub const BASE: u64 = 0x400;
    pub const LEN: usize = 0x100;
    /// Four words: I/O base addresses of COM1-COM4, 0 when absent.
    pub const COM_PORTS: u16 = 0x00;
    /// Three words: I/O base addresses of LPT1-LPT3, 0 when absent.
    pub const LPT_PORTS: u16 = 0x08;
    /// Word: segment of the extended BIOS data area.
    pub const EBDA_SEGMENT: u16 = 0x0e;
    /// Word: the equipment list INT 11h returns (see [`super::equipment`]).
    pub const EQUIPMENT: u16 = 0x10;
    /// Word: conventional memory in KiB, what INT 12h returns.
    pub const MEMORY_KIB: u16 = 0x13;
    /// Word: keyboard shift flags.
    pub const KBD_FLAGS: u16 = 0x17;
    /// Words: keyboard buffer head and tail, as offsets from segment 0040h.
    pub const KBD_HEAD: u16 = 0x1a;
    pub const KBD_TAIL: u16 = 0x1c;
    /// The 16-word keyboard ring buffer 0x1E-0x3D.
    pub const KBD_BUFFER: u16 = 0x1e;
    pub const KBD_BUFFER_END: u16 = 0x3e;
    /// Byte: current video mode.
    pub const VIDEO_MODE: u16 = 0x49;
    /// Word: text columns.
    pub const VIDEO_COLUMNS: u16 = 0x4a;
    /// Word: bytes per video page.
    pub const VIDEO_PAGE_SIZE: u16 = 0x4c;
    /// Word: offset of the active page in video memory.
    pub const VIDEO_PAGE_START: u16 = 0x4e;
    /// Eight words, one per page: cursor column (low byte) and row (high byte).
    pub const CURSOR_POS: u16 = 0x50;
    /// Word: cursor shape, end scan line (low byte) and start scan line (high byte).
    pub const CURSOR_TYPE: u16 = 0x60;
    /// Byte: active video page.
    pub const ACTIVE_PAGE: u16 = 0x62;
    /// Word: I/O base of the CRT controller (0x3D4 colour).
    pub const CRTC_BASE: u16 = 0x63;
    /// Dword: timer ticks since midnight, incremented by INT 08h.
    pub const TICKS: u16 = 0x6c;
    /// Byte: nonzero once the tick count has passed midnight; INT 1Ah AH=00h clears it.
    pub const MIDNIGHT: u16 = 0x70;
    /// Word: 0x1234 asks the next POST for a warm boot.
    pub const SOFT_RESET: u16 = 0x72;
    /// Byte: number of fixed disks.
    pub const HARD_DISKS: u16 = 0x75;
    /// Words: start and end of the keyboard buffer, as offsets from segment 0040h.
    pub const KBD_BUFFER_START: u16 = 0x80;
    pub const KBD_BUFFER_END_PTR: u16 = 0x82;
    /// Byte: text rows minus one.
    pub const VIDEO_ROWS: u16 = 0x84;
    /// Word: character height in scan lines.
    pub const CHAR_HEIGHT: u16 = 0x85;
}

/// The equipment word at 0040:0010 (INT 11h).
pub mod equipment {
    /// A math coprocessor is present (every CPU kettle runs on has an x87).
    pub const X87: u16 = 1 << 1;
    /// A PS/2 pointing device is present (the i8042 has its mouse).
    pub const PS2_MOUSE: u16 = 1 << 2;
    /// Bits 5:4, initial video mode: 10 = 80x25 colour.
    pub const VIDEO_80X25_COLOUR: u16 = 0b10 << 4;
    /// Bits 11:9, number of serial ports.
    pub const SERIAL_SHIFT: u16 = 9;
    /// Bits 15:14, number of parallel ports.
    pub const PARALLEL_SHIFT: u16 = 14;
}

/// The extended BIOS data area: the last KiB of conventional memory.
pub mod ebda {
    /// Byte at offset 0: the EBDA's size in KiB.
    pub const SIZE_KIB: u16 = 0x00;
    pub const KIB: u16 = 1;
}

/// The text mode POST leaves: mode 3, 80x25, 16 colours, 8x16 characters.
pub mod video {
    pub const MODE: u8 = 3;
    pub const COLUMNS: u16 = 80;
    pub const ROWS: u8 = 25;
    pub const PAGE_SIZE: u16 = 0x1000;
    pub const PAGES: u8 = 8;
    pub const CHAR_HEIGHT: u16 = 16;
    /// Cursor on scan lines 6-7, as the colour adapter BIOS reports it.
    pub const CURSOR_TYPE: u16 = 0x0607;
    pub const CRTC_BASE: u16 = 0x3d4;
}

/// INT 15h AX=E820h.
pub mod e820 {
    /// "SMAP", the signature in EDX on the call and EAX on return.
    pub const SMAP: u32 = 0x534d_4150;
    /// Base (8), length (8), type (4).
    pub const ENTRY_LEN: u32 = 20;
    /// Plus the ACPI 3.0 extended attributes (4).
    pub const ENTRY_LEN_EXTENDED: u32 = 24;
    /// Extended attributes bit 0: the entry is valid (ACPI 3.0 "EnabledAddressRange").
    pub const ATTR_ENABLED: u32 = 1;
}

/// INT 15h error code in AH: function not supported.
pub const UNSUPPORTED: u8 = 0x86;

/// Timer ticks in a day at the PIT's 1.193182 MHz / 65536 (IBM's constant 0x1800B0).
pub const TICKS_PER_DAY: u32 = 0x18_00b0;
/// The PIT input clock in Hz and its divisor for the 18.2 Hz tick.
pub const PIT_HZ: u64 = 1_193_182;
pub const TICK_DIVISOR: u64 = 65_536;

/// MC146818 registers the clock services and POST read (MC146818A datasheet; century byte at
/// 0x32 is the IBM PC/AT CMOS convention).
pub mod cmos {
    pub const SECONDS: u8 = 0x00;
    pub const MINUTES: u8 = 0x02;
    pub const HOURS: u8 = 0x04;
    pub const DAY_OF_MONTH: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const REG_B: u8 = 0x0b;
    pub const CENTURY: u8 = 0x32;
    /// Register B: updates halted while the clock is being set.
    pub const B_SET: u8 = 0x80;
    /// Register B: binary (not BCD) time and date.
    pub const B_DM_BINARY: u8 = 0x04;
    /// Register B: 24-hour (not 12-hour) hours.
    pub const B_24H: u8 = 0x02;
    /// Register B: daylight saving enable.
    pub const B_DSE: u8 = 0x01;
    /// In 12-hour mode, bit 7 of the hours register marks PM.
    pub const HOURS_PM: u8 = 0x80;
}
