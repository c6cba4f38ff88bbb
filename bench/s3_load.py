#!/usr/bin/env python3
"""S3 PutObject/GetObject load for bench/s3_compare.sh, and its summary table.

    s3_load.py run --endpoint URL --access-key K --secret-key S --bucket B \\
        --rows SIZE:CONC:COUNT[,...] --out FILE.json [--label L] [--system NAME] \\
        [--pids NAME=PID,...] [--idle-cmd CMD] [--unsigned-payload]
    s3_load.py summary WORK_DIR ROUNDS

run: for every row, in order, COUNT PutObjects of SIZE-byte objects from CONC client
processes, then GetObjects of the keys those puts wrote. The client processes are forked
once (one per client, CONC of the widest row), each with its own boto3 client holding a
single connection, so the GIL does not cap the load. Every object has distinct random
bytes (generated before the timed loop, so content-addressed stores cannot deduplicate);
every get checks the length, and one get in 16 (and each client's first) keeps the bytes,
compared with the expected ones after the timed loop. botocore: path-style addressing, no
retries (total_max_attempts 1: a failed op is counted, never hidden), request checksums
only when required and response checksums validated only when required (no CRC32 over
the bodies), and with --unsigned-payload the body is not SHA-256 hashed for the SigV4
signature (x-amz-content-sha256: UNSIGNED-PAYLOAD). Before the rows: the bucket is
created and a few objects are put and read back (untimed), so that the first volume
allocations are not in a row. Before every phase (a row's puts, its gets) --idle-cmd, if
given, is polled until it exits 0 twice in a row (the cell finished its background work).
--pids: server processes whose CPU time is taken per phase and whose peak RSS (VmHWM) is
read at the end. Writes FILE.json.

summary: reads WORK_DIR/{cellar,weed}-rN.json (N = 1..ROUNDS) , WORK_DIR/notes.txt and
WORK_DIR/copies.txt and prints the markdown tables.
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import random
import resource
import subprocess
import sys
import time

SAMPLE_EVERY = 16


def parse_rows(text):
    rows = []
    for item in text.split(","):
        size, conc, count = (int(x) for x in item.split(":"))
        rows.append((size, conc, count))
    return rows


def body(tag, size):
    # str seeds go through SHA-512: the same bytes in every process, whatever PYTHONHASHSEED.
    return random.Random(tag).randbytes(size)


class LeanS3:
    """PutObject/GetObject over one kept-alive TCP connection speaking HTTP/1.1 by hand,
    signed with SigV4 by hand (header auth, x-amz-content-sha256: UNSIGNED-PAYLOAD): a
    client whose CPU per request is a small fraction of botocore's (and of http.client's),
    so that small-object rows measure the servers rather than the load generator. A
    response body is read by its Content-Length (or chunked) straight into one buffer: for
    a Content-Length, this client's receive buffer, reused from call to call, so a body is
    valid until the next call (a fresh zeroed 4 MiB per get, and BytesIO's copy of it, had
    cost the client ~1 ms of CPU per 4 MiB get, on the cores the servers use).
    Errors raise (a status other than 200 too); the connection is closed on any error and
    reopened on the next call."""

    def __init__(self, endpoint, access_key, secret_key, region="us-east-1", timeout_s=600):
        import urllib.parse

        u = urllib.parse.urlparse(endpoint)
        self.hostname, self.port, self.host = u.hostname, u.port or 80, u.netloc
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self.timeout_s = timeout_s
        self.sock = None
        self.pending = bytearray()  # bytes read past the last response
        self.recv_buf = bytearray()  # large response bodies land here (see _read_exact)
        self.keys = {}  # date -> signing key

    def _signing_key(self, date):
        import hashlib
        import hmac

        if date not in self.keys:
            k = ("AWS4" + self.secret_key).encode()
            for part in (date, self.region, "s3", "aws4_request"):
                k = hmac.new(k, part.encode(), hashlib.sha256).digest()
            self.keys = {date: k}
        return self.keys[date]

    def _connect(self):
        import socket

        s = socket.create_connection((self.hostname, self.port), timeout=self.timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = s
        self.pending = bytearray()

    def _fill(self):
        """Reads more bytes into `pending`; EOF is an error (a response was due)."""
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.pending += chunk

    def _read_exact(self, n, reuse=False):
        """Exactly n bytes of the stream (what `pending` holds first, then straight into
        one buffer). With `reuse`, the buffer is this client's receive buffer, allocated
        once and grown when needed, and the answer a view of it that the next call
        overwrites: a large body costs the kernel's copy only, not a fresh zeroed
        allocation per response."""
        if reuse:
            if len(self.recv_buf) < n:
                self.recv_buf = bytearray(n)
            view = memoryview(self.recv_buf)[:n]
            out = view
        else:
            out = bytearray(n)
            view = memoryview(out)
        have = min(n, len(self.pending))
        view[:have] = self.pending[:have]
        del self.pending[:have]
        while have < n:
            got = self.sock.recv_into(view[have:], n - have)
            if got == 0:
                raise ConnectionError(f"the server closed the connection {have} bytes into a {n}-byte body")
            have += got
        return out

    def _read_line(self):
        while (i := self.pending.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.pending[:i])
        del self.pending[: i + 2]
        return line

    def _response(self):
        """(status, headers with lower-case names, body) of the next response."""
        while (end := self.pending.find(b"\r\n\r\n")) < 0:
            if len(self.pending) > 65536:
                raise ValueError("response head over 64 KiB")
            self._fill()
        head = bytes(self.pending[:end]).decode("latin-1").split("\r\n")
        del self.pending[: end + 4]
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {head[0][:100]!r}")
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self._read_line().split(b";", 1)[0], 16)
                if size == 0:
                    while self._read_line():  # trailers, up to the empty line
                        pass
                    break
                body += self._read_exact(size)
                if self._read_line():
                    raise ValueError("chunk not followed by CRLF")
        elif "content-length" in headers:
            body = self._read_exact(int(headers["content-length"]), reuse=True)
        elif status in (204, 304) or 100 <= status < 200:
            body = bytearray()
        else:
            raise ValueError(f"HTTP {status} without Content-Length or chunked body")
        return status, headers, body

    def _request(self, method, bucket, key, body=None):
        import hashlib
        import hmac
        import urllib.parse

        path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/~")
        amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = amz[:8]
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = (
            f"{method}\n{path}\n\nhost:{self.host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n"
            f"x-amz-date:{amz}\n\n{signed}\nUNSIGNED-PAYLOAD"
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        sig = hmac.new(self._signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"x-amz-content-sha256: UNSIGNED-PAYLOAD\r\nx-amz-date: {amz}\r\n"
            f"Authorization: AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={sig}\r\n"
            f"Content-Length: {0 if body is None else len(body)}\r\n\r\n"
        ).encode()
        if self.sock is None:
            self._connect()
        try:
            if body is None or len(body) <= 65536:
                self.sock.sendall(head + body if body else head)
            else:
                self.sock.sendall(head)
                self.sock.sendall(body)
            status, headers, data = self._response()
            if headers.get("connection", "").lower() == "close":
                self.close()
        except Exception:
            self.close()
            raise
        if status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {bytes(data[:200])!r}")
        return data

    def close(self):
        if self.sock is not None:
            self.sock.close()
        self.sock = None
        self.pending = bytearray()

    def put_object(self, Bucket, Key, Body):
        self._request("PUT", Bucket, Key, Body)
        return {"ResponseMetadata": {"RetryAttempts": 0}}

    def get_object(self, Bucket, Key):
        """The body is a view of this client's receive buffer, valid until its next call."""
        return {"Body": _Body(self._request("GET", Bucket, Key)), "ResponseMetadata": {"RetryAttempts": 0}}

    def head_bucket(self, Bucket):
        """Only (re)opens the connection, so that a timed loop does not pay for it."""
        if self.sock is None:
            self._connect()


class _Body:
    """A response body already read whole: `read()` hands it over without a copy."""

    def __init__(self, data):
        self.data = data

    def read(self):
        return self.data


def make_client(session, args):
    from botocore.config import Config

    s3 = {"addressing_style": "path"}
    if args.unsigned_payload:
        s3["payload_signing_enabled"] = False
    cfg = Config(
        region_name="us-east-1",
        signature_version="s3v4",
        s3=s3,
        retries={"total_max_attempts": 1, "mode": "standard"},
        max_pool_connections=1,
        connect_timeout=10,
        read_timeout=600,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client(
        "s3",
        endpoint_url=args.endpoint,
        aws_access_key_id=args.access_key,
        aws_secret_access_key=args.secret_key,
        config=cfg,
    )


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker(idx, conn, session, args):
    s3 = LeanS3(args.endpoint, args.access_key, args.secret_key) if args.lean else make_client(session, args)
    written = {}  # row tag -> keys this client put successfully
    while True:
        msg = conn.recv()
        if msg is None:
            return
        op, size, n, tag = msg
        if op == "put":
            keys = [f"{tag}/{idx:02d}/{i:06d}" for i in range(n)]
            bodies = [body(f"{args.label}/{k}", size) for k in keys]
        else:
            keys = written.get(tag, [])
            bodies = None
        warm_error = None
        if keys:  # (re)open this client's connection outside the timed loop
            try:
                s3.head_bucket(Bucket=args.bucket)
            except Exception as e:  # reported; the timed loop shows whether it persists
                warm_error = f"{type(e).__name__}: {e}"[:300]
        conn.send("ready")
        conn.recv()  # go
        lat, errors, ok_keys, samples = [], [], [], {}
        retries = 0
        c0 = cpu_self()
        t0 = time.perf_counter()
        for i, key in enumerate(keys):
            s = time.perf_counter()
            try:
                if op == "put":
                    r = s3.put_object(Bucket=args.bucket, Key=key, Body=bodies[i])
                else:
                    r = s3.get_object(Bucket=args.bucket, Key=key)
                    data = r["Body"].read()
                    if len(data) != size:
                        raise ValueError(f"got {len(data)} bytes, expected {size}")
                    if i % SAMPLE_EVERY == 0:
                        samples[key] = bytes(data)  # LeanS3's body is a view its next call reuses
                lat.append(time.perf_counter() - s)
                retries += r["ResponseMetadata"].get("RetryAttempts", 0)
                if op == "put":
                    ok_keys.append(key)
            except Exception as e:
                errors.append(f"{key}: {type(e).__name__}: {e}"[:300])
        t1 = time.perf_counter()
        c1 = cpu_self()
        bad = [k for k, d in samples.items() if d != body(f"{args.label}/{k}", size)]
        if op == "put":
            written[tag] = ok_keys
        del bodies
        conn.send(
            {
                "t0": t0,
                "t1": t1,
                "lat": lat,
                "ok": len(lat),
                "errors": len(errors),
                "error_samples": errors[:5],
                "retries": retries,
                "cpu": c1 - c0,
                "verified": len(samples),
                "bad": bad[:5],
                "bad_count": len(bad),
                "warm_error": warm_error,
                "ops": len(keys),
            }
        )


def proc_cpu(pids):
    """User + system CPU seconds of the processes, summed (those still alive)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids.values():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def wait_idle(cmd, timeout=600):
    """Polls the shell command until it exits 0 twice in a row; the seconds waited."""
    if not cmd:
        return 0.0
    start = time.time()
    good = 0
    while time.time() - start < timeout:
        if subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            good += 1
            if good >= 2:
                return time.time() - start
        else:
            good = 0
        time.sleep(0.5)
    print(f"!! idle command still failing after {timeout} s: {cmd}", file=sys.stderr)
    return time.time() - start


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    # nearest rank
    i = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


def setup(session, args):
    """Creates the bucket and puts and reads back a few objects, retrying until the server
    answers (it may still be starting); untimed."""
    s3 = make_client(session, args)
    deadline = time.time() + args.ready_timeout
    last = None
    steps = [("bucket", None)] + [(f"warmup/{i}", 4096) for i in range(4)] + [(f"warmup/big{i}", 4 << 20) for i in range(2)]
    for key, size in steps:
        while True:
            try:
                if size is None:
                    try:
                        s3.create_bucket(Bucket=args.bucket)
                    except s3.exceptions.BucketAlreadyOwnedByYou:
                        pass
                else:
                    data = body(f"{args.label}/{key}", size)
                    s3.put_object(Bucket=args.bucket, Key=key, Body=data)
                    got = s3.get_object(Bucket=args.bucket, Key=key)["Body"].read()
                    if got != data:
                        raise ValueError(f"warm-up object {key} read back different")
                break
            except Exception as e:
                last = f"{type(e).__name__}: {e}"
                if time.time() > deadline:
                    raise SystemExit(f"the S3 endpoint {args.endpoint} did not serve {key} in {args.ready_timeout} s: {last}")
                time.sleep(0.5)


def run(args):
    import boto3

    rows = parse_rows(args.rows)
    pids = {}
    for item in filter(None, (args.pids or "").split(",")):
        name, pid = item.split("=")
        pids[name] = int(pid)
    session = boto3.session.Session()
    make_client(session, args)  # loads the service model once; the forked clients reuse it
    ctx = mp.get_context("fork")
    nworkers = max(c for _, c, _ in rows)
    conns, procs = [], []
    for i in range(nworkers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(i, child, session, args), daemon=True)
        p.start()
        child.close()  # so that a worker's death shows as EOF here, not as a hang
        conns.append(parent)
        procs.append(p)
    started = time.time()
    setup(session, args)
    results = []
    try:
        for size, conc, count in rows:
            tag = f"s{size}-c{conc}"
            for op in ("put", "get"):
                waited = wait_idle(args.idle_cmd)
                per = [count // conc + (1 if i < count % conc else 0) for i in range(conc)]
                for i in range(conc):
                    conns[i].send((op, size, per[i], tag))
                for i in range(conc):
                    conns[i].recv()  # ready
                s_cpu0 = proc_cpu(pids)
                for i in range(conc):
                    conns[i].send("go")
                outs = [conns[i].recv() for i in range(conc)]
                s_cpu1 = proc_cpu(pids)
                active = [o for o in outs if o["ops"]]
                wall = max(o["t1"] for o in active) - min(o["t0"] for o in active) if active else 0.0
                lat = sorted(x for o in outs for x in o["lat"])
                ok = sum(o["ok"] for o in outs)
                row = {
                    "op": op,
                    "size": size,
                    "conc": conc,
                    "clients_active": len(active),
                    "ops": sum(o["ops"] for o in outs),
                    "ok": ok,
                    "errors": sum(o["errors"] for o in outs),
                    "error_samples": [e for o in outs for e in o["error_samples"]][:5],
                    "warm_errors": [o["warm_error"] for o in outs if o["warm_error"]][:3],
                    "retries": sum(o["retries"] for o in outs),
                    "wall_s": wall,
                    "ops_per_s": ok / wall if wall > 0 else 0.0,
                    "mb_per_s": ok * size / 1e6 / wall if wall > 0 else 0.0,
                    "p50_ms": percentile(lat, 50) * 1e3,
                    "p99_ms": percentile(lat, 99) * 1e3,
                    "client_cpu_s": sum(o["cpu"] for o in outs),
                    "server_cpu_s": s_cpu1 - s_cpu0,
                    "idle_wait_s": waited,
                    "verified": sum(o["verified"] for o in outs),
                    "verify_bad": sum(o["bad_count"] for o in outs),
                    "verify_bad_keys": [k for o in outs for k in o["bad"]][:5],
                }
                results.append(row)
                rate = f"{row['mb_per_s']:.1f} MB/s" if size >= 1 << 20 else f"{row['ops_per_s']:.0f} ops/s"
                print(
                    f"{args.system} {op} {size} B x{count} c={conc}: {rate}, p50 {row['p50_ms']:.2f} ms, "
                    f"p99 {row['p99_ms']:.2f} ms, {row['errors']} failed, {row['retries']} retries, "
                    f"wall {wall:.2f} s, cpu server {row['server_cpu_s']:.2f} s client {row['client_cpu_s']:.2f} s"
                    + (f", verified {row['verified']} ({row['verify_bad']} bad)" if op == "get" else "")
                    + (f", waited {waited:.1f} s for idle" if waited >= 1.5 else ""),
                    flush=True,
                )
                for e in row["error_samples"]:
                    print(f"   error: {e}", flush=True)
    finally:
        for c in conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in procs:
            p.join(timeout=10)
    rss = {name: peak_rss_kib(pid) for name, pid in pids.items()}
    out = {
        "system": args.system,
        "label": args.label,
        "endpoint": args.endpoint,
        "unsigned_payload": bool(args.unsigned_payload),
        "lean": bool(args.lean),
        "started": started,
        "ended": time.time(),
        "rows": results,
        "rss_kib": rss,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


# ---------------------------------------------------------------- summary

NAMES = {"cellar": "cellar (processes)", "weed": "SeaweedFS S3"}


def summary(work, rounds):
    runs = {sys_: [] for sys_ in ("cellar", "weed")}
    for sys_ in runs:
        for r in range(1, rounds + 1):
            path = os.path.join(work, f"{sys_}-r{r}.json")
            runs[sys_].append(json.load(open(path)) if os.path.exists(path) else None)

    def index(run):
        return {(x["op"], x["size"], x["conc"]): x for x in run["rows"]} if run else {}

    per = {s: [index(r) for r in runs[s]] for s in runs}
    keys = []
    for run in runs["cellar"] + runs["weed"]:
        for x in (run or {}).get("rows", []):
            k = (x["op"], x["size"], x["conc"])
            if k not in keys:
                keys.append(k)

    def big(size):
        return size >= 1 << 20

    def rate(x):
        return x["mb_per_s"] if big(x["size"]) else x["ops_per_s"]

    def median_row(rows):
        """The round whose rate is the median (the lower middle of an even count)."""
        have = sorted((x for x in rows if x is not None), key=rate)
        return have[(len(have) - 1) // 2] if have else None

    def size_label(size):
        if size % (1 << 20) == 0:
            return f"{size >> 20} MiB"
        if size % 1024 == 0:
            return f"{size >> 10} KiB"
        return f"{size} B"

    def label(k):
        op, size, conc = k
        return f"{'PutObject' if op == 'put' else 'GetObject'} {size_label(size)}, {conc} client{'s' if conc > 1 else ''}"

    def ms(v):
        return "-" if v != v else (f"{v:.1f}" if v >= 1 else f"{v:.2f}")

    def cell(x, with_lat=True):
        if x is None:
            return "-"
        r = f"{x['mb_per_s']:.1f} MB/s" if big(x["size"]) else f"{x['ops_per_s']:,.0f} /s"
        if x["errors"]:
            r += f" ({x['errors']} FAILED)"
        return f"{r}, {ms(x['p50_ms'])} / {ms(x['p99_ms'])}" if with_lat else r

    def ratio(a, b):
        return f"{rate(a) / rate(b):.2f}" if a and b and rate(b) > 0 else "-"

    def when(t):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))

    all_runs = [r for s in runs for r in runs[s] if r]
    if not all_runs:
        print("no results")
        return 1
    notes_path = os.path.join(work, "notes.txt")
    notes = [l.rstrip("\n") for l in open(notes_path)] if os.path.exists(notes_path) else []
    print(f"### S3 PutObject / GetObject: cellar beside SeaweedFS's S3 gateway ({when(min(r['started'] for r in all_runs))} - {when(max(r['ended'] for r in all_runs))})")
    print()
    for n in notes:
        print(n)
    unsigned = {r["unsigned_payload"] for r in all_runs}
    if {r.get("lean", False) for r in all_runs} == {True}:
        print(
            "- Client: the timed requests go through s3_load.py's LeanS3 (HTTP/1.1 over a kept-alive socket and SigV4 header auth, "
            "both by hand, with UNSIGNED-PAYLOAD; setup through boto3); no retries; one process per "
            "client, one connection each; every get's length checked, one in 16 compared byte for byte "
            "after the timed loop."
        )
    else:
        print(
            "- Client: boto3 "
            + ("with UNSIGNED-PAYLOAD (no SHA-256 of the bodies for SigV4)" if unsigned == {True}
               else "signing every body's SHA-256 (SigV4 over plain HTTP, botocore's default)" if unsigned == {False}
               else "with MIXED payload signing")
            + "; request_checksum_calculation and response_checksum_validation 'when_required' (no CRC32 "
            "over the bodies); path-style; no retries (total_max_attempts 1); one process per client, one "
            "connection each; every get's length checked, one in 16 compared byte for byte after the timed loop."
        )
    print()
    print(f"Median of {rounds} round(s) per system: each cell is the median round's rate, then its p50 / p99 "
          "latency in ms; MB = 10^6 bytes; 4 MiB rows in MB/s, 4 KiB rows in ops/s. Ratio = cellar / "
          "SeaweedFS of the medians (bold: >= 1.5, the goal), then each round's own ratio.")
    print()
    print(f"| row | {NAMES['cellar']} | {NAMES['weed']} | ratio | ratio per round |")
    print("|---|---:|---:|---:|---:|")
    for k in keys:
        c = median_row([p.get(k) for p in per["cellar"]])
        w = median_row([p.get(k) for p in per["weed"]])
        rounds_ratio = " / ".join(ratio(pc.get(k), pw.get(k)) for pc, pw in zip(per["cellar"], per["weed"]))
        main = ratio(c, w)
        # Bold: the goal (>= 1.5x SeaweedFS) met.
        if main != "-" and float(main) >= 1.5:
            main = f"**{main}**"
        print(f"| {label(k)} | {cell(c)} | {cell(w)} | {main} | {rounds_ratio} |")
    print()
    print("Every round (rate, p50 / p99 ms; r1 ran cellar first, r2 SeaweedFS first, and so on):")
    print()
    head = [f"cellar r{r}" for r in range(1, rounds + 1)] + [f"SeaweedFS r{r}" for r in range(1, rounds + 1)]
    print("| row | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for k in keys:
        cells = [cell(p.get(k)) for p in per["cellar"]] + [cell(p.get(k)) for p in per["weed"]]
        print(f"| {label(k)} | " + " | ".join(cells) + " |")
    print()
    print("CPU per op in the median round (server processes' user+system CPU over the phase / ops; client = the "
          "load generator's processes), and the clients' share of the 2-core machine's time:")
    print()
    ncpu = os.cpu_count() or 1
    print("| row | cellar servers | cellar client | SeaweedFS servers | SeaweedFS client |")
    print("|---|---:|---:|---:|---:|")
    for k in keys:
        cells = []
        for s in ("cellar", "weed"):
            x = median_row([p.get(k) for p in per[s]])
            if x is None or not x["ok"]:
                cells += ["-", "-"]
                continue
            busy = (x["server_cpu_s"] + x["client_cpu_s"]) / (x["wall_s"] * ncpu) if x["wall_s"] else 0
            cells.append(f"{x['server_cpu_s'] / x['ok'] * 1e3:.2f} ms")
            cells.append(f"{x['client_cpu_s'] / x['ok'] * 1e3:.2f} ms ({busy:.0%} busy)")
        print(f"| {label(k)} | " + " | ".join(cells) + " |")
    print()
    print(f"(busy = servers + client CPU / (wall x {ncpu} cores) of that phase.)")
    print()
    # peak RSS, most of any round, by role
    for s in ("cellar", "weed"):
        roles = {}
        totals = []
        for run in runs[s]:
            if not run:
                continue
            total = 0
            for name, kib in run["rss_kib"].items():
                if kib is None:
                    continue
                role = name.split(".")[0]  # ROLE.INSTANCE
                roles.setdefault(role, []).append(kib)
                total += kib
            totals.append(total)
        parts = ", ".join(f"{role} {max(v) / 1024:.0f} MiB (largest of {len(v) // max(1, len(totals))})" for role, v in roles.items())
        print(f"- Peak RSS (VmHWM), {NAMES[s]}: {parts}; all processes together at most {max(totals, default=0) / 1024:.0f} MiB in a round.")
    copies_path = os.path.join(work, "copies.txt")
    if os.path.exists(copies_path):
        for line in open(copies_path):
            print(line.rstrip("\n"))
    failed = [(s, r + 1, x) for s in per for r, p in enumerate(per[s]) for x in p.values() if x["errors"] or x["verify_bad"] or x["retries"] or x["warm_errors"]]
    if failed:
        print("- **Problems:**")
        for s, r, x in failed:
            print(f"  - {NAMES[s]} round {r}, {label((x['op'], x['size'], x['conc']))}: {x['errors']} failed ops, "
                  f"{x['retries']} retries, {x['verify_bad']} verified gets with wrong bytes; first errors: {x['error_samples'][:2]} {x['warm_errors'][:1]}")
    else:
        total_ops = sum(x["ok"] for s in per for p in per[s] for x in p.values())
        verified = sum(x["verified"] for s in per for p in per[s] for x in p.values())
        print(f"- No failed op, no retry: {total_ops:,} ops; every get's length checked, {verified:,} gets' bytes compared: all equal.")
    waits = [(s, r + 1, x) for s in per for r, p in enumerate(per[s]) for x in p.values() if x["idle_wait_s"] >= 1.5]
    if waits:
        print("- Waits for the cell to go idle before a phase: " + "; ".join(
            f"{NAMES[s]} r{r} {x['op']} {size_label(x['size'])} c{x['conc']} {x['idle_wait_s']:.1f} s" for s, r, x in waits))
    small = [x for s in per for p in per[s] for x in p.values() if x["clients_active"] < x["conc"]]
    if small:
        print(f"- Note: {len(small)} phase(s) had fewer ops than clients, so fewer clients were active than the row names.")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--endpoint", required=True)
    r.add_argument("--access-key", required=True)
    r.add_argument("--secret-key", required=True)
    r.add_argument("--bucket", default="bench")
    r.add_argument("--rows", required=True, help="SIZE:CONC:COUNT,...")
    r.add_argument("--out", required=True)
    r.add_argument("--label", default="s3bench", help="part of every body's seed")
    r.add_argument("--system", default="s3")
    r.add_argument("--pids", default="", help="ROLE.INSTANCE=PID,... server processes (CPU per phase, peak RSS)")
    r.add_argument("--idle-cmd", default="", help="shell command exiting 0 once the servers are idle")
    r.add_argument("--unsigned-payload", action="store_true")
    r.add_argument("--lean", action="store_true", help="timed requests through LeanS3 (HTTP/1.1 and SigV4 by hand, UNSIGNED-PAYLOAD) instead of boto3")
    r.add_argument("--ready-timeout", type=float, default=120)
    s = sub.add_parser("summary")
    s.add_argument("work")
    s.add_argument("rounds", type=int)
    args = ap.parse_args()
    if args.cmd == "run":
        run(args)
        return 0
    return summary(args.work, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
