//! A volume server's metrics in the Prometheus text format: request counters kept by the
//! service and the task executor, and gauges read at scrape time (disks, request budget).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::counters::OpCounters;
use crate::disks::DiskHealth;
use crate::shared::Shared;

fn op(out: &mut String, name: &str, op: &str, c: &OpCounters) {
    let ok = c.ok.load(Ordering::Relaxed);
    let failed = c.failed.load(Ordering::Relaxed);
    let bytes = c.bytes.load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_total{{op=\"{op}\",outcome=\"ok\"}} {ok}");
    let _ = writeln!(out, "{name}_total{{op=\"{op}\",outcome=\"error\"}} {failed}");
    let _ = writeln!(out, "cellar_volume_bytes_total{{op=\"{op}\"}} {bytes}");
}

/// Renders every metric of the server `shared` (reads each disk's usage, off the async
/// workers).
pub async fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut out = String::new();
    let _ =
        writeln!(out, "# HELP cellar_volume_requests_total Extent API requests, by operation and outcome.");
    let _ = writeln!(out, "# TYPE cellar_volume_requests_total counter");
    let _ = writeln!(out, "# HELP cellar_volume_bytes_total Bytes moved by successful requests.");
    let _ = writeln!(out, "# TYPE cellar_volume_bytes_total counter");
    op(&mut out, "cellar_volume_requests", "append", &m.appends);
    op(&mut out, "cellar_volume_requests", "read_record", &m.record_reads);
    op(&mut out, "cellar_volume_requests", "read_fragment", &m.fragment_reads);
    op(&mut out, "cellar_volume_requests", "write_fragment", &m.fragment_writes);
    let (hits, misses) = shared.recent.hits_and_misses();
    let _ = writeln!(
        out,
        "# HELP cellar_volume_recent_reads_total Reads of large records, answered from the records kept in memory (hit) or not (miss)."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_recent_reads_total counter");
    let _ = writeln!(out, "cellar_volume_recent_reads_total{{outcome=\"hit\"}} {hits}");
    let _ = writeln!(out, "cellar_volume_recent_reads_total{{outcome=\"miss\"}} {misses}");
    let _ = writeln!(
        out,
        "# HELP cellar_volume_recent_bytes Payload bytes of recent large records kept in memory, and the bound."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_recent_bytes gauge");
    let _ = writeln!(out, "cellar_volume_recent_bytes{{what=\"kept\"}} {}", shared.recent.payload_bytes());
    let _ = writeln!(out, "cellar_volume_recent_bytes{{what=\"bound\"}} {}", shared.recent.capacity_bytes());
    let _ = writeln!(out, "# HELP cellar_volume_tasks_total Master tasks run, by outcome.");
    let _ = writeln!(out, "# TYPE cellar_volume_tasks_total counter");
    let _ =
        writeln!(out, "cellar_volume_tasks_total{{outcome=\"ok\"}} {}", m.tasks.ok.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "cellar_volume_tasks_total{{outcome=\"error\"}} {}",
        m.tasks.failed.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP cellar_volume_encode_deferring 1 while encode tasks wait for the append load to drop."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_encode_deferring gauge");
    let _ = writeln!(out, "cellar_volume_encode_deferring {}", m.encode_deferring.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP cellar_volume_trash_purges_total Trash purges (per disk and round), by outcome."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_trash_purges_total counter");
    for (outcome, counter) in [("ok", &m.trash_purges.ok), ("error", &m.trash_purges.failed)] {
        let _ = writeln!(
            out,
            "cellar_volume_trash_purges_total{{outcome=\"{outcome}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP cellar_volume_trash_purged_total Trash entries unlinked, and their bytes.");
    let _ = writeln!(out, "# TYPE cellar_volume_trash_purged_total counter");
    let _ = writeln!(
        out,
        "cellar_volume_trash_purged_total{{unit=\"extents\"}} {}",
        m.trash_purged_extents.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "cellar_volume_trash_purged_total{{unit=\"bytes\"}} {}", m.trash_purges.bytes());
    let _ = writeln!(
        out,
        "# HELP cellar_volume_trash_purged_early_total Trash entries unlinked before their retention because \
         their disk was short of free space (--trash-free-min-percent)."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_trash_purged_early_total counter");
    let _ = writeln!(
        out,
        "cellar_volume_trash_purged_early_total {}",
        m.trash_purged_early_extents.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP cellar_volume_scrub_total What the scrubber has checked and found.");
    let _ = writeln!(out, "# TYPE cellar_volume_scrub_total counter");
    for (what, counter) in [
        ("bytes", &m.scrub.bytes),
        ("extents", &m.scrub.extents),
        ("findings", &m.scrub.findings),
        ("errors", &m.scrub.errors),
        ("passes", &m.scrub.passes),
    ] {
        let _ =
            writeln!(out, "cellar_volume_scrub_total{{what=\"{what}\"}} {}", counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# HELP cellar_volume_scrub_pass_bytes The scrub pass under way: bytes checked, and in all."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_scrub_pass_bytes gauge");
    let _ = writeln!(
        out,
        "cellar_volume_scrub_pass_bytes{{what=\"done\"}} {}",
        m.scrub.pass_bytes_done.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "cellar_volume_scrub_pass_bytes{{what=\"total\"}} {}",
        m.scrub.pass_bytes_total.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP cellar_volume_budget_bytes Request payload bytes held now, at peak, and the limit."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_budget_bytes gauge");
    let _ = writeln!(out, "cellar_volume_budget_bytes{{kind=\"in_use\"}} {}", shared.budget.in_use_bytes());
    let _ = writeln!(out, "cellar_volume_budget_bytes{{kind=\"peak\"}} {}", shared.budget.peak_bytes());
    let _ = writeln!(out, "cellar_volume_budget_bytes{{kind=\"max\"}} {}", shared.budget.max_bytes());
    let _ = writeln!(
        out,
        "# HELP cellar_volume_block_size_max_bytes Largest block payload accepted (own or the cell's)."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_block_size_max_bytes gauge");
    let _ = writeln!(out, "cellar_volume_block_size_max_bytes {}", shared.block_size_max_bytes);
    let _ = writeln!(
        out,
        "# HELP cellar_volume_disk_bytes Each disk's capacity, used and free bytes, of the free the reserve kept for its catalog, and the room for data (free less the reserve)."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_disk_bytes gauge");
    let _ = writeln!(
        out,
        "# HELP cellar_volume_disk_failed 1 when the disk is reported failed to the master (its usage cannot be read, its stat or an operation hangs, it failed writes or too many reads)."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_disk_failed gauge");
    let _ = writeln!(
        out,
        "# HELP cellar_volume_trash_bytes Bytes of deleted extents waiting in each disk's trash."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_trash_bytes gauge");
    let _ = writeln!(out, "# HELP cellar_volume_trash_extents Deleted extents waiting in each disk's trash.");
    let _ = writeln!(out, "# TYPE cellar_volume_trash_extents gauge");
    let _ = writeln!(
        out,
        "# HELP cellar_volume_trash_purged_for_fragments_total Trash entries each disk unlinked before their retention \
         to make room for a new fragment (an encode's, a repair's) it would otherwise have refused at its reserve."
    );
    let _ = writeln!(out, "# TYPE cellar_volume_trash_purged_for_fragments_total counter");
    for (disk_id, health) in shared.disks.stats(crate::disks::STAT_WAIT, shared.disk_hung_after).await {
        match health {
            DiskHealth::Waiting => {}
            DiskHealth::Stat(s) => {
                for (kind, v) in [
                    ("capacity", s.capacity_bytes),
                    ("used", s.used_bytes),
                    ("free", s.free_bytes),
                    ("reserve", s.reserve_bytes),
                    ("data_room", s.data_room_bytes),
                ] {
                    let _ =
                        writeln!(out, "cellar_volume_disk_bytes{{disk=\"{disk_id}\",kind=\"{kind}\"}} {v}");
                }
                let failed = u8::from(crate::disks::disk_failed(&s, shared.disk_hung_after));
                let _ = writeln!(out, "cellar_volume_disk_failed{{disk=\"{disk_id}\"}} {failed}");
                let _ = writeln!(out, "cellar_volume_trash_bytes{{disk=\"{disk_id}\"}} {}", s.trash_bytes);
                let _ =
                    writeln!(out, "cellar_volume_trash_extents{{disk=\"{disk_id}\"}} {}", s.trash_extents);
                let _ = writeln!(
                    out,
                    "cellar_volume_trash_purged_for_fragments_total{{disk=\"{disk_id}\"}} {}",
                    s.trash_purged_for_fragments
                );
            }
            DiskHealth::Failed(_) | DiskHealth::Hung(_) => {
                let _ = writeln!(out, "cellar_volume_disk_failed{{disk=\"{disk_id}\"}} 1");
            }
        }
    }
    out
}
