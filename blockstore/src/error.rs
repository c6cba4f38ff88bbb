//! Typed errors of the blockstore. Callers branch on them (a corrupt record starts a
//! degraded read and a repair report; a stale offset ends a lease), so every variant
//! carries the structured fields a caller needs: the extent, the offset, the limit.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::id::ExtentId;

/// The result type of every blockstore operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use cellar_format::CorruptKind;

/// The state an extent is in, as far as writes are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentState {
    /// Accepts appends (replica) or chunk writes (fragment).
    Open,
    /// Immutable.
    Sealed,
}

impl fmt::Display for ExtentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtentState::Open => write!(f, "open"),
            ExtentState::Sealed => write!(f, "sealed"),
        }
    }
}

/// Every way a blockstore operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an I/O operation.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What was being done, in the present tense ("read record", "fsync extent").
        op: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file system has no room left for the write.
    #[error("{op} {path}: disk full")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
    },
    /// The write would leave less free than the disk's reserve, kept for its catalog
    /// ([`crate::DiskOptions::reserve_bytes`]): a full disk as far as data goes.
    #[error(
        "{op} on {path}: disk full ({free_bytes} bytes free, {needed_bytes} needed to keep the catalog's reserve)"
    )]
    ReserveReached {
        /// The disk's directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// What the file system had free, less what was claimed since it was asked.
        free_bytes: u64,
        /// The write's bytes and the reserve.
        needed_bytes: u64,
    },
    /// Bytes read back failed their checksum or structure checks; they are not returned.
    #[error("extent {extent}: corrupt data at offset {offset_bytes}: {kind}")]
    Corrupt {
        /// The extent holding the bad bytes.
        extent: ExtentId,
        /// Offset within the extent's data region where the bad record or chunk starts.
        offset_bytes: u64,
        /// What check failed.
        kind: CorruptKind,
    },
    /// The device could not return an extent's bytes: a read failed with EIO, or with the
    /// file system's own verdict that what it holds there is bad (EUCLEAN, EBADMSG). A
    /// latent sector error or a failing device: as for [`Error::Corrupt`], the bytes are
    /// lost on this disk and the extent is due a repair ([`Error::is_bad_extent`]).
    #[error("extent {extent}: unreadable at offset {offset_bytes}: {op} {path}: {source}")]
    Unreadable {
        /// The extent whose bytes could not be read.
        extent: ExtentId,
        /// Offset within the extent's data region of the read that failed.
        offset_bytes: u64,
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The device's error.
        #[source]
        source: io::Error,
    },
    /// A record payload is larger than `block_size_max_bytes`.
    #[error("record of {size_bytes} bytes is over the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// Size of the rejected payload.
        size_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },
    /// A read or write names an offset at or past the extent's end.
    #[error("extent {extent}: offset {offset_bytes} is past the end at {end_bytes}")]
    OffsetPastEnd {
        /// The extent.
        extent: ExtentId,
        /// The requested offset.
        offset_bytes: u64,
        /// The extent's current (durable) end.
        end_bytes: u64,
    },
    /// An append expected the extent to end elsewhere (a stale or competing writer).
    #[error("extent {extent}: append expected at offset {expected_bytes}, extent ends at {end_bytes}")]
    OffsetMismatch {
        /// The extent.
        extent: ExtentId,
        /// The offset the caller assigned.
        expected_bytes: u64,
        /// Where the extent really ends.
        end_bytes: u64,
    },
    /// A seal length that does not fall on a record boundary, or lies past the end.
    #[error("extent {extent}: cannot seal at {length_bytes}: {reason}")]
    BadSealLength {
        /// The extent.
        extent: ExtentId,
        /// The requested length.
        length_bytes: u64,
        /// Why it was refused.
        reason: String,
    },
    /// A fragment range that is misaligned or out of bounds.
    #[error("extent {extent}: bad range {offset_bytes}+{length_bytes}: {reason}")]
    BadRange {
        /// The extent.
        extent: ExtentId,
        /// Start of the range.
        offset_bytes: u64,
        /// Length of the range.
        length_bytes: u64,
        /// Why it was refused.
        reason: String,
    },
    /// A fragment chunk that was never written.
    #[error("extent {extent}: chunk {chunk_index} was never written")]
    Unwritten {
        /// The extent.
        extent: ExtentId,
        /// Index of the chunk.
        chunk_index: u64,
    },
    /// Invalid parameters for a new extent.
    #[error("invalid extent parameters: {0}")]
    BadParameters(String),
    /// No such extent on this disk.
    #[error("extent {0} does not exist on this disk")]
    UnknownExtent(ExtentId),
    /// An extent with that id already exists on this disk.
    #[error("extent {0} already exists on this disk")]
    ExtentExists(ExtentId),
    /// A write to an extent that is sealed.
    #[error("extent {0} is sealed")]
    Sealed(ExtentId),
    /// An operation for replicas on a fragment, or the other way round.
    #[error("extent {0} is not a {1} extent")]
    WrongKind(ExtentId, &'static str),
    /// An earlier write or fsync failed; the extent takes no more writes until the disk is
    /// reopened, which recovers it to its last durable record.
    #[error("extent {0} failed after an I/O error and takes no more writes until the disk is reopened")]
    Failed(ExtentId),
    /// A trash entry that does not exist.
    #[error("no trash entry {0}")]
    UnknownTrash(String),
    /// The RocksDB catalog refused an operation.
    #[error("catalog {op}: {detail}")]
    Catalog {
        /// What was being done.
        op: &'static str,
        /// RocksDB's message.
        detail: String,
    },
    /// A catalog entry that cannot be decoded.
    #[error("catalog entry {key}: {detail}")]
    CatalogCorrupt {
        /// The key, in hex.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

impl Error {
    /// An I/O error, turned into `DiskFull` when the file system is out of space.
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> Error {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            Error::DiskFull { path, op }
        } else {
            Error::Io { path, op, source }
        }
    }

    /// A failed read of `extent`'s bytes at `offset_bytes`: `Unreadable` when the device
    /// could not return them ([`is_media_error`]), `Corrupt` (truncated) when the file
    /// ended first, `Io` otherwise (the process's own trouble: a descriptor limit, a
    /// permission).
    pub fn read(
        extent: ExtentId,
        offset_bytes: u64,
        path: impl Into<PathBuf>,
        op: &'static str,
        source: io::Error,
    ) -> Error {
        let path = path.into();
        if is_media_error(&source) {
            Error::Unreadable { extent, offset_bytes, path, op, source }
        } else if source.kind() == io::ErrorKind::UnexpectedEof {
            Error::Corrupt { extent, offset_bytes, kind: CorruptKind::Truncated }
        } else {
            Error::Io { path, op, source }
        }
    }

    /// The same error naming `path` (for errors made where the path was not at hand).
    pub(crate) fn at_path(self, path: &std::path::Path) -> Error {
        match self {
            Error::Io { op, source, .. } => Error::io(path, op, source),
            Error::Unreadable { extent, offset_bytes, op, source, .. } => {
                Error::Unreadable { extent, offset_bytes, path: path.to_path_buf(), op, source }
            }
            other => other,
        }
    }

    /// True when the file system (or the disk's reserve) had no room for the write, the
    /// catalog's included: nothing was written, and nothing says the device is failing.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::DiskFull { .. } | Error::ReserveReached { .. } => true,
            Error::Catalog { detail, .. } => detail.contains("No space left"),
            _ => false,
        }
    }

    /// True when the error means that stored bytes are bad (and a repair is due).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }

    /// True when an extent's bytes cannot be served from this disk, corrupt or unreadable:
    /// the extent is due a repair (readers go to another copy and report it).
    pub fn is_bad_extent(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Unreadable { .. })
    }
}

/// Whether a read's error says the device could not return the bytes: EIO (a latent
/// sector error, a dying device, a file system shut down after one), EUCLEAN and EBADMSG
/// (ext4's and XFS's `EFSCORRUPTED` and `EFSBADCRC`: their own checks of what they hold
/// failed).
pub fn is_media_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EUCLEAN | libc::EBADMSG))
}
