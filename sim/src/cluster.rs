//! The simulated cluster's static layout: zones, nodes, disks, and where every extent of
//! every volume sits, placed by cellar's real placement module.
//!
//! The layout is built once and shared read-only by all runs and threads. A run never
//! moves an extent: a rebuilt extent is modelled as returning to its slot (the failed
//! disk's replacement). With placement's free-space weighting, the set of volumes a disk
//! shares with any other disk is a random sample either way, which is what durability
//! depends on; where a rebuilt extent may go at all is checked with `place_replacement`
//! (see [`Layout::repair_targets_exist`]).

use std::collections::{BTreeMap, HashMap};

use cellar_placement::{ClusterView, DiskRef, DiskView, Scheme, place_replacement, place_volume};

use crate::config::{ClusterShape, Repair, data_extents, extent_bytes};
use crate::rng::{Rng, derive_seed};
use crate::{ClusterInput, SimError};

/// Clusters with more disks than this place each volume over a random sample of nodes
/// (see [`Layout::from_shape`]) instead of the whole view, so that a million volumes
/// place in seconds rather than hours.
pub const FULL_VIEW_DISKS_MAX: usize = 64;

/// One volume's placement, or why it failed.
type Placed = Result<Vec<DiskRef>, SimError>;

/// Volumes placed against one snapshot of the fill (in parallel).
const PLACEMENT_CHUNK_VOLUMES: u64 = 4096;

/// Disks drawn from each sampled node when placing over a sample.
const SAMPLE_DISKS_PER_NODE: usize = 2;

/// Volumes examined to average the cross-zone read cost of a rebuild.
const CROSS_ZONE_SAMPLE_VOLUMES: usize = 20_000;

/// One durability scheme in use, with the numbers the simulator needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SchemeInfo {
    /// The scheme.
    pub scheme: Scheme,
    /// Extents needed to read or rebuild (k).
    pub data: u8,
    /// Extents per volume (n).
    pub extents: u8,
}

impl SchemeInfo {
    fn new(scheme: Scheme) -> Self {
        SchemeInfo { scheme, data: data_extents(scheme) as u8, extents: scheme.extent_count() as u8 }
    }

    /// Losses a volume survives (n - k).
    pub fn tolerance(&self) -> u8 {
        self.extents - self.data
    }
}

/// A node: its zone and disks.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// Zone index.
    pub zone: u32,
    /// Disk indexes.
    pub disks: Vec<u32>,
}

/// A zone: its name and nodes.
#[derive(Clone, Debug)]
pub struct ZoneInfo {
    /// Name as placement sees it.
    pub name: String,
    /// Node indexes.
    pub nodes: Vec<u32>,
}

/// The static cluster: disks, nodes, zones and every volume's extents.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Placement's view of every disk (index = simulator disk index), with final fill.
    pub disk_views: Vec<DiskView>,
    /// Node index of each disk.
    pub disk_node: Vec<u32>,
    /// Zone index of each disk.
    pub disk_zone: Vec<u32>,
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
    /// Zones.
    pub zones: Vec<ZoneInfo>,
    /// Schemes in use.
    pub schemes: Vec<SchemeInfo>,
    /// Scheme index of each volume.
    pub volume_scheme: Vec<u8>,
    /// Logical bytes of each volume.
    pub volume_bytes: Vec<u64>,
    /// `slot_disks[slot_start[v]..slot_start[v + 1]]` are the disks of volume v, extent order.
    pub slot_start: Vec<u32>,
    /// Disk index of every extent.
    pub slot_disks: Vec<u32>,
    /// `disk_volumes[disk_start[d]..disk_start[d + 1]]`: volumes with an extent on disk d,
    /// ascending (which is also the order a disk's rebuild visits them).
    pub disk_start: Vec<u32>,
    /// Volume ids per disk.
    pub disk_volumes: Vec<u32>,
    /// Position of every extent (indexed like `slot_disks`) in its disk's volume list.
    pub slot_pos: Vec<u32>,
    /// Bytes of one extent of each volume.
    pub volume_extent_bytes: Vec<u64>,
    /// Bytes of all extents on each disk.
    pub disk_extent_bytes: Vec<u64>,
}

impl Layout {
    /// Generates the configured cluster and places every volume with `place_volume`.
    ///
    /// Clusters of at most [`FULL_VIEW_DISKS_MAX`] disks show placement the whole view.
    /// Larger ones show it, per volume, a uniformly random sample of nodes in every zone
    /// (twice the per-zone extent limit, at least 4) with [`SAMPLE_DISKS_PER_NODE`] disks
    /// each; placement's rules and free-space weighting then apply within the sample. A
    /// volume the sample cannot take is placed over the whole view.
    pub fn from_shape(shape: &ClusterShape, seed: u64, threads: usize) -> Result<Layout, SimError> {
        let mut views = Vec::new();
        let mut disk_id = 0u64;
        for zone in 0..shape.zones {
            for node in 0..shape.nodes_per_zone {
                let node_id = u64::from(zone) * u64::from(shape.nodes_per_zone) + u64::from(node);
                for _ in 0..shape.disks_per_node {
                    views.push(DiskView {
                        disk_id,
                        node_id,
                        zone: format!("z{zone}"),
                        capacity_bytes: shape.disk_capacity_bytes,
                        used_bytes: 0,
                        writable: true,
                    });
                    disk_id += 1;
                }
            }
        }
        let mut view = ClusterView::new(views);
        let extent = extent_bytes(shape.scheme, shape.volume_size_bytes);
        let extents = shape.scheme.extent_count();
        let volumes = usize::try_from(shape.volumes).unwrap_or(usize::MAX);
        let mut slot_disks: Vec<u32> = Vec::with_capacity(volumes.saturating_mul(extents));
        let threads = threads.clamp(1, crate::config::THREADS_MAX);
        let mut first = 0u64;
        while first < shape.volumes {
            let last = (first + PLACEMENT_CHUNK_VOLUMES).min(shape.volumes);
            // Every volume of a chunk sees the fill at the start of the chunk, so the
            // result does not depend on how the chunk is split over threads.
            let placed: Vec<Placed> = if threads == 1 {
                (first..last).map(|v| place_one(&view, shape, extent, seed, v)).collect()
            } else {
                let view = &view;
                let mut parts: Vec<Vec<(u64, Placed)>> = Vec::new();
                std::thread::scope(|scope| {
                    let handles: Vec<_> = (0..threads as u64)
                        .map(|t| {
                            scope.spawn(move || {
                                (first + t..last)
                                    .step_by(threads)
                                    .map(|v| (v, place_one(view, shape, extent, seed, v)))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    for handle in handles {
                        match handle.join() {
                            Ok(part) => parts.push(part),
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                });
                let mut all: Vec<_> = parts.into_iter().flatten().collect();
                all.sort_by_key(|(v, _)| *v);
                all.into_iter().map(|(_, r)| r).collect()
            };
            for result in placed {
                for disk_ref in result? {
                    // Generated disk ids are the indexes.
                    let index = disk_ref.disk_id as usize;
                    if let Some(disk) = view.disks.get_mut(index) {
                        disk.used_bytes += extent;
                    }
                    slot_disks.push(index as u32);
                }
            }
            first = last;
        }
        let disks = view.disks;
        let n = disks.len();
        let disk_node: Vec<u32> = disks.iter().map(|d| d.node_id as u32).collect();
        let nodes_total = (shape.zones * shape.nodes_per_zone) as usize;
        let mut nodes: Vec<NodeInfo> = (0..nodes_total)
            .map(|i| NodeInfo { zone: (i / shape.nodes_per_zone as usize) as u32, disks: vec![] })
            .collect();
        for (d, &node) in disk_node.iter().enumerate() {
            if let Some(info) = nodes.get_mut(node as usize) {
                info.disks.push(d as u32);
            }
        }
        let zones: Vec<ZoneInfo> = (0..shape.zones)
            .map(|z| ZoneInfo {
                name: format!("z{z}"),
                nodes: (0..shape.nodes_per_zone).map(|i| z * shape.nodes_per_zone + i).collect(),
            })
            .collect();
        let disk_zone: Vec<u32> = disk_node.iter().map(|&node| node / shape.nodes_per_zone).collect();
        let volume_count = shape.volumes as usize;
        let slot_start: Vec<u32> = (0..=volume_count).map(|v| (v * extents) as u32).collect();
        Ok(Layout::finish(
            disks,
            disk_node,
            disk_zone,
            nodes,
            zones,
            vec![SchemeInfo::new(shape.scheme)],
            vec![0; volume_count],
            vec![shape.volume_size_bytes; volume_count],
            slot_start,
            slot_disks,
            n,
        ))
    }

    /// Builds the layout of a live cluster as reported by its master.
    pub fn from_input(input: &ClusterInput) -> Result<Layout, SimError> {
        let view = ClusterView::new(input.disks.clone());
        view.validate().map_err(|e| SimError::ClusterInput(e.to_string()))?;
        if input.disks.len() as u64 > crate::config::DISKS_MAX {
            return Err(SimError::Limit {
                what: "disk count",
                value: input.disks.len() as u64,
                max: crate::config::DISKS_MAX,
            });
        }
        if input.volumes.len() as u64 > crate::config::VOLUMES_MAX {
            return Err(SimError::Limit {
                what: "volume count",
                value: input.volumes.len() as u64,
                max: crate::config::VOLUMES_MAX,
            });
        }
        if input.volumes.is_empty() {
            return Err(SimError::ClusterInput("the cluster has no volumes to simulate".into()));
        }
        let index_of: HashMap<u64, u32> =
            input.disks.iter().enumerate().map(|(i, d)| (d.disk_id, i as u32)).collect();
        let mut zone_index: BTreeMap<&str, u32> = BTreeMap::new();
        for d in &input.disks {
            let next = zone_index.len() as u32;
            zone_index.entry(d.zone.as_str()).or_insert(next);
        }
        let mut node_index: BTreeMap<u64, u32> = BTreeMap::new();
        let mut nodes: Vec<NodeInfo> = Vec::new();
        let mut disk_node = Vec::with_capacity(input.disks.len());
        let mut disk_zone = Vec::with_capacity(input.disks.len());
        for (i, d) in input.disks.iter().enumerate() {
            let zone = zone_index.get(d.zone.as_str()).copied().unwrap_or(0);
            let node = *node_index.entry(d.node_id).or_insert_with(|| {
                nodes.push(NodeInfo { zone, disks: vec![] });
                (nodes.len() - 1) as u32
            });
            if let Some(info) = nodes.get_mut(node as usize) {
                info.disks.push(i as u32);
            }
            disk_node.push(node);
            disk_zone.push(zone);
        }
        let mut zones: Vec<ZoneInfo> =
            zone_index.keys().map(|name| ZoneInfo { name: (*name).to_string(), nodes: vec![] }).collect();
        for (i, node) in nodes.iter().enumerate() {
            if let Some(z) = zones.get_mut(node.zone as usize) {
                z.nodes.push(i as u32);
            }
        }
        let mut schemes: Vec<SchemeInfo> = Vec::new();
        let mut volume_scheme = Vec::with_capacity(input.volumes.len());
        let mut volume_bytes = Vec::with_capacity(input.volumes.len());
        let mut slot_start = Vec::with_capacity(input.volumes.len() + 1);
        let mut slot_disks = Vec::new();
        slot_start.push(0u32);
        for (v, vol) in input.volumes.iter().enumerate() {
            vol.scheme.validate().map_err(|e| SimError::ClusterInput(format!("volume {v}: {e}")))?;
            if vol.disk_ids.len() != vol.scheme.extent_count() {
                return Err(SimError::ClusterInput(format!(
                    "volume {v}: {} has {} extents, {} disks listed",
                    vol.scheme,
                    vol.scheme.extent_count(),
                    vol.disk_ids.len()
                )));
            }
            if vol.bytes == 0 {
                return Err(SimError::ClusterInput(format!("volume {v} has 0 bytes")));
            }
            let scheme_index = match schemes.iter().position(|s| s.scheme == vol.scheme) {
                Some(i) => i,
                None => {
                    schemes.push(SchemeInfo::new(vol.scheme));
                    schemes.len() - 1
                }
            };
            if schemes.len() > usize::from(u8::MAX) {
                return Err(SimError::Limit {
                    what: "distinct schemes",
                    value: schemes.len() as u64,
                    max: 255,
                });
            }
            let first = slot_disks.len();
            for disk_id in &vol.disk_ids {
                let Some(&d) = index_of.get(disk_id) else {
                    return Err(SimError::ClusterInput(format!(
                        "volume {v}: disk {disk_id} is not in the disk list"
                    )));
                };
                if slot_disks[first..].contains(&d) {
                    return Err(SimError::ClusterInput(format!(
                        "volume {v}: disk {disk_id} holds two extents"
                    )));
                }
                slot_disks.push(d);
            }
            volume_scheme.push(scheme_index as u8);
            volume_bytes.push(vol.bytes);
            slot_start.push(slot_disks.len() as u32);
        }
        let n = input.disks.len();
        Ok(Layout::finish(
            input.disks.clone(),
            disk_node,
            disk_zone,
            nodes,
            zones,
            schemes,
            volume_scheme,
            volume_bytes,
            slot_start,
            slot_disks,
            n,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        disk_views: Vec<DiskView>,
        disk_node: Vec<u32>,
        disk_zone: Vec<u32>,
        nodes: Vec<NodeInfo>,
        zones: Vec<ZoneInfo>,
        schemes: Vec<SchemeInfo>,
        volume_scheme: Vec<u8>,
        volume_bytes: Vec<u64>,
        slot_start: Vec<u32>,
        slot_disks: Vec<u32>,
        disk_count: usize,
    ) -> Layout {
        // Counting sort into per-disk lists; volumes are visited in id order, so every
        // list comes out ascending.
        let mut counts = vec![0u32; disk_count + 1];
        for &d in &slot_disks {
            counts[d as usize + 1] += 1;
        }
        for i in 1..counts.len() {
            counts[i] += counts[i - 1];
        }
        let disk_start = counts.clone();
        let mut fill = counts;
        let mut disk_volumes = vec![0u32; slot_disks.len()];
        let mut slot_pos = vec![0u32; slot_disks.len()];
        for v in 0..volume_scheme.len() {
            for i in slot_start[v] as usize..slot_start[v + 1] as usize {
                let d = slot_disks[i] as usize;
                let at = &mut fill[d];
                disk_volumes[*at as usize] = v as u32;
                slot_pos[i] = *at - disk_start[d];
                *at += 1;
            }
        }
        let volume_extent_bytes: Vec<u64> = (0..volume_scheme.len())
            .map(|v| extent_bytes(schemes[volume_scheme[v] as usize].scheme, volume_bytes[v]))
            .collect();
        let mut disk_extent_bytes = vec![0u64; disk_count];
        for v in 0..volume_scheme.len() {
            for &d in &slot_disks[slot_start[v] as usize..slot_start[v + 1] as usize] {
                disk_extent_bytes[d as usize] += volume_extent_bytes[v];
            }
        }
        Layout {
            slot_pos,
            volume_extent_bytes,
            disk_extent_bytes,
            disk_views,
            disk_node,
            disk_zone,
            nodes,
            zones,
            schemes,
            volume_scheme,
            volume_bytes,
            slot_start,
            slot_disks,
            disk_start,
            disk_volumes,
        }
    }

    /// Number of disks.
    pub fn disk_count(&self) -> usize {
        self.disk_node.len()
    }

    /// Number of volumes.
    pub fn volume_count(&self) -> usize {
        self.volume_scheme.len()
    }

    /// Disks holding volume `v`'s extents, in extent order.
    pub fn slots(&self, v: u32) -> &[u32] {
        let v = v as usize;
        &self.slot_disks[self.slot_start[v] as usize..self.slot_start[v + 1] as usize]
    }

    /// Position of extent `slot` of volume `v` in its disk's volume list.
    pub fn pos_of(&self, v: u32, slot: usize) -> usize {
        self.slot_pos[self.slot_start[v as usize] as usize + slot] as usize
    }

    /// Volumes with an extent on disk `d`, ascending.
    pub fn volumes_on(&self, d: u32) -> &[u32] {
        let d = d as usize;
        &self.disk_volumes[self.disk_start[d] as usize..self.disk_start[d + 1] as usize]
    }

    /// Scheme numbers of volume `v`.
    pub fn scheme_of(&self, v: u32) -> SchemeInfo {
        self.schemes[self.volume_scheme[v as usize] as usize]
    }

    /// Bytes of one extent of volume `v`.
    pub fn extent_bytes(&self, v: u32) -> u64 {
        self.volume_extent_bytes[v as usize]
    }

    /// Raw bytes held by all extents.
    pub fn stored_bytes(&self) -> u64 {
        (0..self.volume_count() as u32)
            .map(|v| self.extent_bytes(v) * u64::from(self.scheme_of(v).extents))
            .sum()
    }

    /// Logical bytes of all volumes.
    pub fn logical_bytes(&self) -> u64 {
        self.volume_bytes.iter().sum()
    }

    /// Bytes of extents on disk `d`.
    pub fn disk_bytes(&self, d: u32) -> u64 {
        self.disk_extent_bytes[d as usize]
    }

    /// Whether cellar's placement could put a rebuilt copy of extent `slot` of volume `v`
    /// anywhere, with the disks of `unavailable_zone` (if any) unwritable: asks the real
    /// `place_replacement`. Used to decide whether the planner can rebuild the extents of
    /// a zone that is down (with 3 zones and per-zone limits it never can).
    pub fn repair_targets_exist(&self, v: u32, slot: usize, unavailable_zone: Option<u32>) -> bool {
        let mut disks = self.disk_views.clone();
        if let Some(zone) = unavailable_zone {
            for (d, view) in disks.iter_mut().enumerate() {
                if self.disk_zone[d] == zone {
                    view.writable = false;
                }
            }
        }
        let view = ClusterView::new(disks);
        let current: Vec<Option<DiskRef>> = self
            .slots(v)
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let down = unavailable_zone.is_some_and(|z| self.disk_zone[d as usize] == z);
                if i == slot || down { None } else { Some(self.disk_views[d as usize].disk_ref()) }
            })
            .collect();
        let seed = derive_seed(u64::from(v), slot as u64);
        place_replacement(&view, self.scheme_of(v).scheme, &current, slot, &[], 0, seed).is_ok()
    }

    /// The cluster's repair throughput: bytes of lost extents rebuilt per second when every
    /// disk, node and the cross-zone links give their configured repair bandwidth.
    ///
    /// Rebuilding one byte of an extent reads k bytes and writes one: (k + 1) bytes of
    /// disk I/O and of node network. It reads `k - (other extents in the lost extent's
    /// zone)` bytes across zones (the rebuild happens in the lost extent's zone, where
    /// `place_replacement` puts it). The three limits are averaged over the volumes by
    /// bytes, and the throughput is the smallest of them.
    pub fn repair_rate(&self, repair: &Repair) -> RepairRate {
        let mut weight = 0.0;
        let mut io_amp = 0.0;
        let mut cross = 0.0;
        let step = (self.volume_count() / CROSS_ZONE_SAMPLE_VOLUMES).max(1);
        for v in (0..self.volume_count()).step_by(step) {
            let v = v as u32;
            let info = self.scheme_of(v);
            let bytes = self.extent_bytes(v) as f64;
            let slots = self.slots(v);
            for &d in slots {
                let zone = self.disk_zone[d as usize];
                let local_others =
                    slots.iter().filter(|&&o| o != d && self.disk_zone[o as usize] == zone).count();
                let remote = usize::from(info.data).saturating_sub(local_others);
                weight += bytes;
                io_amp += bytes * (f64::from(info.data) + 1.0);
                cross += bytes * remote as f64;
            }
        }
        let io_amp = if weight > 0.0 { io_amp / weight } else { 2.0 };
        let cross_per_byte = if weight > 0.0 { cross / weight } else { 0.0 };
        let disk_limit = self.disk_count() as f64 * repair.disk_bytes_per_sec / io_amp;
        let node_limit = self.nodes.len() as f64 * repair.node_bytes_per_sec / io_amp;
        let cross_limit = if cross_per_byte > 0.0 {
            repair.cross_zone_bytes_per_sec / cross_per_byte
        } else {
            f64::INFINITY
        };
        let bytes_per_sec = disk_limit.min(node_limit).min(cross_limit);
        let bottleneck = if bytes_per_sec == cross_limit {
            "cross-zone"
        } else if bytes_per_sec == node_limit {
            "node network"
        } else {
            "disk"
        };
        RepairRate {
            bytes_per_sec,
            io_amplification: io_amp,
            cross_zone_per_byte: cross_per_byte,
            bottleneck,
        }
    }
}

/// The cluster's repair throughput and what limits it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RepairRate {
    /// Bytes of lost extents rebuilt per second.
    pub bytes_per_sec: f64,
    /// Disk and network bytes moved per rebuilt byte (k + 1).
    pub io_amplification: f64,
    /// Cross-zone bytes read per rebuilt byte.
    pub cross_zone_per_byte: f64,
    /// Which limit binds.
    pub bottleneck: &'static str,
}

/// Places volume `v` over `view` (or a sample of it, see [`Layout::from_shape`]).
fn place_one(
    view: &ClusterView,
    shape: &ClusterShape,
    extent: u64,
    seed: u64,
    v: u64,
) -> Result<Vec<DiskRef>, SimError> {
    let placement_seed = derive_seed(seed, v);
    let placed = if view.disks.len() <= FULL_VIEW_DISKS_MAX {
        place_volume(view, shape.scheme, extent, placement_seed)
    } else {
        let nodes_sample =
            (2 * shape.scheme.extents_per_zone_max()).max(4).min(shape.nodes_per_zone as usize);
        let disks_sample = SAMPLE_DISKS_PER_NODE.min(shape.disks_per_node as usize);
        let mut rng = Rng::new(derive_seed(placement_seed, 0x7361_6d70_6c65));
        let mut sample = ClusterView::default();
        for zone in 0..shape.zones as usize {
            let zone_first_node = zone * shape.nodes_per_zone as usize;
            for node in sample_indexes(&mut rng, shape.nodes_per_zone as usize, nodes_sample) {
                let first = (zone_first_node + node) * shape.disks_per_node as usize;
                for d in sample_indexes(&mut rng, shape.disks_per_node as usize, disks_sample) {
                    if let Some(disk) = view.disks.get(first + d) {
                        sample.disks.push(disk.clone());
                    }
                }
            }
        }
        place_volume(&sample, shape.scheme, extent, placement_seed)
            .or_else(|_| place_volume(view, shape.scheme, extent, placement_seed))
    };
    placed.map_err(|source| SimError::Placement { volume: v, source })
}

/// `count` distinct indexes from 0..n, uniformly (partial Fisher-Yates over a small n).
fn sample_indexes(rng: &mut Rng, n: usize, count: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    let count = count.min(n);
    for i in 0..count {
        let j = i + rng.below((n - i) as u64) as usize;
        all.swap(i, j);
    }
    all.truncate(count);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    fn shape(zones: u32, nodes: u32, disks: u32, scheme: &str, volumes: u64) -> ClusterShape {
        let mut shape = SimConfig::default().cluster;
        shape.zones = zones;
        shape.nodes_per_zone = nodes;
        shape.disks_per_node = disks;
        shape.scheme = scheme.parse().expect("scheme");
        shape.volumes = volumes;
        shape
    }

    #[test]
    fn generated_layout_obeys_placement_rules_and_lists_are_sorted() {
        for (nodes, disks) in [(2, 2), (10, 12)] {
            let layout = Layout::from_shape(&shape(3, nodes, disks, "rs-6-3", 500), 9, 2).expect("layout");
            let view = ClusterView::new(layout.disk_views.clone());
            for v in 0..layout.volume_count() as u32 {
                let placement: Vec<DiskRef> =
                    layout.slots(v).iter().map(|&d| layout.disk_views[d as usize].disk_ref()).collect();
                assert_eq!(
                    cellar_placement::check_placement(&view, layout.scheme_of(v).scheme, &placement),
                    Ok(())
                );
            }
            for d in 0..layout.disk_count() as u32 {
                assert!(layout.volumes_on(d).windows(2).all(|w| w[0] < w[1]));
            }
            assert_eq!(layout.disk_volumes.len(), 500 * 9);
        }
    }

    #[test]
    fn same_seed_places_the_same_way() {
        let a = Layout::from_shape(&shape(3, 10, 12, "r3", 300), 5, 2).expect("layout");
        let b = Layout::from_shape(&shape(3, 10, 12, "r3", 300), 5, 2).expect("layout");
        let c = Layout::from_shape(&shape(3, 10, 12, "r3", 300), 6, 2).expect("layout");
        assert_eq!(a.slot_disks, b.slot_disks);
        assert_ne!(a.slot_disks, c.slot_disks);
    }

    #[test]
    fn rs_10_4_does_not_fit_three_zones() {
        let err = Layout::from_shape(&shape(3, 10, 12, "rs-10-4", 10), 1, 2).expect_err("3 zones x 4 < 14");
        assert!(err.to_string().contains("not enough failure domains"), "{err}");
    }

    #[test]
    fn rs_6_3_rebuild_reads_four_fragments_across_zones() {
        let layout = Layout::from_shape(&shape(3, 10, 12, "rs-6-3", 2000), 3, 2).expect("layout");
        let rate = layout.repair_rate(&SimConfig::default().repair);
        assert!((rate.cross_zone_per_byte - 4.0).abs() < 1e-9, "{rate:?}");
        assert!((rate.io_amplification - 7.0).abs() < 1e-9);
        assert_eq!(rate.bottleneck, "cross-zone");
        assert!((rate.bytes_per_sec - 2.5e9 / 4.0).abs() < 1.0);
    }

    #[test]
    fn a_downed_zone_cannot_take_rebuilt_extents_of_a_three_zone_layout() {
        let layout = Layout::from_shape(&shape(3, 4, 2, "rs-6-3", 10), 3, 2).expect("layout");
        let v = 0;
        let slot = 0;
        let zone = layout.disk_zone[layout.slots(v)[slot] as usize];
        assert!(layout.repair_targets_exist(v, slot, None));
        assert!(!layout.repair_targets_exist(v, slot, Some(zone)));
    }

    #[test]
    fn a_live_cluster_is_taken_as_is_and_bad_input_is_named() {
        let generated = Layout::from_shape(&shape(3, 2, 2, "rs-2-1", 20), 4, 1).expect("layout");
        let volumes: Vec<crate::VolumeInput> = (0..20u32)
            .map(|v| crate::VolumeInput {
                scheme: generated.scheme_of(v).scheme,
                bytes: 1 << 30,
                disk_ids: generated
                    .slots(v)
                    .iter()
                    .map(|&d| generated.disk_views[d as usize].disk_id)
                    .collect(),
            })
            .collect();
        let input = ClusterInput {
            disks: generated.disk_views.clone(),
            volumes,
            measured_repair_bytes_per_sec: None,
        };
        let layout = Layout::from_input(&input).expect("live layout");
        assert_eq!(layout.slot_disks, generated.slot_disks);
        assert_eq!((layout.zones.len(), layout.nodes.len()), (3, 6));

        let mut bad = input.clone();
        bad.volumes[3].disk_ids[0] = 999;
        let err = Layout::from_input(&bad).expect_err("unknown disk");
        assert!(err.to_string().contains("volume 3: disk 999"), "{err}");
        let mut bad = input;
        bad.volumes[1].disk_ids.pop();
        assert!(Layout::from_input(&bad).is_err());
    }
}
