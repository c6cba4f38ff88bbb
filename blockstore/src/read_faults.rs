//! The extents of a disk whose reads the device failed ([`Error::Unreadable`]) since it
//! was opened: one bad sector is an extent to rebuild, many are a disk going bad.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::error::Error;
use crate::id::ExtentId;

/// Distinct extents remembered at most; past it the count stays there (a disk with this
/// many unreadable extents is failed long before).
pub const READ_FAULT_EXTENTS_KEPT: usize = 4096;

/// The distinct extents that returned [`Error::Unreadable`] (shared by a disk and its
/// scans).
#[derive(Debug, Default)]
pub struct ReadFaults {
    extents: Mutex<BTreeSet<ExtentId>>,
}

impl ReadFaults {
    /// Notes `e` if it is an unreadable extent.
    pub fn note(&self, e: &Error) {
        if let Error::Unreadable { extent, .. } = e {
            let mut extents = self.extents.lock().unwrap_or_else(|p| p.into_inner());
            if extents.len() < READ_FAULT_EXTENTS_KEPT {
                extents.insert(*extent);
            }
        }
    }

    /// Distinct extents noted so far.
    pub fn extents(&self) -> u64 {
        self.extents.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }
}
