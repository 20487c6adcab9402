//! The ACPI tables of kettle's PC: what an i440BX + PIIX4 machine's BIOS (the Virtual Server 2005
//! / Hyper-V generation-1 shape) tells the OS about its interrupt controllers, power management
//! and legacy devices.
//!
//! The image is one contiguous blob copied to [`ACPI_START`] inside the reserved BIOS area:
//!
//! | table | what it says |
//! |---|---|
//! | RSDP (revision 2) | at the very start, so it is 16-byte aligned inside 0xE0000-0xFFFFF where OSes scan; points at both the RSDT and the XSDT |
//! | RSDT / XSDT | the FADT and the MADT |
//! | FADT (revision 3, ACPI 2.0) | the PIIX4 PM I/O block (PIIX4 datasheet 7.2), SCI on IRQ 9, reset through 0xCF9, FACS and DSDT |
//! | FACS | the (unused) firmware waking vector and global lock |
//! | DSDT | `\_SB.PCI0` with its windows and `_PRT`, the ISA devices under `PCI0.ISA`, `_S5`, processors |
//! | MADT | one local APIC per vCPU, the IOAPIC, the ISA overrides for IRQ 0 and the SCI, LINT1 NMI |
//!
//! ACPI is always enabled (the FADT has no SMI command port), so the PIIX4 PM model must read
//! SCI_EN as 1 in PM1a_CNT from reset.
//!
//! For SeaBIOS, [`loader`] hands the same tables over as QEMU does: fw_cfg files plus a
//! linker/loader script with which the firmware places them itself.
//!
//! The FADT is revision 3 (244 bytes, ACPI 2.0) rather than the 276-byte revision 6 the
//! `acpi_tables` builder produces: it is the layout the ACPI 2.0 generation of OSes (Windows XP /
//! Server 2003) was written against, the one QEMU's i440FX also uses, and Linux takes it as is.

mod dsdt;
pub mod loader;

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use arch::layout::{
    MemoryLayout, ACPI_SIZE, ACPI_START, IOAPIC_ADDR, LAPIC_ADDR, PM_IO_BASE, SCI_IRQ,
};

/// OEM ID of every table (and of the RSDP).
pub const OEM_ID: [u8; 6] = *b"KETTLE";
/// OEM table ID of every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"KETTLEPC";
pub const OEM_REVISION: u32 = 1;

/// What the tables describe.
#[derive(Clone, Copy, Debug)]
pub struct AcpiConfig<'a> {
    /// Number of vCPUs; their APIC IDs (and ACPI processor IDs) are 0..cpus.
    pub cpus: u8,
    /// The guest memory map (for the PCI memory windows).
    pub layout: &'a MemoryLayout,
    /// Whether LPT1 is present.
    pub lpt: bool,
}

/// The built tables: `bytes` go to guest-physical `base`; the RSDP is at `rsdp_addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// Guest-physical address of `bytes[0]`: [`ACPI_START`] from [`build`].
    pub base: u64,
    /// The image, at most [`ACPI_SIZE`] bytes.
    pub bytes: Vec<u8>,
    /// Guest-physical address of the RSDP (= `base`); for `boot_params.acpi_rsdp_addr`.
    pub rsdp_addr: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcpiError {
    #[error(
        "the MADT cannot describe {0} vCPUs: it takes 1 to {MAX_CPUS} (APIC IDs 0..n and the \
         IOAPIC ID n must stay below the broadcast ID 0xFF)"
    )]
    CpuCount(u8),
    #[error(
        "the ACPI tables take {size:#x} bytes, more than the {limit:#x} bytes reserved for them \
         at {base:#x}"
    )]
    TooLarge { size: usize, limit: u64, base: u64 },
    #[error(
        "the ACPI tables cannot be described to the firmware's linker/loader: {0} (a bug in \
         kettle's table builder)"
    )]
    Link(String),
}

/// Most vCPUs the tables describe: APIC IDs 0..=253 and the IOAPIC at 254.
pub const MAX_CPUS: u8 = 0xfe;

/// Table layouts and values from the ACPI specification (2.0c for the FADT, 6.5 for the MADT
/// entry types, which have not changed since 1.0b) and the PIIX4 datasheet.
mod spec {
    pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
    /// ACPI 2.0+ RSDP: revision 2, 36 bytes; the first 20 bytes are the ACPI 1.0 RSDP.
    pub const RSDP_REVISION: u8 = 2;
    pub const RSDP_LEN: usize = 36;
    pub const RSDP_V1_LEN: usize = 20;

    /// Common header: signature, length, revision, checksum at byte 9.
    pub const HEADER_LEN: usize = 36;
    pub const CHECKSUM_OFFSET: usize = 9;

    /// FADT revision 3 (ACPI 2.0): ends after X_GPE1_BLK.
    pub const FADT_REVISION: u8 = 3;
    pub const FADT_LEN: usize = 244;
    /// IAPC_BOOT_ARCH: LEGACY_DEVICES (ISA devices the OS cannot enumerate) and 8042.
    pub const IAPC_BOOT_ARCH_LEGACY_DEVICES: u16 = 1 << 0;
    pub const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
    /// P_LVL2_LAT > 100 and P_LVL3_LAT > 1000 say C2 and C3 are not supported.
    pub const P_LVL2_LAT_NONE: u16 = 101;
    pub const P_LVL3_LAT_NONE: u16 = 1001;
    /// CMOS index of the RTC century byte (the IBM PC/AT BIOS convention).
    pub const RTC_CENTURY_INDEX: u8 = 0x32;

    /// The PIIX4 reset control register (PIIX4 datasheet 4.1.17, "RC"); writing 0x06 asks for a
    /// hard reset (SRST | RCPU).
    pub const RESET_CONTROL_PORT: u16 = 0xcf9;
    pub const RESET_VALUE: u8 = 0x06;

    /// Offsets in the PIIX4 PM I/O block (PIIX4 datasheet 7.2): PMSTS/PMEN, PMCNTRL, PMTMR,
    /// GPSTS/GPEN.
    pub const PM1_EVT_OFFSET: u16 = 0x00;
    pub const PM1_EVT_LEN: u8 = 4;
    pub const PM1_CNT_OFFSET: u16 = 0x04;
    pub const PM1_CNT_LEN: u8 = 2;
    pub const PM_TMR_OFFSET: u16 = 0x08;
    pub const PM_TMR_LEN: u8 = 4;
    pub const GPE0_OFFSET: u16 = 0x0c;
    pub const GPE0_LEN: u8 = 4;

    /// FACS: 64 bytes, 64-byte aligned.
    pub const FACS_ALIGN: usize = 64;
    /// Every other table is placed on a 16-byte boundary.
    pub const TABLE_ALIGN: usize = 16;

    /// MADT flags: PCAT_COMPAT (the machine also has dual 8259s).
    pub const MADT_PCAT_COMPAT: u32 = 1 << 0;
    /// MADT entry types and lengths.
    pub const MADT_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
    pub const MADT_INTERRUPT_SOURCE_OVERRIDE_LEN: u8 = 10;
    pub const MADT_LOCAL_APIC_NMI: u8 = 4;
    pub const MADT_LOCAL_APIC_NMI_LEN: u8 = 6;
    /// MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2; 0 = conforms to the bus.
    pub const MPS_INTI_CONFORMING: u16 = 0;
    pub const MPS_INTI_ACTIVE_HIGH: u16 = 0b01;
    pub const MPS_INTI_LEVEL: u16 = 0b11 << 2;
    /// Processor UID meaning "all processors" in a Local APIC NMI entry.
    pub const ALL_PROCESSORS: u8 = 0xff;
    /// ISA bus number in interrupt source overrides.
    pub const BUS_ISA: u8 = 0;
    /// The 8254 PIT's ISA IRQ and the IOAPIC pin it is wired to on a PC/AT-compatible board.
    pub const PIT_ISA_IRQ: u8 = 0;
    pub const PIT_GSI: u32 = 2;
    /// LINT1 of every local APIC is the NMI input.
    pub const NMI_LINT: u8 = 1;
}

/// The 8-bit checksum byte that makes `bytes` (with the checksum byte zero) sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b)))
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The image under construction: tables appended at aligned offsets from `base`.
struct Image {
    base: u64,
    bytes: Vec<u8>,
}

impl Image {
    /// Appends `table` at the next `align`-byte boundary; returns its guest-physical address.
    fn place(&mut self, table: &[u8], align: usize) -> u64 {
        let offset = self.bytes.len().next_multiple_of(align);
        self.bytes.resize(offset, 0);
        self.bytes.extend_from_slice(table);
        self.base + offset as u64
    }
}

/// Builds the RSDP, RSDT, XSDT, FADT, FACS, DSDT and MADT for `cfg` as one image for
/// [`ACPI_START`].
pub fn build(cfg: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    build_at(cfg, ACPI_START)
}

/// Like [`build`], for an image at guest-physical `base`: a multiple of 64 below 4 GiB minus
/// [`ACPI_SIZE`], so that every table keeps its alignment and the RSDT's 32-bit entries hold
/// the addresses.
pub fn build_at(cfg: &AcpiConfig, base: u64) -> Result<AcpiTables, AcpiError> {
    if cfg.cpus == 0 || cfg.cpus > MAX_CPUS {
        return Err(AcpiError::CpuCount(cfg.cpus));
    }
    if !base.is_multiple_of(spec::FACS_ALIGN as u64) || base + ACPI_SIZE > arch::layout::FOUR_GIB {
        return Err(AcpiError::Link(format!(
            "image base {base:#x} is not 64-byte aligned below 4 GiB"
        )));
    }
    let mut image = Image {
        base,
        // The RSDP goes first; it is written last, once the RSDT and XSDT have addresses.
        bytes: vec![0; spec::RSDP_LEN],
    };

    let facs = image.place(&aml_bytes(&FACS::new()), spec::FACS_ALIGN);
    let dsdt = image.place(&dsdt::build(cfg), spec::TABLE_ALIGN);
    let fadt = image.place(&fadt(facs, dsdt), spec::TABLE_ALIGN);
    let madt = image.place(&madt(cfg.cpus), spec::TABLE_ALIGN);

    let mut rsdt = Sdt::new(
        *b"RSDT",
        spec::HEADER_LEN as u32,
        1,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt, madt] {
        // The image sits below 4 GiB, so the 32-bit RSDT entries hold the same addresses.
        rsdt.append(table as u32);
        xsdt.add_entry(table);
    }
    let rsdt = image.place(rsdt.as_slice(), spec::TABLE_ALIGN);
    let xsdt = image.place(&aml_bytes(&xsdt), spec::TABLE_ALIGN);

    image.bytes[..spec::RSDP_LEN].copy_from_slice(&rsdp(rsdt, xsdt));

    if image.bytes.len() as u64 > ACPI_SIZE {
        return Err(AcpiError::TooLarge {
            size: image.bytes.len(),
            limit: ACPI_SIZE,
            base,
        });
    }
    log::debug!(
        "ACPI tables: {:#x} bytes at {:#x} (FADT {fadt:#x}, MADT {madt:#x}, DSDT {dsdt:#x})",
        image.bytes.len(),
        image.base
    );
    Ok(AcpiTables {
        base: image.base,
        bytes: image.bytes,
        rsdp_addr: image.base,
    })
}

/// The ACPI 2.0 Root System Description Pointer (ACPI 2.0c 5.2.4.3).
fn rsdp(rsdt: u64, xsdt: u64) -> [u8; spec::RSDP_LEN] {
    let mut r = [0u8; spec::RSDP_LEN];
    r[0..8].copy_from_slice(&spec::RSDP_SIGNATURE);
    r[9..15].copy_from_slice(&OEM_ID);
    r[15] = spec::RSDP_REVISION;
    r[16..20].copy_from_slice(&(rsdt as u32).to_le_bytes());
    r[20..24].copy_from_slice(&(spec::RSDP_LEN as u32).to_le_bytes());
    r[24..32].copy_from_slice(&xsdt.to_le_bytes());
    r[8] = checksum(&r[..spec::RSDP_V1_LEN]);
    r[32] = checksum(&r);
    r
}

/// A system I/O register of `len` bytes, as the FADT's X_ blocks give it. Access size stays 0:
/// in a revision 3 FADT (ACPI 2.0) that byte is reserved.
fn io_register(port: u16, len: u8) -> GAS {
    GAS::new(
        AddressSpace::SystemIo,
        len * 8,
        0,
        AccessSize::Undefined,
        port.into(),
    )
}

/// The Fixed ACPI Description Table (ACPI 2.0c 5.2.8), revision 3, for the PIIX4 PM function.
fn fadt(facs: u64, dsdt: u64) -> Vec<u8> {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    f.major_version = spec::FADT_REVISION;
    f.fadt_minor_version = 0;
    f.length = (spec::FADT_LEN as u32).into();
    // Like a PC BIOS, give the FACS through the 32-bit field only; the DSDT through both (they
    // agree, so ACPICA takes either without a "32/64X address mismatch" warning).
    f.firmware_ctrl = (facs as u32).into();
    f.dsdt = (dsdt as u32).into();
    f.x_dsdt = dsdt.into();
    f.sci_int = (SCI_IRQ as u16).into();
    // No SMI_CMD: the PM function powers up with SCI_EN set, ACPI mode needs no switch.
    f.smi_cmd = 0.into();

    // The PIIX4 PM registers, each at its offset in the PMBA block; the X_ versions agree.
    let port = |offset: u16| PM_IO_BASE + offset;
    f.pm1a_evt_blk = u32::from(port(spec::PM1_EVT_OFFSET)).into();
    f.pm1_evt_len = spec::PM1_EVT_LEN;
    f.x_pm1a_evt_blk = io_register(port(spec::PM1_EVT_OFFSET), spec::PM1_EVT_LEN);
    f.pm1a_cnt_blk = u32::from(port(spec::PM1_CNT_OFFSET)).into();
    f.pm1_cnt_len = spec::PM1_CNT_LEN;
    f.x_pm1a_cnt_blk = io_register(port(spec::PM1_CNT_OFFSET), spec::PM1_CNT_LEN);
    f.pm_tmr_blk = u32::from(port(spec::PM_TMR_OFFSET)).into();
    f.pm_tmr_len = spec::PM_TMR_LEN;
    f.x_pm_tmr_blk = io_register(port(spec::PM_TMR_OFFSET), spec::PM_TMR_LEN);
    f.gpe0_blk = u32::from(port(spec::GPE0_OFFSET)).into();
    f.gpe0_blk_len = spec::GPE0_LEN;
    f.x_gpe0_blk = io_register(port(spec::GPE0_OFFSET), spec::GPE0_LEN);

    f.p_lvl2_lat = spec::P_LVL2_LAT_NONE.into();
    f.p_lvl3_lat = spec::P_LVL3_LAT_NONE.into();
    f.century = spec::RTC_CENTURY_INDEX;
    f.iapc_boot_arch = (spec::IAPC_BOOT_ARCH_LEGACY_DEVICES | spec::IAPC_BOOT_ARCH_8042).into();
    f.reset_reg = GAS::new(
        AddressSpace::SystemIo,
        8,
        0,
        AccessSize::Undefined,
        spec::RESET_CONTROL_PORT.into(),
    );
    f.reset_value = spec::RESET_VALUE;

    // The builder lays out the revision 6 table; a revision 3 FADT is its first 244 bytes.
    let mut bytes = aml_bytes(&f.finalize());
    bytes.truncate(spec::FADT_LEN);
    bytes[spec::CHECKSUM_OFFSET] = 0;
    bytes[spec::CHECKSUM_OFFSET] = checksum(&bytes);
    bytes
}

/// The Multiple APIC Description Table (ACPI 2.0c 5.2.10.4): the local APICs, the IOAPIC with
/// all its pins from GSI 0, the PC/AT overrides (PIT on pin 2, the level-triggered SCI), and
/// LINT1 as NMI everywhere.
fn madt(cpus: u8) -> Vec<u8> {
    let mut entries = Vec::new();
    for id in 0..cpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(cpus, IOAPIC_ADDR as u32, 0).to_aml_bytes(&mut entries);
    let overrides = [
        (spec::PIT_ISA_IRQ, spec::PIT_GSI, spec::MPS_INTI_CONFORMING),
        (
            SCI_IRQ as u8,
            SCI_IRQ,
            spec::MPS_INTI_LEVEL | spec::MPS_INTI_ACTIVE_HIGH,
        ),
    ];
    for (source, gsi, flags) in overrides {
        entries.extend_from_slice(&[
            spec::MADT_INTERRUPT_SOURCE_OVERRIDE,
            spec::MADT_INTERRUPT_SOURCE_OVERRIDE_LEN,
            spec::BUS_ISA,
            source,
        ]);
        entries.extend_from_slice(&gsi.to_le_bytes());
        entries.extend_from_slice(&flags.to_le_bytes());
    }
    entries.extend_from_slice(&[
        spec::MADT_LOCAL_APIC_NMI,
        spec::MADT_LOCAL_APIC_NMI_LEN,
        spec::ALL_PROCESSORS,
    ]);
    entries.extend_from_slice(&spec::MPS_INTI_CONFORMING.to_le_bytes());
    entries.push(spec::NMI_LINT);

    // Header, local APIC address, flags; acpi_tables' MADT cannot set PCAT_COMPAT.
    let mut madt = Sdt::new(
        *b"APIC",
        spec::HEADER_LEN as u32 + 8,
        1,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(spec::HEADER_LEN, LAPIC_ADDR as u32);
    madt.write_u32(spec::HEADER_LEN + 4, spec::MADT_PCAT_COMPAT);
    madt.append_slice(&entries);
    madt.as_slice().to_vec()
}

#[cfg(test)]
mod tests;
