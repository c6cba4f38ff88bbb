//! Starting and stopping a volume server: open the disks, register with the master (the
//! node id kept on the disks makes a restart the same node), serve the extent API, send
//! heartbeats and run tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cellar_blockstore::DiskOptions;
use cellar_master_api::client::MasterClient;
use cellar_proto::master as mpb;
use cellar_proto::volume::volume_server::VolumeServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::budget::ByteBudget;
use crate::cluster::Cluster;
use crate::config::VolumeConfig;
use crate::disks::{
    DiskHealth, DisksError, LocalDisks, UNREADABLE_EXTENTS_DISK_FAILED, disk_failed, op_hung,
};
use crate::fence::Fences;
use crate::service::{Shared, VolumeService};
use crate::{
    CONNECTION_STREAMS_MAX, CONNECTION_WINDOW_BYTES, FRAME_MAX_BYTES, MESSAGE_MAX_BYTES, STREAM_WINDOW_BYTES,
};

/// How long start-up waits for a master leader to register with.
pub const REGISTER_DEADLINE: Duration = Duration::from_secs(120);

/// Why a volume server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A disk could not be opened or identified.
    #[error(transparent)]
    Disks(#[from] DisksError),
    /// The master refused or could not be reached.
    #[error("register with the master: {0}")]
    Register(String),
}

/// A running volume server.
pub struct VolumeHandle {
    /// Its node id in the cell.
    pub node_id: u64,
    /// The bound address.
    pub addr: SocketAddr,
    /// Its state (disks, budget, cluster view), for tests and benchmarks.
    pub shared: Arc<Shared>,
    local: Arc<VolumeService>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl VolumeHandle {
    /// The extent API of this server for callers in the same process (see
    /// [`Cluster::add_local`]).
    pub fn local_service(&self) -> Arc<dyn crate::cluster::LocalExtents> {
        self.local.clone()
    }

    /// Stops serving and background work; the disks are closed once the last request
    /// using them has finished.
    pub async fn shutdown(self) {
        self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Opens the disks, registers and starts serving on `config.listen`.
pub async fn start(config: VolumeConfig) -> Result<VolumeHandle, StartError> {
    config.validate().map_err(StartError::Config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Listen { addr: config.listen.clone(), source })?;
    let addr =
        listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen.clone(), source })?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());

    let register_client = MasterClient::new(&config.masters, config.secret.as_deref())
        .map_err(|e| StartError::Register(e.to_string()))?
        .with_deadline(REGISTER_DEADLINE);
    // The cell's block size limit, unless this server was given its own.
    let block_max = match config.block_size_max_bytes {
        Some(b) => b,
        None => {
            register_client
                .cell_settings()
                .await
                .map_err(|e| StartError::Register(format!("cell settings: {e}")))?
                .block_size_max_bytes
        }
    };
    config.check_block_size(block_max).map_err(StartError::Config)?;
    tracing::info!(block_size_max_bytes = block_max, "block size limit");
    let paths = config.disks.clone();
    let options = DiskOptions {
        io: config.io.clone(),
        block_size_max_bytes: block_max,
        reserve_bytes: config.disk_reserve_bytes,
        // The trash floor's switch: 0 keeps every delete for its retention.
        purge_trash_for_fragments: config.trash_free_min_percent > 0,
    };
    let disks = tokio::task::spawn_blocking(move || LocalDisks::open(&paths, options))
        .await
        .map_err(|e| StartError::Config(format!("disk opener: {e}")))??;
    let disks = Arc::new(disks);
    let known_id = disks.node_id()?;

    let mut registrations = Vec::new();
    for d in disks.all() {
        let disk = d.disk.clone();
        let stat = tokio::task::spawn_blocking(move || disk.stat())
            .await
            .map_err(|e| StartError::Config(e.to_string()))?
            .map_err(|e| StartError::Disks(DisksError::Open { path: d.path.clone(), source: e }))?;
        registrations.push(mpb::DiskRegistration {
            uuid: hex::encode(d.disk.identity().disk_uuid),
            path: d.path.display().to_string(),
            capacity_bytes: stat.capacity_bytes,
            used_bytes: stat.used_bytes,
            // Room for data: the catalog's reserve is not for placement.
            free_bytes: stat.data_room_bytes,
        });
    }
    let request = mpb::RegisterNodeRequest {
        node_id: known_id,
        address: advertise.clone(),
        zone: config.zone.clone(),
        disks: registrations,
        request_id: None,
    };
    // Exactly once: a retried first registration must not register a second node.
    let registered = register_client
        .call_once(request, |mut c, r| async move { c.register_node(r).await })
        .await
        .map_err(|e| StartError::Register(e.to_string()))?;
    disks.remember(registered.node_id, &registered.disk_ids)?;
    tracing::info!(node = registered.node_id, %advertise, zone = %config.zone, disks = registered.disk_ids.len(), "volume server registered");

    let master = MasterClient::new(&config.masters, config.secret.as_deref())
        .map_err(|e| StartError::Register(e.to_string()))?;
    let cluster = Cluster::with_deadlines(master, config.secret.clone(), config.deadlines);
    let shared = Arc::new(Shared {
        node_id: registered.node_id,
        disks: disks.clone(),
        cluster,
        fences: Fences::default(),
        budget: ByteBudget::new(config.inflight_max_bytes),
        block_size_max_bytes: block_max,
        secret: config.secret.clone(),
        metrics: crate::counters::VolumeMetrics::default(),
        stopped: std::sync::atomic::AtomicBool::new(false),
        disk_hung_after: config.disk_hung_after,
        repair_pace: crate::pace::Pace::default(),
        // A record, or a fragment read of one: its whole chunks, up to a chunk more on
        // each side, and the slack of a direct read.
        recent: crate::recent::RecentRecords::new(config.recent_records_bytes),
        read_buffers: crate::buffers::ReadBuffers::new(
            block_max as usize
                + cellar_blockstore::RECORD_HEADER_BYTES
                + 2 * crate::FRAGMENT_CHUNK_BYTES as usize
                + cellar_blockstore::io::direct::DIRECT_READ_SLACK_BYTES,
        ),
    });
    // Before serving: the first reads then find warm buffers (see buffers.rs).
    let pool = shared.read_buffers.clone();
    if let Err(e) =
        tokio::task::spawn_blocking(move || pool.warm(crate::buffers::READ_BUFFERS_KEPT_MAX)).await
    {
        tracing::warn!(error = %e, "read buffers not warmed; the first reads will fault them in");
    }

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let local = Arc::new(VolumeService::new(shared.clone()));
    let service = crate::replies::ReadReplies::new(
        VolumeServer::from_arc(local.clone())
            .max_decoding_message_size(MESSAGE_MAX_BYTES)
            .max_encoding_message_size(MESSAGE_MAX_BYTES),
        local.clone(),
    );
    let mut server_stop = stop_rx.clone();
    // serve_with_incoming ignores the builder's tcp_nodelay: set it on each accepted socket
    // here, or small responses wait ~40 ms for a delayed ACK (Nagle).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let node_id = registered.node_id;
    tasks.push(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(CONNECTION_STREAMS_MAX))
            .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES))
            .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
            .max_frame_size(Some(FRAME_MAX_BYTES))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(node = node_id, error = %e, "volume gRPC server stopped");
        }
    }));
    report_bad_extents_found_at_open(&shared);
    tasks.push(tokio::spawn(heartbeats(shared.clone(), config.heartbeat, stop_rx.clone())));
    tasks.push(tokio::spawn(crate::trash::run(
        shared.clone(),
        config.trash_retention,
        config.trash_free_min_percent,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(crate::scrub::run(shared.clone(), config.scrub, stop_rx.clone())));
    tasks.push(tokio::spawn(crate::tasks::run_executor(
        shared.clone(),
        config.task_poll,
        config.encode_defer,
        stop_rx,
    )));
    Ok(VolumeHandle { node_id, addr, shared, local, stop, tasks })
}

/// Reports to the master every extent the disks' recovery found missing, damaged or
/// holding damaged records (kept in place so that the records after them stay
/// readable), so that the master marks them for repair. Repeated at every start until
/// the extent is repaired: recovery finds the damage again each time.
fn report_bad_extents_found_at_open(shared: &Shared) {
    for (disk_id, disk) in shared.disks.with_ids() {
        for (extent, reason) in disk.open_report().bad_extents() {
            shared.cluster.report_bad_extent(extent.volume_id, disk_id, reason);
        }
    }
}

async fn heartbeats(shared: Arc<Shared>, period: Duration, mut stop: watch::Receiver<bool>) {
    // Failed extents per disk as last logged: the error is logged when the count grows,
    // not at every heartbeat.
    let mut failed_logged: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    let hung_after = shared.disk_hung_after;
    // Disks last seen hung: logged when they hang and when they answer again, not at
    // every heartbeat.
    let mut hung: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    loop {
        let disks = shared
            .disks
            .stats(crate::disks::STAT_WAIT, hung_after)
            .await
            .into_iter()
            .filter_map(|(disk_id, health)| match health {
                DiskHealth::Stat(s) => {
                    let failed = disk_failed(&s, hung_after);
                    if op_hung(&s, hung_after) {
                        if hung.insert(disk_id) {
                            tracing::error!(disk = disk_id, oldest_op_ms = s.oldest_op_ms,
                                "an operation on this disk has been under way too long (the device stopped answering?); reporting the disk failed");
                        }
                    } else if hung.remove(&disk_id) {
                        tracing::warn!(disk = disk_id, "this disk answers again");
                    }
                    let faults = s.failed_extents + s.write_faults + s.unreadable_extents;
                    let logged = failed_logged.entry(disk_id).or_default();
                    if faults > *logged {
                        *logged = faults;
                        if failed {
                            tracing::error!(disk = disk_id, extents = s.failed_extents, write_faults = s.write_faults,
                                unreadable_extents = s.unreadable_extents,
                                "this disk failed writes (extents failed a write or fsync, or creates or catalog writes failed) or too many reads; reporting the disk failed");
                        } else {
                            tracing::warn!(disk = disk_id, unreadable_extents = s.unreadable_extents,
                                failed_at = UNREADABLE_EXTENTS_DISK_FAILED,
                                "the device failed reads of this disk's extents (each is reported and rebuilt)");
                        }
                    }
                    Some(mpb::DiskStats {
                        disk_id,
                        capacity_bytes: s.capacity_bytes,
                        used_bytes: s.used_bytes,
                        // Room for data: the catalog's reserve is not for placement.
                        free_bytes: s.data_room_bytes,
                        failed,
                        trash_bytes: s.trash_bytes,
                        trash_extents: s.trash_extents,
                    })
                }
                DiskHealth::Failed(e) => {
                    tracing::error!(disk = disk_id, error = %e, "disk stat failed; reporting the disk failed");
                    Some(mpb::DiskStats { disk_id, failed: true, ..Default::default() })
                }
                DiskHealth::Hung(waited) => {
                    if hung.insert(disk_id) {
                        tracing::error!(disk = disk_id, waited_ms = waited.as_millis() as u64,
                            "this disk's stat has not answered (the device stopped answering?); reporting the disk failed");
                    }
                    Some(mpb::DiskStats { disk_id, failed: true, ..Default::default() })
                }
                // No news this round; the master keeps what it knew.
                DiskHealth::Waiting => None,
            })
            .collect::<Vec<_>>();
        let node_id = shared.node_id;
        let scrub = shared.metrics.scrub.progress();
        let sent = shared
            .cluster
            .master()
            .call_once(
                mpb::HeartbeatRequest { node_id, disks, request_id: None, scrub },
                |mut c, r| async move { c.heartbeat(r).await },
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(node = node_id, error = %e, "heartbeat failed");
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
