//! A disk: one directory that the blockstore owns. It holds the extent files, the trash
//! and the RocksDB catalog, and is the public face of the crate.
//!
//! ```text
//! <root>/catalog/   RocksDB: extent entries, trash entries, disk identity
//! <root>/extents/   one file per extent, named by its id (v<volume hex>.r / .fNN)
//! <root>/trash/     deleted extents, <extent name>.<deleted unix ms>, until purged
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::catalog::{Catalog, ExtentEntry, TrashEntry};
use crate::error::{Error, ExtentState, Result};
use crate::extent_header::EXTENT_DATA_OFFSET_BYTES;
use crate::fragment::{self, Fragment};
use crate::id::ExtentId;
use crate::inflight::OpsInFlight;
use crate::info::{
    DiskIdentity, DiskStat, ExtentInfo, OpenReport, PurgeReport, TrashSpace, load_or_create_identity, statvfs,
};
use crate::io::{IoBackend, IoChoice};
use crate::read_faults::ReadFaults;
use crate::record::{RECORD_HEADER_BYTES, Record, RecordHeader, RecordLocation};
use crate::replica::{RecordIn, Replica};
use crate::scan::ReplicaScan;
use crate::space::{Claim, DISK_RESERVE_BYTES_DEFAULT, SpaceReserve};

/// Default largest block (record payload): 4 MiB.
pub const BLOCK_SIZE_MAX_BYTES_DEFAULT: u64 = 4 << 20;
/// Records one append may carry (they share one fsync).
pub const APPEND_RECORDS_MAX: usize = 1024;

/// How a disk is opened.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Which I/O backend to use.
    pub io: IoChoice,
    /// Largest record payload accepted (`block_size_max_bytes`).
    pub block_size_max_bytes: u64,
    /// Bytes of the file system that writes of data leave free for the catalog (see
    /// [`crate::space`]): a new extent or an append that would leave less is refused with
    /// [`Error::ReserveReached`]. 0 keeps none.
    pub reserve_bytes: u64,
    /// A new fragment (an encode's, a repair's) that would reach into the reserve first
    /// unlinks trash entries still within their retention, oldest delete first, until it
    /// fits (with a warning: those deletes can no longer be undone). Appends never do:
    /// writing a fragment restores redundancy or frees space (a coded volume takes half
    /// the room of its replicas), and room the master placed a fragment into was taken by
    /// appends, which then also took the trash, so that no encode fit. `false`: the trash
    /// waits for its retention, whatever the space.
    pub purge_trash_for_fragments: bool,
}

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            io: IoChoice::Auto,
            block_size_max_bytes: BLOCK_SIZE_MAX_BYTES_DEFAULT,
            reserve_bytes: DISK_RESERVE_BYTES_DEFAULT,
            purge_trash_for_fragments: true,
        }
    }
}

#[derive(Clone)]
enum Extent {
    Replica(Arc<Replica>),
    Fragment(Arc<Fragment>),
}

/// One disk: extents, trash and catalog under one directory.
pub struct Disk {
    root: PathBuf,
    io: Arc<dyn IoBackend>,
    catalog: Catalog,
    extents: RwLock<BTreeMap<ExtentId, Extent>>,
    /// Serializes creates and deletes (catalog + directory changes); never held for data I/O.
    namespace: Mutex<()>,
    block_size_max_bytes: u64,
    identity: DiskIdentity,
    report: OpenReport,
    /// Entries and bytes in the trash, counted at open and kept by delete and purge (under
    /// `namespace`), so that a stat reads no catalog.
    trash_entries: AtomicU64,
    trash_bytes: AtomicU64,
    /// Extent creates that failed with an I/O error other than a lack of space (see
    /// [`DiskStat::write_faults`]).
    create_faults: AtomicU64,
    /// Extents whose reads the device failed (see [`DiskStat::unreadable_extents`]).
    read_faults: Arc<ReadFaults>,
    /// Operations under way (see [`DiskStat::oldest_op_ms`]).
    ops: Arc<OpsInFlight>,
    /// Free space kept for the catalog.
    space: SpaceReserve,
    /// See [`DiskOptions::purge_trash_for_fragments`].
    purge_trash_for_fragments: bool,
    /// Trash entries unlinked within their retention to make room for a write.
    purged_for_fragments: AtomicU64,
}

pub use crate::clock::now_unix_ms;

/// The catalog's directory under a disk's root.
const CATALOG_DIR: &str = "catalog";

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|dir| dir.sync_all()).map_err(|e| Error::io(path, "fsync directory", e))
}

impl Disk {
    /// Whether `root` holds a disk (its catalog), without opening it: [`Disk::open`]
    /// formats a directory that does not.
    pub fn is_formatted(root: &Path) -> bool {
        root.join(CATALOG_DIR).exists()
    }

    /// Opens the disk at `root`, formatting it if it is new. Open replicas are recovered
    /// (torn tails truncated), interrupted deletes completed and orphan files moved to the
    /// trash; [`Disk::open_report`] tells what was found.
    pub fn open(root: impl AsRef<Path>, options: DiskOptions) -> Result<Disk> {
        let root = root.as_ref().to_path_buf();
        for dir in [root.clone(), root.join("extents"), root.join("trash")] {
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "create disk directory", e))?;
        }
        let io = options.io.build().map_err(|e| Error::io(&root, "set up I/O backend", e))?;
        let catalog = Catalog::open_on(&root.join(CATALOG_DIR), io.clone())?;
        let identity = load_or_create_identity(&catalog)?;
        let mut disk = Disk {
            space: SpaceReserve::new(&root, options.reserve_bytes),
            purge_trash_for_fragments: options.purge_trash_for_fragments,
            purged_for_fragments: AtomicU64::new(0),
            root,
            io,
            catalog,
            extents: RwLock::new(BTreeMap::new()),
            namespace: Mutex::new(()),
            block_size_max_bytes: options.block_size_max_bytes,
            identity,
            report: OpenReport::default(),
            trash_entries: AtomicU64::new(0),
            trash_bytes: AtomicU64::new(0),
            create_faults: AtomicU64::new(0),
            read_faults: Arc::new(ReadFaults::default()),
            ops: Arc::new(OpsInFlight::default()),
        };
        disk.complete_deletes()?;
        disk.load_extents()?;
        disk.trash_orphans()?;
        for entry in disk.catalog.trash()? {
            disk.trash_added(&entry);
        }
        sync_dir(&disk.root.join("extents"))?;
        sync_dir(&disk.root.join("trash"))?;
        Ok(disk)
    }

    fn trash_added(&self, entry: &TrashEntry) {
        self.trash_entries.fetch_add(1, Ordering::Relaxed);
        self.trash_bytes.fetch_add(entry.size_bytes, Ordering::Relaxed);
    }

    fn trash_removed(&self, entry: &TrashEntry) {
        // Saturating: the counters must not wrap if they ever disagreed with the catalog.
        let _ = self
            .trash_entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
        let _ = self
            .trash_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(entry.size_bytes)));
    }

    /// (capacity, free) bytes of the file system holding the disk (a simulated one's under
    /// the fault injector's [`crate::io::fault::FaultPlan::fs_space`]).
    fn fs_space(&self) -> Result<(u64, u64)> {
        match self.io.fs_space() {
            Some(space) => Ok(space),
            None => statvfs(&self.root),
        }
    }

    /// Claims room for a write of `bytes` of data, keeping the catalog's reserve free:
    /// when a `fragment` does not fit, trash entries are unlinked for it first (oldest
    /// delete first; see [`DiskOptions::purge_trash_for_fragments`]). The caller must not
    /// hold the namespace lock.
    fn claim_space(&self, bytes: u64, op: &'static str, fragment: bool) -> Result<Claim<'_>> {
        let simulated = self.io.fs_space().is_some();
        let refused = match self.space.claim(bytes, op, simulated, || self.fs_space()) {
            Err(e @ Error::ReserveReached { .. }) => e,
            other => return other,
        };
        if !fragment || !self.purge_trash_for_fragments || self.trash_entries.load(Ordering::Relaxed) == 0 {
            return Err(refused);
        }
        let (report, free_after_bytes) = {
            // The figure is read under the namespace lock, so that creates racing for room
            // do not each purge for the same shortfall.
            let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
            let Ok((_, free_bytes)) = self.fs_space() else { return Err(refused) };
            let space =
                TrashSpace { free_bytes, free_min_bytes: bytes.saturating_add(self.space.reserve_bytes()) };
            // No entry is past a retention of forever: only what the space needs goes.
            let report = self.purge_trash_locked(now_unix_ms(), Duration::MAX, Some(space))?;
            (report, free_bytes.saturating_add(report.given_back_bytes))
        };
        if report.early == 0 {
            return Err(refused);
        }
        self.purged_for_fragments.fetch_add(report.early, Ordering::Relaxed);
        tracing::warn!(disk = %self.root.display(), op, bytes, purged = report.early, freed_bytes = report.freed_bytes,
            "disk out of room for a fragment: trash purged before its retention (those deletes can no longer be undone)");
        // The file system may not show the unlinked blocks free yet (a journal commit
        // away): what the purge gave back counts.
        self.space.claim(bytes, op, true, || {
            self.fs_space().map(|(capacity, free)| (capacity, free.max(free_after_bytes)))
        })
    }

    fn extent_path(&self, id: ExtentId) -> PathBuf {
        self.root.join("extents").join(id.to_string())
    }

    fn trash_path(&self, entry: &TrashEntry) -> PathBuf {
        self.root.join("trash").join(entry.file_name())
    }

    fn complete_deletes(&mut self) -> Result<()> {
        for entry in self.catalog.trash()? {
            let trash = self.trash_path(&entry);
            let live = self.extent_path(entry.extent);
            if !trash.exists() && live.exists() && self.catalog.extent(entry.extent)?.is_none() {
                fs::rename(&live, &trash).map_err(|e| Error::io(&live, "move extent to trash", e))?;
                self.report.deletes_completed += 1;
            }
        }
        Ok(())
    }

    fn load_extents(&mut self) -> Result<()> {
        let mut map = BTreeMap::new();
        for (id, entry) in self.catalog.extents()? {
            let path = self.extent_path(id);
            if !path.exists() {
                tracing::error!(extent = %id, path = %path.display(), "extent file is missing");
                self.report.missing.push(id);
                continue;
            }
            let extent = if id.is_replica() {
                let opened = Replica::open(
                    self.io.clone(),
                    path,
                    id,
                    &entry,
                    self.block_size_max_bytes,
                    &self.catalog,
                );
                match opened {
                    Ok((replica, recovery)) => {
                        if let Some(damage) = &recovery.damaged {
                            self.report.damaged.push((id, damage.clone()));
                        }
                        if !recovery.corrupt.is_empty() {
                            self.report.corrupt.push((id, recovery.corrupt.clone()));
                        }
                        if recovery.truncated_bytes > 0
                            || recovery.records_verified > 0
                            || !recovery.corrupt.is_empty()
                        {
                            self.report.recovered.push((id, recovery));
                        }
                        Extent::Replica(Arc::new(replica))
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        tracing::error!(extent = %id, error = %e, "extent is damaged");
                        self.report.damaged.push((id, e.to_string()));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                let (fragment, damage) = Fragment::open(self.io.clone(), path, id, &entry)?;
                if let Some(damage) = damage {
                    self.report.damaged.push((id, damage));
                }
                Extent::Fragment(Arc::new(fragment))
            };
            map.insert(id, extent);
        }
        *self.extents.get_mut().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    fn trash_orphans(&mut self) -> Result<()> {
        let dir = self.root.join("extents");
        let known: BTreeSet<ExtentId> = self.catalog.extents()?.into_iter().map(|(id, _)| id).collect();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io(&dir, "list extents", e))?;
        for item in entries {
            let item = item.map_err(|e| Error::io(&dir, "list extents", e))?;
            let path = item.path();
            let Some(id) = item.file_name().to_str().and_then(|name| name.parse::<ExtentId>().ok()) else {
                self.report.unknown_files.push(path);
                continue;
            };
            if known.contains(&id) {
                continue;
            }
            let size_bytes = item.metadata().map(|m| m.len()).unwrap_or(0);
            let trash = TrashEntry { extent: id, deleted_unix_ms: now_unix_ms(), size_bytes };
            self.catalog.put_trash(&trash)?;
            let to = self.trash_path(&trash);
            fs::rename(&path, &to).map_err(|e| Error::io(&path, "move orphan extent to trash", e))?;
            tracing::warn!(extent = %id, "moved orphan extent file to the trash");
            self.report.orphans_trashed.push(id);
        }
        Ok(())
    }

    /// What opening found: recovered tails, missing and damaged extents, orphans.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The directory this disk owns.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The disk's identity, created when it was first formatted.
    pub fn identity(&self) -> DiskIdentity {
        self.identity
    }

    /// Name of the I/O backend in use.
    pub fn io_backend_name(&self) -> String {
        self.io.name()
    }

    /// Largest record payload this disk accepts.
    pub fn block_size_max_bytes(&self) -> u64 {
        self.block_size_max_bytes
    }

    fn get(&self, id: ExtentId) -> Result<Extent> {
        self.extents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or(Error::UnknownExtent(id))
    }

    fn replica(&self, id: ExtentId) -> Result<Arc<Replica>> {
        match self.get(id)? {
            Extent::Replica(r) => Ok(r),
            Extent::Fragment(_) => Err(Error::WrongKind(id, "replica")),
        }
    }

    fn fragment(&self, id: ExtentId) -> Result<Arc<Fragment>> {
        match self.get(id)? {
            Extent::Fragment(f) => Ok(f),
            Extent::Replica(_) => Err(Error::WrongKind(id, "fragment")),
        }
    }

    /// [`Disk::check_new`] under the namespace lock, released at once.
    fn namespace_checked(&self, id: ExtentId) -> Result<()> {
        let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
        self.check_new(id)
    }

    fn check_new(&self, id: ExtentId) -> Result<()> {
        if self.extents.read().unwrap_or_else(|p| p.into_inner()).contains_key(&id)
            || self.catalog.extent(id)?.is_some()
        {
            return Err(Error::ExtentExists(id));
        }
        if self.extent_path(id).exists() {
            // A file the catalog does not know: a create a crash cut short. It goes to the
            // trash at the next open; until then the name is taken.
            return Err(Error::ExtentExists(id));
        }
        Ok(())
    }

    /// Runs `create` (which makes extent `id`'s file, then records it in the catalog; the
    /// caller holds the namespace lock and has checked the name is free) and, if it fails,
    /// removes the file it may have made. A create cut short by an error (a full disk fails
    /// the header's write) otherwise left a file the catalog does not know, which holds the
    /// name until the next open: every retry of the create failed with
    /// [`Error::ExtentExists`]. The catalog is written last, so a failed create is not in it.
    fn undo_failed_create<T>(&self, id: ExtentId, create: impl FnOnce() -> Result<T>) -> Result<T> {
        let made = create();
        if let Err(Error::Io { .. }) = &made {
            self.create_faults.fetch_add(1, Ordering::Relaxed);
        }
        if made.is_err() {
            // Best effort: a file left (the removal failing too) goes to the trash at the
            // next open, as a crash's would.
            let _ = std::fs::remove_file(self.extent_path(id));
        }
        made
    }

    /// Creates an empty replica extent for `volume_id`.
    pub fn create_replica(&self, volume_id: u64) -> Result<ExtentId> {
        let _op = self.ops.begin();
        let id = ExtentId::replica(volume_id);
        let _claim = self.claim_space(EXTENT_DATA_OFFSET_BYTES, "create replica extent", false)?;
        let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
        self.check_new(id)?;
        let created = now_unix_ms();
        let replica = self.undo_failed_create(id, || {
            let replica = Replica::create(
                self.io.clone(),
                self.extent_path(id),
                id,
                created,
                self.block_size_max_bytes,
            )?;
            sync_dir(&self.root.join("extents"))?;
            let entry = ExtentEntry {
                state: ExtentState::Open,
                created_unix_ms: created,
                length_bytes: 0,
                chunk_size_bytes: 0,
            };
            self.catalog.put_extent(id, &entry)?;
            Ok(replica)
        })?;
        self.extents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Extent::Replica(Arc::new(replica)));
        Ok(id)
    }

    /// Appends a block record to an open replica and returns once it is durable. With
    /// `expected_offset_bytes`, the append is refused unless the replica ends exactly there.
    pub fn append(
        &self,
        id: ExtentId,
        expected_offset_bytes: Option<u64>,
        sha256: &[u8; 32],
        payload: &[u8],
    ) -> Result<RecordLocation> {
        let _op = self.ops.begin();
        let mut locations = self.append_records(
            id,
            expected_offset_bytes,
            &[RecordIn { sha256, payload, payload_crc32: None }],
        )?;
        locations.pop().ok_or_else(|| Error::BadParameters("an append of one record wrote none".into()))
    }

    /// Appends records back to back to an open replica and returns once all of them are
    /// durable (one fsync for the batch). With `expected_offset_bytes`, the append is
    /// refused unless the replica ends exactly there. At most [`APPEND_RECORDS_MAX`]
    /// records.
    pub fn append_records(
        &self,
        id: ExtentId,
        expected_offset_bytes: Option<u64>,
        records: &[RecordIn<'_>],
    ) -> Result<Vec<RecordLocation>> {
        let _op = self.ops.begin();
        if records.len() > APPEND_RECORDS_MAX {
            return Err(Error::BadParameters(format!(
                "{} records in one append; at most {APPEND_RECORDS_MAX}",
                records.len()
            )));
        }
        let mut bytes = 0u64;
        for r in records {
            if r.payload.len() as u64 > self.block_size_max_bytes {
                return Err(Error::RecordTooLarge {
                    size_bytes: r.payload.len() as u64,
                    limit_bytes: self.block_size_max_bytes,
                });
            }
            bytes += (RECORD_HEADER_BYTES + r.payload.len()) as u64;
        }
        let replica = self.replica(id)?;
        // Refused for space, an append that could not have been made anyway says why.
        let _claim = self
            .claim_space(bytes, "append", false)
            .or_else(|refused| replica.check_appendable(expected_offset_bytes).and(Err(refused)))?;
        replica.append(&self.catalog, expected_offset_bytes, records)
    }

    /// Reads and verifies the record at `offset_bytes` of a replica.
    pub fn read_record(&self, id: ExtentId, offset_bytes: u64) -> Result<Record> {
        let _op = self.ops.begin();
        self.replica(id)?.read_record(offset_bytes).inspect_err(|e| self.read_faults.note(e))
    }

    /// Reads and verifies the record at `offset_bytes` of a replica into `buf`, reusing its
    /// allocation (it is only grown, never cleared): returns the header and where the
    /// record starts, so the record is `buf[start..start + header.record_len_bytes()]`
    /// (`start` is 0 unless the read went direct and needed an aligned address).
    /// `record_len_hint` (the index's length) lets header and payload come in one read; a
    /// wrong hint only costs a second read.
    pub fn read_record_into(
        &self,
        id: ExtentId,
        offset_bytes: u64,
        record_len_hint: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(RecordHeader, usize)> {
        let _op = self.ops.begin();
        self.replica(id)?
            .read_record_into(offset_bytes, record_len_hint, buf)
            .inspect_err(|e| self.read_faults.note(e))
    }

    /// [`Disk::read_record_into`] without blocking: only when the record's length is known,
    /// its extent is open and the page cache holds its bytes. `Ok(None)`: take the
    /// blocking path. For async callers (a small read then costs no thread hand-off).
    pub fn read_record_cached(
        &self,
        id: ExtentId,
        offset_bytes: u64,
        record_len_bytes: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<RecordHeader>> {
        self.replica(id)?.read_record_cached(offset_bytes, record_len_bytes, buf)
    }

    /// Seals a replica at `length_bytes` (default: its end), dropping any records past it.
    /// Returns the sealed length.
    pub fn seal_replica(&self, id: ExtentId, length_bytes: Option<u64>) -> Result<u64> {
        let _op = self.ops.begin();
        self.replica(id)?.seal(&self.catalog, length_bytes)
    }

    /// Reads raw bytes of a replica's durable data region, unverified: for callers that
    /// check them against a verified scan (see the volume server's encoder).
    pub fn read_replica_raw(&self, id: ExtentId, offset_bytes: u64, buf: &mut [u8]) -> Result<()> {
        let _op = self.ops.begin();
        self.replica(id)?.read_raw(offset_bytes, buf).inspect_err(|e| self.read_faults.note(e))
    }

    /// Iterates over a replica's records in order, verifying each.
    pub fn scan_replica(&self, id: ExtentId) -> Result<ReplicaScan> {
        self.scan_replica_from(id, 0)
    }

    /// Like [`Disk::scan_replica`], from the record boundary `from_offset_bytes` (a
    /// position that is not a record start fails as corrupt at that offset).
    pub fn scan_replica_from(&self, id: ExtentId, from_offset_bytes: u64) -> Result<ReplicaScan> {
        let replica = self.replica(id)?;
        let end_bytes = replica.durable_len_bytes();
        if from_offset_bytes > end_bytes {
            return Err(Error::OffsetPastEnd { extent: id, offset_bytes: from_offset_bytes, end_bytes });
        }
        Ok(ReplicaScan {
            replica,
            next_offset_bytes: from_offset_bytes,
            end_bytes,
            done: false,
            read_faults: self.read_faults.clone(),
            ops: self.ops.clone(),
        })
    }

    /// Creates a fragment extent of `fragment_len_bytes`, chunked by `chunk_size_bytes`.
    pub fn create_fragment(
        &self,
        volume_id: u64,
        index: u8,
        fragment_len_bytes: u64,
        chunk_size_bytes: u32,
    ) -> Result<ExtentId> {
        let _op = self.ops.begin();
        fragment::check_parameters(fragment_len_bytes, chunk_size_bytes)?;
        let id = ExtentId::fragment(volume_id, index);
        // A create that cannot be made is refused before any trash is given up for it.
        self.namespace_checked(id)?;
        // The whole fragment is claimed: it is allocated on the device at its create.
        let _claim = self.claim_space(
            fragment::file_len_bytes(fragment_len_bytes, chunk_size_bytes),
            "create fragment extent",
            true,
        )?;
        let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
        self.check_new(id)?;
        let created = now_unix_ms();
        let fragment = self.undo_failed_create(id, || {
            let fragment = Fragment::create(
                self.io.clone(),
                self.extent_path(id),
                id,
                created,
                fragment_len_bytes,
                chunk_size_bytes,
            )?;
            sync_dir(&self.root.join("extents"))?;
            let entry = ExtentEntry {
                state: ExtentState::Open,
                created_unix_ms: created,
                length_bytes: fragment_len_bytes,
                chunk_size_bytes,
            };
            self.catalog.put_extent(id, &entry)?;
            Ok(fragment)
        })?;
        self.extents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Extent::Fragment(Arc::new(fragment)));
        Ok(id)
    }

    /// Writes whole chunks of a fragment at a chunk-aligned offset.
    pub fn write_fragment(&self, id: ExtentId, offset_bytes: u64, data: &[u8]) -> Result<()> {
        let _op = self.ops.begin();
        self.fragment(id)?.write(offset_bytes, data)
    }

    /// Makes a fragment's writes durable.
    pub fn sync_fragment(&self, id: ExtentId) -> Result<()> {
        let _op = self.ops.begin();
        self.fragment(id)?.sync()
    }

    /// Seals a fragment once every chunk is written.
    pub fn seal_fragment(&self, id: ExtentId) -> Result<()> {
        let _op = self.ops.begin();
        self.fragment(id)?.seal(&self.catalog)
    }

    /// Reads and verifies a byte range of a fragment.
    pub fn read_fragment(&self, id: ExtentId, offset_bytes: u64, length_bytes: u64) -> Result<Vec<u8>> {
        let _op = self.ops.begin();
        self.fragment(id)?.read(offset_bytes, length_bytes).inspect_err(|e| self.read_faults.note(e))
    }

    /// [`Disk::read_fragment`] into `buf`, reusing its allocation (only grown, never
    /// cleared): the range is `buf[skip..skip + length_bytes]` for the `skip` returned.
    pub fn read_fragment_into(
        &self,
        id: ExtentId,
        offset_bytes: u64,
        length_bytes: u64,
        buf: &mut Vec<u8>,
    ) -> Result<usize> {
        let _op = self.ops.begin();
        self.fragment(id)?
            .read_into(offset_bytes, length_bytes, buf)
            .inspect_err(|e| self.read_faults.note(e))
    }

    /// Every live extent.
    pub fn list(&self) -> Vec<ExtentInfo> {
        let extents = self.extents.read().unwrap_or_else(|p| p.into_inner());
        extents.iter().map(|(id, extent)| info(*id, extent)).collect()
    }

    /// One live extent.
    pub fn extent_info(&self, id: ExtentId) -> Result<ExtentInfo> {
        Ok(info(id, &self.get(id)?))
    }

    /// Capacity, usage and extent counts.
    pub fn stat(&self) -> Result<DiskStat> {
        let (capacity_bytes, free_bytes) = self.fs_space()?;
        let mut stat = DiskStat {
            capacity_bytes,
            free_bytes,
            reserve_bytes: self.space.reserve_bytes(),
            data_room_bytes: 0,
            trash_purged_for_fragments: self.purged_for_fragments.load(Ordering::Relaxed),
            used_bytes: 0,
            trash_bytes: 0,
            extents: 0,
            open_extents: 0,
            trash_extents: 0,
            failed_extents: 0,
            write_faults: self.create_faults.load(Ordering::Relaxed) + self.catalog.write_faults(),
            unreadable_extents: self.read_faults.extents(),
            oldest_op_ms: self.ops.oldest_ms(),
        };
        for (_, extent) in self.extents.read().unwrap_or_else(|p| p.into_inner()).iter() {
            stat.extents += 1;
            let (open, bytes, failed) = match extent {
                Extent::Replica(r) => (
                    r.state() == ExtentState::Open,
                    crate::extent_header::EXTENT_DATA_OFFSET_BYTES + r.durable_len_bytes(),
                    r.is_failed(),
                ),
                Extent::Fragment(f) => (f.state() == ExtentState::Open, f.file_len_bytes(), f.is_failed()),
            };
            stat.open_extents += u64::from(open);
            stat.failed_extents += u64::from(failed);
            stat.used_bytes += bytes;
        }
        stat.trash_extents = self.trash_entries.load(Ordering::Relaxed);
        stat.trash_bytes = self.trash_bytes.load(Ordering::Relaxed);
        stat.data_room_bytes = free_bytes.saturating_sub(stat.reserve_bytes);
        Ok(stat)
    }

    /// Moves an extent to the trash. Its bytes stay on disk until a purge after the
    /// retention time; the catalog change is the commit point.
    pub fn delete(&self, id: ExtentId) -> Result<TrashEntry> {
        let _op = self.ops.begin();
        let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
        let extent = self.get(id)?;
        match &extent {
            Extent::Replica(r) => r.retire(),
            Extent::Fragment(f) => f.retire(),
        }
        let live = self.extent_path(id);
        let size_bytes = fs::metadata(&live).map(|m| m.len()).unwrap_or(0);
        let trash = TrashEntry { extent: id, deleted_unix_ms: now_unix_ms(), size_bytes };
        let moved = self.catalog.move_to_trash(&trash);
        if let Err(e) = &moved
            && e.is_no_space()
        {
            // Refused for want of room, so not recorded: the extent stays live, as it was.
            // (Forgotten here while the catalog still held it, it could be neither deleted
            // nor made again until a restart: a failed encode's fragment on a full disk
            // then failed every later attempt with "already exists".)
            match &extent {
                Extent::Replica(r) => r.unretire(),
                Extent::Fragment(f) => f.unretire(),
            }
            return moved.map(|()| trash);
        }
        // Deleted, or failed otherwise: that failure may have reached the log, and the
        // delete may replay at the next open, so the extent takes no more operations (the
        // catalog's write fault fails the disk).
        self.extents.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
        moved?;
        self.trash_added(&trash);
        let to = self.trash_path(&trash);
        fs::rename(&live, &to).map_err(|e| Error::io(&live, "move extent to trash", e))?;
        sync_dir(&self.root.join("extents"))?;
        sync_dir(&self.root.join("trash"))?;
        Ok(trash)
    }

    /// Entries and bytes in the trash now (kept as counters: no catalog read).
    pub fn trash_usage(&self) -> (u64, u64) {
        (self.trash_entries.load(Ordering::Relaxed), self.trash_bytes.load(Ordering::Relaxed))
    }

    /// Every extent in the trash.
    pub fn list_trash(&self) -> Result<Vec<TrashEntry>> {
        self.catalog.trash()
    }

    /// Unlinks trash entries older than `retention`.
    pub fn purge_trash(&self, retention: Duration) -> Result<PurgeReport> {
        self.purge_trash_at(now_unix_ms(), retention)
    }

    /// Unlinks trash entries deleted before `now_unix_ms - retention` (time is a parameter
    /// so that tests and the simulator can move it).
    pub fn purge_trash_at(&self, now_unix_ms: u64, retention: Duration) -> Result<PurgeReport> {
        self.purge_trash_for_space_at(now_unix_ms, retention, None)
    }

    /// [`Disk::purge_trash`], and then, while the file system has less than
    /// `free_min_percent` of its capacity free, the oldest entries still within their
    /// retention too, until it has that much (counted in [`PurgeReport::early`]): a disk
    /// running out of room gives up the undo window of its oldest deletes rather than
    /// refuse writes while the trash holds their bytes. 0 never purges early.
    pub fn purge_trash_keeping_free(
        &self,
        retention: Duration,
        free_min_percent: u64,
    ) -> Result<PurgeReport> {
        if free_min_percent == 0 {
            return self.purge_trash(retention);
        }
        let (capacity_bytes, free_bytes) = match self.fs_space() {
            Ok(space) => space,
            // Without the file system's figures, the retention still applies.
            Err(_) => return self.purge_trash(retention),
        };
        // The floor sits above the catalog's reserve: data writes stop at the reserve, so
        // a floor below it would never be reached.
        let share_bytes =
            u64::try_from(u128::from(capacity_bytes) * u128::from(free_min_percent.min(100)) / 100)
                .unwrap_or(u64::MAX);
        let space =
            TrashSpace { free_bytes, free_min_bytes: share_bytes.saturating_add(self.space.reserve_bytes()) };
        self.purge_trash_for_space_at(now_unix_ms(), retention, Some(space))
    }

    /// Unlinks trash entries deleted before `now_unix_ms - retention`, then, if `space`
    /// says the file system has less free than its floor, entries still within their
    /// retention, oldest delete first, until what was freed brings it to the floor. Time and space
    /// are parameters so that tests can set them.
    pub fn purge_trash_for_space_at(
        &self,
        now_unix_ms: u64,
        retention: Duration,
        space: Option<TrashSpace>,
    ) -> Result<PurgeReport> {
        let _ns = self.namespace.lock().unwrap_or_else(|p| p.into_inner());
        self.purge_trash_locked(now_unix_ms, retention, space)
    }

    /// [`Disk::purge_trash_for_space_at`] with the namespace lock held.
    fn purge_trash_locked(
        &self,
        now_unix_ms: u64,
        retention: Duration,
        space: Option<TrashSpace>,
    ) -> Result<PurgeReport> {
        let cutoff = now_unix_ms.saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        let mut report = PurgeReport::default();
        let mut young = Vec::new();
        for entry in self.catalog.trash()? {
            if entry.deleted_unix_ms > cutoff {
                young.push(entry);
                continue;
            }
            self.unlink_trash(&entry, &mut report)?;
        }
        // Oldest delete first: the one whose undo window is nearest its end anyway. What
        // the unlinks gave back is counted by the files' allocated blocks, not their
        // lengths (a fragment a failed encode left may be sparse).
        young.sort_by_key(|e| e.deleted_unix_ms);
        for entry in young {
            match space {
                Some(s) if s.free_bytes.saturating_add(report.given_back_bytes) < s.free_min_bytes => {
                    self.unlink_trash(&entry, &mut report)?;
                    report.early += 1;
                }
                _ => report.kept += 1,
            }
        }
        if report.purged > 0 {
            sync_dir(&self.root.join("trash"))?;
        }
        Ok(report)
    }

    /// Unlinks one trash entry's file and forgets it, counting it in `report` (with the
    /// bytes of blocks the file had allocated: 0 for a file already gone).
    fn unlink_trash(&self, entry: &TrashEntry, report: &mut PurgeReport) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let path = self.trash_path(entry);
        let allocated_bytes = fs::metadata(&path).map_or(0, |m| m.blocks().saturating_mul(512));
        match self.io.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, "unlink trash", e)),
        }
        self.catalog.remove_trash(entry)?;
        self.trash_removed(entry);
        report.purged += 1;
        report.freed_bytes += entry.size_bytes;
        report.given_back_bytes += allocated_bytes;
        Ok(())
    }

    /// A named metadata value kept in the catalog (e.g. the volume server's node id).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.catalog.meta(&format!("user/{name}"))
    }

    /// Stores a named metadata value durably.
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<()> {
        self.catalog.put_meta(&format!("user/{name}"), value)
    }

    /// The path of an extent's file (for benchmarks and fault tests that corrupt bytes).
    pub fn extent_file_path(&self, id: ExtentId) -> PathBuf {
        self.extent_path(id)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if let Err(e) = self.catalog.flush() {
            tracing::warn!(disk = %self.root.display(), error = %e, "cannot flush catalog at close");
        }
    }
}

fn info(id: ExtentId, extent: &Extent) -> ExtentInfo {
    match extent {
        Extent::Replica(r) => ExtentInfo {
            id,
            state: r.state(),
            length_bytes: r.durable_len_bytes(),
            chunk_size_bytes: 0,
            created_unix_ms: r.created_unix_ms(),
            failed: r.is_failed(),
        },
        Extent::Fragment(f) => ExtentInfo {
            id,
            state: f.state(),
            length_bytes: f.fragment_len_bytes,
            chunk_size_bytes: f.chunk_size_bytes,
            created_unix_ms: f.created_unix_ms,
            failed: f.is_failed(),
        },
    }
}
