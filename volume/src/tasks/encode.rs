//! Encode: a sealed volume's local replica becomes k + m fragments on the disks the
//! master named (on this or other servers).
//!
//! Two passes over the local replica, in bounded memory:
//! 1. a verified scan (every record's header and payload CRC) computes the CRC32 of each
//!    data fragment's share of the volume;
//! 2. the stripe encoder reads the same bytes raw, stripe by stripe, and streams each
//!    stripe's k + m shards to the fragment writers (at most [`crate::FRAGMENT_QUEUE_MAX`]
//!    stripes queued per fragment), recomputing the same CRCs as it goes.
//!
//! The encode succeeds only if both passes saw the same bytes and every server read back
//! exactly the bytes it was sent. Memory: (k + m) stripe buffers plus the queues, about
//! 36 MiB for rs-6-3 at 1 MiB stripes, whatever the volume's size.

use std::sync::Arc;

use cellar_blockstore::{Disk, Error as DiskError, ExtentId};
use cellar_erasure::{ErasureError, Layout, StripeEncoder};
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use tonic::{Code, Status};

use crate::client::FragmentSink;
use crate::disks::blocking;
use crate::errors::{bad_request, status};
use crate::service::Shared;
use crate::{FRAGMENT_CHUNK_BYTES, STRIPE_BYTES};

pub(super) async fn run(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    let v = shared.cluster.volume(task.volume_id).await?;
    let same_placement = v.fragments.len() == task.fragments.len()
        && v.fragments.iter().zip(&task.fragments).all(|(a, b)| a.disk_id == b.disk_id);
    match v.state.as_str() {
        "coded" if same_placement => return Ok("already coded".into()),
        "coded" => {
            return Err(status(
                Code::FailedPrecondition,
                cellar_proto::error_code::BAD_REQUEST,
                format!("volume {} is coded with another placement", v.volume_id),
            ));
        }
        "sealed" => {}
        other => return Err(bad_request(format!("volume {} is {other}, not sealed", v.volume_id))),
    }
    let layout = super::layout_of(&v)?;
    let count = layout.scheme().fragment_count();
    if task.fragments.len() != count {
        return Err(bad_request(format!(
            "{} needs {count} fragment places, the task has {}",
            v.scheme,
            task.fragments.len()
        )));
    }
    let replica = v
        .replicas
        .iter()
        .find(|r| r.node_id == shared.node_id && shared.disks.get(r.disk_id).is_some())
        .ok_or_else(|| bad_request(format!("no replica of volume {} on this node", v.volume_id)))?;
    let disk = shared.disks.require(replica.disk_id)?;
    let mut sinks = Vec::with_capacity(count);
    for (index, place) in task.fragments.iter().enumerate() {
        let client = shared.cluster.extent_client(place.node_id).await?;
        let header = pb::FragmentHeader {
            volume_id: v.volume_id,
            disk_id: place.disk_id,
            fragment_index: index as u32,
            fragment_len_bytes: layout.fragment_len_bytes(),
            chunk_size_bytes: FRAGMENT_CHUNK_BYTES as u32,
        };
        sinks.push(FragmentSink::open(client, header));
    }
    let result = encode_volume(disk, v.volume_id, layout, sinks).await;
    if let Err(e) = &result
        && crate::errors::code_of(e) == Some(cellar_proto::error_code::DATA_CORRUPT)
        && e.message().contains("replica")
    {
        shared.cluster.report_bad_extent(v.volume_id, replica.disk_id, e.message().to_string());
    }
    result?;
    Ok(format!(
        "encoded {} bytes into {count} fragments of {} bytes",
        layout.volume_len_bytes(),
        layout.fragment_len_bytes()
    ))
}

#[derive(Debug, thiserror::Error)]
enum PassError {
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    #[error("a fragment stream closed early")]
    SinkClosed,
}

/// CRC32 of each data fragment's share of the volume, from a verified scan.
fn scan_crcs(disk: &Disk, id: ExtentId, layout: &Layout) -> Result<Vec<u32>, DiskError> {
    let k = layout.scheme().data_count();
    let f = layout.fragment_len_bytes();
    let mut hashers = vec![crc32fast::Hasher::new(); k];
    let mut position = 0u64;
    let mut feed = |bytes: &[u8], position: &mut u64| {
        let mut rest = bytes;
        while !rest.is_empty() {
            let i = (*position / f) as usize;
            let n = (((i as u64 + 1) * f - *position) as usize).min(rest.len());
            if let Some(h) = hashers.get_mut(i) {
                h.update(&rest[..n]);
            }
            *position += n as u64;
            rest = &rest[n..];
        }
    };
    for record in disk.scan_replica(id)? {
        let record = record?;
        feed(&record.header.encode(), &mut position);
        feed(&record.payload, &mut position);
    }
    if position != layout.volume_len_bytes() {
        return Err(DiskError::BadSealLength {
            extent: id,
            length_bytes: layout.volume_len_bytes(),
            reason: format!("the replica holds {position} bytes"),
        });
    }
    Ok(hashers.into_iter().map(crc32fast::Hasher::finalize).collect())
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
    {
        let d = disk.clone();
        blocking(move || d.seal_replica(id, Some(size))).await?;
    }
    let scanned = {
        let (d, l) = (disk.clone(), layout);
        blocking(move || scan_crcs(&d, id, &l)).await.map_err(|e| {
            status(
                e.code(),
                cellar_proto::error_code::DATA_CORRUPT,
                format!("local replica: {}", e.message()),
            )
        })?
    };
    let f = layout.fragment_len_bytes();
    let k = layout.scheme().data_count();
    let pass = tokio::task::spawn_blocking(move || {
        let mut sinks = sinks;
        let mut hashers = vec![crc32fast::Hasher::new(); k];
        let outcome = (|| -> Result<(), PassError> {
            let mut encoder = StripeEncoder::new(layout, STRIPE_BYTES)?;
            for s in 0..encoder.stripe_count() {
                let stripe = encoder.encode::<PassError, _>(s, |offset, buf| {
                    disk.read_replica_raw(id, offset, buf)?;
                    if let Some(h) = hashers.get_mut((offset / f) as usize) {
                        h.update(buf);
                    }
                    Ok(())
                })?;
                for (i, shard) in stripe.fragments() {
                    let sink = &mut sinks[i];
                    let message = sink.framer.frame(shard.to_vec());
                    sink.tx.blocking_send(message).map_err(|_| PassError::SinkClosed)?;
                }
            }
            Ok(())
        })();
        let crcs: Vec<u32> = hashers.into_iter().map(crc32fast::Hasher::finalize).collect();
        (sinks, crcs, outcome)
    });
    let (sinks, read_crcs, outcome) = pass
        .await
        .map_err(|e| status(Code::Internal, cellar_proto::error_code::INTERNAL, format!("encoder: {e}")))?;
    // Every stream is ended and awaited, so that a failed one reports its own status.
    let finished = futures::future::join_all(sinks.into_iter().map(FragmentSink::finish)).await;
    for (i, f) in finished.into_iter().enumerate() {
        f.map_err(|e| Status::new(e.code(), format!("fragment {i}: {}", e.message())))?;
    }
    match outcome {
        Ok(()) => {}
        Err(PassError::Disk(e)) => return Err(crate::errors::disk_status(&e)),
        Err(e) => return Err(status(Code::Internal, cellar_proto::error_code::INTERNAL, e.to_string())),
    }
    if scanned != read_crcs {
        return Err(status(
            Code::DataLoss,
            cellar_proto::error_code::DATA_CORRUPT,
            "local replica: bytes read for encoding differ from the verified scan".to_string(),
        ));
    }
    Ok(())
}
