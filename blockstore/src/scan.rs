//! Sequential, verified iteration over a replica's records.

use std::sync::Arc;

use crate::error::Result;
use crate::inflight::OpsInFlight;
use crate::read_faults::ReadFaults;
use crate::replica::{Replica, ScannedRecord};

/// Iterator over a replica's records, verifying each. Stops at the first bad record
/// (yielding its error): past a corrupt header the next record cannot be located.
pub struct ReplicaScan {
    pub(crate) replica: Arc<Replica>,
    pub(crate) next_offset_bytes: u64,
    pub(crate) end_bytes: u64,
    pub(crate) done: bool,
    /// The disk's unreadable extents, noted as the scan meets one.
    pub(crate) read_faults: Arc<ReadFaults>,
    /// The disk's operations under way: each read of the scan is one.
    pub(crate) ops: Arc<OpsInFlight>,
}

impl Iterator for ReplicaScan {
    type Item = Result<ScannedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next_offset_bytes >= self.end_bytes {
            return None;
        }
        let mut payload = Vec::new();
        let _op = self.ops.begin();
        match self.replica.scan_next(self.next_offset_bytes, &mut payload) {
            Ok(header) => {
                self.next_offset_bytes += header.record_len_bytes();
                Some(Ok(ScannedRecord { header, payload }))
            }
            Err(e) => {
                self.done = true;
                self.read_faults.note(&e);
                Some(Err(e))
            }
        }
    }
}
