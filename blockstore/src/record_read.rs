//! Reading one record of a replica extent back, verified: both CRCs and the stored
//! offset. Shared by reads ([`crate::replica`]) and crash recovery ([`crate::recovery`]).

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::extent_header::EXTENT_DATA_OFFSET_BYTES;
use crate::id::ExtentId;
use crate::io::{IoFile, read_exact_at};
use crate::record::{RECORD_HEADER_BYTES, RecordHeader};

/// Reads the record header at `offset_bytes` of the data region and its payload into
/// `payload`, checking both CRCs and the stored offset.
pub(crate) fn read_verified(
    file: &dyn IoFile,
    extent: ExtentId,
    offset_bytes: u64,
    payload_max_bytes: u64,
    payload: &mut Vec<u8>,
) -> Result<RecordHeader> {
    let corrupt = |kind| Error::Corrupt { extent, offset_bytes, kind };
    let at = EXTENT_DATA_OFFSET_BYTES + offset_bytes;
    let mut head = [0u8; RECORD_HEADER_BYTES];
    read_exact_at(file, &mut head, at).map_err(|e| eof_is_truncation(e, extent, offset_bytes))?;
    let header = RecordHeader::decode(&head, offset_bytes, payload_max_bytes).map_err(corrupt)?;
    payload.clear();
    payload.resize(header.payload_len_bytes as usize, 0);
    read_exact_at(file, payload, at + RECORD_HEADER_BYTES as u64)
        .map_err(|e| eof_is_truncation(e, extent, offset_bytes))?;
    header.check_payload(payload).map_err(corrupt)?;
    Ok(header)
}

/// A failed record read ([`Error::read`]); the path is filled in by the caller, which
/// knows it ([`Error::at_path`]).
pub(crate) fn eof_is_truncation(e: std::io::Error, extent: ExtentId, offset_bytes: u64) -> Error {
    Error::read(extent, offset_bytes, PathBuf::new(), "read record", e)
}
