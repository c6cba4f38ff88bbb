//! Proposing commands and waiting for linearizable reads: what every API handler (the
//! master's and the namespace's) does with Raft.

use cellar_proto::master as pb;
use openraft::ReadPolicy;
use tonic::Status;

use crate::command::{self, Command};
use crate::errors;
use crate::wire::request_id;
use crate::{MasterRaft, now_unix_ms};

/// Proposes `command` and waits until it is applied: its response, or the status of its
/// refusal.
pub async fn write(raft: &MasterRaft, command: Command) -> Result<command::Response, Status> {
    match raft.client_write(command).await {
        Ok(written) => match written.data {
            command::Response::Refused { error } => Err(errors::command_error(&error)),
            other => Ok(other),
        },
        Err(e) => Err(errors::raft_error(&e)),
    }
}

/// Like [`write`], applied at most once per request id when the call has one (see
/// [`crate::session`]): a retry is answered with the first outcome.
pub async fn write_once(
    raft: &MasterRaft,
    request: Option<pb::RequestId>,
    command: Command,
) -> Result<command::Response, Status> {
    let command = match request {
        Some(r) => {
            Command::Once { request: request_id(&r), now_unix_ms: now_unix_ms(), command: Box::new(command) }
        }
        None => command,
    };
    write(raft, command).await
}

/// Waits until this node may answer a linearizable read. The leader's lease (a quorum
/// acknowledged it within the last lease period) answers without a network round; past
/// the lease, or on a follower, a read index asks a quorum (and a follower's answer is
/// NOT_LEADER with the leader's address).
pub async fn linearizable(raft: &MasterRaft) -> Result<(), Status> {
    if raft.ensure_linearizable(ReadPolicy::LeaseRead).await.is_ok() {
        return Ok(());
    }
    raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map(|_| ()).map_err(|e| errors::raft_error(&e))
}
