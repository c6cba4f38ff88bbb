//! `cellar sim`: the durability simulator. With `--from-cluster ADDRS` it first reads the
//! live cell's disks and the placement of every volume from the master.

use std::time::Duration;

use anyhow::{Context, Result};
use cellar_master_api::client::MasterClient;
use cellar_placement::{DiskView, Scheme};
use cellar_proto::common::VolumeState;
use cellar_proto::master as pb;
use cellar_sim::cli::SimArgs;
use cellar_sim::{ClusterInput, VolumeInput};

/// Volume ids asked for per GetVolumes call.
const VOLUMES_PER_CALL: u64 = 10_000;

pub fn run(args: SimArgs) -> Result<()> {
    let from_cluster = match &args.from_cluster {
        Some(addrs) => Some(fetch(addrs)?),
        None => None,
    };
    cellar_sim::cli::run(args, from_cluster)
}

/// The live cell: every disk (node, zone, capacity, fill) and every volume's extents.
fn fetch(addrs: &str) -> Result<ClusterInput> {
    let addrs: Vec<String> =
        addrs.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(async move {
        let client = MasterClient::new(&addrs, std::env::var("CELLAR_SECRET").ok().as_deref())?
            .with_deadline(Duration::from_secs(30));
        let map = client
            .call(
                |mut c| async move { c.get_cluster_map(pb::GetClusterMapRequest { known_version: 0 }).await },
            )
            .await?;
        let zone_of: std::collections::BTreeMap<u64, (String, bool)> =
            map.nodes.iter().map(|n| (n.node_id, (n.zone.clone(), n.state() == pb::NodeState::Up))).collect();
        let disks: Vec<DiskView> = map
            .disks
            .iter()
            .filter_map(|d| {
                let (zone, up) = zone_of.get(&d.node_id)?;
                Some(DiskView {
                    disk_id: d.disk_id,
                    node_id: d.node_id,
                    zone: zone.clone(),
                    capacity_bytes: d.capacity_bytes,
                    used_bytes: d.capacity_bytes.saturating_sub(d.free_bytes),
                    writable: *up && d.health() == pb::DiskHealth::Ok,
                })
            })
            .collect();
        // Volume ids are dense from 1: read them in batches until one comes back empty.
        let mut volumes = Vec::new();
        let mut first = 1u64;
        loop {
            let ids: Vec<u64> = (first..first + VOLUMES_PER_CALL).collect();
            let got = client
                .call(|mut c| {
                    let volume_ids = ids.clone();
                    async move { c.get_volumes(pb::GetVolumesRequest { volume_ids }).await }
                })
                .await?;
            if got.volumes.is_empty() {
                break;
            }
            for v in got.volumes {
                let (scheme, extents) = if v.state() == VolumeState::Coded {
                    (
                        Scheme::from(
                            cellar_proto::scheme_of(v.scheme.as_ref())
                                .map_err(|e| anyhow::anyhow!("volume {}: {e}", v.volume_id))?,
                        ),
                        &v.fragments,
                    )
                } else {
                    (Scheme::Replicated { copies: v.replicas.len() as u8 }, &v.replicas)
                };
                if extents.is_empty() {
                    continue;
                }
                volumes.push(VolumeInput {
                    scheme,
                    bytes: v.size_bytes,
                    disk_ids: extents.iter().map(|e| e.disk_id).collect(),
                });
            }
            first += VOLUMES_PER_CALL;
        }
        eprintln!("cellar sim: {} disks and {} volumes read from the cell", disks.len(), volumes.len());
        // The repair rate the cell measured (its leader's last or current repair).
        let secret = std::env::var("CELLAR_SECRET").ok();
        let status = crate::admin_cmd::leader_status(&addrs, secret.as_deref()).await?;
        let measured = (status.repair_rate_bytes_per_sec > 0).then_some(status.repair_rate_bytes_per_sec as f64);
        match measured {
            Some(rate) => eprintln!(
                "cellar sim: the cell's measured repair rate: {:.1} MB/s ({} MiB rebuilt in {} s)",
                rate / 1e6,
                status.repair_bytes_done >> 20,
                status.repair_episode_secs
            ),
            None => eprintln!(
                "cellar sim: the cell has not measured a repair yet; the rate comes from the configured bandwidths"
            ),
        }
        Ok(ClusterInput { disks, volumes, measured_repair_bytes_per_sec: measured })
    })
}
