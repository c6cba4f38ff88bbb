#!/usr/bin/env python3
"""Full-disk experiments (by hand, not run by the tests) on a cell of separate processes
(3 masters, 3 zones x 2 volume servers x 2 disks, one frontend; 64 MiB volumes): one volume
server's two disks (or, with --every-disk, every disk) are 100 MB loop-mounted ext4 images,
and 8 clients put 1 MiB blocks (PUTS, default 2048). Every put must be acknowledged or
refused at once with a clear error, no process may die, no disk may be reported failed,
every acknowledged block must read back; the status over the next STATUS_SECONDS (120)
shows what was coded and what waits (encodes must not fail for good on full disks).
Usage (root): python3 bench/full_disk.py WORK_DIR [PUTS] [--every-disk]. WORK_DIR is
unmounted and removed at the end, however the run ends (KEEP=1 keeps it; bench/loopcell.py).
The volume servers keep RESERVE_MIB (8) of each disk free for its catalog
(`--disk-reserve-mib`; the default 32 leaves a 100 MB image less room than a 64 MiB volume).
"""
import hashlib, os, random, sys, threading, time

from loopcell import LoopCell

cli = [a for a in sys.argv[1:] if not a.startswith("--")]
EVERY = "--every-disk" in sys.argv
cell = LoopCell(cli[0], volume_bytes=64 << 20, image_bytes=100 << 20, on_image=lambda z, s, i: EVERY or (z, s) == (1, 1),
                volume_args=["--disk-reserve-mib", os.environ.get("RESERVE_MIB", "8")])
put = cell.put
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
print("processes that exited:", cell.exited(), flush=True)
os.system(f"df -h {cell.dir}/d-* | grep loop | awk '{{print $5}}' | sort | uniq -c")
st = cell.status_text()
print("\n".join(l for l in st.splitlines() if l.startswith(("  disk 1 ", "  disk 2 ", "volumes", "tasks", "redundancy", "repair "))), flush=True)
for i in range(int(os.environ.get("STATUS_SECONDS", "120")) // 10):
    time.sleep(10)
    st = cell.status_text()
    print(f"+{(i+1)*10}s", " | ".join(l for l in st.splitlines() if l.startswith(("volumes", "tasks"))), flush=True)
st = cell.status_text()
print("\n".join(l for l in st.splitlines() if "failed" in l or (l.startswith("  disk") and os.path.ismount(l.split()[-1]))), flush=True)
bad = 0
for n in acked:
    data = random.Random(n).randbytes(1 << 20)
    st, out = cell.get(hashlib.sha256(data).hexdigest())
    if st != 200 or out != data: bad += 1
print(f"{len(acked)} acknowledged blocks read back, {bad} bad", flush=True)
cell.warnings()
