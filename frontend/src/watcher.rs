//! The storage watcher (DESIGN section 6, a verifier of "Pocket Watch"): one put in
//! `sample_one_in` that stored new bytes is read back after each of `delays` (as long as
//! it reads back intact), through the normal verified get path (whose failed reads report bad extents, which the master repairs).
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

/// A block waiting for a re-read: when, when it was put, which delay this is, its key.
type Due = (Instant, Instant, usize, [u8; 32]);

/// The watcher's queues and counters.
#[derive(Debug)]
pub struct Watcher {
    config: WatchConfig,
    /// One queue per delay, each in due order (blocks enter in put order).
    queues: Vec<Mutex<VecDeque<Due>>>,
    /// Blocks whose re-read failed, with when to try again.
    retries: Mutex<VecDeque<Due>>,
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
            queues: config.delays.iter().map(|_| Mutex::new(VecDeque::new())).collect(),
            config,
            retries: Mutex::new(VecDeque::new()),
            puts_seen: AtomicU64::new(0),
            checked: AtomicU64::new(0),
            findings: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Notes a put that stored new bytes under `hash`; one in `sample_one_in` is queued.
    pub fn note_put(&self, hash: [u8; 32]) {
        if self.config.sample_one_in == 0 || self.queues.is_empty() {
            return;
        }
        if !self.puts_seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.config.sample_one_in) {
            return;
        }
        self.queue_at(0, Instant::now(), hash);
    }

    /// Queues `hash` (put at `put_at`) for its re-read after delay `stage`; a full queue
    /// drops it (counted).
    fn queue_at(&self, stage: usize, put_at: Instant, hash: [u8; 32]) {
        let (Some(queue), Some(delay)) = (self.queues.get(stage), self.config.delays.get(stage)) else {
            return;
        };
        let mut queue = lock(queue);
        if queue.len() >= WATCH_QUEUE_MAX {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back((put_at + *delay, put_at, stage, hash));
    }

    /// The blocks due now, over every delay.
    fn due(&self, now: Instant) -> Vec<Due> {
        self.queues.iter().flat_map(|q| Self::take_due(q, now)).collect()
    }

    fn take_due(queue: &Mutex<VecDeque<Due>>, now: Instant) -> Vec<Due> {
        let mut queue = lock(queue);
        let mut out = Vec::new();
        while out.len() < CHECKS_PER_ROUND_MAX && queue.front().is_some_and(|(at, ..)| *at <= now) {
            if let Some(due) = queue.pop_front() {
                out.push(due);
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
    let Some(&first_delay) = watcher.config.delays.first() else { return };
    if watcher.config.sample_one_in == 0 {
        return;
    }
    let period = (first_delay / 10).clamp(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let now = Instant::now();
        let first = watcher.due(now).into_iter().map(|h| (h, false));
        let again = Watcher::take_due(&watcher.retries, now).into_iter().map(|h| (h, true));
        for ((_, put_at, stage, hash), retried) in first.chain(again).collect::<Vec<_>>() {
            match check(hash).await {
                Check::Intact => {
                    watcher.checked.fetch_add(1, Ordering::Relaxed);
                    watcher.queue_at(stage + 1, put_at, hash);
                }
                Check::Gone => {}
                Check::Failed(reason) if !retried => {
                    tracing::warn!(block = %hex::encode(hash), %reason, "storage watcher: a re-read failed; trying again");
                    let mut retries = lock(&watcher.retries);
                    if retries.len() < WATCH_QUEUE_MAX {
                        retries.push_back((
                            Instant::now() + RETRY_AFTER.min(first_delay),
                            put_at,
                            stage,
                            hash,
                        ));
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
        let w = Watcher::new(WatchConfig { sample_one_in: 3, delays: vec![Duration::from_secs(10)] });
        for i in 0..9u8 {
            w.note_put([i; 32]);
        }
        assert!(w.due(Instant::now()).is_empty(), "not due yet");
        let due: Vec<[u8; 32]> =
            w.due(Instant::now() + Duration::from_secs(11)).iter().map(|d| d.3).collect();
        assert_eq!(due, vec![[0; 32], [3; 32], [6; 32]]);
        let off = Watcher::new(WatchConfig { sample_one_in: 0, delays: vec![Duration::ZERO] });
        off.note_put([1; 32]);
        assert!(off.due(Instant::now()).is_empty());
        let every = Watcher::new(WatchConfig { sample_one_in: 1, delays: vec![Duration::ZERO] });
        for i in 0..(WATCH_QUEUE_MAX + 5) {
            every.note_put([(i % 251) as u8; 32]);
        }
        assert_eq!(every.dropped.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_failed_re_read_is_tried_again_before_it_counts_as_a_finding() {
        let w = Arc::new(Watcher::new(WatchConfig { sample_one_in: 1, delays: vec![Duration::ZERO] }));
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

    #[tokio::test]
    async fn an_intact_block_is_read_again_at_each_delay() {
        let delays = vec![Duration::from_millis(10), Duration::from_millis(60), Duration::from_millis(120)];
        let w = Arc::new(Watcher::new(WatchConfig { sample_one_in: 1, delays }));
        w.note_put([7; 32]);
        let calls = Arc::new(AtomicU64::new(0));
        let (stop, stop_rx) = watch::channel(false);
        let seen = calls.clone();
        let started = Instant::now();
        let runner = tokio::spawn(run(
            w.clone(),
            move |_hash: [u8; 32]| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::Relaxed);
                    Check::Intact
                }
            },
            stop_rx,
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while calls.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "re-reads not done");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(120), "the last re-read waits for the last delay");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = stop.send(true);
        runner.await.expect("runner");
        assert_eq!(calls.load(Ordering::Relaxed), 3, "once per delay, no more");
        assert_eq!(w.checked.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn delays_must_be_ascending_and_few() {
        let ok =
            WatchConfig { sample_one_in: 1, delays: vec![Duration::from_secs(1), Duration::from_secs(2)] };
        assert!(ok.validate().is_ok());
        let down =
            WatchConfig { sample_one_in: 1, delays: vec![Duration::from_secs(2), Duration::from_secs(1)] };
        assert!(down.validate().is_err());
        assert!(WatchConfig { sample_one_in: 1, delays: Vec::new() }.validate().is_err());
        assert!(
            WatchConfig { sample_one_in: 1, delays: vec![Duration::from_secs(1); 9] }.validate().is_err()
        );
    }
}
