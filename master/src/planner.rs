//! The leader's planner loop: sealing open volumes whose writer went away (lease expired
//! for longer than a grace period), which also queues their encode; keeping every sealed
//! volume's encode going (one is queued for a volume sealed when its fragments could not
//! be placed, once they can, and an encode waiting on a silent node moves to a replica
//! holder that is heard from); marking nodes silent for `down_after_ms` down; and repair
//! ([`crate::repair`]). Full volumes are sealed by their writer; the GC and rebalance
//! planners join this loop later.
//!
//! Every master runs the loop; only the current leader acts, and every action is a Raft
//! command that re-checks its preconditions when applied, so a planner on a deposed
//! leader changes nothing.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use std::collections::BTreeMap;

use crate::codec::Kind;
use crate::command::{Command, Response};
use crate::observed::Observed;
use crate::placement_view::Liveness;
use crate::repair::{RepairBudget, RepairSettings};
use crate::state::{PREFIX_DISK, PREFIX_NODE, PREFIX_VOLUME, StateError};
use crate::store::sm::StateReader;
use crate::tasks::{PREFIX_TASK, TaskKind, TaskRecord, TaskState};
use crate::types::{DiskRecord, NodeRecord, VolumeRecord, VolumeState};
use crate::{MasterRaft, now_unix_ms};

/// Volumes one pass seals at most (the rest wait for the next pass).
pub const SEALS_PER_PASS_MAX: usize = 64;
/// Sealed volumes one pass tries to (re)plan an encode for at most, counting attempts
/// whose placement fails: the rest wait for the next pass, which starts after the last
/// one tried so that no volume is starved.
pub const ENCODE_PLANS_PER_PASS_MAX: usize = 16;

/// Planner settings.
#[derive(Debug, Clone, Copy)]
pub struct PlannerSettings {
    /// Time between passes.
    pub interval: Duration,
    /// How long after its lease expired an open volume is sealed.
    pub abandoned_after: Duration,
    /// See [`crate::config::MasterConfig::node_silent_after_ms`].
    pub node_silent_after: Duration,
    /// Failure detection and repair limits.
    pub repair: RepairSettings,
}

/// One pass: the commands the leader should propose now. `encode_cursor` is the last
/// volume id the previous pass considered for an encode (0 at first); it is advanced.
pub fn plan(
    reader: &StateReader,
    settings: &PlannerSettings,
    now_unix_ms: u64,
    encode_cursor: &mut u64,
    budget: &mut RepairBudget,
    observed: &Observed,
) -> Result<Vec<Command>, StateError> {
    let volumes: Vec<VolumeRecord> = reader.records(PREFIX_VOLUME, Kind::Volume)?;
    let abandoned: Vec<&VolumeRecord> = volumes
        .iter()
        .filter(|v| v.state == VolumeState::Open)
        .filter(|v| {
            v.lease.as_ref().is_none_or(|l| {
                l.expires_unix_ms + settings.abandoned_after.as_millis() as u64 <= now_unix_ms
            })
        })
        .take(SEALS_PER_PASS_MAX)
        .collect();
    let sealed = volumes.iter().any(|v| v.state == VolumeState::Sealed);
    let nodes: Vec<NodeRecord> = reader.records(PREFIX_NODE, Kind::Node)?;
    let disks: Vec<DiskRecord> = reader.records(PREFIX_DISK, Kind::Disk)?;
    let drains = reader.drains()?;
    let liveness = Liveness { now_unix_ms, silent_after_ms: settings.node_silent_after.as_millis() as u64 };
    let mut commands = crate::repair::nodes_to_mark_down(&nodes, &settings.repair, now_unix_ms);
    commands.extend(abandoned.into_iter().map(|v| Command::SealVolume {
        volume_id: v.volume_id,
        length_bytes: None,
        fragments: crate::placement_view::fragment_places(&nodes, &disks, v, v.size_bytes, liveness, &drains),
    }));
    let tasks: Vec<TaskRecord> = reader.records(PREFIX_TASK, Kind::Task)?;
    let (repairs_open, shares) = crate::repair::open_repairs(&tasks, settings.repair.bytes_per_sec);
    observed.repair_pass(now_unix_ms, repairs_open);
    observed.set_repair_shares(shares);
    if sealed {
        commands.extend(plan_encodes(&volumes, &tasks, &nodes, &disks, liveness, &drains, encode_cursor));
    }
    budget.refill(now_unix_ms, settings.repair.bytes_per_sec);
    let pass = crate::repair::plan_pass(
        &crate::repair::Inputs {
            volumes: &volumes,
            tasks: &tasks,
            nodes: &nodes,
            disks: &disks,
            drains: &drains,
        },
        liveness,
        &settings.repair,
        budget,
    );
    observed.repair_without_a_disk(pass.without_a_disk, pass.first_refusal.as_deref(), pass.stopped_early);
    commands.extend(pass.commands);
    Ok(commands)
}

/// The encodes to (re)queue: see the module comment. An encode whose fragment targets
/// include a failed disk or a node marked down is planned again onto other disks; any
/// other failed encode (every attempt failed) is left for an operator.
fn plan_encodes(
    volumes: &[VolumeRecord],
    tasks: &[TaskRecord],
    nodes: &[NodeRecord],
    disks: &[DiskRecord],
    liveness: Liveness,
    drains: &crate::state::Drains,
    cursor: &mut u64,
) -> Vec<Command> {
    let encodes: BTreeMap<u64, &TaskRecord> = tasks
        .iter()
        .filter(|t| matches!(t.kind, TaskKind::Encode { .. }))
        .map(|t| (t.kind.volume_id(), t))
        .collect();
    let live = |node_id: u64| nodes.iter().any(|n| n.node_id == node_id && liveness.heard_from(n));
    let health = crate::repair::Health::new(nodes, disks);
    // Volumes are scanned in id order; this pass starts after the cursor and wraps.
    let (after, before): (Vec<&VolumeRecord>, Vec<&VolumeRecord>) =
        volumes.iter().filter(|v| v.state == VolumeState::Sealed).partition(|v| v.volume_id > *cursor);
    let mut commands = Vec::new();
    let mut tried = 0;
    for v in after.into_iter().chain(before) {
        if tried >= ENCODE_PLANS_PER_PASS_MAX {
            break;
        }
        if v.size_bytes == 0 {
            // Nothing to code: an empty sealed volume stays as it is.
            continue;
        }
        let existing = encodes.get(&v.volume_id).copied();
        let claimed =
            |t: &TaskRecord| t.state == TaskState::Claimed && t.claimed_until_unix_ms >= liveness.now_unix_ms;
        // An encode onto a disk that has failed or a node marked down cannot succeed: it
        // is planned again onto other disks (once no attempt is running).
        let targets_lost = |t: &TaskRecord| match &t.kind {
            TaskKind::Encode { fragments, .. } => fragments.iter().any(|p| health.lost(v, p)),
            _ => false,
        };
        let replaces_task = match existing {
            None => None,
            Some(t) if targets_lost(t) && !claimed(t) => Some(t.task_id),
            Some(t) if t.state == TaskState::Failed || live(t.node_id) => continue,
            Some(t) if t.state == TaskState::Claimed && t.claimed_until_unix_ms >= liveness.now_unix_ms => {
                continue;
            }
            Some(t) => Some(t.task_id),
        };
        let Some(holder) =
            v.replicas.iter().filter(|r| !health.lost(v, r)).map(|r| r.node_id).find(|n| live(*n))
        else {
            continue;
        };
        tried += 1;
        *cursor = v.volume_id;
        match crate::placement_view::try_fragment_places(nodes, disks, v, v.size_bytes, liveness, drains) {
            Ok(fragments) if !fragments.is_empty() => commands.push(Command::PlanEncode {
                volume_id: v.volume_id,
                node_id: holder,
                fragments,
                replaces_task,
                now_unix_ms: liveness.now_unix_ms,
            }),
            Ok(_) => {}
            Err(e) => tracing::debug!(volume = v.volume_id, error = %e, "encode not placeable yet"),
        }
    }
    commands
}

/// Runs passes until `stop` turns true.
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    settings: PlannerSettings,
    observed: Arc<Observed>,
    mut stop: watch::Receiver<bool>,
) {
    let mut encode_cursor = 0u64;
    let mut budget = RepairBudget::default();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader != Some(id) {
            // What this master counted while it led is the new leader's to say now.
            observed.repair_without_a_disk_reset();
            continue;
        }
        let commands =
            match plan(&reader, &settings, now_unix_ms(), &mut encode_cursor, &mut budget, &observed) {
                Ok(commands) => commands,
                Err(e) => {
                    // A record that does not decode stops the pass (planning on part of the
                    // state could seal or encode wrongly); it is reported at every pass.
                    tracing::error!(error = %e, "planner cannot read the state; pass skipped");
                    continue;
                }
            };
        for command in commands {
            let what = command.to_string();
            let repair_volume = match &command {
                Command::PlanRepair { kind, .. } => Some(kind.volume_id()),
                _ => None,
            };
            match raft.client_write(command).await {
                Ok(w) => match w.data {
                    Response::Refused { error } => {
                        if repair_volume.is_some() {
                            tracing::warn!(%what, %error, "repair command refused");
                        } else {
                            tracing::debug!(%what, %error, "planner command refused");
                        }
                        // A refused repair rebuilds nothing: its bytes go back to the
                        // bandwidth budget, so that it cannot hold the other repairs back.
                        if let Some(volume_id) = repair_volume
                            && let Ok(Some(v)) = crate::state::volume(&reader, volume_id)
                        {
                            budget.refund(crate::repair::extent_bytes(&v));
                        }
                    }
                    _ => tracing::info!(%what, "planner command applied"),
                },
                Err(e) => {
                    tracing::debug!(%what, error = %e, "planner command not applied");
                    break;
                }
            }
        }
    }
}
