//! The leader's planner loop. Today: sealing open volumes whose writer went away (lease
//! expired for longer than a grace period), which also queues their encode. Full volumes
//! are sealed by their writer; the repair, GC and rebalance planners join this loop later.
//!
//! Every master runs the loop; only the current leader acts, and every action is a Raft
//! command that re-checks its preconditions when applied, so a planner on a deposed
//! leader changes nothing.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::apply::{PREFIX_DISK, PREFIX_NODE, PREFIX_VOLUME};
use crate::command::{Command, Response};
use crate::store::sm::StateReader;
use crate::types::{DiskRecord, NodeRecord, VolumeRecord, VolumeState};
use crate::{MasterRaft, now_unix_ms};

/// Volumes one pass seals at most (the rest wait for the next pass).
pub const SEALS_PER_PASS_MAX: usize = 64;

/// Planner settings.
#[derive(Debug, Clone, Copy)]
pub struct PlannerSettings {
    /// Time between passes.
    pub interval: Duration,
    /// How long after its lease expired an open volume is sealed.
    pub abandoned_after: Duration,
    /// See [`crate::config::MasterConfig::node_silent_after_ms`].
    pub node_silent_after: Duration,
}

fn decode_all<T: serde::de::DeserializeOwned>(reader: &StateReader, prefix: u8) -> Vec<T> {
    match reader.scan_prefix(prefix) {
        Ok(values) => values.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "planner cannot read the state");
            Vec::new()
        }
    }
}

/// One pass: the commands the leader should propose now.
pub fn plan(reader: &StateReader, settings: &PlannerSettings, now_unix_ms: u64) -> Vec<Command> {
    let volumes: Vec<VolumeRecord> = decode_all(reader, PREFIX_VOLUME);
    let abandoned: Vec<&VolumeRecord> = volumes
        .iter()
        .filter(|v| v.state == VolumeState::Open)
        .filter(|v| {
            v.lease.as_ref().is_none_or(|l| {
                l.expires_unix_ms + settings.abandoned_after.as_millis() as u64 <= now_unix_ms
            })
        })
        .take(SEALS_PER_PASS_MAX)
        .collect();
    if abandoned.is_empty() {
        return Vec::new();
    }
    let nodes: Vec<NodeRecord> = decode_all(reader, PREFIX_NODE);
    let disks: Vec<DiskRecord> = decode_all(reader, PREFIX_DISK);
    let liveness = crate::placement_view::Liveness {
        now_unix_ms,
        silent_after_ms: settings.node_silent_after.as_millis() as u64,
    };
    abandoned
        .into_iter()
        .map(|v| Command::SealVolume {
            volume_id: v.volume_id,
            length_bytes: None,
            fragments: crate::placement_view::fragment_places(&nodes, &disks, v, v.size_bytes, liveness),
        })
        .collect()
}

/// Runs passes until `stop` turns true.
pub async fn run(
    id: u64,
    raft: MasterRaft,
    reader: StateReader,
    settings: PlannerSettings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader != Some(id) {
            continue;
        }
        for command in plan(&reader, &settings, now_unix_ms()) {
            let what = command.to_string();
            match raft.client_write(command).await {
                Ok(w) => match w.data {
                    Response::Refused { error } => tracing::debug!(%what, %error, "planner command refused"),
                    _ => tracing::info!(%what, "planner: sealed an abandoned volume"),
                },
                Err(e) => {
                    tracing::debug!(%what, error = %e, "planner command not applied");
                    break;
                }
            }
        }
    }
}
