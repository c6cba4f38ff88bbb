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
pub mod client;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod digest;
pub mod disks;
pub mod errors;
pub mod fence;
pub mod metrics;
pub mod node;
pub mod reader;
pub mod service;
pub mod tasks;
pub mod trash;

pub use config::VolumeConfig;
pub use node::{VolumeHandle, start};

/// Chunk size of every fragment (the unit of a chunk CRC). Part of the coded layout:
/// fragment lengths are rounded up to it, so readers and writers must agree on it.
pub const FRAGMENT_CHUNK_BYTES: u64 = 64 << 10;
/// Stripe height of encodes and rebuilds: the rows of every fragment handled at once.
pub const STRIPE_BYTES: usize = 1 << 20;
/// Longest fragment range one ReadFragment call returns.
pub const FRAGMENT_READ_MAX_BYTES: u64 = 8 << 20;
/// Largest record a ReadRecord reads on its async thread when the page cache holds it
/// (`preadv2(RWF_NOWAIT)`; larger ones and reads that would block go to a blocking thread).
pub const CACHED_READ_MAX_BYTES: u64 = 256 << 10;
/// Largest gRPC message: an append of up to [`APPEND_PAYLOAD_MAX_BYTES`] or a fragment
/// read, plus framing.
pub const MESSAGE_MAX_BYTES: usize = 9 << 20;
/// Records one Append may carry (written back to back, made durable by one fsync).
pub const APPEND_RECORDS_MAX: usize = 256;
/// Payload bytes one Append may carry in all.
pub const APPEND_PAYLOAD_MAX_BYTES: u64 = 8 << 20;
/// Payload and fragment bytes the server holds for requests at once; callers beyond it
/// wait (appends, reads and fragment writes share it).
pub const SERVER_INFLIGHT_MAX_BYTES: u64 = 128 << 20;
/// Concurrent requests (HTTP/2 streams) one client connection may have open; further
/// requests wait on the client's side. A stream limit, unlike a limit on handlers, cannot
/// deadlock: a request that is admitted always gets its body.
pub const CONNECTION_STREAMS_MAX: u32 = 32;
/// HTTP/2 flow-control windows: what one connection (and one stream) may send ahead of
/// the handlers reading it. A stream's window holds a whole block message, so a block
/// moves without waiting for a window update.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;
/// See [`CONNECTION_WINDOW_BYTES`].
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// The largest HTTP/2 frame a volume server or its clients accept (the default, 16 KiB,
/// cuts a 4 MiB block into 256 frames).
pub const FRAME_MAX_BYTES: u32 = 1 << 20;
/// Tasks one volume server runs at once.
pub const TASKS_IN_FLIGHT_MAX: usize = 2;
/// Messages queued per fragment stream while encoding or rebuilding (each one stripe of
/// one fragment): with k + m streams, a task holds at most this many stripes in flight.
pub const FRAGMENT_QUEUE_MAX: usize = 2;
/// Records' bytes per ScanReplica message.
pub const SCAN_MESSAGE_MAX_BYTES: usize = 4 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    cellar_blockstore::now_unix_ms()
}
