//! A client of the master group: finds the leader by itself (following NOT_LEADER hints,
//! trying the next address when one is down) and retries until a deadline.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use cellar_proto::master::master_client::MasterClient as GrpcClient;
use cellar_proto::master::master_server::MasterServer;
use cellar_proto::{ERROR_CODE_KEY, LEADER_ADDR_KEY, SECRET_KEY, error_code};
use tonic::codegen::{Service, http};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::node::API_MESSAGE_MAX_BYTES;
use crate::service::MasterService;

/// How long a call keeps retrying across leader changes by default.
pub const CALL_DEADLINE_DEFAULT: Duration = Duration::from_secs(15);
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

/// How a client reaches one master: a gRPC channel, or, for a master in this process
/// (`cellar dev`), its service itself. The in-process way still encodes the request and
/// runs the same service code (routing, secret check, handlers); it skips the socket and
/// the HTTP/2 framing.
#[derive(Clone)]
pub enum Transport {
    /// Over the network.
    Remote(Channel),
    /// In this process.
    Local(MasterServer<MasterService>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Remote(c) => c.poll_ready(cx).map_err(Into::into),
            Transport::Local(s) => {
                Service::<http::Request<tonic::body::Body>>::poll_ready(s, cx).map_err(|never| match never {})
            }
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Remote(c) => {
                let call = c.call(req);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Local(s) => {
                let call = s.call(req);
                Box::pin(async move { call.await.map_err(|never| match never {}) })
            }
        }
    }
}

/// Masters running in this process, by the address the group knows them by.
#[derive(Clone, Default)]
pub struct LocalMasters {
    services: Arc<Mutex<HashMap<String, Arc<MasterService>>>>,
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

    /// The master at `addr` is reachable in-process through `service`.
    pub fn add(&self, addr: &str, service: Arc<MasterService>) {
        self.services.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.to_string(), service);
    }

    fn get(&self, addr: &str) -> Option<Arc<MasterService>> {
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
}

impl ClientError {
    /// The stable error code, if the master refused the call.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of a master group.
pub struct MasterClient {
    addrs: Vec<String>,
    clients: Vec<Grpc>,
    leader: Mutex<usize>,
    deadline: Duration,
}

fn error_code_of(status: &Status) -> Option<String> {
    status.metadata().get(ERROR_CODE_KEY).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl MasterClient {
    /// A client for the masters at `addrs` (host:port), with an optional cluster secret.
    pub fn new(addrs: &[String], secret: Option<&str>) -> Result<MasterClient, ClientError> {
        MasterClient::with_local(addrs, secret, None)
    }

    /// Like [`MasterClient::new`]; the masters among `local` are called in-process.
    pub fn with_local(
        addrs: &[String],
        secret: Option<&str>,
        local: Option<&LocalMasters>,
    ) -> Result<MasterClient, ClientError> {
        let secret = match secret {
            Some(s) => Some(s.parse().map_err(|_| ClientError::BadAddress("secret is not ASCII".into()))?),
            None => None,
        };
        let mut clients = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let transport = match local.and_then(|l| l.get(addr)) {
                Some(service) => Transport::Local(MasterServer::from_arc(service)),
                None => Transport::Remote(
                    crate::network::channel(addr).map_err(|_| ClientError::BadAddress(addr.clone()))?,
                ),
            };
            let client =
                GrpcClient::with_interceptor(transport, SecretInterceptor { secret: secret.clone() })
                    .max_decoding_message_size(API_MESSAGE_MAX_BYTES)
                    .max_encoding_message_size(API_MESSAGE_MAX_BYTES);
            clients.push(client);
        }
        if clients.is_empty() {
            return Err(ClientError::BadAddress("no master addresses".into()));
        }
        Ok(MasterClient {
            addrs: addrs.to_vec(),
            clients,
            leader: Mutex::new(0),
            deadline: CALL_DEADLINE_DEFAULT,
        })
    }

    /// Changes how long calls retry.
    pub fn with_deadline(mut self, deadline: Duration) -> MasterClient {
        self.deadline = deadline;
        self
    }

    /// The addresses of the group.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
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
            match op(self.clients[index].clone()).await {
                Ok(resp) => {
                    *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = index;
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    let code = error_code_of(&status);
                    match code.as_deref() {
                        Some(error_code::NOT_LEADER) => {
                            let hint = status.metadata().get(LEADER_ADDR_KEY).and_then(|v| v.to_str().ok());
                            index = hint
                                .and_then(|addr| self.addrs.iter().position(|a| a == addr))
                                .unwrap_or((index + 1) % self.clients.len());
                        }
                        Some(error_code::NO_LEADER) | Some(error_code::INTERNAL) | None
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
