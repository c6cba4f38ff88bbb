//! The transport of the unary extent calls (Append, ReadRecord, ReadFragment), and of a
//! frontend's calls to masters ([`master_connector`]): gRPC straight over one HTTP/2
//! connection per server, on the `h2` crate.
//!
//! tonic's `Channel` hands every request to a buffer task, which hands it to hyper's
//! connection task, which spawns a task to wait for the response and pass it back: three
//! hand-offs between tasks per call, each a thread wake-up when the tasks run on different
//! workers, and the request's headers and body written to the socket in two writes (two
//! wake-ups of the server). Measured on a cell of processes on 2 cores: 4.8 context switches
//! and ~105 us of the frontend's CPU per 4 KiB get, most of it in the scheduler. Here the
//! calling task queues the request's headers and whole body itself (one write, once the
//! connection task runs) and reads the response itself; the connection task only moves
//! frames between the socket and the streams.
//!
//! Messages are encoded and decoded by the callers ([`crate::cluster`], with prost): a
//! request goes as the pieces it was encoded in, so block payloads are never copied into
//! an encoded message ([`crate::wire`]), and a response is read into one buffer of exactly
//! its announced size (tonic's decoder grew its buffer by doubling, holding up to twice a
//! 4 MiB block per get in flight).
//!
//! The rest is what `Channel` did: connections are made lazily (within [`CONNECT_TIMEOUT`])
//! and replaced when they fail; an HTTP/2 ping every [`KEEPALIVE_INTERVAL`], even when
//! idle, and a connection whose ping is not answered within [`KEEPALIVE_TIMEOUT`] is
//! dropped, failing its calls at once, instead of each finding out at its deadline. Flow
//! control windows and the frame size are those of [`crate::cluster`]'s channels. Streaming
//! calls (WriteFragment, scans) and control calls stay on `Channel`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cellar_master_api::channel::{API_MESSAGE_MAX_BYTES, ChannelOptions};
use cellar_master_api::client::{BoxError, Connector, CustomTransport};
use http_body::{Body, Frame};
use tonic::Status;

use crate::deadline::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};
use crate::pieces::Pieces;
use crate::{
    ANSWER_CONNECTION_WINDOW_BYTES, CONNECTION_STREAMS_MAX, FRAME_MAX_BYTES, MESSAGE_MAX_BYTES,
    STREAM_WINDOW_BYTES,
};

/// How long a connection attempt to a volume server may take (TCP and HTTP/2 handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Times a call is sent when the server refuses its stream (REFUSED_STREAM).
pub const REFUSED_ATTEMPTS_MAX: u32 = 8;

/// Connections made by this process, ever (a test sees a dead connection replaced).
static CONNECTIONS_MADE: AtomicU64 = AtomicU64::new(0);

/// How many connections [`H2Transport`]s of this process have made.
pub fn connections_made() -> u64 {
    CONNECTIONS_MADE.load(Ordering::Relaxed)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

/// An `h2` error as a status: a stream the server reset maps as gRPC says; anything else
/// (the connection failed or was dropped) is Unavailable.
fn h2_status(addr: &str, e: h2::Error) -> Status {
    if let Some(reason) = e.reason()
        && !e.is_go_away()
        && e.is_reset()
    {
        return match reason {
            h2::Reason::CANCEL => Status::cancelled(format!("{addr}: stream cancelled")),
            h2::Reason::REFUSED_STREAM => Status::unavailable(format!("{addr}: stream refused")),
            h2::Reason::ENHANCE_YOUR_CALM => Status::resource_exhausted(format!("{addr}: {e}")),
            _ => Status::internal(format!("{addr}: {e}")),
        };
    }
    unavailable(addr, e)
}

/// One live connection: its request handle and whether its connection task has ended.
#[derive(Clone)]
struct Connection {
    send: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

struct Inner {
    /// `host:port`.
    addr: String,
    authority: http::uri::Authority,
    current: Mutex<Option<Connection>>,
    /// Held while connecting, so that concurrent calls wait for one attempt.
    connecting: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
}

/// The unary gRPC transport to one volume server (cheap to clone; clones share the
/// connection).
#[derive(Clone)]
pub struct H2Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for H2Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Transport").field("addr", &self.inner.addr).finish()
    }
}

impl H2Transport {
    /// A transport to `addr` (`host:port`, or `http://host:port`); connects on first use.
    pub fn new(addr: &str) -> Result<H2Transport, String> {
        H2Transport::with_keepalive(addr, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
    }

    /// A transport to `addr` that pings every `interval` and drops a connection whose ping
    /// is not answered within `timeout`.
    pub fn with_keepalive(addr: &str, interval: Duration, timeout: Duration) -> Result<H2Transport, String> {
        H2Transport::with_options(addr, CONNECT_TIMEOUT, interval, timeout)
    }

    /// [`H2Transport::with_keepalive`], a connection attempt bounded by `connect_timeout`.
    pub fn with_options(
        addr: &str,
        connect_timeout: Duration,
        interval: Duration,
        timeout: Duration,
    ) -> Result<H2Transport, String> {
        let addr = addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/').to_string();
        let authority: http::uri::Authority = addr.parse().map_err(|e| format!("address {addr}: {e}"))?;
        Ok(H2Transport {
            inner: Arc::new(Inner {
                addr,
                authority,
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                connect_timeout,
                keepalive_interval: interval,
                keepalive_timeout: timeout,
            }),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn live(&self) -> Option<Connection> {
        lock(&self.current).as_ref().filter(|c| !c.closed.load(Ordering::Acquire)).cloned()
    }

    /// The live connection, made now if there is none.
    async fn connection(&self) -> Result<Connection, Status> {
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let bound = self.connect_timeout;
        let _connecting = tokio::time::timeout(bound, self.connecting.lock())
            .await
            .map_err(|_| unavailable(&self.addr, "timed out waiting for another connection attempt"))?;
        if let Some(c) = self.live() {
            return Ok(c);
        }
        let made = tokio::time::timeout(bound, self.connect())
            .await
            .map_err(|_| unavailable(&self.addr, format!("no connection within {bound:?}")))??;
        *lock(&self.current) = Some(made.clone());
        Ok(made)
    }

    async fn connect(&self) -> Result<Connection, Status> {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| unavailable(&format!("connecting to {}", self.addr), e))?;
        tcp.set_nodelay(true).map_err(|e| unavailable(&self.addr, e))?;
        let (send, mut connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(ANSWER_CONNECTION_WINDOW_BYTES)
            .max_frame_size(FRAME_MAX_BYTES)
            // Until the server's settings arrive, open no more streams than cellar's
            // servers allow (more would be refused, and sent again).
            .initial_max_send_streams(CONNECTION_STREAMS_MAX as usize)
            .max_header_list_size(16 << 10)
            .enable_push(false)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(|e| h2_status(&self.addr, e))?;
        CONNECTIONS_MADE.fetch_add(1, Ordering::Relaxed);
        let closed = Arc::new(AtomicBool::new(false));
        let mut ping_pong = connection.ping_pong();
        let (addr, ended) = (self.addr.clone(), closed.clone());
        let (interval, timeout) = (self.keepalive_interval, self.keepalive_timeout);
        tokio::spawn(async move {
            let keepalive = async {
                let Some(pings) = ping_pong.as_mut() else { return std::future::pending().await };
                loop {
                    tokio::time::sleep(interval).await;
                    match tokio::time::timeout(timeout, pings.ping(h2::Ping::opaque())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("keepalive ping failed: {e}"),
                        Err(_) => return format!("keepalive ping unanswered for {timeout:?}"),
                    }
                }
            };
            // Dropping the connection (when the keepalive gives up) fails its open streams.
            tokio::select! {
                result = &mut connection => {
                    if let Err(e) = result {
                        tracing::debug!(%addr, error = %e, "connection ended");
                    }
                }
                why = keepalive => tracing::warn!(%addr, %why, "dropping a connection"),
            }
            ended.store(true, Ordering::Release);
        });
        Ok(Connection { send, closed })
    }

    fn forget(&self, failed: &Connection) {
        failed.closed.store(true, Ordering::Release);
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(&c.closed, &failed.closed)) {
            *current = None;
        }
    }

    fn uri(&self, path: http::uri::PathAndQuery) -> Result<http::Uri, Status> {
        http::Uri::builder()
            .scheme(http::uri::Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Status::internal(format!("request uri: {e}")))
    }

    /// Sends the request (its body in `pieces`) and waits for the response's headers.
    async fn exchange(
        &self,
        head: &http::request::Parts,
        pieces: &[Bytes],
    ) -> Result<http::Response<H2Body>, Status> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send(head, pieces).await {
                // The server refused the stream before looking at it (more streams than
                // it allows, opened before its limit was known here): nothing was done,
                // so sending again is safe, even for a call that is not idempotent.
                Err(e)
                    if e.reason() == Some(h2::Reason::REFUSED_STREAM) && attempt < REFUSED_ATTEMPTS_MAX =>
                {
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(h2_status(&self.addr, e)),
                Ok(Err(status)) => return Err(status),
                Ok(Ok(response)) => {
                    let addr = self.addr.clone();
                    return Ok(response.map(|recv| H2Body { recv, state: BodyState::Data, addr }));
                }
            }
        }
    }

    /// Sends the request once; a connection that fails is forgotten (the next call makes a
    /// new one).
    async fn send(
        &self,
        head: &http::request::Parts,
        pieces: &[Bytes],
    ) -> Result<Result<http::Response<h2::RecvStream>, Status>, h2::Error> {
        let connection = match self.connection().await {
            Ok(c) => c,
            Err(status) => return Ok(Err(status)),
        };
        let forget = |e: h2::Error| {
            if !e.is_reset() {
                self.forget(&connection);
            }
            e
        };
        let mut send = connection.send.clone().ready().await.map_err(forget)?;
        let mut request = http::Request::new(());
        *request.method_mut() = head.method.clone();
        *request.uri_mut() = head.uri.clone();
        *request.headers_mut() = head.headers.clone();
        let (response, mut stream) = send.send_request(request, false).map_err(forget)?;
        // Whole pieces, without reserving capacity: h2 holds them (shared, not copied) until
        // the flow-control windows let them out.
        match pieces.split_last() {
            Some((last, rest)) => {
                for piece in rest {
                    stream.send_data(piece.clone(), false).map_err(forget)?;
                }
                stream.send_data(last.clone(), true).map_err(forget)?;
            }
            None => stream.send_data(Bytes::new(), true).map_err(forget)?,
        }
        Ok(Ok(response.await.map_err(forget)?))
    }
}

impl H2Transport {
    /// A unary call of `path` (`/package.Service/Method`) whose request is `message`: one
    /// gRPC message, its 5-byte prefix included, in pieces sent as they are (see
    /// [`crate::wire`]). `headers` are sent with the call (`grpc-timeout`, the secret).
    /// Returns the response's message, without its prefix.
    pub async fn call_message(
        &self,
        path: &'static str,
        headers: http::HeaderMap,
        message: &[Bytes],
    ) -> Result<Bytes, Status> {
        let pieces = self.call_message_pieces(path, headers, message, &mut |_| {}).await?;
        Ok(pieces.to_bytes().slice(5..))
    }

    /// [`H2Transport::call_message`], the response's message left in the buffers it
    /// arrived in (no copy into one): its 5-byte prefix included, checked to announce the
    /// bytes that came; each piece is handed to `observe` as it arrives, in order (a get
    /// checks a block's bytes while the rest are on the way, [`crate::arriving`]). The first [`RESPONSE_PIECES_MAX`] - 1 HTTP/2 frames are kept
    /// as they are, the rest joined into one buffer (frames of a few bytes cannot make a
    /// list of millions).
    pub async fn call_message_pieces(
        &self,
        path: &'static str,
        headers: http::HeaderMap,
        message: &[Bytes],
        observe: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Pieces, Status> {
        let mut response = self.call_message_streamed(path, headers, message).await?;
        let mut kept: Vec<Bytes> = Vec::new();
        // Past the kept frames: the rest, joined (room reserved for all the prefix announces).
        let mut rest = BytesMut::new();
        while let Some(chunk) = response.next().await? {
            observe(&chunk);
            if kept.len() + 1 < RESPONSE_PIECES_MAX {
                kept.push(chunk);
            } else {
                if rest.is_empty() {
                    let total = 5 + response.announced().unwrap_or(0).min(MESSAGE_MAX_BYTES);
                    rest.reserve(total.saturating_sub(response.received() - chunk.len()));
                }
                rest.extend_from_slice(&chunk);
            }
        }
        if !rest.is_empty() {
            kept.push(rest.freeze());
        }
        Ok(Pieces::from_parts(kept))
    }

    /// A unary call whose response is read as it arrives: once the response's headers are
    /// in (a refusal among them is this call's error), its message comes piece by piece
    /// from [`ResponseStream::next`], the 5-byte prefix first.
    pub async fn call_message_streamed(
        &self,
        path: &'static str,
        headers: http::HeaderMap,
        message: &[Bytes],
    ) -> Result<ResponseStream, Status> {
        let inner = &self.inner;
        let request_bytes: usize = message.iter().map(Bytes::len).sum();
        if request_bytes > MESSAGE_MAX_BYTES + 5 {
            return Err(Status::resource_exhausted(format!(
                "a request of {request_bytes} bytes, over the limit of {MESSAGE_MAX_BYTES}"
            )));
        }
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = inner.uri(http::uri::PathAndQuery::from_static(path))?;
        *request.headers_mut() = headers;
        let h = request.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        let (head, ()) = request.into_parts();
        let response = inner.exchange(&head, message).await?;
        let (parts, body) = response.into_parts();
        // A refusal may come as headers alone ("trailers-only").
        if let Some(status) = Status::from_header_map(&parts.headers)
            && status.code() != tonic::Code::Ok
        {
            return Err(status);
        }
        if parts.status != http::StatusCode::OK {
            return Err(Status::unknown(format!("{}: HTTP status {}", inner.addr, parts.status)));
        }
        Ok(ResponseStream {
            body,
            addr: inner.addr.clone(),
            head: Vec::with_capacity(5),
            received: 0,
            trailers: None,
            ended: false,
        })
    }
}

impl H2Transport {
    /// Any unary gRPC call as tonic's generated clients make it (a tower service's
    /// exchange): the request's body, one message, is read whole (at most
    /// `request_max_bytes` with its 5-byte prefix) and sent from the calling task with its
    /// headers, as [`H2Transport::call_message`] sends; the response goes back as it came,
    /// its body read from the stream by tonic's decoder (status, trailers and the message
    /// limit are tonic's). Not for streaming requests: the body must end by itself.
    pub async fn call_http(
        &self,
        req: http::Request<tonic::body::Body>,
        request_max_bytes: usize,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let (mut head, body) = req.into_parts();
        let pieces = crate::replies::body_pieces(body, request_max_bytes).await?;
        let path =
            head.uri.path_and_query().cloned().ok_or_else(|| Status::internal("a request without a path"))?;
        head.uri = self.inner.uri(path)?;
        let response = self.inner.exchange(&head, &pieces).await?;
        Ok(response.map(tonic::body::Body::new))
    }
}

/// Calls to masters outside this process over [`H2Transport`] instead of tonic's
/// `Channel` (see [`cellar_master_api::client::MasterClientBuilder::connector`]): each call
/// is sent from the calling task and its answer read there, without `Channel`'s buffer
/// task and per-call response task (the hand-offs this module's header counts). The
/// connection follows the client's options: connect bound, keepalive interval and timeout.
pub fn master_connector() -> Connector {
    Arc::new(|addr: &str, options: &ChannelOptions| {
        let transport = H2Transport::with_options(
            addr,
            options.connect_timeout,
            options.keepalive_interval,
            options.keepalive_timeout,
        )?;
        Ok(CustomTransport::new(move |req| {
            let transport = transport.clone();
            Box::pin(async move {
                transport.call_http(req, API_MESSAGE_MAX_BYTES + 5).await.map_err(|s| Box::new(s) as BoxError)
            })
        }))
    })
}

/// A unary call's response message as it arrives (see [`H2Transport::call_message_streamed`]).
pub struct ResponseStream {
    body: H2Body,
    addr: String,
    /// The message's first bytes, up to its 5-byte prefix.
    head: Vec<u8>,
    /// Bytes of the message so far (prefix included).
    received: usize,
    /// The trailers, once they came (kept here so that [`ResponseStream::next`] stays
    /// cancel-safe).
    trailers: Option<http::HeaderMap>,
    ended: bool,
}

impl ResponseStream {
    /// The next piece of the message (its 5-byte prefix first, in the first pieces); `None`
    /// once the message ended with an OK status and was as long as its prefix announced.
    /// An error status, a message over [`MESSAGE_MAX_BYTES`], compressed, or of another
    /// length than announced is an error. Cancel-safe: a call dropped while it waits loses
    /// nothing, and the next call goes on where it stopped.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.ended {
            return Ok(None);
        }
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
            match frame?.into_data() {
                Ok(chunk) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    if self.received + chunk.len() > MESSAGE_MAX_BYTES + 5 {
                        return Err(Status::resource_exhausted(format!(
                            "{}: a response over {MESSAGE_MAX_BYTES} bytes",
                            self.addr
                        )));
                    }
                    if self.head.len() < 5 {
                        let take = chunk.len().min(5 - self.head.len());
                        self.head.extend_from_slice(&chunk[..take]);
                        if self.head.first().is_some_and(|b| *b != 0) {
                            return Err(self.not_one_message());
                        }
                    }
                    self.received += chunk.len();
                    return Ok(Some(chunk));
                }
                Err(frame) => self.trailers = frame.into_trailers().ok(),
            }
        }
        let status = self
            .trailers
            .as_ref()
            .and_then(Status::from_header_map)
            .ok_or_else(|| Status::internal(format!("{}: a response without grpc-status", self.addr)))?;
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
        let Some(len) = self.announced() else { return Err(self.not_one_message()) };
        if len != self.received - 5 {
            return Err(Status::internal(format!(
                "{}: a response message of {} bytes, its prefix says {len}",
                self.addr,
                self.received - 5
            )));
        }
        self.ended = true;
        Ok(None)
    }

    /// The message length its prefix announces, once the prefix is in.
    pub fn announced(&self) -> Option<usize> {
        announced_len(&self.head)
    }

    /// Bytes of the message received so far, its prefix included.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The server's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn not_one_message(&self) -> Status {
        Status::internal(format!("{}: a response that is not one uncompressed message", self.addr))
    }
}

/// HTTP/2 frames of a response kept as their own buffers (see
/// [`H2Transport::call_message_pieces`]): a 9 MiB message in 1 MiB frames is 10.
pub const RESPONSE_PIECES_MAX: usize = 32;

/// The message length a gRPC message's 5-byte prefix announces (`None`: fewer than 5 bytes).
fn announced_len(message: &[u8]) -> Option<usize> {
    let b = message.get(1..5)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

enum BodyState {
    Data,
    Trailers,
    Done,
}

/// A response body read straight from its HTTP/2 stream; what is read is handed back to
/// the stream's flow-control window at once.
struct H2Body {
    recv: h2::RecvStream,
    state: BodyState,
    addr: String,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let recv = &mut this.recv;
        loop {
            match this.state {
                BodyState::Data => match ready!(recv.poll_data(cx)) {
                    Some(Ok(data)) => {
                        // Only fails on a stream already closed: nothing more to release.
                        let _ = recv.flow_control().release_capacity(data.len());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Some(Err(e)) => {
                        this.state = BodyState::Done;
                        return Poll::Ready(Some(Err(h2_status(&this.addr, e))));
                    }
                    None => this.state = BodyState::Trailers,
                },
                BodyState::Trailers => {
                    let result = ready!(recv.poll_trailers(cx));
                    this.state = BodyState::Done;
                    return match result {
                        Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(h2_status(&this.addr, e)))),
                    };
                }
                BodyState::Done => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }
}
