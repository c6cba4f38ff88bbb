//! The S3 operations (s3s's `S3` trait) over the namespace in the master and the block
//! path: objects are cut into blocks of at most 4 MiB and stored unreferenced, then one
//! namespace write commits the version and its blocks' references together; an object of
//! one block commits its index entry and its version in one Raft entry
//! ([`crate::blocks::Blocks::store_object_version`]).

use std::collections::HashMap;
use std::ops::Range as ByteRange;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use bytes::Bytes;
use cellar_master_api::client::{ClientError, MasterClient};
use cellar_proto::master as pb;
use cellar_proto::master::ns_write_request::Op;
use cellar_proto::master::ns_write_response::Result as Written;
use futures::StreamExt;
use md5::Digest as _;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::body::{self, ALGORITHMS, Ingested};
use crate::blocks::{Arriving, Blocks, Getting};
use cellar_volume_api::cache::TwoGenerations;
use cellar_volume_api::pieces::Pieces;

/// Largest single PutObject or part (S3's limit).
pub const PUT_MAX_BYTES: u64 = 5 << 30;
/// Objects deleted by one DeleteObjects at most (S3's limit).
pub const DELETE_MANY_MAX: usize = 1000;
/// Blocks read ahead of the one being sent by a get.
pub const GET_READ_AHEAD_BLOCKS: usize = 2;

/// Longest object key (S3's limit).
pub const KEY_MAX_BYTES: usize = 1024;
/// User metadata at most, names and values together (S3's limit).
pub const METADATA_MAX_BYTES: usize = 2048;

/// Checks a new object's key and metadata before any byte is stored.
fn check_object(key: &str, metadata: &Option<Metadata>) -> S3Result<()> {
    if key.len() > KEY_MAX_BYTES {
        return Err(s3_error!(KeyTooLongError, "a key is at most {KEY_MAX_BYTES} bytes"));
    }
    let size: usize = metadata.iter().flatten().map(|(k, v)| k.len() + v.len()).sum();
    if size > METADATA_MAX_BYTES {
        return Err(s3_error!(MetadataTooLarge, "user metadata is at most {METADATA_MAX_BYTES} bytes"));
    }
    Ok(())
}

/// How long PutObject's early check trusts a bucket it saw exist (the version's commit
/// checks again, so a bucket deleted meanwhile still refuses the put, NoSuchBucket).
pub const BUCKET_SEEN_TRUST: Duration = Duration::from_secs(10);
/// Buckets remembered at most by that check (all forgotten when full).
pub const BUCKETS_SEEN_MAX: usize = 4096;

/// The S3 API of a frontend.
pub struct CellarS3 {
    blocks: Arc<Blocks>,
    /// Buckets PutObject saw exist, and when.
    buckets_seen: Mutex<HashMap<String, Instant>>,
    /// The block of each one-block object as this frontend last wrote or read its latest
    /// version, by [`name_key`]: a hint, never an answer (see [`CellarS3::read_ahead`]).
    latest_blocks: Mutex<TwoGenerations<u64, [u8; 32]>>,
}

/// A block read ahead (see [`CellarS3::read_ahead`]): read whole or arriving, and when its
/// read began (for the get metrics, which count it only if it is used).
type ReadAhead = (Getting, Instant);

/// The key of `bucket`/`key` in [`CellarS3`]'s read-ahead guesses: a 64-bit hash (no
/// string kept or allocated per get). Two names sharing one only make a wrong guess, which
/// the masters' answer drops like any other.
fn name_key(bucket: &str, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (bucket, key).hash(&mut h);
    h.finish()
}

/// A block read ahead (see [`CellarS3::read_ahead`]) of at most this size is read whole
/// before the answer starts; a larger one through [`Blocks::get_streamed`], which hands a
/// large record of a replicated volume on as it arrives (and reads others whole).
pub const READ_AHEAD_WHOLE_MAX_BYTES: u64 = 256 << 10;

/// A block read ahead as it arrives is used only if the masters answered within this time
/// of its read's start: the stream's read deadline counts from then, and a stream opened
/// long before its bytes are asked for could run out of it half-way through the answer.
/// Older, it is dropped and the block read the usual way.
pub const READ_AHEAD_STREAM_AGE_MAX: Duration = Duration::from_secs(1);

/// Objects whose block [`CellarS3`] remembers for reading ahead, at most.
pub const READ_AHEAD_KEYS_MAX: usize = 16_384;

impl CellarS3 {
    /// Over the frontend's block path (and its master client).
    pub fn new(blocks: Arc<Blocks>) -> CellarS3 {
        CellarS3 {
            blocks,
            buckets_seen: Mutex::new(HashMap::new()),
            latest_blocks: Mutex::new(TwoGenerations::new(READ_AHEAD_KEYS_MAX)),
        }
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, TwoGenerations<u64, [u8; 32]>> {
        self.latest_blocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers (or forgets) the block of `bucket`/`key`'s latest version: remembered when
    /// the object is one whole block (`size_bytes` its length).
    fn note_latest(&self, bucket: &str, key: &str, size_bytes: u64, blocks: &[pb::BlockRef]) {
        let one = match blocks {
            [only] if u64::from(only.length_bytes) == size_bytes => {
                <[u8; 32]>::try_from(only.hash.as_slice()).ok()
            }
            _ => None,
        };
        let name = name_key(bucket, key);
        match one {
            Some(hash) => self.latest().insert(name, hash),
            None => {
                self.latest().remove(&name);
            }
        }
    }

    /// GetObject of a latest version, whole: the version from the masters and, at the same
    /// time, the block this frontend last saw that object made of, if its index entry is
    /// cached (so the read asks no master): read whole up to [`READ_AHEAD_WHOLE_MAX_BYTES`],
    /// above through the streamed read (a large record of a replicated volume: its first
    /// bytes are on their way while the masters answer, the rest follows while the answer
    /// is written). The block is only a guess: the version the masters answer decides. A
    /// version not made of exactly that block drops the read at once (cancelled if still
    /// going, its stream closed: nothing waits on a wrong guess; what it cost is the
    /// volume server's read and the bytes it sent, and the get byte budget's share held
    /// meanwhile); else the read is the get's (its bytes checked against the key as every
    /// read's are; a failed one, or a stream older than [`READ_AHEAD_STREAM_AGE_MAX`], is
    /// read again the usual way). So a block comes back only with a version that is not a
    /// delete marker and is made of exactly that block. A read dropped unused counts as no
    /// get.
    async fn read_ahead(
        &self,
        bucket: &str,
        key: &str,
    ) -> (S3Result<pb::GetVersionResponse>, Option<ReadAhead>) {
        let guess = self.latest().get(&name_key(bucket, key));
        let Some((hash, len_bytes)) = guess.and_then(|h| Some((h, self.blocks.cached_len_bytes(&h)?))) else {
            return (self.version(bucket, key, None, true).await, None);
        };
        let ask = self.version(bucket, key, None, true);
        let started = Instant::now();
        let read = async {
            if len_bytes <= READ_AHEAD_WHOLE_MAX_BYTES {
                self.blocks.get_uncounted(&hash).await.map(Getting::Whole)
            } else {
                self.blocks.get_streamed_uncounted(&hash, started).await
            }
        };
        tokio::pin!(ask, read);
        let mut read_done = None;
        let version = loop {
            tokio::select! {
                v = &mut ask => break v,
                r = &mut read, if read_done.is_none() => read_done = Some(r),
            }
        };
        let named = version.as_ref().ok().and_then(|r| r.version.as_ref()).is_some_and(|v| {
            !v.delete_marker
                && v.fields.as_ref().is_some_and(|f| {
                    matches!(f.blocks.as_slice(), [only] if only.hash.as_slice() == hash.as_slice()
                        && u64::from(only.length_bytes) == f.size_bytes)
                })
        });
        let block = match (named, read_done) {
            (false, _) => None,
            (true, Some(done)) => done.ok(),
            (true, None) => read.await.ok(),
        };
        let block = block.filter(|getting| match getting {
            Getting::Whole(_) => true,
            Getting::Arriving(_) => started.elapsed() <= READ_AHEAD_STREAM_AGE_MAX,
        });
        if block.is_none() {
            self.blocks.metrics.s3_read_ahead_discarded.add(1);
        }
        (version, block.map(|got| (got, started)))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.buckets_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// PutObject's check that its bucket exists before the body is read: a bucket seen
    /// within [`BUCKET_SEEN_TRUST`] is not asked again (one master round trip and a
    /// linearizable read fewer per put); the version's commit is the check that counts.
    async fn bucket_for_put(&self, name: &str) -> S3Result<()> {
        if self.seen().get(name).is_some_and(|at| at.elapsed() < BUCKET_SEEN_TRUST) {
            return Ok(());
        }
        self.bucket(name).await?;
        let mut seen = self.seen();
        if seen.len() >= BUCKETS_SEEN_MAX {
            seen.clear();
        }
        seen.insert(name.to_string(), Instant::now());
        Ok(())
    }

    /// Forgets that `name` exists (deleted, or a commit found it gone).
    fn forget_bucket(&self, name: &str) {
        self.seen().remove(name);
    }

    fn master(&self) -> &MasterClient {
        self.blocks.cluster().master()
    }

    async fn write(&self, op: Op) -> S3Result<Written> {
        let request = pb::NsWriteRequest { request_id: None, op: Some(op) };
        let resp = self.master().call_once(request, |mut c, r| async move { c.ns_write(r).await }).await;
        resp.map_err(ns_error)?.result.ok_or_else(|| s3_error!(InternalError, "the master answered nothing"))
    }

    async fn bucket(&self, name: &str) -> S3Result<pb::Bucket> {
        let name = name.to_string();
        self.master()
            .call(|mut c| {
                let name = name.clone();
                async move { c.ns_get_bucket(pb::GetBucketRequest { name }).await }
            })
            .await
            .map_err(ns_error)
    }

    async fn version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        with_entries: bool,
    ) -> S3Result<pb::GetVersionResponse> {
        let r = pb::GetVersionRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: version_id.map(str::to_string),
            with_entries,
        };
        self.master()
            .call(|mut c| {
                let r = r.clone();
                async move { c.ns_get_version(r).await }
            })
            .await
            .map_err(ns_error)
    }

    async fn list(&self, r: pb::ListObjectsRequest) -> S3Result<pb::ListObjectsResponse> {
        self.master()
            .call(|mut c| {
                let r = r.clone();
                async move { c.ns_list_objects(r).await }
            })
            .await
            .map_err(ns_error)
    }

    /// Commits a version (or a part) whose blocks were just stored; when the namespace
    /// finds a block collected meanwhile, a single-block body is stored again and the
    /// commit retried once, a longer one is answered SlowDown (the client retries).
    async fn commit_stored(&self, ingested: &Ingested, op: impl Fn() -> Op) -> S3Result<Written> {
        match self.write(op()).await {
            Err(e) if e.message().is_some_and(|m| m.starts_with("MissingBlocks")) => {
                let hashes: Vec<[u8; 32]> =
                    ingested.blocks.iter().filter_map(|b| b.hash.as_slice().try_into().ok()).collect();
                self.blocks.forget_entries(&hashes);
                match &ingested.single {
                    Some(bytes) => {
                        self.blocks
                            .store_object_block(bytes.clone(), true)
                            .await
                            .map_err(|e| s3_error!(ServiceUnavailable, "storing a block again: {e}"))?;
                        self.write(op()).await
                    }
                    None => Err(s3_error!(SlowDown, "a block of this upload was collected meanwhile; retry")),
                }
            }
            other => other,
        }
    }

    /// The pieces of `range` of the object made of `refs`.
    fn pieces(refs: Vec<pb::BlockRef>, range: ByteRange<u64>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for b in refs {
            let (start, end) = (at, at + u64::from(b.length_bytes));
            at = end;
            if end <= range.start || start >= range.end {
                continue;
            }
            let from = range.start.saturating_sub(start) as usize;
            let to = (range.end.min(end) - start) as usize;
            let whole = from == 0 && to as u64 == u64::from(b.length_bytes);
            pieces.push(Piece { hash: b.hash, from, to, whole });
        }
        pieces
    }

    /// The body of `range` of the object made of `refs`: a range within one block is read
    /// before the answer starts (no task, no channel: most small objects; a failed read is
    /// an S3 error, not a body cut short) unless it is a whole large block, which is handed
    /// on as it arrives (see [`Blocks::get_streamed`]); a longer range is streamed.
    async fn body(&self, refs: Vec<pb::BlockRef>, range: ByteRange<u64>) -> S3Result<StreamingBlob> {
        let pieces = Self::pieces(refs, range);
        let [piece] = pieces.as_slice() else { return Ok(self.stream(pieces)) };
        let hash = piece.hash()?;
        let unavailable = |e: crate::blocks::BlockError| match e {
            crate::blocks::BlockError::NotFound(_) => {
                s3_error!(InternalError, "a block of the object is missing: {e}")
            }
            e => s3_error!(ServiceUnavailable, "reading a block of the object: {e}"),
        };
        let got = if piece.whole {
            match self.blocks.get_streamed(&hash).await.map_err(unavailable)? {
                Getting::Whole(got) => got,
                Getting::Arriving(arriving) => return Ok(drain(arriving)),
            }
        } else {
            self.blocks.get(&hash).await.map_err(unavailable)?
        };
        block_body(got, piece.from..piece.to)
    }

    /// Streams `pieces` (see [`Self::pieces`]) of an object.
    fn stream(&self, pieces: Vec<Piece>) -> StreamingBlob {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(GET_READ_AHEAD_BLOCKS);
        let blocks = self.blocks.clone();
        tokio::spawn(async move {
            let mut fetched = futures::stream::iter(pieces)
                .map(|piece| {
                    let blocks = blocks.clone();
                    async move {
                        let hash = piece.hash().map_err(|e| std::io::Error::other(e.to_string()))?;
                        // The block's share of the get byte budget goes with its bytes (read
                        // ahead, in the channel, in hyper's write queue) until they are
                        // written: what an object's get holds is within the budget.
                        let failed = |e: crate::blocks::BlockError| std::io::Error::other(e.to_string());
                        let got = if piece.whole {
                            match blocks.get_streamed(&hash).await.map_err(failed)? {
                                Getting::Whole(got) => got,
                                Getting::Arriving(arriving) => return Ok(Fetched::Arriving(arriving)),
                            }
                        } else {
                            blocks.get(&hash).await.map_err(failed)?
                        };
                        got.bytes
                            .slice(piece.from..piece.to)
                            .map(Fetched::Whole)
                            .ok_or_else(|| std::io::Error::other("a block is shorter than its object says"))
                    }
                })
                .buffered(GET_READ_AHEAD_BLOCKS);
            while let Some(piece) = fetched.next().await {
                let sent = match piece {
                    Ok(Fetched::Whole(pieces)) => send_all(&tx, pieces).await,
                    Ok(Fetched::Arriving(arriving)) => send_arriving(&tx, arriving).await,
                    Err(e) => Err(Some(e)),
                };
                match sent {
                    Ok(()) => {}
                    // The client went away.
                    Err(None) => return,
                    Err(Some(e)) => {
                        tracing::warn!(error = %e, "an S3 get stopped half-way");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// A piece of an object: bytes `from..to` of a block, and whether that is the whole block.
struct Piece {
    hash: Vec<u8>,
    from: usize,
    to: usize,
    whole: bool,
}

impl Piece {
    fn hash(&self) -> S3Result<[u8; 32]> {
        self.hash.as_slice().try_into().map_err(|_| s3_error!(InternalError, "a block hash is not 32 bytes"))
    }
}

/// The body of bytes `range` of a block read whole. The slice keeps the block's share of the
/// get budget until it is written.
fn block_body(got: crate::blocks::Got, range: ByteRange<usize>) -> S3Result<StreamingBlob> {
    let Some(part) = got.bytes.slice(range) else {
        return Err(s3_error!(InternalError, "a block is shorter than its object says"));
    };
    let parts = part.into_parts().into_iter().map(Ok::<Bytes, std::io::Error>);
    Ok(StreamingBlob::wrap(futures::stream::iter(parts)))
}

/// A block fetched for an object's get: read whole (the piece of it the get wants), or
/// arriving.
enum Fetched {
    Whole(Pieces),
    Arriving(Arriving),
}

type BodySender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Sends `pieces` on; `Err(None)` when the client went away.
async fn send_all(tx: &BodySender, pieces: Pieces) -> Result<(), Option<std::io::Error>> {
    for part in pieces.into_parts() {
        tx.send(Ok(part)).await.map_err(|_| None)?;
    }
    Ok(())
}

/// Sends an arriving block on as it arrives; `Err(Some(e))` when it was cut short.
async fn send_arriving(tx: &BodySender, mut arriving: Arriving) -> Result<(), Option<std::io::Error>> {
    loop {
        match arriving.next().await {
            Ok(Some(piece)) => tx.send(Ok(piece)).await.map_err(|_| None)?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Some(std::io::Error::other(e.to_string()))),
        }
    }
}

/// The body of one arriving block (a task hands it on through a channel: the body must be
/// `Sync`).
fn drain(arriving: Arriving) -> StreamingBlob {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(GET_READ_AHEAD_BLOCKS);
    tokio::spawn(async move {
        if let Err(Some(e)) = send_arriving(&tx, arriving).await {
            tracing::warn!(error = %e, "an S3 get stopped half-way");
            let _ = tx.send(Err(e)).await;
        }
    });
    StreamingBlob::wrap(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A master refusal or failure as an S3 error.
fn ns_error(e: ClientError) -> S3Error {
    match &e {
        ClientError::Refused { code, message, .. } => ns_refusal(code, message.clone()),
        _ => S3Error::with_message(S3ErrorCode::ServiceUnavailable, e.to_string()),
    }
}

/// The S3 error of a namespace operation the master refused with `code`.
fn ns_refusal(code: &str, message: String) -> S3Error {
    let code = match code {
        "MissingBlocks" => {
            return S3Error::with_message(S3ErrorCode::Custom("MissingBlocks".into()), message);
        }
        "InvalidArgument" | "BAD_REQUEST" => S3ErrorCode::InvalidArgument,
        "KeyExists" | "NoSuchAccessKey" => S3ErrorCode::InvalidArgument,
        other => other.parse().unwrap_or(S3ErrorCode::InternalError),
    };
    S3Error::with_message(code, message)
}

/// What a version committed with its block came to.
fn written_of(result: pb::VersionResult) -> S3Result<Written> {
    match result.written {
        Some(w) => w.result.ok_or_else(|| s3_error!(InternalError, "the master answered nothing")),
        None => Err(ns_refusal(&result.error_code, result.detail)),
    }
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn unix_ms(t: &Timestamp) -> u64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

fn etag_of(quoted: &str) -> ETag {
    ETag::Strong(quoted.trim_matches('"').to_string())
}

fn fields(v: &pb::Version) -> pb::VersionFields {
    v.fields.clone().unwrap_or_default()
}

fn to_pairs(items: impl IntoIterator<Item = (String, String)>) -> Vec<pb::Pair> {
    items.into_iter().map(|(name, value)| pb::Pair { name, value }).collect()
}

fn metadata_pairs(m: Option<Metadata>) -> Vec<pb::Pair> {
    let mut items: Vec<(String, String)> =
        m.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    items.sort();
    to_pairs(items)
}

fn metadata_of(items: &[pb::Pair]) -> Option<Metadata> {
    if items.is_empty() {
        return None;
    }
    Some(items.iter().map(|p| (p.name.clone(), p.value.clone())).collect())
}

/// Tags from an `x-amz-tagging` header (URL-encoded `k=v&k2=v2`).
fn tags_of_header(header: Option<&str>) -> S3Result<Vec<pb::Pair>> {
    let Some(h) = header else { return Ok(Vec::new()) };
    let parsed: Vec<(String, String)> = serde_urlencoded::from_str(h)
        .map_err(|_| s3_error!(InvalidArgument, "the tagging header is not URL-encoded pairs"))?;
    Ok(to_pairs(parsed))
}

fn tag_set(items: &[pb::Pair]) -> TagSet {
    items.iter().map(|p| Tag { key: Some(p.name.clone()), value: Some(p.value.clone()) }).collect()
}

/// The checksum algorithms a request wants computed: named in `x-amz-checksum-algorithm`
/// or `x-amz-sdk-checksum-algorithm`, sent as `x-amz-checksum-*`, or announced in
/// `x-amz-trailer`.
fn wanted_algorithms(headers: &http::HeaderMap, named: Option<&ChecksumAlgorithm>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |a: &str| {
        let a = a.trim().to_ascii_uppercase();
        if ALGORITHMS.contains(&a.as_str()) && !out.contains(&a) {
            out.push(a);
        }
    };
    if let Some(n) = named {
        add(n.as_str());
    }
    for name in ["x-amz-sdk-checksum-algorithm", "x-amz-checksum-algorithm"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            add(v);
        }
    }
    for (name, _) in headers {
        if let Some(a) = name.as_str().strip_prefix("x-amz-checksum-")
            && a != "algorithm"
            && a != "type"
        {
            add(a);
        }
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        for part in t.split(',') {
            if let Some(a) = part.trim().strip_prefix("x-amz-checksum-") {
                add(a);
            }
        }
    }
    out
}

/// The checksum values a request states, from its headers and (once the body is read) its
/// trailers.
fn stated_sums<T>(req: &S3Request<T>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut collect = |headers: &http::HeaderMap| {
        for (name, value) in headers {
            if let Some(a) = name.as_str().strip_prefix("x-amz-checksum-")
                && ALGORITHMS.contains(&a.to_ascii_uppercase().as_str())
                && let Ok(v) = value.to_str()
            {
                out.push((a.to_ascii_uppercase(), v.to_string()));
            }
        }
    };
    collect(&req.headers);
    if let Some(t) = &req.trailing_headers
        && let Some(h) = t.take()
    {
        collect(&h);
    }
    out
}

/// The values of CRC32, CRC32C, CRC64NVME, SHA1 and SHA256, in that order.
type SumFields = (Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

fn checksum_fields(sums: &[pb::Pair]) -> SumFields {
    let get = |a: &str| sums.iter().find(|p| p.name == a).map(|p| p.value.clone());
    (get("CRC32"), get("CRC32C"), get("CRC64NVME"), get("SHA1"), get("SHA256"))
}

/// A random upload id: 32 hex characters.
fn new_upload_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u32 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write_u32(std::process::id());
        h.write_u32(i);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Evaluates the conditional headers of a get or head against a version.
fn check_conditions(
    etag: &str,
    modified_ms: u64,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let ours = etag.trim_matches('"');
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(t) => t.value().trim_matches('"') == ours,
    };
    // Seconds: HTTP dates carry no milliseconds.
    let modified_s = modified_ms / 1000;
    if let Some(c) = if_match {
        if !matches(c) {
            return Err(s3_error!(PreconditionFailed, "If-Match does not match the ETag"));
        }
    } else if let Some(t) = if_unmodified_since
        && modified_s > unix_ms(t) / 1000
    {
        return Err(s3_error!(PreconditionFailed, "modified since the If-Unmodified-Since date"));
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
    } else if let Some(t) = if_modified_since
        && modified_s <= unix_ms(t) / 1000
    {
        return Err(S3Error::new(S3ErrorCode::NotModified));
    }
    Ok(())
}

fn versioning_status(v: i32) -> Option<BucketVersioningStatus> {
    match pb::Versioning::try_from(v) {
        Ok(pb::Versioning::Enabled) => {
            Some(BucketVersioningStatus::from_static(BucketVersioningStatus::ENABLED))
        }
        Ok(pb::Versioning::Suspended) => {
            Some(BucketVersioningStatus::from_static(BucketVersioningStatus::SUSPENDED))
        }
        _ => None,
    }
}

fn parse_copy_source(src: &CopySource) -> S3Result<(String, String, Option<String>)> {
    match src {
        CopySource::Bucket { bucket, key, version_id } => {
            Ok((bucket.to_string(), key.to_string(), version_id.as_ref().map(|v| v.to_string())))
        }
        _ => Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported")),
    }
}

/// `bytes=first-last` of an UploadPartCopy.
fn parse_copy_range(text: &str, size: u64) -> S3Result<ByteRange<u64>> {
    let bad = || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last");
    let spec = text.trim().strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let (first, last): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if first > last || last >= size {
        return Err(s3_error!(InvalidRange, "the copy range is outside the source object"));
    }
    Ok(first..last + 1)
}

fn list_token(next_key: &str) -> String {
    TOKEN.encode(next_key.as_bytes())
}

fn parse_token(token: &str) -> S3Result<String> {
    TOKEN
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "the continuation token is not valid"))
}

/// Percent-encodes a key for `encoding-type=url` listings: everything but unreserved
/// characters and '/'.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a listing names keys: URL-encoded when the request asks for it.
struct Names(bool);

impl Names {
    fn of(encoding: &Option<EncodingType>) -> Names {
        Names(encoding.as_ref().is_some_and(|e| e.as_str() == EncodingType::URL))
    }
    fn name(&self, text: &str) -> String {
        if self.0 { url_encode(text) } else { text.to_string() }
    }
    fn opt(&self, text: Option<String>) -> Option<String> {
        text.map(|t| self.name(&t))
    }
    fn prefixes(&self, items: &[String]) -> Vec<CommonPrefix> {
        items.iter().map(|p| CommonPrefix { prefix: Some(self.name(p)) }).collect()
    }
}

fn max_keys(m: Option<i32>) -> u32 {
    m.map_or(1000, |m| m.clamp(0, 1000) as u32)
}

#[async_trait::async_trait]
impl S3 for CellarS3 {
    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let resp = self
            .master()
            .call(|mut c| async move { c.ns_list_buckets(pb::ListBucketsRequest {}).await })
            .await
            .map_err(ns_error)?;
        let buckets = resp
            .buckets
            .iter()
            .map(|b| Bucket {
                name: Some(b.name.clone()),
                creation_date: Some(timestamp(b.created_unix_ms)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner { display_name: Some("cellar".into()), id: Some("cellar".into()) }),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket;
        self.write(Op::CreateBucket(pb::CreateBucketOp { name: name.clone() })).await?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.forget_bucket(&req.input.bucket);
        self.write(Op::DeleteBucket(pb::DeleteBucketOp { name: req.input.bucket })).await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        let input = req.input;
        let config = input
            .lifecycle_configuration
            .ok_or_else(|| s3_error!(MalformedXML, "no LifecycleConfiguration"))?;
        let rules = super::lifecycle::rules_of(config)?;
        self.write(Op::SetLifecycle(pb::SetLifecycleOp { bucket: input.bucket, rules })).await?;
        Ok(S3Response::new(PutBucketLifecycleConfigurationOutput::default()))
    }

    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let b = self.bucket(&req.input.bucket).await?;
        if b.lifecycle.is_empty() {
            return Err(s3_error!(NoSuchLifecycleConfiguration, "the bucket has no lifecycle configuration"));
        }
        Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
            rules: Some(super::lifecycle::rules_to_s3(&b.lifecycle)),
            ..Default::default()
        }))
    }

    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        self.write(Op::SetLifecycle(pb::SetLifecycleOp { bucket: req.input.bucket, rules: Vec::new() }))
            .await?;
        Ok(S3Response::new(DeleteBucketLifecycleOutput {}))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let status = req.input.versioning_configuration.status.as_ref().map(|s| s.as_str().to_string());
        let versioning = match status.as_deref() {
            Some(BucketVersioningStatus::ENABLED) => pb::Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => pb::Versioning::Suspended,
            _ => return Err(s3_error!(MalformedXML, "Status must be Enabled or Suspended")),
        };
        self.write(Op::SetVersioning(pb::SetVersioningOp {
            bucket: req.input.bucket,
            versioning: versioning.into(),
        }))
        .await?;
        Ok(S3Response::new(PutBucketVersioningOutput {}))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let b = self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: versioning_status(b.versioning),
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let algorithms = wanted_algorithms(&req.headers, req.input.checksum_algorithm.as_ref());
        let mut req = req;
        let input = &mut req.input;
        check_object(&input.key, &input.metadata)?;
        self.bucket_for_put(&input.bucket).await?;
        let tags = tags_of_header(input.tagging.as_deref())?;
        let body = input.body.take().unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let mut ingested =
            body::ingest(&self.blocks, body, &algorithms, PUT_MAX_BYTES, true, body::Origin::Client).await?;
        body::check_md5(input.content_md5.as_deref(), &ingested.md5)?;
        body::check_sums(&stated_sums(&req), &ingested.checksums)?;
        let input = &req.input;
        let fields = pb::VersionFields {
            size_bytes: ingested.size_bytes,
            etag: ingested.etag(),
            content_type: input.content_type.clone().unwrap_or_default(),
            metadata: metadata_pairs(input.metadata.clone()),
            tags,
            checksums: to_pairs(ingested.checksums.clone()),
            blocks: ingested.blocks.clone(),
        };
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let op =
            || pb::PutVersionOp { bucket: bucket.clone(), key: key.clone(), fields: Some(fields.clone()) };
        let written: S3Result<Written> = async {
            Ok(match ingested.unstored.take() {
                // One block not stored yet: its index entry and the version in one Raft entry.
                Some(only) => {
                    let result = self
                        .blocks
                        .store_object_version(only.sha256, only.bytes, op())
                        .await
                        .map_err(|e| s3_error!(ServiceUnavailable, "storing a block: {e}"))?;
                    drop(only.held);
                    match result {
                        Some(result) => written_of(result)?,
                        // Indexed already: the version goes by itself.
                        None => self.commit_stored(&ingested, || Op::PutVersion(op())).await?,
                    }
                }
                None => self.commit_stored(&ingested, || Op::PutVersion(op())).await?,
            })
        }
        .await;
        if written.as_ref().is_err_and(|e| *e.code() == S3ErrorCode::NoSuchBucket) {
            self.forget_bucket(&bucket);
        }
        let version_id = match written? {
            Written::Version(v) if v.version_id != "null" => Some(v.version_id),
            _ => None,
        };
        self.note_latest(&bucket, &key, ingested.size_bytes, &ingested.blocks);
        let sums = to_pairs(ingested.checksums.clone());
        let (crc32, crc32c, crc64, sha1, sha256) = checksum_fields(&sums);
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag_of(&ingested.etag())),
            version_id,
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = &req.input;
        if i.part_number.is_some() {
            return Err(s3_error!(NotImplemented, "GetObject by part number is not supported"));
        }
        let (resp, mut ahead) = if i.version_id.is_none() && i.range.is_none() {
            self.read_ahead(&i.bucket, &i.key).await
        } else {
            (self.version(&i.bucket, &i.key, i.version_id.as_deref(), true).await, None)
        };
        // A block read ahead comes only with a version made of it (see `read_ahead`).
        let resp = match resp {
            Ok(resp) => resp,
            Err(e) => {
                if *e.code() == S3ErrorCode::NoSuchKey {
                    self.latest().remove(&name_key(&i.bucket, &i.key));
                }
                return Err(e);
            }
        };
        let v = resp.version.ok_or_else(|| s3_error!(InternalError, "no version in the answer"))?;
        if v.delete_marker {
            if i.version_id.is_none() {
                self.latest().remove(&name_key(&i.bucket, &i.key));
            }
            return Err(s3_error!(MethodNotAllowed, "the version is a delete marker"));
        }
        let f = fields(&v);
        if i.version_id.is_none() && ahead.is_none() {
            // (A used guess is right already, and was refreshed when it was looked up.)
            self.note_latest(&i.bucket, &i.key, f.size_bytes, &f.blocks);
        }
        if let Err(e) = check_conditions(
            &f.etag,
            v.created_unix_ms,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        ) {
            if ahead.take().is_some() {
                self.blocks.metrics.s3_read_ahead_discarded.add(1);
            }
            return Err(e);
        }
        let (range, content_range) = match &i.range {
            None => (0..f.size_bytes, None),
            Some(r) => {
                let checked = r
                    .check(f.size_bytes)
                    .map_err(|_| s3_error!(InvalidRange, "the range is outside the object"))?;
                let cr = format!("bytes {}-{}/{}", checked.start, checked.end - 1, f.size_bytes);
                (checked, Some(cr))
            }
        };
        self.blocks.note_entries(resp.entries);
        let length = range.end - range.start;
        let body = match ahead {
            // Read ahead only without a Range: the whole object, its one block (of the
            // object's length: checked with the version's name of it).
            Some((mut getting, started)) => {
                self.blocks.metrics.s3_read_ahead_used.add(1);
                self.blocks.count_getting(&mut getting, started);
                match getting {
                    Getting::Whole(got) => block_body(got, 0..length as usize)?,
                    Getting::Arriving(arriving) => {
                        self.blocks.metrics.s3_read_ahead_streamed.add(1);
                        drain(arriving)
                    }
                }
            }
            None => self.body(f.blocks.clone(), range).await?,
        };
        let want_sums = i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED)
            && content_range.is_none();
        let (crc32, crc32c, crc64, sha1, sha256) =
            if want_sums { checksum_fields(&f.checksums) } else { (None, None, None, None, None) };
        let mut out = S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(length as i64),
            content_range,
            content_type: (!f.content_type.is_empty()).then(|| f.content_type.clone()),
            e_tag: Some(etag_of(&f.etag)),
            last_modified: Some(timestamp(v.created_unix_ms)),
            metadata: metadata_of(&f.metadata),
            version_id: (v.version_id != "null").then(|| v.version_id.clone()),
            accept_ranges: Some("bytes".into()),
            tag_count: (!f.tags.is_empty()).then_some(f.tags.len() as i32),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        });
        if i.range.is_some() {
            out.status = Some(http::StatusCode::PARTIAL_CONTENT);
        }
        Ok(out)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = &req.input;
        let resp = self.version(&i.bucket, &i.key, i.version_id.as_deref(), false).await?;
        let v = resp.version.ok_or_else(|| s3_error!(InternalError, "no version in the answer"))?;
        if v.delete_marker {
            return Err(s3_error!(MethodNotAllowed, "the version is a delete marker"));
        }
        let f = fields(&v);
        check_conditions(
            &f.etag,
            v.created_unix_ms,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        let want_sums = i.checksum_mode.as_ref().is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let (crc32, crc32c, crc64, sha1, sha256) =
            if want_sums { checksum_fields(&f.checksums) } else { (None, None, None, None, None) };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(f.size_bytes as i64),
            content_type: (!f.content_type.is_empty()).then(|| f.content_type.clone()),
            e_tag: Some(etag_of(&f.etag)),
            last_modified: Some(timestamp(v.created_unix_ms)),
            metadata: metadata_of(&f.metadata),
            version_id: (v.version_id != "null").then(|| v.version_id.clone()),
            accept_ranges: Some("bytes".into()),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        let written = self
            .write(Op::DeleteObject(pb::DeleteObjectOp {
                bucket: i.bucket,
                key: i.key,
                version_id: i.version_id,
            }))
            .await?;
        let (delete_marker, version_id) = match written {
            Written::Deleted(d) => (d.delete_marker, d.version_id),
            _ => (false, String::new()),
        };
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: delete_marker.then_some(true),
            version_id: (!version_id.is_empty()).then_some(version_id),
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > DELETE_MANY_MAX {
            return Err(s3_error!(MalformedXML, "at most {DELETE_MANY_MAX} objects per request"));
        }
        self.bucket(&i.bucket).await?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            let op = Op::DeleteObject(pb::DeleteObjectOp {
                bucket: i.bucket.clone(),
                key: o.key.clone(),
                version_id: o.version_id.clone(),
            });
            match self.write(op).await {
                Ok(Written::Deleted(d)) => {
                    if !quiet {
                        let marker_id =
                            (d.delete_marker && o.version_id.is_none()).then(|| d.version_id.clone());
                        deleted.push(DeletedObject {
                            key: Some(o.key),
                            version_id: o.version_id,
                            delete_marker: d.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(o.key),
                    message: e.message().map(str::to_string),
                    version_id: o.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let (src_bucket, src_key, src_version) = parse_copy_source(&i.copy_source)?;
        let resp = self.version(&src_bucket, &src_key, src_version.as_deref(), false).await?;
        let v = resp.version.ok_or_else(|| s3_error!(InternalError, "no version in the answer"))?;
        if v.delete_marker {
            return Err(s3_error!(NoSuchKey, "the source is a delete marker"));
        }
        let mut f = fields(&v);
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        check_object(&i.key, if replace { &i.metadata } else { &None })?;
        if replace {
            f.metadata = metadata_pairs(i.metadata.clone());
            f.content_type = i.content_type.clone().unwrap_or_default();
        } else if src_bucket == i.bucket && src_key == i.key && src_version.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object onto itself needs a change (MetadataDirective REPLACE)"
            ));
        }
        if i.tagging_directive.as_ref().is_some_and(|d| d.as_str() == TaggingDirective::REPLACE) {
            f.tags = tags_of_header(i.tagging.as_deref())?;
        }
        let written = self
            .write(Op::PutVersion(pb::PutVersionOp {
                bucket: i.bucket.clone(),
                key: i.key.clone(),
                fields: Some(f.clone()),
            }))
            .await?;
        let (version_id, created) = match written {
            Written::Version(nv) => ((nv.version_id != "null").then_some(nv.version_id), nv.created_unix_ms),
            _ => (None, 0),
        };
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag_of(&f.etag)),
                last_modified: Some(timestamp(created)),
                ..Default::default()
            }),
            version_id,
            copy_source_version_id: (v.version_id != "null").then_some(v.version_id),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let start_after = match &i.continuation_token {
            Some(t) => parse_token(t)?,
            None => i.start_after.clone().unwrap_or_default(),
        };
        let page = self
            .list(pb::ListObjectsRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone().unwrap_or_default(),
                start_after,
                max_keys: max_keys(i.max_keys),
                versions: false,
                version_id_marker: String::new(),
            })
            .await?;
        let names = Names::of(&i.encoding_type);
        let contents: Vec<Object> = page.versions.iter().map(|v| object_of(v, &names)).collect();
        let prefixes = names.prefixes(&page.common_prefixes);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: names.opt(i.prefix),
            delimiter: names.opt(i.delimiter),
            max_keys: Some(max_keys(i.max_keys) as i32),
            key_count: Some((contents.len() + prefixes.len()) as i32),
            continuation_token: i.continuation_token,
            next_continuation_token: page.truncated.then(|| list_token(&page.next_key)),
            is_truncated: Some(page.truncated),
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            start_after: names.opt(i.start_after),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let page = self
            .list(pb::ListObjectsRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone().unwrap_or_default(),
                start_after: i.marker.clone().unwrap_or_default(),
                max_keys: max_keys(i.max_keys),
                versions: false,
                version_id_marker: String::new(),
            })
            .await?;
        let names = Names::of(&i.encoding_type);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: names.opt(i.prefix),
            delimiter: names.opt(i.delimiter),
            marker: names.opt(i.marker),
            max_keys: Some(max_keys(i.max_keys) as i32),
            is_truncated: Some(page.truncated),
            next_marker: page.truncated.then(|| names.name(&page.next_key)),
            contents: Some(page.versions.iter().map(|v| object_of(v, &names)).collect()),
            common_prefixes: Some(names.prefixes(&page.common_prefixes)),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let i = req.input;
        let page = self
            .list(pb::ListObjectsRequest {
                bucket: i.bucket.clone(),
                prefix: i.prefix.clone().unwrap_or_default(),
                delimiter: i.delimiter.clone().unwrap_or_default(),
                start_after: i.key_marker.clone().unwrap_or_default(),
                max_keys: max_keys(i.max_keys),
                versions: true,
                version_id_marker: i.version_id_marker.clone().unwrap_or_default(),
            })
            .await?;
        let names = Names::of(&i.encoding_type);
        let (mut versions, mut markers) = (Vec::new(), Vec::new());
        for v in &page.versions {
            if v.delete_marker {
                markers.push(DeleteMarkerEntry {
                    is_latest: Some(v.is_latest),
                    key: Some(names.name(&v.key)),
                    last_modified: Some(timestamp(v.created_unix_ms)),
                    version_id: Some(v.version_id.clone()),
                    ..Default::default()
                });
            } else {
                let f = fields(v);
                versions.push(ObjectVersion {
                    e_tag: Some(etag_of(&f.etag)),
                    is_latest: Some(v.is_latest),
                    key: Some(names.name(&v.key)),
                    last_modified: Some(timestamp(v.created_unix_ms)),
                    size: Some(f.size_bytes as i64),
                    version_id: Some(v.version_id.clone()),
                    storage_class: Some(ObjectVersionStorageClass::from_static(
                        ObjectVersionStorageClass::STANDARD,
                    )),
                    ..Default::default()
                });
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: names.opt(i.prefix),
            delimiter: names.opt(i.delimiter),
            key_marker: names.opt(i.key_marker),
            version_id_marker: i.version_id_marker,
            max_keys: Some(max_keys(i.max_keys) as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.truncated.then(|| names.name(&page.next_key)),
            next_version_id_marker: page.truncated.then(|| page.next_version_id.clone()),
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(names.prefixes(&page.common_prefixes)),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        check_object(&i.key, &i.metadata)?;
        let upload_id = new_upload_id();
        let fields = pb::VersionFields {
            content_type: i.content_type.clone().unwrap_or_default(),
            metadata: metadata_pairs(i.metadata.clone()),
            tags: tags_of_header(i.tagging.as_deref())?,
            ..Default::default()
        };
        self.write(Op::CreateUpload(pb::CreateUploadOp {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            upload_id: upload_id.clone(),
            fields: Some(fields),
        }))
        .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(upload_id),
            checksum_algorithm: i.checksum_algorithm,
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let algorithms = wanted_algorithms(&req.headers, req.input.checksum_algorithm.as_ref());
        let mut req = req;
        let (bucket, key, upload_id, part_number) = (
            req.input.bucket.clone(),
            req.input.key.clone(),
            req.input.upload_id.clone(),
            req.input.part_number,
        );
        self.upload_exists(&bucket, &key, &upload_id).await?;
        let body = req.input.body.take().unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
        });
        let ingested =
            body::ingest(&self.blocks, body, &algorithms, PUT_MAX_BYTES, false, body::Origin::Client).await?;
        body::check_md5(req.input.content_md5.as_deref(), &ingested.md5)?;
        body::check_sums(&stated_sums(&req), &ingested.checksums)?;
        self.put_part(&bucket, &key, &upload_id, part_number, &ingested).await?;
        let sums = to_pairs(ingested.checksums.clone());
        let (crc32, crc32c, crc64, sha1, sha256) = checksum_fields(&sums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag_of(&ingested.etag())),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let i = req.input;
        self.upload_exists(&i.bucket, &i.key, &i.upload_id).await?;
        let (src_bucket, src_key, src_version) = parse_copy_source(&i.copy_source)?;
        let resp = self.version(&src_bucket, &src_key, src_version.as_deref(), true).await?;
        let v = resp.version.ok_or_else(|| s3_error!(InternalError, "no version in the answer"))?;
        if v.delete_marker {
            return Err(s3_error!(NoSuchKey, "the source is a delete marker"));
        }
        let f = fields(&v);
        let range = match &i.copy_source_range {
            Some(r) => parse_copy_range(r, f.size_bytes)?,
            None => 0..f.size_bytes,
        };
        self.blocks.note_entries(resp.entries);
        let body = self.stream(Self::pieces(f.blocks.clone(), range));
        let ingested =
            body::ingest(&self.blocks, body, &[], PUT_MAX_BYTES, false, body::Origin::CopySource).await?;
        let part = self.put_part(&i.bucket, &i.key, &i.upload_id, i.part_number, &ingested).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag_of(&ingested.etag())),
                last_modified: Some(timestamp(part)),
                ..Default::default()
            }),
            copy_source_version_id: (v.version_id != "null").then_some(v.version_id),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(MalformedXML, "the completion lists no parts"));
        }
        let mut md5s = md5::Md5::new();
        let mut parts = Vec::with_capacity(listed.len());
        for p in &listed {
            let number = p.part_number.ok_or_else(|| s3_error!(MalformedXML, "a part without a number"))?;
            let etag = p.e_tag.as_ref().map(|e| e.value().trim_matches('"').to_string()).unwrap_or_default();
            let digest = hex::decode(&etag).ok().filter(|d| d.len() == 16);
            let Some(digest) = digest else {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s ETag {etag:?} is not one this server gave"
                ));
            };
            md5s.update(&digest);
            parts.push(pb::CompletePart { part_number: number.max(0) as u32, etag: format!("\"{etag}\"") });
        }
        let etag = format!("\"{}-{}\"", hex::encode(md5s.finalize()), parts.len());
        let written = self
            .write(Op::CompleteUpload(pb::CompleteUploadOp {
                bucket: i.bucket.clone(),
                key: i.key.clone(),
                upload_id: i.upload_id.clone(),
                parts,
                etag: etag.clone(),
            }))
            .await?;
        let version_id = match written {
            Written::Version(v) if v.version_id != "null" => Some(v.version_id),
            _ => None,
        };
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            e_tag: Some(etag_of(&etag)),
            location: Some(format!("/{}/{}", i.bucket, i.key)),
            version_id,
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        self.write(Op::AbortUpload(pb::AbortUploadOp {
            bucket: i.bucket,
            key: i.key,
            upload_id: i.upload_id,
        }))
        .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = i.max_parts.map_or(1000, |m| m.clamp(0, 1000) as u32);
        let r = pb::GetUploadRequest {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            upload_id: i.upload_id.clone(),
            part_number_marker: marker,
            max_parts: max,
        };
        let resp = self
            .master()
            .call(|mut c| {
                let r = r.clone();
                async move { c.ns_get_upload(r).await }
            })
            .await
            .map_err(ns_error)?;
        let parts: Vec<Part> = resp
            .parts
            .iter()
            .map(|p| Part {
                e_tag: Some(etag_of(&p.etag)),
                last_modified: Some(timestamp(p.created_unix_ms)),
                part_number: Some(p.part_number as i32),
                size: Some(p.size_bytes as i64),
                ..Default::default()
            })
            .collect();
        let next = resp.parts.last().map(|p| p.part_number as i32);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: if resp.truncated { next } else { None },
            is_truncated: Some(resp.truncated),
            parts: Some(parts),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        if i.delimiter.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(s3_error!(NotImplemented, "ListMultipartUploads with a delimiter is not supported"));
        }
        let max = i.max_uploads.map_or(1000, |m| m.clamp(0, 1000) as u32);
        let r = pb::ListUploadsRequest {
            bucket: i.bucket.clone(),
            prefix: i.prefix.clone().unwrap_or_default(),
            key_marker: i.key_marker.clone().unwrap_or_default(),
            upload_id_marker: i.upload_id_marker.clone().unwrap_or_default(),
            max_uploads: max,
        };
        let resp = self
            .master()
            .call(|mut c| {
                let r = r.clone();
                async move { c.ns_list_uploads(r).await }
            })
            .await
            .map_err(ns_error)?;
        let last = resp.uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        let uploads = resp
            .uploads
            .iter()
            .map(|u| MultipartUpload {
                initiated: Some(timestamp(u.created_unix_ms)),
                key: Some(u.key.clone()),
                upload_id: Some(u.upload_id.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(resp.truncated),
            next_key_marker: if resp.truncated { last.as_ref().map(|l| l.0.clone()) } else { None },
            next_upload_id_marker: if resp.truncated { last.map(|l| l.1) } else { None },
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let i = req.input;
        let resp = self.version(&i.bucket, &i.key, i.version_id.as_deref(), false).await?;
        let v = resp.version.ok_or_else(|| s3_error!(InternalError, "no version in the answer"))?;
        let f = fields(&v);
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(&f.tags),
            version_id: (v.version_id != "null").then_some(v.version_id),
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let i = req.input;
        let tags: Vec<pb::Pair> = i
            .tagging
            .tag_set
            .iter()
            .map(|t| pb::Pair {
                name: t.key.clone().unwrap_or_default(),
                value: t.value.clone().unwrap_or_default(),
            })
            .collect();
        self.set_tags(i.bucket, i.key, i.version_id, tags)
            .await
            .map(|version_id| S3Response::new(PutObjectTaggingOutput { version_id }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let i = req.input;
        self.set_tags(i.bucket, i.key, i.version_id, Vec::new())
            .await
            .map(|version_id| S3Response::new(DeleteObjectTaggingOutput { version_id }))
    }
}

fn object_of(v: &pb::Version, names: &Names) -> Object {
    let f = fields(v);
    Object {
        e_tag: Some(etag_of(&f.etag)),
        key: Some(names.name(&v.key)),
        last_modified: Some(timestamp(v.created_unix_ms)),
        size: Some(f.size_bytes as i64),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

impl CellarS3 {
    async fn upload_exists(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<()> {
        let r = pb::GetUploadRequest {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            part_number_marker: 0,
            max_parts: 0,
        };
        self.master()
            .call(|mut c| {
                let r = r.clone();
                async move { c.ns_get_upload(r).await }
            })
            .await
            .map_err(ns_error)
            .map(|_| ())
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        number: i32,
        ingested: &Ingested,
    ) -> S3Result<u64> {
        if !(1..=10_000).contains(&number) {
            return Err(s3_error!(InvalidArgument, "part numbers run from 1 to 10000"));
        }
        let part = pb::Part {
            part_number: number as u32,
            etag: ingested.etag(),
            size_bytes: ingested.size_bytes,
            created_unix_ms: 0,
            blocks: ingested.blocks.clone(),
            checksums: to_pairs(ingested.checksums.clone()),
        };
        let written = self
            .commit_stored(ingested, || {
                Op::PutPart(pb::PutPartOp {
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    upload_id: upload_id.to_string(),
                    part: Some(part.clone()),
                })
            })
            .await?;
        Ok(match written {
            Written::Part(p) => p.created_unix_ms,
            _ => 0,
        })
    }

    async fn set_tags(
        &self,
        bucket: String,
        key: String,
        version_id: Option<String>,
        tags: Vec<pb::Pair>,
    ) -> S3Result<Option<String>> {
        let written = self.write(Op::SetTags(pb::SetTagsOp { bucket, key, version_id, tags })).await?;
        Ok(match written {
            Written::Version(v) if v.version_id != "null" => Some(v.version_id),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_rfc_9110_precedence() {
        let tag = |t: &str| ETagCondition::ETag(ETag::Strong(t.into()));
        let at = |s: u64| timestamp(s * 1000);
        assert!(check_conditions("\"a\"", 5000, Some(&tag("a")), None, None, None).is_ok());
        let e = check_conditions("\"a\"", 5000, Some(&tag("b")), None, None, None).expect_err("refused");
        assert_eq!(*e.code(), S3ErrorCode::PreconditionFailed);
        let e = check_conditions("\"a\"", 5000, None, Some(&tag("a")), None, None).expect_err("refused");
        assert_eq!(*e.code(), S3ErrorCode::NotModified);
        let e = check_conditions("\"a\"", 5000, None, None, Some(&at(6)), None).expect_err("refused");
        assert_eq!(*e.code(), S3ErrorCode::NotModified);
        assert!(check_conditions("\"a\"", 5000, None, None, Some(&at(4)), None).is_ok());
        // If-None-Match wins over If-Modified-Since.
        assert!(check_conditions("\"a\"", 5000, None, Some(&tag("b")), Some(&at(6)), None).is_ok());
    }

    #[test]
    fn copy_ranges_are_inclusive_and_bounded() {
        assert_eq!(parse_copy_range("bytes=0-9", 10).expect("a valid range"), 0..10);
        assert!(parse_copy_range("bytes=5-10", 10).is_err());
        assert!(parse_copy_range("0-1", 10).is_err());
    }
}
