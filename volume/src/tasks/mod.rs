//! The task executor: pulls the master's tasks for this node, runs at most
//! [`TASKS_IN_FLIGHT_MAX`] at once and reports each outcome. Every task is idempotent:
//! the master commits its effect when the success report is applied, and a task that
//! crashed half-way (its claim expires) or runs twice leaves a correct state.

mod copy;
mod defer;
mod delete;
mod encode;
mod reconstruct;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellar_proto::master as mpb;
use tokio::sync::{Notify, Semaphore, watch};
use tonic::Status;

use crate::TASKS_IN_FLIGHT_MAX;
use crate::errors::bad_request;
use crate::shared::Shared;

pub use defer::EncodeDefer;
pub use encode::encode_volume;

/// How long a task's outcome is offered to the masters (a leader election under load can
/// take seconds) before it is left to the claim's expiry: a report lost sooner would leave
/// a finished task claimed, and not done, for the whole claim (10 minutes). Every attempt
/// carries the same request id (one [`cellar_master_api::client::OnceSlot`]), so a report
/// the masters applied but whose answer was lost is not applied again (a failure counted
/// twice would spend two of the task's attempts).
const REPORT_RETRY_WINDOW: Duration = Duration::from_secs(60);
/// Longest pause between two report attempts.
const REPORT_BACKOFF_MAX: Duration = Duration::from_secs(2);

pub use cellar_volume_api::layout::{code_scheme, layout_of};

/// The status of a fragment stream that closed before all its bytes were sent.
pub(crate) async fn closed_sink_error(sink: crate::client::FragmentSink) -> Status {
    match sink.finish().await {
        Err(e) => e,
        Ok(_) => Status::internal("fragment stream closed early"),
    }
}

/// Runs one task; Ok carries a note for the report.
pub async fn execute(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    match task.kind() {
        mpb::TaskKind::Encode => encode::run(shared, task).await,
        mpb::TaskKind::Reconstruct => reconstruct::run(shared, task).await,
        mpb::TaskKind::Copy => copy::run(shared, task).await,
        mpb::TaskKind::Delete => delete::run(shared, task).await,
        mpb::TaskKind::Unspecified => Err(bad_request(format!("unknown task kind {}", task.kind))),
    }
}

/// Reports a task's outcome to the masters, retrying within [`REPORT_RETRY_WINDOW`]; a
/// server told to stop makes one attempt more at most (its report is worth a try, its
/// retries would hold the stop for up to the window).
async fn report(
    shared: &Shared,
    task_id: u64,
    outcome: &Result<String, Status>,
    stop: &mut watch::Receiver<bool>,
) {
    let (success, detail) = match outcome {
        Ok(note) => (true, note.clone()),
        Err(e) => (false, e.message().chars().take(1000).collect::<String>()),
    };
    let deadline = std::time::Instant::now() + REPORT_RETRY_WINDOW;
    let node_id = shared.node_id;
    let request = mpb::ReportTaskRequest { task_id, node_id, success, detail, request_id: None };
    let slot = shared.cluster.master().once_slot();
    for attempt in 1u64.. {
        let result = slot.call(request.clone(), |mut c, r| async move { c.report_task(r).await }).await;
        match result {
            Ok(_) => return,
            Err(e) if e.code().is_some() => {
                tracing::warn!(task = task_id, error = %e, "task report refused");
                return;
            }
            Err(e) => {
                let pause = Duration::from_millis(200 * attempt).min(REPORT_BACKOFF_MAX);
                if std::time::Instant::now() + pause > deadline {
                    tracing::warn!(task = task_id, attempt, error = %e, "task report given up: left to the claim's expiry");
                    return;
                }
                tracing::warn!(task = task_id, attempt, error = %e, "cannot report task yet");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stopped| *stopped) => {
                        tracing::warn!(task = task_id, attempt, "task report given up: the server is stopping; left to the claim's expiry");
                        return;
                    }
                }
            }
        }
    }
}

/// Pulls and runs tasks until `stop` turns true; encodes wait while the server is busy
/// with appends (see [`defer`]).
pub async fn run_executor(
    shared: Arc<Shared>,
    poll: Duration,
    encode_defer: EncodeDefer,
    mut stop: watch::Receiver<bool>,
) {
    let mut deferral = defer::Deferral::new(encode_defer);
    let slots = Arc::new(Semaphore::new(TASKS_IN_FLIGHT_MAX));
    let running: Arc<Mutex<HashSet<u64>>> = Arc::new(Mutex::new(HashSet::new()));
    let wake = Arc::new(Notify::new());
    // Until a poll is answered, what this node has claimed was claimed by a process before
    // this one (see `PullTasksRequest.first_since_start`), and the polls keep one request
    // id: one applied whose answer was lost is answered again with the tasks it claimed,
    // not applied a second time (which would count those tasks' attempts again).
    let mut first_poll = Some(shared.cluster.master().once_slot());
    // The tasks running, aborted when the executor stops: a server stopped and started
    // again in the same process hands its claims back with its first poll, so none of
    // them may still be running then.
    let mut executing = tokio::task::JoinSet::new();
    loop {
        if *stop.borrow() {
            executing.shutdown().await;
            return;
        }
        while executing.try_join_next().is_some() {}
        let now = std::time::Instant::now();
        let deferred_kinds: Vec<i32> =
            deferral.deferred_kinds(now, shared.metrics.appends.bytes()).iter().map(|&k| k.into()).collect();
        shared.metrics.set_encode_deferring(deferral.deferring());
        let free = slots.available_permits();
        if free > 0 {
            let node_id = shared.node_id;
            let request = mpb::PullTasksRequest {
                node_id,
                max: free as u32,
                deferred_kinds,
                request_id: None,
                first_since_start: first_poll.is_some(),
            };
            let op = |mut c: cellar_master_api::client::Grpc, r| async move { c.pull_tasks(r).await };
            let pulled = match &first_poll {
                Some(slot) => slot.call(request, op).await,
                None => shared.cluster.master().call_once(request, op).await,
            };
            match pulled {
                Ok(resp) => {
                    first_poll = None;
                    shared.repair_pace.set_rate(resp.repair_bytes_per_sec);
                    for task in resp.tasks {
                        if !running.lock().unwrap_or_else(|p| p.into_inner()).insert(task.task_id) {
                            continue;
                        }
                        let Ok(permit) = slots.clone().acquire_owned().await else { return };
                        let (shared, running, wake) = (shared.clone(), running.clone(), wake.clone());
                        let mut stop = stop.clone();
                        executing.spawn(async move {
                            tracing::info!(
                                task = task.task_id,
                                kind = task.kind().name(),
                                volume = task.volume_id,
                                "task started"
                            );
                            let started = std::time::Instant::now();
                            let outcome = execute(&shared, &task).await;
                            match &outcome {
                                Ok(note) => {
                                    tracing::info!(task = task.task_id, kind = task.kind().name(), volume = task.volume_id,
                                    secs = started.elapsed().as_secs_f64(), %note, "task done")
                                }
                                Err(e) => {
                                    tracing::warn!(task = task.task_id, kind = task.kind().name(), volume = task.volume_id,
                                    error = %e.message(), "task failed")
                                }
                            }
                            shared.metrics.tasks.record(outcome.is_ok(), 0);
                            report(&shared, task.task_id, &outcome, &mut stop).await;
                            running.lock().unwrap_or_else(|p| p.into_inner()).remove(&task.task_id);
                            drop(permit);
                            wake.notify_one();
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "task pull failed"),
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = wake.notified() => {}
        }
    }
}
