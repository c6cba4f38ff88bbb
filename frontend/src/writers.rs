//! The open volumes this frontend writes: one write lease per volume, one put at a time
//! per volume (the writer assigns offsets), `writers` volumes at once.
//!
//! A put appends its record to every replica in parallel; each server answers once the
//! record is durable. Then the index entry is committed through the master (batched
//! there with other frontends' commits), still holding the volume, so that a volume is
//! only ever sealed at the end of a committed record. A replica that fails ends the
//! volume: it is sealed at its last committed record and the put is retried on a new
//! volume. A volume that cannot take the next block is sealed, which queues its encode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellar_master::client::ClientError;
use cellar_proto::master as mpb;
use cellar_proto::volume as vpb;
use cellar_volume::cluster::Cluster;
use tokio::sync::Semaphore;

use crate::config::FrontendConfig;
use crate::metrics::Metrics;

/// How long a volume server an append could not reach is passed over for new volumes.
const SUSPECT_FOR: Duration = Duration::from_secs(30);
/// Suspect servers remembered at most.
const SUSPECTS_MAX: usize = 64;

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
}

/// Why a store did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Retry on another volume.
    #[error("{0}")]
    Retry(String),
    /// Give up.
    #[error("{0}")]
    Fatal(String),
}

/// The writer pool.
pub struct Writers {
    cluster: Arc<Cluster>,
    holder: String,
    volume_size_bytes: u64,
    slots: Vec<tokio::sync::Mutex<Option<OpenVolume>>>,
    free: Mutex<Vec<usize>>,
    permits: Semaphore,
    leases: Mutex<HashMap<u64, u64>>,
    dead: Mutex<HashSet<u64>>,
    /// Volume servers an append just failed to reach, and when: new volumes are placed
    /// elsewhere for `SUSPECT_FOR` (the master passes over silent servers by itself only
    /// after `node_silent_after_ms`).
    suspects: Mutex<HashMap<u64, Instant>>,
    metrics: Arc<Metrics>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn refusal(e: &ClientError) -> bool {
    e.code().is_some()
}

impl Writers {
    /// A pool of `config.writers` volumes.
    pub fn new(cluster: Arc<Cluster>, config: &FrontendConfig, metrics: Arc<Metrics>) -> Writers {
        Writers {
            cluster,
            holder: config.holder.clone(),
            volume_size_bytes: config.volume_size_bytes,
            slots: (0..config.writers).map(|_| tokio::sync::Mutex::new(None)).collect(),
            free: Mutex::new((0..config.writers).collect()),
            permits: Semaphore::new(config.writers),
            leases: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashSet::new()),
            suspects: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Stores one block (`record_len` = header + payload) and commits its index entry.
    pub async fn store(&self, sha256: [u8; 32], payload: Bytes, crc32: u32) -> Result<Stored, StoreError> {
        let mut last = String::new();
        for attempt in 0..crate::PUT_ATTEMPTS_MAX {
            if attempt > 0 {
                self.metrics.put_retries.add(1);
            }
            let _permit = self.permits.acquire().await.map_err(|e| StoreError::Fatal(e.to_string()))?;
            let Some(index) = lock(&self.free).pop() else {
                return Err(StoreError::Fatal("writer pool is inconsistent".into()));
            };
            let result = {
                let mut slot = self.slots[index].lock().await;
                self.store_in(&mut slot, sha256, payload.clone(), crc32).await
            };
            lock(&self.free).push(index);
            match result {
                Ok(stored) => return Ok(stored),
                Err(StoreError::Retry(why)) => {
                    tracing::warn!(attempt, %why, "put retried on another volume");
                    last = why;
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Fatal(format!("gave up after {} attempts: {last}", crate::PUT_ATTEMPTS_MAX)))
    }

    async fn store_in(
        &self,
        slot: &mut Option<OpenVolume>,
        sha256: [u8; 32],
        payload: Bytes,
        crc32: u32,
    ) -> Result<Stored, StoreError> {
        let record_len = cellar_blockstore::RECORD_HEADER_BYTES as u64 + payload.len() as u64;
        if let Some(open) = slot.as_ref() {
            let dead = lock(&self.dead).remove(&open.v.volume_id);
            if dead {
                *slot = None;
            } else if open.next_offset_bytes + record_len > self.volume_size_bytes {
                let volume_id = open.v.volume_id;
                *slot = None;
                self.seal(volume_id).await;
            }
        }
        if slot.is_none() {
            let holder = self.holder.clone();
            let avoid_nodes: Vec<u64> = {
                let mut suspects = lock(&self.suspects);
                suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
                suspects.keys().copied().collect()
            };
            let v = self
                .cluster
                .master()
                .call(|mut c| {
                    let (holder, avoid_nodes) = (holder.clone(), avoid_nodes.clone());
                    async move {
                        c.allocate_volume(mpb::AllocateVolumeRequest { holder, copies: 0, avoid_nodes }).await
                    }
                })
                .await
                .map_err(|e| StoreError::Fatal(format!("allocate a volume: {e}")))?;
            lock(&self.leases).insert(v.volume_id, v.lease_epoch);
            *slot = Some(OpenVolume { v, next_offset_bytes: 0 });
        }
        let Some(open) = slot.as_mut() else { return Err(StoreError::Fatal("no volume".into())) };
        let offset = open.next_offset_bytes;
        let v = &open.v;
        let appends = v.replicas.iter().map(|r| {
            let req = vpb::AppendRequest {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                lease_epoch: v.lease_epoch,
                generation: v.generation,
                offset_bytes: offset,
                sha256: sha256.to_vec(),
                payload: payload.clone(),
            };
            async move {
                let mut c = self.cluster.node_client(r.node_id).await?;
                Ok::<_, tonic::Status>(c.append(req).await?.into_inner())
            }
        });
        let mut failure = None;
        let appended = futures::future::join_all(appends).await;
        for (r, result) in v.replicas.iter().zip(appended) {
            if let Err(e) = result {
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
        if let Some(why) = failure {
            // The lease ends: seal at the last committed record; the put goes elsewhere.
            let volume_id = v.volume_id;
            *slot = None;
            self.seal(volume_id).await;
            return Err(StoreError::Retry(why));
        }
        let entry = mpb::IndexCommit {
            hash: sha256.to_vec(),
            volume_id: v.volume_id,
            lease_epoch: v.lease_epoch,
            offset_bytes: offset,
            length_bytes: record_len as u32,
            crc32,
        };
        let committed = self
            .cluster
            .master()
            .call(|mut c| {
                let entry = entry.clone();
                async move { c.commit_index(mpb::CommitIndexRequest { entries: vec![entry] }).await }
            })
            .await;
        let result = match committed {
            Ok(mut resp) if resp.results.len() == 1 => resp.results.remove(0),
            Ok(_) => {
                return Err(StoreError::Fatal(
                    "the master answered a commit of one entry with another count".into(),
                ));
            }
            Err(e) => return Err(StoreError::Fatal(format!("commit: {e}"))),
        };
        open.next_offset_bytes = offset + record_len;
        match (result.outcome.as_str(), result.entry) {
            ("committed", Some(entry)) => Ok(Stored { entry, deduplicated: false }),
            ("deduplicated", Some(entry)) => Ok(Stored { entry, deduplicated: true }),
            (code, _) => {
                // The lease is gone (expired, sealed by the planner): drop the volume.
                let volume_id = open.v.volume_id;
                lock(&self.leases).remove(&volume_id);
                *slot = None;
                Err(StoreError::Retry(format!("commit refused: {code}: {}", result.detail)))
            }
        }
    }

    /// Seals a volume at its last committed record (which queues its encode).
    async fn seal(&self, volume_id: u64) {
        lock(&self.leases).remove(&volume_id);
        let sealed = self
            .cluster
            .master()
            .call(|mut c| async move {
                c.seal_volume(mpb::SealVolumeRequest { volume_id, length_bytes: None }).await
            })
            .await;
        match sealed {
            Ok(_) => self.metrics.volumes_sealed.add(1),
            Err(e) => {
                tracing::warn!(volume = volume_id, error = %e, "seal failed; the master's planner will seal it")
            }
        }
    }

    /// Renews every held lease once; a lease that cannot be renewed is given up.
    pub async fn renew_leases(&self) {
        let leases: Vec<(u64, u64)> = lock(&self.leases).iter().map(|(v, e)| (*v, *e)).collect();
        for (volume_id, lease_epoch) in leases {
            let holder = self.holder.clone();
            let renewed =
                self.cluster
                    .master()
                    .call(|mut c| {
                        let holder = holder.clone();
                        async move {
                            c.renew_lease(mpb::RenewLeaseRequest { volume_id, lease_epoch, holder }).await
                        }
                    })
                    .await;
            match renewed {
                Ok(_) => self.metrics.lease_renewals.add(1),
                Err(e) if refusal(&e) => {
                    tracing::warn!(volume = volume_id, error = %e, "lease lost");
                    lock(&self.leases).remove(&volume_id);
                    lock(&self.dead).insert(volume_id);
                }
                Err(e) => tracing::warn!(volume = volume_id, error = %e, "lease renewal failed; will retry"),
            }
        }
    }

    /// Seals every volume this frontend holds (at shutdown).
    pub async fn seal_all(&self) {
        for slot in &self.slots {
            let mut slot = slot.lock().await;
            if let Some(open) = slot.take()
                && open.next_offset_bytes > 0
            {
                self.seal(open.v.volume_id).await;
            }
        }
    }
}
