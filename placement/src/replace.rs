//! Placing one extent of an existing volume again, after its disk was lost or drained.

use std::collections::{BTreeMap, BTreeSet};

use crate::select::{self, Request};
use crate::{ClusterView, DiskRef, PlacementError, Scheme};

/// Chooses a new disk for extent `lost_index` of a volume of `scheme`.
///
/// `current` is the volume's placement, one slot per extent; lost slots are `None` (a
/// `Some` at `lost_index` is treated as the disk being replaced). The other `Some` slots
/// must name disks in `view`; they may be unwritable or full. The new disk is eligible
/// (writable, at least `extent_bytes` free), not in `current`, not in `avoid`, and keeps
/// its zone within [`Scheme::extents_per_zone_max`] counting the other extents, so if the
/// other extents obey the placement rules, so does the result. A node already holding an
/// extent of the volume is used only when no candidate elsewhere exists, and the emptiest
/// zone is preferred. With several lost slots, call once per slot and feed each result
/// back into `current`. Fails with [`PlacementError::NotEnoughFailureDomains`] when no
/// disk qualifies.
pub fn place_replacement(
    view: &ClusterView,
    scheme: Scheme,
    current: &[Option<DiskRef>],
    lost_index: usize,
    avoid: &[u64],
    extent_bytes: u64,
    seed: u64,
) -> Result<DiskRef, PlacementError> {
    scheme.validate()?;
    let disks = view.index()?;
    if current.len() != scheme.extent_count() {
        return Err(PlacementError::InvalidPlacement(format!(
            "{scheme} has {} extents, current placement lists {}",
            scheme.extent_count(),
            current.len()
        )));
    }
    let Some(lost) = current.get(lost_index) else {
        return Err(PlacementError::InvalidPlacement(format!(
            "lost index {lost_index} is out of range for {scheme}"
        )));
    };

    let mut exclude: BTreeSet<u64> = avoid.iter().copied().collect();
    exclude.extend(lost.map(|d| d.disk_id));
    let mut slot_of_disk: BTreeMap<u64, usize> = BTreeMap::new();
    let mut held = Vec::with_capacity(current.len());
    for (index, slot) in current.iter().enumerate() {
        let Some(disk_ref) = slot else { continue };
        if index == lost_index {
            continue;
        }
        let Some(&disk) = disks.get(&disk_ref.disk_id) else {
            return Err(PlacementError::InvalidPlacement(format!(
                "extent {index} is on disk {}, which is not in the cluster view",
                disk_ref.disk_id
            )));
        };
        if disk.node_id != disk_ref.node_id {
            return Err(PlacementError::InvalidPlacement(format!(
                "extent {index} names disk {} on node {}, the view has it on node {}",
                disk_ref.disk_id, disk_ref.node_id, disk.node_id
            )));
        }
        if let Some(other) = slot_of_disk.insert(disk.disk_id, index) {
            return Err(PlacementError::InvalidPlacement(format!(
                "extents {other} and {index} are both on disk {}",
                disk.disk_id
            )));
        }
        held.push(disk);
    }

    let request = Request { scheme, needed: 1, extent_bytes, held: &held, exclude: &exclude };
    let chosen = select::select(&disks, &request, &mut select::rng(seed))?;
    match chosen.first() {
        Some(disk) => Ok(disk.disk_ref()),
        None => Err(PlacementError::NotEnoughFailureDomains {
            needed: 1,
            available: 0,
            detail: format!("no disk qualifies for extent {lost_index} of a {scheme} volume"),
        }),
    }
}
