//! The flags that set the deadlines of calls to volume servers (`cellar frontend`,
//! `cellar volume`): see `cellar_volume::deadline`.

use std::time::Duration;

use cellar_volume::deadline::CallDeadlines;
use clap::Args;

/// Deadlines of extent calls, in milliseconds.
#[derive(Debug, Args)]
pub struct DeadlineArgs {
    /// Deadline of one replica append (a put's attempt ends there: its volume is sealed
    /// and the put retried on another).
    #[arg(long, default_value_t = CallDeadlines::default().append.as_millis() as u64)]
    append_deadline_ms: u64,
    /// Deadline of one record or fragment read.
    #[arg(long, default_value_t = CallDeadlines::default().read.as_millis() as u64)]
    read_deadline_ms: u64,
    /// Deadline of one whole streamed fragment write (encode, rebuild, copy).
    #[arg(long, default_value_t = CallDeadlines::default().fragment_write.as_millis() as u64)]
    fragment_write_deadline_ms: u64,
    /// Deadline of stat, delete and the start of a scan.
    #[arg(long, default_value_t = CallDeadlines::default().control.as_millis() as u64)]
    control_deadline_ms: u64,
    /// Longest a read waits for a slow holder before also asking another one (the delay
    /// itself follows recent read latency, below this).
    #[arg(long, default_value_t = CallDeadlines::default().hedge_delay_max.as_millis() as u64)]
    hedge_delay_max_ms: u64,
}

impl DeadlineArgs {
    /// The deadlines the flags give (checked by the config's `validate`).
    pub fn deadlines(&self) -> CallDeadlines {
        CallDeadlines {
            append: Duration::from_millis(self.append_deadline_ms),
            read: Duration::from_millis(self.read_deadline_ms),
            fragment_write: Duration::from_millis(self.fragment_write_deadline_ms),
            control: Duration::from_millis(self.control_deadline_ms),
            hedge_delay_max: Duration::from_millis(self.hedge_delay_max_ms),
        }
    }
}
