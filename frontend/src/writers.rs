//! The open volumes this frontend writes, and the queue of puts waiting for them.
//!
//! Puts wait in one bounded queue. Each of `writers` slots holds a write lease on one open
//! volume and, whenever it is free, takes what is queued: up to [`APPEND_RECORDS_MAX`]
//! blocks and [`APPEND_PAYLOAD_MAX_BYTES`], as much as its volume still holds. The batch's
//! records go to every replica in parallel in one Append each (one fsync per replica for
//! the whole batch); each server answers once they are durable. Then their index entries
//! go to the master in one CommitIndex (merged there with other frontends' commits), and
//! only then is every put of the batch answered. Under light load a batch is one put and
//! nothing waits for company; under load the queue fills while the slots are busy and
//! batches grow by themselves. While this host's CPUs are saturated, a small batch (below
//! [`crate::APPEND_ALONE_BELOW_BYTES`]) appends alone among small batches: while one is on
//! its way to its replicas, the next keeps taking in queued puts until it is large or that
//! one is durable, since each Append costs every replica a request and an fsync whatever
//! it carries.
//!
//! One batch at a time per volume: the writer assigns offsets, so a volume is only ever
//! sealed at the end of a committed batch. A replica that fails ends the volume: it is
//! sealed at its last committed record and the batch is retried on a new volume, placed
//! away from the server that failed. A volume that cannot take the next batch is sealed,
//! which queues its encode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellar_master_api::client::ClientError;
use cellar_proto::master as mpb;
use cellar_proto::volume as vpb;
use cellar_volume_api::cluster::Cluster;
use cellar_volume_api::digest::ReadDigest;
use cellar_volume_api::{APPEND_PAYLOAD_MAX_BYTES, APPEND_RECORDS_MAX};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{CellLimits, FrontendConfig};
use crate::host_load::HostLoad;
use crate::metrics::Metrics;

/// How long a volume server an append could not reach is passed over for new volumes.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// Suspect servers remembered at most.
const SUSPECTS_MAX: usize = 64;
/// Puts queued for the writers at most; further puts wait for room.
pub const PUT_QUEUE_MAX: usize = crate::PUTS_IN_FLIGHT_MAX;

const RECORD_HEADER_BYTES: u64 = cellar_format::RECORD_HEADER_BYTES as u64;

/// A volume being written.
#[derive(Debug)]
struct OpenVolume {
    v: mpb::Volume,
    next_offset_bytes: u64,
}

/// Where a block was stored, as the master's index has it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The index entry (the existing one when deduplicated).
    pub entry: mpb::IndexEntry,
    /// Whether the index already had the block (a concurrent put won).
    pub deduplicated: bool,
    /// The object version committed with the block, when the put carried one: added, or
    /// why not.
    pub version: Option<mpb::VersionResult>,
}

/// Why a store did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Retry on another volume.
    #[error("{0}")]
    Retry(String),
    /// Give up.
    #[error("{0}")]
    Fatal(String),
}

/// What a put computed over a block's bytes, for its record and its index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSums {
    /// The key.
    pub sha256: [u8; 32],
    /// The read digest gets check ([`cellar_volume_api::digest`]).
    pub digest: ReadDigest,
    /// CRC32 of the payload.
    pub crc32: u32,
    /// A block of an object upload: its index entry takes no reference (the object
    /// version that names it adds one).
    pub unreferenced: bool,
    /// A block compaction rewrites out of this volume (0: none): its entry moves to the
    /// new location only if it still points there (see the master's `RelocateIndex`).
    pub relocate_from: u64,
}

/// One put waiting for a writer.
struct Job {
    sums: BlockSums,
    payload: Bytes,
    /// The object version to commit with the block (in the same Raft entry).
    version: Option<mpb::PutVersionOp>,
    reply: oneshot::Sender<Result<Stored, StoreError>>,
}

impl Job {
    fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES + self.payload.len() as u64
    }
}

/// The writer pool: the put queue, the dispatcher that cuts it into batches, and the
/// slots that write them.
pub struct Writers {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the slots share.
struct Shared {
    cluster: Arc<Cluster>,
    holder: String,
    volume_size_bytes: u64,
    leases: Mutex<HashMap<u64, u64>>,
    dead: Mutex<HashSet<u64>>,
    /// Volume servers an append just failed to reach, and when: new volumes are placed
    /// elsewhere for `SUSPECT_FOR` (the master passes over silent servers by itself only
    /// after `node_silent_after_ms`).
    suspects: Mutex<HashMap<u64, Instant>>,
    /// Payload bytes being appended at once (see [`crate::APPENDS_IN_FLIGHT_MAX_BYTES`]).
    appending: Arc<Semaphore>,
    appending_max_bytes: u64,
    /// Batches being appended at once (see [`crate::APPEND_BATCHES_IN_FLIGHT_MAX`]).
    batches_appending: Arc<Semaphore>,
    /// The one small batch that may be appending (see [`crate::APPEND_ALONE_BELOW_BYTES`]).
    small_appending: Arc<Semaphore>,
    /// Payload bytes below which a batch is small.
    small_below_bytes: u64,
    /// Small batches append alone only while this host is saturated (none: always).
    host: Option<Arc<HostLoad>>,
    metrics: Arc<Metrics>,
}

/// A batch's share of the append budget: its payload bytes, one of the batches that may be
/// appending at once and, for a small batch, the one small batch's turn. Held until its
/// records are durable on every replica.
struct AppendPermit {
    _bytes: OwnedSemaphorePermit,
    _batch: OwnedSemaphorePermit,
    _small: Option<OwnedSemaphorePermit>,
}

/// A batch handed to a slot, with its share of the append budget.
struct Batch {
    jobs: Vec<Job>,
    permit: Option<AppendPermit>,
}

/// A slot with nothing to write, and the bytes its open volume still holds.
#[derive(Debug, Clone, Copy)]
struct Idle {
    slot: usize,
    room_bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn refusal(e: &ClientError) -> bool {
    e.code().is_some()
}

impl Writers {
    /// A pool of `config.writers` slots (started at once: call inside a Tokio runtime).
    /// `host`: the sampler small batches ask whether the host is saturated (none: they
    /// append alone whatever the load).
    pub fn new(
        cluster: Arc<Cluster>,
        config: &FrontendConfig,
        limits: CellLimits,
        metrics: Arc<Metrics>,
        host: Option<Arc<HostLoad>>,
    ) -> Writers {
        let (queue, rx) = mpsc::channel(PUT_QUEUE_MAX);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cluster,
            holder: config.holder.clone(),
            volume_size_bytes: limits.volume_size_bytes,
            leases: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashSet::new()),
            suspects: Mutex::new(HashMap::new()),
            appending: Arc::new(Semaphore::new(config.appends_in_flight_max_bytes as usize)),
            appending_max_bytes: config.appends_in_flight_max_bytes,
            batches_appending: Arc::new(Semaphore::new(config.append_batches_in_flight_max)),
            small_appending: Arc::new(Semaphore::new(1)),
            small_below_bytes: config.append_alone_below_bytes,
            host,
            metrics,
        });
        let (idle_tx, idle_rx) = mpsc::channel(config.writers);
        let mut tasks = Vec::new();
        let mut slots = Vec::new();
        for slot in 0..config.writers {
            let (tx, batches) = mpsc::channel(1);
            slots.push(tx);
            tasks.push(tokio::spawn(run_slot(shared.clone(), slot, batches, idle_tx.clone())));
        }
        tasks.push(tokio::spawn(dispatch(shared.clone(), rx, slots, idle_rx, stop_rx)));
        Writers { shared, queue, stop, tasks: Mutex::new(tasks) }
    }

    /// Stores one block and commits its index entry; answers once both are durable.
    pub async fn store(&self, sums: BlockSums, payload: Bytes) -> Result<Stored, StoreError> {
        self.store_with(sums, payload, None).await
    }

    /// Stores one block of an object upload (`sums.unreferenced`) and commits its index
    /// entry and the object version naming it in one Raft entry; answers once both are
    /// durable, with the version's result in [`Stored::version`].
    pub async fn store_with_version(
        &self,
        sums: BlockSums,
        payload: Bytes,
        version: mpb::PutVersionOp,
    ) -> Result<Stored, StoreError> {
        if !sums.unreferenced {
            return Err(StoreError::Fatal("a block committed with its version takes no reference".into()));
        }
        self.store_with(sums, payload, Some(version)).await
    }

    async fn store_with(
        &self,
        sums: BlockSums,
        payload: Bytes,
        version: Option<mpb::PutVersionOp>,
    ) -> Result<Stored, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { sums, payload, version, reply })
            .await
            .map_err(|_| StoreError::Fatal("the frontend is stopping".into()))?;
        answer.await.map_err(|_| StoreError::Fatal("the frontend is stopping".into()))?
    }

    /// Renews every held lease once; a lease that cannot be renewed is given up.
    pub async fn renew_leases(&self) {
        let shared = &self.shared;
        let leases: Vec<(u64, u64)> = lock(&shared.leases).iter().map(|(v, e)| (*v, *e)).collect();
        for (volume_id, lease_epoch) in leases {
            let holder = shared.holder.clone();
            let request = mpb::RenewLeaseRequest { volume_id, lease_epoch, holder, request_id: None };
            let renewed = shared
                .cluster
                .master()
                .call_once(request, |mut c, r| async move { c.renew_lease(r).await })
                .await;
            match renewed {
                Ok(_) => shared.metrics.lease_renewals.add(1),
                Err(e) if refusal(&e) => {
                    tracing::warn!(volume = volume_id, error = %e, "lease lost");
                    lock(&shared.leases).remove(&volume_id);
                    lock(&shared.dead).insert(volume_id);
                }
                Err(e) => tracing::warn!(volume = volume_id, error = %e, "lease renewal failed; will retry"),
            }
        }
    }

    /// Stops the pool and seals every volume this frontend holds (at shutdown, once no
    /// more puts arrive). Puts still queued are answered with an error.
    pub async fn seal_all(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = lock(&self.tasks).drain(..).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Cuts the queue into batches for idle slots until stopped. The slot that went idle last
/// is served first, so that light load keeps writing the same few volumes (they fill and
/// get sealed and coded) instead of spreading over every slot.
async fn dispatch(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Job>,
    slots: Vec<mpsc::Sender<Batch>>,
    mut idle_rx: mpsc::Receiver<Idle>,
    mut stop: watch::Receiver<bool>,
) {
    let size = shared.volume_size_bytes;
    let mut idle: Vec<Idle> = (0..slots.len()).rev().map(|slot| Idle { slot, room_bytes: size }).collect();
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => tokio::select! {
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            },
        };
        while idle.is_empty() {
            tokio::select! {
                i = idle_rx.recv() => match i {
                    Some(i) => idle.push(i),
                    None => return,
                },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        while let Ok(i) = idle_rx.try_recv() {
            idle.push(i);
        }
        let Some(target) = idle.pop() else { continue };
        // Waiting for one of the batches that may append at once lets the queue grow
        // meanwhile: the batch cut next is larger.
        let Some(slot_permit) = (tokio::select! {
            p = shared.batch_slot() => p,
            _ = stop.wait_for(|s| *s) => return,
        }) else {
            return;
        };
        // The room left: in the slot's volume if the first block fits there, else in a new one.
        let room = if first.record_bytes() <= target.room_bytes { target.room_bytes } else { size };
        let mut cut = Cut::new(first, room);
        while !cut.full() {
            let Ok(job) = queue.try_recv() else { break };
            if !cut.fits(&job) {
                carry = Some(job);
                break;
            }
            cut.push(job);
        }
        // A small batch waits for the small batch in flight and takes in the puts queued
        // meanwhile, until it is large enough to go beside it (or can grow no more).
        let mut small = None;
        if carry.is_none() && !cut.full() && shared.small(cut.payload_bytes) {
            loop {
                tokio::select! {
                    biased;
                    p = shared.small_slot() => {
                        small = p;
                        break;
                    }
                    job = queue.recv() => {
                        let Some(job) = job else { break };
                        if !cut.fits(&job) {
                            carry = Some(job);
                            break;
                        }
                        cut.push(job);
                        if cut.full() || !shared.small(cut.payload_bytes) {
                            break;
                        }
                    }
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
        // Waiting here for the byte budget lets the queue grow meanwhile: the next batch is
        // larger.
        let permit = tokio::select! {
            p = shared.bytes_permit(slot_permit, small, cut.payload_bytes) => p,
            _ = stop.wait_for(|s| *s) => return,
        };
        if slots[target.slot].send(Batch { jobs: cut.jobs, permit }).await.is_err() {
            return;
        }
    }
}

/// A batch being cut from the queue: its puts and what they add up to, within the room
/// left in its volume, [`APPEND_RECORDS_MAX`] records and [`APPEND_PAYLOAD_MAX_BYTES`].
struct Cut {
    jobs: Vec<Job>,
    record_bytes: u64,
    payload_bytes: u64,
    room_bytes: u64,
}

impl Cut {
    fn new(first: Job, room_bytes: u64) -> Cut {
        let (record_bytes, payload_bytes) = (first.record_bytes(), first.payload.len() as u64);
        Cut { jobs: vec![first], record_bytes, payload_bytes, room_bytes }
    }

    /// Whether no more records may join.
    fn full(&self) -> bool {
        self.jobs.len() >= APPEND_RECORDS_MAX
    }

    /// Whether `job` fits beside the puts already in.
    fn fits(&self, job: &Job) -> bool {
        self.record_bytes + job.record_bytes() <= self.room_bytes
            && self.payload_bytes + job.payload.len() as u64 <= APPEND_PAYLOAD_MAX_BYTES
    }

    /// Adds `job` (which [`Cut::fits`]).
    fn push(&mut self, job: Job) {
        self.record_bytes += job.record_bytes();
        self.payload_bytes += job.payload.len() as u64;
        self.jobs.push(job);
    }
}

/// One slot: writes the batches it is given to its volume, reporting itself idle after
/// each; once the dispatcher is gone, seals its volume.
async fn run_slot(
    shared: Arc<Shared>,
    slot: usize,
    mut batches: mpsc::Receiver<Batch>,
    idle: mpsc::Sender<Idle>,
) {
    let mut open: Option<OpenVolume> = None;
    while let Some(Batch { jobs, mut permit }) = batches.recv().await {
        shared.write_batch(&mut open, jobs, &mut permit).await;
        let room_bytes = open
            .as_ref()
            .map_or(shared.volume_size_bytes, |o| shared.volume_size_bytes - o.next_offset_bytes);
        if idle.send(Idle { slot, room_bytes }).await.is_err() {
            break;
        }
    }
    if let Some(o) = open.take()
        && o.next_offset_bytes > 0
    {
        shared.seal(o.v.volume_id).await;
    }
}

impl Shared {
    /// Writes a batch, retrying on new volumes, and answers every put in it.
    async fn write_batch(
        &self,
        open: &mut Option<OpenVolume>,
        batch: Vec<Job>,
        permit: &mut Option<AppendPermit>,
    ) {
        self.metrics.put_batches.add(1);
        self.metrics.put_batch_records.add(batch.len() as u64);
        let mut pending = batch;
        let mut last = String::new();
        for attempt in 0..crate::PUT_ATTEMPTS_MAX {
            if attempt > 0 {
                self.metrics.put_retries.add(pending.len() as u64);
            }
            match self.try_batch(open, &pending, permit).await {
                Ok(results) => {
                    let mut again = Vec::new();
                    for (job, result) in pending.into_iter().zip(results) {
                        match result {
                            Ok(stored) => {
                                let _ = job.reply.send(Ok(stored));
                            }
                            Err(why) => {
                                last = why;
                                again.push(job);
                            }
                        }
                    }
                    if again.is_empty() {
                        return;
                    }
                    tracing::warn!(attempt, puts = again.len(), why = %last, "puts retried on another volume");
                    pending = again;
                }
                Err(StoreError::Retry(why)) => {
                    tracing::warn!(attempt, puts = pending.len(), %why, "puts retried on another volume");
                    last = why;
                }
                Err(fatal) => {
                    for job in pending {
                        let _ = job.reply.send(Err(fatal.clone()));
                    }
                    return;
                }
            }
        }
        let why = format!("gave up after {} attempts: {last}", crate::PUT_ATTEMPTS_MAX);
        for job in pending {
            let _ = job.reply.send(Err(StoreError::Fatal(why.clone())));
        }
    }

    /// One attempt at a batch: appends it to every replica of the open volume (allocating
    /// one first if needed), then commits its index entries. Per put: the stored entry, or
    /// why it must go to another volume.
    async fn try_batch(
        &self,
        open: &mut Option<OpenVolume>,
        jobs: &[Job],
        permit: &mut Option<AppendPermit>,
    ) -> Result<Vec<Result<Stored, String>>, StoreError> {
        let total_bytes: u64 = jobs.iter().map(Job::record_bytes).sum();
        if let Some(o) = open.as_ref() {
            let dead = lock(&self.dead).remove(&o.v.volume_id);
            if dead {
                *open = None;
            } else if o.next_offset_bytes + total_bytes > self.volume_size_bytes {
                let volume_id = o.v.volume_id;
                *open = None;
                self.seal(volume_id).await;
            }
        }
        if open.is_none() {
            *open = Some(self.allocate().await?);
        }
        let Some(o) = open.as_mut() else { return Err(StoreError::Fatal("no volume".into())) };
        let offset = o.next_offset_bytes;
        if permit.is_none() {
            // A retry after the budget was given back (its commit was refused).
            *permit = self.append_permit(jobs.iter().map(|j| j.payload.len() as u64).sum()).await;
        }
        let appended_at = Instant::now();
        let appended = self.append(&o.v, offset, jobs, total_bytes).await;
        if appended.is_ok() {
            // The budget is for the bytes on their way to the disks; the commit needs none.
            permit.take();
        }
        if let Err(why) = appended {
            // The lease ends: seal at the last committed record; the batch goes elsewhere.
            let volume_id = o.v.volume_id;
            *open = None;
            self.seal(volume_id).await;
            return Err(StoreError::Retry(why));
        }
        o.next_offset_bytes = offset + total_bytes;
        self.metrics.put_append_latency.observe(appended_at.elapsed());
        let mut entries = Vec::with_capacity(jobs.len());
        let mut at = offset;
        for job in jobs {
            entries.push(mpb::IndexCommit {
                hash: job.sums.sha256.to_vec(),
                volume_id: o.v.volume_id,
                lease_epoch: o.v.lease_epoch,
                offset_bytes: at,
                payload_bytes: job.payload.len() as u32,
                crc32: job.sums.crc32,
                digest: job.sums.digest.to_vec(),
                unreferenced: job.sums.unreferenced,
                relocate_from_volume: job.sums.relocate_from,
            });
            at += job.record_bytes();
        }
        let versions: Vec<mpb::EntryVersion> = jobs
            .iter()
            .enumerate()
            .filter_map(|(i, job)| {
                job.version.clone().map(|op| mpb::EntryVersion { entry: i as u32, op: Some(op) })
            })
            .collect();
        let versions_asked = versions.len();
        let committed_at = Instant::now();
        // Exactly once: a retry after a lost answer must not add a second reference (nor a
        // second version).
        let committed = self
            .cluster
            .master()
            .call_once(
                mpb::CommitIndexRequest { entries, request_id: None, versions },
                |mut c, r| async move { c.commit_index(r).await },
            )
            .await;
        let (results, versions) = match committed {
            Ok(resp) if resp.results.len() == jobs.len() && resp.versions.len() == versions_asked => {
                (resp.results, resp.versions)
            }
            other => {
                // Whether the master applied the commit is unknown: seal the volume at what
                // the master has committed, so that nothing is appended after it.
                let volume_id = o.v.volume_id;
                *open = None;
                self.seal(volume_id).await;
                return Err(StoreError::Fatal(match other {
                    Ok(resp) => format!(
                        "the master answered a commit of {} entries and {versions_asked} versions with {} \
                         results and {} versions",
                        jobs.len(),
                        resp.results.len(),
                        resp.versions.len()
                    ),
                    Err(e) => format!("commit: {e}"),
                }));
            }
        };
        self.metrics.put_commit_latency.observe(committed_at.elapsed());
        let mut refused = false;
        let mut versions = versions.into_iter();
        let out = results
            .into_iter()
            .zip(jobs.iter())
            .map(|(result, job)| {
                let version = if job.version.is_some() { versions.next() } else { None };
                (result, job, version)
            })
            .map(|(result, job, version)| match (result.outcome(), result.entry) {
                (mpb::CommitOutcome::Committed, Some(entry)) => {
                    Ok(Stored { entry, deduplicated: false, version })
                }
                (mpb::CommitOutcome::Deduplicated, Some(entry)) => {
                    Ok(Stored { entry, deduplicated: true, version })
                }
                (outcome, _) => {
                    // A rewrite whose block moved or went away meanwhile says nothing of the
                    // lease; any other refusal does.
                    if job.sums.relocate_from == 0
                        || result.error_code != cellar_proto::error_code::BAD_REQUEST
                    {
                        refused = true;
                    }
                    Err(format!("commit {}: {}: {}", outcome.name(), result.error_code, result.detail))
                }
            })
            .collect();
        if refused {
            // The lease is gone (expired, sealed by the planner): drop the volume.
            let volume_id = o.v.volume_id;
            lock(&self.leases).remove(&volume_id);
            *open = None;
        }
        Ok(out)
    }

    /// Room in the append budget for `payload_bytes` (a batch larger than the budget takes
    /// all of it), and the small batch's turn if it is small.
    async fn append_permit(&self, payload_bytes: u64) -> Option<AppendPermit> {
        let batch = self.batch_slot().await?;
        let small = if self.small(payload_bytes) { Some(self.small_slot().await?) } else { None };
        self.bytes_permit(batch, small, payload_bytes).await
    }

    /// One of the batches that may be appending at once (the semaphore is never closed).
    async fn batch_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.batches_appending.clone().acquire_owned().await.ok()
    }

    /// Whether a batch of `payload_bytes` appends alone among small batches: it is small,
    /// and this host's CPUs are saturated (when that is asked).
    fn small(&self, payload_bytes: u64) -> bool {
        payload_bytes < self.small_below_bytes && self.host.as_ref().is_none_or(|h| h.saturated())
    }

    /// The turn of the one small batch that may be appending (the semaphore is never
    /// closed).
    async fn small_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.small_appending.clone().acquire_owned().await.ok()
    }

    /// The payload bytes of a batch that has its slot (and its small turn, if small).
    async fn bytes_permit(
        &self,
        batch: OwnedSemaphorePermit,
        small: Option<OwnedSemaphorePermit>,
        payload_bytes: u64,
    ) -> Option<AppendPermit> {
        let n = payload_bytes.clamp(1, self.appending_max_bytes) as u32;
        let bytes = self.appending.clone().acquire_many_owned(n).await.ok()?;
        Some(AppendPermit { _bytes: bytes, _batch: batch, _small: small })
    }

    /// A new open volume with this frontend's write lease, placed away from suspects.
    async fn allocate(&self) -> Result<OpenVolume, StoreError> {
        let holder = self.holder.clone();
        let avoid_nodes: Vec<u64> = {
            let mut suspects = lock(&self.suspects);
            suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
            suspects.keys().copied().collect()
        };
        let request = mpb::AllocateVolumeRequest { holder, copies: 0, avoid_nodes, request_id: None };
        let v = self
            .cluster
            .master()
            .call_once(request, |mut c, r| async move { c.allocate_volume(r).await })
            .await
            .map_err(|e| StoreError::Fatal(format!("allocate a volume: {e}")))?;
        lock(&self.leases).insert(v.volume_id, v.lease_epoch);
        Ok(OpenVolume { v, next_offset_bytes: 0 })
    }

    /// Appends the batch's records at `offset` of every replica in parallel; why it
    /// failed otherwise (a server that could not be reached becomes a suspect).
    async fn append(
        &self,
        v: &mpb::Volume,
        offset: u64,
        jobs: &[Job],
        total_bytes: u64,
    ) -> Result<(), String> {
        let records: Vec<vpb::BlockRecord> = jobs
            .iter()
            .map(|j| vpb::BlockRecord {
                sha256: j.sums.sha256.to_vec(),
                payload: j.payload.clone(),
                payload_crc32: Some(j.sums.crc32),
            })
            .collect();
        let appends = v.replicas.iter().map(|r| {
            let req = vpb::AppendRequest {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                lease_epoch: v.lease_epoch,
                generation: v.generation,
                offset_bytes: offset,
                records: records.clone(),
            };
            // The client bounds the call; this also bounds finding the server's address.
            let deadline = self.cluster.deadlines().append;
            async move {
                cellar_volume_api::deadline::bounded(deadline, "append", async {
                    self.cluster.extent_client(r.node_id).await?.append(req).await
                })
                .await
            }
        });
        let mut failure = None;
        let appended = futures::future::join_all(appends).await;
        for (r, result) in v.replicas.iter().zip(appended) {
            match result {
                Ok(resp) if resp.offset_bytes == offset && resp.appended_bytes == total_bytes => {}
                Ok(resp) => {
                    failure = Some(format!(
                        "replica on disk {} of node {} appended {} bytes at {}, not {total_bytes} at {offset}",
                        r.disk_id, r.node_id, resp.appended_bytes, resp.offset_bytes
                    ));
                }
                Err(e) => {
                    if e.code() == tonic::Code::DeadlineExceeded {
                        self.metrics.append_timeouts.add(1);
                    }
                    if matches!(
                        e.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                    ) {
                        let mut suspects = lock(&self.suspects);
                        if suspects.len() < SUSPECTS_MAX {
                            suspects.insert(r.node_id, Instant::now());
                        }
                    }
                    failure =
                        Some(format!("replica on disk {} of node {}: {}", r.disk_id, r.node_id, e.message()));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Seals a volume at its last committed record (which queues its encode).
    async fn seal(&self, volume_id: u64) {
        lock(&self.leases).remove(&volume_id);
        let request = mpb::SealVolumeRequest { volume_id, length_bytes: None, request_id: None };
        let sealed =
            self.cluster.master().call_once(request, |mut c, r| async move { c.seal_volume(r).await }).await;
        match sealed {
            Ok(_) => self.metrics.volumes_sealed.add(1),
            Err(e) => {
                tracing::warn!(volume = volume_id, error = %e, "seal failed; the master's planner will seal it")
            }
        }
    }
}
