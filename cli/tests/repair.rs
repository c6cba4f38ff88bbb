//! Repair over real processes (issue 21, must-shows 1 and 2): three masters, four zones of two
//! volume servers with two disks each, one frontend. Blocks are put until several volumes
//! are coded; then, while puts keep streaming in, one volume server is killed with
//! SIGKILL. Puts must keep being acknowledged; once the master marks the server down
//! (`down_after_ms`), every extent it held is rebuilt elsewhere: `cellar admin status
//! --json` must come back to `redundancy.below_full == 0` with no repair task left, no
//! volume may place an extent on the dead server any more, and every acknowledged block
//! must read back byte-exact. Then a disk directory of a live server is deleted: the disk
//! is reported failed and what it held is rebuilt on other disks, the same way.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, agent, block, get, put, stat};

const BLOCK_BYTES: usize = 64 << 10;
/// 4 MiB volumes: 64 blocks fill one.
const PUTS_BEFORE_KILL: u64 = 200;
const PUTS_AFTER_KILL_MIN: usize = 40;

/// `cellar admin status --json`, or none while no leader answers.
fn status(masters: &str) -> Option<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "status", "--master", masters, "--json"])
        .output()
        .expect("run cellar admin status");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until `cond` holds for the status, returning that status.
fn wait_status(masters: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(s) = status(masters) {
            if cond(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; last status: {last:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_volume_server_is_marked_down_and_its_extents_rebuilt_elsewhere() {
    let spec = CellSpec {
        masters: 3,
        zones: 4,
        servers_per_zone: 2,
        disks_per_server: 2,
        volume_mib: 4,
        master_config: "block_size_max_bytes = 1048576\nnode_silent_after_ms = 1500\ndown_after_ms = 4000\nplanner_interval_ms = 200\n"
            .into(),
        ..CellSpec::default()
    };
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));

    let mut acked: Vec<(u64, String)> = Vec::new();
    for i in 0..PUTS_BEFORE_KILL {
        match put(&a, &cell.base, &block(i, BLOCK_BYTES)) {
            PutAnswer::Stored(hash) => acked.push((i, hash)),
            other => panic!("put {i} before the kill: {other:?}"),
        }
    }
    wait_status(&masters, "coded volumes", |s| s["volumes"]["coded"].as_u64().unwrap_or(0) >= 2);

    // The victim: a server holding a fragment of a coded volume.
    let victim = acked
        .iter()
        .map(|(_, hash)| stat(&a, &cell.base, hash))
        .find(|s| s["state"] == "coded")
        .and_then(|s| s["fragments"][0]["node"].as_u64())
        .expect("a block in a coded volume");

    // Puts stream in from another thread while the victim is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let stop = stop.clone();
        let base = cell.base.clone();
        std::thread::spawn(move || {
            let a = agent(Duration::from_secs(30));
            let mut out = Vec::new();
            let mut i = PUTS_BEFORE_KILL;
            while !stop.load(Ordering::Relaxed) {
                out.push((i, put(&a, &base, &block(i, BLOCK_BYTES))));
                i += 1;
            }
            out
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let proc = cell.volume(victim).proc;
    cell.procs[proc].kill().expect("SIGKILL the victim");
    cell.procs[proc].wait().expect("reap the victim");
    let killed_at = Instant::now();

    // Marked down after down_after_ms, and rebuilt: nothing below full, no repair open.
    wait_status(&masters, "the victim marked down", |s| {
        s["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().any(|n| n["id"].as_u64() == Some(victim) && n["state"] == "down")
        })
    });
    assert!(killed_at.elapsed() >= Duration::from_millis(2500), "marked down before down_after_ms");
    // Keep putting into the repair, then stop the stream.
    while killed_at.elapsed() < Duration::from_secs(8) && !streamer.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let streamed = streamer.join().expect("put stream");
    let mut after = 0;
    for (i, answer) in streamed {
        match answer {
            PutAnswer::Stored(hash) => {
                acked.push((i, hash));
                after += 1;
            }
            other => panic!("put {i} during the fault was not acknowledged: {other:?}"),
        }
    }
    assert!(after >= PUTS_AFTER_KILL_MIN, "only {after} puts acknowledged while the server was down");

    let s = wait_status(&masters, "full redundancy", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["repair"]["tasks_failed"].as_u64(), Some(0), "{s:#}");
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "no task was given up: {s:#}");
    assert!(s["volumes"]["coded"].as_u64().unwrap_or(0) >= 3, "{s:#}");

    // Every acknowledged block reads back byte-exact, and no volume places an extent on
    // the dead server.
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(victim));

    // Phase 2 (must-show 2): a disk directory of a running server is deleted. The server's
    // heartbeat reports the disk failed; what it held is rebuilt on other disks.
    let (disk_path, disk_id) = {
        let st = stat(&a, &cell.base, &acked[0].1);
        let e = &st["fragments"][0];
        let node = e["node"].as_u64().expect("node");
        let disk_id = e["disk"].as_u64().expect("disk");
        let s = status(&masters).expect("status");
        let path = s["disks"]
            .as_array()
            .and_then(|disks| disks.iter().find(|d| d["id"].as_u64() == Some(disk_id)))
            .and_then(|d| d["path"].as_str())
            .expect("the disk's path")
            .to_string();
        assert_ne!(node, victim);
        (path, disk_id)
    };
    std::fs::remove_dir_all(&disk_path).expect("delete the disk directory");
    wait_status(&masters, "the deleted disk failed", |s| {
        s["disks"].as_array().is_some_and(|disks| {
            disks.iter().any(|d| d["id"].as_u64() == Some(disk_id) && d["health"] == "failed")
        })
    });
    for i in 0..20 {
        let i = 100_000 + i;
        match put(&a, &cell.base, &block(i, BLOCK_BYTES)) {
            PutAnswer::Stored(hash) => acked.push((i, hash)),
            other => panic!("put {i} after the disk failed: {other:?}"),
        }
    }
    let s = wait_status(&masters, "full redundancy after the disk", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["repair"]["tasks_failed"].as_u64(), Some(0), "{s:#}");
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "no task was given up: {s:#}");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(victim) && e["disk"].as_u64() != Some(disk_id));
}

/// Every block of `acked` reads back byte-exact, and every extent of its volume passes
/// `allowed`.
fn check_all(cell: &Cell, acked: &[(u64, String)], allowed: impl Fn(&serde_json::Value) -> bool) {
    let a = agent(Duration::from_secs(30));
    for (i, hash) in acked {
        let got = get(&a, &cell.base, hash).unwrap_or_else(|e| panic!("get block {i}: {e}"));
        assert!(got == block(*i, BLOCK_BYTES), "block {i} came back different");
        let st = stat(&a, &cell.base, hash);
        for part in ["replicas", "fragments"] {
            for e in st[part].as_array().expect("placement") {
                assert!(allowed(e), "block {i}'s volume still places a {part} extent on {e}: {st}");
            }
        }
    }
}
