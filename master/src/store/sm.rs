//! The Raft state machine over RocksDB: applies commands (see `apply.rs`) with the applied
//! log id in the same write batch, builds snapshots from a RocksDB point-in-time view and
//! installs received ones (resumably: an install cut short by a crash is redone at open).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use futures::stream::Stream;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot};
use openraft::type_config::alias::{LogIdOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use rocksdb::{DB, IteratorMode, ReadOptions, WriteBatch};

use super::snapshot::{self, Meta};
use super::{CF_SM, CF_SM_META, cf};
use crate::TypeConfig;
use crate::apply;
use crate::codec::{self, Kind};
use crate::command::Response;
use crate::state::{self, Kv, StateError};

const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_INSTALLING: &[u8] = b"installing";
/// Pairs per write batch while installing a snapshot.
const INSTALL_BATCH_PAIRS: usize = 10_000;

type LogId = LogIdOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;

/// A read-only [`Kv`] over the state machine's current data (used by the API's reads).
#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
}

impl StateReader {
    /// Reads over `db`.
    pub fn new(db: Arc<DB>) -> StateReader {
        StateReader { db }
    }

    /// Every `kind` record under `prefix`, decoded; the first that does not decode is an
    /// error naming its key.
    pub fn records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: u8,
        kind: Kind,
    ) -> Result<Vec<T>, StateError> {
        let sm = cf(&self.db, CF_SM).map_err(|e| StateError::Store(e.to_string()))?;
        let mut out = Vec::new();
        for item in prefix_iter(&self.db, sm, &[prefix], &[prefix]) {
            let (key, value) = item.map_err(|e| StateError::Store(e.to_string()))?;
            if key.first() != Some(&prefix) {
                break;
            }
            out.push(state::decode_record(kind, &key, &value)?);
        }
        Ok(out)
    }

    /// Calls `f` with every pair whose key starts with `prefix`, from `start` (a key at or
    /// after the prefix) on, in key order, until `f` returns false; nothing is collected,
    /// so a scan of the whole index holds one pair at a time.
    pub fn for_each(
        &self,
        prefix: &[u8],
        start: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<bool, StateError>,
    ) -> Result<(), StateError> {
        let sm = cf(&self.db, CF_SM).map_err(|e| StateError::Store(e.to_string()))?;
        let from = if start < prefix { prefix } else { start };
        for item in prefix_iter(&self.db, sm, prefix, from) {
            let (key, value) = item.map_err(|e| StateError::Store(e.to_string()))?;
            if !key.starts_with(prefix) || !f(&key, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// The drains in force.
    pub fn drains(&self) -> Result<state::Drains, StateError> {
        let records: Vec<crate::types::DrainRecord> = self.records(state::PREFIX_DRAIN, Kind::Drain)?;
        Ok(state::Drains::from_records(&records))
    }
}

impl Kv for StateReader {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let sm = cf(&self.db, CF_SM).map_err(|e| StateError::Store(e.to_string()))?;
        self.db.get_cf(sm, key).map_err(|e| StateError::Store(e.to_string()))
    }
    fn put(&mut self, _key: &[u8], _value: Vec<u8>) {
        // Reads only: the API never writes outside Raft. A write here is a programming error.
        debug_assert!(false, "StateReader is read-only");
    }
    fn delete(&mut self, _key: &[u8]) {
        debug_assert!(false, "StateReader is read-only");
    }
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<state::Pairs, StateError> {
        scan_db(&self.db, prefix, limit)
    }
}

/// The first `limit` pairs of the state machine whose keys start with `prefix`.
/// The first key after every key that starts with `prefix` (none: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Iterates the pairs of `sm` from `from` on, bounded above by the end of `prefix`. The
/// bound matters: without it, the iterator that leaves the prefix skips every deleted key
/// after it one by one (the forgotten session outcomes, removed index entries) before
/// it finds the next live key, and each namespace write scans once.
fn prefix_iter<'a>(
    db: &'a DB,
    sm: &rocksdb::ColumnFamily,
    prefix: &[u8],
    from: &[u8],
) -> rocksdb::DBIteratorWithThreadMode<'a, DB> {
    let mut opts = ReadOptions::default();
    if let Some(end) = prefix_end(prefix) {
        opts.set_iterate_upper_bound(end);
    }
    db.iterator_cf_opt(sm, opts, IteratorMode::From(from, rocksdb::Direction::Forward))
}

fn scan_db(db: &DB, prefix: &[u8], limit: usize) -> Result<state::Pairs, StateError> {
    let sm = cf(db, CF_SM).map_err(|e| StateError::Store(e.to_string()))?;
    let mut out = Vec::new();
    for item in prefix_iter(db, sm, prefix, prefix) {
        if out.len() >= limit {
            break;
        }
        let (key, value) = item.map_err(|e| StateError::Store(e.to_string()))?;
        if !key.starts_with(prefix) {
            break;
        }
        out.push((key.to_vec(), value.to_vec()));
    }
    Ok(out)
}

/// Reads through to RocksDB and buffers writes; committed as one batch.
struct Overlay<'a> {
    db: &'a DB,
    /// Pending writes; `None` is a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Kv for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        let sm = cf(self.db, CF_SM).map_err(|e| StateError::Store(e.to_string()))?;
        self.db.get_cf(sm, key).map_err(|e| StateError::Store(e.to_string()))
    }
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.writes.insert(key.to_vec(), Some(value));
    }
    fn delete(&mut self, key: &[u8]) {
        self.writes.insert(key.to_vec(), None);
    }
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<state::Pairs, StateError> {
        let pending: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
            self.writes.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).collect();
        // Each pending deletion can hide one stored key: read that many more.
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            scan_db(self.db, prefix, limit.saturating_add(pending.len()))?.into_iter().collect();
        for (key, value) in pending {
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

/// The state machine store.
pub struct StateMachineStore {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
}

/// The kind of the state machine's metadata record at `key`.
fn meta_kind(key: &[u8]) -> Kind {
    if key == KEY_MEMBERSHIP { Kind::Membership } else { Kind::LogId }
}

fn encode_meta<T: serde::Serialize>(key: &[u8], value: &T) -> io::Result<Vec<u8>> {
    codec::encode(meta_kind(key), value).map_err(io::Error::other)
}

fn decode_meta<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> io::Result<T> {
    codec::decode(meta_kind(key), bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl StateMachineStore {
    /// Opens the state machine; completes a snapshot install that a crash interrupted.
    pub fn open(db: Arc<DB>, snapshot_dir: PathBuf) -> io::Result<StateMachineStore> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let store = StateMachineStore { db, snapshot_dir };
        let meta_cf = cf(&store.db, CF_SM_META)?;
        if let Some(name) = store.db.get_cf(meta_cf, KEY_INSTALLING).map_err(io::Error::other)? {
            let path = store.snapshot_dir.join(String::from_utf8_lossy(&name).to_string());
            tracing::warn!(snapshot = %path.display(), "completing an interrupted snapshot install");
            store.install_file(&path)?;
        }
        Ok(store)
    }

    /// A reader over the current state.
    pub fn reader(&self) -> StateReader {
        StateReader::new(self.db.clone())
    }

    fn read_meta_value<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let meta_cf = cf(&self.db, CF_SM_META)?;
        match self.db.get_cf(meta_cf, key).map_err(io::Error::other)? {
            Some(bytes) => decode_meta(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces the whole state with the snapshot file at `path`, then records its applied
    /// log id and membership. Marked in progress first so that a crash redoes it.
    fn install_file(&self, path: &std::path::Path) -> io::Result<Meta> {
        let sm = cf(&self.db, CF_SM)?;
        let meta_cf = cf(&self.db, CF_SM_META)?;
        let name =
            path.file_name().and_then(|n| n.to_str()).ok_or_else(|| io::Error::other("bad snapshot path"))?;
        self.db.put_cf(meta_cf, KEY_INSTALLING, name.as_bytes()).map_err(io::Error::other)?;
        self.db.flush_wal(true).map_err(io::Error::other)?;
        self.db.delete_range_cf(sm, [0u8].as_slice(), [0xFFu8; 64].as_slice()).map_err(io::Error::other)?;
        let mut batch = WriteBatch::default();
        let (meta, _) = snapshot::read(File::open(path)?, |key, value| {
            batch.put_cf(sm, key, value);
            if batch.len() >= INSTALL_BATCH_PAIRS {
                self.db.write(std::mem::take(&mut batch)).map_err(io::Error::other)?;
            }
            Ok(())
        })?;
        batch.put_cf(meta_cf, KEY_APPLIED, encode_meta(KEY_APPLIED, &meta.last_log_id)?);
        batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode_meta(KEY_MEMBERSHIP, &meta.last_membership)?);
        batch.delete_cf(meta_cf, KEY_INSTALLING);
        self.db.write(batch).map_err(io::Error::other)?;
        self.db.flush_wal(true).map_err(io::Error::other)?;
        Ok(meta)
    }

    fn apply_one(&self, entry: &<TypeConfig as openraft::RaftTypeConfig>::Entry) -> io::Result<Response> {
        let sm = cf(&self.db, CF_SM)?;
        let meta_cf = cf(&self.db, CF_SM_META)?;
        let mut batch = WriteBatch::default();
        let response = match &entry.payload {
            EntryPayload::Blank => Response::Empty,
            EntryPayload::Normal(command) => {
                let mut overlay = Overlay { db: &self.db, writes: BTreeMap::new() };
                let response = apply::apply(&mut overlay, command).map_err(io::Error::other)?;
                for (key, value) in overlay.writes {
                    match value {
                        Some(value) => batch.put_cf(sm, key, value),
                        None => batch.delete_cf(sm, key),
                    }
                }
                response
            }
            EntryPayload::Membership(membership) => {
                let stored = StoredMembership::new(Some(entry.log_id()), membership.clone());
                batch.put_cf(meta_cf, KEY_MEMBERSHIP, encode_meta(KEY_MEMBERSHIP, &stored)?);
                Response::Empty
            }
        };
        batch.put_cf(meta_cf, KEY_APPLIED, encode_meta(KEY_APPLIED, &Some(entry.log_id()))?);
        // Not synced: the Raft log is durable and re-applied after a crash from the applied
        // id stored atomically with the data.
        self.db.write(batch).map_err(io::Error::other)?;
        Ok(response)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = File;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let applied: Option<Option<LogId>> = self.read_meta_value(KEY_APPLIED)?;
        let membership: Option<Membership> = self.read_meta_value(KEY_MEMBERSHIP)?;
        Ok((applied.flatten(), membership.unwrap_or_default()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = self.apply_one(&entry)?;
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), snapshot_dir: self.snapshot_dir.clone() }
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: File) -> Result<(), io::Error> {
        // The received data lives in an anonymous or temporary file: copy it into place
        // under its canonical name, then install from there.
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        let this = StateMachineStore { db, snapshot_dir: dir.clone() };
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let path = dir.join(snapshot::file_name(&meta));
            let tmp = dir.join(format!("{}.tmp", snapshot::file_name(&meta)));
            let mut source = snapshot;
            use std::io::Seek;
            source.seek(io::SeekFrom::Start(0))?;
            let mut out = File::create(&tmp)?;
            io::copy(&mut source, &mut out)?;
            out.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()?;
            let installed = this.install_file(&path)?;
            if installed.last_log_id != meta.last_log_id {
                return Err(io::Error::other("snapshot file does not match its meta"));
            }
            snapshot::prune(&dir, &path)?;
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<TypeConfig, File>>, io::Error> {
        let Some(path) = snapshot::latest(&self.snapshot_dir)? else { return Ok(None) };
        let meta = snapshot::read_meta(&path)?;
        Ok(Some(Snapshot { meta, snapshot: File::open(&path)? }))
    }
}

/// Builds snapshots from a RocksDB point-in-time view.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = File;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, File>, io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || -> io::Result<SnapshotOf<TypeConfig, File>> {
            let view = db.snapshot();
            let meta_cf = cf(&db, CF_SM_META)?;
            let sm = cf(&db, CF_SM)?;
            let read = |key: &[u8]| -> io::Result<Option<Vec<u8>>> {
                view.get_cf(meta_cf, key).map_err(io::Error::other)
            };
            let last_log_id: Option<LogId> = match read(KEY_APPLIED)? {
                Some(b) => decode_meta(KEY_APPLIED, &b)?,
                None => None,
            };
            let last_membership: Membership = match read(KEY_MEMBERSHIP)? {
                Some(b) => decode_meta(KEY_MEMBERSHIP, &b)?,
                None => Membership::default(),
            };
            let meta = Meta { last_log_id, last_membership };
            let mut opts = ReadOptions::default();
            opts.set_snapshot(&view);
            let pairs =
                db.iterator_cf_opt(sm, opts, IteratorMode::Start).map(|item| item.map_err(io::Error::other));
            let path = snapshot::write(&dir, &meta, pairs)?;
            snapshot::prune(&dir, &path)?;
            Ok(Snapshot { meta, snapshot: File::open(&path)? })
        })
        .await
        .map_err(io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};

    use super::{CF_SM, cf, prefix_end, scan_db};

    /// A scan of a prefix stops at the prefix's end: it does not walk over the deleted
    /// keys after it (each namespace write scans once; unbounded, every write slowed with
    /// every session outcome ever forgotten).
    #[test]
    fn a_scan_does_not_walk_over_deleted_keys_after_its_prefix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::open_db(dir.path()).expect("open");
        let sm = cf(&db, CF_SM).expect("cf");
        db.put_cf(sm, b"O-a", b"1").expect("put");
        for i in 0u32..5000 {
            let key = [b"o".as_slice(), &i.to_be_bytes()].concat();
            db.put_cf(sm, &key, b"x").expect("put");
            db.delete_cf(sm, &key).expect("delete");
        }
        db.put_cf(sm, b"s", b"2").expect("put");
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        let found = scan_db(&db, b"O-", usize::MAX).expect("scan");
        let skipped = perf.metric(PerfMetric::InternalDeleteSkippedCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert_eq!(found, vec![(b"O-a".to_vec(), b"1".to_vec())]);
        assert!(skipped < 10, "the scan skipped {skipped} deleted keys past its prefix");
    }

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"O"), Some(b"P".to_vec()));
        assert_eq!(prefix_end(&[b'O', 7, 0xFF]), Some(vec![b'O', 8]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
