//! Unary gRPC answers sent as pieces, without tonic's copy, for services that answer a
//! call themselves in front of tonic's generated service.
//!
//! tonic's encoder writes a response message into one new buffer: every block a volume
//! server returned was copied once more before the socket (15% of a volume server's CPU
//! under 4 MiB gets, docs/performance.md), and a frontend's gRPC get held that copy
//! outside its get byte budget until the client took it. A call answered here decodes its
//! request as tonic would ([`decode`]), and its answer goes as the pieces of
//! [`crate::wire::message_with_pieces`] ([`reply`]): the message's prefix and small
//! fields, then the bytes themselves, shared; whatever the answer must keep alive until
//! it is written (a permit, a budget share) goes with the body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::{Code, Request, Status};

/// The request's one uncompressed message, decoded, with its metadata and extensions; a
/// body over `request_max_bytes` is refused before more of it is read.
pub async fn decode<M: Message + Default>(
    req: http::Request<Body>,
    request_max_bytes: usize,
) -> Result<Request<M>, Status> {
    let (parts, body) = req.into_parts();
    let pieces = body_pieces(body, request_max_bytes).await?;
    let data = match pieces.as_slice() {
        [one] => one.clone(),
        _ => pieces
            .iter()
            .fold(BytesMut::new(), |mut all, p| {
                all.extend_from_slice(p);
                all
            })
            .freeze(),
    };
    let Some((&[0, a, b, c, d], message)) = data.split_first_chunk::<5>() else {
        return Err(Status::invalid_argument("not one uncompressed gRPC message"));
    };
    if u32::from_be_bytes([a, b, c, d]) as usize != message.len() {
        return Err(Status::invalid_argument("a gRPC message whose length is not its prefix's"));
    }
    let message = M::decode(message).map_err(|e| Status::invalid_argument(format!("bad message: {e}")))?;
    Ok(Request::from_http(http::Request::from_parts(parts, message)))
}

/// A request's body as the data frames it came in (shared, not copied), at most
/// `request_max_bytes` in all: a body over it is refused before more of it is read.
pub async fn body_pieces(mut body: Body, request_max_bytes: usize) -> Result<Vec<Bytes>, Status> {
    let mut pieces = Vec::new();
    let mut request_bytes = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut body), cx)).await
    {
        if let Ok(chunk) = frame?.into_data() {
            request_bytes += chunk.len();
            if request_bytes > request_max_bytes {
                return Err(Status::resource_exhausted(format!("a request over {request_max_bytes} bytes")));
            }
            pieces.push(chunk);
        }
    }
    Ok(pieces)
}

/// Something an answer keeps until its last piece is written.
pub type Held = Box<dyn Send + Sync>;

/// The HTTP response of an answer: its pieces then an OK status, or the refusal alone. An
/// answer over `message_max_bytes` (the limit tonic's encoder would apply) is refused.
/// `held` is dropped with the body: once written, or when the client went away.
pub fn reply(
    answer: Result<Option<Vec<Bytes>>, Status>,
    message_max_bytes: usize,
    held: Option<Held>,
) -> http::Response<Body> {
    let pieces = match answer {
        Ok(Some(pieces)) => pieces,
        Ok(None) => return Status::new(Code::ResourceExhausted, "an answer over 4 GiB").into_http(),
        Err(status) => return status.into_http(),
    };
    let message_bytes = pieces.iter().map(Bytes::len).sum::<usize>().saturating_sub(5);
    if message_bytes > message_max_bytes {
        return Status::resource_exhausted(format!(
            "an answer of {message_bytes} bytes, over the limit of {message_max_bytes}"
        ))
        .into_http();
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let body = AnswerBody { pieces, next: 0, trailers: Some(trailers), _held: held };
    let mut response = http::Response::new(Body::new(body));
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    response
}

/// A response body: the pieces, then the trailers.
struct AnswerBody {
    pieces: Vec<Bytes>,
    next: usize,
    trailers: Option<http::HeaderMap>,
    _held: Option<Held>,
}

impl http_body::Body for AnswerBody {
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
