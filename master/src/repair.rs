//! The repair planner (DESIGN section 6): finds every volume with an extent it can no
//! longer count on (on a node marked down, a failed disk, or a disk reported to hold it
//! missing or corrupt), and plans what brings it back to full redundancy, most at risk
//! first: a coded volume's lost fragments are reconstructed onto new disks, a sealed
//! volume's lost replicas copied (unless its encode, which replaces every replica, is on
//! its way), an open volume that lost a replica is sealed at its acknowledged end, so
//! that it is coded rather than re-replicated. Targets are chosen by
//! [`cellar_placement::place_replacement`] under the same rules as first placement.
//!
//! The planner ([`plan_pass`]) is pure: it takes records and returns commands; every command re-checks
//! its preconditions when applied (see [`crate::tasks::plan_repair`]). Repair is bounded
//! cell-wide by the number of repair tasks queued or running and by a bandwidth budget
//! (bytes of extents rebuilt per second), both from the master's configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use cellar_placement::{ClusterView, DiskRef, Scheme};

use crate::codec::Kind;
use crate::command::Command;
use crate::placement_view::{Liveness, Promised, cluster_view, fragment_bytes, fragment_places};
use crate::state::{Drains, PREFIX_DISK, PREFIX_NODE, PREFIX_VOLUME, StateError};
use crate::store::sm::StateReader;
use crate::types::{
    DiskHealth, DiskRecord, ExtentPlace, NodeRecord, NodeState, Part, TaskKind, TaskRecord, TaskState,
    VolumeRecord, VolumeState,
};

/// Repairs one pass plans at most (the rest wait for the next pass).
pub const REPAIRS_PER_PASS_MAX: usize = 64;

/// The repair limits of the cell (master configuration).
#[derive(Debug, Clone, Copy)]
pub struct RepairSettings {
    /// A node silent this long is marked down and its extents repaired.
    pub down_after_ms: u64,
    /// Repair tasks queued or running at once, cell-wide.
    pub tasks_max: usize,
    /// Bytes of extents rebuilt per second, cell-wide (0: no limit).
    pub bytes_per_sec: u64,
    /// Replicas of an open or sealed volume at full redundancy.
    pub replicas: usize,
}

/// A token bucket of repair bytes: refilled at the repair bandwidth, spent by each repair
/// planned (its extent's size). A repair is planned while the bucket is positive, so an
/// extent larger than a second's budget still goes, and the ones after it wait.
#[derive(Debug, Clone, Default)]
pub struct RepairBudget {
    bytes: i128,
    refilled_at_unix_ms: Option<u64>,
}

impl RepairBudget {
    /// Adds what the bandwidth gave since the last refill, up to one second's worth.
    pub fn refill(&mut self, now_unix_ms: u64, bytes_per_sec: u64) {
        let elapsed_ms = self.refilled_at_unix_ms.map_or(1000, |at| now_unix_ms.saturating_sub(at));
        self.refilled_at_unix_ms = Some(now_unix_ms);
        let cap = i128::from(bytes_per_sec);
        self.bytes = (self.bytes + cap * i128::from(elapsed_ms) / 1000).min(cap);
    }

    fn allows(&self, bytes_per_sec: u64) -> bool {
        bytes_per_sec == 0 || self.bytes > 0
    }

    fn spend(&mut self, bytes: u64) {
        self.bytes -= i128::from(bytes);
    }

    /// Gives back what a repair that was not queued (its command refused) spent.
    pub fn refund(&mut self, bytes: u64) {
        self.bytes += i128::from(bytes);
    }
}

/// How much of its redundancy a volume has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redundancy {
    /// Extents a whole volume has (replicas configured, or k + m fragments).
    pub full: usize,
    /// Extents placed and not lost.
    pub healthy: usize,
    /// How many more extents it can lose and still be read (negative: data unreadable
    /// until a lost extent comes back).
    pub can_lose: i64,
    /// Slots of the placement (replica or fragment index) that are lost.
    pub lost: Vec<usize>,
}

impl Redundancy {
    /// Fewer healthy extents than the scheme calls for.
    pub fn below_full(&self) -> bool {
        self.healthy < self.full
    }
}

/// Nodes and disks by id, with what makes an extent on them lost.
pub struct Health<'a> {
    nodes: BTreeMap<u64, &'a NodeRecord>,
    disks: BTreeMap<u64, &'a DiskRecord>,
}

impl<'a> Health<'a> {
    /// Indexes the records.
    pub fn new(nodes: &'a [NodeRecord], disks: &'a [DiskRecord]) -> Self {
        Health {
            nodes: nodes.iter().map(|n| (n.node_id, n)).collect(),
            disks: disks.iter().map(|d| (d.disk_id, d)).collect(),
        }
    }

    /// Whether an extent at `place` of `v` cannot be counted on: its node is down or gone,
    /// its disk failed or gone, or the disk was reported to hold it missing or corrupt.
    pub fn lost(&self, v: &VolumeRecord, place: &ExtentPlace) -> bool {
        let node_ok = self.nodes.get(&place.node_id).is_some_and(|n| n.state == NodeState::Up);
        let disk_ok = self
            .disks
            .get(&place.disk_id)
            .is_some_and(|d| d.health == DiskHealth::Ok && d.node_id == place.node_id);
        !node_ok || !disk_ok || v.bad_disks.contains(&place.disk_id)
    }

    /// The volume's redundancy; `replicas` is the configured replica count.
    pub fn redundancy(&self, v: &VolumeRecord, replicas: usize) -> Redundancy {
        let (extents, full, needed) = match v.state {
            VolumeState::Open | VolumeState::Sealed => (&v.replicas, replicas.max(v.replicas.len()), 1),
            VolumeState::Coded => (&v.fragments, v.scheme.fragment_count(), v.scheme.data_count()),
        };
        let lost: Vec<usize> = (0..extents.len()).filter(|&i| self.lost(v, &extents[i])).collect();
        let healthy = extents.len() - lost.len();
        Redundancy { full, healthy, can_lose: healthy as i64 - needed as i64, lost }
    }
}

/// What `cellar admin status` and `/metrics` show of redundancy and repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairStatus {
    /// Volumes by how many more extents each can lose (ascending).
    pub by_can_lose: BTreeMap<i64, u64>,
    /// Volumes with fewer healthy extents than their scheme calls for.
    pub below_full: u64,
    /// Reconstructs and copies queued or running.
    pub tasks_open: u64,
    /// Reconstructs and copies given up (planned again once their last claim would have ended).
    pub tasks_failed: u64,
    /// Bytes of extents the open repair tasks rebuild.
    pub bytes_pending: u64,
    /// Nodes marked down.
    pub nodes_down: u64,
    /// Disks failed.
    pub disks_failed: u64,
    /// Extents still placed on drained nodes or disks.
    pub extents_draining: u64,
    /// Fragments on a disk that holds another fragment of their volume (moved off by the
    /// planner; see `sharing_a_disk`).
    pub extents_sharing_a_disk: u64,
    /// Volumes that cannot be read whole until a lost extent returns, with the volume
    /// bytes that are lost (a lost data fragment's range; a replicated volume's whole).
    pub unreadable: BTreeMap<u64, Vec<Range<u64>>>,
    /// The first [`STATUS_LIST_MAX`] volumes below full (by volume id): which ones wait,
    /// for an operator (and a test) asking why redundancy does not come back.
    pub below_full_volumes: Vec<BelowFull>,
    /// The first [`STATUS_LIST_MAX`] tasks of every kind not given up (by task id), with
    /// what they wait for.
    pub open_tasks: Vec<TaskRecord>,
    /// The first [`STATUS_LIST_MAX`] tasks given up (by task id), each with its last error.
    pub failed_tasks: Vec<TaskRecord>,
}

/// Volumes and tasks listed by [`status`] at most (the counts cover them all).
pub const STATUS_LIST_MAX: usize = 32;

/// A volume with fewer healthy extents than its scheme calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BelowFull {
    /// The volume.
    pub volume_id: u64,
    /// Its state.
    pub state: VolumeState,
    /// Extents placed and not lost.
    pub healthy: u64,
    /// Extents a whole volume has.
    pub full: u64,
}

/// Lost block hashes `cellar admin status` lists at most (the count is exact).
pub const LOST_HASHES_MAX: usize = 1000;

/// The blocks whose bytes are on lost extents only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostBlocks {
    /// How many.
    pub count: u64,
    /// The first [`LOST_HASHES_MAX`] of them, in index order.
    pub hashes: Vec<[u8; 32]>,
}

/// The volume bytes that cannot be read while `r.lost` is lost (`r.can_lose < 0`): the
/// ranges of its lost data fragments when coded (a block elsewhere still reads from its
/// own fragment), all of it when replicated.
fn lost_ranges(v: &VolumeRecord, r: &Redundancy) -> Vec<Range<u64>> {
    let whole = std::iter::once(0..v.size_bytes).collect();
    if v.state != VolumeState::Coded {
        return whole;
    }
    let Ok(layout) = cellar_erasure::Layout::new(v.scheme, v.size_bytes, cellar_format::FRAGMENT_CHUNK_BYTES)
    else {
        return whole;
    };
    r.lost.iter().filter_map(|&slot| layout.data_volume_range(slot).ok()).filter(|r| !r.is_empty()).collect()
}

/// Scans the block index for the blocks on `unreadable` volumes whose record (header and
/// payload) overlaps a lost range. Reads the whole index: called only when some volume is
/// unreadable, for `cellar admin status`.
pub fn lost_blocks(
    reader: &StateReader,
    unreadable: &BTreeMap<u64, Vec<Range<u64>>>,
) -> Result<LostBlocks, StateError> {
    let mut out = LostBlocks::default();
    if unreadable.is_empty() {
        return Ok(out);
    }
    let prefix = [crate::state::PREFIX_INDEX];
    reader.for_each(&prefix, &prefix, |key, value| {
        let entry = crate::types::IndexEntry::decode(value)
            .ok_or_else(|| StateError::Corrupt { key: hex::encode(key), detail: "bad index entry".into() })?;
        let Some(ranges) = unreadable.get(&entry.volume_id) else { return Ok(true) };
        let start = entry.offset_bytes;
        let end = start + cellar_format::RECORD_HEADER_BYTES as u64 + u64::from(entry.payload_bytes);
        if ranges.iter().any(|r| r.start < end && start < r.end) {
            out.count += 1;
            if out.hashes.len() < LOST_HASHES_MAX
                && let Some(hash) = key.get(1..33).and_then(|h| <[u8; 32]>::try_from(h).ok())
            {
                out.hashes.push(hash);
            }
        }
        Ok(true)
    })?;
    Ok(out)
}

/// The bytes of one of `v`'s extents (a replica, or a fragment once coded): what a repair
/// of it rebuilds.
pub fn extent_bytes(v: &VolumeRecord) -> u64 {
    match v.state {
        VolumeState::Coded => v.size_bytes.div_ceil(v.scheme.data_count().max(1) as u64),
        _ => v.size_bytes,
    }
}

/// The repair tasks queued or running (not given up), and each executing node's share of
/// the cell's repair bandwidth `bytes_per_sec` (split evenly among the nodes that have
/// one; 0: no limit).
pub fn open_repairs(tasks: &[TaskRecord], bytes_per_sec: u64) -> (u64, BTreeMap<u64, u64>) {
    let open: Vec<&TaskRecord> = tasks
        .iter()
        .filter(|t| matches!(t.kind, TaskKind::Reconstruct { .. } | TaskKind::Copy { .. }))
        .filter(|t| t.state != TaskState::Failed)
        .collect();
    let nodes: BTreeSet<u64> = open.iter().map(|t| t.node_id).collect();
    let share = bytes_per_sec / (nodes.len().max(1) as u64);
    (open.len() as u64, nodes.into_iter().map(|n| (n, share.max(u64::from(bytes_per_sec > 0)))).collect())
}

/// Computes [`RepairStatus`] from the records (a scan: status and scrapes, not hot paths).
pub fn status(
    volumes: &[VolumeRecord],
    tasks: &[TaskRecord],
    nodes: &[NodeRecord],
    disks: &[DiskRecord],
    drains: &Drains,
    replicas: usize,
) -> RepairStatus {
    let health = Health::new(nodes, disks);
    let mut out = RepairStatus {
        nodes_down: nodes.iter().filter(|n| n.state == NodeState::Down).count() as u64,
        disks_failed: disks.iter().filter(|d| d.health == DiskHealth::Failed).count() as u64,
        ..RepairStatus::default()
    };
    let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
    for v in volumes {
        let r = health.redundancy(v, replicas);
        *out.by_can_lose.entry(r.can_lose).or_default() += 1;
        out.below_full += u64::from(r.below_full());
        if r.below_full() && out.below_full_volumes.len() < STATUS_LIST_MAX {
            out.below_full_volumes.push(BelowFull {
                volume_id: v.volume_id,
                state: v.state,
                healthy: r.healthy as u64,
                full: r.full as u64,
            });
        }
        out.extents_draining += draining(v, drains, &r).len() as u64;
        out.extents_sharing_a_disk += sharing_a_disk(v, &r).len() as u64;
        if r.can_lose < 0 {
            out.unreadable.insert(v.volume_id, lost_ranges(v, &r));
        }
        sizes.insert(v.volume_id, extent_bytes(v));
    }
    for t in tasks {
        let list = if t.state == TaskState::Failed { &mut out.failed_tasks } else { &mut out.open_tasks };
        if list.len() < STATUS_LIST_MAX {
            list.push(t.clone());
        }
        if matches!(t.kind, TaskKind::Reconstruct { .. } | TaskKind::Copy { .. }) {
            if t.state == TaskState::Failed {
                out.tasks_failed += 1;
            } else {
                out.tasks_open += 1;
                out.bytes_pending += sizes.get(&t.kind.volume_id()).copied().unwrap_or(0);
            }
        }
    }
    out
}

/// The slots of a coded volume's placement on a disk that a lower slot also names, neither
/// of them lost: two fragments that one disk failure takes together. The master never
/// places fragments so, but a volume a planner bug left so (two repairs of it completed
/// onto one disk) stays so until one moves, and
/// [`cellar_placement::place_replacement`] refuses a placement naming a disk twice: none of
/// the volume's other slots could be repaired. Each such slot is moved like a drained one,
/// before the volume's lost slots are placed. A replicated volume has one replica file per
/// disk, so two of its slots on one disk are one replica; its encode places every fragment
/// anew.
fn sharing_a_disk(v: &VolumeRecord, r: &Redundancy) -> Vec<usize> {
    if v.state != VolumeState::Coded {
        return Vec::new();
    }
    let kept = |i: &usize| !r.lost.contains(i);
    (0..v.fragments.len())
        .filter(kept)
        .filter(|&i| (0..i).filter(kept).any(|j| v.fragments[j].disk_id == v.fragments[i].disk_id))
        .collect()
}

/// The slots of `v`'s placement on drained nodes or disks that are not lost (those are
/// repaired as lost).
fn draining(v: &VolumeRecord, drains: &Drains, r: &Redundancy) -> Vec<usize> {
    let extents = if v.state == VolumeState::Coded { &v.fragments } else { &v.replicas };
    (0..extents.len())
        .filter(|i| !r.lost.contains(i) && drains.drains(extents[*i].node_id, extents[*i].disk_id))
        .collect()
}

/// Reads the records and computes [`RepairStatus`] (for `cellar admin status` and
/// `/metrics`).
pub fn read_status(reader: &StateReader, replicas: usize) -> Result<RepairStatus, StateError> {
    let volumes: Vec<VolumeRecord> = reader.records(PREFIX_VOLUME, Kind::Volume)?;
    let tasks: Vec<TaskRecord> = reader.records(crate::tasks::PREFIX_TASK, Kind::Task)?;
    let nodes: Vec<NodeRecord> = reader.records(PREFIX_NODE, Kind::Node)?;
    let disks: Vec<DiskRecord> = reader.records(PREFIX_DISK, Kind::Disk)?;
    Ok(status(&volumes, &tasks, &nodes, &disks, &reader.drains()?, replicas))
}

/// Nodes the failure detector should mark down now: up, and silent for `down_after_ms`.
pub fn nodes_to_mark_down(nodes: &[NodeRecord], settings: &RepairSettings, now_unix_ms: u64) -> Vec<Command> {
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Up)
        .filter(|n| n.last_heartbeat_unix_ms.saturating_add(settings.down_after_ms) <= now_unix_ms)
        .map(|n| Command::MarkNodeDown {
            node_id: n.node_id,
            down_after_ms: settings.down_after_ms,
            now_unix_ms,
        })
        .collect()
}

/// A repair task of the queue, by the placement slot it rebuilds.
struct InFlight<'a> {
    task: &'a TaskRecord,
    target: ExtentPlace,
}

/// Whether a repair task still counts as running: not given up, its node not marked down,
/// and either claimed under a claim that has not expired or waiting on a node heard from.
fn running(t: &TaskRecord, nodes: &BTreeMap<u64, &NodeRecord>, liveness: Liveness) -> bool {
    let Some(node) = nodes.get(&t.node_id).filter(|n| n.state == NodeState::Up) else { return false };
    match t.state {
        TaskState::Failed => false,
        TaskState::Claimed if t.claimed_until_unix_ms >= liveness.now_unix_ms => true,
        _ => liveness.heard_from(node),
    }
}

/// The records one repair pass reads.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// Every volume.
    pub volumes: &'a [VolumeRecord],
    /// Every task.
    pub tasks: &'a [TaskRecord],
    /// Every node.
    pub nodes: &'a [NodeRecord],
    /// Every disk.
    pub disks: &'a [DiskRecord],
    /// The drains in force.
    pub drains: &'a Drains,
}

/// A volume the planner looks at: its redundancy, the slots of it sharing a disk with a
/// lower slot, and every slot to move while healthy (those, then the drained ones).
struct AtRisk<'a> {
    v: &'a VolumeRecord,
    r: Redundancy,
    shared: Vec<usize>,
    moving: Vec<usize>,
}

/// The slots in order, each once.
fn distinct<'a>(slots: impl Iterator<Item = &'a usize>) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for &slot in slots {
        if !out.contains(&slot) {
            out.push(slot);
        }
    }
    out
}

/// What one pass of the repair planner decided (see [`plan_pass`]).
#[derive(Debug, Default)]
pub struct RepairPass {
    /// The commands to propose, most at-risk volume first.
    pub commands: Vec<Command>,
    /// Extents the pass wanted to rebuild or move and found no disk for (every eligible
    /// disk breaks a placement rule: a zone down or full, too few disks): they wait until
    /// one comes. Counted until the pass stopped (see `stopped_early`).
    pub without_a_disk: u64,
    /// Why, for the first of them.
    pub first_refusal: Option<String>,
    /// The repair limits (tasks running, bandwidth, commands per pass) ended the pass
    /// before it had seen every volume: `without_a_disk` is then a lower bound.
    pub stopped_early: bool,
}

/// Promises `bytes_each` on each disk of `places`, both in `promised` (which fragment
/// placement builds its view from) and in `view` (which repairs place from), so that the
/// rest of the pass sees it either way.
fn promise(promised: &mut Promised, view: &mut ClusterView, places: &[ExtentPlace], bytes_each: u64) {
    promised.add(places, bytes_each);
    for d in &mut view.disks {
        if places.iter().any(|p| p.disk_id == d.disk_id) {
            d.used_bytes = d.used_bytes.saturating_add(bytes_each);
        }
    }
}

/// One pass of the repair planner: the commands to propose, most at-risk volume first,
/// and what the pass could not place.
pub fn plan_pass(
    inputs: &Inputs<'_>,
    liveness: Liveness,
    settings: &RepairSettings,
    budget: &mut RepairBudget,
) -> RepairPass {
    let mut pass = RepairPass::default();
    let commands = plan_into(inputs, liveness, settings, budget, &mut pass);
    RepairPass { commands, ..pass }
}

fn plan_into(
    inputs: &Inputs<'_>,
    liveness: Liveness,
    settings: &RepairSettings,
    budget: &mut RepairBudget,
    pass: &mut RepairPass,
) -> Vec<Command> {
    let Inputs { volumes, tasks, nodes, disks, drains } = *inputs;
    let health = Health::new(nodes, disks);
    // Repairs queued, by (volume, slot): the fragment index, or the replaced replica's disk.
    let mut repairs: BTreeMap<(u64, u64), InFlight<'_>> = BTreeMap::new();
    let mut encodes: BTreeSet<u64> = BTreeSet::new();
    for t in tasks {
        match &t.kind {
            TaskKind::Reconstruct { volume_id, index, target, .. } => {
                repairs.insert((*volume_id, u64::from(*index)), InFlight { task: t, target: *target });
            }
            TaskKind::Copy { volume_id, part: Part::Fragment { index }, target, .. } => {
                repairs.insert((*volume_id, u64::from(*index)), InFlight { task: t, target: *target });
            }
            TaskKind::Copy { volume_id, part: Part::Replica, replaces, target, .. } => {
                repairs.insert((*volume_id, replaces.disk_id), InFlight { task: t, target: *target });
            }
            TaskKind::Encode { volume_id, .. } if t.state != TaskState::Failed => {
                encodes.insert(*volume_id);
            }
            _ => {}
        }
    }
    let mut running_count = repairs.values().filter(|r| running(r.task, &health.nodes, liveness)).count();

    // Volumes with lost extents first (fewest extents left to lose first), then those with
    // extents to move only. Within a volume: the extents sharing a disk first (until they
    // move, no other slot of the volume can be placed), then the lost, then the drained.
    let mut at_risk: Vec<AtRisk<'_>> = volumes
        .iter()
        .map(|v| {
            let r = health.redundancy(v, settings.replicas);
            let shared = sharing_a_disk(v, &r);
            let moving = distinct(shared.iter().chain(&draining(v, drains, &r)));
            AtRisk { v, r, shared, moving }
        })
        .filter(|a| !a.r.lost.is_empty() || !a.moving.is_empty())
        .collect();
    at_risk.sort_by_key(|a| (a.r.lost.is_empty(), a.r.can_lose, a.v.volume_id));

    let by_id: BTreeMap<u64, &VolumeRecord> = volumes.iter().map(|v| (v.volume_id, v)).collect();
    let mut promised = Promised::of(tasks, |id| by_id.get(&id).copied());
    let mut view = cluster_view(nodes, disks, liveness, drains, &promised);
    let mut commands = Vec::new();
    for AtRisk { v, r, shared, moving } in at_risk {
        let order = distinct(shared.iter().chain(&r.lost).chain(&moving));
        if commands.len() >= REPAIRS_PER_PASS_MAX {
            pass.stopped_early = true;
            break;
        }
        match v.state {
            VolumeState::Open => {
                let fragments = fragment_places(nodes, disks, v, v.size_bytes, liveness, drains, &promised);
                promise(&mut promised, &mut view, &fragments, fragment_bytes(v));
                commands.push(Command::SealVolume { volume_id: v.volume_id, length_bytes: None, fragments })
            }
            VolumeState::Sealed if encodes.contains(&v.volume_id) => {}
            VolumeState::Sealed | VolumeState::Coded => {
                let coded = v.state == VolumeState::Coded;
                let extents = if coded { &v.fragments } else { &v.replicas };
                let (scheme, extent_bytes) = if coded {
                    (Scheme::from(v.scheme), fragment_bytes(v))
                } else {
                    (Scheme::Replicated { copies: extents.len() as u8 }, v.size_bytes)
                };
                let mut current: Vec<Option<DiskRef>> = extents
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        (!r.lost.contains(&i)).then_some(DiskRef { disk_id: p.disk_id, node_id: p.node_id })
                    })
                    .collect();
                let source = extents.iter().enumerate().find(|(i, p)| {
                    !r.lost.contains(i)
                        && health.nodes.get(&p.node_id).is_some_and(|n| liveness.heard_from(n))
                });
                // The targets of this volume's repairs still running, before any slot is
                // placed: a slot placed below must not land where a later slot is being
                // rebuilt (seen: fragments 0 and 1 both rebuilt onto one disk, fragment 1's
                // reconstruct planned a pass earlier, and fragment 2 then never placed).
                // A repair's key: the fragment index, or the replaced replica's disk.
                let key =
                    |slot: usize| (v.volume_id, if coded { slot as u64 } else { extents[slot].disk_id });
                for &slot in &order {
                    if let Some(f) = repairs.get(&key(slot))
                        && running(f.task, &health.nodes, liveness)
                    {
                        current[slot] =
                            Some(DiskRef { disk_id: f.target.disk_id, node_id: f.target.node_id });
                    }
                }
                for &slot in &order {
                    if running_count >= settings.tasks_max || !budget.allows(settings.bytes_per_sec) {
                        pass.stopped_early = true;
                        return commands;
                    }
                    if coded && r.can_lose < 0 && r.lost.contains(&slot) {
                        // Fewer than k fragments left: nothing can rebuild it until one
                        // returns (status lists the blocks lost meanwhile).
                        continue;
                    }
                    let replaces = extents[slot];
                    if shared.contains(&slot) && current[slot].is_some_and(|d| d.disk_id == replaces.disk_id)
                    {
                        // Not moving yet: its disk counts once (as the lower slot's) until it
                        // is placed below, or for this pass if it is not (its zone may then
                        // be undercounted by one: a lost slot placed beats an exact spread).
                        current[slot] = None;
                    }
                    let (replaces_task, avoid) = match repairs.get(&key(slot)) {
                        // Running: its target is in `current` already (above).
                        Some(f) if running(f.task, &health.nodes, liveness) => continue,
                        // Given up on a target that is still fine: the cause is elsewhere
                        // (the source, the data); it waits (listed in status), then is
                        // planned again onto another disk.
                        Some(f)
                            if crate::tasks::given_up_and_waiting(f.task, liveness.now_unix_ms)
                                && !health.lost(v, &f.target)
                                && health
                                    .nodes
                                    .get(&f.target.node_id)
                                    .is_some_and(|n| liveness.heard_from(n)) =>
                        {
                            continue;
                        }
                        Some(f) => (Some(f.task.task_id), vec![f.target.disk_id]),
                        None => (None, Vec::new()),
                    };
                    // Never a disk the placement still names, lost slots included (a disk
                    // reported bad for this volume is otherwise healthy, but the master
                    // refuses a second extent of a volume on one disk).
                    let avoid: Vec<u64> =
                        avoid.into_iter().chain(extents.iter().map(|p| p.disk_id)).collect();
                    let target = match cellar_placement::place_replacement(
                        &view,
                        scheme,
                        &current,
                        slot,
                        &avoid,
                        extent_bytes,
                        v.volume_id ^ (slot as u64) << 32,
                    ) {
                        Ok(d) => ExtentPlace { node_id: d.node_id, disk_id: d.disk_id },
                        Err(e) => {
                            tracing::debug!(volume = v.volume_id, slot, error = %e, "no disk for a repair yet");
                            pass.without_a_disk += 1;
                            if pass.first_refusal.is_none() {
                                pass.first_refusal = Some(format!("volume {} slot {slot}: {e}", v.volume_id));
                            }
                            continue;
                        }
                    };
                    current[slot] = Some(DiskRef { disk_id: target.disk_id, node_id: target.node_id });
                    // The next repairs of this pass see the bytes promised to this one.
                    promise(&mut promised, &mut view, &[target], extent_bytes);
                    let from_itself = moving.contains(&slot)
                        && health.nodes.get(&replaces.node_id).is_some_and(|n| liveness.heard_from(n));
                    let part = if coded { Part::Fragment { index: slot as u32 } } else { Part::Replica };
                    let kind = if from_itself {
                        // A drained extent is still good: copied as it is.
                        TaskKind::Copy { volume_id: v.volume_id, part, source: replaces, target, replaces }
                    } else if coded {
                        TaskKind::Reconstruct { volume_id: v.volume_id, index: slot as u32, target, replaces }
                    } else {
                        let Some((_, source)) = source else { break };
                        TaskKind::Copy {
                            volume_id: v.volume_id,
                            part: Part::Replica,
                            source: *source,
                            target,
                            replaces,
                        }
                    };
                    commands.push(Command::PlanRepair {
                        kind,
                        replaces_task,
                        now_unix_ms: liveness.now_unix_ms,
                    });
                    budget.spend(extent_bytes);
                    running_count += 1;
                }
            }
        }
    }
    commands
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::types::RECORD_VERSION;

    /// The leader's clock in these tests.
    pub(crate) const NOW: u64 = 1_000_000;

    /// Four zones of one node with three disks each: node n has disks 10n+1..=10n+3.
    fn cell() -> (Vec<NodeRecord>, Vec<DiskRecord>) {
        cell_with_free(1 << 40)
    }

    /// [`cell`] with every disk `free_bytes` free (of at least that much).
    pub(crate) fn cell_with_free(free_bytes: u64) -> (Vec<NodeRecord>, Vec<DiskRecord>) {
        let capacity_bytes = free_bytes.max(1 << 30);
        let nodes = (1..=4)
            .map(|n| NodeRecord {
                v: RECORD_VERSION,
                node_id: n,
                address: format!("n{n}"),
                zone: format!("z{n}"),
                state: NodeState::Up,
                last_heartbeat_unix_ms: NOW,
                disk_ids: (1..=3).map(|d| 10 * n + d).collect(),
            })
            .collect();
        let disks = (1..=4u64)
            .flat_map(|n| {
                (1..=3).map(move |d| DiskRecord {
                    v: RECORD_VERSION,
                    disk_id: 10 * n + d,
                    node_id: n,
                    uuid: String::new(),
                    path: String::new(),
                    capacity_bytes,
                    used_bytes: capacity_bytes - free_bytes,
                    free_bytes,
                    health: DiskHealth::Ok,
                    trash_bytes: 0,
                    trash_extents: 0,
                })
            })
            .collect();
        (nodes, disks)
    }

    fn place(n: u64, d: u64) -> ExtentPlace {
        ExtentPlace { node_id: n, disk_id: 10 * n + d }
    }

    /// A coded rs-6-3 volume on nodes 1-3, three fragments each (node 4 is empty).
    fn coded(volume_id: u64) -> VolumeRecord {
        VolumeRecord {
            v: RECORD_VERSION,
            volume_id,
            state: VolumeState::Coded,
            scheme: cellar_erasure::Scheme::RS_6_3,
            replicas: Vec::new(),
            fragments: (1..=3).flat_map(|n| (1..=3).map(move |d| place(n, d))).collect(),
            generation: 2,
            size_bytes: 6 << 20,
            lease: None,
            bad_disks: Vec::new(),
        }
    }

    fn sealed(volume_id: u64) -> VolumeRecord {
        VolumeRecord {
            state: VolumeState::Sealed,
            replicas: vec![place(1, 1), place(2, 1), place(3, 1)],
            fragments: Vec::new(),
            ..coded(volume_id)
        }
    }

    fn settings() -> RepairSettings {
        RepairSettings { down_after_ms: 5000, tasks_max: 32, bytes_per_sec: 0, replicas: 3 }
    }

    fn liveness() -> Liveness {
        Liveness { now_unix_ms: NOW, silent_after_ms: 2000 }
    }

    /// A pass's commands only.
    fn plan(
        inputs: &Inputs<'_>,
        liveness: Liveness,
        settings: &RepairSettings,
        budget: &mut RepairBudget,
    ) -> Vec<Command> {
        plan_pass(inputs, liveness, settings, budget).commands
    }

    fn plan_now(
        volumes: &[VolumeRecord],
        tasks: &[TaskRecord],
        nodes: &[NodeRecord],
        disks: &[DiskRecord],
    ) -> Vec<Command> {
        plan(
            &Inputs { volumes, tasks, nodes, disks, drains: &Drains::default() },
            liveness(),
            &settings(),
            &mut RepairBudget::default(),
        )
    }

    fn down(nodes: &mut [NodeRecord], node_id: u64) {
        let n = nodes.iter_mut().find(|n| n.node_id == node_id).expect("node");
        n.state = NodeState::Down;
        n.last_heartbeat_unix_ms = NOW - 10_000;
    }

    fn reconstructs(commands: &[Command]) -> Vec<(u32, ExtentPlace, ExtentPlace)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::PlanRepair {
                    kind: TaskKind::Reconstruct { index, target, replaces, .. }, ..
                } => Some((*index, *target, *replaces)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_whole_cell_needs_no_repair_and_a_silent_node_is_marked_down_only_after_down_after() {
        let (mut nodes, disks) = cell();
        assert!(plan_now(&[coded(1), sealed(2)], &[], &nodes, &disks).is_empty());
        let h = Health::new(&nodes, &disks);
        let r = h.redundancy(&coded(1), 3);
        assert_eq!((r.full, r.healthy, r.can_lose, r.below_full()), (9, 9, 3, false));
        nodes[1].last_heartbeat_unix_ms = NOW - 4999;
        assert!(nodes_to_mark_down(&nodes, &settings(), NOW).is_empty());
        nodes[1].last_heartbeat_unix_ms = NOW - 5000;
        assert_eq!(
            nodes_to_mark_down(&nodes, &settings(), NOW),
            vec![Command::MarkNodeDown { node_id: 2, down_after_ms: 5000, now_unix_ms: NOW }]
        );
    }

    #[test]
    fn the_fragments_of_a_down_node_are_reconstructed_within_the_zone_rules() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        let v = coded(1);
        let commands = plan_now(std::slice::from_ref(&v), &[], &nodes, &disks);
        let planned = reconstructs(&commands);
        assert_eq!(planned.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 4, 5], "{commands:?}");
        let mut targets = BTreeSet::new();
        for (index, target, replaces) in &planned {
            assert_eq!(*replaces, v.fragments[*index as usize]);
            assert_ne!(target.node_id, 2, "not onto the down node");
            assert!(targets.insert(target.disk_id), "two fragments onto disk {}", target.disk_id);
            assert!(!v.fragments.iter().any(|f| f.disk_id == target.disk_id));
        }
        // Nodes 1 and 3 hold three fragments each (the zone limit of rs-6-3): all go to 4.
        assert!(planned.iter().all(|p| p.1.node_id == 4), "{planned:?}");
    }

    #[test]
    fn extents_with_no_disk_to_go_to_are_counted_and_planned_once_one_comes_back() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        down(&mut nodes, 4);
        let v = coded(1);
        let pass_with = |nodes: &[NodeRecord], settings: &RepairSettings| {
            plan_pass(
                &Inputs {
                    volumes: std::slice::from_ref(&v),
                    tasks: &[],
                    nodes,
                    disks: &disks,
                    drains: &Drains::default(),
                },
                liveness(),
                settings,
                &mut RepairBudget::default(),
            )
        };
        let pass_now = |nodes: &[NodeRecord]| pass_with(nodes, &settings());
        // Node 2's three fragments are lost; nodes 1 and 3 are at rs-6-3's zone limit and
        // node 4 is down: nothing to place them on.
        let waiting = pass_now(&nodes);
        assert!(reconstructs(&waiting.commands).is_empty(), "{:?}", waiting.commands);
        assert_eq!(waiting.without_a_disk, 3);
        let why = waiting.first_refusal.expect("a refusal");
        assert!(why.starts_with("volume 1 slot 3: "), "{why}");
        // Node 4 back: all three planned there, none waits.
        let n = nodes.iter_mut().find(|n| n.node_id == 4).expect("node 4");
        n.state = NodeState::Up;
        n.last_heartbeat_unix_ms = NOW;
        let placed = pass_now(&nodes);
        assert_eq!(reconstructs(&placed.commands).len(), 3, "{:?}", placed.commands);
        assert_eq!((placed.without_a_disk, placed.first_refusal, placed.stopped_early), (0, None, false));
        // A pass the limits end before it reaches the volume says so (its count is partial).
        let limited = pass_with(&nodes, &RepairSettings { tasks_max: 0, ..settings() });
        assert!(limited.commands.is_empty() && limited.stopped_early, "{limited:?}");
    }

    #[test]
    fn the_most_at_risk_volume_goes_first_and_limits_hold() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        // Volume 2 lost node 2's three fragments (it can lose no more); volume 1 only one.
        let v2 = coded(2);
        let mut v1 = coded(1);
        v1.fragments[3] = place(4, 1);
        v1.fragments[4] = place(4, 2);
        let commands = plan_now(&[v1.clone(), v2.clone()], &[], &nodes, &disks);
        let first = match &commands[0] {
            Command::PlanRepair { kind, .. } => kind.volume_id(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first, 2, "{commands:?}");
        // At most tasks_max at once, counting those already queued.
        let few = RepairSettings { tasks_max: 2, ..settings() };
        let limited = plan(
            &Inputs {
                volumes: &[v1, v2],
                tasks: &[],
                nodes: &nodes,
                disks: &disks,
                drains: &Drains::default(),
            },
            liveness(),
            &few,
            &mut RepairBudget::default(),
        );
        assert_eq!(limited.len(), 2);
    }

    #[test]
    fn a_fragment_reported_bad_is_never_rebuilt_onto_a_disk_of_the_placement() {
        // Fragment 0 on disk 41 (node 4), healthy but reported corrupt: node 4's other
        // disks are fine targets, disk 41 itself is not (the master would refuse a second
        // extent of the volume there, every pass).
        let (nodes, disks) = cell();
        let mut planned = 0;
        for volume_id in 1..=64 {
            let mut v = coded(volume_id);
            v.fragments[0] = place(4, 1);
            v.bad_disks = vec![41];
            for command in plan_now(std::slice::from_ref(&v), &[], &nodes, &disks) {
                let Command::PlanRepair { kind: TaskKind::Reconstruct { target, .. }, .. } = command else {
                    panic!("volume {volume_id}: {command:?}")
                };
                planned += 1;
                assert!(
                    !v.fragments.iter().any(|p| p.disk_id == target.disk_id),
                    "volume {volume_id}: rebuilt onto disk {} of its placement",
                    target.disk_id
                );
            }
        }
        assert_eq!(planned, 64, "every volume's fragment 0 is rebuilt somewhere");
    }

    #[test]
    fn a_slot_planned_while_another_is_rebuilt_never_takes_its_target() {
        // Fragments 0 and 1 reported bad; fragment 1's reconstruct (planned a pass earlier)
        // runs onto a disk of node 4, the only node with free disks. Fragment 0 goes to
        // another disk of node 4, whichever disk fragment 1's runs onto.
        let (nodes, disks) = cell();
        let mut planned = 0;
        for volume_id in 1..=64u64 {
            let mut v = coded(volume_id);
            v.bad_disks = vec![11, 12];
            let busy = place(4, 1 + volume_id % 3);
            let running = TaskRecord {
                v: RECORD_VERSION,
                task_id: 7,
                kind: TaskKind::Reconstruct { volume_id, index: 1, target: busy, replaces: v.fragments[1] },
                node_id: busy.node_id,
                state: TaskState::Claimed,
                attempts: 0,
                claimed_until_unix_ms: NOW + 60_000,
                detail: String::new(),
            };
            let planned_now = reconstructs(&plan_now(std::slice::from_ref(&v), &[running], &nodes, &disks));
            for (index, target, _) in &planned_now {
                assert_eq!(*index, 0, "volume {volume_id}: only fragment 0 needs planning");
                assert_ne!(target.disk_id, busy.disk_id, "volume {volume_id}: onto fragment 1's target");
                assert_eq!(target.node_id, 4, "volume {volume_id}: node 4 has the only free disks");
            }
            planned += planned_now.len();
        }
        assert_eq!(planned, 64, "every volume's fragment 0 is planned");
    }

    /// The copies the commands plan: (fragment index, source, target, replaces).
    fn fragment_copies(commands: &[Command]) -> Vec<(u32, ExtentPlace, ExtentPlace, ExtentPlace)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::PlanRepair {
                    kind: TaskKind::Copy { part: Part::Fragment { index }, source, target, replaces, .. },
                    ..
                } => Some((*index, *source, *target, *replaces)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_fragment_sharing_a_disk_is_moved_off_and_the_volumes_lost_fragment_still_rebuilt() {
        // Fragments 0 and 1 both on disk 11 (as two repairs completing onto one disk left
        // a volume), and fragment 5's disk reported bad. The placement refuses any layout
        // that names a disk twice, so fragment 1 moves first (copied as it is), and then
        // fragment 5 is rebuilt; neither onto a disk of the placement nor onto one disk.
        let (nodes, disks) = cell();
        for volume_id in 1..=64u64 {
            let mut v = coded(volume_id);
            v.fragments[1] = place(1, 1);
            v.bad_disks = vec![23];
            let h = Health::new(&nodes, &disks);
            assert_eq!(sharing_a_disk(&v, &h.redundancy(&v, 3)), vec![1]);
            let commands = plan_now(std::slice::from_ref(&v), &[], &nodes, &disks);
            let copies = fragment_copies(&commands);
            let rebuilt = reconstructs(&commands);
            assert_eq!(copies.len(), 1, "volume {volume_id}: {commands:?}");
            let (index, source, moved_to, replaces) = copies[0];
            assert_eq!((index, source, replaces), (1, place(1, 1), place(1, 1)), "volume {volume_id}");
            assert_eq!(rebuilt.len(), 1, "volume {volume_id}: {commands:?}");
            let (index, rebuilt_to, replaces) = rebuilt[0];
            assert_eq!((index, replaces), (5, place(2, 3)), "volume {volume_id}");
            assert_ne!(moved_to.disk_id, rebuilt_to.disk_id, "volume {volume_id}: onto one disk");
            for target in [moved_to, rebuilt_to] {
                assert!(
                    !v.fragments.iter().any(|p| p.disk_id == target.disk_id),
                    "volume {volume_id}: onto disk {} of its placement",
                    target.disk_id
                );
            }
        }
    }

    #[test]
    fn a_fragment_sharing_a_disk_that_cannot_move_yet_holds_up_no_other_repair() {
        // Only node 4 has free disks, and fragment 1's copy off disk 11 was given up onto
        // disk 41, which is fine (it waits until its last claim would have ended):
        // fragment 5 is still rebuilt, and status counts the fragment sharing a disk.
        let (nodes, disks) = cell();
        let mut v = coded(1);
        v.fragments[1] = place(1, 1);
        v.bad_disks = vec![23];
        let given_up = TaskRecord {
            v: RECORD_VERSION,
            task_id: 9,
            kind: TaskKind::Copy {
                volume_id: 1,
                part: Part::Fragment { index: 1 },
                source: place(1, 1),
                target: place(4, 1),
                replaces: place(1, 1),
            },
            node_id: 4,
            state: TaskState::Failed,
            attempts: 5,
            claimed_until_unix_ms: NOW + 1,
            detail: "given up".into(),
        };
        let commands = plan_now(std::slice::from_ref(&v), std::slice::from_ref(&given_up), &nodes, &disks);
        assert!(fragment_copies(&commands).is_empty(), "{commands:?}");
        let rebuilt = reconstructs(&commands);
        assert_eq!(rebuilt.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>(), vec![(5, place(2, 3))]);
        let st = status(
            std::slice::from_ref(&v),
            std::slice::from_ref(&given_up),
            &nodes,
            &disks,
            &Drains::default(),
            3,
        );
        assert_eq!((st.extents_sharing_a_disk, st.below_full), (1, 1));
        // Once its last claim would have ended, the copy is planned again, onto another
        // disk than the one it gave up on.
        let given_up = TaskRecord { claimed_until_unix_ms: NOW - 1, ..given_up };
        let commands = plan_now(std::slice::from_ref(&v), std::slice::from_ref(&given_up), &nodes, &disks);
        let copies = fragment_copies(&commands);
        assert_eq!(copies.len(), 1, "{commands:?}");
        assert_eq!(copies[0].0, 1);
        assert_ne!(copies[0].2, place(4, 1), "{commands:?}");
    }

    #[test]
    fn a_refused_repair_gives_its_bytes_back() {
        let mut budget = RepairBudget::default();
        budget.refill(NOW, 100);
        budget.spend(1000);
        assert!(!budget.allows(100));
        budget.refund(1000);
        assert!(budget.allows(100));
    }

    #[test]
    fn a_volume_with_fewer_than_k_fragments_gets_no_reconstruct_and_its_lost_data_ranges_are_listed() {
        let (mut nodes, mut disks) = cell();
        down(&mut nodes, 2);
        // Fragments 3, 4, 5 on node 2 and fragment 0 on failed disk 11: five of six left.
        disks.iter_mut().find(|d| d.disk_id == 11).expect("disk").health = DiskHealth::Failed;
        let v = coded(1);
        assert!(plan_now(std::slice::from_ref(&v), &[], &nodes, &disks).is_empty(), "nothing can rebuild it");
        let st = status(&[v], &[], &nodes, &disks, &Drains::default(), 3);
        // 6 MiB over 6 data fragments: fragment i holds [i MiB, (i + 1) MiB).
        let mib = 1u64 << 20;
        let expected: Vec<Range<u64>> = [0u64, 3, 4, 5].iter().map(|i| i * mib..(i + 1) * mib).collect();
        assert_eq!(st.unreadable.get(&1), Some(&expected));
        assert_eq!(st.by_can_lose.get(&-1), Some(&1));
    }

    #[test]
    fn a_running_repair_is_left_alone_and_one_on_a_down_node_is_planned_again_elsewhere() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        let v = coded(1);
        let task = |task_id, index: u32, target: ExtentPlace| TaskRecord {
            v: RECORD_VERSION,
            task_id,
            kind: TaskKind::Reconstruct {
                volume_id: 1,
                index,
                target,
                replaces: v.fragments[index as usize],
            },
            node_id: target.node_id,
            state: TaskState::Claimed,
            attempts: 0,
            claimed_until_unix_ms: NOW + 60_000,
            detail: String::new(),
        };
        let tasks = vec![task(7, 3, place(4, 1)), task(8, 4, place(4, 2)), task(9, 5, place(4, 3))];
        assert!(plan_now(std::slice::from_ref(&v), &tasks, &nodes, &disks).is_empty(), "all three run");
        // Node 4 dies too: its claims no longer hold, the repairs are planned again (with
        // only nodes 1 and 3 left and each at the zone limit, nowhere yet).
        down(&mut nodes, 4);
        assert!(reconstructs(&plan_now(std::slice::from_ref(&v), &tasks, &nodes, &disks)).is_empty());
        // A fifth zone appears: they go there, each replacing its dead task.
        let (mut more_nodes, mut more_disks) = (nodes.clone(), disks.clone());
        let mut n5 = nodes[0].clone();
        n5.node_id = 5;
        n5.zone = "z5".into();
        n5.disk_ids = vec![51, 52, 53];
        more_nodes.push(n5);
        for d in 1..=3 {
            let mut disk = disks[0].clone();
            disk.disk_id = 50 + d;
            disk.node_id = 5;
            more_disks.push(disk);
        }
        let commands = plan_now(std::slice::from_ref(&v), &tasks, &more_nodes, &more_disks);
        let replaced: Vec<Option<u64>> = commands
            .iter()
            .map(|c| match c {
                Command::PlanRepair { replaces_task, kind: TaskKind::Reconstruct { target, .. }, .. } => {
                    assert_eq!(target.node_id, 5);
                    *replaces_task
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(replaced, vec![Some(7), Some(8), Some(9)]);
    }

    #[test]
    fn open_volumes_are_sealed_sealed_ones_copied_unless_their_encode_is_coming() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        let open = VolumeRecord { state: VolumeState::Open, ..sealed(1) };
        let commands = plan_now(std::slice::from_ref(&open), &[], &nodes, &disks);
        assert!(
            matches!(commands.as_slice(), [Command::SealVolume { volume_id: 1, length_bytes: None, .. }]),
            "{commands:?}"
        );
        let s = sealed(2);
        let commands = plan_now(std::slice::from_ref(&s), &[], &nodes, &disks);
        match commands.as_slice() {
            [
                Command::PlanRepair {
                    kind: TaskKind::Copy { part: Part::Replica, source, target, replaces, .. },
                    ..
                },
            ] => {
                assert_eq!(*replaces, place(2, 1));
                assert_ne!(source.node_id, 2);
                assert!(target.node_id == 4, "the only zone without a replica: {target:?}");
            }
            other => panic!("{other:?}"),
        }
        let encode = TaskRecord {
            v: RECORD_VERSION,
            task_id: 3,
            kind: TaskKind::Encode { volume_id: 2, fragments: Vec::new() },
            node_id: 1,
            state: TaskState::Pending,
            attempts: 0,
            claimed_until_unix_ms: 0,
            detail: String::new(),
        };
        assert!(plan_now(std::slice::from_ref(&s), &[encode], &nodes, &disks).is_empty());
    }

    #[test]
    fn the_bandwidth_budget_spaces_repairs_out() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        let limited = RepairSettings { bytes_per_sec: 1 << 20, ..settings() };
        let mut budget = RepairBudget::default();
        budget.refill(NOW, limited.bytes_per_sec);
        let v = coded(1); // fragments of 1 MiB: one second of budget each
        let first = plan(
            &Inputs {
                volumes: std::slice::from_ref(&v),
                tasks: &[],
                nodes: &nodes,
                disks: &disks,
                drains: &Drains::default(),
            },
            liveness(),
            &limited,
            &mut budget,
        );
        assert_eq!(reconstructs(&first).len(), 1, "one second's budget, one fragment");
        let mut again = |at: u64| {
            budget.refill(at, limited.bytes_per_sec);
            reconstructs(&plan(
                &Inputs {
                    volumes: std::slice::from_ref(&v),
                    tasks: &[],
                    nodes: &nodes,
                    disks: &disks,
                    drains: &Drains::default(),
                },
                liveness(),
                &limited,
                &mut budget,
            ))
            .len()
        };
        // The bucket is at 0: 0.1 s later it is positive, one goes and takes it to -0.9 MiB,
        // which the next 0.9 s pay back before the next one.
        assert_eq!(again(NOW + 100), 1);
        assert_eq!(again(NOW + 500), 0, "-0.5 MiB");
        assert_eq!(again(NOW + 900), 0, "-0.1 MiB");
        assert_eq!(again(NOW + 1800), 1, "+0.8 MiB");
    }

    #[test]
    fn a_drained_node_is_copied_off_after_the_lost_extents_and_takes_nothing_new() {
        let (mut nodes, disks) = cell();
        let v1 = coded(1);
        let mut drains = Drains::default();
        drains.nodes.insert(2);
        let commands = plan(
            &Inputs {
                volumes: std::slice::from_ref(&v1),
                tasks: &[],
                nodes: &nodes,
                disks: &disks,
                drains: &drains,
            },
            liveness(),
            &settings(),
            &mut RepairBudget::default(),
        );
        let copies: Vec<(u32, ExtentPlace, ExtentPlace)> = commands
            .iter()
            .map(|c| match c {
                Command::PlanRepair {
                    kind: TaskKind::Copy { part: Part::Fragment { index }, source, target, replaces, .. },
                    ..
                } => {
                    assert_eq!(source, replaces, "a drained fragment is copied as it is");
                    (*index, *target, *replaces)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(copies.iter().map(|c| c.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert!(copies.iter().all(|c| c.1.node_id == 4 && c.2.node_id == 2), "{copies:?}");
        // Redundancy is whole while draining; status counts what is left to move.
        let st = status(std::slice::from_ref(&v1), &[], &nodes, &disks, &drains, 3);
        assert_eq!((st.below_full, st.extents_draining), (0, 3));
        // A lost extent goes before a drained one; a drained node that is down is rebuilt.
        let mut v2 = coded(2);
        v2.fragments[0] = place(4, 1);
        down(&mut nodes, 3);
        let commands = plan(
            &Inputs { volumes: &[v1, v2], tasks: &[], nodes: &nodes, disks: &disks, drains: &drains },
            liveness(),
            &settings(),
            &mut RepairBudget::default(),
        );
        assert!(
            matches!(&commands[0], Command::PlanRepair { kind: TaskKind::Reconstruct { .. }, .. }),
            "{commands:?}"
        );
    }

    #[test]
    fn status_lists_the_volumes_below_full_and_the_tasks_open_and_given_up_up_to_its_limit() {
        let (mut nodes, disks) = cell();
        down(&mut nodes, 2);
        let drains = Drains::default();
        // Node 2 holds a fragment of every coded volume and a replica of every sealed one:
        // all are below full; the list stops at STATUS_LIST_MAX, the count does not.
        let mut volumes: Vec<VolumeRecord> = (1..=40).map(coded).collect();
        volumes.push(sealed(41));
        let task = |task_id, state, kind| TaskRecord {
            v: RECORD_VERSION,
            task_id,
            kind,
            node_id: 1,
            state,
            attempts: u32::from(state == TaskState::Failed),
            claimed_until_unix_ms: 0,
            detail: String::new(),
        };
        let tasks = vec![
            task(1, TaskState::Pending, TaskKind::Encode { volume_id: 41, fragments: Vec::new() }),
            task(2, TaskState::Failed, TaskKind::Encode { volume_id: 40, fragments: Vec::new() }),
            task(
                3,
                TaskState::Claimed,
                TaskKind::Delete { volume_id: 39, part: Part::Replica, extent: place(1, 1) },
            ),
        ];
        let st = status(&volumes, &tasks, &nodes, &disks, &drains, 3);
        assert_eq!(st.below_full, 41);
        assert_eq!(st.below_full_volumes.len(), STATUS_LIST_MAX);
        assert_eq!(
            st.below_full_volumes.iter().map(|b| b.volume_id).collect::<Vec<_>>(),
            (1..=STATUS_LIST_MAX as u64).collect::<Vec<_>>()
        );
        assert_eq!(
            st.below_full_volumes[0],
            BelowFull { volume_id: 1, state: VolumeState::Coded, healthy: 6, full: 9 }
        );
        // The failed task is listed apart from the open ones.
        assert_eq!(st.open_tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(st.failed_tasks.iter().map(|t| t.task_id).collect::<Vec<_>>(), vec![2]);
        // A whole cell lists nothing.
        let (nodes, disks) = cell();
        let st = status(&volumes, &[], &nodes, &disks, &drains, 3);
        assert!(st.below_full_volumes.is_empty() && st.open_tasks.is_empty(), "{st:?}");
    }
}
