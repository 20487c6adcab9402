#!/usr/bin/env bash
# build-assets.sh: guest assets for kettle tests, built from Debian packages.
#
# Usage: resources/build-assets.sh [--quiet] [--help]
#
# Downloads (apt-get download, nothing is installed) the kernel package that
# `linux-image-amd64` currently depends on and `busybox-static`, extracts them
# into a cache outside the repository, keyed by package version, and produces:
#
#   $KETTLE_CACHE/assets/vmlinuz          the Debian bzImage, for guests
#   $KETTLE_CACHE/assets/vmlinux          the same kernel as an uncompressed ELF
#                                         with a PVH entry note
#   $KETTLE_CACHE/assets/guest-initrd.gz  busybox initramfs for kettle guests
#   $KETTLE_CACHE/assets/assets.env       shell variables describing the above
#                                         (kernel version, extracted trees)
#
# Reruns cost nothing: downloads, extracted trees and the assets are reused
# while the package versions and this script are unchanged.
#
# Flags:
#   --quiet   print only the asset paths at the end
#   --help    this text
#
# Environment:
#   KETTLE_CACHE       cache directory (default: $HOME/.cache/kettle)
#   KETTLE_KERNEL_PKG  pin the kernel package (e.g. linux-image-6.1.0-56-amd64)
#                      instead of following linux-image-amd64
#
# The guest /init contract (what tests can rely on)
# -------------------------------------------------
# /init mounts /proc, /sys, /dev (devtmpfs), /dev/pts, loads modules, prints
# KETTLE-GUEST-READY and then execs busybox init (PID 1 stays init), which
# reads /etc/inittab and runs /lib/kettle/main.sh once on the console.
# Kernel command line parameters (from /proc/cmdline):
#   kettle.modules=a,b,c  load these modules, with their dependencies, in
#                         dependency order (insmod, from modules.dep); '-' and
#                         '_' are interchangeable; built-in modules are skipped.
#                         Prints "KETTLE-MODULE-FAILED <name>" for each failure.
#   kettle.run=NAME       run /tests/NAME.sh (busybox sh, stdio on the console,
#                         no controlling tty), print "KETTLE-TEST-EXIT <status>",
#                         then power off at once (`poweroff -f`: ACPI S5).
# Console lines, in order:
#   KETTLE-GUEST-READY         after mounts and module loading
#   KETTLE-TEST-EXIT <status>  after /tests/NAME.sh (kettle.run only)
#   KETTLE-TEST-MISSING <NAME> if /tests/NAME.sh does not exist (then power off)
# busybox init is quiet at start; on a poweroff/reboot it prints its own lines
# ("The system is going down NOW!" ... "Requesting system poweroff").
# Without kettle.run, an interactive login shell runs on the console (with
# the serial port as its controlling tty: Ctrl-C works) with the prompt
# "kettle# " (from /etc/profile); the guest powers off when it exits.
# Power-off and reboot from inside the guest work the usual way, because PID 1
# is busybox init: `poweroff` (typed in the shell, or run by a test) ends in
# an ACPI S5 power-off, `reboot` in a reset (kettle restarts the guest, or
# exits 0 under --no-reboot), `halt` stops the CPUs (the VMM keeps running);
# init first runs the ::shutdown: entries (sync), stops every process
# (SIGTERM, 1 s, SIGKILL) and pauses a second, so these take ~2 s. The -f
# forms act at once.
#
# /tests: the initramfs ships /tests/info.sh (prints what the guest sees).
# Tests add their own scripts by appending a second newc cpio archive
# (compressed or not) that contains tests/NAME.sh to guest-initrd.gz:
#   cat guest-initrd.gz extra.cpio > my-initrd     # the kernel unpacks both
# (tests/src/nested.rs has a helper that does this).
#
# Also in the initramfs: /sbin/modprobe (busybox, with a depmod-generated
# modules.dep/modules.alias for the modules shipped), so the kernel can
# autoload what is shipped; all busybox applets; /etc/profile with PATH and PS1.

set -euo pipefail

# Modules every guest initramfs carries (their dependencies come along).
GUEST_MODULES=(ata_piix libata sd_mod sr_mod cdrom tulip aic7xxx parport parport_pc lp
               ext4 crc32c_generic jbd2 mbcache crc16)
# Carried if they exist as loadable modules (often built into Debian's kernel).
GUEST_OPTIONAL_MODULES=(rtc_cmos serial_core 8250 8250_base 8250_pnp)

KETTLE_CACHE="${KETTLE_CACHE:-${HOME:-/tmp}/.cache/kettle}"
KA_QUIET=0

ka_log() { [[ $KA_QUIET == 1 ]] || echo "build-assets: $*" >&2; }
KA_DIE_STATUS=1
ka_die() { echo "build-assets: error: $*" >&2; exit "$KA_DIE_STATUS"; }

# ka_require CMD:PACKAGE... installs the packages of missing commands (as root,
# with apt-get), or says precisely what to install.
ka_require() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair##*:}")
    done
    [[ ${#missing[@]} == 0 ]] && return 0
    if [[ $EUID != 0 ]]; then
        ka_die "missing packages: ${missing[*]} (install them: apt-get install -y ${missing[*]})"
    fi
    ka_log "installing missing packages: ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

# ka_apt_field PACKAGE FIELD: a field of the candidate version, from the apt lists.
ka_apt_field() {
    { apt-cache show --no-all-versions "$1" 2>/dev/null || true; } | sed -n "/^$2: /{s/^$2: //;p;q;}"
}

ka_apt_updated=0
ka_apt_update() {
    [[ $ka_apt_updated == 1 ]] && return 0
    [[ $EUID == 0 ]] || ka_die "the apt package lists lack what is needed; run 'apt-get update' as root"
    ka_log "running apt-get update"
    apt-get update >&2 || ka_die "apt-get update failed"
    ka_apt_updated=1
}

# ka_lists_key: changes whenever the apt package lists change.
ka_lists_key() {
    { echo "${KETTLE_KERNEL_PKG:-}"
      stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* /etc/apt/preferences* 2>/dev/null || true
    } | sha256sum | cut -d' ' -f1
}

# ka_resolve: sets KA_KPKG, KA_KVER_PKG (package version), KA_BB_VER.
# apt-cache takes about a second per call here, so the answer is kept in
# $KETTLE_CACHE/resolved.env while the apt lists are unchanged.
ka_resolve() {
    local try key resolved="$KETTLE_CACHE/resolved.env"
    key=$(ka_lists_key)
    if [[ -f $resolved ]] && grep -qx "KA_LISTS_KEY=$key" "$resolved"; then
        # shellcheck disable=SC1090
        source "$resolved"
        return 0
    fi
    for try in 1 2; do
        KA_KPKG="${KETTLE_KERNEL_PKG:-}"
        if [[ -z $KA_KPKG ]]; then
            KA_KPKG=$(ka_apt_field linux-image-amd64 Depends | tr ',' '\n' |
                      sed -n '/^ *linux-image-[0-9]/{s/^ *\(linux-image-[0-9][^ ]*-amd64\).*/\1/;p;q;}')
        fi
        KA_KVER_PKG=""
        [[ -n $KA_KPKG ]] && KA_KVER_PKG=$(ka_apt_field "$KA_KPKG" Version)
        KA_BB_VER=$(ka_apt_field busybox-static Version)
        if [[ -n $KA_KPKG && -n $KA_KVER_PKG && -n $KA_BB_VER ]]; then
            key=$(ka_lists_key)
            printf "KA_LISTS_KEY=%s\nKA_KPKG='%s'\nKA_KVER_PKG='%s'\nKA_BB_VER='%s'\n" \
                "$key" "$KA_KPKG" "$KA_KVER_PKG" "$KA_BB_VER" >"$resolved"
            return 0
        fi
        [[ $try == 1 ]] && ka_apt_update
    done
    ka_die "cannot find linux-image-amd64 / busybox-static in the apt lists (is this Debian?)"
}

# ka_download PACKAGE VERSION: prints the path of the cached .deb.
ka_download() {
    local pkg=$1 ver=$2 dir="$KETTLE_CACHE/debs" deb
    deb="$dir/${pkg}_${ver//:/%3a}_amd64.deb"
    if [[ ! -s $deb ]]; then
        mkdir -p "$dir"
        local sandbox=()
        [[ $EUID == 0 ]] && sandbox=(-o APT::Sandbox::User=root)
        [[ $KA_QUIET == 1 ]] && sandbox+=(-qq)
        ka_log "downloading $pkg=$ver"
        if ! (cd "$dir" && apt-get download "${sandbox[@]}" "$pkg=$ver" >&2); then
            ka_apt_update
            (cd "$dir" && apt-get download "${sandbox[@]}" "$pkg=$ver" >&2) ||
                ka_die "apt-get download $pkg=$ver failed"
        fi
        [[ -s $deb ]] || ka_die "apt-get download did not produce $deb"
    fi
    echo "$deb"
}

# ka_extract DEB DIR: dpkg-deb -x into DIR once (DIR/.complete marks success).
ka_extract() {
    local deb=$1 dir=$2
    [[ -e $dir/.complete ]] && return 0
    rm -rf "$dir" "$dir.tmp"
    mkdir -p "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp"
    mv "$dir.tmp" "$dir"
}

# ka_prune: removes what interrupted builds left and the downloads and trees of
# package versions other than the current ones (a kernel tree is ~400 MB).
# Runs under the cache lock, so no other build is in progress.
ka_prune() {
    local p keep
    rm -rf "$KETTLE_CACHE"/assets-build.* "$KETTLE_CACHE"/host-build.* "$KETTLE_CACHE"/trees/*.tmp
    for p in "$KETTLE_CACHE"/trees/* "$KETTLE_CACHE"/debs/*; do
        [[ -e $p ]] || continue
        keep=0
        case ${p##*/} in
            "${KA_KPKG}_${KA_KVER_PKG//:/_}"|"busybox-static_${KA_BB_VER//:/_}") keep=1 ;;
            "${KA_KPKG}_${KA_KVER_PKG//:/%3a}_amd64.deb"|"busybox-static_${KA_BB_VER//:/%3a}_amd64.deb") keep=1 ;;
        esac
        if [[ $keep == 0 ]]; then
            ka_log "removing the outdated $p"
            rm -rf "$p"
        fi
    done
}

# ka_prepare: downloads and extracts both packages and runs depmod.
# Sets KA_KTREE, KA_KVER (uname -r), KA_BBTREE, KA_BUSYBOX.
ka_prepare() {
    ka_require apt-get:apt dpkg-deb:dpkg depmod:kmod cpio:cpio gzip:gzip
    ka_resolve
    local kdeb bbdeb
    kdeb=$(ka_download "$KA_KPKG" "$KA_KVER_PKG")
    bbdeb=$(ka_download busybox-static "$KA_BB_VER")
    KA_KTREE="$KETTLE_CACHE/trees/${KA_KPKG}_${KA_KVER_PKG//:/_}"
    KA_BBTREE="$KETTLE_CACHE/trees/busybox-static_${KA_BB_VER//:/_}"
    if [[ ! -e $KA_KTREE/.complete ]]; then
        ka_log "extracting $KA_KPKG"
        ka_extract "$kdeb" "$KA_KTREE"
        local v
        for v in "$KA_KTREE"/lib/modules/*/; do
            depmod -b "$KA_KTREE" "$(basename "$v")"
        done
        touch "$KA_KTREE/.complete"
    fi
    ka_extract "$bbdeb" "$KA_BBTREE" && touch "$KA_BBTREE/.complete"
    ka_prune
    local moddirs=("$KA_KTREE"/lib/modules/*/)
    KA_KVER=$(basename "${moddirs[0]}")
    KA_BUSYBOX="$KA_BBTREE/bin/busybox"
    [[ -x $KA_BUSYBOX ]] || ka_die "no bin/busybox in $KA_BBTREE"
    [[ -f $KA_KTREE/boot/vmlinuz-$KA_KVER ]] || ka_die "no boot/vmlinuz-$KA_KVER in $KA_KTREE"
}

# ka_norm NAME: module name with '-' as '_'.
ka_norm() { echo "${1//-/_}"; }

# ka_module_path NAME: the modules.dep path (kernel/...) of a loadable module,
# empty if there is none.
ka_module_path() {
    local name
    name=$(ka_norm "$1")
    awk -F: -v want="$name" '{
            n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n); gsub(/-/, "_", n)
            if (n == want) { print $1; exit }
        }' "$KA_KTREE/lib/modules/$KA_KVER/modules.dep"
}

ka_module_builtin() {
    local name
    name=$(ka_norm "$1")
    sed 's#.*/##; s/\.ko$//; s/-/_/g' "$KA_KTREE/lib/modules/$KA_KVER/modules.builtin" |
        grep -qx "$name"
}

# ka_install_modules ROOT OPTIONAL(0|1) NAME...: copies the modules and all their
# dependencies (decompressed) into ROOT/lib/modules/VER/, skipping built-ins.
ka_install_modules() {
    local root=$1 optional=$2 name path dep
    shift 2
    local moddir="$KA_KTREE/lib/modules/$KA_KVER"
    for name in "$@"; do
        path=$(ka_module_path "$name")
        if [[ -z $path ]]; then
            if ka_module_builtin "$name"; then
                ka_log "module $name is built into $KA_KVER: skipped"
                continue
            fi
            [[ $optional == 1 ]] && { ka_log "module $name does not exist in $KA_KVER: skipped"; continue; }
            ka_die "module $name not found in $KA_KVER (neither loadable nor built in)"
        fi
        for dep in $path $(sed -n "s#^$path: *##p" "$moddir/modules.dep"); do
            local src="$moddir/$dep" dst="$root/lib/modules/$KA_KVER/${dep%.ko*}.ko"
            [[ -e $dst ]] && continue
            mkdir -p "$(dirname "$dst")"
            case $src in
                *.ko) cp "$src" "$dst" ;;
                *.ko.xz) ka_require xz:xz-utils; xz -dc "$src" >"$dst" ;;
                *.ko.zst) ka_require zstd:zstd; zstd -qdc "$src" >"$dst" ;;
                *.ko.gz) gzip -dc "$src" >"$dst" ;;
                *) ka_die "unexpected module file $src" ;;
            esac
        done
    done
}

# ka_finish_modules ROOT: module index files for the subset in ROOT.
ka_finish_modules() {
    local root=$1 moddir="$KA_KTREE/lib/modules/$KA_KVER"
    mkdir -p "$root/lib/modules/$KA_KVER"
    cp "$moddir/modules.builtin" "$moddir/modules.order" "$root/lib/modules/$KA_KVER/"
    [[ -f $moddir/modules.builtin.modinfo ]] && cp "$moddir/modules.builtin.modinfo" "$root/lib/modules/$KA_KVER/"
    depmod -b "$root" "$KA_KVER"
}

# ka_install_busybox ROOT: busybox and a symlink for every applet.
ka_install_busybox() {
    local root=$1 applet
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin}
    cp "$KA_BUSYBOX" "$root/bin/busybox"
    for applet in $("$KA_BUSYBOX" --list-full); do
        [[ $applet == bin/busybox || $applet == linuxrc ]] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -sf /bin/busybox "$root/$applet"
    done
}

# ka_base_tree ROOT: directories and /etc files both initramfs kinds share.
ka_base_tree() {
    local root=$1
    mkdir -p "$root"/{dev,proc,sys,tmp,run,root,etc,mnt,var/log}
    chmod 1777 "$root/tmp"
    echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
    echo 'root:x:0:' >"$root/etc/group"
}

# ka_extract_vmlinux BZIMAGE OUT: the uncompressed ELF kernel inside a bzImage
# (it carries a PVH entry note, so it boots without decompressing itself).
# The payload is located by the boot protocol header: setup_sects (0x1f1),
# payload_offset (0x248) and payload_length (0x24c).
ka_extract_vmlinux() {
    local bz=$1 out=$2 setup_sects payload_offset payload_length start magic
    setup_sects=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
    payload_offset=$(od -An -tu4 -j $((0x248)) -N4 "$bz" | tr -d ' ')
    payload_length=$(od -An -tu4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
    [[ $setup_sects == 0 ]] && setup_sects=4
    start=$(( (setup_sects + 1) * 512 + payload_offset ))
    magic=$(od -An -tx1 -j "$start" -N4 "$bz" | tr -d ' ')
    # The payload ends with the 4-byte uncompressed size, which the
    # decompressors see as trailing garbage: stop after the first stream.
    payload() { dd if="$bz" bs=64K iflag=skip_bytes,count_bytes skip="$start" count="$1" status=none; }
    case $magic in
        fd377a58) ka_require xz:xz-utils; payload "$payload_length" | xz -dc --single-stream >"$out" ;;
        28b52ffd) ka_require zstd:zstd; payload $((payload_length - 4)) | zstd -qdc >"$out" ;;
        1f8b*)    payload "$payload_length" | { gzip -dc 2>/dev/null || true; } >"$out" ;;
        *) ka_die "unknown kernel payload compression (magic $magic) in $bz" ;;
    esac
    [[ $(head -c4 "$out" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || ka_die "no ELF kernel extracted from $bz"
}

# ka_cpio ROOT OUT: a newc archive of ROOT (files owned by root).
ka_cpio() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$2"
}

# ka_write_modload ROOT: /lib/kettle/load-module.sh, the shell function both
# initramfs kinds use to load modules (busybox modprobe is not relied upon).
ka_write_modload() {
    local root=$1
    mkdir -p "$root/lib/kettle"
    cat >"$root/lib/kettle/load-module.sh" <<'MODLOAD'
# Sourced by /init. load_module NAME: insmod NAME after its dependencies, which
# are read from modules.dep; '-' and '_' are interchangeable; built-ins and
# loaded modules are skipped.
KVER=$(uname -r)
MODDIR=/lib/modules/$KVER

load_module() {
    local want line path deps dep n
    want=$(echo "$1" | tr - _)
    [ -d "/sys/module/$want" ] && return 0
    line=$(awk -F: -v want="$want" '{
            n = $1; sub(/.*\//, "", n); sub(/\.ko$/, "", n); gsub(/-/, "_", n)
            if (n == want) { print; exit }
        }' "$MODDIR/modules.dep")
    if [ -z "$line" ]; then
        if sed 's#.*/##; s/\.ko$//; s/-/_/g' "$MODDIR/modules.builtin" | grep -qx "$want"; then
            return 0
        fi
        echo "kettle-init: module $1 is not in this initramfs" >&2
        return 1
    fi
    path=${line%%:*}
    deps=${line#*:}
    for dep in $deps; do
        n=$(basename "$dep" .ko)
        load_module "$n" || return 1
    done
    insmod "$MODDIR/$path"
}
MODLOAD
}

ka_write_guest_init() {
    local root=$1
    ka_write_modload "$root"
    # /init sets the guest up as PID 1, then becomes busybox init, so that the
    # guest's own poweroff/reboot/halt (which signal PID 1) work.
    cat >"$root/init" <<'INIT'
#!/bin/sh
# kettle guest /init (written by resources/build-assets.sh, which documents
# the contract: kettle.modules=, kettle.run=, /tests, console markers).
# It mounts, loads modules and prints KETTLE-GUEST-READY, then execs busybox
# init, which runs /etc/inittab (the test or the console shell) as PID 1.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
if ! mount -t devtmpfs devtmpfs /dev 2>/dev/null; then
    mount -t tmpfs -o mode=0755 tmpfs /dev
    mdev -s
    NEED_MDEV=1
fi
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
hostname kettle-guest

. /lib/kettle/load-module.sh

MODULES=
for arg in $(cat /proc/cmdline); do
    case $arg in
        kettle.modules=*) MODULES=${arg#kettle.modules=} ;;
    esac
done

for m in $(echo "$MODULES" | tr , ' '); do
    load_module "$m" || echo "KETTLE-MODULE-FAILED $m"
done
[ -n "${NEED_MDEV:-}" ] && mdev -s
ip link set lo up 2>/dev/null

echo "KETTLE-GUEST-READY"
exec /sbin/init
echo "kettle-init: cannot exec /sbin/init; powering off" >&2
poweroff -f
while :; do sleep 3600; done
INIT
    chmod 755 "$root/init"

    # The entries run on the console (empty id field). A "once" entry does not
    # make init wait (sysinit and wait entries do, and init handles signals
    # only between them), so a poweroff/reboot from the test or the shell is
    # acted on at once.
    cat >"$root/etc/inittab" <<'INITTAB'
# kettle guest /etc/inittab (busybox init; written by resources/build-assets.sh).
# /init has already mounted /proc, /sys, /dev, loaded kettle.modules= and printed
# KETTLE-GUEST-READY. main.sh runs the kettle.run= test (then powers off) or
# the console shell (the guest powers off when it exits).
::once:/lib/kettle/main.sh
# poweroff/reboot/halt (SIGUSR2/SIGTERM/SIGUSR1 to init): these run first, then
# init stops every process and calls reboot(2): ACPI S5 power-off, or a reset.
::shutdown:/bin/sync
::ctrlaltdel:/sbin/reboot
INITTAB

    cat >"$root/lib/kettle/main.sh" <<'MAIN'
#!/bin/sh
# Run once by busybox init (/etc/inittab): the kettle.run=NAME test, or the
# interactive shell on the console.
RUN=
for arg in $(cat /proc/cmdline); do
    case $arg in
        kettle.run=*) RUN=${arg#kettle.run=} ;;
    esac
done

if [ -n "$RUN" ]; then
    if [ -f "/tests/$RUN.sh" ]; then
        sh "/tests/$RUN.sh"
        echo "KETTLE-TEST-EXIT $?"
    else
        echo "KETTLE-TEST-MISSING $RUN"
    fi
    sync
    # At once: init's orderly path (below) pauses ~2 s to let processes exit.
    poweroff -f
else
    cd /root
    setsid cttyhack sh -l
    # The shell exited: power off through init, as a typed poweroff does.
    poweroff
fi
MAIN
    chmod 755 "$root/lib/kettle/main.sh"

    cat >"$root/etc/profile" <<'PROFILE'
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
PS1='kettle# '
PROFILE

    mkdir -p "$root/tests"
    cat >"$root/tests/README" <<'README'
kettle.run=NAME on the kernel command line runs /tests/NAME.sh, prints
"KETTLE-TEST-EXIT <status>" and powers off. Tests add scripts here by
appending a newc cpio archive containing tests/NAME.sh to the initramfs.
README
    cat >"$root/tests/info.sh" <<'INFO'
#!/bin/sh
# Prints what the guest sees; handy as kettle.run=info.
echo "== uname";       uname -a
echo "== cmdline";     cat /proc/cmdline
echo "== cpuinfo";     grep -m1 'model name' /proc/cpuinfo; grep -c ^processor /proc/cpuinfo
echo "== meminfo";     head -n2 /proc/meminfo
echo "== interrupts";  cat /proc/interrupts
echo "== ioports";     cat /proc/ioports
echo "== pci";         for d in /sys/bus/pci/devices/*; do
                           [ -e "$d" ] && echo "${d##*/} $(cat "$d/vendor"):$(cat "$d/device") class $(cat "$d/class")"
                       done
echo "== modules";     cat /proc/modules
echo "== partitions";  cat /proc/partitions
INFO
    chmod 755 "$root/tests/info.sh"
}

# ka_build_assets: builds $KETTLE_CACHE/assets unless it is up to date.
ka_build_assets() {
    ka_prepare
    KA_ASSETS="$KETTLE_CACHE/assets"
    local stamp self_sum
    self_sum=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
    stamp="$KA_KPKG $KA_KVER_PKG busybox-static $KA_BB_VER $self_sum"
    if [[ -f $KA_ASSETS/.stamp && $(cat "$KA_ASSETS/.stamp") == "$stamp" &&
          -s $KA_ASSETS/vmlinuz && -s $KA_ASSETS/vmlinux && -s $KA_ASSETS/guest-initrd.gz ]]; then
        ka_log "assets up to date ($KA_KPKG $KA_KVER_PKG, busybox $KA_BB_VER)"
        return 0
    fi
    ka_log "building guest assets for $KA_KVER"
    local work
    work=$(mktemp -d "$KETTLE_CACHE/assets-build.XXXXXX")
    local root="$work/root"
    mkdir -p "$root"
    ka_base_tree "$root"
    ka_install_busybox "$root"
    ka_install_modules "$root" 0 "${GUEST_MODULES[@]}"
    ka_install_modules "$root" 1 "${GUEST_OPTIONAL_MODULES[@]}"
    ka_finish_modules "$root"
    ka_write_guest_init "$root"
    ka_cpio "$root" "$work/guest-initrd.cpio"
    gzip -9n <"$work/guest-initrd.cpio" >"$work/guest-initrd.gz"
    cp "$KA_KTREE/boot/vmlinuz-$KA_KVER" "$work/vmlinuz"
    ka_extract_vmlinux "$work/vmlinuz" "$work/vmlinux"
    cat >"$work/assets.env" <<ENV
KA_KPKG='$KA_KPKG'
KA_KVER_PKG='$KA_KVER_PKG'
KA_KVER='$KA_KVER'
KA_KTREE='$KA_KTREE'
KA_BB_VER='$KA_BB_VER'
KA_BBTREE='$KA_BBTREE'
KA_BUSYBOX='$KA_BUSYBOX'
ENV
    mkdir -p "$KA_ASSETS"
    rm -f "$KA_ASSETS/.stamp"
    mv -f "$work/vmlinuz" "$work/vmlinux" "$work/guest-initrd.gz" "$work/assets.env" "$KA_ASSETS/"
    echo "$stamp" >"$KA_ASSETS/.stamp"
    rm -rf "$work"
}

# ka_with_lock CMD...: runs CMD holding the cache lock (concurrent runs wait).
ka_with_lock() {
    mkdir -p "$KETTLE_CACHE"
    KETTLE_CACHE=$(cd "$KETTLE_CACHE" && pwd)
    if command -v flock >/dev/null 2>&1; then
        exec {ka_lock_fd}>"$KETTLE_CACHE/lock"
        flock "$ka_lock_fd"
        "$@"
        flock -u "$ka_lock_fd"
        exec {ka_lock_fd}>&-
    else
        "$@"
    fi
}

ka_usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

ka_main() {
    while [[ $# -gt 0 ]]; do
        case $1 in
            --quiet) KA_QUIET=1 ;;
            -h|--help) ka_usage; exit 0 ;;
            *) ka_usage >&2; ka_die "unknown argument: $1" ;;
        esac
        shift
    done
    ka_with_lock ka_build_assets
    echo "$KA_ASSETS/vmlinuz"
    echo "$KA_ASSETS/vmlinux"
    echo "$KA_ASSETS/guest-initrd.gz"
}

# Sourced by nested-host.sh for its functions; run directly, builds the assets.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    ka_main "$@"
fi
