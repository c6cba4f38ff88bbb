//! Reconstruct, copy and delete tasks through the master's queue, and their idempotence:
//! a task run twice, or after a crash left a partial extent behind, ends in a correct state.

mod common;

use cellar_blockstore::ExtentId;
use cellar_proto::master as mpb;
use common::{Cell, Written, mixed_sizes};

async fn enqueue(cell: &Cell, task: mpb::Task) -> mpb::Task {
    cell.client
        .call(|mut c| {
            let task = task.clone();
            async move { c.enqueue_task(mpb::EnqueueTaskRequest { task: Some(task), request_id: None }).await }
        })
        .await
        .expect("enqueue")
}

async fn read_all(cell: &Cell, v: &mpb::Volume, blocks: &[Written]) -> usize {
    let reader = cell.reader();
    let mut degraded = 0;
    for b in blocks {
        let got = reader.read(v, &b.key(), b.offset_bytes, b.length_bytes).await.expect("read");
        assert_eq!(got.payload, b.payload);
        degraded += usize::from(got.degraded);
    }
    degraded
}

/// A disk of the cell that holds no extent of `v`, on a node in the zone of `near`.
fn free_disk(cell: &Cell, v: &mpb::Volume, near: u64) -> mpb::Extent {
    let zone = cell.zone_of(near).to_string();
    for h in &cell.volumes {
        if cell.zone_of(h.node_id) != zone {
            continue;
        }
        for (disk_id, _) in h.shared.disks.with_ids() {
            if !v.fragments.iter().chain(&v.replicas).any(|e| e.disk_id == disk_id) {
                return mpb::Extent { node_id: h.node_id, disk_id };
            }
        }
    }
    panic!("no free disk in {zone}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_fragments_are_rebuilt_and_moved_and_tasks_are_idempotent() {
    // Three disks per node: after coding, every zone has free disks to repair onto.
    let cell = Cell::start(3, 2, 3, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(40), 3).await;
    cell.seal(v.volume_id).await;
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    cell.wait_tasks_done().await;

    // Fragment 1 (data) is lost from its disk.
    let lost = coded.fragments[1];
    let disk = cell.handle(lost.node_id).shared.disks.get(lost.disk_id).expect("disk");
    disk.delete(ExtentId::fragment(v.volume_id, 1)).expect("lose fragment");
    let target = free_disk(&cell, &coded, lost.node_id);
    // A crash half-way through an earlier attempt left a partial fragment on the target.
    let partial = cell.handle(target.node_id).shared.disks.get(target.disk_id).expect("disk");
    partial.create_fragment(v.volume_id, 1, 1 << 20, 64 << 10).expect("partial fragment");
    let task = enqueue(
        &cell,
        mpb::Task {
            kind: cellar_proto::master::TaskKind::Reconstruct.into(),
            volume_id: v.volume_id,
            part: cellar_proto::common::ExtentPart::Fragment.into(),
            fragment_index: 1,
            target: Some(target),
            replaces: Some(lost),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(task.node_id, target.node_id);
    let repaired = cell
        .wait_volume(v.volume_id, "fragment 1 rebuilt", |v| v.fragments[1].disk_id == target.disk_id)
        .await;
    assert_eq!(repaired.generation, coded.generation + 1);
    cell.wait_tasks_done().await;
    assert_eq!(read_all(&cell, &repaired, &blocks).await, 0, "the rebuilt fragment serves direct reads");

    // Running the same task again changes nothing and succeeds.
    let again =
        cellar_volume::tasks::execute(&cell.handle(target.node_id).shared, &task).await.expect("rerun");
    assert!(again.contains("already"), "{again}");

    // Copy (move) parity fragment 7 to another disk; the old extent is deleted after the commit.
    let from = repaired.fragments[7];
    let to = free_disk(&cell, &repaired, from.node_id);
    enqueue(
        &cell,
        mpb::Task {
            kind: cellar_proto::master::TaskKind::Copy.into(),
            volume_id: v.volume_id,
            part: cellar_proto::common::ExtentPart::Fragment.into(),
            fragment_index: 7,
            source: Some(from),
            target: Some(to),
            replaces: Some(from),
            ..Default::default()
        },
    )
    .await;
    let moved =
        cell.wait_volume(v.volume_id, "fragment 7 moved", |v| v.fragments[7].disk_id == to.disk_id).await;
    cell.wait_tasks_done().await;
    assert!(!cell.extent_exists(&from, v.volume_id, "fragment", 7).await, "the old extent went to the trash");
    assert!(cell.extent_exists(&to, v.volume_id, "fragment", 7).await);

    // Every block reads back with the data fragments lost but the moved and rebuilt ones.
    let mut three_lost = moved.clone();
    for i in [0, 2, 3] {
        three_lost.fragments[i].disk_id = 9_999_000 + i as u64;
    }
    assert!(read_all(&cell, &three_lost, &blocks).await > 0);

    // A delete of a live extent is refused by the master.
    let live = mpb::Task {
        kind: cellar_proto::master::TaskKind::Delete.into(),
        volume_id: v.volume_id,
        part: cellar_proto::common::ExtentPart::Fragment.into(),
        fragment_index: 7,
        source: Some(to),
        ..Default::default()
    };
    let refused = cell
        .client
        .call(|mut c| {
            let task = live.clone();
            async move { c.enqueue_task(mpb::EnqueueTaskRequest { task: Some(task), request_id: None }).await }
        })
        .await
        .expect_err("live extent");
    assert_eq!(refused.code(), Some(cellar_proto::error_code::BAD_REQUEST));
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sealed_replica_is_copied_record_by_record() {
    let cell = Cell::start(3, 2, 1, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(15), 5).await;
    // Sealed but not coded: one disk per node is too few for rs-6-3 over three zones.
    let sealed = cell.seal(v.volume_id).await;
    assert_eq!(sealed.state(), cellar_proto::common::VolumeState::Sealed);
    let from = sealed.replicas[0];
    let to = free_disk(&cell, &sealed, from.node_id);
    enqueue(
        &cell,
        mpb::Task {
            kind: cellar_proto::master::TaskKind::Copy.into(),
            volume_id: v.volume_id,
            part: cellar_proto::common::ExtentPart::Replica.into(),
            source: Some(from),
            target: Some(to),
            replaces: Some(from),
            ..Default::default()
        },
    )
    .await;
    let moved = cell
        .wait_volume(v.volume_id, "replica moved", |v| v.replicas.iter().any(|r| r.disk_id == to.disk_id))
        .await;
    cell.wait_tasks_done().await;
    assert!(!moved.replicas.iter().any(|r| r.disk_id == from.disk_id));
    assert!(!cell.extent_exists(&from, v.volume_id, "replica", 0).await);
    // Read from the new replica alone.
    let mut only_new = moved.clone();
    only_new.replicas.retain(|r| r.disk_id == to.disk_id);
    assert_eq!(read_all(&cell, &only_new, &blocks).await, 0);
    cell.shutdown().await;
}
