#!/usr/bin/env bash
# Time to repair a lost volume server, on a cell of separate processes talking gRPC over
# loopback: 3 masters, 4 zones x 2 volume servers x 2 disks (rs-6-3 needs a fourth zone
# for a lost server's fragments to be placed again within the zone rules), one frontend.
# Steps: measure the device's sequential read bandwidth (dd, O_DIRECT) on the file system
# of the work directory; start the cell; put a few verification blocks (cellar put) and
# fill the cell with FILL_GIB GiB of 4 MiB blocks (cellar bench blocks); run the
# foreground benches (4 MiB and 4 KiB puts and gets) on the healthy cell; kill -9 one
# volume server (z1-s1) and run the same foreground benches at once, while the masters
# notice it (down_after_ms) and rebuild what it held elsewhere; poll `cellar admin status`
# every second for the node going down and for the cell back at full redundancy
# (redundancy.below_full == 0 and repair.tasks_open == 0); then read the verification
# blocks back and compare their SHA-256.
#
# Usage: bench/repair_time.sh [WORK_DIR]
#   FILL_GIB=4          GiB of 4 MiB blocks put before the kill (fractions allowed: 0.25)
#   DOWN_AFTER_MS=10000 master down_after_ms (node_silent_after_ms is set to min(3000, it))
#   REPAIR_BPS=         master repair_bytes_per_sec (unset: the master's default)
#   REPAIR_TASKS=       master repair_tasks_max (unset: the master's default)
#   CELLAR_BIN=$HOME/.cache/cellar/target/release/cellar   the cellar binary (not built here)
#   DEVICE_TEST_MIB=2048  size of the dd file for the device read bandwidth
#   REPAIR_DEADLINE_S=3600  longest wait for the cell to be back at full redundancy
#   VERIFY_BLOCKS=16    random 4 MiB blocks put before the fill and read back after repair
#   FG_AFTER_DOWN=0     1: start the 'during' foreground benches once the victim is marked
#                       down (default: right after the kill, so they may see detection only)
# Prints a summary (also written to WORK_DIR/summary.txt); the work directory keeps the
# logs and the raw outputs.
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
fill_gib="${FILL_GIB:-4}"
down_after_ms="${DOWN_AFTER_MS:-10000}"
repair_bps="${REPAIR_BPS:-}"
repair_tasks="${REPAIR_TASKS:-}"
device_mib="${DEVICE_TEST_MIB:-2048}"
deadline_s="${REPAIR_DEADLINE_S:-3600}"
verify_blocks="${VERIFY_BLOCKS:-16}"
fill_count="$(python3 -c "import sys; print(max(1, round(float(sys.argv[1]) * 256)))" "$fill_gib")"

pids=()
cleanup() { # the frontend first, the masters last (fewer errors logged on the way out)
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$work/ddtest.bin"
}
trap cleanup EXIT

now() { date +%s.%N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_line() { # file needle
  for _ in $(seq 1 1200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no '$2' in $1" >&2
  return 1
}

# ---- (1) device sequential read bandwidth on the work directory's file system
echo "== device read bandwidth: writing ${device_mib} MiB of random data to $work/ddtest.bin"
head -c "$((device_mib << 20))" /dev/urandom |
  dd of="$work/ddtest.bin" bs=4M iflag=fullblock conv=fdatasync 2>"$work/dd-write.txt"
tail -n 1 "$work/dd-write.txt"
: >"$work/dd-read.txt"
for i in 1 2 3; do
  dd if="$work/ddtest.bin" of=/dev/null bs=4M iflag=direct 2>"$work/dd-read-$i.txt"
  tail -n 1 "$work/dd-read-$i.txt" | tee -a "$work/dd-read.txt"
done
rm -f "$work/ddtest.bin"
# "N bytes (...) copied, S s, R MB/s": MB/s from bytes and seconds (dd's own unit varies)
device_mbps="$(python3 - "$work/dd-read.txt" <<'PY'
import re, statistics, sys
rates = []
for line in open(sys.argv[1]):
    m = re.match(r"(\d+) bytes .* copied, ([0-9.]+) s", line)
    if m:
        rates.append(int(m.group(1)) / 1e6 / float(m.group(2)))
print(f"{statistics.median(rates):.1f}")
PY
)"
echo "device sequential read (O_DIRECT, 4 MiB, median of 3): $device_mbps MB/s"

# ---- (2) the cell
masters=()
for _ in 1 2 3; do masters+=("127.0.0.1:$(free_port)"); done
peers="1=${masters[0]},2=${masters[1]},3=${masters[2]}"
master_list="$(IFS=,; echo "${masters[*]}")"
silent_ms=$((down_after_ms < 3000 ? down_after_ms : 3000))
{
  echo "volume_size_bytes = 67108864"
  echo "node_silent_after_ms = $silent_ms"
  echo "down_after_ms = $down_after_ms"
  if [ -n "$repair_bps" ]; then echo "repair_bytes_per_sec = $repair_bps"; fi
  if [ -n "$repair_tasks" ]; then echo "repair_tasks_max = $repair_tasks"; fi
} >"$work/master.toml"
echo "== master config:"
sed 's/^/  /' "$work/master.toml"
for id in 1 2 3; do
  init=""
  [ "$id" = 1 ] && init="--init"
  "$bin" master --id "$id" --listen "${masters[$((id - 1))]}" --data-dir "$work/m$id" \
    --peers "$peers" --config "$work/master.toml" $init 2>"$work/master-$id.log" &
  pids+=($!)
done
declare -A vpid
for z in 1 2 3 4; do
  for s in 1 2; do
    "$bin" volume --listen 127.0.0.1:0 --zone "z$z" --master "$master_list" \
      --disk "$work/d-z$z-s$s-1" --disk "$work/d-z$z-s$s-2" 2>"$work/volume-z$z-s$s.log" &
    pids+=($!)
    vpid["z$z-s$s"]=$!
  done
done
"$bin" frontend --http 127.0.0.1:0 --master "$master_list" --volume-mib 64 --writers 16 \
  >"$work/frontend.out" 2>"$work/frontend.log" &
pids+=($!)
wait_line "$work/frontend.out" "frontend serving"
url="$(sed -n 's/^frontend serving //p' "$work/frontend.out")"
ready=""
for _ in $(seq 1 600); do
  if curl -sf -X PUT --data-binary "ready-$$" "$url/v1/blocks" >/dev/null; then ready=1; break; fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "the cell did not accept a put in 120 s" >&2; exit 1; }
echo "== cell up: frontend $url, masters $master_list"

status_json() { "$bin" admin status --master "$master_list" --json; }
# Waits until no task is open and no volume is sealed-but-not-coded (as bench --idle-master).
wait_idle() {
  local idle=0
  for _ in $(seq 1 1200); do
    if status_json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sealed = sum(c for k, c in s["volumes"].items() if "SEALED" in k.upper())
sys.exit(0 if s["tasks"]["open"] == 0 and sealed == 0 else 1)'; then
      idle=$((idle + 1))
      [ "$idle" -ge 2 ] && return 0
    else
      idle=0
    fi
    sleep 0.5
  done
  echo "the cell did not go idle in 600 s" >&2
  return 1
}

# How many of the stat answers (files) name node VICTIM among their replicas or fragments.
count_on_node() { # victim files...
  python3 - "$@" <<'PY'
import json, sys
victim = int(sys.argv[1])
n = 0
for path in sys.argv[2:]:
    try:
        s = json.load(open(path))
    except ValueError:
        continue
    n += any(e.get("node") == victim for e in s.get("replicas", []) + s.get("fragments", []))
print(n)
PY
}

# ---- (3) verification blocks, then the fill
echo "== putting $verify_blocks random 4 MiB verification blocks"
mkdir -p "$work/verify"
: >"$work/verify/hashes.txt"
for i in $(seq 1 "$verify_blocks"); do
  head -c 4194304 /dev/urandom >"$work/verify/block"
  want="$(sha256sum "$work/verify/block" | cut -d' ' -f1)"
  got="$("$bin" put --endpoint "$url" "$work/verify/block")"
  [ "$got" = "$want" ] || { echo "put of a verification block returned $got, expected $want" >&2; exit 1; }
  echo "$want" >>"$work/verify/hashes.txt"
done
rm -f "$work/verify/block"
echo "== fill: $fill_count blocks of 4 MiB ($fill_gib GiB)"
"$bin" bench blocks --endpoint "$url" --size 4194304 --count "$fill_count" --concurrency 16 \
  --idle-master "$master_list" | tee "$work/fill.txt"

# ---- (4) foreground benches on the healthy cell
fg_benches() { # label
  "$bin" bench blocks --endpoint "$url" --size 4194304 --count 64 --concurrency 8 | tee "$work/fg-$1-4m.txt"
  "$bin" bench blocks --endpoint "$url" --size 4096 --count 2000 --concurrency 32 | tee "$work/fg-$1-4k.txt"
}
echo "== foreground benches, healthy cell"
fg_benches before
wait_idle

# ---- (5) the victim
status_json >"$work/status-before.json"
python3 - "$work/status-before.json" "$work" >"$work/victim.txt" <<'PY'
import json, sys, re
s = json.load(open(sys.argv[1]))
work = sys.argv[2]
nodes = {n["id"]: n for n in s["nodes"]}
by_server = {}
for d in s["disks"]:
    m = re.search(r"d-(z\d+-s\d+)-\d+$", d["path"])
    if m:
        by_server.setdefault(m.group(1), set()).add(d["node_id"])
for server, ids in sorted(by_server.items()):
    assert len(ids) == 1, (server, ids)
    (nid,) = ids
    print(f"server {server} node {nid} state {nodes[nid]['state']} address {nodes[nid]['address']}")
victim = next(iter(by_server["z1-s1"]))
used = sum(d["used_bytes"] for d in s["disks"] if d["node_id"] == victim)
print(f"victim {victim} {used}")
PY
victim_node="$(awk '$1=="victim"{print $2}' "$work/victim.txt")"
victim_bytes="$(awk '$1=="victim"{print $3}' "$work/victim.txt")"
victim_pid="${vpid[z1-s1]}"
echo "== nodes (from the disks' paths in admin status):"
grep '^server' "$work/victim.txt" | while read -r _ server _ nid rest; do
  logged="$(grep -m1 'volume server registered' "$work/volume-$server.log" | grep -o 'node=[0-9]*' || true)"
  echo "  $server pid ${vpid[$server]} node $nid ${rest} (log: ${logged:-none})"
done
repair_limit="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["repair"]; print(r["bytes_per_sec_limit"], r["tasks_max"])' "$work/status-before.json")"
echo "repair limits in force: bytes_per_sec ${repair_limit% *} (0: none), tasks_max ${repair_limit#* }"
echo "victim: z1-s1, pid $victim_pid, node $victim_node, $victim_bytes bytes used on its disks"
while read -r h; do
  "$bin" stat --endpoint "$url" "$h" >"$work/verify/stat-before-$h.json" 2>>"$work/verify/errors.txt" || true
done <"$work/verify/hashes.txt"
on_victim_before="$(count_on_node "$victim_node" "$work"/verify/stat-before-*.json)"
echo "verification blocks with a replica or fragment on the victim: $on_victim_before of $verify_blocks"

# ---- (6) kill, then the foreground benches during detection and repair; (7) the poller
t0="$(now)"
kill -9 "$victim_pid"
wait "$victim_pid" 2>/dev/null || true
echo "== killed z1-s1 (pid $victim_pid) at $t0"
python3 - "$bin" "$master_list" "$victim_node" "$t0" "$deadline_s" "$work/poll.log" "$work/poll-result.txt" <<'PY' &
import json, subprocess, sys, time
bin_, masters, victim, t0, deadline, log_path, result_path = sys.argv[1:]
victim, t0, deadline = int(victim), float(t0), float(deadline)
t_down = t_full = None
last = None
below_at_down = None
below_max = pending_max = 0
with open(log_path, "w") as log:
    log.write("secs_since_kill victim_state below_full repair_open repair_failed bytes_pending tasks_open\n")
    while time.time() - t0 < deadline:
        started = time.time()
        try:
            out = subprocess.run([bin_, "admin", "status", "--master", masters, "--json"],
                                 capture_output=True, text=True, timeout=10)
            s = json.loads(out.stdout)
        except Exception as e:  # an election, a slow answer: try again
            log.write(f"{started - t0:.1f} status failed: {e}\n")
            log.flush()
            time.sleep(1)
            continue
        at = time.time()
        state = next((n["state"] for n in s["nodes"] if n["id"] == victim), "gone")
        r = s["repair"]
        below = s["redundancy"]["below_full"]
        last = (state, below, r["tasks_open"], r["tasks_failed"], r["bytes_pending"], s["tasks"]["open"])
        log.write(f"{at - t0:.1f} " + " ".join(map(str, last)) + "\n")
        log.flush()
        if t_down is None and "DOWN" in state.upper():
            t_down = at
            below_at_down = below
        if t_down is not None:
            below_max = max(below_max, below)
            pending_max = max(pending_max, r["bytes_pending"])
        if t_down is not None and below == 0 and r["tasks_open"] == 0:
            t_full = at
            break
        time.sleep(max(0.0, 1.0 - (time.time() - started)))
with open(result_path, "w") as f:
    f.write(f"t_down {t_down if t_down else 'none'}\n")
    f.write(f"t_full {t_full if t_full else 'none'}\n")
    f.write(f"last {' '.join(map(str, last)) if last else 'none'}\n")
    f.write(f"below_at_down {below_at_down}\n")
    f.write(f"below_max {below_max}\n")
    f.write(f"pending_max {pending_max}\n")
PY
poller=$!
pids+=($poller)
if [ "${FG_AFTER_DOWN:-0}" = 1 ]; then
  echo "== waiting for the victim to be marked down before the foreground benches (FG_AFTER_DOWN=1)"
  until awk 'NR > 1 && $2 == "down" {f = 1} END {exit !f}' "$work/poll.log" 2>/dev/null ||
    ! kill -0 "$poller" 2>/dev/null; do sleep 0.2; done
fi
t_fg_start="$(now)"
echo "== foreground benches, during detection and repair"
fg_status=0
fg_benches during || fg_status=$?
t_fg_end="$(now)"
[ "$fg_status" = 0 ] || echo "!! a foreground bench during repair failed (exit $fg_status)"
echo "== waiting for the cell to be back at full redundancy (poll log: $work/poll.log)"
wait "$poller" || true
t_down="$(awk '$1=="t_down"{print $2}' "$work/poll-result.txt")"
t_full="$(awk '$1=="t_full"{print $2}' "$work/poll-result.txt")"
echo "last poll: $(sed -n 's/^last //p' "$work/poll-result.txt") (state below_full repair_open repair_failed bytes_pending tasks_open)"

# ---- integrity: the verification blocks read back after repair
verified=0
bad=0
on_victim=0
if [ "$t_full" != none ]; then
  while read -r h; do
    if "$bin" get --endpoint "$url" -o "$work/verify/got" "$h" 2>>"$work/verify/errors.txt" &&
      [ "$(sha256sum "$work/verify/got" | cut -d' ' -f1)" = "$h" ]; then
      verified=$((verified + 1))
    else
      bad=$((bad + 1))
    fi
    "$bin" stat --endpoint "$url" "$h" >"$work/verify/stat-after-$h.json" 2>>"$work/verify/errors.txt" || true
  done <"$work/verify/hashes.txt"
  rm -f "$work/verify/got"
  on_victim="$(count_on_node "$victim_node" "$work"/verify/stat-after-*.json)"
fi
status_json >"$work/status-after.json" || true

# ---- (8) summary
python3 - "$work" "$fill_count" "$victim_bytes" "$device_mbps" "$t0" "${t_down}" "${t_full}" \
  "$t_fg_end" "$fg_status" "$verify_blocks" "$verified" "$bad" "$on_victim" "$victim_node" \
  "$down_after_ms" "$silent_ms" "${repair_limit% *}" "${repair_limit#* }" "$t_fg_start" "$work/poll-result.txt" "$on_victim_before" \
  <<'PY' | tee "$work/summary.txt"
import glob, re, sys
(work, fill_count, victim_bytes, device_mbps, t0, t_down, t_full, t_fg_end, fg_status,
 verify_n, verified, bad, on_victim, victim_node, down_after_ms, silent_ms, bps, tasks_max, t_fg_start,
 poll_result, on_victim_before) = sys.argv[1:]
poll = dict(l.split(None, 1) for l in open(poll_result) if l.strip())
t_fg_start = float(t_fg_start)
fill_bytes = int(fill_count) * 4194304
victim_bytes, device_mbps, t0, t_fg_end = int(victim_bytes), float(device_mbps), float(t0), float(t_fg_end)
t_down = None if t_down == "none" else float(t_down)
t_full = None if t_full == "none" else float(t_full)

# what the repair tasks rebuilt, from the volume servers' "task done" lines
rebuilt_bytes = rebuilt_tasks = 0
for path in glob.glob(f"{work}/volume-*.log"):
    for line in open(path, errors="replace"):
        m = re.search(r'task done .*kind="(reconstruct|copy)".*\((\d+) bytes\)', line)
        if m:
            rebuilt_bytes += int(m.group(2))
            rebuilt_tasks += 1

def phases(path):
    # "put 4194304 B x8   ops ops/s MB/s p50 p99"
    out = {}
    try:
        for line in open(path):
            f = line.split()
            if len(f) == 9 and f[0] in ("put", "get") and f[2] == "B":
                out[f[0]] = (float(f[5]), float(f[6]), float(f[7]), float(f[8]))
    except FileNotFoundError:
        pass
    return out

print()
print("==== repair time summary")
print(f"fill                      {fill_bytes} B ({fill_bytes / 2**30:.2f} GiB, {fill_count} x 4 MiB)")
print(f"victim                    z1-s1, node {victim_node}: {victim_bytes} B used on its disks ({victim_bytes / 2**30:.2f} GiB)")
print(f"master settings           down_after_ms {down_after_ms}, node_silent_after_ms {silent_ms}, "
      f"repair_bytes_per_sec {bps} (0: no limit), repair_tasks_max {tasks_max}")
print(f"device sequential read    {device_mbps:.1f} MB/s (dd O_DIRECT 4 MiB, median of 3)")
if t_down is None:
    print("detection                 the victim was never marked down before the deadline")
else:
    print(f"detection (kill -> down)  {t_down - t0:.1f} s")
if t_down is not None and t_full is not None:
    rep = t_full - t_down
    mbps = victim_bytes / 1e6 / rep if rep > 0 else float("inf")
    print(f"repair (down -> full)     {rep:.1f} s")
    print(f"kill -> full redundancy   {t_full - t0:.1f} s")
    print(f"repair throughput         {mbps:.1f} MB/s (victim bytes / repair time) = "
          f"{mbps / device_mbps:.3f} x device read bandwidth")
    rmbps = rebuilt_bytes / 1e6 / rep if rep > 0 else float("inf")
    print(f"rebuilt by repair tasks   {rebuilt_bytes} B in {rebuilt_tasks} reconstructs/copies (volume logs): "
          f"{rmbps:.1f} MB/s = {rmbps / device_mbps:.3f} x device read bandwidth")
    print(f"  (poll granularity 1 s. The victim's bytes include replicas of open volumes, which the "
          f"frontend seals on failed appends and which are then coded elsewhere during detection, not "
          f"by repair; a rebuilt fragment reads 6 others)")
    print(f"volumes below full        {poll['below_at_down'].strip()} when marked down, at most "
          f"{poll['below_max'].strip()} after; repair bytes pending at most {int(poll['pending_max']) / 1e6:.1f} MB")
    if poll["below_max"].strip() == "0":
        print("note: nothing was left to repair when the victim was marked down: the volumes it held a "
              "replica of were sealed (failed appends) and coded elsewhere during detection, so the repair "
              "time and throughput above say nothing about rebuild speed; fill more (FILL_GIB) so that "
              "coded volumes hold fragments on the victim")
else:
    print("repair                    did NOT reach full redundancy before the deadline (see poll.log)")
print(f"foreground 'during' run  {t_fg_start - t0:.1f} s .. {t_fg_end - t0:.1f} s after the kill")
if t_full is not None and t_full < t_fg_end:
    print(f"note: repair finished {t_fg_end - t_full:.1f} s before the foreground benches ended; "
          "the 'during' figures are partly on a healthy cell")
elif t_down is not None and t_down > t_fg_end:
    print("note: the foreground benches ended before the victim was even marked down; "
          "the 'during' figures cover detection only")
if fg_status != "0":
    print(f"note: a foreground bench during repair FAILED (exit {fg_status}); see fg-during-*.txt")
print()
print(f"{'foreground':<22} {'before MB/s':>11} {'during MB/s':>11} {'ratio':>6} {'before op/s':>11} "
      f"{'during op/s':>11} {'ratio':>6} {'p99 before':>10} {'p99 during':>10}")
for size in ("4m", "4k"):
    b, d = phases(f"{work}/fg-before-{size}.txt"), phases(f"{work}/fg-during-{size}.txt")
    for ph in ("put", "get"):
        if ph not in b:
            continue
        bo, bm, _, bp99 = b[ph]
        if ph in d:
            do, dm, _, dp99 = d[ph]
            print(f"{ph + ' ' + ('4 MiB x8' if size == '4m' else '4 KiB x32'):<22} {bm:>11.1f} {dm:>11.1f} "
                  f"{dm / bm if bm else 0:>6.2f} {bo:>11.1f} {do:>11.1f} {do / bo if bo else 0:>6.2f} "
                  f"{bp99:>10.2f} {dp99:>10.2f}")
        else:
            print(f"{ph + ' ' + size:<22} {bm:>11.1f} {'failed':>11}")
print()
if t_full is None:
    print("integrity                 not checked (repair did not finish)")
else:
    print(f"integrity                 {verified}/{verify_n} verification blocks read back with the right "
          f"SHA-256 after repair ({bad} bad); per `cellar stat`, {on_victim_before} had an extent on the "
          f"victim before the kill, {on_victim} after repair")
    print("                          (the foreground benches check every byte of what they get; "
          "the rest is the test suite's)")
print(f"logs and raw outputs      {work}")
PY
[ "$bad" = 0 ] || exit 1
