//! An in-process master group on ephemeral ports and temporary directories.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cellar_master::client::MasterClient;
use cellar_master::config::MasterConfig;
use cellar_master::node::{self, MasterHandle};
use cellar_proto::master as pb;
use openraft::async_runtime::WatchReceiver;

/// How long tests wait for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Group {
    pub dirs: Vec<tempfile::TempDir>,
    pub peers: BTreeMap<u64, String>,
    pub handles: BTreeMap<u64, MasterHandle>,
    pub tweak: fn(&mut MasterConfig),
}

fn no_tweak(_: &mut MasterConfig) {}

impl Group {
    pub async fn start(n: u64) -> Group {
        Group::start_with(n, no_tweak).await
    }

    /// Starts `n` masters; `tweak` adjusts each one's configuration.
    pub async fn start_with(n: u64, tweak: fn(&mut MasterConfig)) -> Group {
        let mut listeners = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for id in 1..=n {
            let listener = node::bind("127.0.0.1:0").await.expect("bind");
            peers.insert(id, listener.local_addr().expect("addr").to_string());
            listeners.insert(id, listener);
        }
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let mut group = Group { dirs, peers, handles: BTreeMap::new(), tweak };
        for (id, listener) in listeners {
            let handle = node::start(group.config(id, id == 1), listener).await.expect("start master");
            group.handles.insert(id, handle);
        }
        group.wait_for_leader().await;
        group
    }

    pub fn config(&self, id: u64, init: bool) -> MasterConfig {
        let dir: PathBuf = self.dirs[(id - 1) as usize].path().to_path_buf();
        let mut config = MasterConfig::new(id, self.peers[&id].clone(), dir, self.peers.clone());
        config.init = init;
        config.heartbeat_ms = 50;
        config.election_timeout_ms = 300;
        config.volume_size_bytes = 64 << 20;
        config.lease_ms = 60_000;
        (self.tweak)(&mut config);
        config
    }

    pub fn addrs(&self) -> Vec<String> {
        self.peers.values().cloned().collect()
    }

    pub fn client(&self) -> MasterClient {
        MasterClient::new(&self.addrs(), None).expect("client")
    }

    /// Waits until the running members agree on a leader; returns its id.
    pub async fn wait_for_leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let leaders: Vec<Option<u64>> =
                self.handles.values().map(|h| h.raft.metrics().borrow_watched().current_leader).collect();
            if let Some(Some(leader)) = leaders.first()
                && leaders.iter().all(|l| *l == Some(*leader))
                && self.handles.contains_key(leader)
            {
                return *leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "no agreed leader within {WAIT:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts every running member down (closing their stores before the test exits).
    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.handles.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub async fn stop(&mut self, id: u64) {
        if let Some(h) = self.handles.remove(&id) {
            h.shutdown().await;
        }
    }

    /// Restarts a stopped member from its data directory on its old address.
    pub async fn restart(&mut self, id: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match node::bind(&self.peers[&id]).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "rebind {}: {e}", self.peers[&id]);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let handle = node::start(self.config(id, id == 1), listener).await.expect("restart master");
        self.handles.insert(id, handle);
    }

    /// Waits until member `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let h = &self.handles[&id];
        loop {
            let applied = h.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index);
            if applied >= index {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "member {id} stuck at {applied} < {index}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn applied(&self, id: u64) -> u64 {
        self.handles[&id].raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
    }
}

/// Registers 3 zones x 2 nodes x 2 disks; returns the node ids.
pub async fn register_nodes(client: &MasterClient) -> Vec<u64> {
    let mut ids = Vec::new();
    for zone in ["z1", "z2", "z3"] {
        for n in 0..2 {
            let disks = (0..2)
                .map(|d| pb::DiskRegistration {
                    uuid: format!("{zone}-{n}-{d}"),
                    path: format!("/disks/{d}"),
                    capacity_bytes: 100 << 30,
                    used_bytes: 0,
                    free_bytes: 100 << 30,
                })
                .collect::<Vec<_>>();
            let req = pb::RegisterNodeRequest {
                node_id: None,
                address: format!("10.0.{n}.1:9000"),
                zone: zone.into(),
                disks,
                request_id: None,
            };
            let resp = client
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.register_node(req).await }
                })
                .await
                .expect("register");
            ids.push(resp.node_id);
        }
    }
    ids
}

pub async fn allocate(client: &MasterClient) -> pb::Volume {
    client
        .call(|mut c| async move {
            c.allocate_volume(pb::AllocateVolumeRequest {
                holder: "test".into(),
                copies: 0,
                avoid_nodes: Vec::new(),
                request_id: None,
            })
            .await
        })
        .await
        .expect("allocate volume")
}

pub fn hash(i: u64) -> Vec<u8> {
    let mut h = vec![0u8; 32];
    h[..8].copy_from_slice(&i.to_le_bytes());
    h[31] = 0xAB;
    h
}

/// Commits block 1 at offset 0 of `volume` (an empty volume has nothing to code) and seals
/// it: its first replica's node gets an encode task.
pub async fn seal_with_one_entry(client: &MasterClient, volume: &pb::Volume) {
    let entry = commit(volume, 1, 0);
    client
        .call(|mut c| {
            let entries = vec![entry.clone()];
            async move {
                c.commit_index(pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() })
                    .await
            }
        })
        .await
        .expect("commit");
    let seal = pb::SealVolumeRequest { volume_id: volume.volume_id, length_bytes: None, request_id: None };
    client.call(|mut c| async move { c.seal_volume(seal).await }).await.expect("seal");
}

pub fn commit(volume: &pb::Volume, i: u64, offset: u64) -> pb::IndexCommit {
    pb::IndexCommit {
        hash: hash(i),
        volume_id: volume.volume_id,
        lease_epoch: volume.lease_epoch,
        offset_bytes: offset,
        // A record of 100 bytes: the 64-byte record header and 36 bytes of payload.
        payload_bytes: 36,
        crc32: i as u32,
        digest: hash(i)[..16].to_vec(),
        unreferenced: false,
        relocate_from_volume: 0,
    }
}

impl Group {
    /// Waits until every running member's state is at apply version `version`.
    pub async fn wait_apply_version(&self, version: u32) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let versions: Vec<u32> = self
                .handles
                .values()
                .map(|h| cellar_master::apply_version::current(&h.reader).expect("apply version"))
                .collect();
            if versions.iter().all(|v| *v == version) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "apply versions {versions:?}, not all {version}, within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
