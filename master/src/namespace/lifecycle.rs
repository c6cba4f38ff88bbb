//! Bucket lifecycle rules (S3's PutBucketLifecycleConfiguration, prefix filters): which
//! versions and uploads of a bucket expire. One pure function decides ([`due`]); the
//! leader's sweep (`crate::lifecycle`) uses it to find keys with something due, and the
//! apply of `NsOp::Expire` / `NsOp::ExpireUpload` decides again at the entry's own time, so
//! a put or delete that raced with the sweep is never undone by it.
//!
//! Days are `day_ms` long (86,400,000 but for tests) and counted from the version's
//! creation (current versions, uploads) or from the creation of the version that replaced
//! it (noncurrent versions), without S3's rounding to the next midnight.

use super::keys;
use crate::codec::Kind;
pub use crate::ns_types::{LifecycleRecord, LifecycleRule};
use crate::ns_types::{NsCode, VersionRecord};
use crate::state::{Kv, StateError, read_record};

/// Rules per bucket at most (S3's limit).
pub const RULES_MAX: usize = 1000;
/// Bytes of a rule's id at most (S3's limit).
pub const RULE_ID_MAX_BYTES: usize = 255;
/// Days in a rule at most (about 27 years; keeps `days * day_ms` far from overflow).
pub const RULE_DAYS_MAX: u32 = 10_000;

/// What is due for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The current version expires (S3 DeleteObject without a version id).
    ExpireCurrent,
    /// This version (a noncurrent one, or a lone delete marker) is removed for good.
    Remove(u64),
}

/// Why a set of rules is refused.
pub fn check(rules: &[LifecycleRule]) -> Result<(), (NsCode, String)> {
    let bad = |detail: String| Err((NsCode::InvalidArgument, detail));
    if rules.len() > RULES_MAX {
        return bad(format!("at most {RULES_MAX} lifecycle rules"));
    }
    for r in rules {
        if r.id.len() > RULE_ID_MAX_BYTES {
            return bad(format!("a rule id is at most {RULE_ID_MAX_BYTES} bytes"));
        }
        if r.prefix.len() > crate::ns_types::KEY_MAX_BYTES {
            return bad("a rule's prefix is longer than a key".into());
        }
        let days = [r.expiration_days, r.noncurrent_days, r.abort_incomplete_days];
        if days.iter().flatten().any(|d| *d == 0 || *d > RULE_DAYS_MAX) {
            return bad(format!("days run from 1 to {RULE_DAYS_MAX}"));
        }
        if days.iter().all(Option::is_none) && !r.expired_object_delete_marker {
            return bad(format!("rule {:?} has no action", r.id));
        }
    }
    Ok(())
}

/// The bucket's rules (none configured: empty).
pub fn rules_of(kv: &dyn Kv, bucket: &str) -> Result<Vec<LifecycleRule>, StateError> {
    Ok(read_record::<LifecycleRecord>(kv, Kind::Lifecycle, &keys::lifecycle(bucket))?
        .map(|r| r.rules)
        .unwrap_or_default())
}

/// The shortest of `days` among the enabled rules matching `key`, in ms.
fn shortest(
    rules: &[LifecycleRule],
    key: &str,
    day_ms: u64,
    days: impl Fn(&LifecycleRule) -> Option<u32>,
) -> Option<u64> {
    rules
        .iter()
        .filter(|r| r.enabled && key.starts_with(r.prefix.as_str()))
        .filter_map(days)
        .min()
        .map(|d| u64::from(d).saturating_mul(day_ms))
}

/// What is due at `now_unix_ms` for `key`, whose versions are `versions` (newest first).
pub fn due(
    rules: &[LifecycleRule],
    key: &str,
    versions: &[VersionRecord],
    now_unix_ms: u64,
    day_ms: u64,
) -> Vec<Due> {
    let mut out = Vec::new();
    let Some(latest) = versions.first() else { return out };
    if !latest.delete_marker
        && let Some(after) = shortest(rules, key, day_ms, |r| r.expiration_days)
        && now_unix_ms >= latest.created_unix_ms.saturating_add(after)
    {
        out.push(Due::ExpireCurrent);
    }
    if let Some(after) = shortest(rules, key, day_ms, |r| r.noncurrent_days) {
        for pair in versions.windows(2) {
            // pair[1] became noncurrent when pair[0] was created.
            if now_unix_ms >= pair[0].created_unix_ms.saturating_add(after) {
                out.push(Due::Remove(pair[1].version));
            }
        }
    }
    let markers = rules
        .iter()
        .any(|r| r.enabled && r.expired_object_delete_marker && key.starts_with(r.prefix.as_str()));
    if markers && versions.len() == 1 && latest.delete_marker {
        out.push(Due::Remove(latest.version));
    }
    out
}

/// Whether an upload created at `created_unix_ms` is to be aborted at `now_unix_ms`.
pub fn abort_due(
    rules: &[LifecycleRule],
    key: &str,
    created_unix_ms: u64,
    now_unix_ms: u64,
    day_ms: u64,
) -> bool {
    shortest(rules, key, day_ms, |r| r.abort_incomplete_days)
        .is_some_and(|after| now_unix_ms >= created_unix_ms.saturating_add(after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns_types::Content;

    const DAY: u64 = 1000;

    fn version(n: u64, created: u64, marker: bool) -> VersionRecord {
        VersionRecord {
            v: 1,
            version: n,
            null_version: false,
            delete_marker: marker,
            created_unix_ms: created,
            content: Content::default(),
        }
    }

    fn rule(f: impl FnOnce(&mut LifecycleRule)) -> Vec<LifecycleRule> {
        let mut r = LifecycleRule { enabled: true, prefix: "logs/".into(), ..LifecycleRule::default() };
        f(&mut r);
        vec![r]
    }

    #[test]
    fn current_versions_expire_after_their_days_and_only_under_the_prefix() {
        let rules = rule(|r| r.expiration_days = Some(2));
        let v = [version(5, 10_000, false)];
        assert!(due(&rules, "logs/a", &v, 11_999, DAY).is_empty());
        assert_eq!(due(&rules, "logs/a", &v, 12_000, DAY), vec![Due::ExpireCurrent]);
        assert!(due(&rules, "data/a", &v, 99_000, DAY).is_empty(), "outside the prefix");
        let disabled = rule(|r| {
            r.expiration_days = Some(2);
            r.enabled = false;
        });
        assert!(due(&disabled, "logs/a", &v, 99_000, DAY).is_empty(), "a disabled rule");
        // A delete marker as the latest is not expired again.
        assert!(due(&rules, "logs/a", &[version(6, 0, true), version(5, 0, false)], 99_000, DAY).is_empty());
    }

    #[test]
    fn noncurrent_versions_count_from_their_replacement_and_lone_markers_go() {
        let rules = rule(|r| {
            r.noncurrent_days = Some(1);
            r.expired_object_delete_marker = true;
        });
        // 9 (marker, made at 5000) replaced 8 (made at 100), which replaced 7.
        let v = [version(9, 5_000, true), version(8, 2_000, false), version(7, 100, false)];
        assert_eq!(due(&rules, "logs/k", &v, 2_999, DAY), Vec::<Due>::new());
        assert_eq!(due(&rules, "logs/k", &v, 3_000, DAY), vec![Due::Remove(7)]);
        assert_eq!(due(&rules, "logs/k", &v, 6_000, DAY), vec![Due::Remove(8), Due::Remove(7)]);
        // Alone, the marker goes.
        assert_eq!(due(&rules, "logs/k", &v[..1], 6_000, DAY), vec![Due::Remove(9)]);
        // Without the marker rule it stays.
        let keep = rule(|r| r.noncurrent_days = Some(1));
        assert!(due(&keep, "logs/k", &v[..1], 6_000, DAY).is_empty());
    }

    #[test]
    fn the_shortest_matching_rule_wins_and_bad_rules_are_refused() {
        let mut rules = rule(|r| r.abort_incomplete_days = Some(5));
        rules.push(LifecycleRule {
            enabled: true,
            abort_incomplete_days: Some(2),
            ..LifecycleRule::default()
        });
        assert!(!abort_due(&rules, "logs/x", 0, 1_999, DAY));
        assert!(abort_due(&rules, "logs/x", 0, 2_000, DAY));
        assert!(check(&rules).is_ok());
        assert!(check(&rule(|_| {})).is_err(), "no action");
        assert!(check(&rule(|r| r.expiration_days = Some(0))).is_err(), "zero days");
    }
}
