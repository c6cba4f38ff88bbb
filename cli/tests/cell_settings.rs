//! Cell settings come from the masters' configuration (issue 20): volume servers and a
//! frontend started without size flags take the masters' block size limit and volume
//! size from the cluster map. The masters here are configured away from every default
//! (1 MiB blocks, 8 MiB volumes), so a process that kept its own default would show it.

mod common;

use common::{Cell, CellSpec, PutAnswer, agent, block, get, metrics_url, put, scrape, value};
use std::time::Duration;

const BLOCK_MAX_BYTES: usize = 1 << 20;

#[test]
fn volume_servers_and_the_frontend_take_the_masters_sizes() {
    let spec = CellSpec {
        volume_mib: 8,
        master_config: format!("block_size_max_bytes = {BLOCK_MAX_BYTES}"),
        // One open volume at a time, so the volume size decides when a new one is taken.
        frontend_args: vec!["--writers".into(), "1".into()],
        ..CellSpec::default()
    };
    let cell = Cell::start(&spec);
    let a = agent(Duration::from_secs(60));

    // The frontend's limit is the masters' 1 MiB, not its own default of 4 MiB.
    let over = put(&a, &cell.base, &block(1, BLOCK_MAX_BYTES + 1));
    assert!(matches!(over, PutAnswer::Refused(413)), "a block over the masters' limit: {over:?}");
    // Every volume server reports the masters' limit.
    for v in &cell.volumes {
        let text = scrape(&metrics_url(&v.log));
        assert_eq!(
            value(&text, "cellar_volume_block_size_max_bytes "),
            BLOCK_MAX_BYTES as f64,
            "{}",
            v.log.display()
        );
    }

    // 12 MiB of 1 MiB blocks through one writer: an 8 MiB volume fills and is sealed, so
    // a second one is taken (with the default 1 GiB volumes one would hold them all).
    let mut stored = Vec::new();
    for seed in 0..12 {
        let bytes = block(100 + seed, BLOCK_MAX_BYTES);
        match put(&a, &cell.base, &bytes) {
            PutAnswer::Stored(hash) => stored.push((hash, bytes)),
            other => panic!("put {seed}: {other:?}"),
        }
    }
    let master_log = cell.path("master-1.log");
    let text = scrape(&metrics_url(&master_log));
    let volumes: f64 = ["open", "sealed", "coded"]
        .iter()
        .map(|s| value(&text, &format!("cellar_master_volumes{{state=\"{s}\"}} ")))
        .sum();
    assert!(volumes >= 2.0, "12 MiB went into {volumes} volume(s): the frontend did not take 8 MiB volumes");
    for (hash, bytes) in &stored {
        assert_eq!(&get(&a, &cell.base, hash).expect("get"), bytes, "block {hash}");
    }
}
