//! Batches namespace writes: concurrent `NsWrite` calls are merged into one Raft entry
//! ([`Command::NamespaceBatch`]), each call keeping its own request id and outcome, with
//! a bounded queue and a few batches in flight. One Raft entry (one log append, one
//! replication round, one state write) then carries many S3 puts and deletes.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::MasterRaft;
use crate::apply::NS_BATCH_CALLS_MAX;
use crate::batching::Drain;
use crate::command::{Command, NsCall, RequestId, Response};
use crate::errors;
use crate::ns_types::{NsOp, NsResult};

/// Calls waiting to be batched; further calls wait for room (backpressure).
pub const NS_QUEUE_MAX: usize = 4096;
/// Weight (operations plus the blocks and parts they name, [`NsOp::weight`]) of one
/// batch at most: bounds a Raft entry to a few MiB. A heavier call goes alone.
pub const NS_BATCH_WEIGHT_MAX: usize = 16_384;
/// Raft entries of namespace batches in flight at once.
pub const NS_BATCHES_IN_FLIGHT_MAX: usize = 4;

struct Pending {
    call: NsCall,
    reply: oneshot::Sender<Result<NsResult, Status>>,
}

/// Handle to the batching task.
#[derive(Clone)]
pub struct NsBatcher {
    tx: mpsc::Sender<Pending>,
}

impl NsBatcher {
    /// Starts the batching task for `raft`.
    pub fn start(raft: MasterRaft) -> NsBatcher {
        let (tx, rx) = mpsc::channel(NS_QUEUE_MAX);
        tokio::spawn(run(raft, rx));
        NsBatcher { tx }
    }

    /// Applies `op` (batched with other callers'): its outcome, or the status of its
    /// refusal. With a request id it is applied at most once (a retry gets the first
    /// outcome).
    pub async fn write(&self, op: NsOp, request: Option<RequestId>) -> Result<NsResult, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { call: NsCall { request, op }, reply })
            .await
            .map_err(|_| errors::internal("namespace batcher stopped"))?;
        rx.await.map_err(|_| errors::internal("namespace batcher dropped the request"))?
    }
}

/// The outcome a call's response stands for.
fn outcome(response: Response) -> Result<NsResult, Status> {
    match response {
        Response::Namespace { result } => Ok(result),
        Response::Refused { error } => Err(errors::command_error(&error)),
        other => Err(errors::internal(format!("unexpected response {other:?}"))),
    }
}

async fn run(raft: MasterRaft, rx: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(NS_BATCHES_IN_FLIGHT_MAX));
    let mut queue = Drain::new(rx);
    loop {
        let Some(first) = queue.first().await else { return };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let batch = queue.fill(first, NS_BATCH_CALLS_MAX, NS_BATCH_WEIGHT_MAX, |p| p.call.op.weight());
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (calls, replies): (Vec<NsCall>, Vec<_>) =
                batch.into_iter().map(|p| (p.call, p.reply)).unzip();
            let command = Command::NamespaceBatch { calls, now_unix_ms: crate::now_unix_ms() };
            match raft.client_write(command).await {
                Ok(written) => match written.data {
                    Response::NamespaceBatch { responses } if responses.len() == replies.len() => {
                        for (reply, response) in replies.into_iter().zip(responses) {
                            let _ = reply.send(outcome(response));
                        }
                    }
                    Response::Refused { error } => {
                        let status = errors::command_error(&error);
                        for reply in replies {
                            let _ = reply.send(Err(status.clone()));
                        }
                    }
                    other => {
                        for reply in replies {
                            let _ =
                                reply.send(Err(errors::internal(format!("unexpected response {other:?}"))));
                        }
                    }
                },
                Err(e) => {
                    let status = errors::raft_error(&e);
                    for reply in replies {
                        let _ = reply.send(Err(status.clone()));
                    }
                }
            }
        });
    }
}
