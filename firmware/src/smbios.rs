//! The SMBIOS tables (DMTF DSP0134 System Management BIOS Reference Specification 2.8): the
//! 32-bit entry point ("_SM_" with its "_DMI_" intermediate part) that operating systems find
//! by scanning 0xF0000-0xFFFFF on 16-byte boundaries, and the structure table after it.
//!
//! | type | handle | what |
//! |---|---|---|
//! | 0 BIOS information | 0x0000 | vendor "kettle", the crate version, the ROM's date, what the BIOS does (PCI, CD boot, EDD, ...), ACPI, BIOS Boot Specification, "a virtual machine" |
//! | 1 system information | 0x0100 | "kettle" "kettle VM", the VM's UUID |
//! | 3 system enclosure | 0x0300 | type "other" |
//! | 4 processor | 0x0400 + n | one per vCPU: each vCPU is a socket, one core, one thread |
//! | 8 port connector | 0x0800 + n | COM1, COM2 and (if present) LPT1 |
//! | 16 physical memory array | 0x1000 | system memory, one device |
//! | 17 memory device | 0x1100 | one "DIMM" of the RAM size |
//! | 19 memory array mapped address | 0x1300 + n | RAM below 4 GiB (from 0, across the legacy window, as on a PC) and above |
//! | 32 system boot information | 0x2000 | no errors |
//! | 127 end of table | 0x7F00 | |
//!
//! Strings are the structure's unformed section: each NUL-terminated, numbered from 1 in order,
//! the section ended by one more NUL (two NULs when there are no strings).

use crate::bios::rom;
use crate::legacy::{checksum, LegacyConfig};
use arch::layout::{MemoryLayout, FOUR_GIB};

/// Layouts and values from SMBIOS 2.8 (section numbers of DSP0134 2.8.0).
pub mod spec {
    /// Entry point (5.2.1): 31 bytes.
    pub const ANCHOR: [u8; 4] = *b"_SM_";
    pub const EP_LEN: u8 = 0x1f;
    pub const EP_CHECKSUM: usize = 4;
    pub const EP_MAX_STRUCTURE: usize = 8;
    pub const INTERMEDIATE_ANCHOR: [u8; 5] = *b"_DMI_";
    pub const INTERMEDIATE: usize = 0x10;
    pub const INTERMEDIATE_LEN: usize = 0x0f;
    pub const INTERMEDIATE_CHECKSUM: usize = 0x15;
    pub const TABLE_LENGTH: usize = 0x16;
    pub const TABLE_ADDRESS: usize = 0x18;
    pub const STRUCTURE_COUNT: usize = 0x1c;
    pub const BCD_REVISION: usize = 0x1e;
    pub const MAJOR: u8 = 2;
    pub const MINOR: u8 = 8;
    /// Where the structure table starts, from the entry point: the next 16-byte boundary.
    pub const TABLE_OFFSET: usize = 0x20;

    /// Structure types.
    pub const BIOS: u8 = 0;
    pub const SYSTEM: u8 = 1;
    pub const ENCLOSURE: u8 = 3;
    pub const PROCESSOR: u8 = 4;
    pub const PORT_CONNECTOR: u8 = 8;
    pub const MEMORY_ARRAY: u8 = 16;
    pub const MEMORY_DEVICE: u8 = 17;
    pub const ARRAY_MAPPED_ADDRESS: u8 = 19;
    pub const BOOT_INFORMATION: u8 = 32;
    pub const END_OF_TABLE: u8 = 127;

    /// Formatted-section lengths for 2.8.
    pub const BIOS_LEN: u8 = 0x18;
    pub const SYSTEM_LEN: u8 = 0x1b;
    pub const ENCLOSURE_LEN: u8 = 0x16;
    pub const PROCESSOR_LEN: u8 = 0x2a;
    pub const PORT_CONNECTOR_LEN: u8 = 0x09;
    pub const MEMORY_ARRAY_LEN: u8 = 0x17;
    pub const MEMORY_DEVICE_LEN: u8 = 0x28;
    pub const ARRAY_MAPPED_ADDRESS_LEN: u8 = 0x1f;
    pub const BOOT_INFORMATION_LEN: u8 = 0x0b;
    pub const END_OF_TABLE_LEN: u8 = 0x04;

    /// BIOS characteristics (7.1.1): PCI, boot from CD, selectable boot, EDD, INT 9h 8042
    /// keyboard, INT 10h CGA/mono video. Not set: upgradeable (the ROM is built in), the
    /// services kettle's BIOS does not provide (floppy, INT 5h, 14h, 17h), APM, PnP.
    pub const CHAR_PCI: u64 = 1 << 7;
    pub const CHAR_BOOT_FROM_CD: u64 = 1 << 15;
    pub const CHAR_SELECTABLE_BOOT: u64 = 1 << 16;
    pub const CHAR_EDD: u64 = 1 << 19;
    pub const CHAR_INT9_KEYBOARD: u64 = 1 << 27;
    pub const CHAR_INT10_VIDEO: u64 = 1 << 30;
    /// Extension byte 1 (7.1.2.1): ACPI.
    pub const EXT1_ACPI: u8 = 1 << 0;
    /// Extension byte 2 (7.1.2.2): BIOS Boot Specification, targeted content distribution,
    /// the table describes a virtual machine.
    pub const EXT2_BBS: u8 = 1 << 0;
    pub const EXT2_TARGETED_CONTENT: u8 = 1 << 2;
    pub const EXT2_VIRTUAL_MACHINE: u8 = 1 << 4;
    /// "Not supported" for the embedded controller firmware release.
    pub const NO_EC_FIRMWARE: u8 = 0xff;
    /// The BIOS ROM segment and its size as 64 KiB * (n + 1).
    pub const BIOS_SEGMENT: u16 = 0xf000;
    pub const BIOS_ROM_SIZE_64K: u8 = 0;

    /// System wake-up type (7.2.2): power switch.
    pub const WAKEUP_POWER_SWITCH: u8 = 0x06;

    /// Enclosure type "other" (7.4.1) and the states (7.4.2, 7.4.3): safe; security unknown.
    pub const ENCLOSURE_OTHER: u8 = 0x01;
    pub const STATE_SAFE: u8 = 0x03;
    pub const SECURITY_UNKNOWN: u8 = 0x02;

    /// Processor (7.5): central processor, family "other", status populated and enabled,
    /// upgrade "other", no cache information, characteristics "unknown".
    pub const CENTRAL_PROCESSOR: u8 = 0x03;
    pub const FAMILY_OTHER: u8 = 0x01;
    pub const STATUS_POPULATED_ENABLED: u8 = 0x41;
    pub const UPGRADE_OTHER: u8 = 0x01;
    pub const NO_HANDLE: u16 = 0xffff;
    pub const PROCESSOR_UNKNOWN: u16 = 0x0002;

    /// Port connectors (7.9): DB-9 male / DB-25 female external connectors, 16550A serial and
    /// XT/AT parallel ports.
    pub const CONNECTOR_NONE: u8 = 0x00;
    pub const CONNECTOR_DB9_MALE: u8 = 0x08;
    pub const CONNECTOR_DB25_FEMALE: u8 = 0x05;
    pub const PORT_SERIAL_16550A: u8 = 0x09;
    pub const PORT_PARALLEL_XT_AT: u8 = 0x01;

    /// Physical memory array (7.17): location "other", system memory, no error correction, no
    /// error information; the capacity in KiB, or [`EXTENDED_CAPACITY`] and the size in bytes.
    pub const LOCATION_OTHER: u8 = 0x01;
    pub const USE_SYSTEM_MEMORY: u8 = 0x03;
    pub const ECC_NONE: u8 = 0x03;
    pub const NO_ERROR_INFORMATION: u16 = 0xfffe;
    pub const EXTENDED_CAPACITY: u32 = 0x8000_0000;

    /// Memory device (7.18): 64-bit DIMM of type RAM, detail "other"; the size in MiB below
    /// [`EXTENDED_SIZE`] MiB, from there [`EXTENDED_SIZE`] and the size in the extended field.
    pub const MEMORY_WIDTH: u16 = 64;
    pub const FORM_FACTOR_DIMM: u8 = 0x09;
    pub const MEMORY_TYPE_RAM: u8 = 0x07;
    pub const TYPE_DETAIL_OTHER: u16 = 0x0002;
    pub const EXTENDED_SIZE: u16 = 0x7fff;

    /// Memory array mapped address (7.20): KiB addresses, or both [`EXTENDED_ADDRESS`] and the
    /// byte addresses in the extended fields.
    pub const EXTENDED_ADDRESS: u32 = 0xffff_ffff;
}

/// Handles, per type as QEMU numbers them (type << 8, + n for several of one type).
const fn handle(kind: u8, n: u16) -> u16 {
    (kind as u16) << 8 | n
}

/// One structure under construction: the formatted section and its strings.
struct Structure {
    formatted: Vec<u8>,
    strings: Vec<u8>,
    count: u8,
}

impl Structure {
    fn new(kind: u8, len: u8, handle: u16) -> Self {
        let mut formatted = vec![0u8; usize::from(len)];
        formatted[0] = kind;
        formatted[1] = len;
        formatted[2..4].copy_from_slice(&handle.to_le_bytes());
        Self {
            formatted,
            strings: Vec::new(),
            count: 0,
        }
    }

    fn u8(&mut self, at: usize, v: u8) -> &mut Self {
        self.formatted[at] = v;
        self
    }

    fn u16(&mut self, at: usize, v: u16) -> &mut Self {
        self.formatted[at..at + 2].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn u32(&mut self, at: usize, v: u32) -> &mut Self {
        self.formatted[at..at + 4].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, at: usize, v: u64) -> &mut Self {
        self.formatted[at..at + 8].copy_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, at: usize, v: &[u8]) -> &mut Self {
        self.formatted[at..at + v.len()].copy_from_slice(v);
        self
    }

    /// Adds `text` to the strings and stores its number at `at`.
    fn string(&mut self, at: usize, text: &str) -> &mut Self {
        debug_assert!(!text.is_empty() && !text.contains('\0'));
        self.count += 1;
        self.strings.extend_from_slice(text.as_bytes());
        self.strings.push(0);
        self.formatted[at] = self.count;
        self
    }

    fn finish(&self) -> Vec<u8> {
        let mut bytes = self.formatted.clone();
        if self.strings.is_empty() {
            bytes.push(0);
        } else {
            bytes.extend_from_slice(&self.strings);
        }
        bytes.push(0);
        bytes
    }
}

/// Vendor, system manufacturer and the like.
pub const VENDOR: &str = "kettle";
pub const PRODUCT: &str = "kettle VM";
pub const FAMILY: &str = "Virtual Machine";
/// The BIOS version: kettle's.
pub const BIOS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The BIOS release date "MM/DD/YYYY", from the ROM's "MM/DD/YY" date ([`rom::DATE_TEXT`]).
pub fn bios_date() -> String {
    let d = String::from_utf8_lossy(&rom::DATE_TEXT).into_owned();
    format!("{}/20{}", &d[..5], &d[6..8])
}

/// The UUID in SMBIOS byte order (7.2.1, 2.6 and later): the first three fields of the RFC
/// 4122 form little-endian, the rest as it is.
pub fn wire_uuid(uuid: [u8; 16]) -> [u8; 16] {
    let mut w = uuid;
    w[..4].reverse();
    w[4..6].reverse();
    w[6..8].reverse();
    w
}

fn bios_information() -> Vec<u8> {
    let version_part = |i: usize| {
        BIOS_VERSION
            .split('.')
            .nth(i)
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0)
    };
    let characteristics = spec::CHAR_PCI
        | spec::CHAR_BOOT_FROM_CD
        | spec::CHAR_SELECTABLE_BOOT
        | spec::CHAR_EDD
        | spec::CHAR_INT9_KEYBOARD
        | spec::CHAR_INT10_VIDEO;
    Structure::new(spec::BIOS, spec::BIOS_LEN, handle(spec::BIOS, 0))
        .string(0x04, VENDOR)
        .string(0x05, BIOS_VERSION)
        .u16(0x06, spec::BIOS_SEGMENT)
        .string(0x08, &bios_date())
        .u8(0x09, spec::BIOS_ROM_SIZE_64K)
        .u64(0x0a, characteristics)
        .u8(0x12, spec::EXT1_ACPI)
        .u8(
            0x13,
            spec::EXT2_BBS | spec::EXT2_TARGETED_CONTENT | spec::EXT2_VIRTUAL_MACHINE,
        )
        .u8(0x14, version_part(0))
        .u8(0x15, version_part(1))
        .u8(0x16, spec::NO_EC_FIRMWARE)
        .u8(0x17, spec::NO_EC_FIRMWARE)
        .finish()
}

fn system_information(uuid: [u8; 16]) -> Vec<u8> {
    Structure::new(spec::SYSTEM, spec::SYSTEM_LEN, handle(spec::SYSTEM, 0))
        .string(0x04, VENDOR)
        .string(0x05, PRODUCT)
        .string(0x06, BIOS_VERSION)
        .bytes(0x08, &wire_uuid(uuid))
        .u8(0x18, spec::WAKEUP_POWER_SWITCH)
        .string(0x1a, FAMILY)
        .finish()
}

fn enclosure() -> Vec<u8> {
    Structure::new(
        spec::ENCLOSURE,
        spec::ENCLOSURE_LEN,
        handle(spec::ENCLOSURE, 0),
    )
    .string(0x04, VENDOR)
    .u8(0x05, spec::ENCLOSURE_OTHER)
    .u8(0x09, spec::STATE_SAFE)
    .u8(0x0a, spec::STATE_SAFE)
    .u8(0x0b, spec::STATE_SAFE)
    .u8(0x0c, spec::SECURITY_UNKNOWN)
    .finish()
}

fn processor(n: u8) -> Vec<u8> {
    Structure::new(
        spec::PROCESSOR,
        spec::PROCESSOR_LEN,
        handle(spec::PROCESSOR, u16::from(n)),
    )
    .string(0x04, &format!("CPU {n}"))
    .u8(0x05, spec::CENTRAL_PROCESSOR)
    .u8(0x06, spec::FAMILY_OTHER)
    .string(0x07, VENDOR)
    // Processor ID, voltage, clocks: 0, unknown.
    .u8(0x18, spec::STATUS_POPULATED_ENABLED)
    .u8(0x19, spec::UPGRADE_OTHER)
    .u16(0x1a, spec::NO_HANDLE)
    .u16(0x1c, spec::NO_HANDLE)
    .u16(0x1e, spec::NO_HANDLE)
    .u8(0x23, 1)
    .u8(0x24, 1)
    .u8(0x25, 1)
    .u16(0x26, spec::PROCESSOR_UNKNOWN)
    .u16(0x28, u16::from(spec::FAMILY_OTHER))
    .finish()
}

fn port_connector(n: u16, name: &str, connector: u8, port: u8) -> Vec<u8> {
    Structure::new(
        spec::PORT_CONNECTOR,
        spec::PORT_CONNECTOR_LEN,
        handle(spec::PORT_CONNECTOR, n),
    )
    .string(0x04, name)
    .u8(0x05, spec::CONNECTOR_NONE)
    .string(0x06, name)
    .u8(0x07, connector)
    .u8(0x08, port)
    .finish()
}

fn memory_array(ram: u64) -> Vec<u8> {
    let kib = ram >> 10;
    let mut s = Structure::new(
        spec::MEMORY_ARRAY,
        spec::MEMORY_ARRAY_LEN,
        handle(spec::MEMORY_ARRAY, 0),
    );
    s.u8(0x04, spec::LOCATION_OTHER)
        .u8(0x05, spec::USE_SYSTEM_MEMORY)
        .u8(0x06, spec::ECC_NONE)
        .u16(0x0b, spec::NO_ERROR_INFORMATION)
        .u16(0x0d, 1);
    match u32::try_from(kib) {
        Ok(kib) if kib < spec::EXTENDED_CAPACITY => s.u32(0x07, kib),
        _ => s.u32(0x07, spec::EXTENDED_CAPACITY).u64(0x0f, ram),
    };
    s.finish()
}

fn memory_device(ram: u64) -> Vec<u8> {
    let mib = ram >> 20;
    let mut s = Structure::new(
        spec::MEMORY_DEVICE,
        spec::MEMORY_DEVICE_LEN,
        handle(spec::MEMORY_DEVICE, 0),
    );
    s.u16(0x04, handle(spec::MEMORY_ARRAY, 0))
        .u16(0x06, spec::NO_ERROR_INFORMATION)
        .u16(0x08, spec::MEMORY_WIDTH)
        .u16(0x0a, spec::MEMORY_WIDTH)
        .u8(0x0e, spec::FORM_FACTOR_DIMM)
        .string(0x10, "DIMM 0")
        .u8(0x12, spec::MEMORY_TYPE_RAM)
        .u16(0x13, spec::TYPE_DETAIL_OTHER)
        .string(0x17, VENDOR);
    match u16::try_from(mib) {
        Ok(mib) if mib < spec::EXTENDED_SIZE => s.u16(0x0c, mib),
        _ => s
            .u16(0x0c, spec::EXTENDED_SIZE)
            .u32(0x1c, u32::try_from(mib).unwrap_or(u32::MAX >> 1)),
    };
    s.finish()
}

/// The RAM ranges the memory array maps: (start, size) in bytes.
pub fn mapped_ranges(layout: &MemoryLayout) -> Vec<(u64, u64)> {
    let mut ranges = vec![(0, layout.low_ram_end())];
    if layout.high_ram_size() > 0 {
        ranges.push((FOUR_GIB, layout.high_ram_size()));
    }
    ranges
}

fn array_mapped_address(n: u16, start: u64, size: u64) -> Vec<u8> {
    let end = start + size - 1;
    let mut s = Structure::new(
        spec::ARRAY_MAPPED_ADDRESS,
        spec::ARRAY_MAPPED_ADDRESS_LEN,
        handle(spec::ARRAY_MAPPED_ADDRESS, n),
    );
    s.u16(0x0c, handle(spec::MEMORY_ARRAY, 0)).u8(0x0e, 1);
    match (u32::try_from(start >> 10), u32::try_from(end >> 10)) {
        (Ok(start_kib), Ok(end_kib)) if end_kib < spec::EXTENDED_ADDRESS => {
            s.u32(0x04, start_kib).u32(0x08, end_kib)
        }
        _ => s
            .u32(0x04, spec::EXTENDED_ADDRESS)
            .u32(0x08, spec::EXTENDED_ADDRESS)
            .u64(0x0f, start)
            .u64(0x17, end),
    };
    s.finish()
}

fn boot_information() -> Vec<u8> {
    // Reserved bytes and boot status 0: no errors detected.
    Structure::new(
        spec::BOOT_INFORMATION,
        spec::BOOT_INFORMATION_LEN,
        handle(spec::BOOT_INFORMATION, 0),
    )
    .finish()
}

fn end_of_table() -> Vec<u8> {
    Structure::new(
        spec::END_OF_TABLE,
        spec::END_OF_TABLE_LEN,
        handle(spec::END_OF_TABLE, 0),
    )
    .finish()
}

/// The structures for `cfg`, in table order.
pub fn structures(cfg: &LegacyConfig) -> Vec<Vec<u8>> {
    let mut s = vec![
        bios_information(),
        system_information(cfg.uuid),
        enclosure(),
    ];
    s.extend((0..cfg.cpus).map(processor));
    s.push(port_connector(
        0,
        "COM1",
        spec::CONNECTOR_DB9_MALE,
        spec::PORT_SERIAL_16550A,
    ));
    s.push(port_connector(
        1,
        "COM2",
        spec::CONNECTOR_DB9_MALE,
        spec::PORT_SERIAL_16550A,
    ));
    if cfg.lpt {
        s.push(port_connector(
            2,
            "LPT1",
            spec::CONNECTOR_DB25_FEMALE,
            spec::PORT_PARALLEL_XT_AT,
        ));
    }
    s.push(memory_array(cfg.layout.ram_size));
    s.push(memory_device(cfg.layout.ram_size));
    for (n, (start, size)) in mapped_ranges(cfg.layout).into_iter().enumerate() {
        s.push(array_mapped_address(n as u16, start, size));
    }
    s.push(boot_information());
    s.push(end_of_table());
    s
}

/// Builds the entry point at `base` and the structure table at `base + 0x20` for `cfg`.
pub fn build(cfg: &LegacyConfig, base: u64) -> Vec<u8> {
    let structures = structures(cfg);
    let table: Vec<u8> = structures.concat();
    let max_structure = structures.iter().map(Vec::len).max().unwrap_or(0);
    let table_addr =
        u32::try_from(base + spec::TABLE_OFFSET as u64).expect("the SMBIOS table lies below 4 GiB");

    let mut ep = vec![0u8; spec::TABLE_OFFSET];
    ep[..4].copy_from_slice(&spec::ANCHOR);
    ep[5] = spec::EP_LEN;
    ep[6] = spec::MAJOR;
    ep[7] = spec::MINOR;
    ep[spec::EP_MAX_STRUCTURE..spec::EP_MAX_STRUCTURE + 2]
        .copy_from_slice(&(max_structure as u16).to_le_bytes());
    // Entry point revision 0 (0x0a) and the formatted area (0x0b-0x0f) stay 0.
    ep[spec::INTERMEDIATE..spec::INTERMEDIATE + 5].copy_from_slice(&spec::INTERMEDIATE_ANCHOR);
    let table_len = u16::try_from(table.len()).expect("the SMBIOS structure table fits in 64 KiB");
    ep[spec::TABLE_LENGTH..spec::TABLE_LENGTH + 2].copy_from_slice(&table_len.to_le_bytes());
    ep[spec::TABLE_ADDRESS..spec::TABLE_ADDRESS + 4].copy_from_slice(&table_addr.to_le_bytes());
    ep[spec::STRUCTURE_COUNT..spec::STRUCTURE_COUNT + 2]
        .copy_from_slice(&(structures.len() as u16).to_le_bytes());
    ep[spec::BCD_REVISION] = spec::MAJOR << 4 | spec::MINOR;
    let intermediate = spec::INTERMEDIATE..spec::INTERMEDIATE + spec::INTERMEDIATE_LEN;
    ep[spec::INTERMEDIATE_CHECKSUM] = checksum(&ep[intermediate]);
    ep[spec::EP_CHECKSUM] = checksum(&ep[..usize::from(spec::EP_LEN)]);

    ep.extend_from_slice(&table);
    ep
}

#[cfg(test)]
mod tests;
