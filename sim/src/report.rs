//! The result of a simulation: the numbers, a table for people and JSON for programs.

use std::fmt::Write as _;

use serde::Serialize;

use crate::analytic::{Analytic, analyze};
use crate::cluster::RepairRate;
use crate::config::{Method, SECS_PER_YEAR, SimConfig};
use crate::model::Model;
use crate::runner::RunResult;
use crate::stats::{Estimate, nines};

/// The cluster that was simulated.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    /// Zones.
    pub zones: usize,
    /// Nodes.
    pub nodes: usize,
    /// Disks.
    pub disks: usize,
    /// Volumes.
    pub volumes: usize,
    /// Schemes in use.
    pub schemes: Vec<String>,
    /// Raw capacity of all disks.
    pub raw_capacity_bytes: u64,
    /// Bytes held by all extents.
    pub stored_bytes: u64,
    /// Logical bytes of all volumes.
    pub logical_bytes: u64,
    /// Repair throughput and its bottleneck.
    pub repair_rate: RepairRate,
}

/// How the estimate was made.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// Estimator.
    pub method: Method,
    /// Histories simulated.
    pub runs: u64,
    /// Years per history.
    pub years: f64,
    /// Master seed.
    pub seed: u64,
    /// Threads used.
    pub threads: usize,
    /// Branches per initiating event (importance sampling).
    pub branches_per_initiator: u32,
    /// Bias strength (importance sampling).
    pub bias: f64,
    /// Branches run in total.
    pub branches: u64,
    /// Branches cut off at `branch_max_days` before healing.
    pub branches_truncated: u64,
    /// Seconds spent placing volumes.
    pub placement_secs: f64,
    /// Seconds of wall time in total.
    pub wall_secs: f64,
}

/// Events seen per simulated year (main histories).
#[derive(Clone, Debug, Serialize)]
pub struct EventRates {
    /// Disk failures.
    pub disk_failures: f64,
    /// Disks retired at end of service life.
    pub disk_retirements: f64,
    /// Latent sector errors.
    pub latent_errors: f64,
    /// Transient node outages.
    pub node_outages: f64,
    /// Permanent node losses.
    pub node_losses: f64,
    /// Zone outages.
    pub zone_outages: f64,
}

/// Durability in nines with its interval (the interval of P, mapped).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Nines {
    /// Point estimate.
    pub value: f64,
    /// Lower end (from the upper end of P).
    pub lo: f64,
    /// Upper end (from the lower end of P; infinite when P's interval reaches 0).
    pub hi: f64,
}

/// Everything `cellar sim` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The cluster.
    pub cluster: ClusterSummary,
    /// The Monte Carlo settings.
    pub run: RunSummary,
    /// Probability of losing data (at least one volume) within a year, 95 % interval.
    pub loss_probability_per_year: Estimate,
    /// The same in nines.
    pub nines: Nines,
    /// Expected loss incidents (initiating events that lost data) per year.
    pub loss_incidents_per_year: Estimate,
    /// Expected volumes lost per year.
    pub volumes_lost_per_year: Estimate,
    /// Expected logical bytes lost per year.
    pub bytes_lost_per_year: Estimate,
    /// Incidents counted plainly in the main histories (no weighting), per year.
    pub plain_incidents_per_year: Estimate,
    /// Mean time from a disk's failure until all its extents are rebuilt.
    pub mean_reduced_redundancy_secs: f64,
    /// Fraction of time with at least one missing extent or running rebuild.
    pub degraded_time_fraction: f64,
    /// Bytes of extents rebuilt per year.
    pub rebuilt_bytes_per_year: f64,
    /// Disk and network traffic of those rebuilds per year (reads plus writes).
    pub repair_traffic_bytes_per_year: f64,
    /// Events per year.
    pub events_per_year: EventRates,
    /// The classic Markov model for the same parameters.
    pub analytic: Analytic,
}

impl Report {
    /// Aggregates per-history results.
    pub fn build(
        model: &Model,
        config: &SimConfig,
        results: &[RunResult],
        threads: usize,
        placement_secs: f64,
        wall_secs: f64,
    ) -> Report {
        let layout = &model.layout;
        let sim = &config.simulation;
        let years = sim.years;
        let run_years = years * results.len() as f64;
        let per_year = |f: &dyn Fn(&RunResult) -> f64| -> Estimate {
            let samples: Vec<f64> = results.iter().map(|r| f(r) / years).collect();
            Estimate::mean_of(&samples)
        };
        let plain_count: u64 = results.iter().map(|r| r.plain_incidents).sum();
        let plain = Estimate::poisson_rate(plain_count, run_years);
        let incidents = match sim.method {
            Method::Plain => plain,
            Method::Importance => per_year(&|r| r.incidents),
        };
        let p = incidents.rate_to_probability();
        let sum = |f: &dyn Fn(&RunResult) -> f64| -> f64 { results.iter().map(f).sum() };
        let windows = sum(&|r| r.tally.windows as f64);
        let window_secs = sum(&|r| r.tally.window_secs);
        let rebuilt = sum(&|r| r.tally.repaired_bytes) / run_years;
        let rate = |f: &dyn Fn(&RunResult) -> f64| sum(f) / run_years;
        Report {
            cluster: ClusterSummary {
                zones: layout.zones.len(),
                nodes: layout.nodes.len(),
                disks: layout.disk_count(),
                volumes: layout.volume_count(),
                schemes: layout.schemes.iter().map(|s| s.scheme.to_string()).collect(),
                raw_capacity_bytes: layout.disk_views.iter().map(|d| d.capacity_bytes).sum(),
                stored_bytes: layout.stored_bytes(),
                logical_bytes: layout.logical_bytes(),
                repair_rate: model.repair_rate,
            },
            run: RunSummary {
                method: sim.method,
                runs: results.len() as u64,
                years,
                seed: sim.seed,
                threads,
                branches_per_initiator: sim.branches,
                bias: sim.bias,
                branches: results.iter().map(|r| r.branches).sum(),
                branches_truncated: results.iter().map(|r| r.branches_truncated).sum(),
                placement_secs,
                wall_secs,
            },
            loss_probability_per_year: p,
            nines: Nines { value: nines(p.value), lo: nines(p.hi), hi: nines(p.lo) },
            loss_incidents_per_year: incidents,
            volumes_lost_per_year: per_year(&|r| r.volumes_lost),
            bytes_lost_per_year: per_year(&|r| r.bytes_lost),
            plain_incidents_per_year: plain,
            mean_reduced_redundancy_secs: if windows > 0.0 { window_secs / windows } else { 0.0 },
            degraded_time_fraction: sum(&|r| r.tally.degraded_secs) / (run_years * SECS_PER_YEAR),
            rebuilt_bytes_per_year: rebuilt,
            repair_traffic_bytes_per_year: rebuilt * model.repair_rate.io_amplification,
            events_per_year: EventRates {
                disk_failures: rate(&|r| r.tally.disk_failures as f64),
                disk_retirements: rate(&|r| r.tally.disk_retirements as f64),
                latent_errors: rate(&|r| r.tally.lses as f64),
                node_outages: rate(&|r| r.tally.node_outages as f64),
                node_losses: rate(&|r| r.tally.node_losses as f64),
                zone_outages: rate(&|r| r.tally.zone_outages as f64),
            },
            analytic: analyze(model),
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let c = &self.cluster;
        let r = &self.run;
        let _ = writeln!(
            out,
            "cluster     {} zones, {} nodes, {} disks, {} volumes ({}), {} raw, {} stored",
            c.zones,
            c.nodes,
            c.disks,
            c.volumes,
            c.schemes.join(", "),
            bytes(c.raw_capacity_bytes as f64),
            bytes(c.stored_bytes as f64)
        );
        let _ = writeln!(
            out,
            "repair      {}/s of extents rebuilt ({}-bound), {:.1}x traffic per rebuilt byte",
            bytes(c.repair_rate.bytes_per_sec),
            c.repair_rate.bottleneck,
            c.repair_rate.io_amplification
        );
        let method = match r.method {
            Method::Plain => "plain sampling".to_string(),
            Method::Importance => format!(
                "importance sampling, {} branches/initiator, bias {} ({} branches, {} cut off)",
                r.branches_per_initiator, r.bias, r.branches, r.branches_truncated
            ),
        };
        let _ = writeln!(
            out,
            "runs        {} x {} years, seed {}, {} threads, {method}, {:.1} s",
            r.runs, r.years, r.seed, r.threads, r.wall_secs
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<34} {:>14} {:>28}", "", "simulation", "95% interval");
        let p = &self.loss_probability_per_year;
        let _ = writeln!(out, "{:<34} {:>14} {:>28}", "P(loss) per year", sci(p.value), interval(p.lo, p.hi));
        let _ = writeln!(
            out,
            "{:<34} {:>14} {:>28}",
            "nines",
            format!("{:.2}", self.nines.value),
            format!("[{:.2}, {:.2}]", self.nines.lo, self.nines.hi)
        );
        let v = &self.volumes_lost_per_year;
        let _ = writeln!(
            out,
            "{:<34} {:>14} {:>28}",
            "volumes lost per year",
            sci(v.value),
            interval(v.lo, v.hi)
        );
        let b = &self.bytes_lost_per_year;
        let _ = writeln!(
            out,
            "{:<34} {:>14} {:>28}",
            "expected bytes lost per year",
            bytes(b.value),
            interval_bytes(b.lo, b.hi)
        );
        if r.method == Method::Importance {
            let q = &self.plain_incidents_per_year;
            let _ = writeln!(
                out,
                "{:<34} {:>14} {:>28}",
                "  (plain count in main runs)",
                sci(q.value),
                interval(q.lo, q.hi)
            );
        }
        let _ = writeln!(out);
        let a = &self.analytic;
        let _ = writeln!(
            out,
            "{:<34} {:>14}   MTTDL {} years, MTTR {}",
            "Markov model P(loss) per year",
            sci(a.loss_probability_per_year),
            sci(a.mttdl_years),
            duration(a.mttr_secs)
        );
        let _ = writeln!(out, "{:<34} {:>14}", "Markov model nines", format!("{:.2}", a.nines));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<34} {:>14}",
            "mean time at reduced redundancy",
            duration(self.mean_reduced_redundancy_secs)
        );
        let _ = writeln!(
            out,
            "{:<34} {:>13.3}%",
            "time with missing extents",
            self.degraded_time_fraction * 100.0
        );
        let _ = writeln!(
            out,
            "{:<34} {:>14}   ({} of disk/network traffic)",
            "rebuilt per year",
            bytes(self.rebuilt_bytes_per_year),
            bytes(self.repair_traffic_bytes_per_year)
        );
        let e = &self.events_per_year;
        let _ = writeln!(
            out,
            "{:<34} {:>14}   disk failures {:.1}, latent errors {:.1}, node outages {:.1}, node losses {:.2}, zone outages {:.2}",
            "events per year",
            "",
            e.disk_failures,
            e.latent_errors,
            e.node_outages,
            e.node_losses,
            e.zone_outages
        );
        out
    }
}

fn sci(x: f64) -> String {
    if x == 0.0 {
        "0".to_string()
    } else if x.is_infinite() {
        "inf".to_string()
    } else {
        format!("{x:.3e}")
    }
}

fn interval(lo: f64, hi: f64) -> String {
    format!("[{}, {}]", sci(lo), sci(hi))
}

fn interval_bytes(lo: f64, hi: f64) -> String {
    format!("[{}, {}]", bytes(lo), bytes(hi))
}

/// Bytes with a decimal unit.
pub fn bytes(x: f64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if x == 0.0 {
        return "0 B".to_string();
    }
    if !x.is_finite() {
        return "inf".to_string();
    }
    if x < 1.0 {
        return format!("{x:.2e} B");
    }
    let mut v = x;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.2} {}", UNITS[unit])
}

/// Seconds as the largest sensible unit.
pub fn duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else if secs < 2.0 * 86_400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}
