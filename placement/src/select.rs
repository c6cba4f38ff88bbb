//! The one selection engine behind every placement.
//!
//! Extents are chosen one at a time. Each step considers the zones still below the
//! scheme's per-zone limit that have a candidate disk left, and takes the zone whose best
//! node holds the fewest extents of the volume, then the zone holding the fewest extents;
//! inside that zone it takes a disk on one of those least-loaded nodes. Remaining ties are
//! broken at random, weighted by free bytes, which keeps fill ratios level (a disk's fill
//! rate is proportional to its free space) and makes each disk's peers a random sample of
//! the cluster (a dead disk is repaired from many).
//!
//! Ordering by node first is water-filling in two phases: while some zone can still take
//! an extent on a node that holds none, zones are filled evenly with distinct nodes; only
//! then do nodes take a second extent. Each step uses exactly one of the
//! `sum over zones of min(limit - held, candidate disks)` free slots, so the selection
//! succeeds exactly when that sum covers the request.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::{DiskView, PlacementError, Scheme};

/// Zones listed by name in a shortfall message; the rest are summarised.
const ZONES_IN_DETAIL_MAX: usize = 16;

/// The deterministic generator every placement draws from.
pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// What to choose, and what is already taken.
pub(crate) struct Request<'v> {
    /// Scheme of the volume; gives the per-zone limit and names it in errors.
    pub scheme: Scheme,
    /// Extents to choose disks for.
    pub needed: usize,
    /// Size of each new extent; disks with less free space are not candidates.
    pub extent_bytes: u64,
    /// Disks already holding an extent of the volume: they count toward the zone and node
    /// totals and are never chosen.
    pub held: &'v [&'v DiskView],
    /// Disk ids never to choose.
    pub exclude: &'v BTreeSet<u64>,
}

#[derive(Default)]
struct NodeSlot<'v> {
    /// Extents of this volume the node holds (existing and chosen so far).
    held: usize,
    /// Candidate disks not chosen yet, sorted by disk id.
    disks: Vec<&'v DiskView>,
}

#[derive(Default)]
struct ZoneSlot<'v> {
    /// Extents of this volume the zone holds (existing and chosen so far).
    held: usize,
    nodes: BTreeMap<u64, NodeSlot<'v>>,
    /// Disks passed over for want of free bytes (writable, not excluded, holding nothing
    /// of the volume): named in a shortfall message, where "too full" is the usual cause.
    too_full: usize,
    /// Disks passed over because they take no new extents (failed, down, draining).
    not_writable: usize,
}

impl ZoneSlot<'_> {
    fn candidates(&self) -> usize {
        self.nodes.values().map(|n| n.disks.len()).sum()
    }

    /// Fewest extents held by a node that still has a candidate disk.
    fn least_held_node(&self) -> Option<usize> {
        self.nodes.values().filter(|n| !n.disks.is_empty()).map(|n| n.held).min()
    }
}

/// Chooses `request.needed` distinct disks from `disks` (a validated view, by disk id),
/// in choice order.
pub(crate) fn select<'v>(
    disks: &BTreeMap<u64, &'v DiskView>,
    request: &Request<'v>,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<&'v DiskView>, PlacementError> {
    let zone_max = request.scheme.extents_per_zone_max();
    let mut zones: BTreeMap<&'v str, ZoneSlot<'v>> = BTreeMap::new();
    let held_ids: BTreeSet<u64> = request.held.iter().map(|d| d.disk_id).collect();
    for &disk in disks.values() {
        let zone = zones.entry(disk.zone.as_str()).or_default();
        let candidate = disk.is_eligible(request.extent_bytes)
            && !request.exclude.contains(&disk.disk_id)
            && !held_ids.contains(&disk.disk_id);
        if candidate {
            zone.nodes.entry(disk.node_id).or_default().disks.push(disk);
        } else if !request.exclude.contains(&disk.disk_id) && !held_ids.contains(&disk.disk_id) {
            if !disk.writable {
                zone.not_writable += 1;
            } else {
                zone.too_full += 1;
            }
        }
    }
    for &disk in request.held {
        let zone = zones.entry(disk.zone.as_str()).or_default();
        zone.held += 1;
        zone.nodes.entry(disk.node_id).or_default().held += 1;
    }

    let available: usize = zones.values().map(|z| zone_max.saturating_sub(z.held).min(z.candidates())).sum();
    if available < request.needed {
        return Err(PlacementError::NotEnoughFailureDomains {
            needed: request.needed,
            available,
            detail: shortfall_detail(request, &zones),
        });
    }

    let mut chosen = Vec::with_capacity(request.needed);
    for _ in 0..request.needed {
        let Some(disk) = choose_one(&mut zones, zone_max, rng) else {
            // Unreachable: every step consumes exactly one of the `available` slots.
            debug_assert!(false, "slot count {available} promised more than the zones hold");
            break;
        };
        chosen.push(disk);
    }
    if chosen.len() < request.needed {
        return Err(PlacementError::NotEnoughFailureDomains {
            needed: request.needed,
            available: chosen.len(),
            detail: shortfall_detail(request, &zones),
        });
    }
    Ok(chosen)
}

/// One step: the zone whose least-loaded node holds fewest, then the emptiest zone, then
/// a disk on such a node; ties weighted by free bytes.
fn choose_one<'v>(
    zones: &mut BTreeMap<&'v str, ZoneSlot<'v>>,
    zone_max: usize,
    rng: &mut ChaCha8Rng,
) -> Option<&'v DiskView> {
    let mut best_key = None;
    let mut best: Vec<(&'v str, u128)> = Vec::new();
    for (&name, zone) in zones.iter() {
        if zone.held >= zone_max {
            continue;
        }
        let Some(node_held) = zone.least_held_node() else { continue };
        let key = (node_held, zone.held);
        let zone_weight = zone
            .nodes
            .values()
            .filter(|n| n.held == node_held)
            .flat_map(|n| n.disks.iter())
            .map(|d| weight(d))
            .sum();
        match best_key {
            Some(k) if k < key => continue,
            Some(k) if k == key => {}
            _ => {
                best_key = Some(key);
                best.clear();
            }
        }
        best.push((name, zone_weight));
    }
    let zone_index = pick_weighted(rng, best.iter().map(|&(_, w)| w))?;
    let (name, _) = *best.get(zone_index)?;
    let zone = zones.get_mut(name)?;
    let node_held = zone.least_held_node()?;

    let candidates: Vec<(u64, usize, u128)> = zone
        .nodes
        .iter()
        .filter(|(_, n)| n.held == node_held)
        .flat_map(|(&node_id, n)| n.disks.iter().enumerate().map(move |(i, d)| (node_id, i, weight(d))))
        .collect();
    let pick = pick_weighted(rng, candidates.iter().map(|&(_, _, w)| w))?;
    let &(node_id, disk_index, _) = candidates.get(pick)?;
    let node = zone.nodes.get_mut(&node_id)?;
    let disk = node.disks.remove(disk_index);
    node.held += 1;
    zone.held += 1;
    Some(disk)
}

/// Selection weight of a disk: its free bytes, plus one so that a zero-byte request can
/// still land on a full disk.
fn weight(disk: &DiskView) -> u128 {
    u128::from(disk.free_bytes()) + 1
}

/// Index drawn with probability proportional to its weight; None when there are none.
fn pick_weighted(rng: &mut ChaCha8Rng, weights: impl Iterator<Item = u128> + Clone) -> Option<usize> {
    let total: u128 = weights.clone().sum();
    if total == 0 {
        return None;
    }
    // The modulo bias is below total / 2^128: negligible for any sum of u64 weights.
    let draw = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
    let mut point = draw % total;
    let mut last = None;
    for (i, w) in weights.enumerate() {
        if point < w {
            return Some(i);
        }
        point -= w;
        last = Some(i);
    }
    last
}

fn shortfall_detail(request: &Request<'_>, zones: &BTreeMap<&str, ZoneSlot<'_>>) -> String {
    let zone_max = request.scheme.extents_per_zone_max();
    let mut detail = format!(
        "{} allows at most {zone_max} extent(s) per zone; candidate disks (writable, >= {} bytes free) per zone:",
        request.scheme, request.extent_bytes
    );
    if zones.is_empty() {
        detail.push_str(" none (empty cluster view)");
    }
    for (i, (name, zone)) in zones.iter().enumerate() {
        if i == ZONES_IN_DETAIL_MAX {
            let _ = write!(detail, " ... and {} more zone(s)", zones.len() - i);
            break;
        }
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(detail, "{sep}{name:?}={}", zone.candidates());
        let mut notes = Vec::new();
        if zone.held > 0 {
            notes.push(format!("already holds {}", zone.held));
        }
        if zone.too_full > 0 {
            notes.push(format!("{} too full", zone.too_full));
        }
        if zone.not_writable > 0 {
            notes.push(format!("{} failed, down or draining", zone.not_writable));
        }
        if !notes.is_empty() {
            let _ = write!(detail, " ({})", notes.join(", "));
        }
    }
    detail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_follows_weights() {
        let mut rng = rng(7);
        let weights = [1u128, 0, 3];
        let mut hits = [0usize; 3];
        for _ in 0..4000 {
            let i = pick_weighted(&mut rng, weights.iter().copied()).expect("non-zero total");
            hits[i] += 1;
        }
        assert_eq!(hits[1], 0, "a zero weight is never drawn");
        assert!((2700..3300).contains(&hits[2]), "{hits:?}");
    }

    #[test]
    fn weighted_pick_of_nothing_is_none() {
        assert_eq!(pick_weighted(&mut rng(1), std::iter::empty()), None);
        assert_eq!(pick_weighted(&mut rng(1), [0u128, 0].into_iter()), None);
    }
}
