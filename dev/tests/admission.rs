//! Slow clients do not hold the door: stalled HTTP uploads time out and free their put
//! permits, gRPC puts are admitted before their bodies are decoded, and the number of
//! open HTTP connections is capped. The bytes of put bodies and of blocks read for gets
//! held at once are bounded, and small batches of puts append one at a time. Each test runs
//! a dev cell (over gRPC, as on separate machines) and a second frontend with the settings
//! under test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use cellar_dev::DevCell;
use cellar_frontend::s3::body::Origin;
use cellar_frontend::{FrontendConfig, FrontendHandle, PUTS_IN_FLIGHT_MAX};
use cellar_proto::frontend as fpb;
use cellar_proto::volume as vpb;
use cellar_volume_api::cluster::LocalExtents;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any awaited condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(60);

async fn cell(dir: &std::path::Path) -> DevCell {
    common::start_cell(dir, true).await
}

async fn frontend(cell: &DevCell, tweak: impl FnOnce(&mut FrontendConfig)) -> FrontendHandle {
    let mut config = FrontendConfig::new("127.0.0.1:0", cell.endpoints.masters.clone());
    config.holder = format!("frontend-under-test-{}", std::process::id());
    config.volume_size_bytes = Some(8 << 20);
    tweak(&mut config);
    cellar_frontend::start(config).await.expect("start the frontend")
}

/// A frontend whose get byte budget (and largest block) is `budget`, after a put of a block
/// whose record takes the whole budget and of a 4 KiB block through it: the frontend, the
/// large block and the small one.
async fn get_budget_frontend(
    cell: &DevCell,
    budget: u64,
    tweak: impl FnOnce(&mut FrontendConfig),
) -> (FrontendHandle, Vec<u8>, Vec<u8>) {
    let fe = frontend(cell, |c| {
        c.block_size_max_bytes = Some(budget);
        c.get_blocks_in_flight_max_bytes = budget;
        tweak(c);
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/blocks", fe.addr);
    let large = vec![1u8; budget as usize - 64];
    let small = vec![2u8; 4096];
    for body in [&large, &small] {
        let resp = http.put(&url).body(body.clone()).send().await.expect("put");
        assert_eq!(resp.status().as_u16(), 201);
    }
    (fe, large, small)
}

/// Waits until `check` holds, failing after [`WAIT`].
async fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw client that sends a put's headers and the first bytes of its body, then stalls.
async fn stalled_upload(addr: std::net::SocketAddr) -> TcpStream {
    stalled_upload_of(addr, 4096).await
}

/// [`stalled_upload`] of a body of `len` bytes (its first 10 sent; the rest are
/// [`FILL`]).
async fn stalled_upload_of(addr: std::net::SocketAddr, len: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!("PUT /v1/blocks HTTP/1.1\r\nhost: cellar\r\ncontent-length: {len}\r\n\r\n0123456789");
    s.write_all(head.as_bytes()).await.expect("send headers");
    s
}

/// The bytes after the first 10 of a stalled upload's body.
const FILL: u8 = b'x';

/// What the server says on `s` within `within`: the first bytes, empty for a closed
/// connection, `None` for nothing at all.
async fn answer(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 256];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Ok(Err(_)) => Some(String::new()),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_uploads_get_408_and_no_longer_block_a_normal_put() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let idle = Duration::from_millis(500);
    let fe = frontend(&cell, |c| {
        c.put_body_idle_timeout = idle;
        c.put_body_timeout = Duration::from_secs(2);
    })
    .await;

    // One more stalled upload than there are put permits: every permit is held.
    let mut stalled = Vec::new();
    for _ in 0..=PUTS_IN_FLIGHT_MAX {
        stalled.push(stalled_upload(fe.addr).await);
    }
    wait_for("the last stalled upload to wait for a permit", || {
        fe.blocks.metrics.put_admission_waits.get() >= 1
    })
    .await;

    let started = Instant::now();
    let http = reqwest::Client::new();
    let put = http.put(format!("http://{}/v1/blocks", fe.addr)).body(vec![7u8; 4096]).send();
    let resp = tokio::time::timeout(WAIT, put).await.expect("the normal put was answered").expect("put");
    assert_eq!(resp.status().as_u16(), 201);
    // The stalled uploads give their permits back after the idle timeout (then the last
    // one waits its own turn): the normal put waited about one idle timeout.
    let waited = started.elapsed();
    assert!(waited < idle * 6, "the normal put waited {waited:?}");

    for (i, s) in stalled.iter_mut().enumerate() {
        let got = answer(s, WAIT).await.unwrap_or_else(|| panic!("stalled upload {i} got no answer"));
        assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "stalled upload {i}: {got:?}");
    }
    assert_eq!(fe.blocks.metrics.put_body_timeouts.get(), PUTS_IN_FLIGHT_MAX as u64 + 1);
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_put_waits_for_admission_before_its_body_is_decoded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let fe = frontend(&cell, |c| c.grpc = Some("127.0.0.1:0".into())).await;
    let grpc_addr = fe.grpc_addr.expect("grpc served");

    // Every put permit is taken, as by that many puts in progress.
    let mut held = Vec::new();
    for _ in 0..PUTS_IN_FLIGHT_MAX {
        held.push(fe.blocks.admit_put().await);
    }
    let put = tokio::spawn(async move {
        let client =
            fpb::blocks_client::BlocksClient::connect(format!("http://{grpc_addr}")).await.expect("connect");
        client
            .max_encoding_message_size(8 << 20)
            .put(fpb::PutRequest { data: vec![3u8; 1 << 20].into(), expected_sha256: Vec::new() })
            .await
    });
    wait_for("the gRPC put to wait for a permit", || fe.blocks.metrics.put_admission_waits.get() == 1).await;
    assert_eq!(
        fe.blocks.metrics.grpc_put_bodies_decoded.get(),
        0,
        "the body was decoded before the put was admitted"
    );

    drop(held);
    let resp = tokio::time::timeout(WAIT, put).await.expect("answered").expect("task").expect("put");
    assert_eq!(resp.into_inner().size, 1 << 20);
    assert_eq!(fe.blocks.metrics.grpc_put_bodies_decoded.get(), 1);
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_limit_wait_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let fe = frontend(&cell, |c| c.http_connections_max = 4).await;
    let request = b"GET /metrics HTTP/1.1\r\nhost: cellar\r\n\r\n";

    // Four open connections, each answered once and kept alive.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(fe.addr).await.expect("connect");
        s.write_all(request).await.expect("send");
        let got = answer(&mut s, WAIT).await.expect("answered");
        assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
        open.push(s);
    }
    // A fifth is not served while they stay open.
    let mut fifth = TcpStream::connect(fe.addr).await.expect("connect (backlog)");
    fifth.write_all(request).await.expect("send");
    assert_eq!(answer(&mut fifth, Duration::from_millis(500)).await, None, "a fifth connection was served");
    // Once one closes, it is.
    drop(open.pop());
    let got = answer(&mut fifth, WAIT).await.expect("served after a close");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_past_the_byte_budget_wait_until_a_body_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let budget = 1u64 << 20;
    let fe = frontend(&cell, |c| {
        c.block_size_max_bytes = Some(budget);
        c.put_bodies_in_flight_max_bytes = budget;
    })
    .await;

    // Four uploads of a quarter of the budget each, stalled after their first bytes: the
    // whole budget is held, though only 4 of the put permits are.
    let quarter = (budget / 4) as usize;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_upload_of(fe.addr, quarter).await);
    }
    wait_for("the four uploads to hold the whole budget", || fe.blocks.bytes_held().put_bodies == budget)
        .await;
    assert_eq!(fe.blocks.metrics.put_admission_waits.get(), 0);
    let http = reqwest::Client::new();
    let small = vec![5u8; 4096];
    let put = tokio::spawn({
        let (http, url, body) = (http.clone(), format!("http://{}/v1/blocks", fe.addr), small.clone());
        async move { http.put(url).body(body).send().await }
    });
    wait_for("the small put to wait for room in the byte budget", || {
        fe.blocks.metrics.put_admission_waits.get() == 1
    })
    .await;
    assert!(!put.is_finished(), "a put was served past the byte budget");

    // One stalled upload sends the rest of its body: it is stored, its bytes are released,
    // and the small put goes through.
    let mut first = stalled.remove(0);
    first.write_all(&vec![FILL; quarter - 10]).await.expect("send the rest");
    let got = answer(&mut first, WAIT).await.expect("the finished upload was answered");
    assert!(got.starts_with("HTTP/1.1 201"), "{got:?}");
    let resp = tokio::time::timeout(WAIT, put).await.expect("answered").expect("task").expect("put");
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(
        fe.blocks.bytes_held().put_bodies,
        3 * quarter as u64,
        "the three stalled uploads hold theirs"
    );
    let mut expected = b"0123456789".to_vec();
    expected.resize(quarter, FILL);
    let stored = http
        .get(format!("http://{}/v1/blocks/{}", fe.addr, hex::encode(sha2::Sha256::digest(&expected))))
        .send()
        .await
        .expect("get");
    assert_eq!(stored.status().as_u16(), 200);
    assert_eq!(stored.bytes().await.expect("body").as_ref(), expected.as_slice());
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gets_past_the_byte_budget_wait_until_a_block_is_handed_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let (fe, large, small) = get_budget_frontend(&cell, 1 << 20, |_| {}).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/blocks", fe.addr);
    let key = |b: &[u8]| -> [u8; 32] { sha2::Sha256::digest(b).into() };

    // A get holding the large block (its record takes the whole budget) until dropped.
    let held = fe.blocks.get(&key(&large)).await.expect("get the large block");
    assert!(held.bytes == large[..]);
    let get = tokio::spawn({
        let (http, url) = (http.clone(), format!("{url}/{}", hex::encode(key(&small))));
        async move { http.get(url).send().await }
    });
    wait_for("the small get to wait for room in the byte budget", || {
        fe.blocks.metrics.get_admission_waits.get() == 1
    })
    .await;
    assert!(!get.is_finished(), "a get was served past the byte budget");

    drop(held);
    let resp = tokio::time::timeout(WAIT, get).await.expect("answered").expect("task").expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), small.as_slice());
    // Served gets gave their share back.
    wait_for("the served get to release its share", || fe.blocks.bytes_held().get_blocks == 0).await;
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_uploads_stay_within_the_put_byte_budget_and_all_finish() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let block = 1u64 << 20;
    let budget = 2 * block;
    let fe = frontend(&cell, |c| {
        c.block_size_max_bytes = Some(block);
        c.put_bodies_in_flight_max_bytes = budget;
    })
    .await;

    // What the budget holds, sampled while the uploads run.
    let (stop, most) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let sampler = tokio::spawn({
        let (blocks, stop, most) = (fe.blocks.clone(), stop.clone(), most.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                most.fetch_max(blocks.bytes_held().put_bodies, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    });
    // Six objects of five and a half blocks at once, each body in 64 KiB chunks of no
    // declared length: 33 blocks through a budget of two.
    let objects: Vec<Vec<u8>> = (0..6u8)
        .map(|i| (0..(11 * block / 2) as usize).map(|n| (n as u8).wrapping_mul(31).wrapping_add(i)).collect())
        .collect();
    let uploads = objects.iter().map(|o| {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            o.chunks(64 << 10).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let body = s3s::dto::StreamingBlob::wrap(futures::stream::iter(chunks));
        cellar_frontend::s3::body::ingest(&fe.blocks, body, &[], u64::MAX, false, Origin::Client)
    });
    let results = tokio::time::timeout(WAIT, futures::future::join_all(uploads))
        .await
        .expect("an upload never finished");
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");

    for (i, (object, result)) in objects.iter().zip(results).enumerate() {
        let ingested = result.unwrap_or_else(|e| panic!("upload {i}: {e:?}"));
        assert_eq!(ingested.size_bytes, object.len() as u64, "upload {i}");
        assert_eq!(ingested.blocks.len(), 6, "upload {i}");
        let mut back = Vec::new();
        for b in &ingested.blocks {
            let hash: [u8; 32] = b.hash.as_slice().try_into().expect("32-byte hash");
            back.extend_from_slice(
                &fe.blocks.get(&hash).await.expect("read a stored block").bytes.to_bytes(),
            );
        }
        assert!(back == *object, "upload {i} read back different bytes");
    }
    let most = most.load(Ordering::Relaxed);
    assert!(most > 0 && most <= budget, "the uploads held {most} bytes of a budget of {budget}");
    assert!(fe.blocks.metrics.put_admission_waits.get() > 0, "no upload waited: the budget was never full");
    assert_eq!(fe.blocks.bytes_held().put_bodies, 0, "every share was given back");
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_s3_upload_times_out_and_gives_its_share_back() {
    use futures::StreamExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let idle = Duration::from_millis(500);
    let fe = frontend(&cell, |c| {
        c.put_body_idle_timeout = idle;
        c.put_body_timeout = Duration::from_secs(2);
    })
    .await;

    // One chunk, then nothing: the upload holds a block's share until the idle timeout.
    let first: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::from(vec![9u8; 64 << 10]));
    let stalled = futures::stream::iter(vec![first]).chain(futures::stream::pending());
    let body = s3s::dto::StreamingBlob::wrap(stalled);
    let started = Instant::now();
    let upload = cellar_frontend::s3::body::ingest(&fe.blocks, body, &[], u64::MAX, false, Origin::Client);
    let got = tokio::time::timeout(WAIT, upload).await.expect("the stalled upload never ended");
    let Err(e) = got else { panic!("a stalled upload was stored") };
    assert_eq!(*e.code(), s3s::S3ErrorCode::RequestTimeout, "{e:?}");
    assert!(started.elapsed() >= idle, "timed out before the idle timeout: {:?}", started.elapsed());
    assert_eq!(fe.blocks.bytes_held().put_bodies, 0, "the stalled upload kept its share");

    // A body trickling a byte at a time (never idle) still ends at the block's total time.
    let trickle = futures::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(vec![n as u8])), n + 1))
    });
    let started = Instant::now();
    let upload = cellar_frontend::s3::body::ingest(
        &fe.blocks,
        s3s::dto::StreamingBlob::wrap(trickle),
        &[],
        u64::MAX,
        false,
        Origin::Client,
    );
    let got = tokio::time::timeout(WAIT, upload).await.expect("the trickling upload never ended");
    let Err(e) = got else { panic!("a trickling upload of an endless body was stored") };
    assert_eq!(*e.code(), s3s::S3ErrorCode::RequestTimeout, "{e:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "ended before the block's total time");
    assert_eq!(fe.blocks.bytes_held().put_bodies, 0, "the trickling upload kept its share");
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_holds_its_share_until_its_write_stalls_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let budget = 4u64 << 20;
    let (fe, large, small) =
        get_budget_frontend(&cell, budget, |c| c.response_write_stall_timeout = Duration::from_secs(2)).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/blocks", fe.addr);
    let key = |b: &[u8]| -> String { hex::encode(sha2::Sha256::digest(b)) };

    // A client asks for the large block (its record takes the whole budget) and reads
    // nothing, with a receive buffer too small for the block.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("receive buffer");
    let mut stalled = socket.connect(fe.addr).await.expect("connect");
    let request = format!("GET /v1/blocks/{} HTTP/1.1\r\nhost: cellar\r\n\r\n", key(&large));
    stalled.write_all(request.as_bytes()).await.expect("send the request");
    wait_for("the stalled get to hold its share", || fe.blocks.bytes_held().get_blocks > budget / 2).await;

    // Its bytes keep the share while they wait to be written: another get waits.
    let get = tokio::spawn({
        let (http, url) = (http.clone(), format!("{url}/{}", key(&small)));
        async move { http.get(url).send().await }
    });
    wait_for("the small get to wait for room in the byte budget", || {
        fe.blocks.metrics.get_admission_waits.get() == 1
    })
    .await;
    assert!(!get.is_finished(), "a get was served past the byte budget");

    // Once the stalled write has been blocked for the timeout, its connection is closed,
    // the share comes back and the waiting get is served.
    let resp = tokio::time::timeout(WAIT, get).await.expect("answered").expect("task").expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), small.as_slice());
    wait_for("every share to come back", || fe.blocks.bytes_held().get_blocks == 0).await;
    // The stalled client gets the answer cut short: fewer bytes than the block, then the end.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout(WAIT, stalled.read(&mut buf)).await.expect("the connection ends") {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(got < large.len(), "the stalled answer was sent whole ({got} bytes)");
    // Each get is counted once: the small one served; the large one served if all its
    // bytes were read and handed to hyper before its write stalled (as a get read whole
    // is counted when read), else, handed on as it arrived and dropped before its last
    // piece, abandoned. Neither failed.
    let m = &fe.blocks.metrics;
    let (ok, abandoned) = (m.gets_ok.get(), m.streamed_gets_abandoned.get());
    assert_eq!(ok + abandoned, 2, "gets counted: {ok} served, {abandoned} abandoned");
    assert_eq!(m.gets_failed.get(), 0, "a get counted as failed");
    assert_eq!(m.connections_write_stalled.get(), 1, "the stalled connection's cut is counted once");
    assert!(
        fe.blocks.metrics.render().contains("cellar_frontend_connections_write_stalled_total 1"),
        "the cut is on /metrics"
    );
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

/// A gRPC get answers with the block's own buffers and keeps their share of the get byte
/// budget until they are written: a client that asks for a large block and reads nothing
/// holds it (tonic's encoded copy let it go once encoded), so another get waits, until the
/// client goes away. Gets read whole and refused ones still answer as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grpc_get_keeps_its_share_until_its_answer_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let budget = 4u64 << 20;
    let (fe, large, small) =
        get_budget_frontend(&cell, budget, |c| c.grpc = Some("127.0.0.1:0".into())).await;
    let grpc = fe.grpc_addr.expect("a gRPC listener");
    let key = |b: &[u8]| -> String { hex::encode(sha2::Sha256::digest(b)) };

    // Over tonic, whole: the large block (in several buffers) and the small one, byte for
    // byte; an unknown key and a malformed one refused with their codes.
    let mut client = fpb::blocks_client::BlocksClient::connect(format!("http://{grpc}"))
        .await
        .expect("connect")
        .max_decoding_message_size(8 << 20);
    for block in [&large, &small] {
        let got = client.get(fpb::BlockRef { hash: key(block) }).await.expect("get").into_inner();
        assert!(got.data == block[..] && !got.degraded, "a block of {} bytes read back wrong", block.len());
    }
    let missing = client.get(fpb::BlockRef { hash: key(b"never stored") }).await.expect_err("unknown");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        missing.metadata().get(cellar_proto::ERROR_CODE_KEY).and_then(|v| v.to_str().ok()),
        Some("NOT_FOUND")
    );
    let bad = client.get(fpb::BlockRef { hash: "xyz".into() }).await.expect_err("malformed");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    wait_for("the gets to give their shares back", || fe.blocks.bytes_held().get_blocks == 0).await;

    // A client on HTTP/2 itself, with the default 64 KiB stream window, asks for the large
    // block and never reads its answer.
    let tcp = tokio::net::TcpStream::connect(grpc).await.expect("connect");
    let (mut send, connection) = h2::client::handshake(tcp).await.expect("handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{grpc}/cellar.frontend.v1.Blocks/Get"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut body) = send.send_request(request, false).expect("send the request");
    let hash = key(&large);
    let mut message = vec![0u8, 0, 0, 0, 2 + hash.len() as u8, 0x0a, hash.len() as u8];
    message.extend_from_slice(hash.as_bytes());
    body.send_data(bytes::Bytes::from(message), true).expect("send the message");
    let answer = tokio::time::timeout(WAIT, answer).await.expect("headers in time").expect("answer");
    assert_eq!(answer.status().as_u16(), 200);
    let unread = answer.into_body();
    wait_for("the unread answer to hold its share", || fe.blocks.bytes_held().get_blocks > budget / 2).await;

    // Its bytes keep the share while they wait to be written: another get waits.
    let http = reqwest::Client::new();
    let get = tokio::spawn({
        let url = format!("http://{}/v1/blocks/{}", fe.addr, key(&small));
        async move { http.get(url).send().await }
    });
    wait_for("the small get to wait for room in the byte budget", || {
        fe.blocks.metrics.get_admission_waits.get() == 1
    })
    .await;
    assert!(!get.is_finished(), "a get was served past the byte budget");

    // The client goes away: the answer is dropped unsent, its share comes back and the
    // waiting get is served.
    drop((unread, body, send));
    driver.abort();
    let resp = tokio::time::timeout(WAIT, get).await.expect("answered").expect("task").expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), small.as_slice());
    wait_for("every share to come back", || fe.blocks.bytes_held().get_blocks == 0).await;
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

/// A PutObject body of one block leaves it unstored, hashed and holding its share of the
/// put budget, so that its index entry and the object's version commit in one Raft entry;
/// the version is refused alone when its bucket is gone (the block stays, unreferenced).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_of_one_block_commits_its_entry_and_version_together() {
    use cellar_proto::master as mpb;
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    let fe = frontend(&cell, |_| {}).await;
    let block = fe.blocks.block_size_max_bytes() as usize;
    let master = fe.blocks.cluster().master();
    let create = mpb::NsWriteRequest {
        request_id: None,
        op: Some(mpb::ns_write_request::Op::CreateBucket(mpb::CreateBucketOp { name: "bkt".into() })),
    };
    master.call_once(create, |mut c, r| async move { c.ns_write(r).await }).await.expect("create a bucket");
    let ingest = |body: Vec<u8>| {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            body.chunks(64 << 10).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        cellar_frontend::s3::body::ingest(
            &fe.blocks,
            s3s::dto::StreamingBlob::wrap(futures::stream::iter(chunks)),
            &[],
            u64::MAX,
            true,
            Origin::Client,
        )
    };
    let op = |bucket: &str, key: &str, blocks: Vec<mpb::BlockRef>, size: u64| mpb::PutVersionOp {
        bucket: bucket.into(),
        key: key.into(),
        fields: Some(mpb::VersionFields {
            size_bytes: size,
            etag: "\"e\"".into(),
            blocks,
            ..Default::default()
        }),
    };

    // A whole block (in 64 KiB chunks) and a small body: neither is stored yet.
    for (n, len) in [(1u8, block), (2, 3 << 20)] {
        let body: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(n)).collect();
        let ingested = ingest(body.clone()).await.expect("ingest");
        let only = ingested.unstored.expect("a body of one block is left unstored");
        assert_eq!(only.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&body)));
        assert_eq!(ingested.blocks.len(), 1);
        assert!(fe.blocks.bytes_held().put_bodies > 0, "the unstored block gave its share back");
        assert!(
            matches!(
                fe.blocks.get(&only.sha256).await,
                Err(cellar_frontend::blocks::BlockError::NotFound(_))
            ),
            "the block was stored before its version"
        );
        // Its bucket is gone: the version is refused with NoSuchBucket, the block stays.
        let refused = fe
            .blocks
            .store_object_version(
                only.sha256,
                only.bytes.clone(),
                op("gone", "k", ingested.blocks.clone(), len as u64),
            )
            .await
            .expect("store")
            .expect("a new block is stored with its version");
        assert!(refused.written.is_none() && refused.error_code == "NoSuchBucket", "{refused:?}");
        assert_eq!(fe.blocks.get(&only.sha256).await.expect("read back").bytes.to_bytes(), body);
        drop(only.held);
        assert_eq!(fe.blocks.bytes_held().put_bodies, 0);
    }

    // One more block, with a bucket that exists: the version is added, and names the block
    // with its one reference.
    let body = vec![7u8; 5000];
    let ingested = ingest(body.clone()).await.expect("ingest");
    let only = ingested.unstored.expect("unstored");
    let result = fe
        .blocks
        .store_object_version(only.sha256, only.bytes.clone(), op("bkt", "k", ingested.blocks.clone(), 5000))
        .await
        .expect("store")
        .expect("stored with its version");
    let Some(mpb::NsWriteResponse { result: Some(mpb::ns_write_response::Result::Version(v)) }) =
        result.written
    else {
        panic!("the version was not added: {result:?}")
    };
    assert_eq!(v.key, "k");
    let got = master
        .call(|mut c| async move {
            c.ns_get_version(mpb::GetVersionRequest {
                bucket: "bkt".into(),
                key: "k".into(),
                version_id: None,
                with_entries: true,
            })
            .await
        })
        .await
        .expect("get the version");
    assert_eq!(got.entries.len(), 1);
    assert_eq!(got.entries[0].hash, only.sha256.to_vec());
    assert_eq!(got.entries[0].references, 1);
    // The same bytes again are indexed already: nothing is stored, the caller commits the
    // version by itself.
    let again = fe
        .blocks
        .store_object_version(only.sha256, only.bytes.clone(), op("bkt", "k2", ingested.blocks.clone(), 5000))
        .await
        .expect("store");
    assert!(again.is_none(), "an indexed block was stored again");

    // A body of a block and one byte is stored as it arrives (no unstored block).
    let ingested = ingest(vec![3u8; block + 1]).await.expect("ingest");
    assert!(ingested.unstored.is_none());
    assert_eq!(ingested.blocks.len(), 2);
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

/// The Appends a frontend sends, watched on their way to a volume server: each waits
/// [`APPEND_PAUSE`] first (so that batches the frontend lets go at once are in flight at
/// once), and the log notes each batch (a volume and offset: its replicas' Appends share
/// them) while any of its Appends is in flight.
struct WatchedAppends {
    inner: Arc<dyn LocalExtents>,
    log: Arc<Mutex<AppendLog>>,
}

/// Held back before each Append is forwarded.
const APPEND_PAUSE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct AppendLog {
    /// Batches in flight: Appends in flight of each, and whether it is small.
    in_flight: HashMap<(u64, u64), (usize, bool)>,
    /// The most small batches seen in flight at once.
    small_max: usize,
    /// Batches seen, and the records in them.
    batches: usize,
    records: usize,
}

#[tonic::async_trait]
impl LocalExtents for WatchedAppends {
    async fn append(
        &self,
        req: tonic::Request<vpb::AppendRequest>,
    ) -> Result<vpb::AppendResponse, tonic::Status> {
        let r = req.get_ref();
        let key = (r.volume_id, r.offset_bytes);
        let payload_bytes: u64 = r.records.iter().map(|rec| rec.payload.len() as u64).sum();
        let small = payload_bytes < cellar_frontend::APPEND_ALONE_BELOW_BYTES;
        {
            let mut log = self.log.lock().expect("log");
            let slot = log.in_flight.entry(key).or_insert((0, small));
            slot.0 += 1;
            let first = slot.0 == 1;
            if first {
                log.batches += 1;
                log.records += r.records.len();
            }
            let small_now = log.in_flight.values().filter(|(_, small)| *small).count();
            log.small_max = log.small_max.max(small_now);
        }
        tokio::time::sleep(APPEND_PAUSE).await;
        let answer = self.inner.append(req).await;
        let mut log = self.log.lock().expect("log");
        if let Some(slot) = log.in_flight.get_mut(&key) {
            slot.0 -= 1;
            if slot.0 == 0 {
                log.in_flight.remove(&key);
            }
        }
        answer
    }

    async fn read_record(
        &self,
        req: tonic::Request<vpb::ReadRecordRequest>,
    ) -> Result<vpb::ReadRecordResponse, tonic::Status> {
        self.inner.read_record(req).await
    }

    async fn read_fragment(
        &self,
        req: tonic::Request<vpb::ReadFragmentRequest>,
    ) -> Result<vpb::ReadFragmentResponse, tonic::Status> {
        self.inner.read_fragment(req).await
    }

    async fn write_fragment(
        &self,
        req: tonic::Request<tokio::sync::mpsc::Receiver<vpb::WriteFragmentRequest>>,
    ) -> Result<vpb::WriteFragmentResponse, tonic::Status> {
        self.inner.write_fragment(req).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_batches_append_one_at_a_time_and_take_in_the_puts_queued_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    // Whatever this host's load (the rule's default applies it only to a saturated host).
    let fe = frontend(&cell, |c| c.append_alone_host_busy_percent = 0).await;
    let log = Arc::new(Mutex::new(AppendLog::default()));
    // Every volume server reached through the watch (kept alive here: the cluster holds
    // them weakly).
    let watched: Vec<Arc<dyn LocalExtents>> = cell
        .volumes
        .iter()
        .map(|v| {
            let w: Arc<dyn LocalExtents> =
                Arc::new(WatchedAppends { inner: v.local_service(), log: log.clone() });
            fe.blocks.cluster().add_local(v.node_id, &w);
            w
        })
        .collect();

    // 64 clients put a distinct 4 KiB block each, all at once.
    let puts = 64usize;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/blocks", fe.addr);
    let blocks: Vec<Vec<u8>> =
        (0..puts).map(|i| format!("small batch {i} ").repeat(400).into_bytes()).collect();
    let sent: Vec<_> = blocks
        .iter()
        .map(|b| {
            let (http, url, body) = (http.clone(), url.clone(), b[..4096].to_vec());
            tokio::spawn(async move { http.put(url).body(body).send().await })
        })
        .collect();
    for put in sent {
        let resp = tokio::time::timeout(WAIT, put).await.expect("answered").expect("task").expect("put");
        assert_eq!(resp.status().as_u16(), 201);
    }
    {
        let log = log.lock().expect("log");
        assert_eq!(log.records, puts, "every put appended once");
        assert_eq!(log.small_max, 1, "small batches appended at once");
        assert!(log.batches < puts, "{} batches for {puts} puts: none took in the puts queued", log.batches);
        assert!(log.in_flight.is_empty());
    }
    // Every block reads back, byte for byte.
    for b in &blocks {
        let body = &b[..4096];
        let got =
            http.get(format!("{url}/{}", hex::encode(sha2::Sha256::digest(body)))).send().await.expect("get");
        assert_eq!(got.status().as_u16(), 200);
        assert_eq!(got.bytes().await.expect("body").as_ref(), body);
    }
    drop(watched);
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}

/// Small gets gathered over gRPC: while a read to a volume server is in flight, the next
/// ones to it wait and go together in one ReadRecords call; every block still reads back
/// byte for byte, and gathered calls happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_gets_gathered_into_read_records_calls_read_back_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cell = cell(dir.path()).await;
    // Whatever this host's load (the default gathers only on a saturated host).
    let fe = frontend(&cell, |c| c.gather_reads_host_busy_percent = 0).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/v1/blocks", fe.addr);
    let blocks: Vec<Vec<u8>> =
        (0..64).map(|i| format!("gathered get {i} ").repeat(300)[..4096].into()).collect();
    for b in &blocks {
        let resp = http.put(&url).body(b.clone()).send().await.expect("put");
        assert_eq!(resp.status().as_u16(), 201);
    }
    // Rounds of 64 gets at once until some were gathered (a read must find another in
    // flight to its server for that), each answered with its block's bytes.
    let counts =
        || (fe.blocks.cluster().gather_counts().calls(), fe.blocks.cluster().gather_counts().reads());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut rounds = 0;
    while counts().0 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no read gathered in {rounds} rounds of 64 gets at once"
        );
        rounds += 1;
        let gets: Vec<_> = blocks
            .iter()
            .map(|b| {
                let get = http.get(format!("{url}/{}", hex::encode(sha2::Sha256::digest(b))));
                let want = b.clone();
                tokio::spawn(async move {
                    let got = get.send().await.expect("get");
                    assert_eq!(got.status().as_u16(), 200);
                    assert!(
                        got.bytes().await.expect("body").as_ref() == want.as_slice(),
                        "the block's bytes"
                    );
                })
            })
            .collect();
        for get in gets {
            tokio::time::timeout(WAIT, get).await.expect("answered").expect("get read back");
        }
    }
    let (calls, reads) = counts();
    assert!(reads >= calls, "{reads} reads in {calls} gathered calls");
    fe.shutdown().await;
    cell.shutdown(dir.path()).await;
}
