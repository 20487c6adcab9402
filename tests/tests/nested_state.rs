//! Save state with Linux as the judge: Debian's kernel booted by kettle inside the nested test
//! host (TESTING.md), saved while it works and continued by new kettle processes. One outer
//! boot runs, in a row:
//!
//! 1. `boot`: the guest formats an IDE disk (a dynamic VHD made by `kettle vhd create`) with
//!    ext4, mounts it, starts busybox `acpid` (the power button runs `poweroff`) and counts:
//!    every 0.2 s it appends the number to `count.txt` on the disk (a `sync` every fifth),
//!    then prints `COUNT n epoch-seconds` on the serial console. Once it has counted to
//!    [`SAVE_AT`], the host saves it through the API (`kettle ctl save-state`) and kettle exits.
//!    The host then waits [`GAP`] seconds, so that a guest clock nobody corrected would be
//!    that far behind.
//! 2. `clones`: `kettle vhd clone --count 2` makes two differencing disks over the saved disk,
//!    and two kettle processes restore the same state at once, one per clone (`--disk`
//!    re-attaches the drive). Each counts on to [`LIMIT`], unmounts and powers off. The host
//!    flattens each clone to raw (`kettle vhd convert`), checks it with `e2fsck -fn` and reads
//!    `count.txt` back with `debugfs`; the saved disk itself is unchanged.
//! 3. `main`: the state restored once more on the saved disk itself, with an API socket; after
//!    ten more counts the host presses the ACPI power button (`kettle ctl shutdown`). The
//!    guest's acpid runs `poweroff`, the counting shell unmounts the disk on init's SIGTERM and
//!    kettle exits 0 when the guest turns itself off; then `e2fsck -fn` on the disk.
//!
//! The counts on the consoles (before the save, then after each restore) and in each
//! `count.txt` must run 1, 2, 3, ... with no gap and no repeat; the guest's clock after a
//! restore must agree with the host's.
//!
//! `KETTLE_STATE_LOG=FILE` keeps the nested host's whole console in FILE.
//!
//! These tests need QEMU and e2fsprogs (resources/setup.sh installs them); they fail, never skip, when something is missing, and say what.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use kettle_tests::nested::{
    guest_initrd_with, run_nested_with, GuestExtras, NestedOptions, NestedRun,
};
use kettle_tests::report::{once, Markers};

/// Modules the guest loads (dependencies come along): the disk, ext4, the power button and
/// the input events acpid reads it from.
const MODULES: &str = "ata_piix,sd_mod,crc32c_generic,ext4,button,evdev";

/// The count at which the host saves the guest.
const SAVE_AT: u32 = 30;
/// Where the guests stop counting by themselves.
const LIMIT: u32 = 80;
/// Seconds between the save and the first restore.
const GAP: u32 = 20;

/// The guest: format, mount, acpid, count.
const COUNT: &str = r#"
dmesg -n 1
/usr/sbin/mke2fs -t ext4 -F -q -L state /dev/sda
echo "MKFS-STATUS $?"
mkdir -p /mnt/disk
mount -t ext4 /dev/sda /mnt/disk
echo "MOUNT-STATUS $?"
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho POWER-BUTTON >/dev/console\npoweroff\n' >/etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
acpid -c /etc/acpi -l /tmp/acpid.log
echo "ACPID-STATUS $?"
echo "INPUT-DEVICES $(grep -c '^N: Name="Power Button"' /proc/bus/input/devices)"
# init's SIGTERM at a poweroff: stop counting and leave the file system clean.
stop() {
    cd /
    umount /mnt/disk
    echo "UMOUNT-ON-SHUTDOWN $?"
    exit 0
}
trap stop TERM
i=0
while [ $i -lt @LIMIT@ ]; do
    i=$((i+1))
    echo "$i" >>/mnt/disk/count.txt
    [ $((i % 5)) -eq 0 ] && sync
    echo "COUNT $i $(date +%s)"
    sleep 0.2
done
cd /
umount /mnt/disk
echo "UMOUNT-STATUS $?"
"#;

/// The nested host's script.
const SCRIPT: &str = r#"
KT=/guest/initrd-state.gz
CMD="console=ttyS0 quiet kettle.modules=@MODULES@ kettle.run=count"
# wait_count FILE N: until FILE has a COUNT line of N or more (at most 300 s); prints the
# host's clock when it did as HOST-SEEN-N.
wait_count() {
    j=0
    while [ $j -lt 3000 ]; do
        n=$(grep -a -o 'COUNT [0-9]* ' "$1" 2>/dev/null | tail -n 1 | cut -d' ' -f2)
        if [ -n "$n" ] && [ "$n" -ge "$2" ]; then
            echo "HOST-SEEN-$2 $(date +%s) $n"
            return 0
        fi
        sleep 0.1; j=$((j+1))
    done
    echo "HOST-SEEN-$2 never"
    return 1
}
# ms: the host's uptime in milliseconds (busybox date has no %N)
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
# show PREFIX FILE: FILE's lines, prefixed
show() { tr -d '\r' <"$2" | sed "s/^/$1 /"; }
# fs_check NAME VHD: flatten to raw, e2fsck, the counts file
fs_check() {
    kettle vhd convert --to raw "$2" /tmp/$1.raw >/dev/null 2>/tmp/$1.convert
    echo "$1-CONVERT-STATUS $?"
    show "$1-CONVERT-OUT" /tmp/$1.convert
    e2fsck -fn /tmp/$1.raw >/tmp/$1.fsck 2>&1
    echo "$1-E2FSCK-STATUS $?"
    show "$1-E2FSCK-OUT" /tmp/$1.fsck
    echo "$1-FILE $(debugfs -R 'cat /count.txt' /tmp/$1.raw 2>/dev/null | tr '\n' ' ')"
    rm -f /tmp/$1.raw
}

kettle vhd create --size 64M /tmp/disk.vhd >/dev/null
echo "CREATE-STATUS $?"

echo "=== boot"
kettle --log-level info run --kernel "$GUEST_KERNEL" --initrd $KT --memory 256M \
    --disk ide0:0=/tmp/disk.vhd --serial file:/tmp/boot.con --api-socket /tmp/boot.api \
    --name state --cmdline "$CMD" </dev/null 2>/tmp/boot.log &
K=$!
wait_count /tmp/boot.con @SAVE_AT@
T0=$(ms)
kettle ctl /tmp/boot.api save-state /tmp/vm.kst >/tmp/save.out 2>&1
echo "SAVE-STATUS $?"
echo "SAVE-MS $(($(ms) - T0))"
show SAVE-OUT /tmp/save.out
wait $K
echo "BOOT-EXIT $?"
echo "STATE-BYTES $(wc -c </tmp/vm.kst)"
echo "STATE-DISK-KIB $(du -k /tmp/vm.kst | cut -f1)"
show BOOT-CONSOLE /tmp/boot.con
show BOOT-LOG /tmp/boot.log
echo "DISK-SHA-SAVED $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"
sleep @GAP@

echo "=== clones"
kettle vhd clone --count 2 /tmp/disk.vhd >/tmp/clone.out 2>&1
echo "CLONE-STATUS $?"
show CLONE-OUT /tmp/clone.out
for c in 1 2; do
    echo "HOST-RESTORE-START-$c $(date +%s)"
    { kettle --log-level info run --restore /tmp/vm.kst --disk ide0:0=/tmp/disk-clone-$c.vhd \
        --serial file:/tmp/clone$c.con </dev/null 2>/tmp/clone$c.log; echo $? >/tmp/clone$c.status; } &
done
wait_count /tmp/clone1.con $((@SAVE_AT@ + 1))
wait_count /tmp/clone2.con $((@SAVE_AT@ + 1))
wait
for c in 1 2; do
    echo "CLONE$c-EXIT $(cat /tmp/clone$c.status)"
    show CLONE$c-CONSOLE /tmp/clone$c.con
    cat /tmp/boot.con /tmp/clone$c.con >/tmp/clone$c.all
    show CLONE$c-ALL /tmp/clone$c.all
    show CLONE$c-LOG /tmp/clone$c.log
    fs_check CLONE$c /tmp/disk-clone-$c.vhd
done
echo "DISK-SHA-AFTER-CLONES $(sha256sum </tmp/disk.vhd | cut -d' ' -f1)"
rm -f /tmp/disk-clone-*.vhd

echo "=== main"
echo "HOST-RESTORE-START-MAIN $(date +%s)"
kettle --log-level info run --restore /tmp/vm.kst --serial file:/tmp/main.con \
    --api-socket /tmp/main.api </dev/null 2>/tmp/main.log &
K=$!
wait_count /tmp/main.con $((@SAVE_AT@ + 10))
kettle ctl /tmp/main.api status >/tmp/status.out 2>&1
echo "STATUS-STATUS $?"
show STATUS-OUT /tmp/status.out
kettle ctl /tmp/main.api shutdown >/tmp/shutdown.out 2>&1
echo "SHUTDOWN-STATUS $?"
show SHUTDOWN-OUT /tmp/shutdown.out
wait $K
echo "MAIN-EXIT $?"
show MAIN-CONSOLE /tmp/main.con
cat /tmp/boot.con /tmp/main.con >/tmp/main.all
show MAIN-ALL /tmp/main.all
show MAIN-LOG /tmp/main.log
fs_check MAIN /tmp/disk.vhd
"#;

struct Results {
    run: NestedRun,
}

fn results() -> &'static Results {
    static RESULTS: OnceLock<Result<Results, String>> = OnceLock::new();
    once(&RESULTS, prepare_and_run)
}

fn prepare_and_run() -> Results {
    for tool in ["/usr/sbin/mke2fs", "/usr/sbin/e2fsck", "/usr/sbin/debugfs"] {
        if !Path::new(tool).is_file() {
            panic!("{tool} is missing (Debian package e2fsprogs)");
        }
    }
    let dir = std::env::temp_dir().join(format!("kettle-nested-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut extras = GuestExtras::new().bin("/usr/sbin/mke2fs", "/usr/sbin/mke2fs");
    for module in MODULES.split(',') {
        extras = extras.module(module);
    }
    if Path::new("/etc/mke2fs.conf").is_file() {
        extras = extras.file("/etc/mke2fs.conf", "/etc/mke2fs.conf");
    }
    let count = COUNT.replace("@LIMIT@", &LIMIT.to_string());
    let initrd = guest_initrd_with(&[("count", &count)], &extras, &dir.join("initrd-state.gz"))
        .unwrap_or_else(|e| panic!("building the test initramfs: {e}"));
    let script = SCRIPT
        .replace("@MODULES@", MODULES)
        .replace("@SAVE_AT@", &SAVE_AT.to_string())
        .replace("@GAP@", &GAP.to_string());
    let options = NestedOptions::new(Duration::from_secs(900))
        .add(&initrd, "/guest/initrd-state.gz")
        .bin("/usr/sbin/e2fsck", "/usr/sbin/e2fsck")
        .bin("/usr/sbin/debugfs", "/usr/sbin/debugfs");
    let run = run_nested_with(&script, &options);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(path) = std::env::var_os("KETTLE_STATE_LOG") {
        let _ = std::fs::write(path, &run.console);
    }
    Results { run }
}

fn out() -> &'static str {
    let run = &results().run;
    run.expect_success();
    run.script_output().expect("the nested script's output")
}

fn m() -> Markers<'static> {
    Markers(out())
}

/// The console (or log) lines with prefix `name`, joined.
fn lines(name: &str) -> String {
    m().lines(name).join("\n")
}

/// The whole `COUNT n t` lines of a console text: (n, t) pairs. A line the save cut in two
/// (the serial console is a byte stream) is whole only in the `*-ALL` texts, the boot console
/// and a restored one joined byte for byte; its halves, with no 10-digit time, are left out.
fn counts(text: &str) -> Vec<(u32, i64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("COUNT "))
        .filter_map(|rest| {
            let w: Vec<&str> = rest.split_whitespace().collect();
            match w[..] {
                [n, t] if t.len() == 10 => Some((n.parse().ok()?, t.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

/// Asserts that `seq` runs first, first + 1, ... with no gap and no repeat.
#[track_caller]
fn assert_consecutive(seq: &[u32], first: u32, last: u32, what: &str) {
    let want: Vec<u32> = (first..=last).collect();
    assert_eq!(
        seq,
        want.as_slice(),
        "{what}: the counts have a gap or a repeat"
    );
}

#[test]
fn the_guest_is_saved_while_it_counts_and_kettle_exits() {
    assert_eq!(m().one("CREATE-STATUS"), "0");
    assert_eq!(m().one("SAVE-STATUS"), "0", "{}", lines("SAVE-OUT"));
    assert_eq!(m().one("BOOT-EXIT"), "0", "{}", lines("BOOT-LOG"));
    let boot = counts(&lines("BOOT-CONSOLE"));
    assert!(
        boot.len() as u32 >= SAVE_AT,
        "the guest counted only to {} before the save:\n{}",
        boot.len(),
        lines("BOOT-CONSOLE")
    );
    let nums: Vec<u32> = boot.iter().map(|c| c.0).collect();
    assert_consecutive(&nums, 1, nums.len() as u32, "before the save");
    assert!(
        (boot.len() as u32) < LIMIT,
        "the guest finished counting before it was saved"
    );
    for s in ["MKFS-STATUS", "MOUNT-STATUS", "ACPID-STATUS"] {
        assert_eq!(Markers(&lines("BOOT-CONSOLE")).one(s), "0", "{s}");
    }
    assert_eq!(Markers(&lines("BOOT-CONSOLE")).one("INPUT-DEVICES"), "1");
    // The memory section is sparse: pages the guest never wrote are holes in the file.
    let used_kib = m().number("STATE-DISK-KIB");
    assert!(
        used_kib < 230 * 1024,
        "the state of a 256 MiB guest takes {used_kib} KiB on disk"
    );
    // Apparent size: all of RAM (256 MiB less the legacy hole at 640-896 KiB) and the rest.
    assert!(m().number("STATE-BYTES") > 255 << 20);
}

fn check_restored(name: &str, console: &str) {
    let text = lines(&format!("{name}-ALL"));
    let all = counts(&text);
    let nums: Vec<u32> = all.iter().map(|c| c.0).collect();
    assert_consecutive(&nums, 1, LIMIT, &format!("{name}:\n{text}"));
    assert_eq!(
        Markers(&lines(console)).one("UMOUNT-STATUS"),
        "0",
        "{name}: {}",
        lines(console)
    );
    assert_eq!(Markers(&lines(console)).one("KETTLE-TEST-EXIT"), "0");
}

#[test]
fn two_clones_restored_at_once_count_on_without_gaps_and_leave_clean_file_systems() {
    assert_eq!(m().one("CLONE-STATUS"), "0", "{}", lines("CLONE-OUT"));
    for c in ["CLONE1", "CLONE2"] {
        assert_eq!(
            m().one(&format!("{c}-EXIT")),
            "0",
            "{c}:\n{}\n{}",
            lines(&format!("{c}-LOG")),
            lines(&format!("{c}-CONSOLE"))
        );
        check_restored(c, &format!("{c}-CONSOLE"));
        assert_eq!(m().one(&format!("{c}-CONVERT-STATUS")), "0");
        assert_eq!(
            m().one(&format!("{c}-E2FSCK-STATUS")),
            "0",
            "{}",
            lines(&format!("{c}-E2FSCK-OUT"))
        );
        let file: Vec<u32> = m()
            .one(&format!("{c}-FILE"))
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert_consecutive(&file, 1, LIMIT, &format!("{c}'s count.txt"));
    }
    // The clones wrote to their own differencing disks only.
    assert_eq!(m().one("DISK-SHA-AFTER-CLONES"), m().one("DISK-SHA-SAVED"));
}

#[test]
fn the_restored_guest_clock_is_right() {
    let boot = counts(&lines("BOOT-CONSOLE"));
    let &(saved_n, saved_t) = boot.last().expect("counts before the save");
    for (c, console) in [
        ("1", "CLONE1-CONSOLE"),
        ("2", "CLONE2-CONSOLE"),
        ("MAIN", "MAIN-CONSOLE"),
    ] {
        let start = m().number(&format!("HOST-RESTORE-START-{c}"));
        // Not the first count after the save: the save may fall between the guest's `date`
        // for that line and its printing, and then the line carries the time before the save.
        let &(n, t) = counts(&lines(console))
            .iter()
            .find(|(n, _)| *n > saved_n + 1)
            .unwrap_or_else(|| panic!("{console}: no counts after the restore"));
        assert!(
            t >= start - 2,
            "{console}: COUNT {n} carries guest time {t}, {} s before the restore started at \
             {start}: the guest clock was not advanced over the time the VM was saved",
            start - t
        );
        assert!(
            t - saved_t >= i64::from(GAP),
            "{console}: guest time moved only {} s across a save of at least {GAP} s",
            t - saved_t
        );
        assert!(
            t <= start + 120,
            "{console}: guest time {t} is far ahead of the host's {start}"
        );
    }
}

#[test]
fn acpi_shutdown_through_the_api_powers_the_restored_guest_off_cleanly() {
    assert_eq!(m().one("STATUS-STATUS"), "0", "{}", lines("STATUS-OUT"));
    let status = lines("STATUS-OUT");
    assert!(status.contains("\"running\""), "{status}");
    assert_eq!(m().one("SHUTDOWN-STATUS"), "0", "{}", lines("SHUTDOWN-OUT"));
    let console = lines("MAIN-CONSOLE");
    assert_eq!(
        m().one("MAIN-EXIT"),
        "0",
        "{}\n{console}",
        lines("MAIN-LOG")
    );
    assert!(
        console.contains("POWER-BUTTON"),
        "acpid did not see the button:\n{console}"
    );
    assert_eq!(
        Markers(&console).one("UMOUNT-ON-SHUTDOWN"),
        "0",
        "{console}"
    );
    assert!(
        lines("MAIN-LOG").contains("S5"),
        "kettle did not see the guest turn itself off:\n{}",
        lines("MAIN-LOG")
    );
    // The counts ran on from the saved one until the button, with none lost on the disk.
    let text = lines("MAIN-ALL");
    let nums: Vec<u32> = counts(&text).iter().map(|c| c.0).collect();
    let last = *nums.last().unwrap();
    assert!(
        last > SAVE_AT + 10 && last < LIMIT,
        "stopped at {last}:\n{text}"
    );
    assert_consecutive(&nums, 1, last, &text);
    assert_eq!(m().one("MAIN-CONVERT-STATUS"), "0");
    assert_eq!(
        m().one("MAIN-E2FSCK-STATUS"),
        "0",
        "{}",
        lines("MAIN-E2FSCK-OUT")
    );
    let file: Vec<u32> = m()
        .one("MAIN-FILE")
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let file_last = *file.last().unwrap();
    assert!(
        file_last >= last,
        "count.txt ends at {file_last}, the console at {last}"
    );
    assert_consecutive(&file, 1, file_last, "the main disk's count.txt");
}
