//! Guest memory as a DMA-capable device sees it: reads and writes of guest-physical ranges that
//! fail, instead of touching host memory, when any byte lies outside guest RAM.

use std::sync::Arc;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("DMA to {addr:#x}+{len:#x} is outside guest RAM")]
pub struct DmaError {
    pub addr: u64,
    pub len: usize,
}

/// Guest RAM for bus-master devices.
pub trait DmaMemory: Send + Sync {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    fn write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaError>;
}

pub type GuestMemory = Arc<dyn DmaMemory>;

#[cfg(test)]
pub(crate) mod testing {
    //! A flat RAM of a given size for unit tests.
    use super::*;
    use std::sync::Mutex;

    pub struct FakeRam(pub Mutex<Vec<u8>>);

    impl FakeRam {
        pub fn new(size: usize) -> Arc<Self> {
            Arc::new(Self(Mutex::new(vec![0; size])))
        }
    }

    impl DmaMemory for FakeRam {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), DmaError> {
            let ram = self.0.lock().unwrap();
            let err = DmaError {
                addr,
                len: buf.len(),
            };
            let start = usize::try_from(addr).map_err(|_| err.clone())?;
            let end = start.checked_add(buf.len()).ok_or(err.clone())?;
            buf.copy_from_slice(ram.get(start..end).ok_or(err)?);
            Ok(())
        }
        fn write(&self, addr: u64, buf: &[u8]) -> Result<(), DmaError> {
            let mut ram = self.0.lock().unwrap();
            let err = DmaError {
                addr,
                len: buf.len(),
            };
            let start = usize::try_from(addr).map_err(|_| err.clone())?;
            let end = start.checked_add(buf.len()).ok_or(err.clone())?;
            ram.get_mut(start..end).ok_or(err)?.copy_from_slice(buf);
            Ok(())
        }
    }
}
