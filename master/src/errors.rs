//! Mapping master-side failures onto gRPC statuses with stable error codes.

use cellar_proto::{ERROR_CODE_KEY, LEADER_ADDR_KEY, LEADER_ID_KEY, error_code};
use openraft::errors::{ForwardToLeader, RaftError};
use tonic::{Code, Status};

use crate::TypeConfig;
use crate::command::CommandError;
use crate::ns_types::NsCode;

/// A status carrying a stable error code.
pub fn status(code: Code, error_code: &'static str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message.into());
    if let Ok(v) = error_code.parse() {
        s.metadata_mut().insert(ERROR_CODE_KEY, v);
    }
    s
}

/// The status of a refused command.
pub fn command_error(e: &CommandError) -> Status {
    let code = match e {
        CommandError::UnknownVolume { .. }
        | CommandError::UnknownNode { .. }
        | CommandError::UnknownDisk { .. } => Code::NotFound,
        CommandError::StaleLease { .. }
        | CommandError::VolumeNotOpen { .. }
        | CommandError::RequestExpired { .. } => Code::FailedPrecondition,
        CommandError::BadRequest { .. } => Code::InvalidArgument,
        CommandError::Namespace { code, .. } => match code {
            NsCode::NoSuchBucket
            | NsCode::NoSuchKey
            | NsCode::NoSuchVersion
            | NsCode::NoSuchUpload
            | NsCode::NoSuchAccessKey => Code::NotFound,
            NsCode::InvalidArgument => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        },
    };
    status(code, e.code(), e.to_string())
}

/// NOT_LEADER (with the leader's id and address when known) or NO_LEADER.
pub fn forward(f: &ForwardToLeader<TypeConfig>) -> Status {
    match (f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => {
            let mut s = status(
                Code::Unavailable,
                error_code::NOT_LEADER,
                format!("not the leader; leader is {id} at {}", node.addr),
            );
            if let (Ok(i), Ok(a)) = (id.to_string().parse(), node.addr.parse()) {
                s.metadata_mut().insert(LEADER_ID_KEY, i);
                s.metadata_mut().insert(LEADER_ADDR_KEY, a);
            }
            s
        }
        _ => status(Code::Unavailable, error_code::NO_LEADER, "no leader elected yet"),
    }
}

/// The status of a Raft error: forwarding hints or an internal failure.
pub fn raft_error<E>(e: &RaftError<TypeConfig, E>) -> Status
where
    E: std::error::Error + MaybeForward,
{
    if let RaftError::APIError(api) = e
        && let Some(f) = api.forward_to_leader()
    {
        return forward(f);
    }
    status(Code::Unavailable, error_code::INTERNAL, format!("raft: {e}"))
}

/// API errors that may say "ask the leader".
pub trait MaybeForward {
    /// The leader hint, if this error is a forward.
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<TypeConfig>>;
}

impl MaybeForward for openraft::errors::ClientWriteError<TypeConfig> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<TypeConfig>> {
        match self {
            openraft::errors::ClientWriteError::ForwardToLeader(f) => Some(f),
            _ => None,
        }
    }
}

impl MaybeForward for openraft::errors::LinearizableReadError<TypeConfig> {
    fn forward_to_leader(&self) -> Option<&ForwardToLeader<TypeConfig>> {
        match self {
            openraft::errors::LinearizableReadError::ForwardToLeader(f) => Some(f),
            _ => None,
        }
    }
}

/// An internal failure reading state.
pub fn internal(e: impl std::fmt::Display) -> Status {
    status(Code::Internal, error_code::INTERNAL, e.to_string())
}

/// A malformed request.
pub fn bad_request(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, error_code::BAD_REQUEST, message)
}
