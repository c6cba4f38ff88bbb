//! A byte budget: bounds the bytes a server or a task holds in flight. Callers wait for
//! room instead of growing memory; the peak is kept for benchmarks and tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes in flight, at most `max_bytes` at once.
#[derive(Debug)]
pub struct ByteBudget {
    semaphore: Arc<Semaphore>,
    max_bytes: u64,
    in_use_bytes: Arc<AtomicU64>,
    peak_bytes: Arc<AtomicU64>,
}

/// Room for some bytes; given back when dropped.
#[derive(Debug)]
pub struct BudgetPermit {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    in_use_bytes: Arc<AtomicU64>,
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        self.in_use_bytes.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl ByteBudget {
    /// A budget of `max_bytes` (at most 4 GiB).
    pub fn new(max_bytes: u64) -> ByteBudget {
        let max_bytes = max_bytes.clamp(1, u64::from(u32::MAX));
        ByteBudget {
            semaphore: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
            in_use_bytes: Arc::new(AtomicU64::new(0)),
            peak_bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Waits for room for `bytes` (a request larger than the budget takes all of it).
    pub async fn acquire(&self, bytes: u64) -> BudgetPermit {
        let bytes = bytes.clamp(1, self.max_bytes);
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            match self.semaphore.clone().acquire_many_owned(bytes as u32).await {
                Ok(p) => break p,
                Err(_) => tokio::task::yield_now().await,
            }
        };
        let now = self.in_use_bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak_bytes.fetch_max(now, Ordering::AcqRel);
        BudgetPermit { _permit: permit, bytes, in_use_bytes: self.in_use_bytes.clone() }
    }

    /// The limit.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Bytes held now.
    pub fn in_use_bytes(&self) -> u64 {
        self.in_use_bytes.load(Ordering::Acquire)
    }

    /// Most bytes ever held at once.
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes.load(Ordering::Acquire)
    }
}
