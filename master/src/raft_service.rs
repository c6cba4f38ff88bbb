//! The server side of Raft between masters: decodes openraft's messages and hands them to
//! the local Raft node (a leader's replication stream to openraft's pipelined
//! `stream_append`, ended at shutdown); receives snapshots into a temporary file before
//! installing them.

use std::io::{Seek, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};

use cellar_proto::raft::raft_server::Raft as RaftRpc;
use cellar_proto::raft::{BuildRequest, BuildResponse, RaftBytes, SnapshotChunk};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::storage::Snapshot;
use openraft::type_config::alias::VoteOf;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::check_secret;
use crate::codec::{self, Kind};
use crate::store::snapshot::Meta;
use crate::{MasterRaft, TypeConfig};

/// Largest snapshot a master accepts (bounds disk use by a misbehaving peer).
pub const SNAPSHOT_MAX_BYTES: u64 = 256 << 30;

/// Serves Raft RPCs for one master.
pub struct RaftService {
    raft: MasterRaft,
    secret: Option<String>,
    /// The apply version this master offers (`Build`).
    apply_version_max: u32,
    /// This member's id (`Build`).
    id: u64,
    incoming_dir: PathBuf,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl RaftService {
    /// A service over `raft`; received snapshots are staged in `incoming_dir`. Replication
    /// streams end when `stopping` turns true (or its sender goes away), so that a graceful
    /// shutdown of the server does not wait on a leader's stream forever.
    pub fn new(
        raft: MasterRaft,
        secret: Option<String>,
        incoming_dir: PathBuf,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> RaftService {
        let apply_version_max = crate::apply_version::APPLY_VERSION_MAX;
        RaftService { raft, secret, apply_version_max, id: 0, incoming_dir, stopping }
    }

    /// The same, answering `Build` as member `id` offering apply versions up to `max` (the
    /// master's `apply_version_max`).
    pub fn offering(mut self, id: u64, max: u32) -> RaftService {
        self.id = id;
        self.apply_version_max = max;
        self
    }
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable raft message: {e}"))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The answers of one replication stream (see [`RaftService::append_stream`]).
pub type AppendAnswers = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type AppendStreamStream = AppendAnswers;

    /// A leader's replication stream: requests are handed to openraft's pipelined
    /// `stream_append` as they arrive, and each is answered, in order, by its encoded
    /// `StreamAppendResult`. The stream ends after an error result (as openraft's does),
    /// when the leader ends its side, or with INVALID_ARGUMENT after an undecodable
    /// request (the requests before it are still answered).
    async fn append_stream(
        &self,
        req: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<AppendAnswers>, Status> {
        check_secret(&req, self.secret.as_deref())?;
        let refused: Arc<Mutex<Option<Status>>> = Arc::default();
        let refused_in = refused.clone();
        let requests = req.into_inner().scan((), move |_, message| {
            let next = match message
                .map(|m| codec::decode::<AppendEntriesRequest<TypeConfig>>(Kind::RaftRpc, &m.data))
            {
                Ok(Ok(rpc)) => Some(rpc),
                Ok(Err(e)) => {
                    *refused_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(bad_request(e));
                    None
                }
                // The leader went away or reset the stream: nothing more to answer.
                Err(_) => None,
            };
            std::future::ready(next)
        });
        let answers = self.raft.stream_append(requests).map(|result| match result {
            Ok(result) => Ok(RaftBytes { data: codec::encode(Kind::RaftRpc, &result).map_err(internal)? }),
            Err(fatal) => Err(internal(fatal)),
        });
        let refusal =
            futures::stream::once(async move { refused.lock().unwrap_or_else(|p| p.into_inner()).take() })
                .filter_map(|refused| std::future::ready(refused.map(Err)));
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        Ok(Response::new(Box::pin(answers.chain(refusal).take_until(stopped))))
    }

    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        check_secret(&req, self.secret.as_deref())?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            codec::decode(Kind::RaftRpc, &req.into_inner().data).map_err(bad_request)?;
        let resp = self.raft.append_entries(rpc).await.map_err(internal)?;
        Ok(Response::new(RaftBytes { data: codec::encode(Kind::RaftRpc, &resp).map_err(internal)? }))
    }

    async fn build(&self, req: Request<BuildRequest>) -> Result<Response<BuildResponse>, Status> {
        check_secret(&req, self.secret.as_deref())?;
        Ok(Response::new(BuildResponse {
            node_id: self.id,
            apply_version_max: self.apply_version_max,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        check_secret(&req, self.secret.as_deref())?;
        let rpc: VoteRequest<TypeConfig> =
            codec::decode(Kind::RaftRpc, &req.into_inner().data).map_err(bad_request)?;
        let resp = self.raft.vote(rpc).await.map_err(internal)?;
        Ok(Response::new(RaftBytes { data: codec::encode(Kind::RaftRpc, &resp).map_err(internal)? }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        check_secret(&req, self.secret.as_deref())?;
        let mut stream = req.into_inner();
        let first =
            stream.message().await?.ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (VoteOf<TypeConfig>, Meta) =
            codec::decode(Kind::SnapshotMeta, &first.meta).map_err(bad_request)?;
        std::fs::create_dir_all(&self.incoming_dir).map_err(internal)?;
        // An unnamed temporary file: nothing is left behind if the transfer breaks off.
        let mut file = tempfile::tempfile_in(&self.incoming_dir).map_err(internal)?;
        let mut received = 0u64;
        while let Some(chunk) = stream.message().await? {
            received += chunk.data.len() as u64;
            if received > SNAPSHOT_MAX_BYTES {
                return Err(Status::resource_exhausted("snapshot over the size limit"));
            }
            file.write_all(&chunk.data).map_err(internal)?;
        }
        file.flush().map_err(internal)?;
        file.rewind().map_err(internal)?;
        let resp = self
            .raft
            .install_full_snapshot(vote, Snapshot { meta, snapshot: file })
            .await
            .map_err(internal)?;
        Ok(Response::new(RaftBytes { data: codec::encode(Kind::RaftRpc, &resp).map_err(internal)? }))
    }
}
