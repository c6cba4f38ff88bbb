//! Replacing one lost extent: the new disk keeps the volume within the rules, avoids the
//! failed disk and nodes already holding an extent, and the call fails only when no disk
//! qualifies.

mod common;

use std::collections::BTreeSet;

use cellar_placement::{
    DiskRef, PlacementError, Scheme, check_placement, place_fragments, place_replacement, place_replicas,
};
use common::{GIB, uniform_cluster, zone_counts, zone_shape};

const SEEDS: u64 = 100;
const RS_6_3: Scheme = Scheme::ReedSolomon { data: 6, parity: 3 };

fn with_lost(placement: &[DiskRef], lost_index: usize) -> Vec<Option<DiskRef>> {
    placement.iter().enumerate().map(|(i, d)| (i != lost_index).then_some(*d)).collect()
}

#[test]
fn replacement_avoids_failed_disk_and_keeps_zone_limit() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        for lost_index in 0..placement.len() {
            let old = placement[lost_index];
            let current = with_lost(&placement, lost_index);
            let new = place_replacement(&view, RS_6_3, &current, lost_index, &[old.disk_id], GIB, seed)
                .expect("the lost zone has room");
            assert!(!placement.contains(&new), "seed {seed}: {new:?} already holds an extent");
            // The other zones are at their limit of 3, so the fragment returns to its zone.
            assert_eq!(view.zone_of(new.disk_id), view.zone_of(old.disk_id));
            let mut after = placement.clone();
            after[lost_index] = new;
            assert_eq!(check_placement(&view, RS_6_3, &after), Ok(()));
        }
    }
}

#[test]
fn replacement_prefers_node_without_extent() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        let lost_index = (seed % 9) as usize;
        let current = with_lost(&placement, lost_index);
        let old = placement[lost_index];
        let new =
            place_replacement(&view, RS_6_3, &current, lost_index, &[old.disk_id], GIB, seed).expect("room");
        let holding: BTreeSet<u64> = current.iter().flatten().map(|d| d.node_id).collect();
        assert!(!holding.contains(&new.node_id), "seed {seed}: node {} already holds an extent", new.node_id);
    }
}

#[test]
fn replacement_fills_the_emptiest_zone_first() {
    let view = uniform_cluster(4, 4, 4, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        for lost_index in 0..placement.len() {
            let current = with_lost(&placement, lost_index);
            let new = place_replacement(
                &view,
                RS_6_3,
                &current,
                lost_index,
                &[placement[lost_index].disk_id],
                GIB,
                seed,
            )
            .expect("room");
            let mut after = placement.clone();
            after[lost_index] = new;
            assert_eq!(zone_shape(&view, &after), vec![3, 2, 2, 2], "seed {seed} lost {lost_index}");
        }
    }
}

#[test]
fn replica_replacement_picks_a_zone_without_a_replica() {
    let view = uniform_cluster(5, 2, 2, 100 * GIB);
    let r3 = Scheme::Replicated { copies: 3 };
    for seed in 0..SEEDS {
        let placement = place_replicas(&view, 3, GIB, seed).expect("fits");
        let current = with_lost(&placement, 1);
        let new =
            place_replacement(&view, r3, &current, 1, &[placement[1].disk_id], GIB, seed).expect("room");
        let mut after = placement.clone();
        after[1] = new;
        assert_eq!(check_placement(&view, r3, &after), Ok(()));
        assert_eq!(zone_counts(&view, &after).len(), 3);
    }
}

#[test]
fn replacement_fails_when_no_zone_has_room() {
    let mut view = uniform_cluster(3, 2, 2, 100 * GIB);
    let placement = place_fragments(&view, 6, 3, GIB, 4).expect("fits");
    let lost_index = 0;
    let lost_zone = view.zone_of(placement[lost_index].disk_id).expect("zone").to_string();
    // Every disk of the lost zone is either in use or failed.
    for d in view.disks.iter_mut().filter(|d| d.zone == lost_zone) {
        if !placement.iter().any(|p| p.disk_id == d.disk_id) {
            d.writable = false;
        }
    }
    let current = with_lost(&placement, lost_index);
    let err =
        place_replacement(&view, RS_6_3, &current, lost_index, &[placement[lost_index].disk_id], GIB, 4)
            .expect_err("no room");
    assert!(matches!(err, PlacementError::NotEnoughFailureDomains { needed: 1, available: 0, .. }), "{err}");
    assert!(err.to_string().contains("not enough failure domains"), "{err}");
    assert!(err.to_string().contains("already holds 2"), "{err}");
}

#[test]
fn replacement_reuses_a_node_only_when_nothing_else_qualifies() {
    // Two nodes per zone: the lost zone's other two fragments cover both nodes.
    let view = uniform_cluster(3, 2, 3, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        let current = with_lost(&placement, 0);
        let new =
            place_replacement(&view, RS_6_3, &current, 0, &[placement[0].disk_id], GIB, seed).expect("room");
        let mut after = placement.clone();
        after[0] = new;
        assert_eq!(check_placement(&view, RS_6_3, &after), Ok(()));
        assert_ne!(new.disk_id, placement[0].disk_id);
    }
}

#[test]
fn replacement_treats_a_listed_lost_disk_as_replaced() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    let placement = place_fragments(&view, 6, 3, GIB, 9).expect("fits");
    let current: Vec<Option<DiskRef>> = placement.iter().copied().map(Some).collect();
    for seed in 0..SEEDS {
        let new = place_replacement(&view, RS_6_3, &current, 2, &[], GIB, seed).expect("room");
        assert!(!placement.contains(&new), "seed {seed}");
    }
}

#[test]
fn replacement_is_deterministic() {
    let view = uniform_cluster(4, 4, 4, 100 * GIB);
    let placement = place_fragments(&view, 6, 3, GIB, 1).expect("fits");
    let current = with_lost(&placement, 4);
    let avoid = [placement[4].disk_id];
    let mut reversed = view.clone();
    reversed.disks.reverse();
    for seed in 0..SEEDS {
        let a = place_replacement(&view, RS_6_3, &current, 4, &avoid, GIB, seed);
        assert_eq!(a, place_replacement(&view, RS_6_3, &current, 4, &avoid, GIB, seed));
        assert_eq!(a, place_replacement(&reversed, RS_6_3, &current, 4, &avoid, GIB, seed));
    }
}

#[test]
fn replacement_rejects_malformed_current_placement() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    let placement = place_fragments(&view, 6, 3, GIB, 2).expect("fits");
    let current = with_lost(&placement, 0);
    let invalid = |result: Result<DiskRef, PlacementError>, needle: &str| match result {
        Err(PlacementError::InvalidPlacement(msg)) => assert!(msg.contains(needle), "{msg}"),
        other => panic!("expected InvalidPlacement({needle}), got {other:?}"),
    };
    invalid(place_replacement(&view, RS_6_3, &current[..8], 0, &[], GIB, 0), "lists 8");
    invalid(place_replacement(&view, RS_6_3, &current, 9, &[], GIB, 0), "lost index 9");
    let mut dup = current.clone();
    dup[1] = dup[2];
    invalid(place_replacement(&view, RS_6_3, &dup, 0, &[], GIB, 0), "extents 1 and 2");
    let mut ghost = current.clone();
    ghost[3] = Some(DiskRef { disk_id: 999, node_id: 1 });
    invalid(place_replacement(&view, RS_6_3, &ghost, 0, &[], GIB, 0), "not in the cluster view");
    let mut moved = current.clone();
    moved[3] = moved[3].map(|d| DiskRef { node_id: d.node_id + 1, ..d });
    invalid(place_replacement(&view, RS_6_3, &moved, 0, &[], GIB, 0), "the view has it on node");
    let bad_scheme = Scheme::ReedSolomon { data: 0, parity: 9 };
    assert!(matches!(
        place_replacement(&view, bad_scheme, &current, 0, &[], GIB, 0),
        Err(PlacementError::InvalidScheme(_))
    ));
}
