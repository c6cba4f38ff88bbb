//! Raft between master replicas over tonic: openraft's messages travel as bytes in
//! the master's binary encoding ([`crate::codec`])
//! (`cellar.raft.v1`); snapshots as a client stream of chunks read from the snapshot file.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cellar_proto::raft::raft_client::RaftClient;
use cellar_proto::raft::{RaftBytes, SnapshotChunk};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RaftNetworkV2};
use tonic::transport::Channel;

use crate::auth::with_secret;
use crate::codec::{self, Kind};
use crate::{MasterRaft, TypeConfig};

/// Bytes per snapshot chunk on the wire (well under tonic's 4 MiB message limit).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Largest Raft message a master accepts or sends.
pub const RAFT_MESSAGE_MAX_BYTES: usize = 64 << 20;
/// Shortest timeout of a Raft RPC.
const RPC_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// Transfer rate assumed when sizing a timeout (10 MB/s: slow on purpose).
const TRANSFER_BYTES_PER_MS_MIN: usize = 10_000;
/// Snapshot chunks buffered between the file reader and the gRPC stream.
const SNAPSHOT_CHUNKS_IN_FLIGHT_MAX: usize = 4;

/// Members of one master group that run in this process (`cellar dev`), by id. Raft
/// messages between them are handed to the receiving node directly: no encoding, no
/// socket, the same `Raft` calls the gRPC service makes. Snapshots still stream over gRPC.
#[derive(Clone, Default)]
pub struct LocalGroup {
    members: Arc<RwLock<HashMap<u64, MasterRaft>>>,
}

impl std::fmt::Debug for LocalGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u64> = self.members.read().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        f.debug_struct("LocalGroup").field("members", &ids).finish()
    }
}

impl LocalGroup {
    /// An empty group.
    pub fn new() -> LocalGroup {
        LocalGroup::default()
    }

    /// Member `id` is reachable in-process from now on.
    pub fn join(&self, id: u64, raft: MasterRaft) {
        self.members.write().unwrap_or_else(|p| p.into_inner()).insert(id, raft);
    }

    /// Member `id` is gone (stopped): messages to it fail as to an unreachable node.
    pub fn leave(&self, id: u64) {
        self.members.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    fn get(&self, id: u64) -> Option<MasterRaft> {
        self.members.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }
}

/// Creates one client per peer.
#[derive(Clone)]
pub struct Network {
    secret: Option<String>,
    local: Option<LocalGroup>,
}

impl Network {
    /// A network whose calls carry the cluster secret, if any; peers in `local` are
    /// reached in-process.
    pub fn new(secret: Option<String>, local: Option<LocalGroup>) -> Network {
        Network { secret, local }
    }
}

pub use cellar_master_api::channel::{
    CONNECT_TIMEOUT_DEFAULT, ChannelOptions, KEEPALIVE_INTERVAL_DEFAULT, KEEPALIVE_TIMEOUT_DEFAULT, channel,
    channel_with,
};

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        Peer {
            target,
            client: channel(&node.addr).ok().map(new_client),
            addr: node.addr.clone(),
            secret: self.secret.clone(),
            local: self.local.clone(),
        }
    }
}

fn new_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(RAFT_MESSAGE_MAX_BYTES)
        .max_encoding_message_size(RAFT_MESSAGE_MAX_BYTES)
}

/// The client side of one peer.
pub struct Peer {
    target: u64,
    addr: String,
    client: Option<RaftClient<Channel>>,
    secret: Option<String>,
    local: Option<LocalGroup>,
}

fn rpc_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(&status))
        }
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn encode_error(e: codec::CodecError) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&e))
}

impl Peer {
    fn client(&mut self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        match &self.client {
            Some(c) => Ok(c.clone()),
            None => {
                let c = channel(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
                let c = new_client(c);
                self.client = Some(c.clone());
                Ok(c)
            }
        }
    }

    fn request<T>(&self, message: T, option: &RPCOption, size_bytes: usize) -> tonic::Request<T> {
        let mut req = with_secret(tonic::Request::new(message), self.secret.as_deref());
        // openraft's TTL is the heartbeat interval: right for heartbeats, too short for a
        // batch of index entries. Allow time proportional to the bytes on top.
        let transfer = Duration::from_millis((size_bytes / TRANSFER_BYTES_PER_MS_MIN) as u64);
        req.set_timeout(option.hard_ttl().max(RPC_TIMEOUT_MIN) + transfer);
        req
    }
}

impl Peer {
    /// The peer's Raft node, if it runs in this process.
    fn local(&self) -> Option<MasterRaft> {
        self.local.as_ref().and_then(|g| g.get(self.target))
    }

    /// Encodes a unary Raft message and sizes its timeout.
    fn prepare<T: serde::Serialize>(
        &mut self,
        rpc: &T,
        option: &RPCOption,
    ) -> Result<(tonic::Request<RaftBytes>, RaftClient<Channel>), RPCError<TypeConfig>> {
        let data = codec::encode(Kind::RaftRpc, rpc).map_err(encode_error)?;
        let size = data.len();
        Ok((self.request(RaftBytes { data }, option, size), self.client()?))
    }
}

/// A Raft call into a node of this process, with the deadline a remote call would have; a
/// stopped node or a missed deadline is an unreachable peer.
async fn local_call<T, E: std::error::Error + 'static>(
    option: &RPCOption,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, RPCError<TypeConfig>> {
    match tokio::time::timeout(option.hard_ttl().max(RPC_TIMEOUT_MIN), call).await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        Err(elapsed) => Err(RPCError::Unreachable(Unreachable::new(&elapsed))),
    }
}

/// Decodes a unary Raft reply.
fn decode<T: serde::de::DeserializeOwned>(
    resp: Result<tonic::Response<RaftBytes>, tonic::Status>,
) -> Result<T, RPCError<TypeConfig>> {
    let resp = resp.map_err(rpc_error)?;
    codec::decode(Kind::RaftRpc, &resp.into_inner().data).map_err(encode_error)
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = File;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if let Some(raft) = self.local() {
            return local_call(&option, raft.append_entries(rpc)).await;
        }
        let (req, mut client) = self.prepare(&rpc, &option)?;
        decode(client.append_entries(req).await)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        if let Some(raft) = self.local() {
            return local_call(&option, raft.vote(rpc)).await;
        }
        let (req, mut client) = self.prepare(&rpc, &option)?;
        decode(client.vote(req).await)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, File>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let meta = codec::encode(Kind::SnapshotMeta, &(&vote, &snapshot.meta))
            .map_err(|e| StreamingError::from(encode_error(e)))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(SNAPSHOT_CHUNKS_IN_FLIGHT_MAX);
        let mut file = snapshot.snapshot;
        tokio::task::spawn_blocking(move || {
            if tx.blocking_send(SnapshotChunk { meta, data: Vec::new() }).is_err() {
                return;
            }
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK_BYTES];
                match file.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(SnapshotChunk { meta: Vec::new(), data: buf }).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // Dropping the sender ends the stream short; the receiver's CRC
                        // check refuses the partial file.
                        tracing::error!(error = %e, "read snapshot file for sending");
                        return;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut req = with_secret(tonic::Request::new(stream), self.secret.as_deref());
        req.set_timeout(option.hard_ttl().max(std::time::Duration::from_secs(600)));
        let mut client = self.client()?;
        let target = self.target;
        let call = client.install_snapshot(req);
        tokio::select! {
            closed = cancel => {
                tracing::info!(target, reason = %closed, "snapshot transfer cancelled");
                Err(StreamingError::Closed(closed))
            }
            resp = call => {
                let resp = resp.map_err(|s| StreamingError::from(rpc_error(s)))?;
                codec::decode(Kind::RaftRpc, &resp.into_inner().data).map_err(|e| StreamingError::from(encode_error(e)))
            }
        }
    }
}
