//! A volume server that stops answering (SIGSTOP: its sockets stay open, nothing answers)
//! in a cell of separate processes: 3 masters, 3 zones x 2 volume servers x 2 disks, one
//! frontend. Puts must keep getting answers within the append deadline plus one retry,
//! gets must be hedged to other holders, and nothing acknowledged may be lost. A master
//! follower that stops answering must not stall commits, and must catch up once it runs.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, agent, block, get, metrics_url, put, scrape, stat, value};

const SMALL_BYTES: usize = 4 << 10;
/// Volume size in the put test: large enough that the volume the victim is chosen from
/// stays open for a few seconds under the test's load.
const VOLUME_MIB: u64 = 64;
const LARGE_BYTES: usize = 4 << 20;
/// Clients putting at once in the put test (4 KiB and 4 MiB blocks).
const CLIENTS: u64 = 16;
/// The frontend's append deadline in these tests (`--append-deadline-ms`).
const APPEND_DEADLINE: Duration = Duration::from_secs(2);
/// What a put may take at most: one attempt that runs into the append deadline, then one
/// retry on another volume. The slack covers the seal and the retry on a loaded 2-core
/// machine with ten processes; without deadlines a put on the frozen server never ends.
const PUT_ANSWER_MAX: Duration = Duration::from_secs(8);
/// The frontend's longest hedge delay in these tests (`--hedge-delay-max-ms`).
const HEDGE_DELAY_MAX: Duration = Duration::from_millis(200);
/// The frontend's read deadline in these tests: far above what a hedged get may take, so
/// a get that waited for the frozen holder fails the bound below.
const READ_DEADLINE: Duration = Duration::from_secs(10);
/// What a get may take at most with one holder frozen: the hedge delay (twice, when the
/// frozen server holds two fragments the reads need) plus one read, with slack for a loaded
/// machine. Far below [`READ_DEADLINE`].
const GET_ANSWER_MAX: Duration = Duration::from_millis(1500);

/// One put a client made: its seed and size, when it started, how long it took, and the
/// answer.
struct Done {
    seed: u64,
    len: usize,
    started: Instant,
    took: Duration,
    answer: PutAnswer,
}

fn frontend_metric(cell: &Cell, prefix: &str) -> f64 {
    value(&common::scrape(&format!("{}/metrics", cell.base)), prefix)
}

#[test]
fn a_frozen_volume_server_holds_no_put_past_the_deadline_and_loses_nothing() {
    let spec = CellSpec {
        volume_mib: VOLUME_MIB,
        master_config: "node_silent_after_ms = 3000\n".into(),
        frontend_args: vec![
            "--append-deadline-ms".into(),
            APPEND_DEADLINE.as_millis().to_string(),
            // One writer slot: the volume of the last acknowledged put is the one the
            // next batch is appended to, so the frozen server is certain to be asked.
            "--writers".into(),
            "1".into(),
        ],
        ..CellSpec::default()
    };
    let mut cell = Cell::start(&spec);
    let base = cell.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let last_acked = Arc::new(Mutex::new(String::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (base, stop, acked, last_acked) =
                (base.clone(), stop.clone(), acked.clone(), last_acked.clone());
            std::thread::spawn(move || {
                // Bounded well above PUT_ANSWER_MAX: a put that hangs shows up as NoAnswer.
                let http = agent(Duration::from_secs(60));
                let mut done = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let seed = client * 1_000_000 + i;
                    let len = if (client + i).is_multiple_of(4) { LARGE_BYTES } else { SMALL_BYTES };
                    i += 1;
                    let bytes = block(seed, len);
                    let started = Instant::now();
                    let answer = put(&http, &base, &bytes);
                    let took = started.elapsed();
                    if let PutAnswer::Stored(hash) = &answer {
                        acked.fetch_add(1, Ordering::Relaxed);
                        *last_acked.lock().unwrap_or_else(|p| p.into_inner()) = hash.clone();
                    }
                    done.push(Done { seed, len, started, took, answer });
                }
                done
            })
        })
        .collect();

    // Freeze a server holding a replica of a volume being written that has room for many
    // more batches, so that its writer appends to it again after the freeze (a volume about
    // to fill would be sealed, and new volumes may avoid the frozen server).
    let http = agent(Duration::from_secs(30));
    let deadline = Instant::now() + common::WAIT;
    let victim = loop {
        assert!(Instant::now() < deadline, "no open volume seen under load");
        std::thread::sleep(Duration::from_millis(100));
        if acked.load(Ordering::Relaxed) < 32 {
            continue;
        }
        let hash = last_acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let s = stat(&http, &base, &hash);
        let room = s["offset"].as_u64().is_some_and(|at| at < (VOLUME_MIB << 20) / 2);
        if s["state"] == "open"
            && room
            && let Some(node) = s["replicas"][0]["node"].as_u64()
        {
            break (node, s);
        }
    };
    let (victim, victim_stat) = victim;
    let acked_before = acked.load(Ordering::Relaxed);
    cell.freeze(victim);
    let frozen_at = Instant::now();
    // Keep the load on for long enough that every put caught by the freeze has met its
    // deadline and retried, and until the frontend has seen an append time out.
    // The next batch goes to the victim's volume: its append times out within the append
    // deadline; far more than that is a failure, not a slow machine.
    let deadline = Instant::now() + 10 * PUT_ANSWER_MAX;
    while frozen_at.elapsed() < 3 * PUT_ANSWER_MAX
        || frontend_metric(&cell, "cellar_frontend_append_timeouts_total ") < 1.0
    {
        if Instant::now() >= deadline {
            let now = stat(&http, &base, victim_stat["hash"].as_str().unwrap_or_default());
            let last = last_acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
            panic!(
                "no append timed out against frozen node {victim}: {} puts acknowledged since the \
                 freeze; the victim's block then {victim_stat} and now {now}; the last put now {}",
                acked.load(Ordering::Relaxed) - acked_before,
                stat(&http, &base, &last)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let acked_while_frozen = acked.load(Ordering::Relaxed) - acked_before;
    cell.thaw(victim);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let done: Vec<Done> = clients.into_iter().flat_map(|c| c.join().expect("client thread")).collect();

    let mut slowest = Duration::ZERO;
    let mut caught = 0;
    for d in &done {
        match &d.answer {
            PutAnswer::Stored(_) => {}
            other => panic!("put of {} bytes (seed {}) answered {other:?} after {:?}", d.len, d.seed, d.took),
        }
        assert!(
            d.took <= PUT_ANSWER_MAX,
            "a put of {} bytes took {:?} (started {:?} after the freeze)",
            d.len,
            d.took,
            d.started.checked_duration_since(frozen_at)
        );
        slowest = slowest.max(d.took);
        if d.took >= APPEND_DEADLINE {
            caught += 1;
        }
    }
    assert!(acked_while_frozen >= 16, "only {acked_while_frozen} puts succeeded while a server was frozen");
    let timeouts = frontend_metric(&cell, "cellar_frontend_append_timeouts_total ");
    let retries = frontend_metric(&cell, "cellar_frontend_put_retries_total ");
    assert!(retries >= 1.0, "no put was retried after an append timed out");
    eprintln!(
        "{} puts, {acked_while_frozen} acknowledged while frozen, {caught} ran into the deadline, \
         slowest {slowest:?}, {timeouts} append timeouts, {retries} retries",
        done.len()
    );

    // Nothing acknowledged is missing, the frozen server's replicas included.
    let http = agent(Duration::from_secs(60));
    for d in &done {
        let PutAnswer::Stored(hash) = &d.answer else { continue };
        let back = get(&http, &base, hash).unwrap_or_else(|e| panic!("get {hash}: {e}"));
        assert!(back == block(d.seed, d.len), "block {hash} came back different");
    }
}

#[test]
fn gets_of_blocks_on_a_frozen_volume_server_are_hedged_to_other_holders() {
    let spec = CellSpec {
        volume_mib: 8,
        frontend_args: vec![
            "--read-deadline-ms".into(),
            READ_DEADLINE.as_millis().to_string(),
            "--hedge-delay-max-ms".into(),
            HEDGE_DELAY_MAX.as_millis().to_string(),
            "--writers".into(),
            "1".into(),
        ],
        volume_args: vec!["--encode-defer-max-secs".into(), "0".into()],
        ..CellSpec::default()
    };
    let mut cell = Cell::start(&spec);
    let base = cell.base.clone();
    let http = agent(Duration::from_secs(60));

    // 1 MiB and 4 KiB blocks: enough to fill (and so seal and code) a few 8 MiB volumes
    // and leave the last one open.
    let mut blocks = Vec::new();
    let put_seeds = |blocks: &mut Vec<(String, u64, usize)>, seeds: std::ops::Range<u64>| {
        for seed in seeds {
            let len = if seed % 2 == 0 { 1 << 20 } else { SMALL_BYTES };
            let bytes = block(seed, len);
            match put(&http, &base, &bytes) {
                PutAnswer::Stored(hash) => blocks.push((hash, seed, len)),
                other => panic!("put {seed}: {other:?}"),
            }
        }
    };
    put_seeds(&mut blocks, 0..40);
    // The victim: a server that is the first holder of replicated blocks (their first
    // replica) and of coded ones (a data fragment the block's bytes are in), so that
    // gets of both kinds must go around it.
    let first_holders = |s: &serde_json::Value| -> Vec<u64> {
        if s["state"] == "coded" {
            // Systematic layout: data fragment i holds volume bytes [i*F, (i+1)*F), F the
            // volume size over k rounded up to whole 64 KiB chunks (docs/FORMAT.md).
            let k = 6u64;
            let chunk = 64u64 << 10;
            let (Some(size), Some(offset), Some(frags)) =
                (s["volume_size"].as_u64(), s["offset"].as_u64(), s["fragments"].as_array())
            else {
                return Vec::new();
            };
            let fragment_bytes = size.div_ceil(k).div_ceil(chunk) * chunk;
            let record_bytes =
                s["size"].as_u64().unwrap_or(0) + cellar_blockstore::RECORD_HEADER_BYTES as u64;
            let first = offset / fragment_bytes;
            let last = (offset + record_bytes - 1) / fragment_bytes;
            (first..=last.min(k - 1))
                .filter_map(|i| frags.get(i as usize).and_then(|f| f["node"].as_u64()))
                .collect()
        } else {
            s["replicas"][0]["node"].as_u64().into_iter().collect()
        }
    };
    let holder_counts = |stats: &[serde_json::Value]| {
        let mut counts = std::collections::HashMap::<u64, (usize, usize)>::new();
        for s in stats {
            for node in first_holders(s) {
                let c = counts.entry(node).or_default();
                if s["state"] == "coded" {
                    c.0 += 1;
                } else {
                    c.1 += 1;
                }
            }
        }
        counts
    };
    // Wait for the sealed volumes to be coded. Placement decides which servers are first
    // holders; when none is of both kinds, ten more blocks go to more volumes (seeds below
    // 100, at most six times).
    let mut next_seed = 40u64;
    let deadline = Instant::now() + common::WAIT;
    let counts = loop {
        let stats: Vec<serde_json::Value> = blocks.iter().map(|(h, _, _)| stat(&http, &base, h)).collect();
        let coded = stats.iter().filter(|s| s["state"] == "coded").count();
        let replicated = stats.iter().filter(|s| s["state"] != "coded").count();
        let counts = holder_counts(&stats);
        if coded >= 10 && replicated >= 1 {
            if counts.values().any(|(coded, replicated)| *coded > 0 && *replicated > 0) {
                break counts;
            }
            assert!(next_seed < 100, "no server is the first holder of both kinds of block: {counts:?}");
            put_seeds(&mut blocks, next_seed..next_seed + 10);
            next_seed += 10;
        }
        assert!(Instant::now() < deadline, "{coded} blocks coded, {replicated} replicated: {counts:?}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let (&victim, &(coded_on_victim, replicated_on_victim)) = counts
        .iter()
        .filter(|(_, (coded, replicated))| *coded > 0 && *replicated > 0)
        .max_by_key(|(node, (coded, replicated))| (coded + replicated, std::cmp::Reverse(**node)))
        .unwrap_or_else(|| panic!("no server is the first holder of both kinds of block: {counts:?}"));

    // Before the freeze: gets of large blocks on open volumes are handed on as they arrive
    // and counted as served when whole (they used to be counted as abandoned: hyper does
    // not ask a body of known length for more once it has all its bytes).
    let fresh = block(100, 1 << 20);
    let fresh_hash = match put(&http, &base, &fresh) {
        PutAnswer::Stored(hash) => hash,
        other => panic!("put of a block for the streamed gets: {other:?}"),
    };
    let large: Vec<(String, u64, usize)> = std::iter::once((fresh_hash, 100, 1 << 20))
        .chain(blocks.iter().filter(|(_, _, len)| *len > SMALL_BYTES).cloned())
        .collect();
    let ok_metric = "cellar_frontend_requests_total{method=\"GET\",outcome=\"ok\"} ";
    let started_metric = "cellar_frontend_streamed_gets_total{outcome=\"started\"} ";
    let abandoned_metric = "cellar_frontend_streamed_gets_total{outcome=\"abandoned\"} ";
    let ok_before = frontend_metric(&cell, ok_metric);
    let started_before = frontend_metric(&cell, started_metric);
    let abandoned_before = frontend_metric(&cell, abandoned_metric);
    for (hash, seed, len) in &large {
        let back = get(&http, &base, hash).unwrap_or_else(|e| panic!("get {hash}: {e}"));
        assert!(back == block(*seed, *len), "block {hash} came back different");
    }
    // A block not coded now was not coded at its get (coding only ever follows): it was
    // read from a replica, handed on as it arrived.
    let replicated = large.iter().filter(|(h, _, _)| stat(&http, &base, h)["state"] != "coded").count();
    assert!(replicated >= 1, "the block just put is on an open volume");
    let ok = frontend_metric(&cell, ok_metric) - ok_before;
    let started = frontend_metric(&cell, started_metric) - started_before;
    let abandoned = frontend_metric(&cell, abandoned_metric) - abandoned_before;
    assert_eq!(ok, large.len() as f64, "gets served ({started} of them streamed, {abandoned} abandoned)");
    assert!(started >= replicated as f64, "{started} gets streamed, {replicated} read from replicas");
    assert_eq!(abandoned, 0.0, "whole gets counted as abandoned");

    cell.freeze(victim);
    let hedged_before = frontend_metric(&cell, "cellar_frontend_hedged_reads_total ");

    let mut slowest = Duration::ZERO;
    for (hash, seed, len) in &blocks {
        let started = Instant::now();
        let back = get(&http, &base, hash).unwrap_or_else(|e| panic!("get {hash}: {e}"));
        let took = started.elapsed();
        assert!(back == block(*seed, *len), "block {hash} came back different");
        assert!(took <= GET_ANSWER_MAX, "a get of {len} bytes took {took:?} with node {victim} frozen");
        slowest = slowest.max(took);
    }
    let hedged = frontend_metric(&cell, "cellar_frontend_hedged_reads_total ") - hedged_before;
    eprintln!(
        "node {victim} frozen (first holder of {coded_on_victim} coded and {replicated_on_victim} replicated \
         blocks): {} gets, slowest {slowest:?}, {hedged} hedged",
        blocks.len()
    );
    assert!(hedged >= 1.0, "no read was hedged although node {victim} was the first holder of blocks");
    cell.thaw(victim);
}

/// How long a master follower stays frozen: well past the deadline of a Raft answer (500 ms
/// at least), so that the leader's replication stream to it runs out and is opened again.
const MASTER_FROZEN_FOR: Duration = Duration::from_secs(3);

/// The metric `prefix` of master `id` (1-based), whose metrics are at `urls[id - 1]`.
fn master_metric(urls: &[String], id: usize, prefix: &str) -> f64 {
    value(&scrape(&urls[id - 1]), prefix)
}

#[test]
fn a_frozen_master_follower_stalls_no_commit_and_catches_up_after() {
    let mut cell = Cell::start(&CellSpec::default());
    let urls: Vec<String> =
        (1..=cell.masters.len()).map(|id| metrics_url(&cell.path(&format!("master-{id}.log")))).collect();
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        if let Some(id) =
            (1..=urls.len()).find(|&id| master_metric(&urls, id, "cellar_master_raft_is_leader ") == 1.0)
        {
            break id;
        }
        assert!(Instant::now() < deadline, "no master leads");
        std::thread::sleep(Duration::from_millis(100));
    };
    let follower = (1..=urls.len()).find(|&id| id != leader).expect("a follower");
    cell.freeze_master(follower);

    // One client's puts: each commits a Raft entry of its own, which the leader and the
    // other follower make a quorum for.
    let http = agent(Duration::from_secs(30));
    let frozen_at = Instant::now();
    let mut stored: Vec<(u64, String)> = Vec::new();
    let mut seed = 1_000_000;
    while frozen_at.elapsed() < MASTER_FROZEN_FOR {
        seed += 1;
        match put(&http, &cell.base, &block(seed, SMALL_BYTES)) {
            PutAnswer::Stored(hash) => stored.push((seed, hash)),
            other => panic!("a put with master {follower} frozen answered {other:?}"),
        }
    }
    assert!(stored.len() >= 10, "only {} puts were acknowledged with a master follower frozen", stored.len());
    // The leader stopped waiting for the frozen follower's answers (its stream's deadline).
    common::wait_for_line(&cell.path(&format!("master-{leader}.log")), "no answer to a Raft request in time");
    let applied = master_metric(&urls, leader, "cellar_master_raft_applied_index ");

    cell.thaw_master(follower);
    let deadline = Instant::now() + WAIT;
    loop {
        let caught_up = master_metric(&urls, follower, "cellar_master_raft_applied_index ");
        if caught_up >= applied {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "master {follower} applied {caught_up} of {applied} entries {WAIT:?} after it ran again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every acknowledged put is readable and counted once.
    for (seed, hash) in &stored {
        let back = get(&http, &cell.base, hash).unwrap_or_else(|e| panic!("get {hash}: {e}"));
        assert!(back == block(*seed, SMALL_BYTES), "block {hash} came back different");
        assert_eq!(stat(&http, &cell.base, hash)["references"], 1, "references of {hash}");
    }
    eprintln!(
        "{} puts acknowledged with master {follower} frozen for {MASTER_FROZEN_FOR:?}; it caught up to index {applied}",
        stored.len()
    );
}
