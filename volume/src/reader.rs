//! Reading blocks back: the client side of the get path, used by frontends and tests.
//!
//! A block is read from a replica while its volume is open or sealed, and from the data
//! fragment(s) holding its range once coded. A fragment that is missing, unreachable or
//! corrupt (the server checks chunk CRCs and reports corruption itself) is dropped and the
//! range is read again degraded: the same rows of k other fragments, decoded. Every block
//! is checked against its key before it is returned (its read digest from the index, or
//! its SHA-256: [`crate::digest`]): bytes that do not match are never returned, and their
//! extent is reported to the master.

use std::sync::Arc;

use bytes::Bytes;
use cellar_blockstore::{RECORD_HEADER_BYTES, RecordHeader};
use cellar_erasure::{FragmentSet, assemble_owned, plan_read};
use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use tonic::{Code, Status};

use crate::client::read_fragment_range;
use crate::cluster::Cluster;
use crate::digest::BlockKey;
use crate::errors::{code_of, status};

/// A block read back and verified.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRead {
    /// The block's bytes, checked against the key asked for.
    pub payload: Bytes,
    /// Whether part of it had to be decoded from other fragments.
    pub degraded: bool,
    /// A newer record of the volume than the caller's, fetched because an extent was not
    /// where the caller's record placed it (callers that cache records keep this one).
    pub newer_volume: Option<mpb::Volume>,
}

/// An extent that was not on the disk the volume record named.
struct Missing {
    disk_id: u64,
    /// `None` for the replica, else the fragment's index.
    fragment: Option<usize>,
    reason: String,
}

/// Reads blocks from volume servers.
#[derive(Clone)]
pub struct BlockReader {
    cluster: Arc<Cluster>,
    block_size_max_bytes: u64,
}

fn unavailable(message: String) -> Status {
    status(Code::Unavailable, code::DATA_CORRUPT, message)
}

impl BlockReader {
    /// A reader over `cluster`.
    pub fn new(cluster: Arc<Cluster>, block_size_max_bytes: u64) -> BlockReader {
        BlockReader { cluster, block_size_max_bytes }
    }

    /// Reads the record of `length_bytes` (header + payload) at `offset_bytes` of volume
    /// `v`, whose payload must match `key`.
    ///
    /// `v` may be a cached, stale record: a volume coded since has no replicas left, one
    /// repaired since has extents elsewhere. So when the read fails, or an extent is
    /// missing from the disk `v` names, the master's current record is fetched: a missing
    /// extent is reported only if that record still places it there, and a failed read
    /// is tried again with that record if it has moved on (it is then returned in
    /// [`BlockRead::newer_volume`]).
    pub async fn read(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
    ) -> Result<BlockRead, Status> {
        let mut missing = Vec::new();
        let result = self.read_placed(v, key, offset_bytes, length_bytes, &mut missing).await;
        if missing.is_empty() && result.is_ok() {
            return result;
        }
        let current = match self.cluster.volume(v.volume_id).await {
            Ok(current) => current,
            Err(e) => {
                tracing::debug!(volume = v.volume_id, error = %e.message(), "cannot check the volume record");
                return result; // nothing reported on a record that may be stale
            }
        };
        self.report_missing(&current, missing);
        let moved = current.generation != v.generation
            || current.state != v.state
            || current.replicas != v.replicas
            || current.fragments != v.fragments
            || current.bad_disks != v.bad_disks;
        if !moved {
            return result;
        }
        let result = match result {
            Ok(read) => Ok(read),
            Err(_) => {
                let mut missing = Vec::new();
                let again = self.read_placed(&current, key, offset_bytes, length_bytes, &mut missing).await;
                self.report_missing(&current, missing);
                again
            }
        };
        result.map(|read| BlockRead { newer_volume: Some(current), ..read })
    }

    /// Reports the extents of `missing` that the current record `current` still places.
    fn report_missing(&self, current: &mpb::Volume, missing: Vec<Missing>) {
        let placed = |m: &Missing| match (current.state.as_str(), m.fragment) {
            ("coded", Some(i)) => current.fragments.get(i).is_some_and(|f| f.disk_id == m.disk_id),
            ("coded", None) | (_, Some(_)) => false,
            (_, None) => current.replicas.iter().any(|r| r.disk_id == m.disk_id),
        };
        for m in missing {
            if placed(&m) {
                self.cluster.report_bad_extent(current.volume_id, m.disk_id, m.reason);
            } else {
                tracing::debug!(volume = current.volume_id, disk = m.disk_id, "read a stale placement");
            }
        }
    }

    async fn read_placed(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        missing: &mut Vec<Missing>,
    ) -> Result<BlockRead, Status> {
        match v.state.as_str() {
            "coded" => self.read_coded(v, key, offset_bytes, length_bytes, missing).await,
            _ => self.read_replicas(v, key, offset_bytes, length_bytes, missing).await,
        }
    }

    async fn read_replicas(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        missing: &mut Vec<Missing>,
    ) -> Result<BlockRead, Status> {
        // Replicas not known bad first.
        let mut order: Vec<&mpb::Extent> =
            v.replicas.iter().filter(|r| !v.bad_disks.contains(&r.disk_id)).collect();
        order.extend(v.replicas.iter().filter(|r| v.bad_disks.contains(&r.disk_id)));
        let mut last = format!("volume {} has no replicas", v.volume_id);
        // Replicas that answered with other bytes: reported only once another replica
        // serves the key's bytes (when none does, the record itself is wrong, not a disk).
        let mut wrong = Vec::new();
        for (attempt, r) in order.iter().enumerate() {
            let read = async {
                let mut client = self.cluster.extent_client(r.node_id).await?;
                let req = pb::ReadRecordRequest {
                    volume_id: v.volume_id,
                    disk_id: r.disk_id,
                    offset_bytes,
                    length_bytes,
                };
                client.read_record(req).await
            };
            match read.await {
                Ok(rec) if rec.sha256 == key.sha256 && key.matches(&rec.payload) => {
                    for disk_id in wrong {
                        self.cluster.report_bad_extent(
                            v.volume_id,
                            disk_id,
                            format!("record at {offset_bytes} is not the bytes of its key"),
                        );
                    }
                    return Ok(BlockRead { payload: rec.payload, degraded: attempt > 0, newer_volume: None });
                }
                Ok(_) => {
                    last = format!("replica on disk {} returned other bytes", r.disk_id);
                    wrong.push(r.disk_id);
                }
                Err(e) => {
                    if code_of(&e) == Some(code::EXTENT_NOT_FOUND) {
                        missing.push(Missing {
                            disk_id: r.disk_id,
                            fragment: None,
                            reason: e.message().to_string(),
                        });
                    }
                    last = format!("replica on disk {}: {}", r.disk_id, e.message());
                }
            }
        }
        if !wrong.is_empty() {
            tracing::error!(
                volume = v.volume_id,
                offset_bytes,
                "no replica holds the bytes of the record's key; {} replicas hold other bytes",
                wrong.len()
            );
        }
        Err(unavailable(format!("no replica of volume {} could serve the block: {last}", v.volume_id)))
    }

    async fn read_coded(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        missing: &mut Vec<Missing>,
    ) -> Result<BlockRead, Status> {
        let layout = crate::tasks::layout_of(v)?;
        let scheme = layout.scheme();
        if v.fragments.len() != scheme.fragment_count() {
            return Err(status(
                Code::Internal,
                code::INTERNAL,
                format!("volume {} has a partial placement", v.volume_id),
            ));
        }
        let mut available = FragmentSet::all(scheme);
        for (i, f) in v.fragments.iter().enumerate() {
            if v.bad_disks.contains(&f.disk_id) {
                available.remove(i);
            }
        }
        let mut degraded = false;
        let mut last = String::new();
        // Fragments whose (checksummed) bytes assembled a record that is not the key's:
        // reported only if other fragments then decode the right bytes (if none do, the
        // record was coded wrong and no disk is to blame).
        let mut suspects: Vec<usize> = Vec::new();
        for _ in 0..=scheme.fragment_count() {
            let plan = match plan_read(&layout, offset_bytes, u64::from(length_bytes), available) {
                Ok(plan) => plan,
                Err(e) => {
                    if !suspects.is_empty() {
                        tracing::error!(
                            volume = v.volume_id,
                            offset_bytes,
                            "no fragment set holds the bytes of the record's key: {last}"
                        );
                    }
                    return Err(unavailable(format!("volume {}: {e}; last failure: {last}", v.volume_id)));
                }
            };
            degraded |= plan.needs_decode();
            let reads = plan.reads().iter().map(|r| {
                let place = &v.fragments[r.fragment_index];
                read_fragment_range(
                    &self.cluster,
                    place.node_id,
                    place.disk_id,
                    v.volume_id,
                    r.fragment_index,
                    r.offset_bytes,
                    r.len_bytes as u64,
                )
            });
            let results = futures::future::join_all(reads).await;
            let mut bufs = Vec::with_capacity(results.len());
            let mut failed = false;
            for (r, result) in plan.reads().iter().zip(results) {
                match result {
                    Ok(b) => bufs.push(b),
                    Err(e) => {
                        let disk_id = v.fragments[r.fragment_index].disk_id;
                        if code_of(&e) == Some(code::EXTENT_NOT_FOUND) {
                            missing.push(Missing {
                                disk_id,
                                fragment: Some(r.fragment_index),
                                reason: e.message().to_string(),
                            });
                        }
                        last = format!("fragment {} on disk {disk_id}: {}", r.fragment_index, e.message());
                        tracing::debug!(volume = v.volume_id, %last, "fragment read failed; reading degraded");
                        available.remove(r.fragment_index);
                        failed = true;
                    }
                }
            }
            if failed {
                degraded = true;
                continue;
            }
            let bytes: Bytes = assemble_owned(&plan, bufs)
                .map_err(|e| status(Code::Internal, code::INTERNAL, e.to_string()))?;
            match self.parse(bytes, offset_bytes, key) {
                Ok(payload) => {
                    for i in suspects {
                        self.cluster.report_bad_extent(
                            v.volume_id,
                            v.fragments[i].disk_id,
                            format!(
                                "fragment {i} assembled a record at {offset_bytes} that is not its key's"
                            ),
                        );
                    }
                    return Ok(BlockRead { payload, degraded, newer_volume: None });
                }
                Err(why) => {
                    // Every read passed its chunk CRCs yet the record is wrong: distrust the
                    // fragments this answer came from and decode from the others.
                    last = format!("volume {} record at {offset_bytes}: {why}", v.volume_id);
                    for r in plan.reads() {
                        if available.contains(r.fragment_index) {
                            suspects.push(r.fragment_index);
                            available.remove(r.fragment_index);
                        }
                    }
                    degraded = true;
                }
            }
        }
        Err(unavailable(format!("volume {}: no fragment set served the block: {last}", v.volume_id)))
    }

    /// The record's payload, if its header decodes and names the key, and the payload
    /// matches the key. The payload's CRC32 is not checked again: the servers checked
    /// every chunk's CRC on the way, and the key's check over the same bytes (the
    /// stronger one) follows.
    fn parse(&self, bytes: Bytes, offset_bytes: u64, key: &BlockKey) -> Result<Bytes, String> {
        let head: &[u8; RECORD_HEADER_BYTES] = bytes
            .get(..RECORD_HEADER_BYTES)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| "shorter than a record header".to_string())?;
        let header =
            RecordHeader::decode(head, offset_bytes, self.block_size_max_bytes).map_err(|k| k.to_string())?;
        let payload = &bytes[RECORD_HEADER_BYTES..];
        if payload.len() as u64 != u64::from(header.payload_len_bytes) {
            return Err(format!(
                "{} payload bytes, the header says {}",
                payload.len(),
                header.payload_len_bytes
            ));
        }
        if header.sha256 != key.sha256 || !key.matches(payload) {
            return Err("the payload does not match the key".into());
        }
        Ok(bytes.slice(RECORD_HEADER_BYTES..))
    }
}
