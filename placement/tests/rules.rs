//! The placement rules on hand-built clusters: zone limits, zone evenness, distinct
//! nodes, eligibility, determinism, and the errors when the rules cannot be met.

mod common;

use cellar_placement::{
    ClusterView, DiskRef, PlacementError, Scheme, check_placement, place_fragments, place_replicas,
    place_volume,
};
use common::{GIB, disk, distinct_nodes, uniform_cluster, zone_counts, zone_shape};

const SEEDS: u64 = 200;

fn rs(data: u8, parity: u8) -> Scheme {
    Scheme::ReedSolomon { data, parity }
}

#[test]
fn rs_6_3_over_three_zones_places_three_per_zone_on_distinct_nodes() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        assert_eq!(placement.len(), 9);
        assert_eq!(zone_shape(&view, &placement), vec![3, 3, 3], "seed {seed}");
        assert_eq!(distinct_nodes(&placement), 9, "seed {seed}");
        assert_eq!(check_placement(&view, rs(6, 3), &placement), Ok(()));
    }
}

#[test]
fn rs_6_3_over_four_zones_places_3_2_2_2() {
    let view = uniform_cluster(4, 4, 4, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        assert_eq!(zone_shape(&view, &placement), vec![3, 2, 2, 2], "seed {seed}");
        assert_eq!(distinct_nodes(&placement), 9, "seed {seed}");
    }
}

#[test]
fn rs_10_4_over_four_zones_places_4_4_3_3() {
    let view = uniform_cluster(4, 5, 2, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 10, 4, GIB, seed).expect("fits");
        assert_eq!(zone_shape(&view, &placement), vec![4, 4, 3, 3], "seed {seed}");
        assert_eq!(distinct_nodes(&placement), 14, "seed {seed}");
    }
}

#[test]
fn rs_10_4_over_three_zones_fails_with_not_enough_failure_domains() {
    let view = uniform_cluster(3, 4, 4, 100 * GIB);
    let err = place_fragments(&view, 10, 4, GIB, 1).expect_err("14 fragments, at most 4 per zone, 3 zones");
    match &err {
        PlacementError::NotEnoughFailureDomains { needed, available, detail } => {
            assert_eq!((*needed, *available), (14, 12));
            assert!(detail.contains("rs-10-4 allows at most 4"), "{detail}");
            assert!(detail.contains("\"z0\"=16"), "{detail}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("not enough failure domains"), "{err}");
}

/// A full cell says so: the shortfall names, per zone, the disks passed over for want of
/// room and those that take nothing new, not only the count of candidates left.
#[test]
fn a_shortfall_names_the_disks_too_full_and_the_ones_failed() {
    let mut view = uniform_cluster(3, 2, 2, 10 * GIB);
    for d in &mut view.disks {
        match (d.zone.as_str(), d.disk_id % 4) {
            // z0: every disk too full for another GiB; z1: one failed, the rest too full.
            ("z0", _) | ("z1", 1..=3) => d.used_bytes = 10 * GIB - GIB / 2,
            ("z1", _) => d.writable = false,
            _ => {}
        }
    }
    let err = place_replicas(&view, 3, GIB, 5).expect_err("two zones have no room");
    let text = err.to_string();
    assert!(text.contains("\"z0\"=0 (4 too full)"), "{text}");
    assert!(text.contains("\"z1\"=0 (3 too full, 1 failed, down or draining)"), "{text}");
    assert!(text.contains("\"z2\"=4"), "{text}");
    assert!(!text.contains("\"z2\"=4 ("), "{text}");
}

#[test]
fn coded_volume_cannot_live_in_one_zone() {
    let view = uniform_cluster(1, 10, 10, 100 * GIB);
    for (data, parity) in [(6, 3), (1, 3), (1, 1), (10, 4)] {
        let err = place_fragments(&view, data, parity, GIB, 3).expect_err("one zone");
        assert!(matches!(err, PlacementError::NotEnoughFailureDomains { .. }), "{err}");
    }
}

#[test]
fn parity_free_scheme_is_refused_as_invalid() {
    // rs-k-0 is no code the erasure crate runs: refused as a scheme, not placed.
    let view = uniform_cluster(5, 4, 4, 100 * GIB);
    let err = place_fragments(&view, 4, 0, GIB, 3).expect_err("no parity");
    assert!(matches!(err, PlacementError::InvalidScheme(_)), "{err}");
    assert!(err.to_string().contains("rs-4-0"), "{err}");
}

#[test]
fn zone_with_few_disks_limits_its_share() {
    // z9 has a single disk, so it holds one fragment; the two big zones take their limit
    // of three each: 3 + 3 + 1 slots for 4+3 fragments, exactly enough.
    let mut view = uniform_cluster(2, 3, 2, 100 * GIB);
    view.disks.push(disk(1000, 900, "z9", 100 * GIB));
    let placement = place_fragments(&view, 4, 3, GIB, 5).expect("3 + 3 + 1 slots");
    let counts = zone_counts(&view, &placement);
    assert_eq!(counts.get("z9"), Some(&1));
    assert_eq!(zone_shape(&view, &placement), vec![3, 3, 1]);
}

#[test]
fn replicas_land_in_distinct_zones() {
    for zones in 3..=6 {
        let view = uniform_cluster(zones, 2, 3, 100 * GIB);
        for seed in 0..SEEDS {
            let placement = place_replicas(&view, 3, GIB, seed).expect("enough zones");
            assert_eq!(zone_shape(&view, &placement), vec![1, 1, 1], "zones {zones} seed {seed}");
            assert_eq!(check_placement(&view, Scheme::Replicated { copies: 3 }, &placement), Ok(()));
        }
    }
}

#[test]
fn replicas_need_as_many_zones_with_room_as_copies() {
    let view = uniform_cluster(2, 4, 4, 100 * GIB);
    let err = place_replicas(&view, 3, GIB, 0).expect_err("two zones");
    assert!(matches!(err, PlacementError::NotEnoughFailureDomains { needed: 3, available: 2, .. }), "{err}");

    let mut view = uniform_cluster(3, 4, 4, 100 * GIB);
    for d in view.disks.iter_mut().filter(|d| d.zone == "z2") {
        d.writable = d.disk_id % 2 == 0;
        d.used_bytes = if d.writable { 100 * GIB - GIB + 1 } else { 0 };
    }
    let err = place_replicas(&view, 3, GIB, 0).expect_err("z2 has no eligible disk");
    assert!(matches!(err, PlacementError::NotEnoughFailureDomains { needed: 3, available: 2, .. }), "{err}");
    assert!(place_replicas(&view, 3, GIB - 1, 0).is_ok(), "a smaller extent fits z2's last bytes");
}

#[test]
fn full_and_unwritable_disks_are_never_chosen() {
    let mut view = uniform_cluster(3, 3, 4, 10 * GIB);
    for d in &mut view.disks {
        match d.disk_id % 4 {
            0 => d.writable = false,
            1 => d.used_bytes = 10 * GIB - GIB / 2,
            2 => d.used_bytes = 20 * GIB,
            _ => d.used_bytes = 9 * GIB,
        }
    }
    for seed in 0..SEEDS {
        for scheme in [rs(4, 2), Scheme::Replicated { copies: 3 }] {
            let placement = place_volume(&view, scheme, GIB, seed).expect("one eligible disk per node");
            for d in &placement {
                assert_eq!(d.disk_id % 4, 3, "seed {seed}: disk {} is not eligible", d.disk_id);
            }
        }
    }
}

#[test]
fn a_node_takes_a_second_fragment_only_when_its_zone_has_no_fresh_node() {
    // Two nodes per zone and three fragments per zone: one node in each zone takes two.
    let view = uniform_cluster(3, 2, 3, 100 * GIB);
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        assert_eq!(zone_shape(&view, &placement), vec![3, 3, 3]);
        assert_eq!(distinct_nodes(&placement), 6, "seed {seed}: every node is used");
    }
}

#[test]
fn fragments_prefer_zones_with_fresh_nodes_over_even_zones() {
    // z0 is one node with three disks: evenness alone would put 3 fragments on it.
    let mut view = uniform_cluster(3, 3, 2, 100 * GIB);
    for d in 0..3 {
        view.disks.push(disk(1000 + d, 900, "z9", 100 * GIB));
    }
    for seed in 0..SEEDS {
        let placement = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        assert_eq!(distinct_nodes(&placement), 9, "seed {seed}");
        assert_eq!(zone_counts(&view, &placement).get("z9"), Some(&1), "seed {seed}");
    }
}

#[test]
fn same_seed_gives_same_placement() {
    let view = uniform_cluster(4, 5, 6, 100 * GIB);
    for seed in 0..SEEDS {
        let a = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        let b = place_fragments(&view, 6, 3, GIB, seed).expect("fits");
        assert_eq!(a, b);
    }
    let distinct: std::collections::BTreeSet<Vec<DiskRef>> =
        (0..SEEDS).map(|seed| place_fragments(&view, 6, 3, GIB, seed).expect("fits")).collect();
    assert!(distinct.len() as u64 > SEEDS * 9 / 10, "seeds should vary placements: {}", distinct.len());
}

#[test]
fn placement_ignores_disk_order_in_view() {
    let view = uniform_cluster(4, 3, 3, 100 * GIB);
    let mut reversed = view.clone();
    reversed.disks.reverse();
    for seed in 0..SEEDS {
        assert_eq!(place_fragments(&view, 6, 3, GIB, seed), place_fragments(&reversed, 6, 3, GIB, seed));
        assert_eq!(place_replicas(&view, 3, GIB, seed), place_replicas(&reversed, 3, GIB, seed));
    }
}

#[test]
fn emptier_disks_receive_more_extents() {
    // Each zone: one node with an empty disk and a 90% full one.
    let mut disks = Vec::new();
    for z in 0..3u64 {
        disks.push(disk(10 * z + 1, z, &format!("z{z}"), 100 * GIB));
        let mut full = disk(10 * z + 2, z, &format!("z{z}"), 100 * GIB);
        full.used_bytes = 90 * GIB;
        disks.push(full);
    }
    let view = ClusterView::new(disks);
    let mut on_empty = 0;
    let rounds = 1000;
    for seed in 0..rounds {
        let placement = place_replicas(&view, 3, GIB, seed).expect("fits");
        on_empty += placement.iter().filter(|d| d.disk_id % 10 == 1).count();
    }
    // Weighted by free bytes: 100 vs 10, so about 91% land on the empty disks.
    let share = on_empty as f64 / (3 * rounds) as f64;
    assert!((0.86..0.96).contains(&share), "share on empty disks {share}");
}

#[test]
fn empty_view_fails_with_not_enough_failure_domains() {
    let view = ClusterView::default();
    let err = place_replicas(&view, 1, GIB, 0).expect_err("no disks");
    assert!(matches!(err, PlacementError::NotEnoughFailureDomains { needed: 1, available: 0, .. }), "{err}");
    assert!(err.to_string().contains("empty cluster view"), "{err}");
}

#[test]
fn invalid_schemes_and_views_are_rejected() {
    let view = uniform_cluster(3, 2, 2, 100 * GIB);
    for result in [
        place_replicas(&view, 0, GIB, 0),
        place_replicas(&view, 33, GIB, 0),
        place_fragments(&view, 0, 3, GIB, 0),
        place_fragments(&view, 20, 13, GIB, 0),
    ] {
        assert!(matches!(result, Err(PlacementError::InvalidScheme(_))), "{result:?}");
    }
    let mut bad = view.clone();
    bad.disks.push(disk(1, 55, "z1", GIB));
    assert!(matches!(place_replicas(&bad, 1, GIB, 0), Err(PlacementError::InvalidView(_))));
}

#[test]
fn check_placement_accepts_valid_and_names_each_violation() {
    let view = uniform_cluster(3, 2, 2, 100 * GIB);
    let at = |disk_id: u64| view.disk(disk_id).expect("disk").disk_ref();
    // Disks 1-4 are z0, 5-8 z1, 9-12 z2; nodes hold two consecutive disks.
    let r3 = Scheme::Replicated { copies: 3 };
    assert_eq!(check_placement(&view, r3, &[at(1), at(5), at(9)]), Ok(()));
    let err = check_placement(&view, r3, &[at(1), at(3), at(9)]).expect_err("two replicas in z0");
    assert!(err.contains("zone \"z0\" holds extents [0, 1]"), "{err}");

    let rs42 = rs(4, 2);
    assert_eq!(check_placement(&view, rs42, &[at(1), at(3), at(5), at(7), at(9), at(11)]), Ok(()));
    let err =
        check_placement(&view, rs42, &[at(1), at(2), at(3), at(5), at(9), at(11)]).expect_err("3 in z0");
    assert!(err.contains("at most 2 allowed"), "{err}");
    let err = check_placement(&view, rs42, &[at(1), at(1), at(5), at(7), at(9), at(11)]).expect_err("dup");
    assert!(err.contains("both on disk 1"), "{err}");
    let err = check_placement(&view, rs42, &[at(1), at(5), at(9)]).expect_err("short");
    assert!(err.contains("rs-4-2 has 6 extents, placement lists 3"), "{err}");
    let ghost = DiskRef { disk_id: 99, node_id: 0 };
    let err = check_placement(&view, rs42, &[at(1), at(3), at(5), at(7), at(9), ghost]).expect_err("unknown");
    assert!(err.contains("not in the cluster view"), "{err}");
    let moved = DiskRef { disk_id: 11, node_id: 0 };
    let err = check_placement(&view, rs42, &[at(1), at(3), at(5), at(7), at(9), moved]).expect_err("node");
    assert!(err.contains("the view has it on node 201"), "{err}");
    let err = check_placement(&view, rs(4, 0), &[at(1), at(5), at(9), at(10)]).expect_err("no parity");
    assert!(err.contains("rs-4-0"), "{err}");
}
