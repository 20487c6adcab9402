#!/usr/bin/env bash
# nested-host.sh: runs a script as root inside the nested test host, a Debian
# kernel with a real KVM (kvm-amd on QEMU's emulated SVM) booted by QEMU TCG.
# See shared/TESTING.md for why and for measured timings.
#
# Usage: resources/nested-host.sh [options] SCRIPT
#
#   SCRIPT              shell script (busybox sh) run as root inside the host;
#                       '-' reads it from standard input
# Options:
#   --kettle PATH       kettle binary to include as /bin/kettle, with the shared
#                       libraries ldd lists (default: target/release/kettle of
#                       this checkout, $CARGO_TARGET_DIR/release/kettle if set)
#   --no-kettle         build the host without kettle (same as KETTLE_NO_BINARY=1)
#   --bin SRC[:DEST]    include another executable with its shared libraries
#                       (DEST defaults to /bin/NAME); repeatable
#   --add SRC:DEST      include a file or directory at DEST (absolute; a DEST
#                       ending in '/' keeps SRC's name); repeatable
#   --timeout SECONDS   bound on the whole outer boot (default 600; none with
#                       --interactive; 0 means none)
#   --memory MIB        outer memory (default 2048)
#   --shell             after SCRIPT, start an interactive shell on the console
#                       (for debugging by hand; the prompt is "nested# "; in
#                       QEMU's console, Ctrl-A x quits QEMU at once)
#   --interactive       run SCRIPT interactively on this terminal: the outer
#                       QEMU's console is this terminal and SCRIPT's stdin,
#                       stdout and controlling tty are that console (in a sane
#                       cooked mode), so `kettle run --serial stdio` inside is
#                       as interactive as on a real KVM. No timeout unless
#                       --timeout is given. QEMU's escape key becomes Ctrl-]
#                       (so Ctrl-A reaches SCRIPT: kettle's Ctrl-A x quits
#                       kettle, SCRIPT ends and the host powers off);
#                       Ctrl-] x quits the outer QEMU at once, Ctrl-] h lists
#                       QEMU's keys. The host boots from qboot rather than
#                       SeaBIOS when QEMU has it (SeaBIOS's serial console
#                       clears the screen and turns line wrapping off).
#   --log FILE          also write the console to FILE
#   --bzimage           boot the host from the bzImage (vmlinuz) instead of the
#                       uncompressed PVH vmlinux (same kernel, ~4 s slower)
#   -h, --help          this text
#
# Inside the host: busybox, kvm/kvm-amd/irqbypass/ccp and tun (loaded), bridge,
# veth, dummy, loop, ext4 (load them with `modprobe NAME`: busybox modprobe with a
# depmod index of the modules present),
# /bin/kettle, /guest/vmlinuz, /guest/guest-initrd.gz (from build-assets.sh),
# and these variables for SCRIPT: KETTLE=/bin/kettle, GUEST_KERNEL,
# GUEST_INITRD. Loopback is up; there is no other network, ever: the outer
# QEMU always runs with -nic none.
#
# Console (stdout), in order; the outer QEMU's console is printed as it comes:
#   NESTED-HOST-READY <uptime>   kvm loaded, /dev/kvm present
#   NESTED-SCRIPT-BEGIN          SCRIPT's output follows
#   NESTED-SCRIPT-END
#   NESTED-DMESG-BEGIN / -END    tail of the kernel log, only when SCRIPT failed
#   NESTED-EXIT <status>         SCRIPT's exit status
#   NESTED-ERROR <message>       the host could not be set up
# While SCRIPT runs, the host kernel logs only critical messages to the console.
#
# Exit status: SCRIPT's status (from NESTED-EXIT); 124 if the timeout fired
# before NESTED-EXIT (the tail of the console, the emulator's registers and
# local APIC as its monitor showed them 20 s before, and a message go to stderr);
# 125 if the host could not be set up or stopped without reporting a status;
# 2 for a usage error.
#
# Environment: KETTLE_CACHE (see build-assets.sh), KETTLE_NO_BINARY=1, KETTLE_NESTED_CMDLINE
# (more kernel parameters for the host, e.g. idle=poll),
# KETTLE_NESTED_QEMU_ARGS (extra outer QEMU arguments, split at spaces; for debugging),
# KETTLE_NESTED_STALL_SECONDS (default 30: a host silent and idle this long is shown and
# woken with a key press; "nested-host: STALL" lines on stderr say so).

# Functions run through ka_with_lock look unreachable to shellcheck.
# shellcheck disable=SC2317
set -euo pipefail

NH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NH_REPO=$(dirname "$NH_DIR")
# shellcheck source=build-assets.sh
source "$NH_DIR/build-assets.sh"
KA_DIE_STATUS=125  # a failed build is a host that could not be set up

# Modules of the host: kvm-amd brings kvm, irqbypass and ccp along.
HOST_MODULES=(kvm_amd kvm irqbypass ccp tun bridge veth)
HOST_OPTIONAL_MODULES=(loop ext4 crc32c_generic dummy)

nh_log() { echo "nested-host: $*" >&2; }
nh_die() { echo "nested-host: error: $*" >&2; exit 125; }
nh_usage_error() { echo "nested-host: $*" >&2; echo "usage: resources/nested-host.sh [options] SCRIPT (--help for more)" >&2; exit 2; }
nh_usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# nh_add_binary ROOT SRC DEST: copies an executable and the shared libraries
# (and the loader) that ldd lists, at the same paths.
nh_add_binary() {
    local root=$1 src=$2 dest=$3 lib
    [[ -f $src && -x $src ]] || nh_die "not an executable file: $src"
    mkdir -p "$root$(dirname "$dest")"
    cp -L "$src" "$root$dest"
    chmod 755 "$root$dest"
    local out
    if ! out=$(ldd "$src" 2>&1); then
        case $out in
            *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
            *) nh_die "ldd $src failed: $out" ;;
        esac
    fi
    if grep -q "not found" <<<"$out"; then
        nh_die "$src needs shared libraries that are missing here: $(grep "not found" <<<"$out" | tr -s '\t\n' '  ')"
    fi
    while read -r lib; do
        [[ -e $root$lib ]] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
}

# nh_add_path ROOT SRC DEST: a file or directory at DEST.
nh_add_path() {
    local root=$1 src=$2 dest=$3
    [[ -e $src ]] || nh_die "--add: no such file or directory: $src"
    [[ $dest == /* ]] || nh_usage_error "--add: DEST must be an absolute path: $dest"
    [[ $dest == */ ]] && dest="$dest$(basename "$src")"
    mkdir -p "$root$(dirname "$dest")"
    cp -RL "$src" "$root$dest"
}

nh_write_init() {
    local root=$1
    cat >"$root/init" <<'INIT'
#!/bin/sh
# Nested test host /init (written by resources/nested-host.sh).
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root

# Move from the initramfs (rootfs, which pivot_root refuses: passt's sandbox needs it) to a
# tmpfs root. switch_root frees the initramfs' copy.
if [ ! -e /.tmpfs-root ]; then
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    for f in /* /.[!.]*; do
        [ -e "$f" ] && [ "$f" != /newroot ] && cp -a "$f" /newroot/
    done
    touch /newroot/.tmpfs-root
    exec switch_root /newroot /init
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname kettle-nested
ip link set lo up

fail() {
    echo "NESTED-ERROR $*"
    dmesg | tail -n 30
    echo "NESTED-EXIT 125"
    poweroff -f
    while :; do sleep 3600; done
}

. /lib/kettle/load-module.sh
load_module kvm_amd || fail "cannot load kvm_amd (is svm in the outer -cpu?)"
load_module tun || echo "nested-host: cannot load tun"
[ -c /dev/kvm ] || fail "/dev/kvm did not appear after loading kvm_amd"
echo "NESTED-HOST-READY $(cut -d' ' -f1 /proc/uptime)"

export GUEST_KERNEL=/guest/vmlinuz GUEST_INITRD=/guest/guest-initrd.gz
[ -x /bin/kettle ] && export KETTLE=/bin/kettle
dmesg -n 3
cd /root
if [ -e /nested/interactive ]; then
    # The console is the user's terminal: cooked mode with echo until a
    # program (kettle --serial stdio) takes it raw, and line wrapping on.
    stty sane 2>/dev/null
    printf '\033[?7h'
fi
echo "NESTED-SCRIPT-BEGIN"
setsid cttyhack sh /nested/script.sh
status=$?
echo "NESTED-SCRIPT-END"
if [ "$status" != 0 ]; then
    echo "NESTED-DMESG-BEGIN"
    dmesg | tail -n 30
    echo "NESTED-DMESG-END"
fi
if [ -e /nested/shell ]; then
    echo "nested-host: interactive shell; exit it to power off"
    PS1='nested# ' setsid cttyhack sh
fi
echo "NESTED-EXIT $status"
sync
poweroff -f
while :; do sleep 3600; done
INIT
    chmod 755 "$root/init"
    cat >"$root/etc/profile" <<'PROFILE'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
PS1='nested# '
PROFILE
}

# nh_base_initrd: the cached part of the host initramfs (busybox, modules,
# /init, guest assets). Sets NH_BASE.
nh_base_initrd() {
    ka_build_assets
    local key
    key=$( { cat "$KA_ASSETS/.stamp"; sha256sum "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
    NH_BASE="$KETTLE_CACHE/host/base-$KA_KVER-$key.cpio"
    [[ -s $NH_BASE ]] && return 0
    nh_log "building the nested host base initramfs"
    local work
    work=$(mktemp -d "$KETTLE_CACHE/host-build.XXXXXX")
    local root="$work/root"
    mkdir -p "$root/guest" "$root/nested"
    ka_base_tree "$root"
    ka_install_busybox "$root"
    ka_install_modules "$root" 0 "${HOST_MODULES[@]}"
    ka_install_modules "$root" 1 "${HOST_OPTIONAL_MODULES[@]}"
    ka_finish_modules "$root"
    ka_write_modload "$root"
    nh_write_init "$root"
    cp "$KA_ASSETS/vmlinuz" "$KA_ASSETS/guest-initrd.gz" "$root/guest/"
    mkdir -p "$KETTLE_CACHE/host"
    rm -f "$KETTLE_CACHE"/host/base-*.cpio
    ka_cpio "$root" "$work/base.cpio"
    mv "$work/base.cpio" "$NH_BASE"
    rm -rf "$work"
}

nh_main() {
    local kettle="" no_kettle="${KETTLE_NO_BINARY:-0}" timeout="" memory=2048 shell=0 log="" bzimage=0
    local interactive=0
    local -a bins=() adds=()
    local script=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --kettle) [[ $# -ge 2 ]] || nh_usage_error "--kettle needs a PATH"; kettle=$2; shift ;;
            --no-kettle) no_kettle=1 ;;
            --bin) [[ $# -ge 2 ]] || nh_usage_error "--bin needs SRC[:DEST]"; bins+=("$2"); shift ;;
            --add) [[ $# -ge 2 && $2 == *:* ]] || nh_usage_error "--add needs SRC:DEST"; adds+=("$2"); shift ;;
            --timeout) [[ ${2:-} =~ ^[0-9]+$ ]] || nh_usage_error "--timeout needs SECONDS"; timeout=$2; shift ;;
            --memory) [[ ${2:-} =~ ^[0-9]+$ ]] || nh_usage_error "--memory needs MIB"; memory=$2; shift ;;
            --shell) shell=1 ;;
            --interactive) interactive=1 ;;
            --bzimage) bzimage=1 ;;
            --log) [[ $# -ge 2 ]] || nh_usage_error "--log needs a FILE"; log=$2; shift ;;
            -h|--help) nh_usage; exit 0 ;;
            -) [[ -z $script ]] || nh_usage_error "more than one SCRIPT"; script=- ;;
            -*) nh_usage_error "unknown option: $1" ;;
            *) [[ -z $script ]] || nh_usage_error "more than one SCRIPT"; script=$1 ;;
        esac
        shift
    done
    [[ -n $script ]] || nh_usage_error "missing SCRIPT"
    [[ $script == - || -f $script ]] || nh_usage_error "no such script: $script"
    if [[ $interactive == 1 ]]; then
        [[ $script != - ]] || nh_usage_error "--interactive needs a SCRIPT file (standard input is the console)"
        [[ $shell == 0 ]] || nh_usage_error "--interactive and --shell exclude each other"
    fi
    # 0 disables timeout(1): an interactive session lasts as long as the user wants.
    [[ -n $timeout ]] || { if [[ $interactive == 1 ]]; then timeout=0; else timeout=600; fi; }

    if [[ $no_kettle == 1 ]]; then
        [[ -z $kettle ]] || nh_usage_error "--kettle and --no-kettle (KETTLE_NO_BINARY=1) exclude each other"
    else
        if [[ -z $kettle ]]; then
            kettle="${CARGO_TARGET_DIR:-$NH_REPO/target}/release/kettle"
            [[ $kettle == /* ]] || kettle="$NH_REPO/$kettle"
        fi
        [[ -x $kettle ]] || nh_die "kettle binary not found at $kettle: build it (cargo build --release -p vmm), pass --kettle PATH, or run without it (--no-kettle or KETTLE_NO_BINARY=1)"
    fi

    ka_require qemu-system-x86_64:qemu-system-x86 timeout:coreutils ldd:libc-bin
    ka_with_lock nh_base_initrd

    local work
    work=$(mktemp -d "${TMPDIR:-/tmp}/kettle-nested.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    local root="$work/root"
    mkdir -p "$root/nested"
    if [[ $script == - ]]; then cat >"$root/nested/script.sh"; else cp "$script" "$root/nested/script.sh"; fi
    [[ $shell == 1 ]] && touch "$root/nested/shell"
    [[ $interactive == 1 ]] && touch "$root/nested/interactive"
    [[ $no_kettle == 1 ]] || nh_add_binary "$root" "$kettle" /bin/kettle
    local b a
    for b in ${bins[@]+"${bins[@]}"}; do
        if [[ $b == *:* ]]; then nh_add_binary "$root" "${b%:*}" "${b##*:}"
        else nh_add_binary "$root" "$b" "/bin/$(basename "$b")"; fi
    done
    for a in ${adds[@]+"${adds[@]}"}; do
        nh_add_path "$root" "${a%:*}" "${a##*:}"
    done
    # The kernel unpacks concatenated newc archives in order (later files win);
    # GNU cpio pads each to 512 bytes, which keeps the next one aligned.
    ka_cpio "$root" "$work/run.cpio"
    cat "$NH_BASE" "$work/run.cpio" >"$work/host-initrd.cpio"
    rm -rf "$root" "$work/run.cpio"

    local console="$work/console.log"
    # The uncompressed PVH kernel boots in about half the time of the bzImage,
    # which spends ~4 s decompressing itself under TCG.
    local host_kernel="$KA_ASSETS/vmlinux"
    [[ $bzimage == 1 ]] && host_kernel="$KA_ASSETS/vmlinuz"
    # KETTLE_NESTED_CMDLINE adds to the host kernel's command line. Under load (several outer
    # QEMUs on a 2-CPU machine) the emulator sometimes lost the host's one-shot timer interrupt
    # while an inner guest ran: the host then waited forever, console silent, QEMU idle.
    # "nohz=off highres=off lapic=notscdeadline" (a periodic tick) avoided that in a test, but
    # makes every timer in the host jiffy-grained, and TCP through the 21140 in nested_net ran
    # ten times slower; so it is not the default.
    # shellcheck disable=SC2054  # the commas belong to -cpu's value
    local -a qemu=(qemu-system-x86_64 -accel tcg -cpu EPYC,+svm,+npt -m "$memory" -smp 1
                   -nic none -nographic -no-reboot
                   -kernel "$host_kernel" -initrd "$work/host-initrd.cpio"
                   -append "console=ttyS0 panic=-1 quiet ${KETTLE_NESTED_CMDLINE:-}")
    # Extra QEMU arguments for debugging, e.g. "-monitor unix:/tmp/mon,server,nowait".
    local -a extra=()
    read -r -a extra <<<"${KETTLE_NESTED_QEMU_ARGS:-}"
    qemu+=(${extra[@]+"${extra[@]}"})
    local tty_state=""
    if [[ $interactive == 1 ]]; then
        qemu+=(-echr 0x1d)
        [[ -f /usr/share/qemu/qboot.rom ]] && qemu+=(-bios /usr/share/qemu/qboot.rom)
        # QEMU restores the terminal when it exits, but not when timeout kills it.
        [[ -t 0 ]] && tty_state=$(stty -g 2>/dev/null || true)
        if [[ $timeout == 0 ]]; then
            nh_log "booting the nested test host (interactive; Ctrl-] x quits QEMU at once)"
        else
            nh_log "booting the nested test host (interactive, timeout ${timeout}s; Ctrl-] x quits QEMU at once)"
        fi
    else
        nh_log "booting the nested test host (timeout ${timeout}s)"
    fi
    # The emulator's monitor on a pair of FIFOs (no socket, no extra tool), for the watchdog
    # (nh_watchdog): the emulated host sometimes stops for good, halted, its timer interrupt
    # lost (QEMU's TCG; seen a few times per full test run). When the host has been silent and
    # idle for NH_STALL_SECONDS the watchdog shows the CPU and local APIC and presses a key (the
    # keyboard interrupt gets the CPU to take what is pending); shortly before the timeout it
    # shows them again. (Not with --shell or --interactive: a monitor of its own takes QEMU's
    # Ctrl-A keys off the console.)
    local mon="" watchdog=""
    if [[ $interactive == 0 && $shell == 0 && $timeout -gt 60 ]]; then
        mon="$work/monitor"
        mkfifo "$mon.in" "$mon.out"
        # shellcheck disable=SC2054  # the commas belong to the options' values
        qemu+=(-chardev "pipe,id=kmon,path=$mon" -mon chardev=kmon,mode=readline)
        nh_watchdog "$mon" "$work" "$timeout" </dev/null >"$work/watchdog.log" 2>&1 &
        watchdog=$!
    fi
    local started=$SECONDS rc
    set +e
    # --foreground: QEMU may read the terminal (--shell, --interactive); -k: QEMU gets
    # SIGKILL if SIGTERM did not stop it within 10 s.
    # QEMU warns once per CPUID feature of the EPYC model that TCG lacks: noise.
    timeout --foreground -k 10 "$timeout" "${qemu[@]}" \
        2> >(grep --line-buffered -v "TCG doesn't support requested feature" >&2) | tee "$console"
    rc=${PIPESTATUS[0]}
    if [[ -n $watchdog ]]; then
        kill "$watchdog" 2>/dev/null
        wait "$watchdog" 2>/dev/null
        # What the watchdog did (kicks of a stalled host), for the test's log.
        [[ -s $work/watchdog.log ]] && cat "$work/watchdog.log" >&2
    fi
    [[ -n $tty_state ]] && stty "$tty_state" 2>/dev/null
    set -e
    [[ -n $log ]] && cp "$console" "$log"
    local elapsed=$((SECONDS - started))

    local exit_line status
    exit_line=$(tr -d '\r' <"$console" | grep -a '^NESTED-EXIT [0-9]*$' | tail -n1 || true)
    if [[ -n $exit_line ]]; then
        status=${exit_line#NESTED-EXIT }
        if [[ $rc == 124 || $rc == 137 ]]; then
            echo "nested-host: the host did not power off after reporting NESTED-EXIT $status; QEMU was stopped after ${timeout}s" >&2
        fi
        nh_log "nested host done in ${elapsed}s, script status $status"
        exit "$status"
    fi
    if [[ $interactive == 1 && $rc != 124 && $rc != 137 ]]; then
        echo "nested-host: QEMU ended (exit status $rc, after ${elapsed}s) before SCRIPT reported a status" >&2
        exit 125
    fi
    echo "nested-host: ---- last 40 lines of the outer console ----" >&2
    tr -d '\r' <"$console" | tail -n 40 >&2
    echo "nested-host: ----" >&2
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "nested-host: TIMEOUT: the nested test host did not finish within ${timeout}s (QEMU stopped; see the console tail above)" >&2
        exit 124
    fi
    echo "nested-host: the nested test host stopped without reporting a status (QEMU exit status $rc, after ${elapsed}s; see the console tail above)" >&2
    exit 125
}

# nh_qemu_pid TEXT: the QEMU process whose command line has TEXT (not `timeout`'s).
nh_qemu_pid() {
    local f p
    for f in /proc/[0-9]*/cmdline; do
        p=${f#/proc/} && p=${p%/cmdline}
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == qemu-system-x86* ]] || continue
        grep -q -a -F -- "$1" "$f" 2>/dev/null && { echo "$p"; return 0; }
    done
    return 0
}

# nh_watchdog MONITOR WORK TIMEOUT: watches the outer QEMU (console WORK/console.log, CPU
# time) and talks to its monitor on the FIFOs MONITOR.in/.out; says what it did on stderr.
NH_STALL_SECONDS=${KETTLE_NESTED_STALL_SECONDS:-30}
nh_watchdog() {
    local mon=$1 work=$2 timeout=$3
    local qpid="" pid drain size cpu last_size=-1 last_cpu=-1 quiet=0 kicks=0 t0=$SECONDS
    # A background helper: one failed probe must not end it.
    set +e
    cat "$mon.out" >"$work/monitor.log" 2>/dev/null &
    drain=$!
    trap 'kill "$drain" ${pid:+"$pid"} 2>/dev/null; exit 0' TERM
    # nh_ask CMD...: runs monitor commands; prints their answers (prompts and echo dropped).
    nh_ask() {
        local before
        before=$(stat -c %s "$work/monitor.log" 2>/dev/null || echo 0)
        printf '%s\n' "$@" >"$mon.in"
        sleep 2 & pid=$!; wait "$pid"
        # (Without the prompt, the monitor's line editing, the FPU and vector registers.)
        tail -c +"$((before + 1))" "$work/monitor.log" | tr -d '\r' |
            grep -a -v -e '^(qemu)' -e '^QEMU .* monitor' -e $'\e' -e '^ *$' \
                -e '^YMM' -e '^FPR' -e '^FCW' -e '^XMM' |
            sed 's/^/nested-host:   /'
    }
    while ((SECONDS - t0 < timeout - 20)); do
        sleep 5 & pid=$!; wait "$pid"
        [[ -n $qpid ]] || qpid=$(nh_qemu_pid "$work/host-initrd.cpio")
        [[ -n $qpid && -r /proc/$qpid/stat ]] || continue
        size=$(stat -c %s "$work/console.log" 2>/dev/null || echo 0)
        # utime + stime of QEMU, in clock ticks: a stalled host burns none.
        cpu=$(awk '{print $14 + $15}' "/proc/$qpid/stat")
        if [[ $size == "$last_size" ]] && ((cpu - last_cpu <= 1)); then
            quiet=$((quiet + 5))
        else
            quiet=0
        fi
        last_size=$size last_cpu=$cpu
        if ((quiet >= NH_STALL_SECONDS)); then
            kicks=$((kicks + 1))
            echo "nested-host: STALL: the host has been silent and idle for ${quiet}s (at $((SECONDS - t0))s); its CPU and local APIC:"
            nh_ask "info registers" "info lapic"
            echo "nested-host: STALL: pressing a key to wake it (kick $kicks)"
            nh_ask "sendkey shift"
            quiet=0
        fi
    done
    echo "nested-host: the host's CPU and local APIC 20 s before the timeout:"
    nh_ask "info registers" "info lapic" "info irq"
    while true; do sleep 5 & pid=$!; wait "$pid"; done
}

nh_main "$@"
