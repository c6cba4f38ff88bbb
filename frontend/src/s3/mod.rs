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
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::sync::{Semaphore, watch};

use crate::blocks::Blocks;

/// Largest XML request body (CompleteMultipartUpload, DeleteObjects, ...): 10,000 parts
/// fit in well under 1 MiB.
pub const XML_BODY_MAX_BYTES: usize = 2 << 20;

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
        let service = service.clone();
        let mut conn_stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service);
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
