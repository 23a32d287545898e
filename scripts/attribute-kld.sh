#!/usr/bin/env bash
# KLD attribution between two quantised files of the same mix (same tensor types), e.g. our
# QuantEase file and llama.cpp's: for each REGEX, BASE with the matching tensors taken from DONOR
# (scripts/splice_tensors.py) is evaluated against the reference like the quality harness does.
# A spliced KLD below BASE's means DONOR's version of those tensors is the better one.
#
#   scripts/attribute-kld.sh BASE DONOR REF OUT_DIR CHUNKS REGEX...
#
# Prints (and appends to OUT_DIR/attribution.tsv) one line per REGEX: regex, mean KLD, its
# uncertainty, PPL ratio; BASE and DONOR themselves first. Cached per (donor, regex) json file.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=$1 donor=$2 ref=$3 out=$4 chunks=$5
shift 5
text=${QUANTEASE_DATA:-$repo/../shared/data}/wiki.dev.raw
bin=${CARGO_TARGET_DIR:-$repo/target}/release/quantease-gguf
mkdir -p "$out"
evaluate() { # model json
    [ -f "$2" ] && return
    "$bin" perplexity "$1" --text "$text" --base "$ref" --chunks "$chunks" --json > "$2.tmp"
    mv "$2.tmp" "$2"
}
report() { # label json
    python3 - "$1" "$2" <<'PY' | tee -a "$out/attribution.tsv"
import json, sys
d = json.load(open(sys.argv[2]))["kl"]
print(f"{sys.argv[1]}\t{d['kld_mean']['value']:.4f}\t{d['kld_mean']['uncertainty']:.4f}\t{d['ppl_ratio']['value']:.4f}")
PY
}
bname=$(basename "$base" .gguf) dname=$(basename "$donor" .gguf)
evaluate "$base" "$out/$bname.json"; report "$bname" "$out/$bname.json"
evaluate "$donor" "$out/$dname.json"; report "$dname" "$out/$dname.json"
for rx in "$@"; do
    key=$(printf '%s' "$rx" | tr -c 'A-Za-z0-9_' '_')
    json=$out/$bname+$dname-$key.json
    if [ ! -f "$json" ]; then
        python3 "$repo/scripts/splice_tensors.py" "$base" "$donor" "$out/spliced.gguf" "$rx"
        evaluate "$out/spliced.gguf" "$json"
        rm -f "$out/spliced.gguf"
    fi
    report "$bname with $dname's /$rx/" "$json"
done
