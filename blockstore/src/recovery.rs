//! Recovery of an open replica's tail: which bytes past the durable watermark are records,
//! which are damaged records to keep in place, and where the torn tail begins.
//!
//! A record that fails its checks is only a torn tail if nothing valid follows it: a
//! record that rotted (or whose bytes a crash left unwritten) while later records landed
//! is kept in place, so that the acknowledged records after it survive (docs/FORMAT.md
//! 4.3). Records are self-describing, so the next one is found by its header: the magic,
//! the header CRC and its own offset equal to its position.

use crate::error::{CorruptKind, Error, Result};
use crate::extent_header::EXTENT_DATA_OFFSET_BYTES;
use crate::id::ExtentId;
use crate::io::{IoFile, read_exact_at};
use crate::record::{RECORD_HEADER_BYTES, RECORD_MAGIC, RecordHeader};

/// Damaged spans recovery keeps in place in one replica; past this many the replica is
/// reported damaged and takes no writes (nothing is truncated).
pub(crate) const CORRUPT_SPANS_MAX: usize = 1024;

/// Bytes read at a time while looking for the next record past damaged bytes.
const RESYNC_WINDOW_BYTES: usize = 1 << 20;

/// Damaged bytes kept in place in a replica: from a record that failed its checks to the
/// next valid record. Every read inside it fails as corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptSpan {
    /// Data offset of the damaged record.
    pub offset_bytes: u64,
    /// Bytes up to the next valid record.
    pub len_bytes: u64,
}

impl CorruptSpan {
    /// Data offset of the valid record that follows.
    pub fn end_bytes(&self) -> u64 {
        self.offset_bytes + self.len_bytes
    }
}

/// What the walk over a replica's tail found.
#[derive(Debug, Default)]
pub(crate) struct TailWalk {
    /// Where the last valid record ends (the new end of the replica).
    pub(crate) end_bytes: u64,
    /// Records that verified.
    pub(crate) records_verified: u64,
    /// Damaged spans with valid records after them, in order.
    pub(crate) corrupt: Vec<CorruptSpan>,
    /// More than [`CORRUPT_SPANS_MAX`] spans: the walk stopped at `end_bytes` without
    /// deciding what lies past it.
    pub(crate) gave_up: bool,
}

/// Reads and fully verifies the record at `offset_bytes`: its header when the record
/// is valid and ends within `data_len`, `None` when it fails any check (I/O errors other
/// than a short read are errors).
fn valid_record_at(
    file: &dyn IoFile,
    extent: ExtentId,
    offset_bytes: u64,
    data_len: u64,
    payload_max_bytes: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<RecordHeader>> {
    match crate::record_read::read_verified(file, extent, offset_bytes, payload_max_bytes, payload) {
        Ok(h) if offset_bytes.checked_add(h.record_len_bytes()).is_some_and(|e| e <= data_len) => Ok(Some(h)),
        Ok(_) | Err(Error::Corrupt { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The header at `offset_bytes` if it passes its own checks (its payload unchecked).
fn header_at(
    file: &dyn IoFile,
    extent: ExtentId,
    offset_bytes: u64,
    data_len: u64,
    payload_max_bytes: u64,
) -> Result<Option<RecordHeader>> {
    if offset_bytes.checked_add(RECORD_HEADER_BYTES as u64).is_none_or(|e| e > data_len) {
        return Ok(None);
    }
    let mut head = [0u8; RECORD_HEADER_BYTES];
    read_exact_at(file, &mut head, EXTENT_DATA_OFFSET_BYTES + offset_bytes)
        .map_err(|e| read_error(e, extent, offset_bytes))?;
    Ok(RecordHeader::decode(&head, offset_bytes, payload_max_bytes).ok())
}

fn read_error(e: std::io::Error, extent: ExtentId, offset_bytes: u64) -> Error {
    Error::read(extent, offset_bytes, std::path::PathBuf::new(), "read replica tail", e)
}

/// Walks the records of `[from_bytes, data_len)`: verifies each, keeps damaged records
/// that valid records follow, and stops at the first damage nothing valid follows (the
/// torn tail). Reads every byte at most a few times: the search for the next record only
/// moves forward.
pub(crate) fn walk_tail(
    file: &dyn IoFile,
    extent: ExtentId,
    from_bytes: u64,
    data_len: u64,
    payload_max_bytes: u64,
) -> Result<TailWalk> {
    let mut walk = TailWalk { end_bytes: from_bytes, ..TailWalk::default() };
    let mut payload = Vec::new();
    let mut pos = from_bytes;
    while pos < data_len {
        if let Some(h) = valid_record_at(file, extent, pos, data_len, payload_max_bytes, &mut payload)? {
            pos += h.record_len_bytes();
            walk.records_verified += 1;
            walk.end_bytes = pos;
            continue;
        }
        let Some(next) = next_valid_record(file, extent, pos, data_len, payload_max_bytes, &mut payload)?
        else {
            break;
        };
        if walk.corrupt.len() == CORRUPT_SPANS_MAX {
            walk.gave_up = true;
            break;
        }
        walk.corrupt.push(CorruptSpan { offset_bytes: pos, len_bytes: next - pos });
        pos = next;
    }
    Ok(walk)
}

/// The first position past the damaged record at `bad_bytes` where a valid record
/// starts, or `None` when nothing valid follows (a torn tail).
fn next_valid_record(
    file: &dyn IoFile,
    extent: ExtentId,
    bad_bytes: u64,
    data_len: u64,
    payload_max_bytes: u64,
    payload: &mut Vec<u8>,
) -> Result<Option<u64>> {
    let mut from = bad_bytes + 1;
    // A header that passes its CRC is trusted for the record's length (only the payload
    // is bad): the next record starts right after it, and whatever its payload holds (a
    // user's block may hold bytes that look like a record) is skipped.
    if let Some(h) = header_at(file, extent, bad_bytes, data_len, payload_max_bytes)? {
        match bad_bytes.checked_add(h.record_len_bytes()) {
            Some(next) if next < data_len => from = next,
            _ => return Ok(None),
        }
    }
    let mut window = vec![0u8; RESYNC_WINDOW_BYTES];
    let mut at = from;
    // Positions where a whole header still fits.
    let last_start = match data_len.checked_sub(RECORD_HEADER_BYTES as u64) {
        Some(l) => l,
        None => return Ok(None),
    };
    'windows: while at <= last_start {
        let n = (data_len - at).min(RESYNC_WINDOW_BYTES as u64) as usize;
        read_exact_at(file, &mut window[..n], EXTENT_DATA_OFFSET_BYTES + at)
            .map_err(|e| read_error(e, extent, at))?;
        // Candidates whose header lies wholly in this window; the rest are looked at
        // again at the start of the next one.
        let candidates = n.saturating_sub(RECORD_HEADER_BYTES - 1);
        let mut i = 0usize;
        while i < candidates {
            let Some(found) = window[i..candidates + RECORD_MAGIC.len() - 1]
                .windows(RECORD_MAGIC.len())
                .position(|w| w == RECORD_MAGIC)
            else {
                break;
            };
            i += found;
            let q = at + i as u64;
            let head: &[u8; RECORD_HEADER_BYTES] = window[i..i + RECORD_HEADER_BYTES]
                .try_into()
                .map_err(|_| Error::Corrupt { extent, offset_bytes: q, kind: CorruptKind::Truncated })?;
            let Ok(h) = RecordHeader::decode(head, q, payload_max_bytes) else {
                i += 1;
                continue;
            };
            if valid_record_at(file, extent, q, data_len, payload_max_bytes, payload)?.is_some() {
                return Ok(Some(q));
            }
            // A trustworthy header with a bad payload: another damaged record, whose end
            // is where to look next.
            match q.checked_add(h.record_len_bytes()) {
                Some(next) if next < data_len => {
                    if next >= at + candidates as u64 {
                        at = next;
                        continue 'windows;
                    }
                    i = (next - at) as usize;
                }
                _ => return Ok(None),
            }
        }
        if at + n as u64 >= data_len {
            break;
        }
        at += candidates as u64;
    }
    Ok(None)
}
