//! Listings over the key layout: a bucket's objects (latest versions), every version, the
//! uploads in progress. They stream over the state in key order (one record at a time), and
//! skip a whole common prefix with one seek, so a page costs its own keys, not the bucket's.

use super::keys;
use crate::codec::Kind;
use crate::ns_types::{UploadRecord, VersionRecord, parse_version_id};
use crate::state::{StateError, decode_record};

/// What a scan calls with each pair: go on (true) or stop.
pub type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StateError> + 'a;

/// Ordered iteration over the state, as [`crate::store::StateReader::for_each`] offers it.
pub trait Scan {
    /// Calls `f` with every pair whose key starts with `prefix`, from `start` on, until it
    /// returns false.
    fn for_each(&self, prefix: &[u8], start: &[u8], f: &mut Visit<'_>) -> Result<(), StateError>;
}

impl Scan for std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    fn for_each(&self, prefix: &[u8], start: &[u8], f: &mut Visit<'_>) -> Result<(), StateError> {
        let from = if start < prefix { prefix.to_vec() } else { start.to_vec() };
        for (k, v) in self.range(from..) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
        }
        Ok(())
    }
}

/// Keys (entries and common prefixes together) per page at most.
pub const PAGE_MAX: usize = 1000;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only keys that begin with this.
    pub prefix: String,
    /// Roll keys up to the first delimiter after the prefix (empty: none).
    pub delimiter: String,
    /// Keys after this one.
    pub start_after: String,
    /// With `versions`: continue after this version of `start_after`.
    pub version_id_marker: String,
    /// Entries and common prefixes at most (capped at [`PAGE_MAX`]; 0 lists nothing).
    pub max_keys: usize,
    /// Every version and delete marker, not only the live latest ones.
    pub versions: bool,
}

/// One page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    /// Object key, version, and whether it is its key's latest.
    pub versions: Vec<(String, VersionRecord, bool)>,
    /// Common prefixes.
    pub common_prefixes: Vec<String>,
    /// More follow.
    pub truncated: bool,
    /// The last key (or common prefix) on the page: where the next page starts.
    pub next_key: String,
    /// With versions: the last version id on the page.
    pub next_version_id: String,
}

/// The bytes after every key that begins with `prefix` (object keys are UTF-8, whose
/// bytes never reach 0xFF).
fn past(prefix_key: &[u8]) -> Vec<u8> {
    let mut k = prefix_key.to_vec();
    k.push(0xFF);
    k
}

/// The common prefix `q.start_after` rolls up into, if any.
fn rolled_up(q: &ListQuery) -> Option<&str> {
    if q.delimiter.is_empty() {
        return None;
    }
    let rest = q.start_after.strip_prefix(q.prefix.as_str())?;
    let at = rest.find(&q.delimiter)?;
    Some(&q.start_after[..q.prefix.len() + at + q.delimiter.len()])
}

/// Lists `bucket` by `q`.
pub fn list_objects(scan: &dyn Scan, bucket: &str, q: &ListQuery) -> Result<ListPage, StateError> {
    let base = keys::versions_of_bucket(bucket);
    let mut scan_prefix = base.clone();
    scan_prefix.extend_from_slice(q.prefix.as_bytes());
    let max = q.max_keys.min(PAGE_MAX);
    let mut page = ListPage::default();
    if max == 0 {
        return Ok(page);
    }
    // Where to start, and the key whose versions were partly listed already.
    let mut last_key: Option<String> = None;
    let mut start = if q.start_after.is_empty() {
        scan_prefix.clone()
    } else if q.versions && !q.version_id_marker.is_empty() {
        last_key = Some(q.start_after.clone());
        match parse_version_id(&q.version_id_marker) {
            Some(Some(n)) => {
                let mut k = keys::version(bucket, &q.start_after, n);
                k.push(0);
                k
            }
            // "null" or unparsable: from the key's next key on.
            _ => {
                let mut k = base.clone();
                k.extend_from_slice(q.start_after.as_bytes());
                k.push(1);
                k
            }
        }
    } else if rolled_up(q).is_some_and(|cp| cp == q.start_after) {
        // The last page ended on a common prefix: go on after every key under it.
        let mut k = base.clone();
        k.extend_from_slice(q.start_after.as_bytes());
        past(&k)
    } else {
        let mut k = base.clone();
        k.extend_from_slice(q.start_after.as_bytes());
        k.push(1);
        k
    };
    let mut skip_key: Option<String> = None;
    let mut last_prefix: Option<String> = None;
    let mut count = 0usize;
    loop {
        let mut restart: Option<Vec<u8>> = None;
        scan.for_each(&scan_prefix, &start, &mut |k, v| {
            let Some((key, _)) = keys::split_version(&base, k) else {
                return Err(StateError::Corrupt { key: hex::encode(k), detail: "not a version key".into() });
            };
            let latest = last_key.as_deref() != Some(key.as_str());
            last_key = Some(key.clone());
            if !q.versions && (!latest || skip_key.as_deref() == Some(key.as_str())) {
                return Ok(true);
            }
            let record: VersionRecord = decode_record(Kind::Version, k, v)?;
            if !q.versions && record.delete_marker {
                skip_key = Some(key);
                return Ok(true);
            }
            if !q.delimiter.is_empty()
                && let Some(at) = key[q.prefix.len()..].find(&q.delimiter)
            {
                let cp = key[..q.prefix.len() + at + q.delimiter.len()].to_string();
                if last_prefix.as_deref() == Some(cp.as_str()) {
                    return Ok(true);
                }
                if count == max {
                    page.truncated = true;
                    return Ok(false);
                }
                count += 1;
                let mut cp_key = base.clone();
                cp_key.extend_from_slice(cp.as_bytes());
                restart = Some(past(&cp_key));
                page.next_key = cp.clone();
                page.next_version_id.clear();
                page.common_prefixes.push(cp.clone());
                last_prefix = Some(cp);
                return Ok(false);
            }
            if count == max {
                page.truncated = true;
                return Ok(false);
            }
            count += 1;
            page.next_key = key.clone();
            page.next_version_id = crate::ns_types::version_id(&record);
            page.versions.push((key, record, latest));
            Ok(true)
        })?;
        match restart {
            Some(s) => start = s,
            None => break,
        }
    }
    if !page.truncated {
        page.next_key.clear();
        page.next_version_id.clear();
    }
    Ok(page)
}

/// Uploads in progress in `bucket` under `prefix`, after (`key_marker`, `upload_marker`).
pub fn list_uploads(
    scan: &dyn Scan,
    bucket: &str,
    prefix: &str,
    key_marker: &str,
    upload_marker: &str,
    max: usize,
) -> Result<(Vec<(String, UploadRecord)>, bool), StateError> {
    let base = keys::uploads_of_bucket(bucket);
    let mut scan_prefix = base.clone();
    scan_prefix.extend_from_slice(prefix.as_bytes());
    let start = if key_marker.is_empty() {
        scan_prefix.clone()
    } else if upload_marker.is_empty() {
        let mut k = base.clone();
        k.extend_from_slice(key_marker.as_bytes());
        k.push(1);
        k
    } else {
        let mut k = keys::upload(bucket, key_marker, upload_marker);
        k.push(0);
        k
    };
    let max = max.min(PAGE_MAX);
    let mut out = Vec::new();
    let mut truncated = false;
    scan.for_each(&scan_prefix, &start, &mut |k, v| {
        if out.len() == max {
            truncated = true;
            return Ok(false);
        }
        let Some((key, _)) = keys::split_upload(&base, k) else {
            return Err(StateError::Corrupt { key: hex::encode(k), detail: "not an upload key".into() });
        };
        out.push((key, decode_record(Kind::Upload, k, v)?));
        Ok(true)
    })?;
    Ok((out, truncated))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ns_types::{Content, NsOp, Versioning};
    use crate::types::Counters;

    fn bucket_with(keys: &[&str], versioned: bool) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut kv = BTreeMap::new();
        let mut c = Counters::default();
        let mut run = |kv: &mut BTreeMap<Vec<u8>, Vec<u8>>, op| {
            crate::namespace::apply::apply(kv, &mut c, &op, 1).expect("ok").expect("ok");
        };
        run(&mut kv, NsOp::CreateBucket { name: "bkt".into() });
        if versioned {
            run(&mut kv, NsOp::SetVersioning { bucket: "bkt".into(), versioning: Versioning::Enabled });
        }
        for k in keys {
            run(
                &mut kv,
                NsOp::PutVersion { bucket: "bkt".into(), key: k.to_string(), content: Content::default() },
            );
        }
        kv
    }

    fn walk(kv: &BTreeMap<Vec<u8>, Vec<u8>>, mut q: ListQuery) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let page = list_objects(kv, "bkt", &q).expect("ok");
            assert!(page.versions.len() + page.common_prefixes.len() <= q.max_keys);
            let mut items: Vec<(String, String)> =
                page.versions.iter().map(|(k, v, _)| (k.clone(), format!("{k}@{}", v.version))).collect();
            items.extend(page.common_prefixes.iter().map(|p| (p.clone(), format!("{p}*"))));
            items.sort_by(|a, b| a.0.cmp(&b.0));
            out.extend(items.into_iter().map(|(_, label)| label));
            if !page.truncated {
                return out;
            }
            q.start_after = page.next_key;
            q.version_id_marker = page.next_version_id;
        }
    }

    #[test]
    fn pages_with_a_delimiter_roll_prefixes_up_once() {
        let kv = bucket_with(&["a/1", "a/2", "a/3", "b", "c/x/1", "c/y", "d"], false);
        let q = ListQuery { delimiter: "/".into(), max_keys: 2, ..ListQuery::default() };
        assert_eq!(walk(&kv, q), vec!["a/*", "b@4", "c/*", "d@7"]);
        let q = ListQuery { prefix: "c/".into(), delimiter: "/".into(), max_keys: 1, ..ListQuery::default() };
        assert_eq!(walk(&kv, q), vec!["c/x/*", "c/y@6"]);
        let q = ListQuery { start_after: "a/2".into(), max_keys: 1000, ..ListQuery::default() };
        assert_eq!(walk(&kv, q), vec!["a/3@3", "b@4", "c/x/1@5", "c/y@6", "d@7"]);
    }

    #[test]
    fn versions_page_inside_a_key_and_deleted_keys_are_hidden() {
        let mut kv = bucket_with(&["k", "k", "k", "m"], true);
        let mut c = Counters::default();
        crate::namespace::apply::apply(
            &mut kv,
            &mut c,
            &NsOp::DeleteObject { bucket: "bkt".into(), key: "m".into(), version_id: None },
            2,
        )
        .expect("ok")
        .expect("ok");
        let latest = ListQuery { max_keys: 1, ..ListQuery::default() };
        assert_eq!(walk(&kv, latest), vec!["k@3"]);
        let all = ListQuery { max_keys: 2, versions: true, ..ListQuery::default() };
        assert_eq!(walk(&kv, all), vec!["k@3", "k@2", "k@1", "m@5", "m@4"]);
    }
}
