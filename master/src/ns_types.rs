//! The namespace's records (persisted, in the master's encoding: docs/FORMAT.md 13.5) and
//! its operations (inside the `Namespace` command); see [`crate::namespace`].

use serde::{Deserialize, Serialize};

/// Whether a bucket keeps every version of its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    /// Never enabled: a put replaces the object (the "null" version).
    Unversioned,
    /// Every put and delete adds a version.
    Enabled,
    /// Was enabled: a put replaces the null version, older versions stay.
    Suspended,
}

/// A bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    /// Record version (1).
    pub v: u32,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created_unix_ms: u64,
    /// Its versioning state.
    pub versioning: Versioning,
    /// The next version number given in this bucket (versions are numbered per bucket).
    pub next_version: u64,
}

/// One rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// Its id (may be empty).
    pub id: String,
    /// Keys it applies to start with this (empty: every key).
    pub prefix: String,
    /// Whether it is in force (Status Enabled).
    pub enabled: bool,
    /// Expiration/Days: the current version goes after this many days (a delete marker
    /// takes its place in a versioned bucket).
    pub expiration_days: Option<u32>,
    /// Expiration/ExpiredObjectDeleteMarker: a delete marker that is a key's only version
    /// is removed.
    pub expired_object_delete_marker: bool,
    /// NoncurrentVersionExpiration/NoncurrentDays: a version replaced this many days ago
    /// is removed for good.
    pub noncurrent_days: Option<u32>,
    /// AbortIncompleteMultipartUpload/DaysAfterInitiation.
    pub abort_incomplete_days: Option<u32>,
}

/// A bucket's lifecycle configuration (record kind 30, key `'L'` + bucket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// Record version (1).
    pub v: u32,
    /// The rules, as given.
    pub rules: Vec<LifecycleRule>,
}

/// One block of an object, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// The block key (SHA-256).
    pub hash: [u8; 32],
    /// Its length.
    pub length_bytes: u32,
}

/// What describes an object's content (a version's, an upload's without blocks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Content {
    /// Its size.
    pub size_bytes: u64,
    /// The ETag, quoted.
    pub etag: String,
    /// Content-Type.
    pub content_type: String,
    /// User metadata, names lower-case.
    pub metadata: Vec<(String, String)>,
    /// Tags.
    pub tags: Vec<(String, String)>,
    /// Checksums: algorithm name (CRC32, CRC32C, SHA256) and base64 value.
    pub checksums: Vec<(String, String)>,
    /// Its blocks, in order; their lengths sum to `size_bytes`.
    pub blocks: Vec<BlockRef>,
}

/// One version of an object (or a delete marker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Record version (1).
    pub v: u32,
    /// The version's number in its bucket (part of its key).
    pub version: u64,
    /// Made while versioning was off or suspended: its id is "null".
    pub null_version: bool,
    /// A delete marker (no content).
    pub delete_marker: bool,
    /// When it was made.
    pub created_unix_ms: u64,
    /// Its content.
    pub content: Content,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Record version (1).
    pub v: u32,
    /// The upload id (chosen by the frontend; part of the key).
    pub upload_id: String,
    /// When it was created.
    pub created_unix_ms: u64,
    /// Content type, metadata, tags of the object it will make (no blocks).
    pub content: Content,
}

/// An uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    /// Record version (1).
    pub v: u32,
    /// 1..=10000.
    pub part_number: u32,
    /// Its ETag, quoted.
    pub etag: String,
    /// Its size.
    pub size_bytes: u64,
    /// When it was uploaded.
    pub created_unix_ms: u64,
    /// Its blocks.
    pub blocks: Vec<BlockRef>,
    /// Its checksums.
    pub checksums: Vec<(String, String)>,
}

/// An S3 access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRecord {
    /// Record version (1).
    pub v: u32,
    /// The key id.
    pub access_key: String,
    /// The secret (SigV4 needs it in the clear on the verifying side).
    pub secret_key: String,
    /// A label.
    pub name: String,
    /// When it was created.
    pub created_unix_ms: u64,
}

/// A namespace operation (inside `Command::Namespace`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsOp {
    /// Creates a bucket.
    CreateBucket {
        /// Its name.
        name: String,
    },
    /// Deletes an empty bucket.
    DeleteBucket {
        /// Its name.
        name: String,
    },
    /// Enables or suspends versioning.
    SetVersioning {
        /// The bucket.
        bucket: String,
        /// Enabled or Suspended.
        versioning: Versioning,
    },
    /// Adds a version (adding one reference to each of its blocks).
    PutVersion {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// Its content.
        content: Content,
    },
    /// Deletes an object (a delete marker when versioned) or one version of it.
    DeleteObject {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The version to remove for good; none: the object.
        version_id: Option<String>,
    },
    /// Starts a multipart upload.
    CreateUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// Its id.
        upload_id: String,
        /// Content type, metadata, tags.
        content: Content,
    },
    /// Adds (or replaces) a part (adding one reference to each of its blocks).
    PutPart {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The upload.
        upload_id: String,
        /// The part.
        part: PartRecord,
    },
    /// Completes an upload: the listed parts become one version.
    CompleteUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The upload.
        upload_id: String,
        /// Part numbers (strictly ascending) and ETags.
        parts: Vec<(u32, String)>,
        /// The object's ETag.
        etag: String,
    },
    /// Aborts an upload: its parts' references are dropped.
    AbortUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The upload.
        upload_id: String,
    },
    /// Replaces a version's tags.
    SetTags {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The version; none: the latest.
        version_id: Option<String>,
        /// The tags.
        tags: Vec<(String, String)>,
    },
    /// Adds an access key.
    CreateKey {
        /// The key.
        key: AccessKeyRecord,
    },
    /// Deletes an access key.
    DeleteKey {
        /// Its id.
        access_key: String,
    },
    /// Replaces a bucket's lifecycle rules (none: removes them).
    SetLifecycle {
        /// The bucket.
        bucket: String,
        /// The rules.
        rules: Vec<LifecycleRule>,
    },
    /// Carries out what the bucket's lifecycle rules have due for `key` at the entry's
    /// time (decided again here; nothing when nothing is due).
    Expire {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// Length of a lifecycle day (the leader's config; 86,400,000 but for tests).
        day_ms: u64,
    },
    /// Aborts an upload if the bucket's lifecycle rules have it due at the entry's time.
    ExpireUpload {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The upload.
        upload_id: String,
        /// Length of a lifecycle day.
        day_ms: u64,
    },
}

impl NsOp {
    /// Its size for batching: 1 plus the blocks or parts it names.
    pub fn weight(&self) -> usize {
        1 + match self {
            NsOp::PutVersion { content, .. } | NsOp::CreateUpload { content, .. } => content.blocks.len(),
            NsOp::PutPart { part, .. } => part.blocks.len(),
            NsOp::CompleteUpload { parts, .. } => parts.len(),
            NsOp::SetLifecycle { rules, .. } => rules.len(),
            _ => 0,
        }
    }

    /// The operation's name (logs).
    pub fn name(&self) -> &'static str {
        match self {
            NsOp::CreateBucket { .. } => "create_bucket",
            NsOp::DeleteBucket { .. } => "delete_bucket",
            NsOp::SetVersioning { .. } => "set_versioning",
            NsOp::PutVersion { .. } => "put_version",
            NsOp::DeleteObject { .. } => "delete_object",
            NsOp::CreateUpload { .. } => "create_upload",
            NsOp::PutPart { .. } => "put_part",
            NsOp::CompleteUpload { .. } => "complete_upload",
            NsOp::AbortUpload { .. } => "abort_upload",
            NsOp::SetTags { .. } => "set_tags",
            NsOp::CreateKey { .. } => "create_key",
            NsOp::DeleteKey { .. } => "delete_key",
            NsOp::SetLifecycle { .. } => "set_lifecycle",
            NsOp::Expire { .. } => "expire",
            NsOp::ExpireUpload { .. } => "expire_upload",
        }
    }
}

/// The outcome of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsResult {
    /// A bucket (created or changed).
    Bucket(BucketRecord),
    /// A version (put, completed, re-tagged).
    Version {
        /// Its key.
        key: String,
        /// The version.
        version: VersionRecord,
    },
    /// A delete: whether a marker was added or removed, and which version id.
    Deleted {
        /// A delete marker was added (or the version removed was one).
        delete_marker: bool,
        /// The id of the marker added or the version removed; empty when nothing changed.
        version_id: String,
    },
    /// An upload was created.
    Upload(UploadRecord),
    /// A part was stored.
    Part(PartRecord),
    /// A key was created.
    Key(AccessKeyRecord),
    /// Done (bucket deleted, upload aborted, key deleted).
    Done,
}

/// The S3 error an operation is refused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NsCode {
    /// No such bucket.
    NoSuchBucket,
    /// The bucket exists (and, there being one tenant, is yours).
    BucketAlreadyOwnedByYou,
    /// The bucket still holds versions or uploads.
    BucketNotEmpty,
    /// No such key (or its latest version is a delete marker).
    NoSuchKey,
    /// No such version.
    NoSuchVersion,
    /// No such upload.
    NoSuchUpload,
    /// A listed part does not exist or its ETag differs.
    InvalidPart,
    /// Parts not in ascending order.
    InvalidPartOrder,
    /// A part other than the last is under 5 MiB.
    EntityTooSmall,
    /// A malformed argument.
    InvalidArgument,
    /// A block the operation names is not in the index (it was collected meanwhile):
    /// the caller stores it again and retries.
    MissingBlocks,
    /// The access key exists.
    KeyExists,
    /// No such access key.
    NoSuchAccessKey,
    /// The operation is not allowed on a delete marker.
    MethodNotAllowed,
}

impl NsCode {
    /// The code as S3 spells it (carried in the "cellar-error" metadata).
    pub fn as_str(&self) -> &'static str {
        match self {
            NsCode::NoSuchBucket => "NoSuchBucket",
            NsCode::BucketAlreadyOwnedByYou => "BucketAlreadyOwnedByYou",
            NsCode::BucketNotEmpty => "BucketNotEmpty",
            NsCode::NoSuchKey => "NoSuchKey",
            NsCode::NoSuchVersion => "NoSuchVersion",
            NsCode::NoSuchUpload => "NoSuchUpload",
            NsCode::InvalidPart => "InvalidPart",
            NsCode::InvalidPartOrder => "InvalidPartOrder",
            NsCode::EntityTooSmall => "EntityTooSmall",
            NsCode::InvalidArgument => "InvalidArgument",
            NsCode::MissingBlocks => "MissingBlocks",
            NsCode::KeyExists => "KeyExists",
            NsCode::NoSuchAccessKey => "NoSuchAccessKey",
            NsCode::MethodNotAllowed => "MethodNotAllowed",
        }
    }
}

/// The smallest part other than the last.
pub const PART_MIN_BYTES: u64 = 5 << 20;
/// Part numbers run from 1 to this.
pub const PART_NUMBER_MAX: u32 = 10_000;
/// Longest object key, in bytes.
pub const KEY_MAX_BYTES: usize = 1024;
/// Blocks of one version at most: 160 GiB of 4 MiB blocks (its record, about 1.5 MB, is
/// one Raft entry; larger objects would want their block lists split over records).
pub const VERSION_BLOCKS_MAX: usize = 40_960;

/// The S3 id of a version.
pub fn version_id(v: &VersionRecord) -> String {
    if v.null_version { "null".to_string() } else { format!("{:016x}", v.version) }
}

/// A version id as S3 gives it: `Ok(None)` for "null", the number otherwise.
pub fn parse_version_id(text: &str) -> Option<Option<u64>> {
    if text == "null" {
        return Some(None);
    }
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(Some)
}
