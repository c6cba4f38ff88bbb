//! Builds the placement module's view of the cluster from the replicated state.

use std::collections::BTreeMap;

use cellar_placement::{ClusterView, DiskView};

use crate::service::writable;
use crate::types::{DiskRecord, NodeRecord};

/// Every disk with its node's zone; only disks of up nodes with healthy disks are writable.
pub fn cluster_view(nodes: &[NodeRecord], disks: &[DiskRecord]) -> ClusterView {
    let by_id: BTreeMap<u64, &NodeRecord> = nodes.iter().map(|n| (n.node_id, n)).collect();
    let disks = disks
        .iter()
        .filter_map(|d| {
            let node = by_id.get(&d.node_id)?;
            Some(DiskView {
                disk_id: d.disk_id,
                node_id: d.node_id,
                zone: node.zone.clone(),
                capacity_bytes: d.capacity_bytes,
                used_bytes: d.capacity_bytes.saturating_sub(d.free_bytes),
                writable: writable(node, d),
            })
        })
        .collect();
    ClusterView { disks }
}
