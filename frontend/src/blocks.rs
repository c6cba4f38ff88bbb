//! The put and get paths (DESIGN sections 3 and 4), independent of the HTTP layer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use cellar_master_api::client::ClientError;
use cellar_proto::master as mpb;
use cellar_volume_api::cluster::Cluster;
use cellar_volume_api::digest::{BlockKey, read_digest};
use cellar_volume_api::gather::GatherWhen;
use cellar_volume_api::pieces::Pieces;
use cellar_volume_api::reader::{BlockRead, BlockReader};
use cellar_volume_api::streamed::{RecordStream, StreamedRead};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{CellLimits, FrontendConfig};
use crate::host_load::HostLoad;
use crate::lookups::Lookups;
use crate::metrics::Metrics;
use crate::writers::{BlockSums, StoreError, Writers};
use crate::{GETS_IN_FLIGHT_MAX, INDEX_CACHE_MAX, PUTS_IN_FLIGHT_MAX, VOLUME_CACHE_MAX};
use cellar_volume_api::cache::TwoGenerations;

/// Why a block operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// No such block (404).
    #[error("block {0} is not stored here")]
    NotFound(String),
    /// A malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// The bytes do not hash to the key given (400).
    #[error("the bytes hash to {actual}, not {expected}")]
    HashMismatch {
        /// The key in the request.
        expected: String,
        /// The bytes' SHA-256.
        actual: String,
    },
    /// The block is over `block_size_max_bytes` (413).
    #[error("block of {size_bytes} bytes is over the limit of {limit_bytes} bytes")]
    TooLarge {
        /// Its size (or a lower bound).
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// The cluster cannot serve it now (503).
    #[error("{0}")]
    Unavailable(String),
}

/// What a put did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PutOutcome {
    /// The block's key, lowercase hex.
    pub hash: String,
    /// Its size.
    pub size: u64,
    /// Whether the block was stored already (only its reference count went up).
    pub deduplicated: bool,
}

/// A block read for a get.
#[derive(Debug)]
pub struct Got {
    /// The block's bytes, verified against its key. They carry the get's share of the get
    /// byte budget ([`crate::GET_BLOCKS_IN_FLIGHT_MAX_BYTES`]), given back when the last
    /// reference to them (or to a slice of them) is dropped: once written to the client,
    /// encoded into a gRPC message, or dropped unsent. They are the buffers the block
    /// arrived in (see [`cellar_volume_api::pieces`]), written to the client one after
    /// another.
    pub bytes: Pieces,
    /// Whether decoding was needed (a degraded read).
    pub degraded: bool,
}

impl Got {
    /// The bytes in one buffer (copied when they are in several: a gRPC answer is encoded
    /// from one), still carrying the get's share of the byte budget: the buffers they were
    /// copied from go with the copy, briefly twice the bytes, until the answer is encoded
    /// and drops it.
    pub fn into_bytes(self) -> Bytes {
        if let [one] = self.bytes.parts() {
            return one.clone();
        }
        struct Joined {
            bytes: Bytes,
            _from: Pieces,
        }
        impl AsRef<[u8]> for Joined {
            fn as_ref(&self) -> &[u8] {
                &self.bytes
            }
        }
        let bytes = self.bytes.to_bytes();
        Bytes::from_owner(Joined { bytes, _from: self.bytes })
    }
}

/// A block being read for a get (see [`Blocks::get_streamed`]).
pub enum Getting {
    /// Read whole.
    Whole(Got),
    /// Handed on as it arrives.
    Arriving(Arriving),
}

/// A block's bytes as they arrive from a volume server, checked as they arrive, the last
/// piece held back until all matched the key. Holds the get's share of the byte budget
/// until it ends or is dropped.
pub struct Arriving {
    stream: Box<RecordStream>,
    _held: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
    started: Instant,
    handed_bytes: u64,
    ended: bool,
    /// Whether it counts as a get (see [`Blocks::count_getting`]): one read ahead and
    /// dropped unused counts as nothing, not as abandoned.
    counted: bool,
}

impl Arriving {
    /// The block's length.
    pub fn len(&self) -> usize {
        self.stream.len()
    }

    /// Whether the block is empty (never: small blocks are read whole).
    pub fn is_empty(&self) -> bool {
        self.stream.is_empty()
    }

    /// The next bytes; `None` once all were handed on and matched the key. After an error
    /// (no holder left, the bytes failed the check, past the read deadline) the bytes handed
    /// on are not the block: the answer must be cut short.
    /// The stream's end (or failure) repeats on later calls; it is counted once. A get is
    /// counted done when its last piece is handed on: the stream holds that piece back
    /// until all bytes matched the key, and an answer of a known length is not asked for
    /// more once it has them all (hyper does not poll a body whose length is reached, so
    /// waiting for `None` counted every whole get as abandoned).
    pub async fn next(&mut self) -> Result<Option<Bytes>, BlockError> {
        let next = self.stream.next().await;
        match &next {
            Ok(Some(piece)) => {
                self.handed_bytes += piece.len() as u64;
                if !self.ended && self.handed_bytes == self.stream.len() as u64 {
                    self.count_done();
                }
            }
            _ if self.ended => {}
            Ok(None) => self.count_done(),
            Err(e) => {
                self.ended = true;
                self.metrics.gets_failed.add(1);
                self.metrics.streamed_gets_cut.add(1);
                tracing::warn!(error = %e.message(), "a get cut short after sending part of the block");
            }
        }
        next.map_err(|e| BlockError::Unavailable(e.message().to_string()))
    }

    fn count_done(&mut self) {
        self.ended = true;
        self.metrics.gets_ok.add(1);
        self.metrics.get_bytes.add(self.handed_bytes);
        self.metrics.get_latency.observe(self.started.elapsed());
    }
}

impl Drop for Arriving {
    /// A get dropped before its end (its client went away, or the answer's write stalled
    /// out) is counted as abandoned.
    fn drop(&mut self) {
        if self.counted && !self.ended {
            self.metrics.streamed_gets_abandoned.add(1);
        }
    }
}

/// Bytes of a frontend's byte budgets held now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BytesHeld {
    /// By puts' bodies ([`crate::PUT_BODIES_IN_FLIGHT_MAX_BYTES`]).
    pub put_bodies: u64,
    /// By blocks read for gets ([`crate::GET_BLOCKS_IN_FLIGHT_MAX_BYTES`]).
    pub get_blocks: u64,
}

/// Where a block is and what its volume looks like.
#[derive(Debug, Clone)]
pub struct BlockStat {
    /// The index entry.
    pub entry: mpb::IndexEntry,
    /// Its volume.
    pub volume: mpb::Volume,
}

/// Parses a 64-hex-digit block key.
pub fn parse_hash(text: &str) -> Result<[u8; 32], BlockError> {
    let mut out = [0u8; 32];
    if text.len() != 64
        || hex::decode_to_slice(text, &mut out).is_err()
        || text.chars().any(|c| c.is_ascii_uppercase())
    {
        return Err(BlockError::BadRequest(format!("{text:?} is not a SHA-256 in 64 lowercase hex digits")));
    }
    Ok(out)
}

fn unavailable(e: ClientError) -> BlockError {
    BlockError::Unavailable(e.to_string())
}

/// `bytes` carrying `held` (a share of a byte budget): the share is released when the last
/// reference to these bytes, or to a slice of them, is dropped, not when they change hands.
fn holding(bytes: Pieces, held: OwnedSemaphorePermit) -> Pieces {
    struct Held<S> {
        bytes: Bytes,
        _share: S,
    }
    impl<S> AsRef<[u8]> for Held<S> {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    if bytes.parts().len() <= 1 {
        // One buffer (every small block): no shared count to allocate.
        let mut held = Some(held);
        return bytes.map_parts(|bytes| match held.take() {
            Some(share) => Bytes::from_owner(Held { bytes, _share: share }),
            None => bytes,
        });
    }
    let share = Arc::new(held);
    bytes.map_parts(|bytes| Bytes::from_owner(Held { bytes, _share: share.clone() }))
}

/// Blocks shorter than this are hashed on the runtime worker (see [`sha256_of`]).
const HASH_INLINE_MAX_BYTES: usize = 64 << 10;

/// The SHA-256 of a block about to be stored, and the block: a large one is hashed on a
/// blocking thread (~2.5 ms for 4 MiB, too long for a runtime worker), a small one here
/// (4 KiB: ~2.4 us, less than the hand-off).
pub async fn sha256_of(bytes: Bytes) -> Result<([u8; 32], Bytes), BlockError> {
    if bytes.len() < HASH_INLINE_MAX_BYTES {
        return Ok((Sha256::digest(&bytes).into(), bytes));
    }
    tokio::task::spawn_blocking(move || (<[u8; 32]>::from(Sha256::digest(&bytes)), bytes))
        .await
        .map_err(|e| BlockError::Unavailable(format!("hashing a block: {e}")))
}

/// A cached index entry and when it was learned.
#[derive(Clone)]
struct Cached {
    entry: mpb::IndexEntry,
    at: Instant,
}

/// The block service of one frontend.
pub struct Blocks {
    cluster: Arc<Cluster>,
    writers: Writers,
    reader: BlockReader,
    lookups: Lookups,
    index: Arc<Mutex<TwoGenerations<[u8; 32], Cached>>>,
    /// How long a cached index entry serves gets before it is looked up again.
    index_entry_fresh: std::time::Duration,
    /// Lookups refreshing cached entries in the background (at most
    /// [`crate::ENTRY_REFRESHES_IN_FLIGHT_MAX`] at once).
    refreshes: Arc<Semaphore>,
    volumes: Mutex<TwoGenerations<u64, mpb::Volume>>,
    puts: Arc<Semaphore>,
    gets: Arc<Semaphore>,
    put_bytes: Arc<Semaphore>,
    put_bytes_max: u32,
    get_bytes: Arc<Semaphore>,
    get_bytes_max: u32,
    block_size_max_bytes: u64,
    /// See [`crate::PUT_LOOKUP_MIN_BYTES`].
    put_lookup_min_bytes: u64,
    /// See [`crate::RESPONSE_WRITE_STALL_MAX_MS`].
    response_write_stall_timeout: std::time::Duration,
    put_body_timeout: std::time::Duration,
    put_body_idle_timeout: std::time::Duration,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The storage watcher's queue (stored puts to read back later).
    pub watcher: Arc<crate::watcher::Watcher>,
}

/// The length of a block's record on a replica: its payload behind the record header.
fn record_bytes(payload_bytes: u32) -> Result<u32, BlockError> {
    payload_bytes.checked_add(cellar_format::RECORD_HEADER_BYTES as u32).ok_or_else(|| {
        BlockError::Unavailable(format!("index entry of {payload_bytes} bytes is over any record"))
    })
}

/// `n` permits of `semaphore`, counting in `waits` a caller that found them taken and
/// waited (the admission limits and byte budgets all wait this way).
async fn permits(
    semaphore: &Arc<Semaphore>,
    n: u32,
    waits: &crate::metrics::Counter,
) -> OwnedSemaphorePermit {
    if let Ok(p) = semaphore.clone().try_acquire_many_owned(n) {
        return p;
    }
    waits.add(1);
    loop {
        // Only fails if the semaphore were closed, which none of these ever is.
        if let Ok(p) = semaphore.clone().acquire_many_owned(n).await {
            return p;
        }
        tokio::task::yield_now().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Blocks {
    /// A block service over `cluster`.
    pub fn new(cluster: Arc<Cluster>, config: &FrontendConfig, limits: CellLimits) -> Blocks {
        let metrics = Arc::new(Metrics::default());
        // One sampler of the host for both rules when they share a threshold.
        let append_host = (config.append_alone_host_busy_percent > 0 && config.append_alone_below_bytes > 0)
            .then(|| HostLoad::start(config.append_alone_host_busy_percent));
        if config.gather_reads {
            let when: GatherWhen = match config.gather_reads_host_busy_percent {
                0 => Arc::new(|| true),
                busy_percent => {
                    let host = append_host
                        .clone()
                        .filter(|h| h.busy_percent() == busy_percent)
                        .unwrap_or_else(|| HostLoad::start(busy_percent));
                    Arc::new(move || host.saturated())
                }
            };
            cluster
                .gather_reads(when, std::time::Duration::from_micros(cellar_volume_api::gather::WAIT_MAX_US));
        }
        Blocks {
            writers: Writers::new(cluster.clone(), config, limits, metrics.clone(), append_host),
            reader: BlockReader::new(cluster.clone(), limits.block_size_max_bytes),
            lookups: Lookups::start(cluster.clone()),
            cluster,
            index: Arc::new(Mutex::new(TwoGenerations::new(INDEX_CACHE_MAX))),
            volumes: Mutex::new(TwoGenerations::new(VOLUME_CACHE_MAX)),
            puts: Arc::new(Semaphore::new(PUTS_IN_FLIGHT_MAX)),
            put_body_timeout: config.put_body_timeout,
            put_body_idle_timeout: config.put_body_idle_timeout,
            gets: Arc::new(Semaphore::new(GETS_IN_FLIGHT_MAX)),
            // validate() keeps both under 4 GiB.
            put_bytes: Arc::new(Semaphore::new(config.put_bodies_in_flight_max_bytes as usize)),
            put_bytes_max: u32::try_from(config.put_bodies_in_flight_max_bytes).unwrap_or(u32::MAX),
            get_bytes: Arc::new(Semaphore::new(config.get_blocks_in_flight_max_bytes as usize)),
            get_bytes_max: u32::try_from(config.get_blocks_in_flight_max_bytes).unwrap_or(u32::MAX),
            block_size_max_bytes: limits.block_size_max_bytes,
            put_lookup_min_bytes: config.put_lookup_min_bytes,
            index_entry_fresh: config.index_entry_fresh,
            refreshes: Arc::new(Semaphore::new(crate::ENTRY_REFRESHES_IN_FLIGHT_MAX)),
            response_write_stall_timeout: config.response_write_stall_timeout,
            metrics,
            watcher: Arc::new(crate::watcher::Watcher::new(config.watch.clone())),
        }
    }

    /// The largest block accepted.
    pub fn block_size_max_bytes(&self) -> u64 {
        self.block_size_max_bytes
    }

    /// The writer pool (lease renewal, sealing at shutdown).
    pub fn writers(&self) -> &Writers {
        &self.writers
    }

    /// The cell as this frontend sees it (master client, volume server clients).
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Waits for room for one more put (bounds the bodies held in memory): taken before
    /// the body is read (HTTP) or decoded (gRPC, see [`crate::grpc::Admission`]).
    pub async fn admit_put(&self) -> tokio::sync::OwnedSemaphorePermit {
        permits(&self.puts, 1, &self.metrics.put_admission_waits).await
    }

    /// Waits for room for `bytes` more bytes of put bodies (bounds the memory of large
    /// puts, see [`crate::PUT_BODIES_IN_FLIGHT_MAX_BYTES`]): taken after [`Self::admit_put`],
    /// before the body is read (HTTP: its Content-Length, or the largest block when it has
    /// none) or once it is decoded (gRPC, whose requests carry no length), and held until
    /// the put is done. At most the whole budget is taken, so one largest block always
    /// fits.
    pub async fn hold_put_bytes(&self, bytes: u64) -> OwnedSemaphorePermit {
        let n =
            u32::try_from(bytes.min(self.block_size_max_bytes)).unwrap_or(u32::MAX).min(self.put_bytes_max);
        permits(&self.put_bytes, n, &self.metrics.put_admission_waits).await
    }

    /// Bytes of the put and get byte budgets held now.
    pub fn bytes_held(&self) -> BytesHeld {
        let held = |max: u32, sem: &Semaphore| u64::from(max).saturating_sub(sem.available_permits() as u64);
        BytesHeld {
            put_bodies: held(self.put_bytes_max, &self.put_bytes),
            get_blocks: held(self.get_bytes_max, &self.get_bytes),
        }
    }

    /// Waits for room for a block of `bytes` read for a get (see
    /// [`crate::GET_BLOCKS_IN_FLIGHT_MAX_BYTES`]).
    async fn hold_get_bytes(&self, bytes: u32) -> OwnedSemaphorePermit {
        permits(&self.get_bytes, bytes.min(self.get_bytes_max), &self.metrics.get_admission_waits).await
    }

    /// Longest a response write to a client may stay blocked (see [`crate::stall`]).
    pub fn response_write_stall_timeout(&self) -> std::time::Duration {
        self.response_write_stall_timeout
    }

    /// Longest a put's body may take to arrive, in total and between two reads.
    pub fn put_body_timeouts(&self) -> (std::time::Duration, std::time::Duration) {
        (self.put_body_timeout, self.put_body_idle_timeout)
    }

    /// Longest an upload's copy source may go without a byte: room for a block read, a
    /// fresh index lookup and a second read (twice the read and control deadlines).
    pub fn copy_source_idle_timeout(&self) -> std::time::Duration {
        let d = self.cluster.deadlines();
        2 * (d.read + d.control)
    }

    /// Waits for room for one more get; the permit is held until its block is sent.
    pub async fn admit_get(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed, so this only fails if it were.
        self.gets.clone().acquire_owned().await.ok()
    }

    fn cache_entry(&self, hash: [u8; 32], entry: mpb::IndexEntry) {
        lock(&self.index).insert(hash, Cached { entry, at: Instant::now() });
    }

    /// The block's index entry: the cached one, else the masters' (then cached). A cached
    /// entry older than the freshness limit (see [`crate::INDEX_ENTRY_FRESH_MS`]) still
    /// serves at once, and is looked up again in the background: an entry gone from the
    /// index (the block deleted through another frontend) is forgotten, a moved one
    /// replaced. Gets never wait on the masters for a block this frontend knows (a master
    /// election does not stall them; the read checks the bytes against the key anyway).
    async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<mpb::IndexEntry>, BlockError> {
        let cached = lock(&self.index).get(hash);
        if let Some(c) = cached {
            if c.at.elapsed() >= self.index_entry_fresh {
                self.refresh_entry(*hash, c.at);
            }
            return Ok(Some(c.entry));
        }
        let started = Instant::now();
        let found = self.lookups.lookup(*hash).await.map_err(BlockError::Unavailable)?;
        self.metrics.lookup_latency.observe(started.elapsed());
        if let Some(e) = &found {
            self.cache_entry(*hash, e.clone());
        }
        Ok(found)
    }

    /// Looks `hash`'s cached entry (the one learned at `seen_at`) up again in the
    /// background, when fewer than [`crate::ENTRY_REFRESHES_IN_FLIGHT_MAX`] refreshes run
    /// (else a later get tries). The entry counts as fresh meanwhile, so that the gets
    /// before the answer do not ask again; a failed lookup leaves it as it is, and so does
    /// any answer once the entry was replaced or forgotten meanwhile (a put or delete
    /// through this frontend knows better than a lookup that may have been answered before
    /// it). Nothing happens when the entry is no longer the one seen.
    fn refresh_entry(&self, hash: [u8; 32], seen_at: Instant) {
        let Ok(permit) = self.refreshes.clone().try_acquire_owned() else { return };
        let marked = Instant::now();
        {
            let mut index = lock(&self.index);
            match index.get(&hash) {
                Some(c) if c.at == seen_at => index.insert(hash, Cached { entry: c.entry, at: marked }),
                _ => return,
            }
        }
        let (index, lookups) = (self.index.clone(), self.lookups.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let found = lookups.lookup(hash).await;
            let mut index = lock(&index);
            if index.get(&hash).is_none_or(|c| c.at != marked) {
                return;
            }
            match found {
                Ok(Some(entry)) => index.insert(hash, Cached { entry, at: Instant::now() }),
                Ok(None) => {
                    index.remove(&hash);
                }
                Err(why) => {
                    tracing::debug!(hash = %hex::encode(hash), %why, "cannot refresh a cached index entry")
                }
            }
        });
    }

    /// Whether a block about to be stored is indexed already: this frontend's cache knows,
    /// and the masters are asked only about blocks of at least `put_lookup_min_bytes` (a
    /// smaller one is stored, and its index commit deduplicates it).
    async fn lookup_before_store(
        &self,
        hash: &[u8; 32],
        size: u64,
    ) -> Result<Option<mpb::IndexEntry>, BlockError> {
        if size < self.put_lookup_min_bytes {
            return Ok(lock(&self.index).get(hash).map(|c| c.entry));
        }
        self.lookup(hash).await
    }

    async fn volume(&self, volume_id: u64, fresh: bool) -> Result<mpb::Volume, BlockError> {
        let cached = if fresh { None } else { lock(&self.volumes).get(&volume_id) };
        if let Some(v) = cached {
            return Ok(v);
        }
        let v = self
            .cluster
            .volume(volume_id)
            .await
            .map_err(|e| BlockError::Unavailable(e.message().to_string()))?;
        self.cache_volume(v.clone());
        Ok(v)
    }

    fn cache_volume(&self, v: mpb::Volume) {
        lock(&self.volumes).insert(v.volume_id, v);
    }

    /// Stores a block; `expected` is the key the client named, if any.
    pub async fn put(&self, bytes: Bytes, expected: Option<[u8; 32]>) -> Result<PutOutcome, BlockError> {
        let started = Instant::now();
        let result = self.put_inner(bytes, expected).await;
        match &result {
            Ok(outcome) => {
                self.metrics.puts_ok.add(1);
                self.metrics.put_bytes.add(outcome.size);
                if outcome.deduplicated {
                    self.metrics.dedup_hits.add(1);
                } else if let Ok(Ok(hash)) = hex::decode(&outcome.hash).map(<[u8; 32]>::try_from) {
                    self.watcher.note_put(hash);
                }
                self.metrics.put_latency.observe(started.elapsed());
            }
            Err(_) => self.metrics.puts_failed.add(1),
        }
        result
    }

    async fn put_inner(&self, bytes: Bytes, expected: Option<[u8; 32]>) -> Result<PutOutcome, BlockError> {
        let size = bytes.len() as u64;
        if size > self.block_size_max_bytes {
            return Err(BlockError::TooLarge { size_bytes: size, limit_bytes: self.block_size_max_bytes });
        }
        let (sha256, bytes) = sha256_of(bytes).await?;
        if let Some(expected) = expected
            && expected != sha256
        {
            return Err(BlockError::HashMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(sha256),
            });
        }
        let hash = hex::encode(sha256);
        // Dedup: an indexed block only gains a reference.
        let found = self.lookup_before_store(&sha256, size).await?;
        if let Some(existing) = found {
            let entry = mpb::IndexCommit {
                hash: sha256.to_vec(),
                volume_id: existing.volume_id,
                lease_epoch: 0,
                offset_bytes: existing.offset_bytes,
                payload_bytes: existing.payload_bytes,
                crc32: existing.crc32,
                digest: existing.digest.clone(),
                unreferenced: false,
                relocate_from_volume: 0,
            };
            // Exactly once: a retry after a lost answer must not add a second reference.
            let request =
                mpb::CommitIndexRequest { entries: vec![entry], request_id: None, versions: Vec::new() };
            let resp = self
                .cluster
                .master()
                .call_once(request, |mut c, r| async move { c.commit_index(r).await })
                .await
                .map_err(unavailable)?;
            if let Some(r) = resp.results.first()
                && r.outcome() == mpb::CommitOutcome::Deduplicated
            {
                return Ok(PutOutcome { hash, size, deduplicated: true });
            }
            // The entry went away meanwhile (its last reference was dropped): store anew.
            lock(&self.index).remove(&sha256);
        }
        // The read digest and CRC32 only for bytes that will be stored (not on dedup).
        let sums = BlockSums {
            sha256,
            digest: read_digest(&sha256, &bytes),
            crc32: crc32fast::hash(&bytes),
            unreferenced: false,
            relocate_from: 0,
        };
        let stored = self.writers.store(sums, bytes).await.map_err(|e| match e {
            StoreError::Retry(why) | StoreError::Fatal(why) => BlockError::Unavailable(why),
        })?;
        self.cache_entry(sha256, stored.entry);
        Ok(PutOutcome { hash, size, deduplicated: stored.deduplicated })
    }

    /// Stores a block of an object upload (the S3 layer): it takes no reference, the
    /// object version naming it adds one in the same Raft entry as the version, so a put
    /// that dies half-way leaves unreferenced blocks (garbage) and never a reference
    /// without its version. A block already indexed is not stored again unless `fresh`
    /// (the namespace found it gone). Returns its key.
    pub async fn store_object_block(&self, bytes: Bytes, fresh: bool) -> Result<[u8; 32], BlockError> {
        let size = bytes.len() as u64;
        if size > self.block_size_max_bytes {
            return Err(BlockError::TooLarge { size_bytes: size, limit_bytes: self.block_size_max_bytes });
        }
        let started = Instant::now();
        let (sha256, bytes) = sha256_of(bytes).await?;
        if fresh {
            lock(&self.index).remove(&sha256);
        }
        if self.lookup_before_store(&sha256, size).await?.is_some() {
            self.metrics.dedup_hits.add(1);
            return Ok(sha256);
        }
        self.store_unreferenced(sha256, bytes, None, started).await?;
        Ok(sha256)
    }

    /// Stores the only block of an object upload, `sha256` its key, and commits its index
    /// entry and `version` (which names it) in one Raft entry. `None` when the block is
    /// indexed already (nothing stored: the version is committed by itself); else the
    /// version's result (added, or why not: the block is then unreferenced garbage).
    pub async fn store_object_version(
        &self,
        sha256: [u8; 32],
        bytes: Bytes,
        version: mpb::PutVersionOp,
    ) -> Result<Option<mpb::VersionResult>, BlockError> {
        let size = bytes.len() as u64;
        if size > self.block_size_max_bytes {
            return Err(BlockError::TooLarge { size_bytes: size, limit_bytes: self.block_size_max_bytes });
        }
        let started = Instant::now();
        if self.lookup_before_store(&sha256, size).await?.is_some() {
            self.metrics.dedup_hits.add(1);
            return Ok(None);
        }
        match self.store_unreferenced(sha256, bytes, Some(version), started).await? {
            Some(result) => Ok(Some(result)),
            None => Err(BlockError::Unavailable("the master answered no result for the version".into())),
        }
    }

    /// Appends a block of an object upload (its entry takes no reference) and commits its
    /// index entry, with `version` in the same Raft entry when given; counts the put. The
    /// version's result, if one was given.
    async fn store_unreferenced(
        &self,
        sha256: [u8; 32],
        bytes: Bytes,
        version: Option<mpb::PutVersionOp>,
        started: Instant,
    ) -> Result<Option<mpb::VersionResult>, BlockError> {
        let size = bytes.len() as u64;
        let sums = BlockSums {
            sha256,
            digest: read_digest(&sha256, &bytes),
            crc32: crc32fast::hash(&bytes),
            unreferenced: true,
            relocate_from: 0,
        };
        let stored = match version {
            Some(v) => self.writers.store_with_version(sums, bytes, v).await,
            None => self.writers.store(sums, bytes).await,
        }
        .map_err(|e| match e {
            StoreError::Retry(why) | StoreError::Fatal(why) => BlockError::Unavailable(why),
        })?;
        self.cache_entry(sha256, stored.entry);
        if stored.deduplicated {
            self.metrics.dedup_hits.add(1);
        } else {
            self.watcher.note_put(sha256);
        }
        self.metrics.puts_ok.add(1);
        self.metrics.put_bytes.add(size);
        self.metrics.put_latency.observe(started.elapsed());
        Ok(stored.version)
    }

    /// Rewrites a block out of volume `from` for compaction: reads it (verified), appends it
    /// to an open volume and commits it with a relocation, so its entry moves only if it
    /// still points into `from`. Returns the bytes moved (0: it had moved or gone already).
    pub async fn relocate(&self, hash: &[u8; 32], from: u64) -> Result<u64, BlockError> {
        lock(&self.index).remove(hash);
        let Some(entry) = self.lookup(hash).await? else { return Ok(0) };
        if entry.volume_id != from {
            return Ok(0);
        }
        // Appended from one buffer (the writers batch whole payloads).
        let bytes = self.get_inner(hash).await?.into_bytes();
        let size = bytes.len() as u64;
        let sums = BlockSums {
            sha256: *hash,
            digest: read_digest(hash, &bytes),
            crc32: crc32fast::hash(&bytes),
            unreferenced: false,
            relocate_from: from,
        };
        match self.writers.store(sums, bytes).await {
            Ok(stored) => {
                self.cache_entry(*hash, stored.entry);
                Ok(size)
            }
            Err(StoreError::Retry(why) | StoreError::Fatal(why)) => {
                lock(&self.index).remove(hash);
                Err(BlockError::Unavailable(why))
            }
        }
    }

    /// Remembers index entries the master handed out with an object version (its blocks'
    /// gets then skip the lookup).
    pub fn note_entries(&self, entries: Vec<mpb::IndexEntry>) {
        for e in entries {
            if let Ok(hash) = <[u8; 32]>::try_from(e.hash.as_slice()) {
                self.cache_entry(hash, e);
            }
        }
    }

    /// The block's length as its cached index entry gives it, if one is cached (asks no
    /// master).
    pub fn cached_len_bytes(&self, hash: &[u8; 32]) -> Option<u64> {
        lock(&self.index).peek(hash, |cached| u64::from(cached.entry.payload_bytes))
    }

    /// Forgets cached index entries (blocks the namespace found missing).
    pub fn forget_entries(&self, hashes: &[[u8; 32]]) {
        let mut index = lock(&self.index);
        for h in hashes {
            index.remove(h);
        }
    }

    /// The block's bytes, verified against its key, with their share of the get byte
    /// budget (waited for once the index gives the block's size).
    pub async fn get(&self, hash: &[u8; 32]) -> Result<Got, BlockError> {
        let started = Instant::now();
        let result = self.get_inner(hash).await;
        self.count_get(result.as_ref().map(|got| (got.bytes.len(), got.degraded)), started);
        result
    }

    /// [`Blocks::get`] counted in no metric: a read that may be dropped unused (an S3
    /// read-ahead). The caller counts it with [`Blocks::count_getting`] once it answers with
    /// it.
    pub async fn get_uncounted(&self, hash: &[u8; 32]) -> Result<Got, BlockError> {
        self.get_inner(hash).await
    }

    /// [`Blocks::get`], the bytes of a large block of a replicated volume handed on as they
    /// arrive (see [`cellar_volume_api::streamed`]); others are read whole. Metrics count
    /// an arriving block when its last byte has been handed on.
    pub async fn get_streamed(&self, hash: &[u8; 32]) -> Result<Getting, BlockError> {
        let started = Instant::now();
        let mut result = self.get_streamed_uncounted(hash, started).await;
        match &mut result {
            Ok(getting) => self.count_getting(getting, started),
            Err(e) => self.count_get(Err(e), started),
        }
        result
    }

    /// [`Blocks::get_streamed`] counted in no metric until the caller answers with it
    /// ([`Blocks::count_getting`]): a read that may be dropped unused (an S3 read-ahead),
    /// which then counts as nothing. `started` is when the get began, for its latency.
    pub async fn get_streamed_uncounted(
        &self,
        hash: &[u8; 32],
        started: Instant,
    ) -> Result<Getting, BlockError> {
        self.fresh_on_failure(hash, || self.open_streamed(hash, started)).await
    }

    /// Counts a get answered with `getting`, begun at `started` (see
    /// [`Blocks::get_streamed_uncounted`]); an arriving block counts its end (done, cut
    /// short or abandoned) itself from now on.
    pub fn count_getting(&self, getting: &mut Getting, started: Instant) {
        match getting {
            Getting::Whole(got) => self.count_get(Ok((got.bytes.len(), got.degraded)), started),
            Getting::Arriving(arriving) => {
                arriving.counted = true;
                self.metrics.streamed_gets.add(1);
            }
        }
    }

    fn count_get(&self, result: Result<(usize, bool), &BlockError>, started: Instant) {
        match result {
            Ok((len, degraded)) => {
                self.metrics.gets_ok.add(1);
                self.metrics.get_bytes.add(len as u64);
                if degraded {
                    self.metrics.degraded_reads.add(1);
                }
                self.metrics.get_latency.observe(started.elapsed());
            }
            Err(BlockError::NotFound(_)) => self.metrics.gets_not_found.add(1),
            Err(_) => self.metrics.gets_failed.add(1),
        }
    }

    /// `read()` of the block; when it fails with a cached index entry, the entry is asked
    /// afresh and, if it moved, `read()` again.
    async fn fresh_on_failure<T, F, Fut>(&self, hash: &[u8; 32], read: F) -> Result<T, BlockError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, BlockError>>,
    {
        let cached = lock(&self.index).contains_key(hash);
        match read().await {
            // A cached entry may be stale: the block may have been moved by compaction (and
            // its old volume reclaimed). Asked afresh, a moved entry is read where it is now.
            Err(BlockError::Unavailable(why)) if cached => {
                let before = lock(&self.index).remove(hash);
                let fresh = self.lookup(hash).await?;
                match (before, fresh) {
                    (Some(Cached { entry: old, .. }), Some(new))
                        if (old.volume_id, old.offset_bytes) != (new.volume_id, new.offset_bytes) =>
                    {
                        read().await
                    }
                    _ => Err(BlockError::Unavailable(why)),
                }
            }
            other => other,
        }
    }

    async fn get_inner(&self, hash: &[u8; 32]) -> Result<Got, BlockError> {
        self.fresh_on_failure(hash, || self.get_once(hash)).await
    }

    /// The block's index entry, key, record length, budget share and volume, for a read.
    async fn prepare_read(
        &self,
        hash: &[u8; 32],
    ) -> Result<(mpb::IndexEntry, BlockKey, u32, OwnedSemaphorePermit, mpb::Volume), BlockError> {
        let entry = self.lookup(hash).await?.ok_or_else(|| BlockError::NotFound(hex::encode(hash)))?;
        let key = BlockKey::with_digest_field(*hash, &entry.digest)
            .map_err(|e| BlockError::Unavailable(format!("index entry of {}: {e}", hex::encode(hash))))?;
        let record = record_bytes(entry.payload_bytes)?;
        let held = self.hold_get_bytes(record).await;
        let v = self.volume(entry.volume_id, false).await?;
        Ok((entry, key, record, held, v))
    }

    async fn get_once(&self, hash: &[u8; 32]) -> Result<Got, BlockError> {
        let (entry, key, record, held, v) = self.prepare_read(hash).await?;
        // The reader checks a (possibly stale) cached record against the master's when
        // the read fails or an extent is missing, and hands back the newer one.
        match self.reader.read(&v, &key, entry.offset_bytes, record).await {
            Ok(read) => Ok(self.got(read, held)),
            Err(e) => {
                lock(&self.volumes).remove(&entry.volume_id);
                Err(BlockError::Unavailable(e.message().to_string()))
            }
        }
    }

    fn got(&self, read: BlockRead, held: OwnedSemaphorePermit) -> Got {
        if let Some(newer) = read.newer_volume {
            self.cache_volume(newer);
        }
        Got { bytes: holding(read.payload, held), degraded: read.degraded }
    }

    async fn open_streamed(&self, hash: &[u8; 32], started: Instant) -> Result<Getting, BlockError> {
        let (entry, key, record, held, v) = self.prepare_read(hash).await?;
        let payload_bytes = entry.payload_bytes as usize;
        match self.reader.read_streamed(&v, &key, entry.offset_bytes, record, payload_bytes).await {
            Ok(StreamedRead::Whole(read)) => Ok(Getting::Whole(self.got(read, held))),
            Ok(StreamedRead::Stream(stream)) => Ok(Getting::Arriving(Arriving {
                stream,
                _held: held,
                metrics: self.metrics.clone(),
                started,
                handed_bytes: 0,
                ended: false,
                counted: false,
            })),
            Err(e) => {
                lock(&self.volumes).remove(&entry.volume_id);
                Err(BlockError::Unavailable(e.message().to_string()))
            }
        }
    }

    /// The block's size, from the index.
    pub async fn size(&self, hash: &[u8; 32]) -> Result<u64, BlockError> {
        let entry = self.lookup(hash).await?.ok_or_else(|| BlockError::NotFound(hex::encode(hash)))?;
        Ok(u64::from(entry.payload_bytes))
    }

    /// Where the block is: its index entry and its volume (read fresh).
    pub async fn stat(&self, hash: &[u8; 32]) -> Result<BlockStat, BlockError> {
        lock(&self.index).remove(hash);
        let entry = self.lookup(hash).await?.ok_or_else(|| BlockError::NotFound(hex::encode(hash)))?;
        let volume = self.volume(entry.volume_id, true).await?;
        Ok(BlockStat { entry, volume })
    }

    /// Drops one reference to the block.
    pub async fn delete(&self, hash: &[u8; 32]) -> Result<u64, BlockError> {
        lock(&self.index).remove(hash);
        // Exactly once: a retry after a lost answer must not drop a second reference.
        let request = mpb::LookupRequest { hashes: vec![hash.to_vec()], request_id: None };
        let resp = self
            .cluster
            .master()
            .call_once(request, |mut c, r| async move { c.drop_references(r).await })
            .await
            .map_err(unavailable)?;
        resp.entries.first().map(|e| e.references).ok_or_else(|| BlockError::NotFound(hex::encode(hash)))
    }
}
