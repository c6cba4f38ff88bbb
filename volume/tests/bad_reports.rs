//! A flood of bad-extent reports against one extent: one report in flight from the
//! volume server's side, one Raft write at the master; reports of an extent the master
//! already has as bad are answered without a write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cellar_master::command::{Command, Response};
use cellar_master::config::MasterConfig;
use cellar_master::node as master_node;
use cellar_master_api::client::{CustomTransport, MasterClient, Transport};
use cellar_proto::master as mpb;
use cellar_proto::master::master_server::MasterServer;
use cellar_volume::cluster::Cluster;
use tonic::codegen::Service;

const WAIT: Duration = Duration::from_secs(30);
const FLOOD: usize = 1_000;

/// The log position (term, index) of a Raft write that changes nothing (a report about a
/// volume that does not exist, refused): when it returns, every entry before it has been
/// applied. Counting entries between two of these is exact, where the applied index in
/// the master's status (openraft's metrics) can lag the answers already sent: a count
/// taken just after the volume's allocation missed it, so one report counted as two
/// writes.
async fn barrier(raft: &cellar_master::MasterRaft) -> (u64, u64) {
    let command = Command::ReportBadExtent { volume_id: u64::MAX, disk_id: 0, reason: "test barrier".into() };
    let written = raft.client_write(command).await.expect("the barrier write");
    assert!(
        matches!(written.data, Response::Refused { .. }),
        "the barrier changed something: {:?}",
        written.data
    );
    (written.log_id.leader_id.term, written.log_id.index)
}

/// Raft entries applied between two barriers that commands wrote: a new term (the single
/// member elected again, e.g. when starved of CPU past its election timeout) appends one
/// blank entry of its own, which no report wrote. Both numbers are in the message.
fn writes(before: (u64, u64), after: (u64, u64)) -> (u64, String) {
    let terms = after.0 - before.0;
    let entries = after.1 - before.1 - 1;
    (entries.saturating_sub(terms), format!("{entries} entries between the barriers over {terms} new terms"))
}

/// Counts the master calls in flight through it, and the most at once.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_reports_against_one_extent_is_one_rpc_in_flight_and_one_raft_write() {
    // One master, three registered nodes that never heartbeat, no planner pass: nothing else
    // writes.
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = master_node::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut config =
        MasterConfig::new(1, addr.clone(), dir.path().to_path_buf(), BTreeMap::from([(1, addr.clone())]));
    config.init = true;
    config.heartbeat_ms = 50;
    config.election_timeout_ms = 300;
    config.lease_ms = 600_000;
    // The planner (its repair pass seals an open volume with a bad replica) would write
    // too: one Raft write more whenever its pass fell between the report and the count.
    config.planner_interval_ms = 3_600_000;
    let master = master_node::start(config, listener).await.expect("start master");
    master_node::wait_for_leader(&master.raft, WAIT).await.expect("leader");
    let plain = MasterClient::new(std::slice::from_ref(&addr), None).expect("client");
    for zone in ["a", "b", "c"] {
        let req = mpb::RegisterNodeRequest {
            node_id: None,
            address: format!("{zone}.invalid:1"),
            zone: zone.into(),
            disks: vec![mpb::DiskRegistration {
                uuid: format!("{zone}-0"),
                path: "/d".into(),
                capacity_bytes: 1 << 40,
                used_bytes: 0,
                free_bytes: 1 << 40,
            }],
            request_id: None,
        };
        plain.call_once(req, |mut c, r| async move { c.register_node(r).await }).await.expect("register");
    }
    let req =
        mpb::AllocateVolumeRequest { holder: "t".into(), copies: 0, avoid_nodes: vec![], request_id: None };
    let volume =
        plain.call_once(req, |mut c, r| async move { c.allocate_volume(r).await }).await.expect("allocate");
    let disk_id = volume.replicas[0].disk_id;

    // The volume server's master client, counting its calls in flight.
    let counter = InFlight::default();
    let server = MasterServer::from_arc(master.local_api());
    let transport = {
        let counter = counter.clone();
        Transport::Custom(CustomTransport::new(move |req| {
            let mut server = server.clone();
            let counter = counter.clone();
            Box::pin(async move {
                counter.calls.fetch_add(1, Ordering::SeqCst);
                let now = counter.now.fetch_add(1, Ordering::SeqCst) + 1;
                counter.most.fetch_max(now, Ordering::SeqCst);
                let resp = server.call(req).await.unwrap_or_else(|never| match never {});
                counter.now.fetch_sub(1, Ordering::SeqCst);
                Ok(resp)
            })
        }))
    };
    let client = MasterClient::builder(std::slice::from_ref(&addr))
        .transports(vec![transport])
        .build()
        .expect("client");
    let cluster = Cluster::new(client, None);

    let before = barrier(&master.raft).await;
    let wait_quiet = |cluster: Arc<Cluster>, counter: InFlight, sent: usize| async move {
        // Quiet: every report not dropped has been answered.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let done =
                counter.calls.load(Ordering::SeqCst) >= sent && counter.now.load(Ordering::SeqCst) == 0;
            if done {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "reports still in flight after {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = &cluster;
        }
    };
    for _ in 0..FLOOD {
        cluster.report_bad_extent(volume.volume_id, disk_id, "flood".into());
    }
    let sent = FLOOD - cluster.bad_extent_reports_dropped() as usize;
    assert!(sent >= 1);
    wait_quiet(cluster.clone(), counter.clone(), sent).await;
    assert_eq!(counter.most.load(Ordering::SeqCst), 1, "one report in flight at most");
    assert_eq!(counter.calls.load(Ordering::SeqCst), sent);
    let mid = barrier(&master.raft).await;
    let (written, how) = writes(before, mid);
    assert_eq!(written, 1, "{sent} reports sent, one Raft write ({how})");
    let got = plain
        .call(|mut c| async move {
            c.get_volumes(mpb::GetVolumesRequest { volume_ids: vec![volume.volume_id] }).await
        })
        .await
        .expect("volumes");
    assert_eq!(got.volumes[0].bad_disks, vec![disk_id]);

    // Another flood once the extent is known bad: no write at all.
    let dropped = cluster.bad_extent_reports_dropped() as usize;
    for _ in 0..FLOOD {
        cluster.report_bad_extent(volume.volume_id, disk_id, "flood again".into());
    }
    let sent_again = FLOOD - (cluster.bad_extent_reports_dropped() as usize - dropped);
    wait_quiet(cluster.clone(), counter.clone(), sent + sent_again).await;
    assert_eq!(counter.most.load(Ordering::SeqCst), 1);
    let (written, how) = writes(mid, barrier(&master.raft).await);
    assert_eq!(written, 0, "an extent known bad is answered without a Raft write ({how})");
    assert_eq!(cluster.bad_extent_reports() as usize, 2 * FLOOD);
    master.shutdown().await;
}
