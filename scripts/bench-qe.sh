#!/usr/bin/env bash
# QE-format quality sweep on SmolLM2-135M (bits × outlier fraction × method, plus mixes), next to
# the llama.cpp and standard-format points of scripts/bench-quality.sh (run that first: it makes
# ref-F32.gguf, calib-16-sw30.gram.gguf and the baseline files in $QUANTEASE_CACHE/quality/smollm2).
#
#   scripts/bench-qe.sh [--chunks N] [CONFIG_FILE]
#
# CONFIG_FILE: lines `NAME METHOD TYPE-LABEL convert-args...` (default: scripts/qe-sweep.txt);
# `REF`, `GRAM` in the arguments stand for the reference and the Gram file. Each NAME.gguf is
# converted once (delete it to redo), evaluated against the reference on wiki.dev.raw (--chunks,
# default 8, the setting of results/smollm2) and inspected. Output: results/smollm2/results.md,
# results.csv, size_vs_kld.png (baselines and QE rows together) via scripts/quality_report.py.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
chunks=8
[ "${1:-}" = --chunks ] && { chunks=$2; shift 2; }
config=${1:-scripts/qe-sweep.txt}
data=${QUANTEASE_DATA:-$repo/../shared/data}
cache=${QUANTEASE_CACHE:-$repo/cache}
base=$cache/quality/smollm2
work=$cache/quality/smollm2-qe2   # QE format version 2 (version-1 files are not readable)
results=$repo/results/smollm2
mkdir -p "$work"
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/quantease-gguf
ref=$base/ref-F32.gguf
gram=$base/calib-16-sw30.gram.gguf
manifest=$work/manifest.tsv
# Baseline rows (llama.cpp and standard formats) are linked from the base work dir.
grep -v -E '^(qe-|mix-)' "$manifest" 2>/dev/null > "$manifest.tmp" || true
while IFS=$'\t' read -r file method ty secs; do
    for f in "$file" "$file.eval-$chunks.json" "$file.inspect.json"; do
        [ -e "$base/$f" ] && ln -sf "$base/$f" "$work/$f"
    done
    grep -q "^$file	" "$manifest.tmp" || printf '%s\t%s\t%s\t%s\n' "$file" "$method" "$ty" "$secs" >> "$manifest.tmp"
done < "$base/manifest.tsv"
grep -E '^(qe-|mix-)' "$manifest" 2>/dev/null >> "$manifest.tmp" || true
mv "$manifest.tmp" "$manifest"

record() {
    grep -v "^$1	" "$manifest" > "$manifest.tmp" || true
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$manifest.tmp"
    mv "$manifest.tmp" "$manifest"
}

while read -r name method label args; do
    case $name in '' | '#'*) continue ;; esac
    file=$name.gguf
    args=${args//REF/$ref}
    args=${args//GRAM/$gram}
    if [ ! -f "$work/$file" ]; then
        echo "== $file: convert $args" >&2
        t0=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$bin" convert "$ref" "$work/$file" $args --quiet --report "$work/$file.report.json"
        t1=$(date +%s.%N)
        record "$file" "$method" "$label" "$(echo "$t1 - $t0" | bc -l)"
    fi
    json=$work/$file.eval-$chunks.json
    if [ ! -f "$json" ]; then
        echo "== evaluate $file" >&2
        "$bin" perplexity "$work/$file" --text "$data/wiki.dev.raw" --base "$ref" --chunks "$chunks" \
            --json --tmp-dir "$work" > "$json.tmp"
        mv "$json.tmp" "$json"
    fi
    [ -f "$work/$file.inspect.json" ] || "$bin" inspect --json "$work/$file" > "$work/$file.inspect.json"
done < "$config"

python3 scripts/quality_report.py smollm2 "$work" "$results" "$chunks" 16
python3 scripts/qe_sweep_table.py "$work" "$results" "$chunks"
