//! cellar's wire contract: the generated gRPC code for the master's client API and for
//! Raft between masters, and the stable error codes that travel in gRPC metadata.

/// Types several APIs share (`cellar.common.v1`): volume state, extent part, coding scheme.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod common {
    tonic::include_proto!("cellar.common.v1");
}

mod domain;
pub use domain::scheme_of;

/// The master's client API (`cellar.master.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod master {
    tonic::include_proto!("cellar.master.v1");
}

/// Raft RPCs between master replicas (`cellar.raft.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod raft {
    tonic::include_proto!("cellar.raft.v1");
}

/// A volume server's extent API (`cellar.volume.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod volume {
    tonic::include_proto!("cellar.volume.v1");
}

/// A frontend's block API over gRPC (`cellar.frontend.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod frontend {
    tonic::include_proto!("cellar.frontend.v1");
}

/// Metadata key of the stable error code on every error status.
pub const ERROR_CODE_KEY: &str = "cellar-error";
/// Metadata key of the leader's node id on a NOT_LEADER status.
pub const LEADER_ID_KEY: &str = "cellar-leader-id";
/// Metadata key of the leader's address on a NOT_LEADER status.
pub const LEADER_ADDR_KEY: &str = "cellar-leader-addr";
/// Metadata key of the cluster secret on every call between cellar processes.
pub const SECRET_KEY: &str = "cellar-secret";

/// Stable error codes: scripts and clients branch on these, never on messages.
pub mod error_code {
    /// This master is not the leader; retry at the leader named in the metadata.
    pub const NOT_LEADER: &str = "NOT_LEADER";
    /// No leader is known yet (election in progress).
    pub const NO_LEADER: &str = "NO_LEADER";
    /// The write lease's epoch is not the volume's current one, or it expired.
    pub const STALE_LEASE: &str = "STALE_LEASE";
    /// No such volume.
    pub const UNKNOWN_VOLUME: &str = "UNKNOWN_VOLUME";
    /// No such node.
    pub const UNKNOWN_NODE: &str = "UNKNOWN_NODE";
    /// No such disk.
    pub const UNKNOWN_DISK: &str = "UNKNOWN_DISK";
    /// The volume is not open for writes.
    pub const VOLUME_NOT_OPEN: &str = "VOLUME_NOT_OPEN";
    /// Placement cannot satisfy the failure-domain rules.
    pub const NOT_ENOUGH_FAILURE_DOMAINS: &str = "NOT_ENOUGH_FAILURE_DOMAINS";
    /// A malformed or out-of-bounds request.
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    /// The cluster secret is missing or wrong.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// An internal failure (storage, Raft).
    pub const INTERNAL: &str = "INTERNAL";
    /// An append's offset is not the replica's end (a competing or stale writer).
    pub const OFFSET_MISMATCH: &str = "OFFSET_MISMATCH";
    /// The extent is not on that disk.
    pub const EXTENT_NOT_FOUND: &str = "EXTENT_NOT_FOUND";
    /// Stored bytes failed their checksum; they are not returned (the extent is reported).
    pub const DATA_CORRUPT: &str = "DATA_CORRUPT";
    /// The disk failed (I/O error, vanished) or is full.
    pub const DISK_FAILED: &str = "DISK_FAILED";
    /// The extent is sealed and takes no more writes.
    pub const EXTENT_SEALED: &str = "EXTENT_SEALED";
    /// The request would replace an extent the master still places there.
    pub const EXTENT_LIVE: &str = "EXTENT_LIVE";
    /// Too many bytes in flight; retry later.
    pub const BUSY: &str = "BUSY";
    /// The callee did not answer within the call's deadline (set by the caller).
    pub const DEADLINE_EXCEEDED: &str = "DEADLINE_EXCEEDED";
    /// A retried call's request id is older than what the master still remembers of its
    /// client: whether the first attempt was applied is not known any more, and it is not
    /// applied again.
    pub const REQUEST_EXPIRED: &str = "REQUEST_EXPIRED";
}

/// The stable error codes of [`error_code`] as a type: what callers branch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// [`error_code::NOT_LEADER`]
    NotLeader,
    /// [`error_code::NO_LEADER`]
    NoLeader,
    /// [`error_code::STALE_LEASE`]
    StaleLease,
    /// [`error_code::UNKNOWN_VOLUME`]
    UnknownVolume,
    /// [`error_code::UNKNOWN_NODE`]
    UnknownNode,
    /// [`error_code::UNKNOWN_DISK`]
    UnknownDisk,
    /// [`error_code::VOLUME_NOT_OPEN`]
    VolumeNotOpen,
    /// [`error_code::NOT_ENOUGH_FAILURE_DOMAINS`]
    NotEnoughFailureDomains,
    /// [`error_code::BAD_REQUEST`]
    BadRequest,
    /// [`error_code::UNAUTHENTICATED`]
    Unauthenticated,
    /// [`error_code::INTERNAL`]
    Internal,
    /// [`error_code::OFFSET_MISMATCH`]
    OffsetMismatch,
    /// [`error_code::EXTENT_NOT_FOUND`]
    ExtentNotFound,
    /// [`error_code::DATA_CORRUPT`]
    DataCorrupt,
    /// [`error_code::DISK_FAILED`]
    DiskFailed,
    /// [`error_code::EXTENT_SEALED`]
    ExtentSealed,
    /// [`error_code::EXTENT_LIVE`]
    ExtentLive,
    /// [`error_code::BUSY`]
    Busy,
    /// [`error_code::DEADLINE_EXCEEDED`]
    DeadlineExceeded,
    /// [`error_code::REQUEST_EXPIRED`]
    RequestExpired,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::NotLeader,
        ErrorCode::NoLeader,
        ErrorCode::StaleLease,
        ErrorCode::UnknownVolume,
        ErrorCode::UnknownNode,
        ErrorCode::UnknownDisk,
        ErrorCode::VolumeNotOpen,
        ErrorCode::NotEnoughFailureDomains,
        ErrorCode::BadRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::Internal,
        ErrorCode::OffsetMismatch,
        ErrorCode::ExtentNotFound,
        ErrorCode::DataCorrupt,
        ErrorCode::DiskFailed,
        ErrorCode::ExtentSealed,
        ErrorCode::ExtentLive,
        ErrorCode::Busy,
        ErrorCode::DeadlineExceeded,
        ErrorCode::RequestExpired,
    ];

    /// The code as it travels in the `cellar-error` metadata.
    pub fn as_str(self) -> &'static str {
        use error_code as c;
        match self {
            ErrorCode::NotLeader => c::NOT_LEADER,
            ErrorCode::NoLeader => c::NO_LEADER,
            ErrorCode::StaleLease => c::STALE_LEASE,
            ErrorCode::UnknownVolume => c::UNKNOWN_VOLUME,
            ErrorCode::UnknownNode => c::UNKNOWN_NODE,
            ErrorCode::UnknownDisk => c::UNKNOWN_DISK,
            ErrorCode::VolumeNotOpen => c::VOLUME_NOT_OPEN,
            ErrorCode::NotEnoughFailureDomains => c::NOT_ENOUGH_FAILURE_DOMAINS,
            ErrorCode::BadRequest => c::BAD_REQUEST,
            ErrorCode::Unauthenticated => c::UNAUTHENTICATED,
            ErrorCode::Internal => c::INTERNAL,
            ErrorCode::OffsetMismatch => c::OFFSET_MISMATCH,
            ErrorCode::ExtentNotFound => c::EXTENT_NOT_FOUND,
            ErrorCode::DataCorrupt => c::DATA_CORRUPT,
            ErrorCode::DiskFailed => c::DISK_FAILED,
            ErrorCode::ExtentSealed => c::EXTENT_SEALED,
            ErrorCode::ExtentLive => c::EXTENT_LIVE,
            ErrorCode::Busy => c::BUSY,
            ErrorCode::DeadlineExceeded => c::DEADLINE_EXCEEDED,
            ErrorCode::RequestExpired => c::REQUEST_EXPIRED,
        }
    }

    /// The code a metadata value names; none for a code this build does not know.
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The code a status carries in its `cellar-error` metadata, if any is known.
    pub fn of(status: &tonic::Status) -> Option<ErrorCode> {
        status.metadata().get(ERROR_CODE_KEY).and_then(|v| v.to_str().ok()).and_then(ErrorCode::from_name)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod error_code_tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_name_and_a_status() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            let mut status = tonic::Status::internal("x");
            status.metadata_mut().insert(ERROR_CODE_KEY, code.as_str().parse().expect("ascii"));
            assert_eq!(ErrorCode::of(&status), Some(code));
        }
        assert_eq!(ErrorCode::from_name("SOMETHING_NEW"), None);
        assert_eq!(ErrorCode::of(&tonic::Status::internal("no code")), None);
    }
}
