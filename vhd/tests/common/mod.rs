//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

/// A small deterministic generator (splitmix64): fixed seeds keep the tests reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

pub fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

/// Reads a whole device.
pub fn read_all(d: &dyn vhd::BlockDevice) -> Vec<u8> {
    let mut v = vec![0u8; d.size() as usize];
    d.read(0, &mut v).unwrap();
    v
}

/// Writes `data` into a new raw file.
pub fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

pub const MIB: u64 = 1024 * 1024;

/// Compares byte contents, reporting the first difference instead of both buffers.
pub fn assert_bytes(a: &[u8], b: &[u8]) {
    if a == b {
        return;
    }
    let first = a.iter().zip(b).position(|(x, y)| x != y);
    panic!(
        "contents differ: lengths {} and {}, first difference at byte {:?}",
        a.len(),
        b.len(),
        first
    );
}
