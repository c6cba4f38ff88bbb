//! The scrubber (DESIGN section 6, "Pocket Watch" on the volume server): reads every
//! record of every replica and every chunk of every fragment on this server's disks,
//! checking their CRCs, at most `bytes_per_sec`, and starts a full pass at most once per
//! `period`. A corrupt extent, or one the device cannot read (EIO), is reported to the
//! master, whose repair planner rebuilds it.
//! Progress (the last extent checked on each disk) is kept in `<disk>/scrub.cursor`
//! (docs/FORMAT.md section 14), so a restart resumes where the scrubber stopped instead of
//! starting the pass over.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cellar_blockstore::{Disk, ExtentId, ExtentInfo, ExtentPart};
use tokio::sync::watch;

use crate::shared::Shared;

/// First line of a cursor file: its format and version.
pub const CURSOR_MAGIC: &str = "cellar-scrub-cursor v1";
/// The cursor file's name in a disk's root.
pub const CURSOR_FILE: &str = "scrub.cursor";
/// Bytes of a fragment checked per read.
const FRAGMENT_STEP_BYTES: u64 = 4 << 20;

pub use crate::config::ScrubConfig;

/// The extent last checked on a disk, if a pass is under way there.
pub fn read_cursor(root: &Path) -> Option<ExtentId> {
    let text = std::fs::read_to_string(root.join(CURSOR_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next() != Some(CURSOR_MAGIC) {
        tracing::warn!(disk = %root.display(), "scrub cursor of an unknown format; the pass starts over");
        return None;
    }
    lines.next().and_then(|id| id.parse().ok())
}

/// Records `id` as the last extent checked (none: the disk's pass is complete). Written to
/// a temporary file and renamed over the cursor, so a crash leaves the old or the new one.
pub fn write_cursor(root: &Path, id: Option<ExtentId>) -> std::io::Result<()> {
    let tmp: PathBuf = root.join(format!("{CURSOR_FILE}.tmp"));
    let body = match id {
        Some(id) => format!("{CURSOR_MAGIC}\n{id}\n"),
        None => format!("{CURSOR_MAGIC}\n"),
    };
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, root.join(CURSOR_FILE))
}

/// Reads and checks one extent; the bytes read, or the blockstore's error.
fn verify(disk: &Disk, info: &ExtentInfo) -> Result<u64, cellar_blockstore::Error> {
    match info.id.part {
        ExtentPart::Replica => {
            let mut bytes = 0;
            for record in disk.scan_replica(info.id)? {
                bytes += record?.payload.len() as u64;
            }
            Ok(bytes)
        }
        ExtentPart::Fragment(_) => {
            let mut offset = 0;
            while offset < info.length_bytes {
                let len = FRAGMENT_STEP_BYTES.min(info.length_bytes - offset);
                disk.read_fragment(info.id, offset, len)?;
                offset += len;
            }
            Ok(info.length_bytes)
        }
    }
}

/// Scrubs until `stop` turns true.
pub async fn run(shared: Arc<Shared>, config: ScrubConfig, mut stop: watch::Receiver<bool>) {
    if config.bytes_per_sec == 0 {
        return;
    }
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    let m = &shared.metrics.scrub;
    m.enabled.store(true, Ordering::Relaxed);
    loop {
        let pass_started = Instant::now();
        // Progress of the pass: every extent's bytes at its start (a resumed pass counts
        // what the cursor skips as done).
        let (mut total, mut skipped) = (0u64, 0u64);
        for (_, disk) in shared.disks.with_ids() {
            let cursor = read_cursor(disk.root());
            for e in disk.list() {
                total += e.length_bytes;
                skipped += if cursor.is_some_and(|c| e.id <= c) { e.length_bytes } else { 0 };
            }
        }
        m.pass_bytes_total.store(total, Ordering::Relaxed);
        m.pass_bytes_done.store(skipped, Ordering::Relaxed);
        for (disk_id, disk) in shared.disks.with_ids() {
            let root = disk.root().to_path_buf();
            let cursor = read_cursor(&root);
            let mut extents = disk.list();
            extents.sort_by_key(|e| e.id);
            extents.retain(|e| cursor.is_none_or(|c| e.id > c));
            for info in extents {
                if stopped(&stop) {
                    return;
                }
                let started = Instant::now();
                let id = info.id;
                let d = disk.clone();
                let checked =
                    tokio::task::spawn_blocking(move || verify(&d, &info).map_err(|e| (info, e))).await;
                let bytes = match checked {
                    Ok(Ok(bytes)) => bytes,
                    Ok(Err((info, e))) if e.is_bad_extent() => {
                        m.findings.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(disk = disk_id, extent = %info.id, error = %e, "scrub found a corrupt or unreadable extent");
                        shared.cluster.report_bad_extent(info.id.volume_id, disk_id, format!("scrub: {e}"));
                        info.length_bytes
                    }
                    Ok(Err((info, cellar_blockstore::Error::UnknownExtent(_)))) => {
                        tracing::debug!(extent = %info.id, "deleted while the scrubber reached it");
                        0
                    }
                    Ok(Err((info, e))) => {
                        m.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(disk = disk_id, extent = %info.id, error = %e, "scrub could not read an extent");
                        0
                    }
                    Err(e) => {
                        m.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "scrub task failed");
                        0
                    }
                };
                m.bytes.fetch_add(bytes, Ordering::Relaxed);
                m.pass_bytes_done.fetch_add(bytes, Ordering::Relaxed);
                m.extents.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = write_cursor(&root, Some(id)) {
                    tracing::warn!(disk = disk_id, error = %e, "cannot record scrub progress");
                }
                // The rate: this extent's bytes take bytes / rate seconds in all.
                let due = Duration::from_secs_f64(bytes as f64 / config.bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            if let Err(e) = write_cursor(&root, None) {
                tracing::warn!(disk = disk_id, error = %e, "cannot record scrub progress");
            }
        }
        shared.metrics.scrub.passes.fetch_add(1, Ordering::Relaxed);
        let next = pass_started + config.period;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_round_trips_and_an_unknown_format_starts_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_cursor(dir.path()), None);
        let id = ExtentId::fragment(7, 3);
        write_cursor(dir.path(), Some(id)).expect("write");
        assert_eq!(read_cursor(dir.path()), Some(id));
        write_cursor(dir.path(), None).expect("write");
        assert_eq!(read_cursor(dir.path()), None);
        std::fs::write(dir.path().join(CURSOR_FILE), "something else\nv0000000000000007.f03\n")
            .expect("write");
        assert_eq!(read_cursor(dir.path()), None);
    }
}
