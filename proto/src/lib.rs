//! cellar's wire contract: the generated gRPC code for the master's client API and for
//! Raft between masters, and the stable error codes that travel in gRPC metadata.

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
