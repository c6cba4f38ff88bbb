#!/usr/bin/env python3
"""Full-disk experiments (by hand, not run by the tests) on a cell of separate processes
(3 masters, 3 zones x 2 volume servers x 2 disks, one frontend; 64 MiB volumes): one volume
server's two disks (or, with --every-disk, every disk) are 100 MB loop-mounted ext4 images,
and 8 clients put 1 MiB blocks (PUTS, default 2048). Every put must be acknowledged or
refused at once with a clear error, no process may die, no disk may be reported failed,
every acknowledged block must read back; the status over the next STATUS_SECONDS (120)
shows what was coded and what waits (encodes must not fail for good on full disks).
Usage (root): python3 bench/full_disk.py WORK_DIR [PUTS] [--every-disk]. WORK_DIR is
unmounted and removed at the end.
"""
import atexit, hashlib, http.client, json, os, random, socket, subprocess, sys, threading, time
BIN = os.environ.get("CELLAR_BIN", os.path.expanduser("~/.cache/cellar/target/release/cellar"))
cli = [a for a in sys.argv[1:] if not a.startswith("--")]
EVERY = "--every-disk" in sys.argv
D = cli[0]
os.system(f"rm -rf {D}; mkdir -p {D}")
for z in (1, 2, 3):
    for s in (1, 2):
        for i in (1, 2):
            if not EVERY and (z, s) != (1, 1):
                continue
            m = f"{D}/d-z{z}-s{s}-{i}"
            os.system(f"truncate -s 100M {m}.img && mkfs.ext4 -q -F {m}.img && mkdir -p {m} && mount -o loop {m}.img {m}")
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
masters = [f"127.0.0.1:{port()}" for _ in range(3)]
peers = ",".join(f"{i+1}={a}" for i, a in enumerate(masters)); ml = ",".join(masters)
open(f"{D}/master.toml", "w").write(f"volume_size_bytes = {64 << 20}\nplanner_interval_ms = 500\n")
procs = {}


def cleanup():
    """However the run ends: every process killed, the images unmounted, WORK_DIR removed."""
    for p in procs.values():
        p.kill()
    for p in procs.values():
        p.wait()
    time.sleep(1)
    os.system(f"umount {D}/d-z*[0-9] 2>/dev/null; rm -rf {D}")


atexit.register(cleanup)
def spawn(name, args, out=subprocess.DEVNULL):
    procs[name] = subprocess.Popen([BIN] + args, stdout=out, stderr=open(f"{D}/{name}.log", "w"))
for i, a in enumerate(masters):
    args = ["master", "--id", str(i + 1), "--listen", a, "--data-dir", f"{D}/m{i+1}", "--peers", peers, "--config", f"{D}/master.toml"]
    if i == 0: args.append("--init")
    spawn(f"master-{i+1}", args)
for z in (1, 2, 3):
    for s in (1, 2):
        disks = [f"{D}/d-z{z}-s{s}-1", f"{D}/d-z{z}-s{s}-2"]
        spawn(f"volume-z{z}-s{s}", ["volume", "--listen", "127.0.0.1:0", "--zone", f"z{z}", "--master", ml] + sum([["--disk", d] for d in disks], []))
spawn("frontend", ["frontend", "--http", "127.0.0.1:0", "--master", ml], out=subprocess.PIPE)
line = procs["frontend"].stdout.readline().decode()
threading.Thread(target=lambda: procs["frontend"].stdout.read(), daemon=True).start()
host = line.split("http://")[1].split()[0]
def put(data):
    c = http.client.HTTPConnection(host, timeout=120); c.request("PUT", "/v1/blocks", body=data)
    r = c.getresponse(); out = r.read(); c.close(); return r.status, out
deadline = time.time() + 120
while put(b"ready")[0] != 201:
    if time.time() > deadline: raise SystemExit("no put")
    time.sleep(0.2)
acked, refused, errors = [], {}, []
slowest = [0.0]
lock = threading.Lock()
N = int(cli[1]) if len(cli) > 1 else 2048
def worker(w):
    for n in range(w, N, 8):
        data = random.Random(n).randbytes(1 << 20)
        t = time.time()
        try:
            st, out = put(data)
            took = time.time() - t
            with lock: slowest[0] = max(slowest[0], took)
        except Exception as e:
            with lock: errors.append(str(e)[:200]); continue
        with lock:
            if st == 201: acked.append(n)
            else: refused[(st, out[:160])] = refused.get((st, out[:160]), 0) + 1
t0 = time.time()
ts = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"slowest put {slowest[0]:.2f} s"); print(f"{N} puts in {time.time()-t0:.1f} s: {len(acked)} acknowledged, refused {refused}, no answer {len(errors)} {errors[:3]}", flush=True)
dead = [n for n, p in procs.items() if p.poll() is not None]
print("processes that exited:", dead, flush=True)
os.system(f"df -h {D}/d-* | grep loop | awk '{{print $5}}' | sort | uniq -c")
st = subprocess.run([BIN, "admin", "status", "--master", ml], capture_output=True, text=True).stdout
print("\n".join(l for l in st.splitlines() if l.startswith(("  disk 1 ", "  disk 2 ", "volumes", "tasks", "redundancy", "repair "))), flush=True)
for i in range(int(os.environ.get("STATUS_SECONDS", "120")) // 10):
    time.sleep(10)
    st = subprocess.run([BIN, "admin", "status", "--master", ml], capture_output=True, text=True).stdout
    print(f"+{(i+1)*10}s", " | ".join(l for l in st.splitlines() if l.startswith(("volumes", "tasks"))), flush=True)
st = subprocess.run([BIN, "admin", "status", "--master", ml], capture_output=True, text=True).stdout
print("\n".join(l for l in st.splitlines() if "failed" in l or (l.startswith("  disk") and os.path.ismount(l.split()[-1]))), flush=True)
bad = 0
for n in acked:
    data = random.Random(n).randbytes(1 << 20)
    h = hashlib.sha256(data).hexdigest()
    c = http.client.HTTPConnection(host, timeout=120); c.request("GET", f"/v1/blocks/{h}")
    r = c.getresponse(); out = r.read(); c.close()
    if r.status != 200 or out != data: bad += 1
print(f"{len(acked)} acknowledged blocks read back, {bad} bad", flush=True)
os.system(f"grep -h 'WARN\\|ERROR' {D}/*.log | sed 's/^[^ ]* //' | cut -c1-200 | sort | uniq -c | sort -rn | head -15")
for p in procs.values(): p.kill()
for p in procs.values(): p.wait()
time.sleep(1)
os.system(f"umount {D}/d-z*[0-9] 2>/dev/null; rm -rf {D}")
