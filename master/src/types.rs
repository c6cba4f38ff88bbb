//! The master's replicated state: nodes, disks, volumes, the block index, tasks. The
//! records are stored in the versioned binary form of [`crate::codec`] (docs/FORMAT.md
//! section 13); the block index entry has its own fixed form, below.

use cellar_erasure::Scheme;
use serde::{Deserialize, Serialize};

/// Encoding version of the JSON records below.
pub const RECORD_VERSION: u32 = 1;

fn record_version() -> u32 {
    RECORD_VERSION
}

/// Liveness of a volume server as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeating.
    Up,
    /// Missed heartbeats for `down_after`.
    Down,
}

impl NodeState {
    /// Text form used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
        }
    }
}

/// A registered volume server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// Cell-unique node id, assigned at first registration.
    pub node_id: u64,
    /// gRPC address of the volume server.
    pub address: String,
    /// Failure domain.
    pub zone: String,
    /// Up or down.
    pub state: NodeState,
    /// Last heartbeat (leader's clock, Unix ms), as committed.
    pub last_heartbeat_unix_ms: u64,
    /// The node's disks.
    pub disk_ids: Vec<u64>,
}

/// Health of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskHealth {
    /// Serving.
    Ok,
    /// Reported failed (I/O errors, vanished): no new extents, its extents need repair.
    Failed,
}

impl DiskHealth {
    /// Text form used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskHealth::Ok => "ok",
            DiskHealth::Failed => "failed",
        }
    }
}

/// A disk of a registered node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRecord {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// Cell-unique disk id.
    pub disk_id: u64,
    /// Owning node.
    pub node_id: u64,
    /// The blockstore's disk identity (hex).
    pub uuid: String,
    /// Mount point or directory on the node.
    pub path: String,
    /// File system size.
    pub capacity_bytes: u64,
    /// Bytes held by cellar extents.
    pub used_bytes: u64,
    /// Bytes the file system can still give.
    pub free_bytes: u64,
    /// Serving or failed.
    pub health: DiskHealth,
    /// Bytes of deleted extents in the disk's trash, as of the last heartbeat (absent in
    /// older records: 0).
    #[serde(default)]
    pub trash_bytes: u64,
    /// Extents in the disk's trash, as of the last heartbeat.
    #[serde(default)]
    pub trash_extents: u64,
}

/// What an operator drains: everything is moved off it, and it takes no new extents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DrainTarget {
    /// Every disk of a node.
    Node {
        /// The node.
        node_id: u64,
    },
    /// One disk.
    Disk {
        /// The disk.
        disk_id: u64,
    },
}

/// A drain in force (key `'r'` + target; removed by undrain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRecord {
    /// Encoding version.
    pub v: u32,
    /// What is drained.
    pub target: DrainTarget,
    /// When the drain was committed (leader's clock).
    pub since_unix_ms: u64,
}

/// Lifecycle of a volume (DESIGN section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeState {
    /// Replicated, taking appends under a lease.
    Open,
    /// Immutable, replicated, waiting to be coded.
    Sealed,
    /// Erasure-coded into fragments.
    Coded,
}

impl VolumeState {
    /// Text form used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Open => "open",
            VolumeState::Sealed => "sealed",
            VolumeState::Coded => "coded",
        }
    }

    /// Every state, for counters.
    pub const ALL: [VolumeState; 3] = [VolumeState::Open, VolumeState::Sealed, VolumeState::Coded];
}

/// Where one extent of a volume lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExtentPlace {
    /// The node.
    pub node_id: u64,
    /// The disk on that node.
    pub disk_id: u64,
}

/// The write lease on an open volume: one writer at a time, fenced by the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Bumped at every grant; appends and commits carry it.
    pub epoch: u64,
    /// Who holds it.
    pub holder: String,
    /// Expiry on the leader's clock (Unix ms), as committed.
    pub expires_unix_ms: u64,
}

/// A volume: its state, scheme and placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// Cell-unique volume id.
    pub volume_id: u64,
    /// Open, sealed or coded.
    pub state: VolumeState,
    /// The scheme the volume is (or will be) coded with; replicas while open/sealed.
    /// Stored as two bytes (data, parity), validated when decoded.
    #[serde(with = "scheme_bytes")]
    pub scheme: Scheme,
    /// Replica extents (open and sealed volumes).
    pub replicas: Vec<ExtentPlace>,
    /// Fragment extents (coded volumes), fragment i at index i.
    pub fragments: Vec<ExtentPlace>,
    /// Placement version: bumped by every move or repair.
    pub generation: u64,
    /// Acknowledged end while open (the highest committed record end); sealed length after.
    pub size_bytes: u64,
    /// The write lease while open.
    pub lease: Option<Lease>,
    /// Extents reported bad (disk ids), awaiting repair.
    #[serde(default)]
    pub bad_disks: Vec<u64>,
}

/// A [`Scheme`] as its two counts, `(data, parity)`; refused when decoded if invalid.
pub mod scheme_bytes {
    use cellar_erasure::Scheme;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes `(data, parity)`.
    pub fn serialize<S: Serializer>(scheme: &Scheme, out: S) -> Result<S::Ok, S::Error> {
        (scheme.data, scheme.parity).serialize(out)
    }

    /// Reads `(data, parity)` and validates them.
    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Scheme, D::Error> {
        let (data, parity) = <(u8, u8)>::deserialize(input)?;
        Scheme::new(data, parity).map_err(|e| {
            tracing::error!(error = %e, "a stored coding scheme is out of range");
            serde::de::Error::custom(e)
        })
    }
}

/// Where a block lives: the block index entry. Stored in a fixed binary form (the index is
/// the bulk of the state: tens of millions of entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// The volume holding the block's record.
    pub volume_id: u64,
    /// Offset of the record in the volume.
    pub offset_bytes: u64,
    /// The block's length (its replica record adds the 64-byte record header).
    pub payload_bytes: u32,
    /// CRC32 of the payload.
    pub crc32: u32,
    /// How many references (puts, object versions) hold the block.
    pub references: u64,
    /// The block's read digest (BLAKE3 keyed by its SHA-256, first 16 bytes), which gets
    /// check instead of recomputing SHA-256; `None` in entries written before it existed.
    pub digest: Option<[u8; INDEX_DIGEST_BYTES]>,
}

/// Encoding version of [`IndexEntry`] values without a digest.
pub const INDEX_ENTRY_VERSION: u8 = 1;
/// Encoding version of [`IndexEntry`] values with a digest.
pub const INDEX_ENTRY_VERSION_DIGEST: u8 = 2;
/// Size of an encoded [`IndexEntry`] without a digest.
pub const INDEX_ENTRY_BYTES: usize = 33;
/// Size of a read digest.
pub const INDEX_DIGEST_BYTES: usize = 16;
/// Size of an encoded [`IndexEntry`] with a digest.
pub const INDEX_ENTRY_DIGEST_BYTES: usize = INDEX_ENTRY_BYTES + INDEX_DIGEST_BYTES;

impl IndexEntry {
    /// `[version=1][volume u64][offset u64][length u32][crc32 u32][references u64]`, LE;
    /// with a digest, version 2 and the digest's 16 bytes appended.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INDEX_ENTRY_DIGEST_BYTES);
        out.push(if self.digest.is_some() { INDEX_ENTRY_VERSION_DIGEST } else { INDEX_ENTRY_VERSION });
        out.extend_from_slice(&self.volume_id.to_le_bytes());
        out.extend_from_slice(&self.offset_bytes.to_le_bytes());
        out.extend_from_slice(&self.payload_bytes.to_le_bytes());
        out.extend_from_slice(&self.crc32.to_le_bytes());
        out.extend_from_slice(&self.references.to_le_bytes());
        if let Some(digest) = &self.digest {
            out.extend_from_slice(digest);
        }
        out
    }

    /// Decodes [`IndexEntry::encode`]; `None` for an unknown version or a length that is
    /// not its version's.
    pub fn decode(bytes: &[u8]) -> Option<IndexEntry> {
        let digest = match (bytes.first()?, bytes.len()) {
            (&INDEX_ENTRY_VERSION, INDEX_ENTRY_BYTES) => None,
            (&INDEX_ENTRY_VERSION_DIGEST, INDEX_ENTRY_DIGEST_BYTES) => {
                Some(bytes[INDEX_ENTRY_BYTES..].try_into().ok()?)
            }
            _ => return None,
        };
        let u64_at = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        let u32_at = |i: usize| bytes[i..i + 4].try_into().ok().map(u32::from_le_bytes);
        Some(IndexEntry {
            volume_id: u64_at(1)?,
            offset_bytes: u64_at(9)?,
            payload_bytes: u32_at(17)?,
            crc32: u32_at(21)?,
            references: u64_at(25)?,
            digest,
        })
    }
}

/// Counters kept in the state machine so that status never scans the tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Encoding version.
    #[serde(default = "record_version")]
    pub v: u32,
    /// Next node id to assign.
    pub next_node_id: u64,
    /// Next disk id to assign.
    pub next_disk_id: u64,
    /// Next volume id to assign.
    pub next_volume_id: u64,
    /// Bumped whenever nodes, disks or placements change; clients cache by it.
    pub cluster_map_version: u64,
    /// Volumes per state: [open, sealed, coded].
    pub volumes_by_state: [u64; 3],
    /// Entries in the block index.
    pub index_entries: u64,
    /// Next task id to assign.
    #[serde(default)]
    pub next_task_id: u64,
    /// Tasks queued or running.
    #[serde(default)]
    pub tasks_open: u64,
    /// Tasks completed.
    #[serde(default)]
    pub tasks_done: u64,
    /// Tasks given up after too many failed attempts and still queued (a failed task the
    /// planner replaces no longer counts).
    #[serde(default)]
    pub tasks_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entry_round_trips_with_and_without_a_digest_and_rejects_other_forms() {
        let e = IndexEntry {
            volume_id: 7,
            offset_bytes: 1 << 40,
            payload_bytes: 4 << 20,
            crc32: 9,
            references: 3,
            digest: None,
        };
        let v1 = e.encode();
        assert_eq!(v1.len(), INDEX_ENTRY_BYTES);
        assert_eq!(v1[0], INDEX_ENTRY_VERSION);
        assert_eq!(IndexEntry::decode(&v1), Some(e));
        let d = IndexEntry { digest: Some([0xab; INDEX_DIGEST_BYTES]), ..e };
        let v2 = d.encode();
        assert_eq!(v2.len(), INDEX_ENTRY_DIGEST_BYTES);
        assert_eq!(v2[0], INDEX_ENTRY_VERSION_DIGEST);
        assert_eq!(&v2[..INDEX_ENTRY_BYTES][1..], &v1[1..], "the digest only appends");
        assert_eq!(IndexEntry::decode(&v2), Some(d));
        // A version whose length is the other's, an unknown version, truncations.
        let mut bad = v1.clone();
        bad[0] = INDEX_ENTRY_VERSION_DIGEST;
        assert_eq!(IndexEntry::decode(&bad), None);
        let mut bad = v2.clone();
        bad[0] = INDEX_ENTRY_VERSION;
        assert_eq!(IndexEntry::decode(&bad), None);
        bad[0] = 3;
        assert_eq!(IndexEntry::decode(&bad), None);
        assert_eq!(IndexEntry::decode(&v1[..10]), None);
        assert_eq!(IndexEntry::decode(&v2[..INDEX_ENTRY_DIGEST_BYTES - 1]), None);
        assert_eq!(IndexEntry::decode(&[]), None);
    }
}

/// Which extent of a volume a task is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// A replica (open or sealed volumes).
    Replica,
    /// Fragment `index` of a coded volume (`0..k` data, `k..k+m` parity).
    Fragment {
        /// The fragment index.
        index: u32,
    },
}

impl Part {
    /// "replica" or "fragment" (the API's `part` field).
    pub fn name(self) -> &'static str {
        match self {
            Part::Replica => "replica",
            Part::Fragment { .. } => "fragment",
        }
    }

    /// The fragment index, 0 for replicas.
    pub fn fragment_index(self) -> u32 {
        match self {
            Part::Replica => 0,
            Part::Fragment { index } => index,
        }
    }
}

/// The work a task asks for. Every kind is idempotent on the volume server: running it
/// twice, or again after a crash half-way, leaves a correct state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Encode a sealed volume into k + m fragments on the disks named, in fragment order.
    /// Done: the volume becomes coded with that placement and its replicas are deleted.
    Encode {
        /// The volume.
        volume_id: u64,
        /// Where fragment i goes (chosen by the leader's placement when it sealed).
        #[serde(default)]
        fragments: Vec<ExtentPlace>,
    },
    /// Rebuild one fragment from k survivors onto `target`, taking over from `replaces`.
    Reconstruct {
        /// The volume.
        volume_id: u64,
        /// The fragment.
        index: u32,
        /// Where the rebuilt fragment goes.
        target: ExtentPlace,
        /// The lost or bad extent it replaces in the placement.
        replaces: ExtentPlace,
    },
    /// Copy an extent from `source` to `target`, which takes over from `replaces` (often
    /// the source itself, for a move).
    Copy {
        /// The volume.
        volume_id: u64,
        /// Which extent.
        part: Part,
        /// Where to read it.
        source: ExtentPlace,
        /// Where the copy goes.
        target: ExtentPlace,
        /// The extent the copy takes over from in the placement.
        replaces: ExtentPlace,
    },
    /// Move an extent the placement no longer names to the trash.
    Delete {
        /// The volume.
        volume_id: u64,
        /// Which extent.
        part: Part,
        /// Where it is.
        extent: ExtentPlace,
    },
}

/// A task's kind without its fields: what a volume server may defer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskType {
    /// [`TaskKind::Encode`].
    Encode,
    /// [`TaskKind::Reconstruct`].
    Reconstruct,
    /// [`TaskKind::Copy`].
    Copy,
    /// [`TaskKind::Delete`].
    Delete,
}

impl TaskKind {
    /// Short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Encode { .. } => "encode",
            TaskKind::Reconstruct { .. } => "reconstruct",
            TaskKind::Copy { .. } => "copy",
            TaskKind::Delete { .. } => "delete",
        }
    }

    /// The kind without its fields.
    pub fn task_type(&self) -> TaskType {
        match self {
            TaskKind::Encode { .. } => TaskType::Encode,
            TaskKind::Reconstruct { .. } => TaskType::Reconstruct,
            TaskKind::Copy { .. } => TaskType::Copy,
            TaskKind::Delete { .. } => TaskType::Delete,
        }
    }

    /// The volume the task is about.
    pub fn volume_id(&self) -> u64 {
        match self {
            TaskKind::Encode { volume_id, .. }
            | TaskKind::Reconstruct { volume_id, .. }
            | TaskKind::Copy { volume_id, .. }
            | TaskKind::Delete { volume_id, .. } => *volume_id,
        }
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its node to claim it.
    Pending,
    /// Claimed until `claimed_until_unix_ms`.
    Claimed,
    /// Given up after too many failures.
    Failed,
}

/// A task in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Encoding version.
    pub v: u32,
    /// Cell-unique id.
    pub task_id: u64,
    /// The work.
    pub kind: TaskKind,
    /// The volume server that is to do it.
    pub node_id: u64,
    /// Pending, claimed or failed.
    pub state: TaskState,
    /// Attempts reported failed so far.
    pub attempts: u32,
    /// End of the current claim.
    pub claimed_until_unix_ms: u64,
    /// The last failure's description.
    pub detail: String,
}
