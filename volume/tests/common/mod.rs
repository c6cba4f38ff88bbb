//! An in-process cell: one master and volume servers over three zones, on ephemeral
//! ports and temporary directories.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cellar_master::config::MasterConfig;
use cellar_master::node::{self as master_node, MasterHandle};
use cellar_master_api::client::MasterClient;
use cellar_proto::master as mpb;
use cellar_proto::volume as vpb;
use cellar_volume::cluster::Cluster;
use cellar_volume::digest::{BlockKey, read_digest};
use cellar_volume::reader::BlockReader;
use cellar_volume::{VolumeConfig, VolumeHandle};
use sha2::{Digest, Sha256};

/// How long tests wait for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(60);

pub struct Cell {
    pub dirs: Vec<tempfile::TempDir>,
    pub master: Option<MasterHandle>,
    pub master_addr: String,
    pub volumes: Vec<VolumeHandle>,
    pub configs: Vec<VolumeConfig>,
    pub zones: Vec<String>,
    pub client: MasterClient,
    pub cluster: Arc<Cluster>,
}

/// A block written to a volume: its key, bytes and place.
#[derive(Clone, Debug)]
pub struct Written {
    pub sha256: [u8; 32],
    pub payload: Vec<u8>,
    pub offset_bytes: u64,
    pub length_bytes: u32,
}

impl Written {
    /// The key a get asks for: with the read digest a put commits.
    pub fn key(&self) -> BlockKey {
        BlockKey { sha256: self.sha256, digest: Some(read_digest(&self.sha256, &self.payload)) }
    }
}

impl Cell {
    /// One master and `zones` x `per_zone` volume servers with `disks` disks each.
    pub async fn start(zones: usize, per_zone: usize, disks: usize, tweak: fn(&mut VolumeConfig)) -> Cell {
        Cell::start_with(zones, per_zone, disks, tweak, |_| {}).await
    }

    /// [`Cell::start`] with the master's settings tweaked too.
    pub async fn start_with(
        zones: usize,
        per_zone: usize,
        disks: usize,
        tweak: fn(&mut VolumeConfig),
        master_tweak: fn(&mut MasterConfig),
    ) -> Cell {
        let master_dir = tempfile::tempdir().expect("tempdir");
        let listener = master_node::bind("127.0.0.1:0").await.expect("bind");
        let master_addr = listener.local_addr().expect("addr").to_string();
        let mut peers = BTreeMap::new();
        peers.insert(1, master_addr.clone());
        let mut config = MasterConfig::new(1, master_addr.clone(), master_dir.path().to_path_buf(), peers);
        config.init = true;
        config.heartbeat_ms = 50;
        config.election_timeout_ms = 300;
        config.volume_size_bytes = 64 << 20;
        config.lease_ms = 1_000;
        master_tweak(&mut config);
        let master = master_node::start(config, listener).await.expect("start master");
        master_node::wait_for_leader(&master.raft, WAIT).await.expect("leader");
        let mut dirs = vec![master_dir];
        let mut volumes = Vec::new();
        let mut configs = Vec::new();
        let mut zone_names = Vec::new();
        for z in 0..zones {
            let zone = format!("zone-{}", z + 1);
            for _ in 0..per_zone {
                let mut paths = Vec::new();
                for _ in 0..disks {
                    let d = tempfile::tempdir().expect("tempdir");
                    paths.push(d.path().to_path_buf());
                    dirs.push(d);
                }
                let mut vc = VolumeConfig::new("127.0.0.1:0", zone.clone(), paths, vec![master_addr.clone()]);
                vc.task_poll = Duration::from_millis(100);
                vc.heartbeat = Duration::from_millis(200);
                tweak(&mut vc);
                volumes.push(cellar_volume::start(vc.clone()).await.expect("start volume server"));
                configs.push(vc);
                zone_names.push(zone.clone());
            }
        }
        let client = MasterClient::new(std::slice::from_ref(&master_addr), None).expect("client");
        let cluster =
            Cluster::new(MasterClient::new(std::slice::from_ref(&master_addr), None).expect("client"), None);
        Cell { dirs, master: Some(master), master_addr, volumes, configs, zones: zone_names, client, cluster }
    }

    /// Stops volume server `node_id` and starts it again on the same disks and address.
    pub async fn restart(&mut self, node_id: u64) {
        self.restart_with(node_id, |_| {}).await;
    }

    /// [`Cell::restart`], calling `between` with the server's configuration while it is
    /// stopped (its disks may still be closing: `between` waits for what it needs).
    pub async fn restart_with(&mut self, node_id: u64, between: impl FnOnce(&VolumeConfig)) {
        let i = self.volumes.iter().position(|v| v.node_id == node_id).expect("node");
        let old = self.volumes.remove(i);
        let mut config = self.configs[i].clone();
        config.listen = old.addr.to_string();
        old.shutdown().await;
        between(&config);
        let deadline = tokio::time::Instant::now() + WAIT;
        let handle = loop {
            // The disks close once the last request that used them is gone.
            match cellar_volume::start(config.clone()).await {
                Ok(h) => break h,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart not yet possible");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart node {node_id}: {e}"),
            }
        };
        assert_eq!(handle.node_id, node_id, "a restart is the same node");
        self.volumes.insert(i, handle);
    }

    /// Starts one more volume server in `zone` with `disks` disks (like those of `start`).
    pub async fn add_server(&mut self, zone: &str, disks: usize, tweak: fn(&mut VolumeConfig)) -> u64 {
        let mut paths = Vec::new();
        for _ in 0..disks {
            let d = tempfile::tempdir().expect("tempdir");
            paths.push(d.path().to_path_buf());
            self.dirs.push(d);
        }
        let mut vc =
            VolumeConfig::new("127.0.0.1:0", zone.to_string(), paths, vec![self.master_addr.clone()]);
        vc.task_poll = Duration::from_millis(100);
        vc.heartbeat = Duration::from_millis(200);
        tweak(&mut vc);
        let handle = cellar_volume::start(vc.clone()).await.expect("start volume server");
        let node_id = handle.node_id;
        self.volumes.push(handle);
        self.configs.push(vc);
        self.zones.push(zone.to_string());
        node_id
    }

    /// Stops volume server `node_id` for good (its disks stay, nobody serves them).
    pub async fn stop(&mut self, node_id: u64) {
        let i = self.volumes.iter().position(|v| v.node_id == node_id).expect("node");
        let old = self.volumes.remove(i);
        self.configs.remove(i);
        self.zones.remove(i);
        old.shutdown().await;
    }

    /// The master's status.
    pub async fn status(&self) -> mpb::StatusResponse {
        self.client.call(|mut c| async move { c.status(mpb::StatusRequest {}).await }).await.expect("status")
    }

    pub fn reader(&self) -> BlockReader {
        BlockReader::new(self.cluster.clone(), 4 << 20)
    }

    pub fn handle(&self, node_id: u64) -> &VolumeHandle {
        self.volumes.iter().find(|v| v.node_id == node_id).expect("node")
    }

    pub fn zone_of(&self, node_id: u64) -> &str {
        let i = self.volumes.iter().position(|v| v.node_id == node_id).expect("node");
        &self.zones[i]
    }

    pub async fn allocate(&self, holder: &str) -> mpb::Volume {
        let holder = holder.to_string();
        self.client
            .call(|mut c| {
                let holder = holder.clone();
                async move {
                    c.allocate_volume(mpb::AllocateVolumeRequest {
                        holder,
                        copies: 0,
                        avoid_nodes: Vec::new(),
                        request_id: None,
                    })
                    .await
                }
            })
            .await
            .expect("allocate")
    }

    pub async fn volume(&self, volume_id: u64) -> mpb::Volume {
        self.cluster.volume(volume_id).await.expect("volume")
    }

    /// Appends `payload` to every replica of `v` at `offset`, as a lease holder does.
    pub async fn append_all(
        &self,
        v: &mpb::Volume,
        offset: u64,
        payload: &[u8],
    ) -> Result<Written, tonic::Status> {
        self.append_as(v, offset, Sha256::digest(payload).into(), payload).await
    }

    /// [`Cell::append_all`] with the key the record's header names given: a record whose
    /// bytes are not its key's when they differ (the servers do not hash payloads).
    pub async fn append_as(
        &self,
        v: &mpb::Volume,
        offset: u64,
        sha256: [u8; 32],
        payload: &[u8],
    ) -> Result<Written, tonic::Status> {
        self.append_with_crc(v, offset, sha256, payload, None).await
    }

    /// [`Cell::append_as`] sending `payload_crc32` with the record.
    pub async fn append_with_crc(
        &self,
        v: &mpb::Volume,
        offset: u64,
        sha256: [u8; 32],
        payload: &[u8],
        payload_crc32: Option<u32>,
    ) -> Result<Written, tonic::Status> {
        let mut record_len = 0;
        let appends = v.replicas.iter().map(|r| {
            let payload = payload.to_vec();
            async move {
                let mut c = self.cluster.node_client(r.node_id).await?;
                let req = vpb::AppendRequest {
                    volume_id: v.volume_id,
                    disk_id: r.disk_id,
                    lease_epoch: v.lease_epoch,
                    generation: v.generation,
                    offset_bytes: offset,
                    records: vec![vpb::BlockRecord {
                        sha256: sha256.to_vec(),
                        payload: payload.into(),
                        payload_crc32,
                    }],
                };
                Ok::<_, tonic::Status>(c.append(req).await?.into_inner())
            }
        });
        for r in futures::future::join_all(appends).await {
            let r = r?;
            assert_eq!(r.offset_bytes, offset);
            record_len = r.appended_bytes;
        }
        Ok(Written {
            sha256,
            payload: payload.to_vec(),
            offset_bytes: offset,
            length_bytes: record_len as u32,
        })
    }

    /// Commits index entries for blocks of `v`.
    pub async fn commit(&self, v: &mpb::Volume, blocks: &[Written]) {
        let entries: Vec<mpb::IndexCommit> = blocks
            .iter()
            .map(|b| mpb::IndexCommit {
                hash: b.sha256.to_vec(),
                volume_id: v.volume_id,
                lease_epoch: v.lease_epoch,
                offset_bytes: b.offset_bytes,
                payload_bytes: b.payload.len() as u32,
                crc32: crc32fast::hash(&b.payload),
                digest: read_digest(&b.sha256, &b.payload).to_vec(),
                unreferenced: false,
                relocate_from_volume: 0,
            })
            .collect();
        let resp = self
            .client
            .call(|mut c| {
                let entries = entries.clone();
                async move {
                    c.commit_index(mpb::CommitIndexRequest {
                        entries,
                        request_id: None,
                        versions: Vec::new(),
                    })
                    .await
                }
            })
            .await
            .expect("commit");
        for r in resp.results {
            assert!(
                matches!(r.outcome(), mpb::CommitOutcome::Committed | mpb::CommitOutcome::Deduplicated),
                "{} {} {}",
                r.outcome().name(),
                r.error_code,
                r.detail
            );
        }
    }

    /// Writes `sizes.len()` random blocks to a new volume and commits them.
    pub async fn fill_volume(&self, sizes: &[usize], seed: u64) -> (mpb::Volume, Vec<Written>) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let v = self.allocate("test").await;
        let mut offset = 0u64;
        let mut blocks = Vec::new();
        for &size in sizes {
            let mut payload = vec![0u8; size];
            rng.fill(&mut payload[..]);
            let w = self.append_all(&v, offset, &payload).await.expect("append");
            offset += u64::from(w.length_bytes);
            blocks.push(w);
        }
        self.commit(&v, &blocks).await;
        (v, blocks)
    }

    pub async fn seal(&self, volume_id: u64) -> mpb::Volume {
        self.client
            .call(|mut c| async move {
                c.seal_volume(mpb::SealVolumeRequest { volume_id, length_bytes: None, request_id: None })
                    .await
            })
            .await
            .expect("seal")
    }

    /// Waits until `check` holds for the volume record.
    pub async fn wait_volume(
        &self,
        volume_id: u64,
        what: &str,
        check: impl Fn(&mpb::Volume) -> bool,
    ) -> mpb::Volume {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.volume(volume_id).await;
            if check(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for volume {volume_id}: {what}; now {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the master's task queue is empty (every task done).
    pub async fn wait_tasks_done(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self
                .client
                .call(|mut c| async move { c.status(mpb::StatusRequest {}).await })
                .await
                .expect("status");
            if s.tasks_open == 0 {
                assert_eq!(s.tasks_failed, 0, "some tasks failed");
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "tasks still open: {}", s.tasks_open);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the extent exists on the disk of the node.
    pub async fn extent_exists(&self, place: &mpb::Extent, volume_id: u64, part: &str, index: u32) -> bool {
        let mut c = self.cluster.node_client(place.node_id).await.expect("client");
        c.stat_extent(vpb::ExtentRef {
            volume_id,
            disk_id: place.disk_id,
            part: cellar_proto::common::ExtentPart::from_name(part).expect("replica or fragment").into(),
            fragment_index: index,
        })
        .await
        .expect("stat")
        .into_inner()
        .exists
    }

    pub async fn shutdown(mut self) {
        for v in self.volumes.drain(..) {
            v.shutdown().await;
        }
        if let Some(m) = self.master.take() {
            m.shutdown().await;
        }
    }
}

/// Block sizes of a test volume: the edge sizes and a spread of small and large ones.
pub fn mixed_sizes(count: usize) -> Vec<usize> {
    let pattern = [0usize, 1, 4096, 65_536, 100_000, 1 << 20, 7, 4095, 300_000, 12_345];
    (0..count).map(|i| pattern[i % pattern.len()]).collect()
}
