//! Disk lifetimes: a Weibull hazard (exponential when the shape is 1) and retirement at
//! the end of the service life.
//!
//! The scale is chosen so that the cumulative hazard over one service life equals the
//! constant-rate equivalent of the AFR times that life: every shape gives the same
//! expected number of failures per disk slot over a service life, and differs in when
//! they happen (shape < 1: early, infant mortality; shape > 1: late, wear-out).

use crate::config::Failures;
use crate::rng::Rng;

/// What ends a disk's current life.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LifeEnd {
    /// It fails after this many seconds.
    Fails(f64),
    /// It reaches its service life after this many seconds and is retired.
    Retires(f64),
}

/// The lifetime distribution of every disk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    shape: f64,
    scale_secs: f64,
    service_life_secs: f64,
}

impl Lifetime {
    /// From validated failure parameters.
    pub fn new(failures: &Failures) -> Self {
        let rate = failures.disk_rate_per_sec();
        let life = failures.disk_service_life_secs;
        let shape = failures.weibull_shape;
        // H(life) = (life / scale)^shape = rate * life.
        let scale_secs = if rate > 0.0 { life / (rate * life).powf(1.0 / shape) } else { f64::INFINITY };
        Lifetime { shape, scale_secs, service_life_secs: life }
    }

    /// Service life.
    pub fn service_life_secs(&self) -> f64 {
        self.service_life_secs
    }

    /// Failure rate (per second) of a disk of this age.
    pub fn hazard_per_sec(&self, age_secs: f64) -> f64 {
        if !self.scale_secs.is_finite() {
            return 0.0;
        }
        let age = age_secs.max(1e-9);
        (self.shape / self.scale_secs) * (age / self.scale_secs).powf(self.shape - 1.0)
    }

    /// Draws how a disk of age `age_secs` ends its life, given that it is alive now.
    pub fn sample(&self, age_secs: f64, rng: &mut Rng) -> LifeEnd {
        let to_retire = (self.service_life_secs - age_secs).max(0.0);
        if !self.scale_secs.is_finite() {
            return LifeEnd::Retires(to_retire);
        }
        let e = rng.exp1();
        let h_now = (age_secs / self.scale_secs).powf(self.shape);
        let fail_age = self.scale_secs * (h_now + e).powf(1.0 / self.shape);
        let to_fail = (fail_age - age_secs).max(0.0);
        if to_fail < to_retire { LifeEnd::Fails(to_fail) } else { LifeEnd::Retires(to_retire) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SECS_PER_YEAR, SimConfig};

    #[test]
    fn exponential_lifetime_has_constant_hazard_matching_the_afr() {
        let failures = SimConfig::default().failures;
        let life = Lifetime::new(&failures);
        let h0 = life.hazard_per_sec(1.0);
        let h1 = life.hazard_per_sec(3.0 * SECS_PER_YEAR);
        assert!((h0 - failures.disk_rate_per_sec()).abs() / h0 < 1e-9);
        assert!((h1 - h0).abs() / h0 < 1e-9);
    }

    #[test]
    fn every_shape_gives_the_same_chance_of_failing_within_a_service_life() {
        for shape in [0.7, 1.0, 1.5] {
            let mut failures = SimConfig::default().failures;
            failures.weibull_shape = shape;
            failures.disk_afr = 0.2;
            let life = Lifetime::new(&failures);
            let mut rng = Rng::new(11);
            let n = 100_000;
            let failed = (0..n).filter(|_| matches!(life.sample(0.0, &mut rng), LifeEnd::Fails(_))).count();
            let p = failed as f64 / n as f64;
            let expected = 1.0 - (-failures.disk_rate_per_sec() * life.service_life_secs()).exp();
            // Binomial standard error sqrt(p(1-p)/n) < 1.6e-3; 5 sigma.
            assert!((p - expected).abs() < 0.008, "shape {shape}: {p} vs {expected}");
        }
    }
}
