//! A rolling upgrade of the masters over real processes (three masters, three zones of two
//! volume servers with two disks each, one frontend): the cell starts as an older build's
//! would (every master offering apply version 1, `apply_version_max = 1`), and the masters
//! are restarted one at a time (SIGTERM, then the same data directory) offering version 2,
//! while a client streams puts through the frontend. The cell must stay at version 1
//! while any master offers only that (`cellar admin status` names what each offers), be
//! raised to 2 once the last is restarted, take puts throughout, and every acknowledged
//! block must read back byte-exact at the end (docs/ARCHITECTURE.md, "Upgrading a cell").

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, admin_status, agent, block, get, put};

/// Size of the blocks the client puts.
const BLOCK_BYTES: usize = 64 << 10;
/// Puts that must be acknowledged after each restart before the next one.
const PUTS_BETWEEN_RESTARTS: usize = 10;

/// Waits until `cellar admin status` satisfies `done`; returns that status.
fn wait_status(masters: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    loop {
        if let Some(s) = admin_status(masters) {
            if done(&s) {
                return s;
            }
            last = Some(s);
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; last status {last:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What each member offered when the leader last asked, by id (none: not known).
fn offers(s: &serde_json::Value) -> Vec<(u64, Option<u64>)> {
    let members = s["members"].as_array().cloned().unwrap_or_default();
    members.iter().map(|m| (m["id"].as_u64().unwrap_or(0), m["apply_version_max"].as_u64())).collect()
}

/// `cellar admin retry-task --task TASK`: whether it succeeded, and what it printed.
fn retry_task(masters: &str, task: u64) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "retry-task", "--master", masters, "--task", &task.to_string()])
        .output()
        .expect("run cellar admin retry-task");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Waits until at least `n` puts were acknowledged in all.
fn wait_acked(acked: &Mutex<Vec<(u64, String)>>, n: usize, when: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let have = acked.lock().expect("acked").len();
        if have >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{when}: {have} puts acknowledged, not {n}, within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rolling_restart_of_the_masters_keeps_every_write_and_raises_the_apply_version_after_the_last() {
    let spec = CellSpec { master_config: "apply_version_max = 1".into(), ..CellSpec::default() };
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    wait_status(&masters, "the old build's cell, every member offering 1", |s| {
        s["apply_version"] == 1 && offers(s) == vec![(1, Some(1)), (2, Some(1)), (3, Some(1))]
    });

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let writer = {
        let (stop, acked, base) = (stop.clone(), acked.clone(), cell.base.clone());
        std::thread::spawn(move || {
            let a = agent(Duration::from_secs(60));
            let mut refused = 0u64;
            for seed in 1u64.. {
                if stop.load(Ordering::Acquire) {
                    return refused;
                }
                match put(&a, &base, &block(seed, BLOCK_BYTES)) {
                    PutAnswer::Stored(hash) => acked.lock().expect("acked").push((seed, hash)),
                    // A put that meets a leader change may be refused or go unanswered:
                    // nothing acknowledged, nothing to check.
                    PutAnswer::Refused(_) | PutAnswer::NoAnswer(_) => refused += 1,
                }
            }
            refused
        })
    };
    wait_acked(&acked, PUTS_BETWEEN_RESTARTS, "before the upgrade");
    // A command of version 2 is refused while the cell is at 1 (masters of the build
    // before could not read it).
    let (ok, text) = retry_task(&masters, 999_999);
    assert!(!ok && text.contains("apply version 2"), "{text}");

    for id in 1..=3usize {
        cell.restart_master(id, "apply_version_max = 2");
        let before = acked.lock().expect("acked").len();
        wait_acked(&acked, before + PUTS_BETWEEN_RESTARTS, &format!("after master {id} was restarted"));
        if id < 3 {
            // The restarted members offer 2; the others still 1: the cell stays.
            let s = wait_status(&masters, &format!("master {id} offering 2"), |s| {
                offers(s).iter().all(|(m, o)| *o == Some(if *m as usize <= id { 2 } else { 1 }))
            });
            assert_eq!(s["apply_version"], 1, "held while master 3 offers 1: {s:#}");
        }
    }
    let s = wait_status(&masters, "the cell raised to 2", |s| s["apply_version"] == 2);
    assert_eq!(s["apply_version_max"], 2);
    // At 2 the command is read, and refused for a task that is not queued.
    let (ok, text) = retry_task(&masters, 999_999);
    assert!(!ok && text.contains("task 999999 is not queued"), "{text}");
    let before = acked.lock().expect("acked").len();
    wait_acked(&acked, before + PUTS_BETWEEN_RESTARTS, "after the raise");
    stop.store(true, Ordering::Release);
    let refused = writer.join().expect("writer");

    let acked = acked.lock().expect("acked").clone();
    let a = agent(Duration::from_secs(60));
    let mut bad = Vec::new();
    for (seed, hash) in &acked {
        match get(&a, &cell.base, hash) {
            Ok(bytes) if bytes == block(*seed, BLOCK_BYTES) => {}
            Ok(bytes) => bad.push(format!("{hash}: {} bytes, not the block put", bytes.len())),
            Err(e) => bad.push(format!("{hash}: {e}")),
        }
    }
    eprintln!("{} puts acknowledged, {refused} refused or unanswered, {} bad", acked.len(), bad.len());
    assert!(bad.is_empty(), "acknowledged blocks lost or wrong: {bad:#?}");
}
