//! The numbers of the IBM PC/AT BIOS interface: where the BIOS data area keeps what, the FLAGS
//! bits services answer in, and the MC146818 CMOS registers the clock services read.
//!
//! Sources: the IBM PC/AT Technical Reference (BIOS listing and the data area it defines), Ralf
//! Brown's interrupt list (MEMORY.LST for the data area, INTERRUP.LST for the services), the
//! ACPI specification (INT 15h E820), the MC146818A datasheet (CMOS registers), BIOS Enhanced
//! Disk Drive Services 3.0 (T13/1386D, INT 13h AH=41h-48h), the "El Torito" Bootable CD-ROM
//! Format Specification 1.0 and ECMA-119 (ISO 9660), the PCI BIOS Specification 2.1 and the
//! 16550 UART datasheet.

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
    /// Byte: keyboard shift flags (see [`super::kbd`]); the byte after holds the keys held.
    pub const KBD_FLAGS: u16 = 0x17;
    pub const KBD_FLAGS_2: u16 = 0x18;
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
    /// Byte: status of the last fixed-disk operation (INT 13h AH=01h returns it).
    pub const DISK_STATUS: u16 = 0x74;
    /// Byte: number of fixed disks.
    pub const HARD_DISKS: u16 = 0x75;
    /// Words: start and end of the keyboard buffer, as offsets from segment 0040h.
    pub const KBD_BUFFER_START: u16 = 0x80;
    pub const KBD_BUFFER_END_PTR: u16 = 0x82;
    /// Byte: text rows minus one.
    pub const VIDEO_ROWS: u16 = 0x84;
    /// Word: character height in scan lines.
    pub const CHAR_HEIGHT: u16 = 0x85;
    /// Byte: keyboard status 3: bit 1 the last scancode was the E0 prefix, bit 2 right Ctrl
    /// held, bit 3 right Alt held, bit 4 a 101/102-key keyboard is present.
    pub const KBD_STATUS_3: u16 = 0x96;
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
    /// kettle's boot record (12 bytes, in the part of the EBDA no standard assigns): what
    /// booted, kept in guest memory so that a saved and restored VM still knows it. Byte 0:
    /// [`BOOT_RECORD_MAGIC`]; 1: flags ([`BOOTED_VALID`], [`CD_BOOT_VALID`]); 2: the index in
    /// the boot order of the device that booted; 3: the CD's drive number; 4-7: the boot
    /// image's 2048-byte block; 8-9: its load segment; 10-11: its 512-byte sectors.
    pub const BOOT_RECORD: u64 = 0x200;
    pub const BOOT_RECORD_LEN: usize = 12;
    pub const BOOT_RECORD_MAGIC: u8 = b'K';
    pub const BOOTED_VALID: u8 = 1;
    pub const CD_BOOT_VALID: u8 = 2;
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

/// INT 13h, fixed disks and CD-ROMs (Ralf Brown's interrupt list; EDD 3.0, T13/1386D).
pub mod disk {
    /// The first fixed disk's drive number; the next ones count up from it.
    pub const FIRST_HARD_DISK: u8 = 0x80;
    /// The first CD-ROM's drive number in El Torito no-emulation mode (what SeaBIOS and most
    /// BIOSes give it; the specification leaves it to the BIOS).
    pub const FIRST_CDROM: u8 = 0xe0;
    pub const SECTOR: usize = 512;
    pub const CD_SECTOR: usize = 2048;

    /// Status codes in AH (and in the BIOS data area at 0040:0074).
    pub const OK: u8 = 0x00;
    pub const INVALID: u8 = 0x01;
    pub const WRITE_PROTECTED: u8 = 0x03;
    /// "Sector not found/read error": a read past the end, or the image failed.
    pub const READ_ERROR: u8 = 0x04;
    /// "Data boundary error": the classic CHS call's buffer crosses a 64 KiB segment end.
    pub const BOUNDARY: u8 = 0x09;
    /// "Volume not removable" (AH=46h on a fixed disk).
    pub const NOT_REMOVABLE: u8 = 0xb2;
    /// "Write fault": the image refused a write.
    pub const WRITE_FAULT: u8 = 0xcc;

    /// INT 13h AH=15h: a fixed disk.
    pub const TYPE_FIXED_DISK: u8 = 0x03;

    /// The logical CHS geometry of the INT 13h CHS calls (LBA-assisted translation): 63 sectors
    /// per track, 16 (ATA's physical count, up to 504 MiB) to 255 heads, at most 1024 cylinders.
    pub const SECTORS_PER_TRACK: u64 = 63;
    pub const ATA_HEADS: u64 = 16;
    pub const MAX_HEADS: u64 = 255;
    pub const MAX_CYLINDERS: u64 = 1024;
    /// The largest count AH=02h/03h/04h take in AL.
    pub const MAX_CHS_COUNT: u8 = 128;
    /// The largest DAP block count (EDD 3.0 3.2: "maximum value of 127").
    pub const MAX_DAP_BLOCKS: u16 = 127;
    /// The physical geometry AH=48h reports (ATA's default translation, up to 16383 cylinders).
    pub const ATA_MAX_CYLINDERS: u64 = 16383;
}

/// EDD 3.0 (T13/1386D) structures: the disk address packet of AH=42h-47h and the result
/// buffer of AH=48h.
pub mod edd {
    /// AH=41h: BX in and out of the installation check.
    pub const CHECK_IN: u16 = 0x55aa;
    pub const CHECK_OUT: u16 = 0xaa55;
    /// AH=41h: the version in AH, EDD 3.0.
    pub const VERSION_3_0: u8 = 0x30;
    /// AH=41h CX: bit 0 the fixed-disk access subset (42h-44h, 47h, 48h), bit 1 the drive
    /// locking and ejecting subset (45h, 46h, 48h, 49h), bit 2 EDD support (48h's extended
    /// fields).
    pub const SUPPORT: u16 = 0x0007;

    /// The disk address packet: size byte, reserved, block count word, buffer seg:off, LBA, and
    /// (in the 18h form) a 64-bit flat buffer address used when seg:off is FFFF:FFFF.
    pub const DAP_LEN: u8 = 0x10;
    pub const DAP_LEN_FLAT: u8 = 0x18;
    pub const DAP_COUNT: u16 = 0x02;
    pub const DAP_BUFFER: u16 = 0x04;
    pub const DAP_LBA: u16 = 0x08;
    pub const DAP_FLAT_BUFFER: u16 = 0x10;
    /// The seg:off that says "use the flat address".
    pub const FLAT_MARKER: u32 = 0xffff_ffff;

    /// The AH=48h result buffer sizes: EDD 1.x, 2.x (plus the DPTE pointer), 3.0 (plus the
    /// device path).
    pub const PARAMS_1X: u16 = 0x1a;
    pub const PARAMS_2X: u16 = 0x1e;
    pub const PARAMS_3X: u16 = 0x42;
    /// Information flags: bit 1 the physical geometry is valid, bit 2 removable, bit 4 change
    /// line supported, bit 5 lockable, bit 6 the geometry is set to the maximum (no media).
    pub const INFO_CHS_VALID: u16 = 1 << 1;
    pub const INFO_REMOVABLE: u16 = 1 << 2;
    pub const INFO_CHANGE_LINE: u16 = 1 << 4;
    pub const INFO_LOCKABLE: u16 = 1 << 5;
    /// The device path key and its length (1Eh-41h).
    pub const PATH_KEY: u16 = 0xbedd;
    pub const PATH_LEN: u8 = 0x24;
    /// The legacy IDE channels' command block bases.
    pub const IDE_BASES: [u16; 2] = [0x1f0, 0x170];
}

/// The "El Torito" Bootable CD-ROM Format Specification 1.0 and the ISO 9660 volume descriptor
/// it lives in.
pub mod eltorito {
    /// The boot record volume descriptor is the 2048-byte sector 17.
    pub const BOOT_RECORD_SECTOR: u64 = 17;
    /// Boot record: type 0, "CD001", version 1, then the boot system identifier.
    pub const ISO_ID: &[u8; 5] = b"CD001";
    pub const BOOT_SYSTEM_ID: &[u8] = b"EL TORITO SPECIFICATION";
    /// Offset of the boot catalog's sector (dword) in the boot record.
    pub const CATALOG_POINTER: usize = 0x47;
    /// The validation entry: header 01h, platform, ID string, checksum word, key 55h AAh.
    pub const VALIDATION_HEADER: u8 = 0x01;
    pub const KEY: [u8; 2] = [0x55, 0xaa];
    pub const ENTRY_LEN: usize = 32;
    /// The initial/default entry's boot indicator.
    pub const BOOTABLE: u8 = 0x88;
    /// Boot media types (low nibble of byte 1).
    pub const NO_EMULATION: u8 = 0;
    /// 0 in the entry means the traditional 07C0h.
    pub const DEFAULT_LOAD_SEGMENT: u16 = 0x07c0;
    /// INT 13h AX=4B01h's specification packet is 13h bytes.
    pub const SPEC_PACKET_LEN: u8 = 0x13;
}

/// INT 16h and INT 09h: the shift-flag bits at 0040:0017/0018 and the keyboard's scancodes
/// (set 1, what the i8042 hands the BIOS with translation on).
pub mod kbd {
    pub const RIGHT_SHIFT: u8 = 1 << 0;
    pub const LEFT_SHIFT: u8 = 1 << 1;
    pub const CTRL: u8 = 1 << 2;
    pub const ALT: u8 = 1 << 3;
    pub const SCROLL_LOCK: u8 = 1 << 4;
    pub const NUM_LOCK: u8 = 1 << 5;
    pub const CAPS_LOCK: u8 = 1 << 6;
    pub const INSERT: u8 = 1 << 7;
    /// 0040:0018: left Ctrl, left Alt, and the lock keys held down.
    pub const LEFT_CTRL_DOWN: u8 = 1 << 0;
    pub const LEFT_ALT_DOWN: u8 = 1 << 1;
    pub const SCROLL_DOWN: u8 = 1 << 4;
    pub const NUM_DOWN: u8 = 1 << 5;
    pub const CAPS_DOWN: u8 = 1 << 6;
    /// 0040:0096.
    pub const LAST_WAS_E0: u8 = 1 << 1;
    pub const RIGHT_CTRL_DOWN: u8 = 1 << 2;
    pub const RIGHT_ALT_DOWN: u8 = 1 << 3;
    pub const ENHANCED_KEYBOARD: u8 = 1 << 4;

    /// Set-1 scancodes with a meaning beyond their key code.
    pub const E0_PREFIX: u8 = 0xe0;
    pub const BREAK: u8 = 0x80;
    pub const SC_CTRL: u8 = 0x1d;
    pub const SC_LSHIFT: u8 = 0x2a;
    pub const SC_RSHIFT: u8 = 0x36;
    pub const SC_ALT: u8 = 0x38;
    pub const SC_CAPS: u8 = 0x3a;
    pub const SC_NUM: u8 = 0x45;
    pub const SC_SCROLL: u8 = 0x46;
    pub const SC_INSERT: u8 = 0x52;
    pub const SC_F1: u8 = 0x3b;
    pub const SC_F10: u8 = 0x44;
    pub const SC_F11: u8 = 0x57;
    pub const SC_F12: u8 = 0x58;
    /// The keypad's 7 ... . (Home ... Del with Num Lock off).
    pub const SC_KEYPAD: std::ops::RangeInclusive<u8> = 0x47..=0x53;
    /// Key codes past this one exist only for the extended calls (AH=10h/11h).
    pub const LAST_BASIC_SCAN: u8 = 0x84;
}

/// The 16550 UART registers the BIOS uses on COM1 (offsets from the base port).
pub mod uart {
    /// Receive buffer (read) and transmit holding register (write).
    pub const DATA: u16 = 0;
    pub const LSR: u16 = 5;
    /// LSR bit 0: a received byte is waiting.
    pub const LSR_DATA_READY: u8 = 0x01;
}

/// PCI BIOS Specification 2.1, INT 1Ah AH=B1h, over configuration mechanism 1.
pub mod pci {
    pub const FUNCTION_ID: u8 = 0xb1;
    /// "PCI " in EDX after the installation check.
    pub const SIGNATURE: u32 = 0x2049_4350;
    /// AL: configuration mechanism 1 supported.
    pub const HW_MECHANISM_1: u8 = 0x01;
    /// BH.BL: the interface level, 2.10.
    pub const VERSION: u16 = 0x0210;
    pub const CONFIG_ADDRESS: u16 = 0xcf8;
    pub const CONFIG_DATA: u16 = 0xcfc;
    pub const ENABLE: u32 = 0x8000_0000;
    /// Return codes in AH.
    pub const SUCCESSFUL: u8 = 0x00;
    pub const FUNC_NOT_SUPPORTED: u8 = 0x81;
    pub const BAD_VENDOR_ID: u8 = 0x83;
    pub const DEVICE_NOT_FOUND: u8 = 0x86;
    pub const BAD_REGISTER_NUMBER: u8 = 0x87;
    /// Configuration-space offsets the searches read.
    pub const VENDOR_ID: u8 = 0x00;
    pub const CLASS_REVISION: u8 = 0x08;
    pub const HEADER_TYPE: u8 = 0x0e;
    pub const MULTI_FUNCTION: u8 = 0x80;
    pub const DEVICES: u8 = 32;
    pub const FUNCTIONS: u8 = 8;
}

/// The colour text buffer INT 10h keeps (B800h; B000h in the monochrome mode 7).
pub mod text {
    pub const COLOUR_SEGMENT: u16 = 0xb800;
    pub const MONO_SEGMENT: u16 = 0xb000;
    pub const MONO_MODE: u8 = 7;
    /// Light grey on black: a blank cell is 20h, 07h.
    pub const ATTRIBUTE: u8 = 0x07;
    pub const BLANK: u8 = 0x20;
    /// The text modes AH=00h accepts: 80x25 grey, colour and monochrome.
    pub const MODES: [u8; 3] = [2, 3, 7];
    /// AH=00h's AL answer for a text mode (what IBM's VGA BIOS returns).
    pub const MODE_SET_TEXT: u8 = 0x30;
    /// AH=12h BL=10h: BH 0 colour, BL 3 256 KiB.
    pub const EGA_INFO: u8 = 0x10;
    pub const MEMORY_256K: u8 = 0x03;
    /// AH=1Ah: the function code echoed in AL, BL 08h VGA with a colour display.
    pub const DISPLAY_COMBINATION: u8 = 0x1a;
    pub const VGA_COLOUR: u8 = 0x08;
    /// The largest page the buffer operations touch (bounds a garbled BIOS data area).
    pub const MAX_PAGE_BYTES: usize = 0x8000;
}
