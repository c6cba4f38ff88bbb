//! The block API over gRPC (`cellar.frontend.v1`) for internal clients: the same
//! operations as the HTTP API, over the same [`Blocks`].

use std::sync::Arc;

use cellar_proto::frontend as pb;
use cellar_proto::frontend::blocks_server::Blocks as BlocksRpc;
use tonic::{Code, Request, Response, Status};

use crate::blocks::{BlockError, Blocks, parse_hash};

/// Largest gRPC message: a 4 MiB block plus framing.
pub const GRPC_MESSAGE_MAX_BYTES: usize = 5 << 20;

/// The service.
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
        let _admitted = self.blocks.admit_put().await;
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
        let out = self.blocks.put(r.data, expected).await.map_err(status)?;
        Ok(Response::new(pb::PutResponse { hash: out.hash, size: out.size, deduplicated: out.deduplicated }))
    }

    async fn get(&self, req: Request<pb::BlockRef>) -> Result<Response<pb::GetResponse>, Status> {
        let hash = parse_hash(&req.into_inner().hash).map_err(status)?;
        let _admitted = self.blocks.admit_get().await;
        let (data, degraded) = self.blocks.get(&hash).await.map_err(status)?;
        Ok(Response::new(pb::GetResponse { data, degraded }))
    }

    async fn stat(&self, req: Request<pb::BlockRef>) -> Result<Response<pb::StatResponse>, Status> {
        let hash = parse_hash(&req.into_inner().hash).map_err(status)?;
        let s = self.blocks.stat(&hash).await.map_err(status)?;
        Ok(Response::new(pb::StatResponse {
            hash: hex::encode(hash),
            size: u64::from(s.entry.length_bytes)
                .saturating_sub(cellar_blockstore::RECORD_HEADER_BYTES as u64),
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
