//! Checksums on every read: a flipped bit anywhere in a record or a fragment chunk is
//! detected, and the caller gets a typed error naming the extent and offset.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use cellar_blockstore::{CorruptKind, EXTENT_DATA_OFFSET_BYTES, Error, ExtentId, RECORD_HEADER_BYTES};
use common::{Backend, bytes, cache, open, open_faulty, sha, uncache};
use proptest::prelude::*;

for_each_backend!(
    every_flipped_bit_in_a_record_is_detected,
    flipped_bit_from_the_device_is_detected,
    every_flipped_bit_in_a_fragment_chunk_and_its_entry_is_detected,
    flipped_bits_are_detected_by_large_reads,
    a_sector_the_device_cannot_read_makes_its_extent_unreadable_not_an_io_error,
);

fn flip(path: &Path, offset: u64, bit: u8) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 1 << bit;
    file.write_all_at(&b, offset).expect("write");
}

fn every_flipped_bit_in_a_record_is_detected(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(1).expect("create");
    disk.append(id, None, &sha(b"before"), b"before").expect("append");
    let payload = bytes(40, 1);
    let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
    let path = disk.extent_file_path(id);
    let start = EXTENT_DATA_OFFSET_BYTES + loc.offset_bytes;
    for byte in 0..loc.record_len_bytes {
        for bit in 0..8 {
            flip(&path, start + byte, bit);
            match disk.read_record(id, loc.offset_bytes) {
                Err(Error::Corrupt { extent, offset_bytes, .. }) => {
                    assert_eq!((extent, offset_bytes), (id, loc.offset_bytes));
                }
                other => panic!("byte {byte} bit {bit}: expected Corrupt, got {other:?}"),
            }
            let mut buf = Vec::new();
            match disk.read_record_into(id, loc.offset_bytes, Some(loc.record_len_bytes), &mut buf) {
                Err(Error::Corrupt { extent, offset_bytes, .. }) => {
                    assert_eq!((extent, offset_bytes), (id, loc.offset_bytes));
                }
                other => panic!("byte {byte} bit {bit}: read_record_into: expected Corrupt, got {other:?}"),
            }
            // The non-blocking read checks as much: a flipped length byte may make the
            // record's length differ from the one asked (then `None`: "take the slow
            // path", which reports it, as above); any other flip is an error.
            match disk.read_record_cached(id, loc.offset_bytes, loc.record_len_bytes, &mut buf) {
                Err(Error::Corrupt { extent, offset_bytes, .. }) => {
                    assert_eq!((extent, offset_bytes), (id, loc.offset_bytes));
                }
                Ok(None) => {}
                other => panic!("byte {byte} bit {bit}: read_record_cached: expected Corrupt, got {other:?}"),
            }
            flip(&path, start + byte, bit);
        }
    }
    assert_eq!(disk.read_record(id, loc.offset_bytes).expect("restored").payload, payload);
}

fn flipped_bit_from_the_device_is_detected(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let id = disk.create_replica(2).expect("create");
    let payload = bytes(1 << 20, 2);
    let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
    let path = disk.extent_file_path(id);
    plan.flip_bit_on_read(&path, EXTENT_DATA_OFFSET_BYTES + RECORD_HEADER_BYTES as u64 + 777_777, 3);
    assert!(matches!(
        disk.read_record(id, loc.offset_bytes),
        Err(Error::Corrupt { kind: CorruptKind::PayloadChecksum, .. })
    ));
}

/// A read the device fails with EIO (a latent sector error) is `Unreadable`, naming the
/// extent: a bad extent due a repair, as a checksum failure is, on every way a record or
/// a fragment is read (whole, into a buffer, scanned, raw); records elsewhere in the
/// extent still read. A fault of the process's own (the injector's plain errors, no
/// errno) stays `Io`: nothing about the extent is known.
fn a_sector_the_device_cannot_read_makes_its_extent_unreadable_not_an_io_error(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk, plan) = open_faulty(dir.path(), backend);
    let id = disk.create_replica(3).expect("create");
    let first = bytes(10_000, 3);
    let at = disk.append(id, None, &sha(&first), &first).expect("append");
    let second = bytes(200_000, 4);
    let bad = disk.append(id, None, &sha(&second), &second).expect("append");
    let path = disk.extent_file_path(id);
    plan.unreadable_at(&path, EXTENT_DATA_OFFSET_BYTES + bad.offset_bytes + 150_000);
    let unreadable = |what: &str, err: Error| {
        assert!(err.is_bad_extent(), "{what}: {err:?}");
        assert!(!err.is_corruption(), "{what}: {err:?}");
        match err {
            Error::Unreadable { extent, source, .. } => {
                assert_eq!(extent, id, "{what}");
                assert_eq!(source.raw_os_error(), Some(libc::EIO), "{what}");
            }
            other => panic!("{what}: expected Unreadable, got {other:?}"),
        }
    };
    unreadable("read_record", disk.read_record(id, bad.offset_bytes).expect_err("EIO"));
    let mut buf = Vec::new();
    unreadable(
        "read_record_into",
        disk.read_record_into(id, bad.offset_bytes, Some(bad.record_len_bytes), &mut buf).expect_err("EIO"),
    );
    let scanned: Vec<_> = disk.scan_replica(id).expect("scan").collect();
    assert_eq!(scanned.len(), 2, "the scan stops at the unreadable record");
    assert_eq!(scanned[0].as_ref().expect("the first record").payload, first);
    unreadable("scan", scanned.into_iter().nth(1).expect("second").expect_err("EIO"));
    let mut raw = vec![0u8; 4096];
    unreadable(
        "read_replica_raw",
        disk.read_replica_raw(id, bad.offset_bytes + 148_000, &mut raw).expect_err("EIO"),
    );
    assert_eq!(disk.read_record(id, at.offset_bytes).expect("the other record").payload, first);

    let len = 3 * 4096 + 100;
    let fid = disk.create_fragment(3, 1, len, 4096).expect("create");
    let data = bytes(len as usize, 5);
    disk.write_fragment(fid, 0, &data).expect("write");
    plan.unreadable_at(&disk.extent_file_path(fid), EXTENT_DATA_OFFSET_BYTES + 2 * 4096 + 7);
    match disk.read_fragment(fid, 0, len).expect_err("EIO") {
        Error::Unreadable { extent, .. } => assert_eq!(extent, fid),
        other => panic!("read_fragment: expected Unreadable, got {other:?}"),
    }
    assert_eq!(disk.read_fragment(fid, 0, 4096).expect("the chunks before"), data[..4096]);
    // Counted once per extent however often it is read (the volume server fails a disk
    // with many).
    disk.read_record(id, bad.offset_bytes).expect_err("EIO again");
    assert_eq!(disk.stat().expect("stat").unreadable_extents, 2);

    // No errno: not the device's verdict on these bytes.
    plan.fail_after_ops(0);
    let err = disk.read_record(id, at.offset_bytes).expect_err("injected");
    assert!(matches!(err, Error::Io { .. }) && !err.is_bad_extent(), "{err:?}");
    plan.clear();
    assert_eq!(disk.stat().expect("stat").unreadable_extents, 2, "an injected fault is not the device's");
}

fn every_flipped_bit_in_a_fragment_chunk_and_its_entry_is_detected(backend: Backend) {
    const CHUNK: u32 = 4096;
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    // Two chunks and a short third one.
    let len = 2 * CHUNK as u64 + 100;
    let id = disk.create_fragment(5, 2, len, CHUNK).expect("create");
    let data = bytes(len as usize, 5);
    disk.write_fragment(id, 0, &data).expect("write");
    let path = disk.extent_file_path(id);
    let table = EXTENT_DATA_OFFSET_BYTES + len;
    // Every bit of the short last chunk, every 61st bit elsewhere, every bit of the table.
    let mut positions: Vec<(u64, u64)> = (0..len * 8)
        .filter(|b| *b >= 2 * CHUNK as u64 * 8 || b % 61 == 0)
        .map(|b| (EXTENT_DATA_OFFSET_BYTES + b / 8, b % 8))
        .collect();
    positions.extend((0..3 * 8 * 8).map(|b| (table + b / 8, b % 8)));
    for (at, bit) in positions {
        flip(&path, at, bit as u8);
        let err = disk.read_fragment(id, 0, len).expect_err("corruption must be detected");
        assert!(
            matches!(err, Error::Corrupt { extent, .. } | Error::Unwritten { extent, .. } if extent == id),
            "{err:?}"
        );
        // A range starting inside the first chunk: its whole first chunk is still checked.
        let err = disk.read_fragment(id, 1, len - 1).expect_err("corruption must be detected");
        assert!(
            matches!(err, Error::Corrupt { extent, .. } | Error::Unwritten { extent, .. } if extent == id),
            "{err:?}"
        );
        // Into a reused buffer: the same checks.
        let mut buf = Vec::new();
        let err = disk.read_fragment_into(id, 1, len - 1, &mut buf).expect_err("corruption must be detected");
        assert!(
            matches!(err, Error::Corrupt { extent, .. } | Error::Unwritten { extent, .. } if extent == id),
            "{err:?}"
        );
        flip(&path, at, bit as u8);
    }
    assert_eq!(disk.read_fragment(id, 0, len).expect("restored"), data);
}

/// Large reads come from the page cache when it holds them, else direct (past the page
/// cache, into an aligned place in the buffer); the same checks apply on both ways: a
/// sample of flipped bits in a large record (every header bit) and in a large fragment
/// range (every chunk table bit) is detected.
fn flipped_bits_are_detected_by_large_reads(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = open(dir.path(), backend);
    let id = disk.create_replica(3).expect("create");
    disk.append(id, None, &sha(b"first"), b"first").expect("append");
    let payload = bytes(200 << 10, 3);
    let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
    let path = disk.extent_file_path(id);
    let start = EXTENT_DATA_OFFSET_BYTES + loc.offset_bytes;
    let mut buf = Vec::new();
    let bits = (0..loc.record_len_bytes * 8).filter(|b| *b < RECORD_HEADER_BYTES as u64 * 8 || b % 1009 == 0);
    for b in bits {
        flip(&path, start + b / 8, (b % 8) as u8);
        for way in ["direct", "cached"] {
            if way == "direct" {
                uncache(&path);
            } else {
                cache(&path);
            }
            match disk.read_record_into(id, loc.offset_bytes, Some(loc.record_len_bytes), &mut buf) {
                Err(Error::Corrupt { extent, offset_bytes, .. }) => {
                    assert_eq!((extent, offset_bytes), (id, loc.offset_bytes));
                }
                other => panic!("bit {b} ({way}): expected Corrupt, got {other:?}"),
            }
        }
        flip(&path, start + b / 8, (b % 8) as u8);
    }
    let (header, at) =
        disk.read_record_into(id, loc.offset_bytes, Some(loc.record_len_bytes), &mut buf).expect("restored");
    assert_eq!(&buf[at + RECORD_HEADER_BYTES..at + header.record_len_bytes() as usize], &payload[..]);

    const CHUNK: u32 = 64 << 10;
    let len = 3 * CHUNK as u64 + 100;
    let fid = disk.create_fragment(4, 1, len, CHUNK).expect("create");
    let data = bytes(len as usize, 4);
    disk.write_fragment(fid, 0, &data).expect("write");
    disk.seal_fragment(fid).expect("seal");
    let path = disk.extent_file_path(fid);
    let table = EXTENT_DATA_OFFSET_BYTES + len;
    let mut positions: Vec<(u64, u64)> =
        (0..len * 8).filter(|b| b % 997 == 0).map(|b| (EXTENT_DATA_OFFSET_BYTES + b / 8, b % 8)).collect();
    positions.extend((0..4 * 8 * 8).map(|b| (table + b / 8, b % 8)));
    for (at, bit) in positions {
        flip(&path, at, bit as u8);
        for way in ["direct", "cached"] {
            if way == "direct" {
                uncache(&path);
            } else {
                cache(&path);
            }
            let err =
                disk.read_fragment_into(fid, 1, len - 1, &mut buf).expect_err("corruption must be detected");
            assert!(
                matches!(err, Error::Corrupt { extent, .. } | Error::Unwritten { extent, .. } if extent == fid),
                "{way}: {err:?}"
            );
        }
        flip(&path, at, bit as u8);
    }
    let skip = disk.read_fragment_into(fid, 1, len - 1, &mut buf).expect("restored");
    assert_eq!(&buf[skip..skip + len as usize - 1], &data[1..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random record sizes and a random bit anywhere in the record: never returned as data.
    #[test]
    fn random_bit_flips_in_records_are_detected(size in 0usize..20_000, pick in any::<u64>(), bit in 0u8..8) {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), Backend::Pread);
        let id = disk.create_replica(1).expect("create");
        let payload = bytes(size, pick);
        let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
        let at = EXTENT_DATA_OFFSET_BYTES + pick % loc.record_len_bytes;
        flip(&disk.extent_file_path(id), at, bit);
        let is_corrupt = matches!(disk.read_record(id, 0), Err(Error::Corrupt { .. }));
        prop_assert!(is_corrupt);
    }

    /// Random fragment ranges read back exactly what was written.
    #[test]
    fn fragment_ranges_read_back_exactly(len in 1u64..40_000, a in any::<u64>(), b in any::<u64>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let disk = open(dir.path(), Backend::Pread);
        let id = disk.create_fragment(1, 0, len, 4096).expect("create");
        let data = bytes(len as usize, a);
        disk.write_fragment(id, 0, &data).expect("write");
        let (x, y) = (a % (len + 1), b % (len + 1));
        let (start, end) = (x.min(y), x.max(y));
        prop_assert_eq!(disk.read_fragment(id, start, end - start).expect("read"), data[start as usize..end as usize].to_vec());
    }
}

#[test]
fn unknown_extent_id_in_file_header_is_reported_as_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let disk = open(dir.path(), Backend::Pread);
        disk.create_replica(1).expect("create");
        disk.create_replica(2).expect("create");
    }
    // Swap the files: each header now names the other extent.
    let a = dir.path().join("extents").join(ExtentId::replica(1).to_string());
    let b = dir.path().join("extents").join(ExtentId::replica(2).to_string());
    let tmp = dir.path().join("swap");
    std::fs::rename(&a, &tmp).expect("mv");
    std::fs::rename(&b, &a).expect("mv");
    std::fs::rename(&tmp, &b).expect("mv");
    let disk = open(dir.path(), Backend::Pread);
    assert_eq!(disk.open_report().damaged.len(), 2, "{:?}", disk.open_report());
}
