#!/usr/bin/env bash
# Build llama.cpp (as vendored by the llama-cpp-sys-2 version in Cargo.lock) with the QuantEase QE
# types: copy the vendored tree, apply ggml-patch/quantease-types.patch, build libquantease_formats.a
# (cargo, own target dir), configure cmake linking it, build qe_eval and qe_selftest.
#
#   scripts/build-patched-llama.sh            # real library (formats crate)
#   QE_TESTDOUBLE=1 scripts/build-patched-llama.sh   # C test double of the contract instead (tests only)
#
# Env: QE_PATCH_DIR (default $QUANTEASE_CACHE/ggml-patch, QUANTEASE_CACHE defaulting to <repo>/cache) - everything is built under it;
#      JOBS (default 2); QE_NATIVE (default ON: -march=native, like RUSTFLAGS=-C target-cpu=native);
#      QE_LLAMA_SRC - use this already-patched tree instead of copying + patching (development).
# Output: $QE_PATCH_DIR/build/bin/qe_eval and qe_selftest (the path is printed at the end).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${QE_PATCH_DIR:-${QUANTEASE_CACHE:-$ROOT/cache}/ggml-patch}"
JOBS="${JOBS:-2}"
PATCH="$ROOT/ggml-patch/quantease-types.patch"
mkdir -p "$OUT"
t_start=$(date +%s)

# 1. the vendored llama.cpp of the llama-cpp-sys-2 version the lock file pins
ver=$(awk '/^name = "llama-cpp-sys-2"$/ {getline; gsub(/version = |"/, ""); print; exit}' "$ROOT/Cargo.lock")
[ -n "$ver" ] || { echo "llama-cpp-sys-2 not found in Cargo.lock" >&2; exit 1; }
vendored=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$ver"/llama.cpp; do
    [ -d "$d" ] && vendored="$d"
done
if [ -z "$vendored" ]; then
    echo "llama-cpp-sys-2 $ver is not in the cargo registry; fetching it (cargo fetch)" >&2
    (cd "$ROOT" && cargo fetch --locked >/dev/null)
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/llama-cpp-sys-2-"$ver"/llama.cpp; do
        [ -d "$d" ] && vendored="$d"
    done
fi
[ -n "$vendored" ] || { echo "cannot find the vendored llama.cpp of llama-cpp-sys-2 $ver" >&2; exit 1; }

# 2. copy + patch (skipped when the tree already carries this exact patch: keeps rebuilds incremental)
if [ -n "${QE_LLAMA_SRC:-}" ]; then
    SRC="$QE_LLAMA_SRC"
else
    SRC="$OUT/src"
    stamp="$(sha256sum "$PATCH" | cut -d' ' -f1) $ver"
    if [ ! -f "$SRC/.quantease-patch" ] || [ "$(cat "$SRC/.quantease-patch")" != "$stamp" ]; then
        echo "== copying llama.cpp from llama-cpp-sys-2 $ver and applying $(basename "$PATCH")"
        rm -rf "$SRC"
        cp -a "$vendored" "$SRC"
        chmod -R u+w "$SRC"
        patch -d "$SRC" -p1 --quiet --forward < "$PATCH"
        echo "$stamp" > "$SRC/.quantease-patch"
    fi
fi

# 3. the QE kernels behind the C ABI
if [ "${QE_TESTDOUBLE:-0}" = 1 ]; then
    echo "== building the C TEST DOUBLE of the QE contract (not the real kernels)"
    mkdir -p "$OUT/testdouble"
    cc -O3 -march=native -fPIC -c "$ROOT/ggml-patch/testdouble/quantease_testdouble.c" -I"$ROOT/formats/include" -o "$OUT/testdouble/quantease_testdouble.o"
    rm -f "$OUT/testdouble/libquantease_testdouble.a"
    ar rcs "$OUT/testdouble/libquantease_testdouble.a" "$OUT/testdouble/quantease_testdouble.o"
    QE_LIB="$OUT/testdouble/libquantease_testdouble.a"
    QE_INC="$ROOT/formats/include"
    BUILD="$OUT/build-testdouble"
else
    echo "== building libquantease_formats.a (cargo, CARGO_TARGET_DIR=$OUT/cargo-target)"
    RUSTFLAGS="${RUSTFLAGS:--C target-cpu=native}" CARGO_TARGET_DIR="$OUT/cargo-target" \
        cargo build --release --locked -p quantease-formats --manifest-path "$ROOT/Cargo.toml"
    QE_LIB="$OUT/cargo-target/release/libquantease_formats.a"
    QE_INC="$ROOT/formats/include"
    [ -f "$QE_LIB" ] || { echo "$QE_LIB was not built: formats/Cargo.toml needs crate-type staticlib" >&2; exit 1; }
    [ -f "$QE_INC/quantease.h" ] || { echo "$QE_INC/quantease.h missing" >&2; exit 1; }
    BUILD="$OUT/build"
fi

# 4. cmake: the patched llama + ggml libraries and our two programs, nothing else
echo "== cmake ($BUILD)"
cmake -S "$ROOT/ggml-patch" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_SRC="$SRC" -DGGML_NATIVE="${QE_NATIVE:-ON}" -DGGML_OPENMP=OFF \
    -DGGML_QUANTEASE=ON -DGGML_QUANTEASE_INCLUDE_DIR="$QE_INC" -DGGML_QUANTEASE_LIBRARY="$QE_LIB" >/dev/null
cmake --build "$BUILD" --target qe_selftest qe_eval qe_requant -j "$JOBS"

echo "== built in $(( $(date +%s) - t_start )) s:"
echo "$BUILD/bin/qe_eval"
echo "$BUILD/bin/qe_selftest"
