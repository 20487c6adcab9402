//! The receive and transmit descriptor engines (HRM sections 4.2 and 4.3): descriptor lists in
//! ring form (the next descriptor follows after 16 + 4 * DSL bytes; RER/TER go back to the list
//! base, and take precedence) or chained form (RCH/TCH: buffer 2's address is the next
//! descriptor), two buffers per descriptor of up to 2047 bytes each, frames spanning descriptors
//! with first/last segment marks, and ownership handed back by clearing OWN.
//!
//! Descriptor and list addresses are longword aligned: kettle ignores bits 1:0 of CSR3, CSR4 and
//! chain pointers, as the chip does. Buffer addresses are used as given. Every walk is bounded by
//! [`DESCRIPTOR_LIMIT`], so a list that loops (a chain pointing at itself, a ring without an end
//! mark) ends in a suspended process, never a spin. A DMA cycle outside guest RAM is a fatal
//! bus error (CSR5 FBE, both processes stopped).
//!
//! Receive: a frame (as a TAP delivers it, without FCS) that passes the address filter is padded
//! to 60 bytes, gets its CRC-32 appended (RDES0's frame length counts it, as on the wire), and is
//! written into as many descriptors as it needs. A descriptor is closed (OWN cleared) once the
//! next one has been fetched, or at once when the frame ends in it; the last one carries LS, the
//! frame length and the MF/FT/TL/FF bits, and RI is raised. If the first descriptor is host-owned
//! the receive process suspends with RU and the frame stays with the caller
//! ([`RxOutcome::NoBuffer`]); a later host-owned descriptor (or the walk bound) truncates the
//! frame: its last descriptor gets DE and ES, RU is raised and the process suspends. While the
//! process is suspended each offered frame re-reads the current descriptor, as the chip does when
//! a frame arrives.
//!
//! Transmit: a frame is sent only once every descriptor from its first segment (FS) to its last
//! (LS) is owned by the chip; otherwise nothing is touched and the process suspends at the
//! frame's first descriptor, so no partial frame is ever held. Zero-length buffers are skipped. A
//! descriptor without FS where a frame should start carries no frame (Linux queues such empty
//! descriptors before setup frames); it is closed and its data, if any, dropped. A frame whose
//! segments run into another FS or setup descriptor before LS is dropped with ES|UF; one longer
//! than [`MAX_TX_FRAME`] is dropped with ES|TO; one spanning more than [`DESCRIPTOR_LIMIT`]
//! descriptors is dropped with ES|UF in its first descriptor. Short frames are padded to 60
//! bytes unless TDES1 DPD says not to; with AC set the buffers end in the guest's own FCS, which
//! the backend does not get; an empty frame sends nothing. TI follows a frame whose last
//! descriptor has IC; TU follows every poll that ends with the process suspended on a host-owned
//! descriptor (automatic polls only when they sent something).

use crate::bus::warn_limited;
use crate::dma::DmaError;

use super::chip::TulipCore;
use super::crc::crc32;
use super::filter::FilterMode;
use super::spec::*;
use super::RxOutcome;

/// One descriptor as read from guest memory.
#[derive(Clone, Copy, Debug)]
struct Desc {
    status: u32,
    control: u32,
    buf1: u32,
    buf2: u32,
}

impl Desc {
    fn owned(&self) -> bool {
        self.status & DES0_OWN != 0
    }

    /// The data buffers: buffer 1, and buffer 2 unless it is the chain pointer.
    fn buffers(&self) -> [(u32, usize); 2] {
        let size1 = (self.control & DES1_BS1_MASK) as usize;
        let size2 = if self.control & DES1_CH != 0 {
            0
        } else {
            (self.control >> DES1_BS2_SHIFT & DES1_BS1_MASK) as usize
        };
        [(self.buf1, size1), (self.buf2, size2)]
    }
}

/// The frame as the wire carries it: padded to the minimum length, FCS appended. None when it is
/// too long for RDES0's length field.
fn wire_frame(frame: &[u8]) -> Option<Vec<u8>> {
    let len = frame.len().max(ETH_MIN_FRAME);
    if len + ETH_FCS_LEN > MAX_RX_FRAME_FCS {
        return None;
    }
    let mut w = Vec::with_capacity(len + ETH_FCS_LEN);
    w.extend_from_slice(frame);
    w.resize(len, 0);
    let fcs = crc32(&w);
    w.extend_from_slice(&fcs.to_le_bytes());
    Some(w)
}

/// How a transmit poll step ended.
enum TxStep {
    /// A descriptor (or a frame's descriptors) was processed; the list pointer moved on.
    Done,
    /// The current descriptor (or one of the frame's later ones) belongs to the host.
    NotOwned,
}

impl TulipCore {
    // ---- Descriptor access -------------------------------------------------------------------

    fn read_desc(&self, addr: u32) -> Result<Desc, DmaError> {
        let mut b = [0u8; DESC_SIZE as usize];
        self.mem.read(u64::from(addr), &mut b)?;
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        Ok(Desc {
            status: w(0),
            control: w(1),
            buf1: w(2),
            buf2: w(3),
        })
    }

    fn read_own(&self, addr: u32) -> Result<bool, DmaError> {
        let mut b = [0u8; 4];
        self.mem.read(u64::from(addr), &mut b)?;
        Ok(u32::from_le_bytes(b) & DES0_OWN != 0)
    }

    fn write_status(&self, addr: u32, status: u32) -> Result<(), DmaError> {
        self.mem.write(u64::from(addr), &status.to_le_bytes())
    }

    /// The descriptor after `d` (at `addr`) in a list based at `base`.
    fn next_desc(&self, addr: u32, d: &Desc, base: u32) -> u32 {
        if d.control & DES1_ER != 0 {
            base
        } else if d.control & DES1_CH != 0 {
            d.buf2 & !3
        } else {
            let skip = 4 * self.csr0_dsl();
            addr.wrapping_add(DESC_SIZE + skip)
        }
    }

    fn csr0_dsl(&self) -> u32 {
        self.csr0 >> CSR0_DSL_SHIFT & CSR0_DSL_MASK
    }

    // ---- Receive -----------------------------------------------------------------------------

    /// CSR6 SR set: the receive process fetches its current descriptor and waits for a frame,
    /// or suspends (RU) when the descriptor is the host's.
    pub(super) fn rx_start(&mut self) {
        if self.fatal {
            return;
        }
        self.rx_state = RS_WAITING;
        self.rx_fetch();
        if self.rx_state == RS_WAITING {
            self.rx_notify.rx_ready();
        }
    }

    /// Re-reads the current receive descriptor: owned by the chip, the process waits for frames;
    /// owned by the host, it is (or stays) suspended, with RU when it was not already.
    fn rx_fetch(&mut self) {
        if !self.can_dma() {
            return;
        }
        match self.read_own(self.rx_current) {
            Ok(true) => self.rx_state = RS_WAITING,
            Ok(false) => {
                if self.rx_state != RS_SUSPENDED {
                    self.rx_state = RS_SUSPENDED;
                    self.status |= CSR5_RU;
                }
            }
            Err(e) => self.bus_error(e),
        }
        self.update_irq();
    }

    /// CSR2 written: a suspended receive process looks at its descriptor again.
    pub(super) fn rx_poll_demand(&mut self) {
        if self.rx_state == RS_STOPPED {
            return;
        }
        if self.rx_state == RS_SUSPENDED {
            self.rx_fetch();
        }
        if self.rx_state != RS_STOPPED {
            self.rx_waiting = false;
            self.rx_notify.rx_ready();
        }
    }

    /// While the host holds a frame that found no descriptor, tells it as soon as the guest has
    /// handed the current descriptor back (looked at after guest register accesses; drivers
    /// like Linux's refill the ring without a poll demand).
    pub(super) fn check_rx_waiting(&mut self) {
        if !self.rx_waiting || self.rx_state == RS_STOPPED || !self.can_dma() {
            return;
        }
        let ready =
            self.rx_state == RS_WAITING || matches!(self.read_own(self.rx_current), Ok(true));
        if ready {
            self.rx_waiting = false;
            self.rx_notify.rx_ready();
        }
    }

    /// Whether the filter takes a frame for `dest`, and whether it only does so because of
    /// receive-all (RDES0 FF).
    fn accept(&self, dest: &[u8; ETH_ALEN]) -> Option<bool> {
        let multicast = dest[0] & 1 != 0;
        let passes = self.csr6 & CSR6_PR != 0
            || (self.csr6 & CSR6_PM != 0 && multicast)
            || self.filter.matches(dest);
        if passes {
            Some(false)
        } else if self.csr6 & CSR6_RA != 0 {
            Some(true)
        } else {
            None
        }
    }

    /// A frame from the host network (without FCS, as a TAP device delivers it).
    pub fn receive(&mut self, frame: &[u8]) -> RxOutcome {
        if self.rx_state == RS_STOPPED || !self.can_dma() || !self.mii.link_ok() {
            return RxOutcome::Stopped;
        }
        let Some(dest) = frame.get(..ETH_ALEN) else {
            warn_limited!("tulip: dropped a {}-byte runt from the host", frame.len());
            return RxOutcome::Filtered;
        };
        let dest: [u8; ETH_ALEN] = dest.try_into().unwrap_or([0; ETH_ALEN]);
        let Some(ff) = self.accept(&dest) else {
            return RxOutcome::Filtered;
        };
        let Some(wire) = wire_frame(frame) else {
            warn_limited!(
                "tulip: dropped a {}-byte frame from the host (longer than the chip can receive)",
                frame.len()
            );
            return RxOutcome::Filtered;
        };
        let outcome = self.rx_store(&wire, DT_SERIAL, ff);
        self.rx_waiting = matches!(outcome, RxOutcome::NoBuffer);
        outcome
    }

    /// RDES0 of a frame's last descriptor.
    fn rx_last_status(wire: &[u8], stored: usize, first: bool, dt: u32, ff: bool) -> u32 {
        let mut s =
            RDES0_LS | (stored as u32 & RDES0_FL_MASK) << RDES0_FL_SHIFT | dt << RDES0_DT_SHIFT;
        if first {
            s |= RDES0_FS;
        }
        if wire[0] & 1 != 0 {
            s |= RDES0_MF;
        }
        if u16::from_be_bytes([wire[12], wire[13]]) > ETH_MAX_LENGTH_FIELD {
            s |= RDES0_FT;
        }
        if wire.len() > ETH_MAX_FRAME_FCS {
            s |= RDES0_TL | RDES0_ES;
        }
        if ff {
            s |= RDES0_FF;
        }
        s
    }

    /// Writes a wire frame into the receive list.
    pub(super) fn rx_store(&mut self, wire: &[u8], dt: u32, ff: bool) -> RxOutcome {
        match self.rx_store_inner(wire, dt, ff) {
            Ok(outcome) => {
                self.update_irq();
                outcome
            }
            Err(e) => {
                self.bus_error(e);
                RxOutcome::Stopped
            }
        }
    }

    fn rx_store_inner(&mut self, wire: &[u8], dt: u32, ff: bool) -> Result<RxOutcome, DmaError> {
        let mut addr = self.rx_current;
        let mut stored = 0usize;
        // The previous descriptor, filled and waiting to be closed: its address and whether it
        // was the frame's first.
        let mut pending: Option<(u32, bool)> = None;
        for _ in 0..DESCRIPTOR_LIMIT {
            let d = self.read_desc(addr)?;
            if !d.owned() {
                let Some((last, first)) = pending else {
                    if self.rx_state != RS_SUSPENDED {
                        self.rx_state = RS_SUSPENDED;
                        self.status |= CSR5_RU;
                    }
                    return Ok(RxOutcome::NoBuffer);
                };
                // Out of descriptors in mid-frame: the frame is truncated.
                let s = Self::rx_last_status(wire, stored, first, dt, ff) | RDES0_DE | RDES0_ES;
                self.write_status(last, s)?;
                self.rx_current = addr;
                self.rx_state = RS_SUSPENDED;
                self.status |= CSR5_RI | CSR5_RU;
                return Ok(RxOutcome::Delivered);
            }
            let first = pending.is_none();
            if let Some((prev, prev_first)) = pending {
                self.write_status(prev, if prev_first { RDES0_FS } else { 0 })?;
            }
            for (buf, size) in d.buffers() {
                let n = size.min(wire.len() - stored);
                if n > 0 {
                    self.mem.write(u64::from(buf), &wire[stored..stored + n])?;
                    stored += n;
                }
            }
            if stored == wire.len() {
                self.write_status(addr, Self::rx_last_status(wire, stored, first, dt, ff))?;
                self.rx_current = self.next_desc(addr, &d, self.csr3);
                self.rx_state = RS_WAITING;
                self.status |= CSR5_RI;
                return Ok(RxOutcome::Delivered);
            }
            pending = Some((addr, first));
            addr = self.next_desc(addr, &d, self.csr3);
        }
        // The walk bound: the descriptors so far hold what fits; the rest is dropped.
        warn_limited!(
            "tulip: a received frame needed more than {DESCRIPTOR_LIMIT} descriptors; truncated"
        );
        if let Some((last, first)) = pending {
            let s = Self::rx_last_status(wire, stored, first, dt, ff) | RDES0_DE | RDES0_ES;
            self.write_status(last, s)?;
        }
        self.rx_current = addr;
        self.status |= CSR5_RI;
        Ok(RxOutcome::Delivered)
    }

    // ---- Transmit ----------------------------------------------------------------------------

    /// Runs the transmit process from its current descriptor until the list is the host's (a
    /// poll demand when `explicit`, otherwise an automatic poll or a resume).
    pub(super) fn tx_poll(&mut self, explicit: bool) {
        if self.tx_state == TS_STOPPED || !self.can_dma() {
            return;
        }
        let mut examined = 0usize;
        let mut sent = false;
        loop {
            if examined >= DESCRIPTOR_LIMIT {
                // Leave the rest for the next poll.
                break;
            }
            match self.tx_step(&mut examined) {
                Ok(TxStep::Done) => sent = true,
                Ok(TxStep::NotOwned) => {
                    if explicit || sent {
                        self.status |= CSR5_TU;
                    }
                    break;
                }
                Err(e) => {
                    self.bus_error(e);
                    self.rearm();
                    return;
                }
            }
        }
        self.tx_state = TS_SUSPENDED;
        self.update_irq();
        self.rearm();
    }

    /// Processes the setup frame or data frame at the current descriptor.
    fn tx_step(&mut self, examined: &mut usize) -> Result<TxStep, DmaError> {
        let first_addr = self.tx_current;
        let first = self.read_desc(first_addr)?;
        *examined += 1;
        if !first.owned() {
            return Ok(TxStep::NotOwned);
        }
        if first.control & TDES1_SET != 0 {
            self.setup_frame(first_addr, &first)?;
            return Ok(TxStep::Done);
        }
        if first.control & TDES1_FS == 0 {
            if first.buffers().iter().any(|&(_, n)| n > 0) {
                warn_limited!(
                    "tulip: transmit descriptor at {first_addr:#x} continues no frame (FS clear); its data is dropped"
                );
            }
            self.write_status(first_addr, 0)?;
            self.tx_current = self.next_desc(first_addr, &first, self.csr4);
            return Ok(TxStep::Done);
        }

        let mut segments = vec![first_addr];
        let mut data = Vec::new();
        let mut oversize = false;
        let (mut addr, mut d) = (first_addr, first);
        loop {
            for (buf, size) in d.buffers() {
                if size == 0 || oversize {
                    continue;
                }
                if data.len() + size > MAX_TX_FRAME {
                    oversize = true;
                    data = Vec::new();
                    continue;
                }
                let at = data.len();
                data.resize(at + size, 0);
                self.mem.read(u64::from(buf), &mut data[at..])?;
            }
            if d.control & TDES1_LS != 0 {
                break;
            }
            if segments.len() >= DESCRIPTOR_LIMIT {
                warn_limited!(
                    "tulip: transmit frame at {first_addr:#x} spans more than {DESCRIPTOR_LIMIT} descriptors without LS; dropped"
                );
                self.write_status(first_addr, TDES0_ES | TDES0_UF)?;
                self.tx_current = self.next_desc(first_addr, &first, self.csr4);
                return Ok(TxStep::Done);
            }
            let next_addr = self.next_desc(addr, &d, self.csr4);
            let next = self.read_desc(next_addr)?;
            *examined += 1;
            if !next.owned() {
                // Not all of the frame is ours yet: leave it for a later poll.
                return Ok(TxStep::NotOwned);
            }
            if next.control & (TDES1_FS | TDES1_SET) != 0 {
                warn_limited!(
                    "tulip: transmit frame at {first_addr:#x} ends without LS before {next_addr:#x}; dropped"
                );
                let (last, rest) = segments.split_last().unwrap_or((&first_addr, &[]));
                for &a in rest {
                    self.write_status(a, 0)?;
                }
                self.write_status(*last, TDES0_ES | TDES0_UF)?;
                self.tx_current = next_addr;
                return Ok(TxStep::Done);
            }
            segments.push(next_addr);
            addr = next_addr;
            d = next;
        }

        let status = if oversize {
            warn_limited!("tulip: transmit frame longer than {MAX_TX_FRAME} bytes dropped");
            TDES0_ES | TDES0_TO
        } else {
            self.transmit(data, first.control)
        };
        let (last, rest) = segments.split_last().unwrap_or((&first_addr, &[]));
        for &a in rest {
            self.write_status(a, 0)?;
        }
        self.write_status(*last, status)?;
        if d.control & TDES1_IC != 0 {
            self.status |= CSR5_TI;
        }
        self.tx_current = self.next_desc(addr, &d, self.csr4);
        Ok(TxStep::Done)
    }

    /// Puts a gathered frame on the wire (or loops it back) and returns its TDES0 status.
    fn transmit(&mut self, mut frame: Vec<u8>, first_control: u32) -> u32 {
        if first_control & TDES1_AC != 0 {
            // The guest appended its own FCS; the backend takes frames without one.
            frame.truncate(frame.len().saturating_sub(ETH_FCS_LEN));
        } else if first_control & TDES1_DPD == 0 && !frame.is_empty() {
            // The chip pads short frames to the minimum length, as they appear on a wire.
            frame.resize(frame.len().max(ETH_MIN_FRAME), 0);
        }
        if frame.is_empty() {
            // Nothing to send.
            return 0;
        }
        let om = self.csr6 >> CSR6_OM_SHIFT & CSR6_OM_MASK;
        if om != 0 {
            let dt = if om == 1 {
                DT_INTERNAL_LOOPBACK
            } else {
                DT_EXTERNAL_LOOPBACK
            };
            self.loop_back(&frame, dt);
            return 0;
        }
        if !self.mii.link_ok() {
            // Nothing on the wire. Carrier errors are not reported in full-duplex mode.
            return if self.csr6 & CSR6_FD != 0 {
                0
            } else {
                TDES0_ES | TDES0_LO | TDES0_NC
            };
        }
        self.sink.send(&frame);
        0
    }

    /// A frame sent in a loopback mode comes back to the receiver.
    fn loop_back(&mut self, frame: &[u8], dt: u32) {
        if self.rx_state == RS_STOPPED {
            return;
        }
        let Some(dest) = frame.get(..ETH_ALEN) else {
            return;
        };
        let dest: [u8; ETH_ALEN] = dest.try_into().unwrap_or([0; ETH_ALEN]);
        let (Some(ff), Some(wire)) = (self.accept(&dest), wire_frame(frame)) else {
            return;
        };
        if matches!(self.rx_store(&wire, dt, ff), RxOutcome::NoBuffer) {
            self.count_missed();
        }
    }

    /// A setup frame: loads the address filter (192 bytes from buffer 1) and closes the
    /// descriptor. A shorter buffer leaves the filter as it was.
    fn setup_frame(&mut self, addr: u32, d: &Desc) -> Result<(), DmaError> {
        let len = (d.control & DES1_BS1_MASK) as usize;
        if len >= SETUP_FRAME_LEN {
            let mut frame = [0u8; SETUP_FRAME_LEN];
            self.mem.read(u64::from(d.buf1), &mut frame)?;
            self.filter.load(FilterMode::from_tdes1(d.control), &frame);
        } else {
            warn_limited!("tulip: {len}-byte setup frame ignored (a setup frame has 192 bytes)");
        }
        self.write_status(addr, TDES0_SETUP_DONE)?;
        if d.control & TDES1_IC != 0 {
            self.status |= CSR5_TI;
        }
        self.tx_current = self.next_desc(addr, d, self.csr4);
        Ok(())
    }
}
