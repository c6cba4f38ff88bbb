//! Importance sampling against plain sampling on the full model (bandwidth-limited
//! repair, latent errors, node outages and losses), where losses are common enough for
//! plain sampling to see; and repeatability.
//!
//! Deterministic by construction: fixed seeds, and acceptance bands of twice the combined
//! 95 % half-width (about 4 standard errors), with each half-width bounded so that the
//! comparison means something. See tests/validation.rs for the reasoning.

use cellar_sim::{SimConfig, simulate};

fn config(method: &str, runs: u64, seed: u64) -> SimConfig {
    let text = format!(
        r#"
[cluster]
zones = 3
nodes_per_zone = 4
disks_per_node = 2
disk_capacity_bytes = 1_000_000_000_000
volume_size_bytes = 1_000_000_000
volumes = 2000
scheme = "r2"

[failures]
disk_afr = 0.3
lse_per_disk_per_year = 1.0
scrub_interval_secs = 1_209_600
node_outage_per_year = 4.0
node_outage_mean_secs = 1800
node_loss_per_year = 0.02
zone_outage_per_year = 0.5
zone_outage_mean_secs = 7200

[repair]
disk_bytes_per_sec = 1_000_000

[simulation]
years = 10
runs = {runs}
seed = {seed}
method = "{method}"
branches = 4
"#
    );
    SimConfig::from_toml(&text).expect("valid config")
}

#[test]
fn importance_sampling_agrees_with_plain_sampling_at_high_afr() {
    let plain = simulate(&config("plain", 1500, 11), None, 2, false).expect("plain");
    let is = simulate(&config("importance", 150, 12), None, 2, false).expect("importance");
    for (name, p, q) in [
        ("incidents", plain.loss_incidents_per_year, is.loss_incidents_per_year),
        ("volumes", plain.volumes_lost_per_year, is.volumes_lost_per_year),
    ] {
        let hp = (p.hi - p.lo) / 2.0;
        let hq = (q.hi - q.lo) / 2.0;
        println!("{name}: plain {:.4} +- {hp:.4}, importance {:.4} +- {hq:.4}", p.value, q.value);
        assert!(hp / p.value < 0.15 && hq / q.value < 0.25, "intervals too wide: {hp} {hq}");
        let band = 2.0 * (hp * hp + hq * hq).sqrt();
        assert!((p.value - q.value).abs() <= band, "{name}: plain {p:?} vs importance {q:?}");
    }
}

#[test]
fn the_same_seed_gives_the_same_numbers_whatever_the_thread_count() {
    let a = simulate(&config("importance", 6, 5), None, 1, false).expect("a");
    let b = simulate(&config("importance", 6, 5), None, 2, false).expect("b");
    let c = simulate(&config("importance", 6, 6), None, 2, false).expect("c");
    assert_eq!(a.loss_incidents_per_year, b.loss_incidents_per_year);
    assert_eq!(a.bytes_lost_per_year, b.bytes_lost_per_year);
    assert_eq!(a.rebuilt_bytes_per_year, b.rebuilt_bytes_per_year);
    assert_ne!(a.loss_incidents_per_year, c.loss_incidents_per_year);
    let p = simulate(&config("plain", 50, 5), None, 2, false).expect("plain a");
    let q = simulate(&config("plain", 50, 5), None, 1, false).expect("plain b");
    assert_eq!(p.loss_incidents_per_year, q.loss_incidents_per_year);
    assert_eq!(p.events_per_year.disk_failures, q.events_per_year.disk_failures);
}
