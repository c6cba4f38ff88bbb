//! The node's disks: opened once, found by the master's disk id, and the node identity
//! they keep (a restart is the same node).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cellar_blockstore::{Disk, DiskOptions, DiskStat};
use tonic::Status;

use crate::errors::{disk_status, join_status, status};

/// Catalog metadata name of the node id (decimal text).
pub const META_NODE_ID: &str = "node_id";
/// Catalog metadata name of the disk's id in the cell (decimal text).
pub const META_DISK_ID: &str = "disk_id";

/// One disk of this node.
pub struct LocalDisk {
    /// Its directory.
    pub path: PathBuf,
    /// The open blockstore disk.
    pub disk: Arc<Disk>,
}

/// Why the disks could not be opened or identified.
#[derive(Debug, thiserror::Error)]
pub enum DisksError {
    /// A disk did not open.
    #[error("open disk {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: cellar_blockstore::Error,
    },
    /// The disks disagree about which node they belong to.
    #[error("disks belong to different nodes: {0}")]
    MixedNodes(String),
    /// A new disk directory that is not a mount point while the server's other disks are
    /// (see [`unmounted_new_disks`]).
    #[error("disk {path}: no disk here and not a mount point, while other disks are; not formatted")]
    Unmounted {
        /// The directory.
        path: PathBuf,
    },
    /// A metadata value that does not parse.
    #[error("disk {path}: bad {name} metadata")]
    BadMeta {
        /// The directory.
        path: PathBuf,
        /// The name.
        name: &'static str,
    },
}

/// The disks, in the order given at start-up, and their cell ids once registered.
pub struct LocalDisks {
    disks: Vec<LocalDisk>,
    by_id: RwLock<BTreeMap<u64, Arc<Disk>>>,
    /// Stats asked and not answered yet, by disk id (see [`LocalDisks::stats`]).
    pending_stats: tokio::sync::Mutex<BTreeMap<u64, PendingStat>>,
}

/// A disk's stat under way on a blocking thread.
struct PendingStat {
    since: Instant,
    handle: tokio::task::JoinHandle<Result<DiskStat, cellar_blockstore::Error>>,
}

/// Distinct extents with reads the device failed at which a disk is reported failed: one
/// or a few unreadable sectors are extents to rebuild (each is reported as it is found);
/// this many on one disk since its server started mean the device is going bad, and
/// waiting for every extent to be found unreadable by a get or the scrubber (a pass a
/// week) would leave it taking new extents meanwhile.
pub const UNREADABLE_EXTENTS_DISK_FAILED: u64 = 8;

/// Whether a disk's oldest operation under way has been so for `hung_after`: a device
/// that stopped answering (its reads and appends wait forever).
pub fn op_hung(s: &DiskStat, hung_after: Duration) -> bool {
    u128::from(s.oldest_op_ms) >= hung_after.as_millis()
}

/// Whether a disk is reported failed (to the master with each heartbeat, and in
/// `/metrics`). A failed write or fsync: what the disk holds cannot be trusted (the kernel
/// may have dropped dirty pages), so the whole disk is failed; so is a disk that failed
/// to create an extent or write its catalog, one with [`UNREADABLE_EXTENTS_DISK_FAILED`]
/// unreadable extents, and one with an operation hung ([`op_hung`]; it would go on being
/// given new extents). A hung disk that answers again is reported whole with the next
/// heartbeat.
pub fn disk_failed(s: &DiskStat, hung_after: Duration) -> bool {
    s.failed_extents + s.write_faults > 0
        || s.unreadable_extents >= UNREADABLE_EXTENTS_DISK_FAILED
        || op_hung(s, hung_after)
}

/// How long one round of [`LocalDisks::stats`] waits for the disks' answers.
pub const STAT_WAIT: Duration = Duration::from_secs(1);

/// A disk's health as one round of [`LocalDisks::stats`] found it.
#[derive(Debug)]
pub enum DiskHealth {
    /// Its stat.
    Stat(DiskStat),
    /// Its stat failed (the directory gone, an I/O error).
    Failed(String),
    /// Its stat has not answered for this long, past `hung_after`: the device stopped
    /// answering.
    Hung(Duration),
    /// Its stat has not answered yet, for less than `hung_after`: no news this round.
    Waiting,
}

fn meta_u64(d: &LocalDisk, name: &'static str) -> Result<Option<u64>, DisksError> {
    let bad = || DisksError::BadMeta { path: d.path.clone(), name };
    match d.disk.meta(name).map_err(|source| DisksError::Open { path: d.path.clone(), source })? {
        None => Ok(None),
        Some(bytes) => {
            let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
            text.parse().map(Some).map_err(|_| bad())
        }
    }
}

/// Whether another file system is mounted at `path` (its device differs from its
/// parent's); `false` for a path that does not exist or cannot be examined.
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(canonical) = path.canonicalize() else { return false };
    let Some(parent) = canonical.parent() else { return true };
    match (std::fs::metadata(&canonical), std::fs::metadata(parent)) {
        (Ok(here), Ok(up)) => here.dev() != up.dev(),
        _ => false,
    }
}

/// The disks not to format, by index in `paths`: a directory with no disk in it that is
/// not a mount point while another disk of the server is one looks like a mount that did
/// not happen (a device that failed to come up at boot, an fstab line missing). Formatted
/// there, it would be a new, empty disk on the file system underneath (often the system
/// disk), filling it with whatever the cell places on it. Left out instead, like a disk
/// that cannot be opened: the master counts the disk it replaced failed. Servers whose
/// disks are all plain directories (tests, `cellar dev`, one file system) format as
/// before; `cellar disk format DIR` formats one on purpose.
pub fn unmounted_new_disks(
    paths: &[PathBuf],
    formatted: impl Fn(&Path) -> bool,
    mount_point: impl Fn(&Path) -> bool,
) -> Vec<usize> {
    let mounted: Vec<bool> = paths.iter().map(|p| mount_point(p)).collect();
    if !mounted.iter().any(|m| *m) {
        return Vec::new();
    }
    (0..paths.len()).filter(|&i| !mounted[i] && !formatted(&paths[i])).collect()
}

impl LocalDisks {
    /// Opens every disk (formatting new ones, except those [`unmounted_new_disks`] names).
    /// A disk that cannot be opened (its device failing, its catalog unreadable) is left
    /// out with an error logged, so that one dead disk does not keep the server's other
    /// disks offline (the master then counts the disk left out failed, and what it held is
    /// rebuilt elsewhere); when none opens, the first disk's error is returned.
    pub fn open(paths: &[PathBuf], options: DiskOptions) -> Result<LocalDisks, DisksError> {
        let mut disks = Vec::with_capacity(paths.len());
        let mut first_error = None;
        let unmounted = unmounted_new_disks(paths, Disk::is_formatted, is_mount_point);
        for (i, path) in paths.iter().enumerate() {
            if unmounted.contains(&i) {
                tracing::error!(disk = %path.display(),
                    "not formatting a new disk here: no disk is in this directory and it is not a mount point, \
                     while other disks of this server are (a mount that did not happen?); the server starts \
                     without it. Mount the disk, or format the directory on purpose with `cellar disk format`");
                first_error.get_or_insert(DisksError::Unmounted { path: path.clone() });
                continue;
            }
            let disk = match Disk::open(path, options.clone()) {
                Ok(disk) => disk,
                Err(source) => {
                    tracing::error!(disk = %path.display(), error = %source,
                        "disk cannot be opened; the server starts without it (the master counts it failed)");
                    first_error.get_or_insert(DisksError::Open { path: path.clone(), source });
                    continue;
                }
            };
            if let Ok(stat) = disk.stat()
                && stat.reserve_bytes > stat.capacity_bytes / 8
            {
                tracing::warn!(disk = %path.display(), reserve_bytes = stat.reserve_bytes,
                    capacity_bytes = stat.capacity_bytes,
                    "the reserve kept free for the disk's catalog is more than an eighth of the disk: little room \
                     is left for data (--disk-reserve-mib)");
            }
            let report = disk.open_report();
            if !report.missing.is_empty() || !report.damaged.is_empty() || !report.corrupt.is_empty() {
                tracing::error!(disk = %path.display(), missing = report.missing.len(), damaged = report.damaged.len(),
                    with_damaged_records = report.corrupt.len(),
                    "disk opened with missing or damaged extents (reported to the master once registered)");
            }
            disks.push(LocalDisk { path: path.clone(), disk: Arc::new(disk) });
        }
        if let (true, Some(e)) = (disks.is_empty(), first_error) {
            return Err(e);
        }
        Ok(LocalDisks {
            disks,
            by_id: RwLock::new(BTreeMap::new()),
            pending_stats: tokio::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The disks in start-up order.
    pub fn all(&self) -> &[LocalDisk] {
        &self.disks
    }

    /// The node id the disks carry, if any; disks added later carry none.
    pub fn node_id(&self) -> Result<Option<u64>, DisksError> {
        let mut found: Option<(u64, &PathBuf)> = None;
        for d in &self.disks {
            if let Some(id) = meta_u64(d, META_NODE_ID)? {
                match found {
                    Some((other, path)) if other != id => {
                        return Err(DisksError::MixedNodes(format!(
                            "{} says node {other}, {} says node {id}",
                            path.display(),
                            d.path.display()
                        )));
                    }
                    _ => found = Some((id, &d.path)),
                }
            }
        }
        Ok(found.map(|(id, _)| id))
    }

    /// Records the node id and each disk's cell id (in start-up order) on the disks.
    pub fn remember(&self, node_id: u64, disk_ids: &[u64]) -> Result<(), DisksError> {
        let mut by_id = self.by_id.write().unwrap_or_else(|p| p.into_inner());
        for (d, disk_id) in self.disks.iter().zip(disk_ids) {
            let put = |name: &str, value: u64| {
                d.disk
                    .put_meta(name, value.to_string().as_bytes())
                    .map_err(|source| DisksError::Open { path: d.path.clone(), source })
            };
            if meta_u64(d, META_NODE_ID)? != Some(node_id) {
                put(META_NODE_ID, node_id)?;
            }
            if meta_u64(d, META_DISK_ID)? != Some(*disk_id) {
                put(META_DISK_ID, *disk_id)?;
            }
            by_id.insert(*disk_id, d.disk.clone());
        }
        Ok(())
    }

    /// The disk with cell id `disk_id`, if this node has it.
    pub fn get(&self, disk_id: u64) -> Option<Arc<Disk>> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner()).get(&disk_id).cloned()
    }

    /// The disk with cell id `disk_id`, or an UNKNOWN_DISK status.
    pub fn require(&self, disk_id: u64) -> Result<Arc<Disk>, Status> {
        self.get(disk_id).ok_or_else(|| {
            status(
                tonic::Code::NotFound,
                cellar_proto::error_code::UNKNOWN_DISK,
                format!("disk {disk_id} is not on this node"),
            )
        })
    }

    /// Each disk's health: its stat, asked on a blocking thread, at most one ask per disk
    /// under way, the disks side by side, waiting at most `wait` for them. A stat that
    /// has not answered by then (its file system hung: `statvfs` does not return) is left
    /// running and asked again only once it answers, so a hung disk holds one thread, not
    /// one per round; it is [`DiskHealth::Hung`] once under way for `hung_after`. Before,
    /// the stats were awaited one after the other with no bound: one hung disk stopped
    /// its server's heartbeats, and the master counted the whole node down.
    pub async fn stats(&self, wait: Duration, hung_after: Duration) -> Vec<(u64, DiskHealth)> {
        self.stats_with(wait, hung_after, |disk| disk.stat()).await
    }

    /// [`LocalDisks::stats`] with `stat` asked of each disk (tests: a stat that hangs).
    async fn stats_with<F>(&self, wait: Duration, hung_after: Duration, stat: F) -> Vec<(u64, DiskHealth)>
    where
        F: Fn(&Disk) -> Result<DiskStat, cellar_blockstore::Error> + Clone + Send + 'static,
    {
        let mut pending = self.pending_stats.lock().await;
        for (id, disk) in self.with_ids() {
            pending.entry(id).or_insert_with(|| {
                let stat = stat.clone();
                PendingStat {
                    since: Instant::now(),
                    handle: tokio::task::spawn_blocking(move || stat(&disk)),
                }
            });
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::with_capacity(pending.len());
        let mut answered = Vec::new();
        for (&id, p) in pending.iter_mut() {
            let health = match tokio::time::timeout_at(deadline, &mut p.handle).await {
                Ok(Ok(Ok(stat))) => DiskHealth::Stat(stat),
                Ok(Ok(Err(e))) => DiskHealth::Failed(e.to_string()),
                Ok(Err(e)) => DiskHealth::Failed(format!("disk stat task: {e}")),
                Err(_) => {
                    let waited = p.since.elapsed();
                    out.push((
                        id,
                        if waited >= hung_after { DiskHealth::Hung(waited) } else { DiskHealth::Waiting },
                    ));
                    continue;
                }
            };
            answered.push(id);
            out.push((id, health));
        }
        for id in answered {
            pending.remove(&id);
        }
        out
    }

    /// Every disk with its cell id.
    pub fn with_ids(&self) -> Vec<(u64, Arc<Disk>)> {
        self.by_id.read().unwrap_or_else(|p| p.into_inner()).iter().map(|(id, d)| (*id, d.clone())).collect()
    }
}

/// Runs blocking disk work off the async threads and maps its error to a status.
pub async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, cellar_blockstore::Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(disk_status(&e)),
        Err(e) => Err(join_status(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellar_blockstore::IoChoice;

    fn paths(n: usize) -> Vec<PathBuf> {
        (0..n).map(|i| PathBuf::from(format!("/srv/disk{i}"))).collect()
    }

    #[test]
    fn a_new_directory_beside_mounted_disks_is_not_formatted() {
        let p = paths(4);
        let name = |path: &Path| path.to_string_lossy().into_owned();
        // disk1 and disk3 mounted; disk0 formatted but not mounted (it stays: a disk that
        // holds data opens wherever it is), disk2 new and not mounted: left out.
        let formatted = |path: &Path| name(path).ends_with("disk0") || name(path).ends_with("disk1");
        let mounted = |path: &Path| name(path).ends_with("disk1") || name(path).ends_with("disk3");
        assert_eq!(unmounted_new_disks(&p, formatted, mounted), vec![2]);
        // A new disk that is mounted is formatted.
        assert_eq!(unmounted_new_disks(&p, |_| false, |_| true), Vec::<usize>::new());
    }

    #[test]
    fn servers_of_plain_directories_format_as_before() {
        assert_eq!(unmounted_new_disks(&paths(3), |_| false, |_| false), Vec::<usize>::new());
    }

    /// A stat that does not return (a hung `statvfs`) is waited for `wait` at most per
    /// round, stays the only one under way for its disk (no thread per round), is
    /// `Waiting` and then `Hung`, while the other disk answers every round; once it
    /// returns, the disk is asked again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_stat_is_waited_for_in_bounded_rounds_and_asked_once() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let dirs = [tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir")];
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        let disks = LocalDisks::open(
            &paths,
            DiskOptions { io: IoChoice::Pread, reserve_bytes: 0, ..DiskOptions::default() },
        )
        .expect("open");
        disks.remember(1, &[10, 20]).expect("ids");
        let hung_root = paths[1].clone();
        let release = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let stat = {
            let (release, asked) = (release.clone(), asked.clone());
            move |disk: &Disk| {
                if disk.root() == hung_root {
                    asked.fetch_add(1, Ordering::SeqCst);
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                disk.stat()
            }
        };
        // Long enough for the healthy disk's stat on a loaded machine; each of the first
        // two rounds waits this long for the hung one.
        let wait = Duration::from_secs(3);
        let health = |round: &[(u64, DiskHealth)], id: u64| {
            format!("{:?}", round.iter().find(|(d, _)| *d == id).map(|(_, h)| h))
        };
        let round = disks.stats_with(wait, Duration::from_secs(3600), stat.clone()).await;
        assert!(health(&round, 10).starts_with("Some(Stat("), "{round:?}");
        assert_eq!(health(&round, 20), "Some(Waiting)");
        let round = disks.stats_with(wait, Duration::ZERO, stat.clone()).await;
        assert!(health(&round, 10).starts_with("Some(Stat("), "{round:?}");
        assert!(health(&round, 20).starts_with("Some(Hung("), "{round:?}");
        assert_eq!(
            asked.load(Ordering::SeqCst),
            1,
            "one stat under way for the hung disk, not one per round"
        );
        release.store(true, Ordering::SeqCst);
        let round = disks.stats_with(Duration::from_secs(30), Duration::ZERO, stat.clone()).await;
        assert!(health(&round, 20).starts_with("Some(Stat("), "the stat under way answered: {round:?}");
        let round = disks.stats_with(Duration::from_secs(30), Duration::ZERO, stat).await;
        assert!(health(&round, 20).starts_with("Some(Stat("), "{round:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 2, "asked again once it had answered");
    }

    #[test]
    fn a_disk_is_failed_by_a_write_fault_many_unreadable_extents_or_a_hung_operation() {
        let hung_after = Duration::from_secs(60);
        let failed = |s: DiskStat| disk_failed(&s, hung_after);
        let whole = DiskStat::default();
        assert!(!failed(whole));
        assert!(failed(DiskStat { failed_extents: 1, ..whole }));
        assert!(failed(DiskStat { write_faults: 1, ..whole }));
        // A few unreadable sectors: rebuilt one by one, the disk stays in service.
        assert!(!failed(DiskStat { unreadable_extents: UNREADABLE_EXTENTS_DISK_FAILED - 1, ..whole }));
        assert!(failed(DiskStat { unreadable_extents: UNREADABLE_EXTENTS_DISK_FAILED, ..whole }));
        // A slow operation is not a hung one.
        assert!(!failed(DiskStat { oldest_op_ms: 59_999, ..whole }));
        assert!(failed(DiskStat { oldest_op_ms: 60_000, ..whole }));
    }

    #[test]
    fn mount_points_are_told_from_plain_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_mount_point(dir.path()));
        assert!(!is_mount_point(&dir.path().join("missing")));
        assert!(is_mount_point(Path::new("/")));
        // procfs is mounted on every Linux this runs on.
        assert!(is_mount_point(Path::new("/proc")));
    }
}
