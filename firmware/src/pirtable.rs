//! The PCI IRQ routing table, "$PIR" (Microsoft's PCI IRQ Routing Table Specification 1.0):
//! which PIRQ line of the interrupt router each interrupt pin of each PCI device is wired to,
//! and which ISA IRQs a line may be routed to. Operating systems that route PCI interrupts
//! through the 8259s without ACPI read it (Linux with `pci=noacpi` or `acpi=off`, Windows 9x and
//! NT 4 PnP), and scan 0xF0000-0xFFFFF for it on 16-byte boundaries.
//!
//! The router is the PIIX4's function 0 (00:07.0, 8086:7110). Its link values are the offsets
//! of its routing registers `PIRQRC[A:D]` (PIIX4 datasheet 3.2.4), 0x60-0x63, as Linux's PIIX
//! router and Windows expect. Pin INTA#-INTD# of device d is on PIRQ[(d + pin) mod 4], the
//! DSDT `_PRT`'s swizzle, and each link's IRQ bitmap holds exactly the IRQ the firmware routes
//! that PIRQ to (`PIRQ_IRQS`): kettle wires the cards' interrupts to those IRQs and does not
//! follow a guest that re-routes them, so offering others would only invite it to.

use crate::legacy::{checksum, LegacyConfig, PIIX4_DEVICE, PIIX4_ROUTER_FUNCTION};
use arch::layout::PIRQ_IRQS;

/// Layouts and values from the PCI IRQ Routing Table Specification 1.0.
pub mod spec {
    pub const SIGNATURE: [u8; 4] = *b"$PIR";
    /// Version 1.0: minor byte then major byte.
    pub const VERSION: u16 = 0x0100;
    pub const HEADER_LEN: usize = 32;
    pub const HEADER_SIZE: usize = 6;
    pub const HEADER_ROUTER_BUS: usize = 8;
    pub const HEADER_ROUTER_DEVFN: usize = 9;
    pub const HEADER_EXCLUSIVE_IRQS: usize = 10;
    pub const HEADER_COMPAT_VENDOR: usize = 12;
    pub const HEADER_COMPAT_DEVICE: usize = 14;
    pub const HEADER_CHECKSUM: usize = 31;
    /// One slot entry: bus, device/function, 4 x (link, bitmap), slot number, reserved.
    pub const SLOT_LEN: usize = 16;
    pub const SLOT_NUMBER: usize = 14;
    /// Slot number 0: a device built into the board.
    pub const SLOT_EMBEDDED: u8 = 0;

    /// The PIIX4 as compatible router: Intel 82371AB/EB/MB PCI-to-ISA bridge.
    pub const PIIX4_VENDOR: u16 = 0x8086;
    pub const PIIX4_DEVICE_ID: u16 = 0x7110;
    /// PIIX4 `PIRQRC[A:D]`, the link values of PIRQA-D.
    pub const PIIX4_PIRQRC: u8 = 0x60;
}

/// PCI interrupt pins per device.
const PCI_PINS: u8 = 4;

/// Builds the table for `cfg`: one slot entry per device on bus 0 with an interrupt pin. It
/// holds no addresses, so it does not depend on where it goes.
pub fn build(cfg: &LegacyConfig) -> Vec<u8> {
    let devices = cfg.interrupt_devices();
    let mut t = vec![0u8; spec::HEADER_LEN];
    t[..4].copy_from_slice(&spec::SIGNATURE);
    t[4..6].copy_from_slice(&spec::VERSION.to_le_bytes());
    let size = (spec::HEADER_LEN + spec::SLOT_LEN * devices.len()) as u16;
    t[spec::HEADER_SIZE..spec::HEADER_SIZE + 2].copy_from_slice(&size.to_le_bytes());
    t[spec::HEADER_ROUTER_BUS] = 0;
    t[spec::HEADER_ROUTER_DEVFN] = devfn(PIIX4_DEVICE, PIIX4_ROUTER_FUNCTION);
    // No IRQ is dedicated to PCI alone.
    t[spec::HEADER_EXCLUSIVE_IRQS..spec::HEADER_EXCLUSIVE_IRQS + 2].copy_from_slice(&[0, 0]);
    t[spec::HEADER_COMPAT_VENDOR..spec::HEADER_COMPAT_VENDOR + 2]
        .copy_from_slice(&spec::PIIX4_VENDOR.to_le_bytes());
    t[spec::HEADER_COMPAT_DEVICE..spec::HEADER_COMPAT_DEVICE + 2]
        .copy_from_slice(&spec::PIIX4_DEVICE_ID.to_le_bytes());
    // Miniport data (16-19) and the reserved bytes (20-30) stay 0.
    for device in devices {
        let mut slot = [0u8; spec::SLOT_LEN];
        slot[1] = devfn(device, 0);
        for pin in 0..PCI_PINS {
            let (link, irqs) = link_of(device, pin);
            let at = 2 + 3 * usize::from(pin);
            slot[at] = link;
            slot[at + 1..at + 3].copy_from_slice(&irqs.to_le_bytes());
        }
        // The PIIX4 is on the board; a network card sits in a slot, named by its device number.
        slot[spec::SLOT_NUMBER] = if device == PIIX4_DEVICE {
            spec::SLOT_EMBEDDED
        } else {
            device
        };
        t.extend_from_slice(&slot);
    }
    t[spec::HEADER_CHECKSUM] = checksum(&t);
    t
}

/// The link value and IRQ bitmap of `device`'s interrupt pin `pin` (0 = INTA#).
pub fn link_of(device: u8, pin: u8) -> (u8, u16) {
    let pirq = (device + pin) % PCI_PINS;
    (spec::PIIX4_PIRQRC + pirq, 1 << PIRQ_IRQS[usize::from(pirq)])
}

fn devfn(device: u8, function: u8) -> u8 {
    device << 3 | function
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::checksum;
    use arch::layout::MemoryLayout;

    fn table(nics: &[u8]) -> Vec<u8> {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        build(&LegacyConfig {
            cpus: 1,
            layout: &layout,
            nic_slots: nics,
            lpt: false,
            uuid: [0; 16],
        })
    }

    fn u16_at(t: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([t[at], t[at + 1]])
    }

    #[test]
    fn header_names_the_piix4_router_and_sums_to_zero() {
        let t = table(&[10, 11]);
        assert_eq!(&t[..4], b"$PIR");
        assert_eq!(u16_at(&t, 4), 0x0100);
        assert_eq!(usize::from(u16_at(&t, 6)), t.len());
        assert_eq!(t.len(), 32 + 3 * 16);
        assert_eq!(t.len() % 16, 0, "Linux wants the size a multiple of 16");
        assert_eq!((t[8], t[9]), (0, 0x38), "router at 00:07.0");
        assert_eq!(u16_at(&t, 10), 0, "no exclusive IRQs");
        assert_eq!((u16_at(&t, 12), u16_at(&t, 14)), (0x8086, 0x7110));
        assert_eq!(checksum(&t), 0);
    }

    #[test]
    fn slots_follow_the_prt_swizzle() {
        let t = table(&[10, 11, 12, 13]);
        let slots: Vec<&[u8]> = t[32..].chunks(16).collect();
        assert_eq!(slots.len(), 5);
        let devices: Vec<u8> = slots.iter().map(|s| s[1] >> 3).collect();
        assert_eq!(devices, [7, 10, 11, 12, 13]);
        for s in &slots {
            let device = s[1] >> 3;
            assert_eq!((s[0], s[1] & 7), (0, 0));
            for pin in 0..4u8 {
                let at = 2 + 3 * usize::from(pin);
                let pirq = (device + pin) % 4;
                assert_eq!(s[at], 0x60 + pirq);
                let irq = PIRQ_IRQS[usize::from(pirq)];
                assert_eq!(u16_at(s, at + 1), 1 << irq);
                // The same IRQ the MP table gives the pin.
                assert_eq!(irq, crate::mptable::pci_pin_irq(device, pin));
            }
            assert_eq!(s[14], if device == 7 { 0 } else { device });
        }
        // Slot 10's INTA# is PIRQC (IRQ 11), as vmm's pci_inta_gsi says: 10 % 4 = 2.
        assert_eq!(slots[1][2], 0x62);
        assert_eq!(u16_at(slots[1], 3), 1 << 11);
    }
}
