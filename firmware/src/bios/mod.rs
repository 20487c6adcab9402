//! kettle's PC BIOS: a small real-mode ROM whose vectors trap into the VMM, and the BIOS services
//! written in Rust that the VMM runs when they do.
//!
//! # How a BIOS call works
//!
//! The 64 KiB system ROM ([`rom::build`]) holds, for every interrupt vector, a four-byte stub
//! `out BIOS_PORT, al; iret; nop`, plus the same stub at each fixed entry point of the IBM PC/AT
//! BIOS. POST points the interrupt vector table at the stubs. When the guest executes `int 15h`,
//! the CPU pushes FLAGS, CS and IP and jumps to the stub; the `out` to [`rom::BIOS_PORT`] exits to
//! the VMM with the vCPU's IP just past it. The VMM then:
//!
//! 1. checks that CS is [`rom::ROM_SEGMENT`] and asks [`rom::trap_at`] what the IP means (a
//!    stray guest write to the port from anywhere else is not a BIOS call and is ignored);
//! 2. reads the vCPU's registers into a [`RealModeRegs`] and calls [`Bios::handle`] (or
//!    [`Bios::post`] for the reset vector's trap) with a [`GuestMem`] view of guest RAM;
//! 3. writes every register of the [`RealModeRegs`] back, including IP: a hardware interrupt
//!    handler moves IP to a ROM tail that acknowledges the interrupt controller before `iret`.
//!
//! The stub's `iret` then returns to the caller. Services report status the way the PC/AT BIOS
//! does, in CF/ZF of the FLAGS image the `iret` pops (see [`Call::set_carry`]).
//!
//! Nothing here touches KVM: the services see registers and a memory trait, so they are unit
//! tested on plain byte arrays.
//!
//! # Modules
//!
//! - [`rom`]: the ROM image, its fixed addresses and the trap-IP decoder;
//! - [`cpu`]: real-mode registers, segment:offset addressing with the 1 MiB wrap, the stacked
//!   FLAGS;
//! - `services`: [`Bios`], the INT 08h/10h/11h/12h/15h/1Ah services;
//! - `post`: [`Bios::post`], the IVT, BIOS data area and EBDA, and the hand-off to the boot
//!   sector;
//! - [`spec`]: the numbers of the PC/AT BIOS interface (BIOS data area layout, FLAGS bits, the
//!   CMOS registers the services read).

pub mod cpu;
mod post;
pub mod rom;
mod services;
pub mod spec;
#[cfg(test)]
mod tests;

pub use cpu::{Call, GuestMem, MemError, RealMem, RealModeRegs};
pub use services::{Bios, BiosConfig, Cmos};

/// What the BIOS could not do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BiosError {
    /// POST found no boot sector to load.
    #[error("no bootable device")]
    NoBootDevice,
    /// The boot sector does not end in the 0x55 0xAA signature.
    #[error(
        "no bootable device: the boot sector ends in {found:#06x}, not the boot signature 0xaa55"
    )]
    NoBootSignature { found: u16 },
    /// A guest-controlled address (a buffer, the stack) was not RAM. The service reported the
    /// failure to the guest where it could (CF set); the VMM only logs this and resumes.
    #[error("BIOS INT {vector:02x}h AX={ax:#06x}: {source}")]
    Memory {
        vector: u8,
        ax: u16,
        #[source]
        source: MemError,
    },
    /// POST could not write the IVT, BIOS data area or boot sector (guest RAM too small or not
    /// mapped below 1 MiB).
    #[error("BIOS POST: {0}")]
    PostMemory(#[source] MemError),
}
