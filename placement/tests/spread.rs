//! Spread over many volumes: every disk shares volumes with almost every disk it may
//! legally share with (a dead disk is rebuilt from many), and disks fill evenly.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cellar_placement::{ClusterView, place_fragments};
use common::{GIB, allocate, uniform_cluster};

const VOLUMES: u64 = 2000;

/// Places `VOLUMES` rs-6-3 volumes of 1 GiB fragments, allocating as it goes; returns
/// each disk's volume count and peer set.
fn fill(view: &mut ClusterView) -> (BTreeMap<u64, usize>, BTreeMap<u64, BTreeSet<u64>>) {
    let mut extents: BTreeMap<u64, usize> = view.disks.iter().map(|d| (d.disk_id, 0)).collect();
    let mut peers: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for volume in 0..VOLUMES {
        let placement = place_fragments(view, 6, 3, GIB, volume).expect("cluster has room");
        allocate(view, &placement, GIB);
        for a in &placement {
            *extents.entry(a.disk_id).or_default() += 1;
            let set = peers.entry(a.disk_id).or_default();
            set.extend(placement.iter().filter(|b| b.disk_id != a.disk_id).map(|b| b.disk_id));
        }
    }
    (extents, peers)
}

#[test]
fn rs_6_3_volumes_spread_peers_and_fill_evenly() {
    let mut view = uniform_cluster(3, 4, 4, 1024 * GIB);
    let (extents, peers) = fill(&mut view);
    for disk in &view.disks {
        // Three fragments per zone on four nodes: two fragments never share a node, so
        // the legal peers are the disks on the other 11 nodes.
        let legal: BTreeSet<u64> =
            view.disks.iter().filter(|d| d.node_id != disk.node_id).map(|d| d.disk_id).collect();
        let seen = peers.get(&disk.disk_id).cloned().unwrap_or_default();
        assert!(seen.is_subset(&legal), "disk {} shares a volume with a disk on its own node", disk.disk_id);
        assert!(
            seen.len() * 4 >= legal.len() * 3,
            "disk {} has {} of {} possible peers",
            disk.disk_id,
            seen.len(),
            legal.len()
        );
    }
    let max = extents.values().copied().max().unwrap_or(0);
    let min = extents.values().copied().min().unwrap_or(0);
    assert!(min > 0 && max < 2 * min, "extent counts per disk range from {min} to {max}");
}

#[test]
fn mixed_capacity_disks_fill_to_similar_ratios() {
    let mut view = uniform_cluster(3, 4, 4, 512 * GIB);
    for d in view.disks.iter_mut().filter(|d| d.disk_id % 2 == 0) {
        d.capacity_bytes = 1024 * GIB;
    }
    fill(&mut view);
    let ratios: Vec<f64> = view.disks.iter().map(|d| d.used_bytes as f64 / d.capacity_bytes as f64).collect();
    let max = ratios.iter().copied().fold(f64::MIN, f64::max);
    let min = ratios.iter().copied().fold(f64::MAX, f64::min);
    assert!(min > 0.0 && max / min < 1.3, "fill ratios range from {min:.3} to {max:.3}");
}
