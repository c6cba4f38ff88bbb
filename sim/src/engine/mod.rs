//! One simulated history: the state of every disk, node, zone, repair and corrupt extent,
//! advanced event by event.
//!
//! What counts as what:
//! - an extent is *missing* when its bytes are gone: its disk failed (until the rebuild
//!   passes it) or it is corrupt (a latent sector error, until rebuilt);
//! - it is *unavailable* when its node or zone is down: the bytes come back;
//! - the planner *knows* an extent is missing once the failure is detected (a dead disk
//!   after `disk_detect_secs`, a silent node after `down_after_secs`, a corrupt extent at
//!   the next scrub pass); only known extents are queued for repair;
//! - a volume is *lost* when fewer than k of its extents are not missing. Unavailability
//!   never loses data, but a volume needs k readable extents to be rebuilt.
//!
//! Every missing extent carries the id and time of the event that destroyed it. A lost
//! volume's *initiator* is the earliest of those: every loss has exactly one, which is
//! what lets importance sampling (see [`crate::engine::importance`]) split the estimate by
//! initiating event.
//!
//! Repairs are in [`crate::engine::repair`].

pub mod importance;
pub(crate) mod repair;

use std::collections::BTreeMap;

use crate::fasthash::IdSet;

use crate::engine::importance::Branch;
use crate::engine::repair::{ExplicitQueue, Job};
use crate::events::{Event, Queue};
use crate::lifetime::LifeEnd;
use crate::model::Model;
use crate::rng::Rng;

/// A disk's state in a run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DiskState {
    /// Destroyed and not yet replaced (its slot's extents are being rebuilt).
    pub failed: bool,
    /// Time the current disk in this slot started its life (may be negative: initial age).
    pub born_secs: f64,
    /// Bumped whenever the disk's pending lifetime events become stale.
    pub generation: u32,
}

/// A node or zone's outage state.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outage {
    /// Down now.
    pub out: bool,
    /// When the current outage began.
    pub since_secs: f64,
    /// When it ends.
    pub back_secs: f64,
    /// Bumped at every change, to invalidate pending events.
    pub generation: u32,
}

/// A corrupt extent (latent sector error) not yet rebuilt.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lse {
    /// Extent index in the volume.
    pub slot: u8,
    /// Event id of the error.
    pub id: u64,
    /// When it happened.
    pub at_secs: f64,
    /// Found by a scrub.
    pub detected: bool,
    /// When the scrub finds it.
    pub detect_at_secs: f64,
}

/// What destroyed data and may therefore start a loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InitiatorKind {
    /// A disk failed.
    Disk(u32),
    /// A node and all its disks were lost.
    Node(u32),
    /// One extent of a volume went corrupt.
    Lse(u32),
}

/// An event that destroyed data, recorded so that branches can be spawned from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Initiator {
    /// Event id.
    pub id: u64,
    /// What it destroyed.
    pub kind: InitiatorKind,
}

/// One lost volume.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LossRecord {
    /// Initiator of the loss.
    pub initiator: u64,
    /// Logical bytes lost.
    pub bytes: u64,
    /// Likelihood ratio of the path at the loss (1 outside branches).
    pub weight: f64,
    /// First loss of this initiator in this history.
    pub first_of_initiator: bool,
}

/// A volume's extents, counted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VolStatus {
    /// Extents whose bytes are gone.
    pub missing: u8,
    /// Missing or unavailable extents the planner knows about (its repair priority).
    pub known: u8,
    /// Extents that cannot be read now (missing or unavailable).
    pub unreadable: u8,
    /// Earliest destroying event among the missing extents: (time, id).
    pub first: Option<(f64, u64)>,
    /// Some missing extent was destroyed by the focus event asked about.
    pub focus_hit: bool,
    /// Latest pending detection among missing extents the planner does not know yet.
    pub undetected_until_secs: f64,
}

/// Counters of one history.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tally {
    pub disk_failures: u64,
    pub disk_retirements: u64,
    pub node_losses: u64,
    pub node_outages: u64,
    pub zone_outages: u64,
    pub lses: u64,
    /// Bytes of extents rebuilt.
    pub repaired_bytes: f64,
    /// Permanent failures fully rebuilt, and the summed time from failure to rebuilt.
    pub windows: u64,
    pub window_secs: f64,
    /// Seconds during which at least one extent was missing or being rebuilt.
    pub degraded_secs: f64,
}

/// The simulated state of one history.
#[derive(Clone)]
pub(crate) struct Engine<'m> {
    pub m: &'m Model,
    pub now: f64,
    pub end_secs: f64,
    pub rng: Rng,
    pub queue: Queue,
    pub disks: Vec<DiskState>,
    pub nodes: Vec<Outage>,
    pub zones: Vec<Outage>,
    /// Nodes lost for good whose disks are still being rebuilt.
    pub nodes_lost: IdSet<u32>,
    /// At most one job per disk; BTreeMap so that iteration order is deterministic.
    pub jobs: BTreeMap<u32, Job>,
    /// Corrupt extents by volume.
    pub lses: BTreeMap<u32, Vec<Lse>>,
    pub explicit: ExplicitQueue,
    pub lost: IdSet<u32>,
    pub next_id: u64,
    pub tally: Tally,
    pub losses: Vec<LossRecord>,
    loss_initiators: IdSet<u64>,
    /// Initiators created by natural events, drained by the importance sampler.
    pub initiators: Vec<Initiator>,
    /// Set when this history is an importance-sampling branch.
    pub branch: Option<Box<Branch>>,
    /// Repair rates must be recomputed before the next event.
    pub dirty: bool,
    /// Counts changes of degradation (failures, rebuilds, losses); the importance
    /// sampler re-plans its bias only when it moves.
    pub epoch: u64,
}

impl<'m> Engine<'m> {
    /// A fresh history: disks of random age in their service life, all processes started.
    pub fn new(m: &'m Model, seed: u64) -> Engine<'m> {
        let layout = &m.layout;
        let mut rng = Rng::new(seed);
        let life = m.lifetime.service_life_secs();
        let disks = (0..layout.disk_count())
            .map(|_| DiskState { failed: false, born_secs: -rng.uniform() * life, generation: 0 })
            .collect();
        let mut engine = Engine {
            m,
            now: 0.0,
            end_secs: m.horizon_secs,
            rng,
            queue: Queue::default(),
            disks,
            nodes: vec![Outage::default(); layout.nodes.len()],
            zones: vec![Outage::default(); layout.zones.len()],
            nodes_lost: IdSet::default(),
            jobs: BTreeMap::new(),
            lses: BTreeMap::new(),
            explicit: ExplicitQueue::default(),
            lost: IdSet::default(),
            next_id: 1,
            tally: Tally::default(),
            losses: Vec::new(),
            loss_initiators: IdSet::default(),
            initiators: Vec::new(),
            branch: None,
            dirty: false,
            epoch: 0,
        };
        for d in 0..layout.disk_count() as u32 {
            engine.schedule_life(d);
        }
        engine.schedule_lse();
        engine.schedule_node_outage();
        engine.schedule_node_loss();
        engine.schedule_zone_outage();
        engine
    }

    // ---- scheduling of the superposed Poisson processes ----

    pub(crate) fn schedule_life(&mut self, d: u32) {
        let state = self.disks[d as usize];
        let age = self.now - state.born_secs;
        let generation = state.generation;
        match self.m.lifetime.sample(age, &mut self.rng) {
            LifeEnd::Fails(dt) => self.queue.push(self.now + dt, Event::DiskFail { disk: d, generation }),
            LifeEnd::Retires(dt) => self.queue.push(self.now + dt, Event::DiskRetire { disk: d, generation }),
        }
    }

    fn schedule_lse(&mut self) {
        let rate = self.m.failures.lse_per_disk_per_sec * self.m.layout.disk_count() as f64;
        let dt = self.rng.exp_rate(rate);
        self.queue.push(self.now + dt, Event::LseArrival);
    }

    fn schedule_node_outage(&mut self) {
        let rate = self.m.failures.node_outage_per_sec * self.m.layout.nodes.len() as f64;
        let dt = self.rng.exp_rate(rate);
        self.queue.push(self.now + dt, Event::NodeOutage);
    }

    fn schedule_node_loss(&mut self) {
        let rate = self.m.failures.node_loss_per_sec * self.m.layout.nodes.len() as f64;
        let dt = self.rng.exp_rate(rate);
        self.queue.push(self.now + dt, Event::NodeLoss);
    }

    fn schedule_zone_outage(&mut self) {
        let rate = self.m.failures.zone_outage_per_sec * self.m.layout.zones.len() as f64;
        let dt = self.rng.exp_rate(rate);
        self.queue.push(self.now + dt, Event::ZoneOutage);
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ---- the event loop ----

    /// Processes the next event; false when the history has reached its end.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.queue.peek_time() else {
            self.advance_to(self.end_secs);
            return false;
        };
        if next > self.end_secs {
            self.advance_to(self.end_secs);
            return false;
        }
        let Some((time, event)) = self.queue.pop() else { return false };
        if let Event::Boost { generation } = event
            && !self.boost_current(generation)
        {
            // A boost superseded by a later plan: nothing happens at its time.
            return true;
        }
        self.advance_to(time);
        self.handle(event);
        if self.dirty {
            self.dirty = false;
            self.reschedule_repairs();
        }
        if self.branch.is_some() {
            self.after_branch_event();
        }
        true
    }

    /// Moves the clock, letting repairs progress and the likelihood ratio accrue.
    fn advance_to(&mut self, time: f64) {
        let dt = time - self.now;
        if dt <= 0.0 {
            return;
        }
        if !self.jobs.is_empty() || !self.lses.is_empty() {
            self.tally.degraded_secs += dt;
        }
        self.advance_jobs(time);
        if let Some(branch) = self.branch.as_mut() {
            branch.accrue(dt);
        }
        self.now = time;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::DiskFail { disk, generation } => {
                if self.disks[disk as usize].generation == generation && !self.disks[disk as usize].failed {
                    self.branch_natural_failure_weight(disk);
                    self.fail_disk(disk);
                }
            }
            Event::DiskRetire { disk, generation } => {
                let state = &mut self.disks[disk as usize];
                if state.generation == generation && !state.failed {
                    state.born_secs = self.now;
                    state.generation += 1;
                    self.tally.disk_retirements += 1;
                    self.schedule_life(disk);
                }
            }
            Event::Detect { disk, generation } => self.detect(disk, generation),
            Event::JobDone { disk, generation } => self.job_done(disk, generation),
            Event::ExplicitDone { generation } => self.explicit_done(generation),
            Event::LseArrival => {
                self.schedule_lse();
                self.lse_arrival();
            }
            Event::LseDetect { volume, id } => self.lse_detect(volume, id),
            Event::LseRepaired { volume, id } => self.lse_repaired(volume, id),
            Event::NodeOutage => {
                self.schedule_node_outage();
                let node = self.rng.below(self.m.layout.nodes.len() as u64) as u32;
                self.node_outage(node);
            }
            Event::NodeBack { node, generation } => self.node_back(node, generation),
            Event::NodeDownAfter { node, generation } => self.node_down_after(node, generation),
            Event::NodeLoss => {
                self.schedule_node_loss();
                let node = self.rng.below(self.m.layout.nodes.len() as u64) as u32;
                self.node_loss(node);
            }
            Event::ZoneOutage => {
                self.schedule_zone_outage();
                let zone = self.rng.below(self.m.layout.zones.len() as u64) as u32;
                self.zone_outage(zone);
            }
            Event::ZoneBack { zone, generation } => self.zone_back(zone, generation),
            Event::ZoneDownAfter { zone, generation } => self.zone_down_after(zone, generation),
            Event::Boost { generation } => self.boost_fires(generation),
        }
    }

    // ---- status of a volume ----

    /// Counts volume `v`'s missing, known and unreadable extents; `focus` asks whether
    /// the event with that id destroyed one of them.
    pub(crate) fn status(&self, v: u32, focus: Option<u64>) -> VolStatus {
        let layout = &self.m.layout;
        let mut st = VolStatus::default();
        let lses = self.lses.get(&v);
        for (slot, &d) in layout.slots(v).iter().enumerate() {
            let lse = lses.and_then(|list| list.iter().find(|l| usize::from(l.slot) == slot));
            if let Some(job) = self.jobs.get(&d) {
                if job.restored(v, layout.pos_of(v, slot)) {
                    continue;
                }
                if job.permanent {
                    st.missing += 1;
                    st.unreadable += 1;
                    if job.active {
                        st.known += 1;
                    } else {
                        st.undetected_until_secs = st.undetected_until_secs.max(job.detect_at_secs);
                    }
                    note_first(&mut st, job.failed_at_secs, job.id, focus);
                    continue;
                }
                // A transient job: the planner treats the extent as lost; the bytes are
                // only unavailable unless also corrupt.
                st.known += 1;
                st.unreadable += 1;
                if let Some(l) = lse {
                    st.missing += 1;
                    note_first(&mut st, l.at_secs, l.id, focus);
                }
                continue;
            }
            if let Some(l) = lse {
                st.missing += 1;
                st.unreadable += 1;
                if l.detected {
                    st.known += 1;
                }
                note_first(&mut st, l.at_secs, l.id, focus);
                continue;
            }
            if self.disk_unavailable(d) {
                st.unreadable += 1;
            }
        }
        st
    }

    /// The disk's node or zone is down.
    pub(crate) fn disk_unavailable(&self, d: u32) -> bool {
        let layout = &self.m.layout;
        self.nodes[layout.disk_node[d as usize] as usize].out
            || self.zones[layout.disk_zone[d as usize] as usize].out
    }

    /// Whether any node or zone is down.
    pub(crate) fn any_outage(&self) -> bool {
        self.nodes.iter().any(|n| n.out) || self.zones.iter().any(|z| z.out)
    }

    // ---- failures ----

    /// A disk's bytes are destroyed now.
    pub(crate) fn fail_disk(&mut self, d: u32) {
        self.epoch += 1;
        let id = self.new_id();
        self.tally.disk_failures += 1;
        self.destroy_disk(d, id, self.now + self.m.failures.disk_detect_secs);
        self.check_losses(&[d]);
        if self.branch.is_none() {
            self.initiators.push(Initiator { id, kind: InitiatorKind::Disk(d) });
        }
        self.dirty = true;
    }

    /// Marks disk `d` destroyed by event `id`; the master learns at `detect_at` (or at
    /// once if a transient rebuild of it is already running).
    fn destroy_disk(&mut self, d: u32, id: u64, detect_at: f64) {
        let state = &mut self.disks[d as usize];
        state.failed = true;
        state.generation += 1;
        // Corrupt extents on a dead disk are rebuilt with it: forget them.
        let on_disk: Vec<u32> = self
            .lses
            .iter()
            .filter(|(v, list)| list.iter().any(|l| self.m.layout.slots(**v)[usize::from(l.slot)] == d))
            .map(|(v, _)| *v)
            .collect();
        for v in on_disk {
            if let Some(list) = self.lses.get_mut(&v) {
                let slots = self.m.layout.slots(v);
                list.retain(|l| slots[usize::from(l.slot)] != d);
                if list.is_empty() {
                    self.lses.remove(&v);
                }
            }
        }
        let now = self.now;
        match self.jobs.get_mut(&d) {
            Some(job) => {
                // A rebuild of an unavailable disk is running: what it rebuilt is safe.
                job.permanent = true;
                job.id = id;
                job.failed_at_secs = now;
            }
            None => {
                let bytes = self.job_total_bytes(d);
                let mut job = Job::new(id, now, detect_at, bytes);
                if let crate::config::RepairModel::Exponential { mean_secs } = self.m.repair_model {
                    job.active = true;
                    job.detect_at_secs = now;
                    let done = now + self.rng.exp_rate(1.0 / mean_secs);
                    self.queue.push(done, Event::JobDone { disk: d, generation: job.generation });
                } else {
                    self.queue
                        .push(detect_at.max(now), Event::Detect { disk: d, generation: job.generation });
                }
                self.jobs.insert(d, job);
            }
        }
    }

    fn lse_arrival(&mut self) {
        self.epoch += 1;
        let layout = &self.m.layout;
        let d = self.rng.below(layout.disk_count() as u64) as u32;
        let list = layout.volumes_on(d);
        if self.disks[d as usize].failed || list.is_empty() {
            return;
        }
        let v = list[self.rng.below(list.len() as u64) as usize];
        if self.lost.contains(&v) {
            return;
        }
        let Some(slot) = layout.slots(v).iter().position(|&x| x == d) else { return };
        if self.lses.get(&v).is_some_and(|l| l.iter().any(|l| usize::from(l.slot) == slot)) {
            return;
        }
        if self.jobs.get(&d).is_some_and(|job| job.restored(v, layout.pos_of(v, slot))) {
            // The extent has already been rebuilt elsewhere.
            return;
        }
        let id = self.new_id();
        self.tally.lses += 1;
        let found = self.now + self.rng.uniform() * self.m.failures.scrub_interval_secs;
        let lse = Lse { slot: slot as u8, id, at_secs: self.now, detected: false, detect_at_secs: found };
        self.lses.entry(v).or_default().push(lse);
        self.queue.push(found, Event::LseDetect { volume: v, id });
        let st = self.status(v, None);
        if st.missing > self.m.layout.scheme_of(v).tolerance() {
            self.lose(v, st);
        } else if self.branch.is_some() {
            self.branch_consider_hot(v);
        }
        if self.branch.is_none() {
            self.initiators.push(Initiator { id, kind: InitiatorKind::Lse(v) });
        }
    }

    fn lse_detect(&mut self, v: u32, id: u64) {
        let Some(list) = self.lses.get_mut(&v) else { return };
        let Some(l) = list.iter_mut().find(|l| l.id == id) else { return };
        l.detected = true;
        if self.lost.contains(&v) {
            return;
        }
        if let crate::config::RepairModel::Exponential { mean_secs } = self.m.repair_model {
            let done = self.now + self.rng.exp_rate(1.0 / mean_secs);
            self.queue.push(done, Event::LseRepaired { volume: v, id });
            return;
        }
        self.extract(v);
        self.dirty = true;
    }

    fn lse_repaired(&mut self, v: u32, id: u64) {
        self.epoch += 1;
        if let Some(list) = self.lses.get_mut(&v) {
            let before = list.len();
            list.retain(|l| l.id != id);
            if list.len() < before {
                self.tally.repaired_bytes += self.m.layout.extent_bytes(v) as f64;
            }
            if list.is_empty() {
                self.lses.remove(&v);
            }
        }
    }

    // ---- nodes and zones ----

    fn node_outage(&mut self, node: u32) {
        if self.nodes[node as usize].out || self.nodes_lost.contains(&node) {
            return;
        }
        self.tally.node_outages += 1;
        let back = self.now + self.rng.exp_rate(1.0 / self.m.failures.node_outage_mean_secs);
        let o = &mut self.nodes[node as usize];
        o.out = true;
        o.since_secs = self.now;
        o.back_secs = back;
        o.generation += 1;
        let generation = o.generation;
        self.queue.push(back, Event::NodeBack { node, generation });
        self.queue
            .push(self.now + self.m.failures.down_after_secs, Event::NodeDownAfter { node, generation });
        let disks = self.m.layout.nodes[node as usize].disks.clone();
        self.outage_started(&disks);
    }

    fn node_back(&mut self, node: u32, generation: u32) {
        let o = &mut self.nodes[node as usize];
        if o.generation != generation || !o.out {
            return;
        }
        o.out = false;
        o.generation += 1;
        let disks = self.m.layout.nodes[node as usize].disks.clone();
        self.outage_ended(&disks);
    }

    fn node_down_after(&mut self, node: u32, generation: u32) {
        let o = self.nodes[node as usize];
        if o.generation != generation || !o.out {
            return;
        }
        let disks = self.m.layout.nodes[node as usize].disks.clone();
        self.start_transient_jobs(&disks);
    }

    fn node_loss(&mut self, node: u32) {
        self.epoch += 1;
        if self.nodes_lost.contains(&node) {
            return;
        }
        let disks: Vec<u32> = self.m.layout.nodes[node as usize]
            .disks
            .iter()
            .copied()
            .filter(|&d| !self.disks[d as usize].failed)
            .collect();
        if disks.is_empty() {
            return;
        }
        self.tally.node_losses += 1;
        let id = self.new_id();
        let o = self.nodes[node as usize];
        // A silent node is declared down `down_after` after it went silent.
        let silent_since = if o.out { o.since_secs } else { self.now };
        let detect_at = (silent_since + self.m.failures.down_after_secs).max(self.now);
        for &d in &disks {
            self.destroy_disk(d, id, detect_at);
        }
        let o = &mut self.nodes[node as usize];
        o.out = false;
        o.generation += 1;
        self.nodes_lost.insert(node);
        self.check_losses(&disks);
        if self.branch.is_none() {
            self.initiators.push(Initiator { id, kind: InitiatorKind::Node(node) });
        }
        self.dirty = true;
    }

    fn zone_outage(&mut self, zone: u32) {
        if self.zones[zone as usize].out {
            return;
        }
        self.tally.zone_outages += 1;
        let back = self.now + self.rng.exp_rate(1.0 / self.m.failures.zone_outage_mean_secs);
        let o = &mut self.zones[zone as usize];
        o.out = true;
        o.since_secs = self.now;
        o.back_secs = back;
        o.generation += 1;
        let generation = o.generation;
        self.queue.push(back, Event::ZoneBack { zone, generation });
        self.queue
            .push(self.now + self.m.failures.zone_down_after_secs, Event::ZoneDownAfter { zone, generation });
        let disks = self.zone_disks(zone);
        self.outage_started(&disks);
    }

    fn zone_back(&mut self, zone: u32, generation: u32) {
        let o = &mut self.zones[zone as usize];
        if o.generation != generation || !o.out {
            return;
        }
        o.out = false;
        o.generation += 1;
        let disks = self.zone_disks(zone);
        self.outage_ended(&disks);
    }

    fn zone_down_after(&mut self, zone: u32, generation: u32) {
        let o = self.zones[zone as usize];
        if o.generation != generation || !o.out {
            return;
        }
        // With per-zone limits that leave no room elsewhere (3 zones), placement cannot
        // take the zone's extents: the planner waits for the zone.
        if self.m.zone_rebuildable.get(zone as usize).copied().unwrap_or(false) {
            let disks = self.zone_disks(zone);
            self.start_transient_jobs(&disks);
        }
    }

    pub(crate) fn zone_disks(&self, zone: u32) -> Vec<u32> {
        let layout = &self.m.layout;
        layout.zones[zone as usize]
            .nodes
            .iter()
            .flat_map(|&n| layout.nodes[n as usize].disks.iter().copied())
            .collect()
    }

    // ---- losses ----

    /// Finds volumes that the destruction of `new_disks` (already marked) has lost, by
    /// intersecting their lists with every other source of missing extents.
    fn check_losses(&mut self, new_disks: &[u32]) {
        let candidates = self.overlap_candidates(new_disks, |job| job.permanent, false, false);
        for v in candidates {
            if self.lost.contains(&v) {
                continue;
            }
            let st = self.status(v, None);
            if st.missing > self.m.layout.scheme_of(v).tolerance() {
                self.lose(v, st);
            } else if self.branch.is_some() && st.missing >= 2 {
                self.branch_consider_hot(v);
            }
        }
    }

    /// Volumes on `new_disks` that also have an extent on another disk with a job
    /// accepted by `source`, or a corrupt extent (`lse_detected_only`: only found ones);
    /// every volume on them when some scheme tolerates no loss. Sorted, unique.
    pub(crate) fn overlap_candidates(
        &self,
        new_disks: &[u32],
        source: impl Fn(&Job) -> bool,
        lse_detected_only: bool,
        with_unavailable: bool,
    ) -> Vec<u32> {
        let layout = &self.m.layout;
        let mut out = Vec::new();
        let unavailable: Vec<u32> = if with_unavailable {
            let mut disks: Vec<u32> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, o)| o.out)
                .flat_map(|(n, _)| layout.nodes[n].disks.iter().copied())
                .chain(
                    self.zones
                        .iter()
                        .enumerate()
                        .filter(|(_, o)| o.out)
                        .flat_map(|(z, _)| self.zone_disks(z as u32)),
                )
                .filter(|d| !self.jobs.contains_key(d))
                .collect();
            disks.sort_unstable();
            disks.dedup();
            disks
        } else {
            Vec::new()
        };
        for &d in new_disks {
            let list = layout.volumes_on(d);
            if self.m.tolerance_min == 0 {
                out.extend_from_slice(list);
                continue;
            }
            for (&e, job) in &self.jobs {
                if e == d || !source(job) || job.done {
                    continue;
                }
                intersect_into(list, layout.volumes_on(e), &mut out);
            }
            for &e in &unavailable {
                if e != d {
                    intersect_into(list, layout.volumes_on(e), &mut out);
                }
            }
            for (&v, entries) in &self.lses {
                if entries.iter().any(|l| l.detected || !lse_detected_only) && list.binary_search(&v).is_ok()
                {
                    out.push(v);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Records volume `v` as lost.
    pub(crate) fn lose(&mut self, v: u32, st: VolStatus) {
        if !self.lost.insert(v) {
            return;
        }
        self.epoch += 1;
        self.explicit.remove(v);
        // Nothing of it will be rebuilt: its extents stop holding up their rebuilds.
        self.lses.remove(&v);
        self.settle_lost_volume(v);
        let initiator = st.first.map(|(_, id)| id).unwrap_or(0);
        let first_of_initiator = self.loss_initiators.insert(initiator);
        let weight = self.branch.as_ref().map(|b| b.weight()).unwrap_or(1.0);
        self.losses.push(LossRecord {
            initiator,
            bytes: self.m.layout.volume_bytes[v as usize],
            weight,
            first_of_initiator,
        });
        if let Some(branch) = self.branch.as_mut() {
            branch.on_loss(initiator);
        }
    }
}

fn note_first(st: &mut VolStatus, at: f64, id: u64, focus: Option<u64>) {
    if focus == Some(id) {
        st.focus_hit = true;
    }
    match st.first {
        Some((t, i)) if (t, i) <= (at, id) => {}
        _ => st.first = Some((at, id)),
    }
}

/// Appends the common elements of two ascending lists.
pub(crate) fn intersect_into(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_of_sorted_lists() {
        let mut out = vec![];
        intersect_into(&[1, 3, 5, 7, 9], &[2, 3, 4, 9, 10], &mut out);
        assert_eq!(out, vec![3, 9]);
    }
}
