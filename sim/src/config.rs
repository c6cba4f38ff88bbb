//! The simulator's TOML configuration: a raw layer with serde defaults, then a validated
//! form with SI units (seconds, bytes, rates per second).
//!
//! Defaults, and where they come from:
//!
//! | key | default | source / reasoning |
//! |---|---|---|
//! | `failures.disk_afr` | 0.014 | Backblaze drive stats 2023-2024 report 1.4-1.7 % annualized failure rate for 12-16 TB drives |
//! | `failures.weibull_shape` | 1.0 | exponential lifetimes; < 1 models infant mortality, > 1 wear-out |
//! | `failures.disk_service_life_years` | 5 | disks retire (data migrated, no risk) at this age; Weibull scale is set so that the mean rate over a service life equals the AFR |
//! | `failures.lse_per_disk_per_year` | 0.05 | Bairavasundaram et al. (SIGMETRICS 2007) saw latent sector errors on a few percent of nearline disks per year |
//! | `failures.scrub_interval_secs` | 14 days | Magic Pocket scrubs every disk every 1-2 weeks |
//! | `failures.node_outage_per_year` | 2 | transient reboots and network blips; Ford et al. (OSDI 2010) report most node unavailability lasts under 15 min |
//! | `failures.node_outage_mean_secs` | 600 | exponential durations, so ~22 % of outages outlast a 15 min `down_after` |
//! | `failures.node_loss_per_year` | 0.005 | a machine whose disks are all gone (chassis, controller, fire); an assumption, not a published figure |
//! | `failures.zone_outage_per_year` | 0 | off by default; 1/year of 4 h is a pessimistic datacenter figure used in docs/durability.md |
//! | `failures.zone_outage_mean_secs` | 14 400 | 4 hours, exponential |
//! | `failures.disk_detect_secs` | 60 | a dead disk is reported by its volume server's next heartbeats |
//! | `failures.down_after_secs` | 900 | DESIGN.md section 6: a silent node is down after 15 min |
//! | `failures.zone_down_after_secs` | 86 400 | a whole zone is rebuilt elsewhere (where placement allows) only after a day: re-replicating a fifth of the cluster on a 15 min blip would do more harm than good |
//! | `repair.disk_bytes_per_sec` | 50 MB/s | throttled share of a ~250 MB/s nearline disk |
//! | `repair.node_bytes_per_sec` | 500 MB/s | 40 % of a 10 GbE link |
//! | `repair.cross_zone_bytes_per_sec` | 2.5 GB/s | 20 Gbit/s between zones for repair, cluster-wide |

use cellar_placement::Scheme;
use serde::Deserialize;

use crate::SimError;

/// Most threads one simulation may use.
pub const THREADS_MAX: usize = 256;

/// Seconds in a (Julian) year; every `_per_year` rate is converted with it.
pub const SECS_PER_YEAR: f64 = 365.25 * 86_400.0;

/// Most disks a simulated cluster may have (disk ids are `u32` inside the simulator).
pub const DISKS_MAX: u64 = 1 << 24;

/// Most volumes a simulated cluster may have (volume ids are `u32`; 4 GiB RSS budget).
pub const VOLUMES_MAX: u64 = 50_000_000;

/// Most Monte Carlo runs one invocation may ask for.
pub const RUNS_MAX: u64 = 100_000_000;

/// Most importance-sampling branches per initiating event.
pub const BRANCHES_MAX: u32 = 10_000;

/// The whole configuration file, as written (all sections optional).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Cluster shape and data layout.
    pub cluster: RawCluster,
    /// Failure processes.
    pub failures: RawFailures,
    /// Repair model and bandwidth.
    pub repair: RawRepair,
    /// Monte Carlo settings.
    pub simulation: RawSimulation,
}

/// `[cluster]`: zones, nodes, disks and the volumes on them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCluster {
    /// Failure domains.
    pub zones: u32,
    /// Volume servers in each zone.
    pub nodes_per_zone: u32,
    /// Disks on each volume server.
    pub disks_per_node: u32,
    /// Raw capacity of one disk.
    pub disk_capacity_bytes: u64,
    /// Fraction of raw capacity holding extents; sets the volume count unless `volumes` is given.
    pub fill_fraction: f64,
    /// Logical size of one volume (DESIGN.md: 1 GiB).
    pub volume_size_bytes: u64,
    /// Durability scheme of every volume: `r3`, `rs-6-3`, `rs-10-4`, ...
    pub scheme: String,
    /// Explicit volume count (overrides `fill_fraction`).
    pub volumes: Option<u64>,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            zones: 3,
            nodes_per_zone: 10,
            disks_per_node: 12,
            disk_capacity_bytes: 16_000_000_000_000,
            fill_fraction: 0.8,
            volume_size_bytes: 1 << 30,
            scheme: "rs-6-3".to_string(),
            volumes: None,
        }
    }
}

/// `[failures]`: rates, durations and detection delays.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFailures {
    /// Probability that a disk fails within a year (annualized failure rate).
    pub disk_afr: f64,
    /// Weibull shape of disk lifetimes (1 = exponential).
    pub weibull_shape: f64,
    /// Age at which disks are retired and replaced without risk.
    pub disk_service_life_years: f64,
    /// Latent sector errors (one corrupt extent each) per disk per year.
    pub lse_per_disk_per_year: f64,
    /// Every disk is scrubbed once per interval; a corrupt extent is found at the next pass.
    pub scrub_interval_secs: f64,
    /// Transient outages per node per year.
    pub node_outage_per_year: f64,
    /// Mean duration of a transient node outage (exponential).
    pub node_outage_mean_secs: f64,
    /// Permanent losses (all disks destroyed) per node per year.
    pub node_loss_per_year: f64,
    /// Whole-zone outages per zone per year.
    pub zone_outage_per_year: f64,
    /// Mean duration of a zone outage (exponential).
    pub zone_outage_mean_secs: f64,
    /// Delay before a failed disk on a live node is known to the master.
    pub disk_detect_secs: f64,
    /// Delay before a silent node is declared down and its extents rebuilt.
    pub down_after_secs: f64,
    /// Delay before the extents of a downed zone are rebuilt elsewhere.
    pub zone_down_after_secs: f64,
}

impl Default for RawFailures {
    fn default() -> Self {
        RawFailures {
            disk_afr: 0.014,
            weibull_shape: 1.0,
            disk_service_life_years: 5.0,
            lse_per_disk_per_year: 0.05,
            scrub_interval_secs: 14.0 * 86_400.0,
            node_outage_per_year: 2.0,
            node_outage_mean_secs: 600.0,
            node_loss_per_year: 0.005,
            zone_outage_per_year: 0.0,
            zone_outage_mean_secs: 4.0 * 3600.0,
            disk_detect_secs: 60.0,
            down_after_secs: 900.0,
            zone_down_after_secs: 86_400.0,
        }
    }
}

/// `[repair]`: how fast lost extents are rebuilt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRepair {
    /// `bandwidth` (the planner's queue, limited by disks, nodes and cross-zone links) or
    /// `exponential` (each failed disk restored after an independent exponential time; the
    /// textbook Markov assumption, used for validation).
    pub model: String,
    /// Repair I/O each disk gives (reads plus writes).
    pub disk_bytes_per_sec: f64,
    /// Repair network each node gives.
    pub node_bytes_per_sec: f64,
    /// Repair traffic between zones, cluster-wide.
    pub cross_zone_bytes_per_sec: f64,
    /// Mean restore time of a failed disk in the `exponential` model.
    pub exponential_mean_secs: f64,
}

impl Default for RawRepair {
    fn default() -> Self {
        RawRepair {
            model: "bandwidth".to_string(),
            disk_bytes_per_sec: 50e6,
            node_bytes_per_sec: 500e6,
            cross_zone_bytes_per_sec: 2.5e9,
            exponential_mean_secs: 86_400.0,
        }
    }
}

/// `[simulation]`: Monte Carlo settings (the CLI flags override them).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulation {
    /// Simulated years per run.
    pub years: f64,
    /// Independent runs.
    pub runs: u64,
    /// Master seed; run i uses a seed derived from it and i.
    pub seed: u64,
    /// `importance` (failure-biased branches from every initiating event) or `plain`.
    pub method: String,
    /// Importance-sampling branches per initiating event.
    pub branches: u32,
    /// Bias strength: in a degraded state the boosted failure process has this many
    /// expected events before the degradation is repaired (1.0 gives each step a 63 %
    /// chance of one more failure).
    pub bias: f64,
    /// A branch that has not healed after this long is cut off (its tail is counted as
    /// truncated in the report).
    pub branch_max_days: f64,
}

impl Default for RawSimulation {
    fn default() -> Self {
        RawSimulation {
            years: 10.0,
            runs: 200,
            seed: 1,
            method: "importance".to_string(),
            branches: 8,
            bias: 1.0,
            branch_max_days: 60.0,
        }
    }
}

/// How repairs take time.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairModel {
    /// The planner's most-at-risk-first queue, served at the cluster's repair bandwidth.
    Bandwidth,
    /// Each failed disk restored after an independent exponential time with this mean.
    Exponential {
        /// Mean restore time.
        mean_secs: f64,
    },
}

/// How the probability of loss is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Count losses in plainly simulated histories.
    Plain,
    /// Failure-biased branches from every initiating event, with likelihood ratios.
    Importance,
}

/// Validated cluster shape.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClusterShape {
    /// Failure domains.
    pub zones: u32,
    /// Nodes per zone.
    pub nodes_per_zone: u32,
    /// Disks per node.
    pub disks_per_node: u32,
    /// Capacity of one disk.
    pub disk_capacity_bytes: u64,
    /// Logical size of a volume.
    pub volume_size_bytes: u64,
    /// Scheme of every volume.
    #[serde(serialize_with = "serialize_scheme")]
    pub scheme: Scheme,
    /// Number of volumes to place.
    pub volumes: u64,
}

fn serialize_scheme<S: serde::Serializer>(scheme: &Scheme, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&scheme.to_string())
}

/// Validated failure processes, in seconds and per-second rates.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Failures {
    /// Annualized failure rate as configured.
    pub disk_afr: f64,
    /// Weibull shape.
    pub weibull_shape: f64,
    /// Retirement age.
    pub disk_service_life_secs: f64,
    /// Latent sector errors per disk per second.
    pub lse_per_disk_per_sec: f64,
    /// Scrub interval.
    pub scrub_interval_secs: f64,
    /// Node outages per node per second.
    pub node_outage_per_sec: f64,
    /// Mean node outage.
    pub node_outage_mean_secs: f64,
    /// Node losses per node per second.
    pub node_loss_per_sec: f64,
    /// Zone outages per zone per second.
    pub zone_outage_per_sec: f64,
    /// Mean zone outage.
    pub zone_outage_mean_secs: f64,
    /// Disk failure detection delay.
    pub disk_detect_secs: f64,
    /// Node down delay.
    pub down_after_secs: f64,
    /// Zone down delay.
    pub zone_down_after_secs: f64,
}

impl Failures {
    /// Constant-hazard equivalent of the AFR: `-ln(1 - afr)` per year, in per second.
    pub fn disk_rate_per_sec(&self) -> f64 {
        -(1.0 - self.disk_afr).ln() / SECS_PER_YEAR
    }
}

/// Validated repair bandwidths.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Repair {
    /// Time model.
    pub model: RepairModel,
    /// Per-disk repair I/O.
    pub disk_bytes_per_sec: f64,
    /// Per-node repair network.
    pub node_bytes_per_sec: f64,
    /// Cluster-wide cross-zone repair traffic.
    pub cross_zone_bytes_per_sec: f64,
}

/// Validated Monte Carlo settings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Simulation {
    /// Simulated years per run.
    pub years: f64,
    /// Runs.
    pub runs: u64,
    /// Master seed.
    pub seed: u64,
    /// Estimator.
    pub method: Method,
    /// Branches per initiating event.
    pub branches: u32,
    /// Bias strength.
    pub bias: f64,
    /// Branch cut-off.
    pub branch_max_secs: f64,
}

/// A configuration the simulator can run.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SimConfig {
    /// Shape of the generated cluster (ignored when a live cluster is given).
    pub cluster: ClusterShape,
    /// Failure processes.
    pub failures: Failures,
    /// Repair.
    pub repair: Repair,
    /// Monte Carlo settings.
    pub simulation: Simulation,
}

impl SimConfig {
    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SimError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| SimError::ConfigSyntax(e.to_string()))?;
        raw.validate()
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        // The defaults are valid by construction; the test below proves it.
        match RawConfig::default().validate() {
            Ok(config) => config,
            Err(e) => panic!("built-in defaults are invalid: {e}"),
        }
    }
}

fn check(ok: bool, field: &'static str, reason: impl FnOnce() -> String) -> Result<(), SimError> {
    if ok { Ok(()) } else { Err(SimError::ConfigValue { field, reason: reason() }) }
}

fn non_negative(value: f64, field: &'static str) -> Result<f64, SimError> {
    check(value.is_finite() && value >= 0.0, field, || format!("must be a finite number >= 0, got {value}"))?;
    Ok(value)
}

fn positive(value: f64, field: &'static str) -> Result<f64, SimError> {
    check(value.is_finite() && value > 0.0, field, || format!("must be a finite number > 0, got {value}"))?;
    Ok(value)
}

impl RawConfig {
    /// Checks every range and converts to seconds and per-second rates.
    pub fn validate(&self) -> Result<SimConfig, SimError> {
        let c = &self.cluster;
        check(c.zones >= 1, "cluster.zones", || "must be at least 1".into())?;
        check(c.nodes_per_zone >= 1, "cluster.nodes_per_zone", || "must be at least 1".into())?;
        check(c.disks_per_node >= 1, "cluster.disks_per_node", || "must be at least 1".into())?;
        let disks = u64::from(c.zones) * u64::from(c.nodes_per_zone) * u64::from(c.disks_per_node);
        if disks > DISKS_MAX {
            return Err(SimError::Limit { what: "disk count", value: disks, max: DISKS_MAX });
        }
        check(c.disk_capacity_bytes > 0, "cluster.disk_capacity_bytes", || "must be > 0".into())?;
        check(c.volume_size_bytes > 0, "cluster.volume_size_bytes", || "must be > 0".into())?;
        check(c.fill_fraction > 0.0 && c.fill_fraction <= 1.0, "cluster.fill_fraction", || {
            format!("must be in (0, 1], got {}", c.fill_fraction)
        })?;
        let scheme: Scheme = c.scheme.parse().map_err(|e: cellar_placement::PlacementError| {
            SimError::ConfigValue { field: "cluster.scheme", reason: e.to_string() }
        })?;
        let stored_per_volume = stored_bytes(scheme, c.volume_size_bytes);
        let volumes = match c.volumes {
            Some(v) => v,
            None => {
                let raw_bytes = disks as f64 * c.disk_capacity_bytes as f64;
                (raw_bytes * c.fill_fraction / stored_per_volume as f64).floor() as u64
            }
        };
        check(volumes >= 1, "cluster.volumes", || "the cluster must hold at least one volume".into())?;
        if volumes > VOLUMES_MAX {
            return Err(SimError::Limit { what: "volume count", value: volumes, max: VOLUMES_MAX });
        }

        let f = &self.failures;
        check(f.disk_afr >= 0.0 && f.disk_afr < 1.0, "failures.disk_afr", || {
            format!("must be in [0, 1), got {}", f.disk_afr)
        })?;
        check(
            f.weibull_shape.is_finite() && (0.2..=10.0).contains(&f.weibull_shape),
            "failures.weibull_shape",
            || format!("must be in [0.2, 10], got {}", f.weibull_shape),
        )?;
        let failures = Failures {
            disk_afr: f.disk_afr,
            weibull_shape: f.weibull_shape,
            disk_service_life_secs: positive(f.disk_service_life_years, "failures.disk_service_life_years")?
                * SECS_PER_YEAR,
            lse_per_disk_per_sec: non_negative(f.lse_per_disk_per_year, "failures.lse_per_disk_per_year")?
                / SECS_PER_YEAR,
            scrub_interval_secs: positive(f.scrub_interval_secs, "failures.scrub_interval_secs")?,
            node_outage_per_sec: non_negative(f.node_outage_per_year, "failures.node_outage_per_year")?
                / SECS_PER_YEAR,
            node_outage_mean_secs: positive(f.node_outage_mean_secs, "failures.node_outage_mean_secs")?,
            node_loss_per_sec: non_negative(f.node_loss_per_year, "failures.node_loss_per_year")?
                / SECS_PER_YEAR,
            zone_outage_per_sec: non_negative(f.zone_outage_per_year, "failures.zone_outage_per_year")?
                / SECS_PER_YEAR,
            zone_outage_mean_secs: positive(f.zone_outage_mean_secs, "failures.zone_outage_mean_secs")?,
            disk_detect_secs: non_negative(f.disk_detect_secs, "failures.disk_detect_secs")?,
            down_after_secs: non_negative(f.down_after_secs, "failures.down_after_secs")?,
            zone_down_after_secs: non_negative(f.zone_down_after_secs, "failures.zone_down_after_secs")?,
        };

        let r = &self.repair;
        let model = match r.model.as_str() {
            "bandwidth" => RepairModel::Bandwidth,
            "exponential" => RepairModel::Exponential {
                mean_secs: positive(r.exponential_mean_secs, "repair.exponential_mean_secs")?,
            },
            other => {
                return Err(SimError::ConfigValue {
                    field: "repair.model",
                    reason: format!("expected \"bandwidth\" or \"exponential\", got {other:?}"),
                });
            }
        };
        let repair = Repair {
            model,
            disk_bytes_per_sec: positive(r.disk_bytes_per_sec, "repair.disk_bytes_per_sec")?,
            node_bytes_per_sec: positive(r.node_bytes_per_sec, "repair.node_bytes_per_sec")?,
            cross_zone_bytes_per_sec: positive(
                r.cross_zone_bytes_per_sec,
                "repair.cross_zone_bytes_per_sec",
            )?,
        };

        let s = &self.simulation;
        let method = match s.method.as_str() {
            "plain" => Method::Plain,
            "importance" => Method::Importance,
            other => {
                return Err(SimError::ConfigValue {
                    field: "simulation.method",
                    reason: format!("expected \"plain\" or \"importance\", got {other:?}"),
                });
            }
        };
        check(s.runs >= 1 && s.runs <= RUNS_MAX, "simulation.runs", || format!("must be in 1..={RUNS_MAX}"))?;
        check(s.branches >= 1 && s.branches <= BRANCHES_MAX, "simulation.branches", || {
            format!("must be in 1..={BRANCHES_MAX}")
        })?;
        let simulation = Simulation {
            years: positive(s.years, "simulation.years")?,
            runs: s.runs,
            seed: s.seed,
            method,
            branches: s.branches,
            bias: positive(s.bias, "simulation.bias")?,
            branch_max_secs: positive(s.branch_max_days, "simulation.branch_max_days")? * 86_400.0,
        };

        Ok(SimConfig {
            cluster: ClusterShape {
                zones: c.zones,
                nodes_per_zone: c.nodes_per_zone,
                disks_per_node: c.disks_per_node,
                disk_capacity_bytes: c.disk_capacity_bytes,
                volume_size_bytes: c.volume_size_bytes,
                scheme,
                volumes,
            },
            failures,
            repair,
            simulation,
        })
    }
}

/// Data fragments a read or a rebuild needs (k): 1 for replicas.
pub fn data_extents(scheme: Scheme) -> usize {
    match scheme {
        Scheme::Replicated { .. } => 1,
        Scheme::ReedSolomon { data, .. } => usize::from(data),
    }
}

/// Size of one extent of a volume of `volume_bytes`: the whole volume for a replica, a
/// 1/k share (rounded up) for a fragment.
pub fn extent_bytes(scheme: Scheme, volume_bytes: u64) -> u64 {
    volume_bytes.div_ceil(data_extents(scheme) as u64)
}

/// Raw bytes a volume occupies over all its extents.
pub fn stored_bytes(scheme: Scheme, volume_bytes: u64) -> u64 {
    extent_bytes(scheme, volume_bytes) * scheme.extent_count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fill_sets_the_volume_count() {
        let config = SimConfig::default();
        assert_eq!(config.cluster.scheme, Scheme::ReedSolomon { data: 6, parity: 3 });
        // 360 disks x 16 TB x 0.8 / (9 x ceil(1 GiB / 6)).
        let expected = (360.0 * 16e12 * 0.8 / (9.0 * (1u64 << 30).div_ceil(6) as f64)).floor() as u64;
        assert_eq!(config.cluster.volumes, expected);
        assert!((config.failures.disk_rate_per_sec() * SECS_PER_YEAR - 0.014_099).abs() < 1e-5);
    }

    #[test]
    fn a_scheme_the_coder_cannot_run_is_refused_at_load() {
        for scheme in ["rs-4-0", "rs-0-3", "rs-30-3", "r0"] {
            let err = SimConfig::from_toml(&format!("[cluster]\nscheme = \"{scheme}\"\n")).expect_err(scheme);
            let text = err.to_string();
            assert!(text.contains("cluster.scheme") && text.contains(scheme), "{scheme}: {text}");
        }
        assert!(SimConfig::from_toml("[cluster]\nscheme = \"r3\"\n").is_ok());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = SimConfig::from_toml("[failures]\ndisk_arf = 0.02\n").expect_err("typo");
        assert!(err.to_string().contains("disk_arf"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let err = SimConfig::from_toml("[failures]\ndisk_afr = 1.5\n").expect_err("afr");
        assert!(err.to_string().contains("failures.disk_afr"), "{err}");
        let err = SimConfig::from_toml("[cluster]\nscheme = \"rs-6\"\n").expect_err("scheme");
        assert!(err.to_string().contains("cluster.scheme"), "{err}");
        let err = SimConfig::from_toml("[repair]\nmodel = \"magic\"\n").expect_err("model");
        assert!(err.to_string().contains("repair.model"), "{err}");
    }

    #[test]
    fn extent_sizes_follow_the_scheme() {
        let rs = Scheme::ReedSolomon { data: 6, parity: 3 };
        assert_eq!(extent_bytes(rs, 600), 100);
        assert_eq!(stored_bytes(rs, 600), 900);
        assert_eq!(extent_bytes(Scheme::Replicated { copies: 3 }, 600), 600);
        assert_eq!(stored_bytes(Scheme::Replicated { copies: 3 }, 600), 1800);
    }
}
