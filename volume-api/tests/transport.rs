//! The unary gRPC transport over `h2` (`cellar_volume_api::transport`) against a real tonic
//! server: messages of every size both ways, statuses, the server's stream limit, calls
//! abandoned at their deadline, a restarted server reconnected to, and a silent server's
//! connection dropped by the keepalive instead of holding calls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cellar_proto::raft::raft_client::RaftClient;
use cellar_proto::raft::raft_server::{Raft, RaftServer};
use cellar_proto::raft::{RaftBytes, SnapshotChunk};
use cellar_volume_api::transport::{H2Transport, RESPONSE_PIECES_MAX, connections_made, master_connector};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status, Streaming};

const VOTE: &str = "/cellar.raft.v1.Raft/Vote";
const APPEND_ENTRIES: &str = "/cellar.raft.v1.Raft/AppendEntries";

/// A unary call of `method` with `RaftBytes { data }`; the answer's data.
async fn call(t: &H2Transport, method: &'static str, data: Vec<u8>) -> Result<Vec<u8>, Status> {
    let message = cellar_volume_api::wire::message(&RaftBytes { data });
    let got = t.call_message(method, http::HeaderMap::new(), &[message]).await?;
    Ok(RaftBytes::decode(got).map_err(|e| Status::internal(format!("decoding: {e}")))?.data)
}

/// A test server: `AppendEntries` acts on its first byte; `Vote` echoes.
struct TestServer;

#[tonic::async_trait]
impl Raft for TestServer {
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let data = req.into_inner().data;
        match data.first() {
            // Big: answer with as many bytes as the next 4 (little endian) say.
            Some(b'b') => {
                let len =
                    u32::from_le_bytes(data.get(1..5).and_then(|b| b.try_into().ok()).unwrap_or([0; 4]));
                let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                Ok(Response::new(RaftBytes { data: body }))
            }
            // Slow: never answers within a test.
            Some(b's') => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Response::new(RaftBytes::default()))
            }
            // Refused, with metadata.
            Some(b'x') => {
                let mut s = Status::failed_precondition("refused on purpose");
                s.metadata_mut().insert("cellar-error", "STALE_LEASE".parse().expect("ascii"));
                Err(s)
            }
            _ => Ok(Response::new(RaftBytes { data })),
        }
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    async fn install_snapshot(
        &self,
        _req: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftBytes>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn build(
        &self,
        _req: Request<cellar_proto::raft::BuildRequest>,
    ) -> Result<Response<cellar_proto::raft::BuildResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type AppendStreamStream = tokio_stream::Empty<Result<RaftBytes, Status>>;

    async fn append_stream(
        &self,
        _req: Request<Streaming<RaftBytes>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Serves [`TestServer`] on `listener` until the returned sender is dropped or fires.
fn serve(listener: TcpListener, streams_max: u32) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .max_concurrent_streams(streams_max)
            .add_service(RaftServer::new(TestServer).max_decoding_message_size(16 << 20))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            eprintln!("test server: {e}");
        }
    });
    (stop, task)
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

fn client(addr: SocketAddr) -> H2Transport {
    H2Transport::new(&addr.to_string()).expect("transport")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_size_and_statuses_go_both_ways() {
    let (l, addr) = listener().await;
    let (_stop, _server) = serve(l, 32);
    let c = client(addr);
    // Requests from empty to over the 1 MiB frame and the 8 MiB stream window.
    for len in [0usize, 1, 4096, (1 << 20) + 3, (8 << 20) + 3] {
        let sent = pattern(len);
        let got = call(&c, VOTE, sent.clone()).await.expect("vote");
        assert_eq!(got.len(), len);
        assert!(got[..] == sent[..], "echo of {len} bytes differs");
    }
    // Over the transport's message limit: refused before anything is sent.
    let e = call(&c, VOTE, pattern(10 << 20)).await.expect_err("too large");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // Responses over several frames and the window.
    for len in [0u32, 5, (4 << 20) + 1, (8 << 20) + 7] {
        let mut req = vec![b'b'];
        req.extend_from_slice(&len.to_le_bytes());
        let got = call(&c, APPEND_ENTRIES, req).await.expect("big");
        assert_eq!(got.len(), len as usize);
        assert!(
            got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8),
            "response of {len} bytes differs"
        );
    }
    // The same left in the buffers it came in: this server's 16 KiB frames, the first
    // kept as they are, the rest joined, the prefix first and announcing the rest.
    for len in [5u32, (4 << 20) + 1] {
        let mut req = vec![b'b'];
        req.extend_from_slice(&len.to_le_bytes());
        let message = cellar_volume_api::wire::message(&RaftBytes { data: req });
        let mut observed = 0usize;
        let pieces = c
            .call_message_pieces(APPEND_ENTRIES, http::HeaderMap::new(), &[message], &mut |b| {
                observed += b.len()
            })
            .await
            .expect("big, in pieces");
        assert_eq!(observed, pieces.len(), "every byte observed once");
        assert!(pieces.parts().len() <= RESPONSE_PIECES_MAX, "{} pieces", pieces.parts().len());
        if len > 1 << 20 {
            assert!(pieces.parts().len() > 1, "a 4 MiB answer in 16 KiB frames kept in one piece");
        }
        let whole = pieces.to_bytes();
        assert_eq!(whole[0], 0, "uncompressed");
        assert_eq!(u32::from_be_bytes([whole[1], whole[2], whole[3], whole[4]]) as usize, whole.len() - 5);
        let got = RaftBytes::decode(whole.slice(5..)).expect("decodes").data;
        assert_eq!(got.len(), len as usize);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "{len} bytes in pieces differ");
    }
    // A response over the transport's message limit is refused, not held.
    let mut req = vec![b'b'];
    req.extend_from_slice(&(12u32 << 20).to_le_bytes());
    let e = call(&c, APPEND_ENTRIES, req).await.expect_err("over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // A refused call keeps its code, message and metadata (a trailers-only response).
    let e = call(&c, APPEND_ENTRIES, b"x".to_vec()).await.expect_err("refused");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "refused on purpose");
    assert_eq!(e.metadata().get("cellar-error").and_then(|v| v.to_str().ok()), Some("STALE_LEASE"));
    // A method the server does not have.
    let e = call(&c, "/cellar.raft.v1.Raft/Nothing", vec![1]).await.expect_err("no such method");
    assert_eq!(e.code(), Code::Unimplemented, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_calls_than_the_servers_stream_limit_all_complete_on_one_connection() {
    let (l, addr) = listener().await;
    let (_stop, _server) = serve(l, 4);
    let transport = H2Transport::new(&addr.to_string()).expect("transport");
    let before = connections_made();
    let calls: Vec<_> = (0..64u32)
        .map(|i| {
            let c = transport.clone();
            tokio::spawn(async move {
                let data = i.to_le_bytes().repeat(1000);
                let got = call(&c, VOTE, data.clone()).await?;
                Ok::<bool, Status>(got[..] == data[..])
            })
        })
        .collect();
    for call in calls {
        assert!(call.await.expect("join").expect("call"), "a call got another call's answer");
    }
    // Other tests in this binary may connect meanwhile: at least one, and not one per call.
    let made = connections_made() - before;
    assert!((1..64).contains(&made), "{made} connections for 64 calls to one server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_at_its_deadline_leaves_the_connection_usable() {
    let (l, addr) = listener().await;
    let (_stop, _server) = serve(l, 2);
    let c = client(addr);
    // Twice the server's stream limit: the streams of abandoned calls must be released.
    for _ in 0..4 {
        let slow =
            tokio::time::timeout(Duration::from_millis(100), call(&c, APPEND_ENTRIES, b"s".to_vec())).await;
        assert!(slow.is_err(), "the slow call answered");
    }
    let got = tokio::time::timeout(Duration::from_secs(10), call(&c, VOTE, b"after".to_vec()))
        .await
        .expect("a call after abandoned ones must not wait for them")
        .expect("vote");
    assert_eq!(&got[..], b"after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reached_again_on_a_new_connection() {
    let (l, addr) = listener().await;
    let (stop, server) = serve(l, 32);
    let c = client(addr);
    call(&c, VOTE, b"one".to_vec()).await.expect("first call");
    stop.send(()).expect("stop the server");
    server.await.expect("server stopped");
    // Stopped: a call fails, Unavailable, and does not hang.
    let down = tokio::time::timeout(Duration::from_secs(10), call(&c, VOTE, b"two".to_vec()))
        .await
        .expect("a call to a stopped server must fail, not wait");
    assert_eq!(down.expect_err("server is down").code(), Code::Unavailable);
    // Back on the same port: the next calls go through a new connection.
    let l = TcpListener::bind(addr).await.expect("rebind the same port");
    let (_stop, _server) = serve(l, 32);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match call(&c, VOTE, b"three".to_vec()).await {
            Ok(r) => {
                assert_eq!(&r[..], b"three");
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "unexpected failure: {e}");
                assert!(Instant::now() < deadline, "the restarted server was not reached: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_servers_connection_is_dropped_by_the_keepalive_and_its_calls_fail() {
    // Accepts connections and never answers a byte (a frozen process's kernel does this).
    let (l, addr) = listener().await;
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((socket, _)) = l.accept().await {
            if held_tx.send(socket).await.is_err() {
                break;
            }
        }
    });
    let transport = H2Transport::with_keepalive(
        &addr.to_string(),
        Duration::from_millis(200),
        Duration::from_millis(300),
    )
    .expect("transport");
    let c = transport;
    let result = tokio::time::timeout(Duration::from_secs(20), call(&c, VOTE, b"hello".to_vec()))
        .await
        .expect("the keepalive must fail the call long before 20 s");
    let e = result.expect_err("a silent server cannot answer");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    // The connection was accepted (and is still held open by the silent server).
    assert!(held_rx.try_recv().is_ok(), "the silent server saw no connection");
}

/// `message` as one gRPC message: its 5-byte prefix, then the pieces.
fn framed(pieces: Vec<bytes::Bytes>) -> Vec<bytes::Bytes> {
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let mut prefix = vec![0u8];
    prefix.extend_from_slice(&u32::try_from(len).expect("small").to_be_bytes());
    std::iter::once(bytes::Bytes::from(prefix)).chain(pieces).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_in_pieces_arrives_whole_and_refusals_keep_their_status() {
    use prost::Message;
    let (l, addr) = listener().await;
    let (_stop, _server) = serve(l, 32);
    let t = H2Transport::new(&addr.to_string()).expect("transport");
    // RaftBytes { data } by hand: the field's key and length, then the payload as its own piece.
    let payload = bytes::Bytes::from(pattern((3 << 20) + 5));
    let mut head = bytes::BytesMut::new();
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut head);
    prost::encoding::encode_varint(payload.len() as u64, &mut head);
    let message = framed(vec![head.freeze(), payload.clone()]);
    let got =
        t.call_message("/cellar.raft.v1.Raft/Vote", http::HeaderMap::new(), &message).await.expect("vote");
    let echoed = RaftBytes::decode(got).expect("decodes");
    assert!(echoed.data[..] == payload[..], "the echo differs");
    // A refusal: code, message and metadata, not a decoded message.
    let refused = framed(vec![RaftBytes { data: b"x".to_vec() }.encode_to_vec().into()]);
    let e = t
        .call_message("/cellar.raft.v1.Raft/AppendEntries", http::HeaderMap::new(), &refused)
        .await
        .expect_err("refused");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "refused on purpose");
    assert_eq!(e.metadata().get("cellar-error").and_then(|v| v.to_str().ok()), Some("STALE_LEASE"));
    // A method the server does not have.
    let e = t
        .call_message("/cellar.raft.v1.Raft/Nothing", http::HeaderMap::new(), &refused)
        .await
        .expect_err("no method");
    assert_eq!(e.code(), Code::Unimplemented, "{e}");
}

/// tonic's generated client over the transport a [`master_connector`] makes: what a
/// frontend's master calls go through.
fn connected_client(
    addr: &str,
    options: &cellar_master_api::channel::ChannelOptions,
) -> RaftClient<cellar_master_api::client::Transport> {
    let transport = master_connector()(addr, options).expect("an address");
    RaftClient::new(cellar_master_api::client::Transport::Custom(transport))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_over_the_master_connector_get_answers_refusals_and_bounded_failures() {
    let (l, addr) = listener().await;
    let (stop, server) = serve(l, 32);
    let options = cellar_master_api::channel::ChannelOptions::default();
    let mut client = connected_client(&addr.to_string(), &options);
    // Answers of every size, each decoded by tonic from the stream as it came.
    for len in [0usize, 1, 4096, (1 << 20) + 3, 5 << 20] {
        let data = pattern(len);
        let got = client.vote(RaftBytes { data: data.clone() }).await.expect("vote").into_inner();
        assert!(got.data == data, "an echo of {len} bytes differs");
        let mut ask = b"b".to_vec();
        ask.extend_from_slice(&u32::try_from(len).expect("small").to_le_bytes());
        let big = client.append_entries(RaftBytes { data: ask }).await.expect("big").into_inner();
        assert_eq!(big.data.len(), len);
        assert!(big.data.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "an answer of {len} bytes");
    }
    // A refusal keeps its code, message and metadata (what MasterClient branches on).
    let e = client.append_entries(RaftBytes { data: b"x".to_vec() }).await.expect_err("refused");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), "refused on purpose");
    assert_eq!(e.metadata().get("cellar-error").and_then(|v| v.to_str().ok()), Some("STALE_LEASE"));
    // Sixteen calls at once, each with its own answer.
    let calls = (0..16u8).map(|i| {
        let mut c = client.clone();
        async move { c.vote(RaftBytes { data: vec![i; 100] }).await.map(|r| r.into_inner().data) }
    });
    for (i, got) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(got.expect("concurrent vote"), vec![i as u8; 100]);
    }
    // A request over the limit is refused before it is sent.
    let mut unlimited = RaftClient::new(cellar_master_api::client::Transport::Custom(
        master_connector()(&addr.to_string(), &options).expect("an address"),
    ))
    .max_encoding_message_size(usize::MAX);
    let e = unlimited
        .vote(RaftBytes { data: vec![0; cellar_master_api::channel::API_MESSAGE_MAX_BYTES + 1] })
        .await
        .expect_err("over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    // The server gone: a call fails as Unavailable (MasterClient then tries the next
    // master), within the connect bound, not at some later deadline.
    let _ = stop.send(());
    let _ = server.await;
    let started = Instant::now();
    let e = client.vote(RaftBytes { data: vec![1] }).await.expect_err("no server");
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(started.elapsed() < options.connect_timeout + Duration::from_secs(5), "{:?}", started.elapsed());
    // A malformed address is refused when the transport is made.
    assert!(master_connector()("not an address at all", &options).is_err());
}
