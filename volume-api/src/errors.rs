//! Errors of the volume API, as gRPC statuses with stable codes
//! (`cellar_proto::error_code`) in the `cellar-error` metadata key.

use cellar_proto::error_code as code;
use tonic::{Code, Status};

/// A status with a stable error code.
pub fn status(grpc: Code, error_code: &'static str, message: impl Into<String>) -> Status {
    let mut s = Status::new(grpc, message.into());
    if let Ok(v) = error_code.parse() {
        s.metadata_mut().insert(cellar_proto::ERROR_CODE_KEY, v);
    }
    s
}

/// A malformed request.
pub fn bad_request(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, code::BAD_REQUEST, message)
}

/// The stable error code carried by a status, if any.
pub fn code_of(s: &Status) -> Option<&str> {
    s.metadata().get(cellar_proto::ERROR_CODE_KEY).and_then(|v| v.to_str().ok())
}

/// A master call that failed, as seen by a volume server's own callers.
pub fn master_status(e: &cellar_master_api::client::ClientError) -> Status {
    match e.code() {
        Some(c) => {
            let stable = [
                code::STALE_LEASE,
                code::UNKNOWN_VOLUME,
                code::VOLUME_NOT_OPEN,
                code::UNKNOWN_DISK,
                code::UNKNOWN_NODE,
                code::BAD_REQUEST,
            ]
            .into_iter()
            .find(|k| *k == c)
            .unwrap_or(code::INTERNAL);
            status(Code::FailedPrecondition, stable, e.to_string())
        }
        None => status(Code::Unavailable, code::NO_LEADER, format!("master unreachable: {e}")),
    }
}
