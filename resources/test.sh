#!/usr/bin/env bash
# test.sh: sets up what the tests need and runs the whole test suite.
#
# Usage: resources/test.sh [extra cargo test args]
#
# 1. resources/setup.sh installs missing packages (QEMU for the nested test host, binutils, ...).
# 2. builds kettle (release: the nested test host runs it) and the guest assets (cached in
#    ${KETTLE_CACHE:-~/.cache/kettle}).
# 3. runs every test: unit tests, local small-guest tests on /dev/kvm, and Linux guests in the
#    nested test host (TESTING.md). Nothing is skipped: a test that cannot run fails and says why.
# 4. fuzzes the VHD parser for a bounded time (resources/fuzz-vhd.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
resources/setup.sh
cargo build --release -p vmm
resources/build-assets.sh --quiet


log=$(mktemp)
trap 'rm -f "$log"' EXIT
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --release --no-fail-fast "$@" 2>&1 | tee "$log"
# The VHD parser fuzzers, bounded: 30 s per target after the build (resources/fuzz-vhd.sh).
resources/fuzz-vhd.sh 30
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "kettle: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
