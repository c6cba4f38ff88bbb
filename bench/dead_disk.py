#!/usr/bin/env python3
"""A disk dying under load (by hand, not run by the tests; root, for the loop mount) on a
cell of separate processes (3 masters, 3 zones x 2 volume servers x 2 disks, one
frontend; 16 MiB volumes). Every disk is a 2 GB loop-mounted ext4 image (of one size, so
that placement spreads extents evenly); the first of one volume server is the victim. 4 clients put blocks of 4 KiB-1 MiB while 2 read back
what was acknowledged; after FAULT_SECONDS (8) the image's file system is shut down
(EXT4_IOC_SHUTDOWN: from then on every read, write and fsync there fails with EIO, the
disk's catalog included), and the puts go on for LOAD_SECONDS (20) more. Then: no
process may have died, the dead disk must be reported failed, the cell must settle (no
volume below full, no task failed, none open but deletes parked until the dead disk comes
back, within SETTLE_SECONDS, 180; volumes still sealed are shown: a volume sealed empty
when a replica failed before its first block waits for compaction's grace), and every
acknowledged block must read back byte-exact; then the victim's server is restarted (the
dead disk cannot be opened: it must start with its other disk) and everything read again.
Usage (root): python3 bench/dead_disk.py WORK_DIR. WORK_DIR is unmounted and removed at
the end, however the run ends (KEEP=1 keeps the logs).
"""
import atexit, fcntl, hashlib, http.client, json, os, random, socket, struct, subprocess, sys, threading, time

BIN = os.environ.get("CELLAR_BIN", os.path.expanduser("~/.cache/cellar/target/release/cellar"))
FAULT_SECONDS = float(os.environ.get("FAULT_SECONDS", "8"))
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "20"))
SETTLE_SECONDS = float(os.environ.get("SETTLE_SECONDS", "180"))
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
D = sys.argv[1]
VICTIM = f"{D}/d-z1-s1-1"
os.system(f"rm -rf {D}; mkdir -p {D}")
procs = {}


def cleanup():
    """However the run ends: every process killed, the image unmounted, WORK_DIR removed."""
    for p in procs.values():
        p.kill()
    for p in procs.values():
        p.wait()
    time.sleep(1)
    os.system(f"umount {D}/d-z*[0-9] 2>/dev/null")
    if not os.environ.get("KEEP"):
        os.system(f"rm -rf {D}")


atexit.register(cleanup)
for z in (1, 2, 3):
    for s in (1, 2):
        for i in (1, 2):
            m = f"{D}/d-z{z}-s{s}-{i}"
            if os.system(f"truncate -s 2G {m}.img && mkfs.ext4 -q -F {m}.img && mkdir -p {m} && mount -o loop {m}.img {m}") != 0:
                raise SystemExit("cannot mount the loop images (root needed)")


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


masters = [f"127.0.0.1:{port()}" for _ in range(3)]
peers = ",".join(f"{i+1}={a}" for i, a in enumerate(masters)); ml = ",".join(masters)
open(f"{D}/master.toml", "w").write(f"volume_size_bytes = {16 << 20}\nplanner_interval_ms = 500\n")


argv = {}


def spawn(name, args, out=subprocess.DEVNULL, log=None):
    argv[name] = args
    procs[name] = subprocess.Popen([BIN] + args, stdout=out, stderr=open(log or f"{D}/{name}.log", "w"))


for i, a in enumerate(masters):
    args = ["master", "--id", str(i + 1), "--listen", a, "--data-dir", f"{D}/m{i+1}", "--peers", peers, "--config", f"{D}/master.toml"]
    if i == 0:
        args.append("--init")
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


def get(h):
    c = http.client.HTTPConnection(host, timeout=120); c.request("GET", f"/v1/blocks/{h}")
    r = c.getresponse(); out = r.read(); c.close(); return r.status, out


def status():
    out = subprocess.run([BIN, "admin", "status", "--master", ml, "--json"], capture_output=True, text=True).stdout
    return json.loads(out or "{}")


def body(n):
    rng = random.Random(n)
    return rng.randbytes(rng.choice([4096, 65536, 300_000, 1 << 20]))


deadline = time.time() + 120
while put(b"ready")[0] != 201:
    if time.time() > deadline:
        raise SystemExit("no put")
    time.sleep(0.2)
lock = threading.Lock()
acked, refused, errors, read_bad = [], {}, [], []
slowest = {"before": 0.0, "after": 0.0}
reads = [0]
faulted = [None]
stop = threading.Event()


def putter(w):
    n = w
    while not stop.is_set():
        data = body(n)
        t = time.time()
        try:
            st, out = put(data)
        except Exception as e:
            with lock:
                errors.append(str(e)[:200])
            n += 4
            continue
        took = time.time() - t
        with lock:
            phase = "after" if faulted[0] and t >= faulted[0] else "before"
            slowest[phase] = max(slowest[phase], took)
            if st == 201:
                acked.append(n)
            else:
                refused[(st, out[:160])] = refused.get((st, out[:160]), 0) + 1
        n += 4


def reader(w):
    rng = random.Random(1000 + w)
    while not stop.is_set():
        with lock:
            n = rng.choice(acked) if acked else None
        if n is None:
            time.sleep(0.05)
            continue
        data = body(n)
        try:
            st, out = get(hashlib.sha256(data).hexdigest())
        except Exception as e:
            with lock:
                read_bad.append(f"{n}: {e}"[:200])
            continue
        with lock:
            reads[0] += 1
            if st != 200 or out != data:
                read_bad.append(f"{n}: status {st}")


ts = [threading.Thread(target=putter, args=(w,)) for w in range(4)] + [threading.Thread(target=reader, args=(w,)) for w in range(2)]
[t.start() for t in ts]
time.sleep(FAULT_SECONDS)
fd = os.open(VICTIM, os.O_RDONLY)
fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", EXT4_GOING_FLAGS_NOLOGFLUSH))
os.close(fd)
with lock:
    faulted[0] = time.time()
    acked_at_fault = len(acked)
print(f"disk {VICTIM} shut down after {FAULT_SECONDS:.0f} s ({acked_at_fault} puts acknowledged)", flush=True)
time.sleep(LOAD_SECONDS)
stop.set()
[t.join() for t in ts]
print(f"puts: {len(acked)} acknowledged ({len(acked) - acked_at_fault} after the fault), refused {refused}, no answer {len(errors)} {errors[:3]}", flush=True)
print(f"slowest put before the fault {slowest['before']:.2f} s, after {slowest['after']:.2f} s; reads during the load {reads[0]}, bad {len(read_bad)} {read_bad[:3]}", flush=True)
print("processes that exited:", [n for n, p in procs.items() if p.poll() is not None], flush=True)
t0 = time.time()
s = {}
while time.time() - t0 < SETTLE_SECONDS:
    s = status()
    victim = [d for d in s.get("disks", []) if d.get("path") == VICTIM]
    settled = (victim and victim[0]["health"] == "failed"
               and s["redundancy"]["below_full"] == 0 and s["tasks"]["failed"] == 0
               and all(t.get("parked_on_failed_disk") for t in s["tasks"]["open_list"])
               and s["tasks"]["open"] == len(s["tasks"]["open_list"]))
    if settled:
        break
    time.sleep(2)
victim = [d for d in s.get("disks", []) if d.get("path") == VICTIM]
print(f"after {time.time() - t0:.0f} s: victim disk {victim[0]['health'] if victim else '?'}, volumes {s.get('volumes')}, "
      f"below full {s.get('redundancy', {}).get('below_full')}, tasks open {s.get('tasks', {}).get('open')} failed {s.get('tasks', {}).get('failed')}", flush=True)
for t in s.get("tasks", {}).get("failed_list", [])[:5]:
    print("  failed task:", t, flush=True)
for t in [t for t in s.get("tasks", {}).get("open_list", []) if not t.get("parked_on_failed_disk")][:5]:
    print("  open task:", t, flush=True)
print("deletes parked on the dead disk:", sum(1 for t in s.get("tasks", {}).get("open_list", []) if t.get("parked_on_failed_disk")), flush=True)
bad = []
for n in acked:
    data = body(n)
    st, out = get(hashlib.sha256(data).hexdigest())
    if st != 200 or out != data:
        bad.append((n, st))
print(f"{len(acked)} acknowledged blocks read back, {len(bad)} bad {bad[:5]}", flush=True)
print("processes that exited:", [n for n, p in procs.items() if p.poll() is not None], flush=True)
# The victim's server restarted: the dead disk cannot be opened; the server must start
# with its other disk and the master keep the dead one failed.
procs["volume-z1-s1"].kill(); procs["volume-z1-s1"].wait()
spawn("volume-z1-s1", argv["volume-z1-s1"], log=f"{D}/volume-z1-s1-restart.log")
deadline = time.time() + 60
while "volume server running" not in open(f"{D}/volume-z1-s1-restart.log").read():
    if procs["volume-z1-s1"].poll() is not None or time.time() > deadline:
        print("the victim's server did not start again:", open(f"{D}/volume-z1-s1-restart.log").read()[-600:], flush=True)
        break
    time.sleep(0.2)
else:
    time.sleep(3)
    s = status()
    victim = [d for d in s.get("disks", []) if d.get("path") == VICTIM]
    nodes = {n["address"]: n["state"] for n in s.get("nodes", [])}
    print(f"victim's server restarted: victim disk {victim[0]['health'] if victim else '?'}, nodes {sorted(nodes.values())}, below full {s['redundancy']['below_full']}", flush=True)
    bad = [n for n in acked if get(hashlib.sha256(body(n)).hexdigest()) != (200, body(n))]
    print(f"{len(acked)} acknowledged blocks read back after the restart, {len(bad)} bad", flush=True)
os.system(f"grep -h 'WARN\\|ERROR' {D}/*.log | sed 's/^[^ ]* //' | cut -c1-220 | sed 's/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn | head -25")
