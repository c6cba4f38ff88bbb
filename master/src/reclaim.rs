//! Reclaiming a volume that holds no referenced block (the `DeleteVolume` command, which
//! the compaction planner proposes): its unreferenced index entries, its record and every
//! task of it go; a delete is queued for each of its extents (and for the targets of the
//! tasks dropped, which may have been half-written).

use crate::command::{CommandError, Hash32, Response};
use crate::state::{Kv, StateError, index_entry, index_key, volume};
use crate::tasks::{Part, TaskKind};
use crate::types::{Counters, VolumeState};

/// Applies `DeleteVolume`: refused unless the volume still has the length the planner saw
/// (an open volume that took a block since is not reclaimed) and every listed entry that
/// still points into it has no reference. The planner lists every entry of the volume it
/// saw; a sealed or coded volume takes no new entry, and an open one changes length with
/// each, so no referenced block can be left behind unlisted.
pub fn delete_volume(
    kv: &mut dyn Kv,
    c: &mut Counters,
    volume_id: u64,
    size_bytes: u64,
    entries: &[Hash32],
) -> Result<Response, StateError> {
    let refused = |detail: String| Ok(Response::Refused { error: CommandError::BadRequest { detail } });
    let Some(v) = volume(kv, volume_id)? else {
        return Ok(Response::Refused { error: CommandError::UnknownVolume { volume_id } });
    };
    if v.size_bytes != size_bytes {
        return refused(format!("volume {volume_id} is {} bytes now, not {size_bytes}", v.size_bytes));
    }
    let mut dead = Vec::new();
    for hash in entries {
        if let Some(e) = index_entry(kv, hash)?
            && e.volume_id == volume_id
        {
            if e.references > 0 {
                return refused(format!("block {hash} in volume {volume_id} is referenced again"));
            }
            dead.push(*hash);
        }
    }
    for hash in &dead {
        kv.delete(&index_key(hash));
        c.index_entries = c.index_entries.saturating_sub(1);
    }
    // Its tasks go; what they may have written is deleted with the rest.
    let mut targets = Vec::new();
    for task in crate::tasks::volume_tasks(kv, volume_id)? {
        match &task.kind {
            TaskKind::Delete { .. } => continue,
            TaskKind::Encode { fragments, .. } => {
                targets.extend(
                    fragments.iter().enumerate().map(|(i, f)| (Part::Fragment { index: i as u32 }, *f)),
                );
            }
            TaskKind::Reconstruct { index, target, .. } => {
                targets.push((Part::Fragment { index: *index }, *target))
            }
            TaskKind::Copy { part, target, .. } => targets.push((*part, *target)),
        }
        crate::tasks::drop_task(kv, c, &task)?;
    }
    let slot = match v.state {
        VolumeState::Open => 0,
        VolumeState::Sealed => 1,
        VolumeState::Coded => 2,
    };
    c.volumes_by_state[slot] = c.volumes_by_state[slot].saturating_sub(1);
    kv.delete(&crate::state::id_key(crate::state::PREFIX_VOLUME, volume_id));
    let mut extents: Vec<(Part, crate::types::ExtentPlace)> =
        v.replicas.iter().map(|r| (Part::Replica, *r)).collect();
    extents.extend(v.fragments.iter().enumerate().map(|(i, f)| (Part::Fragment { index: i as u32 }, *f)));
    for t in targets {
        if !extents.contains(&t) {
            extents.push(t);
        }
    }
    for (part, place) in extents {
        crate::tasks::delete_later(kv, c, volume_id, part, place)?;
    }
    Ok(Response::Empty)
}
