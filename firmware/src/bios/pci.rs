//! INT 1Ah AH=B1h, the PCI BIOS's real-mode interface (PCI BIOS Specification 2.1, section 3),
//! over configuration mechanism 1 (ports CF8h/CFCh, PCI Local Bus Specification 2.1, 3.7.4.1).
//!
//! Served: B101h installation check, B102h find device, B103h find class code, B108h-B10Dh read
//! and write configuration bytes, words and dwords. Everything else (the interrupt routing
//! calls B10Eh/B10Fh, special cycles B106h) answers 81h "function not supported"; the VMM owns
//! interrupt routing and tells the guest through $PIR/ACPI.
//!
//! kettle has one PCI bus, so the searches walk bus 0 only: 32 devices, 8 functions each when
//! function 0's header type says multi-function. Accesses to other bus numbers are passed to
//! the configuration ports like any other and read back as absent.

use super::cpu::{Call, IoPorts};
use super::services::VResult;
use super::spec::pci;
use super::Bios;

fn address(bus: u8, devfn: u8, reg: u8) -> u32 {
    pci::ENABLE | (u32::from(bus) << 16) | (u32::from(devfn) << 8) | u32::from(reg & 0xfc)
}

fn read_dword(io: &mut dyn IoPorts, bus: u8, devfn: u8, reg: u8) -> u32 {
    io.outl(pci::CONFIG_ADDRESS, address(bus, devfn, reg));
    io.inl(pci::CONFIG_DATA)
}

/// The functions present on bus 0, in bus order: (devfn, vendor/device dword).
fn functions(io: &mut dyn IoPorts) -> Vec<(u8, u32)> {
    let mut found = Vec::new();
    for dev in 0..pci::DEVICES {
        let devfn = dev << 3;
        let id = read_dword(io, 0, devfn, pci::VENDOR_ID);
        if id as u16 == 0xffff {
            continue;
        }
        found.push((devfn, id));
        let header = (read_dword(io, 0, devfn, pci::HEADER_TYPE) >> 16) as u8;
        if header & pci::MULTI_FUNCTION == 0 {
            continue;
        }
        for func in 1..pci::FUNCTIONS {
            let id = read_dword(io, 0, devfn | func, pci::VENDOR_ID);
            if id as u16 != 0xffff {
                found.push((devfn | func, id));
            }
        }
    }
    found
}

impl Bios {
    pub(super) fn int1a_pci(&mut self, call: &mut Call, io: &mut dyn IoPorts) -> VResult {
        let regs = &mut *call.regs;
        let (bus, devfn, reg) = (regs.bh(), regs.bl(), regs.di());
        let status = match regs.al() {
            // B101h: "PCI " in EDX, mechanism 1, version 2.10, last bus 0. No protected-mode
            // entry point (EDI).
            0x01 => {
                regs.edx = pci::SIGNATURE;
                regs.set_al(pci::HW_MECHANISM_1);
                regs.set_bx(pci::VERSION);
                regs.set_cl(0);
                regs.edi = 0;
                pci::SUCCESSFUL
            }
            // B102h: the SI'th function with device CX, vendor DX -> BH bus, BL devfn.
            0x02 if regs.dx() == 0xffff => pci::BAD_VENDOR_ID,
            0x02 => {
                let want = u32::from(regs.dx()) | (u32::from(regs.cx()) << 16);
                let index = usize::from(regs.si());
                let hit = functions(io)
                    .into_iter()
                    .filter(|(_, id)| *id == want)
                    .nth(index);
                found(regs, hit.map(|(devfn, _)| devfn))
            }
            // B103h: the SI'th function of class code ECX (class, subclass, interface).
            0x03 => {
                let want = regs.ecx & 0x00ff_ffff;
                let index = usize::from(regs.si());
                let hit = functions(io)
                    .into_iter()
                    .filter(|(devfn, _)| {
                        read_dword(io, 0, *devfn, pci::CLASS_REVISION) >> 8 == want
                    })
                    .nth(index);
                found(regs, hit.map(|(devfn, _)| devfn))
            }
            // B108h-B10Dh: configuration register DI of BH/BL, byte, word or dword.
            al @ 0x08..=0x0d => {
                let width: u16 = match al {
                    0x08 | 0x0b => 1,
                    0x09 | 0x0c => 2,
                    _ => 4,
                };
                if reg > 0xff || reg % width != 0 {
                    pci::BAD_REGISTER_NUMBER
                } else {
                    let reg = reg as u8;
                    let shift = 8 * u32::from(reg & 3);
                    if al <= 0x0a {
                        let v = read_dword(io, bus, devfn, reg) >> shift;
                        match width {
                            1 => regs.set_cl(v as u8),
                            2 => regs.set_cx(v as u16),
                            _ => regs.ecx = v,
                        }
                    } else {
                        io.outl(pci::CONFIG_ADDRESS, address(bus, devfn, reg));
                        let port = pci::CONFIG_DATA + u16::from(reg & 3);
                        match width {
                            4 => io.outl(port, regs.ecx),
                            // Byte by byte: a read-modify-write of the dword could clear
                            // write-one-to-clear status bits next to the register.
                            _ => {
                                for (i, b) in regs.ecx.to_le_bytes()[..usize::from(width)]
                                    .iter()
                                    .enumerate()
                                {
                                    io.outb(port + i as u16, *b);
                                }
                            }
                        }
                    }
                    pci::SUCCESSFUL
                }
            }
            other => {
                log::debug!("BIOS: INT 1Ah AX=B1{other:02x}h is not supported");
                pci::FUNC_NOT_SUPPORTED
            }
        };
        call.regs.set_ah(status);
        call.set_carry(status != pci::SUCCESSFUL)
    }
}

/// BH/BL for a search's hit.
fn found(regs: &mut super::RealModeRegs, devfn: Option<u8>) -> u8 {
    match devfn {
        Some(devfn) => {
            regs.set_bh(0);
            regs.set_bl(devfn);
            pci::SUCCESSFUL
        }
        None => pci::DEVICE_NOT_FOUND,
    }
}
