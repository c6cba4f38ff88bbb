//! Crash safety: a crash in the middle of an append leaves a torn tail that reopening
//! truncates, and every record whose append returned is still there.

mod common;

use std::os::unix::fs::FileExt;

use cellar_blockstore::{ExtentId, RECORD_HEADER_BYTES};
use common::{Backend, bytes, open, open_faulty, sha};

for_each_backend!(
    torn_tail_is_truncated_at_every_byte_position_of_the_last_record,
    orphan_and_missing_files_are_reported_at_open,
    garbage_past_the_last_record_is_truncated,
);

/// For every prefix length of the last record's bytes that may reach the disk before a
/// crash, reopening keeps every acknowledged record and drops the torn one (or keeps it
/// whole if all of its bytes made it).
fn torn_tail_is_truncated_at_every_byte_position_of_the_last_record(backend: Backend) {
    const PAYLOAD_BYTES: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ExtentId::replica(1);
    let acked: Vec<Vec<u8>> = (0..3).map(|i| bytes(100 + i * 50, i as u64)).collect();
    let mut acked_end = 0;
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(1).expect("create");
        for p in &acked {
            acked_end = disk.append(id, None, &sha(p), p).expect("append").end_bytes();
        }
    }
    let last = bytes(PAYLOAD_BYTES, 99);
    let record_len = (RECORD_HEADER_BYTES + PAYLOAD_BYTES) as u64;
    for written in 0..record_len {
        {
            let (disk, plan) = open_faulty(dir.path(), backend);
            plan.crash_after_bytes(written);
            let result = disk.append(id, None, &sha(&last), &last);
            assert!(result.is_err() && plan.crashed(), "the crash comes before the fsync");
        }
        let disk = open(dir.path(), backend);
        let mut offset = 0;
        for p in &acked {
            let record = disk.read_record(id, offset).expect("acknowledged record survives");
            assert_eq!(record.payload, *p, "written={written}");
            offset += (RECORD_HEADER_BYTES + p.len()) as u64;
        }
        let info = disk.extent_info(id).expect("info");
        assert_eq!(info.length_bytes, acked_end, "torn tail of {written} bytes truncated");
        let truncated = disk.open_report().recovered.iter().map(|(_, r)| r.truncated_bytes).sum::<u64>();
        assert_eq!(truncated, written);
        let file_len = std::fs::metadata(disk.extent_file_path(id)).expect("stat").len();
        assert_eq!(file_len, cellar_blockstore::EXTENT_DATA_OFFSET_BYTES + acked_end);
    }
    // Every byte of the last record arrives: it is whole and stays (the append succeeds,
    // since nothing failed).
    {
        let (disk, plan) = open_faulty(dir.path(), backend);
        plan.crash_after_bytes(record_len);
        disk.append(id, None, &sha(&last), &last).expect("append within the budget");
    }
    let disk = open(dir.path(), backend);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, acked_end + record_len);
    assert_eq!(disk.read_record(id, acked_end).expect("whole record").payload, last);
}

fn garbage_past_the_last_record_is_truncated(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ExtentId::replica(2);
    let end;
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(2).expect("create");
        end = disk.append(id, None, &sha(b"kept"), b"kept").expect("append").end_bytes();
    }
    // Bytes that look like the start of a record (the magic) and then zeros, as a file
    // system may leave after a crash that extended the file.
    let path = dir.path().join("extents").join(id.to_string());
    let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    let at = cellar_blockstore::EXTENT_DATA_OFFSET_BYTES + end;
    file.write_all_at(b"CLRB", at).expect("write");
    file.write_all_at(&[0u8; 5000], at + 4).expect("write");
    drop(file);
    let disk = open(dir.path(), backend);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, end);
    assert_eq!(disk.read_record(id, 0).expect("read").payload, b"kept");
}

fn orphan_and_missing_files_are_reported_at_open(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(1).expect("create");
        disk.create_replica(2).expect("create");
    }
    // A file the catalog never heard of (a create cut short), and a lost file.
    std::fs::write(dir.path().join("extents").join(ExtentId::replica(3).to_string()), b"half")
        .expect("write");
    std::fs::write(dir.path().join("extents").join("notes.txt"), b"operator file").expect("write");
    std::fs::remove_file(dir.path().join("extents").join(ExtentId::replica(2).to_string())).expect("rm");
    let disk = open(dir.path(), backend);
    let report = disk.open_report();
    assert_eq!(report.orphans_trashed, vec![ExtentId::replica(3)]);
    assert_eq!(report.missing, vec![ExtentId::replica(2)]);
    assert_eq!(report.unknown_files.len(), 1);
    assert!(dir.path().join("extents").join("notes.txt").exists(), "unknown files are left alone");
    let trash = disk.list_trash().expect("trash");
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].extent, ExtentId::replica(3));
    assert!(matches!(
        disk.read_record(ExtentId::replica(2), 0),
        Err(cellar_blockstore::Error::UnknownExtent(_))
    ));
    // The orphan's id is free again.
    disk.create_replica(3).expect("create after orphan cleanup");
}
