//! The answers of the two read calls (ReadRecord, ReadFragment) sent without tonic's copy.
//!
//! tonic's encoder writes a response message into one new buffer: every block or fragment
//! range a volume server returned was copied once more before the socket (15% of a volume
//! server's CPU under 4 MiB gets, `perf`, docs/performance.md). These two calls are
//! answered here instead: the request is decoded as tonic would, the same handler runs (its
//! secret check, limits and metrics), and the answer goes as two pieces, the message's
//! prefix and small fields, then the bytes the handler returned, shared
//! (`cellar_volume_api::wire::message_with_bytes`). Every other call goes to tonic's
//! service as before.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use cellar_proto::volume as pb;
use cellar_proto::volume::volume_server::{Volume, VolumeServer};
use cellar_volume_api::cluster::{READ_FRAGMENT_PATH, READ_RECORD_PATH};
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Code, Request, Status};

use crate::MESSAGE_MAX_BYTES;
use crate::service::VolumeService;

/// Largest request body read here (a read request is a few dozen bytes).
pub const READ_REQUEST_MAX_BYTES: usize = 4096;

/// The volume gRPC service with ReadRecord and ReadFragment answered here.
#[derive(Clone)]
pub struct ReadReplies {
    inner: VolumeServer<VolumeService>,
    service: Arc<VolumeService>,
}

impl ReadReplies {
    /// `inner` (tonic's service over `service`) with the two read calls taken over.
    pub fn new(inner: VolumeServer<VolumeService>, service: Arc<VolumeService>) -> ReadReplies {
        ReadReplies { inner, service }
    }
}

impl NamedService for ReadReplies {
    const NAME: &'static str = <VolumeServer<VolumeService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for ReadReplies {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<http::Request<Body>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let service = self.service.clone();
        match req.uri().path() {
            READ_RECORD_PATH => Box::pin(async move {
                let answer = match decode::<pb::ReadRecordRequest>(req).await {
                    Ok(r) => service.read_record(r).await.map(|a| {
                        let a = a.into_inner();
                        let head = pb::ReadRecordResponse { sha256: a.sha256, payload: Bytes::new() };
                        cellar_volume_api::wire::message_with_bytes(&head, RECORD_PAYLOAD_FIELD, &a.payload)
                    }),
                    Err(s) => Err(s),
                };
                Ok(reply(answer))
            }),
            READ_FRAGMENT_PATH => Box::pin(async move {
                let answer = match decode::<pb::ReadFragmentRequest>(req).await {
                    Ok(r) => service.read_fragment(r).await.map(|a| {
                        let a = a.into_inner();
                        let head = pb::ReadFragmentResponse { data: Bytes::new() };
                        cellar_volume_api::wire::message_with_bytes(&head, FRAGMENT_DATA_FIELD, &a.data)
                    }),
                    Err(s) => Err(s),
                };
                Ok(reply(answer))
            }),
            _ => self.inner.call(req),
        }
    }
}

/// Field number of `ReadRecordResponse.payload`.
const RECORD_PAYLOAD_FIELD: u32 = 2;
/// Field number of `ReadFragmentResponse.data`.
const FRAGMENT_DATA_FIELD: u32 = 1;

/// The request's one uncompressed message, decoded, with its metadata (the cluster secret)
/// and extensions.
async fn decode<M: Message + Default>(req: http::Request<Body>) -> Result<Request<M>, Status> {
    let (parts, mut body) = req.into_parts();
    let mut data = BytesMut::new();
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        if let Ok(chunk) = frame?.into_data() {
            if data.len() + chunk.len() > READ_REQUEST_MAX_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "a read request over {READ_REQUEST_MAX_BYTES} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
    }
    let Some((&[0, a, b, c, d], message)) = data.split_first_chunk::<5>() else {
        return Err(Status::invalid_argument("not one uncompressed gRPC message"));
    };
    if u32::from_be_bytes([a, b, c, d]) as usize != message.len() {
        return Err(Status::invalid_argument("a gRPC message whose length is not its prefix's"));
    }
    let message = M::decode(message).map_err(|e| Status::invalid_argument(format!("bad message: {e}")))?;
    Ok(Request::from_http(http::Request::from_parts(parts, message)))
}

/// The HTTP response of an answer: its pieces then an OK status, or the refusal alone.
fn reply(answer: Result<Option<Vec<Bytes>>, Status>) -> http::Response<Body> {
    let pieces = match answer {
        Ok(Some(pieces)) => pieces,
        Ok(None) => return Status::new(Code::ResourceExhausted, "an answer over 4 GiB").into_http(),
        Err(status) => return status.into_http(),
    };
    // The limit tonic's encoder would have applied.
    let message_bytes = pieces.iter().map(Bytes::len).sum::<usize>().saturating_sub(5);
    if message_bytes > MESSAGE_MAX_BYTES {
        return Status::resource_exhausted(format!(
            "an answer of {message_bytes} bytes, over the limit of {MESSAGE_MAX_BYTES}"
        ))
        .into_http();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut response = http::Response::new(Body::new(Pieces { pieces, next: 0, trailers: Some(trailers) }));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

/// A response body: the pieces, then the trailers.
struct Pieces {
    pieces: Vec<Bytes>,
    next: usize,
    trailers: Option<http::HeaderMap>,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(piece) = this.pieces.get_mut(this.next) {
            this.next += 1;
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(piece)))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.pieces.len() && self.trailers.is_none()
    }
}
