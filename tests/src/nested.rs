//! Linux guests for integration tests: the guest assets and the nested test host.
//!
//! The local `/dev/kvm` on the project's machines cannot boot Linux (shared/TESTING.md), so
//! tests that need a real operating system run kettle inside the *nested test host*: QEMU TCG
//! with an emulated AMD SVM CPU booting a Debian kernel that loads `kvm-amd`. Two scripts do
//! the work and this module drives them:
//!
//! - `resources/build-assets.sh` builds, from Debian packages and cached outside the repo,
//!   the guest kernel (`vmlinuz`, and `vmlinux`: the same kernel as an uncompressed PVH ELF)
//!   and `guest-initrd.gz`, a busybox initramfs whose `/init` contract is documented at the
//!   top of that script (`kettle.modules=`, `kettle.run=`, `/tests/NAME.sh`, the
//!   `KETTLE-GUEST-READY` and `KETTLE-TEST-EXIT <status>` console lines);
//! - `resources/nested-host.sh` boots the nested test host and runs a script in it as root,
//!   with `/bin/kettle`, `/guest/vmlinuz` and `/guest/guest-initrd.gz` present, and delimits
//!   the script's output with `NESTED-SCRIPT-BEGIN` / `NESTED-SCRIPT-END`, then
//!   `NESTED-EXIT <status>`.
//!
//! A typical test boots a Linux guest with kettle inside the nested host (about 25 s):
//!
//! ```no_run
//! use std::time::Duration;
//! use kettle_tests::nested::{marker_values, run_nested};
//!
//! let run = run_nested(
//!     r#"timeout 150 kettle run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --memory 256M \
//!         --no-reboot --cmdline "console=ttyS0 quiet panic=-1 kettle.modules=ata_piix kettle.run=info" </dev/null"#,
//!     Duration::from_secs(300),
//! );
//! run.expect_success();
//! let out = run.script_output().unwrap();
//! assert!(out.contains("KETTLE-GUEST-READY"));
//! assert_eq!(marker_values(out, "KETTLE-TEST-EXIT"), ["0"]);
//! ```
//!
//! Tests that cannot run here fail loudly (a panic that says what is missing); they never
//! skip. One outer QEMU runs at a time per test process: TCG is CPU-bound, and parallel
//! nested hosts only make timeouts likely. A nested run that timed out is retried once and
//! the retry is reported on stderr; a run that failed any other way is never retried.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Exit status of `nested-host.sh` when the outer timeout fired before `NESTED-EXIT`.
pub const STATUS_TIMEOUT: i32 = 124;
/// Exit status of `nested-host.sh` when the nested host could not be set up or stopped
/// without reporting a status (the console tail says why).
pub const STATUS_HOST_FAILED: i32 = 125;

/// The guest assets built by `resources/build-assets.sh`.
#[derive(Clone, Debug)]
pub struct Assets {
    /// `$KETTLE_CACHE/assets`.
    pub dir: PathBuf,
    /// The Debian kernel as a bzImage.
    pub vmlinuz: PathBuf,
    /// The same kernel as an uncompressed ELF with a PVH entry note.
    pub vmlinux: PathBuf,
    /// The busybox initramfs for kettle guests (gzip-compressed newc cpio).
    pub guest_initrd: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub kernel_version: String,
}

/// The result of one nested-host run.
#[derive(Clone, Debug)]
pub struct NestedRun {
    /// The script's exit status, or [`STATUS_TIMEOUT`] / [`STATUS_HOST_FAILED`].
    pub status: i32,
    /// The outer console (carriage returns removed).
    pub console: String,
    /// The outer timeout fired before the script reported its status (after the retry).
    pub timed_out: bool,
    /// What `nested-host.sh` said on stderr (build progress, timeout messages).
    pub messages: String,
    /// 1, or 2 when the first attempt timed out and was retried.
    pub attempts: u32,
    /// Wall time of the last attempt, asset and initramfs building included.
    pub elapsed: Duration,
}

impl NestedRun {
    /// The script's own output: the lines between `NESTED-SCRIPT-BEGIN` and
    /// `NESTED-SCRIPT-END` (to the end of the console if the end marker is missing).
    pub fn script_output(&self) -> Option<&str> {
        section(&self.console, "NESTED-SCRIPT-BEGIN", "NESTED-SCRIPT-END")
            .or_else(|| section_to_end(&self.console, "NESTED-SCRIPT-BEGIN"))
    }

    /// The last `lines` lines of the console.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.console, lines)
    }

    /// Panics, with the console's tail and the script's status, unless the script exited 0.
    #[track_caller]
    pub fn expect_success(&self) -> &Self {
        if self.status != 0 {
            panic!(
                "nested run failed: {}\n---- console tail ----\n{}\n---- nested-host.sh ----\n{}",
                self.describe(),
                self.tail(60),
                tail(&self.messages, 20)
            );
        }
        self
    }

    /// One line: status, timeout, attempts, time.
    pub fn describe(&self) -> String {
        let what = if self.timed_out {
            "TIMED OUT".to_string()
        } else if self.status == STATUS_HOST_FAILED && !self.console.contains("NESTED-EXIT ") {
            "the nested host failed before the script reported a status".to_string()
        } else {
            format!("script exit status {}", self.status)
        };
        let stalls = self.stalls();
        let woken = if stalls > 0 {
            format!("; the host stalled and was woken {stalls} time(s), see STALL lines")
        } else {
            String::new()
        };
        format!(
            "{what} after {:.1} s (attempt {}){woken}",
            self.elapsed.as_secs_f64(),
            self.attempts
        )
    }

    /// How often nested-host.sh's watchdog found the host stalled (silent and idle) and
    /// pressed a key to wake it.
    pub fn stalls(&self) -> usize {
        self.messages
            .lines()
            .filter(|l| l.starts_with("nested-host: STALL: pressing a key"))
            .count()
    }
}

/// Options of a nested-host run beyond the script itself.
#[derive(Clone, Debug)]
pub struct NestedOptions {
    /// Bound on the outer QEMU run (asset and initramfs building come on top).
    pub timeout: Duration,
    /// The kettle binary to include as `/bin/kettle`; `None` for a host without kettle.
    pub kettle: Option<PathBuf>,
    /// Extra executables `(source, destination)`, copied with their shared libraries.
    pub bins: Vec<(PathBuf, String)>,
    /// Extra files or directories `(source, destination)`.
    pub adds: Vec<(PathBuf, String)>,
    /// Added to the host kernel's command line (KETTLE_NESTED_CMDLINE of nested-host.sh).
    pub host_cmdline: Option<String>,
}

impl NestedOptions {
    /// A host with kettle (built by [`kettle_binary`]).
    pub fn new(timeout: Duration) -> Self {
        NestedOptions {
            timeout,
            kettle: Some(kettle_binary()),
            bins: Vec::new(),
            adds: Vec::new(),
            host_cmdline: None,
        }
    }

    /// A host without kettle, e.g. to test the host itself.
    pub fn without_kettle(timeout: Duration) -> Self {
        NestedOptions {
            timeout,
            kettle: None,
            bins: Vec::new(),
            adds: Vec::new(),
            host_cmdline: None,
        }
    }

    /// Includes the executable `src` at `dest` (absolute) with its shared libraries.
    pub fn bin(mut self, src: impl Into<PathBuf>, dest: &str) -> Self {
        self.bins.push((src.into(), dest.to_string()));
        self
    }

    /// Adds `params` to the host kernel's command line.
    pub fn host_cmdline(mut self, params: &str) -> Self {
        self.host_cmdline = Some(params.to_string());
        self
    }

    /// Includes the file or directory `src` at `dest` (absolute).
    pub fn add(mut self, src: impl Into<PathBuf>, dest: &str) -> Self {
        self.adds.push((src.into(), dest.to_string()));
        self
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Builds the guest assets (once per process) and returns their paths.
pub fn assets() -> Result<Assets, String> {
    static ASSETS: OnceLock<Result<Assets, String>> = OnceLock::new();
    ASSETS.get_or_init(build_assets).clone()
}

fn build_assets() -> Result<Assets, String> {
    let script = workspace_root().join("resources/build-assets.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--quiet")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 30)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let vmlinuz = stdout
        .lines()
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|n| n == "vmlinuz"))
        .ok_or_else(|| format!("{} printed no vmlinuz path: {stdout}", script.display()))?;
    let dir = vmlinuz.parent().expect("an absolute path").to_path_buf();
    let env = std::fs::read_to_string(dir.join("assets.env"))
        .map_err(|e| format!("cannot read {}: {e}", dir.join("assets.env").display()))?;
    let kernel_version = env
        .lines()
        .find_map(|l| l.strip_prefix("KA_KVER="))
        .map(|v| v.trim_matches('\'').to_string())
        .ok_or_else(|| format!("no KA_KVER in {}", dir.join("assets.env").display()))?;
    let assets = Assets {
        vmlinuz,
        vmlinux: dir.join("vmlinux"),
        guest_initrd: dir.join("guest-initrd.gz"),
        dir,
        kernel_version,
    };
    for p in [&assets.vmlinux, &assets.guest_initrd] {
        if !p.is_file() {
            return Err(format!(
                "{} did not produce {}",
                script.display(),
                p.display()
            ));
        }
    }
    Ok(assets)
}

/// The release kettle binary, `target/release/kettle`, built with
/// `cargo build --release -p vmm` once per process (cargo makes that cheap when it is
/// up to date). Panics with cargo's output if the build fails.
pub fn kettle_binary() -> PathBuf {
    static KETTLE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = KETTLE.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "--release", "-p", "vmm", "--bin", "kettle"])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build --release -p vmm failed ({}):\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 40)
            ));
        }
        let path = target_dir().join("release/kettle");
        if !path.is_file() {
            return Err(format!(
                "cargo build --release -p vmm did not produce {}",
                path.display()
            ));
        }
        Ok(path)
    });
    match built {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Says precisely what is missing for nested-host runs, or `Ok(())`.
///
/// The scripts install missing Debian packages themselves when running as root with
/// apt-get, so a missing tool is only a problem when that is not possible.
pub fn nested_available() -> Result<(), String> {
    static AVAILABLE: OnceLock<Result<(), String>> = OnceLock::new();
    AVAILABLE.get_or_init(check_nested_available).clone()
}

fn check_nested_available() -> Result<(), String> {
    let root = workspace_root();
    let mut problems = Vec::new();
    for script in ["resources/build-assets.sh", "resources/nested-host.sh"] {
        if !root.join(script).is_file() {
            problems.push(format!("{} is missing", root.join(script).display()));
        }
    }
    if !on_path("bash") {
        problems.push("bash is not installed".to_string());
    }
    let can_install = is_root() && on_path("apt-get");
    let tools = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("depmod", "kmod"),
        ("dpkg-deb", "dpkg"),
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("timeout", "coreutils"),
        ("ldd", "libc-bin"),
        ("gzip", "gzip"),
        ("xz", "xz-utils"),
    ];
    for (tool, package) in tools {
        if !on_path(tool) && !can_install {
            problems.push(format!(
                "{tool} is not installed (Debian package {package}; the scripts install it \
                 themselves only when run as root with apt-get)"
            ));
        }
    }
    if on_path("qemu-system-x86_64") {
        match Command::new("qemu-system-x86_64")
            .args(["-cpu", "help"])
            .output()
        {
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("EPYC") => {}
            Ok(_) => problems.push("qemu-system-x86_64 -cpu help lists no EPYC model".to_string()),
            Err(e) => problems.push(format!("qemu-system-x86_64 does not run: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the nested test host cannot run here: {}",
            problems.join("; ")
        ))
    }
}

/// Installs QEMU the way the scripts do (apt-get, as root), or panics saying why not.
fn install_qemu() {
    let script = workspace_root().join("resources/build-assets.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && ka_require qemu-system-x86_64:qemu-system-x86"#)
        .arg("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    if !out.status.success() || !on_path("qemu-system-x86_64") {
        panic!(
            "qemu-system-x86_64 is not installed and could not be installed:\n{}",
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
}

/// Where `tool` is on the PATH, if it is.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn on_path(tool: &str) -> bool {
    find_on_path(tool).is_some()
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Serializes the QEMU runs of this process: TCG is CPU-bound, and QEMUs running side by
/// side only make timeouts likely.
fn one_qemu_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `script` (busybox sh, as root) in a nested test host with kettle, bounded by
/// `timeout`. See [`run_nested_with`].
pub fn run_nested(script: &str, timeout: Duration) -> NestedRun {
    run_nested_with(script, &NestedOptions::new(timeout))
}

/// Runs `script` in a nested test host. Panics (loudly, with the reason) if the host cannot
/// be built here; returns the run otherwise, whatever the script's status. A run that timed
/// out is retried once, and the retry is reported on stderr.
pub fn run_nested_with(script: &str, options: &NestedOptions) -> NestedRun {
    if let Err(e) = nested_available() {
        panic!("{e}");
    }
    let _guard = one_qemu_at_a_time();

    let first = run_once(script, options, 1);
    if !first.timed_out {
        return first;
    }
    eprintln!(
        "nested-host: RETRYING: the first attempt timed out after {:.0} s (TESTING.md: the \
         emulator can stall); its console ended with:\n{}",
        first.elapsed.as_secs_f64(),
        first.tail(20)
    );
    let second = run_once(script, options, 2);
    eprintln!("nested-host: retry result: {}", second.describe());
    second
}

fn run_once(script: &str, options: &NestedOptions, attempt: u32) -> NestedRun {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let script_path = std::env::temp_dir().join(format!(
        "kettle-nested-{}-{}.sh",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&script_path, script)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", script_path.display()));

    let mut cmd = Command::new("bash");
    cmd.arg(workspace_root().join("resources/nested-host.sh"))
        .arg("--timeout")
        .arg(options.timeout.as_secs().max(1).to_string());
    if let Some(params) = &options.host_cmdline {
        cmd.env("KETTLE_NESTED_CMDLINE", params);
    }
    match &options.kettle {
        Some(kettle) => cmd.arg("--kettle").arg(kettle),
        None => cmd.arg("--no-kettle"),
    };
    for (src, dest) in &options.bins {
        cmd.arg("--bin").arg(format!("{}:{dest}", src.display()));
    }
    for (src, dest) in &options.adds {
        cmd.arg("--add").arg(format!("{}:{dest}", src.display()));
    }
    // KETTLE_NESTED_LOG=FILE: the console, live, in FILE.ATTEMPT (for watching a long run).
    if let Some(log) = std::env::var_os("KETTLE_NESTED_LOG") {
        let mut log = log;
        log.push(format!(".{attempt}"));
        cmd.arg("--log").arg(log);
    }
    cmd.arg(&script_path);

    let started = Instant::now();
    // Building the assets may download ~70 MB the first time: allow for it on top of the
    // outer timeout, which nested-host.sh enforces itself.
    let deadline = options.timeout + Duration::from_secs(900);
    let (status, stdout, stderr) = run_with_deadline(cmd, deadline);
    let _ = std::fs::remove_file(&script_path);

    let console = stdout.replace('\r', "");
    let reported = console.lines().any(|l| l.contains("NESTED-EXIT "));
    let status = match status {
        Some(s) => s.code().unwrap_or(STATUS_HOST_FAILED),
        None => STATUS_TIMEOUT,
    };
    let run = NestedRun {
        timed_out: status == STATUS_TIMEOUT && !reported,
        status,
        console,
        messages: stderr,
        attempts: attempt,
        elapsed: started.elapsed(),
    };
    // A stall the watchdog woke is worth seeing even when the run passed.
    if run.stalls() > 0 {
        let watchdog =
            |l: &&str| l.starts_with("nested-host: STALL") || l.starts_with("nested-host:   ");
        for line in run.messages.lines().filter(watchdog) {
            eprintln!("{line}");
        }
    }
    eprintln!("nested-host: {}", run.describe());
    run
}

/// Runs `cmd` with piped stdout/stderr; kills it after `deadline` (status `None`).
///
/// After a kill, grandchildren may still hold the pipes open (nested-host.sh's QEMU stops
/// at its own timeout): their output is awaited only briefly.
fn run_with_deadline(mut cmd: Command, deadline: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped")));
    let err = read_all(Box::new(child.stderr.take().expect("piped")));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    let wait = if status.is_some() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(5)
    };
    let stdout = out.recv_timeout(wait).unwrap_or_default();
    let mut stderr = err.recv_timeout(wait).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!(
            "\n{cmd:?} did not finish within {deadline:?}: killed\n"
        ));
    }
    (status, stdout, stderr)
}

/// The text between the first line ending with `begin` and the next line ending with `end`
/// (markers may follow other output on their line, e.g. terminal escapes).
pub fn section<'a>(text: &'a str, begin: &str, end: &str) -> Option<&'a str> {
    let start = line_end_after(text, 0, begin)?;
    let mut pos = start;
    for line in text[start..].split_inclusive('\n') {
        if line.trim_end().ends_with(end) {
            return Some(&text[start..pos]);
        }
        pos += line.len();
    }
    None
}

/// The text after the first line ending with `begin`, to the end.
pub fn section_to_end<'a>(text: &'a str, begin: &str) -> Option<&'a str> {
    line_end_after(text, 0, begin).map(|start| &text[start..])
}

/// Offset just after the first line (from `from`) ending with `marker`.
fn line_end_after(text: &str, from: usize, marker: &str) -> Option<usize> {
    let mut pos = from;
    for line in text[from..].split_inclusive('\n') {
        pos += line.len();
        if line.trim_end().ends_with(marker) {
            return Some(pos);
        }
    }
    None
}

/// For every line containing `marker`, the rest of that line after it, trimmed:
/// `marker_values(console, "KETTLE-TEST-EXIT")` gives `["0"]`.
pub fn marker_values<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|line| line.find(marker).map(|i| line[i + marker.len()..].trim()))
        .collect()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A newc ("070701") cpio archive of `entries`: `(path, mode, contents)`, where `mode`
/// includes the file type (`0o100755` for an executable, `0o040755` for a directory) and
/// paths are relative (`tests/foo.sh`). Owned by root, mtime 0.
pub fn newc_archive(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn pad4(buf: &mut Vec<u8>) {
        while buf.len() & 3 != 0 {
            buf.push(0);
        }
    }
    fn entry(buf: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        buf.extend_from_slice(b"070701");
        for f in fields {
            buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        buf.extend_from_slice(name.as_bytes());
        buf.push(0);
        pad4(buf);
        buf.extend_from_slice(data);
        pad4(buf);
    }
    let mut buf = Vec::new();
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        entry(
            &mut buf,
            i as u32 + 1,
            name.trim_start_matches('/'),
            *mode,
            data,
        );
    }
    entry(&mut buf, 0, "TRAILER!!!", 0, &[]);
    buf
}

/// Writes to `out` the guest initramfs with extra test scripts: `tests` are `(NAME,
/// script)` pairs that become `/tests/NAME.sh`, run by `kettle.run=NAME`. The result is
/// `guest-initrd.gz` followed by a newc archive (the kernel unpacks both, in order).
pub fn guest_initrd_with_tests(tests: &[(&str, &str)], out: &Path) -> Result<PathBuf, String> {
    guest_initrd_with(tests, &GuestExtras::default(), out)
}

/// What a test adds to the guest initramfs besides its scripts: see [`guest_initrd_with`].
#[derive(Clone, Debug, Default)]
pub struct GuestExtras {
    /// Kernel modules (names as for `kettle.modules=`) from the kernel package, with their
    /// dependencies, for those the guest initramfs does not carry.
    pub modules: Vec<String>,
    /// Executables `(source, destination)` of this machine, with the shared libraries `ldd`
    /// lists (at the paths `ldd` gives, the dynamic loader included).
    pub bins: Vec<(PathBuf, String)>,
    /// Files `(source, destination)`, permission bits kept (symlinks followed).
    pub files: Vec<(PathBuf, String)>,
}

impl GuestExtras {
    /// Nothing extra.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the kernel module `name` (e.g. `isofs`) with its dependencies.
    pub fn module(mut self, name: &str) -> Self {
        self.modules.push(name.to_string());
        self
    }

    /// Adds the executable `src` at `dest` (absolute) with its shared libraries.
    pub fn bin(mut self, src: impl Into<PathBuf>, dest: &str) -> Self {
        self.bins.push((src.into(), dest.to_string()));
        self
    }

    /// Adds the file `src` at `dest` (absolute).
    pub fn file(mut self, src: impl Into<PathBuf>, dest: &str) -> Self {
        self.files.push((src.into(), dest.to_string()));
        self
    }

    fn is_empty(&self) -> bool {
        self.modules.is_empty() && self.bins.is_empty() && self.files.is_empty()
    }
}

/// Like [`guest_initrd_with_tests`], plus `extras` in the appended archive: modules (with a
/// module index regenerated by `depmod` over the initramfs's own modules and the new ones, so
/// `kettle.modules=` loads them with their dependencies), executables with their shared
/// libraries, and files. Fails, saying why, when a module or file cannot be found.
pub fn guest_initrd_with(
    tests: &[(&str, &str)],
    extras: &GuestExtras,
    out: &Path,
) -> Result<PathBuf, String> {
    let assets = assets()?;
    let mut image = std::fs::read(&assets.guest_initrd)
        .map_err(|e| format!("cannot read {}: {e}", assets.guest_initrd.display()))?;
    // An uncompressed archive after a compressed one must start 4-byte aligned; the kernel
    // skips the zero padding.
    while image.len() & 3 != 0 {
        image.push(0);
    }
    let names: Vec<String> = tests
        .iter()
        .map(|(name, _)| format!("tests/{name}.sh"))
        .collect();
    let mut entries: Vec<(&str, u32, &[u8])> = vec![("tests", 0o040755, &[])];
    for ((_, script), name) in tests.iter().zip(&names) {
        entries.push((name, 0o100755, script.as_bytes()));
    }
    let extra = if extras.is_empty() {
        Vec::new()
    } else {
        extra_entries(&assets, extras)?
    };
    for (name, mode, data) in &extra {
        entries.push((name, *mode, data));
    }
    image.extend_from_slice(&newc_archive(&entries));
    std::fs::write(out, &image).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    Ok(out.to_path_buf())
}

/// The newc entries `(path, mode, contents)` of `extras`: directories first (parents before
/// children), then files, paths relative.
fn extra_entries(
    assets: &Assets,
    extras: &GuestExtras,
) -> Result<Vec<(String, u32, Vec<u8>)>, String> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    let mut files: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    let mut add_file = |dest: &str, src: &Path, mode: Option<u32>| -> Result<(), String> {
        let data = std::fs::read(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let perm = match mode {
            Some(m) => m,
            None => {
                std::fs::metadata(src)
                    .map_err(|e| format!("cannot stat {}: {e}", src.display()))?
                    .permissions()
                    .mode()
                    & 0o7777
            }
        };
        files.insert(
            dest.trim_start_matches('/').to_string(),
            (0o100000 | perm, data),
        );
        Ok(())
    };
    for (src, dest) in &extras.files {
        add_file(dest, src, None)?;
    }
    for (src, dest) in &extras.bins {
        add_file(dest, src, Some(0o755))?;
        for lib in shared_libraries(src)? {
            add_file(&lib.to_string_lossy(), &lib, Some(0o755))?;
        }
    }
    if !extras.modules.is_empty() {
        for (dest, data) in extra_modules(assets, &extras.modules)? {
            files.insert(dest, (0o100644, data));
        }
    }

    let mut dirs = std::collections::BTreeSet::new();
    for name in files.keys() {
        let mut p = Path::new(name).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    let mut entries: Vec<(String, u32, Vec<u8>)> = dirs
        .into_iter()
        .map(|d| (d, 0o040755, Vec::new()))
        .collect();
    entries.extend(files.into_iter().map(|(n, (m, d))| (n, m, d)));
    Ok(entries)
}

/// The shared libraries `ldd` lists for `bin` (the dynamic loader included); none for a
/// static executable.
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(bin)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ldd (Debian package libc-bin): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(format!(
            "ldd {} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ if line.contains("not found") => {
                return Err(format!("ldd {}: {}", bin.display(), line.trim()))
            }
            _ => {}
        }
    }
    Ok(libs)
}

/// A variable of `assets.env` (`NAME='value'`).
fn assets_env(assets: &Assets, name: &str) -> Result<String, String> {
    let path = assets.dir.join("assets.env");
    let env = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim_matches('\'').to_string())
        .ok_or_else(|| format!("no {name} in {}", path.display()))
}

/// The extracted kernel package (`KA_KTREE` of `assets.env`): `lib/modules/VERSION/...`.
pub fn kernel_tree() -> Result<PathBuf, String> {
    let assets = assets()?;
    let tree = PathBuf::from(assets_env(&assets, "KA_KTREE")?);
    if !tree
        .join("lib/modules")
        .join(&assets.kernel_version)
        .is_dir()
    {
        return Err(format!(
            "the kernel tree {} has no lib/modules/{}",
            tree.display(),
            assets.kernel_version
        ));
    }
    Ok(tree)
}

/// Module name as `kettle.modules=` and modules.dep compare them.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// The modules `names` that the guest initramfs lacks, with their dependencies, and a module
/// index for all its modules: `(destination, contents)` pairs, modules uncompressed.
fn extra_modules(assets: &Assets, names: &[String]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let ver = &assets.kernel_version;
    let root = std::env::temp_dir().join(format!(
        "kettle-guest-modules-{}-{}",
        std::process::id(),
        MODULES_SCRATCH.fetch_add(1, Ordering::Relaxed)
    ));
    let result = collect_modules(assets, names, &root).and_then(|files| {
        files
            .into_iter()
            .map(|(dest, src)| {
                std::fs::read(&src)
                    .map(|data| (format!("lib/modules/{ver}/{dest}"), data))
                    .map_err(|e| format!("cannot read {}: {e}", src.display()))
            })
            .collect()
    });
    let _ = std::fs::remove_dir_all(&root);
    result
}

static MODULES_SCRATCH: AtomicU64 = AtomicU64::new(0);

/// See [`extra_modules`]; works in `root`, returns paths relative to lib/modules/VERSION and
/// their files in `root`.
fn collect_modules(
    assets: &Assets,
    names: &[String],
    root: &Path,
) -> Result<Vec<(String, PathBuf)>, String> {
    let ver = &assets.kernel_version;
    let tree = kernel_tree()?;
    let moddir = tree.join("lib/modules").join(ver);
    let dep_text = std::fs::read_to_string(moddir.join("modules.dep"))
        .map_err(|e| format!("cannot read {}: {e}", moddir.join("modules.dep").display()))?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();

    // The initramfs's own lib/modules, to regenerate the index over old and new modules.
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let unpack = Command::new("sh")
        .arg("-c")
        .arg(r#"gzip -dc "$1" | cpio -idm --quiet --no-absolute-filenames 'lib/modules/*'"#)
        .arg("sh")
        .arg(&assets.guest_initrd)
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run gzip/cpio: {e}"))?;
    let guest_moddir = root.join("lib/modules").join(ver);
    if !unpack.status.success() || !guest_moddir.join("modules.dep").is_file() {
        return Err(format!(
            "cannot unpack lib/modules/{ver} from {}: {}",
            assets.guest_initrd.display(),
            String::from_utf8_lossy(&unpack.stderr)
        ));
    }
    let present = std::fs::read_to_string(guest_moddir.join("modules.dep"))
        .map_err(|e| format!("cannot read the guest's modules.dep: {e}"))?;
    let have: std::collections::BTreeSet<String> = present
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(module_name)
        .collect();

    let mut added: Vec<String> = Vec::new();
    for name in names {
        let want = name.replace('-', "_");
        if have.contains(&want) {
            continue;
        }
        let Some(line) = dep_text
            .lines()
            .find(|l| l.split(':').next().map(module_name).as_deref() == Some(want.as_str()))
        else {
            if builtin.lines().any(|l| module_name(l) == want) {
                continue;
            }
            return Err(format!(
                "module {name} is neither loadable nor built into {ver} ({})",
                moddir.display()
            ));
        };
        let (path, deps) = line.split_once(':').unwrap_or((line, ""));
        for rel in std::iter::once(path).chain(deps.split_whitespace()) {
            if have.contains(&module_name(rel)) || added.iter().any(|a| a == rel) {
                continue;
            }
            let src = moddir.join(rel);
            let stem = &rel[..rel.find(".ko").map(|i| i + 3).unwrap_or(rel.len())];
            let dst = guest_moddir.join(stem);
            std::fs::create_dir_all(dst.parent().unwrap())
                .map_err(|e| format!("cannot create {}: {e}", dst.display()))?;
            let decompress = |tool: &str| -> Result<(), String> {
                let out = Command::new(tool)
                    .arg("-dc")
                    .arg(&src)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run {tool} for {}: {e}", src.display()))?;
                if !out.status.success() {
                    return Err(format!("{tool} -dc {} failed", src.display()));
                }
                std::fs::write(&dst, out.stdout)
                    .map_err(|e| format!("cannot write {}: {e}", dst.display()))
            };
            if rel.ends_with(".ko") {
                std::fs::copy(&src, &dst)
                    .map_err(|e| format!("cannot copy {}: {e}", src.display()))?;
            } else if rel.ends_with(".ko.xz") {
                decompress("xz")?;
            } else if rel.ends_with(".ko.zst") {
                decompress("zstd")?;
            } else if rel.ends_with(".ko.gz") {
                decompress("gzip")?;
            } else {
                return Err(format!("unexpected module file {}", src.display()));
            }
            added.push(rel.to_string());
        }
    }

    let depmod = Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(ver)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run depmod (Debian package kmod): {e}"))?;
    if !depmod.status.success() {
        return Err(format!(
            "depmod -b {} {ver} failed: {}",
            root.display(),
            String::from_utf8_lossy(&depmod.stderr)
        ));
    }
    // The new modules, and every index file (depmod rewrote them all).
    let mut result = Vec::new();
    for rel in &added {
        let stem = &rel[..rel.find(".ko").map(|i| i + 3).unwrap_or(rel.len())];
        result.push((stem.to_string(), guest_moddir.join(stem)));
    }
    let listing = std::fs::read_dir(&guest_moddir)
        .map_err(|e| format!("cannot list {}: {e}", guest_moddir.display()))?;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("modules.") && entry.path().is_file() {
            result.push((name, entry.path()));
        }
    }
    Ok(result)
}

/// Makes sure the commands of `tools` (`(command, Debian package)`) are installed: installs
/// the missing packages the way the scripts do (apt-get, as root), or says precisely what is
/// missing and why it could not be installed.
pub fn require_tools(tools: &[(&str, &str)]) -> Result<(), String> {
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(t, _)| !on_path(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let script = workspace_root().join("resources/build-assets.sh");
    let pairs: Vec<String> = missing.iter().map(|(t, p)| format!("{t}:{p}")).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$1" && shift && ka_require "$@""#)
        .arg("bash")
        .arg(&script)
        .args(&pairs)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run bash: {e}"))?;
    let still: Vec<String> = missing
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|(t, p)| format!("{t} (Debian package {p})"))
        .collect();
    if out.status.success() && still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing and not installable here: {}:\n{}",
            still.join(", "),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        ))
    }
}

/// A guest booted directly by QEMU TCG (no KVM, no kettle): the reference that checks the
/// guest assets themselves, and a baseline to compare kettle against.
#[derive(Clone, Debug)]
pub struct QemuGuestRun {
    /// QEMU's exit status (`None` if it was killed at the timeout).
    pub status: Option<i32>,
    /// The serial console (carriage returns removed).
    pub console: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Boots `kernel` + `initrd` with `append` (plus `console=ttyS0 panic=-1 quiet`) in
/// `qemu-system-x86_64 -accel tcg` (PC machine, 512 MiB, no network) until it powers off.
pub fn run_qemu_tcg_guest(
    kernel: &Path,
    initrd: &Path,
    append: &str,
    timeout: Duration,
) -> QemuGuestRun {
    if let Err(e) = nested_available() {
        panic!("{e}");
    }
    if !on_path("qemu-system-x86_64") {
        install_qemu();
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-nic",
        "none",
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1 quiet {append}"));
    let _guard = one_qemu_at_a_time();
    let started = Instant::now();
    let (status, stdout, _stderr) = run_with_deadline(cmd, timeout);
    QemuGuestRun {
        status: status.and_then(|s| s.code()),
        console: stdout.replace('\r', ""),
        timed_out: status.is_none(),
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_finds_text_between_markers() {
        let text = "noise\n\x1b[2JBEGIN\nline 1\nline 2\nEND\nafter\n";
        assert_eq!(section(text, "BEGIN", "END"), Some("line 1\nline 2\n"));
        assert_eq!(section(text, "BEGIN", "MISSING"), None);
        assert_eq!(section_to_end(text, "END"), Some("after\n"));
    }

    #[test]
    fn marker_values_returns_the_rest_of_marked_lines() {
        let text = "x\nNESTED-EXIT 3\n[ 1.0] KETTLE-TEST-EXIT 0\n";
        assert_eq!(marker_values(text, "NESTED-EXIT"), ["3"]);
        assert_eq!(marker_values(text, "KETTLE-TEST-EXIT"), ["0"]);
    }

    #[test]
    fn newc_archive_layout() {
        let a = newc_archive(&[
            ("tests", 0o040755, b""),
            ("tests/a.sh", 0o100755, b"echo hi\n"),
        ]);
        assert_eq!(a.len() % 4, 0);
        assert!(a.starts_with(b"070701"));
        // The second header starts 4-byte aligned after "tests\0" (110 + 6 = 116).
        assert_eq!(&a[116..122], b"070701");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("tests/a.sh\0"));
        assert!(text.contains("echo hi\n"));
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn newc_archive_reads_back_with_cpio() {
        if !on_path("cpio") {
            panic!("cpio is not installed (Debian package cpio)");
        }
        let a = newc_archive(&[
            ("tests", 0o040755, b""),
            ("tests/a.sh", 0o100755, b"echo hi\n"),
        ]);
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio runs");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), &a).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "cpio -t failed: {listing}");
        assert!(
            listing.contains("drwxr-xr-x") && listing.contains("tests/a.sh"),
            "{listing}"
        );
        assert!(listing.contains("-rwxr-xr-x"), "{listing}");
    }
}
