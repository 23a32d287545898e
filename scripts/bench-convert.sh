#!/usr/bin/env bash
# Streaming benchmark: time and peak RSS of converting a model (default: the 1.1 GB
# Qwen2.5-Coder-1.5B Q4_K_M) to a type (default Q4_0), median of N runs (default 1).
#
#   scripts/bench-convert.sh [qwen|smollm2|gemma3] [TYPE] [RUNS]
#
# Prints one line per run and a summary line; the target is peak RSS < 1 GB (streaming, not
# loading the model).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-qwen}
ty=${2:-Q4_0}
runs=${3:-1}
scripts/setup.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
src=$(scripts/fetch-model.sh "$model")
cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-target}/release/quantease-gguf
out=$(mktemp -d)/out.gguf
times=()
rss=()
for i in $(seq 1 "$runs"); do
    /usr/bin/time -f "%e %M" -o "$out.time" "$bin" convert "$src" "$out" --type "$ty" --quiet
    read -r t m < "$out.time"
    echo "run $i: $t s, peak RSS $((m / 1024)) MiB"
    times+=("$t"); rss+=("$m")
done
size=$(stat -c %s "$out")
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "convert $(basename "$src") → $ty on $(nproc) cores: median $(med "${times[@]}") s, peak RSS $(( $(med "${rss[@]}") / 1024 )) MiB (max $(( $(printf '%s\n' "${rss[@]}" | sort -g | tail -1) / 1024 )) MiB), output $((size / 1048576)) MiB, input $(( $(stat -c %s "$src") / 1048576 )) MiB"
rm -rf "$(dirname "$out")"
