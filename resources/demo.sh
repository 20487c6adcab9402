#!/usr/bin/env bash
# demo.sh: sets up, builds, and boots the demo appliance to a shell on its serial console.
#
# Usage: resources/demo.sh [--nested | --direct] [--help]
#
# On a fresh Debian or Ubuntu machine (as root, or as a user with sudo; a Rust toolchain,
# cargo 1.80 or newer, on the PATH):
#   1. resources/setup.sh installs the missing packages (QEMU, cpio, kmod, ...);
#   2. cargo build --release -p vmm builds kettle (target/release/kettle);
#   3. resources/build-boot-images.sh --quiet --images demo fetches Debian's kernel and
#      busybox into ${KETTLE_CACHE:-~/.cache/kettle} (through build-assets.sh), builds the
#      guest initramfs and the demo appliance, demo.vhd: a VHD disk with an MBR, a FAT
#      partition and SYSLINUX, which boots that kernel and initramfs with the command line
#      "console=ttyS0 quiet";
#   4. kettle boots the appliance the way a PC boots a disk: no --kernel, so kettle's BIOS
#      loads the VHD's boot sector and SYSLINUX takes over (the disk is attached read-only;
#      256 MiB of RAM; COM1 on this terminal, --serial stdio).
# You end at the guest's "kettle# " prompt. Type `poweroff` (or `exit`) to end the demo: the
# guest powers off (ACPI S5), kettle exits 0 and so does demo.sh. `reboot` reboots the guest.
# Ctrl-A x quits kettle at once (Ctrl-A Ctrl-A types a Ctrl-A).
#
# Where kettle runs: if the kvm_intel or kvm_amd module is loaded (/sys/module/kvm_intel,
# /sys/module/kvm_amd), /dev/kvm is a hardware KVM and kettle runs directly. Otherwise (for
# example /sys/module/kvm_pvm, a software KVM that cannot boot Linux at a usable speed, or no
# /dev/kvm at all) demo.sh says so in one line and runs kettle inside the nested test host
# (resources/nested-host.sh --interactive: QEMU emulating an AMD CPU with SVM, booting a
# Debian kernel with kvm-amd; see ../shared/TESTING.md), with this terminal as its console.
# That takes ~30 s to the prompt (once built), and the guest is slower there. Keys in that mode:
#   Ctrl-A x   quits kettle (inside); the nested host then powers off and demo.sh exits
#   Ctrl-] x   quits the outer QEMU at once (everything); Ctrl-] h lists QEMU's keys
#
# Options:
#   --nested   run inside the nested test host whatever /dev/kvm is
#   --direct   run kettle directly on /dev/kvm whatever module is behind it
#   -h, --help this text
#
# Exit status: kettle's (0 after a guest power-off); non-zero when a step fails, with a line
# saying which.
set -euo pipefail

DEMO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$DEMO_DIR")

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
die() { echo "demo: error: $*" >&2; exit 1; }

mode=auto
while [[ $# -gt 0 ]]; do
    case $1 in
        --nested) mode=nested ;;
        --direct) mode=direct ;;
        -h|--help) usage; exit 0 ;;
        *) echo "demo: unknown argument: $1" >&2
           echo "usage: resources/demo.sh [--nested | --direct] [--help]" >&2
           exit 2 ;;
    esac
    shift
done

cd "$REPO"
"$DEMO_DIR/setup.sh" || die "resources/setup.sh failed (see above)"
cargo build --release -p vmm || die "building kettle failed (cargo build --release -p vmm)"
kettle="${CARGO_TARGET_DIR:-$REPO/target}/release/kettle"
[[ $kettle == /* ]] || kettle="$REPO/$kettle"
[[ -x $kettle ]] || die "cargo did not produce $kettle"

images=$("$DEMO_DIR/build-boot-images.sh" --quiet --images demo) ||
    die "resources/build-boot-images.sh failed (see above)"
appliance=$(grep '/demo.vhd$' <<<"$images" || true)
[[ -f $appliance ]] || die "build-boot-images.sh printed no demo.vhd: $images"

# The demo machine, the same in both modes.
DEMO_MEMORY=256M

if [[ $mode == auto ]]; then
    if [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]; then
        mode=direct
    else
        mode=nested
        if [[ -d /sys/module/kvm_pvm ]]; then
            why="the local KVM is a software one (kvm_pvm) that cannot boot Linux at a usable speed"
        elif [[ -e /dev/kvm ]]; then
            why="the local KVM is not a hardware one (neither kvm_intel nor kvm_amd is loaded) and cannot boot Linux at a usable speed"
        else
            why="there is no KVM here (no /dev/kvm)"
        fi
        echo "demo: $why, so the demo runs inside the nested test host (QEMU emulating an AMD CPU with SVM and a real KVM; about 30 s to the prompt)"
    fi
fi

if [[ $mode == direct ]]; then
    [[ -e /dev/kvm ]] || die "there is no /dev/kvm (load kvm_intel or kvm_amd, or use --nested)"
    [[ -r /dev/kvm && -w /dev/kvm ]] ||
        die "/dev/kvm is not readable and writable for $(id -un) (join its group, $(stat -c %G /dev/kvm), or run as root)"
    exec "$kettle" run --disk "$appliance,readonly" --memory "$DEMO_MEMORY" --serial stdio
fi

# Nested: the script runs as root in the nested host with its stdin/stdout on the outer
# console, which nested-host.sh --interactive connects to this terminal; the host has
# /bin/kettle and the appliance at /guest/demo.vhd.
script=$(mktemp "${TMPDIR:-/tmp}/kettle-demo.XXXXXX")
trap 'rm -f "$script"' EXIT
cat >"$script" <<SCRIPT
# kettle demo, run by resources/demo.sh inside the nested test host
exec kettle run --disk /guest/demo.vhd,readonly --memory $DEMO_MEMORY --serial stdio
SCRIPT
set +e
"$DEMO_DIR/nested-host.sh" --interactive --kettle "$kettle" --add "$appliance:/guest/demo.vhd" "$script"
status=$?
set -e
exit "$status"
