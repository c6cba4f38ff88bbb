//! A master's metrics in the Prometheus text format, read at scrape time: its Raft state,
//! the cluster counters of its applied state (which lag the leader's on a follower), and
//! redundancy and repair as `cellar admin status` shows them (a scan of the volume and
//! task records at each scrape).

use std::fmt::Write as _;

use openraft::async_runtime::WatchReceiver;

use crate::MasterRaft;
use crate::store::sm::StateReader;

/// Renders the metrics of the master member `id`; `replicas` is the configured replica
/// count (a volume's full redundancy while replicated).
pub fn render(
    id: u64,
    raft: &MasterRaft,
    reader: &StateReader,
    replicas: usize,
    observed: &crate::observed::Observed,
) -> String {
    let m = raft.metrics().borrow_watched().clone();
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    };
    gauge(&mut out, "cellar_master_raft_term", "The current Raft term.", m.current_term);
    gauge(
        &mut out,
        "cellar_master_raft_is_leader",
        "1 on the leader.",
        u64::from(m.current_leader == Some(id)),
    );
    gauge(
        &mut out,
        "cellar_master_raft_leader_id",
        "The known leader's id (0: none).",
        m.current_leader.unwrap_or(0),
    );
    gauge(
        &mut out,
        "cellar_master_raft_last_log_index",
        "Index of the last log entry.",
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        &mut out,
        "cellar_master_raft_applied_index",
        "Index of the last applied entry.",
        m.last_applied.as_ref().map_or(0, |l| l.index()),
    );
    gauge(
        &mut out,
        "cellar_master_raft_snapshot_index",
        "Index the last snapshot covers.",
        m.snapshot.as_ref().map_or(0, |l| l.index()),
    );
    // The counters and the redundancy scan both come from the applied state: one gauge
    // says whether it could be read.
    let read = crate::state::counters(reader)
        .and_then(|c| crate::repair::read_status(reader, replicas).map(|r| (c, r)));
    match &read {
        Ok((c, r)) => {
            gauge(&mut out, "cellar_master_index_entries", "Entries in the block index.", c.index_entries);
            gauge(
                &mut out,
                "cellar_master_cluster_map_version",
                "Version of the node, disk and placement map.",
                c.cluster_map_version,
            );
            let _ = writeln!(out, "# HELP cellar_master_volumes Volumes by state.");
            let _ = writeln!(out, "# TYPE cellar_master_volumes gauge");
            for (state, n) in ["open", "sealed", "coded"].iter().zip(c.volumes_by_state) {
                let _ = writeln!(out, "cellar_master_volumes{{state=\"{state}\"}} {n}");
            }
            gauge(
                &mut out,
                "cellar_master_volumes_below_full",
                "Volumes with fewer healthy extents than their scheme calls for.",
                r.below_full,
            );
            let _ = writeln!(
                out,
                "# HELP cellar_master_volumes_by_redundancy Volumes by how many more extents each can lose."
            );
            let _ = writeln!(out, "# TYPE cellar_master_volumes_by_redundancy gauge");
            for (can_lose, n) in &r.by_can_lose {
                let _ = writeln!(out, "cellar_master_volumes_by_redundancy{{can_lose=\"{can_lose}\"}} {n}");
            }
            let rate = observed.repair_rate(crate::now_unix_ms(), r.bytes_pending);
            for (name, help, value) in [
                ("cellar_master_repair_tasks_open", "Repair tasks queued or running.", r.tasks_open),
                ("cellar_master_repair_tasks_failed", "Repair tasks given up.", r.tasks_failed),
                (
                    "cellar_master_repair_bytes_pending",
                    "Bytes of extents the open repair tasks rebuild.",
                    r.bytes_pending,
                ),
                ("cellar_master_nodes_down", "Volume servers marked down.", r.nodes_down),
                ("cellar_master_disks_failed", "Disks failed.", r.disks_failed),
                (
                    "cellar_master_extents_draining",
                    "Extents still placed on drained nodes or disks.",
                    r.extents_draining,
                ),
                (
                    "cellar_master_extents_sharing_a_disk",
                    "Fragments on a disk that holds another fragment of their volume (being moved off).",
                    r.extents_sharing_a_disk,
                ),
                (
                    "cellar_master_repair_extents_without_a_disk",
                    "Extents the last repair pass found no disk for (waiting for one; leader only).",
                    observed.repairs_without_a_disk(),
                ),
                (
                    "cellar_master_volumes_unreadable",
                    "Volumes with fewer healthy extents than they need to be read.",
                    r.unreadable.len() as u64,
                ),
                (
                    "cellar_master_repair_rate_bytes_per_sec",
                    "Repair throughput measured while leader (the episode under way, or the last).",
                    rate.bytes_per_sec,
                ),
                (
                    "cellar_master_repair_bytes_done",
                    "Bytes of extents rebuilt in that repair episode.",
                    rate.bytes_done,
                ),
                (
                    "cellar_master_repair_eta_secs",
                    "Seconds until the pending repairs are done at the measured rate (0: none pending or no rate yet).",
                    rate.eta_secs.unwrap_or(0),
                ),
                (
                    "cellar_master_scrub_findings",
                    "Corrupt extents the volume servers' scrubbers found (sum of their heartbeats).",
                    observed.scrub().iter().map(|p| p.findings).sum(),
                ),
            ] {
                gauge(&mut out, name, help, value);
            }
            let comp = observed.compaction();
            for (name, help, value) in [
                (
                    "cellar_master_garbage_bytes",
                    "Volume bytes holding no referenced block (at the last compaction pass).",
                    comp.garbage_bytes,
                ),
                (
                    "cellar_master_live_bytes",
                    "Record bytes of referenced blocks (at the last compaction pass).",
                    comp.live_bytes,
                ),
                (
                    "cellar_master_volumes_dead",
                    "Volumes holding no referenced block, waiting to be reclaimed.",
                    comp.volumes_dead,
                ),
                (
                    "cellar_master_compaction_rewrite_candidates",
                    "Sealed or coded volumes whose live fraction is under the threshold.",
                    comp.rewrite_candidates,
                ),
                (
                    "cellar_master_volumes_reclaimed",
                    "Volumes reclaimed by compaction since this master became leader.",
                    comp.volumes_reclaimed,
                ),
                (
                    "cellar_master_bytes_reclaimed",
                    "Volume bytes reclaimed by compaction since this master became leader.",
                    comp.bytes_reclaimed,
                ),
            ] {
                gauge(&mut out, name, help, value);
            }
            let scan = observed.scan();
            let _ = writeln!(
                out,
                "# HELP cellar_master_metadata_scan_total What the leader's metadata scanner checked and found."
            );
            let _ = writeln!(out, "# TYPE cellar_master_metadata_scan_total counter");
            for (what, n) in [
                ("passes", scan.passes),
                ("index_entries", scan.index_entries_checked),
                ("extents", scan.extents_checked),
                ("findings", scan.findings),
                ("errors", scan.errors),
            ] {
                let _ = writeln!(out, "cellar_master_metadata_scan_total{{what=\"{what}\"}} {n}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics cannot read the applied state"),
    }
    gauge(
        &mut out,
        "cellar_master_state_readable",
        "1 when the applied state could be read.",
        u64::from(read.is_ok()),
    );
    out
}
