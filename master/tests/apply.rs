//! The state transition function, over an in-memory map: every refusal leaves the state
//! byte-for-byte unchanged.

use std::collections::BTreeMap;

use cellar_master::apply::{self, Kv};
use cellar_master::command::{
    Command, CommandError, CommitOutcome, Digest16, DiskRegistration, DiskStat, Hash32, IndexCommit, Response,
};
use cellar_master::types::{ExtentPlace, VolumeState};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn register(state: &mut State, zone: &str, disks: usize) -> (u64, Vec<u64>) {
    let disks = (0..disks)
        .map(|d| DiskRegistration {
            uuid: format!("{zone}-{d}"),
            path: format!("/d{d}"),
            capacity_bytes: 1 << 40,
            used_bytes: 0,
            free_bytes: 1 << 40,
        })
        .collect();
    let cmd = Command::RegisterNode {
        node_id: None,
        address: format!("{zone}:1"),
        zone: zone.into(),
        disks,
        now_unix_ms: 1,
    };
    match apply::apply(state, &cmd).expect("apply") {
        Response::NodeRegistered { node_id, disk_ids } => (node_id, disk_ids),
        other => panic!("{other:?}"),
    }
}

/// A heartbeat's stat of a disk of one byte, healthy, empty, with no trash.
fn whole_and_empty(disk_id: u64) -> DiskStat {
    DiskStat {
        disk_id,
        capacity_bytes: 1,
        used_bytes: 0,
        free_bytes: 1,
        failed: false,
        trash_bytes: 0,
        trash_extents: 0,
    }
}

fn setup() -> (State, u64) {
    let mut state = State::new();
    let mut replicas = Vec::new();
    for zone in ["a", "b", "c"] {
        let (node_id, disks) = register(&mut state, zone, 2);
        replicas.push(ExtentPlace { node_id, disk_id: disks[0] });
    }
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: cellar_erasure::Scheme::RS_6_3,
        replicas,
        lease_ms: 1000,
        now_unix_ms: 10,
    };
    let volume_id = match apply::apply(&mut state, &cmd).expect("apply") {
        Response::Volume { volume } => volume.volume_id,
        other => panic!("{other:?}"),
    };
    (state, volume_id)
}

fn commit(volume_id: u64, epoch: u64, n: u8, offset: u64) -> IndexCommit {
    IndexCommit {
        hash: Hash32([n; 32]),
        volume_id,
        lease_epoch: epoch,
        offset_bytes: offset,
        // A record of 100 bytes: the 64-byte record header and 36 bytes of payload.
        payload_bytes: 36,
        crc32: 0,
        digest: None,
    }
}

fn commit_cmd(entries: Vec<IndexCommit>, now: u64) -> Command {
    Command::CommitIndex { entries, volume_size_max_bytes: 1 << 20, now_unix_ms: now, calls: vec![] }
}

#[test]
fn registering_again_keeps_node_and_disk_ids() {
    let mut state = State::new();
    let (node, disks) = register(&mut state, "a", 2);
    let again = Command::RegisterNode {
        node_id: Some(node),
        address: "a:2".into(),
        zone: "a".into(),
        disks: vec![DiskRegistration {
            uuid: "a-1".into(),
            path: "/d1".into(),
            capacity_bytes: 1,
            used_bytes: 0,
            free_bytes: 1,
        }],
        now_unix_ms: 2,
    };
    assert_eq!(
        apply::apply(&mut state, &again).expect("apply"),
        Response::NodeRegistered { node_id: node, disk_ids: vec![disks[1]] }
    );
    // The disk it did not bring (it could not be opened) is failed; the other is not.
    let health = |state: &State, disk_id| apply::disk(state, disk_id).expect("read").expect("disk").health;
    use cellar_master::types::DiskHealth;
    assert_eq!((health(&state, disks[0]), health(&state, disks[1])), (DiskHealth::Failed, DiskHealth::Ok));
    // Brought back whole, it comes back with the next heartbeat.
    let with_both = Command::RegisterNode {
        node_id: Some(node),
        address: "a:2".into(),
        zone: "a".into(),
        disks: (0..2)
            .map(|d| DiskRegistration {
                uuid: format!("a-{d}"),
                path: format!("/d{d}"),
                capacity_bytes: 1,
                used_bytes: 0,
                free_bytes: 1,
            })
            .collect(),
        now_unix_ms: 3,
    };
    assert!(matches!(apply::apply(&mut state, &with_both).expect("apply"), Response::NodeRegistered { .. }));
    let beat = Command::Heartbeat {
        node_id: node,
        disks: vec![whole_and_empty(disks[0]), whole_and_empty(disks[1])],
        now_unix_ms: 4,
    };
    assert!(matches!(apply::apply(&mut state, &beat).expect("apply"), Response::HeartbeatAck { .. }));
    assert_eq!((health(&state, disks[0]), health(&state, disks[1])), (DiskHealth::Ok, DiskHealth::Ok));
    let moved = Command::RegisterNode {
        node_id: Some(node),
        address: "a:2".into(),
        zone: "b".into(),
        disks: vec![],
        now_unix_ms: 3,
    };
    let before = state.clone();
    assert!(matches!(
        apply::apply(&mut state, &moved).expect("apply"),
        Response::Refused { error: CommandError::BadRequest { .. } }
    ));
    assert_eq!(state, before);
}

#[test]
fn commits_index_dedup_and_fence_stale_leases() {
    let (mut state, volume) = setup();
    let r =
        apply::apply(&mut state, &commit_cmd(vec![commit(volume, 1, 1, 0), commit(volume, 1, 1, 100)], 20))
            .expect("apply");
    let Response::Committed { outcomes } = r else { panic!("{r:?}") };
    assert!(matches!(outcomes[0], CommitOutcome::Committed { .. }));
    match outcomes[1] {
        CommitOutcome::Deduplicated { entry } => assert_eq!((entry.offset_bytes, entry.references), (0, 2)),
        ref o => panic!("{o:?}"),
    }
    let before = state.clone();
    for (cmd, expect) in [
        (commit_cmd(vec![commit(volume, 2, 9, 100)], 20), "stale epoch"),
        (commit_cmd(vec![commit(volume, 1, 9, 100)], 5_000), "expired lease"),
        (commit_cmd(vec![commit(77, 1, 9, 100)], 20), "unknown volume"),
        (commit_cmd(vec![commit(volume, 1, 9, (1 << 20) - 50)], 20), "past the volume size"),
    ] {
        let Response::Committed { outcomes } = apply::apply(&mut state, &cmd).expect("apply") else {
            panic!()
        };
        assert!(matches!(outcomes[0], CommitOutcome::Rejected { .. }), "{expect}: {outcomes:?}");
        assert_eq!(state, before, "{expect} changed the state");
    }
    let counters = apply::counters(&state).expect("counters");
    assert_eq!(counters.index_entries, 1);
    assert_eq!(apply::volume(&state, volume).expect("read").expect("volume").size_bytes, 100);
}

#[test]
fn index_entries_keep_their_read_digest_and_entries_without_one_stay_without() {
    let (mut state, volume) = setup();
    let with = IndexCommit { digest: Some(Digest16([0xD1; 16])), ..commit(volume, 1, 1, 0) };
    let without = commit(volume, 1, 2, 100);
    // A later put of the same bytes, with a digest of its own, only adds a reference.
    let again = IndexCommit { digest: Some(Digest16([0xEE; 16])), ..commit(volume, 1, 1, 200) };
    let r = apply::apply(&mut state, &commit_cmd(vec![with, without, again], 20)).expect("apply");
    let Response::Committed { outcomes } = r else { panic!("{r:?}") };
    match (&outcomes[0], &outcomes[1], &outcomes[2]) {
        (
            CommitOutcome::Committed { entry: a },
            CommitOutcome::Committed { entry: b },
            CommitOutcome::Deduplicated { entry: c },
        ) => {
            assert_eq!(a.digest, Some(Digest16([0xD1; 16])));
            assert_eq!(b.digest, None);
            assert_eq!((c.digest, c.references), (Some(Digest16([0xD1; 16])), 2));
        }
        other => panic!("{other:?}"),
    }
    let stored = apply::index_entry(&state, &Hash32([1; 32])).expect("read").expect("entry");
    assert_eq!((stored.digest, stored.references), (Some([0xD1; 16]), 2));
    let stored = apply::index_entry(&state, &Hash32([2; 32])).expect("read").expect("entry");
    assert_eq!(stored.digest, None);
}

#[test]
fn sealing_never_drops_acknowledged_records() {
    let (mut state, volume) = setup();
    apply::apply(&mut state, &commit_cmd(vec![commit(volume, 1, 1, 0)], 20)).expect("apply");
    let before = state.clone();
    let r = apply::apply(
        &mut state,
        &Command::SealVolume { volume_id: volume, length_bytes: Some(50), fragments: vec![] },
    )
    .expect("apply");
    assert!(matches!(r, Response::Refused { error: CommandError::BadRequest { .. } }));
    assert_eq!(state, before);
    let r = apply::apply(
        &mut state,
        &Command::SealVolume { volume_id: volume, length_bytes: None, fragments: vec![] },
    )
    .expect("apply");
    let Response::Volume { volume: v } = r else { panic!("{r:?}") };
    assert_eq!((v.state, v.size_bytes, v.lease), (VolumeState::Sealed, 100, None));
    let counters = apply::counters(&state).expect("counters");
    assert_eq!(counters.volumes_by_state, [0, 1, 0]);
    // Sealing again at the same length is idempotent.
    let r = apply::apply(
        &mut state,
        &Command::SealVolume { volume_id: volume, length_bytes: Some(100), fragments: vec![] },
    )
    .expect("apply");
    assert!(matches!(r, Response::Volume { .. }));
}

#[test]
fn allocation_refuses_unknown_or_failed_disks() {
    let (mut state, _) = setup();
    let before = state.clone();
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: cellar_erasure::Scheme::RS_6_3,
        replicas: vec![ExtentPlace { node_id: 1, disk_id: 999 }],
        lease_ms: 1000,
        now_unix_ms: 1,
    };
    assert!(matches!(
        apply::apply(&mut state, &cmd).expect("apply"),
        Response::Refused { error: CommandError::UnknownDisk { .. } }
    ));
    assert_eq!(state, before);
    let counters = apply::counters(&state as &dyn Kv).expect("counters");
    assert_eq!((counters.next_volume_id, counters.volumes_by_state), (2, [1, 0, 0]), "no id was used up");
}

/// A volume of rs-6-3 sealed with a fragment placement over nine disks in three zones;
/// returns the state, the volume, its replicas and the fragment places.
fn sealed_with_encode() -> (State, u64, Vec<ExtentPlace>, Vec<ExtentPlace>) {
    let mut state = State::new();
    let mut replicas = Vec::new();
    let mut fragments = Vec::new();
    for zone in ["a", "b", "c"] {
        let (node_id, disks) = register(&mut state, zone, 4);
        replicas.push(ExtentPlace { node_id, disk_id: disks[0] });
        fragments.extend(disks[1..].iter().map(|&disk_id| ExtentPlace { node_id, disk_id }));
    }
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: cellar_erasure::Scheme::RS_6_3,
        replicas: replicas.clone(),
        lease_ms: 1000,
        now_unix_ms: 10,
    };
    let Response::Volume { volume } = apply::apply(&mut state, &cmd).expect("apply") else { panic!() };
    let id = volume.volume_id;
    // A placement with the wrong number of fragments is refused and changes nothing.
    let before = state.clone();
    let bad = Command::SealVolume { volume_id: id, length_bytes: None, fragments: fragments[..8].to_vec() };
    assert!(matches!(apply::apply(&mut state, &bad).expect("apply"), Response::Refused { .. }));
    assert_eq!(state, before);
    let seal = Command::SealVolume { volume_id: id, length_bytes: None, fragments: fragments.clone() };
    assert!(matches!(apply::apply(&mut state, &seal).expect("apply"), Response::Volume { .. }));
    (state, id, replicas, fragments)
}

/// [`sealed_with_encode`], its encode then claimed and finished by the first replica's node:
/// the volume is coded, its old replica disks free.
fn coded_after_encode() -> (State, u64, Vec<ExtentPlace>, Vec<ExtentPlace>) {
    let (mut state, id, replicas, fragments) = sealed_with_encode();
    let encode = claim_all(&mut state, replicas[0].node_id);
    done(&mut state, encode[0].task_id, replicas[0].node_id);
    (state, id, replicas, fragments)
}

fn claim_all(state: &mut State, node_id: u64) -> Vec<cellar_master::tasks::TaskRecord> {
    claim_at(state, node_id, 100)
}

/// Claims every task of `node_id` it may take at `now_unix_ms` (claims of 1 s).
fn claim_at(state: &mut State, node_id: u64, now_unix_ms: u64) -> Vec<cellar_master::tasks::TaskRecord> {
    let cmd =
        Command::ClaimTasks { node_id, max: 64, claim_ms: 1000, now_unix_ms, deferred_kinds: Vec::new() };
    match apply::apply(state, &cmd).expect("apply") {
        Response::Tasks { tasks } => tasks,
        other => panic!("{other:?}"),
    }
}

fn done(state: &mut State, task_id: u64, node_id: u64) {
    let cmd = Command::ReportTask { task_id, node_id, success: true, detail: String::new() };
    assert!(matches!(apply::apply(state, &cmd).expect("apply"), Response::TaskReported { task: None }));
}

/// Queues `kind` (it must be accepted); its task id.
fn enqueue(state: &mut State, kind: cellar_master::tasks::TaskKind) -> u64 {
    match apply::apply(state, &Command::EnqueueTask { kind }).expect("apply") {
        Response::TaskQueued { task } => task.task_id,
        other => panic!("{other:?}"),
    }
}

/// The parts whose files `place`'s node is told to delete on `place`'s disk (claiming
/// that node's tasks).
fn deletes_on(state: &mut State, place: ExtentPlace) -> Vec<cellar_master::tasks::Part> {
    claim_all(state, place.node_id)
        .into_iter()
        .filter_map(|t| match t.kind {
            cellar_master::tasks::TaskKind::Delete { part, extent, .. } if extent == place => Some(part),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_that_defers_encodes_leaves_them_queued_and_takes_them_later() {
    use cellar_master::tasks::{TaskKind, has_claimable};
    let (mut state, id, replicas, fragments) = sealed_with_encode();
    let node = replicas[0].node_id;
    let deferred = vec![cellar_master::types::TaskType::Encode];
    assert!(!has_claimable(&state, node, 100, 1000, &deferred).expect("read"));
    assert!(has_claimable(&state, node, 100, 1000, &[]).expect("read"));
    let before = state.clone();
    let cmd = Command::ClaimTasks {
        node_id: node,
        max: 64,
        claim_ms: 1000,
        now_unix_ms: 100,
        deferred_kinds: deferred,
    };
    match apply::apply(&mut state, &cmd).expect("apply") {
        Response::Tasks { tasks } => assert!(tasks.is_empty(), "{tasks:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before, "a deferred claim changes nothing");
    let tasks = claim_all(&mut state, node);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, TaskKind::Encode { volume_id: id, fragments });
}

#[test]
fn a_finished_encode_codes_the_volume_and_queues_the_replica_deletes() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, fragments) = sealed_with_encode();
    let tasks = claim_all(&mut state, replicas[0].node_id);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].kind, TaskKind::Encode { volume_id: id, fragments: fragments.clone() });
    done(&mut state, tasks[0].task_id, replicas[0].node_id);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.state, v.generation, v.fragments.clone()), (VolumeState::Coded, 2, fragments.clone()));
    assert!(v.replicas.is_empty());
    assert_eq!(apply::counters(&state).expect("counters").volumes_by_state, [0, 0, 1]);
    // Each replica's node is told to delete it.
    for r in &replicas {
        let tasks = claim_all(&mut state, r.node_id);
        let deletes: Vec<_> = tasks
            .iter()
            .filter(|t| t.kind == TaskKind::Delete { volume_id: id, part: Part::Replica, extent: *r })
            .collect();
        assert_eq!(deletes.len(), 1, "delete of the replica on disk {}", r.disk_id);
    }
}

fn failed(state: &mut State, task_id: u64, node_id: u64) -> cellar_master::tasks::TaskRecord {
    let cmd = Command::ReportTask { task_id, node_id, success: false, detail: "short replica".into() };
    match apply::apply(state, &cmd).expect("apply") {
        Response::TaskReported { task: Some(task) } => task,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_encode_is_tried_next_by_the_next_replica_holder() {
    use cellar_master::tasks::TaskState;
    let (mut state, _id, replicas, _fragments) = sealed_with_encode();
    let task = claim_all(&mut state, replicas[0].node_id).remove(0);
    let mut holder = replicas[0].node_id;
    // Each failure hands the encode to the next holder, wrapping around, after the pause
    // from the failed attempt's start (a failure the holders share, a target not
    // reachable yet, must not use up every attempt on them in turn at once).
    let ids =
        |tasks: Vec<cellar_master::tasks::TaskRecord>| tasks.iter().map(|t| t.task_id).collect::<Vec<_>>();
    for attempt in 1..=3usize {
        let after = failed(&mut state, task.task_id, holder);
        let next = replicas[attempt % replicas.len()].node_id;
        assert_eq!((after.node_id, after.state), (next, TaskState::Pending), "attempt {attempt}");
        let at = cellar_master::tasks::retry_at_unix_ms(&after, 1000).expect("a pause");
        assert!(claim_at(&mut state, holder, at).is_empty(), "the old holder has nothing left");
        assert!(claim_at(&mut state, next, at - 1).is_empty(), "attempt {attempt}: not before the pause");
        assert_eq!(ids(claim_at(&mut state, next, at)), vec![task.task_id]);
        holder = next;
    }
    // Three failures went round to the first holder again; a late report from a
    // previous one is refused: the task is not its own any more.
    assert_eq!(holder, replicas[0].node_id);
    let late = Command::ReportTask {
        task_id: task.task_id,
        node_id: replicas[1].node_id,
        success: true,
        detail: String::new(),
    };
    assert!(matches!(apply::apply(&mut state, &late).expect("apply"), Response::Refused { .. }));
    done(&mut state, task.task_id, holder);
    let v = apply::volume(&state, task.kind.volume_id()).expect("read").expect("volume");
    assert_eq!(v.state, VolumeState::Coded);
}

/// A delete whose disk failed after it was queued, failing there, is parked until the
/// disk comes back (as one queued while the disk is failed), not retried into a failure
/// for good: deletes are never planned again, so the stale file would stay.
#[test]
fn a_delete_failing_on_a_disk_failed_since_is_parked_until_the_disk_returns() {
    use cellar_master::tasks::TaskKind;
    let (mut state, _id, replicas, _) = coded_after_encode();
    let place = replicas[1];
    let beat = |state: &mut State, failed: bool| {
        let stat = DiskStat { failed, ..whole_and_empty(place.disk_id) };
        let cmd = Command::Heartbeat { node_id: place.node_id, disks: vec![stat], now_unix_ms: 200 };
        assert!(matches!(apply::apply(state, &cmd).expect("apply"), Response::HeartbeatAck { .. }));
    };
    let delete = claim_all(&mut state, place.node_id)
        .into_iter()
        .find(|t| matches!(t.kind, TaskKind::Delete { extent, .. } if extent == place))
        .expect("the replica's delete");
    beat(&mut state, true);
    let parked = failed(&mut state, delete.task_id, place.node_id);
    assert_eq!(parked.attempts, 0, "not an attempt used up");
    let deletes = |tasks: Vec<cellar_master::tasks::TaskRecord>| {
        tasks.iter().filter(|t| t.task_id == delete.task_id).count()
    };
    assert_eq!(deletes(claim_at(&mut state, place.node_id, 100_000)), 0, "parked while the disk is failed");
    assert_eq!(apply::counters(&state).expect("counters").tasks_failed, 0);
    beat(&mut state, false);
    assert_eq!(deletes(claim_at(&mut state, place.node_id, 100_000)), 1, "back in the queue with its disk");
}

/// A repair whose extent the placement no longer names when it fails (seen in a cell: a
/// replica copy planned while its volume could not be coded, the volume coded before the
/// copy ran) is dropped at its first failure, not retried into a failure for an operator;
/// what it may have half written is deleted. A task still in force is retried as before.
#[test]
fn a_task_failing_after_the_placement_moved_on_is_dropped_not_counted_failed() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, fragments) = sealed_with_encode();
    let (node_id, disks) = register(&mut state, "d", 1);
    let free = ExtentPlace { node_id, disk_id: disks[0] };
    let copy = enqueue(
        &mut state,
        TaskKind::Copy {
            volume_id: id,
            part: Part::Replica,
            source: replicas[0],
            target: free,
            replaces: replicas[2],
        },
    );
    // The encode runs first: the volume is coded, its replicas gone from the placement.
    let encode = claim_all(&mut state, replicas[0].node_id);
    done(&mut state, encode[0].task_id, replicas[0].node_id);
    let before = apply::counters(&state).expect("counters");
    claim_all(&mut state, free.node_id);
    let report =
        Command::ReportTask { task_id: copy, node_id: free.node_id, success: false, detail: "coded".into() };
    assert!(matches!(
        apply::apply(&mut state, &report).expect("apply"),
        Response::TaskReported { task: None }
    ));
    let after = apply::counters(&state).expect("counters");
    assert_eq!(after.tasks_failed, 0, "not a failure left for an operator");
    // The copy left the queue; a delete of its target's replica file took its place.
    assert_eq!(after.tasks_open, before.tasks_open);
    assert_eq!(deletes_on(&mut state, free), vec![Part::Replica]);
    // A reconstruct of a fragment still placed where it says fails as a failure: retried.
    let reconstruct = enqueue(
        &mut state,
        TaskKind::Reconstruct { volume_id: id, index: 0, target: replicas[1], replaces: fragments[0] },
    );
    claim_all(&mut state, replicas[1].node_id);
    let retried = failed(&mut state, reconstruct, replicas[1].node_id);
    assert_eq!(retried.attempts, 1);
    // Status says when (claims of 1 s here): the attempt's start, 100, plus 2 s.
    assert_eq!(cellar_master::tasks::retry_at_unix_ms(&retried, 1000), Some(2_100));
    // ... after a pause from the failed attempt's start (claimed at 100): 2 s, then 4 s.
    // (The node's other task, a replica delete claimed at 100, is handed out again once
    // its claim expires: only the reconstruct is looked at.)
    let ids = |tasks: Vec<cellar_master::tasks::TaskRecord>| {
        tasks.iter().map(|t| t.task_id).filter(|id| *id == reconstruct).collect::<Vec<_>>()
    };
    assert_eq!(ids(claim_at(&mut state, replicas[1].node_id, 2_099)), Vec::<u64>::new(), "not at once");
    assert_eq!(ids(claim_at(&mut state, replicas[1].node_id, 2_100)), vec![reconstruct]);
    let twice = failed(&mut state, reconstruct, replicas[1].node_id);
    assert_eq!(twice.attempts, 2);
    assert_eq!(cellar_master::tasks::retry_at_unix_ms(&twice, 1000), Some(6_100));
    assert_eq!(ids(claim_at(&mut state, replicas[1].node_id, 6_099)), Vec::<u64>::new());
    assert_eq!(ids(claim_at(&mut state, replicas[1].node_id, 6_100)), vec![reconstruct]);
    // ... until another repair moves that fragment: its next failure drops it.
    let other = enqueue(
        &mut state,
        TaskKind::Reconstruct { volume_id: id, index: 0, target: replicas[2], replaces: fragments[0] },
    );
    claim_all(&mut state, replicas[2].node_id);
    done(&mut state, other, replicas[2].node_id);
    claim_all(&mut state, replicas[1].node_id);
    let report = Command::ReportTask {
        task_id: reconstruct,
        node_id: replicas[1].node_id,
        success: false,
        detail: "x".into(),
    };
    assert!(matches!(
        apply::apply(&mut state, &report).expect("apply"),
        Response::TaskReported { task: None }
    ));
    assert_eq!(apply::counters(&state).expect("counters").tasks_failed, 0);
    assert!(cellar_master::tasks::task(&state, reconstruct).expect("read").is_none());
}

#[test]
fn plan_encode_queues_one_encode_per_volume_and_replaces_a_stranded_one() {
    use cellar_master::tasks::{TaskKind, encode_task_id};
    // Sealed without a placement: no encode queued.
    let (mut state, id) = setup();
    let seal = Command::SealVolume { volume_id: id, length_bytes: None, fragments: Vec::new() };
    assert!(matches!(apply::apply(&mut state, &seal).expect("apply"), Response::Volume { .. }));
    assert_eq!(encode_task_id(&state, id).expect("read"), None);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    let mut fragments = Vec::new();
    for zone in ["d", "e", "f"] {
        let (node_id, disks) = register(&mut state, zone, 3);
        fragments.extend(disks.iter().map(|&disk_id| ExtentPlace { node_id, disk_id }));
    }
    let plan = |node_id: u64, replaces_task: Option<u64>, now_unix_ms: u64| Command::PlanEncode {
        volume_id: id,
        node_id,
        fragments: fragments.clone(),
        replaces_task,
        now_unix_ms,
    };
    // Only a replica holder may run it.
    let before = state.clone();
    let stranger = fragments[0].node_id;
    assert!(matches!(
        apply::apply(&mut state, &plan(stranger, None, 100)).expect("apply"),
        Response::Refused { .. }
    ));
    assert_eq!(state, before);
    let first = v.replicas[0].node_id;
    let Response::TaskQueued { task } = apply::apply(&mut state, &plan(first, None, 100)).expect("apply")
    else {
        panic!("not queued")
    };
    assert_eq!(task.kind, TaskKind::Encode { volume_id: id, fragments: fragments.clone() });
    assert_eq!(encode_task_id(&state, id).expect("read"), Some(task.task_id));
    // A second plan that did not see it is refused: never two encodes.
    let before = state.clone();
    assert!(matches!(
        apply::apply(&mut state, &plan(first, None, 100)).expect("apply"),
        Response::Refused { .. }
    ));
    assert_eq!(state, before);
    // While its claim runs it is not taken over; once the claim expired it is.
    assert_eq!(claim_all(&mut state, first).len(), 1);
    let second = v.replicas[1].node_id;
    let before = state.clone();
    let during = plan(second, Some(task.task_id), 500);
    assert!(matches!(apply::apply(&mut state, &during).expect("apply"), Response::Refused { .. }));
    assert_eq!(state, before);
    let Response::TaskQueued { task: moved } =
        apply::apply(&mut state, &plan(second, Some(task.task_id), 5_000)).expect("apply")
    else {
        panic!("not replaced")
    };
    assert_ne!(moved.task_id, task.task_id);
    assert_eq!(encode_task_id(&state, id).expect("read"), Some(moved.task_id));
    assert!(claim_all(&mut state, first).is_empty());
    assert_eq!(apply::counters(&state).expect("counters").tasks_open, 1);
    done(&mut state, moved.task_id, second);
    assert_eq!(encode_task_id(&state, id).expect("read"), None);
    assert_eq!(apply::volume(&state, id).expect("read").expect("volume").state, VolumeState::Coded);
}

#[test]
fn a_reconstruct_moves_one_fragment_and_a_stale_one_commits_nothing() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, fragments) = coded_after_encode();
    // The old replica disks are free to take a fragment (they hold nothing of it now).
    let target = replicas[1];
    let kind = TaskKind::Reconstruct { volume_id: id, index: 4, target, replaces: fragments[4] };
    // Queuing a task that names a fragment the volume does not have there is refused.
    let before = state.clone();
    let wrong = TaskKind::Reconstruct { volume_id: id, index: 4, target, replaces: fragments[5] };
    assert!(matches!(
        apply::apply(&mut state, &Command::EnqueueTask { kind: wrong }).expect("apply"),
        Response::Refused { .. }
    ));
    assert_eq!(state, before);
    let Response::TaskQueued { task } =
        apply::apply(&mut state, &Command::EnqueueTask { kind: kind.clone() }).expect("apply")
    else {
        panic!()
    };
    assert_eq!(task.node_id, target.node_id);
    // Meanwhile another repair moves fragment 4 elsewhere: the first one commits nothing.
    let other =
        TaskKind::Reconstruct { volume_id: id, index: 4, target: replicas[2], replaces: fragments[4] };
    let Response::TaskQueued { task: other_task } =
        apply::apply(&mut state, &Command::EnqueueTask { kind: other }).expect("apply")
    else {
        panic!()
    };
    claim_all(&mut state, replicas[2].node_id);
    done(&mut state, other_task.task_id, replicas[2].node_id);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.fragments[4], v.generation), (replicas[2], 3));
    claim_all(&mut state, target.node_id);
    done(&mut state, task.task_id, target.node_id);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.fragments[4], v.generation), (replicas[2], 3), "the stale repair committed nothing");
    // ... and its orphan extent is queued for deletion on the target.
    let tasks = claim_all(&mut state, target.node_id);
    assert!(
        tasks.iter().any(|t| t.kind
            == TaskKind::Delete { volume_id: id, part: Part::Fragment { index: 4 }, extent: target }),
        "{tasks:?}"
    );
    // A delete of a placed extent is refused.
    let live = TaskKind::Delete { volume_id: id, part: Part::Fragment { index: 4 }, extent: replicas[2] };
    assert!(matches!(
        apply::apply(&mut state, &Command::EnqueueTask { kind: live }).expect("apply"),
        Response::Refused { .. }
    ));
}

#[test]
fn a_second_repair_finishing_onto_a_disk_the_volume_already_uses_commits_nothing_and_its_file_is_deleted() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, fragments) = coded_after_encode();
    let coded = apply::volume(&state, id).expect("read").expect("volume").generation;
    // Two reconstructs queued before either finished, onto one disk: each is accepted (the
    // disk holds nothing of the volume yet). The repair planner never plans this (it
    // counts running repairs' targets), and the commit point refuses it too: the first to
    // finish is placed, the second commits nothing.
    let shared = replicas[0];
    let queued: Vec<u64> = [0u32, 1]
        .map(|index| {
            let kind = TaskKind::Reconstruct {
                volume_id: id,
                index,
                target: shared,
                replaces: fragments[index as usize],
            };
            enqueue(&mut state, kind)
        })
        .to_vec();
    claim_all(&mut state, shared.node_id);
    for task_id in queued {
        done(&mut state, task_id, shared.node_id);
    }
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.fragments[0], v.fragments[1], v.generation), (shared, fragments[1], coded + 1));
    let on_disk = |v: &cellar_master::types::VolumeRecord, disk_id: u64| {
        v.fragments.iter().filter(|p| p.disk_id == disk_id).count()
    };
    assert_eq!(on_disk(&v, shared.disk_id), 1);
    // The overtaken reconstruct's file, fragment 1's on the shared disk, is deleted;
    // nothing of fragment 0 there.
    assert_eq!(deletes_on(&mut state, shared), vec![Part::Fragment { index: 1 }]);
    // A copy finishing onto a disk another fragment moved to meanwhile is overtaken the
    // same way, whichever kind of repair got there first.
    let other = replicas[1];
    let copy = enqueue(
        &mut state,
        TaskKind::Copy {
            volume_id: id,
            part: Part::Fragment { index: 2 },
            source: fragments[2],
            target: other,
            replaces: fragments[2],
        },
    );
    let reconstruct = enqueue(
        &mut state,
        TaskKind::Reconstruct { volume_id: id, index: 3, target: other, replaces: fragments[3] },
    );
    claim_all(&mut state, other.node_id);
    done(&mut state, reconstruct, other.node_id);
    done(&mut state, copy, other.node_id);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.fragments[2], v.fragments[3], v.generation), (fragments[2], other, coded + 2));
    assert_eq!(on_disk(&v, other.disk_id), 1);
    assert_eq!(deletes_on(&mut state, other), vec![Part::Fragment { index: 2 }]);
}

#[test]
fn a_second_replica_copy_onto_a_disk_another_replica_moved_to_commits_nothing_and_deletes_nothing_there() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, _) = sealed_with_encode();
    // A disk that holds nothing of the volume: a fourth zone's.
    let (node_id, disks) = register(&mut state, "d", 1);
    let free = ExtentPlace { node_id, disk_id: disks[0] };
    let before = apply::volume(&state, id).expect("read").expect("volume").generation;
    let queued: Vec<u64> = [1usize, 2]
        .map(|slot| {
            let kind = TaskKind::Copy {
                volume_id: id,
                part: Part::Replica,
                source: replicas[0],
                target: free,
                replaces: replicas[slot],
            };
            enqueue(&mut state, kind)
        })
        .to_vec();
    claim_all(&mut state, free.node_id);
    for task_id in queued {
        done(&mut state, task_id, free.node_id);
    }
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!(v.replicas, vec![replicas[0], free, replicas[2]]);
    assert_eq!(v.generation, before + 1);
    // The replica file on that disk is the first copy's, placed: nothing deletes it.
    assert_eq!(deletes_on(&mut state, free), vec![]);
}

#[test]
fn two_fragments_left_on_one_disk_are_parted_by_a_copy_that_deletes_only_the_moved_ones_file() {
    use cellar_master::tasks::{Part, TaskKind};
    let (mut state, id, replicas, fragments) = coded_after_encode();
    // A volume an older master left with fragments 0 and 1 on one disk (written as it was:
    // the commit point no longer makes this) stays so until one fragment moves.
    let shared = replicas[0];
    let mut v = apply::volume(&state, id).expect("read").expect("volume");
    v.fragments[0] = shared;
    v.fragments[1] = shared;
    cellar_master::state::put_volume(&mut state, &v).expect("write");
    let generation = v.generation;
    // What the planner plans for it: fragment 1 copied as it is onto a free disk.
    let free = fragments[1];
    let copy = TaskKind::Copy {
        volume_id: id,
        part: Part::Fragment { index: 1 },
        source: shared,
        target: free,
        replaces: shared,
    };
    let Response::TaskQueued { task } =
        apply::apply(&mut state, &Command::PlanRepair { kind: copy, replaces_task: None, now_unix_ms: 100 })
            .expect("apply")
    else {
        panic!("the copy off the shared disk was refused")
    };
    claim_all(&mut state, free.node_id);
    done(&mut state, task.task_id, free.node_id);
    let v = apply::volume(&state, id).expect("read").expect("volume");
    assert_eq!((v.fragments[0], v.fragments[1], v.generation), (shared, free, generation + 1));
    // The shared disk's node deletes fragment 1's file there, and nothing of fragment 0.
    assert_eq!(deletes_on(&mut state, shared), vec![Part::Fragment { index: 1 }]);
}

#[test]
fn a_lease_is_taken_over_only_after_it_expired_and_the_epoch_goes_up() {
    let (mut state, volume) = setup();
    let take = |now| Command::AcquireLease {
        volume_id: volume,
        holder: "fe2".into(),
        lease_ms: 1000,
        now_unix_ms: now,
    };
    let before = state.clone();
    assert!(matches!(
        apply::apply(&mut state, &take(500)).expect("apply"),
        Response::Refused { error: CommandError::StaleLease { .. } }
    ));
    assert_eq!(state, before);
    let Response::Volume { volume: v } = apply::apply(&mut state, &take(5_000)).expect("apply") else {
        panic!()
    };
    let lease = v.lease.expect("lease");
    assert_eq!((lease.epoch, lease.holder.as_str(), lease.expires_unix_ms), (2, "fe2", 6_000));
    // The old epoch can no longer commit.
    let Response::Committed { outcomes } =
        apply::apply(&mut state, &commit_cmd(vec![commit(volume, 1, 3, 0)], 5_001)).expect("apply")
    else {
        panic!()
    };
    assert!(matches!(outcomes[0], CommitOutcome::Rejected { error: CommandError::StaleLease { .. } }));
}

#[test]
fn heartbeats_carry_each_disks_trash_into_its_record() {
    let mut state = State::new();
    let (node, disks) = register(&mut state, "a", 2);
    let stat = |disk_id, trash_bytes, trash_extents| cellar_master::command::DiskStat {
        disk_id,
        capacity_bytes: 1 << 40,
        used_bytes: 1 << 20,
        free_bytes: 1 << 39,
        failed: false,
        trash_bytes,
        trash_extents,
    };
    let beat = Command::Heartbeat {
        node_id: node,
        disks: vec![stat(disks[0], 123_456, 2), stat(disks[1], 0, 0)],
        now_unix_ms: 5,
    };
    assert!(matches!(apply::apply(&mut state, &beat).expect("apply"), Response::HeartbeatAck { .. }));
    let d = apply::disk(&state, disks[0]).expect("read").expect("disk");
    assert_eq!((d.trash_bytes, d.trash_extents), (123_456, 2));
    // A restart's registration keeps the last known trash until the next heartbeat.
    let again = Command::RegisterNode {
        node_id: Some(node),
        address: "a:1".into(),
        zone: "a".into(),
        disks: vec![DiskRegistration {
            uuid: "a-0".into(),
            path: "/d0".into(),
            capacity_bytes: 1 << 40,
            used_bytes: 0,
            free_bytes: 1 << 40,
        }],
        now_unix_ms: 6,
    };
    apply::apply(&mut state, &again).expect("apply");
    let d = apply::disk(&state, disks[0]).expect("read").expect("disk");
    assert_eq!((d.trash_bytes, d.trash_extents), (123_456, 2));
    // A heartbeat that reports no trash (the disks emptied it) sets none. (This test read
    // a JSON heartbeat from before trash was reported; the log is binary and versioned
    // since issue 20, docs/FORMAT.md section 13, and a version-1 heartbeat always carries
    // both fields.)
    let old = Command::Heartbeat { node_id: node, disks: vec![whole_and_empty(disks[0])], now_unix_ms: 7 };
    apply::apply(&mut state, &old).expect("apply");
    let d = apply::disk(&state, disks[0]).expect("read").expect("disk");
    assert_eq!((d.trash_bytes, d.trash_extents), (0, 0));
}

#[test]
fn a_relocation_moves_an_entry_only_from_where_it_still_is_and_keeps_its_references() {
    let (mut state, old) = setup();
    // Block 1 in the old volume, with two references.
    for _ in 0..2 {
        apply::apply(&mut state, &commit_cmd(vec![commit(old, 1, 1, 0)], 20)).expect("apply");
    }
    let mut replicas = Vec::new();
    for (node_id, disks) in [(1u64, 1u64), (2, 3), (3, 5)] {
        replicas.push(ExtentPlace { node_id, disk_id: disks });
    }
    let new = match apply::apply(
        &mut state,
        &Command::AllocateVolume {
            holder: "fe".into(),
            scheme: cellar_erasure::Scheme::RS_6_3,
            replicas,
            lease_ms: 1000,
            now_unix_ms: 30,
        },
    )
    .expect("apply")
    {
        Response::Volume { volume } => volume.volume_id,
        other => panic!("{other:?}"),
    };
    let relocate = |from: u64, entry: IndexCommit| Command::RelocateIndex {
        entries: vec![entry],
        relocate_from: vec![from],
        volume_size_max_bytes: 1 << 20,
        now_unix_ms: 40,
    };
    let outcome = |r: Response| match r {
        Response::Committed { outcomes } => outcomes.into_iter().next().expect("one outcome"),
        other => panic!("{other:?}"),
    };
    // Claimed to come from another volume: refused, nothing moves.
    let wrong = outcome(apply::apply(&mut state, &relocate(new, commit(new, 1, 1, 0))).expect("apply"));
    assert!(matches!(wrong, CommitOutcome::Rejected { .. }), "{wrong:?}");
    // From where it is: moved, references kept.
    let moved = outcome(apply::apply(&mut state, &relocate(old, commit(new, 1, 1, 0))).expect("apply"));
    match moved {
        CommitOutcome::Committed { entry } => {
            assert_eq!((entry.volume_id, entry.references), (new, 2));
        }
        other => panic!("{other:?}"),
    }
    // A second mover of the same block is refused: it is no longer in the old volume.
    let again = outcome(apply::apply(&mut state, &relocate(old, commit(new, 1, 1, 100))).expect("apply"));
    assert!(matches!(again, CommitOutcome::Rejected { .. }), "{again:?}");
}

/// Applies a raise of the cell's apply version.
fn raise(state: &mut State, version: u32) {
    let cmd = Command::RaiseApplyVersion { version, now_unix_ms: 77 };
    assert_eq!(apply::apply(state, &cmd).expect("apply"), Response::Empty);
}

/// The apply version only rises, by the command, and never past what this build applies:
/// a raise above it, or a state already above it (installed from a newer cell's
/// snapshot), fails every command, so that this master stops instead of applying the log
/// its own way; nothing is written by the refused raise.
#[test]
fn the_apply_version_only_rises_and_a_state_above_this_build_is_refused() {
    use cellar_master::apply_version::{
        APPLY_VERSION_MAX, ApplyVersionRecord, KEY_APPLY_VERSION, current, record,
    };
    let (mut state, _id, _replicas, _fragments) = sealed_with_encode();
    assert_eq!((current(&state).expect("read"), record(&state).expect("read")), (1, None));
    raise(&mut state, 2);
    let expected = ApplyVersionRecord { v: 1, version: 2, since_unix_ms: 77 };
    assert_eq!(record(&state).expect("read"), Some(expected.clone()));
    // A lower or equal raise (proposed twice, or by a leader that asked before) changes nothing.
    let cmd = Command::RaiseApplyVersion { version: 1, now_unix_ms: 99 };
    assert_eq!(apply::apply(&mut state, &cmd).expect("apply"), Response::Empty);
    raise(&mut state, 2);
    assert_eq!(record(&state).expect("read"), Some(expected));
    let before = state.clone();
    let too_new = Command::RaiseApplyVersion { version: APPLY_VERSION_MAX + 1, now_unix_ms: 99 };
    let err = apply::apply(&mut state, &too_new).expect_err("above this build").to_string();
    assert!(err.contains(&format!("apply version {}", APPLY_VERSION_MAX + 1)), "{err}");
    assert_eq!(state, before, "nothing written");
    // A state at a version above this build's (from a snapshot): every command fails.
    let newer = ApplyVersionRecord { v: 1, version: APPLY_VERSION_MAX + 1, since_unix_ms: 5 };
    cellar_master::state::write_record(
        &mut state,
        cellar_master::codec::Kind::ApplyVersion,
        KEY_APPLY_VERSION,
        &newer,
    )
    .expect("write");
    let before = state.clone();
    let beat = Command::Heartbeat { node_id: 1, disks: vec![], now_unix_ms: 2000 };
    let err = apply::apply(&mut state, &beat).expect_err("state above this build").to_string();
    assert!(err.contains("run this master with a build at least as new"), "{err}");
    assert_eq!(state, before, "nothing written");
}

/// A given-up task (here a delete: deletes are never planned again) is handed back to its
/// node by an operator's retry, pending with its attempts anew and claimable at once; the
/// command is refused below apply version 2 (masters of the builds before cannot read it)
/// and for a task not given up or not queued, each time writing nothing.
#[test]
fn an_operator_retry_hands_a_given_up_task_back_with_its_attempts_anew() {
    use cellar_master::apply_version::RETRY_TASK;
    use cellar_master::tasks::{TASK_ATTEMPTS_MAX, TaskState};
    let (mut state, place, delete, after) = a_given_up_delete();
    assert_eq!((after.state, after.attempts), (TaskState::Failed, TASK_ATTEMPTS_MAX));
    let before = apply::counters(&state).expect("counters");
    let retry = Command::RetryTask { task_id: delete.task_id };
    let refused = |state: &mut State, command: &Command, why: &str| {
        let unchanged = state.clone();
        match apply::apply(state, command).expect("apply") {
            Response::Refused { error: CommandError::BadRequest { detail } } => {
                assert!(detail.contains(why), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(*state, unchanged, "a refused retry writes nothing");
    };
    refused(&mut state, &retry, "apply version 2");
    raise(&mut state, RETRY_TASK);
    let Response::TaskQueued { task } = apply::apply(&mut state, &retry).expect("apply") else {
        panic!("retry")
    };
    assert_eq!(
        (task.state, task.attempts, task.claimed_until_unix_ms, task.node_id),
        (TaskState::Pending, 0, 0, place.node_id)
    );
    assert_eq!(task.detail, "short replica", "the last error stays until an attempt replaces it");
    let now = apply::counters(&state).expect("counters");
    assert_eq!((now.tasks_failed, now.tasks_open), (before.tasks_failed - 1, before.tasks_open + 1));
    let claimed = claim_at(&mut state, place.node_id, after.claimed_until_unix_ms + 1);
    assert!(claimed.iter().any(|t| t.task_id == delete.task_id), "handed out at once");
    refused(&mut state, &retry, "claimed, not given up");
    done(&mut state, delete.task_id, place.node_id);
    refused(&mut state, &retry, "is not queued");
}

/// A given-up task on a node that is down since is not handed back (it would wait for the
/// node; repair rebuilds what the node held elsewhere): refused, nothing written.
#[test]
fn a_retry_of_a_task_whose_node_is_down_is_refused() {
    use cellar_master::tasks::TaskState;
    let (mut state, place, delete, after) = a_given_up_delete();
    raise(&mut state, cellar_master::apply_version::RETRY_TASK);
    assert_eq!(after.state, TaskState::Failed);
    let down = Command::MarkNodeDown { node_id: place.node_id, down_after_ms: 1, now_unix_ms: 10_000_000 };
    apply::apply(&mut state, &down).expect("apply");
    assert_eq!(
        apply::node(&state, place.node_id).expect("read").expect("node").state,
        cellar_master::types::NodeState::Down
    );
    let before = state.clone();
    match apply::apply(&mut state, &Command::RetryTask { task_id: delete.task_id }).expect("apply") {
        Response::Refused { error: CommandError::BadRequest { detail } } => {
            assert!(detail.contains("is down"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before, "nothing written");
}

/// A coded volume whose second replica's delete failed every attempt: the state, that
/// replica's place, the delete as first claimed, and the task given up.
fn a_given_up_delete()
-> (State, ExtentPlace, cellar_master::tasks::TaskRecord, cellar_master::tasks::TaskRecord) {
    use cellar_master::tasks::{TASK_ATTEMPTS_MAX, TaskKind, TaskState, retry_at_unix_ms};
    let (mut state, _id, replicas, _) = coded_after_encode();
    let place = replicas[1];
    let delete = claim_all(&mut state, place.node_id)
        .into_iter()
        .find(|t| matches!(t.kind, TaskKind::Delete { extent, .. } if extent == place))
        .expect("the replica's delete");
    let mut after = failed(&mut state, delete.task_id, place.node_id);
    for attempt in 2..=TASK_ATTEMPTS_MAX {
        let at = retry_at_unix_ms(&after, 1000).expect("a pause");
        let claimed = claim_at(&mut state, place.node_id, at);
        assert!(claimed.iter().any(|t| t.task_id == delete.task_id), "attempt {attempt}");
        after = failed(&mut state, delete.task_id, place.node_id);
    }
    assert_eq!((after.state, after.attempts), (TaskState::Failed, TASK_ATTEMPTS_MAX));
    (state, place, delete, after)
}

/// A volume server's first poll since its process started (`ClaimTasksAfterStart`): the
/// tasks its node still has claimed (by the process before) each count a failed attempt,
/// as a failed report would (an encode goes to the next replica holder; a delete stays and
/// is claimed again once its retry pause from the lost attempt's start has passed), then
/// the node claims; nothing is released below apply version 3 (refused, nothing written),
/// and a poll with nothing claimed releases nothing.
#[test]
fn a_restarted_nodes_first_poll_releases_what_its_process_before_had_claimed() {
    use cellar_master::apply_version::CLAIMS_RELEASED_AT_START;
    use cellar_master::tasks::{
        RELEASED_AT_START_DETAIL, TASK_ATTEMPTS_MAX, TaskKind, TaskState, retry_at_unix_ms,
    };
    let after_start = |node_id, now_unix_ms| Command::ClaimTasksAfterStart {
        node_id,
        max: 64,
        claim_ms: 1000,
        now_unix_ms,
        deferred_kinds: Vec::new(),
    };
    let tasks_of = |response: Response| match response {
        Response::Tasks { tasks } => tasks,
        other => panic!("{other:?}"),
    };
    let task = |state: &State, task_id: u64| {
        cellar_master::tasks::task(state, task_id).expect("read").expect("queued")
    };

    // An encode claimed by its holder's process, which then restarts.
    let (mut state, _id, replicas, _) = sealed_with_encode();
    let holder = replicas[0].node_id;
    let encode = claim_all(&mut state, holder).remove(0);
    assert_eq!(task(&state, encode.task_id).state, TaskState::Claimed);
    let before = state.clone();
    match apply::apply(&mut state, &after_start(holder, 150)).expect("apply") {
        Response::Refused { error: CommandError::BadRequest { detail } } => {
            assert!(detail.contains("apply version 3"), "{detail}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before, "refused below version 3, nothing written");
    raise(&mut state, CLAIMS_RELEASED_AT_START);
    let claimed = tasks_of(apply::apply(&mut state, &after_start(holder, 150)).expect("apply"));
    assert!(claimed.is_empty(), "the encode moved on to the next holder: {claimed:?}");
    let released = task(&state, encode.task_id);
    assert_eq!(
        (released.state, released.attempts, released.node_id, released.detail.as_str()),
        (TaskState::Pending, 1, replicas[1].node_id, RELEASED_AT_START_DETAIL)
    );
    let at = retry_at_unix_ms(&released, 1000).expect("a pause");
    let ids =
        |tasks: Vec<cellar_master::tasks::TaskRecord>| tasks.iter().map(|t| t.task_id).collect::<Vec<_>>();
    assert_eq!(ids(claim_at(&mut state, replicas[1].node_id, at)), vec![encode.task_id]);
    done(&mut state, encode.task_id, replicas[1].node_id);

    // A replica's delete claimed, its node restarted: released and, past the pause,
    // claimed again by the same poll.
    let place = replicas[2];
    let delete = claim_at(&mut state, place.node_id, 5000)
        .into_iter()
        .find(|t| matches!(t.kind, TaskKind::Delete { extent, .. } if extent == place))
        .expect("the replica's delete");
    let again = tasks_of(apply::apply(&mut state, &after_start(place.node_id, 9000)).expect("apply"));
    let redone = again.iter().find(|t| t.task_id == delete.task_id).expect("claimed again");
    assert_eq!(
        (redone.state, redone.attempts, redone.claimed_until_unix_ms, redone.detail.as_str()),
        (TaskState::Claimed, 1, 10_000, RELEASED_AT_START_DETAIL)
    );
    // A release never gives a task up (a node restarting for reasons of its own would
    // lose its deletes, which are never planned again): four failed attempts, claimed,
    // released: still pending at four.
    let mut last = redone.clone();
    for _ in 2..TASK_ATTEMPTS_MAX {
        last = failed(&mut state, delete.task_id, place.node_id);
        let at = retry_at_unix_ms(&last, 1000).expect("a pause");
        assert!(claim_at(&mut state, place.node_id, at).iter().any(|t| t.task_id == delete.task_id));
    }
    assert_eq!(
        (last.attempts, task(&state, delete.task_id).state),
        (TASK_ATTEMPTS_MAX - 1, TaskState::Claimed)
    );
    let failed_before = apply::counters(&state).expect("counters").tasks_failed;
    apply::apply(&mut state, &after_start(place.node_id, 1_000_000)).expect("apply");
    let kept = task(&state, delete.task_id);
    assert_eq!((kept.attempts, kept.detail.as_str()), (TASK_ATTEMPTS_MAX - 1, RELEASED_AT_START_DETAIL));
    assert_ne!(kept.state, TaskState::Failed, "a release gave the task up");
    assert_eq!(apply::counters(&state).expect("counters").tasks_failed, failed_before);
    done(&mut state, delete.task_id, place.node_id);

    // Nothing claimed: the first poll of a node that held nothing releases nothing; it
    // claims as a plain poll would.
    let mut plain = state.clone();
    let node = replicas[1].node_id;
    let released = tasks_of(apply::apply(&mut state, &after_start(node, 2_000_000)).expect("apply"));
    let claimed = claim_at(&mut plain, node, 2_000_000);
    assert_eq!(released, claimed);
    assert_eq!(state, plain, "the same state as a plain claim's");
}
