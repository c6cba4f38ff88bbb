//! Applying a namespace operation to the state. Every check runs before the first write,
//! so a refused operation changes nothing.

use std::collections::BTreeMap;

use super::{keys, lifecycle};
use crate::codec::Kind;
use crate::command::Hash32;
use crate::ns_types::{
    AccessKeyRecord, BlockRef, BucketRecord, Content, KEY_MAX_BYTES, NsCode, NsOp, NsResult, PART_MIN_BYTES,
    PART_NUMBER_MAX, PartRecord, UploadRecord, VERSION_BLOCKS_MAX, VersionRecord, Versioning,
    parse_version_id, version_id,
};
use crate::state::{Kv, StateError, index_entry, index_key, read_record, write_record};
use crate::types::{Counters, RECORD_VERSION};

/// Why an operation was refused.
pub type Refusal = (NsCode, String);

/// Applies `op`: the outcome, or why it was refused (nothing written).
pub fn apply(
    kv: &mut dyn Kv,
    c: &mut Counters,
    op: &NsOp,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    match op {
        NsOp::CreateBucket { name } => create_bucket(kv, name, now_unix_ms),
        NsOp::DeleteBucket { name } => delete_bucket(kv, name),
        NsOp::SetVersioning { bucket, versioning } => {
            let mut b = match get_bucket(kv, bucket)? {
                Ok(b) => b,
                Err(r) => return Ok(Err(r)),
            };
            if *versioning == Versioning::Unversioned {
                return Ok(Err((NsCode::InvalidArgument, "versioning can be enabled or suspended".into())));
            }
            b.versioning = *versioning;
            write_record(kv, Kind::Bucket, &keys::bucket(bucket), &b)?;
            Ok(Ok(NsResult::Bucket(b)))
        }
        NsOp::PutVersion { bucket, key, content } => {
            put_version(kv, c, bucket, key, content, now_unix_ms, true)
        }
        NsOp::DeleteObject { bucket, key, version_id } => {
            delete_object(kv, c, bucket, key, version_id.as_deref(), now_unix_ms)
        }
        NsOp::CreateUpload { bucket, key, upload_id, content } => {
            if let Err(r) = get_bucket(kv, bucket)? {
                return Ok(Err(r));
            }
            if let Some(r) = check_key(key).or_else(|| check_upload_id(upload_id)) {
                return Ok(Err(r));
            }
            let ukey = keys::upload(bucket, key, upload_id);
            if kv.get(&ukey)?.is_some() {
                return Ok(Err((NsCode::InvalidArgument, format!("upload {upload_id} exists"))));
            }
            let u = UploadRecord {
                v: RECORD_VERSION,
                upload_id: upload_id.clone(),
                created_unix_ms: now_unix_ms,
                content: Content { blocks: Vec::new(), ..content.clone() },
            };
            write_record(kv, Kind::Upload, &ukey, &u)?;
            Ok(Ok(NsResult::Upload(u)))
        }
        NsOp::PutPart { bucket, key, upload_id, part } => {
            put_part(kv, c, bucket, key, upload_id, part, now_unix_ms)
        }
        NsOp::CompleteUpload { bucket, key, upload_id, parts, etag } => {
            complete_upload(kv, c, bucket, key, upload_id, parts, etag, now_unix_ms)
        }
        NsOp::AbortUpload { bucket, key, upload_id } => {
            if get_upload(kv, bucket, key, upload_id)?.is_none() {
                return Ok(Err((NsCode::NoSuchUpload, format!("no upload {upload_id} of {key}"))));
            }
            for (pkey, part) in parts_of(kv, bucket, upload_id)? {
                drop_references(kv, c, &part.blocks)?;
                kv.delete(&pkey);
            }
            kv.delete(&keys::upload(bucket, key, upload_id));
            Ok(Ok(NsResult::Done))
        }
        NsOp::SetTags { bucket, key, version_id, tags } => {
            if let Err(r) = get_bucket(kv, bucket)? {
                return Ok(Err(r));
            }
            let found = match find_version(kv, bucket, key, version_id.as_deref())? {
                Ok(v) => v,
                Err(r) => return Ok(Err(r)),
            };
            let (vkey, mut v) = found;
            if v.delete_marker {
                return Ok(Err((NsCode::MethodNotAllowed, "a delete marker has no tags".into())));
            }
            v.content.tags = tags.clone();
            write_record(kv, Kind::Version, &vkey, &v)?;
            Ok(Ok(NsResult::Version { key: key.clone(), version: v }))
        }
        NsOp::CreateKey { key } => {
            let k = keys::access_key(&key.access_key);
            if key.access_key.is_empty() || key.access_key.len() > 128 || key.secret_key.len() < 8 {
                return Ok(Err((
                    NsCode::InvalidArgument,
                    "an access key id of 1-128 bytes and a secret of 8+".into(),
                )));
            }
            if kv.get(&k)?.is_some() {
                return Ok(Err((NsCode::KeyExists, format!("access key {} exists", key.access_key))));
            }
            let record = AccessKeyRecord { v: RECORD_VERSION, created_unix_ms: now_unix_ms, ..key.clone() };
            write_record(kv, Kind::AccessKey, &k, &record)?;
            Ok(Ok(NsResult::Key(record)))
        }
        NsOp::SetLifecycle { bucket, rules } => {
            if let Err(r) = get_bucket(kv, bucket)? {
                return Ok(Err(r));
            }
            if let Err(r) = lifecycle::check(rules) {
                return Ok(Err(r));
            }
            let k = keys::lifecycle(bucket);
            if rules.is_empty() {
                kv.delete(&k);
            } else {
                let record = lifecycle::LifecycleRecord { v: RECORD_VERSION, rules: rules.clone() };
                write_record(kv, Kind::Lifecycle, &k, &record)?;
            }
            Ok(Ok(NsResult::Done))
        }
        NsOp::Expire { bucket, key, day_ms } => expire(kv, c, bucket, key, *day_ms, now_unix_ms),
        NsOp::ExpireUpload { bucket, key, upload_id, day_ms } => {
            let rules = lifecycle::rules_of(kv, bucket)?;
            match get_upload(kv, bucket, key, upload_id)? {
                Some(u) if lifecycle::abort_due(&rules, key, u.created_unix_ms, now_unix_ms, *day_ms) => {
                    apply(
                        kv,
                        c,
                        &NsOp::AbortUpload {
                            bucket: bucket.clone(),
                            key: key.clone(),
                            upload_id: upload_id.clone(),
                        },
                        now_unix_ms,
                    )
                }
                _ => Ok(Ok(NsResult::Done)),
            }
        }
        NsOp::DeleteKey { access_key } => {
            let k = keys::access_key(access_key);
            if kv.get(&k)?.is_none() {
                return Ok(Err((NsCode::NoSuchAccessKey, format!("no access key {access_key}"))));
            }
            kv.delete(&k);
            Ok(Ok(NsResult::Done))
        }
    }
}

/// Whether `name` is a valid S3 bucket name (3-63 of a-z 0-9 . -, starting and ending
/// with a letter or digit, no "..", not an IP address).
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

fn check_key(key: &str) -> Option<Refusal> {
    if key.is_empty() || key.len() > KEY_MAX_BYTES || key.as_bytes().contains(&0) {
        return Some((
            NsCode::InvalidArgument,
            format!("an object key is 1-{KEY_MAX_BYTES} bytes without NUL"),
        ));
    }
    None
}

fn check_upload_id(id: &str) -> Option<Refusal> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some((NsCode::NoSuchUpload, format!("no upload {id}")));
    }
    None
}

fn check_content(content: &Content) -> Option<Refusal> {
    if content.blocks.len() > VERSION_BLOCKS_MAX {
        return Some((NsCode::InvalidArgument, format!("an object has at most {VERSION_BLOCKS_MAX} blocks")));
    }
    let sum: u64 = content.blocks.iter().map(|b| u64::from(b.length_bytes)).sum();
    if sum != content.size_bytes {
        return Some((
            NsCode::InvalidArgument,
            format!("the blocks hold {sum} bytes, the object {}", content.size_bytes),
        ));
    }
    None
}

/// Reads a bucket.
pub fn bucket(kv: &dyn Kv, name: &str) -> Result<Option<BucketRecord>, StateError> {
    read_record(kv, Kind::Bucket, &keys::bucket(name))
}

fn get_bucket(kv: &dyn Kv, name: &str) -> Result<Result<BucketRecord, Refusal>, StateError> {
    Ok(bucket(kv, name)?.ok_or((NsCode::NoSuchBucket, format!("no bucket {name}"))))
}

/// Reads an upload.
pub fn get_upload(
    kv: &dyn Kv,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Option<UploadRecord>, StateError> {
    if check_upload_id(upload_id).is_some() || check_key(key).is_some() {
        return Ok(None);
    }
    read_record(kv, Kind::Upload, &keys::upload(bucket, key, upload_id))
}

/// The parts of an upload, in part-number order, with their keys.
pub fn parts_of(
    kv: &dyn Kv,
    bucket: &str,
    upload_id: &str,
) -> Result<Vec<(Vec<u8>, PartRecord)>, StateError> {
    kv.scan(&keys::parts_of_upload(bucket, upload_id), PART_NUMBER_MAX as usize)?
        .into_iter()
        .map(|(k, v)| crate::state::decode_record(Kind::Part, &k, &v).map(|p| (k, p)))
        .collect()
}

/// Every version of `key`, newest first, with their keys.
pub fn versions_of(
    kv: &dyn Kv,
    bucket: &str,
    key: &str,
) -> Result<Vec<(Vec<u8>, VersionRecord)>, StateError> {
    kv.scan(&keys::versions_of_key(bucket, key), usize::MAX)?
        .into_iter()
        .map(|(k, v)| crate::state::decode_record(Kind::Version, &k, &v).map(|r| (k, r)))
        .collect()
}

/// The version `version_id` of `key` (none: the latest, which must not be a delete
/// marker), with its record key.
pub fn find_version(
    kv: &dyn Kv,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Result<(Vec<u8>, VersionRecord), Refusal>, StateError> {
    if check_key(key).is_some() {
        return Ok(Err((NsCode::NoSuchKey, format!("no key {key}"))));
    }
    match version_id {
        None => {
            let first = kv.scan(&keys::versions_of_key(bucket, key), 1)?.into_iter().next();
            match first {
                Some((k, v)) => {
                    let r: VersionRecord = crate::state::decode_record(Kind::Version, &k, &v)?;
                    if r.delete_marker {
                        return Ok(Err((NsCode::NoSuchKey, format!("{key} is deleted"))));
                    }
                    Ok(Ok((k, r)))
                }
                None => Ok(Err((NsCode::NoSuchKey, format!("no key {key}")))),
            }
        }
        Some(text) => {
            let missing = || (NsCode::NoSuchVersion, format!("no version {text} of {key}"));
            match parse_version_id(text) {
                None => Ok(Err((NsCode::InvalidArgument, format!("invalid version id {text}")))),
                Some(None) => Ok(versions_of(kv, bucket, key)?
                    .into_iter()
                    .find(|(_, v)| v.null_version)
                    .ok_or_else(missing)),
                Some(Some(n)) => {
                    let k = keys::version(bucket, key, n);
                    Ok(read_record::<VersionRecord>(kv, Kind::Version, &k)?
                        .map(|v| (k, v))
                        .ok_or_else(missing))
                }
            }
        }
    }
}

/// References per hash of `blocks` (a block named twice counts twice).
fn counted(blocks: &[BlockRef]) -> BTreeMap<Hash32, u64> {
    let mut out = BTreeMap::new();
    for b in blocks {
        *out.entry(Hash32(b.hash)).or_insert(0) += 1;
    }
    out
}

/// The blocks of `blocks` that are not in the index (first 16).
fn missing_blocks(kv: &dyn Kv, blocks: &[BlockRef]) -> Result<Vec<Hash32>, StateError> {
    let mut missing = Vec::new();
    for hash in counted(blocks).keys() {
        if index_entry(kv, hash)?.is_none() {
            missing.push(*hash);
            if missing.len() == 16 {
                break;
            }
        }
    }
    Ok(missing)
}

fn missing_refusal(missing: &[Hash32]) -> Refusal {
    let names: Vec<String> = missing.iter().map(|h| h.to_string()).collect();
    (NsCode::MissingBlocks, format!("blocks not in the index: {}", names.join(",")))
}

/// Adds one reference per occurrence; every block must be indexed (checked first).
fn add_references(kv: &mut dyn Kv, blocks: &[BlockRef]) -> Result<(), StateError> {
    for (hash, n) in counted(blocks) {
        if let Some(mut e) = index_entry(kv, &hash)? {
            e.references += n;
            kv.put(&index_key(&hash), e.encode());
        }
    }
    Ok(())
}

/// Drops one reference per occurrence; an entry left with none leaves the index (its
/// bytes are garbage for compaction), as `DropReferences` does.
pub fn drop_references(kv: &mut dyn Kv, c: &mut Counters, blocks: &[BlockRef]) -> Result<(), StateError> {
    for (hash, n) in counted(blocks) {
        if let Some(mut e) = index_entry(kv, &hash)? {
            e.references = e.references.saturating_sub(n);
            if e.references == 0 {
                kv.delete(&index_key(&hash));
                c.index_entries = c.index_entries.saturating_sub(1);
            } else {
                kv.put(&index_key(&hash), e.encode());
            }
        }
    }
    Ok(())
}

fn create_bucket(
    kv: &mut dyn Kv,
    name: &str,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    if !valid_bucket_name(name) {
        return Ok(Err((NsCode::InvalidArgument, format!("invalid bucket name {name}"))));
    }
    if bucket(kv, name)?.is_some() {
        return Ok(Err((NsCode::BucketAlreadyOwnedByYou, format!("bucket {name} exists"))));
    }
    let b = BucketRecord {
        v: RECORD_VERSION,
        name: name.to_string(),
        created_unix_ms: now_unix_ms,
        versioning: Versioning::Unversioned,
        next_version: 1,
    };
    write_record(kv, Kind::Bucket, &keys::bucket(name), &b)?;
    Ok(Ok(NsResult::Bucket(b)))
}

fn delete_bucket(kv: &mut dyn Kv, name: &str) -> Result<Result<NsResult, Refusal>, StateError> {
    if let Err(r) = get_bucket(kv, name)? {
        return Ok(Err(r));
    }
    if !kv.scan(&keys::versions_of_bucket(name), 1)?.is_empty()
        || !kv.scan(&keys::uploads_of_bucket(name), 1)?.is_empty()
    {
        return Ok(Err((NsCode::BucketNotEmpty, format!("bucket {name} holds objects or uploads"))));
    }
    kv.delete(&keys::bucket(name));
    kv.delete(&keys::lifecycle(name));
    Ok(Ok(NsResult::Done))
}

/// [`NsOp::Expire`]: what the bucket's rules have due for `key` now, done.
fn expire(
    kv: &mut dyn Kv,
    c: &mut Counters,
    bucket: &str,
    key: &str,
    day_ms: u64,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    if check_key(key).is_some() || get_bucket(kv, bucket)?.is_err() {
        return Ok(Ok(NsResult::Done));
    }
    let rules = lifecycle::rules_of(kv, bucket)?;
    let versions: Vec<VersionRecord> = versions_of(kv, bucket, key)?.into_iter().map(|(_, v)| v).collect();
    for due in lifecycle::due(&rules, key, &versions, now_unix_ms, day_ms) {
        let version_id = match due {
            lifecycle::Due::ExpireCurrent => None,
            lifecycle::Due::Remove(n) => match versions.iter().find(|v| v.version == n) {
                Some(v) => Some(crate::ns_types::version_id(v)),
                None => continue,
            },
        };
        // Each is a delete the rules allow; one refused (it cannot be: the versions were
        // just read) would change nothing.
        let _ = delete_object(kv, c, bucket, key, version_id.as_deref(), now_unix_ms)?;
    }
    Ok(Ok(NsResult::Done))
}

/// Adds a version of `key` with `content` (a delete marker when `content` is `None`...
/// see [`insert_version`]); `reference` adds the blocks' references (a completed upload's
/// blocks already hold theirs).
fn put_version(
    kv: &mut dyn Kv,
    c: &mut Counters,
    bucket_name: &str,
    key: &str,
    content: &Content,
    now_unix_ms: u64,
    reference: bool,
) -> Result<Result<NsResult, Refusal>, StateError> {
    let b = match get_bucket(kv, bucket_name)? {
        Ok(b) => b,
        Err(r) => return Ok(Err(r)),
    };
    if let Some(r) = check_key(key).or_else(|| check_content(content)) {
        return Ok(Err(r));
    }
    if reference {
        let missing = missing_blocks(kv, &content.blocks)?;
        if !missing.is_empty() {
            return Ok(Err(missing_refusal(&missing)));
        }
        add_references(kv, &content.blocks)?;
    }
    let v = insert_version(kv, c, b, key, content.clone(), false, now_unix_ms)?;
    Ok(Ok(NsResult::Version { key: key.to_string(), version: v }))
}

/// Writes a new version (the checks done): while the bucket is not versioned it replaces
/// the key's null version, whose references are dropped.
fn insert_version(
    kv: &mut dyn Kv,
    c: &mut Counters,
    mut b: BucketRecord,
    key: &str,
    content: Content,
    delete_marker: bool,
    now_unix_ms: u64,
) -> Result<VersionRecord, StateError> {
    let null_version = b.versioning != Versioning::Enabled;
    if null_version {
        for (vkey, old) in versions_of(kv, &b.name, key)? {
            if old.null_version {
                drop_references(kv, c, &old.content.blocks)?;
                kv.delete(&vkey);
            }
        }
    }
    let v = VersionRecord {
        v: RECORD_VERSION,
        version: b.next_version,
        null_version,
        delete_marker,
        created_unix_ms: now_unix_ms,
        content,
    };
    b.next_version += 1;
    write_record(kv, Kind::Version, &keys::version(&b.name, key, v.version), &v)?;
    write_record(kv, Kind::Bucket, &keys::bucket(&b.name), &b)?;
    Ok(v)
}

fn delete_object(
    kv: &mut dyn Kv,
    c: &mut Counters,
    bucket_name: &str,
    key: &str,
    version: Option<&str>,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    let b = match get_bucket(kv, bucket_name)? {
        Ok(b) => b,
        Err(r) => return Ok(Err(r)),
    };
    if let Some(r) = check_key(key) {
        return Ok(Err(r));
    }
    if let Some(text) = version {
        return match find_version(kv, bucket_name, key, Some(text))? {
            Ok((vkey, v)) => {
                drop_references(kv, c, &v.content.blocks)?;
                kv.delete(&vkey);
                Ok(Ok(NsResult::Deleted { delete_marker: v.delete_marker, version_id: version_id(&v) }))
            }
            // S3 answers a delete of a version that is not there with success.
            Err((NsCode::NoSuchVersion, _)) => {
                Ok(Ok(NsResult::Deleted { delete_marker: false, version_id: text.to_string() }))
            }
            Err(r) => Ok(Err(r)),
        };
    }
    if b.versioning == Versioning::Unversioned {
        for (vkey, old) in versions_of(kv, bucket_name, key)? {
            drop_references(kv, c, &old.content.blocks)?;
            kv.delete(&vkey);
        }
        return Ok(Ok(NsResult::Deleted { delete_marker: false, version_id: String::new() }));
    }
    let marker = insert_version(kv, c, b, key, Content::default(), true, now_unix_ms)?;
    Ok(Ok(NsResult::Deleted { delete_marker: true, version_id: version_id(&marker) }))
}

fn put_part(
    kv: &mut dyn Kv,
    c: &mut Counters,
    bucket: &str,
    key: &str,
    upload_id: &str,
    part: &PartRecord,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    if get_upload(kv, bucket, key, upload_id)?.is_none() {
        return Ok(Err((NsCode::NoSuchUpload, format!("no upload {upload_id} of {key}"))));
    }
    if !(1..=PART_NUMBER_MAX).contains(&part.part_number) {
        return Ok(Err((NsCode::InvalidArgument, format!("part numbers run from 1 to {PART_NUMBER_MAX}"))));
    }
    let content = Content { size_bytes: part.size_bytes, blocks: part.blocks.clone(), ..Content::default() };
    if let Some(r) = check_content(&content) {
        return Ok(Err(r));
    }
    let missing = missing_blocks(kv, &part.blocks)?;
    if !missing.is_empty() {
        return Ok(Err(missing_refusal(&missing)));
    }
    add_references(kv, &part.blocks)?;
    let pkey = keys::part(bucket, upload_id, part.part_number);
    if let Some(old) = read_record::<PartRecord>(kv, Kind::Part, &pkey)? {
        drop_references(kv, c, &old.blocks)?;
    }
    let record = PartRecord { v: RECORD_VERSION, created_unix_ms: now_unix_ms, ..part.clone() };
    write_record(kv, Kind::Part, &pkey, &record)?;
    Ok(Ok(NsResult::Part(record)))
}

#[allow(clippy::too_many_arguments)]
fn complete_upload(
    kv: &mut dyn Kv,
    c: &mut Counters,
    bucket_name: &str,
    key: &str,
    upload_id: &str,
    listed: &[(u32, String)],
    etag: &str,
    now_unix_ms: u64,
) -> Result<Result<NsResult, Refusal>, StateError> {
    let b = match get_bucket(kv, bucket_name)? {
        Ok(b) => b,
        Err(r) => return Ok(Err(r)),
    };
    let Some(upload) = get_upload(kv, bucket_name, key, upload_id)? else {
        return Ok(Err((NsCode::NoSuchUpload, format!("no upload {upload_id} of {key}"))));
    };
    if listed.is_empty() {
        return Ok(Err((NsCode::InvalidArgument, "a completion lists at least one part".into())));
    }
    if listed.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Ok(Err((NsCode::InvalidPartOrder, "parts must be listed in ascending order".into())));
    }
    let stored: BTreeMap<u32, (Vec<u8>, PartRecord)> =
        parts_of(kv, bucket_name, upload_id)?.into_iter().map(|(k, p)| (p.part_number, (k, p))).collect();
    let mut content = Content { etag: etag.to_string(), ..upload.content.clone() };
    for (i, (number, tag)) in listed.iter().enumerate() {
        let Some((_, p)) = stored.get(number) else {
            return Ok(Err((NsCode::InvalidPart, format!("part {number} was not uploaded"))));
        };
        if p.etag.trim_matches('"') != tag.trim_matches('"') {
            return Ok(Err((NsCode::InvalidPart, format!("part {number}'s ETag is {}, not {tag}", p.etag))));
        }
        if i + 1 < listed.len() && p.size_bytes < PART_MIN_BYTES {
            return Ok(Err((
                NsCode::EntityTooSmall,
                format!("part {number} is {} bytes; all but the last need {PART_MIN_BYTES}", p.size_bytes),
            )));
        }
        content.size_bytes += p.size_bytes;
        content.blocks.extend_from_slice(&p.blocks);
    }
    if let Some(r) = check_content(&content) {
        return Ok(Err(r));
    }
    // The listed parts' references pass to the version; the others' are dropped.
    for (number, (pkey, p)) in &stored {
        if listed.binary_search_by_key(number, |(n, _)| *n).is_err() {
            drop_references(kv, c, &p.blocks)?;
        }
        kv.delete(pkey);
    }
    kv.delete(&keys::upload(bucket_name, key, upload_id));
    let v = insert_version(kv, c, b, key, content, false, now_unix_ms)?;
    Ok(Ok(NsResult::Version { key: key.to_string(), version: v }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use super::*;
    use crate::types::IndexEntry;

    fn block(n: u8, len: u32) -> BlockRef {
        BlockRef { hash: [n; 32], length_bytes: len }
    }

    fn index(kv: &mut Map<Vec<u8>, Vec<u8>>, n: u8, references: u64) {
        let e = IndexEntry {
            volume_id: 1,
            offset_bytes: 0,
            payload_bytes: 1,
            crc32: 0,
            references,
            digest: None,
        };
        kv.insert(index_key(&Hash32([n; 32])).to_vec(), e.encode());
    }

    fn refs(kv: &Map<Vec<u8>, Vec<u8>>, n: u8) -> Option<u64> {
        index_entry(kv, &Hash32([n; 32])).expect("ok").map(|e| e.references)
    }

    fn run(kv: &mut Map<Vec<u8>, Vec<u8>>, op: NsOp) -> Result<NsResult, Refusal> {
        let mut c = Counters::default();
        apply(kv, &mut c, &op, 1000).expect("ok")
    }

    fn content(blocks: Vec<BlockRef>) -> Content {
        Content {
            size_bytes: blocks.iter().map(|b| u64::from(b.length_bytes)).sum(),
            blocks,
            ..Content::default()
        }
    }

    #[test]
    fn a_version_references_its_blocks_and_an_overwrite_drops_them() {
        let mut kv = Map::new();
        index(&mut kv, 1, 0);
        index(&mut kv, 2, 0);
        run(&mut kv, NsOp::CreateBucket { name: "bkt".into() }).expect("ok");
        let put = |kv: &mut Map<_, _>, blocks| {
            run(kv, NsOp::PutVersion { bucket: "bkt".into(), key: "k".into(), content: content(blocks) })
        };
        put(&mut kv, vec![block(1, 1), block(1, 1), block(2, 1)]).expect("ok");
        assert_eq!((refs(&kv, 1), refs(&kv, 2)), (Some(2), Some(1)));
        // Unversioned: the null version is replaced and its references dropped.
        put(&mut kv, vec![block(2, 1)]).expect("ok");
        assert_eq!((refs(&kv, 1), refs(&kv, 2)), (None, Some(1)));
        // A block not in the index: refused, nothing changed.
        let before = kv.clone();
        assert_eq!(
            put(&mut kv, vec![block(2, 1), block(9, 1)]).expect_err("refused").0,
            NsCode::MissingBlocks
        );
        assert_eq!(kv, before);
        // The bucket is not empty; the delete drops the last reference.
        assert_eq!(
            run(&mut kv, NsOp::DeleteBucket { name: "bkt".into() }).expect_err("refused").0,
            NsCode::BucketNotEmpty
        );
        run(&mut kv, NsOp::DeleteObject { bucket: "bkt".into(), key: "k".into(), version_id: None })
            .expect("ok");
        assert_eq!(refs(&kv, 2), None);
        run(&mut kv, NsOp::DeleteBucket { name: "bkt".into() }).expect("ok");
    }

    fn at(kv: &mut Map<Vec<u8>, Vec<u8>>, op: NsOp, now: u64) -> Result<NsResult, Refusal> {
        let mut c = Counters::default();
        apply(kv, &mut c, &op, now).expect("ok")
    }

    #[test]
    fn expiry_decides_at_its_own_time_drops_references_and_never_undoes_a_newer_put() {
        use crate::namespace::lifecycle::LifecycleRule;
        let mut kv = Map::new();
        index(&mut kv, 1, 0);
        index(&mut kv, 2, 0);
        let (b, k) = ("bkt".to_string(), "logs/k".to_string());
        at(&mut kv, NsOp::CreateBucket { name: b.clone() }, 0).expect("ok");
        at(&mut kv, NsOp::SetVersioning { bucket: b.clone(), versioning: Versioning::Enabled }, 0)
            .expect("ok");
        let rule = LifecycleRule {
            enabled: true,
            prefix: "logs/".into(),
            noncurrent_days: Some(1),
            expiration_days: Some(5),
            ..LifecycleRule::default()
        };
        at(&mut kv, NsOp::SetLifecycle { bucket: b.clone(), rules: vec![rule] }, 0).expect("ok");
        let put = |kv: &mut Map<_, _>, n: u8, now: u64| {
            at(
                kv,
                NsOp::PutVersion { bucket: b.clone(), key: k.clone(), content: content(vec![block(n, 1)]) },
                now,
            )
        };
        put(&mut kv, 1, 100).expect("ok");
        put(&mut kv, 2, 200).expect("ok");
        let expire = NsOp::Expire { bucket: b.clone(), key: k.clone(), day_ms: 1000 };
        // Before its day the noncurrent version stays; nothing at all changes.
        let before = kv.clone();
        at(&mut kv, expire.clone(), 1199).expect("ok");
        assert_eq!(kv, before);
        // At it, the noncurrent version goes with its block's reference.
        at(&mut kv, expire.clone(), 1200).expect("ok");
        assert_eq!((refs(&kv, 1), refs(&kv, 2)), (None, Some(1)));
        assert_eq!(versions_of(&kv, &b, &k).expect("ok").len(), 1);
        // The current version is due at 5200, but a put at 5100 (after a sweep saw it due)
        // makes the new one current: the expiry, applied later, only ages out the replaced
        // version once it is due, never the new one.
        put(&mut kv, 2, 5100).expect("ok");
        at(&mut kv, expire.clone(), 5300).expect("ok");
        let left = versions_of(&kv, &b, &k).expect("ok");
        assert_eq!(left.len(), 2, "the new version stays current, the old one is not yet due as noncurrent");
        assert!(!left[0].1.delete_marker && left[0].1.created_unix_ms == 5100);
        // Rules removed: expiry does nothing; the bucket's deletion removes its rules too.
        at(&mut kv, NsOp::SetLifecycle { bucket: b.clone(), rules: vec![] }, 9000).expect("ok");
        let before = kv.clone();
        at(&mut kv, expire, 99_000).expect("ok");
        assert_eq!(kv, before);
    }

    #[test]
    fn versioned_deletes_add_markers_and_versions_go_one_by_one() {
        let mut kv = Map::new();
        index(&mut kv, 1, 0);
        run(&mut kv, NsOp::CreateBucket { name: "bkt".into() }).expect("ok");
        run(&mut kv, NsOp::SetVersioning { bucket: "bkt".into(), versioning: Versioning::Enabled })
            .expect("ok");
        for _ in 0..2 {
            run(
                &mut kv,
                NsOp::PutVersion {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    content: content(vec![block(1, 1)]),
                },
            )
            .expect("ok");
        }
        assert_eq!(refs(&kv, 1), Some(2));
        let Ok(NsResult::Deleted { delete_marker: true, version_id: marker }) =
            run(&mut kv, NsOp::DeleteObject { bucket: "bkt".into(), key: "k".into(), version_id: None })
        else {
            panic!("no marker")
        };
        assert_eq!(
            find_version(&kv, "bkt", "k", None).expect("ok").expect_err("refused").0,
            NsCode::NoSuchKey
        );
        assert_eq!(refs(&kv, 1), Some(2));
        run(&mut kv, NsOp::DeleteObject { bucket: "bkt".into(), key: "k".into(), version_id: Some(marker) })
            .expect("ok");
        let (_, latest) = find_version(&kv, "bkt", "k", None).expect("ok").expect("ok");
        run(
            &mut kv,
            NsOp::DeleteObject {
                bucket: "bkt".into(),
                key: "k".into(),
                version_id: Some(version_id(&latest)),
            },
        )
        .expect("ok");
        assert_eq!(refs(&kv, 1), Some(1));
    }

    #[test]
    fn completing_an_upload_checks_order_and_etags_and_keeps_listed_parts_only() {
        let mut kv = Map::new();
        for n in 1..=3 {
            index(&mut kv, n, 0);
        }
        run(&mut kv, NsOp::CreateBucket { name: "bkt".into() }).expect("ok");
        let upload = |op: fn(String, String, String) -> NsOp| op("bkt".into(), "k".into(), "u1".into());
        run(
            &mut kv,
            upload(|bucket, key, upload_id| NsOp::CreateUpload {
                bucket,
                key,
                upload_id,
                content: Content::default(),
            }),
        )
        .expect("ok");
        for n in 1..=3u8 {
            let part = PartRecord {
                v: 1,
                part_number: u32::from(n),
                etag: format!("\"e{n}\""),
                size_bytes: PART_MIN_BYTES,
                created_unix_ms: 0,
                blocks: vec![block(n, PART_MIN_BYTES as u32)],
                checksums: Vec::new(),
            };
            run(
                &mut kv,
                NsOp::PutPart { bucket: "bkt".into(), key: "k".into(), upload_id: "u1".into(), part },
            )
            .expect("ok");
        }
        let complete = |kv: &mut Map<_, _>, parts: Vec<(u32, &str)>| {
            run(
                kv,
                NsOp::CompleteUpload {
                    bucket: "bkt".into(),
                    key: "k".into(),
                    upload_id: "u1".into(),
                    parts: parts.into_iter().map(|(n, e)| (n, e.to_string())).collect(),
                    etag: "\"x-2\"".into(),
                },
            )
        };
        let before = kv.clone();
        assert_eq!(
            complete(&mut kv, vec![(3, "e3"), (1, "e1")]).expect_err("refused").0,
            NsCode::InvalidPartOrder
        );
        assert_eq!(
            complete(&mut kv, vec![(1, "e1"), (3, "zz")]).expect_err("refused").0,
            NsCode::InvalidPart
        );
        assert_eq!(kv, before);
        complete(&mut kv, vec![(1, "\"e1\""), (3, "e3")]).expect("ok");
        assert_eq!((refs(&kv, 1), refs(&kv, 2), refs(&kv, 3)), (Some(1), None, Some(1)));
        let (_, v) = find_version(&kv, "bkt", "k", None).expect("ok").expect("ok");
        assert_eq!(v.content.size_bytes, 2 * PART_MIN_BYTES);
        assert!(parts_of(&kv, "bkt", "u1").expect("ok").is_empty());
    }
}
