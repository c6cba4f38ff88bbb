//! The client side of cellar's volume API (`cellar.volume.v1`), shared by frontends, the
//! load generator and volume servers (which are each other's clients): the typed extent
//! client over gRPC or in-process, the cell view that finds volume servers, block reads
//! from replicas or fragments, deadlines and hedging, the digest reads are checked
//! against. It links neither the blockstore nor the master: a frontend built on it is
//! stateless.
//!
//! Modules, lowest layer first (a module imports only modules above it in this list):
//! - [`pieces`]: a block's bytes as the buffers they arrived in.
//! - [`errors`]: statuses with stable error codes.
//! - [`deadline`]: per-call deadlines, the read-latency window hedging is derived from.
//! - [`digest`]: the block key and the digest a read is checked against.
//! - [`arriving`]: a ReadRecord answer checked against its key as it arrives.
//! - [`layout`]: a volume record's coding scheme and fragment layout.
//! - [`wire`]: gRPC messages for the transport; the Append request in pieces that share
//!   its payloads.
//! - [`transport`]: unary gRPC calls straight over one HTTP/2 connection per server.
//! - [`cluster`]: the cell view (master client, node addresses, client pool) and the
//!   extent client ([`cluster::ExtentClient`]) over gRPC or an in-process
//!   [`cluster::LocalExtents`].
//! - [`client`]: streamed fragment writes and verified fragment-range reads.
//! - [`reader`]: a block from a replica or from data fragments, degraded reads, hedging,
//!   bad-extent reports.
//! - [`streamed`]: a block's bytes handed on as they arrive from a replica, checked as
//!   they arrive, the last held back until they matched.
//!
//! The wire limits both sides must agree on are the constants below.

pub mod arriving;
pub mod cache;
pub mod client;
pub mod cluster;
pub mod deadline;
pub mod digest;
pub mod errors;
pub mod gather;
pub mod layout;
pub mod pieces;
pub mod reader;
pub mod replies;
pub mod streamed;
pub mod transport;
pub mod wire;

pub use cellar_format::FRAGMENT_CHUNK_BYTES;
/// Longest fragment range one ReadFragment call returns.
pub const FRAGMENT_READ_MAX_BYTES: u64 = 8 << 20;
/// Largest gRPC message: an append of up to [`APPEND_PAYLOAD_MAX_BYTES`] or a fragment
/// read, plus framing.
pub const MESSAGE_MAX_BYTES: usize = 9 << 20;
/// Records one ReadRecords call may ask for.
pub const READ_RECORDS_MAX: usize = 64;
/// Record bytes (headers and payloads) one ReadRecords call may ask for in all.
pub const READ_RECORDS_MAX_BYTES: u64 = 4 << 20;
/// The longest record (header and payload) a reader gathers into ReadRecords calls
/// ([`gather`]); longer ones are read alone.
pub const GATHERED_RECORD_MAX_BYTES: u32 = 64 << 10;
/// Records one Append may carry (written back to back, made durable by one fsync).
pub const APPEND_RECORDS_MAX: usize = 256;
/// Payload bytes one Append may carry in all.
pub const APPEND_PAYLOAD_MAX_BYTES: u64 = 8 << 20;
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
/// The connection window a client of volume servers (a frontend) offers for their answers:
/// larger than [`CONNECTION_WINDOW_BYTES`] because a get handed on as it arrives
/// ([`streamed`]) reads its answer at its HTTP client's pace, and answers not yet read hold
/// the window of the one connection every read from that server shares. The frontend's get
/// byte budget, which counts every answer in flight, is kept under it, so slow clients
/// cannot close the window on the others.
pub const ANSWER_CONNECTION_WINDOW_BYTES: u32 = 256 << 20;
/// The largest HTTP/2 frame a volume server or its clients accept (the default, 16 KiB,
/// cuts a 4 MiB block into 256 frames).
pub const FRAME_MAX_BYTES: u32 = 1 << 20;
/// Messages queued per fragment stream while encoding or rebuilding (each one stripe of
/// one fragment): with k + m streams, a task holds at most this many stripes in flight.
pub const FRAGMENT_QUEUE_MAX: usize = 2;
