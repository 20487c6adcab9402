//! Direct kernel boot on x86: the GDT, identity page tables and register state a Linux bzImage
//! (64-bit boot protocol, Documentation/arch/x86/boot.rst) or a PVH ELF kernel (Xen's
//! "x86/HVM direct boot ABI") expects, and the zero page / start_info describing memory,
//! command line, initrd and the ACPI RSDP.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::e820::E820Entry;

/// Guest-physical addresses of the boot structures, all in conventional memory below the EBDA.
pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const PVH_INFO_ADDR: u64 = 0x6000;
pub const PVH_MODLIST_ADDR: u64 = 0x6040;
pub const PVH_MEMMAP_ADDR: u64 = 0x6100;
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
pub const BOOT_STACK_TOP: u64 = 0x8ff0;
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
/// Four page directories mapping the first 4 GiB with 2 MiB pages.
pub const PD_ADDR: u64 = 0xb000;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// The largest command line kettle passes (Linux's COMMAND_LINE_SIZE on x86 is 2048).
pub const CMDLINE_MAX: usize = 2048;
/// Where kernels are loaded.
pub const KERNEL_LOAD_ADDR: u64 = 0x10_0000;

/// Selectors the Linux boot protocol requires (__BOOT_CS / __BOOT_DS).
pub const BOOT_CS: u16 = 0x10;
pub const BOOT_DS: u16 = 0x18;
const BOOT_TSS: u16 = 0x20;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const CAN_USE_HEAP: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("writing the {0} into guest memory failed: {1}")]
    Write(&'static str, vm_memory::GuestMemoryError),
    #[error("the e820 map has {0} entries, more than the zero page holds")]
    TooManyE820(usize),
}

/// A GDT entry from flags (in the 0xF0FF layout: G, D/B, L, AVL ... P, DPL, S, type), base, limit.
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | (((limit as u64 & 0x000f_0000) >> 16) << 48)
        | ((flags as u64 & 0xf0ff) << 40)
}

fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let flag = |shift: u64, bits: u64| ((entry >> shift) & bits) as u8;
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = flag(55, 1);
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 { (limit << 12) | 0xfff } else { limit },
        selector: u16::from(table_index) * 8,
        type_: flag(40, 0xf),
        present: flag(47, 1),
        dpl: flag(45, 3),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g,
        avl: flag(52, 1),
        unusable: u8::from(flag(47, 1) == 0),
        padding: 0,
    }
}

/// The GDT used for both boot modes: entries 2/3 are flat code/data (64-bit or 32-bit code),
/// entry 4 a TSS that KVM needs to be valid (busy, base 0).
fn gdt(long_mode: bool) -> [u64; 5] {
    let code_flags = if long_mode { 0xa09b } else { 0xc09b };
    [
        0,
        0,
        gdt_entry(code_flags, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

fn write<T: ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    val: T,
) -> Result<(), BootError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|e| BootError::Write(what, e))
}

/// Writes the GDT and an empty IDT and returns the special registers for the entry mode:
/// 64-bit long mode with identity paging of the first 4 GiB (bzImage), or 32-bit protected
/// mode with paging off (PVH).
pub fn setup_sregs(
    mem: &GuestMemoryMmap,
    sregs: &mut kvm_sregs,
    long_mode: bool,
) -> Result<(), BootError> {
    let table = gdt(long_mode);
    for (i, e) in table.iter().enumerate() {
        write(mem, "GDT", GDT_ADDR + 8 * i as u64, *e)?;
    }
    write(mem, "IDT", IDT_ADDR, 0u64)?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&table) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 7;

    let code = segment_from_gdt(table[2], (BOOT_CS / 8) as u8);
    let data = segment_from_gdt(table[3], (BOOT_DS / 8) as u8);
    let tss = segment_from_gdt(table[4], (BOOT_TSS / 8) as u8);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    if long_mode {
        setup_page_tables(mem)?;
        sregs.cr3 = PML4_ADDR;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    } else {
        sregs.cr0 = (sregs.cr0 | X86_CR0_PE | X86_CR0_ET) & !X86_CR0_PG;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
    Ok(())
}

/// Identity-maps the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[0..4] -> four PDs.
fn setup_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootError> {
    const PRESENT_RW: u64 = 0x3;
    const PAGE_SIZE_2M: u64 = 0x80;
    write(mem, "PML4", PML4_ADDR, PDPT_ADDR | PRESENT_RW)?;
    for i in 0..4u64 {
        let pd = PD_ADDR + i * 0x1000;
        write(mem, "PDPT", PDPT_ADDR + i * 8, pd | PRESENT_RW)?;
        for j in 0..512u64 {
            let phys = ((i * 512 + j) << 21) | PRESENT_RW | PAGE_SIZE_2M;
            write(mem, "page directory", pd + j * 8, phys)?;
        }
    }
    Ok(())
}

/// General registers at kernel entry.
pub fn entry_regs(entry: u64, long_mode: bool) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_TOP,
        rbp: BOOT_STACK_TOP,
        ..Default::default()
    };
    if long_mode {
        // 64-bit boot protocol: %rsi holds the zero page.
        regs.rsi = ZERO_PAGE_ADDR;
    } else {
        // PVH: %ebx holds the hvm_start_info.
        regs.rbx = PVH_INFO_ADDR;
    }
    regs
}

/// The FPU state at reset (FCW 0x37F, MXCSR 0x1F80).
pub fn reset_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// What the zero page or start_info must say besides memory.
pub struct BootInfo<'a> {
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub e820: &'a [E820Entry],
    pub rsdp: u64,
}

/// Writes the Linux zero page for a bzImage whose setup header the loader read.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    hdr: setup_header,
    info: &BootInfo,
) -> Result<(), BootError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = 0xfe00;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = info.cmdline_len as u32;
    if let Some((addr, size)) = info.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    params.acpi_rsdp_addr = info.rsdp;
    if info.e820.len() > params.e820_table.len() {
        return Err(BootError::TooManyE820(info.e820.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(info.e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = info.e820.len() as u8;
    write(mem, "zero page", ZERO_PAGE_ADDR, params)
}

/// Writes the PVH hvm_start_info, its module list (the initrd) and memory map.
pub fn write_pvh_start_info(mem: &GuestMemoryMmap, info: &BootInfo) -> Result<(), BootError> {
    let max_entries = ((ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) as usize)
        / std::mem::size_of::<hvm_memmap_table_entry>();
    if info.e820.len() > max_entries {
        return Err(BootError::TooManyE820(info.e820.len()));
    }
    for (i, e) in info.e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        let at = PVH_MEMMAP_ADDR + (i * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
        write(mem, "PVH memory map", at, entry)?;
    }
    let mut start = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        rsdp_paddr: info.rsdp,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: info.e820.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = info.initrd {
        let module = hvm_modlist_entry {
            paddr: addr,
            size,
            ..Default::default()
        };
        write(mem, "PVH module list", PVH_MODLIST_ADDR, module)?;
        start.nr_modules = 1;
        start.modlist_paddr = PVH_MODLIST_ADDR;
    }
    write(mem, "PVH start info", PVH_INFO_ADDR, start)
}

/// Where to put an initrd of `size` bytes: page-aligned, as high as possible below both
/// `ceiling` (the kernel's initrd_addr_max + 1) and the end of low RAM, above the kernel.
pub fn initrd_address(size: u64, low_ram_end: u64, ceiling: u64, kernel_end: u64) -> Option<u64> {
    let top = low_ram_end.min(ceiling);
    let addr = top.checked_sub(size)? & !0xfff;
    (addr >= kernel_end.max(KERNEL_LOAD_ADDR)).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap()
    }

    #[test]
    fn long_mode_sregs_and_page_tables() {
        let m = mem();
        let mut s = kvm_sregs::default();
        setup_sregs(&m, &mut s, true).unwrap();
        assert_eq!(s.cs.selector, BOOT_CS);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cs.db, 0);
        assert_eq!(s.ds.selector, BOOT_DS);
        assert_eq!(s.ds.limit, 0xffff_ffff);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr0 & X86_CR0_PG, X86_CR0_PG);
        let pml4: u64 = m.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4, PDPT_ADDR | 3);
        // The 2 MiB page that maps 3 GiB + 2 MiB.
        let pde: u64 = m.read_obj(GuestAddress(PD_ADDR + 3 * 0x1000 + 8)).unwrap();
        assert_eq!(pde, ((3 << 30) + (2 << 20)) | 0x83);
    }

    #[test]
    fn protected_mode_sregs_have_paging_off() {
        let m = mem();
        let mut s = kvm_sregs::default();
        setup_sregs(&m, &mut s, false).unwrap();
        assert_eq!(s.cs.l, 0);
        assert_eq!(s.cs.db, 1);
        assert_eq!(s.cr0 & X86_CR0_PG, 0);
        assert_eq!(s.cr0 & X86_CR0_PE, X86_CR0_PE);
        assert_eq!(s.efer, 0);
        assert_eq!(entry_regs(0x1234, false).rbx, PVH_INFO_ADDR);
    }

    #[test]
    fn zero_page_carries_e820_initrd_and_rsdp() {
        let m = mem();
        let e820 = [E820Entry {
            addr: 0,
            size: 0x9fc00,
            kind: 1,
        }];
        let info = BootInfo {
            cmdline_len: 10,
            initrd: Some((0x300_0000, 0x1000)),
            e820: &e820,
            rsdp: 0xe0000,
        };
        write_zero_page(&m, setup_header::default(), &info).unwrap();
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        assert_eq!(p.e820_entries, 1);
        assert_eq!({ p.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ p.acpi_rsdp_addr }, 0xe0000);
        assert_eq!({ p.hdr.type_of_loader }, 0xff);
    }

    #[test]
    fn pvh_start_info_has_module_and_memmap() {
        let m = mem();
        let e820 = [
            E820Entry {
                addr: 0,
                size: 0x9fc00,
                kind: 1,
            },
            E820Entry {
                addr: 0x100000,
                size: 0x100000,
                kind: 1,
            },
        ];
        let info = BootInfo {
            cmdline_len: 0,
            initrd: Some((0x200_0000, 0x2000)),
            e820: &e820,
            rsdp: 0xe0000,
        };
        write_pvh_start_info(&m, &info).unwrap();
        let s: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_ADDR)).unwrap();
        assert_eq!(s.magic, XEN_HVM_START_MAGIC);
        assert_eq!(s.memmap_entries, 2);
        assert_eq!(s.nr_modules, 1);
        let md: hvm_modlist_entry = m.read_obj(GuestAddress(PVH_MODLIST_ADDR)).unwrap();
        assert_eq!(md.paddr, 0x200_0000);
    }

    #[test]
    fn initrd_goes_high_but_not_over_the_kernel() {
        assert_eq!(
            initrd_address(0x1800, 0x800_0000, u64::MAX, 0x200_0000),
            Some(0x800_0000 - 0x2000)
        );
        assert_eq!(
            initrd_address(0x1000, 0x800_0000, 0x400_0000, 0x200_0000),
            Some(0x3ff_f000)
        );
        assert_eq!(
            initrd_address(0x700_0000, 0x800_0000, u64::MAX, 0x200_0000),
            None
        );
    }
}
