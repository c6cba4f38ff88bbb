//! Bucket lifecycle configurations between S3's XML model and the master's rules: prefix
//! filters; Expiration (Days, ExpiredObjectDeleteMarker), NoncurrentVersionExpiration
//! (NoncurrentDays) and AbortIncompleteMultipartUpload. What cellar cannot honour (dates,
//! transitions, tag or size filters, NewerNoncurrentVersions) is refused with
//! NotImplemented rather than stored and ignored.

use cellar_proto::master as pb;
use s3s::dto::*;
use s3s::{S3Result, s3_error};

fn days(field: &str, d: Option<i32>) -> S3Result<u32> {
    match d {
        None => Ok(0),
        Some(d) if d >= 1 => Ok(d as u32),
        Some(_) => Err(s3_error!(InvalidArgument, "{field} must be a positive number of days")),
    }
}

/// The master's rules of an S3 configuration.
pub fn rules_of(config: BucketLifecycleConfiguration) -> S3Result<Vec<pb::LifecycleRule>> {
    let mut out = Vec::with_capacity(config.rules.len());
    for r in config.rules {
        if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
            || r.noncurrent_version_transitions.as_ref().is_some_and(|t| !t.is_empty())
        {
            return Err(s3_error!(NotImplemented, "transitions: cellar has one storage class"));
        }
        let prefix = match r.filter {
            Some(f) => {
                if f.and.is_some()
                    || f.tag.is_some()
                    || f.object_size_greater_than.is_some()
                    || f.object_size_less_than.is_some()
                {
                    return Err(s3_error!(NotImplemented, "lifecycle filters other than a prefix"));
                }
                f.prefix.unwrap_or_default()
            }
            None => r.prefix.unwrap_or_default(),
        };
        let enabled = match r.status.as_str() {
            ExpirationStatus::ENABLED => true,
            ExpirationStatus::DISABLED => false,
            other => return Err(s3_error!(MalformedXML, "rule status {other:?}")),
        };
        let mut rule =
            pb::LifecycleRule { id: r.id.unwrap_or_default(), prefix, enabled, ..Default::default() };
        if let Some(e) = r.expiration {
            if e.date.is_some() {
                return Err(s3_error!(NotImplemented, "Expiration with a Date"));
            }
            let marker = e.expired_object_delete_marker.unwrap_or(false);
            if marker && e.days.is_some() {
                return Err(s3_error!(
                    InvalidArgument,
                    "ExpiredObjectDeleteMarker cannot be given with Days"
                ));
            }
            rule.expiration_days = days("Expiration Days", e.days)?;
            rule.expired_object_delete_marker = marker;
        }
        if let Some(n) = r.noncurrent_version_expiration {
            if n.newer_noncurrent_versions.is_some() {
                return Err(s3_error!(NotImplemented, "NewerNoncurrentVersions"));
            }
            rule.noncurrent_days = days("NoncurrentDays", n.noncurrent_days)?;
        }
        if let Some(a) = r.abort_incomplete_multipart_upload {
            rule.abort_incomplete_days = days("DaysAfterInitiation", a.days_after_initiation)?;
        }
        if rule.expiration_days == 0
            && !rule.expired_object_delete_marker
            && rule.noncurrent_days == 0
            && rule.abort_incomplete_days == 0
        {
            return Err(s3_error!(InvalidArgument, "a lifecycle rule needs an action"));
        }
        out.push(rule);
    }
    Ok(out)
}

fn some_days(d: u32) -> Option<i32> {
    (d > 0).then(|| i32::try_from(d).unwrap_or(i32::MAX))
}

/// The S3 rules of the master's.
pub fn rules_to_s3(rules: &[pb::LifecycleRule]) -> LifecycleRules {
    rules
        .iter()
        .map(|r| LifecycleRule {
            id: (!r.id.is_empty()).then(|| r.id.clone()),
            filter: Some(LifecycleRuleFilter { prefix: Some(r.prefix.clone()), ..Default::default() }),
            status: ExpirationStatus::from_static(if r.enabled {
                ExpirationStatus::ENABLED
            } else {
                ExpirationStatus::DISABLED
            }),
            expiration: (r.expiration_days > 0 || r.expired_object_delete_marker).then(|| {
                LifecycleExpiration {
                    days: some_days(r.expiration_days),
                    expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
                    date: None,
                }
            }),
            noncurrent_version_expiration: (r.noncurrent_days > 0).then(|| NoncurrentVersionExpiration {
                noncurrent_days: some_days(r.noncurrent_days),
                newer_noncurrent_versions: None,
            }),
            abort_incomplete_multipart_upload: (r.abort_incomplete_days > 0).then(|| {
                AbortIncompleteMultipartUpload { days_after_initiation: some_days(r.abort_incomplete_days) }
            }),
            prefix: None,
            transitions: None,
            noncurrent_version_transitions: None,
        })
        .collect()
}
