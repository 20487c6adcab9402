//! kettle's control API: HTTP/1.1 with JSON bodies on a unix socket (`kettle run --api-socket
//! PATH`), so `curl --unix-socket PATH http://localhost/v1/status` works. `docs/api.md` is the
//! user's reference; `ctl` is the shell client.
//!
//! The server is deliberately small: one thread named `kettle-api` accepts and serves one
//! connection at a time, one request per connection (every response carries `Connection:
//! close`). What it reads is bounded: the request line and headers at most [`MAX_HEAD`] bytes,
//! the body at most [`MAX_BODY`] bytes and only by `Content-Length` (chunked transfer coding is
//! refused with 501), and the whole request must arrive within [`ApiOptions::request_timeout`],
//! so a client that connects and says nothing delays the next one by at most that long. It
//! honours `Expect: 100-continue` (curl sends it for large bodies), ignores query strings
//! and matches header names case-insensitively. Nothing a client sends can panic the thread; a
//! panic inside a [`VmApi`] call is caught and answered with 500.
//!
//! The HTTP rules followed are RFC 9112 (message syntax) and RFC 9110 (status codes, `Allow`,
//! `Expect`).

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// The most bytes of request line and headers the server reads (431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body the server accepts, by `Content-Length` (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client has to send its whole request, by default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// After answering a request it did not read to the end (an error), the server reads and
/// discards at most this much more, for at most [`DRAIN_TIME`], so that a client still sending
/// its body sees the answer instead of a broken pipe.
const DRAIN_LIMIT: usize = 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// What the API asks of the VM; implemented by the VMM (and by a mock in tests).
///
/// Calls come from the `kettle-api` thread, one at a time. An implementation reports refusals
/// with an [`ApiError`] whose status says why (409 for "already paused", 404 for "no such NIC",
/// 503 for "the VM is stopping").
pub trait VmApi: Send + Sync {
    /// `{"state": "running"|"paused", "uptime_secs": f64, "config": {...}, ...}`.
    fn status(&self) -> Result<Value, ApiError>;
    /// The VM's text screen, page 0 of the colour text buffer at 0xB8000 that the BIOS's
    /// INT 10h, boot loaders, DOS programs and Linux's vgacon write:
    /// `{"rows": 25, "columns": 80, "text": ..}`, the text being the rows joined by `\n`, each
    /// without its trailing spaces. Answers whether the VM runs or is paused.
    fn screen(&self) -> Result<Value, ApiError>;
    fn pause(&self) -> Result<(), ApiError>;
    fn resume(&self) -> Result<(), ApiError>;
    /// Saves the VM to `path` (always absolute: the server resolves a relative one against
    /// kettle's working directory); then the VM stops unless `resume`. Returns e.g.
    /// `{"path": .., "bytes": .., "millis": ..}`.
    fn save_state(&self, path: &Path, resume: bool) -> Result<Value, ApiError>;
    /// Resets the machine, as the reset button does.
    fn reset(&self) -> Result<(), ApiError>;
    /// Stops the VM at once, like pulling the plug.
    fn power_off(&self) -> Result<(), ApiError>;
    /// Presses the ACPI power button; the guest shuts down cleanly (if it listens).
    fn shutdown(&self) -> Result<(), ApiError>;
    /// Plugs (`up`) or unplugs the cable of NIC `nic` (0 is the first `--nic`).
    fn set_link(&self, nic: usize, up: bool) -> Result<(), ApiError>;
}

/// A refusal or failure, answered as `{"error": message}` with HTTP status `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    /// 400: the request is malformed (bad JSON, a missing or unknown field, a bad value).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    /// 404: no such thing (path, NIC).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    /// 409: the VM is not in a state to do that (pause when paused, resume when running).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    /// 500: kettle failed (an I/O error writing the state file).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    /// 503: not now (the VM is starting or stopping).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
}

/// Why [`ApiServer::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    #[error("{}: another kettle is already serving its API on this socket", .path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", .path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot start the API thread: {0}")]
    Thread(io::Error),
}

/// Tunables of the server; the defaults suit users, tests shorten the timeout.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// How long a client has, from connecting, to send its whole request (408 after).
    pub request_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The running API server. Dropping it stops the thread (at once, even while a client is
/// connected but silent; a [`VmApi`] call in progress is finished and answered first) and
/// removes the socket file.
pub struct ApiServer {
    path: PathBuf,
    /// Our end of the stop signal: dropping it makes the thread's end readable (EOF).
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
    /// Device and inode of the socket file we bound, so that drop removes only our own.
    file_id: Option<(u64, u64)>,
}

impl ApiServer {
    /// Binds `path` (refusing a path that exists and is a live socket or not a socket;
    /// replacing a stale socket file), makes it owner-only (0600), and starts a thread named
    /// `kettle-api` that serves connections one at a time.
    pub fn start(path: &Path, vm: Arc<dyn VmApi>) -> Result<ApiServer, ApiStartError> {
        Self::start_with(path, vm, ApiOptions::default())
    }

    /// [`ApiServer::start`] with non-default options.
    pub fn start_with(
        path: &Path,
        vm: Arc<dyn VmApi>,
        options: ApiOptions,
    ) -> Result<ApiServer, ApiStartError> {
        let io_err = |source| ApiStartError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ApiStartError::NotASocket {
                    path: path.to_path_buf(),
                })
            }
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ApiStartError::InUse {
                        path: path.to_path_buf(),
                    })
                }
                // Nobody is listening: a socket left behind by a kettle that was killed.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    log::info!("api: replacing the stale socket {}", path.display());
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(e) => return Err(io_err(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err)?;
        // From here on the file is ours: remove it again if anything below fails.
        let file_id = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        let mut server = ApiServer {
            path: path.to_path_buf(),
            stop: None,
            thread: None,
            file_id,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let (stop_tx, stop_rx) = UnixStream::pair().map_err(io_err)?;
        server.stop = Some(stop_tx);
        let thread = thread::Builder::new()
            .name("kettle-api".into())
            .spawn(move || serve(listener, stop_rx, vm, options))
            .map_err(ApiStartError::Thread)?;
        server.thread = Some(thread);
        log::info!("api: listening on {}", path.display());
        Ok(server)
    }

    /// The socket's path, as given to [`ApiServer::start`].
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // A VmApi call that drops the server runs on the API thread itself: joining would
            // wait for ever. The thread sees the stop signal when that call returns.
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
        if let Some(id) = self.file_id {
            if let Ok(m) = std::fs::symlink_metadata(&self.path) {
                if (m.dev(), m.ino()) == id {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The thread

/// Which of two fds are readable (or hung up), waiting at most `timeout_ms` (-1: for ever).
fn poll2(a: RawFd, b: RawFd, timeout_ms: i32) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: a,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let ready = |p: &libc::pollfd| p.revents != 0;
    Ok((ready(&fds[0]), ready(&fds[1])))
}

fn serve(listener: UnixListener, stop: UnixStream, vm: Arc<dyn VmApi>, options: ApiOptions) {
    let stop_fd = stop.as_raw_fd();
    loop {
        match poll2(listener.as_raw_fd(), stop_fd, -1) {
            Ok((_, true)) => break,
            Ok((false, false)) => continue,
            Ok((true, false)) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("api: poll failed, the API stops serving: {e}");
                break;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => serve_connection(stream, stop_fd, vm.as_ref(), &options),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // EMFILE and friends: wait a little rather than spin, but still obey stop.
                log::warn!("api: accept failed: {e}");
                if let Ok((_, true)) = poll2(listener.as_raw_fd(), stop_fd, 100) {
                    break;
                }
            }
        }
    }
    log::debug!("api: stopped");
}

/// Why reading a request ended without one.
enum ReadFail {
    /// The client closed the connection before sending anything.
    Closed,
    /// The request is bad or cannot be served; answer this.
    Http(HttpError),
    /// The client took too long.
    Timeout,
    /// The server is stopping.
    Stopped,
    Io(io::Error),
}

/// An error answer: an [`ApiError`] plus, for 405, the methods allowed.
struct HttpError {
    error: ApiError,
    allow: Option<&'static str>,
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        HttpError { error, allow: None }
    }
}

impl From<ApiError> for ReadFail {
    fn from(e: ApiError) -> Self {
        ReadFail::Http(e.into())
    }
}

/// One accepted connection, read under a deadline and the server's stop signal.
struct Conn {
    stream: UnixStream,
    stop_fd: RawFd,
    deadline: Instant,
    /// The request is a HEAD: answers carry headers only (RFC 9110 9.3.2).
    head_method: bool,
}

impl Conn {
    /// Appends what the client sent next to `buf`; 0 at end of stream.
    fn read_some(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<usize, ReadFail> {
        let mut chunk = [0u8; 4096];
        let want = max.clamp(1, chunk.len());
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Err(ReadFail::Timeout);
            }
            let left = self.deadline - now;
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            match poll2(self.stream.as_raw_fd(), self.stop_fd, ms) {
                Ok((_, true)) => return Err(ReadFail::Stopped),
                Ok((false, false)) => continue,
                Ok((true, false)) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadFail::Io(e)),
            }
            match self.stream.read(&mut chunk[..want]) {
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
    }

    /// Writes a response: headers only for HEAD.
    fn send_response(&self, data: &[u8]) -> io::Result<()> {
        match data.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) if self.head_method => self.send_all(&data[..end + 4]),
            _ => self.send_all(data),
        }
    }

    /// Writes all of `data`, without SIGPIPE if the client has gone; bounded by the socket's
    /// write timeout.
    fn send_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            // SAFETY: `data` is a valid buffer of `data.len()` bytes for the call.
            let n = unsafe {
                libc::send(
                    self.stream.as_raw_fd(),
                    data.as_ptr().cast(),
                    data.len(),
                    libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Reads and discards what the client is still sending, briefly and boundedly.
    fn drain(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.deadline = self.deadline.min(Instant::now() + DRAIN_TIME);
        let mut sink = Vec::new();
        let mut total = 0;
        while total < DRAIN_LIMIT {
            sink.clear();
            match self.read_some(&mut sink, DRAIN_LIMIT - total) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
}

fn serve_connection(stream: UnixStream, stop_fd: RawFd, vm: &dyn VmApi, options: &ApiOptions) {
    // Backstops only: reads are paced by poll under the deadline, writes by this timeout.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(options.request_timeout.max(Duration::from_millis(1))));
    let _ = stream.set_write_timeout(Some(options.request_timeout.max(Duration::from_millis(1))));
    let mut conn = Conn {
        stream,
        stop_fd,
        deadline: Instant::now() + options.request_timeout,
        head_method: false,
    };
    let request = match read_request(&mut conn) {
        Ok(r) => r,
        Err(fail) => {
            let (err, drain) = match fail {
                ReadFail::Closed => return,
                ReadFail::Io(e) => {
                    log::debug!("api: reading a request: {e}");
                    return;
                }
                ReadFail::Http(e) => (e, true),
                ReadFail::Timeout => (
                    ApiError::new(
                        408,
                        format!(
                            "timed out waiting for the request ({} ms)",
                            options.request_timeout.as_millis()
                        ),
                    )
                    .into(),
                    false,
                ),
                ReadFail::Stopped => (
                    ApiError::unavailable("kettle is shutting down").into(),
                    false,
                ),
            };
            log::debug!("api: refused a request: {}", err.error);
            let _ = conn.send_response(&error_response(&err));
            if drain {
                conn.drain();
            }
            return;
        }
    };
    let response = match dispatch(vm, &request) {
        Ok(body) => response(200, &body, None),
        Err(e) => error_response(&e.into()),
    };
    log::debug!(
        "api: {} {} -> {}",
        request.method,
        request.path,
        status_of(&response)
    );
    if let Err(e) = conn.send_response(&response) {
        log::debug!("api: writing a response: {e}");
    }
}

fn status_of(response: &[u8]) -> &str {
    response
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .unwrap_or("?")
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 requests (RFC 9112)

#[derive(Debug)]
struct Request {
    method: String,
    /// The path of the target, without query string.
    path: String,
    route: Route,
    body: Vec<u8>,
}

/// The head of a request: request line and the headers the server cares about.
#[derive(Debug, Default)]
struct Head {
    method: String,
    path: String,
    content_length: Option<u64>,
    transfer_encoding: bool,
    expect_continue: bool,
}

/// Where the blank line ending the head is: `(head_len, head_len + terminator_len)`. Looks
/// from `from` on (bytes before it were searched already, up to a terminator's length).
pub(crate) fn find_head_end(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from.min(buf.len());
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((nl, nl + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// A token character (RFC 9110 5.6.2), as in method and header names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Parses the request line and headers (without the blank line).
fn parse_head(raw: &[u8]) -> Result<Head, ApiError> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| ApiError::bad_request("the request line or a header is not valid UTF-8"))?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(ApiError::bad_request("malformed request line")),
    };
    if !is_token(method) {
        return Err(ApiError::bad_request("malformed request line: bad method"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ApiError::bad_request("malformed request line: bad target"));
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(ApiError::new(
                505,
                format!("{v} is not supported; use HTTP/1.1"),
            ))
        }
        v if v.len() == 6 && v.starts_with("HTTP/") && v.as_bytes()[5].is_ascii_digit() => {
            return Err(ApiError::new(
                505,
                format!("{v} is not supported; use HTTP/1.1"),
            ))
        }
        _ => {
            return Err(ApiError::bad_request(
                "malformed request line: bad HTTP version",
            ))
        }
    }
    let mut head = Head {
        method: method.to_string(),
        path: target_path(target)?,
        ..Head::default()
    };
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(ApiError::bad_request(
                "folded header lines are not accepted",
            ));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ApiError::bad_request("malformed header line"))?;
        if !is_token(name) {
            return Err(ApiError::bad_request("malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(ApiError::bad_request(format!(
                "control character in header {name}"
            )));
        }
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::bad_request("bad Content-Length"));
            }
            // More digits than u64 holds is too long by far.
            let n = value.parse::<u64>().unwrap_or(u64::MAX);
            if head.content_length.is_some_and(|m| m != n) {
                return Err(ApiError::bad_request("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case("100-continue") {
                head.expect_continue = true;
            } else {
                return Err(ApiError::new(417, format!("cannot meet Expect: {value}")));
            }
        }
    }
    Ok(head)
}

/// The path of a request target: origin form (`/v1/status?x`) or absolute form
/// (`http://localhost/v1/status`); query and fragment dropped, one trailing slash ignored.
fn target_path(target: &str) -> Result<String, ApiError> {
    let mut t = target;
    for scheme in ["http://", "https://"] {
        if t.len() >= scheme.len() && t[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &t[scheme.len()..];
            t = rest.find('/').map_or("/", |i| &rest[i..]);
        }
    }
    if !t.starts_with('/') {
        return Err(ApiError::bad_request(
            "malformed request line: the target must be a path",
        ));
    }
    let end = t.find(['?', '#']).unwrap_or(t.len());
    let mut path = &t[..end];
    if path.len() > 1 {
        path = path.strip_suffix('/').unwrap_or(path);
    }
    Ok(path.to_string())
}

/// Reads one request.
fn read_request(conn: &mut Conn) -> Result<Request, ReadFail> {
    let mut buf = Vec::new();
    let mut searched = 0usize;
    let (head_len, body_start) = loop {
        // Tolerate blank lines before the request line (RFC 9112 2.2).
        let blank = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len());
        if blank > 0 {
            buf.drain(..blank);
            searched = 0;
        }
        if let Some(end) = find_head_end(&buf, searched.saturating_sub(3)) {
            break end;
        }
        searched = buf.len();
        if buf.len() >= MAX_HEAD {
            return Err(ApiError::new(
                431,
                format!("the request line and headers exceed {MAX_HEAD} bytes"),
            )
            .into());
        }
        let was_empty = buf.is_empty();
        let room = MAX_HEAD + 4 - buf.len();
        if conn.read_some(&mut buf, room)? == 0 {
            return Err(if was_empty {
                ReadFail::Closed
            } else {
                ApiError::bad_request("the request ended inside its headers").into()
            });
        }
    };
    if head_len > MAX_HEAD {
        return Err(ApiError::new(
            431,
            format!("the request line and headers exceed {MAX_HEAD} bytes"),
        )
        .into());
    }
    let head = parse_head(&buf[..head_len])?;
    conn.head_method = head.method == "HEAD";
    let route = Route::parse(&head.path)?;
    if !route.allows(&head.method) {
        return Err(ReadFail::Http(HttpError {
            error: ApiError::new(405, format!("{} does not take {}", head.path, head.method)),
            allow: Some(route.allow()),
        }));
    }
    if head.transfer_encoding {
        return Err(ApiError::new(
            501,
            "Transfer-Encoding is not supported; send the body with Content-Length",
        )
        .into());
    }
    let mut body = buf.split_off(body_start);
    let length = match head.content_length {
        Some(n) if n > MAX_BODY as u64 => {
            return Err(ApiError::new(
                413,
                format!("the body ({n} bytes) exceeds {MAX_BODY} bytes"),
            )
            .into())
        }
        Some(n) => n as usize,
        // Bytes after the head of a PUT with no length: a body we cannot delimit.
        None if !body.is_empty() && head.method != "GET" => {
            return Err(ApiError::new(411, "a request body needs a Content-Length").into())
        }
        None => 0,
    };
    if body.len() < length && head.expect_continue {
        conn.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(ReadFail::Io)?;
    }
    while body.len() < length {
        let missing = length - body.len();
        if conn.read_some(&mut body, missing)? == 0 {
            return Err(ApiError::bad_request(format!(
                "the body ended after {} of its {length} bytes",
                body.len()
            ))
            .into());
        }
    }
    // Anything after the body would be a pipelined request: every connection serves one.
    body.truncate(length);
    Ok(Request {
        method: head.method,
        path: head.path,
        route,
        body,
    })
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Status,
    Screen,
    Pause,
    Resume,
    SaveState,
    Reset,
    PowerOff,
    Shutdown,
    Link(usize),
}

impl Route {
    fn parse(path: &str) -> Result<Route, ApiError> {
        let not_found = || ApiError::not_found(format!("no such endpoint: {path}"));
        let rest = path.strip_prefix("/v1/").ok_or_else(not_found)?;
        Ok(match rest {
            "status" => Route::Status,
            "screen" => Route::Screen,
            "pause" => Route::Pause,
            "resume" => Route::Resume,
            "save-state" => Route::SaveState,
            "reset" => Route::Reset,
            "power-off" => Route::PowerOff,
            "shutdown" => Route::Shutdown,
            _ => {
                let n = rest
                    .strip_prefix("nics/")
                    .and_then(|r| r.strip_suffix("/link"))
                    .ok_or_else(not_found)?;
                if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ApiError::not_found(format!(
                        "no such NIC: {n:?} (NICs are numbered from 0)"
                    )));
                }
                Route::Link(n.parse().map_err(|_| not_found())?)
            }
        })
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Status | Route::Screen => "GET",
            _ => "PUT, POST",
        }
    }

    fn allows(self, method: &str) -> bool {
        self.allow().split(", ").any(|m| m == method)
    }
}

/// A body with no fields: empty, or `{}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveStateBody {
    path: String,
    #[serde(default)]
    resume: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    up: bool,
}

/// Parses a JSON object body into `T`; an empty body is `{}`.
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    T::deserialize(value).map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

fn ok() -> Value {
    json!({"ok": true})
}

fn dispatch(vm: &dyn VmApi, req: &Request) -> Result<Value, ApiError> {
    // An action without parameters: an empty (or `{}`) body, `{"ok": true}` on success.
    let plain = |act: fn(&dyn VmApi) -> Result<(), ApiError>| {
        parse_body::<NoFields>(&req.body)?;
        act(vm).map(|()| ok())
    };
    let call = || -> Result<Value, ApiError> {
        match req.route {
            Route::Status => vm.status(),
            Route::Screen => vm.screen(),
            Route::Pause => plain(|v| v.pause()),
            Route::Resume => plain(|v| v.resume()),
            Route::Reset => plain(|v| v.reset()),
            Route::PowerOff => plain(|v| v.power_off()),
            Route::Shutdown => plain(|v| v.shutdown()),
            Route::SaveState => {
                let b: SaveStateBody = parse_body(&req.body)?;
                if b.path.is_empty() {
                    return Err(ApiError::bad_request("bad request body: `path` is empty"));
                }
                if b.path.contains('\0') {
                    return Err(ApiError::bad_request(
                        "bad request body: `path` contains a NUL",
                    ));
                }
                let path = Path::new(&b.path);
                let path = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|e| {
                            ApiError::internal(format!(
                                "cannot resolve the relative path {}: {e}",
                                b.path
                            ))
                        })?
                        .join(path)
                };
                vm.save_state(&path, b.resume)
            }
            Route::Link(n) => {
                let b: LinkBody = parse_body(&req.body)?;
                vm.set_link(n, b.up).map(|()| ok())
            }
        }
    };
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            log::error!("api: {} {} panicked: {what}", req.method, req.path);
            Err(ApiError::internal(format!("kettle failed: {what}")))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn response(status: u16, body: &Value, allow: Option<&str>) -> Vec<u8> {
    let mut json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    json.push(b'\n');
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        reason(status),
        json.len()
    );
    if let Some(a) = allow {
        out.push_str(&format!("Allow: {a}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&json);
    out
}

fn error_response(e: &HttpError) -> Vec<u8> {
    // A VmApi that returns an out-of-range status still gets a well-formed answer.
    let status = if (400..=599).contains(&e.error.status) {
        e.error.status
    } else {
        500
    };
    response(status, &json!({"error": e.error.message}), e.allow)
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A VM that records calls, keeps a paused flag, and can be told to fail the next call.
    #[derive(Default)]
    pub(crate) struct MockVm {
        pub calls: Mutex<Vec<String>>,
        pub paused: Mutex<bool>,
        pub fail_next: Mutex<Option<ApiError>>,
        pub panic_next: Mutex<bool>,
    }

    impl MockVm {
        fn enter(&self, call: String) -> Result<(), ApiError> {
            self.calls.lock().unwrap().push(call);
            if std::mem::take(&mut *self.panic_next.lock().unwrap()) {
                panic!("mock VM exploded");
            }
            match self.fail_next.lock().unwrap().take() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
        pub fn fail_next(&self, e: ApiError) {
            *self.fail_next.lock().unwrap() = Some(e);
        }
    }

    impl VmApi for MockVm {
        fn status(&self) -> Result<Value, ApiError> {
            self.enter("status".into())?;
            let paused = *self.paused.lock().unwrap();
            Ok(json!({
                "state": if paused { "paused" } else { "running" },
                "uptime_secs": 1.5,
                "config": {"memory": 268435456, "cpus": 1},
            }))
        }
        fn screen(&self) -> Result<Value, ApiError> {
            self.enter("screen".into())?;
            Ok(json!({"rows": 25, "columns": 80, "text": mock_screen()}))
        }
        fn pause(&self) -> Result<(), ApiError> {
            self.enter("pause".into())?;
            let mut p = self.paused.lock().unwrap();
            if *p {
                return Err(ApiError::conflict("the VM is already paused"));
            }
            *p = true;
            Ok(())
        }
        fn resume(&self) -> Result<(), ApiError> {
            self.enter("resume".into())?;
            let mut p = self.paused.lock().unwrap();
            if !*p {
                return Err(ApiError::conflict("the VM is not paused"));
            }
            *p = false;
            Ok(())
        }
        fn save_state(&self, path: &Path, resume: bool) -> Result<Value, ApiError> {
            self.enter(format!("save_state {} {resume}", path.display()))?;
            Ok(json!({"path": path, "bytes": 4096, "millis": 7.4}))
        }
        fn reset(&self) -> Result<(), ApiError> {
            self.enter("reset".into())
        }
        fn power_off(&self) -> Result<(), ApiError> {
            self.enter("power_off".into())
        }
        fn shutdown(&self) -> Result<(), ApiError> {
            self.enter("shutdown".into())
        }
        fn set_link(&self, nic: usize, up: bool) -> Result<(), ApiError> {
            self.enter(format!("set_link {nic} {up}"))?;
            if nic > 1 {
                return Err(ApiError::not_found(format!("no NIC {nic}")));
            }
            Ok(())
        }
    }

    /// The mock VM's screen: a DOS prompt, then blank rows down to the 25th.
    pub(crate) fn mock_screen() -> String {
        let mut rows = vec![""; 25];
        rows[0] = "C:\\>ver";
        rows[2] = "MS-DOS Version 6.22";
        rows[4] = "C:\\>";
        rows.join("\n")
    }

    /// A private directory for a test's socket; removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "kettle-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        pub fn sock(&self) -> PathBuf {
            self.0.join("api.sock")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A server on a fresh socket with a mock VM, and a short request timeout.
    pub(crate) fn server(tag: &str) -> (TempDir, Arc<MockVm>, ApiServer) {
        let dir = TempDir::new(tag);
        let vm = Arc::new(MockVm::default());
        let srv = ApiServer::start_with(
            &dir.sock(),
            vm.clone(),
            ApiOptions {
                request_timeout: Duration::from_millis(300),
            },
        )
        .unwrap();
        (dir, vm, srv)
    }

    /// A parsed response: status, headers (lower-case names), body.
    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
        }
        fn error(&self) -> String {
            self.json()["error"].as_str().unwrap().to_string()
        }
    }

    fn parse_resp(raw: &[u8]) -> Resp {
        let text = String::from_utf8(raw.to_vec()).unwrap();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {text:?}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap();
                (n.to_ascii_lowercase(), v.to_string())
            })
            .collect();
        let r = Resp {
            status,
            headers,
            body: body.to_string(),
        };
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(
            r.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            r.body.len()
        );
        r
    }

    fn connect(path: &Path) -> UnixStream {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    fn read_all(s: &mut UnixStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // The server may close with our unread bytes: what it sent is still complete.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the response: {e}"),
            }
        }
        out
    }

    /// Sends `raw` and returns the parsed response.
    fn raw(path: &Path, raw: &[u8]) -> Resp {
        let mut s = connect(path);
        // The server may answer (and stop reading) before all is written.
        let _ = s.write_all(raw);
        parse_resp(&read_all(&mut s))
    }

    fn req(path: &Path, method: &str, target: &str, body: &str) -> Resp {
        let text = format!(
            "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        raw(path, text.as_bytes())
    }

    #[test]
    fn every_route() {
        let (dir, vm, _srv) = server("routes");
        let p = dir.sock();
        let r = req(&p, "GET", "/v1/status", "");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["state"], "running");
        let r = req(&p, "GET", "/v1/screen", "");
        assert_eq!(r.status, 200, "{}", r.body);
        let screen = r.json();
        assert_eq!(
            (&screen["rows"], &screen["columns"]),
            (&json!(25), &json!(80))
        );
        assert_eq!(screen["text"], mock_screen());
        assert_eq!(vm.calls().last().unwrap(), "screen");
        for (target, call) in [
            ("/v1/pause", "pause"),
            ("/v1/resume", "resume"),
            ("/v1/reset", "reset"),
            ("/v1/power-off", "power_off"),
            ("/v1/shutdown", "shutdown"),
        ] {
            for (method, body) in [("PUT", ""), ("POST", "{}"), ("PUT", " { } \n")] {
                // Pause needs a running VM, resume a paused one.
                *vm.paused.lock().unwrap() = call == "resume";
                let before = vm.calls().len();
                let r = req(&p, method, target, body);
                assert_eq!(r.status, 200, "{method} {target}: {}", r.body);
                assert_eq!(r.json(), json!({"ok": true}));
                assert_eq!(vm.calls()[before..], [call.to_string()]);
            }
        }
        let r = req(
            &p,
            "PUT",
            "/v1/save-state",
            r#"{"path": "/tmp/x.kst", "resume": true}"#,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["bytes"], 4096);
        assert_eq!(vm.calls().last().unwrap(), "save_state /tmp/x.kst true");
        let r = req(&p, "POST", "/v1/save-state", r#"{"path": "rel/y.kst"}"#);
        assert_eq!(r.status, 200);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            vm.calls().last().unwrap(),
            &format!("save_state {} false", cwd.join("rel/y.kst").display())
        );
        let r = req(&p, "PUT", "/v1/nics/1/link", r#"{"up": false}"#);
        assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
        assert_eq!(vm.calls().last().unwrap(), "set_link 1 false");
        let r = req(&p, "PUT", "/v1/nics/0/link", r#"{"up": true}"#);
        assert_eq!(r.status, 200);
        assert_eq!(vm.calls().last().unwrap(), "set_link 0 true");
    }

    #[test]
    fn vm_errors_keep_their_status() {
        let (dir, vm, _srv) = server("vmerr");
        let p = dir.sock();
        assert_eq!(req(&p, "PUT", "/v1/pause", "").status, 200);
        let r = req(&p, "PUT", "/v1/pause", "");
        assert_eq!(
            (r.status, r.error().as_str()),
            (409, "the VM is already paused")
        );
        let r = req(&p, "PUT", "/v1/nics/7/link", r#"{"up":true}"#);
        assert_eq!((r.status, r.error().as_str()), (404, "no NIC 7"));
        for e in [
            ApiError::internal("disk full"),
            ApiError::unavailable("the VM is stopping"),
            ApiError::bad_request("no"),
        ] {
            vm.fail_next(e.clone());
            let r = req(&p, "GET", "/v1/status", "");
            assert_eq!((r.status, r.error()), (e.status, e.message));
        }
        vm.fail_next(ApiError::unavailable("the VM has stopped"));
        let r = req(&p, "GET", "/v1/screen", "");
        assert_eq!((r.status, r.error().as_str()), (503, "the VM has stopped"));
        // A status outside 400..=599 still makes a well-formed error.
        vm.fail_next(ApiError::new(200, "odd"));
        assert_eq!(req(&p, "PUT", "/v1/reset", "").status, 500);
        *vm.panic_next.lock().unwrap() = true;
        let r = req(&p, "PUT", "/v1/reset", "");
        assert_eq!(r.status, 500);
        assert!(r.error().contains("mock VM exploded"), "{}", r.error());
        // And the thread lives on.
        assert_eq!(req(&p, "GET", "/v1/status", "").status, 200);
    }

    #[test]
    fn request_errors() {
        let (dir, vm, _srv) = server("reqerr");
        let p = dir.sock();
        let cases: &[(&str, &str, &str, u16, &str)] = &[
            ("GET", "/v1/nope", "", 404, "no such endpoint: /v1/nope"),
            ("GET", "/", "", 404, "no such endpoint"),
            ("GET", "/v2/status", "", 404, "no such endpoint"),
            ("PUT", "/v1/nics/x/link", "{}", 404, "no such NIC"),
            ("PUT", "/v1/nics//link", "{}", 404, "no such NIC"),
            (
                "PUT",
                "/v1/nics/99999999999999999999/link",
                "{}",
                404,
                "no such NIC",
            ),
            ("PUT", "/v1/nics/1/up", "{}", 404, "no such endpoint"),
            ("PUT", "/v1/pause", "{", 400, "not valid JSON"),
            ("PUT", "/v1/pause", "[]", 400, "must be a JSON object"),
            ("PUT", "/v1/pause", "null", 400, "must be a JSON object"),
            (
                "PUT",
                "/v1/pause",
                r#"{"now": true}"#,
                400,
                "unknown field `now`",
            ),
            ("PUT", "/v1/save-state", "", 400, "missing field `path`"),
            (
                "PUT",
                "/v1/save-state",
                r#"{"path": ""}"#,
                400,
                "`path` is empty",
            ),
            (
                "PUT",
                "/v1/save-state",
                r#"{"path": 3}"#,
                400,
                "invalid type",
            ),
            (
                "PUT",
                "/v1/save-state",
                r#"{"path": "a", "resume": true, "compress": 1}"#,
                400,
                "unknown field `compress`",
            ),
            (
                "PUT",
                "/v1/nics/0/link",
                r#"{"up": "yes"}"#,
                400,
                "invalid type",
            ),
            ("PUT", "/v1/nics/0/link", r#"{}"#, 400, "missing field `up`"),
            ("PUT", "/v1/nics/0/link", r#"{"up":1,"x":2}"#, 400, ""),
        ];
        for (method, target, body, status, msg) in cases {
            let r = req(&p, method, target, body);
            assert_eq!(r.status, *status, "{method} {target} {body}: {}", r.body);
            assert!(r.error().contains(msg), "{method} {target}: {}", r.error());
        }
        assert!(vm.calls().is_empty(), "{:?}", vm.calls());
    }

    #[test]
    fn wrong_method_is_405_with_allow() {
        let (dir, vm, _srv) = server("405");
        let p = dir.sock();
        for (method, target, allow) in [
            ("PUT", "/v1/status", "GET"),
            ("POST", "/v1/status", "GET"),
            ("PUT", "/v1/screen", "GET"),
            ("POST", "/v1/screen", "GET"),
            ("GET", "/v1/pause", "PUT, POST"),
            ("DELETE", "/v1/save-state", "PUT, POST"),
            ("get", "/v1/status", "GET"),
            ("GET", "/v1/nics/0/link", "PUT, POST"),
        ] {
            let r = req(&p, method, target, "");
            assert_eq!(r.status, 405, "{method} {target}");
            assert_eq!(r.header("allow"), Some(allow));
            assert!(r.error().contains(method));
        }
        // HEAD is refused too, and its answer carries no content.
        let mut s = connect(&p);
        s.write_all(b"HEAD /v1/status HTTP/1.1\r\n\r\n").unwrap();
        let out = String::from_utf8(read_all(&mut s)).unwrap();
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("\r\nAllow: GET\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
        assert!(vm.calls().is_empty());
    }

    #[test]
    fn lenient_where_it_is_harmless() {
        let (dir, vm, _srv) = server("lenient");
        let p = dir.sock();
        // Query strings, a trailing slash, absolute form, HTTP/1.0, odd header case, bare LF,
        // leading blank lines, no Host, a pipelined extra request (ignored).
        for text in [
            "GET /v1/status?pretty=1&x HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /v1/status/ HTTP/1.1\r\n\r\n",
            "GET /v1/status#frag HTTP/1.1\r\n\r\n",
            "GET http://localhost/v1/status HTTP/1.1\r\n\r\n",
            "GET /v1/status HTTP/1.0\r\n\r\n",
            "GET /v1/status HTTP/1.1\nhost: x\n\n",
            "\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\n",
            "GET /v1/status HTTP/1.1\r\nX-Empty:\r\nAccept:*/*\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\n",
        ] {
            let r = raw(&p, text.as_bytes());
            assert_eq!(r.status, 200, "{text:?}: {}", r.body);
        }
        let r = raw(
            &p,
            b"PUT /v1/nics/0/link HTTP/1.1\r\ncOnTeNt-LeNgTh: 11\r\nCONTENT-TYPE: text/plain\r\n\r\n{\"up\":true}",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(vm.calls().last().unwrap(), "set_link 0 true");
        // The same Content-Length twice is fine; different ones are not.
        let r = raw(
            &p,
            b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn malformed_requests() {
        let (dir, vm, _srv) = server("garbage");
        let p = dir.sock();
        let cases: &[(&[u8], u16)] = &[
            (b"hello\r\n\r\n", 400),
            (b"GET\r\n\r\n", 400),
            (b"GET /v1/status\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1 extra\r\n\r\n", 400),
            (b"GET  /v1/status HTTP/1.1\r\n\r\n", 400),
            (b"GET v1/status HTTP/1.1\r\n\r\n", 400),
            (b"G(T /v1/status HTTP/1.1\r\n\r\n", 400),
            (b"GET /v1/status FTP/1.1\r\n\r\n", 400),
            (b"GET /v1/status HTTP/2.0\r\n\r\n", 505),
            (b"GET /v1/status HTTP/3\r\n\r\n", 505),
            (b"\xff\xfe\x00\x01 / HTTP/1.1\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\nNo colon\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\n: x\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\nA: b\x01c\r\n\r\n", 400),
            (b"GET /v1/status HTTP/1.1\r\nA: \xc3\x28\r\n\r\n", 400),
            (b"PUT /v1/reset HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400),
            (
                b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 2, 2\r\n\r\n{}",
                400,
            ),
            (
                b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
                400,
            ),
            (
                b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                413,
            ),
            (
                b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 65537\r\n\r\n",
                413,
            ),
            (
                b"PUT /v1/reset HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                501,
            ),
            (b"PUT /v1/reset HTTP/1.1\r\n\r\n{}", 411),
            (
                b"PUT /v1/reset HTTP/1.1\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}",
                417,
            ),
            (
                b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}",
                400,
            ), // then EOF
            (b"GET /v1/status HTTP/1.1\r\nHost: x", 400), // EOF inside the head
        ];
        for (text, status) in cases {
            let mut s = connect(&p);
            s.write_all(text).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let r = parse_resp(&read_all(&mut s));
            assert_eq!(
                r.status,
                *status,
                "{:?}: {}",
                String::from_utf8_lossy(text),
                r.body
            );
            assert!(!r.error().is_empty());
        }
        assert!(vm.calls().is_empty(), "{:?}", vm.calls());
        assert_eq!(req(&p, "GET", "/v1/status", "").status, 200);
    }

    #[test]
    fn oversized_head_and_body() {
        let (dir, vm, _srv) = server("big");
        let p = dir.sock();
        // A head of more than 16 KiB, with and without ever ending.
        let mut text = b"GET /v1/status HTTP/1.1\r\n".to_vec();
        for i in 0..1000 {
            text.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).as_bytes());
        }
        let r = raw(&p, &text);
        assert_eq!(r.status, 431, "{}", r.body);
        text.extend_from_slice(b"\r\n");
        assert_eq!(raw(&p, &text).status, 431);
        let r = raw(&p, &[b'A'; 100_000]);
        assert_eq!(r.status, 431);
        // Just under the limit is fine.
        let mut text = b"GET /v1/status HTTP/1.1\r\nX: ".to_vec();
        text.resize(MAX_HEAD - 4, b'z');
        text.extend_from_slice(b"\r\n\r\n");
        assert_eq!(text.len(), MAX_HEAD);
        assert_eq!(raw(&p, &text).status, 200);
        // A body over 64 KiB that the client actually sends: the answer still arrives.
        let body = format!(r#"{{"path": "{}"}}"#, "p".repeat(70_000));
        let r = req(&p, "PUT", "/v1/save-state", &body);
        assert_eq!(r.status, 413, "{}", r.body);
        // Exactly 64 KiB is accepted.
        let body = format!(r#"{{"path": "/{}"}}"#, "q".repeat(MAX_BODY - 13));
        assert_eq!(body.len(), MAX_BODY);
        let r = req(&p, "PUT", "/v1/save-state", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(vm.calls().len(), 2);
    }

    #[test]
    fn expect_100_continue() {
        let (dir, vm, _srv) = server("expect");
        let p = dir.sock();
        let body = r#"{"path": "/tmp/state.kst", "resume": true}"#;
        let mut s = connect(&p);
        write!(
            s,
            "PUT /v1/save-state HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 25];
        s.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(body.as_bytes()).unwrap();
        let r = parse_resp(&read_all(&mut s));
        assert_eq!(r.status, 200);
        assert_eq!(vm.calls(), ["save_state /tmp/state.kst true"]);
        // Refused before the body is sent: no 100, just the error.
        let mut s = connect(&p);
        s.write_all(
            b"PUT /v1/save-state HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n",
        )
        .unwrap();
        assert_eq!(parse_resp(&read_all(&mut s)).status, 413);
        // Body already sent with the head: no 100 needed.
        let r = raw(
            &p,
            b"PUT /v1/reset HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n{}",
        );
        assert_eq!(r.status, 200);
    }

    #[test]
    fn head_end_found_across_reads() {
        for text in [
            &b"GET / HTTP/1.1\r\nA: b\r\n\r\nBODY"[..],
            b"GET / HTTP/1.1\nA: b\n\nBODY",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            let want = find_head_end(text, 0).unwrap();
            // Whatever the first read ended with, the second finds the same blank line.
            for cut in 0..=text.len() {
                let first = find_head_end(&text[..cut], 0);
                let found = first.or_else(|| find_head_end(text, cut.saturating_sub(3)));
                assert_eq!(found, Some(want), "{text:?} cut at {cut}");
            }
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn byte_at_a_time() {
        let (dir, vm, _srv) = server("slow");
        let p = dir.sock();
        let mut s = connect(&p);
        for b in b"PUT /v1/nics/1/link HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"up\":false}" {
            s.write_all(&[*b]).unwrap();
        }
        assert_eq!(parse_resp(&read_all(&mut s)).status, 200);
        assert_eq!(vm.calls(), ["set_link 1 false"]);
    }

    #[test]
    fn silent_clients_time_out_and_the_next_is_served() {
        let (dir, _vm, _srv) = server("silent");
        let p = dir.sock();
        let t0 = Instant::now();
        let mut silent = connect(&p);
        let mut partial = connect(&p);
        partial.write_all(b"GET /v1/sta").unwrap();
        let mut slow_body = connect(&p);
        slow_body
            .write_all(b"PUT /v1/reset HTTP/1.1\r\nContent-Length: 2\r\n\r\n{")
            .unwrap();
        // Queued behind the three above, each holding the server for the 300 ms timeout.
        let r = req(&p, "GET", "/v1/status", "");
        assert_eq!(r.status, 200);
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(850), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        for s in [&mut silent, &mut partial, &mut slow_body] {
            let r = parse_resp(&read_all(s));
            assert_eq!(r.status, 408);
            assert!(r.error().contains("timed out"));
        }
        // A client that connects and closes without a word gets nothing, and costs nothing.
        drop(connect(&p));
        assert_eq!(req(&p, "GET", "/v1/status", "").status, 200);
    }

    #[test]
    fn random_garbage_never_kills_the_server() {
        let (dir, _vm, _srv) = server("fuzz");
        let p = dir.sock();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let pieces: &[&[u8]] = &[
            b"GET ",
            b"PUT ",
            b"/v1/status",
            b"/v1/nics/",
            b" HTTP/1.1",
            b"\r\n",
            b"\n",
            b"Content-Length: ",
            b"Expect: 100-continue",
            b"Transfer-Encoding: chunked",
            b"12",
            b": ",
            b"{\"up\":",
            b"\x00",
            b"\xff",
            b" ",
            b"\r\n\r\n",
        ];
        for _ in 0..300 {
            let mut text = Vec::new();
            for _ in 0..(next() % 12) {
                let r = next();
                if r % 5 == 0 {
                    text.push((r >> 8) as u8);
                } else {
                    text.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
                }
            }
            let mut s = connect(&p);
            let _ = s.write_all(&text);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let out = read_all(&mut s);
            if !out.is_empty() {
                assert!(out.starts_with(b"HTTP/1.1 "), "{text:?} -> {out:?}");
            }
        }
        assert_eq!(req(&p, "GET", "/v1/status", "").status, 200);
    }

    #[test]
    fn socket_file_lifecycle() {
        let dir = TempDir::new("life");
        let p = dir.sock();
        let vm: Arc<dyn VmApi> = Arc::new(MockVm::default());
        // Not a socket: refused, and left alone.
        std::fs::write(&p, b"precious").unwrap();
        let e = ApiServer::start(&p, vm.clone()).unwrap_err();
        assert!(matches!(e, ApiStartError::NotASocket { .. }), "{e}");
        assert!(e.to_string().contains("is not a socket"));
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
        std::fs::remove_file(&p).unwrap();
        // A stale socket (its listener gone without removing it) is replaced.
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        let srv = ApiServer::start(&p, vm.clone()).unwrap();
        assert_eq!(srv.path(), p);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A live one is not.
        let e = ApiServer::start(&p, vm.clone()).unwrap_err();
        assert!(matches!(e, ApiStartError::InUse { .. }), "{e}");
        assert_eq!(req(&p, "GET", "/v1/status", "").status, 200);
        // Drop is prompt even with a silent client connected, and removes the file.
        let mut idle = connect(&p);
        std::thread::sleep(Duration::from_millis(50));
        let t0 = Instant::now();
        drop(srv);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(!p.exists());
        let r = parse_resp(&read_all(&mut idle));
        assert_eq!(r.status, 503);
        // A socket path too long for sun_path is a clear error.
        let long = dir.0.join("s".repeat(200));
        let e = ApiServer::start(&long, vm).unwrap_err();
        assert!(matches!(e, ApiStartError::Io { .. }), "{e}");
    }

    #[test]
    fn drop_leaves_a_replaced_socket_alone() {
        let dir = TempDir::new("replaced");
        let p = dir.sock();
        let srv = ApiServer::start(&p, Arc::new(MockVm::default())).unwrap();
        std::fs::remove_file(&p).unwrap();
        let other = UnixListener::bind(&p).unwrap();
        drop(srv);
        assert!(p.exists(), "removed someone else's socket");
        drop(other);
    }

    #[test]
    fn the_thread_is_named() {
        struct Named;
        impl VmApi for Named {
            fn status(&self) -> Result<Value, ApiError> {
                Ok(json!({"thread": thread::current().name()}))
            }
            fn screen(&self) -> Result<Value, ApiError> {
                Ok(json!({}))
            }
            fn pause(&self) -> Result<(), ApiError> {
                Ok(())
            }
            fn resume(&self) -> Result<(), ApiError> {
                Ok(())
            }
            fn save_state(&self, _: &Path, _: bool) -> Result<Value, ApiError> {
                Ok(json!({}))
            }
            fn reset(&self) -> Result<(), ApiError> {
                Ok(())
            }
            fn power_off(&self) -> Result<(), ApiError> {
                Ok(())
            }
            fn shutdown(&self) -> Result<(), ApiError> {
                Ok(())
            }
            fn set_link(&self, _: usize, _: bool) -> Result<(), ApiError> {
                Ok(())
            }
        }
        let dir = TempDir::new("named");
        let _srv = ApiServer::start(&dir.sock(), Arc::new(Named)).unwrap();
        let r = req(&dir.sock(), "GET", "/v1/status", "");
        assert_eq!(r.json()["thread"], "kettle-api");
    }

    #[test]
    fn curl_talks_to_it() {
        let curl = std::process::Command::new("which").arg("curl").output();
        let found = matches!(&curl, Ok(o) if o.status.success());
        assert!(
            found,
            "curl is missing: this test needs `curl` on PATH (resources/setup.sh installs it)"
        );
        let (dir, vm, _srv) = server("curl");
        let sock = dir.sock();
        let curl_err = |args: &[&str]| -> (String, String, String) {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "--unix-socket"])
                .arg(&sock)
                .args(["-w", "\n%{http_code}"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "curl {args:?}: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, code) = text.rsplit_once('\n').unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (code.to_string(), body.trim_end().to_string(), stderr)
        };
        let curl = |args: &[&str]| {
            let (code, body, _) = curl_err(args);
            (code, body)
        };
        let (code, body) = curl(&["http://localhost/v1/status"]);
        assert_eq!(code, "200");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "running");
        let (code, body) = curl(&["-X", "PUT", "http://localhost/v1/pause"]);
        assert_eq!((code.as_str(), body.as_str()), ("200", r#"{"ok":true}"#));
        let (code, body) = curl(&["-X", "PUT", "http://localhost/v1/pause"]);
        assert_eq!(code, "409");
        assert_eq!(body, r#"{"error":"the VM is already paused"}"#);
        let (code, _) = curl(&[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"up": false}"#,
            "http://localhost/v1/nics/0/link",
        ]);
        assert_eq!(code, "200");
        // curl sends `Expect: 100-continue` for large bodies (the threshold depends on its
        // version) and then waits for the 100; ask for it outright.
        let long = format!("/tmp/{}", "s".repeat(2000));
        let body = format!(r#"{{"path": "{long}", "resume": true}}"#);
        let (code, _, log) = curl_err(&[
            "-v",
            "-H",
            "Expect: 100-continue",
            "-X",
            "PUT",
            "-d",
            &body,
            "http://localhost/v1/save-state",
        ]);
        assert_eq!(code, "200");
        assert!(log.contains("Expect: 100-continue"), "{log}");
        assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");
        assert_eq!(
            vm.calls(),
            [
                "status".to_string(),
                "pause".into(),
                "pause".into(),
                "set_link 0 false".into(),
                format!("save_state {long} true"),
            ]
        );
        // A body over the limit: curl still gets the 413 (not a broken pipe).
        let big = dir.0.join("big.json");
        std::fs::write(&big, format!(r#"{{"path": "{}"}}"#, "b".repeat(100_000))).unwrap();
        let (code, body) = curl(&[
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", big.display()),
            "http://localhost/v1/save-state",
        ]);
        assert_eq!(code, "413");
        assert!(body.contains("exceeds 65536 bytes"), "{body}");
        let (code, body) = curl(&["-X", "DELETE", "http://localhost/v1/reset"]);
        assert_eq!(code, "405");
        assert!(body.contains("error"));
    }
}
