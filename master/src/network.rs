//! Raft between master replicas over tonic: openraft's messages travel as bytes in the
//! master's binary encoding ([`crate::codec`]) (`cellar.raft.v1`); replication as one
//! long-lived `AppendStream` per follower (pipelined requests, answers in order, a deadline on
//! each), heartbeats and votes as unary calls; snapshots as a client stream of chunks read
//! from the snapshot file.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cellar_proto::raft::raft_client::RaftClient;
use cellar_proto::raft::{RaftBytes, SnapshotChunk};
use futures::{Stream, StreamExt};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, stream_append_sequential};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest,
    VoteResponse,
};
use openraft::type_config::alias::{SnapshotOf, VoteOf};
use openraft::{BasicNode, RaftNetworkV2};
use tokio::time::Instant;
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
/// How often a replication stream with no request outstanding looks again for one whose
/// answer is late (a request sent while it waited is noticed this late at most).
const STREAM_IDLE_RECHECK: Duration = Duration::from_millis(100);

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
            stream_unsupported: false,
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
    /// The peer answered UNIMPLEMENTED to `AppendStream` (an older build): replicate to it
    /// with one `AppendEntries` call per request.
    stream_unsupported: bool,
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
        req.set_timeout(answer_timeout(option.hard_ttl(), size_bytes));
        req
    }
}

/// Time allowed for the answer to a Raft request of `size_bytes`. openraft's TTL is the
/// heartbeat interval: right for heartbeats, too short for a batch of index entries, so
/// this allows time proportional to the bytes on top.
fn answer_timeout(ttl: Duration, size_bytes: usize) -> Duration {
    let transfer = Duration::from_millis((size_bytes / TRANSFER_BYTES_PER_MS_MIN) as u64);
    ttl.max(RPC_TIMEOUT_MIN) + transfer
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

/// What one replication stream's two halves share: the request body (which polls the
/// leader's requests, encodes them and notes each one's deadline) and the answers' side
/// (which checks the deadlines, and drops the requests when it ends or is dropped, see
/// [`RequestsGuard`]). openraft's request stream holds its replication state locked while
/// it waits for new entries, so it must not outlive the session in the transport.
struct Session<S> {
    /// The leader's requests; None once the leader ended the session, an encoding failed
    /// or the answers' side dropped them.
    input: Option<S>,
    /// The request body's task, waiting for the next request: woken when the input is
    /// dropped, so that it ends the body (a graceful shutdown of the peer waits for that).
    waiting: Option<std::task::Waker>,
    /// The deadline of every request sent and not yet answered, oldest first.
    deadlines: VecDeque<Instant>,
    /// Why the requests ended early, if an encoding failed.
    failure: Option<codec::CodecError>,
    /// openraft's TTL for a request (see [`answer_timeout`]).
    ttl: Duration,
}

type SharedSession<S> = Arc<Mutex<Session<S>>>;

fn lock_session<S>(session: &SharedSession<S>) -> std::sync::MutexGuard<'_, Session<S>> {
    session.lock().unwrap_or_else(|p| p.into_inner())
}

/// The request body of a replication stream: the leader's requests, encoded.
struct Requests<S> {
    session: SharedSession<S>,
}

impl<S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin> Stream for Requests<S> {
    type Item = RaftBytes;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RaftBytes>> {
        use std::task::Poll;
        let mut session = lock_session(&self.session);
        let Some(input) = session.input.as_mut() else {
            return Poll::Ready(None);
        };
        match input.poll_next_unpin(cx) {
            Poll::Pending => {
                session.waiting = Some(cx.waker().clone());
                Poll::Pending
            }
            // The leader ended the session: the empty input says so to the answers' side.
            Poll::Ready(None) => {
                session.input = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(rpc)) => match codec::encode(Kind::RaftRpc, &rpc) {
                Ok(data) => {
                    let deadline = Instant::now() + answer_timeout(session.ttl, data.len());
                    session.deadlines.push_back(deadline);
                    Poll::Ready(Some(RaftBytes { data }))
                }
                Err(e) => {
                    session.failure = Some(e);
                    session.input = None;
                    Poll::Ready(None)
                }
            },
        }
    }
}

/// Drops a replication stream's requests and wakes the request body's task (which then
/// ends the body) when the answers' side is done with them.
struct RequestsGuard<S> {
    session: SharedSession<S>,
}

impl<S> Drop for RequestsGuard<S> {
    fn drop(&mut self) {
        let (input, waiting) = {
            let mut session = lock_session(&self.session);
            (session.input.take(), session.waiting.take())
        };
        drop(input);
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

type AppendAnswer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;
type AnswersState<S> = (tonic::Streaming<RaftBytes>, RequestsGuard<S>);

fn unreachable(why: &str) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        why.to_string(),
    )))
}

/// The next answer of a replication stream, within the deadline of the oldest request
/// outstanding. An error ends the stream (openraft opens a new one).
async fn next_answer<S>(state: Option<AnswersState<S>>) -> Option<(AppendAnswer, Option<AnswersState<S>>)> {
    let (mut answers, guard) = state?;
    let message = loop {
        let oldest = lock_session(&guard.session).deadlines.front().copied();
        let until = oldest.unwrap_or_else(|| Instant::now() + STREAM_IDLE_RECHECK);
        match tokio::time::timeout_at(until, answers.next()).await {
            Ok(message) => break message,
            Err(_) if oldest.is_some() => {
                return Some((Err(unreachable("no answer to a Raft request in time")), None));
            }
            // Nothing was outstanding: look again (a request may have gone out meanwhile).
            Err(_) => continue,
        }
    };
    let answer = match message {
        Some(Ok(m)) => {
            if lock_session(&guard.session).deadlines.pop_front().is_none() {
                return Some((Err(unreachable("a Raft answer to no request")), None));
            }
            match codec::decode::<StreamAppendResult<TypeConfig>>(Kind::RaftRpc, &m.data) {
                Ok(result) => result,
                Err(e) => return Some((Err(encode_error(e)), None)),
            }
        }
        Some(Err(status)) => return Some((Err(rpc_error(status)), None)),
        None => {
            let mut session = lock_session(&guard.session);
            return match session.failure.take() {
                Some(e) => Some((Err(encode_error(e)), None)),
                None if !session.deadlines.is_empty() => {
                    Some((Err(unreachable("the peer ended the stream with requests unanswered")), None))
                }
                // The peer ended a stream the leader still feeds (it is shutting down): an
                // error, so that openraft backs off before it opens another.
                None if session.input.is_some() => {
                    Some((Err(unreachable("the peer ended the replication stream")), None))
                }
                None => None,
            };
        }
    };
    // After a conflict or a higher vote the peer ends the stream: so does this side.
    let more = answer.is_ok();
    Some((Ok(answer), more.then_some((answers, guard))))
}

impl Peer {
    /// Replicates over one `AppendStream` call: requests are sent as openraft produces
    /// them (pipelined), answers come back in order, each within the deadline of its
    /// request. Saves the per-call cost of a unary RPC (headers, a stream and a task on
    /// each side) on every entry and on every commit-index update openraft sends alone.
    async fn open_append_stream<S>(
        &mut self,
        input: S,
        option: RPCOption,
    ) -> Result<BoxStream<'static, AppendAnswer>, RPCError<TypeConfig>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        // The first request before the stream: openraft's request stream sleeps out its
        // backoff there, so that a peer that refuses connections is not retried in a loop.
        let mut input = input;
        let Some(first) = input.next().await else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let input = futures::stream::once(std::future::ready(first)).chain(input);
        let mut client = self.client()?;
        let ttl = option.hard_ttl();
        let session: SharedSession<_> = Arc::new(Mutex::new(Session {
            input: Some(input),
            waiting: None,
            deadlines: VecDeque::new(),
            failure: None,
            ttl,
        }));
        let guard = RequestsGuard { session: session.clone() };
        // No grpc-timeout: the stream lasts as long as this leader replicates to the peer;
        // every answer has a deadline of its own (above).
        let request = with_secret(tonic::Request::new(Requests { session }), self.secret.as_deref());
        let answers = match tokio::time::timeout(ttl.max(RPC_TIMEOUT_MIN), client.append_stream(request))
            .await
        {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::warn!(
                    target = self.target,
                    "peer has no AppendStream (an older build): replicating to it with one call per request"
                );
                self.stream_unsupported = true;
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Err(status)) => return Err(rpc_error(status)),
            Err(_) => return Err(unreachable("opening the replication stream timed out")),
        };
        Ok(Box::pin(futures::stream::unfold(Some((answers, guard)), next_answer)))
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = File;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, AppendAnswer>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + openraft::OptionalSend + Unpin + 'static,
    {
        // A single request (a heartbeat), a peer in this process or one of an older build:
        // one call per request.
        let single = matches!(input.size_hint().1, Some(n) if n <= 1);
        if single || self.stream_unsupported || self.local().is_some() {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move { self.open_append_stream(input, option).await })
    }

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
