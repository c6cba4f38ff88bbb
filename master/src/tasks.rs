//! The task queue: work the master's planners hand to volume servers (encode a sealed
//! volume now; reconstruct, copy and delete as the repair and GC planners arrive). Tasks
//! are claimed with an expiring claim, so a volume server that dies mid-task does not hold
//! it forever; a failed attempt is retried until `TASK_ATTEMPTS_MAX`.

use crate::codec::Kind;
use crate::command::{CommandError, Response};
use crate::place_check::{check_fragment_places, check_place};
use crate::state::{self, Kv, StateError, read_record, write_record};
use crate::types::{Counters, ExtentPlace, RECORD_VERSION, VolumeRecord, VolumeState};

/// Prefix of task records (then the task id, big-endian).
pub const PREFIX_TASK: u8 = b't';
/// Prefix of a node's queue: the ids of its open tasks (then the node id, big-endian).
pub const PREFIX_QUEUE: u8 = b'q';
/// Prefix of a delete parked while its disk is failed (then the disk id and the task id,
/// big-endian; no value): it is in no node's queue (it could only fail, and would hold a
/// queue slot) until the disk comes back.
pub const PREFIX_PARKED: u8 = b'p';
/// Prefix of a sealed volume's encode task id (then the volume id, big-endian): at most
/// one encode per volume, found without scanning the queues.
pub const PREFIX_ENCODE: u8 = b'e';
/// Attempts before a task is given up (its planner plans it again once the last attempt's
/// claim would have ended).
pub const TASK_ATTEMPTS_MAX: u32 = 5;
/// Open tasks one node may have queued; planners wait beyond it.
pub const NODE_QUEUE_MAX: usize = 10_000;
/// Tasks one claim returns at most.
pub const CLAIM_MAX: u32 = 64;

pub use crate::types::{Part, TaskKind, TaskRecord, TaskState, TaskType};

fn task_key(task_id: u64) -> [u8; 9] {
    crate::state::id_key(PREFIX_TASK, task_id)
}

/// The key of one task in a node's queue: `'q'`, the node id and the task id, both
/// big-endian (one key per task: a change to a queue writes one key, never the queue).
fn queue_key(node_id: u64, task_id: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&crate::state::id_key(PREFIX_QUEUE, node_id));
    key[9..].copy_from_slice(&task_id.to_be_bytes());
    key
}

/// The ids of `node_id`'s open tasks, oldest first.
fn queue(kv: &dyn Kv, node_id: u64) -> Result<Vec<u64>, StateError> {
    let prefix = crate::state::id_key(PREFIX_QUEUE, node_id);
    kv.scan(&prefix, NODE_QUEUE_MAX + 1)?
        .into_iter()
        .map(|(key, _)| match key.get(9..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
            Some(id) => Ok(u64::from_be_bytes(id)),
            None => Err(StateError::Corrupt { key: hex::encode(&key), detail: "not a queue key".into() }),
        })
        .collect()
}

fn queue_add(kv: &mut dyn Kv, node_id: u64, task_id: u64) {
    kv.put(&queue_key(node_id, task_id), Vec::new());
}

fn queue_remove(kv: &mut dyn Kv, node_id: u64, task_id: u64) {
    kv.delete(&queue_key(node_id, task_id));
}

/// The key of a parked delete: `'p'`, the disk id and the task id, both big-endian.
fn parked_key(disk_id: u64, task_id: u64) -> [u8; 17] {
    let mut key = [0u8; 17];
    key[..9].copy_from_slice(&crate::state::id_key(PREFIX_PARKED, disk_id));
    key[9..].copy_from_slice(&task_id.to_be_bytes());
    key
}

/// The ids of the deletes parked on `disk_id`, at most `limit`.
fn parked(kv: &dyn Kv, disk_id: u64, limit: usize) -> Result<Vec<u64>, StateError> {
    let prefix = crate::state::id_key(PREFIX_PARKED, disk_id);
    kv.scan(&prefix, limit)?
        .into_iter()
        .map(|(key, _)| match key.get(9..).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
            Some(id) => Ok(u64::from_be_bytes(id)),
            None => Err(StateError::Corrupt { key: hex::encode(&key), detail: "not a parked key".into() }),
        })
        .collect()
}

/// Moves the deletes parked on `disk_id` (back up) into their node's queue, as far as the
/// queue has room; the rest wait for the next heartbeat.
pub(crate) fn unpark(kv: &mut dyn Kv, node_id: u64, disk_id: u64) -> Result<(), StateError> {
    if parked(kv, disk_id, 1)?.is_empty() {
        return Ok(());
    }
    let room = NODE_QUEUE_MAX.saturating_sub(queue(kv, node_id)?.len());
    for task_id in parked(kv, disk_id, room)? {
        kv.delete(&parked_key(disk_id, task_id));
        queue_add(kv, node_id, task_id);
    }
    Ok(())
}

/// Every delete parked on `disk_id` (a node being removed).
pub(crate) fn parked_tasks(kv: &dyn Kv, disk_id: u64) -> Result<Vec<TaskRecord>, StateError> {
    let mut out = Vec::new();
    for task_id in parked(kv, disk_id, usize::MAX)? {
        if let Some(task) = task(kv, task_id)? {
            out.push(task);
        }
    }
    Ok(out)
}

fn encode_key(volume_id: u64) -> [u8; 9] {
    crate::state::id_key(PREFIX_ENCODE, volume_id)
}

/// The task record `task_id`, if queued.
pub fn task(kv: &dyn Kv, task_id: u64) -> Result<Option<TaskRecord>, StateError> {
    read_record(kv, Kind::Task, &task_key(task_id))
}

/// The id of the volume's encode task (pending, claimed or failed), if one is indexed.
pub fn encode_task_id(kv: &dyn Kv, volume_id: u64) -> Result<Option<u64>, StateError> {
    read_record(kv, Kind::EncodeTask, &encode_key(volume_id))
}

/// Queues the encode of a sealed volume on `node_id` (a holder of one of its replicas)
/// and indexes it under the volume.
pub fn enqueue_encode(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: u64,
    volume_id: u64,
    fragments: Vec<ExtentPlace>,
) -> Result<Option<u64>, StateError> {
    let queued = enqueue(kv, c, node_id, TaskKind::Encode { volume_id, fragments })?;
    if let Some(task_id) = queued {
        write_record(kv, Kind::EncodeTask, &encode_key(volume_id), &task_id)?;
    }
    Ok(queued)
}

/// Moves an open task to `node_id`'s queue (a full queue keeps it where it is).
fn move_task(kv: &mut dyn Kv, task: &mut TaskRecord, node_id: u64) -> Result<(), StateError> {
    if task.node_id == node_id {
        return Ok(());
    }
    if queue(kv, node_id)?.len() >= NODE_QUEUE_MAX {
        return Ok(());
    }
    queue_remove(kv, task.node_id, task.task_id);
    queue_add(kv, node_id, task.task_id);
    task.node_id = node_id;
    Ok(())
}

/// Every task queued for `node_id` (a node being removed).
pub(crate) fn node_tasks(kv: &dyn Kv, node_id: u64) -> Result<Vec<TaskRecord>, StateError> {
    let mut out = Vec::new();
    for task_id in queue(kv, node_id)? {
        if let Some(task) = task(kv, task_id)? {
            out.push(task);
        }
    }
    Ok(out)
}

/// Removes a task from the queue and the state (counted as neither done nor failed).
/// Every task of volume `volume_id` (a scan of all tasks: bounded by the node queues).
pub(crate) fn volume_tasks(kv: &dyn Kv, volume_id: u64) -> Result<Vec<TaskRecord>, StateError> {
    let mut out = Vec::new();
    for (key, value) in kv.scan(&[PREFIX_TASK], usize::MAX)? {
        let task: TaskRecord = state::decode_record(Kind::Task, &key, &value)?;
        if task.kind.volume_id() == volume_id {
            out.push(task);
        }
    }
    Ok(out)
}

pub(crate) fn drop_task(kv: &mut dyn Kv, c: &mut Counters, task: &TaskRecord) -> Result<(), StateError> {
    kv.delete(&task_key(task.task_id));
    queue_remove(kv, task.node_id, task.task_id);
    if let TaskKind::Delete { extent, .. } = &task.kind {
        kv.delete(&parked_key(extent.disk_id, task.task_id));
    }
    if task.state == TaskState::Failed {
        // Replaced by a new plan: no longer a failure waiting.
        c.tasks_failed = c.tasks_failed.saturating_sub(1);
    } else {
        c.tasks_open = c.tasks_open.saturating_sub(1);
    }
    if let TaskKind::Encode { volume_id, .. } = task.kind
        && encode_task_id(kv, volume_id)? == Some(task.task_id)
    {
        kv.delete(&encode_key(volume_id));
    }
    Ok(())
}

/// The replica holder after `node_id` in the volume's replica order (wrapping), so that
/// a failed encode is tried next by another holder; `node_id` when it is the only one.
fn next_holder(v: &VolumeRecord, node_id: u64) -> u64 {
    let mut nodes: Vec<u64> = Vec::new();
    for r in &v.replicas {
        if !nodes.contains(&r.node_id) {
            nodes.push(r.node_id);
        }
    }
    match nodes.iter().position(|n| *n == node_id) {
        Some(i) => nodes[(i + 1) % nodes.len()],
        None => nodes.first().copied().unwrap_or(node_id),
    }
}

/// (Re)plans a sealed volume's encode: `node_id`, which must hold one of its replicas,
/// runs it onto `fragments`. `replaces_task` is the encode task the planner saw (none: it
/// saw none); it is replaced unless its claim is still running. Anything else is refused,
/// so that a volume never has two encodes queued.
pub fn plan_encode(
    kv: &mut dyn Kv,
    c: &mut Counters,
    volume_id: u64,
    node_id: u64,
    fragments: &[ExtentPlace],
    replaces_task: Option<u64>,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let Some(v) = state::volume(kv, volume_id)? else {
        return Ok(Response::Refused { error: CommandError::UnknownVolume { volume_id } });
    };
    if v.state != VolumeState::Sealed {
        return refused(format!("volume {volume_id} is {:?}, not sealed", v.state));
    }
    if !v.replicas.iter().any(|r| r.node_id == node_id) {
        return refused(format!("node {node_id} holds no replica of volume {volume_id}"));
    }
    if let Some(error) = check_fragment_places(kv, &v, fragments)? {
        return Ok(Response::Refused { error });
    }
    let indexed = encode_task_id(kv, volume_id)?;
    match replaces_task {
        None if indexed.is_some() => {
            return refused(format!("volume {volume_id} already has encode task {indexed:?}"));
        }
        None => {}
        Some(task_id) => {
            let Some(old) = task(kv, task_id)? else {
                return refused(format!("task {task_id} is not queued (done already?)"));
            };
            if old.kind.volume_id() != volume_id || !matches!(old.kind, TaskKind::Encode { .. }) {
                return refused(format!("task {task_id} is not the encode of volume {volume_id}"));
            }
            if old.state == TaskState::Claimed && old.claimed_until_unix_ms >= now_unix_ms {
                return refused(format!("task {task_id} is claimed by node {}", old.node_id));
            }
            drop_task(kv, c, &old)?;
        }
    }
    match enqueue_encode(kv, c, node_id, volume_id, fragments.to_vec())? {
        Some(task_id) => match task(kv, task_id)? {
            Some(task) => Ok(Response::TaskQueued { task }),
            None => {
                Err(StateError::Corrupt { key: format!("task {task_id}"), detail: "just written".into() })
            }
        },
        None => refused(format!("the task queue of node {node_id} is full")),
    }
}

/// Queues a task for `node_id` (planners call this while applying their commands).
pub fn enqueue(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: u64,
    kind: TaskKind,
) -> Result<Option<u64>, StateError> {
    if queue(kv, node_id)?.len() >= NODE_QUEUE_MAX {
        return Ok(None);
    }
    let task_id = new_task(kv, c, node_id, kind)?;
    queue_add(kv, node_id, task_id);
    Ok(Some(task_id))
}

/// Writes a new pending task for `node_id` (in no queue yet); its id.
fn new_task(kv: &mut dyn Kv, c: &mut Counters, node_id: u64, kind: TaskKind) -> Result<u64, StateError> {
    c.next_task_id = c.next_task_id.max(1);
    let task_id = c.next_task_id;
    c.next_task_id += 1;
    c.tasks_open += 1;
    let task = TaskRecord {
        v: RECORD_VERSION,
        task_id,
        kind,
        node_id,
        state: TaskState::Pending,
        attempts: 0,
        claimed_until_unix_ms: 0,
        detail: String::new(),
    };
    write_record(kv, Kind::Task, &task_key(task_id), &task)?;
    Ok(task_id)
}

/// Most task kinds one pull may defer (there are four kinds).
pub const DEFERRED_KINDS_MAX: usize = 16;

/// Whether `task` was given up (every attempt failed) and still waits before its planner
/// plans it again: until its last attempt's claim would have ended (`TASK_CLAIM_MS` after
/// that attempt began), so that a cause that goes away heals without an operator, and
/// one that stays costs `TASK_ATTEMPTS_MAX` attempts per claim period.
pub fn given_up_and_waiting(task: &TaskRecord, now_unix_ms: u64) -> bool {
    task.state == TaskState::Failed && task.claimed_until_unix_ms >= now_unix_ms
}

/// The pause before a task whose attempt failed is handed out again to the same node:
/// 2 s after the first failed attempt began, doubling, at most a minute (attempts 1-4:
/// 2, 4, 8, 16 s), so that a fault lasting seconds (a source restarting, a peer's
/// deadline) does not use up every attempt at once (seen: five in 20 ms).
pub fn retry_pause_ms(attempts: u32) -> u64 {
    const FIRST_MS: u64 = 2_000;
    const MAX_MS: u64 = 60_000;
    FIRST_MS.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX_MS)
}

/// When a pending task whose last attempt failed (on its node or, an encode, on the
/// replica holder before) may be handed out again: that attempt's start (`claim_ms` before the claim end it keeps) plus
/// [`retry_pause_ms`]. `None` for any other task: a pending one goes at once.
pub fn retry_at_unix_ms(task: &TaskRecord, claim_ms: u64) -> Option<u64> {
    (task.state == TaskState::Pending && task.attempts > 0 && task.claimed_until_unix_ms > 0).then(|| {
        task.claimed_until_unix_ms.saturating_sub(claim_ms).saturating_add(retry_pause_ms(task.attempts))
    })
}

/// Whether `task` may be handed out now to a node that defers `deferred_kinds`, claims
/// lasting `claim_ms`. A pending task after a failed attempt keeps that attempt's claim
/// end (the attempt began `claim_ms` before it) and waits [`retry_pause_ms`] from its
/// beginning, wherever it was moved since (an encode goes to the next replica holder).
fn claimable(task: &TaskRecord, now_unix_ms: u64, claim_ms: u64, deferred_kinds: &[TaskType]) -> bool {
    let free = match task.state {
        TaskState::Pending => retry_at_unix_ms(task, claim_ms).is_none_or(|at| now_unix_ms >= at),
        TaskState::Claimed => task.claimed_until_unix_ms < now_unix_ms,
        TaskState::Failed => false,
    };
    free && !deferred_kinds.contains(&task.kind.task_type())
}

/// Whether `node_id` has a task it could claim now, leaving out the kinds it defers (read
/// on any replica, so that an idle volume server's poll costs no Raft write).
pub fn has_claimable(
    kv: &dyn Kv,
    node_id: u64,
    now_unix_ms: u64,
    claim_ms: u64,
    deferred_kinds: &[TaskType],
) -> Result<bool, StateError> {
    for task_id in queue(kv, node_id)? {
        let Some(task) = read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? else { continue };
        if claimable(&task, now_unix_ms, claim_ms, deferred_kinds) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Claims up to `max` pending (or expired-claim) tasks of `node_id`, oldest first, leaving
/// the kinds in `deferred_kinds` queued.
pub fn claim(
    kv: &mut dyn Kv,
    node_id: u64,
    max: u32,
    claim_ms: u64,
    now_unix_ms: u64,
    deferred_kinds: &[TaskType],
) -> Result<Response, StateError> {
    let mut claimed = Vec::new();
    for task_id in queue(kv, node_id)? {
        if claimed.len() >= max.min(CLAIM_MAX) as usize {
            break;
        }
        let Some(mut task) = read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? else { continue };
        if claimable(&task, now_unix_ms, claim_ms, deferred_kinds) {
            task.state = TaskState::Claimed;
            task.claimed_until_unix_ms = now_unix_ms + claim_ms;
            write_record(kv, Kind::Task, &task_key(task_id), &task)?;
            claimed.push(task);
        }
    }
    Ok(Response::Tasks { tasks: claimed })
}

/// Records a task's outcome: done tasks leave the queue; failed ones are retried until the
/// attempt limit, then kept as failed (until a planner plans it again), unless the placement changed under
/// them ([`overtaken`]): those leave the queue, counted neither done nor failed.
pub fn report(
    kv: &mut dyn Kv,
    c: &mut Counters,
    task_id: u64,
    node_id: u64,
    success: bool,
    detail: &str,
) -> Result<Response, StateError> {
    report_failing(kv, c, task_id, node_id, success, detail, GiveUp::AtTheLimit)
}

/// Whether a failed attempt may give its task up ([`report`]'s) or never does
/// ([`release_claims`]': its attempts stop one short of the limit).
#[derive(Clone, Copy, PartialEq, Eq)]
enum GiveUp {
    AtTheLimit,
    Never,
}

/// [`report`], a failure giving its task up only as `give_up` says.
fn report_failing(
    kv: &mut dyn Kv,
    c: &mut Counters,
    task_id: u64,
    node_id: u64,
    success: bool,
    detail: &str,
    give_up: GiveUp,
) -> Result<Response, StateError> {
    let Some(mut task) = read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? else {
        return Ok(Response::Refused {
            error: CommandError::BadRequest {
                detail: format!("task {task_id} is not queued (done already?)"),
            },
        });
    };
    if task.node_id != node_id {
        return Ok(Response::Refused {
            error: CommandError::BadRequest {
                detail: format!("task {task_id} belongs to node {}", task.node_id),
            },
        });
    }
    if success {
        complete(kv, c, &task.kind)?;
        if let TaskKind::Encode { volume_id, .. } = task.kind
            && encode_task_id(kv, volume_id)? == Some(task_id)
        {
            kv.delete(&encode_key(volume_id));
        }
        kv.delete(&task_key(task_id));
        queue_remove(kv, node_id, task_id);
        c.tasks_open = c.tasks_open.saturating_sub(1);
        c.tasks_done += 1;
        return Ok(Response::TaskReported { task: None });
    }
    let volume = state::volume(kv, task.kind.volume_id())?;
    if overtaken(volume.as_ref(), &task.kind) {
        // Nothing to retry: the placement it was planned against changed meanwhile (seen:
        // a replica copy planned while its volume could not be coded, the volume coded
        // before the copy ran, the copy then failing five times in 20 ms and counted as
        // a failure for an operator). The planners plan again from what is placed now;
        // whatever the attempt may have half written is deleted.
        drop_task(kv, c, &task)?;
        for (part, place) in targets(&task.kind) {
            if volume.as_ref().is_none_or(|v| !placed(v, part, &place)) {
                delete_later(kv, c, task.kind.volume_id(), part, place)?;
            }
        }
        return Ok(Response::TaskReported { task: None });
    }
    if let TaskKind::Delete { extent, .. } = &task.kind
        && state::disk(kv, extent.disk_id)?.is_some_and(|d| d.health == crate::types::DiskHealth::Failed)
    {
        // Its disk failed after it was queued: parked like a delete queued while the disk
        // is failed (see PREFIX_PARKED), not retried into a failure for good (deletes are
        // never planned again), until the disk comes back.
        queue_remove(kv, task.node_id, task.task_id);
        kv.put(&parked_key(extent.disk_id, task.task_id), Vec::new());
        task.state = TaskState::Pending;
        task.claimed_until_unix_ms = 0;
        task.detail = detail.chars().take(1024).collect();
        write_record(kv, Kind::Task, &task_key(task_id), &task)?;
        return Ok(Response::TaskReported { task: Some(task) });
    }
    task.attempts = match give_up {
        GiveUp::AtTheLimit => task.attempts + 1,
        GiveUp::Never => (task.attempts + 1).min(TASK_ATTEMPTS_MAX - 1),
    };
    task.detail = detail.chars().take(1024).collect();
    if task.attempts >= TASK_ATTEMPTS_MAX {
        // The last attempt's claim end stays: the planners plan a given-up task again
        // once it has passed (`TASK_CLAIM_MS` after that attempt began).
        task.state = TaskState::Failed;
        c.tasks_open = c.tasks_open.saturating_sub(1);
        c.tasks_failed += 1;
    } else {
        task.state = TaskState::Pending;
        // The executor tried every replica it could read; what is left to vary is the
        // node that runs the encode, so the next attempt goes to the next holder.
        if let TaskKind::Encode { volume_id, .. } = task.kind
            && let Some(v) = state::volume(kv, volume_id)?
        {
            let next = next_holder(&v, task.node_id);
            move_task(kv, &mut task, next)?;
        }
        // The failed attempt's claim end stays (see `claimable`: the retry waits for its
        // pause), on this node or the next holder: a failure the holders share (a target
        // not reachable yet: seen after a whole cell restarted at new addresses, each
        // holder's view of them up to 2 s old) would otherwise use up every attempt on
        // the holders in turn within a second.
    }
    write_record(kv, Kind::Task, &task_key(task_id), &task)?;
    Ok(Response::TaskReported { task: Some(task) })
}

/// What a released claim's attempt reports ([`release_claims`]).
pub const RELEASED_AT_START_DETAIL: &str =
    "its node's process restarted while it held the claim (the attempt's outcome is unknown)";

/// Reports every task of `node_id`'s queue that is claimed as failed, as [`report`] does
/// ([`crate::command::Command::ClaimTasksAfterStart`]: the node's process restarted, so
/// none of them is running), except that a release never gives a task up: its attempts
/// stop one short of [`TASK_ATTEMPTS_MAX`] (a node restarting for reasons of its own would
/// otherwise give up its deletes, which are never planned again). Returns how many.
pub(crate) fn release_claims(kv: &mut dyn Kv, c: &mut Counters, node_id: u64) -> Result<usize, StateError> {
    let mut released = 0;
    for task_id in queue(kv, node_id)? {
        let Some(task) = read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? else { continue };
        if task.state == TaskState::Claimed {
            report_failing(kv, c, task_id, node_id, false, RELEASED_AT_START_DETAIL, GiveUp::Never)?;
            released += 1;
        }
    }
    Ok(released)
}

/// Hands given-up task `task_id` back to its node's queue, pending, with its attempts
/// anew ([`Command::RetryTask`]): an operator mended what failed it (below apply version
/// [`crate::apply_version::RETRY_TASK`], `apply` refuses the command before this). Refused
/// for a task that is not queued, not given up, no longer needed or on a down node.
///
/// [`Command::RetryTask`]: crate::command::Command::RetryTask
pub fn retry(kv: &mut dyn Kv, c: &mut Counters, task_id: u64) -> Result<Response, StateError> {
    let refused = |detail: String| Ok(Response::Refused { error: CommandError::BadRequest { detail } });
    let Some(mut task) = read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? else {
        return refused(format!("task {task_id} is not queued (done, or dropped as no longer needed)"));
    };
    if task.state != TaskState::Failed {
        return refused(format!(
            "task {task_id} is {}, not given up: its node runs it",
            if task.state == TaskState::Pending { "pending" } else { "claimed" }
        ));
    }
    // A task its volume no longer needs (coded since, moved on, reclaimed) would only be
    // dropped by its executor's report; one on a down node would wait for it.
    if overtaken(state::volume(kv, task.kind.volume_id())?.as_ref(), &task.kind) {
        return refused(format!("task {task_id} is no longer needed: its volume's placement moved on"));
    }
    if state::node(kv, task.node_id)?.is_some_and(|n| n.state == crate::types::NodeState::Down) {
        return refused(format!(
            "task {task_id}'s node {} is down: repair rebuilds what it held elsewhere",
            task.node_id
        ));
    }
    // The last error stays, for status, until an attempt replaces it.
    task.state = TaskState::Pending;
    task.attempts = 0;
    task.claimed_until_unix_ms = 0;
    c.tasks_failed = c.tasks_failed.saturating_sub(1);
    c.tasks_open += 1;
    write_record(kv, Kind::Task, &task_key(task_id), &task)?;
    Ok(Response::TaskQueued { task })
}

/// Whether `kind` no longer applies to its volume (`None`: reclaimed): an encode of a
/// volume no longer sealed, a repair of an extent no longer placed where it says, a
/// delete of an extent placed there again.
fn overtaken(volume: Option<&VolumeRecord>, kind: &TaskKind) -> bool {
    let Some(v) = volume else {
        // A delete of a reclaimed volume's extent is still to do (the executor deletes
        // what no volume names); anything else has nothing left to work on.
        return !matches!(kind, TaskKind::Delete { .. });
    };
    match kind {
        TaskKind::Encode { .. } => v.state != VolumeState::Sealed,
        TaskKind::Reconstruct { index, replaces, .. } => {
            v.state != VolumeState::Coded || !placed(v, Part::Fragment { index: *index }, replaces)
        }
        TaskKind::Copy { part: Part::Replica, replaces, .. } => {
            v.state != VolumeState::Sealed || !placed(v, Part::Replica, replaces)
        }
        TaskKind::Copy { part, replaces, .. } => !placed(v, *part, replaces),
        TaskKind::Delete { part, extent, .. } => placed(v, *part, extent),
    }
}

/// The extents a task writes (which an attempt may leave half written).
fn targets(kind: &TaskKind) -> Vec<(Part, ExtentPlace)> {
    match kind {
        TaskKind::Encode { fragments, .. } => fragments
            .iter()
            .enumerate()
            .map(|(index, place)| (Part::Fragment { index: index as u32 }, *place))
            .collect(),
        TaskKind::Reconstruct { index, target, .. } => vec![(Part::Fragment { index: *index }, *target)],
        TaskKind::Copy { part, target, .. } => vec![(*part, *target)],
        TaskKind::Delete { .. } => Vec::new(),
    }
}

fn refused(detail: String) -> Result<Response, StateError> {
    Ok(Response::Refused { error: CommandError::BadRequest { detail } })
}

/// Whether the volume's current placement names `place` for `part`.
fn placed(v: &VolumeRecord, part: Part, place: &ExtentPlace) -> bool {
    match part {
        Part::Replica => v.state != VolumeState::Coded && v.replicas.contains(place),
        Part::Fragment { index } => v.fragments.get(index as usize) == Some(place),
    }
}

/// Whether the volume holds any extent on `disk_id`.
fn holds_disk(v: &VolumeRecord, disk_id: u64) -> bool {
    v.replicas.iter().chain(&v.fragments).any(|p| p.disk_id == disk_id)
}

/// Whether a slot of the volume other than slot `slot` of `part`'s kind (replicas while
/// the volume is replicated, fragments once coded) names `disk_id`. A repair that
/// finishes onto such a disk commits nothing: two extents of one volume on one disk would
/// be lost together. Queueing checks the placement of its moment only, so two repairs of
/// one volume queued before either finished could name the same disk; the second to
/// finish is the one overtaken.
fn held_by_another_slot(v: &VolumeRecord, part: Part, slot: usize, disk_id: u64) -> bool {
    let slots = match part {
        Part::Replica => &v.replicas,
        Part::Fragment { .. } => &v.fragments,
    };
    slots.iter().enumerate().any(|(i, p)| i != slot && p.disk_id == disk_id)
}

/// Validates a task against the current state and queues it on the node that runs it.
pub fn enqueue_checked(kv: &mut dyn Kv, c: &mut Counters, kind: &TaskKind) -> Result<Response, StateError> {
    let volume_id = kind.volume_id();
    let Some(v) = state::volume(kv, volume_id)? else {
        return Ok(Response::Refused { error: CommandError::UnknownVolume { volume_id } });
    };
    let check_target = |kv: &dyn Kv, target: &ExtentPlace| -> Result<Option<String>, StateError> {
        if holds_disk(&v, target.disk_id) {
            return Ok(Some(format!(
                "disk {} already holds an extent of volume {volume_id}",
                target.disk_id
            )));
        }
        Ok(check_place(kv, target)?.map(|e| e.to_string()))
    };
    let node_id = match kind {
        TaskKind::Encode { .. } => {
            return refused("encode tasks are queued by sealing the volume".to_string());
        }
        TaskKind::Reconstruct { index, target, replaces, .. } => {
            if v.state != VolumeState::Coded || !placed(&v, Part::Fragment { index: *index }, replaces) {
                return refused(format!(
                    "volume {volume_id} has no fragment {index} on disk {}",
                    replaces.disk_id
                ));
            }
            if let Some(detail) = check_target(kv, target)? {
                return refused(detail);
            }
            target.node_id
        }
        TaskKind::Copy { part, source, target, replaces, .. } => {
            if *part == Part::Replica && v.state != VolumeState::Sealed {
                return refused(format!("replicas of volume {volume_id} are copied only while it is sealed"));
            }
            if !placed(&v, *part, replaces) || !(placed(&v, *part, source) || source == replaces) {
                return refused(format!("volume {volume_id} has no such {} to copy or replace", part.name()));
            }
            if let Some(detail) = check_target(kv, target)? {
                return refused(detail);
            }
            target.node_id
        }
        TaskKind::Delete { part, extent, .. } => {
            if placed(&v, *part, extent) {
                return refused(format!(
                    "volume {volume_id} still places its {} on disk {}",
                    part.name(),
                    extent.disk_id
                ));
            }
            extent.node_id
        }
    };
    if state::node(kv, node_id)?.is_none() {
        return Ok(Response::Refused { error: CommandError::UnknownNode { node_id } });
    }
    match enqueue(kv, c, node_id, kind.clone())? {
        Some(task_id) => match read_record::<TaskRecord>(kv, Kind::Task, &task_key(task_id))? {
            Some(task) => Ok(Response::TaskQueued { task }),
            None => {
                Err(StateError::Corrupt { key: format!("task {task_id}"), detail: "just written".into() })
            }
        },
        None => refused(format!("the task queue of node {node_id} is full")),
    }
}

/// Queues a repair the planner chose (see [`Command::PlanRepair`]): checked like any
/// queued task; `replaces_task`, an earlier repair of the same volume whose node died or
/// which gave up, is dropped once the new one is queued, and the extent it may have half
/// written (never placed: placement changes only when a repair reports success) is
/// queued for deletion.
///
/// [`Command::PlanRepair`]: crate::command::Command::PlanRepair
pub fn plan_repair(
    kv: &mut dyn Kv,
    c: &mut Counters,
    kind: &TaskKind,
    replaces_task: Option<u64>,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    if !matches!(kind, TaskKind::Reconstruct { .. } | TaskKind::Copy { .. }) {
        return refused(format!("a {} task is not a repair", kind.name()));
    }
    let old = match replaces_task {
        None => None,
        Some(task_id) => {
            let Some(old) = task(kv, task_id)? else {
                return refused(format!("task {task_id} is not queued (done already?)"));
            };
            if old.kind.volume_id() != kind.volume_id()
                || !matches!(old.kind, TaskKind::Reconstruct { .. } | TaskKind::Copy { .. })
            {
                return refused(format!("task {task_id} is not a repair of volume {}", kind.volume_id()));
            }
            let executor_down =
                state::node(kv, old.node_id)?.is_none_or(|n| n.state == crate::types::NodeState::Down);
            if old.state == TaskState::Claimed && old.claimed_until_unix_ms >= now_unix_ms && !executor_down {
                return refused(format!("task {task_id} is claimed by node {}", old.node_id));
            }
            Some(old)
        }
    };
    let response = enqueue_checked(kv, c, kind)?;
    if let (Response::TaskQueued { .. }, Some(old)) = (&response, old) {
        drop_task(kv, c, &old)?;
        let written = match old.kind {
            TaskKind::Reconstruct { volume_id, index, target, .. } => {
                Some((volume_id, Part::Fragment { index }, target))
            }
            TaskKind::Copy { volume_id, part, target, .. } => Some((volume_id, part, target)),
            _ => None,
        };
        if let Some((volume_id, part, target)) = written
            && let Some(v) = state::volume(kv, volume_id)?
            && !placed(&v, part, &target)
        {
            delete_later(kv, c, volume_id, part, target)?;
        }
    }
    Ok(response)
}

/// Queues the delete of an extent the placement does not name (garbage of a superseded
/// task, or the extent a repair replaced).
pub(crate) fn delete_later(
    kv: &mut dyn Kv,
    c: &mut Counters,
    volume_id: u64,
    part: Part,
    extent: ExtentPlace,
) -> Result<(), StateError> {
    let kind = TaskKind::Delete { volume_id, part, extent };
    if state::disk(kv, extent.disk_id)?.is_some_and(|d| d.health == crate::types::DiskHealth::Failed) {
        // Parked until the disk comes back (see PREFIX_PARKED).
        let task_id = new_task(kv, c, extent.node_id, kind)?;
        kv.put(&parked_key(extent.disk_id, task_id), Vec::new());
        return Ok(());
    }
    enqueue(kv, c, extent.node_id, kind)?;
    Ok(())
}

/// Applies what a finished task means for the placement: the master's commit point for
/// encodes, repairs and moves (generation + 1). A task overtaken by other changes commits
/// nothing, and the extent it made is queued for deletion.
fn complete(kv: &mut dyn Kv, c: &mut Counters, kind: &TaskKind) -> Result<(), StateError> {
    let volume_id = kind.volume_id();
    let Some(mut v) = state::volume(kv, volume_id)? else { return Ok(()) };
    match kind {
        TaskKind::Encode { fragments, .. } => {
            if v.state == VolumeState::Sealed {
                let replicas = std::mem::take(&mut v.replicas);
                v.state = VolumeState::Coded;
                v.fragments = fragments.clone();
                v.generation += 1;
                v.bad_disks.retain(|d| fragments.iter().any(|f| f.disk_id == *d));
                c.volumes_by_state[1] = c.volumes_by_state[1].saturating_sub(1);
                c.volumes_by_state[2] += 1;
                state::put_volume(kv, &v)?;
                for replica in replicas {
                    delete_later(kv, c, volume_id, Part::Replica, replica)?;
                }
            } else if v.fragments != *fragments {
                for (index, place) in fragments.iter().enumerate() {
                    let part = Part::Fragment { index: index as u32 };
                    if !placed(&v, part, place) {
                        delete_later(kv, c, volume_id, part, *place)?;
                    }
                }
            }
        }
        TaskKind::Reconstruct { index, target, replaces, .. } => {
            let part = Part::Fragment { index: *index };
            if v.state == VolumeState::Coded
                && placed(&v, part, replaces)
                && !held_by_another_slot(&v, part, *index as usize, target.disk_id)
            {
                v.fragments[*index as usize] = *target;
                v.generation += 1;
                v.bad_disks.retain(|d| *d != replaces.disk_id);
                state::put_volume(kv, &v)?;
                delete_later(kv, c, volume_id, part, *replaces)?;
            } else if !placed(&v, part, target) {
                delete_later(kv, c, volume_id, part, *target)?;
            }
        }
        TaskKind::Copy { part, target, replaces, .. } => {
            let slot = match part {
                Part::Replica if v.state == VolumeState::Sealed => {
                    v.replicas.iter().position(|p| p == replaces)
                }
                Part::Fragment { index } if placed(&v, *part, replaces) => Some(*index as usize),
                _ => None,
            }
            .filter(|i| !held_by_another_slot(&v, *part, *i, target.disk_id));
            match slot {
                Some(i) => {
                    match part {
                        Part::Replica => v.replicas[i] = *target,
                        Part::Fragment { .. } => v.fragments[i] = *target,
                    }
                    v.generation += 1;
                    v.bad_disks.retain(|d| *d != replaces.disk_id);
                    state::put_volume(kv, &v)?;
                    if replaces != target {
                        delete_later(kv, c, volume_id, *part, *replaces)?;
                    }
                }
                None if !placed(&v, *part, target) => delete_later(kv, c, volume_id, *part, *target)?,
                None => {}
            }
        }
        TaskKind::Delete { .. } => {}
    }
    Ok(())
}
