//! A disk near full keeps room for its catalog, and a delete the catalog cannot record
//! leaves the extent live rather than half gone.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cellar_blockstore::io::IoChoice;
use cellar_blockstore::io::fault::{FaultBackend, FaultPlan};
use cellar_blockstore::{Disk, DiskOptions, Error, ExtentId};
use common::{Backend, bytes, sha};

for_each_backend!(
    data_writes_stop_at_the_reserve_and_the_catalog_still_writes,
    the_trash_floor_sits_above_the_reserve,
    a_fragment_at_the_reserve_gives_up_the_oldest_trash_first,
    a_delete_the_catalog_refuses_leaves_the_extent_live,
);

const MIB: u64 = 1 << 20;
const RESERVE_BYTES: u64 = 8 * MIB;
const CAPACITY_BYTES: u64 = 1 << 30;

fn open_with_reserve(dir: &Path, backend: Backend, reserve_bytes: u64) -> (Disk, Arc<FaultPlan>) {
    open_with(dir, backend, DiskOptions { reserve_bytes, ..DiskOptions::default() })
}

fn open_with(dir: &Path, backend: Backend, options: DiskOptions) -> (Disk, Arc<FaultPlan>) {
    let plan = FaultPlan::new();
    let inner = backend.choice().build().expect("backend");
    let io = IoChoice::Custom(Arc::new(FaultBackend::new(inner, plan.clone())));
    let disk = Disk::open(dir, DiskOptions { io, ..options }).expect("open");
    (disk, plan)
}

fn data_writes_stop_at_the_reserve_and_the_catalog_still_writes(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_with_reserve(dir.path(), backend, RESERVE_BYTES);
    let payload = bytes(MIB as usize, 1);
    // Room for a little more than one 1 MiB record above the reserve.
    plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES + MIB + MIB / 2);
    let r = disk.create_replica(1).expect("create replica");
    disk.append(r, None, &sha(&payload), &payload).expect("append above the reserve");
    let stat = disk.stat().expect("stat");
    assert_eq!(
        (stat.capacity_bytes, stat.free_bytes, stat.reserve_bytes),
        (CAPACITY_BYTES, RESERVE_BYTES + MIB + MIB / 2, RESERVE_BYTES)
    );

    // Half a MiB above the reserve: neither a 1 MiB append nor a 1 MiB fragment fits.
    plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES + MIB / 2);
    let before = common::snapshot(dir.path());
    let refused = disk.append(r, None, &sha(&payload), &payload);
    assert!(matches!(refused, Err(Error::ReserveReached { .. })), "{refused:?}");
    let refused = disk.create_fragment(2, 0, MIB, 4096);
    assert!(matches!(refused, Err(Error::ReserveReached { .. })), "{refused:?}");
    assert!(matches!(disk.extent_info(ExtentId::fragment(2, 0)), Err(Error::UnknownExtent(_))));
    assert_eq!(common::snapshot(dir.path()), before, "a refused write changes no file");
    let message = disk.append(r, None, &sha(&payload), &payload).expect_err("refused").to_string();
    assert!(message.contains("reserve"), "the error says why: {message}");
    // The refused append left the replica writable and its end where it was.
    let small = bytes(4096, 2);
    let at = disk.append(r, None, &sha(&small), &small).expect("a small append still fits");
    assert_eq!(at.offset_bytes, (cellar_blockstore::RECORD_HEADER_BYTES + payload.len()) as u64);
    assert_eq!(disk.read_record(r, at.offset_bytes).expect("read").payload, small);

    // At the reserve: no data write at all, but what takes no room for data goes on: a
    // seal, a delete, a trash purge.
    plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES);
    assert!(matches!(disk.append(r, None, &sha(&small), &small), Err(Error::ReserveReached { .. })));
    assert!(matches!(disk.create_replica(3), Err(Error::ReserveReached { .. })));
    disk.seal_replica(r, None).expect("seal at the reserve");
    // An append that could not have been made anyway says why, not "disk full".
    let sealed = disk.append(r, None, &sha(&small), &small);
    assert!(matches!(sealed, Err(Error::Sealed(_))), "{sealed:?}");
    let other = disk.create_replica(4);
    assert!(matches!(other, Err(Error::ReserveReached { .. })), "{other:?}");
    disk.delete(r).expect("delete at the reserve");
    let purged = disk.purge_trash(Duration::ZERO).expect("purge at the reserve");
    assert_eq!(purged.purged, 1);

    // Room again (the purge gave it back): writes go on. A fragment is allocated on the
    // device whole at its create, so that none of its chunks' writes can find the file
    // system full.
    plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES + 4 * MIB);
    let f = disk.create_fragment(2, 0, MIB, 4096).expect("create fragment");
    let allocated_bytes = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(disk.extent_file_path(f)).expect("stat fragment").blocks() * 512
    };
    assert!(allocated_bytes > MIB, "{allocated_bytes} bytes allocated for a fragment of 1 MiB");
    disk.write_fragment(f, 0, &payload).expect("write fragment");

    // No reserve: only the file system's own limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_with_reserve(dir.path(), backend, 0);
    plan.fs_space(CAPACITY_BYTES, 0);
    let r = disk.create_replica(1).expect("create replica without a reserve");
    disk.append(r, None, &sha(&payload), &payload).expect("append without a reserve");
}

fn the_trash_floor_sits_above_the_reserve(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_with_reserve(dir.path(), backend, RESERVE_BYTES);
    plan.fs_space(CAPACITY_BYTES, CAPACITY_BYTES / 2);
    for volume in 1..=2 {
        let r = disk.create_replica(volume).expect("create");
        let payload = bytes(4096, volume);
        disk.append(r, None, &sha(&payload), &payload).expect("append");
        disk.delete(r).expect("delete");
    }
    let retention = Duration::from_secs(3600);
    // 1% of the capacity free, and more than the reserve: a floor of 1% alone would keep
    // the trash, but data writes stop at the reserve, so the floor counts from there.
    let one_percent = CAPACITY_BYTES / 100;
    plan.fs_space(CAPACITY_BYTES, one_percent + RESERVE_BYTES / 2);
    let report = disk.purge_trash_keeping_free(retention, 1).expect("purge");
    assert!(report.early >= 1, "{report:?}");
    // Well above both: the trash waits for its retention.
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_with_reserve(dir.path(), backend, RESERVE_BYTES);
    let r = disk.create_replica(1).expect("create");
    disk.delete(r).expect("delete");
    plan.fs_space(CAPACITY_BYTES, one_percent + 2 * RESERVE_BYTES);
    let report = disk.purge_trash_keeping_free(retention, 1).expect("purge");
    assert_eq!((report.purged, report.kept), (0, 1), "{report:?}");
}

fn a_fragment_at_the_reserve_gives_up_the_oldest_trash_first(backend: Backend) {
    for purge_trash_for_fragments in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let options =
            DiskOptions { reserve_bytes: RESERVE_BYTES, purge_trash_for_fragments, ..DiskOptions::default() };
        let (disk, plan) = open_with(dir.path(), backend, options);
        plan.fs_space(CAPACITY_BYTES, CAPACITY_BYTES / 2);
        let payload = bytes(MIB as usize, 1);
        // Three deleted replicas of 1 MiB, volume 1's deleted first.
        for volume in 1..=3 {
            let r = disk.create_replica(volume).expect("create");
            disk.append(r, None, &sha(&payload), &payload).expect("append");
            disk.delete(r).expect("delete");
        }
        let trash = disk.list_trash().expect("trash");
        let live = disk.create_replica(9).expect("create");

        // Half a MiB above the reserve: neither a 1 MiB append nor a 1 MiB fragment fits.
        plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES + MIB / 2);
        let stat = disk.stat().expect("stat");
        assert_eq!(stat.data_room_bytes, MIB / 2, "the trash is not counted as room");
        // An append never purges the trash.
        let refused = disk.append(live, None, &sha(&payload), &payload);
        assert!(matches!(refused, Err(Error::ReserveReached { .. })), "{refused:?}");
        assert_eq!(disk.list_trash().expect("trash"), trash, "an append takes no trash");
        let created = disk.create_fragment(20, 1, MIB, 4096);
        if !purge_trash_for_fragments {
            assert!(matches!(created, Err(Error::ReserveReached { .. })), "{created:?}");
            assert_eq!(disk.list_trash().expect("trash"), trash, "the trash waits for its retention");
            assert_eq!(disk.stat().expect("stat").trash_purged_for_fragments, 0);
            continue;
        }
        let f = created.expect("the fragment fits once the oldest delete is given up");
        // A create refused for another reason gives no trash up.
        let trash_now = disk.list_trash().expect("trash");
        let exists = disk.create_fragment(20, 1, MIB, 4096);
        assert!(matches!(exists, Err(Error::ExtentExists(_))), "{exists:?}");
        assert_eq!(disk.list_trash().expect("trash"), trash_now);
        disk.write_fragment(f, 0, &payload).expect("write fragment");
        let left = disk.list_trash().expect("trash");
        assert_eq!(left, trash[1..].to_vec(), "only the oldest entry went, as much as the fragment needed");
        assert!(!dir.path().join("trash").join(trash[0].file_name()).exists());
        let stat = disk.stat().expect("stat");
        assert_eq!((stat.trash_purged_for_fragments, stat.trash_extents), (1, 2));

        // With no trash left to give, a fragment that does not fit is refused.
        let report = disk.purge_trash_for_space_at(u64::MAX, Duration::ZERO, None).expect("purge the rest");
        assert_eq!(report.purged, 2);
        plan.fs_space(CAPACITY_BYTES, RESERVE_BYTES);
        let refused = disk.create_fragment(20, 2, MIB, 4096);
        assert!(matches!(refused, Err(Error::ReserveReached { .. })), "{refused:?}");
    }
}

fn a_delete_the_catalog_refuses_leaves_the_extent_live(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_with_reserve(dir.path(), backend, 0);
    let r = disk.create_replica(1).expect("create replica");
    let first = bytes(10_000, 1);
    disk.append(r, None, &sha(&first), &first).expect("append");
    let f = disk.create_fragment(2, 3, 8192, 4096).expect("create fragment");
    disk.write_fragment(f, 0, &bytes(4096, 2)).expect("write fragment");

    plan.catalog_full();
    let before = common::snapshot(dir.path());
    for id in [r, f] {
        let refused = disk.delete(id);
        assert!(matches!(refused, Err(Error::Catalog { .. })), "{refused:?}");
        assert!(disk.extent_info(id).is_ok(), "not recorded, so not deleted: {id} stays live");
    }
    assert_eq!(common::snapshot(dir.path()), before, "nothing moved to the trash");
    assert_eq!(disk.trash_usage(), (0, 0));
    // Both still serve reads and take writes (appends need no catalog write).
    assert_eq!(disk.read_record(r, 0).expect("read").payload, first);
    let second = bytes(5000, 3);
    disk.append(r, None, &sha(&second), &second).expect("append after a refused delete");
    disk.write_fragment(f, 4096, &bytes(4096, 4)).expect("write fragment after a refused delete");

    // The catalog writes again: the delete goes through, and a new fragment of the same
    // name can be made (an encode's retry; before, the name stayed taken until a restart).
    plan.clear();
    disk.delete(f).expect("delete fragment");
    disk.create_fragment(2, 3, 8192, 4096).expect("the name is free again");
    disk.delete(r).expect("delete replica");
    assert_eq!(disk.trash_usage().0, 2);
    drop(disk);
    let (disk, _plan) = open_with_reserve(dir.path(), backend, 0);
    assert!(disk.open_report().missing.is_empty() && disk.open_report().damaged.is_empty());
    assert!(matches!(disk.extent_info(r), Err(Error::UnknownExtent(_))));
    assert!(disk.extent_info(ExtentId::fragment(2, 3)).is_ok());
}
