#!/usr/bin/env bash
# bench-net.sh: TCP throughput between a guest and its host through an emulated DEC Tulip card,
# kettle against QEMU/KVM, side by side in one nested test host, on the same TAP interface.
#
# Usage: resources/bench-net.sh [--runs N] [--size MIB] [--seconds S] [--kettle PATH]
#                               [--only kettle|qemu] [--timeout SECONDS] [--keep-log FILE]
#
# The same guest (the Debian kernel `vmlinuz` and `guest-initrd.gz` from build-assets.sh,
# 256 MiB, 1 vCPU, Linux's `tulip` driver) boots N times (default 3) with each of
#   kettle run --kernel vmlinuz --initrd INITRD --memory 256M --cpus 1 --serial stdio
#       --no-reboot --nic tulip,backend=tap:kt0,mac=52:54:00:12:34:56
#   qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic -no-reboot
#       -kernel vmlinuz -initrd INITRD
#       -netdev tap,id=n0,ifname=kt0,script=no,downscript=no
#       -device tulip,netdev=n0,mac=52:54:00:12:34:56,romfile=
# alternately (kettle, QEMU, kettle, ...), inside ONE nested test host
# (resources/nested-host.sh: QEMU TCG emulating an AMD CPU with SVM, kvm-amd inside; see
# ../shared/TESTING.md), so both run on the same (nested) KVM. kettle emulates the DEC 21140,
# QEMU's `tulip` the 21143; Linux drives both with its `tulip` driver. QEMU is this machine's
# qemu-system-x86_64 with its shared libraries and firmware, as in bench-boot.sh.
#
# The backend is the same for both: the TAP interface kt0, made once in the nested host
# (busybox tunctl, persistent) with the address 10.0.0.1/24; each VMM attaches to it in turn
# (no vhost), and the guest takes 10.0.0.2/24. Nothing leaves the nested host, which has no
# network (its QEMU runs with -nic none). Each guest, once it can ping the host, first pings it
# 20 times back to back (busybox ping -A: round-trip latency), then moves, over one TCP
# connection each (a small static C program built here, `netbench`, on both ends; no nc):
#   guest->host  the guest connects and sends zeros (from memory: the NIC is measured, not a
#                random number generator) to a receiver in the nested host
#   host->guest  the guest connects and a sender in the nested host sends zeros to it
# each at most --size MiB or for at most --seconds, whichever ends first. The guest times each
# transfer with CLOCK_MONOTONIC, from its connect() until the peer closed the connection after
# the last byte (kvm-clock under both VMMs; the clocksource is printed). The host end reads the
# VMM process's CPU time (utime+stime in /proc/PID/stat: all its threads, including the vCPU
# while it runs the guest, and the kernel's TAP work done on its behalf) right after accept()
# and after the connection closed, and divides by the megabytes moved; "in guest" is the share
# of that CPU time /proc/PID/stat counts as guest time (guest_time, field 43), so the rest is
# the VMM's own emulation and host kernel work. The table gives Mbit/s (10^6 bits/s) and CPU
# ms per MB (10^6 bytes) per run, the ping times per run, the medians per VMM and the ratios
# kettle/QEMU of the medians (throughput above 1: kettle is faster; CPU per MB and ping below
# 1: kettle is cheaper, faster).
# Absolute numbers mean little here (KVM nested in TCG, where a round trip takes milliseconds
# and guest->host, one TCP stream from Linux's tulip driver, runs at a fraction of host->guest
# with either VMM); compare ratios. CPU times come in clock ticks (10 ms): move enough data for
# them to mean something.
#
# The nested host (TCG emulating SVM) now and then stops dead as an inner VMM starts (see
# bench-ide.sh). When the nested host times out, the runs not yet complete are retried once in
# a new nested host, and the retry is reported on stderr.
#
# Prints progress on stderr and the results on stdout; exit status 0 when every run completed,
# 1 otherwise (the numbers are printed anyway), 2 for a usage error. It is a benchmark, not a
# test: it fails on broken runs, never on slow ones.
#
# Options:
#   --runs N            boots per VMM (default 3)
#   --size MIB          at most this much each way per boot (default 128)
#   --seconds S         at most this long each way per boot (default 20)
#   --kettle PATH       benchmark this kettle binary (default: build target/release/kettle
#                       with cargo build --release -p vmm)
#   --only VMM          run only kettle or only qemu (no ratios; `--only qemu` needs no kettle)
#   --timeout SECONDS   bound on each nested host (default: 120 + (60 + 2 * S) per boot)
#   --keep-log FILE     also write the nested host's console to FILE
#   -h, --help          this text
#
# Needs what nested-host.sh needs and a C compiler with static glibc (gcc, libc6-dev); as root
# it installs missing packages with apt-get. Takes ~7 min for N=3 with the defaults.
set -euo pipefail

# shellcheck source=bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" bench-net \
    "[--runs N] [--size MIB] [--seconds S] [--kettle PATH] [--only kettle|qemu] [--timeout SECONDS] [--keep-log FILE] [--help]"

# net_option OPTION VALUE...: --size, --seconds, --only (the other options are
# bench_parse_args's).
net_option() {
    case $1 in
        --size) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage_error "--size needs a positive number of MiB"; size=$2 ;;
        --seconds) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage_error "--seconds needs a positive number"; seconds=$2 ;;
        --only) [[ ${2:-} == kettle || ${2:-} == qemu ]] || usage_error "--only needs kettle or qemu"; only=$2 ;;
        *) return 1 ;;
    esac
}

size=128 seconds=20 only=""
bench_parse_args net_option "$@"
[[ $only == qemu && -n $kettle ]] && usage_error "--only qemu and --kettle exclude each other"
vmms="kettle qemu"
[[ -n $only ]] && vmms=$only
nvmm=$(wc -w <<<"$vmms")
# Per boot: ~30 s to boot, ping and power off, and two transfers (a slow sender's queue drains
# after its time is up): vm_timeout bounds each inner VMM, the default outer timeout allows
# 60 + 2 * S per boot.
vm_timeout=$((90 + 3 * seconds))
[[ -n $timeout ]] || timeout=$((120 + runs * nvmm * (60 + 2 * seconds)))

# The package helpers of build-assets.sh (ka_require installs as root, or says what is missing).
# shellcheck source=build-assets.sh
source "$BENCH_DIR/build-assets.sh"
ka_require qemu-system-x86_64:qemu-system-x86 cc:gcc cpio:cpio
bench_find_qemu
if [[ $only == qemu ]]; then bench_prepare --no-build; else bench_prepare; fi
bench_workdir kettle-bench-net

# netbench: one TCP transfer, run in the guest (client: send, recv) and in the nested host
# (server: sink, source, which also read the VMM's CPU time). Prints
#   NETBENCH DIR BYTES SECONDS                        (client)
#   HOSTBENCH DIR BYTES SECONDS CPU_TICKS GUEST_TICKS TICKS_PER_SECOND   (server)
# with DIR g2h (guest to host) or h2g.
cat >"$work/netbench.c" <<'C'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) { perror(what); exit(1); }

/* cpu: utime+stime and guest_time of process PID, in clock ticks. */
static void cpu(long pid, long long *total, long long *guest) {
    char path[64], line[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) die(path);
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    if (!p) { fprintf(stderr, "%s: unexpected format\n", path); exit(1); }
    /* Field 3 (state) follows the command; utime is 14, stime 15, guest_time 43. */
    long long v[64] = {0};
    int field = 2;
    for (char *tok = strtok(p + 1, " \n"); tok && field < 60; tok = strtok(0, " \n"))
        v[++field] = atoll(tok);
    if (field < 43) { fprintf(stderr, "%s: only %d fields\n", path, field); exit(1); }
    *total = v[14] + v[15];
    *guest = v[43];
}

static int client(const char *host, int port) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "bad address %s\n", host); exit(2); }
    for (int i = 0;; i++) { /* the server may not listen yet: retry for 30 s */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) return s;
        if (i >= 150) die("connect");
        close(s);
        usleep(200000);
    }
}

static int server(int port) {
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
    int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0) die("socket");
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) die("bind/listen");
    int s = accept(l, 0, 0);
    if (s < 0) die("accept");
    close(l);
    return s;
}

/* Up to max bytes for at most limit seconds, then shut the sending side down and wait
   until the peer has closed (it has then read everything). */
static unsigned long long send_all(int s, unsigned long long max, double limit, double start) {
    unsigned long long bytes = 0;
    while (bytes < max && now() - start < limit) {
        size_t want = max - bytes < sizeof buf ? max - bytes : sizeof buf;
        ssize_t n = write(s, buf, want);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("write");
        bytes += n;
    }
    if (shutdown(s, SHUT_WR)) die("shutdown");
    while (read(s, buf, sizeof buf) > 0) {}
    return bytes;
}

static unsigned long long recv_all(int s) {
    unsigned long long bytes = 0;
    for (;;) {
        ssize_t n = read(s, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("read");
        if (n == 0) return bytes;
        bytes += n;
    }
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    long long c0, g0, c1, g1;
    if (!strcmp(mode, "send") && argc == 6) {          /* send HOST PORT MAXBYTES SECONDS */
        alarm(atoi(argv[5]) + 300);
        int s = client(argv[2], atoi(argv[3]));
        double start = now();
        unsigned long long b = send_all(s, strtoull(argv[4], 0, 10), atof(argv[5]), start);
        printf("NETBENCH g2h %llu %.6f\n", b, now() - start);
    } else if (!strcmp(mode, "recv") && argc == 5) {   /* recv HOST PORT SECONDS */
        alarm(atoi(argv[4]) + 300);
        int s = client(argv[2], atoi(argv[3]));
        double start = now();
        unsigned long long b = recv_all(s);
        printf("NETBENCH h2g %llu %.6f\n", b, now() - start);
    } else if (!strcmp(mode, "sink") && argc == 4) {   /* sink PORT VMM_PID */
        int s = server(atoi(argv[2]));
        cpu(atol(argv[3]), &c0, &g0);
        double start = now();
        unsigned long long b = recv_all(s);
        double t = now() - start;
        cpu(atol(argv[3]), &c1, &g1);
        printf("HOSTBENCH g2h %llu %.6f %lld %lld %ld\n", b, t, c1 - c0, g1 - g0, sysconf(_SC_CLK_TCK));
    } else if (!strcmp(mode, "source") && argc == 6) { /* source PORT MAXBYTES SECONDS VMM_PID */
        int s = server(atoi(argv[2]));
        cpu(atol(argv[5]), &c0, &g0);
        double start = now();
        unsigned long long b = send_all(s, strtoull(argv[3], 0, 10), atof(argv[4]), start);
        double t = now() - start;
        cpu(atol(argv[5]), &c1, &g1);
        printf("HOSTBENCH h2g %llu %.6f %lld %lld %ld\n", b, t, c1 - c0, g1 - g0, sysconf(_SC_CLK_TCK));
    } else {
        fprintf(stderr, "usage: netbench send HOST PORT MAXBYTES SECONDS | recv HOST PORT SECONDS |\n"
                        "       sink PORT VMM_PID | source PORT MAXBYTES SECONDS VMM_PID\n");
        return 2;
    }
    return 0;
}
C
cc -O2 -static -o "$work/netbench" "$work/netbench.c" 2>"$work/cc.err" ||
    die "cannot build the static netbench tool (needs gcc and libc6-dev): $(cat "$work/cc.err")"

bytes=$((size * 1048576))
# The guest initramfs plus the benchmark script and netbench.
mkdir -p "$work/extra/tests" "$work/extra/bin"
cp "$work/netbench" "$work/extra/bin/netbench"
{
    echo "BYTES=$bytes LIMIT=$seconds"
    cat <<'GUEST'
dmesg -n 1
echo "NETBENCH-CLOCKSOURCE $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i+1)); done
echo "NETBENCH-NIC $(dmesg | grep -o 'Digital DS21[^,]* rev [0-9]*' | head -n1 | tr ' ' _)"
ip addr add 10.0.0.2/24 dev eth0 || exit 1
ip link set eth0 up || exit 1
i=0; while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $i -lt 150 ]; do sleep 0.2; i=$((i+1)); done
i=0; until ping -c 1 -W 1 10.0.0.1 >/dev/null 2>&1; do
    i=$((i+1)); [ $i -ge 60 ] && { echo "NETBENCH-NO-PING"; exit 1; }
done
ping -c 20 -A 10.0.0.1 >/tmp/ping 2>&1
echo "NETBENCH-PING $(sed -n 's#.*min/avg/max = \([0-9.]*\)/\([0-9.]*\)/\([0-9.]*\).*#\1 \2 \3#p' /tmp/ping)"
netbench send 10.0.0.1 5001 $BYTES $LIMIT || exit 1
netbench recv 10.0.0.1 5002 $LIMIT || exit 1
echo "NETBENCH-RX-ERRORS $(cat /sys/class/net/eth0/statistics/rx_errors) $(cat /sys/class/net/eth0/statistics/tx_errors)"
GUEST
} >"$work/extra/tests/bench.sh"
chmod 755 "$work/extra/tests/bench.sh" "$work/extra/bin/netbench"
bench_initrd tests bin

bench_adds --add "$work/netbench:/bin/netbench"

# The inner script runs pairs FIRST..LAST (set at its top by attempt()).
cat >"$work/inner-body.sh" <<'INNER'
# Run by resources/bench-net.sh inside the nested test host (busybox sh).
INITRD=/guest/bench-initrd
CMDLINE="console=ttyS0 quiet kettle.modules=tulip kettle.run=bench"
MAC=52:54:00:12:34:56
failed=0

# The backend of both VMMs: one persistent TAP interface with the host's address.
tunctl -t kt0 >/dev/null || { echo "BENCH-FAILED tunctl -t kt0"; exit 1; }
ip addr add 10.0.0.1/24 dev kt0 && ip link set kt0 up || { echo "BENCH-FAILED kt0 setup"; exit 1; }

run() { # VMM I
    echo "=== $1 run $2"
    rm -f /tmp/g2h.out /tmp/h2g.out /tmp/out
    # The guest's console goes to the nested host's console as it comes (with the outer
    # console kept, a stalled run shows where it stopped) and to /tmp/out.
    { case $1 in
        kettle) timeout $VMTO kettle run --kernel "$GUEST_KERNEL" --initrd $INITRD --memory 256M \
                    --cpus 1 --serial stdio --no-reboot --nic tulip,backend=tap:kt0,mac=$MAC \
                    --cmdline "$CMDLINE" ;;
        qemu) timeout $VMTO qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic \
                    -no-reboot -kernel "$GUEST_KERNEL" -initrd $INITRD -append "$CMDLINE" \
                    -netdev tap,id=n0,ifname=kt0,script=no,downscript=no \
                    -device tulip,netdev=n0,mac=$MAC,romfile= ;;
      esac </dev/null 2>/tmp/err; echo $? >/tmp/status; } | tee /tmp/out | sed 's/^/GUEST: /' &
    vm=$!
    case $1 in kettle) name=kettle ;; qemu) name=qemu-system-x86_64 ;; esac
    pid=""; tries=0
    while [ -z "$pid" ] && [ $tries -lt 100 ]; do
        pid=$(pidof $name 2>/dev/null | cut -d" " -f1); [ -n "$pid" ] || sleep 0.1; tries=$((tries + 1))
    done
    if [ -n "$pid" ]; then
        netbench sink 5001 "$pid" >/tmp/g2h.out 2>&1 &
        sinkpid=$!
        netbench source 5002 $BYTES $LIMIT "$pid" >/tmp/h2g.out 2>&1 &
        srcpid=$!
    fi
    wait $vm
    [ -n "$pid" ] && { kill $sinkpid $srcpid 2>/dev/null; wait $sinkpid $srcpid 2>/dev/null; }
    st=$(cat /tmp/status)
    { tr -d '\r' </tmp/out | grep '^NETBENCH'; cat /tmp/g2h.out /tmp/h2g.out 2>/dev/null | grep '^HOSTBENCH'; } |
        sed "s/^/BENCH $1 $2 /"
    if [ "$st" != 0 ] || ! grep -q 'KETTLE-TEST-EXIT 0' /tmp/out || [ "$(grep -c '^NETBENCH [gh]2[gh] ' /tmp/out)" != 2 ] ||
       [ "$(cat /tmp/g2h.out /tmp/h2g.out 2>/dev/null | grep -c '^HOSTBENCH ')" != 2 ]; then
        failed=1
        echo "BENCH-FAILED $1 run $2 (status $st, VMM pid '${pid}'); its output, stderr and the host ends:"
        { tr -d '\r' </tmp/out | tail -n 30; tail -n 20 /tmp/err; cat /tmp/g2h.out /tmp/h2g.out 2>/dev/null; } |
            sed 's/^/BENCH-FAILED | /'
    fi
}

echo "BENCH-QEMU $(qemu-system-x86_64 --version | head -n1)"
# run() sets plain (global) variables: none of them may be $n or $v.
n=$FIRST
while [ $n -le $LAST ]; do
    for v in $VMMS; do run $v $n; done
    n=$((n + 1))
done
exit $failed
INNER

# complete I: run I has both transfers, guest and host side, from every VMM in $results.
complete() {
    local v
    for v in $vmms; do
        [[ $(grep -c "^BENCH $v $1 NETBENCH [gh]2[gh] " <<<"$results") == 2 &&
           $(grep -c "^BENCH $v $1 HOSTBENCH [gh]2[gh] " <<<"$results") == 2 ]] || return 1
    done
}

# progress: a line on stderr for each transfer.
progress() {
    while IFS=$' \t\r' read -r tag vmm_name run what dir nbytes secs _; do
        [[ $tag == BENCH && $what == NETBENCH && $dir == [gh]2[gh] ]] &&
            log "$vmm_name run $run: $dir $(awk -v b="$nbytes" -v s="$secs" 'BEGIN { printf "%.1f Mbit/s (%.1f MiB in %.2f s)", b * 8 / s / 1e6, b / 1048576, s }')"
    done
}

# attempt FIRST N: one nested host running runs FIRST..N; appends to $results, sets $status.
attempt() {
    { echo "FIRST=$1 LAST=$2 VMMS='$vmms' BYTES=$bytes LIMIT=$seconds VMTO=$vm_timeout"
      cat "$work/inner-body.sh"; } >"$work/inner.sh"
    log "booting the nested test host: runs $1..$2 of $vmms (timeout ${timeout}s)"
    bench_attempt "$1" progress
}

bench_attempts attempt complete
if ! grep -q '^BENCH [a-z]* [0-9]* NETBENCH [gh]2[gh] ' <<<"$results"; then
    bench_nested_failed "$work/console.1"
fi

awk -v size="$size" -v seconds="$seconds" '
function median(v, d, what,    i, j, t, n, a) {
    n = 0
    for (i = 1; i <= cnt[v, d]; i++) if ((v, d, i, what) in val) a[++n] = val[v, d, i, what]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    if (n == 0) return ""
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function fmt(x, d) { return (x == "") ? "-" : sprintf("%." d "f", x) }
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
function name(v) { return (v == "qemu") ? "QEMU" : v }
$1 == "BENCH-QEMU" { sub(/^BENCH-QEMU /, ""); qemu_version = $0; next }
$1 == "BENCH" && $4 == "NETBENCH-CLOCKSOURCE" { clock[$2] = $5; next }
$1 == "BENCH" && $4 == "NETBENCH-NIC" { nic[$2] = $5; gsub(/_/, " ", nic[$2]); next }
$1 == "BENCH" && $4 == "NETBENCH-PING" && NF == 7 {
    v = $2; pn[v]++; prun[v, pn[v]] = $3; pmin[v, pn[v]] = $5; pavg[v, pn[v]] = $6; pmax[v, pn[v]] = $7
    val[v, "ping", pn[v], "avg"] = $6; cnt[v, "ping"] = pn[v]; next
}
$1 == "BENCH" && ($4 == "NETBENCH" || $4 == "HOSTBENCH") {
    v = $2; r = $3; d = $5
    if (!((v, d, r) in idx)) { idx[v, d, r] = ++cnt[v, d]; run[v, d, cnt[v, d]] = r }
    k = idx[v, d, r]
    if ($4 == "NETBENCH") {
        val[v, d, k, "mbit"] = $6 * 8 / $7 / 1e6; val[v, d, k, "mib"] = $6 / 1048576; val[v, d, k, "s"] = $7
    } else if ($6 > 0 && $10 > 0) {
        cpu = $8 / $10
        val[v, d, k, "cpu"] = cpu; val[v, d, k, "cpumb"] = cpu * 1000 / ($6 / 1e6)
        val[v, d, k, "guest"] = ($8 > 0) ? 100 * $9 / $8 : 0
    }
}
function cell(v, d, k, what, dec) { return ((v, d, k, what) in val) ? sprintf("%." dec "f", val[v, d, k, what]) : "-" }
END {
    nd = split("g2h h2g", dirs, " "); label["g2h"] = "guest->host"; label["h2g"] = "host->guest"
    nv = split("kettle qemu", vs, " ")
    printf "TCP throughput over an emulated Tulip on a TAP interface (at most %d MiB or %d s each way),\n", size, seconds
    printf "256 MiB RAM, 1 vCPU, inside one nested test host (QEMU: %s, -enable-kvm -M pc)\n", qemu_version
    printf "guest NIC (Linux tulip driver): kettle %s, QEMU %s\n", \
        ("kettle" in nic) ? nic["kettle"] : "-", ("qemu" in nic) ? nic["qemu"] : "-"
    printf "guest clocksource: kettle %s, QEMU %s\n\n", \
        ("kettle" in clock) ? clock["kettle"] : "-", ("qemu" in clock) ? clock["qemu"] : "-"
    printf "%-7s %-4s %-12s %9s %9s %8s %8s %9s %9s\n", "VMM", "run", "direction", "Mbit/s", "MiB", "seconds", "VMM CPU", "ms/MB", "in guest"
    for (a = 1; a <= nv; a++) for (i = 1; i <= nd; i++) {
        v = vs[a]; d = dirs[i]
        for (k = 1; k <= cnt[v, d]; k++)
            printf "%-7s %-4s %-12s %9s %9s %8s %8s %9s %9s\n", name(v), run[v, d, k], label[d], \
                cell(v, d, k, "mbit", 2), cell(v, d, k, "mib", 1), cell(v, d, k, "s", 2), \
                cell(v, d, k, "cpu", 2), cell(v, d, k, "cpumb", 1), \
                (((v, d, k, "guest") in val) ? sprintf("%.0f%%", val[v, d, k, "guest"]) : "-")
    }
    printf "\n%-7s %-4s %28s\n", "VMM", "run", "ping RTT ms min/avg/max"
    for (a = 1; a <= nv; a++) for (k = 1; k <= pn[vs[a]]; k++)
        printf "%-7s %-4s %28s\n", name(vs[a]), prun[vs[a], k], pmin[vs[a], k] "/" pavg[vs[a], k] "/" pmax[vs[a], k]
    printf "\n%-12s %12s %12s %12s %14s %14s %12s\n", "direction", "kettle Mbit/s", "QEMU Mbit/s", "kettle/QEMU", \
        "kettle ms/MB", "QEMU ms/MB", "kettle/QEMU"
    for (i = 1; i <= nd; i++) {
        d = dirs[i]
        a = median("kettle", d, "mbit"); b = median("qemu", d, "mbit")
        c = median("kettle", d, "cpumb"); e = median("qemu", d, "cpumb")
        printf "%-12s %12s %12s %12s %14s %14s %12s\n", label[d], fmt(a, 2), fmt(b, 2), ratio(a, b), fmt(c, 1), fmt(e, 1), ratio(c, e)
    }
    a = median("kettle", "ping", "avg"); b = median("qemu", "ping", "avg")
    printf "%-12s %12s %12s %12s\n", "ping RTT ms", fmt(a, 3), fmt(b, 3), ratio(a, b)
    printf "(medians over the runs; Mbit/s: above 1 kettle is faster; ms/MB: VMM process CPU time, utime+stime,\n"
    printf "per 10^6 bytes moved, below 1 kettle is cheaper; \"in guest\": the share of it counted as guest time;\n"
    printf "ping RTT: average of 20 back-to-back pings guest->host before the transfers, below 1 kettle is faster)\n"
}' <<<"$results"

bench_finish
