//! Network backends: where the frames of an emulated NIC go on the host, and where the frames
//! it receives come from.
//!
//! A NIC's `--nic tulip,backend=SPEC` names one [`BackendSpec`]; [`open`] turns it into a
//! [`NetBackend`]. The card hands every transmitted Ethernet frame (no CRC) to
//! [`NetBackend::send`] on the vCPU thread that set the transmit going; the event loop watches
//! [`NetBackend::rx_fd`] and takes received frames one at a time with [`NetBackend::recv`].
//! Nothing here ever blocks the guest for long: a frame the host side cannot take right now is
//! dropped and counted ([`NetStats::tx_dropped`]), as a congested Ethernet would drop it, and
//! the guest's TCP resends it.
//!
//! The backends, for users:
//!
//! - `none`: a card with no cable. Transmitted frames are dropped (counted as dropped); nothing
//!   is ever received.
//! - `tap:NAME`: a Linux TAP interface, the classic way to put a VM on a host bridge or give it
//!   a routed address. An existing interface is attached; the best way to have one is to create
//!   it once, as root, for the user who runs kettle:
//!   `ip tuntap add dev kt0 mode tap user $USER`, then `ip link set kt0 up` and either
//!   `ip addr add 192.168.100.1/24 dev kt0` or `ip link set kt0 master br0`. When the interface
//!   does not exist and kettle has `CAP_NET_ADMIN` (root), the kernel creates it and kettle
//!   brings it up; such an interface disappears when kettle exits. See [`tap`].
//! - `passt`: user-mode networking without root, by the `passt` program (Debian package
//!   `passt`): kettle starts `passt` as its child on a socket pair; passt answers the guest's
//!   DHCP, ARP and NDP itself and turns the guest's TCP/UDP/ICMP traffic into ordinary socket
//!   calls of an unprivileged host process. The guest's gateway address reaches the host's
//!   loopback. No ports are forwarded into the guest. `passt:PATH` connects to a passt the user
//!   started with `passt -s PATH` (for options kettle does not pass). See [`passt`].
//! - `socket:DIR`: an Ethernet hub made of unix datagram sockets in directory DIR, to connect
//!   VMs on the same host to each other without any host interface. Every NIC on the hub
//!   receives every frame the other members send. See [`socket`].
//! - `udp:LOCAL@PEER`: a point-to-point cable over UDP: each frame is one datagram from LOCAL
//!   to PEER (for example two kettles, or kettle and QEMU's `-netdev dgram`). See [`socket`].
//!
//! Any backend can be wrapped with `pcap=FILE` ([`pcap`]): every frame in both directions is
//! written to FILE in libpcap format, for `tcpdump -r FILE` or Wireshark.

pub mod passt;
pub mod pcap;
pub mod socket;
pub mod tap;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The largest frame a backend carries (and the least buffer a caller of [`NetBackend::recv`]
/// passes). Larger than any Ethernet frame the DEC 21140 sends or receives.
pub const MAX_FRAME: usize = 65536;

/// One host-side network attachment of a NIC. Methods take &self: `send` runs on vCPU threads
/// (the guest's transmit), `recv` on the event-loop thread, concurrently.
pub trait NetBackend: Send + Sync {
    /// Sends one Ethernet frame (no CRC). Never blocks for long: a frame that cannot be queued
    /// now is dropped and counted (see stats). Errors are counted and logged rate-limited, not
    /// returned.
    fn send(&self, frame: &[u8]);
    /// Reads one frame into `buf` (callers pass at least MAX_FRAME bytes). Ok(None) when
    /// nothing waits. Err only for a dead backend (peer gone for good), which the caller reports
    /// once and stops polling.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    /// The fd that becomes readable when `recv` has something (None: never receives, e.g.
    /// `none`).
    fn rx_fd(&self) -> Option<RawFd>;
    /// Human-readable description for logs and errors: "tap kt0", "passt (pid 1234)",
    /// "socket hub /tmp/x", ...
    fn describe(&self) -> String;
    /// Counters: frames/bytes sent and received, frames dropped on send.
    fn stats(&self) -> NetStats;
}

/// What a backend has carried since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames the guest transmitted that went out (for the hub: to however many members).
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Transmitted frames that could not be delivered (host side full, gone or failing; for
    /// the hub: counted once per member that missed the frame).
    pub tx_dropped: u64,
    /// Frames handed to the card.
    pub rx_frames: u64,
    pub rx_bytes: u64,
}

/// What the user asked for: the `backend=` value of a `--nic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// No cable.
    None,
    /// A TAP interface of this name.
    Tap(String),
    /// passt: spawned by kettle (None) or already listening on this unix socket.
    Passt(Option<PathBuf>),
    /// A unix-datagram hub in this directory.
    Socket(PathBuf),
    /// A UDP point-to-point link.
    Udp { local: SocketAddr, peer: SocketAddr },
}

const ACCEPTED: &str = "none, tap:NAME, passt, passt:SOCKET, socket:DIR or udp:LOCAL@PEER";

impl FromStr for BackendSpec {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let missing = |backend, what, example| NetError::MissingArgument {
            backend,
            what,
            example,
        };
        if s == "none" {
            return Ok(BackendSpec::None);
        }
        if s == "passt" {
            return Ok(BackendSpec::Passt(None));
        }
        let Some((kind, arg)) = s.split_once(':') else {
            return Err(NetError::UnknownBackend(s.to_string()));
        };
        match kind {
            "tap" if arg.is_empty() => Err(missing("tap", "an interface name", "tap:kt0")),
            "tap" => {
                tap::validate_name(arg)?;
                Ok(BackendSpec::Tap(arg.to_string()))
            }
            "passt" if arg.is_empty() => Err(missing(
                "passt",
                "the path of passt's socket",
                "passt:/tmp/passt_1.socket",
            )),
            "passt" => Ok(BackendSpec::Passt(Some(PathBuf::from(arg)))),
            "socket" if arg.is_empty() => Err(missing(
                "socket",
                "the hub's directory",
                "socket:/tmp/kettle-hub",
            )),
            "socket" => Ok(BackendSpec::Socket(PathBuf::from(arg))),
            "udp" if arg.is_empty() => Err(missing(
                "udp",
                "LOCAL@PEER",
                "udp:127.0.0.1:5000@127.0.0.1:5001",
            )),
            "udp" => {
                let (local, peer) = arg
                    .split_once('@')
                    .ok_or_else(|| NetError::UdpSyntax(arg.to_string()))?;
                let addr = |which, v: &str| {
                    v.parse::<SocketAddr>().map_err(|_| NetError::UdpAddress {
                        which,
                        value: v.to_string(),
                    })
                };
                let (local, peer) = (addr("local", local)?, addr("peer", peer)?);
                socket::check_udp_addresses(local, peer)?;
                Ok(BackendSpec::Udp { local, peer })
            }
            _ => Err(NetError::UnknownBackend(s.to_string())),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::None => write!(f, "none"),
            BackendSpec::Tap(name) => write!(f, "tap:{name}"),
            BackendSpec::Passt(None) => write!(f, "passt"),
            BackendSpec::Passt(Some(p)) => write!(f, "passt:{}", p.display()),
            BackendSpec::Socket(d) => write!(f, "socket:{}", d.display()),
            BackendSpec::Udp { local, peer } => write!(f, "udp:{local}@{peer}"),
        }
    }
}

/// Why a backend spec is wrong or a backend cannot be opened: one sentence naming the
/// interface, socket or file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    // --- the spec -----------------------------------------------------------------------------
    #[error("unknown network backend `{0}`: expected {ACCEPTED}")]
    UnknownBackend(String),
    #[error("network backend `{backend}:` needs {what} after the colon, as in `{example}`")]
    MissingArgument {
        backend: &'static str,
        what: &'static str,
        example: &'static str,
    },
    #[error("invalid TAP interface name `{name}`: {reason}")]
    TapName { name: String, reason: &'static str },
    #[error(
        "`udp:{0}` is not LOCAL@PEER: expected two IP:PORT addresses joined by @, as in \
         udp:127.0.0.1:5000@127.0.0.1:5001 (IPv6 as [::1]:5000)"
    )]
    UdpSyntax(String),
    #[error(
        "UDP {which} address `{value}` is not IP:PORT: write it as 127.0.0.1:5000 or [::1]:5000"
    )]
    UdpAddress { which: &'static str, value: String },
    #[error("UDP addresses {local} and {peer} mix IPv4 and IPv6: use the same family for both")]
    UdpFamilies { local: SocketAddr, peer: SocketAddr },
    #[error(
        "UDP peer address {0} cannot be sent to: give the peer's IP address and a nonzero port"
    )]
    UdpPeer(SocketAddr),

    // --- tap ----------------------------------------------------------------------------------
    #[error("/dev/net/tun does not exist or has no driver behind it: load the TUN/TAP driver with `modprobe tun`")]
    TunMissing,
    #[error(
        "no permission to open /dev/net/tun: make it readable and writable for your user \
         (distributions ship it with mode 0666) or run kettle as root"
    )]
    TunAccess,
    #[error("cannot open /dev/net/tun: {0}")]
    TunOpen(#[source] io::Error),
    #[error(
        "TAP interface {name} does not exist and kettle may not create it (that needs \
         CAP_NET_ADMIN): create it once as root with `ip tuntap add dev {name} mode tap user {user}` \
         and `ip link set {name} up`, or run kettle as root"
    )]
    TapCannotCreate { name: String, user: String },
    #[error(
        "TAP interface {name} exists but belongs to another user: recreate it for yours with \
         `ip tuntap del dev {name} mode tap; ip tuntap add dev {name} mode tap user {user}`, \
         or run kettle as root"
    )]
    TapNotYours { name: String, user: String },
    #[error(
        "TAP interface {name} is in use by another process (a TAP interface takes one user at \
         a time): stop that process (another kettle or QEMU?) or choose another name"
    )]
    TapBusy { name: String },
    #[error(
        "interface {name} exists but is not a single-queue TAP interface (a TUN, a multi-queue \
         TAP or another kind of interface): choose another name, or recreate it with \
         `ip tuntap add dev {name} mode tap`"
    )]
    TapWrongKind { name: String },
    #[error("cannot attach to TAP interface {name}: {source}")]
    TapAttach {
        name: String,
        #[source]
        source: io::Error,
    },

    // --- passt --------------------------------------------------------------------------------
    #[error(
        "passt not found in PATH: install the passt package (Debian/Ubuntu: `apt install passt`)"
    )]
    PasstNotFound,
    #[error("cannot start passt: {0}")]
    PasstSpawn(#[source] io::Error),
    #[error("passt exited right after it was started ({status}); it said: {stderr}")]
    PasstExited { status: String, stderr: String },
    #[error(
        "cannot connect to passt at {path}: {source}; start it first with `passt -s {path}` \
         (one passt serves one VM)", path = path.display()
    )]
    PasstConnect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // --- socket hub ---------------------------------------------------------------------------
    #[error("cannot use {path} as the hub directory: {source}", path = path.display())]
    HubDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "hub socket path {path} is longer than the 107 bytes a unix socket address holds: \
         use a shorter directory", path = path.display()
    )]
    HubPathTooLong { path: PathBuf },
    #[error(
        "{path} exists and is not a socket; refusing to replace it with this NIC's hub socket",
        path = path.display()
    )]
    HubNotASocket { path: PathBuf },
    #[error(
        "another NIC with MAC {mac} is already on hub {dir} (its socket {path} is live): \
         give this NIC a different `mac=`", dir = dir.display(), path = path.display()
    )]
    HubSameMac {
        mac: String,
        dir: PathBuf,
        path: PathBuf,
    },
    #[error("cannot create hub socket {path}: {source}", path = path.display())]
    HubBind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    // --- udp ----------------------------------------------------------------------------------
    #[error("cannot bind a UDP socket to {local}: {source} (is the port in use, or the address not this host's?)")]
    UdpBind {
        local: SocketAddr,
        #[source]
        source: io::Error,
    },

    // --- pcap ---------------------------------------------------------------------------------
    #[error("cannot create packet capture file {path}: {source}", path = path.display())]
    PcapCreate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Opens the backend; `mac` names this NIC (hub socket file names, logs). `pcap`: wrap it so
/// every frame both ways is captured.
pub fn open(
    spec: &BackendSpec,
    mac: [u8; 6],
    pcap: Option<&Path>,
) -> Result<Arc<dyn NetBackend>, NetError> {
    let backend: Arc<dyn NetBackend> = match spec {
        BackendSpec::None => Arc::new(NoBackend::default()),
        BackendSpec::Tap(name) => Arc::new(tap::Tap::open(name)?),
        BackendSpec::Passt(None) => Arc::new(passt::Passt::spawn()?),
        BackendSpec::Passt(Some(path)) => Arc::new(passt::Passt::connect(path)?),
        BackendSpec::Socket(dir) => Arc::new(socket::Hub::open(dir, mac)?),
        BackendSpec::Udp { local, peer } => Arc::new(socket::Udp::open(*local, *peer)?),
    };
    match pcap {
        Some(path) => Ok(Arc::new(pcap::Capture::new(backend, path)?)),
        None => Ok(backend),
    }
}

/// `none`: a card with no cable.
#[derive(Default)]
pub struct NoBackend {
    counters: Counters,
}

impl NetBackend for NoBackend {
    fn send(&self, _frame: &[u8]) {
        self.counters.dropped(1);
    }
    fn recv(&self, _buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }
    fn describe(&self) -> String {
        "none".into()
    }
    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers.

/// Lock-free counters behind [`NetBackend::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn sent(&self, len: usize) {
        self.tx_frames.fetch_add(1, Ordering::Relaxed);
        self.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
    pub(crate) fn dropped(&self, n: u64) {
        self.tx_dropped.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn received(&self, len: usize) {
        self.rx_frames.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> NetStats {
        NetStats {
            tx_frames: self.tx_frames.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            tx_dropped: self.tx_dropped.load(Ordering::Relaxed),
            rx_frames: self.rx_frames.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Rate limit for one backend's recurring warnings: the first 8, then one in 1024, so a guest
/// (or a broken host side) cannot flood the log.
#[derive(Default)]
pub(crate) struct LogLimit(AtomicU64);

impl LogLimit {
    pub(crate) fn allow(&self) -> bool {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        n < 8 || n.is_multiple_of(1024)
    }
}

/// The MAC as 12 lowercase hex digits (hub socket names).
/// `frame` without the padding after its IPv4 or IPv6 packet when it is a minimum-size frame
/// (the packet's own length field says where it ends); any other frame comes back whole.
pub(crate) fn strip_eth_padding(frame: &[u8]) -> &[u8] {
    use devices::tulip::spec::ETH_MIN_FRAME;
    if frame.len() > ETH_MIN_FRAME || frame.len() < 14 {
        return frame;
    }
    let l3 = &frame[14..];
    let be16 = |i: usize| usize::from(u16::from_be_bytes([l3[i], l3[i + 1]]));
    let (len, min) = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 if l3.len() >= 20 => (be16(2), 20),
        0x86dd if l3.len() >= 40 => (40 + be16(4), 40),
        _ => return frame,
    };
    if len >= min && len < l3.len() {
        &frame[..14 + len]
    } else {
        frame
    }
}

pub(crate) fn mac_hex(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// The MAC as `00:03:ff:12:34:56` (messages).
pub(crate) fn mac_colons(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// True for the errno values that mean "try again later".
pub(crate) fn would_block(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS))
}

/// Sets SO_SNDBUF and SO_RCVBUF (the kernel caps them at net.core.[wr]mem_max); best effort.
pub(crate) fn set_socket_buffers(fd: RawFd, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: setsockopt reads one c_int from a valid pointer; fd is a socket we own.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
}

/// Waits up to `timeout` for `events` on `fd`; returns the revents (0 on timeout).
pub(crate) fn poll_fd(fd: RawFd, events: libc::c_short, timeout: std::time::Duration) -> i16 {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r > 0 {
        p.revents
    } else {
        0
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use std::time::{Duration, Instant};

    /// A fresh directory under the system temp dir, removed on drop. Short names: hub socket
    /// paths must fit 107 bytes.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "kt-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Receives frames from `b` until `want` returns true for one or `timeout` passes; returns
    /// the frame, or None. Bounded by the timeout.
    pub fn recv_until(
        b: &dyn NetBackend,
        timeout: Duration,
        mut want: impl FnMut(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            match b.recv(&mut buf) {
                Ok(Some(n)) => {
                    if want(&buf[..n]) {
                        return Some(buf[..n].to_vec());
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("{} died: {e}", b.describe()),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            if let Some(fd) = b.rx_fd() {
                poll_fd(
                    fd,
                    libc::POLLIN,
                    (deadline - now).min(Duration::from_millis(100)),
                );
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Receives everything `b` has within `quiet` of silence (bounded by 5 s).
    pub fn recv_all(b: &dyn NetBackend, quiet: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match recv_until(b, quiet, |_| true) {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    /// A test frame: destination, source, the local experimental EtherType 0x88b5, payload.
    pub fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(14 + payload.len());
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(payload);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BackendSpec {
        let spec: BackendSpec = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(spec.to_string(), s, "Display round-trips");
        assert_eq!(spec.to_string().parse::<BackendSpec>().unwrap(), spec);
        spec
    }

    fn err(s: &str) -> String {
        match s.parse::<BackendSpec>() {
            Ok(spec) => panic!("{s} parsed as {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_spec_form_parses_and_round_trips() {
        assert_eq!(parse("none"), BackendSpec::None);
        assert_eq!(parse("tap:kt0"), BackendSpec::Tap("kt0".into()));
        assert_eq!(
            parse("tap:fifteen_bytes15"),
            BackendSpec::Tap("fifteen_bytes15".into())
        );
        assert_eq!(parse("passt"), BackendSpec::Passt(None));
        assert_eq!(
            parse("passt:/tmp/passt_1.socket"),
            BackendSpec::Passt(Some("/tmp/passt_1.socket".into()))
        );
        assert_eq!(
            parse("socket:/tmp/hub"),
            BackendSpec::Socket("/tmp/hub".into())
        );
        assert_eq!(
            parse("socket:relative/dir"),
            BackendSpec::Socket("relative/dir".into())
        );
        assert_eq!(
            parse("udp:127.0.0.1:5000@127.0.0.1:5001"),
            BackendSpec::Udp {
                local: "127.0.0.1:5000".parse().unwrap(),
                peer: "127.0.0.1:5001".parse().unwrap(),
            }
        );
        assert_eq!(
            parse("udp:[::1]:5000@[::1]:5001"),
            BackendSpec::Udp {
                local: "[::1]:5000".parse().unwrap(),
                peer: "[::1]:5001".parse().unwrap(),
            }
        );
        // An ephemeral local port is fine; the peer needs a real one.
        parse("udp:0.0.0.0:0@192.0.2.7:5001");
    }

    #[test]
    fn every_spec_error_says_what_is_accepted() {
        let e = err("bogus");
        assert!(e.contains("unknown network backend `bogus`"), "{e}");
        assert!(
            e.contains("tap:NAME") && e.contains("udp:LOCAL@PEER"),
            "{e}"
        );
        assert!(err("slirp:x").contains("unknown network backend `slirp:x`"));
        assert!(err("None").contains("unknown"));
        assert!(err("").contains("unknown network backend ``"));
        for (s, example) in [
            ("tap:", "tap:kt0"),
            ("passt:", "passt:/tmp/passt_1.socket"),
            ("socket:", "socket:/tmp/kettle-hub"),
            ("udp:", "udp:127.0.0.1:5000@127.0.0.1:5001"),
        ] {
            let e = err(s);
            assert!(e.contains("needs") && e.contains(example), "{e}");
        }
        let e = err("tap:sixteen_bytes_16");
        assert!(
            e.contains("`sixteen_bytes_16`") && e.contains("15 bytes"),
            "{e}"
        );
        assert!(err("tap:a/b").contains("'/'"));
        assert!(err("tap:a b").contains("whitespace"));
        assert!(err("tap:a:b").contains("':'"));
        assert!(err("tap:kt%d").contains("'%'"));
        assert!(err("tap:..").contains("`..`"));
        let e = err("udp:127.0.0.1:5000");
        assert!(
            e.contains("is not LOCAL@PEER") && e.contains("[::1]:5000"),
            "{e}"
        );
        let e = err("udp:127.0.0.1@127.0.0.1:5001");
        assert!(e.contains("UDP local address `127.0.0.1`"), "{e}");
        let e = err("udp:127.0.0.1:5000@localhost:5001");
        assert!(e.contains("UDP peer address `localhost:5001`"), "{e}");
        let e = err("udp:127.0.0.1:5000@::1:5001");
        assert!(e.contains("peer address `::1:5001`"), "{e}");
        let e = err("udp:127.0.0.1:5000@[::1]:5001");
        assert!(e.contains("mix IPv4 and IPv6"), "{e}");
        let e = err("udp:127.0.0.1:5000@127.0.0.1:0");
        assert!(e.contains("nonzero port"), "{e}");
        let e = err("udp:127.0.0.1:5000@0.0.0.0:5001");
        assert!(e.contains("peer address 0.0.0.0:5001"), "{e}");
    }

    #[test]
    fn padding_is_stripped_from_short_ip_frames_only() {
        let frame = |ethertype: u16, l3: &[u8], total: usize| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(l3);
            f.resize(total.max(f.len()), 0);
            f
        };
        // A bare TCP ACK over IPv4: 14 + 40 bytes, padded to 60.
        let mut v4 = [0u8; 40];
        v4[0] = 0x45;
        v4[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(strip_eth_padding(&frame(0x0800, &v4, 60)).len(), 54);
        // Unpadded, or longer than a minimum frame: unchanged.
        assert_eq!(strip_eth_padding(&frame(0x0800, &v4, 54)).len(), 54);
        let mut big = [0u8; 100];
        big[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(strip_eth_padding(&frame(0x0800, &big, 0)).len(), 114);
        // IPv6 with 4 bytes of payload: 14 + 40 + 4, padded to 60.
        let mut v6 = [0u8; 44];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(strip_eth_padding(&frame(0x86dd, &v6, 60)).len(), 58);
        // Nonsense lengths (shorter than the header, longer than the frame), ARP, runts: whole.
        let mut bad = v4;
        bad[2..4].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(strip_eth_padding(&frame(0x0800, &bad, 60)).len(), 60);
        bad[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(strip_eth_padding(&frame(0x0800, &bad, 60)).len(), 60);
        assert_eq!(strip_eth_padding(&frame(0x0806, &[0u8; 28], 60)).len(), 60);
        assert_eq!(strip_eth_padding(&[0u8; 10]).len(), 10);
        assert_eq!(strip_eth_padding(&frame(0x0800, &[0x45; 10], 0)).len(), 24);
    }

    #[test]
    fn none_drops_and_never_receives() {
        let b = open(&BackendSpec::None, [0, 3, 0xff, 0, 0, 1], None).unwrap();
        b.send(&[0u8; 60]);
        assert_eq!(b.recv(&mut [0u8; MAX_FRAME]).unwrap(), None);
        assert_eq!(b.rx_fd(), None);
        assert_eq!(b.describe(), "none");
        assert_eq!(
            b.stats(),
            NetStats {
                tx_dropped: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn log_limit_lets_a_few_through() {
        let l = LogLimit::default();
        assert_eq!((0..5000).filter(|_| l.allow()).count(), 8 + 4);
    }
}
