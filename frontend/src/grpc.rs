//! The block API over gRPC (`cellar.frontend.v1`) for internal clients: the same
//! operations as the HTTP API, over the same [`Blocks`].
//!
//! A put is admitted before its body is decoded: tonic decodes a unary request (up to
//! [`GRPC_MESSAGE_MAX_BYTES`]) before the handler runs, so the put permit is taken one
//! layer out, by [`Admission`] around the whole service, on the request's path alone.
//! Until then the body stays in the client and the HTTP/2 stream window (at most
//! [`crate::GRPC_STREAM_WINDOW_BYTES`]); a concurrency limit per connection would bound
//! requests per client, not puts per frontend, so the same semaphore as HTTP puts is used.
//!
//! A get is answered by [`Admission`] itself (`cellar_volume_api::replies`): the block goes
//! out as the buffers it arrived in, behind the message's prefix, without tonic's copy into
//! one new buffer, and the answer keeps the get's permit and its share of the get byte
//! budget until its last byte is written (tonic's copy was outside the budget once encoded,
//! so a slow client could hold any number of 4 MiB answers).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cellar_proto::frontend as pb;
use cellar_proto::frontend::blocks_server::{Blocks as BlocksRpc, BlocksServer};
use cellar_volume_api::replies::{Held, decode, reply};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};

use crate::blocks::{BlockError, Blocks, parse_hash};

/// Largest gRPC message: a 4 MiB block plus framing.
pub const GRPC_MESSAGE_MAX_BYTES: usize = 5 << 20;

/// The gRPC path of the put method, which [`Admission`] admits.
pub const PUT_PATH: &str = "/cellar.frontend.v1.Blocks/Put";
/// The gRPC path of the get method, which [`Admission`] answers.
pub const GET_PATH: &str = "/cellar.frontend.v1.Blocks/Get";
/// Largest get request read (a `BlockRef`: a hash of 32 bytes, or its 64 hex digits).
const GET_REQUEST_MAX_BYTES: usize = 4096;
/// Field number of `GetResponse.data`.
const GET_DATA_FIELD: u32 = 1;

/// The gRPC block service as served: [`BlocksService`] behind [`Admission`].
pub fn server(blocks: Arc<Blocks>) -> Admission {
    let inner = BlocksServer::new(BlocksService::new(blocks.clone()))
        .max_decoding_message_size(GRPC_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(GRPC_MESSAGE_MAX_BYTES);
    Admission { inner, blocks }
}

/// Takes a put permit for every put request before the inner service decodes its body,
/// and holds it until the answer is ready; answers gets itself (see the module comment).
#[derive(Clone)]
pub struct Admission {
    inner: BlocksServer<BlocksService>,
    blocks: Arc<Blocks>,
}

impl Service<http::Request<Body>> for Admission {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == GET_PATH {
            let blocks = self.blocks.clone();
            return Box::pin(async move { Ok(answer_get(blocks, req).await) });
        }
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

impl NamedService for Admission {
    const NAME: &'static str = <BlocksServer<BlocksService> as NamedService>::NAME;
}

/// A get, answered with the block's own buffers; the answer keeps the get's permit (and
/// the buffers their share of the get byte budget) until it is written.
async fn answer_get(blocks: Arc<Blocks>, req: http::Request<Body>) -> http::Response<Body> {
    let got = async {
        let r = decode::<pb::BlockRef>(req, GET_REQUEST_MAX_BYTES).await?;
        let hash = parse_hash(&r.into_inner().hash).map_err(status)?;
        let admitted = blocks.admit_get().await;
        let got = blocks.get(&hash).await.map_err(status)?;
        Ok::<_, Status>((got, admitted))
    }
    .await;
    match got {
        Ok((got, admitted)) => {
            let head = pb::GetResponse { data: Bytes::new(), degraded: got.degraded };
            let pieces =
                cellar_volume_api::wire::message_with_pieces(&head, GET_DATA_FIELD, got.bytes.parts());
            let held = admitted.map(|permit| Box::new(permit) as Held);
            reply(Ok(pieces), GRPC_MESSAGE_MAX_BYTES, held)
        }
        Err(s) => reply(Err(s), GRPC_MESSAGE_MAX_BYTES, None),
    }
}

/// The service (serve it through [`server`], which admits puts and answers gets).
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

    /// Served by [`Admission`] (see the module comment); this answers a caller of the
    /// service itself, in one encoded buffer.
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
