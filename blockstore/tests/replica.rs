//! Replica extents: record round trips, group commit, sealing, bad input, reopen.

mod common;

use std::sync::{Arc, Barrier};

use cellar_blockstore::{Error, ExtentId, ExtentState, RECORD_HEADER_BYTES, RecordIn};
use common::{Backend, bytes, open, open_faulty, sha, snapshot};

for_each_backend!(
    record_round_trips_at_every_size,
    records_survive_reopen_and_seal_persists,
    concurrent_appenders_share_fsyncs,
    group_commit_under_64_free_running_appenders,
    append_at_wrong_offset_is_refused,
    bad_input_is_a_typed_error_and_changes_nothing,
    seal_truncates_only_at_record_boundaries,
    short_io_still_round_trips,
    failed_write_stops_the_extent_until_reopen,
    scan_yields_every_record_in_order,
    a_batch_of_records_is_written_back_to_back_under_one_fsync,
    a_batch_with_a_bad_record_changes_nothing,
    a_given_payload_crc_goes_into_the_header_as_given,
    reads_into_a_reused_buffer_with_or_without_the_length,
    cached_reads_answer_from_the_page_cache_or_defer,
    direct_and_buffered_appends_interleave_across_block_boundaries_and_reopen,
    bytes_past_a_direct_appends_padding_are_a_torn_tail,
    a_create_cut_short_by_a_failed_write_leaves_the_name_free,
    a_full_disk_fails_the_append_not_the_extent,
);

fn record_round_trips_at_every_size(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(1).expect("create");
    let mut written = Vec::new();
    for (i, size) in [0usize, 1, 4096, 1 << 20, 4 << 20].into_iter().enumerate() {
        let payload = bytes(size, i as u64);
        let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
        assert_eq!(loc.record_len_bytes, (RECORD_HEADER_BYTES + size) as u64);
        written.push((loc.offset_bytes, payload));
    }
    for (offset, payload) in &written {
        let record = disk.read_record(id, *offset).expect("read");
        assert_eq!(record.payload, *payload);
        assert_eq!(record.sha256, sha(payload));
        assert_eq!(record.offset_bytes, *offset);
    }
}

fn records_survive_reopen_and_seal_persists(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut offsets = Vec::new();
    let identity;
    {
        let disk = open(dir.path(), backend);
        identity = disk.identity();
        let id = disk.create_replica(7).expect("create");
        for i in 0..50u64 {
            let payload = bytes(100 + i as usize * 37, i);
            offsets.push((
                disk.append(id, None, &sha(&payload), &payload).expect("append").offset_bytes,
                payload,
            ));
        }
        disk.create_replica(8).expect("create second");
        disk.seal_replica(ExtentId::replica(8), None).expect("seal empty");
    }
    let disk = open(dir.path(), backend);
    assert_eq!(disk.identity(), identity, "a disk keeps its identity");
    let id = ExtentId::replica(7);
    for (offset, payload) in &offsets {
        assert_eq!(disk.read_record(id, *offset).expect("read").payload, *payload);
    }
    assert_eq!(disk.extent_info(id).expect("info").state, ExtentState::Open);
    assert_eq!(disk.extent_info(ExtentId::replica(8)).expect("info").state, ExtentState::Sealed);
    // Appends continue where they left off.
    let end = offsets.last().map(|(o, p)| o + (RECORD_HEADER_BYTES + p.len()) as u64).expect("end");
    let loc = disk.append(id, Some(end), &sha(b"more"), b"more").expect("append after reopen");
    assert_eq!(loc.offset_bytes, end);
    assert!(disk.open_report().missing.is_empty() && disk.open_report().damaged.is_empty());
}

/// 64 appenders line up behind one held-back fsync: they all return, and two fsyncs made
/// them all durable. The first fsync covers what was written when it began; it is held
/// back until all 64 records are written, so the second fsync covers all the rest.
fn concurrent_appenders_share_fsyncs(backend: Backend) {
    const APPENDERS: usize = 64;
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let disk = Arc::new(disk);
    let id = disk.create_replica(3).expect("create");
    let syncs_before = plan.syncs();
    // Each small append is one write; the first fsync waits for all of them.
    plan.hold_next_sync_until_writes(APPENDERS as u64);
    let barrier = Arc::new(Barrier::new(APPENDERS));
    let threads: Vec<_> = (0..APPENDERS)
        .map(|i| {
            let (disk, barrier) = (disk.clone(), barrier.clone());
            std::thread::spawn(move || {
                let payload = bytes(4096, i as u64);
                barrier.wait();
                (disk.append(id, None, &sha(&payload), &payload).expect("append"), payload)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().expect("appender")).collect();
    assert_eq!(plan.syncs() - syncs_before, 2, "two fsyncs covered all 64 appends");
    let mut offsets: Vec<u64> = results.iter().map(|(loc, _)| loc.offset_bytes).collect();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), APPENDERS, "every append got its own offset");
    for (loc, payload) in &results {
        assert_eq!(disk.read_record(id, loc.offset_bytes).expect("read").payload, *payload);
    }
}

fn group_commit_under_64_free_running_appenders(backend: Backend) {
    const APPENDERS: u64 = 64;
    const PER_APPENDER: u64 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let disk = Arc::new(disk);
    let id = disk.create_replica(4).expect("create");
    let syncs_before = plan.syncs();
    let threads: Vec<_> = (0..APPENDERS)
        .map(|t| {
            let disk = disk.clone();
            std::thread::spawn(move || {
                (0..PER_APPENDER)
                    .map(|i| {
                        let payload = bytes(512 + (i as usize % 7) * 100, t * 1000 + i);
                        (disk.append(id, None, &sha(&payload), &payload).expect("append"), payload)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = threads.into_iter().flat_map(|t| t.join().expect("appender")).collect();
    let syncs = plan.syncs() - syncs_before;
    assert!(syncs <= APPENDERS * PER_APPENDER, "never more fsyncs than appends");
    all.sort_by_key(|(loc, _)| loc.offset_bytes);
    let mut expected_offset = 0;
    for (loc, payload) in &all {
        assert_eq!(loc.offset_bytes, expected_offset, "records are contiguous");
        expected_offset = loc.end_bytes();
        assert_eq!(disk.read_record(id, loc.offset_bytes).expect("read").payload, *payload);
    }
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, expected_offset);
}

fn append_at_wrong_offset_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(5).expect("create");
    let loc = disk.append(id, Some(0), &sha(b"a"), b"a").expect("append at 0");
    let before = snapshot(dir.path());
    match disk.append(id, Some(0), &sha(b"b"), b"b") {
        Err(Error::OffsetMismatch { expected_bytes: 0, end_bytes, .. }) => {
            assert_eq!(end_bytes, loc.end_bytes())
        }
        other => panic!("expected OffsetMismatch, got {other:?}"),
    }
    assert_eq!(snapshot(dir.path()), before);
}

fn bad_input_is_a_typed_error_and_changes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(9).expect("create");
    let loc = disk.append(id, None, &sha(b"x"), b"x").expect("append");
    disk.create_replica(10).expect("create");
    disk.seal_replica(ExtentId::replica(10), None).expect("seal");
    let before = snapshot(dir.path());

    let too_big = vec![0u8; disk.block_size_max_bytes() as usize + 1];
    assert!(matches!(
        disk.append(id, None, &sha(&too_big), &too_big),
        Err(Error::RecordTooLarge { size_bytes, limit_bytes }) if size_bytes == limit_bytes + 1
    ));
    assert!(matches!(
        disk.read_record(id, loc.end_bytes()),
        Err(Error::OffsetPastEnd { offset_bytes, end_bytes, .. }) if offset_bytes == loc.end_bytes() && end_bytes == loc.end_bytes()
    ));
    assert!(matches!(disk.read_record(id, u64::MAX / 2), Err(Error::OffsetPastEnd { .. })));
    // Offsets whose sum with a length overflows are past the end too, on every read path
    // (they must not wrap around into a read of real data elsewhere in the file).
    let mut buf = Vec::new();
    for offset in [u64::MAX, u64::MAX - 3, u64::MAX - loc.record_len_bytes + 1] {
        assert!(matches!(disk.read_record(id, offset), Err(Error::OffsetPastEnd { .. })), "{offset}");
        for hint in [None, Some(loc.record_len_bytes)] {
            assert!(
                matches!(disk.read_record_into(id, offset, hint, &mut buf), Err(Error::OffsetPastEnd { .. })),
                "{offset} {hint:?}"
            );
        }
        assert!(disk.read_record_cached(id, offset, loc.record_len_bytes, &mut buf).expect("read").is_none());
    }
    let unknown = ExtentId::replica(404);
    assert!(
        matches!(disk.append(unknown, None, &sha(b"x"), b"x"), Err(Error::UnknownExtent(e)) if e == unknown)
    );
    assert!(matches!(disk.read_record(unknown, 0), Err(Error::UnknownExtent(_))));
    assert!(matches!(disk.delete(unknown), Err(Error::UnknownExtent(_))));
    assert!(matches!(
        disk.append(ExtentId::replica(10), None, &sha(b"x"), b"x"),
        Err(Error::Sealed(e)) if e == ExtentId::replica(10)
    ));
    assert!(matches!(disk.create_replica(9), Err(Error::ExtentExists(_))));
    assert!(matches!(disk.read_fragment(id, 0, 1), Err(Error::WrongKind(..))));
    assert!(matches!(disk.seal_replica(id, Some(loc.end_bytes() + 1)), Err(Error::BadSealLength { .. })));
    assert_eq!(snapshot(dir.path()), before, "refused operations changed nothing on disk");
    assert_eq!(disk.read_record(id, 0).expect("read").payload, b"x");
}

fn seal_truncates_only_at_record_boundaries(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(11).expect("create");
    let a = disk.append(id, None, &sha(b"first"), b"first").expect("append");
    let b = disk.append(id, None, &sha(b"second"), b"second").expect("append");
    let before = snapshot(dir.path());
    assert!(matches!(
        disk.seal_replica(id, Some(a.end_bytes() - 1)),
        Err(Error::BadSealLength { reason, .. }) if reason.contains("boundary")
    ));
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(disk.seal_replica(id, Some(a.end_bytes())).expect("seal"), a.end_bytes());
    assert!(matches!(disk.read_record(id, b.offset_bytes), Err(Error::OffsetPastEnd { .. })));
    assert_eq!(disk.read_record(id, 0).expect("read").payload, b"first");
    // Sealing again at the same length is a no-op; at another length an error.
    assert_eq!(disk.seal_replica(id, None).expect("reseal"), a.end_bytes());
    assert!(matches!(disk.seal_replica(id, Some(0)), Err(Error::BadSealLength { .. })));
    drop(disk);
    let disk = open(dir.path(), backend);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, a.end_bytes());
    assert_eq!(disk.read_record(id, 0).expect("read").payload, b"first");
}

fn short_io_still_round_trips(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let id = disk.create_replica(12).expect("create");
    plan.short_io(1000);
    let payload = bytes(100_000, 12);
    let loc = disk.append(id, None, &sha(&payload), &payload).expect("append with short writes");
    assert_eq!(disk.read_record(id, loc.offset_bytes).expect("read with short reads").payload, payload);
}

fn failed_write_stops_the_extent_until_reopen(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let good;
    {
        let (disk, plan) = open_faulty(dir.path(), backend);
        let id = disk.create_replica(13).expect("create");
        good = disk.append(id, None, &sha(b"good"), b"good").expect("append");
        // A large record is written as header then payload: the header write succeeds and
        // the payload write fails.
        plan.fail_after_ops(1);
        let doomed = bytes(100_000, 13);
        let err = disk.append(id, None, &sha(&doomed), &doomed).expect_err("append must fail");
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        plan.clear();
        assert!(matches!(disk.append(id, None, &sha(b"later"), b"later"), Err(Error::Failed(_))));
        assert!(disk.extent_info(id).expect("info").failed);
        // Reads of durable records still work.
        assert_eq!(disk.read_record(id, 0).expect("read").payload, b"good");
    }
    let disk = open(dir.path(), backend);
    let id = ExtentId::replica(13);
    let report = disk.open_report();
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    assert_eq!(report.recovered[0].1.truncated_bytes, RECORD_HEADER_BYTES as u64);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, good.end_bytes());
    let loc = disk.append(id, None, &sha(b"after"), b"after").expect("append after recovery");
    assert_eq!(loc.offset_bytes, good.end_bytes());
}

fn a_create_cut_short_by_a_failed_write_leaves_the_name_free(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    // The file is made, then its header's write fails (as on a full disk).
    plan.fail_after_ops(0);
    let err = disk.create_replica(30).expect_err("the create must fail");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let err = disk.create_fragment(30, 2, 1 << 20, 64 << 10).expect_err("the create must fail");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    plan.clear();
    // The device failed those writes: the disk counts them (its server reports it failed).
    assert_eq!(disk.stat().expect("stat").write_faults, 2);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("extents"))
        .expect("extents dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "failed creates left files: {left:?}");
    // A retry is not refused as "already exists" (it was, until the next open).
    let id = disk.create_replica(30).expect("create again");
    disk.append(id, None, &sha(b"after"), b"after").expect("append");
    let f = disk.create_fragment(30, 2, 1 << 20, 64 << 10).expect("create the fragment again");
    assert!(!disk.extent_info(f).expect("info").failed);
}

fn a_full_disk_fails_the_append_not_the_extent(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ExtentId::replica(40);
    let (good, small);
    {
        let (disk, plan) = open_faulty(dir.path(), backend);
        disk.create_replica(40).expect("create");
        good = disk.append(id, None, &sha(b"good"), b"good").expect("append");
        // Out of space: each write gets half of its bytes in, then ENOSPC. A large (direct)
        // and a small (buffered) append fail, leaving bytes past the end.
        plan.disk_full();
        for payload in [bytes(100_000, 40), bytes(3000, 41)] {
            let err = disk.append(id, None, &sha(&payload), &payload).expect_err("no room");
            assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        }
        // A create out of space is no device fault either.
        let err = disk.create_replica(41).expect_err("no room");
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        plan.clear();
        let info = disk.extent_info(id).expect("info");
        assert!(!info.failed, "a full disk failed the extent: {info:?}");
        let stat = disk.stat().expect("stat");
        assert_eq!((stat.failed_extents, stat.write_faults), (0, 0), "a full disk counted as failing");
        // Room again: appends go on where the last acknowledged record ended.
        small = disk.append(id, None, &sha(b"small"), b"small").expect("append once there is room");
        assert_eq!(small.offset_bytes, good.end_bytes());
        assert_eq!(disk.read_record(id, 0).expect("read").payload, b"good");
        assert_eq!(disk.read_record(id, small.offset_bytes).expect("read").payload, b"small");
    }
    // Reopened: the acknowledged records, and nothing of the failed appends' bytes.
    let disk = open(dir.path(), backend);
    let payloads: Vec<Vec<u8>> =
        disk.scan_replica(id).expect("scan").map(|r| r.expect("record").payload).collect();
    assert_eq!(payloads, vec![b"good".to_vec(), b"small".to_vec()]);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, small.end_bytes());
}

fn scan_yields_every_record_in_order(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(14).expect("create");
    let payloads: Vec<Vec<u8>> = (0..30).map(|i| bytes(i * 111, i as u64)).collect();
    for p in &payloads {
        disk.append(id, None, &sha(p), p).expect("append");
    }
    let scanned: Vec<_> = disk.scan_replica(id).expect("scan").map(|r| r.expect("record")).collect();
    assert_eq!(scanned.len(), payloads.len());
    for (record, payload) in scanned.iter().zip(&payloads) {
        assert_eq!(record.payload, *payload);
        assert_eq!(record.header.sha256, sha(payload));
    }
}

fn a_batch_of_records_is_written_back_to_back_under_one_fsync(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let id = disk.create_replica(20).expect("create");
    let first = disk.append(id, None, &sha(b"first"), b"first").expect("append");
    // Small records (written together) around large ones (written in place).
    let payloads: Vec<Vec<u8>> = [0usize, 1, 4096, 200 << 10, 10, 1 << 20, 64 << 10, 3]
        .iter()
        .enumerate()
        .map(|(i, n)| bytes(*n, i as u64))
        .collect();
    let keys: Vec<[u8; 32]> = payloads.iter().map(|p| sha(p)).collect();
    let batch: Vec<RecordIn<'_>> = keys
        .iter()
        .zip(&payloads)
        .map(|(sha256, payload)| RecordIn { sha256, payload, payload_crc32: None })
        .collect();
    let syncs_before = plan.syncs();
    let locations = disk.append_records(id, Some(first.end_bytes()), &batch).expect("append batch");
    assert_eq!(plan.syncs() - syncs_before, 1, "one fsync for the whole batch");
    let mut at = first.end_bytes();
    for (loc, payload) in locations.iter().zip(&payloads) {
        assert_eq!(loc.offset_bytes, at, "back to back");
        assert_eq!(loc.record_len_bytes, (RECORD_HEADER_BYTES + payload.len()) as u64);
        at = loc.end_bytes();
        let record = disk.read_record(id, loc.offset_bytes).expect("read");
        assert_eq!(record.payload, *payload);
        assert_eq!(record.sha256, sha(payload));
    }
    drop(disk);
    let disk = open(dir.path(), backend);
    let scanned: Vec<Vec<u8>> =
        disk.scan_replica(id).expect("scan").map(|r| r.expect("record").payload).collect();
    assert_eq!(scanned.len(), payloads.len() + 1, "every record survives a reopen");
    assert_eq!(&scanned[1..], &payloads[..]);
}

fn a_batch_with_a_bad_record_changes_nothing(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(21).expect("create");
    disk.append(id, None, &sha(b"kept"), b"kept").expect("append");
    let before = snapshot(dir.path());
    let ok = bytes(100, 1);
    let too_big = bytes((4 << 20) + 1, 2);
    let (k1, k2) = (sha(&ok), sha(&too_big));
    let batch = [
        RecordIn { sha256: &k1, payload: &ok, payload_crc32: None },
        RecordIn { sha256: &k2, payload: &too_big, payload_crc32: None },
    ];
    assert!(matches!(disk.append_records(id, None, &batch), Err(Error::RecordTooLarge { .. })));
    let wrong_offset = [RecordIn { sha256: &k1, payload: &ok, payload_crc32: None }];
    assert!(matches!(disk.append_records(id, Some(0), &wrong_offset), Err(Error::OffsetMismatch { .. })));
    assert_eq!(snapshot(dir.path()), before, "the disk is byte-identical");
    assert!(disk.append_records(id, None, &[]).expect("an empty batch").is_empty());
}

fn a_given_payload_crc_goes_into_the_header_as_given(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(22).expect("create");
    // Small (coalesced) and large (direct) records, each with the right CRC given and
    // with a wrong one: the append trusts what it is given, and reads catch a wrong one.
    let payloads: Vec<Vec<u8>> =
        [100usize, 1 << 20].iter().enumerate().map(|(i, n)| bytes(*n, i as u64)).collect();
    let keys: Vec<[u8; 32]> = payloads.iter().map(|p| sha(p)).collect();
    let mut at = None;
    for (payload, key) in payloads.iter().zip(&keys) {
        let crc = crc32fast::hash(payload);
        let right = RecordIn { sha256: key, payload, payload_crc32: Some(crc) };
        let wrong = RecordIn { sha256: key, payload, payload_crc32: Some(crc ^ 4) };
        let locations = disk.append_records(id, at, &[right, wrong]).expect("append");
        let record = disk.read_record(id, locations[0].offset_bytes).expect("the right CRC reads back");
        assert_eq!(record.payload, *payload);
        match disk.read_record(id, locations[1].offset_bytes) {
            Err(e @ Error::Corrupt { .. }) => assert!(e.to_string().contains("payload"), "{e}"),
            other => panic!("a record written with a wrong CRC must not read back: {other:?}"),
        }
        at = Some(locations[1].end_bytes());
    }
}

fn reads_into_a_reused_buffer_with_or_without_the_length(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(22).expect("create");
    let big = bytes(1 << 20, 1);
    let small = bytes(10, 2);
    let lb = disk.append(id, None, &sha(&big), &big).expect("append");
    let ls = disk.append(id, None, &sha(&small), &small).expect("append");
    let mut buf = Vec::new();
    // The right length reads the big record direct (into an aligned place in the buffer);
    // no length or a wrong one reads it through the page cache, from the buffer's start.
    for hint in
        [Some(lb.record_len_bytes), None, Some(ls.record_len_bytes), Some(7), Some(lb.record_len_bytes)]
    {
        let (header, start) = disk.read_record_into(id, lb.offset_bytes, hint, &mut buf).expect("read big");
        assert_eq!(header.record_len_bytes(), lb.record_len_bytes, "hint {hint:?}");
        let record = &buf[start..start + lb.record_len_bytes as usize];
        assert_eq!(&record[RECORD_HEADER_BYTES..], &big[..]);
        assert_eq!(header.sha256, sha(&big));
    }
    // The buffer now holds the big record; reading the small one leaves leftovers after it.
    let (header, start) =
        disk.read_record_into(id, ls.offset_bytes, Some(ls.record_len_bytes), &mut buf).expect("read small");
    assert_eq!(start, 0, "small records are read buffered");
    assert_eq!(&buf[RECORD_HEADER_BYTES..header.record_len_bytes() as usize], &small[..]);
    assert!(buf.len() >= lb.record_len_bytes as usize, "the buffer was not shrunk");
    assert!(matches!(
        disk.read_record_into(id, ls.end_bytes(), None, &mut buf),
        Err(Error::OffsetPastEnd { .. })
    ));
}

fn cached_reads_answer_from_the_page_cache_or_defer(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(23).expect("create");
    let small = bytes(4096, 1);
    let big = bytes(1 << 20, 2);
    let ls = disk.append(id, None, &sha(&small), &small).expect("append");
    let lb = disk.append(id, None, &sha(&big), &big).expect("append");
    let mut buf = Vec::new();
    // The large record went down as a direct write, past the page cache; one read on the
    // slow path brings it in.
    disk.read_record(id, lb.offset_bytes).expect("read");
    // In the page cache now (the small one since it was written): answered without
    // blocking, verified.
    for (loc, payload) in [(&ls, &small), (&lb, &big)] {
        let header = disk
            .read_record_cached(id, loc.offset_bytes, loc.record_len_bytes, &mut buf)
            .expect("read")
            .expect("cached bytes are answered");
        assert_eq!(header.record_len_bytes(), loc.record_len_bytes);
        assert_eq!(header.sha256, sha(payload));
        assert_eq!(&buf[RECORD_HEADER_BYTES..loc.record_len_bytes as usize], &payload[..]);
    }
    // A length that is not the record's, or that runs past the end: the slow path decides.
    assert!(
        disk.read_record_cached(id, ls.offset_bytes, ls.record_len_bytes + 1, &mut buf)
            .expect("read")
            .is_none()
    );
    assert!(
        disk.read_record_cached(id, lb.offset_bytes, lb.record_len_bytes + 1, &mut buf)
            .expect("read")
            .is_none()
    );
    assert!(disk.read_record_cached(id, ls.offset_bytes, 3, &mut buf).expect("read").is_none());
    // An unknown extent is the same error as on the slow path.
    assert!(matches!(
        disk.read_record_cached(ExtentId::replica(99), 0, ls.record_len_bytes, &mut buf),
        Err(Error::UnknownExtent(_))
    ));
    // A sealed replica no longer keeps its file open: deferred to the slow path, which reads it.
    disk.seal_replica(id, None).expect("seal");
    assert!(
        disk.read_record_cached(id, ls.offset_bytes, ls.record_len_bytes, &mut buf).expect("read").is_none()
    );
    let (_, start) =
        disk.read_record_into(id, ls.offset_bytes, Some(ls.record_len_bytes), &mut buf).expect("slow path");
    assert_eq!(&buf[start + RECORD_HEADER_BYTES..start + ls.record_len_bytes as usize], &small[..]);
}

/// The fault-injecting backend never answers without blocking, so every injected fault
/// reaches the read that checks for it.
#[test]
fn the_fault_backend_always_defers_cached_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, _plan) = common::open_faulty(dir.path(), Backend::Pread);
    let id = disk.create_replica(24).expect("create");
    let payload = bytes(100, 3);
    let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
    let mut buf = Vec::new();
    assert!(
        disk.read_record_cached(id, loc.offset_bytes, loc.record_len_bytes, &mut buf)
            .expect("read")
            .is_none()
    );
}

fn replica_file(dir: &std::path::Path, id: ExtentId) -> std::path::PathBuf {
    dir.join("extents").join(id.to_string())
}

/// Large appends go down as direct writes that start at the extent's partial last 4 KiB
/// block and pad the end with zeros; small ones stay buffered. Interleaved, with records
/// ending at every kind of offset, every record must read back, a clean reopen must not
/// call the padding a torn tail, appends must go on after it, and the sealed file must
/// end exactly at its length.
fn direct_and_buffered_appends_interleave_across_block_boundaries_and_reopen(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ExtentId::replica(41);
    let sizes = [10usize, 100_000, 5, 70_000, 4096 - 64, 1 << 20, 3, 65_537, 200_000, 0, 4032, 150_001];
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut end = 0u64;
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(41).expect("create");
        for (i, size) in sizes.iter().enumerate() {
            let payload = bytes(*size, 1000 + i as u64);
            let loc = disk.append(id, Some(end), &sha(&payload), &payload).expect("append");
            end = loc.end_bytes();
            let file_len = std::fs::metadata(replica_file(dir.path(), id)).expect("stat").len();
            assert!(file_len >= 4096 + end && file_len < 4096 + end + 4096, "file {file_len}, end {end}");
            written.push((loc.offset_bytes, payload));
        }
        // A batch mixing sizes, large enough to be one direct write; and one larger than
        // the direct-write staging buffer (8 MiB), written as it fills.
        let mut batch: Vec<Vec<u8>> = (0..5).map(|i| bytes(30_000 + i * 7, 2000 + i as u64)).collect();
        batch.extend((0..3).map(|i| bytes((4 << 20) - 5 + i, 2100 + i as u64)));
        batch.push(bytes(3 << 20, 2200));
        let keys: Vec<[u8; 32]> = batch.iter().map(|p| sha(p)).collect();
        let records: Vec<RecordIn<'_>> = batch
            .iter()
            .zip(&keys)
            .map(|(p, k)| RecordIn { sha256: k, payload: p, payload_crc32: None })
            .collect();
        for (loc, p) in disk.append_records(id, Some(end), &records).expect("batch").iter().zip(&batch) {
            written.push((loc.offset_bytes, p.clone()));
            end = loc.end_bytes();
        }
        for (offset, payload) in &written {
            assert_eq!(disk.read_record(id, *offset).expect("read").payload, *payload, "at {offset}");
        }
    }
    {
        let disk = open(dir.path(), backend);
        assert!(disk.open_report().recovered.is_empty(), "{:?}", disk.open_report());
        assert!(disk.open_report().damaged.is_empty(), "{:?}", disk.open_report());
        assert_eq!(disk.extent_info(id).expect("info").length_bytes, end);
        // The partial last block is read back from disk for the next direct append.
        for (i, size) in [300_000usize, 7, 90_000].iter().enumerate() {
            let payload = bytes(*size, 3000 + i as u64);
            let loc = disk.append(id, Some(end), &sha(&payload), &payload).expect("append after reopen");
            end = loc.end_bytes();
            written.push((loc.offset_bytes, payload));
        }
        assert_eq!(disk.seal_replica(id, None).expect("seal"), end);
        let file_len = std::fs::metadata(replica_file(dir.path(), id)).expect("stat").len();
        assert_eq!(file_len, 4096 + end, "a sealed replica ends at its length");
        for (offset, payload) in &written {
            assert_eq!(disk.read_record(id, *offset).expect("read").payload, *payload, "at {offset}");
        }
        let scanned = disk.scan_replica(id).expect("scan").inspect(|r| assert!(r.is_ok(), "{r:?}")).count();
        assert_eq!(scanned, written.len());
    }
    let disk = open(dir.path(), backend);
    assert!(disk.open_report().damaged.is_empty());
    for (offset, payload) in &written {
        assert_eq!(disk.read_record(id, *offset).expect("read").payload, *payload);
    }
}

/// Only zeros past the last record are padding: anything else there is a torn tail,
/// truncated and reported.
fn bytes_past_a_direct_appends_padding_are_a_torn_tail(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ExtentId::replica(42);
    let payload = bytes(100_001, 42);
    let end;
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(42).expect("create");
        end = disk.append(id, Some(0), &sha(&payload), &payload).expect("append").end_bytes();
    }
    let path = replica_file(dir.path(), id);
    let file_len = std::fs::metadata(&path).expect("stat").len();
    // The garbage byte must land past the end, whether or not the write was padded.
    let at = file_len.max(4096 + end + 1) - 1;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.write_all_at(&[0xAB], at).expect("write garbage");
    }
    let disk = open(dir.path(), backend);
    let report = disk.open_report();
    assert_eq!(report.recovered.len(), 1, "{report:?}");
    assert_eq!(report.recovered[0].1.truncated_bytes, at + 1 - 4096 - end);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 4096 + end);
    assert_eq!(disk.read_record(id, 0).expect("read").payload, payload);
}
