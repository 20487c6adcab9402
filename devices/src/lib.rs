//! kettle's device models.
//!
//! Each module emulates one piece of the Virtual Server 2005 / Hyper-V generation-1 PC. A device
//! sees only its own registers (port or MMIO offsets relative to where the VMM placed it, or PCI
//! configuration space), interrupt lines ([`Irq`]), a [`Timer`] when it needs wall-clock events and
//! a [`VmControl`] when it can reset or power off the machine. The VMM owns the wiring.

pub mod bus;
pub mod dma;
pub mod fw_cfg;
pub mod i440bx;
pub mod i8042;
pub mod ide;
pub mod lpt;
pub mod pci;
pub mod piix4;
pub mod post;
pub mod rtc;
pub mod scsi;
pub mod serial;
pub mod tulip;
pub mod vga_text;

pub use bus::{Bus, BusDevice, BusError, Irq, IrqLine, SharedDevice, Timer, VmControl, VmRequest};

/// Helpers shared by the devices' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// Encodes `t` as CBOR the way the VMM writes its saved-state file, and decodes it again.
    pub fn cbor_round_trip<T: Serialize + DeserializeOwned>(t: &T) -> T {
        let mut bytes = Vec::new();
        ciborium::into_writer(t, &mut bytes).expect("CBOR encoding");
        ciborium::from_reader(bytes.as_slice()).expect("CBOR decoding")
    }
}
