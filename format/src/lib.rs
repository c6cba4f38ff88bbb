//! cellar's on-disk and on-wire byte formats that both sides of the volume API must agree
//! on: the block record (what a replica holds and a record read returns) and the
//! fragment chunk checksum. No I/O and no dependencies beyond crc32fast, so clients (the
//! frontend, the load generator) check what they read without linking the blockstore.
//! The byte layouts are specified in docs/FORMAT.md.

pub mod chunk;
pub mod corrupt;
pub mod record;

pub use chunk::{FRAGMENT_CHUNK_BYTES, chunk_crc32};
pub use corrupt::CorruptKind;
pub use record::{
    RECORD_FORMAT_VERSION, RECORD_HEADER_BYTES, RECORD_MAGIC, Record, RecordHeader, RecordLocation,
};
