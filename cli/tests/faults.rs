//! Fault test over real processes: one master, four volume servers in four zones and a
//! frontend, each its own `cellar` process. While puts stream in, the volume server
//! holding a replica of the volume being written is killed with SIGKILL. Puts must go on
//! (the frontend seals that volume and retries on one placed away from the server it could
//! not reach; the master also stops placing on a silent server), none may be refused, and
//! every acknowledged put must read back byte-exact, those whose volume lost the replica
//! included.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
const BLOCK_BYTES: usize = 64 << 10;
const PUTS_BEFORE_KILL: u64 = 30;
const PUTS_AFTER_KILL: u64 = 40;

/// Child processes, killed (SIGKILL) when the test ends however it ends.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn cellar(args: &[&str], log: &Path) -> Child {
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
fn wait_for_line(path: &Path, needle: &str) -> String {
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

fn block(i: u64) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BLOCK_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// One put; `Some(hash)` when acknowledged (201), `None` when refused (not stored).
fn put(base: &str, bytes: &[u8]) -> Option<String> {
    match ureq::put(&format!("{base}/v1/blocks")).send_bytes(bytes) {
        Ok(resp) if resp.status() == 201 => {
            let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).expect("put answer");
            Some(v["hash"].as_str().expect("hash").to_string())
        }
        Ok(resp) => panic!("put answered {}", resp.status()),
        Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_)) => None,
        Err(e) => panic!("put failed: {e}"),
    }
}

fn get(base: &str, hash: &str) -> Vec<u8> {
    let resp = ureq::get(&format!("{base}/v1/blocks/{hash}")).call().expect("get");
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).expect("body");
    out
}

#[test]
fn killing_a_volume_server_mid_put_loses_no_acknowledged_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut procs = Procs::default();

    let master_port = cellar_bench::process::free_port().expect("port");
    let master = format!("127.0.0.1:{master_port}");
    std::fs::write(d.join("master.toml"), "volume_size_bytes = 8388608\nnode_silent_after_ms = 2000\n")
        .expect("config");
    let master_dir = d.join("master");
    let config = d.join("master.toml");
    procs.0.push(cellar(
        &[
            "master",
            "--id",
            "1",
            "--listen",
            &master,
            "--data-dir",
            master_dir.to_str().expect("utf-8"),
            "--peers",
            &format!("1={master}"),
            "--init",
            "--config",
            config.to_str().expect("utf-8"),
            "--metrics",
            "127.0.0.1:0",
        ],
        &d.join("master.log"),
    ));

    // Four zones of one server each: three replicas per volume, so any one server can go.
    let mut node_of_proc = Vec::new();
    for zone in 1..=4 {
        let disk = d.join(format!("disk-z{zone}"));
        let log = d.join(format!("volume-z{zone}.log"));
        procs.0.push(cellar(
            &[
                "volume",
                "--listen",
                "127.0.0.1:0",
                "--zone",
                &format!("z{zone}"),
                "--disk",
                disk.to_str().expect("utf-8"),
                "--master",
                &master,
                "--metrics",
                "127.0.0.1:0",
            ],
            &log,
        ));
        let line = wait_for_line(&log, "volume server running");
        let node: u64 = line
            .split("node=")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no node id in {line:?}"));
        node_of_proc.push((node, procs.0.len() - 1, metrics_url(&log)));
    }

    let mut frontend = cellar(
        &["frontend", "--http", "127.0.0.1:0", "--master", &master, "--volume-mib", "8", "--writers", "2"],
        &d.join("frontend.log"),
    );
    let stdout = frontend.stdout.take().expect("stdout");
    procs.0.push(frontend);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("frontend banner");
    let base = first.trim().strip_prefix("frontend serving ").expect("frontend address").to_string();

    // Puts are taken once the volume servers have registered and heartbeated.
    let deadline = Instant::now() + WAIT;
    while put(&base, b"ready").is_none() {
        assert!(Instant::now() < deadline, "the cluster took no put in time");
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..PUTS_BEFORE_KILL {
        let bytes = block(i);
        let hash = put(&base, &bytes).expect("put before any fault");
        acknowledged.push((hash, bytes));
    }

    // Kill a server holding a replica of the volume the last put went to: the volume
    // the frontend is writing now.
    let (last, _) = acknowledged.last().expect("a put");
    let stat: serde_json::Value = serde_json::from_reader(
        ureq::get(&format!("{base}/v1/stat/{last}")).call().expect("stat").into_reader(),
    )
    .expect("stat json");
    assert_eq!(stat["state"], "open", "{stat}");
    let victim = stat["replicas"][0]["node"].as_u64().expect("a replica node");
    let &(_, index, _) = node_of_proc.iter().find(|(n, _, _)| *n == victim).expect("victim's process");
    procs.0[index].kill().expect("SIGKILL");
    procs.0[index].wait().expect("reap");

    let deadline = Instant::now() + WAIT;
    let mut after = 0;
    let mut refused = 0;
    let mut i = PUTS_BEFORE_KILL;
    while after < PUTS_AFTER_KILL {
        assert!(Instant::now() < deadline, "puts did not resume: {after} acknowledged, {refused} refused");
        let bytes = block(i);
        i += 1;
        match put(&base, &bytes) {
            Some(hash) => {
                acknowledged.push((hash, bytes));
                after += 1;
            }
            None => {
                refused += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    // The put that met the dead replica was retried on another volume.
    let metrics = ureq::get(&format!("{base}/metrics")).call().expect("metrics").into_string().expect("text");
    let retries: f64 = metrics
        .lines()
        .find(|l| l.starts_with("cellar_frontend_put_retries_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no put retry counter in {metrics}"));
    assert!(retries >= 1.0, "no put was retried after the kill; metrics:\n{metrics}");
    eprintln!("after the kill: {after} puts acknowledged, {refused} refused, {retries} retried");
    // The frontend places new volumes away from the server it could not reach, so no put
    // had to be refused.
    assert_eq!(refused, 0, "puts were refused after the kill");

    // Every acknowledged block reads back byte-exact.
    for (hash, bytes) in &acknowledged {
        assert!(get(&base, hash) == *bytes, "block {hash} came back different");
    }

    // Every process serves its own metrics: the master counts the index entries, the
    // surviving volume servers their appends and reads.
    let master_metrics = scrape(&metrics_url(&d.join("master.log")));
    let entries = value(&master_metrics, "cellar_master_index_entries ");
    assert!(entries >= acknowledged.len() as f64, "index has {entries} entries:\n{master_metrics}");
    assert_eq!(value(&master_metrics, "cellar_master_raft_is_leader "), 1.0);
    let mut appends = 0.0;
    let mut reads = 0.0;
    for (node, _, url) in &node_of_proc {
        if *node != victim {
            let text = scrape(url);
            appends += value(&text, "cellar_volume_requests_total{op=\"append\",outcome=\"ok\"} ");
            reads += value(&text, "cellar_volume_requests_total{op=\"read_record\",outcome=\"ok\"} ");
        }
    }
    // Three replicas per acknowledged block, at most one of them on the killed server.
    assert!(appends >= 2.0 * acknowledged.len() as f64, "{appends} appends counted");
    assert!(reads >= acknowledged.len() as f64, "{reads} record reads counted");
}

/// The metrics URL a process logged ("metrics served bound=ADDR").
fn metrics_url(log: &Path) -> String {
    let line = wait_for_line(log, "metrics served");
    let addr = line.split("bound=").nth(1).and_then(|s| s.split_whitespace().next()).expect("bound address");
    format!("http://{addr}/metrics")
}

fn scrape(url: &str) -> String {
    ureq::get(url).call().expect("scrape").into_string().expect("metrics text")
}

/// The value of the sample line starting with `prefix` (name and labels, then a space).
fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{text}"))
}
