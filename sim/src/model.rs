//! Everything a run needs that does not change during it: the layout, the validated
//! parameters, the repair throughput and the lifetime distribution.

use crate::cluster::{Layout, RepairRate};
use crate::config::{Failures, RepairModel, SimConfig};
use crate::lifetime::Lifetime;

/// The immutable input of every run, shared by all threads.
#[derive(Debug)]
pub struct Model {
    /// Cluster layout.
    pub layout: Layout,
    /// Failure parameters.
    pub failures: Failures,
    /// Repair time model.
    pub repair_model: RepairModel,
    /// Repair throughput of the whole cluster.
    pub repair_rate: RepairRate,
    /// Disk lifetimes.
    pub lifetime: Lifetime,
    /// Simulated seconds per run.
    pub horizon_secs: f64,
    /// Per zone: whether placement can rebuild the zone's extents elsewhere while it is
    /// down (asked of `place_replacement` for a volume with an extent there).
    pub zone_rebuildable: Vec<bool>,
    /// Smallest loss tolerance (n - k) over the schemes in use.
    pub tolerance_min: u8,
}

impl Model {
    /// Prepares a layout and a configuration for simulation.
    pub fn new(layout: Layout, config: &SimConfig) -> Model {
        let repair_rate = layout.repair_rate(&config.repair);
        let zone_rebuildable = (0..layout.zones.len() as u32)
            .map(|zone| {
                // Any volume with an extent in the zone stands for all (one scheme in
                // generated clusters; the first match for live ones).
                let found = (0..layout.volume_count() as u32).find_map(|v| {
                    layout.slots(v).iter().position(|&d| layout.disk_zone[d as usize] == zone).map(|s| (v, s))
                });
                match found {
                    Some((v, slot)) => layout.repair_targets_exist(v, slot, Some(zone)),
                    None => false,
                }
            })
            .collect();
        let tolerance_min = layout.schemes.iter().map(|s| s.tolerance()).min().unwrap_or(0);
        Model {
            failures: config.failures.clone(),
            repair_model: config.repair.model,
            repair_rate,
            lifetime: Lifetime::new(&config.failures),
            horizon_secs: config.simulation.years * crate::config::SECS_PER_YEAR,
            zone_rebuildable,
            tolerance_min,
            layout,
        }
    }
}
