//! The real `cellar dev` binary: starts, writes endpoints.json once it takes puts, serves
//! puts and gets (HTTP and the CLI), stops cleanly on SIGTERM and keeps its data across a
//! restart.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(180);

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cellar dev` on `dir` (its data kept from an earlier start).
fn start(dir: &Path) -> (Dev, String) {
    try_start(dir).unwrap_or_else(|why| panic!("{why}"))
}

/// A first start under `root`, in `root/cell-N`: a new directory each time `cellar dev`
/// could not bind a port it had picked (it picks free ports, closes them and binds them
/// later, so a cell starting beside another test's can lose one), at most three times.
/// The cell, its HTTP endpoint and its data directory.
fn start_fresh(root: &Path) -> (Dev, String, PathBuf) {
    let mut last = String::new();
    for attempt in 0..3 {
        let dir = root.join(format!("cell-{attempt}"));
        std::fs::create_dir_all(&dir).expect("data dir");
        match try_start(&dir) {
            Ok((dev, http)) => return (dev, http, dir),
            Err(why) if why.contains("Address already in use") => last = why,
            Err(why) => panic!("{why}"),
        }
    }
    panic!("cellar dev lost a port it picked three times: {last}")
}

/// `cellar dev` on `dir` once it wrote endpoints.json, or why it exited before.
fn try_start(dir: &Path) -> Result<(Dev, String), String> {
    let _ = std::fs::remove_file(dir.join("endpoints.json"));
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dev.log")).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args([
            "dev",
            "--http",
            "127.0.0.1:0",
            "--grpc",
            "127.0.0.1:0",
            "--s3",
            "127.0.0.1:0",
            "--volume-mib",
            "8",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn cellar dev");
    let mut dev = Dev(child);
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("endpoints.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let http = v["http"].as_str().expect("http endpoint").to_string();
            assert_eq!(v["masters"].as_array().map(Vec::len), Some(3));
            assert_eq!(v["volumes"].as_array().map(Vec::len), Some(6));
            return Ok((dev, http));
        }
        if let Ok(Some(status)) = dev.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("dev.log")).unwrap_or_default();
            return Err(format!("cellar dev exited with {status}: {log}"));
        }
        assert!(Instant::now() < deadline, "no endpoints.json in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut dev: Dev) {
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(dev.0.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = dev.0.try_wait().expect("wait") {
            assert!(status.success(), "cellar dev stopped with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "cellar dev did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(base: &str, hash: &str) -> Vec<u8> {
    let resp = ureq::get(&format!("{base}/v1/blocks/{hash}")).call().expect("get");
    let mut out = Vec::new();
    resp.into_reader().read_to_end(&mut out).expect("body");
    out
}

#[test]
fn cellar_dev_serves_puts_and_gets_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (dev, base, data) = start_fresh(dir.path());
    let blocks: Vec<Vec<u8>> =
        (0..20u32).map(|i| (0..(i * 50_000)).map(|b| (b ^ i) as u8).collect()).collect();
    let mut hashes = Vec::new();
    for b in &blocks {
        let resp = ureq::put(&format!("{base}/v1/blocks")).send_bytes(b).expect("put");
        assert_eq!(resp.status(), 201);
        let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).expect("json");
        hashes.push(v["hash"].as_str().expect("hash").to_string());
    }
    for (b, h) in blocks.iter().zip(&hashes) {
        assert!(get(&base, h) == *b);
    }
    // The CLI against the same cell.
    let file = dir.path().join("block.bin");
    std::fs::write(&file, b"from the command line").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["put", "--endpoint", &base])
        .arg(&file)
        .output()
        .expect("cellar put");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli_hash = String::from_utf8(out.stdout).expect("utf8").trim().to_string();
    let mut put_stdin = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["put", "--endpoint", &base, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cellar put -");
    put_stdin.stdin.take().expect("stdin").write_all(b"from the command line").expect("write");
    let same = put_stdin.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), cli_hash, "stdin and file give one hash");
    stop(dev);
    assert!(!data.join("endpoints.json").exists(), "endpoints.json is removed at a clean stop");

    // Restart: every block is still there.
    let (dev, base) = start(&data);
    for (b, h) in blocks.iter().zip(&hashes) {
        assert!(get(&base, h) == *b, "block {h} after restart");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["get", "--endpoint", &base, &cli_hash])
        .output()
        .expect("cellar get");
    assert_eq!(out.stdout, b"from the command line");
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["stat", "--endpoint", &base, &cli_hash])
        .output()
        .expect("cellar stat");
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stat json");
    assert_eq!(stat["size"], 21);
    assert!(stat["volume"].as_u64().is_some());
    stop(dev);
}

#[test]
fn the_server_ignores_sigpipe_and_survives_clients_hanging_up_mid_response() {
    // A server writing to a peer that has gone must get EPIPE, not die of SIGPIPE (cellar
    // dev was once killed this way while stopping).
    let dir = tempfile::tempdir().expect("tempdir");
    let (dev, base, _data) = start_fresh(dir.path());
    let block: Vec<u8> = (0..3_000_000u32).map(|b| (b % 251) as u8).collect();
    let resp = ureq::put(&format!("{base}/v1/blocks")).send_bytes(&block).expect("put");
    let v: serde_json::Value = serde_json::from_reader(resp.into_reader()).expect("json");
    let hash = v["hash"].as_str().expect("hash").to_string();
    let addr = base.trim_start_matches("http://").to_string();
    for _ in 0..10 {
        let mut s = std::net::TcpStream::connect(&addr).expect("connect");
        // Two requests at once: the second answer is written after the hang-up.
        let request = format!("GET /v1/blocks/{hash} HTTP/1.1\r\nHost: cellar\r\n\r\n");
        s.write_all(format!("{request}{request}").as_bytes()).expect("requests");
        let mut first = [0u8; 1];
        s.read_exact(&mut first).expect("the response starts");
        // Closed with the rest unread: the kernel resets the connection, and the server's
        // writes after that fail.
        drop(s);
    }
    // Still serving, and still running.
    assert!(get(&base, &hash) == block, "the block after the hang-ups");
    let mut dev = dev;
    assert!(dev.0.try_wait().expect("wait").is_none(), "cellar dev exited");
    // And SIGPIPE is ignored (the hang-ups above need not have made the server write after
    // the reset; this is what keeps a write that does from killing it).
    let status = std::fs::read_to_string(format!("/proc/{}/status", dev.0.id())).expect("proc status");
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .expect("SigIgn in /proc/PID/status");
    assert!(
        ignored & (1 << (libc::SIGPIPE - 1)) != 0,
        "SIGPIPE is not ignored by cellar dev: SigIgn {ignored:x}"
    );
    stop(dev);
}
