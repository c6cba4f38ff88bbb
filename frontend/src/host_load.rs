//! Whether this host's CPUs are saturated: the share of CPU time spent busy over the last
//! sample period, from `/proc/stat`, with hysteresis (saturated from `busy_percent` on, no
//! longer once it falls below [`HYSTERESIS_PERCENT`] points under it). Where `/proc/stat`
//! cannot be read the host never counts as saturated.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often `/proc/stat` is sampled. 250 ms at first; 100 ms since the twentieth stop:
/// a burst of small gets after an idle moment went 250-500 ms ungathered, most of a
/// comparison row's 0.5 s get phase (a single round of 10,000 4 KiB gets at 32 clients:
/// 19-31% of reads gathered, 18,000-18,800 gets/s; at 100 ms 64-75%, 19,600-24,000/s).
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(100);
/// Points under the threshold at which a saturated host is no longer saturated.
pub const HYSTERESIS_PERCENT: u64 = 20;

/// The latest verdict, shared with whoever asks.
#[derive(Debug)]
pub struct HostLoad {
    saturated: AtomicBool,
    busy_percent: u64,
}

impl HostLoad {
    /// Whether the host's CPUs were saturated at the last sample.
    pub fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// The busy share, in percent, from which the host counts as saturated.
    pub fn busy_percent(&self) -> u64 {
        self.busy_percent
    }

    /// Samples the host every [`SAMPLE_PERIOD`] until `self` is only held by the sampler
    /// (call inside a Tokio runtime).
    pub fn start(busy_percent: u64) -> Arc<HostLoad> {
        let load = Arc::new(HostLoad { saturated: AtomicBool::new(false), busy_percent });
        let weak = Arc::downgrade(&load);
        tokio::spawn(async move {
            let mut last = read_proc_stat();
            // The first verdict after a whole period (an immediate first tick would judge a
            // period of a tick or two).
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE_PERIOD, SAMPLE_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(load) = weak.upgrade() else { return };
                let now = read_proc_stat();
                if let (Some(before), Some(after)) = (last, now) {
                    let was = load.saturated();
                    load.saturated.store(next_verdict(was, before, after, busy_percent), Ordering::Relaxed);
                }
                last = now;
            }
        });
        load
    }
}

/// CPU time counters of the whole host: (busy, total), in clock ticks.
type Ticks = (u64, u64);

/// The verdict after a period that went from `before` to `after`, given the one before.
pub fn next_verdict(was: bool, before: Ticks, after: Ticks, busy_percent: u64) -> bool {
    let total = after.1.saturating_sub(before.1);
    if total == 0 {
        return was;
    }
    let percent = after.0.saturating_sub(before.0) * 100 / total;
    if was { percent + HYSTERESIS_PERCENT >= busy_percent } else { percent >= busy_percent }
}

/// Bytes read from the start of `/proc/stat`: its first line, the whole host's, is all that
/// is needed, and the kernel formats the rest (a line per CPU, the interrupt counters: long
/// on large hosts) only when it is read.
const PROC_STAT_PREFIX_BYTES: usize = 1024;

fn read_proc_stat() -> Option<Ticks> {
    use std::io::Read;
    let mut buf = [0u8; PROC_STAT_PREFIX_BYTES];
    let n = std::fs::File::open("/proc/stat").ok()?.read(&mut buf).ok()?;
    let prefix = &buf[..n];
    // Only a whole first line.
    let end = prefix.iter().position(|b| *b == b'\n')?;
    parse_proc_stat(std::str::from_utf8(&prefix[..end]).ok()?)
}

/// (busy, total) from the first line of `/proc/stat` (`cpu user nice system idle iowait
/// irq softirq steal ...`): idle and iowait are not busy.
pub fn parse_proc_stat(text: &str) -> Option<Ticks> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values[3] + values[4];
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parses_and_refuses_what_it_is_not() {
        let text = "cpu  100 5 50 800 40 3 2 0 0 0\ncpu0 50 2 25 400 20 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat(text), Some((160, 1000)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4 5\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2 x 4 5\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2 3\n"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_host_s_first_line_reads() {
        let (busy, total) = read_proc_stat().expect("/proc/stat's first line");
        assert!(total > 0 && busy <= total, "busy {busy} of {total}");
    }

    #[test]
    fn saturation_starts_at_the_threshold_and_ends_below_the_hysteresis() {
        // 90% busy: saturated from 85 on.
        assert!(next_verdict(false, (0, 0), (90, 100), 85));
        // 80%: not yet.
        assert!(!next_verdict(false, (0, 0), (80, 100), 85));
        // Once saturated, 70% keeps it (within 20 points), 60% ends it.
        assert!(next_verdict(true, (0, 0), (70, 100), 85));
        assert!(!next_verdict(true, (0, 0), (60, 100), 85));
        // No time passed: the verdict stands.
        assert!(next_verdict(true, (5, 5), (5, 5), 85));
        // A threshold of 0: always saturated.
        assert!(next_verdict(false, (0, 0), (0, 100), 0));
    }
}
