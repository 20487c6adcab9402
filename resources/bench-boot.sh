#!/usr/bin/env bash
# bench-boot.sh: boot time of kettle against QEMU/KVM, side by side in one nested test host,
# and kettle's resident memory besides guest RAM.
#
# Usage: resources/bench-boot.sh [--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE]
#
# Boots the same guest (the Debian kernel `vmlinuz` and `guest-initrd.gz` from
# build-assets.sh, 256 MiB, 1 vCPU, command line "console=ttyS0 quiet kettle.run=boot",
# whose test script exits at once so the guest powers off right after /init) N times
# (default 3) with each of
#   kettle run --kernel vmlinuz --initrd INITRD --memory 256M --cpus 1 --serial stdio --no-reboot
#   qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic -nic none
#                      -no-reboot -kernel vmlinuz -initrd INITRD -append CMDLINE
# alternately (kettle, QEMU, kettle, ...), inside ONE nested test host
# (resources/nested-host.sh: QEMU TCG emulating an AMD CPU with SVM, kvm-amd inside; see
# ../shared/TESTING.md), so both run on the same (nested) KVM. QEMU is this machine's
# qemu-system-x86_64 with its shared libraries and firmware (/usr/share/qemu,
# /usr/share/seabios) copied into the host.
#
# Times, per run, from the VMM's start: "init" until the guest's /init prints
# KETTLE-GUEST-READY on COM1 (mounts done; the kernel's whole boot), "exit" until the VMM
# has exited after the guest's ACPI power-off. Every line of the VMM's output is time-stamped
# by busybox `ts` (gettimeofday, microseconds) as it arrives through a pipe; the start is a
# line written just before the VMM is started. No polling. The table shows each run, the
# median and the fastest run per VMM, and the ratios kettle/QEMU of both (below 1: kettle is
# faster). Absolute times mean little here (KVM nested in TCG, and whatever else the machine
# is running slows some runs: the fastest runs are the least disturbed); compare ratios.
#
# Memory: one more boot of each VMM whose guest waits in its test script (sleep) after
# /init; 2 s after KETTLE-GUEST-READY the script reads /proc/PID/status (VmRSS) and
# /proc/PID/smaps of the VMM process. Guest RAM is taken to be the anonymous mappings (no
# file, no [heap]/[stack] name) of 1 MiB or more: kettle's two RAM regions (0-640 KiB and
# 896 KiB-256 MiB) show up as one 255.8 MiB mapping, as the kernel merges them. "Non-guest
# RSS" is the Rss of every other mapping (binary, libraries, heap, thread stacks, device
# state). The excluded mappings are listed, so the reader can judge: besides guest RAM they
# are thread stacks and glibc malloc arena reservations, barely resident; for QEMU also its
# VGA memory and ROMs, which is why QEMU's figure is given for orientation only.
#
# Prints progress on stderr and the results on stdout; exit status 0 when every run booted
# to KETTLE-GUEST-READY and exited 0, 1 otherwise (the numbers are printed anyway), 2 for a
# usage error. It is a benchmark, not a test: it fails on broken runs, never on slow ones.
#
# Options:
#   --runs N            boots per VMM (default 3)
#   --kettle PATH       benchmark this kettle binary (default: build target/release/kettle
#                       with cargo build --release -p vmm)
#   --timeout SECONDS   bound on the nested host (default: 300 + 150 per run)
#   --keep-log FILE     also write the nested host's console to FILE
#   -h, --help          this text
#
# Needs what nested-host.sh needs (resources/setup.sh installs it); builds kettle (unless
# --kettle) and the guest assets first. Takes ~3 min for N=3.
set -euo pipefail

# shellcheck source=bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" bench-boot \
    "[--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE] [--help]"

bench_parse_args "" "$@"
[[ -n $timeout ]] || timeout=$((300 + 150 * runs))

bench_find_qemu
bench_prepare
bench_workdir kettle-bench

# The guest initramfs plus the two test scripts: /tests/boot.sh exits at once, /tests/hold.sh
# keeps the guest up for the memory sample.
mkdir -p "$work/extra/tests"
echo 'exit 0' >"$work/extra/tests/boot.sh"
echo 'sleep 8' >"$work/extra/tests/hold.sh"
chmod 755 "$work/extra/tests/"*.sh
bench_initrd tests
bench_adds

cat >"$work/inner.sh" <<INNER
RUNS=$runs
INNER
cat >>"$work/inner.sh" <<'INNER'
# Run by resources/bench-boot.sh inside the nested test host (busybox sh).
INITRD=/guest/bench-initrd
CMDLINE_BASE="console=ttyS0 quiet"
failed=0

vmm() { # VMM TEST: the command line of one boot, in "$@" order, as a string for eval
    case $1 in
        kettle) echo "kettle run --kernel \"\$GUEST_KERNEL\" --initrd $INITRD --memory 256M --cpus 1 --serial stdio --no-reboot --cmdline \"$CMDLINE_BASE kettle.run=$2\"" ;;
        qemu) echo "qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic -nic none -no-reboot -kernel \"\$GUEST_KERNEL\" -initrd $INITRD -append \"$CMDLINE_BASE kettle.run=$2\"" ;;
    esac
}

# timed VMM I: one boot, every output line time-stamped as it arrives.
timed() {
    out=/tmp/out.$1.$2
    { echo "BENCH-START"; eval "timeout 300 $(vmm "$1" boot)" </dev/null 2>/tmp/err.$1.$2; echo "BENCH-END $?"; } |
        ts %.s >"$out"
    tr -d '\r' <"$out" | awk -v vmm="$1" -v i="$2" '
        $2 == "BENCH-START" { s = $1 }
        /KETTLE-GUEST-READY/ && !r { r = $1 }
        $2 == "BENCH-END" { e = $1; st = $3 }
        END {
            if (r) init = sprintf("%.3f", r - s); else init = "-"
            printf "BENCH-RUN %s %s %s %.3f %s\n", vmm, i, init, e - s, st
        }'
    if ! grep -q KETTLE-GUEST-READY "$out" || ! grep -q '^[0-9.]* BENCH-END 0' "$out"; then
        failed=1
        echo "BENCH-FAILED $1 run $2; its output and stderr:"
        tr -d '\r' <"$out" | tail -n 20
        tail -n 20 /tmp/err.$1.$2
    fi
}

# smaps_summary PID: totals and the excluded (guest RAM) mappings, in KiB.
smaps_summary() {
    awk '
        /^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6) ? $6 : ""; next }
        $1 == "Size:" { size = $2; next }
        $1 == "Rss:" {
            total += $2
            if (name == "" && size >= 1024) { guest += $2; printf "BENCH-MAP %s %d %d\n", vmm, size, $2 }
            next
        }
        END { printf "BENCH-SMAPS %s %d %d %d\n", vmm, total, guest, total - guest }
    ' vmm="$2" "/proc/$1/smaps"
}

# hold VMM: one boot whose guest waits; sample the VMM's memory while it does.
hold() {
    out=/tmp/hold.$1
    case $1 in kettle) bin=kettle ;; qemu) bin=qemu-system-x86_64 ;; esac
    eval "timeout 300 $(vmm "$1" hold)" </dev/null >"$out" 2>&1 &
    job=$!
    i=0
    while ! grep -q KETTLE-GUEST-READY "$out" && [ $i -lt 1200 ] && kill -0 "$job" 2>/dev/null; do
        sleep 0.25; i=$((i + 1))
    done
    sleep 2
    # $! may be a shell or timeout(1) around the VMM: sample the VMM's own process.
    pid=$(pidof "$bin" | cut -d' ' -f1)
    if grep -q KETTLE-GUEST-READY "$out" && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "BENCH-VMRSS $1 $(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")"
        smaps_summary "$pid" "$1"
    else
        failed=1
        echo "BENCH-FAILED $1 memory sample: no KETTLE-GUEST-READY, or the VMM exited early"
        tr -d '\r' <"$out" | tail -n 20
    fi
    wait "$job"
}

echo "BENCH-QEMU $(qemu-system-x86_64 --version | head -n1)"
# The memory samples first: they also warm up both VMMs (binaries, libraries, KVM).
hold kettle
hold qemu
i=1
while [ $i -le $RUNS ]; do
    timed kettle $i
    timed qemu $i
    i=$((i + 1))
done
exit $failed
INNER

# progress: a line on stderr for each boot.
progress() {
    while IFS=$' \t\r' read -r tag vmm_name run t_init t_exit st; do
        [[ $tag == BENCH-RUN ]] && log "$vmm_name run $run: to init ${t_init} s, to exit ${t_exit} s, status $st"
    done
}

log "booting the nested test host: $runs boot(s) per VMM, then the report (timeout ${timeout}s)"
bench_nested_once progress
if [[ $status != 0 ]]; then
    # What failed runs printed (the script's output without the result lines).
    bench_script_output "$work/console" |
        grep -a -v -e '^BENCH-RUN' -e '^BENCH-MAP' -e '^BENCH-SMAPS' -e '^BENCH-VMRSS' -e '^BENCH-QEMU' \
                   -e '^NESTED-SCRIPT-' >&2 || true
    if ! grep -q '^BENCH-RUN' <<<"$results"; then bench_nested_failed "$work/console"; fi
fi

awk '
# sorted(V, W): fills s[1..n] with the times W ("i": to init, "e": to exit) of VMM V, in
# increasing order, and returns n.
function sorted(v, w,    i, j, t, x, n) {
    delete s; n = 0
    for (i = 1; i <= cnt[v]; i++) {
        x = (w == "i") ? init[v, i] : exit_t[v, i]
        if (x != "-") s[++n] = x + 0
    }
    for (i = 2; i <= n; i++) for (j = i; j > 1 && s[j-1] > s[j]; j--) { t = s[j]; s[j] = s[j-1]; s[j-1] = t }
    return n
}
function fmt(x) { return (x == "") ? "-" : sprintf("%.3f", x) }
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
function mib(kib) { return sprintf("%.1f", kib / 1024) }
function size(kib) { return (kib < 1024) ? kib " KiB" : mib(kib) " MiB" }
$1 == "BENCH-QEMU" { sub(/^BENCH-QEMU /, ""); qemu_version = $0 }
$1 == "BENCH-RUN" { v = $2; cnt[v]++; init[v, cnt[v]] = $4; exit_t[v, cnt[v]] = $5; st[v, cnt[v]] = $6 }
$1 == "BENCH-VMRSS" { vmrss[$2] = $3 }
$1 == "BENCH-SMAPS" { total[$2] = $3; guest[$2] = $4; other[$2] = $5 }
$1 == "BENCH-MAP" { maps[$2] = maps[$2] sprintf("%s%s (Rss %s)", maps[$2] == "" ? "" : ", ", size($3), size($4)) }
END {
    vmm[1] = "kettle"; vmm[2] = "qemu"; label["kettle"] = "kettle"; label["qemu"] = "QEMU"
    printf "Boot to init and to exit, same kernel + initramfs, 256 MiB, 1 vCPU, inside one nested test host\n"
    printf "(QEMU: %s, -enable-kvm -M pc -cpu host; seconds from the VMM'"'"'s start)\n\n", qemu_version
    printf "%-22s %10s %10s %7s\n", "VMM, run", "to init", "to exit", "status"
    for (k = 1; k <= 2; k++) {
        v = vmm[k]
        for (i = 1; i <= cnt[v]; i++)
            printf "%-22s %10s %10s %7s\n", label[v] " " i, init[v, i], exit_t[v, i], st[v, i]
    }
    for (k = 1; k <= 2; k++) {
        v = vmm[k]
        for (w = 1; w <= 2; w++) {
            W = (w == 1) ? "i" : "e"
            n = sorted(v, W)
            med[v, W] = n ? ((n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2) : ""
            low[v, W] = n ? s[1] : ""
        }
    }
    for (k = 1; k <= 2; k++)
        printf "%-22s %10s %10s\n", label[vmm[k]] " median", fmt(med[vmm[k], "i"]), fmt(med[vmm[k], "e"])
    for (k = 1; k <= 2; k++)
        printf "%-22s %10s %10s\n", label[vmm[k]] " fastest", fmt(low[vmm[k], "i"]), fmt(low[vmm[k], "e"])
    printf "%-22s %10s %10s\n", "kettle/QEMU, medians", ratio(med["kettle", "i"], med["qemu", "i"]),
        ratio(med["kettle", "e"], med["qemu", "e"])
    printf "%-22s %10s %10s\n", "kettle/QEMU, fastest", ratio(low["kettle", "i"], low["qemu", "i"]),
        ratio(low["kettle", "e"], low["qemu", "e"])
    printf "\nResident memory 2 s after KETTLE-GUEST-READY (MiB):\n"
    printf "%-8s %10s %14s %14s\n", "VMM", "VmRSS", "guest RAM Rss", "non-guest Rss"
    for (k = 1; k <= 2; k++) {
        v = vmm[k]
        if (v in vmrss)
            printf "%-8s %10s %14s %14s\n", label[v], mib(vmrss[v]), mib(guest[v]), mib(other[v])
    }
    printf "\nkettle non-guest RSS: %s MiB\n", ("kettle" in other) ? mib(other["kettle"]) : "-"
    printf "Method: /proc/PID/smaps of the VMM; guest RAM = anonymous mappings (no file, no [name]) of 1 MiB\n"
    printf "or more; non-guest = the Rss of all other mappings (binary, libraries, heap, stacks).\n"
    printf "Excluded as guest RAM, kettle: %s\n", ("kettle" in maps) ? maps["kettle"] : "-"
    printf "Excluded as guest RAM, QEMU:   %s\n", ("qemu" in maps) ? maps["qemu"] : "-"
    printf "(QEMU keeps VGA memory and ROMs in such mappings too; its figure is for orientation.)\n"
}' <<<"$results"

bench_finish
