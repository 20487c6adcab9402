//! Network cards: what `--nic` says, the MAC addresses, and the glue between an emulated DEC
//! 21140 and its host backend: transmitted frames go straight to the backend on the vCPU thread;
//! received frames come from the event loop, which holds a frame back while the guest has no
//! receive buffers (instead of dropping it) and stops reading the backend until the card says
//! it can take frames again.

use std::fmt;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use devices::tulip::{FrameSink, RxNotify, RxOutcome, TulipCore};
use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::event_loop::DeviceGate;
use crate::net::{BackendSpec, NetBackend, MAX_FRAME};
use crate::timer::TimerFd;

/// At most this many NICs (PCI slots 10-13).
pub const MAX_NICS: usize = 4;
/// Virtual Server's OUI (Microsoft's 00:03:FF), the default prefix of every MAC.
pub const VIRTUAL_SERVER_OUI: [u8; 3] = [0x00, 0x03, 0xff];

/// The card model; only the DEC 21140 exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicModel {
    Tulip,
}

/// One `--nic` value: `tulip,backend=SPEC[,mac=XX:XX:XX:XX:XX:XX][,pcap=PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    pub model: NicModel,
    pub backend: BackendSpec,
    pub mac: Option<[u8; 6]>,
    pub pcap: Option<PathBuf>,
}

/// A MAC address written as six colon- (or dash-) separated hex bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let bad =
        || format!("invalid MAC address {s:?}: expected six hex bytes like 00:03:ff:12:34:56");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "MAC address {s} is a multicast address (lowest bit of the first byte set); a card needs a unicast one"
        ));
    }
    if mac == [0; 6] {
        return Err("MAC address 00:00:00:00:00:00 is not a valid card address".into());
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl FromStr for NicSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut items = s.split(',');
        let model = match items.next().unwrap_or("") {
            "tulip" | "21140" | "dec21140" => NicModel::Tulip,
            m => {
                return Err(format!(
                    "unknown NIC model {m:?}: the only model is tulip (DEC 21140); e.g. tulip,backend=passt"
                ))
            }
        };
        let (mut backend, mut mac, mut pcap) = (None, None, None);
        for item in items {
            let (key, value) = item.split_once('=').ok_or_else(|| {
                format!("NIC option {item:?} is not KEY=VALUE (keys: backend, mac, pcap)")
            })?;
            match key {
                "backend" => {
                    backend = Some(value.parse::<BackendSpec>().map_err(|e| e.to_string())?)
                }
                "mac" => mac = Some(parse_mac(value)?),
                "pcap" if !value.is_empty() => pcap = Some(PathBuf::from(value)),
                _ => {
                    return Err(format!(
                        "unknown NIC option {key:?} (keys: backend, mac, pcap)"
                    ))
                }
            }
        }
        Ok(NicSpec {
            model,
            backend: backend.ok_or(
                "a NIC needs a backend: backend=tap:NAME, passt, socket:DIR, udp:LOCAL@PEER or none",
            )?,
            mac,
            pcap,
        })
    }
}

impl fmt::Display for NicSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "tulip,backend={}", self.backend)?;
        if let Some(m) = &self.mac {
            write!(f, ",mac={}", format_mac(m))?;
        }
        if let Some(p) = &self.pcap {
            write!(f, ",pcap={}", p.display())?;
        }
        Ok(())
    }
}

/// The default MAC of NIC `index` of a VM known by `identity` (its name, or what it boots):
/// Virtual Server's 00:03:FF followed by 24 bits of an FNV-1a hash, so the same VM gets the
/// same addresses on every run and different VMs almost surely differ.
pub fn default_mac(identity: &str, index: usize) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in identity.bytes().chain([0, index as u8]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let t = h.to_be_bytes();
    let [a, b, c] = VIRTUAL_SERVER_OUI;
    [a, b, c, t[0] ^ t[3] ^ t[6], t[1] ^ t[4] ^ t[7], t[2] ^ t[5]]
}

/// Transmitted frames go to the backend.
pub struct BackendSink(pub Arc<dyn NetBackend>);

impl FrameSink for BackendSink {
    fn send(&mut self, frame: &[u8]) {
        self.0.send(frame);
    }
}

/// The card's "I can receive again" signal: an eventfd the [`NetRx`] subscriber watches.
pub struct RxReady(pub EventFd);

impl RxNotify for RxReady {
    fn rx_ready(&self) {
        let _ = self.0.write(1);
    }
}

/// Frames taken from the backend per wake-up before other event sources get a turn.
const RX_BATCH: usize = 64;
/// While a frame waits for receive buffers, look again after this long (doubling up to
/// [`RETRY_MAX`]): a real 21140 re-reads its descriptor when the next frame arrives, so a guest
/// that refills its ring without a poll demand must still get the frame.
const RETRY_MIN: Duration = Duration::from_millis(1);
const RETRY_MAX: Duration = Duration::from_millis(100);

/// Moves frames from a backend into a card, on the event loop.
pub struct NetRx {
    core: Arc<Mutex<TulipCore>>,
    backend: Arc<dyn NetBackend>,
    ready: Arc<RxReady>,
    retry: Arc<TimerFd>,
    retry_after: Duration,
    buf: Vec<u8>,
    /// Length of the frame in `buf` that waits for receive buffers.
    held: Option<usize>,
    /// Whether the backend's fd is in the epoll set.
    watching: bool,
    dead: bool,
    /// While closed (the VM is paused) frames stay in the backend.
    gate: Arc<DeviceGate>,
    woken: Arc<EventFd>,
}

impl NetRx {
    pub fn new(
        core: Arc<Mutex<TulipCore>>,
        backend: Arc<dyn NetBackend>,
        ready: Arc<RxReady>,
        gate: Arc<DeviceGate>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            woken: gate.waker()?,
            gate,
            core,
            backend,
            ready,
            retry: TimerFd::new()?,
            retry_after: RETRY_MIN,
            buf: vec![0; MAX_FRAME],
            held: None,
            watching: false,
            dead: false,
        })
    }

    /// Offers the held frame; true when the card took it (or dropped it for good).
    fn offer_held(&mut self) -> bool {
        let Some(len) = self.held else { return true };
        let outcome = self.core.lock().unwrap().receive(&self.buf[..len]);
        if matches!(outcome, RxOutcome::NoBuffer) {
            return false;
        }
        self.held = None;
        self.retry_after = RETRY_MIN;
        self.retry.set(None);
        true
    }

    /// Reads frames until the backend is empty, the batch is done, or the card is full.
    fn drain(&mut self) {
        for _ in 0..RX_BATCH {
            match self.backend.recv(&mut self.buf) {
                Ok(Some(len)) => {
                    self.held = Some(len.min(self.buf.len()));
                    if !self.offer_held() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    log::error!(
                        "network backend {} failed: {e}; the card receives nothing more",
                        self.backend.describe()
                    );
                    self.dead = true;
                    return;
                }
            }
        }
    }

    /// Watches the backend only while it can be read from: no held frame, not dead, not
    /// paused.
    fn rewatch(&mut self, ops: &mut EventOps) {
        let Some(fd) = self.backend.rx_fd() else {
            return;
        };
        let want = self.held.is_none() && !self.dead && !self.gate.is_closed();
        if want && !self.watching {
            self.watching = ops.add(Events::new_raw(fd, EventSet::IN)).is_ok();
        } else if !want && self.watching {
            let _ = ops.remove(Events::empty_raw(fd));
            self.watching = false;
        }
        if self.held.is_some() && !self.gate.is_closed() {
            self.retry.set(Some(self.retry_after));
        }
    }

    fn fd(&self) -> RawFd {
        self.backend.rx_fd().unwrap_or(-1)
    }
}

impl MutEventSubscriber for NetRx {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.ready.0, EventSet::IN));
        let _ = ops.add(Events::new(&*self.retry, EventSet::IN));
        let _ = ops.add(Events::new(&*self.woken, EventSet::IN));
        self.rewatch(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.ready.0.as_raw_fd() {
            let _ = self.ready.0.read();
        } else if fd == self.woken.as_raw_fd() {
            let _ = self.woken.read();
        } else if fd == self.retry.as_raw_fd() {
            if !self.retry.consume() {
                return;
            }
            if self.held.is_some() {
                self.retry_after = (self.retry_after * 2).min(RETRY_MAX);
            }
        } else if fd != self.fd() {
            return;
        }
        if !self.gate.is_closed() && self.offer_held() && !self.dead {
            self.drain();
        }
        self.rewatch(ops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_specs_parse_and_print() {
        let n: NicSpec = "tulip,backend=none,mac=00:03:FF:01:02:03,pcap=/tmp/x.pcap"
            .parse()
            .unwrap();
        assert_eq!(n.model, NicModel::Tulip);
        assert_eq!(n.backend, BackendSpec::None);
        assert_eq!(n.mac, Some([0, 3, 0xff, 1, 2, 3]));
        assert_eq!(n.pcap, Some(PathBuf::from("/tmp/x.pcap")));
        assert_eq!(
            n.to_string(),
            "tulip,backend=none,mac=00:03:ff:01:02:03,pcap=/tmp/x.pcap"
        );
        let p: NicSpec = "tulip,backend=passt".parse().unwrap();
        assert_eq!(p.to_string().parse::<NicSpec>().unwrap(), p);
    }

    #[test]
    fn bad_nic_specs_say_what_is_wrong() {
        let err = |s: &str| s.parse::<NicSpec>().unwrap_err();
        assert!(err("e1000,backend=none").contains("only model is tulip"));
        assert!(err("tulip").contains("needs a backend"));
        assert!(err("tulip,backend=none,speed=10").contains("unknown NIC option \"speed\""));
        assert!(err("tulip,none").contains("not KEY=VALUE"));
        assert!(err("tulip,backend=none,mac=01:00:5e:00:00:01").contains("multicast"));
        assert!(err("tulip,backend=none,mac=00:03:ff:01:02").contains("six hex bytes"));
        assert!(err("tulip,backend=none,mac=00:03:ff:01:02:xyz").contains("six hex bytes"));
        assert!(err("tulip,backend=bogus").contains("bogus"));
    }

    #[test]
    fn default_macs_are_virtual_server_ones_stable_and_distinct() {
        let a0 = default_mac("web", 0);
        assert_eq!(&a0[..3], &VIRTUAL_SERVER_OUI);
        assert_eq!(a0, default_mac("web", 0));
        assert_ne!(a0, default_mac("web", 1));
        assert_ne!(a0, default_mac("db", 0));
        // Unicast, locally stable.
        assert_eq!(a0[0] & 1, 0);
    }
}
