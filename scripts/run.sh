#!/usr/bin/env bash
# The main job: builds the cellar binary and runs it. Until the cluster exists this is
# the blockstore self-check on a temporary directory; arguments are passed to cellar.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

cargo build --release --locked -p cellar
bin="$CARGO_TARGET_DIR/release/cellar"
if [ $# -eq 0 ]; then
  exec "$bin" selfcheck
fi
exec "$bin" "$@"
