//! Rare events: importance sampling by failure biasing, in branches from every event
//! that destroys data.
//!
//! The estimate. Every lost volume has exactly one *initiator*: the earliest event that
//! destroyed one of its still-missing extents (see [`crate::engine`]). So the expected
//! number of losses over a history is the sum, over initiating events e (disk failures,
//! node losses, latent sector errors), of the expected number of losses initiated by e.
//! The main history is simulated plainly. At every initiating event it spawns B
//! *branches*: copies of the whole state at that instant, each continued until e's
//! extents are all rebuilt (or lost). A branch counts only losses initiated by e, and
//! stops mattering once e is healed, so it is short: hours, or a scrub interval. The
//! mean over the branches of (likelihood ratio x losses) estimates the conditional
//! expectation given the state at e, and the sum over e is an unbiased estimate of the
//! losses of the history (tower property). Losses at the instant of e itself (a scheme
//! with no redundancy) are counted in the main history with weight 1.
//!
//! The bias. Inside a branch, disks get an extra failure process on top of their natural
//! hazard h_i: rate b_i(t), chosen from the state (any predictable choice keeps the
//! estimate unbiased). While some volume with an extent destroyed by e is degraded, the
//! boost targets the disks holding the other extents of the most-degraded such volumes,
//! in proportion to how many of them each holds, with total rate `bias / delta`, where
//! delta is the expected time until those volumes are rebuilt: with `bias = 1` each step
//! has a 63 % chance of one more failure before the repair wins. Before any second extent
//! is hit, targets are the disks sharing volumes with e. After the first loss of e the
//! boost stops. Lifetimes of all disks are redrawn at branch start (memoryless for the
//! exponential, the conditional residual life for Weibull), because a pre-drawn failure
//! time would make the natural process deterministic and the likelihood ratio undefined.
//!
//! The likelihood ratio of a branch path is
//! `prod over failures of h_i / (h_i + b_i) * exp(integral of sum_i b_i dt)`,
//! the ratio of the natural and the biased densities of the disk failure processes;
//! every other process is unbiased and cancels.
//!
//! Estimates are per history; histories are independent, so their mean and standard error
//! give a 95 % interval by the central limit theorem. Likelihood ratios are heavy-tailed
//! when the bias is badly tuned: the report shows the relative error so that a run whose
//! interval is not trustworthy can be seen as such.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::config::RepairModel;
use crate::engine::{Engine, Initiator, InitiatorKind};
use crate::events::Event;

/// Shortest and longest time-to-repair used to size the bias.
const DELTA_MIN_SECS: f64 = 60.0;

/// Most volumes a branch tracks as degraded by its initiator beyond the first stage.
const HOT_VOLUMES_MAX: usize = 100_000;

/// Importance-sampling state of one branch.
#[derive(Clone, Debug)]
pub(crate) struct Branch {
    /// The initiating event whose losses this branch counts.
    pub initiator: u64,
    /// What it destroyed.
    pub kind: InitiatorKind,
    /// Log of the likelihood ratio so far.
    log_weight: f64,
    /// Total boost rate now (per second).
    boost_rate: f64,
    /// Boost rate per target disk, sorted by disk.
    targets: Vec<(u32, f64)>,
    boost_generation: u32,
    /// Boosting stops after the first loss.
    boosting: bool,
    /// Volumes with two or more missing extents, one of them destroyed by the initiator.
    hot: BTreeSet<u32>,
    /// Disks sharing volumes with the initiator, and how many (first-stage targets).
    peers: Rc<Vec<(u32, u32)>>,
    /// Bias strength.
    bias: f64,
    /// Time the branch is cut off.
    pub cutoff_secs: f64,
    /// Events processed.
    pub events: u64,
    /// Engine epoch the current plan was made at.
    planned_epoch: u64,
    /// Boosted failures still allowed: a loss needs at most (tolerance) more failures
    /// after the initiator, so more boosts only waste work on paths of negligible weight.
    boosts_left: u32,
}

impl Branch {
    /// Adds the continuous part of the likelihood ratio over `dt` seconds.
    pub fn accrue(&mut self, dt: f64) {
        self.log_weight += self.boost_rate * dt;
        self.events += 1;
    }

    /// The likelihood ratio so far.
    pub fn weight(&self) -> f64 {
        self.log_weight.exp()
    }

    /// A volume was lost; after the branch's own first loss, stop biasing.
    pub fn on_loss(&mut self, initiator: u64) {
        if initiator == self.initiator {
            self.boosting = false;
        }
    }
}

/// Disks sharing volumes with what `init` destroyed, with the number shared.
pub(crate) fn peers_of(engine: &Engine<'_>, init: &Initiator) -> Vec<(u32, u32)> {
    let layout = &engine.m.layout;
    let own: Vec<u32> = match init.kind {
        InitiatorKind::Disk(d) => vec![d],
        InitiatorKind::Node(n) => layout.nodes[n as usize].disks.clone(),
        InitiatorKind::Lse(_) => return Vec::new(),
    };
    let mut counts = vec![0u32; layout.disk_count()];
    for &d in &own {
        for &v in layout.volumes_on(d) {
            for &p in layout.slots(v) {
                counts[p as usize] += 1;
            }
        }
    }
    counts
        .into_iter()
        .enumerate()
        .filter(|&(d, c)| c > 0 && !own.contains(&(d as u32)))
        .map(|(d, c)| (d as u32, c))
        .collect()
}

impl Engine<'_> {
    /// Turns this copy of a history into a branch from `init`.
    pub(crate) fn start_branch(
        &mut self,
        init: Initiator,
        peers: Rc<Vec<(u32, u32)>>,
        seed: u64,
        bias: f64,
        max_secs: f64,
    ) {
        self.rng = crate::rng::Rng::new(seed);
        self.queue.drop_disk_lifetimes();
        for d in 0..self.disks.len() as u32 {
            if !self.disks[d as usize].failed {
                self.disks[d as usize].generation += 1;
                self.schedule_life(d);
            }
        }
        self.end_secs = self.end_secs.min(self.now + max_secs);
        let mut hot = BTreeSet::new();
        match init.kind {
            InitiatorKind::Lse(v) => {
                hot.insert(v);
            }
            InitiatorKind::Disk(d) => self.collect_hot(&[d], init.id, &mut hot),
            InitiatorKind::Node(n) => {
                let disks = self.m.layout.nodes[n as usize].disks.clone();
                self.collect_hot(&disks, init.id, &mut hot);
            }
        }
        self.branch = Some(Box::new(Branch {
            initiator: init.id,
            kind: init.kind,
            log_weight: 0.0,
            boost_rate: 0.0,
            targets: Vec::new(),
            boost_generation: 0,
            boosting: true,
            hot,
            peers,
            bias,
            cutoff_secs: self.end_secs,
            events: 0,
            planned_epoch: u64::MAX,
            boosts_left: u32::from(self.m.layout.schemes.iter().map(|s| s.tolerance()).max().unwrap_or(0))
                + 1,
        }));
        self.after_branch_event();
    }

    fn collect_hot(&self, disks: &[u32], id: u64, hot: &mut BTreeSet<u32>) {
        for v in self.overlap_candidates(disks, |job| job.permanent, false, false) {
            if hot.len() >= HOT_VOLUMES_MAX {
                break;
            }
            let st = self.status(v, Some(id));
            if st.focus_hit && st.missing >= 2 && !self.lost.contains(&v) {
                hot.insert(v);
            }
        }
    }

    /// Whether the initiator still has a missing extent (the branch still matters).
    pub(crate) fn initiator_open(&self) -> bool {
        let Some(branch) = self.branch.as_ref() else { return false };
        let id = branch.initiator;
        match branch.kind {
            InitiatorKind::Lse(v) => self.lses.get(&v).is_some_and(|l| l.iter().any(|l| l.id == id)),
            InitiatorKind::Disk(_) | InitiatorKind::Node(_) => {
                self.jobs.values().any(|j| j.permanent && j.id == id)
            }
        }
    }

    /// A volume gained a missing extent in a branch: track it if the initiator hit it.
    pub(crate) fn branch_consider_hot(&mut self, v: u32) {
        let Some(id) = self.branch.as_ref().map(|b| b.initiator) else { return };
        let st = self.status(v, Some(id));
        if st.focus_hit
            && let Some(branch) = self.branch.as_mut()
            && branch.hot.len() < HOT_VOLUMES_MAX
        {
            branch.hot.insert(v);
        }
    }

    /// Likelihood-ratio factor of a disk failure while boosted: h / (h + b).
    fn failure_factor(&mut self, d: u32) {
        let age = self.now - self.disks[d as usize].born_secs;
        let h = self.m.lifetime.hazard_per_sec(age);
        if let Some(branch) = self.branch.as_mut() {
            let b = match branch.targets.binary_search_by_key(&d, |&(x, _)| x) {
                Ok(i) => branch.targets[i].1,
                Err(_) => 0.0,
            };
            if b > 0.0 {
                branch.log_weight += if h > 0.0 { (h / (h + b)).ln() } else { f64::NEG_INFINITY };
            }
        }
    }

    /// A natural disk failure inside a branch.
    pub(crate) fn branch_natural_failure_weight(&mut self, d: u32) {
        if self.branch.is_some() {
            self.failure_factor(d);
        }
    }

    /// Whether a boost event of this generation is the current plan's.
    pub(crate) fn boost_current(&self, generation: u32) -> bool {
        self.branch.as_ref().is_some_and(|b| b.boost_generation == generation && b.boost_rate > 0.0)
    }

    /// The boost process fired: one target disk fails now.
    pub(crate) fn boost_fires(&mut self, generation: u32) {
        let Some(branch) = self.branch.as_ref() else { return };
        if branch.boost_generation != generation || branch.boost_rate <= 0.0 {
            return;
        }
        let total: f64 = branch.targets.iter().map(|&(_, b)| b).sum();
        let mut point = self.rng.uniform() * total;
        let mut chosen = None;
        for &(d, b) in &branch.targets {
            chosen = Some(d);
            if point < b {
                break;
            }
            point -= b;
        }
        let Some(d) = chosen else { return };
        if self.disks[d as usize].failed {
            return;
        }
        self.failure_factor(d);
        if let Some(branch) = self.branch.as_mut() {
            branch.boosts_left = branch.boosts_left.saturating_sub(1);
        }
        self.fail_disk(d);
        if self.dirty {
            self.dirty = false;
            self.reschedule_repairs();
        }
    }

    /// After every branch event: end the branch when its initiator is healed, else
    /// re-aim the boost at the current state.
    pub(crate) fn after_branch_event(&mut self) {
        if !self.initiator_open() {
            self.end_secs = self.now;
            return;
        }
        // The bias is set when the degradation changes and then held: re-aiming it as
        // the remaining repair time shrinks would make its rate diverge.
        if self.branch.as_ref().is_some_and(|b| b.planned_epoch == self.epoch) {
            return;
        }
        let plan = self.boost_plan();
        let epoch = self.epoch;
        let Some(branch) = self.branch.as_mut() else { return };
        branch.planned_epoch = epoch;
        branch.boost_generation += 1;
        let generation = branch.boost_generation;
        match plan {
            Some((targets, delta_secs)) if branch.boosting && branch.boosts_left > 0 => {
                let weight_total: f64 = targets.iter().map(|&(_, w)| w).sum();
                let rate = branch.bias / delta_secs;
                branch.targets = targets.into_iter().map(|(d, w)| (d, rate * w / weight_total)).collect();
                branch.boost_rate = rate;
                let dt = self.rng.exp_rate(rate);
                self.queue.push(self.now + dt, Event::Boost { generation });
            }
            _ => {
                branch.targets.clear();
                branch.boost_rate = 0.0;
            }
        }
    }

    /// Boost targets (disk, relative weight) and the expected time until the degradation
    /// they would deepen is repaired; None when there is nothing worth boosting.
    fn boost_plan(&mut self) -> Option<(Vec<(u32, f64)>, f64)> {
        let branch = self.branch.as_ref()?;
        if !branch.boosting {
            return None;
        }
        let id = branch.initiator;
        let kind = branch.kind;
        let hot: Vec<u32> = branch.hot.iter().copied().collect();
        let cutoff = branch.cutoff_secs;
        let mut keep = Vec::new();
        let mut worst = 0u8;
        let mut states = Vec::new();
        for v in hot {
            if self.lost.contains(&v) {
                continue;
            }
            let st = self.status(v, Some(id));
            if !st.focus_hit || st.missing == 0 {
                continue;
            }
            keep.push(v);
            worst = worst.max(st.missing);
            states.push((v, st));
        }
        if let Some(branch) = self.branch.as_mut() {
            branch.hot = keep.into_iter().collect();
        }
        let layout = &self.m.layout;
        let rate = self.repair_bytes_per_sec();
        let exponential_mean = match self.m.repair_model {
            RepairModel::Exponential { mean_secs } => Some(mean_secs),
            RepairModel::Bandwidth => None,
        };
        let outage_wait = if self.explicit.has_blocked() {
            let latest = self
                .nodes
                .iter()
                .chain(self.zones.iter())
                .filter(|o| o.out)
                .map(|o| o.back_secs)
                .fold(self.now, f64::max);
            latest - self.now
        } else {
            0.0
        };
        let (targets, delta) = if worst >= 2 || (worst >= 1 && matches!(kind, InitiatorKind::Lse(_))) {
            let mut counts: BTreeMap<u32, f64> = BTreeMap::new();
            let mut delta: f64 = 0.0;
            for (v, st) in &states {
                if st.missing != worst {
                    continue;
                }
                let lses = self.lses.get(v);
                for (slot, &d) in layout.slots(*v).iter().enumerate() {
                    let corrupt = lses.is_some_and(|l| l.iter().any(|l| usize::from(l.slot) == slot));
                    if !self.disks[d as usize].failed && !corrupt {
                        *counts.entry(d).or_insert(0.0) += 1.0;
                    }
                }
                let wait = match exponential_mean {
                    Some(mean) => mean / f64::from(st.missing),
                    None => {
                        let bytes = f64::from(st.missing) * layout.extent_bytes(*v) as f64;
                        let queued = (self.explicit.len() as f64 + 1.0) * bytes / rate;
                        let lse_wait = self
                            .lses
                            .get(v)
                            .map(|l| {
                                l.iter().filter(|l| !l.detected).map(|l| l.detect_at_secs).fold(0.0, f64::max)
                            })
                            .unwrap_or(0.0);
                        let detect = st.undetected_until_secs.max(lse_wait) - self.now;
                        detect.max(0.0) + queued + outage_wait
                    }
                };
                delta = delta.max(wait);
            }
            (counts.into_iter().collect::<Vec<_>>(), delta)
        } else {
            let (InitiatorKind::Disk(_) | InitiatorKind::Node(_)) = kind else { return None };
            let peers = self.branch.as_ref().map(|b| Rc::clone(&b.peers))?;
            let targets: Vec<(u32, f64)> = peers
                .iter()
                .filter(|(d, _)| !self.disks[*d as usize].failed)
                .map(|&(d, c)| (d, f64::from(c)))
                .collect();
            let delta = match exponential_mean {
                Some(mean) => mean,
                None => {
                    let running = self.jobs.values().filter(|j| j.active && !j.bulk_done).count() as f64;
                    self.jobs
                        .values()
                        .filter(|j| j.permanent && j.id == id)
                        .map(|j| {
                            let share = rate / (running + if j.active { 0.0 } else { 1.0 }).max(1.0);
                            (j.detect_at_secs - self.now).max(0.0) + j.remaining_bytes.max(0.0) / share
                        })
                        .fold(0.0, f64::max)
                        + outage_wait
                }
            };
            (targets, delta)
        };
        if targets.is_empty() {
            return None;
        }
        let delta = delta.clamp(DELTA_MIN_SECS, (cutoff - self.now).max(DELTA_MIN_SECS));
        Some((targets, delta))
    }
}
