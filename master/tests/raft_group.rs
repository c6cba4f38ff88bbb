//! A 3-member master group in one process: leader loss during a stream of index commits,
//! restarts from the data directory, catch-up by snapshot, fencing of stale leases.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cellar_master::apply;
use cellar_master::client::{ClientError, MasterClient};
use cellar_master::command::Hash32;
use cellar_proto::master as pb;
use common::{Group, allocate, commit, hash, register_nodes, seal_with_one_entry};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_commits_survive_leader_loss_and_the_old_leader_rejoins() {
    let mut group = Group::start(3).await;
    let client = Arc::new(group.client());
    register_nodes(&client).await;
    let volume = allocate(&client).await;

    // Stream commits of 10 entries each; remember every acknowledged entry.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop, volume) = (client.clone(), stop.clone(), volume.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Acquire) {
                let entries: Vec<_> = (i..i + 10).map(|k| commit(&volume, k, k * 100)).collect();
                let req = pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() };
                let resp = client
                    .call(|mut c| {
                        let req = req.clone();
                        async move { c.commit_index(req).await }
                    })
                    .await;
                if let Ok(resp) = resp {
                    for (k, r) in (i..i + 10).zip(&resp.results) {
                        assert!(
                            matches!(
                                r.outcome(),
                                pb::CommitOutcome::Committed | pb::CommitOutcome::Deduplicated
                            ),
                            "{r:?}"
                        );
                        acked.push(k);
                    }
                    i += 10;
                }
            }
            acked
        })
    };
    // Let some commits land, then kill the leader.
    let leader = group.wait_for_leader().await;
    group.wait_applied(leader, group.applied(leader) + 20).await;
    group.stop(leader).await;
    let new_leader = group.wait_for_leader().await;
    assert_ne!(new_leader, leader);
    // More commits under the new leader.
    group.wait_applied(new_leader, group.applied(new_leader) + 20).await;
    stop.store(true, Ordering::Release);
    let acked = writer.await.expect("writer");
    assert!(acked.len() >= 100, "only {} commits acknowledged", acked.len());

    // Every acknowledged entry is readable through the group.
    for chunk in acked.chunks(1000) {
        let req = pb::LookupRequest { hashes: chunk.iter().map(|k| hash(*k)).collect(), request_id: None };
        let resp = client
            .call(|mut c| {
                let req = req.clone();
                async move { c.lookup(req).await }
            })
            .await
            .expect("lookup");
        for e in &resp.entries {
            assert_eq!(e.digest, e.hash[..16], "the read digest came back with the entry");
        }
        let found: BTreeSet<Vec<u8>> = resp.entries.iter().map(|e| e.hash.clone()).collect();
        for k in chunk {
            assert!(found.contains(&hash(*k)), "acknowledged entry {k} lost");
        }
    }

    // The old leader rejoins from its data directory and catches up.
    group.restart(leader).await;
    let target = group.applied(new_leader);
    group.wait_applied(leader, target).await;
    let reader = &group.handles[&leader].reader;
    for k in &acked {
        let h = Hash32::from_slice(&hash(*k)).expect("hash");
        assert!(
            apply::index_entry(reader, &h).expect("read").is_some(),
            "entry {k} missing on the rejoined member"
        );
    }
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_missed_many_entries_catches_up_by_snapshot() {
    let mut group = Group::start_with(3, |c| {
        c.snapshot_after_entries = 20;
        c.log_kept_after_snapshot = 0;
    })
    .await;
    let client = group.client();
    register_nodes(&client).await;
    let volume = allocate(&client).await;
    let leader = group.wait_for_leader().await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    group.stop(lagging).await;
    for batch in 0..60u64 {
        let entries: Vec<_> = (batch * 5..batch * 5 + 5).map(|k| commit(&volume, k, k * 100)).collect();
        let req = pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() };
        client
            .call(|mut c| {
                let req = req.clone();
                async move { c.commit_index(req).await }
            })
            .await
            .expect("commit");
    }
    // The leader snapshots and purges the entries the lagging member lacks (in the
    // background, after the commits: wait for it with a deadline).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let leader_metrics = {
            use openraft::async_runtime::WatchReceiver;
            group.handles[&leader].raft.metrics().borrow_watched().clone()
        };
        if leader_metrics.snapshot.is_some() && leader_metrics.purged.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "leader took no snapshot or purged no log: {leader_metrics:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    group.restart(lagging).await;
    group.wait_applied(lagging, group.applied(leader)).await;
    let snapshot_files = std::fs::read_dir(group.dirs[(lagging - 1) as usize].path().join("snapshots"))
        .expect("snapshot dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap")))
        .count();
    assert_eq!(snapshot_files, 1, "the lagging member installed a snapshot");
    let reader = &group.handles[&lagging].reader;
    for k in 0..300u64 {
        let h = Hash32::from_slice(&hash(k)).expect("hash");
        assert!(apply::index_entry(reader, &h).expect("read").is_some(), "entry {k} missing after catch-up");
    }
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_lease_and_unknown_volume_are_refused_and_change_nothing() {
    let group = Group::start(3).await;
    let client = group.client();
    register_nodes(&client).await;
    let volume = allocate(&client).await;
    assert_eq!(volume.lease_epoch, 1);
    assert_eq!(volume.replicas.len(), 3);
    let status_before =
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await.expect("status");

    let mut stale = commit(&volume, 1, 0);
    stale.lease_epoch = 0;
    let mut unknown = commit(&volume, 2, 0);
    unknown.volume_id = 999;
    let req =
        pb::CommitIndexRequest { entries: vec![stale, unknown], request_id: None, versions: Vec::new() };
    let resp = client
        .call(|mut c| {
            let req = req.clone();
            async move { c.commit_index(req).await }
        })
        .await
        .expect("call");
    assert_eq!(resp.results[0].error_code, cellar_proto::error_code::STALE_LEASE, "{:?}", resp.results[0]);
    assert!(resp.results[0].detail.contains("stale lease"), "{}", resp.results[0].detail);
    assert_eq!(resp.results[1].error_code, cellar_proto::error_code::UNKNOWN_VOLUME);

    // A digest of the wrong length refuses the whole call.
    let mut odd = commit(&volume, 3, 0);
    odd.digest = vec![1; 5];
    let err = client
        .call(|mut c| {
            let entries = vec![odd.clone()];
            async move {
                c.commit_index(pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() })
                    .await
            }
        })
        .await
        .expect_err("a 5-byte digest");
    assert!(format!("{err}").contains("digest is 16 bytes"), "{err}");

    let lookup = pb::LookupRequest { hashes: vec![hash(1), hash(2), hash(3)], request_id: None };
    let found = client
        .call(|mut c| {
            let req = lookup.clone();
            async move { c.lookup(req).await }
        })
        .await
        .expect("lookup");
    assert!(found.entries.is_empty(), "refused commits indexed nothing");
    let renew = pb::RenewLeaseRequest {
        volume_id: volume.volume_id,
        lease_epoch: 7,
        holder: "test".into(),
        request_id: None,
    };
    let err = client
        .call(|mut c| {
            let req = renew.clone();
            async move { c.renew_lease(req).await }
        })
        .await
        .expect_err("stale renew");
    assert_eq!(err.code(), Some(cellar_proto::error_code::STALE_LEASE));
    let seal = pb::SealVolumeRequest { volume_id: 12345, length_bytes: None, request_id: None };
    let err = client
        .call(|mut c| {
            let req = seal;
            async move { c.seal_volume(req).await }
        })
        .await
        .expect_err("unknown volume");
    assert_eq!(err.code(), Some(cellar_proto::error_code::UNKNOWN_VOLUME));

    let status_after =
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await.expect("status");
    assert_eq!(status_after.index_entries, status_before.index_entries);
    assert_eq!(status_after.volumes, status_before.volumes);
    let vols = client
        .call(|mut c| async move { c.get_volumes(pb::GetVolumesRequest { volume_ids: vec![1] }).await })
        .await
        .expect("volumes");
    assert_eq!(vols.volumes[0].size_bytes, 0, "the volume did not move");

    // The current epoch works, and sealing then fences further commits.
    let req = pb::CommitIndexRequest {
        entries: vec![commit(&volume, 3, 0)],
        request_id: None,
        versions: Vec::new(),
    };
    let ok = client
        .call(|mut c| {
            let req = req.clone();
            async move { c.commit_index(req).await }
        })
        .await
        .expect("commit");
    assert_eq!(ok.results[0].outcome(), pb::CommitOutcome::Committed);
    let seal = pb::SealVolumeRequest { volume_id: volume.volume_id, length_bytes: None, request_id: None };
    let sealed = client
        .call(|mut c| {
            let req = seal;
            async move { c.seal_volume(req).await }
        })
        .await
        .expect("seal");
    assert_eq!((sealed.state().name(), sealed.size_bytes), ("sealed", 100));
    let req = pb::CommitIndexRequest {
        entries: vec![commit(&volume, 4, 100)],
        request_id: None,
        versions: Vec::new(),
    };
    let after = client
        .call(|mut c| {
            let req = req.clone();
            async move { c.commit_index(req).await }
        })
        .await
        .expect("commit");
    assert_eq!(after.results[0].error_code, cellar_proto::error_code::VOLUME_NOT_OPEN);
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_refuses_more_replicas_than_zones() {
    let group = Group::start(3).await;
    let client = group.client();
    register_nodes(&client).await;
    let err = client
        .call(|mut c| async move {
            c.allocate_volume(pb::AllocateVolumeRequest {
                holder: "t".into(),
                copies: 4,
                avoid_nodes: Vec::new(),
                request_id: None,
            })
            .await
        })
        .await
        .expect_err("4 replicas over 3 zones");
    assert_eq!(err.code(), Some(cellar_proto::error_code::NOT_ENOUGH_FAILURE_DOMAINS), "{err}");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealing_queues_an_encode_task_that_is_claimed_retried_and_completed() {
    let group = Group::start(3).await;
    let client = group.client();
    register_nodes(&client).await;
    let volume = allocate(&client).await;
    seal_with_one_entry(&client, &volume).await;
    let encoder = volume.replicas[0].node_id;
    let other = volume.replicas[1].node_id;
    let pull = |node_id| pb::PullTasksRequest {
        node_id,
        max: 10,
        deferred_kinds: Vec::new(),
        request_id: None,
        first_since_start: false,
    };

    let none = client.call(|mut c| async move { c.pull_tasks(pull(other)).await }).await.expect("pull");
    assert!(none.tasks.is_empty(), "the task is for the first replica's node only");
    let got = client.call(|mut c| async move { c.pull_tasks(pull(encoder)).await }).await.expect("pull");
    assert_eq!(got.tasks.len(), 1);
    let task = got.tasks[0].clone();
    assert_eq!(
        (task.kind().name(), task.volume_id, task.state().name()),
        ("encode", volume.volume_id, "claimed")
    );
    let again = client.call(|mut c| async move { c.pull_tasks(pull(encoder)).await }).await.expect("pull");
    assert!(again.tasks.is_empty(), "a claimed task is not handed out twice");

    let wrong_node = pb::ReportTaskRequest {
        task_id: task.task_id,
        node_id: other,
        success: true,
        detail: String::new(),
        request_id: None,
    };
    let err = client
        .call(|mut c| {
            let r = wrong_node.clone();
            async move { c.report_task(r).await }
        })
        .await
        .expect_err("not the assignee");
    assert_eq!(err.code(), Some(cellar_proto::error_code::BAD_REQUEST));
    let failed = pb::ReportTaskRequest {
        task_id: task.task_id,
        node_id: encoder,
        success: false,
        detail: "disk busy".into(),
        request_id: None,
    };
    let after = client
        .call(|mut c| {
            let r = failed.clone();
            async move { c.report_task(r).await }
        })
        .await
        .expect("report");
    let after = after.task.expect("still queued");
    assert_eq!((after.attempts, after.state().name(), after.detail.as_str()), (1, "pending", "disk busy"));
    // The executor tried every replica it could read; the next attempt runs on the next
    // replica holder.
    assert_eq!(after.node_id, other, "a failed encode moves to the next replica holder");
    let stale = client.call(|mut c| async move { c.pull_tasks(pull(encoder)).await }).await.expect("pull");
    assert!(stale.tasks.is_empty(), "the failed node does not get the encode again at once");
    // Not at once on the next holder either: after the retry pause (2 s from the failed
    // attempt's start), waited for with a deadline.
    let first = client.call(|mut c| async move { c.pull_tasks(pull(other)).await }).await.expect("pull");
    assert!(first.tasks.is_empty(), "the next holder waits for the retry pause");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let retry = loop {
        let r = client.call(|mut c| async move { c.pull_tasks(pull(other)).await }).await.expect("pull");
        if !r.tasks.is_empty() || tokio::time::Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(retry.tasks.len(), 1, "a failed attempt is retried");
    let done = pb::ReportTaskRequest {
        task_id: task.task_id,
        node_id: other,
        success: true,
        detail: String::new(),
        request_id: None,
    };
    let done = client
        .call(|mut c| {
            let r = done.clone();
            async move { c.report_task(r).await }
        })
        .await
        .expect("report");
    assert!(done.task.is_none());
    let status =
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await.expect("status");
    // The encode is done; the volume is coded and its three replicas are queued for deletion.
    assert_eq!((status.tasks_open, status.tasks_done, status.tasks_failed), (3, 1, 0));
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_planner_seals_a_volume_whose_writer_went_away() {
    let group = Group::start_with(3, |c| {
        c.lease_ms = 1_000;
        c.abandoned_after_ms = 200;
        c.planner_interval_ms = 100;
    })
    .await;
    let client = group.client();
    register_nodes(&client).await;
    let volume = allocate(&client).await;
    let entry = pb::IndexCommit {
        hash: hash(1),
        volume_id: volume.volume_id,
        lease_epoch: volume.lease_epoch,
        offset_bytes: 0,
        // A record of 1000 bytes: the 64-byte record header and 936 bytes of payload.
        payload_bytes: 936,
        crc32: 1,
        digest: vec![],
        unreferenced: false,
        relocate_from_volume: 0,
    };
    client
        .call(|mut c| {
            let entries = vec![entry.clone()];
            async move {
                c.commit_index(pb::CommitIndexRequest { entries, request_id: None, versions: Vec::new() })
                    .await
            }
        })
        .await
        .expect("commit");
    // No renewal: the lease expires, and the leader's planner seals the volume at its
    // acknowledged end and queues its encode.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let id = volume.volume_id;
    loop {
        let vs = client
            .call(|mut c| async move { c.get_volumes(pb::GetVolumesRequest { volume_ids: vec![id] }).await })
            .await
            .expect("volumes");
        if vs.volumes[0].state() == cellar_proto::common::VolumeState::Sealed {
            assert_eq!(vs.volumes[0].size_bytes, 1000);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not sealed: {:?}", vs.volumes[0]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status =
        client.call(|mut c| async move { c.status(pb::StatusRequest {}).await }).await.expect("status");
    assert_eq!(status.tasks_open, 1, "the encode is queued");

    // Dropping references: the entry goes away with its last one.
    let h = hash(1);
    let dropped = client
        .call(|mut c| {
            let hashes = vec![h.clone()];
            async move { c.drop_references(pb::LookupRequest { hashes, request_id: None }).await }
        })
        .await
        .expect("drop");
    assert_eq!(dropped.entries.len(), 1);
    assert_eq!(dropped.entries[0].references, 0);
    let found = client
        .call(|mut c| {
            let hashes = vec![h.clone()];
            async move { c.lookup(pb::LookupRequest { hashes, request_id: None }).await }
        })
        .await
        .expect("lookup");
    assert!(found.entries.is_empty());
    group.shutdown().await;
}

async fn allocate_avoiding(client: &MasterClient, avoid_nodes: Vec<u64>) -> Result<pb::Volume, ClientError> {
    client
        .call(|mut c| {
            let avoid_nodes = avoid_nodes.clone();
            async move {
                c.allocate_volume(pb::AllocateVolumeRequest {
                    holder: "t".into(),
                    copies: 0,
                    avoid_nodes,
                    request_id: None,
                })
                .await
            }
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allocation_passes_over_nodes_the_writer_avoids_unless_the_cell_needs_them() {
    let group = Group::start(3).await;
    let client = group.client();
    let nodes = register_nodes(&client).await; // z1: nodes[0..2], z2: [2..4], z3: [4..6]
    for _ in 0..10 {
        let v = allocate_avoiding(&client, vec![nodes[0]]).await.expect("allocate");
        assert_eq!(v.replicas.len(), 3);
        assert!(v.replicas.iter().all(|r| r.node_id != nodes[0]), "placed on an avoided node: {v:?}");
    }
    // Avoiding all of z1 leaves two zones for three replicas: the list is ignored.
    let v = allocate_avoiding(&client, vec![nodes[0], nodes[1]]).await.expect("allocate");
    assert!(v.replicas.iter().any(|r| r.node_id == nodes[0] || r.node_id == nodes[1]), "{v:?}");
    let err = allocate_avoiding(&client, (0..65).collect()).await.expect_err("too many to avoid");
    assert_eq!(err.code(), Some(cellar_proto::error_code::BAD_REQUEST), "{err}");
    group.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_volume_servers_get_no_new_volumes() {
    let group = Group::start_with(3, |c| c.node_silent_after_ms = 1000).await;
    let client = group.client();
    let nodes = register_nodes(&client).await;
    allocate(&client).await;
    // Nobody heartbeats: once every node has been silent for a second, nothing is placed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match allocate_avoiding(&client, Vec::new()).await {
            Err(e) => {
                assert_eq!(e.code(), Some(cellar_proto::error_code::NOT_ENOUGH_FAILURE_DOMAINS), "{e}");
                break;
            }
            Ok(_) => assert!(std::time::Instant::now() < deadline, "silent nodes still get volumes"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Heartbeats from all but one node of z1 bring the cell back.
    for node_id in nodes.iter().copied().filter(|n| *n != nodes[0]) {
        client
            .call(|mut c| async move {
                c.heartbeat(pb::HeartbeatRequest {
                    node_id,
                    disks: Vec::new(),
                    request_id: None,
                    scrub: None,
                })
                .await
            })
            .await
            .expect("heartbeat");
    }
    let v = allocate_avoiding(&client, Vec::new()).await.expect("allocate after heartbeats");
    assert!(v.replicas.iter().all(|r| r.node_id != nodes[0]), "placed on a silent node: {v:?}");
    group.shutdown().await;
}

/// A rolling upgrade's last step: the leader raises the cell's apply version only to one
/// every member offers. A member offering less (a master of an older build, or one an
/// operator set to hold the cell) keeps the cell where it is, and the leader's status says
/// what each offers; restarted offering more, it lets the leader raise the cell, on every
/// member.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_apply_version_rises_only_once_every_member_offers_it() {
    use cellar_master::apply_version::{APPLY_VERSION_FIRST, APPLY_VERSION_MAX, current, record};
    use cellar_master::upgrade::MemberBuild;
    use cellar_proto::master::master_server::Master;
    fn three_holds(c: &mut cellar_master::config::MasterConfig) {
        if c.id == 3 {
            c.apply_version_max = APPLY_VERSION_FIRST;
        }
    }
    fn none(_: &mut cellar_master::config::MasterConfig) {}
    let mut group = Group::start_with(3, three_holds).await;
    let expected: Vec<(u64, Option<u32>)> =
        vec![(1, Some(APPLY_VERSION_MAX)), (2, Some(APPLY_VERSION_MAX)), (3, Some(APPLY_VERSION_FIRST))];
    // Wait until the leader has asked the members three times and heard each (a call that
    // timed out on a busy machine is asked again at the next pass); its status says so.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let (leader, status) = loop {
        let leader = group.wait_for_leader().await;
        let h = &group.handles[&leader];
        let heard: Vec<(u64, Option<u32>)> = h
            .observed
            .builds()
            .into_iter()
            .map(|(m, b)| match b {
                MemberBuild::Offers { apply_version_max, .. } => (m, Some(apply_version_max)),
                MemberBuild::NoAnswer(_) => (m, None),
            })
            .collect();
        if h.observed.build_passes() >= 3 && heard == expected {
            let status =
                h.local_api().status(tonic::Request::new(pb::StatusRequest {})).await.expect("status");
            let status = status.into_inner();
            let offered: Vec<(u64, Option<u32>)> =
                status.members.iter().map(|m| (m.id, m.apply_version_max)).collect();
            if offered == expected {
                break (leader, status);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the leader did not hear every member: {heard:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for (id, h) in &group.handles {
        assert_eq!(current(&h.reader).expect("read"), APPLY_VERSION_FIRST, "member {id}: held by member 3");
    }
    assert_eq!((status.apply_version, status.node_id), (APPLY_VERSION_FIRST, leader));
    assert!(status.members.iter().all(|m| m.build_version == env!("CARGO_PKG_VERSION")), "{status:?}");
    // A command of version 2 is refused before it reaches the log (masters offering 1
    // could be of a build that cannot read it): nothing is appended.
    let api = group.handles[&leader].local_api();
    use openraft::async_runtime::WatchReceiver;
    let last = |g: &Group| g.handles[&leader].raft.metrics().borrow_watched().last_log_index;
    let before = last(&group);
    let retry = pb::RetryTaskRequest { task_id: 1, request_id: None };
    let err = api.retry_task(tonic::Request::new(retry)).await.expect_err("below version 2");
    assert!(err.message().contains("apply version 2"), "{err:?}");
    assert_eq!(last(&group), before, "no entry proposed");

    // Member 3 restarted offering its build's version: the cell is raised on every member.
    group.tweak = none;
    group.stop(3).await;
    group.restart(3).await;
    group.wait_apply_version(APPLY_VERSION_MAX).await;
    let raised = record(&group.handles[&1].reader).expect("read").expect("a record");
    assert!(raised.since_unix_ms > 0, "{raised:?}");
    group.shutdown().await;
}

/// A master asked to apply a version its build does not know stops (its Raft reports the
/// error, on which `cellar master` exits) rather than applying the log its own way: the
/// leader, which applies the entry first, stops with the reason, and no member applies
/// past it (a follower that learns the entry is committed stops as well; one that does
/// not never applies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_asked_to_apply_a_version_above_its_build_stops_with_the_reason() {
    use cellar_master::apply_version::{APPLY_VERSION_MAX, current};
    use cellar_master::command::Command;
    let group = Group::start(3).await;
    group.wait_apply_version(APPLY_VERSION_MAX).await;
    let leader = group.wait_for_leader().await;
    let raft = group.handles[&leader].raft.clone();
    let too_new = Command::RaiseApplyVersion { version: APPLY_VERSION_MAX + 1, now_unix_ms: 1 };
    let write = tokio::spawn(async move { raft.client_write(too_new).await });
    let reason = tokio::time::timeout(common::WAIT, group.handles[&leader].stopped())
        .await
        .expect("the leader still runs after an entry it cannot apply");
    assert!(reason.contains(&format!("apply version {}", APPLY_VERSION_MAX + 1)), "{reason}");
    let written = tokio::time::timeout(common::WAIT, write).await.expect("the write ends").expect("join");
    assert!(written.is_err(), "the write was not applied: {written:?}");
    for (id, h) in &group.handles {
        assert_eq!(current(&h.reader).expect("read"), APPLY_VERSION_MAX, "member {id}");
    }
    group.shutdown().await;
}

/// A sealed volume's encode claimed by its first replica's node through `client`: the
/// volume, that node and the task.
async fn an_encode_claimed(client: &MasterClient) -> (pb::Volume, u64, pb::Task) {
    register_nodes(client).await;
    let volume = allocate(client).await;
    seal_with_one_entry(client, &volume).await;
    let encoder = volume.replicas[0].node_id;
    let got = pull_tasks(client, encoder, false).await;
    assert_eq!(got.len(), 1, "{got:?}");
    (volume, encoder, got[0].clone())
}

async fn pull_tasks(client: &MasterClient, node_id: u64, first_since_start: bool) -> Vec<pb::Task> {
    let pull = pb::PullTasksRequest {
        node_id,
        max: 10,
        deferred_kinds: Vec::new(),
        request_id: None,
        first_since_start,
    };
    client.call_once(pull, |mut c, r| async move { c.pull_tasks(r).await }).await.expect("pull").tasks
}

/// A volume server's first poll after a restart (`first_since_start`) hands back what its
/// node had claimed: the claimed encode counts a failed attempt and goes to the next
/// replica holder, instead of waiting for its claim (10 minutes) to run out. In a cell
/// below apply version 3 (a master of an older build offers less) the same poll only
/// claims: it is not refused, and the claim stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_volume_servers_first_poll_hands_its_claims_back() {
    use cellar_master::apply_version::{APPLY_VERSION_MAX, CLAIMS_RELEASED_AT_START};
    use cellar_master::tasks::RELEASED_AT_START_DETAIL;
    use cellar_proto::master::master_server::Master;
    // The test's nodes never heartbeat: silent and down only long after the test, so
    // that no planner replaces the encode meanwhile.
    fn quiet_nodes(c: &mut cellar_master::config::MasterConfig) {
        c.node_silent_after_ms = 600_000;
        c.down_after_ms = 900_000;
    }
    fn quiet_at_2(c: &mut cellar_master::config::MasterConfig) {
        quiet_nodes(c);
        c.apply_version_max = CLAIMS_RELEASED_AT_START - 1;
    }
    let group = Group::start_with(3, quiet_nodes).await;
    group.wait_apply_version(APPLY_VERSION_MAX).await;
    let client = group.client();
    let (volume, encoder, task) = an_encode_claimed(&client).await;
    assert!(pull_tasks(&client, encoder, false).await.is_empty(), "claimed: not handed out twice");
    assert!(pull_tasks(&client, encoder, true).await.is_empty(), "the encode moved on");
    let leader = group.wait_for_leader().await;
    let status = group.handles[&leader]
        .local_api()
        .status(tonic::Request::new(pb::StatusRequest {}))
        .await
        .expect("status")
        .into_inner();
    let now = status.open_tasks.iter().find(|t| t.task_id == task.task_id).expect("still open");
    assert_eq!(
        (now.state().name(), now.attempts, now.node_id, now.detail.as_str()),
        ("pending", 1, volume.replicas[1].node_id, RELEASED_AT_START_DETAIL),
        "{now:?}"
    );
    group.shutdown().await;

    let group = Group::start_with(3, quiet_at_2).await;
    group.wait_apply_version(CLAIMS_RELEASED_AT_START - 1).await;
    let client = group.client();
    let (_volume, encoder, task) = an_encode_claimed(&client).await;
    assert!(pull_tasks(&client, encoder, true).await.is_empty(), "claimed: not handed out twice");
    let leader = group.wait_for_leader().await;
    let status = group.handles[&leader]
        .local_api()
        .status(tonic::Request::new(pb::StatusRequest {}))
        .await
        .expect("status")
        .into_inner();
    let now = status.open_tasks.iter().find(|t| t.task_id == task.task_id).expect("still open");
    assert_eq!((now.state().name(), now.attempts, now.node_id), ("claimed", 0, encoder), "{now:?}");
    group.shutdown().await;
}
