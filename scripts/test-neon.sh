#!/usr/bin/env bash
# Run the quantease-formats unit tests (NEON kernels against the scalar reference, encoders,
# decoders) for aarch64 under qemu user-mode emulation: cross-compiled with the Debian
# aarch64 gcc as linker, run by qemu-aarch64. Installs gcc-aarch64-linux-gnu, the arm64 libc and
# qemu-user when missing, and the Rust target through rustup. Used by scripts/test.sh;
# QUANTEASE_SKIP_NEON=1 skips it there.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_apt+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need_apt+=(qemu-user)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx "$target" && ! rustup target add "$target"; then
    # rustup's server is not a package registry; a machine that cannot reach it cannot build
    # for aarch64. Say so loudly rather than fail the whole suite on a missing toolchain part.
    echo "test-neon: SKIPPED — the Rust target $target is not installed and rustup could not add it" >&2
    exit 0
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# .cargo/config.toml asks for target-cpu=native, which means the x86 host; the aarch64 baseline
# already has NEON.
export RUSTFLAGS=""
# One run; its summary and the kernels it found (proof that NEON ran) are printed, the whole log
# only when something fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! cargo test --release -p quantease-formats --target "$target" --lib -- --nocapture > "$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
grep -E "kernels available|test result" "$log" >&2
