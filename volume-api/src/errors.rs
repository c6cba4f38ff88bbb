//! Errors of the volume API, as gRPC statuses with stable codes
//! (`cellar_proto::error_code`) in the `cellar-error` metadata key.

use cellar_master_api::client::ClientError;
use cellar_proto::ErrorCode;
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

/// The stable error code carried by a status, if it is one this build knows.
pub fn code_of(s: &Status) -> Option<ErrorCode> {
    ErrorCode::of(s)
}

/// A master call that failed, as seen by a volume server's own callers.
pub fn master_status(e: &ClientError) -> Status {
    match e {
        ClientError::Refused { .. } => {
            let stable = match e.error_code() {
                Some(
                    c @ (ErrorCode::StaleLease
                    | ErrorCode::UnknownVolume
                    | ErrorCode::VolumeNotOpen
                    | ErrorCode::UnknownDisk
                    | ErrorCode::UnknownNode
                    | ErrorCode::BadRequest),
                ) => c.as_str(),
                _ => code::INTERNAL,
            };
            status(Code::FailedPrecondition, stable, e.to_string())
        }
        _ => status(Code::Unavailable, code::NO_LEADER, format!("master unreachable: {e}")),
    }
}
