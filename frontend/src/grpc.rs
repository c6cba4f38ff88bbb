//! The block API over gRPC (`cellar.frontend.v1`) for internal clients: the same
//! operations as the HTTP API, over the same [`Blocks`].
//!
//! A put is admitted before its body is decoded: tonic decodes a unary request (up to
//! [`GRPC_MESSAGE_MAX_BYTES`]) before the handler runs, so the put permit is taken one
//! layer out, by [`PutAdmission`] around the whole service, on the request's path alone.
//! Until then the body stays in the client and the HTTP/2 stream window (at most
//! [`crate::GRPC_STREAM_WINDOW_BYTES`]); a concurrency limit per connection would bound
//! requests per client, not puts per frontend, so the same semaphore as HTTP puts is used.

use std::sync::Arc;

use cellar_proto::frontend as pb;
use cellar_proto::frontend::blocks_server::{Blocks as BlocksRpc, BlocksServer};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use crate::blocks::{BlockError, Blocks, parse_hash};

/// Largest gRPC message: a 4 MiB block plus framing.
pub const GRPC_MESSAGE_MAX_BYTES: usize = 5 << 20;

/// The gRPC path of the put method, which [`PutAdmission`] admits.
pub const PUT_PATH: &str = "/cellar.frontend.v1.Blocks/Put";

/// The gRPC block service as served: [`BlocksService`] behind [`PutAdmission`].
pub fn server(blocks: Arc<Blocks>) -> PutAdmission<BlocksServer<BlocksService>> {
    let inner = BlocksServer::new(BlocksService::new(blocks.clone()))
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
    PutAdmission { inner, blocks }
}

/// Takes a put permit for every put request before the inner service decodes its body,
/// and holds it until the answer is ready.
#[derive(Clone)]
pub struct PutAdmission<S> {
    inner: S,
    blocks: Arc<Blocks>,
}

impl<S, B> Service<http::Request<B>> for PutAdmission<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one called (tower's rule for Clone services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admit = (req.uri().path() == PUT_PATH).then(|| self.blocks.clone());
        Box::pin(async move {
            let _admitted = match admit {
                Some(blocks) => Some(blocks.admit_put().await),
                None => None,
            };
            inner.call(req).await
        })
    }
}

impl<S: NamedService> NamedService for PutAdmission<S> {
    const NAME: &'static str = S::NAME;
}

/// The service (serve it through [`server`], which admits puts).
pub struct BlocksService {
    blocks: Arc<Blocks>,
}

impl BlocksService {
    /// A service over `blocks`.
    pub fn new(blocks: Arc<Blocks>) -> BlocksService {
        BlocksService { blocks }
    }
}

fn status(e: BlockError) -> Status {
    let (code, stable) = match &e {
        BlockError::NotFound(_) => (Code::NotFound, "NOT_FOUND"),
        BlockError::BadRequest(_) => (Code::InvalidArgument, "BAD_REQUEST"),
        BlockError::HashMismatch { .. } => (Code::InvalidArgument, "HASH_MISMATCH"),
        BlockError::TooLarge { .. } => (Code::ResourceExhausted, "TOO_LARGE"),
        BlockError::Unavailable(_) => (Code::Unavailable, "UNAVAILABLE"),
    };
    let mut s = Status::new(code, e.to_string());
    if let Ok(v) = stable.parse() {
        s.metadata_mut().insert(cellar_proto::ERROR_CODE_KEY, v);
    }
    s
}

#[tonic::async_trait]
impl BlocksRpc for BlocksService {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        // Admitted by PutAdmission before the body was decoded.
        self.blocks.metrics.grpc_put_bodies_decoded.add(1);
        let r = req.into_inner();
        let expected = match r.expected_sha256.len() {
            0 => None,
            32 => {
                let mut h = [0u8; 32];
                h.copy_from_slice(&r.expected_sha256);
                Some(h)
            }
            n => {
                return Err(status(BlockError::BadRequest(format!("expected_sha256 has {n} bytes, not 32"))));
            }
        };
        // The byte budget is taken once the body's size is known (gRPC requests carry no
        // length); PutAdmission's count bounds the bodies decoded before it.
        let _held = self.blocks.hold_put_bytes(r.data.len() as u64).await;
        let out = self.blocks.put(r.data, expected).await.map_err(status)?;
        Ok(Response::new(pb::PutResponse { hash: out.hash, size: out.size, deduplicated: out.deduplicated }))
    }

    async fn get(&self, req: Request<pb::BlockRef>) -> Result<Response<pb::GetResponse>, Status> {
        let hash = parse_hash(&req.into_inner().hash).map_err(status)?;
        let _admitted = self.blocks.admit_get().await;
        let got = self.blocks.get(&hash).await.map_err(status)?;
        Ok(Response::new(pb::GetResponse { degraded: got.degraded, data: got.into_bytes() }))
    }

    async fn stat(&self, req: Request<pb::BlockRef>) -> Result<Response<pb::StatResponse>, Status> {
        let hash = parse_hash(&req.into_inner().hash).map_err(status)?;
        let s = self.blocks.stat(&hash).await.map_err(status)?;
        Ok(Response::new(pb::StatResponse {
            hash: hex::encode(hash),
            size: u64::from(s.entry.payload_bytes),
            references: s.entry.references,
            volume_id: s.volume.volume_id,
            offset_bytes: s.entry.offset_bytes,
            state: s.volume.state,
            scheme: s.volume.scheme,
            generation: s.volume.generation,
        }))
    }

    async fn delete(&self, req: Request<pb::BlockRef>) -> Result<Response<pb::DeleteResponse>, Status> {
        let hash = parse_hash(&req.into_inner().hash).map_err(status)?;
        let references = self.blocks.delete(&hash).await.map_err(status)?;
        Ok(Response::new(pb::DeleteResponse { references }))
    }
}
