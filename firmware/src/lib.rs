//! kettle firmware: the BIOS, the ACPI tables, and the legacy MP, $PIR and SMBIOS tables the
//! guest reads.

pub mod acpi;
pub mod bios;
pub mod legacy;
pub mod mptable;
pub mod pirtable;
pub mod smbios;

pub use legacy::{legacy_tables, LegacyConfig};
