# shellcheck shell=bash
# bench-common.sh: what the benchmarks resources/bench-boot.sh, bench-ide.sh, bench-net.sh and
# bench-state.sh share: their messages and common options, building kettle and the guest
# assets, the guest initramfs with the benchmark's own files, QEMU's files for the nested test
# host, running the nested host, and retrying a stalled one. Sourced, never run:
#
#   set -euo pipefail
#   source "$(dirname "${BASH_SOURCE[0]}")/bench-common.sh" NAME USAGE
#
# NAME is the script's name for its messages ("bench-net": "bench-net: error: ..."), USAGE its
# options for the one-line usage of a usage error ("[--runs N] ... [--help]"). The script's
# --help text is its header comment: from line 2 up to its `set -euo pipefail`.
#
# The functions work on the script's global variables, as the scripts did before they shared
# them: runs, kettle, timeout, keep_log (the options), qemu, initrd, work, adds, status and
# results. None of them may be called as a condition (`if f`, `f || ...`): set -e is off there.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "bench-common.sh: source it with NAME and USAGE" >&2; exit 2; }
BENCH_NAME=$1
BENCH_USAGE=$2
BENCH_SCRIPT=${BASH_SOURCE[1]}
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$BENCH_DIR")

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$BENCH_SCRIPT"; }
usage_error() {
    echo "$BENCH_NAME: $*" >&2
    echo "usage: resources/$BENCH_NAME.sh $BENCH_USAGE" >&2
    exit 2
}
die() { echo "$BENCH_NAME: error: $*" >&2; exit 1; }
log() { echo "$BENCH_NAME: $*" >&2; }

# bench_parse_args [OPTION_FN] ARGS...: the options of every benchmark (--runs, --kettle,
# --timeout, --keep-log, -h/--help) into runs (default 3), kettle, timeout and keep_log (default
# empty). OPTION_FN ("" for none) is the script's function for its own options: called with the
# arguments left, it takes an option with a value (status 0: both are used) or returns 1 (not
# one of its options).
bench_parse_args() {
    local option_fn=$1
    shift
    runs=3 timeout="" keep_log="" kettle=""
    while [[ $# -gt 0 ]]; do
        case $1 in
            --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage_error "--runs needs a positive number"; runs=$2; shift ;;
            --kettle) [[ $# -ge 2 ]] || usage_error "--kettle needs a PATH"; kettle=$2; shift ;;
            --timeout) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || usage_error "--timeout needs SECONDS"; timeout=$2; shift ;;
            --keep-log) [[ $# -ge 2 ]] || usage_error "--keep-log needs a FILE"; keep_log=$2; shift ;;
            -h|--help) usage; exit 0 ;;
            *)
                if [[ -n $option_fn ]] && "$option_fn" "$@"; then
                    shift
                else
                    usage_error "unknown argument: $1"
                fi ;;
        esac
        shift
    done
}

# bench_find_qemu: qemu (this machine's qemu-system-x86_64, links resolved), or dies.
bench_find_qemu() {
    qemu=$(command -v qemu-system-x86_64 || true)
    [[ -n $qemu ]] || die "qemu-system-x86_64 is not installed (resources/setup.sh installs it)"
    qemu=$(readlink -f "$qemu")
}

# bench_prepare [--no-build]: checks --kettle's binary, or builds kettle when --kettle was not
# given (not with --no-build: then kettle stays empty); builds the guest assets and sets initrd
# (guest-initrd.gz). Leaves the shell in the repository.
# shellcheck disable=SC2120 # the option is optional
bench_prepare() {
    if [[ -n $kettle ]]; then
        [[ -f $kettle && -x $kettle ]] || die "--kettle: not an executable file: $kettle"
        kettle=$(readlink -f "$kettle")
    fi
    cd "$REPO"
    if [[ -z $kettle && ${1:-} != --no-build ]]; then
        log "building kettle (cargo build --release -p vmm)"
        cargo build --release -p vmm --quiet || die "cargo build --release -p vmm failed"
        kettle="${CARGO_TARGET_DIR:-$REPO/target}/release/kettle"
        [[ $kettle == /* ]] || kettle="$REPO/$kettle"
    fi
    local assets
    assets=$("$BENCH_DIR/build-assets.sh" --quiet) || die "resources/build-assets.sh failed"
    initrd=$(grep '/guest-initrd.gz$' <<<"$assets" || true)
    [[ -f $initrd ]] || die "build-assets.sh printed no guest-initrd.gz: $assets"
}

# bench_workdir PREFIX: work, a new directory ${TMPDIR:-/tmp}/PREFIX.XXXXXX removed on exit.
bench_workdir() {
    work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    trap 'rm -rf "$work"' EXIT
}

# bench_initrd DIR...: $work/bench-initrd, the guest initramfs plus the directories DIR... of
# $work/extra (the benchmark's test scripts in tests/, its tools in bin/) as a second
# (uncompressed, 4-byte aligned) newc archive.
bench_initrd() {
    local size
    cp "$initrd" "$work/bench-initrd"
    size=$(stat -c %s "$work/bench-initrd")
    head -c $(( (4 - size % 4) % 4 )) /dev/zero >>"$work/bench-initrd"
    (cd "$work/extra" && find "$@" | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >>"$work/bench-initrd"
}

# bench_adds [ADD_OPTION...]: copies QEMU's data directories to $work/share and sets adds, the
# --add options of nested-host.sh for them, for $work/bench-initrd (/guest/bench-initrd) and
# ADD_OPTION... (the benchmark's own files, "--add SRC:DEST" each).
# shellcheck disable=SC2120 # the options are optional
bench_adds() {
    # Symlinks are resolved when nested-host.sh copies the directories, so drop the ones that
    # lead nowhere here (e.g. OVMF.fd without the ovmf package).
    local d
    mkdir -p "$work/share"
    for d in /usr/share/qemu /usr/share/seabios; do
        if [[ -d $d ]]; then cp -a "$d" "$work/share/"; fi
    done
    [[ -d $work/share/qemu ]] || die "/usr/share/qemu is missing (package qemu-system-data)"
    find "$work/share" -xtype l -delete
    adds=(--add "$work/share/qemu:/usr/share/qemu" --add "$work/bench-initrd:/guest/bench-initrd" "$@")
    if [[ -d $work/share/seabios ]]; then adds+=(--add "$work/share/seabios:/usr/share/seabios"); fi
}

# bench_nested CONSOLE PROGRESS_FN [OPTION...]: runs $work/inner.sh in a nested test host (with
# kettle, or without when kettle is empty; QEMU and $adds; OPTION... and --timeout $timeout for
# nested-host.sh), its console to CONSOLE and, line by line, to the function PROGRESS_FN (reads
# stdin, logs progress). Sets status, nested-host.sh's exit status.
bench_nested() {
    local console=$1 progress_fn=$2 kettle_args=(--no-kettle)
    shift 2
    if [[ -n $kettle ]]; then kettle_args=(--kettle "$kettle"); fi
    set +e
    # QEMU finds its firmware relative to its own path (../share/qemu, ../share/seabios): keep
    # it in /usr/bin.
    "$BENCH_DIR/nested-host.sh" "${kettle_args[@]}" --bin "$qemu:/usr/bin/qemu-system-x86_64" "${adds[@]}" \
        "$@" --timeout "$timeout" "$work/inner.sh" | tee "$console" | "$progress_fn"
    status=${PIPESTATUS[0]}
    set -e
}

# bench_nested_once PROGRESS_FN [OPTION...]: bench_nested with the console in $work/console
# (copied to --keep-log's file); sets results, its BENCH-* lines.
bench_nested_once() {
    bench_nested "$work/console" "$@"
    if [[ -n $keep_log ]]; then cp "$work/console" "$keep_log"; fi
    results=$(tr -d '\r' <"$work/console" | grep -a '^BENCH-' || true)
}

# bench_script_output CONSOLE: what the script printed in the nested host (its console lines
# from NESTED-SCRIPT-BEGIN to NESTED-SCRIPT-END), carriage returns removed.
bench_script_output() {
    tr -d '\r' <"$1" | sed -n '/^NESTED-SCRIPT-BEGIN/,/^NESTED-SCRIPT-END/p'
}

# bench_attempt FIRST PROGRESS_FN: one nested host running $work/inner.sh (written for runs
# FIRST..), its console in $work/console.FIRST (appended to --keep-log's file); appends its
# "BENCH " and BENCH-QEMU lines to $results and sets status; when it failed, shows the failed
# runs ("BENCH-FAILED" lines and the "=== " run headers) on stderr.
bench_attempt() {
    local console="$work/console.$1"
    bench_nested "$console" "$2"
    if [[ -n $keep_log ]]; then cat "$console" >>"$keep_log"; fi
    results+=$'\n'$(tr -d '\r' <"$console" | grep -a -e '^BENCH ' -e '^BENCH-QEMU' || true)
    if [[ $status != 0 ]]; then
        bench_script_output "$console" | grep -a -e '^BENCH-FAILED' -e '^=== ' >&2 || true
    fi
}

# bench_attempts ATTEMPT_FN COMPLETE_FN: runs ATTEMPT_FN 1 $runs (the script's function running
# runs FIRST..LAST in one nested host with bench_attempt); when that nested host timed out,
# retries once, in a new nested host, the runs not yet complete (COMPLETE_FN I: status 0 when
# $results has all of run I), and says so on stderr. Sets results and status.
bench_attempts() {
    local attempt_fn=$1 complete_fn=$2 done_runs=0
    results=""
    if [[ -n $keep_log ]]; then : >"$keep_log"; fi
    "$attempt_fn" 1 "$runs"
    if [[ $status == 124 ]]; then
        # TESTING.md: the emulator can (rarely) stall; here the nested host then stops dead (the
        # outer QEMU idles, even the inner `timeout` never fires). Retry once, the runs not yet
        # complete, and say so.
        while [[ $done_runs -lt $runs ]] && "$complete_fn" $((done_runs + 1)); do done_runs=$((done_runs + 1)); done
        # Drop the lines of the incomplete run(s); they run again.
        results=$(awk -v d="$done_runs" '!($1 == "BENCH" && $3 + 0 > d)' <<<"$results")
        log "RETRYING: the nested host timed out (stalled) after $done_runs complete run(s) per VMM; the console ended with:"
        tr -d '\r' <"$work/console.1" | tail -n 8 >&2
        "$attempt_fn" $((done_runs + 1)) "$runs"
    fi
}

# bench_nested_failed CONSOLE: the nested host gave no results: says so with the tail of its
# console, and exits 1.
bench_nested_failed() {
    echo "$BENCH_NAME: the nested host failed (status $status); the tail of its console:" >&2
    tr -d '\r' <"$1" | tail -n 30 >&2
    exit 1
}

# bench_finish: exits 1, saying so, when the nested host failed (some runs failed; the numbers
# are printed by then).
bench_finish() {
    if [[ $status != 0 ]]; then
        echo "$BENCH_NAME: some runs failed (see above); nested host status $status" >&2
        exit 1
    fi
}
