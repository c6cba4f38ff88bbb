//! What the extent service, the task executor, the trash purge and the metrics share:
//! the node's disks, its view of the cell, fences, the request budget and counters.

use std::sync::Arc;

use crate::budget::ByteBudget;
use crate::cluster::Cluster;
use crate::disks::LocalDisks;
use crate::fence::Fences;

/// What the service and the task executor share.
pub struct Shared {
    /// This node's id in the cell.
    pub node_id: u64,
    /// The node's disks.
    pub disks: Arc<LocalDisks>,
    /// The master and the other volume servers.
    pub cluster: Arc<Cluster>,
    /// Replica write fences.
    pub fences: Fences,
    /// Bytes held for requests.
    pub budget: ByteBudget,
    /// Largest block payload.
    pub block_size_max_bytes: u64,
    /// The cluster secret, checked on every call.
    pub secret: Option<String>,
    /// Request and task counters.
    pub metrics: crate::counters::VolumeMetrics,
    /// The pace of this node's repair executors (its share of the cell's repair bandwidth).
    pub repair_pace: crate::pace::Pace,
    /// Read buffers kept for reuse.
    pub read_buffers: Arc<crate::buffers::ReadBuffers>,
    /// Large records appended lately, answered from memory.
    pub recent: crate::recent::RecentRecords,
    /// Set when the server stops: in-process callers (see
    /// [`crate::cluster::ExtentClient`]) are refused from then on, as a socket would be.
    pub stopped: std::sync::atomic::AtomicBool,
    /// When a disk is reported failed as hung (see [`crate::config::VolumeConfig::disk_hung_after`]).
    pub disk_hung_after: std::time::Duration,
}
