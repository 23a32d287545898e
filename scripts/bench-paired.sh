#!/usr/bin/env bash
# Paired calibration after a bench-quality.sh run (docs/solver.md, "Paired calibration"):
#
#   scripts/bench-paired.sh MODEL TYPE [STRENGTH ...] [--chunks N] [--calib-chunks N]
#
# Uses the work directory of `scripts/bench-quality.sh MODEL` (the reference and the one-shot
# QuantEase file quantease-TYPE.gguf must exist there; run bench-quality first with the same
# --chunks / --calib-chunks). Steps, each cached:
#   1. `calibrate ref --paired quantease-TYPE.gguf` on the same calibration text and chunks →
#      paired-TYPE.gram.gguf (Grams of the quantised model's inputs + cross products);
#   2. per STRENGTH (default: 0 and 0.3): `convert ref --type TYPE --gram paired-TYPE.gram.gguf
#      --cross-strength STRENGTH` → paired-TYPE-sSTRENGTH.gguf;
#   3. `perplexity --base ref` on wiki.dev.raw, and one line per file: mean KLD next to the
#      one-shot file's.
# Env: QUANTEASE_MAX_MEMORY (calibrate --max-memory), QUANTEASE_CACHE, CARGO_TARGET_DIR.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
model=${1:?usage: bench-paired.sh MODEL TYPE [STRENGTH ...] [--chunks N] [--calib-chunks N]}
ty=${2:?usage: bench-paired.sh MODEL TYPE [STRENGTH ...]}
shift 2
chunks=32
calib_chunks=40
strengths=()
while [ $# -gt 0 ]; do
    case $1 in
    --chunks) chunks=$2; shift 2 ;;
    --calib-chunks) calib_chunks=$2; shift 2 ;;
    *) strengths+=("$1"); shift ;;
    esac
done
[ ${#strengths[@]} -eq 0 ] && strengths=(0 0.3)
data=${QUANTEASE_DATA:-$repo/../shared/data}
work=${QUANTEASE_CACHE:-$repo/cache}/quality/$model
ref=$(ls "$work"/ref-F32.gguf "$work"/ref-F16.gguf 2>/dev/null | head -1)
oneshot=$work/quantease-$ty.gguf
[ -n "$ref" ] && [ -f "$oneshot" ] || {
    echo "bench-paired: need $work/ref-F*.gguf and $oneshot (run scripts/bench-quality.sh $model first)" >&2
    exit 2
}
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/quantease-gguf
gram=$work/paired-$ty.gram.gguf
if [ ! -f "$gram" ]; then
    echo "== calibrate --paired $oneshot" >&2
    "$bin" calibrate "$ref" --paired "$oneshot" --text "$data/groups_merged.txt" -o "$gram" \
        --chunks "$calib_chunks" ${QUANTEASE_MAX_MEMORY:+--max-memory "$QUANTEASE_MAX_MEMORY"} --quiet
fi
kld() { python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['kl']['kld_mean']['value'], 4))" "$1"; }
eval_json() { # file → its eval json (cached)
    local json=$1.eval-$chunks.json
    if [ ! -f "$json" ]; then
        "$bin" perplexity "$1" --text "$data/wiki.dev.raw" --base "$ref" --chunks "$chunks" --json > "$json.tmp"
        mv "$json.tmp" "$json"
    fi
    echo "$json"
}
base=$(kld "$(eval_json "$oneshot")")
for st in "${strengths[@]}"; do
    out=$work/paired-$ty-s$st.gguf
    if [ ! -f "$out" ]; then
        echo "== convert --cross-strength $st" >&2
        "$bin" convert "$ref" "$out" --type "$ty" --method quantease --gram "$gram" --cross-strength "$st" --quiet
    fi
    echo "$model $ty paired strength $st: mean KLD $(kld "$(eval_json "$out")") (one-shot QuantEase $base)"
done
