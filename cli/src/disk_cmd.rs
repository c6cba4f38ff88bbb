//! `cellar disk ...`: operator commands on one disk directory (offline: the catalog's
//! RocksDB lock refuses a disk that a running process holds).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cellar_blockstore::{Disk, DiskOptions, ExtentPart};
use clap::Subcommand;

/// Bytes read per fragment verification step.
const VERIFY_STEP_BYTES: u64 = 16 << 20;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Capacity, usage and extent counts.
    Stat {
        /// The disk directory.
        dir: PathBuf,
    },
    /// Every extent with its state and length.
    List {
        /// The disk directory.
        dir: PathBuf,
    },
    /// Read every record and chunk and check its checksums; exits non-zero if any fail.
    Verify {
        /// The disk directory.
        dir: PathBuf,
    },
    /// Format a new, empty disk in DIR (created if missing). A volume server formats new
    /// disks itself, except a directory that is not a mount point while its other disks
    /// are (a mount that did not happen, not formatted on the file system underneath): run
    /// this to put a disk in such a directory on purpose. A directory holding a disk is
    /// left as it is.
    Format {
        /// The disk directory.
        dir: PathBuf,
    },
}

fn open(dir: &PathBuf) -> Result<Disk> {
    if !Disk::is_formatted(dir) {
        bail!("{} is not a cellar disk (no catalog/)", dir.display());
    }
    let disk =
        Disk::open(dir, DiskOptions::default()).with_context(|| format!("open disk {}", dir.display()))?;
    let report = disk.open_report();
    for (id, recovery) in &report.recovered {
        eprintln!(
            "recovered {id}: verified {} records, truncated {} bytes",
            recovery.records_verified, recovery.truncated_bytes
        );
    }
    for id in &report.missing {
        eprintln!("MISSING {id}: in the catalog, file gone");
    }
    for (id, why) in &report.damaged {
        eprintln!("DAMAGED {id}: {why}");
    }
    for id in &report.orphans_trashed {
        eprintln!("orphan {id} moved to the trash");
    }
    Ok(disk)
}

pub fn run(cmd: DiskCommand) -> Result<()> {
    match cmd {
        DiskCommand::Stat { dir } => {
            let disk = open(&dir)?;
            let s = disk.stat()?;
            println!("disk          {}", dir.display());
            println!("uuid          {}", hex::encode(disk.identity().disk_uuid));
            println!("io backend    {}", disk.io_backend_name());
            println!("capacity      {} bytes", s.capacity_bytes);
            println!("free          {} bytes", s.free_bytes);
            println!(
                "used          {} bytes in {} extents ({} open)",
                s.used_bytes, s.extents, s.open_extents
            );
            println!("trash         {} bytes in {} extents", s.trash_bytes, s.trash_extents);
            Ok(())
        }
        DiskCommand::List { dir } => {
            let disk = open(&dir)?;
            println!("{:<24} {:<7} {:>14} {:>10} failed", "extent", "state", "length_bytes", "chunk");
            for e in disk.list() {
                println!(
                    "{:<24} {:<7} {:>14} {:>10} {}",
                    e.id, e.state, e.length_bytes, e.chunk_size_bytes, e.failed
                );
            }
            Ok(())
        }
        DiskCommand::Format { dir } => {
            if Disk::is_formatted(&dir) {
                let disk = open(&dir)?;
                println!(
                    "{} already holds disk {}; left as it is",
                    dir.display(),
                    hex::encode(disk.identity().disk_uuid)
                );
                return Ok(());
            }
            let disk = Disk::open(&dir, DiskOptions::default())
                .with_context(|| format!("format disk {}", dir.display()))?;
            println!("formatted {} as disk {}", dir.display(), hex::encode(disk.identity().disk_uuid));
            Ok(())
        }
        DiskCommand::Verify { dir } => {
            let disk = open(&dir)?;
            let (mut good, mut bad) = (0u64, 0u64);
            for info in disk.list() {
                let result: Result<u64> = match info.id.part {
                    ExtentPart::Replica => {
                        let mut records = 0;
                        let mut failure = None;
                        for record in disk.scan_replica(info.id)? {
                            match record {
                                Ok(_) => records += 1,
                                Err(e) => failure = Some(e),
                            }
                        }
                        failure.map_or(Ok(records), |e| Err(e.into()))
                    }
                    ExtentPart::Fragment(_) => (|| {
                        let mut offset = 0;
                        while offset < info.length_bytes {
                            let len = VERIFY_STEP_BYTES.min(info.length_bytes - offset);
                            disk.read_fragment(info.id, offset, len)?;
                            offset += len;
                        }
                        Ok(info.length_bytes.div_ceil(u64::from(info.chunk_size_bytes.max(1))))
                    })(),
                };
                match result {
                    Ok(units) => {
                        good += 1;
                        println!("ok      {} ({units} records/chunks)", info.id);
                    }
                    Err(e) => {
                        bad += 1;
                        println!("CORRUPT {}: {e:#}", info.id);
                    }
                }
            }
            let report = disk.open_report();
            let problems = bad + (report.missing.len() + report.damaged.len()) as u64;
            println!("{good} extents verified, {problems} with problems");
            if problems > 0 {
                bail!("{problems} extents failed verification");
            }
            Ok(())
        }
    }
}
