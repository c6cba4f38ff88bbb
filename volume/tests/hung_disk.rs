//! A disk whose device stopped answering (a read that never returns) is reported failed by
//! its server once an operation has been under way for `disk_hung_after`, while the
//! server's other disks and its heartbeats go on; gets read around it meanwhile; once the
//! device answers again the disk comes back. Before, nothing looked at how long a disk's
//! operations took: a hung disk stayed "ok" and went on being given new extents.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cellar_blockstore::io::fault::{FaultBackend, FaultPlan};
use cellar_blockstore::{ExtentId, IoChoice};
use cellar_proto::common::VolumeState;
use cellar_proto::master::{DiskHealth, NodeState};
use common::{Cell, mixed_sizes};

static PLAN: OnceLock<Arc<FaultPlan>> = OnceLock::new();

const WAIT: Duration = Duration::from_secs(30);

async fn disk_health(cell: &Cell, disk_id: u64) -> DiskHealth {
    let status = cell.status().await;
    status.disks.iter().find(|d| d.disk_id == disk_id).expect("the disk in the status").health()
}

async fn wait_health(cell: &Cell, disk_id: u64, want: DiskHealth) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = disk_health(cell, disk_id).await;
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "disk {disk_id} still {now:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_whose_reads_hang_is_reported_failed_and_comes_back_when_they_return() {
    let cell = Cell::start(3, 2, 2, |c| {
        let plan = PLAN.get_or_init(FaultPlan::new).clone();
        let inner = IoChoice::Pread.build().expect("pread backend");
        c.io = IoChoice::Custom(Arc::new(FaultBackend::new(inner, plan)));
        c.scrub.bytes_per_sec = 0;
        c.disk_hung_after = Duration::from_secs(1);
    })
    .await;
    let (v, blocks) = cell.fill_volume(&mixed_sizes(20), 23).await;
    cell.seal(v.volume_id).await;
    let coded = cell.wait_volume(v.volume_id, "coded", |v| v.state() == VolumeState::Coded).await;
    cell.wait_tasks_done().await;
    let f0 = coded.fragments[0];
    let disk = cell.handle(f0.node_id).shared.disks.get(f0.disk_id).expect("disk");
    let plan = PLAN.get().expect("plan");
    plan.hang_reads_of(&disk.extent_file_path(ExtentId::fragment(v.volume_id, 0)));

    // A get of a block in fragment 0: the read there hangs; the reader goes around it.
    let target =
        blocks.iter().find(|b| b.offset_bytes < coded.size_bytes / 6).expect("a block in fragment 0");
    let got = tokio::time::timeout(
        WAIT,
        cell.reader().read(&coded, &target.key(), target.offset_bytes, target.length_bytes),
    )
    .await
    .expect("the get did not wait for the hung read")
    .expect("read around the hung fragment");
    assert_eq!(got.payload, target.payload);

    // The read still under way makes the disk failed, the node staying up.
    wait_health(&cell, f0.disk_id, DiskHealth::Failed).await;
    let status = cell.status().await;
    let node = status.nodes.iter().find(|n| n.node_id == f0.node_id).expect("node");
    assert_eq!(node.state(), NodeState::Up, "the node's heartbeats went on");
    let others = status.disks.iter().filter(|d| d.disk_id != f0.disk_id);
    assert!(others.clone().all(|d| d.health() == DiskHealth::Ok), "only the hung disk failed: {others:?}");

    // The device answers again: the disk comes back.
    plan.release_hung();
    wait_health(&cell, f0.disk_id, DiskHealth::Ok).await;
    cell.shutdown().await;
}
