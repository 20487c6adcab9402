//! Register-level tests of the 21140A: the card on an I/O and an MMIO bus as the VMM places it,
//! a fake interrupt line, timer and clock, a flat fake RAM, a recording frame sink. The SROM and
//! MII helpers bit-bang CSR9 exactly as Linux's `tulip_read_eeprom` and `tulip_mdio_read` /
//! `tulip_mdio_write` do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::crc::{crc32, crc32_le_raw};
use super::spec::*;
use super::*;
use crate::bus::testing::{FakeIrq, FakeTimer};
use crate::bus::{Bus, BusDevice, SharedDevice};
use crate::dma::testing::FakeRam;
use crate::pci::spec as pci;
use crate::rtc::Clock;
use crate::testing::cbor_round_trip;

// ---- Fakes and the harness -------------------------------------------------------------------------

#[derive(Default)]
struct FakeClock(Mutex<Duration>);

impl FakeClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl FrameSink for Recorder {
    fn send(&mut self, frame: &[u8]) {
        self.0.lock().unwrap().push(frame.to_vec());
    }
}

#[derive(Default)]
struct CountReady(AtomicUsize);

impl RxNotify for CountReady {
    fn rx_ready(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

const MAC: [u8; 6] = [0x00, 0x03, 0xff, 0x12, 0x34, 0x56];
const IO: u16 = 0xc000;
const MMIO: u32 = 0xfebf_0000;
const RAM_SIZE: usize = 1 << 20;
const RX_RING: u32 = 0x1000;
const TX_RING: u32 = 0x4000;
const BUFFERS: u32 = 0x10000;

struct Harness {
    tulip: Tulip,
    core: Arc<Mutex<TulipCore>>,
    io: Arc<Bus>,
    mmio: Arc<Bus>,
    irq: Arc<FakeIrq>,
    ram: Arc<FakeRam>,
    timer: FakeTimer,
    clock: Arc<FakeClock>,
    sent: Recorder,
    ready: Arc<CountReady>,
}

fn harness() -> Harness {
    let io = Arc::new(Bus::new());
    let mmio = Arc::new(Bus::new());
    let irq = Arc::new(FakeIrq::default());
    let ram = FakeRam::new(RAM_SIZE);
    let timer = FakeTimer::default();
    let clock = Arc::new(FakeClock::default());
    let sent = Recorder::default();
    let ready = Arc::new(CountReady::default());
    let tulip = Tulip::with_clock(
        io.clone(),
        mmio.clone(),
        irq.clone(),
        ram.clone(),
        Box::new(timer.clone()),
        Box::new(sent.clone()),
        ready.clone(),
        TulipConfig {
            mac: MAC,
            io_base: IO,
            mmio_base: MMIO,
            interrupt_line: 11,
        },
        clock.clone(),
    )
    .unwrap();
    let core = tulip.core();
    Harness {
        tulip,
        core,
        io,
        mmio,
        irq,
        ram,
        timer,
        clock,
        sent,
        ready,
    }
}

impl Harness {
    fn csr(&self, n: usize) -> u32 {
        let mut d = [0u8; 4];
        assert!(self.io.read(u64::from(IO) + 8 * n as u64, &mut d));
        u32::from_le_bytes(d)
    }

    fn set_csr(&self, n: usize, v: u32) {
        assert!(self
            .io
            .write(u64::from(IO) + 8 * n as u64, &v.to_le_bytes()));
    }

    fn cfg(&mut self, offset: u16) -> u32 {
        self.tulip.config_read(offset)
    }

    fn set_cfg(&mut self, offset: u16, v: u32) {
        self.tulip.config_write(offset, &v.to_le_bytes());
    }

    fn poke(&self, addr: u32, bytes: &[u8]) {
        let mut r = self.ram.0.lock().unwrap();
        r[addr as usize..addr as usize + bytes.len()].copy_from_slice(bytes);
    }

    fn peek(&self, addr: u32, len: usize) -> Vec<u8> {
        self.ram.0.lock().unwrap()[addr as usize..addr as usize + len].to_vec()
    }

    fn word(&self, addr: u32) -> u32 {
        u32::from_le_bytes(self.peek(addr, 4).try_into().unwrap())
    }

    fn desc(&self, addr: u32, status: u32, control: u32, buf1: u32, buf2: u32) {
        let mut b = Vec::new();
        for w in [status, control, buf1, buf2] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        self.poke(addr, &b);
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.sent.0.lock().unwrap())
    }

    fn ready_count(&self) -> usize {
        self.ready.0.load(Ordering::SeqCst)
    }

    fn receive(&self, frame: &[u8]) -> RxOutcome {
        self.core.lock().unwrap().receive(frame)
    }

    fn rs(&self) -> u32 {
        self.csr(CSR5) >> CSR5_RS_SHIFT & 7
    }

    fn ts(&self) -> u32 {
        self.csr(CSR5) >> CSR5_TS_SHIFT & 7
    }

    /// Brings the chip up the way Linux's tulip_up does, with the given lists, and clears CSR5.
    fn up(&self, rx_base: u32, tx_base: u32, csr6: u32) {
        self.set_csr(CSR0, CSR0_SWR);
        self.set_csr(CSR0, 0x01a0_8000);
        self.set_csr(CSR3, rx_base);
        self.set_csr(CSR4, tx_base);
        self.set_csr(CSR6, csr6 | CSR6_SR | CSR6_ST);
        self.set_csr(CSR5, CSR5_W1C);
    }

    /// Loads a perfect-filter setup frame holding `addrs` (the rest filled with broadcast, our
    /// MAC in the last entry, as Linux's build_setup_frame_perfect does) through the TX list at
    /// `at`, which must be the current TX descriptor.
    fn setup_perfect(&self, at: u32, addrs: &[[u8; 6]]) {
        let mut f = [0xffu8; SETUP_FRAME_LEN];
        for (k, a) in addrs.iter().chain(std::iter::once(&MAC)).enumerate() {
            let k = if k == addrs.len() { 15 } else { k };
            put_address(&mut f, 12 * k, a);
        }
        self.send_setup(at, &f, 0);
    }

    fn send_setup(&self, at: u32, frame: &[u8], ft: u32) {
        let buf = BUFFERS + 0x8000;
        self.poke(buf, frame);
        self.desc(at, DES0_OWN, TDES1_SET | ft | frame.len() as u32, buf, 0);
        self.set_csr(CSR1, 0);
        assert_eq!(self.word(at), TDES0_SETUP_DONE);
    }
}

/// Puts an address into a setup frame the way Linux does: each 16-bit piece twice, in both
/// halves of its longword.
fn put_address(f: &mut [u8], at: usize, a: &[u8; 6]) {
    for k in 0..3 {
        let piece = [a[2 * k], a[2 * k + 1]];
        f[at + 4 * k..at + 4 * k + 2].copy_from_slice(&piece);
        f[at + 4 * k + 2..at + 4 * k + 4].copy_from_slice(&piece);
    }
}

/// A frame to `dest` from a fixed source, with an IPv4 ethertype and `len` bytes in all.
fn frame(dest: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = dest.to_vec();
    f.extend_from_slice(&[0x52, 0x54, 0, 0x11, 0x22, 0x33, 0x08, 0x00]);
    f.extend((0..len.saturating_sub(14)).map(|i| i as u8));
    f.truncate(len);
    f
}

const BROADCAST: [u8; 6] = [0xff; 6];
const OTHER: [u8; 6] = [0x00, 0x03, 0xff, 0x99, 0x99, 0x99];
const MCAST: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const MCAST2: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];

/// Fills an RX ring of `n` descriptors at `base` (ring mode, RER on the last, 1536-byte buffers).
fn rx_ring(h: &Harness, base: u32, n: u32, stride: u32) {
    for i in 0..n {
        let end = if i == n - 1 { DES1_ER } else { 0 };
        h.desc(
            base + i * stride,
            DES0_OWN,
            end | 1536,
            BUFFERS + i * 2048,
            0,
        );
    }
}

// ---- CSR semantics -----------------------------------------------------------------------------------

#[test]
fn reset_values() {
    let h = harness();
    assert_eq!(h.csr(CSR0), 0xfe00_0000);
    assert_eq!(h.csr(CSR1), 0xffff_ffff);
    assert_eq!(h.csr(CSR2), 0xffff_ffff);
    assert_eq!(h.csr(CSR3), 0);
    assert_eq!(h.csr(CSR4), 0);
    assert_eq!(h.csr(CSR5), 0);
    assert_eq!(h.csr(CSR6), 0x3200_0040);
    assert_eq!(h.csr(CSR7), 0);
    assert_eq!(h.csr(CSR8), 0);
    assert_eq!(h.csr(CSR11), 0);
    assert_eq!(h.csr(CSR12), 0);
    for n in [CSR10, CSR13, CSR14, CSR15] {
        assert_eq!(h.csr(n), 0, "CSR{n}");
    }
    assert!(!h.irq.is_high());
    // The same block answers in memory space.
    let mut d = [0u8; 4];
    assert!(h.mmio.read(u64::from(MMIO) + 0x30, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x3200_0040);
    // Past CSR15 the memory BAR reads zero.
    assert!(h.mmio.read(u64::from(MMIO) + 0x200, &mut d));
    assert_eq!(d, [0; 4]);
}

#[test]
fn software_reset_restores_the_defaults() {
    let h = harness();
    h.set_csr(CSR0, 0x01a0_8000 | 2 << CSR0_DSL_SHIFT);
    h.set_csr(CSR3, 0x1003); // low bits are ignored
    h.set_csr(CSR4, 0x2000);
    h.set_csr(CSR7, 0x0001_ebef);
    h.set_csr(CSR11, 100);
    h.set_csr(CSR15, 0x3f);
    h.set_csr(CSR12, CSR12_GPC | 0x0f);
    h.set_csr(CSR12, 0x05);
    assert_eq!(h.csr(CSR0), 0xfe00_0000 | 0x01a0_8000 | 2 << CSR0_DSL_SHIFT);
    assert_eq!(h.csr(CSR3), 0x1000);
    assert_eq!(h.csr(CSR12), 0x05);
    assert_eq!(h.csr(CSR15), 0x37);
    assert!(h.timer.armed.lock().unwrap().is_some());
    h.set_csr(CSR0, CSR0_SWR | 0x0000_8000);
    assert_eq!(
        h.csr(CSR0),
        0xfe00_0000,
        "SWR clears itself and the other bits"
    );
    assert_eq!(h.csr(CSR3), 0);
    assert_eq!(h.csr(CSR4), 0);
    assert_eq!(h.csr(CSR6), 0x3200_0040);
    assert_eq!(h.csr(CSR7), 0);
    assert_eq!(h.csr(CSR11), 0);
    assert_eq!(h.csr(CSR12), 0);
    assert_eq!(h.csr(CSR15), 0);
    assert_eq!(*h.timer.armed.lock().unwrap(), None);
}

#[test]
fn status_is_write_one_to_clear_with_summaries() {
    let h = harness();
    {
        let mut c = h.core.lock().unwrap();
        c.status |= CSR5_TI | CSR5_RU;
        c.update_irq();
    }
    // No enables: the bits show, the summaries do not.
    assert_eq!(h.csr(CSR5), CSR5_TI | CSR5_RU);
    h.set_csr(CSR7, CSR5_TI);
    assert_eq!(h.csr(CSR5), CSR5_TI | CSR5_RU | CSR5_NIS);
    assert!(!h.irq.is_high(), "NIE is off");
    h.set_csr(CSR7, CSR5_TI | CSR5_RU | CSR7_NIE | CSR7_AIE);
    assert_eq!(h.csr(CSR5), CSR5_TI | CSR5_RU | CSR5_NIS | CSR5_AIS);
    assert!(h.irq.is_high());
    // Writing zeros, or the summary bits, clears nothing.
    h.set_csr(CSR5, 0);
    h.set_csr(CSR5, CSR5_NIS | CSR5_AIS);
    assert_eq!(h.csr(CSR5) & 0x7fff, CSR5_TI | CSR5_RU);
    h.set_csr(CSR5, CSR5_TI);
    assert_eq!(h.csr(CSR5), CSR5_RU | CSR5_AIS);
    assert!(h.irq.is_high());
    h.set_csr(CSR5, CSR5_RU);
    assert_eq!(h.csr(CSR5), 0);
    assert!(!h.irq.is_high());
    // The general-purpose timer counts as abnormal on the 21140A.
    {
        let mut c = h.core.lock().unwrap();
        c.status |= CSR5_GTE;
        c.update_irq();
    }
    h.set_csr(CSR7, CSR5_GTE | CSR7_AIE);
    assert_eq!(h.csr(CSR5), CSR5_GTE | CSR5_AIS);
    assert!(h.irq.is_high());
}

#[test]
fn start_and_stop_show_in_csr5_at_once() {
    let h = harness();
    rx_ring(&h, RX_RING, 4, 16);
    h.desc(TX_RING, 0, DES1_ER, 0, 0);
    h.set_csr(CSR3, RX_RING);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR6, 0x020e_0000 | CSR6_SR | CSR6_ST);
    assert_eq!(h.rs(), RS_WAITING);
    assert_eq!(h.ts(), TS_SUSPENDED);
    assert_eq!(h.csr(CSR6) & (CSR6_SR | CSR6_ST), CSR6_SR | CSR6_ST);
    // tulip_stop_rxtx: read CSR6, clear SR and ST, poll CSR5 for both stopped.
    let csr6 = h.csr(CSR6);
    h.set_csr(CSR6, csr6 & !(CSR6_SR | CSR6_ST));
    assert_eq!(h.csr(CSR5) & 0x007e_0000, 0);
    // Stopping by command raises neither RPS nor TPS (Linux restarts the chip on TPS).
    assert_eq!(h.csr(CSR5) & (CSR5_TPS | CSR5_RPS), 0);
    // The receiver reports a suspension when started without descriptors.
    h.desc(RX_RING, 0, 1536, BUFFERS, 0);
    h.set_csr(CSR3, RX_RING);
    h.set_csr(CSR6, CSR6_SR);
    assert_eq!(h.rs(), RS_SUSPENDED);
    assert_ne!(h.csr(CSR5) & CSR5_RU, 0);
}

#[test]
fn interrupt_line_follows_csr7_and_pci_interrupt_disable() {
    let mut h = harness();
    h.desc(TX_RING, 0, DES1_ER, 0, 0);
    h.up(RX_RING, TX_RING, 0);
    // A poll demand on an empty list: TU, but CSR7 masks it.
    h.set_csr(CSR1, 0);
    assert_ne!(h.csr(CSR5) & CSR5_TU, 0);
    assert!(!h.irq.is_high());
    assert_eq!(h.cfg(0x04) >> 16 & u32::from(pci::STATUS_INTERRUPT), 0);
    h.set_csr(CSR7, 0x0001_ebef);
    assert!(h.irq.is_high());
    assert_eq!(h.irq.edges(), 1);
    assert_ne!(h.cfg(0x04) >> 16 & u32::from(pci::STATUS_INTERRUPT), 0);
    // Interrupt disable (command bit 10) drops the line, the status bit stays.
    let cmd = h.cfg(0x04) & 0xffff;
    h.set_cfg(0x04, cmd | u32::from(pci::COMMAND_INTERRUPT_DISABLE));
    assert!(!h.irq.is_high());
    assert_ne!(h.cfg(0x04) >> 16 & u32::from(pci::STATUS_INTERRUPT), 0);
    h.set_cfg(0x04, cmd);
    assert!(h.irq.is_high());
    // Acknowledging lowers it.
    h.set_csr(CSR5, h.csr(CSR5) & 0x0001_ffff);
    assert!(!h.irq.is_high());
    assert_eq!(h.cfg(0x04) >> 16 & u32::from(pci::STATUS_INTERRUPT), 0);
}

#[test]
fn missed_frame_counter_clears_on_read_and_overflows() {
    let h = harness();
    // Internal loopback with no receive descriptors: the looped frame is missed.
    h.desc(RX_RING, 0, DES1_ER | 1536, BUFFERS, 0);
    h.poke(BUFFERS + 0x4000, &frame(MAC, 60));
    h.desc(
        TX_RING,
        DES0_OWN,
        DES1_ER | TDES1_FS | TDES1_LS | 60,
        BUFFERS + 0x4000,
        0,
    );
    h.up(RX_RING, TX_RING, CSR6_PR | 1 << CSR6_OM_SHIFT);
    assert!(h.sent().is_empty(), "loopback frames stay in the card");
    assert_eq!(h.csr(CSR8), 1);
    assert_eq!(h.csr(CSR8), 0);
    {
        let mut c = h.core.lock().unwrap();
        c.missed = 0xffff;
        c.count_missed();
    }
    assert_eq!(h.csr(CSR8), 0xffff | CSR8_MFO);
    assert_eq!(h.csr(CSR8), 0);
}

#[test]
fn internal_loopback_delivers_to_the_receiver() {
    let h = harness();
    rx_ring(&h, RX_RING, 2, 16);
    let f = frame(MAC, 100);
    h.poke(BUFFERS + 0x8000, &f);
    h.desc(
        TX_RING,
        DES0_OWN,
        DES1_ER | TDES1_FS | TDES1_LS | 100,
        BUFFERS + 0x8000,
        0,
    );
    h.up(RX_RING, TX_RING, CSR6_PR | 1 << CSR6_OM_SHIFT);
    let s = h.word(RX_RING);
    assert_eq!(s & DES0_OWN, 0);
    assert_eq!(s >> RDES0_DT_SHIFT & 3, DT_INTERNAL_LOOPBACK);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 104);
    assert_eq!(h.peek(BUFFERS, 100), f);
}

#[test]
fn general_purpose_timer_counts_and_raises_gte() {
    let h = harness();
    h.set_csr(CSR7, CSR5_GTE | CSR7_AIE);
    // 10 Mb/s (PS clear): 204.8 µs units.
    h.set_csr(CSR11, 10);
    assert_eq!(
        *h.timer.armed.lock().unwrap(),
        Some(Duration::from_nanos(2_048_000))
    );
    assert_eq!(h.csr(CSR11), 10);
    h.clock.advance(Duration::from_micros(1000));
    assert_eq!(
        h.csr(CSR11),
        6,
        "1.048 ms left is 5.1 units, counting up to 6"
    );
    h.clock.advance(Duration::from_micros(1048));
    h.core.lock().unwrap().timer_expired();
    assert_eq!(h.csr(CSR11), 0, "one-shot: stopped at zero");
    assert_eq!(h.csr(CSR5), CSR5_GTE | CSR5_AIS);
    assert!(h.irq.is_high());
    assert_eq!(*h.timer.armed.lock().unwrap(), None);
    h.set_csr(CSR5, CSR5_GTE);
    assert!(!h.irq.is_high());
    // 100 Mb/s MII (PS set, TTM clear): 81.92 µs units; continuous mode reloads.
    h.set_csr(CSR6, CSR6_PS | CSR6_MBO);
    h.set_csr(CSR11, CSR11_CON | 12);
    assert_eq!(
        *h.timer.armed.lock().unwrap(),
        Some(Duration::from_nanos(983_040))
    );
    h.clock.advance(Duration::from_nanos(983_040));
    h.core.lock().unwrap().timer_expired();
    assert_ne!(h.csr(CSR5) & CSR5_GTE, 0);
    assert_eq!(h.csr(CSR11), CSR11_CON | 12);
    assert_eq!(
        *h.timer.armed.lock().unwrap(),
        Some(Duration::from_nanos(983_040))
    );
    // Writing 0 stops it.
    h.set_csr(CSR11, 0);
    assert_eq!(*h.timer.armed.lock().unwrap(), None);
    // An early expiry does nothing.
    h.set_csr(CSR5, CSR5_GTE);
    h.set_csr(CSR11, 5);
    h.core.lock().unwrap().timer_expired();
    assert_eq!(h.csr(CSR5) & CSR5_GTE, 0);
    assert!(h.timer.armed.lock().unwrap().is_some());
}

#[test]
fn automatic_transmit_polling() {
    let h = harness();
    h.desc(TX_RING, 0, DES1_ER | TDES1_FS | TDES1_LS | 60, BUFFERS, 0);
    h.poke(BUFFERS, &frame(OTHER, 60));
    h.up(RX_RING, TX_RING, 0);
    assert_eq!(*h.timer.armed.lock().unwrap(), None);
    h.set_csr(CSR0, 0x01a0_8000 | 1 << CSR0_TAP_SHIFT);
    assert_eq!(
        *h.timer.armed.lock().unwrap(),
        Some(Duration::from_micros(200))
    );
    h.set_csr(CSR5, CSR5_W1C);
    // A poll that finds nothing raises no TU.
    h.clock.advance(Duration::from_micros(200));
    h.core.lock().unwrap().timer_expired();
    assert_eq!(h.csr(CSR5) & CSR5_TU, 0);
    // The guest hands over a frame without a poll demand.
    h.poke(TX_RING, &DES0_OWN.to_le_bytes());
    h.clock.advance(Duration::from_micros(200));
    h.core.lock().unwrap().timer_expired();
    assert_eq!(h.sent().len(), 1);
    assert_ne!(h.csr(CSR5) & CSR5_TU, 0);
}

// ---- PCI configuration --------------------------------------------------------------------------------

#[test]
fn pci_identity_and_registers() {
    let mut h = harness();
    assert_eq!(h.cfg(0x00), 0x0009_1011);
    assert_eq!(h.cfg(0x08), 0x0200_0020);
    assert_eq!(h.cfg(0x04), 0x0280_0007);
    assert_eq!(
        h.cfg(0x2c),
        u32::from(SUBSYSTEM_ID) << 16 | u32::from(SUBSYSTEM_VENDOR)
    );
    assert_eq!(h.cfg(0x3c), 0x2814_010b);
    assert_eq!(h.cfg(0x10), u32::from(IO) | 1);
    assert_eq!(h.cfg(0x14), MMIO);
    for bar in [0x18, 0x1c, 0x20, 0x24, 0x30] {
        assert_eq!(h.cfg(bar), 0);
    }
    // IDs are read-only.
    h.set_cfg(0x00, 0xffff_ffff);
    assert_eq!(h.cfg(0x00), 0x0009_1011);
    // Cache line size and latency timer are writable.
    h.set_cfg(0x0c, 0x0000_4008);
    assert_eq!(h.cfg(0x0c) & 0xffff, 0x4008);
    // CFDD: sleep, snooze and the driver byte.
    h.set_cfg(CFDD, 0xffff_ffff);
    assert_eq!(h.cfg(CFDD), CFDD_WRITABLE);
    h.set_cfg(CFDD, 0);
    assert_eq!(h.cfg(CFDD), 0);
    // Command: only the implemented bits stick.
    h.set_cfg(0x04, 0xffff);
    assert_eq!(h.cfg(0x04) & 0xffff, u32::from(PCI_COMMAND_WRITABLE));
}

#[test]
fn bars_size_and_remap() {
    let mut h = harness();
    // Sizing with decode off, as Linux does.
    h.set_cfg(0x04, 0x0004);
    h.set_cfg(0x10, 0xffff_ffff);
    assert_eq!(h.cfg(0x10), 0xffff_ff81, "128 bytes of I/O");
    h.set_cfg(0x14, 0xffff_ffff);
    assert_eq!(h.cfg(0x14), 0xffff_fc00, "1 KiB of memory");
    assert_eq!(h.tulip.mapped_at(), (None, None));
    let mut d = [0u8; 4];
    assert!(!h.io.read(u64::from(IO), &mut d));
    // New places, decode on.
    h.set_cfg(0x10, 0xd001);
    h.set_cfg(0x14, 0xfeb0_0000);
    h.set_cfg(0x04, 0x0007);
    assert_eq!(h.tulip.mapped_at(), (Some(0xd000), Some(0xfeb0_0000)));
    assert!(!h.io.read(u64::from(IO), &mut d));
    assert!(h.io.read(0xd030, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x3200_0040);
    assert!(h.mmio.read(0xfeb0_0030, &mut d));
    assert_eq!(u32::from_le_bytes(d), 0x3200_0040);
    assert!(!h.mmio.read(u64::from(MMIO), &mut d));
    // Memory decode off unmaps only the memory window.
    h.set_cfg(0x04, 0x0005);
    assert_eq!(h.tulip.mapped_at(), (Some(0xd000), None));
    // A BAR that collides stays unmapped until moved.
    let other: SharedDevice = Arc::new(Mutex::new(Dummy));
    h.io.insert(0xe000, 0x80, other).unwrap();
    h.set_cfg(0x10, 0xe001);
    assert_eq!(h.tulip.mapped_at().0, None);
    h.set_cfg(0x10, 0xe081);
    assert_eq!(h.tulip.mapped_at().0, Some(0xe080));
}

struct Dummy;

impl BusDevice for Dummy {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[test]
fn odd_sized_accesses_are_defined() {
    let h = harness();
    h.set_csr(CSR7, 0x0001_ebef);
    let mut b = [0u8; 2];
    assert!(h.io.read(u64::from(IO) + 0x38, &mut b));
    assert_eq!(u16::from_le_bytes(b), 0xebef);
    let mut b = [0u8; 1];
    assert!(h.io.read(u64::from(IO) + 0x3a, &mut b));
    assert_eq!(b[0], 0x01);
    assert!(h.io.read(u64::from(IO) + 0x3c, &mut b));
    assert_eq!(b[0], 0, "the pad between CSRs");
    // Byte writes are ignored; misaligned dword writes too.
    h.io.write(u64::from(IO) + 0x38, &[0]);
    h.io.write(u64::from(IO) + 0x3c, &0u32.to_le_bytes());
    assert_eq!(h.csr(CSR7), 0x0001_ebef);
    // Reading CSR8 with a byte read does not clear it.
    h.core.lock().unwrap().missed = 3;
    assert!(h.io.read(u64::from(IO) + 0x40, &mut b));
    assert_eq!(b[0], 3);
    assert_eq!(h.csr(CSR8), 3);
    // 8-byte MMIO accesses too.
    let mut q = [0u8; 8];
    assert!(h.mmio.read(u64::from(MMIO) + 0x38, &mut q));
    assert_eq!(q, [0xef, 0xeb, 1, 0, 0, 0, 0, 0]);
}

#[test]
fn bus_mastering_gates_dma() {
    let mut h = harness();
    rx_ring(&h, RX_RING, 2, 16);
    h.desc(
        TX_RING,
        0,
        DES1_ER | TDES1_FS | TDES1_LS | 60,
        BUFFERS + 0x8000,
        0,
    );
    h.poke(BUFFERS + 0x8000, &frame(OTHER, 60));
    h.up(RX_RING, TX_RING, CSR6_PR);
    h.set_cfg(0x04, 0x0003);
    h.poke(TX_RING, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR1, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Stopped);
    let before = h.ready_count();
    h.set_cfg(0x04, 0x0007);
    assert_eq!(
        h.sent().len(),
        1,
        "the queued frame goes once bus mastering is back"
    );
    assert!(h.ready_count() > before);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
}

// ---- Transmit ----------------------------------------------------------------------------------------

#[test]
fn transmit_ring_with_skip_length_buffers_and_segments() {
    let h = harness();
    let stride = 16 + 4 * 2;
    let f1 = frame(OTHER, 100);
    let f2 = frame(BROADCAST, 300);
    // Frame 1: one descriptor, split over buffer 1 (40 bytes) and buffer 2 (60 bytes).
    h.poke(BUFFERS, &f1[..40]);
    h.poke(BUFFERS + 0x100, &f1[40..]);
    h.desc(
        TX_RING,
        DES0_OWN,
        TDES1_FS | TDES1_LS | 60 << DES1_BS2_SHIFT | 40,
        BUFFERS,
        BUFFERS + 0x100,
    );
    // Frame 2: two descriptors (the second is the last of the ring), IC on the last.
    h.poke(BUFFERS + 0x200, &f2[..200]);
    h.poke(BUFFERS + 0x400, &f2[200..250]);
    h.poke(BUFFERS + 0x500, &f2[250..]);
    h.desc(
        TX_RING + stride,
        DES0_OWN,
        TDES1_FS | 200,
        BUFFERS + 0x200,
        0,
    );
    h.desc(
        TX_RING + 2 * stride,
        DES0_OWN,
        TDES1_IC | TDES1_LS | DES1_ER | 50 << DES1_BS2_SHIFT | 50,
        BUFFERS + 0x400,
        BUFFERS + 0x500,
    );
    // Skip area contents must not matter.
    h.poke(TX_RING + 16, &[0xff; 8]);
    h.set_csr(CSR0, 2 << CSR0_DSL_SHIFT);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR6, CSR6_ST);
    assert_eq!(h.sent(), vec![f1, f2]);
    for i in 0..3 {
        assert_eq!(
            h.word(TX_RING + i * stride),
            0,
            "descriptor {i} handed back"
        );
    }
    assert_eq!(h.csr(CSR5) & 0xffff, CSR5_TI | CSR5_TU);
    assert_eq!(h.ts(), TS_SUSPENDED);
    // The ring wrapped: the next poll looks at the first descriptor again.
    h.set_csr(CSR5, CSR5_W1C);
    let f3 = frame(OTHER, 64);
    h.poke(BUFFERS, &f3);
    h.desc(TX_RING, DES0_OWN, TDES1_FS | TDES1_LS | 64, BUFFERS, 0);
    h.set_csr(CSR1, 0);
    assert_eq!(h.sent(), vec![f3]);
    assert_eq!(h.csr(CSR5) & 0xffff, CSR5_TU, "no IC, no TI");
}

#[test]
fn transmit_chained_list() {
    let h = harness();
    let f = frame(OTHER, 1514);
    let (a, b, c) = (TX_RING + 0x300, TX_RING + 0x40, TX_RING + 0x800);
    h.poke(BUFFERS, &f[..1000]);
    h.poke(BUFFERS + 0x1000, &f[1000..1500]);
    h.poke(BUFFERS + 0x2000, &f[1500..]);
    // Buffer 2 sizes are ignored in chained mode.
    h.desc(
        a,
        DES0_OWN,
        TDES1_FS | DES1_CH | 7 << DES1_BS2_SHIFT | 1000,
        BUFFERS,
        b,
    );
    h.desc(b, DES0_OWN, DES1_CH | 500, BUFFERS + 0x1000, c + 2); // low bits ignored
    h.desc(
        c,
        DES0_OWN,
        TDES1_LS | TDES1_IC | DES1_CH | 14,
        BUFFERS + 0x2000,
        a,
    );
    h.set_csr(CSR4, a);
    h.set_csr(CSR6, CSR6_ST);
    assert_eq!(h.sent(), vec![f]);
    for d in [a, b, c] {
        assert_eq!(h.word(d), 0);
    }
    assert_ne!(h.csr(CSR5) & CSR5_TI, 0);
    // The chain leads back to a.
    assert_eq!(h.core.lock().unwrap().tx_current, a);
}

#[test]
fn transmit_waits_for_every_segment() {
    let h = harness();
    let f = frame(OTHER, 200);
    h.poke(BUFFERS, &f);
    h.desc(TX_RING, DES0_OWN, TDES1_FS | 100, BUFFERS, 0);
    h.desc(TX_RING + 16, 0, TDES1_LS | DES1_ER | 100, BUFFERS + 100, 0);
    h.up(RX_RING, TX_RING, 0);
    h.set_csr(CSR1, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING), DES0_OWN, "the first segment is left alone");
    assert_ne!(h.csr(CSR5) & CSR5_TU, 0);
    assert_eq!(h.ts(), TS_SUSPENDED);
    assert_eq!(h.core.lock().unwrap().tx_current, TX_RING);
    h.poke(TX_RING + 16, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR1, 0);
    assert_eq!(h.sent(), vec![f]);
    assert_eq!(h.word(TX_RING), 0);
    assert_eq!(h.word(TX_RING + 16), 0);
}

#[test]
fn transmit_skips_empty_and_orphan_descriptors() {
    let h = harness();
    let f = frame(OTHER, 80);
    h.poke(BUFFERS, &f);
    // Linux's dummy descriptor before a setup frame: no FS, no data.
    h.desc(TX_RING, DES0_OWN, 0, 0, 0);
    // A frame with an empty first buffer and an empty middle descriptor.
    h.desc(
        TX_RING + 16,
        DES0_OWN,
        TDES1_FS | 80 << DES1_BS2_SHIFT,
        0,
        BUFFERS,
    );
    h.desc(TX_RING + 32, DES0_OWN, 0, 0, 0);
    h.desc(TX_RING + 48, DES0_OWN, TDES1_LS | DES1_ER, 0, 0);
    h.up(RX_RING, TX_RING, 0);
    assert_eq!(h.sent(), vec![f]);
    for i in 0..4 {
        assert_eq!(h.word(TX_RING + 16 * i), 0);
    }
}

#[test]
fn transmit_loops_and_runaway_frames_are_bounded() {
    let h = harness();
    h.up(RX_RING, TX_RING, 0);
    // A descriptor chained to itself without LS.
    h.desc(TX_RING, DES0_OWN, TDES1_FS | DES1_CH | 10, BUFFERS, TX_RING);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR1, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING), TDES0_ES | TDES0_UF);
    assert_eq!(h.ts(), TS_SUSPENDED);
    // A frame whose second descriptor loops on itself.
    h.desc(
        TX_RING,
        DES0_OWN,
        TDES1_FS | DES1_CH | 10,
        BUFFERS,
        TX_RING + 16,
    );
    h.desc(TX_RING + 16, DES0_OWN, DES1_CH | 10, BUFFERS, TX_RING + 16);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR1, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING), TDES0_ES | TDES0_UF);
    // That poll used up its bound; the next one closes the looping descriptor as an orphan.
    assert_eq!(h.word(TX_RING + 16), DES0_OWN);
    h.set_csr(CSR1, 0);
    assert_eq!(h.word(TX_RING + 16), 0);
    assert_eq!(h.ts(), TS_SUSPENDED);
    // A ring of owned empty descriptors with no end: one poll stops after the bound.
    let base = 0x40000u32;
    for i in 0..(DESCRIPTOR_LIMIT as u32 + 10) {
        h.desc(base + 16 * i, DES0_OWN, 0, 0, 0);
    }
    h.set_csr(CSR4, base);
    h.set_csr(CSR5, CSR5_W1C);
    h.set_csr(CSR1, 0);
    assert_eq!(
        h.core.lock().unwrap().tx_current,
        base + 16 * DESCRIPTOR_LIMIT as u32
    );
    assert_eq!(
        h.csr(CSR5) & CSR5_TU,
        0,
        "stopped at the bound, not at a host descriptor"
    );
    assert_eq!(h.ts(), TS_SUSPENDED);
    h.set_csr(CSR1, 0);
    assert_ne!(h.csr(CSR5) & CSR5_TU, 0);
}

#[test]
fn transmit_oversized_frames_are_dropped() {
    let h = harness();
    let n = MAX_TX_FRAME / 2047 + 1;
    for i in 0..n as u32 {
        let mut control = DES1_CH | 2047;
        if i == 0 {
            control |= TDES1_FS;
        }
        if i == n as u32 - 1 {
            control |= TDES1_LS;
        }
        h.desc(
            TX_RING + 16 * i,
            DES0_OWN,
            control,
            BUFFERS,
            TX_RING + 16 * (i + 1),
        );
    }
    h.up(RX_RING, TX_RING, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING + 16 * (n as u32 - 1)), TDES0_ES | TDES0_TO);
    assert_eq!(h.word(TX_RING), 0);
}

#[test]
fn transmit_with_guest_crc_and_link_down() {
    let h = harness();
    let f = frame(OTHER, 64);
    let mut with_fcs = f.clone();
    with_fcs.extend_from_slice(&crc32(&f).to_le_bytes());
    h.poke(BUFFERS, &with_fcs);
    h.desc(
        TX_RING,
        DES0_OWN,
        TDES1_FS | TDES1_LS | TDES1_AC | 68,
        BUFFERS,
        0,
    );
    h.desc(
        TX_RING + 16,
        DES0_OWN,
        TDES1_FS | TDES1_LS | DES1_ER | 64,
        BUFFERS,
        0,
    );
    h.core.lock().unwrap().set_link(false);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR6, CSR6_ST);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING), TDES0_ES | TDES0_LO | TDES0_NC);
    assert_eq!(h.word(TX_RING + 16), TDES0_ES | TDES0_LO | TDES0_NC);
    // Link down in full duplex: dropped without carrier errors.
    h.poke(TX_RING, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR6, CSR6_ST | CSR6_FD);
    h.set_csr(CSR1, 0);
    assert!(h.sent().is_empty());
    assert_eq!(h.word(TX_RING), 0);
    // Link up: both go out, without the guest's FCS.
    h.core.lock().unwrap().set_link(true);
    h.poke(TX_RING, &DES0_OWN.to_le_bytes());
    h.poke(TX_RING + 16, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR1, 0);
    assert_eq!(
        h.sent(),
        vec![f.clone(), f],
        "the guest's FCS is not passed on"
    );
}

#[test]
fn transmit_dma_outside_ram_is_a_fatal_bus_error() {
    let h = harness();
    rx_ring(&h, RX_RING, 2, 16);
    h.desc(
        TX_RING,
        DES0_OWN,
        TDES1_FS | TDES1_LS | DES1_ER | 100,
        0xfff0_0000,
        0,
    );
    h.set_csr(CSR3, RX_RING);
    h.set_csr(CSR4, TX_RING);
    h.set_csr(CSR7, 0x0001_ebef);
    h.set_csr(CSR6, CSR6_SR | CSR6_ST);
    let csr5 = h.csr(CSR5);
    assert_ne!(csr5 & CSR5_FBE, 0);
    assert_eq!(csr5 >> CSR5_EB_SHIFT & 7, CSR5_EB_MASTER_ABORT);
    assert_eq!(csr5 & 0x007e_0000, 0, "both processes stopped");
    assert!(h.irq.is_high());
    assert!(h.sent().is_empty());
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Stopped);
    // Restarting does nothing until a software reset.
    h.set_csr(CSR6, 0);
    h.set_csr(CSR6, CSR6_ST | CSR6_SR);
    assert_eq!(h.csr(CSR5) & 0x007e_0000, 0);
    h.set_csr(CSR0, CSR0_SWR);
    assert_eq!(h.csr(CSR5), 0);
    // A descriptor list outside RAM.
    h.set_csr(CSR4, 0xffff_0000);
    h.set_csr(CSR6, CSR6_ST);
    assert_ne!(h.csr(CSR5) & CSR5_FBE, 0);
    assert_eq!(h.ts(), TS_STOPPED);
}

// ---- Receive -----------------------------------------------------------------------------------------

#[test]
fn receive_ring_with_skip_length() {
    let h = harness();
    let stride = 16 + 4;
    rx_ring(&h, RX_RING, 3, stride);
    h.set_csr(CSR0, 1 << CSR0_DSL_SHIFT);
    h.set_csr(CSR3, RX_RING);
    h.set_csr(CSR6, CSR6_SR | CSR6_PR);
    h.set_csr(CSR7, 0x0001_ebef);
    let ready = h.ready_count();
    assert!(ready > 0, "starting the receiver signals rx_ready");
    // A short broadcast (ARP-sized) frame is padded to 60 bytes before the CRC.
    let short = frame(BROADCAST, 42);
    assert_eq!(h.receive(&short), RxOutcome::Delivered);
    let s = h.word(RX_RING);
    assert_eq!(s & DES0_OWN, 0);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 64, "60 bytes + CRC");
    assert_eq!(
        s & (RDES0_FS | RDES0_LS | RDES0_MF),
        RDES0_FS | RDES0_LS | RDES0_MF
    );
    assert_eq!(s & RDES0_ES, 0);
    assert_ne!(s & RDES0_FT, 0, "type 0800h is a type, not a length");
    let mut wire = short.clone();
    wire.resize(60, 0);
    let got = h.peek(BUFFERS, 64);
    assert_eq!(&got[..60], &wire[..]);
    assert_eq!(&got[60..], &crc32(&wire).to_le_bytes());
    assert_eq!(
        crc32_le_raw(&got),
        0xdebb_20e3,
        "CRC residue of a good frame"
    );
    assert_ne!(h.csr(CSR5) & CSR5_RI, 0);
    assert!(h.irq.is_high());
    // Linux computes the length as FL - 4.
    let pkt_len = (s >> 16 & 0x7ff) - 4;
    assert_eq!(pkt_len, 60);
    // Two more: the ring wraps.
    let big = frame(MAC, 1514);
    assert_eq!(h.receive(&big), RxOutcome::Delivered);
    let s = h.word(RX_RING + stride);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 1518);
    assert_eq!(s & (RDES0_TL | RDES0_ES | RDES0_MF), 0);
    assert_eq!(h.peek(BUFFERS + 2048, 1514), big);
    assert_eq!(h.receive(&frame(MAC, 100)), RxOutcome::Delivered);
    assert_eq!(h.core.lock().unwrap().rx_current, RX_RING);
    assert_eq!(h.receive(&frame(MAC, 100)), RxOutcome::NoBuffer);
}

#[test]
fn receive_chained_frame_spans_descriptors() {
    let h = harness();
    let (a, b, c, d) = (RX_RING, RX_RING + 0x100, RX_RING + 0x40, RX_RING + 0x200);
    // 100-byte buffers; buffer 2's size is ignored in chained mode.
    h.desc(
        a,
        DES0_OWN,
        DES1_CH | 500 << DES1_BS2_SHIFT | 100,
        BUFFERS,
        b,
    );
    h.desc(b, DES0_OWN, DES1_CH | 100, BUFFERS + 0x1000, c);
    h.desc(c, DES0_OWN, DES1_CH | 100, BUFFERS + 0x2000, d);
    h.desc(d, DES0_OWN, DES1_CH | 100, BUFFERS + 0x3000, a);
    h.up(a, TX_RING, CSR6_PR);
    let f = frame(MAC, 350);
    assert_eq!(h.receive(&f), RxOutcome::Delivered);
    assert_eq!(h.word(a), RDES0_FS);
    assert_eq!(h.word(b), 0);
    assert_eq!(h.word(c), 0);
    let s = h.word(d);
    assert_eq!(s & (RDES0_FS | RDES0_LS | DES0_OWN), RDES0_LS);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 354);
    let mut got = Vec::new();
    for buf in [BUFFERS, BUFFERS + 0x1000, BUFFERS + 0x2000] {
        got.extend(h.peek(buf, 100));
    }
    got.extend(h.peek(BUFFERS + 0x3000, 54));
    assert_eq!(&got[..350], &f[..]);
    assert_eq!(&got[350..], &crc32(&f).to_le_bytes());
    assert_eq!(h.csr(CSR5) & 0xffff, CSR5_RI);
    assert_eq!(h.core.lock().unwrap().rx_current, a);
}

#[test]
fn receive_ring_mode_uses_both_buffers() {
    let h = harness();
    h.desc(
        RX_RING,
        DES0_OWN,
        DES1_ER | 50 << DES1_BS2_SHIFT | 52,
        BUFFERS,
        BUFFERS + 0x800,
    );
    h.up(RX_RING, TX_RING, CSR6_PR);
    let f = frame(MAC, 90);
    assert_eq!(h.receive(&f), RxOutcome::Delivered);
    let s = h.word(RX_RING);
    assert_eq!(s & (RDES0_FS | RDES0_LS), RDES0_FS | RDES0_LS);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 94);
    let mut got = h.peek(BUFFERS, 52);
    got.extend(h.peek(BUFFERS + 0x800, 42));
    assert_eq!(&got[..90], &f[..]);
}

#[test]
fn receive_without_buffers_suspends_and_resumes_after_poll_demand() {
    let h = harness();
    h.desc(RX_RING, DES0_OWN, DES1_ER | 1536, BUFFERS, 0);
    h.up(RX_RING, TX_RING, CSR6_PR);
    h.set_csr(CSR7, 0x0001_ebef);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    h.set_csr(CSR5, CSR5_W1C);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::NoBuffer);
    assert_eq!(h.rs(), RS_SUSPENDED);
    assert_eq!(h.csr(CSR5) & 0xffff, CSR5_RU | CSR5_AIS);
    assert!(h.irq.is_high());
    // Offering again while suspended re-reads the descriptor; RU is not raised again.
    h.set_csr(CSR5, CSR5_RU);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::NoBuffer);
    assert_eq!(h.csr(CSR5) & CSR5_RU, 0);
    // A poll demand without a descriptor keeps it suspended but still tells the host.
    let before = h.ready_count();
    h.set_csr(CSR2, 0);
    assert_eq!(h.rs(), RS_SUSPENDED);
    assert_eq!(h.ready_count(), before + 1);
    // The guest returns the descriptor and demands a poll.
    h.poke(RX_RING, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR2, 1);
    assert_eq!(h.rs(), RS_WAITING);
    assert_eq!(h.ready_count(), before + 2);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
}

#[test]
fn rx_ready_when_the_guest_returns_a_descriptor_without_poll_demand() {
    let h = harness();
    h.desc(RX_RING, 0, DES1_ER | 1536, BUFFERS, 0);
    h.up(RX_RING, TX_RING, CSR6_PR);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::NoBuffer);
    let before = h.ready_count();
    // Linux's interrupt handler: read CSR5, ack, refill (no CSR2), read CSR8.
    let csr5 = h.csr(CSR5);
    h.set_csr(CSR5, csr5 & 0x0001_ffff);
    assert_eq!(h.ready_count(), before, "nothing returned yet");
    h.poke(RX_RING, &DES0_OWN.to_le_bytes());
    h.csr(CSR8);
    assert_eq!(h.ready_count(), before + 1);
    h.csr(CSR5);
    assert_eq!(h.ready_count(), before + 1, "told once");
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.rs(), RS_WAITING);
}

#[test]
fn receive_truncates_when_descriptors_run_out() {
    let h = harness();
    h.desc(RX_RING, DES0_OWN, 100, BUFFERS, 0);
    h.desc(RX_RING + 16, DES0_OWN, 100, BUFFERS + 0x100, 0);
    h.desc(RX_RING + 32, 0, DES1_ER | 100, BUFFERS + 0x200, 0);
    h.up(RX_RING, TX_RING, CSR6_PR);
    assert_eq!(h.receive(&frame(MAC, 500)), RxOutcome::Delivered);
    assert_eq!(h.word(RX_RING), RDES0_FS);
    let s = h.word(RX_RING + 16);
    assert_eq!(
        s & (RDES0_LS | RDES0_DE | RDES0_ES | RDES0_FS | DES0_OWN),
        RDES0_LS | RDES0_DE | RDES0_ES
    );
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 200);
    assert_eq!(h.rs(), RS_SUSPENDED);
    assert_eq!(h.csr(CSR5) & (CSR5_RU | CSR5_RI), CSR5_RU | CSR5_RI);
    assert_eq!(h.core.lock().unwrap().rx_current, RX_RING + 32);
}

#[test]
fn receive_loops_and_empty_descriptors_are_bounded() {
    let h = harness();
    // A chained descriptor pointing at itself, with empty buffers.
    h.desc(RX_RING, DES0_OWN, DES1_CH, BUFFERS, RX_RING);
    h.up(RX_RING, TX_RING, CSR6_PR);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    let s = h.word(RX_RING);
    assert_eq!(s & (RDES0_DE | RDES0_LS | DES0_OWN), RDES0_DE | RDES0_LS);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::NoBuffer);
    // A ring of owned empty descriptors with no end mark: the walk stops at the bound.
    let base = 0x40000u32;
    for i in 0..(DESCRIPTOR_LIMIT as u32 + 10) {
        h.desc(base + 16 * i, DES0_OWN, 0, 0, 0);
    }
    h.set_csr(CSR6, 0);
    h.set_csr(CSR3, base);
    h.set_csr(CSR6, CSR6_SR | CSR6_PR);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.word(base), RDES0_FS);
    let last = base + 16 * (DESCRIPTOR_LIMIT as u32 - 1);
    assert_eq!(h.word(last) & (RDES0_DE | RDES0_LS), RDES0_DE | RDES0_LS);
    assert_eq!(h.word(last + 16), DES0_OWN);
    assert_eq!(h.core.lock().unwrap().rx_current, last + 16);
}

#[test]
fn receive_dma_outside_ram_is_a_fatal_bus_error() {
    let h = harness();
    h.desc(RX_RING, DES0_OWN, DES1_ER | 1536, 0xfff0_0000, 0);
    h.up(RX_RING, TX_RING, CSR6_PR);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Stopped);
    assert_ne!(h.csr(CSR5) & CSR5_FBE, 0);
    assert_eq!(h.rs(), RS_STOPPED);
    assert_eq!(h.ts(), TS_STOPPED);
}

#[test]
fn receive_needs_a_running_receiver_and_a_link() {
    let h = harness();
    rx_ring(&h, RX_RING, 4, 16);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Stopped);
    h.up(RX_RING, TX_RING, CSR6_PR);
    h.core.lock().unwrap().set_link(false);
    assert!(!h.core.lock().unwrap().link_up());
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Stopped);
    let before = h.ready_count();
    h.core.lock().unwrap().set_link(true);
    assert_eq!(h.ready_count(), before + 1);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    // Frames too long for RDES0's length field, or shorter than an address, are refused.
    assert_eq!(h.receive(&frame(MAC, 17000)), RxOutcome::Filtered);
    assert_eq!(h.receive(&[1, 2, 3]), RxOutcome::Filtered);
    // A long frame is received with TL.
    h.desc(
        RX_RING + 16,
        DES0_OWN,
        DES1_CH | 2000,
        BUFFERS,
        RX_RING + 16,
    );
    assert_eq!(h.receive(&frame(MAC, 1600)), RxOutcome::Delivered);
    let s = h.word(RX_RING + 16);
    assert_eq!(s & (RDES0_TL | RDES0_ES), RDES0_TL | RDES0_ES);
    assert_eq!(s >> RDES0_FL_SHIFT & RDES0_FL_MASK, 1604);
}

// ---- Address filter ----------------------------------------------------------------------------------

/// Brings the chip up with a TX ring for setup frames and an RX ring, promiscuous mode off.
fn filtering_harness() -> Harness {
    let h = harness();
    rx_ring(&h, RX_RING, 64, 16);
    for i in 0..8 {
        let end = if i == 7 { DES1_ER } else { 0 };
        h.desc(TX_RING + 16 * i, 0, end, 0, 0);
    }
    h.up(RX_RING, TX_RING, 0);
    h
}

#[test]
fn the_filter_is_empty_until_the_first_setup_frame() {
    let h = harness();
    rx_ring(&h, RX_RING, 8, 16);
    h.set_csr(CSR3, RX_RING);
    // Reset leaves promiscuous mode on.
    h.set_csr(CSR6, h.csr(CSR6) | CSR6_SR);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Delivered);
    h.set_csr(CSR6, CSR6_SR);
    for dest in [MAC, OTHER, BROADCAST, MCAST] {
        assert_eq!(
            h.receive(&frame(dest, 60)),
            RxOutcome::Filtered,
            "{dest:02x?}"
        );
    }
}

#[test]
fn perfect_filtering() {
    let h = filtering_harness();
    h.setup_perfect(TX_RING, &[MCAST]);
    assert_eq!(h.csr(CSR6) & (CSR6_HP | CSR6_HO | CSR6_IF), 0);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(BROADCAST, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    // A setup frame's IC raises TI.
    h.set_csr(CSR5, CSR5_W1C);
    let buf = BUFFERS + 0x8000;
    h.desc(TX_RING + 16, DES0_OWN, TDES1_SET | TDES1_IC | 192, buf, 0);
    h.set_csr(CSR1, 0);
    assert_eq!(h.word(TX_RING + 16), TDES0_SETUP_DONE);
    assert_ne!(h.csr(CSR5) & CSR5_TI, 0);
}

#[test]
fn hash_filtering() {
    let h = filtering_harness();
    // Linux's build_setup_frame_hash: bit 255 for broadcast, one bit per multicast address, our
    // address in longwords 39-41.
    assert_eq!(filter::hash_index(&MCAST), 510, "CRC register d9b4c5fe");
    assert_eq!(filter::hash_index(&BROADCAST), 255);
    let mut table = [0u16; 32];
    for n in [255usize, filter::hash_index(&MCAST)] {
        table[n / 16] |= 1 << (n % 16);
    }
    let mut f = [0u8; SETUP_FRAME_LEN];
    for (i, w) in table.iter().enumerate() {
        f[4 * i..4 * i + 2].copy_from_slice(&w.to_le_bytes());
        f[4 * i + 2..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    put_address(&mut f, HASH_MODE_PERFECT_OFFSET, &MAC);
    h.send_setup(TX_RING, &f, TDES1_FT0);
    assert_eq!(h.csr(CSR6) & (CSR6_HP | CSR6_HO | CSR6_IF), CSR6_HP);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(BROADCAST, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    // Linux's set_rx_mode keeps HP out of what it writes; the bit stays.
    let csr6 = h.csr(CSR6) & !0xd5;
    h.set_csr(CSR6, csr6);
    assert_ne!(h.csr(CSR6) & CSR6_HP, 0);
}

#[test]
fn hash_only_filtering() {
    let h = filtering_harness();
    let mut f = [0u8; SETUP_FRAME_LEN];
    let n = filter::hash_index(&MAC);
    assert_eq!(n, 85);
    f[4 * (n / 16)..4 * (n / 16) + 2].copy_from_slice(&(1u16 << (n % 16)).to_le_bytes());
    h.send_setup(TX_RING, &f, TDES1_FT0 | TDES1_FT1);
    assert_eq!(
        h.csr(CSR6) & (CSR6_HP | CSR6_HO | CSR6_IF),
        CSR6_HP | CSR6_HO
    );
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(BROADCAST, 60)), RxOutcome::Filtered);
}

#[test]
fn inverse_filtering() {
    let h = filtering_harness();
    let mut f = [0u8; SETUP_FRAME_LEN];
    for k in 0..16 {
        put_address(&mut f, 12 * k, &OTHER);
    }
    put_address(&mut f, 12, &MCAST);
    h.send_setup(TX_RING, &f, TDES1_FT1);
    assert_eq!(h.csr(CSR6) & (CSR6_HP | CSR6_HO | CSR6_IF), CSR6_IF);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Filtered);
}

#[test]
fn promiscuous_all_multicast_and_receive_all() {
    let h = filtering_harness();
    h.setup_perfect(TX_RING, &[]);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Filtered);
    h.set_csr(CSR6, h.csr(CSR6) | CSR6_PM);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Delivered);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    h.set_csr(CSR6, h.csr(CSR6) | CSR6_PR);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Delivered);
    let at = h.core.lock().unwrap().rx_current;
    h.set_csr(CSR6, h.csr(CSR6) & !(CSR6_PR | CSR6_PM) | CSR6_RA);
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Delivered);
    let ra = h.core.lock().unwrap().rx_current;
    assert_eq!(ra - 16, at);
    assert_ne!(h.word(at) & RDES0_FF, 0, "accepted only by receive-all");
    assert_eq!(
        h.word(at - 16) & RDES0_FF,
        0,
        "accepted by promiscuous mode"
    );
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    assert_eq!(h.word(ra) & RDES0_FF, 0);
}

#[test]
fn setup_frames_with_other_sizes_and_linux_dummy_descriptor() {
    let h = filtering_harness();
    h.setup_perfect(TX_RING, &[]);
    // A short setup frame leaves the filter alone.
    h.poke(BUFFERS + 0x8000, &[0u8; 100]);
    h.desc(TX_RING + 16, DES0_OWN, TDES1_SET | 100, BUFFERS + 0x8000, 0);
    h.set_csr(CSR1, 0);
    assert_eq!(h.word(TX_RING + 16), TDES0_SETUP_DONE);
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    // set_rx_mode's sequence: a dummy descriptor, then the setup frame, one poll demand.
    let mut f = [0xffu8; SETUP_FRAME_LEN];
    put_address(&mut f, 0, &MCAST2);
    put_address(&mut f, 12 * 15, &MAC);
    h.poke(BUFFERS + 0x8000, &f);
    h.desc(TX_RING + 48, DES0_OWN, TDES1_SET | 192, BUFFERS + 0x8000, 0);
    h.desc(TX_RING + 32, DES0_OWN, 0, 0, 0);
    h.set_csr(CSR1, 0);
    assert_eq!(h.word(TX_RING + 32), 0);
    assert_eq!(h.word(TX_RING + 48), TDES0_SETUP_DONE);
    assert!(h.sent().is_empty());
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Delivered);
}

// ---- Serial ROM ------------------------------------------------------------------------------------------

const EE_SHIFT_CLK: u32 = 0x02;
const EE_CS: u32 = 0x01;
const EE_DATA_WRITE: u32 = 0x04;
const EE_DATA_READ: u32 = 0x08;
const EE_ENB: u32 = 0x4800 | EE_CS;

/// Linux's tulip_read_eeprom, bit for bit (including the extra bits it returns).
fn read_eeprom(h: &Harness, location: u32, addr_len: u32) -> u32 {
    let read_cmd = location | 6 << addr_len;
    if location > (1 << addr_len) - 1 {
        return 0;
    }
    h.set_csr(CSR9, EE_ENB & !EE_CS);
    h.set_csr(CSR9, EE_ENB);
    let mut retval = 0u32;
    for i in (0..=4 + addr_len).rev() {
        let dataval = if read_cmd & 1 << i != 0 {
            EE_DATA_WRITE
        } else {
            0
        };
        h.set_csr(CSR9, EE_ENB | dataval);
        h.csr(CSR9);
        h.set_csr(CSR9, EE_ENB | dataval | EE_SHIFT_CLK);
        h.csr(CSR9);
        retval = retval << 1 | u32::from(h.csr(CSR9) & EE_DATA_READ != 0);
    }
    h.set_csr(CSR9, EE_ENB);
    h.csr(CSR9);
    for _ in 0..16 {
        h.set_csr(CSR9, EE_ENB | EE_SHIFT_CLK);
        h.csr(CSR9);
        retval = retval << 1 | u32::from(h.csr(CSR9) & EE_DATA_READ != 0);
        h.set_csr(CSR9, EE_ENB);
        h.csr(CSR9);
    }
    h.set_csr(CSR9, EE_ENB & !EE_CS);
    retval
}

/// What tulip_init_one reads: the address-width probe, then words 0-62 into bytes.
fn linux_eeprom(h: &Harness) -> (u32, Vec<u8>) {
    let addr_len = if read_eeprom(h, 0xff, 8) & 0x40000 != 0 {
        8
    } else {
        6
    };
    let max = ((1 << addr_len) - 1) * 2;
    let mut ee = vec![0u8; 128];
    for i in (0..max.min(512)).step_by(2) {
        let data = read_eeprom(h, i as u32 / 2, addr_len) as u16;
        ee[i] = data as u8;
        ee[i + 1] = (data >> 8) as u8;
    }
    (addr_len, ee)
}

#[test]
fn serial_rom_reads_like_tulip_read_eeprom() {
    let mut h = harness();
    let (addr_len, ee) = linux_eeprom(&h);
    assert_eq!(addr_len, 6, "a 93C46");
    // New-format detection and the MAC at byte 20.
    assert_ne!(&ee[0..8], &ee[16..24]);
    assert!(!(ee[0] == 0xff && ee[1] == 0xff && ee[2] == 0));
    assert_eq!(&ee[20..26], &MAC);
    // Subsystem IDs as in configuration space.
    let sub = h.cfg(0x2c);
    assert_eq!(u32::from(u16::from_le_bytes([ee[0], ee[1]])), sub & 0xffff);
    assert_eq!(u32::from(u16::from_le_bytes([ee[2], ee[3]])), sub >> 16);
    assert_eq!(ee[18], 4);
    assert_eq!(ee[19], 1);
    // tulip_parse_eeprom on a DC21140 (CSR12_IN_SROM).
    let p = usize::from(ee[27]);
    assert_eq!(p, 30);
    assert_eq!(u16::from_le_bytes([ee[p], ee[p + 1]]), 0x0800, "autosense");
    let csr12dir = ee[p + 2];
    let count = ee[p + 3];
    assert_eq!((csr12dir, count), (0, 1));
    let b = &ee[p + 4..];
    assert_ne!(b[0] & 0x80, 0, "extended block");
    assert_eq!(b[1], 1, "21140 MII PHY block");
    assert_ne!(b[1] & 1, 0, "has_mii");
    let gpr_len = usize::from(b[3]) * 2;
    let reset_len = usize::from(b[4 + gpr_len]) * 2;
    let advertise = u16::from_le_bytes([b[7 + gpr_len + reset_len], b[8 + gpr_len + reset_len]]);
    assert_eq!(advertise, 0x01e0);
    // tulip_select_media's view of the leaf: misc_info[1] | 1 is what it advertises.
    let leaf = &b[2..];
    assert_eq!(leaf[0], 0, "PHY index 0");
    let misc = &leaf[3 + usize::from(leaf[1]) + usize::from(leaf[2 + usize::from(leaf[1])])..];
    assert_eq!(u16::from_le_bytes([misc[2], misc[3]]) | 1, 0x01e1);
    // The checksums: the whole ROM (word 63, which Linux does not read) and the ID block.
    let w63 = read_eeprom(&h, 63, 6) as u16;
    assert_eq!(u32::from(w63), crc32(&ee[..126]) & 0xffff);
    assert_eq!(ee[16], super::crc::srom_id_block_crc(&ee));
    // A location beyond the width reads as zero without touching the ROM.
    assert_eq!(read_eeprom(&h, 64, 6), 0);
}

#[test]
fn serial_rom_ignores_writes() {
    let h = harness();
    let before = read_eeprom(&h, 10, 6) as u16;
    // EWEN (1 00 11xxxx), then WRITE (1 01 001010) of 0x1234.
    let shift_out = |bits: &[u32]| {
        h.set_csr(CSR9, EE_ENB & !EE_CS);
        h.set_csr(CSR9, EE_ENB);
        for &bit in bits {
            let d = if bit != 0 { EE_DATA_WRITE } else { 0 };
            h.set_csr(CSR9, EE_ENB | d);
            h.set_csr(CSR9, EE_ENB | d | EE_SHIFT_CLK);
        }
        h.set_csr(CSR9, EE_ENB & !EE_CS);
    };
    shift_out(&[1, 0, 0, 1, 1, 0, 0, 0, 0]);
    let mut write = vec![1, 0, 1, 0, 0, 1, 0, 1, 0];
    write.extend((0..16).rev().map(|i| 0x1234 >> i & 1));
    shift_out(&write);
    assert_eq!(read_eeprom(&h, 10, 6) as u16, before);
    // With SR clear the ROM is not selected: DO reads 0.
    h.set_csr(CSR9, 0);
    assert_eq!(h.csr(CSR9) & EE_DATA_READ, 0);
}

// ---- MII ----------------------------------------------------------------------------------------------

const MDIO_SHIFT_CLK: u32 = 0x10000;
const MDIO_DATA_WRITE1: u32 = 0x20000;
const MDIO_ENB_IN: u32 = 0x40000;
const MDIO_DATA_READ: u32 = 0x80000;

/// Linux's tulip_mdio_read.
fn mdio_read(h: &Harness, phy: u32, location: u32) -> u32 {
    let read_cmd = 0xf6 << 10 | (phy & 0x1f) << 5 | location;
    for _ in 0..=32 {
        h.set_csr(CSR9, MDIO_DATA_WRITE1);
        h.csr(CSR9);
        h.set_csr(CSR9, MDIO_DATA_WRITE1 | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
    for i in (0..=15).rev() {
        let dataval = if read_cmd & 1 << i != 0 {
            MDIO_DATA_WRITE1
        } else {
            0
        };
        h.set_csr(CSR9, dataval);
        h.csr(CSR9);
        h.set_csr(CSR9, dataval | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
    let mut retval = 0u32;
    for _ in 0..19 {
        h.set_csr(CSR9, MDIO_ENB_IN);
        h.csr(CSR9);
        retval = retval << 1 | u32::from(h.csr(CSR9) & MDIO_DATA_READ != 0);
        h.set_csr(CSR9, MDIO_ENB_IN | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
    retval >> 1 & 0xffff
}

/// Linux's tulip_mdio_write.
fn mdio_write(h: &Harness, phy: u32, location: u32, val: u32) {
    let cmd = 0x5002 << 16 | (phy & 0x1f) << 23 | location << 18 | (val & 0xffff);
    for _ in 0..=32 {
        h.set_csr(CSR9, MDIO_DATA_WRITE1);
        h.csr(CSR9);
        h.set_csr(CSR9, MDIO_DATA_WRITE1 | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
    for i in (0..=31).rev() {
        let dataval = if cmd & 1 << i != 0 {
            MDIO_DATA_WRITE1
        } else {
            0
        };
        h.set_csr(CSR9, dataval);
        h.csr(CSR9);
        h.set_csr(CSR9, dataval | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
    for _ in 0..2 {
        h.set_csr(CSR9, MDIO_ENB_IN);
        h.csr(CSR9);
        h.set_csr(CSR9, MDIO_ENB_IN | MDIO_SHIFT_CLK);
        h.csr(CSR9);
    }
}

#[test]
fn phy_scan_finds_one_phy_at_address_1() {
    let h = harness();
    // tulip_find_mii's loop and test.
    let mut found = Vec::new();
    for phyn in 1..=32u32 {
        let phy = phyn & 0x1f;
        let status = mdio_read(&h, phy, 1);
        if (status & 0x8301) == 0x8001 || ((status & 0x8000) == 0 && (status & 0x7800) != 0) {
            found.push(phy);
        } else {
            assert_eq!(status, 0xffff, "nothing at address {phy}");
        }
    }
    assert_eq!(found, vec![1]);
}

#[test]
fn phy_registers_through_mdio() {
    let h = harness();
    assert_eq!(mdio_read(&h, 1, 0), 0x3000);
    assert_eq!(mdio_read(&h, 1, 1), 0x782d, "link up, negotiation complete");
    assert_eq!(mdio_read(&h, 1, 2), 0x2000);
    assert_eq!(mdio_read(&h, 1, 3), 0x5c01);
    assert_eq!(mdio_read(&h, 1, 4), 0x01e1);
    assert_eq!(mdio_read(&h, 1, 5), 0x41e1);
    assert_eq!(mdio_read(&h, 1, 6), 1);
    assert_eq!(mdio_read(&h, 1, 17), 0);
    // tulip_check_duplex: 100 Mb/s (LPA_100), full duplex.
    let negotiated = mdio_read(&h, 1, 5) & 0x01e1;
    assert_ne!(negotiated & 0x0380, 0);
    assert_ne!(negotiated & 0x0100, 0);
    // tulip_find_mii's writes: ANAR, then BMCR with only ANENABLE.
    mdio_write(&h, 1, 4, 0x0061);
    assert_eq!(mdio_read(&h, 1, 4), 0x0061);
    mdio_write(&h, 1, 0, 0x1000);
    assert_eq!(mdio_read(&h, 1, 0), 0x1000);
    mdio_write(&h, 1, 0, 0x1200); // restart negotiation: completes, clears itself
    assert_eq!(mdio_read(&h, 1, 0), 0x1000);
    assert_eq!(mdio_read(&h, 1, 1), 0x782d);
    // A write to another PHY changes nothing here.
    mdio_write(&h, 2, 4, 0x0021);
    assert_eq!(mdio_read(&h, 1, 4), 0x0061);
    // Reset restores the defaults and clears itself.
    mdio_write(&h, 1, 0, 0x8000);
    assert_eq!(mdio_read(&h, 1, 0), 0x3000);
    assert_eq!(mdio_read(&h, 1, 4), 0x01e1);
    // Forced mode: no negotiation to report.
    mdio_write(&h, 1, 0, 0x2100);
    assert_eq!(mdio_read(&h, 1, 1), 0x7809 | 0x0004);
    assert_eq!(mdio_read(&h, 1, 5), 0);
}

#[test]
fn phy_link_changes_latch_low() {
    let h = harness();
    h.core.lock().unwrap().set_link(false);
    assert_eq!(mdio_read(&h, 1, 1), 0x7809);
    assert_eq!(mdio_read(&h, 1, 5), 0);
    h.core.lock().unwrap().set_link(true);
    assert_eq!(mdio_read(&h, 1, 1), 0x782d);
    assert_eq!(mdio_read(&h, 1, 5), 0x41e1);
    // Down and up again between reads: the drop is reported once.
    h.core.lock().unwrap().set_link(false);
    h.core.lock().unwrap().set_link(true);
    assert_eq!(mdio_read(&h, 1, 1) & 0x0004, 0);
    assert_eq!(mdio_read(&h, 1, 1) & 0x0004, 0x0004);
}

// ---- Saved state -------------------------------------------------------------------------------------------

/// A card mid-operation: the filter loaded with a multicast address, a frame received (the
/// receive list at its second descriptor), a half-sent TX frame (second segment still host-owned),
/// CSR7 enabled, the general-purpose timer 5 ms into a continuous 100-unit period, a serial ROM
/// read of word 10 stopped right after its command, and the latency timer set.
fn mid_operation() -> Harness {
    let mut h = filtering_harness();
    h.setup_perfect(TX_RING, &[MCAST]);
    // A frame received, the receive list at its second descriptor.
    assert_eq!(h.receive(&frame(MAC, 60)), RxOutcome::Delivered);
    // A half-sent TX frame (second segment host-owned), the timer running, CSR7 enabled.
    h.poke(BUFFERS + 0x9000, &frame(OTHER, 200));
    h.desc(TX_RING + 16, DES0_OWN, TDES1_FS | 100, BUFFERS + 0x9000, 0);
    h.desc(TX_RING + 32, 0, TDES1_LS | 100, BUFFERS + 0x9000 + 100, 0);
    h.set_csr(CSR1, 0);
    h.set_csr(CSR7, 0x0001_ebef);
    h.set_csr(CSR11, CSR11_CON | 100);
    h.clock.advance(Duration::from_millis(5));
    // An SROM read stopped after its command, an MDIO read in its preamble.
    h.set_csr(CSR9, EE_ENB & !EE_CS);
    h.set_csr(CSR9, EE_ENB);
    for bit in [1, 1, 0, 0, 0, 1, 0, 1, 0] {
        // READ of word 10
        let d = if bit != 0 { EE_DATA_WRITE } else { 0 };
        h.set_csr(CSR9, EE_ENB | d);
        h.set_csr(CSR9, EE_ENB | d | EE_SHIFT_CLK);
    }
    h.set_cfg(0x0c, 0x0000_4008);
    h
}

/// Clocks out the rest of the serial ROM read [`mid_operation`] left pending.
fn finish_srom_read(h: &Harness) -> u16 {
    let mut v = 0u16;
    h.set_csr(CSR9, EE_ENB);
    for _ in 0..16 {
        h.set_csr(CSR9, EE_ENB | EE_SHIFT_CLK);
        v = v << 1 | u16::from(h.csr(CSR9) & EE_DATA_READ != 0);
        h.set_csr(CSR9, EE_ENB);
    }
    h.set_csr(CSR9, EE_ENB & !EE_CS);
    v
}

#[test]
fn state_round_trips_mid_operation() {
    let h = mid_operation();
    let s = h.tulip.state();

    // The VMM restores guest memory alongside.
    let mut g = filtering_harness();
    *g.ram.0.lock().unwrap() = h.ram.0.lock().unwrap().clone();
    g.tulip.restore(&s).unwrap();
    assert_eq!(g.tulip.state(), s);
    for n in [0, 3, 4, 5, 6, 7, 8, 11, 12, 15] {
        assert_eq!(g.csr(n), h.csr(n), "CSR{n}");
    }
    assert_eq!(g.irq.is_high(), h.irq.is_high());
    assert_eq!(g.cfg(0x0c), 0x4008);
    assert_eq!(
        *g.timer.armed.lock().unwrap(),
        Some(Duration::from_nanos(100 * 204_800 - 5_000_000))
    );
    // Both finish the SROM read the same way.
    let word10 = finish_srom_read(&h);
    assert_eq!(finish_srom_read(&g), word10);
    assert_eq!(read_eeprom(&g, 10, 6) as u16, word10);
    // The filter and the lists came along.
    for (dest, want) in [(MCAST, RxOutcome::Delivered), (OTHER, RxOutcome::Filtered)] {
        assert_eq!(g.receive(&frame(dest, 60)), want);
    }
    assert_eq!(g.core.lock().unwrap().rx_current, RX_RING + 32);
    g.poke(TX_RING + 32, &DES0_OWN.to_le_bytes());
    g.set_csr(CSR1, 0);
    assert_eq!(g.sent(), vec![frame(OTHER, 200)]);
    // The restored MDIO interface works.
    assert_eq!(mdio_read(&g, 1, 2), 0x2000);
}

#[test]
fn state_round_trips_through_cbor() {
    let mut h = mid_operation();
    // Automatic transmit polling while the transmit process is suspended comes along too.
    h.set_csr(CSR0, 0x01a0_8000 | 1 << CSR0_TAP_SHIFT);
    let s = h.tulip.state();
    assert_eq!(s.core.tx_state, TS_SUSPENDED);

    // The VMM restores guest memory alongside.
    let mut g = filtering_harness();
    *g.ram.0.lock().unwrap() = h.ram.0.lock().unwrap().clone();
    g.tulip.restore(&cbor_round_trip(&s)).unwrap();
    assert_eq!(g.tulip.state(), s);
    assert_eq!(g.tulip.mapped_at(), h.tulip.mapped_at());
    for n in [0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15] {
        assert_eq!(g.csr(n), h.csr(n), "CSR{n}");
    }
    for off in (0..0x100).step_by(4) {
        assert_eq!(g.cfg(off), h.cfg(off), "config offset {off:#x}");
    }
    assert_eq!(g.irq.is_high(), h.irq.is_high());
    assert_eq!(finish_srom_read(&g), finish_srom_read(&h));
    // The same frames are received into the same descriptors and buffers.
    for dest in [MCAST, OTHER, MAC, BROADCAST] {
        let f = frame(dest, 100);
        assert_eq!(g.receive(&f), h.receive(&f), "{dest:02x?}");
    }
    assert_eq!(
        g.core.lock().unwrap().rx_current,
        h.core.lock().unwrap().rx_current
    );
    // The guest hands over the second TX segment; the automatic poll sends the frame on both.
    for m in [&g, &h] {
        m.poke(TX_RING + 32, &DES0_OWN.to_le_bytes());
        let d = m.timer.armed.lock().unwrap().expect("timer armed");
        m.clock.advance(d);
        m.core.lock().unwrap().timer_expired();
        assert_eq!(m.sent(), vec![frame(OTHER, 200)]);
    }
    assert_eq!(*g.ram.0.lock().unwrap(), *h.ram.0.lock().unwrap());
    assert_eq!(g.csr(CSR5), h.csr(CSR5));
    assert_eq!(g.irq.is_high(), h.irq.is_high());
}

#[test]
fn a_stopped_timer_keeps_its_unit_across_a_restore() {
    let h = harness();
    h.set_csr(CSR6, CSR6_PS);
    h.set_csr(CSR11, 10);
    h.set_csr(CSR11, 0);
    let s = h.tulip.state();
    assert_eq!(
        (s.core.gpt_remaining_ns, s.core.gpt_unit_ns),
        (0, GPT_UNIT_100MBPS_NS)
    );
    let mut g = harness();
    g.tulip.restore(&cbor_round_trip(&s)).unwrap();
    assert_eq!(g.tulip.state(), s);
}

#[test]
fn restore_refuses_inconsistent_state_and_changes_nothing() {
    let mut h = harness();
    h.set_csr(CSR7, 0x0001_ebef);
    let good = h.tulip.state();
    for (what, mutate) in [
        (
            "receive process state",
            Box::new(|s: &mut TulipState| s.core.rx_state = 5) as Box<dyn Fn(&mut TulipState)>,
        ),
        (
            "transmit process state",
            Box::new(|s: &mut TulipState| s.core.tx_state = 1),
        ),
        (
            "filter mode",
            Box::new(|s: &mut TulipState| s.core.filter.mode = 4),
        ),
        (
            "serial ROM address",
            Box::new(|s: &mut TulipState| s.core.srom.addr = 64),
        ),
        (
            "MII management phase",
            Box::new(|s: &mut TulipState| s.core.mii.phase = 9),
        ),
    ] {
        let mut bad = good.clone();
        bad.config[0x0c] = 0x10;
        mutate(&mut bad);
        assert_eq!(
            h.tulip.restore(&bad),
            Err(TulipStateError::OutOfRange(what))
        );
        assert_eq!(h.tulip.state(), good);
    }
}

#[test]
fn short_transmit_frames_are_padded_unless_dpd() {
    let h = harness();
    let arp = frame(BROADCAST, 42);
    h.poke(BUFFERS, &arp);
    h.desc(TX_RING, DES0_OWN, TDES1_FS | TDES1_LS | 42, BUFFERS, 0);
    h.desc(
        TX_RING + 16,
        DES0_OWN,
        TDES1_FS | TDES1_LS | TDES1_DPD | 42,
        BUFFERS,
        0,
    );
    h.desc(
        TX_RING + 32,
        DES0_OWN,
        TDES1_FS | TDES1_LS | DES1_ER,
        BUFFERS,
        0,
    );
    h.up(RX_RING, TX_RING, 0);
    let mut padded = arp.clone();
    padded.resize(60, 0);
    assert_eq!(
        h.sent(),
        vec![padded, arp],
        "and the empty frame sends nothing"
    );
    assert_eq!(h.word(TX_RING + 32), 0);
}

// ---- Linux's tulip driver, start to finish ---------------------------------------------------------

/// Linux's tulip_find_mii, tulip_up, set_rx_mode, start_xmit, the interrupt handler, tulip_rx,
/// tulip_refill_rx and tulip_check_duplex as register sequences, with their rings.
#[test]
fn linux_tulip_driver_sequence() {
    const VALID_INTRS: u32 = 0x0001_ebef;
    const RX_N: u32 = 8;
    const TX_N: u32 = 8;
    const PKT_BUF_SZ: u32 = 1536 + 4;
    let mut h = harness();
    let rx_buf = |i: u32| BUFFERS + i * 2048;
    let tx_buf = |i: u32| BUFFERS + 0x20000 + i * 2048;

    // tulip_init_one: stop_rxtx (nothing running), clear CSR8, read and parse the SROM.
    assert_eq!(h.csr(CSR6) & (CSR6_SR | CSR6_ST), 0);
    h.csr(CSR8);
    let (_, ee) = linux_eeprom(&h);
    assert_eq!(&ee[20..26], &MAC);
    // tulip_select_media(dev, 2) for the MII leaf: GP directions, then BMCR of MII address
    // phys[0] = 0 (not found yet) polled for reset: nothing there, all ones, ten times.
    h.set_csr(CSR12, 0x100);
    h.csr(CSR12);
    for _ in 0..10 {
        assert_eq!(mdio_read(&h, 0, 0), 0xffff);
    }
    // tulip_find_mii.
    let mut phys = Vec::new();
    for phyn in 1..=32u32 {
        let phy = phyn & 0x1f;
        let status = mdio_read(&h, phy, 1);
        if (status & 0x8301) == 0x8001 || ((status & 0x8000) == 0 && (status & 0x7800) != 0) {
            phys.push(phy);
            let bmcr = mdio_read(&h, phy, 0);
            assert_eq!(
                mdio_read(&h, phy, 4),
                0x01e1,
                "advertising what the SROM says"
            );
            let new_bmcr =
                (bmcr | 0x1000) & !(0x0080 | 0x0100 | 0x0400 | 0x0800 | 0x2000 | 0x4000 | 0x8000);
            if new_bmcr != bmcr {
                mdio_write(&h, phy, 0, new_bmcr);
            }
        }
    }
    assert_eq!(phys, vec![1]);
    h.set_csr(CSR12, 0x100);

    // tulip_open -> tulip_init_ring: ring mode, buffer 2 holding the next descriptor's address.
    for i in 0..RX_N {
        let wrap = if i == RX_N - 1 { DES1_ER } else { 0 };
        let next = if i == RX_N - 1 {
            RX_RING
        } else {
            RX_RING + 16 * (i + 1)
        };
        h.desc(
            RX_RING + 16 * i,
            DES0_OWN,
            PKT_BUF_SZ | wrap,
            rx_buf(i),
            next,
        );
    }
    for i in 0..TX_N {
        let next = if i == TX_N - 1 {
            TX_RING
        } else {
            TX_RING + 16 * (i + 1)
        };
        h.desc(TX_RING + 16 * i, 0, 0, 0, next);
    }
    // tulip_up.
    h.set_csr(CSR6, 0x0004_0000);
    h.set_csr(CSR0, 1);
    h.cfg(0x04);
    h.set_csr(CSR0, 0x01a0_8000);
    h.set_csr(CSR3, RX_RING);
    h.set_csr(CSR4, TX_RING);
    let mut setup = [0xffu8; SETUP_FRAME_LEN];
    put_address(&mut setup, 15 * 12, &MAC);
    let setup_buf = BUFFERS + 0x40000;
    h.poke(setup_buf, &setup);
    h.desc(
        TX_RING,
        DES0_OWN,
        0x0800_0000 | 192,
        setup_buf,
        TX_RING + 16,
    );
    let mut cur_tx = 1u32;
    // tulip_select_media(dev, 1).
    h.set_csr(CSR12, 0x100);
    h.csr(CSR12);
    for _ in 0..10 {
        mdio_read(&h, 0, 0);
    }
    mdio_write(&h, 1, 4, 0x01e1);
    let mut csr6 = 0x020e_0000u32;
    // tulip_stop_rxtx, then start the transmitter for the setup frame.
    assert_eq!(h.csr(CSR6) & (CSR6_SR | CSR6_ST), 0);
    h.set_csr(CSR6, csr6 | CSR6_ST);
    assert_eq!(h.word(TX_RING), TDES0_SETUP_DONE);
    h.set_csr(CSR5, VALID_INTRS);
    h.set_csr(CSR7, VALID_INTRS);
    h.set_csr(CSR6, csr6 | CSR6_ST | CSR6_SR);
    h.csr(CSR6);
    h.set_csr(CSR2, 0);
    assert!(!h.irq.is_high());
    assert_eq!(h.rs(), RS_WAITING);
    assert_eq!(h.ts(), TS_SUSPENDED);

    // set_rx_mode with one multicast group: perfect filter, a dummy descriptor first.
    csr6 = h.csr(CSR6) & !0x00d5;
    let mut f = [0xffu8; SETUP_FRAME_LEN];
    put_address(&mut f, 0, &MCAST);
    put_address(&mut f, 15 * 12, &MAC);
    h.poke(setup_buf, &f);
    let dummy = cur_tx;
    let entry = cur_tx + 1;
    cur_tx += 2;
    h.poke(TX_RING + 16 * dummy + 4, &0u32.to_le_bytes());
    h.poke(TX_RING + 16 * dummy + 8, &0u32.to_le_bytes());
    h.poke(
        TX_RING + 16 * entry + 4,
        &(0x0800_0000u32 | 192).to_le_bytes(),
    );
    h.poke(TX_RING + 16 * entry + 8, &setup_buf.to_le_bytes());
    h.poke(TX_RING + 16 * entry, &DES0_OWN.to_le_bytes());
    h.poke(TX_RING + 16 * dummy, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR1, 0);
    h.set_csr(CSR6, csr6);
    assert_eq!(h.word(TX_RING + 16 * entry), TDES0_SETUP_DONE);

    // The interrupt handler (non-NAPI), returning what it found.
    let interrupt = |h: &Harness, rx_seen: &mut Vec<Vec<u8>>, cur_rx: &mut u32| -> u32 {
        let mut all = 0;
        loop {
            let csr5 = h.csr(CSR5);
            if csr5 & (CSR5_NIS | CSR5_AIS) == 0 {
                break;
            }
            all |= csr5;
            h.set_csr(CSR5, csr5 & 0x0001_ffff);
            if csr5 & (CSR5_RI | CSR5_RU) != 0 {
                // tulip_rx and tulip_refill_rx (no poll demand).
                loop {
                    let at = RX_RING + 16 * (*cur_rx % RX_N);
                    let status = h.word(at);
                    if status & DES0_OWN != 0 {
                        break;
                    }
                    let pkt_len = ((status >> 16) & 0x7ff) - 4;
                    let mask = 0x3800_0010 | 0x0002 | 0x0040 | 0x0800 | 0x4000 | 0x0300;
                    assert_eq!(status & mask, 0x0300, "a whole good frame");
                    assert!(pkt_len <= 1518);
                    rx_seen.push(h.peek(rx_buf(*cur_rx % RX_N), pkt_len as usize));
                    h.poke(at, &DES0_OWN.to_le_bytes());
                    *cur_rx += 1;
                }
            }
            if csr5 & CSR5_AIS != 0 {
                h.set_csr(CSR5, 0x0800_f7ba);
            }
        }
        h.csr(CSR8);
        all
    };
    let mut rx_seen = Vec::new();
    let mut cur_rx = 0u32;
    interrupt(&h, &mut rx_seen, &mut cur_rx);
    assert!(!h.irq.is_high());

    // tulip_start_xmit: one frame, no interrupt flag; TU brings the cleanup interrupt.
    let out = frame(OTHER, 98);
    h.poke(tx_buf(cur_tx), &out);
    let e = TX_RING + 16 * cur_tx;
    h.poke(e + 8, &tx_buf(cur_tx).to_le_bytes());
    h.poke(e + 4, &(98u32 | 0x6000_0000).to_le_bytes());
    h.poke(e, &DES0_OWN.to_le_bytes());
    h.set_csr(CSR1, 0);
    assert_eq!(h.sent(), vec![out]);
    assert!(h.irq.is_high());
    let seen = interrupt(&h, &mut rx_seen, &mut cur_rx);
    assert_ne!(seen & CSR5_TU, 0);
    assert_eq!(h.word(e), 0, "tx_errors stay at zero");
    assert!(!h.irq.is_high());

    // Frames from the host, more than the ring holds: the ring fills, RU, then the handler
    // refills and the held frame goes in after rx_ready.
    let frames: Vec<Vec<u8>> = (0..RX_N + 3)
        .map(|i| {
            frame(
                if i % 2 == 0 { MAC } else { BROADCAST },
                60 + i as usize * 100,
            )
        })
        .collect();
    let mut delivered = 0;
    for f in &frames {
        match h.receive(f) {
            RxOutcome::Delivered => delivered += 1,
            RxOutcome::NoBuffer => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(delivered, RX_N as usize);
    assert_eq!(h.receive(&frames[delivered]), RxOutcome::NoBuffer);
    assert!(h.irq.is_high());
    let ready = h.ready_count();
    let seen = interrupt(&h, &mut rx_seen, &mut cur_rx);
    assert_ne!(seen & CSR5_RI, 0);
    assert_ne!(seen & CSR5_RU, 0);
    assert!(
        h.ready_count() > ready,
        "refilling the ring is noticed without CSR2"
    );
    for f in &frames[delivered..] {
        assert_eq!(h.receive(f), RxOutcome::Delivered);
    }
    interrupt(&h, &mut rx_seen, &mut cur_rx);
    assert_eq!(rx_seen, frames);
    // Filtered: another station's unicast and an unsubscribed group.
    assert_eq!(h.receive(&frame(OTHER, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(MCAST2, 60)), RxOutcome::Filtered);
    assert_eq!(h.receive(&frame(MCAST, 60)), RxOutcome::Delivered);

    // The media timer: tulip_check_duplex decides 100 Mb/s full duplex and restarts the chip.
    let bmsr = mdio_read(&h, 1, 1);
    let lpa = mdio_read(&h, 1, 5);
    assert_ne!(bmsr & 0x0004, 0);
    let negotiated = lpa & 0x01e1;
    assert_ne!(negotiated & 0x0380, 0, "LPA_100: TxThreshold cleared");
    assert_ne!(negotiated & 0x0140, 0, "full duplex");
    let new_csr6 = (csr6 & !CSR6_TTM) | CSR6_FD;
    let cur = h.csr(CSR6);
    h.set_csr(CSR6, cur & !(CSR6_SR | CSR6_ST));
    assert_eq!(
        h.csr(CSR5) & 0x007e_0000,
        0,
        "tulip_stop_rxtx succeeds on its first poll"
    );
    h.set_csr(CSR6, new_csr6 | CSR6_SR | CSR6_ST);
    assert_eq!(h.rs(), RS_WAITING);
    interrupt(&h, &mut rx_seen, &mut cur_rx);
    assert!(!h.irq.is_high());
    assert_eq!(h.csr(CSR6) & CSR6_FD, CSR6_FD);
}
