//! What exactly was wrong with bytes read back: shared by the blockstore (which reads
//! them from disk) and by clients (which verify records and chunks they receive).

use std::fmt;

/// What exactly was wrong with bytes read back from the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptKind {
    /// The record header does not start with the record magic.
    BadMagic,
    /// A format version this build does not know.
    UnsupportedVersion(u8),
    /// A reserved header field is not zero.
    ReservedNotZero,
    /// The CRC32 of the record header does not match.
    HeaderChecksum,
    /// The CRC32 of the record payload does not match.
    PayloadChecksum,
    /// The header names another offset than the one it was read from.
    WrongOffset {
        /// The offset stored in the header.
        found_bytes: u64,
    },
    /// The header announces a payload over the record size limit.
    LengthOverLimit {
        /// The payload length stored in the header.
        payload_bytes: u64,
    },
    /// The file ends before the bytes its metadata promises.
    Truncated,
    /// A fragment chunk's CRC32 does not match its bytes.
    ChunkChecksum {
        /// Index of the chunk within the fragment.
        chunk_index: u64,
    },
    /// A fragment chunk table entry holds an unknown marker.
    ChunkEntry {
        /// Index of the chunk within the fragment.
        chunk_index: u64,
    },
    /// The extent file header is invalid or names another extent.
    ExtentHeader(String),
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::BadMagic => write!(f, "bad record magic"),
            CorruptKind::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            CorruptKind::ReservedNotZero => write!(f, "reserved header field is not zero"),
            CorruptKind::HeaderChecksum => write!(f, "record header CRC32 mismatch"),
            CorruptKind::PayloadChecksum => write!(f, "record payload CRC32 mismatch"),
            CorruptKind::WrongOffset { found_bytes } => {
                write!(f, "record header names offset {found_bytes}")
            }
            CorruptKind::LengthOverLimit { payload_bytes } => {
                write!(f, "record header announces {payload_bytes} payload bytes, over the limit")
            }
            CorruptKind::Truncated => write!(f, "file is shorter than its metadata says"),
            CorruptKind::ChunkChecksum { chunk_index } => {
                write!(f, "chunk {chunk_index} CRC32 mismatch")
            }
            CorruptKind::ChunkEntry { chunk_index } => {
                write!(f, "chunk {chunk_index} table entry is invalid")
            }
            CorruptKind::ExtentHeader(detail) => write!(f, "extent header: {detail}"),
        }
    }
}
