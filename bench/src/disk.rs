//! Blockstore benchmark: append+fsync throughput (4 MiB and 4 KiB records, 1 and 64
//! writers) and sequential read throughput, each beside plain `pwrite`+`fdatasync` and
//! `pread` of the same bytes in the same directory, measured in the same run.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cellar_blockstore::io::direct::{AlignedBuf, DirectFile};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cellar_blockstore::{Disk, DiskOptions, ExtentId, IoChoice};
use sha2::{Digest, Sha256};

use crate::report::Row;

/// What to run.
#[derive(Debug, Clone)]
pub struct DiskBenchConfig {
    /// An empty (or new) directory on the device to measure.
    pub dir: PathBuf,
    /// Bytes written per 4 MiB-record measurement.
    pub large_total_bytes: u64,
    /// Records written per 4 KiB-record measurement with 64 writers.
    pub small_records: u64,
    /// I/O backend.
    pub io: IoChoice,
}

const LARGE_BYTES: usize = 4 << 20;
const SMALL_BYTES: usize = 4 << 10;
const WRITERS_MANY: u64 = 64;

/// Runs every measurement and returns the rows in order.
pub fn run(config: &DiskBenchConfig) -> Result<Vec<Row>> {
    std::fs::create_dir_all(&config.dir).with_context(|| format!("create {}", config.dir.display()))?;
    if std::fs::read_dir(&config.dir)?.next().is_some() {
        bail!("{} is not empty: the benchmark needs a fresh directory", config.dir.display());
    }
    let payload_large = pattern(LARGE_BYTES);
    let payload_small = pattern(SMALL_BYTES);
    let large_records = (config.large_total_bytes / LARGE_BYTES as u64).max(1);
    let small_records_single = (config.small_records / 10).max(100);
    let raw_dir = config.dir.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let disk =
        Disk::open(config.dir.join("disk"), DiskOptions { io: config.io.clone(), ..DiskOptions::default() })
            .context("open benchmark disk")?;
    eprintln!("disk I/O backend: {}", disk.io_backend_name());
    let disk = Arc::new(disk);
    let mut rows = Vec::new();

    let raw_large = raw_write(&raw_dir.join("large"), &payload_large, large_records, true)?;
    let raw_large_mbps = raw_large.mb_per_sec();
    let raw_bw = raw_write(&raw_dir.join("bandwidth"), &payload_large, large_records, false)?;
    rows.push(raw_large);
    rows.push(raw_bw);
    for writers in [1, WRITERS_MANY] {
        let mut row = appends(&disk, 1 + writers, &payload_large, large_records, writers)?;
        row.baseline = Some(("raw 4MiB write+fdatasync".into(), raw_large_mbps));
        rows.push(row);
    }

    let raw_small = raw_write(&raw_dir.join("small"), &payload_small, small_records_single, true)?;
    let raw_small_mbps = raw_small.mb_per_sec();
    rows.push(raw_small);
    for (writers, records) in [(1, small_records_single), (WRITERS_MANY, config.small_records)] {
        let mut row = appends(&disk, 100 + writers, &payload_small, records, writers)?;
        row.baseline = Some(("raw 4KiB write+fdatasync".into(), raw_small_mbps));
        rows.push(row);
    }

    // Sequential reads with the page cache dropped for both files.
    let raw_path = raw_dir.join("large");
    drop_cache(&raw_path)?;
    let raw_read = raw_read(&raw_path, LARGE_BYTES, large_records)?;
    let raw_read_mbps = raw_read.mb_per_sec();
    rows.push(raw_read);
    let id = ExtentId::replica(1 + WRITERS_MANY);
    drop_cache(&disk.extent_file_path(id))?;
    let mut row = sequential_reads(&disk, id)?;
    row.baseline = Some(("raw 4MiB pread".into(), raw_read_mbps));
    rows.push(row);
    Ok(rows)
}

fn pattern(len: usize) -> Vec<u8> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Raw `pwrite` of `count` payloads to a new file at `path`, with an fdatasync after each
/// (or one at the end): the device's own speed, for comparison.
pub fn raw_write(path: &Path, payload: &[u8], count: u64, fsync_each: bool) -> Result<Row> {
    let file = OpenOptions::new().create_new(true).read(true).write(true).open(path)?;
    let start = Instant::now();
    for i in 0..count {
        file.write_all_at(payload, i * payload.len() as u64)?;
        if fsync_each {
            file.sync_data()?;
        }
    }
    file.sync_data()?;
    let size = if payload.len() >= 1 << 20 { "4MiB" } else { "4KiB" };
    let name = if fsync_each {
        format!("raw {size} write+fdatasync, 1 writer")
    } else {
        format!("raw {size} write, one fdatasync at end")
    };
    Ok(Row {
        name,
        ops: count,
        bytes: count * payload.len() as u64,
        elapsed: start.elapsed(),
        baseline: None,
    })
}

/// `writers` threads at once, each writing `count` payloads to its own new file in `dir`
/// with an `fdatasync` after every write: the device's fsynced write bandwidth when many
/// files are written at once (as a cell's disks on one device are). With `direct`, the
/// writes bypass the page cache (`O_DIRECT`, as the blockstore's large appends do; the
/// payload's length must be a multiple of 4 KiB); `Ok(None)` if the file system refuses
/// that. The files are removed.
pub fn raw_write_concurrent(
    dir: &Path,
    payload: &[u8],
    count: u64,
    writers: u64,
    direct: bool,
) -> Result<Option<Row>> {
    if direct {
        let probe = dir.join(format!("cellar-raw-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        let supported = DirectFile::open(&probe);
        let _ = std::fs::remove_file(&probe);
        if supported?.is_none() {
            return Ok(None);
        }
    }
    let payload = Arc::new(payload.to_vec());
    let paths: Vec<PathBuf> =
        (0..writers).map(|w| dir.join(format!("cellar-raw-{}-{w}", std::process::id()))).collect();
    let start = Instant::now();
    let threads: Vec<_> = paths
        .iter()
        .cloned()
        .map(|path| {
            let payload = payload.clone();
            std::thread::spawn(move || -> Result<()> {
                let file = OpenOptions::new().create_new(true).read(true).write(true).open(&path)?;
                if direct {
                    let Some(direct_file) = DirectFile::open(&path)? else {
                        anyhow::bail!("O_DIRECT refused on {}", path.display());
                    };
                    let mut buf = AlignedBuf::take(payload.len());
                    buf.extend_from_slice(&payload);
                    for i in 0..count {
                        direct_file.write_all_at(buf.as_slice(), i * payload.len() as u64)?;
                        file.sync_data()?;
                    }
                    return Ok(());
                }
                for i in 0..count {
                    file.write_all_at(&payload, i * payload.len() as u64)?;
                    file.sync_data()?;
                }
                Ok(())
            })
        })
        .collect();
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(r) => result = result.and(r),
            Err(_) => result = Err(anyhow::anyhow!("a writer thread panicked")),
        }
    }
    let elapsed = start.elapsed();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    result?;
    let how = if direct { "direct write" } else { "write" };
    Ok(Some(Row {
        name: format!("raw {} KiB {how}+fdatasync, {writers} writers", payload.len() >> 10),
        ops: count * writers,
        bytes: count * writers * payload.len() as u64,
        elapsed,
        baseline: None,
    }))
}

fn appends(disk: &Arc<Disk>, volume_id: u64, payload: &[u8], records: u64, writers: u64) -> Result<Row> {
    let id = disk.create_replica(volume_id)?;
    let sha: [u8; 32] = Sha256::digest(payload).into();
    let next = Arc::new(AtomicU64::new(0));
    let payload = Arc::new(payload.to_vec());
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (disk, next, payload) = (disk.clone(), next.clone(), payload.clone());
            std::thread::spawn(move || -> Result<()> {
                while next.fetch_add(1, Ordering::Relaxed) < records {
                    disk.append(id, None, &sha, &payload)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("appender panicked"))??;
    }
    let elapsed = start.elapsed();
    disk.seal_replica(id, None)?;
    let size = if payload.len() >= 1 << 20 { "4MiB" } else { "4KiB" };
    Ok(Row {
        name: format!("append {size} records, {writers} writer(s)"),
        ops: records,
        bytes: records * payload.len() as u64,
        elapsed,
        baseline: None,
    })
}

fn drop_cache(path: &Path) -> Result<()> {
    let file = File::open(path)?;
    file.sync_all()?;
    // SAFETY: a valid open fd; posix_fadvise only gives the kernel a hint.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise({}) failed: {rc}", path.display());
    }
    Ok(())
}

fn raw_read(path: &Path, block: usize, count: u64) -> Result<Row> {
    let file = File::open(path)?;
    let mut buf = vec![0u8; block];
    let start = Instant::now();
    for i in 0..count {
        file.read_exact_at(&mut buf, i * block as u64)?;
    }
    Ok(Row {
        name: "raw 4MiB pread, sequential".into(),
        ops: count,
        bytes: count * block as u64,
        elapsed: start.elapsed(),
        baseline: None,
    })
}

fn sequential_reads(disk: &Disk, id: ExtentId) -> Result<Row> {
    let end = disk.extent_info(id)?.length_bytes;
    let start = Instant::now();
    let (mut offset, mut ops, mut bytes) = (0u64, 0u64, 0u64);
    while offset < end {
        let record = disk.read_record(id, offset)?;
        offset += (cellar_format::RECORD_HEADER_BYTES + record.payload.len()) as u64;
        ops += 1;
        bytes += record.payload.len() as u64;
    }
    Ok(Row {
        name: "read 4MiB records (CRC-checked), sequential".into(),
        ops,
        bytes,
        elapsed: start.elapsed(),
        baseline: None,
    })
}
