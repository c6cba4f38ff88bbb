//! `cellar sim sweep`: vary one parameter, simulate each value, chart nines against it.

use serde::Serialize;

use crate::analytic::Analytic;
use crate::config::SimConfig;
use crate::stats::Estimate;
use crate::svg::{Point, Series, line_chart};
use crate::{ClusterInput, SimError, simulate};

/// Most values one sweep may try.
pub const SWEEP_VALUES_MAX: usize = 64;

/// The parameter a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepParam {
    /// Multiplier on all three repair bandwidths (disk, node, cross-zone).
    RepairBandwidth,
    /// `failures.down_after_secs`.
    DownAfter,
    /// `cluster.scheme` (values like r3, rs-6-3, rs-10-4).
    Scheme,
    /// `cluster.zones`, keeping the total node count (nodes per zone = nodes / zones).
    Zones,
    /// `failures.disk_afr`.
    Afr,
    /// `failures.zone_outage_per_year`.
    ZoneOutages,
    /// `failures.scrub_interval_secs`, given in days.
    ScrubDays,
}

impl SweepParam {
    /// Axis title.
    pub fn title(self) -> &'static str {
        match self {
            SweepParam::RepairBandwidth => "repair bandwidth (x configured)",
            SweepParam::DownAfter => "down_after (s)",
            SweepParam::Scheme => "scheme",
            SweepParam::Zones => "zones (same node count)",
            SweepParam::Afr => "disk AFR",
            SweepParam::ZoneOutages => "zone outages per zone per year",
            SweepParam::ScrubDays => "scrub interval (days)",
        }
    }

    /// `config` with this parameter set to `value`.
    pub fn apply(self, config: &SimConfig, value: &str) -> Result<SimConfig, SimError> {
        let mut c = config.clone();
        let number = || -> Result<f64, SimError> {
            value.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0).ok_or_else(|| {
                SimError::ConfigValue {
                    field: "sweep value",
                    reason: format!("{value:?} is not a non-negative number"),
                }
            })
        };
        match self {
            SweepParam::RepairBandwidth => {
                let k = number()?;
                if k <= 0.0 {
                    return Err(SimError::ConfigValue {
                        field: "sweep value",
                        reason: "bandwidth multiplier must be > 0".into(),
                    });
                }
                c.repair.disk_bytes_per_sec *= k;
                c.repair.node_bytes_per_sec *= k;
                c.repair.cross_zone_bytes_per_sec *= k;
            }
            SweepParam::DownAfter => c.failures.down_after_secs = number()?,
            SweepParam::Scheme => {
                c.cluster.scheme = value.parse().map_err(|e: cellar_placement::PlacementError| {
                    SimError::ConfigValue { field: "cluster.scheme", reason: e.to_string() }
                })?;
                // Keep the fill: the volume count follows the scheme's overhead.
                let stored =
                    crate::config::stored_bytes(c.cluster.scheme, c.cluster.volume_size_bytes) as f64;
                let old = crate::config::stored_bytes(config.cluster.scheme, config.cluster.volume_size_bytes)
                    as f64;
                c.cluster.volumes = ((config.cluster.volumes as f64 * old / stored).floor() as u64).max(1);
            }
            SweepParam::Zones => {
                let zones = number()? as u32;
                if zones == 0 {
                    return Err(SimError::ConfigValue {
                        field: "cluster.zones",
                        reason: "must be at least 1".into(),
                    });
                }
                let nodes = config.cluster.zones * config.cluster.nodes_per_zone;
                c.cluster.zones = zones;
                c.cluster.nodes_per_zone = (nodes / zones).max(1);
            }
            SweepParam::Afr => {
                let afr = number()?;
                if afr >= 1.0 {
                    return Err(SimError::ConfigValue {
                        field: "failures.disk_afr",
                        reason: "must be below 1".into(),
                    });
                }
                c.failures.disk_afr = afr;
            }
            SweepParam::ZoneOutages => {
                c.failures.zone_outage_per_sec = number()? / crate::config::SECS_PER_YEAR
            }
            SweepParam::ScrubDays => {
                let days = number()?;
                if days <= 0.0 {
                    return Err(SimError::ConfigValue {
                        field: "scrub interval",
                        reason: "must be > 0".into(),
                    });
                }
                c.failures.scrub_interval_secs = days * 86_400.0;
            }
        }
        Ok(c)
    }
}

/// One value of a sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    /// The value as given.
    pub value: String,
    /// Simulated probability of loss per year, when the value could be simulated.
    pub loss_probability_per_year: Option<Estimate>,
    /// Simulated nines (value, lo, hi).
    pub nines: Option<crate::report::Nines>,
    /// The Markov model.
    pub analytic: Option<Analytic>,
    /// Why the value could not be simulated (e.g. placement refused the layout).
    pub error: Option<String>,
}

/// A whole sweep.
#[derive(Clone, Debug, Serialize)]
pub struct SweepResult {
    /// Parameter varied.
    pub param: SweepParam,
    /// One entry per value.
    pub points: Vec<SweepPoint>,
}

/// Simulates `config` once per value.
pub fn run_sweep(
    config: &SimConfig,
    input: Option<&ClusterInput>,
    param: SweepParam,
    values: &[String],
    threads: usize,
    progress: bool,
) -> Result<SweepResult, SimError> {
    if values.is_empty() || values.len() > SWEEP_VALUES_MAX {
        return Err(SimError::Limit {
            what: "sweep values",
            value: values.len() as u64,
            max: SWEEP_VALUES_MAX as u64,
        });
    }
    let mut points = Vec::with_capacity(values.len());
    for value in values {
        let applied = param.apply(config, value)?;
        if progress {
            eprintln!("sim sweep: {} = {value}", param.title());
        }
        match simulate(&applied, input, threads, progress) {
            Ok(report) => points.push(SweepPoint {
                value: value.clone(),
                loss_probability_per_year: Some(report.loss_probability_per_year),
                nines: Some(report.nines),
                analytic: Some(report.analytic),
                error: None,
            }),
            Err(e @ SimError::Placement { .. }) => points.push(SweepPoint {
                value: value.clone(),
                loss_probability_per_year: None,
                nines: None,
                analytic: None,
                error: Some(e.to_string()),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(SweepResult { param, points })
}

impl SweepResult {
    /// Nines against the parameter: simulation with 95 % intervals, Markov model dashed.
    pub fn svg(&self, title: &str) -> String {
        let labels: Vec<String> = self.points.iter().map(|p| p.value.clone()).collect();
        let sim = Series {
            name: "simulation (95% CI)".into(),
            points: self
                .points
                .iter()
                .map(|p| p.nines.map(|n| Point { y: n.value, lo: n.lo, hi: n.hi }))
                .collect(),
            dashed: false,
        };
        let markov = Series {
            name: "Markov model".into(),
            points: self
                .points
                .iter()
                .map(|p| p.analytic.as_ref().map(|a| Point { y: a.nines, lo: f64::NAN, hi: f64::NAN }))
                .collect(),
            dashed: true,
        };
        line_chart(title, self.param.title(), "nines (-log10 P(loss) per year)", &labels, &[sim, markov])
    }

    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<16} {:>12} {:>26} {:>8} {:>14} {:>8}\n",
            self.param.title().split(' ').next().unwrap_or(""),
            "P(loss)/yr",
            "95% interval",
            "nines",
            "Markov P/yr",
            "nines"
        );
        for p in &self.points {
            match (&p.loss_probability_per_year, &p.nines, &p.analytic) {
                (Some(e), Some(n), Some(a)) => out.push_str(&format!(
                    "{:<16} {:>12.3e} {:>26} {:>8.2} {:>14.3e} {:>8.2}\n",
                    p.value,
                    e.value,
                    format!("[{:.2e}, {:.2e}]", e.lo, e.hi),
                    n.value,
                    a.loss_probability_per_year,
                    a.nines
                )),
                _ => out.push_str(&format!(
                    "{:<16} {}\n",
                    p.value,
                    p.error.as_deref().unwrap_or("not simulated")
                )),
            }
        }
        out
    }
}
