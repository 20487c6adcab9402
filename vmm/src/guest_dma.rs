//! Guest RAM as bus-master devices see it ([`devices::dma::DmaMemory`]): every access is checked
//! against the memory map, so a guest that aims DMA at the PCI hole, past the top of RAM or
//! across a gap gets an error instead of touching host memory.

use devices::dma::{DmaError, DmaMemory};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

pub struct GuestRam(pub GuestMemoryMmap);

impl DmaMemory for GuestRam {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.0
            .read_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaError {
                addr,
                len: buf.len(),
            })
    }

    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaError> {
        self.0
            .write_slice(buf, GuestAddress(addr))
            .map_err(|_| DmaError {
                addr,
                len: buf.len(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_ram_fail_without_touching_anything() {
        let mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x20000), 0x10000),
        ])
        .unwrap();
        let ram = GuestRam(mem);
        ram.write(0x100, b"kettle").unwrap();
        let mut b = [0u8; 6];
        ram.read(0x100, &mut b).unwrap();
        assert_eq!(&b, b"kettle");
        // In the gap, straddling the gap, past the end, at the top of the address space.
        assert!(ram.write(0x18000, b"x").is_err());
        assert!(ram.write(0xfffe, b"xyz").is_err());
        assert!(ram.read(0x30000, &mut b).is_err());
        assert!(ram.read(u64::MAX - 2, &mut b).is_err());
    }
}
