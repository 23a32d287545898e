#!/usr/bin/env bash
# Regenerate fixtures/golden/ by compiling ggml's ggml-quants.c (vendored in the llama-cpp-sys-2
# 0.1.161 crate source under ~/.cargo/registry/src) together with scripts/golden/make_golden.c.
set -euo pipefail

VERSION=0.1.161
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/fixtures/golden}"

shopt -s nullglob
candidates=("${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$VERSION"/llama.cpp)
if [ "${#candidates[@]}" -eq 0 ]; then
    echo "llama-cpp-sys-2-$VERSION sources not found under ~/.cargo/registry/src (run cargo fetch)" >&2
    exit 1
fi
L="${candidates[0]}"

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
CC="${CC:-gcc}"
# Plain -O2 for the generic x86-64 target: no -march=native, so no FMA contraction in ggml's
# scalar dequantisers (the values are the portable C results).
"$CC" -O2 -std=gnu11 -c "$L/ggml/src/ggml-quants.c" -I "$L/ggml/include" -I "$L/ggml/src" -o "$build/ggml-quants.o"
"$CC" -O2 -std=gnu11 -c "$here/golden/make_golden.c" -I "$L/ggml/include" -I "$L/ggml/src" -o "$build/make_golden.o"
"$CC" "$build/make_golden.o" "$build/ggml-quants.o" -lm -o "$build/make_golden"

mkdir -p "$out"
"$build/make_golden" "$out"
echo "wrote $(ls "$out" | wc -l) files to $out ($(du -sb "$out" | cut -f1) bytes)"
