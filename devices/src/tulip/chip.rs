//! The 21140A's CSR block (HRM section 3.2) and everything behind it: interrupt logic, the
//! general-purpose timer and automatic transmit polling, the serial ROM and MII ports of CSR9, the
//! general-purpose port, and saved state. The descriptor engines live in `rings.rs`.
//!
//! Process states: the receive process is stopped, running (waiting for a frame) or suspended
//! (no descriptor); the transmit process is stopped or suspended (it runs to completion inside
//! the access that starts or polls it, so CSR5 never shows a transient running state). Stopping
//! either process through CSR6 takes effect at once, so `tulip_stop_rxtx` sees the stopped state
//! on its first poll. RPS and TPS are never set: the 21140A raises them when a process stops on
//! its own, which kettle's processes never do (a fatal bus error reports FBE instead); Linux
//! would restart the chip on every TPS.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::{warn_limited, BusDevice, Irq, Timer};
use crate::dma::{DmaError, GuestMemory};
use crate::rtc::Clock;

use super::filter::{AddressFilter, FilterState};
use super::mii::{Mii, MiiState};
use super::spec::*;
use super::srom::{Srom, SromState};
use super::{FrameSink, RxNotify, TulipStateError};

/// Saved state of the CSR block and what is behind it (the PCI function adds its configuration
/// space).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TulipCoreState {
    pub csr0: u32,
    pub csr3: u32,
    pub csr4: u32,
    /// CSR5 status bits 16:0 as latched (NIS and AIS are derived on reads).
    pub status: u32,
    /// CSR5 EB (error bits of a fatal bus error).
    pub error_bits: u32,
    /// CSR5 RS and TS.
    pub rx_state: u32,
    pub tx_state: u32,
    /// CSR6 as written (writable bits only; the filtering-mode bits come from `filter`).
    pub csr6: u32,
    pub csr7: u32,
    /// CSR8: missed frames since the last read and the overflow flag.
    pub missed: u16,
    pub missed_overflow: bool,
    /// CSR9 as last written (stored bits).
    pub csr9: u32,
    /// CSR11 as last written (count and continuous mode), the time left of the current period
    /// (0 = not running) and the unit it counts in.
    pub csr11: u32,
    pub gpt_remaining_ns: u64,
    pub gpt_unit_ns: u64,
    /// CSR12 pin directions and output data.
    pub gp_direction: u8,
    pub gp_data: u8,
    pub csr15: u32,
    /// Where the receive and transmit processes will fetch their next descriptor.
    pub rx_current: u32,
    pub tx_current: u32,
    /// A fatal bus error stopped the chip until the next software reset.
    pub fatal: bool,
    pub filter: FilterState,
    pub srom: SromState,
    pub mii: MiiState,
}

/// The CSR block and everything behind it: shared by the vCPU (bus accesses) and the event loop
/// (receive, timer). Register it (through [`super::Tulip`], which maps it where the BARs say) at
/// offsets 0-127, CSR n at 8n, 32-bit accesses.
pub struct TulipCore {
    // Fixed configuration.
    pub(super) mac: [u8; ETH_ALEN],

    // Runtime handles.
    pub(super) irq: Irq,
    pub(super) mem: GuestMemory,
    pub(super) timer: Box<dyn Timer>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) sink: Box<dyn FrameSink>,
    pub(super) rx_notify: Arc<dyn RxNotify>,
    /// The level last driven on `irq`.
    irq_level: bool,
    /// The deadline `timer` is armed for, in `clock` time.
    armed: Option<Duration>,
    /// When the general-purpose timer expires next, and its period.
    gpt_deadline: Option<Duration>,
    gpt_period: Duration,
    gpt_unit_ns: u64,
    /// When the transmit process polls its list next (CSR0 TAP while suspended).
    tap_deadline: Option<Duration>,
    /// The host holds a frame that found no receive descriptor; `rx_ready` is owed once one
    /// appears.
    pub(super) rx_waiting: bool,
    /// PCI command bits the function passes down: bus mastering and INTx disable.
    pub(super) bus_master: bool,
    intx_disabled: bool,

    // Guest-visible state.
    pub(super) csr0: u32,
    pub(super) csr3: u32,
    pub(super) csr4: u32,
    pub(super) status: u32,
    error_bits: u32,
    pub(super) rx_state: u32,
    pub(super) tx_state: u32,
    pub(super) csr6: u32,
    csr7: u32,
    pub(super) missed: u16,
    pub(super) missed_overflow: bool,
    csr9: u32,
    csr11: u32,
    gp_direction: u8,
    gp_data: u8,
    csr15: u32,
    pub(super) rx_current: u32,
    pub(super) tx_current: u32,
    pub(super) fatal: bool,
    pub(super) filter: AddressFilter,
    srom: Srom,
    pub(super) mii: Mii,
}

/// Timer deadlines closer than this are armed at this distance.
const MIN_TIMER: Duration = Duration::from_micros(10);

impl TulipCore {
    /// The chip after power-up: CSRs at their reset values, both processes stopped, link up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        mac: [u8; ETH_ALEN],
        irq: Irq,
        mem: GuestMemory,
        timer: Box<dyn Timer>,
        clock: Arc<dyn Clock>,
        sink: Box<dyn FrameSink>,
        rx_notify: Arc<dyn RxNotify>,
        srom: [u16; SROM_WORDS],
    ) -> Self {
        let mut c = Self {
            mac,
            irq,
            mem,
            timer,
            clock,
            sink,
            rx_notify,
            irq_level: false,
            armed: None,
            gpt_deadline: None,
            gpt_period: Duration::ZERO,
            gpt_unit_ns: GPT_UNIT_10MBPS_NS,
            tap_deadline: None,
            rx_waiting: false,
            bus_master: false,
            intx_disabled: false,
            csr0: 0,
            csr3: 0,
            csr4: 0,
            status: 0,
            error_bits: 0,
            rx_state: RS_STOPPED,
            tx_state: TS_STOPPED,
            csr6: 0,
            csr7: 0,
            missed: 0,
            missed_overflow: false,
            csr9: 0,
            csr11: 0,
            gp_direction: 0,
            gp_data: 0,
            csr15: 0,
            rx_current: 0,
            tx_current: 0,
            fatal: false,
            filter: AddressFilter::new(),
            srom: Srom::new(srom),
            mii: Mii::new(true),
        };
        c.software_reset();
        c
    }

    /// The MAC address the card was built with (the one in its serial ROM).
    pub fn mac(&self) -> [u8; ETH_ALEN] {
        self.mac
    }

    /// The host side's link changed; the PHY reports it (BMSR, ANLPAR) the next time the guest
    /// looks. While the link is down nothing is received and transmitted frames are dropped.
    pub fn set_link(&mut self, up: bool) {
        self.mii.set_link(up);
        if up && self.rx_state != RS_STOPPED {
            self.rx_notify.rx_ready();
        }
    }

    /// The host side's link as last set.
    pub fn link_up(&self) -> bool {
        self.mii.link()
    }

    /// The [`Timer`] given to the constructor fired: the general-purpose timer counts, the
    /// transmit process polls its list when CSR0 TAP says so.
    pub fn timer_expired(&mut self) {
        let now = self.clock.now();
        if let Some(deadline) = self.gpt_deadline {
            if now >= deadline {
                self.status |= CSR5_GTE;
                self.gpt_deadline = if self.csr11 & CSR11_CON != 0 {
                    let next = deadline + self.gpt_period;
                    Some(if next > now {
                        next
                    } else {
                        now + self.gpt_period
                    })
                } else {
                    None
                };
            }
        }
        if let Some(deadline) = self.tap_deadline {
            if now >= deadline {
                self.tap_deadline = None;
                self.tx_poll(false);
            }
        }
        self.update_irq();
        // The one-shot timer has fired: arm it again whatever it was armed for.
        self.arm_timer(true);
    }

    // ---- PCI-side gates ----------------------------------------------------------------------

    /// PCI command bus-master enable: without it the chip makes no DMA cycles (poll demands and
    /// received frames wait or are dropped). Enabling it resumes the processes.
    pub(super) fn set_bus_master(&mut self, on: bool) {
        let was = self.bus_master;
        self.bus_master = on;
        if on && !was {
            if self.tx_state != TS_STOPPED {
                self.tx_poll(false);
            }
            if self.rx_state != RS_STOPPED {
                self.rx_notify.rx_ready();
            }
            self.update_irq();
            self.rearm();
        }
    }

    /// PCI command interrupt disable.
    pub(super) fn set_intx_disabled(&mut self, disabled: bool) {
        self.intx_disabled = disabled;
        self.update_irq();
    }

    /// Whether the chip asks for an interrupt (PCI status bit 3), whatever INTx disable says.
    pub(super) fn interrupt_pending(&self) -> bool {
        let pending = self.status & self.csr7;
        (pending & CSR5_NORMAL != 0 && self.csr7 & CSR7_NIE != 0)
            || (pending & CSR5_ABNORMAL != 0 && self.csr7 & CSR7_AIE != 0)
    }

    pub(super) fn update_irq(&mut self) {
        let level = self.interrupt_pending() && !self.intx_disabled;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    /// DMA is possible: bus mastering on and no fatal bus error.
    pub(super) fn can_dma(&self) -> bool {
        self.bus_master && !self.fatal
    }

    /// A DMA cycle failed: fatal bus error (master abort), both processes stop until a software
    /// reset.
    pub(super) fn bus_error(&mut self, e: DmaError) {
        warn_limited!("tulip: {e}; fatal bus error, the chip stops until a software reset");
        self.fatal = true;
        self.status |= CSR5_FBE;
        self.error_bits = CSR5_EB_MASTER_ABORT;
        self.rx_state = RS_STOPPED;
        self.tx_state = TS_STOPPED;
        self.tap_deadline = None;
        self.update_irq();
    }

    // ---- Registers ---------------------------------------------------------------------------

    /// SWR: every CSR to its reset value, both processes stopped, the address filter empty. The
    /// serial ROM and the PHY are separate chips and keep their state.
    fn software_reset(&mut self) {
        self.csr0 = CSR0_RESET;
        self.csr3 = 0;
        self.csr4 = 0;
        self.rx_current = 0;
        self.tx_current = 0;
        self.status = 0;
        self.error_bits = 0;
        self.rx_state = RS_STOPPED;
        self.tx_state = TS_STOPPED;
        self.csr6 = CSR6_RESET & CSR6_WRITABLE;
        self.csr7 = 0;
        self.missed = 0;
        self.missed_overflow = false;
        self.write_csr9(0);
        self.csr11 = 0;
        self.gpt_deadline = None;
        self.gp_direction = 0;
        self.gp_data = 0;
        self.csr15 = 0;
        self.fatal = false;
        self.filter = AddressFilter::new();
        self.tap_deadline = None;
        self.update_irq();
        self.rearm();
    }

    /// CSR5 as the guest reads it.
    fn csr5(&self) -> u32 {
        let pending = self.status & self.csr7;
        let mut v = self.status & CSR5_W1C & !(CSR5_NIS | CSR5_AIS);
        if pending & CSR5_NORMAL != 0 {
            v |= CSR5_NIS;
        }
        if pending & CSR5_ABNORMAL != 0 {
            v |= CSR5_AIS;
        }
        v | (self.rx_state << CSR5_RS_SHIFT)
            | (self.tx_state << CSR5_TS_SHIFT)
            | (self.error_bits << CSR5_EB_SHIFT)
    }

    fn csr6_value(&self) -> u32 {
        (self.csr6 & CSR6_WRITABLE) | CSR6_FIXED | self.filter.mode().csr6_bits()
    }

    fn csr9_value(&self) -> u32 {
        let mut v = self.csr9;
        if v & CSR9_SR != 0 && self.srom.data_out() {
            v |= CSR9_SDO;
        }
        if v & CSR9_BR != 0 && v & CSR9_RD != 0 {
            // No boot ROM: an erased part reads all ones.
            v |= CSR9_DATA_MASK;
        }
        if self.mdio_line() {
            v |= CSR9_MDI;
        }
        v
    }

    /// The MDIO line: the station's MDO while it drives, else the PHY's output or the pull-up.
    fn mdio_line(&self) -> bool {
        if self.csr9 & CSR9_MII_READ != 0 {
            self.mii.mdio_out().unwrap_or(true)
        } else {
            self.csr9 & CSR9_MDO != 0
        }
    }

    fn gpt_unit(&self) -> u64 {
        if self.csr6 & CSR6_PS != 0 && self.csr6 & CSR6_TTM == 0 {
            GPT_UNIT_100MBPS_NS
        } else {
            GPT_UNIT_10MBPS_NS
        }
    }

    fn gpt_remaining(&self) -> Duration {
        self.gpt_deadline
            .map_or(Duration::ZERO, |d| d.saturating_sub(self.clock.now()))
    }

    fn csr11_value(&self) -> u32 {
        let left = self.gpt_remaining().as_nanos() as u64;
        let count = left
            .div_ceil(self.gpt_unit_ns)
            .min(u64::from(self.csr11 & CSR11_VALUE_MASK));
        count as u32 | (self.csr11 & CSR11_CON)
    }

    /// The value of CSR `n` without side effects.
    fn peek(&self, n: usize) -> u32 {
        match n {
            CSR0 => self.csr0,
            // Poll demands are write-only.
            CSR1 | CSR2 => 0xffff_ffff,
            CSR3 => self.csr3,
            CSR4 => self.csr4,
            CSR5 => self.csr5(),
            CSR6 => self.csr6_value(),
            CSR7 => self.csr7,
            CSR8 => u32::from(self.missed) | if self.missed_overflow { CSR8_MFO } else { 0 },
            CSR9 => self.csr9_value(),
            CSR11 => self.csr11_value(),
            // Input pins read low: nothing is wired to them.
            CSR12 => u32::from(self.gp_data & self.gp_direction),
            CSR15 => self.csr15,
            // CSR10, CSR13 and CSR14 are reserved on the 21140A.
            _ => 0,
        }
    }

    fn read_csr(&mut self, n: usize) -> u32 {
        let v = self.peek(n);
        match n {
            CSR8 => {
                self.missed = 0;
                self.missed_overflow = false;
                self.check_rx_waiting();
            }
            CSR5 => self.check_rx_waiting(),
            _ => {}
        }
        v
    }

    fn write_csr(&mut self, n: usize, v: u32) {
        match n {
            CSR0 => {
                if v & CSR0_SWR != 0 {
                    self.software_reset();
                } else {
                    if v & (CSR0_BLE | CSR0_DBO) != 0 {
                        warn_limited!(
                            "tulip: big-endian buffers/descriptors (CSR0 {v:#010x}) are not emulated; using little-endian"
                        );
                    }
                    self.csr0 = (self.csr0 & !CSR0_WRITABLE) | (v & CSR0_WRITABLE);
                    self.tap_deadline = None;
                    self.rearm();
                }
            }
            CSR1 => self.tx_poll(true),
            CSR2 => self.rx_poll_demand(),
            CSR3 => {
                self.csr3 = v & !3;
                self.rx_current = self.csr3;
            }
            CSR4 => {
                self.csr4 = v & !3;
                self.tx_current = self.csr4;
            }
            CSR5 => {
                self.status &= !(v & CSR5_W1C);
                self.update_irq();
            }
            CSR6 => self.write_csr6(v),
            CSR7 => {
                self.csr7 = v & CSR7_MASK;
                self.update_irq();
            }
            CSR9 => self.write_csr9(v),
            CSR11 => self.write_csr11(v),
            CSR12 => {
                if v & CSR12_GPC != 0 {
                    self.gp_direction = (v & CSR12_DATA_MASK) as u8;
                } else {
                    self.gp_data = (v & CSR12_DATA_MASK) as u8;
                }
            }
            CSR15 => self.csr15 = v & CSR15_MASK,
            _ => warn_limited!("tulip: write of {v:#010x} to read-only or reserved CSR{n} ignored"),
        }
        self.check_rx_waiting();
    }

    fn write_csr6(&mut self, v: u32) {
        let old = self.csr6;
        let new = v & CSR6_WRITABLE;
        self.csr6 = new;
        let started = |bit: u32| new & bit != 0 && old & bit == 0;
        let stopped = |bit: u32| new & bit == 0 && old & bit != 0;
        if started(CSR6_SR) {
            self.rx_start();
        } else if stopped(CSR6_SR) {
            self.rx_state = RS_STOPPED;
        }
        if started(CSR6_ST) {
            if !self.fatal {
                self.tx_state = TS_SUSPENDED;
                self.tx_poll(true);
            }
        } else if stopped(CSR6_ST) {
            self.tx_state = TS_STOPPED;
        }
        self.update_irq();
        self.rearm();
    }

    fn write_csr9(&mut self, v: u32) {
        // What the PHY sees on MDIO at this clock edge: the station's output, or (reading) the
        // PHY's own output or the pull-up. Sampled before the edge changes it.
        let line = if v & CSR9_MII_READ != 0 {
            self.mii.mdio_out().unwrap_or(true)
        } else {
            v & CSR9_MDO != 0
        };
        self.csr9 = v & CSR9_STORED;
        let selected = v & CSR9_SR != 0;
        self.srom.drive(
            selected && v & CSR9_SCS != 0,
            v & CSR9_SCLK != 0,
            v & CSR9_SDI != 0,
        );
        self.mii.drive(v & CSR9_MDC != 0, line);
    }

    fn write_csr11(&mut self, v: u32) {
        self.csr11 = v & (CSR11_VALUE_MASK | CSR11_CON);
        let count = u64::from(v & CSR11_VALUE_MASK);
        if count == 0 {
            self.gpt_deadline = None;
        } else {
            self.gpt_unit_ns = self.gpt_unit();
            self.gpt_period = Duration::from_nanos(count * self.gpt_unit_ns);
            self.gpt_deadline = Some(self.clock.now() + self.gpt_period);
        }
        self.rearm();
    }

    /// Arms the timer for the earlier of the general-purpose timer and the next automatic
    /// transmit poll (TAP, only while the transmit process is suspended).
    pub(super) fn rearm(&mut self) {
        self.arm_timer(false);
    }

    /// Computes the next deadline and arms the timer for it when it changed (or `always`).
    fn arm_timer(&mut self, always: bool) {
        let now = self.clock.now();
        let tap = (CSR0_TAP_MASK & self.csr0 >> CSR0_TAP_SHIFT) as usize;
        if self.tx_state == TS_SUSPENDED && tap != 0 && self.can_dma() {
            if self.tap_deadline.is_none() {
                let ns = TAP_INTERVALS_NS[tap].max(TAP_MIN_INTERVAL_NS);
                self.tap_deadline = Some(now + Duration::from_nanos(ns));
            }
        } else {
            self.tap_deadline = None;
        }
        let next = match (self.gpt_deadline, self.tap_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if always || next != self.armed {
            self.armed = next;
            self.timer
                .arm(next.map(|t| t.saturating_sub(now).max(MIN_TIMER)));
        }
    }

    /// Counts a frame lost for lack of a receive descriptor (CSR8).
    pub(super) fn count_missed(&mut self) {
        if self.missed == u16::MAX {
            self.missed_overflow = true;
        } else {
            self.missed += 1;
        }
    }

    // ---- Saved state -------------------------------------------------------------------------

    pub(super) fn state(&self) -> TulipCoreState {
        TulipCoreState {
            csr0: self.csr0,
            csr3: self.csr3,
            csr4: self.csr4,
            status: self.status,
            error_bits: self.error_bits,
            rx_state: self.rx_state,
            tx_state: self.tx_state,
            csr6: self.csr6,
            csr7: self.csr7,
            missed: self.missed,
            missed_overflow: self.missed_overflow,
            csr9: self.csr9,
            csr11: self.csr11,
            // A period that ended but whose expiry the timer has not delivered yet still fires
            // after a restore.
            gpt_remaining_ns: self
                .gpt_deadline
                .map_or(0, |_| (self.gpt_remaining().as_nanos() as u64).max(1)),
            gpt_unit_ns: self.gpt_unit_ns,
            gp_direction: self.gp_direction,
            gp_data: self.gp_data,
            csr15: self.csr15,
            rx_current: self.rx_current,
            tx_current: self.tx_current,
            fatal: self.fatal,
            filter: self.filter.state(),
            srom: self.srom.state(),
            mii: self.mii.state(),
        }
    }

    /// Checks a saved state without applying it.
    pub(super) fn check_state(s: &TulipCoreState) -> Result<(), TulipStateError> {
        let bad = |what| Err(TulipStateError::OutOfRange(what));
        if ![RS_STOPPED, RS_WAITING, RS_SUSPENDED].contains(&s.rx_state) {
            return bad("receive process state");
        }
        if ![TS_STOPPED, TS_SUSPENDED].contains(&s.tx_state) {
            return bad("transmit process state");
        }
        if s.error_bits > CSR5_STATE_MASK {
            return bad("CSR5 error bits");
        }
        if s.gpt_remaining_ns != 0
            && ![GPT_UNIT_10MBPS_NS, GPT_UNIT_100MBPS_NS].contains(&s.gpt_unit_ns)
        {
            return bad("general-purpose timer unit");
        }
        if s.gpt_remaining_ns > u64::from(CSR11_VALUE_MASK) * GPT_UNIT_10MBPS_NS {
            return bad("general-purpose timer count");
        }
        AddressFilter::from_state(&s.filter).ok_or(TulipStateError::OutOfRange("filter mode"))?;
        Srom::from_state(&s.srom).map_err(TulipStateError::OutOfRange)?;
        Mii::from_state(&s.mii).map_err(TulipStateError::OutOfRange)?;
        Ok(())
    }

    /// Applies a state [`TulipCore::check_state`] accepted. The interrupt line is driven to
    /// what the state says and the timer re-armed.
    pub(super) fn restore(&mut self, s: &TulipCoreState) -> Result<(), TulipStateError> {
        Self::check_state(s)?;
        let filter = AddressFilter::from_state(&s.filter)
            .ok_or(TulipStateError::OutOfRange("filter mode"))?;
        self.srom = Srom::from_state(&s.srom).map_err(TulipStateError::OutOfRange)?;
        self.mii = Mii::from_state(&s.mii).map_err(TulipStateError::OutOfRange)?;
        self.filter = filter;
        self.csr0 = (CSR0_RESET & !CSR0_WRITABLE) | (s.csr0 & CSR0_WRITABLE);
        self.csr3 = s.csr3 & !3;
        self.csr4 = s.csr4 & !3;
        self.status = s.status & CSR5_W1C & !(CSR5_NIS | CSR5_AIS);
        self.error_bits = s.error_bits;
        self.rx_state = s.rx_state;
        self.tx_state = s.tx_state;
        self.csr6 = s.csr6 & CSR6_WRITABLE;
        self.csr7 = s.csr7 & CSR7_MASK;
        self.missed = s.missed;
        self.missed_overflow = s.missed_overflow;
        self.csr9 = s.csr9 & CSR9_STORED;
        self.csr11 = s.csr11 & (CSR11_VALUE_MASK | CSR11_CON);
        self.gp_direction = s.gp_direction;
        self.gp_data = s.gp_data;
        self.csr15 = s.csr15 & CSR15_MASK;
        self.rx_current = s.rx_current & !3;
        self.tx_current = s.tx_current & !3;
        self.fatal = s.fatal;
        self.rx_waiting = false;
        let now = self.clock.now();
        if [GPT_UNIT_10MBPS_NS, GPT_UNIT_100MBPS_NS].contains(&s.gpt_unit_ns) {
            // Kept while the timer is stopped too, so that the state reads back as saved.
            self.gpt_unit_ns = s.gpt_unit_ns;
        }
        if s.gpt_remaining_ns == 0 {
            self.gpt_deadline = None;
        } else {
            self.gpt_period = Duration::from_nanos(
                u64::from(self.csr11 & CSR11_VALUE_MASK).max(1) * self.gpt_unit_ns,
            );
            self.gpt_deadline = Some(now + Duration::from_nanos(s.gpt_remaining_ns));
        }
        self.tap_deadline = None;
        self.armed = None;
        self.timer.arm(None);
        self.irq_level = self.interrupt_pending() && !self.intx_disabled;
        self.irq.set_level(self.irq_level);
        self.rearm();
        Ok(())
    }

    /// Sets the PCI gates without the side effects of a guest change (restore).
    pub(super) fn restore_gates(&mut self, bus_master: bool, intx_disabled: bool) {
        self.bus_master = bus_master;
        self.intx_disabled = intx_disabled;
    }
}

impl BusDevice for TulipCore {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() == 4 && offset & (CSR_STRIDE - 1) == 0 && offset < CSR_SPACE {
            let v = self.read_csr((offset / CSR_STRIDE) as usize);
            data.copy_from_slice(&v.to_le_bytes());
            return;
        }
        // Anything else reads the bytes of the CSR it overlaps, without side effects; the pad
        // between CSRs and the space past CSR15 read as zero.
        warn_limited!(
            "tulip: {}-byte read at CSR offset {offset:#x} (the chip decodes 32-bit accesses at multiples of 8)",
            data.len()
        );
        for (i, b) in data.iter_mut().enumerate() {
            let a = offset.saturating_add(i as u64);
            *b = if a < CSR_SPACE && a & (CSR_STRIDE - 1) < 4 {
                self.peek((a / CSR_STRIDE) as usize).to_le_bytes()[(a & (CSR_STRIDE - 1)) as usize]
            } else {
                0
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() == 4 && offset & (CSR_STRIDE - 1) == 0 && offset < CSR_SPACE {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.write_csr((offset / CSR_STRIDE) as usize, v);
            return;
        }
        warn_limited!(
            "tulip: {}-byte write of {data:02x?} at CSR offset {offset:#x} ignored (32-bit accesses at multiples of 8 only)",
            data.len()
        );
    }
}
