//! A whole cell stopped at once, and volume servers that come back elsewhere, over real
//! processes (three masters, three zones of two volume servers with two disks each, one
//! frontend). Clients stream puts of blocks of several sizes (small volumes, so that
//! volumes fill, seal and are coded while they run); every process of the cell is
//! SIGKILLed at once in the middle, as a power cut would stop it, and the cell is started
//! again on the same directories, the volume servers on new ephemeral ports. Every
//! acknowledged block must read back byte-exact, the cell must take puts again, and once
//! it has settled (every block put before the crash in a coded volume, no volume waiting
//! to be coded, no task left) everything must still read. Then every volume server is
//! killed and started again under the running frontend, again on new ports: the frontend,
//! whose cached addresses are all stale, must reach them again (it once never did: node
//! addresses were read again only for a node it did not know).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, admin_status, agent, block, get, put, stat};

const CLIENTS: u64 = 4;
/// Puts acknowledged before the cell is killed.
const PUTS_BEFORE_KILL: usize = 150;
/// Block sizes the clients cycle through (the largest is the cell's block limit).
const SIZES: [usize; 4] = [4 << 10, 64 << 10, 300 << 10, 1 << 20];
/// 1 MiB blocks, 4 MiB volumes (a few blocks fill one); the killed frontend's open volumes
/// are sealed (and coded) 3 s after it died, volumes sealed empty reclaimed soon after.
const CONFIG: &str = "block_size_max_bytes = 1048576\nplanner_interval_ms = 200\nlease_ms = 2000\n\
                      abandoned_after_ms = 1000\ncompaction_interval_ms = 500\ncompaction_grace_ms = 1000\n";

/// The blocks acknowledged so far: (seed, size, hash).
type Acked = Arc<Mutex<Vec<(u64, usize, String)>>>;

/// Every block of `acked` reads back byte-exact through `base`.
fn check_all(base: &str, acked: &[(u64, usize, String)], when: &str) {
    let a = agent(Duration::from_secs(60));
    let mut bad = Vec::new();
    for (seed, size, hash) in acked {
        match get(&a, base, hash) {
            Ok(bytes) if bytes == block(*seed, *size) => {}
            Ok(bytes) => bad.push(format!("{hash}: {} bytes, not the {size} put", bytes.len())),
            Err(e) => bad.push(format!("{hash}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{when}: {} of {} acknowledged blocks do not read: {bad:#?}",
        bad.len(),
        acked.len()
    );
}

/// Puts `n` more blocks (seeds from `first`); every one must be acknowledged.
fn put_more(base: &str, first: u64, n: u64, acked: &Acked, when: &str) {
    let a = agent(Duration::from_secs(60));
    for seed in first..first + n {
        let size = SIZES[(seed % SIZES.len() as u64) as usize];
        match put(&a, base, &block(seed, size)) {
            PutAnswer::Stored(hash) => acked.lock().expect("acked").push((seed, size, hash)),
            other => panic!("put {seed} {when}: {other:?}"),
        }
    }
}

/// Waits until every block of `acked` is in a coded volume (the open volumes of the killed
/// frontend were sealed and coded), no volume is sealed (waiting for its code, or sealed
/// empty and not yet reclaimed) and no task is left.
fn wait_settled(masters: &str, base: &str, acked: &[(u64, usize, String)]) -> serde_json::Value {
    let a = agent(Duration::from_secs(30));
    let deadline = Instant::now() + WAIT;
    for (_, _, hash) in acked {
        loop {
            let s = stat(&a, base, hash);
            if s["state"].as_str().is_some_and(|state| state.to_ascii_uppercase().contains("CODED")) {
                break;
            }
            assert!(Instant::now() < deadline, "block {hash} was never coded: {s:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let mut last = None;
    loop {
        if let Some(s) = admin_status(masters) {
            if s["volumes"]["sealed"].as_u64() == Some(0) && s["tasks"]["open"].as_u64() == Some(0) {
                return s;
            }
            last = Some(s);
        }
        assert!(Instant::now() < deadline, "the cell did not settle; last status: {last:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cell_killed_whole_comes_back_with_every_acknowledged_block_and_finds_servers_at_new_addresses() {
    let spec = CellSpec { volume_mib: 4, master_config: CONFIG.into(), ..CellSpec::default() };
    let mut cell = Cell::start(&spec);
    let masters = cell.masters.join(",");

    // Clients stream puts until told to stop; the cell is killed under them.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (base, acked, stop) = (cell.base.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let a = agent(Duration::from_secs(30));
                let mut seed = c * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    seed += 1;
                    let size = SIZES[(seed % SIZES.len() as u64) as usize];
                    // A put with no answer (the cell died under it) has an unknown outcome:
                    // only acknowledged ones are checked.
                    if let PutAnswer::Stored(hash) = put(&a, &base, &block(seed, size)) {
                        acked.lock().expect("acked").push((seed, size, hash));
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + WAIT;
    while acked.lock().expect("acked").len() < PUTS_BEFORE_KILL {
        assert!(Instant::now() < deadline, "only {} puts acknowledged", acked.lock().expect("acked").len());
        std::thread::sleep(Duration::from_millis(20));
    }
    cell.kill_all();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let before: Vec<_> = acked.lock().expect("acked").clone();
    eprintln!("{} puts acknowledged before the whole cell was killed", before.len());

    // Back on the same directories: everything acknowledged is there, and puts go on.
    cell.restart_all();
    check_all(&cell.base, &before, "after the restart");
    put_more(&cell.base, 10_000_000, 40, &acked, "after the restart");
    let settled = wait_settled(&masters, &cell.base, &before);
    assert!(settled["volumes"]["coded"].as_u64().unwrap_or(0) >= 1, "nothing was coded: {settled:#?}");
    assert_eq!(settled["tasks"]["failed"].as_u64(), Some(0), "failed tasks: {settled:#?}");
    let all: Vec<_> = acked.lock().expect("acked").clone();
    check_all(&cell.base, &all, "once the cell settled");

    // Every volume server again, under the running frontend: all of its addresses go stale.
    let nodes: Vec<u64> = cell.volumes.iter().map(|v| v.node_id).collect();
    for &node in &nodes {
        cell.kill_volume(node);
    }
    for &node in &nodes {
        cell.restart_volume(node);
    }
    let a = agent(Duration::from_secs(30));
    let deadline = Instant::now() + WAIT;
    let moved_at = Instant::now();
    loop {
        match put(&a, &cell.base, &block(20_000_000, 4 << 10)) {
            PutAnswer::Stored(hash) => {
                acked.lock().expect("acked").push((20_000_000, 4 << 10, hash));
                break;
            }
            other => assert!(
                Instant::now() < deadline,
                "the frontend never reached the moved volume servers: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("a put acknowledged {:?} after the volume servers moved", moved_at.elapsed());
    put_more(&cell.base, 20_000_001, 20, &acked, "after the volume servers moved");
    let all: Vec<_> = acked.lock().expect("acked").clone();
    check_all(&cell.base, &all, "after the volume servers moved");
}
