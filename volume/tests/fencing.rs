//! Write fencing: an append under a stale lease epoch or generation is refused and leaves
//! the replica unchanged, also after the volume server restarts. And the same for an
//! append whose payload does not match the CRC32 its sender gave.

mod common;

use std::time::Duration;

use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use cellar_proto::volume as vpb;
use common::{Cell, WAIT};

async fn acquire(cell: &Cell, volume_id: u64, holder: &str) -> mpb::Volume {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let holder = holder.to_string();
        let got = cell
            .client
            .call(|mut c| {
                let holder = holder.clone();
                async move {
                    c.acquire_lease(mpb::AcquireLeaseRequest { volume_id, holder, request_id: None }).await
                }
            })
            .await;
        match got {
            Ok(v) => return v,
            // The first holder's lease has not expired yet.
            Err(e) if e.code() == Some(code::STALE_LEASE) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("acquire lease: {e}"),
        }
    }
}

async fn replica_lengths(cell: &Cell, v: &mpb::Volume) -> Vec<u64> {
    let mut out = Vec::new();
    for r in &v.replicas {
        let mut c = cell.cluster.node_client(r.node_id).await.expect("client");
        let stat = c
            .stat_extent(vpb::ExtentRef {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                part: cellar_proto::common::ExtentPart::Replica.into(),
                fragment_index: 0,
            })
            .await
            .expect("stat")
            .into_inner();
        out.push(stat.length_bytes);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_epoch_or_generation_is_refused_and_changes_nothing() {
    let mut cell = Cell::start(3, 1, 1, |_| {}).await;
    let v1 = cell.allocate("writer-1").await;
    assert_eq!(v1.lease_epoch, 1);
    let first = cell.append_all(&v1, 0, b"written under epoch 1").await.expect("append");
    let mut end = first.offset_bytes + u64::from(first.length_bytes);

    // The first writer goes quiet; its lease expires and a second writer takes over.
    let v2 = acquire(&cell, v1.volume_id, "writer-2").await;
    assert_eq!(v2.lease_epoch, 2);
    let second = cell.append_all(&v2, end, b"written under epoch 2").await.expect("append");
    end += u64::from(second.length_bytes);
    assert_eq!(replica_lengths(&cell, &v2).await, vec![end; 3]);

    // The first writer comes back at the right offset: refused everywhere, nothing written.
    let err = cell.append_all(&v1, end, b"stale").await.expect_err("stale epoch");
    assert_eq!(cellar_volume::errors::code_of(&err).map(|c| c.as_str()), Some(code::STALE_LEASE), "{err:?}");
    assert_eq!(replica_lengths(&cell, &v2).await, vec![end; 3], "the replicas are unchanged");

    // A generation below the replica's fence is refused too.
    let mut old_generation = v2.clone();
    old_generation.generation = 0;
    let err = cell.append_all(&old_generation, end, b"old generation").await.expect_err("stale generation");
    assert_eq!(cellar_volume::errors::code_of(&err).map(|c| c.as_str()), Some(code::STALE_LEASE), "{err:?}");

    // A future epoch the master never granted is refused as well (checked with the master).
    let mut forged = v2.clone();
    forged.lease_epoch = 9;
    let err = cell.append_all(&forged, end, b"forged").await.expect_err("forged epoch");
    assert_eq!(cellar_volume::errors::code_of(&err).map(|c| c.as_str()), Some(code::STALE_LEASE), "{err:?}");

    // The fence survives a restart of a replica's server.
    let node = v2.replicas[0].node_id;
    cell.restart(node).await;
    let err = cell.append_all(&v1, end, b"stale after restart").await.expect_err("stale epoch");
    assert_eq!(cellar_volume::errors::code_of(&err).map(|c| c.as_str()), Some(code::STALE_LEASE), "{err:?}");
    assert_eq!(replica_lengths(&cell, &v2).await, vec![end; 3]);

    // The current writer goes on; every block reads back.
    let third = cell.append_all(&v2, end, b"still writing").await.expect("append");
    let reader = cell.reader();
    let v = cell.volume(v2.volume_id).await;
    for w in [&first, &second, &third] {
        let got = reader.read(&v, &w.key(), w.offset_bytes, w.length_bytes).await.expect("read");
        assert_eq!(got.payload, w.payload);
    }
    // An append at the wrong offset is refused (the writer assigns offsets).
    let err = cell.append_all(&v2, 0, b"overwrite?").await.expect_err("offset");
    assert_eq!(
        cellar_volume::errors::code_of(&err).map(|c| c.as_str()),
        Some(code::OFFSET_MISMATCH),
        "{err:?}"
    );
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payload_that_does_not_match_its_senders_crc_is_refused_and_changes_nothing() {
    use sha2::{Digest, Sha256};
    let cell = Cell::start(3, 1, 1, |_| {}).await;
    let v = cell.allocate("writer").await;
    let first = cell.append_all(&v, 0, b"no crc sent: the server computes it").await.expect("append");
    let end = first.offset_bytes + u64::from(first.length_bytes);

    let payload = vec![0x5au8; 300_000];
    let sha256: [u8; 32] = Sha256::digest(&payload).into();
    let crc = crc32fast::hash(&payload);
    for wrong in [crc ^ 1, crc ^ 0x8000_0000, !crc] {
        let err = cell.append_with_crc(&v, end, sha256, &payload, Some(wrong)).await.expect_err("wrong crc");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("payload_crc32"), "{err:?}");
        assert_eq!(replica_lengths(&cell, &v).await, vec![end; 3], "nothing appended");
    }

    // The right CRC is written as given, and both records read back.
    let second = cell.append_with_crc(&v, end, sha256, &payload, Some(crc)).await.expect("append");
    assert_eq!(second.offset_bytes, end);
    assert_eq!(replica_lengths(&cell, &v).await, vec![end + u64::from(second.length_bytes); 3]);
    let reader = cell.reader();
    let v = cell.volume(v.volume_id).await;
    for w in [&first, &second] {
        let got = reader.read(&v, &w.key(), w.offset_bytes, w.length_bytes).await.expect("read");
        assert_eq!(got.payload, w.payload);
    }
    cell.shutdown().await;
}
