//! The host side of a serial port: where a UART's output goes and where its input comes from.
//!
//! A [`SerialSpec`] names the backend (`stdio`, `file:PATH`, `unix:PATH`, `none`);
//! [`ConsoleBackend::open`] opens it. The UART gets [`ConsoleBackend::output`] as its transmit
//! sink; the event loop polls [`ConsoleBackend::input_fds`] for readability (level-triggered) and
//! calls [`ConsoleBackend::on_readable`] for each ready fd.
//!
//! - `stdio`: output to standard output, input from standard input. A terminal on stdin is put
//!   in raw mode (`cfmakeraw`: no echo, no line editing, no signals, so Ctrl-C reaches the
//!   guest; no output post-processing, so host messages must end lines with `\r\n`) and
//!   restored when the backend is dropped, at `exit()` and by [`restore_terminal`], which the
//!   binary calls from its panic hook. The escape sequence Ctrl-A x quits (as in QEMU); Ctrl-A
//!   Ctrl-A sends one Ctrl-A; Ctrl-A h prints help; Ctrl-A followed by anything else is dropped.
//! - `file:PATH`: output to a created/truncated file; no input.
//! - `unix:PATH`: a listening unix stream socket; one client at a time (a second connection is
//!   closed at once). Output while nobody is connected (or while the client reads too slowly)
//!   is kept, the last [`UNIX_BUFFER_LIMIT`] bytes, and delivered when a client connects. Client
//!   bytes go to the guest unfiltered: there is no escape sequence on a socket.
//! - `none`: output discarded; no input.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

/// Ctrl-A, the first key of the escape sequence.
pub const ESCAPE_KEY: u8 = 0x01;
/// The key that quits after [`ESCAPE_KEY`].
pub const QUIT_KEY: u8 = b'x';
/// Output kept for a unix-socket client that is not there (or not keeping up).
pub const UNIX_BUFFER_LIMIT: usize = 64 * 1024;
/// Largest read from an input fd per [`ConsoleBackend::on_readable`] call.
const READ_CHUNK: usize = 4096;

const ESCAPE_HELP: &str = "\r\nkettle console escapes:\r\n\
    \x20 C-a x    quit kettle (the VM stops)\r\n\
    \x20 C-a C-a  send C-a to the guest\r\n\
    \x20 C-a h    this help\r\n";

/// Which backend a serial port uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialSpec {
    /// Standard input and output (the terminal).
    Stdio,
    /// Output to a file, created or truncated; no input.
    File(PathBuf),
    /// A unix stream socket kettle listens on.
    Unix(PathBuf),
    /// Not connected: output discarded, no input.
    None,
}

impl FromStr for SerialSpec {
    type Err = ConsoleError;

    fn from_str(s: &str) -> Result<Self, ConsoleError> {
        let path = |kind: &'static str, p: &str| {
            if p.is_empty() {
                Err(ConsoleError::MissingPath(kind))
            } else {
                Ok(PathBuf::from(p))
            }
        };
        match s {
            "stdio" => Ok(SerialSpec::Stdio),
            "none" => Ok(SerialSpec::None),
            _ => {
                if let Some(p) = s.strip_prefix("file:") {
                    Ok(SerialSpec::File(path("file", p)?))
                } else if let Some(p) = s.strip_prefix("unix:") {
                    Ok(SerialSpec::Unix(path("unix", p)?))
                } else {
                    Err(ConsoleError::UnknownBackend(s.to_string()))
                }
            }
        }
    }
}

impl fmt::Display for SerialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialSpec::Stdio => write!(f, "stdio"),
            SerialSpec::File(p) => write!(f, "file:{}", p.display()),
            SerialSpec::Unix(p) => write!(f, "unix:{}", p.display()),
            SerialSpec::None => write!(f, "none"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("unknown serial backend `{0}`: expected stdio, file:PATH, unix:PATH or none")]
    UnknownBackend(String),
    #[error("serial backend `{0}:` needs a path after the colon, as in `{0}:/tmp/ttyS0`")]
    MissingPath(&'static str),
    #[error("cannot create serial output file {path}: {source}", path = path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} exists and is not a socket; refusing to replace it with the serial socket", path = path.display())]
    NotASocket { path: PathBuf },
    #[error("serial socket {path} is in use by another process", path = path.display())]
    SocketInUse { path: PathBuf },
    #[error("cannot listen on serial socket {path}: {source}", path = path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot put the terminal on standard input into raw mode: {0}")]
    RawMode(#[source] io::Error),
}

/// What [`ConsoleBackend::on_readable`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// Zero or more bytes for the guest were appended to the buffer.
    Input,
    /// The user typed the quit escape (bytes typed before it were appended).
    Quit,
    /// A client connected or disconnected: call [`ConsoleBackend::input_fds`] again.
    FdsChanged,
    /// The fd reached end of file (stdin closed): stop polling it; the VM keeps running.
    Closed,
}

// ---------------------------------------------------------------------------------------------
// Terminal raw mode.

static SAVED_TERMIOS: OnceLock<libc::termios> = OnceLock::new();
static RAW_MODE_ACTIVE: AtomicBool = AtomicBool::new(false);
static ATEXIT: Once = Once::new();

/// Puts the terminal on stdin back the way it was before kettle put it in raw mode. Idempotent,
/// lock-free and safe to call from a panic hook or an exit path; does nothing when raw mode is
/// not active.
pub fn restore_terminal() {
    if RAW_MODE_ACTIVE.swap(false, Ordering::SeqCst) {
        if let Some(t) = SAVED_TERMIOS.get() {
            // SAFETY: tcsetattr reads the termios struct we pass; fd 0 stays open.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
        }
    }
}

extern "C" fn restore_terminal_at_exit() {
    restore_terminal();
}

/// Puts stdin in raw mode if it is a terminal; returns whether it did.
fn enter_raw_mode() -> Result<bool, ConsoleError> {
    // SAFETY: isatty only inspects the fd.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return Ok(false);
    }
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut current: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut current) } != 0 {
        return Err(ConsoleError::RawMode(io::Error::last_os_error()));
    }
    // Keep the very first state: a second open after a restore must not save raw mode.
    let original = *SAVED_TERMIOS.get_or_init(|| current);
    let mut raw = original;
    // SAFETY: cfmakeraw edits the struct we own. It clears ISIG, so Ctrl-C, Ctrl-Z and Ctrl-\
    // reach the guest instead of signalling kettle.
    unsafe { libc::cfmakeraw(&mut raw) };
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    ATEXIT.call_once(|| {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { libc::atexit(restore_terminal_at_exit) };
    });
    // SAFETY: tcsetattr reads the struct we pass.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
        return Err(ConsoleError::RawMode(io::Error::last_os_error()));
    }
    RAW_MODE_ACTIVE.store(true, Ordering::SeqCst);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// The escape sequence.

/// Recognises Ctrl-A x (quit) and Ctrl-A Ctrl-A (a literal Ctrl-A) in typed input.
#[derive(Debug, Default)]
struct EscapeFilter {
    after_escape: bool,
}

/// What the filter made of a chunk of input.
#[derive(Debug, PartialEq, Eq)]
enum Filtered {
    Continue,
    Quit,
    Help,
}

impl EscapeFilter {
    /// Appends the guest-bound bytes of `input` to `out`. Stops at a quit; the state carries
    /// over between calls, so an escape split across reads still works.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Filtered {
        let mut result = Filtered::Continue;
        for &b in input {
            if self.after_escape {
                self.after_escape = false;
                match b {
                    ESCAPE_KEY => out.push(ESCAPE_KEY),
                    QUIT_KEY => return Filtered::Quit,
                    b'h' | b'?' => result = Filtered::Help,
                    _ => {}
                }
            } else if b == ESCAPE_KEY {
                self.after_escape = true;
            } else {
                out.push(b);
            }
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Backends.

/// A file shared between the backend and the sinks it hands out.
struct FileSink(Arc<File>);

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// The unix backend's shared state: the client and the output it has not received yet.
#[derive(Default)]
struct UnixShared {
    client: Option<UnixStream>,
    /// A write to the client failed; `on_readable` will see the hangup and drop it.
    client_broken: bool,
    pending: VecDeque<u8>,
}

impl UnixShared {
    fn push_output(&mut self, data: &[u8]) {
        self.pending.extend(data);
        let excess = self.pending.len().saturating_sub(UNIX_BUFFER_LIMIT);
        self.pending.drain(..excess);
        self.flush_pending();
    }

    /// Sends as much pending output as the client takes without blocking.
    fn flush_pending(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        if self.client_broken {
            return;
        }
        let fd = client.as_raw_fd();
        while !self.pending.is_empty() {
            let (chunk, _) = self.pending.as_slices();
            // SAFETY: sending from a live slice on a socket we own; MSG_NOSIGNAL avoids SIGPIPE.
            let n = unsafe {
                libc::send(
                    fd,
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n >= 0 {
                self.pending.drain(..n as usize);
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => {
                    log::debug!("console: serial socket client write failed: {e}");
                    self.client_broken = true;
                    break;
                }
            }
        }
    }
}

struct UnixSink(Arc<Mutex<UnixShared>>);

impl Write for UnixSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push_output(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Backend {
    Stdio {
        /// The input fd: stdin, or a pipe in tests.
        input: RawFd,
        open: bool,
        raw_mode: bool,
        escape: EscapeFilter,
    },
    File(Arc<File>),
    Unix {
        path: PathBuf,
        /// Device and inode of the socket file we created, to remove only that on drop.
        identity: Option<(u64, u64)>,
        listener: UnixListener,
        shared: Arc<Mutex<UnixShared>>,
    },
    None,
}

/// An opened serial backend. See the module documentation.
pub struct ConsoleBackend {
    spec: SerialSpec,
    backend: Backend,
}

impl ConsoleBackend {
    /// Opens the backend `spec` names: raw mode for a terminal on stdin, a created/truncated
    /// file, or a listening socket (replacing a stale socket file).
    pub fn open(spec: &SerialSpec) -> Result<ConsoleBackend, ConsoleError> {
        let backend = match spec {
            SerialSpec::Stdio => Backend::Stdio {
                input: libc::STDIN_FILENO,
                open: true,
                raw_mode: enter_raw_mode()?,
                escape: EscapeFilter::default(),
            },
            SerialSpec::File(path) => {
                let file = File::create(path).map_err(|source| ConsoleError::CreateFile {
                    path: path.clone(),
                    source,
                })?;
                Backend::File(Arc::new(file))
            }
            SerialSpec::Unix(path) => open_unix(path)?,
            SerialSpec::None => Backend::None,
        };
        Ok(ConsoleBackend {
            spec: spec.clone(),
            backend,
        })
    }

    /// A stdio backend reading from `fd` instead of stdin, never touching the terminal.
    #[cfg(test)]
    fn stdio_from_fd(fd: RawFd) -> ConsoleBackend {
        ConsoleBackend {
            spec: SerialSpec::Stdio,
            backend: Backend::Stdio {
                input: fd,
                open: true,
                raw_mode: false,
                escape: EscapeFilter::default(),
            },
        }
    }

    /// What this backend was opened from.
    pub fn spec(&self) -> &SerialSpec {
        &self.spec
    }

    /// A transmit sink for the UART. Writes never block: stdout and files are written directly;
    /// the socket backend buffers what its client does not take.
    pub fn output(&self) -> Box<dyn Write + Send> {
        match &self.backend {
            Backend::Stdio { .. } => Box::new(io::stdout()),
            Backend::File(f) => Box::new(FileSink(f.clone())),
            Backend::Unix { shared, .. } => Box::new(UnixSink(shared.clone())),
            Backend::None => Box::new(io::sink()),
        }
    }

    /// The fds to poll for readability now.
    pub fn input_fds(&self) -> Vec<RawFd> {
        match &self.backend {
            Backend::Stdio { input, open, .. } => {
                if *open {
                    vec![*input]
                } else {
                    Vec::new()
                }
            }
            Backend::Unix {
                listener, shared, ..
            } => {
                let mut v = vec![listener.as_raw_fd()];
                if let Some(c) = &shared.lock().unwrap().client {
                    v.push(c.as_raw_fd());
                }
                v
            }
            Backend::File(_) | Backend::None => Vec::new(),
        }
    }

    /// Handles readability of `fd` (one of [`ConsoleBackend::input_fds`]): reads once, appends
    /// guest-bound bytes to `buf` and says what happened.
    pub fn on_readable(&mut self, fd: RawFd, buf: &mut Vec<u8>) -> ConsoleEvent {
        match &mut self.backend {
            Backend::Stdio {
                input,
                open,
                escape,
                ..
            } if fd == *input && *open => {
                let mut chunk = [0u8; READ_CHUNK];
                // SAFETY: reading into a buffer we own; poll said the fd is readable, so this
                // does not block even though stdin is left in blocking mode.
                let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                if n > 0 {
                    match escape.feed(&chunk[..n as usize], buf) {
                        Filtered::Continue => ConsoleEvent::Input,
                        Filtered::Help => {
                            eprint!("{ESCAPE_HELP}");
                            ConsoleEvent::Input
                        }
                        Filtered::Quit => ConsoleEvent::Quit,
                    }
                } else if n == 0 {
                    log::info!("console: standard input closed; the VM keeps running");
                    *open = false;
                    ConsoleEvent::Closed
                } else {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => {
                            ConsoleEvent::Input
                        }
                        _ => {
                            log::warn!("console: reading standard input failed: {e}; ignoring it from now on");
                            *open = false;
                            ConsoleEvent::Closed
                        }
                    }
                }
            }
            Backend::Unix {
                listener, shared, ..
            } => {
                if fd == listener.as_raw_fd() {
                    accept_client(listener, shared)
                } else {
                    read_client(fd, shared, buf)
                }
            }
            _ => {
                log::debug!("console: readiness of fd {fd} is not ours");
                ConsoleEvent::Input
            }
        }
    }
}

impl Drop for ConsoleBackend {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Stdio { raw_mode: true, .. } => restore_terminal(),
            Backend::Unix {
                path,
                identity: Some(id),
                ..
            } => {
                // Remove the socket file only if it is still the one we created.
                if let Ok(m) = std::fs::symlink_metadata(path) {
                    if m.file_type().is_socket() && (m.dev(), m.ino()) == *id {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            _ => {}
        }
    }
}

fn open_unix(path: &Path) -> Result<Backend, ConsoleError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ConsoleError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            log::debug!("console: removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|source| ConsoleError::Listen {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ConsoleError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ConsoleError::Listen {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let listen_err = |source| ConsoleError::Listen {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok(Backend::Unix {
        path: path.to_path_buf(),
        identity,
        listener,
        shared: Arc::new(Mutex::new(UnixShared::default())),
    })
}

fn accept_client(listener: &UnixListener, shared: &Arc<Mutex<UnixShared>>) -> ConsoleEvent {
    let mut event = ConsoleEvent::Input;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let mut s = shared.lock().unwrap();
                if s.client.is_some() {
                    log::info!("console: refused a second serial socket client");
                    drop(stream);
                    continue;
                }
                if let Err(e) = stream.set_nonblocking(true) {
                    log::warn!("console: serial socket client dropped: {e}");
                    continue;
                }
                log::info!("console: serial socket client connected");
                s.client = Some(stream);
                s.client_broken = false;
                s.flush_pending();
                event = ConsoleEvent::FdsChanged;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return event,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("console: accepting a serial socket client failed: {e}");
                return event;
            }
        }
    }
}

fn read_client(fd: RawFd, shared: &Arc<Mutex<UnixShared>>, buf: &mut Vec<u8>) -> ConsoleEvent {
    let mut s = shared.lock().unwrap();
    let Some(client) = s.client.as_ref().filter(|c| c.as_raw_fd() == fd) else {
        log::debug!("console: readiness of fd {fd} is not ours");
        return ConsoleEvent::Input;
    };
    let mut chunk = [0u8; READ_CHUNK];
    // SAFETY: reading into a buffer we own from a non-blocking socket we own.
    let n = unsafe { libc::read(client.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
    if n > 0 {
        buf.extend_from_slice(&chunk[..n as usize]);
        s.flush_pending();
        return ConsoleEvent::Input;
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) {
            return ConsoleEvent::Input;
        }
        log::debug!("console: serial socket client read failed: {e}");
    }
    log::info!("console: serial socket client disconnected");
    s.client = None;
    s.client_broken = false;
    ConsoleEvent::FdsChanged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        std::env::temp_dir().join(format!("kettle-console-{}-{n}-{name}", std::process::id()))
    }

    #[test]
    fn parses_and_displays_specs() {
        assert_eq!("stdio".parse::<SerialSpec>().unwrap(), SerialSpec::Stdio);
        assert_eq!("none".parse::<SerialSpec>().unwrap(), SerialSpec::None);
        assert_eq!(
            "file:/tmp/out.log".parse::<SerialSpec>().unwrap(),
            SerialSpec::File("/tmp/out.log".into())
        );
        assert_eq!(
            "unix:/run/k.sock".parse::<SerialSpec>().unwrap(),
            SerialSpec::Unix("/run/k.sock".into())
        );
        assert_eq!(
            "file:a:b".parse::<SerialSpec>().unwrap(),
            SerialSpec::File("a:b".into())
        );
        for s in ["stdio", "none", "file:/x/y", "unix:rel/sock"] {
            assert_eq!(s.parse::<SerialSpec>().unwrap().to_string(), s);
        }
        let e = "file:".parse::<SerialSpec>().unwrap_err();
        assert!(matches!(e, ConsoleError::MissingPath("file")));
        assert!(e.to_string().contains("needs a path"));
        assert!(matches!(
            "unix:".parse::<SerialSpec>(),
            Err(ConsoleError::MissingPath("unix"))
        ));
        for bad in ["", "tcp:1234", "STDIO", "pty", "file"] {
            let e = bad.parse::<SerialSpec>().unwrap_err();
            assert!(matches!(e, ConsoleError::UnknownBackend(_)), "{bad}");
            assert!(e
                .to_string()
                .contains("expected stdio, file:PATH, unix:PATH or none"));
        }
    }

    #[test]
    fn escape_sequence() {
        let mut f = EscapeFilter::default();
        let mut out = Vec::new();
        assert_eq!(f.feed(b"ls\r", &mut out), Filtered::Continue);
        assert_eq!(out, b"ls\r");
        // Ctrl-A Ctrl-A is one literal Ctrl-A.
        out.clear();
        assert_eq!(f.feed(b"a\x01\x01b", &mut out), Filtered::Continue);
        assert_eq!(out, b"a\x01b");
        // Ctrl-A then an unknown key: both dropped.
        out.clear();
        assert_eq!(f.feed(b"\x01qz", &mut out), Filtered::Continue);
        assert_eq!(out, b"z");
        // Help.
        out.clear();
        assert_eq!(f.feed(b"\x01h", &mut out), Filtered::Help);
        assert!(out.is_empty());
        // Quit, with the bytes before it kept and the rest ignored.
        out.clear();
        assert_eq!(f.feed(b"ok\x01xmore", &mut out), Filtered::Quit);
        assert_eq!(out, b"ok");
        // Split across reads.
        let mut f = EscapeFilter::default();
        out.clear();
        assert_eq!(f.feed(b"y\x01", &mut out), Filtered::Continue);
        assert_eq!(f.feed(b"x", &mut out), Filtered::Quit);
        assert_eq!(out, b"y");
        // A plain 'x' is just a key.
        let mut f = EscapeFilter::default();
        out.clear();
        assert_eq!(f.feed(b"xx", &mut out), Filtered::Continue);
        assert_eq!(out, b"xx");
    }

    fn pipe() -> (RawFd, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the write end is ours and owned by the File from here on.
        let w = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        (fds[0], w)
    }

    #[test]
    fn stdio_input_escape_and_eof() {
        let (r, mut w) = pipe();
        let mut b = ConsoleBackend::stdio_from_fd(r);
        assert_eq!(b.input_fds(), vec![r]);
        let mut buf = Vec::new();
        w.write_all(b"hi\x01\x01").unwrap();
        assert_eq!(b.on_readable(r, &mut buf), ConsoleEvent::Input);
        assert_eq!(buf, b"hi\x01");
        buf.clear();
        w.write_all(b"!\x01").unwrap();
        assert_eq!(b.on_readable(r, &mut buf), ConsoleEvent::Input);
        w.write_all(b"x").unwrap();
        assert_eq!(b.on_readable(r, &mut buf), ConsoleEvent::Quit);
        assert_eq!(buf, b"!");
        drop(w);
        buf.clear();
        assert_eq!(b.on_readable(r, &mut buf), ConsoleEvent::Closed);
        assert!(b.input_fds().is_empty());
        drop(b);
        // SAFETY: closing the read end we created.
        unsafe { libc::close(r) };
    }

    #[test]
    fn restore_terminal_is_idempotent_without_raw_mode() {
        restore_terminal();
        restore_terminal();
    }

    #[test]
    fn file_backend_truncates_and_writes() {
        let path = temp_path("file");
        std::fs::write(&path, b"old contents that must go").unwrap();
        let b = ConsoleBackend::open(&SerialSpec::File(path.clone())).unwrap();
        assert!(b.input_fds().is_empty());
        let mut out = b.output();
        out.write_all(b"boot\r\n").unwrap();
        out.flush().unwrap();
        let mut again = b.output();
        again.write_all(b"more").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"boot\r\nmore");
        drop(b);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn file_backend_reports_the_path() {
        let path = temp_path("no-such-dir").join("out.log");
        let e = ConsoleBackend::open(&SerialSpec::File(path.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, ConsoleError::CreateFile { .. }));
        assert!(e.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn none_backend_discards() {
        let mut b = ConsoleBackend::open(&SerialSpec::None).unwrap();
        b.output().write_all(b"gone").unwrap();
        assert!(b.input_fds().is_empty());
        let mut buf = Vec::new();
        assert_eq!(b.on_readable(0, &mut buf), ConsoleEvent::Input);
        assert!(buf.is_empty());
    }

    fn read_exactly(c: &mut UnixStream, n: usize) -> Vec<u8> {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut v = vec![0u8; n];
        c.read_exact(&mut v).unwrap();
        v
    }

    #[test]
    fn unix_backend_buffers_delivers_and_reads() {
        let path = temp_path("sock");
        let mut b = ConsoleBackend::open(&SerialSpec::Unix(path.clone())).unwrap();
        let mut out = b.output();
        assert_eq!(b.input_fds().len(), 1);
        let listener_fd = b.input_fds()[0];

        // Output before anyone connects is kept.
        out.write_all(b"early boot\r\n").unwrap();

        let mut client = UnixStream::connect(&path).unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            b.on_readable(listener_fd, &mut buf),
            ConsoleEvent::FdsChanged
        );
        let fds = b.input_fds();
        assert_eq!(fds.len(), 2);
        let client_fd = fds[1];
        assert_eq!(read_exactly(&mut client, 12), b"early boot\r\n");

        // Live output.
        out.write_all(b"login: ").unwrap();
        assert_eq!(read_exactly(&mut client, 7), b"login: ");

        // Input from the client, unfiltered (no escape on sockets).
        client.write_all(b"root\r\x01x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.on_readable(client_fd, &mut buf), ConsoleEvent::Input);
        assert_eq!(buf, b"root\r\x01x");

        // A second client is turned away.
        let mut second = UnixStream::connect(&path).unwrap();
        buf.clear();
        assert_eq!(b.on_readable(listener_fd, &mut buf), ConsoleEvent::Input);
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut x = [0u8; 1];
        assert_eq!(second.read(&mut x).unwrap(), 0, "refused client sees EOF");
        assert_eq!(b.input_fds().len(), 2);

        // The first client leaves.
        drop(client);
        assert_eq!(b.on_readable(client_fd, &mut buf), ConsoleEvent::FdsChanged);
        assert_eq!(b.input_fds(), vec![listener_fd]);

        // Output while nobody listens: only the last 64 KiB is kept.
        let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        out.write_all(&big).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        assert_eq!(
            b.on_readable(listener_fd, &mut buf),
            ConsoleEvent::FdsChanged
        );
        let got = read_exactly(&mut client, UNIX_BUFFER_LIMIT);
        assert_eq!(got, &big[big.len() - UNIX_BUFFER_LIMIT..]);

        drop(b);
        assert!(!path.exists(), "socket file removed on drop");
    }

    #[test]
    fn unix_backend_writes_to_a_vanished_client_without_failing() {
        let path = temp_path("gone");
        let mut b = ConsoleBackend::open(&SerialSpec::Unix(path.clone())).unwrap();
        let mut out = b.output();
        let client = UnixStream::connect(&path).unwrap();
        let mut buf = Vec::new();
        let lfd = b.input_fds()[0];
        assert_eq!(b.on_readable(lfd, &mut buf), ConsoleEvent::FdsChanged);
        drop(client);
        for _ in 0..10 {
            out.write_all(b"into the void").unwrap();
        }
        let cfd = b.input_fds()[1];
        assert_eq!(b.on_readable(cfd, &mut buf), ConsoleEvent::FdsChanged);
        // What could not be sent waits for the next client.
        let mut c = UnixStream::connect(&path).unwrap();
        assert_eq!(b.on_readable(lfd, &mut buf), ConsoleEvent::FdsChanged);
        assert_eq!(read_exactly(&mut c, 13), b"into the void");
    }

    #[test]
    fn unix_backend_replaces_stale_sockets_only() {
        // A regular file is never replaced.
        let path = temp_path("regular");
        std::fs::write(&path, b"precious").unwrap();
        let e = ConsoleBackend::open(&SerialSpec::Unix(path.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, ConsoleError::NotASocket { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        std::fs::remove_file(&path).unwrap();

        // A socket somebody still listens on is in use.
        let path = temp_path("live");
        let live = UnixListener::bind(&path).unwrap();
        let e = ConsoleBackend::open(&SerialSpec::Unix(path.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, ConsoleError::SocketInUse { .. }));
        // Once its owner is gone the socket file is stale and gets replaced.
        drop(live);
        assert!(path.exists());
        let b = ConsoleBackend::open(&SerialSpec::Unix(path.clone())).unwrap();
        assert_eq!(b.spec(), &SerialSpec::Unix(path.clone()));
        drop(b);
        assert!(!path.exists());
    }
}
