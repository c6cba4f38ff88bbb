//! A test-only backend that wraps another and injects faults: every operation failing
//! after N, a crash after N more bytes written (leaving a torn write behind), short reads
//! and writes, and bits flipped in the bytes a read returns. Tests share the [`FaultPlan`]
//! with the backend and change it while the disk runs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{IoBackend, IoFile};

/// What the fault backend does; shared between the test and the backend.
#[derive(Debug, Default)]
pub struct FaultPlan {
    state: Mutex<FaultState>,
    /// Signalled after every successful write, for syncs held back until enough writes.
    wrote: Condvar,
    /// Signalled when hung reads are released.
    released: Condvar,
}

/// How long a held-back sync waits for the writes it expects before going ahead anyway.
const HOLD_SYNC_DEADLINE: Duration = Duration::from_secs(30);
/// How long a hung read waits to be released before it goes ahead anyway (a test that
/// forgot to release it still ends).
const HANG_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct FaultState {
    /// Operations (read, write, sync, truncate) performed so far.
    ops: u64,
    /// Once `ops` reaches this, every operation fails with EIO.
    fail_after_ops: Option<u64>,
    /// Bytes that may still be written before the simulated crash.
    write_budget_bytes: Option<u64>,
    /// After the crash every operation fails, as if the process were gone.
    crashed: bool,
    /// Each read or write transfers at most this many bytes (legal short I/O).
    short_io_max_bytes: Option<usize>,
    /// (file, offset in file, bit) flipped in every read that covers it.
    flips: Vec<(PathBuf, u64, u8)>,
    /// (file, offset in file): every read covering it fails with EIO, as over a sector the
    /// device can no longer read.
    unreadable: Vec<(PathBuf, u64)>,
    /// Files whose reads hang (a device that stopped answering) until released.
    hung: Vec<PathBuf>,
    /// Successful writes so far.
    writes: u64,
    /// Syncs so far.
    syncs: u64,
    /// The next sync waits until this many writes have happened.
    hold_sync_until_writes: Option<u64>,
    /// Writes fail with ENOSPC (reads and syncs still work), as on a full disk: each write
    /// of two bytes or more first gets half of its bytes in (a short write), then ENOSPC.
    disk_full: bool,
    /// The last write under `disk_full` was short: the next one fails.
    short_write_done: bool,
    /// The catalog refuses every write as out of space.
    catalog_full: bool,
    /// (capacity, free) bytes the disk is told its file system has.
    fs_space: Option<(u64, u64)>,
}

impl FaultPlan {
    /// A plan that injects nothing until told to.
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    fn lock(&self) -> MutexGuard<'_, FaultState> {
        // A test thread that panicked while holding the lock leaves valid state behind.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// From now on every write fails with ENOSPC, as on a full file system (reads, syncs
    /// and truncates still work), until [`FaultPlan::clear`].
    pub fn disk_full(&self) {
        self.lock().disk_full = true;
    }

    /// From now on the disk's catalog refuses every write as out of space (RocksDB's log
    /// on a full file system), until [`FaultPlan::clear`]; extent files are untouched.
    pub fn catalog_full(&self) {
        self.lock().catalog_full = true;
    }

    /// From now on the disk is told its file system has `capacity_bytes`, of which
    /// `free_bytes` are free (what `statvfs` would say), whatever it writes (a trash
    /// purge's unlinks give their allocated bytes back), until [`FaultPlan::clear`].
    pub fn fs_space(&self, capacity_bytes: u64, free_bytes: u64) {
        self.lock().fs_space = Some((capacity_bytes, free_bytes));
    }

    /// Every operation from the `n`-th on (counting from now) fails with EIO.
    pub fn fail_after_ops(&self, n: u64) {
        let mut s = self.lock();
        s.fail_after_ops = Some(s.ops + n);
    }

    /// Lets `n` more bytes reach the file, then "crashes": the write that crosses the
    /// budget stores only its first bytes and fails, and so does every later operation.
    pub fn crash_after_bytes(&self, n: u64) {
        self.lock().write_budget_bytes = Some(n);
    }

    /// Limits every read and write to `max_bytes` per call.
    pub fn short_io(&self, max_bytes: usize) {
        self.lock().short_io_max_bytes = Some(max_bytes.max(1));
    }

    /// Flips `bit` (0..8) of the byte at `offset_bytes` of `path` in every read covering it.
    pub fn flip_bit_on_read(&self, path: &Path, offset_bytes: u64, bit: u8) {
        self.lock().flips.push((path.to_path_buf(), offset_bytes, bit % 8));
    }

    /// Makes every read of `path` that covers `offset_bytes` fail with EIO (an
    /// `io::Error` carrying the errno, as from the kernel), as over a latent sector error.
    pub fn unreadable_at(&self, path: &Path, offset_bytes: u64) {
        self.lock().unreadable.push((path.to_path_buf(), offset_bytes));
    }

    /// Makes every read of `path` hang, as on a device that stopped answering, until
    /// [`FaultPlan::release_hung`] (or a deadline of a minute).
    pub fn hang_reads_of(&self, path: &Path) {
        self.lock().hung.push(path.to_path_buf());
    }

    /// Lets every hung read go on, and later reads of those files run at once.
    pub fn release_hung(&self) {
        self.lock().hung.clear();
        self.released.notify_all();
    }

    /// Makes the next sync wait until `n` more writes have completed (so a test can line up
    /// many appenders behind one fsync without relying on timing).
    pub fn hold_next_sync_until_writes(&self, n: u64) {
        let mut s = self.lock();
        s.hold_sync_until_writes = Some(s.writes + n);
    }

    /// Syncs (fdatasync calls) performed so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Successful writes performed so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// True once the simulated crash happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Operations performed so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Removes every fault (the crash flag included).
    pub fn clear(&self) {
        let mut s = self.lock();
        let (ops, writes, syncs) = (s.ops, s.writes, s.syncs);
        *s = FaultState { ops, writes, syncs, ..FaultState::default() };
        self.released.notify_all();
    }

    fn begin_op(&self) -> io::Result<MutexGuard<'_, FaultState>> {
        let mut s = self.lock();
        if s.crashed {
            return Err(injected("crashed"));
        }
        if let Some(limit) = s.fail_after_ops
            && s.ops >= limit
        {
            return Err(injected("fail after N operations"));
        }
        s.ops += 1;
        Ok(s)
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected fault: {what} (EIO)"))
}

/// Wraps a real backend and applies a [`FaultPlan`].
pub struct FaultBackend {
    inner: Arc<dyn IoBackend>,
    plan: Arc<FaultPlan>,
}

impl FaultBackend {
    /// Wraps `inner`; the test keeps a clone of `plan` to steer the faults.
    pub fn new(inner: Arc<dyn IoBackend>, plan: Arc<FaultPlan>) -> FaultBackend {
        FaultBackend { inner, plan }
    }
}

impl IoBackend for FaultBackend {
    fn name(&self) -> String {
        format!("fault({})", self.inner.name())
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let inner = self.inner.open(path)?;
        Ok(Arc::new(FaultFile { inner, path: path.to_path_buf(), plan: self.plan.clone() }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let inner = self.inner.create_new(path)?;
        Ok(Arc::new(FaultFile { inner, path: path.to_path_buf(), plan: self.plan.clone() }))
    }

    fn fs_space(&self) -> Option<(u64, u64)> {
        self.plan.lock().fs_space
    }

    fn catalog_full(&self) -> bool {
        self.plan.lock().catalog_full
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let allocated_bytes = std::fs::metadata(path).map_or(0, |m| m.blocks().saturating_mul(512));
        self.inner.remove_file(path)?;
        if let Some((_, free)) = self.plan.lock().fs_space.as_mut() {
            *free = free.saturating_add(allocated_bytes);
        }
        Ok(())
    }
}

struct FaultFile {
    inner: Arc<dyn IoFile>,
    path: PathBuf,
    plan: Arc<FaultPlan>,
}

impl IoFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (len, flips) = {
            let mut s = self.plan.begin_op()?;
            let deadline = Instant::now() + HANG_DEADLINE;
            while s.hung.contains(&self.path) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                s = self.plan.released.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            let covers = |at: u64| at >= offset && at < offset + buf.len() as u64;
            if s.unreadable.iter().any(|(path, at)| *path == self.path && covers(*at)) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let len = s.short_io_max_bytes.map_or(buf.len(), |max| buf.len().min(max));
            let flips: Vec<(u64, u8)> = s
                .flips
                .iter()
                .filter(|(path, _, _)| *path == self.path)
                .map(|(_, at, bit)| (*at, *bit))
                .collect();
            (len, flips)
        };
        let n = self.inner.read_at(&mut buf[..len], offset)?;
        for (at, bit) in flips {
            if at >= offset && at < offset + n as u64 {
                buf[(at - offset) as usize] ^= 1 << bit;
            }
        }
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        let len = {
            let mut s = self.plan.begin_op()?;
            let mut len = s.short_io_max_bytes.map_or(buf.len(), |max| buf.len().min(max));
            if s.disk_full {
                if s.short_write_done || len < 2 {
                    s.short_write_done = false;
                    return Err(io::Error::from_raw_os_error(libc::ENOSPC));
                }
                s.short_write_done = true;
                len /= 2;
            }
            if let Some(budget) = s.write_budget_bytes {
                if (len as u64) > budget {
                    // The torn write: a prefix reaches the file, then the process is gone.
                    let keep = budget as usize;
                    if keep > 0 {
                        let _ = crate::io::write_all_at(self.inner.as_ref(), &buf[..keep], offset);
                    }
                    s.crashed = true;
                    return Err(injected("crash during write"));
                }
                s.write_budget_bytes = Some(budget - len as u64);
            }
            len
        };
        let n = self.inner.write_at(&buf[..len], offset)?;
        self.plan.lock().writes += 1;
        self.plan.wrote.notify_all();
        Ok(n)
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut s = self.plan.begin_op()?;
            s.syncs += 1;
            if let Some(target) = s.hold_sync_until_writes.take() {
                let deadline = Instant::now() + HOLD_SYNC_DEADLINE;
                while s.writes < target {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    s = self.plan.wrote.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
                }
            }
        }
        self.inner.sync_data()
    }

    fn len_bytes(&self) -> io::Result<u64> {
        self.inner.len_bytes()
    }

    fn set_len(&self, len_bytes: u64) -> io::Result<()> {
        drop(self.plan.begin_op()?);
        self.inner.set_len(len_bytes)
    }

    fn allocate(&self, len_bytes: u64) -> io::Result<()> {
        let s = self.plan.begin_op()?;
        if s.disk_full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        drop(s);
        self.inner.allocate(len_bytes)
    }
}
