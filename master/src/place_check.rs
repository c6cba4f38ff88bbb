//! Checks of a placement a command names against the state: healthy disks of the named
//! nodes, one fragment per disk.

use crate::command::CommandError;
use crate::state::{Kv, StateError, disk};
use crate::types::{DiskHealth, ExtentPlace, VolumeRecord};

/// Checks an encode placement: one healthy disk of the named node per fragment, no disk
/// twice.
pub fn check_fragment_places(
    kv: &dyn Kv,
    v: &VolumeRecord,
    fragments: &[ExtentPlace],
) -> Result<Option<CommandError>, StateError> {
    let expected = v.scheme.fragment_count();
    if expected != fragments.len() {
        return Ok(Some(CommandError::BadRequest {
            detail: format!("scheme {} takes {expected} fragments, {} given", v.scheme, fragments.len()),
        }));
    }
    for (i, place) in fragments.iter().enumerate() {
        if fragments[..i].iter().any(|p| p.disk_id == place.disk_id) {
            return Ok(Some(CommandError::BadRequest {
                detail: format!("disk {} holds two fragments", place.disk_id),
            }));
        }
        if let Some(error) = check_place(kv, place)? {
            return Ok(Some(error));
        }
    }
    Ok(None)
}

/// Checks that `place` names a healthy disk of its node.
pub fn check_place(kv: &dyn Kv, place: &ExtentPlace) -> Result<Option<CommandError>, StateError> {
    match disk(kv, place.disk_id)? {
        Some(d) if d.node_id == place.node_id && d.health == DiskHealth::Ok => Ok(None),
        _ => Ok(Some(CommandError::UnknownDisk {
            disk_id: place.disk_id,
            detail: format!("not a healthy disk of node {}", place.node_id),
        })),
    }
}
