//! The node's disks: opened once, found by the master's disk id, and the node identity
//! they keep (a restart is the same node).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cellar_blockstore::{Disk, DiskOptions, IoChoice};
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

impl LocalDisks {
    /// Opens every disk (formatting new ones). A disk that cannot be opened (its device
    /// failing, its catalog unreadable) is left out with an error logged, so that one dead
    /// disk does not keep the server's other disks offline (the master then counts the
    /// disk left out failed, and what it held is rebuilt elsewhere); when none opens, the
    /// first disk's error is returned.
    pub fn open(
        paths: &[PathBuf],
        io: IoChoice,
        block_size_max_bytes: u64,
    ) -> Result<LocalDisks, DisksError> {
        let mut disks = Vec::with_capacity(paths.len());
        let mut first_error = None;
        for path in paths {
            let options = DiskOptions { io: io.clone(), block_size_max_bytes };
            let disk = match Disk::open(path, options) {
                Ok(disk) => disk,
                Err(source) => {
                    tracing::error!(disk = %path.display(), error = %source,
                        "disk cannot be opened; the server starts without it (the master counts it failed)");
                    first_error.get_or_insert(DisksError::Open { path: path.clone(), source });
                    continue;
                }
            };
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
        Ok(LocalDisks { disks, by_id: RwLock::new(BTreeMap::new()) })
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

/// Each disk's usage, read on blocking threads (a failed disk gives its error).
pub(crate) async fn stats(disks: &LocalDisks) -> Vec<(u64, Result<cellar_blockstore::DiskStat, String>)> {
    let mut out = Vec::new();
    for (id, disk) in disks.with_ids() {
        let stat = tokio::task::spawn_blocking(move || disk.stat()).await;
        out.push((
            id,
            match stat {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        ));
    }
    out
}
