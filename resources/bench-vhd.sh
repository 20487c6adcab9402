#!/usr/bin/env bash
# bench-vhd.sh: kettle's VHD code side by side with qemu-img and with a raw file (issue 3's
# benchmark). It prints numbers and ratios; it is not a test and fails only if something
# cannot run. Takes about 3-4 minutes and ~10 GiB of free space in the work directory.
#
# Usage: resources/bench-vhd.sh [WORKDIR]     (default: a new directory under /var/tmp,
#                                              removed at the end; tmpfs would hide the disk)
#
# Images (2 GiB dynamic VHDs with 2 MiB blocks, both made by qemu-img, so neither tool
# reads its own files):
#   empty.vhd  mostly empty: ~5 MiB written by qemu-io at four places
#   full.vhd   mostly full: random data in 90% of the blocks (every tenth 2 MiB block is a
#              hole), converted by qemu-img from full.raw, which the engine runs use as the
#              "same data as a raw image" (the run prints how many blocks each image has
#              allocated)
#
# 1. Conversions, each from a cold page cache (`sync; echo 3 > /proc/sys/vm/drop_caches`,
#    root; when that is refused the runs are warm and the table says so; in a VM the host
#    may still cache the disk), timed up to and including `sync` of the output file
#    (qemu-img does not sync its output itself; kettle does, before renaming it into
#    place). Each tool runs three times, alternating which goes first; medians are shown:
#      kettle vhd convert --to raw SRC DST       vs  qemu-img convert -f vpc -O raw SRC DST
#      kettle vhd convert --to dynamic SRC DST   vs  qemu-img convert -f vpc -O vpc -o subformat=dynamic SRC DST
#    both with their default settings (2 MiB blocks, zero ranges left as holes/unallocated).
#    The raw outputs of the two tools are compared byte for byte (the VHD outputs with
#    `qemu-img compare`), and the space each output takes on disk is shown.
# 2. The engine (vhd/examples/engine_bench.rs): VhdDisk on full.vhd against RawDisk on
#    full.raw, one thread, cold cache before each run (both files are read once before,
#    so that a VM host's cache holds both alike), median of three runs per side
#    (alternating which goes first): sequential read of the whole disk (1 MiB requests),
#    4 KiB random reads (20000), sequential writes (512 MiB, 1 MiB requests) and 4 KiB
#    random writes (20000) over allocated data and into a new empty disk (allocating
#    blocks); writes end with one flush, inside the timing.
#
# Ratios are kettle / qemu-img for conversion times (below 1: kettle is faster) and
# VHD / raw for engine throughput (1 would mean the VHD layer costs nothing).
set -euo pipefail
workdir=${1:+$(realpath -m "$1")}
cd "$(dirname "$0")/.."
repo=$PWD

start_all=$SECONDS
for t in qemu-img qemu-io; do
    command -v $t >/dev/null || { echo "bench-vhd: $t is missing (Debian qemu-utils; resources/setup.sh installs it)" >&2; exit 1; }
done

echo "bench-vhd: building kettle and the engine benchmark"
cargo build --release -q -p vmm
cargo build --release -q -p vhd --example engine_bench
kettle=$repo/target/release/kettle
engine=$repo/target/release/examples/engine_bench

if [[ -n $workdir ]]; then
    dir=$workdir
    mkdir -p "$dir"
    keep=1
else
    dir=$(mktemp -d /var/tmp/kettle-bench-vhd.XXXXXX)
    keep=0
fi
cleanup() { [[ $keep == 1 ]] || rm -rf "$dir"; }
trap cleanup EXIT
cd "$dir"

cold=1
drop_caches() {
    sync
    if [[ $cold == 1 ]] && ! (echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        cold=0
        echo "bench-vhd: cannot drop the page cache (not root?): every run is warm"
    fi
}
drop_caches
cache_state() { [[ $cold == 1 ]] && echo "cold cache" || echo "warm cache"; }

MiB=$((1024 * 1024))
size=$((2048 * MiB))
block=$((2 * MiB))

echo "bench-vhd: making the images in $dir"
rm -f empty.vhd full.vhd full.raw
qemu-img create -q -f vpc -o subformat=dynamic empty.vhd 2G
qemu-io -f vpc -c "write -P 0x5a 0 1M" -c "write -P 0xa5 700M 2M" \
    -c "write -P 0x33 1500M 1M" -c "write -P 0x77 2040M 1M" empty.vhd >/dev/null
# Random data, fast: AES-CTR keystream (kernel's urandom manages ~150 MiB/s here).
# (openssl ends on SIGPIPE when head has enough.)
(openssl enc -aes-128-ctr -nosalt -pass pass:kettle-bench -pbkdf2 </dev/zero 2>/dev/null || true) |
    head -c $size >full.raw
for ((b = 0; b < size / block; b += 10)); do
    fallocate --punch-hole --offset $((b * block)) --length $block full.raw
done
qemu-img convert -f raw -O vpc -o subformat=dynamic full.raw full.vhd
sync

rows=$dir/rows.tsv
: >"$rows"
# timed OUTPUT CMD...: runs CMD from a cold cache, then syncs OUTPUT; sets $elapsed (s).
# (Not in a $(...) subshell, so that a failing CMD stops the script.)
timed() {
    local out=$1
    shift
    rm -f "$out"
    drop_caches
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    sync "$out"
    local t1=$EPOCHREALTIME
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
}
mib_on_disk() { du --block-size=1M "$1" | cut -f1; }

median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

# convert_pair NAME SRC raw|dynamic EXT: both tools three times, alternating which goes
# first; the median time of each.
convert_pair() {
    local name=$1 src=$2 to=$3 ext=$4
    local qfmt=(-O raw)
    [[ $to == dynamic ]] && qfmt=(-O vpc -o subformat=dynamic)
    local tk=() tq=() rep
    for rep in 1 2 3; do
        if ((rep % 2)); then
            timed "k.$ext" "$kettle" vhd convert --to "$to" "$src" "k.$ext"
            tk+=("$elapsed")
            timed "q.$ext" qemu-img convert -f vpc "${qfmt[@]}" "$src" "q.$ext"
            tq+=("$elapsed")
        else
            timed "q.$ext" qemu-img convert -f vpc "${qfmt[@]}" "$src" "q.$ext"
            tq+=("$elapsed")
            timed "k.$ext" "$kettle" vhd convert --to "$to" "$src" "k.$ext"
            tk+=("$elapsed")
        fi
    done
    local same
    if [[ $ext == raw ]]; then
        cmp -s k.raw q.raw && same=identical || same=DIFFERENT
    else
        qemu-img compare -q -f vpc -F vpc k.vhd q.vhd && same=identical || same=DIFFERENT
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$(median3 "${tk[@]}")" "$(median3 "${tq[@]}")" \
        "$(mib_on_disk "k.$ext")" "$(mib_on_disk "q.$ext")" "$same" >>"$rows"
    rm -f "k.$ext" "q.$ext"
}

allocation() { "$kettle" vhd info "$1" | sed -n 's/^ *allocated blocks: *//p'; }
echo "bench-vhd: empty.vhd: $(allocation empty.vhd) blocks allocated; full.vhd: $(allocation full.vhd)"

echo "bench-vhd: conversions"
convert_pair "mostly empty -> raw" empty.vhd raw raw
convert_pair "mostly empty -> dynamic VHD" empty.vhd dynamic vhd
convert_pair "mostly full -> raw" full.vhd raw raw
convert_pair "mostly full -> dynamic VHD" full.vhd dynamic vhd

echo "bench-vhd: engine"
# The guest's page cache is dropped before each run, but a VM's host may cache the disk:
# read both files once so that neither starts hotter there (full.vhd was just read by the
# conversions).
cat full.vhd full.raw >/dev/null
engine_flags=()
[[ $cold == 1 ]] && engine_flags+=(--drop-caches)
"$engine" full.vhd full.raw "$dir" "${engine_flags[@]}" >engine.tsv

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "== kettle vhd convert vs qemu-img convert: 2 GiB dynamic VHD source, $(cache_state), seconds"
printf '%-30s %9s %9s %7s %13s %13s  %s\n' operation kettle qemu-img ratio "kettle MiB" "qemu-img MiB" "outputs"
while IFS=$'\t' read -r name tk tq mk mq same; do
    printf '%-30s %9s %9s %7s %13s %13s  %s\n' "$name" "$tk" "$tq" "$(ratio "$tk" "$tq")" "$mk" "$mq" "$same"
done <"$rows"
echo "(ratio = kettle / qemu-img time: below 1 is faster; MiB = space the output takes on disk)"
echo
echo "== engine: VhdDisk on full.vhd vs RawDisk on the same data as a raw file, $(cache_state)"
printf '%-52s %10s %10s %7s  %s\n' measurement VHD raw ratio unit
while IFS=$'\t' read -r name v r unit; do
    printf '%-52s %10s %10s %7s  %s\n' "${name#engine: }" "$v" "$r" "$(ratio "$v" "$r")" "$unit"
done <engine.tsv
echo "(ratio = VHD / raw: 1 means the VHD layer costs nothing)"
echo
echo "bench-vhd: done in $((SECONDS - start_all)) s"
