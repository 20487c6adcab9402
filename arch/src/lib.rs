//! x86 facts for kettle: the PC memory and I/O map, e820, CPUID, boot_params and the
//! segment/paging set-up for direct kernel boot.

pub mod boot;
pub mod cpuid;
pub mod e820;
pub mod layout;
