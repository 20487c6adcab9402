#!/usr/bin/env bash
# bench-state.sh: save state and restore of kettle against QEMU/KVM (migration to a file and
# -incoming), side by side in one nested test host, beside a cold boot of the same guest.
#
# Usage: resources/bench-state.sh [--runs N] [--sizes MIB,...] [--kettle PATH]
#                                 [--timeout SECONDS] [--keep-log FILE]
#
# The guest: the Debian kernel `vmlinuz` and `guest-initrd.gz` from build-assets.sh, 1 vCPU,
# command line "console=ttyS0 quiet kettle.run=tick", whose test script /tests/tick.sh prints
# "TICK n" (n = 1, 2, ...) every 20 ms (busybox usleep) and otherwise idles: a mostly idle
# guest whose progress can be read off its console. For each guest size (default 256 MiB and
# 2 GiB) and each of N runs (default 3), inside ONE nested test host (resources/nested-host.sh:
# QEMU TCG emulating an AMD CPU with SVM, kvm-amd inside; see ../shared/TESTING.md), in this
# order:
#   kettle  cold boot    kettle run --kernel vmlinuz --initrd INITRD --memory SIZE --cpus 1
#                            --serial stdio --api-socket SOCK --cmdline CMDLINE
#           save         3 s after the first tick: kettle ctl SOCK save-state /tmp/k.kst
#                        (kettle pauses the VM, writes the file, and exits 0)
#           restore map  kettle run --restore /tmp/k.kst --restore-mode map --serial stdio
#                            --api-socket SOCK; then kettle ctl SOCK power-off
#           restore copy the same with --restore-mode copy
#   QEMU    cold boot    qemu-system-x86_64 -enable-kvm -M pc -cpu host -m SIZE -smp 1
#                            -nographic -nic none -monitor pipe:/tmp/qm
#                            -global migration.store-global-state=off -kernel vmlinuz
#                            -initrd INITRD -append CMDLINE
#           save, stop   3 s after the first tick, on the monitor (fifos /tmp/qm.in and
#                        /tmp/qm.out): stop, then migrate -d "exec:cat > /tmp/q.mig; touch
#                        /tmp/q.done" (what virsh save does: the equivalent of kettle's save,
#                        which pauses the VM for all of it); then info migrate (must say
#                        completed) and quit. max-bandwidth is raised to 100000 MiB/s first,
#                        as libvirt does for a save: QEMU's default of 128 MiB/s is meant for
#                        networks.
#           restore      the cold boot's command line plus -incoming "exec:cat /tmp/q.mig":
#                        the VM runs by itself once loaded (store-global-state=off: the file
#                        does not say the VM was stopped, which would keep it paused until a
#                        `cont` on the monitor)
#           save, live   3 s after the restored guest ticked again: the same migrate without
#                        stop (a live migration: the guest runs on while most of memory is
#                        sent; QEMU stops it for the last part), info migrate, quit
#           restore      of the live save, as above; then quit
# QEMU is this machine's qemu-system-x86_64 with its shared libraries and firmware, as in
# bench-boot.sh. The state files live in the nested host's /tmp (tmpfs) and are removed after
# their restores. The nested host gets 2048 MiB + twice the largest guest (--memory of
# nested-host.sh): a copy restore may fill all of a guest's RAM.
#
# Times, per run, every line of the VMMs' output being time-stamped by busybox `ts`
# (gettimeofday, microseconds) as it arrives through a pipe, the start being a line written
# just before the VMM is started:
#   cold boot     from the VMM's start to the first TICK line (the kernel's boot, /init, the
#                 test script's first line)
#   save          end to end: from just before `kettle ctl save-state` starts until it has
#                 exited (the answer comes once the file is complete: written, synced,
#                 renamed); for QEMU from just before the stop (or migrate) command is written
#                 to the monitor until /tmp/q.done exists (polled every 5 ms: QEMU has sent
#                 the whole stream and cat has written it). Also the VMMs' own figures:
#                 kettle's "millis" (the ms kettle ctl prints: how long the VM was held for the
#                 save, which is all of it), QEMU's "total time" of `info migrate`; and how long
#                 the VM was stopped: kettle's "millis", all of QEMU's stop save, the
#                 "downtime" of QEMU's live save.
#   file size     apparent (wc -c) and allocated (du -k) size of the state file. kettle's is
#                 sparse: guest RAM at its own offsets, zero pages left as holes; QEMU's stream
#                 sends zero pages as a flag.
#   restore       from the VMM's start to the first TICK line numbered above the last TICK
#                 printed before the save: the guest is running again. A VMM's cold boot
#                 and its restores bring up the same guest, so "restore/cold boot" says how
#                 much of a boot a restore saves.
# The table shows each run, then per guest size the medians and the ratios kettle/QEMU of the
# medians (below 1: kettle is faster, its file smaller) against each QEMU save, and restore/cold
# boot for each VMM; kettle's two restore modes are each compared with QEMU's restores. Note
# that QEMU's live save is of a restored VM, kettle's save and QEMU's stop save are of
# cold-booted ones. Absolute times mean little here (KVM nested in TCG, where a serial line
# costs milliseconds, and whatever else the machine runs slows some runs); compare ratios.
#
# Prints progress on stderr and the results on stdout; exit status 0 when every boot, save
# and restore worked (the guest ticked again after every restore, every VMM exited 0), 1
# otherwise (the numbers are printed anyway; the failing runs' output and stderr go to
# stderr), 2 for a usage error. It is a benchmark, not a test: it fails on broken runs, never
# on slow ones.
#
# Options:
#   --runs N            cycles (cold boot, save, restores) per VMM and guest size (default 3)
#   --sizes MIB,...     guest sizes in MiB (default 256,2048)
#   --kettle PATH       benchmark this kettle binary (default: build target/release/kettle
#                       with cargo build --release -p vmm)
#   --timeout SECONDS   bound on the nested host (default: 240 + 300 per run and size)
#   --keep-log FILE     also write the nested host's console to FILE
#   -h, --help          this text
#
# Needs what nested-host.sh needs (resources/setup.sh installs it); builds kettle (unless
# --kettle) and the guest assets first. Takes ~8 min for N=1 and the default sizes, ~25 min
# for N=3.
set -euo pipefail

# shellcheck source=bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" bench-state \
    "[--runs N] [--sizes MIB,...] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE] [--help]"

# state_option OPTION VALUE...: --sizes (the other options are bench_parse_args's).
state_option() {
    case $1 in
        --sizes) [[ ${2:-} =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || usage_error "--sizes needs MiB values separated by commas, e.g. 256,2048"; sizes=$2 ;;
        *) return 1 ;;
    esac
}

sizes="256,2048"
bench_parse_args state_option "$@"
sizes=${sizes//,/ }
nsizes=0 largest=0
for s in $sizes; do
    (( s >= 64 && s <= 16384 )) || usage_error "--sizes: $s MiB is out of range (64-16384)"
    nsizes=$((nsizes + 1))
    if (( s > largest )); then largest=$s; fi
done
[[ -n $timeout ]] || timeout=$((240 + 300 * runs * nsizes))
host_memory=$((2048 + 2 * largest))

bench_find_qemu
bench_prepare
bench_workdir kettle-bench

# The guest initramfs plus the test script.
mkdir -p "$work/extra/tests"
cat >"$work/extra/tests/tick.sh" <<'TICK'
i=0
while :; do
    i=$((i + 1))
    echo "TICK $i"
    usleep 20000
done
TICK
chmod 755 "$work/extra/tests/"*.sh
bench_initrd tests
bench_adds

cat >"$work/inner.sh" <<INNER
RUNS=$runs
SIZES="$sizes"
INNER
cat >>"$work/inner.sh" <<'INNER'
# Run by resources/bench-state.sh inside the nested test host (busybox sh).
INITRD=/guest/bench-initrd
CMDLINE="console=ttyS0 quiet kettle.run=tick"
SOCK=/tmp/k.sock
TICK_SECS=3
failed=0

# last_tick FILE: the highest TICK number in FILE (0 if none).
last_tick() {
    tr -d '\r' <"$1" | awk '$2 == "TICK" && $3 + 0 > m { m = $3 + 0 } END { print m + 0 }'
}

# wait_tick FILE MIN SECONDS: waits until FILE has a TICK line numbered above MIN (status 0),
# the VMM has ended (BENCH-END; status 1) or SECONDS have passed (status 1). It polls only
# 4 times a second, to take little CPU from the VMM being timed: the times come from ts.
wait_tick() {
    n=0
    while [ $n -lt $(($3 * 4)) ]; do
        tr -d '\r' <"$1" | awk -v m="$2" '$2 == "TICK" && $3 + 0 > m { f = 1; exit } END { exit !f }' && return 0
        grep -q '^[0-9.]* BENCH-END ' "$1" && return 1
        sleep 0.25
        n=$((n + 1))
    done
    return 1
}

# elapsed FILE: seconds from BENCH-START to the first TICK line numbered above $2, or "-".
elapsed() {
    tr -d '\r' <"$1" | awk -v m="$2" '
        $2 == "BENCH-START" { s = $1 }
        $2 == "TICK" && $3 + 0 > m && !t { t = $1 }
        END { if (s && t) printf "%.3f\n", t - s; else print "-" }'
}

# vmm_end STATUS: the line after a VMM's output. The guest may have been stopped in the middle of
# a line (a save): end that line first.
vmm_end() {
    echo
    echo "BENCH-END $1"
}

# end_status FILE: the VMM's exit status from BENCH-END, or "-".
end_status() {
    tr -d '\r' <"$1" | awk '$2 == "BENCH-END" { st = $3 } END { print (st == "") ? "-" : st }'
}

# fail WHAT FILE...: marks the benchmark failed and shows the tails of the files.
fail() {
    failed=1
    echo "BENCH-FAILED $1"
    shift
    for f in "$@"; do
        [ -e "$f" ] || continue
        echo "--- $f (tail)"
        tr -d '\r' <"$f" | tail -n 20
    done
}

# file_sizes FILE: apparent bytes and allocated KiB.
file_sizes() {
    echo "$(wc -c <"$1") $(du -k "$1" | cut -f1)"
}

# kettle_stop: powers the kettle VM off through its API socket; kills it if that fails.
kettle_stop() {
    if ! kettle ctl $SOCK power-off >/tmp/ctl.out 2>&1; then
        cat /tmp/ctl.out
        pid=$(pidof kettle)
        [ -n "$pid" ] && kill $pid
    fi
}

# kettle_cycle SIZE RUN: cold boot, save, restore map, restore copy.
kettle_cycle() {
    m=$1 i=$2 st=/tmp/k.kst
    out=/tmp/out.kettle.boot.$m.$i err=/tmp/err.kettle.boot.$m.$i
    rm -f $SOCK $st
    { echo "BENCH-START"; timeout 600 kettle run --kernel "$GUEST_KERNEL" --initrd $INITRD --memory ${m}M --cpus 1 \
        --serial stdio --api-socket $SOCK --cmdline "$CMDLINE" </dev/null 2>$err; vmm_end "$?"; } |
        ts %.s >$out &
    job=$!
    if ! wait_tick $out 0 300; then
        fail "kettle $m MiB run $i: cold boot: no TICK" $out $err
        kettle_stop; wait $job
        return
    fi
    echo "BENCH-BOOT kettle $m $i $(elapsed $out 0)"
    sleep $TICK_SECS
    # The cost of kettle ctl itself (a process start and one API request): part of the save's
    # end-to-end time.
    { echo "CTL-START"; kettle ctl $SOCK status >/dev/null 2>&1; echo "CTL-END $?"; } | ts %.s >/tmp/ctl.time
    echo "BENCH-CTL $m $i $(awk '$2 == "CTL-START" { s = $1 } $2 == "CTL-END" { e = $1; st = $3 }
        END { if (st == 0) printf "%.3f", e - s; else print "-" }' /tmp/ctl.time)"
    save=/tmp/save.kettle.$m.$i
    { echo "SAVE-START"; kettle ctl $SOCK save-state $st 2>&1; echo "SAVE-END $?"; } | ts %.s >$save
    wait $job
    last=$(last_tick $out)
    ok=1
    grep -q '^[0-9.]* SAVE-END 0' $save || ok=0
    [ "$(end_status $out)" = 0 ] || ok=0
    [ -f $st ] || ok=0
    if [ $ok = 0 ]; then
        fail "kettle $m MiB run $i: save (kettle ctl, then kettle's exit status $(end_status $out))" $save $out $err
        rm -f $st
        return
    fi
    # "saved the VM to PATH (B bytes in M ms); the VM has stopped"
    own=$(tr -d '\r' <$save | sed -n 's/.*bytes in \([0-9.]*\) ms).*/\1/p' | head -n1)
    wall=$(tr -d '\r' <$save | awk '$2 == "SAVE-START" { s = $1 } $2 == "SAVE-END" { e = $1 } END { printf "%.3f", e - s }')
    [ -s $err ] && sed "s/^/kettle-stderr $m $i boot: /" $err
    echo "BENCH-SAVE kettle $m $i $wall ${own:--} ${own:--} $(file_sizes $st) $last"
    for mode in map copy; do
        out=/tmp/out.kettle.$mode.$m.$i err=/tmp/err.kettle.$mode.$m.$i
        rm -f $SOCK
        { echo "BENCH-START"; timeout 600 kettle run --restore $st --restore-mode $mode --serial stdio \
            --api-socket $SOCK </dev/null 2>$err; vmm_end "$?"; } | ts %.s >$out &
        job=$!
        if wait_tick $out "$last" 300; then
            t=$(elapsed $out "$last")
            sleep 0.5
            kettle_stop
            wait $job
            echo "BENCH-RESTORE kettle-$mode $m $i $t $(end_status $out)"
            [ -s $err ] && sed "s/^/kettle-stderr $m $i $mode: /" $err
            [ "$(end_status $out)" = 0 ] || fail "kettle $m MiB run $i: restore $mode: exit status $(end_status $out) after power-off" $out $err
        else
            kettle_stop
            wait $job
            echo "BENCH-RESTORE kettle-$mode $m $i - $(end_status $out)"
            fail "kettle $m MiB run $i: restore $mode: no TICK above $last (the last before the save)" $out $err
        fi
    done
    rm -f $st
}

# qemu_start SIZE OUT ERR [ARGS...]: starts QEMU in the background (pipeline's pid in $job)
# with its monitor on the fifos /tmp/qm.in (our fd 3) and /tmp/qm.out (copied to /tmp/qm.log
# by a cat whose pid is in $mon).
qemu_start() {
    m=$1 out=$2 err=$3
    shift 3
    rm -f /tmp/qm.in /tmp/qm.out /tmp/qm.log
    mkfifo /tmp/qm.in /tmp/qm.out
    { echo "BENCH-START"; timeout 600 qemu-system-x86_64 -enable-kvm -M pc -cpu host -m $m -smp 1 -nographic -nic none \
        -monitor pipe:/tmp/qm -global migration.store-global-state=off -kernel "$GUEST_KERNEL" -initrd $INITRD -append "$CMDLINE" "$@" </dev/null 2>$err
      vmm_end "$?"; } | ts %.s >$out &
    job=$!
    # Read-write opens of fifos do not block, whether QEMU has opened its ends yet or not.
    exec 3<>/tmp/qm.in
    exec 4<>/tmp/qm.out
    cat <&4 >/tmp/qm.log &
    mon=$!
    exec 4<&-
}

# qemu_stop: quit on the monitor (kill QEMU if it has not ended 10 s later), wait for it.
qemu_stop() {
    echo "quit" >&3
    n=0
    while ! grep -q '^[0-9.]* BENCH-END ' $out && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
    if ! grep -q '^[0-9.]* BENCH-END ' $out; then
        pid=$(pidof qemu-system-x86_64)
        [ -n "$pid" ] && kill $pid
    fi
    wait $job
    kill $mon 2>/dev/null
    wait $mon 2>/dev/null
    exec 3>&-
}

# monitor_wait PATTERN SECONDS: waits until /tmp/qm.log matches PATTERN.
monitor_wait() {
    n=0
    while ! tr -d '\r' </tmp/qm.log | grep -q "$1"; do
        [ $n -ge $(($2 * 10)) ] && return 1
        sleep 0.1
        n=$((n + 1))
    done
}

# qemu_save KIND SIZE RUN: saves the running QEMU VM (the one qemu_start started last) to
# /tmp/q.mig, KIND "stop" (stop, then migrate: what virsh save does) or "live" (migrate while
# it runs), and quits QEMU. Prints BENCH-SAVE; status 0 when the save worked. $last is then the
# last TICK before the save.
qemu_save() {
    kind=$1 m=$2 i=$3 st=/tmp/q.mig
    vout=$out verr=$err
    rm -f $st /tmp/q.done
    echo "migrate_set_parameter max-bandwidth 100000" >&3
    echo "info migrate_parameters" >&3
    sleep $TICK_SECS
    save=/tmp/save.qemu-$kind.$m.$i
    { echo "SAVE-START"
      [ $kind = stop ] && echo "stop" >&3
      echo "migrate -d \"exec:cat > $st; touch /tmp/q.done\"" >&3
      n=0
      while [ ! -e /tmp/q.done ] && [ $n -lt 60000 ]; do usleep 5000; n=$((n + 1)); done
      echo "SAVE-END"; } | ts %.s >$save
    echo "info migrate" >&3
    monitor_wait 'Migration status: [a-z]*' 30
    mstat=$(tr -d '\r' </tmp/qm.log | sed -n 's/.*Migration status: \([a-z-]*\).*/\1/p' | tail -n1)
    total=$(tr -d '\r' </tmp/qm.log | sed -n 's/^total time: \([0-9]*\) ms.*/\1/p' | tail -n1)
    down=$(tr -d '\r' </tmp/qm.log | sed -n 's/^downtime: \([0-9]*\) ms.*/\1/p' | tail -n1)
    # QEMU's statistics, for the console log (--keep-log); the lines echoing our input are
    # full of escape sequences.
    tr -d '\r' </tmp/qm.log | grep -v "$(printf '\033')" | grep -v '^(qemu)' | sed "s/^/qemu-monitor $kind $m $i: /"
    qemu_stop
    last=$(last_tick $vout)
    if [ "$mstat" != completed ] || [ ! -e /tmp/q.done ] || [ "$(end_status $vout)" != 0 ]; then
        fail "QEMU $m MiB run $i: $kind save (migration status '${mstat:-none}', QEMU's exit status $(end_status $vout))" \
            $save $vout $verr /tmp/qm.log
        rm -f $st
        return 1
    fi
    wall=$(awk '$2 == "SAVE-START" { s = $1 } $2 == "SAVE-END" { e = $1 } END { printf "%.3f", e - s }' $save)
    # Stopped first, the VM stays stopped from then on: all of the save.
    [ $kind = stop ] && down=$(awk -v w=$wall 'BEGIN { printf "%.0f", w * 1000 }')
    echo "BENCH-SAVE qemu-$kind $m $i $wall ${total:--} ${down:--} $(file_sizes $st) $last"
}

# qemu_restore KIND SIZE RUN: starts QEMU on /tmp/q.mig (saved by qemu_save KIND) and waits
# for a TICK above $last. Prints BENCH-RESTORE; status 0 when the guest ticked again. Leaves
# the VM running.
qemu_restore() {
    kind=$1 m=$2 i=$3
    qemu_start $m /tmp/out.qemu-$kind.restore.$m.$i /tmp/err.qemu-$kind.restore.$m.$i -incoming "exec:cat /tmp/q.mig"
    if wait_tick $out "$last" 300; then
        echo "BENCH-RESTORE qemu-$kind $m $i $(elapsed $out "$last") -"
        return 0
    fi
    echo "BENCH-RESTORE qemu-$kind $m $i - $(end_status $out)"
    fail "QEMU $m MiB run $i: restore of the $kind save: no TICK above $last (the last before the save)" $out $err /tmp/qm.log
    return 1
}

# qemu_cycle SIZE RUN: cold boot, save after stop, restore, save live (of the restored VM),
# restore, quit.
qemu_cycle() {
    m=$1 i=$2
    qemu_start $m /tmp/out.qemu.boot.$m.$i /tmp/err.qemu.boot.$m.$i
    if ! wait_tick $out 0 300; then
        fail "QEMU $m MiB run $i: cold boot: no TICK" $out $err /tmp/qm.log
        qemu_stop
        return
    fi
    echo "BENCH-BOOT qemu $m $i $(elapsed $out 0)"
    for kind in stop live; do
        qemu_save $kind $m $i || return
        if ! qemu_restore $kind $m $i; then
            qemu_stop
            rm -f /tmp/q.mig
            return
        fi
        rm -f /tmp/q.mig
    done
    sleep 0.5
    qemu_stop
    [ "$(end_status $out)" = 0 ] || fail "QEMU $m MiB run $i: exit status $(end_status $out) after quit" $out $err
}

echo "BENCH-QEMU $(qemu-system-x86_64 --version | head -n1)"
for m in $SIZES; do
    i=1
    while [ $i -le $RUNS ]; do
        kettle_cycle $m $i
        qemu_cycle $m $i
        i=$((i + 1))
    done
done
exit $failed
INNER

# progress: a line on stderr for each boot, save, restore and failure.
progress() {
    while IFS=$' \t\r' read -r tag a b c d e f g h rest; do
        case $tag in
            BENCH-BOOT) log "$a $b MiB run $c: cold boot to the first tick $d s" ;;
            BENCH-SAVE) log "$a $b MiB run $c: save $d s (own $e ms, VM stopped $f ms), file $g bytes ($h KiB allocated)" ;;
            BENCH-RESTORE) if [[ $e == - ]]; then log "$a $b MiB run $c: restore to a new tick $d s"
                           else log "$a $b MiB run $c: restore to a new tick $d s, exit status $e"; fi ;;
            BENCH-CTL) log "kettle $a MiB run $b: kettle ctl status took $c s" ;;
            BENCH-FAILED) log "FAILED: $a $b $c $d $e $f $g $h $rest" ;;
        esac
    done
}

log "booting the nested test host (${host_memory} MiB): guest sizes ${sizes// /, } MiB, $runs cycle(s) per VMM and size, then the report (timeout ${timeout}s)"
bench_nested_once progress --memory "$host_memory"
if [[ $status != 0 ]]; then
    # What failed runs printed (the script's output without the result lines).
    bench_script_output "$work/console" |
        grep -a -v -e '^BENCH-BOOT' -e '^BENCH-SAVE' -e '^BENCH-RESTORE' -e '^BENCH-QEMU' \
                   -e '^qemu-monitor ' -e '^kettle-stderr ' -e '^BENCH-CTL' -e '^NESTED-SCRIPT-' >&2 || true
    if ! grep -q -e '^BENCH-BOOT' -e '^BENCH-SAVE' -e '^BENCH-RESTORE' <<<"$results"; then
        bench_nested_failed "$work/console"
    fi
fi

awk -v sizes="$sizes" '
# med(KEY): the median of the numeric values v[KEY, 1..n[KEY]] ("-" skipped), or "".
function med(key,    i, j, t, m, s) {
    m = 0
    for (i = 1; i <= n[key]; i++) if (v[key, i] != "-") s[++m] = v[key, i] + 0
    for (i = 2; i <= m; i++) for (j = i; j > 1 && s[j-1] > s[j]; j--) { t = s[j]; s[j] = s[j-1]; s[j-1] = t }
    if (!m) return ""
    return (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
}
function add(key, x) { v[key, ++n[key]] = x }
function fmt(x, d) { return (x == "" || x == "-") ? "-" : sprintf("%." d "f", x) }
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
function mib(bytes) { return (bytes == "" || bytes == "-") ? "" : bytes / 1048576 }
# row(LABEL, KETTLE, QEMU-STOP, QEMU-LIVE, DECIMALS): one line of the summary.
function row(label, k, qs, ql, d) {
    printf "  %-30s %9s %11s %11s %9s %9s\n", label, fmt(k, d), fmt(qs, d), fmt(ql, d), ratio(k, qs), ratio(k, ql)
}
function get(arr, key) { return (key in arr) ? arr[key] : "-" }
$1 == "BENCH-QEMU" { sub(/^BENCH-QEMU /, ""); qemu_version = $0 }
# BENCH-BOOT VMM SIZE RUN SECONDS
$1 == "BENCH-BOOT" { add("boot" SUBSEP $2 SUBSEP $3, $5); boot[$2, $3, $4] = $5 }
# BENCH-SAVE KIND SIZE RUN WALL_S OWN_MS STOPPED_MS BYTES ALLOC_KIB LAST_TICK
$1 == "BENCH-SAVE" {
    add("save" SUBSEP $2 SUBSEP $3, $5); add("own" SUBSEP $2 SUBSEP $3, $6)
    add("stopped" SUBSEP $2 SUBSEP $3, $7); add("bytes" SUBSEP $2 SUBSEP $3, $8)
    add("alloc" SUBSEP $2 SUBSEP $3, $9 * 1024)
    save[$2, $3, $4] = $5; own[$2, $3, $4] = $6; stopped[$2, $3, $4] = $7
    bytes[$2, $3, $4] = $8; alloc[$2, $3, $4] = $9 * 1024
}
# BENCH-RESTORE KIND SIZE RUN SECONDS STATUS
$1 == "BENCH-RESTORE" { add("restore" SUBSEP $2 SUBSEP $3, $5); restore[$2, $3, $4] = $5 }
# BENCH-CTL SIZE RUN SECONDS
$1 == "BENCH-CTL" { add("ctl" SUBSEP $2, $4) }
$1 == "BENCH-FAILED" { failures++ }
END {
    printf "Save state and restore against cold boot, kettle and QEMU, inside one nested test host\n"
    printf "(guest: the same kernel + initramfs, 1 vCPU, idle but for a console line every 20 ms;\n"
    printf "QEMU: %s,\n", qemu_version
    printf "-enable-kvm -M pc -cpu host, saving by migration to a file through exec:cat: \"stop\" = stop,\n"
    printf "then migrate (as virsh save does), \"live\" = migrate while the guest runs; restoring with\n"
    printf "-incoming)\n"
    ns = split(sizes, sz, " ")
    kinds = 3; kind[1] = "kettle"; kind[2] = "qemu-stop"; kind[3] = "qemu-live"
    label["kettle"] = "kettle"; label["qemu-stop"] = "QEMU stop"; label["qemu-live"] = "QEMU live"
    printf "\nPer run: seconds, except the VMM'"'"'s own save time and the time the VM was stopped (ms), and\n"
    printf "the state file'"'"'s size, apparent and allocated (MiB). Restore: kettle'"'"'s map mode, QEMU -incoming.\n"
    printf "%-10s %6s %3s %8s %8s %7s %7s %8s %8s %8s %8s\n", "VMM", "guest", "run", "boot", "save",
        "own", "stopped", "file", "alloc", "restore", "copy"
    for (z = 1; z <= ns; z++) {
        m = sz[z]
        for (i = 1; i <= 1000; i++) {
            if (!(("kettle", m, i) in boot) && !(("qemu", m, i) in boot)) break
            for (k = 1; k <= kinds; k++) {
                kd = kind[k]
                if (kd == "kettle") { b = get(boot, "kettle" SUBSEP m SUBSEP i); r = get(restore, "kettle-map" SUBSEP m SUBSEP i) }
                else { b = (kd == "qemu-stop") ? get(boot, "qemu" SUBSEP m SUBSEP i) : ""; r = get(restore, kd SUBSEP m SUBSEP i) }
                printf "%-10s %6s %3d %8s %8s %7s %7s %8s %8s %8s %8s\n", label[kd], m "M", i, b,
                    get(save, kd SUBSEP m SUBSEP i), get(own, kd SUBSEP m SUBSEP i),
                    get(stopped, kd SUBSEP m SUBSEP i), fmt(mib(get(bytes, kd SUBSEP m SUBSEP i)), 1),
                    fmt(mib(get(alloc, kd SUBSEP m SUBSEP i)), 1), r,
                    (kd == "kettle") ? get(restore, "kettle-copy" SUBSEP m SUBSEP i) : ""
            }
        }
    }
    for (z = 1; z <= ns; z++) {
        m = sz[z]
        gl = (m % 1024 == 0) ? (m / 1024) " GiB" : m " MiB"
        printf "\n%-32s %9s %11s %11s %9s %9s\n", gl " guest, medians", "kettle", "QEMU stop", "QEMU live",
            "k/Q stop", "k/Q live"
        kb = med("boot" SUBSEP "kettle" SUBSEP m); qb = med("boot" SUBSEP "qemu" SUBSEP m)
        row("cold boot to first tick (s)", kb, qb, qb, 3)
        for (w = 1; w <= 5; w++) {
            split("save own stopped bytes alloc", what, " ")
            split("save, end to end (s)|save, VMM'"'"'s own time (ms)|VM stopped for the save (ms)|state file, apparent (MiB)|state file, allocated (MiB)", wl, "|")
            x = what[w]
            a = med(x SUBSEP "kettle" SUBSEP m); b = med(x SUBSEP "qemu-stop" SUBSEP m); c = med(x SUBSEP "qemu-live" SUBSEP m)
            if (x == "bytes" || x == "alloc") { a = mib(a); b = mib(b); c = mib(c) }
            row(wl[w], a, b, c, (x == "save") ? 3 : (x == "bytes" || x == "alloc") ? 1 : 0)
        }
        printf "  %-30s %9s\n", "kettle ctl status (s)", fmt(med("ctl" SUBSEP m), 3)
        km = med("restore" SUBSEP "kettle-map" SUBSEP m); kc = med("restore" SUBSEP "kettle-copy" SUBSEP m)
        qs = med("restore" SUBSEP "qemu-stop" SUBSEP m); ql = med("restore" SUBSEP "qemu-live" SUBSEP m)
        row("restore to running, map (s)", km, qs, ql, 3)
        row("restore to running, copy (s)", kc, qs, ql, 3)
        printf "  %-30s %9s %11s %11s\n", "restore map / cold boot", ratio(km, kb), ratio(qs, qb), ratio(ql, qb)
        printf "  %-30s %9s %11s %11s\n", "restore copy / cold boot", ratio(kc, kb), ratio(qs, qb), ratio(ql, qb)
    }
    printf "\nk/Q: kettle/QEMU (below 1: kettle is faster, its file smaller). kettle ctl status: one request\n"
    printf "through kettle ctl, end to end (a process start and a round trip), part of the save'"'"'s end to\n"
    printf "end time; QEMU'"'"'s commands go to its monitor through a fifo. The two restore rows compare\n"
    printf "kettle'"'"'s map and copy modes with the same QEMU restores. Own time: kettle'"'"'s \"millis\" (the\n"
    printf "VM is paused for all of it), QEMU'"'"'s \"total time\" of info migrate. Stopped: kettle'"'"'s \"millis\";\n"
    printf "QEMU stop: the whole save; QEMU live: the \"downtime\" of info migrate. QEMU live saves the VM\n"
    printf "restored from the stop save. Restore to running: from the VMM'"'"'s start to the first console line\n"
    printf "the guest prints after the last one it printed before the save.\n"
    if (failures) printf "\n%d step(s) FAILED (see stderr); their numbers are missing above.\n", failures
}' <<<"$results"

bench_finish
