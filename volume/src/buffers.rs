//! Read buffers kept for reuse: a block read into a buffer that held a block before costs
//! no allocation, no zeroing and no page faults (on 4 MiB gets those were ~10% of a busy
//! cell's CPU). A buffer goes back to the pool when the last `Bytes` over it is dropped,
//! i.e. once its block has been sent.
//!
//! Volume servers fill the pool when they start ([`ReadBuffers::warm`]): the first use of
//! a fresh buffer pays a page fault per 4 KiB page (and on this project's virtual machine,
//! a fault in the hypervisor too: ~10 ms for a 4 MiB buffer, which showed as the slowest
//! gets of a fresh cell, docs/performance.md), so the pool pays it once, up front.
//!
//! The pool's buffers are advised to be backed by transparent huge pages (the process's
//! allocator is built without them, see cli/src/main.rs: everywhere else they cost more
//! than they gain): a 4 MiB read and its copy to the socket then walk two page-table
//! entries instead of 1,024.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cellar_blockstore::io::direct::{HUGE_PAGE_BYTES, advise_huge_pages};

/// Buffers a pool holds at most (more reads at once take buffers of their own, freed
/// after).
pub const READ_BUFFERS_KEPT_MAX: usize = 8;

/// A bounded pool of read buffers, advised to be backed by transparent huge pages.
///
/// Each buffer is a huge page larger than the largest read, so that a large read goes
/// at a huge page boundary inside it ([`cellar_blockstore::io::direct::read_large`]) and
/// its copies (from the page cache, to the socket) walk one page-table entry per 2 MiB.
/// The pool makes at most [`READ_BUFFERS_KEPT_MAX`] of them, for the life of the process
/// (advice stays with memory that is freed, and the allocator would hand it to anything),
/// and keeps only those: a buffer of any other capacity given back is freed.
#[derive(Debug)]
pub struct ReadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    /// The largest read a buffer takes.
    read_max_bytes: usize,
    /// Buffers made so far (at most [`READ_BUFFERS_KEPT_MAX`]).
    made: AtomicUsize,
}

impl ReadBuffers {
    /// A pool whose buffers take reads of up to `read_max_bytes`.
    pub fn new(read_max_bytes: usize) -> Arc<ReadBuffers> {
        Arc::new(ReadBuffers { free: Mutex::new(Vec::new()), read_max_bytes, made: AtomicUsize::new(0) })
    }

    /// The capacity of the pool's buffers.
    pub fn buffer_bytes(&self) -> usize {
        self.read_max_bytes + HUGE_PAGE_BYTES
    }

    /// A buffer: a kept one, else a new pool buffer while fewer than
    /// [`READ_BUFFERS_KEPT_MAX`] exist (empty: its pages are touched by its first read),
    /// else an empty one of its own (grown by the read, freed after).
    pub fn take(&self) -> Vec<u8> {
        if let Some(buf) = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return buf;
        }
        match self.make_room() {
            true => self.allocate(),
            false => Vec::new(),
        }
    }

    /// Counts one more pool buffer, if the pool may make one.
    fn make_room(&self) -> bool {
        self.made
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < READ_BUFFERS_KEPT_MAX).then_some(n + 1)
            })
            .is_ok()
    }

    fn allocate(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.buffer_bytes());
        // Refused where the kernel has no transparent huge pages: the buffer works the same.
        let _ = advise_huge_pages(&mut buf);
        buf
    }

    /// Gives a buffer back: kept if it is one of the pool's, else freed.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() != self.buffer_bytes() {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < READ_BUFFERS_KEPT_MAX {
            free.push(buf);
        }
    }

    /// Bytes `range` of `buf`, sharing it; `buf` returns to the pool when they are dropped.
    pub fn share(self: &Arc<Self>, buf: Vec<u8>, range: std::ops::Range<usize>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self.clone() }).slice(range)
    }

    /// Makes pool buffers until `count` exist (at most [`READ_BUFFERS_KEPT_MAX`]), every
    /// page written once: memory the pool holds anyway after its first busy moment, paid
    /// for before the first read instead of during it.
    pub fn warm(&self, count: usize) {
        let mut made = Vec::new();
        while self.made.load(Ordering::Acquire) < count.min(READ_BUFFERS_KEPT_MAX) && self.make_room() {
            let mut buf = self.allocate();
            // Every byte written: the pages are present (huge ones where advised) and the
            // buffer's length is its capacity, so no read resizes it.
            buf.resize(buf.capacity(), 0);
            made.push(buf);
        }
        for buf in made {
            self.give(buf);
        }
    }

    /// Buffers kept now.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<ReadBuffers>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::{READ_BUFFERS_KEPT_MAX, ReadBuffers};

    #[test]
    fn a_buffer_returns_when_its_bytes_are_dropped_and_the_pool_stays_bounded() {
        let pool = ReadBuffers::new(1 << 20);
        let mut buf = pool.take();
        assert_eq!(buf.capacity(), pool.buffer_bytes(), "a pool buffer");
        buf.resize(100, 7);
        let bytes = pool.share(buf, 10..20);
        assert_eq!(&bytes[..], &[7u8; 10]);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.kept(), 0, "still shared");
        drop(clone);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert_eq!(again.len(), 100, "a kept buffer keeps its length: it is not cleared");
        pool.give(again);
        // Buffers not of the pool are never kept.
        pool.give(vec![0u8; 10]);
        pool.give(vec![0u8; 4 << 20]);
        assert_eq!(pool.kept(), 1);
        // At most READ_BUFFERS_KEPT_MAX pool buffers are ever made; past that, takes get
        // buffers of their own.
        let taken: Vec<Vec<u8>> = (0..READ_BUFFERS_KEPT_MAX + 3).map(|_| pool.take()).collect();
        let pooled = taken.iter().filter(|b| b.capacity() == pool.buffer_bytes()).count();
        assert_eq!(pooled, READ_BUFFERS_KEPT_MAX);
        for buf in taken {
            pool.give(buf);
        }
        assert_eq!(pool.kept(), READ_BUFFERS_KEPT_MAX);
    }

    #[test]
    fn a_warmed_pool_holds_full_size_buffers_and_stays_bounded() {
        let pool = ReadBuffers::new(1 << 20);
        pool.warm(3);
        assert_eq!(pool.kept(), 3);
        let buf = pool.take();
        assert_eq!((buf.len(), buf.capacity()), (pool.buffer_bytes(), pool.buffer_bytes()));
        pool.give(buf);
        pool.warm(READ_BUFFERS_KEPT_MAX + 5);
        assert_eq!(pool.kept(), READ_BUFFERS_KEPT_MAX);
        let _held = pool.take();
        pool.warm(READ_BUFFERS_KEPT_MAX);
        assert_eq!(pool.kept(), READ_BUFFERS_KEPT_MAX - 1, "no buffer made past the bound");
    }
}
