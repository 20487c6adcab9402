//! Backends over plain host sockets, for connecting VMs to each other without any host
//! interface or privilege.
//!
//! # `socket:DIR`: an Ethernet hub in a directory
//!
//! Every NIC on the hub binds a unix datagram socket `DIR/<its MAC as 12 hex digits>.sock`
//! (`DIR/0003ff123456.sock`) and sends each frame its guest transmits, as one datagram, to
//! every other `*.sock` in DIR: like an old Ethernet hub, every member gets every frame any
//! other member sends (never its own), and the NIC's address filter, in the guest's driver's
//! hands, picks what the guest sees. Start any number of kettles with the same
//! `backend=socket:DIR` and different MACs, and their guests share one Ethernet segment.
//!
//! - DIR is created (mode 0700) if it does not exist. Who may write into DIR may join the hub.
//! - A second NIC with the same MAC on the same hub is refused (its socket name is taken by a
//!   live socket). A socket file left behind by a kettle that crashed is replaced.
//! - Members are found by listing DIR, at most once a second (and soon after a send found a
//!   member gone), so a kettle that joins is heard within about a second.
//! - The kernel queues only `net.unix.max_dgram_qlen` (default 10) datagrams per receiving
//!   socket. A frame for a member whose queue is full waits up to 2 ms (rounded up to the
//!   kernel's clock tick) for it to drain, asleep in the kernel (the sending vCPU waits, like a
//!   NIC on a busy wire); then that member misses it (counted as dropped). Raising the sysctl
//!   helps heavy traffic between VMs.
//! - A socket file whose owner is gone (connection refused) is skipped until it is replaced;
//!   kettle never deletes other members' files, only its own, when the NIC goes away.
//!
//! # `udp:LOCAL@PEER`: a point-to-point cable over UDP
//!
//! A UDP socket bound to LOCAL; every frame is one datagram to PEER, and datagrams from PEER
//! are frames for the guest. Datagrams from any other address are ignored (and logged, rate
//! limited). Two kettles connect with `udp:127.0.0.1:5000@127.0.0.1:5001` and
//! `udp:127.0.0.1:5001@127.0.0.1:5000`; QEMU's `-netdev dgram` speaks the same. Frames must fit
//! one datagram (65507 bytes over IPv4: far more than any Ethernet frame). There is no
//! encryption or authentication: keep it on loopback or a trusted network.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{mac_hex, Counters, LogLimit, NetBackend, NetError, NetStats, MAX_FRAME};

/// The longest path a unix socket address holds (sun_path is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;
/// List the hub directory at most this often...
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// ...or this soon after a send found a member gone.
const RESCAN_AFTER_FAILURE: Duration = Duration::from_millis(100);
/// At most this many members are sent to (and directory entries looked at, times 4).
pub const MAX_MEMBERS: usize = 256;
/// Socket buffers asked for (capped by net.core.wmem_max / rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Datagrams read per `recv` call while skipping unwanted ones.
const MAX_SKIP: usize = 64;

/// A file's identity: a replaced socket file is a new member even under the same name.
type FileId = (u64, u64);

fn file_id(m: &std::fs::Metadata) -> FileId {
    (m.dev(), m.ino())
}

/// True for a hub member's file name: 12 lowercase hex digits and `.sock`.
fn is_member_name(name: &str) -> bool {
    name.len() == 17
        && name.ends_with(".sock")
        && name[..12]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

struct Member {
    path: PathBuf,
    id: FileId,
    /// Connected to the member's socket, blocking, with a send timeout of HUB_FULL_WAIT: a
    /// send to a full queue sleeps in the kernel until the member reads (or the time is up).
    conn: UnixDatagram,
}

/// The other members as last seen in the directory.
struct Members {
    list: Vec<Member>,
    scanned: Option<Instant>,
    /// A send found a member gone: look again soon.
    rescan_soon: bool,
    /// Files whose owner is gone; skipped until replaced.
    stale: HashSet<FileId>,
}

/// One NIC on a `socket:DIR` hub.
pub struct Hub {
    sock: UnixDatagram,
    dir: PathBuf,
    path: PathBuf,
    id: FileId,
    members: Mutex<Members>,
    counters: Counters,
    log: LogLimit,
}

impl Hub {
    /// Joins the hub in `dir` as the NIC with MAC `mac`.
    pub fn open(dir: &Path, mac: [u8; 6]) -> Result<Hub, NetError> {
        let dir_err = |source| NetError::HubDir {
            path: dir.to_path_buf(),
            source,
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(dir_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "it exists and is not a directory",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(dir_err)?,
            Err(e) => return Err(dir_err(e)),
        }
        let path = dir.join(format!("{}.sock", mac_hex(&mac)));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(NetError::HubPathTooLong { path });
        }
        let same_mac = || NetError::HubSameMac {
            mac: crate::net::mac_colons(&mac),
            dir: dir.to_path_buf(),
            path: path.clone(),
        };
        let bind_err = |source| NetError::HubBind {
            path: path.clone(),
            source,
        };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_socket() => {
                return Err(NetError::HubNotASocket { path });
            }
            Ok(_) => {
                // Someone bound this name: live (another NIC with our MAC) or stale.
                let probe = UnixDatagram::unbound().map_err(bind_err)?;
                match probe.connect(&path) {
                    Ok(()) => return Err(same_mac()),
                    Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                        log::info!("replacing stale hub socket {}", path.display());
                        std::fs::remove_file(&path).map_err(bind_err)?;
                    }
                    Err(e) => return Err(bind_err(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let sock = UnixDatagram::bind(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                same_mac()
            } else {
                bind_err(e)
            }
        })?;
        let id = std::fs::symlink_metadata(&path)
            .map(|m| file_id(&m))
            .map_err(bind_err)?;
        sock.set_nonblocking(true).map_err(bind_err)?;
        super::set_socket_buffers(sock.as_raw_fd(), SOCKET_BUFFER);
        Ok(Hub {
            sock,
            dir: dir.to_path_buf(),
            path,
            id,
            members: Mutex::new(Members {
                list: Vec::new(),
                scanned: None,
                rescan_soon: false,
                stale: HashSet::new(),
            }),
            counters: Counters::default(),
            log: LogLimit::default(),
        })
    }

    /// This NIC's socket file.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// How many other members the last directory scan found (for tests and logs).
    pub fn member_count(&self) -> usize {
        self.members.lock().unwrap().list.len()
    }

    /// Lists the directory again: every member socket but ours and the stale ones.
    fn scan(&self, m: &mut Members, now: Instant) {
        m.scanned = Some(now);
        m.rescan_soon = false;
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) => {
                if self.log.allow() {
                    log::warn!("socket hub {}: cannot list it: {e}", self.dir.display());
                }
                return;
            }
        };
        let mut list = Vec::new();
        let mut present = HashSet::new();
        for entry in entries.take(MAX_MEMBERS * 4).flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !is_member_name(name) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let id = file_id(&meta);
            if !meta.file_type().is_socket() || id == self.id {
                continue;
            }
            present.insert(id);
            if m.stale.contains(&id) {
                continue;
            }
            if let Some(i) = m.list.iter().position(|k| k.id == id) {
                list.push(m.list.swap_remove(i));
                continue;
            }
            if list.len() == MAX_MEMBERS {
                if self.log.allow() {
                    log::warn!(
                        "socket hub {}: more than {MAX_MEMBERS} members; frames reach only the \
                         first {MAX_MEMBERS}",
                        self.dir.display()
                    );
                }
                break;
            }
            match connect_member(&path) {
                Ok(conn) => list.push(Member { path, id, conn }),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    m.stale.insert(id);
                }
                Err(e) => {
                    if self.log.allow() {
                        log::warn!("socket hub: cannot reach {}: {e}", path.display());
                    }
                }
            }
        }
        // Forget stale files that are gone (bounded by the directory's size).
        m.stale.retain(|id| present.contains(id));
        m.list = list;
    }
}

/// How long, at most, a frame waits for a member's full queue (the kernel rounds it up to its
/// clock tick) before that member misses it.
const HUB_FULL_WAIT: Duration = Duration::from_millis(2);

/// A blocking socket connected to a member, whose sends wait at most HUB_FULL_WAIT.
fn connect_member(path: &Path) -> io::Result<UnixDatagram> {
    let conn = UnixDatagram::unbound()?;
    conn.connect(path)?;
    conn.set_write_timeout(Some(HUB_FULL_WAIT))?;
    super::set_socket_buffers(conn.as_raw_fd(), SOCKET_BUFFER);
    Ok(conn)
}

impl NetBackend for Hub {
    fn send(&self, frame: &[u8]) {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            self.counters.dropped(1);
            return;
        }
        let now = Instant::now();
        let mut m = self.members.lock().unwrap();
        let due = match m.scanned {
            None => true,
            Some(t) => {
                let age = now.saturating_duration_since(t);
                age >= RESCAN_INTERVAL || (m.rescan_soon && age >= RESCAN_AFTER_FAILURE)
            }
        };
        if due {
            self.scan(&mut m, now);
        }
        let Members {
            list,
            stale,
            rescan_soon,
            ..
        } = &mut *m;
        let mut dropped = 0;
        list.retain(|member| {
            // A member whose queue is full gets a moment to drain it (backpressure, like a
            // switch port's buffer): the kernel queues only max_dgram_qlen datagrams, and TCP
            // between two guests would otherwise lose a burst at every window. The send
            // sleeps in the kernel until the member reads or HUB_FULL_WAIT is over.
            let mut r = member.conn.send(frame);
            for _ in 0..3 {
                match &r {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        r = member.conn.send(frame);
                    }
                    _ => break,
                }
            }
            match r {
                Ok(_) => true,
                Err(e) if super::would_block(&e) => {
                    dropped += 1;
                    true
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ECONNREFUSED | libc::ENOTCONN | libc::ENOENT | libc::ENOTSOCK)
                    ) =>
                {
                    // Its owner is gone: skip the file (as it is now) until it is replaced.
                    let id = std::fs::symlink_metadata(&member.path)
                        .map(|m| file_id(&m))
                        .unwrap_or(member.id);
                    stale.insert(id);
                    *rescan_soon = true;
                    false
                }
                Err(e) => {
                    dropped += 1;
                    if self.log.allow() {
                        log::warn!(
                            "socket hub: frame to {} dropped: {e}",
                            member.path.display()
                        );
                    }
                    true
                }
            }
        });
        self.counters.sent(frame.len());
        self.counters.dropped(dropped);
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        for _ in 0..MAX_SKIP {
            match self.sock.recv(buf) {
                Ok(0) => continue,
                Ok(n) => {
                    self.counters.received(n);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("socket hub {}: {e}", self.path.display()),
                    ))
                }
            }
        }
        Ok(None)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }

    fn describe(&self) -> String {
        format!("socket hub {}", self.dir.display())
    }

    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Remove our socket file, unless someone already replaced it with theirs.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if file_id(&m) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Checks a LOCAL/PEER pair: same family, a peer that can be sent to.
pub fn check_udp_addresses(local: SocketAddr, peer: SocketAddr) -> Result<(), NetError> {
    if local.is_ipv4() != peer.is_ipv4() {
        return Err(NetError::UdpFamilies { local, peer });
    }
    if peer.port() == 0 || peer.ip().is_unspecified() {
        return Err(NetError::UdpPeer(peer));
    }
    Ok(())
}

/// A `udp:LOCAL@PEER` link.
pub struct Udp {
    sock: UdpSocket,
    local: SocketAddr,
    peer: SocketAddr,
    counters: Counters,
    log: LogLimit,
    foreign: AtomicU64,
    foreign_log: LogLimit,
}

impl Udp {
    /// Binds LOCAL and sends to PEER.
    pub fn open(local: SocketAddr, peer: SocketAddr) -> Result<Udp, NetError> {
        check_udp_addresses(local, peer)?;
        let err = |source| NetError::UdpBind { local, source };
        let sock = UdpSocket::bind(local).map_err(err)?;
        Self::from_socket(sock, peer).map_err(err)
    }

    /// Uses an already bound socket.
    pub fn from_socket(sock: UdpSocket, peer: SocketAddr) -> io::Result<Udp> {
        sock.set_nonblocking(true)?;
        super::set_socket_buffers(sock.as_raw_fd(), SOCKET_BUFFER);
        Ok(Udp {
            local: sock.local_addr()?,
            sock,
            peer,
            counters: Counters::default(),
            log: LogLimit::default(),
            foreign: AtomicU64::new(0),
            foreign_log: LogLimit::default(),
        })
    }

    /// The bound address (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams ignored because they came from somewhere other than PEER.
    pub fn foreign_datagrams(&self) -> u64 {
        self.foreign.load(Ordering::Relaxed)
    }
}

impl NetBackend for Udp {
    fn send(&self, frame: &[u8]) {
        let r = match self.sock.send_to(frame, self.peer) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.sock.send_to(frame, self.peer),
            r => r,
        };
        match r {
            Ok(_) => self.counters.sent(frame.len()),
            Err(e) => {
                self.counters.dropped(1);
                if !super::would_block(&e) && self.log.allow() {
                    log::warn!(
                        "udp {} -> {}: dropped a {}-byte frame: {e}",
                        self.local,
                        self.peer,
                        frame.len()
                    );
                }
            }
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        for _ in 0..MAX_SKIP {
            match self.sock.recv_from(buf) {
                Ok((n, from)) if from == self.peer => {
                    self.counters.received(n);
                    return Ok(Some(n));
                }
                Ok((_, from)) => {
                    self.foreign.fetch_add(1, Ordering::Relaxed);
                    if self.foreign_log.allow() {
                        log::warn!(
                            "udp {}: ignored a datagram from {from}, which is not the peer {}",
                            self.local,
                            self.peer
                        );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // Interrupted, or an ICMP error reported for an earlier send: not fatal.
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("udp {}: {e}", self.local))),
            }
        }
        Ok(None)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }

    fn describe(&self) -> String {
        format!("udp {} -> {}", self.local, self.peer)
    }

    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_util::{frame, recv_all, recv_until, TempDir};
    use crate::net::{open, BackendSpec};
    use std::sync::Arc;

    const A: [u8; 6] = [0x00, 0x03, 0xff, 0, 0, 0x0a];
    const B: [u8; 6] = [0x00, 0x03, 0xff, 0, 0, 0x0b];
    const C: [u8; 6] = [0x00, 0x03, 0xff, 0, 0, 0x0c];
    const QUIET: Duration = Duration::from_millis(200);

    fn hub(dir: &Path, mac: [u8; 6]) -> Arc<dyn NetBackend> {
        open(&BackendSpec::Socket(dir.to_path_buf()), mac, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn three_members_hear_each_other_never_themselves() {
        let t = TempDir::new("hub3");
        let dir = t.0.join("new/hub");
        let members = [hub(&dir, A), hub(&dir, B), hub(&dir, C)];
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "a created hub directory is private");
        assert!(dir.join("0003ff00000a.sock").exists());
        assert_eq!(
            members[0].describe(),
            format!("socket hub {}", dir.display())
        );
        let macs = [A, B, C];
        for (i, m) in members.iter().enumerate() {
            for k in 0..2u8 {
                m.send(&frame([0xff; 6], macs[i], &[i as u8, k, 0, 0]));
            }
        }
        for (i, m) in members.iter().enumerate() {
            let got = recv_all(&**m, QUIET);
            let mut from: Vec<(u8, u8)> = got.iter().map(|f| (f[14], f[15])).collect();
            from.sort();
            let want: Vec<(u8, u8)> = (0..3u8)
                .filter(|&j| usize::from(j) != i)
                .flat_map(|j| [(j, 0), (j, 1)])
                .collect();
            assert_eq!(from, want, "member {i} gets the others' frames, in full");
            for f in &got {
                assert_eq!(&f[6..12], &macs[usize::from(f[14])]);
                assert_eq!(f.len(), 18);
            }
            let s = m.stats();
            assert_eq!((s.tx_frames, s.tx_bytes, s.tx_dropped), (2, 36, 0));
            assert_eq!((s.rx_frames, s.rx_bytes), (4, 72));
        }
        // Leaving removes the socket file.
        let [a, b, c] = members;
        drop(a);
        assert!(!dir.join("0003ff00000a.sock").exists());
        drop((b, c));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn same_mac_is_refused_and_a_stale_file_is_replaced() {
        let t = TempDir::new("hubmac");
        let a = hub(&t.0, A);
        let e = open(&BackendSpec::Socket(t.0.clone()), A, None)
            .err()
            .expect("a second NIC with the same MAC joined");
        assert!(matches!(e, NetError::HubSameMac { .. }), "{e}");
        let s = e.to_string();
        assert!(
            s.contains("00:03:ff:00:00:0a") && s.contains("different `mac=`"),
            "{s}"
        );
        drop(a);

        // A crashed kettle's socket: bound once, file left behind, nobody bound.
        let stale = t.0.join("0003ff00000b.sock");
        drop(UnixDatagram::bind(&stale).unwrap());
        assert!(stale.exists());
        let b = hub(&t.0, B);
        let c = hub(&t.0, C);
        b.send(&frame(C, B, b"after the stale file"));
        let got = recv_until(&*c, Duration::from_secs(2), |_| true);
        assert_eq!(got.unwrap(), frame(C, B, b"after the stale file"));

        // Not a socket: refused, the file left alone.
        let plain = t.0.join("0003ff00000a.sock");
        std::fs::write(&plain, b"precious").unwrap();
        let e = open(&BackendSpec::Socket(t.0.clone()), A, None)
            .err()
            .unwrap();
        assert!(matches!(e, NetError::HubNotASocket { .. }), "{e}");
        assert_eq!(std::fs::read(&plain).unwrap(), b"precious");
        // And the hub ignores it.
        b.send(&frame([0xff; 6], B, b"x"));
        assert_eq!(b.stats().tx_dropped, 0);
    }

    #[test]
    fn a_member_that_goes_away_or_comes_late_is_handled() {
        let t = TempDir::new("hubgone");
        let a = hub(&t.0, A);
        let b = hub(&t.0, B);
        a.send(&frame(B, A, b"1"));
        assert!(recv_until(&*b, Duration::from_secs(2), |_| true).is_some());

        // B crashes: its socket file stays behind with nobody bound to it.
        let b_path = t.0.join("0003ff00000b.sock");
        drop(b);
        drop(UnixDatagram::bind(&b_path).unwrap());
        // A keeps sending: no error, no drop counted for a member that is gone.
        std::thread::sleep(RESCAN_INTERVAL + Duration::from_millis(50));
        for i in 0..5u8 {
            a.send(&frame(B, A, &[i]));
        }
        let s = a.stats();
        assert_eq!((s.tx_frames, s.tx_dropped), (6, 0));
        assert!(b_path.exists(), "other members' files are never deleted");

        // A late member is found within a rescan interval.
        let c = hub(&t.0, C);
        std::thread::sleep(RESCAN_INTERVAL + Duration::from_millis(50));
        a.send(&frame(C, A, b"welcome"));
        assert_eq!(
            recv_until(&*c, Duration::from_secs(2), |_| true).unwrap(),
            frame(C, A, b"welcome")
        );

        // A member that does not read misses frames, counted, while others still get them.
        let d = hub(&t.0, [0, 3, 0xff, 0, 0, 0x0d]);
        std::thread::sleep(RESCAN_INTERVAL + Duration::from_millis(50));
        let mut sent = 0;
        for i in 0..2000u32 {
            a.send(&frame([0xff; 6], A, &i.to_be_bytes()));
            sent += 1;
            if a.stats().tx_dropped > 0 {
                break;
            }
            // C keeps up.
            let _ = recv_all(&*c, Duration::ZERO);
        }
        assert!(
            a.stats().tx_dropped > 0,
            "a full member never dropped a frame"
        );
        assert!(sent > 1);
        drop(d);
    }

    #[test]
    fn hub_errors_name_the_path() {
        let t = TempDir::new("huberr");
        let long = t.0.join("x".repeat(120));
        let e = Hub::open(&long, A).err().unwrap();
        assert!(matches!(e, NetError::HubPathTooLong { .. }), "{e}");
        assert!(e.to_string().contains("shorter directory"));
        let file = t.0.join("file");
        std::fs::write(&file, b"").unwrap();
        let e = Hub::open(&file, A).err().unwrap().to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("not a directory"),
            "{e}"
        );
    }

    fn udp_pair() -> (Udp, Udp) {
        let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (sa.local_addr().unwrap(), sb.local_addr().unwrap());
        (
            Udp::from_socket(sa, pb).unwrap(),
            Udp::from_socket(sb, pa).unwrap(),
        )
    }

    #[test]
    fn udp_pair_exchanges_frames_and_ignores_strangers() {
        let (a, b) = udp_pair();
        assert_eq!(
            a.describe(),
            format!("udp {} -> {}", a.local_addr(), b.local_addr())
        );
        let f1 = frame(B, A, b"a to b");
        let f2 = frame(A, B, &[7u8; 1500]);
        a.send(&f1);
        b.send(&f2);
        assert_eq!(
            recv_until(&b, Duration::from_secs(2), |_| true).unwrap(),
            f1
        );
        assert_eq!(
            recv_until(&a, Duration::from_secs(2), |_| true).unwrap(),
            f2
        );

        // A stranger's datagram is ignored; the peer's next one still arrives.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger
            .send_to(b"not from the peer", a.local_addr())
            .unwrap();
        let f3 = frame(A, B, b"after the stranger");
        b.send(&f3);
        assert_eq!(
            recv_until(&a, Duration::from_secs(2), |_| true).unwrap(),
            f3
        );
        assert_eq!(a.foreign_datagrams(), 1);
        let s = a.stats();
        assert_eq!((s.tx_frames, s.rx_frames), (1, 2));
        assert_eq!(s.rx_bytes, (f2.len() + f3.len()) as u64);
    }

    #[test]
    fn udp_through_open_and_its_errors() {
        // Find a free port, then open through the spec.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let spec: BackendSpec = format!("udp:127.0.0.1:0@{}", peer.local_addr().unwrap())
            .parse()
            .unwrap();
        let b = open(&spec, A, None).unwrap();
        b.send(&frame(B, A, b"hello"));
        let mut buf = [0u8; 100];
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &frame(B, A, b"hello")[..]);

        // A port in use.
        let taken = peer.local_addr().unwrap();
        let e = Udp::open(taken, "127.0.0.1:9".parse().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&taken.to_string()) && e.contains("port in use"),
            "{e}"
        );
        // Mixed families, built by hand rather than parsed.
        let e = Udp::open(
            "127.0.0.1:0".parse().unwrap(),
            "[::1]:5000".parse().unwrap(),
        )
        .err()
        .unwrap();
        assert!(matches!(e, NetError::UdpFamilies { .. }));
    }
}
