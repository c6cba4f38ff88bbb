//! Delete: an extent the master's placement no longer names goes to the trash (kept
//! `trash_retention` before it is unlinked). The master is asked again first, so a delete
//! never removes an extent that became live again; an extent of a volume the master no
//! longer knows (reclaimed by compaction) is deleted.

use std::sync::Arc;

use cellar_blockstore::{Error as DiskError, ExtentId};
use cellar_proto::common::{ExtentPart, VolumeState};
use cellar_proto::error_code as code;
use cellar_proto::master as mpb;
use tonic::{Code, Status};

use crate::disks::blocking;
use crate::errors::{bad_request, status};
use crate::shared::Shared;

pub(super) async fn run(shared: &Arc<Shared>, task: &mpb::Task) -> Result<String, Status> {
    let Some(extent) = &task.source else { return Err(bad_request("a delete task needs source")) };
    let volume_id = task.volume_id;
    let (id, live) = match shared.cluster.volume(volume_id).await {
        Ok(v) => match task.part() {
            ExtentPart::Replica => (
                ExtentId::replica(volume_id),
                v.state() != VolumeState::Coded && v.replicas.iter().any(|r| r.disk_id == extent.disk_id),
            ),
            ExtentPart::Fragment => {
                let index = u8::try_from(task.fragment_index)
                    .map_err(|_| bad_request("fragment index out of range"))?;
                let live = v.fragments.get(usize::from(index)).is_some_and(|f| f.disk_id == extent.disk_id);
                (ExtentId::fragment(volume_id, index), live)
            }
            ExtentPart::Unspecified => {
                return Err(bad_request(format!("cannot delete a part {}", task.part)));
            }
        },
        // Reclaimed by compaction: nothing places any of its extents (volume ids are
        // never reused).
        Err(e) if cellar_proto::ErrorCode::of(&e) == Some(cellar_proto::ErrorCode::UnknownVolume) => {
            let id = match task.part() {
                ExtentPart::Fragment => ExtentId::fragment(
                    volume_id,
                    u8::try_from(task.fragment_index)
                        .map_err(|_| bad_request("fragment index out of range"))?,
                ),
                _ => ExtentId::replica(volume_id),
            };
            (id, false)
        }
        Err(e) => return Err(e),
    };
    if live {
        return Err(status(
            Code::FailedPrecondition,
            code::EXTENT_LIVE,
            format!(
                "the master places this {} of volume {volume_id} on disk {} again",
                task.part().name(),
                extent.disk_id
            ),
        ));
    }
    let disk = shared.disks.require(extent.disk_id)?;
    let deleted = blocking(move || match disk.delete(id) {
        Ok(_) => Ok(true),
        Err(DiskError::UnknownExtent(_)) => Ok(false),
        Err(e) => Err(e),
    })
    .await?;
    Ok(if deleted { format!("{id} moved to the trash") } else { format!("{id} was already gone") })
}
