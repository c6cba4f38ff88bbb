//! The S3-compatible API (`--s3 ADDR`), on the `s3s` crate: SigV4 (header, presigned URL,
//! streaming chunked payloads) with access keys kept in the master, S3 XML and routing
//! from s3s; the operations in [`ops`] map onto the namespace (in the master) and the
//! block path. Anything not implemented answers NotImplemented in S3 XML.
//!
//! - [`auth`]: access keys looked up in the master.
//! - [`body`]: an object's bytes cut into blocks, with its MD5 and checksums.
//! - [`ops`]: the operations.

pub mod auth;
pub mod body;
pub mod lifecycle;
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, watch};

use crate::blocks::Blocks;
use crate::stall::WriteStallLimit;

/// Largest XML request body (CompleteMultipartUpload, DeleteObjects, ...): 10,000 parts
/// fit in well under 1 MiB.
pub const XML_BODY_MAX_BYTES: usize = 2 << 20;

/// An XML request (POST, or a PUT of a sub-resource such as `?tagging`) whose
/// Content-Length is over [`XML_BODY_MAX_BYTES`]: answered 400 MaxMessageLengthExceeded
/// before anything reads it (s3s would read up to its limit and answer 500).
fn oversized_xml<B>(req: &http::Request<B>) -> Option<http::Response<s3s::Body>> {
    const SUB_RESOURCES: [&str; 6] = ["tagging", "versioning", "acl", "cors", "lifecycle", "policy"];
    let query = req.uri().query().unwrap_or("");
    let xml = req.method() == http::Method::POST
        || (req.method() == http::Method::PUT
            && query.split('&').any(|p| SUB_RESOURCES.contains(&p.split('=').next().unwrap_or(""))));
    let length: u64 = req.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()?;
    if !xml || length <= XML_BODY_MAX_BYTES as u64 {
        return None;
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>MaxMessageLengthExceeded</Code><Message>Your request was too big: at most {XML_BODY_MAX_BYTES} bytes of XML.</Message></Error>"
    );
    let mut resp = http::Response::new(s3s::Body::from(body));
    *resp.status_mut() = http::StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/xml"));
    resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    Some(resp)
}

/// Serves S3 on `listener` until `stop` turns true; at most `connections_max` connections
/// at once (the others wait in the listen backlog).
pub async fn serve(
    listener: tokio::net::TcpListener,
    blocks: Arc<Blocks>,
    connections_max: usize,
    mut stop: watch::Receiver<bool>,
) {
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(ops::CellarS3::new(blocks.clone()));
        b.set_auth(auth::MasterKeys::new(blocks.cluster().clone()));
        let mut config = s3s::config::S3Config::default();
        config.xml_max_body_size = XML_BODY_MAX_BYTES;
        b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
        b.build()
    };
    let slots = Arc::new(Semaphore::new(connections_max));
    let write_stall = blocks.response_write_stall_timeout();
    let stall_metrics = blocks.metrics.clone();
    loop {
        let permit = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "S3 accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let inner = service.clone();
        let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let inner = inner.clone();
            async move {
                if let Some(refused) = oversized_xml(&req) {
                    return Ok(refused);
                }
                // hyper answers `Expect: 100-continue` when the body is first read; a request
                // whose body is not read before the answer (an empty one) gets its late
                // "100 Continue" after the final response, where the client takes it for the
                // start of the next response on the connection (botocore then stalls until
                // its read timeout). Such connections are closed after the answer.
                let expects = req.headers().contains_key(http::header::EXPECT);
                let mut resp: http::Response<s3s::Body> = hyper::service::Service::call(&inner, req).await?;
                if expects {
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok::<_, s3s::HttpError>(resp)
            }
        });
        let mut conn_stop = stop.clone();
        let stall_metrics = stall_metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(
                TokioIo::new(WriteStallLimit::new(tcp, write_stall, stall_metrics)),
                service,
            );
            tokio::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "S3 connection ended with an error");
                    }
                }
                _ = async { let _ = conn_stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}
