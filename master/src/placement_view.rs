//! Builds the placement module's view of the cluster from the replicated state.

use std::collections::BTreeMap;

use cellar_placement::{ClusterView, DiskView};

use crate::state::Drains;
use crate::types::{
    DiskHealth, DiskRecord, ExtentPlace, NodeRecord, NodeState, Part, TaskKind, TaskRecord, TaskState,
    VolumeRecord,
};

/// Bytes promised on each disk to extents not written yet: the targets of open tasks
/// (encodes, reconstructs, copies) and of what the planner placed earlier in the same pass.
/// Placement counts them as used, so that the disks' free bytes (as their servers last
/// heartbeated them) are not promised twice: 42 encodes planned in one pass onto a disk
/// with room for a few filled it, and every attempt of the rest failed "disk full".
#[derive(Debug, Default, Clone)]
pub struct Promised {
    by_disk: BTreeMap<u64, u64>,
}

impl Promised {
    /// What the open (not failed) tasks of `tasks` will write, sized from their volumes
    /// (`volume` looks one up; a task of an unknown volume promises nothing).
    pub fn of<'a>(tasks: &[TaskRecord], volume: impl Fn(u64) -> Option<&'a VolumeRecord>) -> Promised {
        let mut promised = Promised::default();
        for t in tasks.iter().filter(|t| t.state != TaskState::Failed) {
            let Some(v) = volume(t.kind.volume_id()) else { continue };
            match &t.kind {
                TaskKind::Encode { fragments, .. } => promised.add(fragments, fragment_bytes(v)),
                TaskKind::Reconstruct { target, .. } => promised.add(&[*target], fragment_bytes(v)),
                TaskKind::Copy { part: Part::Fragment { .. }, target, .. } => {
                    promised.add(&[*target], fragment_bytes(v))
                }
                TaskKind::Copy { part: Part::Replica, target, .. } => promised.add(&[*target], v.size_bytes),
                _ => {}
            }
        }
        promised
    }

    /// Promises `bytes_each` more on each disk of `places`.
    pub fn add(&mut self, places: &[ExtentPlace], bytes_each: u64) {
        for p in places {
            let b = self.by_disk.entry(p.disk_id).or_insert(0);
            *b = b.saturating_add(bytes_each);
        }
    }

    /// Bytes promised on `disk_id`.
    pub fn bytes(&self, disk_id: u64) -> u64 {
        self.by_disk.get(&disk_id).copied().unwrap_or(0)
    }
}

/// The size of each of `v`'s fragments once coded.
pub fn fragment_bytes(v: &VolumeRecord) -> u64 {
    v.size_bytes.div_ceil(u64::from(v.scheme.data.max(1)))
}

/// Which volume servers placement may choose: those heard from (registered or
/// heartbeating) within `silent_after_ms` before `now_unix_ms`. A server that stopped, was
/// killed or is cut off keeps its extents but gets no new ones.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// The leader's clock.
    pub now_unix_ms: u64,
    /// Silence after which a node is passed over.
    pub silent_after_ms: u64,
}

impl Liveness {
    /// Whether `node` was heard from recently enough.
    pub fn heard_from(&self, node: &NodeRecord) -> bool {
        node.last_heartbeat_unix_ms.saturating_add(self.silent_after_ms) >= self.now_unix_ms
    }
}

/// Every disk with its node's zone; only healthy disks of up nodes that were heard from
/// recently, and not drained, are writable. The bytes `promised` on a disk count as used.
pub fn cluster_view(
    nodes: &[NodeRecord],
    disks: &[DiskRecord],
    liveness: Liveness,
    drains: &Drains,
    promised: &Promised,
) -> ClusterView {
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
                used_bytes: d
                    .capacity_bytes
                    .saturating_sub(d.free_bytes)
                    .saturating_add(promised.bytes(d.disk_id)),
                writable: writable(node, d)
                    && liveness.heard_from(node)
                    && !drains.drains(d.node_id, d.disk_id),
            })
        })
        .collect();
    ClusterView { disks }
}

/// The disks for a volume's k + m fragments when it is sealed at `length_bytes`, or none
/// (with a warning) when the volume is empty or the cell cannot
/// place them now: the volume then stays sealed and replicated until the planner finds a
/// placement (see [`try_fragment_places`]).
pub fn fragment_places(
    nodes: &[NodeRecord],
    disks: &[DiskRecord],
    v: &VolumeRecord,
    length_bytes: u64,
    liveness: Liveness,
    drains: &Drains,
    promised: &Promised,
) -> Vec<ExtentPlace> {
    try_fragment_places(nodes, disks, v, length_bytes, liveness, drains, promised).unwrap_or_else(|e| {
        tracing::warn!(volume = v.volume_id, error = %e, "cannot place fragments; the volume stays replicated");
        Vec::new()
    })
}

/// [`fragment_places`] without the warning: Ok(empty) when there is nothing to code (an
/// empty volume), Err when the cell cannot place the fragments now.
pub fn try_fragment_places(
    nodes: &[NodeRecord],
    disks: &[DiskRecord],
    v: &VolumeRecord,
    length_bytes: u64,
    liveness: Liveness,
    drains: &Drains,
    promised: &Promised,
) -> Result<Vec<ExtentPlace>, cellar_placement::PlacementError> {
    let cellar_erasure::Scheme { data, parity } = v.scheme;
    if length_bytes == 0 {
        return Ok(Vec::new());
    }
    let fragment_bytes = length_bytes.div_ceil(u64::from(data.max(1)));
    let view = fragment_view(cluster_view(nodes, disks, liveness, drains, promised), disks);
    let chosen = cellar_placement::place_fragments(&view, data, parity, fragment_bytes, v.volume_id)?;
    Ok(chosen.iter().map(|d| ExtentPlace { node_id: d.node_id, disk_id: d.disk_id }).collect())
}

/// `view` with each disk's trash counted as room: a volume server gives up trash (oldest
/// delete first) for a new fragment that would not fit otherwise (its disks'
/// `purge_trash_for_fragments`), so a full disk whose trash holds the room still takes an
/// encode's fragment. Without it, a cell whose disks were full of replicas and of the
/// trash of failed attempts placed no encode at all (bench/full_disk.py --every-disk),
/// though coding is what gives room back (a coded volume takes half the room of its
/// replicas). Replicas are placed without it: appends never purge the trash.
pub fn fragment_view(mut view: ClusterView, disks: &[DiskRecord]) -> ClusterView {
    let trash: BTreeMap<u64, u64> = disks.iter().map(|d| (d.disk_id, d.trash_bytes)).collect();
    for d in &mut view.disks {
        d.used_bytes = d.used_bytes.saturating_sub(trash.get(&d.disk_id).copied().unwrap_or(0));
    }
    view
}

/// Room for fragments on `d` as its server last said: free bytes and trash (see
/// [`fragment_view`]).
pub fn fragment_room_bytes(d: &DiskRecord) -> u64 {
    d.free_bytes.saturating_add(d.trash_bytes)
}

/// True when the disk may take new extents.
pub fn writable(node: &NodeRecord, disk: &DiskRecord) -> bool {
    node.state == NodeState::Up && disk.health == DiskHealth::Ok
}
