//! Memory cost of opening a large disk: populate a disk with many extents and records,
//! then open it in a fresh process and report that process's peak resident memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use cellar_blockstore::{Disk, DiskOptions, ExtentId};

/// Appenders per extent while populating: they share fsyncs.
const POPULATE_WRITERS: u64 = 32;
/// Payload of each populated record.
const POPULATE_PAYLOAD_BYTES: usize = 64;

/// Fills `dir` with `extents` replica extents holding `records` records in all; all but
/// `open_extents` are sealed. Returns the seconds it took.
pub fn populate(dir: &Path, extents: u64, records: u64, open_extents: u64) -> Result<f64> {
    let disk = Arc::new(Disk::open(dir, DiskOptions::default()).context("open disk")?);
    let per_extent = records / extents.max(1);
    let payload = Arc::new(vec![0xA5u8; POPULATE_PAYLOAD_BYTES]);
    let sha = [0u8; 32];
    let start = Instant::now();
    for volume in 0..extents {
        let id = disk.create_replica(volume)?;
        let next = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..POPULATE_WRITERS)
            .map(|_| {
                let (disk, next, payload) = (disk.clone(), next.clone(), payload.clone());
                std::thread::spawn(move || -> Result<()> {
                    while next.fetch_add(1, Ordering::Relaxed) < per_extent {
                        disk.append(id, None, &sha, &payload)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("populating thread panicked"))??;
        }
        if volume >= open_extents {
            disk.seal_replica(id, None)?;
        }
        if volume % 500 == 0 {
            eprintln!("populated {volume}/{extents} extents ({:.0}s)", start.elapsed().as_secs_f64());
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Opens the disk (recovering its open extents) and returns (extents, records verified by
/// recovery, seconds).
pub fn open_and_count(dir: &Path) -> Result<(usize, u64, f64)> {
    let start = Instant::now();
    let disk = Disk::open(dir, DiskOptions::default()).context("open disk")?;
    let verified = disk.open_report().recovered.iter().map(|(_, r)| r.records_verified).sum();
    let extents = disk.list().len();
    // Touch one record of every extent so that the open path is exercised end to end.
    for info in disk.list() {
        if info.length_bytes > 0 {
            disk.read_record(ExtentId::replica(info.id.volume_id), 0)?;
        }
    }
    Ok((extents, verified, start.elapsed().as_secs_f64()))
}

/// Peak resident memory of this process, in KiB (VmHWM).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
