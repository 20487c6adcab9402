#!/usr/bin/env bash
# bench-ide.sh: IDE disk throughput in the guest, kettle against QEMU/KVM, side by side in one
# nested test host, on the same dynamic VHD.
#
# Usage: resources/bench-ide.sh [--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE]
#
# The same guest (the Debian kernel `vmlinuz` and `guest-initrd.gz` from build-assets.sh,
# 256 MiB, 1 vCPU, ata_piix + sd_mod) boots N times (default 3) with each of
#   kettle run --kernel vmlinuz --initrd INITRD --memory 256M --cpus 1 --disk ide0:0=DISK.vhd
#   qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic -nic none
#       -kernel vmlinuz -initrd INITRD
#       -drive file=DISK.vhd,format=vpc,if=ide,index=0,media=disk,cache=writeback
# alternately (kettle, QEMU, kettle, ...), inside ONE nested test host
# (resources/nested-host.sh: QEMU TCG emulating an AMD CPU with SVM, kvm-amd inside; see
# ../shared/TESTING.md), so both run on the same (nested) KVM. QEMU is this machine's
# qemu-system-x86_64 with its shared libraries and firmware, as in bench-boot.sh. Linux
# drives both disks with ata_piix and bus-master DMA (UDMA/33 on kettle's PIIX4, MWDMA2 on
# QEMU's PIIX3: only a label on an emulated bus); both VMMs go through the host page cache
# (kettle always, QEMU with cache=writeback, its default).
#
# Every boot gets a fresh copy of one empty 256 MiB dynamic VHD (made by qemu-img), and the
# guest measures, on the raw /dev/sda with O_DIRECT (a small static C program built here,
# `iobench`; fio is not used because Debian's fio drags in the ceph and gluster libraries):
#   seq-write   1 MiB writes from offset 0 (allocating the VHD's blocks), then fdatasync
#   seq-read    1 MiB reads of the same 256 MiB
#   rand-read   4 KiB reads at random 4 KiB-aligned offsets in those 256 MiB
#   rand-write  4 KiB writes likewise (blocks already allocated), then fdatasync
# each for at most 256 MiB or its time limit (10 s sequential, 6 s random), timed with
# CLOCK_MONOTONIC in the guest (kvm-clock under both VMMs). The table gives MB/s (10^6
# bytes/s) and IOPS per run, the median per VMM and the ratio kettle/QEMU of the medians
# (above 1: kettle is faster). Absolute numbers mean little here (KVM nested in TCG);
# compare ratios. The guests' consoles are in the nested host's console (--keep-log).
#
# The nested host (TCG emulating SVM) now and then stops dead as an inner VMM starts: the
# outer QEMU idles at 0% CPU and even the inner `timeout` never fires (here in 4 of this
# benchmark's first 7 nested boots, never during a measurement; never in 10 bare QEMU boots
# in a row, nor in the IDE tests' runs). When the nested host times out, the runs not yet
# complete are retried once in a new nested host, and the retry is reported on stderr.
#
# Prints progress on stderr and the results on stdout; exit status 0 when every run
# completed, 1 otherwise (the numbers are printed anyway), 2 for a usage error. It is a
# benchmark, not a test: it fails on broken runs, never on slow ones.
#
# Options:
#   --runs N            boots per VMM (default 3)
#   --kettle PATH       benchmark this kettle binary (default: build target/release/kettle
#                       with cargo build --release -p vmm)
#   --timeout SECONDS   bound on each nested host (default: 120 + 120 per run)
#   --keep-log FILE     also write the nested host's console to FILE
#   -h, --help          this text
#
# Needs what nested-host.sh needs, plus qemu-img (qemu-utils) and a C compiler with static
# glibc (gcc, libc6-dev); as root it installs missing packages with apt-get. Takes ~4 min
# for N=3.
set -euo pipefail

# shellcheck source=bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" bench-ide \
    "[--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE] [--help]"

bench_parse_args "" "$@"
[[ -n $timeout ]] || timeout=$((120 + 120 * runs))

# The package helpers of build-assets.sh (ka_require installs as root, or says what is missing).
# shellcheck source=build-assets.sh
source "$BENCH_DIR/build-assets.sh"
ka_require qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils cc:gcc cpio:cpio
bench_find_qemu
bench_prepare
bench_workdir kettle-bench-ide

# iobench DEV MODE BS SPAN_MIB SECONDS: one phase on DEV with O_DIRECT; prints
# "IOBENCH MODE BS BYTES OPS SECONDS".
cat >"$work/iobench.c" <<'C'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: iobench DEV seq-read|seq-write|rand-read|rand-write BS SPAN_MIB SECONDS\n");
        return 2;
    }
    const char *dev = argv[1], *mode = argv[2];
    size_t bs = strtoul(argv[3], 0, 10);
    uint64_t span = strtoull(argv[4], 0, 10) << 20;
    double limit = atof(argv[5]);
    int write = strstr(mode, "write") != 0, rnd = strncmp(mode, "rand", 4) == 0;
    int fd = open(dev, (write ? O_RDWR : O_RDONLY) | O_DIRECT);
    if (fd < 0) { perror(dev); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, bs)) { perror("posix_memalign"); return 1; }
    uint64_t x = 0x9e3779b97f4a7c15ull, blocks = span / bs, bytes = 0, ops = 0;
    for (size_t i = 0; i < bs; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ((unsigned char *)buf)[i] = x; }
    double start = now(), t = start;
    while (bytes < span && t - start < limit) {
        uint64_t block;
        if (rnd) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; block = x % blocks; }
        else block = ops % blocks;
        ssize_t n = write ? pwrite(fd, buf, bs, block * bs) : pread(fd, buf, bs, block * bs);
        if (n != (ssize_t)bs) { fprintf(stderr, "%s: %s at %llu: %zd\n", dev, mode, (unsigned long long)(block * bs), n); perror("io"); return 1; }
        bytes += bs; ops++;
        if ((ops & 7) == 0 || !rnd) t = now();
    }
    if (write && fdatasync(fd)) { perror("fdatasync"); return 1; }
    t = now();
    printf("IOBENCH %s %zu %llu %llu %.6f\n", mode, bs, (unsigned long long)bytes, (unsigned long long)ops, t - start);
    return 0;
}
C
cc -O2 -static -o "$work/iobench" "$work/iobench.c" 2>"$work/cc.err" ||
    die "cannot build the static iobench tool (needs gcc and libc6-dev): $(cat "$work/cc.err")"

# The guest initramfs plus the benchmark script and iobench.
mkdir -p "$work/extra/tests" "$work/extra/bin"
cp "$work/iobench" "$work/extra/bin/iobench"
cat >"$work/extra/tests/bench.sh" <<'GUEST'
dmesg -n 1
echo "IOBENCH-CLOCKSOURCE $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "IOBENCH-XFER $(cat /sys/class/ata_device/dev1.0/xfer_mode)"
echo "IOBENCH-DISK $(cat /sys/block/sda/device/model) $(cat /sys/block/sda/size)"
iobench /dev/sda seq-write 1048576 256 10 || exit 1
iobench /dev/sda seq-read 1048576 256 10 || exit 1
iobench /dev/sda rand-read 4096 256 6 || exit 1
iobench /dev/sda rand-write 4096 256 6 || exit 1
GUEST
chmod 755 "$work/extra/tests/bench.sh" "$work/extra/bin/iobench"
bench_initrd tests bin

qemu-img create -q -f vpc -o subformat=dynamic "$work/bench.vhd" 256M || die "qemu-img create failed"

bench_adds --add "$work/bench.vhd:/guest/bench.vhd"

# The inner script runs pairs FIRST..LAST (set at its top by attempt()).
cat >"$work/inner-body.sh" <<'INNER'
# Run by resources/bench-ide.sh inside the nested test host (busybox sh).
INITRD=/guest/bench-initrd
CMDLINE="console=ttyS0 quiet kettle.modules=ata_piix,sd_mod kettle.run=bench"
failed=0

run() { # VMM I
    cp /guest/bench.vhd /tmp/run.vhd
    echo "=== $1 run $2"
    # The guest's console goes to the nested host's console as it comes (with the outer
    # console kept, a stalled run shows where it stopped) and to /tmp/out.
    { case $1 in
        kettle) timeout 150 kettle run --kernel "$GUEST_KERNEL" --initrd $INITRD --memory 256M --cpus 1 \
                    --serial stdio --no-reboot --disk ide0:0=/tmp/run.vhd --cmdline "$CMDLINE" ;;
        qemu) timeout 150 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic \
                    -nic none -no-reboot -kernel "$GUEST_KERNEL" -initrd $INITRD -append "$CMDLINE" \
                    -drive file=/tmp/run.vhd,format=vpc,if=ide,index=0,media=disk,cache=writeback ;;
      esac </dev/null 2>/tmp/err; echo $? >/tmp/status; } | tee /tmp/out | sed 's/^/GUEST: /'
    st=$(cat /tmp/status)
    tr -d '\r' </tmp/out | grep '^IOBENCH' | sed "s/^/BENCH $1 $2 /"
    if [ $st != 0 ] || ! grep -q 'KETTLE-TEST-EXIT 0' /tmp/out || [ "$(grep -c '^IOBENCH ' /tmp/out)" != 4 ]; then
        failed=1
        echo "BENCH-FAILED $1 run $2 (status $st); its output and stderr:"
        tr -d '\r' </tmp/out | tail -n 30
        tail -n 20 /tmp/err
    fi
    rm -f /tmp/run.vhd
}

echo "BENCH-QEMU $(qemu-system-x86_64 --version | head -n1)"
i=$FIRST
while [ $i -le $LAST ]; do
    run kettle $i
    run qemu $i
    i=$((i + 1))
done
exit $failed
INNER

# complete I: run I has its four phases from both VMMs in $results.
complete() {
    [[ $(grep -c "^BENCH kettle $1 IOBENCH " <<<"$results") == 4 &&
       $(grep -c "^BENCH qemu $1 IOBENCH " <<<"$results") == 4 ]]
}

# progress: a line on stderr for each phase of each run.
progress() {
    while IFS=$' \t\r' read -r tag vmm_name run what mode _bs bytes ops secs; do
        [[ $tag == BENCH && $what == IOBENCH ]] &&
            log "$vmm_name run $run: $mode $(awk -v b="$bytes" -v o="$ops" -v s="$secs" 'BEGIN { printf "%.1f MB/s, %.0f IOPS", b / s / 1e6, o / s }')"
    done
}

# attempt FIRST N: one nested host running pairs FIRST..N; appends to $results, sets $status.
attempt() {
    { echo "FIRST=$1"; echo "LAST=$2"; cat "$work/inner-body.sh"; } >"$work/inner.sh"
    log "booting the nested test host: runs $1..$2 of each VMM (timeout ${timeout}s)"
    bench_attempt "$1" progress
}

bench_attempts attempt complete
if ! grep -q '^BENCH [a-z]* [0-9]* IOBENCH ' <<<"$results"; then
    bench_nested_failed "$work/console.1"
fi

awk '
function median(v, m,    i, j, t, n, a) {
    n = 0
    for (i = 1; i <= cnt[v, m]; i++) a[++n] = val[v, m, i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    if (n == 0) return ""
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(x, d) { return (x == "") ? "-" : sprintf("%." d "f", x) }
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
$1 == "BENCH-QEMU" { sub(/^BENCH-QEMU /, ""); qemu_version = $0; next }
$1 == "BENCH" && $4 == "IOBENCH-CLOCKSOURCE" { clock[$2] = $5; next }
$1 == "BENCH" && $4 == "IOBENCH-XFER" { xfer[$2] = $5; next }
$1 == "BENCH" && $4 == "IOBENCH" {
    v = $2; r = $3; m = $5; s = $9
    mbs = $7 / s / 1e6; iops = $8 / s
    cnt[v, m]++; val[v, m, cnt[v, m]] = mbs; ops[v, m, cnt[v, m]] = iops
    line[v, m, cnt[v, m]] = sprintf("%-8s %-4s %-11s %10.2f %10.0f %10.1f %8.2f", (v == "qemu") ? "QEMU" : v, r, m, mbs, iops, $7 / 1048576, s)
}
END {
    nm = split("seq-write seq-read rand-read rand-write", modes, " ")
    printf "IDE throughput in the guest (O_DIRECT on /dev/sda), same 256 MiB dynamic VHD, 256 MiB RAM, 1 vCPU,\n"
    printf "inside one nested test host (QEMU: %s, -enable-kvm -M pc, IDE, cache=writeback)\n", qemu_version
    printf "guest clocksource: kettle %s, QEMU %s; transfer mode: kettle %s, QEMU %s\n\n", clock["kettle"], clock["qemu"], xfer["kettle"], xfer["qemu"]
    printf "%-8s %-4s %-11s %10s %10s %10s %8s\n", "VMM", "run", "phase", "MB/s", "IOPS", "MiB moved", "seconds"
    for (k = 1; k <= 2; k++) {
        v = (k == 1) ? "kettle" : "qemu"
        for (i = 1; i <= nm; i++) for (j = 1; j <= cnt[v, modes[i]]; j++) print line[v, modes[i], j]
    }
    printf "\n%-11s %14s %14s %14s\n", "phase", "kettle MB/s", "QEMU MB/s", "kettle/QEMU"
    for (i = 1; i <= nm; i++) {
        m = modes[i]; a = median("kettle", m); b = median("qemu", m)
        printf "%-11s %14s %14s %14s\n", m, fmt(a, 2), fmt(b, 2), ratio(a, b)
    }
    printf "(medians over the runs; IOPS = MB/s * 10^6 / block size: 1 MiB sequential, 4 KiB random)\n"
}' <<<"$results"

bench_finish
