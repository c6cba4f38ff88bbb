//! The master's durable store: one RocksDB database holding the Raft log (`log`), Raft's
//! own metadata (`raft`: vote, last purged, committed), and the state machine (`sm` data,
//! `sm_meta`: applied log id, membership), plus snapshot files under `snapshots/`.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Options};

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

/// Write-ahead log files RocksDB keeps for reuse.
pub const WAL_FILES_RECYCLED: usize = 4;
/// Block cache of the state machine's column family (the block index lives there).
pub const SM_BLOCK_CACHE_BYTES: usize = 128 << 20;
/// Bloom filter bits per key: most index lookups on the put path are for hashes that are
/// not there (new blocks), and the filter answers those without reading from disk.
const BLOOM_BITS_PER_KEY: f64 = 10.0;
/// Share of the state machine's memtable size given to its bloom filter of whole keys.
const MEMTABLE_BLOOM_RATIO: f64 = 0.1;

/// Opens (creating if needed) the master's RocksDB at `dir/db`.
pub fn open_db(dir: &Path) -> io::Result<Arc<DB>> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_keep_log_file_num(4);
    // Every Raft append ends with a WAL fdatasync. Writing over a recycled WAL file's
    // blocks needs no file-system metadata update, so the sync does not wait for a
    // journal commit (default recovery mode, point in time, is compatible with it).
    opts.set_recycle_log_file_num(WAL_FILES_RECYCLED);
    opts.set_max_open_files(256);
    let mut sm_options = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(SM_BLOCK_CACHE_BYTES));
    table.set_bloom_filter(BLOOM_BITS_PER_KEY, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    sm_options.set_block_based_table_factory(&table);
    // The same for the memtable: a lookup of a hash that is not there (every new block's
    // dedup lookup, and its commit's read of the entry) searched the memtable's skiplist,
    // 16% of the masters' CPU under small puts at 256 clients (2% with the filter).
    sm_options.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
    sm_options.set_memtable_whole_key_filtering(true);
    let cfs = [CF_LOG, CF_RAFT, CF_SM, CF_SM_META].into_iter().map(|name| {
        let options = if name == CF_SM { sm_options.clone() } else { Options::default() };
        ColumnFamilyDescriptor::new(name, options)
    });
    let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).map_err(io::Error::other)?;
    Ok(Arc::new(db))
}

/// A column family handle, or an error naming it.
pub fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| io::Error::other(format!("column family {name} missing")))
}
