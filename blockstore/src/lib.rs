//! cellar's blockstore: everything that happens on one disk.
//!
//! A disk is a directory holding extent files and a RocksDB catalog. A replica extent is
//! an append-only log of self-describing block records; a fragment extent holds one
//! fragment of a coded volume in fixed-size chunks, each with a CRC32. Every read verifies
//! its checksums; corrupt bytes become [`Error::Corrupt`], never data. Appends share fsyncs
//! (group commit) and return only once durable; reopening after a crash truncates a torn
//! tail and keeps in place a damaged record that valid records follow. The byte-level
//! format is specified in docs/FORMAT.md.

pub mod catalog;
pub mod clock;
pub mod disk;
pub mod error;
pub mod extent_header;
pub mod fragment;
pub mod id;
mod inflight;
pub mod info;
pub mod io;
pub use cellar_format::record;
mod read_faults;
mod record_read;
mod recovery;
mod replica;
mod scan;
mod space;

pub use clock::now_unix_ms;
pub use disk::{APPEND_RECORDS_MAX, BLOCK_SIZE_MAX_BYTES_DEFAULT, Disk, DiskOptions};
pub use error::{CorruptKind, Error, ExtentState, Result};
pub use extent_header::EXTENT_DATA_OFFSET_BYTES;
pub use id::{ExtentId, ExtentPart};
pub use info::{DiskIdentity, DiskStat, ExtentInfo, OpenReport, PurgeReport, TrashSpace};
pub use io::IoChoice;
pub use record::{RECORD_HEADER_BYTES, Record, RecordHeader, RecordLocation};
pub use recovery::CorruptSpan;
pub use replica::{RecordIn, ReplicaRecovery, ScannedRecord};
pub use scan::ReplicaScan;
pub use space::DISK_RESERVE_BYTES_DEFAULT;
