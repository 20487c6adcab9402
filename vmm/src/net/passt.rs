//! `passt` and `passt:SOCKET`: user-mode networking by passt (<https://passt.top>), no root
//! needed and no host interface touched.
//!
//! passt is an unprivileged process that terminates the guest's network on the host: it
//! answers the guest's DHCP, ARP and NDP itself (the guest gets the host's own address and
//! routes), and carries the guest's TCP, UDP and ICMP through ordinary host sockets. The
//! guest's default gateway address leads to the host's loopback, so services listening on
//! 127.0.0.1 are reachable from the guest at the gateway address. kettle forwards no ports
//! into the guest; for that, start passt yourself (`passt -s /tmp/vm.sock -t 2222:22`) and
//! use `backend=passt:/tmp/vm.sock`.
//!
//! - `passt`: kettle starts `passt --foreground --quiet --fd N` from PATH as its child, on one
//!   end of a unix stream socket pair. `--foreground` keeps passt our child (it would fork into
//!   the background when started from a terminal), so kettle can stop it and collect its exit
//!   status; `--quiet` leaves only warnings and errors on its stderr, which kettle shows if
//!   passt dies; `--fd` hands it the connected socket (passt exits by itself when kettle's end
//!   closes, even if kettle is killed). Started as root, passt switches to user `nobody` by
//!   itself. kettle kills and reaps it when the NIC goes away.
//! - `passt:PATH`: connects to a passt the user started with `passt -s PATH` (passt serves one
//!   VM per process). A passt started by root binds PATH as user `nobody`, so PATH's directory
//!   must be writable for `nobody` then.
//!
//! On the socket, both ways, each frame is a 4-byte big-endian length followed by the frame:
//! the framing QEMU's `-netdev stream` uses with passt. [`Passt::recv`] buffers a partial frame
//! and hands out one whole frame per call, never reading beyond it (so the socket stays
//! readable while frames wait); a length over [`MAX_FRAME`] means the stream is corrupt and the
//! backend is dead. [`Passt::send`] writes length and frame with one
//! `sendmsg`; a frame that does not fit at all is dropped (counted), and the rest of a frame
//! that fitted partly is always finished (waiting at most [`FINISH_TIMEOUT`]), because a
//! half-written frame would desynchronise the stream for good.
//!
//! Frames to passt lose their Ethernet padding (`strip_eth_padding`): the 21140 pads
//! short frames to 60 bytes as on a wire, and passt versions before 2024 (Debian 12's among
//! them) count the padding of a bare TCP ACK as payload, which wrecks the connection.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Counters, LogLimit, NetBackend, NetError, NetStats, MAX_FRAME};

/// Longest wait for the socket to take the rest of a frame already partly written.
pub const FINISH_TIMEOUT: Duration = Duration::from_millis(100);
/// How long `open` watches a freshly started passt for an early exit.
const STARTUP_GRACE: Duration = Duration::from_millis(200);
/// How long the event loop waits for a passt that closed its socket to exit (for the message).
const EXIT_WAIT: Duration = Duration::from_millis(200);
/// Socket buffers asked for (the kernel caps them at net.core.wmem_max / rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
/// Reads per `recv` call (header and body are two) before giving other event sources a turn.
const MAX_READS: usize = 16;
/// passt's stderr kept for error messages.
const STDERR_KEEP: usize = 16 * 1024;

/// The frame being received: `have` bytes of header + frame so far. It never holds more than
/// one frame, so everything after it is still in the socket and keeps the fd readable: the
/// event loop's level-triggered wake-ups stay exact.
struct RxBuffer {
    data: Box<[u8]>,
    have: usize,
}

/// What [`RxBuffer::next_read`] says to do.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Read into `data[have..end]`.
    Read { end: usize },
    /// A whole frame of this length is at `data[4..4 + len]`.
    Frame(usize),
    /// A length field over MAX_FRAME: the stream is corrupt.
    BadLength(u32),
}

impl RxBuffer {
    fn new() -> Self {
        RxBuffer {
            data: vec![0u8; 4 + MAX_FRAME].into_boxed_slice(),
            have: 0,
        }
    }

    fn next_read(&self) -> Next {
        if self.have < 4 {
            return Next::Read { end: 4 };
        }
        let h = &self.data[..4];
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        if len as usize > MAX_FRAME {
            return Next::BadLength(len);
        }
        let end = 4 + len as usize;
        if self.have < end {
            Next::Read { end }
        } else {
            Next::Frame(len as usize)
        }
    }
}

/// The passt process kettle started.
struct PasstChild {
    child: Mutex<Child>,
    pid: u32,
    /// The read end of passt's stderr (non-blocking; passt's end is non-blocking too, so a
    /// full pipe loses messages instead of stopping passt).
    stderr: Mutex<(File, String)>,
}

impl PasstChild {
    /// Whatever passt wrote to stderr so far, without its "cannot reach syslog" noise,
    /// on one line.
    fn stderr_text(&self) -> String {
        let mut g = self.stderr.lock().unwrap();
        let (file, kept) = &mut *g;
        let mut chunk = [0u8; 4096];
        for _ in 0..(STDERR_KEEP / chunk.len()) {
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if kept.len() < STDERR_KEEP {
                        kept.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            }
        }
        let lines: Vec<&str> = kept
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .filter(|l| !(l.starts_with("Failed to send") && l.ends_with("to syslog")))
            .collect();
        if lines.is_empty() {
            "nothing".to_string()
        } else {
            lines.join(" / ")
        }
    }

    /// The exit status if passt has exited (waits up to `wait` for it).
    fn exit_status(&self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        let mut child = self.child.lock().unwrap();
        loop {
            match child.try_wait() {
                Ok(Some(s)) => return Some(s.to_string()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }
}

/// A passt connection (spawned or connected), or any stream speaking the same framing.
pub struct Passt {
    stream: UnixStream,
    child: Option<PasstChild>,
    what: String,
    rx: Mutex<RxBuffer>,
    /// Serialises senders so that frames never interleave on the stream.
    tx: Mutex<()>,
    dead: AtomicBool,
    dead_reason: Mutex<String>,
    counters: Counters,
    log: LogLimit,
    /// Frames whose first sendmsg went out partly and that were then finished.
    finished_partial: AtomicU64,
}

impl Passt {
    /// Starts `passt` from PATH on a socket pair.
    pub fn spawn() -> Result<Passt, NetError> {
        Self::spawn_program(OsStr::new("passt"))
    }

    /// Starts `program` (passt, or a stand-in in tests) with passt's arguments.
    pub(crate) fn spawn_program(program: &OsStr) -> Result<Passt, NetError> {
        let (ours, theirs) = UnixStream::pair().map_err(NetError::PasstSpawn)?;
        // The child's end must not land on 0-2, which the child's stdio replaces.
        // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor we own (or -1).
        let theirs = unsafe {
            let fd = libc::fcntl(theirs.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3);
            if fd < 0 {
                return Err(NetError::PasstSpawn(io::Error::last_os_error()));
            }
            OwnedFd::from_raw_fd(fd)
        };
        let (err_read, err_write) = stderr_pipe().map_err(NetError::PasstSpawn)?;
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(program);
        cmd.args(["--foreground", "--quiet", "--fd", &child_fd.to_string()]);
        // As root, passt drops to the user "nobody" by name, and gives up where there is no
        // such entry (containers, minimal systems): name the numeric overflow ids instead.
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            cmd.args(["--runas", "65534:65534"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_write))
            // Its own process group: a Ctrl-C meant for kettle's terminal does not kill it.
            .process_group(0);
        // SAFETY: fcntl is async-signal-safe; it clears close-on-exec on the child's copy of
        // its socket only (the fd table is the child's own after fork).
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetError::PasstNotFound,
            _ => NetError::PasstSpawn(e),
        })?;
        // Close our copies of the child's ends (the socket and stderr's write end).
        drop(cmd);
        drop(theirs);
        let pid = child.id();
        let child = PasstChild {
            child: Mutex::new(child),
            pid,
            stderr: Mutex::new((err_read, String::new())),
        };
        let what = format!("passt (pid {pid})");
        let mut p = match Self::from_stream(ours, what) {
            Ok(p) => p,
            Err(e) => {
                let mut c = child.child.lock().unwrap();
                let _ = c.kill();
                let _ = c.wait();
                return Err(NetError::PasstSpawn(e));
            }
        };
        // From here on, dropping `p` kills and reaps passt.
        p.child = Some(child);
        // A passt that cannot run exits at once, closing its end of the socket.
        let ev = super::poll_fd(
            p.stream.as_raw_fd(),
            libc::POLLRDHUP | libc::POLLHUP,
            STARTUP_GRACE,
        );
        let waited = if ev != 0 {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
        if let Some(c) = &p.child {
            if let Some(status) = c.exit_status(waited) {
                return Err(NetError::PasstExited {
                    status,
                    stderr: c.stderr_text(),
                });
            }
        }
        log::info!("started {}", p.what);
        Ok(p)
    }

    /// Connects to a passt listening on `path` (`passt -s PATH`).
    pub fn connect(path: &Path) -> Result<Passt, NetError> {
        let err = |source| NetError::PasstConnect {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(err)?;
        Self::from_stream(stream, format!("passt at {}", path.display())).map_err(err)
    }

    /// Speaks passt's framing on an already connected stream.
    pub fn from_stream(stream: UnixStream, what: String) -> io::Result<Passt> {
        stream.set_nonblocking(true)?;
        super::set_socket_buffers(stream.as_raw_fd(), SOCKET_BUFFER);
        Ok(Passt {
            stream,
            child: None,
            what,
            rx: Mutex::new(RxBuffer::new()),
            tx: Mutex::new(()),
            dead: AtomicBool::new(false),
            dead_reason: Mutex::new(String::new()),
            counters: Counters::default(),
            log: LogLimit::default(),
            finished_partial: AtomicU64::new(0),
        })
    }

    /// The pid of the passt kettle started (None for `passt:PATH`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// Marks the connection dead (once), with the reason and what passt said; waits up to
    /// `wait` for passt's exit status (zero on vCPU threads).
    fn mark_dead(&self, reason: String, wait: Duration) {
        // The reason is in place before `dead` is seen set.
        let mut slot = self.dead_reason.lock().unwrap();
        if self.dead.load(Ordering::SeqCst) {
            return;
        }
        let mut full = format!("{}: {reason}", self.what);
        if let Some(c) = &self.child {
            match c.exit_status(wait) {
                Some(s) => full.push_str(&format!("; passt exited ({s})")),
                None => full.push_str("; passt is still running"),
            }
            full.push_str(&format!("; it said: {}", c.stderr_text()));
        }
        log::error!("{full}");
        *slot = full;
        self.dead.store(true, Ordering::SeqCst);
    }

    fn dead_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            self.dead_reason.lock().unwrap().clone(),
        )
    }

    /// One `sendmsg` of `parts` (non-blocking, no SIGPIPE).
    fn send_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        // SAFETY: msghdr is plain data; the iovecs point at live slices (IoSlice is
        // ABI-compatible with iovec).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = parts.len() as _;
        // SAFETY: a valid socket and msghdr.
        let r = unsafe {
            libc::sendmsg(
                self.stream.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }

    /// Writes the rest of a frame of which `done` bytes (of header + frame) went out.
    fn finish(&self, hdr: &[u8; 4], frame: &[u8], mut done: usize) -> Result<(), String> {
        let total = 4 + frame.len();
        let deadline = Instant::now() + FINISH_TIMEOUT;
        // Each round either writes bytes or waits; bounded by the deadline and a count.
        for _ in 0..10_000 {
            if done >= total {
                return Ok(());
            }
            let parts: [IoSlice<'_>; 2];
            let slices: &[IoSlice<'_>] = if done < 4 {
                parts = [IoSlice::new(&hdr[done..]), IoSlice::new(frame)];
                &parts
            } else {
                parts = [IoSlice::new(&frame[done - 4..]), IoSlice::new(&[])];
                &parts[..1]
            };
            match self.send_parts(slices) {
                Ok(n) => done += n,
                Err(e) if super::would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(format!(
                            "passt stopped reading in the middle of a frame (for {} ms); \
                             the stream cannot be resynchronised",
                            FINISH_TIMEOUT.as_millis()
                        ));
                    }
                    super::poll_fd(self.stream.as_raw_fd(), libc::POLLOUT, deadline - now);
                }
                Err(e) => return Err(format!("writing to passt failed: {e}")),
            }
        }
        Err("writing to passt made no progress".into())
    }
}

/// A pipe for the child's stderr: our end non-blocking and close-on-exec, the child's end
/// non-blocking (a full pipe loses passt's messages rather than stopping passt).
fn stderr_pipe() -> io::Result<(File, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((r, w))
}

impl NetBackend for Passt {
    fn send(&self, frame: &[u8]) {
        if frame.is_empty() || frame.len() > MAX_FRAME {
            self.counters.dropped(1);
            if self.log.allow() {
                log::warn!("{}: dropped a {}-byte frame", self.what, frame.len());
            }
            return;
        }
        if self.dead.load(Ordering::Relaxed) {
            self.counters.dropped(1);
            return;
        }
        let frame = super::strip_eth_padding(frame);
        let _serial = self.tx.lock().unwrap();
        let hdr = (frame.len() as u32).to_be_bytes();
        let total = 4 + frame.len();
        let mut sent = None;
        for _ in 0..4 {
            match self.send_parts(&[IoSlice::new(&hdr), IoSlice::new(frame)]) {
                Ok(n) => {
                    sent = Some(n);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if super::would_block(&e) => break,
                Err(e) => {
                    self.counters.dropped(1);
                    self.mark_dead(format!("writing to passt failed: {e}"), Duration::ZERO);
                    return;
                }
            }
        }
        match sent {
            // Nothing written: the stream is still in sync; drop this frame only.
            None | Some(0) => self.counters.dropped(1),
            Some(n) if n >= total => self.counters.sent(frame.len()),
            Some(n) => match self.finish(&hdr, frame, n) {
                Ok(()) => {
                    self.finished_partial.fetch_add(1, Ordering::Relaxed);
                    self.counters.sent(frame.len());
                }
                Err(reason) => {
                    self.counters.dropped(1);
                    self.mark_dead(reason, Duration::ZERO);
                }
            },
        }
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(self.dead_error());
        }
        let mut rx = self.rx.lock().unwrap();
        for _ in 0..MAX_READS {
            let end = match rx.next_read() {
                Next::Frame(0) => {
                    // An empty frame carries nothing: skip it.
                    rx.have = 0;
                    continue;
                }
                Next::Frame(len) => {
                    rx.have = 0;
                    let n = len.min(buf.len());
                    buf[..n].copy_from_slice(&rx.data[4..4 + n]);
                    self.counters.received(n);
                    return Ok(Some(n));
                }
                Next::BadLength(len) => {
                    self.mark_dead(
                        format!(
                            "protocol error: a frame length of {len} bytes (at most {MAX_FRAME} \
                         allowed); the stream is corrupt"
                        ),
                        EXIT_WAIT,
                    );
                    return Err(self.dead_error());
                }
                Next::Read { end } => end,
            };
            let have = rx.have;
            match (&self.stream).read(&mut rx.data[have..end]) {
                Ok(0) => {
                    self.mark_dead("passt closed the connection".into(), EXIT_WAIT);
                    return Err(self.dead_error());
                }
                Ok(n) => rx.have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.mark_dead(format!("reading from passt failed: {e}"), EXIT_WAIT);
                    return Err(self.dead_error());
                }
            }
        }
        Ok(None)
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.stream.as_raw_fd())
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    fn stats(&self) -> NetStats {
        self.counters.snapshot()
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let mut child = c.child.lock().unwrap_or_else(|e| e.into_inner());
            // Killing an exited (not yet reaped) child is harmless; wait reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_util::recv_until;
    use crate::net::{open, BackendSpec};
    use std::io::Write;

    fn pair() -> (Passt, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let p = Passt::from_stream(a, "test stream".into()).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (p, b)
    }

    fn framed(frame: &[u8]) -> Vec<u8> {
        let mut v = (frame.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn recv(p: &Passt) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_FRAME];
        Ok(p.recv(&mut buf)?.map(|n| buf[..n].to_vec()))
    }

    #[test]
    fn recv_reassembles_frames_split_anywhere() {
        let (p, mut peer) = pair();
        assert_eq!(recv(&p).unwrap(), None);
        let f1: Vec<u8> = (0..60u8).collect();
        let f2: Vec<u8> = (0..1514u32).map(|i| (i * 7) as u8).collect();
        let mut wire = framed(&f1);
        wire.extend(framed(&f2));
        // Header split over writes, body split over writes.
        peer.write_all(&wire[..2]).unwrap();
        assert_eq!(recv(&p).unwrap(), None);
        peer.write_all(&wire[2..30]).unwrap();
        assert_eq!(recv(&p).unwrap(), None);
        peer.write_all(&wire[30..70]).unwrap();
        assert_eq!(recv(&p).unwrap().as_deref(), Some(&f1[..]));
        assert_eq!(recv(&p).unwrap(), None);
        peer.write_all(&wire[70..1000]).unwrap();
        assert_eq!(recv(&p).unwrap(), None);
        peer.write_all(&wire[1000..]).unwrap();
        assert_eq!(recv(&p).unwrap().as_deref(), Some(&f2[..]));
        assert_eq!(recv(&p).unwrap(), None);

        // Many frames in one write come out one per call; a zero-length one is skipped; a
        // maximal frame fits.
        let big = vec![0xabu8; MAX_FRAME];
        let mut wire = Vec::new();
        for i in 0..50u8 {
            wire.extend(framed(&[i; 64]));
        }
        wire.extend(framed(&[]));
        wire.extend(framed(&big));
        wire.extend(framed(b"last"));
        let writer = {
            let mut peer = peer.try_clone().unwrap();
            std::thread::spawn(move || peer.write_all(&wire).unwrap())
        };
        for i in 0..50u8 {
            let f = recv_until(&p, Duration::from_secs(5), |_| true).unwrap();
            assert_eq!(f, vec![i; 64]);
        }
        assert_eq!(
            recv_until(&p, Duration::from_secs(5), |_| true).unwrap(),
            big
        );
        assert_eq!(
            recv_until(&p, Duration::from_secs(5), |_| true).unwrap(),
            b"last"
        );
        writer.join().unwrap();
        let s = p.stats();
        assert_eq!(s.rx_frames, 2 + 50 + 2);
    }

    #[test]
    fn frames_not_yet_taken_keep_the_fd_readable() {
        // The event loop waits for readability (level-triggered) and may stop taking frames
        // at any point: what it has not taken must keep the fd readable.
        let (p, mut peer) = pair();
        let mut wire = Vec::new();
        for i in 0..3u8 {
            wire.extend(framed(&[i; 100]));
        }
        peer.write_all(&wire).unwrap();
        let fd = p.rx_fd().unwrap();
        for i in 0..3u8 {
            let ev = crate::net::poll_fd(fd, libc::POLLIN, Duration::ZERO);
            assert_ne!(
                ev & libc::POLLIN,
                0,
                "frame {i} waits but the fd is not readable"
            );
            assert_eq!(recv(&p).unwrap(), Some(vec![i; 100]));
        }
        assert_eq!(crate::net::poll_fd(fd, libc::POLLIN, Duration::ZERO), 0);
        assert_eq!(recv(&p).unwrap(), None);
    }

    #[test]
    fn a_bogus_length_kills_the_backend() {
        let (p, mut peer) = pair();
        peer.write_all(&framed(b"fine")).unwrap();
        peer.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .unwrap();
        assert_eq!(recv(&p).unwrap().as_deref(), Some(&b"fine"[..]));
        let e = recv(&p).unwrap_err().to_string();
        assert!(e.contains("protocol error") && e.contains("65537"), "{e}");
        // Dead for good: recv keeps failing, send drops.
        assert!(recv(&p).is_err());
        p.send(b"dropped");
        assert_eq!(p.stats().tx_dropped, 1);
    }

    #[test]
    fn peer_closing_kills_the_backend() {
        let (p, peer) = pair();
        drop(peer);
        let e = recv(&p).unwrap_err().to_string();
        assert!(e.contains("closed the connection"), "{e}");
    }

    #[test]
    fn send_frames_with_a_length_prefix() {
        let (p, mut peer) = pair();
        let f: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        p.send(&f);
        p.send(b"x");
        let mut got = vec![0u8; 4 + f.len() + 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &1000u32.to_be_bytes());
        assert_eq!(&got[4..1004], &f[..]);
        assert_eq!(&got[1004..], &[0, 0, 0, 1, b'x']);
        let s = p.stats();
        assert_eq!((s.tx_frames, s.tx_bytes, s.tx_dropped), (2, 1001, 0));
        // Empty and oversized frames are dropped, never written.
        p.send(&[]);
        p.send(&vec![0u8; MAX_FRAME + 1]);
        assert_eq!(p.stats().tx_dropped, 2);
    }

    #[test]
    fn a_full_socket_drops_whole_frames_and_never_desyncs() {
        let (p, peer) = pair();
        // Nobody reads: fill the socket until frames are dropped.
        let f = vec![0x5au8; 1500];
        for _ in 0..100_000 {
            p.send(&f);
            if p.stats().tx_dropped > 0 {
                break;
            }
        }
        let s = p.stats();
        assert!(s.tx_dropped > 0, "the socket never filled up");
        assert!(!p.dead.load(Ordering::Relaxed), "{}", p.dead_error());
        // Whatever went out is whole frames: read them all back.
        peer.set_nonblocking(true).unwrap();
        let mut wire = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match (&peer).read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => wire.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        let mut off = 0;
        let mut frames = 0;
        while off < wire.len() {
            let len = u32::from_be_bytes(wire[off..off + 4].try_into().unwrap()) as usize;
            assert_eq!(len, 1500, "frame {frames} at offset {off}");
            assert!(wire[off + 4..off + 4 + len].iter().all(|&b| b == 0x5a));
            off += 4 + len;
            frames += 1;
        }
        assert_eq!(off, wire.len(), "no partial frame on the stream");
        assert_eq!(frames, s.tx_frames);
    }

    #[test]
    fn concurrent_senders_and_a_slow_reader_keep_the_stream_in_sync() {
        let (p, mut peer) = pair();
        let p = std::sync::Arc::new(p);
        // Small buffers make partial writes (and their completion) frequent.
        crate::net::set_socket_buffers(p.stream.as_raw_fd(), 2048);
        crate::net::set_socket_buffers(peer.as_raw_fd(), 2048);
        const PER_THREAD: usize = 300;
        let senders: Vec<_> = (0..3u8)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        let len = 60 + (i * 997 + usize::from(t) * 13) % 9000;
                        p.send(&vec![t; len]);
                    }
                })
            })
            .collect();
        let reader = std::thread::spawn(move || {
            let mut frames = 0u64;
            let mut hdr = [0u8; 4];
            let mut body = vec![0u8; MAX_FRAME];
            while peer.read_exact(&mut hdr).is_ok() {
                let len = u32::from_be_bytes(hdr) as usize;
                assert!((60..9060).contains(&len), "desynchronised: length {len}");
                peer.read_exact(&mut body[..len]).unwrap();
                let t = body[0];
                assert!(t < 3 && body[..len].iter().all(|&b| b == t), "mixed frame");
                frames += 1;
                if frames.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            frames
        });
        for s in senders {
            s.join().unwrap();
        }
        let stats = p.stats();
        assert!(!p.dead.load(Ordering::Relaxed), "{}", p.dead_error());
        assert_eq!(stats.tx_frames + stats.tx_dropped, 3 * PER_THREAD as u64);
        drop(p); // closes the stream: the reader sees EOF
        let received = reader.join().unwrap();
        assert_eq!(received, stats.tx_frames);
    }

    #[test]
    fn a_frame_that_went_out_partly_is_finished_when_the_reader_comes_back() {
        let (p, mut peer) = pair();
        crate::net::set_socket_buffers(p.stream.as_raw_fd(), 4096);
        let f: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
        // The reader starts late (well within FINISH_TIMEOUT), after the frame went out partly.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            let mut got = vec![0u8; 4 + 60_000];
            peer.read_exact(&mut got).unwrap();
            got
        });
        p.send(&f);
        let got = reader.join().unwrap();
        assert!(!p.dead.load(Ordering::Relaxed), "{}", p.dead_error());
        assert_eq!(p.finished_partial.load(Ordering::Relaxed), 1);
        assert_eq!(&got[..4], &60_000u32.to_be_bytes());
        assert!(got[4..] == f[..], "the frame arrived intact");
        assert_eq!(p.stats().tx_frames, 1);
    }

    #[test]
    fn a_reader_that_stops_mid_frame_breaks_the_stream_after_the_timeout() {
        let (p, peer) = pair();
        crate::net::set_socket_buffers(p.stream.as_raw_fd(), 4096);
        // Big frames: the first that does not fit entirely is written partly (a unix stream
        // socket takes what fits), then the backend waits FINISH_TIMEOUT for the reader,
        // which never comes.
        let f = vec![1u8; 60_000];
        let start = Instant::now();
        for _ in 0..1000 {
            p.send(&f);
            if p.dead.load(Ordering::Relaxed) {
                break;
            }
        }
        assert!(
            p.dead.load(Ordering::Relaxed),
            "a 60000-byte frame never went out partly through an 8 KiB socket buffer"
        );
        assert!(start.elapsed() >= FINISH_TIMEOUT);
        let e = recv(&p).unwrap_err().to_string();
        assert!(
            e.contains("stopped reading in the middle of a frame"),
            "{e}"
        );
        drop(peer);
    }

    #[test]
    fn a_missing_or_failing_passt_is_reported() {
        match Passt::spawn_program(OsStr::new("/nonexistent/passt")) {
            Err(NetError::PasstNotFound) => {}
            Err(e) => panic!("expected PasstNotFound, got {e}"),
            Ok(p) => panic!("started {}", p.describe()),
        }
        assert!(NetError::PasstNotFound
            .to_string()
            .contains("passt not found in PATH: install the passt package"));
        // A program that rejects passt's options and exits: its status and stderr are shown.
        match Passt::spawn_program(OsStr::new("/bin/sh")) {
            Err(e @ NetError::PasstExited { .. }) => {
                let s = e.to_string();
                assert!(s.contains("exited right after it was started"), "{s}");
                assert!(s.contains("exit status: 2"), "{s}");
                assert!(
                    s.to_lowercase().contains("option"),
                    "sh's complaint is shown: {s}"
                );
            }
            Err(e) => panic!("expected PasstExited, got {e}"),
            Ok(p) => panic!("started {}", p.describe()),
        }
        // passt:PATH with nobody there.
        let e = open(
            &BackendSpec::Passt(Some("/nonexistent/passt.sock".into())),
            [0, 3, 0xff, 0, 0, 1],
            None,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("/nonexistent/passt.sock") && e.contains("passt -s /nonexistent/passt.sock"),
            "{e}"
        );
    }

    // ---- the real passt ------------------------------------------------------------------

    const MAC: [u8; 6] = [0x00, 0x03, 0xff, 0x11, 0x22, 0x33];
    const XID: u32 = 0x6b65_7474;

    fn ip_checksum(h: &[u8]) -> u16 {
        let mut s: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// A DHCPDISCOVER from MAC, broadcast, as a freshly booted guest sends it (RFC 2131).
    fn dhcp_discover() -> Vec<u8> {
        let mut bootp = vec![0u8; 236];
        bootp[0] = 1; // BOOTREQUEST
        bootp[1] = 1; // Ethernet
        bootp[2] = 6;
        bootp[4..8].copy_from_slice(&XID.to_be_bytes());
        bootp[10] = 0x80; // broadcast flag
        bootp[28..34].copy_from_slice(&MAC);
        bootp.extend_from_slice(&[99, 130, 83, 99]); // magic cookie
        bootp.extend_from_slice(&[53, 1, 1]); // DHCPDISCOVER
        bootp.extend_from_slice(&[55, 3, 1, 3, 6]); // asks: netmask, router, DNS
        bootp.push(255);
        let udp_len = 8 + bootp.len();
        let mut udp = Vec::new();
        udp.extend_from_slice(&68u16.to_be_bytes());
        udp.extend_from_slice(&67u16.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no checksum (allowed for IPv4)
        udp.extend_from_slice(&bootp);
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ];
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        let c = ip_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut eth = vec![0xff; 6];
        eth.extend_from_slice(&MAC);
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        eth.extend_from_slice(&udp);
        eth
    }

    /// The DHCP message type of a frame if it is a DHCP reply to our XID for our MAC.
    fn dhcp_reply_type(f: &[u8]) -> Option<u8> {
        if f.len() < 14 + 20 + 8 + 240 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
            return None;
        }
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let udp = 14 + ihl;
        if f[udp..udp + 2] != 67u16.to_be_bytes() || f[udp + 2..udp + 4] != 68u16.to_be_bytes() {
            return None;
        }
        let b = &f[udp + 8..];
        if b.len() < 240 || b[0] != 2 || b[4..8] != XID.to_be_bytes() || b[28..34] != MAC {
            return None;
        }
        let mut opts = &b[240..];
        // Bounded: each step consumes at least one byte.
        while let [code, rest @ ..] = opts {
            match *code {
                255 => break,
                0 => opts = rest,
                _ => {
                    let [len, rest @ ..] = rest else { break };
                    let len = usize::from(*len);
                    if rest.len() < len {
                        break;
                    }
                    if *code == 53 && len == 1 {
                        return Some(rest[0]);
                    }
                    opts = &rest[len..];
                }
            }
        }
        None
    }

    /// Starts the real passt (as `backend=passt` does) and gets a DHCP offer from it. passt
    /// answers DHCP itself: nothing leaves the machine.
    #[test]
    fn real_passt_answers_dhcp() {
        let b = match open(&BackendSpec::Passt(None), MAC, None) {
            Ok(b) => b,
            Err(NetError::PasstNotFound) => panic!(
                "passt is not installed (not found in PATH): run resources/setup.sh, which \
                 installs it (Debian package passt)"
            ),
            Err(e) => panic!("cannot start passt: {e}"),
        };
        let d = b.describe();
        assert!(d.starts_with("passt (pid "), "{d}");
        let pid: i32 = d
            .trim_start_matches("passt (pid ")
            .trim_end_matches(')')
            .parse()
            .unwrap();
        let discover = dhcp_discover();
        let mut offer = None;
        // Bounded: up to 5 tries, 2 s each.
        for _ in 0..5 {
            b.send(&discover);
            offer = recv_until(&*b, Duration::from_secs(2), |f| {
                dhcp_reply_type(f) == Some(2)
            });
            if offer.is_some() {
                break;
            }
        }
        let offer = offer.expect("passt sent no DHCPOFFER for our DHCPDISCOVER within 10 s");
        assert_eq!(&offer[..6], &MAC, "the offer is addressed to our MAC");
        let s = b.stats();
        assert!(s.tx_frames >= 1 && s.rx_frames >= 1, "{s:?}");
        // Dropping the backend kills and reaps passt.
        drop(b);
        // SAFETY: kill with signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(
            !alive,
            "passt (pid {pid}) still exists after the backend was dropped"
        );
    }

    /// A Linux network namespace stands in for a guest: a TAP interface (made by the TAP
    /// backend, then moved into the namespace) is pumped to and from a real passt, short
    /// frames padded to 60 bytes on the way as the 21140 pads them. The namespace takes the
    /// address passt hands out (the host's) and fetches 1 MiB from a server on the host's
    /// loopback through the gateway address, byte for byte. Nothing leaves the machine (passt
    /// maps the gateway to the loopback). Needs root, as CI runs.
    #[test]
    fn a_kernel_behind_passt_fetches_from_the_host_loopback_despite_padding() {
        use crate::net::tap::Tap;
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;

        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (a network namespace and a TAP interface); run as root");
        }
        let sh = |cmd: &str| -> (bool, String) {
            let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            (o.status.success(), text.trim().to_string())
        };
        // passt copies the host's address and gateway from its default route.
        let (_, route) = sh("ip -4 route show default");
        let words: Vec<&str> = route.split_whitespace().collect();
        let field = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1]);
        let (Some(gw), Some(dev)) = (field("via"), field("dev")) else {
            panic!("passt needs a default route to copy; this host has none: {route:?}");
        };
        let (_, addr) = sh(&format!(
            "ip -4 -o addr show dev {dev} | awk '{{print $4}}' | head -n 1"
        ));
        assert!(addr.contains('/'), "no IPv4 address on {dev}: {addr:?}");

        let ns = format!("kettle-passt-{}", std::process::id());
        let tap_name = format!("kp{}", std::process::id() % 100_000);
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let passt = open(&BackendSpec::Passt(None), MAC, None).unwrap_or_else(|e| panic!("{e}"));
        let tap = Arc::new(Tap::open(&tap_name).unwrap_or_else(|e| panic!("{e}")));
        let (ok, out) = sh(&format!("ip netns add {ns}"));
        assert!(ok, "ip netns add: {out}");
        let _ns = Netns(ns.clone());
        let mac = crate::net::mac_colons(&MAC);
        let (ok, out) = sh(&format!(
            "ip link set {tap_name} netns {ns} && ip netns exec {ns} sh -c '\
             ip link set lo up && ip link set {tap_name} address {mac} && \
             ip link set {tap_name} up && ip addr add {addr} dev {tap_name} && \
             ip route add default via {gw} dev {tap_name}'"
        ));
        assert!(ok, "setting up the namespace: {out}");

        // The server: 1 MiB of patterned bytes to the first client.
        let data: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let data_file = crate::net::test_util::TempDir::new("passt-ns");
        let data_path = data_file.0.join("data");
        std::fs::write(&data_path, &data).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&data).is_ok()
        });

        let stop = Arc::new(AtomicBool::new(false));
        let pump = |from: Arc<dyn NetBackend>, to: Arc<dyn NetBackend>, pad: bool| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; MAX_FRAME];
                while !stop.load(Ordering::Relaxed) {
                    crate::net::poll_fd(
                        from.rx_fd().unwrap(),
                        libc::POLLIN,
                        Duration::from_millis(50),
                    );
                    // Bounded: a few hundred frames per wake-up.
                    for _ in 0..256 {
                        match from.recv(&mut buf) {
                            Ok(Some(mut n)) => {
                                if pad && n < 60 {
                                    buf[n..60].fill(0);
                                    n = 60;
                                }
                                to.send(&buf[..n]);
                            }
                            Ok(None) => break,
                            Err(e) => panic!("{}: {e}", from.describe()),
                        }
                    }
                }
            })
        };
        let tap_dyn: Arc<dyn NetBackend> = tap.clone();
        let t1 = pump(tap_dyn.clone(), passt.clone(), true);
        let t2 = pump(passt.clone(), tap_dyn, false);

        let (ok, got) = sh(&format!(
            "ip netns exec {ns} timeout 30 bash -c 'exec 3<>/dev/tcp/{gw}/{port} && \
             sha256sum <&3 | cut -d\" \" -f1'"
        ));
        let (_, want) = sh(&format!(
            "sha256sum <{} | cut -d' ' -f1",
            data_path.display()
        ));
        stop.store(true, Ordering::Relaxed);
        t1.join().unwrap();
        t2.join().unwrap();
        assert!(ok, "the fetch in the namespace failed: {got}");
        assert_eq!(
            got, want,
            "what arrived through passt differs from what was sent"
        );
        assert!(
            server.join().unwrap(),
            "the server could not send everything"
        );
        assert_eq!(passt.stats().tx_dropped, 0);
    }

    /// A passt that dies while the VM runs: recv fails once with what happened.
    #[test]
    fn real_passt_dying_is_reported_with_its_exit() {
        let p = match Passt::spawn() {
            Ok(p) => p,
            Err(NetError::PasstNotFound) => panic!(
                "passt is not installed (not found in PATH): run resources/setup.sh, which \
                 installs it (Debian package passt)"
            ),
            Err(e) => panic!("cannot start passt: {e}"),
        };
        let pid = p.pid().unwrap() as i32;
        // SAFETY: signals our own child, which is not reaped yet (the pid cannot be reused).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let fd = p.rx_fd().unwrap();
        crate::net::poll_fd(fd, libc::POLLIN, Duration::from_secs(5));
        let e = recv(&p).unwrap_err().to_string();
        assert!(
            e.contains(&format!("passt (pid {pid}): passt closed the connection")),
            "{e}"
        );
        assert!(e.contains("passt exited (signal: 9"), "{e}");
        p.send(b"after death");
        assert_eq!(p.stats().tx_dropped, 1);
    }

    /// `passt:PATH`: a passt the user started with `passt -s PATH` (here: the test).
    #[test]
    fn real_passt_on_a_socket_path_answers_dhcp() {
        let dir = crate::net::test_util::TempDir::new("passt-s");
        // Started as root, passt binds its socket as `nobody`: let it into the directory.
        std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let path = dir.0.join("passt.sock");
        let mut child = match Command::new("passt")
            .args(["--foreground", "--quiet", "--one-off", "--socket"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
                "passt is not installed (not found in PATH): run resources/setup.sh, which \
                 installs it (Debian package passt)"
            ),
            Err(e) => panic!("cannot start passt: {e}"),
        };
        struct Reap<'a>(&'a mut Child);
        impl Drop for Reap<'_> {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _reap = Reap(&mut child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let spec = BackendSpec::Passt(Some(path.clone()));
        let b = open(&spec, MAC, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b.describe(), format!("passt at {}", path.display()));
        let discover = dhcp_discover();
        let mut offer = None;
        for _ in 0..5 {
            b.send(&discover);
            offer = recv_until(&*b, Duration::from_secs(2), |f| {
                dhcp_reply_type(f) == Some(2)
            });
            if offer.is_some() {
                break;
            }
        }
        assert!(offer.is_some(), "passt -s sent no DHCPOFFER within 10 s");
    }
}
