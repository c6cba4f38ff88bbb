//! What a master observes while it leads and keeps only in memory (none of it is in the
//! Raft state, so a new leader starts over): the repair rate, measured per repair episode
//! (rate, bytes done, ETA), each volume server's scrub progress from its heartbeats, the
//! metadata scanner's counters, and each node's share of the repair bandwidth that
//! `PullTasks` hands to its executors.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cellar_proto::master as pb;

/// What a member answered the leader's last `Build` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberBuild {
    /// The version it offers, and its build's version.
    Offers {
        /// Highest apply version it offers.
        apply_version_max: u32,
        /// Its build's version.
        build: String,
    },
    /// It did not answer (or answered with an error: a build without the call is one).
    NoAnswer(String),
}

/// Measures repair throughput: an episode starts at the first planner pass that sees a
/// repair task open (or the first repair reported done, on a master that became leader
/// mid-episode) and ends at the first pass that sees none.
#[derive(Debug, Default, Clone)]
pub struct RepairMeter {
    episode: Option<Episode>,
    last: Option<Episode>,
}

#[derive(Debug, Clone, Copy)]
struct Episode {
    started_unix_ms: u64,
    ended_unix_ms: Option<u64>,
    bytes_done: u64,
}

impl Episode {
    fn secs(&self, now_unix_ms: u64) -> f64 {
        self.ended_unix_ms.unwrap_or(now_unix_ms).saturating_sub(self.started_unix_ms) as f64 / 1000.0
    }

    fn rate_bytes_per_sec(&self, now_unix_ms: u64) -> u64 {
        let secs = self.secs(now_unix_ms);
        if secs > 0.0 { (self.bytes_done as f64 / secs) as u64 } else { 0 }
    }
}

/// The repair rate as `cellar admin status` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairRate {
    /// Bytes of extents rebuilt per second in the episode under way, or else the last.
    pub bytes_per_sec: u64,
    /// Bytes rebuilt in that episode.
    pub bytes_done: u64,
    /// Its length so far (or in all, when finished).
    pub episode_secs: u64,
    /// Seconds until the pending bytes are rebuilt at that rate (only while repairing).
    pub eta_secs: Option<u64>,
}

impl RepairMeter {
    /// A planner pass saw `repairs_open` repair tasks queued or running.
    pub fn pass(&mut self, now_unix_ms: u64, repairs_open: u64) {
        match (&mut self.episode, repairs_open) {
            (None, 0) => {}
            (None, _) => {
                self.episode =
                    Some(Episode { started_unix_ms: now_unix_ms, ended_unix_ms: None, bytes_done: 0 })
            }
            (Some(e), 0) => {
                e.ended_unix_ms = Some(now_unix_ms);
                if e.bytes_done > 0 {
                    self.last = Some(*e);
                }
                self.episode = None;
            }
            (Some(_), _) => {}
        }
    }

    /// A repair that rebuilt `bytes` was reported done.
    pub fn completed(&mut self, now_unix_ms: u64, bytes: u64) {
        let e = self.episode.get_or_insert(Episode {
            started_unix_ms: now_unix_ms,
            ended_unix_ms: None,
            bytes_done: 0,
        });
        e.bytes_done = e.bytes_done.saturating_add(bytes);
    }

    /// The rate now, with the ETA of `bytes_pending`.
    pub fn rate(&self, now_unix_ms: u64, bytes_pending: u64) -> RepairRate {
        match (self.episode, self.last) {
            (Some(e), _) => {
                let bytes_per_sec = e.rate_bytes_per_sec(now_unix_ms);
                RepairRate {
                    bytes_per_sec,
                    bytes_done: e.bytes_done,
                    episode_secs: e.secs(now_unix_ms) as u64,
                    eta_secs: (bytes_per_sec > 0).then(|| bytes_pending.div_ceil(bytes_per_sec)),
                }
            }
            (None, Some(e)) => RepairRate {
                bytes_per_sec: e.rate_bytes_per_sec(now_unix_ms),
                bytes_done: e.bytes_done,
                episode_secs: e.secs(now_unix_ms) as u64,
                eta_secs: None,
            },
            (None, None) => RepairRate::default(),
        }
    }
}

/// The metadata scanner's counters (see [`crate::scanner`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanCounters {
    /// Full passes finished.
    pub passes: u64,
    /// Index entries checked.
    pub index_entries_checked: u64,
    /// Extents asked about.
    pub extents_checked: u64,
    /// Entries pointing nowhere, extents missing or short.
    pub findings: u64,
    /// Extents that could not be asked about (server unreachable).
    pub errors: u64,
    /// When the last pass finished.
    pub last_pass_unix_ms: u64,
}

/// What the compaction planner saw at its last pass, and what it reclaimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionCounters {
    /// Passes since this master became leader.
    pub passes: u64,
    /// When the last one ended.
    pub last_pass_unix_ms: u64,
    /// Record bytes of referenced blocks.
    pub live_bytes: u64,
    /// The rest of the volumes' lengths.
    pub garbage_bytes: u64,
    /// Volumes holding no referenced block.
    pub volumes_dead: u64,
    /// Sealed or coded volumes whose live fraction is under the threshold.
    pub rewrite_candidates: u64,
    /// Their garbage bytes.
    pub rewrite_candidate_garbage_bytes: u64,
    /// Volumes reclaimed.
    pub volumes_reclaimed: u64,
    /// Their lengths.
    pub bytes_reclaimed: u64,
}

/// Nodes whose scrub progress, or return, the leader tracks at most (beyond: dropped).
pub const NODES_TRACKED_MAX: usize = 100_000;

/// The leader's in-memory observations, shared by the planner, the scanner and the API.
#[derive(Debug, Default)]
pub struct Observed {
    repair: Mutex<RepairMeter>,
    scrub: Mutex<BTreeMap<u64, pb::ScrubProgress>>,
    scan: Mutex<ScanCounters>,
    compaction: Mutex<CompactionCounters>,
    /// Live blocks of the volumes compaction wants rewritten, from its last pass.
    rewrite: Mutex<Vec<(u64, Vec<crate::command::Hash32>)>>,
    /// Each node's share of the repair bandwidth (bytes/s, 0: no limit), set by the
    /// planner from the nodes that have repair tasks queued.
    repair_share: Mutex<BTreeMap<u64, u64>>,
    /// Nodes that came back up since the scanner last checked their extents.
    returned: Mutex<Vec<u64>>,
    /// Extents the last planner pass found no disk for (see
    /// [`crate::repair::RepairPass::without_a_disk`]).
    without_a_disk: Mutex<u64>,
    /// What each member answered the last time this master, leading, asked which apply
    /// version it offers ([`crate::upgrade::run`]).
    builds: Mutex<BTreeMap<u64, MemberBuild>>,
    /// Times the members were asked so (passes of that loop that asked).
    build_passes: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Observed {
    /// What the members answered the leader's last `Build` calls.
    pub fn set_builds(&self, builds: BTreeMap<u64, MemberBuild>) {
        *lock(&self.builds) = builds;
        *lock(&self.build_passes) += 1;
    }

    /// How many times this master, leading, asked the members (see [`Observed::set_builds`]).
    pub fn build_passes(&self) -> u64 {
        *lock(&self.build_passes)
    }

    /// Forgets what the members answered (this master does not lead, or the cell is at
    /// its build's version: nothing to say).
    pub fn clear_builds(&self) {
        lock(&self.builds).clear();
    }

    /// See [`Observed::set_builds`].
    pub fn builds(&self) -> BTreeMap<u64, MemberBuild> {
        lock(&self.builds).clone()
    }

    /// See [`RepairMeter::pass`].
    pub fn repair_pass(&self, now_unix_ms: u64, repairs_open: u64) {
        lock(&self.repair).pass(now_unix_ms, repairs_open);
    }

    /// Records what the planner's last pass could not place (see
    /// [`crate::repair::RepairPass`]): a warning when extents start waiting for a disk
    /// (with the first refusal), a note when none waits any more; the passes in between
    /// only update the count (no log line every pass). A pass the repair limits ended
    /// early saw only part of the volumes: it can raise the count, never lower it.
    pub fn repair_without_a_disk(&self, count: u64, first_refusal: Option<&str>, stopped_early: bool) {
        let mut last = lock(&self.without_a_disk);
        let now = if stopped_early { count.max(*last) } else { count };
        if now > 0 && *last == 0 {
            tracing::warn!(
                extents = now,
                first = first_refusal.unwrap_or(""),
                "repairs wait for a disk: no eligible disk keeps the placement rules"
            );
        } else if now == 0 && *last > 0 {
            tracing::info!("no repair waits for a disk any more");
        }
        *last = now;
    }

    /// Forgets the planner's count (this master no longer leads: another one plans).
    pub fn repair_without_a_disk_reset(&self) {
        *lock(&self.without_a_disk) = 0;
    }

    /// Extents the planner's last pass found no disk for.
    pub fn repairs_without_a_disk(&self) -> u64 {
        *lock(&self.without_a_disk)
    }

    /// See [`RepairMeter::completed`].
    pub fn repair_completed(&self, now_unix_ms: u64, bytes: u64) {
        lock(&self.repair).completed(now_unix_ms, bytes);
    }

    /// See [`RepairMeter::rate`].
    pub fn repair_rate(&self, now_unix_ms: u64, bytes_pending: u64) -> RepairRate {
        lock(&self.repair).rate(now_unix_ms, bytes_pending)
    }

    /// Records a node's scrub progress from its heartbeat.
    pub fn scrub_progress(&self, node_id: u64, mut progress: pb::ScrubProgress) {
        progress.node_id = node_id;
        let mut scrub = lock(&self.scrub);
        if scrub.len() < NODES_TRACKED_MAX || scrub.contains_key(&node_id) {
            scrub.insert(node_id, progress);
        }
    }

    /// Every node's last reported scrub progress, by node id.
    pub fn scrub(&self) -> Vec<pb::ScrubProgress> {
        lock(&self.scrub).values().copied().collect()
    }

    /// Updates the scanner's counters.
    pub fn scan_update(&self, f: impl FnOnce(&mut ScanCounters)) {
        f(&mut lock(&self.scan));
    }

    /// The scanner's counters.
    pub fn scan(&self) -> ScanCounters {
        *lock(&self.scan)
    }

    /// Updates the compaction planner's counters.
    pub fn compaction_update(&self, f: impl FnOnce(&mut CompactionCounters)) {
        f(&mut lock(&self.compaction));
    }

    /// The compaction planner's counters.
    pub fn compaction(&self) -> CompactionCounters {
        *lock(&self.compaction)
    }

    /// Sets the volumes compaction wants rewritten, with their live blocks.
    pub fn set_rewrite_work(&self, work: Vec<(u64, Vec<crate::command::Hash32>)>) {
        *lock(&self.rewrite) = work;
    }

    /// The volumes compaction wants rewritten, with their live blocks.
    pub fn rewrite_work(&self) -> Vec<(u64, Vec<crate::command::Hash32>)> {
        lock(&self.rewrite).clone()
    }

    /// Sets the repair bandwidth share of every node that has repair tasks queued.
    pub fn set_repair_shares(&self, shares: BTreeMap<u64, u64>) {
        *lock(&self.repair_share) = shares;
    }

    /// The repair bandwidth `node_id`'s executors may use together (0: no limit). A node
    /// the planner has not given repairs to gets the whole cell's `limit`.
    pub fn repair_share(&self, node_id: u64, limit: u64) -> u64 {
        lock(&self.repair_share).get(&node_id).copied().unwrap_or(limit)
    }

    /// Forgets a removed node (its scrub progress, its repair share).
    pub fn forget_node(&self, node_id: u64) {
        lock(&self.scrub).remove(&node_id);
        lock(&self.repair_share).remove(&node_id);
        lock(&self.returned).retain(|n| *n != node_id);
    }

    /// A node came back up: the scanner checks its extents first.
    pub fn node_returned(&self, node_id: u64) {
        let mut returned = lock(&self.returned);
        if !returned.contains(&node_id) && returned.len() < NODES_TRACKED_MAX {
            returned.push(node_id);
        }
    }

    /// The nodes that came back since the last call.
    pub fn take_returned(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.returned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_stopped_early_never_lowers_the_count_of_repairs_without_a_disk() {
        let o = Observed::default();
        o.repair_without_a_disk(3, Some("volume 1 slot 3: no zone"), false);
        assert_eq!(o.repairs_without_a_disk(), 3);
        // Stopped by the limits before it saw that volume: still 3.
        o.repair_without_a_disk(0, None, true);
        assert_eq!(o.repairs_without_a_disk(), 3);
        o.repair_without_a_disk(5, None, true);
        assert_eq!(o.repairs_without_a_disk(), 5);
        // A whole pass says what waits now.
        o.repair_without_a_disk(0, None, false);
        assert_eq!(o.repairs_without_a_disk(), 0);
        o.repair_without_a_disk(2, None, false);
        o.repair_without_a_disk_reset();
        assert_eq!(o.repairs_without_a_disk(), 0);
    }

    #[test]
    fn an_episode_measures_bytes_over_its_length_and_is_kept_when_it_ends() {
        let mut m = RepairMeter::default();
        assert_eq!(m.rate(0, 0), RepairRate::default());
        m.pass(1_000, 0);
        m.pass(2_000, 3);
        m.completed(4_000, 100);
        m.completed(6_000, 300);
        let now = m.rate(6_000, 800);
        assert_eq!(now.bytes_per_sec, 100);
        assert_eq!(now.bytes_done, 400);
        assert_eq!(now.episode_secs, 4);
        assert_eq!(now.eta_secs, Some(8));
        m.pass(7_000, 2);
        m.pass(10_000, 0);
        let last = m.rate(50_000, 0);
        assert_eq!(last.bytes_per_sec, 50, "400 bytes over 8 s");
        assert_eq!(last.eta_secs, None);
        // An episode that rebuilt nothing does not replace the last measured one.
        m.pass(60_000, 1);
        m.pass(61_000, 0);
        assert_eq!(m.rate(70_000, 0).bytes_per_sec, 50);
    }

    #[test]
    fn a_completion_without_a_pass_starts_an_episode() {
        let mut m = RepairMeter::default();
        m.completed(1_000, 10);
        m.completed(3_000, 30);
        assert_eq!(m.rate(3_000, 0).bytes_per_sec, 20);
    }

    #[test]
    fn a_node_without_a_share_gets_the_whole_limit() {
        let o = Observed::default();
        o.set_repair_shares(BTreeMap::from([(1, 50)]));
        assert_eq!(o.repair_share(1, 100), 50);
        assert_eq!(o.repair_share(2, 100), 100);
    }
}
