//! Master benchmark: a 3-member group of real `cellar master` processes on this machine;
//! index commits per second (clients batch entries, the leader batches calls into Raft
//! entries), then linearizable lookups per second, then each master's peak resident memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cellar_master_api::client::MasterClient;
use cellar_proto::master as pb;

use crate::process::{free_port, peak_rss_kib};
use crate::report::Row;

/// What to run.
#[derive(Debug, Clone)]
pub struct MasterBenchConfig {
    /// The `cellar` binary to start masters with.
    pub cellar: PathBuf,
    /// Directory for the masters' data (fresh).
    pub dir: PathBuf,
    /// Index entries to commit in all.
    pub entries: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Entries per CommitIndex call.
    pub batch: u64,
    /// Hashes per Lookup call.
    pub lookup_batch: u64,
    /// Lookups in all.
    pub lookups: u64,
}

/// Results: rows plus each master's peak RSS in KiB.
pub struct MasterBenchResult {
    /// Throughput rows.
    pub rows: Vec<Row>,
    /// (master id, VmHWM KiB).
    pub peak_rss_kib: Vec<(u64, u64)>,
    /// The leader during the commit phase.
    pub leader_id: u64,
    /// Bytes sent to each follower per committed index entry during the commit phase:
    /// the loopback interface's bytes over the phase, less the bytes of the bench's own
    /// calls (requests and answers, as encoded), halved (two followers). Everything
    /// between the masters is loopback traffic here, so this counts the AppendEntries
    /// payloads with their gRPC, HTTP/2 and TCP/IP framing, the followers' answers and
    /// the heartbeats: an upper bound of the replicated bytes, comparable between builds.
    pub replicated_bytes_per_entry: f64,
}

/// Bytes received on the loopback interface so far (/proc/net/dev).
fn loopback_bytes() -> Option<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").ok()?;
    dev.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The leader's id, as a master reports it.
async fn leader_id(client: &MasterClient) -> Result<u64> {
    let status = client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await?;
    status.leader_id.context("no leader")
}

struct Masters {
    children: Vec<(u64, Child)>,
}

impl Drop for Masters {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How often a writing client renews its lease (the default lease is 30 s).
const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);

fn hash(i: u64) -> Vec<u8> {
    let mut h = vec![0x5Au8; 32];
    h[..8].copy_from_slice(&i.to_le_bytes());
    h
}

fn start_masters(cellar: &Path, dir: &Path) -> Result<(Masters, Vec<String>)> {
    let ports = [free_port()?, free_port()?, free_port()?];
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let mut masters = Masters { children: Vec::new() };
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let data = dir.join(format!("master{id}"));
        let log = std::fs::File::create(dir.join(format!("master{id}.log")))?;
        let mut cmd = Command::new(cellar);
        cmd.args(["master", "--id", &id.to_string(), "--listen", addr, "--peers", &peers, "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        if id == 1 {
            cmd.arg("--init");
        }
        masters.children.push((id, cmd.spawn().with_context(|| format!("start {}", cellar.display()))?));
    }
    Ok((masters, addrs))
}

/// Runs the benchmark.
pub async fn run(config: &MasterBenchConfig) -> Result<MasterBenchResult> {
    std::fs::create_dir_all(&config.dir)?;
    if std::fs::read_dir(&config.dir)?.next().is_some() {
        bail!("{} is not empty", config.dir.display());
    }
    let (masters, addrs) = start_masters(&config.cellar, &config.dir)?;
    // Over the transport frontends call masters with.
    let client = Arc::new(
        MasterClient::builder(&addrs)
            .connector(Some(cellar_volume_api::transport::master_connector()))
            .build()?
            .with_deadline(Duration::from_secs(30)),
    );
    // A cell to commit against: 3 zones x 2 nodes x 2 disks, one volume per client.
    for zone in ["z1", "z2", "z3"] {
        for n in 0..2 {
            let disks = (0..2)
                .map(|d| pb::DiskRegistration {
                    uuid: format!("{zone}{n}{d}"),
                    path: format!("/d{d}"),
                    capacity_bytes: 1 << 44,
                    used_bytes: 0,
                    free_bytes: 1 << 44,
                })
                .collect::<Vec<_>>();
            let req = pb::RegisterNodeRequest {
                node_id: None,
                address: format!("{zone}-{n}:1"),
                zone: zone.into(),
                disks,
                request_id: None,
            };
            client
                .call(|mut c| {
                    let r = req.clone();
                    async move { c.register_node(r).await }
                })
                .await?;
        }
    }
    let mut volumes = Vec::new();
    for _ in 0..config.clients {
        volumes.push(
            client
                .call(|mut c| async move {
                    c.allocate_volume(pb::AllocateVolumeRequest {
                        holder: "bench".into(),
                        copies: 0,
                        avoid_nodes: Vec::new(),
                        request_id: None,
                    })
                    .await
                })
                .await?,
        );
    }

    let leader_before = leader_id(&client).await?;
    let loopback_before = loopback_bytes().context("read /proc/net/dev")?;
    // Bytes of the bench's own commit calls (requests and answers, as encoded).
    let call_bytes = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for volume in volumes {
        let (client, next, batch, total, call_bytes) =
            (client.clone(), next.clone(), config.batch, config.entries, call_bytes.clone());
        tasks.push(tokio::spawn(async move {
            // The lease must be renewed while writing, as a frontend does.
            let mut renewed = Instant::now();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return Ok::<u64, anyhow::Error>(0);
                }
                if renewed.elapsed() > LEASE_RENEW_EVERY {
                    let req = pb::RenewLeaseRequest {
                        volume_id: volume.volume_id,
                        lease_epoch: volume.lease_epoch,
                        holder: "bench".into(),
                        request_id: None,
                    };
                    client
                        .call(|mut c| {
                            let r = req.clone();
                            async move { c.renew_lease(r).await }
                        })
                        .await?;
                    renewed = Instant::now();
                }
                let last = (first + batch).min(total);
                let entries: Vec<pb::IndexCommit> = (first..last)
                    .map(|i| pb::IndexCommit {
                        hash: hash(i),
                        volume_id: volume.volume_id,
                        lease_epoch: volume.lease_epoch,
                        offset_bytes: i * 100,
                        payload_bytes: 100,
                        crc32: i as u32,
                        // Puts commit a 16-byte read digest with every entry.
                        digest: hash(i)[..16].to_vec(),
                        unreferenced: false,
                        relocate_from_volume: 0,
                    })
                    .collect();
                let req = pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() };
                call_bytes.fetch_add(prost::Message::encoded_len(&req) as u64, Ordering::Relaxed);
                let resp = client
                    .call(|mut c| {
                        let r = req.clone();
                        async move { c.commit_index(r).await }
                    })
                    .await?;
                call_bytes.fetch_add(prost::Message::encoded_len(&resp) as u64, Ordering::Relaxed);
                if let Some(bad) = resp.results.iter().find(|r| r.outcome() != pb::CommitOutcome::Committed) {
                    bail!("commit {}: {} {}", bad.outcome().name(), bad.error_code, bad.detail);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let commit_elapsed = start.elapsed();
    let leader = leader_id(&client).await?;
    if leader != leader_before {
        bail!(
            "the leader changed during the commit phase ({leader_before} -> {leader}): no per-follower figure"
        );
    }
    let loopback = loopback_bytes().context("read /proc/net/dev")?.saturating_sub(loopback_before);
    let between_masters = loopback.saturating_sub(call_bytes.load(Ordering::Relaxed));
    let replicated_bytes_per_entry = between_masters as f64 / 2.0 / config.entries as f64;

    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..config.clients {
        let (client, next, batch, total, entries) =
            (client.clone(), next.clone(), config.lookup_batch, config.lookups, config.entries);
        tasks.push(tokio::spawn(async move {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ c;
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let n = (first + batch).min(total) - first;
                let hashes: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        hash(x % entries)
                    })
                    .collect();
                let req = pb::LookupRequest { hashes, request_id: None };
                let resp = client
                    .call(|mut c| {
                        let r = req.clone();
                        async move { c.lookup(r).await }
                    })
                    .await?;
                if resp.entries.len() as u64 != n {
                    bail!("lookup found {} of {n}", resp.entries.len());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let lookup_elapsed = start.elapsed();
    let peak_rss_kib =
        masters.children.iter().filter_map(|(id, child)| Some((*id, peak_rss_kib(child.id())?))).collect();
    drop(masters);
    let rows = vec![
        Row {
            name: format!("index commits, {} clients x {} per call", config.clients, config.batch),
            ops: config.entries,
            bytes: 0,
            elapsed: commit_elapsed,
            baseline: None,
        },
        Row {
            name: format!(
                "lookups (read index), {} clients x {} per call",
                config.clients, config.lookup_batch
            ),
            ops: config.lookups,
            bytes: 0,
            elapsed: lookup_elapsed,
            baseline: None,
        },
    ];
    Ok(MasterBenchResult { rows, peak_rss_kib, leader_id: leader, replicated_bytes_per_entry })
}
