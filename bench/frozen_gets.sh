#!/usr/bin/env bash
# Gets with one volume server frozen, on a cell of separate processes talking gRPC over
# loopback: 3 masters, 3 zones x 2 volume servers x 2 disks, one frontend. Each round puts
# COUNT blocks of SIZE bytes (cellar bench blocks, CONCURRENCY clients), waits for the cell
# to go idle (seals, encodes), then runs the gets twice over the same blocks: once with
# every server running, once with one volume server stopped by SIGSTOP (its sockets stay
# open and nothing answers: a hung disk or host). The frozen server holds a replica or a
# fragment of most volumes, so most gets meet it and must be hedged to another holder.
# Each round uses a fresh cell and freezes a different server.
#
# Usage: bench/frozen_gets.sh [WORK_DIR]   (ROUNDS=3 SIZE=1048576 COUNT=512 CONCURRENCY=16;
# BIN=path/to/cellar to run another binary, for A/B runs)
# Prints each round's get p50/p99 with none and one frozen, then the medians. Each round's
# disks and master data are removed after it (its logs and results stay).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BIN:-}" ]; then
  bin="$BIN"
else
  source scripts/env.sh
  cargo build --release --locked -p cellar >/dev/null
  bin="$CARGO_TARGET_DIR/release/cellar"
fi
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
echo "work directory: $work"
rounds="${ROUNDS:-3}"
size="${SIZE:-1048576}"
count="${COUNT:-512}"
concurrency="${CONCURRENCY:-16}"

pids=()
frozen=""
cleanup() {
  [ -n "$frozen" ] && kill -CONT "$frozen" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_line() { # file needle
  for _ in $(seq 1 1200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no '$2' in $1" >&2
  return 1
}

results="$work/results.txt"
: >"$results"
for round in $(seq 1 "$rounds"); do
  dir="$work/round-$round"
  rm -rf "$dir"
  mkdir -p "$dir"
  pids=()
  masters=()
  for id in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
  peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
  master_list="$(IFS=,; echo "${masters[*]}")"
  echo "volume_size_bytes = 67108864" >"$dir/master.toml"
  for id in 1 2 3; do
    init=""
    [ "$id" = 1 ] && init="--init"
    "$bin" master --id "$id" --listen "${masters[$((id - 1))]}" --data-dir "$dir/m$id" \
      --peers "$peers" --config "$dir/master.toml" $init 2>"$dir/master-$id.log" &
    pids+=($!)
  done
  vpids=()
  for z in 1 2 3; do
    for s in 1 2; do
      "$bin" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
        --disk "$dir/d-z$z-s$s-1" --disk "$dir/d-z$z-s$s-2" 2>"$dir/volume-z$z-s$s.log" &
      pids+=($!)
      vpids+=($!)
    done
  done
  "$bin" frontend --http 127.0.0.1:0 --master "$master_list" --volume-mib 64 --writers 16 \
    >"$dir/frontend.out" 2>"$dir/frontend.log" &
  pids+=($!)
  wait_line "$dir/frontend.out" "frontend serving"
  url="$(sed -n 's/^frontend serving //p' "$dir/frontend.out")"
  for _ in $(seq 1 600); do
    curl -sf -X PUT --data-binary "ready-$round" "$url/v1/blocks" >/dev/null && break
    sleep 0.2
  done
  victim="${vpids[$(( (round - 1) % 6 ))]}"
  common=(--endpoint "$url" --size "$size" --count "$count" --concurrency "$concurrency" --idle-master "$master_list")
  echo "== round $round: none frozen"
  "$bin" bench blocks "${common[@]}" | tee "$dir/none.txt"
  # The same blocks again would be deduplicated: a second run puts new ones, then freezes.
  echo "== round $round: volume server pid $victim frozen before the gets"
  frozen="$victim"
  "$bin" bench blocks "${common[@]}" --before-gets "kill -STOP $victim" | tee "$dir/frozen.txt"
  kill -CONT "$victim"
  frozen=""
  curl -s "$url/metrics" | grep -E '^cellar_frontend_(hedged_reads|degraded_reads)_total' | tee "$dir/metrics.txt"
  # phase line: "get SIZE B xC ops ops/s MB/s p50 p99"
  none=$(awk '/^get /{print $8, $9}' "$dir/none.txt")
  one=$(awk '/^get /{print $8, $9}' "$dir/frozen.txt")
  echo "$round $none $one" >>"$results"
  cleanup
  pids=()
  # The round's disks and master data (~4 GB) go; its logs and results stay.
  rm -rf "$dir"/d-* "$dir"/m[0-9]*
done

echo
echo "gets of $size B x$concurrency, $count blocks; p50/p99 in ms"
printf '%-6s %12s %12s %12s %12s\n' round "p50 none" "p99 none" "p50 frozen" "p99 frozen"
while read -r r a b c d; do printf '%-6s %12s %12s %12s %12s\n' "$r" "$a" "$b" "$c" "$d"; done <"$results"
python3 - "$results" <<'PY'
import statistics, sys
rows = [list(map(float, l.split()[1:])) for l in open(sys.argv[1]) if l.strip()]
med = [statistics.median(c) for c in zip(*rows)]
print(f"{'median':<6} {med[0]:>12.2f} {med[1]:>12.2f} {med[2]:>12.2f} {med[3]:>12.2f}")
print(f"p99 frozen / p99 none (median of rounds): {statistics.median(r[3] / r[1] for r in rows):.2f}")
PY
