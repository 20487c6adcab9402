//! POST and the services, driven the way the ROM stubs drive them: the caller's registers, a
//! stack with the frame `int` pushed, and plain bytes for guest RAM.

use super::cpu::tests::TestMem;
use super::rom;
use super::spec::{bda, cmos, flags, TICKS_PER_DAY};
use super::*;
use arch::e820::{E820Entry, E820_RAM};
use arch::layout::MemoryLayout;
use std::collections::{BTreeMap, VecDeque};
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

/// A disk image in memory; clones share the bytes, so a test can look at what the BIOS wrote.
#[derive(Clone)]
struct FakeDisk {
    kind: DiskKind,
    bytes: Arc<Mutex<Vec<u8>>>,
    read_only: bool,
    /// Reads and writes fail, as a broken image file would.
    broken: bool,
    flushes: Arc<Mutex<usize>>,
}

impl FakeDisk {
    fn new(kind: DiskKind, len: usize) -> Self {
        Self {
            kind,
            bytes: Arc::new(Mutex::new(vec![0; len])),
            read_only: kind == DiskKind::Cdrom,
            broken: false,
            flushes: Arc::new(Mutex::new(0)),
        }
    }

    /// A hard disk of `sectors` sectors, each filled with its LBA's low byte, sector 0 a boot
    /// sector.
    fn hard_disk(sectors: usize) -> Self {
        let d = Self::new(DiskKind::HardDisk, sectors * 512);
        {
            let mut b = d.bytes.lock().unwrap();
            for (i, s) in b.chunks_exact_mut(512).enumerate() {
                s.fill(i as u8);
            }
            b[..512].copy_from_slice(&boot_sector());
        }
        d
    }

    fn boxed(&self) -> Option<Box<dyn BiosDisk>> {
        Some(Box::new(self.clone()))
    }

    fn put(&self, at: usize, data: &[u8]) {
        self.bytes.lock().unwrap()[at..at + data.len()].copy_from_slice(data);
    }

    fn get(&self, at: usize, len: usize) -> Vec<u8> {
        self.bytes.lock().unwrap()[at..at + len].to_vec()
    }
}

impl BiosDisk for FakeDisk {
    fn kind(&self) -> DiskKind {
        self.kind
    }

    fn sectors(&self) -> u64 {
        self.bytes.lock().unwrap().len() as u64 / 512
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), String> {
        assert_eq!(buf.len() % 512, 0, "whole sectors only");
        let b = self.bytes.lock().unwrap();
        let at = lba as usize * 512;
        if self.broken || at + buf.len() > b.len() {
            return Err(format!("cannot read sector {lba}"));
        }
        buf.copy_from_slice(&b[at..at + buf.len()]);
        Ok(())
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), String> {
        assert_eq!(data.len() % 512, 0, "whole sectors only");
        assert!(!self.read_only, "the BIOS wrote to a read-only disk");
        let mut b = self.bytes.lock().unwrap();
        let at = lba as usize * 512;
        if self.broken || at + data.len() > b.len() {
            return Err(format!("cannot write sector {lba}"));
        }
        b[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> Result<(), String> {
        *self.flushes.lock().unwrap() += 1;
        Ok(())
    }
}

/// The I/O bus: COM1 (what the BIOS sent, what the "user" typed), the i8042's data port and a
/// small PCI configuration space on bus 0, over mechanism 1.
#[derive(Default)]
struct FakePorts {
    com1: Vec<u8>,
    rx: VecDeque<u8>,
    scancodes: VecDeque<u8>,
    /// devfn -> 256 bytes of configuration space.
    pci: BTreeMap<u8, [u8; 256]>,
    cf8: u32,
    /// Every write but COM1's, in order: (port, value).
    writes: Vec<(u16, u32)>,
}

impl FakePorts {
    /// The configuration space and offset CF8h selects.
    fn selected(&mut self) -> Option<(&mut [u8; 256], usize)> {
        let a = self.cf8;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xff != 0 {
            return None;
        }
        let reg = (a & 0xfc) as usize;
        self.pci.get_mut(&((a >> 8) as u8)).map(|c| (c, reg))
    }

    /// Adds a function: vendor, device, class code (class, subclass, interface), header type.
    fn add_pci(&mut self, devfn: u8, vendor: u16, device: u16, class: u32, header: u8) {
        let mut c = [0u8; 256];
        c[0..2].copy_from_slice(&vendor.to_le_bytes());
        c[2..4].copy_from_slice(&device.to_le_bytes());
        c[8..12].copy_from_slice(&(class << 8 | 0x01).to_le_bytes());
        c[0x0e] = header;
        self.pci.insert(devfn, c);
    }
}

impl IoPorts for FakePorts {
    fn inb(&mut self, port: u16) -> u8 {
        match port {
            0x3fd => 0x60 | u8::from(!self.rx.is_empty()),
            0x3f8 => self.rx.pop_front().unwrap_or(0),
            0x60 => self.scancodes.pop_front().unwrap_or(0),
            0xcfc..=0xcff => {
                let i = usize::from(port - 0xcfc);
                self.selected().map_or(0xff, |(c, r)| c[r + i])
            }
            _ => 0xff,
        }
    }

    fn outb(&mut self, port: u16, value: u8) {
        if port == 0x3f8 {
            self.com1.push(value);
            return;
        }
        self.writes.push((port, u32::from(value)));
        if let 0xcfc..=0xcff = port {
            let i = usize::from(port - 0xcfc);
            if let Some((c, r)) = self.selected() {
                c[r + i] = value;
            }
        }
    }

    fn inl(&mut self, port: u16) -> u32 {
        match port {
            0xcf8 => self.cf8,
            0xcfc => self.selected().map_or(0xffff_ffff, |(c, r)| {
                u32::from_le_bytes(c[r..r + 4].try_into().unwrap())
            }),
            _ => 0xffff_ffff,
        }
    }

    fn outl(&mut self, port: u16, value: u32) {
        self.writes.push((port, value));
        match port {
            0xcf8 => self.cf8 = value,
            0xcfc => {
                if let Some((c, r)) = self.selected() {
                    c[r..r + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
            _ => {}
        }
    }
}

/// A guest: 2 MiB of test RAM with the VGA window as a hole, a BIOS for `ram` bytes of
/// configured memory with its drives, POST done.
struct Guest {
    bios: Bios,
    cmos: FakeCmos,
    mem: TestMem,
    ports: FakePorts,
    post: Result<RealModeRegs, BiosError>,
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
    /// A guest with one 1 MiB hard disk (primary master) that boots.
    fn new(ram: u64) -> Self {
        let disk = FakeDisk::hard_disk(2048);
        Self::with_disks(
            BiosConfig::new(&MemoryLayout::new(ram).unwrap()),
            vec![disk.boxed()],
        )
    }

    fn with_config(config: BiosConfig) -> Self {
        Self::with_disks(config, vec![FakeDisk::hard_disk(2048).boxed()])
    }

    fn with_disks(config: BiosConfig, disks: Vec<Option<Box<dyn BiosDisk>>>) -> Self {
        Self::build(config, disks, true)
    }

    /// `vga_hole`: whether B800h is a hole (as in kettle today) or RAM (a VGA's buffer).
    fn build(config: BiosConfig, disks: Vec<Option<Box<dyn BiosDisk>>>, vga_hole: bool) -> Self {
        let cmos = FakeCmos::new();
        let mut g = Self {
            bios: Bios::new(config, Box::new(cmos.clone()), disks),
            cmos,
            mem: TestMem::new(0x20_0000),
            ports: FakePorts::default(),
            post: Err(BiosError::PostMemory(MemError { addr: 0, len: 0 })),
        };
        if vga_hole {
            g.mem.holes.push(0xa0000..0xc0000);
        }
        g.run_post();
        g
    }

    /// Runs POST (again); keeps the registers it left, or its error.
    fn run_post(&mut self) {
        let mut regs = RealModeRegs {
            cs: 0xf000,
            ip: rom::POST_TRAP_IP,
            ..Default::default()
        };
        self.post = self
            .bios
            .post(&mut self.mem, &mut regs, &mut self.ports)
            .map(|()| regs);
    }

    /// The console output so far, as text, and forget it.
    fn console(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.ports.com1)).into_owned()
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
        let result = self
            .bios
            .handle(vector, &mut regs, &mut self.mem, &mut self.ports);
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
        if rom::USER_HOOKS.contains(&vector) {
            assert_eq!(
                image[usize::from(off)],
                0xcf,
                "INT {vector:02x}h: a bare iret"
            );
            continue;
        }
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
    g.run_post();
    assert!(g.post.is_ok());
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
    let disk = FakeDisk::hard_disk(2048);
    disk.put(2, &[0x42]);
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let g = Guest::with_disks(config, vec![disk.boxed()]);
    let regs = g.post.clone().unwrap();
    assert_eq!(&g.mem.bytes[0x7c00..0x7e00], &disk.get(0, 512)[..]);
    assert_eq!(g.mem.bytes[0x7c02], 0x42);
    assert_eq!((regs.cs, regs.ip), (0, 0x7c00));
    assert_eq!(regs.dl(), 0x80);
    assert_eq!((regs.ss, regs.sp()), (0, 0x7c00));
    assert_eq!((regs.ds, regs.es), (0, 0));
    assert_eq!(regs.eax, 0);
    assert_ne!(regs.flags & u32::from(flags::IF), 0);
    assert_ne!(regs.flags & 2, 0, "bit 1 of EFLAGS is always set");
    assert_eq!(g.bda_u8(bda::HARD_DISKS), 1);
}

#[test]
fn post_refuses_a_sector_without_the_signature() {
    let disk = FakeDisk::hard_disk(2048);
    disk.put(511, &[0x00]);
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![disk.boxed()]);
    let err = g.post.clone().unwrap_err();
    let BiosError::NoBootDevice { attempts } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        attempts,
        &[
            BootAttempt {
                device: BootDevice::Disk,
                failure: BootFailure::NoSignature { found: 0x0055 },
            },
            BootAttempt {
                device: BootDevice::Cdrom,
                failure: BootFailure::NoCdrom,
            },
        ]
    );
    assert!(err
        .to_string()
        .starts_with("no bootable device; disk: no boot signature"));
    assert!(g.mem.bytes[0x7c00..0x7e00].iter().all(|b| *b == 0));
    // The tables are there all the same, and the console says what happened.
    assert_eq!(g.bda_u16(bda::MEMORY_KIB), 639);
    assert_eq!(
        g.console(),
        "kettle BIOS: boot from disk failed: no boot signature (the boot sector ends in 0x0055, \
         not 0xaa55)\r\nkettle BIOS: boot from CD-ROM failed: no CD-ROM drive\r\n\
         kettle BIOS: no bootable device\r\n"
    );
}

#[test]
fn post_without_drives_says_no_bootable_device() {
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![]);
    assert!(matches!(g.post, Err(BiosError::NoBootDevice { .. })));
    assert!(g.console().ends_with("kettle BIOS: no bootable device\r\n"));
    assert_eq!(g.bda_u8(bda::HARD_DISKS), 0);
}

#[test]
fn post_into_too_little_memory_is_an_error() {
    let cmos = FakeCmos::new();
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut bios = Bios::new(
        config,
        Box::new(cmos),
        vec![FakeDisk::hard_disk(16).boxed()],
    );
    let mut mem = TestMem::new(0x480);
    let mut regs = RealModeRegs::default();
    let err = bios
        .post(&mut mem, &mut regs, &mut FakePorts::default())
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
        boot_order: vec![BootDevice::Disk],
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
    assert_eq!(g.ports.com1, b"Hi\r\nab\x08\x07\r\x08");
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
    assert_eq!(g.ports.com1, b"Hello");
    assert_eq!(g.cursor(0), (0, 0));
    // AL=1: the cursor stays after the string.
    g.ports.com1.clear();
    g.int(0x10, string(1, 5, 0x0203)).result.unwrap();
    assert_eq!(g.ports.com1, b"Hello");
    assert_eq!(g.cursor(0), (2, 8));
    // AL=3: character/attribute pairs.
    g.mem.bytes[0x9000..0x9006].copy_from_slice(b"O\x1fK\x1f!\x4e");
    g.ports.com1.clear();
    g.int(0x10, string(3, 3, 0x0000)).result.unwrap();
    assert_eq!(g.ports.com1, b"OK!");
    assert_eq!(g.cursor(0), (0, 3));
    // On a page that is not shown: the cursor moves, nothing is printed.
    g.ports.com1.clear();
    let mut r = string(1, 2, 0x0100);
    r.set_bh(2);
    g.int(0x10, r).result.unwrap();
    assert!(g.ports.com1.is_empty());
    assert_eq!(g.cursor(2), (1, 2));
    // A string outside RAM: an error, nothing printed, no panic.
    let mut r = string(1, 0xffff, 0);
    r.es = 0xa000;
    let o = g.int(0x10, r);
    assert!(matches!(
        o.result,
        Err(BiosError::Memory { vector: 0x10, .. })
    ));
    assert!(g.ports.com1.is_empty());
}

#[test]
fn unknown_video_functions_do_nothing() {
    let mut g = Guest::new(64 * MIB);
    for ax in [0x0004, 0x0b00, 0x1000, 0x1130, 0x1200, 0x4f00] {
        let r = RealModeRegs {
            ebx: 0x11,
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
    assert!(g.ports.com1.is_empty());
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
    for v in 0x0a..=0x0f {
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
    for ax in [0x0600, 0x0a00, 0xb0ff] {
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
            3 => [0x08, 0x09, 0x11, 0x12, 0x70, 0x13, 0x13, 0x16, 0x18, 0x19][(v % 10) as usize],
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
            g.run_post();
            g.post.as_ref().unwrap();
        }
    }
}

// ---- INT 13h, hard disks ---------------------------------------------------------------------

fn disk_regs(ax: u16, dl: u8) -> RealModeRegs {
    let mut r = ax_regs(ax);
    r.eax = u32::from(ax);
    r.set_dl(dl);
    r
}

/// CHS read/write regs: AL count, cylinder/head/sector, buffer ES:BX.
fn chs_regs(ah: u8, count: u8, cyl: u16, head: u8, sector: u8, es: u16, bx: u16) -> RealModeRegs {
    let mut r = disk_regs(u16::from(ah) << 8 | u16::from(count), 0x80);
    r.set_ch(cyl as u8);
    r.set_cl(((cyl >> 2) as u8 & 0xc0) | sector);
    r.set_dh(head);
    r.es = es;
    r.set_bx(bx);
    r
}

#[test]
fn geometry_is_the_lba_assisted_translation() {
    use super::disk::Geometry;
    let chs = |sectors: u64| {
        let g = Geometry::of(sectors);
        (g.cylinders, g.heads, g.sectors)
    };
    assert_eq!(chs(2048), (2, 16, 63));
    assert_eq!(chs(1024 * 16 * 63), (1024, 16, 63));
    // Up to 17 tracks of 1024 stay at 16 heads, their cylinders clipped at 1024 (SeaBIOS too).
    assert_eq!(chs(1024 * 16 * 63 + 63), (1024, 16, 63));
    assert_eq!(chs(1024 * 17 * 63), (544, 32, 63));
    assert_eq!(
        chs(1 << 21),
        (1024, 32, 63),
        "1 GiB: 33288 tracks, 32 of 1024 each"
    );
    assert_eq!(chs(1 << 22), (520, 128, 63), "2 GiB");
    assert_eq!(chs(1 << 23), (522, 255, 63), "4 GiB");
    assert_eq!(chs(1024 * 255 * 63), (1024, 255, 63));
    assert_eq!(chs(1 << 40), (1024, 255, 63));
    assert_eq!(chs(10), (1, 16, 63), "a tiny disk still has a cylinder");
}

#[test]
fn int13_parameters_match_the_chs_reads() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int_cf(0x13, disk_regs(0x0800, 0x80));
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
    // 2 cylinders (max 1), 63 sectors, 16 heads (max 15), 1 drive.
    assert_eq!(
        (o.regs.ch(), o.regs.cl(), o.regs.dh(), o.regs.dl()),
        (1, 63, 15, 1)
    );
    // Cylinder 1, head 2, sector 3: LBA (1*16+2)*63+2 = 1136.
    let o = g.int_cf(0x13, chs_regs(0x02, 2, 1, 2, 3, 0x0800, 0x0000));
    assert!(!o.cf());
    assert_eq!((o.regs.ah(), o.regs.al()), (0, 2));
    assert!(g.mem.bytes[0x8000..0x8200]
        .iter()
        .all(|b| *b == 1136u32 as u8));
    assert!(g.mem.bytes[0x8200..0x8400]
        .iter()
        .all(|b| *b == 1137u32 as u8));
    assert_eq!(g.bda_u8(bda::DISK_STATUS), 0);
    // Verify does not touch memory.
    let o = g.int_cf(0x13, chs_regs(0x04, 5, 0, 0, 1, 0xa000, 0));
    assert!(!o.cf());
    assert_eq!(o.regs.al(), 5);
}

#[test]
fn int13_chs_out_of_range_fails() {
    let mut g = Guest::new(64 * MIB);
    // (count, cylinder, head, sector, AH)
    let cases = [
        (1, 0, 0, 0, 0x01),    // sector 0
        (1, 0, 0, 64, 0x01),   // past the track
        (1, 0, 16, 1, 0x01),   // head 16
        (1, 2, 0, 1, 0x01),    // cylinder 2 of 2
        (0, 0, 0, 1, 0x01),    // nothing
        (129, 0, 0, 1, 0x01),  // more than 128
        (128, 1, 15, 1, 0x04), // runs past the end of the disk
    ];
    for (count, cyl, head, sector, status) in cases {
        g.mem.bytes[0x8000..0x8010].fill(0xee);
        let o = g.int(0x13, chs_regs(0x02, count, cyl, head, sector, 0x0800, 0));
        assert!(o.cf(), "{count} {cyl}/{head}/{sector}");
        assert_eq!((o.regs.ah(), o.regs.al()), (status, 0));
        assert_eq!(g.bda_u8(bda::DISK_STATUS), status);
        assert!(g.mem.bytes[0x8000..0x8010].iter().all(|b| *b == 0xee));
        // AH=01h reports it, and CF.
        let o = g.int(0x13, disk_regs(0x0100, 0x80));
        assert_eq!(o.regs.ah(), status);
        assert!(o.cf());
    }
    let o = g.int(0x13, {
        let mut r = chs_regs(0x0c, 0, 2, 0, 1, 0, 0);
        r.set_al(0);
        r
    });
    assert!(o.cf(), "seek to a cylinder that is not there");
}

#[test]
fn int13_chs_buffer_past_the_segment_end_is_a_boundary_error() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int(0x13, chs_regs(0x02, 2, 0, 0, 1, 0x0800, 0xff00));
    assert!(o.cf());
    assert_eq!((o.regs.ah(), o.regs.al()), (0x09, 0));
    // Exactly to the end is fine.
    let o = g.int_cf(0x13, chs_regs(0x02, 2, 0, 0, 1, 0x0800, 0xfc00));
    assert!(!o.cf());
    assert_eq!(o.regs.al(), 2);
    // A buffer that is not RAM: an error to the guest and to the VMM.
    let o = g.int(0x13, chs_regs(0x02, 2, 0, 0, 1, 0x9fe0, 0));
    assert!(o.cf());
    assert_eq!((o.regs.ah(), o.regs.al()), (0x01, 1), "one sector made it");
    assert!(matches!(
        o.result,
        Err(BiosError::Memory { vector: 0x13, .. })
    ));
}

#[test]
fn int13_chs_write_lands_and_is_flushed() {
    let disk = FakeDisk::hard_disk(2048);
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![disk.boxed()]);
    g.mem.bytes[0x8000..0x8400].fill(0x5a);
    let o = g.int_cf(0x13, chs_regs(0x03, 2, 0, 1, 1, 0x0800, 0));
    assert!(!o.cf());
    assert_eq!(o.regs.al(), 2);
    assert!(disk.get(63 * 512, 1024).iter().all(|b| *b == 0x5a));
    assert_eq!(disk.get(65 * 512, 1)[0], 65);
    assert_eq!(*disk.flushes.lock().unwrap(), 1);
}

#[test]
fn int13_write_to_a_read_only_disk_is_write_protected() {
    let mut disk = FakeDisk::hard_disk(2048);
    disk.read_only = true;
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![disk.boxed()]);
    let o = g.int(0x13, chs_regs(0x03, 1, 0, 0, 1, 0x0800, 0));
    assert!(o.cf());
    assert_eq!((o.regs.ah(), o.regs.al()), (0x03, 0));
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(1, 0x0000, 0x0800, 0));
    let o = g.int(0x13, dap_regs(0x4300, 0x80, 0x6000));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x03);
    assert_eq!(g.mem.u16_at(0x6002), 0, "nothing written");
}

#[test]
fn int13_image_errors_are_reported() {
    let mut disk = FakeDisk::hard_disk(2048);
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![disk.boxed()]);
    disk.broken = true;
    g.bios = Bios::new(
        g.bios.config().clone(),
        Box::new(g.cmos.clone()),
        vec![disk.boxed()],
    );
    let o = g.int(0x13, chs_regs(0x02, 1, 0, 0, 1, 0x0800, 0));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x04);
    assert!(matches!(
        o.result,
        Err(BiosError::Disk {
            drive: 0x80,
            lba: 0,
            ..
        })
    ));
    let o = g.int(0x13, chs_regs(0x03, 1, 0, 0, 1, 0x0800, 0));
    assert_eq!(o.regs.ah(), 0xcc);
}

#[test]
fn int13_absent_drives() {
    let mut g = Guest::new(64 * MIB);
    for (ax, dl) in [
        (0x0800, 0x81),
        (0x0200, 0x81),
        (0x0800, 0x00),
        (0x0201, 0x00),
        (0x4100, 0xe0),
    ] {
        let o = g.int(0x13, disk_regs(ax, dl));
        assert!(o.cf(), "{ax:#x} {dl:#x}");
        assert_eq!(o.regs.ah(), 0x01);
        assert_eq!(o.result, Ok(()));
    }
    // AH=15h: "no such drive" is an answer, not an error.
    let o = g.int_cf(0x13, disk_regs(0x1500, 0x81));
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
    let o = g.int_cf(0x13, disk_regs(0x1500, 0x80));
    assert!(!o.cf());
    assert_eq!((o.regs.ah(), o.regs.cx(), o.regs.dx()), (0x03, 0, 2048));
}

#[test]
fn int13_edd_installation_check() {
    let mut g = Guest::new(64 * MIB);
    let mut r = disk_regs(0x4100, 0x80);
    r.set_bx(0x55aa);
    let o = g.int_cf(0x13, r);
    assert!(!o.cf());
    assert_eq!(
        (o.regs.ah(), o.regs.bx(), o.regs.cx()),
        (0x30, 0xaa55, 0x0007)
    );
    let mut r = disk_regs(0x4100, 0x80);
    r.set_bx(0x1234);
    assert!(g.int(0x13, r).cf());
}

/// A disk address packet: count, buffer seg:off, LBA (the 10h form).
fn dap(count: u16, off: u16, seg: u16, lba: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 0x10;
    p[2..4].copy_from_slice(&count.to_le_bytes());
    p[4..6].copy_from_slice(&off.to_le_bytes());
    p[6..8].copy_from_slice(&seg.to_le_bytes());
    p[8..16].copy_from_slice(&lba.to_le_bytes());
    p
}

fn dap_regs(ax: u16, dl: u8, si: u16) -> RealModeRegs {
    let mut r = disk_regs(ax, dl);
    r.ds = 0;
    r.set_si(si);
    r
}

#[test]
fn int13_extended_read_through_a_packet() {
    let mut g = Guest::new(64 * MIB);
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(3, 0x0010, 0x0900, 5));
    let o = g.int_cf(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(!o.cf());
    assert_eq!(o.regs.ah(), 0);
    for (i, lba) in [5u8, 6, 7].iter().enumerate() {
        let at = 0x9010 + i * 512;
        assert!(g.mem.bytes[at..at + 512].iter().all(|b| b == lba));
    }
    assert_eq!(g.mem.u16_at(0x6002), 3);
    // A real-mode buffer runs on past its segment's end, linearly: 127 blocks from 0900:F000.
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(127, 0xf000, 0x0900, 0));
    let o = g.int_cf(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(!o.cf());
    assert_eq!(g.mem.bytes[0x18000 + 126 * 512], 126);
}

#[test]
fn int13_packet_with_a_flat_buffer() {
    let mut g = Guest::new(64 * MIB);
    let mut p = [0u8; 24];
    p[..16].copy_from_slice(&dap(2, 0xffff, 0xffff, 9));
    p[0] = 0x18;
    p[16..24].copy_from_slice(&0x10_0200u64.to_le_bytes());
    g.mem.bytes[0x6000..0x6018].copy_from_slice(&p);
    let o = g.int_cf(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(!o.cf());
    assert!(g.mem.bytes[0x10_0200..0x10_0400].iter().all(|b| *b == 9));
    assert!(g.mem.bytes[0x10_0400..0x10_0600].iter().all(|b| *b == 10));
    // FFFF:FFFF in the short form: there is no flat address to use.
    p[0] = 0x10;
    g.mem.bytes[0x6000..0x6018].copy_from_slice(&p);
    let o = g.int(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x01);
}

#[test]
fn int13_malformed_packets_fail_without_a_transfer() {
    let mut g = Guest::new(64 * MIB);
    // (packet, AH, count left in the packet)
    let mut small = dap(1, 0, 0x0800, 0);
    small[0] = 0x0f;
    let cases = [
        (dap(128, 0, 0x0800, 0), 0x01, 0),
        (dap(0xffff, 0, 0x0800, 0), 0x01, 0),
        (dap(1, 0, 0x0800, 2048), 0x04, 0),
        (dap(2, 0, 0x0800, 2047), 0x04, 0),
        (dap(1, 0, 0x0800, u64::MAX), 0x04, 0),
        (small, 0x01, 1),
    ];
    for (p, status, left) in cases {
        g.mem.bytes[0x8000..0x8010].fill(0xee);
        g.mem.bytes[0x6000..0x6010].copy_from_slice(&p);
        let o = g.int(0x13, dap_regs(0x4200, 0x80, 0x6000));
        assert!(o.cf());
        assert_eq!(o.regs.ah(), status, "{p:02x?}");
        assert_eq!(g.mem.u16_at(0x6002), left);
        assert!(g.mem.bytes[0x8000..0x8010].iter().all(|b| *b == 0xee));
    }
    // The packet itself outside RAM.
    let o = g.int(0x13, {
        let mut r = dap_regs(0x4200, 0x80, 0);
        r.ds = 0xa000;
        r
    });
    assert!(o.cf());
    assert!(o.result.is_err());
}

#[test]
fn int13_packet_buffer_outside_ram_counts_what_was_done() {
    let mut g = Guest::new(64 * MIB);
    // Block 0 fits below the VGA hole, block 1 does not.
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(3, 0xfe00, 0x9000, 4));
    let o = g.int(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x01);
    assert_eq!(g.mem.u16_at(0x6002), 1);
    assert!(matches!(
        o.result,
        Err(BiosError::Memory {
            vector: 0x13,
            ax: 0x4200,
            ..
        })
    ));
    assert!(g.mem.bytes[0x9fe00..0xa0000].iter().all(|b| *b == 4));
    // Flat, far beyond RAM.
    let mut p = [0u8; 24];
    p[..16].copy_from_slice(&dap(1, 0xffff, 0xffff, 0));
    p[0] = 0x18;
    p[16..24].copy_from_slice(&0xffff_ffff_ffff_fe00u64.to_le_bytes());
    g.mem.bytes[0x6000..0x6018].copy_from_slice(&p);
    let o = g.int(0x13, dap_regs(0x4200, 0x80, 0x6000));
    assert!(o.cf());
    assert_eq!(g.mem.u16_at(0x6002), 0);
}

#[test]
fn int13_extended_write_verify_and_seek() {
    let disk = FakeDisk::hard_disk(2048);
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, vec![disk.boxed()]);
    g.mem.bytes[0x8000..0x8400].fill(0xa5);
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(2, 0, 0x0800, 100));
    let o = g.int_cf(0x13, dap_regs(0x4300, 0x80, 0x6000));
    assert!(!o.cf());
    assert!(disk.get(100 * 512, 1024).iter().all(|b| *b == 0xa5));
    assert_eq!(disk.get(102 * 512, 1)[0], 102);
    for ax in [0x4400, 0x4700] {
        let o = g.int_cf(0x13, dap_regs(ax, 0x80, 0x6000));
        assert!(!o.cf(), "{ax:#x}");
    }
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(0, 0, 0x0800, 2048));
    assert!(
        g.int(0x13, dap_regs(0x4700, 0x80, 0x6000)).cf(),
        "seek past the end"
    );
    // Eject a fixed disk: not removable. Lock/unlock and media change succeed.
    assert_eq!(g.int(0x13, disk_regs(0x4600, 0x80)).regs.ah(), 0xb2);
    assert!(!g.int_cf(0x13, disk_regs(0x4500, 0x80)).cf());
    assert!(!g.int_cf(0x13, disk_regs(0x4900, 0x80)).cf());
}

#[test]
fn int13_extended_parameters_in_three_sizes() {
    let disks = vec![None, FakeDisk::hard_disk(2048).boxed()];
    let config = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    let mut g = Guest::with_disks(config, disks);
    for (asked, got) in [
        (0x1a, 0x1a),
        (0x1d, 0x1a),
        (0x1e, 0x1e),
        (0x41, 0x1e),
        (0x4a, 0x42),
    ] {
        g.mem.bytes[0x6000..0x6060].fill(0xee);
        g.mem.bytes[0x6000..0x6002].copy_from_slice(&(asked as u16).to_le_bytes());
        let o = g.int_cf(0x13, dap_regs(0x4800, 0x80, 0x6000));
        assert!(!o.cf(), "{asked:#x}");
        let b = &g.mem.bytes[0x6000..0x6060];
        assert_eq!(g.mem.u16_at(0x6000), got);
        assert_eq!(g.mem.u16_at(0x6002), 0x0002, "CHS valid, fixed");
        assert_eq!(
            (
                g.mem.u32_at(0x6004),
                g.mem.u32_at(0x6008),
                g.mem.u32_at(0x600c)
            ),
            (2, 16, 63)
        );
        assert_eq!(u64::from_le_bytes(b[0x10..0x18].try_into().unwrap()), 2048);
        assert_eq!(g.mem.u16_at(0x6018), 512);
        assert_eq!(b[usize::from(got)], 0xee, "nothing past the buffer");
        if got >= 0x1e {
            assert_eq!(g.mem.u32_at(0x601a), 0xffff_ffff, "no DPTE");
        }
        if got == 0x42 {
            assert_eq!(g.mem.u16_at(0x601e), 0xbedd);
            assert_eq!(b[0x20], 0x24);
            assert_eq!(&b[0x24..0x28], b"ISA ");
            assert_eq!(&b[0x28..0x30], b"ATA     ");
            assert_eq!(g.mem.u16_at(0x6030), 0x1f0, "primary channel");
            assert_eq!(b[0x38], 1, "slave");
            let sum = b[0x1e..0x42].iter().fold(0u8, |s, x| s.wrapping_add(*x));
            assert_eq!(sum, 0, "device path checksum");
        }
    }
    g.mem.bytes[0x6000..0x6002].copy_from_slice(&0x10u16.to_le_bytes());
    let o = g.int(0x13, dap_regs(0x4800, 0x80, 0x6000));
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x01);
}

// ---- El Torito and the boot order ------------------------------------------------------------

/// What the El Torito test image holds.
struct IsoSpec {
    blocks: usize,
    catalog: u32,
    indicator: u8,
    media: u8,
    load_segment: u16,
    count: u16,
    rba: u32,
    break_checksum: bool,
}

impl Default for IsoSpec {
    fn default() -> Self {
        Self {
            blocks: 32,
            catalog: 20,
            indicator: 0x88,
            media: 0,
            load_segment: 0,
            count: 4,
            rba: 21,
            break_checksum: false,
        }
    }
}

/// An ISO 9660 image with an El Torito boot record, catalog and a boot image whose bytes count
/// up from 0x40 per 512-byte sector.
fn iso(spec: IsoSpec) -> FakeDisk {
    let d = FakeDisk::new(DiskKind::Cdrom, spec.blocks * 2048);
    let mut record = [0u8; 2048];
    record[1..6].copy_from_slice(b"CD001");
    record[6] = 1;
    record[7..30].copy_from_slice(b"EL TORITO SPECIFICATION");
    record[0x47..0x4b].copy_from_slice(&spec.catalog.to_le_bytes());
    if spec.blocks > 17 {
        d.put(17 * 2048, &record);
    }
    let mut cat = [0u8; 64];
    cat[0] = 1;
    cat[4..10].copy_from_slice(b"kettle");
    cat[30] = 0x55;
    cat[31] = 0xaa;
    let sum = cat[..32].chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    let check = 0u16
        .wrapping_sub(sum)
        .wrapping_add(u16::from(spec.break_checksum));
    cat[28..30].copy_from_slice(&check.to_le_bytes());
    cat[32] = spec.indicator;
    cat[33] = spec.media;
    cat[34..36].copy_from_slice(&spec.load_segment.to_le_bytes());
    cat[38..40].copy_from_slice(&spec.count.to_le_bytes());
    cat[40..44].copy_from_slice(&spec.rba.to_le_bytes());
    if (spec.catalog as usize) < spec.blocks {
        d.put(spec.catalog as usize * 2048, &cat);
    }
    for i in 0..8 {
        let at = spec.rba as usize * 2048 + i * 512;
        if at + 512 <= spec.blocks * 2048 {
            d.put(at, &[0x40 + i as u8; 512]);
        }
    }
    d
}

fn config_with(order: &[BootDevice]) -> BiosConfig {
    let mut c = BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap());
    c.boot_order = order.to_vec();
    c
}

/// The disks in the usual places: a hard disk at primary master, a CD at secondary master.
fn disk_and_cd(disk: Option<FakeDisk>, cd: FakeDisk) -> Vec<Option<Box<dyn BiosDisk>>> {
    vec![disk.and_then(|d| d.boxed()), None, cd.boxed()]
}

#[test]
fn cd_boots_without_emulation() {
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Disk, BootDevice::Cdrom]),
        disk_and_cd(None, iso(IsoSpec::default())),
    );
    let regs = g.post.clone().unwrap();
    assert_eq!((regs.cs, regs.ip, regs.dl()), (0x07c0, 0, 0xe0));
    assert_eq!((regs.ss, regs.sp()), (0, 0x7c00));
    for i in 0..4 {
        assert_eq!(g.mem.bytes[0x7c00 + i * 512], 0x40 + i as u8);
    }
    assert_eq!(
        g.mem.bytes[0x7c00 + 4 * 512],
        0,
        "only the sector count is loaded"
    );
    assert_eq!(
        g.console(),
        "kettle BIOS: boot from disk failed: no hard disk\r\n"
    );
    assert_eq!(g.bda_u8(bda::HARD_DISKS), 0);

    // The specification packet.
    let o = g.int_cf(0x13, dap_regs(0x4b01, 0xe0, 0x6000));
    assert!(!o.cf());
    let p = &g.mem.bytes[0x6000..0x6013];
    assert_eq!(
        &p[..4],
        &[0x13, 0x00, 0xe0, 0x01],
        "size, no emulation, drive, channel 1"
    );
    assert_eq!(g.mem.u32_at(0x6004), 21);
    assert_eq!(g.mem.u16_at(0x6008), 0, "master");
    assert_eq!(g.mem.u16_at(0x600c), 0x07c0);
    assert_eq!(g.mem.u16_at(0x600e), 4);
    assert!(!g.int_cf(0x13, dap_regs(0x4b00, 0x7f, 0x6000)).cf());
}

#[test]
fn what_booted_is_kept_in_guest_memory_across_a_restore() {
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Cdrom, BootDevice::Disk]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), iso(IsoSpec::default())),
    );
    assert_eq!(g.post.clone().unwrap().dl(), 0xe0);
    let packet = |g: &mut Guest| {
        let o = g.int_cf(0x13, dap_regs(0x4b01, 0xe0, 0x6000));
        assert!(!o.cf());
        g.mem.bytes[0x6000..0x6013].to_vec()
    };
    let before = packet(&mut g);
    // A restored VM gets a new BIOS over the saved memory: it knows the boot from the EBDA.
    g.bios = Bios::new(
        config_with(&[BootDevice::Cdrom, BootDevice::Disk]),
        Box::new(g.cmos.clone()),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), iso(IsoSpec::default())),
    );
    g.mem.bytes[0x6000..0x6013].fill(0);
    assert_eq!(packet(&mut g), before);
    // INT 18h goes on with the device after the CD: the disk.
    let o = g.int(0x18, ax_regs(0));
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.regs.dl(), 0x80);
    // Now the disk booted: no El Torito boot is in effect any more.
    assert!(g.int(0x13, dap_regs(0x4b01, 0xe0, 0x6000)).cf());
    // Whatever the guest writes over the record reads back as no record, never a crash.
    let at = (arch::layout::EBDA_START + 0x200) as usize;
    g.mem.bytes[at..at + 12].copy_from_slice(&[
        b'K', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    let o = g.int_cf(0x13, dap_regs(0x4b01, 0xe0, 0x6000));
    assert!(!o.cf(), "a packet is written, whatever it says");
    let o = g.int(0x18, ax_regs(0));
    assert!(matches!(o.result, Err(BiosError::NoBootDevice { .. })));
}

#[test]
fn cd_drive_reads_2048_byte_blocks() {
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Cdrom]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), iso(IsoSpec::default())),
    );
    g.post.as_ref().unwrap();
    let mut r = disk_regs(0x4100, 0xe0);
    r.set_bx(0x55aa);
    let o = g.int_cf(0x13, r);
    assert!(!o.cf());
    assert_eq!(o.regs.bx(), 0xaa55);
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(2, 0, 0x0800, 21));
    let o = g.int_cf(0x13, dap_regs(0x4200, 0xe0, 0x6000));
    assert!(!o.cf());
    for i in 0..8 {
        assert_eq!(g.mem.bytes[0x8000 + i * 512], 0x40 + i as u8);
    }
    g.mem.bytes[0x6000..0x6010].copy_from_slice(&dap(1, 0, 0x0800, 32));
    assert!(
        g.int(0x13, dap_regs(0x4200, 0xe0, 0x6000)).cf(),
        "past the end"
    );
    g.mem.bytes[0x6000..0x6002].copy_from_slice(&0x42u16.to_le_bytes());
    let o = g.int_cf(0x13, dap_regs(0x4800, 0xe0, 0x6000));
    assert!(!o.cf());
    assert_eq!(g.mem.u16_at(0x6018), 2048);
    assert_eq!(g.mem.u32_at(0x6010), 32);
    assert_eq!(&g.mem.bytes[0x6028..0x6030], b"ATAPI   ");
    assert_eq!(g.mem.u16_at(0x6030), 0x170);
    // Writes and CHS calls do not apply.
    assert_eq!(g.int(0x13, dap_regs(0x4300, 0xe0, 0x6000)).regs.ah(), 0x03);
    assert_eq!(g.int(0x13, disk_regs(0x0201, 0xe0)).regs.ah(), 0x01);
    assert_eq!(g.int(0x13, disk_regs(0x0800, 0xe0)).regs.ah(), 0x01);
    // The hard disk is still 80h.
    assert!(!g.int_cf(0x13, disk_regs(0x0800, 0x80)).cf());
}

#[test]
fn boot_order_is_followed() {
    let cd = iso(IsoSpec::default());
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Cdrom, BootDevice::Disk]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), cd.clone()),
    );
    assert_eq!(g.post.clone().unwrap().dl(), 0xe0);
    assert!(g.console().is_empty());
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Disk, BootDevice::Cdrom]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), cd),
    );
    assert_eq!(g.post.clone().unwrap().dl(), 0x80);
    // INT 13h AX=4B01h: not a CD boot.
    assert!(g.int(0x13, dap_regs(0x4b01, 0xe0, 0x6000)).cf());
}

#[test]
fn broken_el_torito_images_are_refused() {
    let cases: Vec<(IsoSpec, BootFailure)> = vec![
        (
            IsoSpec {
                break_checksum: true,
                ..Default::default()
            },
            BootFailure::BadValidationEntry("checksum"),
        ),
        (
            IsoSpec {
                catalog: 40,
                ..Default::default()
            },
            BootFailure::CatalogOutside { sector: 40 },
        ),
        (
            IsoSpec {
                catalog: u32::MAX,
                ..Default::default()
            },
            BootFailure::CatalogOutside { sector: u32::MAX },
        ),
        (
            IsoSpec {
                count: 0xffff,
                ..Default::default()
            },
            BootFailure::BadImage {
                lba: 21,
                sectors: 0xffff,
                problem: "runs past the end of the image",
            },
        ),
        (
            IsoSpec {
                count: 0,
                ..Default::default()
            },
            BootFailure::BadImage {
                lba: 21,
                sectors: 0,
                problem: "is empty",
            },
        ),
        (
            IsoSpec {
                rba: u32::MAX,
                ..Default::default()
            },
            BootFailure::BadImage {
                lba: u32::MAX,
                sectors: 4,
                problem: "runs past the end of the image",
            },
        ),
        (
            IsoSpec {
                load_segment: 0x9f00,
                count: 8,
                ..Default::default()
            },
            BootFailure::BadImage {
                lba: 21,
                sectors: 8,
                problem: "does not fit in conventional memory",
            },
        ),
        (
            IsoSpec {
                load_segment: 0x0010,
                ..Default::default()
            },
            BootFailure::BadImage {
                lba: 21,
                sectors: 4,
                problem: "does not fit in conventional memory",
            },
        ),
        (
            IsoSpec {
                indicator: 0,
                ..Default::default()
            },
            BootFailure::NotBootable(0),
        ),
        (
            IsoSpec {
                media: 2,
                ..Default::default()
            },
            BootFailure::Emulation("1.44 MB diskette"),
        ),
        (
            IsoSpec {
                blocks: 17,
                ..Default::default()
            },
            BootFailure::NoBootRecord,
        ),
    ];
    for (spec, failure) in cases {
        let mut g = Guest::with_disks(
            config_with(&[BootDevice::Cdrom]),
            disk_and_cd(None, iso(spec)),
        );
        let Err(BiosError::NoBootDevice { attempts }) = g.post.clone() else {
            panic!("booted despite {failure}");
        };
        assert_eq!(attempts[0].failure, failure);
        let text = g.console();
        assert!(
            text.starts_with(&format!(
                "kettle BIOS: boot from CD-ROM failed: {failure}\r\n"
            )),
            "{text}"
        );
        assert!(text.ends_with("kettle BIOS: no bootable device\r\n"));
        assert!(g.mem.bytes[0x7c00..0x7e00].iter().all(|b| *b == 0));
    }
    // A broken catalog on the CD, a good disk after it: the disk boots.
    let cd = iso(IsoSpec {
        break_checksum: true,
        ..Default::default()
    });
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Cdrom, BootDevice::Disk]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), cd),
    );
    assert_eq!(g.post.clone().unwrap().dl(), 0x80);
    assert!(g.console().contains("checksum"));
}

#[test]
fn int19_boots_again_and_int18_tries_the_next_device() {
    let mut g = Guest::with_disks(
        config_with(&[BootDevice::Disk, BootDevice::Cdrom]),
        disk_and_cd(Some(FakeDisk::hard_disk(2048)), iso(IsoSpec::default())),
    );
    g.mem.bytes[0x7c00..0x7e00].fill(0);
    let o = g.int(0x19, ax_regs(0));
    assert_eq!(o.result, Ok(()));
    assert_eq!((o.regs.cs, o.regs.ip, o.regs.dl()), (0, 0x7c00, 0x80));
    assert_eq!(g.mem.bytes[0x7dff], 0xaa);
    // The disk's boot code gives up: the CD is next.
    let o = g.int(0x18, ax_regs(0));
    assert_eq!(o.result, Ok(()));
    assert_eq!((o.regs.cs, o.regs.ip, o.regs.dl()), (0x07c0, 0, 0xe0));
    // And after the CD, nothing: the vCPU is parked in the POST stub's hlt loop.
    let o = g.int(0x18, ax_regs(0));
    assert!(matches!(o.result, Err(BiosError::NoBootDevice { .. })));
    assert_eq!((o.regs.cs, o.regs.ip), (0xf000, rom::POST_TRAP_IP));
    assert!(g.console().ends_with("kettle BIOS: no bootable device\r\n"));
}

// ---- INT 09h, INT 16h ------------------------------------------------------------------------

/// Delivers `codes` as IRQ 1s.
fn press(g: &mut Guest, codes: &[u8]) {
    for c in codes {
        g.ports.scancodes.push_back(*c);
        let o = g.int(0x09, ax_regs(0));
        assert_eq!(o.result, Ok(()));
        assert_eq!(o.regs.ip, rom::EOI_MASTER);
    }
}

/// Takes every key in the buffer with AH=10h.
fn keys(g: &mut Guest) -> Vec<u16> {
    let mut out = Vec::new();
    loop {
        let o = g.int(0x16, ax_regs(0x1100));
        if o.zf() {
            return out;
        }
        out.push(g.int(0x16, ax_regs(0x1000)).regs.ax());
        assert!(out.len() < 100);
    }
}

#[test]
fn int09_translates_scancodes_with_the_shift_state() {
    let mut g = Guest::new(64 * MIB);
    // a, Shift+a, Ctrl+c, F1, Shift+F1, Alt+x, Enter, keypad Enter, Up (grey), Up (keypad).
    press(&mut g, &[0x1e, 0x9e]);
    press(&mut g, &[0x2a, 0x1e, 0x9e, 0xaa]);
    press(&mut g, &[0x1d, 0x2e, 0xae, 0x9d]);
    press(&mut g, &[0x3b, 0xbb, 0x36, 0x3b, 0xbb, 0xb6]);
    press(&mut g, &[0x38, 0x2d, 0xad, 0xb8]);
    press(&mut g, &[0x1c, 0x9c, 0xe0, 0x1c, 0xe0, 0x9c]);
    press(&mut g, &[0xe0, 0x48, 0xe0, 0xc8, 0x48, 0xc8]);
    assert_eq!(
        keys(&mut g),
        [0x1e61, 0x1e41, 0x2e03, 0x3b00, 0x5400, 0x2d00, 0x1c0d, 0xe00d, 0x48e0, 0x4800]
    );
    assert_eq!(
        g.bda_u8(bda::KBD_FLAGS) & 0x0f,
        0,
        "every modifier released"
    );
    // Caps Lock toggles once per press, not per typematic repeat.
    press(&mut g, &[0x3a, 0x3a, 0x3a, 0xba, 0x10, 0x90]);
    assert_eq!(g.bda_u8(bda::KBD_FLAGS) & 0x40, 0x40);
    assert_eq!(keys(&mut g), [0x1051]);
    let o = g.int(0x16, ax_regs(0x0200));
    assert_eq!(o.regs.al(), 0x40);
    // Num Lock makes the keypad type digits.
    press(&mut g, &[0x45, 0xc5, 0x4b, 0xcb]);
    assert_eq!(keys(&mut g), [0x4b34]);
    // Held Ctrl shows in AH=12h.
    press(&mut g, &[0x1d]);
    let o = g.int(0x16, ax_regs(0x1200));
    assert_eq!((o.regs.al() & 0x04, o.regs.ah() & 0x01), (0x04, 0x01));
}

#[test]
fn translation_table_spot_checks() {
    use super::keyboard::translate;
    assert_eq!(translate(0x02, 0, false), Some(0x0231));
    assert_eq!(translate(0x02, 0x02, false), Some(0x0221));
    assert_eq!(translate(0x39, 0, false), Some(0x3920));
    assert_eq!(translate(0x0e, 0, false), Some(0x0e08));
    assert_eq!(translate(0x57, 0, false), Some(0x8500));
    assert_eq!(translate(0x2a, 0, false), None);
    assert_eq!(translate(0x7f, 0, false), None);
    assert_eq!(translate(0x53, 0, true), Some(0x53e0));
}

#[test]
fn int16_basic_calls_hide_extended_keys() {
    let mut g = Guest::new(64 * MIB);
    press(&mut g, &[0xe0, 0x48, 0x57]); // grey Up, F11
    let o = g.int(0x16, ax_regs(0x0100));
    assert!(!o.zf());
    assert_eq!(o.regs.ax(), 0x4800);
    assert_eq!(g.int(0x16, ax_regs(0x0000)).regs.ax(), 0x4800);
    // F11 does not exist for AH=00h/01h: dropped.
    assert!(g.int(0x16, ax_regs(0x0100)).zf());
    assert!(g.int(0x16, ax_regs(0x1100)).zf());
}

#[test]
fn int16_wait_idles_in_the_rom_and_keeps_the_callers_registers() {
    let mut g = Guest::new(64 * MIB);
    let r = ax_regs(0x0000);
    let o = g.int_flags(0x16, r, flags::IF | flags::RESERVED_1 | flags::CF);
    assert_eq!(o.result, Ok(()));
    assert_eq!((o.regs.cs, o.regs.ip), (0xf000, rom::KBD_WAIT));
    let mut expected = r;
    expected.cs = 0xf000;
    expected.ip = rom::KBD_WAIT;
    expected.set_sp(r.sp() - 6);
    assert_eq!(o.regs, expected, "only IP moved");
    assert_eq!(
        o.flags,
        flags::IF | flags::RESERVED_1 | flags::CF,
        "the frame is intact"
    );
    // A key arrives on the serial line; the re-entered stub finds it.
    g.ports.rx.extend(b"k");
    let o = g.int(0x16, ax_regs(0x0000));
    assert_eq!(
        o.regs.ip,
        rom::entry_point(0x16) + 2,
        "returns through the stub's iret"
    );
    assert_eq!(o.regs.ax(), 0x256b);
}

#[test]
fn int16_check_sets_zf_in_the_stacked_flags() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int(0x16, ax_regs(0x0100));
    assert!(o.zf());
    assert_eq!(o.regs.ax(), 0x0100);
    let mut r = ax_regs(0x0500);
    r.set_cx(0x1e61);
    assert_eq!(g.int(0x16, r).regs.al(), 0);
    let o = g.int_cf(0x16, ax_regs(0x0100));
    assert!(!o.zf());
    assert_eq!(o.regs.ax(), 0x1e61);
    let o = g.int_cf(0x16, ax_regs(0x0100));
    assert_eq!(o.regs.ax(), 0x1e61, "checking does not take the key");
    assert_eq!(g.int(0x16, ax_regs(0x0000)).regs.ax(), 0x1e61);
    assert!(g.int(0x16, ax_regs(0x0100)).zf());
}

#[test]
fn int16_buffer_fills_up_and_survives_bad_pointers() {
    let mut g = Guest::new(64 * MIB);
    for i in 0..15u16 {
        let mut r = ax_regs(0x0500);
        r.set_cx(0x1e00 + i);
        assert_eq!(g.int(0x16, r).regs.al(), 0, "key {i}");
    }
    let mut r = ax_regs(0x0500);
    r.set_cx(0x1111);
    assert_eq!(g.int(0x16, r).regs.al(), 1, "15 keys fill the 16-word ring");
    assert_eq!(
        keys(&mut g),
        (0..15).map(|i| 0x1e00 + i).collect::<Vec<_>>()
    );
    // Garbage head/tail/bounds: treated as empty, no panic, still usable.
    g.set_bda_u16(bda::KBD_HEAD, 0x1234);
    g.set_bda_u16(bda::KBD_BUFFER_START, 0xffff);
    assert!(g.int(0x16, ax_regs(0x0100)).zf());
    g.ports.rx.extend(b"z");
    assert_eq!(g.int(0x16, ax_regs(0x0000)).regs.ax(), 0x2c7a);
}

#[test]
fn serial_input_becomes_keys() {
    let mut g = Guest::new(64 * MIB);
    g.ports.rx.extend(
        b"aZ1 \r\x7f\x08\t\x03\n\x1b[A\x1b[B\x1b[C\x1b[D\x1bOP\x1b[3~\x1b[24~\x1b[1;5C\xfe",
    );
    assert_eq!(
        keys(&mut g),
        [
            0x1e61, 0x2c5a, 0x0231, 0x3920, 0x1c0d, 0x0e08, 0x0e08, 0x0f09, 0x2e03, 0x1c0a, 0x4800,
            0x5000, 0x4d00, 0x4b00, 0x3b00, 0x5300, 0x8600, 0x4d00, 0x00fe
        ]
    );
    // A lone ESC is the Escape key once the next poll finds nothing after it.
    g.ports.rx.extend(b"\x1b");
    assert!(g.int(0x16, ax_regs(0x0100)).zf());
    assert_eq!(keys(&mut g), [0x011b]);
    // ESC then a letter: Alt+letter.
    g.ports.rx.extend(b"\x1bx");
    assert_eq!(keys(&mut g), [0x2d00]);
    // A flood stops at the buffer's size and leaves the rest in the UART.
    g.ports.rx.extend([b'q'; 40]);
    assert_eq!(g.int(0x16, ax_regs(0x1100)).regs.ax(), 0x1071);
    assert_eq!(g.ports.rx.len(), 40 - 15);
}

// ---- INT 10h: the text buffer ----------------------------------------------------------------

fn vga_guest() -> Guest {
    Guest::build(
        BiosConfig::new(&MemoryLayout::new(64 * MIB).unwrap()),
        vec![FakeDisk::hard_disk(2048).boxed()],
        false,
    )
}

fn cell(g: &Guest, row: usize, col: usize) -> (u8, u8) {
    let at = 0xb8000 + (row * 80 + col) * 2;
    (g.mem.bytes[at], g.mem.bytes[at + 1])
}

#[test]
fn teletype_fills_the_text_buffer_and_scrolls_it() {
    let mut g = vga_guest();
    assert_eq!(cell(&g, 0, 0), (0x20, 0x07), "POST blanked the screen");
    teletype(&mut g, b"Hi\r\n");
    assert_eq!((cell(&g, 0, 0).0, cell(&g, 0, 1).0), (b'H', b'i'));
    assert_eq!(cell(&g, 0, 1).1, 0x07, "the cell keeps its attribute");
    let mut r = ax_regs(0x0200);
    r.set_dx(0x1800);
    g.int(0x10, r).result.unwrap();
    teletype(&mut g, b"last\n");
    // The screen moved up a line: "Hi" is gone off the top, "last" is on row 23.
    assert_eq!(cell(&g, 0, 0).0, 0x20);
    assert_eq!(cell(&g, 23, 0).0, b'l');
    assert_eq!(cell(&g, 24, 0), (0x20, 0x07));
    assert_eq!(g.cursor(0), (24, 4));
    // AH=08h reads it back.
    let mut r = ax_regs(0x0200);
    r.set_dx(0x1701);
    g.int(0x10, r).result.unwrap();
    assert_eq!(g.int(0x10, ax_regs(0x0800)).regs.ax(), 0x0761);
}

#[test]
fn write_char_repeats_without_moving_the_cursor_or_printing() {
    let mut g = vga_guest();
    let mut r = ax_regs(0x0200);
    r.set_dx(0x0204);
    g.int(0x10, r).result.unwrap();
    let mut r = ax_regs(0x0941);
    r.set_bx(0x001e);
    r.set_cx(3);
    g.int(0x10, r).result.unwrap();
    assert_eq!(cell(&g, 2, 4), (b'A', 0x1e));
    assert_eq!(cell(&g, 2, 6), (b'A', 0x1e));
    assert_eq!(cell(&g, 2, 7), (0x20, 0x07));
    assert_eq!(g.cursor(0), (2, 4));
    let mut r = ax_regs(0x0a42);
    r.set_cx(2);
    g.int(0x10, r).result.unwrap();
    assert_eq!(cell(&g, 2, 5), (b'B', 0x1e), "AH=0Ah keeps the attribute");
    assert!(g.ports.com1.is_empty());
    // A huge count stops at the end of the screen.
    let mut r = ax_regs(0x0958);
    r.set_cx(0xffff);
    g.int(0x10, r).result.unwrap();
    assert_eq!(cell(&g, 24, 79).0, b'X');
    assert_eq!(g.mem.bytes[0xb8000 + 4000], 0x20);
}

#[test]
fn scroll_window_and_set_mode() {
    let mut g = vga_guest();
    for row in 0..25u8 {
        let mut r = ax_regs(0x0200);
        r.set_dh(row);
        g.int(0x10, r).result.unwrap();
        teletype(&mut g, &[b'a' + row]);
    }
    // Scroll rows 1-3, columns 0-9 up by one with attribute 1Fh.
    let mut r = ax_regs(0x0601);
    r.set_bh(0x1f);
    r.set_cx(0x0100);
    r.set_dx(0x0309);
    g.int(0x10, r).result.unwrap();
    assert_eq!(cell(&g, 0, 0).0, b'a');
    assert_eq!((cell(&g, 1, 0).0, cell(&g, 2, 0).0), (b'c', b'd'));
    assert_eq!(cell(&g, 3, 0), (0x20, 0x1f));
    assert_eq!(cell(&g, 4, 0).0, b'e');
    // Down by one over rows 0-1.
    let mut r = ax_regs(0x0701);
    r.set_bh(0x07);
    r.set_dx(0x0109);
    g.int(0x10, r).result.unwrap();
    assert_eq!((cell(&g, 0, 0).0, cell(&g, 1, 0).0), (0x20, b'a'));
    // AL=0 clears; nonsense windows do nothing.
    let mut r = ax_regs(0x0600);
    r.set_bh(0x07);
    r.set_dx(0xffff);
    g.int(0x10, r).result.unwrap();
    assert_eq!(cell(&g, 24, 0).0, 0x20);
    let mut r = ax_regs(0x0605);
    r.set_cx(0x1010);
    r.set_dx(0x0505);
    g.int(0x10, r).result.unwrap();
    // Set mode 3: cleared, cursor home, page 0.
    teletype(&mut g, b"x");
    let o = g.int(0x10, ax_regs(0x0003));
    assert_eq!(o.regs.al(), 0x30);
    assert_eq!(g.cursor(0), (0, 0));
    assert!(g.mem.bytes[0xb8000..0xb8000 + 4000]
        .chunks(2)
        .all(|c| c == [0x20, 0x07]));
    // Bit 7: keep the buffer. Mode 13h: refused, nothing changes.
    teletype(&mut g, b"y");
    g.int(0x10, ax_regs(0x0083)).result.unwrap();
    assert_eq!(cell(&g, 0, 0).0, b'y');
    let o = g.int(0x10, ax_regs(0x0013));
    assert_eq!(o.regs.al(), 0x13);
    assert_eq!(g.bda_u8(bda::VIDEO_MODE), 3);
}

#[test]
fn read_char_without_a_buffer_is_a_blank() {
    let mut g = Guest::new(64 * MIB);
    let o = g.int(0x10, ax_regs(0x0800));
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.regs.ax(), 0x0720);
}

#[test]
fn the_adapter_says_vga_colour() {
    let mut g = Guest::new(64 * MIB);
    let mut r = ax_regs(0x1200);
    r.set_bx(0xff10);
    r.set_cx(0x1234);
    let o = g.int(0x10, r);
    assert_eq!((o.regs.bh(), o.regs.bl(), o.regs.cx()), (0, 3, 0));
    let o = g.int(0x10, ax_regs(0x1a00));
    assert_eq!((o.regs.al(), o.regs.bl(), o.regs.bh()), (0x1a, 0x08, 0));
}

// ---- INT 1Ah PCI BIOS ------------------------------------------------------------------------

fn pci_guest() -> Guest {
    let mut g = Guest::new(64 * MIB);
    g.ports.add_pci(0x00, 0x8086, 0x7192, 0x06_00_00, 0x00);
    g.ports.add_pci(0x38, 0x8086, 0x7110, 0x06_01_00, 0x80);
    g.ports.add_pci(0x39, 0x8086, 0x7111, 0x01_01_80, 0x00);
    g.ports.add_pci(0x3b, 0x8086, 0x7113, 0x06_80_00, 0x00);
    g.ports.add_pci(0x48, 0x1011, 0x0009, 0x02_00_00, 0x00);
    // A function 1 behind a single-function device is not looked for.
    g.ports.add_pci(0x49, 0x1011, 0x0009, 0x02_00_00, 0x00);
    g
}

#[test]
fn pci_installation_check() {
    let mut g = pci_guest();
    let o = g.int_cf(0x1a, ax_regs(0xb101));
    assert!(!o.cf());
    assert_eq!(o.regs.edx, 0x2049_4350);
    assert_eq!(
        (o.regs.ah(), o.regs.al(), o.regs.bx(), o.regs.cl()),
        (0, 1, 0x0210, 0)
    );
}

#[test]
fn pci_find_device_and_class() {
    let mut g = pci_guest();
    let find = |g: &mut Guest, vendor: u16, device: u16, index: u16| {
        let mut r = ax_regs(0xb102);
        r.set_dx(vendor);
        r.set_cx(device);
        r.set_si(index);
        g.int_cf(0x1a, r)
    };
    let o = find(&mut g, 0x8086, 0x7111, 0);
    assert!(!o.cf());
    assert_eq!((o.regs.ah(), o.regs.bh(), o.regs.bl()), (0, 0, 0x39));
    let o = find(&mut g, 0x1011, 0x0009, 0);
    assert_eq!(o.regs.bl(), 0x48);
    let o = find(&mut g, 0x1011, 0x0009, 1);
    assert!(o.cf());
    assert_eq!(o.regs.ah(), 0x86);
    let o = find(&mut g, 0xffff, 0x0009, 0);
    assert_eq!(o.regs.ah(), 0x83);
    let mut r = ax_regs(0xb103);
    r.ecx = 0x01_01_80;
    let o = g.int_cf(0x1a, r);
    assert!(!o.cf());
    assert_eq!(o.regs.bl(), 0x39);
    r.ecx = 0x06_00_00;
    assert_eq!(g.int_cf(0x1a, r).regs.bl(), 0x00);
    r.set_si(1);
    assert_eq!(g.int(0x1a, r).regs.ah(), 0x86);
}

#[test]
fn pci_config_reads_and_writes() {
    let mut g = pci_guest();
    let access = |g: &mut Guest, ax: u16, reg: u16, ecx: u32| {
        let mut r = ax_regs(ax);
        r.set_bx(0x0039);
        r.set_di(reg);
        r.ecx = ecx;
        g.int_cf(0x1a, r)
    };
    let o = access(&mut g, 0xb10a, 0x00, 0);
    assert!(!o.cf());
    assert_eq!(o.regs.ecx, 0x7111_8086);
    assert_eq!(access(&mut g, 0xb109, 0x02, 0).regs.cx(), 0x7111);
    assert_eq!(access(&mut g, 0xb108, 0x0b, 0).regs.cl(), 0x01);
    assert!(!access(&mut g, 0xb10b, 0x3c, 0x0e).cf());
    assert!(!access(&mut g, 0xb10c, 0x04, 0x0005).cf());
    assert!(!access(&mut g, 0xb10d, 0x20, 0xd001).cf());
    let c = g.ports.pci[&0x39];
    assert_eq!(c[0x3c], 0x0e);
    assert_eq!((c[0x04], c[0x05]), (0x05, 0x00));
    assert_eq!(
        u32::from_le_bytes(c[0x20..0x24].try_into().unwrap()),
        0xd001
    );
    // Misaligned or out of range registers.
    for (ax, reg) in [
        (0xb109, 0x01),
        (0xb10a, 0x02),
        (0xb10c, 0x03),
        (0xb108, 0x100),
    ] {
        let o = access(&mut g, ax, reg, 0);
        assert!(o.cf(), "{ax:#x} {reg:#x}");
        assert_eq!(o.regs.ah(), 0x87);
    }
    // Absent functions read as all ones.
    let mut r = ax_regs(0xb10a);
    r.set_bx(0x0100);
    assert_eq!(g.int(0x1a, r).regs.ecx, 0xffff_ffff);
    for ax in [0xb10e, 0xb10f, 0xb106, 0xb1ff] {
        let o = g.int(0x1a, ax_regs(ax));
        assert!(o.cf());
        assert_eq!(o.regs.ah(), 0x81);
    }
}
