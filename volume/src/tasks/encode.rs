//! Encode: a sealed volume's replica becomes k + m fragments on the disks the master
//! named (on this or other servers).
//!
//! Any holder of a replica may be asked to run it (the master moves a failed or stranded
//! encode to the next holder), and the replica it reads need not be its own: the
//! candidates are this node's replicas, then the other holders' over their gRPC API, each
//! group with replicas not reported bad first. A candidate that is short of the volume's
//! acknowledged size, fails verification or cannot be read is reported bad (when it is
//! its bytes' fault) and the next one is tried.
//!
//! Two passes over the chosen replica, in bounded memory:
//! 1. a verified scan (every record's header and payload CRC; remote records are checked
//!    again here) computes the CRC32 of each data fragment's share of the volume and
//!    proves the replica holds exactly the acknowledged size;
//! 2. the stripe encoder reads the same bytes raw, stripe by stripe (a local `pread`, or a
//!    stripe-sized ReadFragment with `replica` set), and streams each stripe's k + m shards
//!    to the fragment writers (at most [`crate::FRAGMENT_QUEUE_MAX`] stripes queued per
//!    fragment), recomputing the same CRCs as it goes.
//!
//! The encode succeeds only if both passes saw the same bytes and every server read back
//! exactly the bytes it was sent. Memory: (k + m) stripe buffers plus the queues, about
//! 36 MiB for rs-6-3 at 1 MiB stripes, whatever the volume's size.

use std::sync::Arc;
use std::time::Duration;

use cellar_blockstore::{Disk, Error as DiskError, ExtentId, RECORD_HEADER_BYTES, RecordHeader};
use cellar_erasure::{ErasureError, Layout, StripeEncoder};
use cellar_proto::common::VolumeState;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::client::FragmentSink;
use crate::disks::blocking;
use crate::errors::{bad_request, status};
use crate::shared::Shared;
use crate::{FRAGMENT_CHUNK_BYTES, STRIPE_BYTES};

/// Longest wait for one message of a remote replica's scan, or one remote raw read: a
/// holder that stops answering is given up for the next candidate, not waited on forever.
pub const ENCODE_SOURCE_READ_TIMEOUT_MS: u64 = 30_000;

/// Where an encode reads the sealed volume from.
#[derive(Clone)]
enum Source {
    /// A replica on a disk of this node.
    Local { disk: Arc<Disk>, disk_id: u64 },
    /// A replica on another volume server, read over its gRPC API.
    Remote { node_id: u64, disk_id: u64 },
}

impl Source {
    fn disk_id(&self) -> u64 {
        match self {
            Source::Local { disk_id, .. } | Source::Remote { disk_id, .. } => *disk_id,
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Local { disk_id, .. } => format!("local replica on disk {disk_id}"),
            Source::Remote { node_id, disk_id } => format!("replica on node {node_id} disk {disk_id}"),
        }
    }
}

/// Why one attempt failed: the source replica's fault (try the next one) or anything else
/// (the fragment writers, this node: the attempt fails and the master moves the task).
enum AttemptError {
    Source(Status),
    Other(Status),
}

pub(super) async fn run(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    let v = shared.cluster.volume(task.volume_id).await?;
    let same_placement = v.fragments.len() == task.fragments.len()
        && v.fragments.iter().zip(&task.fragments).all(|(a, b)| a.disk_id == b.disk_id);
    match v.state() {
        VolumeState::Coded if same_placement => return Ok("already coded".into()),
        VolumeState::Coded => {
            return Err(status(
                Code::FailedPrecondition,
                cellar_proto::error_code::BAD_REQUEST,
                format!("volume {} is coded with another placement", v.volume_id),
            ));
        }
        VolumeState::Sealed => {}
        other => return Err(bad_request(format!("volume {} is {}, not sealed", v.volume_id, other.name()))),
    }
    let layout = super::layout_of(&v)?;
    let count = layout.scheme().fragment_count();
    if task.fragments.len() != count {
        return Err(bad_request(format!(
            "{} needs {count} fragment places, the task has {}",
            layout.scheme(),
            task.fragments.len()
        )));
    }
    let mut failures = Vec::new();
    for source in candidates(shared, &v) {
        match encode_from(shared, &v, layout, &task.fragments, &source).await {
            Ok(()) => {
                return Ok(format!(
                    "encoded {} bytes from the {} into {count} fragments of {} bytes",
                    layout.volume_len_bytes(),
                    source.describe(),
                    layout.fragment_len_bytes()
                ));
            }
            Err(AttemptError::Source(e)) => {
                tracing::warn!(volume = v.volume_id, source = %source.describe(), error = %e.message(),
                    "encode source unusable; trying the next replica");
                if crate::errors::code_of(&e) == Some(cellar_proto::ErrorCode::DataCorrupt) {
                    shared.cluster.report_bad_extent(v.volume_id, source.disk_id(), e.message().to_string());
                }
                failures.push(format!("{}: {}", source.describe(), e.message()));
            }
            Err(AttemptError::Other(e)) => return Err(e),
        }
    }
    Err(status(
        Code::Unavailable,
        cellar_proto::error_code::DATA_CORRUPT,
        format!("no replica of volume {} could be encoded: [{}]", v.volume_id, failures.join("; ")),
    ))
}

/// The replicas to try, best first: this node's, then the other holders'; in each group
/// those not reported bad first, then in placement order.
fn candidates(shared: &Shared, v: &mpb::Volume) -> Vec<Source> {
    let mut ranked: Vec<(bool, bool, usize, Source)> = Vec::new();
    for (i, r) in v.replicas.iter().enumerate() {
        let bad = v.bad_disks.contains(&r.disk_id);
        let source = match (r.node_id == shared.node_id, shared.disks.get(r.disk_id)) {
            (true, Some(disk)) => Source::Local { disk, disk_id: r.disk_id },
            (true, None) => continue,
            (false, _) => Source::Remote { node_id: r.node_id, disk_id: r.disk_id },
        };
        ranked.push((matches!(source, Source::Remote { .. }), bad, i, source));
    }
    ranked.sort_by_key(|(remote, bad, i, _)| (*remote, *bad, *i));
    ranked.into_iter().map(|(_, _, _, s)| s).collect()
}

/// One attempt from one source: verified scan, then the coding pass into fresh streams.
async fn encode_from(
    shared: &Arc<Shared>,
    v: &mpb::Volume,
    layout: Layout,
    fragments: &[mpb::Extent],
    source: &Source,
) -> Result<(), AttemptError> {
    let id = ExtentId::replica(v.volume_id);
    let size = layout.volume_len_bytes();
    let scanned = match source {
        Source::Local { disk, .. } => {
            let d = disk.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                d.seal_replica(id, Some(size))?;
                scan_crcs(&d, id, &layout)
            })
            .await;
            match scanned {
                Ok(Ok(crcs)) => crcs,
                // No room for the seal's catalog write (or a catalog in trouble): that
                // says nothing of the replica's bytes, so it is not reported bad (which
                // would count it lost); the next candidate is tried.
                Ok(Err(
                    e @ (DiskError::DiskFull { .. }
                    | DiskError::ReserveReached { .. }
                    | DiskError::Catalog { .. }),
                )) => {
                    return Err(AttemptError::Source(crate::errors::disk_status(&e)));
                }
                Ok(Err(e)) => {
                    return Err(AttemptError::Source(corrupt_source(crate::errors::disk_status(&e))));
                }
                Err(e) => return Err(AttemptError::Other(crate::errors::join_status(&e))),
            }
        }
        Source::Remote { node_id, disk_id } => {
            remote_scan_crcs(shared, *node_id, *disk_id, v.volume_id, &layout, shared.block_size_max_bytes)
                .await
                .map_err(AttemptError::Source)?
        }
    };
    let mut sinks = Vec::with_capacity(fragments.len());
    for (index, place) in fragments.iter().enumerate() {
        let client = shared.cluster.extent_client(place.node_id).await.map_err(AttemptError::Other)?;
        let header = pb::FragmentHeader {
            volume_id: v.volume_id,
            disk_id: place.disk_id,
            fragment_index: index as u32,
            fragment_len_bytes: layout.fragment_len_bytes(),
            chunk_size_bytes: FRAGMENT_CHUNK_BYTES as u32,
        };
        sinks.push(FragmentSink::open(client, header));
    }
    let read: ReadFn = match source {
        Source::Local { disk, .. } => {
            let disk = disk.clone();
            Box::new(move |offset, buf| {
                disk.read_replica_raw(id, offset, buf).map_err(|e| crate::errors::disk_status(&e))
            })
        }
        Source::Remote { node_id, disk_id } => {
            let client = shared.cluster.extent_client(*node_id).await.map_err(AttemptError::Source)?;
            let handle = tokio::runtime::Handle::current();
            let (volume_id, disk_id) = (v.volume_id, *disk_id);
            Box::new(move |offset, buf| {
                let request = pb::ReadFragmentRequest {
                    volume_id,
                    disk_id,
                    fragment_index: 0,
                    offset_bytes: offset,
                    length_bytes: buf.len() as u64,
                    replica: true,
                };
                let mut client = client.clone();
                let data = handle.block_on(async move {
                    tokio::time::timeout(
                        Duration::from_millis(ENCODE_SOURCE_READ_TIMEOUT_MS),
                        client.read_fragment(request),
                    )
                    .await
                    .map_err(|_| Status::deadline_exceeded("remote replica read timed out"))?
                })?;
                if data.data.len() != buf.len() {
                    return Err(corrupt(format!(
                        "remote replica read at {offset} returned {} bytes, not {}",
                        data.data.len(),
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&data.data);
                Ok(())
            })
        }
    };
    encode_stripes(layout, sinks, scanned, read).await
}

/// Reads `buf.len()` raw bytes of the source replica at a volume offset.
type ReadFn = Box<dyn FnMut(u64, &mut [u8]) -> Result<(), Status> + Send>;

fn corrupt(detail: String) -> Status {
    status(Code::DataLoss, cellar_proto::error_code::DATA_CORRUPT, detail)
}

/// A remote scan's error: its bytes' fault (reported bad), unless the holder could not
/// be reached, did not answer in time, or failed in itself (its disk out of space, its
/// catalog refusing a write: `Internal`), which says nothing about the replica.
fn source_fault(e: Status) -> Status {
    match e.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown | Code::Internal => e,
        _ => corrupt_source(e),
    }
}

/// A scan failure of a source replica, as the status of its bytes' fault.
fn corrupt_source(e: Status) -> Status {
    status(e.code(), cellar_proto::error_code::DATA_CORRUPT, format!("source replica: {}", e.message()))
}

/// The per-data-fragment CRC32s of a remote replica, from its verified ScanReplica stream
/// (each record checked again here), which must end exactly at the acknowledged size.
async fn remote_scan_crcs(
    shared: &Shared,
    node_id: u64,
    disk_id: u64,
    volume_id: u64,
    layout: &Layout,
    block_max: u64,
) -> Result<Vec<u32>, Status> {
    let timeout = Duration::from_millis(ENCODE_SOURCE_READ_TIMEOUT_MS);
    let size = layout.volume_len_bytes();
    let mut client = shared.cluster.node_client(node_id).await?;
    let request = pb::ScanReplicaRequest { volume_id, disk_id, from_offset_bytes: 0, to_offset_bytes: size };
    let mut stream = tokio::time::timeout(timeout, client.scan_replica(request))
        .await
        .map_err(|_| Status::deadline_exceeded("remote replica scan did not start in time"))??
        .into_inner();
    let mut crcs = FragmentCrcs::new(layout);
    let id = ExtentId::replica(volume_id);
    loop {
        let next = tokio::time::timeout(timeout, stream.next())
            .await
            .map_err(|_| Status::deadline_exceeded("remote replica scan stalled"))?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(source_fault)?;
        if chunk.offset_bytes != crcs.position {
            return Err(corrupt(format!(
                "scan chunk at {} where {} was due",
                chunk.offset_bytes, crcs.position
            )));
        }
        let mut at = 0usize;
        while at < chunk.records.len() {
            let offset = crcs.position;
            let bad = |kind| corrupt(format!("remote {id} record at {offset}: {kind:?}"));
            let head: &[u8; RECORD_HEADER_BYTES] = chunk
                .records
                .get(at..at + RECORD_HEADER_BYTES)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad(cellar_blockstore::CorruptKind::Truncated))?;
            let header = RecordHeader::decode(head, offset, block_max).map_err(bad)?;
            let start = at + RECORD_HEADER_BYTES;
            let payload = chunk
                .records
                .get(start..start + header.payload_len_bytes as usize)
                .ok_or_else(|| bad(cellar_blockstore::CorruptKind::Truncated))?;
            header.check_payload(payload).map_err(bad)?;
            crcs.feed(head);
            crcs.feed(payload);
            at = start + payload.len();
        }
    }
    if crcs.position != size {
        return Err(corrupt(format!("the replica holds {} of the {size} acknowledged bytes", crcs.position)));
    }
    Ok(crcs.finish())
}

/// CRC32 of each data fragment's share of the volume, fed the volume's bytes in order.
struct FragmentCrcs {
    hashers: Vec<crc32fast::Hasher>,
    fragment_len_bytes: u64,
    position: u64,
}

impl FragmentCrcs {
    fn new(layout: &Layout) -> Self {
        FragmentCrcs {
            hashers: vec![crc32fast::Hasher::new(); layout.scheme().data_count()],
            fragment_len_bytes: layout.fragment_len_bytes(),
            position: 0,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        let f = self.fragment_len_bytes;
        let mut rest = bytes;
        while !rest.is_empty() {
            let i = (self.position / f) as usize;
            let n = (((i as u64 + 1) * f - self.position) as usize).min(rest.len());
            if let Some(h) = self.hashers.get_mut(i) {
                h.update(&rest[..n]);
            }
            self.position += n as u64;
            rest = &rest[n..];
        }
    }

    fn finish(self) -> Vec<u32> {
        self.hashers.into_iter().map(crc32fast::Hasher::finalize).collect()
    }
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error("source replica: {}", .0.message())]
    Source(Status),
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// The stream of fragment `.0` ended while the pass was still sending (its writer
    /// failed): the cause of the other streams ending short.
    #[error("fragment {0}'s stream closed early")]
    SinkClosed(usize),
}

/// CRC32 of each data fragment's share of the volume, from a verified scan of a local
/// replica that must hold exactly the layout's volume length.
fn scan_crcs(disk: &Disk, id: ExtentId, layout: &Layout) -> Result<Vec<u32>, DiskError> {
    let mut crcs = FragmentCrcs::new(layout);
    for record in disk.scan_replica(id)? {
        let record = record?;
        crcs.feed(&record.header.encode());
        crcs.feed(&record.payload);
    }
    if crcs.position != layout.volume_len_bytes() {
        return Err(DiskError::BadSealLength {
            extent: id,
            length_bytes: layout.volume_len_bytes(),
            reason: format!("the replica holds {} bytes", crcs.position),
        });
    }
    Ok(crcs.finish())
}

/// Seals the local replica of `volume_id` at the layout's volume length and streams its
/// k + m fragments into `sinks` (in fragment order); see the module comment.
pub async fn encode_volume(
    disk: Arc<Disk>,
    volume_id: u64,
    layout: Layout,
    sinks: Vec<FragmentSink>,
) -> Result<(), Status> {
    let id = ExtentId::replica(volume_id);
    let size = layout.volume_len_bytes();
    let scanned = {
        let d = disk.clone();
        blocking(move || {
            d.seal_replica(id, Some(size))?;
            scan_crcs(&d, id, &layout)
        })
        .await
        .map_err(|e| {
            status(
                e.code(),
                cellar_proto::error_code::DATA_CORRUPT,
                format!("local replica: {}", e.message()),
            )
        })?
    };
    let read: ReadFn = Box::new(move |offset, buf| {
        disk.read_replica_raw(id, offset, buf).map_err(|e| crate::errors::disk_status(&e))
    });
    encode_stripes(layout, sinks, scanned, read).await.map_err(|e| match e {
        AttemptError::Source(e) | AttemptError::Other(e) => e,
    })
}

/// The coding pass: reads the volume through `read` stripe by stripe, streams the shards
/// into `sinks`, and checks that the bytes read match the verified scan's `scanned` CRCs.
async fn encode_stripes(
    layout: Layout,
    sinks: Vec<FragmentSink>,
    scanned: Vec<u32>,
    mut read: ReadFn,
) -> Result<(), AttemptError> {
    let f = layout.fragment_len_bytes();
    let k = layout.scheme().data_count();
    let pass = tokio::task::spawn_blocking(move || {
        let mut sinks = sinks;
        let mut hashers = vec![crc32fast::Hasher::new(); k];
        let outcome = (|| -> Result<(), PassError> {
            let mut encoder = StripeEncoder::new(layout, STRIPE_BYTES)?;
            for s in 0..encoder.stripe_count() {
                let stripe = encoder.encode::<PassError, _>(s, |offset, buf| {
                    read(offset, buf).map_err(PassError::Source)?;
                    if let Some(h) = hashers.get_mut((offset / f) as usize) {
                        h.update(buf);
                    }
                    Ok(())
                })?;
                for (i, shard) in stripe.fragments() {
                    let sink = &mut sinks[i];
                    let message = sink.framer.frame(shard.to_vec());
                    sink.tx.blocking_send(message).map_err(|_| PassError::SinkClosed(i))?;
                }
            }
            Ok(())
        })();
        let crcs: Vec<u32> = hashers.into_iter().map(crc32fast::Hasher::finalize).collect();
        (sinks, crcs, outcome)
    });
    let (sinks, read_crcs, outcome) = pass.await.map_err(|e| {
        AttemptError::Other(status(
            Code::Internal,
            cellar_proto::error_code::INTERNAL,
            format!("encoder: {e}"),
        ))
    })?;
    // A source that failed mid-pass closes the streams short: its error is the cause.
    if let Err(PassError::Source(e)) = outcome {
        drop(sinks);
        return Err(AttemptError::Source(e));
    }
    // Every stream is ended and awaited, so that a failed one reports its own status. A
    // stream that closed during the pass is reported first: the pass stopped there, and
    // the other writers' complaints (their streams ended short) follow from it.
    let finished = futures::future::join_all(sinks.into_iter().map(FragmentSink::finish)).await;
    let closed = match &outcome {
        Err(PassError::SinkClosed(i)) => Some(*i),
        _ => None,
    };
    let order = closed.into_iter().chain((0..finished.len()).filter(|i| Some(*i) != closed));
    for i in order {
        if let Some(Err(e)) = finished.get(i) {
            return Err(AttemptError::Other(Status::new(e.code(), format!("fragment {i}: {}", e.message()))));
        }
    }
    if let Err(e) = outcome {
        return Err(AttemptError::Other(status(
            Code::Internal,
            cellar_proto::error_code::INTERNAL,
            e.to_string(),
        )));
    }
    if scanned != read_crcs {
        return Err(AttemptError::Source(corrupt(
            "source replica: bytes read for encoding differ from the verified scan".to_string(),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use cellar_erasure::Scheme;
    use cellar_volume_api::cluster::{ExtentClient, ExtentTransport, LocalExtents};
    use tokio::sync::mpsc;
    use tonic::Request;

    use super::*;

    /// Fragment writers in this process: the one of fragment `failing` fails at once; the
    /// others read their stream to its end and, as the volume server does, refuse one that
    /// ended short of the fragment.
    struct Writers {
        failing: u32,
    }

    #[tonic::async_trait]
    impl LocalExtents for Writers {
        async fn append(&self, _: Request<pb::AppendRequest>) -> Result<pb::AppendResponse, Status> {
            Err(Status::unimplemented("append"))
        }
        async fn read_record(
            &self,
            _: Request<pb::ReadRecordRequest>,
        ) -> Result<pb::ReadRecordResponse, Status> {
            Err(Status::unimplemented("read_record"))
        }
        async fn read_fragment(
            &self,
            _: Request<pb::ReadFragmentRequest>,
        ) -> Result<pb::ReadFragmentResponse, Status> {
            Err(Status::unimplemented("read_fragment"))
        }
        async fn write_fragment(
            &self,
            req: Request<mpsc::Receiver<pb::WriteFragmentRequest>>,
        ) -> Result<pb::WriteFragmentResponse, Status> {
            let mut rx = req.into_inner();
            let first = rx.recv().await.ok_or_else(|| Status::invalid_argument("no header"))?;
            let header = first.header.ok_or_else(|| Status::invalid_argument("no header"))?;
            if header.fragment_index == self.failing {
                return Err(Status::unavailable("the disk under this fragment failed"));
            }
            let mut crc = crc32fast::Hasher::new();
            crc.update(&first.data);
            let mut len = first.data.len() as u64;
            while let Some(m) = rx.recv().await {
                crc.update(&m.data);
                len += m.data.len() as u64;
            }
            if len != header.fragment_len_bytes {
                return Err(Status::data_loss(format!(
                    "the stream ended at {len} of a {}-byte fragment",
                    header.fragment_len_bytes
                )));
            }
            Ok(pb::WriteFragmentResponse { length_bytes: len, crc32: crc.finalize() })
        }
    }

    /// A fragment writer that fails during the pass stops it and ends every other stream
    /// short; the attempt's error names the fragment that failed and its writer's reason,
    /// not the first of the others that saw its stream end short.
    #[tokio::test]
    async fn the_fragment_whose_writer_failed_is_the_one_reported() {
        let failing = 4u32;
        let scheme = Scheme::RS_6_3;
        // Many stripes: the pass is still sending when the failing writer has gone.
        let layout = Layout::new(scheme, 64 * STRIPE_BYTES as u64, FRAGMENT_CHUNK_BYTES).expect("layout");
        let service: Arc<dyn LocalExtents> = Arc::new(Writers { failing });
        let sinks = (0..scheme.fragment_count())
            .map(|index| {
                let client =
                    ExtentClient::new(ExtentTransport::Local { service: service.clone(), secret: None });
                let header = pb::FragmentHeader {
                    volume_id: 1,
                    disk_id: 100 + index as u64,
                    fragment_index: index as u32,
                    fragment_len_bytes: layout.fragment_len_bytes(),
                    chunk_size_bytes: FRAGMENT_CHUNK_BYTES as u32,
                };
                FragmentSink::open(client, header)
            })
            .collect();
        let read: ReadFn = Box::new(|offset, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (offset as usize + i) as u8;
            }
            Ok(())
        });
        let scanned = vec![0; scheme.data_count()];
        let Err(AttemptError::Other(e)) = encode_stripes(layout, sinks, scanned, read).await else {
            panic!("the pass succeeded or blamed its source");
        };
        assert!(
            e.message().starts_with(&format!("fragment {failing}: the disk under this fragment failed")),
            "{}",
            e.message()
        );
    }
}
