//! The state transition function, over an in-memory map: every refusal leaves the state
//! byte-for-byte unchanged.

use std::collections::BTreeMap;

use cellar_master::apply::{self, Kv};
use cellar_master::command::{
    Command, CommandError, CommitOutcome, DiskRegistration, Hash32, IndexCommit, Response,
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

fn setup() -> (State, u64) {
    let mut state = State::new();
    let mut replicas = Vec::new();
    for zone in ["a", "b", "c"] {
        let (node_id, disks) = register(&mut state, zone, 2);
        replicas.push(ExtentPlace { node_id, disk_id: disks[0] });
    }
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: "rs-6-3".into(),
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
        length_bytes: 100,
        crc32: 0,
    }
}

fn commit_cmd(entries: Vec<IndexCommit>, now: u64) -> Command {
    Command::CommitIndex { entries, volume_size_max_bytes: 1 << 20, now_unix_ms: now }
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
fn sealing_never_drops_acknowledged_records() {
    let (mut state, volume) = setup();
    apply::apply(&mut state, &commit_cmd(vec![commit(volume, 1, 1, 0)], 20)).expect("apply");
    let before = state.clone();
    let r = apply::apply(&mut state, &Command::SealVolume { volume_id: volume, length_bytes: Some(50) })
        .expect("apply");
    assert!(matches!(r, Response::Refused { error: CommandError::BadRequest { .. } }));
    assert_eq!(state, before);
    let r = apply::apply(&mut state, &Command::SealVolume { volume_id: volume, length_bytes: None })
        .expect("apply");
    let Response::Volume { volume: v } = r else { panic!("{r:?}") };
    assert_eq!((v.state, v.size_bytes, v.lease), (VolumeState::Sealed, 100, None));
    let counters = apply::counters(&state).expect("counters");
    assert_eq!(counters.volumes_by_state, [0, 1, 0]);
    // Sealing again at the same length is idempotent.
    let r = apply::apply(&mut state, &Command::SealVolume { volume_id: volume, length_bytes: Some(100) })
        .expect("apply");
    assert!(matches!(r, Response::Volume { .. }));
}

#[test]
fn allocation_refuses_unknown_or_failed_disks() {
    let (mut state, _) = setup();
    let before = state.clone();
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: "rs-6-3".into(),
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
