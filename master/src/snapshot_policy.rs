//! When a master snapshots its state. A snapshot every `snapshot_after_entries` entries
//! whatever the state's size makes the snapshot cost quadratic in the state: with a
//! namespace of millions of keys the masters rewrote a snapshot of hundreds of MB every few
//! seconds of writes. So past [`SMALL_SNAPSHOT_BYTES`] a snapshot also waits until the log
//! written since the last one is a [`LOG_FRACTION_OF_SNAPSHOT`]th of that snapshot's size:
//! the bytes spent on snapshots then stay within a fixed multiple of the bytes written to
//! the log (linear), and the log kept (and replayed at a restart) stays within a fraction
//! of the snapshot. Openraft's own policy is off (`SnapshotPolicy::Never`); this task, on
//! every member, calls `trigger().snapshot()`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::MasterRaft;

/// Below this snapshot size, entries alone decide (as openraft's `LogsSinceLast`).
pub const SMALL_SNAPSHOT_BYTES: u64 = 64 << 20;
/// Past [`SMALL_SNAPSHOT_BYTES`], the log since the last snapshot must reach its size over
/// this.
pub const LOG_FRACTION_OF_SNAPSHOT: u64 = 4;
/// How often the policy looks.
const POLL: Duration = Duration::from_millis(200);
/// A trigger not followed by a new snapshot is repeated after this long at the earliest.
const RETRIGGER_AFTER: Duration = Duration::from_secs(10);

/// Whether a snapshot is due: `entries_since` entries applied and `log_bytes_since` bytes
/// of log appended since the last snapshot, which took `snapshot_bytes`.
pub fn due(entries_since: u64, log_bytes_since: u64, snapshot_bytes: u64, after_entries: u64) -> bool {
    entries_since >= after_entries.max(1)
        && (snapshot_bytes < SMALL_SNAPSHOT_BYTES
            || log_bytes_since.saturating_mul(LOG_FRACTION_OF_SNAPSHOT) >= snapshot_bytes)
}

/// Size of the newest snapshot file in `dir` (0: none).
fn newest_snapshot_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".snap"))
        .max_by_key(|e| e.file_name())
        .and_then(|e| e.metadata().ok())
        .map_or(0, |m| m.len())
}

/// The policy's inputs.
pub struct SnapshotPolicySettings {
    /// Entries between snapshots at least (master config `snapshot_after_entries`).
    pub after_entries: u64,
    /// The snapshots' directory.
    pub dir: PathBuf,
    /// Bytes appended to the log since the start (kept by the log store).
    pub appended_bytes: Arc<AtomicU64>,
}

/// Runs the policy until `stop`.
pub async fn run(raft: MasterRaft, s: SnapshotPolicySettings, mut stop: watch::Receiver<bool>) {
    let mut base: Option<Option<u64>> = None;
    let mut base_bytes = 0u64;
    let mut snapshot_bytes = 0u64;
    let mut triggered: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        let (applied, snapshot) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (m.last_applied.as_ref().map_or(0, |l| l.index()), m.snapshot.as_ref().map(|l| l.index()))
        };
        if base != Some(snapshot) {
            // A new snapshot (or the first look): measure from here.
            base = Some(snapshot);
            base_bytes = s.appended_bytes.load(Ordering::Relaxed);
            snapshot_bytes = newest_snapshot_bytes(&s.dir);
            triggered = None;
        }
        let entries_since = applied.saturating_sub(snapshot.unwrap_or(0));
        let bytes_since = s.appended_bytes.load(Ordering::Relaxed).saturating_sub(base_bytes);
        if !due(entries_since, bytes_since, snapshot_bytes, s.after_entries)
            || triggered.is_some_and(|t| t.elapsed() < RETRIGGER_AFTER)
        {
            continue;
        }
        triggered = Some(Instant::now());
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::error!(error = %e, "cannot trigger a snapshot");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_snapshot_by_entries_and_large_ones_by_log_bytes_too() {
        // Small: entries alone.
        assert!(!due(9_999, 0, 1 << 20, 10_000));
        assert!(due(10_000, 0, 1 << 20, 10_000));
        // 1 GiB snapshot: 256 MiB of log since are needed as well.
        assert!(!due(1_000_000, (256 << 20) - 1, 1 << 30, 10_000));
        assert!(due(1_000_000, 256 << 20, 1 << 30, 10_000));
        assert!(!due(9_999, 1 << 30, 1 << 30, 10_000), "never before the entries");
    }
}
