//! cellar's master: the Raft-replicated coordinator of one cell. Its state machine is the
//! single truth about zones, nodes, disks, volumes, placement and the block index; it is
//! never on the path of the bytes themselves.

pub mod apply;
pub mod apply_version;
pub mod auth;
pub mod batcher;
pub mod batching;
pub mod codec;
pub mod command;
pub mod compaction;
pub mod config;
pub mod errors;
pub mod lifecycle;
pub mod metrics;
pub mod namespace;
pub mod network;
pub mod node;
pub mod ns_batcher;
pub mod ns_service;
pub mod ns_types;
pub mod observed;
pub mod place_check;
pub mod placement_view;
pub mod planner;
pub mod raft_calls;
pub mod raft_service;
pub mod reclaim;
pub mod repair;
pub mod scanner;
pub mod service;
pub mod session;
pub mod snapshot_policy;
pub mod state;
pub mod store;
pub mod tasks;
pub mod types;
pub mod upgrade;
pub mod wire;

/// The client, from its own crate (kept here so the master's code and tests name it as
/// before).
pub use cellar_master_api::client;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cellar_proto::master::master_server::MasterServer;
use client::{CustomTransport, LocalMasters};
use tonic::codegen::Service;

/// A transport that calls `service` in this process (for [`LocalMasters`]): the request
/// is still encoded and goes through the same tonic service (routing, secret check,
/// handlers); only the socket and the HTTP/2 framing are skipped.
pub fn local_transport(service: Arc<service::MasterService>) -> CustomTransport {
    let server = MasterServer::from_arc(service);
    CustomTransport::new(move |req| {
        let mut server = server.clone();
        Box::pin(async move { server.call(req).await.map_err(|never| match never {}) })
    })
}

/// Registers the master `service`, known to the group as `addr`, in `local`.
pub fn add_local(local: &LocalMasters, addr: &str, service: Arc<service::MasterService>) {
    local.add(addr, local_transport(service));
}

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
