//! Write fencing of open-volume replicas.
//!
//! Each replica remembers the highest (lease epoch, generation) it has accepted appends
//! under, in memory and in its disk's catalog (so a restart keeps it). An append under a
//! lower epoch or generation is refused without touching the replica. The first append
//! under a new (higher) pair is checked against the master, linearizably: the volume must
//! be open, the lease epoch and generation current, and this disk one of its replicas.
//! Appends hold the fence shared while they write; moving the fence takes it exclusively,
//! so no append of an older epoch can land after a newer one was accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cellar_blockstore::Disk;
use cellar_proto::common::VolumeState;
use cellar_proto::error_code as code;
use tokio::sync::{OwnedRwLockReadGuard, RwLock};
use tonic::{Code, Status};

use crate::cluster::Cluster;
use crate::errors::status;

/// Fences kept in memory before idle ones are dropped (they stay on disk).
pub const FENCES_CACHED_MAX: usize = 65_536;

/// The (epoch, generation) a replica accepts appends under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fence {
    /// Lease epoch.
    pub epoch: u64,
    /// Volume generation.
    pub generation: u64,
}

type Slot = Arc<RwLock<Option<Fence>>>;

/// The fences of this node's replicas.
#[derive(Default)]
pub struct Fences {
    slots: Mutex<HashMap<(u64, u64), Slot>>,
    /// Per (volume, disk) checked with the master: whether that replica is the volume's
    /// first, the one gets read (see [`Fences::reads_first`]).
    first: Mutex<HashMap<(u64, u64), bool>>,
}

fn meta_name(volume_id: u64) -> String {
    format!("fence/{volume_id}")
}

fn load(disk: &Disk, volume_id: u64) -> Option<Fence> {
    let bytes = disk.meta(&meta_name(volume_id)).ok()??;
    let text = String::from_utf8(bytes).ok()?;
    let (e, g) = text.split_once(' ')?;
    Some(Fence { epoch: e.parse().ok()?, generation: g.parse().ok()? })
}

fn stale(volume_id: u64, given: Fence, current: Fence) -> Status {
    status(
        Code::FailedPrecondition,
        code::STALE_LEASE,
        format!(
            "volume {volume_id}: append under epoch {} generation {} refused; the replica is fenced at epoch {} generation {}",
            given.epoch, given.generation, current.epoch, current.generation
        ),
    )
}

impl Fences {
    fn slot(&self, volume_id: u64, disk_id: u64) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= FENCES_CACHED_MAX {
            slots.retain(|_, s| Arc::strong_count(s) > 1);
        }
        slots.entry((volume_id, disk_id)).or_default().clone()
    }

    /// Whether the replica of `volume_id` on `disk_id` was the volume's first replica when
    /// its current fence was checked with the master: the replica a get asks first
    /// (`cellar_volume_api::reader`). `None` when not known (not checked since start).
    pub fn reads_first(&self, volume_id: u64, disk_id: u64) -> Option<bool> {
        self.first.lock().unwrap_or_else(|p| p.into_inner()).get(&(volume_id, disk_id)).copied()
    }

    /// Admits an append under `given` to the replica of `volume_id` on `disk_id` (this
    /// node's `node_id`). The returned guard must be held until the append is durable.
    pub async fn admit(
        &self,
        cluster: &Cluster,
        node_id: u64,
        disk_id: u64,
        disk: &Arc<Disk>,
        volume_id: u64,
        given: Fence,
    ) -> Result<OwnedRwLockReadGuard<Option<Fence>>, Status> {
        let slot = self.slot(volume_id, disk_id);
        {
            let guard = slot.clone().read_owned().await;
            match *guard {
                Some(current) if current == given => return Ok(guard),
                Some(current) if given < current => return Err(stale(volume_id, given, current)),
                _ => {}
            }
        }
        let mut guard = slot.clone().write_owned().await;
        if guard.is_none() {
            let d = disk.clone();
            *guard = tokio::task::spawn_blocking(move || load(&d, volume_id)).await.ok().flatten();
        }
        match *guard {
            Some(current) if current == given => return Ok(guard.downgrade()),
            Some(current) if given < current => return Err(stale(volume_id, given, current)),
            _ => {}
        }
        // A new epoch or generation: only the master can say it is the current one.
        let v = cluster.volume(volume_id).await?;
        if v.state() != VolumeState::Open {
            return Err(status(
                Code::FailedPrecondition,
                code::VOLUME_NOT_OPEN,
                format!("volume {volume_id} is {}, not open", v.state().name()),
            ));
        }
        if v.lease_epoch != given.epoch || v.generation != given.generation {
            return Err(status(
                Code::FailedPrecondition,
                code::STALE_LEASE,
                format!(
                    "volume {volume_id}: epoch {} generation {} is not current (epoch {}, generation {})",
                    given.epoch, given.generation, v.lease_epoch, v.generation
                ),
            ));
        }
        if !v.replicas.iter().any(|r| r.node_id == node_id && r.disk_id == disk_id) {
            return Err(status(
                Code::FailedPrecondition,
                code::BAD_REQUEST,
                format!("volume {volume_id} has no replica on disk {disk_id} of node {node_id}"),
            ));
        }
        {
            let is_first = v.replicas.first().is_some_and(|r| r.node_id == node_id && r.disk_id == disk_id);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            if first.len() >= FENCES_CACHED_MAX {
                first.clear();
            }
            first.insert((volume_id, disk_id), is_first);
        }
        let d = disk.clone();
        let value = format!("{} {}", given.epoch, given.generation);
        tokio::task::spawn_blocking(move || d.put_meta(&meta_name(volume_id), value.as_bytes()))
            .await
            .map_err(|e| crate::errors::join_status(&e))?
            .map_err(|e| crate::errors::disk_status(&e))?;
        *guard = Some(given);
        Ok(guard.downgrade())
    }
}
