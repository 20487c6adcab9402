//! A standard (SPP, output-only) PC parallel port at LPT1, with a printer that is always ready.
//!
//! Follows the IBM PC/AT Technical Reference's "Parallel Printer Adapter" (data latch, status and
//! control registers at base+0..2, the printer interface timing of the Centronics handshake) and
//! IEEE 1284-1994 section 6.3 (compatibility mode). What Linux's `parport_pc` probes, and what
//! this port answers:
//! - `parport_SPP_supported`: control bits 3:0 read back as written, and the data latch reads
//!   back what was written.
//! - `parport_EPP_supported` / `clear_epp_timeout`: status bit 0 reads 1 and cannot be cleared,
//!   so there is no EPP; there are no EPP registers at base+3..7.
//! - `parport_ECR_present`: base+0x402 is not decoded (the bus returns 0xFF), so there is no ECR
//!   and no ECP.
//! - `parport_PS2_supported`: the data lines are never tri-stated (control bit 5 does nothing), so
//!   there is no bidirectional mode.
//! - IRQ probing (`irq_probe_SPP`) is not done for a plain SPP; the interrupt line comes from the
//!   firmware's PnP description (IRQ 7).
//!
//! `lp` writes a byte by placing it on the data lines and pulsing nSTROBE (control bit 0). The
//! printer takes the byte on the strobe's leading edge unless it is held in reset (nINIT, control
//! bit 2, low), writes it to the output sink and acknowledges at once: status always reads
//! not-busy, no ACK pulse in progress, selected, no error, paper present. The acknowledge
//! interrupt is a pulse on the line (rising then falling) when control bit 4 enables it.

use std::io::Write;

use crate::bus::warn_limited;
use crate::bus::{BusDevice, Irq};

/// Register offsets and bit layouts.
pub mod spec {
    /// Number of byte registers decoded.
    pub const REGISTER_COUNT: u64 = 3;

    pub const DATA: u64 = 0;
    pub const STATUS: u64 = 1;
    pub const CONTROL: u64 = 2;

    // Status register (read-only).
    /// EPP timeout on EPP-capable ports; reserved and read as 1 on an SPP.
    pub const STATUS_EPP_TIMEOUT: u8 = 0x01;
    /// Reserved, read as 1.
    pub const STATUS_RESERVED: u8 = 0x06;
    /// nERROR: 1 = no error.
    pub const STATUS_NERROR: u8 = 0x08;
    /// SELECT: 1 = printer on line.
    pub const STATUS_SELECT: u8 = 0x10;
    /// PAPER OUT (PE): 1 = out of paper.
    pub const STATUS_PAPER_OUT: u8 = 0x20;
    /// nACK: 0 while the printer acknowledges a byte.
    pub const STATUS_NACK: u8 = 0x40;
    /// BUSY, inverted by the adapter: 1 = not busy.
    pub const STATUS_NBUSY: u8 = 0x80;
    /// What an idle, ready printer shows.
    pub const STATUS_READY: u8 = STATUS_NBUSY
        | STATUS_NACK
        | STATUS_SELECT
        | STATUS_NERROR
        | STATUS_RESERVED
        | STATUS_EPP_TIMEOUT;

    // Control register.
    /// STROBE (drives nSTROBE low when set).
    pub const CONTROL_STROBE: u8 = 0x01;
    /// AUTO FEED (drives nAUTOFD low when set).
    pub const CONTROL_AUTOFD: u8 = 0x02;
    /// nINIT: 0 holds the printer in reset.
    pub const CONTROL_NINIT: u8 = 0x04;
    /// SELECT IN (drives nSELECTIN low when set).
    pub const CONTROL_SELECT_IN: u8 = 0x08;
    /// Enables the interrupt on the printer's acknowledge.
    pub const CONTROL_IRQ_ENABLE: u8 = 0x10;
    /// The bits an SPP latches; bits 7:5 read as 1.
    pub const CONTROL_WRITABLE: u8 = 0x1f;
    pub const CONTROL_READ_ONES: u8 = 0xe0;
    /// Power-on value: printer selected, not in reset.
    pub const CONTROL_RESET: u8 = CONTROL_SELECT_IN | CONTROL_NINIT;
}

use spec::*;

/// The guest-visible state of an [`Lpt`], for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LptState {
    /// The data latch.
    pub data: u8,
    /// The control register's latched bits (4:0).
    pub control: u8,
}

/// A parallel port with a printer attached. Register it on the I/O bus at its base port with
/// length 3.
pub struct Lpt {
    // Runtime handles.
    irq: Irq,
    out: Option<Box<dyn Write + Send>>,

    // Guest-visible state.
    data: u8,
    control: u8,
}

impl Lpt {
    /// A port in its power-on state; printed bytes go to `out`, or nowhere when it is `None`
    /// (the printer is still there and ready).
    pub fn new(irq: Irq, out: Option<Box<dyn Write + Send>>) -> Self {
        Self {
            irq,
            out,
            data: 0,
            control: CONTROL_RESET,
        }
    }

    /// A hardware reset: the registers return to their power-on values.
    pub fn reset(&mut self) {
        self.data = 0;
        self.control = CONTROL_RESET;
    }

    pub fn state(&self) -> LptState {
        LptState {
            data: self.data,
            control: self.control,
        }
    }

    pub fn restore(&mut self, s: &LptState) {
        self.data = s.data;
        self.control = s.control & CONTROL_WRITABLE;
    }

    /// The printer takes the byte on the data lines and acknowledges it.
    fn print(&mut self) {
        let byte = self.data;
        if let Some(out) = self.out.as_mut() {
            if let Err(e) = out.write_all(&[byte]).and_then(|_| out.flush()) {
                warn_limited!("lpt: printed byte lost: {e}");
            }
        }
        if self.control & CONTROL_IRQ_ENABLE != 0 {
            // nACK pulses; the adapter turns it into an edge on IRQ 7.
            self.irq.set_level(true);
            self.irq.set_level(false);
        }
    }

    fn unhandled(&mut self, what: &str, offset: u64, value: u8) {
        warn_limited!("lpt: {what} at offset {offset} (value {value:#04x}) ignored");
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match offset {
            DATA => self.data,
            STATUS => STATUS_READY,
            CONTROL => self.control | CONTROL_READ_ONES,
            _ => {
                self.unhandled("read outside the port", offset, 0xff);
                0xff
            }
        }
    }

    fn write_register(&mut self, offset: u64, v: u8) {
        match offset {
            DATA => self.data = v,
            STATUS => {
                // Read-only on an SPP. parport_pc writes here to clear an EPP timeout; ignoring
                // the write is what keeps the timeout bit set and EPP undetected.
                log::trace!("lpt: write {v:#04x} to the status register ignored");
            }
            CONTROL => {
                let old = self.control;
                self.control = v & CONTROL_WRITABLE;
                let strobe_edge = self.control & CONTROL_STROBE != 0 && old & CONTROL_STROBE == 0;
                if strobe_edge && self.control & CONTROL_NINIT != 0 {
                    self.print();
                }
            }
            _ => self.unhandled("write outside the port", offset, v),
        }
    }
}

impl BusDevice for Lpt {
    /// Multi-byte accesses are split into byte cycles on consecutive offsets; bytes beyond the
    /// port read as 0xFF.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.read_register(offset + i as u64);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            self.write_register(offset + i as u64, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::testing::{FakeIrq, Sink};
    use crate::testing::cbor_round_trip;
    use std::sync::Arc;

    fn port() -> (Lpt, Arc<FakeIrq>, Sink) {
        let irq = Arc::new(FakeIrq::default());
        let sink = Sink::default();
        (
            Lpt::new(irq.clone(), Some(Box::new(sink.clone()))),
            irq,
            sink,
        )
    }

    fn rd(p: &mut Lpt, off: u64) -> u8 {
        let mut b = [0u8];
        p.read(off, &mut b);
        b[0]
    }

    fn wr(p: &mut Lpt, off: u64, v: u8) {
        p.write(off, &[v]);
    }

    /// parport_SPP_supported(): control bits 3:0 and the data latch read back.
    #[test]
    fn linux_spp_probe() {
        let (mut p, _, sink) = port();
        wr(&mut p, CONTROL, 0x0c);
        assert_eq!(rd(&mut p, CONTROL) & 0x0f, 0x0c);
        wr(&mut p, CONTROL, 0x0e);
        assert_eq!(rd(&mut p, CONTROL) & 0x0f, 0x0e);
        wr(&mut p, CONTROL, 0x0c);
        wr(&mut p, DATA, 0xaa);
        assert_eq!(rd(&mut p, DATA), 0xaa);
        wr(&mut p, DATA, 0x55);
        assert_eq!(rd(&mut p, DATA), 0x55);
        assert!(sink.0.lock().unwrap().is_empty());
    }

    /// clear_epp_timeout() must fail so that parport_EPP_supported() says no.
    #[test]
    fn no_epp_timeout_can_be_cleared() {
        let (mut p, _, _) = port();
        assert_eq!(rd(&mut p, STATUS) & 0x01, 0x01);
        rd(&mut p, STATUS);
        let r = rd(&mut p, STATUS);
        wr(&mut p, STATUS, r | 0x01);
        wr(&mut p, STATUS, r & 0xfe);
        assert_eq!(rd(&mut p, STATUS) & 0x01, 0x01);
    }

    /// parport_PS2_supported(): with bit 5 set the data lines still read back (not tri-stated).
    #[test]
    fn no_bidirectional_mode() {
        let (mut p, _, _) = port();
        wr(&mut p, CONTROL, 0x2c);
        wr(&mut p, DATA, 0x55);
        assert_eq!(rd(&mut p, DATA), 0x55);
        wr(&mut p, DATA, 0xaa);
        assert_eq!(rd(&mut p, DATA), 0xaa);
        assert_eq!(rd(&mut p, CONTROL), 0xec);
    }

    /// parport_ieee1284_write_compat(): ready, not upset, and each strobe prints one byte.
    #[test]
    fn lp_compat_write() {
        let (mut p, irq, sink) = port();
        let ctl = CONTROL_SELECT_IN | CONTROL_NINIT;
        wr(&mut p, CONTROL, ctl);
        for &b in b"Hello\n" {
            let st = rd(&mut p, STATUS);
            // Ready: nERROR and BUSY (inverted) both high.
            assert_eq!(st & 0x88, 0x88);
            // Not upset: paper present, selected, no error.
            assert_eq!(st & 0x38, 0x18);
            wr(&mut p, DATA, b);
            wr(&mut p, CONTROL, ctl | CONTROL_STROBE);
            wr(&mut p, CONTROL, ctl);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"Hello\n");
        assert_eq!(irq.edges(), 0, "interrupt not enabled");
    }

    #[test]
    fn ack_interrupt_is_a_pulse_when_enabled() {
        let (mut p, irq, sink) = port();
        let ctl = CONTROL_SELECT_IN | CONTROL_NINIT | CONTROL_IRQ_ENABLE;
        wr(&mut p, CONTROL, ctl);
        wr(&mut p, DATA, b'A');
        wr(&mut p, CONTROL, ctl | CONTROL_STROBE);
        assert_eq!(irq.edges(), 1);
        assert!(!irq.is_high());
        // Holding the strobe prints nothing more.
        wr(&mut p, CONTROL, ctl | CONTROL_STROBE);
        wr(&mut p, CONTROL, ctl);
        assert_eq!(&*sink.0.lock().unwrap(), b"A");
        assert_eq!(irq.edges(), 1);
    }

    #[test]
    fn printer_in_reset_ignores_strobes() {
        let (mut p, _, sink) = port();
        // lp_reset(): nINIT low, then high.
        wr(&mut p, CONTROL, CONTROL_SELECT_IN);
        wr(&mut p, DATA, b'x');
        wr(&mut p, CONTROL, CONTROL_SELECT_IN | CONTROL_STROBE);
        wr(&mut p, CONTROL, CONTROL_SELECT_IN);
        assert!(sink.0.lock().unwrap().is_empty());
    }

    #[test]
    fn no_sink_still_ready() {
        let irq = Arc::new(FakeIrq::default());
        let mut p = Lpt::new(irq, None);
        wr(&mut p, DATA, b'x');
        wr(&mut p, CONTROL, CONTROL_RESET | CONTROL_STROBE);
        assert_eq!(rd(&mut p, STATUS), STATUS_READY);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_defined() {
        let (mut p, _, _) = port();
        wr(&mut p, DATA, 0x12);
        let mut d = [0u8; 4];
        p.read(0, &mut d);
        assert_eq!(d, [0x12, STATUS_READY, 0xec, 0xff]);
        p.read(3, &mut d);
        assert_eq!(d, [0xff; 4]);
        p.write(3, &[1, 2, 3, 4]);
        p.write(0, &[0x34, 0x00]);
        assert_eq!(rd(&mut p, DATA), 0x34);
    }

    #[test]
    fn state_round_trip_and_reset() {
        let (mut p, _, _) = port();
        wr(&mut p, DATA, 0x77);
        wr(&mut p, CONTROL, 0x1c);
        let st = p.state();
        assert_eq!(
            st,
            LptState {
                data: 0x77,
                control: 0x1c
            }
        );
        let (mut q, _, _) = port();
        q.restore(&st);
        assert_eq!(q.state(), st);
        q.reset();
        assert_eq!(q.state().control, CONTROL_RESET);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let (mut p, irq_p, sink_p) = port();
        wr(&mut p, DATA, 0x41);
        wr(
            &mut p,
            CONTROL,
            CONTROL_IRQ_ENABLE | CONTROL_NINIT | CONTROL_SELECT_IN,
        );
        let st = p.state();
        let (mut q, irq_q, sink_q) = port();
        q.restore(&cbor_round_trip(&st));
        assert_eq!(q.state(), st);
        for off in [DATA, STATUS, CONTROL] {
            assert_eq!(rd(&mut q, off), rd(&mut p, off), "offset {off}");
        }
        // A strobe prints the latched byte and pulses the interrupt on both.
        let strobe = CONTROL_IRQ_ENABLE | CONTROL_NINIT | CONTROL_SELECT_IN | CONTROL_STROBE;
        wr(&mut p, CONTROL, strobe);
        wr(&mut q, CONTROL, strobe);
        assert_eq!(*sink_q.0.lock().unwrap(), b"A");
        assert_eq!(*sink_p.0.lock().unwrap(), b"A");
        assert_eq!((irq_q.edges(), irq_p.edges()), (1, 1));
    }
}
