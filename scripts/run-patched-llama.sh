#!/usr/bin/env bash
# Run a QE GGUF natively in the QE-patched llama.cpp and compare it with our own evaluation of the
# same file's F16 dequantisation.
#
#   scripts/run-patched-llama.sh MODEL_QE.gguf [TEXT] [CHUNKS]
#
# Steps: (1) quantease-gguf dequantize MODEL --type F16 (cached beside the QE file in the work dir);
# (2) qe_eval -m MODEL --ref F16: the QE file through the patched llama.cpp (QE vec_dot with Q8_0
# activations) and the F16 file through the same build, chunk by chunk: PPL of both, mean KLD,
# same-top-token rate, max |logit difference|; (3) quantease-gguf perplexity F16 (the stock
# vendored llama.cpp that our tool drives) for the PPL our tool reports.
#
# Env: QUANTEASE_PATCHED_LLAMA  qe_eval binary (default $QUANTEASE_CACHE/ggml-patch/build/bin/qe_eval)
#      QUANTEASE_BIN            quantease-gguf binary with the `llama` feature and QE support
#                               (default: target/release/quantease-gguf of this checkout)
#      QE_WORK                  scratch dir for the F16 file (default $QUANTEASE_CACHE/ggml-patch/run)
#      CTX (512), THREADS (2)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODEL="${1:?usage: run-patched-llama.sh MODEL_QE.gguf [TEXT] [CHUNKS]}"
TEXT="${2:-$ROOT/../shared/data/wiki.dev.raw}"
[ -f "$TEXT" ] || TEXT=/work/shared/data/wiki.dev.raw
CHUNKS="${3:-20}"
CTX="${CTX:-512}"
THREADS="${THREADS:-2}"
CACHE="${QUANTEASE_CACHE:-$ROOT/cache}"
QE_EVAL="${QUANTEASE_PATCHED_LLAMA:-$CACHE/ggml-patch/build/bin/qe_eval}"
QG="${QUANTEASE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/quantease-gguf}"
WORK="${QE_WORK:-$CACHE/ggml-patch/run}"
[ -x "$QE_EVAL" ] || { echo "no qe_eval at $QE_EVAL: run scripts/build-patched-llama.sh" >&2; exit 1; }
[ -x "$QG" ] || { echo "no quantease-gguf at $QG: cargo build --release (or set QUANTEASE_BIN)" >&2; exit 1; }
mkdir -p "$WORK"

F16="$WORK/$(basename "${MODEL%.gguf}").f16.gguf"
if [ ! -f "$F16" ] || [ "$MODEL" -nt "$F16" ]; then
    echo "== $QG dequantize $MODEL $F16 --type F16"
    "$QG" dequantize "$MODEL" "$F16" --type F16 --threads "$THREADS" -q
fi

echo "== patched llama.cpp: $QE_EVAL -m $MODEL --ref $F16 -c $CTX --chunks $CHUNKS -t $THREADS"
"$QE_EVAL" -m "$MODEL" --ref "$F16" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS"

echo "== quantease-gguf perplexity (stock vendored llama.cpp) on the F16 dequantisation"
"$QG" perplexity "$F16" --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" --threads "$THREADS"
