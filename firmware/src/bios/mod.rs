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
//!    [`Bios::post`] for the reset vector's trap) with a [`GuestMem`] view of guest RAM and an
//!    [`IoPorts`] view of its I/O bus;
//! 3. writes every register of the [`RealModeRegs`] back, including IP: a hardware interrupt
//!    handler moves IP to a ROM tail that acknowledges the interrupt controller before `iret`.
//!
//! The stub's `iret` then returns to the caller. Services report status the way the PC/AT BIOS
//! does, in CF/ZF of the FLAGS image the `iret` pops (see [`Call::set_carry`]).
//!
//! Nothing here touches KVM: the services see registers and a memory trait, so they are unit
//! tested on plain byte arrays.
//!
//! # Services that wait, and services that boot
//!
//! A service never blocks inside the VMM: INT 16h's "wait for a key" moves IP to a ROM tail
//! ([`rom::KBD_WAIT`]) that halts until the next interrupt and then calls the service again, so
//! the VMM can pause, save or stop the vCPU while the guest waits. INT 18h and 19h (and POST) may
//! replace every register: they start the boot code, or park the vCPU in the POST stub's `hlt`
//! loop when nothing boots.
//!
//! # Where the BIOS keeps its state
//!
//! In guest memory, like a real BIOS: the IVT, the BIOS data area (keyboard buffer, tick count,
//! cursor), the EBDA (with kettle's boot record: what booted, the El Torito boot for AX=4B01h)
//! and the text buffer. A saved VM carries all of it, so a restored VM's BIOS (a fresh [`Bios`]
//! over the saved memory) goes on where the old one was; the [`Bios`] value itself keeps only
//! its configuration, the drives, the A20 gate as the VMM reports it and the serial console's
//! half-read escape sequence.
//!
//! # What the VMM provides
//!
//! - [`GuestMem`]: guest RAM (every access fallible, never partial);
//! - [`IoPorts`]: the I/O bus, for COM1 (console output, serial keyboard input), the i8042's
//!   data port and PCI configuration mechanism 1;
//! - [`Cmos`]: the RTC's registers;
//! - [`BiosDisk`]: the IDE drives, by IDE position, for INT 13h and booting (see [`Bios::new`]).
//!
//! # Modules
//!
//! - [`rom`]: the ROM image, its fixed addresses and the trap-IP decoder;
//! - [`cpu`]: real-mode registers, segment:offset addressing with the 1 MiB wrap, the stacked
//!   FLAGS, the memory and port traits;
//! - `services`: [`Bios`] and its dispatch, the INT 08h/11h/12h/15h/1Ah services;
//! - `video`: INT 10h, text output to COM1 and the text buffer;
//! - `disk`: [`BiosDisk`] and INT 13h (CHS, EDD 3.0, El Torito no-emulation CD-ROM);
//! - `boot`: boot device selection (hard disk, El Torito CD-ROM), INT 18h/19h;
//! - `keyboard`: INT 09h and INT 16h, the i8042 and the serial console as keyboards;
//! - `pci`: INT 1Ah AH=B1h, the PCI BIOS;
//! - `post`: [`Bios::post`], the IVT, BIOS data area and EBDA, then the boot;
//! - [`spec`]: the numbers of the interfaces (BIOS data area layout, FLAGS bits, CMOS
//!   registers, INT 13h/EDD/El Torito structures, scancodes, PCI BIOS codes).

mod boot;
pub mod cpu;
mod disk;
mod keyboard;
mod pci;
mod post;
pub mod rom;
mod services;
pub mod spec;
#[cfg(test)]
mod tests;
mod video;

pub use boot::{
    BootAttempt, BootDevice, BootFailure, BOOT_SECTOR_ADDR, BOOT_SECTOR_LEN, BOOT_SIGNATURE,
};
pub use cpu::{Call, GuestMem, IoPorts, MemError, RealMem, RealModeRegs};
pub use disk::{BiosDisk, DiskKind, Geometry};
pub use services::{Bios, BiosConfig, Cmos};

/// What the BIOS could not do.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BiosError {
    /// No device of the boot order booted; the console has shown why.
    #[error("no bootable device{}", boot::describe(attempts))]
    NoBootDevice { attempts: Vec<BootAttempt> },
    /// A disk image failed a read or write INT 13h asked for; the guest got the error status.
    #[error("BIOS INT 13h drive {drive:#04x}, sector {lba}: {message}")]
    Disk {
        drive: u8,
        lba: u64,
        message: String,
    },
    /// A guest-controlled address (a buffer, the stack) was not RAM. The service reported the
    /// failure to the guest where it could (CF set); the VMM only logs this and resumes.
    #[error("BIOS INT {vector:02x}h AX={ax:#06x}: {source}")]
    Memory {
        vector: u8,
        ax: u16,
        #[source]
        source: MemError,
    },
    /// POST could not write the IVT, BIOS data area or EBDA (guest RAM too small or not mapped
    /// below 1 MiB).
    #[error("BIOS POST: {0}")]
    PostMemory(#[source] MemError),
}
