//! I/O behind a trait. The blockstore never calls the file system's read and write
//! directly: it goes through an [`IoBackend`], so that io_uring, plain pread/pwrite and a
//! fault-injecting test backend are interchangeable and pass one test suite.

use std::io;
use std::path::Path;
use std::sync::Arc;

pub mod direct;
pub mod fault;
pub mod pread;
#[cfg(target_os = "linux")]
pub mod uring;

/// Opens files for the blockstore.
pub trait IoBackend: Send + Sync {
    /// Short name for logs and stats ("io-uring", "pread", "fault(pread)").
    fn name(&self) -> String;

    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>>;

    /// Creates a new file; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn IoFile>>;

    /// A second handle on the existing file `path` for aligned direct writes
    /// ([`direct`]); `None` (the default) keeps every write buffered. The fault injector
    /// offers none, so the faults it plans apply to every write.
    fn open_direct(&self, _path: &Path) -> io::Result<Option<direct::DirectFile>> {
        Ok(None)
    }

    /// A read-only handle on the existing file `path` for large direct reads
    /// ([`direct::DirectFile::read_into`]); `None` (the default) keeps every read on
    /// [`IoFile::read_at`], so the fault injector's faults apply to every read.
    fn open_direct_read(&self, _path: &Path) -> io::Result<Option<direct::DirectFile>> {
        Ok(None)
    }

    /// (capacity, free) bytes of a simulated file system, in place of the real one's
    /// (`statvfs`); `None` (the default) for the real one. The fault injector's
    /// [`fault::FaultPlan::fs_space`].
    fn fs_space(&self) -> Option<(u64, u64)> {
        None
    }

    /// Whether the disk's catalog refuses writes as if out of space; `false` (the
    /// default) but under the fault injector's [`fault::FaultPlan::catalog_full`]
    /// (RocksDB writes its own files, past this backend).
    fn catalog_full(&self) -> bool {
        false
    }

    /// Unlinks a file (a trash entry's); the fault injector gives its allocated bytes
    /// back to a simulated file system's free space.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// Positional I/O on one open file. Implementations may transfer fewer bytes than asked
/// (like `pread`/`pwrite`); use [`read_exact_at`] and [`write_all_at`].
pub trait IoFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means end of file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes up to `buf.len()` bytes at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;

    /// Makes every completed write durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Current file length.
    fn len_bytes(&self) -> io::Result<u64>;

    /// Allocates the file's first `len_bytes` on the device (`fallocate`, the length
    /// unchanged past it), so that writes within them cannot fail for want of space; a
    /// file system that cannot allocate ahead (EOPNOTSUPP) leaves the file sparse.
    fn allocate(&self, len_bytes: u64) -> io::Result<()>;

    /// Truncates or extends the file.
    fn set_len(&self, len_bytes: u64) -> io::Result<()>;

    /// Fills all of `buf` from `offset` only if no wait for the device is needed (the
    /// bytes are in the page cache): `true` when `buf` was filled; `false` when the read
    /// would block, came up short, failed, or the backend cannot tell. Never an error: the
    /// caller falls back to [`IoFile::read_at`] on a thread that may block, and that read
    /// reports whatever went wrong. For async callers that must not block their thread.
    fn read_cached_at(&self, _buf: &mut [u8], _offset: u64) -> bool {
        false
    }
}

/// `preadv2(RWF_NOWAIT)` of all of `buf` (see [`IoFile::read_cached_at`]).
#[cfg(target_os = "linux")]
pub(crate) fn pread_nowait(fd: std::os::fd::RawFd, buf: &mut [u8], offset: u64) -> bool {
    if buf.is_empty() {
        return true;
    }
    if buf.len() >= CACHESTAT_MIN_BYTES && cached_pages_short(fd, offset, buf.len()) {
        return false;
    }
    let Ok(offset) = libc::off_t::try_from(offset) else { return false };
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, which is exclusively borrowed for this call.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
}

/// Reads at least this long ask the kernel first whether every page is cached
/// ([`cached_pages_short`]); shorter ones just try.
#[cfg(target_os = "linux")]
const CACHESTAT_MIN_BYTES: usize = 64 << 10;

/// `cachestat(2)`'s number: the same on every architecture (Linux 6.5 and later).
#[cfg(target_os = "linux")]
const SYS_CACHESTAT: libc::c_long = 451;

/// Set once `cachestat(2)` is found missing or refused (an older kernel, a seccomp
/// profile): from then on reads just try.
#[cfg(target_os = "linux")]
static CACHESTAT_UNAVAILABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the page cache is known to lack some page of `len_bytes` at `offset_bytes` of
/// `fd`, asked with `cachestat(2)`: a `RWF_NOWAIT` read of a partly cached range copies the
/// cached head and then gives up, and the caller reads all of it again from the device
/// (seen here: nearly half the large cached-read attempts under 32 concurrent 4 MiB gets
/// came up short, each after copying 1-3 MiB for nothing). `false` when unknown.
#[cfg(target_os = "linux")]
pub(crate) fn cached_pages_short(fd: std::os::fd::RawFd, offset_bytes: u64, len_bytes: usize) -> bool {
    use std::sync::atomic::Ordering;
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    if len_bytes == 0 || CACHESTAT_UNAVAILABLE.load(Ordering::Relaxed) {
        return false;
    }
    let range = Range { off: offset_bytes, len: len_bytes as u64 };
    let mut stat = Stat::default();
    // SAFETY: `range` and `stat` are live, correctly laid out (the kernel's
    // `struct cachestat_range` and `struct cachestat`) for the call; flags must be 0.
    let rc = unsafe {
        libc::syscall(SYS_CACHESTAT, fd, &range as *const Range, &mut stat as *mut Stat, 0 as libc::c_uint)
    };
    if rc != 0 {
        let errno = io::Error::last_os_error().raw_os_error();
        if matches!(errno, Some(libc::ENOSYS) | Some(libc::EPERM)) {
            CACHESTAT_UNAVAILABLE.store(true, Ordering::Relaxed);
        }
        return false;
    }
    // The kernel counts the pages of the range that are cached, whole folios clipped to it.
    let page = page_bytes();
    let first = offset_bytes / page;
    let last = (offset_bytes + len_bytes as u64 - 1) / page;
    stat.nr_cache < last - first + 1
}

#[cfg(target_os = "linux")]
fn page_bytes() -> u64 {
    static PAGE_BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE_BYTES.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
}

/// Reads exactly `buf.len()` bytes, or fails with `UnexpectedEof` if the file is shorter.
pub fn read_exact_at(file: &dyn IoFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf`, looping over short writes.
pub fn write_all_at(file: &dyn IoFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Which backend a disk uses.
#[derive(Clone)]
pub enum IoChoice {
    /// io_uring where the kernel allows it, pread/pwrite otherwise.
    Auto,
    /// io_uring, failing if the kernel refuses it.
    Uring,
    /// Portable pread/pwrite.
    Pread,
    /// A caller-supplied backend (tests: the fault injector).
    Custom(Arc<dyn IoBackend>),
}

impl std::fmt::Debug for IoChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoChoice::Auto => write!(f, "Auto"),
            IoChoice::Uring => write!(f, "Uring"),
            IoChoice::Pread => write!(f, "Pread"),
            IoChoice::Custom(b) => write!(f, "Custom({})", b.name()),
        }
    }
}

impl IoChoice {
    /// Builds the backend. `Auto` probes io_uring once and falls back to pread/pwrite when
    /// the kernel (or a seccomp profile) refuses it.
    pub fn build(&self) -> io::Result<Arc<dyn IoBackend>> {
        match self {
            IoChoice::Pread => Ok(Arc::new(pread::PreadBackend)),
            IoChoice::Custom(backend) => Ok(backend.clone()),
            IoChoice::Uring => uring_backend(),
            IoChoice::Auto => match uring_backend() {
                Ok(backend) => Ok(backend),
                Err(e) => {
                    tracing::info!(error = %e, "io_uring unavailable; using pread/pwrite");
                    Ok(Arc::new(pread::PreadBackend))
                }
            },
        }
    }
}

#[cfg(target_os = "linux")]
fn uring_backend() -> io::Result<Arc<dyn IoBackend>> {
    Ok(Arc::new(uring::UringBackend::probe()?))
}

#[cfg(not(target_os = "linux"))]
fn uring_backend() -> io::Result<Arc<dyn IoBackend>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "io_uring exists only on Linux"))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;

    use super::{CACHESTAT_UNAVAILABLE, cached_pages_short, pread_nowait};

    #[test]
    fn cachestat_sees_a_partly_cached_range_and_nowait_reads_skip_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).expect("write");
        let file = std::fs::File::open(&path).expect("open");
        file.sync_all().expect("sync");
        let fd = file.as_raw_fd();
        // Written through the page cache: all of it is there (unless the machine is
        // under memory pressure, which tests here are not).
        assert!(!cached_pages_short(fd, 0, bytes.len()));
        // Drop it all from the cache (a large folio may not be dropped in part), then
        // read the first half back in.
        // SAFETY: a plain advice call on a descriptor we own.
        let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        // No readahead past what is read.
        // SAFETY: as above.
        let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_RANDOM) };
        assert_eq!(rc, 0);
        let mut head = vec![0u8; 512 << 10];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).expect("read the first half");
        assert_eq!(&head[..], &bytes[..512 << 10]);
        if CACHESTAT_UNAVAILABLE.load(Ordering::Relaxed) {
            eprintln!("cachestat(2) is not available here: nothing more to check");
            return;
        }
        assert!(cached_pages_short(fd, 0, bytes.len()), "the whole file");
        assert!(cached_pages_short(fd, (512 << 10) - 1, 2), "a range straddling the dropped half");
        assert!(!cached_pages_short(fd, 4096, (512 << 10) - 4096), "the cached half");
        assert!(!cached_pages_short(fd, 100, 0), "nothing asked");
        let mut buf = vec![0u8; 256 << 10];
        assert!(!pread_nowait(fd, &mut buf, 384 << 10), "a large read reaching the dropped half");
        assert!(buf.iter().all(|&b| b == 0), "nothing was copied");
        assert!(pread_nowait(fd, &mut buf, 0), "a large cached read");
        assert_eq!(&buf[..], &bytes[..256 << 10]);
    }
}

/// `fallocate(fd, 0, 0, len_bytes)` on `file` (see [`IoFile::allocate`]).
pub(crate) fn fallocate(file: &std::fs::File, len_bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len_bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: a plain system call on a descriptor `file` owns; it touches no memory of
        // ours.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return Ok(()),
            _ => return Err(e),
        }
    }
}
