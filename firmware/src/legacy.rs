//! The legacy firmware tables of a PC, beside ACPI: the MP floating pointer and configuration
//! table ([`crate::mptable`]), the $PIR PCI interrupt routing table ([`crate::pirtable`]) and
//! the SMBIOS entry point and structures ([`crate::smbios`]).
//!
//! [`legacy_tables`] places them one after another, each on a 16-byte boundary, in the area the
//! BIOS ROM leaves erased for them ([`rom::TABLES_START`]..[`rom::TABLES_END`] in segment F000h,
//! 0xF8000-0xFDFFF), so the anchors that operating systems scan 0xF0000-0xFFFFF for ("_MP_",
//! "$PIR", "_SM_") are where they look:
//!
//! | address | what |
//! |---|---|
//! | 0xF8000 | MP floating pointer, then the MP configuration table at 0xF8010 |
//! | next 16-byte boundary | $PIR |
//! | next 16-byte boundary | SMBIOS 2.8 entry point, then its structure table 32 bytes on |
//! | 0xFDFFF | one byte that keeps the ROM's 64 KiB sum at zero |
//!
//! The VMM writes the returned pieces into its RAM copy of the ROM, over erased (0xFF) bytes.
//! Every table has its own checksum; the last byte makes the bytes written sum to what the
//! erased bytes they replace did, so the ROM image still sums to zero as the PC/AT's does.

use crate::acpi::MAX_CPUS;
use crate::bios::rom;
use crate::{mptable, pirtable, smbios};
use arch::layout::MemoryLayout;

/// The PIIX4's PCI device number on bus 0 (functions 0 ISA bridge and interrupt router, 1 IDE,
/// 3 power management); the VMM wires it there (`vmm::machine::PIIX4_ISA_DEVFN`).
pub const PIIX4_DEVICE: u8 = 7;
/// The function of the PIIX4 that routes PCI interrupts (`PIRQRC[A:D]`).
pub const PIIX4_ROUTER_FUNCTION: u8 = 0;

/// Devices per PCI bus.
pub const PCI_DEVICES: u8 = 32;

/// Guest-physical address of the first table and the end (exclusive) of their area.
pub const TABLES_BASE: u64 = rom::ROM_BASE + rom::TABLES_START as u64;
pub const TABLES_LIMIT: u64 = rom::ROM_BASE + rom::TABLES_END as u64;
/// Where the byte that keeps the ROM checksum goes: the last byte of the area.
pub const ROM_SUM_FIXUP: u64 = TABLES_LIMIT - 1;

/// Every table starts on a 16-byte boundary (the scanned anchors must).
pub const TABLE_ALIGN: u64 = 16;

/// What the tables describe.
#[derive(Clone, Copy, Debug)]
pub struct LegacyConfig<'a> {
    /// Number of vCPUs, 1 to [`MAX_CPUS`]: APIC IDs 0..cpus (the BSP is 0), the IOAPIC's ID is
    /// `cpus`, as in the MADT.
    pub cpus: u8,
    /// The guest memory map (SMBIOS memory device and mapped ranges).
    pub layout: &'a MemoryLayout,
    /// The PCI device numbers (bus 0, function 0) of the network cards.
    pub nic_slots: &'a [u8],
    /// Whether LPT1 is present (an SMBIOS port connector).
    pub lpt: bool,
    /// The system UUID in RFC 4122 byte order (the order of its printed form); SMBIOS stores
    /// its first three fields little-endian, [`smbios`] does the swapping.
    pub uuid: [u8; 16],
}

impl LegacyConfig<'_> {
    /// The devices on PCI bus 0 that have an interrupt pin, ascending: the PIIX4 (its PM
    /// function has INTA#) and the network cards. The host bridge has none.
    pub fn interrupt_devices(&self) -> Vec<u8> {
        let mut devices = vec![PIIX4_DEVICE];
        devices.extend_from_slice(self.nic_slots);
        devices.sort_unstable();
        devices.dedup();
        devices
    }
}

/// The 8-bit checksum byte that makes `bytes` (with the checksum byte zero) sum to zero.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(byte_sum(bytes))
}

pub(crate) fn byte_sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// Builds the MP, $PIR and SMBIOS tables for `cfg`: (guest-physical address, bytes) pairs to
/// write into guest RAM after the BIOS ROM image has been copied to 0xF0000 (see the module
/// docs for the layout).
///
/// # Panics
///
/// If `cfg.cpus` is 0 or above [`MAX_CPUS`] (the VMM refuses such a machine before, as
/// `acpi::build` does), or a NIC slot is not a device number below 32 other than 0 (the host
/// bridge) or [`PIIX4_DEVICE`]. Within those bounds the tables always fit the area.
pub fn legacy_tables(cfg: &LegacyConfig) -> Vec<(u64, Vec<u8>)> {
    assert!(
        (1..=MAX_CPUS).contains(&cfg.cpus),
        "the legacy tables describe 1 to {MAX_CPUS} vCPUs, not {}",
        cfg.cpus
    );
    for &slot in cfg.nic_slots {
        assert!(
            slot != 0 && slot != PIIX4_DEVICE && slot < PCI_DEVICES,
            "PCI device {slot} cannot hold a network card"
        );
    }
    let mp_at = TABLES_BASE;
    let mp = mptable::build(cfg, mp_at);
    let pir_at = after(mp_at, &mp);
    let pir = pirtable::build(cfg);
    let smbios_at = after(pir_at, &pir);
    let smbios = smbios::build(cfg, smbios_at);
    let end = after(smbios_at, &smbios);
    let mut tables = vec![(mp_at, mp), (pir_at, pir), (smbios_at, smbios)];
    assert!(
        end <= ROM_SUM_FIXUP,
        "the legacy tables end at {end:#x}, past their area (a bug in kettle's table builders)"
    );
    // The written bytes replace erased ones: make them sum to the same.
    let written: usize = tables.iter().map(|(_, b)| b.len()).sum();
    let erased_sum = (0xffu8).wrapping_mul((written + 1) as u8);
    let table_sum = tables
        .iter()
        .fold(0u8, |s, (_, b)| s.wrapping_add(byte_sum(b)));
    tables.push((ROM_SUM_FIXUP, vec![erased_sum.wrapping_sub(table_sum)]));
    tables
}

/// The next table's address: the 16-byte boundary at or after the end of `bytes` at `base`.
fn after(base: u64, bytes: &[u8]) -> u64 {
    (base + bytes.len() as u64).next_multiple_of(TABLE_ALIGN)
}

#[cfg(test)]
mod tests;
