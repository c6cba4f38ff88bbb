//! Batches index commits: concurrent `CommitIndex` calls are merged into one Raft entry
//! (many index entries per entry), with a bounded queue and a few batches in flight.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::MasterRaft;
use crate::apply::NS_BATCH_CALLS_MAX;
use crate::batching::Drain;
use crate::command::{
    Command, CommitCall, CommitOutcome, EntryVersion, IndexCommit, ObjectCall, RequestId, Response,
};
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
    /// Object versions to add with the entries (see [`Command::CommitObjects`]).
    versions: Vec<EntryVersion>,
    request: Option<RequestId>,
    reply: oneshot::Sender<Result<Committed, Status>>,
}

impl Pending {
    /// Its weight in a batch: entries plus what its versions name.
    fn weight(&self) -> usize {
        self.entries.len() + self.versions.iter().map(|v| v.op.weight()).sum::<usize>()
    }
}

/// A call's answer: one outcome per entry, one response per version (`Namespace` or
/// `Refused`).
#[derive(Debug)]
pub struct Committed {
    /// The entries' outcomes.
    pub outcomes: Vec<CommitOutcome>,
    /// The versions' responses.
    pub versions: Vec<Response>,
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
    /// [`Command::CommitIndexUnreferenced`]); `versions` are added in the same Raft entry
    /// after them (see [`Command::CommitObjects`]).
    pub async fn commit(
        &self,
        entries: Vec<IndexCommit>,
        unreferenced: Vec<u32>,
        versions: Vec<EntryVersion>,
        request: Option<RequestId>,
    ) -> Result<Committed, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { entries, unreferenced, versions, request, reply })
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
        let batch = queue.fill(first, NS_BATCH_CALLS_MAX, BATCH_ENTRIES_MAX, Pending::weight);
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
            let with_versions = batch.iter().any(|p| !p.versions.is_empty());
            // Batches of referenced entries only keep the older command; a batch with
            // object versions takes the command that carries them.
            let command = if with_versions {
                let calls = batch
                    .iter()
                    .map(|p| ObjectCall {
                        request: p.request,
                        entries: p.entries.len() as u32,
                        versions: p.versions.clone(),
                    })
                    .collect();
                Command::CommitObjects { entries, unreferenced, volume_size_max_bytes, now_unix_ms, calls }
            } else if unreferenced.is_empty() {
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
                Ok(written) => {
                    let (outcomes, versions) = match written.data {
                        Response::Committed { outcomes } => (outcomes, Vec::new()),
                        Response::CommittedObjects { outcomes, versions } => (outcomes, versions),
                        other => {
                            for p in batch {
                                let _ = p
                                    .reply
                                    .send(Err(errors::internal(format!("unexpected response {other:?}"))));
                            }
                            return;
                        }
                    };
                    let (mut outcomes, mut versions) = (outcomes.into_iter(), versions.into_iter());
                    for p in batch {
                        let outcomes: Vec<CommitOutcome> = outcomes.by_ref().take(p.entries.len()).collect();
                        let versions: Vec<Response> = versions.by_ref().take(p.versions.len()).collect();
                        let answer =
                            if outcomes.len() == p.entries.len() && versions.len() == p.versions.len() {
                                Ok(Committed { outcomes, versions })
                            } else {
                                Err(errors::internal("the commit's response is shorter than its calls"))
                            };
                        let _ = p.reply.send(answer);
                    }
                }
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
