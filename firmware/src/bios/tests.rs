//! POST and the services, driven the way the ROM stubs drive them: the caller's registers, a
//! stack with the frame `int` pushed, and plain bytes for guest RAM.

use super::cpu::tests::TestMem;
use super::rom;
use super::spec::{bda, cmos, flags, TICKS_PER_DAY};
use super::*;
use arch::e820::{E820Entry, E820_RAM};
use arch::layout::MemoryLayout;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const SMAP: u32 = 0x534d_4150;

/// CMOS registers the test can look at after the BIOS wrote them.
#[derive(Clone)]
struct FakeCmos(Arc<Mutex<[u8; 128]>>);

impl FakeCmos {
    /// 2026-11-01 12:34:56, BCD, 24-hour.
    fn new() -> Self {
        let mut r = [0u8; 128];
        r[cmos::SECONDS as usize] = 0x56;
        r[cmos::MINUTES as usize] = 0x34;
        r[cmos::HOURS as usize] = 0x12;
        r[cmos::DAY_OF_MONTH as usize] = 0x01;
        r[cmos::MONTH as usize] = 0x11;
        r[cmos::YEAR as usize] = 0x26;
        r[cmos::CENTURY as usize] = 0x20;
        r[cmos::REG_B as usize] = cmos::B_24H;
        Self(Arc::new(Mutex::new(r)))
    }

    fn get(&self, i: u8) -> u8 {
        self.0.lock().unwrap()[usize::from(i)]
    }

    fn set(&self, i: u8, v: u8) {
        self.0.lock().unwrap()[usize::from(i)] = v;
    }
}

impl Cmos for FakeCmos {
    fn read(&mut self, index: u8) -> u8 {
        self.get(index & 0x7f)
    }

    fn write(&mut self, index: u8, value: u8) {
        self.set(index & 0x7f, value);
    }
}

fn boot_sector() -> [u8; 512] {
    let mut s = [0u8; 512];
    s[0] = 0xeb; // jmp short
    s[1] = 0xfe;
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// A guest: 2 MiB of test RAM with the VGA window as a hole, a BIOS for `ram` bytes of
/// configured memory, POST done.
struct Guest {
    bios: Bios,
    cmos: FakeCmos,
    mem: TestMem,
    out: Vec<u8>,
}

/// What a BIOS call left.
struct Outcome {
    regs: RealModeRegs,
    /// The FLAGS the stub's `iret` pops.
    flags: u16,
    result: Result<(), BiosError>,
}

impl Outcome {
    fn cf(&self) -> bool {
        self.flags & flags::CF != 0
    }

    fn zf(&self) -> bool {
        self.flags & flags::ZF != 0
    }
}

/// Where the caller's stack frame goes.
const STACK_SEG: u16 = 0x0000;
const STACK_TOP: u16 = 0x7000;
const CALLER_CS: u16 = 0x1234;
const CALLER_IP: u16 = 0x5678;

impl Guest {
    fn new(ram: u64) -> Self {
        Self::with_config(BiosConfig::new(&MemoryLayout::new(ram).unwrap()))
    }

    fn with_config(config: BiosConfig) -> Self {
        let cmos = FakeCmos::new();
        let mut g = Self {
            bios: Bios::new(config, Box::new(cmos.clone())),
            cmos,
            mem: TestMem::new(0x20_0000),
            out: Vec::new(),
        };
        g.mem.holes.push(0xa0000..0xc0000);
        let mut regs = RealModeRegs::default();
        g.bios
            .post(&mut g.mem, &mut regs, Some(&boot_sector()))
            .unwrap();
        g
    }

    /// A caller's registers: a stack at 0000:7000, everything else zero.
    fn caller() -> RealModeRegs {
        RealModeRegs {
            ss: STACK_SEG,
            esp: u32::from(STACK_TOP),
            ..Default::default()
        }
    }

    /// `int vector` with `regs` and FLAGS `pushed`: push the frame, enter the stub, run the
    /// service.
    fn int_flags(&mut self, vector: u8, mut regs: RealModeRegs, pushed: u16) -> Outcome {
        let sp = regs.sp().wrapping_sub(6);
        regs.set_sp(sp);
        let frame = [CALLER_IP, CALLER_CS, pushed];
        for (i, w) in frame.iter().enumerate() {
            let mut m = RealMem::new(&mut self.mem, self.bios.a20());
            // A stack outside RAM is the test's point in some cases: then the frame is lost.
            let _ = m.write_u16(regs.ss, sp.wrapping_add(2 * i as u16), *w);
        }
        regs.cs = rom::ROM_SEGMENT;
        regs.ip = rom::entry_point(vector) + 2;
        assert_eq!(rom::vector_of_stub(regs.ip), Some(vector));
        let out = &mut self.out;
        let result = self
            .bios
            .handle(vector, &mut regs, &mut self.mem, &mut |c| out.push(c));
        let m = RealMem::new(&mut self.mem, self.bios.a20());
        let flags = m.read_u16(regs.ss, sp.wrapping_add(4)).unwrap_or(0);
        Outcome {
            regs,
            flags,
            result,
        }
    }

    /// `int vector` with CF and ZF clear in the pushed FLAGS.
    fn int(&mut self, vector: u8, regs: RealModeRegs) -> Outcome {
        self.int_flags(vector, regs, flags::IF | flags::RESERVED_1)
    }

    /// `int vector` with CF and ZF set in the pushed FLAGS, to see a service clear them.
    fn int_cf(&mut self, vector: u8, regs: RealModeRegs) -> Outcome {
        self.int_flags(
            vector,
            regs,
            flags::IF | flags::RESERVED_1 | flags::CF | flags::ZF,
        )
    }

    fn bda_u8(&self, off: u16) -> u8 {
        self.mem.bytes[0x400 + usize::from(off)]
    }

    fn bda_u16(&self, off: u16) -> u16 {
        self.mem.u16_at(0x400 + usize::from(off))
    }

    fn bda_u32(&self, off: u16) -> u32 {
        self.mem.u32_at(0x400 + usize::from(off))
    }

    fn set_bda_u16(&mut self, off: u16, v: u16) {
        let a = 0x400 + usize::from(off);
        self.mem.bytes[a..a + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set_bda_u32(&mut self, off: u16, v: u32) {
        let a = 0x400 + usize::from(off);
        self.mem.bytes[a..a + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// The (row, column) of `page`'s cursor in the BIOS data area.
    fn cursor(&self, page: u8) -> (u8, u8) {
        let [col, row] = self
            .bda_u16(bda::CURSOR_POS + 2 * u16::from(page))
            .to_le_bytes();
        (row, col)
    }
}

// ---- POST ------------------------------------------------------------------------------------

#[test]
fn post_points_every_vector_at_its_stub() {
    let g = Guest::new(128 * MIB);
    let image = rom::build();
    for vector in 0..=255u8 {
        let off = g.mem.u16_at(4 * usize::from(vector));
        let seg = g.mem.u16_at(4 * usize::from(vector) + 2);
        assert_eq!((seg, off), rom::ivt_entry(vector), "INT {vector:02x}h");
        if rom::DATA_VECTORS.contains(&vector) {
            continue;
        }
        assert_eq!(seg, 0xf000);
        let at = usize::from(off);
        assert_eq!(&image[at..at + 3], &[0xe6, rom::BIOS_PORT, 0xcf]);
        assert_eq!(rom::vector_of_stub(off + 2), Some(vector));
    }
    // Vectors with a PC/AT entry point use it.
    assert_eq!(g.mem.u32_at(0x13 * 4), 0xf000_e3fe);
    assert_eq!(g.mem.u32_at(0x19 * 4), 0xf000_e6f2);
    assert_eq!(g.mem.u32_at(0x1e * 4), 0xf000_efc7);
    assert_eq!(
        g.mem.u32_at(0x20 * 4),
        0xf000_0000 | u32::from(rom::STUBS + 0x80)
    );
}

#[test]
fn post_fills_the_bios_data_area() {
    let mut config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    config.lpt = true;
    config.hard_disks = 1;
    let g = Guest::with_config(config);
    assert_eq!(g.bda_u16(bda::COM_PORTS), 0x3f8);
    assert_eq!(g.bda_u16(bda::COM_PORTS + 2), 0x2f8);
    assert_eq!(g.bda_u16(bda::COM_PORTS + 4), 0);
    assert_eq!(g.bda_u16(bda::LPT_PORTS), 0x378);
    assert_eq!(g.bda_u16(bda::EBDA_SEGMENT), 0x9fc0);
    // x87, PS/2 mouse, 80x25 colour, 2 serial ports, 1 parallel port.
    assert_eq!(g.bda_u16(bda::EQUIPMENT), 0x4426);
    assert_eq!(g.bda_u16(bda::MEMORY_KIB), 639);
    assert_eq!(g.bda_u16(bda::KBD_HEAD), 0x1e);
    assert_eq!(g.bda_u16(bda::KBD_TAIL), 0x1e);
    assert_eq!(g.bda_u16(bda::KBD_BUFFER_START), 0x1e);
    assert_eq!(g.bda_u16(bda::KBD_BUFFER_END_PTR), 0x3e);
    assert_eq!(g.bda_u8(bda::VIDEO_MODE), 3);
    assert_eq!(g.bda_u16(bda::VIDEO_COLUMNS), 80);
    assert_eq!(g.bda_u8(bda::VIDEO_ROWS), 24);
    assert_eq!(g.bda_u16(bda::CURSOR_TYPE), 0x0607);
    assert_eq!(g.bda_u16(bda::CRTC_BASE), 0x3d4);
    assert_eq!(g.bda_u8(bda::HARD_DISKS), 1);
    // 12:34:56 is 45296 s, at 1193182/65536 ticks per second.
    assert_eq!(g.bda_u32(bda::TICKS), 824_682);
    assert_eq!(g.bda_u8(bda::MIDNIGHT), 0);
    // The EBDA: 1 KiB at 0x9FC00, its size in its first byte.
    assert_eq!(g.mem.bytes[0x9fc00], 1);
}

#[test]
fn post_without_lpt_reports_no_parallel_port() {
    let g = Guest::new(64 * MIB);
    assert_eq!(g.bda_u16(bda::LPT_PORTS), 0);
    assert_eq!(g.bda_u16(bda::EQUIPMENT), 0x0426);
}

#[test]
fn post_again_clears_what_the_last_boot_left() {
    let mut g = Guest::new(64 * MIB);
    g.set_bda_u16(bda::SOFT_RESET, 0x1234);
    g.mem.bytes[0x400 + usize::from(bda::MIDNIGHT)] = 1;
    g.mem.bytes[0x9fc00 + 0x20] = 0x77;
    g.mem.bytes[0x21 * 4] = 0x99;
    let mut regs = RealModeRegs::default();
    g.bios
        .post(&mut g.mem, &mut regs, Some(&boot_sector()))
        .unwrap();
    assert_eq!(g.bda_u16(bda::SOFT_RESET), 0);
    assert_eq!(g.bda_u8(bda::MIDNIGHT), 0);
    assert_eq!(g.mem.bytes[0x9fc00 + 0x20], 0);
    assert_eq!(
        g.mem.u16_at(0x21 * 4),
        rom::ivt_entry(0x21).1,
        "a hooked vector is restored"
    );
}

#[test]
fn post_starts_the_boot_sector() {
    let mut g = Guest::new(64 * MIB);
    let mut regs = RealModeRegs {
        eax: 0xdead_beef,
        cs: 0xf000,
        ip: rom::POST_TRAP_IP,
        ..Default::default()
    };
    let mut sector = boot_sector();
    sector[2] = 0x42;
    g.bios.post(&mut g.mem, &mut regs, Some(&sector)).unwrap();
    assert_eq!(&g.mem.bytes[0x7c00..0x7e00], &sector[..]);
    assert_eq!((regs.cs, regs.ip), (0, 0x7c00));
    assert_eq!(regs.dl(), 0x80);
    assert_eq!((regs.ss, regs.sp()), (0, 0x7c00));
    assert_eq!((regs.ds, regs.es), (0, 0));
    assert_eq!(regs.eax, 0);
    assert_ne!(regs.flags & u32::from(flags::IF), 0);
    assert_ne!(regs.flags & 2, 0, "bit 1 of EFLAGS is always set");
}

#[test]
fn post_boots_the_configured_drive() {
    let mut config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    config.boot_drive = 0xe0;
    let mut g = Guest::with_config(config);
    let mut regs = RealModeRegs::default();
    g.bios
        .post(&mut g.mem, &mut regs, Some(&boot_sector()))
        .unwrap();
    assert_eq!(regs.dl(), 0xe0);
}

#[test]
fn post_refuses_a_sector_without_the_signature() {
    let mut g = Guest::new(64 * MIB);
    g.mem.bytes[0x7c00..0x7e00].fill(0);
    let before = RealModeRegs {
        cs: 0xf000,
        ip: rom::POST_TRAP_IP,
        ..Default::default()
    };
    let mut regs = before;
    let mut sector = boot_sector();
    sector[511] = 0x00;
    let err = g
        .bios
        .post(&mut g.mem, &mut regs, Some(&sector))
        .unwrap_err();
    assert_eq!(err, BiosError::NoBootSignature { found: 0x0055 });
    assert!(err.to_string().starts_with("no bootable device"));
    assert_eq!(regs, before, "the vCPU stays in the POST stub");
    assert!(g.mem.bytes[0x7c00..0x7e00].iter().all(|b| *b == 0));
    // The tables are there all the same.
    assert_eq!(g.bda_u16(bda::MEMORY_KIB), 639);

    let err = g.bios.post(&mut g.mem, &mut regs, None).unwrap_err();
    assert_eq!(err, BiosError::NoBootDevice);
    assert_eq!(err.to_string(), "no bootable device");
    assert_eq!(regs, before);
}

#[test]
fn post_into_too_little_memory_is_an_error() {
    let cmos = FakeCmos::new();
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut bios = Bios::new(config, Box::new(cmos));
    let mut mem = TestMem::new(0x480);
    let mut regs = RealModeRegs::default();
    let err = bios
        .post(&mut mem, &mut regs, Some(&boot_sector()))
        .unwrap_err();
    assert!(matches!(err, BiosError::PostMemory(_)), "{err}");
}

// ---- INT 15h E820 ----------------------------------------------------------------------------

fn e820_regs(ebx: u32, es: u16, di: u16, ecx: u32) -> RealModeRegs {
    RealModeRegs {
        eax: 0xe820,
        ebx,
        ecx,
        edx: SMAP,
        es,
        edi: u32::from(di),
        ..Guest::caller()
    }
}

fn entry_at(mem: &TestMem, addr: usize) -> E820Entry {
    E820Entry {
        addr: u64::from_le_bytes(mem.bytes[addr..addr + 8].try_into().unwrap()),
        size: u64::from_le_bytes(mem.bytes[addr + 8..addr + 16].try_into().unwrap()),
        kind: mem.u32_at(addr + 16),
    }
}

/// Every entry E820 returns, following the continuation from 0 to 0.
fn whole_map(g: &mut Guest) -> Vec<E820Entry> {
    let mut map = Vec::new();
    let mut ebx = 0;
    loop {
        let o = g.int_cf(0x15, e820_regs(ebx, 0x0800, 0x0000, 20));
        assert!(!o.cf(), "E820 failed at EBX={ebx}");
        assert_eq!(o.result, Ok(()));
        assert_eq!(o.regs.eax, SMAP);
        assert_eq!(o.regs.ecx, 20);
        map.push(entry_at(&g.mem, 0x8000));
        ebx = o.regs.ebx;
        if ebx == 0 {
            return map;
        }
        assert!(map.len() < 100, "the continuation never ends");
    }
}

#[test]
fn e820_returns_the_whole_map() {
    for ram in [16 * MIB, 128 * MIB, 6 * GIB] {
        let layout = MemoryLayout::new(ram).unwrap();
        let mut g = Guest::new(ram);
        assert_eq!(whole_map(&mut g), arch::e820::entries(&layout), "{ram:#x}");
    }
}

#[test]
fn e820_continues_from_ebx() {
    let mut g = Guest::new(128 * MIB);
    let map = g.bios.config().e820.clone();
    let o = g.int_cf(0x15, e820_regs(2, 0x0800, 0x0010, 20));
    assert!(!o.cf());
    assert_eq!(o.regs.ebx, 3);
    assert_eq!(entry_at(&g.mem, 0x8010), map[2]);
    let last = (map.len() - 1) as u32;
    let o = g.int_cf(0x15, e820_regs(last, 0x0800, 0x0000, 20));
    assert!(!o.cf());
    assert_eq!(o.regs.ebx, 0, "the last entry ends the walk");
}

#[test]
fn e820_past_the_end_fails() {
    let mut g = Guest::new(128 * MIB);
    let len = g.bios.config().e820.len() as u32;
    for ebx in [len, len + 1, 0xffff_ffff] {
        let o = g.int(0x15, e820_regs(ebx, 0x0800, 0, 20));
        assert!(o.cf(), "EBX={ebx:#x}");
        assert_eq!(o.regs.ah(), 0x86);
        assert_eq!(o.result, Ok(()));
    }
}

#[test]
fn e820_checks_the_signature_and_buffer_size() {
    let mut g = Guest::new(128 * MIB);
    g.mem.bytes[0x8000..0x8020].fill(0xee);
    let mut bad = e820_regs(0, 0x0800, 0, 20);
    bad.edx = 0x534d_4151;
    let o = g.int(0x15, bad);
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x86);
    assert_eq!(o.regs.ebx, 0);
    let o = g.int(0x15, e820_regs(0, 0x0800, 0, 19));
    assert!(o.cf());
    assert!(g.mem.bytes[0x8000..0x8020].iter().all(|b| *b == 0xee));
}

#[test]
fn e820_writes_20_or_24_bytes_as_asked() {
    let mut g = Guest::new(128 * MIB);
    let first = g.bios.config().e820[0];
    for ecx in [20, 23] {
        g.mem.bytes[0x8000..0x8020].fill(0xee);
        let o = g.int_cf(0x15, e820_regs(0, 0x0800, 0, ecx));
        assert!(!o.cf());
        assert_eq!(o.regs.ecx, 20);
        assert_eq!(entry_at(&g.mem, 0x8000), first);
        assert!(g.mem.bytes[0x8014..0x8020].iter().all(|b| *b == 0xee));
    }
    for ecx in [24, 0x100] {
        g.mem.bytes[0x8000..0x8020].fill(0xee);
        let o = g.int_cf(0x15, e820_regs(0, 0x0800, 0, ecx));
        assert!(!o.cf());
        assert_eq!(o.regs.ecx, 24);
        assert_eq!(entry_at(&g.mem, 0x8000), first);
        assert_eq!(g.mem.u32_at(0x8014), 1, "extended attributes: enabled");
        assert!(g.mem.bytes[0x8018..0x8020].iter().all(|b| *b == 0xee));
    }
}

#[test]
fn e820_into_a_buffer_outside_ram_fails_cleanly() {
    let mut g = Guest::new(128 * MIB);
    let o = g.int(0x15, e820_regs(1, 0xa000, 0x0100, 20));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x86);
    assert_eq!(o.regs.ebx, 1, "the continuation is not advanced");
    assert!(matches!(
        o.result,
        Err(BiosError::Memory { vector: 0x15, .. })
    ));
    // Straddling the end of RAM.
    let o = g.int(0x15, e820_regs(0, 0x9fff, 0x0008, 20));
    assert!(o.cf());
    assert!(o.result.is_err());
}

#[test]
fn e820_buffer_wraps_like_real_mode() {
    // Offset wrap inside the segment: 1000:FFF8 + 20 bytes.
    let mut g = Guest::new(128 * MIB);
    let first = g.bios.config().e820[0];
    let o = g.int_cf(0x15, e820_regs(0, 0x1000, 0xfff8, 20));
    assert!(!o.cf());
    let mut bytes = g.mem.bytes[0x1fff8..0x20000].to_vec();
    bytes.extend_from_slice(&g.mem.bytes[0x10000..0x1000c]);
    assert_eq!(&bytes[..8], &first.addr.to_le_bytes());
    assert_eq!(&bytes[8..16], &first.size.to_le_bytes());
    assert_eq!(&bytes[16..20], &first.kind.to_le_bytes());

    // FFFF:0008 with A20 off wraps to 0 after 8 bytes; with A20 on it goes above 1 MiB.
    g.bios.set_a20(false);
    g.mem.bytes[0x100000..0x100010].fill(0xee);
    let o = g.int_cf(0x15, e820_regs(3, 0xffff, 0x0008, 20));
    assert!(!o.cf());
    let entry = g.bios.config().e820[3];
    assert_eq!(&g.mem.bytes[0xffff8..0x100000], &entry.addr.to_le_bytes());
    assert_eq!(&g.mem.bytes[0..8], &entry.size.to_le_bytes());
    assert!(g.mem.bytes[0x100000..0x100010].iter().all(|b| *b == 0xee));

    g.bios.set_a20(true);
    let o = g.int_cf(0x15, e820_regs(3, 0xffff, 0x0008, 20));
    assert!(!o.cf());
    assert_eq!(entry_at(&g.mem, 0xffff8), entry);
}

// ---- INT 15h E801h, 88h, C0h, A20, EC00h, 86h, unknown ---------------------------------------

fn ax_regs(ax: u16) -> RealModeRegs {
    RealModeRegs {
        eax: 0xabcd_0000 | u32::from(ax),
        ..Guest::caller()
    }
}

#[test]
fn e801_and_88_report_extended_memory() {
    // (RAM, E801 AX/CX KiB 1-16 MiB, E801 BX/DX 64 KiB blocks above 16 MiB, 88h KiB)
    let cases = [
        (16 * MIB, 0x3c00, 0, 0x3c00),
        (32 * MIB, 0x3c00, 256, 0x7c00),
        (64 * MIB, 0x3c00, 768, 0xfc00),
        (128 * MIB, 0x3c00, 1792, 0xffff),
        (3584 * MIB, 0x3c00, 0xdf00, 0xffff),
        // Above 4 GiB counts for neither (E820 reports it).
        (6 * GIB, 0x3c00, 0xdf00, 0xffff),
    ];
    for (ram, low, high, kib) in cases {
        let mut g = Guest::new(ram);
        let o = g.int_cf(0x15, ax_regs(0xe801));
        assert!(!o.cf());
        assert_eq!((o.regs.ax(), o.regs.cx()), (low, low), "{ram:#x}");
        assert_eq!((o.regs.bx(), o.regs.dx()), (high, high), "{ram:#x}");
        assert_eq!(o.regs.eax >> 16, 0xabcd, "the upper half of EAX is kept");
        let o = g.int_cf(0x15, ax_regs(0x8800));
        assert!(!o.cf());
        assert_eq!(o.regs.ax(), kib, "{ram:#x}");
    }
}

#[test]
fn extended_memory_without_ram_at_1_mib_is_zero() {
    let config = BiosConfig {
        e820: vec![E820Entry {
            addr: 0,
            size: 0x9fc00,
            kind: E820_RAM,
        }],
        lpt: false,
        hard_disks: 0,
        boot_drive: 0x80,
    };
    let mut g = Guest::with_config(config);
    let o = g.int_cf(0x15, ax_regs(0xe801));
    assert_eq!((o.regs.ax(), o.regs.bx()), (0, 0));
    let o = g.int_cf(0x15, ax_regs(0x8800));
    assert_eq!(o.regs.ax(), 0);
}

#[test]
fn c0_points_at_the_configuration_table() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int_cf(0x15, ax_regs(0xc000));
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
    assert_eq!((o.regs.es, o.regs.bx()), (0xf000, rom::CONFIG_TABLE));
    let image = rom::build();
    let t = usize::from(o.regs.bx());
    assert_eq!(&image[t..t + 10], &rom::CONFIG_TABLE_BYTES);
}

#[test]
fn a20_calls_report_enabled_and_supported() {
    let mut g = Guest::new(64 * MIB);
    for ax in [0x2400, 0x2401] {
        let o = g.int_cf(0x15, ax_regs(ax));
        assert!(!o.cf(), "{ax:#x}");
        assert_eq!(o.regs.ah(), 0);
    }
    let o = g.int_cf(0x15, ax_regs(0x2402));
    assert!(!o.cf());
    assert_eq!(o.regs.ax(), 0x0001);
    let o = g.int_cf(0x15, ax_regs(0x2403));
    assert!(!o.cf());
    assert_eq!((o.regs.ah(), o.regs.bx()), (0, 0x0003));
    let o = g.int(0x15, ax_regs(0x2404));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x86);
}

#[test]
fn ec00_and_wait_succeed() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0xec00);
    r.set_bl(2);
    let o = g.int_cf(0x15, r);
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
    let mut r = ax_regs(0x8600);
    r.set_cx(0x000f);
    r.set_dx(0x4240);
    let o = g.int_cf(0x15, r);
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
}

#[test]
fn unknown_int15_functions_fail_with_86h() {
    let mut g = Guest::new(64 * MIB);
    for ax in [0xc200, 0x5300, 0xe881, 0xec01, 0x0000] {
        let mut r = ax_regs(ax);
        r.ebx = 0x1111_2222;
        let o = g.int(0x15, r);
        assert!(o.cf(), "{ax:#x}");
        assert_eq!(o.regs.ah(), 0x86);
        assert_eq!(o.regs.al(), ax as u8);
        assert_eq!(o.regs.ebx, 0x1111_2222);
        assert_eq!(o.result, Ok(()));
    }
}

// ---- INT 11h, 12h ----------------------------------------------------------------------------

#[test]
fn int11_and_int12_read_the_bios_data_area() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int(0x11, ax_regs(0));
    assert_eq!(o.regs.ax(), 0x0426);
    let o = g.int(0x12, ax_regs(0));
    assert_eq!(o.regs.ax(), 639);
    // A guest that lowered its memory size (a boot-sector virus, a RAM disk) is believed.
    g.set_bda_u16(bda::MEMORY_KIB, 600);
    assert_eq!(g.int(0x12, ax_regs(0)).regs.ax(), 600);
}

// ---- INT 10h ---------------------------------------------------------------------------------

fn teletype(g: &mut Guest, text: &[u8]) {
    for c in text {
        let o = g.int(0x10, ax_regs(0x0e00 | u16::from(*c)));
        assert_eq!(o.result, Ok(()));
        assert_eq!(o.flags, flags::IF | flags::RESERVED_1, "FLAGS untouched");
    }
}

#[test]
fn teletype_writes_and_moves_the_cursor() {
    let mut g = Guest::new(64 * MIB);
    teletype(&mut g, b"Hi");
    assert_eq!(g.cursor(0), (0, 2));
    teletype(&mut g, b"\r\n");
    assert_eq!(g.cursor(0), (1, 0));
    teletype(&mut g, b"ab\x08");
    assert_eq!(g.cursor(0), (1, 1));
    teletype(&mut g, b"\x07");
    assert_eq!(g.cursor(0), (1, 1), "BEL does not move the cursor");
    teletype(&mut g, b"\r\x08");
    assert_eq!(g.cursor(0), (1, 0), "BS stops at the left margin");
    assert_eq!(g.out, b"Hi\r\nab\x08\x07\r\x08");
}

#[test]
fn teletype_wraps_lines_and_scrolls_at_the_bottom() {
    let mut g = Guest::new(64 * MIB);
    teletype(&mut g, &[b'x'; 79]);
    assert_eq!(g.cursor(0), (0, 79));
    teletype(&mut g, b"x");
    assert_eq!(g.cursor(0), (1, 0));
    let mut r = ax_regs(0x0200);
    r.set_dx(0x1800); // row 24, column 0
    g.int(0x10, r).result.unwrap();
    teletype(&mut g, b"\n");
    assert_eq!(g.cursor(0), (24, 0));
    teletype(&mut g, &[b'y'; 81]);
    assert_eq!(g.cursor(0), (24, 1));
}

#[test]
fn teletype_survives_a_garbled_bios_data_area() {
    let mut g = Guest::new(64 * MIB);
    g.set_bda_u16(bda::CURSOR_POS, 0xffff);
    g.set_bda_u16(bda::VIDEO_COLUMNS, 0);
    g.mem.bytes[0x400 + usize::from(bda::VIDEO_ROWS)] = 0xff;
    g.mem.bytes[0x400 + usize::from(bda::ACTIVE_PAGE)] = 0xff;
    teletype(&mut g, b"ok\n");
    g.set_bda_u16(bda::VIDEO_COLUMNS, 0xffff);
    teletype(&mut g, b"ok\n");
}

#[test]
fn cursor_position_set_and_get() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0x0200);
    r.set_dx(0x0c28); // row 12, column 40
    g.int(0x10, r).result.unwrap();
    assert_eq!(g.cursor(0), (12, 40));
    // Page 1 has its own cursor.
    let mut r = ax_regs(0x0200);
    r.set_bh(1);
    r.set_dx(0x0305);
    g.int(0x10, r).result.unwrap();
    assert_eq!(g.cursor(1), (3, 5));
    assert_eq!(g.cursor(0), (12, 40));

    let o = g.int(0x10, ax_regs(0x0300));
    assert_eq!(o.regs.dx(), 0x0c28);
    assert_eq!(o.regs.cx(), 0x0607, "cursor on scan lines 6-7");
    let mut r = ax_regs(0x0300);
    r.set_bh(1);
    assert_eq!(g.int(0x10, r).regs.dx(), 0x0305);

    let mut r = ax_regs(0x0100);
    r.set_cx(0x2000); // cursor off
    g.int(0x10, r).result.unwrap();
    assert_eq!(g.int(0x10, ax_regs(0x0300)).regs.cx(), 0x2000);
}

#[test]
fn video_mode_is_80_column_colour_text() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0x0f00);
    r.set_bh(0x55);
    let o = g.int(0x10, r);
    assert_eq!((o.regs.al(), o.regs.ah(), o.regs.bh()), (3, 80, 0));
}

#[test]
fn write_string_with_and_without_cursor_update() {
    let mut g = Guest::new(64 * MIB);
    g.mem.bytes[0x9000..0x9005].copy_from_slice(b"Hello");
    let string = |al: u8, cx: u16, dx: u16| {
        let mut r = ax_regs(0x1300 | u16::from(al));
        r.set_bx(0x0007);
        r.set_cx(cx);
        r.set_dx(dx);
        r.es = 0x0900;
        r.set_bp(0x0000);
        r
    };
    // AL=0: the cursor comes back.
    g.int(0x10, string(0, 5, 0x0203)).result.unwrap();
    assert_eq!(g.out, b"Hello");
    assert_eq!(g.cursor(0), (0, 0));
    // AL=1: the cursor stays after the string.
    g.out.clear();
    g.int(0x10, string(1, 5, 0x0203)).result.unwrap();
    assert_eq!(g.out, b"Hello");
    assert_eq!(g.cursor(0), (2, 8));
    // AL=3: character/attribute pairs.
    g.mem.bytes[0x9000..0x9006].copy_from_slice(b"O\x1fK\x1f!\x4e");
    g.out.clear();
    g.int(0x10, string(3, 3, 0x0000)).result.unwrap();
    assert_eq!(g.out, b"OK!");
    assert_eq!(g.cursor(0), (0, 3));
    // On a page that is not shown: the cursor moves, nothing is printed.
    g.out.clear();
    let mut r = string(1, 2, 0x0100);
    r.set_bh(2);
    g.int(0x10, r).result.unwrap();
    assert!(g.out.is_empty());
    assert_eq!(g.cursor(2), (1, 2));
    // A string outside RAM: an error, nothing printed, no panic.
    let mut r = string(1, 0xffff, 0);
    r.es = 0xa000;
    let o = g.int(0x10, r);
    assert!(matches!(
        o.result,
        Err(BiosError::Memory { vector: 0x10, .. })
    ));
    assert!(g.out.is_empty());
}

#[test]
fn unknown_video_functions_do_nothing() {
    let mut g = Guest::new(64 * MIB);
    for ax in [0x0003, 0x0600, 0x1130, 0x1200, 0x4f00] {
        let r = RealModeRegs {
            ebx: 0x10,
            ..ax_regs(ax)
        };
        let o = g.int_cf(0x10, r);
        assert_eq!(o.result, Ok(()));
        let mut expected = r;
        expected.cs = 0xf000;
        expected.ip = rom::entry_point(0x10) + 2;
        expected.set_sp(r.sp() - 6);
        assert_eq!(o.regs, expected, "{ax:#x}");
        assert!(o.cf() && o.zf(), "FLAGS untouched");
    }
    assert!(g.out.is_empty());
}

// ---- INT 1Ah and the timer tick --------------------------------------------------------------

#[test]
fn tick_count_read_and_set() {
    let mut g = Guest::new(64 * MIB);
    g.set_bda_u32(bda::TICKS, 0x0012_3456);
    let o = g.int_cf(0x1a, ax_regs(0x0000));
    assert!(!o.cf());
    assert_eq!((o.regs.cx(), o.regs.dx(), o.regs.al()), (0x0012, 0x3456, 0));

    let mut r = ax_regs(0x0100);
    r.set_cx(0x0001);
    r.set_dx(0x0002);
    g.mem.bytes[0x400 + usize::from(bda::MIDNIGHT)] = 1;
    g.int(0x1a, r).result.unwrap();
    assert_eq!(g.bda_u32(bda::TICKS), 0x0001_0002);
    assert_eq!(g.bda_u8(bda::MIDNIGHT), 0);
}

#[test]
fn timer_interrupt_counts_and_rolls_over_at_midnight() {
    let mut g = Guest::new(64 * MIB);
    g.set_bda_u32(bda::TICKS, 100);
    let o = g.int(0x08, ax_regs(0));
    assert_eq!(o.result, Ok(()));
    assert_eq!(g.bda_u32(bda::TICKS), 101);
    assert_eq!(
        o.regs.ip,
        rom::TIMER_TAIL,
        "returns through INT 1Ch and the EOI"
    );
    assert_eq!(o.regs.cs, 0xf000);

    g.set_bda_u32(bda::TICKS, TICKS_PER_DAY - 1);
    g.int(0x08, ax_regs(0)).result.unwrap();
    assert_eq!(g.bda_u32(bda::TICKS), 0);
    assert_eq!(g.bda_u8(bda::MIDNIGHT), 1);

    // INT 1Ah AH=00h reports the rollover once.
    let o = g.int(0x1a, ax_regs(0x0000));
    assert_eq!((o.regs.cx(), o.regs.dx(), o.regs.al()), (0, 0, 1));
    let o = g.int(0x1a, ax_regs(0x0000));
    assert_eq!(o.regs.al(), 0);
}

#[test]
fn hardware_interrupts_without_a_service_are_acknowledged() {
    let mut g = Guest::new(64 * MIB);
    for v in 0x09..=0x0f {
        assert_eq!(
            g.int(v, ax_regs(0)).regs.ip,
            rom::EOI_MASTER,
            "INT {v:02x}h"
        );
    }
    assert_eq!(g.int(0x70, ax_regs(0)).regs.ip, rom::RTC_TAIL);
    for v in 0x71..=0x77 {
        assert_eq!(g.int(v, ax_regs(0)).regs.ip, rom::EOI_SLAVE, "INT {v:02x}h");
    }
    // Software vectors return through their own stub's iret.
    for v in [0x1c, 0x4a, 0x60, 0xff] {
        let o = g.int(v, ax_regs(0));
        assert_eq!(o.regs.ip, rom::entry_point(v) + 2, "INT {v:02x}h");
        assert_eq!(o.result, Ok(()));
    }
}

#[test]
fn rtc_time_and_date_in_bcd() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int_cf(0x1a, ax_regs(0x0200));
    assert!(!o.cf());
    assert_eq!((o.regs.cx(), o.regs.dx()), (0x1234, 0x5600));
    let o = g.int_cf(0x1a, ax_regs(0x0400));
    assert!(!o.cf());
    assert_eq!((o.regs.cx(), o.regs.dx()), (0x2026, 0x1101));

    // Binary mode with daylight saving: converted to BCD.
    g.cmos
        .set(cmos::REG_B, cmos::B_24H | cmos::B_DM_BINARY | cmos::B_DSE);
    g.cmos.set(cmos::HOURS, 23);
    g.cmos.set(cmos::MINUTES, 59);
    g.cmos.set(cmos::SECONDS, 7);
    g.cmos.set(cmos::YEAR, 99);
    g.cmos.set(cmos::CENTURY, 19);
    g.cmos.set(cmos::MONTH, 12);
    g.cmos.set(cmos::DAY_OF_MONTH, 31);
    let o = g.int(0x1a, ax_regs(0x0200));
    assert_eq!((o.regs.cx(), o.regs.dx()), (0x2359, 0x0701));
    let o = g.int(0x1a, ax_regs(0x0400));
    assert_eq!((o.regs.cx(), o.regs.dx()), (0x1999, 0x1231));

    // 12-hour BCD: 12 AM is 00, 1 PM is 13, 12 PM is 12.
    g.cmos.set(cmos::REG_B, 0);
    for (raw, hours) in [(0x12, 0x00), (0x81, 0x13), (0x92, 0x12), (0x11, 0x11)] {
        g.cmos.set(cmos::HOURS, raw);
        assert_eq!(g.int(0x1a, ax_regs(0x0200)).regs.ch(), hours, "{raw:#x}");
    }

    // Halted for setting: CF.
    g.cmos.set(cmos::REG_B, cmos::B_SET | cmos::B_24H);
    assert!(g.int(0x1a, ax_regs(0x0200)).cf());
    assert!(g.int(0x1a, ax_regs(0x0400)).cf());
}

#[test]
fn rtc_time_and_date_can_be_set() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0x0300);
    r.set_cx(0x0809);
    r.set_dx(0x1001);
    assert!(!g.int_cf(0x1a, r).cf());
    assert_eq!(
        (
            g.cmos.get(cmos::HOURS),
            g.cmos.get(cmos::MINUTES),
            g.cmos.get(cmos::SECONDS)
        ),
        (0x08, 0x09, 0x10)
    );
    assert_eq!(g.cmos.get(cmos::REG_B), cmos::B_24H | cmos::B_DSE);
    let mut r = ax_regs(0x0500);
    r.set_cx(0x2027);
    r.set_dx(0x0229);
    assert!(!g.int_cf(0x1a, r).cf());
    assert_eq!(g.cmos.get(cmos::CENTURY), 0x20);
    assert_eq!(g.cmos.get(cmos::YEAR), 0x27);
    assert_eq!(g.cmos.get(cmos::MONTH), 0x02);
    assert_eq!(g.cmos.get(cmos::DAY_OF_MONTH), 0x29);
    assert_eq!(g.cmos.get(cmos::REG_B) & cmos::B_SET, 0);
    let o = g.int(0x1a, ax_regs(0x0400));
    assert_eq!((o.regs.cx(), o.regs.dx()), (0x2027, 0x0229));
}

#[test]
fn unknown_int1a_functions_set_carry() {
    let mut g = Guest::new(64 * MIB);
    for ax in [0x0600, 0x0a00, 0xb101] {
        let o = g.int(0x1a, ax_regs(ax));
        assert!(o.cf(), "{ax:#x}");
        assert_eq!(o.regs.ax(), ax);
    }
}

// ---- Guest-controlled stacks and registers ---------------------------------------------------

#[test]
fn stack_pointer_near_zero_wraps_inside_the_segment() {
    let mut g = Guest::new(64 * MIB);
    // SP=2: the frame is at SS:FFFC, FLAGS at SS:0000.
    let mut r = ax_regs(0xe801);
    r.ss = 0x3000;
    r.set_sp(0x0002);
    let o = g.int_cf(0x15, r);
    assert_eq!(o.result, Ok(()));
    assert!(!o.cf());
    assert_eq!(g.mem.u16_at(0x30000) & flags::CF, 0);
    assert_eq!(o.regs.sp(), 0xfffc);
}

#[test]
fn a_stack_outside_ram_is_reported_not_fatal() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0xe801);
    r.ss = 0xb000;
    let o = g.int(0x15, r);
    assert!(matches!(
        o.result,
        Err(BiosError::Memory {
            vector: 0x15,
            ax: 0xe801,
            ..
        })
    ));
    // The answer is in the registers all the same.
    assert_eq!(o.regs.ax(), 0x3c00);
}

#[test]
fn no_register_values_make_a_service_panic() {
    let mut g = Guest::new(128 * MIB);
    g.mem.holes.push(0x10_0000..0x10_8000);
    // A small xorshift generator: deterministic, enough to reach the edge cases.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let edges = [
        0x0000u16, 0x0001, 0x0002, 0x0004, 0x7fff, 0xfffc, 0xfffe, 0xffff,
    ];
    for i in 0..20_000 {
        let v = next();
        let pick = |x: u64| {
            if x & 1 == 0 {
                edges[((x >> 1) % edges.len() as u64) as usize]
            } else {
                (x >> 8) as u16
            }
        };
        let vector = match i % 5 {
            0 => 0x10,
            1 => 0x15,
            2 => 0x1a,
            3 => [0x08, 0x11, 0x12, 0x70, 0x13][(v % 5) as usize],
            _ => v as u8,
        };
        let regs = RealModeRegs {
            eax: next() as u32,
            ebx: next() as u32 % 40,
            ecx: next() as u32,
            edx: if v & 2 == 0 { SMAP } else { next() as u32 },
            esi: next() as u32,
            edi: u32::from(pick(next())),
            ebp: u32::from(pick(next())),
            esp: u32::from(pick(next())),
            es: pick(next()),
            ds: pick(next()),
            ss: pick(next()),
            ..Default::default()
        };
        g.bios.set_a20(v & 4 == 0);
        let _ = g.int(vector, regs);
        // Keep the BIOS data area sane enough for the next call to mean something; the
        // services must cope either way.
        if i % 1000 == 0 {
            let mut r = RealModeRegs::default();
            g.bios
                .post(&mut g.mem, &mut r, Some(&boot_sector()))
                .unwrap();
        }
    }
}
