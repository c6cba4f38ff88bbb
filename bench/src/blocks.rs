//! Block API load generator: puts `count` distinct blocks of `size_bytes` through the HTTP
//! block API with `concurrency` clients, then gets them all back (checking every byte),
//! and reports throughput and p50/p99 latency of each phase. Runs against any endpoint
//! (`cellar dev` or a `cellar frontend`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// What to run.
#[derive(Debug, Clone)]
pub struct BlocksBenchConfig {
    /// Base URL of the block API, e.g. `http://127.0.0.1:7480`.
    pub endpoint: String,
    /// Size of every block.
    pub size_bytes: usize,
    /// Blocks to put (and get).
    pub count: u64,
    /// Concurrent clients.
    pub concurrency: u64,
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// "put" or "get".
    pub name: &'static str,
    /// Requests completed.
    pub ops: u64,
    /// Block bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

impl Phase {
    /// Requests per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MB/s of block bytes.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A distinct block: `seed` in its first bytes, pseudo-random after (incompressible).
pub fn block(seed: u64, size: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = vec![0u8; size];
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let tag = seed.to_le_bytes();
    let n = tag.len().min(out.len());
    out[..n].copy_from_slice(&tag[..n]);
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn phase(
    name: &'static str,
    config: &BlocksBenchConfig,
    client: &reqwest::Client,
    run_id: u64,
    hashes: Arc<Vec<String>>,
) -> Result<Phase> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..config.concurrency {
        let (next, client, hashes, config) = (next.clone(), client.clone(), hashes.clone(), config.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= config.count {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let body = block(run_id ^ (i << 20), config.size_bytes);
                let t = Instant::now();
                if name == "put" {
                    let resp = client.put(format!("{}/v1/blocks", config.endpoint)).body(body).send().await?;
                    if resp.status().as_u16() != 201 {
                        bail!("put answered {}: {}", resp.status(), resp.text().await.unwrap_or_default());
                    }
                    resp.bytes().await?;
                } else {
                    let hash = &hashes[i as usize];
                    let resp = client.get(format!("{}/v1/blocks/{hash}", config.endpoint)).send().await?;
                    if resp.status().as_u16() != 200 {
                        bail!("get answered {}", resp.status());
                    }
                    let got = resp.bytes().await?;
                    if got[..] != body[..] {
                        bail!("block {hash} came back different");
                    }
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.context("worker")??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Phase {
        name,
        ops: latencies.len() as u64,
        bytes: latencies.len() as u64 * config.size_bytes as u64,
        elapsed,
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    })
}

/// Runs the put phase, then the get phase.
pub async fn run(config: &BlocksBenchConfig) -> Result<Vec<Phase>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(config.concurrency as usize).build()?;
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let put = phase("put", config, &client, run_id, Arc::new(Vec::new())).await?;
    let hashes: Vec<String> = (0..config.count)
        .map(|i| hex::encode(Sha256::digest(block(run_id ^ (i << 20), config.size_bytes))))
        .collect();
    let get = phase("get", config, &client, run_id, Arc::new(hashes)).await?;
    Ok(vec![put, get])
}
