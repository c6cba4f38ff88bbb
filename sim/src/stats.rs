//! Point estimates with 95 % confidence intervals.

use serde::Serialize;

/// Two-sided 95 % normal quantile.
pub const Z95: f64 = 1.959_963_984_540_054;

/// An estimate and its 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Estimate {
    /// Point estimate.
    pub value: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end of the 95 % interval.
    pub hi: f64,
}

impl Estimate {
    /// Half-width of the interval over the value (infinite when the value is 0).
    pub fn relative_error(&self) -> f64 {
        if self.value > 0.0 { (self.hi - self.lo) / 2.0 / self.value } else { f64::INFINITY }
    }

    /// Mean of independent samples, with the normal (central limit) interval, clamped at 0
    /// for non-negative quantities.
    pub fn mean_of(samples: &[f64]) -> Estimate {
        let n = samples.len() as f64;
        if samples.is_empty() {
            return Estimate { value: 0.0, lo: 0.0, hi: f64::INFINITY };
        }
        let mean = samples.iter().sum::<f64>() / n;
        let var = if samples.len() > 1 {
            samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
        } else {
            f64::INFINITY
        };
        let half = Z95 * (var / n).sqrt();
        Estimate { value: mean, lo: (mean - half).max(0.0), hi: mean + half }
    }

    /// A Poisson rate from `count` events over `exposure` (e.g. run-years): the exact
    /// (Garwood) interval, with chi-square quantiles by Wilson-Hilferty (a few percent
    /// accurate at small counts, exact enough for an interval).
    pub fn poisson_rate(count: u64, exposure: f64) -> Estimate {
        let k = count as f64;
        let lo = if count == 0 { 0.0 } else { chi2_quantile(2.0 * k, -Z95) / 2.0 };
        let hi = chi2_quantile(2.0 * k + 2.0, Z95) / 2.0;
        Estimate { value: k / exposure, lo: lo / exposure, hi: hi / exposure }
    }

    /// Scales value and interval.
    pub fn scaled(&self, factor: f64) -> Estimate {
        Estimate { value: self.value * factor, lo: self.lo * factor, hi: self.hi * factor }
    }

    /// Maps a rate of loss events per year to the probability of at least one in a year,
    /// `1 - exp(-rate)` (losses as a Poisson process; equal to the rate when it is small).
    pub fn rate_to_probability(&self) -> Estimate {
        let p = |r: f64| -(-r).exp_m1();
        Estimate { value: p(self.value), lo: p(self.lo), hi: p(self.hi) }
    }
}

/// Quantile of the chi-square distribution with `dof` degrees of freedom at the standard
/// normal quantile `z` (Wilson-Hilferty).
fn chi2_quantile(dof: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * dof);
    (dof * (1.0 - a + z * a.sqrt()).powi(3)).max(0.0)
}

/// Durability in nines: `-log10(p)`, infinite for 0.
pub fn nines(p: f64) -> f64 {
    if p > 0.0 { -p.log10() } else { f64::INFINITY }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_interval_shrinks_with_samples() {
        let small = Estimate::mean_of(&[1.0, 2.0, 3.0]);
        let large: Vec<f64> = (0..300).map(|i| f64::from(i % 3 + 1)).collect();
        let large = Estimate::mean_of(&large);
        assert!((small.value - 2.0).abs() < 1e-12 && (large.value - 2.0).abs() < 1e-12);
        assert!(large.relative_error() < small.relative_error() / 5.0);
    }

    #[test]
    fn poisson_interval_of_zero_is_the_rule_of_three_ish() {
        let e = Estimate::poisson_rate(0, 1000.0);
        assert_eq!(e.lo, 0.0);
        // Exact two-sided 97.5 % upper bound for 0 events: -ln(0.025) = 3.69.
        assert!((e.hi * 1000.0 - 3.689).abs() < 0.1, "{e:?}");
        let e = Estimate::poisson_rate(100, 1.0);
        assert!((e.lo - 81.4).abs() < 1.0 && (e.hi - 121.6).abs() < 1.0, "{e:?}");
    }

    #[test]
    fn nines_of_probabilities() {
        assert!((nines(1e-9) - 9.0).abs() < 1e-12);
        assert_eq!(nines(0.0), f64::INFINITY);
    }
}
