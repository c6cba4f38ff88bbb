//! The master's client API (`cellar.master.v1`): writes go through Raft (followers answer
//! NOT_LEADER with the leader's address), reads are linearizable: by the leader's lease, else a read index.

use std::collections::BTreeMap;
use std::sync::Arc;

use cellar_proto::master as pb;
use cellar_proto::master::master_server::Master;
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use tonic::{Code, Request, Response, Status};

use crate::auth::check_secret;
use crate::batcher::CommitBatcher;
use crate::codec::Kind;
use crate::command::{
    self, Command, CommitOutcome, Digest16, DiskRegistration, DiskStat, EntryVersion, Hash32, IndexCommit,
};
use crate::errors::{self, bad_request, internal};
use crate::observed::MemberBuild;
use crate::observed::Observed;
use crate::repair::RepairStatus;
use crate::state::{self, Kv, PREFIX_DISK, PREFIX_NODE};
use crate::store::sm::StateReader;
use crate::types::{DiskRecord, NodeRecord, VolumeRecord, VolumeState};
pub use crate::wire::{LOOKUP_HASHES_MAX, STRING_MAX_BYTES, request_id, task_kind_from_pb, volume_pb};
use crate::wire::{bounded, disk_pb, index_pb, node_pb, parse_hashes, task_pb};
use crate::{MasterRaft, now_unix_ms};

/// Nodes an AllocateVolume may ask to be passed over.
const AVOID_NODES_MAX: usize = 64;

/// Disks one node may register.
pub const DISKS_PER_NODE_MAX: usize = 256;
/// Entries in one CommitIndex call.
pub const COMMIT_ENTRIES_MAX: usize = 10_000;
/// Volumes in one GetVolumes call.
pub const VOLUMES_PER_CALL_MAX: usize = 10_000;
/// How long a claimed task is held before it may be handed out again.
pub const TASK_CLAIM_MS: u64 = 10 * 60 * 1000;

/// Cell-wide settings the API needs.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Volume size (`volume_size_bytes`).
    pub volume_size_bytes: u64,
    /// Largest block payload.
    pub block_size_max_bytes: u64,
    /// Replicas per open volume.
    pub replicas: u8,
    /// Coding scheme.
    pub scheme: cellar_erasure::Scheme,
    /// Lease duration.
    pub lease_ms: u64,
    /// See [`crate::config::MasterConfig::node_silent_after_ms`].
    pub node_silent_after_ms: u64,
    /// See [`crate::config::MasterConfig::repair_tasks_max`].
    pub repair_tasks_max: u64,
    /// See [`crate::config::MasterConfig::repair_bytes_per_sec`].
    pub repair_bytes_per_sec: u64,
    /// See [`crate::config::MasterConfig::apply_version_max`].
    pub apply_version_max: u32,
    /// See [`crate::config::MasterConfig::down_after_ms`].
    pub down_after_ms: u64,
    /// Cluster secret.
    pub secret: Option<String>,
}

/// The service.
pub struct MasterService {
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    batcher: CommitBatcher,
    ns_batcher: crate::ns_batcher::NsBatcher,
    settings: ApiSettings,
    observed: Arc<Observed>,
}

impl MasterService {
    /// A service for the master `id`.
    pub fn new(
        id: u64,
        raft: MasterRaft,
        reader: StateReader,
        batcher: CommitBatcher,
        settings: ApiSettings,
        observed: Arc<Observed>,
    ) -> Self {
        let ns_batcher = crate::ns_batcher::NsBatcher::start(raft.clone());
        MasterService { id, raft, reader, batcher, ns_batcher, settings, observed }
    }

    /// See [`crate::raft_calls::write_once`].
    async fn write_once(
        &self,
        request: Option<pb::RequestId>,
        command: Command,
    ) -> Result<command::Response, Status> {
        // A command of a later apply version is refused before it reaches the log while
        // the cell is below it (masters of the builds before could not read the entry).
        // The version only rises, so a linearizable read of it here is enough.
        let needed = crate::apply_version::needed(&command);
        if needed > crate::apply_version::APPLY_VERSION_FIRST {
            self.linearizable().await?;
            let cell = crate::apply_version::current(&self.reader).map_err(internal)?;
            if cell < needed {
                let detail = crate::apply_version::too_old_for(&command, needed, cell);
                return Err(errors::command_error(&command::CommandError::BadRequest { detail }));
            }
        }
        crate::raft_calls::write_once(&self.raft, request, command).await
    }

    /// See [`crate::raft_calls::linearizable`].
    async fn linearizable(&self) -> Result<(), Status> {
        crate::raft_calls::linearizable(&self.raft).await
    }

    fn liveness(&self) -> crate::placement_view::Liveness {
        crate::placement_view::Liveness {
            now_unix_ms: now_unix_ms(),
            silent_after_ms: self.settings.node_silent_after_ms,
        }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        check_secret(req, self.settings.secret.as_deref())
    }

    fn nodes(&self) -> Result<Vec<NodeRecord>, Status> {
        self.reader.records(PREFIX_NODE, Kind::Node).map_err(internal)
    }

    fn disks(&self) -> Result<Vec<DiskRecord>, Status> {
        self.reader.records(PREFIX_DISK, Kind::Disk).map_err(internal)
    }

    fn drains(&self) -> Result<state::Drains, Status> {
        self.reader.drains().map_err(internal)
    }

    /// The bytes open tasks will write, per disk (see [`crate::placement_view::Promised`]).
    fn promised(&self) -> Result<crate::placement_view::Promised, Status> {
        let tasks: Vec<crate::types::TaskRecord> =
            self.reader.records(crate::tasks::PREFIX_TASK, Kind::Task).map_err(internal)?;
        let mut volumes = std::collections::BTreeMap::new();
        for t in &tasks {
            let id = t.kind.volume_id();
            if let std::collections::btree_map::Entry::Vacant(e) = volumes.entry(id)
                && let Some(v) = read_volume(&self.reader, id)?
            {
                e.insert(v);
            }
        }
        Ok(crate::placement_view::Promised::of(&tasks, |id| volumes.get(&id)))
    }
}

fn expect_volume(response: command::Response) -> Result<Response<pb::Volume>, Status> {
    match response {
        command::Response::Volume { volume } => Ok(Response::new(volume_pb(&volume))),
        other => Err(internal(format!("unexpected response {other:?}"))),
    }
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        bounded("address", &r.address)?;
        bounded("zone", &r.zone)?;
        if r.disks.len() > DISKS_PER_NODE_MAX {
            return Err(bad_request(format!("a node registers at most {DISKS_PER_NODE_MAX} disks")));
        }
        let mut disks = Vec::with_capacity(r.disks.len());
        for d in r.disks {
            bounded("disk uuid", &d.uuid)?;
            bounded("disk path", &d.path)?;
            disks.push(DiskRegistration {
                uuid: d.uuid,
                path: d.path,
                capacity_bytes: d.capacity_bytes,
                used_bytes: d.used_bytes,
                free_bytes: d.free_bytes,
            });
        }
        let command = Command::RegisterNode {
            node_id: r.node_id,
            address: r.address,
            zone: r.zone,
            disks,
            now_unix_ms: now_unix_ms(),
        };
        match self.write_once(once, command).await? {
            command::Response::NodeRegistered { node_id, disk_ids } => {
                Ok(Response::new(pb::RegisterNodeResponse { node_id, disk_ids }))
            }
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        if r.disks.len() > DISKS_PER_NODE_MAX {
            return Err(bad_request(format!("a node has at most {DISKS_PER_NODE_MAX} disks")));
        }
        let disks = r
            .disks
            .iter()
            .map(|d| DiskStat {
                disk_id: d.disk_id,
                capacity_bytes: d.capacity_bytes,
                used_bytes: d.used_bytes,
                free_bytes: d.free_bytes,
                failed: d.failed,
                trash_bytes: d.trash_bytes,
                trash_extents: d.trash_extents,
            })
            .collect();
        // A node marked down that is heard from again is up once this applies; the
        // metadata scanner then checks its extents before the next pass trusts them.
        // So does a disk reported failed that its server now reports whole again.
        let was_down = state::node(&self.reader, r.node_id)
            .map_err(internal)?
            .is_some_and(|n| n.state == crate::types::NodeState::Down)
            || r.disks.iter().filter(|d| !d.failed).any(|d| {
                state::disk(&self.reader, d.disk_id)
                    .ok()
                    .flatten()
                    .is_some_and(|rec| rec.health == crate::types::DiskHealth::Failed)
            });
        match self
            .write_once(once, Command::Heartbeat { node_id: r.node_id, disks, now_unix_ms: now_unix_ms() })
            .await?
        {
            command::Response::HeartbeatAck { cluster_map_version } => {
                if was_down {
                    self.observed.node_returned(r.node_id);
                }
                if let Some(scrub) = r.scrub {
                    self.observed.scrub_progress(r.node_id, scrub);
                }
                Ok(Response::new(pb::HeartbeatResponse { cluster_map_version }))
            }
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn get_cluster_map(
        &self,
        req: Request<pb::GetClusterMapRequest>,
    ) -> Result<Response<pb::ClusterMap>, Status> {
        self.check(&req)?;
        self.linearizable().await?;
        let version = state::counters(&self.reader).map_err(internal)?.cluster_map_version;
        let settings = Some(pb::CellSettings {
            volume_size_bytes: self.settings.volume_size_bytes,
            scheme: Some(self.settings.scheme.into()),
            block_size_max_bytes: self.settings.block_size_max_bytes,
            lease_ms: self.settings.lease_ms,
        });
        if req.get_ref().known_version == version {
            return Ok(Response::new(pb::ClusterMap {
                version,
                nodes: vec![],
                disks: vec![],
                unchanged: true,
                settings,
            }));
        }
        let nodes = self.nodes()?.iter().map(node_pb).collect();
        let disks = self.disks()?.iter().map(disk_pb).collect();
        Ok(Response::new(pb::ClusterMap { version, nodes, disks, unchanged: false, settings }))
    }

    async fn get_volumes(
        &self,
        req: Request<pb::GetVolumesRequest>,
    ) -> Result<Response<pb::GetVolumesResponse>, Status> {
        self.check(&req)?;
        let ids = req.into_inner().volume_ids;
        if ids.len() > VOLUMES_PER_CALL_MAX {
            return Err(bad_request(format!("at most {VOLUMES_PER_CALL_MAX} volumes per call")));
        }
        self.linearizable().await?;
        let mut volumes = Vec::new();
        for id in ids {
            if let Some(v) = state::volume(&self.reader, id).map_err(internal)? {
                volumes.push(volume_pb(&v));
            }
        }
        Ok(Response::new(pb::GetVolumesResponse { volumes }))
    }

    async fn allocate_volume(
        &self,
        req: Request<pb::AllocateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        bounded("holder", &r.holder)?;
        if r.avoid_nodes.len() > AVOID_NODES_MAX {
            return Err(bad_request(format!("at most {AVOID_NODES_MAX} nodes to avoid")));
        }
        let copies = if r.copies == 0 {
            self.settings.replicas
        } else {
            u8::try_from(r.copies).map_err(|_| bad_request("copies must be below 256"))?
        };
        // Placement is decided here, on the leader's current view; applying re-checks that
        // the chosen disks still serve.
        self.linearizable().await?;
        let view = crate::placement_view::cluster_view(
            &self.nodes()?,
            &self.disks()?,
            self.liveness(),
            &self.drains()?,
            &self.promised()?,
        );
        let seed = state::counters(&self.reader).map_err(internal)?.next_volume_id;
        let size = self.settings.volume_size_bytes;
        // Nodes the writer just failed on are passed over when the rest of the cell can
        // take the volume; otherwise they are as good as any (the failure may have passed).
        let mut avoiding = view.clone();
        for d in &mut avoiding.disks {
            if r.avoid_nodes.contains(&d.node_id) {
                d.writable = false;
            }
        }
        let placed = if r.avoid_nodes.is_empty() {
            cellar_placement::place_replicas(&view, copies, size, seed)
        } else {
            cellar_placement::place_replicas(&avoiding, copies, size, seed)
                .or_else(|_| cellar_placement::place_replicas(&view, copies, size, seed))
        };
        let chosen = placed.map_err(|e| {
            errors::status(
                Code::FailedPrecondition,
                cellar_proto::error_code::NOT_ENOUGH_FAILURE_DOMAINS,
                e.to_string(),
            )
        })?;
        let replicas = chosen
            .iter()
            .map(|d| crate::types::ExtentPlace { node_id: d.node_id, disk_id: d.disk_id })
            .collect();
        let command = Command::AllocateVolume {
            holder: r.holder,
            scheme: self.settings.scheme,
            replicas,
            lease_ms: self.settings.lease_ms,
            now_unix_ms: now_unix_ms(),
        };
        expect_volume(self.write_once(once, command).await?)
    }

    async fn renew_lease(&self, req: Request<pb::RenewLeaseRequest>) -> Result<Response<pb::Volume>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        let command = Command::RenewLease {
            volume_id: r.volume_id,
            lease_epoch: r.lease_epoch,
            lease_ms: self.settings.lease_ms,
            now_unix_ms: now_unix_ms(),
        };
        expect_volume(self.write_once(once, command).await?)
    }

    async fn commit_index(
        &self,
        req: Request<pb::CommitIndexRequest>,
    ) -> Result<Response<pb::CommitIndexResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        if r.entries.len() > COMMIT_ENTRIES_MAX {
            return Err(bad_request(format!("at most {COMMIT_ENTRIES_MAX} entries per call")));
        }
        let once = r.request_id.as_ref().map(request_id);
        if r.versions.len() > r.entries.len() {
            return Err(bad_request("at most one version per entry"));
        }
        let mut versions = Vec::with_capacity(r.versions.len());
        let mut version_buckets = Vec::with_capacity(r.versions.len());
        for v in r.versions {
            let op = v.op.ok_or_else(|| bad_request("a version needs its PutVersionOp"))?;
            let unreferenced = r.entries.get(v.entry as usize).map(|e| e.unreferenced);
            if unreferenced != Some(true) {
                return Err(bad_request(format!(
                    "version names entry {}, not an unreferenced entry",
                    v.entry
                )));
            }
            version_buckets.push(op.bucket.clone());
            versions.push(EntryVersion { entry: v.entry, op: crate::ns_service::put_version_op(op)? });
        }
        let mut entries = Vec::with_capacity(r.entries.len());
        let mut unreferenced = Vec::new();
        let mut relocate_from = Vec::with_capacity(r.entries.len());
        for (i, e) in r.entries.into_iter().enumerate() {
            if e.unreferenced {
                unreferenced.push(i as u32);
            }
            relocate_from.push(e.relocate_from_volume);
            let hash = Hash32::from_slice(&e.hash).ok_or_else(|| bad_request("a hash is 32 bytes"))?;
            let digest = match e.digest.len() {
                0 => None,
                _ => Some(
                    Digest16::from_slice(&e.digest)
                        .ok_or_else(|| bad_request("a digest is 16 bytes, or empty for none"))?,
                ),
            };
            entries.push(IndexCommit {
                hash,
                volume_id: e.volume_id,
                lease_epoch: e.lease_epoch,
                offset_bytes: e.offset_bytes,
                payload_bytes: e.payload_bytes,
                crc32: e.crc32,
                digest,
            });
        }
        let (outcomes, versions) = if relocate_from.iter().any(|v| *v != 0) {
            // Compaction's rewrites: one entry of their own (not batched).
            if !unreferenced.is_empty() {
                return Err(bad_request("a relocating commit takes no unreferenced entry"));
            }
            let command = Command::RelocateIndex {
                entries,
                relocate_from,
                volume_size_max_bytes: self.settings.volume_size_bytes,
                now_unix_ms: now_unix_ms(),
            };
            match self.write_once(r.request_id, command).await? {
                command::Response::Committed { outcomes } => (outcomes, Vec::new()),
                other => return Err(internal(format!("unexpected response {other:?}"))),
            }
        } else {
            let committed = self.batcher.commit(entries, unreferenced, versions, once).await?;
            (committed.outcomes, committed.versions)
        };
        let versions = versions
            .into_iter()
            .zip(version_buckets)
            .map(|(response, bucket)| match response {
                command::Response::Namespace { result } => pb::VersionResult {
                    written: Some(crate::ns_service::written_pb(result, &bucket)),
                    ..Default::default()
                },
                command::Response::Refused { error } => pb::VersionResult {
                    written: None,
                    error_code: error.code().to_string(),
                    detail: error.to_string(),
                },
                other => pb::VersionResult {
                    written: None,
                    error_code: cellar_proto::error_code::INTERNAL.to_string(),
                    detail: format!("unexpected response {other:?}"),
                },
            })
            .collect();
        let results = outcomes
            .iter()
            .map(|o| match o {
                CommitOutcome::Committed { entry } => pb::CommitResult {
                    outcome: pb::CommitOutcome::Committed.into(),
                    entry: Some(index_pb(entry)),
                    ..Default::default()
                },
                CommitOutcome::Deduplicated { entry } => pb::CommitResult {
                    outcome: pb::CommitOutcome::Deduplicated.into(),
                    entry: Some(index_pb(entry)),
                    ..Default::default()
                },
                CommitOutcome::Rejected { error } => pb::CommitResult {
                    outcome: pb::CommitOutcome::Refused.into(),
                    error_code: error.code().to_string(),
                    detail: error.to_string(),
                    entry: None,
                },
            })
            .collect();
        Ok(Response::new(pb::CommitIndexResponse { results, versions }))
    }

    async fn lookup(&self, req: Request<pb::LookupRequest>) -> Result<Response<pb::LookupResponse>, Status> {
        self.check(&req)?;
        let hashes = req.into_inner().hashes;
        let hashes = parse_hashes(&hashes)?;
        self.linearizable().await?;
        let mut entries = Vec::new();
        for hash in hashes {
            if let Some(e) = state::index_entry(&self.reader, &hash).map_err(internal)? {
                entries.push(index_pb(&command::IndexEntryView::new(hash, &e)));
            }
        }
        Ok(Response::new(pb::LookupResponse { entries }))
    }

    async fn seal_volume(&self, req: Request<pb::SealVolumeRequest>) -> Result<Response<pb::Volume>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        self.linearizable().await?;
        let fragments = match read_volume(&self.reader, r.volume_id)? {
            Some(v) if v.state == VolumeState::Open => crate::placement_view::fragment_places(
                &self.nodes()?,
                &self.disks()?,
                &v,
                r.length_bytes.unwrap_or(v.size_bytes),
                self.liveness(),
                &self.drains()?,
                &self.promised()?,
            ),
            _ => Vec::new(),
        };
        expect_volume(
            self.write_once(
                once,
                Command::SealVolume { volume_id: r.volume_id, length_bytes: r.length_bytes, fragments },
            )
            .await?,
        )
    }

    async fn acquire_lease(
        &self,
        req: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        bounded("holder", &r.holder)?;
        let command = Command::AcquireLease {
            volume_id: r.volume_id,
            holder: r.holder,
            lease_ms: self.settings.lease_ms,
            now_unix_ms: now_unix_ms(),
        };
        expect_volume(self.write_once(once, command).await?)
    }

    async fn drain(&self, req: Request<pb::DrainRequest>) -> Result<Response<pb::DrainResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let target = match r.target {
            Some(pb::drain_request::Target::NodeId(node_id)) => crate::types::DrainTarget::Node { node_id },
            Some(pb::drain_request::Target::DiskId(disk_id)) => crate::types::DrainTarget::Disk { disk_id },
            None => return Err(bad_request("Drain needs a node_id or a disk_id")),
        };
        let command = Command::SetDrain { target, drained: !r.undrain, now_unix_ms: now_unix_ms() };
        match self.write_once(r.request_id, command).await? {
            command::Response::Empty => Ok(Response::new(pb::DrainResponse {})),
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn compaction_work(
        &self,
        req: Request<pb::CompactionWorkRequest>,
    ) -> Result<Response<pb::CompactionWorkResponse>, Status> {
        self.check(&req)?;
        let volumes = self
            .observed
            .rewrite_work()
            .into_iter()
            .map(|(volume_id, hashes)| pb::VolumeWork {
                volume_id,
                hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
            })
            .collect();
        Ok(Response::new(pb::CompactionWorkResponse { volumes }))
    }

    async fn ns_write(
        &self,
        req: Request<pb::NsWriteRequest>,
    ) -> Result<Response<pb::NsWriteResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::write(&self.ns_batcher, req.into_inner()).await.map(Response::new)
    }

    async fn ns_get_bucket(
        &self,
        req: Request<pb::GetBucketRequest>,
    ) -> Result<Response<pb::Bucket>, Status> {
        self.check(&req)?;
        crate::ns_service::get_bucket(&self.raft, &self.reader, req.into_inner()).await.map(Response::new)
    }

    async fn ns_list_buckets(
        &self,
        req: Request<pb::ListBucketsRequest>,
    ) -> Result<Response<pb::ListBucketsResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::list_buckets(&self.raft, &self.reader).await.map(Response::new)
    }

    async fn ns_get_version(
        &self,
        req: Request<pb::GetVersionRequest>,
    ) -> Result<Response<pb::GetVersionResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::get_version(&self.raft, &self.reader, req.into_inner()).await.map(Response::new)
    }

    async fn ns_list_objects(
        &self,
        req: Request<pb::ListObjectsRequest>,
    ) -> Result<Response<pb::ListObjectsResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::list_objects(&self.raft, &self.reader, req.into_inner()).await.map(Response::new)
    }

    async fn ns_get_upload(
        &self,
        req: Request<pb::GetUploadRequest>,
    ) -> Result<Response<pb::GetUploadResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::get_upload_parts(&self.raft, &self.reader, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn ns_list_uploads(
        &self,
        req: Request<pb::ListUploadsRequest>,
    ) -> Result<Response<pb::ListUploadsResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::list_uploads(&self.raft, &self.reader, req.into_inner()).await.map(Response::new)
    }

    async fn ns_get_access_key(
        &self,
        req: Request<pb::GetAccessKeyRequest>,
    ) -> Result<Response<pb::AccessKey>, Status> {
        self.check(&req)?;
        crate::ns_service::get_access_key(&self.raft, &self.reader, req.into_inner()).await.map(Response::new)
    }

    async fn ns_list_access_keys(
        &self,
        req: Request<pb::ListAccessKeysRequest>,
    ) -> Result<Response<pb::ListAccessKeysResponse>, Status> {
        self.check(&req)?;
        crate::ns_service::list_access_keys(&self.raft, &self.reader).await.map(Response::new)
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        match self.write_once(r.request_id, Command::RemoveNode { node_id: r.node_id }).await? {
            command::Response::Empty => {
                self.observed.forget_node(r.node_id);
                Ok(Response::new(pb::RemoveNodeResponse {}))
            }
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn retry_task(&self, req: Request<pb::RetryTaskRequest>) -> Result<Response<pb::Task>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        match self.write_once(r.request_id, Command::RetryTask { task_id: r.task_id }).await? {
            command::Response::TaskQueued { task } => Ok(Response::new(task_pb(&task))),
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn drop_references(
        &self,
        req: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        let hashes = r.hashes;
        let hashes = parse_hashes(&hashes)?;
        match self.write_once(once, Command::DropReferences { hashes }).await? {
            command::Response::Dropped { entries } => {
                Ok(Response::new(pb::LookupResponse { entries: entries.iter().map(index_pb).collect() }))
            }
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn enqueue_task(&self, req: Request<pb::EnqueueTaskRequest>) -> Result<Response<pb::Task>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        let task = r.task.ok_or_else(|| bad_request("EnqueueTask needs a task"))?;
        let kind = task_kind_from_pb(&task)?;
        match self.write_once(once, Command::EnqueueTask { kind }).await? {
            command::Response::TaskQueued { task } => Ok(Response::new(task_pb(&task))),
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn report_bad_extent(
        &self,
        req: Request<pb::ReportBadExtentRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        bounded("reason", &r.reason)?;
        // A failing disk under read load reports the same extent over and over: once the
        // leader's state has it as bad, the answer needs no Raft write. Only the leader
        // (within its lease) answers so: a follower's state may lag.
        if self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await.is_ok()
            && let Some(v) = read_volume(&self.reader, r.volume_id)?
            && v.bad_disks.contains(&r.disk_id)
        {
            return Ok(Response::new(volume_pb(&v)));
        }
        tracing::warn!(volume = r.volume_id, disk = r.disk_id, reason = %r.reason, "bad extent reported");
        expect_volume(
            self.write_once(
                once,
                Command::ReportBadExtent { volume_id: r.volume_id, disk_id: r.disk_id, reason: r.reason },
            )
            .await?,
        )
    }

    async fn pull_tasks(
        &self,
        req: Request<pb::PullTasksRequest>,
    ) -> Result<Response<pb::PullTasksResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        use crate::tasks::DEFERRED_KINDS_MAX;
        if r.deferred_kinds.len() > DEFERRED_KINDS_MAX {
            return Err(bad_request(format!("deferred_kinds: at most {DEFERRED_KINDS_MAX}")));
        }
        let deferred_kinds = crate::wire::task_types(&r.deferred_kinds)?;
        // An idle node's poll is answered from the local state without a Raft write; a
        // follower's state may lag, so only the leader answers "nothing to do". Not a
        // retry of a poll that was applied: its tasks were claimed then (so are not
        // claimable now), and the first answer may not have reached the node (seen: the
        // leader killed between the commit and the answer; the retry, answered "nothing"
        // by the next leader, left a repair claimed by nobody until its claim ran out).
        let now = now_unix_ms();
        let repair_bytes_per_sec = self.observed.repair_share(r.node_id, self.settings.repair_bytes_per_sec);
        // In this order: an attempt applied between the two reads has claimed (so the
        // first read found something claimable) or is seen by the second (an entry applies
        // in one write batch).
        if !r.first_since_start
            && self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await.is_ok()
            && !crate::tasks::has_claimable(&self.reader, r.node_id, now, TASK_CLAIM_MS, &deferred_kinds)
                .map_err(internal)?
            && !once
                .as_ref()
                .map(|id| crate::session::seen(&self.reader, &crate::wire::request_id(id)))
                .transpose()
                .map_err(internal)?
                .unwrap_or(false)
        {
            return Ok(Response::new(pb::PullTasksResponse { tasks: Vec::new(), repair_bytes_per_sec }));
        }
        // A new process's first polls hand its node's claims back (the process before
        // cannot be running them) where the cell applies that: every master must (apply
        // version 3), else the poll only claims, and those tasks wait for their claims to
        // run out.
        let after_start = r.first_since_start && {
            self.linearizable().await?;
            crate::apply_version::current(&self.reader).map_err(internal)?
                >= crate::apply_version::CLAIMS_RELEASED_AT_START
        };
        let command = if after_start {
            Command::ClaimTasksAfterStart {
                node_id: r.node_id,
                max: r.max,
                claim_ms: TASK_CLAIM_MS,
                now_unix_ms: now,
                deferred_kinds,
            }
        } else {
            Command::ClaimTasks {
                node_id: r.node_id,
                max: r.max,
                claim_ms: TASK_CLAIM_MS,
                now_unix_ms: now,
                deferred_kinds,
            }
        };
        match self.write_once(once, command).await? {
            command::Response::Tasks { tasks } => Ok(Response::new(pb::PullTasksResponse {
                tasks: tasks.iter().map(task_pb).collect(),
                repair_bytes_per_sec,
            })),
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn report_task(
        &self,
        req: Request<pb::ReportTaskRequest>,
    ) -> Result<Response<pb::ReportTaskResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let once = r.request_id;
        bounded("detail", &r.detail)?;
        // A repair reported done counts in the measured repair rate (read before: a done
        // task leaves the state; a retried report finds it gone and counts nothing).
        let repair_bytes = if r.success { self.repair_bytes_of(r.task_id)? } else { None };
        let command = Command::ReportTask {
            task_id: r.task_id,
            node_id: r.node_id,
            success: r.success,
            detail: r.detail,
        };
        match self.write_once(once, command).await? {
            command::Response::TaskReported { task } => {
                if let (None, Some(bytes)) = (&task, repair_bytes) {
                    self.observed.repair_completed(now_unix_ms(), bytes);
                }
                Ok(Response::new(pb::ReportTaskResponse { task: task.as_ref().map(task_pb) }))
            }
            other => Err(internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        self.check(&req)?;
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        // What each member offered when this master, leading, last asked (see
        // `crate::upgrade::run`; nothing on a follower, or once the cell is raised).
        let builds = self.observed.builds();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let (apply_version_max, build_version, build_error) = match builds.get(id) {
                    Some(MemberBuild::Offers { apply_version_max, build }) => {
                        (Some(*apply_version_max), build.clone(), String::new())
                    }
                    Some(MemberBuild::NoAnswer(e)) => (None, String::new(), e.clone()),
                    None => (None, String::new(), String::new()),
                };
                pb::Member {
                    id: *id,
                    address: node.addr.clone(),
                    voter: voters.contains(id),
                    apply_version_max,
                    build_version,
                    build_error,
                }
            })
            .collect();
        let leader_address = metrics
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| n.addr.clone()))
            .unwrap_or_default();
        let counters = state::counters(&self.reader).map_err(internal)?;
        let volumes = VolumeState::ALL
            .iter()
            .zip(counters.volumes_by_state)
            .map(|(s, count)| pb::VolumeCount { state: crate::wire::volume_state_pb(*s).into(), count })
            .collect();
        let nodes = self.nodes()?;
        let disks = self.disks()?;
        let repair = self.repair_status()?;
        // The lost-block listing scans the whole index: off the async threads, and only
        // when some volume is unreadable.
        let lost = if repair.unreadable.is_empty() {
            crate::repair::LostBlocks::default()
        } else {
            let (reader, unreadable) = (self.reader.clone(), repair.unreadable.clone());
            tokio::task::spawn_blocking(move || crate::repair::lost_blocks(&reader, &unreadable))
                .await
                .map_err(|e| internal(format!("lost-block scan: {e}")))?
                .map_err(internal)?
        };
        let rate = self.observed.repair_rate(now_unix_ms(), repair.bytes_pending);
        let scan = self.observed.scan();
        let drains = self.drains()?;
        Ok(Response::new(pb::StatusResponse {
            node_id: self.id,
            leader_id: metrics.current_leader,
            leader_address,
            term: metrics.current_term,
            members,
            last_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            nodes: nodes.iter().map(node_pb).collect(),
            disks: disks.iter().map(disk_pb).collect(),
            volumes,
            index_entries: counters.index_entries,
            cluster_map_version: counters.cluster_map_version,
            tasks_open: counters.tasks_open,
            tasks_done: counters.tasks_done,
            tasks_failed: counters.tasks_failed,
            redundancy: repair
                .by_can_lose
                .iter()
                .map(|(&can_lose, &volumes)| pb::RedundancyCount { can_lose, volumes })
                .collect(),
            volumes_below_full: repair.below_full,
            repair_tasks_open: repair.tasks_open,
            repair_tasks_failed: repair.tasks_failed,
            repair_tasks_max: self.settings.repair_tasks_max,
            repair_bytes_per_sec: self.settings.repair_bytes_per_sec,
            repair_bytes_pending: repair.bytes_pending,
            extents_draining: repair.extents_draining,
            extents_sharing_a_disk: repair.extents_sharing_a_disk,
            repair_extents_without_a_disk: self.observed.repairs_without_a_disk(),
            drained_nodes: drains.nodes.iter().copied().collect(),
            drained_disks: drains.disks.iter().copied().collect(),
            volumes_unreadable: repair.unreadable.keys().copied().collect(),
            below_full_volumes: repair
                .below_full_volumes
                .iter()
                .map(|b| pb::VolumeBelowFull {
                    volume_id: b.volume_id,
                    state: crate::wire::volume_state_pb(b.state).into(),
                    healthy: b.healthy,
                    full: b.full,
                })
                .collect(),
            open_tasks: repair
                .open_tasks
                .iter()
                .map(|t| pb::Task {
                    next_attempt_unix_ms: crate::tasks::retry_at_unix_ms(t, TASK_CLAIM_MS).unwrap_or(0),
                    ..task_pb(t)
                })
                .collect(),
            failed_tasks: repair.failed_tasks.iter().map(task_pb).collect(),
            apply_version: crate::apply_version::current(&self.reader).map_err(internal)?,
            apply_version_max: self.settings.apply_version_max,
            blocks_lost: lost.count,
            lost_block_hashes: lost.hashes.iter().map(|h| h.to_vec()).collect(),
            repair_rate_bytes_per_sec: rate.bytes_per_sec,
            repair_bytes_done: rate.bytes_done,
            repair_eta_secs: rate.eta_secs,
            repair_episode_secs: rate.episode_secs,
            scrub: self.observed.scrub(),
            down_after_ms: self.settings.down_after_ms,
            metadata_scan: Some(pb::MetadataScanProgress {
                passes: scan.passes,
                index_entries_checked: scan.index_entries_checked,
                extents_checked: scan.extents_checked,
                findings: scan.findings,
                errors: scan.errors,
                last_pass_unix_ms: scan.last_pass_unix_ms,
            }),
            compaction: Some({
                let c = self.observed.compaction();
                pb::CompactionProgress {
                    passes: c.passes,
                    last_pass_unix_ms: c.last_pass_unix_ms,
                    live_bytes: c.live_bytes,
                    garbage_bytes: c.garbage_bytes,
                    volumes_dead: c.volumes_dead,
                    rewrite_candidates: c.rewrite_candidates,
                    rewrite_candidate_garbage_bytes: c.rewrite_candidate_garbage_bytes,
                    volumes_reclaimed: c.volumes_reclaimed,
                    bytes_reclaimed: c.bytes_reclaimed,
                }
            }),
        }))
    }
}

impl MasterService {
    /// Scans volumes and tasks (status is an operator's call, not a hot path).
    fn repair_status(&self) -> Result<RepairStatus, Status> {
        crate::repair::read_status(&self.reader, usize::from(self.settings.replicas)).map_err(internal)
    }

    /// The bytes the repair task `task_id` rebuilds (its volume's extent size), if it is a
    /// queued reconstruct or copy.
    fn repair_bytes_of(&self, task_id: u64) -> Result<Option<u64>, Status> {
        let Some(task) = crate::tasks::task(&self.reader, task_id).map_err(internal)? else {
            return Ok(None);
        };
        if !matches!(
            task.kind,
            crate::types::TaskKind::Reconstruct { .. } | crate::types::TaskKind::Copy { .. }
        ) {
            return Ok(None);
        }
        let volume = state::volume(&self.reader, task.kind.volume_id()).map_err(internal)?;
        Ok(volume.map(|v| crate::repair::extent_bytes(&v)))
    }
}

/// Read access for tests and tools: the state as this master has applied it.
pub fn read_volume(reader: &dyn Kv, volume_id: u64) -> Result<Option<VolumeRecord>, Status> {
    state::volume(reader, volume_id).map_err(internal)
}

/// Nodes grouped by zone (for status output).
pub fn zones(nodes: &[NodeRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for n in nodes {
        out.entry(n.zone.clone()).or_default().push(n.node_id);
    }
    out
}
