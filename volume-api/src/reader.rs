//! Reading blocks back: the client side of the get path, used by frontends and tests.
//!
//! A block is read from a replica while its volume is open or sealed, and from the data
//! fragment(s) holding its range once coded. A fragment that is missing, unreachable or
//! corrupt (the server checks chunk CRCs and reports corruption itself) is dropped and the
//! range is read again degraded: the same rows of k other fragments, decoded. Every block
//! is checked against its key before it is returned (its read digest from the index, or
//! its SHA-256: [`crate::digest`]): bytes that do not match are never returned, and their
//! extent is reported to the master.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellar_erasure::{FragmentSet, ReadPlan, assemble_owned, plan_read};
use cellar_format::{RECORD_HEADER_BYTES, RecordHeader};
use cellar_proto::ErrorCode;
use cellar_proto::common::VolumeState;
use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tonic::{Code, Status};

use crate::cache::TwoGenerations;
use crate::client::read_fragment_range;
use crate::cluster::Cluster;
use crate::deadline::bounded;
use crate::digest::BlockKey;
use crate::errors::{code_of, status};
use crate::pieces::Pieces;

/// A block read back and verified.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRead {
    /// The block's bytes, checked against the key asked for, in the buffers they arrived
    /// in ([`crate::pieces`]).
    pub payload: Pieces,
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
    /// Records whose streamed read failed: read whole from then on.
    pub(crate) cut: Arc<CutRecords>,
}

/// Records read whole since their streamed read failed, at most.
pub const CUT_RECORDS_MAX: usize = 1024;

/// Records (volume, offset) whose streamed read failed lately (the bytes were not the
/// key's, or no holder was left to finish them): later reads of them go whole, which tries
/// every replica and reports one whose bytes are not the key's once another's are. Without
/// this memory every get of such a block would stream from the same first replica and be
/// cut short again.
pub(crate) type CutRecords = Mutex<TwoGenerations<(u64, u64), ()>>;

/// `cut`, locked (a poisoned lock still holds a usable set).
pub(crate) fn lock_cut(cut: &CutRecords) -> std::sync::MutexGuard<'_, TwoGenerations<(u64, u64), ()>> {
    cut.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the master's `current` record of a volume places or codes it differently from
/// the caller's `cached` one.
fn moved(cached: &mpb::Volume, current: &mpb::Volume) -> bool {
    current.generation != cached.generation
        || current.state != cached.state
        || current.replicas != cached.replicas
        || current.fragments != cached.fragments
        || current.bad_disks != cached.bad_disks
}

/// The replicas of `v` in the order reads ask them: those not on a disk known bad first.
pub(crate) fn replica_order(v: &mpb::Volume) -> impl Iterator<Item = &mpb::Extent> {
    let bad = |r: &&mpb::Extent| v.bad_disks.contains(&r.disk_id);
    v.replicas.iter().filter(move |r| !bad(r)).chain(v.replicas.iter().filter(bad))
}

fn unavailable(message: String) -> Status {
    status(Code::Unavailable, code::DATA_CORRUPT, message)
}

impl BlockReader {
    /// A reader over `cluster`.
    pub fn new(cluster: Arc<Cluster>, block_size_max_bytes: u64) -> BlockReader {
        BlockReader {
            cluster,
            block_size_max_bytes,
            cut: Arc::new(Mutex::new(TwoGenerations::new(CUT_RECORDS_MAX))),
        }
    }

    /// The cell view reads go through.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Records whose streamed read failed lately (read whole since; see [`CutRecords`]).
    pub fn cut_records(&self) -> usize {
        lock_cut(&self.cut).len()
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
        if !moved(v, &current) {
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
        let placed = |m: &Missing| match (current.state(), m.fragment) {
            (VolumeState::Coded, Some(i)) => current.fragments.get(i).is_some_and(|f| f.disk_id == m.disk_id),
            (VolumeState::Coded, None) | (_, Some(_)) => false,
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
        match v.state() {
            VolumeState::Coded => self.read_coded(v, key, offset_bytes, length_bytes, missing).await,
            _ => self.read_replicas(v, key, offset_bytes, length_bytes, missing).await,
        }
    }

    /// Reads the record from the replicas, those not known bad first. The first replica
    /// is asked at once; when it has not answered after the hedge delay (or failed), the
    /// next is asked too, and the first answer with the key's bytes wins.
    async fn read_replicas(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        missing: &mut Vec<Missing>,
    ) -> Result<BlockRead, Status> {
        let order: Vec<&mpb::Extent> = replica_order(v).collect();
        let mut last = format!("volume {} has no replicas", v.volume_id);
        // Replicas that answered with other bytes: reported only once another replica
        // serves the key's bytes (when none does, the record itself is wrong, not a disk).
        let mut wrong = Vec::new();
        let latency = self.cluster.read_latency();
        let hedge_delay = latency.hedge_delay(u64::from(length_bytes));
        let read_one = |attempt: usize, r: &mpb::Extent| {
            let (node_id, disk_id) = (r.node_id, r.disk_id);
            async move {
                let started = Instant::now();
                let read = async {
                    let mut client = self.cluster.extent_client(node_id).await?;
                    let req =
                        pb::ReadRecordRequest { volume_id: v.volume_id, disk_id, offset_bytes, length_bytes };
                    client.read_record_checked(req, *key).await
                };
                // The client's own deadline bounds the call; this bounds finding the
                // server's address too (a cluster-map refresh).
                let result = bounded(self.cluster.deadlines().read, "read record", read).await;
                (attempt, disk_id, result, started.elapsed())
            }
        };
        let mut inflight = FuturesUnordered::new();
        let mut next = 0;
        if let Some(r) = order.first() {
            inflight.push(read_one(0, r));
            next = 1;
        }
        let hedge = tokio::time::sleep(hedge_delay);
        tokio::pin!(hedge);
        // Once every replica has been asked, one said its extent is not there and the rest
        // have not answered, the caller's record may be stale (the volume was coded and its
        // replicas deleted, or it was repaired elsewhere): the master's record is fetched
        // beside the slow reads, and a placement that moved on ends this read at once, so
        // that [`BlockReader::read`] reads where the block is now instead of waiting for a
        // slow holder of a replica that is gone.
        let mut placement_check: FuturesUnordered<_> = FuturesUnordered::new();
        let mut placement_checked = false;
        while !inflight.is_empty() {
            if !placement_checked && next >= order.len() && !missing.is_empty() {
                placement_checked = true;
                placement_check.push(self.cluster.volume(v.volume_id));
            }
            tokio::select! {
                Some(current) = placement_check.next() => {
                    if let Ok(current) = current && moved(v, &current) {
                        return Err(unavailable(format!(
                            "volume {} moved on while its replicas were read: {last}",
                            v.volume_id
                        )));
                    }
                }
                done = inflight.next() => {
                    let Some((attempt, disk_id, result, took)) = done else { break };
                    match result {
                        Ok(rec)
                            if rec.sha256 == key.sha256
                                && rec.verdict.unwrap_or_else(|| key.matches_pieces(&rec.payload)) =>
                        {
                            latency.observe(u64::from(length_bytes), took);
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
                            last = format!("replica on disk {disk_id} returned other bytes");
                            wrong.push(disk_id);
                        }
                        Err(e) => {
                            if code_of(&e) == Some(ErrorCode::ExtentNotFound) {
                                missing.push(Missing { disk_id, fragment: None, reason: e.message().to_string() });
                            }
                            last = format!("replica on disk {disk_id}: {}", e.message());
                        }
                    }
                    // A failed replica is replaced at once, not after the hedge delay.
                    if let Some(r) = order.get(next) {
                        inflight.push(read_one(next, r));
                        next += 1;
                        hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
                    }
                }
                () = &mut hedge, if next < order.len() => {
                    self.cluster.count_hedged_read();
                    inflight.push(read_one(next, order[next]));
                    next += 1;
                    hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
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

    /// Reads the record from the data fragment(s) holding its range. A fragment read that
    /// fails, or assembled bytes that are not the key's, lead to a degraded read from other
    /// fragments; when the reads have not answered after the hedge delay, a degraded read
    /// from fragments other than the slow ones starts beside them, and the first verified
    /// answer wins.
    async fn read_coded(
        &self,
        v: &mpb::Volume,
        key: &BlockKey,
        offset_bytes: u64,
        length_bytes: u32,
        missing: &mut Vec<Missing>,
    ) -> Result<BlockRead, Status> {
        let layout = crate::layout::layout_of(v)?;
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
        let latency = self.cluster.read_latency();
        let hedge_delay = latency.hedge_delay(u64::from(length_bytes));
        let mut degraded = false;
        let mut last = String::new();
        // Fragments whose (checksummed) bytes assembled a record that is not the key's:
        // reported only if other fragments then decode the right bytes (if none do, the
        // record was coded wrong and no disk is to blame).
        let mut suspects: Vec<usize> = Vec::new();
        // Bit i set: a read of fragment i has answered with its bytes during this call.
        let answered = AtomicU32::new(0);
        let mut attempts_left = scheme.fragment_count() + 1;
        let mut inflight = FuturesUnordered::new();
        // Fragments read by attempts still in flight, each with its attempt's number.
        let mut busy: Vec<(usize, FragmentSet)> = Vec::new();
        let mut attempt_no = 0usize;
        let mut plan_error = None;
        let mut start = |available: FragmentSet,
                         busy: &mut Vec<(usize, FragmentSet)>,
                         inflight: &mut FuturesUnordered<_>,
                         plan_error: &mut Option<String>|
         -> bool {
            // Fragments asked by attempts still in flight that have not answered yet are
            // the slow ones: a new attempt avoids them, and may read again those that
            // answered (their attempt waits for a slow one).
            let answered_bits = answered.load(Ordering::Relaxed);
            let mut free = available;
            for (_, set) in busy.iter() {
                for i in 0..scheme.fragment_count() {
                    if set.contains(i) && answered_bits & (1 << i) == 0 {
                        free.remove(i);
                    }
                }
            }
            if attempts_left == 0 {
                return false;
            }
            let plan = match plan_read(&layout, offset_bytes, u64::from(length_bytes), free) {
                Ok(plan) => plan,
                Err(e) => {
                    *plan_error = Some(e.to_string());
                    return false;
                }
            };
            attempts_left -= 1;
            attempt_no += 1;
            let mut set = FragmentSet::default();
            for r in plan.reads() {
                set.insert(r.fragment_index);
            }
            busy.push((attempt_no, set));
            inflight.push(self.read_plan(v, plan, attempt_no, &answered));
            true
        };
        start(available, &mut busy, &mut inflight, &mut plan_error);
        let hedge = tokio::time::sleep(hedge_delay);
        tokio::pin!(hedge);
        while !inflight.is_empty() {
            tokio::select! {
                done = inflight.next() => {
                    let Some((no, plan, outcome, took)) = done else { break };
                    busy.retain(|(n, _)| *n != no);
                    degraded |= plan.needs_decode();
                    match outcome {
                        Ok(bufs) => {
                            let bytes: Bytes = assemble_owned(&plan, bufs)
                                .map_err(|e| status(Code::Internal, code::INTERNAL, e.to_string()))?;
                            match self.parse(bytes, offset_bytes, key) {
                                Ok(payload) => {
                                    latency.observe(u64::from(length_bytes), took);
                                    for i in suspects {
                                        self.cluster.report_bad_extent(
                                            v.volume_id,
                                            v.fragments[i].disk_id,
                                            format!(
                                                "fragment {i} assembled a record at {offset_bytes} that is not its key's"
                                            ),
                                        );
                                    }
                                    return Ok(BlockRead { payload: payload.into(), degraded, newer_volume: None });
                                }
                                Err(why) => {
                                    // Every read passed its chunk CRCs yet the record is
                                    // wrong: distrust the fragments this answer came from
                                    // and decode from the others.
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
                        Err(failed) => {
                            for (index, e) in failed {
                                let disk_id = v.fragments[index].disk_id;
                                if code_of(&e) == Some(ErrorCode::ExtentNotFound) {
                                    missing.push(Missing {
                                        disk_id,
                                        fragment: Some(index),
                                        reason: e.message().to_string(),
                                    });
                                }
                                last = format!("fragment {index} on disk {disk_id}: {}", e.message());
                                tracing::debug!(volume = v.volume_id, %last, "fragment read failed; reading degraded");
                                available.remove(index);
                            }
                            degraded = true;
                        }
                    }
                    // Replace the failed attempt at once, unless another is still going.
                    if inflight.is_empty() {
                        start(available, &mut busy, &mut inflight, &mut plan_error);
                        hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
                    }
                }
                () = &mut hedge => {
                    if start(available, &mut busy, &mut inflight, &mut plan_error) {
                        self.cluster.count_hedged_read();
                        hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
                    } else {
                        // No fragment set avoids the slow reads yet: look again after
                        // another delay (reads that answer meanwhile free their fragments).
                        hedge.as_mut().reset(tokio::time::Instant::now() + hedge_delay);
                    }
                }
            }
        }
        if !suspects.is_empty() {
            tracing::error!(
                volume = v.volume_id,
                offset_bytes,
                "no fragment set holds the bytes of the record's key: {last}"
            );
        }
        Err(unavailable(match plan_error {
            Some(e) => format!("volume {}: {e}; last failure: {last}", v.volume_id),
            None => format!("volume {}: no fragment set served the block: {last}", v.volume_id),
        }))
    }

    /// Reads every range of `plan` in parallel: the buffers in plan order, or the
    /// fragments that failed and why; with the attempt's number, its plan and how long it
    /// took.
    async fn read_plan(
        &self,
        v: &mpb::Volume,
        plan: ReadPlan,
        attempt_no: usize,
        answered: &AtomicU32,
    ) -> (usize, ReadPlan, Result<Vec<Bytes>, Vec<(usize, Status)>>, Duration) {
        let started = Instant::now();
        let reads = plan.reads().iter().map(|r| {
            let place = &v.fragments[r.fragment_index];
            let index = r.fragment_index;
            read_fragment_range(
                &self.cluster,
                place.node_id,
                place.disk_id,
                v.volume_id,
                index,
                r.offset_bytes,
                r.len_bytes as u64,
            )
            .inspect(move |result| {
                if result.is_ok() && index < 32 {
                    answered.fetch_or(1 << index, Ordering::Relaxed);
                }
            })
        });
        let results = futures::future::join_all(reads).await;
        let mut bufs = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (r, result) in plan.reads().iter().zip(results) {
            match result {
                Ok(b) => bufs.push(b),
                Err(e) => failed.push((r.fragment_index, e)),
            }
        }
        let outcome = if failed.is_empty() { Ok(bufs) } else { Err(failed) };
        (attempt_no, plan, outcome, started.elapsed())
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
