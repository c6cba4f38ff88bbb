//! The classic Markov model of durability, for comparison with the simulation.
//!
//! A birth-death chain over the number i of concurrently failed disks, 0..=m for a scheme
//! that tolerates m losses: failures at rate (N - i) * lambda, repairs at rate i * mu
//! (every failed disk rebuilt independently in mean time 1 / mu), and from state m a
//! further failure loses data with probability q, the chance that the m + 1 failed disks
//! hold m + 1 extents of a common volume. Assumptions it needs and the simulation does not
//! make: independent exponential failures (no node losses, zone outages, latent errors,
//! Weibull ages), exponential repair times, no detection-delay structure, no
//! most-at-risk-first priority, and volumes placed uniformly at random for q.
//!
//! When those assumptions hold exactly (the `exponential` repair model, disk failures
//! only, one group of n disks holding the volume), the chain is exact: that is what the
//! validation tests compare the simulator with, using the transient probability of
//! absorption within the horizon (matrix exponential) rather than 1 / MTTDL.

use serde::Serialize;

use crate::config::{RepairModel, SECS_PER_YEAR};
use crate::model::Model;

/// A birth-death chain on 0..=m failed disks with absorption (data loss) above m.
#[derive(Clone, Debug, PartialEq)]
pub struct Chain {
    /// Failure rate out of state i (per second), i in 0..=m.
    pub fail_per_sec: Vec<f64>,
    /// Repair rate out of state i (per second); index 0 is unused.
    pub repair_per_sec: Vec<f64>,
    /// Probability that a failure out of state m loses data (otherwise it is harmless).
    pub loss_probability: f64,
}

impl Chain {
    /// The textbook chain: `disks` disks failing at `lambda`, each failed one repaired at
    /// `mu`, data lost at `tolerance + 1` failures with probability `loss_probability`.
    pub fn disks(
        disks: usize,
        tolerance: usize,
        lambda_per_sec: f64,
        mu_per_sec: f64,
        loss_probability: f64,
    ) -> Chain {
        let states = tolerance + 1;
        Chain {
            fail_per_sec: (0..states).map(|i| disks.saturating_sub(i) as f64 * lambda_per_sec).collect(),
            repair_per_sec: (0..states).map(|i| i as f64 * mu_per_sec).collect(),
            loss_probability,
        }
    }

    fn absorbing_rate(&self, i: usize) -> f64 {
        if i + 1 == self.fail_per_sec.len() { self.fail_per_sec[i] * self.loss_probability } else { 0.0 }
    }

    /// Mean time to data loss from the all-healthy state, in seconds (Thomas algorithm on
    /// the first-passage equations; the matrix is an M-matrix, so it is stable).
    pub fn mttdl_secs(&self) -> f64 {
        let n = self.fail_per_sec.len();
        // (up_i + down_i) T_i - up_i T_{i+1} - down_i T_{i-1} = 1, with up_m the
        // absorbing rate and no T_{m+1} term.
        let mut c_prime = vec![0.0; n];
        let mut d_prime = vec![0.0; n];
        for i in 0..n {
            let up = if i + 1 < n { self.fail_per_sec[i] } else { self.absorbing_rate(i) };
            let down = if i > 0 { self.repair_per_sec[i] } else { 0.0 };
            let diag = up + down;
            let lower = -down;
            let upper = if i + 1 < n { -up } else { 0.0 };
            let denom = diag - if i > 0 { lower * c_prime[i - 1] } else { 0.0 };
            if denom <= 0.0 {
                return f64::INFINITY;
            }
            c_prime[i] = upper / denom;
            d_prime[i] = (1.0 - if i > 0 { lower * d_prime[i - 1] } else { 0.0 }) / denom;
        }
        let mut t = vec![0.0; n];
        for i in (0..n).rev() {
            t[i] = d_prime[i] - if i + 1 < n { c_prime[i] * t[i + 1] } else { 0.0 };
        }
        t[0]
    }

    /// Probability of data loss within `horizon_secs`, from the all-healthy state.
    pub fn loss_probability_within(&self, horizon_secs: f64) -> f64 {
        let n = self.fail_per_sec.len();
        let size = n + 1;
        let mut q = vec![vec![0.0; size]; size];
        for i in 0..n {
            let up = if i + 1 < n { self.fail_per_sec[i] } else { 0.0 };
            let down = if i > 0 { self.repair_per_sec[i] } else { 0.0 };
            let absorb = self.absorbing_rate(i);
            if i + 1 < n {
                q[i][i + 1] = up;
            }
            if i > 0 {
                q[i][i - 1] = down;
            }
            q[i][n] = absorb;
            q[i][i] = -(up + down + absorb);
        }
        let p = expm(&q, horizon_secs);
        p[0][n].clamp(0.0, 1.0)
    }
}

/// exp(Q t) by scaling and squaring with a Taylor series.
fn expm(q: &[Vec<f64>], t: f64) -> Vec<Vec<f64>> {
    let n = q.len();
    let norm = q.iter().map(|row| row.iter().map(|x| x.abs()).sum::<f64>()).fold(0.0, f64::max) * t;
    let squarings = if norm > 0.25 { (norm / 0.25).log2().ceil() as i32 } else { 0 };
    let scale = t / 2f64.powi(squarings);
    let a: Vec<Vec<f64>> = q.iter().map(|row| row.iter().map(|x| x * scale).collect()).collect();
    let mut result = identity(n);
    let mut term = identity(n);
    for k in 1..=24 {
        term = matmul(&term, &a);
        for row in term.iter_mut() {
            for x in row.iter_mut() {
                *x /= f64::from(k);
            }
        }
        for (r, t) in result.iter_mut().zip(&term) {
            for (x, y) in r.iter_mut().zip(t) {
                *x += y;
            }
        }
    }
    for _ in 0..squarings {
        result = matmul(&result, &result);
    }
    result
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect()
}

fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut out = vec![vec![0.0; n]; n];
    for i in 0..n {
        for k in 0..n {
            let x = a[i][k];
            if x == 0.0 {
                continue;
            }
            for j in 0..n {
                out[i][j] += x * b[k][j];
            }
        }
    }
    out
}

/// Probability that m + 1 specific disks out of `disks` all hold extents of at least one
/// of `volumes` volumes of `extents` extents each, placed uniformly at random.
pub fn shared_volume_probability(disks: usize, extents: usize, tolerance: usize, volumes: usize) -> f64 {
    let k = tolerance + 1;
    if extents < k || disks < k {
        return 0.0;
    }
    // C(extents, k) / C(disks, k), as a product to stay in range.
    let mut per_volume = 1.0;
    for i in 0..k {
        per_volume *= (extents - i) as f64 / (disks - i) as f64;
    }
    // 1 - (1 - p)^V without cancellation for tiny p.
    -((volumes as f64) * (-per_volume).ln_1p()).exp_m1()
}

/// The classic model's answer for a cluster.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analytic {
    /// Mean time to data loss, in years.
    pub mttdl_years: f64,
    /// Probability of losing data within a year, `1 - exp(-1 / MTTDL)`.
    pub loss_probability_per_year: f64,
    /// Durability in nines.
    pub nines: f64,
    /// Mean time to repair a failed disk used by the model, in seconds.
    pub mttr_secs: f64,
}

/// The classic model for `model`'s cluster: per scheme in use, the chain over all disks
/// with q from uniform placement; loss rates add over schemes. MTTR is the detection
/// delay plus a mean disk's bytes at the cluster's whole repair throughput (bandwidth
/// model), or the configured mean (exponential model).
pub fn analyze(model: &Model) -> Analytic {
    let layout = &model.layout;
    let disks = layout.disk_count();
    let lambda = model.failures.disk_rate_per_sec();
    let mttr_secs = match model.repair_model {
        RepairModel::Exponential { mean_secs } => mean_secs,
        RepairModel::Bandwidth => {
            let mean_disk_bytes = layout.stored_bytes() as f64 / disks.max(1) as f64;
            model.failures.disk_detect_secs + mean_disk_bytes / model.repair_rate.bytes_per_sec
        }
    };
    let mu = 1.0 / mttr_secs;
    let mut loss_rate_per_sec = 0.0;
    for (index, info) in layout.schemes.iter().enumerate() {
        let volumes = layout.volume_scheme.iter().filter(|&&s| usize::from(s) == index).count();
        let tolerance = usize::from(info.tolerance());
        let q = shared_volume_probability(disks, usize::from(info.extents), tolerance, volumes);
        let chain = Chain::disks(disks, tolerance, lambda, mu, q);
        let mttdl = chain.mttdl_secs();
        if mttdl.is_finite() && mttdl > 0.0 {
            loss_rate_per_sec += 1.0 / mttdl;
        }
    }
    let mttdl_years =
        if loss_rate_per_sec > 0.0 { 1.0 / loss_rate_per_sec / SECS_PER_YEAR } else { f64::INFINITY };
    let p = -(-(loss_rate_per_sec * SECS_PER_YEAR)).exp_m1();
    Analytic { mttdl_years, loss_probability_per_year: p, nines: crate::stats::nines(p), mttr_secs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_pair_mttdl_matches_the_closed_form() {
        // Two disks, one tolerated loss: MTTDL = (3 lambda + mu) / (2 lambda^2).
        let (l, m) = (1e-6, 1e-3);
        let chain = Chain::disks(2, 1, l, m, 1.0);
        let closed = (3.0 * l + m) / (2.0 * l * l);
        assert!((chain.mttdl_secs() - closed).abs() / closed < 1e-9, "{} vs {closed}", chain.mttdl_secs());
    }

    #[test]
    fn transient_loss_probability_approaches_horizon_over_mttdl_when_rare() {
        let chain = Chain::disks(3, 2, 1e-8, 1e-4, 1.0);
        let t = SECS_PER_YEAR;
        let p = chain.loss_probability_within(t);
        let approx = t / chain.mttdl_secs();
        assert!((p - approx).abs() / approx < 0.01, "{p} vs {approx}");
        // A single disk with no redundancy: 1 - exp(-lambda t).
        let single = Chain::disks(1, 0, 1e-8, 1.0, 1.0);
        let exact = -(-1e-8 * t).exp_m1();
        assert!((single.loss_probability_within(t) - exact).abs() / exact < 1e-9);
    }

    #[test]
    fn shared_volume_probability_is_certain_for_one_group_and_small_for_sparse_ones() {
        assert!((shared_volume_probability(9, 9, 3, 1) - 1.0).abs() < 1e-12);
        let p = shared_volume_probability(360, 3, 2, 1);
        assert!((p - 6.0 / (360.0 * 359.0 * 358.0)).abs() / p < 1e-9);
    }
}
