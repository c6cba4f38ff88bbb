//! Commands that go through Raft, their responses, and the errors a command can be refused
//! with. A refused command changes nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{DiskHealth, ExtentPlace, IndexEntry, VolumeRecord, VolumeState};

/// Fixed-size bytes: lowercase hex in human-readable forms (JSON, logs), the raw bytes in
/// the binary encoding ([`crate::codec`]).
macro_rules! hex_bytes {
    ($(#[$doc:meta])* $name:ident, $len:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                if !d.is_human_readable() {
                    return <[u8; $len]>::deserialize(d).map($name);
                }
                let text = String::deserialize(d)?;
                let mut out = [0u8; $len];
                hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
                Ok($name(out))
            }
        }

        impl $name {
            /// From a byte slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Option<$name> {
                bytes.try_into().ok().map($name)
            }
        }
    };
}

hex_bytes!(
    /// A SHA-256 block key; 64 hex characters when human-readable.
    Hash32,
    32
);

hex_bytes!(
    /// A block's read digest (BLAKE3 of its bytes keyed by its SHA-256, first 16 bytes):
    /// what gets check the bytes they assemble against; 32 hex characters when human-readable.
    Digest16,
    16
);

/// A disk as a node registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRegistration {
    /// Blockstore disk identity (hex).
    pub uuid: String,
    /// Path on the node.
    pub path: String,
    /// File system size.
    pub capacity_bytes: u64,
    /// Bytes held by extents.
    pub used_bytes: u64,
    /// Bytes still free.
    pub free_bytes: u64,
}

/// Disk statistics carried by a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStat {
    /// Which disk.
    pub disk_id: u64,
    /// File system size.
    pub capacity_bytes: u64,
    /// Bytes held by extents.
    pub used_bytes: u64,
    /// Bytes still free.
    pub free_bytes: u64,
    /// The node considers the disk failed.
    pub failed: bool,
    /// Bytes of deleted extents in the disk's trash (absent in older commands: 0).
    #[serde(default)]
    pub trash_bytes: u64,
    /// Extents in the disk's trash.
    #[serde(default)]
    pub trash_extents: u64,
}

/// One index entry to commit, under the writer's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexCommit {
    /// The block key.
    pub hash: Hash32,
    /// Volume the record was appended to.
    pub volume_id: u64,
    /// The writer's lease epoch on that volume.
    pub lease_epoch: u64,
    /// Offset of the record in the volume.
    pub offset_bytes: u64,
    /// The block's length (its replica record adds a header).
    pub payload_bytes: u32,
    /// CRC32 of the payload.
    pub crc32: u32,
    /// The block's read digest; absent in entries committed before digests existed.
    #[serde(default)]
    pub digest: Option<Digest16>,
}

/// Identifies one logical client call across its retries (exactly-once commands; the
/// client sessions of the Raft dissertation, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// Random per client instance.
    pub client_id: u64,
    /// Per logical call; the same on every retry of it.
    pub seq: u64,
    /// The client's lowest call still in flight (at most `seq`): the outcomes of its calls
    /// below it will never be asked for again.
    pub lowest_pending: u64,
}

/// The calls merged into one `CommitIndex` entry, in order: each covers the next
/// `entries` entries of the batch and keeps its own request id and outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCall {
    /// The call's id; none for a caller without one (applied every time it arrives).
    #[serde(default)]
    pub request: Option<RequestId>,
    /// How many of the batch's entries are this call's.
    pub entries: u32,
}

/// One call of a [`Command::CommitObjects`]: its share of the entries and the object
/// versions that name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCall {
    /// The call's id; none for a caller without one (applied every time it arrives).
    pub request: Option<RequestId>,
    /// How many of the batch's entries are this call's.
    pub entries: u32,
    /// Versions to add after the call's entries, each only if its entry was committed.
    pub versions: Vec<EntryVersion>,
}

/// An object version committed with the block it names (see [`Command::CommitObjects`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryVersion {
    /// Index among its call's entries of the block (an unreferenced one).
    pub entry: u32,
    /// The operation (a `PutVersion`).
    pub op: crate::ns_types::NsOp,
}

/// A state change, proposed by the leader and applied by every replica in log order.
/// Times are the proposing leader's clock, so that applying is deterministic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// A volume server registers (first start) or re-registers (restart).
    RegisterNode {
        /// The id kept on its disks, if it has one.
        node_id: Option<u64>,
        /// Its gRPC address.
        address: String,
        /// Its zone.
        zone: String,
        /// Its disks.
        disks: Vec<DiskRegistration>,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// Liveness and disk statistics.
    Heartbeat {
        /// The node.
        node_id: u64,
        /// Its disks' statistics.
        disks: Vec<DiskStat>,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// A new open volume with a write lease; the placement was chosen by the leader.
    AllocateVolume {
        /// The lease holder.
        holder: String,
        /// Scheme the volume will be coded with (two bytes, validated when decoded).
        #[serde(with = "crate::types::scheme_bytes")]
        scheme: cellar_erasure::Scheme,
        /// Replica placement.
        replicas: Vec<ExtentPlace>,
        /// Lease duration.
        lease_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// Extends a lease held at `lease_epoch`.
    RenewLease {
        /// The volume.
        volume_id: u64,
        /// The epoch the holder has.
        lease_epoch: u64,
        /// Lease duration from now.
        lease_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// Index entries, many per Raft entry.
    CommitIndex {
        /// The entries.
        entries: Vec<IndexCommit>,
        /// Largest volume size: commits past it are refused.
        volume_size_max_bytes: u64,
        /// Leader's clock (lease expiry).
        now_unix_ms: u64,
        /// The calls the entries came from, in order (empty: one call without an id).
        #[serde(default)]
        calls: Vec<CommitCall>,
    },
    /// Seals an open volume at `length_bytes` (default: its acknowledged end) and queues
    /// its encode onto `fragments` (chosen by the leader's placement; empty when no
    /// placement was possible, and then the volume stays replicated until one is).
    SealVolume {
        /// The volume.
        volume_id: u64,
        /// The sealed length; never below the acknowledged end.
        length_bytes: Option<u64>,
        /// Where the k + m fragments go, in fragment order.
        #[serde(default)]
        fragments: Vec<ExtentPlace>,
    },
    /// Takes over the write lease of an open volume whose lease expired (or was dropped):
    /// the epoch goes up by one, which fences the previous holder out.
    AcquireLease {
        /// The volume.
        volume_id: u64,
        /// The new holder.
        holder: String,
        /// Lease duration.
        lease_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// Drops one reference from each hash; an entry left with none is removed from the
    /// index (its bytes become garbage for compaction). Unknown hashes are skipped.
    DropReferences {
        /// The block keys.
        hashes: Vec<Hash32>,
    },
    /// Queues a task (repair planners and operators).
    EnqueueTask {
        /// The work; the node that runs it follows from the kind.
        kind: crate::types::TaskKind,
    },
    /// A volume server takes up to `max` of its queued tasks (and any whose claim expired).
    ClaimTasks {
        /// The volume server.
        node_id: u64,
        /// At most this many.
        max: u32,
        /// How long the claim holds before the task may be handed out again.
        claim_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
        /// Task kinds the node defers: left queued.
        deferred_kinds: Vec<crate::types::TaskType>,
    },
    /// A volume server reports a task's outcome.
    ReportTask {
        /// The task.
        task_id: u64,
        /// The reporting node (must be the assignee).
        node_id: u64,
        /// Done, or failed (retried until the attempt limit).
        success: bool,
        /// What happened.
        detail: String,
    },
    /// The planner (re)queues a sealed volume's encode: on `node_id` (a replica holder),
    /// onto `fragments`, replacing `replaces_task` (the encode it saw, none if none).
    PlanEncode {
        /// The volume.
        volume_id: u64,
        /// The replica holder that runs the encode.
        node_id: u64,
        /// Where the k + m fragments go, in fragment order.
        fragments: Vec<ExtentPlace>,
        /// The volume's current encode task, which this one replaces.
        replaces_task: Option<u64>,
        /// Leader's clock (a running claim is not taken over).
        now_unix_ms: u64,
    },
    /// A volume server found a missing or corrupt extent.
    ReportBadExtent {
        /// The volume.
        volume_id: u64,
        /// The disk holding the bad extent.
        disk_id: u64,
        /// What was wrong.
        reason: String,
    },
    /// `command` as one call of a client: applied at most once per request id; a retry
    /// is answered with the first outcome (see [`crate::session`]). Never wraps a
    /// `CommitIndex` (its calls carry their ids) or another `Once`.
    Once {
        /// The call.
        request: RequestId,
        /// Leader's clock (session expiry).
        now_unix_ms: u64,
        /// The command.
        command: Box<Command>,
    },
    /// The leader's failure detector: node `node_id` has not been heard from for
    /// `down_after_ms`; it is marked down (its extents are repaired elsewhere) unless a
    /// heartbeat committed since says otherwise.
    MarkNodeDown {
        /// The node.
        node_id: u64,
        /// Silence after which a node is down (master config `down_after_ms`).
        down_after_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// The repair planner queues `kind` (a reconstruct or copy), replacing `replaces_task`
    /// (a repair of the same extent whose executor died or gave up), after the same checks
    /// as [`Command::EnqueueTask`].
    PlanRepair {
        /// The repair.
        kind: crate::types::TaskKind,
        /// The earlier repair of the same extent, dropped first.
        replaces_task: Option<u64>,
        /// Leader's clock (a running claim is not taken over).
        now_unix_ms: u64,
    },
    /// An operator drains (or undrains) a node or disk: while drained it takes no new
    /// extents and the repair planner moves what it holds elsewhere.
    SetDrain {
        /// The node or disk.
        target: crate::types::DrainTarget,
        /// Drain (true) or undrain.
        drained: bool,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// An operator removes a drained or down node that no volume places anything on.
    RemoveNode {
        /// The node.
        node_id: u64,
    },
    /// [`Command::CommitIndex`] where the entries at `unreferenced` (indices into
    /// `entries`, ascending) are blocks of object uploads: a new entry starts with no
    /// reference and an existing one gains none (the version naming them adds theirs).
    CommitIndexUnreferenced {
        /// The entries.
        entries: Vec<IndexCommit>,
        /// Which of them take no reference.
        unreferenced: Vec<u32>,
        /// Largest volume size: commits past it are refused.
        volume_size_max_bytes: u64,
        /// Leader's clock (lease expiry).
        now_unix_ms: u64,
        /// The calls the entries came from, in order.
        calls: Vec<CommitCall>,
    },
    /// A namespace operation (buckets, objects, uploads, access keys).
    Namespace {
        /// The operation.
        op: crate::ns_types::NsOp,
        /// Leader's clock (creation times).
        now_unix_ms: u64,
    },
    /// The compaction planner reclaims a volume that holds no referenced block (see
    /// [`crate::reclaim`]).
    DeleteVolume {
        /// The volume.
        volume_id: u64,
        /// Its length when the planner looked.
        size_bytes: u64,
        /// Every index entry pointing into it then (all unreferenced).
        entries: Vec<Hash32>,
    },
    /// A writer's index commit in which the entries with a nonzero `relocate_from` (same
    /// length as `entries`) move blocks that compaction rewrote: such an entry takes the
    /// new location only if the block's entry still points into `relocate_from` with the
    /// same length and CRC, keeping its references; the others are committed as by
    /// `CommitIndex` (with references).
    RelocateIndex {
        /// The entries.
        entries: Vec<IndexCommit>,
        /// Per entry: the volume the block moves out of, or 0.
        relocate_from: Vec<u64>,
        /// Largest volume size: commits past it are refused.
        volume_size_max_bytes: u64,
        /// Leader's clock (lease expiry).
        now_unix_ms: u64,
    },
    /// Namespace operations of many calls in one Raft entry (the leader's namespace
    /// batcher merges concurrent `NsWrite`s): applied in order, each as its own
    /// [`Command::Namespace`] (a refused one changes nothing and the others still apply),
    /// each call with an id at most once.
    NamespaceBatch {
        /// The calls, in order.
        calls: Vec<NsCall>,
        /// Leader's clock (creation times, session expiry).
        now_unix_ms: u64,
    },
    /// Index commits of object blocks together with the versions naming them, in one Raft
    /// entry (an S3 PutObject of one block: one commit where a block commit and then a
    /// namespace write took two). Per call, at most once by its id: its entries are
    /// committed as by [`Command::CommitIndexUnreferenced`], then each of its versions is
    /// applied as a namespace operation if its entry was committed or deduplicated (else
    /// refused, nothing written for it).
    CommitObjects {
        /// The entries.
        entries: Vec<IndexCommit>,
        /// Which of them take no reference (indices into `entries`, ascending).
        unreferenced: Vec<u32>,
        /// Largest volume size: commits past it are refused.
        volume_size_max_bytes: u64,
        /// Leader's clock (lease expiry, creation times, session expiry).
        now_unix_ms: u64,
        /// The calls, in order; they cover `entries`.
        calls: Vec<ObjectCall>,
    },
    /// The leader raises the cell's apply version to `version`, which every member offered
    /// ([`crate::apply_version`]): commands after it apply with that version's behaviour.
    /// A lower or equal version changes nothing; one above this build's stops the master.
    RaiseApplyVersion {
        /// The new version.
        version: u32,
        /// Leader's clock.
        now_unix_ms: u64,
    },
    /// An operator hands a given-up task (every attempt failed) back to its node's queue
    /// with its attempts anew, once what failed it is mended, instead of waiting for its
    /// planner (a given-up delete is never planned again). From apply version
    /// [`crate::apply_version::RETRY_TASK`]; refused below it, and for a task that is not
    /// given up.
    RetryTask {
        /// The task.
        task_id: u64,
    },
    /// The first task poll of a volume server's process: every task of the node still
    /// claimed (by its process before, which cannot be running it: a process runs only
    /// the tasks its own polls were answered) counts a failed attempt, as a
    /// [`Command::ReportTask`] failure would, then the node claims as by
    /// [`Command::ClaimTasks`]. Without it such a task waited for its claim to run out
    /// (`TASK_CLAIM_MS`, 10 minutes) after a restart. From apply version
    /// [`crate::apply_version::CLAIMS_RELEASED_AT_START`]; refused below it.
    ClaimTasksAfterStart {
        /// The volume server.
        node_id: u64,
        /// At most this many.
        max: u32,
        /// How long the claim holds before the task may be handed out again.
        claim_ms: u64,
        /// Leader's clock.
        now_unix_ms: u64,
        /// Task kinds the node defers: left queued.
        deferred_kinds: Vec<crate::types::TaskType>,
    },
}

/// One call of a [`Command::NamespaceBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NsCall {
    /// Its id, if the client gave one (applied at most once).
    pub request: Option<RequestId>,
    /// The operation.
    pub op: crate::ns_types::NsOp,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::RegisterNode { node_id, address, zone, .. } => {
                write!(f, "register_node({node_id:?}, {address}, {zone})")
            }
            Command::Heartbeat { node_id, .. } => write!(f, "heartbeat({node_id})"),
            Command::AllocateVolume { holder, .. } => write!(f, "allocate_volume({holder})"),
            Command::RenewLease { volume_id, lease_epoch, .. } => {
                write!(f, "renew_lease({volume_id}, {lease_epoch})")
            }
            Command::CommitIndex { entries, .. } => write!(f, "commit_index({} entries)", entries.len()),
            Command::SealVolume { volume_id, length_bytes, .. } => {
                write!(f, "seal({volume_id}, {length_bytes:?})")
            }
            Command::AcquireLease { volume_id, holder, .. } => {
                write!(f, "acquire_lease({volume_id}, {holder})")
            }
            Command::DropReferences { hashes } => write!(f, "drop_references({} hashes)", hashes.len()),
            Command::EnqueueTask { kind } => write!(f, "enqueue_task({}, {})", kind.name(), kind.volume_id()),
            Command::PlanEncode { volume_id, node_id, replaces_task, .. } => {
                write!(f, "plan_encode({volume_id}, node {node_id}, replaces {replaces_task:?})")
            }
            Command::ReportBadExtent { volume_id, disk_id, .. } => {
                write!(f, "report_bad_extent({volume_id}, {disk_id})")
            }
            Command::ClaimTasks { node_id, max, .. } => write!(f, "claim_tasks({node_id}, {max})"),
            Command::ReportTask { task_id, success, .. } => write!(f, "report_task({task_id}, {success})"),
            Command::Once { request, command, .. } => {
                write!(f, "{command} [client {:016x} #{}]", request.client_id, request.seq)
            }
            Command::MarkNodeDown { node_id, .. } => write!(f, "mark_node_down({node_id})"),
            Command::SetDrain { target, drained, .. } => write!(f, "set_drain({target:?}, {drained})"),
            Command::RemoveNode { node_id } => write!(f, "remove_node({node_id})"),
            Command::CommitIndexUnreferenced { entries, unreferenced, .. } => {
                write!(f, "commit_index({} entries, {} unreferenced)", entries.len(), unreferenced.len())
            }
            Command::Namespace { op, .. } => write!(f, "namespace({})", op.name()),
            Command::NamespaceBatch { calls, .. } => write!(f, "namespace_batch({} calls)", calls.len()),
            Command::CommitObjects { entries, calls, .. } => write!(
                f,
                "commit_objects({} entries, {} versions)",
                entries.len(),
                calls.iter().map(|c| c.versions.len()).sum::<usize>()
            ),
            Command::RaiseApplyVersion { version, .. } => write!(f, "raise_apply_version({version})"),
            Command::RetryTask { task_id } => write!(f, "retry_task({task_id})"),
            Command::ClaimTasksAfterStart { node_id, max, .. } => {
                write!(f, "claim_tasks_after_start({node_id}, {max})")
            }
            Command::RelocateIndex { entries, relocate_from, .. } => write!(
                f,
                "relocate_index({} entries, {} moved)",
                entries.len(),
                relocate_from.iter().filter(|v| **v != 0).count()
            ),
            Command::DeleteVolume { volume_id, entries, .. } => {
                write!(f, "delete_volume({volume_id}, {} dead entries)", entries.len())
            }
            Command::PlanRepair { kind, replaces_task, .. } => {
                write!(f, "plan_repair({}, {}, replaces {replaces_task:?})", kind.name(), kind.volume_id())
            }
        }
    }
}

/// Why a command (or one entry of a batch) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum CommandError {
    /// No such volume.
    #[error("volume {volume_id} does not exist")]
    UnknownVolume {
        /// The volume.
        volume_id: u64,
    },
    /// No such node.
    #[error("node {node_id} is not registered in this cell")]
    UnknownNode {
        /// The node.
        node_id: u64,
    },
    /// No such disk (or not of this node / volume).
    #[error("disk {disk_id}: {detail}")]
    UnknownDisk {
        /// The disk.
        disk_id: u64,
        /// Context.
        detail: String,
    },
    /// The lease epoch is not current, or the lease expired.
    #[error("stale lease on volume {volume_id}: epoch {given_epoch} given, current {current_epoch:?}{}", if *expired { " (expired)" } else { "" })]
    StaleLease {
        /// The volume.
        volume_id: u64,
        /// The epoch the caller used.
        given_epoch: u64,
        /// The volume's current epoch, if it has a lease.
        current_epoch: Option<u64>,
        /// The current lease exists but has expired.
        expired: bool,
    },
    /// The volume is not open.
    #[error("volume {volume_id} is {state:?}, not open")]
    VolumeNotOpen {
        /// The volume.
        volume_id: u64,
        /// Its state.
        state: VolumeState,
    },
    /// A malformed or out-of-bounds request.
    #[error("bad request: {detail}")]
    BadRequest {
        /// What was wrong.
        detail: String,
    },
    /// A call older than what its client's session still remembers: it may or may not
    /// have been applied, and it is not applied now.
    #[error("request {seq} of client {client_id:016x} is older than the retained window (from {floor})")]
    RequestExpired {
        /// The client.
        client_id: u64,
        /// The call.
        seq: u64,
        /// The lowest call the session still answers.
        floor: u64,
    },
    /// A namespace operation was refused (an S3 error).
    #[error("{}: {detail}", code.as_str())]
    Namespace {
        /// The S3 error.
        code: crate::ns_types::NsCode,
        /// What was wrong.
        detail: String,
    },
}

impl CommandError {
    /// The stable error code (cellar_proto::error_code).
    pub fn code(&self) -> &'static str {
        use cellar_proto::error_code as c;
        match self {
            CommandError::UnknownVolume { .. } => c::UNKNOWN_VOLUME,
            CommandError::UnknownNode { .. } => c::UNKNOWN_NODE,
            CommandError::UnknownDisk { .. } => c::UNKNOWN_DISK,
            CommandError::StaleLease { .. } => c::STALE_LEASE,
            CommandError::VolumeNotOpen { .. } => c::VOLUME_NOT_OPEN,
            CommandError::BadRequest { .. } => c::BAD_REQUEST,
            CommandError::RequestExpired { .. } => c::REQUEST_EXPIRED,
            CommandError::Namespace { code, .. } => code.as_str(),
        }
    }
}

/// The outcome of one entry of a `CommitIndex` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitOutcome {
    /// A new index entry.
    Committed {
        /// The entry as stored.
        entry: IndexEntryView,
    },
    /// The hash was already indexed; its reference count went up.
    Deduplicated {
        /// The existing entry.
        entry: IndexEntryView,
    },
    /// Refused; nothing changed for this entry.
    Rejected {
        /// Why.
        error: CommandError,
    },
}

/// An index entry with its key, for responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntryView {
    /// The block key.
    pub hash: Hash32,
    /// Volume.
    pub volume_id: u64,
    /// Record offset.
    pub offset_bytes: u64,
    /// The block's length.
    pub payload_bytes: u32,
    /// Payload CRC32.
    pub crc32: u32,
    /// Read digest, if the entry has one.
    #[serde(default)]
    pub digest: Option<Digest16>,
    /// Reference count.
    pub references: u64,
}

impl IndexEntryView {
    /// Joins a key and its entry.
    pub fn new(hash: Hash32, e: &IndexEntry) -> IndexEntryView {
        IndexEntryView {
            hash,
            volume_id: e.volume_id,
            offset_bytes: e.offset_bytes,
            payload_bytes: e.payload_bytes,
            crc32: e.crc32,
            digest: e.digest.map(Digest16),
            references: e.references,
        }
    }
}

/// What applying a command returns to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Membership changes and blank entries.
    Empty,
    /// `RegisterNode`.
    NodeRegistered {
        /// The node's id.
        node_id: u64,
        /// Its disks' ids, in registration order.
        disk_ids: Vec<u64>,
    },
    /// `Heartbeat`.
    HeartbeatAck {
        /// Current cluster map version.
        cluster_map_version: u64,
    },
    /// `AllocateVolume`, `RenewLease`, `SealVolume`, `ReportBadExtent`.
    Volume {
        /// The volume after the command.
        volume: VolumeRecord,
    },
    /// `ClaimTasks`: the tasks now claimed by the node.
    Tasks {
        /// The claimed tasks.
        tasks: Vec<crate::types::TaskRecord>,
    },
    /// `DropReferences`: the entries after the drop, for the hashes that were indexed.
    Dropped {
        /// Entries (references 0: removed from the index).
        entries: Vec<IndexEntryView>,
    },
    /// `EnqueueTask`: the queued task.
    TaskQueued {
        /// The task.
        task: crate::types::TaskRecord,
    },
    /// `ReportTask`.
    TaskReported {
        /// The task after the report (`None` once done and removed).
        task: Option<crate::types::TaskRecord>,
    },
    /// `CommitIndex`: one outcome per entry.
    Committed {
        /// Outcomes, in request order.
        outcomes: Vec<CommitOutcome>,
    },
    /// The command was refused; nothing changed.
    Refused {
        /// Why.
        error: CommandError,
    },
    /// `Namespace`: the operation's outcome.
    Namespace {
        /// The outcome.
        result: crate::ns_types::NsResult,
    },
    /// `NamespaceBatch`: one response per call, in order (`Namespace` or `Refused`).
    NamespaceBatch {
        /// The calls' responses.
        responses: Vec<Response>,
    },
    /// `CommitObjects`: one outcome per entry and one response per version (`Namespace`
    /// or `Refused`), in order.
    CommittedObjects {
        /// The entries' outcomes.
        outcomes: Vec<CommitOutcome>,
        /// The versions' responses.
        versions: Vec<Response>,
    },
}

/// Disk health from a heartbeat flag.
pub fn health_of(failed: bool) -> DiskHealth {
    if failed { DiskHealth::Failed } else { DiskHealth::Ok }
}
