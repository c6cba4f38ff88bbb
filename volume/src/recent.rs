//! Records appended lately, kept in memory so that their reads need no device.
//!
//! Large replica appends go to the device with `O_DIRECT` (the kernel's copy into fresh
//! page-cache pages cost more CPU than the rest of a 4 MiB put), so they leave nothing in
//! the page cache, and the first gets of a block just put each waited for a 4 MiB device
//! read (~2.4 ms on this project's machine; the device reads ~1.5 GB/s at any queue
//! depth, docs/performance.md). Yet the blocks read most are the ones written last. The
//! append already holds the payload in memory, so keeping it costs no copy: its bytes
//! (shared with the request they came in) stay here, first in first out, up to a bound in
//! bytes, and a read of exactly that record is answered from them.
//!
//! - Only records of at least [`RECENT_RECORD_MIN_BYTES`]: smaller ones are read through
//!   the page cache. An append of at most 64 KiB in all (headers included) is written
//!   through it; a larger one (a batch of small records, at many clients) goes direct where
//!   the file system allows, and the first read of one of its records goes to the device,
//!   its readahead bringing the neighbours in (after 4 KiB puts at 256 clients, ~1.7% of
//!   the gets that followed read the device).
//! - Only on the volume's first replica, the one a get asks (`cellar_volume_api::reader`;
//!   the others are read when it fails or is slow), as the fence's check with the master
//!   found it (`crate::fence::Fences::reads_first`; unknown after a restart: kept).
//! - A record enters only once its append is durable (the append returned), and an append
//!   at some offset of a replica first forgets everything kept at or past that offset
//!   there (a replica rewritten from an offset never answers with the bytes it had).
//!   Deleting a replica forgets its records.
//! - Every answer from memory is checked against the record's CRC32 first, as a read from
//!   the device is; a record that fails is forgotten and the read goes to the device.
//! - A reader checks the SHA-256 and read digest of whatever comes back, from memory or
//!   not (`cellar_volume_api::reader`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Smallest record kept (payload bytes).
pub const RECENT_RECORD_MIN_BYTES: usize = 64 << 10;

/// Default bound of a volume server's kept records, payload bytes.
pub const RECENT_RECORDS_DEFAULT_BYTES: u64 = 256 << 20;

/// Where a record is: disk, volume (its replica on that disk), offset of its header.
type Place = (u64, u64, u64);

/// A kept record.
#[derive(Debug)]
struct Kept {
    /// Header plus payload, as on disk.
    record_len_bytes: u64,
    sha256: [u8; 32],
    payload: Bytes,
    payload_crc32: u32,
    /// Order of entry (tells a queue slot of a forgotten or replaced record from a live one).
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    kept: BTreeMap<Place, Kept>,
    /// Places in order of entry, oldest first, with the entry's `seq`.
    order: VecDeque<(Place, u64)>,
    payload_bytes: u64,
    next_seq: u64,
}

impl Inner {
    fn remove(&mut self, place: &Place) {
        if let Some(k) = self.kept.remove(place) {
            self.payload_bytes -= k.payload.len() as u64;
        }
    }

    /// Drops queue slots of records no longer kept once they outnumber the kept ones.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.kept.len() + 64 {
            let kept = &self.kept;
            self.order.retain(|(place, seq)| kept.get(place).is_some_and(|k| k.seq == *seq));
        }
    }
}

/// A record answered from memory.
#[derive(Debug, Clone)]
pub struct RecentRecord {
    /// Its key.
    pub sha256: [u8; 32],
    /// Its payload (CRC-checked).
    pub payload: Bytes,
}

/// The kept records of one volume server, bounded in payload bytes.
#[derive(Debug)]
pub struct RecentRecords {
    inner: Mutex<Inner>,
    capacity_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl RecentRecords {
    /// Keeps at most `capacity_bytes` of payload (0: keeps nothing).
    pub fn new(capacity_bytes: u64) -> RecentRecords {
        RecentRecords {
            inner: Mutex::new(Inner::default()),
            capacity_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a record of `payload_bytes` would be kept.
    pub fn keeps(&self, payload_bytes: usize) -> bool {
        payload_bytes >= RECENT_RECORD_MIN_BYTES && payload_bytes as u64 <= self.capacity_bytes
    }

    /// Before an append at `offset_bytes` of the replica of `volume_id` on `disk_id`:
    /// forgets what is kept at or past that offset there.
    pub fn forget_from(&self, disk_id: u64, volume_id: u64, offset_bytes: u64) {
        let mut inner = self.lock();
        let places: Vec<Place> = inner
            .kept
            .range((disk_id, volume_id, offset_bytes)..=(disk_id, volume_id, u64::MAX))
            .map(|(p, _)| *p)
            .collect();
        if places.is_empty() {
            return;
        }
        for p in &places {
            inner.remove(p);
        }
        inner.compact_order();
    }

    /// Forgets every record kept of the replica of `volume_id` on `disk_id`.
    pub fn forget_replica(&self, disk_id: u64, volume_id: u64) {
        self.forget_from(disk_id, volume_id, 0);
    }

    /// Keeps a record just appended (durably) at `offset_bytes`, evicting the oldest ones
    /// beyond the bound. Records [`RecentRecords::keeps`] refuses are ignored.
    pub fn keep(
        &self,
        (disk_id, volume_id, offset_bytes): Place,
        record_len_bytes: u64,
        sha256: [u8; 32],
        payload: Bytes,
        payload_crc32: u32,
    ) {
        if !self.keeps(payload.len()) {
            return;
        }
        let place = (disk_id, volume_id, offset_bytes);
        let mut inner = self.lock();
        inner.remove(&place);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.payload_bytes += payload.len() as u64;
        inner.kept.insert(place, Kept { record_len_bytes, sha256, payload, payload_crc32, seq });
        inner.order.push_back((place, seq));
        while inner.payload_bytes > self.capacity_bytes {
            let Some((oldest, seq)) = inner.order.pop_front() else { break };
            if inner.kept.get(&oldest).is_some_and(|k| k.seq == seq) {
                inner.remove(&oldest);
            }
        }
        inner.compact_order();
    }

    /// The record at `offset_bytes` of the replica of `volume_id` on `disk_id`, if kept,
    /// `expected_len_bytes` long (0: any length) and within the replica's durable length
    /// now (`durable_len_bytes`, asked only when the record is kept: `None` when the
    /// replica is gone; a record past it is forgotten), its payload checked against its
    /// CRC32 (one that fails is forgotten). Counts a hit or a miss, unless the length
    /// asked for is too small for a record to be kept.
    pub fn get(
        &self,
        place: Place,
        expected_len_bytes: u64,
        durable_len_bytes: impl FnOnce() -> Option<u64>,
    ) -> Option<RecentRecord> {
        if expected_len_bytes != 0 && expected_len_bytes < RECENT_RECORD_MIN_BYTES as u64 {
            return None; // too small to be kept: neither a hit nor a miss
        }
        let found = {
            let inner = self.lock();
            inner
                .kept
                .get(&place)
                .filter(|k| expected_len_bytes == 0 || k.record_len_bytes == expected_len_bytes)
                .map(|k| (k.sha256, k.payload.clone(), k.payload_crc32, k.seq, k.record_len_bytes))
        };
        let Some((sha256, payload, crc, seq, record_len_bytes)) = found else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let end = place.2.checked_add(record_len_bytes);
        let within = end.zip(durable_len_bytes()).is_some_and(|(end, durable)| end <= durable);
        if !within || crc32fast::hash(&payload) != crc {
            let mut inner = self.lock();
            if inner.kept.get(&place).is_some_and(|k| k.seq == seq) {
                inner.remove(&place);
            }
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(RecentRecord { sha256, payload })
    }

    /// Payload bytes kept now.
    pub fn payload_bytes(&self) -> u64 {
        self.lock().payload_bytes
    }

    /// Reads answered from memory, and reads of large records that were not.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// The bound, payload bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn payload(fill: u8, len: usize) -> (Bytes, u32) {
        let p = Bytes::from(vec![fill; len]);
        let crc = crc32fast::hash(&p);
        (p, crc)
    }

    fn keep(r: &RecentRecords, place: Place, fill: u8, len: usize) {
        let (p, crc) = payload(fill, len);
        r.keep(place, len as u64 + 48, [fill; 32], p, crc);
    }

    #[test]
    fn a_kept_record_is_answered_only_at_its_place_and_length() {
        let r = RecentRecords::new(16 * MIB as u64);
        keep(&r, (1, 7, 0), 3, MIB);
        let got = r.get((1, 7, 0), MIB as u64 + 48, || Some(u64::MAX)).expect("kept");
        assert_eq!(got.sha256, [3; 32]);
        assert!(got.payload.iter().all(|b| *b == 3) && got.payload.len() == MIB);
        assert!(r.get((1, 7, 0), 0, || Some(u64::MAX)).is_some(), "any length");
        assert!(r.get((1, 7, 0), 4096, || Some(u64::MAX)).is_none(), "another length");
        assert!(r.get((2, 7, 0), 0, || Some(u64::MAX)).is_none(), "another disk");
        assert!(r.get((1, 8, 0), 0, || Some(u64::MAX)).is_none(), "another volume");
        assert!(r.get((1, 7, 48), 0, || Some(u64::MAX)).is_none(), "another offset");
        assert_eq!(r.hits_and_misses(), (2, 3), "a length too small to be kept is not a miss");
    }

    #[test]
    fn small_records_and_records_over_the_bound_are_not_kept() {
        let r = RecentRecords::new(2 * MIB as u64);
        keep(&r, (1, 1, 0), 1, RECENT_RECORD_MIN_BYTES - 1);
        keep(&r, (1, 1, 100), 1, 3 * MIB);
        assert_eq!(r.payload_bytes(), 0);
        assert!(
            r.get((1, 1, 0), 0, || Some(u64::MAX)).is_none()
                && r.get((1, 1, 100), 0, || Some(u64::MAX)).is_none()
        );
        let off = RecentRecords::new(0);
        keep(&off, (1, 1, 0), 1, MIB);
        assert_eq!(off.payload_bytes(), 0);
    }

    #[test]
    fn the_oldest_records_go_first_and_the_bound_holds() {
        let r = RecentRecords::new(4 * MIB as u64);
        for i in 0..10u64 {
            keep(&r, (1, 1, i * 2 * MIB as u64), i as u8, MIB);
            assert!(r.payload_bytes() <= 4 * MIB as u64);
        }
        for i in 0..6u64 {
            assert!(r.get((1, 1, i * 2 * MIB as u64), 0, || Some(u64::MAX)).is_none(), "record {i} evicted");
        }
        for i in 6..10u64 {
            assert_eq!(
                r.get((1, 1, i * 2 * MIB as u64), 0, || Some(u64::MAX)).expect("kept").sha256,
                [i as u8; 32]
            );
        }
    }

    #[test]
    fn an_append_forgets_what_was_kept_at_and_past_its_offset() {
        let r = RecentRecords::new(64 * MIB as u64);
        for i in 0..4u64 {
            keep(&r, (1, 1, i * MIB as u64 * 2), 1, MIB);
        }
        keep(&r, (1, 2, 0), 2, MIB);
        r.forget_from(1, 1, 2 * MIB as u64 * 2);
        assert!(
            r.get((1, 1, 0), 0, || Some(u64::MAX)).is_some()
                && r.get((1, 1, 2 * MIB as u64), 0, || Some(u64::MAX)).is_some()
        );
        assert!(
            r.get((1, 1, 4 * MIB as u64), 0, || Some(u64::MAX)).is_none()
                && r.get((1, 1, 6 * MIB as u64), 0, || Some(u64::MAX)).is_none()
        );
        r.forget_replica(1, 1);
        assert!(r.get((1, 1, 0), 0, || Some(u64::MAX)).is_none());
        assert!(r.get((1, 2, 0), 0, || Some(u64::MAX)).is_some(), "other replicas stay");
        assert_eq!(r.payload_bytes(), MIB as u64);
        // A record replaced at its place counts once.
        keep(&r, (1, 2, 0), 5, MIB);
        assert_eq!(r.payload_bytes(), MIB as u64);
        assert_eq!(r.get((1, 2, 0), 0, || Some(u64::MAX)).expect("kept").sha256, [5; 32]);
    }

    #[test]
    fn a_record_past_the_replicas_durable_length_or_of_a_gone_replica_is_forgotten_not_answered() {
        let r = RecentRecords::new(16 * MIB as u64);
        keep(&r, (1, 1, 1000), 4, MIB);
        let end = 1000 + MIB as u64 + 48;
        assert!(r.get((1, 1, 1000), 0, || Some(end - 1)).is_none(), "the replica was cut short");
        assert_eq!(r.payload_bytes(), 0, "forgotten");
        keep(&r, (1, 1, 1000), 4, MIB);
        assert!(r.get((1, 1, 1000), 0, || Some(end)).is_some());
        assert!(r.get((1, 1, 1000), 0, || None).is_none(), "the replica is gone");
        assert_eq!(r.payload_bytes(), 0, "forgotten");
    }

    #[test]
    fn a_record_failing_its_crc_is_forgotten_not_answered() {
        let r = RecentRecords::new(16 * MIB as u64);
        let (p, crc) = payload(9, MIB);
        r.keep((1, 1, 0), MIB as u64 + 48, [9; 32], p, crc ^ 1);
        assert!(r.get((1, 1, 0), 0, || Some(u64::MAX)).is_none());
        assert_eq!(r.payload_bytes(), 0, "forgotten");
    }

    #[test]
    fn forgetting_many_replicas_keeps_the_queue_bounded() {
        let r = RecentRecords::new(1 << 40);
        for v in 0..1000u64 {
            keep(&r, (1, v, 0), 1, RECENT_RECORD_MIN_BYTES);
            r.forget_replica(1, v);
        }
        let inner = r.lock();
        assert!(inner.kept.is_empty());
        assert!(inner.order.len() <= 64, "{} stale queue slots", inner.order.len());
    }
}
