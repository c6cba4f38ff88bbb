#!/usr/bin/env python3
"""Whole-cell crash experiment (by hand; cli/tests/crash.rs is the test): a cell of separate cellar processes takes block puts and S3
PutObjects (one- and multi-block) from several threads; every process is SIGKILLed at once
mid-stream; the cell is restarted on the same directories; every acknowledged write must read
back byte-exact, the cell must take writes again, and after it settles (volumes sealed and coded)
everything must still read.
Usage: python bench/whole_cell_crash.py WORK_DIR [SECONDS_OF_LOAD]  (boto3 needed: the venv
scripts/s3-clients.sh makes, ~/.cache/cellar/s3-venv). WORK_DIR is removed at the end.
"""
import hashlib, http.client, json, os, random, signal, socket, subprocess, sys, threading, time
import boto3, botocore.config

BIN = os.environ.get("CELLAR_BIN", os.path.expanduser("~/.cache/cellar/target/release/cellar"))
D = sys.argv[1]
RUN_S = float(sys.argv[2]) if len(sys.argv) > 2 else 8.0
os.system(f"rm -rf {D}; mkdir -p {D}")

def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

masters = [f"127.0.0.1:{port()}" for _ in range(3)]
peers = ",".join(f"{i+1}={a}" for i, a in enumerate(masters))
ml = ",".join(masters)
procs = []
gen = [0]

def spawn(args, log):
    f = open(f"{D}/{log}.{gen[0]}.log", "w")
    p = subprocess.Popen([BIN] + args, stdout=subprocess.PIPE if log == "frontend" else subprocess.DEVNULL, stderr=f)
    procs.append(p)
    return p

def start(init):
    for i, a in enumerate(masters):
        args = ["master", "--id", str(i + 1), "--listen", a, "--data-dir", f"{D}/m{i+1}", "--peers", peers]
        if init and i == 0:
            args.append("--init")
        spawn(args, f"master-{i+1}")
    for z in (1, 2, 3):
        for s in (1, 2):
            spawn(["volume", "--listen", "127.0.0.1:0", "--zone", f"z{z}", "--master", ml,
                   "--disk", f"{D}/d-z{z}-s{s}-1", "--disk", f"{D}/d-z{z}-s{s}-2"], f"volume-z{z}-s{s}")
    fe = spawn(["frontend", "--http", "127.0.0.1:0", "--s3", "127.0.0.1:0", "--master", ml], "frontend")
    lines = []
    while len(lines) < 2:
        l = fe.stdout.readline().decode()
        if not l:
            raise SystemExit("frontend exited")
        lines.append(l.strip())
    threading.Thread(target=lambda: fe.stdout.read(), daemon=True).start()
    http_addr = [l.split("http://")[1].split()[0] for l in lines if "http://" in l][0]
    s3_addr = [l.split("S3 at http://")[1].split()[0] for l in lines if "S3 at" in l][0]
    return http_addr, s3_addr

def body(seed, size):
    r = random.Random(seed)
    return r.randbytes(size)

def block_put(host, data):
    c = http.client.HTTPConnection(host, timeout=60)
    c.request("PUT", "/v1/blocks", body=data)
    r = c.getresponse(); out = r.read(); c.close()
    if r.status != 201:
        raise RuntimeError(f"put {r.status} {out[:200]!r}")
    return json.loads(out)["hash"]

def block_get(host, h):
    c = http.client.HTTPConnection(host, timeout=60)
    c.request("GET", f"/v1/blocks/{h}")
    r = c.getresponse(); out = r.read(); c.close()
    if r.status != 200:
        raise RuntimeError(f"get {h}: {r.status} {out[:200]!r}")
    return out

def s3client(addr, ak, sk):
    return boto3.client("s3", endpoint_url=f"http://{addr}", aws_access_key_id=ak, aws_secret_access_key=sk,
                        region_name="us-east-1",
                        config=botocore.config.Config(retries={"max_attempts": 1}, read_timeout=60, connect_timeout=10,
                                                      s3={"addressing_style": "path"}))

def wait_put(http_addr):
    deadline = time.time() + 180
    while True:
        try:
            block_put(http_addr, b"ready %f" % time.time()); return
        except Exception as e:
            if time.time() > deadline: raise SystemExit(f"no put in 180 s: {e}")
            time.sleep(0.2)

t0 = time.time()
http_addr, s3_addr = start(init=True)
wait_put(http_addr)
print(f"cell up in {time.time()-t0:.1f} s: http {http_addr} s3 {s3_addr}", flush=True)
key = None
for _ in range(120):
    out = subprocess.run([BIN, "admin", "key", "create", "--master", ml, "--name", "crash"], capture_output=True, text=True)
    if out.returncode == 0:
        kv = dict(l.split()[:2] for l in out.stdout.splitlines() if len(l.split()) >= 2)
        key = (kv["access_key"], kv["secret_key"]); break
    time.sleep(0.5)
s3 = s3client(s3_addr, *key)
s3.create_bucket(Bucket="crash")
s3.put_bucket_versioning(Bucket="crash", VersioningConfiguration={"Status": "Enabled"})

acked_blocks = []   # (hash, seed, size)
acked_objects = []  # (key, version_id, seed, size)
unknown = [0]
stop = threading.Event()
lock = threading.Lock()

def block_worker(w):
    n = 0
    while not stop.is_set():
        n += 1
        seed = w * 1_000_000 + n
        size = random.Random(seed).choice([4096, 65536, 1 << 20, 4 << 20])
        data = body(seed, size)
        try:
            h = block_put(http_addr, data)
        except Exception:
            with lock: unknown[0] += 1
            continue
        assert h == hashlib.sha256(data).hexdigest()
        with lock: acked_blocks.append((h, seed, size))

def s3_worker(w):
    c = s3client(s3_addr, *key)
    n = 0
    while not stop.is_set():
        n += 1
        seed = 5_000_000 + w * 1_000_000 + n
        size = random.Random(seed).choice([4096, 300 << 10, 6 << 20, (9 << 20) + 5])
        data = body(seed, size)
        k = f"w{w}/o{n % 7}"
        try:
            r = c.put_object(Bucket="crash", Key=k, Body=data)
        except Exception:
            with lock: unknown[0] += 1
            continue
        with lock: acked_objects.append((k, r["VersionId"], seed, size))

threads = [threading.Thread(target=block_worker, args=(w,)) for w in range(4)] + \
          [threading.Thread(target=s3_worker, args=(w,)) for w in range(4)]
for t in threads: t.start()
time.sleep(RUN_S)
pids = [p.pid for p in procs]
for pid in pids:
    os.kill(pid, signal.SIGKILL)
t_kill = time.time()
with lock:
    nb, no = len(acked_blocks), len(acked_objects)
stop.set()
for t in threads: t.join()
for p in procs: p.wait()
print(f"killed all {len(pids)} processes; acknowledged before the kill: {nb} blocks, {no} object versions; "
      f"after: {len(acked_blocks)} / {len(acked_objects)}; unknown outcomes {unknown[0]}", flush=True)
procs.clear(); gen[0] += 1

t0 = time.time()
http_addr, s3_addr = start(init=False)
wait_put(http_addr)
print(f"restarted, took a put after {time.time()-t0:.1f} s", flush=True)
s3 = s3client(s3_addr, *key)

def verify(label):
    bad = []
    for h, seed, size in acked_blocks:
        try:
            got = block_get(http_addr, h)
            if got != body(seed, size): bad.append(("block", h, "different bytes"))
        except Exception as e:
            bad.append(("block", h, str(e)[:200]))
    for k, vid, seed, size in acked_objects:
        try:
            got = s3.get_object(Bucket="crash", Key=k, VersionId=vid)["Body"].read()
            if got != body(seed, size): bad.append(("object", k, vid, "different bytes"))
        except Exception as e:
            bad.append(("object", k, vid, str(e)[:200]))
    print(f"{label}: {len(acked_blocks)} blocks and {len(acked_objects)} versions checked, {len(bad)} bad", flush=True)
    for b in bad[:20]: print("  BAD", b, flush=True)
    return bad

bad = verify("after restart")
# more writes, then let the cell settle: every volume coded, open or dead, no task open
for i in range(40):
    data = body(9_000_000 + i, 1 << 20)
    h = block_put(http_addr, data); acked_blocks.append((h, 9_000_000 + i, 1 << 20))
deadline = time.time() + 300
while time.time() < deadline:
    st = json.loads(subprocess.run([BIN, "admin", "status", "--master", ml, "--json"], capture_output=True, text=True).stdout or "{}")
    vols = st.get("volumes", {}); tasks = st.get("tasks", {})
    sealed = sum(c for k, c in vols.items() if "SEALED" in k.upper())
    # Volumes sealed with no live block (a writer's open volume sealed empty by the crash)
    # are not coded: they wait for compaction's grace (`volumes_dead`), then are deleted.
    dead = (st.get("compaction") or {}).get("volumes_dead", 0)
    if tasks.get("open", 1) == 0 and sealed <= dead:
        break
    time.sleep(1)
print("status:", json.dumps({k: st.get(k) for k in ("volumes", "tasks", "repair", "compaction")}), flush=True)
bad += verify("after settling")
for p in procs: p.kill()
for p in procs: p.wait()
os.system(f"rm -rf {D}")
sys.exit(1 if bad else 0)
