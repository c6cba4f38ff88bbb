//! The frontend's share of compaction: every [`COMPACTOR_POLL`] it asks the master which
//! volumes compaction wants rewritten (`CompactionWork`: the least live sealed or coded
//! volumes, with their live blocks) and moves each block out (`Blocks::relocate`: read
//! verified, appended to an open volume, committed with a relocation that only takes if the
//! block is still where it was), at most `bytes_per_sec` (the throttle, as repair's). The
//! emptied volume is then reclaimed by the master's compaction pass. Several frontends may
//! work on the same volume: a block moved twice is moved once, the second relocation is
//! refused and its appended copy is garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cellar_proto::master as mpb;
use tokio::sync::watch;

use crate::blocks::Blocks;

/// Time between two asks for compaction work.
pub const COMPACTOR_POLL: Duration = Duration::from_secs(5);

/// Runs until `stop` turns true; `bytes_per_sec` 0 turns the compactor off.
pub async fn run(blocks: Arc<Blocks>, bytes_per_sec: u64, mut stop: watch::Receiver<bool>) {
    if bytes_per_sec == 0 {
        return;
    }
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(COMPACTOR_POLL) => {}
        }
        let work = blocks
            .cluster()
            .master()
            .call(|mut c| async move { c.compaction_work(mpb::CompactionWorkRequest {}).await })
            .await;
        let work = match work {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "compactor: no work");
                continue;
            }
        };
        for volume in work.volumes {
            let started = Instant::now();
            let (mut moved_bytes, mut moved, mut failed) = (0u64, 0u64, 0u64);
            for hash in &volume.hashes {
                if stopped(&stop) {
                    return;
                }
                let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else { continue };
                match blocks.relocate(&hash, volume.volume_id).await {
                    Ok(0) => {}
                    Ok(n) => {
                        moved += 1;
                        moved_bytes += n;
                        // Pace: never ahead of bytes_per_sec since this volume started.
                        let due = Duration::from_secs_f64(moved_bytes as f64 / bytes_per_sec as f64);
                        if let Some(wait) = due.checked_sub(started.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(volume = volume.volume_id, hash = %hex::encode(hash), error = %e, "compactor: a block was not moved");
                    }
                }
            }
            if moved + failed > 0 {
                tracing::info!(
                    volume = volume.volume_id,
                    moved,
                    moved_bytes,
                    failed,
                    "compactor: rewrote a volume's live blocks"
                );
            }
        }
    }
}
