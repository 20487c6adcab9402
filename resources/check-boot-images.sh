#!/usr/bin/env bash
# check-boot-images.sh: boots every image of resources/build-boot-images.sh in QEMU
# (TCG, SeaBIOS) and checks that Linux reaches the guest initramfs through each boot
# loader, and that kernel parameters from the boot loader's configuration reach it.
#
# Usage: resources/check-boot-images.sh [--timeout SECONDS] [--jobs N] [--logs DIR] [--help]
#
# Builds (or takes from the cache) the standard images and a second set built with
# --cmdline "console=ttyS0 kettle.run=boot-check kettle.boot_check=yes" and an
# initramfs with /tests/boot-check.sh appended (it prints "BOOT-CHECK <value of
# kettle.boot_check>" and exits 0 when the value is "yes"), then boots each with
#   qemu-system-x86_64 -machine pc,accel=tcg -m 256 -nographic -serial stdio
#       -monitor none -no-reboot -nic none
#       -drive file=IMAGE,format=vpc|raw,if=ide,snapshot=on   (disks)
#       -cdrom IMAGE -boot d                                   (the ISO)
# and watches COM1 for:
#   standard images   the boot loader's own line (SYSLINUX's or ISOLINUX's banner,
#                     GRUB's "GRUB: linux /vmlinuz") and KETTLE-GUEST-READY; demo.vhd
#                     also the shell prompt "kettle# "; then QEMU is stopped
#   boot-check set    KETTLE-GUEST-READY, "BOOT-CHECK yes", "KETTLE-TEST-EXIT 0" and
#                     QEMU exiting 0 by itself (the guest powered off)
# It also checks the VHDs with qemu-img info (format vpc, dynamic; qemu-img check
# does not support vpc) and, when installed, vhdiinfo, and that grub.img and
# grub.vhd hold the same disk (qemu-img compare).
#
# Prints one line per check with the time from QEMU's start to KETTLE-GUEST-READY
# (polled every 0.2 s), and the tail of the console of a failed boot.
#
# Options:
#   --timeout SECONDS  bound on each boot (default 240)
#   --jobs N           boots run at once (default 1: parallel boots share the CPUs
#                      and make each time-to-ready longer)
#   --logs DIR         keep the consoles as DIR/NAME.log (default: a temporary
#                      directory, removed at the end)
#   -h, --help         this text
#
# Environment: KETTLE_CACHE (see build-assets.sh).
#
# Exit status: 0 when every check passed; 1 when one failed (a boot that timed out
# is a failure, not retried); 2 for a usage error.
set -euo pipefail

CB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CB_CMDLINE_RUN="console=ttyS0 kettle.run=boot-check kettle.boot_check=yes"
CB_MEMORY=256

cb_log() { echo "check-boot-images: $*" >&2; }
cb_die() { echo "check-boot-images: error: $*" >&2; exit 1; }
cb_usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
cb_usage_error() {
    echo "check-boot-images: $*" >&2
    echo "usage: resources/check-boot-images.sh [--timeout SECONDS] [--jobs N] [--logs DIR] [--help]" >&2
    exit 2
}

# cb_now_ms: milliseconds since the epoch.
cb_now_ms() { echo $(($(date +%s%N) / 1000000)); }

# cb_boot_check_initrd GUEST_INITRD OUT: GUEST_INITRD with /tests/boot-check.sh
# appended as a second archive, built reproducibly (the same bytes every time, so
# build-boot-images.sh's cache answers the second run).
cb_boot_check_initrd() {
    local base=$1 out=$2 tree
    tree=$(mktemp -d "${TMPDIR:-/tmp}/kettle-boot-check.XXXXXX")
    mkdir -p "$tree/tests"
    cat >"$tree/tests/boot-check.sh" <<'TEST'
#!/bin/sh
# resources/check-boot-images.sh: did the boot loader's kernel parameters arrive?
value=
for arg in $(cat /proc/cmdline); do
    case $arg in
        kettle.boot_check=*) value=${arg#kettle.boot_check=} ;;
    esac
done
echo "BOOT-CHECK $value"
[ "$value" = yes ]
TEST
    chmod 755 "$tree/tests" "$tree/tests/boot-check.sh"
    touch -h -d @0 "$tree/tests" "$tree/tests/boot-check.sh"
    (cd "$tree" && printf '%s\n' tests tests/boot-check.sh |
        cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -9n >"$tree/extra.cpio.gz"
    cat "$base" "$tree/extra.cpio.gz" >"$out.tmp"
    if cmp -s "$out.tmp" "$out" 2>/dev/null; then rm -f "$out.tmp"; else mv -f "$out.tmp" "$out"; fi
    rm -rf "$tree"
}

# cb_boot NAME MODE TIMEOUT LOGDIR EXPECT... -- QEMU-ARGS...: boots and writes
# LOGDIR/NAME.result ("ok SECONDS" or "fail REASON"). MODE "ready": stop QEMU once
# every EXPECT string is on the console; MODE "run": QEMU must exit 0 by itself
# with every EXPECT string on the console.
cb_boot() {
    local name=$1 mode=$2 timeout=$3 logs=$4
    shift 4
    local -a expect=()
    while [[ $1 != -- ]]; do expect+=("$1"); shift; done
    shift
    local log="$logs/$name.log" result="$logs/$name.result"
    # shellcheck disable=SC2054 # commas inside QEMU's option values
    local -a qemu=(qemu-system-x86_64 -machine pc,accel=tcg -m "$CB_MEMORY" -nographic
                   -serial stdio -monitor none -no-reboot -nic none "$@")
    echo "${qemu[*]}" >"$logs/$name.cmd"
    local t0 now ready="" pid status e all
    t0=$(cb_now_ms)
    "${qemu[@]}" </dev/null >"$log" 2>&1 &
    pid=$!
    while :; do
        now=$(cb_now_ms)
        if [[ -z $ready ]] && grep -q KETTLE-GUEST-READY "$log"; then
            ready=$(((now - t0) / 1000)).$(printf '%03d' $(((now - t0) % 1000)) | cut -c1)
        fi
        all=1
        for e in "${expect[@]}"; do grep -qF -- "$e" "$log" || { all=0; break; }; done
        if ! kill -0 "$pid" 2>/dev/null; then
            status=0
            wait "$pid" || status=$?
            if [[ $mode == run && $status == 0 ]]; then
                # The console may have been written after the last look.
                all=1
                for e in "${expect[@]}"; do grep -qF -- "$e" "$log" || { all=0; break; }; done
                if [[ $all == 1 ]]; then echo "ok $ready" >"$result"; return 0; fi
                echo "fail QEMU exited (status 0) without '$e' on the console" >"$result"; return 0
            fi
            echo "fail QEMU exited with status $status before the check ended" >"$result"
            return 0
        fi
        if [[ $mode == ready && $all == 1 ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            echo "ok $ready" >"$result"
            return 0
        fi
        if ((now - t0 > timeout * 1000)); then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            if [[ $all == 1 ]]; then
                echo "fail timed out after ${timeout} s waiting for QEMU to exit (the guest to power off)" >"$result"
            else
                echo "fail timed out after ${timeout} s waiting for '$e'" >"$result"
            fi
            return 0
        fi
        sleep 0.2
    done
}

# cb_vhd_info VHD: qemu-img info says vpc with a size, and vhdiinfo (when there)
# reads a dynamic disk of the same size. Prints what it saw.
cb_vhd_info() {
    local vhd=$1 info size
    info=$(qemu-img info --output=json "$vhd") || { echo "qemu-img info failed"; return 1; }
    grep -q '"format": "vpc"' <<<"$info" || { echo "qemu-img info: not vpc"; return 1; }
    size=$(sed -n 's/^ *"virtual-size": *\([0-9]*\).*/\1/p' <<<"$info")
    [[ ${size:-0} -gt 0 ]] || { echo "qemu-img info: no virtual size"; return 1; }
    printf 'qemu-img info: vpc, %s bytes' "$size"
    if command -v vhdiinfo >/dev/null 2>&1; then
        info=$(vhdiinfo "$vhd" 2>&1) || { echo "; vhdiinfo failed: $info"; return 1; }
        grep -q 'Disk type.*Dynamic' <<<"$info" || { echo "; vhdiinfo: not a dynamic disk"; return 1; }
        grep -q "($size bytes)" <<<"$info" || { echo "; vhdiinfo: another size"; return 1; }
        printf '; vhdiinfo: dynamic, the same size'
    fi
    echo
}

cb_main() {
    local timeout=240 jobs logs="" keep=0
    jobs=1
    while [[ $# -gt 0 ]]; do
        case $1 in
            --timeout) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || cb_usage_error "--timeout needs SECONDS"; timeout=$2; shift ;;
            --jobs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || cb_usage_error "--jobs needs a number"; jobs=$2; shift ;;
            --logs) [[ $# -ge 2 ]] || cb_usage_error "--logs needs a DIR"; logs=$2; keep=1; shift ;;
            -h|--help) cb_usage; exit 0 ;;
            *) cb_usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    command -v qemu-system-x86_64 >/dev/null 2>&1 ||
        cb_die "qemu-system-x86_64 is missing (apt-get install qemu-system-x86, or run resources/setup.sh)"

    local std run assets
    std=$("$CB_DIR/build-boot-images.sh" --quiet) || cb_die "resources/build-boot-images.sh failed (see above)"
    assets=$(dirname "$(head -n1 <<<"$std")")
    local cache="${KETTLE_CACHE:-${HOME:-/tmp}/.cache/kettle}"
    mkdir -p "$cache/boot-check"
    cb_boot_check_initrd "$assets/guest-initrd.gz" "$cache/boot-check/initrd.gz"
    run=$("$CB_DIR/build-boot-images.sh" --quiet --cmdline "$CB_CMDLINE_RUN" \
            --initrd "$cache/boot-check/initrd.gz") ||
        cb_die "resources/build-boot-images.sh --cmdline ... failed (see above)"
    local rundir
    rundir=$(dirname "$(head -n1 <<<"$run")")

    if [[ -z $logs ]]; then
        logs=$(mktemp -d "${TMPDIR:-/tmp}/kettle-check-boot.XXXXXX")
    else
        mkdir -p "$logs"
        rm -f "$logs"/*.result "$logs"/*.log "$logs"/*.cmd
    fi
    # shellcheck disable=SC2064
    [[ $keep == 1 ]] || trap "rm -rf '$logs'" EXIT

    local failed=0 why vhd
    for vhd in "$assets/syslinux.vhd" "$assets/grub.vhd" "$assets/demo.vhd" \
               "$rundir/syslinux.vhd" "$rundir/grub.vhd"; do
        if why=$(cb_vhd_info "$vhd"); then
            echo "check-boot-images: ok   $vhd: $why"
        else
            echo "check-boot-images: FAIL $vhd: $why"; failed=1
        fi
    done
    for vhd in "$assets" "$rundir"; do
        if qemu-img compare -q -f raw -F vpc "$vhd/grub.img" "$vhd/grub.vhd"; then
            echo "check-boot-images: ok   $vhd/grub.img and grub.vhd hold the same disk"
        else
            echo "check-boot-images: FAIL $vhd/grub.img and grub.vhd differ"; failed=1
        fi
    done

    # NAME MODE EXPECT... -- QEMU-ARGS...
    local -a checks=(
        "syslinux.vhd|ready|SYSLINUX 6|KETTLE-GUEST-READY|--|-drive|file=$assets/syslinux.vhd,format=vpc,if=ide,snapshot=on"
        "grub.vhd|ready|GRUB: linux /vmlinuz|KETTLE-GUEST-READY|--|-drive|file=$assets/grub.vhd,format=vpc,if=ide,snapshot=on"
        "grub.img|ready|GRUB: linux /vmlinuz|KETTLE-GUEST-READY|--|-drive|file=$assets/grub.img,format=raw,if=ide,snapshot=on"
        "isolinux.iso|ready|ISOLINUX 6|KETTLE-GUEST-READY|--|-cdrom|$assets/isolinux.iso|-boot|d"
        "demo.vhd|ready|SYSLINUX 6|KETTLE-GUEST-READY|kettle# |--|-drive|file=$assets/demo.vhd,format=vpc,if=ide,snapshot=on"
        "run-syslinux.vhd|run|KETTLE-GUEST-READY|BOOT-CHECK yes|KETTLE-TEST-EXIT 0|--|-drive|file=$rundir/syslinux.vhd,format=vpc,if=ide,snapshot=on"
        "run-grub.vhd|run|KETTLE-GUEST-READY|BOOT-CHECK yes|KETTLE-TEST-EXIT 0|--|-drive|file=$rundir/grub.vhd,format=vpc,if=ide,snapshot=on"
        "run-isolinux.iso|run|KETTLE-GUEST-READY|BOOT-CHECK yes|KETTLE-TEST-EXIT 0|--|-cdrom|$rundir/isolinux.iso|-boot|d"
    )
    cb_log "booting ${#checks[@]} images in QEMU (TCG), $jobs at a time, ${timeout} s each at most"
    local c running=0
    local -a f
    for c in "${checks[@]}"; do
        IFS='|' read -r -a f <<<"$c"
        if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
        cb_boot "${f[0]}" "${f[1]}" "$timeout" "$logs" "${f[@]:2}" &
        running=$((running + 1))
    done
    wait

    local name result
    for c in "${checks[@]}"; do
        name=${c%%|*}
        result=$(cat "$logs/$name.result" 2>/dev/null || echo "fail no result")
        case $result in
            ok*) echo "check-boot-images: ok   $name: KETTLE-GUEST-READY after ${result#ok } s (TCG)" ;;
            *)   echo "check-boot-images: FAIL $name: ${result#fail }"
                 echo "--- $name: $(cat "$logs/$name.cmd" 2>/dev/null)"
                 echo "--- last lines of its console:"
                 tail -n 25 "$logs/$name.log" 2>/dev/null | tr -d '\r' | sed 's/^/    /'
                 failed=1 ;;
        esac
    done
    [[ $keep == 0 ]] || cb_log "consoles kept in $logs"
    if [[ $failed != 0 ]]; then
        cb_log "some checks failed"
        exit 1
    fi
    cb_log "all checks passed"
}

cb_main "$@"
