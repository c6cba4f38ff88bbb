//! Placing a new volume: replicas or fragments.

use std::collections::BTreeSet;

use crate::select::{self, Request};
use crate::{ClusterView, DiskRef, PlacementError, Scheme, check_placement};

/// Chooses disks for a new volume of `scheme`; index i of the result holds extent i.
///
/// Every extent goes to a distinct writable disk with at least `extent_bytes` free, and no
/// zone gets more than [`Scheme::extents_per_zone_max`] extents (replicas: distinct zones;
/// fragments: losing any one zone leaves at least `data` fragments). Fails with
/// [`PlacementError::NotEnoughFailureDomains`] exactly when the sum over zones of
/// `min(per-zone limit, eligible disks in the zone)` is below the extent count. The same
/// view (in any disk order), scheme, size and seed give the same result.
pub fn place_volume(
    view: &ClusterView,
    scheme: Scheme,
    extent_bytes: u64,
    seed: u64,
) -> Result<Vec<DiskRef>, PlacementError> {
    scheme.validate()?;
    let disks = view.index()?;
    let request =
        Request { scheme, needed: scheme.extent_count(), extent_bytes, held: &[], exclude: &BTreeSet::new() };
    let chosen = select::select(&disks, &request, &mut select::rng(seed))?;
    let placement: Vec<DiskRef> = chosen.iter().map(|d| d.disk_ref()).collect();
    debug_assert_eq!(check_placement(view, scheme, &placement), Ok(()));
    Ok(placement)
}

/// Chooses disks for `copies` replicas of a new volume, each in a distinct zone.
///
/// Fails with [`PlacementError::NotEnoughFailureDomains`] when fewer than `copies` zones
/// have an eligible disk (writable, at least `extent_bytes` free).
pub fn place_replicas(
    view: &ClusterView,
    copies: u8,
    extent_bytes: u64,
    seed: u64,
) -> Result<Vec<DiskRef>, PlacementError> {
    place_volume(view, Scheme::Replicated { copies }, extent_bytes, seed)
}

/// Chooses disks for the `data + parity` fragments of a new coded volume; index i of the
/// result holds fragment i.
///
/// Every zone gets at most `parity` fragments, zones are filled evenly (6+3 over 3 zones
/// is 3/3/3, over 4 zones 3/2/2/2) and a node takes a second fragment only when no zone
/// with room has a node without one. Fails with
/// [`PlacementError::NotEnoughFailureDomains`] exactly when the sum over zones of
/// `min(parity, eligible disks in the zone)` is below `data + parity`.
pub fn place_fragments(
    view: &ClusterView,
    data: u8,
    parity: u8,
    fragment_bytes: u64,
    seed: u64,
) -> Result<Vec<DiskRef>, PlacementError> {
    place_volume(view, Scheme::ReedSolomon { data, parity }, fragment_bytes, seed)
}
