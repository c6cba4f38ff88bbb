//! Conversions between the client API's wire types (`cellar.master.v1`) and the master's
//! domain types, with the checks a request's fields get on the way in.

use cellar_proto::common::{ExtentPart, VolumeState as VolumeStatePb};
use cellar_proto::master as pb;
use tonic::Status;

use crate::command::{self, Hash32};
use crate::errors::bad_request;
use crate::tasks::{Part, TaskKind};
use crate::types::{
    DiskHealth, DiskRecord, ExtentPlace, NodeRecord, NodeState, TaskType, VolumeRecord, VolumeState,
};

/// Hashes in one Lookup call.
pub const LOOKUP_HASHES_MAX: usize = 10_000;
/// Length of any string field (addresses, zones, paths, reasons).
pub const STRING_MAX_BYTES: usize = 1024;

/// The hashes of a Lookup or DropReferences call: at most `LOOKUP_HASHES_MAX`, 32 bytes each.
pub(crate) fn parse_hashes(hashes: &[Vec<u8>]) -> Result<Vec<Hash32>, Status> {
    if hashes.len() > LOOKUP_HASHES_MAX {
        return Err(bad_request(format!("at most {LOOKUP_HASHES_MAX} hashes per call")));
    }
    hashes.iter().map(|h| Hash32::from_slice(h).ok_or_else(|| bad_request("a hash is 32 bytes"))).collect()
}

/// A call's request id as commands carry it.
pub fn request_id(r: &pb::RequestId) -> command::RequestId {
    command::RequestId { client_id: r.client_id, seq: r.sequence, lowest_pending: r.lowest_pending }
}

pub(crate) fn bounded(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > STRING_MAX_BYTES {
        return Err(bad_request(format!("{field} is longer than {STRING_MAX_BYTES} bytes")));
    }
    Ok(())
}

/// A volume state on the wire.
pub fn volume_state_pb(state: VolumeState) -> VolumeStatePb {
    match state {
        VolumeState::Open => VolumeStatePb::Open,
        VolumeState::Sealed => VolumeStatePb::Sealed,
        VolumeState::Coded => VolumeStatePb::Coded,
    }
}

fn part_pb(part: Part) -> ExtentPart {
    match part {
        Part::Replica => ExtentPart::Replica,
        Part::Fragment { .. } => ExtentPart::Fragment,
    }
}

fn task_type_pb(kind: TaskType) -> pb::TaskKind {
    match kind {
        TaskType::Encode => pb::TaskKind::Encode,
        TaskType::Reconstruct => pb::TaskKind::Reconstruct,
        TaskType::Copy => pb::TaskKind::Copy,
        TaskType::Delete => pb::TaskKind::Delete,
    }
}

/// The kinds a PullTasks call defers; an unknown or unspecified kind is refused.
pub(crate) fn task_types(kinds: &[i32]) -> Result<Vec<TaskType>, Status> {
    kinds
        .iter()
        .map(|&k| match pb::TaskKind::try_from(k) {
            Ok(pb::TaskKind::Encode) => Ok(TaskType::Encode),
            Ok(pb::TaskKind::Reconstruct) => Ok(TaskType::Reconstruct),
            Ok(pb::TaskKind::Copy) => Ok(TaskType::Copy),
            Ok(pb::TaskKind::Delete) => Ok(TaskType::Delete),
            Ok(pb::TaskKind::Unspecified) | Err(_) => Err(bad_request(format!("unknown task kind {k}"))),
        })
        .collect()
}

pub(crate) fn node_pb(n: &NodeRecord) -> pb::Node {
    pb::Node {
        node_id: n.node_id,
        address: n.address.clone(),
        zone: n.zone.clone(),
        state: match n.state {
            NodeState::Up => pb::NodeState::Up,
            NodeState::Down => pb::NodeState::Down,
        }
        .into(),
        last_heartbeat_unix_ms: n.last_heartbeat_unix_ms,
    }
}

pub(crate) fn disk_pb(d: &DiskRecord) -> pb::Disk {
    pb::Disk {
        disk_id: d.disk_id,
        node_id: d.node_id,
        uuid: d.uuid.clone(),
        path: d.path.clone(),
        capacity_bytes: d.capacity_bytes,
        used_bytes: d.used_bytes,
        free_bytes: d.free_bytes,
        health: match d.health {
            DiskHealth::Ok => pb::DiskHealth::Ok,
            DiskHealth::Failed => pb::DiskHealth::Failed,
        }
        .into(),
        trash_bytes: d.trash_bytes,
        trash_extents: d.trash_extents,
    }
}

/// The protobuf form of a volume.
pub fn volume_pb(v: &VolumeRecord) -> pb::Volume {
    let extent = |p: &crate::types::ExtentPlace| pb::Extent { node_id: p.node_id, disk_id: p.disk_id };
    pb::Volume {
        volume_id: v.volume_id,
        state: volume_state_pb(v.state).into(),
        scheme: Some(v.scheme.into()),
        replicas: v.replicas.iter().map(extent).collect(),
        fragments: v.fragments.iter().map(extent).collect(),
        generation: v.generation,
        size_bytes: v.size_bytes,
        lease_epoch: v.lease.as_ref().map_or(0, |l| l.epoch),
        lease_holder: v.lease.as_ref().map_or(String::new(), |l| l.holder.clone()),
        lease_expires_unix_ms: v.lease.as_ref().map_or(0, |l| l.expires_unix_ms),
        bad_disks: v.bad_disks.clone(),
    }
}

pub(crate) fn index_pb(e: &command::IndexEntryView) -> pb::IndexEntry {
    pb::IndexEntry {
        hash: e.hash.0.to_vec(),
        volume_id: e.volume_id,
        offset_bytes: e.offset_bytes,
        payload_bytes: e.payload_bytes,
        crc32: e.crc32,
        references: e.references,
        digest: e.digest.map_or_else(Vec::new, |d| d.0.to_vec()),
    }
}

pub(crate) fn task_pb(t: &crate::tasks::TaskRecord) -> pb::Task {
    let state = match t.state {
        crate::tasks::TaskState::Pending => pb::TaskState::Pending,
        crate::tasks::TaskState::Claimed => pb::TaskState::Claimed,
        crate::tasks::TaskState::Failed => pb::TaskState::Failed,
    };
    let mut task = pb::Task {
        task_id: t.task_id,
        kind: task_type_pb(t.kind.task_type()).into(),
        volume_id: t.kind.volume_id(),
        attempts: t.attempts,
        claimed_until_unix_ms: t.claimed_until_unix_ms,
        state: state.into(),
        detail: t.detail.clone(),
        node_id: t.node_id,
        ..Default::default()
    };
    let extent = |p: &ExtentPlace| Some(pb::Extent { node_id: p.node_id, disk_id: p.disk_id });
    match &t.kind {
        TaskKind::Encode { fragments, .. } => {
            task.fragments =
                fragments.iter().map(|p| pb::Extent { node_id: p.node_id, disk_id: p.disk_id }).collect();
        }
        TaskKind::Reconstruct { index, target, replaces, .. } => {
            task.part = ExtentPart::Fragment.into();
            task.fragment_index = *index;
            task.target = extent(target);
            task.replaces = extent(replaces);
        }
        TaskKind::Copy { part, source, target, replaces, .. } => {
            task.part = part_pb(*part).into();
            task.fragment_index = part.fragment_index();
            task.source = extent(source);
            task.target = extent(target);
            task.replaces = extent(replaces);
        }
        TaskKind::Delete { part, extent: place, .. } => {
            task.part = part_pb(*part).into();
            task.fragment_index = part.fragment_index();
            task.source = extent(place);
        }
    }
    task
}

/// The task a protobuf describes (for EnqueueTask; encode tasks come from sealing).
pub fn task_kind_from_pb(t: &pb::Task) -> Result<TaskKind, Status> {
    let kind = t.kind();
    let place = |field: &str, e: &Option<pb::Extent>| {
        e.as_ref()
            .map(|e| ExtentPlace { node_id: e.node_id, disk_id: e.disk_id })
            .ok_or_else(|| bad_request(format!("a {} task needs `{field}`", kind.name())))
    };
    let part = match (t.part(), kind) {
        (ExtentPart::Replica, _) => Part::Replica,
        (ExtentPart::Fragment, _) | (ExtentPart::Unspecified, pb::TaskKind::Reconstruct) => {
            Part::Fragment { index: t.fragment_index }
        }
        (ExtentPart::Unspecified, _) => {
            return Err(bad_request(format!("part must be replica or fragment, not {}", t.part)));
        }
    };
    let volume_id = t.volume_id;
    match kind {
        pb::TaskKind::Reconstruct => Ok(TaskKind::Reconstruct {
            volume_id,
            index: part.fragment_index(),
            target: place("target", &t.target)?,
            replaces: place("replaces", &t.replaces)?,
        }),
        pb::TaskKind::Copy => Ok(TaskKind::Copy {
            volume_id,
            part,
            source: place("source", &t.source)?,
            target: place("target", &t.target)?,
            replaces: place("replaces", &t.replaces)?,
        }),
        pb::TaskKind::Delete => Ok(TaskKind::Delete { volume_id, part, extent: place("source", &t.source)? }),
        other => Err(bad_request(format!("cannot queue a task of kind {} ({})", other.name(), t.kind))),
    }
}
