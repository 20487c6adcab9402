//! The MultiProcessor Specification tables (Intel MP Specification 1.4, chapter 4): the MP
//! floating pointer structure and the MP configuration table it points at, for operating
//! systems that do not read the MADT (Linux with `acpi=off`, Windows NT's MPS HALs, older
//! Unixes).
//!
//! They say what the MADT says, in MP terms:
//!
//! - one processor entry per vCPU, APIC IDs 0..n, the BSP 0;
//! - bus 0 is PCI bus 0, bus 1 the ISA bus;
//! - one IOAPIC, ID n, at `IOAPIC_ADDR`;
//! - ISA IRQs on the IOAPIC pin of the same number, except IRQ 0 (the PIT) on pin 2 and IRQ 2
//!   not at all (its pin is IRQ 0's), and IRQ 9 (the SCI) level-triggered active high: the two
//!   MADT interrupt source overrides, and the identity mappings ACPI implies for the rest;
//! - INTA#-INTD# of every PCI device that has an interrupt pin on the pin of the IRQ its PIRQ
//!   line is routed to: the swizzle of the DSDT's `_PRT`, PIRQ[(device + pin) mod 4];
//! - LINT0 of every local APIC is the 8259's ExtINT (virtual wire), LINT1 the NMI.
//!
//! The floating pointer says "virtual wire" (no IMCR; feature byte 2 bit 7 clear) and that a
//! configuration table is present (feature byte 1 zero); there is no extended table.

use crate::acpi::{OEM_ID, OEM_TABLE_ID};
use crate::legacy::{checksum, LegacyConfig};
use arch::layout::{IOAPIC_ADDR, LAPIC_ADDR, PIRQ_IRQS, SCI_IRQ};

/// Layouts and values from the MP Specification 1.4.
pub mod spec {
    /// Floating pointer structure (4.1): 16 bytes.
    pub const FLOATING_SIGNATURE: [u8; 4] = *b"_MP_";
    pub const FLOATING_LEN: usize = 16;
    /// Its length field counts 16-byte paragraphs.
    pub const FLOATING_PARAGRAPHS: u8 = 1;
    /// Specification revision 1.4.
    pub const SPEC_REV: u8 = 4;
    pub const FLOATING_CHECKSUM: usize = 10;
    /// Feature byte 2 bit 7: IMCR present (PIC mode); clear is virtual wire mode.
    pub const FEATURE2_IMCRP: u8 = 1 << 7;

    /// Configuration table header (4.2): 44 bytes.
    pub const CONFIG_SIGNATURE: [u8; 4] = *b"PCMP";
    pub const HEADER_LEN: usize = 44;
    pub const HEADER_LENGTH: usize = 4;
    pub const HEADER_CHECKSUM: usize = 7;
    pub const HEADER_OEM_ID: usize = 8;
    pub const HEADER_PRODUCT_ID: usize = 16;
    pub const HEADER_ENTRY_COUNT: usize = 34;
    pub const HEADER_LAPIC_ADDR: usize = 36;

    /// Entry types (4.3) and their lengths.
    pub const PROCESSOR: u8 = 0;
    pub const PROCESSOR_LEN: usize = 20;
    pub const BUS: u8 = 1;
    pub const IOAPIC: u8 = 2;
    pub const IO_INTERRUPT: u8 = 3;
    pub const LOCAL_INTERRUPT: u8 = 4;
    /// Bus, IOAPIC and both interrupt assignment entries.
    pub const ENTRY_LEN: usize = 8;

    /// Local APIC version: the integrated APIC (KVM's reads 0x14).
    pub const LAPIC_VERSION: u8 = 0x14;
    /// Processor flags: EN (usable), BP (the bootstrap processor).
    pub const CPU_ENABLED: u8 = 1 << 0;
    pub const CPU_BOOTSTRAP: u8 = 1 << 1;
    /// CPU signature (CPUID 1 EAX: family 6, model 0, stepping 0) and feature flags (CPUID 1
    /// EDX: FPU, APIC). Nominal values: the vCPUs' real CPUID is the VMM's business, and
    /// operating systems read CPUID itself.
    pub const CPU_SIGNATURE: u32 = 0x0600;
    pub const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

    /// Bus type strings, six bytes, space-padded (Table 4-8).
    pub const BUS_PCI: [u8; 6] = *b"PCI   ";
    pub const BUS_ISA: [u8; 6] = *b"ISA   ";

    /// IOAPIC version: the 82093AA (KVM's reads 0x11); flags: EN.
    pub const IOAPIC_VERSION: u8 = 0x11;
    pub const IOAPIC_ENABLED: u8 = 1 << 0;

    /// Interrupt types (Table 4-11).
    pub const INT: u8 = 0;
    pub const NMI: u8 = 1;
    pub const EXTINT: u8 = 3;
    /// Interrupt flags: polarity bits 1:0, trigger mode bits 3:2; 0 conforms to the bus
    /// (ISA: edge, active high; PCI: level, active low).
    pub const CONFORMING: u16 = 0;
    pub const ACTIVE_HIGH: u16 = 0b01;
    pub const LEVEL: u16 = 0b11 << 2;
    /// Destination local APIC ID meaning every local APIC.
    pub const ALL_LAPICS: u8 = 0xff;
    /// PCI source bus IRQ: device number in bits 6:2, pin (0 INTA# - 3 INTD#) in bits 1:0
    /// (Table 4-12, note).
    pub const PCI_DEVICE_SHIFT: u8 = 2;
}

/// The bus IDs the table gives: PCI bus 0 is bus 0, the ISA bus comes after it.
pub const PCI_BUS_ID: u8 = 0;
pub const ISA_BUS_ID: u8 = 1;

/// ISA IRQs.
const ISA_IRQS: u8 = 16;
/// The PIT's ISA IRQ, the IOAPIC pin it is wired to, and the ISA IRQ that has no pin for it
/// (the 8259 cascade), as the MADT's override says.
const PIT_IRQ: u8 = 0;
const PIT_PIN: u8 = 2;
const CASCADE_IRQ: u8 = 2;
/// PCI interrupt pins per device.
const PCI_PINS: u8 = 4;

/// The IOAPIC pin PCI `device`'s interrupt pin `pin` (0 = INTA#) reaches: the DSDT `_PRT`'s
/// PIRQ[(device + pin) mod 4] and the IRQ the firmware routes that PIRQ to.
pub fn pci_pin_irq(device: u8, pin: u8) -> u8 {
    PIRQ_IRQS[usize::from((device + pin) % PCI_PINS)]
}

/// The (source IRQ, IOAPIC pin, flags) of each ISA IRQ the table lists.
pub fn isa_interrupts() -> Vec<(u8, u8, u16)> {
    (0..ISA_IRQS)
        .filter(|irq| *irq != CASCADE_IRQ)
        .map(|irq| match irq {
            PIT_IRQ => (irq, PIT_PIN, spec::CONFORMING),
            irq if u32::from(irq) == SCI_IRQ => (irq, irq, spec::LEVEL | spec::ACTIVE_HIGH),
            irq => (irq, irq, spec::CONFORMING),
        })
        .collect()
}

/// Builds the floating pointer at `base` and the configuration table right after it, at
/// `base + 16`, for `cfg`.
pub fn build(cfg: &LegacyConfig, base: u64) -> Vec<u8> {
    let config_addr = base + spec::FLOATING_LEN as u64;
    let ioapic_id = cfg.cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    let mut entry = |bytes: &[u8]| {
        entries.extend_from_slice(bytes);
        count += 1;
    };

    for id in 0..cfg.cpus {
        let mut flags = spec::CPU_ENABLED;
        if id == 0 {
            flags |= spec::CPU_BOOTSTRAP;
        }
        let mut e = [0u8; spec::PROCESSOR_LEN];
        e[..4].copy_from_slice(&[spec::PROCESSOR, id, spec::LAPIC_VERSION, flags]);
        e[4..8].copy_from_slice(&spec::CPU_SIGNATURE.to_le_bytes());
        e[8..12].copy_from_slice(&spec::CPU_FEATURES.to_le_bytes());
        entry(&e);
    }
    for (id, name) in [(PCI_BUS_ID, spec::BUS_PCI), (ISA_BUS_ID, spec::BUS_ISA)] {
        let mut e = vec![spec::BUS, id];
        e.extend_from_slice(&name);
        entry(&e);
    }
    let mut e = vec![
        spec::IOAPIC,
        ioapic_id,
        spec::IOAPIC_VERSION,
        spec::IOAPIC_ENABLED,
    ];
    e.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    entry(&e);

    let interrupt = |kind: u8, int_type: u8, flags: u16, bus: u8, irq: u8, dest: u8, pin: u8| {
        let [f0, f1] = flags.to_le_bytes();
        [kind, int_type, f0, f1, bus, irq, dest, pin]
    };
    for (irq, pin, flags) in isa_interrupts() {
        entry(&interrupt(
            spec::IO_INTERRUPT,
            spec::INT,
            flags,
            ISA_BUS_ID,
            irq,
            ioapic_id,
            pin,
        ));
    }
    for device in cfg.interrupt_devices() {
        for pin in 0..PCI_PINS {
            entry(&interrupt(
                spec::IO_INTERRUPT,
                spec::INT,
                spec::CONFORMING,
                PCI_BUS_ID,
                device << spec::PCI_DEVICE_SHIFT | pin,
                ioapic_id,
                pci_pin_irq(device, pin),
            ));
        }
    }
    for (int_type, lint) in [(spec::EXTINT, 0), (spec::NMI, 1)] {
        entry(&interrupt(
            spec::LOCAL_INTERRUPT,
            int_type,
            spec::CONFORMING,
            ISA_BUS_ID,
            0,
            spec::ALL_LAPICS,
            lint,
        ));
    }

    let mut config = vec![0u8; spec::HEADER_LEN];
    config[..4].copy_from_slice(&spec::CONFIG_SIGNATURE);
    let length = u16::try_from(spec::HEADER_LEN + entries.len())
        .expect("the MP configuration table is below 64 KiB for 254 CPUs");
    config[spec::HEADER_LENGTH..spec::HEADER_LENGTH + 2].copy_from_slice(&length.to_le_bytes());
    config[6] = spec::SPEC_REV;
    config[spec::HEADER_OEM_ID..spec::HEADER_OEM_ID + 8].copy_from_slice(&padded::<8>(&OEM_ID));
    config[spec::HEADER_PRODUCT_ID..spec::HEADER_PRODUCT_ID + 12]
        .copy_from_slice(&padded::<12>(&OEM_TABLE_ID));
    // OEM table pointer and size (28-33) stay 0: there is none.
    config[spec::HEADER_ENTRY_COUNT..spec::HEADER_ENTRY_COUNT + 2]
        .copy_from_slice(&count.to_le_bytes());
    config[spec::HEADER_LAPIC_ADDR..spec::HEADER_LAPIC_ADDR + 4]
        .copy_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    // Extended table length and checksum (40-42) stay 0: there is none.
    config.extend_from_slice(&entries);
    config[spec::HEADER_CHECKSUM] = checksum(&config);

    let mut floating = [0u8; spec::FLOATING_LEN];
    floating[..4].copy_from_slice(&spec::FLOATING_SIGNATURE);
    let config_addr = u32::try_from(config_addr).expect("the MP table lies below 4 GiB");
    floating[4..8].copy_from_slice(&config_addr.to_le_bytes());
    floating[8] = spec::FLOATING_PARAGRAPHS;
    floating[9] = spec::SPEC_REV;
    // Feature bytes 1-5 stay 0: a configuration table is present; virtual wire mode.
    floating[spec::FLOATING_CHECKSUM] = checksum(&floating);

    let mut bytes = floating.to_vec();
    bytes.extend_from_slice(&config);
    bytes
}

/// `text` space-padded to `N` bytes (the MP table's OEM and product ID fields).
fn padded<const N: usize>(text: &[u8]) -> [u8; N] {
    let mut field = [b' '; N];
    field[..text.len()].copy_from_slice(text);
    field
}

#[cfg(test)]
mod tests;
