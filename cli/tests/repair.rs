//! Repair over real processes (issue 21, must-shows 1, 2, 3 and 5): three masters, four zones of two
//! volume servers with two disks each, one frontend. Blocks are put until several volumes
//! are coded; then, while puts keep streaming in, one volume server is killed with
//! SIGKILL. Puts must keep being acknowledged; once the master marks the server down
//! (`down_after_ms`), every extent it held is rebuilt elsewhere: `cellar admin status
//! --json` must come back to `redundancy.below_full == 0` with no repair task left, no
//! volume may place an extent on the dead server any more, and every acknowledged block
//! must read back byte-exact. The master leader is killed while that repair is in flight
//! (held back by a low repair bandwidth); the new leader finishes it. Then a disk directory
//! of a live server is deleted: the disk is reported failed and what it held is rebuilt on
//! other disks, the same way. A second cell has bytes flipped inside a fragment and inside
//! a replica record: reads still return the right bytes, the first read reports the bad
//! extent, and it is rebuilt; a parity fragment no read touches is corrupted and the
//! scrubber finds it; the storage watcher reads every put back and finds nothing lost; then a node of it is drained with `cellar admin drain` and
//! ends empty. A cell of three zones loses one: the fragments it held have no disk left
//! within the placement rules, and status shows them waiting until the zone returns.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, agent, block, get, metrics_url, put, scrape, stat, value};

const BLOCK_BYTES: usize = 64 << 10;
/// 4 MiB volumes: 64 blocks fill one.
const PUTS_BEFORE_KILL: u64 = 200;
const PUTS_AFTER_KILL_MIN: usize = 40;
/// Small blocks and volumes, fast failure detection, and a repair bandwidth low enough
/// (8 MB/s) that rebuilding a server's share takes seconds.
const REPAIR_CONFIG: &str = "block_size_max_bytes = 1048576\nnode_silent_after_ms = 1500\ndown_after_ms = 4000\n\
                             planner_interval_ms = 200\nrepair_bytes_per_sec = 8000000\n";

use common::admin_status as status;

/// Four zones of two volume servers with two disks each and `masters` masters, with
/// `master_config`; with `fast_scrub` the scrubbers run at 200 MB/s and start a pass every
/// second.
fn repair_cell(masters: usize, volume_mib: u64, master_config: &str, fast_scrub: bool) -> CellSpec {
    CellSpec {
        masters,
        zones: 4,
        servers_per_zone: 2,
        disks_per_server: 2,
        volume_mib,
        master_config: master_config.into(),
        volume_args: if fast_scrub {
            ["--scrub-bytes-per-sec", "200000000", "--scrub-period-secs", "1"].map(String::from).to_vec()
        } else {
            Vec::new()
        },
        // One open volume at a time: sequential puts fill volumes in order, so "N blocks
        // fill K volumes" holds. With several writers, a put that arrives before the last
        // one's slot is idle again goes to another open volume, and the blocks spread over
        // volumes none of which fills (seen: 300 blocks of 64 KiB over one coded and two
        // open 8 MiB volumes, waiting for two coded).
        frontend_args: ["--writers", "1"].map(String::from).to_vec(),
    }
}

/// Puts block `i` for each `i` of `seeds`; every put must be acknowledged.
fn put_all(base: &str, seeds: std::ops::Range<u64>, when: &str) -> Vec<(u64, String)> {
    let a = agent(Duration::from_secs(30));
    seeds
        .map(|i| match put(&a, base, &block(i, BLOCK_BYTES)) {
            PutAnswer::Stored(hash) => (i, hash),
            other => panic!("put {i} {when}: {other:?}"),
        })
        .collect()
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

/// Waits until a volume is coded and no encode or other task is left.
fn wait_coded(masters: &str) -> serde_json::Value {
    wait_status(masters, "a coded volume, no encode pending", |s| {
        s["volumes"]["coded"].as_u64().unwrap_or(0) >= 1
            && s["volumes"]["sealed"].as_u64() == Some(0)
            && s["tasks"]["open"].as_u64() == Some(0)
    })
}

/// The ids of zone `zone`'s nodes in a status.
fn zone_nodes(s: &serde_json::Value, zone: &str) -> Vec<u64> {
    s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["zone"] == zone)
        .map(|n| n["id"].as_u64().expect("id"))
        .collect()
}

/// Whether every node of zone `zone` is in `state` ("up", "down") in a status.
fn zone_is(s: &serde_json::Value, zone: &str, state: &str) -> bool {
    s["nodes"]
        .as_array()
        .is_some_and(|nodes| nodes.iter().filter(|n| n["zone"] == zone).all(|n| n["state"] == state))
}

#[test]
fn a_killed_volume_server_is_marked_down_and_its_extents_rebuilt_elsewhere() {
    let spec = repair_cell(3, 4, REPAIR_CONFIG, false);
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));

    let mut acked = put_all(&cell.base, 0..PUTS_BEFORE_KILL, "before the kill");
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

    // Must-show 5: the leader dies while the repair is in flight.
    let s = wait_status(&masters, "a repair in flight", |s| {
        s["repair"]["tasks_open"].as_u64().unwrap_or(0) > 0
            && s["redundancy"]["below_full"].as_u64().unwrap_or(0) > 0
    });
    let leader = s["leader"]["id"].as_u64().expect("a leader");
    let below_at_kill = s["redundancy"]["below_full"].as_u64().unwrap_or(0);
    // Status names what waits: the volumes below full and the repairs under way.
    let listed = s["redundancy"]["below_full_volumes"].as_array().expect("below_full_volumes");
    assert!(!listed.is_empty() && listed.len() as u64 <= below_at_kill.min(32), "{s:#}");
    assert!(listed.iter().all(|v| v["healthy"].as_u64() < v["full"].as_u64()), "{s:#}");
    let open = s["tasks"]["open_list"].as_array().expect("open_list");
    assert!(
        open.iter().any(|t| t["kind"] == "reconstruct" || t["kind"] == "copy"),
        "no repair among the open tasks listed: {s:#}"
    );
    let proc = cell.master_procs[usize::try_from(leader - 1).expect("id")];
    cell.procs[proc].kill().expect("SIGKILL the leader");
    cell.procs[proc].wait().expect("reap the leader");
    eprintln!("killed master {leader} with {below_at_kill} volumes below full");
    wait_status(&masters, "a new leader", |s| s["leader"]["id"].as_u64().is_some_and(|l| l != leader));

    let s = wait_status(&masters, "full redundancy", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["repair"]["tasks_failed"].as_u64(), Some(0), "{s:#}");
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "no task was given up: {s:#}");
    assert!(s["volumes"]["coded"].as_u64().unwrap_or(0) >= 3, "{s:#}");

    // Every acknowledged block reads back byte-exact, and no volume places an extent on
    // the dead server.
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(victim));
    // The dead server holds nothing any more: an operator removes it for good (its queued
    // deletes of stale extents go with it).
    admin(&["remove", "--master", &masters, "--node", &victim.to_string()]);
    let s = status(&masters).expect("status");
    assert!(
        s["nodes"].as_array().expect("nodes").iter().all(|n| n["id"].as_u64() != Some(victim)),
        "node {victim} removed: {s:#}"
    );

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
    acked.extend(put_all(&cell.base, 100_000..100_020, "after the disk failed"));
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

#[test]
fn flipped_bytes_in_a_fragment_and_a_replica_are_read_around_reported_and_rebuilt() {
    let spec = CellSpec {
        // The storage watcher reads every stored put back a second later.
        frontend_args: ["--writers", "1", "--watch-sample-one-in", "1", "--watch-delay-secs", "1"]
            .map(String::from)
            .to_vec(),
        ..repair_cell(1, 4, REPAIR_CONFIG, true)
    };
    let cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));
    let acked = put_all(&cell.base, 0..150, "before the fault");
    wait_status(&masters, "a coded volume, no encode pending", |s| {
        s["volumes"]["coded"].as_u64().unwrap_or(0) >= 1
            && s["volumes"]["sealed"].as_u64() == Some(0)
            && s["tasks"]["open"].as_u64() == Some(0)
    });
    let stats: Vec<(u64, String, serde_json::Value)> =
        acked.iter().map(|(i, h)| (*i, h.clone(), stat(&a, &cell.base, h))).collect();

    // A block at offset 0 of a coded volume lies in fragment 0: flip a byte in every 4 KiB
    // of that fragment's file.
    let (coded_i, coded_hash, coded) = stats
        .iter()
        .find(|(_, _, s)| s["state"] == "coded" && s["offset"].as_u64() == Some(0))
        .cloned()
        .expect("the first block of a coded volume");
    let fragment_disk = coded["fragments"][0]["disk"].as_u64().expect("disk");
    let volume = coded["volume"].as_u64().expect("volume");
    let fragment_file = std::path::Path::new(&disk_path(&masters, fragment_disk))
        .join("extents")
        .join(format!("v{volume:016x}.f00"));
    let mut bytes = std::fs::read(&fragment_file).expect("read the fragment file");
    for at in (4096..bytes.len()).step_by(4096) {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&fragment_file, &bytes).expect("write the fragment file back");

    // A block of the open volume: flip one byte of its payload on the first replica (the
    // one reads ask first).
    let (open_i, open_hash, open) = stats
        .iter()
        .rev()
        .find(|(_, _, s)| s["state"] == "open")
        .cloned()
        .expect("a block of an open volume");
    let replica_disk = open["replicas"][0]["disk"].as_u64().expect("disk");
    let open_volume = open["volume"].as_u64().expect("volume");
    let replica_file = std::path::Path::new(&disk_path(&masters, replica_disk))
        .join("extents")
        .join(format!("v{open_volume:016x}.r"));
    let mut bytes = std::fs::read(&replica_file).expect("read the replica file");
    let at = 4096 + usize::try_from(open["offset"].as_u64().expect("offset")).expect("offset") + 64 + 1000;
    bytes[at] ^= 0xff;
    std::fs::write(&replica_file, &bytes).expect("write the replica file back");

    // Reads return the right bytes (degraded, or from another replica) and report.
    for (i, hash) in [(coded_i, &coded_hash), (open_i, &open_hash)] {
        let got = get(&a, &cell.base, hash).unwrap_or_else(|e| panic!("get block {i}: {e}"));
        assert!(got == block(i, BLOCK_BYTES), "block {i} came back different");
    }
    // Rebuilt: fragment 0 moved off the corrupt disk; the open volume sealed and coded.
    let deadline = Instant::now() + WAIT;
    loop {
        let c = stat(&a, &cell.base, &coded_hash);
        let o = stat(&a, &cell.base, &open_hash);
        if c["fragments"][0]["disk"].as_u64() != Some(fragment_disk) && o["state"] == "coded" {
            break;
        }
        assert!(Instant::now() < deadline, "not rebuilt in time:\n{c}\n{o}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = wait_status(&masters, "full redundancy", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "{s:#}");
    // /metrics carries the same.
    let metrics = scrape(&metrics_url(&cell.path("master-1.log")));
    assert_eq!(value(&metrics, "cellar_master_volumes_below_full "), 0.0);
    assert_eq!(value(&metrics, "cellar_master_repair_tasks_open "), 0.0);
    assert_eq!(value(&metrics, "cellar_master_nodes_down "), 0.0);
    check_all(&cell, &acked, |_| true);

    // The scrubber: bytes flipped in a parity fragment, which no read touches while the
    // data fragments are whole, are found by the scrubber of its server, reported and
    // rebuilt.
    let c = stat(&a, &cell.base, &coded_hash);
    let parity = &c["fragments"][8];
    let (parity_node, parity_disk) =
        (parity["node"].as_u64().expect("node"), parity["disk"].as_u64().expect("disk"));
    let volume = c["volume"].as_u64().expect("volume");
    let parity_file = std::path::Path::new(&disk_path(&masters, parity_disk))
        .join("extents")
        .join(format!("v{volume:016x}.f08"));
    let mut bytes = std::fs::read(&parity_file).expect("read the parity fragment");
    for at in (4096..bytes.len()).step_by(65_536) {
        bytes[at] ^= 0xff;
    }
    std::fs::write(&parity_file, &bytes).expect("write the parity fragment back");
    let deadline = Instant::now() + WAIT;
    while stat(&a, &cell.base, &coded_hash)["fragments"][8]["disk"].as_u64() == Some(parity_disk) {
        assert!(Instant::now() < deadline, "the scrubber's finding was not rebuilt in time");
        std::thread::sleep(Duration::from_millis(200));
    }
    let scrubbed = scrape(&metrics_url(&cell.volume(parity_node).log));
    assert!(value(&scrubbed, "cellar_volume_scrub_total{what=\"findings\"} ") >= 1.0, "{scrubbed}");
    assert!(value(&scrubbed, "cellar_volume_scrub_total{what=\"passes\"} ") >= 1.0, "{scrubbed}");
    wait_status(&masters, "full redundancy after the scrub finding", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    check_all(&cell, &acked, |_| true);
    // The storage watcher read the stored puts back (corrupt extents were read around)
    // and found nothing missing.
    let fe = scrape(&format!("{}/metrics", cell.base));
    assert!(value(&fe, "cellar_frontend_watcher_total{what=\"intact\"} ") >= 100.0, "{fe}");
    assert_eq!(value(&fe, "cellar_frontend_watcher_total{what=\"findings\"} "), 0.0, "{fe}");

    // Drain: an operator empties a node on purpose; everything it holds is copied off,
    // its disks end empty, every block still reads; undrain lifts it.
    let node = stat(&a, &cell.base, &coded_hash)["fragments"][1]["node"].as_u64().expect("node");
    admin(&["drain", "--master", &masters, "--node", &node.to_string()]);
    let s = wait_status(&masters, "the node drained", |s| {
        let empty = s["disks"].as_array().is_some_and(|disks| {
            disks
                .iter()
                .filter(|d| d["node_id"].as_u64() == Some(node))
                .all(|d| d["used_bytes"].as_u64() == Some(0))
        });
        s["drain"]["extents_draining"].as_u64() == Some(0)
            && s["repair"]["tasks_open"].as_u64() == Some(0)
            && s["tasks"]["open"].as_u64() == Some(0)
            && empty
    });
    assert_eq!(s["drain"]["nodes"], serde_json::json!([node]), "{s:#}");
    assert_eq!(s["redundancy"]["below_full"].as_u64(), Some(0), "{s:#}");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(node));
    admin(&["undrain", "--master", &masters, "--node", &node.to_string()]);
    let s = status(&masters).expect("status");
    assert_eq!(s["drain"]["nodes"], serde_json::json!([]), "{s:#}");

    // The emptied node can be removed, once drained again: an up node that is not drained
    // is refused.
    let refused = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "remove", "--master", &masters, "--node", &node.to_string()])
        .output()
        .expect("run cellar admin remove");
    assert!(!refused.status.success(), "an up, undrained node is not removed");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not drained"), "{refused:?}");
    admin(&["drain", "--master", &masters, "--node", &node.to_string()]);
    admin(&["remove", "--master", &masters, "--node", &node.to_string()]);
    let s = status(&masters).expect("status");
    let ids: Vec<u64> =
        s["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["id"].as_u64()).collect();
    assert!(!ids.contains(&node), "node {node} removed: {ids:?}");
    assert!(
        s["scrub"].as_array().expect("scrub").iter().all(|p| p["node_id"].as_u64() != Some(node)),
        "its scrub progress is forgotten: {s:#}"
    );
    assert_eq!(s["drain"]["nodes"], serde_json::json!([]), "its drain record went with it: {s:#}");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(node));
}

/// Runs `cellar admin ARGS`, which must succeed.
fn admin(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .arg("admin")
        .args(args)
        .output()
        .expect("run cellar admin");
    assert!(out.status.success(), "cellar admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_lost_zone_is_read_degraded_rebuilt_and_cleaned_up_when_it_returns() {
    let spec = repair_cell(1, 4, REPAIR_CONFIG, false);
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let mut acked = put_all(&cell.base, 0..150, "before the fault");
    let s = wait_coded(&masters);
    // Zone z1: both its servers, and their disks.
    let zone = zone_nodes(&s, "z1");
    assert_eq!(zone.len(), 2);
    let zone_disks: Vec<u64> = s["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter(|d| d["node_id"].as_u64().is_some_and(|n| zone.contains(&n)))
        .map(|d| d["id"].as_u64().expect("id"))
        .collect();
    for node in &zone {
        cell.kill_volume(*node);
    }

    // Every block still reads (degraded where the zone held fragments), and puts go on
    // in the three zones left.
    check_all(&cell, &acked, |_| true);
    acked.extend(put_all(&cell.base, 1000..1040, "with a zone down"));
    // Once the zone is down, its extents are rebuilt in the other zones.
    let s = wait_status(&masters, "the zone marked down, the cell at full redundancy", |s| {
        let down = zone_is(s, "z1", "down");
        down && s["redundancy"]["below_full"].as_u64() == Some(0)
            && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["zones"]["z1"]["nodes_down"].as_u64(), Some(2), "health by zone: {s:#}");
    assert_eq!(s["zones"]["z2"]["nodes_up"].as_u64(), Some(2), "health by zone: {s:#}");
    let in_zone = |e: &serde_json::Value| e["node"].as_u64().is_none_or(|n| !zone.contains(&n));
    check_all(&cell, &acked, in_zone);

    // The zone returns: its servers come back up, the extents they held (every one of
    // them replaced) go to their trash, and nothing else changes.
    for node in &zone {
        cell.restart_volume(*node);
    }
    let s = wait_status(&masters, "the zone back, its stale extents in the trash", |s| {
        let up = zone_is(s, "z1", "up");
        let cleaned = s["disks"].as_array().is_some_and(|disks| {
            disks
                .iter()
                .filter(|d| d["id"].as_u64().is_some_and(|id| zone_disks.contains(&id)))
                .all(|d| d["used_bytes"].as_u64() == Some(0))
        });
        up && cleaned && s["tasks"]["open"].as_u64() == Some(0)
    });
    let trashed: u64 = s["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter(|d| d["id"].as_u64().is_some_and(|id| zone_disks.contains(&id)))
        .map(|d| d["trash_extents"].as_u64().unwrap_or(0))
        .sum();
    assert!(trashed > 0, "the returning zone's extents went to its trash: {s:#}");
    let metrics = scrape(&metrics_url(&cell.path("master-1.log")));
    assert_eq!(value(&metrics, "cellar_master_nodes_down "), 0.0, "the zone is back up");
    assert_eq!(s["redundancy"]["below_full"].as_u64(), Some(0), "{s:#}");
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "{s:#}");
    check_all(&cell, &acked, in_zone);
}

/// A zone lost from a cell of three: the fragments it held have nowhere to go (rs-6-3
/// puts at most three in a zone, and each of the two zones left holds three already), so
/// their repair waits. `cellar admin status` (text and `--json`) and the leader's metrics
/// count the extents waiting for a disk; once the zone returns, none waits, the cell is
/// whole again and every block reads.
#[test]
fn extents_with_no_disk_left_in_the_rules_wait_visibly_until_their_zone_returns() {
    let mut spec = repair_cell(1, 4, REPAIR_CONFIG, false);
    spec.zones = 3;
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let acked = put_all(&cell.base, 0..80, "before the fault");
    let s = wait_coded(&masters);
    assert_eq!(s["repair"]["extents_without_a_disk"].as_u64(), Some(0), "{s:#}");
    let zone = zone_nodes(&s, "z1");
    assert_eq!(zone.len(), 2);
    for node in &zone {
        cell.kill_volume(*node);
    }
    let s = wait_status(&masters, "the zone down, its fragments waiting for a disk", |s| {
        let down = zone_is(s, "z1", "down");
        down && s["repair"]["extents_without_a_disk"].as_u64().unwrap_or(0) >= 3
    });
    assert!(s["redundancy"]["below_full"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    let metrics = scrape(&metrics_url(&cell.path("master-1.log")));
    assert!(value(&metrics, "cellar_master_repair_extents_without_a_disk ") >= 3.0);
    let text = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "status", "--master", &masters])
        .output()
        .expect("run cellar admin status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("extents wait for a disk"), "{text}");

    for node in &zone {
        cell.restart_volume(*node);
    }
    let s = wait_status(&masters, "the zone back, no extent waiting, the cell whole", |s| {
        let up = zone_is(s, "z1", "up");
        up && s["repair"]["extents_without_a_disk"].as_u64() == Some(0)
            && s["redundancy"]["below_full"].as_u64() == Some(0)
            && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "{s:#}");
    let metrics = scrape(&metrics_url(&cell.path("master-1.log")));
    assert_eq!(value(&metrics, "cellar_master_repair_extents_without_a_disk "), 0.0);
    check_all(&cell, &acked, |_| true);
}

/// A volume server restarted with one disk that cannot be opened (its catalog unreadable,
/// as a dead device's would be) starts with its other disk; the master counts the disk it
/// did not bring failed, every extent it held is rebuilt elsewhere, and every block reads.
/// Before, the server refused to start (its healthy disk offline too), and a server
/// started without the disk left it "ok" in the master: nothing it held was repaired.
#[test]
fn a_disk_that_cannot_be_opened_is_left_out_counted_failed_and_rebuilt() {
    let spec = repair_cell(1, 4, REPAIR_CONFIG, false);
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let acked = put_all(&cell.base, 0..150, "before the fault");
    let s = wait_coded(&masters);
    let victim = s["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .find(|d| d["used_bytes"].as_u64().unwrap_or(0) > 0)
        .expect("a disk holding extents")
        .clone();
    let (disk_id, node) = (victim["id"].as_u64().expect("id"), victim["node_id"].as_u64().expect("node"));
    let path = std::path::PathBuf::from(victim["path"].as_str().expect("path"));
    cell.kill_volume(node);
    std::fs::write(path.join("catalog").join("CURRENT"), b"not a manifest name")
        .expect("spoil the disk's catalog");
    cell.restart_volume(node);
    let s = wait_status(&masters, "the disk left out failed, its extents rebuilt elsewhere", |s| {
        let failed = s["disks"].as_array().is_some_and(|disks| {
            disks.iter().any(|d| d["id"].as_u64() == Some(disk_id) && d["health"] == "failed")
        });
        let node_up = s["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|n| n["id"].as_u64() == Some(node) && n["state"] == "up"));
        failed
            && node_up
            && s["redundancy"]["below_full"].as_u64() == Some(0)
            && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "{s:#}");
    let log = std::fs::read_to_string(&cell.volume(node).log).expect("the restarted server's log");
    assert!(log.contains("disk cannot be opened"), "{log}");
    check_all(&cell, &acked, |e| e["disk"].as_u64() != Some(disk_id));
}

/// The path of a disk by id, from the status.
/// `cellar disk format` puts a disk in a directory on purpose (what a server no longer
/// does by itself in a directory that is not a mount point beside mounted disks), and
/// leaves a directory that already holds one as it is.
#[test]
fn disk_format_formats_a_new_directory_and_leaves_a_disk_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = dir.path().join("new-disk");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cellar")).args(args).output().expect("run cellar");
        assert!(out.status.success(), "cellar {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = disk.to_str().expect("utf-8 path");
    let before =
        Command::new(env!("CARGO_BIN_EXE_cellar")).args(["disk", "stat", path]).output().expect("run");
    assert!(!before.status.success(), "no disk there yet");
    let first = run(&["disk", "format", path]);
    assert!(first.starts_with("formatted "), "{first}");
    let uuid = first.split_whitespace().last().expect("uuid").to_string();
    let stat = run(&["disk", "stat", path]);
    assert!(stat.contains(&uuid), "{stat}");
    let again = run(&["disk", "format", path]);
    assert!(again.contains(&format!("already holds disk {uuid}")), "{again}");
}

fn disk_path(masters: &str, disk: u64) -> String {
    let s = status(masters).expect("status");
    s["disks"]
        .as_array()
        .and_then(|disks| disks.iter().find(|d| d["id"].as_u64() == Some(disk)))
        .and_then(|d| d["path"].as_str())
        .expect("the disk's path")
        .to_string()
}

/// The file of fragment `index` of `volume` on disk `disk`.
fn fragment_file(masters: &str, disk: u64, volume: u64, index: usize) -> std::path::PathBuf {
    std::path::Path::new(&disk_path(masters, disk))
        .join("extents")
        .join(format!("v{volume:016x}.f{index:02}"))
}

/// Flips a byte in every 4 KiB of a file past its header: every chunk's CRC fails.
fn corrupt_file(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for at in (4096..bytes.len()).step_by(4096) {
        bytes[at] ^= 0xff;
    }
    std::fs::write(path, &bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Must-show 6: with exactly k fragments left (m corrupted at once, in three zones) a
/// volume is rebuilt; with k - 1 left another volume's blocks whose bytes were on its lost
/// data fragments are never served (503, not wrong bytes), `cellar admin status --json`
/// lists exactly those blocks by hash, and the volume's other blocks still read.
#[test]
fn exactly_k_fragments_rebuild_a_volume_and_k_minus_1_report_its_lost_blocks_by_hash() {
    let spec = repair_cell(1, 4, REPAIR_CONFIG, true);
    let cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));
    let acked = put_all(&cell.base, 0..150, "before the fault");
    let s = wait_status(&masters, "two coded volumes, no encode pending", |s| {
        s["volumes"]["coded"].as_u64().unwrap_or(0) >= 2
            && s["volumes"]["sealed"].as_u64() == Some(0)
            && s["tasks"]["open"].as_u64() == Some(0)
    });
    let zone_of: std::collections::BTreeMap<u64, String> = s["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_u64().expect("id"), n["zone"].as_str().expect("zone").to_string()))
        .collect();
    let stats: Vec<(u64, String, serde_json::Value)> =
        acked.iter().map(|(i, h)| (*i, h.clone(), stat(&a, &cell.base, h))).collect();
    let mut coded: Vec<u64> = stats
        .iter()
        .filter(|(_, _, s)| s["state"] == "coded")
        .filter_map(|(_, _, s)| s["volume"].as_u64())
        .collect();
    coded.dedup();
    let (whole, broken) = (coded[0], coded[1]);
    let fragments_of = |volume: u64| -> Vec<(u64, u64)> {
        let (_, _, st) =
            stats.iter().find(|(_, _, s)| s["volume"].as_u64() == Some(volume)).expect("a block");
        st["fragments"]
            .as_array()
            .expect("fragments")
            .iter()
            .map(|e| (e["node"].as_u64().expect("node"), e["disk"].as_u64().expect("disk")))
            .collect()
    };

    // Volume `whole`: m = 3 fragments in three different zones, data fragment 0 among them.
    let frags = fragments_of(whole);
    let mut lost: Vec<usize> = vec![0];
    for (i, (node, _)) in frags.iter().enumerate() {
        if lost.len() < 3 && !lost.iter().any(|&j| zone_of[&frags[j].0] == zone_of[node]) {
            lost.push(i);
        }
    }
    assert_eq!(lost.len(), 3, "three zones hold fragments of volume {whole}: {frags:?}");
    // Volume `broken`: four fragments, data fragments 0 and 1 and two parity ones.
    let broken_frags = fragments_of(broken);
    let broken_lost = [0usize, 1, 6, 7];
    for &i in &lost {
        corrupt_file(&fragment_file(&masters, frags[i].1, whole, i));
    }
    for &i in &broken_lost {
        corrupt_file(&fragment_file(&masters, broken_frags[i].1, broken, i));
    }

    // The blocks of `broken` whose record overlaps data fragment 0 or 1 are lost.
    let volume_size = stats
        .iter()
        .find(|(_, _, s)| s["volume"].as_u64() == Some(broken))
        .and_then(|(_, _, s)| s["volume_size"].as_u64())
        .expect("volume size");
    let fragment_len = volume_size.div_ceil(6).div_ceil(64 << 10) * (64 << 10);
    let expect_lost: std::collections::BTreeSet<String> = stats
        .iter()
        .filter(|(_, _, s)| s["volume"].as_u64() == Some(broken))
        .filter(|(_, _, s)| {
            let offset = s["offset"].as_u64().expect("offset");
            let end = offset + 64 + s["size"].as_u64().expect("size");
            offset < 2 * fragment_len && end > 0
        })
        .map(|(_, h, _)| h.clone())
        .collect();
    assert!(!expect_lost.is_empty());

    // The scrubbers find every corrupt fragment; `whole` is rebuilt from its six
    // survivors, `broken` is reported unreadable with exactly those blocks.
    let s = wait_status(&masters, "volume rebuilt, the other listed lost", |s| {
        let rebuilt = lost.iter().all(|&i| {
            let now = stat(
                &a,
                &cell.base,
                &stats.iter().find(|(_, _, st)| st["volume"].as_u64() == Some(whole)).expect("block").1,
            );
            now["fragments"][i]["disk"].as_u64() != Some(frags[i].1)
        });
        rebuilt
            && s["lost"]["volumes"] == serde_json::json!([broken])
            && s["lost"]["blocks"].as_u64() == Some(expect_lost.len() as u64)
            && s["redundancy"]["below_full"].as_u64() == Some(1)
    });
    let listed: std::collections::BTreeSet<String> = s["lost"]["hashes"]
        .as_array()
        .expect("hashes")
        .iter()
        .map(|h| h.as_str().expect("hex").to_string())
        .collect();
    assert_eq!(listed, expect_lost, "status lists exactly the blocks on the lost data fragments");
    assert_eq!(s["redundancy"]["can_lose"]["-1"].as_u64(), Some(1), "{s:#}");
    // Every block of `whole` and every block of `broken` not listed reads byte-exact; the
    // listed ones are refused, never served wrong.
    for (i, hash, st) in &stats {
        let got = get(&a, &cell.base, hash);
        if expect_lost.contains(hash) {
            let e = got.expect_err("a lost block is not served");
            assert!(e.contains("503"), "block {i}: {e}");
        } else {
            let bytes = got.unwrap_or_else(|e| panic!("get block {i} ({}): {e}", st["volume"]));
            assert!(bytes == block(*i, BLOCK_BYTES), "block {i} came back different");
        }
    }
    let metrics = scrape(&metrics_url(&cell.path("master-1.log")));
    assert_eq!(value(&metrics, "cellar_master_volumes_unreadable "), 1.0, "{metrics}");
    let text = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["admin", "status", "--master", &masters])
        .output()
        .expect("run cellar admin status");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("LOST        {} blocks", expect_lost.len())), "{text}");
}

/// Must-show 7: the volume server running a Reconstruct (paced by the cell's repair
/// bandwidth, so it takes seconds) is killed once its fragment file exists and before it
/// is finished; the repair is planned again onto another disk and completes, and the
/// half-written fragment is never placed. Then the metadata scanner: a volume server is
/// stopped, one of its fragments is deleted from its disk with the blockstore's own API
/// (file and catalog entry, as a disk restored from an old backup or a bug would leave
/// it), and it is restarted before `down_after`; the volume server sees nothing wrong, the
/// leader's scanner finds the extent missing, and it is rebuilt. The
/// status carries the measured repair rate, scrub progress and the scanner's counters.
#[test]
fn a_reconstruct_whose_executor_dies_half_way_is_replanned_and_a_missing_extent_is_found_by_the_scanner() {
    let config = "block_size_max_bytes = 1048576\nnode_silent_after_ms = 1500\ndown_after_ms = 8000\n\
                        planner_interval_ms = 200\nrepair_bytes_per_sec = 400000\n\
                        metadata_scan_interval_ms = 1000\nmetadata_scan_extents_per_sec = 10000\n";
    let spec = repair_cell(1, 8, config, true);
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));
    let acked = put_all(&cell.base, 0..300, "before the fault");
    wait_status(&masters, "two coded volumes, no encode pending", |s| {
        s["volumes"]["coded"].as_u64().unwrap_or(0) >= 2
            && s["volumes"]["sealed"].as_u64() == Some(0)
            && s["tasks"]["open"].as_u64() == Some(0)
    });
    let (_, hash, st) = acked
        .iter()
        .map(|(i, h)| (*i, h.clone(), stat(&a, &cell.base, h)))
        .find(|(_, _, s)| s["state"] == "coded")
        .expect("a coded block");
    let volume = st["volume"].as_u64().expect("volume");
    let bad_disk = st["fragments"][0]["disk"].as_u64().expect("disk");
    corrupt_file(&fragment_file(&masters, bad_disk, volume, 0));

    // The scrubber reports it; a reconstruct of fragment 0 starts on some node, whose
    // target file appears; that node is killed before the fragment is whole.
    let started = format!("volume={volume}");
    let deadline = Instant::now() + WAIT;
    let executor = loop {
        let found = cell.volumes.iter().find(|v| {
            std::fs::read_to_string(&v.log).is_ok_and(|log| {
                log.lines()
                    .any(|l| l.contains("task started") && l.contains("reconstruct") && l.contains(&started))
            })
        });
        if let Some(v) = found {
            break v.node_id;
        }
        assert!(Instant::now() < deadline, "no reconstruct of volume {volume} started");
        std::thread::sleep(Duration::from_millis(50));
    };
    let executor_disks: Vec<String> = status(&masters).expect("status")["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .filter(|d| d["node_id"].as_u64() == Some(executor))
        .map(|d| d["path"].as_str().expect("path").to_string())
        .collect();
    let partial = executor_disks
        .iter()
        .map(|p| std::path::Path::new(p).join("extents").join(format!("v{volume:016x}.f00")))
        .collect::<Vec<_>>();
    let deadline = Instant::now() + WAIT;
    while !partial.iter().any(|p| p.exists()) {
        assert!(Instant::now() < deadline, "the reconstruct's target file never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let placed = stat(&a, &cell.base, &hash)["fragments"][0]["disk"].as_u64();
    assert_eq!(placed, Some(bad_disk), "killed before the reconstruct finished (paced at 400 kB/s)");
    cell.kill_volume(executor);

    let s = wait_status(&masters, "full redundancy after the executor died", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["repair"]["tasks_failed"].as_u64(), Some(0), "{s:#}");
    let now = stat(&a, &cell.base, &hash);
    let node = now["fragments"][0]["node"].as_u64();
    assert!(node != Some(executor) && now["fragments"][0]["disk"].as_u64() != Some(bad_disk), "{now}");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(executor));
    // The repair rate was measured and the status shows it.
    assert!(s["repair"]["rate_bytes_per_sec"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert!(s["repair"]["bytes_done"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert_eq!(s["repair"]["down_after_ms"].as_u64(), Some(8000));
    assert!(!s["scrub"].as_array().expect("scrub").is_empty(), "scrub progress per node: {s:#}");
    // The simulator takes the cell's measured repair rate.
    let sim = Command::new(env!("CARGO_BIN_EXE_cellar"))
        .args(["sim", "--from-cluster", &masters, "--years", "1", "--runs", "20", "--quiet", "--json"])
        .output()
        .expect("run cellar sim");
    let (out, err) = (String::from_utf8_lossy(&sim.stdout), String::from_utf8_lossy(&sim.stderr));
    assert!(sim.status.success(), "cellar sim --from-cluster: {err}");
    assert!(err.contains("measured repair rate"), "{err}");
    assert!(out.contains("measured on the cell"), "the report names the measured rate: {out}");

    // Metadata scanner: a live server (not the executor) loses a fragment the volume
    // record still places on it, without knowing.
    let st = stat(&a, &cell.base, &hash);
    let (victim, victim_disk) = (1..9)
        .map(|i| {
            (
                st["fragments"][i]["node"].as_u64().expect("node"),
                st["fragments"][i]["disk"].as_u64().expect("disk"),
                i,
            )
        })
        .find(|(n, _, _)| *n != executor)
        .map(|(n, d, i)| ((n, i), d))
        .expect("a fragment on a live node");
    let (victim, index) = victim;
    let findings_before =
        status(&masters).expect("status")["metadata_scan"]["findings"].as_u64().unwrap_or(0);
    let path = disk_path(&masters, victim_disk);
    cell.kill_volume(victim);
    {
        let disk = cellar_blockstore::Disk::open(&path, cellar_blockstore::DiskOptions::default())
            .expect("open the stopped server's disk");
        disk.delete(cellar_blockstore::ExtentId::fragment(volume, index as u8)).expect("delete the fragment");
    }
    cell.restart_volume(victim);
    assert!(!fragment_file(&masters, victim_disk, volume, index).exists(), "deleted");
    let deadline = Instant::now() + WAIT;
    while stat(&a, &cell.base, &hash)["fragments"][index]["disk"].as_u64() == Some(victim_disk) {
        assert!(Instant::now() < deadline, "the missing fragment was not rebuilt");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = wait_status(&masters, "full redundancy after the scanner's finding", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert!(s["metadata_scan"]["findings"].as_u64().unwrap_or(0) > findings_before, "{s:#}");
    assert!(s["metadata_scan"]["passes"].as_u64().unwrap_or(0) >= 1, "{s:#}");
    assert!(s["metadata_scan"]["index_entries_checked"].as_u64().unwrap_or(0) >= 300, "{s:#}");
    let restarted = std::fs::read_to_string(&cell.volume(victim).log).expect("log");
    assert!(!restarted.contains("missing or damaged"), "the server did not notice: {restarted}");
    let master_log = std::fs::read_to_string(cell.path("master-1.log")).expect("master log");
    assert!(!master_log.contains(&format!("mark_node_down({victim})")), "back before down_after");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(executor));

    // A disk that vanishes (its directory moved away under the running server) is failed
    // and what it held rebuilt elsewhere; when it comes back (moved back) it is up again,
    // the extents it held, all replaced meanwhile, go to its trash, and nothing is lost.
    let st = stat(&a, &cell.base, &hash);
    let gone_disk = (0..9)
        .map(|i| {
            (
                st["fragments"][i]["node"].as_u64().expect("node"),
                st["fragments"][i]["disk"].as_u64().expect("disk"),
            )
        })
        .find(|(n, _)| *n != executor)
        .map(|(_, d)| d)
        .expect("a fragment on a live node");
    let path = disk_path(&masters, gone_disk);
    let away = format!("{path}.away");
    std::fs::rename(&path, &away).expect("move the disk away");
    let disk_is = |s: &serde_json::Value, health: &str| {
        s["disks"].as_array().is_some_and(|disks| {
            disks.iter().any(|d| d["id"].as_u64() == Some(gone_disk) && d["health"] == health)
        })
    };
    wait_status(&masters, "the vanished disk failed", |s| disk_is(s, "failed"));
    wait_status(&masters, "full redundancy without the disk", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    check_all(&cell, &acked, |e| {
        e["disk"].as_u64() != Some(gone_disk) && e["node"].as_u64() != Some(executor)
    });
    std::fs::rename(&away, &path).expect("move the disk back");
    let s = wait_status(&masters, "the disk back, its stale extents in the trash", |s| {
        let emptied = s["disks"].as_array().is_some_and(|disks| {
            disks.iter().any(|d| {
                d["id"].as_u64() == Some(gone_disk)
                    && d["used_bytes"].as_u64() == Some(0)
                    && d["trash_extents"].as_u64().unwrap_or(0) > 0
            })
        });
        disk_is(s, "ok") && emptied && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    assert_eq!(s["redundancy"]["below_full"].as_u64(), Some(0), "{s:#}");
    assert_eq!(s["repair"]["tasks_failed"].as_u64(), Some(0), "{s:#}");
    check_all(&cell, &acked, |e| e["node"].as_u64() != Some(executor));
}

/// A volume server killed (SIGKILL) while it runs a repair task and started again at once
/// hands the task back with its first poll (`ClaimTasksAfterStart`): the task runs again
/// (an attempt counted, its error saying why) and the cell is back at full redundancy
/// within the test's wait, where the claim would otherwise have held the task for
/// `TASK_CLAIM_MS` (10 minutes). The repair bandwidth is low, so that a rebuild takes
/// seconds and is caught running; the server comes back long before `down_after_ms`, so
/// it is never marked down (which would replan its tasks another way).
#[test]
fn a_volume_server_restarted_while_it_runs_a_repair_hands_the_task_back() {
    const CONFIG: &str = "block_size_max_bytes = 1048576\nnode_silent_after_ms = 1500\ndown_after_ms = 120000\n\
                          planner_interval_ms = 200\nrepair_bytes_per_sec = 50000\n";
    let mut cell = Cell::start(&repair_cell(1, 4, CONFIG, false));
    let masters = cell.masters.join(",");
    let a = agent(Duration::from_secs(30));
    let mut acked = put_all(&cell.base, 0..150, "before the fault");
    wait_coded(&masters);

    // A disk of a server holding a fragment fails (its directory deleted): its extents
    // are rebuilt elsewhere, slowly.
    let st = acked
        .iter()
        .map(|(_, hash)| stat(&a, &cell.base, hash))
        .find(|s| s["state"] == "coded")
        .expect("a block in a coded volume");
    let disk_id = st["fragments"][0]["disk"].as_u64().expect("disk");
    std::fs::remove_dir_all(disk_path(&masters, disk_id)).expect("delete the disk directory");

    // A rebuild claimed by a server (it may be the failed disk's: started again, it leaves
    // the missing directory out or formats it anew), caught running: the server is
    // stopped (SIGSTOP) at once, and the task checked still claimed by it (so
    // neither done nor reported), else the server goes on and the next one is caught.
    let claimed_repair = |s: &serde_json::Value| -> Option<(u64, u64)> {
        s["tasks"]["open_list"].as_array()?.iter().find_map(|t| {
            ((t["kind"] == "reconstruct" || t["kind"] == "copy") && t["state"] == "claimed")
                .then(|| Some((t["task_id"].as_u64()?, t["node_id"].as_u64()?)))
                .flatten()
        })
    };
    let mut caught = None;
    for _ in 0..5 {
        let s = wait_status(&masters, "a repair claimed", |s| claimed_repair(s).is_some());
        let (task_id, node) = claimed_repair(&s).expect("a claimed repair");
        cell.freeze(node);
        let now = status(&masters).expect("status");
        let still = now["tasks"]["open_list"].as_array().is_some_and(|tasks| {
            tasks.iter().any(|t| {
                t["task_id"].as_u64() == Some(task_id)
                    && t["state"] == "claimed"
                    && t["node_id"].as_u64() == Some(node)
            })
        });
        if still {
            caught = Some((task_id, node));
            break;
        }
        cell.thaw(node);
    }
    let (task_id, node) = caught.expect("a repair caught while its server ran it");
    cell.kill_volume(node);
    cell.restart_volume(node);
    let restarted_at = Instant::now();

    // Handed back by the restarted server's first poll: one attempt failed, saying why
    // (a rebuild takes over ten seconds at this bandwidth: seen before it ends).
    let s = wait_status(&masters, "the repair handed back", |s| {
        s["tasks"]["open_list"].as_array().is_some_and(|tasks| {
            tasks.iter().any(|t| t["task_id"].as_u64() == Some(task_id) && t["attempts"].as_u64() >= Some(1))
        })
    });
    let t = s["tasks"]["open_list"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["task_id"].as_u64() == Some(task_id)))
        .expect("the task");
    assert!(t["detail"].as_str().is_some_and(|d| d.contains("restarted")), "{t:#}");
    // (Within WAIT, 3 minutes: the claim would have held it for 10.)
    let s = wait_status(&masters, "full redundancy", |s| {
        s["redundancy"]["below_full"].as_u64() == Some(0) && s["repair"]["tasks_open"].as_u64() == Some(0)
    });
    eprintln!("full redundancy {:?} after the restart of node {node}", restarted_at.elapsed());
    assert_eq!(s["tasks"]["failed"].as_u64(), Some(0), "no task was given up: {s:#}");
    assert!(
        s["nodes"].as_array().expect("nodes").iter().all(|n| n["state"] == "up"),
        "the restarted server was never marked down: {s:#}"
    );
    acked.extend(put_all(&cell.base, 1_000..1_010, "after the restart"));
    check_all(&cell, &acked, |e| e["disk"].as_u64() != Some(disk_id));
}
