//! The one-process local cell behind `cellar dev`: 3 masters, 3 zones x 2 volume servers
//! x 2 disks and one frontend under one data directory, with small volumes so that
//! sealing and coding happen within minutes of use. Unless `over_grpc`, the frontend calls
//! the volume servers' extent services in-process and the masters pass Raft messages to
//! each other directly; everything else (the master API, the volume servers' tasks,
//! snapshots) goes over gRPC on loopback. Ports are chosen on the first start
//! and kept in `DIR/ports.json` (the masters' Raft membership names them), so the next
//! start finds all its data again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cellar_master::config::MasterConfig;
use cellar_master::node::{self as master_node, MasterHandle};
use cellar_volume::{VolumeConfig, VolumeHandle};
use serde::{Deserialize, Serialize};

use cellar_frontend::{FrontendConfig, FrontendHandle};

/// Zones of the dev cell.
pub const ZONES: usize = 3;
/// Volume servers per zone.
pub const SERVERS_PER_ZONE: usize = 2;
/// Disks per volume server.
pub const DISKS_PER_SERVER: usize = 2;
/// Open volumes the dev frontend writes at once: many small puts in flight share fsyncs.
/// 16, not one per client of a 32-client load: with 32, 2 GiB of 4 MiB puts left about
/// half the data in 32 barely filled open volumes (uncached replicas, read from the
/// device); with 16 the batches are larger (fewer fsyncs) and more volumes fill and get
/// coded. Measured on `cellar bench blocks`, 32 clients: 4 MiB puts ~532 -> ~578 MB/s,
/// 4 MiB gets ~1,220 -> ~1,585 MB/s, 4 KiB puts ~2,700 -> ~3,900/s (8 writers: puts
/// ~500 MB/s).
pub const DEV_WRITERS: usize = 16;

/// Payload bytes of recent large records each volume server keeps in memory (see
/// `cellar_volume::recent`): a quarter of a volume server's default, as one process holds
/// all six of a dev cell.
pub const DEV_RECENT_RECORDS_BYTES: u64 = cellar_volume::recent::RECENT_RECORDS_DEFAULT_BYTES / 4;
/// How long start-up waits for the cell to take a put.
pub const READY_DEADLINE: Duration = Duration::from_secs(120);

/// How to run the dev cell.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// HTTP address of the frontend.
    pub http: String,
    /// gRPC address of the frontend's block API.
    pub grpc: String,
    /// Address of the frontend's S3 API.
    pub s3: String,
    /// Volume size.
    pub volume_size_bytes: u64,
    /// Write lease duration (also how soon an abandoned volume is sealed).
    pub lease_ms: u64,
    /// Whether the cell's parts talk over gRPC on loopback, as on separate machines. By
    /// default the frontend calls the volume servers' extent services in-process (see
    /// `cellar_volume_api::cluster::ExtentClient`) and the masters hand Raft messages to each
    /// other directly (`cellar_master::network::LocalGroup`): the same handlers, without
    /// sockets or encoding.
    pub over_grpc: bool,
}

/// The ports chosen on the first start.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ports {
    masters: Vec<u16>,
    volumes: Vec<u16>,
}

/// What `DIR/endpoints.json` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoints {
    /// The HTTP block API, `http://host:port`.
    pub http: String,
    /// The gRPC block API (`cellar.frontend.v1`), `host:port`.
    pub grpc: Option<String>,
    /// Master addresses.
    pub masters: Vec<String>,
    /// Volume server addresses.
    pub volumes: Vec<String>,
    /// The S3 API, `http://host:port`.
    pub s3: String,
    /// The dev cell's S3 access key ([`DEV_ACCESS_KEY`]).
    pub access_key: String,
    /// Its secret (chosen at random on the first start, kept in the masters).
    pub secret_key: String,
}

/// The access key `cellar dev` creates for its S3 API.
pub const DEV_ACCESS_KEY: &str = "cellar-dev";

/// A running dev cell.
pub struct DevCell {
    /// The endpoints.
    pub endpoints: Endpoints,
    /// The frontend.
    pub frontend: Option<FrontendHandle>,
    /// The volume servers.
    pub volumes: Vec<VolumeHandle>,
    /// The masters.
    pub masters: Vec<MasterHandle>,
}

/// Why the dev cell did not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A file in the data directory.
    #[error("{path}: {detail}")]
    Files {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A process role did not start.
    #[error("start {role}: {detail}")]
    Start {
        /// Which role.
        role: String,
        /// Why.
        detail: String,
    },
}

fn files(path: &Path, e: impl std::fmt::Display) -> DevError {
    DevError::Files { path: path.to_path_buf(), detail: e.to_string() }
}

fn start_err(role: impl Into<String>, e: impl std::fmt::Display) -> DevError {
    DevError::Start { role: role.into(), detail: e.to_string() }
}

fn free_port() -> Result<u16, DevError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| start_err("port", e))?;
    l.local_addr().map(|a| a.port()).map_err(|e| start_err("port", e))
}

fn load_ports(dir: &Path) -> Result<Ports, DevError> {
    let path = dir.join("ports.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| files(&path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ports = Ports {
                masters: (0..3).map(|_| free_port()).collect::<Result<_, _>>()?,
                volumes: (0..ZONES * SERVERS_PER_ZONE).map(|_| free_port()).collect::<Result<_, _>>()?,
            };
            let text = serde_json::to_vec_pretty(&ports).map_err(|e| files(&path, e))?;
            std::fs::write(&path, text).map_err(|e| files(&path, e))?;
            Ok(ports)
        }
        Err(e) => Err(files(&path, e)),
    }
}

impl DevCell {
    /// Starts the cell and waits until it takes a put; writes `DIR/endpoints.json`.
    pub async fn start(options: DevOptions) -> Result<DevCell, DevError> {
        let dir = &options.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| files(dir, e))?;
        let ports = load_ports(dir)?;
        let masters: Vec<String> = ports.masters.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers: BTreeMap<u64, String> =
            masters.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.clone())).collect();
        let mut cell = DevCell {
            endpoints: Endpoints {
                http: String::new(),
                grpc: None,
                masters: masters.clone(),
                volumes: Vec::new(),
                s3: String::new(),
                access_key: DEV_ACCESS_KEY.to_string(),
                secret_key: String::new(),
            },
            frontend: None,
            volumes: Vec::new(),
            masters: Vec::new(),
        };
        // In-process calls between the cell's parts unless measuring the networked paths.
        let local_group = (!options.over_grpc).then(cellar_master::network::LocalGroup::new);
        for (id, addr) in &peers {
            let mut config =
                MasterConfig::new(*id, addr.clone(), dir.join(format!("master-{id}")), peers.clone());
            config.init = *id == 1;
            config.volume_size_bytes = options.volume_size_bytes;
            config.lease_ms = options.lease_ms;
            config.abandoned_after_ms = options.lease_ms;
            config.local_group = local_group.clone();
            let listener = master_node::bind(addr).await.map_err(|e| start_err(format!("master {id}"), e))?;
            let handle = master_node::start(config, listener)
                .await
                .map_err(|e| start_err(format!("master {id}"), e))?;
            cell.masters.push(handle);
        }
        let mut port = ports.volumes.iter();
        for z in 1..=ZONES {
            for s in 0..SERVERS_PER_ZONE {
                let name = format!("volume-z{z}-{s}");
                let disks = (0..DISKS_PER_SERVER).map(|d| dir.join(&name).join(format!("disk{d}"))).collect();
                let addr = format!("127.0.0.1:{}", port.next().copied().unwrap_or(0));
                let mut config = VolumeConfig::new(addr.clone(), format!("zone-{z}"), disks, masters.clone());
                config.task_poll = Duration::from_millis(500);
                config.recent_records_bytes = DEV_RECENT_RECORDS_BYTES;
                let handle = cellar_volume::start(config).await.map_err(|e| start_err(&name, e))?;
                cell.endpoints.volumes.push(handle.addr.to_string());
                cell.volumes.push(handle);
            }
        }
        let mut config = FrontendConfig::new(options.http.clone(), masters.clone());
        config.grpc = Some(options.grpc.clone());
        config.s3 = Some(options.s3.clone());
        // Block and volume sizes come from the masters, through the cluster map.
        config.writers = DEV_WRITERS;
        config.holder = format!("dev-frontend-{}", std::process::id());
        if !options.over_grpc {
            let local = cellar_master_api::client::LocalMasters::new();
            for m in &cell.masters {
                if let Some(addr) = peers.get(&m.id) {
                    cellar_master::add_local(&local, addr, m.local_api());
                }
            }
            config.local_masters = Some(local);
        }
        let frontend = cellar_frontend::start(config).await.map_err(|e| start_err("frontend", e))?;
        if !options.over_grpc {
            for v in &cell.volumes {
                let service = v.local_service();
                frontend.blocks.cluster().add_local(v.node_id, &service);
                // The volume servers' tasks (encode, copy, reconstruct) write fragments
                // to each other in-process too.
                for w in &cell.volumes {
                    if w.node_id != v.node_id {
                        w.shared.cluster.add_local(v.node_id, &service);
                    }
                }
            }
        }
        cell.endpoints.http = format!("http://{}", frontend.addr);
        cell.endpoints.grpc = frontend.grpc_addr.map(|a| a.to_string());
        // Ready means a put goes through end to end (the same block each start: deduplicated).
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        loop {
            match frontend.blocks.put(bytes::Bytes::from_static(b"cellar dev: ready"), None).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "dev cell not ready yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(start_err("readiness put", e)),
            }
        }
        cell.endpoints.s3 = frontend.s3_addr.map(|a| format!("http://{a}")).unwrap_or_default();
        cell.endpoints.secret_key = dev_access_key(frontend.blocks.cluster().master())
            .await
            .map_err(|e| start_err("S3 access key", e))?;
        cell.frontend = Some(frontend);
        let path = dir.join("endpoints.json");
        let text = serde_json::to_vec_pretty(&cell.endpoints).map_err(|e| files(&path, e))?;
        let tmp = dir.join("endpoints.json.tmp");
        std::fs::write(&tmp, text).map_err(|e| files(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| files(&path, e))?;
        Ok(cell)
    }

    /// Stops everything: the frontend (sealing its volumes), the volume servers, the
    /// masters; removes `endpoints.json`.
    pub async fn shutdown(mut self, data_dir: &Path) {
        let _ = std::fs::remove_file(data_dir.join("endpoints.json"));
        if let Some(f) = self.frontend.take() {
            f.shutdown().await;
        }
        for v in self.volumes.drain(..) {
            v.shutdown().await;
        }
        for m in self.masters.drain(..) {
            m.shutdown().await;
        }
    }
}

/// The secret of the dev cell's access key: created (random) on the first start, read back
/// from the masters on the next ones.
async fn dev_access_key(master: &cellar_master_api::client::MasterClient) -> Result<String, String> {
    use cellar_proto::master as pb;
    let secret = {
        use std::hash::{BuildHasher, Hasher};
        let mut out = String::new();
        for i in 0..2u32 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(i);
            h.write_u32(std::process::id());
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    };
    let create = pb::NsWriteRequest {
        request_id: None,
        op: Some(pb::ns_write_request::Op::CreateKey(pb::CreateKeyOp {
            access_key: DEV_ACCESS_KEY.to_string(),
            secret_key: secret.clone(),
            name: "cellar dev".to_string(),
        })),
    };
    match master.call_once(create, |mut c, r| async move { c.ns_write(r).await }).await {
        Ok(_) => Ok(secret),
        Err(e) if e.code() == Some("KeyExists") => master
            .call(|mut c| async move {
                c.ns_get_access_key(pb::GetAccessKeyRequest { access_key: DEV_ACCESS_KEY.to_string() }).await
            })
            .await
            .map(|k| k.secret_key)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
