//! The operations under way on a disk, so that a device that stopped answering (a read or
//! an fsync that never returns) can be told from a busy one by the age of the oldest
//! ([`crate::DiskStat::oldest_op_ms`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Operations begun and not ended, by a sequence number.
#[derive(Debug, Default)]
pub struct OpsInFlight {
    next: AtomicU64,
    started: Mutex<BTreeMap<u64, Instant>>,
}

/// One operation under way; it ends when dropped.
#[must_use = "the operation ends when the guard is dropped"]
pub struct OpGuard<'a> {
    ops: &'a OpsInFlight,
    id: u64,
}

impl OpsInFlight {
    /// Marks an operation begun.
    pub fn begin(&self) -> OpGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.started.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
        OpGuard { ops: self, id }
    }

    /// Milliseconds since the oldest operation under way began; 0 when none is.
    pub fn oldest_ms(&self) -> u64 {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        // Sequence numbers grow with time, so the first entry began first.
        started.values().next().map_or(0, |at| at.elapsed().as_millis() as u64)
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.ops.started.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_operation_under_way_is_timed() {
        let ops = OpsInFlight::default();
        assert_eq!(ops.oldest_ms(), 0);
        let first = ops.begin();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before_second = Instant::now();
        let second = ops.begin();
        assert!(ops.oldest_ms() >= 20);
        drop(first);
        // Now the second is the oldest: no older than the time since it began.
        let oldest = ops.oldest_ms();
        assert!(oldest <= before_second.elapsed().as_millis() as u64, "{oldest} ms");
        drop(second);
        assert_eq!(ops.oldest_ms(), 0);
    }
}
