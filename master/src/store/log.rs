//! The Raft log store over RocksDB. Appends are written (readable at once) and made durable
//! by a dedicated flusher thread that syncs the write-ahead log once for every batch of
//! appends waiting (group commit), then completes their callbacks in order.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::sync::mpsc;

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CF_LOG, CF_RAFT, cf};
use crate::TypeConfig;
use crate::codec::{self, Kind};

/// Appends waiting for one WAL sync at most (bounds the flusher's queue).
const FLUSH_QUEUE_MAX: usize = 4096;

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The log store; cheap to clone (every clone shares the database and the flusher).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: mpsc::SyncSender<IOFlushed<TypeConfig>>,
    /// Bytes of entries appended since the start (the snapshot policy's measure).
    appended_bytes: Arc<std::sync::atomic::AtomicU64>,
}

fn encode<T: Serialize>(kind: Kind, value: &T) -> io::Result<Vec<u8>> {
    codec::encode(kind, value).map_err(io::Error::other)
}

fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> io::Result<T> {
    codec::decode(kind, bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The kind of the Raft metadata record at `key`.
fn meta_kind(key: &[u8]) -> Kind {
    if key == KEY_VOTE { Kind::Vote } else { Kind::LogId }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> io::Result<u64> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))
}

impl LogStore {
    /// Builds the store and starts its flusher thread.
    pub fn new(db: Arc<DB>) -> io::Result<LogStore> {
        let (tx, rx) = mpsc::sync_channel::<IOFlushed<TypeConfig>>(FLUSH_QUEUE_MAX);
        // A weak reference: the flusher must not keep the database open after the store
        // is gone (RocksDB aborts if a database outlives process exit).
        let flush_db = Arc::downgrade(&db);
        std::thread::Builder::new().name("raft-log-flush".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiting.push(more);
                }
                let result = match flush_db.upgrade() {
                    Some(db) => db.flush_wal(true).map_err(io::Error::other),
                    None => Err(io::Error::other("raft log store closed")),
                };
                for callback in waiting {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::other(e.to_string())),
                    };
                    callback.io_completed(r);
                }
            }
        })?;
        Ok(LogStore { db, flusher: tx, appended_bytes: Arc::default() })
    }

    /// Bytes of entries appended since the start, shared.
    pub fn appended_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.appended_bytes.clone()
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let raft = cf(&self.db, CF_RAFT)?;
        match self.db.get_cf(raft, key).map_err(io::Error::other)? {
            Some(bytes) => decode(meta_kind(key), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        let raft = cf(&self.db, CF_RAFT)?;
        self.db.put_cf(raft, key, encode(meta_kind(key), value)?).map_err(io::Error::other)?;
        if sync {
            self.db.flush_wal(true).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let log = cf(&self.db, CF_LOG)?;
        let mut out = Vec::new();
        // Bounded above, so that a read never walks past the range (into deleted entries).
        let mut opts = rocksdb::ReadOptions::default();
        match range.end_bound() {
            Bound::Included(x) if *x < u64::MAX => opts.set_iterate_upper_bound(index_key(x + 1)),
            Bound::Excluded(x) => opts.set_iterate_upper_bound(index_key(*x)),
            _ => {}
        }
        for item in
            self.db.iterator_cf_opt(log, opts, IteratorMode::From(&index_key(start), Direction::Forward))
        {
            let (key, value) = item.map_err(io::Error::other)?;
            let index = index_of(&key)?;
            if !range.contains(&index) {
                break;
            }
            out.push(decode::<Entry>(Kind::LogEntry, &value)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let log = cf(&self.db, CF_LOG)?;
        let last = match self.db.iterator_cf(log, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(io::Error::other)?;
                Some(decode::<Entry>(Kind::LogEntry, &value)?.log_id())
            }
            None => None,
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last_log_id = last.or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let this = self.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || this.put_meta(KEY_VOTE, &vote, true))
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_LOG)?;
        let mut batch = WriteBatch::default();
        let mut bytes = 0u64;
        for entry in entries {
            let value = encode(Kind::LogEntry, &entry)?;
            bytes += value.len() as u64;
            batch.put_cf(log, index_key(entry.log_id().index()), value);
        }
        self.appended_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.db.write(batch).map_err(io::Error::other)?;
        // Readable now; durable when the flusher has synced the WAL.
        self.flusher.send(callback).map_err(|_| io::Error::other("log flusher stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let log = cf(&self.db, CF_LOG)?;
        self.db.delete_range_cf(log, index_key(from), index_key(u64::MAX)).map_err(io::Error::other)?;
        // delete_range's end is exclusive; u64::MAX is never a real index.
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored by Raft even if
        // the deletion below is lost in a crash.
        self.put_meta(KEY_LAST_PURGED, &log_id, false)?;
        let log = cf(&self.db, CF_LOG)?;
        self.db
            .delete_range_cf(log, index_key(0), index_key(log_id.index().saturating_add(1)))
            .map_err(io::Error::other)?;
        Ok(())
    }
}
