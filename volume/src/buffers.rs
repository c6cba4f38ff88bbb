//! Read buffers kept for reuse: a block read into a buffer that held a block before costs
//! no allocation, no zeroing and no page faults (on 4 MiB gets those were ~10% of a busy
//! cell's CPU). A buffer goes back to the pool when the last `Bytes` over it is dropped,
//! i.e. once its block has been sent.
//!
//! Volume servers fill the pool when they start ([`ReadBuffers::warm`]): the first use of
//! a fresh buffer pays a page fault per 4 KiB page (and on this project's virtual machine,
//! a fault in the hypervisor too: ~10 ms for a 4 MiB buffer, which showed as the slowest
//! gets of a fresh cell, docs/performance.md), so the pool pays it once, up front.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Buffers a pool keeps at most (more are freed when dropped).
pub const READ_BUFFERS_KEPT_MAX: usize = 8;

/// A bounded pool of read buffers.
#[derive(Debug)]
pub struct ReadBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    buffer_max_bytes: usize,
}

impl ReadBuffers {
    /// A pool that keeps buffers of up to `buffer_max_bytes` (larger ones are freed).
    pub fn new(buffer_max_bytes: usize) -> Arc<ReadBuffers> {
        Arc::new(ReadBuffers { free: Mutex::new(Vec::new()), buffer_max_bytes })
    }

    /// A buffer (empty if none is kept).
    pub fn take(&self) -> Vec<u8> {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    /// Gives a buffer back (freed if the pool is full or the buffer too large).
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > self.buffer_max_bytes {
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

    /// Fills the pool up to `count` buffers (at most [`READ_BUFFERS_KEPT_MAX`]) of the
    /// largest size kept, every page written once: memory the pool holds anyway after
    /// its first busy moment, paid for before the first read instead of during it.
    pub fn warm(&self, count: usize) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while free.len() < count.min(READ_BUFFERS_KEPT_MAX) {
            let mut buf = vec![0u8; self.buffer_max_bytes];
            // Zeroed memory may come as untouched pages: write one byte of each (volatile,
            // so the store of a zero over zeroes is not optimized away).
            for page in buf.chunks_mut(4096) {
                // SAFETY: `page` is a non-empty slice of `buf`, exclusively borrowed here.
                unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
            }
            free.push(buf);
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
    use super::ReadBuffers;

    #[test]
    fn a_buffer_returns_when_its_bytes_are_dropped_and_the_pool_stays_bounded() {
        let pool = ReadBuffers::new(1 << 20);
        let bytes = pool.share(vec![7u8; 100], 10..20);
        assert_eq!(&bytes[..], &[7u8; 10]);
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(pool.kept(), 0, "still shared");
        drop(clone);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert_eq!(again.len(), 100, "a kept buffer keeps its length: it is not cleared");
        pool.give(vec![0u8; 2 << 20]);
        assert_eq!(pool.kept(), 0, "too large to keep");
        for _ in 0..super::READ_BUFFERS_KEPT_MAX + 3 {
            pool.give(vec![0u8; 10]);
        }
        assert_eq!(pool.kept(), super::READ_BUFFERS_KEPT_MAX);
    }

    #[test]
    fn a_warmed_pool_holds_full_size_buffers_and_stays_bounded() {
        let pool = ReadBuffers::new(1 << 20);
        pool.warm(3);
        assert_eq!(pool.kept(), 3);
        let buf = pool.take();
        assert_eq!((buf.len(), buf.capacity()), (1 << 20, 1 << 20));
        pool.give(buf);
        pool.warm(super::READ_BUFFERS_KEPT_MAX + 5);
        assert_eq!(pool.kept(), super::READ_BUFFERS_KEPT_MAX);
    }
}
