//! Lifecycle expiry, on the leader: every `lifecycle_interval_ms` one streaming pass over
//! the buckets that have lifecycle rules (only the key prefixes their enabled rules cover)
//! finds the keys with something due (a current
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
use crate::namespace::lifecycle::{LifecycleRecord, LifecycleRule, abort_due, due};
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
        // Only the keys some enabled rule covers are read.
        for prefix in scan_prefixes(&rules) {
            survey_prefix(reader, &bucket, &rules, &prefix, now_unix_ms, day_ms, max, &mut out)?;
        }
    }
    out.truncate(max);
    Ok(out)
}

/// The key prefixes to read for `rules`: those of the enabled rules, without any that
/// another covers (an empty prefix covers everything).
pub fn scan_prefixes(rules: &[LifecycleRule]) -> Vec<String> {
    let mut prefixes: Vec<String> = rules.iter().filter(|r| r.enabled).map(|r| r.prefix.clone()).collect();
    prefixes.sort();
    prefixes.dedup();
    let mut out: Vec<String> = Vec::new();
    for p in prefixes {
        // Sorted: a covering prefix comes before what it covers.
        if !out.iter().any(|q| p.starts_with(q.as_str())) {
            out.push(p);
        }
    }
    out
}

/// The versions and uploads of `bucket` under the key prefix `prefix` with something due.
#[allow(clippy::too_many_arguments)]
fn survey_prefix(
    reader: &StateReader,
    bucket: &str,
    rules: &[LifecycleRule],
    prefix: &str,
    now_unix_ms: u64,
    day_ms: u64,
    max: usize,
    out: &mut Vec<NsOp>,
) -> Result<(), StateError> {
    // Versions: grouped by key (a key's versions are adjacent, newest first).
    let vprefix = keys::versions_of_bucket(bucket);
    let vfrom = [vprefix.as_slice(), prefix.as_bytes()].concat();
    let mut current: Option<(String, Vec<VersionRecord>)> = None;
    let judge = |key: String, versions: Vec<VersionRecord>, out: &mut Vec<NsOp>| {
        if !due(rules, &key, &versions, now_unix_ms, day_ms).is_empty() {
            out.push(NsOp::Expire { bucket: bucket.to_string(), key, day_ms });
        }
    };
    reader.for_each(&vfrom, &vfrom, |k: &[u8], v: &[u8]| {
        let Some((key, _)) = keys::split_version(&vprefix, k) else {
            return Err(StateError::Corrupt { key: hex::encode(k), detail: "bad version key".into() });
        };
        let record: VersionRecord = decode_record(Kind::Version, k, v)?;
        match &mut current {
            Some((at, versions)) if *at == key => versions.push(record),
            _ => {
                if let Some((done, versions)) = current.replace((key, vec![record])) {
                    judge(done, versions, out);
                }
            }
        }
        Ok(out.len() < max)
    })?;
    if let Some((done, versions)) = current.take()
        && out.len() < max
    {
        judge(done, versions, out);
    }
    let uprefix = keys::uploads_of_bucket(bucket);
    let ufrom = [uprefix.as_slice(), prefix.as_bytes()].concat();
    reader.for_each(&ufrom, &ufrom, |k: &[u8], v: &[u8]| {
        if out.len() >= max {
            return Ok(false);
        }
        let Some((key, upload_id)) = keys::split_upload(&uprefix, k) else {
            return Err(StateError::Corrupt { key: hex::encode(k), detail: "bad upload key".into() });
        };
        let u: UploadRecord = decode_record(Kind::Upload, k, v)?;
        if abort_due(rules, &key, u.created_unix_ms, now_unix_ms, day_ms) {
            out.push(NsOp::ExpireUpload { bucket: bucket.to_string(), key, upload_id, day_ms });
        }
        Ok(true)
    })?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, enabled: bool) -> LifecycleRule {
        LifecycleRule { prefix: prefix.into(), enabled, expiration_days: Some(1), ..LifecycleRule::default() }
    }

    #[test]
    fn only_the_prefixes_of_enabled_rules_are_read_once_each() {
        let rules = [rule("logs/a", true), rule("logs/", true), rule("tmp/", true), rule("data/", false)];
        assert_eq!(scan_prefixes(&rules), vec!["logs/".to_string(), "tmp/".to_string()]);
        assert_eq!(scan_prefixes(&[rule("x", true), rule("", true)]), vec![String::new()]);
        assert!(scan_prefixes(&[rule("x", false)]).is_empty());
    }
}
