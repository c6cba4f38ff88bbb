//! Property tests on random cluster maps: every placement either obeys the rules or fails
//! with `NotEnoughFailureDomains`, and it fails exactly when the failure domains cannot
//! hold the volume.

use std::collections::{BTreeMap, BTreeSet};

use cellar_placement::{
    ClusterView, DiskRef, DiskView, PlacementError, Scheme, check_placement, place_fragments,
    place_replacement, place_replicas, place_volume,
};
use proptest::prelude::*;

/// (capacity, used, writable) of one disk, in abstract units.
type DiskSpec = (u64, u64, bool);

fn disk_spec() -> impl Strategy<Value = DiskSpec> {
    (0u64..1000, 0u64..1100, prop::bool::weighted(0.85))
}

/// 1..=5 zones, 1..=20 nodes each in a random zone, 1..=12 disks per node. Disk ids are
/// scrambled so that id order says nothing about zone or node.
fn cluster() -> impl Strategy<Value = ClusterView> {
    (1usize..=5)
        .prop_flat_map(|zones| {
            prop::collection::vec((0..zones, prop::collection::vec(disk_spec(), 1..=12)), 1..=20)
        })
        .prop_map(|nodes| {
            let mut disks = Vec::new();
            for (node_index, (zone, specs)) in nodes.into_iter().enumerate() {
                for (capacity_bytes, used_bytes, writable) in specs {
                    let disk_id = (disks.len() as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    disks.push(DiskView {
                        disk_id,
                        node_id: 7 * node_index as u64 + 3,
                        zone: format!("zone-{zone}"),
                        capacity_bytes,
                        used_bytes,
                        writable,
                    });
                }
            }
            ClusterView::new(disks)
        })
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![
        (1u8..=4).prop_map(|copies| Scheme::Replicated { copies }),
        (1u8..=10, 1u8..=4).prop_map(|(data, parity)| Scheme::ReedSolomon { data, parity }),
    ]
}

fn disk<'a>(view: &'a ClusterView, disk_ref: &DiskRef) -> &'a DiskView {
    view.disk(disk_ref.disk_id).expect("placed disk is in the view")
}

/// Per zone: eligible disks and nodes with an eligible disk.
fn eligible_by_zone(view: &ClusterView, extent_bytes: u64) -> BTreeMap<&str, (usize, BTreeSet<u64>)> {
    let mut zones: BTreeMap<&str, (usize, BTreeSet<u64>)> = BTreeMap::new();
    for d in view
        .disks
        .iter()
        .filter(|d| d.writable && d.capacity_bytes.saturating_sub(d.used_bytes) >= extent_bytes)
    {
        let zone = zones.entry(d.zone.as_str()).or_default();
        zone.0 += 1;
        zone.1.insert(d.node_id);
    }
    zones
}

/// Places with the scheme-specific entry point, as callers do.
fn place(
    view: &ClusterView,
    scheme: Scheme,
    extent_bytes: u64,
    seed: u64,
) -> Result<Vec<DiskRef>, PlacementError> {
    match scheme {
        Scheme::Replicated { copies } => place_replicas(view, copies, extent_bytes, seed),
        Scheme::ReedSolomon { data, parity } => place_fragments(view, data, parity, extent_bytes, seed),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn new_volume_placement_succeeds_iff_failure_domains_suffice(
        view in cluster(), scheme in scheme(), extent_bytes in 0u64..400, seed in any::<u64>(),
    ) {
        let needed = scheme.extent_count();
        let zone_max = scheme.extents_per_zone_max();
        let eligible = eligible_by_zone(&view, extent_bytes);
        // Replicas: zones with an eligible disk; fragments: sum of min(m, eligible disks).
        let slots: usize = eligible.values().map(|(disks, _)| (*disks).min(zone_max)).sum();
        let node_slots: usize = eligible.values().map(|(_, nodes)| nodes.len().min(zone_max)).sum();

        match place(&view, scheme, extent_bytes, seed) {
            Ok(placement) => {
                prop_assert!(slots >= needed, "placed {scheme} with only {slots} slots");
                prop_assert_eq!(check_placement(&view, scheme, &placement), Ok(()));
                for d in &placement {
                    prop_assert!(disk(&view, d).is_eligible(extent_bytes), "disk {} not eligible", d.disk_id);
                }
                // Nodes are distinct wherever the zones allow it...
                let nodes: BTreeSet<u64> = placement.iter().map(|d| d.node_id).collect();
                prop_assert_eq!(nodes.len(), needed.min(node_slots));
                // ...and within a zone a node takes a second extent only once every
                // eligible node of the zone holds one.
                let mut per_zone: BTreeMap<&str, (usize, BTreeSet<u64>)> = BTreeMap::new();
                for d in &placement {
                    let zone = per_zone.entry(disk(&view, d).zone.as_str()).or_default();
                    zone.0 += 1;
                    zone.1.insert(d.node_id);
                }
                for (zone, (count, used_nodes)) in per_zone {
                    let eligible_nodes = eligible.get(zone).map_or(0, |(_, n)| n.len());
                    prop_assert_eq!(used_nodes.len(), count.min(eligible_nodes), "zone {}", zone);
                }
            }
            Err(PlacementError::NotEnoughFailureDomains { needed: n, available, .. }) => {
                prop_assert!(slots < needed, "refused {scheme} with {slots} slots for {needed} extents");
                prop_assert_eq!((n, available), (needed, slots));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }

    #[test]
    fn placement_is_deterministic_and_ignores_disk_order(
        view in cluster(), scheme in scheme(), extent_bytes in 0u64..400, seed in any::<u64>(),
        rotate in any::<usize>(),
    ) {
        let first = place_volume(&view, scheme, extent_bytes, seed);
        prop_assert_eq!(&first, &place_volume(&view, scheme, extent_bytes, seed));
        let mut shuffled = view.clone();
        let len = shuffled.disks.len();
        shuffled.disks.rotate_left(rotate % len);
        shuffled.disks.reverse();
        prop_assert_eq!(&first, &place_volume(&shuffled, scheme, extent_bytes, seed));
    }

    #[test]
    fn replacement_keeps_rules_or_reports_no_failure_domain(
        view in cluster(), scheme in scheme(), extent_bytes in 0u64..400, seed in any::<u64>(),
        lost in any::<usize>(), failed_disk_still_listed_writable in any::<bool>(),
    ) {
        let Ok(placement) = place_volume(&view, scheme, extent_bytes, seed) else { return Ok(()) };
        let mut view = view;
        for d in &placement {
            let disk = view.disks.iter_mut().find(|v| v.disk_id == d.disk_id).expect("in view");
            disk.used_bytes = disk.used_bytes.saturating_add(extent_bytes);
        }
        let lost_index = lost % placement.len();
        let old = placement[lost_index];
        if !failed_disk_still_listed_writable {
            let disk = view.disks.iter_mut().find(|v| v.disk_id == old.disk_id).expect("in view");
            disk.writable = false;
        }
        let current: Vec<Option<DiskRef>> =
            placement.iter().enumerate().map(|(i, d)| (i != lost_index).then_some(*d)).collect();
        let others: Vec<&DiskView> = current.iter().flatten().map(|d| disk(&view, d)).collect();
        let mut zone_held: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &others {
            *zone_held.entry(d.zone.as_str()).or_default() += 1;
        }
        let held_nodes: BTreeSet<u64> = others.iter().map(|d| d.node_id).collect();
        let zone_max = scheme.extents_per_zone_max();
        let candidates: Vec<&DiskView> = view
            .disks
            .iter()
            .filter(|d| d.is_eligible(extent_bytes) && d.disk_id != old.disk_id)
            .filter(|d| !others.iter().any(|o| o.disk_id == d.disk_id))
            .filter(|d| zone_held.get(d.zone.as_str()).copied().unwrap_or(0) < zone_max)
            .collect();

        match place_replacement(&view, scheme, &current, lost_index, &[old.disk_id], extent_bytes, seed) {
            Ok(new) => {
                prop_assert!(candidates.iter().any(|c| c.disk_id == new.disk_id), "{new:?} is not a candidate");
                let mut after = placement.clone();
                after[lost_index] = new;
                prop_assert_eq!(check_placement(&view, scheme, &after), Ok(()));
                // A fresh node when one qualifies, and among those the emptiest zone.
                let fresh: Vec<&&DiskView> = candidates.iter().filter(|c| !held_nodes.contains(&c.node_id)).collect();
                if !fresh.is_empty() {
                    prop_assert!(!held_nodes.contains(&new.node_id), "node {} already holds an extent", new.node_id);
                    let held_in = |zone: &str| zone_held.get(zone).copied().unwrap_or(0);
                    let emptiest = fresh.iter().map(|c| held_in(&c.zone)).min().unwrap_or(0);
                    prop_assert_eq!(held_in(&disk(&view, &new).zone), emptiest);
                }
            }
            Err(PlacementError::NotEnoughFailureDomains { .. }) => {
                prop_assert!(candidates.is_empty(), "refused with {} candidates", candidates.len());
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
    }
}
