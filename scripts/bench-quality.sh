#!/usr/bin/env bash
# Quality harness (DESIGN.md §5): llama.cpp's own quantiser versus ours, both with an importance
# matrix / Gram from the same calibration text, measured against the F32 (F16 for big models)
# dequantised source on held-out text.
#
#   scripts/bench-quality.sh MODEL [--chunks N] [--calib-chunks N] [--types "Q4_0 Q4_K_M ..."]
#
# MODEL: smollm2 | gemma3 | qwen (scripts/fetch-model.sh). Steps, each cached (reruns skip files
# that exist; delete a file to redo it):
#   1. reference: `dequantize SRC ref.gguf --type F32` (F16 when the source is over 500 MB);
#   2. calibration, twice from the same --calib-chunks × 512 tokens (default 40 ≈ 20K tokens):
#      `calibrate --diag-only --sink-weight 1` = the imatrix llama-imatrix computes (plain sums),
#      and `calibrate` with our defaults (full Gram, first token of each chunk weighted, see
#      docs/CALIBRATION.md);
#   3. quantise each type with llama.cpp in process (`llama-quantize --imatrix` with the plain
#      imatrix), with ours (`convert --imatrix`, the same plain imatrix), and with
#      `convert --method gptq|quantease --gram` (our Gram file);
#   4. evaluate each file against the reference on wiki.dev.raw (`perplexity --base ref --json`),
#      --chunks × 512 tokens (default 32 chunks = 8160 scored tokens: about 2–4 min per file for
#      SmolLM2 on 2 busy cores; the whole text is ≈ 300 chunks, pass --chunks 0 for all of it).
# Env: QUANTEASE_METHODS (default "gptq quantease") - the full-Gram methods to run;
#      QUANTEASE_MAX_MEMORY - `calibrate --max-memory` for the Gram (default: half of MemAvailable).
# Output: results/<MODEL>/results.md, results.csv, size_vs_kld.png; big files stay in the cache
# ($QUANTEASE_CACHE/quality/<MODEL>, default <repo>/cache).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
model=${1:?usage: bench-quality.sh MODEL [--chunks N] [--calib-chunks N] [--types LIST]}
shift
chunks=32
calib_chunks=40
types="Q4_0 Q4_K_M Q3_K_M Q2_K IQ4_NL"
while [ $# -gt 0 ]; do
    case $1 in
    --chunks) chunks=$2; shift 2 ;;
    --calib-chunks) calib_chunks=$2; shift 2 ;;
    --types) types=$2; shift 2 ;;
    *) echo "bench-quality: unknown option $1" >&2; exit 2 ;;
    esac
done
data=${QUANTEASE_DATA:-$repo/../shared/data}
calib_text=$data/groups_merged.txt
eval_text=$data/wiki.dev.raw
cache=${QUANTEASE_CACHE:-$repo/cache}
work=$cache/quality/$model
results=$repo/results/$model
mkdir -p "$work" "$results"
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install --quiet matplotlib >&2

src=$(scripts/fetch-model.sh "$model")
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/quantease-gguf
manifest=$work/manifest.tsv   # file method type seconds
touch "$manifest"

record() { # file method type seconds (replaces an earlier line for the file)
    grep -v "^$1	" "$manifest" > "$manifest.tmp" || true
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$manifest.tmp"
    mv "$manifest.tmp" "$manifest"
}

timed() { # file method type command... : run unless the file exists, record the time
    local file=$1 method=$2 ty=$3; shift 3
    if [ -f "$work/$file" ]; then return; fi
    echo "== $file: $*" >&2
    local t0 t1
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    record "$file" "$method" "$ty" "$(echo "$t1 - $t0" | bc -l)"
}

ref_type=F32
[ "$(stat -c %s "$src")" -gt 500000000 ] && ref_type=F16
ref=$work/ref-$ref_type.gguf
timed "ref-$ref_type.gguf" reference "$ref_type" "$bin" dequantize "$src" "$ref" --type "$ref_type" --quiet
imatrix=$work/imatrix-$calib_chunks.gguf
timed "imatrix-$calib_chunks.gguf" calibrate imatrix "$bin" calibrate "$ref" --text "$calib_text" \
    -o "$imatrix" --chunks "$calib_chunks" --diag-only --sink-weight 1 --quiet
sink=$("$bin" calibrate --help | grep -e '--sink-weight' | sed -n 's/.*\[default: \([0-9.]*\)\].*/\1/p')
gram=$work/calib-$calib_chunks-sw$sink.gram.gguf
timed "calib-$calib_chunks-sw$sink.gram.gguf" calibrate gram "$bin" calibrate "$ref" --text "$calib_text" \
    -o "$gram" --chunks "$calib_chunks" ${QUANTEASE_MAX_MEMORY:+--max-memory "$QUANTEASE_MAX_MEMORY"} --quiet

solver=no
"$bin" convert --help | grep -q -- '--method' && solver=yes
for ty in $types; do
    timed "llama-$ty.gguf" llama.cpp+imatrix "$ty" \
        "$bin" llama-quantize "$ref" "$work/llama-$ty.gguf" --type "$ty" --imatrix "$imatrix"
    timed "ours-$ty.gguf" ours+imatrix "$ty" \
        "$bin" convert "$ref" "$work/ours-$ty.gguf" --type "$ty" --imatrix "$imatrix" --quiet
    if [ $solver = yes ]; then
        for m in ${QUANTEASE_METHODS:-gptq quantease}; do
            timed "$m-$ty.gguf" "$m+gram" "$ty" \
                "$bin" convert "$ref" "$work/$m-$ty.gguf" --type "$ty" --method "$m" --gram "$gram" --quiet
        done
    fi
done

chunk_args=()
[ "$chunks" != 0 ] && chunk_args=(--chunks "$chunks")
while IFS=$'\t' read -r file method ty secs; do
    case $method in reference | calibrate) continue ;; esac
    json=$work/$file.eval-$chunks.json
    if [ ! -f "$json" ]; then
        echo "== evaluate $file" >&2
        "$bin" perplexity "$work/$file" --text "$eval_text" --base "$ref" "${chunk_args[@]}" --json > "$json.tmp"
        mv "$json.tmp" "$json"
    fi
    if [ ! -f "$work/$file.inspect.json" ]; then
        "$bin" inspect --json "$work/$file" > "$work/$file.inspect.json"
    fi
done < "$manifest"

python3 scripts/quality_report.py "$model" "$work" "$results" "$chunks" "$calib_chunks"
