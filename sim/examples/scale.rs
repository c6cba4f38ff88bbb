//! Scale benchmark: 1,000 nodes x 12 disks, 1,000,000 volumes, 10 simulated years.
//!
//! `cargo run --release -p cellar-sim --example scale` (measure with `/usr/bin/time -v`).
//! Prints placement time, simulation time and events per run; the configuration is
//! docs/sim/scale-1000x12.toml.

use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "docs/sim/scale-1000x12.toml".to_string());
    let text = std::fs::read_to_string(&path)?;
    let config = cellar_sim::SimConfig::from_toml(&text)?;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let started = Instant::now();
    let report = cellar_sim::simulate(&config, None, threads, true)?;
    let total = started.elapsed().as_secs_f64();
    print!("{}", report.table());
    println!();
    println!(
        "scale: {} disks, {} volumes, {} runs x {} years on {threads} threads: placement {:.1} s, simulation {:.1} s, total {total:.1} s",
        report.cluster.disks,
        report.cluster.volumes,
        report.run.runs,
        report.run.years,
        report.run.placement_secs,
        report.run.wall_secs - report.run.placement_secs,
    );
    Ok(())
}
