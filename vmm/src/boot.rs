//! Loading what the guest boots: a Linux bzImage (64-bit boot protocol) or an ELF kernel with a
//! PVH entry note, the initrd, the command line, and the firmware tables they point at.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arch::boot::{BootInfo, CMDLINE_ADDR, KERNEL_LOAD_ADDR};
use arch::e820::E820Entry;
use arch::layout::MemoryLayout;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open {what} {path}: {err}")]
    Open {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("kernel {path} is neither a bzImage nor an ELF kernel: {err}")]
    UnknownKernel { path: PathBuf, err: String },
    #[error("kernel {path} could not be loaded: {err}")]
    Load { path: PathBuf, err: String },
    #[error("ELF kernel {0} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); use its bzImage")]
    NoPvhEntry(PathBuf),
    #[error("initrd {path} ({size} bytes) does not fit in guest memory below {limit:#x} above the kernel; give the guest more --memory")]
    InitrdTooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("reading initrd {path}: {err}")]
    ReadInitrd { path: PathBuf, err: String },
    #[error("writing the command line: {0}")]
    Cmdline(vm_memory::GuestMemoryError),
    #[error(transparent)]
    Arch(#[from] arch::boot::BootError),
    #[error("building ACPI tables: {0}")]
    Acpi(String),
}

/// Where and how the boot vCPU starts.
#[derive(Clone, Copy, Debug)]
pub struct EntryPoint {
    pub addr: u64,
    /// 64-bit long mode (bzImage) or 32-bit protected mode (PVH).
    pub long_mode: bool,
}

fn open(what: &'static str, path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|err| BootError::Open {
        what,
        path: path.to_path_buf(),
        err,
    })
}

/// Loads kernel, initrd and command line into `mem`, writes the zero page or PVH start_info,
/// and returns the entry point.
pub fn load(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    e820: &[E820Entry],
    rsdp: u64,
) -> Result<EntryPoint, BootError> {
    let mut f = open("kernel", kernel)?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|e| BootError::UnknownKernel {
            path: kernel.to_path_buf(),
            err: e.to_string(),
        })?;
    let is_elf = magic == *b"\x7fELF";
    let load_err = |e: linux_loader::loader::Error| BootError::Load {
        path: kernel.to_path_buf(),
        err: e.to_string(),
    };

    let (result, entry) = if is_elf {
        let r =
            Elf::load(mem, None, &mut f, Some(GuestAddress(KERNEL_LOAD_ADDR))).map_err(load_err)?;
        let entry = match r.pvh_boot_cap {
            linux_loader::loader::elf::PvhBootCapability::PvhEntryPresent(a) => a.0,
            _ => return Err(BootError::NoPvhEntry(kernel.to_path_buf())),
        };
        (
            r,
            EntryPoint {
                addr: entry,
                long_mode: false,
            },
        )
    } else {
        let r = BzImage::load(
            mem,
            Some(GuestAddress(KERNEL_LOAD_ADDR)),
            &mut f,
            Some(GuestAddress(KERNEL_LOAD_ADDR)),
        )
        .map_err(|e| match e {
            linux_loader::loader::Error::Bzimage(_) => BootError::UnknownKernel {
                path: kernel.to_path_buf(),
                err: e.to_string(),
            },
            other => load_err(other),
        })?;
        // The 64-bit entry point is 0x200 past the start of the protected-mode kernel.
        let addr = r.kernel_load.0 + 0x200;
        (
            r,
            EntryPoint {
                addr,
                long_mode: true,
            },
        )
    };

    let initrd_range = match initrd {
        Some(path) => {
            let ceiling = result
                .setup_header
                .map(|h| u64::from(h.initrd_addr_max) + 1)
                .filter(|&c| c > 1)
                .unwrap_or(arch::layout::PCI_HOLE_START);
            Some(load_initrd(
                mem,
                path,
                layout.low_ram_end(),
                ceiling,
                result.kernel_end,
            )?)
        }
        None => None,
    };

    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(BootError::Cmdline)?;

    let info = BootInfo {
        cmdline_len: cmdline.len(),
        initrd: initrd_range,
        e820,
        rsdp,
    };
    match result.setup_header {
        Some(hdr) if entry.long_mode => arch::boot::write_zero_page(mem, hdr, &info)?,
        _ => arch::boot::write_pvh_start_info(mem, &info)?,
    }
    Ok(entry)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    low_ram_end: u64,
    ceiling: u64,
    kernel_end: u64,
) -> Result<(u64, u64), BootError> {
    let mut f = open("initrd", path)?;
    let size = f
        .metadata()
        .map_err(|err| BootError::Open {
            what: "initrd",
            path: path.to_path_buf(),
            err,
        })?
        .len();
    let addr = arch::boot::initrd_address(size, low_ram_end, ceiling, kernel_end).ok_or(
        BootError::InitrdTooBig {
            path: path.to_path_buf(),
            size,
            limit: low_ram_end.min(ceiling),
        },
    )?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut f, size as usize)
        .map_err(|e| BootError::ReadInitrd {
            path: path.to_path_buf(),
            err: e.to_string(),
        })?;
    Ok((addr, size))
}
