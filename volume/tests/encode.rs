//! Encodes that do not get stuck: a sealed volume is coded by any holder of a healthy
//! replica, read locally or from another holder, and a volume sealed when its fragments
//! could not be placed is coded once they can be.

mod common;

use cellar_blockstore::ExtentId;
use cellar_master::config::MasterConfig;
use cellar_proto::master as mpb;
use common::{Cell, Written, mixed_sizes};

/// Reads every block through the (coded) volume record and compares the bytes.
async fn assert_reads_back(cell: &Cell, v: &mpb::Volume, blocks: &[Written]) {
    let reader = cell.reader();
    for b in blocks {
        let got = reader
            .read(v, &b.key(), b.offset_bytes, b.length_bytes)
            .await
            .unwrap_or_else(|e| panic!("block at {} of volume {}: {e:?}", b.offset_bytes, v.volume_id));
        assert_eq!(got.payload, b.payload, "block at {} differs", b.offset_bytes);
    }
}

/// The planner runs often and a stopped server is silent after a second.
fn quick_planner(m: &mut MasterConfig) {
    m.planner_interval_ms = 100;
    m.node_silent_after_ms = 1_000;
}

/// Cuts the replica on `place` down to its first record (a holder that missed the rest).
fn shorten_replica(cell: &Cell, place: &mpb::Extent, volume_id: u64, first: &Written) {
    let disk = cell.handle(place.node_id).shared.disks.get(place.disk_id).expect("disk");
    let id = ExtentId::replica(volume_id);
    disk.delete(id).expect("delete replica");
    disk.create_replica(volume_id).expect("create replica");
    disk.append(id, Some(0), &first.sha256, &first.payload).expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encode_whose_local_and_next_replicas_are_short_reads_the_full_one_remotely() {
    let cell = Cell::start(3, 2, 2, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(30), 11).await;
    assert_eq!(v.replicas.len(), 3);
    // The encode starts on the first holder: its own replica and the second holder's are
    // short, so only the third one, on another server, can be coded from.
    shorten_replica(&cell, &v.replicas[0], v.volume_id, &blocks[0]);
    shorten_replica(&cell, &v.replicas[1], v.volume_id, &blocks[0]);

    assert_eq!(cell.seal(v.volume_id).await.state(), cellar_proto::common::VolumeState::Sealed);
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    assert_eq!(coded.fragments.len(), 9);
    assert_reads_back(&cell, &coded, &blocks).await;
    cell.wait_tasks_done().await;
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_encode_queued_on_a_stopped_holder_is_run_by_another_holder() {
    // Three disks per server: with one server of a zone gone, the zone still has the three
    // disks rs-6-3 puts there.
    let mut cell = Cell::start_with(3, 2, 3, |_| {}, quick_planner).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(30), 12).await;
    let gone = v.replicas[0].node_id;
    cell.stop(gone).await;

    // Sealed at once, the encode is queued on the stopped first holder.
    assert_eq!(cell.seal(v.volume_id).await.state(), cellar_proto::common::VolumeState::Sealed);
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    assert!(coded.fragments.iter().all(|f| f.node_id != gone), "a fragment went to the stopped server");
    assert_reads_back(&cell, &coded, &blocks).await;
    assert_eq!(cell.status().await.tasks_failed, 0);
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_volume_sealed_when_fragments_could_not_be_placed_is_coded_once_disks_exist() {
    // One disk per server: two per zone, where rs-6-3 needs three.
    let mut cell = Cell::start_with(3, 2, 1, |_| {}, quick_planner).await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(20), 13).await;
    assert_eq!(cell.seal(v.volume_id).await.state(), cellar_proto::common::VolumeState::Sealed);
    let status = cell.status().await;
    assert_eq!(status.tasks_open, 0, "no encode can be queued without a placement");

    for zone in ["zone-1", "zone-2", "zone-3"] {
        cell.add_server(zone, 1, |_| {}).await;
    }
    let coded = cell
        .wait_volume(v.volume_id, "coded", |v| v.state() == cellar_proto::common::VolumeState::Coded)
        .await;
    assert_eq!(coded.fragments.len(), 9);
    assert_reads_back(&cell, &coded, &blocks).await;
    cell.wait_tasks_done().await;
    cell.shutdown().await;
}
