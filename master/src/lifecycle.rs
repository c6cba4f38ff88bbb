//! Lifecycle expiry, on the leader: every `lifecycle_interval_ms` one streaming pass over
//! the buckets that have lifecycle rules finds the keys with something due (a current
//! version past its days, noncurrent versions past theirs, a lone delete marker) and the
//! uploads to abort, at most `lifecycle_keys_per_pass` of them, and proposes
//! `NsOp::Expire` / `NsOp::ExpireUpload` for each (batched, 1000 per Raft entry). The apply
//! decides again at the entry's own time (`crate::namespace::lifecycle::due`), so the pass
//! may be stale without harm. Removed versions and aborted uploads drop their blocks'
//! references: compaction then reclaims the space.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::codec::Kind;
use crate::command::{Command, NsCall, Response};
use crate::namespace::keys;
use crate::namespace::lifecycle::{LifecycleRecord, abort_due, due};
use crate::ns_types::{NsOp, UploadRecord, VersionRecord};
use crate::state::{StateError, decode_record};
use crate::store::sm::StateReader;
use crate::{MasterRaft, now_unix_ms};

/// Calls per Raft entry of expiries.
const EXPIRES_PER_ENTRY: usize = 1000;

/// Lifecycle settings (master config `lifecycle_*`).
#[derive(Debug, Clone, Copy)]
pub struct LifecycleSettings {
    /// Between passes; zero turns expiry off.
    pub interval: Duration,
    /// Length of a lifecycle day in ms (86,400,000 but for tests).
    pub day_ms: u64,
    /// Keys and uploads acted on per pass at most.
    pub keys_per_pass: usize,
}

/// The keys and uploads with something due at `now_unix_ms`, at most `max`.
pub fn survey(
    reader: &StateReader,
    now_unix_ms: u64,
    day_ms: u64,
    max: usize,
) -> Result<Vec<NsOp>, StateError> {
    let mut buckets = Vec::new();
    let prefix = [keys::PREFIX_LIFECYCLE];
    reader.for_each(&prefix, &prefix, |k: &[u8], v: &[u8]| {
        let record: LifecycleRecord = decode_record(Kind::Lifecycle, k, v)?;
        let name = String::from_utf8(k[1..].to_vec()).map_err(|_| StateError::Corrupt {
            key: hex::encode(k),
            detail: "bucket name is not UTF-8".into(),
        })?;
        buckets.push((name, record.rules));
        Ok(true)
    })?;
    let mut out = Vec::new();
    for (bucket, rules) in buckets {
        if out.len() >= max {
            break;
        }
        // Versions: grouped by key (a key's versions are adjacent, newest first).
        let vprefix = keys::versions_of_bucket(&bucket);
        let mut current: Option<(String, Vec<VersionRecord>)> = None;
        let judge = |key: String, versions: Vec<VersionRecord>, out: &mut Vec<NsOp>| {
            if !due(&rules, &key, &versions, now_unix_ms, day_ms).is_empty() {
                out.push(NsOp::Expire { bucket: bucket.clone(), key, day_ms });
            }
        };
        reader.for_each(&vprefix, &vprefix, |k: &[u8], v: &[u8]| {
            let Some((key, _)) = keys::split_version(&vprefix, k) else {
                return Err(StateError::Corrupt { key: hex::encode(k), detail: "bad version key".into() });
            };
            let record: VersionRecord = decode_record(Kind::Version, k, v)?;
            match &mut current {
                Some((at, versions)) if *at == key => versions.push(record),
                _ => {
                    if let Some((done, versions)) = current.replace((key, vec![record])) {
                        judge(done, versions, &mut out);
                    }
                }
            }
            Ok(out.len() < max)
        })?;
        if let Some((done, versions)) = current.take()
            && out.len() < max
        {
            judge(done, versions, &mut out);
        }
        let uprefix = keys::uploads_of_bucket(&bucket);
        reader.for_each(&uprefix, &uprefix, |k: &[u8], v: &[u8]| {
            if out.len() >= max {
                return Ok(false);
            }
            let Some((key, upload_id)) = keys::split_upload(&uprefix, k) else {
                return Err(StateError::Corrupt { key: hex::encode(k), detail: "bad upload key".into() });
            };
            let u: UploadRecord = decode_record(Kind::Upload, k, v)?;
            if abort_due(&rules, &key, u.created_unix_ms, now_unix_ms, day_ms) {
                out.push(NsOp::ExpireUpload { bucket: bucket.clone(), key, upload_id, day_ms });
            }
            Ok(true)
        })?;
    }
    out.truncate(max);
    Ok(out)
}

/// The leader's expiry loop.
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    settings: LifecycleSettings,
    mut stop: watch::Receiver<bool>,
) {
    if settings.interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        if raft.metrics().borrow_watched().current_leader != Some(id) {
            continue;
        }
        let r = reader.clone();
        let (day_ms, max) = (settings.day_ms, settings.keys_per_pass);
        let ops = match tokio::task::spawn_blocking(move || survey(&r, now_unix_ms(), day_ms, max)).await {
            Ok(Ok(ops)) => ops,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "lifecycle cannot read the state");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "lifecycle pass panicked");
                continue;
            }
        };
        let found = ops.len();
        let mut applied = 0usize;
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            let calls: Vec<NsCall> =
                ops.by_ref().take(EXPIRES_PER_ENTRY).map(|op| NsCall { request: None, op }).collect();
            let n = calls.len();
            let command = Command::NamespaceBatch { calls, now_unix_ms: now_unix_ms() };
            match crate::raft_calls::write(&raft, command).await {
                Ok(Response::NamespaceBatch { .. }) => applied += n,
                Ok(other) => tracing::error!(?other, "lifecycle: unexpected response"),
                Err(e) => {
                    tracing::info!(error = %e.message(), "lifecycle: expiries not applied (next pass)");
                    break;
                }
            }
        }
        if found > 0 {
            tracing::info!(found, applied, "lifecycle pass: keys and uploads expired");
        }
    }
}
