//! The cluster secret: every call between cellar processes carries it, and servers refuse
//! calls without it when one is configured.

use cellar_proto::{ERROR_CODE_KEY, SECRET_KEY, error_code};

/// Adds the secret to a request's metadata.
pub fn with_secret<T>(mut req: tonic::Request<T>, secret: Option<&str>) -> tonic::Request<T> {
    if let Some(secret) = secret
        && let Ok(value) = secret.parse()
    {
        req.metadata_mut().insert(SECRET_KEY, value);
    }
    req
}

/// Refuses a request whose secret is missing or wrong (when a secret is configured).
pub fn check_secret<T>(req: &tonic::Request<T>, secret: Option<&str>) -> Result<(), tonic::Status> {
    let Some(expected) = secret else { return Ok(()) };
    let given = req.metadata().get(SECRET_KEY).and_then(|v| v.to_str().ok());
    // Constant-time comparison: the secret must not leak through timing.
    let ok = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        return Ok(());
    }
    let mut status = tonic::Status::unauthenticated("missing or wrong cluster secret");
    if let Ok(code) = error_code::UNAUTHENTICATED.parse() {
        status.metadata_mut().insert(ERROR_CODE_KEY, code);
    }
    Err(status)
}
