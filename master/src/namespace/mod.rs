//! The namespace of the S3 layer (DESIGN section 7), part of the replicated state:
//! buckets, object versions, multipart uploads and their parts, access keys. A version
//! holds one reference on each of its blocks; the command that commits a version adds
//! those references in the same Raft entry, so a crash never leaves one without the other.
//!
//! The records and operations are [`crate::ns_types`].
//! - [`keys`]: the key layout (every object key begins with its bucket, so the namespace
//!   can later be split by bucket or key range into several groups, DESIGN section 9).
//! - [`apply`]: applying an operation to the state.
//! - [`list`]: listings over the key layout (objects, versions, uploads).

pub mod apply;
pub mod keys;
pub mod lifecycle;
pub mod list;
