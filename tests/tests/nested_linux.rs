//! Linux, with its own drivers, as the client of kettle's devices: Debian's kernel and a busybox
//! initramfs booted by kettle inside the nested test host (TESTING.md). One outer boot runs
//! several kettle VMs in a row; each test asserts on what Linux itself reported.
//!
//! These tests need QEMU and Debian's packages (the scripts install them as root); they fail,
//! never skip, when the nested host cannot run, and say why.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kettle_tests::nested::{
    assets, guest_initrd_with_tests, marker_values, run_nested_with, section, NestedOptions,
    NestedRun,
};

/// The guest script for the platform checks: dmesg, CPUs, memory, the clock, the parallel port
/// and the second serial port.
const PLATFORM_CHECKS: &str = r#"
echo DMESG-BEGIN
dmesg
echo DMESG-END
echo "PLATFORM-NPROC $(nproc)"
echo "MEMTOTAL $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
echo "GUEST-DATE $(date +%s)"
echo "hello" > /dev/lp0
echo "LP-STATUS $?"
echo "com2 says hi" > /dev/ttyS1
echo "TTYS1-STATUS $?"
cat /proc/tty/driver/serial | sed 's/^/SERIAL /'
"#;

const REBOOT: &str = "reboot\nsleep 30\necho REBOOT-DID-NOT-HAPPEN\n";

/// The PVH-booted guest proves it got its command line and initramfs.
const PVH: &str = "echo \"PVH-CMDLINE $(cat /proc/cmdline)\"\n";

/// Runs every inner VM of this file in one nested host (about a minute) and keeps the result.
fn nested() -> &'static NestedRun {
    static RUN: OnceLock<NestedRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kettle-nested-linux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let initrd: PathBuf = guest_initrd_with_tests(
            &[
                ("platform", PLATFORM_CHECKS),
                ("reboot", REBOOT),
                ("pvh", PVH),
            ],
            &dir.join("initrd-tests.gz"),
        )
        .unwrap_or_else(|e| panic!("building the test initramfs: {e}"));
        let assets = assets().unwrap_or_else(|e| panic!("guest assets: {e}"));
        let options = NestedOptions::new(Duration::from_secs(900))
            .add(&initrd, "/guest/initrd-tests.gz")
            .add(&assets.vmlinux, "/guest/vmlinux");
        let run = run_nested_with(SCRIPT, &options);
        let _ = std::fs::remove_dir_all(&dir);
        run
    })
}

const SCRIPT: &str = r#"
KT=/guest/initrd-tests.gz
echo "=== platform"
timeout 300 kettle run --kernel "$GUEST_KERNEL" --initrd "$KT" --memory 300M --cpus 2 \
    --serial stdio --serial2 file:/tmp/com2 --lpt file:/tmp/lpt \
    --cmdline "console=ttyS0 quiet kettle.modules=parport_pc,lp kettle.run=platform" </dev/null
echo "PLATFORM-EXIT $?"
echo "HOST-DATE $(date +%s)"
echo "LPT-FILE $(cat /tmp/lpt)"
echo "COM2-FILE $(cat /tmp/com2)"

echo "=== interactive"
mkfifo /tmp/in
timeout 300 kettle run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --memory 512M --cpus 1 \
    --serial stdio --cmdline "console=ttyS0 quiet" </tmp/in >/tmp/out 2>/tmp/err &
KP=$!
exec 3>/tmp/in
wait_for() {
    i=0
    while ! grep -q "$1" /tmp/out; do
        sleep 1; i=$((i+1))
        if [ $i -gt 200 ]; then echo "WAIT-TIMEOUT $1"; return 1; fi
    done
}
wait_for 'kettle# ' && echo 'echo "TYPED-$((6*7))"; echo "SHELL-NPROC-$(nproc)"; echo "SHELL-MEM-$(grep MemTotal /proc/meminfo)"' >&3
wait_for 'TYPED-42' && echo 'poweroff' >&3
wait $KP
echo "INTERACTIVE-EXIT $?"
exec 3>&-
sed 's/^/OUT: /' /tmp/out
sed 's/^/ERR: /' /tmp/err

echo "=== reboot"
timeout 300 kettle run --kernel "$GUEST_KERNEL" --initrd "$KT" --memory 256M --no-reboot \
    --serial file:/tmp/reboot-serial --cmdline "console=ttyS0 quiet kettle.run=reboot" </dev/null 2>/tmp/reboot-err
echo "REBOOT-EXIT $?"
sed 's/^/REBOOT-ERR: /' /tmp/reboot-err
grep -c REBOOT-DID-NOT-HAPPEN /tmp/reboot-serial | sed 's/^/REBOOT-MISSED /'

echo "=== pvh"
timeout 300 kettle run --kernel /guest/vmlinux --initrd "$KT" --memory 256M \
    --serial file:/tmp/pvh-serial --cmdline "console=ttyS0 quiet kettle.run=pvh" </dev/null
echo "PVH-EXIT $?"
grep PVH-CMDLINE /tmp/pvh-serial
"#;

fn out() -> &'static str {
    let run = nested();
    run.expect_success();
    run.script_output().expect("the nested script's output")
}

fn one(marker: &str) -> &'static str {
    let v = marker_values(out(), marker);
    assert_eq!(v.len(), 1, "expected one {marker} line in:\n{}", out());
    v[0]
}

fn dmesg() -> &'static str {
    section(out(), "DMESG-BEGIN", "DMESG-END").expect("the guest's dmesg")
}

fn dmesg_has(what: &str) {
    assert!(dmesg().contains(what), "dmesg lacks {what:?}:\n{}", dmesg());
}

#[test]
fn linux_boots_to_init_and_powers_off_with_status_0() {
    assert_eq!(one("PLATFORM-EXIT"), "0");
    assert_eq!(
        marker_values(out(), "KETTLE-TEST-EXIT").first().copied(),
        Some("0")
    );
}

#[test]
fn linux_sees_the_440bx_and_piix4() {
    dmesg_has("pci 0000:00:00.0: [8086:7192] type 00 class 0x060000");
    dmesg_has("pci 0000:00:07.0: [8086:7110] type 00 class 0x060100");
    dmesg_has("pci 0000:00:07.3: [8086:7113] type 00 class 0x068000");
    dmesg_has("PIIX4 ACPI");
}

#[test]
fn linux_uses_acpi_and_the_pm_timer() {
    dmesg_has("ACPI: RSDP 0x00000000000E0000");
    dmesg_has("ACPI: FACP");
    dmesg_has("ACPI: DSDT");
    dmesg_has("ACPI: APIC");
    dmesg_has("ACPI: PM-Timer IO Port: 0x608");
    dmesg_has("clocksource: acpi_pm: mask: 0xffffff");
    for bad in [
        "ACPI Error",
        "ACPI BIOS Error",
        "ACPI Warning",
        "Invalid checksum",
    ] {
        assert!(!dmesg().contains(bad), "dmesg has {bad:?}:\n{}", dmesg());
    }
}

#[test]
fn linux_finds_two_16550a_uarts() {
    dmesg_has("ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A");
    dmesg_has("ttyS1 at I/O 0x2f8 (irq = 3, base_baud = 115200) is a 16550A");
    assert_eq!(one("TTYS1-STATUS"), "0");
    assert_eq!(one("COM2-FILE"), "com2 says hi");
}

#[test]
fn linux_drives_the_parallel_port() {
    dmesg_has("parport0: PC-style at 0x378");
    dmesg_has("lp0: using parport0");
    assert_eq!(one("LP-STATUS"), "0");
    assert_eq!(one("LPT-FILE"), "hello");
}

#[test]
fn linux_finds_rtc_and_keyboard_controller() {
    dmesg_has("rtc_cmos 00:");
    dmesg_has("registered as rtc0");
    dmesg_has("serio: i8042 KBD port at 0x60,0x64 irq 1");
}

#[test]
fn nproc_matches_cpus() {
    assert_eq!(one("PLATFORM-NPROC"), "2");
    dmesg_has("smp: Brought up 1 node, 2 CPUs");
    assert!(
        out().contains("OUT: SHELL-NPROC-1"),
        "the 1-CPU guest says:\n{}",
        out()
    );
}

/// Total RAM Linux counts ("Memory: avail/totalK") is --memory less the 385 KiB legacy hole
/// (EBDA + 0xA0000-0xFFFFF) and the partial pages around it (Linux counts whole pages).
#[test]
fn memory_matches_the_memory_flag() {
    let line = dmesg()
        .lines()
        .find(|l| l.contains("Memory: ") && l.contains("available"))
        .expect("the Memory: line");
    let total: u64 = line
        .split('/')
        .nth(1)
        .and_then(|s| s.split('K').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    let expected = 300 * 1024 - 385;
    assert!(
        total.abs_diff(expected) <= 16,
        "{line}: expected about {expected}K"
    );
    let memtotal: u64 = one("MEMTOTAL").parse().unwrap();
    assert!(
        memtotal > 240 * 1024 && memtotal <= 300 * 1024,
        "MemTotal {memtotal} kB"
    );
    // The interactive guest has --memory 512M.
    let shell: u64 = one("OUT: SHELL-MEM-MemTotal:")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    assert!(
        shell > 440 * 1024 && shell <= 512 * 1024,
        "MemTotal {shell} kB"
    );
}

#[test]
fn an_elf_kernel_boots_through_its_pvh_entry() {
    assert_eq!(one("PVH-EXIT"), "0");
    assert_eq!(one("PVH-CMDLINE"), "console=ttyS0 quiet kettle.run=pvh");
}

#[test]
fn guest_clock_is_the_host_clock() {
    let guest: i64 = one("GUEST-DATE").parse().unwrap();
    let host: i64 = one("HOST-DATE").parse().unwrap();
    // The host reads its clock after the guest powered off, seconds later.
    assert!(
        (0..=30).contains(&(host - guest)),
        "guest {guest}, host {host}"
    );
}

#[test]
fn typed_input_reaches_a_guest_shell_and_poweroff_exits_0() {
    assert!(out().contains("OUT: TYPED-42"), "{}", out());
    assert!(!out().contains("WAIT-TIMEOUT"), "{}", out());
    assert_eq!(one("INTERACTIVE-EXIT"), "0");
}

#[test]
fn reboot_with_no_reboot_exits_0_and_says_so() {
    assert_eq!(one("REBOOT-EXIT"), "0");
    assert!(
        out().contains("REBOOT-ERR: kettle: the guest rebooted"),
        "{}",
        out()
    );
    assert_eq!(one("REBOOT-MISSED"), "0");
}
