//! Errors of the volume server, as gRPC statuses with stable codes
//! (`cellar_proto::error_code`) in the `cellar-error` metadata key.

use cellar_blockstore::Error as DiskError;
use cellar_proto::error_code as code;
use tonic::{Code, Status};

pub use cellar_volume_api::errors::{bad_request, code_of, master_status, status};

/// Maps a blockstore error to a status.
pub fn disk_status(e: &DiskError) -> Status {
    let msg = e.to_string();
    match e {
        // Bytes that cannot be served from here, bad or unreadable: the reader goes to
        // another copy, and the server reports the extent for repair.
        DiskError::Corrupt { .. } | DiskError::Unreadable { .. } => {
            status(Code::DataLoss, code::DATA_CORRUPT, msg)
        }
        DiskError::UnknownExtent(_) => status(Code::NotFound, code::EXTENT_NOT_FOUND, msg),
        DiskError::OffsetMismatch { .. } => status(Code::FailedPrecondition, code::OFFSET_MISMATCH, msg),
        DiskError::Sealed(_) => status(Code::FailedPrecondition, code::EXTENT_SEALED, msg),
        DiskError::RecordTooLarge { .. }
        | DiskError::OffsetPastEnd { .. }
        | DiskError::BadSealLength { .. }
        | DiskError::BadRange { .. }
        | DiskError::BadParameters(_)
        | DiskError::WrongKind(..)
        | DiskError::Unwritten { .. } => bad_request(msg),
        DiskError::ExtentExists(_) => status(Code::AlreadyExists, code::BAD_REQUEST, msg),
        DiskError::Io { .. }
        | DiskError::DiskFull { .. }
        | DiskError::ReserveReached { .. }
        | DiskError::Failed(_) => status(Code::Unavailable, code::DISK_FAILED, msg),
        _ => status(Code::Internal, code::INTERNAL, msg),
    }
}

/// A blocking task that panicked or was cancelled.
pub fn join_status(e: &tokio::task::JoinError) -> Status {
    status(Code::Internal, code::INTERNAL, format!("disk worker: {e}"))
}
