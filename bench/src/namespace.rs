//! Namespace loader: fills a bucket with many zero-byte objects by calling the masters'
//! `NsWrite` directly (the same `PutVersion` a frontend sends for an S3 PutObject of an
//! empty body), so that listing can be measured on buckets far larger than S3 clients on
//! this machine could fill in a session. The state it leaves is what S3 puts leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cellar_master_api::client::MasterClient;
use cellar_proto::master as pb;
use pb::ns_write_request::Op;

/// ETag of an empty body (its MD5), quoted as S3 returns it.
const EMPTY_ETAG: &str = "\"d41d8cd98f00b204e9800998ecf8427e\"";

/// What to load.
#[derive(Debug, Clone)]
pub struct NsLoadConfig {
    /// The cell's masters.
    pub masters: Vec<String>,
    /// The cluster secret, if the cell has one.
    pub secret: Option<String>,
    /// The bucket (created if missing).
    pub bucket: String,
    /// Keys `k/000000000` .. `k/{keys-1}` (9 digits, as bench/s3_scale.py names them).
    pub keys: u64,
    /// The first key number (to resume a load).
    pub first: u64,
    /// Concurrent calls.
    pub clients: u64,
}

/// The load's outcome.
pub struct NsLoadResult {
    /// Objects put.
    pub objects: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// The key of object `i`.
pub fn key(i: u64) -> String {
    format!("k/{i:09}")
}

/// Runs the load, printing progress every tenth of it.
pub async fn load(config: &NsLoadConfig) -> Result<NsLoadResult> {
    if config.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let client = Arc::new(
        MasterClient::new(&config.masters, config.secret.as_deref())?.with_deadline(Duration::from_secs(60)),
    );
    let create = pb::NsWriteRequest {
        request_id: None,
        op: Some(Op::CreateBucket(pb::CreateBucketOp { name: config.bucket.clone() })),
    };
    match client.call_once(create, |mut c, r| async move { c.ns_write(r).await }).await {
        Ok(_) => {}
        Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => {}
        Err(e) => return Err(e).context("create the bucket"),
    }
    let next = Arc::new(AtomicU64::new(config.first));
    let done = Arc::new(AtomicU64::new(0));
    let end = config.first + config.keys;
    let report_every = (config.keys / 10).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..config.clients {
        let (client, next, done, bucket) =
            (client.clone(), next.clone(), done.clone(), config.bucket.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), anyhow::Error>(());
                }
                let op = Op::PutVersion(pb::PutVersionOp {
                    bucket: bucket.clone(),
                    key: key(i),
                    fields: Some(pb::VersionFields {
                        size_bytes: 0,
                        etag: EMPTY_ETAG.to_string(),
                        content_type: "binary/octet-stream".to_string(),
                        ..Default::default()
                    }),
                });
                let request = pb::NsWriteRequest { request_id: None, op: Some(op) };
                client
                    .call_once(request, |mut c, r| async move { c.ns_write(r).await })
                    .await
                    .with_context(|| format!("put {}", key(i)))?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % report_every == 0 {
                    let secs = started.elapsed().as_secs_f64();
                    println!("{n} objects in {secs:.1} s ({:.0}/s)", n as f64 / secs);
                }
            }
        }));
    }
    for t in tasks {
        t.await.context("a load task panicked")??;
    }
    Ok(NsLoadResult { objects: done.load(Ordering::Relaxed), elapsed: started.elapsed() })
}
