//! What a volume server (or a frontend) knows of the rest of the cell: the master, the
//! nodes' addresses (from the cluster map, read again on a miss and, in the background,
//! once they are [`NODE_ADDRESSES_MAX_AGE`] old) and a pool of gRPC clients to other
//! volume servers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellar_master_api::client::{MasterClient, SecretInterceptor};
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use cellar_proto::volume::volume_client::VolumeClient;
use futures::future::BoxFuture;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::arriving::ArrivingRecord;
use crate::deadline::{CallDeadlines, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT, ReadLatency, bounded};
use crate::digest::BlockKey;
use crate::errors::{master_status, status};
use crate::gather::{Answer, GatherCounts, GatherSender, GatherWhen, ReadGather, Turn};
use crate::pieces::Pieces;
use crate::transport::{H2Transport, ResponseStream};
use crate::{CONNECTION_WINDOW_BYTES, FRAME_MAX_BYTES, MESSAGE_MAX_BYTES, STREAM_WINDOW_BYTES};

/// A gRPC client of one volume server (any call, streams included).
pub type VolumeGrpc = VolumeClient<InterceptedService<Channel, SecretInterceptor>>;

pub use crate::transport::CONNECT_TIMEOUT;

/// The clients of one volume server: a channel for any call, and the leaner transport of
/// the unary extent calls.
#[derive(Clone)]
pub struct NodeClients {
    /// Any call (streaming calls, control calls).
    pub grpc: VolumeGrpc,
    /// Append, ReadRecord, ReadFragment ([`crate::transport`]).
    pub transport: H2Transport,
    /// The cluster secret, as the interceptor sends it.
    pub secret: Option<http::HeaderValue>,
    /// Its small reads, gathered into ReadRecords calls ([`crate::gather`]).
    pub gather: Arc<ReadGather>,
}

/// The path of the Append RPC.
pub const APPEND_PATH: &str = "/cellar.volume.v1.Volume/Append";
/// The path of the ReadRecord RPC.
pub const READ_RECORD_PATH: &str = "/cellar.volume.v1.Volume/ReadRecord";
/// The path of the ReadRecords RPC.
pub const READ_RECORDS_PATH: &str = "/cellar.volume.v1.Volume/ReadRecords";
/// The path of the ReadFragment RPC.
pub const READ_FRAGMENT_PATH: &str = "/cellar.volume.v1.Volume/ReadFragment";

impl NodeClients {
    /// A call's headers: its deadline (`grpc-timeout`) and the cluster secret.
    fn headers(&self, deadline: Duration) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        let millis = deadline.as_millis().clamp(1, 99_999_999);
        if let Ok(v) = http::HeaderValue::from_str(&format!("{millis}m")) {
            headers.insert("grpc-timeout", v);
        }
        if let Some(secret) = &self.secret {
            headers.insert(cellar_proto::SECRET_KEY, secret.clone());
        }
        headers
    }

    /// A unary call of `path` with the request message `message` (prefixed, in pieces)
    /// within `deadline` (sent as `grpc-timeout`); the response decoded.
    async fn unary<R: Message + Default>(
        &self,
        path: &'static str,
        message: &[Bytes],
        deadline: Duration,
    ) -> Result<R, Status> {
        let headers = self.headers(deadline);
        let response = self.transport.call_message(path, headers, message).await?;
        R::decode(response).map_err(|e| {
            status(Code::Internal, cellar_proto::error_code::INTERNAL, format!("response of {path}: {e}"))
        })
    }

    /// An Append whose payloads go to the socket without being copied into an encoded
    /// message (tonic's encoder copied each, once per replica).
    async fn append(&self, req: pb::AppendRequest, deadline: Duration) -> Result<pb::AppendResponse, Status> {
        let message = crate::wire::append_message(&req).ok_or_else(|| {
            status(Code::InvalidArgument, cellar_proto::error_code::BAD_REQUEST, "an append over 4 GiB")
        })?;
        self.unary(APPEND_PATH, &message, deadline).await
    }

    /// One record, alone or gathered with others ([`crate::gather`]).
    async fn read_record(
        &self,
        req: pb::ReadRecordRequest,
        deadline: Duration,
    ) -> Result<pb::ReadRecordResponse, Status> {
        match self.gather.turn(req, deadline, || Arc::new(self.clone())) {
            Turn::Apart(req) => self.read_record_alone(req, deadline).await,
            Turn::Alone(req, _turn) => self.read_record_alone(req, deadline).await,
            Turn::Queued(ticket) => self.gather.wait(ticket, || Arc::new(self.clone())).await,
        }
    }

    async fn read_record_alone(
        &self,
        req: pb::ReadRecordRequest,
        deadline: Duration,
    ) -> Result<pb::ReadRecordResponse, Status> {
        self.unary(READ_RECORD_PATH, &[crate::wire::message(&req)], deadline).await
    }

    /// [`NodeClients::read_record`], checking the payload against `key` as it arrives and
    /// leaving it in the buffers it arrived in (see [`crate::pieces`]). A record of at
    /// most one frame ([`FRAME_MAX_BYTES`]) arrives at once, with nothing to overlap: it is
    /// decoded and left to the caller to check.
    async fn read_record_checked(
        &self,
        req: pb::ReadRecordRequest,
        key: BlockKey,
        deadline: Duration,
    ) -> Result<RecordRead, Status> {
        if req.length_bytes <= FRAME_MAX_BYTES {
            return self.read_record(req, deadline).await.map(RecordRead::unchecked);
        }
        let mut check = ArrivingRecord::new(key);
        let message = [crate::wire::message(&req)];
        let headers = self.headers(deadline);
        let answer = self
            .transport
            .call_message_pieces(READ_RECORD_PATH, headers, &message, &mut |b| {
                check.feed(b);
            })
            .await?;
        if let Some(checked) = check.finish() {
            let payload = answer.slice(checked.payload.clone()).ok_or_else(|| {
                status(
                    Code::Internal,
                    cellar_proto::error_code::INTERNAL,
                    "a checked payload past its answer",
                )
            })?;
            return Ok(RecordRead {
                sha256: checked.sha256.to_vec(),
                payload,
                verdict: Some(checked.matches),
            });
        }
        let answer = pb::ReadRecordResponse::decode(answer.to_bytes().slice(5..)).map_err(|e| {
            status(
                Code::Internal,
                cellar_proto::error_code::INTERNAL,
                format!("response of {READ_RECORD_PATH}: {e}"),
            )
        })?;
        Ok(RecordRead::unchecked(answer))
    }

    /// A ReadRecord whose answer is read as it arrives ([`crate::streamed`]).
    async fn read_record_stream(
        &self,
        req: pb::ReadRecordRequest,
        deadline: Duration,
    ) -> Result<ResponseStream, Status> {
        let headers = self.headers(deadline);
        self.transport.call_message_streamed(READ_RECORD_PATH, headers, &[crate::wire::message(&req)]).await
    }

    async fn read_fragment(
        &self,
        req: pb::ReadFragmentRequest,
        deadline: Duration,
    ) -> Result<pb::ReadFragmentResponse, Status> {
        self.unary(READ_FRAGMENT_PATH, &[crate::wire::message(&req)], deadline).await
    }
}

impl GatherSender for NodeClients {
    fn read_records(
        &self,
        reqs: Vec<pb::ReadRecordRequest>,
        deadline: Duration,
    ) -> BoxFuture<'_, Result<Vec<Answer>, Status>> {
        Box::pin(async move {
            let message = [crate::wire::message(&pb::ReadRecordsRequest { records: reqs })];
            let answer: pb::ReadRecordsResponse = self.unary(READ_RECORDS_PATH, &message, deadline).await?;
            Ok(answer.results.into_iter().map(record_result).collect())
        })
    }

    fn read_record(&self, req: pb::ReadRecordRequest, deadline: Duration) -> BoxFuture<'_, Answer> {
        Box::pin(self.read_record_alone(req, deadline))
    }
}

/// One result of a ReadRecords answer as ReadRecord would have answered it.
fn record_result(result: pb::ReadRecordResult) -> Answer {
    if result.code == 0 {
        return Ok(result.record.unwrap_or_default());
    }
    let mut s = Status::new(Code::from_i32(result.code), result.message);
    if let Ok(v) = result.error_code.parse() {
        s.metadata_mut().insert(cellar_proto::ERROR_CODE_KEY, v);
    }
    Err(s)
}

/// A ReadRecord answer as a get uses it.
#[derive(Debug, Clone)]
pub struct RecordRead {
    /// The record's key as the server read it.
    pub sha256: Vec<u8>,
    /// Its payload, in the buffers it arrived in.
    pub payload: Pieces,
    /// Whether the payload was checked against the key asked for as it arrived, and
    /// matched; `None`: not checked here, the caller checks it
    /// ([`BlockKey::matches_pieces`]).
    pub verdict: Option<bool>,
}

impl RecordRead {
    fn unchecked(answer: pb::ReadRecordResponse) -> RecordRead {
        RecordRead { sha256: answer.sha256, payload: answer.payload.into(), verdict: None }
    }
}

/// Volume server clients kept (one per address).
pub const CLIENTS_MAX: usize = 4096;

/// How old the node addresses may be before a lookup has them read again from the master
/// (in the background: that lookup answers from what is known). A volume server that comes
/// back at another address (restarted on an ephemeral port, moved to another host) is
/// reached again about this long after it registered, instead of never.
pub const NODE_ADDRESSES_MAX_AGE: Duration = Duration::from_secs(2);

/// The node addresses of the cluster map, as last read.
#[derive(Debug, Default)]
struct NodeAddresses {
    /// The map's version they come from (0: none read yet).
    version: u64,
    by_id: HashMap<u64, String>,
    /// When the master last answered a read of them (changed or not).
    read_at: Option<Instant>,
}

/// The master, the node addresses and the client pool.
pub struct Cluster {
    /// This cluster itself, for the background refresh of the node addresses.
    me: Weak<Cluster>,
    master: MasterClient,
    secret: Option<String>,
    nodes: RwLock<NodeAddresses>,
    /// A background read of the node addresses is under way.
    nodes_refreshing: AtomicBool,
    clients: Mutex<HashMap<String, NodeClients>>,
    /// Volume servers running in this process (`cellar dev`), by node id. Weak: volume
    /// servers know each other, and a server's state (its disks) must go when it stops.
    local: RwLock<HashMap<u64, Weak<dyn LocalExtents>>>,
    /// Bad extents found by this process, ever (sent to the master or not).
    bad_extent_reports: std::sync::atomic::AtomicU64,
    /// Reads that asked a second holder because the first was slow, ever.
    hedged_reads: std::sync::atomic::AtomicU64,
    deadlines: CallDeadlines,
    read_latency: ReadLatency,
    /// Reports not sent: one for the same extent was in flight, or too many were.
    bad_extent_reports_dropped: std::sync::atomic::AtomicU64,
    /// The (volume, disk) extents whose report is in flight.
    reports_in_flight: Arc<Mutex<HashSet<(u64, u64)>>>,
    /// When small reads are gathered ([`crate::gather`]; never when `None`).
    read_gathering: RwLock<Option<(GatherWhen, Duration)>>,
    gather_counts: Arc<GatherCounts>,
}

/// Bad-extent reports in flight to the master at once, per process: a failing disk under
/// read load finds the same extents bad over and over, and one report per extent is
/// enough (the master keeps it until repair).
pub const BAD_EXTENT_REPORTS_IN_FLIGHT_MAX: usize = 64;

/// Takes an extent out of the in-flight reports when its report task ends (or unwinds).
struct ReportSlot {
    in_flight: Arc<Mutex<HashSet<(u64, u64)>>>,
    extent: (u64, u64),
}

impl Drop for ReportSlot {
    fn drop(&mut self) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.extent);
    }
}

/// Marks a request made by [`ExtentClient::Local`]: its bytes never left this process
/// (request extensions do not travel over gRPC, so a remote caller cannot set it).
#[derive(Clone, Copy, Debug)]
pub struct InProcess;

/// A volume server's extent calls made in this process: the same handlers, secret check,
/// fences, limits and metrics as the RPCs, without the socket, the HTTP/2 framing and the
/// message copies. The volume server implements it; `cellar dev` hands it to the
/// [`Cluster`]s of the frontend and the other volume servers ([`Cluster::add_local`]).
/// A request made through it carries the [`InProcess`] extension.
#[tonic::async_trait]
pub trait LocalExtents: Send + Sync {
    /// The `Append` RPC.
    async fn append(&self, req: Request<pb::AppendRequest>) -> Result<pb::AppendResponse, Status>;
    /// The `ReadRecord` RPC.
    async fn read_record(
        &self,
        req: Request<pb::ReadRecordRequest>,
    ) -> Result<pb::ReadRecordResponse, Status>;
    /// The `ReadFragment` RPC.
    async fn read_fragment(
        &self,
        req: Request<pb::ReadFragmentRequest>,
    ) -> Result<pb::ReadFragmentResponse, Status>;
    /// The `WriteFragment` RPC, fed from a channel: the sender dropping it ends the stream.
    async fn write_fragment(
        &self,
        req: Request<mpsc::Receiver<pb::WriteFragmentRequest>>,
    ) -> Result<pb::WriteFragmentResponse, Status>;
}

/// The extent calls of the put and get paths (Append, ReadRecord, ReadFragment) and of
/// the tasks' fragment writes (WriteFragment) to one volume server: over gRPC, or, for a
/// server in this process, straight into its service. Every call is bounded by its kind's
/// deadline ([`CallDeadlines`]).
#[derive(Clone)]
pub struct ExtentClient {
    transport: ExtentTransport,
    deadlines: CallDeadlines,
}

/// How an [`ExtentClient`] reaches its server.
/// The in-process call runs the same handler with the same secret check, fences, limits
/// and metrics; it only skips the socket, the HTTP/2 framing and the message copies.
#[derive(Clone)]
pub enum ExtentTransport {
    /// Over the network: unary calls over [`H2Transport`], fragment streams over a channel.
    Remote(Box<NodeClients>),
    /// In this process.
    Local {
        /// The server's extent calls.
        service: Arc<dyn LocalExtents>,
        /// The cluster secret, as the interceptor would send it.
        secret: Option<MetadataValue<Ascii>>,
    },
}

/// A request whose deadline travels with it (`grpc-timeout`), so the server can give up too.
fn timed<T>(message: T, deadline: Duration) -> Request<T> {
    let mut req = Request::new(message);
    req.set_timeout(deadline);
    req
}

impl ExtentClient {
    /// A client over `transport` with the default deadlines.
    pub fn new(transport: ExtentTransport) -> ExtentClient {
        ExtentClient { transport, deadlines: CallDeadlines::default() }
    }

    /// The same client with other deadlines.
    pub fn with_deadlines(mut self, deadlines: CallDeadlines) -> ExtentClient {
        self.deadlines = deadlines;
        self
    }

    /// The deadlines this client's calls are bounded by.
    pub fn deadlines(&self) -> &CallDeadlines {
        &self.deadlines
    }

    fn local_request<T>(secret: &Option<MetadataValue<Ascii>>, message: T) -> Request<T> {
        let mut req = Request::new(message);
        req.extensions_mut().insert(InProcess);
        if let Some(s) = secret {
            req.metadata_mut().insert(cellar_proto::SECRET_KEY, s.clone());
        }
        req
    }

    /// Appends records to a replica (see the `Append` RPC), within the append deadline.
    pub async fn append(&mut self, req: pb::AppendRequest) -> Result<pb::AppendResponse, Status> {
        let deadline = self.deadlines.append;
        let call = async {
            match &mut self.transport {
                ExtentTransport::Remote(c) => c.append(req, deadline).await,
                ExtentTransport::Local { service, secret } => {
                    service.append(Self::local_request(secret, req)).await
                }
            }
        };
        bounded(deadline, "append", call).await
    }

    /// Reads one verified record of a replica (see the `ReadRecord` RPC), within the read
    /// deadline.
    pub async fn read_record(
        &mut self,
        req: pb::ReadRecordRequest,
    ) -> Result<pb::ReadRecordResponse, Status> {
        let deadline = self.deadlines.read;
        let call = async {
            match &mut self.transport {
                ExtentTransport::Remote(c) => c.read_record(req, deadline).await,
                ExtentTransport::Local { service, secret } => {
                    service.read_record(Self::local_request(secret, req)).await
                }
            }
        };
        bounded(deadline, "read record", call).await
    }

    /// A ReadRecord whose answer is read as it arrives ([`crate::streamed`]), once its
    /// headers are in (within the read deadline, which the server is told too); `None` for
    /// a server in this process.
    pub async fn read_record_stream(
        &mut self,
        req: pb::ReadRecordRequest,
    ) -> Result<Option<ResponseStream>, Status> {
        let deadline = self.deadlines.read;
        match &self.transport {
            ExtentTransport::Remote(c) => {
                bounded(deadline, "read record", c.read_record_stream(req, deadline)).await.map(Some)
            }
            ExtentTransport::Local { .. } => Ok(None),
        }
    }

    /// [`ExtentClient::read_record`], the payload checked against `key` as it arrives
    /// over the network (see [`RecordRead`]; in process it is left to the caller).
    pub async fn read_record_checked(
        &mut self,
        req: pb::ReadRecordRequest,
        key: BlockKey,
    ) -> Result<RecordRead, Status> {
        let deadline = self.deadlines.read;
        let call = async {
            match &mut self.transport {
                ExtentTransport::Remote(c) => c.read_record_checked(req, key, deadline).await,
                ExtentTransport::Local { service, secret } => {
                    service.read_record(Self::local_request(secret, req)).await.map(RecordRead::unchecked)
                }
            }
        };
        bounded(deadline, "read record", call).await
    }

    /// Writes a whole fragment from the messages `rx` yields (see the `WriteFragment`
    /// RPC); the stream ends when the sender is dropped. Bounded by the fragment-write
    /// deadline.
    pub async fn write_fragment(
        self,
        rx: mpsc::Receiver<pb::WriteFragmentRequest>,
    ) -> Result<pb::WriteFragmentResponse, Status> {
        let deadline = self.deadlines.fragment_write;
        let call = async move {
            match self.transport {
                ExtentTransport::Remote(mut c) => {
                    Ok(c.grpc.write_fragment(timed(ReceiverStream::new(rx), deadline)).await?.into_inner())
                }
                ExtentTransport::Local { service, secret } => {
                    service.write_fragment(Self::local_request(&secret, rx)).await
                }
            }
        };
        bounded(deadline, "write fragment", call).await
    }

    /// Reads a verified range of a fragment (see the `ReadFragment` RPC), within the read
    /// deadline.
    pub async fn read_fragment(
        &mut self,
        req: pb::ReadFragmentRequest,
    ) -> Result<pb::ReadFragmentResponse, Status> {
        let deadline = self.deadlines.read;
        let call = async {
            match &mut self.transport {
                ExtentTransport::Remote(c) => c.read_fragment(req, deadline).await,
                ExtentTransport::Local { service, secret } => {
                    service.read_fragment(Self::local_request(secret, req)).await
                }
            }
        };
        bounded(deadline, "read fragment", call).await
    }
}

impl Cluster {
    /// A view of the cell behind `master`.
    pub fn new(master: MasterClient, secret: Option<String>) -> Arc<Cluster> {
        Cluster::with_deadlines(master, secret, CallDeadlines::default())
    }

    /// A view of the cell behind `master` whose extent calls are bounded by `deadlines`.
    pub fn with_deadlines(
        master: MasterClient,
        secret: Option<String>,
        deadlines: CallDeadlines,
    ) -> Arc<Cluster> {
        Arc::new_cyclic(|me| Cluster {
            me: me.clone(),
            nodes_refreshing: AtomicBool::new(false),
            deadlines,
            read_latency: ReadLatency::new(deadlines.hedge_delay_max),
            hedged_reads: std::sync::atomic::AtomicU64::new(0),
            master,
            secret,
            nodes: RwLock::new(NodeAddresses::default()),
            clients: Mutex::new(HashMap::new()),
            local: RwLock::new(HashMap::new()),
            bad_extent_reports: std::sync::atomic::AtomicU64::new(0),
            bad_extent_reports_dropped: std::sync::atomic::AtomicU64::new(0),
            reports_in_flight: Arc::new(Mutex::new(HashSet::new())),
            read_gathering: RwLock::new(None),
            gather_counts: Arc::default(),
        })
    }

    /// The deadlines of this process's extent calls.
    pub fn deadlines(&self) -> &CallDeadlines {
        &self.deadlines
    }

    /// Recent extent-read latencies and the hedge delay derived from them.
    pub fn read_latency(&self) -> &ReadLatency {
        &self.read_latency
    }

    /// How many reads asked another holder because the first had not answered within the
    /// hedge delay.
    pub fn hedged_reads(&self) -> u64 {
        self.hedged_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Gathers the small reads to each volume server while `when` says so
    /// ([`crate::gather`]). The clients made before forget their turn.
    pub fn gather_reads(&self, when: GatherWhen, wait_max: Duration) {
        *self.read_gathering.write().unwrap_or_else(|p| p.into_inner()) = Some((when, wait_max));
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Gathered read calls and the reads they carried, ever.
    pub fn gather_counts(&self) -> &GatherCounts {
        &self.gather_counts
    }

    /// Counts a hedged read.
    pub(crate) fn count_hedged_read(&self) {
        self.hedged_reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many bad extents this process has found (each call of
    /// [`Cluster::report_bad_extent`], whether sent or dropped).
    pub fn bad_extent_reports(&self) -> u64 {
        self.bad_extent_reports.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many bad-extent reports were not sent: the same extent's report was in flight,
    /// or [`BAD_EXTENT_REPORTS_IN_FLIGHT_MAX`] were.
    pub fn bad_extent_reports_dropped(&self) -> u64 {
        self.bad_extent_reports_dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reaches volume server `node_id` in this process through `service` rather than
    /// over the network (see [`ExtentClient`]). For `cellar dev`, where the frontend and
    /// every volume server share one process.
    /// A server that has since stopped is reached over the network again (and so fails
    /// as a stopped remote server does).
    pub fn add_local(&self, node_id: u64, service: &Arc<dyn LocalExtents>) {
        self.local.write().unwrap_or_else(|p| p.into_inner()).insert(node_id, Arc::downgrade(service));
    }

    /// The extent client of volume server `node_id`: in-process when it runs here.
    pub async fn extent_client(&self, node_id: u64) -> Result<ExtentClient, Status> {
        let local =
            self.local.read().unwrap_or_else(|p| p.into_inner()).get(&node_id).and_then(Weak::upgrade);
        if let Some(service) = local {
            let secret = self.secret_as()?;
            return Ok(
                ExtentClient::new(ExtentTransport::Local { service, secret }).with_deadlines(self.deadlines)
            );
        }
        let addr = self.address(node_id).await?;
        Ok(ExtentClient::new(ExtentTransport::Remote(Box::new(self.clients(&addr)?)))
            .with_deadlines(self.deadlines))
    }

    /// The cluster secret as a header value (gRPC metadata for in-process calls, an HTTP
    /// header for the transport), as the interceptor sends it.
    fn secret_as<T: std::str::FromStr>(&self) -> Result<Option<T>, Status> {
        self.secret
            .as_deref()
            .map(|s| {
                s.parse().map_err(|_| {
                    status(
                        Code::InvalidArgument,
                        cellar_proto::error_code::BAD_REQUEST,
                        "the cluster secret is not ASCII",
                    )
                })
            })
            .transpose()
    }

    /// The master client.
    pub fn master(&self) -> &MasterClient {
        &self.master
    }

    /// The volume record, read linearizably from the master.
    pub async fn volume(&self, volume_id: u64) -> Result<mpb::Volume, Status> {
        let resp = self
            .master
            .call(|mut c| async move {
                c.get_volumes(mpb::GetVolumesRequest { volume_ids: vec![volume_id] }).await
            })
            .await
            .map_err(|e| master_status(&e))?;
        resp.volumes.into_iter().find(|v| v.volume_id == volume_id).ok_or_else(|| {
            status(
                Code::NotFound,
                cellar_proto::error_code::UNKNOWN_VOLUME,
                format!("volume {volume_id} is unknown"),
            )
        })
    }

    /// Re-reads the node addresses from the master's cluster map (only its version, when
    /// it has not changed since the last read).
    pub async fn refresh_nodes(&self) -> Result<(), Status> {
        let known_version = self.nodes.read().unwrap_or_else(|p| p.into_inner()).version;
        let map = self
            .master
            .call(|mut c| async move { c.get_cluster_map(mpb::GetClusterMapRequest { known_version }).await })
            .await
            .map_err(|e| master_status(&e))?;
        let mut nodes = self.nodes.write().unwrap_or_else(|p| p.into_inner());
        nodes.read_at = Some(Instant::now());
        // Unchanged, or an answer older than one applied meanwhile (a lookup's refresh and
        // the background one can overlap): what is known stays.
        if (map.unchanged && map.version == nodes.version) || map.version < nodes.version {
            return Ok(());
        }
        nodes.version = map.version;
        nodes.by_id.clear();
        nodes.by_id.extend(map.nodes.into_iter().map(|n| (n.node_id, n.address)));
        Ok(())
    }

    /// Reads the node addresses again in the background, unless a read is under way;
    /// failures are logged (lookups go on with the addresses known).
    fn refresh_nodes_in_background(&self) {
        let Some(cluster) = self.me.upgrade() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        if self.nodes_refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        /// Ends the refresh however its task ends.
        struct Done(Arc<Cluster>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.nodes_refreshing.store(false, Ordering::Release);
            }
        }
        let done = Done(cluster);
        runtime.spawn(async move {
            if let Err(e) = done.0.refresh_nodes().await {
                tracing::debug!(error = %e, "could not read the node addresses again");
            }
        });
    }

    /// The address of `node_id`. Addresses older than [`NODE_ADDRESSES_MAX_AGE`] are
    /// answered and read again in the background; an unknown node is looked up first.
    pub async fn address(&self, node_id: u64) -> Result<String, Status> {
        let (known, stale) = {
            let nodes = self.nodes.read().unwrap_or_else(|p| p.into_inner());
            let stale = nodes.read_at.is_none_or(|at| at.elapsed() >= NODE_ADDRESSES_MAX_AGE);
            (nodes.by_id.get(&node_id).cloned(), stale)
        };
        if let Some(addr) = known {
            if stale {
                self.refresh_nodes_in_background();
            }
            return Ok(addr);
        }
        self.refresh_nodes().await?;
        self.nodes.read().unwrap_or_else(|p| p.into_inner()).by_id.get(&node_id).cloned().ok_or_else(|| {
            status(
                Code::NotFound,
                cellar_proto::error_code::UNKNOWN_NODE,
                format!("node {node_id} is not in the cluster map"),
            )
        })
    }

    /// A client of the volume server at `addr` (connections are made lazily and shared).
    pub fn client(&self, addr: &str) -> Result<VolumeGrpc, Status> {
        Ok(self.clients(addr)?.grpc)
    }

    /// The clients of the volume server at `addr` (connections are made lazily and shared).
    pub fn clients(&self, addr: &str) -> Result<NodeClients, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let url = if addr.starts_with("http") { addr.to_string() } else { format!("http://{addr}") };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| {
                status(
                    Code::InvalidArgument,
                    cellar_proto::error_code::BAD_REQUEST,
                    format!("address {addr}: {e}"),
                )
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            // A host that stopped answering is noticed even between calls, and the
            // connection replaced, instead of every call finding out at its deadline.
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            // Blocks and fragment reads are megabytes: HTTP/2's default 64 KiB windows
            // would cost a round trip per 64 KiB.
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(FRAME_MAX_BYTES)
            .connect_lazy();
        let interceptor = SecretInterceptor::new(self.secret.as_deref()).map_err(|e| {
            status(Code::InvalidArgument, cellar_proto::error_code::BAD_REQUEST, e.to_string())
        })?;
        let transport = H2Transport::new(addr)
            .map_err(|e| status(Code::InvalidArgument, cellar_proto::error_code::BAD_REQUEST, e))?;
        let secret = self.secret_as()?;
        let (when, wait_max) = match self.read_gathering.read().unwrap_or_else(|p| p.into_inner()).clone() {
            Some((when, wait_max)) => (Some(when), wait_max),
            None => (None, Duration::ZERO),
        };
        let client = NodeClients {
            transport,
            secret,
            gather: Arc::new(ReadGather::new(when, wait_max, self.gather_counts.clone())),
            grpc: VolumeClient::with_interceptor(channel, interceptor)
                .max_decoding_message_size(MESSAGE_MAX_BYTES)
                .max_encoding_message_size(MESSAGE_MAX_BYTES),
        };
        if clients.len() >= CLIENTS_MAX {
            clients.clear();
        }
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// A client of the volume server `node_id`.
    pub async fn node_client(&self, node_id: u64) -> Result<VolumeGrpc, Status> {
        let addr = self.address(node_id).await?;
        self.client(&addr)
    }

    /// Tells the master that an extent is missing or corrupt, in the background (a read
    /// never waits for it). At most one report per extent is in flight, and at most
    /// [`BAD_EXTENT_REPORTS_IN_FLIGHT_MAX`] in all: others are dropped (and counted), as the
    /// one in flight says the same. Failures are logged.
    pub fn report_bad_extent(self: &Arc<Self>, volume_id: u64, disk_id: u64, reason: String) {
        use std::sync::atomic::Ordering;
        self.bad_extent_reports.fetch_add(1, Ordering::Relaxed);
        let extent = (volume_id, disk_id);
        {
            let mut in_flight = self.reports_in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if in_flight.contains(&extent) || in_flight.len() >= BAD_EXTENT_REPORTS_IN_FLIGHT_MAX {
                self.bad_extent_reports_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            in_flight.insert(extent);
        }
        let slot = ReportSlot { in_flight: self.reports_in_flight.clone(), extent };
        let cluster = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tracing::warn!(volume = volume_id, disk = disk_id, %reason, "reporting bad extent");
            let request = mpb::ReportBadExtentRequest { volume_id, disk_id, reason, request_id: None };
            let result = cluster
                .master
                .call_once(request, |mut c, r| async move { c.report_bad_extent(r).await })
                .await;
            if let Err(e) = result {
                tracing::warn!(volume = volume_id, disk = disk_id, error = %e, "could not report bad extent");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_paths_name_the_volume_services_methods() {
        let service = cellar_proto::volume::volume_server::SERVICE_NAME;
        assert_eq!(super::APPEND_PATH, format!("/{service}/Append"));
        assert_eq!(super::READ_RECORD_PATH, format!("/{service}/ReadRecord"));
        assert_eq!(super::READ_FRAGMENT_PATH, format!("/{service}/ReadFragment"));
    }
}
