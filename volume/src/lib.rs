//! The volume server (`cellar volume`): the process that owns one machine's disks.
//!
//! It does the heavy lifting the master plans and never decides placement itself:
//! - [`service`]: the extent API (`cellar.volume.v1`): fenced appends to open-volume
//!   replicas, verified record and fragment reads, streamed fragment writes, stat, delete.
//! - [`tasks`]: the executor of the master's task queue: encode a sealed volume into k + m
//!   fragments, reconstruct a lost fragment, copy an extent, delete one.
//! - [`reader`]: the client side of reads, shared with frontends: a block from a replica
//!   or from data fragments, with degraded reads and bad-extent reports; [`digest`]: what
//!   it checks the bytes against before returning them.
//! - [`node`]: start-up (registration, node id kept on the disks, bad extents found at
//!   open reported), heartbeats, shutdown; [`trash`]: the periodic purge of deleted
//!   extents.
//!
//! Limits on every queue and on the bytes in flight are the `_MAX` constants below.

pub mod budget;
pub mod buffers;
pub mod config;
pub mod counters;
pub mod disks;
pub mod errors;
pub mod fence;
pub mod metrics;
pub mod node;
pub mod pace;
pub mod recent;
pub mod replies;
pub mod scrub;
pub mod service;
pub mod shared;
pub mod tasks;
pub mod trash;

pub use cellar_volume_api::{
    APPEND_PAYLOAD_MAX_BYTES, APPEND_RECORDS_MAX, CONNECTION_STREAMS_MAX, CONNECTION_WINDOW_BYTES,
    FRAGMENT_CHUNK_BYTES, FRAGMENT_QUEUE_MAX, FRAGMENT_READ_MAX_BYTES, FRAME_MAX_BYTES, MESSAGE_MAX_BYTES,
    READ_RECORDS_MAX, READ_RECORDS_MAX_BYTES, STREAM_WINDOW_BYTES, client, cluster, deadline, digest, reader,
    streamed,
};
pub use config::VolumeConfig;
pub use node::{VolumeHandle, start};

/// Stripe height of encodes and rebuilds: the rows of every fragment handled at once.
pub const STRIPE_BYTES: usize = 1 << 20;
/// Largest record a ReadRecord reads on its async thread when the page cache holds it
/// (`preadv2(RWF_NOWAIT)`; larger ones and reads that would block go to a blocking thread).
pub const CACHED_READ_MAX_BYTES: u64 = 256 << 10;
/// Payload and fragment bytes the server holds for requests at once; callers beyond it
/// wait (appends, reads and fragment writes share it).
pub const SERVER_INFLIGHT_MAX_BYTES: u64 = 128 << 20;
/// Tasks one volume server runs at once.
pub const TASKS_IN_FLIGHT_MAX: usize = 2;
/// Records' bytes per ScanReplica message.
pub const SCAN_MESSAGE_MAX_BYTES: usize = 4 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    cellar_blockstore::now_unix_ms()
}
