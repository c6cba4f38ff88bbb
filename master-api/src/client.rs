//! A client of the master group: finds the leader by itself (following NOT_LEADER hints,
//! trying the next address when one is down) and retries until a deadline.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cellar_proto::master as pb;
use cellar_proto::master::master_client::MasterClient as GrpcClient;
use cellar_proto::{ERROR_CODE_KEY, ErrorCode, LEADER_ADDR_KEY, SECRET_KEY};
use tonic::codegen::{Service, http};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::channel::{API_MESSAGE_MAX_BYTES, ChannelOptions};

/// How long a call keeps retrying across leader changes by default.
pub const CALL_DEADLINE_DEFAULT: Duration = Duration::from_secs(15);
/// Longest call deadline a client may set: well below how long the master remembers a
/// client's calls (`session::SESSION_IDLE_EXPIRY_MS`), so no retry outlives its session.
pub const CALL_DEADLINE_MAX: Duration = Duration::from_secs(10 * 60);
/// How long one attempt (one master, one RPC) may take by default before the call moves
/// on to the next address. Above an election (seconds) and a full commit batch under load,
/// well below the call deadline so that a hung master leaves time for two more attempts.
pub const ATTEMPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Pause between retries.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Adds the cluster secret to every call.
#[derive(Clone)]
pub struct SecretInterceptor {
    secret: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl SecretInterceptor {
    /// An interceptor that sends `secret` (none: sends nothing). Fails if it is not ASCII.
    pub fn new(secret: Option<&str>) -> Result<SecretInterceptor, ClientError> {
        let secret = match secret {
            Some(s) => Some(s.parse().map_err(|_| ClientError::BadAddress("secret is not ASCII".into()))?),
            None => None,
        };
        Ok(SecretInterceptor { secret })
    }
}

impl Interceptor for SecretInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(secret) = &self.secret {
            req.metadata_mut().insert(SECRET_KEY, secret.clone());
        }
        Ok(req)
    }
}

/// How a client reaches one master: a gRPC channel, or a function from request to
/// response. For a master in this process (`cellar dev`) that function is the master's
/// tonic service itself (registered in [`LocalMasters`] by whoever runs the master, see
/// `cellar_master::local_transport`): the request is still encoded and runs the same
/// service code (routing, secret check, handlers); it skips the socket and the HTTP/2
/// framing.
#[derive(Clone)]
pub enum Transport {
    /// Over the network.
    Remote(Channel),
    /// A function: a master in this process, or (tests) faults put between a client and a
    /// master.
    Custom(CustomTransport),
}

/// Errors of a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The future of one HTTP exchange.
pub type ExchangeFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, BoxError>> + Send>>;

/// A transport made of a function from request to response.
#[derive(Clone)]
pub struct CustomTransport(Arc<dyn Fn(http::Request<tonic::body::Body>) -> ExchangeFuture + Send + Sync>);

impl CustomTransport {
    /// Every request goes through `f`.
    pub fn new(
        f: impl Fn(http::Request<tonic::body::Body>) -> ExchangeFuture + Send + Sync + 'static,
    ) -> Self {
        CustomTransport(Arc::new(f))
    }
}

impl Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Remote(c) => c.poll_ready(cx).map_err(Into::into),
            Transport::Custom(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Remote(c) => {
                let call = c.call(req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Custom(f) => (f.0)(req),
        }
    }
}

/// Makes the transport to a master outside this process from its address and the
/// client's channel options, instead of tonic's `Channel` (see
/// [`MasterClientBuilder::connector`]).
pub type Connector = Arc<dyn Fn(&str, &ChannelOptions) -> Result<CustomTransport, String> + Send + Sync>;

/// Masters running in this process, by the address the group knows them by.
#[derive(Clone, Default)]
pub struct LocalMasters {
    services: Arc<Mutex<HashMap<String, CustomTransport>>>,
}

impl std::fmt::Debug for LocalMasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> =
            self.services.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        f.debug_struct("LocalMasters").field("addrs", &addrs).finish()
    }
}

impl LocalMasters {
    /// No masters.
    pub fn new() -> LocalMasters {
        LocalMasters::default()
    }

    /// The master at `addr` is reachable in-process through `transport`.
    pub fn add(&self, addr: &str, transport: CustomTransport) {
        self.services.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), transport);
    }

    fn get(&self, addr: &str) -> Option<CustomTransport> {
        self.services.lock().unwrap_or_else(|p| p.into_inner()).get(addr).cloned()
    }
}

/// The generated client with the secret interceptor.
pub type Grpc = GrpcClient<InterceptedService<Transport, SecretInterceptor>>;

/// Errors of a master call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The master refused the call; `code` is the stable error code.
    #[error("{code}: {message}")]
    Refused {
        /// Stable error code (cellar_proto::error_code).
        code: String,
        /// gRPC status code.
        status: Code,
        /// The master's message.
        message: String,
    },
    /// No master answered as leader before the deadline.
    #[error("no master leader reachable at {addrs:?} within {deadline:?}: {last}")]
    Unavailable {
        /// The addresses tried.
        addrs: Vec<String>,
        /// The deadline.
        deadline: Duration,
        /// The last failure seen.
        last: String,
    },
    /// An address is malformed.
    #[error("bad master address {0}")]
    BadAddress(String),
    /// The masters answered without the cell settings (a master older than the settings).
    #[error("the masters' cluster map carries no cell settings")]
    NoCellSettings,
}

impl ClientError {
    /// The stable error code as the master sent it, if it refused the call.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The stable error code, if the master refused the call with one this build knows:
    /// what callers branch on.
    pub fn error_code(&self) -> Option<cellar_proto::ErrorCode> {
        self.code().and_then(cellar_proto::ErrorCode::from_name)
    }
}

/// A client of a master group.
pub struct MasterClient {
    addrs: Vec<String>,
    clients: Vec<Grpc>,
    leader: Mutex<usize>,
    deadline: Duration,
    attempt_timeout: Duration,
    /// Random per instance: the master keeps this client's session under it.
    client_id: u64,
    /// Sequence number of the next exactly-once call.
    next_seq: AtomicU64,
    /// Exactly-once calls in flight (their lowest is sent with every request).
    pending: Mutex<BTreeSet<u64>>,
}

fn error_code_of(status: &Status) -> Option<String> {
    status.metadata().get(ERROR_CODE_KEY).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// A mutating request: carries the id that makes its call exactly-once.
pub trait MutatingRequest: Clone {
    /// Sets the request id.
    fn set_request_id(&mut self, id: pb::RequestId);
}

macro_rules! mutating {
    ($($t:ident),* $(,)?) => {
        $(impl MutatingRequest for pb::$t {
            fn set_request_id(&mut self, id: pb::RequestId) {
                self.request_id = Some(id);
            }
        })*
    };
}

mutating!(
    RegisterNodeRequest,
    HeartbeatRequest,
    AllocateVolumeRequest,
    RenewLeaseRequest,
    CommitIndexRequest,
    SealVolumeRequest,
    ReportBadExtentRequest,
    PullTasksRequest,
    ReportTaskRequest,
    AcquireLeaseRequest,
    EnqueueTaskRequest,
    DrainRequest,
    RemoveNodeRequest,
    RetryTaskRequest,
    NsWriteRequest,
    // DropReferences takes a LookupRequest.
    LookupRequest,
);

/// Settings of a [`MasterClient`]; see [`MasterClient::builder`].
pub struct MasterClientBuilder {
    addrs: Vec<String>,
    secret: Option<String>,
    local: Option<LocalMasters>,
    transports: Option<Vec<Transport>>,
    connector: Option<Connector>,
    deadline: Duration,
    attempt_timeout: Duration,
    channel: ChannelOptions,
}

impl MasterClientBuilder {
    /// The cluster secret sent with every call.
    pub fn secret(mut self, secret: Option<&str>) -> Self {
        self.secret = secret.map(str::to_string);
        self
    }

    /// Masters among these are called in-process.
    pub fn local(mut self, local: Option<&LocalMasters>) -> Self {
        self.local = local.cloned();
        self
    }

    /// One transport per address, in order, instead of channels (tests).
    pub fn transports(mut self, transports: Vec<Transport>) -> Self {
        self.transports = Some(transports);
        self
    }

    /// Masters outside this process are reached through transports `connector` makes
    /// (default: a tonic `Channel` per address, [`crate::channel::channel_with`]).
    pub fn connector(mut self, connector: Option<Connector>) -> Self {
        self.connector = connector;
        self
    }

    /// How long a call keeps retrying (default [`CALL_DEADLINE_DEFAULT`], at most
    /// [`CALL_DEADLINE_MAX`]).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline.min(CALL_DEADLINE_MAX);
        self
    }

    /// How long one attempt may take (default [`ATTEMPT_TIMEOUT_DEFAULT`]).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// HTTP/2 keepalive of the channels (defaults in [`crate::channel`]).
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.channel.keepalive_interval = interval;
        self.channel.keepalive_timeout = timeout;
        self
    }

    /// Bound on a TCP connect (default [`crate::channel::CONNECT_TIMEOUT_DEFAULT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.channel.connect_timeout = timeout;
        self
    }

    /// The client.
    pub fn build(self) -> Result<MasterClient, ClientError> {
        let secret = match self.secret.as_deref() {
            Some(s) => Some(s.parse().map_err(|_| ClientError::BadAddress("secret is not ASCII".into()))?),
            None => None,
        };
        let transports = match self.transports {
            Some(t) if t.len() == self.addrs.len() => t,
            Some(_) => return Err(ClientError::BadAddress("one transport per address".into())),
            None => {
                let mut transports = Vec::with_capacity(self.addrs.len());
                for addr in &self.addrs {
                    transports.push(match (self.local.as_ref().and_then(|l| l.get(addr)), &self.connector) {
                        (Some(local), _) => Transport::Custom(local),
                        (None, Some(connector)) => Transport::Custom(
                            connector(addr, &self.channel)
                                .map_err(|e| ClientError::BadAddress(format!("{addr}: {e}")))?,
                        ),
                        (None, None) => Transport::Remote(
                            crate::channel::channel_with(addr, &self.channel)
                                .map_err(|_| ClientError::BadAddress(addr.clone()))?,
                        ),
                    });
                }
                transports
            }
        };
        let clients: Vec<Grpc> = transports
            .into_iter()
            .map(|transport| {
                GrpcClient::with_interceptor(transport, SecretInterceptor { secret: secret.clone() })
                    .max_decoding_message_size(API_MESSAGE_MAX_BYTES)
                    .max_encoding_message_size(API_MESSAGE_MAX_BYTES)
            })
            .collect();
        if clients.is_empty() {
            return Err(ClientError::BadAddress("no master addresses".into()));
        }
        Ok(MasterClient {
            addrs: self.addrs,
            clients,
            leader: Mutex::new(0),
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            client_id: random_client_id(),
            next_seq: AtomicU64::new(1),
            pending: Mutex::new(BTreeSet::new()),
        })
    }
}

/// A client id unlikely to be any other client's: the OS's random-seeded hasher keys
/// (distinct per process and per call) over the time and the process id.
fn random_client_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// One request id of a [`MasterClient`], kept while the call it names may still be sent
/// (see [`MasterClient::once_slot`]); dropping it removes the id from the client's pending
/// set, so the master may forget the call.
pub struct OnceSlot<'a> {
    client: &'a MasterClient,
    seq: u64,
}

impl OnceSlot<'_> {
    /// Sends `request` with this slot's id, as [`MasterClient::call_once`] does with a
    /// fresh one: retried within the client's deadline; a later call with the same slot
    /// is answered with the first outcome if the master applied it.
    pub async fn call<R, T, F, Fut>(&self, request: R, op: F) -> Result<T, ClientError>
    where
        R: MutatingRequest,
        F: Fn(Grpc, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.client.call_with_id(self.seq, request, op).await
    }
}

impl Drop for OnceSlot<'_> {
    fn drop(&mut self) {
        self.client.pending.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.seq);
    }
}

impl MasterClient {
    /// A client for the masters at `addrs` (host:port), with an optional cluster secret.
    pub fn new(addrs: &[String], secret: Option<&str>) -> Result<MasterClient, ClientError> {
        MasterClient::builder(addrs).secret(secret).build()
    }

    /// Like [`MasterClient::new`]; the masters among `local` are called in-process.
    pub fn with_local(
        addrs: &[String],
        secret: Option<&str>,
        local: Option<&LocalMasters>,
    ) -> Result<MasterClient, ClientError> {
        MasterClient::builder(addrs).secret(secret).local(local).build()
    }

    /// Settings for a client of the masters at `addrs`, all defaults.
    pub fn builder(addrs: &[String]) -> MasterClientBuilder {
        MasterClientBuilder {
            addrs: addrs.to_vec(),
            secret: None,
            local: None,
            transports: None,
            connector: None,
            deadline: CALL_DEADLINE_DEFAULT,
            attempt_timeout: ATTEMPT_TIMEOUT_DEFAULT,
            channel: ChannelOptions::default(),
        }
    }

    /// Changes how long calls retry (at most [`CALL_DEADLINE_MAX`]).
    pub fn with_deadline(mut self, deadline: Duration) -> MasterClient {
        self.deadline = deadline.min(CALL_DEADLINE_MAX);
        self
    }

    /// The addresses of the group.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// This client's id in the master's sessions.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Calls a mutating RPC exactly once: `request` gets a request id (the same on every
    /// retry) and the master applies it at most once, answering a retry with the first
    /// outcome. `op` sends the request it is given to the client it is given.
    pub async fn call_once<R, T, F, Fut>(&self, request: R, op: F) -> Result<T, ClientError>
    where
        R: MutatingRequest,
        F: Fn(Grpc, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.once_slot().call(request, op).await
    }

    /// A request id for one exactly-once call that its caller retries past a
    /// [`Self::call_once`] (which gives up at the client's deadline): every
    /// [`OnceSlot::call`] made with it carries the same id, so the master applies the call
    /// at most once however often it is sent. The master may forget the id once the slot
    /// is dropped.
    pub fn once_slot(&self) -> OnceSlot<'_> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).insert(seq);
        OnceSlot { client: self, seq }
    }

    async fn call_with_id<R, T, F, Fut>(&self, seq: u64, request: R, op: F) -> Result<T, ClientError>
    where
        R: MutatingRequest,
        F: Fn(Grpc, R) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.call(|grpc| {
            // Recomputed per attempt: calls that ended meanwhile let the master forget them.
            let lowest_pending =
                self.pending.lock().unwrap_or_else(|p| p.into_inner()).first().copied().unwrap_or(seq);
            let mut r = request.clone();
            r.set_request_id(pb::RequestId { client_id: self.client_id, sequence: seq, lowest_pending });
            op(grpc, r)
        })
        .await
    }

    /// The cell's shared settings (volume size, block size limit, scheme, lease) from the
    /// masters' configuration, through the cluster map.
    pub async fn cell_settings(&self) -> Result<pb::CellSettings, ClientError> {
        let map = self
            .call(
                |mut c| async move { c.get_cluster_map(pb::GetClusterMapRequest { known_version: 0 }).await },
            )
            .await?;
        map.settings.ok_or(ClientError::NoCellSettings)
    }

    /// Calls `op` on the leader, following redirects and retrying transient failures until
    /// the deadline. Refusals (bad request, stale lease, ...) are returned at once.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, ClientError>
    where
        F: Fn(Grpc) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = tokio::time::Instant::now();
        let mut last;
        let mut index = *self.leader.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Every attempt is bounded, so a master that accepted the connection but never
            // answers (hung, frozen, packets dropped) costs one attempt, not the call.
            let remaining = self.deadline.saturating_sub(start.elapsed());
            let attempt =
                tokio::time::timeout(self.attempt_timeout.min(remaining), op(self.clients[index].clone()));
            let result = match attempt.await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {:?}",
                    self.attempt_timeout.min(remaining)
                ))),
            };
            match result {
                Ok(resp) => {
                    *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = index;
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    let code = error_code_of(&status);
                    match code.as_deref().map(ErrorCode::from_name) {
                        Some(Some(ErrorCode::NotLeader)) => {
                            let hint = status.metadata().get(LEADER_ADDR_KEY).and_then(|v| v.to_str().ok());
                            index = hint
                                .and_then(|addr| self.addrs.iter().position(|a| a == addr))
                                .unwrap_or((index + 1) % self.clients.len());
                        }
                        Some(Some(ErrorCode::NoLeader | ErrorCode::Internal)) | None
                            if matches!(
                                status.code(),
                                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
                            ) =>
                        {
                            index = (index + 1) % self.clients.len();
                        }
                        _ => {
                            return Err(ClientError::Refused {
                                code: code.unwrap_or_else(|| format!("{:?}", status.code())),
                                status: status.code(),
                                message: status.message().to_string(),
                            });
                        }
                    }
                    last = format!("{}: {}", self.addrs[index], status.message());
                }
            }
            if start.elapsed() >= self.deadline {
                return Err(ClientError::Unavailable {
                    addrs: self.addrs.clone(),
                    deadline: self.deadline,
                    last,
                });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
