//! The namespace's RPCs (`NsWrite`, `NsGet*`, `NsList*` of the master API): requests
//! checked and bounded, operations proposed through Raft (exactly once with a request id),
//! reads answered linearizably from the leader's state. The `Master` service's handlers
//! call these.

use cellar_proto::master as pb;
use tonic::Status;

use crate::MasterRaft;
use crate::command;
use crate::errors::{bad_request, internal, status};
use crate::namespace::apply::{bucket, find_version, get_upload, valid_bucket_name};
use crate::namespace::keys;
use crate::namespace::lifecycle::{self, LifecycleRule};
use crate::namespace::list::{self, ListQuery, Scan, Visit};
use crate::ns_batcher::NsBatcher;
use crate::ns_types::{
    AccessKeyRecord, BlockRef, BucketRecord, Content, NsCode, NsOp, NsResult, PartRecord, UploadRecord,
    VersionRecord, Versioning, version_id,
};
use crate::raft_calls::linearizable;
use crate::state::{Kv, StateError, decode_record};
use crate::store::sm::StateReader;
use crate::wire::{bounded, index_pb, request_id};

/// User metadata and tags: pairs at most per object.
pub const PAIRS_MAX: usize = 64;
/// User metadata: bytes of names and values together at most (S3's limit is 2 KB).
pub const METADATA_MAX_BYTES: usize = 2048;
/// Parts listed in one completion at most.
pub const COMPLETE_PARTS_MAX: usize = 10_000;

impl Scan for StateReader {
    fn for_each(&self, prefix: &[u8], start: &[u8], f: &mut Visit<'_>) -> Result<(), StateError> {
        StateReader::for_each(self, prefix, start, f)
    }
}

fn ns_status(code: NsCode, detail: impl Into<String>) -> Status {
    crate::errors::command_error(&command::CommandError::Namespace { code, detail: detail.into() })
}

fn pairs(field: &str, items: &[pb::Pair]) -> Result<Vec<(String, String)>, Status> {
    if items.len() > PAIRS_MAX {
        return Err(bad_request(format!("at most {PAIRS_MAX} {field}")));
    }
    items
        .iter()
        .map(|p| {
            bounded(field, &p.name)?;
            bounded(field, &p.value)?;
            Ok((p.name.clone(), p.value.clone()))
        })
        .collect()
}

fn pairs_pb(items: &[(String, String)]) -> Vec<pb::Pair> {
    items.iter().map(|(name, value)| pb::Pair { name: name.clone(), value: value.clone() }).collect()
}

fn blocks(items: &[pb::BlockRef]) -> Result<Vec<BlockRef>, Status> {
    if items.len() > crate::ns_types::VERSION_BLOCKS_MAX {
        return Err(bad_request(format!("at most {} blocks", crate::ns_types::VERSION_BLOCKS_MAX)));
    }
    items
        .iter()
        .map(|b| {
            let hash: [u8; 32] =
                b.hash.as_slice().try_into().map_err(|_| bad_request("a hash is 32 bytes"))?;
            Ok(BlockRef { hash, length_bytes: b.length_bytes })
        })
        .collect()
}

fn blocks_pb(items: &[BlockRef]) -> Vec<pb::BlockRef> {
    items.iter().map(|b| pb::BlockRef { hash: b.hash.to_vec(), length_bytes: b.length_bytes }).collect()
}

fn content(f: Option<pb::VersionFields>) -> Result<Content, Status> {
    let f = f.unwrap_or_default();
    bounded("etag", &f.etag)?;
    bounded("content type", &f.content_type)?;
    let metadata = pairs("metadata", &f.metadata)?;
    if metadata.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() > METADATA_MAX_BYTES {
        return Err(bad_request(format!("user metadata is at most {METADATA_MAX_BYTES} bytes")));
    }
    Ok(Content {
        size_bytes: f.size_bytes,
        etag: f.etag,
        content_type: f.content_type,
        metadata,
        tags: pairs("tags", &f.tags)?,
        checksums: pairs("checksums", &f.checksums)?,
        blocks: blocks(&f.blocks)?,
    })
}

/// A content on the wire; `with_blocks` adds its block list.
pub fn content_pb(c: &Content, with_blocks: bool) -> pb::VersionFields {
    pb::VersionFields {
        size_bytes: c.size_bytes,
        etag: c.etag.clone(),
        content_type: c.content_type.clone(),
        metadata: pairs_pb(&c.metadata),
        tags: pairs_pb(&c.tags),
        checksums: pairs_pb(&c.checksums),
        blocks: if with_blocks { blocks_pb(&c.blocks) } else { Vec::new() },
    }
}

fn versioning_pb(v: Versioning) -> pb::Versioning {
    match v {
        Versioning::Unversioned => pb::Versioning::Unversioned,
        Versioning::Enabled => pb::Versioning::Enabled,
        Versioning::Suspended => pb::Versioning::Suspended,
    }
}

fn bucket_pb(b: &BucketRecord) -> pb::Bucket {
    pb::Bucket {
        name: b.name.clone(),
        created_unix_ms: b.created_unix_ms,
        versioning: versioning_pb(b.versioning).into(),
        lifecycle: Vec::new(),
    }
}

fn version_pb(bucket: &str, key: &str, v: &VersionRecord, is_latest: bool, with_blocks: bool) -> pb::Version {
    pb::Version {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version_id: version_id(v),
        delete_marker: v.delete_marker,
        created_unix_ms: v.created_unix_ms,
        fields: Some(content_pb(&v.content, with_blocks)),
        is_latest,
    }
}

fn upload_pb(bucket: &str, key: &str, u: &UploadRecord) -> pb::Upload {
    pb::Upload {
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: u.upload_id.clone(),
        created_unix_ms: u.created_unix_ms,
        fields: Some(content_pb(&u.content, false)),
    }
}

fn part_pb(p: &PartRecord, with_blocks: bool) -> pb::Part {
    pb::Part {
        part_number: p.part_number,
        etag: p.etag.clone(),
        size_bytes: p.size_bytes,
        created_unix_ms: p.created_unix_ms,
        blocks: if with_blocks { blocks_pb(&p.blocks) } else { Vec::new() },
        checksums: pairs_pb(&p.checksums),
    }
}

fn key_pb(k: &AccessKeyRecord, with_secret: bool) -> pb::AccessKey {
    pb::AccessKey {
        access_key: k.access_key.clone(),
        secret_key: if with_secret { k.secret_key.clone() } else { String::new() },
        name: k.name.clone(),
        created_unix_ms: k.created_unix_ms,
    }
}

fn op_of(op: pb::ns_write_request::Op) -> Result<(NsOp, String, String), Status> {
    use pb::ns_write_request::Op;
    let none = String::new;
    Ok(match op {
        Op::CreateBucket(o) => {
            if !valid_bucket_name(&o.name) {
                return Err(status(
                    tonic::Code::InvalidArgument,
                    "InvalidBucketName",
                    format!("invalid bucket name {:?}", o.name),
                ));
            }
            (NsOp::CreateBucket { name: o.name }, none(), none())
        }
        Op::DeleteBucket(o) => (NsOp::DeleteBucket { name: o.name }, none(), none()),
        Op::SetVersioning(o) => {
            let versioning = match pb::Versioning::try_from(o.versioning) {
                Ok(pb::Versioning::Enabled) => Versioning::Enabled,
                Ok(pb::Versioning::Suspended) => Versioning::Suspended,
                _ => return Err(bad_request("versioning is enabled or suspended")),
            };
            (NsOp::SetVersioning { bucket: o.bucket, versioning }, none(), none())
        }
        Op::PutVersion(o) => {
            let (bucket, key) = (o.bucket.clone(), o.key.clone());
            (put_version_op(o)?, bucket, key)
        }
        Op::DeleteObject(o) => (
            NsOp::DeleteObject { bucket: o.bucket.clone(), key: o.key.clone(), version_id: o.version_id },
            o.bucket,
            o.key,
        ),
        Op::CreateUpload(o) => {
            let c = content(o.fields)?;
            (
                NsOp::CreateUpload {
                    bucket: o.bucket.clone(),
                    key: o.key.clone(),
                    upload_id: o.upload_id,
                    content: c,
                },
                o.bucket,
                o.key,
            )
        }
        Op::PutPart(o) => {
            let p = o.part.unwrap_or_default();
            bounded("etag", &p.etag)?;
            let part = PartRecord {
                v: crate::types::RECORD_VERSION,
                part_number: p.part_number,
                etag: p.etag,
                size_bytes: p.size_bytes,
                created_unix_ms: 0,
                blocks: blocks(&p.blocks)?,
                checksums: pairs("checksums", &p.checksums)?,
            };
            (
                NsOp::PutPart { bucket: o.bucket.clone(), key: o.key.clone(), upload_id: o.upload_id, part },
                o.bucket,
                o.key,
            )
        }
        Op::CompleteUpload(o) => {
            if o.parts.len() > COMPLETE_PARTS_MAX {
                return Err(bad_request(format!("at most {COMPLETE_PARTS_MAX} parts")));
            }
            for p in &o.parts {
                bounded("etag", &p.etag)?;
            }
            bounded("etag", &o.etag)?;
            let parts = o.parts.into_iter().map(|p| (p.part_number, p.etag)).collect();
            (
                NsOp::CompleteUpload {
                    bucket: o.bucket.clone(),
                    key: o.key.clone(),
                    upload_id: o.upload_id,
                    parts,
                    etag: o.etag,
                },
                o.bucket,
                o.key,
            )
        }
        Op::AbortUpload(o) => (
            NsOp::AbortUpload { bucket: o.bucket.clone(), key: o.key.clone(), upload_id: o.upload_id },
            o.bucket,
            o.key,
        ),
        Op::SetTags(o) => {
            let tags = pairs("tags", &o.tags)?;
            (
                NsOp::SetTags {
                    bucket: o.bucket.clone(),
                    key: o.key.clone(),
                    version_id: o.version_id,
                    tags,
                },
                o.bucket,
                o.key,
            )
        }
        Op::CreateKey(o) => {
            bounded("access key", &o.access_key)?;
            bounded("secret key", &o.secret_key)?;
            bounded("name", &o.name)?;
            let key = AccessKeyRecord {
                v: crate::types::RECORD_VERSION,
                access_key: o.access_key,
                secret_key: o.secret_key,
                name: o.name,
                created_unix_ms: 0,
            };
            (NsOp::CreateKey { key }, none(), none())
        }
        Op::DeleteKey(o) => (NsOp::DeleteKey { access_key: o.access_key }, none(), none()),
        Op::SetLifecycle(o) => {
            let rules = o.rules.into_iter().map(rule_of).collect::<Result<Vec<_>, Status>>()?;
            (NsOp::SetLifecycle { bucket: o.bucket.clone(), rules }, o.bucket, none())
        }
    })
}

/// The operation of a `PutVersionOp` (its bucket name bounded).
pub(crate) fn put_version_op(o: pb::PutVersionOp) -> Result<NsOp, Status> {
    bounded("bucket", &o.bucket)?;
    let c = content(o.fields)?;
    Ok(NsOp::PutVersion { bucket: o.bucket, key: o.key, content: c })
}

fn days(d: u32) -> Option<u32> {
    (d > 0).then_some(d)
}

fn rule_of(r: pb::LifecycleRule) -> Result<LifecycleRule, Status> {
    bounded("rule id", &r.id)?;
    bounded("rule prefix", &r.prefix)?;
    Ok(LifecycleRule {
        id: r.id,
        prefix: r.prefix,
        enabled: r.enabled,
        expiration_days: days(r.expiration_days),
        expired_object_delete_marker: r.expired_object_delete_marker,
        noncurrent_days: days(r.noncurrent_days),
        abort_incomplete_days: days(r.abort_incomplete_days),
    })
}

fn rule_pb(r: &LifecycleRule) -> pb::LifecycleRule {
    pb::LifecycleRule {
        id: r.id.clone(),
        prefix: r.prefix.clone(),
        enabled: r.enabled,
        expiration_days: r.expiration_days.unwrap_or(0),
        expired_object_delete_marker: r.expired_object_delete_marker,
        noncurrent_days: r.noncurrent_days.unwrap_or(0),
        abort_incomplete_days: r.abort_incomplete_days.unwrap_or(0),
    }
}

/// `NsWrite`: one operation through Raft (batched with concurrent ones).
pub async fn write(batcher: &NsBatcher, r: pb::NsWriteRequest) -> Result<pb::NsWriteResponse, Status> {
    let op = r.op.ok_or_else(|| bad_request("NsWrite needs an operation"))?;
    let (op, bucket_name, _) = op_of(op)?;
    bounded("bucket", &bucket_name)?;
    let result = batcher.write(op, r.request_id.as_ref().map(request_id)).await?;
    Ok(written_pb(result, &bucket_name))
}

/// The answer to a namespace write that was applied.
pub(crate) fn written_pb(result: NsResult, bucket_name: &str) -> pb::NsWriteResponse {
    use pb::ns_write_response::Result as R;
    let out = match result {
        NsResult::Bucket(b) => R::Bucket(bucket_pb(&b)),
        NsResult::Version { key, version } => {
            R::Version(version_pb(bucket_name, &key, &version, true, false))
        }
        NsResult::Deleted { delete_marker, version_id } => {
            R::Deleted(pb::DeleteResult { delete_marker, version_id })
        }
        NsResult::Upload(u) => R::Upload(pb::Upload {
            bucket: bucket_name.to_string(),
            key: String::new(),
            upload_id: u.upload_id.clone(),
            created_unix_ms: u.created_unix_ms,
            fields: None,
        }),
        NsResult::Part(p) => R::Part(part_pb(&p, false)),
        NsResult::Key(k) => R::Key(key_pb(&k, false)),
        NsResult::Done => R::Done(true),
    };
    pb::NsWriteResponse { result: Some(out) }
}

fn read_bucket(reader: &StateReader, name: &str) -> Result<BucketRecord, Status> {
    bucket(reader, name)
        .map_err(internal)?
        .ok_or_else(|| ns_status(NsCode::NoSuchBucket, format!("no bucket {name}")))
}

/// `NsGetBucket`.
pub async fn get_bucket(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::GetBucketRequest,
) -> Result<pb::Bucket, Status> {
    bounded("bucket", &r.name)?;
    linearizable(raft).await?;
    let mut b = bucket_pb(&read_bucket(reader, &r.name)?);
    b.lifecycle = lifecycle::rules_of(reader, &r.name).map_err(internal)?.iter().map(rule_pb).collect();
    Ok(b)
}

/// `NsListBuckets`: every bucket, by name.
pub async fn list_buckets(
    raft: &MasterRaft,
    reader: &StateReader,
) -> Result<pb::ListBucketsResponse, Status> {
    linearizable(raft).await?;
    let buckets: Vec<BucketRecord> =
        reader.records(keys::PREFIX_BUCKET, crate::codec::Kind::Bucket).map_err(internal)?;
    Ok(pb::ListBucketsResponse { buckets: buckets.iter().map(bucket_pb).collect() })
}

/// `NsGetVersion`: a version (the latest by default) with its blocks, and their index
/// entries when asked.
pub async fn get_version(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::GetVersionRequest,
) -> Result<pb::GetVersionResponse, Status> {
    bounded("bucket", &r.bucket)?;
    linearizable(raft).await?;
    read_bucket(reader, &r.bucket)?;
    let (vkey, v) =
        match find_version(reader, &r.bucket, &r.key, r.version_id.as_deref()).map_err(internal)? {
            Ok(found) => found,
            Err((code, detail)) => return Err(ns_status(code, detail)),
        };
    let latest = reader.scan(&keys::versions_of_key(&r.bucket, &r.key), 1).map_err(internal)?;
    let is_latest = latest.first().map(|(k, _)| k == &vkey).unwrap_or(false);
    let mut entries = Vec::new();
    if r.with_entries {
        let mut seen = std::collections::BTreeSet::new();
        for b in &v.content.blocks {
            if !seen.insert(b.hash) {
                continue;
            }
            let hash = crate::command::Hash32(b.hash);
            if let Some(e) = crate::state::index_entry(reader, &hash).map_err(internal)? {
                entries.push(index_pb(&command::IndexEntryView::new(hash, &e)));
            }
        }
    }
    Ok(pb::GetVersionResponse { version: Some(version_pb(&r.bucket, &r.key, &v, is_latest, true)), entries })
}

/// `NsListObjects`: a page of objects (or of every version).
pub async fn list_objects(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::ListObjectsRequest,
) -> Result<pb::ListObjectsResponse, Status> {
    for (field, value) in [
        ("bucket", &r.bucket),
        ("prefix", &r.prefix),
        ("delimiter", &r.delimiter),
        ("start after", &r.start_after),
    ] {
        bounded(field, value)?;
    }
    linearizable(raft).await?;
    read_bucket(reader, &r.bucket)?;
    let q = ListQuery {
        prefix: r.prefix,
        delimiter: r.delimiter,
        start_after: r.start_after,
        version_id_marker: r.version_id_marker,
        max_keys: r.max_keys as usize,
        versions: r.versions,
    };
    let reader = reader.clone();
    let bucket_name = r.bucket.clone();
    let page = tokio::task::spawn_blocking(move || list::list_objects(&reader, &bucket_name, &q))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(pb::ListObjectsResponse {
        versions: page
            .versions
            .iter()
            .map(|(k, v, latest)| version_pb(&r.bucket, k, v, *latest, false))
            .collect(),
        common_prefixes: page.common_prefixes,
        truncated: page.truncated,
        next_key: page.next_key,
        next_version_id: page.next_version_id,
    })
}

/// `NsGetUpload`: an upload and a page of its parts.
pub async fn get_upload_parts(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::GetUploadRequest,
) -> Result<pb::GetUploadResponse, Status> {
    bounded("bucket", &r.bucket)?;
    linearizable(raft).await?;
    read_bucket(reader, &r.bucket)?;
    let Some(u) = get_upload(reader, &r.bucket, &r.key, &r.upload_id).map_err(internal)? else {
        return Err(ns_status(NsCode::NoSuchUpload, format!("no upload {} of {}", r.upload_id, r.key)));
    };
    let max = (r.max_parts as usize).min(list::PAGE_MAX);
    let mut parts = Vec::new();
    let mut truncated = false;
    let prefix = keys::parts_of_upload(&r.bucket, &r.upload_id);
    let start = keys::part(&r.bucket, &r.upload_id, r.part_number_marker.saturating_add(1));
    if max > 0 {
        reader
            .for_each(&prefix, &start, |k, v| {
                if parts.len() == max {
                    truncated = true;
                    return Ok(false);
                }
                let p: PartRecord = decode_record(crate::codec::Kind::Part, k, v)?;
                parts.push(part_pb(&p, true));
                Ok(true)
            })
            .map_err(internal)?;
    }
    Ok(pb::GetUploadResponse { upload: Some(upload_pb(&r.bucket, &r.key, &u)), parts, truncated })
}

/// `NsListUploads`.
pub async fn list_uploads(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::ListUploadsRequest,
) -> Result<pb::ListUploadsResponse, Status> {
    for (field, value) in [
        ("bucket", &r.bucket),
        ("prefix", &r.prefix),
        ("key marker", &r.key_marker),
        ("upload id marker", &r.upload_id_marker),
    ] {
        bounded(field, value)?;
    }
    linearizable(raft).await?;
    read_bucket(reader, &r.bucket)?;
    let (uploads, truncated) = list::list_uploads(
        reader,
        &r.bucket,
        &r.prefix,
        &r.key_marker,
        &r.upload_id_marker,
        r.max_uploads as usize,
    )
    .map_err(internal)?;
    Ok(pb::ListUploadsResponse {
        uploads: uploads.iter().map(|(k, u)| upload_pb(&r.bucket, k, u)).collect(),
        truncated,
    })
}

/// `NsGetAccessKey`: a key with its secret (callers hold the cluster secret).
pub async fn get_access_key(
    raft: &MasterRaft,
    reader: &StateReader,
    r: pb::GetAccessKeyRequest,
) -> Result<pb::AccessKey, Status> {
    bounded("access key", &r.access_key)?;
    linearizable(raft).await?;
    let k: Option<AccessKeyRecord> =
        crate::state::read_record(reader, crate::codec::Kind::AccessKey, &keys::access_key(&r.access_key))
            .map_err(internal)?;
    k.map(|k| key_pb(&k, true))
        .ok_or_else(|| ns_status(NsCode::NoSuchAccessKey, format!("no access key {}", r.access_key)))
}

/// `NsListAccessKeys`: every key, without secrets.
pub async fn list_access_keys(
    raft: &MasterRaft,
    reader: &StateReader,
) -> Result<pb::ListAccessKeysResponse, Status> {
    linearizable(raft).await?;
    let keys: Vec<AccessKeyRecord> =
        reader.records(keys::PREFIX_ACCESS_KEY, crate::codec::Kind::AccessKey).map_err(internal)?;
    Ok(pb::ListAccessKeysResponse { keys: keys.iter().map(|k| key_pb(k, false)).collect() })
}
