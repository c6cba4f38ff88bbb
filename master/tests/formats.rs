//! The master's persisted formats (docs/FORMAT.md section 13): every record kind
//! round-trips through the codec; the bytes of each kind are pinned (an encoding that
//! moves fails here first); a record of an unknown version, or of another kind, is
//! refused with a clear error and never skipped; a whole state written to a snapshot and
//! installed into an empty one reads back equal.

use std::collections::BTreeMap;

use cellar_master::apply::{self, Kv};
use cellar_master::codec::{self, CodecError, FORMAT_VERSION, Kind};
use cellar_master::command::{
    Command, CommitCall, DiskRegistration, Hash32, IndexCommit, RequestId, Response,
};
use cellar_master::session::{self, OutcomeRecord, Retained, SessionRecord};
use cellar_master::state::{self, PREFIX_DISK, PREFIX_NODE, PREFIX_VOLUME, StateError};
use cellar_master::store::snapshot;
use cellar_master::types::{
    Counters, DiskHealth, DiskRecord, ExtentPlace, Lease, NodeRecord, NodeState, Part, RECORD_VERSION,
    TaskKind, TaskRecord, TaskState, VolumeRecord, VolumeState,
};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn place(n: u64) -> ExtentPlace {
    ExtentPlace { node_id: n, disk_id: 10 + n }
}

fn node() -> NodeRecord {
    NodeRecord {
        v: RECORD_VERSION,
        node_id: 3,
        address: "h:1".into(),
        zone: "z".into(),
        state: NodeState::Down,
        last_heartbeat_unix_ms: 300,
        disk_ids: vec![4, 5],
    }
}

fn disk() -> DiskRecord {
    DiskRecord {
        v: RECORD_VERSION,
        disk_id: 4,
        node_id: 3,
        uuid: "ab".into(),
        path: "/d".into(),
        capacity_bytes: 1000,
        used_bytes: 1,
        free_bytes: 999,
        health: DiskHealth::Failed,
        trash_bytes: 2,
        trash_extents: 1,
    }
}

fn volume() -> VolumeRecord {
    VolumeRecord {
        v: RECORD_VERSION,
        volume_id: 7,
        state: VolumeState::Sealed,
        scheme: cellar_erasure::Scheme::RS_6_3,
        replicas: vec![place(1)],
        fragments: vec![place(2)],
        generation: 2,
        size_bytes: 4096,
        lease: Some(Lease { epoch: 1, holder: "fe".into(), expires_unix_ms: 200 }),
        bad_disks: vec![11],
    }
}

fn task() -> TaskRecord {
    TaskRecord {
        v: RECORD_VERSION,
        task_id: 9,
        kind: TaskKind::Copy {
            volume_id: 7,
            part: Part::Fragment { index: 2 },
            source: place(1),
            target: place(2),
            replaces: place(1),
        },
        node_id: 2,
        state: TaskState::Claimed,
        attempts: 1,
        claimed_until_unix_ms: 500,
        detail: "x".into(),
    }
}

fn counters() -> Counters {
    Counters {
        v: RECORD_VERSION,
        next_node_id: 4,
        next_disk_id: 6,
        next_volume_id: 8,
        cluster_map_version: 3,
        volumes_by_state: [1, 2, 3],
        index_entries: 200,
        next_task_id: 10,
        tasks_open: 1,
        tasks_done: 0,
        tasks_failed: 0,
    }
}

fn session_record() -> SessionRecord {
    SessionRecord {
        v: RECORD_VERSION,
        client_id: 5,
        floor: 2,
        last_active_unix_ms: 100,
        expires_unix_ms: 3_600_100,
        retained: vec![Retained { seq: 2, bytes: 12 }],
    }
}

/// Encodes `value` as `kind`, checks the bytes against `hex` and decodes them back.
fn pinned<T>(kind: Kind, value: &T, hex: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(kind, value).expect("encode");
    assert_eq!(hex::encode(&bytes), hex, "the encoding of {kind:?} moved (docs/FORMAT.md section 13)");
    let back: T = codec::decode(kind, &bytes).expect("decode");
    assert_eq!(&back, value);
}

#[test]
fn every_state_record_kind_round_trips_with_pinned_bytes() {
    pinned(Kind::Counters, &counters(), "01100104060803010203c8010a010000");
    pinned(Kind::Node, &node(), "0111010303683a31017a01ac02020405");
    pinned(Kind::Disk, &disk(), "0112010403026162022f64e80701e707010201");
    pinned(Kind::Volume, &volume(), "0113010701060301010b01020c0280200101026665c801010b");
    pinned(Kind::Task, &task(), "0114010902070102010b020c010b020101f4030178");
    pinned(Kind::Session, &session_record(), "011501050264e4dddb0101020c");
    pinned(Kind::EncodeTask, &300u64, "0117ac02");
    let outcome = OutcomeRecord {
        v: RECORD_VERSION,
        response: Response::NodeRegistered { node_id: 3, disk_ids: vec![4] },
    };
    pinned(Kind::Outcome, &outcome, "01160101030104");
    let apply_version = cellar_master::apply_version::ApplyVersionRecord {
        v: RECORD_VERSION,
        version: 2,
        since_unix_ms: 300,
    };
    pinned(Kind::ApplyVersion, &apply_version, "011f0102ac02");
}

#[test]
fn commands_round_trip_and_an_index_entry_costs_a_third_of_its_json() {
    let entries: Vec<IndexCommit> = (0..256u64)
        .map(|i| {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            IndexCommit {
                hash: Hash32(h),
                volume_id: 1234,
                lease_epoch: 3,
                offset_bytes: i * 4_194_368,
                payload_bytes: 4_194_304,
                crc32: (i as u32).wrapping_mul(2_654_435_761),
                digest: Some(cellar_master::command::Digest16([7; 16])),
            }
        })
        .collect();
    let commit = Command::CommitIndex {
        entries,
        volume_size_max_bytes: 4 << 30,
        now_unix_ms: 1_700_000_000_000,
        calls: vec![CommitCall {
            request: Some(RequestId { client_id: 1, seq: 2, lowest_pending: 2 }),
            entries: 256,
        }],
    };
    let once = Command::Once {
        request: RequestId { client_id: 1, seq: 3, lowest_pending: 3 },
        now_unix_ms: 5,
        command: Box::new(Command::EnqueueTask { kind: task().kind }),
    };
    let down = Command::MarkNodeDown { node_id: 4, down_after_ms: 900_000, now_unix_ms: 6 };
    let repair = Command::PlanRepair {
        kind: TaskKind::Reconstruct { volume_id: 9, index: 2, target: place(5), replaces: place(6) },
        replaces_task: Some(11),
        now_unix_ms: 7,
    };
    // Variant indices are part of the format (docs/FORMAT.md 13.4): pinned.
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &down).expect("encode")), "01010e04a0f73606");
    let drain = Command::SetDrain {
        target: cellar_master::types::DrainTarget::Disk { disk_id: 3 },
        drained: true,
        now_unix_ms: 8,
    };
    let remove = Command::RemoveNode { node_id: 4 };
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &remove).expect("encode")), "01011104");
    let raise = Command::RaiseApplyVersion { version: 2, now_unix_ms: 9 };
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &raise).expect("encode")), "0101180209");
    let retry = Command::RetryTask { task_id: 7 };
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &retry).expect("encode")), "01011907");
    let after_start = Command::ClaimTasksAfterStart {
        node_id: 4,
        max: 8,
        claim_ms: 1000,
        now_unix_ms: 9,
        deferred_kinds: vec![cellar_master::types::TaskType::Encode],
    };
    assert_eq!(
        hex::encode(codec::encode(Kind::LogEntry, &after_start).expect("encode")),
        "01011a0408e807090100"
    );
    for command in [&commit, &once, &down, &repair, &drain, &remove, &raise, &retry, &after_start] {
        let bytes = codec::encode(Kind::LogEntry, command).expect("encode");
        let back: Command = codec::decode(Kind::LogEntry, &bytes).expect("decode");
        assert_eq!(&back, command);
    }
    let binary = codec::encode(Kind::LogEntry, &commit).expect("encode").len();
    let json = serde_json::to_vec(&commit).expect("json").len();
    eprintln!("256 index entries: {binary} bytes binary ({} per entry), {json} bytes JSON", binary / 256);
    assert!(binary * 3 <= json, "{binary} bytes binary against {json} bytes of JSON");
}

#[test]
fn unknown_versions_and_wrong_kinds_are_refused_with_a_clear_error() {
    let mut state = State::new();
    let mut bytes = codec::encode(Kind::Volume, &volume()).expect("encode");
    bytes[0] = FORMAT_VERSION + 1;
    state.put(&state::id_key(PREFIX_VOLUME, 7), bytes.clone());
    let err = state::volume(&state, 7).expect_err("a newer version is refused");
    let StateError::Corrupt { key, detail } = &err else { panic!("{err}") };
    assert_eq!(key, &hex::encode(state::id_key(PREFIX_VOLUME, 7)));
    assert!(detail.contains("format version 2 is not known to this build"), "{detail}");
    assert_eq!(
        codec::decode::<VolumeRecord>(Kind::Volume, &bytes),
        Err(CodecError::UnknownVersion { found: 2 })
    );

    // A scheme the coder cannot run (0 parity fragments) is refused when read.
    let mut bytes = codec::encode(Kind::Volume, &volume()).expect("encode");
    let at = bytes.windows(2).position(|w| w == [6, 3]).expect("the scheme's two bytes");
    bytes[at + 1] = 0;
    state.put(&state::id_key(PREFIX_VOLUME, 8), bytes);
    let err = state::volume(&state, 8).expect_err("an invalid scheme is refused");
    assert!(
        err.to_string().contains("Volume record does not decode: a field holds a value out of its range"),
        "{err}"
    );

    // A node record where a disk record belongs.
    state.put(&state::id_key(PREFIX_DISK, 4), codec::encode(Kind::Node, &node()).expect("encode"));
    let err = state::disk(&state, 4).expect_err("another kind is refused");
    assert!(err.to_string().contains("expected a Disk record, found kind 17 (Node)"), "{err}");

    // JSON from before the binary format is not guessed at.
    state.put(&state::id_key(PREFIX_NODE, 3), serde_json::to_vec(&node()).expect("json"));
    let err = state::node(&state, 3).expect_err("JSON is refused");
    assert!(err.to_string().contains("format version 123 is not known"), "{err}");

    // Applying a command that meets a bad record fails; nothing is skipped.
    let heartbeat = Command::Heartbeat { node_id: 3, disks: vec![], now_unix_ms: 1 };
    assert!(apply::apply(&mut state, &heartbeat).is_err(), "a command over a bad record fails");
}

/// Builds a state holding every kind of record through commands.
fn populated() -> State {
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
            now_unix_ms: 1000,
        };
        let Response::NodeRegistered { node_id, disk_ids } = apply::apply(&mut state, &cmd).expect("apply")
        else {
            panic!("register")
        };
        replicas.push(ExtentPlace { node_id, disk_id: disk_ids[0] });
    }
    let cmd = Command::AllocateVolume {
        holder: "fe".into(),
        scheme: cellar_erasure::Scheme::RS_10_4,
        replicas: replicas.clone(),
        lease_ms: 60_000,
        now_unix_ms: 1000,
    };
    let Response::Volume { volume } = apply::apply(&mut state, &cmd).expect("apply") else {
        panic!("allocate")
    };
    let commit = Command::CommitIndex {
        entries: vec![IndexCommit {
            hash: Hash32([1; 32]),
            volume_id: volume.volume_id,
            lease_epoch: volume.lease.as_ref().map_or(0, |l| l.epoch),
            offset_bytes: 0,
            payload_bytes: 100,
            crc32: 5,
            digest: None,
        }],
        volume_size_max_bytes: 1 << 30,
        now_unix_ms: 1001,
        calls: vec![CommitCall {
            request: Some(RequestId { client_id: 9, seq: 1, lowest_pending: 1 }),
            entries: 1,
        }],
    };
    let Response::Committed { .. } = apply::apply(&mut state, &commit).expect("apply") else {
        panic!("commit")
    };
    let enqueue = Command::EnqueueTask {
        kind: TaskKind::Delete {
            volume_id: volume.volume_id,
            part: Part::Fragment { index: 0 },
            extent: replicas[0],
        },
    };
    let r = apply::apply(&mut state, &enqueue).expect("apply");
    let Response::TaskQueued { .. } = r else { panic!("enqueue: {r:?}") };
    let drain = Command::SetDrain {
        target: cellar_master::types::DrainTarget::Node { node_id: replicas[1].node_id },
        drained: true,
        now_unix_ms: 9,
    };
    let r = apply::apply(&mut state, &drain).expect("apply");
    assert_eq!(r, Response::Empty, "drain");
    let raise = Command::RaiseApplyVersion { version: 2, now_unix_ms: 10 };
    assert_eq!(apply::apply(&mut state, &raise).expect("apply"), Response::Empty, "raise");
    assert!(state.keys().any(|k| k[0] == b'r'), "a drain record");
    state
}

#[test]
fn a_state_written_to_a_snapshot_installs_into_an_empty_one_unchanged() {
    let state = populated();
    // Every record kind the commands write is there, and each decodes.
    assert!(state::counters(&state).expect("counters").index_entries == 1);
    assert!(session::session(&state, 9).expect("session").is_some(), "a session record");
    for (key, value) in &state {
        let kind = match key[0] {
            b'c' => Some(Kind::Counters),
            b'n' => Some(Kind::Node),
            b'd' => Some(Kind::Disk),
            b'v' => Some(Kind::Volume),
            b't' => Some(Kind::Task),
            b's' => Some(Kind::Session),
            b'o' => Some(Kind::Outcome),
            b'e' => Some(Kind::EncodeTask),
            b'r' => Some(Kind::Drain),
            b'a' => Some(Kind::ApplyVersion),
            _ => None, // index entries, queue and expiry keys: their own layouts
        };
        if let Some(kind) = kind {
            codec::check_envelope(kind, value).unwrap_or_else(|e| panic!("key {}: {e}", hex::encode(key)));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = snapshot::Meta { last_log_id: None, last_membership: Default::default() };
    let pairs = state.iter().map(|(k, v)| Ok((k.clone().into_boxed_slice(), v.clone().into_boxed_slice())));
    let path = snapshot::write(dir.path(), &meta, pairs).expect("write snapshot");
    assert_eq!(snapshot::read_meta(&path).expect("meta"), meta);
    let mut installed = State::new();
    let (read_meta, count) = snapshot::read(std::fs::File::open(&path).expect("open"), |k, v| {
        installed.insert(k, v);
        Ok(())
    })
    .expect("read snapshot");
    assert_eq!(read_meta, meta);
    assert_eq!(count as usize, state.len());
    assert_eq!(installed, state);
    // The installed state serves commands as the original did.
    let mut original = state.clone();
    let heartbeat = Command::Heartbeat { node_id: 1, disks: vec![], now_unix_ms: 2000 };
    assert_eq!(
        apply::apply(&mut installed, &heartbeat).expect("apply"),
        apply::apply(&mut original, &heartbeat).expect("apply")
    );

    // A snapshot whose meta is of an unknown version is refused, naming the version.
    let mut bytes = std::fs::read(&path).expect("read file");
    bytes[12] = FORMAT_VERSION + 1; // magic (8), meta length (4), then the envelope
    let bad = dir.path().join("bad");
    std::fs::write(&bad, &bytes).expect("write");
    let err = snapshot::read_meta(&bad).expect_err("refused");
    assert!(err.to_string().contains("format version 2 is not known"), "{err}");
}

#[test]
fn namespace_records_and_commands_have_pinned_bytes() {
    use cellar_master::ns_types::{
        AccessKeyRecord, BlockRef, BucketRecord, Content, NsCode, NsOp, NsResult, PartRecord, UploadRecord,
        VersionRecord, Versioning,
    };
    let bucket = BucketRecord {
        v: RECORD_VERSION,
        name: "bkt".into(),
        created_unix_ms: 5,
        versioning: Versioning::Enabled,
        next_version: 7,
    };
    pinned(Kind::Bucket, &bucket, "01190103626b74050107");
    let content = Content {
        size_bytes: 3,
        etag: "\"e\"".into(),
        content_type: "t".into(),
        metadata: vec![("a".into(), "b".into())],
        tags: vec![],
        checksums: vec![("CRC32".into(), "x".into())],
        blocks: vec![BlockRef { hash: [9; 32], length_bytes: 3 }],
    };
    let version = VersionRecord {
        v: RECORD_VERSION,
        version: 2,
        null_version: false,
        delete_marker: false,
        created_unix_ms: 6,
        content: content.clone(),
    };
    pinned(
        Kind::Version,
        &version,
        "011a01020000060303226522017401016101620001054352433332017801090909090909090909090909090909090909090909090909090909090909090903",
    );
    let upload = UploadRecord {
        v: RECORD_VERSION,
        upload_id: "u1".into(),
        created_unix_ms: 7,
        content: Content::default(),
    };
    pinned(Kind::Upload, &upload, "011b010275310700000000000000");
    let part = PartRecord {
        v: RECORD_VERSION,
        part_number: 1,
        etag: "\"p\"".into(),
        size_bytes: 3,
        created_unix_ms: 8,
        blocks: vec![BlockRef { hash: [9; 32], length_bytes: 3 }],
        checksums: vec![],
    };
    pinned(
        Kind::Part,
        &part,
        "011c01010322702203080109090909090909090909090909090909090909090909090909090909090909090300",
    );
    let key = AccessKeyRecord {
        v: RECORD_VERSION,
        access_key: "AK".into(),
        secret_key: "secret12".into(),
        name: "n".into(),
        created_unix_ms: 9,
    };
    pinned(Kind::AccessKey, &key, "011d0102414b087365637265743132016e09");
    // Commands 18-23 and responses 10-12, error 7 (docs/FORMAT.md 13.4).
    let put = Command::Namespace {
        op: NsOp::PutVersion { bucket: "bkt".into(), key: "k".into(), content },
        now_unix_ms: 1,
    };
    let delete = Command::DeleteVolume { volume_id: 3, size_bytes: 64, entries: vec![Hash32([1; 32])] };
    let unreferenced = Command::CommitIndexUnreferenced {
        entries: vec![],
        unreferenced: vec![0],
        volume_size_max_bytes: 2,
        now_unix_ms: 3,
        calls: vec![],
    };
    let abort = Command::Namespace {
        op: NsOp::AbortUpload { bucket: "b".into(), key: "k".into(), upload_id: "u".into() },
        now_unix_ms: 2,
    };
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &abort).expect("encode")), "010113080162016b017502");
    assert_eq!(
        hex::encode(codec::encode(Kind::LogEntry, &unreferenced).expect("encode")),
        "010112000100020300"
    );
    let relocate = Command::RelocateIndex {
        entries: vec![],
        relocate_from: vec![],
        volume_size_max_bytes: 2,
        now_unix_ms: 3,
    };
    assert_eq!(hex::encode(codec::encode(Kind::LogEntry, &relocate).expect("encode")), "01011500000203");
    let batch = Command::NamespaceBatch {
        calls: vec![cellar_master::command::NsCall {
            request: Some(cellar_master::command::RequestId { client_id: 1, seq: 2, lowest_pending: 2 }),
            op: NsOp::DeleteKey { access_key: "k".into() },
        }],
        now_unix_ms: 5,
    };
    assert_eq!(
        hex::encode(codec::encode(Kind::LogEntry, &batch).expect("encode")),
        "01011601010102020b016b05"
    );
    let objects = Command::CommitObjects {
        entries: vec![],
        unreferenced: vec![],
        volume_size_max_bytes: 2,
        now_unix_ms: 3,
        calls: vec![cellar_master::command::ObjectCall {
            request: None,
            entries: 0,
            versions: vec![cellar_master::command::EntryVersion {
                entry: 0,
                op: NsOp::DeleteKey { access_key: "k".into() },
            }],
        }],
    };
    assert_eq!(
        hex::encode(codec::encode(Kind::LogEntry, &objects).expect("encode")),
        "0101170000020301000001000b016b"
    );
    let objects_answered = OutcomeRecord {
        v: RECORD_VERSION,
        response: Response::CommittedObjects {
            outcomes: vec![],
            versions: vec![Response::Namespace { result: NsResult::Done }],
        },
    };
    pinned(Kind::Outcome, &objects_answered, "0116010c00010a06");
    let answered = OutcomeRecord {
        v: RECORD_VERSION,
        response: Response::NamespaceBatch {
            responses: vec![Response::Namespace { result: NsResult::Done }],
        },
    };
    pinned(Kind::Outcome, &answered, "0116010b010a06");
    let rules = cellar_master::namespace::lifecycle::LifecycleRecord {
        v: RECORD_VERSION,
        rules: vec![cellar_master::namespace::lifecycle::LifecycleRule {
            id: "r".into(),
            prefix: "p/".into(),
            enabled: true,
            expiration_days: None,
            expired_object_delete_marker: true,
            noncurrent_days: Some(3),
            abort_incomplete_days: Some(7),
        }],
    };
    pinned(Kind::Lifecycle, &rules, "011e0101017202702f01000101030107");
    let expire = Command::Namespace {
        op: NsOp::Expire { bucket: "b".into(), key: "k".into(), day_ms: 1000 },
        now_unix_ms: 2,
    };
    assert_eq!(
        hex::encode(codec::encode(Kind::LogEntry, &expire).expect("encode")),
        "0101130d0162016be80702"
    );
    let d = codec::encode(Kind::LogEntry, &delete).expect("encode");
    assert_eq!(hex::encode(&d[..6]), "010114034001");
    for command in [&put, &delete, &unreferenced, &abort, &batch, &objects] {
        let bytes = codec::encode(Kind::LogEntry, command).expect("encode");
        let back: Command = codec::decode(Kind::LogEntry, &bytes).expect("decode");
        assert_eq!(&back, command);
    }
    let outcome = OutcomeRecord {
        v: RECORD_VERSION,
        response: Response::Namespace {
            result: NsResult::Deleted { delete_marker: true, version_id: "v".into() },
        },
    };
    pinned(Kind::Outcome, &outcome, "0116010a02010176");
    let refused = OutcomeRecord {
        v: RECORD_VERSION,
        response: Response::Refused {
            error: cellar_master::command::CommandError::Namespace {
                code: NsCode::NoSuchKey,
                detail: "d".into(),
            },
        },
    };
    pinned(Kind::Outcome, &refused, "0116010907030164");
}
