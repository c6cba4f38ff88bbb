//! What a volume server does with its disks' own housekeeping: the trash is purged after
//! its retention (and its size reaches the metrics and the master), and damage the disks'
//! recovery found at open is reported to the master.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use cellar_blockstore::catalog::{Catalog, ExtentEntry};
use cellar_blockstore::{EXTENT_DATA_OFFSET_BYTES, ExtentId, RECORD_HEADER_BYTES};
use cellar_proto::master as mpb;
use common::{Cell, WAIT};

/// The master's record of disk `disk_id`, from its status.
async fn master_disk(cell: &Cell, disk_id: u64) -> mpb::Disk {
    let status =
        cell.client.call(|mut c| async move { c.status(mpb::StatusRequest {}).await }).await.expect("status");
    status.disks.into_iter().find(|d| d.disk_id == disk_id).expect("disk in status")
}

/// The value of the metric line that starts with `prefix` in `text`.
fn metric(text: &str, prefix: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok())
}

/// Polls `check` every 50 ms until it holds; fails after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_extents_are_purged_after_the_retention_and_trash_bytes_are_reported() {
    // A retention of an hour first: the deleted extent waits in the trash.
    let mut cell = Cell::start(3, 1, 2, |c| c.trash_retention = Duration::from_secs(3600)).await;
    let v = cell.allocate("test").await;
    // A stray replica of the volume on a disk its placement does not name (what a
    // superseded copy leaves behind): deletable through the master's delete task.
    let node_id = v.replicas[0].node_id;
    let handle = cell.handle(node_id);
    let (disk_id, disk) = handle
        .shared
        .disks
        .with_ids()
        .into_iter()
        .find(|(id, _)| !v.replicas.iter().any(|r| r.disk_id == *id))
        .expect("a second disk");
    let stray = disk.create_replica(v.volume_id).expect("create stray replica");
    let payload = vec![7u8; 100_000];
    disk.append(stray, None, &[1u8; 32], &payload).expect("append");
    let volume_id = v.volume_id;
    cell.client
        .call(|mut c| async move {
            let task = mpb::Task {
                kind: cellar_proto::master::TaskKind::Delete.into(),
                volume_id,
                part: cellar_proto::common::ExtentPart::Replica.into(),
                source: Some(mpb::Extent { node_id, disk_id }),
                ..Default::default()
            };
            c.enqueue_task(mpb::EnqueueTaskRequest { task: Some(task), request_id: None }).await
        })
        .await
        .expect("enqueue delete");
    cell.wait_tasks_done().await;
    let (entries, trash_bytes) = disk.trash_usage();
    assert_eq!(entries, 1, "the delete task moved the stray replica to the trash");
    assert!(trash_bytes > payload.len() as u64);
    let gauge = format!("cellar_volume_trash_bytes{{disk=\"{disk_id}\"}} ");
    let text = cellar_volume::metrics::render(&handle.shared).await;
    assert_eq!(metric(&text, &gauge), Some(trash_bytes), "{text}");
    wait_until("the master knows the trash bytes", || async {
        let d = master_disk(&cell, disk_id).await;
        d.trash_bytes == trash_bytes && d.trash_extents == 1
    })
    .await;
    drop(disk);

    // Restarted with a retention of a second: the purge unlinks it (the trash counted at
    // open), and the gauge, the disk and the master all go back to zero.
    let i = cell.volumes.iter().position(|h| h.node_id == node_id).expect("node");
    cell.configs[i].trash_retention = Duration::from_secs(1);
    cell.restart(node_id).await;
    let shared = cell.handle(node_id).shared.clone();
    let disk = shared.disks.get(disk_id).expect("disk");
    wait_until("the trash is purged", || {
        let disk = disk.clone();
        async move { disk.trash_usage() == (0, 0) }
    })
    .await;
    assert!(disk.list_trash().expect("trash").is_empty());
    let trash_dir = disk.root().join("trash");
    assert_eq!(std::fs::read_dir(&trash_dir).expect("trash dir").count(), 0, "the file is unlinked");
    let text = cellar_volume::metrics::render(&shared).await;
    assert_eq!(metric(&text, &gauge), Some(0), "{text}");
    assert_eq!(metric(&text, "cellar_volume_trash_purged_total{unit=\"extents\"} "), Some(1), "{text}");
    assert_eq!(metric(&text, "cellar_volume_trash_purges_total{outcome=\"error\"} "), Some(0), "{text}");
    wait_until("the master sees an empty trash", || async {
        let d = master_disk(&cell, disk_id).await;
        d.trash_bytes == 0 && d.trash_extents == 0
    })
    .await;
    cell.shutdown().await;
}

/// Waits for the disk at `dir` to be closed, then sets its replica `id`'s durable
/// watermark back to 0 (a power loss that lost the unsynced updates of it).
fn set_watermark_to_zero(dir: &Path, id: ExtentId) {
    let deadline = std::time::Instant::now() + WAIT;
    let catalog = loop {
        match Catalog::open(&dir.join("catalog")) {
            Ok(c) => break c,
            // The stopped server's disk closes once its last request is gone.
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "catalog still open");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("open catalog: {e}"),
        }
    };
    let entry = catalog.extent(id).expect("read").expect("entry");
    catalog.put_extent(id, &ExtentEntry { length_bytes: 0, ..entry }).expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn damage_kept_at_open_is_reported_and_later_records_stay_readable() {
    let mut cell = Cell::start(3, 1, 1, |_| {}).await;
    let (v, blocks) = cell.fill_volume(&[1000, 70_000, 3000, 4096, 10], 6).await;
    let victim = v.replicas[0];
    let id = ExtentId::replica(v.volume_id);
    let damaged = blocks[1].clone();
    cell.restart_with(victim.node_id, |config| {
        let dir = &config.disks[0];
        set_watermark_to_zero(dir, id);
        let path = dir.join("extents").join(id.to_string());
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
        let at = EXTENT_DATA_OFFSET_BYTES + damaged.offset_bytes + RECORD_HEADER_BYTES as u64 + 500;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).expect("read");
        file.write_all_at(&[b[0] ^ 0x10], at).expect("flip a bit");
    })
    .await;
    cell.wait_volume(v.volume_id, "the damaged replica's disk reported bad", |v| {
        v.bad_disks.contains(&victim.disk_id)
    })
    .await;
    let disk = cell.handle(victim.node_id).shared.disks.get(victim.disk_id).expect("disk");
    for (i, b) in blocks.iter().enumerate() {
        let read = disk.read_record(id, b.offset_bytes);
        if i == 1 {
            assert!(matches!(read, Err(cellar_blockstore::Error::Corrupt { .. })), "{read:?}");
        } else {
            assert_eq!(read.expect("a record after the damage survives").payload, b.payload, "block {i}");
        }
    }
    // Every block still reads through the reader (the damaged one from another replica).
    let reader = cell.reader();
    for b in &blocks {
        let got = reader.read(&v, &b.key(), b.offset_bytes, b.length_bytes).await.expect("read");
        assert_eq!(got.payload, b.payload);
    }
    cell.shutdown().await;
}
