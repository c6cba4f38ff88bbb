//! Recovery of an open replica's unsynced tail: damage that valid records follow is kept in
//! place and reported (the records after it stay readable), while a torn tail, nothing
//! valid after the bad bytes, is truncated as before.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use cellar_blockstore::catalog::Catalog;
use cellar_blockstore::{CorruptSpan, EXTENT_DATA_OFFSET_BYTES, Error, ExtentId, RECORD_HEADER_BYTES};
use common::{Backend, bytes, open, sha};

for_each_backend!(
    a_flipped_bit_mid_tail_keeps_every_later_record_and_reports_the_extent,
    two_damaged_records_are_both_kept_and_sealing_steps_over_them,
    a_torn_tail_past_a_stale_watermark_is_still_truncated,
    a_flipped_bit_in_the_last_record_only_is_truncated,
    a_block_holding_a_record_lookalike_does_not_mislead_recovery,
);

/// Payload sizes of the test replica: small and large (a direct append) records.
const SIZES: [usize; 7] = [100, 5000, 70_000, 300, 4096, 1, 2000];

/// Writes records of `SIZES` to replica 1, closes the disk and sets the catalog's durable
/// watermark back to 0, as a power loss that lost the unsynced watermark updates would:
/// the whole replica is then an unsynced tail to recovery. Returns each record's
/// (offset, payload) and the data length.
fn replica_with_stale_watermark(dir: &Path, backend: Backend) -> (Vec<(u64, Vec<u8>)>, u64) {
    let id = ExtentId::replica(1);
    let mut records = Vec::new();
    let end;
    {
        let disk = open(dir, backend);
        disk.create_replica(1).expect("create");
        for (i, size) in SIZES.iter().enumerate() {
            let payload = bytes(*size, i as u64 + 1);
            let loc = disk.append(id, None, &sha(&payload), &payload).expect("append");
            records.push((loc.offset_bytes, payload));
        }
        end = disk.extent_info(id).expect("info").length_bytes;
    }
    set_watermark(dir, id, 0);
    (records, end)
}

fn set_watermark(dir: &Path, id: ExtentId, length_bytes: u64) {
    let catalog = Catalog::open(&dir.join("catalog")).expect("catalog");
    let entry = catalog.extent(id).expect("read entry").expect("entry");
    catalog
        .put_extent(id, &cellar_blockstore::catalog::ExtentEntry { length_bytes, ..entry })
        .expect("put entry");
}

fn watermark(dir: &Path, id: ExtentId) -> u64 {
    Catalog::open(&dir.join("catalog"))
        .expect("catalog")
        .extent(id)
        .expect("read")
        .expect("entry")
        .length_bytes
}

fn flip(path: &Path, offset: u64, bit: u8) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= 1 << bit;
    file.write_all_at(&b, offset).expect("write");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

fn record_len(payload: &[u8]) -> u64 {
    (RECORD_HEADER_BYTES + payload.len()) as u64
}

fn assert_corrupt_at(disk: &cellar_blockstore::Disk, id: ExtentId, offset: u64) {
    match disk.read_record(id, offset) {
        Err(Error::Corrupt { extent, offset_bytes, .. }) => assert_eq!((extent, offset_bytes), (id, offset)),
        other => panic!("the damaged record at {offset} must read as corrupt, got {other:?}"),
    }
}

/// A flipped bit in one record in the middle of the unsynced tail (in its header, which
/// hides the record's length, or in its payload) keeps the replica at its full length:
/// every other record reads back byte-exact, the damaged one reads as corrupt, the
/// extent is reported bad at every open until repaired, and appends go on after it.
fn a_flipped_bit_mid_tail_keeps_every_later_record_and_reports_the_extent(backend: Backend) {
    let id = ExtentId::replica(1);
    // (record, byte within the record): header length field, header CRC, payload.
    for (victim, byte) in [(2usize, 9u64), (3, 61), (2, 64 + 40_000), (4, 64 + 4095)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (records, end) = replica_with_stale_watermark(dir.path(), backend);
        let path = dir.path().join("extents").join(id.to_string());
        let len_before = file_len(&path);
        let (bad_offset, bad_payload) = &records[victim];
        flip(&path, EXTENT_DATA_OFFSET_BYTES + bad_offset + byte, 5);
        let case = format!("record {victim} byte {byte}");
        let next = bad_offset + record_len(bad_payload);
        {
            let disk = open(dir.path(), backend);
            let report = disk.open_report();
            assert_eq!(
                report.corrupt,
                vec![(id, vec![CorruptSpan { offset_bytes: *bad_offset, len_bytes: next - bad_offset }])],
                "{case}"
            );
            assert_eq!(report.bad_extents().len(), 1, "{case}: reported bad");
            assert_eq!(report.bad_extents()[0].0, id);
            let recovered = &report.recovered[0].1;
            assert_eq!(recovered.truncated_bytes, 0, "{case}: nothing truncated");
            assert_eq!(recovered.records_verified, SIZES.len() as u64 - 1, "{case}");
            assert_eq!(disk.extent_info(id).expect("info").length_bytes, end, "{case}: full length kept");
            assert_eq!(file_len(&path), len_before, "{case}: file untouched");
            for (i, (offset, payload)) in records.iter().enumerate() {
                if i == victim {
                    assert_corrupt_at(&disk, id, *offset);
                } else {
                    let got =
                        disk.read_record(id, *offset).unwrap_or_else(|e| panic!("{case}: record {i}: {e}"));
                    assert_eq!(&got.payload, payload, "{case}: record {i} byte-exact");
                }
            }
            // The extent still takes appends: its tail is valid.
            let more = bytes(777, 99);
            let loc = disk.append(id, Some(end), &sha(&more), &more).expect("append after recovery");
            assert_eq!(disk.read_record(id, loc.offset_bytes).expect("read").payload, more);
        }
        // The watermark was not raised past the damage (not even by the append's sync),
        // so the next open finds and reports it again.
        assert_eq!(watermark(dir.path(), id), *bad_offset, "{case}");
        let disk = open(dir.path(), backend);
        assert_eq!(disk.open_report().corrupt.len(), 1, "{case}: reported again");
        assert_corrupt_at(&disk, id, *bad_offset);
        let (last_offset, last_payload) = records.last().expect("records");
        assert_eq!(&disk.read_record(id, *last_offset).expect("read").payload, last_payload);
    }
}

/// Two damaged records (one with a damaged header, one with a damaged payload) are both
/// kept; sealing below the end walks over them to prove a record boundary.
fn two_damaged_records_are_both_kept_and_sealing_steps_over_them(backend: Backend) {
    let id = ExtentId::replica(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (records, end) = replica_with_stale_watermark(dir.path(), backend);
    let path = dir.path().join("extents").join(id.to_string());
    flip(&path, EXTENT_DATA_OFFSET_BYTES + records[1].0 + 2, 0);
    flip(&path, EXTENT_DATA_OFFSET_BYTES + records[4].0 + 64 + 7, 1);
    let disk = open(dir.path(), backend);
    let spans: Vec<u64> =
        disk.open_report().corrupt.iter().flat_map(|(_, s)| s.iter().map(|s| s.offset_bytes)).collect();
    assert_eq!(spans, vec![records[1].0, records[4].0]);
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, end);
    for i in [0usize, 2, 3, 5, 6] {
        assert_eq!(disk.read_record(id, records[i].0).expect("read").payload, records[i].1);
    }
    // Not a boundary: inside the first damaged record.
    assert!(matches!(
        disk.seal_replica(id, Some(records[1].0 + 1)),
        Err(Error::BadSealLength { .. } | Error::Corrupt { .. })
    ));
    let sealed = disk.seal_replica(id, Some(records[6].0)).expect("seal past the damage");
    assert_eq!(sealed, records[6].0);
    assert_eq!(disk.read_record(id, records[5].0).expect("read").payload, records[5].1);
}

/// A torn tail after a stale watermark, the prefix of a record whose append never
/// finished, is truncated back to the last whole record; nothing is reported bad.
fn a_torn_tail_past_a_stale_watermark_is_still_truncated(backend: Backend) {
    let id = ExtentId::replica(1);
    for torn_bytes in [1u64, 10, 63, 64, 65, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (records, end) = replica_with_stale_watermark(dir.path(), backend);
        let path = dir.path().join("extents").join(id.to_string());
        // The start of a record appended at the end (its whole header and some payload,
        // or less): what lands of an append a crash cut short.
        let payload = bytes(5000, 42);
        let header = cellar_blockstore::RecordHeader {
            payload_len_bytes: payload.len() as u32,
            record_offset_bytes: end,
            sha256: sha(&payload),
            payload_crc32: crc32fast::hash(&payload),
        };
        let mut torn = header.encode().to_vec();
        torn.extend_from_slice(&payload);
        torn.truncate(torn_bytes as usize);
        let file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        file.set_len(EXTENT_DATA_OFFSET_BYTES + end).expect("trim padding");
        file.write_all_at(&torn, EXTENT_DATA_OFFSET_BYTES + end).expect("write");
        drop(file);
        let disk = open(dir.path(), backend);
        let report = disk.open_report();
        assert!(report.corrupt.is_empty() && report.bad_extents().is_empty(), "{torn_bytes}: nothing bad");
        assert_eq!(report.recovered[0].1.truncated_bytes, torn_bytes);
        assert_eq!(disk.extent_info(id).expect("info").length_bytes, end);
        assert_eq!(file_len(&path), EXTENT_DATA_OFFSET_BYTES + end);
        for (offset, payload) in &records {
            assert_eq!(&disk.read_record(id, *offset).expect("read").payload, payload);
        }
    }
}

/// A flipped bit in the last record, nothing valid after it, is a torn tail as before:
/// the record is truncated and the extent takes appends at its start.
fn a_flipped_bit_in_the_last_record_only_is_truncated(backend: Backend) {
    let id = ExtentId::replica(1);
    for byte in [0u64, 20, 64, 64 + 1999] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (records, end) = replica_with_stale_watermark(dir.path(), backend);
        let path = dir.path().join("extents").join(id.to_string());
        let (last_offset, last_payload) = records.last().expect("records");
        flip(&path, EXTENT_DATA_OFFSET_BYTES + last_offset + byte, 3);
        let disk = open(dir.path(), backend);
        let report = disk.open_report();
        assert!(report.corrupt.is_empty(), "byte {byte}: nothing kept");
        assert_eq!(report.recovered[0].1.truncated_bytes, record_len(last_payload));
        assert_eq!(end - last_offset, record_len(last_payload));
        assert_eq!(disk.extent_info(id).expect("info").length_bytes, *last_offset);
        assert_eq!(file_len(&path), EXTENT_DATA_OFFSET_BYTES + last_offset);
        for (offset, payload) in &records[..records.len() - 1] {
            assert_eq!(&disk.read_record(id, *offset).expect("read").payload, payload);
        }
        disk.append(id, Some(*last_offset), &sha(b"again"), b"again").expect("append at the new end");
    }
}

/// A block whose bytes hold a whole valid record (header with the right own offset and
/// CRCs) is skipped when the record holding it has a damaged payload but a sound header:
/// the next record is found where that header says, not inside the block.
fn a_block_holding_a_record_lookalike_does_not_mislead_recovery(backend: Backend) {
    let id = ExtentId::replica(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = b"i look like a record".to_vec();
    let (holder_offset, after_offset, after, end);
    {
        let disk = open(dir.path(), backend);
        disk.create_replica(1).expect("create");
        let first = disk.append(id, None, &sha(b"first"), b"first").expect("append");
        holder_offset = first.end_bytes();
        // The holder's payload starts with 100 bytes, then a record valid at its place.
        let at = holder_offset + RECORD_HEADER_BYTES as u64 + 100;
        let header = cellar_blockstore::RecordHeader {
            payload_len_bytes: inner.len() as u32,
            record_offset_bytes: at,
            sha256: sha(&inner),
            payload_crc32: crc32fast::hash(&inner),
        };
        let mut holder = bytes(100, 7);
        holder.extend_from_slice(&header.encode());
        holder.extend_from_slice(&inner);
        holder.extend_from_slice(&bytes(50, 8));
        let loc = disk.append(id, None, &sha(&holder), &holder).expect("append holder");
        after = bytes(3000, 9);
        after_offset = loc.end_bytes();
        end = disk.append(id, None, &sha(&after), &after).expect("append").end_bytes();
    }
    set_watermark(dir.path(), id, 0);
    let path = dir.path().join("extents").join(id.to_string());
    // Damage the holder's payload before the lookalike.
    flip(&path, EXTENT_DATA_OFFSET_BYTES + holder_offset + RECORD_HEADER_BYTES as u64 + 3, 0);
    let disk = open(dir.path(), backend);
    assert_eq!(
        disk.open_report().corrupt,
        vec![(
            id,
            vec![CorruptSpan { offset_bytes: holder_offset, len_bytes: after_offset - holder_offset }]
        )]
    );
    assert_eq!(disk.extent_info(id).expect("info").length_bytes, end);
    assert_eq!(disk.read_record(id, after_offset).expect("read").payload, after);
    assert_corrupt_at(&disk, id, holder_offset);
}
