#!/usr/bin/env bash
# setup.sh: installs what building and testing kettle needs on a Debian/Ubuntu machine.
#
# Usage: resources/setup.sh
#
# Installs (apt, as root or through sudo) only what is missing: a C toolchain and binutils (the
# test suite assembles its small guest programs), QEMU for the nested test host, busybox,
# cpio/kmod/xz/zstd for building initramfs images, qemu-utils and libvhdi-utils (independent
# VHD tools the tests check kettle's files against), passt (user-mode networking for the NIC) and
# tcpdump (reads the pcap files kettle writes), and the boot loaders and image tools that
# build-boot-images.sh needs (syslinux, syslinux-common, isolinux, grub-pc-bin, mtools,
# dosfstools, fdisk, xorriso). Checks that cargo is there and
# says how to get it when it is not. Safe to run again: it does nothing when all is present.
set -euo pipefail

need_pkgs=()
want() { # want COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ] || need_pkgs+=("$2")
}
want gcc gcc
want as binutils
want ld binutils
want qemu-system-x86_64 qemu-system-x86
want qemu-img qemu-utils
want vhdiinfo libvhdi-utils
want xorriso xorriso
want mke2fs e2fsprogs
want debugfs e2fsprogs
want vhdimount libvhdi-utils
want cpio cpio
want depmod kmod
want xz xz-utils
want zstd zstd
want curl curl
want passt passt
want tcpdump tcpdump
want dmidecode dmidecode
[ -x /bin/busybox ] || need_pkgs+=(busybox-static)
# Boot images (resources/build-boot-images.sh). mkfs.fat and sfdisk are in /usr/sbin.
want syslinux syslinux
want mcopy mtools
want mkfs.fat dosfstools
want sfdisk fdisk
want grub-mkimage grub-pc-bin
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || need_pkgs+=(syslinux-common)
[ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] || need_pkgs+=(syslinux-common)
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || need_pkgs+=(isolinux)
[ -f /usr/lib/grub/i386-pc/boot.img ] || need_pkgs+=(grub-pc-bin)

if [ ${#need_pkgs[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "setup.sh: need root (or sudo) to install: ${need_pkgs[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    echo "setup.sh: installing ${need_pkgs[*]}" >&2
    $sudo apt-get update -qq
    # shellcheck disable=SC2046
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $(printf '%s\n' "${need_pkgs[@]}" | sort -u) >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        echo "setup.sh: cargo is in ~/.cargo/bin but not on PATH; run: . \"\$HOME/.cargo/env\"" >&2
    else
        echo "setup.sh: kettle needs a Rust toolchain (1.80 or newer); install it with rustup (https://rustup.rs)" >&2
    fi
    exit 1
fi
