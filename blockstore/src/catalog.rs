//! The disk's local catalog of extents, in RocksDB under `<disk>/catalog`. Every value
//! starts with an encoding version byte so that a newer binary reads an older disk. The
//! byte layout is specified in docs/FORMAT.md.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{BlockBasedOptions, Cache, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::error::{Error, ExtentState, Result};
use crate::id::{EXTENT_ID_BYTES, ExtentId};
use crate::io::IoBackend;

const EXTENT_PREFIX: u8 = b'e';
const TRASH_PREFIX: u8 = b't';
const META_PREFIX: u8 = b'm';
const ENTRY_VERSION: u8 = 1;
const EXTENT_ENTRY_BYTES: usize = 24;
const TRASH_ENTRY_BYTES: usize = 16;
/// RocksDB block cache for the catalog: it is small and read mostly at open.
const CATALOG_CACHE_BYTES: usize = 1 << 20;
/// RocksDB memtable size; the catalog holds a few hundred bytes per extent.
const CATALOG_WRITE_BUFFER_BYTES: usize = 4 << 20;

/// What the catalog knows of one extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtentEntry {
    /// Open or sealed.
    pub state: ExtentState,
    /// When the extent was created (Unix milliseconds).
    pub created_unix_ms: u64,
    /// Replica: the sealed length if sealed, else a lower bound of the durable length
    /// (recovery verifies records from there on). Fragment: the fragment length.
    pub length_bytes: u64,
    /// Fragment chunk size; 0 for replicas.
    pub chunk_size_bytes: u32,
}

impl ExtentEntry {
    fn encode(&self) -> [u8; EXTENT_ENTRY_BYTES] {
        let mut out = [0u8; EXTENT_ENTRY_BYTES];
        out[0] = ENTRY_VERSION;
        out[1] = match self.state {
            ExtentState::Open => 0,
            ExtentState::Sealed => 1,
        };
        out[4..8].copy_from_slice(&self.chunk_size_bytes.to_le_bytes());
        out[8..16].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        out[16..24].copy_from_slice(&self.length_bytes.to_le_bytes());
        out
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<ExtentEntry> {
        let bad = |detail: &str| Error::CatalogCorrupt { key: hex::encode(key), detail: detail.into() };
        if value.first() != Some(&ENTRY_VERSION) {
            return Err(bad("unknown extent entry version"));
        }
        if value.len() != EXTENT_ENTRY_BYTES {
            return Err(bad("extent entry has the wrong length"));
        }
        let state = match value[1] {
            0 => ExtentState::Open,
            1 => ExtentState::Sealed,
            _ => return Err(bad("unknown extent state")),
        };
        Ok(ExtentEntry {
            state,
            chunk_size_bytes: u32::from_le_bytes(array(&value[4..8])),
            created_unix_ms: u64::from_le_bytes(array(&value[8..16])),
            length_bytes: u64::from_le_bytes(array(&value[16..24])),
        })
    }
}

/// One extent in the trash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrashEntry {
    /// The extent it was.
    pub extent: ExtentId,
    /// When it was moved to the trash (Unix milliseconds).
    pub deleted_unix_ms: u64,
    /// Its file size at deletion.
    pub size_bytes: u64,
}

impl TrashEntry {
    /// The file name under `<disk>/trash/`.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.extent, self.deleted_unix_ms)
    }

    fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + EXTENT_ID_BYTES + 8);
        key.push(TRASH_PREFIX);
        key.extend_from_slice(&self.extent.to_bytes());
        key.extend_from_slice(&self.deleted_unix_ms.to_be_bytes());
        key
    }

    fn encode(&self) -> [u8; TRASH_ENTRY_BYTES] {
        let mut out = [0u8; TRASH_ENTRY_BYTES];
        out[0] = ENTRY_VERSION;
        out[8..16].copy_from_slice(&self.size_bytes.to_le_bytes());
        out
    }

    fn decode(key: &[u8], value: &[u8]) -> Result<TrashEntry> {
        let bad = |detail: &str| Error::CatalogCorrupt { key: hex::encode(key), detail: detail.into() };
        if key.len() != 1 + EXTENT_ID_BYTES + 8 {
            return Err(bad("trash key has the wrong length"));
        }
        let extent =
            ExtentId::from_bytes(&key[1..1 + EXTENT_ID_BYTES]).ok_or_else(|| bad("bad extent id"))?;
        let deleted_unix_ms = u64::from_be_bytes(array(&key[1 + EXTENT_ID_BYTES..]));
        if value.first() != Some(&ENTRY_VERSION) || value.len() != TRASH_ENTRY_BYTES {
            return Err(bad("unknown trash entry version or length"));
        }
        Ok(TrashEntry { extent, deleted_unix_ms, size_bytes: u64::from_le_bytes(array(&value[8..16])) })
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

fn extent_key(id: ExtentId) -> [u8; 1 + EXTENT_ID_BYTES] {
    let mut key = [0u8; 1 + EXTENT_ID_BYTES];
    key[0] = EXTENT_PREFIX;
    key[1..].copy_from_slice(&id.to_bytes());
    key
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut key = vec![META_PREFIX];
    key.extend_from_slice(name.as_bytes());
    key
}

/// The RocksDB catalog of one disk.
pub struct Catalog {
    db: DB,
    /// Writes refused with an I/O error other than a lack of space (see
    /// [`Catalog::write_faults`]).
    write_faults: AtomicU64,
    /// The disk's I/O backend, asked before each write whether the catalog is to refuse it
    /// as out of space ([`IoBackend::catalog_full`]: the fault injector's; never for the
    /// real backends).
    io: Option<Arc<dyn IoBackend>>,
}

fn db_err(op: &'static str) -> impl Fn(rocksdb::Error) -> Error {
    move |e| Error::Catalog { op, detail: e.into_string() }
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(64);
        opts.set_keep_log_file_num(4);
        opts.set_write_buffer_size(CATALOG_WRITE_BUFFER_BYTES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(CATALOG_CACHE_BYTES));
        opts.set_block_based_table_factory(&table);
        let db = DB::open(&opts, path).map_err(db_err("open"))?;
        Ok(Catalog { db, write_faults: AtomicU64::new(0), io: None })
    }

    /// [`Catalog::open`] for a disk on `io`, whose [`IoBackend::catalog_full`] is asked
    /// before each write.
    pub(crate) fn open_on(path: &Path, io: Arc<dyn IoBackend>) -> Result<Catalog> {
        Ok(Catalog { io: Some(io), ..Catalog::open(path)? })
    }

    /// Writes RocksDB refused with an I/O error other than a lack of space since the open:
    /// the device failed a write (RocksDB then refuses every write until reopened), so the
    /// disk is failed as a whole, like one whose extent failed a write.
    pub fn write_faults(&self) -> u64 {
        self.write_faults.load(Ordering::Relaxed)
    }

    /// A write's outcome, counted in [`Catalog::write_faults`] when it is a device fault.
    fn written(
        &self,
        op: &'static str,
        write: impl FnOnce() -> std::result::Result<(), rocksdb::Error>,
    ) -> Result<()> {
        if self.io.as_ref().is_some_and(|io| io.catalog_full()) {
            return Err(Error::Catalog { op, detail: "IO error: No space left on device (injected)".into() });
        }
        write().map_err(|e| {
            let no_space = e.as_ref().contains("No space left");
            if e.kind() == rocksdb::ErrorKind::IOError && !no_space {
                self.write_faults.fetch_add(1, Ordering::Relaxed);
            }
            db_err(op)(e)
        })
    }

    /// Every extent entry, in key order.
    pub fn extents(&self) -> Result<Vec<(ExtentId, ExtentEntry)>> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&[EXTENT_PREFIX], Direction::Forward)) {
            let (key, value) = item.map_err(db_err("scan extents"))?;
            if key.first() != Some(&EXTENT_PREFIX) {
                break;
            }
            let id = ExtentId::from_bytes(&key[1..]).ok_or_else(|| Error::CatalogCorrupt {
                key: hex::encode(&key),
                detail: "bad extent id".into(),
            })?;
            out.push((id, ExtentEntry::decode(&key, &value)?));
        }
        Ok(out)
    }

    /// The entry of one extent.
    pub fn extent(&self, id: ExtentId) -> Result<Option<ExtentEntry>> {
        let key = extent_key(id);
        match self.db.get(key).map_err(db_err("get extent"))? {
            Some(value) => Ok(Some(ExtentEntry::decode(&key, &value)?)),
            None => Ok(None),
        }
    }

    /// Writes an extent entry durably.
    pub fn put_extent(&self, id: ExtentId, entry: &ExtentEntry) -> Result<()> {
        self.written("put extent", || self.db.put_opt(extent_key(id), entry.encode(), &synced()))
    }

    /// Raises a replica's durable-length watermark. Not synced: the watermark is a lower
    /// bound, and a stale one only makes recovery verify more records.
    pub fn put_watermark(&self, id: ExtentId, entry: &ExtentEntry) -> Result<()> {
        self.written("put watermark", || self.db.put(extent_key(id), entry.encode()))
    }

    /// Moves an extent entry to the trash in one atomic, synced batch.
    pub fn move_to_trash(&self, trash: &TrashEntry) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete(extent_key(trash.extent));
        batch.put(trash.key(), trash.encode());
        self.written("move extent to trash", || self.db.write_opt(batch, &synced()))
    }

    /// Records a trash entry (an orphan file moved to the trash at open).
    pub fn put_trash(&self, trash: &TrashEntry) -> Result<()> {
        self.written("put trash", || self.db.put_opt(trash.key(), trash.encode(), &synced()))
    }

    /// Every trash entry, oldest extent id first.
    pub fn trash(&self) -> Result<Vec<TrashEntry>> {
        let mut out = Vec::new();
        for item in self.db.iterator(IteratorMode::From(&[TRASH_PREFIX], Direction::Forward)) {
            let (key, value) = item.map_err(db_err("scan trash"))?;
            if key.first() != Some(&TRASH_PREFIX) {
                break;
            }
            out.push(TrashEntry::decode(&key, &value)?);
        }
        Ok(out)
    }

    /// Forgets a trash entry once its file is unlinked.
    pub fn remove_trash(&self, trash: &TrashEntry) -> Result<()> {
        self.written("remove trash", || self.db.delete_opt(trash.key(), &synced()))
    }

    /// A named metadata value (disk identity, the volume server's node id).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.db.get(meta_key(name)).map_err(db_err("get meta"))
    }

    /// Stores a named metadata value durably.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.written("put meta", || self.db.put_opt(meta_key(name), value, &synced()))
    }

    /// Flushes RocksDB's write-ahead log to disk (used at clean close).
    pub fn flush(&self) -> Result<()> {
        self.written("flush wal", || self.db.flush_wal(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_unknown_versions() {
        let entry = ExtentEntry {
            state: ExtentState::Sealed,
            created_unix_ms: 17,
            length_bytes: 1 << 33,
            chunk_size_bytes: 65536,
        };
        let key = extent_key(ExtentId::fragment(3, 4));
        assert_eq!(ExtentEntry::decode(&key, &entry.encode()).ok(), Some(entry));
        let mut newer = entry.encode();
        newer[0] = 2;
        assert!(matches!(ExtentEntry::decode(&key, &newer), Err(Error::CatalogCorrupt { .. })));

        let trash = TrashEntry { extent: ExtentId::replica(9), deleted_unix_ms: 1234, size_bytes: 99 };
        assert_eq!(TrashEntry::decode(&trash.key(), &trash.encode()).ok(), Some(trash));
    }
}
