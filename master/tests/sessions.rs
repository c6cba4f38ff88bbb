//! Exactly-once commands at the state machine: a retried call is answered with its first
//! outcome and changes nothing; what a session keeps is bounded (the client's window, a
//! cap per client, expiry after idleness); the table survives a snapshot round trip.

use std::collections::BTreeMap;

use cellar_master::apply::{self, Kv};
use cellar_master::command::{
    Command, CommandError, CommitCall, CommitOutcome, DiskRegistration, Hash32, IndexCommit, RequestId,
    Response,
};
use cellar_master::session::{
    self, PREFIX_OUTCOME, SESSION_EXPIRIES_PER_APPLY_MAX, SESSION_EXPIRY_GRANULARITY_MS,
    SESSION_IDLE_EXPIRY_MS, SESSION_OUTCOMES_MAX,
};
use cellar_master::store::snapshot;
use cellar_master::types::ExtentPlace;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

const T0: u64 = 1_000_000;

/// Three zones of one node each and an open volume leased until well after every test's
/// clock.
fn setup() -> (State, u64) {
    let mut state = State::new();
    let mut replicas = Vec::new();
    for zone in ["a", "b", "c"] {
        let cmd = Command::RegisterNode {
            node_id: None,
            address: format!("{zone}:1"),
            zone: zone.into(),
            disks: vec![DiskRegistration {
                uuid: format!("{zone}-0"),
                path: "/d0".into(),
                capacity_bytes: 1 << 40,
                used_bytes: 0,
                free_bytes: 1 << 40,
            }],
            now_unix_ms: T0,
        };
        let Response::NodeRegistered { node_id, disk_ids } = apply::apply(&mut state, &cmd).expect("apply")
        else {
            panic!("register")
        };
        replicas.push(ExtentPlace { node_id, disk_id: disk_ids[0] });
    }
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: cellar_erasure::Scheme::RS_6_3,
        replicas,
        lease_ms: 100 * SESSION_IDLE_EXPIRY_MS,
        now_unix_ms: T0,
    };
    let Response::Volume { volume } = apply::apply(&mut state, &cmd).expect("apply") else {
        panic!("allocate")
    };
    (state, volume.volume_id)
}

fn entry(volume_id: u64, n: u8) -> IndexCommit {
    IndexCommit {
        hash: Hash32([n; 32]),
        volume_id,
        lease_epoch: 1,
        offset_bytes: u64::from(n) * 100,
        payload_bytes: 36, // a record of 100 bytes: the 64-byte header and 36 of payload
        crc32: 0,
        digest: None,
    }
}

fn id(client_id: u64, seq: u64, lowest_pending: u64) -> RequestId {
    RequestId { client_id, seq, lowest_pending }
}

/// One commit call with an id, alone in its batch.
fn commit_once(request: RequestId, entries: Vec<IndexCommit>, now: u64) -> Command {
    let calls = vec![CommitCall { request: Some(request), entries: entries.len() as u32 }];
    Command::CommitIndex { entries, volume_size_max_bytes: 1 << 30, now_unix_ms: now, calls }
}

fn drop_once(request: RequestId, n: u8, now: u64) -> Command {
    Command::Once {
        request,
        now_unix_ms: now,
        command: Box::new(Command::DropReferences { hashes: vec![Hash32([n; 32])] }),
    }
}

fn references(state: &State, n: u8) -> u64 {
    apply::index_entry(state, &Hash32([n; 32])).expect("read").map_or(0, |e| e.references)
}

fn outcome_keys(state: &State, client_id: u64) -> usize {
    let mut prefix = vec![PREFIX_OUTCOME];
    prefix.extend_from_slice(&client_id.to_be_bytes());
    state.keys().filter(|k| k.starts_with(&prefix)).count()
}

#[test]
fn a_duplicate_call_answers_its_first_outcome_and_changes_nothing() {
    let (mut state, volume) = setup();
    // A commit call: the first application creates the entry.
    let commit = commit_once(id(7, 1, 1), vec![entry(volume, 1)], T0 + 1);
    let first = apply::apply(&mut state, &commit).expect("apply");
    assert!(
        matches!(&first, Response::Committed { outcomes } if matches!(outcomes[0], CommitOutcome::Committed { .. }))
    );
    assert_eq!(references(&state, 1), 1);
    let before = state.clone();
    assert_eq!(apply::apply(&mut state, &commit).expect("apply"), first, "the retry gets the first outcome");
    assert_eq!(state, before, "a duplicate commit changes nothing (no second reference)");
    assert_eq!(references(&state, 1), 1);

    // Two more references, then one drop call applied twice: one reference goes.
    for seq in 2..=3 {
        apply::apply(&mut state, &commit_once(id(7, seq, seq), vec![entry(volume, 1)], T0 + 2))
            .expect("apply");
    }
    assert_eq!(references(&state, 1), 3);
    let drop = drop_once(id(7, 4, 4), 1, T0 + 3);
    let first = apply::apply(&mut state, &drop).expect("apply");
    let Response::Dropped { entries } = &first else { panic!("{first:?}") };
    assert_eq!(entries[0].references, 2);
    let before = state.clone();
    assert_eq!(apply::apply(&mut state, &drop).expect("apply"), first);
    assert_eq!(state, before, "a duplicate drop subtracts nothing");
    assert_eq!(references(&state, 1), 2);

    // A refusal is an outcome too: answered again, still nothing applied.
    let bad = Command::Once {
        request: id(7, 5, 5),
        now_unix_ms: T0 + 4,
        command: Box::new(Command::RenewLease {
            volume_id: 999,
            lease_epoch: 1,
            lease_ms: 1,
            now_unix_ms: T0 + 4,
        }),
    };
    let first = apply::apply(&mut state, &bad).expect("apply");
    assert!(matches!(first, Response::Refused { error: CommandError::UnknownVolume { volume_id: 999 } }));
    assert_eq!(apply::apply(&mut state, &bad).expect("apply"), first);
}

#[test]
fn each_call_of_a_commit_batch_keeps_its_own_id_and_outcome() {
    let (mut state, volume) = setup();
    let batch = |calls: Vec<(Option<RequestId>, Vec<IndexCommit>)>, now: u64| {
        let entries: Vec<IndexCommit> = calls.iter().flat_map(|(_, e)| e.clone()).collect();
        let calls = calls.iter().map(|(r, e)| CommitCall { request: *r, entries: e.len() as u32 }).collect();
        Command::CommitIndex { entries, volume_size_max_bytes: 1 << 30, now_unix_ms: now, calls }
    };
    let a = id(1, 1, 1);
    let first = apply::apply(
        &mut state,
        &batch(
            vec![
                (Some(a), vec![entry(volume, 1), entry(volume, 2)]),
                (Some(id(2, 1, 1)), vec![entry(volume, 3)]),
            ],
            T0 + 1,
        ),
    )
    .expect("apply");
    let Response::Committed { outcomes: first } = first else { panic!() };
    assert_eq!(first.len(), 3);
    // A's retry lands in a batch with a new call of client 3 and a call without an id.
    let again = apply::apply(
        &mut state,
        &batch(
            vec![
                (Some(id(3, 1, 1)), vec![entry(volume, 4)]),
                (Some(a), vec![entry(volume, 1), entry(volume, 2)]),
                (None, vec![entry(volume, 3)]),
            ],
            T0 + 2,
        ),
    )
    .expect("apply");
    let Response::Committed { outcomes } = again else { panic!() };
    assert_eq!(outcomes.len(), 4);
    assert!(matches!(outcomes[0], CommitOutcome::Committed { .. }));
    assert_eq!(outcomes[1..3], first[..2], "A's retry answers A's first outcomes");
    assert!(matches!(outcomes[3], CommitOutcome::Deduplicated { entry } if entry.references == 2));
    assert_eq!((references(&state, 1), references(&state, 2), references(&state, 4)), (1, 1, 1));
    // A call list that does not cover the entries is refused whole.
    let mut bad = batch(vec![(Some(id(4, 1, 1)), vec![entry(volume, 9)])], T0 + 3);
    if let Command::CommitIndex { calls, .. } = &mut bad {
        calls[0].entries = 2;
    }
    let before = state.clone();
    assert!(matches!(apply::apply(&mut state, &bad).expect("apply"), Response::Refused { .. }));
    assert_eq!(state, before);
}

#[test]
fn outcomes_below_the_clients_lowest_pending_call_are_forgotten_and_refused() {
    let (mut state, volume) = setup();
    for seq in 1..=3 {
        apply::apply(&mut state, &commit_once(id(9, seq, 1), vec![entry(volume, seq as u8)], T0))
            .expect("apply");
    }
    assert_eq!(outcome_keys(&state, 9), 3);
    // The client says calls below 3 ended: their outcomes go.
    apply::apply(&mut state, &commit_once(id(9, 4, 3), vec![entry(volume, 4)], T0)).expect("apply");
    assert_eq!(outcome_keys(&state, 9), 2);
    let s = session::session(&state, 9).expect("read").expect("session");
    assert_eq!(s.floor, 3);
    // A late retry of call 2 is refused, never applied a second time.
    let before = state.clone();
    let late =
        apply::apply(&mut state, &commit_once(id(9, 2, 2), vec![entry(volume, 2)], T0)).expect("apply");
    let Response::Committed { outcomes } = late else { panic!("{late:?}") };
    assert!(matches!(
        outcomes[0],
        CommitOutcome::Rejected { error: CommandError::RequestExpired { client_id: 9, seq: 2, floor: 3 } }
    ));
    assert_eq!(references(&state, 2), 1);
    // Only the session's activity time may move; here the clock did not.
    assert_eq!(state, before);
    let drop = apply::apply(&mut state, &drop_once(id(9, 1, 1), 1, T0)).expect("apply");
    assert!(matches!(drop, Response::Refused { error: CommandError::RequestExpired { .. } }));
    assert_eq!(references(&state, 1), 1);
    // A malformed id (lowest pending above the call) is refused.
    let bad = apply::apply(&mut state, &drop_once(id(9, 5, 6), 1, T0)).expect("apply");
    assert!(matches!(bad, Response::Refused { error: CommandError::BadRequest { .. } }));
}

#[test]
fn a_session_keeps_at_most_its_cap_of_outcomes() {
    let (mut state, volume) = setup();
    let calls = SESSION_OUTCOMES_MAX as u64 + 5;
    for seq in 1..=calls {
        // A client whose first call never ends: its window would grow without the cap.
        let cmd = drop_once(id(5, seq, 1), 200, T0);
        assert!(matches!(apply::apply(&mut state, &cmd).expect("apply"), Response::Dropped { .. }));
    }
    assert_eq!(outcome_keys(&state, 5), SESSION_OUTCOMES_MAX);
    let s = session::session(&state, 5).expect("read").expect("session");
    assert_eq!(s.retained.len(), SESSION_OUTCOMES_MAX);
    assert_eq!(s.floor, 6);
    assert!(matches!(
        apply::apply(&mut state, &drop_once(id(5, 5, 1), 200, T0)).expect("apply"),
        Response::Refused { error: CommandError::RequestExpired { seq: 5, floor: 6, .. } }
    ));
    assert!(matches!(
        apply::apply(&mut state, &drop_once(id(5, 6, 1), 200, T0)).expect("apply"),
        Response::Dropped { .. }
    ));
    let _ = volume;
}

#[test]
fn idle_sessions_expire_a_bounded_few_per_command() {
    let (mut state, volume) = setup();
    let idle_clients = 5u64;
    for client in 100..100 + idle_clients {
        apply::apply(&mut state, &drop_once(id(client, 1, 1), 1, T0)).expect("apply");
        assert_eq!(outcome_keys(&state, client), 1);
    }
    // Before the idle period ends nothing goes.
    let soon = T0 + SESSION_IDLE_EXPIRY_MS - SESSION_EXPIRY_GRANULARITY_MS;
    apply::apply(&mut state, &commit_once(id(1, 1, 1), vec![entry(volume, 1)], soon)).expect("apply");
    assert!((100..100 + idle_clients).all(|c| session::session(&state, c).expect("read").is_some()));
    // After it, each command removes at most SESSION_EXPIRIES_PER_APPLY_MAX of them.
    let late = T0 + SESSION_IDLE_EXPIRY_MS + 2 * SESSION_EXPIRY_GRANULARITY_MS;
    let alive = |state: &State| {
        (100..100 + idle_clients).filter(|c| session::session(state, *c).expect("read").is_some()).count()
    };
    let mut seq = 2;
    let mut last = alive(&state);
    while last > 0 {
        apply::apply(&mut state, &commit_once(id(1, seq, seq), vec![entry(volume, 1)], late)).expect("apply");
        let now_alive = alive(&state);
        assert!(last - now_alive <= SESSION_EXPIRIES_PER_APPLY_MAX, "{last} -> {now_alive}");
        assert!(now_alive < last, "every command removes some while some are due");
        last = now_alive;
        seq += 1;
    }
    for client in 100..100 + idle_clients {
        assert_eq!(outcome_keys(&state, client), 0, "an expired session's outcomes go with it");
    }
    // The active client's session stays, and no expiry index entry is left for the others.
    assert!(session::session(&state, 1).expect("read").is_some());
    let expiry_keys = state.keys().filter(|k| k.first() == Some(&session::PREFIX_SESSION_EXPIRY)).count();
    assert_eq!(expiry_keys, 1);
}

#[test]
fn the_session_table_survives_a_snapshot_round_trip() {
    let (mut state, volume) = setup();
    let commit = commit_once(id(42, 1, 1), vec![entry(volume, 1)], T0 + 1);
    let first = apply::apply(&mut state, &commit).expect("apply");
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = snapshot::Meta { last_log_id: None, last_membership: Default::default() };
    let pairs = state.iter().map(|(k, v)| Ok((k.clone().into_boxed_slice(), v.clone().into_boxed_slice())));
    let path = snapshot::write(dir.path(), &meta, pairs).expect("write snapshot");
    let mut restored = State::new();
    snapshot::read(std::fs::File::open(&path).expect("open"), |k, v| {
        restored.put(&k, v);
        Ok(())
    })
    .expect("read snapshot");
    assert_eq!(restored, state);
    let before = restored.clone();
    assert_eq!(
        apply::apply(&mut restored, &commit).expect("apply"),
        first,
        "the restored table answers the retry"
    );
    assert_eq!(restored, before);
    assert_eq!(references(&restored, 1), 1);
}

#[test]
fn a_once_command_cannot_wrap_a_commit_or_itself() {
    let (mut state, volume) = setup();
    let before = state.clone();
    for inner in [commit_once(id(1, 1, 1), vec![entry(volume, 1)], T0), drop_once(id(1, 1, 1), 1, T0)] {
        let cmd = Command::Once { request: id(2, 1, 1), now_unix_ms: T0, command: Box::new(inner) };
        assert!(matches!(
            apply::apply(&mut state, &cmd).expect("apply"),
            Response::Refused { error: CommandError::BadRequest { .. } }
        ));
    }
    assert_eq!(state, before);
}

fn empty_object() -> cellar_master::ns_types::Content {
    cellar_master::ns_types::Content {
        size_bytes: 0,
        etag: "\"d41d8cd98f00b204e9800998ecf8427e\"".into(),
        content_type: "t".into(),
        metadata: vec![],
        tags: vec![],
        checksums: vec![],
        blocks: vec![],
    }
}

fn put(bucket: &str, key: &str) -> cellar_master::ns_types::NsOp {
    cellar_master::ns_types::NsOp::PutVersion {
        bucket: bucket.into(),
        key: key.into(),
        content: empty_object(),
    }
}

/// The state less the session table (which every call touches).
fn without_sessions(state: &State) -> State {
    state
        .iter()
        .filter(|(k, _)| {
            ![session::PREFIX_SESSION, PREFIX_OUTCOME, session::PREFIX_SESSION_EXPIRY].contains(&k[0])
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn a_namespace_batch_applies_each_call_once_and_a_refused_call_alone_changes_nothing() {
    use cellar_master::command::NsCall;
    use cellar_master::ns_types::{NsCode, NsOp, NsResult};
    let mut state = State::new();
    let batch = |calls: Vec<NsCall>, now: u64| Command::NamespaceBatch { calls, now_unix_ms: now };
    let first = batch(
        vec![
            NsCall { request: Some(id(7, 1, 1)), op: NsOp::CreateBucket { name: "bkt".into() } },
            NsCall { request: Some(id(7, 2, 1)), op: put("bkt", "a") },
            NsCall { request: Some(id(7, 3, 1)), op: put("nobucket", "x") },
            NsCall { request: None, op: put("bkt", "b") },
        ],
        T0,
    );
    let Response::NamespaceBatch { responses } = apply::apply(&mut state, &first).expect("apply") else {
        panic!("a batch answers a batch")
    };
    assert_eq!(responses.len(), 4);
    assert!(matches!(&responses[0], Response::Namespace { result: NsResult::Bucket(_) }), "{responses:?}");
    let Response::Namespace { result: put_a @ NsResult::Version { .. } } = &responses[1] else {
        panic!("the put answers its version: {responses:?}")
    };
    assert!(
        matches!(
            &responses[2],
            Response::Refused { error: CommandError::Namespace { code: NsCode::NoSuchBucket, .. } }
        ),
        "{responses:?}"
    );
    assert!(
        matches!(&responses[3], Response::Namespace { result: NsResult::Version { .. } }),
        "{responses:?}"
    );
    // The two puts landed (a key each); the refused one left nothing.
    let keys = |s: &State| without_sessions(s).keys().filter(|k| k[0] == b'O').count();
    assert_eq!(keys(&state), 2);

    // A retry of call 2 in a later batch is answered with its first outcome and changes
    // nothing; a retry of the refused call 3 is refused again, the same way.
    let before = without_sessions(&state);
    let retry = batch(
        vec![
            NsCall { request: Some(id(7, 2, 2)), op: put("bkt", "a") },
            NsCall { request: Some(id(7, 3, 2)), op: put("nobucket", "x") },
        ],
        T0 + 10,
    );
    let Response::NamespaceBatch { responses: again } = apply::apply(&mut state, &retry).expect("apply")
    else {
        panic!("a batch answers a batch")
    };
    assert_eq!(&again[0], &Response::Namespace { result: put_a.clone() });
    assert_eq!(&again[1], &responses[2]);
    assert_eq!(without_sessions(&state), before, "a retried call changed the namespace");

    // A batch cannot be wrapped in a call id (its calls carry theirs).
    let wrapped =
        Command::Once { request: id(7, 9, 9), now_unix_ms: T0, command: Box::new(batch(vec![], T0)) };
    let snapshot_before = state.clone();
    assert!(matches!(apply::apply(&mut state, &wrapped).expect("apply"), Response::Refused { .. }));
    assert_eq!(state, snapshot_before);
}

fn object_of(n: u8) -> cellar_master::ns_types::Content {
    cellar_master::ns_types::Content {
        size_bytes: 36,
        blocks: vec![cellar_master::ns_types::BlockRef { hash: [n; 32], length_bytes: 36 }],
        ..empty_object()
    }
}

fn put_block(bucket: &str, key: &str, n: u8) -> cellar_master::ns_types::NsOp {
    cellar_master::ns_types::NsOp::PutVersion {
        bucket: bucket.into(),
        key: key.into(),
        content: object_of(n),
    }
}

#[test]
fn an_object_commit_adds_blocks_and_their_versions_in_one_entry_each_call_once() {
    use cellar_master::command::{EntryVersion, ObjectCall};
    use cellar_master::ns_types::{NsCode, NsOp, NsResult};
    let (mut state, volume) = setup();
    let create = Command::Namespace { op: NsOp::CreateBucket { name: "bkt".into() }, now_unix_ms: T0 };
    assert!(matches!(apply::apply(&mut state, &create).expect("apply"), Response::Namespace { .. }));
    let mut stale = entry(volume, 2);
    stale.lease_epoch = 9;
    let call = |request: Option<RequestId>, entries: u32, versions: Vec<(u32, NsOp)>| ObjectCall {
        request,
        entries,
        versions: versions.into_iter().map(|(entry, op)| EntryVersion { entry, op }).collect(),
    };
    let objects = |entries: Vec<IndexCommit>, calls: Vec<ObjectCall>, now: u64| Command::CommitObjects {
        unreferenced: (0..entries.len() as u32).collect(),
        entries,
        volume_size_max_bytes: 1 << 30,
        now_unix_ms: now,
        calls,
    };
    let first = objects(
        vec![entry(volume, 1), stale, entry(volume, 3)],
        vec![
            call(Some(id(7, 1, 1)), 1, vec![(0, put_block("bkt", "a", 1))]),
            call(None, 1, vec![(0, put_block("bkt", "b", 2))]),
            call(Some(id(7, 2, 1)), 1, vec![(0, put_block("nobucket", "c", 3))]),
        ],
        T0 + 1,
    );
    let Response::CommittedObjects { outcomes, versions } = apply::apply(&mut state, &first).expect("apply")
    else {
        panic!("an object commit answers outcomes and versions")
    };
    assert!(matches!(outcomes[0], CommitOutcome::Committed { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[1], CommitOutcome::Rejected { .. }), "{outcomes:?}");
    assert!(matches!(outcomes[2], CommitOutcome::Committed { .. }), "{outcomes:?}");
    let Response::Namespace { result: put_a @ NsResult::Version { .. } } = &versions[0] else {
        panic!("the first version was added: {versions:?}")
    };
    assert!(
        matches!(&versions[1], Response::Refused { error: CommandError::BadRequest { detail } } if detail.contains("not committed")),
        "{versions:?}"
    );
    assert!(
        matches!(
            &versions[2],
            Response::Refused { error: CommandError::Namespace { code: NsCode::NoSuchBucket, .. } }
        ),
        "{versions:?}"
    );
    // Block 1 took its version's one reference; block 3 is indexed with none (garbage for
    // compaction); block 2 was not committed; one version exists.
    assert_eq!(references(&state, 1), 1);
    assert_eq!(apply::index_entry(&state, &Hash32([3; 32])).expect("read").map(|e| e.references), Some(0));
    assert!(apply::index_entry(&state, &Hash32([2; 32])).expect("read").is_none());
    let versions_in = |s: &State| without_sessions(s).keys().filter(|k| k[0] == b'O').count();
    assert_eq!(versions_in(&state), 1);

    // A retry of the first call (a lost answer) gets its first outcome and changes nothing.
    let before = without_sessions(&state);
    let retry = objects(
        vec![entry(volume, 1)],
        vec![call(Some(id(7, 1, 1)), 1, vec![(0, put_block("bkt", "a", 1))])],
        T0 + 2,
    );
    let Response::CommittedObjects { outcomes: again, versions: again_versions } =
        apply::apply(&mut state, &retry).expect("apply")
    else {
        panic!("an object commit answers outcomes and versions")
    };
    assert_eq!(again, outcomes[..1]);
    assert_eq!(again_versions, vec![Response::Namespace { result: put_a.clone() }]);
    assert_eq!(without_sessions(&state), before, "a retried call changed the state");

    // Versions of the wrong shape are refused alone (their entries still commit): one
    // naming an entry past its call's, one naming a referenced entry, one not a put.
    let shapes = Command::CommitObjects {
        entries: vec![entry(volume, 4), entry(volume, 5)],
        unreferenced: vec![0],
        volume_size_max_bytes: 1 << 30,
        now_unix_ms: T0 + 3,
        calls: vec![call(
            None,
            2,
            vec![
                (2, put_block("bkt", "d", 4)),
                (1, put_block("bkt", "e", 5)),
                (0, NsOp::DeleteBucket { name: "bkt".into() }),
            ],
        )],
    };
    let Response::CommittedObjects { outcomes, versions } = apply::apply(&mut state, &shapes).expect("apply")
    else {
        panic!("an object commit answers outcomes and versions")
    };
    assert!(outcomes.iter().all(|o| matches!(o, CommitOutcome::Committed { .. })), "{outcomes:?}");
    assert!(
        versions.iter().all(|v| matches!(v, Response::Refused { error: CommandError::BadRequest { .. } })),
        "{versions:?}"
    );
    assert_eq!(versions_in(&state), 1);
    assert_eq!(references(&state, 5), 1, "a referenced entry keeps its own reference only");

    // Calls that do not cover the entries, or a wrapped call id: refused, nothing written.
    let before = state.clone();
    let uncovered = objects(vec![entry(volume, 6)], vec![call(None, 2, vec![])], T0 + 4);
    assert!(matches!(
        apply::apply(&mut state, &uncovered).expect("apply"),
        Response::Refused { error: CommandError::BadRequest { .. } }
    ));
    let wrapped = Command::Once {
        request: id(8, 1, 1),
        now_unix_ms: T0 + 4,
        command: Box::new(objects(vec![entry(volume, 6)], vec![call(None, 1, vec![])], T0 + 4)),
    };
    assert!(matches!(apply::apply(&mut state, &wrapped).expect("apply"), Response::Refused { .. }));
    assert_eq!(state, before);
}
