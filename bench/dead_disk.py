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
import fcntl, hashlib, os, random, struct, sys, threading, time

from loopcell import LoopCell

FAULT_SECONDS = float(os.environ.get("FAULT_SECONDS", "8"))
LOAD_SECONDS = float(os.environ.get("LOAD_SECONDS", "20"))
SETTLE_SECONDS = float(os.environ.get("SETTLE_SECONDS", "180"))
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_NOLOGFLUSH = 2
cell = LoopCell(sys.argv[1], volume_bytes=16 << 20, image_bytes=2 << 30, on_image=lambda z, s, i: True)
VICTIM = cell.disk(1, 1, 1)
put, get, status = cell.put, cell.get, cell.status


def body(n):
    rng = random.Random(n)
    return rng.randbytes(rng.choice([4096, 65536, 300_000, 1 << 20]))


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
print("processes that exited:", cell.exited(), flush=True)
t0 = time.time()
s = {}
while time.time() - t0 < SETTLE_SECONDS:
    s = status()
    victim = [d for d in s.get("disks", []) if d.get("path") == VICTIM]
    settled = (victim and victim[0]["health"] == "failed"
               and s["redundancy"]["below_full"] == 0 and s["tasks"]["failed"] == 0
               and all(t.get("waits_for_failed_disk") for t in s["tasks"]["open_list"])
               and s["tasks"]["open"] == len(s["tasks"]["open_list"]))
    if settled:
        break
    time.sleep(2)
victim = [d for d in s.get("disks", []) if d.get("path") == VICTIM]
print(f"after {time.time() - t0:.0f} s: victim disk {victim[0]['health'] if victim else '?'}, volumes {s.get('volumes')}, "
      f"below full {s.get('redundancy', {}).get('below_full')}, tasks open {s.get('tasks', {}).get('open')} failed {s.get('tasks', {}).get('failed')}", flush=True)
for t in s.get("tasks", {}).get("failed_list", [])[:5]:
    print("  failed task:", t, flush=True)
for t in [t for t in s.get("tasks", {}).get("open_list", []) if not t.get("waits_for_failed_disk")][:5]:
    print("  open task:", t, flush=True)
print("deletes parked on the dead disk:", sum(1 for t in s.get("tasks", {}).get("open_list", []) if t.get("waits_for_failed_disk")), flush=True)
bad = []
for n in acked:
    data = body(n)
    st, out = get(hashlib.sha256(data).hexdigest())
    if st != 200 or out != data:
        bad.append((n, st))
print(f"{len(acked)} acknowledged blocks read back, {len(bad)} bad {bad[:5]}", flush=True)
print("processes that exited:", cell.exited(), flush=True)
# The victim's server restarted: the dead disk cannot be opened; the server must start
# with its other disk and the master keep the dead one failed.
restart_log = f"{cell.dir}/volume-z1-s1-restart.log"
cell.restart("volume-z1-s1", restart_log)
deadline = time.time() + 60
while "volume server running" not in open(restart_log).read():
    if cell.procs["volume-z1-s1"].poll() is not None or time.time() > deadline:
        print("the victim's server did not start again:", open(restart_log).read()[-600:], flush=True)
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
cell.warnings()
