//! Two frontends over one cell of separate processes (3 masters, 3 zones x 2 volume
//! servers): a block deleted through one stops being served by the other soon after the
//! other's cached index entry is older than `--index-entry-fresh-ms` (a get past that age
//! refreshes it in the background; the block used to be served until compaction reclaimed
//! its bytes, however long that took); and an entry a frontend knew still serves its gets
//! when no master answers, past that age too.

mod common;

use std::time::{Duration, Instant};

use common::{Cell, CellSpec, PutAnswer, WAIT, agent, block, get, put};

/// Freshness of cached index entries in this test's frontends.
const FRESH_MS: &str = "500";

fn delete(agent: &ureq::Agent, base: &str, hash: &str) -> u16 {
    match agent.delete(&format!("{base}/v1/blocks/{hash}")).call() {
        Ok(resp) => resp.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("delete {hash}: {e}"),
    }
}

fn stored(answer: PutAnswer) -> String {
    match answer {
        PutAnswer::Stored(hash) => hash,
        other => panic!("put not acknowledged: {other:?}"),
    }
}

#[test]
fn a_block_deleted_through_one_frontend_stops_being_served_by_another() {
    let spec = CellSpec {
        frontend_args: vec!["--index-entry-fresh-ms".into(), FRESH_MS.into()],
        ..CellSpec::default()
    };
    let mut cell = Cell::start(&spec);
    let other = cell.start_frontend("frontend-2", &["--index-entry-fresh-ms", FRESH_MS]);
    let a = agent(Duration::from_secs(30));

    // Stored through the first frontend, read (and its entry cached) through the other.
    let bytes = block(7, 100 << 10);
    let hash = stored(put(&a, &cell.base, &bytes));
    let deadline = Instant::now() + WAIT;
    loop {
        match get(&a, &other, &hash) {
            Ok(got) => {
                assert!(got == bytes, "the other frontend served other bytes");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "the other frontend never served the block: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Its only reference dropped through the first frontend: gone there at once.
    assert_eq!(delete(&a, &cell.base, &hash), 204, "delete through the first frontend");
    let gone = get(&a, &cell.base, &hash).expect_err("served by the frontend that deleted it");
    assert!(gone.contains("404"), "{gone}");

    // The other stops serving it once a get found its cached entry older than the
    // freshness limit and the refresh found it gone (until then it may still hand out the
    // key's bytes, never others).
    let deadline = Instant::now() + WAIT;
    loop {
        match get(&a, &other, &hash) {
            Ok(got) => assert!(got == bytes, "the other frontend served other bytes after the delete"),
            Err(e) if e.contains("404") => break,
            Err(e) => panic!("get through the other frontend after the delete: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "still served through the other frontend {WAIT:?} after its delete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // With no master answering, an entry a frontend knew still serves its gets, stale or not.
    let kept = block(8, 100 << 10);
    let kept_hash = stored(put(&a, &cell.base, &kept));
    assert!(get(&a, &other, &kept_hash).expect("get before the masters go") == kept);
    let cached_at = Instant::now();
    for i in cell.master_procs.clone() {
        cell.procs[i].kill().expect("SIGKILL a master");
        cell.procs[i].wait().expect("reap a master");
    }
    // The entry aged past the freshness limit: a get serves it and asks the masters in the
    // background, where nobody answers.
    let fresh = Duration::from_millis(FRESH_MS.parse().expect("a number"));
    std::thread::sleep((fresh + Duration::from_millis(100)).saturating_sub(cached_at.elapsed()));
    let patient = agent(Duration::from_secs(120));
    for _ in 0..3 {
        let got = get(&patient, &other, &kept_hash).expect("a get with every master gone");
        assert!(got == kept, "other bytes with every master gone");
    }
}
