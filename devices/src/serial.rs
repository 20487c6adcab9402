//! A National Semiconductor PC16550D-compatible UART ("16550A"), as on the COM1/COM2 ports of the
//! Virtual Server 2005 / Hyper-V generation-1 PC.
//!
//! Follows the PC16550D datasheet (National Semiconductor, June 1995): section 8.1 (register
//! addressing and the DLAB bit), 8.4 (LSR), 8.5 (FCR), 8.6 (IIR, with the interrupt priority of
//! Table IV), 8.7 (IER), 8.8 (MCR and the loopback mode), 8.9 (MSR), 8.10 (SCR) and Table III (reset
//! values). Linux's 8250 driver identifies it as a 16550A: `autoconfig()` finds a scratch-free IER,
//! the loopback MSR pattern, and IIR bits 7:6 set after `FCR = 0x01`; `autoconfig_16550a()` finds
//! no EFR behind LCR 0x80/0xBF (offset 2 still reads the IIR there), no NS SuperIO bank register,
//! no 64-byte FIFO (IIR bit 5 stays clear) and no writable IER bit 6.
//!
//! The line itself is infinitely fast: a byte written to the THR reaches the host sink at once,
//! so THRE and TEMT are always set and the THR-empty interrupt follows every write. Host input
//! waits in a bounded backlog and moves into the guest-visible receive FIFO (16 bytes, or the
//! 1-byte RBR while FIFOs are disabled) as the guest drains it. The character-timeout indication
//! (IIR `0xCC`) is reported whenever the FIFO holds data below its trigger level: no timer is
//! needed because the guest can never outrun a line that has already delivered everything.
//!
//! On a PC the UART's INTR pin reaches the interrupt controller only through a buffer enabled by
//! the MCR OUT2 output; in loopback mode the OUT2 pin is forced inactive (datasheet 8.8), so the
//! interrupt is cut off there too. Linux sets OUT2 before it expects interrupts.

use std::collections::VecDeque;
use std::io::Write;

use crate::bus::warn_limited;
use crate::bus::{BusDevice, Irq};

/// Register offsets and bit layouts (PC16550D datasheet section 8).
pub mod spec {
    /// Number of byte registers the UART decodes.
    pub const REGISTER_COUNT: u64 = 8;

    // Offsets. Offsets 0 and 1 are the divisor latch while LCR.DLAB is set.
    pub const RBR_THR: u64 = 0;
    pub const IER: u64 = 1;
    pub const IIR_FCR: u64 = 2;
    pub const LCR: u64 = 3;
    pub const MCR: u64 = 4;
    pub const LSR: u64 = 5;
    pub const MSR: u64 = 6;
    pub const SCR: u64 = 7;
    pub const DLL: u64 = 0;
    pub const DLM: u64 = 1;

    // IER (8.7): bits 7:4 are always zero.
    pub const IER_RDI: u8 = 0x01;
    pub const IER_THRI: u8 = 0x02;
    pub const IER_RLSI: u8 = 0x04;
    pub const IER_MSI: u8 = 0x08;
    pub const IER_MASK: u8 = 0x0f;

    // IIR (8.6, Table IV).
    pub const IIR_NO_INT: u8 = 0x01;
    pub const IIR_MSI: u8 = 0x00;
    pub const IIR_THRI: u8 = 0x02;
    pub const IIR_RDI: u8 = 0x04;
    pub const IIR_RLSI: u8 = 0x06;
    pub const IIR_RX_TIMEOUT: u8 = 0x0c;
    pub const IIR_FIFO_ENABLED: u8 = 0xc0;

    // FCR (8.5).
    pub const FCR_ENABLE: u8 = 0x01;
    pub const FCR_CLEAR_RX: u8 = 0x02;
    pub const FCR_CLEAR_TX: u8 = 0x04;
    pub const FCR_DMA_MODE: u8 = 0x08;
    pub const FCR_TRIGGER_MASK: u8 = 0xc0;
    /// The FCR bits that persist (the clear bits are self-clearing; 5:4 are reserved).
    pub const FCR_STORED: u8 = FCR_ENABLE | FCR_DMA_MODE | FCR_TRIGGER_MASK;

    // LCR (8.2).
    pub const LCR_DLAB: u8 = 0x80;

    // MCR (8.8): bits 7:5 are always zero.
    pub const MCR_DTR: u8 = 0x01;
    pub const MCR_RTS: u8 = 0x02;
    pub const MCR_OUT1: u8 = 0x04;
    pub const MCR_OUT2: u8 = 0x08;
    pub const MCR_LOOP: u8 = 0x10;
    pub const MCR_MASK: u8 = 0x1f;

    // LSR (8.4).
    pub const LSR_DR: u8 = 0x01;
    pub const LSR_OE: u8 = 0x02;
    pub const LSR_PE: u8 = 0x04;
    pub const LSR_FE: u8 = 0x08;
    pub const LSR_BI: u8 = 0x10;
    pub const LSR_THRE: u8 = 0x20;
    pub const LSR_TEMT: u8 = 0x40;
    pub const LSR_RX_FIFO_ERROR: u8 = 0x80;
    /// The error bits that raise the receiver-line-status interrupt and clear on an LSR read.
    pub const LSR_ERRORS: u8 = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

    // MSR (8.9).
    pub const MSR_DCTS: u8 = 0x01;
    pub const MSR_DDSR: u8 = 0x02;
    pub const MSR_TERI: u8 = 0x04;
    pub const MSR_DDCD: u8 = 0x08;
    pub const MSR_DELTAS: u8 = 0x0f;
    pub const MSR_CTS: u8 = 0x10;
    pub const MSR_DSR: u8 = 0x20;
    pub const MSR_RI: u8 = 0x40;
    pub const MSR_DCD: u8 = 0x80;

    /// Depth of the receive and transmit FIFOs.
    pub const FIFO_SIZE: usize = 16;

    /// Receive FIFO interrupt trigger level selected by FCR bits 7:6.
    pub fn rx_trigger_level(fcr: u8) -> usize {
        match fcr >> 6 {
            0 => 1,
            1 => 4,
            2 => 8,
            _ => 14,
        }
    }

    /// Reset values (Table III). The divisor latch is not reset by the hardware; this is the
    /// 9600 baud divisor BIOSes program.
    pub const RESET_DIVISOR: u16 = 0x000c;
}

use spec::*;

/// Host input waiting for the guest, beyond the 16-byte FIFO.
pub const RX_BACKLOG_LIMIT: usize = 4096;

/// The guest-visible state of a [`Serial`], for snapshots.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialState {
    pub dll: u8,
    pub dlm: u8,
    pub ier: u8,
    /// The persistent FCR bits (enable, DMA mode, trigger level).
    pub fcr: u8,
    pub lcr: u8,
    pub mcr: u8,
    /// The full LSR as the guest would read it now (only the error bits are restored; the rest is
    /// derived).
    pub lsr: u8,
    /// Modem status lines and delta bits.
    pub msr: u8,
    pub scr: u8,
    /// The THR-empty interrupt condition is latched (cleared by an IIR read that reports it or by
    /// a THR write).
    pub thr_interrupt_pending: bool,
    /// The guest-visible receive FIFO (or RBR), oldest first.
    pub rx_fifo: Vec<u8>,
    /// Host input not yet moved into the FIFO, oldest first.
    pub rx_backlog: Vec<u8>,
}

/// A 16550A UART. Register it on the I/O bus at its base port with length 8.
pub struct Serial {
    // Runtime handles.
    irq: Irq,
    out: Box<dyn Write + Send>,
    irq_level: bool,

    // Guest-visible state.
    dll: u8,
    dlm: u8,
    ier: u8,
    fcr: u8,
    lcr: u8,
    mcr: u8,
    /// Latched LSR error bits (OE, PE, FE, BI).
    lsr_errors: u8,
    msr: u8,
    scr: u8,
    thr_pending: bool,
    rx_fifo: VecDeque<u8>,

    // Host side of the line.
    rx_backlog: VecDeque<u8>,
}

impl Serial {
    /// A UART in its reset state, interrupting on `irq` and transmitting into `out`.
    pub fn new(irq: Irq, out: Box<dyn Write + Send>) -> Self {
        let mut s = Self {
            irq,
            out,
            irq_level: false,
            dll: RESET_DIVISOR as u8,
            dlm: (RESET_DIVISOR >> 8) as u8,
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            lsr_errors: 0,
            msr: 0,
            scr: 0,
            thr_pending: false,
            rx_fifo: VecDeque::with_capacity(FIFO_SIZE),
            rx_backlog: VecDeque::new(),
        };
        s.msr = s.modem_inputs();
        s
    }

    /// A hardware reset (MR pin): registers to their Table III values. The divisor latch and
    /// scratch register keep their contents, as on the chip; pending host input is kept.
    pub fn reset(&mut self) {
        self.ier = 0;
        self.fcr = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.lsr_errors = 0;
        self.thr_pending = false;
        self.rx_fifo.clear();
        self.msr = self.modem_inputs();
        self.refill();
        self.update_irq();
    }

    /// Queues bytes typed on the host side of the line. Returns how many were accepted: the
    /// backlog holds at most [`RX_BACKLOG_LIMIT`] bytes; the caller keeps the rest and retries.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.input_space());
        self.rx_backlog.extend(&bytes[..n]);
        self.refill();
        self.update_irq();
        n
    }

    /// How many more bytes [`Serial::enqueue_input`] would accept now.
    pub fn input_space(&self) -> usize {
        RX_BACKLOG_LIMIT - self.rx_backlog.len()
    }

    /// The guest-visible state.
    pub fn state(&self) -> SerialState {
        SerialState {
            dll: self.dll,
            dlm: self.dlm,
            ier: self.ier,
            fcr: self.fcr,
            lcr: self.lcr,
            mcr: self.mcr,
            lsr: self.lsr(),
            msr: self.msr,
            scr: self.scr,
            thr_interrupt_pending: self.thr_pending,
            rx_fifo: self.rx_fifo.iter().copied().collect(),
            rx_backlog: self.rx_backlog.iter().copied().collect(),
        }
    }

    /// Loads a state produced by [`Serial::state`] and drives the interrupt line to match it.
    pub fn restore(&mut self, s: &SerialState) {
        self.dll = s.dll;
        self.dlm = s.dlm;
        self.ier = s.ier & IER_MASK;
        self.fcr = s.fcr & FCR_STORED;
        self.lcr = s.lcr;
        self.mcr = s.mcr & MCR_MASK;
        self.lsr_errors = s.lsr & LSR_ERRORS;
        self.msr = s.msr;
        self.scr = s.scr;
        self.thr_pending = s.thr_interrupt_pending;
        self.rx_fifo = s
            .rx_fifo
            .iter()
            .copied()
            .take(self.fifo_capacity())
            .collect();
        self.rx_backlog = s
            .rx_backlog
            .iter()
            .copied()
            .take(RX_BACKLOG_LIMIT)
            .collect();
        self.refill();
        self.irq_level = self.irq_wanted();
        self.irq.set_level(self.irq_level);
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_ENABLE != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// Bytes the guest can see at once: the FIFO, or the single RBR in 16450 mode.
    fn fifo_capacity(&self) -> usize {
        if self.fifo_enabled() {
            FIFO_SIZE
        } else {
            1
        }
    }

    /// Moves host input into the guest-visible FIFO. In loopback mode the serial input is
    /// disconnected (8.8), so host input waits.
    fn refill(&mut self) {
        if self.loopback() {
            return;
        }
        let cap = self.fifo_capacity();
        while self.rx_fifo.len() < cap {
            match self.rx_backlog.pop_front() {
                Some(b) => self.rx_fifo.push_back(b),
                None => break,
            }
        }
    }

    fn lsr(&self) -> u8 {
        let mut lsr = self.lsr_errors | LSR_THRE | LSR_TEMT;
        if !self.rx_fifo.is_empty() {
            lsr |= LSR_DR;
        }
        lsr
    }

    /// The modem status inputs: in loopback the MCR outputs fed back (8.8), otherwise a modem
    /// that is always there (CTS, DSR and DCD asserted, no ring).
    fn modem_inputs(&self) -> u8 {
        if self.loopback() {
            let mut v = 0;
            if self.mcr & MCR_RTS != 0 {
                v |= MSR_CTS;
            }
            if self.mcr & MCR_DTR != 0 {
                v |= MSR_DSR;
            }
            if self.mcr & MCR_OUT1 != 0 {
                v |= MSR_RI;
            }
            if self.mcr & MCR_OUT2 != 0 {
                v |= MSR_DCD;
            }
            v
        } else {
            MSR_CTS | MSR_DSR | MSR_DCD
        }
    }

    /// Updates the MSR status bits from the inputs, latching the delta bits of 8.9.
    fn update_modem_status(&mut self) {
        let new = self.modem_inputs();
        let old = self.msr & !MSR_DELTAS;
        let changed = old ^ new;
        let mut deltas = self.msr & MSR_DELTAS;
        if changed & MSR_CTS != 0 {
            deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            deltas |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            deltas |= MSR_DDCD;
        }
        // TERI: the ring indicator went from on to off.
        if old & MSR_RI != 0 && new & MSR_RI == 0 {
            deltas |= MSR_TERI;
        }
        self.msr = new | deltas;
    }

    /// The highest-priority pending enabled interrupt (Table IV), as its IIR bits 3:0.
    fn pending_interrupt(&self) -> Option<u8> {
        if self.ier & IER_RLSI != 0 && self.lsr_errors != 0 {
            return Some(IIR_RLSI);
        }
        if self.ier & IER_RDI != 0 && !self.rx_fifo.is_empty() {
            if self.fifo_enabled() && self.rx_fifo.len() < rx_trigger_level(self.fcr) {
                return Some(IIR_RX_TIMEOUT);
            }
            return Some(IIR_RDI);
        }
        if self.ier & IER_THRI != 0 && self.thr_pending {
            return Some(IIR_THRI);
        }
        if self.ier & IER_MSI != 0 && self.msr & MSR_DELTAS != 0 {
            return Some(IIR_MSI);
        }
        None
    }

    /// INTR gated by OUT2 (and cut off in loopback, where the OUT2 pin is forced inactive).
    fn irq_wanted(&self) -> bool {
        self.pending_interrupt().is_some() && self.mcr & MCR_OUT2 != 0 && !self.loopback()
    }

    fn update_irq(&mut self) {
        let level = self.irq_wanted();
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn fifo_bits(&self) -> u8 {
        if self.fifo_enabled() {
            IIR_FIFO_ENABLED
        } else {
            0
        }
    }

    fn transmit(&mut self, byte: u8) {
        if self.loopback() {
            // The transmitter output is looped into the receiver (8.8).
            if self.rx_fifo.len() < self.fifo_capacity() {
                self.rx_fifo.push_back(byte);
            } else {
                self.lsr_errors |= LSR_OE;
                if !self.fifo_enabled() {
                    // 16450 mode: the new character overwrites the unread one.
                    self.rx_fifo.clear();
                    self.rx_fifo.push_back(byte);
                }
            }
        } else if let Err(e) = self.out.write_all(&[byte]).and_then(|_| self.out.flush()) {
            warn_limited!("serial: transmitted byte lost: {e}");
        }
        // The THR empties at once; its interrupt condition is set again.
        self.thr_pending = true;
    }

    fn unhandled(&mut self, what: &str, offset: u64, value: u8) {
        warn_limited!("serial: {what} at offset {offset} (value {value:#04x}) ignored");
    }

    fn read_register(&mut self, offset: u64) -> u8 {
        match offset {
            DLL if self.dlab() => self.dll,
            DLM if self.dlab() => self.dlm,
            RBR_THR => {
                // Reading an empty RBR returns zero (the chip returns stale data).
                let v = self.rx_fifo.pop_front().unwrap_or(0);
                self.refill();
                v
            }
            IER => self.ier,
            IIR_FCR => {
                let pending = self.pending_interrupt();
                if pending == Some(IIR_THRI) {
                    // Reading the IIR that reports THRE clears that interrupt (Table IV).
                    self.thr_pending = false;
                }
                pending.unwrap_or(IIR_NO_INT) | self.fifo_bits()
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let v = self.lsr();
                self.lsr_errors = 0;
                v
            }
            MSR => {
                let v = self.msr;
                self.msr &= !MSR_DELTAS;
                v
            }
            SCR => self.scr,
            _ => 0xff,
        }
    }

    fn write_register(&mut self, offset: u64, v: u8) {
        match offset {
            DLL if self.dlab() => self.dll = v,
            DLM if self.dlab() => self.dlm = v,
            RBR_THR => self.transmit(v),
            IER => {
                let new = v & IER_MASK;
                let changed = self.ier ^ new;
                self.ier = new;
                if changed & IER_THRI != 0 {
                    // Enabling ETBEI while the THR is empty raises the THRE interrupt at once;
                    // Linux's startup test depends on it being raised again after a disable.
                    self.thr_pending = new & IER_THRI != 0;
                }
            }
            IIR_FCR => {
                let new = if v & FCR_ENABLE != 0 { v } else { 0 };
                if (new ^ self.fcr) & FCR_ENABLE != 0 {
                    // Changing the FIFO enable clears both FIFOs (8.5).
                    self.rx_fifo.clear();
                }
                if new & FCR_CLEAR_RX != 0 {
                    self.rx_fifo.clear();
                }
                // FCR_CLEAR_TX: the transmitter is always empty.
                self.fcr = new & FCR_STORED;
            }
            LCR => self.lcr = v,
            MCR => {
                let was_loop = self.loopback();
                self.mcr = v & MCR_MASK;
                if was_loop && !self.loopback() {
                    log::debug!("serial: loopback mode off");
                }
                self.update_modem_status();
            }
            LSR | MSR => self.unhandled("write to a read-only (factory test) register", offset, v),
            SCR => self.scr = v,
            _ => self.unhandled("write outside the UART", offset, v),
        }
    }
}

impl BusDevice for Serial {
    /// Multi-byte accesses are split into byte cycles on consecutive offsets, as the ISA bus does
    /// for an 8-bit device; bytes beyond the UART read as 0xFF.
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let off = offset + i as u64;
            *b = if off < REGISTER_COUNT {
                self.read_register(off)
            } else {
                self.unhandled("read outside the UART", off, 0xff);
                0xff
            };
        }
        self.refill();
        self.update_irq();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let off = offset + i as u64;
            if off < REGISTER_COUNT {
                self.write_register(off, v);
            } else {
                self.unhandled("write outside the UART", off, v);
            }
        }
        self.refill();
        self.update_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::testing::{FakeIrq, Sink};
    use crate::testing::cbor_round_trip;
    use std::sync::Arc;

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("host sink gone"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn uart() -> (Serial, Arc<FakeIrq>, Sink) {
        let irq = Arc::new(FakeIrq::default());
        let sink = Sink::default();
        (Serial::new(irq.clone(), Box::new(sink.clone())), irq, sink)
    }

    fn rd(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    fn wr(s: &mut Serial, off: u64, v: u8) {
        s.write(off, &[v]);
    }

    #[test]
    fn reset_values() {
        let (mut s, irq, _) = uart();
        assert_eq!(rd(&mut s, IER), 0);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_NO_INT);
        assert_eq!(rd(&mut s, LCR), 0);
        assert_eq!(rd(&mut s, MCR), 0);
        assert_eq!(rd(&mut s, LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(rd(&mut s, MSR), MSR_CTS | MSR_DSR | MSR_DCD);
        assert!(!irq.is_high());
    }

    #[test]
    fn divisor_latch_behind_dlab() {
        let (mut s, _, sink) = uart();
        wr(&mut s, LCR, LCR_DLAB | 0x03);
        wr(&mut s, DLL, 0x01);
        wr(&mut s, DLM, 0x02);
        assert_eq!(rd(&mut s, DLL), 0x01);
        assert_eq!(rd(&mut s, DLM), 0x02);
        // Nothing was transmitted and the IER was untouched.
        assert!(sink.0.lock().unwrap().is_empty());
        wr(&mut s, LCR, 0x03);
        assert_eq!(rd(&mut s, IER), 0);
        assert_eq!(rd(&mut s, LCR), 0x03);
    }

    #[test]
    fn scratch_register_and_ier_mask() {
        let (mut s, _, _) = uart();
        wr(&mut s, SCR, 0xa5);
        assert_eq!(rd(&mut s, SCR), 0xa5);
        wr(&mut s, IER, 0xff);
        assert_eq!(rd(&mut s, IER), 0x0f);
        wr(&mut s, MCR, 0xff);
        assert_eq!(rd(&mut s, MCR), 0x1f);
    }

    /// The probe sequence of Linux's `autoconfig()` and `autoconfig_16550a()`
    /// (drivers/tty/serial/8250/8250_port.c), step by step.
    #[test]
    fn linux_autoconfig_finds_a_16550a() {
        let (mut s, _, sink) = uart();
        // Existence test: IER reads back 0 then 0x0F.
        let saved_ier = rd(&mut s, IER);
        wr(&mut s, IER, 0);
        assert_eq!(rd(&mut s, IER) & 0x0f, 0);
        wr(&mut s, IER, 0x0f);
        assert_eq!(rd(&mut s, IER) & 0x0f, 0x0f);
        wr(&mut s, IER, saved_ier);
        let save_mcr = rd(&mut s, MCR);
        let save_lcr = rd(&mut s, LCR);
        // Loopback test: LOOP | OUT2 | RTS gives DCD | CTS in MSR bits 7:4.
        wr(&mut s, MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        assert_eq!(rd(&mut s, MSR) & 0xf0, MSR_DCD | MSR_CTS);
        wr(&mut s, MCR, save_mcr);
        // EFR write behind LCR 0xBF lands in the FCR; then FIFO enable.
        wr(&mut s, LCR, 0xbf);
        wr(&mut s, IIR_FCR, 0);
        wr(&mut s, LCR, 0);
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        assert_eq!(rd(&mut s, IIR_FCR) >> 6, 3, "IIR bits 7:6 say 16550A");
        // autoconfig_16550a: no EFR behind LCR 0x80 (offset 2 reads the non-zero IIR) ...
        wr(&mut s, LCR, 0x80);
        assert_ne!(rd(&mut s, IIR_FCR), 0);
        // ... nor behind 0xBF.
        wr(&mut s, LCR, 0xbf);
        assert_ne!(rd(&mut s, IIR_FCR), 0);
        // No NS SuperIO: EXCR1 (offset 2 with LCR 0xE0) does not follow MCR.LOOP.
        wr(&mut s, LCR, 0);
        let status1 = rd(&mut s, MCR);
        wr(&mut s, LCR, 0xe0);
        let status2 = rd(&mut s, IIR_FCR);
        assert_eq!((status1 ^ status2) & MCR_LOOP, 0);
        wr(&mut s, LCR, 0);
        wr(&mut s, MCR, status1 ^ MCR_LOOP);
        wr(&mut s, LCR, 0xe0);
        let status2 = rd(&mut s, IIR_FCR);
        wr(&mut s, LCR, 0);
        wr(&mut s, MCR, status1);
        assert_eq!((status1 ^ status2) & MCR_LOOP, 0, "not a NS16550A SuperIO");
        // No 16750: IIR bit 5 never follows FCR bit 5, with or without DLAB.
        wr(&mut s, IIR_FCR, FCR_ENABLE | 0x20);
        let s1 = rd(&mut s, IIR_FCR) & 0xe0;
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        wr(&mut s, LCR, 0x80);
        wr(&mut s, IIR_FCR, FCR_ENABLE | 0x20);
        let s2 = rd(&mut s, IIR_FCR) & 0xe0;
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        wr(&mut s, LCR, 0);
        assert_eq!(s1, 0xc0);
        assert_eq!(s2, 0xc0);
        // Not an XScale: IER bit 6 (UUE) does not stick.
        let iersave = rd(&mut s, IER);
        wr(&mut s, IER, iersave & !0x40);
        assert_eq!(rd(&mut s, IER) & 0x40, 0);
        wr(&mut s, IER, iersave | 0x40);
        assert_eq!(rd(&mut s, IER) & 0x40, 0);
        wr(&mut s, IER, iersave);
        wr(&mut s, LCR, save_lcr);
        // Nothing reached the line during the probe.
        assert!(sink.0.lock().unwrap().is_empty());
        // Startup's LSR safety check.
        assert_ne!(rd(&mut s, LSR), 0xff);
    }

    /// serial8250_do_startup(): THRE must be re-asserted when ETBEI is enabled again, and the
    /// TX-enable test must see a THRE interrupt.
    #[test]
    fn thre_interrupt_reasserts_like_linux_expects() {
        let (mut s, irq, _) = uart();
        wr(&mut s, IER, IER_THRI);
        let iir1 = rd(&mut s, IIR_FCR);
        wr(&mut s, IER, 0);
        wr(&mut s, IER, IER_THRI);
        let iir = rd(&mut s, IIR_FCR);
        wr(&mut s, IER, 0);
        assert_eq!(iir1 & IIR_NO_INT, 0);
        assert_eq!(iir & IIR_NO_INT, 0, "no UART_BUG_THRE");
        // Reading the IIR cleared the condition while ETBEI stays set.
        wr(&mut s, IER, IER_THRI);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_THRI);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_NO_INT);
        // No OUT2, no interrupt line.
        assert!(!irq.is_high());
    }

    #[test]
    fn transmit_goes_to_the_sink_and_raises_thre() {
        let (mut s, irq, sink) = uart();
        wr(&mut s, MCR, MCR_OUT2 | MCR_DTR | MCR_RTS);
        wr(&mut s, IER, IER_THRI);
        assert!(irq.is_high());
        assert_eq!(rd(&mut s, IIR_FCR), IIR_THRI);
        assert!(!irq.is_high());
        wr(&mut s, RBR_THR, b'h');
        wr(&mut s, RBR_THR, b'i');
        assert_eq!(&*sink.0.lock().unwrap(), b"hi");
        assert!(irq.is_high());
        assert_eq!(irq.edges(), 2);
        assert_eq!(rd(&mut s, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_THRI);
        assert!(!irq.is_high());
    }

    #[test]
    fn out2_gates_the_interrupt_line() {
        let (mut s, irq, _) = uart();
        s.enqueue_input(b"x");
        wr(&mut s, IER, IER_RDI);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_RDI);
        assert!(!irq.is_high());
        wr(&mut s, MCR, MCR_OUT2);
        assert!(irq.is_high());
        wr(&mut s, MCR, 0);
        assert!(!irq.is_high());
        wr(&mut s, MCR, MCR_OUT2);
        assert_eq!(rd(&mut s, RBR_THR), b'x');
        assert!(!irq.is_high());
    }

    #[test]
    fn receive_without_fifo_shows_one_byte_at_a_time() {
        let (mut s, irq, _) = uart();
        wr(&mut s, MCR, MCR_OUT2);
        wr(&mut s, IER, IER_RDI);
        assert_eq!(s.enqueue_input(b"abc"), 3);
        assert!(irq.is_high());
        assert_eq!(rd(&mut s, IIR_FCR), IIR_RDI);
        assert_eq!(rd(&mut s, LSR) & LSR_DR, LSR_DR);
        assert_eq!(s.state().rx_fifo, b"a");
        assert_eq!(rd(&mut s, RBR_THR), b'a');
        assert_eq!(rd(&mut s, RBR_THR), b'b');
        assert_eq!(rd(&mut s, RBR_THR), b'c');
        assert_eq!(rd(&mut s, LSR) & LSR_DR, 0);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_NO_INT);
        assert!(!irq.is_high());
        // An empty RBR reads as zero.
        assert_eq!(rd(&mut s, RBR_THR), 0);
    }

    #[test]
    fn fifo_trigger_level_and_character_timeout() {
        let (mut s, irq, _) = uart();
        wr(&mut s, MCR, MCR_OUT2);
        wr(
            &mut s,
            IIR_FCR,
            FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX | 0x80,
        ); // trigger 8
        wr(&mut s, IER, IER_RDI);
        // One typed character, below the trigger: the timeout indication.
        s.enqueue_input(b"k");
        assert!(irq.is_high());
        assert_eq!(rd(&mut s, IIR_FCR), 0xcc);
        assert_eq!(rd(&mut s, RBR_THR), b'k');
        assert_eq!(rd(&mut s, IIR_FCR), 0xc1);
        assert!(!irq.is_high());
        // Reaching the trigger level: received data available.
        s.enqueue_input(b"12345678");
        assert_eq!(rd(&mut s, IIR_FCR), 0xc4);
        // Twenty bytes: 16 in the FIFO, the rest follows as it drains.
        s.enqueue_input(b"abcdefghijkl");
        assert_eq!(s.state().rx_fifo.len(), 16);
        let mut got = Vec::new();
        while rd(&mut s, LSR) & LSR_DR != 0 {
            got.push(rd(&mut s, RBR_THR));
        }
        assert_eq!(got, b"12345678abcdefghijkl");
        assert!(!irq.is_high());
    }

    #[test]
    fn fifo_clear_and_disable() {
        let (mut s, _, _) = uart();
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        s.enqueue_input(&[7u8; 20]);
        assert_eq!(s.state().rx_fifo.len(), 16);
        // Clearing the RX FIFO drops what the guest could see; the line delivers the rest.
        wr(&mut s, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(s.state().rx_fifo.len(), 4);
        wr(&mut s, IIR_FCR, 0);
        assert_eq!(rd(&mut s, IIR_FCR) & 0xc0, 0);
        assert!(s.state().rx_fifo.is_empty());
        assert!(s.state().rx_backlog.is_empty());
    }

    #[test]
    fn input_is_bounded() {
        let (mut s, _, _) = uart();
        let big = vec![b'z'; RX_BACKLOG_LIMIT + 100];
        let n = s.enqueue_input(&big);
        // One byte went into the RBR at once, so the backlog took the limit.
        assert_eq!(n, RX_BACKLOG_LIMIT);
        assert_eq!(s.input_space(), 1);
        assert_eq!(s.enqueue_input(b"zz"), 1);
        assert_eq!(s.input_space(), 0);
        rd(&mut s, RBR_THR);
        assert_eq!(s.input_space(), 1);
    }

    #[test]
    fn interrupt_priority() {
        let (mut s, irq, _) = uart();
        wr(&mut s, MCR, MCR_OUT2);
        wr(&mut s, IER, IER_RDI | IER_THRI | IER_RLSI | IER_MSI);
        // THRE is pending; received data outranks it.
        s.enqueue_input(b"a");
        assert_eq!(rd(&mut s, IIR_FCR), IIR_RDI);
        // A line status error outranks received data.
        wr(&mut s, MCR, MCR_OUT2 | MCR_LOOP);
        wr(&mut s, RBR_THR, b'b'); // RBR full in 16450 mode -> overrun
        assert_eq!(rd(&mut s, IIR_FCR), IIR_RLSI);
        let lsr = rd(&mut s, LSR);
        assert_eq!(lsr & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(rd(&mut s, LSR) & LSR_OE, 0, "OE clears on read");
        assert_eq!(rd(&mut s, IIR_FCR), IIR_RDI);
        assert_eq!(
            rd(&mut s, RBR_THR),
            b'b',
            "the overrun replaced the character"
        );
        // THRE next (set by the loopback write), then modem status (entering loopback changed
        // DSR, CTS and DCD).
        assert_eq!(rd(&mut s, IIR_FCR), IIR_THRI);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_MSI);
        // Loopback with only OUT2 set: DCD stays, CTS and DSR drop.
        let msr = rd(&mut s, MSR);
        assert_eq!(msr, MSR_DCD | MSR_DCTS | MSR_DDSR);
        assert_eq!(rd(&mut s, IIR_FCR), IIR_NO_INT);
        // All of it happened in loopback, where OUT2 cannot reach the PIC.
        assert!(!irq.is_high());
    }

    #[test]
    fn loopback_routes_tx_to_rx_and_mcr_to_msr() {
        let (mut s, _, sink) = uart();
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        s.enqueue_input(b"host");
        rd(&mut s, RBR_THR); // consume 'h'; "ost" stays in the FIFO
        wr(&mut s, IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        wr(&mut s, MCR, MCR_LOOP);
        assert_eq!(rd(&mut s, MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
        wr(
            &mut s,
            MCR,
            MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT1 | MCR_OUT2,
        );
        assert_eq!(
            rd(&mut s, MSR),
            MSR_CTS | MSR_DSR | MSR_RI | MSR_DCD | MSR_DCTS | MSR_DDSR | MSR_DDCD
        );
        wr(&mut s, MCR, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT2);
        assert_eq!(rd(&mut s, MSR) & MSR_TERI, MSR_TERI, "trailing edge of RI");
        // Host input waits while the serial input is disconnected.
        s.enqueue_input(b"!");
        for b in b"loop" {
            wr(&mut s, RBR_THR, *b);
        }
        assert!(sink.0.lock().unwrap().is_empty());
        let mut got = Vec::new();
        while rd(&mut s, LSR) & LSR_DR != 0 {
            got.push(rd(&mut s, RBR_THR));
        }
        assert_eq!(got, b"loop");
        // It arrives when loopback ends.
        wr(&mut s, MCR, 0);
        assert_eq!(rd(&mut s, RBR_THR), b'!');
        assert_eq!(rd(&mut s, LSR) & LSR_DR, 0);
    }

    #[test]
    fn fifo_overrun_in_loopback_keeps_the_fifo() {
        let (mut s, _, _) = uart();
        wr(&mut s, IIR_FCR, FCR_ENABLE);
        wr(&mut s, MCR, MCR_LOOP);
        for i in 0..17u8 {
            wr(&mut s, RBR_THR, i);
        }
        assert_eq!(rd(&mut s, LSR) & LSR_OE, LSR_OE);
        assert_eq!(rd(&mut s, RBR_THR), 0);
        assert_eq!(s.state().rx_fifo.len(), 15);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_defined() {
        let (mut s, _, _) = uart();
        wr(&mut s, SCR, 0x42);
        let mut d = [0u8; 4];
        s.read(6, &mut d);
        assert_eq!(d[1], 0x42);
        assert_eq!(&d[2..], &[0xff, 0xff]);
        s.read(100, &mut d);
        assert_eq!(d, [0xff; 4]);
        s.write(100, &[1, 2, 3, 4]);
        s.write(LSR, &[0]);
        // A 16-bit write at LCR also writes MCR, as two ISA byte cycles would.
        s.write(LCR, &[0x03, 0x0b]);
        assert_eq!(rd(&mut s, LCR), 0x03);
        assert_eq!(rd(&mut s, MCR), 0x0b);
    }

    #[test]
    fn sink_errors_do_not_panic() {
        let irq = Arc::new(FakeIrq::default());
        let mut s = Serial::new(irq, Box::new(Broken));
        for _ in 0..100 {
            wr(&mut s, RBR_THR, b'x');
        }
        assert_eq!(rd(&mut s, LSR) & LSR_THRE, LSR_THRE);
    }

    /// A UART as a driver leaves it mid-session: 2400 baud 8E1, FIFO on with trigger level 4,
    /// receive and THRE interrupts enabled through OUT2, the scratch register used, and 40 bytes
    /// of host input (16 in the FIFO, 24 waiting).
    fn busy_uart() -> Serial {
        let (mut s, _, _) = uart();
        wr(&mut s, LCR, LCR_DLAB);
        wr(&mut s, DLL, 0x30);
        wr(&mut s, LCR, 0x1b);
        wr(&mut s, IIR_FCR, FCR_ENABLE | 0x40);
        wr(&mut s, MCR, MCR_OUT2 | MCR_DTR);
        wr(&mut s, IER, IER_RDI | IER_THRI);
        wr(&mut s, SCR, 0x99);
        s.enqueue_input(&(0u8..40).collect::<Vec<_>>());
        s
    }

    #[test]
    fn state_round_trip() {
        let s = busy_uart();
        let st = s.state();
        assert_eq!(st.rx_fifo.len(), 16);
        assert_eq!(st.rx_backlog.len(), 24);

        let (mut t, irq2, _) = uart();
        t.restore(&st);
        assert_eq!(t.state(), st);
        assert!(irq2.is_high());
        assert_eq!(rd(&mut t, IIR_FCR), 0xc4);
    }

    #[test]
    fn state_round_trips_through_cbor() {
        let mut s = busy_uart();
        let st = s.state();
        let (mut t, irq, _) = uart();
        t.restore(&cbor_round_trip(&st));
        assert_eq!(t.state(), st);
        assert!(irq.is_high());
        // The guest sees the same registers, the same divisor and the same 40 bytes.
        for off in [IIR_FCR, IER, LCR, MCR, LSR, MSR, SCR] {
            assert_eq!(rd(&mut t, off), rd(&mut s, off), "offset {off}");
        }
        let divisor = |u: &mut Serial| {
            wr(u, LCR, 0x1b | LCR_DLAB);
            let d = (rd(u, DLL), rd(u, DLM));
            wr(u, LCR, 0x1b);
            d
        };
        assert_eq!(divisor(&mut t), (0x30, 0x00));
        assert_eq!(divisor(&mut s), (0x30, 0x00));
        let drain = |u: &mut Serial| {
            let mut got = Vec::new();
            while rd(u, LSR) & LSR_DR != 0 {
                got.push(rd(u, RBR_THR));
            }
            got
        };
        assert_eq!(drain(&mut t), (0u8..40).collect::<Vec<_>>());
        assert_eq!(drain(&mut s), (0u8..40).collect::<Vec<_>>());
        assert_eq!(t.state(), s.state());
    }

    #[test]
    fn reset_keeps_divisor_and_input() {
        let (mut s, irq, _) = uart();
        wr(&mut s, LCR, LCR_DLAB);
        wr(&mut s, DLL, 0x01);
        wr(&mut s, LCR, 0);
        wr(&mut s, MCR, MCR_OUT2);
        wr(&mut s, IER, IER_THRI);
        assert!(irq.is_high());
        s.enqueue_input(b"qr");
        s.reset();
        assert!(!irq.is_high());
        assert_eq!(rd(&mut s, IER), 0);
        // The reset emptied the RBR ('q'); the line still delivers what the host sent after it.
        assert_eq!(rd(&mut s, RBR_THR), b'r');
        wr(&mut s, LCR, LCR_DLAB);
        assert_eq!(rd(&mut s, DLL), 0x01);
    }
}
