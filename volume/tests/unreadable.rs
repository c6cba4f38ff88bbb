//! A sector the device can no longer read (EIO on a read: a latent sector error) under a
//! coded volume's fragment: a get reads around it, and the extent is reported and rebuilt
//! elsewhere, whether a get or the scrubber found it. Before, the read went around it but
//! the error was an I/O error, not a bad extent: nobody reported it, the scrubber logged
//! "could not read" and went on, and the volume stayed one fragment short for good.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cellar_blockstore::io::fault::{FaultBackend, FaultPlan};
use cellar_blockstore::{EXTENT_DATA_OFFSET_BYTES, ExtentId, IoChoice};
use cellar_proto::common::VolumeState;
use cellar_proto::master as mpb;
use cellar_volume::config::VolumeConfig;
use common::{Cell, Written, mixed_sizes};

/// One fault plan per test binary's cell; each test starts its own cell with its own
/// plan (the tweak is a plain `fn`, so the plan is found through a static per test).
static READ_PATH_PLAN: OnceLock<Arc<FaultPlan>> = OnceLock::new();
static SCRUB_PLAN: OnceLock<Arc<FaultPlan>> = OnceLock::new();

fn faulty(config: &mut VolumeConfig, plan: &'static OnceLock<Arc<FaultPlan>>) {
    let plan = plan.get_or_init(FaultPlan::new).clone();
    let inner = IoChoice::Pread.build().expect("pread backend");
    config.io = IoChoice::Custom(Arc::new(FaultBackend::new(inner, plan)));
}

/// A coded volume of mixed blocks, its tasks done; the block to spoil (at least 4 KiB)
/// and the path of the data fragment that holds its first bytes.
async fn coded_volume(cell: &Cell) -> (mpb::Volume, Vec<Written>, Written, std::path::PathBuf, u64) {
    let (v, blocks) = cell.fill_volume(&mixed_sizes(20), 17).await;
    cell.seal(v.volume_id).await;
    let coded = cell.wait_volume(v.volume_id, "coded", |v| v.state() == VolumeState::Coded).await;
    cell.wait_tasks_done().await;
    // Fragment 0 holds volume bytes [0, F): any block starting in it.
    let f0 = coded.fragments[0];
    let fragment_len = coded.size_bytes / 6;
    let target = blocks
        .iter()
        .find(|b| b.payload.len() >= 4096 && b.offset_bytes + 200 < fragment_len)
        .expect("a block of at least 4 KiB in fragment 0")
        .clone();
    let disk = cell.handle(f0.node_id).shared.disks.get(f0.disk_id).expect("disk");
    let path = disk.extent_file_path(ExtentId::fragment(v.volume_id, 0));
    (coded, blocks, target, path, f0.disk_id)
}

/// Waits until fragment 0 is placed away from `bad_disk`, nothing is reported bad and no
/// task is open; then every block reads back whole, none degraded.
async fn wait_rebuilt_and_read(cell: &Cell, volume_id: u64, bad_disk: u64, blocks: &[Written]) {
    let rebuilt = cell
        .wait_volume(volume_id, "fragment 0 rebuilt on another disk", |v| {
            v.fragments.first().is_some_and(|f| f.disk_id != bad_disk) && v.bad_disks.is_empty()
        })
        .await;
    cell.wait_tasks_done().await;
    let reader = cell.reader();
    for b in blocks {
        let got = reader
            .read(&rebuilt, &b.key(), b.offset_bytes, b.length_bytes)
            .await
            .unwrap_or_else(|e| panic!("block at {} after the rebuild: {e:?}", b.offset_bytes));
        assert_eq!(got.payload, b.payload, "block at {}", b.offset_bytes);
        assert!(!got.degraded, "block at {} still read degraded after the rebuild", b.offset_bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_over_an_unreadable_sector_reads_around_it_and_the_fragment_is_rebuilt() {
    let cell = Cell::start(3, 2, 2, |c| {
        faulty(c, &READ_PATH_PLAN);
        c.scrub.bytes_per_sec = 0;
    })
    .await;
    let (coded, blocks, target, path, bad_disk) = coded_volume(&cell).await;
    let plan = READ_PATH_PLAN.get().expect("plan");
    plan.unreadable_at(&path, EXTENT_DATA_OFFSET_BYTES + target.offset_bytes + 100);

    let got = cell
        .reader()
        .read(&coded, &target.key(), target.offset_bytes, target.length_bytes)
        .await
        .expect("read around the unreadable sector");
    assert_eq!(got.payload, target.payload);
    assert!(got.degraded, "the unreadable chunk forced a degraded read");
    wait_rebuilt_and_read(&cell, coded.volume_id, bad_disk, &blocks).await;
    cell.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrubber_reports_an_unreadable_sector_and_the_fragment_is_rebuilt() {
    let cell = Cell::start(3, 2, 2, |c| {
        faulty(c, &SCRUB_PLAN);
        c.scrub.bytes_per_sec = 1_000_000_000;
        c.scrub.period = Duration::from_millis(200);
    })
    .await;
    let (coded, blocks, target, path, bad_disk) = coded_volume(&cell).await;
    let plan = SCRUB_PLAN.get().expect("plan");
    plan.unreadable_at(&path, EXTENT_DATA_OFFSET_BYTES + target.offset_bytes + 100);
    // No get: only the scrubber reads the fragment.
    wait_rebuilt_and_read(&cell, coded.volume_id, bad_disk, &blocks).await;
    cell.shutdown().await;
}
