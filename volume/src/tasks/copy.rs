//! Copy: an extent is copied from `source` onto this node's `target` disk, verified, and
//! the master then swaps it for `replaces` in the placement.
//! - A replica (of a sealed volume) travels as verified records (ScanReplica); each
//!   record's payload CRC is checked again here before it is appended.
//! - A fragment travels in stripe-sized ranges, checked by chunk CRCs on both sides.

use std::sync::Arc;

use cellar_blockstore::{ExtentId, RECORD_HEADER_BYTES, RecordHeader};
use cellar_proto::common::{ExtentPart, VolumeState};
use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::client::{FragmentSink, read_fragment_range};
use crate::deadline::bounded;
use crate::disks::blocking;
use crate::errors::{bad_request, status};
use crate::shared::Shared;
use crate::{FRAGMENT_CHUNK_BYTES, STRIPE_BYTES};

pub(super) async fn run(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    let v = shared.cluster.volume(task.volume_id).await?;
    let (Some(source), Some(target), Some(replaces)) = (&task.source, &task.target, &task.replaces) else {
        return Err(bad_request("a copy task needs source, target and replaces"));
    };
    match task.part() {
        ExtentPart::Replica => copy_replica(shared, &v, source, target, replaces).await,
        ExtentPart::Fragment => {
            copy_fragment(shared, &v, task.fragment_index as usize, source, target, replaces).await
        }
        ExtentPart::Unspecified => Err(bad_request(format!("cannot copy a part {}", task.part))),
    }
}

async fn copy_replica(
    shared: &Arc<Shared>,
    v: &mpb::Volume,
    source: &mpb::Extent,
    target: &mpb::Extent,
    replaces: &mpb::Extent,
) -> Result<String, Status> {
    if v.state() != VolumeState::Sealed {
        return Err(bad_request(format!(
            "volume {} is {}; replicas are copied while sealed",
            v.volume_id,
            v.state().name()
        )));
    }
    if v.replicas.iter().any(|r| r.disk_id == target.disk_id) {
        return Ok("already copied".into());
    }
    if !v.replicas.iter().any(|r| r.disk_id == replaces.disk_id) {
        return Err(bad_request(format!(
            "volume {} has no replica on disk {}",
            v.volume_id, replaces.disk_id
        )));
    }
    let disk = shared.disks.require(target.disk_id)?;
    let id = ExtentId::replica(v.volume_id);
    let volume_id = v.volume_id;
    {
        // A copy cut short earlier is garbage (the placement does not name this disk).
        let d = disk.clone();
        blocking(move || {
            match d.delete(id) {
                Ok(_) | Err(cellar_blockstore::Error::UnknownExtent(_)) => {}
                Err(e) => return Err(e),
            }
            d.create_replica(volume_id).map(|_| ())
        })
        .await?;
    }
    if v.size_bytes == 0 {
        // Sealed before anything was acknowledged: the copy is an empty replica (a scan to
        // offset 0 would mean "to the end", records no put was acknowledged for).
        blocking(move || disk.seal_replica(id, Some(0))).await?;
        return Ok(format!("copied an empty replica to disk {}", target.disk_id));
    }
    let mut client = shared.cluster.node_client(source.node_id).await?;
    let deadlines = *shared.cluster.deadlines();
    let mut stream = bounded(
        deadlines.control,
        "scan replica",
        client.scan_replica(pb::ScanReplicaRequest {
            volume_id,
            disk_id: source.disk_id,
            from_offset_bytes: 0,
            to_offset_bytes: v.size_bytes,
        }),
    )
    .await?
    .into_inner();
    let block_max = shared.block_size_max_bytes;
    let mut end = 0u64;
    // Each message of the scan is bounded like one read: a source that stops answering
    // mid-copy fails the task (it is retried) instead of holding a task slot forever.
    while let Some(chunk) =
        bounded(deadlines.read, "scan replica", async { Ok::<_, Status>(stream.next().await) }).await?
    {
        let chunk = chunk?;
        shared.repair_pace.take(chunk.records.len() as u64).await;
        if chunk.offset_bytes != end {
            return Err(bad_request(format!("scan chunk at {} where {end} was due", chunk.offset_bytes)));
        }
        let d = disk.clone();
        end = blocking(move || {
            let mut at = 0usize;
            let mut offset = chunk.offset_bytes;
            let corrupt =
                |offset, kind| cellar_blockstore::Error::Corrupt { extent: id, offset_bytes: offset, kind };
            while at < chunk.records.len() {
                let head: &[u8; RECORD_HEADER_BYTES] = chunk
                    .records
                    .get(at..at + RECORD_HEADER_BYTES)
                    .and_then(|h| h.try_into().ok())
                    .ok_or_else(|| corrupt(offset, cellar_blockstore::CorruptKind::Truncated))?;
                let header = RecordHeader::decode(head, offset, block_max).map_err(|k| corrupt(offset, k))?;
                let start = at + RECORD_HEADER_BYTES;
                let payload = chunk
                    .records
                    .get(start..start + header.payload_len_bytes as usize)
                    .ok_or_else(|| corrupt(offset, cellar_blockstore::CorruptKind::Truncated))?;
                header.check_payload(payload).map_err(|k| corrupt(offset, k))?;
                let location = d.append(id, Some(offset), &header.sha256, payload)?;
                offset = location.end_bytes();
                at = start + payload.len();
            }
            Ok(offset)
        })
        .await?;
    }
    if end != v.size_bytes {
        return Err(status(
            Code::DataLoss,
            code::DATA_CORRUPT,
            format!("the source replica ended at {end} of {}", v.size_bytes),
        ));
    }
    let size = v.size_bytes;
    blocking(move || disk.seal_replica(id, Some(size))).await?;
    Ok(format!("copied replica ({size} bytes) from disk {} to disk {}", source.disk_id, target.disk_id))
}

async fn copy_fragment(
    shared: &Arc<Shared>,
    v: &mpb::Volume,
    index: usize,
    source: &mpb::Extent,
    target: &mpb::Extent,
    replaces: &mpb::Extent,
) -> Result<String, Status> {
    if v.state() != VolumeState::Coded {
        return Err(bad_request(format!("volume {} is {}, not coded", v.volume_id, v.state().name())));
    }
    match v.fragments.get(index) {
        Some(f) if f.disk_id == target.disk_id => return Ok("already copied".into()),
        Some(f) if f.disk_id == replaces.disk_id => {}
        _ => return Err(bad_request(format!("fragment {index} of volume {} has moved", v.volume_id))),
    }
    let layout = super::layout_of(v)?;
    let f = layout.fragment_len_bytes();
    let header = pb::FragmentHeader {
        volume_id: v.volume_id,
        disk_id: target.disk_id,
        fragment_index: index as u32,
        fragment_len_bytes: f,
        chunk_size_bytes: FRAGMENT_CHUNK_BYTES as u32,
    };
    let mut sink = FragmentSink::open(shared.cluster.extent_client(target.node_id).await?, header);
    let mut offset = 0u64;
    while offset < f {
        let len = (f - offset).min(STRIPE_BYTES as u64);
        let bytes = read_fragment_range(
            &shared.cluster,
            source.node_id,
            source.disk_id,
            v.volume_id,
            index,
            offset,
            len,
        )
        .await?;
        shared.repair_pace.take(len).await;
        if sink.send(Vec::from(bytes)).await.is_err() {
            return Err(super::closed_sink_error(sink).await);
        }
        offset += len;
    }
    sink.finish().await?;
    Ok(format!("copied fragment {index} ({f} bytes) from disk {} to disk {}", source.disk_id, target.disk_id))
}
