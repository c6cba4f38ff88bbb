//! Deletion goes to the trash; the trash is purged only after its retention time.

mod common;

use std::time::Duration;

use cellar_blockstore::{Error, ExtentId, TrashSpace, now_unix_ms};
use common::{Backend, bytes, open, sha};

for_each_backend!(
    trash_keeps_deleted_extents_for_the_retention_time,
    stat_counts_extents_and_bytes,
    a_disk_short_of_space_gives_up_its_oldest_trash_first,
);

fn trash_keeps_deleted_extents_for_the_retention_time(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Duration::from_secs(3600);
    let deleted;
    {
        let disk = open(dir.path(), backend);
        let id = disk.create_replica(1).expect("create");
        let payload = bytes(10_000, 1);
        disk.append(id, None, &sha(&payload), &payload).expect("append");
        deleted = disk.delete(id).expect("delete");
        assert_eq!(deleted.extent, id);
        assert!(deleted.size_bytes > 10_000);
        assert!(matches!(disk.read_record(id, 0), Err(Error::UnknownExtent(_))));
        assert!(dir.path().join("trash").join(deleted.file_name()).exists());
        // A purge before the retention time keeps it.
        let report = disk
            .purge_trash_at(deleted.deleted_unix_ms + retention.as_millis() as u64 - 1, retention)
            .expect("purge");
        assert_eq!((report.purged, report.kept), (0, 1));
        // The id can be reused while the old bytes wait in the trash.
        disk.create_replica(1).expect("recreate");
    }
    let disk = open(dir.path(), backend);
    assert_eq!(disk.list_trash().expect("trash"), vec![deleted.clone()], "the trash survives reopen");
    assert_eq!(disk.trash_usage(), (1, deleted.size_bytes), "counted again at open");
    let report = disk.purge_trash(retention).expect("purge now");
    assert_eq!(report.purged, 0, "deleted moments ago: kept");
    let report = disk.purge_trash_at(now_unix_ms() + retention.as_millis() as u64, retention).expect("purge");
    assert_eq!((report.purged, report.freed_bytes), (1, deleted.size_bytes));
    assert!(!dir.path().join("trash").join(deleted.file_name()).exists());
    assert!(disk.list_trash().expect("trash").is_empty());
    assert_eq!(disk.trash_usage(), (0, 0), "a purge takes what it unlinks off the counters");
    assert!(disk.extent_info(ExtentId::replica(1)).is_ok(), "the recreated extent is untouched");
}

fn stat_counts_extents_and_bytes(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let empty = disk.stat().expect("stat");
    assert_eq!((empty.extents, empty.used_bytes), (0, 0));
    assert!(empty.capacity_bytes > 0 && empty.free_bytes <= empty.capacity_bytes);
    let id = disk.create_replica(1).expect("create");
    disk.append(id, None, &sha(b"abc"), b"abc").expect("append");
    disk.create_fragment(2, 0, 8192, 4096).expect("create fragment");
    let stat = disk.stat().expect("stat");
    assert_eq!((stat.extents, stat.open_extents), (2, 2));
    assert_eq!(stat.used_bytes, (4096 + 64 + 3) + (4096 + 8192 + 16));
    disk.seal_replica(id, None).expect("seal");
    disk.delete(ExtentId::fragment(2, 0)).expect("delete");
    let stat = disk.stat().expect("stat");
    assert_eq!((stat.extents, stat.open_extents, stat.trash_extents), (1, 0, 1));
    assert_eq!(stat.trash_bytes, 4096 + 8192 + 16);
}

/// A disk short of free space gives up trash entries still within their retention, the
/// oldest delete first, until what it freed brings it to its floor; one with room keeps
/// them, and a floor of 0% never purges early.
fn a_disk_short_of_space_gives_up_its_oldest_trash_first(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let retention = Duration::from_secs(3600);
    let disk = open(dir.path(), backend);
    let mut deleted = Vec::new();
    for volume in 1..=4 {
        let id = disk.create_replica(volume).expect("create");
        let payload = bytes(10_000, volume);
        disk.append(id, None, &sha(&payload), &payload).expect("append");
        deleted.push(disk.delete(id).expect("delete"));
    }
    let size = deleted[0].size_bytes;
    assert!(deleted.iter().all(|d| d.size_bytes == size));
    // What each gives back when unlinked: its allocated blocks (all four alike).
    let allocated = |name: String| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir.path().join("trash").join(name)).expect("trash file").blocks() * 512
    };
    let block_bytes = allocated(deleted[0].file_name());
    assert!(block_bytes > 0 && deleted.iter().all(|d| allocated(d.file_name()) == block_bytes));
    let now = deleted[3].deleted_unix_ms + 1;
    // Room enough, or no space given: all four kept (deleted a moment ago).
    let roomy = TrashSpace { free_bytes: 10 * size, free_min_bytes: size };
    let report = disk.purge_trash_for_space_at(now, retention, Some(roomy)).expect("purge");
    assert_eq!((report.purged, report.early, report.kept), (0, 0, 4));
    assert_eq!(disk.purge_trash_for_space_at(now, retention, None).expect("purge").purged, 0);
    // Short by a little more than one entry's blocks: the two oldest deletes go, the rest
    // stay.
    let short = TrashSpace { free_bytes: 0, free_min_bytes: block_bytes + 1 };
    let report = disk.purge_trash_for_space_at(now, retention, Some(short)).expect("purge");
    assert_eq!((report.purged, report.early, report.kept, report.freed_bytes), (2, 2, 2, 2 * size));
    let left: Vec<_> = disk.list_trash().expect("trash").iter().map(|t| t.extent).collect();
    assert_eq!(left, vec![deleted[2].extent, deleted[3].extent], "the youngest deletes stay");
    assert_eq!(disk.trash_usage(), (2, 2 * size));
    // From the file system: a floor of 0% keeps them; one of 100% (never met) takes all.
    assert_eq!(disk.purge_trash_keeping_free(retention, 0).expect("purge").purged, 0);
    let report = disk.purge_trash_keeping_free(retention, 100).expect("purge");
    assert_eq!((report.purged, report.early), (2, 2));
    assert_eq!(disk.trash_usage(), (0, 0));
    assert!(std::fs::read_dir(dir.path().join("trash")).expect("trash dir").next().is_none());
}
