//! `cellar selfcheck`: a real end-to-end exercise of the blockstore on a scratch
//! directory, for a newcomer's first run and for an operator checking a new machine
//! (io_uring allowed? fsync working? checksums catching corruption?).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cellar_blockstore::{
    Disk, DiskOptions, EXTENT_DATA_OFFSET_BYTES, Error, ExtentId, IoChoice, now_unix_ms,
};
use sha2::{Digest, Sha256};

/// Concurrent appenders in the group-commit step.
const APPENDERS: u64 = 64;

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn step(name: &str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    let start = Instant::now();
    match f() {
        Ok(detail) => {
            println!("ok    {name:<44} {detail} ({:.0} ms)", start.elapsed().as_secs_f64() * 1e3);
            Ok(())
        }
        Err(e) => {
            println!("FAIL  {name:<44} {e:#}");
            Err(e.context(format!("selfcheck step '{name}'")))
        }
    }
}

pub fn run(dir: Option<PathBuf>, io: IoChoice) -> Result<()> {
    let scratch;
    let root = match dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
                bail!("{} is not empty: selfcheck needs a fresh directory", dir.display());
            }
            dir
        }
        None => {
            scratch = tempfile::tempdir().context("create a temporary directory")?;
            scratch.path().to_path_buf()
        }
    };
    let options = DiskOptions { io, ..DiskOptions::default() };
    println!("cellar {} blockstore selfcheck in {}", env!("CARGO_PKG_VERSION"), root.display());
    let disk = Arc::new(Disk::open(&root, options.clone()).context("open disk")?);
    println!("      I/O backend: {}", disk.io_backend_name());
    let replica = ExtentId::replica(1);
    let mut written = Vec::new();

    step("append and read records of 0 B .. 4 MiB", || {
        disk.create_replica(1)?;
        for (i, size) in [0usize, 1, 4096, 1 << 20, 4 << 20].into_iter().enumerate() {
            let payload = pattern(size, i as u64);
            let loc = disk.append(replica, None, &sha(&payload), &payload)?;
            let back = disk.read_record(replica, loc.offset_bytes)?;
            ensure!(
                back.payload == payload && back.sha256 == sha(&payload),
                "record of {size} bytes differs"
            );
            written.push((loc.offset_bytes, payload));
        }
        Ok(format!("{} records", written.len()))
    })?;

    step("group commit: 64 concurrent appenders", || {
        let threads: Vec<_> = (0..APPENDERS)
            .map(|i| {
                let disk = disk.clone();
                std::thread::spawn(move || -> Result<(u64, Vec<u8>)> {
                    let payload = pattern(4096, 100 + i);
                    Ok((disk.append(replica, None, &sha(&payload), &payload)?.offset_bytes, payload))
                })
            })
            .collect();
        for t in threads {
            let (offset, payload) = t.join().map_err(|_| anyhow::anyhow!("appender panicked"))??;
            ensure!(disk.read_record(replica, offset)?.payload == payload, "record at {offset} differs");
            written.push((offset, payload));
        }
        Ok(format!("{APPENDERS} appends durable"))
    })?;

    step("refuse bad input", || {
        let too_big = vec![0u8; disk.block_size_max_bytes() as usize + 1];
        ensure!(matches!(disk.append(replica, None, &[0; 32], &too_big), Err(Error::RecordTooLarge { .. })));
        ensure!(matches!(disk.read_record(replica, u64::MAX / 2), Err(Error::OffsetPastEnd { .. })));
        ensure!(matches!(disk.read_record(ExtentId::replica(999), 0), Err(Error::UnknownExtent(_))));
        Ok("oversize, past-the-end, unknown extent refused".into())
    })?;

    step("detect a flipped bit", || {
        let (offset, payload) = written.last().cloned().context("no record written")?;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(disk.extent_file_path(replica))?;
        let at = EXTENT_DATA_OFFSET_BYTES + offset + 64 + payload.len() as u64 / 2;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at)?;
        file.write_all_at(&[byte[0] ^ 0x10], at)?;
        let detected = matches!(disk.read_record(replica, offset), Err(Error::Corrupt { .. }));
        file.write_all_at(&byte, at)?;
        ensure!(detected, "a corrupt record was returned as data");
        ensure!(disk.read_record(replica, offset)?.payload == payload);
        Ok("corrupt record refused".into())
    })?;

    step("seal, write and read a fragment", || {
        disk.seal_replica(replica, None)?;
        ensure!(matches!(disk.append(replica, None, &[0; 32], b"x"), Err(Error::Sealed(_))));
        let len = 3 * 65536 + 1000;
        let data = pattern(len, 7);
        let fragment = disk.create_fragment(2, 0, len as u64, 65536)?;
        disk.write_fragment(fragment, 0, &data)?;
        disk.seal_fragment(fragment)?;
        ensure!(disk.read_fragment(fragment, 65000, 70000)? == data[65000..135000]);
        Ok("sealed replica and fragment".into())
    })?;

    drop(disk);
    let disk = Disk::open(&root, options).context("reopen disk")?;
    step("reopen: every record intact", || {
        for (offset, payload) in &written {
            ensure!(disk.read_record(replica, *offset)?.payload == *payload, "record at {offset} differs");
        }
        Ok(format!("{} records", written.len()))
    })?;

    step("delete to trash, purge after retention", || {
        let retention = Duration::from_secs(3600);
        let entry = disk.delete(ExtentId::fragment(2, 0))?;
        ensure!(disk.purge_trash(retention)?.purged == 0, "purged before the retention time");
        let report = disk.purge_trash_at(now_unix_ms() + retention.as_millis() as u64, retention)?;
        ensure!(report.purged == 1 && report.freed_bytes == entry.size_bytes);
        Ok(format!("{} bytes freed", report.freed_bytes))
    })?;

    let stat = disk.stat()?;
    println!(
        "      disk: {} extents, {} bytes used, {} of {} bytes free",
        stat.extents, stat.used_bytes, stat.free_bytes, stat.capacity_bytes
    );
    println!("selfcheck passed");
    Ok(())
}
