#!/usr/bin/env bash
# bench-bios.sh: boot time through a PC BIOS, kettle's own BIOS and SeaBIOS in kettle against
# SeaBIOS in QEMU/KVM, side by side in one nested test host, on the same SYSLINUX VHD.
#
# Usage: resources/bench-bios.sh [--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE]
#
# The disk: build-boot-images.sh's syslinux.vhd (the Debian kernel `vmlinuz` and the guest
# initramfs of build-assets.sh plus a test script that exits at once, command line
# "console=ttyS0 quiet kettle.run=boot", so the guest powers off right after /init), with a
# stamp boot sector in front of its boot loader: the MBR's first instructions write
# "KETTLE-BOOT-SECTOR" straight to COM1 (port 0x3F8, polling the LSR; no BIOS call), then the
# stamp moves itself to 0:0600, reads LBA 1, where the image's original MBR (syslinux's
# mbr.bin and the same partition table) now is, to 0:7C00 with INT 13h AH=02h and jumps there
# with DL as the BIOS gave it. Sectors 1..2047 of syslinux.vhd are unused (its partition starts
# at sector 2048): the script checks that LBA 1 was zero before it puts the MBR there. The
# stamped image must boot under QEMU TCG + SeaBIOS on this machine, from the stamp to the
# guest's power-off, before the nested host starts.
#
# It boots N times (default 3) with each of
#   kettle BIOS     kettle run --disk VHD,readonly --memory 256M --serial stdio --no-reboot
#   kettle SeaBIOS  the same with --bios bios.bin (Debian's /usr/share/seabios/bios.bin,
#                   given the machine through fw_cfg)
#   QEMU SeaBIOS    qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic
#                   -nic none -no-reboot
#                   -drive file=VHD,format=vpc,if=ide,index=0,media=disk,snapshot=on
#                   (its default firmware, bios-256k.bin of the same Debian seabios package;
#                   QEMU refuses a read-only IDE hard disk, so snapshot=on keeps the image
#                   untouched: writes would go to a temporary overlay)
# in turn (kettle BIOS, kettle SeaBIOS, QEMU, kettle BIOS, ...), inside ONE nested test host
# (resources/nested-host.sh: QEMU TCG emulating an AMD CPU with SVM, kvm-amd inside; see
# ../shared/TESTING.md), so all run on the same (nested) KVM, as in bench-boot.sh.
#
# Times, per run, from the VMM's start: "boot sector" until the stamp's line arrives (the
# firmware's whole POST: the first instruction of the boot sector), "init" until the guest's
# /init prints KETTLE-GUEST-READY on COM1 (boot loader, kernel and initramfs), "exit" until
# the VMM has exited after the guest's ACPI power-off. Every line of the VMM's output is
# time-stamped by busybox `ts` (gettimeofday, microseconds) as it arrives through a pipe; the
# start is a line written just before the VMM is started. A marker counts wherever it is in
# its line: SeaBIOS mirrors its screen to COM1 with escape sequences, without a newline before
# the stamp's. The table shows each run, the median and the fastest run per configuration,
# and the ratios kettle BIOS/QEMU, kettle SeaBIOS/QEMU and kettle BIOS/kettle SeaBIOS (below
# 1: the first is faster). Absolute times mean little here (KVM nested in TCG); compare ratios.
#
# When the nested host times out (TESTING.md: the emulator can stall as an inner VMM starts),
# the runs not yet complete are retried once in a new nested host, and the retry is reported.
#
# Prints progress on stderr and the results on stdout; exit status 0 when every run reached
# the boot sector and KETTLE-GUEST-READY and its VMM exited 0, 1 otherwise (the numbers are
# printed anyway), 2 for a usage error. It is a benchmark, not a test: it fails on broken
# runs, never on slow ones.
#
# Options:
#   --runs N            boots per configuration (default 3)
#   --kettle PATH       benchmark this kettle binary (default: build target/release/kettle
#                       with cargo build --release -p vmm)
#   --timeout SECONDS   bound on each nested host (default: 120 + 180 per run)
#   --keep-log FILE     also write the nested host's console to FILE
#   -h, --help          this text
#
# Needs what nested-host.sh and build-boot-images.sh need, plus GNU as and ld (binutils),
# qemu-img (qemu-utils) and Debian's seabios; as root it installs missing commands with
# apt-get. Builds kettle (unless --kettle), the guest assets and the image first.
set -euo pipefail

# shellcheck source=bench-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" bench-bios \
    "[--runs N] [--kettle PATH] [--timeout SECONDS] [--keep-log FILE] [--help]"

bench_parse_args "" "$@"
[[ -n $timeout ]] || timeout=$((120 + 180 * runs))

SEABIOS=/usr/share/seabios/bios.bin
CMDLINE="console=ttyS0 quiet kettle.run=boot"
MARKER=KETTLE-BOOT-SECTOR

# The package helpers of build-assets.sh (ka_require installs as root, or says what is missing).
# shellcheck source=build-assets.sh
source "$BENCH_DIR/build-assets.sh"
ka_require qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils as:binutils ld:binutils cpio:cpio
[[ -f $SEABIOS ]] || die "$SEABIOS is missing: install Debian's seabios package (resources/setup.sh does)"
bench_find_qemu
bench_prepare
bench_workdir kettle-bench-bios

# The guest initramfs plus /tests/boot.sh, which exits at once (the guest powers off).
mkdir -p "$work/extra/tests"
echo 'exit 0' >"$work/extra/tests/boot.sh"
chmod 755 "$work/extra/tests/boot.sh"
bench_initrd tests

log "building the SYSLINUX image (build-boot-images.sh --images syslinux)"
image=$("$BENCH_DIR/build-boot-images.sh" --quiet --images syslinux --cmdline "$CMDLINE" \
    --initrd "$work/bench-initrd" --out "$work/images") || die "resources/build-boot-images.sh failed"
[[ -f $image && $image == */syslinux.vhd ]] || die "build-boot-images.sh printed no syslinux.vhd: $image"

# The stamp boot sector. It is linked at 0:0600, where it moves itself; until then it runs at
# 0:7C00 and addresses its data relative to that (calls and jumps are relative anyway).
cat >"$work/stamp.S" <<'STAMP'
    .code16
    .set COM1, 0x3f8            # transmit holding register
    .set COM1_LSR, 0x3fd        # line status register
    .set LSR_THRE, 0x20         # transmit holding register empty
    .set ORIGIN, 0x7c00         # where the BIOS loads a boot sector
    .set RELOC, 0x600           # where this one moves to (it is linked there)
    .section .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $ORIGIN, %sp
    push %dx                    # DL: the boot drive
    cld
    mov $(ORIGIN + stamp - _start), %si
    call serial_puts
    # Move to 0:0600 and go on there, then chain-load the original MBR from LBA 1.
    mov $ORIGIN, %si
    mov $RELOC, %di
    mov $256, %cx
    rep movsw
    ljmp $0, $relocated
relocated:
    sti
    mov $3, %di                 # tries
1:  pop %dx
    push %dx
    mov $0x0201, %ax            # INT 13h AH=02h: read 1 sector
    mov $0x0002, %cx            # cylinder 0, sector 2 (LBA 1)
    xor %dh, %dh                # head 0
    mov $ORIGIN, %bx            # to ES:BX = 0:7C00
    int $0x13
    jnc 2f
    xor %ah, %ah                # reset the drive, try again
    int $0x13
    dec %di
    jnz 1b
    mov $failed, %si
    call serial_puts
3:  hlt
    jmp 3b
2:  pop %dx                     # DL as the BIOS gave it
    ljmp $0, $ORIGIN

# serial_puts: the NUL-terminated string at DS:SI to COM1, polling its LSR (no BIOS call).
serial_puts:
    push %dx
1:  lodsb
    test %al, %al
    jz 3f
    mov %al, %ah
    mov $COM1_LSR, %dx
2:  in %dx, %al
    test $LSR_THRE, %al
    jz 2b
    mov $COM1, %dx
    mov %ah, %al
    out %al, %dx
    jmp 1b
3:  pop %dx
    ret
STAMP
printf 'stamp:  .asciz "%s\\r\\n"\nfailed: .asciz "%s: reading LBA 1 failed\\r\\n"\n' "$MARKER" "$MARKER" \
    >>"$work/stamp.S"
as --32 -o "$work/stamp.o" "$work/stamp.S" 2>"$work/as.err" || die "as failed: $(cat "$work/as.err")"
ld -m elf_i386 -nostdlib --oformat binary -Ttext 0x600 -e _start -o "$work/stamp.bin" "$work/stamp.o" \
    2>"$work/ld.err" || die "ld failed: $(cat "$work/ld.err")"
stamp_size=$(stat -c %s "$work/stamp.bin")
((stamp_size <= 440)) || die "the stamp boot sector's code is $stamp_size bytes; 440 fit before the disk signature"

# The stamped disk: sector 1 = the original MBR, sector 0 = the stamp's code + the original
# disk signature, partition table and 0x55AA (bytes 440..511).
raw="$work/stamped.raw"
qemu-img convert -f vpc -O raw "$image" "$raw" || die "qemu-img convert to raw failed"
[[ $(od -An -tx1 -j 510 -N 2 "$raw" | tr -d ' ') == 55aa ]] || die "$image has no MBR signature"
[[ -z $(dd if="$raw" bs=512 skip=1 count=1 status=none | tr -d '\0') ]] ||
    die "sector 1 of $image is in use (build-boot-images.sh's layout changed): no room for the original MBR"
dd if="$raw" of="$raw" bs=512 count=1 seek=1 conv=notrunc status=none
{ cat "$work/stamp.bin"; head -c $((440 - stamp_size)) /dev/zero; dd if="$raw" bs=1 skip=440 count=72 status=none; } \
    >"$work/stamp-sector"
[[ $(stat -c %s "$work/stamp-sector") == 512 ]] || die "the stamp sector is not 512 bytes"
dd if="$work/stamp-sector" of="$raw" bs=512 count=1 conv=notrunc status=none
vhd="$work/stamped.vhd"
qemu-img convert -f raw -O vpc -o subformat=dynamic "$raw" "$vhd" || die "qemu-img convert to vpc failed"
qemu-img compare -q -f raw -F vpc "$raw" "$vhd" || die "the stamped VHD differs from its raw image"
rm -f "$raw"

# The stamped image must still boot, all the way: under QEMU TCG and SeaBIOS on this machine.
log "checking the stamped image under QEMU TCG + SeaBIOS here (stamp, SYSLINUX, init, power-off)"
set +e
timeout 180 "$qemu" -machine pc,accel=tcg -m 256 -smp 1 -nographic -nic none -no-reboot \
    -drive "file=$vhd,format=vpc,if=ide,index=0,media=disk,snapshot=on" </dev/null >"$work/check.log" 2>&1
check_status=$?
set -e
tr -d '\r' <"$work/check.log" >"$work/check.txt"
if [[ $check_status != 0 ]] || ! grep -aq "$MARKER" "$work/check.txt" || ! grep -aq '^SYSLINUX ' "$work/check.txt" ||
        ! grep -aq KETTLE-GUEST-READY "$work/check.txt"; then
    tail -n 20 "$work/check.txt" >&2
    die "the stamped image did not boot under QEMU TCG (status $check_status; its console's tail above)"
fi

bench_adds --add "$vhd:/guest/boot.vhd" --add "$SEABIOS:/guest/bios.bin"

# The inner script runs runs FIRST..LAST of each configuration (set at its top by attempt()).
cat >"$work/inner-body.sh" <<'INNER'
# Run by resources/bench-bios.sh inside the nested test host (busybox sh).
IMG=/guest/boot.vhd
# QEMU 7.2 puts the snapshot=on overlay in /var/tmp, whatever $TMPDIR says.
mkdir -p /var/tmp
failed=0

vmm() { # CONFIG: the command line of one boot
    case $1 in
        kettle) echo "kettle run --disk $IMG,readonly --memory 256M --serial stdio --no-reboot" ;;
        kettle-sb) echo "kettle run --bios /guest/bios.bin --disk $IMG,readonly --memory 256M --serial stdio --no-reboot" ;;
        qemu) echo "qemu-system-x86_64 -enable-kvm -M pc -cpu host -m 256 -smp 1 -nographic -nic none -no-reboot -drive file=$IMG,format=vpc,if=ide,index=0,media=disk,snapshot=on" ;;
    esac
}

# timed CONFIG I: one boot, every output line time-stamped as it arrives.
timed() {
    out=/tmp/out.$1.$2
    echo "=== $1 run $2"
    { echo "BENCH-START"; timeout 300 $(vmm "$1") </dev/null 2>/tmp/err.$1.$2; echo "BENCH-END $?"; } |
        ts %.s >"$out"
    tr -d '\r' <"$out" | awk -v cfg="$1" -v i="$2" -v marker="$MARKER" '
        function t(x) { return x ? sprintf("%.3f", x - s) : "-" }
        $2 == "BENCH-START" { s = $1 }
        index($0, marker) && !b { b = $1 }
        /KETTLE-GUEST-READY/ && !r { r = $1 }
        $2 == "BENCH-END" { e = $1; st = $3 }
        END { printf "BENCH %s %s %s %s %s %s\n", cfg, i, t(b), t(r), t(e), st }'
    if ! grep -q "$MARKER" "$out" || ! grep -q KETTLE-GUEST-READY "$out" || ! grep -q '^[0-9.]* BENCH-END 0' "$out"; then
        failed=1
        echo "BENCH-FAILED $1 run $2; its output and stderr:"
        tr -d '\r' <"$out" | tail -n 20
        tail -n 20 /tmp/err.$1.$2
    fi
}

echo "BENCH-QEMU $(qemu-system-x86_64 --version | head -n1)"
i=$FIRST
while [ $i -le $LAST ]; do
    timed kettle $i
    timed kettle-sb $i
    timed qemu $i
    i=$((i + 1))
done
exit $failed
INNER

# complete I: run I of every configuration is in $results.
complete() {
    local cfg
    for cfg in kettle kettle-sb qemu; do
        grep -q "^BENCH $cfg $1 " <<<"$results" || return 1
    done
}

# progress: a line on stderr for each boot.
progress() {
    while IFS=$' \t\r' read -r tag cfg run t_sector t_init t_exit st; do
        [[ $tag == BENCH ]] &&
            log "$cfg run $run: to boot sector ${t_sector} s, to init ${t_init} s, to exit ${t_exit} s, status $st"
    done
}

# attempt FIRST N: one nested host running runs FIRST..N; appends to $results, sets $status.
attempt() {
    { echo "FIRST=$1"; echo "LAST=$2"; echo "MARKER=$MARKER"; cat "$work/inner-body.sh"; } >"$work/inner.sh"
    log "booting the nested test host: runs $1..$2 of each configuration (timeout ${timeout}s)"
    bench_attempt "$1" progress
}

bench_attempts attempt complete
if ! grep -q '^BENCH [a-z-]* [0-9]* ' <<<"$results"; then
    bench_nested_failed "$work/console.1"
fi

awk '
# sorted(C, W): fills s[1..n] with the times W (1: to the boot sector, 2: to init, 3: to exit)
# of configuration C, in increasing order, and returns n.
function sorted(c, w,    i, j, t, n) {
    delete s; n = 0
    for (i = 1; i <= cnt[c]; i++) if (tm[c, i, w] != "-") s[++n] = tm[c, i, w] + 0
    for (i = 2; i <= n; i++) for (j = i; j > 1 && s[j-1] > s[j]; j--) { t = s[j]; s[j] = s[j-1]; s[j-1] = t }
    return n
}
function fmt(x) { return (x == "") ? "-" : sprintf("%.3f", x) }
function ratio(a, b) { return (a != "" && b != "" && b > 0) ? sprintf("%.2f", a / b) : "-" }
function row(label, a, b, c) { printf "%-34s %12s %10s %10s\n", label, a, b, c }
$1 == "BENCH-QEMU" { sub(/^BENCH-QEMU /, ""); qemu_version = $0 }
$1 == "BENCH" { c = $2; n = ++cnt[c]; run[c, n] = $3; tm[c, n, 1] = $4; tm[c, n, 2] = $5; tm[c, n, 3] = $6; st[c, n] = $7 }
END {
    nc = split("kettle kettle-sb qemu", cfg, " ")
    label["kettle"] = "kettle BIOS"; label["kettle-sb"] = "kettle SeaBIOS"; label["qemu"] = "QEMU SeaBIOS"
    printf "Boot through the BIOS, same SYSLINUX VHD (stamp boot sector in front of its MBR), 256 MiB,\n"
    printf "1 vCPU, inside one nested test host; seconds from the VMM'"'"'s start\n"
    printf "(kettle BIOS: kettle'"'"'s own; kettle SeaBIOS: --bios /usr/share/seabios/bios.bin; QEMU SeaBIOS:\n"
    printf "%s, -enable-kvm -M pc -cpu host, its bios-256k.bin)\n\n", qemu_version
    printf "%-34s %12s %10s %10s %7s\n", "configuration, run", "boot sector", "to init", "to exit", "status"
    for (k = 1; k <= nc; k++) {
        c = cfg[k]
        for (i = 1; i <= cnt[c]; i++)
            printf "%-34s %12s %10s %10s %7s\n", label[c] " " run[c, i], tm[c, i, 1], tm[c, i, 2], tm[c, i, 3], st[c, i]
    }
    for (k = 1; k <= nc; k++) {
        c = cfg[k]
        for (w = 1; w <= 3; w++) {
            n = sorted(c, w)
            med[c, w] = n ? ((n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2) : ""
            low[c, w] = n ? s[1] : ""
        }
    }
    for (k = 1; k <= nc; k++) row(label[cfg[k]] " median", fmt(med[cfg[k], 1]), fmt(med[cfg[k], 2]), fmt(med[cfg[k], 3]))
    for (k = 1; k <= nc; k++) row(label[cfg[k]] " fastest", fmt(low[cfg[k], 1]), fmt(low[cfg[k], 2]), fmt(low[cfg[k], 3]))
    split("kettle:qemu:kettle BIOS/QEMU|kettle-sb:qemu:kettle SeaBIOS/QEMU|kettle:kettle-sb:kettle BIOS/SeaBIOS", pairs, "|")
    for (m = 1; m <= 2; m++) {
        for (p = 1; p <= 3; p++) {
            split(pairs[p], pr, ":")
            if (m == 1) row(pr[3] ", medians", ratio(med[pr[1], 1], med[pr[2], 1]), ratio(med[pr[1], 2], med[pr[2], 2]), ratio(med[pr[1], 3], med[pr[2], 3]))
            else row(pr[3] ", fastest", ratio(low[pr[1], 1], low[pr[2], 1]), ratio(low[pr[1], 2], low[pr[2], 2]), ratio(low[pr[1], 3], low[pr[2], 3]))
        }
    }
}' <<<"$results"

bench_finish
