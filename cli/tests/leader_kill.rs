//! Must-show test of issue 19 over real processes: three `cellar master` processes, three
//! volume servers (one per zone) and a frontend. Clients put blocks (the same content
//! several times, to build reference counts) and drop references (`DELETE
//! /v1/blocks/<hash>`) in a loop; the master leader is killed with SIGKILL in the middle.
//! Afterwards every block's reference count, read with `cellar stat`, equals the puts
//! minus the deletes that were acknowledged.
//!
//! What "acknowledged" means: a put answered 201 added one reference; a delete answered
//! 204 dropped one; a delete answered 404 dropped none (the master found no entry). Any
//! other end (503 after the frontend's own retries, a broken connection, a timeout) is an
//! unknown outcome: the master may or may not have applied it. So for each block the
//! count must lie in [puts - deletes - unknown deletes, puts + unknown puts - deletes]
//! (acknowledged puts and deletes), which is the exact count when no answer was lost.
//! A retried master call applied twice (the defect this guards against) shows as a count
//! outside that range: a commit counted twice is one reference too many though every put
//! was answered.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(120);
/// Bound on one HTTP request: above the master client's 15 s call deadline plus the
/// frontend's put retries, so an answer is normally waited for, never forever.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
const CLIENTS: u64 = 4;
const BLOCKS_PER_CLIENT: u64 = 3;
/// Operations acknowledged before the leader is killed.
const OPS_BEFORE_KILL: u64 = 60;
/// Operations acknowledged after the kill before the clients stop. Clients run rounds of
/// (put, put, delete) per block until told to stop, so a fast machine cannot finish its
/// whole stream before the kill lands (the test once saw no operation after the kill).
const OPS_AFTER_KILL: u64 = 60;
const BLOCK_BYTES: usize = 4 << 10;

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

fn block(client: u64, b: u64) -> Vec<u8> {
    let mut state = (client * 1000 + b + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BLOCK_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout(HTTP_TIMEOUT).build()
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Applied once.
    Acked,
    /// Definitely not applied.
    NotApplied,
    /// Applied or not: the answer was lost.
    Unknown,
}

fn put(agent: &ureq::Agent, base: &str, hash: &str, bytes: &[u8]) -> Outcome {
    // An empty hash puts unkeyed (`PUT /v1/blocks`).
    let url = if hash.is_empty() { format!("{base}/v1/blocks") } else { format!("{base}/v1/blocks/{hash}") };
    match agent.put(&url).send_bytes(bytes) {
        Ok(resp) if resp.status() == 201 => Outcome::Acked,
        Ok(resp) => panic!("put answered {}", resp.status()),
        Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_)) => Outcome::Unknown,
        Err(e) => panic!("put failed: {e}"),
    }
}

fn delete(agent: &ureq::Agent, base: &str, hash: &str) -> Outcome {
    match agent.delete(&format!("{base}/v1/blocks/{hash}")).call() {
        Ok(resp) if resp.status() == 204 => Outcome::Acked,
        Ok(resp) => panic!("delete answered {}", resp.status()),
        Err(ureq::Error::Status(404, _)) => Outcome::NotApplied,
        Err(ureq::Error::Status(503, _)) | Err(ureq::Error::Transport(_)) => Outcome::Unknown,
        Err(e) => panic!("delete failed: {e}"),
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    puts: u64,
    unknown_puts: u64,
    deletes: u64,
    unknown_deletes: u64,
}

/// The leader's id, from `cellar admin status --json`.
fn leader(masters: &str) -> Option<u64> {
    common::admin_status(masters)?["leader"]["id"].as_u64()
}

/// A block's reference count through `cellar stat` (0 once its entry is gone).
fn references(base: &str, hash: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["stat", "--endpoint", base, hash])
        .output()
        .expect("run cellar stat");
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("404") || err.contains("NOT_FOUND"), "cellar stat {hash}: {err}");
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stat json");
    v["references"].as_u64().expect("references")
}

#[test]
fn killing_the_master_leader_mid_stream_counts_every_reference_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut procs = Procs::default();

    let addrs: Vec<String> =
        (0..3).map(|_| format!("127.0.0.1:{}", cellar_bench::process::free_port().expect("port"))).collect();
    let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let masters = addrs.join(",");
    std::fs::write(d.join("master.toml"), "volume_size_bytes = 8388608\n").expect("config");
    let config = d.join("master.toml");
    let mut master_proc = BTreeMap::new();
    for (i, addr) in addrs.iter().enumerate() {
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
        ];
        if i == 0 {
            args.push("--init");
        }
        procs.0.push(cellar(&args, &d.join(format!("master-{id}.log"))));
        master_proc.insert(i as u64 + 1, procs.0.len() - 1);
    }
    for zone in 1..=3 {
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
                &masters,
            ],
            &log,
        ));
        wait_for_line(&log, "volume server running");
    }
    let mut frontend = cellar(
        &["frontend", "--http", "127.0.0.1:0", "--master", &masters, "--volume-mib", "8", "--writers", "2"],
        &d.join("frontend.log"),
    );
    let stdout = frontend.stdout.take().expect("stdout");
    procs.0.push(frontend);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("frontend banner");
    let base = first.trim().strip_prefix("frontend serving ").expect("frontend address").to_string();

    // Puts are taken once the volume servers have registered and heartbeated.
    let http = agent();
    let deadline = Instant::now() + WAIT;
    while put(&http, &base, "", b"ready") != Outcome::Acked {
        assert!(Instant::now() < deadline, "the cluster took no put in time");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each client owns its blocks: puts, puts again, drops one reference, per round.
    let acked_ops = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let ops_after_kill = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, acked_ops, killed, ops_after_kill, stop) =
                (base.clone(), acked_ops.clone(), killed.clone(), ops_after_kill.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = agent();
                let blocks: Vec<(String, Vec<u8>)> = (0..BLOCKS_PER_CLIENT)
                    .map(|b| {
                        let bytes = block(client, b);
                        (hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)), bytes)
                    })
                    .collect();
                let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
                let count = |outcome: &Outcome| {
                    if *outcome == Outcome::Acked {
                        acked_ops.fetch_add(1, Ordering::SeqCst);
                        if killed.load(Ordering::SeqCst) {
                            ops_after_kill.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                };
                while !stop.load(Ordering::SeqCst) {
                    for (hash, bytes) in &blocks {
                        let t = tallies.entry(hash.clone()).or_default();
                        for _ in 0..2 {
                            let o = put(&http, &base, hash, bytes);
                            count(&o);
                            match o {
                                Outcome::Acked => t.puts += 1,
                                Outcome::Unknown => t.unknown_puts += 1,
                                Outcome::NotApplied => unreachable!("puts are acked or unknown"),
                            }
                        }
                        let o = delete(&http, &base, hash);
                        count(&o);
                        match o {
                            Outcome::Acked => t.deletes += 1,
                            Outcome::Unknown => t.unknown_deletes += 1,
                            Outcome::NotApplied => {}
                        }
                    }
                }
                tallies
            })
        })
        .collect();

    // Kill the leader once the stream is well under way.
    let deadline = Instant::now() + WAIT;
    while acked_ops.load(Ordering::SeqCst) < OPS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "the clients made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let old_leader = loop {
        if let Some(id) = leader(&masters) {
            break id;
        }
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(100));
    };
    let index = master_proc[&old_leader];
    procs.0[index].kill().expect("SIGKILL the leader");
    procs.0[index].wait().expect("reap");
    killed.store(true, Ordering::SeqCst);
    let before_kill = acked_ops.load(Ordering::SeqCst);
    let deadline = Instant::now() + WAIT;
    while ops_after_kill.load(Ordering::SeqCst) < OPS_AFTER_KILL && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::SeqCst);

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for w in workers {
        tallies.extend(w.join().expect("client thread"));
    }
    let after = ops_after_kill.load(Ordering::SeqCst);
    assert!(after >= OPS_AFTER_KILL, "only {after} operations were acknowledged in {WAIT:?} after the kill");
    let new_leader = leader(&masters).expect("a new leader");
    assert_ne!(new_leader, old_leader);

    let mut unknown = 0;
    for (hash, t) in &tallies {
        let got = references(&base, hash);
        let low = t.puts.saturating_sub(t.deletes + t.unknown_deletes);
        let high = (t.puts + t.unknown_puts).saturating_sub(t.deletes);
        unknown += t.unknown_puts + t.unknown_deletes;
        assert!(
            (low..=high).contains(&got),
            "block {hash}: {got} references, expected {low}..={high} from {t:?}"
        );
        if t.unknown_puts + t.unknown_deletes == 0 {
            assert_eq!(got, t.puts - t.deletes, "block {hash}: every answer arrived, the count is exact");
        }
    }
    eprintln!(
        "leader {old_leader} killed after {before_kill} acknowledged operations; {after} after; \
         {unknown} unknown outcomes; new leader {new_leader}"
    );
}
