//! Foreground first: while this server takes appends faster than
//! [`EncodeDefer::busy_bytes_per_sec`], it leaves its encode tasks queued at the master, so
//! that coding a sealed volume (reading its replica, writing k + m fragments: 1.5x the
//! volume's bytes for rs-6-3) does not take disk bandwidth and CPU from the puts being
//! acknowledged. Coding is only postponed, never skipped, and only for a bounded time:
//! after [`EncodeDefer::max`] of continuous load the server takes encodes again while still
//! busy (a sustained write load cannot grow the backlog of replicated volumes without
//! bound), and as soon as the load drops it takes them at once. Repairs (reconstruct,
//! copy) and deletes are never deferred.
//!
//! The load is the rate of replica append bytes, sampled at each task poll over at least
//! [`SAMPLE_MIN`]; a shorter interval keeps the previous decision.

use std::time::{Duration, Instant};

use cellar_proto::master::TaskKind;

/// The shortest interval a load sample is taken over.
pub const SAMPLE_MIN: Duration = Duration::from_millis(250);

/// The task kinds deferred while busy.
const DEFERRABLE_KINDS: &[TaskKind] = &[TaskKind::Encode];

pub use crate::config::EncodeDefer;

/// The executor's deferral state (one per server).
#[derive(Debug)]
pub struct Deferral {
    policy: EncodeDefer,
    /// The last sample: when, and the append byte counter then.
    sample: Option<(Instant, u64)>,
    busy: bool,
    /// Start of the current busy spell.
    busy_since: Option<Instant>,
    /// Whether the last decision deferred anything.
    deferring: bool,
}

impl Deferral {
    /// No load seen yet.
    pub fn new(policy: EncodeDefer) -> Self {
        Deferral { policy, sample: None, busy: false, busy_since: None, deferring: false }
    }

    /// The task kinds to leave queued at `now`, given the server's append byte counter.
    pub fn deferred_kinds(&mut self, now: Instant, appended_bytes: u64) -> &'static [TaskKind] {
        let kinds = self.decide(now, appended_bytes);
        self.deferring = !kinds.is_empty();
        kinds
    }

    fn decide(&mut self, now: Instant, appended_bytes: u64) -> &'static [TaskKind] {
        if self.policy.max.is_zero() {
            return &[];
        }
        match self.sample {
            None => self.sample = Some((now, appended_bytes)),
            Some((at, bytes)) => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= SAMPLE_MIN {
                    let delta = appended_bytes.saturating_sub(bytes) as f64;
                    let rate_bytes_per_sec = delta / elapsed.as_secs_f64();
                    self.busy = rate_bytes_per_sec >= self.policy.busy_bytes_per_sec as f64;
                    self.sample = Some((now, appended_bytes));
                }
            }
        }
        if !self.busy {
            self.busy_since = None;
            return &[];
        }
        let since = *self.busy_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.policy.max { DEFERRABLE_KINDS } else { &[] }
    }

    /// Whether the last decision deferred anything.
    pub fn deferring(&self) -> bool {
        self.deferring
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn policy() -> EncodeDefer {
        EncodeDefer { busy_bytes_per_sec: 32 * MIB, max: Duration::from_secs(10) }
    }

    #[test]
    fn a_busy_server_defers_encodes_until_the_load_drops() {
        let t0 = Instant::now();
        let mut d = Deferral::new(policy());
        assert!(d.deferred_kinds(t0, 0).is_empty(), "no rate known from one sample");
        // 100 MiB in 1 s: busy.
        assert_eq!(d.deferred_kinds(t0 + Duration::from_secs(1), 100 * MIB), [TaskKind::Encode]);
        assert!(d.deferring());
        // A poll 10 ms later has too short a sample: the decision stands.
        assert_eq!(d.deferred_kinds(t0 + Duration::from_millis(1010), 100 * MIB), [TaskKind::Encode]);
        // 10 MiB in the next second: below the threshold, encodes are taken at once.
        assert!(d.deferred_kinds(t0 + Duration::from_secs(2), 110 * MIB).is_empty());
        assert!(!d.deferring());
    }

    #[test]
    fn deferral_ends_after_the_maximum_under_sustained_load() {
        let t0 = Instant::now();
        let mut d = Deferral::new(policy());
        d.deferred_kinds(t0, 0);
        let mut deferred_secs = 0;
        for s in 1..=15u64 {
            if !d.deferred_kinds(t0 + Duration::from_secs(s), s * 100 * MIB).is_empty() {
                deferred_secs += 1;
            }
        }
        // Busy from second 1: deferred through second 10, then encodes run despite the load.
        assert_eq!(deferred_secs, 10);
        // A quiet second resets the spell; the next burst defers again.
        assert!(d.deferred_kinds(t0 + Duration::from_secs(16), 1500 * MIB).is_empty());
        assert_eq!(d.deferred_kinds(t0 + Duration::from_secs(17), 1600 * MIB), [TaskKind::Encode]);
    }

    #[test]
    fn a_zero_maximum_never_defers() {
        let t0 = Instant::now();
        let mut d = Deferral::new(EncodeDefer { max: Duration::ZERO, ..policy() });
        d.deferred_kinds(t0, 0);
        assert!(d.deferred_kinds(t0 + Duration::from_secs(1), 1000 * MIB).is_empty());
        assert!(!d.deferring());
    }
}
