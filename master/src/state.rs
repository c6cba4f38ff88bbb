//! The master's state as keys and records: the key layout, the [`Kv`] view every
//! command is applied over, and the typed reads and writes of each record kind, encoded
//! by [`crate::codec`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, Kind};
use crate::command::Hash32;
use crate::types::{
    Counters, DiskRecord, DrainRecord, DrainTarget, IndexEntry, NodeRecord, RECORD_VERSION, VolumeRecord,
};

/// Key of the counters record.
pub const KEY_COUNTERS: &[u8] = b"c";
/// Prefix of node records (then the node id, big-endian).
pub const PREFIX_NODE: u8 = b'n';
/// Prefix of disk records.
pub const PREFIX_DISK: u8 = b'd';
/// Prefix of volume records.
pub const PREFIX_VOLUME: u8 = b'v';
/// Prefix of block index entries (then the 32-byte hash).
pub const PREFIX_INDEX: u8 = b'i';
/// Prefix of drain records (then 0 and a node id, or 1 and a disk id, big-endian).
pub const PREFIX_DRAIN: u8 = b'r';

/// Key of the drain record of `target`.
pub fn drain_key(target: DrainTarget) -> [u8; 10] {
    let (tag, id) = match target {
        DrainTarget::Node { node_id } => (0u8, node_id),
        DrainTarget::Disk { disk_id } => (1u8, disk_id),
    };
    let mut key = [0u8; 10];
    key[0] = PREFIX_DRAIN;
    key[1] = tag;
    key[2..].copy_from_slice(&id.to_be_bytes());
    key
}

/// The drains in force, by target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drains {
    /// Drained nodes.
    pub nodes: std::collections::BTreeSet<u64>,
    /// Drained disks.
    pub disks: std::collections::BTreeSet<u64>,
}

impl Drains {
    /// From the drain records.
    pub fn from_records(records: &[DrainRecord]) -> Drains {
        let mut out = Drains::default();
        for r in records {
            match r.target {
                DrainTarget::Node { node_id } => out.nodes.insert(node_id),
                DrainTarget::Disk { disk_id } => out.disks.insert(disk_id),
            };
        }
        out
    }

    /// Whether disk `disk_id` of node `node_id` is drained (itself or its node).
    pub fn drains(&self, node_id: u64, disk_id: u64) -> bool {
        self.nodes.contains(&node_id) || self.disks.contains(&disk_id)
    }
}

/// Key of a record with a numeric id.
pub fn id_key(prefix: u8, id: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

/// Key of a block index entry.
pub fn index_key(hash: &Hash32) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = PREFIX_INDEX;
    key[1..].copy_from_slice(&hash.0);
    key
}

/// Errors reading the state itself (not the command's fault): storage or corrupt records.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error("state store: {0}")]
    Store(String),
    /// A record does not decode.
    #[error("state record {key}: {detail}")]
    Corrupt {
        /// The key, hex.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// The state asks for what this build cannot do (an apply version above its own:
    /// [`crate::apply_version::check`]).
    #[error("{0}")]
    Unsupported(String),
}

/// Key-value pairs read by a scan, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// The view `apply` reads and writes.
pub trait Kv {
    /// Reads a key (seeing this view's own writes).
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Writes a key.
    fn put(&mut self, key: &[u8], value: Vec<u8>);
    /// Deletes a key.
    fn delete(&mut self, key: &[u8]);
    /// The first `limit` pairs whose keys start with `prefix`, in key order (seeing this
    /// view's own writes).
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Pairs, StateError>;
}

/// An in-memory [`Kv`] (tests, and the write overlay's pending writes).
impl Kv for BTreeMap<Vec<u8>, Vec<u8>> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(BTreeMap::get(self, key).cloned())
    }
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.insert(key.to_vec(), value);
    }
    fn delete(&mut self, key: &[u8]) {
        self.remove(key);
    }
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Pairs, StateError> {
        Ok(self
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

/// Reads the `kind` record at `key`: a record that does not decode is an error naming
/// the key, never skipped.
pub fn read_record<T: DeserializeOwned>(
    kv: &dyn Kv,
    kind: Kind,
    key: &[u8],
) -> Result<Option<T>, StateError> {
    match kv.get(key)? {
        None => Ok(None),
        Some(bytes) => decode_record(kind, key, &bytes).map(Some),
    }
}

/// Decodes the `kind` record stored at `key` (scans decode what they read with it).
pub fn decode_record<T: DeserializeOwned>(kind: Kind, key: &[u8], bytes: &[u8]) -> Result<T, StateError> {
    codec::decode(kind, bytes)
        .map_err(|e| StateError::Corrupt { key: hex::encode(key), detail: e.to_string() })
}

/// Writes `value` as the `kind` record at `key`.
pub fn write_record<T: Serialize>(
    kv: &mut dyn Kv,
    kind: Kind,
    key: &[u8],
    value: &T,
) -> Result<(), StateError> {
    let bytes = codec::encode(kind, value).map_err(|e| StateError::Store(e.to_string()))?;
    kv.put(key, bytes);
    Ok(())
}

/// Reads the counters (defaults on an empty state).
pub fn counters(kv: &dyn Kv) -> Result<Counters, StateError> {
    Ok(read_record(kv, Kind::Counters, KEY_COUNTERS)?.unwrap_or(Counters {
        v: RECORD_VERSION,
        next_node_id: 1,
        next_disk_id: 1,
        next_volume_id: 1,
        ..Counters::default()
    }))
}

/// Reads a node.
pub fn node(kv: &dyn Kv, node_id: u64) -> Result<Option<NodeRecord>, StateError> {
    read_record(kv, Kind::Node, &id_key(PREFIX_NODE, node_id))
}

/// Reads a disk.
pub fn disk(kv: &dyn Kv, disk_id: u64) -> Result<Option<DiskRecord>, StateError> {
    read_record(kv, Kind::Disk, &id_key(PREFIX_DISK, disk_id))
}

/// Reads a volume.
pub fn volume(kv: &dyn Kv, volume_id: u64) -> Result<Option<VolumeRecord>, StateError> {
    read_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id))
}

/// Writes a volume record.
pub fn put_volume(kv: &mut dyn Kv, v: &VolumeRecord) -> Result<(), StateError> {
    write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, v.volume_id), v)
}

/// Reads a block index entry.
pub fn index_entry(kv: &dyn Kv, hash: &Hash32) -> Result<Option<IndexEntry>, StateError> {
    let key = index_key(hash);
    match kv.get(&key)? {
        None => Ok(None),
        Some(bytes) => IndexEntry::decode(&bytes)
            .map(Some)
            .ok_or_else(|| StateError::Corrupt { key: hex::encode(key), detail: "bad index entry".into() }),
    }
}
