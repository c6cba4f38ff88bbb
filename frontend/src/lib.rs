//! The frontend (`cellar frontend`): a stateless gateway. It takes a block, stores it
//! durably across zones and gives it back byte-exact (DESIGN sections 3 and 4).
//!
//! - [`blocks`]: the put and get paths over the master and the volume servers.
//! - [`writers`]: the open volumes this frontend holds write leases on.
//! - [`lookups`]: index lookups at the master, concurrent ones batched into one call.
//! - [`http`]: the HTTP block API and `/metrics`; [`grpc`]: the same over gRPC.
//! - [`metrics`]: counters and histograms in Prometheus text form.
//! - [`s3`]: the S3-compatible API over the namespace and the block path.
//! - [`compactor`]: moves the live blocks of volumes compaction rewrites.

pub mod blocks;
pub mod compactor;
pub mod config;
pub mod grpc;
pub mod host_load;
pub mod http;
pub mod lookups;
pub mod metrics;
pub mod s3;
pub mod stall;
pub mod watcher;
pub mod writers;

pub use blocks::{BlockError, Blocks, Got, PutOutcome};
pub use config::{CellLimits, FrontendConfig};
pub use http::{FrontendHandle, start};

/// Bytes per second a frontend's compactor moves at most by default.
pub const COMPACTION_BYTES_PER_SEC_DEFAULT: u64 = 50_000_000;

/// Index entries cached by a frontend (lookups of blocks it has seen); the least recently
/// used half is forgotten when full ([`cellar_volume_api::cache::TwoGenerations`]).
pub const INDEX_CACHE_MAX: usize = 100_000;
/// How long a cached index entry serves gets before it is looked up again, in
/// milliseconds: an older one still serves the get at once and is refreshed in the
/// background, so that a block deleted (its last reference dropped) through another
/// frontend stops being served here soon after the first get past this age (it was
/// served until compaction reclaimed its bytes).
pub const INDEX_ENTRY_FRESH_MS: u64 = 10_000;
/// Background refreshes of cached index entries in flight at most (more stale entries
/// wait for a later get).
pub const ENTRY_REFRESHES_IN_FLIGHT_MAX: usize = 64;
/// Volume records cached by a frontend (as the index entries).
pub const VOLUME_CACHE_MAX: usize = 10_000;
/// Puts a frontend holds at once; further requests wait. Their bodies' memory is bounded by
/// [`PUT_BODIES_IN_FLIGHT_MAX_BYTES`]; this bounds the per-put work (tasks, queued lookups,
/// buffers). Small puts need many at once to fill batches: on a cell of processes (2
/// cores), 4 KiB puts from 256 clients went from ~5,700/s with 64 to ~10,000-11,000/s
/// with 256 (each put spends ~12 ms in lookup, append and commit batches, mostly waiting
/// for its batch; 64 at a time capped the rate at 64 / 12 ms).
pub const PUTS_IN_FLIGHT_MAX: usize = 256;
/// Gets a frontend serves at once; further requests wait (their blocks' memory is bounded
/// by [`GET_BLOCKS_IN_FLIGHT_MAX_BYTES`]). Over HTTP a get's share is released once hyper
/// has taken its response body to write. 4 KiB gets from 256 clients on a cell of
/// processes: ~30,000/s with 64, ~23,000-25,000/s with 256 (more calls at once on the same
/// two cores).
pub const GETS_IN_FLIGHT_MAX: usize = 64;
/// Bytes of put bodies a frontend holds at once, from before a body is read (its
/// Content-Length, or the largest block when it has none) until its put is done; further
/// puts wait. Bounds the memory of large puts, which [`PUTS_IN_FLIGHT_MAX`] alone would let
/// reach that many largest blocks. On a cell of processes (2 cores), 4 MiB puts from 32
/// clients held ~128 MiB of bodies; with 96 MiB the frontend's peak RSS over the 4 MiB rows
/// fell from 240-258 to ~190-200 MiB at the same rate (64 / 96 / 160 MiB: 446-506 /
/// 464-495 / 489-509 MB/s, one run each, two rounds).
pub const PUT_BODIES_IN_FLIGHT_MAX_BYTES: u64 = 96 << 20;
/// Smallest block whose put asks the masters whether it is indexed already (when this
/// frontend's index cache does not know it) before storing it. A smaller block is stored
/// at once: its index commit deduplicates it all the same (the entry already there gains
/// the reference, and the copy just written is garbage that compaction reclaims), so the
/// lookup would only save writing a few KiB, at the price of a round trip to the leader in
/// every put's path (measured under 4 KiB puts at 256 clients: 5.5 ms of a put's ~26).
pub const PUT_LOOKUP_MIN_BYTES: u64 = 64 << 10;
/// Bytes of blocks a frontend holds for gets at once, from when a get knows its block's
/// size (the index lookup) until the last of its bytes is written to the client (or the
/// connection is gone: see [`stall`]), S3 read-ahead included; further gets wait. 4 MiB
/// gets from 32 clients held 32 blocks at once and raised the frontend's peak RSS by ~90
/// MiB without serving faster than 16. Since the bytes keep their share until written
/// (they used to give it back when hyper took them), 96 MiB rather than 64, for the bytes
/// waiting in write queues; 128 served 4 MiB gets at 32 clients no faster than 96
/// (docs/performance.md).
pub const GET_BLOCKS_IN_FLIGHT_MAX_BYTES: u64 = 96 << 20;
/// Payload bytes a frontend has on their way to replicas at once (each is written R times).
/// Puts held back by it wait in the queue and join larger batches. Measured on the dev
/// cell (one device): 32 MiB held 4 MiB puts from 32 clients to ~180 MB/s, 128 MiB was
/// as fast as no limit (~320 MB/s).
pub const APPENDS_IN_FLIGHT_MAX_BYTES: u64 = 128 << 20;
/// Batches a frontend appends to replicas at once, whatever their size; more wait in the
/// queue and join larger batches. Each Append costs every replica a request and an fsync
/// whatever it carries, so under many small puts fewer, larger batches are cheaper: on a
/// cell of processes (2 cores) 4 KiB puts from 256 clients made ~6 puts per Append with 8
/// writers appending at once, and 5,582/s (6,089/s with 4 writers, 6,402/s with 2), while
/// 4 MiB puts at 32 clients were unchanged with 2 writers.
pub const APPEND_BATCHES_IN_FLIGHT_MAX: usize = 4;
/// A batch whose payload is smaller than this appends alone among such batches: while one
/// small batch is on its way to its replicas, the next waits and takes in the puts that
/// queue meanwhile, until it reaches this size (then it goes beside the others, up to
/// [`APPEND_BATCHES_IN_FLIGHT_MAX`]) or the small batch in flight is durable. Light load
/// waits for nothing (a put finds no small batch in flight); large blocks keep appending
/// several at once. Under many small puts a batch then carries what would have gone in
/// several, and each batch costs every replica a request and an fsync and the masters a
/// Raft entry: on a cell of processes (2 cores), 4 KiB puts from 256 clients went from ~22
/// to ~90 puts per batch and from 11,500-11,700 to 13,300-15,200/s, from 32 clients from ~4
/// to ~12 per batch and from 3,100-3,800 to 5,300-5,700/s (docs/performance.md, nineteenth
/// stop). Where an fsync takes far longer than the CPU a batch costs (slow disks, idle
/// cores), waiting for the batch in flight only adds its latency: with every fsync made 8 ms
/// longer, 4 KiB puts from 8 and 32 clients fell by 35-40% and waited ~75% longer under the
/// rule. So it applies only while this host's CPUs are saturated
/// ([`APPEND_ALONE_HOST_BUSY_PERCENT`]); `--append-alone-below-kib 0` turns it off.
pub const APPEND_ALONE_BELOW_BYTES: u64 = 1 << 20;
/// Share of this host's CPU time, in percent, spent busy from which small batches append
/// one at a time ([`APPEND_ALONE_BELOW_BYTES`]; [`host_load`]: sampled every 100 ms, and
/// they go beside each other again once it falls 20 points below). On this machine 4 KiB
/// puts at 32 and 256 clients keep it at 80-95% with or without the rule; with slow fsyncs
/// the same loads used 20-72%.
pub const APPEND_ALONE_HOST_BUSY_PERCENT: u64 = 85;
/// Share of this host's CPU time, in percent, spent busy from which a frontend gathers its
/// small reads to each volume server ([`cellar_volume_api::gather`]: while a call to the
/// server is in flight, the next small reads wait for it and go together in one
/// ReadRecords call), as small batches append alone from [`APPEND_ALONE_HOST_BUSY_PERCENT`]:
/// on saturated CPUs each call's own cost is most of a small get; with idle CPUs waiting
/// would only add the call's latency.
pub const READ_GATHER_HOST_BUSY_PERCENT: u64 = 85;
/// Times a put is retried on a new volume after a replica failed.
pub const PUT_ATTEMPTS_MAX: u32 = 4;
/// Longest a put's body may take to arrive, in total: past it the client gets 408 and its
/// put permit is freed. 60 s lets a 4 MiB block through at 70 KB/s, far below any client
/// worth serving, while 64 stalled uploads can hold every permit for at most a minute.
pub const PUT_BODY_TIMEOUT_MS: u64 = 60_000;
/// Longest a put's body may go without a byte arriving before the client gets 408: a
/// stalled upload frees its permit within this (10 s: minutes of TCP retransmission are
/// not a client making progress).
pub const PUT_BODY_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Open HTTP connections a frontend accepts at once; further connections wait in the
/// listen backlog until one closes. Each idle keep-alive connection costs a task and
/// buffers; 1,024 is 16 per put permit.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;
/// Longest a response write to a client may stay blocked (the client reading nothing)
/// before its connection is closed (see [`stall`]): a get's bytes hold their share of
/// [`GET_BLOCKS_IN_FLIGHT_MAX_BYTES`] until written, so a client that stopped reading must
/// not keep it. 30 s: a slow client that reads at all keeps its connection.
pub const RESPONSE_WRITE_STALL_MAX_MS: u64 = 30_000;
/// Concurrent gRPC streams (requests) per client connection (as the volume server's).
pub const GRPC_STREAMS_PER_CONNECTION_MAX: u32 = 32;
/// Per-stream HTTP/2 receive window of the gRPC server: the bytes a client may send on a
/// stream before the server reads them (a put waiting for admission holds at most this).
pub const GRPC_STREAM_WINDOW_BYTES: u32 = 1 << 20;
/// Per-connection HTTP/2 receive window of the gRPC server: room for every stream's whole
/// window, so that puts waiting for admission (their first window's bytes unread) can
/// never starve an admitted put on the same connection of its body (the deadlock the
/// volume server's notes describe for a per-connection handler limit).
pub const GRPC_CONNECTION_WINDOW_BYTES: u32 = GRPC_STREAMS_PER_CONNECTION_MAX * GRPC_STREAM_WINDOW_BYTES;
/// HTTP/2 PING interval on gRPC connections: a client that vanished without a FIN is
/// noticed and its streams dropped.
pub const GRPC_KEEPALIVE_INTERVAL_MS: u64 = 20_000;
/// How long an HTTP/2 PING may go unanswered before the connection is closed.
pub const GRPC_KEEPALIVE_TIMEOUT_MS: u64 = 10_000;
/// TCP keepalive on accepted gRPC connections.
pub const TCP_KEEPALIVE_MS: u64 = 60_000;
