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
use crate::placement_view::{Liveness, Promised, fragment_bytes};
use crate::repair::{RepairBudget, RepairSettings};
use crate::state::{PREFIX_DISK, PREFIX_NODE, PREFIX_VOLUME, StateError};
use crate::store::sm::StateReader;
use crate::tasks::{PREFIX_TASK, TaskKind, TaskRecord, TaskState};
use crate::types::{DiskRecord, ExtentPlace, NodeRecord, VolumeRecord, VolumeState};
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
    let tasks: Vec<TaskRecord> = reader.records(PREFIX_TASK, Kind::Task)?;
    let by_id: BTreeMap<u64, &VolumeRecord> = volumes.iter().map(|v| (v.volume_id, v)).collect();
    let mut promised = Promised::of(&tasks, |id| by_id.get(&id).copied());
    for v in abandoned {
        let fragments = crate::placement_view::fragment_places(
            &nodes,
            &disks,
            v,
            v.size_bytes,
            liveness,
            &drains,
            &promised,
        );
        promised.add(&fragments, fragment_bytes(v));
        commands.push(Command::SealVolume { volume_id: v.volume_id, length_bytes: None, fragments });
    }
    let (repairs_open, shares) = crate::repair::open_repairs(&tasks, settings.repair.bytes_per_sec);
    observed.repair_pass(now_unix_ms, repairs_open);
    observed.set_repair_shares(shares);
    if sealed {
        let places = Places { nodes: &nodes, disks: &disks, liveness, drains: &drains };
        commands.extend(plan_encodes(&volumes, &tasks, &places, &mut promised, encode_cursor));
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

/// What fragment placement looks at: the servers, their disks, who was heard from, the
/// drains.
struct Places<'a> {
    nodes: &'a [NodeRecord],
    disks: &'a [DiskRecord],
    liveness: Liveness,
    drains: &'a crate::state::Drains,
}

/// The encodes to (re)queue: see the module comment. An encode whose fragment targets
/// include a failed disk, a node marked down or a disk whose free bytes (as last
/// heartbeated) no longer hold its fragment is planned again onto other disks; any other
/// failed encode (every attempt failed) waits until its last attempt's claim would have
/// ended (`TASK_CLAIM_MS` after it began), then is planned again. Each encode planned is
/// added to `promised`, so that the next one in the pass sees the disks it will fill.
fn plan_encodes(
    volumes: &[VolumeRecord],
    tasks: &[TaskRecord],
    places: &Places<'_>,
    promised: &mut Promised,
    cursor: &mut u64,
) -> Vec<Command> {
    let Places { nodes, disks, liveness, drains } = *places;
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
        let no_room = |p: &ExtentPlace| {
            disks
                .iter()
                .find(|d| d.disk_id == p.disk_id)
                .is_some_and(|d| crate::placement_view::fragment_room_bytes(d) < fragment_bytes(v))
        };
        let targets_lost = |t: &TaskRecord| match &t.kind {
            TaskKind::Encode { fragments, .. } => fragments.iter().any(|p| health.lost(v, p) || no_room(p)),
            _ => false,
        };
        let replaces_task = match existing {
            None => None,
            Some(t) if targets_lost(t) && !claimed(t) => Some(t.task_id),
            // Given up: it waits (listed in status), then is planned again below.
            Some(t) if crate::tasks::given_up_and_waiting(t, liveness.now_unix_ms) => continue,
            Some(t) if t.state != TaskState::Failed && live(t.node_id) => continue,
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
        match crate::placement_view::try_fragment_places(
            nodes,
            disks,
            v,
            v.size_bytes,
            liveness,
            drains,
            promised,
        ) {
            Ok(fragments) if !fragments.is_empty() => {
                promised.add(&fragments, fragment_bytes(v));
                commands.push(Command::PlanEncode {
                    volume_id: v.volume_id,
                    node_id: holder,
                    fragments,
                    replaces_task,
                    now_unix_ms: liveness.now_unix_ms,
                })
            }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::repair::tests::{NOW, cell_with_free as cell};
    use crate::state::Drains;
    use crate::types::RECORD_VERSION;

    /// A 6 MiB rs-6-3 volume's fragments are 1 MiB.
    const FRAGMENT_BYTES: u64 = 1 << 20;

    /// A sealed rs-6-3 volume of 6 MiB, replicated on nodes 1-3.
    fn sealed(volume_id: u64) -> VolumeRecord {
        VolumeRecord {
            v: RECORD_VERSION,
            volume_id,
            state: VolumeState::Sealed,
            scheme: cellar_erasure::Scheme::RS_6_3,
            replicas: (1..=3).map(|n| ExtentPlace { node_id: n, disk_id: 10 * n + 1 }).collect(),
            fragments: Vec::new(),
            generation: 1,
            size_bytes: 6 * FRAGMENT_BYTES,
            lease: None,
            bad_disks: Vec::new(),
        }
    }

    /// Encode task `task_id` of volume 1 onto `fragments`, in `state` after `attempts`.
    fn encode_task(task_id: u64, fragments: &[ExtentPlace], state: TaskState, attempts: u32) -> TaskRecord {
        TaskRecord {
            v: RECORD_VERSION,
            task_id,
            kind: TaskKind::Encode { volume_id: 1, fragments: fragments.to_vec() },
            node_id: 1,
            state,
            attempts,
            claimed_until_unix_ms: 0,
            detail: String::new(),
        }
    }

    fn encodes(volumes: &[VolumeRecord], tasks: &[TaskRecord], disks: &[DiskRecord]) -> Vec<Command> {
        let (nodes, _) = cell(0);
        let places = Places {
            nodes: &nodes,
            disks,
            liveness: Liveness { now_unix_ms: NOW, silent_after_ms: 2000 },
            drains: &Drains::default(),
        };
        let by_id: BTreeMap<u64, &VolumeRecord> = volumes.iter().map(|v| (v.volume_id, v)).collect();
        let mut promised = Promised::of(tasks, |id| by_id.get(&id).copied());
        plan_encodes(volumes, tasks, &places, &mut promised, &mut 0)
    }

    #[test]
    fn encodes_planned_in_one_pass_promise_no_disk_more_than_it_has_free() {
        // Every disk has room for one fragment and a half: twelve fragments in all, so
        // one volume's nine fit and a second's do not.
        let (_, disks) = cell(FRAGMENT_BYTES * 3 / 2);
        let commands = encodes(&[sealed(1), sealed(2)], &[], &disks);
        assert_eq!(commands.len(), 1, "the second volume must wait for room: {commands:?}");
        let Command::PlanEncode { fragments, .. } = &commands[0] else { panic!("{commands:?}") };
        let distinct: BTreeSet<u64> = fragments.iter().map(|p| p.disk_id).collect();
        assert_eq!(distinct.len(), 9, "{fragments:?}");
        // A queued encode's fragments count as well: with it open, the next pass plans
        // nothing more.
        let task = encode_task(7, fragments, TaskState::Pending, 0);
        let again = encodes(&[sealed(1), sealed(2)], std::slice::from_ref(&task), &disks);
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn an_encode_whose_target_filled_up_is_planned_again_elsewhere() {
        let (_, mut disks) = cell(1 << 29);
        let first = encodes(&[sealed(1)], &[], &disks);
        let Command::PlanEncode { fragments, .. } = &first[0] else { panic!("{first:?}") };
        // Every attempt failed (say, "disk full" on fragment 5's disk), which is now full.
        let full = fragments[5].disk_id;
        // Given up just now (its last claim would still run): it waits while the disk
        // has room.
        let mut task = encode_task(9, fragments, TaskState::Failed, 5);
        task.claimed_until_unix_ms = NOW + 1;
        assert!(encodes(&[sealed(1)], std::slice::from_ref(&task), &disks).is_empty());
        let d = disks.iter_mut().find(|d| d.disk_id == full).expect("disk");
        d.free_bytes = FRAGMENT_BYTES / 2;
        let again = encodes(&[sealed(1)], std::slice::from_ref(&task), &disks);
        let Some(Command::PlanEncode { fragments, replaces_task, .. }) = again.first() else {
            panic!("the encode was not planned again: {again:?}")
        };
        assert_eq!(*replaces_task, Some(9));
        assert!(fragments.iter().all(|p| p.disk_id != full), "{fragments:?}");
    }

    #[test]
    fn a_full_disk_whose_trash_holds_the_room_takes_fragments() {
        // Room for half a fragment on every disk: nothing can be coded...
        let (_, mut disks) = cell(FRAGMENT_BYTES / 2);
        assert!(encodes(&[sealed(1)], &[], &disks).is_empty());
        // ...unless the trash holds the rest, which a volume server gives up for a
        // fragment. Only the disks with such trash are chosen.
        for d in disks.iter_mut().filter(|d| d.disk_id % 4 != 0) {
            d.trash_bytes = FRAGMENT_BYTES;
        }
        let planned = encodes(&[sealed(1)], &[], &disks);
        let Some(Command::PlanEncode { fragments, .. }) = planned.first() else {
            panic!("the encode was not planned: {planned:?}")
        };
        assert_eq!(fragments.len(), 9);
        assert!(fragments.iter().all(|p| p.disk_id % 4 != 0), "{fragments:?}");
        // The trash counts in the check of a planned encode's targets too: a target whose
        // room is in its trash keeps the encode where it is.
        let task = encode_task(9, fragments, TaskState::Pending, 0);
        assert!(encodes(&[sealed(1)], std::slice::from_ref(&task), &disks).is_empty());
    }

    #[test]
    fn an_encode_given_up_is_planned_again_once_its_last_claim_would_have_ended() {
        let (_, disks) = cell(1 << 29);
        let first = encodes(&[sealed(1)], &[], &disks);
        let Command::PlanEncode { fragments, .. } = &first[0] else { panic!("{first:?}") };
        let mut task = encode_task(9, fragments, TaskState::Failed, 5);
        task.claimed_until_unix_ms = NOW;
        assert!(encodes(&[sealed(1)], std::slice::from_ref(&task), &disks).is_empty(), "not yet");
        task.claimed_until_unix_ms = NOW - 1;
        let again = encodes(&[sealed(1)], std::slice::from_ref(&task), &disks);
        let Some(Command::PlanEncode { replaces_task, .. }) = again.first() else {
            panic!("the encode was not planned again: {again:?}")
        };
        assert_eq!(*replaces_task, Some(9));
    }
}
