//! Block API load generator: puts `count` distinct blocks of `size_bytes` through the HTTP
//! block API with `concurrency` clients, then gets them all back (checking every byte),
//! and reports throughput and p50/p99 latency of each phase. Runs against any endpoint
//! (`cellar dev` or a `cellar frontend`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Method;
use sha2::{Digest, Sha256};

use crate::http1;

/// A load-generator client's connection.
type Client = http1::Client<Frames>;

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
    /// Times the get phase runs.
    pub get_rounds: u32,
    /// When not empty: the cell's masters, asked between the put and the get phases until
    /// the cell has finished its background work (see [`wait_idle`]), so that the gets
    /// measure the read path alone rather than reads competing with coding.
    pub idle_masters: Vec<String>,
    /// A shell command run after the puts (and the idle wait), before the gets: e.g.
    /// `kill -STOP PID` to measure gets with a volume server frozen. It must succeed.
    pub before_gets: Option<String>,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct BlocksRun {
    /// The put phase, then each get round.
    pub phases: Vec<Phase>,
    /// How long the gets waited for the cell to go idle (with `idle_masters`).
    pub idle_wait: Option<Duration>,
}

/// How long [`wait_idle`] waits at most.
pub const IDLE_WAIT_MAX: Duration = Duration::from_secs(600);

/// Waits until the masters report no open task and no sealed volume waiting to be coded,
/// twice in a row (half a second apart); returns the time waited.
pub async fn wait_idle(masters: &[String]) -> Result<Duration> {
    use cellar_proto::master::StatusRequest;
    let started = Instant::now();
    let client = cellar_master_api::client::MasterClient::new(masters, None).context("master client")?;
    let mut idle_polls = 0;
    loop {
        let status = client
            .call(|mut c| async move { c.status(StatusRequest {}).await })
            .await
            .context("master status")?;
        let sealed: u64 = status
            .volumes
            .iter()
            .filter(|v| v.state() == cellar_proto::common::VolumeState::Sealed)
            .map(|v| v.count)
            .sum();
        idle_polls = if status.tasks_open == 0 && sealed == 0 { idle_polls + 1 } else { 0 };
        if idle_polls >= 2 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > IDLE_WAIT_MAX {
            bail!(
                "the cell did not go idle in {} s ({} tasks open, {sealed} volumes sealed)",
                IDLE_WAIT_MAX.as_secs(),
                status.tasks_open
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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

/// Distinct, incompressible blocks made cheaply: one pseudo-random base per run, with the
/// run id and the block's number in its first 16 bytes. Making or checking a block costs a
/// copy or a compare, so the load generator leaves the machine's cores to the servers.
#[derive(Debug, Clone)]
pub struct BlockMaker {
    run_id: u64,
    /// Shared by every block and by the request bodies made of it (cloning is a count).
    base: Bytes,
}

/// Bytes of the base sent in the first frame of a put's body, with the tag.
const BODY_HEAD_BYTES: usize = 64 << 10;

/// A request body of a few ready frames, with its exact length (sent as Content-Length).
pub struct Frames {
    frames: std::collections::VecDeque<Bytes>,
}

impl Frames {
    /// A body of no bytes.
    pub fn empty() -> Frames {
        Frames { frames: std::collections::VecDeque::new() }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.frames.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.frames.iter().map(|b| b.len() as u64).sum())
    }
}

impl BlockMaker {
    /// Blocks of `size` bytes for run `run_id`.
    pub fn new(run_id: u64, size: usize) -> BlockMaker {
        let mut state = run_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut base = vec![0u8; size];
        for chunk in base.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        BlockMaker { run_id, base: Bytes::from(base) }
    }

    fn tag(&self, i: u64) -> [u8; 16] {
        let mut tag = [0u8; 16];
        tag[..8].copy_from_slice(&self.run_id.to_le_bytes());
        tag[8..].copy_from_slice(&i.to_le_bytes());
        tag
    }

    /// Block number `i` as a request body that shares the base instead of copying it: the
    /// tag, then the rest of the base (a 4 MiB copy and its fresh pages per put would
    /// otherwise be load-generator work on the cores the servers use).
    pub fn body(&self, i: u64) -> Frames {
        let tag = self.tag(i);
        let n = tag.len().min(self.base.len());
        let mut head = tag[..n].to_vec();
        // The tag alone in a frame of its own would be a tiny write; a little of the base
        // travels with it.
        let split = self.base.len().min(BODY_HEAD_BYTES).max(n);
        head.extend_from_slice(&self.base[n..split]);
        let rest = self.base.slice(split..);
        Frames { frames: [Bytes::from(head), rest].into_iter().filter(|b| !b.is_empty()).collect() }
    }

    /// Block number `i`.
    pub fn make(&self, i: u64) -> Vec<u8> {
        let mut out = self.base.to_vec();
        let tag = self.tag(i);
        let n = tag.len().min(out.len());
        out[..n].copy_from_slice(&tag[..n]);
        out
    }

    /// Whether `got` is block number `i`, byte for byte.
    pub fn is(&self, i: u64, got: &[u8]) -> bool {
        got.len() == self.base.len() && self.matches_at(i, 0, got)
    }

    /// Whether `chunk` equals bytes `at..at + chunk.len()` of block number `i` (for checking
    /// a body as it arrives, without collecting it).
    pub fn matches_at(&self, i: u64, at: usize, chunk: &[u8]) -> bool {
        let end = at + chunk.len();
        if end > self.base.len() {
            return false;
        }
        let tag = self.tag(i);
        let tag_len = tag.len().min(self.base.len());
        let split = tag_len.clamp(at, end);
        let (head, rest) = chunk.split_at(split - at);
        (head.is_empty() || head == &tag[at..split]) && rest == &self.base[split..end]
    }
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
    maker: &BlockMaker,
    hashes: Arc<Vec<String>>,
    clients: &mut Vec<Client>,
) -> Result<Phase> {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for mut client in clients.drain(..) {
        let (next, hashes, config, maker) = (next.clone(), hashes.clone(), config.clone(), maker.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut path = String::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= config.count {
                    return Ok::<_, anyhow::Error>((latencies, client));
                }
                let t;
                path.clear();
                if name == "put" {
                    let body = maker.body(i);
                    path.push_str("/v1/blocks");
                    t = Instant::now();
                    let mut answer = Vec::new();
                    let (status, _) =
                        client.request(Method::PUT, &path, body, |_, b| answer.extend_from_slice(b)).await?;
                    if status.as_u16() != 201 {
                        bail!("put answered {status}: {}", String::from_utf8_lossy(&answer));
                    }
                } else {
                    let hash = &hashes[i as usize];
                    path.push_str("/v1/blocks/");
                    path.push_str(hash);
                    t = Instant::now();
                    // Checked as it arrives: collecting the body first would cost the load
                    // generator a copy of every block on the cores it shares with the cell.
                    let mut same = true;
                    let (status, len) = client
                        .request(Method::GET, &path, Frames::empty(), |at, chunk| {
                            same &= maker.matches_at(i, at, chunk)
                        })
                        .await?;
                    if status.as_u16() != 200 {
                        bail!("get answered {status}");
                    }
                    if !same || len != config.size_bytes {
                        bail!("block {hash} came back different");
                    }
                }
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        let (mine, client) = w.await.context("worker")??;
        latencies.extend(mine);
        clients.push(client);
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

/// Runs the put phase, then (after waiting for the cell to go idle, with `idle_masters`)
/// the get phase `get_rounds` times.
pub async fn run(config: &BlocksBenchConfig) -> Result<BlocksRun> {
    let run_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let maker = BlockMaker::new(run_id, config.size_bytes);
    // The clients' connections are opened before the first phase and kept through all:
    // opening hundreds at a phase's start would be timed as part of it.
    let mut clients =
        (0..config.concurrency).map(|_| Client::new(&config.endpoint)).collect::<Result<Vec<Client>>>()?;
    if config.count > 0 {
        futures::future::try_join_all(clients.iter_mut().map(Client::connect)).await?;
    }
    let put = phase("put", config, &maker, Arc::new(Vec::new()), &mut clients).await?;
    let hashes: Vec<String> = (0..config.count).map(|i| hex::encode(Sha256::digest(maker.make(i)))).collect();
    let hashes = Arc::new(hashes);
    let mut phases = vec![put];
    let idle_wait =
        if config.idle_masters.is_empty() { None } else { Some(wait_idle(&config.idle_masters).await?) };
    if let Some(cmd) = &config.before_gets {
        let sh = cmd.clone();
        let status =
            tokio::task::spawn_blocking(move || std::process::Command::new("sh").args(["-c", &sh]).status())
                .await?
                .with_context(|| format!("run {cmd:?}"))?;
        if !status.success() {
            bail!("{cmd:?} failed: {status}");
        }
    }
    for _ in 0..config.get_rounds.max(1) {
        phases.push(phase("get", config, &maker, hashes.clone(), &mut clients).await?);
    }
    Ok(BlocksRun { phases, idle_wait })
}

#[cfg(test)]
mod tests {
    use super::BlockMaker;

    #[test]
    fn a_put_body_is_the_block_in_frames_of_its_exact_length() {
        use http_body::Body;
        for size in [0, 1, 15, 16, 17, 1000, (64 << 10) + 1, 300_000] {
            let maker = BlockMaker::new(9, size);
            for i in [0, 5] {
                let mut frames = maker.body(i);
                assert_eq!(frames.size_hint().exact(), Some(size as u64), "size {size}");
                let mut got = Vec::new();
                while let Some(b) = frames.frames.pop_front() {
                    got.extend_from_slice(&b);
                }
                assert!(frames.is_end_stream());
                assert_eq!(got, maker.make(i), "size {size} block {i}");
            }
        }
    }

    #[test]
    fn a_block_matches_in_any_chunking_and_a_changed_byte_does_not() {
        let maker = BlockMaker::new(7, 1000);
        let block = maker.make(3);
        assert!(maker.is(3, &block));
        assert!(!maker.is(4, &block));
        for step in [1, 5, 16, 17, 333, 1000] {
            let mut at = 0;
            for chunk in block.chunks(step) {
                assert!(maker.matches_at(3, at, chunk), "chunk at {at} of {step}");
                at += chunk.len();
            }
        }
        for flip in [0, 15, 16, 999] {
            let mut bad = block.clone();
            bad[flip] ^= 1;
            assert!(!maker.is(3, &bad), "flipped byte {flip}");
            assert!(!maker.matches_at(3, flip, &bad[flip..flip + 1]));
        }
        assert!(!maker.matches_at(3, 990, &block[..20]), "past the end");
    }
}
