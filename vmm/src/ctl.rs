//! `kettle ctl SOCKET ACTION`: the shell client of the control API (`api`, `docs/api.md`).
//!
//! Each invocation connects to the unix socket, sends one HTTP/1.1 request, reads the answer
//! to the end (the server closes every connection after one response) and turns it into one
//! line (or, for `status`, pretty JSON; for `screen`, the screen's 25 rows) on stdout; errors
//! are one line on stderr carrying the API's status and message, `kettle ctl: pause: 409 the VM
//! is already paused`.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// How long to wait for kettle's answer to a quick action.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a save-state, which writes all of guest memory.
const SAVE_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest answer read; `status` is a few KiB.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// `kettle ctl`.
#[derive(Args, Debug)]
#[command(
    about = "Control a running kettle through its --api-socket: status, screen, pause, resume, \
             save-state, reset, power-off, shutdown, link",
    after_help = "\
Examples: kettle ctl /run/vm.sock status; kettle ctl /run/vm.sock screen; \
kettle ctl /run/vm.sock save-state vm.kst --resume; kettle ctl /run/vm.sock link 0 down. \
A relative save-state path is taken relative to the directory you run `kettle ctl` in. The \
API itself (for curl and scripts) is described in docs/api.md.

Exit status: 0 on success; 1 when kettle refuses or fails (the message gives the API's status \
and reason) or cannot be reached; 2 for invalid arguments."
)]
pub struct CtlArgs {
    /// The API socket of a running kettle (the PATH of its --api-socket).
    pub socket: PathBuf,
    #[command(subcommand)]
    pub action: CtlAction,
}

/// What to ask of the VM.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CtlAction {
    /// Show the VM's state (running or paused), uptime and configuration, as JSON.
    Status,
    /// Show the VM's text screen as a monitor would: 25 rows of 80 columns, as plain text.
    Screen,
    /// Pause the VM: its vCPUs stop until it is resumed.
    Pause,
    /// Resume a paused VM.
    Resume,
    /// Save the VM to a file (written under a temporary name, then renamed); then the VM stops,
    /// unless --resume.
    SaveState {
        /// The file to write.
        path: PathBuf,
        /// Keep the VM running after saving.
        #[arg(long)]
        resume: bool,
    },
    /// Reset the machine, as the reset button does.
    Reset,
    /// Turn the VM off at once, like pulling the plug.
    PowerOff,
    /// Press the ACPI power button: the guest shuts down cleanly.
    Shutdown,
    /// Plug (up) or unplug (down) the cable of a NIC.
    Link {
        /// The NIC, numbered from 0 in the order of the --nic flags.
        nic: usize,
        /// up or down.
        state: LinkState,
    },
}

/// The state of a NIC's cable.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Up,
    Down,
}

impl CtlAction {
    /// The action's name on the command line, as errors name it.
    pub fn name(&self) -> &'static str {
        match self {
            CtlAction::Status => "status",
            CtlAction::Screen => "screen",
            CtlAction::Pause => "pause",
            CtlAction::Resume => "resume",
            CtlAction::SaveState { .. } => "save-state",
            CtlAction::Reset => "reset",
            CtlAction::PowerOff => "power-off",
            CtlAction::Shutdown => "shutdown",
            CtlAction::Link { .. } => "link",
        }
    }
}

/// Why `kettle ctl` failed. Printed after `kettle ctl: `.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("no kettle is listening on {p} (start it with --api-socket {p})", p = .path.display())]
    NotListening { path: PathBuf },
    #[error("cannot connect to {}: {source}", .path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("{action}: {message}")]
    Argument {
        action: &'static str,
        message: String,
    },
    #[error("{action}: talking to kettle on {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{action}: bad answer from kettle: {message}")]
    Protocol {
        action: &'static str,
        message: String,
    },
    /// The API refused or failed: its HTTP status and message.
    #[error("{action}: {status} {message}")]
    Api {
        action: &'static str,
        status: u16,
        message: String,
    },
}

/// Runs `kettle ctl` and prints the outcome: what `main` calls.
pub fn main(args: CtlArgs) -> ExitCode {
    match run(args) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kettle ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the action to the kettle on `args.socket`; returns the text to print.
pub fn run(args: CtlArgs) -> Result<String, CtlError> {
    let action = args.action.name();
    let (method, target, body, timeout) = match &args.action {
        CtlAction::Status => ("GET", "/v1/status".to_string(), None, ANSWER_TIMEOUT),
        CtlAction::Screen => ("GET", "/v1/screen".into(), None, ANSWER_TIMEOUT),
        CtlAction::Pause => ("PUT", "/v1/pause".into(), None, ANSWER_TIMEOUT),
        CtlAction::Resume => ("PUT", "/v1/resume".into(), None, ANSWER_TIMEOUT),
        CtlAction::Reset => ("PUT", "/v1/reset".into(), None, ANSWER_TIMEOUT),
        CtlAction::PowerOff => ("PUT", "/v1/power-off".into(), None, ANSWER_TIMEOUT),
        CtlAction::Shutdown => ("PUT", "/v1/shutdown".into(), None, ANSWER_TIMEOUT),
        CtlAction::SaveState { path, resume } => {
            // Relative to where the user is, not to where kettle happens to run.
            let abs = std::path::absolute(path).map_err(|e| CtlError::Argument {
                action,
                message: format!("cannot resolve {}: {e}", path.display()),
            })?;
            let text = abs.to_str().ok_or_else(|| CtlError::Argument {
                action,
                message: format!("{} is not valid UTF-8", abs.display()),
            })?;
            let body = json!({"path": text, "resume": resume});
            ("PUT", "/v1/save-state".into(), Some(body), SAVE_TIMEOUT)
        }
        CtlAction::Link { nic, state } => {
            let body = json!({"up": *state == LinkState::Up});
            (
                "PUT",
                format!("/v1/nics/{nic}/link"),
                Some(body),
                ANSWER_TIMEOUT,
            )
        }
    };
    let value = request(
        &args.socket,
        action,
        method,
        &target,
        body.as_ref(),
        timeout,
    )?;
    if args.action == CtlAction::Screen && !value["text"].is_string() {
        return Err(CtlError::Protocol {
            action,
            message: "the answer has no screen text".into(),
        });
    }
    Ok(describe(&args.action, &value))
}

/// The sentence for a successful action.
fn describe(action: &CtlAction, value: &Value) -> String {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    match action {
        CtlAction::Status => pretty(value),
        // As it is: the rows, blank ones included, so that it lines up like the screen.
        CtlAction::Screen => value["text"].as_str().unwrap_or_default().to_string(),
        CtlAction::Pause => "the VM is paused".into(),
        CtlAction::Resume => "the VM is running".into(),
        CtlAction::Reset => "the VM was reset".into(),
        CtlAction::PowerOff => "the VM was powered off".into(),
        CtlAction::Shutdown => "pressed the power button; the guest is shutting down".into(),
        CtlAction::Link { nic, state } => match state {
            LinkState::Up => format!("NIC {nic}: link up"),
            LinkState::Down => format!("NIC {nic}: link down"),
        },
        CtlAction::SaveState { resume, .. } => {
            let after = if *resume {
                "the VM is running"
            } else {
                "the VM has stopped"
            };
            match (
                value["path"].as_str(),
                value["bytes"].as_u64(),
                value["millis"].as_f64(),
            ) {
                (Some(p), Some(b), Some(ms)) => {
                    format!("saved the VM to {p} ({b} bytes in {ms:.0} ms); {after}")
                }
                _ => format!("saved the VM; {after}: {value}"),
            }
        }
    }
}

/// Sends one request and returns the JSON of a 2xx answer; anything else is an error.
pub(crate) fn request(
    socket: &Path,
    action: &'static str,
    method: &str,
    target: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Value, CtlError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => CtlError::NotListening {
            path: socket.to_path_buf(),
        },
        _ => CtlError::Connect {
            path: socket.to_path_buf(),
            source: e,
        },
    })?;
    let io_err = |source: io::Error| {
        let source = if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", timeout.as_secs()),
            )
        } else {
            source
        };
        CtlError::Io {
            action,
            path: socket.to_path_buf(),
            source,
        }
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(io_err)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Connection: close\r\n"
    );
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    // If kettle answers early (an error) and stops reading, its answer is still worth reading.
    let write_result = stream.write_all(req.as_bytes());
    let mut raw = Vec::new();
    let read_result = (&mut stream)
        .take(MAX_ANSWER as u64 + 1)
        .read_to_end(&mut raw);
    match read_result {
        Ok(_) => {}
        // The server closed with bytes of ours unread: what it sent is complete.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => {}
        Err(e) => return Err(io_err(e)),
    }
    if raw.is_empty() {
        if let Err(e) = write_result {
            return Err(io_err(e));
        }
        return Err(CtlError::Protocol {
            action,
            message: "kettle closed the connection without answering".into(),
        });
    }
    if raw.len() > MAX_ANSWER {
        return Err(CtlError::Protocol {
            action,
            message: format!("the answer exceeds {MAX_ANSWER} bytes"),
        });
    }
    let (status, body) =
        parse_response(&raw).map_err(|message| CtlError::Protocol { action, message })?;
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        return match json {
            Some(v) => Ok(v),
            None if body.iter().all(u8::is_ascii_whitespace) => Ok(Value::Null),
            None => Err(CtlError::Protocol {
                action,
                message: format!("status {status} with a body that is not JSON"),
            }),
        };
    }
    let message = match json.as_ref().and_then(|v| v["error"].as_str()) {
        Some(m) => m.to_string(),
        None => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() {
                "(no message)".to_string()
            } else {
                text
            }
        }
    };
    Err(CtlError::Api {
        action,
        status,
        message,
    })
}

/// Splits an HTTP/1.1 answer into status and body, skipping interim (1xx) answers.
fn parse_response(mut raw: &[u8]) -> Result<(u16, &[u8]), String> {
    loop {
        let (head_end, body_start) = crate::api::find_head_end(raw, 0)
            .ok_or_else(|| "the answer ended inside its headers".to_string())?;
        let head = std::str::from_utf8(&raw[..head_end])
            .map_err(|_| "the answer's headers are not UTF-8".to_string())?;
        let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
        let status_line = lines.next().unwrap_or("");
        let mut words = status_line.split(' ');
        let status = match (words.next(), words.next()) {
            (Some(v), Some(code))
                if v.starts_with("HTTP/1.")
                    && code.len() == 3
                    && code.bytes().all(|b| b.is_ascii_digit()) =>
            {
                code.parse::<u16>().map_err(|e| e.to_string())?
            }
            _ => return Err(format!("not an HTTP answer: {status_line:?}")),
        };
        let rest = &raw[body_start..];
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let mut length = None;
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("content-length") {
                    length = Some(
                        value
                            .trim()
                            .parse::<usize>()
                            .map_err(|_| format!("bad Content-Length {value:?}"))?,
                    );
                }
            }
        }
        return match length {
            Some(n) if n > rest.len() => Err(format!(
                "the answer ended after {} of its {n} bytes",
                rest.len()
            )),
            Some(n) => Ok((status, &rest[..n])),
            None => Ok((status, rest)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::{mock_screen, server, TempDir};
    use crate::api::ApiError;
    use clap::{CommandFactory, Parser};
    use std::os::unix::net::UnixListener;

    /// The shape main.rs wires it in.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        Ctl(CtlArgs),
    }

    fn parse(args: &[&str]) -> Result<CtlArgs, clap::Error> {
        let mut all = vec!["kettle", "ctl"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).map(|c| match c.command {
            Command::Ctl(a) => a,
        })
    }

    #[test]
    fn command_line() {
        let a = parse(&["/run/k.sock", "status"]).unwrap();
        assert_eq!(a.socket, Path::new("/run/k.sock"));
        assert_eq!(a.action, CtlAction::Status);
        for (word, action) in [
            ("status", CtlAction::Status),
            ("screen", CtlAction::Screen),
            ("pause", CtlAction::Pause),
            ("resume", CtlAction::Resume),
            ("reset", CtlAction::Reset),
            ("power-off", CtlAction::PowerOff),
            ("shutdown", CtlAction::Shutdown),
        ] {
            assert_eq!(parse(&["s", word]).unwrap().action, action);
            assert_eq!(action.name(), word);
        }
        assert_eq!(
            parse(&["s", "save-state", "vm.kst"]).unwrap().action,
            CtlAction::SaveState {
                path: "vm.kst".into(),
                resume: false
            }
        );
        assert_eq!(
            parse(&["s", "save-state", "--resume", "vm.kst"])
                .unwrap()
                .action,
            CtlAction::SaveState {
                path: "vm.kst".into(),
                resume: true
            }
        );
        assert_eq!(
            parse(&["s", "link", "1", "down"]).unwrap().action,
            CtlAction::Link {
                nic: 1,
                state: LinkState::Down
            }
        );
        for bad in [
            &["s"][..],
            &["s", "frobnicate"],
            &["s", "screen", "0"],
            &["s", "save-state"],
            &["s", "link", "0"],
            &["s", "link", "x", "up"],
            &["s", "link", "0", "sideways"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("ctl")
            .unwrap()
            .render_help()
            .to_string();
        assert!(help.contains("Control a running kettle"), "{help}");
        assert!(help.contains("save-state"), "{help}");
        assert!(help.contains("screen"), "{help}");
        Cli::command().debug_assert();
    }

    fn ctl(sock: &Path, action: CtlAction) -> Result<String, CtlError> {
        run(CtlArgs {
            socket: sock.to_path_buf(),
            action,
        })
    }

    #[test]
    fn every_action() {
        let (dir, vm, _srv) = server("ctl");
        let s = dir.sock();
        let status = ctl(&s, CtlAction::Status).unwrap();
        let v: Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["state"], "running");
        assert!(status.contains("\n  \"state\": \"running\""), "{status}");
        let screen = ctl(&s, CtlAction::Screen).unwrap();
        assert_eq!(screen, mock_screen());
        assert_eq!(screen.split('\n').count(), 25);
        assert_eq!(ctl(&s, CtlAction::Pause).unwrap(), "the VM is paused");
        let v: Value = serde_json::from_str(&ctl(&s, CtlAction::Status).unwrap()).unwrap();
        assert_eq!(v["state"], "paused");
        assert_eq!(ctl(&s, CtlAction::Resume).unwrap(), "the VM is running");
        assert_eq!(ctl(&s, CtlAction::Reset).unwrap(), "the VM was reset");
        assert_eq!(
            ctl(&s, CtlAction::PowerOff).unwrap(),
            "the VM was powered off"
        );
        assert!(ctl(&s, CtlAction::Shutdown)
            .unwrap()
            .contains("power button"));
        let link = |nic, state| ctl(&s, CtlAction::Link { nic, state });
        assert_eq!(link(1, LinkState::Down).unwrap(), "NIC 1: link down");
        assert_eq!(link(0, LinkState::Up).unwrap(), "NIC 0: link up");
        let out = ctl(
            &s,
            CtlAction::SaveState {
                path: "/tmp/a.kst".into(),
                resume: true,
            },
        )
        .unwrap();
        assert_eq!(
            out,
            "saved the VM to /tmp/a.kst (4096 bytes in 7 ms); the VM is running"
        );
        // A relative path is the user's, made absolute before it reaches kettle.
        let out = ctl(
            &s,
            CtlAction::SaveState {
                path: "sub/b.kst".into(),
                resume: false,
            },
        )
        .unwrap();
        let abs = std::env::current_dir().unwrap().join("sub/b.kst");
        assert!(out.ends_with("; the VM has stopped"), "{out}");
        assert!(out.contains(&abs.display().to_string()), "{out}");
        assert_eq!(
            vm.calls(),
            [
                "status".to_string(),
                "screen".into(),
                "pause".into(),
                "status".into(),
                "resume".into(),
                "reset".into(),
                "power_off".into(),
                "shutdown".into(),
                "set_link 1 false".into(),
                "set_link 0 true".into(),
                "save_state /tmp/a.kst true".into(),
                format!("save_state {} false", abs.display()),
            ]
        );
    }

    #[test]
    fn api_errors_carry_status_and_message() {
        let (dir, vm, _srv) = server("ctlerr");
        let s = dir.sock();
        ctl(&s, CtlAction::Pause).unwrap();
        let e = ctl(&s, CtlAction::Pause).unwrap_err();
        assert!(matches!(&e, CtlError::Api { status: 409, .. }), "{e:?}");
        assert_eq!(e.to_string(), "pause: 409 the VM is already paused");
        let e = ctl(
            &s,
            CtlAction::Link {
                nic: 5,
                state: LinkState::Up,
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "link: 404 no NIC 5");
        vm.fail_next(ApiError::internal("cannot write /x.kst: disk full"));
        let e = ctl(
            &s,
            CtlAction::SaveState {
                path: "/x.kst".into(),
                resume: false,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "save-state: 500 cannot write /x.kst: disk full"
        );
        vm.fail_next(ApiError::unavailable("the VM is stopping"));
        let e = ctl(&s, CtlAction::Status).unwrap_err();
        assert_eq!(e.to_string(), "status: 503 the VM is stopping");
        vm.fail_next(ApiError::unavailable("the VM has stopped"));
        let e = ctl(&s, CtlAction::Screen).unwrap_err();
        assert_eq!(e.to_string(), "screen: 503 the VM has stopped");
    }

    #[test]
    fn nobody_listening() {
        let dir = TempDir::new("ctlnone");
        let s = dir.sock();
        let want = format!(
            "no kettle is listening on {p} (start it with --api-socket {p})",
            p = s.display()
        );
        let e = ctl(&s, CtlAction::Status).unwrap_err();
        assert_eq!(e.to_string(), want);
        // A socket file left by a kettle that died reads the same.
        drop(UnixListener::bind(&s).unwrap());
        let e = ctl(&s, CtlAction::Pause).unwrap_err();
        assert_eq!(e.to_string(), want);
    }

    /// A fake kettle that answers the next connection with `answer` (after reading the
    /// request's head).
    fn fake(dir: &TempDir, answer: &'static [u8]) -> std::thread::JoinHandle<()> {
        let l = UnixListener::bind(dir.sock()).unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(answer);
        })
    }

    #[test]
    fn odd_answers() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"",
                "status: bad answer from kettle: kettle closed the connection without answering",
            ),
            (
                b"garbage\r\n\r\n",
                "status: bad answer from kettle: not an HTTP answer: \"garbage\"",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Le",
                "status: bad answer from kettle: the answer ended inside its headers",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
                "status: bad answer from kettle: the answer ended after 2 of its 10 bytes",
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\nnot json",
                "status: bad answer from kettle: status 200 with a body that is not JSON",
            ),
            (
                b"HTTP/1.1 502 Bad Gateway\r\n\r\nupstream down\n",
                "status: 502 upstream down",
            ),
            (
                b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                "status: 500 (no message)",
            ),
        ];
        for (answer, want) in cases {
            let dir = TempDir::new("ctlodd");
            let t = fake(&dir, answer);
            let e = ctl(&dir.sock(), CtlAction::Status).unwrap_err();
            assert_eq!(e.to_string(), *want);
            t.join().unwrap();
        }
        // Interim answers are skipped; a body without Content-Length runs to the end.
        let dir = TempDir::new("ctlodd");
        let t = fake(
            &dir,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\nContent-Type: application/json\n\n{\"state\":\"paused\"}",
        );
        let out = ctl(&dir.sock(), CtlAction::Status).unwrap();
        assert_eq!(out, "{\n  \"state\": \"paused\"\n}");
        t.join().unwrap();
    }

    #[test]
    fn screen_prints_the_text_as_is() {
        // The text goes out untouched: blank rows, leading spaces, and no JSON around it.
        let dir = TempDir::new("ctlscreen");
        let t = fake(
            &dir,
            b"HTTP/1.1 200 OK\r\nContent-Length: 57\r\n\r\n\
              {\"rows\":25,\"columns\":80,\"text\":\"  A:\\\\>dir\\n\\nTICK 0001\"}",
        );
        let out = ctl(&dir.sock(), CtlAction::Screen).unwrap();
        assert_eq!(out, "  A:\\>dir\n\nTICK 0001");
        t.join().unwrap();
        // An answer without the text is kettle's fault, not an empty screen.
        let dir = TempDir::new("ctlscreen");
        let t = fake(
            &dir,
            b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n{\"rows\":25,\"columns\":80}",
        );
        let e = ctl(&dir.sock(), CtlAction::Screen).unwrap_err();
        assert_eq!(
            e.to_string(),
            "screen: bad answer from kettle: the answer has no screen text"
        );
        t.join().unwrap();
    }

    #[test]
    fn parse_response_bounds() {
        assert_eq!(
            parse_response(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
            Ok((204, &b""[..]))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra"),
            Ok((200, &b"{}"[..]))
        );
        assert!(parse_response(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 100 Continue\r\n\r\n").is_err());
        assert!(parse_response(b"\xff\xff\r\n\r\n").is_err());
    }
}
