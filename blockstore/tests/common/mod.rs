//! Shared helpers for blockstore tests: every test runs once per I/O backend.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use cellar_blockstore::io::IoChoice;
use cellar_blockstore::io::fault::{FaultBackend, FaultPlan};
use cellar_blockstore::{Disk, DiskOptions};
use sha2::{Digest, Sha256};

/// The backends every behaviour must hold for.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Uring,
    Pread,
}

impl Backend {
    pub fn choice(self) -> IoChoice {
        match self {
            Backend::Uring => IoChoice::Uring,
            Backend::Pread => IoChoice::Pread,
        }
    }
}

pub fn options(backend: Backend) -> DiskOptions {
    DiskOptions { io: backend.choice(), ..DiskOptions::default() }
}

pub fn open(dir: &Path, backend: Backend) -> Disk {
    Disk::open(dir, options(backend)).expect("open disk")
}

/// Opens a disk whose extent I/O goes through the fault injector.
pub fn open_faulty(dir: &Path, backend: Backend) -> (Disk, Arc<FaultPlan>) {
    let plan = FaultPlan::new();
    let inner = backend.choice().build().expect("backend");
    let faulty = FaultBackend::new(inner, plan.clone());
    let disk =
        Disk::open(dir, DiskOptions { io: IoChoice::Custom(Arc::new(faulty)), ..DiskOptions::default() })
            .expect("open faulty disk");
    (disk, plan)
}

pub fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// Every file under `dir` with its bytes' SHA-256 (except RocksDB's own files, whose
/// logs change on open): a snapshot to prove that a refused operation changed nothing.
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u64, [u8; 32])> {
    let mut out = BTreeMap::new();
    for sub in ["extents", "trash"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else { continue };
        for entry in entries {
            let entry = entry.expect("dir entry");
            let data = std::fs::read(entry.path()).expect("read file");
            out.insert(
                format!("{sub}/{}", entry.file_name().to_string_lossy()),
                (data.len() as u64, sha(&data)),
            );
        }
    }
    out
}

/// Declares each listed test once per backend: `mod uring { fn name() }` and `mod pread`.
#[macro_export]
macro_rules! for_each_backend {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $( #[test] fn $name() { super::$name(super::common::Backend::Uring) } )*
        }
        mod pread {
            $( #[test] fn $name() { super::$name(super::common::Backend::Pread) } )*
        }
    };
}

/// Drops the file's pages from the page cache (after writing back any dirty ones), so the
/// next read of it comes from the device.
pub fn uncache(path: &Path) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).expect("open");
    file.sync_all().expect("sync");
    // SAFETY: a plain advice call on a descriptor we own; it reads no memory of ours.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise");
}

/// Reads the whole file through the page cache, so that the cache holds it.
pub fn cache(path: &Path) {
    std::fs::read(path).expect("read");
}
