//! The 64 KiB system BIOS ROM image, mapped at 0xF0000-0xFFFFF (segment F000h) and aliased by the
//! VMM at 0xFFFF0000-0xFFFFFFFF, where the CPU fetches its first instruction.
//!
//! The ROM holds almost no code. Every interrupt vector leads to a four-byte *stub*
//!
//! ```text
//!     E6 EC    out BIOS_PORT, al   ; exits to the VMM, which runs the service in Rust
//!     CF       iret                ; back to the caller, with the FLAGS the service left
//!     90       nop                 ; pad, never executed
//! ```
//!
//! and the VMM finds out which vector it is from the IP just past the `out`
//! ([`vector_of_stub`]). `out imm8, al` leaves every register as the caller set it (AL is only
//! written to the port), so the service sees the caller's AX.
//!
//! # Layout (offsets in segment F000h)
//!
//! | offset | what |
//! |---|---|
//! | 0000 | [`IDENT`], "kettle BIOS" |
//! | 0100-04FF | [`STUBS`]: stub N at `STUBS + 4*N`, N = 00h-FFh |
//! | 0500 | [`CONFIG_TABLE`]: the system configuration table INT 15h AH=C0h points at |
//! | 0520-054F | interrupt-acknowledge tails a hardware interrupt's service returns through ([`TIMER_TAIL`], [`EOI_MASTER`], [`EOI_SLAVE`], [`RTC_TAIL`]) |
//! | 0550-0555 | [`KBD_WAIT`]: `sti; hlt; cli; jmp` back to the INT 16h stub, where a key wait idles |
//! | 0556-7FFF | free (for disk parameter tables and the like) |
//! | 8000-DFFF | [`TABLES_START`]-[`TABLES_END`]: left erased here; the VMM writes the MP, $PIR and SMBIOS tables ([`crate::legacy`]) into its RAM copy of the ROM |
//! | E05B | [`POST_STUB`]: program the 8259s and the 8254 ([`POST_INIT_BYTES`]), then `out BIOS_PORT, al; hlt; jmp short` back to the `hlt`, where the reset vector jumps |
//! | E2C3 ... FEA5 | the IBM PC/AT fixed entry points ([`FIXED_ENTRY_POINTS`]), each a stub for its vector |
//! | EFC7 | [`DISKETTE_TABLE`], the diskette parameter table INT 1Eh points at |
//! | FF53 | [`DUMMY_IRET`]: a lone `iret`, as on the PC/AT |
//! | FFF0 | [`RESET_VECTOR`]: `jmp far F000:E05B` |
//! | FFF5 | [`DATE`]: the BIOS date, "MM/DD/YY" |
//! | FFFE | [`MODEL`]: the model byte, FCh (PC/AT) |
//! | FFFF | checksum: the 64 KiB sum to zero |
//!
//! Unused bytes are 0xFF, as in an erased ROM.
//!
//! The fixed entry points are the addresses the IBM PC/AT BIOS listing gives its handlers; real
//! software (DOS, boot loaders, diagnostics) calls some of them directly with `call far` or
//! `jmp far` instead of through the IVT, so each holds a stub of its own vector. The diskette
//! parameter table at F000:EFC7 is a fixed address too.
//!
//! # The trap port
//!
//! [`BIOS_PORT`] is I/O port 0xEC. It must be an 8-bit port (the `E6 ib` encoding) that nothing
//! in kettle decodes and that guests do not write for their own reasons. Below 0x100 kettle's
//! devices decode the i8042 (0x60-0x64), the RTC (0x70-0x71), the POST latch (0x80) and port
//! 0x92 (`arch::layout`), and KVM's in-kernel irqchip the 8259s (0x20, 0xA0) and the 8254
//! (0x40-0x43). Guests and other firmware also write, on their own, 0x80, 0xEB and 0xED (delay
//! ports), 0xE9 (the Bochs/QEMU debug console), 0xEE/0xEF (fast A20 and fast reset on some
//! chipsets), 0xF0-0xFF (the math coprocessor) and the DMA controllers. 0xEC lies in the
//! 0xE0-0xEF range the PC/AT leaves unassigned, with no use we know of. A stray write to it is
//! still possible; the VMM only treats a write as a BIOS call when CS is [`ROM_SEGMENT`]
//! and [`trap_at`] recognises the IP.

/// Segment of the ROM in real mode.
pub const ROM_SEGMENT: u16 = 0xf000;
/// Guest-physical address of the ROM below 1 MiB; the VMM also maps it at 4 GiB - [`ROM_SIZE`].
pub const ROM_BASE: u64 = 0xf_0000;
pub const ROM_SIZE: usize = 0x1_0000;

/// The I/O port the stubs write to (see the module docs for why this one).
pub const BIOS_PORT: u8 = 0xec;

const OUT_IMM8_AL: u8 = 0xe6;
const IRET: u8 = 0xcf;
const NOP: u8 = 0x90;
const HLT: u8 = 0xf4;
const JMP_SHORT: u8 = 0xeb;
const JMP_FAR: u8 = 0xea;
/// What unused ROM bytes hold.
const ERASED: u8 = 0xff;

/// Identification string at F000:0000.
pub const IDENT: u16 = 0x0000;
pub const IDENT_TEXT: &[u8] = b"kettle BIOS\0";

/// The table of 256 stubs: stub N at `STUBS + STUB_LEN * N`.
pub const STUBS: u16 = 0x0100;
pub const STUB_LEN: u16 = 4;
/// How far into a stub its trap IP is (the length of `out imm8, al`).
const TRAP_OFFSET: u16 = 2;

/// Where the legacy firmware tables go (`crate::legacy::legacy_tables`): [`build`] leaves
/// offsets `TABLES_START..TABLES_END` erased, and the VMM writes the MP floating pointer and
/// configuration table, the $PIR table and the SMBIOS entry point and structures there once it
/// has copied the ROM into guest RAM. They must lie in 0xF0000-0xFFFFF, where operating systems
/// scan for their 16-byte aligned anchors.
pub const TABLES_START: u16 = 0x8000;
pub const TABLES_END: u16 = 0xe000;

/// The system configuration table (INT 15h AH=C0h).
pub const CONFIG_TABLE: u16 = 0x0500;
/// Model byte and submodel: FCh/01h, the PC/AT.
pub const MODEL_BYTE: u8 = 0xfc;
pub const SUBMODEL_BYTE: u8 = 0x01;
pub const BIOS_REVISION: u8 = 0x00;
/// Feature byte 1: bit 6 second 8259, bit 5 real-time clock, bit 2 EBDA allocated.
pub const FEATURE_1: u8 = 0x64;
/// Length word (8: the bytes after it), model, submodel, revision, feature bytes 1-5.
pub const CONFIG_TABLE_BYTES: [u8; 10] = [
    0x08,
    0x00,
    MODEL_BYTE,
    SUBMODEL_BYTE,
    BIOS_REVISION,
    FEATURE_1,
    0,
    0,
    0,
    0,
];

/// INT 08h's service returns through here: `int 1Ch` (the user timer hook), then
/// [`EOI_MASTER`], which follows directly, as the PC/AT's timer handler does.
pub const TIMER_TAIL: u16 = 0x0520;
const TIMER_TAIL_BYTES: [u8; 2] = [0xcd, 0x1c]; // int 1Ch
/// `push ax; mov al, 20h; out 20h, al; pop ax; iret`: non-specific EOI to the master 8259.
pub const EOI_MASTER: u16 = TIMER_TAIL + TIMER_TAIL_BYTES.len() as u16;
const EOI_MASTER_BYTES: [u8; 7] = [0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, IRET];
/// `push ax; mov al, 20h; out A0h, al; out 20h, al; pop ax; iret`: EOI to both 8259s.
pub const EOI_SLAVE: u16 = 0x0530;
const EOI_SLAVE_BYTES: [u8; 9] = [0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, IRET];
/// IRQ 8: `push ax; mov al, 0Ch; out 70h, al; in al, 71h` (reading RTC register C acknowledges
/// the RTC's interrupt), then EOI to both 8259s as [`EOI_SLAVE`].
pub const RTC_TAIL: u16 = 0x0540;
const RTC_TAIL_BYTES: [u8; 15] = [
    0x50, 0xb0, 0x0c, 0xe6, 0x70, 0xe4, 0x71, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, IRET,
];

/// INT 16h's "wait for a key" when the buffer is empty: the service leaves every register as
/// the caller set it and moves IP here. `sti; hlt` idles the vCPU until an interrupt (the 18.2 Hz
/// timer at the latest, or the keyboard's IRQ 1, whose INT 09h fills the buffer); `cli` restores
/// the interrupt state a service runs in, and the `jmp` re-enters the INT 16h stub, whose `out`
/// traps again with the caller's AX and the caller's frame still on the stack. The wait never
/// blocks inside the VMM, so the vCPU can be paused or stopped while a guest waits for a key.
pub const KBD_WAIT: u16 = 0x0550;
const STI: u8 = 0xfb;
const CLI: u8 = 0xfa;
const JMP_NEAR: u8 = 0xe9;

fn kbd_wait_bytes() -> [u8; 6] {
    // The rel16 of `jmp near` counts from the end of the instruction.
    let rel = entry_point(0x16).wrapping_sub(KBD_WAIT + 6).to_le_bytes();
    [STI, HLT, CLI, JMP_NEAR, rel[0], rel[1]]
}

/// Where the reset vector jumps: the PC/AT's POST entry point F000:E05B. It programs the
/// interrupt controllers and the timer ([`POST_INIT_BYTES`]), which the VMM cannot reach with
/// port writes of its own when they live in KVM. Its `out` then asks the VMM to run POST, which
/// points CS:IP at the boot code; the `hlt` loop after it is reached only when there is nothing
/// to boot.
pub const POST_STUB: u16 = 0xe05b;
/// The hardware set-up POST's `out` follows, as the PC/AT BIOS does it (8259A and 8254
/// datasheets):
///
/// - both 8259s: ICW1 edge-triggered cascade with ICW4; ICW2 vector bases 08h and 70h (the
///   vectors the IVT's IRQ stubs expect); ICW3 the slave on IRQ 2; ICW4 8086 mode; then the
///   masks: IRQ 0 (timer), 1 (keyboard) and 2 (cascade) open, the rest closed until an
///   operating system opens them;
/// - the 8254's counter 0: mode 3, divisor 65536, the 18.2 Hz tick of INT 08h, which also wakes
///   [`KBD_WAIT`].
pub const POST_INIT_BYTES: [u8; 48] = [
    0xfa, 0xfc, // cli; cld
    0xb0, 0x11, 0xe6, 0x20, 0xe6, 0xa0, // ICW1 to both
    0xb0, 0x08, 0xe6, 0x21, // ICW2 master: vectors 08h-0Fh
    0xb0, 0x70, 0xe6, 0xa1, // ICW2 slave: vectors 70h-77h
    0xb0, 0x04, 0xe6, 0x21, // ICW3 master: a slave on IRQ 2
    0xb0, 0x02, 0xe6, 0xa1, // ICW3 slave: cascade identity 2
    0xb0, 0x01, 0xe6, 0x21, 0xe6, 0xa1, // ICW4: 8086 mode
    0xb0, 0xf8, 0xe6, 0x21, // OCW1 master: IRQ 0-2 unmasked
    0xb0, 0xff, 0xe6, 0xa1, // OCW1 slave: all masked
    0xb0, 0x36, 0xe6, 0x43, // 8254: counter 0, LSB then MSB, mode 3
    0x30, 0xc0, 0xe6, 0x40, 0xe6, 0x40, // divisor 0 = 65536
];
/// The trap IP of [`POST_STUB`]; also the address of its `hlt`.
pub const POST_TRAP_IP: u16 = POST_STUB + POST_INIT_BYTES.len() as u16 + TRAP_OFFSET;
const POST_TRAP_BYTES: [u8; 5] = [OUT_IMM8_AL, BIOS_PORT, HLT, JMP_SHORT, 0xfd]; // jmp to hlt

/// The diskette parameter table (INT 1Eh) at its PC/AT address F000:EFC7: the values for a
/// 1.44 MB 3.5" drive: step rate/head unload, head load/DMA, motor-off delay, 512-byte sectors,
/// 18 sectors per track, gap length, data length, format gap, fill byte, head settle time, motor
/// start time.
pub const DISKETTE_TABLE: u16 = 0xefc7;
pub const DISKETTE_TABLE_BYTES: [u8; 11] = [
    0xdf, 0x02, 0x25, 0x02, 0x12, 0x1b, 0xff, 0x6c, 0xf6, 0x0f, 0x08,
];

/// The PC/AT's dummy interrupt handler, a lone `iret` software points unused vectors at.
pub const DUMMY_IRET: u16 = 0xff53;

/// The reset vector: `jmp far F000:E05B`.
pub const RESET_VECTOR: u16 = 0xfff0;
/// The BIOS date string, "MM/DD/YY".
pub const DATE: u16 = 0xfff5;
pub const DATE_TEXT: [u8; 8] = *b"11/01/26";
/// The model byte (also in [`CONFIG_TABLE`]).
pub const MODEL: u16 = 0xfffe;
/// The byte that makes the 64 KiB sum to zero.
pub const CHECKSUM: u16 = 0xffff;

/// The PC/AT BIOS's fixed entry points: (vector, offset in F000h), from the IBM PC/AT
/// Technical Reference BIOS listing.
pub const FIXED_ENTRY_POINTS: [(u8, u16); 16] = [
    (0x02, 0xe2c3), // NMI
    (0x05, 0xff54), // print screen
    (0x08, 0xfea5), // timer (IRQ 0)
    (0x09, 0xe987), // keyboard (IRQ 1)
    (0x0e, 0xef57), // diskette (IRQ 6)
    (0x10, 0xf065), // video
    (0x11, 0xf84d), // equipment list
    (0x12, 0xf841), // memory size
    (0x13, 0xe3fe), // disk
    (0x14, 0xe739), // serial
    (0x15, 0xf859), // system services
    (0x16, 0xe82e), // keyboard services
    (0x17, 0xefd2), // printer
    (0x19, 0xe6f2), // bootstrap
    (0x1a, 0xfe6e), // time of day
    (0x40, 0xec59), // diskette services, once a fixed-disk BIOS has taken INT 13h
];

/// Vectors that hold a pointer to data, not code: 1Dh video parameters, 1Eh diskette parameters,
/// 1Fh graphics characters 80h-FFh, 41h/46h fixed-disk parameters, 43h the graphics font. POST
/// points 1Eh at [`DISKETTE_TABLE`] and leaves the others 0000:0000 (the PC/AT's value for 1Fh)
/// until kettle has the tables.
pub const DATA_VECTORS: [u8; 6] = [0x1d, 0x1e, 0x1f, 0x41, 0x43, 0x46];

/// Why the VMM was entered through [`BIOS_PORT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// The reset vector ran: do POST.
    Post,
    /// A stub for this interrupt vector ran: run its service.
    Interrupt(u8),
}

/// What the `out` that exited at `ip_after_out` (the IP just past the instruction, CS being
/// [`ROM_SEGMENT`]) was, or `None` if it was not one of the ROM's traps.
pub fn trap_at(ip_after_out: u16) -> Option<Trap> {
    if ip_after_out == POST_TRAP_IP {
        return Some(Trap::Post);
    }
    vector_of_stub(ip_after_out).map(Trap::Interrupt)
}

/// The vector whose stub (in the table or at a fixed entry point) has its trap at
/// `ip_after_out`; `None` for any other IP, including [`POST_TRAP_IP`].
pub fn vector_of_stub(ip_after_out: u16) -> Option<u8> {
    let table_start = STUBS + TRAP_OFFSET;
    let table_end = table_start + STUB_LEN * 256;
    if (table_start..table_end).contains(&ip_after_out) {
        let rel = ip_after_out - table_start;
        return rel
            .is_multiple_of(STUB_LEN)
            .then_some((rel / STUB_LEN) as u8);
    }
    FIXED_ENTRY_POINTS
        .iter()
        .find(|(_, at)| at + TRAP_OFFSET == ip_after_out)
        .map(|(vector, _)| *vector)
}

/// Offset of `vector`'s stub in the table.
pub fn table_stub(vector: u8) -> u16 {
    STUBS + STUB_LEN * u16::from(vector)
}

/// Where `vector`'s code is: its fixed entry point if it has one, else its table stub.
pub fn entry_point(vector: u8) -> u16 {
    FIXED_ENTRY_POINTS
        .iter()
        .find(|(v, _)| *v == vector)
        .map_or_else(|| table_stub(vector), |(_, at)| *at)
}

/// The segment:offset POST writes to the IVT for `vector`.
pub fn ivt_entry(vector: u8) -> (u16, u16) {
    match vector {
        0x1e => (ROM_SEGMENT, DISKETTE_TABLE),
        // The hooks the BIOS itself calls for software to take over (Ctrl-Break, the user
        // timer tick INT 08h calls 18.2 times a second, the RTC alarm) start as a bare `iret`,
        // as on the PC/AT: a trap into the VMM would do nothing, at a cost.
        v if USER_HOOKS.contains(&v) => (ROM_SEGMENT, DUMMY_IRET),
        v if DATA_VECTORS.contains(&v) => (0, 0),
        v => (ROM_SEGMENT, entry_point(v)),
    }
}

/// Vectors that start out pointing at [`DUMMY_IRET`]: INT 1Bh (Ctrl-Break), 1Ch (user timer
/// tick), 4Ah (user RTC alarm).
pub const USER_HOOKS: [u8; 3] = [0x1b, 0x1c, 0x4a];

/// The image under construction; every byte may be placed once.
struct Image {
    bytes: Vec<u8>,
    used: Vec<bool>,
}

impl Image {
    fn put(&mut self, at: u16, data: &[u8]) {
        let at = usize::from(at);
        let end = at + data.len();
        assert!(end <= ROM_SIZE, "ROM item at {at:#x} runs past the end");
        assert!(
            !self.used[at..end].iter().any(|u| *u),
            "ROM items overlap at {at:#x}"
        );
        self.bytes[at..end].copy_from_slice(data);
        self.used[at..end].fill(true);
    }

    fn stub(&mut self, at: u16) {
        self.put(at, &[OUT_IMM8_AL, BIOS_PORT, IRET, NOP]);
    }
}

/// Builds the ROM image (see the module docs for its layout).
pub fn build() -> Vec<u8> {
    let mut rom = Image {
        bytes: vec![ERASED; ROM_SIZE],
        used: vec![false; ROM_SIZE],
    };
    rom.put(IDENT, IDENT_TEXT);
    for vector in 0..=255u8 {
        rom.stub(table_stub(vector));
    }
    rom.put(CONFIG_TABLE, &CONFIG_TABLE_BYTES);
    rom.put(TIMER_TAIL, &TIMER_TAIL_BYTES);
    rom.put(EOI_MASTER, &EOI_MASTER_BYTES);
    rom.put(EOI_SLAVE, &EOI_SLAVE_BYTES);
    rom.put(RTC_TAIL, &RTC_TAIL_BYTES);
    rom.put(KBD_WAIT, &kbd_wait_bytes());
    rom.put(POST_STUB, &POST_INIT_BYTES);
    rom.put(POST_STUB + POST_INIT_BYTES.len() as u16, &POST_TRAP_BYTES);
    for (_, at) in FIXED_ENTRY_POINTS {
        rom.stub(at);
    }
    rom.put(DISKETTE_TABLE, &DISKETTE_TABLE_BYTES);
    rom.put(DUMMY_IRET, &[IRET]);
    let [post_lo, post_hi] = POST_STUB.to_le_bytes();
    let [seg_lo, seg_hi] = ROM_SEGMENT.to_le_bytes();
    rom.put(RESET_VECTOR, &[JMP_FAR, post_lo, post_hi, seg_lo, seg_hi]);
    rom.put(DATE, &DATE_TEXT);
    rom.put(MODEL, &[MODEL_BYTE]);
    let sum = rom.bytes[..usize::from(CHECKSUM)]
        .iter()
        .fold(0u8, |s, b| s.wrapping_add(*b));
    rom.put(CHECKSUM, &[0u8.wrapping_sub(sum)]);
    rom.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rom: &[u8], off: u16, len: usize) -> &[u8] {
        &rom[usize::from(off)..usize::from(off) + len]
    }

    #[test]
    fn image_is_64k_and_sums_to_zero() {
        let rom = build();
        assert_eq!(rom.len(), 0x10000);
        assert_eq!(rom.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(at(&rom, IDENT, IDENT_TEXT.len()), IDENT_TEXT);
    }

    #[test]
    fn the_tables_area_is_left_erased() {
        let rom = build();
        let area = &rom[usize::from(TABLES_START)..usize::from(TABLES_END)];
        assert!(area.iter().all(|b| *b == ERASED));
        // Nothing the ROM places (the fixed entry points included) falls inside it.
        assert!(FIXED_ENTRY_POINTS
            .iter()
            .all(|(_, at)| !(TABLES_START..TABLES_END).contains(at)));
        const { assert!(TABLES_END <= POST_STUB && TABLES_START > KBD_WAIT + 6) };
    }

    #[test]
    fn reset_vector_jumps_to_the_post_stub() {
        let rom = build();
        assert_eq!(at(&rom, 0xfff0, 5), &[0xea, 0x5b, 0xe0, 0x00, 0xf0]);
        assert_eq!(at(&rom, 0xfff5, 8), b"11/01/26");
        assert_eq!(rom[0xfffe], 0xfc);
        // The hardware set-up, then out 0ECh, al; hlt; jmp short back to the hlt.
        assert_eq!(at(&rom, 0xe05b, 2), &[0xfa, 0xfc]);
        let out = 0xe05b + POST_INIT_BYTES.len() as u16;
        assert_eq!(at(&rom, out, 5), &[0xe6, 0xec, 0xf4, 0xeb, 0xfd]);
        let jmp_next = i32::from(out) + 5;
        assert_eq!(jmp_next + i32::from(0xfdu8 as i8), i32::from(out) + 2);
        assert_eq!(POST_TRAP_IP, out + 2);
        assert_eq!(
            rom[usize::from(POST_TRAP_IP)],
            0xf4,
            "the trap IP is the hlt"
        );
        assert_eq!(trap_at(POST_TRAP_IP), Some(Trap::Post));
        assert_eq!(vector_of_stub(POST_TRAP_IP), None);
        // The set-up stays clear of the NMI entry point.
        const { assert!(POST_TRAP_IP + 3 < 0xe2c3) };
    }

    #[test]
    fn post_programs_the_pics_and_the_timer() {
        // (port, value) pairs of the `mov al, imm8; out imm8, al` sequence.
        let mut writes = Vec::new();
        let mut al = 0u8;
        let code = &POST_INIT_BYTES;
        let mut i = 2;
        while i < code.len() {
            match code[i] {
                0xb0 => al = code[i + 1],
                0x30 => al = 0,
                0xe6 => writes.push((code[i + 1], al)),
                b => panic!("unexpected opcode {b:#x}"),
            }
            i += 2;
        }
        assert_eq!(
            writes,
            [
                (0x20, 0x11),
                (0xa0, 0x11),
                (0x21, 0x08),
                (0xa1, 0x70),
                (0x21, 0x04),
                (0xa1, 0x02),
                (0x21, 0x01),
                (0xa1, 0x01),
                (0x21, 0xf8),
                (0xa1, 0xff),
                (0x43, 0x36),
                (0x40, 0x00),
                (0x40, 0x00),
            ]
        );
    }

    #[test]
    fn key_wait_idles_and_reenters_the_int16_stub() {
        let rom = build();
        assert_eq!(at(&rom, KBD_WAIT, 4), &[0xfb, 0xf4, 0xfa, 0xe9]);
        let rel = u16::from_le_bytes([
            rom[usize::from(KBD_WAIT) + 4],
            rom[usize::from(KBD_WAIT) + 5],
        ]);
        let target = (KBD_WAIT + 6).wrapping_add(rel);
        assert_eq!(target, entry_point(0x16));
        assert_eq!(vector_of_stub(target + 2), Some(0x16));
    }

    #[test]
    fn fixed_entry_points_hold_their_vectors_stubs() {
        let rom = build();
        let required = [
            (0x19, 0xe6f2),
            (0x13, 0xe3fe),
            (0x10, 0xf065),
            (0x16, 0xe82e),
            (0x1a, 0xfe6e),
            (0x15, 0xf859),
            (0x11, 0xf84d),
            (0x12, 0xf841),
            (0x09, 0xe987),
            (0x08, 0xfea5),
        ];
        for (vector, off) in required {
            assert!(FIXED_ENTRY_POINTS.contains(&(vector, off)));
        }
        for (vector, off) in FIXED_ENTRY_POINTS {
            assert_eq!(
                at(&rom, off, 3),
                &[0xe6, BIOS_PORT, 0xcf],
                "INT {vector:02x}h"
            );
            assert_eq!(vector_of_stub(off + 2), Some(vector));
            assert_eq!(trap_at(off + 2), Some(Trap::Interrupt(vector)));
            assert_eq!(entry_point(vector), off);
            assert_eq!(ivt_entry(vector), (0xf000, off));
        }
    }

    #[test]
    fn every_table_stub_maps_back_to_its_vector() {
        let rom = build();
        for vector in 0..=255u8 {
            let off = STUBS + 4 * u16::from(vector);
            assert_eq!(at(&rom, off, 4), &[0xe6, BIOS_PORT, 0xcf, 0x90]);
            assert_eq!(vector_of_stub(off + 2), Some(vector));
        }
    }

    #[test]
    fn nothing_else_is_a_trap() {
        let rom = build();
        let mut traps = 0;
        for ip in 0..=0xffffu16 {
            let is_out = ip >= 2 && at(&rom, ip - 2, 2) == [0xe6, BIOS_PORT];
            match trap_at(ip) {
                Some(_) => {
                    assert!(is_out, "IP {ip:#06x} is not after an out to the BIOS port");
                    traps += 1;
                }
                None => assert!(!is_out, "the out before {ip:#06x} is not recognised"),
            }
        }
        assert_eq!(traps, 256 + FIXED_ENTRY_POINTS.len() + 1);
    }

    #[test]
    fn data_vectors_point_at_tables_or_nowhere() {
        assert_eq!(ivt_entry(0x1e), (0xf000, 0xefc7));
        for v in [0x1d, 0x1f, 0x41, 0x43, 0x46] {
            assert_eq!(ivt_entry(v), (0, 0));
        }
        assert_eq!(ivt_entry(0x00), (0xf000, STUBS));
        assert_eq!(ivt_entry(0xff), (0xf000, STUBS + 4 * 255));
        let rom = build();
        assert_eq!(at(&rom, 0xefc7, 11), &DISKETTE_TABLE_BYTES);
        assert_eq!(rom[0xff53], 0xcf);
    }

    #[test]
    fn configuration_table_says_pc_at_with_rtc_and_ebda() {
        let rom = build();
        let t = at(&rom, CONFIG_TABLE, 10);
        assert_eq!(u16::from_le_bytes([t[0], t[1]]), 8);
        assert_eq!((t[2], t[3]), (0xfc, 0x01));
        assert_eq!(t[5] & 0x64, 0x64);
    }

    #[test]
    fn interrupt_tails_acknowledge_the_pics() {
        let rom = build();
        // int 1Ch falls through into the master EOI.
        assert_eq!(at(&rom, TIMER_TAIL, 2), &[0xcd, 0x1c]);
        assert_eq!(TIMER_TAIL + 2, EOI_MASTER);
        assert_eq!(
            at(&rom, EOI_MASTER, 7),
            &[0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf]
        );
        assert_eq!(at(&rom, EOI_SLAVE + 3, 4), &[0xe6, 0xa0, 0xe6, 0x20]);
        assert_eq!(
            at(&rom, RTC_TAIL + 1, 6),
            &[0xb0, 0x0c, 0xe6, 0x70, 0xe4, 0x71]
        );
        assert_eq!(rom[usize::from(RTC_TAIL) + RTC_TAIL_BYTES.len() - 1], 0xcf);
    }

    #[test]
    fn bios_port_is_not_a_platform_port() {
        use arch::layout::*;
        let port = u16::from(BIOS_PORT);
        let decoded = [
            (COM1_PORT, 8),
            (COM2_PORT, 8),
            (LPT1_PORT, 3),
            (RTC_PORT, 2),
            (I8042_DATA_PORT, 5),
            (POST_PORT, 1),
            (PORT92, 1),
            (PCI_CONFIG_PORT, 8),
            (PM_IO_BASE, PM_IO_LEN),
            (SMBUS_IO_BASE, 16),
            // The PICs, the PIT, both DMA controllers, the coprocessor.
            (0x00, 0x20),
            (0x20, 2),
            (0xa0, 2),
            (0x40, 4),
            (0xc0, 0x20),
            (0xf0, 0x10),
        ];
        for (base, len) in decoded {
            assert!(!(base..base + len).contains(&port), "{base:#x}+{len}");
        }
        // Delay and debug ports guests write on their own.
        assert!(![0x80, 0xe9, 0xeb, 0xed, 0xee, 0xef].contains(&port));
    }
}
