//! Exactly-once master calls end to end, in process: the answer to a call the leader has
//! applied is lost on the way back, the client retries, and the retry gets the first
//! outcome (one reference added, one dropped); the table holds across a leader change;
//! and a master that accepts connections but never answers costs one bounded attempt.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cellar_master::client::{ClientError, CustomTransport, MasterClient, Transport};
use cellar_master::node::MasterHandle;
use cellar_proto::master as pb;
use cellar_proto::master::master_server::MasterServer;
use common::{Group, allocate, commit, hash, register_nodes, seal_with_one_entry};
use tonic::codegen::Service;

/// Loses the answer of the next `n` successful calls of `method` (after the master
/// applied them), as a connection reset on the way back would.
#[derive(Clone, Default)]
struct LoseAnswers {
    method: Arc<std::sync::Mutex<String>>,
    remaining: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
}

impl LoseAnswers {
    fn arm(&self, method: &str, n: usize) {
        *self.method.lock().expect("lock") = method.to_string();
        self.remaining.store(n, Ordering::SeqCst);
    }
}

/// A client of `group` whose every master is reached in-process through `faults`.
fn faulty_client(group: &Group, faults: &LoseAnswers) -> MasterClient {
    let mut transports = Vec::new();
    for id in group.peers.keys() {
        let server = MasterServer::from_arc(group.handles[id].local_api());
        let faults = faults.clone();
        transports.push(Transport::Custom(CustomTransport::new(move |req| {
            let mut server = server.clone();
            let faults = faults.clone();
            Box::pin(async move {
                let path = req.uri().path().to_string();
                let resp = server.call(req).await.unwrap_or_else(|never| match never {});
                // An error answer is trailers-only: grpc-status in the headers. A success
                // has it in the trailers, after the message.
                let success = !resp.headers().contains_key("grpc-status");
                let armed = path.ends_with(&*faults.method.lock().expect("lock"));
                if success
                    && armed
                    && faults
                        .remaining
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    faults.lost.fetch_add(1, Ordering::SeqCst);
                    return Err("connection reset after the master answered (injected)".into());
                }
                Ok(resp)
            })
        })));
    }
    MasterClient::builder(&group.addrs()).transports(transports).build().expect("client")
}

/// A group of three masters with nodes registered and one volume allocated; a plain
/// client, and one whose answers `faults` can lose.
struct Faulty {
    group: Group,
    plain: MasterClient,
    volume: pb::Volume,
    faults: LoseAnswers,
    client: MasterClient,
}

async fn faulty_group() -> Faulty {
    let group = Group::start(3).await;
    let plain = group.client();
    register_nodes(&plain).await;
    let volume = allocate(&plain).await;
    let faults = LoseAnswers::default();
    let client = faulty_client(&group, &faults);
    Faulty { group, plain, volume, faults, client }
}

/// A CommitIndex of block `i` at `offset` of `volume`, without a request id of its own.
fn commit_request(volume: &pb::Volume, i: u64, offset: u64) -> pb::CommitIndexRequest {
    pb::CommitIndexRequest {
        entries: vec![commit(volume, i, offset)],
        request_id: None,
        versions: Vec::new(),
    }
}

async fn references(client: &MasterClient, i: u64) -> u64 {
    let req = pb::LookupRequest { hashes: vec![hash(i)], request_id: None };
    let resp = client
        .call(|mut c| {
            let req = req.clone();
            async move { c.lookup(req).await }
        })
        .await
        .expect("lookup");
    resp.entries.first().map_or(0, |e| e.references)
}

fn applied(h: &MasterHandle) -> u64 {
    use openraft::async_runtime::WatchReceiver;
    h.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_lost_answer_gets_the_first_outcome_and_counts_once() {
    let Faulty { group, plain, volume, faults, client } = faulty_group().await;

    // A commit whose answer is lost: the retry is answered "committed", one reference.
    faults.arm("/CommitIndex", 1);
    let req = commit_request(&volume, 1, 0);
    let resp = client
        .call_once(req.clone(), |mut c, r| async move { c.commit_index(r).await })
        .await
        .expect("commit");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 1, "the first answer was lost");
    assert_eq!(
        resp.results[0].outcome(),
        pb::CommitOutcome::Committed,
        "the retry answers the first outcome"
    );
    assert_eq!(resp.results[0].entry.as_ref().map(|e| e.references), Some(1));
    assert_eq!(references(&plain, 1).await, 1, "a retried commit adds no second reference");

    // Without a request id the same fault applies the commit twice: what the ids prevent.
    faults.arm("/CommitIndex", 1);
    let twice = commit_request(&volume, 2, 100);
    client
        .call(|mut c| {
            let r = twice.clone();
            async move { c.commit_index(r).await }
        })
        .await
        .expect("commit without id");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 2);
    assert_eq!(references(&plain, 2).await, 2, "the fault does double-apply a call without an id");

    // Two more references on block 1, then a drop whose answer is lost: one goes.
    for _ in 0..2 {
        client
            .call_once(req.clone(), |mut c, r| async move { c.commit_index(r).await })
            .await
            .expect("commit");
    }
    assert_eq!(references(&plain, 1).await, 3);
    faults.arm("/DropReferences", 1);
    let drop = pb::LookupRequest { hashes: vec![hash(1)], request_id: None };
    let resp = client
        .call_once(drop.clone(), |mut c, r| async move { c.drop_references(r).await })
        .await
        .expect("drop");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 3);
    assert_eq!(resp.entries[0].references, 2, "the retry answers the first drop's outcome");
    assert_eq!(references(&plain, 1).await, 2, "a retried drop subtracts once");

    // A lost answer to a first registration: one node, not two.
    let nodes_before = status_nodes(&plain).await;
    faults.arm("/RegisterNode", 1);
    let reg = pb::RegisterNodeRequest {
        node_id: None,
        address: "10.9.9.9:1".into(),
        zone: "z1".into(),
        disks: vec![],
        request_id: None,
    };
    client.call_once(reg, |mut c, r| async move { c.register_node(r).await }).await.expect("register");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 4);
    assert_eq!(status_nodes(&plain).await, nodes_before + 1);
    group.shutdown().await;
}

/// A caller that retries past one `call_once` (a volume server's task report does, for up
/// to a minute) keeps one id with a `OnceSlot`: a second call with the slot, after the
/// first was applied and its answer lost, is answered with the first outcome and applies
/// nothing; two `call_once`s of the same request apply twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_made_with_one_slot_apply_once() {
    let Faulty { group, plain, volume, faults, client } = faulty_group().await;
    let req = commit_request(&volume, 7, 0);

    let slot = client.once_slot();
    let first =
        slot.call(req.clone(), |mut c, r| async move { c.commit_index(r).await }).await.expect("commit");
    assert_eq!(first.results[0].outcome(), pb::CommitOutcome::Committed);
    // The caller's next attempt, as after an answer it never got.
    faults.arm("/CommitIndex", 1);
    let again = slot
        .call(req.clone(), |mut c, r| async move { c.commit_index(r).await })
        .await
        .expect("commit again");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 1, "the second call's first answer was lost too");
    assert_eq!(again.results[0].outcome(), pb::CommitOutcome::Committed, "the first outcome");
    assert_eq!(again.results[0].entry.as_ref().map(|e| e.references), Some(1));
    assert_eq!(references(&plain, 7).await, 1, "one reference for two calls with one slot");
    drop(slot);

    // Two call_once of the same request are two calls: two references.
    client
        .call_once(req.clone(), |mut c, r| async move { c.commit_index(r).await })
        .await
        .expect("commit once more");
    assert_eq!(references(&plain, 7).await, 2, "a fresh id applies again");
    group.shutdown().await;
}

async fn status_nodes(client: &MasterClient) -> usize {
    client
        .call(|mut c| async move { c.status(pb::StatusRequest {}).await })
        .await
        .expect("status")
        .nodes
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_reaching_a_new_leader_gets_the_first_outcome() {
    let mut group = Group::start(3).await;
    let client = group.client();
    register_nodes(&client).await;
    let volume = allocate(&client).await;
    // The same logical call, sent by hand with a fixed id: once to the old leader, again
    // after it is gone.
    let id = pb::RequestId { client_id: 0xC0FFEE, sequence: 1, lowest_pending: 1 };
    let req = pb::CommitIndexRequest {
        entries: vec![commit(&volume, 7, 0)],
        request_id: Some(id),
        versions: Vec::new(),
    };
    let send = |req: pb::CommitIndexRequest| {
        let client = &client;
        async move {
            client
                .call(|mut c| {
                    let req = req.clone();
                    async move { c.commit_index(req).await }
                })
                .await
        }
    };
    let first = send(req.clone()).await.expect("commit");
    let leader = group.wait_for_leader().await;
    // Every member has the session before the leader goes.
    let index = applied(&group.handles[&leader]);
    for id in group.handles.keys().copied().collect::<Vec<_>>() {
        group.wait_applied(id, index).await;
    }
    group.stop(leader).await;
    let new_leader = group.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    let again = send(req).await.expect("retry");
    assert_eq!(again, first, "the new leader answers the first outcome");
    assert_eq!(references(&client, 7).await, 1);
    group.shutdown().await;
}

/// Accepts connections and never answers (a hung or frozen master).
fn silent_listener() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Bounded: the tests make a handful of connections.
        for conn in listener.incoming().take(16) {
            match conn {
                Ok(c) => held.push(c),
                Err(_) => return,
            }
        }
    });
    (addr, thread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_that_never_answers_costs_one_bounded_attempt() {
    let group = Group::start(1).await;
    let (silent, _thread) = silent_listener();
    let attempt = Duration::from_millis(300);
    // The silent address first: the client starts there.
    let addrs = vec![silent.clone(), group.addrs()[0].clone()];
    let client = MasterClient::builder(&addrs).attempt_timeout(attempt).build().expect("client");
    let started = tokio::time::Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }),
    )
    .await
    .expect("the call hung on the silent master")
    .expect("status from the live master");
    assert_eq!(status.node_id, 1);
    assert!(started.elapsed() < Duration::from_secs(3), "failed over after {:?}", started.elapsed());

    // Only the silent master: the call fails within its deadline.
    let deadline = Duration::from_millis(1_000);
    let client = MasterClient::builder(std::slice::from_ref(&silent))
        .attempt_timeout(attempt)
        .deadline(deadline)
        .build()
        .expect("client");
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }),
    )
    .await
    .expect("the call hung past its deadline");
    assert!(matches!(result, Err(ClientError::Unavailable { .. })), "{result:?}");
    let took = started.elapsed();
    assert!(took >= deadline && took < deadline + Duration::from_millis(500), "took {took:?}");
    group.shutdown().await;
}

/// An object version committed with its block (`CommitIndexRequest.versions`, the
/// `CommitObjects` command) whose answer is lost: the retry gets the first outcome, the
/// key has one version and the block one reference. Versions of the wrong shape are
/// refused before anything is proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_version_committed_with_its_block_is_added_once_across_a_lost_answer() {
    let group = Group::start(3).await;
    let plain = group.client();
    register_nodes(&plain).await;
    let volume = allocate(&plain).await;
    let create = pb::NsWriteRequest {
        request_id: None,
        op: Some(pb::ns_write_request::Op::CreateBucket(pb::CreateBucketOp { name: "bkt".into() })),
    };
    plain.call_once(create, |mut c, r| async move { c.ns_write(r).await }).await.expect("create a bucket");
    // Versioned: a second application would add a second version (and a second reference)
    // instead of replacing the first.
    let versioned = pb::NsWriteRequest {
        request_id: None,
        op: Some(pb::ns_write_request::Op::SetVersioning(pb::SetVersioningOp {
            bucket: "bkt".into(),
            versioning: pb::Versioning::Enabled.into(),
        })),
    };
    plain.call_once(versioned, |mut c, r| async move { c.ns_write(r).await }).await.expect("versioning");
    let version = |key: &str, i: u64| pb::EntryVersion {
        entry: 0,
        op: Some(pb::PutVersionOp {
            bucket: "bkt".into(),
            key: key.into(),
            fields: Some(pb::VersionFields {
                size_bytes: 36,
                etag: "\"e\"".into(),
                blocks: vec![pb::BlockRef { hash: hash(i), length_bytes: 36 }],
                ..Default::default()
            }),
        }),
    };
    let unreferenced =
        |i: u64, offset: u64| pb::IndexCommit { unreferenced: true, ..commit(&volume, i, offset) };

    let faults = LoseAnswers::default();
    let client = faulty_client(&group, &faults);
    faults.arm("/CommitIndex", 1);
    let req = pb::CommitIndexRequest {
        entries: vec![unreferenced(1, 0)],
        request_id: None,
        versions: vec![version("k", 1)],
    };
    let resp = client
        .call_once(req, |mut c, r| async move { c.commit_index(r).await })
        .await
        .expect("commit with a version");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 1, "the first answer was lost");
    assert_eq!(resp.results[0].outcome(), pb::CommitOutcome::Committed);
    assert_eq!(resp.versions.len(), 1);
    let Some(pb::NsWriteResponse { result: Some(pb::ns_write_response::Result::Version(v)) }) =
        &resp.versions[0].written
    else {
        panic!("the version was not added: {:?}", resp.versions)
    };
    assert_eq!(v.key, "k");
    assert_eq!(references(&plain, 1).await, 1, "a retried object commit adds one reference");
    let list =
        pb::ListObjectsRequest { bucket: "bkt".into(), versions: true, max_keys: 100, ..Default::default() };
    let listed = plain
        .call(|mut c| {
            let r = list.clone();
            async move { c.ns_list_objects(r).await }
        })
        .await
        .expect("list versions");
    assert_eq!(listed.versions.len(), 1, "a retried object commit added a second version: {listed:?}");

    // Refused before anything is proposed: a version naming a referenced entry, one naming
    // no entry, more versions than entries.
    let referenced = pb::CommitIndexRequest {
        entries: vec![commit(&volume, 2, 100)],
        request_id: None,
        versions: vec![version("k2", 2)],
    };
    let no_entry = pb::CommitIndexRequest {
        entries: vec![unreferenced(2, 100)],
        request_id: None,
        versions: vec![pb::EntryVersion { entry: 1, ..version("k2", 2) }],
    };
    let too_many = pb::CommitIndexRequest {
        entries: vec![unreferenced(2, 100)],
        request_id: None,
        versions: vec![version("k2", 2), version("k3", 2)],
    };
    for bad in [referenced, no_entry, too_many] {
        let err = plain
            .call(|mut c| {
                let r = bad.clone();
                async move { c.commit_index(r).await }
            })
            .await
            .expect_err("a malformed object commit was accepted");
        assert_eq!(err.error_code(), Some(cellar_proto::ErrorCode::BadRequest), "{err:?}");
    }
    assert_eq!(references(&plain, 2).await, 0, "a refused object commit indexed its block");
    group.shutdown().await;
}

/// A task poll whose answer is lost after the leader claimed a task: the retry (same id)
/// gets the task, not "nothing to do" from the idle-poll shortcut, which finds the task
/// claimed and so not claimable (seen over processes: the leader killed between its
/// commit and its answer left a repair claimed by nobody until the claim ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_task_poll_whose_answer_was_lost_gets_the_claimed_task() {
    let Faulty { group, plain, volume, faults, client } = faulty_group().await;
    // A sealed volume with one entry: its first replica's node gets an encode task.
    seal_with_one_entry(&plain, &volume).await;
    let encoder = volume.replicas[0].node_id;
    let pull = pb::PullTasksRequest {
        node_id: encoder,
        max: 10,
        deferred_kinds: Vec::new(),
        request_id: None,
        first_since_start: false,
    };

    faults.arm("/PullTasks", 1);
    let got =
        client.call_once(pull.clone(), |mut c, r| async move { c.pull_tasks(r).await }).await.expect("pull");
    assert_eq!(faults.lost.load(Ordering::SeqCst), 1, "the first answer was lost");
    assert_eq!(got.tasks.len(), 1, "the retry answers the task the first attempt claimed: {got:?}");
    assert_eq!(
        (got.tasks[0].kind().name(), got.tasks[0].volume_id, got.tasks[0].state().name()),
        ("encode", volume.volume_id, "claimed")
    );
    // A new poll (a new id) finds nothing: the task is claimed, handed out once.
    let again =
        client.call_once(pull.clone(), |mut c, r| async move { c.pull_tasks(r).await }).await.expect("pull");
    assert!(again.tasks.is_empty(), "a claimed task is not handed out twice: {again:?}");
    group.shutdown().await;
}
