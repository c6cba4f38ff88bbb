#!/usr/bin/env bash
# S3 at scale on a cell of separate processes (3 masters, 3 zones x 2 volume servers x 2
# disks, one frontend serving S3): KEYS zero-byte objects put by 16 client processes, then
# ListObjectsV2 of the whole bucket end to end (ROUNDS rounds, keys/s; with boto3, then with
# a lean client that does not parse the XML in Python), then one multipart
# upload of MULTIPART_GIB GiB in 5 MiB parts (per-part time of the first and last 100
# parts: linear time means they match). Each master's peak RSS (VmHWM) is printed at the end.
#
# Usage: bench/s3_scale.sh [WORK_DIR]
#   KEYS=200000  MULTIPART_GIB=5  ROUNDS=3  PHASES="keys list list-raw multipart" (any subset)
#   LOADER=s3 (boto3 PutObject from 16 processes) or LOADER=ns: the keys are put by
#   `cellar bench ns-load` through the masters' NsWrite directly (the PutVersion an S3
#   PutObject of an empty body commits; same state), for buckets too large to fill through
#   Python S3 clients here (10,000,000 keys).
#   CELLAR_BIN=$HOME/.cache/cellar/target/release/cellar
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
bin="${CELLAR_BIN:-$HOME/.cache/cellar/target/release/cellar}"
[ -x "$bin" ] || { echo "no cellar binary at $bin (build it, or set CELLAR_BIN)" >&2; exit 1; }
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
keys="${KEYS:-200000}"
phases="${PHASES:-keys list list-raw multipart}"
loader="${LOADER:-s3}"
gib="${MULTIPART_GIB:-5}"
rounds="${ROUNDS:-3}"
bash scripts/s3-clients.sh
venv="${CELLAR_S3_VENV:-$HOME/.cache/cellar/s3-venv}"
echo "work directory: $work; cellar binary: $bin; $(date -u +%FT%TZ); commit $(git rev-parse --short HEAD)"

pids=()
mpids=()
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() {
  for _ in $(seq 1 1200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1" >&2
  return 1
}
hwm() { awk '/VmHWM/ {print int($2/1024) " MiB"}' "/proc/$1/status" 2>/dev/null || echo "?"; }

masters=()
for _ in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
master_list="$(IFS=,; echo "${masters[*]}")"
echo "volume_size_bytes = 268435456" >"$work/master.toml"
for id in 1 2 3; do
  init=""
  [ "$id" = 1 ] && init="--init"
  "$bin" master --id "$id" --listen "${masters[$((id - 1))]}" --data-dir "$work/m$id" \
    --peers "$peers" --config "$work/master.toml" $init 2>"$work/master-$id.log" &
  pids+=($!)
  mpids+=($!)
done
for z in 1 2 3; do
  for s in 1 2; do
    "$bin" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
      --disk "$work/d-z$z-s$s-1" --disk "$work/d-z$z-s$s-2" 2>"$work/volume-z$z-s$s.log" &
    pids+=($!)
  done
done
s3port="$(free_port)"
"$bin" frontend --http 127.0.0.1:0 --s3 "127.0.0.1:$s3port" --master "$master_list" \
  >"$work/frontend.out" 2>"$work/frontend.log" &
pids+=($!)
fpid=$!
wait_line "$work/frontend.out" "serving S3"
key_out=""
for _ in $(seq 1 600); do
  if key_out="$("$bin" admin key create --master "$master_list" 2>/dev/null)"; then break; fi
  sleep 0.2
done
export S3_ENDPOINT="http://127.0.0.1:$s3port"
S3_ACCESS_KEY="$(echo "$key_out" | sed -n 's/^access_key //p')"
S3_SECRET_KEY="$(echo "$key_out" | sed -n 's/^secret_key //p')"
export S3_ACCESS_KEY S3_SECRET_KEY
py() { "$venv/bin/python" bench/s3_scale.py "$@" | tee -a "$work/results.jsonl"; }
for _ in $(seq 1 600); do
  "$venv/bin/python" -c 'import boto3,os; boto3.client("s3",endpoint_url=os.environ["S3_ENDPOINT"],aws_access_key_id=os.environ["S3_ACCESS_KEY"],aws_secret_access_key=os.environ["S3_SECRET_KEY"],region_name="us-east-1").list_buckets()' 2>/dev/null && break
  sleep 0.2
done
if [[ " $phases " == *" keys "* ]]; then
  echo "== $keys zero-byte objects (loader: $loader)"
  if [ "$loader" = ns ]; then
    "$bin" bench ns-load --master "$master_list" --bucket scale --keys "$keys" --clients 256 | tee -a "$work/results.txt"
  else
    py keys scale "$keys" 16
  fi
  echo "masters after the load: RSS now $(for p in "${mpids[@]}"; do printf '%s ' "$(awk '/VmRSS/ {print int($2/1024) "MiB"}' "/proc/$p/status")"; done); peak $(for p in "${mpids[@]}"; do printf '%s, ' "$(hwm "$p")"; done); data $(du -sh "$work/m1" | cut -f1)"
fi
if [[ " $phases " == *" list "* ]]; then
  echo "== ListObjectsV2 of the bucket, $rounds rounds"
  py list scale "$rounds"
fi
if [[ " $phases " == *" list-raw "* ]]; then
  echo "== the same with a lean client (SigV4 by botocore, http.client, keys counted with a regex)"
  py list-raw scale "$rounds"
fi
if [[ " $phases " == *" multipart "* ]]; then
  echo "== one multipart upload of $gib GiB in 5 MiB parts"
  py multipart big "$gib"
fi
echo "== peak RSS: masters $(for p in "${mpids[@]}"; do printf '%s, ' "$(hwm "$p")"; done)frontend $(hwm "$fpid")"
