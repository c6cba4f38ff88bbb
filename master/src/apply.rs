//! Applying a command to the state: deterministic, in log order, over a key-value view.
//! The RocksDB state machine runs it over a write overlay and commits the overlay in one
//! batch with the applied log id; tests run it over a map.

use std::collections::BTreeMap;

use cellar_format::RECORD_HEADER_BYTES;

use crate::codec::Kind;
use crate::command::{
    Command, CommandError, CommitCall, CommitOutcome, DiskRegistration, DiskStat, EntryVersion, IndexCommit,
    IndexEntryView, ObjectCall, RequestId, Response, health_of,
};
pub use crate::place_check::{check_fragment_places, check_place};
use crate::state::write_record;
pub use crate::state::{
    KEY_COUNTERS, Kv, PREFIX_DISK, PREFIX_INDEX, PREFIX_NODE, PREFIX_VOLUME, Pairs, StateError, counters,
    disk, id_key, index_entry, index_key, node, put_volume, volume,
};
use crate::types::{
    Counters, DiskHealth, DiskRecord, DrainRecord, DrainTarget, ExtentPlace, IndexEntry, Lease, NodeRecord,
    NodeState, RECORD_VERSION, VolumeRecord, VolumeState,
};

/// Calls in one [`Command::NamespaceBatch`] at most.
pub const NS_BATCH_CALLS_MAX: usize = 4096;

/// One namespace operation: its outcome, or its refusal (nothing written).
fn namespace(
    kv: &mut dyn Kv,
    c: &mut Counters,
    op: &crate::ns_types::NsOp,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    Ok(match crate::namespace::apply::apply(kv, c, op, now_unix_ms)? {
        Ok(result) => Response::Namespace { result },
        Err((code, detail)) => Response::Refused { error: CommandError::Namespace { code, detail } },
    })
}

/// Applies one command. A refused command writes nothing and returns `Response::Refused`
/// (or per-entry `Rejected` outcomes for index batches).
pub fn apply(kv: &mut dyn Kv, command: &Command) -> Result<Response, StateError> {
    // A state at an apply version this build does not apply stops here, before anything;
    // a command of a later version than the cell's is refused (the API refuses it before
    // proposing; this is the same rule where every master applies it).
    let cell = crate::apply_version::check(kv)?;
    let needed = crate::apply_version::needed(command);
    if needed > cell {
        return refused(CommandError::BadRequest {
            detail: crate::apply_version::too_old_for(command, needed, cell),
        });
    }
    let mut c = counters(kv)?;
    let before = c.clone();
    // Idle client sessions go a few at a time, on commands that carry the leader's time.
    match command {
        Command::Once { now_unix_ms, .. } => {
            crate::session::sweep(kv, *now_unix_ms)?;
        }
        Command::CommitIndex { now_unix_ms, calls, .. }
        | Command::CommitIndexUnreferenced { now_unix_ms, calls, .. }
            if !calls.is_empty() =>
        {
            crate::session::sweep(kv, *now_unix_ms)?;
        }
        Command::NamespaceBatch { now_unix_ms, calls } if calls.iter().any(|c| c.request.is_some()) => {
            crate::session::sweep(kv, *now_unix_ms)?;
        }
        Command::CommitObjects { now_unix_ms, calls, .. } if calls.iter().any(|c| c.request.is_some()) => {
            crate::session::sweep(kv, *now_unix_ms)?;
        }
        _ => {}
    }
    let response = apply_counted(kv, &mut c, command)?;
    if c != before {
        write_record(kv, Kind::Counters, KEY_COUNTERS, &c)?;
    }
    Ok(response)
}

fn apply_counted(kv: &mut dyn Kv, c: &mut Counters, command: &Command) -> Result<Response, StateError> {
    let response = match command {
        Command::RegisterNode { node_id, address, zone, disks, now_unix_ms } => {
            register_node(kv, c, *node_id, address, zone, disks, *now_unix_ms)?
        }
        Command::Heartbeat { node_id, disks, now_unix_ms } => {
            heartbeat(kv, c, *node_id, disks, *now_unix_ms)?
        }
        Command::AllocateVolume { holder, scheme, replicas, lease_ms, now_unix_ms } => {
            allocate_volume(kv, c, holder, *scheme, replicas, *lease_ms, *now_unix_ms)?
        }
        Command::RenewLease { volume_id, lease_epoch, lease_ms, now_unix_ms } => {
            renew_lease(kv, *volume_id, *lease_epoch, *lease_ms, *now_unix_ms)?
        }
        Command::CommitIndex { entries, volume_size_max_bytes, now_unix_ms, calls } => {
            commit_index(kv, c, &Batch::of(entries, &[], *volume_size_max_bytes, *now_unix_ms), calls)?
        }
        Command::CommitIndexUnreferenced {
            entries,
            unreferenced,
            volume_size_max_bytes,
            now_unix_ms,
            calls,
        } => commit_index(
            kv,
            c,
            &Batch::of(entries, unreferenced, *volume_size_max_bytes, *now_unix_ms),
            calls,
        )?,
        Command::CommitObjects { entries, unreferenced, volume_size_max_bytes, now_unix_ms, calls } => {
            commit_objects(
                kv,
                c,
                &Batch::of(entries, unreferenced, *volume_size_max_bytes, *now_unix_ms),
                calls,
            )?
        }
        Command::RelocateIndex { entries, relocate_from, volume_size_max_bytes, now_unix_ms } => {
            if relocate_from.len() != entries.len() {
                return Ok(Response::Refused {
                    error: CommandError::BadRequest { detail: "one relocate_from per entry".into() },
                });
            }
            let mut volumes: BTreeMap<u64, (VolumeRecord, bool)> = BTreeMap::new();
            let mut outcomes = Vec::with_capacity(entries.len());
            for (e, from) in entries.iter().zip(relocate_from) {
                outcomes.push(if *from == 0 {
                    commit_one(kv, c, &mut volumes, e, true, *volume_size_max_bytes, *now_unix_ms)?
                } else {
                    relocate_one(kv, &mut volumes, e, *from, *volume_size_max_bytes, *now_unix_ms)?
                });
            }
            write_touched(kv, &volumes)?;
            Response::Committed { outcomes }
        }
        Command::DeleteVolume { volume_id, size_bytes, entries } => {
            crate::reclaim::delete_volume(kv, c, *volume_id, *size_bytes, entries)?
        }
        Command::Namespace { op, now_unix_ms } => namespace(kv, c, op, *now_unix_ms)?,
        Command::NamespaceBatch { calls, now_unix_ms } => {
            if calls.len() > NS_BATCH_CALLS_MAX {
                return refused(CommandError::BadRequest {
                    detail: format!(
                        "{} calls in a namespace batch (at most {NS_BATCH_CALLS_MAX})",
                        calls.len()
                    ),
                });
            }
            let mut responses = Vec::with_capacity(calls.len());
            for call in calls {
                responses.push(match &call.request {
                    Some(request) => crate::session::once(kv, request, *now_unix_ms, |kv| {
                        namespace(kv, c, &call.op, *now_unix_ms)
                    })?,
                    None => namespace(kv, c, &call.op, *now_unix_ms)?,
                });
            }
            Response::NamespaceBatch { responses }
        }
        Command::SealVolume { volume_id, length_bytes, fragments } => {
            seal_volume(kv, c, *volume_id, *length_bytes, fragments)?
        }
        Command::AcquireLease { volume_id, holder, lease_ms, now_unix_ms } => {
            acquire_lease(kv, *volume_id, holder, *lease_ms, *now_unix_ms)?
        }
        Command::EnqueueTask { kind } => crate::tasks::enqueue_checked(kv, c, kind)?,
        Command::DropReferences { hashes } => {
            let mut entries = Vec::new();
            for hash in hashes {
                let Some(mut e) = index_entry(kv, hash)? else { continue };
                e.references = e.references.saturating_sub(1);
                if e.references == 0 {
                    kv.delete(&index_key(hash));
                    c.index_entries = c.index_entries.saturating_sub(1);
                } else {
                    kv.put(&index_key(hash), e.encode().to_vec());
                }
                entries.push(IndexEntryView::new(*hash, &e));
            }
            Response::Dropped { entries }
        }
        Command::ReportBadExtent { volume_id, disk_id, reason: _ } => {
            report_bad_extent(kv, *volume_id, *disk_id)?
        }
        Command::ClaimTasks { node_id, max, claim_ms, now_unix_ms, deferred_kinds } => {
            crate::tasks::claim(kv, *node_id, *max, *claim_ms, *now_unix_ms, deferred_kinds)?
        }
        Command::ReportTask { task_id, node_id, success, detail } => {
            crate::tasks::report(kv, c, *task_id, *node_id, *success, detail)?
        }
        Command::PlanEncode { volume_id, node_id, fragments, replaces_task, now_unix_ms } => {
            crate::tasks::plan_encode(kv, c, *volume_id, *node_id, fragments, *replaces_task, *now_unix_ms)?
        }
        Command::MarkNodeDown { node_id, down_after_ms, now_unix_ms } => {
            mark_node_down(kv, c, *node_id, *down_after_ms, *now_unix_ms)?
        }
        Command::PlanRepair { kind, replaces_task, now_unix_ms } => {
            crate::tasks::plan_repair(kv, c, kind, *replaces_task, *now_unix_ms)?
        }
        Command::SetDrain { target, drained, now_unix_ms } => {
            set_drain(kv, c, *target, *drained, *now_unix_ms)?
        }
        Command::RemoveNode { node_id } => remove_node(kv, c, *node_id)?,
        Command::RaiseApplyVersion { version, now_unix_ms } => {
            crate::apply_version::raise(kv, *version, *now_unix_ms)?
        }
        Command::RetryTask { task_id } => crate::tasks::retry(kv, c, *task_id)?,
        Command::ClaimTasksAfterStart { node_id, max, claim_ms, now_unix_ms, deferred_kinds } => {
            crate::tasks::release_claims(kv, c, *node_id)?;
            crate::tasks::claim(kv, *node_id, *max, *claim_ms, *now_unix_ms, deferred_kinds)?
        }
        Command::Once { request, now_unix_ms, command } => match command.as_ref() {
            Command::Once { .. }
            | Command::CommitIndex { .. }
            | Command::NamespaceBatch { .. }
            | Command::CommitObjects { .. } => {
                return refused(CommandError::BadRequest {
                    detail: format!("{command} cannot be wrapped in a call id (commits carry their own)"),
                });
            }
            inner => crate::session::once(kv, request, *now_unix_ms, |kv| apply_counted(kv, c, inner))?,
        },
    };
    Ok(response)
}

/// An index commit batch as its command carries it: the entries, which of them take no
/// reference (sorted positions), the volume size limit and the leader's clock.
#[derive(Clone, Copy)]
struct Batch<'a> {
    entries: &'a [IndexCommit],
    unreferenced: &'a [u32],
    volume_size_max_bytes: u64,
    now_unix_ms: u64,
}

impl<'a> Batch<'a> {
    /// The batch of a command's fields.
    fn of(
        entries: &'a [IndexCommit],
        unreferenced: &'a [u32],
        volume_size_max_bytes: u64,
        now_unix_ms: u64,
    ) -> Batch<'a> {
        Batch { entries, unreferenced, volume_size_max_bytes, now_unix_ms }
    }
}

/// One call of an index commit batch, from whichever command carried it.
struct BatchCall<'a> {
    request: Option<&'a RequestId>,
    entries: u32,
    /// Object versions to add after the call's entries (`CommitObjects` only).
    versions: &'a [EntryVersion],
}

/// Applies a batch of index commits (`CommitIndex`, `CommitIndexUnreferenced`): each call
/// at most once (see [`crate::session`]), answered with its own outcomes, in batch order.
fn commit_index(
    kv: &mut dyn Kv,
    c: &mut Counters,
    batch: &Batch,
    calls: &[CommitCall],
) -> Result<Response, StateError> {
    // A batch without a call list is one call without an id.
    let calls: Vec<BatchCall> = if calls.is_empty() {
        vec![BatchCall { request: None, entries: batch.entries.len() as u32, versions: &[] }]
    } else {
        calls
            .iter()
            .map(|call| BatchCall { request: call.request.as_ref(), entries: call.entries, versions: &[] })
            .collect()
    };
    commit_calls(kv, c, batch, &calls, false)
}

/// Applies a batch of object blocks' commits and the versions naming them
/// (`CommitObjects`): per call, its entries as [`commit_index`] would, then each of its
/// versions whose entry was committed or deduplicated (the others are refused and write
/// nothing).
fn commit_objects(
    kv: &mut dyn Kv,
    c: &mut Counters,
    batch: &Batch,
    calls: &[ObjectCall],
) -> Result<Response, StateError> {
    let versions_total: usize = calls.iter().map(|call| call.versions.len()).sum();
    if calls.len() > NS_BATCH_CALLS_MAX || versions_total > NS_BATCH_CALLS_MAX {
        return refused(CommandError::BadRequest {
            detail: format!(
                "{} calls and {versions_total} versions in one commit (at most {NS_BATCH_CALLS_MAX} each)",
                calls.len()
            ),
        });
    }
    let calls: Vec<BatchCall> = calls
        .iter()
        .map(|call| BatchCall {
            request: call.request.as_ref(),
            entries: call.entries,
            versions: &call.versions,
        })
        .collect();
    commit_calls(kv, c, batch, &calls, true)
}

/// The calls of an index commit batch, each applied at most once by its id and answered
/// with its own outcomes (and, with `objects`, its versions' responses: the command's
/// response is then `CommittedObjects`, else `Committed`, as each call's stored outcome).
fn commit_calls(
    kv: &mut dyn Kv,
    c: &mut Counters,
    batch: &Batch,
    calls: &[BatchCall],
    objects: bool,
) -> Result<Response, StateError> {
    let Batch { entries, unreferenced, volume_size_max_bytes, now_unix_ms } = *batch;
    let total: u64 = calls.iter().map(|call| u64::from(call.entries)).sum();
    if total != entries.len() as u64 {
        return refused(CommandError::BadRequest {
            detail: format!("the batch's calls cover {total} entries, not {}", entries.len()),
        });
    }
    // Volumes touched by the batch are read and written once, not once per entry.
    let mut volumes: BTreeMap<u64, (VolumeRecord, bool)> = BTreeMap::new();
    let unreferenced_at = |at: usize| unreferenced.binary_search(&(at as u32)).is_ok();
    let mut apply_call = |kv: &mut dyn Kv, first: usize, mine: &[IndexCommit], call: &BatchCall| {
        let outcomes = mine
            .iter()
            .enumerate()
            .map(|(i, e)| {
                commit_one(
                    kv,
                    c,
                    &mut volumes,
                    e,
                    !unreferenced_at(first + i),
                    volume_size_max_bytes,
                    now_unix_ms,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !objects {
            return Ok::<Response, StateError>(Response::Committed { outcomes });
        }
        let mut versions = Vec::with_capacity(call.versions.len());
        for v in call.versions {
            let at = v.entry as usize;
            let refusal = |detail: String| Response::Refused { error: CommandError::BadRequest { detail } };
            versions.push(match (outcomes.get(at), &v.op) {
                (None, _) => refusal(format!("version names entry {at} of a call of {}", mine.len())),
                (_, op) if !matches!(op, crate::ns_types::NsOp::PutVersion { .. }) => {
                    refusal(format!("{} cannot be committed with a block", op.name()))
                }
                (Some(_), _) if !unreferenced_at(first + at) => {
                    refusal(format!("entry {at} takes a reference of its own; a version's block takes none"))
                }
                (Some(CommitOutcome::Committed { .. } | CommitOutcome::Deduplicated { .. }), op) => {
                    namespace(kv, c, op, now_unix_ms)?
                }
                (Some(CommitOutcome::Rejected { error }), _) => {
                    refusal(format!("its block was not committed: {error}"))
                }
            });
        }
        Ok(Response::CommittedObjects { outcomes, versions })
    };
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut versions = Vec::new();
    let mut rest = entries;
    let mut first = 0usize;
    for call in calls {
        let (mine, tail) = rest.split_at(call.entries as usize);
        rest = tail;
        let at = first;
        first += mine.len();
        let answered = match call.request {
            None => apply_call(kv, at, mine, call)?,
            Some(request) => {
                crate::session::once(kv, request, now_unix_ms, |kv| apply_call(kv, at, mine, call))?
            }
        };
        let error = match answered {
            Response::Committed { outcomes: o } if !objects && o.len() == mine.len() => {
                outcomes.extend(o);
                continue;
            }
            Response::CommittedObjects { outcomes: o, versions: v }
                if objects && o.len() == mine.len() && v.len() == call.versions.len() =>
            {
                outcomes.extend(o);
                versions.extend(v);
                continue;
            }
            Response::Refused { error } => error,
            // The id was used before by a call of another shape: a client bug. Its first
            // outcome cannot stand for this one, and nothing is applied.
            _ => CommandError::BadRequest { detail: "request id reused by a different call".into() },
        };
        outcomes.extend(vec![CommitOutcome::Rejected { error: error.clone() }; mine.len()]);
        versions.extend(vec![Response::Refused { error }; call.versions.len()]);
    }
    write_touched(kv, &volumes)?;
    Ok(if objects {
        Response::CommittedObjects { outcomes, versions }
    } else {
        Response::Committed { outcomes }
    })
}

/// Writes back the volumes a batch of commits grew (see [`take_place`]).
fn write_touched(kv: &mut dyn Kv, volumes: &BTreeMap<u64, (VolumeRecord, bool)>) -> Result<(), StateError> {
    for (volume_id, (v, changed)) in volumes {
        if *changed {
            write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, *volume_id), v)?;
        }
    }
    Ok(())
}

fn refused(error: CommandError) -> Result<Response, StateError> {
    Ok(Response::Refused { error })
}

fn register_node(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: Option<u64>,
    address: &str,
    zone: &str,
    disks: &[DiskRegistration],
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    if zone.is_empty() || address.is_empty() {
        return refused(CommandError::BadRequest { detail: "a node needs an address and a zone".into() });
    }
    let existing = match node_id {
        Some(id) => match node(kv, id)? {
            Some(n) => Some(n),
            None => return refused(CommandError::UnknownNode { node_id: id }),
        },
        None => None,
    };
    if let Some(n) = &existing
        && n.zone != zone
    {
        return refused(CommandError::BadRequest {
            detail: format!("node {} is in zone {:?}; a node cannot change zones", n.node_id, n.zone),
        });
    }
    let node_id = match &existing {
        Some(n) => n.node_id,
        None => {
            let id = c.next_node_id;
            c.next_node_id += 1;
            id
        }
    };
    let mut known: BTreeMap<String, DiskRecord> = BTreeMap::new();
    if let Some(n) = &existing {
        for id in &n.disk_ids {
            if let Some(d) = disk(kv, *id)? {
                known.insert(d.uuid.clone(), d);
            }
        }
    }
    let mut disk_ids = Vec::with_capacity(disks.len());
    let mut all_disks: Vec<u64> = existing.as_ref().map(|n| n.disk_ids.clone()).unwrap_or_default();
    for reg in disks {
        let disk_id = match known.get(&reg.uuid) {
            Some(d) => d.disk_id,
            None => {
                let id = c.next_disk_id;
                c.next_disk_id += 1;
                all_disks.push(id);
                id
            }
        };
        let record = DiskRecord {
            v: RECORD_VERSION,
            disk_id,
            node_id,
            uuid: reg.uuid.clone(),
            path: reg.path.clone(),
            capacity_bytes: reg.capacity_bytes,
            used_bytes: reg.used_bytes,
            free_bytes: reg.free_bytes,
            health: known.get(&reg.uuid).map_or(DiskHealth::Ok, |d| d.health),
            trash_bytes: known.get(&reg.uuid).map_or(0, |d| d.trash_bytes),
            trash_extents: known.get(&reg.uuid).map_or(0, |d| d.trash_extents),
        };
        write_record(kv, Kind::Disk, &id_key(PREFIX_DISK, disk_id), &record)?;
        disk_ids.push(disk_id);
    }
    // A disk the node registered before and does not bring now (it could not be opened,
    // or the operator took it out) is failed: what it held is rebuilt elsewhere. Before,
    // it kept its last health, "ok", and nothing it held was ever repaired. Brought back
    // whole, it comes back with its next heartbeat.
    for d in known.values() {
        if !disk_ids.contains(&d.disk_id) && d.health != DiskHealth::Failed {
            let record = DiskRecord { health: DiskHealth::Failed, ..d.clone() };
            write_record(kv, Kind::Disk, &id_key(PREFIX_DISK, d.disk_id), &record)?;
        }
    }
    let record = NodeRecord {
        v: RECORD_VERSION,
        node_id,
        address: address.to_string(),
        zone: zone.to_string(),
        state: NodeState::Up,
        last_heartbeat_unix_ms: now_unix_ms,
        disk_ids: all_disks,
    };
    write_record(kv, Kind::Node, &id_key(PREFIX_NODE, node_id), &record)?;
    c.cluster_map_version += 1;
    Ok(Response::NodeRegistered { node_id, disk_ids })
}

fn heartbeat(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: u64,
    disks: &[DiskStat],
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let Some(mut n) = node(kv, node_id)? else {
        return refused(CommandError::UnknownNode { node_id });
    };
    for stat in disks {
        if !n.disk_ids.contains(&stat.disk_id) {
            return refused(CommandError::UnknownDisk {
                disk_id: stat.disk_id,
                detail: format!("not a disk of node {node_id}"),
            });
        }
    }
    let mut structural = n.state != NodeState::Up;
    for stat in disks {
        let Some(mut d) = disk(kv, stat.disk_id)? else { continue };
        // A failed disk whose server reports it whole again comes back (the leader's
        // metadata scanner then checks its extents before the next pass).
        let health = health_of(stat.failed);
        structural |= health != d.health;
        d.capacity_bytes = stat.capacity_bytes;
        d.used_bytes = stat.used_bytes;
        d.free_bytes = stat.free_bytes;
        d.trash_bytes = stat.trash_bytes;
        d.trash_extents = stat.trash_extents;
        d.health = health;
        write_record(kv, Kind::Disk, &id_key(PREFIX_DISK, d.disk_id), &d)?;
        if health == DiskHealth::Ok {
            // Back (or never gone): deletes parked while it was failed can run now.
            crate::tasks::unpark(kv, node_id, d.disk_id)?;
        }
    }
    n.state = NodeState::Up;
    n.last_heartbeat_unix_ms = now_unix_ms;
    write_record(kv, Kind::Node, &id_key(PREFIX_NODE, node_id), &n)?;
    if structural {
        c.cluster_map_version += 1;
    }
    Ok(Response::HeartbeatAck { cluster_map_version: c.cluster_map_version })
}

/// Drains or undrains a node or disk (see [`Command::SetDrain`]).
fn set_drain(
    kv: &mut dyn Kv,
    c: &mut Counters,
    target: DrainTarget,
    drained: bool,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    match target {
        DrainTarget::Node { node_id } if node(kv, node_id)?.is_none() => {
            return refused(CommandError::UnknownNode { node_id });
        }
        DrainTarget::Disk { disk_id } if disk(kv, disk_id)?.is_none() => {
            return refused(CommandError::UnknownDisk { disk_id, detail: "no such disk".into() });
        }
        _ => {}
    }
    let key = crate::state::drain_key(target);
    let present = kv.get(&key)?.is_some();
    if drained && !present {
        let record = DrainRecord { v: crate::types::RECORD_VERSION, target, since_unix_ms: now_unix_ms };
        write_record(kv, Kind::Drain, &key, &record)?;
    } else if !drained && present {
        kv.delete(&key);
    } else {
        return Ok(Response::Empty);
    }
    c.cluster_map_version += 1;
    Ok(Response::Empty)
}

/// Removes a node for good (see [`Command::RemoveNode`]): refused while it is up and not
/// drained, or while any volume places an extent on it (a scan of every volume record: an
/// operator's rare command).
fn remove_node(kv: &mut dyn Kv, c: &mut Counters, node_id: u64) -> Result<Response, StateError> {
    let Some(n) = node(kv, node_id)? else {
        return refused(CommandError::UnknownNode { node_id });
    };
    let node_drain = crate::state::drain_key(DrainTarget::Node { node_id });
    if n.state == NodeState::Up && kv.get(&node_drain)?.is_none() {
        return refused(CommandError::BadRequest {
            detail: format!(
                "node {node_id} is up and not drained: drain it (or wait until it is marked down) first"
            ),
        });
    }
    let mut holding = Vec::new();
    for (key, bytes) in kv.scan(&[PREFIX_VOLUME], usize::MAX)? {
        let v: VolumeRecord = crate::state::decode_record(Kind::Volume, &key, &bytes)?;
        if v.replicas.iter().chain(&v.fragments).any(|p| p.node_id == node_id) {
            holding.push(v.volume_id);
        }
    }
    if !holding.is_empty() {
        holding.truncate(20);
        return refused(CommandError::BadRequest {
            detail: format!(
                "node {node_id} still holds extents of volumes {holding:?}: wait until the drain or repair moves them"
            ),
        });
    }
    for task in crate::tasks::node_tasks(kv, node_id)? {
        crate::tasks::drop_task(kv, c, &task)?;
    }
    for disk_id in &n.disk_ids {
        for task in crate::tasks::parked_tasks(kv, *disk_id)? {
            crate::tasks::drop_task(kv, c, &task)?;
        }
        kv.delete(&id_key(PREFIX_DISK, *disk_id));
        kv.delete(&crate::state::drain_key(DrainTarget::Disk { disk_id: *disk_id }));
    }
    kv.delete(&node_drain);
    kv.delete(&id_key(PREFIX_NODE, node_id));
    c.cluster_map_version += 1;
    Ok(Response::Empty)
}

/// Marks a node down when its last committed heartbeat is `down_after_ms` old on the
/// leader's clock; its extents are then repaired elsewhere. A heartbeat brings it back up.
fn mark_node_down(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: u64,
    down_after_ms: u64,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let Some(mut n) = node(kv, node_id)? else {
        return refused(CommandError::UnknownNode { node_id });
    };
    if n.state == NodeState::Down {
        return Ok(Response::Empty);
    }
    if n.last_heartbeat_unix_ms.saturating_add(down_after_ms) > now_unix_ms {
        return refused(CommandError::BadRequest {
            detail: format!(
                "node {node_id} was heard from at {} (unix ms), less than {down_after_ms} ms before {now_unix_ms}",
                n.last_heartbeat_unix_ms
            ),
        });
    }
    n.state = NodeState::Down;
    write_record(kv, Kind::Node, &id_key(PREFIX_NODE, node_id), &n)?;
    c.cluster_map_version += 1;
    Ok(Response::Empty)
}

fn allocate_volume(
    kv: &mut dyn Kv,
    c: &mut Counters,
    holder: &str,
    scheme: cellar_erasure::Scheme,
    replicas: &[ExtentPlace],
    lease_ms: u64,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    if replicas.is_empty() {
        return refused(CommandError::BadRequest { detail: "a volume needs at least one replica".into() });
    }
    // The leader chose the placement from its view; the disks must still be serving.
    for place in replicas {
        match disk(kv, place.disk_id)? {
            Some(d) if d.node_id == place.node_id && d.health == DiskHealth::Ok => {}
            _ => {
                return refused(CommandError::UnknownDisk {
                    disk_id: place.disk_id,
                    detail: "not a healthy disk of the named node".into(),
                });
            }
        }
    }
    let volume_id = c.next_volume_id;
    c.next_volume_id += 1;
    let volume = VolumeRecord {
        v: RECORD_VERSION,
        volume_id,
        state: VolumeState::Open,
        scheme,
        replicas: replicas.to_vec(),
        fragments: Vec::new(),
        generation: 1,
        size_bytes: 0,
        lease: Some(Lease { epoch: 1, holder: holder.to_string(), expires_unix_ms: now_unix_ms + lease_ms }),
        bad_disks: Vec::new(),
    };
    write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id), &volume)?;
    c.volumes_by_state[0] += 1;
    Ok(Response::Volume { volume })
}

fn lease_check(v: &VolumeRecord, given_epoch: u64, now_unix_ms: u64) -> Option<CommandError> {
    if v.state != VolumeState::Open {
        return Some(CommandError::VolumeNotOpen { volume_id: v.volume_id, state: v.state });
    }
    match &v.lease {
        Some(l) if l.epoch == given_epoch && now_unix_ms <= l.expires_unix_ms => None,
        Some(l) => Some(CommandError::StaleLease {
            volume_id: v.volume_id,
            given_epoch,
            current_epoch: Some(l.epoch),
            expired: l.epoch == given_epoch,
        }),
        None => Some(CommandError::StaleLease {
            volume_id: v.volume_id,
            given_epoch,
            current_epoch: None,
            expired: false,
        }),
    }
}

fn renew_lease(
    kv: &mut dyn Kv,
    volume_id: u64,
    lease_epoch: u64,
    lease_ms: u64,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let Some(mut v) = volume(kv, volume_id)? else {
        return refused(CommandError::UnknownVolume { volume_id });
    };
    if let Some(error) = lease_check(&v, lease_epoch, now_unix_ms) {
        return refused(error);
    }
    if let Some(lease) = v.lease.as_mut() {
        lease.expires_unix_ms = now_unix_ms + lease_ms;
    }
    write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id), &v)?;
    Ok(Response::Volume { volume: v })
}

fn commit_one(
    kv: &mut dyn Kv,
    c: &mut Counters,
    volumes: &mut BTreeMap<u64, (VolumeRecord, bool)>,
    e: &IndexCommit,
    referenced: bool,
    volume_size_max_bytes: u64,
    now_unix_ms: u64,
) -> Result<CommitOutcome, StateError> {
    let key = index_key(&e.hash);
    if let Some(mut existing) = index_entry(kv, &e.hash)? {
        if referenced {
            existing.references += 1;
            kv.put(&key, existing.encode().to_vec());
        }
        return Ok(CommitOutcome::Deduplicated { entry: IndexEntryView::new(e.hash, &existing) });
    }
    if let Some(error) = take_place(kv, volumes, e, volume_size_max_bytes, now_unix_ms)? {
        return Ok(CommitOutcome::Rejected { error });
    }
    let entry = placed(e, u64::from(referenced), None);
    kv.put(&key, entry.encode().to_vec());
    c.index_entries += 1;
    Ok(CommitOutcome::Committed { entry: IndexEntryView::new(e.hash, &entry) })
}

/// Moves a block's entry to the location a compaction rewrite appended it at (see
/// [`Command::RelocateIndex`]).
fn relocate_one(
    kv: &mut dyn Kv,
    volumes: &mut BTreeMap<u64, (VolumeRecord, bool)>,
    e: &IndexCommit,
    from: u64,
    volume_size_max_bytes: u64,
    now_unix_ms: u64,
) -> Result<CommitOutcome, StateError> {
    let rejected =
        |detail: String| Ok(CommitOutcome::Rejected { error: CommandError::BadRequest { detail } });
    let Some(current) = index_entry(kv, &e.hash)? else {
        return rejected(format!("block {} is no longer indexed", e.hash));
    };
    if current.volume_id != from || current.payload_bytes != e.payload_bytes || current.crc32 != e.crc32 {
        return rejected(format!("block {} is not in volume {from} as given", e.hash));
    }
    if let Some(error) = take_place(kv, volumes, e, volume_size_max_bytes, now_unix_ms)? {
        return Ok(CommitOutcome::Rejected { error });
    }
    let entry = placed(e, current.references, current.digest);
    kv.put(&index_key(&e.hash), entry.encode().to_vec());
    Ok(CommitOutcome::Committed { entry: IndexEntryView::new(e.hash, &entry) })
}

/// The index entry of the record `e` places, with `references` and its read digest (else
/// `digest_before`, the entry's earlier one).
fn placed(e: &IndexCommit, references: u64, digest_before: Option<[u8; 16]>) -> IndexEntry {
    IndexEntry {
        volume_id: e.volume_id,
        offset_bytes: e.offset_bytes,
        payload_bytes: e.payload_bytes,
        crc32: e.crc32,
        references,
        digest: e.digest.map(|d| d.0).or(digest_before),
    }
}

/// Checks that `e`'s record may be committed where it says (its volume exists, is open
/// under the writer's lease, and the record fits) and grows the volume's acknowledged end
/// to cover it; the refusal otherwise. Shared by new entries and relocations.
fn take_place(
    kv: &mut dyn Kv,
    volumes: &mut BTreeMap<u64, (VolumeRecord, bool)>,
    e: &IndexCommit,
    volume_size_max_bytes: u64,
    now_unix_ms: u64,
) -> Result<Option<CommandError>, StateError> {
    let (v, changed) = match volumes.entry(e.volume_id) {
        std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
        std::collections::btree_map::Entry::Vacant(slot) => match volume(kv, e.volume_id)? {
            Some(v) => slot.insert((v, false)),
            None => return Ok(Some(CommandError::UnknownVolume { volume_id: e.volume_id })),
        },
    };
    if let Some(error) = lease_check(v, e.lease_epoch, now_unix_ms) {
        return Ok(Some(error));
    }
    // The block's record: the payload behind its header.
    let record_bytes = u64::from(e.payload_bytes) + RECORD_HEADER_BYTES as u64;
    let Some(end) = e.offset_bytes.checked_add(record_bytes).filter(|end| *end <= volume_size_max_bytes)
    else {
        return Ok(Some(CommandError::BadRequest {
            detail: format!(
                "a record of {record_bytes} bytes at {} does not fit a volume of {volume_size_max_bytes} bytes",
                e.offset_bytes
            ),
        }));
    };
    if end > v.size_bytes {
        v.size_bytes = end;
        *changed = true;
    }
    Ok(None)
}

fn seal_volume(
    kv: &mut dyn Kv,
    c: &mut Counters,
    volume_id: u64,
    length_bytes: Option<u64>,
    fragments: &[ExtentPlace],
) -> Result<Response, StateError> {
    let Some(mut v) = volume(kv, volume_id)? else {
        return refused(CommandError::UnknownVolume { volume_id });
    };
    let length = length_bytes.unwrap_or(v.size_bytes);
    match v.state {
        VolumeState::Open => {}
        VolumeState::Sealed if length == v.size_bytes => return Ok(Response::Volume { volume: v }),
        state => return refused(CommandError::VolumeNotOpen { volume_id, state }),
    }
    if length < v.size_bytes {
        return refused(CommandError::BadRequest {
            detail: format!(
                "cannot seal volume {volume_id} at {length}: records up to {} are acknowledged",
                v.size_bytes
            ),
        });
    }
    if !fragments.is_empty()
        && let Some(error) = check_fragment_places(kv, &v, fragments)?
    {
        return refused(error);
    }
    v.state = VolumeState::Sealed;
    v.size_bytes = length;
    v.lease = None;
    write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id), &v)?;
    c.volumes_by_state[0] = c.volumes_by_state[0].saturating_sub(1);
    c.volumes_by_state[1] += 1;
    // A sealed volume is to be coded: the node holding its first replica starts; a failed
    // attempt moves to the next holder, and the planner moves it off a silent node or
    // queues it later when no placement was possible now.
    if let (Some(first), false) = (v.replicas.first(), fragments.is_empty()) {
        crate::tasks::enqueue_encode(kv, c, first.node_id, volume_id, fragments.to_vec())?;
    }
    Ok(Response::Volume { volume: v })
}

fn acquire_lease(
    kv: &mut dyn Kv,
    volume_id: u64,
    holder: &str,
    lease_ms: u64,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let Some(mut v) = volume(kv, volume_id)? else {
        return refused(CommandError::UnknownVolume { volume_id });
    };
    if v.state != VolumeState::Open {
        return refused(CommandError::VolumeNotOpen { volume_id, state: v.state });
    }
    if holder.is_empty() {
        return refused(CommandError::BadRequest { detail: "a lease needs a holder".into() });
    }
    let epoch = match &v.lease {
        Some(l) if l.expires_unix_ms >= now_unix_ms => {
            return refused(CommandError::StaleLease {
                volume_id,
                given_epoch: l.epoch + 1,
                current_epoch: Some(l.epoch),
                expired: false,
            });
        }
        Some(l) => l.epoch + 1,
        None => {
            // Open volumes always carry their lease; without one the epoch to fence with
            // is unknown, so nothing is handed out.
            return refused(CommandError::BadRequest { detail: format!("volume {volume_id} has no lease") });
        }
    };
    v.lease = Some(Lease { epoch, holder: holder.to_string(), expires_unix_ms: now_unix_ms + lease_ms });
    write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id), &v)?;
    Ok(Response::Volume { volume: v })
}

fn report_bad_extent(kv: &mut dyn Kv, volume_id: u64, disk_id: u64) -> Result<Response, StateError> {
    let Some(mut v) = volume(kv, volume_id)? else {
        return refused(CommandError::UnknownVolume { volume_id });
    };
    let holds = v.replicas.iter().chain(&v.fragments).any(|p| p.disk_id == disk_id);
    if !holds {
        return refused(CommandError::UnknownDisk {
            disk_id,
            detail: format!("holds no extent of volume {volume_id}"),
        });
    }
    if !v.bad_disks.contains(&disk_id) {
        v.bad_disks.push(disk_id);
        write_record(kv, Kind::Volume, &id_key(PREFIX_VOLUME, volume_id), &v)?;
    }
    Ok(Response::Volume { volume: v })
}
