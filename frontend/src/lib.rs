//! The frontend (`cellar frontend`): a stateless gateway. It takes a block, stores it
//! durably across zones and gives it back byte-exact (DESIGN sections 3 and 4).
//!
//! - [`blocks`]: the put and get paths over the master and the volume servers.
//! - [`writers`]: the open volumes this frontend holds write leases on.
//! - [`http`]: the HTTP block API and `/metrics`; [`grpc`]: the same over gRPC.
//! - [`metrics`]: counters and histograms in Prometheus text form.

pub mod blocks;
pub mod config;
pub mod dev;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod writers;

pub use blocks::{BlockError, Blocks, PutOutcome};
pub use config::FrontendConfig;
pub use http::{FrontendHandle, start};

/// Index entries cached by a frontend (lookups of blocks it has seen).
pub const INDEX_CACHE_MAX: usize = 100_000;
/// Volume records cached by a frontend.
pub const VOLUME_CACHE_MAX: usize = 10_000;
/// Puts (and their bodies) a frontend holds at once; further requests wait.
pub const PUTS_IN_FLIGHT_MAX: usize = 64;
/// Gets (and the blocks they hold) a frontend serves at once; further requests wait. Over
/// HTTP a get's share is released once its response body has been sent.
pub const GETS_IN_FLIGHT_MAX: usize = 64;
/// Payload bytes a frontend has on their way to replicas at once (each is written R times).
/// Puts held back by it wait in the queue and join larger batches. Measured on the dev
/// cell (one device): 32 MiB held 4 MiB puts from 32 clients to ~180 MB/s, 128 MiB was
/// as fast as no limit (~320 MB/s).
pub const APPENDS_IN_FLIGHT_MAX_BYTES: u64 = 128 << 20;
/// Times a put is retried on a new volume after a replica failed.
pub const PUT_ATTEMPTS_MAX: u32 = 4;
