//! Replica extents: an append-only log of block records, with group commit.
//!
//! Appends are serialized only for the short time it takes to write their bytes; then each
//! appender waits until an fsync covers its record. Whoever takes the sync lock first
//! fsyncs everything written so far, so one `fdatasync` makes many concurrent appends
//! durable at once, and an append returns only once its bytes are on disk.

mod append;
mod read;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::catalog::{Catalog, ExtentEntry};
use crate::error::{CorruptKind, Error, ExtentState, Result};
use crate::extent_header::{EXTENT_DATA_OFFSET_BYTES, ExtentHeader};
use crate::id::ExtentId;
use crate::io::direct::{
    AlignedBuf, DIRECT_ALIGN_BYTES, DIRECT_READ_MIN_BYTES, DirectFile, align_down, align_up,
    open_or_buffered, read_large,
};
use crate::io::{IoBackend, IoFile, read_exact_at, write_all_at};
use crate::record::{RECORD_HEADER_BYTES, Record, RecordHeader, RecordLocation};
use crate::record_read::{eof_is_truncation, read_verified};
use crate::recovery::{CORRUPT_SPANS_MAX, CorruptSpan, walk_tail};

/// Payloads up to this size are copied behind their header and written together with the
/// other small records of their batch; larger ones are written in two calls (header,
/// payload) rather than copied.
const COALESCE_PAYLOAD_MAX_BYTES: usize = 64 << 10;

/// Appends of more record bytes than this go down as one direct write (see
/// [`crate::io::direct`]) when the file system allows: copied once into a warm aligned
/// buffer behind the extent's partial last block and padded with zeros, instead of copied
/// into fresh page-cache pages. Smaller ones stay buffered (a direct write would rewrite
/// and pad a whole block for a few bytes).
const DIRECT_APPEND_MIN_BYTES: usize = 64 << 10;

/// A direct append is staged through an aligned buffer of at most this many bytes,
/// written each time it fills: a batch of many large records costs no more memory than
/// this, and the buffers stay small enough to be pooled (warm pages, no faults).
const DIRECT_STAGING_MAX_BYTES: usize = 8 << 20;

/// One record to append: the block's key and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordIn<'a> {
    /// The payload's SHA-256 (the block's key).
    pub sha256: &'a [u8; 32],
    /// The block's bytes.
    pub payload: &'a [u8],
    /// The payload's CRC32 when the caller already has it, computed from these very bytes
    /// or checked against them (it goes into the record header as given); `None`: the
    /// append computes it.
    pub payload_crc32: Option<u32>,
}

/// Writes the coalesced small records (if any) at data offset `at_bytes` and empties the
/// buffer.
fn flush_coalesced(file: &dyn IoFile, coalesced: &mut Vec<u8>, at_bytes: u64) -> std::io::Result<()> {
    if coalesced.is_empty() {
        return Ok(());
    }
    let written = write_all_at(file, coalesced, EXTENT_DATA_OFFSET_BYTES + at_bytes);
    coalesced.clear();
    written
}

/// One replica extent file and its in-memory write state (a few counters; nothing per
/// record).
pub(crate) struct Replica {
    pub(crate) id: ExtentId,
    pub(crate) path: PathBuf,
    io: Arc<dyn IoBackend>,
    created_unix_ms: u64,
    payload_max_bytes: u64,
    /// Kept open while the extent takes appends; sealed extents open per operation.
    kept_file: Mutex<Option<Arc<dyn IoFile>>>,
    /// The same file opened for direct writes, while open for appends (when allowed).
    direct_file: Mutex<Option<Arc<DirectFile>>>,
    append: Mutex<AppendState>,
    sync: Mutex<SyncState>,
    /// Signalled whenever an fsync finishes (or fails): waiting appenders re-check.
    synced: Condvar,
    /// End of the last record fully written (not necessarily durable).
    written_end_bytes: AtomicU64,
    /// End of the last record known durable; reads are allowed below it.
    durable_end_bytes: AtomicU64,
    /// A write or fsync failed: no more writes until the disk is reopened.
    failed: AtomicBool,
    /// Deleted (moved to trash): no more operations.
    retired: AtomicBool,
    /// The durable watermark is never raised past this data offset: the first damaged
    /// record recovery kept in place (`u64::MAX` when there is none), so that the next
    /// open finds it again.
    watermark_cap_bytes: AtomicU64,
}

struct AppendState {
    end_bytes: u64,
    state: ExtentState,
    /// The bytes of the extent's last, partial direct-I/O block: data offsets
    /// `align_down(end_bytes)..end_bytes` (empty when the end is aligned). A direct append
    /// starts at that block and writes these bytes again before its records.
    tail: Vec<u8>,
    /// Damaged records recovery kept in place (valid records follow them), in order.
    corrupt: Vec<CorruptSpan>,
}

struct SyncState {
    /// An fsync is in progress (its caller released the mutex while it runs).
    syncing: bool,
}

/// What recovery found when a replica was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaRecovery {
    /// Bytes of torn or unverifiable tail that were truncated.
    pub truncated_bytes: u64,
    /// Records verified during recovery (those past the catalog's watermark).
    pub records_verified: u64,
    /// Set when the file is shorter than the catalog says (data lost outside cellar), or
    /// holds too much damage to keep track of.
    pub damaged: Option<String>,
    /// Damaged records kept in place because valid records follow them: the extent is
    /// bad (reads of them fail as corrupt) but the records after them stay readable.
    pub corrupt: Vec<CorruptSpan>,
}

/// A record found by a scan, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// The record's header.
    pub header: RecordHeader,
    /// The record's payload.
    pub payload: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded state stays consistent at every await-free step, so a panic elsewhere
    // does not invalidate it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `len_bytes` at `offset_bytes` end at or before `end_bytes`. Offsets come from
/// callers over the network: a sum that overflows does not fit (it must not wrap into a
/// read elsewhere in the file, whose failed checks would blame a healthy extent).
fn ends_within(offset_bytes: u64, len_bytes: u64, end_bytes: u64) -> bool {
    offset_bytes.checked_add(len_bytes).is_some_and(|e| e <= end_bytes)
}

/// Writes records back to back at data offset `at_bytes` through the page cache: small
/// ones copied behind their headers into one write, large ones in place.
fn write_buffered(
    file: &dyn IoFile,
    at_bytes: u64,
    records: &[RecordIn<'_>],
    headers: &[[u8; RECORD_HEADER_BYTES]],
) -> std::io::Result<()> {
    let mut coalesced: Vec<u8> = Vec::new();
    let mut coalesced_at = at_bytes;
    let mut offset = at_bytes;
    for (r, header) in records.iter().zip(headers) {
        if r.payload.len() <= COALESCE_PAYLOAD_MAX_BYTES {
            if coalesced.is_empty() {
                coalesced_at = offset;
            }
            coalesced.extend_from_slice(header);
            coalesced.extend_from_slice(r.payload);
        } else {
            let at = EXTENT_DATA_OFFSET_BYTES + offset;
            flush_coalesced(file, &mut coalesced, coalesced_at)?;
            write_all_at(file, header, at)?;
            write_all_at(file, r.payload, at + RECORD_HEADER_BYTES as u64)?;
        }
        offset += (RECORD_HEADER_BYTES + r.payload.len()) as u64;
    }
    flush_coalesced(file, &mut coalesced, coalesced_at)
}

/// The extent's partial last block after an append ending at `end_bytes`: the last
/// `end_bytes % DIRECT_ALIGN_BYTES` bytes of the old tail followed by the records.
fn tail_after(
    old_tail: &[u8],
    end_bytes: u64,
    records: &[RecordIn<'_>],
    headers: &[[u8; RECORD_HEADER_BYTES]],
) -> Vec<u8> {
    let keep = (end_bytes - align_down(end_bytes)) as usize;
    // Pieces from the end backwards until `keep` bytes are found.
    let mut pieces: Vec<&[u8]> = Vec::new();
    let mut found = 0usize;
    for (r, header) in records.iter().zip(headers).rev() {
        for piece in [r.payload, &header[..]] {
            if found >= keep {
                break;
            }
            let take = piece.len().min(keep - found);
            pieces.push(&piece[piece.len() - take..]);
            found += take;
        }
    }
    if found < keep {
        let take = old_tail.len().min(keep - found);
        pieces.push(&old_tail[old_tail.len() - take..]);
    }
    pieces.iter().rev().flat_map(|p| p.iter().copied()).collect()
}

impl Replica {
    /// Creates a new, empty replica file (header written and fsynced).
    pub(crate) fn create(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        created_unix_ms: u64,
        payload_max_bytes: u64,
    ) -> Result<Replica> {
        let file = io.create_new(&path).map_err(|e| Error::io(&path, "create replica extent", e))?;
        let header = ExtentHeader { extent: id, created_unix_ms, fragment_len_bytes: 0, chunk_size_bytes: 0 };
        write_all_at(file.as_ref(), &header.encode(), 0)
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&path, "write replica extent header", e))?;
        Ok(Replica::new(
            io,
            path,
            id,
            created_unix_ms,
            payload_max_bytes,
            Some(file),
            0,
            ExtentState::Open,
            Vec::new(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        created_unix_ms: u64,
        payload_max_bytes: u64,
        file: Option<Arc<dyn IoFile>>,
        end_bytes: u64,
        state: ExtentState,
        tail: Vec<u8>,
    ) -> Replica {
        // Direct writes only for an extent that takes appends, and only where allowed.
        let direct_file = file.as_ref().and_then(|_| open_or_buffered(io.as_ref(), &path));
        Replica {
            id,
            path,
            io,
            created_unix_ms,
            payload_max_bytes,
            kept_file: Mutex::new(file),
            direct_file: Mutex::new(direct_file),
            append: Mutex::new(AppendState { end_bytes, state, tail, corrupt: Vec::new() }),
            sync: Mutex::new(SyncState { syncing: false }),
            synced: Condvar::new(),
            written_end_bytes: AtomicU64::new(end_bytes),
            durable_end_bytes: AtomicU64::new(end_bytes),
            failed: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            watermark_cap_bytes: AtomicU64::new(u64::MAX),
        }
    }

    /// Opens an existing replica. An open replica is recovered: records past the catalog's
    /// watermark are verified and a torn tail is truncated back to the last good record.
    pub(crate) fn open(
        io: Arc<dyn IoBackend>,
        path: PathBuf,
        id: ExtentId,
        entry: &ExtentEntry,
        payload_max_bytes: u64,
        catalog: &Catalog,
    ) -> Result<(Replica, ReplicaRecovery)> {
        let mut recovery = ReplicaRecovery::default();
        if entry.state == ExtentState::Sealed {
            let replica = Replica::new(
                io,
                path,
                id,
                entry.created_unix_ms,
                payload_max_bytes,
                None,
                entry.length_bytes,
                ExtentState::Sealed,
                Vec::new(),
            );
            let file_len =
                replica.file()?.len_bytes().map_err(|e| Error::io(&replica.path, "stat replica", e))?;
            if file_len < EXTENT_DATA_OFFSET_BYTES + entry.length_bytes {
                recovery.damaged = Some(format!(
                    "file holds {} data bytes, sealed length is {}",
                    file_len.saturating_sub(EXTENT_DATA_OFFSET_BYTES),
                    entry.length_bytes
                ));
            }
            return Ok((replica, recovery));
        }

        let file = io.open(&path).map_err(|e| Error::io(&path, "open replica extent", e))?;
        let mut head = vec![0u8; EXTENT_DATA_OFFSET_BYTES as usize];
        read_exact_at(file.as_ref(), &mut head, 0).map_err(|e| Error::io(&path, "read extent header", e))?;
        let header = ExtentHeader::decode(&head).map_err(|kind| Error::Corrupt {
            extent: id,
            offset_bytes: 0,
            kind,
        })?;
        if header.extent != id {
            return Err(Error::Corrupt {
                extent: id,
                offset_bytes: 0,
                kind: CorruptKind::ExtentHeader(format!("file holds extent {}", header.extent)),
            });
        }
        let file_len = file.len_bytes().map_err(|e| Error::io(&path, "stat replica", e))?;
        let data_len = file_len.saturating_sub(EXTENT_DATA_OFFSET_BYTES);
        let watermark = entry.length_bytes;
        let mut end = watermark;
        let mut corrupt = Vec::new();
        if data_len < watermark {
            recovery.damaged = Some(format!("file holds {data_len} data bytes, {watermark} were durable"));
            end = data_len;
        } else {
            // Verify every record past the watermark; damage that valid records follow is
            // kept in place, and the first damage nothing valid follows starts the torn tail.
            match walk_tail(file.as_ref(), id, watermark, data_len, payload_max_bytes) {
                Ok(walk) => {
                    end = walk.end_bytes;
                    recovery.records_verified = walk.records_verified;
                    corrupt = walk.corrupt;
                    if walk.gave_up {
                        recovery.damaged = Some(format!(
                            "more than {CORRUPT_SPANS_MAX} damaged records past data offset {watermark}"
                        ));
                    }
                }
                Err(e) => {
                    let e = match e {
                        Error::Io { op, source, .. } => Error::io(&path, op, source),
                        other => other,
                    };
                    recovery.damaged =
                        Some(format!("cannot verify the records past data offset {watermark}: {e}"));
                }
            }
            if recovery.damaged.is_some() {
                // Too much damage to keep track of, or the device fails: nothing is
                // truncated (acknowledged records may lie past it), nothing more is
                // written, every byte stays readable through the usual checks.
                tracing::error!(extent = %id, damage = recovery.damaged.as_deref().unwrap_or(""), "replica damaged");
                end = data_len;
            } else if end < data_len {
                // The zeros a direct append padded its last block with are not a torn
                // tail: dropped, but neither counted nor reported.
                let pad = data_len <= align_up(end) && {
                    let mut rest = vec![0u8; (data_len - end) as usize];
                    read_exact_at(file.as_ref(), &mut rest, EXTENT_DATA_OFFSET_BYTES + end).is_ok()
                        && rest.iter().all(|&b| b == 0)
                };
                file.set_len(EXTENT_DATA_OFFSET_BYTES + end)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| Error::io(&path, "truncate torn tail", e))?;
                if !pad {
                    recovery.truncated_bytes = data_len - end;
                    tracing::warn!(extent = %id, truncated_bytes = recovery.truncated_bytes, "truncated torn tail");
                }
            }
            for span in &corrupt {
                tracing::error!(extent = %id, offset_bytes = span.offset_bytes, len_bytes = span.len_bytes,
                    "damaged record kept in place: valid records follow it");
            }
            // The watermark stays below kept damage, so that every open finds and reports
            // it again until the extent is repaired.
            let new_watermark = match (&recovery.damaged, corrupt.first()) {
                (Some(_), _) => watermark,
                (None, Some(first)) => first.offset_bytes,
                (None, None) => end,
            };
            if new_watermark != watermark {
                let entry = ExtentEntry { length_bytes: new_watermark, ..*entry };
                catalog.put_extent(id, &entry)?;
            }
            recovery.corrupt = corrupt.clone();
        }
        let mut tail = vec![0u8; (end - align_down(end)) as usize];
        read_exact_at(file.as_ref(), &mut tail, EXTENT_DATA_OFFSET_BYTES + align_down(end))
            .map_err(|e| Error::io(&path, "read the last partial block", e))?;
        let replica = Replica::new(
            io,
            path,
            id,
            entry.created_unix_ms,
            payload_max_bytes,
            Some(file),
            end,
            ExtentState::Open,
            tail,
        );
        if let Some(first) = corrupt.first() {
            replica.watermark_cap_bytes.store(first.offset_bytes, Ordering::Release);
        }
        lock(&replica.append).corrupt = corrupt;
        if recovery.damaged.is_some() {
            replica.failed.store(true, Ordering::Release);
        }
        Ok((replica, recovery))
    }

    fn file(&self) -> Result<Arc<dyn IoFile>> {
        if let Some(file) = lock(&self.kept_file).as_ref() {
            return Ok(file.clone());
        }
        self.io.open(&self.path).map_err(|e| Error::io(&self.path, "open replica extent", e))
    }

    fn check_live(&self) -> Result<()> {
        if self.retired.load(Ordering::Acquire) {
            return Err(Error::UnknownExtent(self.id));
        }
        Ok(())
    }

    fn io_context(&self, e: Error) -> Error {
        e.at_path(&self.path)
    }

    /// Seals the replica at `length_bytes` (default: its current end), truncating records
    /// past it; the length must fall on a record boundary. Idempotent.
    pub(crate) fn seal(&self, catalog: &Catalog, length_bytes: Option<u64>) -> Result<u64> {
        let mut st = lock(&self.append);
        self.check_live()?;
        let target = length_bytes.unwrap_or(st.end_bytes);
        if st.state == ExtentState::Sealed {
            if target == st.end_bytes {
                return Ok(target);
            }
            return Err(Error::BadSealLength {
                extent: self.id,
                length_bytes: target,
                reason: format!("already sealed at {}", st.end_bytes),
            });
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Failed(self.id));
        }
        if target > st.end_bytes {
            return Err(Error::BadSealLength {
                extent: self.id,
                length_bytes: target,
                reason: format!("past the end at {}", st.end_bytes),
            });
        }
        let file = self.file()?;
        if target < st.end_bytes {
            self.check_boundary(file.as_ref(), target, &st.corrupt)?;
        }
        let _sync = self.quiesce_syncs();
        // A direct append's zero padding past the end goes too: a sealed extent's file
        // ends at its sealed length.
        let padded = file.len_bytes().map_err(|e| Error::io(&self.path, "stat replica", e))?
            > EXTENT_DATA_OFFSET_BYTES + target;
        let synced = if target < st.end_bytes || padded {
            file.set_len(EXTENT_DATA_OFFSET_BYTES + target).and_then(|()| file.sync_data())
        } else {
            file.sync_data()
        };
        if let Err(e) = synced {
            self.failed.store(true, Ordering::Release);
            return Err(Error::io(&self.path, "seal replica extent", e));
        }
        let entry = ExtentEntry {
            state: ExtentState::Sealed,
            created_unix_ms: self.created_unix_ms,
            length_bytes: target,
            chunk_size_bytes: 0,
        };
        catalog.put_extent(self.id, &entry)?;
        st.state = ExtentState::Sealed;
        st.end_bytes = target;
        self.written_end_bytes.store(target, Ordering::Release);
        self.durable_end_bytes.store(target, Ordering::Release);
        st.tail = Vec::new();
        st.corrupt.retain(|span| span.end_bytes() <= target);
        *lock(&self.kept_file) = None;
        *lock(&self.direct_file) = None;
        Ok(target)
    }

    /// Walks record headers from the start to prove `target` is a record boundary,
    /// stepping over the damaged records recovery kept (`corrupt`, in order).
    fn check_boundary(&self, file: &dyn IoFile, target: u64, corrupt: &[CorruptSpan]) -> Result<()> {
        let mut pos = 0u64;
        let mut head = [0u8; RECORD_HEADER_BYTES];
        let mut spans = corrupt.iter().peekable();
        while pos < target {
            while spans.next_if(|span| span.offset_bytes < pos).is_some() {}
            if let Some(span) = spans.next_if(|span| span.offset_bytes == pos) {
                pos = span.end_bytes();
                continue;
            }
            read_exact_at(file, &mut head, EXTENT_DATA_OFFSET_BYTES + pos)
                .map_err(|e| Error::io(&self.path, "read record header", e))?;
            let header = RecordHeader::decode(&head, pos, self.payload_max_bytes)
                .map_err(|kind| Error::Corrupt { extent: self.id, offset_bytes: pos, kind })?;
            pos += header.record_len_bytes();
        }
        if pos != target {
            return Err(Error::BadSealLength {
                extent: self.id,
                length_bytes: target,
                reason: "not a record boundary".to_string(),
            });
        }
        Ok(())
    }

    /// Stops all further operations (the extent is being moved to the trash); waits for
    /// in-flight appends and fsyncs to finish.
    pub(crate) fn retire(&self) {
        let _append = lock(&self.append);
        let _sync = self.quiesce_syncs();
        self.retired.store(true, Ordering::Release);
        self.synced.notify_all();
        *lock(&self.kept_file) = None;
        *lock(&self.direct_file) = None;
    }

    /// Undoes [`Replica::retire`] (the delete it began could not be recorded): operations
    /// go on, an open replica's appends through newly opened handles. An append that had
    /// written its records and was waiting for their fsync failed at the retire; its
    /// records stay and become durable with the next sync, as a record written before a
    /// crash that cut off its acknowledgement does: nothing refers to them, and a seal at
    /// the length the other replicas agree on cuts them off.
    pub(crate) fn unretire(&self) {
        let st = lock(&self.append);
        if st.state == ExtentState::Open
            && let Ok(file) = self.io.open(&self.path)
        {
            *lock(&self.kept_file) = Some(file);
            *lock(&self.direct_file) = open_or_buffered(self.io.as_ref(), &self.path);
        }
        self.retired.store(false, Ordering::Release);
    }

    /// Open or sealed.
    pub(crate) fn state(&self) -> ExtentState {
        lock(&self.append).state
    }

    /// Durable length of the data region (the sealed length once sealed).
    pub(crate) fn durable_len_bytes(&self) -> u64 {
        self.durable_end_bytes.load(Ordering::Acquire)
    }

    /// True once a write or fsync failed.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Creation time.
    pub(crate) fn created_unix_ms(&self) -> u64 {
        self.created_unix_ms
    }

    /// Reads raw bytes of the durable data region at `offset_bytes` into `buf`, without
    /// record checks: the caller verifies the bytes by other means (the encoder compares
    /// them with a verified scan of the same extent).
    pub(crate) fn read_raw(&self, offset_bytes: u64, buf: &mut [u8]) -> Result<()> {
        self.check_live()?;
        let end = self.durable_end_bytes.load(Ordering::Acquire);
        let past = offset_bytes.checked_add(buf.len() as u64).is_none_or(|e| e > end);
        if past {
            return Err(Error::OffsetPastEnd { extent: self.id, offset_bytes, end_bytes: end });
        }
        let file = self.file()?;
        read_exact_at(file.as_ref(), buf, EXTENT_DATA_OFFSET_BYTES + offset_bytes)
            .map_err(|e| Error::read(self.id, offset_bytes, &self.path, "read replica bytes", e))
    }

    /// Reads the verified record at `offset_bytes` into `payload` (used by scans).
    pub(crate) fn scan_next(&self, offset_bytes: u64, payload: &mut Vec<u8>) -> Result<RecordHeader> {
        self.check_live()?;
        let file = self.file()?;
        read_verified(file.as_ref(), self.id, offset_bytes, self.payload_max_bytes, payload)
            .map_err(|e| self.io_context(e))
    }
}
