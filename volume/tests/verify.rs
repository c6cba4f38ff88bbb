//! A get returns only its key's bytes: checked by the read digest from the index entry, or
//! by SHA-256 for entries that have none.

mod common;

use cellar_volume::digest::{BlockKey, read_digest};
use common::{Cell, Written, mixed_sizes};
use sha2::{Digest, Sha256};

/// Reads every block under both checks (the read digest, and SHA-256 alone).
async fn read_both_ways(cell: &Cell, volume_id: u64, blocks: &[Written]) {
    let reader = cell.reader();
    let v = cell.volume(volume_id).await;
    for b in blocks {
        for key in [b.key(), BlockKey::sha256_only(b.sha256)] {
            let got = reader
                .read(&v, &key, b.offset_bytes, b.length_bytes)
                .await
                .unwrap_or_else(|e| panic!("block at {} ({:?}): {e:?}", b.offset_bytes, key.digest));
            assert_eq!(got.payload, b.payload, "block at {} differs", b.offset_bytes);
        }
    }
}

/// A record whose header names a key that its bytes are not (a misdirected or forged write,
/// with valid CRCs throughout: the servers do not hash payloads) is never returned, under
/// either check, from replicas or from fragments. Every copy agrees, so the record is at
/// fault, not a disk: nothing is reported and the volume's other blocks read as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_whose_bytes_are_not_its_keys_is_never_returned() {
    let cell = Cell::start(3, 2, 2, |_| {}).await;
    let (v, mut blocks) = cell.fill_volume(&mixed_sizes(20), 5).await;
    read_both_ways(&cell, v.volume_id, &blocks).await;

    // Over one HTTP/2 frame (1 MiB): a replica's answer is checked as it arrives
    // (`cellar_volume_api::arriving`), and must be refused there too.
    let real = vec![0x11u8; 1_200_000];
    let fake = vec![0x22u8; 1_200_000];
    let sha_real: [u8; 32] = Sha256::digest(&real).into();
    let offset = blocks.last().map(|b| b.offset_bytes + u64::from(b.length_bytes)).expect("blocks");
    let mut forged = cell.append_as(&v, offset, sha_real, &fake).await.expect("append");
    // The index entry is the real block's (its digest made from the real bytes).
    forged.payload = real.clone();
    cell.commit(&v, std::slice::from_ref(&forged)).await;
    let keys = [
        BlockKey { sha256: sha_real, digest: Some(read_digest(&sha_real, &real)) },
        BlockKey::sha256_only(sha_real),
    ];

    let reader = cell.reader();
    let reports_before = cell.cluster.bad_extent_reports();
    let open = cell.volume(v.volume_id).await;
    for key in &keys {
        let err = reader
            .read(&open, key, forged.offset_bytes, forged.length_bytes)
            .await
            .expect_err("forged bytes from a replica");
        assert!(err.message().contains("other bytes"), "{err:?}");
    }

    cell.seal(v.volume_id).await;
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    cell.wait_tasks_done().await;
    for key in &keys {
        let err = reader
            .read(&coded, key, forged.offset_bytes, forged.length_bytes)
            .await
            .expect_err("forged bytes from fragments");
        assert!(err.message().contains("does not match the key"), "{err:?}");
    }
    assert_eq!(cell.cluster.bad_extent_reports(), reports_before, "a bad record is no bad disk");
    assert!(cell.volume(v.volume_id).await.bad_disks.is_empty());
    blocks.retain(|b| b.offset_bytes != forged.offset_bytes);
    read_both_ways(&cell, v.volume_id, &blocks).await;
    cell.shutdown().await;
}
