//! The leader's side of Raft replication (`network::Peer::stream_append`) against test
//! servers that misbehave in one way each: a peer that never answers (the stream ends with
//! an error at its deadline, not a hang), one that answers garbage, one that ends the
//! stream while the leader still feeds it, and one of an older build without
//! `AppendStream` (the leader falls back to one `AppendEntries` call per request).

use std::pin::Pin;
use std::time::{Duration, Instant};

use cellar_master::TypeConfig;
use cellar_master::codec::{self, Kind};
use cellar_master::network::{Network, Peer};
use cellar_proto::raft::raft_server::{Raft, RaftServer};
use cellar_proto::raft::{RaftBytes, SnapshotChunk};
use futures::{Stream, StreamExt};
use openraft::errors::RPCError;
use openraft::impls::Vote;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
use openraft::{BasicNode, RaftNetworkV2};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

/// What a test server does with a replication stream.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads requests, never answers.
    Silent,
    /// Answers every request with bytes that do not decode.
    Garbage,
    /// Ends the stream at once, without an answer.
    EndsAtOnce,
    /// Has no `AppendStream` (UNIMPLEMENTED); answers `AppendEntries` with success.
    OlderBuild,
}

struct TestServer {
    behaviour: Behaviour,
}

type Answers = Pin<Box<dyn Stream<Item = Result<RaftBytes, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Raft for TestServer {
    type AppendStreamStream = Answers;

    async fn append_stream(&self, req: Request<Streaming<RaftBytes>>) -> Result<Response<Answers>, Status> {
        let incoming = req.into_inner();
        let answers: Answers = match self.behaviour {
            // Reads every request and holds the stream open, answering nothing.
            Behaviour::Silent => {
                Box::pin(incoming.filter_map(|_| std::future::ready(None)).chain(futures::stream::pending()))
            }
            Behaviour::Garbage => {
                Box::pin(incoming.map(|m| m.map(|_| RaftBytes { data: vec![0xff, 0xfe, 0xfd] })))
            }
            Behaviour::EndsAtOnce => Box::pin(futures::stream::empty()),
            Behaviour::OlderBuild => return Err(Status::unimplemented("no AppendStream in this build")),
        };
        Ok(Response::new(answers))
    }

    async fn append_entries(&self, _req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let answer = AppendEntriesResponse::<TypeConfig>::Success;
        let data = codec::encode(Kind::RaftRpc, &answer).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(RaftBytes { data }))
    }

    async fn vote(&self, _req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn build(
        &self,
        _req: Request<cellar_proto::raft::BuildRequest>,
    ) -> Result<Response<cellar_proto::raft::BuildResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn install_snapshot(
        &self,
        _req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves a [`TestServer`] on an ephemeral port; its address.
async fn serve(behaviour: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RaftServer::new(TestServer { behaviour }))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    addr
}

/// Two entry-less requests (more than one, so that they go on a stream, not as a call).
fn requests() -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static {
    let request = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        leader_commit: None,
        entries: Vec::new(),
    };
    futures::stream::iter(vec![request.clone(), request])
}

/// The time openraft gives a replication request (its heartbeat interval) in these tests.
const TTL: Duration = Duration::from_millis(100);
/// What the stream may take to give up on a silent peer: the transport's least answer
/// deadline (500 ms) and its idle recheck, with slack for a loaded machine.
const GIVE_UP_MAX: Duration = Duration::from_secs(10);

/// Runs one replication session with `peer`: the stream's first item (an answer or an
/// error), or the error opening it; fails the test past [`GIVE_UP_MAX`].
async fn first_answer(
    peer: &mut Peer,
) -> Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>> {
    let session = async {
        let mut answers = peer.stream_append(requests(), RPCOption::new(TTL)).await?;
        answers.next().await.expect("the answers' stream ended without an item or an error")
    };
    tokio::time::timeout(GIVE_UP_MAX, session).await.expect("no answer in time")
}

/// A leader's client of a new test server that behaves as `behaviour` says.
async fn peer(behaviour: Behaviour) -> Peer {
    let addr = serve(behaviour).await;
    let mut network = Network::new(None, None);
    network.new_client(2, &BasicNode { addr }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_ends_the_stream_with_an_error_at_the_deadline() {
    let mut peer = peer(Behaviour::Silent).await;
    let started = Instant::now();
    let got = first_answer(&mut peer).await;
    match got {
        Err(RPCError::Unreachable(e)) => {
            assert!(e.to_string().contains("no answer to a Raft request in time"), "{e}")
        }
        other => panic!("a silent peer gave {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "gave up before the deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_answer_is_an_error() {
    let mut peer = peer(Behaviour::Garbage).await;
    let got = first_answer(&mut peer).await;
    assert!(matches!(got, Err(RPCError::Network(_))), "garbage gave {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_ending_the_stream_early_is_an_error() {
    let mut peer = peer(Behaviour::EndsAtOnce).await;
    let got = first_answer(&mut peer).await;
    assert!(matches!(got, Err(RPCError::Unreachable(_))), "an early end gave {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_the_stream_gets_one_call_per_request() {
    let mut peer = peer(Behaviour::OlderBuild).await;
    // The first session finds the stream missing: an error (openraft backs off, then
    // opens another session).
    let got = first_answer(&mut peer).await;
    assert!(matches!(got, Err(RPCError::Unreachable(_))), "UNIMPLEMENTED gave {got:?}");
    // The next sessions go as unary calls, answered.
    let mut answers = peer.stream_append(requests(), RPCOption::new(TTL)).await.expect("open");
    let mut answered = 0;
    while let Some(answer) =
        tokio::time::timeout(GIVE_UP_MAX, answers.next()).await.expect("no answer in time")
    {
        assert!(matches!(answer, Ok(Ok(None))), "a unary answer gave {answer:?}");
        answered += 1;
    }
    assert_eq!(answered, 2, "both requests answered");
}
