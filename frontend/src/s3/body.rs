//! An object's bytes on their way in: cut into blocks of at most the cell's block size,
//! each stored as it fills (a few at once), while the object's MD5 (its ETag) and the
//! checksums the client asked for are computed over the whole stream.

use std::collections::VecDeque;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::{Bytes, BytesMut};
use cellar_proto::master as pb;
use futures::StreamExt;
use md5::Digest as _;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3Result, s3_error};
use tokio::sync::OwnedSemaphorePermit;

use crate::blocks::Blocks;

/// Blocks of one object being stored at once.
pub const BLOCK_STORES_IN_FLIGHT_MAX: usize = 4;

/// The checksum algorithms a client can ask for, as S3 names them.
pub const ALGORITHMS: [&str; 5] = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"];

enum Sum {
    Crc(crc_fast::Digest),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Sum {
    fn new(algorithm: &str) -> Option<Sum> {
        use crc_fast::CrcAlgorithm::*;
        Some(match algorithm {
            "CRC32" => Sum::Crc(crc_fast::Digest::new(Crc32IsoHdlc)),
            "CRC32C" => Sum::Crc(crc_fast::Digest::new(Crc32Iscsi)),
            "CRC64NVME" => Sum::Crc(crc_fast::Digest::new(Crc64Nvme)),
            "SHA1" => Sum::Sha1(sha1::Sha1::default()),
            "SHA256" => Sum::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
            _ => return None,
        })
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Sum::Crc(d) => d.update(bytes),
            Sum::Sha1(d) => sha1::Digest::update(d, bytes),
            Sum::Sha256(d) => sha2::Digest::update(d, bytes),
        }
    }

    fn finish(self, algorithm: &str) -> String {
        match self {
            Sum::Crc(d) => {
                let v = d.finalize();
                if algorithm == "CRC64NVME" {
                    B64.encode(v.to_be_bytes())
                } else {
                    B64.encode((v as u32).to_be_bytes())
                }
            }
            Sum::Sha1(d) => B64.encode(sha1::Digest::finalize(d)),
            Sum::Sha256(d) => B64.encode(sha2::Digest::finalize(d)),
        }
    }
}

/// What arrived.
pub struct Ingested {
    /// The blocks, in order.
    pub blocks: Vec<pb::BlockRef>,
    /// Bytes in all.
    pub size_bytes: u64,
    /// MD5 of the whole body.
    pub md5: [u8; 16],
    /// The checksums computed (algorithm, base64).
    pub checksums: Vec<(String, String)>,
    /// The body itself when it was a single block (kept to store it again if the namespace
    /// finds it collected meanwhile).
    pub single: Option<Bytes>,
    /// The only block, not stored yet (asked for with `defer_only`): the caller stores it
    /// with the object's version ([`Blocks::store_object_version`]).
    pub unstored: Option<Unstored>,
}

/// The only block of a body, hashed but not stored.
pub struct Unstored {
    /// Its key.
    pub sha256: [u8; 32],
    /// Its bytes.
    pub bytes: Bytes,
    /// Its share of the put byte budget, held until it is stored.
    pub held: Option<OwnedSemaphorePermit>,
}

impl Ingested {
    /// The ETag of a single-part object: its MD5, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", hex::encode(self.md5))
    }
}

fn stored(e: crate::blocks::BlockError) -> S3Error {
    s3_error!(ServiceUnavailable, "storing a block: {e}")
}

/// Why a body could not be read: its signed SHA-256 did not match, or it ended early.
fn body_error(e: &(dyn std::error::Error + 'static)) -> S3Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains("Sha256Mismatch") {
            let mut out = S3Error::with_message(
                s3s::S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                "the provided x-amz-content-sha256 does not match what was computed",
            );
            out.set_status_code(http::StatusCode::BAD_REQUEST);
            return out;
        }
        source = err.source();
    }
    s3_error!(IncompleteBody, "reading the body: {e}")
}

/// Where an upload's bytes come from: that decides how long they may take to arrive and
/// whose fault it is when they stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The request's body: the put body timeouts apply (no byte for the idle timeout, or a
    /// block's bytes over the body timeout: RequestTimeout), and a body that breaks off is
    /// the client's fault (IncompleteBody, 400).
    Client,
    /// An object of this cell, read for UploadPartCopy. Each of its block reads is bounded
    /// by the cell's read deadline, so only [`Blocks::copy_source_idle_timeout`] (room for
    /// a read, a fresh index lookup and a second read) bounds the wait between two of its
    /// pieces, and a read that fails or stalls is the server's fault: ServiceUnavailable
    /// (503, which clients retry), naming the copy source.
    CopySource,
}

impl Origin {
    fn timed_out(self, idle: std::time::Duration, block_bytes: usize, total: std::time::Duration) -> S3Error {
        match self {
            Origin::Client => s3_error!(
                RequestTimeout,
                "the body stopped arriving: no byte for {} ms, or a block's {} bytes took over {} ms",
                idle.as_millis(),
                block_bytes,
                total.as_millis()
            ),
            Origin::CopySource => s3_error!(
                ServiceUnavailable,
                "reading the copy source: no byte for {} ms, or a block's {} bytes took over {} ms",
                idle.as_millis(),
                block_bytes,
                total.as_millis()
            ),
        }
    }

    fn failed(self, e: &(dyn std::error::Error + 'static)) -> S3Error {
        match self {
            Origin::Client => body_error(e),
            Origin::CopySource => s3_error!(ServiceUnavailable, "reading the copy source: {e}"),
        }
    }
}

/// Reads `body` to its end, storing its blocks; `algorithms` are the checksums to compute.
/// A body longer than `limit_bytes` is refused (EntityTooLarge) as soon as it passes it.
/// `origin` says how long the bytes may take and how their failure is answered.
/// With `defer_only`, a body of one block leaves it unstored ([`Ingested::unstored`]), so
/// that its index entry can be committed with the object's version.
///
/// Memory: a block's bytes are taken from the frontend's put byte budget
/// ([`crate::PUT_BODIES_IN_FLIGHT_MAX_BYTES`]) before the first of them is buffered (a
/// whole block's worth, or what is left of the body's declared length, so that a block
/// started can always be finished) and given back once the block is stored. Each block is
/// stored by a task of its own, so it proceeds while the next one is read; at most
/// [`BLOCK_STORES_IN_FLIGHT_MAX`] per object.
pub async fn ingest(
    blocks: &Arc<Blocks>,
    mut body: StreamingBlob,
    algorithms: &[String],
    limit_bytes: u64,
    defer_only: bool,
    origin: Origin,
) -> S3Result<Ingested> {
    let block_bytes = blocks.block_size_max_bytes().min(4 << 20) as usize;
    let declared_bytes = s3s::stream::ByteStream::remaining_length(&body).exact().map(|n| n as u64);
    let mut sums: Vec<(String, Sum)> =
        algorithms.iter().filter_map(|a| Sum::new(a).map(|s| (a.clone(), s))).collect();
    let mut md5 = md5::Md5::new();
    let mut buf = BytesMut::new();
    // The budget's share of the block being filled (none before its first byte).
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut size_bytes = 0u64;
    let mut pending: VecDeque<StoreTask> = VecDeque::new();
    let mut out: Vec<pb::BlockRef> = Vec::new();
    let mut last_block: Option<Bytes> = None;
    // A block is looked up afresh in the master (its cached index entry may be stale:
    // collected since), except the only block of a small object, whose bytes are kept to
    // store it again should the namespace find it gone.
    let mut flush = |block: Bytes, fresh: bool, held: Option<OwnedSemaphorePermit>| -> StoreTask {
        let blocks = blocks.clone();
        let len = block.len() as u32;
        last_block = Some(block.clone());
        StoreTask(tokio::spawn(async move {
            let _held = held;
            blocks.store_object_block(block, fresh).await.map(|h| (h, len))
        }))
    };
    // A block's share is held while its bytes arrive: at most `total` for one block and
    // `idle` without a byte (the block API's put body timeouts; for a copy source, the
    // bound on its reads), so stalled uploads cannot hold the budget that every put of the
    // frontend takes from.
    let (total, idle) = match origin {
        Origin::Client => blocks.put_body_timeouts(),
        // A block of the copy may be pieces of two source blocks, each read in turn.
        Origin::CopySource => (2 * blocks.copy_source_idle_timeout(), blocks.copy_source_idle_timeout()),
    };
    let mut block_due: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let wait = block_due.map_or(idle, |due| idle.min(due.saturating_duration_since(now)));
        let next = match tokio::time::timeout(wait, body.next()).await {
            Ok(next) => next,
            Err(_) => return Err(origin.timed_out(idle, block_bytes, total)),
        };
        let chunk = match next {
            None => break,
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(origin.failed(&*e)),
        };
        size_bytes += chunk.len() as u64;
        if size_bytes > limit_bytes {
            return Err(s3_error!(EntityTooLarge, "the body is over {limit_bytes} bytes"));
        }
        md5.update(&chunk);
        for (_, s) in &mut sums {
            s.update(&chunk);
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if buf.len() == block_bytes {
                // A full block goes when more bytes follow it: at the body's end it may be
                // the only one.
                pending.push_back(flush(buf.split().freeze(), true, held.take()));
                while pending.len() >= BLOCK_STORES_IN_FLIGHT_MAX {
                    if let Some(task) = pending.pop_front() {
                        let (hash, len) = task.finish().await?;
                        out.push(pb::BlockRef { hash: hash.to_vec(), length_bytes: len });
                    }
                }
            }
            if held.is_none() {
                let at = size_bytes - rest.len() as u64;
                let want = declared_bytes
                    .map_or(block_bytes as u64, |d| d.saturating_sub(at).min(block_bytes as u64))
                    .max(rest.len().min(block_bytes) as u64);
                held = Some(blocks.hold_put_bytes(want).await);
                block_due = Some(tokio::time::Instant::now() + total);
                buf.reserve(want as usize);
            }
            let take = rest.len().min(block_bytes - buf.len());
            buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if buf.len() == block_bytes {
                // Whole: only the idle bound applies until the next bytes flush it.
                block_due = None;
            }
        }
    }
    let mut unstored = None;
    if !buf.is_empty() {
        let only = out.is_empty() && pending.is_empty();
        if only && defer_only {
            let (sha256, bytes) = crate::blocks::sha256_of(buf.split().freeze()).await.map_err(stored)?;
            out.push(pb::BlockRef { hash: sha256.to_vec(), length_bytes: bytes.len() as u32 });
            unstored = Some(Unstored { sha256, bytes, held: held.take() });
        } else {
            pending.push_back(flush(buf.split().freeze(), !only, held.take()));
        }
    }
    while let Some(task) = pending.pop_front() {
        let (hash, len) = task.finish().await?;
        out.push(pb::BlockRef { hash: hash.to_vec(), length_bytes: len });
    }
    let single = match &unstored {
        Some(u) => Some(u.bytes.clone()),
        None if out.len() == 1 => last_block,
        None => None,
    };
    Ok(Ingested {
        blocks: out,
        size_bytes,
        md5: md5.finalize().into(),
        checksums: sums
            .into_iter()
            .map(|(a, s)| {
                let v = s.finish(&a);
                (a, v)
            })
            .collect(),
        single,
        unstored,
    })
}

/// A block being stored by a task of its own (a dropped ingest leaves it to finish: its
/// block is unreferenced garbage then).
struct StoreTask(tokio::task::JoinHandle<Result<([u8; 32], u32), crate::blocks::BlockError>>);

impl StoreTask {
    async fn finish(self) -> S3Result<([u8; 32], u32)> {
        match self.0.await {
            Ok(stored_block) => stored_block.map_err(stored),
            Err(e) => Err(s3_error!(InternalError, "storing a block: {e}")),
        }
    }
}

/// Checks a Content-MD5 header against what arrived.
pub fn check_md5(header: Option<&str>, got: &[u8; 16]) -> S3Result<()> {
    let Some(header) = header else { return Ok(()) };
    let expected =
        B64.decode(header.trim()).map_err(|_| s3_error!(InvalidDigest, "Content-MD5 is not base64"))?;
    if expected.len() != 16 {
        return Err(s3_error!(InvalidDigest, "Content-MD5 is not 16 bytes"));
    }
    if expected != got {
        return Err(s3_error!(BadDigest, "the Content-MD5 you specified did not match what we received"));
    }
    Ok(())
}

/// Checks the checksums the client sent (headers or trailers) against the computed ones.
pub fn check_sums(expected: &[(String, String)], computed: &[(String, String)]) -> S3Result<()> {
    for (algorithm, value) in expected {
        match computed.iter().find(|(a, _)| a == algorithm) {
            Some((_, got)) if got == value.trim() => {}
            Some(_) => {
                return Err(s3_error!(
                    BadDigest,
                    "the {algorithm} you specified did not match the calculated checksum"
                ));
            }
            None => return Err(s3_error!(InvalidRequest, "checksum {algorithm} was not computed")),
        }
    }
    Ok(())
}
