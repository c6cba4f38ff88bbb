//! Encode benchmark: a real cell of processes on this machine (one `cellar master`, six
//! `cellar volume` servers over three zones with two disks each). One volume is filled
//! with 4 MiB blocks through its three replicas, sealed, and coded rs-6-3 by the volume
//! server holding its first replica. Reports the append and encode rates and every volume
//! server's peak resident memory, the encoder's measured from the seal on (its peak is
//! reset through /proc/PID/clear_refs before the seal).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cellar_master_api::client::MasterClient;
use cellar_proto::master as pb;
use cellar_proto::volume as vpb;
use cellar_volume_api::cluster::Cluster;
use cellar_volume_api::digest::{BlockKey, read_digest};
use cellar_volume_api::reader::BlockReader;
use sha2::{Digest, Sha256};

use crate::process::{free_port, peak_rss_kib};
use crate::report::Row;

/// What to run.
#[derive(Debug, Clone)]
pub struct EncodeBenchConfig {
    /// The `cellar` binary.
    pub cellar: PathBuf,
    /// Fresh directory for the cell's data.
    pub dir: PathBuf,
    /// Bytes of blocks to write into the volume.
    pub volume_bytes: u64,
}

/// The figures.
pub struct EncodeBenchResult {
    /// Throughput rows.
    pub rows: Vec<Row>,
    /// (node id, zone, peak RSS KiB, whether it ran the encode).
    pub peak_rss_kib: Vec<(u64, String, u64, bool)>,
}

const BLOCK_BYTES: usize = 4 << 20;
const WAIT: Duration = Duration::from_secs(600);

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SIGTERM first, so that RocksDB closes cleanly; then make sure.
            // SAFETY: sending a signal to a child process we own.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.0 {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(cellar: &Path, args: &[String], log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    Command::new(cellar)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", cellar.display()))
}

fn block(i: u64) -> Vec<u8> {
    let mut state = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; BLOCK_BYTES];
    for chunk in out.chunks_exact_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    out
}

/// Runs the benchmark.
pub async fn run(config: &EncodeBenchConfig) -> Result<EncodeBenchResult> {
    std::fs::create_dir_all(&config.dir)?;
    if std::fs::read_dir(&config.dir)?.next().is_some() {
        bail!("{} is not empty", config.dir.display());
    }
    let dir = &config.dir;
    let master_addr = format!("127.0.0.1:{}", free_port()?);
    let master_config = dir.join("master.toml");
    std::fs::write(&master_config, format!("volume_size_bytes = {}\n", config.volume_bytes + (64 << 20)))?;
    let mut procs = Processes(Vec::new());
    procs.0.push(spawn(
        &config.cellar,
        &[
            "master".into(),
            "--id".into(),
            "1".into(),
            "--listen".into(),
            master_addr.clone(),
            "--peers".into(),
            format!("1={master_addr}"),
            "--data-dir".into(),
            dir.join("master").display().to_string(),
            "--config".into(),
            master_config.display().to_string(),
            "--init".into(),
        ],
        &dir.join("master.log"),
    )?);
    let mut servers: BTreeMap<String, (u32, String)> = BTreeMap::new();
    for zone in ["z1", "z2", "z3"] {
        for n in 0..2 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let name = format!("{zone}-{n}");
            let mut args = vec![
                "volume".to_string(),
                "--listen".into(),
                addr.clone(),
                "--zone".into(),
                zone.into(),
                "--master".into(),
                master_addr.clone(),
                "--task-poll-ms".into(),
                "100".into(),
            ];
            for d in 0..2 {
                args.push("--disk".into());
                args.push(dir.join(format!("{name}-disk{d}")).display().to_string());
            }
            let child = spawn(&config.cellar, &args, &dir.join(format!("{name}.log")))?;
            servers.insert(addr, (child.id(), zone.to_string()));
            procs.0.push(child);
        }
    }
    let client =
        MasterClient::new(std::slice::from_ref(&master_addr), None)?.with_deadline(Duration::from_secs(60));
    let deadline = Instant::now() + WAIT;
    loop {
        let status = client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await?;
        if status.nodes.len() == servers.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {} of {} volume servers registered", status.nodes.len(), servers.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cluster = Cluster::new(MasterClient::new(std::slice::from_ref(&master_addr), None)?, None);
    let v = client
        .call(|mut c| async move {
            c.allocate_volume(pb::AllocateVolumeRequest {
                holder: "bench".into(),
                copies: 0,
                avoid_nodes: Vec::new(),
                request_id: None,
            })
            .await
        })
        .await?;

    // Fill: 4 MiB blocks appended to the three replicas in parallel, one after the other.
    let blocks = config.volume_bytes.div_ceil(BLOCK_BYTES as u64);
    let mut offset = 0u64;
    let mut written = Vec::new();
    let started = Instant::now();
    for i in 0..blocks {
        let payload = block(i);
        let sha256: [u8; 32] = Sha256::digest(&payload).into();
        let appends = v.replicas.iter().map(|r| {
            let (cluster, payload) = (cluster.clone(), payload.clone());
            let req = vpb::AppendRequest {
                volume_id: v.volume_id,
                disk_id: r.disk_id,
                lease_epoch: v.lease_epoch,
                generation: v.generation,
                offset_bytes: offset,
                records: vec![vpb::BlockRecord {
                    sha256: sha256.to_vec(),
                    payload: payload.into(),
                    payload_crc32: None,
                }],
            };
            async move {
                let mut c = cluster.node_client(r.node_id).await?;
                Ok::<_, tonic::Status>(c.append(req).await?.into_inner())
            }
        });
        let mut len = 0;
        for r in futures::future::join_all(appends).await {
            len = r?.appended_bytes;
        }
        let key = BlockKey { sha256, digest: Some(read_digest(&sha256, &payload)) };
        written.push((key, offset, len as u32, crc32fast::hash(&payload)));
        offset += len;
    }
    let append_secs = started.elapsed().as_secs_f64();
    for batch in written.chunks(1000) {
        let entries: Vec<pb::IndexCommit> = batch
            .iter()
            .map(|(key, o, l, crc)| pb::IndexCommit {
                hash: key.sha256.to_vec(),
                volume_id: v.volume_id,
                lease_epoch: v.lease_epoch,
                offset_bytes: *o,
                payload_bytes: *l - cellar_format::RECORD_HEADER_BYTES as u32,
                crc32: *crc,
                digest: key.digest.map_or_else(Vec::new, |d| d.to_vec()),
                unreferenced: false,
                relocate_from_volume: 0,
            })
            .collect();
        client
            .call(|mut c| {
                let entries = entries.clone();
                async move {
                    c.commit_index(pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() })
                        .await
                }
            })
            .await?;
    }

    // Encode: reset the encoder's peak RSS, seal, wait for the volume to be coded.
    let encoder_node = v.replicas[0].node_id;
    let map = client
        .call(|mut c| async move { c.get_cluster_map(pb::GetClusterMapRequest { known_version: 0 }).await })
        .await?;
    let node_addr: BTreeMap<u64, String> = map.nodes.iter().map(|n| (n.node_id, n.address.clone())).collect();
    let encoder_pid = node_addr
        .get(&encoder_node)
        .and_then(|a| servers.get(a))
        .map(|(pid, _)| *pid)
        .context("encoder process")?;
    std::fs::write(format!("/proc/{encoder_pid}/clear_refs"), "5").context("reset the encoder's peak RSS")?;
    let started = Instant::now();
    let volume_id = v.volume_id;
    client
        .call(|mut c| async move {
            c.seal_volume(pb::SealVolumeRequest { volume_id, length_bytes: None, request_id: None }).await
        })
        .await?;
    let coded = loop {
        let vs = client
            .call(|mut c| async move {
                c.get_volumes(pb::GetVolumesRequest { volume_ids: vec![volume_id] }).await
            })
            .await?;
        if let Some(v) =
            vs.volumes.into_iter().find(|v| v.state() == cellar_proto::common::VolumeState::Coded)
        {
            break v;
        }
        if Instant::now() > deadline {
            bail!("the volume was not coded in time (see {}/*.log)", dir.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let encode_secs = started.elapsed().as_secs_f64();
    let encoder_peak = peak_rss_kib(encoder_pid).unwrap_or(0);

    // Read every block back from the data fragments.
    let reader = BlockReader::new(cluster.clone(), 4 << 20);
    let started = Instant::now();
    for (key, offset, len, _) in &written {
        let got = reader.read(&coded, key, *offset, *len).await?;
        if got.degraded {
            bail!("a read of a healthy coded volume went degraded");
        }
    }
    let read_secs = started.elapsed().as_secs_f64();

    let mut peaks = Vec::new();
    for (addr, (pid, zone)) in &servers {
        let node = node_addr.iter().find(|(_, a)| *a == addr).map_or(0, |(id, _)| *id);
        let is_encoder = *pid == encoder_pid;
        let kib = if is_encoder { encoder_peak } else { peak_rss_kib(*pid).unwrap_or(0) };
        peaks.push((node, zone.clone(), kib, is_encoder));
    }
    let row = |name: String, secs: f64| Row {
        name,
        ops: written.len() as u64,
        bytes: offset,
        elapsed: Duration::from_secs_f64(secs),
        baseline: None,
    };
    let rows = vec![
        row(format!("append {} MiB x3 replicas (4 MiB blocks)", offset >> 20), append_secs),
        row(format!("encode {} MiB rs-6-3, seal to coded", offset >> 20), encode_secs),
        row("read every block from data fragments".to_string(), read_secs),
    ];
    drop(procs);
    Ok(EncodeBenchResult { rows, peak_rss_kib: peaks })
}
