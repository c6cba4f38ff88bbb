//! Cluster maps for placement tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use cellar_placement::{ClusterView, DiskRef, DiskView};

/// Bytes in one GiB.
pub const GIB: u64 = 1 << 30;

/// One writable disk, empty.
pub fn disk(disk_id: u64, node_id: u64, zone: &str, capacity_bytes: u64) -> DiskView {
    DiskView { disk_id, node_id, zone: zone.to_string(), capacity_bytes, used_bytes: 0, writable: true }
}

/// `zones` zones named z0, z1, ..., each with `nodes_per_zone` nodes of `disks_per_node`
/// empty disks of `capacity_bytes`. Node ids are 100 * zone + node; disk ids count from 1.
pub fn uniform_cluster(
    zones: usize,
    nodes_per_zone: usize,
    disks_per_node: usize,
    capacity_bytes: u64,
) -> ClusterView {
    let mut disks = Vec::new();
    for z in 0..zones {
        for n in 0..nodes_per_zone {
            for _ in 0..disks_per_node {
                let disk_id = disks.len() as u64 + 1;
                disks.push(disk(disk_id, (100 * z + n) as u64, &format!("z{z}"), capacity_bytes));
            }
        }
    }
    ClusterView::new(disks)
}

/// Extents per zone of a placement.
pub fn zone_counts(view: &ClusterView, placement: &[DiskRef]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for d in placement {
        let zone = view.zone_of(d.disk_id).expect("placed disk is in the view");
        *counts.entry(zone.to_string()).or_insert(0) += 1;
    }
    counts
}

/// Sorted per-zone extent counts, largest first (e.g. [3, 2, 2, 2]).
pub fn zone_shape(view: &ClusterView, placement: &[DiskRef]) -> Vec<usize> {
    let mut shape: Vec<usize> = zone_counts(view, placement).into_values().collect();
    shape.sort_unstable_by(|a, b| b.cmp(a));
    shape
}

/// Distinct nodes of a placement.
pub fn distinct_nodes(placement: &[DiskRef]) -> usize {
    placement.iter().map(|d| d.node_id).collect::<BTreeSet<_>>().len()
}

/// Adds `bytes` to the used bytes of every disk in `placement`.
pub fn allocate(view: &mut ClusterView, placement: &[DiskRef], bytes: u64) {
    for d in placement {
        let disk =
            view.disks.iter_mut().find(|v| v.disk_id == d.disk_id).expect("placed disk is in the view");
        disk.used_bytes += bytes;
    }
}
