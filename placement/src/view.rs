//! The cluster as placement sees it: disks with their node, zone, and fill.

use std::collections::{BTreeMap, BTreeSet};

use crate::PlacementError;

/// A disk as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskView {
    /// Cluster-unique disk id.
    pub disk_id: u64,
    /// Node (machine) the disk is attached to; a node lives in exactly one zone.
    pub node_id: u64,
    /// Failure domain (rack, room, availability zone) the node belongs to.
    pub zone: String,
    /// Bytes the disk may hold in total.
    pub capacity_bytes: u64,
    /// Bytes already allocated to extents.
    pub used_bytes: u64,
    /// Healthy and accepting new extents.
    pub writable: bool,
}

impl DiskView {
    /// Bytes still free (capacity minus used, zero when over-full).
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }

    /// Whether a NEW extent of `extent_bytes` may go here: writable and enough free bytes.
    pub fn is_eligible(&self, extent_bytes: u64) -> bool {
        self.writable && self.free_bytes() >= extent_bytes
    }

    /// The reference placement results use for this disk.
    pub fn disk_ref(&self) -> DiskRef {
        DiskRef { disk_id: self.disk_id, node_id: self.node_id }
    }
}

/// Every disk of the cluster; disk ids are unique and each node sits in one zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The disks, in any order (placement does not depend on it).
    pub disks: Vec<DiskView>,
}

impl ClusterView {
    /// Wraps a list of disks.
    pub fn new(disks: Vec<DiskView>) -> Self {
        ClusterView { disks }
    }

    /// Distinct zone names, sorted.
    pub fn zones(&self) -> Vec<&str> {
        let zones: BTreeSet<&str> = self.disks.iter().map(|d| d.zone.as_str()).collect();
        zones.into_iter().collect()
    }

    /// The disk with this id, if the view has it.
    pub fn disk(&self, disk_id: u64) -> Option<&DiskView> {
        self.disks.iter().find(|d| d.disk_id == disk_id)
    }

    /// Free bytes of the disk with this id, if the view has it.
    pub fn free_bytes(&self, disk_id: u64) -> Option<u64> {
        self.disk(disk_id).map(DiskView::free_bytes)
    }

    /// Zone of the disk with this id, if the view has it.
    pub fn zone_of(&self, disk_id: u64) -> Option<&str> {
        self.disk(disk_id).map(|d| d.zone.as_str())
    }

    /// Checks that disk ids are unique and that no node appears in two zones.
    pub fn validate(&self) -> Result<(), PlacementError> {
        self.index().map(|_| ())
    }

    /// Validates and indexes the disks by id, for lookups in O(log n).
    pub(crate) fn index(&self) -> Result<BTreeMap<u64, &DiskView>, PlacementError> {
        let mut by_id = BTreeMap::new();
        let mut zone_of_node: BTreeMap<u64, &str> = BTreeMap::new();
        for disk in &self.disks {
            if by_id.insert(disk.disk_id, disk).is_some() {
                return Err(PlacementError::InvalidView(format!("disk {} is listed twice", disk.disk_id)));
            }
            let zone = *zone_of_node.entry(disk.node_id).or_insert(disk.zone.as_str());
            if zone != disk.zone {
                return Err(PlacementError::InvalidView(format!(
                    "node {} is in zones {zone:?} and {:?}",
                    disk.node_id, disk.zone
                )));
            }
        }
        Ok(by_id)
    }
}

/// A chosen disk. Copy and small on purpose; its zone is looked up in the
/// [`ClusterView`] ([`ClusterView::zone_of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskRef {
    /// The disk.
    pub disk_id: u64,
    /// The node the disk is attached to.
    pub node_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(disk_id: u64, node_id: u64, zone: &str) -> DiskView {
        DiskView {
            disk_id,
            node_id,
            zone: zone.to_string(),
            capacity_bytes: 100,
            used_bytes: 40,
            writable: true,
        }
    }

    #[test]
    fn view_rejects_duplicate_disk_ids() {
        let view = ClusterView::new(vec![disk(1, 1, "a"), disk(1, 2, "b")]);
        let err = view.validate().expect_err("duplicate");
        assert!(matches!(err, PlacementError::InvalidView(_)), "{err}");
        assert!(err.to_string().contains("disk 1 is listed twice"), "{err}");
    }

    #[test]
    fn view_rejects_node_in_two_zones() {
        let view = ClusterView::new(vec![disk(1, 9, "a"), disk(2, 9, "b")]);
        let err = view.validate().expect_err("node in two zones");
        assert!(err.to_string().contains("node 9"), "{err}");
    }

    #[test]
    fn view_helpers_find_zones_and_free_bytes() {
        let mut full = disk(3, 2, "b");
        full.used_bytes = 150;
        let view = ClusterView::new(vec![disk(2, 1, "b"), disk(1, 1, "b"), full, disk(4, 3, "a")]);
        assert_eq!(view.validate(), Ok(()));
        assert_eq!(view.zones(), vec!["a", "b"]);
        assert_eq!(view.free_bytes(1), Some(60));
        assert_eq!(view.free_bytes(3), Some(0), "over-full disks have no free bytes");
        assert_eq!(view.free_bytes(99), None);
        assert_eq!(view.zone_of(4), Some("a"));
        assert_eq!(view.disk(2).map(DiskView::disk_ref), Some(DiskRef { disk_id: 2, node_id: 1 }));
    }

    #[test]
    fn eligibility_needs_writable_and_room() {
        let mut d = disk(1, 1, "a");
        assert!(d.is_eligible(60));
        assert!(!d.is_eligible(61));
        d.writable = false;
        assert!(!d.is_eligible(0));
    }
}
