//! Many independent histories over scoped threads, and what each one contributes.
//!
//! Run i is seeded with `derive_seed(seed, i)` and branches of run i with seeds derived
//! from that and the initiating event, so the numbers depend on the seed only, never on
//! the number of threads or on which thread ran what.

use std::collections::HashSet;
use std::io::Write as _;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::{Method, Simulation};
use crate::engine::importance::peers_of;
use crate::engine::{Engine, Tally};
use crate::model::Model;
use crate::rng::derive_seed;

pub use crate::config::THREADS_MAX;

/// Progress lines are printed at most this often, and only for runs longer than it.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// What one history contributes to the estimates.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Estimated loss incidents (initiators that lost at least one volume) in the history.
    pub incidents: f64,
    /// Estimated volumes lost.
    pub volumes_lost: f64,
    /// Estimated logical bytes lost.
    pub bytes_lost: f64,
    /// Incidents seen plainly in the main history.
    pub plain_incidents: u64,
    /// Volumes lost plainly in the main history.
    pub plain_volumes_lost: u64,
    /// Bytes lost plainly in the main history.
    pub plain_bytes_lost: u64,
    /// Counters of the main history.
    pub(crate) tally: Tally,
    /// Importance-sampling branches run.
    pub branches: u64,
    /// Branches cut off before their initiator healed.
    pub branches_truncated: u64,
    /// Events processed in branches.
    pub branch_events: u64,
}

/// Simulates `sim.runs` histories of `model` on `threads` threads; results in run order.
pub fn run_all(model: &Model, sim: &Simulation, threads: usize, progress: bool) -> Vec<RunResult> {
    let runs = sim.runs as usize;
    let threads = threads.clamp(1, THREADS_MAX).min(runs.max(1));
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<Option<RunResult>>> = Mutex::new(vec![None; runs]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= sim.runs {
                        break;
                    }
                    let result = run_one(model, sim, i);
                    if let Ok(mut all) = results.lock()
                        && let Some(slot) = all.get_mut(i as usize)
                    {
                        *slot = Some(result);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        if progress {
            let mut last = Instant::now();
            while done.load(Ordering::Relaxed) < sim.runs {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= PROGRESS_INTERVAL && started.elapsed() >= PROGRESS_INTERVAL {
                    last = Instant::now();
                    let finished = done.load(Ordering::Relaxed);
                    let elapsed = started.elapsed().as_secs_f64();
                    let left = if finished > 0 {
                        format!("~{:.0} s left", elapsed / finished as f64 * (sim.runs - finished) as f64)
                    } else {
                        "first runs in progress".to_string()
                    };
                    let _ = writeln!(
                        std::io::stderr(),
                        "sim: {finished}/{} runs, {elapsed:.0} s elapsed, {left}",
                        sim.runs
                    );
                }
            }
        }
    });
    let all = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    all.into_iter().map(Option::unwrap_or_default).collect()
}

/// One history, plain or with branches.
pub fn run_one(model: &Model, sim: &Simulation, index: u64) -> RunResult {
    let seed = derive_seed(sim.seed, index);
    let mut main = Engine::new(model, seed);
    let mut result = RunResult::default();
    let importance = sim.method == Method::Importance;
    let mut immediate_initiators: HashSet<u64> = HashSet::new();
    while main.step() {
        if main.initiators.is_empty() {
            continue;
        }
        let initiators = std::mem::take(&mut main.initiators);
        if !importance {
            continue;
        }
        for init in initiators {
            // Losses at the very instant of the initiator (no redundancy left to lose).
            for loss in main.losses.iter().filter(|l| l.initiator == init.id) {
                if loss.first_of_initiator {
                    result.incidents += 1.0;
                    immediate_initiators.insert(init.id);
                }
                result.volumes_lost += 1.0;
                result.bytes_lost += loss.bytes as f64;
            }
            let peers = Rc::new(peers_of(&main, &init));
            let mut incidents = 0.0;
            let mut volumes = 0.0;
            let mut bytes = 0.0;
            for b in 0..sim.branches {
                let mut branch = main.clone();
                let losses_before = branch.losses.len();
                let branch_seed = derive_seed(seed ^ init.id.rotate_left(17), u64::from(b));
                branch.start_branch(init, Rc::clone(&peers), branch_seed, sim.bias, sim.branch_max_secs);
                while branch.step() {}
                result.branches += 1;
                if branch.initiator_open() && branch.now < model.horizon_secs {
                    result.branches_truncated += 1;
                }
                result.branch_events += branch.branch.as_ref().map(|b| b.events).unwrap_or(0);
                for loss in branch.losses.get(losses_before..).unwrap_or(&[]) {
                    if loss.initiator != init.id {
                        continue;
                    }
                    if loss.first_of_initiator {
                        incidents += loss.weight;
                    }
                    volumes += loss.weight;
                    bytes += loss.weight * loss.bytes as f64;
                }
            }
            let branches = f64::from(sim.branches);
            result.incidents += incidents / branches;
            result.volumes_lost += volumes / branches;
            result.bytes_lost += bytes / branches;
        }
    }
    let mut initiators_with_loss = HashSet::new();
    for loss in &main.losses {
        initiators_with_loss.insert(loss.initiator);
        result.plain_volumes_lost += 1;
        result.plain_bytes_lost += loss.bytes;
    }
    result.plain_incidents = initiators_with_loss.len() as u64;
    if !importance {
        result.incidents = result.plain_incidents as f64;
        result.volumes_lost = result.plain_volumes_lost as f64;
        result.bytes_lost = result.plain_bytes_lost as f64;
    }
    result.tally = main.tally;
    result
}
