//! Validation of the simulator against exact results.
//!
//! Where the classic Markov chain is exact (independent exponential disk failures,
//! exponential repair of each failed disk, no latent errors or outages, one group of n
//! disks holding the volume), the simulated probability of loss within the horizon must
//! agree with the chain's transient absorption probability.
//!
//! How these statistical tests stay deterministic and meaningful: every run uses a fixed
//! seed, so a test either always passes or always fails. The acceptance band is twice
//! the estimate's own 95 % half-width (about 4 standard errors: a correct simulator with a
//! random seed would fail it with probability ~6e-5), and the half-width itself must be
//! below a stated fraction of the exact value, so that a test cannot pass by being vague.

use cellar_sim::analytic::Chain;
use cellar_sim::config::SECS_PER_YEAR;
use cellar_sim::{SimConfig, simulate};

struct Case {
    scheme: &'static str,
    zones: u32,
    nodes_per_zone: u32,
    afr: f64,
    repair_mean_days: f64,
    years: f64,
    runs: u64,
    method: &'static str,
    branches: u32,
}

fn config(case: &Case, seed: u64) -> SimConfig {
    let text = format!(
        r#"
[cluster]
zones = {zones}
nodes_per_zone = {nodes}
disks_per_node = 1
volumes = 1
scheme = "{scheme}"

[failures]
disk_afr = {afr}
weibull_shape = 1.0
lse_per_disk_per_year = 0.0
node_outage_per_year = 0.0
node_loss_per_year = 0.0
zone_outage_per_year = 0.0
disk_detect_secs = 0.0

[repair]
model = "exponential"
exponential_mean_secs = {mean}

[simulation]
years = {years}
runs = {runs}
seed = {seed}
method = "{method}"
branches = {branches}
"#,
        zones = case.zones,
        nodes = case.nodes_per_zone,
        scheme = case.scheme,
        afr = case.afr,
        mean = case.repair_mean_days * 86_400.0,
        years = case.years,
        runs = case.runs,
        method = case.method,
        branches = case.branches,
    );
    SimConfig::from_toml(&text).expect("valid config")
}

fn exact(case: &Case) -> f64 {
    let cfg = config(case, 1);
    let n = cfg.cluster.scheme.extent_count();
    let tolerance = n - cellar_sim::config::data_extents(cfg.cluster.scheme);
    let chain = Chain::disks(
        n,
        tolerance,
        cfg.failures.disk_rate_per_sec(),
        1.0 / (case.repair_mean_days * 86_400.0),
        1.0,
    );
    chain.loss_probability_within(case.years * SECS_PER_YEAR)
}

/// Simulated probability of loss within the horizon, with its 95 % interval.
fn simulated(case: &Case, seed: u64) -> (f64, f64, f64) {
    let report = simulate(&config(case, seed), None, 2, false).expect("simulate");
    let e = report.loss_incidents_per_year.scaled(case.years);
    (e.value, e.lo, e.hi)
}

fn check(case: &Case, seed: u64, half_width_max: f64) {
    let exact = exact(case);
    let (value, lo, hi) = simulated(case, seed);
    let half = (hi - lo) / 2.0;
    println!(
        "{} {}: exact {exact:.4e}, simulated {value:.4e} [{lo:.4e}, {hi:.4e}], half-width {:.1}%",
        case.scheme,
        case.method,
        half / exact * 100.0
    );
    assert!(half / exact < half_width_max, "interval too wide to mean anything: {half} vs {exact}");
    assert!((value - exact).abs() <= 2.0 * half, "simulated {value} [{lo}, {hi}] vs exact {exact}");
}

fn plain(scheme: &'static str, zones: u32, nodes_per_zone: u32, afr: f64) -> Case {
    Case {
        scheme,
        zones,
        nodes_per_zone,
        afr,
        repair_mean_days: 30.0,
        years: 1.0,
        runs: 40_000,
        method: "plain",
        branches: 1,
    }
}

#[test]
fn plain_simulation_matches_the_exact_chain_for_r2() {
    check(&plain("r2", 2, 1, 0.5), 1, 0.10);
}

#[test]
fn plain_simulation_matches_the_exact_chain_for_r3() {
    check(&plain("r3", 3, 1, 0.8), 2, 0.10);
}

#[test]
fn plain_simulation_matches_the_exact_chain_for_rs_6_3() {
    check(&plain("rs-6-3", 3, 3, 0.5), 3, 0.10);
}

#[test]
fn importance_sampling_matches_the_exact_chain_at_realistic_afr() {
    // r3 at 1.4 % AFR with a one-day repair: about 6e-11 per year, far out of plain reach.
    let case = Case {
        scheme: "r3",
        zones: 3,
        nodes_per_zone: 1,
        afr: 0.014,
        repair_mean_days: 1.0,
        years: 10.0,
        runs: 4000,
        method: "importance",
        branches: 4,
    };
    check(&case, 4, 0.15);
}

#[test]
fn importance_sampling_matches_the_exact_chain_for_rs_6_3_at_realistic_afr() {
    let case = Case {
        scheme: "rs-6-3",
        zones: 3,
        nodes_per_zone: 3,
        afr: 0.014,
        repair_mean_days: 1.0,
        years: 10.0,
        runs: 2000,
        method: "importance",
        branches: 8,
    };
    check(&case, 5, 0.25);
}
