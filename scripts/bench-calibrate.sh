#!/usr/bin/env bash
# Calibration cost: wall time of `calibrate --diag-only` (the statistics llama-imatrix collects)
# versus the full Gram collection, on the same model, text and chunks, in one run; prints the
# ratio (target ≤ 1.5×).
#
#   scripts/bench-calibrate.sh [smollm2|gemma3|qwen] [CHUNKS] [CTX] [THREADS]
#
# Defaults: smollm2, 8 chunks of 512 tokens of ../shared/data/groups_merged.txt, all cores.
# QUANTEASE_CACHE (default <repo>/cache) holds the models; CARGO_TARGET_DIR is honoured.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
model=${1:-smollm2}
chunks=${2:-8}
ctx=${3:-512}
threads=${4:-$(nproc)}
text=${QUANTEASE_CALIB_TEXT:-$repo/../shared/data/groups_merged.txt}
src=$(scripts/fetch-model.sh "$model")
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/quantease-gguf
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() { # label, extra args... -> prints seconds
    local label=$1; shift
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" calibrate "$src" --text "$text" -o "$out/$label.gguf" --ctx "$ctx" --chunks "$chunks" \
        --threads "$threads" --quiet "$@"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

diag=$(run diag --diag-only)
full=$(run full)
printf 'model %s, %d chunks × %d tokens, %d threads\n' "$(basename "$src")" "$chunks" "$ctx" "$threads"
printf 'calibrate --diag-only (imatrix): %7.1f s   %s\n' "$diag" "$(du -h "$out/diag.gguf" | cut -f1)"
printf 'calibrate (full Gram):           %7.1f s   %s\n' "$full" "$(du -h "$out/full.gguf" | cut -f1)"
printf 'ratio full / diag-only:          %7.2f×  (target ≤ 1.5×)\n' "$(echo "$full / $diag" | bc -l)"
