//! The master's durable store: one RocksDB database holding the Raft log (`log`), Raft's
//! own metadata (`raft`: vote, last purged, committed), and the state machine (`sm` data,
//! `sm_meta`: applied log id, membership), plus snapshot files under `snapshots/`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};

pub mod log;
pub mod sm;
pub mod snapshot;

/// Column family of Raft log entries, keyed by big-endian index.
pub const CF_LOG: &str = "log";
/// Column family of Raft metadata.
pub const CF_RAFT: &str = "raft";
/// Column family of state machine data.
pub const CF_SM: &str = "sm";
/// Column family of state machine metadata.
pub const CF_SM_META: &str = "sm_meta";

/// Opens (creating if needed) the master's RocksDB at `dir/db`.
pub fn open_db(dir: &Path) -> io::Result<Arc<DB>> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    opts.set_max_open_files(256);
    let cfs = [CF_LOG, CF_RAFT, CF_SM, CF_SM_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).map_err(io::Error::other)?;
    Ok(Arc::new(db))
}

/// A column family handle, or an error naming it.
pub fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| io::Error::other(format!("column family {name} missing")))
}
