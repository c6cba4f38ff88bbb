//! Validating a complete placement against the failure-domain rules.

use std::collections::BTreeMap;

use crate::{ClusterView, DiskRef, Scheme};

/// Checks the hard rules for a complete placement of a `scheme` volume: one disk per
/// extent, every disk in `view` on the node named, no disk twice, and no zone holding more
/// than [`Scheme::extents_per_zone_max`] extents (replicas in distinct zones; losing any
/// one zone leaves at least `data` fragments).
///
/// Eligibility (writable, free space) is not checked: it applies when an extent is
/// created, and existing extents stay valid on a disk that later fills up or fails.
/// The node preference is a preference, not a rule, and is not checked either.
pub fn check_placement(view: &ClusterView, scheme: Scheme, placement: &[DiskRef]) -> Result<(), String> {
    scheme.validate().map_err(|e| e.to_string())?;
    let disks = view.index().map_err(|e| e.to_string())?;
    if placement.len() != scheme.extent_count() {
        return Err(format!(
            "{scheme} has {} extents, placement lists {}",
            scheme.extent_count(),
            placement.len()
        ));
    }
    let mut slot_of_disk: BTreeMap<u64, usize> = BTreeMap::new();
    let mut slots_of_zone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, disk_ref) in placement.iter().enumerate() {
        let Some(disk) = disks.get(&disk_ref.disk_id) else {
            return Err(format!(
                "extent {index} is on disk {}, which is not in the cluster view",
                disk_ref.disk_id
            ));
        };
        if disk.node_id != disk_ref.node_id {
            return Err(format!(
                "extent {index} names disk {} on node {}, the view has it on node {}",
                disk_ref.disk_id, disk_ref.node_id, disk.node_id
            ));
        }
        if let Some(other) = slot_of_disk.insert(disk.disk_id, index) {
            return Err(format!("extents {other} and {index} are both on disk {}", disk.disk_id));
        }
        slots_of_zone.entry(disk.zone.as_str()).or_default().push(index);
    }
    let zone_max = scheme.extents_per_zone_max();
    for (zone, slots) in &slots_of_zone {
        if slots.len() > zone_max {
            return Err(format!(
                "zone {zone:?} holds extents {slots:?} of a {scheme} volume, at most {zone_max} allowed"
            ));
        }
    }
    Ok(())
}
