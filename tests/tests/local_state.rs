//! Save state and the control API with a small guest on the local KVM: a guest counting on the
//! serial port is saved and restored several times (mapped and copied memory) and its count
//! goes on without a gap or a repeat; pause and resume through the API (and `kettle ctl`);
//! the text screen a BIOS-booted guest wrote, through the API (and `kettle ctl`); damaged,
//! foreign and newer saved-state files are refused with the reason.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kettle_tests::guest;
use kettle_tests::nested::kettle_binary;

/// Counts from 0, one 8-digit hex number per line on COM1, forever.
const COUNTER: &str = r#"
main:
    xor %ebx, %ebx
1:  mov %ebx, %eax
    call puthex32
    mov $'\n', %al
    call putc
    inc %ebx
    jmp 1b
"#;

/// A kettle process killed if the test fails.
struct Vm {
    child: Option<Child>,
    api: PathBuf,
    serial: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Vm {
    fn start(dir: &Path, tag: &str, args: &[&str]) -> Vm {
        let mut vm = Vm::spawn(dir, tag, args);
        if let Err((code, err)) = vm.until_api() {
            panic!("kettle exited ({code:?}) before its API came up:\n{err}");
        }
        vm
    }

    /// `kettle run ARGS` with the serial port to `TAG.serial` and the API on `TAG.api`.
    fn spawn(dir: &Path, tag: &str, args: &[&str]) -> Vm {
        let api = dir.join(format!("{tag}.api"));
        let serial = dir.join(format!("{tag}.serial"));
        let child = Command::new(kettle_binary())
            .arg("run")
            .args(args)
            .arg("--serial")
            .arg(format!("file:{}", serial.display()))
            .arg("--api-socket")
            .arg(&api)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kettle");
        Vm {
            child: Some(child),
            api,
            serial,
        }
    }

    /// Waits for the API socket (20 s at most); Err with the exit status and stderr when
    /// kettle exited instead.
    fn until_api(&mut self) -> Result<(), (Option<i32>, String)> {
        let t = Instant::now();
        while !self.api.exists() {
            if let Some(done) = self.exited() {
                return Err(done);
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no API socket after 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Exit status and stderr once kettle has exited.
    fn exited(&mut self) -> Option<(Option<i32>, String)> {
        let child = self.child.as_mut()?;
        let st = child.try_wait().unwrap()?;
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        self.child = None;
        Some((st.code(), err))
    }

    fn lines(&self) -> usize {
        std::fs::read_to_string(&self.serial)
            .unwrap_or_default()
            .matches('\n')
            .count()
    }

    fn wait_lines(&self, n: usize) {
        let t = Instant::now();
        while self.lines() < n {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the guest printed {} lines in 60 s",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http(&self.api, method, path, body)
    }

    /// Runs `kettle ctl API ACTION`: its stdout when it succeeds, its stderr when it fails.
    fn ctl(&self, action: &str) -> Result<String, String> {
        let out = Command::new(kettle_binary())
            .arg("ctl")
            .arg(&self.api)
            .arg(action)
            .output()
            .expect("running kettle ctl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// PUT /v1/save-state to `file`.
    fn save(&self, file: &Path, resume: bool) -> (u16, String) {
        self.request(
            "PUT",
            "/v1/save-state",
            &format!(r#"{{"path": "{}", "resume": {resume}}}"#, file.display()),
        )
    }

    /// Saves to `file` (the VM then stops) and waits for kettle to exit 0; returns the API's
    /// answer and kettle's stderr.
    fn save_and_exit(self, file: &Path) -> (String, String) {
        let (code, body) = self.save(file, false);
        assert_eq!(code, 200, "save-state to {}: {body}", file.display());
        let (code, err) = self.wait();
        assert_eq!(
            code,
            Some(0),
            "kettle after saving to {}: {err}",
            file.display()
        );
        (body, err)
    }

    /// Waits for kettle to exit; returns its status and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let t = Instant::now();
        loop {
            if let Some(done) = self.exited() {
                return done;
            }
            if t.elapsed() > Duration::from_secs(60) {
                panic!("kettle did not exit within 60 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Boots the counting guest (assembled as `name`) with `memory` in kettle and waits until it
/// has printed `lines` lines.
fn counting_vm(dir: &Path, name: &str, memory: &str, lines: usize) -> Vm {
    let elf = guest::build(name, COUNTER);
    let vm = Vm::start(
        dir,
        name,
        &["--kernel", elf.to_str().unwrap(), "--memory", memory],
    );
    vm.wait_lines(lines);
    vm
}

/// One HTTP/1.1 request over the unix socket; returns status and body.
fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).expect("connecting to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad response {resp:?}"));
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kettle-state-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Checks that the concatenated outputs count 0, 1, 2, ... with no gap or repeat; returns the
/// last complete value.
fn check_count(outputs: &[PathBuf]) -> u32 {
    let mut all = String::new();
    for o in outputs {
        all.push_str(&std::fs::read_to_string(o).unwrap());
    }
    // The last line may be cut short by the save: only complete lines count.
    let complete = &all[..all.rfind('\n').map_or(0, |i| i + 1)];
    let mut expect = 0u32;
    for line in complete.split_terminator('\n') {
        let v = u32::from_str_radix(line, 16)
            .unwrap_or_else(|_| panic!("line {line:?} is not a count (after {expect})"));
        assert_eq!(
            v,
            expect,
            "the count jumped from {} to {v}",
            expect.wrapping_sub(1)
        );
        expect += 1;
    }
    expect - 1
}

#[test]
fn a_counting_guest_is_saved_and_restored_again_and_again_without_gaps() {
    let dir = scratch("count");
    let vm = counting_vm(&dir, "state_counter", "64M", 200);
    let state = dir.join("s0.kvs");
    let mut outputs = vec![vm.serial.clone()];
    let (body, err) = vm.save_and_exit(&state);
    assert!(body.contains("\"bytes\""), "{body}");
    assert!(err.contains("saved to"), "{err}");
    assert!(!dir.join("s0.kvs.tmp").exists());
    let mut last = check_count(&outputs);

    // Restore and save again, several times, alternating the memory modes; each restore
    // continues from the file just written.
    let mut from = state;
    for (i, mode) in ["map", "copy", "map"].iter().enumerate() {
        let tag = format!("run{}", i + 1);
        let vm = Vm::start(
            &dir,
            &tag,
            &["--restore", from.to_str().unwrap(), "--restore-mode", mode],
        );
        vm.wait_lines(100);
        let (code, body) = vm.request("GET", "/v1/status", "");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"running\""), "{body}");
        let next = dir.join(format!("s{}.kvs", i + 1));
        outputs.push(vm.serial.clone());
        vm.save_and_exit(&next);
        let now = check_count(&outputs);
        assert!(now > last + 50, "restore {i}: count {last} -> {now}");
        last = now;
        from = next;
    }
    // A restore that keeps running after a save with "resume": true.
    let vm = Vm::start(&dir, "run9", &["--restore", from.to_str().unwrap()]);
    vm.wait_lines(50);
    let keep = dir.join("keep.kvs");
    let (code, body) = vm.save(&keep, true);
    assert_eq!(code, 200, "{body}");
    let before = vm.lines();
    vm.wait_lines(before + 50);
    let (code, body) = vm.request("PUT", "/v1/power-off", "");
    assert_eq!(code, 200, "{body}");
    outputs.push(vm.serial.clone());
    let (code, err) = vm.wait();
    assert_eq!(code, Some(0), "{err}");
    check_count(&outputs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pause_and_resume_through_the_api_and_kettle_ctl() {
    let dir = scratch("pause");
    let vm = counting_vm(&dir, "state_pause", "32M", 50);
    let (code, body) = vm.request("PUT", "/v1/pause", "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = vm.request("PUT", "/v1/pause", "");
    assert_eq!(code, 409, "pausing twice: {body}");
    assert!(body.contains("already paused"), "{body}");
    let (_, body) = vm.request("GET", "/v1/status", "");
    assert!(body.contains("\"paused\""), "{body}");
    let a = std::fs::metadata(&vm.serial).unwrap().len();
    std::thread::sleep(Duration::from_millis(500));
    let b = std::fs::metadata(&vm.serial).unwrap().len();
    assert_eq!(a, b, "the guest wrote while paused");
    // kettle ctl wraps the same calls.
    vm.ctl("resume").expect("kettle ctl resume");
    vm.wait_lines((b / 9) as usize + 50);
    let msg = vm.ctl("resume").expect_err("resume when running");
    assert!(msg.contains("not paused"), "{msg}");
    let (code, body) = vm.request("PUT", "/v1/nics/0/link", r#"{"up": false}"#);
    assert_eq!(code, 404, "no NIC: {body}");
    let (code, _) = vm.request("PUT", "/v1/power-off", "");
    assert_eq!(code, 200);
    let (code, err) = vm.wait();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("powered off through the control API"), "{err}");
    check_count(std::slice::from_ref(&vm_serial(&dir, "state_pause")));
    let _ = std::fs::remove_dir_all(&dir);
}

fn vm_serial(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("{tag}.serial"))
}

/// Runs `kettle run --restore FILE`, which must fail; returns stderr.
fn refused(file: &Path) -> String {
    let (code, err) = restore_once(file, &[]);
    assert_eq!(code, Some(1), "restoring {} did not fail", file.display());
    err
}

/// Runs `kettle run --restore FILE --serial none ARGS` to its end: exit status and stderr.
fn restore_once(file: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(kettle_binary())
        .args(["run", "--restore"])
        .arg(file)
        .args(["--serial", "none"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn damaged_foreign_and_newer_states_are_refused_with_the_reason() {
    let dir = scratch("damaged");
    let vm = counting_vm(&dir, "state_damaged", "32M", 20);
    let good = dir.join("good.kvs");
    vm.save_and_exit(&good);
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let e = refused(&write("trunc.kvs", &bytes[..bytes.len() - 100]));
    assert!(e.contains("truncated"), "{e}");
    let e = refused(&write("short.kvs", &bytes[..1000]));
    assert!(e.contains("truncated"), "{e}");
    let e = refused(&write(
        "foreign.kvs",
        b"this is not a saved state at all, just text\n",
    ));
    assert!(e.contains("not a kettle saved state"), "{e}");
    let mut newer = bytes.clone();
    newer[8] = 99;
    let e = refused(&write("newer.kvs", &newer));
    assert!(e.contains("newer"), "{e}");
    // A flipped byte in the machine section (the last one) and in the header.
    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 10] ^= 0x40;
    let e = refused(&write("flip.kvs", &flipped));
    assert!(e.contains("checksum of its machine state section"), "{e}");
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    let e = refused(&write("fliphdr.kvs", &flipped));
    assert!(e.contains("checksum of its header"), "{e}");
    let e = refused(&dir.join("missing.kvs"));
    assert!(e.contains("missing.kvs"), "{e}");
    // A damaged page of guest memory is found when memory is copied (checked).
    let mut mem = bytes.clone();
    let at = 4096 * 3 + 17;
    mem[at] ^= 0xff;
    let p = write("mem.kvs", &mem);
    let (code, e) = restore_once(&p, &["--restore-mode", "copy"]);
    assert_eq!(code, Some(1), "{e}");
    assert!(e.contains("guest memory"), "{e}");
    // Flags that contradict the state.
    let (_, e) = restore_once(&good, &["--memory", "64M"]);
    assert!(e.contains("memory size is fixed by the state"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The saved-state fixtures: files written by released kettle formats, each with the serial
/// output its guest had printed when it was saved (tests/fixtures/state/README.md says how
/// each was made). Every later kettle must restore them.
const FIXTURES: &[&str] = &["counter-format1"];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/state")
}

/// `KETTLE_WRITE_STATE_FIXTURE=NAME` makes fixture NAME with this kettle (the counting guest,
/// 16 MiB, saved after 200 lines): for a new format, add it to [`FIXTURES`] and keep the old ones.
fn write_fixture_if_asked() {
    let Ok(name) = std::env::var("KETTLE_WRITE_STATE_FIXTURE") else {
        return;
    };
    let dir = scratch("fixture-new");
    let vm = counting_vm(&dir, "state_fixture", "16M", 200);
    let state = dir.join(format!("{name}.kvs"));
    std::fs::create_dir_all(fixture_dir()).unwrap();
    let serial = vm.serial.clone();
    vm.save_and_exit(&state);
    std::fs::copy(serial, fixture_dir().join(format!("{name}.serial"))).unwrap();
    // Kept compressed: the memory section is mostly holes, which git would store in full.
    let gz = fixture_dir().join(format!("{name}.kvs.gz"));
    let out = std::fs::File::create(&gz).unwrap();
    let st = Command::new("gzip")
        .arg("-9c")
        .arg(&state)
        .stdout(out)
        .status()
        .expect("running gzip");
    assert!(st.success());
    eprintln!("wrote fixture {}", gz.display());
}

/// Fixture `name`'s state file, decompressed into `dir`.
fn unpack_fixture(name: &str, dir: &Path) -> PathBuf {
    let gz = fixture_dir().join(format!("{name}.kvs.gz"));
    assert!(gz.is_file(), "missing fixture {}", gz.display());
    let state = dir.join(format!("{name}.kvs"));
    let out = std::fs::File::create(&state).unwrap();
    let st = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .stdout(out)
        .status()
        .expect("running gzip (Debian package gzip)");
    assert!(st.success(), "gzip -dc {} failed", gz.display());
    state
}

#[test]
fn saved_states_of_every_released_format_still_restore() {
    write_fixture_if_asked();
    let dir = scratch("fixtures");
    for name in FIXTURES {
        let state = unpack_fixture(name, &dir);
        let before = fixture_dir().join(format!("{name}.serial"));
        for mode in ["copy", "map"] {
            let tag = format!("{name}-{mode}");
            let args = ["--restore", state.to_str().unwrap(), "--restore-mode", mode];
            let mut vm = Vm::spawn(&dir, &tag, &args);
            // Either the API comes up (the state restored) or kettle exits with a reason.
            let restored = match vm.until_api() {
                Ok(()) => true,
                Err((code, err)) => {
                    assert!(
                        err.contains("features this host lacks"),
                        "{name} ({mode}): kettle exited ({code:?}) instead of restoring:\n{err}"
                    );
                    // The file was read through (header, configuration, machine state) before
                    // the CPU check: the format is still understood. Running it needs a CPU
                    // like the one it was saved on.
                    eprintln!(
                        "WARNING: {name} ({mode}) was read but cannot RUN on this CPU: {err}"
                    );
                    false
                }
            };
            if !restored {
                continue;
            }
            vm.wait_lines(100);
            let (code, body) = vm.request("PUT", "/v1/power-off", "");
            assert_eq!(code, 200, "{body}");
            let serial = vm.serial.clone();
            let (code, err) = vm.wait();
            assert_eq!(code, Some(0), "{name} ({mode}): {err}");
            // The count goes on from where the fixture's guest was saved.
            let saved = check_count(std::slice::from_ref(&before));
            let last = check_count(&[before.clone(), serial]);
            assert!(last > saved + 50, "{name} ({mode}): {saved} -> {last}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A boot sector that counts on the timer: each tick (INT 08h, 18.2 Hz) it reads a sector
/// through INT 13h and prints the count through INT 10h, so a restored VM only goes on if the
/// BIOS's ROM, timer and services came back with it.
const BIOS_COUNTER: &str = r#"
main:
1:  mov $0x0201, %ax
    mov $0x0002, %cx
    xor %dh, %dh
    mov boot_drive, %dl
    mov $0x8000, %bx
    int $0x13
    jc 2f
    puts tick
    mov count, %ax
    call puthex16
    puts eol
    incw count
    hlt
    jmp 1b
2:  puts failed
    poweroff
count: .word 0
tick: .asciz "TICK "
failed: .asciz "INT13-FAILED\r\n"
eol: .asciz "\r\n"
"#;

/// The TICK counts in `text`, in order (ANSI control sequences, which SeaBIOS's serial
/// console writes, taken out first).
fn ticks(text: &str) -> Vec<u32> {
    let mut plain = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters... final byte in 0x40..=0x7e
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
            plain.push('\n');
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TICK "))
        .filter_map(|v| u32::from_str_radix(v.trim(), 16).ok())
        .collect()
}

#[test]
fn a_vm_booted_through_the_bios_is_saved_and_restored() {
    bios_vm_saved_and_restored("bios", &[]);
}

#[test]
fn a_vm_booted_through_seabios_is_saved_and_restored() {
    bios_vm_saved_and_restored("seabios", &["--bios", guest::seabios()]);
}

/// Boots the counting boot sector through a BIOS (kettle's, or the image `firmware` names),
/// saves it while it counts, restores it twice (map and copy) and checks that the count goes on
/// without a gap, with INT 13h and INT 10h working after each restore.
fn bios_vm_saved_and_restored(tag: &str, firmware: &[&str]) {
    let dir = scratch(tag);
    let sector = guest::boot_sector("bios_counter", BIOS_COUNTER);
    let disk = guest::raw_disk(&format!("bios_counter_{tag}"), &sector, &[], 1 << 20);
    let mut args = vec!["--disk", disk.to_str().unwrap(), "--memory", "64M"];
    args.extend_from_slice(firmware);
    let vm = Vm::start(&dir, "boot", &args);
    vm.wait_lines(24);
    let state = dir.join("bios.kvs");
    let mut outputs = vec![vm.serial.clone()];
    vm.save_and_exit(&state);
    for (i, mode) in ["map", "copy"].iter().enumerate() {
        let vm = Vm::start(
            &dir,
            &format!("restored{i}"),
            &["--restore", state.to_str().unwrap(), "--restore-mode", mode],
        );
        vm.wait_lines(24);
        let (code, body) = vm.request("PUT", "/v1/power-off", "");
        assert_eq!(code, 200, "{body}");
        let serial = vm.serial.clone();
        let (code, err) = vm.wait();
        assert_eq!(code, Some(0), "{err}");
        // The saved console and this restore's, joined, count on without a gap.
        let mut text = std::fs::read_to_string(&outputs[0]).unwrap();
        text.push_str(&std::fs::read_to_string(&serial).unwrap());
        // The power-off may cut the last line short.
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        let t = ticks(&text);
        assert!(!text.contains("FAILED"), "{text}");
        assert!(t.len() >= 40, "{text}");
        for w in t.windows(2) {
            assert_eq!(w[1], w[0] + 1, "restore {i} ({mode}): a gap in\n{text}");
        }
        outputs.push(serial);
    }
    guest::remove(&disk);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The counts on whole `TICK nnnn` rows of a screen, top to bottom (the BIOS's own messages and
/// a row still being written do not count).
fn screen_ticks(text: &str) -> Vec<u32> {
    text.split('\n')
        .filter_map(|row| row.strip_prefix("TICK "))
        .filter(|v| v.len() == 4)
        .filter_map(|v| u32::from_str_radix(v, 16).ok())
        .collect()
}

/// GET /v1/screen: checks its shape (25 rows of at most 80 columns) and returns the text.
fn screen(vm: &Vm) -> String {
    let (code, body) = vm.request("GET", "/v1/screen", "");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    assert_eq!(v["rows"], 25, "{body}");
    assert_eq!(v["columns"], 80, "{body}");
    let text = v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text: {body}"));
    let rows: Vec<&str> = text.split('\n').collect();
    assert_eq!(rows.len(), 25, "{text}");
    assert!(
        rows.iter()
            .all(|r| r.chars().count() <= 80 && !r.ends_with(' ')),
        "{text}"
    );
    text.to_string()
}

#[test]
fn the_screen_shows_what_the_bios_printed_through_the_api_and_kettle_ctl() {
    let dir = scratch("screen");
    let sector = guest::boot_sector("bios_counter", BIOS_COUNTER);
    let disk = guest::raw_disk("bios_counter_screen", &sector, &[], 1 << 20);
    let vm = Vm::start(
        &dir,
        "screen",
        &["--disk", disk.to_str().unwrap(), "--memory", "32M"],
    );
    // More TICK lines than the screen has rows: it has scrolled.
    vm.wait_lines(30);
    // While the VM runs: the screen holds a run of counts the serial console printed too.
    let text = screen(&vm);
    let serial = ticks(&std::fs::read_to_string(&vm.serial).unwrap());
    let shown = screen_ticks(&text);
    assert!(
        shown.len() >= 20,
        "too few TICK rows on the screen:\n{text}"
    );
    for w in shown.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the screen's counts have a gap:\n{text}");
    }
    assert!(
        shown.iter().all(|t| serial.contains(t)),
        "the screen shows counts the serial console did not print:\n{text}\nserial: {serial:?}"
    );
    // Paused, the screen stands still: its last TICK row is the serial console's last whole
    // line (or the one after it, when the pause came between the screen and COM1 of its last
    // character: the BIOS writes the cell first).
    let (code, body) = vm.request("PUT", "/v1/pause", "");
    assert_eq!(code, 200, "{body}");
    let text = screen(&vm);
    let mut serial = std::fs::read_to_string(&vm.serial).unwrap();
    serial.truncate(serial.rfind('\n').map_or(0, |i| i + 1));
    let last = *ticks(&serial)
        .last()
        .expect("no TICK line on the serial console");
    assert!(
        text.split('\n').any(|r| r == format!("TICK {last:04x}")),
        "the serial console's last line, TICK {last:04x}, is not on the screen:\n{text}"
    );
    let shown = screen_ticks(&text);
    assert!(
        matches!(shown.last(), Some(&t) if t == last || t == last + 1),
        "the screen ends at {:?}, the serial console at {last}:\n{text}",
        shown.last()
    );
    // kettle ctl prints the same text, as it is.
    let out = vm.ctl("screen").expect("kettle ctl screen");
    assert_eq!(out, format!("{text}\n"));
    assert!(out.contains(&format!("\nTICK {last:04x}\n")), "{out}");
    let (code, body) = vm.request("PUT", "/v1/power-off", "");
    assert_eq!(code, 200, "{body}");
    let (code, err) = vm.wait();
    assert_eq!(code, Some(0), "{err}");
    guest::remove(&disk);
    let _ = std::fs::remove_dir_all(&dir);
}
