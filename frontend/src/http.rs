//! The HTTP block API (the contract scripts and tools rely on) and `/metrics`:
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/blocks` + bytes | 201 `{"hash", "size", "deduplicated"}` |
//! | `PUT /v1/blocks/<hash>` + bytes | the same, after checking the bytes hash to `<hash>` (400 otherwise) |
//! | `GET /v1/blocks/<hash>` (`Range: bytes=...` too) | 200 (206) and the bytes; 404 unknown; 400 malformed |
//! | `HEAD /v1/blocks/<hash>` | 200 with Content-Length, or 404 |
//! | `DELETE /v1/blocks/<hash>` | 204, one reference dropped |
//! | `GET /v1/stat/<hash>` | JSON: size, references, read digest, volume, state, scheme, generation, placement |
//! | `GET /metrics` | Prometheus text |
//!
//! A body over `block_size_max_bytes` is answered 413 without being held in memory: once
//! its Content-Length or its bytes pass the limit, the rest is discarded as it arrives
//! (up to 64 MiB, then the connection is closed), so that the client reads the 413.
//! A put body must arrive within `put_body_timeout` in total and with no gap longer than
//! `put_body_idle_timeout`; a slower client gets 408 (`{"error": "TIMEOUT"}`, connection
//! closed) and its put permit is freed, so stalled uploads cannot hold every permit. At
//! most `http_connections_max` connections are served at once; more wait in the listen
//! backlog.
//! Errors are JSON `{"error": CODE, "message": ...}`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use cellar_master_api::client::MasterClient;
use cellar_volume_api::cluster::Cluster;
use cellar_volume_api::pieces::Pieces;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use crate::blocks::{Arriving, BlockError, Blocks, Getting, parse_hash};
use crate::config::FrontendConfig;
use crate::stall::WriteStallLimit;

type Shared = Arc<Blocks>;

impl IntoResponse for BlockError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            BlockError::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            BlockError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            BlockError::HashMismatch { .. } => (StatusCode::BAD_REQUEST, "HASH_MISMATCH"),
            BlockError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "TOO_LARGE"),
            BlockError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        };
        let body = serde_json::json!({ "error": code, "message": self.to_string() }).to_string();
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
    }
}

/// Bytes of an oversized body read and thrown away before the 413 is sent, so that an
/// HTTP/1.1 client still sending it reads the answer instead of a reset connection. Past
/// this the connection is closed.
pub const OVERSIZE_DRAIN_MAX_BYTES: u64 = 64 << 20;

/// Reads a block body of at most `block_size_max_bytes`. A longer body is refused with
/// 413 without being held in memory: its bytes past the limit are discarded as they
/// arrive (up to [`OVERSIZE_DRAIN_MAX_BYTES`]).
async fn read_body(blocks: &Blocks, headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    let (total, idle) = blocks.put_body_timeouts();
    match tokio::time::timeout(total, read_body_idle(blocks, headers, body, idle)).await {
        Ok(read) => read,
        Err(_) => Err(BodyError::Timeout(format!("the body did not arrive within {} ms", total.as_millis()))),
    }
}

/// Why a put body was not read.
enum BodyError {
    /// Too large, malformed.
    Block(BlockError),
    /// Too slow.
    Timeout(String),
}

impl From<BlockError> for BodyError {
    fn from(e: BlockError) -> Self {
        BodyError::Block(e)
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        match self {
            BodyError::Block(e) => e.into_response(),
            BodyError::Timeout(message) => {
                let body = serde_json::json!({ "error": "TIMEOUT", "message": message }).to_string();
                // The rest of the body is never read: the connection cannot be reused.
                let headers = [
                    (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (header::CONNECTION, HeaderValue::from_static("close")),
                ];
                (StatusCode::REQUEST_TIMEOUT, headers, body).into_response()
            }
        }
    }
}

/// The body length a request's Content-Length declares, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// [`read_body`] with a deadline between frames.
async fn read_body_idle(
    blocks: &Blocks,
    headers: &HeaderMap,
    mut body: Body,
    idle: std::time::Duration,
) -> Result<Bytes, BodyError> {
    let limit = blocks.block_size_max_bytes();
    let declared = declared_length(headers);
    let mut out: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    let mut seen = 0u64;
    let mut too_large = declared.is_some_and(|len| len > limit);
    loop {
        let Ok(frame) = tokio::time::timeout(idle, body.frame()).await else {
            return Err(BodyError::Timeout(format!("no body bytes for {} ms", idle.as_millis())));
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BlockError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len() as u64;
        if seen > limit {
            too_large = true;
            out = Vec::new();
        }
        if too_large {
            if seen > OVERSIZE_DRAIN_MAX_BYTES {
                break;
            }
            continue;
        }
        out.extend_from_slice(&data);
    }
    if too_large {
        return Err(BodyError::Block(BlockError::TooLarge {
            size_bytes: declared.unwrap_or(seen).max(seen),
            limit_bytes: limit,
        }));
    }
    Ok(Bytes::from(out))
}

async fn put_block(blocks: Shared, expected: Option<[u8; 32]>, headers: HeaderMap, body: Body) -> Response {
    let _admitted = blocks.admit_put().await;
    let declared = declared_length(&headers);
    let _held = blocks.hold_put_bytes(declared.unwrap_or(u64::MAX)).await;
    let bytes = match read_body(&blocks, &headers, body).await {
        Ok(b) => b,
        Err(e) => {
            blocks.metrics.puts_failed.add(1);
            if matches!(e, BodyError::Timeout(_)) {
                blocks.metrics.put_body_timeouts.add(1);
            }
            return e.into_response();
        }
    };
    match blocks.put(bytes, expected).await {
        Ok(outcome) => (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            serde_json::to_string(&outcome).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn put_new(State(blocks): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    put_block(blocks, None, headers, body).await
}

async fn put_keyed(
    State(blocks): State<Shared>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match parse_hash(&hash) {
        Ok(h) => put_block(blocks, Some(h), headers, body).await,
        Err(e) => {
            blocks.metrics.puts_failed.add(1);
            e.into_response()
        }
    }
}

/// A `Range: bytes=...` header against a block of `len` bytes: the byte range to send,
/// `Ok(None)` for the whole block, `Err` when unsatisfiable.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: answered with the whole block
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len),
        (s, e) => {
            let e: u64 = e.parse().map_err(|_| ())?;
            (s.parse().map_err(|_| ())?, e.saturating_add(1).min(len))
        }
    };
    if start >= len || start >= end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn get_block(State(blocks): State<Shared>, Path(hash): Path<String>, headers: HeaderMap) -> Response {
    let hash = match parse_hash(&hash) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let admitted = blocks.admit_get().await;
    if !headers.contains_key(header::RANGE) {
        // The whole block: handed on as it arrives where it can be.
        return match blocks.get_streamed(&hash).await {
            Ok(Getting::Whole(got)) => whole_block(got.bytes, admitted),
            Ok(Getting::Arriving(arriving)) => arriving_block(arriving, admitted),
            Err(e) => e.into_response(),
        };
    }
    // The block's bytes carry its share of the get budget until they are written.
    let crate::blocks::Got { bytes, .. } = match blocks.get(&hash).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let len = bytes.len() as u64;
    let octets = HeaderValue::from_static("application/octet-stream");
    match headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map(|v| parse_range(v, len)) {
        Some(Ok(Some((start, end)))) => {
            let content_range = format!("bytes {start}-{}/{len}", end - 1);
            // Within the block: parse_range keeps end <= len.
            let part = bytes.slice(start as usize..end as usize).unwrap_or_default();
            let mut resp =
                (StatusCode::PARTIAL_CONTENT, [(header::CONTENT_TYPE, octets)], held_body(part, admitted))
                    .into_response();
            if let Ok(v) = HeaderValue::from_str(&content_range) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        Some(Err(())) => {
            let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        _ => (StatusCode::OK, [(header::CONTENT_TYPE, octets)], held_body(bytes, admitted)).into_response(),
    }
}

fn whole_block(bytes: Pieces, admitted: Option<tokio::sync::OwnedSemaphorePermit>) -> Response {
    let octets = HeaderValue::from_static("application/octet-stream");
    (StatusCode::OK, [(header::CONTENT_TYPE, octets)], held_body(bytes, admitted)).into_response()
}

/// The block's bytes as they arrive, with their length announced: a get cut short (see
/// [`Arriving::next`]) ends the body early, and the client sees fewer bytes than announced.
fn arriving_block(arriving: Arriving, admitted: Option<tokio::sync::OwnedSemaphorePermit>) -> Response {
    let left_bytes = arriving.len() as u64;
    let stream = futures::stream::unfold(Some(arriving), |state| async move {
        let mut arriving = state?;
        match arriving.next().await {
            Ok(Some(piece)) => Some((Ok(piece), Some(arriving))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let body = ArrivingBody { stream: Box::pin(stream), left_bytes, _admitted: admitted };
    let octets = HeaderValue::from_static("application/octet-stream");
    (StatusCode::OK, [(header::CONTENT_TYPE, octets)], Body::new(body)).into_response()
}

type PieceStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A body of a block arriving (see [`arriving_block`]), its length exact.
struct ArrivingBody {
    stream: PieceStream,
    left_bytes: u64,
    _admitted: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl http_body::Body for ArrivingBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match futures::ready!(self.stream.as_mut().poll_next(cx)) {
            Some(Ok(piece)) => {
                self.left_bytes = self.left_bytes.saturating_sub(piece.len() as u64);
                Poll::Ready(Some(Ok(http_body::Frame::data(piece))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left_bytes)
    }
}

/// A response body of `bytes` that keeps `admitted` (the get's place among the gets in
/// flight) until hyper drops the body: once it has taken the bytes to write them, or the
/// client went away. The bytes' share of the byte budget stays with the bytes (see
/// [`crate::blocks::Got`]).
fn held_body(bytes: Pieces, admitted: Option<tokio::sync::OwnedSemaphorePermit>) -> Body {
    let left_bytes = bytes.len() as u64;
    Body::new(HeldBody { parts: bytes.into_parts().into_iter(), left_bytes, _admitted: admitted })
}

/// The block's buffers one after another: hyper writes them to the socket as a list (no
/// copy into one).
struct HeldBody {
    parts: std::vec::IntoIter<Bytes>,
    left_bytes: u64,
    _admitted: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let next = self.parts.next();
        if let Some(b) = &next {
            self.left_bytes -= b.len() as u64;
        }
        std::task::Poll::Ready(next.map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.left_bytes == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left_bytes)
    }
}

async fn head_block(State(blocks): State<Shared>, Path(hash): Path<String>) -> Response {
    blocks.metrics.other_requests.add(1);
    let hash = match parse_hash(&hash) {
        Ok(h) => h,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    };
    match blocks.size(&hash).await {
        Ok(size) => {
            let mut resp = StatusCode::OK.into_response();
            resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(size));
            resp
        }
        Err(BlockError::NotFound(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => e.into_response().status().into_response(),
    }
}

async fn delete_block(State(blocks): State<Shared>, Path(hash): Path<String>) -> Response {
    blocks.metrics.other_requests.add(1);
    let hash = match parse_hash(&hash) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match blocks.delete(&hash).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn stat_block(State(blocks): State<Shared>, Path(hash): Path<String>) -> Response {
    blocks.metrics.other_requests.add(1);
    let hash = match parse_hash(&hash) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match blocks.stat(&hash).await {
        Ok(s) => {
            let extent = |e: &cellar_proto::master::Extent| serde_json::json!({ "node": e.node_id, "disk": e.disk_id });
            let body = serde_json::json!({
                "hash": hex::encode(hash),
                "size": u64::from(s.entry.payload_bytes),
                "references": s.entry.references,
                "digest": (!s.entry.digest.is_empty()).then(|| hex::encode(&s.entry.digest)),
                "volume": s.volume.volume_id,
                "offset": s.entry.offset_bytes,
                "state": s.volume.state().name(),
                "scheme": cellar_proto::scheme_of(s.volume.scheme.as_ref()).ok().map(|scheme| scheme.to_string()),
                "generation": s.volume.generation,
                "volume_size": s.volume.size_bytes,
                "replicas": s.volume.replicas.iter().map(extent).collect::<Vec<_>>(),
                "fragments": s.volume.fragments.iter().map(extent).collect::<Vec<_>>(),
            });
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.to_string())
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(blocks): State<Shared>) -> Response {
    let ctype = HeaderValue::from_static("text/plain; version=0.0.4");
    let mut text = blocks.metrics.render();
    {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering;
        let w = &blocks.watcher;
        let _ = writeln!(
            text,
            "# HELP cellar_frontend_watcher_total Storage watcher: stored puts read back later."
        );
        let _ = writeln!(text, "# TYPE cellar_frontend_watcher_total counter");
        for (what, c) in [("intact", &w.checked), ("findings", &w.findings), ("dropped", &w.dropped)] {
            let _ = writeln!(
                text,
                "cellar_frontend_watcher_total{{what=\"{what}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
    }
    let cluster = blocks.cluster();
    for (name, help, value) in [
        (
            "cellar_frontend_hedged_reads_total",
            "Reads that asked another holder after the hedge delay.",
            cluster.hedged_reads(),
        ),
        (
            "cellar_frontend_gathered_read_calls_total",
            "ReadRecords calls that carried small reads gathered while another call was in flight.",
            cluster.gather_counts().calls(),
        ),
        (
            "cellar_frontend_gathered_reads_total",
            "Small reads those ReadRecords calls carried.",
            cluster.gather_counts().reads(),
        ),
        (
            "cellar_frontend_bad_extent_reports_total",
            "Bad extents reported to the master.",
            cluster.bad_extent_reports(),
        ),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
    }
    let held = blocks.bytes_held();
    for (name, help, value) in [
        ("cellar_frontend_put_body_bytes_held", "Bytes of the put byte budget held now.", held.put_bodies),
        ("cellar_frontend_get_block_bytes_held", "Bytes of the get byte budget held now.", held.get_blocks),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
    }
    ([(header::CONTENT_TYPE, ctype)], text).into_response()
}

/// The router of the HTTP API over `blocks`.
pub fn router(blocks: Shared) -> Router {
    Router::new()
        .route("/v1/blocks", put(put_new))
        .route("/v1/blocks/{hash}", put(put_keyed).get(get_block).head(head_block).delete(delete_block))
        .route("/v1/stat/{hash}", get(stat_block))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(blocks)
}

/// A TCP listener that holds at most as many open connections as it has slots: accepting
/// waits for a slot, and a connection gives its slot back when it is dropped (closed).
struct LimitedListener {
    inner: tokio::net::TcpListener,
    slots: Arc<Semaphore>,
    /// Longest a write may stay blocked (see [`crate::stall`]).
    write_stall: std::time::Duration,
    /// Where a connection cut for a stalled write is counted.
    metrics: Arc<crate::metrics::Metrics>,
}

/// An accepted connection holding one slot of its [`LimitedListener`].
pub struct LimitedStream {
    stream: WriteStallLimit<tokio::net::TcpStream>,
    _slot: OwnedSemaphorePermit,
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed; a failed acquire would only repeat.
        let slot = loop {
            if let Ok(slot) = self.slots.clone().acquire_owned().await {
                break slot;
            }
        };
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            LimitedStream {
                stream: WriteStallLimit::new(stream, self.write_stall, self.metrics.clone()),
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Why a frontend did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The masters' cell settings could not be read, or this frontend's sizes conflict
    /// with them.
    #[error("cell settings: {0}")]
    CellSettings(String),
    /// The HTTP address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running frontend.
pub struct FrontendHandle {
    /// The bound HTTP address.
    pub addr: SocketAddr,
    /// The bound gRPC address, if served.
    pub grpc_addr: Option<SocketAddr>,
    /// The bound S3 address, if served.
    pub s3_addr: Option<SocketAddr>,
    /// The block service.
    pub blocks: Shared,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl FrontendHandle {
    /// Stops serving (requests in progress finish) and seals the volumes it was writing.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.blocks.writers().seal_all().await;
    }
}

/// Starts a frontend serving the HTTP API on `config.http`.
pub async fn start(config: FrontendConfig) -> Result<FrontendHandle, StartError> {
    config.validate().map_err(StartError::Config)?;
    let listener = tokio::net::TcpListener::bind(&config.http)
        .await
        .map_err(|source| StartError::Listen { addr: config.http.clone(), source })?;
    let addr =
        listener.local_addr().map_err(|source| StartError::Listen { addr: config.http.clone(), source })?;
    // Masters in other processes over the lean HTTP/2 transport (a commit per put batch, a
    // namespace read per S3 call: tonic's `Channel` cost each of them three task hand-offs).
    let master = MasterClient::builder(&config.masters)
        .secret(config.secret.as_deref())
        .local(config.local_masters.as_ref())
        .connector(Some(cellar_volume_api::transport::master_connector()))
        .build()
        .map_err(|e| StartError::Config(e.to_string()))?;
    let cell = master.cell_settings().await.map_err(|e| StartError::CellSettings(e.to_string()))?;
    let limits = config.limits(&cell).map_err(StartError::CellSettings)?;
    tracing::info!(
        volume_size_bytes = limits.volume_size_bytes,
        block_size_max_bytes = limits.block_size_max_bytes,
        lease_renew_ms = limits.lease_renew.as_millis() as u64,
        "cell limits"
    );
    let cluster = Cluster::with_deadlines(master, config.secret.clone(), config.deadlines);
    let blocks = Arc::new(Blocks::new(cluster, &config, limits));
    let (stop, stop_rx) = watch::channel(false);
    let stop_rx_grpc = stop_rx.clone();
    let mut tasks = Vec::new();
    let app = router(blocks.clone());
    let connections_max = config.http_connections_max;
    let config_write_stall = config.response_write_stall_timeout;
    let stall_metrics = blocks.metrics.clone();
    let mut server_stop = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        // Answers go out at once: headers and body are separate writes, and Nagle's
        // algorithm against the client's delayed ACK costs 40 ms per small GET.
        let listener = LimitedListener {
            inner: listener,
            slots: Arc::new(Semaphore::new(connections_max)),
            write_stall: config_write_stall,
            metrics: stall_metrics,
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut LimitedStream| {
            let tcp = tcp.stream.get_mut();
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "frontend HTTP server stopped");
        }
    }));
    let (checker, watcher, watch_stop) = (blocks.clone(), blocks.watcher.clone(), stop_rx.clone());
    tasks.push(tokio::spawn(crate::watcher::run(
        watcher,
        move |hash| {
            let blocks = checker.clone();
            async move {
                match blocks.get(&hash).await {
                    Ok(_) => crate::watcher::Check::Intact,
                    Err(crate::blocks::BlockError::NotFound(_)) => crate::watcher::Check::Gone,
                    Err(e) => crate::watcher::Check::Failed(e.to_string()),
                }
            }
        },
        watch_stop,
    )));
    let (renewer, period, mut renew_stop) = (blocks.clone(), limits.lease_renew, stop_rx);
    tasks.push(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = renew_stop.changed() => {
                    if *renew_stop.borrow() {
                        return;
                    }
                }
                _ = tokio::time::sleep(period) => renewer.writers().renew_leases().await,
            }
        }
    }));
    let mut grpc_addr = None;
    if let Some(grpc) = &config.grpc {
        let listener = tokio::net::TcpListener::bind(grpc)
            .await
            .map_err(|source| StartError::Listen { addr: grpc.clone(), source })?;
        grpc_addr =
            Some(listener.local_addr().map_err(|source| StartError::Listen { addr: grpc.clone(), source })?);
        let service = crate::grpc::server(blocks.clone());
        let mut grpc_stop = stop_rx_grpc;
        // serve_with_incoming ignores the builder's tcp_nodelay: set it on each accepted socket
        // here, or small responses wait ~40 ms for a delayed ACK (Nagle).
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_millis(crate::TCP_KEEPALIVE_MS)));
        tasks.push(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(crate::GRPC_STREAMS_PER_CONNECTION_MAX))
                .initial_stream_window_size(Some(crate::GRPC_STREAM_WINDOW_BYTES))
                .initial_connection_window_size(Some(crate::GRPC_CONNECTION_WINDOW_BYTES))
                .http2_keepalive_interval(Some(Duration::from_millis(crate::GRPC_KEEPALIVE_INTERVAL_MS)))
                .http2_keepalive_timeout(Some(Duration::from_millis(crate::GRPC_KEEPALIVE_TIMEOUT_MS)))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "frontend gRPC server stopped");
            }
        }));
    }
    tasks.push(tokio::spawn(crate::compactor::run(
        blocks.clone(),
        config.compaction_bytes_per_sec,
        stop.subscribe(),
    )));
    let mut s3_addr = None;
    if let Some(s3) = &config.s3 {
        let listener = tokio::net::TcpListener::bind(s3)
            .await
            .map_err(|source| StartError::Listen { addr: s3.clone(), source })?;
        s3_addr =
            Some(listener.local_addr().map_err(|source| StartError::Listen { addr: s3.clone(), source })?);
        tasks.push(tokio::spawn(crate::s3::serve(
            listener,
            blocks.clone(),
            connections_max,
            stop.subscribe(),
        )));
    }
    tracing::info!(%addr, ?grpc_addr, ?s3_addr, "frontend serving the block API");
    Ok(FrontendHandle { addr, grpc_addr, s3_addr, blocks, stop, tasks })
}
