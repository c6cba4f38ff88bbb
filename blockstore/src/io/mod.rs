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
    let Ok(offset) = libc::off_t::try_from(offset) else { return false };
    let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: `iov` describes `buf`, which is exclusively borrowed for this call.
    let n = unsafe { libc::preadv2(fd, &iov, 1, offset, libc::RWF_NOWAIT) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
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
