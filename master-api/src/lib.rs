//! The client side of cellar's master: what frontends, volume servers, benchmarks and the
//! CLI link to call a master group. No server code: the master's RocksDB, Raft and
//! planners live in `cellar-master`, which depends on this crate, never the other way.
//!
//! - [`client`]: [`MasterClient`] (leader routing, per-attempt and total deadlines,
//!   exactly-once request ids), its transports (tonic's gRPC `Channel`; one a
//!   [`client::Connector`] makes, as frontends use `cellar-volume-api`'s HTTP/2 transport;
//!   or in-process through a [`client::CustomTransport`] that the binary registers in
//!   [`client::LocalMasters`]);
//! - [`channel`]: how channels to masters connect and keep alive.

pub mod channel;
pub mod client;

pub use client::{ClientError, MasterClient};
