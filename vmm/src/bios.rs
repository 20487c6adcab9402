//! Running kettle's BIOS ([`firmware::bios`]) on a vCPU: the ROM's stubs write to
//! [`rom::BIOS_PORT`], the write exits to the vCPU thread, and [`BiosRuntime::trap`] runs the
//! service in Rust on the vCPU's registers, guest RAM, the I/O bus and the disks, then writes the
//! registers back.
//!
//! Where the instruction pointer is on that exit differs between KVM implementations: mainline
//! KVM reports RIP at the `out` and skips it when the vCPU re-enters with RIP unchanged; others
//! (kvm_pvm) report RIP already past it. The trap finds the stub from either (the bytes `E6 EC`
//! of `out 0xEC, al` lie just before or at RIP) and always writes an explicit RIP back, so the
//! `out` runs once either way.

use std::sync::{Arc, Mutex};

use devices::Bus;
use firmware::bios::rom::{self, Trap};
use firmware::bios::{
    Bios, BiosDisk, BiosError, Cmos, DiskKind, GuestMem, IoPorts, MemError, RealModeRegs,
};
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::storage::{DriveKind, OpenDrive};

/// The I/O bus as the BIOS reaches it: the same ports a guest's `in` and `out` reach (the
/// in-kernel PIC and PIT are not on it; the ROM programs those itself).
pub struct BusPorts<'a>(pub &'a Bus);

impl IoPorts for BusPorts<'_> {
    fn inb(&mut self, port: u16) -> u8 {
        let mut v = [0xffu8];
        self.0.read(u64::from(port), &mut v);
        v[0]
    }

    fn outb(&mut self, port: u16, value: u8) {
        self.0.write(u64::from(port), &[value]);
    }

    fn inl(&mut self, port: u16) -> u32 {
        let mut v = [0xffu8; 4];
        self.0.read(u64::from(port), &mut v);
        u32::from_le_bytes(v)
    }

    fn outl(&mut self, port: u16, value: u32) {
        self.0.write(u64::from(port), &value.to_le_bytes());
    }
}

/// An IDE drive's image as the BIOS reads and writes it.
struct DriveDisk {
    kind: DiskKind,
    backend: Arc<dyn vhd::BlockDevice>,
}

impl BiosDisk for DriveDisk {
    fn kind(&self) -> DiskKind {
        self.kind
    }

    fn sectors(&self) -> u64 {
        self.backend.sectors()
    }

    fn read_only(&self) -> bool {
        self.kind == DiskKind::Cdrom || self.backend.read_only()
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), String> {
        self.backend.read(lba, buf).map_err(|e| e.to_string())
    }

    fn write(&self, lba: u64, data: &[u8]) -> Result<(), String> {
        self.backend.write(lba, data).map_err(|e| e.to_string())
    }

    fn flush(&self) -> Result<(), String> {
        self.backend.flush().map_err(|e| e.to_string())
    }
}

/// The BIOS's drives: each IDE position's image, `None` where the position is empty.
pub fn bios_disks(drives: &[OpenDrive]) -> Vec<Option<Box<dyn BiosDisk>>> {
    let mut disks: Vec<Option<Box<dyn BiosDisk>>> = (0..4).map(|_| None).collect();
    for d in drives {
        let index = d.slot.index();
        if let Some(place) = disks.get_mut(index) {
            *place = Some(Box::new(DriveDisk {
                kind: match d.kind {
                    DriveKind::Disk => DiskKind::HardDisk,
                    DriveKind::Cdrom => DiskKind::Cdrom,
                },
                backend: d.backend.clone(),
            }));
        }
    }
    disks
}

/// The bytes of `out 0xEC, al`.
const OUT_BIOS_PORT: [u8; 2] = [0xe6, rom::BIOS_PORT];
const CR0_PE: u64 = 1;

/// Guest memory as the BIOS sees it: RAM, and the VGA text buffer (a device on the MMIO bus) at
/// 0xB8000; a range that is not entirely one of them is an error.
pub struct RamView<'a> {
    pub ram: &'a GuestMemoryMmap,
    pub mmio: &'a Bus,
}

impl RamView<'_> {
    fn in_text_buffer(addr: u64, len: usize) -> bool {
        let end = addr.saturating_add(len as u64);
        addr >= devices::vga_text::BASE
            && end <= devices::vga_text::BASE + devices::vga_text::SIZE as u64
    }
}

impl GuestMem for RamView<'_> {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if Self::in_text_buffer(addr, buf.len()) && self.mmio.read(addr, buf) {
            return Ok(());
        }
        self.ram
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| MemError {
                addr,
                len: buf.len(),
            })
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        if Self::in_text_buffer(addr, data.len()) && self.mmio.write(addr, data) {
            return Ok(());
        }
        self.ram
            .write_slice(data, GuestAddress(addr))
            .map_err(|_| MemError {
                addr,
                len: data.len(),
            })
    }
}

/// The CMOS through its index and data ports on the I/O bus, as a real BIOS reaches it.
pub struct BusCmos(pub Arc<Bus>);

impl Cmos for BusCmos {
    fn read(&mut self, index: u8) -> u8 {
        let mut v = [0u8];
        self.0
            .write(u64::from(arch::layout::RTC_PORT), &[index & 0x7f]);
        self.0.read(u64::from(arch::layout::RTC_PORT) + 1, &mut v);
        v[0]
    }

    fn write(&mut self, index: u8, value: u8) {
        self.0
            .write(u64::from(arch::layout::RTC_PORT), &[index & 0x7f]);
        self.0
            .write(u64::from(arch::layout::RTC_PORT) + 1, &[value]);
    }
}

/// What a BIOS trap did.
#[derive(Debug, PartialEq, Eq)]
pub enum TrapOutcome {
    /// A BIOS call, serviced; the vCPU goes on.
    Serviced,
    /// Not a BIOS call (a write to the port from elsewhere): hand it to the I/O bus.
    NotACall,
}

/// kettle's BIOS for one boot of a VM, shared by its vCPUs.
pub struct BiosRuntime {
    bios: Mutex<Bios>,
    io_bus: Arc<Bus>,
    mmio_bus: Arc<Bus>,
    /// Rate limit for the log of services that failed on guest addresses.
    errors: Mutex<u64>,
}

impl BiosRuntime {
    pub fn new(bios: Bios, io_bus: Arc<Bus>, mmio_bus: Arc<Bus>) -> Self {
        Self {
            bios: Mutex::new(bios),
            io_bus,
            mmio_bus,
            errors: Mutex::new(0),
        }
    }

    /// Handles a vCPU's write to [`rom::BIOS_PORT`].
    pub fn trap(&self, fd: &VcpuFd, mem: &GuestMemoryMmap) -> Result<TrapOutcome, String> {
        let sregs = fd.get_sregs().map_err(|e| format!("reading sregs: {e}"))?;
        if sregs.cr0 & CR0_PE != 0 || sregs.cs.selector != rom::ROM_SEGMENT {
            return Ok(TrapOutcome::NotACall);
        }
        let mut kregs = fd
            .get_regs()
            .map_err(|e| format!("reading registers: {e}"))?;
        let cs_base = sregs.cs.base;
        let ip = kregs.rip as u16;
        let out_at = |ip: u16| {
            let mut b = [0u8; 2];
            mem.read_slice(&mut b, GuestAddress(cs_base + u64::from(ip)))
                .is_ok()
                && b == OUT_BIOS_PORT
        };
        // RIP past the `out` (the stub's trap IP), or at it.
        let after = if out_at(ip.wrapping_sub(2)) {
            ip
        } else if out_at(ip) {
            ip.wrapping_add(2)
        } else {
            return Ok(TrapOutcome::NotACall);
        };
        let Some(trap) = rom::trap_at(after) else {
            return Ok(TrapOutcome::NotACall);
        };
        let mut regs = to_real_mode(&kregs, &sregs);
        regs.ip = after;
        let before = regs;
        let mut ram = RamView {
            ram: mem,
            mmio: &self.mmio_bus,
        };
        let mut io = BusPorts(&self.io_bus);
        let result = {
            let mut bios = self.bios.lock().unwrap();
            match trap {
                Trap::Post => bios.post(&mut ram, &mut regs, &mut io),
                Trap::Interrupt(vector) => bios.handle(vector, &mut regs, &mut ram, &mut io),
            }
        };
        match result {
            Ok(()) => {}
            Err(e @ BiosError::NoBootDevice { .. }) => {
                log::warn!("the BIOS found nothing to boot: {e}; the VM waits (the guest's console says so too)");
            }
            Err(e) => self.log_error(&e.to_string()),
        }
        write_back(fd, &mut kregs, &sregs, &before, &regs)?;
        Ok(TrapOutcome::Serviced)
    }

    fn log_error(&self, msg: &str) {
        let mut n = self.errors.lock().unwrap();
        *n += 1;
        if *n <= 10 || n.is_multiple_of(1000) {
            log::warn!("{msg}");
        }
    }
}

/// The vCPU's registers as a real-mode service sees them.
fn to_real_mode(r: &kvm_regs, s: &kvm_sregs) -> RealModeRegs {
    RealModeRegs {
        eax: r.rax as u32,
        ebx: r.rbx as u32,
        ecx: r.rcx as u32,
        edx: r.rdx as u32,
        esi: r.rsi as u32,
        edi: r.rdi as u32,
        ebp: r.rbp as u32,
        esp: r.rsp as u32,
        cs: s.cs.selector,
        ds: s.ds.selector,
        es: s.es.selector,
        fs: s.fs.selector,
        gs: s.gs.selector,
        ss: s.ss.selector,
        ip: r.rip as u16,
        flags: r.rflags as u32,
    }
}

/// Writes the service's registers back: all general registers and RIP always, the segment
/// registers (with real-mode bases) when the service changed one.
fn write_back(
    fd: &VcpuFd,
    k: &mut kvm_regs,
    s: &kvm_sregs,
    before: &RealModeRegs,
    r: &RealModeRegs,
) -> Result<(), String> {
    k.rax = u64::from(r.eax);
    k.rbx = u64::from(r.ebx);
    k.rcx = u64::from(r.ecx);
    k.rdx = u64::from(r.edx);
    k.rsi = u64::from(r.esi);
    k.rdi = u64::from(r.edi);
    k.rbp = u64::from(r.ebp);
    k.rsp = u64::from(r.esp);
    k.rip = u64::from(r.ip);
    k.rflags = u64::from(r.flags) | 0x2;
    let segs = |x: &RealModeRegs| [x.cs, x.ds, x.es, x.fs, x.gs, x.ss];
    if segs(before) != segs(r) {
        let mut s = *s;
        for (seg, sel) in [
            (&mut s.cs, r.cs),
            (&mut s.ds, r.ds),
            (&mut s.es, r.es),
            (&mut s.fs, r.fs),
            (&mut s.gs, r.gs),
            (&mut s.ss, r.ss),
        ] {
            seg.selector = sel;
            seg.base = u64::from(sel) << 4;
        }
        fd.set_sregs(&s)
            .map_err(|e| format!("writing sregs: {e}"))?;
    }
    fd.set_regs(k)
        .map_err(|e| format!("writing registers: {e}"))
}

/// Firmware memory outside guest RAM: host memory of its own, registered as a memory slot: the
/// ROM below 4 GiB (read-only where KVM can), at `4 GiB - len`, where the CPU fetches its first
/// instruction. Not part of a saved state (it is rebuilt from the image). Unmapped when dropped.
pub struct RomMapping {
    host: *mut libc::c_void,
    len: usize,
    guest: u64,
}

// SAFETY: the mapping is plain memory owned by this struct; KVM reads it, nothing in kettle
// writes it after creation.
unsafe impl Send for RomMapping {}
unsafe impl Sync for RomMapping {}

impl RomMapping {
    /// Copies `image` (a multiple of 4 KiB) into fresh host memory, for guest-physical `guest`.
    pub fn new(image: &[u8], guest: u64) -> std::io::Result<Self> {
        let len = image.len();
        // SAFETY: an anonymous private mapping of `len` bytes; checked for failure below.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `host` is a fresh writable mapping of `len` bytes, `image` is `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), host as *mut u8, len) };
        Ok(Self { host, len, guest })
    }

    /// The guest-physical address it is mapped at.
    pub fn guest_addr(&self) -> u64 {
        self.guest
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn host_addr(&self) -> u64 {
        self.host as u64
    }

    /// The image as mapped.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `host` maps `len` initialised bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.host as *const u8, self.len) }
    }
}

impl Drop for RomMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `new`; KVM's slot is gone with the VM fd,
        // which `Vm` drops first.
        unsafe { libc::munmap(self.host, self.len) };
    }
}
