//! Batches index commits: concurrent `CommitIndex` calls are merged into one Raft entry
//! (many index entries per entry), with a bounded queue and a few batches in flight.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::MasterRaft;
use crate::batching::Drain;
use crate::command::{Command, CommitCall, CommitOutcome, IndexCommit, RequestId, Response};
use crate::errors;

/// Calls waiting to be batched; further calls wait for room (backpressure).
pub const COMMIT_QUEUE_MAX: usize = 1024;
/// Index entries in one Raft entry at most.
pub const BATCH_ENTRIES_MAX: usize = 8192;
/// Raft entries of index commits in flight at once.
pub const BATCHES_IN_FLIGHT_MAX: usize = 4;

struct Pending {
    entries: Vec<IndexCommit>,
    /// Indices into `entries` of blocks of object uploads (no reference taken).
    unreferenced: Vec<u32>,
    request: Option<RequestId>,
    reply: oneshot::Sender<Result<Vec<CommitOutcome>, Status>>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub struct CommitBatcher {
    tx: mpsc::Sender<Pending>,
}

impl CommitBatcher {
    /// Starts the batching task for `raft`.
    pub fn start(raft: MasterRaft, volume_size_max_bytes: u64) -> CommitBatcher {
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE_MAX);
        tokio::spawn(run(raft, rx, volume_size_max_bytes));
        CommitBatcher { tx }
    }

    /// Commits entries (batched with other callers'); one outcome per entry. With a
    /// request id the call is applied at most once (a retry gets the first outcomes).
    /// The entries at `unreferenced` (ascending indices) take no reference (see
    /// [`Command::CommitIndexUnreferenced`]).
    pub async fn commit(
        &self,
        entries: Vec<IndexCommit>,
        unreferenced: Vec<u32>,
        request: Option<RequestId>,
    ) -> Result<Vec<CommitOutcome>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { entries, unreferenced, request, reply })
            .await
            .map_err(|_| errors::internal("commit batcher stopped"))?;
        rx.await.map_err(|_| errors::internal("commit batcher dropped the request"))?
    }
}

async fn run(raft: MasterRaft, rx: mpsc::Receiver<Pending>, volume_size_max_bytes: u64) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    let mut queue = Drain::new(rx);
    loop {
        let Some(first) = queue.first().await else { return };
        // Calls queue up while every batch slot is busy: the next batch takes them all.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let batch = queue.fill(first, usize::MAX, BATCH_ENTRIES_MAX, |p| p.entries.len());
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let entries: Vec<IndexCommit> = batch.iter().flat_map(|p| p.entries.iter().cloned()).collect();
            let now_unix_ms = crate::now_unix_ms();
            // Each call keeps its own id and outcome inside the one Raft entry; a batch of
            // calls without ids keeps the older form (no call list).
            let calls = if batch.iter().any(|p| p.request.is_some()) {
                batch
                    .iter()
                    .map(|p| CommitCall { request: p.request, entries: p.entries.len() as u32 })
                    .collect()
            } else {
                Vec::new()
            };
            let mut unreferenced = Vec::new();
            let mut first = 0u32;
            for p in &batch {
                unreferenced.extend(p.unreferenced.iter().map(|i| first + i));
                first += p.entries.len() as u32;
            }
            // Batches of referenced entries only keep the older command.
            let command = if unreferenced.is_empty() {
                Command::CommitIndex { entries, volume_size_max_bytes, now_unix_ms, calls }
            } else {
                Command::CommitIndexUnreferenced {
                    entries,
                    unreferenced,
                    volume_size_max_bytes,
                    now_unix_ms,
                    calls,
                }
            };
            match raft.client_write(command).await {
                Ok(written) => match written.data {
                    Response::Committed { outcomes } => {
                        let mut outcomes = outcomes.into_iter();
                        for p in batch {
                            let mine: Vec<CommitOutcome> = outcomes.by_ref().take(p.entries.len()).collect();
                            let _ = p.reply.send(Ok(mine));
                        }
                    }
                    other => {
                        for p in batch {
                            let _ =
                                p.reply.send(Err(errors::internal(format!("unexpected response {other:?}"))));
                        }
                    }
                },
                Err(e) => {
                    let status = errors::raft_error(&e);
                    for p in batch {
                        let _ = p.reply.send(Err(status.clone()));
                    }
                }
            }
        });
    }
}
