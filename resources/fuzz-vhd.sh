#!/usr/bin/env bash
# fuzz-vhd.sh: fuzzes the VHD parser and engine (crate vhd/) for a bounded time.
#
# Usage: resources/fuzz-vhd.sh [SECONDS]     (per target; default 60)
#
# Targets (vhd/fuzz/fuzz_targets/):
#   open_image         arbitrary bytes as a VHD file: open, read every sector, open with the
#                      parent chain, info, check, and a write/flush/reopen round
#   decode_structures  footer, dynamic header, parent locator, BAT and bitmap decoders
#
# How it runs here:
# * cargo-fuzz is installed from crates.io when `cargo fuzz` is missing.
# * Only the stable toolchain is available: RUSTC_BOOTSTRAP=1 lets it accept the
#   -Zsanitizer=address flag cargo-fuzz passes (AddressSanitizer catches out-of-bounds
#   accesses in unsafe code). FUZZ_SANITIZER=none runs without it.
# * Debug assertions are on (-a): an integer overflow is a crash too.
# * libFuzzer limits: -timeout=10 (a slow input is a failure), -malloc_limit_mb=512 (a huge
#   allocation is a failure), -rss_limit_mb=2048.
# * Corpus: the seeds in vhd/fuzz/corpus/<target>/ (small valid images, read only) plus a
#   corpus that grows from run to run in ${KETTLE_CACHE:-~/.cache/kettle}/fuzz-vhd/<target>/.
#   The build is cached there too.
#
# Exits 1 when a target crashes: the input is in vhd/fuzz/artifacts/<target>/. Minimize it
# (the command is printed), fix the bug, and add the file to vhd/tests/corpus/ (see
# vhd/tests/corpus.rs for the naming rules) so that `cargo test` keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
sanitizer=${FUZZ_SANITIZER:-address}
cache=${KETTLE_CACHE:-$HOME/.cache/kettle}/fuzz-vhd
targets=(open_image decode_structures)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-vhd: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version '^0.13' --quiet
fi

export RUSTC_BOOTSTRAP=1
mkdir -p "$cache"
base=/dev/shm
[[ -d $base && -w $base ]] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/kettle-fuzz-vhd.XXXXXX")
trap 'rm -rf "$work"' EXIT
export VHD_FUZZ_DIR=$work/files

flags=(-a --sanitizer "$sanitizer" --target-dir "$cache/target")
cd vhd
echo "fuzz-vhd: building the fuzz targets (sanitizer: $sanitizer)"
if ! cargo fuzz build "${flags[@]}" >"$work/build.log" 2>&1; then
    tail -40 "$work/build.log" >&2
    echo "fuzz-vhd: build failed" >&2
    exit 1
fi

status=0
for t in "${targets[@]}"; do
    mkdir -p "$cache/$t"
    log=$work/$t.log
    echo "fuzz-vhd: $t for ${secs}s (corpus: $cache/$t + vhd/fuzz/corpus/$t)"
    start=$SECONDS
    if cargo fuzz run "${flags[@]}" "$t" "$cache/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1)
        echo "fuzz-vhd: $t: no crash in $((SECONDS - start))s, ${runs:-?} inputs ($cov)"
    else
        status=1
        echo "fuzz-vhd: $t FAILED after $((SECONDS - start))s; the end of its log:" >&2
        grep -vE '^#[0-9]+ +(NEW|REDUCE|pulse)|NEW_FUNC' "$log" | tail -60 >&2
        echo "fuzz-vhd: minimize with: (cd vhd && RUSTC_BOOTSTRAP=1 cargo fuzz tmin ${flags[*]} $t fuzz/artifacts/$t/<file>)" >&2
    fi
done
exit $status
