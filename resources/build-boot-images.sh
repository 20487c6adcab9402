#!/usr/bin/env bash
# build-boot-images.sh: bootable disk and CD images of the kettle test guest, for
# booting through a PC BIOS (the appliance's own boot loader) instead of --kernel.
#
# Usage: resources/build-boot-images.sh [options]
#
# Built without root, loop devices or mounting (sfdisk on an image file, mkfs.fat
# and mtools on a partition image joined with dd, syslinux's mtools installer,
# grub-mkimage, xorriso, qemu-img), from the Debian kernel `vmlinuz` and the busybox
# initramfs `guest-initrd.gz` that resources/build-assets.sh makes (its header
# documents the initramfs' /init contract: KETTLE-GUEST-READY, kettle.run=, ...).
# With no options, into $KETTLE_CACHE/assets/:
#
#   syslinux.vhd   dynamic VHD: MBR (syslinux's mbr.bin), one active FAT32
#                  partition (type 0x0c) from sector 2048 (1 MiB) holding SYSLINUX,
#                  syslinux.cfg, /vmlinuz and /initrd.gz
#   grub.img       raw disk: MBR boot code is GRUB 2's boot.img, GRUB's core.img
#                  (grub-mkimage -O i386-pc) in sectors 1..2047, one active FAT16
#                  partition (type 0x0e) from sector 2048 holding /boot/grub/grub.cfg,
#                  /vmlinuz and /initrd.gz
#   grub.vhd       the same disk as a dynamic VHD (grub.img is padded to the VHD's
#                  CHS-rounded size, so both are byte for byte the same disk)
#   isolinux.iso   ISO 9660 CD, El Torito no-emulation boot of ISOLINUX
#                  (/isolinux/isolinux.bin, ldlinux.c32, isolinux.cfg), /vmlinuz,
#                  /initrd.gz
#   demo.vhd       the demo appliance: syslinux.vhd with the command line
#                  "console=ttyS0 quiet" (resources/demo.sh's): the interactive shell
#
# All boot the kernel at once (timeout 0, no prompt) with the command line
# "console=ttyS0" (demo.vhd: "console=ttyS0 quiet"). The boot loaders also talk on
# COM1 at 115200 baud (SYSLINUX/ISOLINUX print their banner, GRUB its messages), so
# a test log shows which loader ran. The image paths are printed, one per line.
#
# A custom kernel command line (or kernel, or initramfs): give --cmdline (and
# --initrd / --kernel). Such a set (syslinux.vhd, grub.img, grub.vhd, isolinux.iso;
# no demo.vhd) goes to --out DIR, or by default to
# $KETTLE_CACHE/boot-images/<key>/, where <key> hashes every input: the same
# request is answered from the cache at no cost, and the 16 most recently used sets
# are kept. For example, a test that runs /tests/mytest.sh in the guest through a
# boot loader:
#   cat guest-initrd.gz mytest.cpio >my-initrd      # see build-assets.sh: /tests
#   resources/build-boot-images.sh --quiet --images syslinux \
#       --cmdline "console=ttyS0 kettle.run=mytest" --initrd my-initrd
# prints the path of a syslinux.vhd that boots to "KETTLE-TEST-EXIT <status>" and
# powers off. resources/check-boot-images.sh does exactly this for every loader.
#
# Options:
#   --cmdline STR    kernel command line (default "console=ttyS0"); --append is
#                    the same. No newlines or single quotes (grub.cfg quotes each
#                    space-separated parameter), so no spaces inside a parameter.
#   --kernel PATH    kernel (bzImage) to boot (default: build-assets.sh's vmlinuz)
#   --initrd PATH    initramfs (default: build-assets.sh's guest-initrd.gz)
#   --images LIST    comma-separated subset of syslinux,grub,isolinux,demo (default:
#                    all; demo only for the standard set)
#   --out DIR        write the images to DIR (cached there too)
#   --quiet          print only the image paths
#   -h, --help       this text
#
# Reruns cost nothing: an image is rebuilt only when one of its inputs changed (the
# kernel, the initramfs, the command line, this script, or the version of a package
# below). Packages used (installed when missing, as root; otherwise the script says
# what to install): syslinux syslinux-common isolinux mtools dosfstools fdisk
# grub-pc-bin (with grub-common) xorriso qemu-utils. Building all takes ~1.5 s here.
#
# Environment: KETTLE_CACHE (default $HOME/.cache/kettle), KETTLE_KERNEL_PKG (see
# build-assets.sh).
#
# Exit status: 0 when the images are there; 1 when a step failed (with a line
# saying which); 2 for a usage error.

# Functions run through ka_with_lock look unreachable to shellcheck.
# shellcheck disable=SC2317
set -euo pipefail

KB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=build-assets.sh
source "$KB_DIR/build-assets.sh"
# mkfs.fat and sfdisk live in /usr/sbin, which a user's PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"

KB_CMDLINE_DEFAULT="console=ttyS0"
KB_CMDLINE_DEMO="console=ttyS0 quiet"   # the same as resources/demo.sh's DEMO_CMDLINE
KB_IMAGES_DEFAULT="syslinux,grub,isolinux,demo"
# Every disk: an MBR, one partition from sector 2048 (1 MiB), at least this big.
KB_PART_START=2048
KB_PART_MIN_MIB=63
KB_VOLUME_ID=4b455454     # "KETT": FAT volume serial and MBR disk signature
KB_CUSTOM_KEEP=16         # custom sets kept in $KETTLE_CACHE/boot-images

# Boot loader files, from their Debian packages.
KB_SYSLINUX_MBR=/usr/lib/syslinux/mbr/mbr.bin                   # syslinux-common
KB_LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32       # syslinux-common
KB_ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin                  # isolinux
KB_GRUB_DIR=/usr/lib/grub/i386-pc                               # grub-pc-bin
KB_PACKAGES=(syslinux syslinux-common isolinux mtools dosfstools fdisk grub-pc-bin grub-common
             xorriso qemu-utils)

# GRUB 2 boot.img layout (include/grub/i386/pc/boot.h), patched as grub-setup does.
KB_GRUB_KERNEL_SECTOR=$((0x5c))   # 8-byte LBA of core.img's first sector
KB_GRUB_BOOT_DRIVE=$((0x64))      # 0xff: use the drive the BIOS passed in DL
KB_GRUB_DRIVE_CHECK=$((0x66))     # a 2-byte jmp grub-setup replaces by nops on hard disks
# core.img starts with diskboot.img, whose last 12 bytes (at 0x1f4) are the blocklist
# of the rest of core.img: start LBA (8 bytes), sectors (2), segment (2).
KB_GRUB_BLOCKLIST=$((0x1f4))
KB_GRUB_MODULES=(biosdisk part_msdos fat normal linux configfile echo serial terminal terminfo)

KB_OUTPUTS=()

kb_log() { [[ $KA_QUIET == 1 ]] || echo "build-boot-images: $*" >&2; }
kb_die() { echo "build-boot-images: error: $*" >&2; exit 1; }
kb_usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
kb_usage_error() {
    echo "build-boot-images: $*" >&2
    echo "usage: resources/build-boot-images.sh [--cmdline STR] [--kernel PATH] [--initrd PATH] [--images LIST] [--out DIR] [--quiet] (--help for more)" >&2
    exit 2
}

# kb_run WHAT CMD...: runs CMD with its output kept; on failure prints it and dies.
kb_run() {
    local what=$1 out
    shift
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        kb_die "$what failed: $*"
    fi
}

# kb_require: installs the packages of missing commands and files (as root, with
# apt-get), or says precisely what to install.
kb_require() {
    local missing=() pair
    for pair in syslinux:syslinux mcopy:mtools mmd:mtools mkfs.fat:dosfstools sfdisk:fdisk \
                grub-mkimage:grub-pc-bin xorriso:xorriso qemu-img:qemu-utils sha256sum:coreutils; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    for pair in "$KB_SYSLINUX_MBR:syslinux-common" "$KB_LDLINUX_C32:syslinux-common" \
                "$KB_ISOLINUX_BIN:isolinux" "$KB_GRUB_DIR/boot.img:grub-pc-bin" \
                "$KB_GRUB_DIR/diskboot.img:grub-pc-bin"; do
        [[ -f ${pair%%:*} ]] || missing+=("${pair##*:}")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $EUID != 0 ]]; then
        kb_die "missing packages: ${missing[*]} (install them: apt-get install -y ${missing[*]}, or run resources/setup.sh)"
    fi
    kb_log "installing missing packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
            kb_die "apt-get install ${missing[*]} failed"
    fi
}

# kb_inputs_key KERNEL INITRD: hashes what every image shares: this script, the
# versions of the packages used, the kernel and the initramfs.
kb_inputs_key() {
    { sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
      dpkg-query -W -f '${Package} ${Version}\n' "${KB_PACKAGES[@]}" 2>/dev/null || true
      sha256sum <"$1" | cut -d' ' -f1
      sha256sum <"$2" | cut -d' ' -f1
    } | sha256sum | cut -d' ' -f1
}

# kb_part_mib FILE...: partition size (MiB) for these files, with room to spare.
kb_part_mib() {
    local bytes=0 f mib
    for f in "$@"; do bytes=$((bytes + $(stat -c %s "$f"))); done
    mib=$((bytes * 5 / 4 / 1048576 + 8))
    ((mib >= KB_PART_MIN_MIB)) || mib=$KB_PART_MIN_MIB
    echo "$mib"
}

# kb_fat IMAGE MIB BITS: an empty FAT12/16/32 file system image of a partition that
# starts at KB_PART_START (the BPB's hidden sectors) on BIOS drive 0x80.
kb_fat() {
    local img=$1 mib=$2 bits=$3
    rm -f "$img"
    truncate -s "$((mib * 1048576))" "$img"
    kb_run mkfs.fat mkfs.fat -F "$bits" -h "$KB_PART_START" -D 0x80 -n KETTLE -i "$KB_VOLUME_ID" "$img"
}

# kb_mbr_disk RAW PART TYPE: a disk with an MBR partition table whose one active
# partition, of TYPE (hex), holds the image PART from sector KB_PART_START. The
# boot code area (bytes 0..439) is left zero for the caller.
kb_mbr_disk() {
    local raw=$1 part=$2 type=$3 sectors
    sectors=$(($(stat -c %s "$part") / 512))
    rm -f "$raw"
    truncate -s "$(((KB_PART_START + sectors) * 512))" "$raw"
    printf 'label: dos\nlabel-id: 0x%s\nunit: sectors\n\nstart=%s, size=%s, type=%s, bootable\n' \
        "$KB_VOLUME_ID" "$KB_PART_START" "$sectors" "$type" |
        kb_run sfdisk sfdisk --quiet --no-reread --no-tell-kernel "$raw"
    dd if="$part" of="$raw" bs=1M oflag=seek_bytes seek="$((KB_PART_START * 512))" \
        conv=notrunc,sparse status=none
}

# kb_poke FILE OFFSET OCTAL-ESCAPES: writes bytes at OFFSET.
kb_poke() {
    # shellcheck disable=SC2059
    printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# kb_le FILE OFFSET BYTES: an unsigned little-endian number read from FILE.
kb_le() {
    local v=0 i
    local -a b
    read -r -a b < <(od -An -tu1 -j "$2" -N "$3" "$1")
    for ((i = $3 - 1; i >= 0; i--)); do v=$((v * 256 + b[i])); done
    echo "$v"
}

# kb_to_vhd RAW VHD: converts to a dynamic VHD, then pads RAW to the VHD's size
# (qemu-img rounds it up to the footer's CHS geometry, as Virtual PC does) and checks
# that both hold the same disk.
kb_to_vhd() {
    local raw=$1 vhd=$2 size
    kb_run "qemu-img convert" qemu-img convert -f raw -O vpc -o subformat=dynamic "$raw" "$vhd"
    size=$(qemu-img info --output=json -f vpc "$vhd" | sed -n 's/^ *"virtual-size": *\([0-9]*\).*/\1/p')
    [[ $size =~ ^[0-9]+$ && $size -ge $(stat -c %s "$raw") ]] ||
        kb_die "qemu-img made $vhd of size '$size', smaller than $raw"
    truncate -s "$size" "$raw"
    kb_run "qemu-img compare" qemu-img compare -q -f raw -F vpc "$raw" "$vhd"
}

# kb_syslinux_cfg CMDLINE: a SYSLINUX/ISOLINUX configuration that boots /vmlinuz
# with /initrd.gz at once, talking on COM1 too.
kb_syslinux_cfg() {
    cat <<CFG
# written by resources/build-boot-images.sh
SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT kettle
LABEL kettle
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND $1
CFG
}

# kb_syslinux_disk WORK VHD KERNEL INITRD CMDLINE
kb_syslinux_disk() {
    local work=$1 vhd=$2 kernel=$3 initrd=$4 cmdline=$5
    local part="$work/syslinux-part.img" raw="$work/syslinux.raw"
    kb_fat "$part" "$(kb_part_mib "$kernel" "$initrd")" 32
    kb_syslinux_cfg "$cmdline" >"$work/syslinux.cfg"
    kb_run mcopy mcopy -i "$part" "$kernel" ::/vmlinuz
    kb_run mcopy mcopy -i "$part" "$initrd" ::/initrd.gz
    kb_run mcopy mcopy -i "$part" "$work/syslinux.cfg" ::/syslinux.cfg
    # The mtools installer: the FAT boot sector, /ldlinux.sys and /ldlinux.c32.
    kb_run "syslinux --install" syslinux --install "$part"
    kb_mbr_disk "$raw" "$part" c
    rm -f "$part"
    dd if="$KB_SYSLINUX_MBR" of="$raw" bs=440 count=1 conv=notrunc status=none
    kb_to_vhd "$raw" "$vhd"
    rm -f "$raw"
}

# kb_grub_disk WORK RAW VHD KERNEL INITRD CMDLINE
kb_grub_disk() {
    local work=$1 raw=$2 vhd=$3 kernel=$4 initrd=$5 cmdline=$6
    local part="$work/grub-part.img" core="$work/core.img" core_size start len
    # One GRUB word per parameter, each quoted: linux passes its arguments joined
    # by spaces, but puts one that contains a space in double quotes.
    local words="" w
    local -a params
    read -r -a params <<<"$cmdline"
    for w in "${params[@]}"; do words+=" '$w'"; done
    kb_fat "$part" "$(kb_part_mib "$kernel" "$initrd")" 16
    cat >"$work/grub.cfg" <<CFG
# written by resources/build-boot-images.sh
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial
terminfo serial dumb
set timeout=0
set default=0
menuentry "kettle guest" {
    echo 'GRUB: linux /vmlinuz'
    linux /vmlinuz$words
    echo 'GRUB: initrd /initrd.gz'
    initrd /initrd.gz
}
CFG
    kb_run mmd mmd -i "$part" ::/boot ::/boot/grub
    kb_run mcopy mcopy -i "$part" "$work/grub.cfg" ::/boot/grub/grub.cfg
    kb_run mcopy mcopy -i "$part" "$kernel" ::/vmlinuz
    kb_run mcopy mcopy -i "$part" "$initrd" ::/initrd.gz
    kb_mbr_disk "$raw" "$part" e
    rm -f "$part"

    # core.img: diskboot.img + the kernel and modules. "(,msdos1)" is the first
    # partition of the drive GRUB was booted from (grub-install's form).
    kb_run grub-mkimage grub-mkimage -O i386-pc -d "$KB_GRUB_DIR" -o "$core" \
        -p '(,msdos1)/boot/grub' "${KB_GRUB_MODULES[@]}"
    core_size=$(stat -c %s "$core")
    ((core_size <= (KB_PART_START - 1) * 512)) ||
        kb_die "GRUB's core.img ($core_size bytes) does not fit between the MBR and sector $KB_PART_START"
    # boot.img loads sector 1 (diskboot.img), which loads the blocklist: grub-mkimage
    # writes start 2 and the sector count, right for a core.img that starts at
    # sector 1 and is contiguous (what grub-setup writes when it embeds it there).
    start=$(kb_le "$core" "$KB_GRUB_BLOCKLIST" 8)
    len=$(kb_le "$core" "$((KB_GRUB_BLOCKLIST + 8))" 2)
    [[ $start == 2 ]] || kb_die "core.img's blocklist starts at sector $start, not 2"
    (((len + 1) * 512 >= core_size)) || kb_die "core.img's blocklist ($len sectors) does not cover it ($core_size bytes)"
    dd if="$core" of="$raw" bs=512 seek=1 conv=notrunc status=none

    # boot.img's code (bytes 0..439: the partition table and 0x55AA stay), patched as
    # grub-setup does for a hard disk: core.img at LBA 1, the boot drive from DL, and
    # the "jmp" over the check that forces DL to 0x80 when a BIOS passes a bad drive
    # number replaced by two nops.
    [[ $(od -An -tx1 -j "$KB_GRUB_DRIVE_CHECK" -N1 "$KB_GRUB_DIR/boot.img" | tr -d ' ') == eb ]] ||
        kb_die "$KB_GRUB_DIR/boot.img has no jmp at the drive check offset (unknown GRUB version)"
    dd if="$KB_GRUB_DIR/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
    kb_poke "$raw" "$KB_GRUB_KERNEL_SECTOR" '\001\000\000\000\000\000\000\000'
    kb_poke "$raw" "$KB_GRUB_BOOT_DRIVE" '\377'
    kb_poke "$raw" "$KB_GRUB_DRIVE_CHECK" '\220\220'
    kb_to_vhd "$raw" "$vhd"
}

# kb_isolinux_iso WORK ISO KERNEL INITRD CMDLINE
kb_isolinux_iso() {
    local work=$1 iso=$2 kernel=$3 initrd=$4 cmdline=$5
    local tree="$work/iso"
    rm -rf "$tree"
    mkdir -p "$tree/isolinux"
    cp "$KB_ISOLINUX_BIN" "$KB_LDLINUX_C32" "$tree/isolinux/"
    kb_syslinux_cfg "$cmdline" >"$tree/isolinux/isolinux.cfg"
    cp "$kernel" "$tree/vmlinuz"
    cp "$initrd" "$tree/initrd.gz"
    kb_run xorriso xorriso -as mkisofs -o "$iso" -r -V KETTLE \
        -b isolinux/isolinux.bin -c isolinux/boot.cat \
        -no-emul-boot -boot-load-size 4 -boot-info-table "$tree"
    rm -rf "$tree"
}

# kb_build_set OUT KERNEL INITRD CMDLINE IMAGES: builds each image of IMAGES
# (comma-separated) into OUT unless it is up to date there (OUT/.IMAGE.stamp holds
# the hash of its inputs). Sets KB_OUTPUTS.
kb_build_set() {
    local out=$1 kernel=$2 initrd=$3 cmdline=$4 images=$5
    local inputs img cl key stamp complete f work=""
    local -a files built=()
    inputs=$(kb_inputs_key "$kernel" "$initrd")
    KB_OUTPUTS=()
    mkdir -p "$out"
    for img in ${images//,/ }; do
        cl=$cmdline
        case $img in
            syslinux) files=(syslinux.vhd) ;;
            grub) files=(grub.img grub.vhd) ;;
            isolinux) files=(isolinux.iso) ;;
            demo) files=(demo.vhd); cl=$KB_CMDLINE_DEMO ;;
        esac
        KB_OUTPUTS+=("${files[@]/#/$out/}")
        key=$(printf '%s\n' "$inputs" "$img" "$cl" | sha256sum | cut -d' ' -f1)
        stamp="$out/.$img.stamp"
        complete=1
        for f in "${files[@]}"; do [[ -s $out/$f ]] || complete=0; done
        [[ $complete == 1 && -f $stamp && $(cat "$stamp") == "$key" ]] && continue
        [[ -n $work ]] || work=$(mktemp -d "$KETTLE_CACHE/boot-images-build.XXXXXX")
        kb_log "building $out/${files[*]}"
        case $img in
            syslinux|demo) kb_syslinux_disk "$work" "$work/${files[0]}" "$kernel" "$initrd" "$cl" ;;
            grub) kb_grub_disk "$work" "$work/grub.img" "$work/grub.vhd" "$kernel" "$initrd" "$cl" ;;
            isolinux) kb_isolinux_iso "$work" "$work/isolinux.iso" "$kernel" "$initrd" "$cl" ;;
        esac
        rm -f "$stamp"
        for f in "${files[@]}"; do mv -f "$work/$f" "$out/$f"; done
        echo "$key" >"$stamp"
        built+=("$img")
    done
    [[ -z $work ]] || rm -rf "$work"
    [[ ${#built[@]} -gt 0 ]] || kb_log "boot images in $out up to date"
    touch "$out"
}

# kb_prune_custom: keeps the KB_CUSTOM_KEEP most recently used custom sets.
kb_prune_custom() {
    local dir="$KETTLE_CACHE/boot-images" old
    [[ -d $dir ]] || return 0
    # The names are hexadecimal keys: ls -t is safe.
    # shellcheck disable=SC2012
    while IFS= read -r old; do
        kb_log "removing the least recently used $dir/$old"
        rm -rf "${dir:?}/$old"
    done < <(ls -t "$dir" | tail -n +"$((KB_CUSTOM_KEEP + 1))")
}

# kb_build STANDARD(0|1) OUT KERNEL INITRD CMDLINE IMAGES: under the cache lock.
# Empty KERNEL/INITRD are build-assets.sh's. Empty OUT is $KETTLE_CACHE/assets for
# the standard set, otherwise a keyed directory in $KETTLE_CACHE/boot-images.
kb_build() {
    local standard=$1 out=$2 kernel=$3 initrd=$4 cmdline=$5 images=$6
    # What interrupted builds left (no other build runs: we hold the lock).
    rm -rf "$KETTLE_CACHE"/boot-images-build.*
    if [[ -z $kernel || -z $initrd ]]; then
        ka_build_assets
        [[ -n $kernel ]] || kernel="$KA_ASSETS/vmlinuz"
        [[ -n $initrd ]] || initrd="$KA_ASSETS/guest-initrd.gz"
    fi
    if [[ -z $out ]]; then
        if [[ $standard == 1 ]]; then
            out="$KETTLE_CACHE/assets"
        else
            out="$KETTLE_CACHE/boot-images/$( { kb_inputs_key "$kernel" "$initrd"; echo "$cmdline"; } |
                                              sha256sum | cut -c1-16)"
        fi
    fi
    kb_build_set "$out" "$kernel" "$initrd" "$cmdline" "$images"
    [[ $out != "$KETTLE_CACHE/boot-images/"* ]] || kb_prune_custom
}

kb_main() {
    local cmdline=$KB_CMDLINE_DEFAULT kernel="" initrd="" images="" out="" img
    while [[ $# -gt 0 ]]; do
        case $1 in
            --cmdline|--append) [[ $# -ge 2 ]] || kb_usage_error "$1 needs a STRING"; cmdline=$2; shift ;;
            --kernel) [[ $# -ge 2 ]] || kb_usage_error "--kernel needs a PATH"; kernel=$2; shift ;;
            --initrd) [[ $# -ge 2 ]] || kb_usage_error "--initrd needs a PATH"; initrd=$2; shift ;;
            --images) [[ $# -ge 2 ]] || kb_usage_error "--images needs a LIST"; images=$2; shift ;;
            --out) [[ $# -ge 2 ]] || kb_usage_error "--out needs a DIR"; out=$2; shift ;;
            --quiet) KA_QUIET=1 ;;
            -h|--help) kb_usage; exit 0 ;;
            *) kb_usage_error "unknown argument: $1" ;;
        esac
        shift
    done
    [[ $cmdline != *$'\n'* && $cmdline != *"'"* ]] ||
        kb_usage_error "--cmdline must not contain newlines or single quotes"
    local f
    for f in "$kernel" "$initrd"; do
        [[ -z $f || -f $f ]] || kb_usage_error "no such file: $f"
    done
    [[ -z $kernel ]] || kernel=$(realpath "$kernel")
    [[ -z $initrd ]] || initrd=$(realpath "$initrd")
    [[ -z $out ]] || { mkdir -p "$out"; out=$(realpath "$out"); }
    local standard=0
    [[ -z $out && -z $kernel && -z $initrd && $cmdline == "$KB_CMDLINE_DEFAULT" ]] && standard=1
    if [[ -z $images ]]; then
        images=$KB_IMAGES_DEFAULT
        [[ $standard == 1 ]] || images=${images%,demo}
    fi
    for img in ${images//,/ }; do
        case $img in
            syslinux|grub|isolinux) ;;
            demo) [[ $standard == 1 ]] || kb_usage_error "demo.vhd is only built with the standard set (no --cmdline/--kernel/--initrd/--out)" ;;
            *) kb_usage_error "unknown image '$img' in --images (syslinux, grub, isolinux, demo)" ;;
        esac
    done
    kb_require
    ka_with_lock kb_build "$standard" "$out" "$kernel" "$initrd" "$cmdline" "$images"
    printf '%s\n' "${KB_OUTPUTS[@]}"
}

kb_main "$@"
