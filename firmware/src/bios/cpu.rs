//! What a BIOS service sees of the vCPU: its real-mode registers, guest memory addressed as
//! segment:offset, and the FLAGS image on the stack that the stub's `iret` will restore.
//!
//! Everything here is guest-controlled, so every access is fallible and nothing can panic:
//!
//! - an offset wraps at 64 KiB inside its segment (`ES:FFFF` is followed by `ES:0000`), as the
//!   8086 addressing the BIOS interface was defined on;
//! - a linear address wraps at 1 MiB unless A20 is enabled (`FFFF:0010` is 0x00000 with the
//!   gate closed, 0x100000 with it open);
//! - a byte outside guest RAM is a [`MemError`], which the services turn into their error return.
//!
//! KVM has no A20 mask: the CPU always sees memory above 1 MiB, so the VMM normally tells the
//! BIOS that A20 is on; the flag exists so the BIOS's view can follow a gate the VMM models.

use super::spec::flags;

/// A span of guest-physical memory that is not RAM.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("guest-physical {addr:#x}..{end:#x} is not RAM", end = addr + *len as u64)]
pub struct MemError {
    pub addr: u64,
    pub len: usize,
}

/// Guest-physical memory as the BIOS needs it. The VMM implements it over its guest memory
/// mapping; a range that is not entirely RAM is an error, never a partial access.
pub trait GuestMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError>;
}

/// I/O ports as the BIOS reaches them (the VMM implements it over its I/O bus). Services use it
/// for COM1 (console output and serial keyboard input), the i8042's data port (INT 09h) and
/// PCI configuration mechanism 1 (INT 1Ah AH=B1h). A port nothing decodes reads as all ones.
pub trait IoPorts {
    fn inb(&mut self, port: u16) -> u8;
    fn outb(&mut self, port: u16, value: u8);
    fn inl(&mut self, port: u16) -> u32;
    fn outl(&mut self, port: u16, value: u32);
}

/// The vCPU's registers as a real-mode BIOS service sees them.
///
/// The general registers are kept whole (32 bits): INT 15h E820 reads and returns EAX, EBX, ECX
/// and EDX, and a service must not clobber the upper halves of the others. The 16- and 8-bit
/// views (`ax`, `ah`, `al`, ...) are accessors on them. The VMM fills this from KVM's registers
/// before a call and writes all of it back after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealModeRegs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub esi: u32,
    pub edi: u32,
    pub ebp: u32,
    pub esp: u32,
    pub cs: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub ss: u16,
    /// IP inside CS. In a service it points just past the stub's `out` (at its `iret`).
    pub ip: u16,
    /// The live EFLAGS. A service's status goes in the *stacked* FLAGS instead (see
    /// [`Call::set_carry`]): the stub's `iret` replaces these.
    pub flags: u32,
}

fn low16(r: u32) -> u16 {
    r as u16
}

fn set_low16(r: &mut u32, v: u16) {
    *r = (*r & 0xffff_0000) | u32::from(v);
}

fn set_low8(r: &mut u32, v: u8) {
    *r = (*r & 0xffff_ff00) | u32::from(v);
}

fn set_high8(r: &mut u32, v: u8) {
    *r = (*r & 0xffff_00ff) | (u32::from(v) << 8);
}

macro_rules! abcd {
    ($e:ident, $x:ident, $set_x:ident, $h:ident, $set_h:ident, $l:ident, $set_l:ident) => {
        pub fn $x(&self) -> u16 {
            low16(self.$e)
        }
        pub fn $set_x(&mut self, v: u16) {
            set_low16(&mut self.$e, v)
        }
        pub fn $h(&self) -> u8 {
            (self.$e >> 8) as u8
        }
        pub fn $set_h(&mut self, v: u8) {
            set_high8(&mut self.$e, v)
        }
        pub fn $l(&self) -> u8 {
            self.$e as u8
        }
        pub fn $set_l(&mut self, v: u8) {
            set_low8(&mut self.$e, v)
        }
    };
}

macro_rules! word {
    ($e:ident, $x:ident, $set_x:ident) => {
        pub fn $x(&self) -> u16 {
            low16(self.$e)
        }
        pub fn $set_x(&mut self, v: u16) {
            set_low16(&mut self.$e, v)
        }
    };
}

impl RealModeRegs {
    abcd!(eax, ax, set_ax, ah, set_ah, al, set_al);
    abcd!(ebx, bx, set_bx, bh, set_bh, bl, set_bl);
    abcd!(ecx, cx, set_cx, ch, set_ch, cl, set_cl);
    abcd!(edx, dx, set_dx, dh, set_dh, dl, set_dl);
    word!(esi, si, set_si);
    word!(edi, di, set_di);
    word!(ebp, bp, set_bp);
    word!(esp, sp, set_sp);
}

/// The linear address of `seg:off`, wrapped at 1 MiB unless `a20` is on.
pub fn linear(seg: u16, off: u16, a20: bool) -> u64 {
    let addr = (u64::from(seg) << 4) + u64::from(off);
    if a20 {
        addr
    } else {
        addr & 0xf_ffff
    }
}

/// Guest memory addressed the real-mode way: `seg:off` with the 64 KiB offset wrap and the
/// 1 MiB wrap of a closed A20 gate.
pub struct RealMem<'a> {
    mem: &'a mut dyn GuestMem,
    a20: bool,
}

impl<'a> RealMem<'a> {
    pub fn new(mem: &'a mut dyn GuestMem, a20: bool) -> Self {
        Self { mem, a20 }
    }

    pub fn a20(&self) -> bool {
        self.a20
    }

    /// The guest-physical spans `(addr, start, len)` that `len` bytes from `seg:off` cover:
    /// split where the offset wraps at 64 KiB and, with A20 off, where the address wraps at
    /// 1 MiB.
    fn spans(&self, seg: u16, off: u16, len: usize) -> Vec<(u64, usize, usize)> {
        let mut spans = Vec::new();
        let mut done = 0;
        let mut off = off;
        while done < len {
            let addr = linear(seg, off, self.a20);
            let mut n = (len - done).min(0x1_0000 - usize::from(off));
            if !self.a20 {
                // `addr` is below 1 MiB here, so this is at least 1.
                n = n.min((0x10_0000 - addr) as usize);
            }
            spans.push((addr, done, n));
            done += n;
            off = off.wrapping_add(n as u16);
        }
        spans
    }

    pub fn read(&self, seg: u16, off: u16, buf: &mut [u8]) -> Result<(), MemError> {
        for (addr, at, n) in self.spans(seg, off, buf.len()) {
            self.mem.read(addr, &mut buf[at..at + n])?;
        }
        Ok(())
    }

    pub fn write(&mut self, seg: u16, off: u16, data: &[u8]) -> Result<(), MemError> {
        for (addr, at, n) in self.spans(seg, off, data.len()) {
            self.mem.write(addr, &data[at..at + n])?;
        }
        Ok(())
    }

    /// Reads guest-physical memory directly (a flat buffer address, a disk transfer).
    pub fn read_phys(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(addr, buf)
    }

    /// Writes guest-physical memory directly.
    pub fn write_phys(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(addr, data)
    }

    pub fn read_u8(&self, seg: u16, off: u16) -> Result<u8, MemError> {
        let mut b = [0; 1];
        self.read(seg, off, &mut b)?;
        Ok(b[0])
    }

    pub fn read_u16(&self, seg: u16, off: u16) -> Result<u16, MemError> {
        let mut b = [0; 2];
        self.read(seg, off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub fn read_u32(&self, seg: u16, off: u16) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(seg, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn write_u8(&mut self, seg: u16, off: u16, v: u8) -> Result<(), MemError> {
        self.write(seg, off, &[v])
    }

    pub fn write_u16(&mut self, seg: u16, off: u16, v: u16) -> Result<(), MemError> {
        self.write(seg, off, &v.to_le_bytes())
    }

    pub fn write_u32(&mut self, seg: u16, off: u16, v: u32) -> Result<(), MemError> {
        self.write(seg, off, &v.to_le_bytes())
    }
}

/// One BIOS call in progress: the caller's registers and memory.
///
/// When the service runs, the stub's `out` has executed and the stack holds what the `int`
/// instruction pushed: IP at SS:SP, CS at SS:SP+2, FLAGS at SS:SP+4 (offsets wrap inside SS).
pub struct Call<'a> {
    pub regs: &'a mut RealModeRegs,
    pub mem: RealMem<'a>,
}

impl<'a> Call<'a> {
    pub fn new(regs: &'a mut RealModeRegs, mem: &'a mut dyn GuestMem, a20: bool) -> Self {
        Self {
            regs,
            mem: RealMem::new(mem, a20),
        }
    }

    /// The caller's return address, CS:IP, as the `int` pushed it.
    pub fn return_address(&self) -> Result<(u16, u16), MemError> {
        let sp = self.regs.sp();
        let ip = self.mem.read_u16(self.regs.ss, sp)?;
        let cs = self.mem.read_u16(self.regs.ss, sp.wrapping_add(2))?;
        Ok((cs, ip))
    }

    fn flags_offset(&self) -> u16 {
        self.regs.sp().wrapping_add(4)
    }

    /// The FLAGS image the stub's `iret` will pop.
    pub fn stacked_flags(&self) -> Result<u16, MemError> {
        self.mem.read_u16(self.regs.ss, self.flags_offset())
    }

    /// Sets or clears `bits` in the stacked FLAGS.
    pub fn set_stacked_flags(&mut self, bits: u16, on: bool) -> Result<(), MemError> {
        let old = self.stacked_flags()?;
        let new = if on { old | bits } else { old & !bits };
        let (ss, off) = (self.regs.ss, self.flags_offset());
        self.mem.write_u16(ss, off, new)
    }

    /// CF as the caller will see it after the `iret`.
    pub fn set_carry(&mut self, on: bool) -> Result<(), MemError> {
        self.set_stacked_flags(flags::CF, on)
    }

    /// ZF as the caller will see it after the `iret`.
    pub fn set_zero(&mut self, on: bool) -> Result<(), MemError> {
        self.set_stacked_flags(flags::ZF, on)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Guest RAM for tests: bytes 0..len, with non-RAM holes.
    pub struct TestMem {
        pub bytes: Vec<u8>,
        pub holes: Vec<std::ops::Range<u64>>,
    }

    impl TestMem {
        pub fn new(len: usize) -> Self {
            Self {
                bytes: vec![0; len],
                holes: Vec::new(),
            }
        }

        fn check(&self, addr: u64, len: usize) -> Result<std::ops::Range<usize>, MemError> {
            let err = MemError { addr, len };
            let end = addr.checked_add(len as u64).ok_or(err)?;
            if end > self.bytes.len() as u64
                || self.holes.iter().any(|h| addr < h.end && h.start < end)
            {
                return Err(err);
            }
            Ok(addr as usize..end as usize)
        }

        pub fn u16_at(&self, addr: usize) -> u16 {
            u16::from_le_bytes([self.bytes[addr], self.bytes[addr + 1]])
        }

        pub fn u32_at(&self, addr: usize) -> u32 {
            u32::from_le_bytes(self.bytes[addr..addr + 4].try_into().unwrap())
        }
    }

    impl GuestMem for TestMem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
            let r = self.check(addr, buf.len())?;
            buf.copy_from_slice(&self.bytes[r]);
            Ok(())
        }

        fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
            let r = self.check(addr, data.len())?;
            self.bytes[r].copy_from_slice(data);
            Ok(())
        }
    }

    #[test]
    fn register_views_share_the_32_bit_registers() {
        let mut r = RealModeRegs {
            eax: 0x1234_5678,
            ..Default::default()
        };
        assert_eq!((r.ax(), r.ah(), r.al()), (0x5678, 0x56, 0x78));
        r.set_ah(0x86);
        assert_eq!(r.eax, 0x1234_8678);
        r.set_al(0x01);
        assert_eq!(r.eax, 0x1234_8601);
        r.set_ax(0xbeef);
        assert_eq!(r.eax, 0x1234_beef);
        r.esp = 0xffff_0010;
        r.set_sp(0x7c00);
        assert_eq!((r.esp, r.sp()), (0xffff_7c00, 0x7c00));
        r.set_dl(0x80);
        r.set_dh(0x01);
        assert_eq!(r.dx(), 0x0180);
    }

    #[test]
    fn linear_addresses_wrap_at_1_mib_without_a20() {
        assert_eq!(linear(0x07c0, 0x0000, false), 0x7c00);
        assert_eq!(linear(0xffff, 0x0010, false), 0x0_0000);
        assert_eq!(linear(0xffff, 0x0010, true), 0x10_0000);
        assert_eq!(linear(0xffff, 0xffff, true), 0x10_ffef);
        assert_eq!(linear(0xffff, 0xffff, false), 0x0_ffef);
    }

    #[test]
    fn accesses_wrap_at_the_segment_end() {
        let mut m = TestMem::new(0x20_0000);
        let mut mem = RealMem::new(&mut m, true);
        mem.write(0x1000, 0xfffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0; 4];
        mem.read(0x1000, 0xfffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(mem.read_u16(0x1000, 0x0000).unwrap(), 0x0403);
        assert_eq!(&m.bytes[0x1fffe..0x20000], &[1, 2]);
        assert_eq!(&m.bytes[0x10000..0x10002], &[3, 4]);
    }

    #[test]
    fn accesses_wrap_at_1_mib_with_a20_off() {
        let mut m = TestMem::new(0x20_0000);
        let mut mem = RealMem::new(&mut m, false);
        // FFFF:000E is 0xFFFFE; two bytes later the address wraps to 0.
        mem.write(0xffff, 0x000e, &[0xaa, 0xbb, 0xcc, 0xdd])
            .unwrap();
        assert_eq!(&m.bytes[0xffffe..0x100000], &[0xaa, 0xbb]);
        assert_eq!(&m.bytes[0..2], &[0xcc, 0xdd]);
        assert_eq!(&m.bytes[0x100000..0x100002], &[0, 0]);

        let mut mem = RealMem::new(&mut m, true);
        mem.write(0xffff, 0x000e, &[1, 2, 3, 4]).unwrap();
        assert_eq!(&m.bytes[0xffffe..0x100002], &[1, 2, 3, 4]);
    }

    #[test]
    fn accesses_outside_ram_fail() {
        let mut m = TestMem::new(0x10_0000);
        m.holes.push(0xa0000..0xc0000);
        let mut mem = RealMem::new(&mut m, true);
        assert_eq!(
            mem.write_u32(0xa000, 0, 1),
            Err(MemError {
                addr: 0xa0000,
                len: 4
            })
        );
        assert!(mem.read_u16(0xffff, 0x0010).is_err());
        assert!(mem.read_u16(0x9fff, 0x000f).is_err());
        assert!(mem.read_u8(0x9fff, 0x000f).is_ok());
        // A whole-segment access that wraps many times neither panics nor loops.
        let mut big = vec![0; 0x3_0000];
        assert!(mem.read(0x1000, 0x8000, &mut big).is_ok());
    }

    #[test]
    fn stacked_flags_follow_ss_sp_and_wrap() {
        let mut m = TestMem::new(0x10_0000);
        let mut regs = RealModeRegs {
            ss: 0x2000,
            esp: 0xfffc,
            ..Default::default()
        };
        // IP at 2000:FFFC, CS at 2000:FFFE, FLAGS wraps to 2000:0000.
        m.bytes[0x20000] = 0x02;
        m.bytes[0x20001] = 0x02;
        let mut call = Call::new(&mut regs, &mut m, false);
        assert_eq!(call.stacked_flags().unwrap(), 0x0202);
        call.set_carry(true).unwrap();
        call.set_zero(true).unwrap();
        assert_eq!(call.stacked_flags().unwrap(), 0x0243);
        call.set_carry(false).unwrap();
        assert_eq!(call.stacked_flags().unwrap(), 0x0242);
        assert_eq!(m.u16_at(0x20000), 0x0242);
    }

    #[test]
    fn stacked_flags_outside_ram_are_an_error() {
        let mut m = TestMem::new(0x10_0000);
        m.holes.push(0xa0000..0xc0000);
        let mut regs = RealModeRegs {
            ss: 0xa000,
            esp: 0x0100,
            ..Default::default()
        };
        let mut call = Call::new(&mut regs, &mut m, false);
        assert!(call.set_carry(true).is_err());
        assert!(call.return_address().is_err());
    }
}
