#!/usr/bin/env bash
# The main job: builds the cellar binary and starts the one-command local cell
# (`cellar dev`: 3 masters, 3 zones x 2 volume servers x 2 disks, one frontend, data in
# ~/.cellar/dev, HTTP block API on 127.0.0.1:7480) until Ctrl-C. With arguments, runs
# `cellar ARGS...` instead (e.g. ./scripts/run.sh put FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

cargo build --release --locked -p cellar
bin="$CARGO_TARGET_DIR/release/cellar"
if [ $# -eq 0 ]; then
  exec "$bin" dev
fi
exec "$bin" "$@"
