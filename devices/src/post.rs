//! The POST diagnostic port at I/O port 0x80, as decoded by a port-80 POST card.
//!
//! Firmware writes a progress code here at each step of power-on self test; the card latches the
//! last byte and shows it. Reading returns the latched code, as on PCs whose chipset (the PIIX4
//! forwards port 0x80 to ISA; some cards read back) makes it readable. Linux also writes here
//! (`outb_p` and `io_delay` use it as a delay), so changes are logged at debug level only.

use crate::bus::BusDevice;

/// Register layout.
pub mod spec {
    /// The one byte register.
    pub const CODE: u64 = 0;
    pub const REGISTER_COUNT: u64 = 1;
}

/// The guest-visible state of a [`PostCode`], for snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PostCodeState {
    pub code: u8,
}

/// A POST code latch. Register it on the I/O bus at port 0x80 with length 1.
#[derive(Debug, Default)]
pub struct PostCode {
    code: u8,
}

impl PostCode {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last code written.
    pub fn last(&self) -> u8 {
        self.code
    }

    pub fn state(&self) -> PostCodeState {
        PostCodeState { code: self.code }
    }

    pub fn restore(&mut self, s: &PostCodeState) {
        self.code = s.code;
    }
}

impl BusDevice for PostCode {
    /// Byte 0 is the latch; further bytes of a wider access belong to other ports and read 0xFF.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = if offset + i as u64 == spec::CODE {
                self.code
            } else {
                0xff
            };
        }
    }

    /// Only the byte that lands on offset 0 is latched.
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != spec::CODE {
            return;
        }
        if let Some(&v) = data.first() {
            if v != self.code {
                log::debug!("POST code {v:#04x}");
            }
            self.code = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cbor_round_trip;

    #[test]
    fn latches_the_last_code() {
        let mut p = PostCode::new();
        let mut b = [0u8; 1];
        p.read(0, &mut b);
        assert_eq!(b[0], 0);
        p.write(0, &[0x12]);
        p.write(0, &[0x34]);
        assert_eq!(p.last(), 0x34);
        p.read(0, &mut b);
        assert_eq!(b[0], 0x34);
    }

    #[test]
    fn wide_and_stray_accesses_are_defined() {
        let mut p = PostCode::new();
        p.write(0, &[0xab, 0xcd, 0xef, 0x01]);
        assert_eq!(p.last(), 0xab);
        let mut d = [0u8; 4];
        p.read(0, &mut d);
        assert_eq!(d, [0xab, 0xff, 0xff, 0xff]);
        p.read(5, &mut d);
        assert_eq!(d, [0xff; 4]);
        p.write(5, &[0x99]);
        p.write(0, &[]);
        assert_eq!(p.last(), 0xab);
    }

    #[test]
    fn state_round_trip() {
        let mut p = PostCode::new();
        p.write(0, &[0x55]);
        let mut q = PostCode::new();
        q.restore(&p.state());
        assert_eq!(q.last(), 0x55);
        assert_eq!(q.state(), PostCodeState { code: 0x55 });
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut p = PostCode::new();
        p.write(0, &[0xd4]);
        let st = p.state();
        let mut q = PostCode::new();
        q.restore(&cbor_round_trip(&st));
        assert_eq!(q.state(), st);
        let (mut a, mut b) = ([0u8; 2], [0u8; 2]);
        p.read(0, &mut a);
        q.read(0, &mut b);
        assert_eq!(a, b);
        assert_eq!(b, [0xd4, 0xff]);
    }
}
