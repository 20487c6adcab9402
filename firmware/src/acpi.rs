//! TODO: ACPI tables (being written)
