//! The extent API (`cellar.volume.v1`) of one volume server.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use cellar_blockstore::fragment::chunk_crc32;
use cellar_blockstore::{Disk, Error as DiskError, ExtentId, ExtentState, RECORD_HEADER_BYTES, RecordIn};
use cellar_proto::common::{ExtentPart, VolumeState};
use cellar_proto::error_code as code;
use cellar_proto::volume as pb;
use cellar_proto::volume::volume_server::Volume;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::cluster::{Cluster, InProcess, LocalExtents};
use crate::disks::blocking;
use crate::errors::{bad_request, status};
use crate::fence::Fence;
use crate::{
    APPEND_PAYLOAD_MAX_BYTES, APPEND_RECORDS_MAX, CACHED_READ_MAX_BYTES, FRAGMENT_READ_MAX_BYTES,
    READ_RECORDS_MAX, READ_RECORDS_MAX_BYTES, SCAN_MESSAGE_MAX_BYTES, STRIPE_BYTES,
};

pub use crate::shared::Shared;

/// The gRPC service.
pub struct VolumeService {
    shared: Arc<Shared>,
}

impl VolumeService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> VolumeService {
        VolumeService { shared }
    }

    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if self.shared.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return Err(status(Code::Unavailable, code::INTERNAL, "the volume server is stopping"));
        }
        let Some(secret) = &self.shared.secret else { return Ok(()) };
        let given = req.metadata().get(cellar_proto::SECRET_KEY).and_then(|v| v.to_str().ok());
        if given == Some(secret.as_str()) {
            Ok(())
        } else {
            Err(status(Code::Unauthenticated, code::UNAUTHENTICATED, "missing or wrong cluster secret"))
        }
    }

    fn report_if_corrupt(&self, e: &Status, volume_id: u64, disk_id: u64) {
        if crate::errors::code_of(e) == Some(cellar_proto::ErrorCode::DataCorrupt) {
            self.shared.cluster.report_bad_extent(volume_id, disk_id, e.message().to_string());
        }
    }

    /// One record, as ReadRecord answers it (the caller checked the request).
    async fn read_one_record(&self, r: pb::ReadRecordRequest) -> Result<pb::ReadRecordResponse, Status> {
        let result: Result<pb::ReadRecordResponse, Status> = async move {
            let disk = self.shared.disks.require(r.disk_id)?;
            let expected = u64::from(r.length_bytes);
            let hold = if expected == 0 { self.shared.block_size_max_bytes } else { expected };
            let _permit = self.shared.budget.acquire(hold).await;
            let (volume_id, offset) = (r.volume_id, r.offset_bytes);
            // From memory only while the replica is there and holds the record durably: a
            // replica deleted (coded, moved, reclaimed) or cut short answers from its disk,
            // whose ExtentNotFound sends a reader to the volume's current placement.
            let durable_len =
                || disk.extent_info(ExtentId::replica(volume_id)).ok().map(|info| info.length_bytes);
            if let Some(kept) = self.shared.recent.get((r.disk_id, volume_id, offset), expected, durable_len)
            {
                return Ok(pb::ReadRecordResponse { sha256: kept.sha256.to_vec(), payload: kept.payload });
            }
            let hint = (expected != 0).then_some(expected);
            let mut buf = self.shared.read_buffers.take();
            // A small record the page cache holds is read right here: no hand-off to a
            // blocking thread and back (most of a small get's latency). Anything else, or
            // a read that would wait for the device, goes to a blocking thread.
            let cached = match hint.filter(|len| *len <= CACHED_READ_MAX_BYTES) {
                Some(len) => disk
                    .read_record_cached(ExtentId::replica(volume_id), offset, len, &mut buf)
                    .map_err(|e| crate::errors::disk_status(&e))
                    .inspect_err(|e| self.report_if_corrupt(e, r.volume_id, r.disk_id))?,
                None => None,
            };
            let (header, start, buf) = match cached {
                Some(header) => (header, 0, buf),
                None => blocking(move || {
                    let (header, start) =
                        disk.read_record_into(ExtentId::replica(volume_id), offset, hint, &mut buf)?;
                    Ok((header, start, buf))
                })
                .await
                .inspect_err(|e| self.report_if_corrupt(e, r.volume_id, r.disk_id))?,
            };
            let len = header.record_len_bytes();
            if expected != 0 && len != expected {
                self.shared.read_buffers.give(buf);
                return Err(bad_request(format!(
                    "the record at {offset} of volume {volume_id} is {len} bytes long, not {expected}"
                )));
            }
            let payload =
                self.shared.read_buffers.share(buf, start + RECORD_HEADER_BYTES..start + len as usize);
            Ok(pb::ReadRecordResponse { sha256: header.sha256.to_vec(), payload })
        }
        .await;
        let read_bytes = result.as_ref().map_or(0, |r| r.payload.len() as u64);
        self.shared.metrics.record_reads.record(result.is_ok(), read_bytes);
        result
    }
}

/// The extent an [`pb::ExtentRef`] names.
pub fn extent_id(r: &pb::ExtentRef) -> Result<ExtentId, Status> {
    match r.part() {
        ExtentPart::Replica => Ok(ExtentId::replica(r.volume_id)),
        ExtentPart::Fragment => Ok(ExtentId::fragment(r.volume_id, fragment_index(r.fragment_index)?)),
        ExtentPart::Unspecified => {
            Err(bad_request(format!("part must be replica or fragment, not {}", r.part)))
        }
    }
}

fn fragment_index(index: u32) -> Result<u8, Status> {
    u8::try_from(index)
        .ok()
        .filter(|i| usize::from(*i) < cellar_erasure::FRAGMENTS_MAX)
        .ok_or_else(|| bad_request(format!("fragment index {index} is out of range")))
}

fn sha256_of(bytes: &[u8]) -> Result<[u8; 32], Status> {
    bytes.try_into().map_err(|_| bad_request("sha256 must be 32 bytes"))
}

/// Whether the master's current placement of `volume_id` puts fragment `index` (or the
/// replica, for `None`) on `disk_id`.
async fn placed_here(
    cluster: &Cluster,
    volume_id: u64,
    disk_id: u64,
    index: Option<u32>,
) -> Result<bool, Status> {
    let v = match cluster.volume(volume_id).await {
        Ok(v) => v,
        Err(e) if crate::errors::code_of(&e) == Some(cellar_proto::ErrorCode::UnknownVolume) => {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    Ok(match index {
        None => v.state() != VolumeState::Coded && v.replicas.iter().any(|r| r.disk_id == disk_id),
        Some(i) => v.fragments.get(i as usize).is_some_and(|f| f.disk_id == disk_id),
    })
}

type ScanStream = Pin<Box<dyn Stream<Item = Result<pb::ScanReplicaChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Volume for VolumeService {
    async fn append(&self, req: Request<pb::AppendRequest>) -> Result<Response<pb::AppendResponse>, Status> {
        let payload_bytes: u64 = req.get_ref().records.iter().map(|r| r.payload.len() as u64).sum();
        let result: Result<Response<pb::AppendResponse>, Status> = async move {
            self.check(&req)?;
            // A sender's CRC32 is checked unless the payload never left this process: an
            // in-process caller computed it from the very bytes handed over.
            let crcs_checked = req.extensions().get::<InProcess>().is_some();
            let r = req.into_inner();
            if r.records.is_empty() || r.records.len() > APPEND_RECORDS_MAX {
                return Err(bad_request(format!(
                    "an append carries 1 to {APPEND_RECORDS_MAX} records, not {}",
                    r.records.len()
                )));
            }
            if payload_bytes > APPEND_PAYLOAD_MAX_BYTES {
                return Err(bad_request(format!(
                    "an append carries at most {APPEND_PAYLOAD_MAX_BYTES} payload bytes, not {payload_bytes}"
                )));
            }
            let mut keys = Vec::with_capacity(r.records.len());
            for record in &r.records {
                keys.push(sha256_of(&record.sha256)?);
                let len = record.payload.len() as u64;
                if len > self.shared.block_size_max_bytes {
                    return Err(bad_request(format!(
                        "block of {len} bytes is over block_size_max_bytes {}",
                        self.shared.block_size_max_bytes
                    )));
                }
            }
            let disk = self.shared.disks.require(r.disk_id)?;
            let _permit = self.shared.budget.acquire(payload_bytes).await;
            let given = Fence { epoch: r.lease_epoch, generation: r.generation };
            let _fence = self
                .shared
                .fences
                .admit(&self.shared.cluster, self.shared.node_id, r.disk_id, &disk, r.volume_id, given)
                .await?;
            let (volume_id, offset, records) = (r.volume_id, r.offset_bytes, r.records);
            // Whatever this replica held at or past `offset` is being replaced.
            self.shared.recent.forget_from(r.disk_id, volume_id, offset);
            // The payloads to keep in memory once durable (shared, not copied), on the
            // replica gets read first (others would only be read if it failed).
            let reads_here = self.shared.fences.reads_first(volume_id, r.disk_id) != Some(false);
            let keep: Vec<(usize, [u8; 32], Bytes, Option<u32>)> = records
                .iter()
                .zip(&keys)
                .enumerate()
                .filter(|(_, (rec, _))| reads_here && self.shared.recent.keeps(rec.payload.len()))
                .map(|(i, (rec, sha256))| (i, *sha256, rec.payload.clone(), rec.payload_crc32))
                .collect();
            let appended = blocking(move || {
                let id = ExtentId::replica(volume_id);
                if !crcs_checked
                    && let Some(i) = records
                        .iter()
                        .position(|r| r.payload_crc32.is_some_and(|crc| crc != crc32fast::hash(&r.payload)))
                {
                    return Ok(Err(i));
                }
                let batch: Vec<RecordIn<'_>> = keys
                    .iter()
                    .zip(&records)
                    .map(|(sha256, record)| RecordIn {
                        sha256,
                        payload: &record.payload,
                        payload_crc32: record.payload_crc32,
                    })
                    .collect();
                let appended = match disk.append_records(id, Some(offset), &batch) {
                    Err(DiskError::UnknownExtent(_)) if offset == 0 => {
                        match disk.create_replica(volume_id) {
                            Ok(_) | Err(DiskError::ExtentExists(_)) => {}
                            Err(e) => return Err(e),
                        }
                        disk.append_records(id, Some(offset), &batch)
                    }
                    Err(DiskError::UnknownExtent(_)) => {
                        Err(DiskError::OffsetMismatch { extent: id, expected_bytes: offset, end_bytes: 0 })
                    }
                    other => other,
                };
                appended.map(Ok)
            })
            .await?
            .map_err(|i| {
                bad_request(format!(
                    "record {i}'s payload does not match the payload_crc32 sent with it \
                     (changed on the way); nothing was appended"
                ))
            })?;
            let end = appended.last().map_or(offset, |l| l.end_bytes());
            for (i, sha256, payload, sent_crc) in keep {
                let Some(at) = appended.get(i) else { continue };
                // The CRC the header was written with: the sender's (checked above, or
                // computed in this process from these bytes), else computed now.
                let crc = sent_crc.unwrap_or_else(|| crc32fast::hash(&payload));
                self.shared.recent.keep(
                    (r.disk_id, volume_id, at.offset_bytes),
                    at.record_len_bytes,
                    sha256,
                    payload,
                    crc,
                );
            }
            Ok(Response::new(pb::AppendResponse { offset_bytes: offset, appended_bytes: end - offset }))
        }
        .await;
        self.shared.metrics.appends.record(result.is_ok(), payload_bytes);
        result
    }

    async fn read_record(
        &self,
        req: Request<pb::ReadRecordRequest>,
    ) -> Result<Response<pb::ReadRecordResponse>, Status> {
        self.check(&req)?;
        self.read_one_record(req.into_inner()).await.map(Response::new)
    }

    async fn read_records(
        &self,
        req: Request<pb::ReadRecordsRequest>,
    ) -> Result<Response<pb::ReadRecordsResponse>, Status> {
        self.check(&req)?;
        let records = req.into_inner().records;
        let asked_bytes: u64 = records.iter().map(|r| u64::from(r.length_bytes)).sum();
        if records.is_empty()
            || records.len() > READ_RECORDS_MAX
            || records.iter().any(|r| r.length_bytes == 0)
            || asked_bytes > READ_RECORDS_MAX_BYTES
        {
            return Err(bad_request(format!(
                "ReadRecords asks for 1..={READ_RECORDS_MAX} records of known lengths, at most \
                 {READ_RECORDS_MAX_BYTES} bytes in all: {} records, {asked_bytes} bytes",
                records.len()
            )));
        }
        // Side by side: a record the page cache holds is read at once, one that waits for
        // its device does not hold up the others.
        let reads = records.into_iter().map(|r| self.read_one_record(r));
        let results = futures::future::join_all(reads)
            .await
            .into_iter()
            .map(|read| match read {
                Ok(record) => pb::ReadRecordResult { record: Some(record), ..Default::default() },
                Err(e) => pb::ReadRecordResult {
                    record: None,
                    code: e.code() as i32,
                    message: e.message().to_string(),
                    error_code: crate::errors::code_of(&e)
                        .map(|c| c.as_str().to_string())
                        .unwrap_or_default(),
                },
            })
            .collect();
        Ok(Response::new(pb::ReadRecordsResponse { results }))
    }

    type ScanReplicaStream = ScanStream;

    async fn scan_replica(
        &self,
        req: Request<pb::ScanReplicaRequest>,
    ) -> Result<Response<Self::ScanReplicaStream>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let disk = self.shared.disks.require(r.disk_id)?;
        let id = ExtentId::replica(r.volume_id);
        let scan = {
            let disk = disk.clone();
            blocking(move || disk.scan_replica_from(id, r.from_offset_bytes)).await?
        };
        let (tx, rx) = mpsc::channel::<Result<pb::ScanReplicaChunk, Status>>(2);
        let to = r.to_offset_bytes;
        tokio::task::spawn_blocking(move || {
            let mut offset = r.from_offset_bytes;
            let mut chunk = pb::ScanReplicaChunk { offset_bytes: offset, records: Vec::new() };
            for record in scan {
                if to != 0 && offset >= to {
                    break;
                }
                match record {
                    Ok(rec) => {
                        chunk.records.extend_from_slice(&rec.header.encode());
                        chunk.records.extend_from_slice(&rec.payload);
                        offset += rec.header.record_len_bytes();
                        if chunk.records.len() >= SCAN_MESSAGE_MAX_BYTES {
                            let next = pb::ScanReplicaChunk { offset_bytes: offset, records: Vec::new() };
                            if tx.blocking_send(Ok(std::mem::replace(&mut chunk, next))).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(crate::errors::disk_status(&e)));
                        return;
                    }
                }
            }
            if to != 0 && offset != to {
                let _ = tx
                    .blocking_send(Err(bad_request(format!("{to} is not a record boundary of the replica"))));
                return;
            }
            if !chunk.records.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn read_fragment(
        &self,
        req: Request<pb::ReadFragmentRequest>,
    ) -> Result<Response<pb::ReadFragmentResponse>, Status> {
        let result: Result<Response<pb::ReadFragmentResponse>, Status> = async move {
            self.check(&req)?;
            let r = req.into_inner();
            if r.length_bytes > FRAGMENT_READ_MAX_BYTES {
                return Err(bad_request(format!(
                    "at most {FRAGMENT_READ_MAX_BYTES} bytes per fragment read"
                )));
            }
            let disk = self.shared.disks.require(r.disk_id)?;
            let _permit = self.shared.budget.acquire(r.length_bytes).await;
            if r.replica {
                // Raw replica bytes for a remote encoder (see the proto): no pooled buffer,
                // these reads are rare and stripe-sized.
                let (id, offset) = (ExtentId::replica(r.volume_id), r.offset_bytes);
                let mut data = vec![0u8; r.length_bytes as usize];
                let data = blocking(move || disk.read_replica_raw(id, offset, &mut data).map(|()| data))
                    .await
                    .inspect_err(|e| self.report_if_corrupt(e, r.volume_id, r.disk_id))?;
                return Ok(Response::new(pb::ReadFragmentResponse { data: data.into() }));
            }
            let index = fragment_index(r.fragment_index)?;
            let id = ExtentId::fragment(r.volume_id, index);
            let (offset, len) = (r.offset_bytes, r.length_bytes);
            // Into a pooled buffer, answered without a copy (as ReadRecord).
            let mut buf = self.shared.read_buffers.take();
            let (skip, buf) = blocking(move || {
                let skip = disk.read_fragment_into(id, offset, len, &mut buf)?;
                Ok((skip, buf))
            })
            .await
            .inspect_err(|e| self.report_if_corrupt(e, r.volume_id, r.disk_id))?;
            let data = self.shared.read_buffers.share(buf, skip..skip + len as usize);
            Ok(Response::new(pb::ReadFragmentResponse { data }))
        }
        .await;
        let read_bytes = result.as_ref().map_or(0, |r| r.get_ref().data.len() as u64);
        self.shared.metrics.fragment_reads.record(result.is_ok(), read_bytes);
        result
    }

    async fn write_fragment(
        &self,
        req: Request<Streaming<pb::WriteFragmentRequest>>,
    ) -> Result<Response<pb::WriteFragmentResponse>, Status> {
        self.write_fragment_from(req).await.map(Response::new)
    }

    async fn stat_extent(&self, req: Request<pb::ExtentRef>) -> Result<Response<pb::ExtentStat>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let id = extent_id(&r)?;
        let disk = self.shared.disks.require(r.disk_id)?;
        match disk.extent_info(id) {
            Ok(info) => Ok(Response::new(pb::ExtentStat {
                exists: true,
                state: match info.state {
                    ExtentState::Open => pb::ExtentState::Open,
                    ExtentState::Sealed => pb::ExtentState::Sealed,
                }
                .into(),
                length_bytes: info.length_bytes,
                chunk_size_bytes: info.chunk_size_bytes,
                failed: info.failed,
            })),
            Err(DiskError::UnknownExtent(_)) => Ok(Response::new(pb::ExtentStat::default())),
            Err(e) => Err(crate::errors::disk_status(&e)),
        }
    }

    async fn delete_extent(
        &self,
        req: Request<pb::ExtentRef>,
    ) -> Result<Response<pb::DeleteExtentResponse>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let id = extent_id(&r)?;
        let disk = self.shared.disks.require(r.disk_id)?;
        let index = (r.part() == ExtentPart::Fragment).then_some(r.fragment_index);
        if r.part() != ExtentPart::Fragment {
            self.shared.recent.forget_replica(r.disk_id, r.volume_id);
        }
        if placed_here(&self.shared.cluster, r.volume_id, r.disk_id, index).await? {
            return Err(status(
                Code::FailedPrecondition,
                code::EXTENT_LIVE,
                format!(
                    "the master still places this {} of volume {} on disk {}",
                    r.part().name(),
                    r.volume_id,
                    r.disk_id
                ),
            ));
        }
        let deleted = blocking(move || match disk.delete(id) {
            Ok(_) => Ok(true),
            Err(DiskError::UnknownExtent(_)) => Ok(false),
            Err(e) => Err(e),
        })
        .await?;
        Ok(Response::new(pb::DeleteExtentResponse { deleted }))
    }
}

impl VolumeService {
    /// WriteFragment for a caller in this process (`cellar dev`'s encode, copy and
    /// reconstruct tasks): the same handler, secret check, limits and metrics as the RPC,
    /// fed from a channel instead of an HTTP/2 stream. The sender dropping the channel
    /// ends the stream, as a client ending its request stream does; a short fragment is
    /// refused and deleted either way.
    pub async fn write_fragment_local(
        &self,
        req: Request<mpsc::Receiver<pb::WriteFragmentRequest>>,
    ) -> Result<pb::WriteFragmentResponse, Status> {
        let (metadata, extensions, rx) = req.into_parts();
        let stream = ReceiverStream::new(rx).map(Ok::<_, Status>);
        self.write_fragment_from(Request::from_parts(metadata, extensions, stream)).await
    }

    /// The WriteFragment call on any stream of its messages: the gRPC stream, or, for a
    /// caller in this process, a channel (see [`VolumeService::write_fragment_local`]).
    async fn write_fragment_from<S>(&self, req: Request<S>) -> Result<pb::WriteFragmentResponse, Status>
    where
        S: Stream<Item = Result<pb::WriteFragmentRequest, Status>> + Unpin + Send,
    {
        let result: Result<pb::WriteFragmentResponse, Status> = async move {
            self.check(&req)?;
            let mut stream = req.into_inner();
            let first = stream
                .next()
                .await
                .transpose()?
                .ok_or_else(|| bad_request("WriteFragment needs a first message"))?;
            let h = first
                .header
                .ok_or_else(|| bad_request("the first WriteFragment message carries the header"))?;
            let index = fragment_index(h.fragment_index)?;
            let disk = self.shared.disks.require(h.disk_id)?;
            let id = ExtentId::fragment(h.volume_id, index);
            let chunk = u64::from(h.chunk_size_bytes);
            if chunk == 0 || !chunk.is_power_of_two() || chunk > STRIPE_BYTES as u64 {
                return Err(bad_request(format!(
                    "chunk size {chunk} must be a power of two up to {STRIPE_BYTES}"
                )));
            }
            // Replacing an extent the master still places here would destroy live data.
            if disk.extent_info(id).is_ok() {
                if placed_here(&self.shared.cluster, h.volume_id, h.disk_id, Some(h.fragment_index)).await? {
                    return Err(status(
                        Code::AlreadyExists,
                        code::EXTENT_LIVE,
                        format!("fragment {} of volume {} on disk {} is live", index, h.volume_id, h.disk_id),
                    ));
                }
                let d = disk.clone();
                blocking(move || d.delete(id).map(|_| ())).await?;
            }
            {
                let d = disk.clone();
                let (vid, len, cs) = (h.volume_id, h.fragment_len_bytes, h.chunk_size_bytes);
                blocking(move || d.create_fragment(vid, index, len, cs).map(|_| ())).await?;
            }
            let result = self.receive_fragment(&disk, id, &h, first, &mut stream).await;
            if result.is_err() {
                // A fragment cut short is garbage: free its space now, a retry writes it anew.
                let d = disk.clone();
                let _ = blocking(move || d.delete(id).map(|_| ())).await;
            }
            result
        }
        .await;
        let written_bytes = result.as_ref().map_or(0, |r| r.length_bytes);
        self.shared.metrics.fragment_writes.record(result.is_ok(), written_bytes);
        result
    }

    /// Receives the chunks of a new fragment in order, checking each chunk's CRC before it
    /// is written; then makes it durable, seals it and reads it back.
    async fn receive_fragment<S>(
        &self,
        disk: &Arc<Disk>,
        id: ExtentId,
        h: &pb::FragmentHeader,
        first: pb::WriteFragmentRequest,
        stream: &mut S,
    ) -> Result<pb::WriteFragmentResponse, Status>
    where
        S: Stream<Item = Result<pb::WriteFragmentRequest, Status>> + Unpin + Send,
    {
        let chunk = u64::from(h.chunk_size_bytes);
        let mut next_offset = 0u64;
        let mut message = Some(first);
        while let Some(m) = message.take() {
            if m.offset_bytes != next_offset {
                return Err(bad_request(format!(
                    "fragment data at {} where {next_offset} was due",
                    m.offset_bytes
                )));
            }
            let len = m.data.len() as u64;
            let end = next_offset + len;
            if end > h.fragment_len_bytes || (!len.is_multiple_of(chunk) && end != h.fragment_len_bytes) {
                return Err(bad_request(format!(
                    "fragment data {}+{len} is not whole chunks of the fragment",
                    m.offset_bytes
                )));
            }
            if m.chunk_crc32.len() as u64 != len.div_ceil(chunk) {
                return Err(bad_request("one chunk_crc32 per chunk is required"));
            }
            let first_chunk = next_offset / chunk;
            for (i, (bytes, crc)) in m.data.chunks(chunk as usize).zip(&m.chunk_crc32).enumerate() {
                if chunk_crc32(first_chunk + i as u64, bytes) != *crc {
                    return Err(status(
                        Code::DataLoss,
                        code::DATA_CORRUPT,
                        format!("chunk {} of the fragment arrived corrupt", first_chunk + i as u64),
                    ));
                }
            }
            let _permit = self.shared.budget.acquire(len).await;
            let d = disk.clone();
            let data = m.data;
            blocking(move || d.write_fragment(id, next_offset, &data)).await?;
            next_offset = end;
            message = stream.next().await.transpose()?;
        }
        if next_offset != h.fragment_len_bytes {
            return Err(bad_request(format!(
                "the stream ended at {next_offset} of a {}-byte fragment",
                h.fragment_len_bytes
            )));
        }
        let d = disk.clone();
        let len = h.fragment_len_bytes;
        let crc32 = blocking(move || {
            d.sync_fragment(id)?;
            d.seal_fragment(id)?;
            let mut hasher = crc32fast::Hasher::new();
            let mut at = 0u64;
            while at < len {
                let n = (len - at).min(STRIPE_BYTES as u64);
                hasher.update(&d.read_fragment(id, at, n)?);
                at += n;
            }
            Ok(hasher.finalize())
        })
        .await?;
        Ok(pb::WriteFragmentResponse { length_bytes: len, crc32 })
    }
}

#[tonic::async_trait]
impl LocalExtents for VolumeService {
    async fn append(&self, req: Request<pb::AppendRequest>) -> Result<pb::AppendResponse, Status> {
        Ok(Volume::append(self, req).await?.into_inner())
    }

    async fn read_record(
        &self,
        req: Request<pb::ReadRecordRequest>,
    ) -> Result<pb::ReadRecordResponse, Status> {
        Ok(Volume::read_record(self, req).await?.into_inner())
    }

    async fn read_fragment(
        &self,
        req: Request<pb::ReadFragmentRequest>,
    ) -> Result<pb::ReadFragmentResponse, Status> {
        Ok(Volume::read_fragment(self, req).await?.into_inner())
    }

    async fn write_fragment(
        &self,
        req: Request<mpsc::Receiver<pb::WriteFragmentRequest>>,
    ) -> Result<pb::WriteFragmentResponse, Status> {
        self.write_fragment_local(req).await
    }
}
