//! Reconstruct: one lost fragment is rebuilt from k survivors, stripe by stripe, onto the
//! disk the master named. Survivors that fail a read are dropped (and reported when their
//! bytes are bad) and the stripe is read again from others.

use std::sync::Arc;

use cellar_erasure::Codec;
use cellar_proto::common::VolumeState;
use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use cellar_proto::volume as pb;
use tonic::{Code, Status};

use crate::client::{FragmentSink, read_fragment_range};
use crate::errors::{bad_request, code_of, status};
use crate::shared::Shared;
use crate::{FRAGMENT_CHUNK_BYTES, STRIPE_BYTES};

pub(super) async fn run(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    let v = shared.cluster.volume(task.volume_id).await?;
    let index = task.fragment_index as usize;
    let (Some(target), Some(replaces)) = (&task.target, &task.replaces) else {
        return Err(bad_request("a reconstruct task needs target and replaces"));
    };
    if v.state() != VolumeState::Coded {
        return Err(bad_request(format!("volume {} is {}, not coded", v.volume_id, v.state().name())));
    }
    match v.fragments.get(index) {
        Some(f) if f.disk_id == target.disk_id => return Ok("already reconstructed".into()),
        Some(f) if f.disk_id == replaces.disk_id => {}
        _ => return Err(bad_request(format!("fragment {index} of volume {} has moved", v.volume_id))),
    }
    let layout = super::layout_of(&v)?;
    let codec = Codec::new(layout.scheme()).map_err(|e| bad_request(e.to_string()))?;
    let k = layout.scheme().data_count();
    let mut survivors: Vec<(usize, mpb::Extent)> = v
        .fragments
        .iter()
        .enumerate()
        .filter(|(i, f)| *i != index && !v.bad_disks.contains(&f.disk_id))
        .map(|(i, f)| (i, *f))
        .collect();
    let header = pb::FragmentHeader {
        volume_id: v.volume_id,
        disk_id: target.disk_id,
        fragment_index: index as u32,
        fragment_len_bytes: layout.fragment_len_bytes(),
        chunk_size_bytes: FRAGMENT_CHUNK_BYTES as u32,
    };
    let mut sink = FragmentSink::open(shared.cluster.extent_client(target.node_id).await?, header);
    let f = layout.fragment_len_bytes();
    let mut offset = 0u64;
    while offset < f {
        let len = (f - offset).min(STRIPE_BYTES as u64);
        let rows = loop {
            if survivors.len() < k {
                return Err(status(
                    Code::FailedPrecondition,
                    code::INTERNAL,
                    format!("only {} of the {k} fragments needed are readable", survivors.len()),
                ));
            }
            let chosen: Vec<(usize, mpb::Extent)> = survivors[..k].to_vec();
            let reads = chosen.iter().map(|(i, e)| {
                read_fragment_range(&shared.cluster, e.node_id, e.disk_id, v.volume_id, *i, offset, len)
            });
            let results = futures::future::join_all(reads).await;
            let mut failed = Vec::new();
            let mut rows = Vec::with_capacity(k);
            for ((i, e), r) in chosen.iter().zip(results) {
                match r {
                    Ok(bytes) => rows.push((*i, bytes)),
                    Err(err) => {
                        tracing::warn!(volume = v.volume_id, fragment = i, error = %err.message(), "survivor unreadable");
                        if code_of(&err) == Some(cellar_proto::ErrorCode::ExtentNotFound) {
                            shared.cluster.report_bad_extent(
                                v.volume_id,
                                e.disk_id,
                                err.message().to_string(),
                            );
                        }
                        failed.push(*i);
                    }
                }
            }
            if failed.is_empty() {
                break rows;
            }
            survivors.retain(|(i, _)| !failed.contains(i));
        };
        shared.repair_pace.take(len).await;
        let mut out = vec![0u8; len as usize];
        codec.rebuild_stripe(index, &rows, &mut out).map_err(|e| bad_request(e.to_string()))?;
        if sink.send(out).await.is_err() {
            return Err(super::closed_sink_error(sink).await);
        }
        offset += len;
    }
    sink.finish().await?;
    Ok(format!("rebuilt fragment {index} ({f} bytes) onto disk {}", target.disk_id))
}
