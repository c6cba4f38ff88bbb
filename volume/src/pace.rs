//! Pacing of background copies: the repair executors (reconstruct, copy) of one node
//! share one [`Pace`], whose rate is the node's share of the cell's repair bandwidth as
//! the master hands it out with every task pull. Each sender books its bytes and waits
//! until the end of its slot before it sends them (so even a one-step copy takes its
//! time); time not used is not saved up, so the rate holds over any window.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A shared byte rate (0: no limit).
#[derive(Debug)]
pub struct Pace {
    bytes_per_sec: AtomicU64,
    next_free: Mutex<Instant>,
}

impl Default for Pace {
    fn default() -> Pace {
        Pace { bytes_per_sec: AtomicU64::new(0), next_free: Mutex::new(Instant::now()) }
    }
}

impl Pace {
    /// Sets the rate (0: no limit).
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// The rate now.
    pub fn rate(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// How long a sender of `bytes` waits from `now` (to the end of its slot); books it.
    fn book(&self, bytes: u64, now: Instant) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        *next - now
    }

    /// Waits for the turn of `bytes`.
    pub async fn take(&self, bytes: u64) {
        let wait = self.book(bytes, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_queue_behind_each_other_at_the_rate_and_idle_time_is_not_saved() {
        let pace = Pace::default();
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(pace.book(1000, t0), Duration::ZERO, "no limit");
        pace.set_rate(1000);
        assert_eq!(pace.book(500, t0), Duration::from_millis(500));
        assert_eq!(pace.book(500, t0), Duration::from_secs(1));
        assert_eq!(pace.book(1000, t0), Duration::from_secs(2));
        // Long idle: nothing was saved up; the next sender waits its own slot only.
        let later = t0 + Duration::from_secs(100);
        assert_eq!(pace.book(1000, later), Duration::from_secs(1));
        assert_eq!(pace.book(1, later), Duration::from_millis(1001));
    }
}
