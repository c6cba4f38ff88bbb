//! Deletion goes to the trash; the trash is purged only after its retention time.

mod common;

use std::time::Duration;

use cellar_blockstore::{Error, ExtentId, now_unix_ms};
use common::{Backend, bytes, open, sha};

for_each_backend!(trash_keeps_deleted_extents_for_the_retention_time, stat_counts_extents_and_bytes,);

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
