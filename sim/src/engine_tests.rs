//! Behaviour of one history, driven by hand on small clusters with every random process
//! switched off.

use crate::SimConfig;
use crate::cluster::Layout;
use crate::engine::Engine;
use crate::model::Model;

/// A quiet cluster: nothing fails unless a test says so.
fn model(zones: u32, nodes: u32, disks: u32, scheme: &str, volumes: u64, extra: &str) -> Model {
    let text = format!(
        r#"
[cluster]
zones = {zones}
nodes_per_zone = {nodes}
disks_per_node = {disks}
disk_capacity_bytes = 1_000_000_000_000
volume_size_bytes = 1_000_000_000
volumes = {volumes}
scheme = "{scheme}"

[failures]
disk_afr = 0.0
lse_per_disk_per_year = 0.0
node_outage_per_year = 0.0
node_loss_per_year = 0.0
zone_outage_per_year = 0.0
disk_detect_secs = 60
{extra}

[repair]
disk_bytes_per_sec = 1_000_000_000
node_bytes_per_sec = 1_000_000_000
cross_zone_bytes_per_sec = 100_000_000

[simulation]
years = 1
"#
    );
    // Keys in `extra` replace the quiet defaults above.
    let overridden: Vec<&str> = extra.lines().filter_map(|l| l.split('=').next()).map(str::trim).collect();
    let text: String = text
        .lines()
        .filter(|l| {
            !overridden.contains(&l.split('=').next().unwrap_or("").trim()) || extra.contains(l.trim())
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let config = SimConfig::from_toml(&text).expect("config");
    let layout = Layout::from_shape(&config.cluster, 7, 1).expect("layout");
    Model::new(layout, &config)
}

fn run_until(engine: &mut Engine<'_>, secs: f64) {
    engine.end_secs = secs;
    while engine.step() {}
}

fn shared_disks(engine: &Engine<'_>) -> (u32, u32) {
    let layout = &engine.m.layout;
    let slots = layout.slots(0);
    (slots[0], slots[1])
}

#[test]
fn a_failed_disk_is_detected_rebuilt_and_replaced() {
    let m = model(3, 2, 2, "rs-2-1", 60, "");
    let mut engine = Engine::new(&m, 1);
    let d = m.layout.slots(0)[0];
    engine.fail_disk(d);
    engine.reschedule_repairs();
    assert!(engine.status(0, None).missing == 1);
    run_until(&mut engine, 86_400.0);
    assert!(engine.jobs.is_empty(), "rebuild finished");
    assert!(!engine.disks[d as usize].failed, "slot has a new disk");
    assert_eq!(engine.tally.windows, 1);
    let expected = 60.0 + m.layout.disk_bytes(d) as f64 / m.repair_rate.bytes_per_sec;
    assert!((engine.tally.window_secs - expected).abs() < 1.0, "{} vs {expected}", engine.tally.window_secs);
    assert_eq!(engine.status(0, None).missing, 0);
    assert!(engine.losses.is_empty());
}

#[test]
fn doubly_degraded_volumes_are_rebuilt_before_the_bulk() {
    let m = model(3, 2, 2, "rs-4-2", 200, "");
    let mut engine = Engine::new(&m, 1);
    let (a, b) = shared_disks(&engine);
    // The last volume a's bulk rebuild would reach that is also on b.
    let mut shared = Vec::new();
    crate::engine::intersect_into(m.layout.volumes_on(a), m.layout.volumes_on(b), &mut shared);
    let v = *shared.last().expect("a and b share volume 0 at least");
    engine.fail_disk(a);
    engine.reschedule_repairs();
    run_until(&mut engine, 61.0);
    engine.fail_disk(b);
    engine.reschedule_repairs();
    // Once b is detected (121 s), volumes on both are first in line; a's bulk is far from
    // done when they are.
    // Every shared volume is doubly degraded: all are rebuilt, one batch after another,
    // before the bulk rebuilds get any bandwidth back.
    let per_volume = 2.0 * m.layout.extent_bytes(v) as f64 / m.repair_rate.bytes_per_sec;
    let critical_done = 121.0 + shared.len() as f64 * per_volume + 1.0;
    run_until(&mut engine, critical_done);
    let bulk = m.layout.disk_bytes(a) as f64 / m.repair_rate.bytes_per_sec;
    assert!(60.0 + bulk > critical_done - 121.0 + 61.0, "test needs a slow bulk rebuild: {bulk}");
    assert_eq!(engine.status(v, None).missing, 0, "the doubly-degraded volume is whole again");
    assert!(engine.jobs.contains_key(&a) && engine.jobs.contains_key(&b), "bulk rebuilds still running");
    run_until(&mut engine, 86_400.0);
    assert!(engine.jobs.is_empty() && engine.losses.is_empty());
}

#[test]
fn more_failures_than_the_scheme_tolerates_lose_the_volume_once_with_the_earliest_initiator() {
    let m = model(2, 2, 1, "r2", 10, "");
    let mut engine = Engine::new(&m, 1);
    let (a, b) = shared_disks(&engine);
    engine.fail_disk(a);
    let first = engine.initiators[0].id;
    engine.fail_disk(b);
    let lost_here: Vec<_> = engine.losses.iter().filter(|l| l.initiator == first).collect();
    assert!(!lost_here.is_empty(), "volumes on both disks are lost");
    assert_eq!(lost_here.iter().filter(|l| l.first_of_initiator).count(), 1, "one incident");
    assert!(engine.lost.contains(&0));
    run_until(&mut engine, 86_400.0);
    assert!(engine.jobs.is_empty(), "rebuilds of disks holding lost volumes still finish");
}

#[test]
fn zone_outages_make_data_unavailable_but_never_lose_it() {
    let m = model(3, 2, 2, "rs-4-2", 100, "zone_outage_per_year = 200.0\nzone_outage_mean_secs = 20_000");
    let mut engine = Engine::new(&m, 3);
    run_until(&mut engine, 30.0 * 86_400.0);
    assert!(engine.tally.zone_outages > 5, "{}", engine.tally.zone_outages);
    assert!(engine.losses.is_empty());
    assert!(engine.jobs.is_empty(), "three zones: placement cannot rebuild a zone elsewhere");
}

#[test]
fn a_zone_outage_stalls_the_rebuild_of_volumes_that_need_it() {
    // rs-4-2 over 3 zones puts 2 fragments per zone: with one zone down and one fragment
    // lost, 3 of 4 needed fragments are readable, so the rebuild waits for the zone.
    let m = model(3, 2, 2, "rs-4-2", 100, "down_after_secs = 1e9");
    let mut engine = Engine::new(&m, 1);
    let d = m.layout.slots(0)[0];
    engine.fail_disk(d);
    engine.reschedule_repairs();
    run_until(&mut engine, 61.0);
    let other_zone = (m.layout.disk_zone[d as usize] + 1) % 3;
    engine.zones[other_zone as usize].out = true;
    let disks = engine.zone_disks(other_zone);
    engine.outage_started(&disks);
    engine.reschedule_repairs();
    run_until(&mut engine, 100_000.0);
    assert!(engine.jobs.contains_key(&d), "rebuild stalled while the zone is down");
    assert!(engine.status(0, None).missing == 1);
    engine.zones[other_zone as usize].out = false;
    engine.outage_ended(&disks);
    engine.reschedule_repairs();
    run_until(&mut engine, 200_000.0);
    assert!(engine.jobs.is_empty(), "rebuild finished once the zone came back");
}

#[test]
fn a_long_node_outage_triggers_a_precautionary_rebuild_that_stops_when_it_returns() {
    let m = model(4, 2, 1, "r3", 50, "down_after_secs = 900");
    let mut engine = Engine::new(&m, 1);
    let node = 0u32;
    let disk = m.layout.nodes[0].disks[0];
    engine.nodes[0].out = true;
    engine.nodes[0].since_secs = 0.0;
    engine.nodes[0].back_secs = 5000.0;
    engine.queue.push(900.0, crate::events::Event::NodeDownAfter { node, generation: 0 });
    engine.queue.push(1000.0, crate::events::Event::NodeBack { node, generation: 0 });
    run_until(&mut engine, 950.0);
    assert!(engine.jobs.get(&disk).is_some_and(|j| !j.permanent), "rebuild started after down_after");
    run_until(&mut engine, 1100.0);
    assert!(engine.jobs.is_empty(), "node back: its extents are available again");
    assert!(engine.losses.is_empty());
}
