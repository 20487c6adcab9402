//! `tap:NAME`: a Linux TAP interface (the kernel's `tun` driver, `Documentation/networking/
//! tuntap.rst`). Each frame the guest sends is written to the TAP file descriptor and appears
//! to the host as received on interface NAME; each frame the host sends out of NAME is read
//! from the descriptor and goes to the guest. One `read`/`write` is one frame; the interface is
//! opened with `IFF_TAP | IFF_NO_PI` (plain Ethernet frames, no packet-information header).
//!
//! Two ways to have the interface:
//!
//! - Persistent, made once by root for the user who runs kettle (kettle then needs no
//!   privileges at all):
//!   `ip tuntap add dev kt0 mode tap user $USER && ip link set kt0 up`, then give it an address
//!   (`ip addr add 192.168.100.1/24 dev kt0`) or put it on a bridge
//!   (`ip link set kt0 master br0`). kettle attaches to it and leaves it as it is.
//! - Made on the fly: when NAME does not exist and kettle has `CAP_NET_ADMIN` (runs as root),
//!   the kernel creates it and kettle brings it up; it disappears when kettle exits, so
//!   addresses or bridge membership must be added after kettle started.
//!
//! A TAP interface serves one process at a time: a second kettle (or QEMU) on the same name is
//! refused with a clear error.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Counters, LogLimit, NetBackend, NetError, NetStats};

/// IFNAMSIZ: interface names have at most 15 bytes plus the terminating NUL.
pub const IFNAMSIZ: usize = 16;

/// `struct ifreq` as TUNSETIFF, SIOCGIFFLAGS and SIOCSIFFLAGS use it: the name, then the
/// flags (a short) at the start of the 24-byte union.
#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str) -> Self {
        let mut r = IfReq {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        let n = name.len().min(IFNAMSIZ - 1);
        r.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        r
    }
}

/// Checks `name` the way the kernel's `dev_valid_name` does (plus: no `%`, which would make
/// the kernel pick a name).
pub fn validate_name(name: &str) -> Result<(), NetError> {
    let bad = |reason| {
        Err(NetError::TapName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() >= IFNAMSIZ {
        return bad("it is longer than 15 bytes, Linux's limit for interface names");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not interface names");
    }
    if name.contains('/') || name.contains(':') {
        return bad("it contains '/' or ':'");
    }
    if name.bytes().any(|b| b.is_ascii_whitespace()) {
        return bad("it contains whitespace");
    }
    if name.contains('%') {
        return bad("it contains '%'; give the exact name of the interface");
    }
    if name.bytes().any(|b| b == 0) {
        return bad("it contains a NUL byte");
    }
    Ok(())
}

/// True when an interface of this name exists in kettle's network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// A socket for interface ioctls (any family will do; AF_INET is always there).
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interface flags (IFF_UP, IFF_RUNNING, ...) of `name`.
pub fn interface_flags(name: &str) -> io::Result<i32> {
    let s = ioctl_socket()?;
    let mut req = IfReq::new(name);
    // SAFETY: SIOCGIFFLAGS fills the flags of a properly sized ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i32::from(req.flags) & 0xffff)
}

/// Sets IFF_UP on `name` (needs CAP_NET_ADMIN).
fn bring_up(name: &str) -> io::Result<()> {
    let s = ioctl_socket()?;
    let mut req = IfReq::new(name);
    // SAFETY: as above.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    req.flags |= libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads a properly sized ifreq.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The user name for the `ip tuntap add ... user NAME` hint: $USER, else the numeric uid.
fn user_hint() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_graphic()))
        // SAFETY: getuid cannot fail.
        .unwrap_or_else(|| unsafe { libc::getuid() }.to_string())
}

/// A TAP interface attached to kettle.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    created: bool,
    counters: Counters,
    log: LogLimit,
    dead: AtomicBool,
}

impl Tap {
    /// Attaches to TAP interface `name`, creating it when it does not exist (which needs
    /// CAP_NET_ADMIN).
    pub fn open(name: &str) -> Result<Tap, NetError> {
        validate_name(name)?;
        let existed = interface_exists(name);
        let path = c"/dev/net/tun";
        // SAFETY: open with a NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => NetError::TunMissing,
                Some(libc::EACCES | libc::EPERM) => NetError::TunAccess,
                _ => NetError::TunOpen(e),
            });
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq::new(name);
        req.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and writes back) a properly sized ifreq.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
            let e = io::Error::last_os_error();
            let name = name.to_string();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) if existed => NetError::TapNotYours {
                    name,
                    user: user_hint(),
                },
                Some(libc::EPERM | libc::EACCES) => NetError::TapCannotCreate {
                    name,
                    user: user_hint(),
                },
                Some(libc::EBUSY) => NetError::TapBusy { name },
                Some(libc::EINVAL) if existed => NetError::TapWrongKind { name },
                _ => NetError::TapAttach { name, source: e },
            });
        }
        let tap = Tap {
            fd,
            name: name.to_string(),
            created: !existed,
            counters: Counters::default(),
            log: LogLimit::default(),
            dead: AtomicBool::new(false),
        };
        if tap.created {
            match bring_up(name) {
                Ok(()) => log::info!(
                    "created TAP interface {name} and brought it up; it disappears when kettle \
                     exits (add an address or a bridge now; for a lasting one: \
                     `ip tuntap add dev {name} mode tap user {}`)",
                    user_hint()
                ),
                Err(e) => log::warn!(
                    "created TAP interface {name} but could not bring it up ({e}): \
                     run `ip link set {name} up`"
                ),
            }
        } else {
            log::info!("attached to existing TAP interface {name}");
            match interface_flags(name) {
                Ok(f) if f & libc::IFF_UP == 0 => log::warn!(
                    "TAP interface {name} is down: the guest's frames go nowhere until \
                     `ip link set {name} up`"
                ),
                _ => {}
            }
        }
        Ok(tap)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when kettle created the interface (it goes away with kettle); false when an
    /// existing one was attached.
    pub fn created(&self) -> bool {
        self.created
    }
}

impl NetBackend for Tap {
    fn send(&self, frame: &[u8]) {
        if self.dead.load(Ordering::Relaxed) {
            self.counters.dropped(1);
            return;
        }
        for _ in 0..4 {
            // SAFETY: write reads frame.len() bytes from a valid slice.
            let r = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                )
            };
            if r >= 0 {
                self.counters.sent(frame.len());
                return;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            self.counters.dropped(1);
            if super::would_block(&e) || !self.log.allow() {
                return;
            }
            if e.raw_os_error() == Some(libc::EIO) {
                // tun refuses writes while the interface is down.
                log::warn!(
                    "tap {0} is down: the guest's frames are dropped until `ip link set {0} up`",
                    self.name
                );
            } else {
                log::warn!(
                    "tap {}: dropped a {}-byte frame from the guest: {e}",
                    self.name,
                    frame.len()
                );
            }
            return;
        }
        self.counters.dropped(1);
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        for _ in 0..8 {
            // SAFETY: read writes at most buf.len() bytes into a valid slice.
            let r = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if r > 0 {
                let n = r as usize;
                self.counters.received(n);
                return Ok(Some(n));
            }
            if r == 0 {
                return Ok(None);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::EINTR) => continue,
                // The interface was deleted under us (`ip link del`): the fd is detached.
                Some(libc::EBADFD | libc::ENXIO | libc::ENODEV) => {
                    self.dead.store(true, Ordering::Relaxed);
                    return Err(io::Error::new(
                        e.kind(),
                        format!("TAP interface {} is gone ({e})", self.name),
                    ));
                }
                _ => {
                    if self.log.allow() {
                        log::warn!("tap {}: skipped a frame for the guest: {e}", self.name);
                    }
                }
            }
        }
        Ok(None)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn describe(&self) -> String {
        format!("tap {}", self.name)
    }

    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_util::{frame, recv_until};
    use crate::net::{open, BackendSpec, MAX_FRAME};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Set (to the parent's network namespace) in the child that runs inside a throwaway one.
    const CHILD_ENV: &str = "KETTLE_NET_TAP_TEST_PARENT_NETNS";
    const MAC: [u8; 6] = [0x00, 0x03, 0xff, 0x7a, 0x70, 0x01];

    fn netns_id() -> String {
        std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn too_long_or_bad_names_are_refused_before_touching_anything() {
        for name in ["abcdefghijklmnop", "", "a/b", "a b", "kt%d"] {
            let spec = BackendSpec::Tap(name.to_string());
            match open(&spec, MAC, None) {
                Err(NetError::TapName { name: n, reason }) => {
                    assert_eq!(n, name);
                    assert!(!reason.is_empty());
                }
                Err(e) => panic!("{name:?}: unexpected error {e}"),
                Ok(b) => panic!("{name:?}: opened {}", b.describe()),
            }
        }
        let e = Tap::open("abcdefghijklmnop").err().unwrap().to_string();
        assert!(
            e.contains("abcdefghijklmnop") && e.contains("15 bytes"),
            "{e}"
        );
    }

    #[test]
    fn error_messages_name_the_interface_and_the_fix() {
        let u = || "alice".to_string();
        let cases = [
            (
                NetError::TapCannotCreate {
                    name: "kt0".into(),
                    user: u(),
                },
                "ip tuntap add dev kt0 mode tap user alice",
            ),
            (
                NetError::TapNotYours {
                    name: "kt0".into(),
                    user: u(),
                },
                "belongs to another user",
            ),
            (
                NetError::TapBusy { name: "kt0".into() },
                "kt0 is in use by another process",
            ),
            (
                NetError::TapWrongKind { name: "kt0".into() },
                "not a single-queue TAP",
            ),
            (NetError::TunMissing, "modprobe tun"),
            (NetError::TunAccess, "/dev/net/tun"),
        ];
        for (e, want) in cases {
            let s = e.to_string();
            assert!(s.contains(want), "{s}");
        }
    }

    /// Runs [`tap_in_namespace_body`] in a child process that is in a network namespace of its
    /// own (unshare(CLONE_NEWNET) between fork and exec), so no interface is ever created in
    /// the machine's own namespace. Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and
    /// /dev/net/tun; fails loudly without them.
    #[test]
    fn tap_in_throwaway_namespace() {
        if let Ok(parent) = std::env::var(CHILD_ENV) {
            // We are the child.
            assert_ne!(
                netns_id(),
                parent,
                "refusing to create TAP interfaces: not in a throwaway network namespace"
            );
            tap_in_namespace_body();
            return;
        }
        // SAFETY: geteuid cannot fail.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the TAP test needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for a network namespace); \
             CI runs as root"
        );
        assert!(
            std::path::Path::new("/dev/net/tun").exists(),
            "the TAP test needs /dev/net/tun: load the driver with `modprobe tun`"
        );
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "net::tap::tests::tap_in_throwaway_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, netns_id())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: unshare is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .expect("cannot start the TAP test in a new network namespace (unshare(CLONE_NEWNET) needs root)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the TAP test child did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            status.success(),
            "TAP test in its namespace failed:\n{text}"
        );
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
    }

    /// An AF_PACKET socket bound to one interface: sees every frame the interface sends or
    /// receives, and injects frames the interface transmits (towards the TAP fd).
    struct PacketSocket {
        fd: OwnedFd,
        ifindex: i32,
    }

    impl PacketSocket {
        fn bind(name: &str) -> PacketSocket {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain syscall; result checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    i32::from(proto),
                )
            };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = CString::new(name).unwrap();
            // SAFETY: NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
            assert!(ifindex > 0, "{name} has no index");
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex;
            // SAFETY: a valid sockaddr_ll of the right size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
            PacketSocket { fd, ifindex }
        }

        fn send(&self, frame: &[u8]) {
            // SAFETY: sockaddr_ll is plain data.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: valid buffer and address.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    frame.as_ptr() as *const libc::c_void,
                    frame.len(),
                    0,
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(
                r,
                frame.len() as isize,
                "AF_PACKET send: {}",
                io::Error::last_os_error()
            );
        }

        /// Waits (bounded) for a frame equal to `want`.
        fn expect(&self, want: &[u8]) {
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = vec![0u8; MAX_FRAME];
            let mut seen = 0;
            while Instant::now() < deadline {
                crate::net::poll_fd(
                    self.fd.as_raw_fd(),
                    libc::POLLIN,
                    Duration::from_millis(100),
                );
                // SAFETY: valid buffer.
                let r = unsafe {
                    libc::recv(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if r > 0 {
                    seen += 1;
                    if &buf[..r as usize] == want {
                        return;
                    }
                }
            }
            panic!("the frame kettle sent never appeared on the interface ({seen} others did)");
        }
    }

    fn tap_in_namespace_body() {
        const NAME: &str = "kt-test0";
        assert!(!interface_exists(NAME));
        let tap = Tap::open(NAME).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            tap.created(),
            "the interface did not exist, so kettle created it"
        );
        assert_eq!(tap.name(), NAME);
        assert_eq!(tap.describe(), "tap kt-test0");
        assert!(interface_exists(NAME));
        let flags = interface_flags(NAME).unwrap();
        assert_ne!(flags & libc::IFF_UP, 0, "kettle brought the interface up");

        let pkt = PacketSocket::bind(NAME);
        // Guest -> host: what kettle writes arrives on the interface.
        let out = frame([0xff; 6], MAC, b"guest to host through the tap");
        tap.send(&out);
        pkt.expect(&out);
        // Host -> guest: what the interface transmits comes out of recv.
        let inbound = frame(MAC, [0x02, 0, 0, 0, 0, 0x42], b"host to guest");
        pkt.send(&inbound);
        let got = recv_until(&tap, Duration::from_secs(5), |f| f == inbound.as_slice());
        assert_eq!(got.as_deref(), Some(inbound.as_slice()));
        let s = tap.stats();
        assert_eq!(
            (s.tx_frames, s.tx_bytes, s.tx_dropped),
            (1, out.len() as u64, 0)
        );
        assert!(s.rx_frames >= 1 && s.rx_bytes >= inbound.len() as u64);

        // A second user of the same interface is refused, naming it.
        match Tap::open(NAME) {
            Err(NetError::TapBusy { name }) => assert_eq!(name, NAME),
            Err(e) => panic!("expected TapBusy, got {e}"),
            Ok(_) => panic!("a second open of a busy TAP succeeded"),
        }

        // Closing a created interface removes it.
        drop(pkt);
        drop(tap);
        let deadline = Instant::now() + Duration::from_secs(5);
        while interface_exists(NAME) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !interface_exists(NAME),
            "the created interface went away with kettle"
        );

        // A persistent interface (as `ip tuntap add` makes it) is attached, not created, and
        // stays after kettle lets go.
        const PERSISTENT: &str = "kt-test1";
        make_persistent(PERSISTENT, true);
        let tap =
            open(&BackendSpec::Tap(PERSISTENT.into()), MAC, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tap.describe(), "tap kt-test1");
        tap.send(&frame([0xff; 6], MAC, b"x"));
        drop(tap);
        assert!(interface_exists(PERSISTENT));
        let direct = Tap::open(PERSISTENT).unwrap();
        assert!(!direct.created());
        drop(direct);
        make_persistent(PERSISTENT, false);
        assert!(!interface_exists(PERSISTENT));

        // An interface that is not a TAP is refused as such.
        match Tap::open("lo") {
            Err(NetError::TapWrongKind { name }) => assert_eq!(name, "lo"),
            Err(e) => panic!("expected TapWrongKind for lo, got {e}"),
            Ok(_) => panic!("attached a TAP to lo"),
        }

        // Without CAP_NET_ADMIN (but still uid 0, so /dev/net/tun opens): no creating, and no
        // attaching to somebody else's interface.
        const OTHERS: &str = "kt-test2";
        make_persistent(OTHERS, true);
        set_owner(OTHERS, 65534);
        set_net_admin(false);
        let new = Tap::open("kt-test3")
            .err()
            .expect("created a TAP without CAP_NET_ADMIN");
        assert!(matches!(new, NetError::TapCannotCreate { .. }), "{new}");
        let s = new.to_string();
        assert!(
            s.contains("kt-test3 does not exist")
                && s.contains("ip tuntap add dev kt-test3 mode tap user "),
            "{s}"
        );
        let theirs = Tap::open(OTHERS)
            .err()
            .expect("attached to another user's TAP");
        assert!(matches!(theirs, NetError::TapNotYours { .. }), "{theirs}");
        assert!(theirs
            .to_string()
            .contains("kt-test2 exists but belongs to another user"));
        set_net_admin(true);
        assert!(!interface_exists("kt-test3"));

        // As nobody (last: there is no way back). A persistent TAP owned by root...
        const ROOTS: &str = "kt-test4";
        make_persistent(ROOTS, true);
        set_owner(ROOTS, 0);
        // SAFETY: plain syscalls; glibc applies them to every thread of the process.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
            assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
        }
        let tun_usable = {
            let c = c"/dev/net/tun";
            // SAFETY: access reads a NUL-terminated path.
            unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) == 0 }
        };
        let new = Tap::open("kt-test3").err().expect("nobody created a TAP");
        let mine = Tap::open(ROOTS).err().expect("nobody attached root's TAP");
        if tun_usable {
            assert!(matches!(new, NetError::TapCannotCreate { .. }), "{new}");
            assert!(new
                .to_string()
                .contains("ip tuntap add dev kt-test3 mode tap user"));
            assert!(matches!(mine, NetError::TapNotYours { .. }), "{mine}");
        } else {
            // /dev/net/tun is root-only here (mode 0600): that is what both run into.
            assert!(matches!(new, NetError::TunAccess), "{new}");
            assert!(matches!(mine, NetError::TunAccess), "{mine}");
        }
    }

    /// Raises or lowers CAP_NET_ADMIN in this thread's effective capabilities (it stays
    /// permitted, so it can come back).
    fn set_net_admin(on: bool) {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        const CAP_NET_ADMIN: u32 = 12;
        let mut h = Header {
            version: VERSION_3,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: capget/capset read and write the header and two data structs.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()), 0);
            if on {
                d[0].effective |= 1 << CAP_NET_ADMIN;
            } else {
                d[0].effective &= !(1 << CAP_NET_ADMIN);
            }
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()),
                0,
                "capset: {}",
                io::Error::last_os_error()
            );
        }
    }

    /// Gives a TAP interface an owner, as `ip tuntap add ... user UID` does.
    fn set_owner(name: &str, uid: libc::uid_t) {
        // SAFETY: plain syscalls on a fresh fd; results checked.
        unsafe {
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(fd >= 0);
            let fd = OwnedFd::from_raw_fd(fd);
            let mut req = IfReq::new(name);
            req.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
            assert_eq!(
                libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req),
                0
            );
            assert_eq!(
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETOWNER as _,
                    libc::c_ulong::from(uid)
                ),
                0
            );
        }
    }

    /// Creates (or deletes) a persistent TAP interface the way `ip tuntap add/del` does.
    fn make_persistent(name: &str, on: bool) {
        // SAFETY: plain syscalls on a fresh fd; results checked.
        unsafe {
            let fd = libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(fd >= 0);
            let fd = OwnedFd::from_raw_fd(fd);
            let mut req = IfReq::new(name);
            req.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
            assert_eq!(
                libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req),
                0
            );
            assert_eq!(
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNSETPERSIST as _,
                    libc::c_ulong::from(on)
                ),
                0
            );
        }
    }
}
