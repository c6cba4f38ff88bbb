#!/usr/bin/env bash
# 4 MiB puts and gets on a fresh cell of separate processes (3 `cellar master`, 3 zones x 2
# `cellar volume` x 2 disks, one `cellar frontend`, as bench/compare_seaweedfs.sh starts
# them): 64 blocks at 1 client, then 512 at 32 clients with GET_ROUNDS get rounds, each
# phase after the masters report the cell idle; then each process's peak RSS and CPU
# seconds. For A/B runs of one change on this noisy machine: run it alternately with the
# two settings or binaries and compare the medians.
#
#   BIN=path/to/cellar VOL_ARGS="--recent-records-mib 0" FE_ARGS="..." \
#     bench/large_rows.sh LABEL [WORK_DIR]
#
# VOL_ARGS / FE_ARGS are added to every volume server's / the frontend's command line;
# VOL_ENV / FE_ENV (e.g. MIMALLOC_PURGE_DELAY=-1) to their environment. Other block sizes
# and loads: SIZE (bytes, 4194304), COUNT_ONE (64 blocks at 1 client), COUNT_MANY (512)
# at CLIENTS (32) clients.
set -euo pipefail
label=${1:?label}
work=${2:-$(mktemp -d /tmp/cellar-large-rows.XXXXXX)}
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${BIN:-}" ]; then
  # shellcheck source=/dev/null
  source "$here/scripts/env.sh"
  (cd "$here" && cargo build --release --locked -p cellar >/dev/null)
  BIN="$CARGO_TARGET_DIR/release/cellar"
fi
get_rounds=${GET_ROUNDS:-3}
d="$work/cell"
rm -rf "$d"
mkdir -p "$d"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
roles=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$d"
}
trap cleanup EXIT
masters=()
for _ in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
master_list="${masters[0]},${masters[1]},${masters[2]}"
for id in 1 2 3; do
  init=()
  [ "$id" = 1 ] && init=(--init)
  # shellcheck disable=SC2086
  env RUST_LOG=warn ${M_ENV:-} "$BIN" master --id "$id" --listen "${masters[$((id - 1))]}" \
    --data-dir "$d/m$id" --peers "$peers" "${init[@]}" 2>"$d/master-$id.log" &
  pids+=($!); roles+=(master)
done
for z in 1 2 3; do
  for s in 1 2; do
    # shellcheck disable=SC2086
    env RUST_LOG=warn ${VOL_ENV:-} "$BIN" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
      --disk "$d/d-z$z-s$s-1" --disk "$d/d-z$z-s$s-2" ${VOL_ARGS:-} 2>"$d/volume-z$z-s$s.log" &
    pids+=($!); roles+=(volume)
  done
done
http="127.0.0.1:$(free_port)"
# shellcheck disable=SC2086
env RUST_LOG=warn ${FE_ENV:-} "$BIN" frontend --http "$http" --master "$master_list" ${FE_ARGS:-} \
  >"$d/frontend.out" 2>"$d/frontend.log" &
pids+=($!); roles+=(frontend)
started=""
for _ in $(seq 1 600); do
  if head -c 4096 /dev/urandom | "$BIN" put --endpoint "http://$http" - >/dev/null 2>&1; then started=1; break; fi
  sleep 0.2
done
[ -n "$started" ] || { echo "the cell took no put in 120 s (logs in $d)" >&2; exit 1; }
size=${SIZE:-4194304}
clients=${CLIENTS:-32}
"$BIN" bench blocks --endpoint "http://$http" --size "$size" --count "${COUNT_ONE:-64}" --concurrency 1 \
  --idle-master "$master_list" | grep -E "^(put|get) " | sed "s/^/$label c1 /"
"$BIN" bench blocks --endpoint "http://$http" --size "$size" --count "${COUNT_MANY:-512}" --concurrency "$clients" \
  --get-rounds "$get_rounds" --idle-master "$master_list" | grep -E "^(put|get) " | sed "s/^/$label c$clients /"
for i in "${!pids[@]}"; do
  p=${pids[$i]}
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$p/status" 2>/dev/null || echo "?")
  cpu=$(awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$p/stat" 2>/dev/null || echo "?")
  echo "$label ${roles[$i]} peak ${hwm} MiB, cpu ${cpu} s"
done
