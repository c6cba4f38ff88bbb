//! cellar's durability simulator: how many nines a layout really has.
//!
//! An event-driven Monte Carlo simulation of a cluster over years: zones, nodes and disks
//! with capacity and fill; volumes placed by cellar's real placement module; disk failures
//! (exponential or Weibull), latent sector errors found by scrubbing, transient node and
//! zone outages, permanent node losses, detection delays, and repair by the planner's
//! most-at-risk-first queue limited by disk, node and cross-zone bandwidth. Beside it, the
//! classic Markov model for the same parameters ([`analytic`]), and importance sampling
//! ([`importance`]) for losses far too rare to see by plain sampling.
//!
//! Modules, one job each:
//! - [`config`]: TOML configuration, defaults and validation;
//! - [`cluster`]: the static layout (placement of every extent);
//! - [`lifetime`]: disk lifetime distributions;
//! - [`events`]: the event queue;
//! - `engine`: one simulated history (failures, outages, losses);
//! - `repair`: the repair planner's queue and bandwidth;
//! - [`importance`]: failure-biased branches and likelihood ratios;
//! - [`runner`]: many histories over threads;
//! - [`stats`], [`analytic`]: estimates with intervals, and the Markov model;
//! - [`report`], [`sweep`], [`svg`]: tables, JSON, parameter sweeps and charts;
//! - [`cli`]: the `cellar sim` arguments and entry point.

pub mod analytic;
pub mod cli;
pub mod cluster;
pub mod config;
mod engine;
#[cfg(test)]
mod engine_tests;
mod error;
pub mod events;
mod fasthash;
pub mod lifetime;
pub mod model;
pub mod report;
pub mod rng;
pub mod runner;
pub mod stats;
pub mod svg;
pub mod sweep;

use std::time::Instant;

use cellar_placement::{DiskView, Scheme};

pub use config::SimConfig;
pub use engine::importance;
pub use error::SimError;
pub use report::Report;

/// A live cluster as the master reports it: its disks and every volume's placement.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterInput {
    /// Every disk, with node, zone, capacity and fill.
    pub disks: Vec<DiskView>,
    /// Every volume.
    pub volumes: Vec<VolumeInput>,
    /// The repair throughput the cell measured (bytes of extents rebuilt per second), when
    /// it has repaired something: used instead of the rate worked out from the configured
    /// per-disk, per-node and cross-zone bandwidths.
    pub measured_repair_bytes_per_sec: Option<f64>,
}

/// One volume of a live cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeInput {
    /// Its durability scheme.
    pub scheme: Scheme,
    /// Logical bytes.
    pub bytes: u64,
    /// Disk id of each extent, in extent order.
    pub disk_ids: Vec<u64>,
}

/// Builds the cluster (generated from `config`, or `input` as is), simulates it and the
/// Markov model, and reports. `threads` splits the runs; the numbers do not depend on it.
pub fn simulate(
    config: &SimConfig,
    input: Option<&ClusterInput>,
    threads: usize,
    progress: bool,
) -> Result<Report, SimError> {
    let started = Instant::now();
    let layout = match input {
        Some(input) => cluster::Layout::from_input(input)?,
        None => cluster::Layout::from_shape(&config.cluster, config.simulation.seed, threads)?,
    };
    let placement_secs = started.elapsed().as_secs_f64();
    let mut model = model::Model::new(layout, config);
    if let Some(rate) = input.and_then(|i| i.measured_repair_bytes_per_sec).filter(|r| *r > 0.0) {
        model.repair_rate.bytes_per_sec = rate;
        model.repair_rate.bottleneck = "measured on the cell";
    }
    let results = runner::run_all(&model, &config.simulation, threads, progress);
    Ok(Report::build(&model, config, &results, threads, placement_secs, started.elapsed().as_secs_f64()))
}
