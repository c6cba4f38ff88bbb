//! The task queue: work the master's planners hand to volume servers (encode a sealed
//! volume now; reconstruct, copy and delete as the repair and GC planners arrive). Tasks
//! are claimed with an expiring claim, so a volume server that dies mid-task does not hold
//! it forever; a failed attempt is retried until `TASK_ATTEMPTS_MAX`.

use serde::{Deserialize, Serialize};

use crate::apply::{Kv, StateError, read_json, write_json};
use crate::command::{CommandError, Response};
use crate::types::{Counters, RECORD_VERSION};

/// Prefix of task records (then the task id, big-endian).
pub const PREFIX_TASK: u8 = b't';
/// Prefix of a node's queue: the ids of its open tasks (then the node id, big-endian).
pub const PREFIX_QUEUE: u8 = b'q';
/// Attempts before a task is given up and left for an operator.
pub const TASK_ATTEMPTS_MAX: u32 = 5;
/// Open tasks one node may have queued; planners wait beyond it.
pub const NODE_QUEUE_MAX: usize = 10_000;
/// Tasks one claim returns at most.
pub const CLAIM_MAX: u32 = 64;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskKind {
    /// Encode a sealed volume into its fragments.
    Encode {
        /// The volume.
        volume_id: u64,
    },
}

impl TaskKind {
    /// Short name for the API.
    pub fn name(&self) -> &'static str {
        match self {
            TaskKind::Encode { .. } => "encode",
        }
    }

    /// The volume the task is about.
    pub fn volume_id(&self) -> u64 {
        match self {
            TaskKind::Encode { volume_id } => *volume_id,
        }
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its node to claim it.
    Pending,
    /// Claimed until `claimed_until_unix_ms`.
    Claimed,
    /// Given up after too many failures.
    Failed,
}

/// A task in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Encoding version.
    pub v: u32,
    /// Cell-unique id.
    pub task_id: u64,
    /// The work.
    pub kind: TaskKind,
    /// The volume server that is to do it.
    pub node_id: u64,
    /// Pending, claimed or failed.
    pub state: TaskState,
    /// Attempts reported failed so far.
    pub attempts: u32,
    /// End of the current claim.
    pub claimed_until_unix_ms: u64,
    /// The last failure's description.
    pub detail: String,
}

fn task_key(task_id: u64) -> [u8; 9] {
    crate::apply::id_key(PREFIX_TASK, task_id)
}

fn queue_key(node_id: u64) -> [u8; 9] {
    crate::apply::id_key(PREFIX_QUEUE, node_id)
}

fn queue(kv: &dyn Kv, node_id: u64) -> Result<Vec<u64>, StateError> {
    Ok(read_json(kv, &queue_key(node_id))?.unwrap_or_default())
}

/// Queues a task for `node_id` (planners call this while applying their commands).
pub fn enqueue(
    kv: &mut dyn Kv,
    c: &mut Counters,
    node_id: u64,
    kind: TaskKind,
) -> Result<Option<u64>, StateError> {
    let mut ids = queue(kv, node_id)?;
    if ids.len() >= NODE_QUEUE_MAX {
        return Ok(None);
    }
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
    write_json(kv, &task_key(task_id), &task)?;
    ids.push(task_id);
    write_json(kv, &queue_key(node_id), &ids)?;
    Ok(Some(task_id))
}

/// Claims up to `max` pending (or expired-claim) tasks of `node_id`, oldest first.
pub fn claim(
    kv: &mut dyn Kv,
    node_id: u64,
    max: u32,
    claim_ms: u64,
    now_unix_ms: u64,
) -> Result<Response, StateError> {
    let mut claimed = Vec::new();
    for task_id in queue(kv, node_id)? {
        if claimed.len() >= max.min(CLAIM_MAX) as usize {
            break;
        }
        let Some(mut task) = read_json::<TaskRecord>(kv, &task_key(task_id))? else { continue };
        let claimable = match task.state {
            TaskState::Pending => true,
            TaskState::Claimed => task.claimed_until_unix_ms < now_unix_ms,
            TaskState::Failed => false,
        };
        if claimable {
            task.state = TaskState::Claimed;
            task.claimed_until_unix_ms = now_unix_ms + claim_ms;
            write_json(kv, &task_key(task_id), &task)?;
            claimed.push(task);
        }
    }
    Ok(Response::Tasks { tasks: claimed })
}

/// Records a task's outcome: done tasks leave the queue; failed ones are retried until the
/// attempt limit, then kept as failed for an operator.
pub fn report(
    kv: &mut dyn Kv,
    c: &mut Counters,
    task_id: u64,
    node_id: u64,
    success: bool,
    detail: &str,
) -> Result<Response, StateError> {
    let Some(mut task) = read_json::<TaskRecord>(kv, &task_key(task_id))? else {
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
        kv.delete(&task_key(task_id));
        let mut ids = queue(kv, node_id)?;
        ids.retain(|id| *id != task_id);
        write_json(kv, &queue_key(node_id), &ids)?;
        c.tasks_open = c.tasks_open.saturating_sub(1);
        c.tasks_done += 1;
        return Ok(Response::TaskReported { task: None });
    }
    task.attempts += 1;
    task.detail = detail.chars().take(1024).collect();
    task.claimed_until_unix_ms = 0;
    if task.attempts >= TASK_ATTEMPTS_MAX {
        task.state = TaskState::Failed;
        c.tasks_open = c.tasks_open.saturating_sub(1);
        c.tasks_failed += 1;
    } else {
        task.state = TaskState::Pending;
    }
    write_json(kv, &task_key(task_id), &task)?;
    Ok(Response::TaskReported { task: Some(task) })
}
