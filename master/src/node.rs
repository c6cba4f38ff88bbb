//! Starting a master: store, Raft, the gRPC server (Raft + client API), and group
//! formation with `--init`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cellar_proto::master::master_server::MasterServer;
use cellar_proto::raft::raft_server::RaftServer;
use openraft::{BasicNode, Config, SnapshotPolicy};
use tokio::sync::watch;

use crate::MasterRaft;
use crate::batcher::CommitBatcher;
use crate::config::MasterConfig;
use crate::network::{Network, RAFT_MESSAGE_MAX_BYTES};
use crate::raft_service::RaftService;
use crate::service::{ApiSettings, MasterService};
use crate::store::log::LogStore;
use crate::store::open_db;
use crate::store::sm::{StateMachineStore, StateReader};

pub use cellar_master_api::channel::API_MESSAGE_MAX_BYTES;

/// Errors starting a master.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store cannot be opened.
    #[error("open store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Raft refused to start.
    #[error("start raft: {0}")]
    Raft(String),
    /// The listen address cannot be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running master.
pub struct MasterHandle {
    /// This member's id.
    pub id: u64,
    /// The bound address (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// The Raft node.
    pub raft: MasterRaft,
    /// Reads of the applied state.
    pub reader: StateReader,
    db: Arc<rocksdb::DB>,
    /// Set to true at shutdown: the gRPC server stops taking calls, and the replication
    /// streams it serves end (a graceful shutdown waits for every call in progress).
    shutdown: Option<watch::Sender<bool>>,
    server: Option<tokio::task::JoinHandle<()>>,
    planner_stop: tokio::sync::watch::Sender<bool>,
    planner: Option<tokio::task::JoinHandle<()>>,
    scanner: Option<tokio::task::JoinHandle<()>>,
    compaction: Option<tokio::task::JoinHandle<()>>,
    lifecycle: Option<tokio::task::JoinHandle<()>>,
    apply_version: Option<tokio::task::JoinHandle<()>>,
    snapshots: Option<tokio::task::JoinHandle<()>>,
    local_group: Option<crate::network::LocalGroup>,
    api: Arc<MasterService>,
    /// What this member observes while it leads (repair rate, scrub progress, scans).
    pub observed: Arc<crate::observed::Observed>,
}

/// How long shutdown waits for every user of the store to let go of it.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(10);

impl MasterHandle {
    /// The client API of this master, for callers in the same process (see
    /// [`crate::client::LocalMasters`]).
    pub fn local_api(&self) -> Arc<MasterService> {
        self.api.clone()
    }

    /// Resolves when this member's Raft has stopped on an error of its own (a store that
    /// failed, a state it cannot apply: [`crate::apply_version::check`]), with the error;
    /// never while it runs. `cellar master` exits on it, so that the operator (or the
    /// service manager) sees the error instead of a master that answers nothing.
    pub async fn stopped(&self) -> String {
        use openraft::async_runtime::WatchReceiver;
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft node is gone".to_string();
            }
        }
    }

    /// Stops serving, shuts Raft down and closes the store (it stays on disk). The
    /// database is closed before this returns: RocksDB must not outlive the process.
    pub async fn shutdown(mut self) {
        if let Some(group) = self.local_group.take() {
            group.leave(self.id);
        }
        let _ = self.planner_stop.send(true);
        if let Some(planner) = self.planner.take() {
            let _ = planner.await;
        }
        if let Some(compaction) = self.compaction.take() {
            let _ = compaction.await;
        }
        if let Some(lifecycle) = self.lifecycle.take() {
            let _ = lifecycle.await;
        }
        if let Some(apply_version) = self.apply_version.take() {
            let _ = apply_version.await;
        }
        if let Some(snapshots) = self.snapshots.take() {
            let _ = snapshots.await;
        }
        if let Some(scanner) = self.scanner.take() {
            let _ = scanner.await;
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(id = self.id, error = %e, "raft shutdown");
        }
        // Everything that holds the store goes first (fields left in `..` would live until
        // the end of this function, and the wait below would time out on them).
        let MasterHandle { id, db, reader, raft, api, .. } = self;
        drop(reader);
        drop(raft);
        drop(api);
        let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
        while Arc::strong_count(&db) > 1 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(id, users = Arc::strong_count(&db), "store still in use at shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(e) = db.flush_wal(true) {
            tracing::warn!(id, error = %e, "flush store at shutdown");
        }
    }
}

/// Binds the listen address first (so that a port 0 becomes a real port before anyone
/// needs it), then starts the master on it.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen { addr: listen.to_string(), source })
}

/// Starts a master on an already bound listener.
pub async fn start(
    config: MasterConfig,
    listener: tokio::net::TcpListener,
) -> Result<MasterHandle, StartError> {
    config.validate().map_err(StartError::Config)?;
    let store_err = |source| StartError::Store { dir: config.data_dir.display().to_string(), source };
    let db = open_db(&config.data_dir).map_err(store_err)?;
    let log_store = LogStore::new(db.clone()).map_err(store_err)?;
    let appended_bytes = log_store.appended_bytes();
    let sm = StateMachineStore::open(db.clone(), config.data_dir.join("snapshots")).map_err(store_err)?;
    let reader = sm.reader();
    let raft_config = Config {
        cluster_name: "cellar".to_string(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        install_snapshot_timeout: 10_000,
        // Snapshots are triggered by `snapshot_policy` (entries, and log bytes against the
        // last snapshot's size).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: config.log_kept_after_snapshot,
        purge_batch_size: config.snapshot_after_entries.clamp(1, 256),
        // One index batch is up to ~1.5 MiB of JSON; a few per AppendEntries keeps messages
        // well below the transport limit and replication inside its timeout.
        max_payload_entries: 8,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let network = Network::new(config.secret.clone(), config.local_group.clone());
    let raft = MasterRaft::new(config.id, Arc::new(raft_config), network, log_store, sm)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

    if let Some(group) = &config.local_group {
        group.join(config.id, raft.clone());
    }
    let addr =
        listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen.clone(), source })?;
    let batcher = CommitBatcher::start(raft.clone(), config.volume_size_bytes);
    let settings = ApiSettings {
        volume_size_bytes: config.volume_size_bytes,
        block_size_max_bytes: config.block_size_max_bytes,
        replicas: config.replicas,
        scheme: config.scheme,
        lease_ms: config.lease_ms,
        node_silent_after_ms: config.node_silent_after_ms,
        repair_tasks_max: config.repair_tasks_max,
        repair_bytes_per_sec: config.repair_bytes_per_sec,
        down_after_ms: config.down_after_ms,
        apply_version_max: config.apply_version_max,
        secret: config.secret.clone(),
    };
    let observed = Arc::new(crate::observed::Observed::default());
    let api = Arc::new(MasterService::new(
        config.id,
        raft.clone(),
        StateReader::new(db.clone()),
        batcher,
        settings,
        observed.clone(),
    ));
    let (tx, mut rx) = watch::channel(false);
    let raft_rpc =
        RaftService::new(raft.clone(), config.secret.clone(), config.data_dir.join("incoming"), rx.clone())
            .offering(config.id, config.apply_version_max);
    // serve_with_incoming ignores the builder's tcp_nodelay: set it on each accepted socket
    // here, or small responses wait ~40 ms for a delayed ACK (Nagle).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(
            RaftServer::new(raft_rpc)
                .max_decoding_message_size(RAFT_MESSAGE_MAX_BYTES)
                .max_encoding_message_size(RAFT_MESSAGE_MAX_BYTES),
        )
        .add_service(
            MasterServer::from_arc(api.clone())
                .max_decoding_message_size(API_MESSAGE_MAX_BYTES)
                .max_encoding_message_size(API_MESSAGE_MAX_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = rx.wait_for(|stop| *stop).await;
        });
    let id = config.id;
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(id, error = %e, "master gRPC server stopped");
        }
    });

    if config.init {
        let initialized = raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized {
            let members: BTreeMap<u64, BasicNode> =
                config.peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(id, "formed the master group"),
                Err(e) => tracing::info!(id, error = %e, "group not formed here (it may exist already)"),
            }
        }
    }
    let (planner_stop, planner_rx) = tokio::sync::watch::channel(false);
    let settings = crate::planner::PlannerSettings {
        interval: Duration::from_millis(config.planner_interval_ms),
        abandoned_after: Duration::from_millis(config.abandoned_after_ms),
        node_silent_after: Duration::from_millis(config.node_silent_after_ms),
        repair: crate::repair::RepairSettings {
            down_after_ms: config.down_after_ms,
            tasks_max: usize::try_from(config.repair_tasks_max).unwrap_or(usize::MAX),
            bytes_per_sec: config.repair_bytes_per_sec,
            replicas: usize::from(config.replicas),
        },
    };
    let planner = tokio::spawn(crate::planner::run(
        id,
        raft.clone(),
        StateReader::new(db.clone()),
        settings,
        observed.clone(),
        planner_rx.clone(),
    ));
    let compaction = tokio::spawn(crate::compaction::run(
        id,
        raft.clone(),
        StateReader::new(db.clone()),
        observed.clone(),
        crate::compaction::CompactionSettings {
            interval: Duration::from_millis(config.compaction_interval_ms),
            grace: Duration::from_millis(config.compaction_grace_ms),
            volumes_per_pass: usize::try_from(config.compaction_volumes_per_pass).unwrap_or(usize::MAX),
            live_fraction_min: config.compaction_live_fraction_min,
        },
        planner_rx.clone(),
    ));
    let snapshots = tokio::spawn(crate::snapshot_policy::run(
        raft.clone(),
        crate::snapshot_policy::SnapshotPolicySettings {
            after_entries: config.snapshot_after_entries,
            dir: config.data_dir.join("snapshots"),
            appended_bytes,
        },
        planner_rx.clone(),
    ));
    let lifecycle = tokio::spawn(crate::lifecycle::run(
        id,
        raft.clone(),
        StateReader::new(db.clone()),
        crate::lifecycle::LifecycleSettings {
            interval: Duration::from_millis(config.lifecycle_interval_ms),
            day_ms: config.lifecycle_day_ms,
            keys_per_pass: usize::try_from(config.lifecycle_keys_per_pass).unwrap_or(usize::MAX),
        },
        planner_rx.clone(),
    ));
    let apply_version = tokio::spawn(crate::upgrade::run(
        id,
        raft.clone(),
        StateReader::new(db.clone()),
        config.apply_version_max,
        config.secret.clone(),
        observed.clone(),
        planner_rx.clone(),
    ));
    let scanner = tokio::spawn(crate::scanner::run(
        id,
        raft.clone(),
        StateReader::new(db.clone()),
        observed.clone(),
        crate::scanner::ScanSettings {
            interval: Duration::from_millis(config.metadata_scan_interval_ms),
            extents_per_sec: config.metadata_scan_extents_per_sec,
            call_deadline: crate::scanner::CALL_DEADLINE,
            secret: config.secret.clone(),
        },
        planner_rx,
    ));
    Ok(MasterHandle {
        id,
        addr,
        raft,
        reader,
        db,
        shutdown: Some(tx),
        server: Some(server),
        planner_stop,
        planner: Some(planner),
        scanner: Some(scanner),
        compaction: Some(compaction),
        lifecycle: Some(lifecycle),
        apply_version: Some(apply_version),
        snapshots: Some(snapshots),
        local_group: config.local_group.clone(),
        api,
        observed,
    })
}

/// Waits until some member of `raft`'s group is known as leader.
pub async fn wait_for_leader(raft: &MasterRaft, timeout: Duration) -> Option<u64> {
    use openraft::async_runtime::WatchReceiver;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = raft.metrics();
    loop {
        if let Some(leader) = rx.borrow_watched().current_leader {
            return Some(leader);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() || tokio::time::timeout(remaining, rx.changed()).await.is_err() {
            return None;
        }
    }
}
