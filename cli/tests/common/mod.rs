//! A cell of real `cellar` processes for the multi-process tests: masters, volume servers
//! in zones, one frontend, each its own process with its own log, on ephemeral ports in a
//! temp dir. Every process is SIGKILLed when the cell is dropped, however the test ends.

#![allow(dead_code)] // each test file uses part of the harness

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cell may take to come up, and any single wait on a condition.
pub const WAIT: Duration = Duration::from_secs(180);

/// The shape and settings of a cell.
#[derive(Debug, Clone)]
pub struct CellSpec {
    /// Raft members.
    pub masters: usize,
    /// Zones, each with `servers_per_zone` volume servers.
    pub zones: usize,
    /// Volume servers per zone.
    pub servers_per_zone: usize,
    /// Disks per volume server.
    pub disks_per_server: usize,
    /// Volume size in MiB (the masters'; volume servers and the frontend take the cell's
    /// settings from the cluster map).
    pub volume_mib: u64,
    /// Extra lines of the masters' TOML config.
    pub master_config: String,
    /// Extra flags of every volume server.
    pub volume_args: Vec<String>,
    /// Extra flags of the frontend.
    pub frontend_args: Vec<String>,
}

impl Default for CellSpec {
    fn default() -> Self {
        CellSpec {
            masters: 3,
            zones: 3,
            servers_per_zone: 2,
            disks_per_server: 2,
            volume_mib: 8,
            master_config: String::new(),
            volume_args: Vec::new(),
            frontend_args: Vec::new(),
        }
    }
}

/// One volume server process.
#[derive(Debug, Clone)]
pub struct VolumeProc {
    /// Its node id.
    pub node_id: u64,
    /// Index into [`Cell::procs`].
    pub proc: usize,
    /// Its log file.
    pub log: PathBuf,
    /// Its command line (after `cellar`), to start it again.
    pub args: Vec<String>,
    /// Its name in the cell's dir (`z<zone>-s<server>`).
    pub name: String,
}

/// A running cell.
pub struct Cell {
    /// The temp dir holding every disk, data dir and log.
    pub dir: tempfile::TempDir,
    /// Every child process.
    pub procs: Vec<Child>,
    /// Master addresses, in id order.
    pub masters: Vec<String>,
    /// Index into `procs` of each master, in id order.
    pub master_procs: Vec<usize>,
    /// Each master's command line (after `cellar`) without `--init`, to start it again.
    master_args: Vec<Vec<String>>,
    /// The frontend's extra flags, to start it again.
    frontend_args: Vec<String>,
    /// The volume servers.
    pub volumes: Vec<VolumeProc>,
    /// The frontend's HTTP base URL.
    pub base: String,
    /// Processes stopped with SIGSTOP and not yet continued (continued on drop, so that
    /// SIGKILL finds them runnable).
    frozen: Vec<u32>,
}

/// Warning and error lines shown per process log when a test fails.
const POST_MORTEM_LINES: usize = 15;

impl Drop for Cell {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test keeps its cell's directory, and its output carries what each
            // process warned of last: a failure in a full run (or CI) can be read without
            // running it again.
            self.dir.disable_cleanup(true);
            eprintln!("{}", self.post_mortem());
        }
        for pid in self.frozen.drain(..) {
            signal(pid, libc::SIGCONT);
        }
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Cell {
    /// Where the cell's directory is, and the last [`POST_MORTEM_LINES`] warnings and
    /// errors of each process's log (every `*.log` in the directory, by name).
    fn post_mortem(&self) -> String {
        let mut out = format!("cell directory kept for a post-mortem: {}\n", self.dir.path().display());
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let flagged: Vec<&str> =
                text.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
            if flagged.is_empty() {
                continue;
            }
            let name = log.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            let tail = &flagged[flagged.len().saturating_sub(POST_MORTEM_LINES)..];
            out.push_str(&format!(
                "--- {name}: {} warnings and errors, the last {}:\n",
                flagged.len(),
                tail.len()
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid this test spawned and a valid signal number.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Starts `cellar ARGS`, its stderr into `log`, its stdout piped.
pub fn cellar(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cellar")
}

/// Waits for a line of `path` containing `needle` and returns it.
pub fn wait_for_line(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(line) = text.lines().find(|l| l.contains(needle))
        {
            return line.to_string();
        }
        assert!(Instant::now() < deadline, "no {needle:?} in {}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `len` deterministic pseudo-random bytes for `seed`.
pub fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An HTTP agent whose every call is bounded (a hang fails the test instead of stalling it).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

/// Outcome of one put.
#[derive(Debug)]
pub enum PutAnswer {
    /// 201: acknowledged, with the hash.
    Stored(String),
    /// Refused or failed with this status (nothing acknowledged).
    Refused(u16),
    /// No answer (transport error or client timeout).
    NoAnswer(String),
}

/// One put of `bytes` through `agent`.
pub fn put(agent: &ureq::Agent, base: &str, bytes: &[u8]) -> PutAnswer {
    match agent.put(&format!("{base}/v1/blocks")).send_bytes(bytes) {
        Ok(resp) if resp.status() == 201 => {
            let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).expect("put answer");
            PutAnswer::Stored(v["hash"].as_str().expect("hash").to_string())
        }
        Ok(resp) => PutAnswer::Refused(resp.status()),
        Err(ureq::Error::Status(code, _)) => PutAnswer::Refused(code),
        Err(ureq::Error::Transport(t)) => PutAnswer::NoAnswer(t.to_string()),
    }
}

/// The block `hash`, or why it could not be read.
pub fn get(agent: &ureq::Agent, base: &str, hash: &str) -> Result<Vec<u8>, String> {
    let resp = agent.get(&format!("{base}/v1/blocks/{hash}")).call().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The stat document of `hash` (`GET /v1/stat/<hash>`).
pub fn stat(agent: &ureq::Agent, base: &str, hash: &str) -> serde_json::Value {
    let resp = agent.get(&format!("{base}/v1/stat/{hash}")).call().expect("stat");
    serde_json::from_reader(resp.into_reader()).expect("stat json")
}

/// `cellar admin status --json` against `masters`, or none while no leader answers.
pub fn admin_status(masters: &str) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "status", "--master", masters, "--json"])
        .output()
        .expect("run cellar admin status");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The metrics URL a process logged ("metrics served bound=ADDR").
pub fn metrics_url(log: &Path) -> String {
    let line = wait_for_line(log, "metrics served");
    let addr = line.split("bound=").nth(1).and_then(|s| s.split_whitespace().next()).expect("bound address");
    format!("http://{addr}/metrics")
}

/// The text at `url`.
pub fn scrape(url: &str) -> String {
    ureq::get(url).call().expect("scrape").into_string().expect("metrics text")
}

/// The value of the sample line starting with `prefix` (name and labels, then a space).
pub fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
}

impl Cell {
    /// Starts a cell of `spec`'s shape and waits until it takes a put.
    pub fn start(spec: &CellSpec) -> Cell {
        // CELLAR_TEST_KEEP=1 keeps the cell's directory (logs, disks) for a post-mortem.
        let keep = std::env::var_os("CELLAR_TEST_KEEP").is_some();
        let dir =
            tempfile::Builder::new().prefix("cellar-cell-").disable_cleanup(keep).tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        if keep {
            eprintln!("cell directory (kept): {}", d.display());
        }
        let mut cell = Cell {
            dir,
            procs: Vec::new(),
            masters: Vec::new(),
            master_procs: Vec::new(),
            master_args: Vec::new(),
            frontend_args: spec.frontend_args.clone(),
            volumes: Vec::new(),
            base: String::new(),
            frozen: Vec::new(),
        };
        for _ in 0..spec.masters {
            let port = cellar_bench::process::free_port().expect("port");
            cell.masters.push(format!("127.0.0.1:{port}"));
        }
        let peers: Vec<String> =
            cell.masters.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let peers = peers.join(",");
        let config = d.join("master.toml");
        std::fs::write(
            &config,
            format!("volume_size_bytes = {}\n{}\n", spec.volume_mib << 20, spec.master_config),
        )
        .expect("config");
        for (i, addr) in cell.masters.clone().iter().enumerate() {
            let id = (i + 1).to_string();
            let data = d.join(format!("master-{id}"));
            let mut args = vec![
                "master",
                "--id",
                &id,
                "--listen",
                addr,
                "--data-dir",
                data.to_str().expect("utf-8"),
                "--peers",
                &peers,
                "--config",
                config.to_str().expect("utf-8"),
                "--metrics",
                "127.0.0.1:0",
            ];
            cell.master_args.push(args.iter().map(|a| a.to_string()).collect());
            if i == 0 {
                args.push("--init");
            }
            cell.procs.push(cellar(&args, &d.join(format!("master-{id}.log"))));
            cell.master_procs.push(cell.procs.len() - 1);
        }
        let master_list = cell.masters.join(",");
        for zone in 1..=spec.zones {
            for server in 1..=spec.servers_per_zone {
                let name = format!("z{zone}-s{server}");
                let log = d.join(format!("volume-{name}.log"));
                let mut args: Vec<String> = vec![
                    "volume".into(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--zone".into(),
                    format!("z{zone}"),
                    "--master".into(),
                    master_list.clone(),
                    "--metrics".into(),
                    "127.0.0.1:0".into(),
                ];
                for disk in 1..=spec.disks_per_server {
                    args.push("--disk".into());
                    args.push(d.join(format!("disk-{name}-{disk}")).to_str().expect("utf-8").into());
                }
                args.extend(spec.volume_args.iter().cloned());
                let argv: Vec<&str> = args.iter().map(String::as_str).collect();
                cell.procs.push(cellar(&argv, &log));
                cell.volumes.push(VolumeProc { node_id: 0, proc: cell.procs.len() - 1, log, args, name });
            }
        }
        for v in &mut cell.volumes {
            let line = wait_for_line(&v.log, "volume server running");
            v.node_id = line
                .split("node=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no node id in {line:?}"));
        }
        let frontend_args: Vec<&str> = spec.frontend_args.iter().map(String::as_str).collect();
        cell.base = cell.start_frontend("frontend", &frontend_args);

        cell.wait_for_a_put("frontend.log");
        cell
    }

    /// Waits (at most [`WAIT`]) until the frontend acknowledges a put: the volume servers
    /// have registered and heartbeated. `log` is the frontend's, shown if it never does.
    fn wait_for_a_put(&self, log: &str) {
        let a = agent(Duration::from_secs(30));
        let deadline = Instant::now() + WAIT;
        loop {
            let answer = put(&a, &self.base, b"ready");
            if matches!(answer, PutAnswer::Stored(_)) {
                return;
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.path(log)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "the cell took no put in time; last answer {answer:?}; frontend log (last lines first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs every process of the cell at once (masters, volume servers, frontends),
    /// as a power cut of the whole cell would stop them, and waits for them to exit.
    pub fn kill_all(&mut self) {
        for pid in self.frozen.drain(..) {
            signal(pid, libc::SIGCONT);
        }
        for c in &mut self.procs {
            let _ = c.kill();
        }
        for c in &mut self.procs {
            let _ = c.wait();
        }
    }

    /// Starts every master, volume server and the frontend again on their directories
    /// (after [`Cell::kill_all`]): masters on their addresses, volume servers on new
    /// ephemeral ports (as a restarted host's may be), each process logging to a new file
    /// (`*-restart-N.log`); waits until the frontend acknowledges a put. `cell.base` is
    /// the new frontend's.
    pub fn restart_all(&mut self) {
        let n = self.procs.len();
        for (i, args) in self.master_args.clone().iter().enumerate() {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            self.procs.push(cellar(&argv, &self.path(&format!("master-{}-restart-{n}.log", i + 1))));
            self.master_procs[i] = self.procs.len() - 1;
        }
        for v in self.volumes.clone() {
            let log = self.path(&format!("volume-{}-restart-{n}.log", v.name));
            let argv: Vec<&str> = v.args.iter().map(String::as_str).collect();
            self.procs.push(cellar(&argv, &log));
            let entry = self.volumes.iter_mut().find(|x| x.node_id == v.node_id).expect("known node");
            entry.proc = self.procs.len() - 1;
            entry.log = log;
        }
        for v in self.volumes.clone() {
            let line = wait_for_line(&v.log, "volume server running");
            assert!(
                line.contains(&format!("node={} ", v.node_id)),
                "restarted under another node id: {line}"
            );
        }
        let args = self.frontend_args.clone();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = format!("frontend-restart-{n}");
        self.base = self.start_frontend(&name, &argv);
        self.wait_for_a_put(&format!("{name}.log"));
    }

    /// Starts a frontend over the cell's masters with `args` added, its log `NAME.log`;
    /// its base URL once it serves.
    pub fn start_frontend(&mut self, name: &str, args: &[&str]) -> String {
        let master_list = self.masters.join(",");
        let mut argv: Vec<&str> = vec!["frontend", "--http", "127.0.0.1:0", "--master", &master_list];
        argv.extend_from_slice(args);
        let mut frontend = cellar(&argv, &self.path(&format!("{name}.log")));
        let stdout = frontend.stdout.take().expect("stdout");
        self.procs.push(frontend);
        let mut stdout = BufReader::new(stdout);
        let mut first = String::new();
        stdout.read_line(&mut first).expect("frontend banner");
        // The rest of its output is read (and dropped) for as long as it runs, so that its
        // writes never meet a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        first.trim().strip_prefix("frontend serving ").expect("frontend address").to_string()
    }

    /// The volume server with node id `node_id`.
    pub fn volume(&self, node_id: u64) -> &VolumeProc {
        self.volumes.iter().find(|v| v.node_id == node_id).unwrap_or_else(|| panic!("no node {node_id}"))
    }

    /// Stops process `proc` (an index into [`Cell::procs`]) with SIGSTOP: its sockets stay
    /// open, nothing answers.
    fn freeze_proc(&mut self, proc: usize) {
        let pid = self.procs[proc].id();
        signal(pid, libc::SIGSTOP);
        self.frozen.push(pid);
    }

    /// Lets process `proc`, frozen, run again (SIGCONT).
    fn thaw_proc(&mut self, proc: usize) {
        let pid = self.procs[proc].id();
        signal(pid, libc::SIGCONT);
        self.frozen.retain(|p| *p != pid);
    }

    /// Stops the process of volume server `node_id` with SIGSTOP.
    pub fn freeze(&mut self, node_id: u64) {
        self.freeze_proc(self.volume(node_id).proc);
    }

    /// Lets a frozen volume server run again (SIGCONT).
    pub fn thaw(&mut self, node_id: u64) {
        self.thaw_proc(self.volume(node_id).proc);
    }

    /// Stops master `id` (its Raft id, 1-based) with SIGSTOP.
    pub fn freeze_master(&mut self, id: usize) {
        self.freeze_proc(self.master_procs[id - 1]);
    }

    /// Lets a frozen master run again (SIGCONT).
    pub fn thaw_master(&mut self, id: usize) {
        self.thaw_proc(self.master_procs[id - 1]);
    }

    /// SIGKILLs volume server `node_id` and waits for it to exit.
    pub fn kill_volume(&mut self, node_id: u64) {
        let proc = self.volume(node_id).proc;
        let pid = self.procs[proc].id();
        self.procs[proc].kill().expect("SIGKILL");
        self.procs[proc].wait().expect("reap");
        // Killed while frozen: nothing left to thaw.
        self.frozen.retain(|p| *p != pid);
    }

    /// Starts volume server `node_id` again with its disks (after [`Cell::kill_volume`]),
    /// logging to a new file, and waits until it runs under the same node id.
    pub fn restart_volume(&mut self, node_id: u64) {
        let v = self.volume(node_id).clone();
        let restarts = self.procs.len();
        let log = self.path(&format!("volume-{}-restart-{restarts}.log", v.name));
        let argv: Vec<&str> = v.args.iter().map(String::as_str).collect();
        self.procs.push(cellar(&argv, &log));
        let line = wait_for_line(&log, "volume server running");
        assert!(line.contains(&format!("node={node_id} ")), "restarted under another node id: {line}");
        let proc = self.procs.len() - 1;
        let entry = self.volumes.iter_mut().find(|x| x.node_id == node_id).expect("known node");
        entry.proc = proc;
        entry.log = log;
    }

    /// Stops master `id` (its Raft id, 1-based) with SIGTERM, waits for it to exit, and
    /// starts it again on its address and data directory with the settings of `extra`
    /// (TOML lines) in place of the same ones in its config (a file of its own from now
    /// on), logging to a new file; waits until it runs. Returns its log.
    pub fn restart_master(&mut self, id: usize, extra: &str) -> PathBuf {
        let proc = self.master_procs[id - 1];
        signal(self.procs[proc].id(), libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while self.procs[proc].try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "master {id} did not stop within {WAIT:?} of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = self.procs.len();
        let mut args = self.master_args[id - 1].clone();
        let at = args.iter().position(|a| a == "--config").expect("--config") + 1;
        let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_string();
        let replaced: Vec<String> = extra.lines().map(key).filter(|k| !k.is_empty()).collect();
        let kept: Vec<String> = std::fs::read_to_string(&args[at])
            .expect("master config")
            .lines()
            .filter(|l| !replaced.contains(&key(l)))
            .map(str::to_string)
            .collect();
        let own = self.path(&format!("master-{id}-restart-{n}.toml"));
        std::fs::write(&own, format!("{}\n{extra}\n", kept.join("\n"))).expect("config");
        args[at] = own.to_str().expect("utf-8").to_string();
        let log = self.path(&format!("master-{id}-restart-{n}.log"));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.procs.push(cellar(&argv, &log));
        self.master_procs[id - 1] = self.procs.len() - 1;
        self.master_args[id - 1] = args;
        wait_for_line(&log, "master running");
        log
    }

    /// The path of a file in the cell's dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
