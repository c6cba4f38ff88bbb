//! Emptying the trash. A deleted extent waits in its disk's `trash/` for the retention
//! time (the operator's window to undo a wrong delete, and a margin for a reader still
//! on an old placement), then a periodic purge unlinks it. Without this, deleted replicas
//! (every encode deletes one per copy) would fill the disks. A disk with less than
//! `trash_free_min_percent` of its capacity free gives its trash up before the retention,
//! oldest delete first, until it has that much: the trash is never what makes a disk
//! refuse writes (and placement, which counts only free bytes, pass it over) for a day.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::shared::Shared;

pub use crate::config::TRASH_RETENTION_DEFAULT;
/// Longest time between two purges: an entry is unlinked at most this long after its
/// retention ran out.
pub const TRASH_PURGE_PERIOD_MAX: Duration = Duration::from_secs(10 * 60);
/// Shortest time between two purges (a short retention in tests must not busy-loop).
pub const TRASH_PURGE_PERIOD_MIN: Duration = Duration::from_millis(100);
/// Longest time between two looks at the disks' free space (each purge looks).
pub const TRASH_SPACE_CHECK_PERIOD: Duration = Duration::from_secs(30);
pub use crate::config::TRASH_FREE_MIN_PERCENT_DEFAULT;

/// How often the trash is purged for a retention: a quarter of it, within
/// [`TRASH_PURGE_PERIOD_MIN`]..=[`TRASH_PURGE_PERIOD_MAX`], and at least every
/// [`TRASH_SPACE_CHECK_PERIOD`] when disks short of space purge early (`free_min_percent`
/// above 0).
pub fn purge_period(retention: Duration, free_min_percent: u64) -> Duration {
    let period = (retention / 4).clamp(TRASH_PURGE_PERIOD_MIN, TRASH_PURGE_PERIOD_MAX);
    if free_min_percent > 0 { period.min(TRASH_SPACE_CHECK_PERIOD) } else { period }
}

/// Purges every disk's trash of entries older than `retention`, and of younger ones on a
/// disk with less than `free_min_percent` of its capacity free (oldest first, until it
/// has that much), on a blocking thread (unlinks and synced catalog writes). Failures are
/// logged and counted in the metrics; the next round tries again.
pub async fn purge_once(shared: &Shared, retention: Duration, free_min_percent: u64) {
    let disks = shared.disks.with_ids();
    let rounds = tokio::task::spawn_blocking(move || {
        disks
            .into_iter()
            .map(|(disk_id, disk)| (disk_id, disk.purge_trash_keeping_free(retention, free_min_percent)))
            .collect::<Vec<_>>()
    })
    .await;
    let metrics = &shared.metrics;
    match rounds {
        Ok(rounds) => {
            for (disk_id, round) in rounds {
                match round {
                    Ok(report) => {
                        metrics.trash_purges.record(true, report.freed_bytes);
                        metrics.add_trash_purged_extents(report.purged, report.early);
                        if report.early > 0 {
                            tracing::warn!(
                                disk = disk_id,
                                early = report.early,
                                freed_bytes = report.freed_bytes,
                                free_min_percent,
                                "disk short of free space: trash purged before its retention (those deletes \
                                 can no longer be undone)"
                            );
                        } else if report.purged > 0 {
                            tracing::info!(
                                disk = disk_id,
                                purged = report.purged,
                                freed_bytes = report.freed_bytes,
                                kept = report.kept,
                                "trash purged"
                            );
                        }
                    }
                    Err(e) => {
                        metrics.trash_purges.record(false, 0);
                        tracing::warn!(disk = disk_id, error = %e, "trash purge failed");
                    }
                }
            }
        }
        Err(e) => {
            metrics.trash_purges.record(false, 0);
            tracing::warn!(error = %e, "trash purge thread failed");
        }
    }
}

/// Purges the trash every [`purge_period`] until `stop`.
pub async fn run(
    shared: Arc<Shared>,
    retention: Duration,
    free_min_percent: u64,
    mut stop: watch::Receiver<bool>,
) {
    let period = purge_period(retention, free_min_percent);
    loop {
        purge_once(&shared, retention, free_min_percent).await;
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_period_follows_the_retention_within_bounds() {
        assert_eq!(purge_period(TRASH_RETENTION_DEFAULT, 0), TRASH_PURGE_PERIOD_MAX);
        assert_eq!(purge_period(Duration::from_secs(2), 0), Duration::from_millis(500));
        assert_eq!(purge_period(Duration::ZERO, 0), TRASH_PURGE_PERIOD_MIN);
        assert_eq!(
            purge_period(TRASH_RETENTION_DEFAULT, 10),
            TRASH_SPACE_CHECK_PERIOD,
            "free space looked at"
        );
        assert_eq!(purge_period(Duration::from_secs(2), 10), Duration::from_millis(500));
    }
}
