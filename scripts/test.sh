#!/usr/bin/env bash
# Runs every check and test. One cargo profile (release) for clippy, the tests and the
# binary, so that RocksDB's C++ is compiled once per machine.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --release --locked --workspace --no-fail-fast
echo "== all checks passed in $(( $(date +%s) - start ))s"
