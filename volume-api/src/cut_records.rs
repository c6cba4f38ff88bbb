//! Records whose streamed read failed (the bytes were not the key's, or no holder was left
//! to finish them): later reads of them go whole, which tries every replica and reports
//! one whose bytes are not the key's once another's are. Without this memory every get of
//! such a block would stream from the same first replica and be cut short again.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// Records remembered at most; the oldest go first.
pub const CUT_RECORDS_MAX: usize = 1024;

/// A bounded set of (volume, offset) records, oldest evicted first.
#[derive(Debug, Default)]
pub struct CutRecords {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    set: HashSet<(u64, u64)>,
    /// The same records, oldest first.
    order: VecDeque<(u64, u64)>,
}

impl CutRecords {
    /// Remembers the record at `offset_bytes` of `volume_id`.
    pub fn insert(&self, volume_id: u64, offset_bytes: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.set.insert((volume_id, offset_bytes)) {
            g.order.push_back((volume_id, offset_bytes));
            while g.order.len() > CUT_RECORDS_MAX {
                if let Some(old) = g.order.pop_front() {
                    g.set.remove(&old);
                }
            }
        }
    }

    /// Whether the record's streamed read failed lately.
    pub fn contains(&self, volume_id: u64, offset_bytes: u64) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.set.contains(&(volume_id, offset_bytes))
    }

    /// Records remembered now.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).order.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_first_and_a_record_counts_once() {
        let cut = CutRecords::default();
        cut.insert(1, 0);
        cut.insert(1, 0);
        assert_eq!(cut.len(), 1);
        for n in 0..CUT_RECORDS_MAX as u64 {
            cut.insert(2, n);
        }
        assert_eq!(cut.len(), CUT_RECORDS_MAX);
        assert!(!cut.contains(1, 0), "the oldest stayed");
        assert!(cut.contains(2, 0) && cut.contains(2, CUT_RECORDS_MAX as u64 - 1));
    }
}
