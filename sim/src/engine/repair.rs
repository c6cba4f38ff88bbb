//! Repair: the planner's queue, most at risk first, served at the cluster's bandwidth.
//!
//! Two kinds of work, as cellar's repair planner sees them:
//! - a *bulk rebuild* per failed (or declared-down) disk: its extents, each missing one
//!   extent, rebuilt in the order of the disk's volume list. All bulk rebuilds share the
//!   repair throughput equally. Progress is a cursor over the list, advanced as a fluid,
//!   so a disk of 75 000 extents costs a handful of events, not 75 000;
//! - the *priority queue* of individual volumes: those with two or more known-missing
//!   extents, corrupt extents found by scrubbing, and volumes that cannot be rebuilt now
//!   (fewer than k readable extents because of an outage; they wait, blocked, until it
//!   ends). It is served first, one volume at a time at the full throughput, most missing
//!   extents first, then first come first served. A volume taken out of a bulk rebuild is
//!   skipped by its cursor.
//!
//! In the `exponential` model (validation), each failed disk is restored whole after an
//! independent exponential time instead, and found corrupt extents likewise.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::fasthash::IdMap;

use crate::config::RepairModel;
use crate::engine::Engine;
use crate::events::Event;

/// Most work one batch of the priority queue takes: volumes of the same priority are
/// rebuilt together up to this, so that thousands of doubly-degraded volumes cost
/// hundreds of events, not thousands, and none finishes more than this late.
const EXPLICIT_BATCH_SECS: f64 = 10.0;

/// The rebuild of one disk's extents.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    /// The disk's bytes are gone (false: the disk is only unreachable, its node or zone
    /// is down past `down_after`, and the rebuild is a precaution).
    pub permanent: bool,
    /// Event that destroyed the disk (0 for transient jobs).
    pub id: u64,
    /// When it was destroyed.
    pub failed_at_secs: f64,
    /// When the master learns of it.
    pub detect_at_secs: f64,
    /// Detected: the rebuild may run.
    pub active: bool,
    /// Entries of the disk's list before this index are rebuilt (unless taken out).
    pub pos: usize,
    /// Bytes rebuilt of the entry at `pos`.
    pub partial_bytes: f64,
    /// Bytes the bulk rebuild still has to do.
    pub remaining_bytes: f64,
    /// Volumes taken out to the priority queue: true once rebuilt.
    pub taken: IdMap<u32, bool>,
    /// Taken-out volumes not yet rebuilt.
    pub taken_pending: u32,
    /// Bulk bytes per second now.
    pub rate: f64,
    /// The bulk pass reached the end of the list.
    pub bulk_done: bool,
    /// Transient job fully rebuilt, kept until its disk is reachable again.
    pub done: bool,
    /// Bumped whenever its pending events become stale.
    pub generation: u32,
}

impl Job {
    /// A permanent failure's rebuild, undetected yet.
    pub fn new(id: u64, failed_at_secs: f64, detect_at_secs: f64, bytes: f64) -> Job {
        Job {
            permanent: true,
            id,
            failed_at_secs,
            detect_at_secs,
            active: false,
            pos: 0,
            partial_bytes: 0.0,
            remaining_bytes: bytes,
            taken: IdMap::default(),
            taken_pending: 0,
            rate: 0.0,
            bulk_done: false,
            done: false,
            generation: 0,
        }
    }

    /// Whether the extent of volume `v` at list position `pos` has been rebuilt.
    pub fn restored(&self, v: u32, pos: usize) -> bool {
        if self.done {
            return true;
        }
        match self.taken.get(&v) {
            Some(&rebuilt) => rebuilt,
            None => pos < self.pos,
        }
    }
}

/// Priority key: most known-missing extents first, then arrival order.
type Key = (Reverse<u8>, u64);

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    blocked: bool,
}

/// The priority queue of individual volume repairs.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExplicitQueue {
    ready: BTreeSet<(Key, u32)>,
    entries: IdMap<u32, Entry>,
    blocked: BTreeSet<u32>,
    /// Volumes being rebuilt (one batch) and when they finish.
    serving: Vec<u32>,
    seq: u64,
    /// Bumped at every start of service.
    generation: u32,
}

impl ExplicitQueue {
    /// Adds or re-prioritizes volume `v`.
    fn upsert(&mut self, v: u32, known: u8, blocked: bool) {
        if let Some(old) = self.entries.remove(&v) {
            self.ready.remove(&(old.key, v));
            self.blocked.remove(&v);
        }
        self.seq += 1;
        let key = (Reverse(known), self.seq);
        self.entries.insert(v, Entry { key, blocked });
        if blocked {
            self.blocked.insert(v);
        } else {
            self.ready.insert((key, v));
        }
    }

    /// Drops volume `v` (lost, or nothing left to rebuild).
    pub fn remove(&mut self, v: u32) {
        if let Some(old) = self.entries.remove(&v) {
            self.ready.remove(&(old.key, v));
            self.blocked.remove(&v);
        }
    }

    /// Known-missing count of the next ready volume.
    fn peek_known(&self) -> Option<u8> {
        self.ready.iter().next().map(|((Reverse(known), _), _)| *known)
    }

    fn pop_ready(&mut self) -> Option<u32> {
        let first = self.ready.iter().next().copied()?;
        self.ready.remove(&first);
        self.entries.remove(&first.1);
        Some(first.1)
    }

    fn unblock_all(&mut self) {
        for v in std::mem::take(&mut self.blocked) {
            if let Some(entry) = self.entries.get_mut(&v) {
                entry.blocked = false;
                self.ready.insert((entry.key, v));
            }
        }
    }

    /// Volumes queued (ready or blocked), the one in service excluded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether volume `v` is queued or in service.
    pub fn contains(&self, v: u32) -> bool {
        self.entries.contains_key(&v) || self.serving.contains(&v)
    }

    /// Whether a blocked volume waits for an outage to end.
    pub fn has_blocked(&self) -> bool {
        !self.blocked.is_empty()
    }
}

impl Engine<'_> {
    /// Bytes of all extents on disk `d`.
    pub(crate) fn job_total_bytes(&self, d: u32) -> f64 {
        self.m.layout.disk_bytes(d) as f64
    }

    /// Repair throughput (bytes of extents rebuilt per second).
    pub(crate) fn repair_bytes_per_sec(&self) -> f64 {
        self.m.repair_rate.bytes_per_sec
    }

    /// Moves every running bulk rebuild forward to `time`.
    pub(crate) fn advance_jobs(&mut self, time: f64) {
        let layout = &self.m.layout;
        let dt = time - self.now;
        for (&d, job) in self.jobs.iter_mut() {
            if !job.active || job.bulk_done || job.rate <= 0.0 {
                continue;
            }
            let list = layout.volumes_on(d);
            let mut budget = job.rate * dt;
            while budget > 0.0 && job.pos < list.len() {
                let v = list[job.pos];
                if job.taken.contains_key(&v) {
                    job.pos += 1;
                    continue;
                }
                let need = layout.extent_bytes(v) as f64 - job.partial_bytes;
                if budget >= need {
                    budget -= need;
                    job.remaining_bytes -= need;
                    job.partial_bytes = 0.0;
                    job.pos += 1;
                    self.tally.repaired_bytes += layout.extent_bytes(v) as f64;
                } else {
                    job.partial_bytes += budget;
                    job.remaining_bytes -= budget;
                    budget = 0.0;
                }
            }
        }
    }

    /// Gives the throughput to the priority queue if it has a ready volume, else shares
    /// it among the bulk rebuilds; reschedules their completions.
    pub(crate) fn reschedule_repairs(&mut self) {
        if !matches!(self.m.repair_model, RepairModel::Bandwidth) {
            return;
        }
        if self.explicit.serving.is_empty() {
            // One batch: volumes of the same priority, up to EXPLICIT_BATCH_SECS of work,
            // rebuilt together (at most that much later than one by one).
            let rate = self.repair_bytes_per_sec();
            let mut batch_bytes = 0.0;
            let mut class = None;
            while let Some(known) = self.explicit.peek_known() {
                if class.is_some_and(|c| c != known) || batch_bytes / rate >= EXPLICIT_BATCH_SECS {
                    break;
                }
                let Some(v) = self.explicit.pop_ready() else { break };
                if self.lost.contains(&v) {
                    continue;
                }
                let st = self.status(v, None);
                if st.known == 0 {
                    continue;
                }
                let info = self.m.layout.scheme_of(v);
                if info.extents - st.unreadable < info.data {
                    self.explicit.upsert(v, st.known, true);
                    continue;
                }
                class = Some(known);
                batch_bytes += f64::from(st.known) * self.m.layout.extent_bytes(v) as f64;
                self.explicit.serving.push(v);
            }
            if !self.explicit.serving.is_empty() {
                self.explicit.generation += 1;
                let done = self.now + batch_bytes / rate;
                self.queue.push(done, Event::ExplicitDone { generation: self.explicit.generation });
            }
        }
        let bulk: Vec<u32> =
            self.jobs.iter().filter(|(_, j)| j.active && !j.bulk_done && !j.done).map(|(&d, _)| d).collect();
        let rate = if !self.explicit.serving.is_empty() || bulk.is_empty() {
            0.0
        } else {
            self.repair_bytes_per_sec() / bulk.len() as f64
        };
        for d in bulk {
            let Some(job) = self.jobs.get_mut(&d) else { continue };
            job.rate = rate;
            job.generation += 1;
            if rate > 0.0 {
                let done = self.now + job.remaining_bytes.max(0.0) / rate;
                self.queue.push(done, Event::JobDone { disk: d, generation: job.generation });
            }
        }
    }

    /// The master learns that disk `d` is gone: its rebuild may start. Volumes with two
    /// or more known-missing extents, or not readable enough to rebuild, go to the
    /// priority queue.
    pub(crate) fn detect(&mut self, d: u32, generation: u32) {
        let Some(job) = self.jobs.get_mut(&d) else { return };
        if job.generation != generation || job.active {
            return;
        }
        job.active = true;
        self.escalate(&[d]);
        self.dirty = true;
    }

    /// Takes volumes of the newly known disks `new_disks` that need priority into the
    /// queue.
    pub(crate) fn escalate(&mut self, new_disks: &[u32]) {
        if !matches!(self.m.repair_model, RepairModel::Bandwidth) {
            return;
        }
        // A volume needs priority only if another of its extents is known missing or
        // unreadable: intersect with every such source rather than scanning.
        let candidates = self.overlap_candidates(new_disks, |job| job.active, true, self.any_outage());
        for v in candidates {
            if self.lost.contains(&v) {
                continue;
            }
            if self.explicit.contains(v) {
                // Re-queued with its new priority.
                self.extract(v);
                continue;
            }
            let st = self.status(v, None);
            let info = self.m.layout.scheme_of(v);
            if st.known >= 2 || info.extents - st.unreadable < info.data {
                self.extract(v);
            }
        }
    }

    /// Moves volume `v` to the priority queue, taking its extents out of their bulk
    /// rebuilds.
    pub(crate) fn extract(&mut self, v: u32) {
        let layout = &self.m.layout;
        let bytes = layout.extent_bytes(v) as f64;
        for (slot, &d) in layout.slots(v).iter().enumerate() {
            let Some(job) = self.jobs.get_mut(&d) else { continue };
            let pos = layout.pos_of(v, slot);
            if !job.active || job.restored(v, pos) || job.taken.contains_key(&v) {
                continue;
            }
            job.taken.insert(v, false);
            job.taken_pending += 1;
            if pos == job.pos {
                job.remaining_bytes -= bytes - job.partial_bytes;
                job.partial_bytes = 0.0;
            } else if pos > job.pos {
                job.remaining_bytes -= bytes;
            }
        }
        let st = self.status(v, None);
        if st.known == 0 {
            return;
        }
        let info = layout.scheme_of(v);
        let blocked = info.extents - st.unreadable < info.data;
        if self.explicit.serving.contains(&v) {
            return;
        }
        self.explicit.upsert(v, st.known, blocked);
    }

    /// Volume `v` is lost: its extents leave every rebuild (nothing left to rebuild from),
    /// and rebuilds that only waited for it complete.
    pub(crate) fn settle_lost_volume(&mut self, v: u32) {
        let layout = &self.m.layout;
        let bytes = layout.extent_bytes(v) as f64;
        let mut completed = Vec::new();
        for (slot, &d) in layout.slots(v).iter().enumerate() {
            let Some(job) = self.jobs.get_mut(&d) else { continue };
            let pos = layout.pos_of(v, slot);
            if job.restored(v, pos) {
                continue;
            }
            match job.taken.insert(v, true) {
                Some(false) => job.taken_pending -= 1,
                Some(true) => {}
                None => {
                    if pos == job.pos {
                        job.remaining_bytes -= bytes - job.partial_bytes;
                        job.partial_bytes = 0.0;
                    } else if pos > job.pos {
                        job.remaining_bytes -= bytes;
                    }
                }
            }
            if job.active && job.bulk_done && job.taken_pending == 0 {
                completed.push(d);
            }
        }
        for d in completed {
            self.complete_job(d);
        }
        self.dirty = true;
    }

    /// The volume in service is rebuilt: every extent of it the planner knew missing is
    /// whole again.
    pub(crate) fn explicit_done(&mut self, generation: u32) {
        if generation != self.explicit.generation {
            return;
        }
        let batch = std::mem::take(&mut self.explicit.serving);
        self.dirty = true;
        for v in batch {
            self.restore_volume(v);
        }
        if self.explicit.len() == 0 {
            // The priority queue drained: the most-degraded volumes are whole again.
            self.epoch += 1;
        }
    }

    /// Every extent of volume `v` the planner knew missing is whole again.
    fn restore_volume(&mut self, v: u32) {
        if self.lost.contains(&v) {
            return;
        }
        let layout = &self.m.layout;
        let bytes = layout.extent_bytes(v) as f64;
        let mut completed = Vec::new();
        for (slot, &d) in layout.slots(v).iter().enumerate() {
            let pos = layout.pos_of(v, slot);
            if let Some(job) = self.jobs.get_mut(&d) {
                if job.active && !job.restored(v, pos) {
                    match job.taken.insert(v, true) {
                        Some(false) => job.taken_pending -= 1,
                        Some(true) => {}
                        None => {
                            if pos == job.pos {
                                job.remaining_bytes -= bytes - job.partial_bytes;
                                job.partial_bytes = 0.0;
                            } else if pos > job.pos {
                                job.remaining_bytes -= bytes;
                            }
                        }
                    }
                    self.tally.repaired_bytes += bytes;
                    if job.bulk_done && job.taken_pending == 0 {
                        completed.push(d);
                    }
                    continue;
                }
                if job.active {
                    continue;
                }
            }
            if let Some(list) = self.lses.get_mut(&v) {
                let before = list.len();
                list.retain(|l| !(usize::from(l.slot) == slot && l.detected));
                if list.len() < before {
                    self.tally.repaired_bytes += bytes;
                }
                if list.is_empty() {
                    self.lses.remove(&v);
                }
            }
        }
        for d in completed {
            self.complete_job(d);
        }
        let st = self.status(v, None);
        if st.known > 0 {
            self.extract(v);
        }
    }

    /// A bulk rebuild reached the end of its list (or, exponential model, the disk is
    /// restored).
    pub(crate) fn job_done(&mut self, d: u32, generation: u32) {
        let layout = &self.m.layout;
        let exponential = matches!(self.m.repair_model, RepairModel::Exponential { .. });
        let Some(job) = self.jobs.get_mut(&d) else { return };
        if job.generation != generation {
            return;
        }
        let list = layout.volumes_on(d);
        let mut rebuilt = 0.0;
        while job.pos < list.len() {
            let v = list[job.pos];
            if !job.taken.contains_key(&v) {
                rebuilt += layout.extent_bytes(v) as f64 - job.partial_bytes;
                job.partial_bytes = 0.0;
            }
            job.pos += 1;
        }
        self.tally.repaired_bytes += rebuilt;
        job.remaining_bytes = 0.0;
        job.bulk_done = true;
        job.rate = 0.0;
        let complete = exponential || job.taken_pending == 0;
        self.dirty = true;
        if complete {
            self.complete_job(d);
        }
    }

    /// Every extent of disk `d` is rebuilt: a permanent failure's slot gets a new disk; a
    /// transient rebuild is kept (as done) until the disk is reachable again.
    pub(crate) fn complete_job(&mut self, d: u32) {
        self.epoch += 1;
        let Some(job) = self.jobs.get_mut(&d) else { return };
        if !job.permanent {
            job.done = true;
            job.bulk_done = true;
            return;
        }
        let failed_at = job.failed_at_secs;
        self.jobs.remove(&d);
        self.tally.windows += 1;
        self.tally.window_secs += self.now - failed_at;
        let state = &mut self.disks[d as usize];
        state.failed = false;
        state.born_secs = self.now;
        state.generation += 1;
        self.schedule_life(d);
        let node = self.m.layout.disk_node[d as usize];
        if self.nodes_lost.contains(&node)
            && self.m.layout.nodes[node as usize].disks.iter().all(|&x| !self.disks[x as usize].failed)
        {
            self.nodes_lost.remove(&node);
        }
        self.dirty = true;
    }

    /// An outage made `disks` unreadable: running rebuilds of volumes that now have fewer
    /// than k readable extents are taken out, blocked until it ends.
    pub(crate) fn outage_started(&mut self, disks: &[u32]) {
        if !matches!(self.m.repair_model, RepairModel::Bandwidth) {
            return;
        }
        let layout = &self.m.layout;
        let running: Vec<u32> =
            self.jobs.iter().filter(|(_, j)| j.active && !j.done).map(|(&d, _)| d).collect();
        if running.is_empty() {
            return;
        }
        let mut candidates = Vec::new();
        for &e in &running {
            let list = layout.volumes_on(e);
            let from = self.jobs.get(&e).map(|j| j.pos).unwrap_or(0).min(list.len());
            for &d in disks {
                crate::engine::intersect_into(&list[from..], layout.volumes_on(d), &mut candidates);
            }
            for (&v, _) in self.jobs.get(&e).map(|j| &j.taken).into_iter().flatten() {
                candidates.push(v);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for v in candidates {
            if self.lost.contains(&v) {
                continue;
            }
            let st = self.status(v, None);
            let info = layout.scheme_of(v);
            if st.known > 0 && info.extents - st.unreadable < info.data {
                self.extract(v);
            }
        }
        self.dirty = true;
    }

    /// An outage ended: transient rebuilds of reachable disks stop (their extents are
    /// back), blocked volumes are retried.
    pub(crate) fn outage_ended(&mut self, disks: &[u32]) {
        for &d in disks {
            if self.disk_unavailable(d) {
                continue;
            }
            if self.jobs.get(&d).is_some_and(|j| !j.permanent) {
                self.jobs.remove(&d);
            }
        }
        self.explicit.unblock_all();
        self.dirty = true;
    }

    /// `down_after` has passed on `disks`: the planner rebuilds their extents elsewhere.
    pub(crate) fn start_transient_jobs(&mut self, disks: &[u32]) {
        let mut started = Vec::new();
        for &d in disks {
            if self.disks[d as usize].failed || self.jobs.contains_key(&d) {
                continue;
            }
            let mut job = Job::new(0, self.now, self.now, self.job_total_bytes(d));
            job.permanent = false;
            job.active = true;
            self.jobs.insert(d, job);
            started.push(d);
        }
        if !started.is_empty() {
            self.escalate(&started);
            self.dirty = true;
        }
    }
}
