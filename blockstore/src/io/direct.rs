//! Direct I/O (`O_DIRECT`): large replica appends go from a buffer of ours straight to the
//! device instead of being copied into the page cache first, and large reads of bytes the
//! page cache does not hold come straight from the device into a (pooled, warm) buffer of
//! ours.
//!
//! Measured here (docs/performance.md): the kernel's copy into fresh page-cache pages
//! (`copy_folio_from_iter_atomic`) ran at about 1 GB/s per core and took over half of all
//! CPU under 32 concurrent 4 MiB puts; `dd oflag=direct` moved the same bytes for a tenth
//! of the system time. A direct write must start at an aligned file offset, cover a whole
//! number of aligned units, and come from aligned memory: [`DIRECT_ALIGN_BYTES`] for all
//! three, the largest logical block size found on common devices. Callers build such a
//! write in an [`AlignedBuf`] (pooled, so its pages are warm) and keep the buffered file
//! for everything else; a file system that refuses `O_DIRECT` (tmpfs) leaves them on the
//! buffered path.
//!
//! Reads of at least [`DIRECT_READ_MIN_BYTES`] that the page cache does not hold go direct
//! too ([`read_large`]). What was written direct is not in the page cache, so a buffered
//! read of it costs a device read into freshly allocated page-cache pages plus a copy out
//! of them; here (docs/performance.md) a cold buffered read cost 0.57-1.17 s of system
//! time per GiB against 0.03-0.05 s direct, because every fresh page is also a fault in
//! the hypervisor. Bytes the page cache holds (fragments are written buffered) are copied
//! from it instead: no device wait. Small reads stay buffered: they are cheap either way
//! and the page cache keeps hot small blocks (and answers them without a thread hand-off).

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Mutex;

/// File offsets, lengths and memory addresses of direct writes are multiples of this.
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// Reads shorter than this stay buffered (see the module comment).
pub const DIRECT_READ_MIN_BYTES: usize = 128 << 10;
/// What a direct read needs in its buffer beyond the bytes asked for: up to one unit to
/// align the buffer's address, and up to one unit on each side to align the file range.
pub const DIRECT_READ_SLACK_BYTES: usize = 3 * DIRECT_ALIGN_BYTES;
/// A transparent huge page (x86-64 and arm64 with 4 KiB base pages). A large read starts
/// at a multiple of this inside its buffer when the buffer has room ([`read_large`]), so
/// that a buffer advised with [`advise_huge_pages`] and this much larger than its largest
/// read holds the whole read in huge pages.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Released buffers kept for reuse: at most this many, of at most [`POOL_BYTES_MAX`] in
/// all, each up to [`POOL_BUF_MAX_BYTES`] (larger ones are freed).
const POOL_BUFS_MAX: usize = 32;
/// Bytes of released buffers kept for reuse, at most.
const POOL_BYTES_MAX: usize = 128 << 20;
/// Larger buffers are freed rather than kept.
const POOL_BUF_MAX_BYTES: usize = 16 << 20;
/// Buffers are allocated in size classes, so that a released buffer fits the next request
/// of its class (appends and fragment writes vary in size): powers of two from this up
/// to [`BUF_CLASS_STEP_BYTES`], then multiples of that (a 4 MiB block's staging takes 5
/// MiB, not 8).
const BUF_MIN_BYTES: usize = 64 << 10;
/// See [`BUF_MIN_BYTES`].
const BUF_CLASS_STEP_BYTES: usize = 1 << 20;

static POOL: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

/// Rounds `n` down to a multiple of [`DIRECT_ALIGN_BYTES`].
pub fn align_down(n: u64) -> u64 {
    n - n % DIRECT_ALIGN_BYTES as u64
}

/// Rounds `n` up to a multiple of [`DIRECT_ALIGN_BYTES`].
pub fn align_up(n: u64) -> u64 {
    align_down(n + DIRECT_ALIGN_BYTES as u64 - 1)
}

/// Whether `bytes` may be written directly as they are: aligned address and length.
pub fn is_aligned(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN_BYTES)
        && bytes.len().is_multiple_of(DIRECT_ALIGN_BYTES)
}

/// A heap buffer whose start is [`DIRECT_ALIGN_BYTES`]-aligned and whose capacity is a
/// multiple of it. Taken from a small process-wide pool with [`AlignedBuf::take`] and
/// handed back on drop.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity_bytes: usize,
    len_bytes: usize,
}

// SAFETY: the buffer owns its allocation exclusively; it is plain bytes.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads the bytes.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// An empty buffer able to hold at least `capacity_bytes`, reused from the pool when
    /// one is large enough.
    pub fn take(capacity_bytes: usize) -> AlignedBuf {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        // The smallest that fits: large buffers stay for large requests.
        let fit = (0..pool.len())
            .filter(|&i| pool[i].capacity_bytes >= capacity_bytes)
            .min_by_key(|&i| pool[i].capacity_bytes);
        if let Some(i) = fit {
            let mut buf = pool.swap_remove(i);
            buf.len_bytes = 0;
            return buf;
        }
        drop(pool);
        AlignedBuf::allocate(capacity_bytes)
    }

    fn allocate(capacity_bytes: usize) -> AlignedBuf {
        let capacity_bytes = match capacity_bytes.max(BUF_MIN_BYTES) {
            n if n <= BUF_CLASS_STEP_BYTES => n.next_power_of_two(),
            n => n.div_ceil(BUF_CLASS_STEP_BYTES) * BUF_CLASS_STEP_BYTES,
        };
        let layout = Self::layout(capacity_bytes);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        AlignedBuf { ptr, capacity_bytes, len_bytes: 0 }
    }

    /// Frees the allocation without offering it to the pool.
    fn free(self) {
        let (ptr, capacity_bytes) = (self.ptr, self.capacity_bytes);
        std::mem::forget(self);
        // SAFETY: allocated in `allocate` with this very layout; `self` is forgotten, so
        // nothing else frees or uses it.
        unsafe { std::alloc::dealloc(ptr.as_ptr(), Self::layout(capacity_bytes)) };
    }

    fn layout(capacity_bytes: usize) -> Layout {
        match Layout::from_size_align(capacity_bytes, DIRECT_ALIGN_BYTES) {
            Ok(layout) => layout,
            // Only for sizes near usize::MAX, which no caller asks for.
            Err(_) => panic!("aligned buffer of {capacity_bytes} bytes"),
        }
    }

    /// Bytes it can hold (a multiple of [`DIRECT_ALIGN_BYTES`]).
    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// Empties it, keeping the allocation.
    pub fn clear(&mut self) {
        self.len_bytes = 0;
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// Whether no bytes are held.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Appends `bytes`; panics past the capacity (callers size the buffer for the write).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len_bytes + bytes.len();
        assert!(end <= self.capacity_bytes, "aligned buffer overflow: {end} > {}", self.capacity_bytes);
        // SAFETY: `end` is within the allocation and `bytes` cannot overlap it (we hold
        // the only reference to the allocation mutably).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(self.len_bytes), bytes.len())
        };
        self.len_bytes = end;
    }

    /// Appends zeros up to the next multiple of [`DIRECT_ALIGN_BYTES`].
    pub fn pad_to_alignment(&mut self) {
        let end = align_up(self.len_bytes as u64) as usize;
        assert!(end <= self.capacity_bytes, "aligned buffer overflow: {end} > {}", self.capacity_bytes);
        // SAFETY: `len_bytes..end` lies within the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len_bytes), 0, end - self.len_bytes) };
        self.len_bytes = end;
    }

    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len_bytes` bytes were written by `extend_from_slice` or
        // `pad_to_alignment`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len_bytes) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // `mine` takes over the allocation (nothing of `self` is used after this).
        let mine = AlignedBuf { ptr: self.ptr, capacity_bytes: self.capacity_bytes, len_bytes: 0 };
        if mine.capacity_bytes > POOL_BUF_MAX_BYTES {
            mine.free();
            return;
        }
        // Kept, then the smallest kept buffers go until the pool is within its bounds
        // (freed outside the lock).
        let mut evicted = Vec::new();
        {
            let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
            pool.push(mine);
            let mut bytes: usize = pool.iter().map(|b| b.capacity_bytes).sum();
            while pool.len() > POOL_BUFS_MAX || bytes > POOL_BYTES_MAX {
                let Some(i) = (0..pool.len()).min_by_key(|&i| pool[i].capacity_bytes) else { break };
                let gone = pool.swap_remove(i);
                bytes -= gone.capacity_bytes;
                evicted.push(gone);
            }
        }
        for buf in evicted {
            buf.free();
        }
    }
}

/// The direct-write handle `io` offers for `path`, if any; a failure to open one is
/// logged and leaves the caller on buffered writes.
pub fn open_or_buffered(io: &dyn super::IoBackend, path: &Path) -> Option<std::sync::Arc<DirectFile>> {
    match io.open_direct(path) {
        Ok(direct) => direct.map(std::sync::Arc::new),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open for direct writes; writes stay buffered");
            None
        }
    }
}

/// A read of `len_bytes` at `offset_bytes` of `file` (the extent at `path`), if it is at
/// least [`DIRECT_READ_MIN_BYTES`] long: from the page cache when it holds every byte of
/// the range (one copy, no device), else straight from the device into `buf`
/// ([`DirectFile::read_into`]), leaving the page cache alone. Returns where the bytes start
/// in `buf`; `None` when the read is short or `io` offers neither way (the fault
/// injector), and the caller reads through the page cache.
pub fn read_large(
    io: &dyn super::IoBackend,
    path: &Path,
    file: &dyn super::IoFile,
    offset_bytes: u64,
    len_bytes: usize,
    buf: &mut Vec<u8>,
) -> io::Result<Option<usize>> {
    if len_bytes < DIRECT_READ_MIN_BYTES {
        return Ok(None);
    }
    if buf.capacity() < len_bytes + DIRECT_READ_SLACK_BYTES {
        // Room for a direct read too, at once: a doubled capacity would outgrow the pools
        // that keep these buffers.
        buf.reserve_exact((len_bytes + DIRECT_READ_SLACK_BYTES).saturating_sub(buf.len()));
    }
    let at = placement(buf, len_bytes);
    if buf.len() < at + len_bytes {
        buf.resize(at + len_bytes, 0);
    }
    if file.read_cached_at(&mut buf[at..at + len_bytes], offset_bytes) {
        return Ok(Some(at));
    }
    match io.open_direct_read(path)? {
        Some(direct) => direct.read_into(offset_bytes, len_bytes, buf),
        None => Ok(None),
    }
}

/// Where in `buf` a large read of `len_bytes` goes: at its first [`HUGE_PAGE_BYTES`]
/// boundary if its capacity holds the read from there, else at its first
/// [`DIRECT_ALIGN_BYTES`] boundary (the caller made room for that: a capacity of at least
/// `len_bytes + DIRECT_ALIGN_BYTES`).
fn placement(buf: &Vec<u8>, len_bytes: usize) -> usize {
    placement_at(buf.as_ptr() as usize, buf.capacity(), len_bytes)
}

/// [`placement`] for a buffer at address `addr` of `capacity_bytes`.
fn placement_at(addr: usize, capacity_bytes: usize, len_bytes: usize) -> usize {
    let huge = (HUGE_PAGE_BYTES - addr % HUGE_PAGE_BYTES) % HUGE_PAGE_BYTES;
    if huge.saturating_add(len_bytes) <= capacity_bytes {
        huge
    } else {
        (DIRECT_ALIGN_BYTES - addr % DIRECT_ALIGN_BYTES) % DIRECT_ALIGN_BYTES
    }
}

/// Advises the kernel to back `buf`'s allocation (its whole capacity, the
/// [`HUGE_PAGE_BYTES`]-aligned part of it) with transparent huge pages, before its pages
/// are first touched: a large read placed there ([`read_large`]) and its copy to a socket
/// then walk one page-table entry per 2 MiB instead of 512 (on a virtual machine, each
/// 4 KiB miss walks the host's tables too). Returns whether the kernel took the advice;
/// a kernel without transparent huge pages (or set to `never`) refuses it and nothing
/// changes. The advice stays with the memory when `buf` is freed, so only buffers kept
/// for the life of the process (a pool's) should be advised.
pub fn advise_huge_pages(buf: &mut Vec<u8>) -> bool {
    let start = buf.as_mut_ptr() as usize;
    let end = start + buf.capacity();
    let from = start.next_multiple_of(HUGE_PAGE_BYTES);
    let to = end - end % HUGE_PAGE_BYTES;
    if to <= from {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: [from, to) lies inside `buf`'s allocation, which `buf` owns; the advice
        // changes how the kernel backs those pages, never their contents or validity.
        let rc = unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A second handle on an extent file, opened with `O_DIRECT`, for aligned writes or (see
/// [`DirectFile::open_read`]) reads only.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
}

impl DirectFile {
    /// Opens `path` for direct writes; `None` when the file system refuses `O_DIRECT`.
    pub fn open(path: &Path) -> io::Result<Option<DirectFile>> {
        Self::open_with(path, OpenOptions::new().write(true))
    }

    /// Opens `path` for direct reads; `None` when the file system refuses `O_DIRECT`.
    pub fn open_read(path: &Path) -> io::Result<Option<DirectFile>> {
        Self::open_with(path, OpenOptions::new().read(true))
    }

    fn open_with(path: &Path, options: &mut OpenOptions) -> io::Result<Option<DirectFile>> {
        #[cfg(target_os = "linux")]
        let opened = options.custom_flags(libc::O_DIRECT).open(path);
        #[cfg(not(target_os = "linux"))]
        let opened: io::Result<File> = {
            let _ = options;
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        };
        match opened {
            Ok(file) => Ok(Some(DirectFile { file })),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the file's bytes `offset_bytes..offset_bytes + len_bytes` into `buf` with one
    /// direct read of the aligned range around them, placed at an aligned address inside
    /// `buf` (grown as needed by at most [`DIRECT_READ_SLACK_BYTES`] beyond `len_bytes`,
    /// never shrunk; a reused buffer usually keeps its alignment, so nothing moves). Returns
    /// where the bytes start: they are `buf[start..start + len_bytes]`.
    ///
    /// `Ok(None)` when the kernel refused the alignment (`EINVAL`: a device with larger
    /// logical blocks): nothing was read and the caller reads buffered. A file that ends
    /// before the range is `UnexpectedEof`.
    pub fn read_into(
        &self,
        offset_bytes: u64,
        len_bytes: usize,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        let align = DIRECT_ALIGN_BYTES as u64;
        let end = offset_bytes
            .checked_add(len_bytes as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "read range overflows"))?;
        let from = align_down(offset_bytes);
        let span = usize::try_from(align_up(end) - from)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "read range too large"))?;
        if buf.capacity() < span + DIRECT_ALIGN_BYTES {
            // Exactly: a doubled capacity would outgrow the pools that keep these buffers.
            buf.reserve_exact((span + DIRECT_ALIGN_BYTES).saturating_sub(buf.len()));
        }
        let pad = placement(buf, span);
        if buf.len() < pad + span {
            buf.resize(pad + span, 0);
        }
        let head = (offset_bytes - from) as usize;
        let want = head + len_bytes;
        let target = &mut buf[pad..pad + span];
        let mut done = 0usize;
        while done < want {
            // Reads continue on aligned boundaries: a short direct read ends on one or at
            // the end of the file.
            let at = from + done as u64;
            match self.file.read_at(&mut target[done..], at) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && done == 0 => return Ok(None),
                Err(e) => return Err(e),
            }
            if done < want && !(done as u64).is_multiple_of(align) {
                // Short of the range and off a boundary: the file ended inside it.
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(Some(pad + head))
    }

    /// Writes all of `bytes` at `offset_bytes`; their address, their length and the offset
    /// must be aligned (an error, not a write, otherwise: see [`AlignedBuf`]). `EINVAL` from the kernel means the device wants a larger alignment
    /// than [`DIRECT_ALIGN_BYTES`]: nothing was written, and the caller may write the
    /// same bytes buffered instead.
    pub fn write_all_at(&self, bytes: &[u8], offset_bytes: u64) -> io::Result<()> {
        if !is_aligned(bytes) || !offset_bytes.is_multiple_of(DIRECT_ALIGN_BYTES as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("direct write of {} bytes at {offset_bytes} is not aligned", bytes.len()),
            ));
        }
        let mut done = 0usize;
        while done < bytes.len() {
            match self.file.write_at(&bytes[done..], offset_bytes + done as u64) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                // A short direct write stops on a block boundary; one that did not would
                // leave the rest unaligned and fail the next call with EINVAL, which the
                // caller treats as an I/O error after partial progress (done > 0).
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if done > 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(io::Error::other(format!("direct write stopped after {done} bytes: {e}")));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_padded_and_reused() {
        let mut buf = AlignedBuf::take(10_000);
        assert_eq!(buf.as_slice().as_ptr() as usize % DIRECT_ALIGN_BYTES, 0);
        buf.extend_from_slice(&[7u8; 5000]);
        buf.pad_to_alignment();
        assert_eq!(buf.len(), 8192);
        assert!(buf.as_slice()[..5000].iter().all(|&b| b == 7));
        assert!(buf.as_slice()[5000..].iter().all(|&b| b == 0));
        drop(buf);
        let again = AlignedBuf::take(9000);
        assert!(again.is_empty());
        assert_eq!(again.as_slice().as_ptr() as usize % DIRECT_ALIGN_BYTES, 0);
        // Size classes, so that released buffers fit later requests of their size.
        let big = AlignedBuf::take((4 << 20) + 4160);
        assert!(big.capacity() >= 5 << 20 && big.capacity().is_multiple_of(1 << 20), "{}", big.capacity());
        let small = AlignedBuf::take(1);
        assert!(small.capacity() >= 64 << 10 && small.capacity().is_multiple_of(64 << 10));
        assert_eq!(align_down(8191), 4096);
        assert_eq!(align_up(4097), 8192);
        assert_eq!(align_up(0), 0);
    }

    #[test]
    fn direct_writes_land_and_unaligned_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"").expect("create");
        let Some(file) = DirectFile::open(&path).expect("open") else {
            eprintln!("O_DIRECT unsupported here; nothing to test");
            return;
        };
        let mut buf = AlignedBuf::take(8192);
        buf.extend_from_slice(&[1u8; 4096]);
        buf.extend_from_slice(&[2u8; 100]);
        buf.pad_to_alignment();
        file.write_all_at(buf.as_slice(), 4096).expect("direct write");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(on_disk.len(), 12288);
        assert!(on_disk[..4096].iter().all(|&b| b == 0));
        assert!(on_disk[4096..8192].iter().all(|&b| b == 1));
        assert!(on_disk[8192..8292].iter().all(|&b| b == 2));
        assert!(on_disk[8292..].iter().all(|&b| b == 0));
        assert_eq!(
            file.write_all_at(buf.as_slice(), 100).expect_err("unaligned").kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            file.write_all_at(&buf.as_slice()[1..4097], 0).expect_err("unaligned").kind(),
            io::ErrorKind::InvalidInput
        );
        let mut short = AlignedBuf::take(100);
        short.extend_from_slice(&[3u8; 100]);
        assert_eq!(
            file.write_all_at(short.as_slice(), 0).expect_err("unaligned").kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn direct_reads_return_any_range_from_an_aligned_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 253) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let Some(file) = DirectFile::open_read(&path).expect("open") else {
            eprintln!("O_DIRECT unsupported here; nothing to test");
            return;
        };
        let mut buf = Vec::new();
        for start in [0u64, 1, 4095, 4096, 4097, 12_345, 49_000] {
            for len in [0usize, 1, 4095, 4096, 4097, 20_000, 50_000] {
                let len = len.min(data.len() - start as usize);
                let at = file.read_into(start, len, &mut buf).expect("read").expect("direct");
                assert_eq!(
                    (buf.as_ptr() as usize + at - (start as usize % DIRECT_ALIGN_BYTES)) % DIRECT_ALIGN_BYTES,
                    0
                );
                assert_eq!(&buf[at..at + len], &data[start as usize..start as usize + len], "{start}+{len}");
            }
        }
        // A fresh buffer grows by at most the slack.
        let mut fresh = Vec::new();
        let at = file.read_into(4097, 20_000, &mut fresh).expect("read").expect("direct");
        assert_eq!(&fresh[at..at + 20_000], &data[4097..24_097]);
        assert!(fresh.len() <= 20_000 + DIRECT_READ_SLACK_BYTES, "{}", fresh.len());
        // Past the end of the file: an error, not a short answer.
        let err = file.read_into(49_000, 1001, &mut buf).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = file.read_into(60_000, 10, &mut buf).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = file.read_into(u64::MAX - 5, 10, &mut buf).expect_err("overflow");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // A buffer a huge page larger than the read takes it at a huge page boundary.
        let mut roomy = Vec::with_capacity(HUGE_PAGE_BYTES + 40_000);
        let at = file.read_into(4097, 20_000, &mut roomy).expect("read").expect("direct");
        assert_eq!((roomy.as_ptr() as usize + at - 1) % HUGE_PAGE_BYTES, 0, "{at}");
        assert_eq!(&roomy[at..at + 20_000], &data[4097..24_097]);
    }

    #[test]
    fn large_reads_go_to_a_huge_page_boundary_when_the_buffer_has_room() {
        let huge = HUGE_PAGE_BYTES;
        // Room past the boundary: there.
        assert_eq!(placement_at(huge - 100, 200 + 4096, 4096), 100);
        assert_eq!(placement_at(3 * huge, 5000, 4096), 0);
        // No room past it: the first 4 KiB boundary.
        assert_eq!(placement_at(huge + 4096 + 10, 8192, 4096), 4086);
        assert_eq!(placement_at(huge + 8192, 8192, 4096), 0);
        // Never past the capacity, whatever the address.
        for addr in [1usize, 4095, 4096, huge - 1, huge + 1, 7 * huge - 4096] {
            for (cap, len) in [(8192usize, 4096usize), (huge + 8192, huge), (2 * huge + 4096, huge)] {
                let at = placement_at(addr, cap, len);
                assert!(at + len <= cap, "{addr} {cap} {len}: {at}");
                assert_eq!((addr + at) % DIRECT_ALIGN_BYTES, 0);
            }
        }
    }

    #[test]
    fn cached_large_reads_land_at_the_placement_and_advice_is_harmless() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(600u32 << 10)).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let io = super::super::pread::PreadBackend;
        let file = super::super::IoBackend::open(&io, &path).expect("open");
        let (from, len) = (4097u64, 300usize << 10);
        let want = &data[from as usize..from as usize + len];
        let mut roomy = Vec::with_capacity(HUGE_PAGE_BYTES + len + DIRECT_READ_SLACK_BYTES);
        // Taken or not (a kernel without transparent huge pages), reads work the same.
        let _ = advise_huge_pages(&mut roomy);
        let at = read_large(&io, &path, file.as_ref(), from, len, &mut roomy).expect("read").expect("large");
        assert_eq!((roomy.as_ptr() as usize + at) % HUGE_PAGE_BYTES, 0, "{at}");
        assert_eq!(&roomy[at..at + len], want);
        let mut plain = Vec::new();
        let at = read_large(&io, &path, file.as_ref(), from, len, &mut plain).expect("read").expect("large");
        assert_eq!((plain.as_ptr() as usize + at) % DIRECT_ALIGN_BYTES, 0, "{at}");
        assert_eq!(&plain[at..at + len], want);
        assert!(plain.capacity() <= len + DIRECT_READ_SLACK_BYTES, "{}", plain.capacity());
        // Too short to go this way: the caller reads buffered.
        assert_eq!(read_large(&io, &path, file.as_ref(), 0, 4096, &mut plain).expect("read"), None);
    }
}
