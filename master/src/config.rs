//! A master's configuration, in the two layers the style asks for: raw (TOML/flags, all
//! optional, unknown keys refused) and validated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The validated configuration of one master.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// This member's Raft id (never reused after removal).
    pub id: u64,
    /// Address to listen on for Raft and the client API.
    pub listen: String,
    /// Address peers and clients use to reach this master (defaults to `listen`).
    pub advertise: String,
    /// Where the RocksDB store and snapshots live.
    pub data_dir: PathBuf,
    /// Every member: id -> address.
    pub peers: BTreeMap<u64, String>,
    /// Form the group from `peers` if it does not exist yet.
    pub init: bool,
    /// Shared secret required on every call between cellar processes (none: open).
    pub secret: Option<String>,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Raft election timeout lower bound (upper bound is twice it).
    pub election_timeout_ms: u64,
    /// Take a snapshot after this many applied entries at least (past a 64 MiB snapshot,
    /// also only once the log since is a quarter of its size: `crate::snapshot_policy`).
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot for lagging followers.
    pub log_kept_after_snapshot: u64,
    /// Size at which a volume is full (`volume_size_bytes`).
    pub volume_size_bytes: u64,
    /// Largest block payload the cell takes (`block_size_max_bytes`); volume servers and
    /// frontends without their own limit take it from the cluster map.
    pub block_size_max_bytes: u64,
    /// Replicas of an open volume.
    pub replicas: u8,
    /// Scheme volumes are coded with (validated when the configuration is read).
    pub scheme: cellar_erasure::Scheme,
    /// Write lease duration.
    pub lease_ms: u64,
    /// Time between planner passes.
    pub planner_interval_ms: u64,
    /// An open volume whose lease expired this long ago is sealed by the planner.
    pub abandoned_after_ms: u64,
    /// A volume server not heard from (no heartbeat) for this long gets no new replicas
    /// or fragments; what it holds is left alone.
    pub node_silent_after_ms: u64,
    /// A volume server not heard from for this long is marked down and everything it
    /// holds is rebuilt elsewhere (DESIGN section 6); a heartbeat brings it back up.
    pub down_after_ms: u64,
    /// Repair tasks (reconstructs, copies) queued or running at once, cell-wide.
    pub repair_tasks_max: u64,
    /// Bytes of extents rebuilt per second by repair, cell-wide; 0 for no limit.
    pub repair_bytes_per_sec: u64,
    /// Time between the leader's metadata scans (index entries against volumes, volume
    /// records against the extents on the volume servers); 0 turns the scanner off.
    pub metadata_scan_interval_ms: u64,
    /// Extents the metadata scanner asks the volume servers about per second at most.
    pub metadata_scan_extents_per_sec: u64,
    /// Time between the leader's compaction passes (space reclaim); 0 turns it off.
    pub compaction_interval_ms: u64,
    /// How long a volume must have held no referenced block before it is reclaimed (an
    /// upload's blocks are unreferenced until its version commits, seconds later).
    pub compaction_grace_ms: u64,
    /// Volumes reclaimed per pass at most (the throttle, as repair's task limit).
    pub compaction_volumes_per_pass: u64,
    /// A volume whose live fraction is under this is a rewrite candidate (shown in
    /// `cellar admin status`).
    pub compaction_live_fraction_min: f64,
    /// Time between the leader's lifecycle passes (bucket lifecycle rules); 0 turns
    /// expiry off.
    pub lifecycle_interval_ms: u64,
    /// Length of a lifecycle rule's day (86,400,000; shorter only for tests).
    pub lifecycle_day_ms: u64,
    /// Keys and uploads expired per lifecycle pass at most.
    pub lifecycle_keys_per_pass: u64,
    /// The highest apply version this master offers the cell (its build's,
    /// [`crate::apply_version::APPLY_VERSION_MAX`], by default): an operator holds a cell
    /// at the older behaviour with a lower one on any master, until a rollback of the
    /// binaries is no longer wanted (docs/ARCHITECTURE.md, "Upgrading a cell").
    pub apply_version_max: u32,
    /// Other members of the group running in this process (`cellar dev`): Raft messages
    /// to them are handed over directly instead of over gRPC.
    pub local_group: Option<crate::network::LocalGroup>,
}

/// Default largest block payload: 4 MiB.
pub const BLOCK_SIZE_MAX_BYTES_DEFAULT: u64 = 4 << 20;
/// Largest block payload a cell may be configured for (an append of it must fit the
/// volume API's messages).
pub const BLOCK_SIZE_LIMIT_BYTES: u64 = 8 << 20;
/// Bytes a block's record takes on a replica beyond its payload (the record header).
pub const BLOCK_RECORD_OVERHEAD_BYTES: u64 = 64;

/// Raw settings as read from a TOML file; every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMasterConfig {
    /// See [`MasterConfig::secret`].
    pub secret: Option<String>,
    /// See [`MasterConfig::heartbeat_ms`].
    pub heartbeat_ms: Option<u64>,
    /// See [`MasterConfig::election_timeout_ms`].
    pub election_timeout_ms: Option<u64>,
    /// See [`MasterConfig::snapshot_after_entries`].
    pub snapshot_after_entries: Option<u64>,
    /// See [`MasterConfig::log_kept_after_snapshot`].
    pub log_kept_after_snapshot: Option<u64>,
    /// See [`MasterConfig::volume_size_bytes`].
    pub volume_size_bytes: Option<u64>,
    /// See [`MasterConfig::block_size_max_bytes`].
    pub block_size_max_bytes: Option<u64>,
    /// See [`MasterConfig::replicas`].
    pub replicas: Option<u8>,
    /// See [`MasterConfig::scheme`]: `rs-<data>-<parity>`, refused when the file is read
    /// if the erasure crate cannot run it (`rs-4-0`, `rs-0-3`, more than 32 fragments).
    #[serde(default, deserialize_with = "deserialize_scheme")]
    pub scheme: Option<cellar_erasure::Scheme>,
    /// See [`MasterConfig::lease_ms`].
    pub lease_ms: Option<u64>,
    /// See [`MasterConfig::planner_interval_ms`].
    pub planner_interval_ms: Option<u64>,
    /// See [`MasterConfig::abandoned_after_ms`].
    pub abandoned_after_ms: Option<u64>,
    /// See [`MasterConfig::node_silent_after_ms`].
    pub node_silent_after_ms: Option<u64>,
    /// See [`MasterConfig::down_after_ms`].
    pub down_after_ms: Option<u64>,
    /// See [`MasterConfig::repair_tasks_max`].
    pub repair_tasks_max: Option<u64>,
    /// See [`MasterConfig::repair_bytes_per_sec`].
    pub repair_bytes_per_sec: Option<u64>,
    /// See [`MasterConfig::metadata_scan_interval_ms`].
    pub metadata_scan_interval_ms: Option<u64>,
    /// See [`MasterConfig::metadata_scan_extents_per_sec`].
    pub metadata_scan_extents_per_sec: Option<u64>,
    /// See [`MasterConfig::compaction_interval_ms`].
    pub compaction_interval_ms: Option<u64>,
    /// See [`MasterConfig::compaction_grace_ms`].
    pub compaction_grace_ms: Option<u64>,
    /// See [`MasterConfig::compaction_volumes_per_pass`].
    pub compaction_volumes_per_pass: Option<u64>,
    /// See [`MasterConfig::compaction_live_fraction_min`].
    pub compaction_live_fraction_min: Option<f64>,
    /// See [`MasterConfig::lifecycle_interval_ms`].
    pub lifecycle_interval_ms: Option<u64>,
    /// See [`MasterConfig::lifecycle_day_ms`].
    pub lifecycle_day_ms: Option<u64>,
    /// See [`MasterConfig::lifecycle_keys_per_pass`].
    pub lifecycle_keys_per_pass: Option<u64>,
    /// See [`MasterConfig::apply_version_max`].
    pub apply_version_max: Option<u32>,
}

/// Parses and validates a scheme where the configuration file names it.
fn deserialize_scheme<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<cellar_erasure::Scheme>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse()
        .map(Some)
        .map_err(|e: cellar_erasure::SchemeError| serde::de::Error::custom(format!("scheme {text:?}: {e}")))
}

impl MasterConfig {
    /// Defaults for everything but identity and addresses.
    pub fn new(id: u64, listen: String, data_dir: PathBuf, peers: BTreeMap<u64, String>) -> MasterConfig {
        MasterConfig {
            id,
            advertise: listen.clone(),
            listen,
            data_dir,
            peers,
            init: false,
            secret: None,
            heartbeat_ms: 100,
            election_timeout_ms: 600,
            snapshot_after_entries: 10_000,
            log_kept_after_snapshot: 1_000,
            volume_size_bytes: 1 << 30,
            block_size_max_bytes: BLOCK_SIZE_MAX_BYTES_DEFAULT,
            replicas: 3,
            scheme: cellar_erasure::Scheme::RS_6_3,
            lease_ms: 30_000,
            planner_interval_ms: 1_000,
            abandoned_after_ms: 30_000,
            node_silent_after_ms: 10_000,
            down_after_ms: 15 * 60 * 1000,
            repair_tasks_max: 32,
            repair_bytes_per_sec: 200_000_000,
            metadata_scan_interval_ms: 6 * 3600 * 1000,
            metadata_scan_extents_per_sec: 1000,
            compaction_interval_ms: 60_000,
            compaction_grace_ms: 10 * 60 * 1000,
            compaction_volumes_per_pass: 16,
            compaction_live_fraction_min: 0.5,
            lifecycle_interval_ms: 10 * 60 * 1000,
            lifecycle_day_ms: 24 * 60 * 60 * 1000,
            lifecycle_keys_per_pass: 100_000,
            apply_version_max: crate::apply_version::APPLY_VERSION_MAX,
            local_group: None,
        }
    }

    /// Applies a raw layer on top.
    pub fn with_raw(mut self, raw: RawMasterConfig) -> MasterConfig {
        self.secret = raw.secret.or(self.secret);
        self.heartbeat_ms = raw.heartbeat_ms.unwrap_or(self.heartbeat_ms);
        self.election_timeout_ms = raw.election_timeout_ms.unwrap_or(self.election_timeout_ms);
        self.snapshot_after_entries = raw.snapshot_after_entries.unwrap_or(self.snapshot_after_entries);
        self.log_kept_after_snapshot = raw.log_kept_after_snapshot.unwrap_or(self.log_kept_after_snapshot);
        self.volume_size_bytes = raw.volume_size_bytes.unwrap_or(self.volume_size_bytes);
        self.block_size_max_bytes = raw.block_size_max_bytes.unwrap_or(self.block_size_max_bytes);
        self.replicas = raw.replicas.unwrap_or(self.replicas);
        self.scheme = raw.scheme.unwrap_or(self.scheme);
        self.lease_ms = raw.lease_ms.unwrap_or(self.lease_ms);
        self.planner_interval_ms = raw.planner_interval_ms.unwrap_or(self.planner_interval_ms);
        self.abandoned_after_ms = raw.abandoned_after_ms.unwrap_or(self.abandoned_after_ms);
        self.node_silent_after_ms = raw.node_silent_after_ms.unwrap_or(self.node_silent_after_ms);
        self.down_after_ms = raw.down_after_ms.unwrap_or(self.down_after_ms);
        self.repair_tasks_max = raw.repair_tasks_max.unwrap_or(self.repair_tasks_max);
        self.repair_bytes_per_sec = raw.repair_bytes_per_sec.unwrap_or(self.repair_bytes_per_sec);
        self.metadata_scan_interval_ms =
            raw.metadata_scan_interval_ms.unwrap_or(self.metadata_scan_interval_ms);
        self.metadata_scan_extents_per_sec =
            raw.metadata_scan_extents_per_sec.unwrap_or(self.metadata_scan_extents_per_sec);
        self.compaction_interval_ms = raw.compaction_interval_ms.unwrap_or(self.compaction_interval_ms);
        self.compaction_grace_ms = raw.compaction_grace_ms.unwrap_or(self.compaction_grace_ms);
        self.compaction_volumes_per_pass =
            raw.compaction_volumes_per_pass.unwrap_or(self.compaction_volumes_per_pass);
        self.compaction_live_fraction_min =
            raw.compaction_live_fraction_min.unwrap_or(self.compaction_live_fraction_min);
        self.lifecycle_interval_ms = raw.lifecycle_interval_ms.unwrap_or(self.lifecycle_interval_ms);
        self.lifecycle_day_ms = raw.lifecycle_day_ms.unwrap_or(self.lifecycle_day_ms);
        self.lifecycle_keys_per_pass = raw.lifecycle_keys_per_pass.unwrap_or(self.lifecycle_keys_per_pass);
        self.apply_version_max = raw.apply_version_max.unwrap_or(self.apply_version_max);
        self
    }

    /// Checks the settings; the error names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.id) {
            return Err(format!("--peers must include this master's id {}", self.id));
        }
        if self.heartbeat_ms == 0 || self.election_timeout_ms <= self.heartbeat_ms * 2 {
            return Err("election_timeout_ms must exceed twice heartbeat_ms".into());
        }
        self.scheme.validate().map_err(|e| format!("scheme {}: {e}", self.scheme))?;
        if self.lifecycle_day_ms == 0 {
            return Err("lifecycle_day_ms must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.compaction_live_fraction_min) {
            return Err("compaction_live_fraction_min must be between 0 and 1".into());
        }
        if self.replicas == 0 {
            return Err("replicas must be at least 1".into());
        }
        if self.volume_size_bytes < 1 << 20 {
            return Err("volume_size_bytes must be at least 1 MiB".into());
        }
        if self.block_size_max_bytes == 0 || self.block_size_max_bytes > BLOCK_SIZE_LIMIT_BYTES {
            return Err(format!("block_size_max_bytes must be in 1..={BLOCK_SIZE_LIMIT_BYTES}"));
        }
        if self.block_size_max_bytes + BLOCK_RECORD_OVERHEAD_BYTES > self.volume_size_bytes {
            return Err("volume_size_bytes must hold at least one largest block".into());
        }
        if self.lease_ms < 1000 {
            return Err("lease_ms must be at least 1000".into());
        }
        if self.node_silent_after_ms < 1000 {
            return Err(
                "node_silent_after_ms must be at least 1000 (volume servers heartbeat every second)".into()
            );
        }
        if self.down_after_ms < self.node_silent_after_ms {
            return Err("down_after_ms must be at least node_silent_after_ms".into());
        }
        if self.repair_tasks_max == 0 {
            return Err("repair_tasks_max must be at least 1".into());
        }
        if self.planner_interval_ms < 10 {
            return Err("planner_interval_ms must be at least 10".into());
        }
        use crate::apply_version::{APPLY_VERSION_FIRST, APPLY_VERSION_MAX};
        if !(APPLY_VERSION_FIRST..=APPLY_VERSION_MAX).contains(&self.apply_version_max) {
            return Err(format!(
                "apply_version_max must be in {APPLY_VERSION_FIRST}..={APPLY_VERSION_MAX} (the apply versions this \
                 build knows), not {}",
                self.apply_version_max
            ));
        }
        Ok(())
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('=').ok_or_else(|| format!("peer {part:?} is not ID=ADDR"))?;
        let id: u64 = id.trim().parse().map_err(|_| format!("peer id {id:?} is not a number"))?;
        if id == 0 {
            return Err("peer ids start at 1".into());
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            return Err(format!("peer id {id} given twice"));
        }
    }
    if peers.is_empty() {
        return Err("--peers is empty".into());
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheme_the_coder_cannot_run_is_refused_when_the_config_is_read() {
        for text in ["rs-4-0", "rs-0-3", "rs-30-3", "r3", "rs-6"] {
            let raw = format!(r#"{{"scheme": "{text}"}}"#);
            let err = serde_json::from_str::<RawMasterConfig>(&raw).expect_err(text).to_string();
            assert!(err.contains(text), "{text}: {err}");
        }
        let raw: RawMasterConfig = serde_json::from_str(r#"{"scheme": "rs-10-4"}"#).expect("valid");
        assert_eq!(raw.scheme, Some(cellar_erasure::Scheme::RS_10_4));
    }

    #[test]
    fn validate_refuses_a_scheme_built_out_of_range() {
        let mut config = MasterConfig::new(
            1,
            "127.0.0.1:0".into(),
            PathBuf::from("/tmp"),
            BTreeMap::from([(1, "a".into())]),
        );
        assert_eq!(config.validate(), Ok(()));
        config.scheme = cellar_erasure::Scheme { data: 4, parity: 0 };
        let err = config.validate().expect_err("rs-4-0");
        assert!(err.contains("rs-4-0"), "{err}");
    }
}
