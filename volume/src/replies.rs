//! The answers of the two read calls (ReadRecord, ReadFragment) sent without tonic's copy.
//!
//! tonic's encoder writes a response message into one new buffer: every block or fragment
//! range a volume server returned was copied once more before the socket (15% of a volume
//! server's CPU under 4 MiB gets, `perf`, docs/performance.md). These two calls are
//! answered here instead (`cellar_volume_api::replies`): the request is decoded as tonic
//! would, the same handler runs (its secret check, limits and metrics), and the answer goes
//! as two pieces, the message's prefix and small fields, then the bytes the handler
//! returned, shared (`cellar_volume_api::wire::message_with_bytes`). Every other call goes
//! to tonic's service as before.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cellar_proto::volume as pb;
use cellar_proto::volume::volume_server::{Volume, VolumeServer};
use cellar_volume_api::cluster::{READ_FRAGMENT_PATH, READ_RECORD_PATH};
use cellar_volume_api::replies::{decode, reply};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

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
                let answer = match decode::<pb::ReadRecordRequest>(req, READ_REQUEST_MAX_BYTES).await {
                    Ok(r) => service.read_record(r).await.map(|a| {
                        let a = a.into_inner();
                        let head = pb::ReadRecordResponse { sha256: a.sha256, payload: Bytes::new() };
                        cellar_volume_api::wire::message_with_bytes(&head, RECORD_PAYLOAD_FIELD, &a.payload)
                    }),
                    Err(s) => Err(s),
                };
                Ok(reply(answer, MESSAGE_MAX_BYTES, None))
            }),
            READ_FRAGMENT_PATH => Box::pin(async move {
                let answer = match decode::<pb::ReadFragmentRequest>(req, READ_REQUEST_MAX_BYTES).await {
                    Ok(r) => service.read_fragment(r).await.map(|a| {
                        let a = a.into_inner();
                        let head = pb::ReadFragmentResponse { data: Bytes::new() };
                        cellar_volume_api::wire::message_with_bytes(&head, FRAGMENT_DATA_FIELD, &a.data)
                    }),
                    Err(s) => Err(s),
                };
                Ok(reply(answer, MESSAGE_MAX_BYTES, None))
            }),
            _ => self.inner.call(req),
        }
    }
}

/// Field number of `ReadRecordResponse.payload`.
const RECORD_PAYLOAD_FIELD: u32 = 2;
/// Field number of `ReadFragmentResponse.data`.
const FRAGMENT_DATA_FIELD: u32 = 1;
