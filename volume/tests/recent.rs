//! Large records appended lately are answered from memory (`cellar_volume::recent`) by the
//! volume's first replica, the one gets ask: the bytes are the disk's, the reads are
//! counted as hits; small records are not kept, nor are the other replicas' records (they
//! are read from the disk, as counted misses); a restarted server has nothing in memory and
//! reads the same bytes from its disk; a server configured to keep nothing reads everything
//! from its disks.

mod common;

use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use common::{Cell, Written};

/// Reads every block from every replica of `v`; each must be the bytes written.
async fn read_all(cell: &Cell, v: &mpb::Volume, blocks: &[Written]) {
    for r in &v.replicas {
        for b in blocks {
            let mut client = cell.cluster.extent_client(r.node_id).await.expect("client");
            let req = pb::ReadRecordRequest {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                offset_bytes: b.offset_bytes,
                length_bytes: b.length_bytes,
            };
            let got = client.read_record(req).await.expect("read");
            assert_eq!(got.sha256, b.sha256.to_vec(), "key of the record at {}", b.offset_bytes);
            assert!(got.payload == b.payload, "bytes of the record at {}", b.offset_bytes);
        }
    }
}

fn hits_and_misses(cell: &Cell, node_id: u64) -> (u64, u64) {
    cell.handle(node_id).shared.recent.hits_and_misses()
}

/// 200,000 and 70,000 bytes are kept (>= 64 KiB), 1,000 and 60,000 are not.
const SIZES: [usize; 4] = [200_000, 1000, 70_000, 60_000];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_records_are_read_from_memory_until_the_server_restarts() {
    let mut cell = Cell::start(3, 1, 1, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&SIZES, 11).await;
    for (i, r) in v.replicas.iter().enumerate() {
        let kept = cell.handle(r.node_id).shared.recent.payload_bytes();
        let expected = if i == 0 { 270_000 } else { 0 };
        assert_eq!(kept, expected, "payload bytes kept by replica {i} (node {})", r.node_id);
    }
    read_all(&cell, &v, &blocks).await;
    for (i, r) in v.replicas.iter().enumerate() {
        let expected = if i == 0 { (2, 0) } else { (0, 2) };
        assert_eq!(hits_and_misses(&cell, r.node_id), expected, "replica {i}: the two large records");
    }
    let node = v.replicas[0].node_id;
    cell.restart(node).await;
    assert_eq!(cell.handle(node).shared.recent.payload_bytes(), 0);
    read_all(&cell, &v, &blocks).await;
    assert_eq!(hits_and_misses(&cell, node), (0, 2), "after a restart: read from the disk");
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_keeping_nothing_reads_every_record_from_its_disks() {
    let cell = Cell::start(3, 1, 1, |c| c.recent_records_bytes = 0).await;
    let (v, blocks) = cell.fill_volume(&SIZES, 12).await;
    read_all(&cell, &v, &blocks).await;
    for r in &v.replicas {
        assert_eq!(cell.handle(r.node_id).shared.recent.payload_bytes(), 0);
        assert_eq!(hits_and_misses(&cell, r.node_id), (0, 2), "node {}", r.node_id);
    }
    cell.shutdown().await;
}
