//! Small guest programs on the local KVM, driving the real `kettle` binary the way a user does:
//! exits, serial output and input, PCI configuration reads, the PM timer, the RTC, resets,
//! power-off and faults. (Linux guests run in the nested test host: see nested_linux.rs.)

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kettle_tests::guest;
use kettle_tests::nested::kettle_binary;

struct Run {
    code: Option<i32>,
    serial: String,
    stderr: String,
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> (Option<i32>, String, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            if let Some(mut o) = child.stdout.take() {
                o.read_to_string(&mut out).unwrap();
            }
            if let Some(mut e) = child.stderr.take() {
                e.read_to_string(&mut err).unwrap();
            }
            return (status.code(), out, err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kettle did not exit within {limit:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `kettle run --kernel GUEST --serial file:OUT ARGS...`.
fn run_guest(name: &str, body: &str, args: &[&str]) -> Run {
    let elf = guest::build(name, body);
    let out = elf.with_extension("serial");
    let child = Command::new(kettle_binary())
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .arg("--serial")
        .arg(format!("file:{}", out.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kettle");
    let (code, _stdout, stderr) = wait_with_timeout(child, Duration::from_secs(60));
    let serial = std::fs::read_to_string(&out).unwrap_or_default();
    guest::remove(&elf);
    Run {
        code,
        serial,
        stderr,
    }
}

fn kettle(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(kettle_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("starting kettle");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serial_output_and_poweroff_exit_zero() {
    let r = run_guest(
        "hello",
        r#"
main:
    puts msg
    poweroff
msg: .asciz "hello from the guest\n"
"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.serial, "hello from the guest\n");
}

#[test]
fn pci_bus_shows_440bx_and_piix4() {
    let r = run_guest(
        "pci",
        r#"
main:
    pci_read 0x80000000
    call puthex32
    puts nl
    pci_read 0x80000008
    call puthex32
    puts nl
    pci_read 0x80003800
    call puthex32
    puts nl
    pci_read 0x8000380c
    call puthex32
    puts nl
    pci_read 0x80003b00
    call puthex32
    puts nl
    pci_read 0x80000800
    call puthex32
    puts nl
    pci_read 0x80003b40
    call puthex32
    puts nl
    poweroff
nl: .asciz "\n"
"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let lines: Vec<&str> = r.serial.lines().collect();
    assert_eq!(
        lines[0], "71928086",
        "00:00.0 is the 82443BX (AGP disabled)"
    );
    assert_eq!(&lines[1][..6], "060000", "host bridge class");
    assert_eq!(lines[2], "71108086", "00:07.0 is the PIIX4 ISA bridge");
    assert_eq!(&lines[3][2..4], "80", "PIIX4 is multi-function");
    assert_eq!(lines[4], "71138086", "00:07.3 is PIIX4 power management");
    assert_eq!(lines[5], "ffffffff", "slot 1 is empty");
    let pmba = u32::from_str_radix(lines[6], 16).unwrap();
    assert_eq!(
        pmba & 0xffc0,
        u32::from(guest::PM_IO_BASE),
        "PMBA as the firmware left it"
    );
    assert_eq!(pmba & 1, 1, "PMBA is an I/O BAR");
}

#[test]
fn pm_timer_counts_at_3_58_mhz() {
    // Two reads of the 24-bit PM timer about 1000 port exits apart.
    let r = run_guest(
        "pmtimer",
        r#"
main:
    mov $0x608, %dx
    in %dx, %eax
    mov %eax, %edi
    mov $1000, %ecx
1:  in %dx, %eax
    loop 1b
    in %dx, %eax
    mov %eax, %esi
    mov %edi, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov %esi, %eax
    call puthex32
    poweroff
"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let v: Vec<u32> = r
        .serial
        .split_whitespace()
        .map(|s| u32::from_str_radix(s, 16).unwrap())
        .collect();
    assert!(v[0] < 1 << 24 && v[1] < 1 << 24, "24-bit counter: {v:x?}");
    let delta = v[1].wrapping_sub(v[0]) & 0xff_ffff;
    assert!(delta > 0, "the PM timer advances: {v:x?}");
    // Under 4.7 s of wall time (a 24-bit wrap) and more than nothing.
    assert!(delta < 0xff_ffff);
}

fn bcd(s: &str) -> u32 {
    let b = u32::from_str_radix(s, 16).unwrap();
    (b >> 4) * 10 + (b & 0xf)
}

#[test]
fn rtc_tells_host_time_in_bcd() {
    // Reads century, year, month, day, hour, minute, second and register B, after waiting for
    // update-in-progress to clear.
    let r = run_guest(
        "rtc",
        r#"
    .macro cmos idx
    mov $\idx, %al
    out %al, $0x70
    in $0x71, %al
    movzbl %al, %eax
    call puthex32
    mov $' ', %al
    call putc
    .endm
main:
1:  mov $0x0a, %al
    out %al, $0x70
    in $0x71, %al
    test $0x80, %al
    jnz 1b
    cmos 0x32
    cmos 0x09
    cmos 0x08
    cmos 0x07
    cmos 0x04
    cmos 0x02
    cmos 0x00
    cmos 0x0b
    cmos 0x0d
    poweroff
"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    let f: Vec<&str> = r.serial.split_whitespace().map(|s| &s[6..]).collect();
    assert_eq!(f.len(), 9, "{}", r.serial);
    let reg_b = u32::from_str_radix(f[7], 16).unwrap();
    assert_eq!(reg_b & 0x04, 0, "BCD mode by default");
    assert_eq!(reg_b & 0x02, 0x02, "24-hour mode by default");
    assert_eq!(f[8], "80", "register D: valid RAM and time");
    let year = bcd(f[0]) * 100 + bcd(f[1]);
    let (month, day, hour, min, sec) = (bcd(f[2]), bcd(f[3]), bcd(f[4]), bcd(f[5]), bcd(f[6]));
    let guest =
        days_from_civil(year as i64, month, day) * 86400 + i64::from(hour * 3600 + min * 60 + sec);
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host - guest).abs() < 30,
        "guest RTC {year}-{month}-{day} {hour}:{min}:{sec} is not host UTC time"
    );
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[test]
fn cmos_reports_memory_size() {
    let r = run_guest(
        "cmosmem",
        r#"
main:
    mov $0x35, %al
    out %al, $0x70
    in $0x71, %al
    shl $8, %eax
    mov $0x34, %al
    out %al, $0x70
    in $0x71, %al
    movzwl %ax, %eax
    call puthex32
    poweroff
"#,
        &["--memory", "64M"],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    // (64 MiB - 16 MiB) in 64 KiB units.
    assert_eq!(r.serial, "00000300");
}

#[test]
fn serial_input_reaches_the_guest() {
    // The guest echoes what it receives, upper-cased, until it sees a '.'.
    let elf = guest::build(
        "echo",
        r#"
main:
1:  mov $COM1+5, %dx
    in %dx, %al
    test $1, %al
    jz 1b
    mov $COM1, %dx
    in %dx, %al
    cmp $'.', %al
    je 2f
    cmp $'a', %al
    jb 3f
    sub $0x20, %al
3:  call putc
    jmp 1b
2:  poweroff
"#,
    );
    let mut child = Command::new(kettle_binary())
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .args(["--serial", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"typed on the console.")
        .unwrap();
    let (code, stdout, stderr) = wait_with_timeout(child, Duration::from_secs(60));
    guest::remove(&elf);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(stdout, "TYPED ON THE CONSOLE");
}

fn reset_guest(name: &str, body: &str) {
    let r = run_guest(name, body, &["--no-reboot"]);
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.serial, "before reset\n");
    assert!(
        r.stderr.contains("rebooted") && r.stderr.contains("--no-reboot"),
        "kettle says it was a reboot: {}",
        r.stderr
    );
}

#[test]
fn reset_through_0xcf9() {
    reset_guest(
        "cf9",
        r#"
main:
    puts msg
    mov $0xcf9, %dx
    mov $0x06, %al
    out %al, %dx
    puts bad
    poweroff
msg: .asciz "before reset\n"
bad: .asciz "still running\n"
"#,
    );
}

#[test]
fn reset_through_the_i8042() {
    reset_guest(
        "kbdreset",
        r#"
main:
    puts msg
    mov $0xfe, %al
    out %al, $0x64
    puts bad
    poweroff
msg: .asciz "before reset\n"
bad: .asciz "still running\n"
"#,
    );
}

#[test]
fn reset_through_port_92() {
    reset_guest(
        "port92",
        r#"
main:
    puts msg
    in $0x92, %al
    or $1, %al
    out %al, $0x92
    puts bad
    poweroff
msg: .asciz "before reset\n"
bad: .asciz "still running\n"
"#,
    );
}

#[test]
fn reboot_restarts_the_vm_with_cmos_kept() {
    // CMOS RAM is battery-backed: the guest counts its boots in CMOS byte 0x40 and powers off
    // on the third.
    let r = run_guest(
        "reboot",
        r#"
main:
    mov $0x40, %al
    out %al, $0x70
    in $0x71, %al
    inc %al
    mov %al, %bl
    mov $0x40, %al
    out %al, $0x70
    mov %bl, %al
    out %al, $0x71
    add $'0', %al
    call putc
    cmp $'3', %al
    je 1f
    mov $0x06, %al
    mov $0xcf9, %dx
    out %al, %dx
1:  poweroff
"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.serial, "123");
}

#[test]
fn triple_fault_ends_the_run_with_a_clear_message() {
    // No IDT: the invalid-opcode exception escalates to a triple fault.
    let r = run_guest(
        "triple",
        r#"
main:
    lidt idtr
    ud2
    poweroff
idtr: .word 0
      .long 0
"#,
        &[],
    );
    assert_eq!(r.code, Some(1), "stderr: {}", r.stderr);
    let msg = r.stderr.trim();
    assert!(msg.contains("triple fault"), "{msg}");
    assert!(msg.contains("RIP"), "{msg}");
    assert!(msg.contains("protected mode"), "{msg}");
    assert_eq!(msg.lines().count(), 1, "one clear message: {msg}");
}

#[test]
fn cpuid_has_hypervisor_bit_and_topology() {
    let r = run_guest(
        "cpuid",
        r#"
main:
    mov $1, %eax
    cpuid
    mov %ecx, %eax
    shr $31, %eax
    call puthex32
    mov $' ', %al
    call putc
    mov %ebx, %eax
    shr $16, %eax
    call puthex32
    poweroff
"#,
        &["--cpus", "2"],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    // Hypervisor bit set; APIC ID 0 on the boot CPU, 2 logical processors.
    assert_eq!(r.serial, "00000001 00000002");
}

fn assert_one_line_error(args: &[&str], expect: &str) {
    let (code, err) = kettle(args);
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{args:?}: exit {code:?}: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.contains(expect), "{args:?}: {err}");
}

fn write_temp(name: &str, contents: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kettle-test-{}-{name}", std::process::id()));
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn bad_arguments_get_one_line_errors() {
    assert_one_line_error(
        &["run", "--kernel", "/nonexistent/bzImage"],
        "kernel /nonexistent/bzImage: No such file",
    );
    let junk = write_temp("junk", &[0x55; 4096]);
    let j = junk.to_str().unwrap();
    assert_one_line_error(
        &["run", "--kernel", j, "--cpus", "0"],
        "--cpus must be at least 1",
    );
    assert_one_line_error(
        &["run", "--kernel", j, "--memory", "100T"],
        "more than this host",
    );
    assert_one_line_error(&["run", "--kernel", j, "--memory", "lots"], "invalid value");
    assert_one_line_error(
        &["run", "--kernel", j, "--initrd", "/nonexistent/initrd"],
        "initrd /nonexistent/initrd",
    );
    assert_one_line_error(
        &["run", "--kernel", j, "--serial", "tcp:1234"],
        "invalid value",
    );
    assert_one_line_error(
        &["run", "--kernel", j, "--serial", "none"],
        "neither a bzImage nor an ELF",
    );
    assert_one_line_error(&["run"], "nothing to boot");
    std::fs::remove_file(&junk).unwrap();
}

#[test]
fn elf_without_pvh_note_is_refused() {
    let elf = guest::build("nopvh", "main:\n    poweroff\n");
    // Strip the note by rewriting its type (n_type 18 -> 19) in the file.
    let mut bytes = std::fs::read(&elf).unwrap();
    let pos = bytes
        .windows(12)
        .position(|w| w == [4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0])
        .expect("the PVH note");
    bytes[pos + 8] = 19;
    std::fs::write(&elf, &bytes).unwrap();
    assert_one_line_error(
        &["run", "--kernel", elf.to_str().unwrap(), "--serial", "none"],
        "no PVH entry note",
    );
    guest::remove(&elf);
}

#[test]
fn config_file_gives_the_same_settings() {
    let elf = guest::build(
        "toml",
        "main:\n    puts msg\n    poweroff\nmsg: .asciz \"from toml\"\n",
    );
    let dir = elf.parent().unwrap();
    let out = dir.join("out.txt");
    let toml = dir.join("vm.toml");
    std::fs::write(
        &toml,
        format!(
            "kernel = \"{}\"\nmemory = \"32M\"\ncpus = 1\nserial = \"file:{}\"\n",
            elf.file_name().unwrap().to_str().unwrap(),
            out.display()
        ),
    )
    .unwrap();
    let (code, err) = kettle(&["run", toml.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "from toml");
    // A flag overrides the file.
    let (code, err) = kettle(&["run", toml.to_str().unwrap(), "--cpus", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--cpus must be at least 1"), "{err}");
    guest::remove(&elf);
}

#[test]
fn unix_socket_console_carries_both_directions_on_com2() {
    // The guest greets on COM2 before anyone is connected (kettle keeps it for the client),
    // then echoes what arrives until a '.'.
    let elf = guest::build(
        "unixecho",
        r#"
    .set COM2, 0x2f8
putc2:
    push %edx
    push %eax
    mov $COM2+5, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    pop %eax
    mov $COM2, %dx
    out %al, %dx
    pop %edx
    ret
main:
    mov $hello, %esi
2:  lodsb
    test %al, %al
    jz 3f
    call putc2
    jmp 2b
3:  mov $COM2+5, %dx
    in %dx, %al
    test $1, %al
    jz 3b
    mov $COM2, %dx
    in %dx, %al
    cmp $'.', %al
    je 4f
    call putc2
    jmp 3b
4:  poweroff
hello: .asciz "hi> "
"#,
    );
    let sock = elf.with_extension("sock");
    let child = Command::new(kettle_binary())
        .arg("run")
        .arg("--kernel")
        .arg(&elf)
        .args(["--serial", "none", "--serial2"])
        .arg(format!("unix:{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut conn = loop {
        match std::os::unix::net::UnixStream::connect(&sock) {
            Ok(c) => break c,
            Err(_) if start.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("connecting to {}: {e}", sock.display()),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"ping.").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < b"hi> ping".len() {
        let n = conn
            .read(&mut buf)
            .expect("reading from the console socket");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let (code, _, stderr) = wait_with_timeout(child, Duration::from_secs(60));
    guest::remove(&elf);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert_eq!(String::from_utf8_lossy(&got), "hi> ping");
    assert!(!sock.exists(), "kettle removes its socket on exit");
}

#[test]
fn rtc_periodic_interrupt_reaches_the_guest_through_the_pic() {
    // The guest remaps the PIC, unmasks IRQ 8 only, programs a 1024 Hz periodic RTC interrupt
    // and counts 20 of them (acknowledging each by reading register C), then powers off.
    let start = Instant::now();
    let r = run_guest(
        "rtcirq",
        r#"
main:
    # IDT: 256 gates, all to `stray`, vector 0x28 (IRQ 8 after remapping) to `rtc_isr`.
    mov $idt, %edi
    xor %ecx, %ecx
1:  mov $stray, %eax
    cmp $0x28, %ecx
    jne 2f
    mov $rtc_isr, %eax
2:  mov %ax, (%edi)
    movw $0x10, 2(%edi)
    movw $0x8e00, 4(%edi)
    shr $16, %eax
    mov %ax, 6(%edi)
    add $8, %edi
    inc %ecx
    cmp $256, %ecx
    jne 1b
    lidt idtr
    # PIC: master vectors 0x20-0x27, slave 0x28-0x2f, cascade on IRQ2.
    mov $0x11, %al
    out %al, $0x20
    out %al, $0xa0
    mov $0x20, %al
    out %al, $0x21
    mov $0x28, %al
    out %al, $0xa1
    mov $0x04, %al
    out %al, $0x21
    mov $0x02, %al
    out %al, $0xa1
    mov $0x01, %al
    out %al, $0x21
    out %al, $0xa1
    mov $0xfb, %al      # master: only the cascade
    out %al, $0x21
    mov $0xfe, %al      # slave: only IRQ 8
    out %al, $0xa1
    # RTC: 1024 Hz periodic interrupt (rate 6), PIE on.
    mov $0x0a, %al
    out %al, $0x70
    mov $0x26, %al
    out %al, $0x71
    mov $0x0b, %al
    out %al, $0x70
    in $0x71, %al
    or $0x40, %al
    mov %al, %bl
    mov $0x0b, %al
    out %al, $0x70
    mov %bl, %al
    out %al, $0x71
    xor %ebp, %ebp
wait_irq:
    mov $0x80000, %esp
    cmp $20, %ebp
    jae 4f
    sti
    hlt
    jmp wait_irq
4:  cli
    mov %ebp, %eax
    call puthex32
    poweroff

# Handlers never return with iret (the local software KVM cannot emulate it): the interrupted
# code is always the hlt in wait_irq, so they reset the stack and go back there.
rtc_isr:
    mov $0x0c, %al
    out %al, $0x70
    in $0x71, %al
    inc %ebp
    mov $0x20, %al
    out %al, $0xa0
    out %al, $0x20
    jmp wait_irq
stray:
    mov $'!', %al
    call putc
    jmp wait_irq

    .balign 8
idtr: .word 256*8-1
      .long idt
    .balign 8
idt: .fill 256*8, 1, 0

"#,
        &[],
    );
    assert_eq!(r.code, Some(0), "stderr: {}", r.stderr);
    assert_eq!(r.serial, "00000014", "20 RTC interrupts and no stray ones");
    // 20 periods of 1/1024 s take at least 19 ms (kettle must not fire early).
    assert!(start.elapsed() >= Duration::from_millis(19));
}
