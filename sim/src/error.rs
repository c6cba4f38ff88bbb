//! What can go wrong before a simulation starts.

use cellar_placement::PlacementError;

/// A configuration or cluster description the simulator cannot run.
///
/// Every variant is an operating error (bad input), never a programmer error: the message
/// names the field or the volume at fault.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The TOML text does not parse, or names a key the simulator does not know.
    #[error("config: {0}")]
    ConfigSyntax(String),
    /// A configuration value is out of range.
    #[error("config: {field}: {reason}")]
    ConfigValue {
        /// Dotted path of the offending key, e.g. `failures.disk_afr`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The real placement module cannot place the configured volumes.
    #[error("placement of volume {volume} failed: {source}")]
    Placement {
        /// Index of the volume being placed.
        volume: u64,
        /// Why placement refused.
        #[source]
        source: PlacementError,
    },
    /// A cluster description (from a live cluster) is inconsistent.
    #[error("cluster input: {0}")]
    ClusterInput(String),
    /// The cluster is larger than the simulator's explicit limits.
    #[error("limit exceeded: {what} is {value}, at most {max} supported")]
    Limit {
        /// Which quantity.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The limit.
        max: u64,
    },
}
