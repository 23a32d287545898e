#!/usr/bin/env bash
# Install what a fresh machine lacks to build and test quantease-gguf:
# cmake, a C++ compiler and libclang (for the vendored llama.cpp), and the `gguf` Python package
# (independent cross-check of the files we write). Idempotent.
set -euo pipefail
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
# bindgen needs libclang itself (libclang.so / libclang-N.so); libclang-cpp, which a fresh image
# may already have, does not count.
ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 \
    || need_apt+=(libclang-dev clang)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c "import gguf, numpy" 2>/dev/null || python3 -m pip install --quiet gguf numpy
