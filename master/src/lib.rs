//! cellar's master: the Raft-replicated coordinator of one cell. Its state machine is the
//! single truth about zones, nodes, disks, volumes, placement and the block index; it is
//! never on the path of the bytes themselves.

pub mod apply;
pub mod auth;
pub mod batcher;
pub mod client;
pub mod command;
pub mod config;
pub mod errors;
pub mod metrics;
pub mod network;
pub mod node;
pub mod placement_view;
pub mod planner;
pub mod raft_service;
pub mod service;
pub mod session;
pub mod store;
pub mod tasks;
pub mod types;

use std::time::{SystemTime, UNIX_EPOCH};

openraft::declare_raft_types!(
    /// The master's Raft type configuration.
    pub TypeConfig:
        D = command::Command,
        R = command::Response,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// The master's Raft node.
pub type MasterRaft = openraft::Raft<TypeConfig, store::sm::StateMachineStore>;

/// The leader's clock for commands (Unix milliseconds).
pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
