"""A cell of separate `cellar` processes for the fault experiments run by hand
(bench/full_disk.py, bench/dead_disk.py): 3 masters, 3 zones x 2 volume servers x 2 disks,
one frontend, on ephemeral ports under WORK_DIR; chosen disks are loop-mounted ext4 images
(root). However the experiment ends, every process is killed, the images unmounted and
WORK_DIR removed (KEEP=1 keeps it, logs included).
"""
import atexit, http.client, json, os, socket, subprocess, threading, time

BIN = os.environ.get("CELLAR_BIN", os.path.expanduser("~/.cache/cellar/target/release/cellar"))
ZONES, SERVERS, DISKS = (1, 2, 3), (1, 2), (1, 2)


def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class LoopCell:
    def __init__(self, work_dir, volume_bytes, image_bytes, on_image, volume_args=()):
        """`on_image(z, s, i)`: whether disk i of server s of zone z is an image of
        `image_bytes` (the others are directories); `volume_args` go to every `cellar
        volume`."""
        self.dir, self.procs, self.argv = work_dir, {}, {}
        os.system(f"rm -rf {work_dir}; mkdir -p {work_dir}")
        atexit.register(self.cleanup)
        for z in ZONES:
            for s in SERVERS:
                for i in DISKS:
                    m = self.disk(z, s, i)
                    os.makedirs(m, exist_ok=True)
                    if on_image(z, s, i) and os.system(
                            f"truncate -s {image_bytes} {m}.img && mkfs.ext4 -q -F {m}.img && mount -o loop {m}.img {m}") != 0:
                        raise SystemExit("cannot mount the loop images (root needed)")
        masters = [f"127.0.0.1:{port()}" for _ in range(3)]
        peers = ",".join(f"{i+1}={a}" for i, a in enumerate(masters))
        self.masters = ",".join(masters)
        open(f"{work_dir}/master.toml", "w").write(f"volume_size_bytes = {volume_bytes}\nplanner_interval_ms = 500\n")
        for i, a in enumerate(masters):
            args = ["master", "--id", str(i + 1), "--listen", a, "--data-dir", f"{work_dir}/m{i+1}", "--peers", peers,
                    "--config", f"{work_dir}/master.toml"] + (["--init"] if i == 0 else [])
            self.spawn(f"master-{i+1}", args)
        for z in ZONES:
            for s in SERVERS:
                disks = sum([["--disk", self.disk(z, s, i)] for i in DISKS], [])
                self.spawn(f"volume-z{z}-s{s}", ["volume", "--listen", "127.0.0.1:0", "--zone", f"z{z}", "--master", self.masters] + disks + list(volume_args))
        self.spawn("frontend", ["frontend", "--http", "127.0.0.1:0", "--master", self.masters], out=subprocess.PIPE)
        line = self.procs["frontend"].stdout.readline().decode()
        threading.Thread(target=lambda: self.procs["frontend"].stdout.read(), daemon=True).start()
        self.host = line.split("http://")[1].split()[0]
        deadline = time.time() + 120
        while self.put(b"ready")[0] != 201:
            if time.time() > deadline:
                raise SystemExit("no put")
            time.sleep(0.2)

    def disk(self, z, s, i):
        return f"{self.dir}/d-z{z}-s{s}-{i}"

    def spawn(self, name, args, out=subprocess.DEVNULL, log=None):
        self.argv[name] = args
        self.procs[name] = subprocess.Popen([BIN] + args, stdout=out, stderr=open(log or f"{self.dir}/{name}.log", "w"))

    def restart(self, name, log):
        """Kills process `name` and starts it again with its arguments, logging to `log`."""
        self.procs[name].kill(); self.procs[name].wait()
        self.spawn(name, self.argv[name], log=log)

    def exited(self):
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def put(self, data):
        c = http.client.HTTPConnection(self.host, timeout=120); c.request("PUT", "/v1/blocks", body=data)
        r = c.getresponse(); out = r.read(); c.close(); return r.status, out

    def get(self, h):
        c = http.client.HTTPConnection(self.host, timeout=120); c.request("GET", f"/v1/blocks/{h}")
        r = c.getresponse(); out = r.read(); c.close(); return r.status, out

    def status_text(self):
        return subprocess.run([BIN, "admin", "status", "--master", self.masters], capture_output=True, text=True).stdout

    def status(self):
        out = subprocess.run([BIN, "admin", "status", "--master", self.masters, "--json"], capture_output=True, text=True).stdout
        return json.loads(out or "{}")

    def warnings(self):
        """The warning and error lines of every log, counted, numbers masked."""
        os.system(f"grep -h 'WARN\\|ERROR' {self.dir}/*.log | sed 's/^[^ ]* //' | cut -c1-220 | sed 's/[0-9][0-9]*/N/g' | sort | uniq -c | sort -rn | head -25")

    def cleanup(self):
        for p in self.procs.values():
            p.kill()
        for p in self.procs.values():
            p.wait()
        time.sleep(1)
        os.system(f"umount {self.dir}/d-z*[0-9] 2>/dev/null")
        if not os.environ.get("KEEP"):
            os.system(f"rm -rf {self.dir}")
