//! kettle firmware: the ACPI tables the guest reads (and later the BIOS and MP/$PIR/SMBIOS tables).

pub mod acpi;
pub mod bios;
