//! The storage watcher (DESIGN section 6, a verifier of "Pocket Watch"): one put in
//! `sample_one_in` that stored new bytes is read back after `delay`, through the normal
//! verified get path (whose failed reads report bad extents, which the master repairs).
//! A block that does not read is checked once more a little later (a get can fail for a
//! moment: a master election, a server restarting); if it still does not read, it is a
//! finding, logged and counted in `/metrics`. The queue
//! of blocks to re-read is bounded; a sample that does not fit is dropped and counted.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Blocks waiting for their re-read at most.
pub const WATCH_QUEUE_MAX: usize = 10_000;
/// How long after a failed re-read the block is tried again (at most the watcher's delay).
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Re-reads at most at once.
const CHECKS_PER_ROUND_MAX: usize = 64;

pub use crate::config::WatchConfig;

/// What a re-read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The block read back and matched its key.
    Intact,
    /// The block is gone from the index (deleted since): nothing to check.
    Gone,
    /// The block did not read back: the reason.
    Failed(String),
}

/// The watcher's queue and counters.
#[derive(Debug)]
pub struct Watcher {
    config: WatchConfig,
    queue: Mutex<VecDeque<(Instant, [u8; 32])>>,
    /// Blocks whose first re-read failed, with when to try again.
    retries: Mutex<VecDeque<(Instant, [u8; 32])>>,
    puts_seen: AtomicU64,
    /// Blocks re-read and intact.
    pub checked: AtomicU64,
    /// Blocks that did not read back.
    pub findings: AtomicU64,
    /// Samples dropped because the queue was full.
    pub dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watcher {
    /// A watcher with `config`.
    pub fn new(config: WatchConfig) -> Self {
        Watcher {
            config,
            queue: Mutex::new(VecDeque::new()),
            retries: Mutex::new(VecDeque::new()),
            puts_seen: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            findings: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Notes a put that stored new bytes under `hash`; one in `sample_one_in` is queued.
    pub fn note_put(&self, hash: [u8; 32]) {
        if self.config.sample_one_in == 0 {
            return;
        }
        if !self.puts_seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.config.sample_one_in) {
            return;
        }
        let mut queue = lock(&self.queue);
        if queue.len() >= WATCH_QUEUE_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back((Instant::now() + self.config.delay, hash));
    }

    fn due(&self, now: Instant) -> Vec<[u8; 32]> {
        Self::take_due(&self.queue, now)
    }

    fn take_due(queue: &Mutex<VecDeque<(Instant, [u8; 32])>>, now: Instant) -> Vec<[u8; 32]> {
        let mut queue = lock(queue);
        let mut out = Vec::new();
        while out.len() < CHECKS_PER_ROUND_MAX && queue.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, hash)) = queue.pop_front() {
                out.push(hash);
            }
        }
        out
    }
}

/// Re-reads due blocks with `check` until `stop` turns true.
pub async fn run<F, Fut>(watcher: Arc<Watcher>, check: F, mut stop: watch::Receiver<bool>)
where
    F: Fn([u8; 32]) -> Fut,
    Fut: Future<Output = Check>,
{
    if watcher.config.sample_one_in == 0 {
        return;
    }
    let period = (watcher.config.delay / 10).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let now = Instant::now();
        let first = watcher.due(now).into_iter().map(|h| (h, false));
        let again = Watcher::take_due(&watcher.retries, now).into_iter().map(|h| (h, true));
        for (hash, retried) in first.chain(again).collect::<Vec<_>>() {
            match check(hash).await {
                Check::Intact => {
                    watcher.checked.fetch_add(1, Ordering::Relaxed);
                }
                Check::Gone => {}
                Check::Failed(reason) if !retried => {
                    tracing::warn!(block = %hex::encode(hash), %reason, "storage watcher: a re-read failed; trying again");
                    let mut retries = lock(&watcher.retries);
                    if retries.len() < WATCH_QUEUE_MAX {
                        retries.push_back((Instant::now() + RETRY_AFTER.min(watcher.config.delay), hash));
                    } else {
                        watcher.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Check::Failed(reason) => {
                    watcher.findings.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(block = %hex::encode(hash), %reason, "storage watcher: a stored block does not read back");
                }
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_put_in_n_is_queued_until_due_and_the_queue_is_bounded() {
        let w = Watcher::new(WatchConfig { sample_one_in: 3, delay: Duration::from_secs(10) });
        for i in 0..9u8 {
            w.note_put([i; 32]);
        }
        assert!(w.due(Instant::now()).is_empty(), "not due yet");
        let due = w.due(Instant::now() + Duration::from_secs(11));
        assert_eq!(due, vec![[0; 32], [3; 32], [6; 32]]);
        let off = Watcher::new(WatchConfig { sample_one_in: 0, delay: Duration::ZERO });
        off.note_put([1; 32]);
        assert!(off.due(Instant::now()).is_empty());
        let every = Watcher::new(WatchConfig { sample_one_in: 1, delay: Duration::ZERO });
        for i in 0..(WATCH_QUEUE_MAX + 5) {
            every.note_put([(i % 251) as u8; 32]);
        }
        assert_eq!(every.dropped.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_failed_re_read_is_tried_again_before_it_counts_as_a_finding() {
        let w = Arc::new(Watcher::new(WatchConfig { sample_one_in: 1, delay: Duration::ZERO }));
        w.note_put([1; 32]); // fails once, then reads
        w.note_put([2; 32]); // never reads
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop, stop_rx) = watch::channel(false);
        let seen = calls.clone();
        let runner = tokio::spawn(run(
            w.clone(),
            move |hash: [u8; 32]| {
                let seen = seen.clone();
                async move {
                    let mut seen = lock(&seen);
                    let tries = seen.iter().filter(|h| **h == hash).count();
                    seen.push(hash);
                    if hash == [1; 32] && tries > 0 { Check::Intact } else { Check::Failed("no".into()) }
                }
            },
            stop_rx,
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&calls).len() < 4 {
            assert!(Instant::now() < deadline, "re-reads not done: {:?}", lock(&calls));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        runner.await.expect("runner");
        assert_eq!(w.checked.load(Ordering::Relaxed), 1);
        assert_eq!(w.findings.load(Ordering::Relaxed), 1, "only the block that failed twice");
        assert_eq!(lock(&calls).len(), 4, "each block re-read at most twice");
    }
}
