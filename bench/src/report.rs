//! Benchmark result rows and their table form.

use std::fmt::Write as _;
use std::time::Duration;

/// One measured row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Operations completed.
    pub ops: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The raw-hardware row this one compares to, if any, and its throughput (MB/s).
    pub baseline: Option<(String, f64)>,
}

impl Row {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Megabytes (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Renders rows as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:>9} {:>12} {:>10} {:>9}  vs raw",
        "measurement", "ops", "ops/s", "MB/s", "secs"
    );
    for row in rows {
        let ratio = match &row.baseline {
            Some((name, mbps)) if *mbps > 0.0 => {
                format!("{:>5.0}% of {name}", 100.0 * row.mb_per_sec() / mbps)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>12.0} {:>10.1} {:>9.2}  {ratio}",
            row.name,
            row.ops,
            row.ops_per_sec(),
            row.mb_per_sec(),
            row.elapsed.as_secs_f64()
        );
    }
    out
}
