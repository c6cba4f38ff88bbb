//! Deadlines of the extent calls between cellar processes, and the hedge delay of reads.
//!
//! Every call to a volume server is bounded: a replica whose disk hangs in fsync, or whose
//! host stopped answering, must end a put's attempt (the volume is then sealed at its
//! acknowledged end and the put goes elsewhere) instead of holding it forever. Reads do
//! not wait for a deadline to pass before trying elsewhere: after a hedge delay derived
//! from recent read latencies they ask another replica, or read degraded from other
//! fragments, and the first verified answer wins.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::{Code, Status};

use crate::errors::status;

/// Default deadline of one Append (a batch of up to 8 MiB written and fsynced on one
/// replica). A healthy disk answers in tens of milliseconds; 5 s leaves room for a busy
/// disk's fsync without letting a hung one hold puts for long.
pub const APPEND_DEADLINE_DEFAULT: Duration = Duration::from_secs(5);
/// Default deadline of one record or fragment-range read (at most 8 MiB). Reads are
/// hedged long before it passes; it bounds what a hedge could not replace.
pub const READ_DEADLINE_DEFAULT: Duration = Duration::from_secs(5);
/// Default deadline of a whole streamed fragment write (encode, rebuild, copy): a
/// fragment of a 1 GiB rs-6-3 volume is ~171 MiB, so this allows ~0.3 MiB/s.
pub const FRAGMENT_WRITE_DEADLINE_DEFAULT: Duration = Duration::from_secs(600);
/// Default deadline of the other calls (stat, delete, the first answer of a scan).
pub const CONTROL_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: a ping on every long-lived channel this often, even when idle.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: the connection is dropped when a ping is not answered within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest hedge delay: below it, a hedge would double the reads of a healthy cell.
pub const HEDGE_DELAY_MIN: Duration = Duration::from_millis(10);
/// Default longest hedge delay: a read waits at most this long for a slow holder before
/// asking another one, however slow recent reads were.
pub const HEDGE_DELAY_MAX_DEFAULT: Duration = Duration::from_millis(200);
/// The hedge delay used before any read latency is known.
pub const HEDGE_DELAY_INITIAL: Duration = Duration::from_millis(50);
/// Read latencies remembered per size class.
pub const LATENCY_SAMPLES_MAX: usize = 256;
/// Reads of at least this many bytes form the large size class (their latency is mostly
/// transfer time, which a small read's is not).
pub const LARGE_READ_MIN_BYTES: u64 = 256 << 10;

/// The deadline of each kind of extent call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallDeadlines {
    /// One Append to one replica.
    pub append: Duration,
    /// One ReadRecord or ReadFragment.
    pub read: Duration,
    /// One whole streamed WriteFragment.
    pub fragment_write: Duration,
    /// StatExtent, DeleteExtent, and the first message of a scan.
    pub control: Duration,
    /// The longest a read waits for a holder before hedging.
    pub hedge_delay_max: Duration,
}

impl Default for CallDeadlines {
    fn default() -> Self {
        CallDeadlines {
            append: APPEND_DEADLINE_DEFAULT,
            read: READ_DEADLINE_DEFAULT,
            fragment_write: FRAGMENT_WRITE_DEADLINE_DEFAULT,
            control: CONTROL_DEADLINE_DEFAULT,
            hedge_delay_max: HEDGE_DELAY_MAX_DEFAULT,
        }
    }
}

impl CallDeadlines {
    /// Checks that every deadline is positive and the hedge delay is within bounds.
    pub fn validate(&self) -> Result<(), String> {
        for (name, d) in [
            ("append", self.append),
            ("read", self.read),
            ("fragment write", self.fragment_write),
            ("control", self.control),
        ] {
            if d.is_zero() {
                return Err(format!("the {name} deadline must be positive"));
            }
        }
        if self.hedge_delay_max < HEDGE_DELAY_MIN || self.hedge_delay_max > self.read {
            return Err(format!(
                "the hedge delay must be in {} ms ..= the read deadline ({} ms)",
                HEDGE_DELAY_MIN.as_millis(),
                self.read.as_millis()
            ));
        }
        Ok(())
    }
}

/// Runs `call` for at most `deadline`; past it the call is dropped (over gRPC that
/// cancels the stream) and `DEADLINE_EXCEEDED` is returned, naming `what`.
pub async fn bounded<T>(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let expired = || {
        status(
            Code::DeadlineExceeded,
            cellar_proto::error_code::DEADLINE_EXCEEDED,
            format!("{what}: no answer within {} ms", deadline.as_millis()),
        )
    };
    match tokio::time::timeout(deadline, call).await {
        // The request's own `grpc-timeout` makes tonic's channel give up at the same
        // moment, and tonic answers that as CANCELLED "Timeout expired": it is this
        // deadline too, and callers (metrics, suspects, retries) must see it as one.
        Ok(Err(e)) if is_client_timeout(&e) => Err(expired()),
        Ok(result) => result,
        Err(_) => Err(expired()),
    }
}

/// Whether `e` is tonic's client-side timeout (`tonic::TimeoutExpired`, which tonic turns
/// into a CANCELLED status with that error's text and no source).
fn is_client_timeout(e: &Status) -> bool {
    e.code() == Code::Cancelled && e.message() == "Timeout expired"
}

/// Recent read latencies, from which the hedge delay is derived: twice the 90th
/// percentile of the last [`LATENCY_SAMPLES_MAX`] reads of the same size class, clamped to
/// [`HEDGE_DELAY_MIN`] ..= the configured maximum. A read slower than nine in ten recent
/// ones by a factor of two is hedged; a healthy cell hedges few reads.
#[derive(Debug)]
pub struct ReadLatency {
    classes: [Mutex<Samples>; 2],
    delay_max: Duration,
}

#[derive(Debug, Default)]
struct Samples {
    recent_us: VecDeque<u32>,
    /// The delay computed at the last recompute (every 16 samples), in microseconds.
    delay_us: Option<u64>,
    since_recompute: u32,
}

/// Samples between two recomputations of a class's percentile.
const RECOMPUTE_EVERY: u32 = 16;

impl ReadLatency {
    /// An estimator whose delays never exceed `delay_max`.
    pub fn new(delay_max: Duration) -> ReadLatency {
        ReadLatency { classes: Default::default(), delay_max: delay_max.max(HEDGE_DELAY_MIN) }
    }

    fn class(&self, len_bytes: u64) -> &Mutex<Samples> {
        &self.classes[usize::from(len_bytes >= LARGE_READ_MIN_BYTES)]
    }

    /// Records how long a successful read of `len_bytes` took.
    pub fn observe(&self, len_bytes: u64, took: Duration) {
        let mut s = self.class(len_bytes).lock().unwrap_or_else(|p| p.into_inner());
        if s.recent_us.len() >= LATENCY_SAMPLES_MAX {
            s.recent_us.pop_front();
        }
        s.recent_us.push_back(took.as_micros().min(u128::from(u32::MAX)) as u32);
        s.since_recompute += 1;
        if s.delay_us.is_none() || s.since_recompute >= RECOMPUTE_EVERY {
            s.since_recompute = 0;
            let mut sorted: Vec<u32> = s.recent_us.iter().copied().collect();
            sorted.sort_unstable();
            let p90 = sorted[(sorted.len() - 1) * 9 / 10];
            s.delay_us = Some(u64::from(p90) * 2);
        }
    }

    /// The longest hedge delay.
    pub fn delay_max(&self) -> Duration {
        self.delay_max
    }

    /// How long a read of `len_bytes` waits for its holder before a hedge starts.
    pub fn hedge_delay(&self, len_bytes: u64) -> Duration {
        let s = self.class(len_bytes).lock().unwrap_or_else(|p| p.into_inner());
        let delay = s.delay_us.map_or(HEDGE_DELAY_INITIAL, Duration::from_micros);
        delay.clamp(HEDGE_DELAY_MIN, self.delay_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tonics_own_timeout_is_a_deadline_exceeded() {
        // What a channel answers when a request's grpc-timeout runs out on the client.
        let tonic_timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let e = bounded(Duration::from_secs(5), "append", async { Err::<(), _>(tonic_timeout) })
            .await
            .expect_err("an error");
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
        // Other cancellations stay what they are.
        let e = bounded(Duration::from_secs(5), "append", async { Err::<(), _>(Status::cancelled("gone")) })
            .await
            .expect_err("an error");
        assert_eq!(e.code(), Code::Cancelled);
        let e = bounded(Duration::from_millis(10), "append", std::future::pending::<Result<(), Status>>())
            .await
            .expect_err("an error");
        assert_eq!(e.code(), Code::DeadlineExceeded);
    }

    #[test]
    fn hedge_delay_follows_recent_latency_within_bounds() {
        let l = ReadLatency::new(Duration::from_millis(200));
        assert_eq!(l.hedge_delay(4096), HEDGE_DELAY_INITIAL);
        for _ in 0..LATENCY_SAMPLES_MAX {
            l.observe(4096, Duration::from_millis(20));
        }
        assert_eq!(l.hedge_delay(4096), Duration::from_millis(40));
        // The large class is separate.
        assert_eq!(l.hedge_delay(4 << 20), HEDGE_DELAY_INITIAL);
        for _ in 0..LATENCY_SAMPLES_MAX {
            l.observe(4096, Duration::from_secs(3));
        }
        assert_eq!(l.hedge_delay(4096), Duration::from_millis(200), "clamped to the maximum");
        for _ in 0..LATENCY_SAMPLES_MAX {
            l.observe(4096, Duration::from_micros(100));
        }
        assert_eq!(l.hedge_delay(4096), HEDGE_DELAY_MIN, "clamped to the minimum");
    }

    #[test]
    fn a_few_slow_reads_do_not_raise_the_delay() {
        let l = ReadLatency::new(Duration::from_millis(500));
        for i in 0..LATENCY_SAMPLES_MAX {
            let ms = if i % 20 == 0 { 400 } else { 10 };
            l.observe(100, Duration::from_millis(ms));
        }
        assert_eq!(l.hedge_delay(100), Duration::from_millis(20));
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_is_deadline_exceeded() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Status>(())
        };
        let e = bounded(Duration::from_millis(20), "append", slow).await.expect_err("times out");
        assert_eq!(e.code(), Code::DeadlineExceeded);
        assert!(e.message().contains("append"), "{}", e.message());
        let fast = async { Ok::<_, Status>(7) };
        assert_eq!(bounded(Duration::from_millis(20), "read", fast).await.expect("in time"), 7);
    }

    #[test]
    fn deadlines_are_validated() {
        assert!(CallDeadlines::default().validate().is_ok());
        let zero = CallDeadlines { append: Duration::ZERO, ..CallDeadlines::default() };
        assert!(zero.validate().is_err());
        let hedge = CallDeadlines { hedge_delay_max: Duration::from_secs(60), ..CallDeadlines::default() };
        assert!(hedge.validate().is_err());
    }
}
