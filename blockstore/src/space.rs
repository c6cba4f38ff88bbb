//! The disk's reserve: writes of data (a new extent, a replica's appends, a fragment)
//! leave at least `reserve_bytes` of the file system free, so that the catalog can always
//! write. The catalog is RocksDB on the same file system: its log, a memtable flush and
//! compactions need room, and a full file system refused them, which failed deletes and
//! trash purges (the very writes that give space back) and left a failed encode's
//! fragment behind (bench/full_disk.py --every-disk).
//!
//! The file system's free space is asked (`statvfs`) at most every
//! [`RECHECK_INTERVAL`] while there is room to spare; what was claimed since is counted
//! against the figure, and once the room left looks short the figure is asked again
//! before a write is refused. A claim is held ([`Claim`]) until its write is done: the
//! bytes of writes still under way when the figure is asked again count against the new
//! figure too, which may not show them yet. A fragment's bytes are allocated on the
//! device when it is created (`fallocate`), so its claim ends there.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a free-space figure is trusted while the writes claimed since leave room.
const RECHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Default reserve of a disk: room for the catalog's log (RocksDB preallocates a little
/// more than its 4 MiB memtable per log file), a flush and a compaction of a catalog of a
/// few hundred thousand extents.
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 32 << 20;

/// The reserve and what is known of the file system's free space.
pub(crate) struct SpaceReserve {
    root: PathBuf,
    reserve_bytes: u64,
    checked: Mutex<Checked>,
}

#[derive(Default)]
struct Checked {
    /// When the file system was last asked; `None` before the first time.
    at: Option<Instant>,
    /// What it said was free.
    free_bytes: u64,
    /// Bytes claimed since, and the bytes of claims under way when it was asked.
    claimed_bytes: u64,
    /// Bytes of the claims whose writes are under way.
    inflight_bytes: u64,
}

/// Room claimed for a write under way; dropped once the write is done.
pub(crate) struct Claim<'a> {
    reserve: Option<&'a SpaceReserve>,
    bytes: u64,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Some(reserve) = self.reserve {
            let mut c = reserve.checked.lock().unwrap_or_else(|p| p.into_inner());
            c.inflight_bytes = c.inflight_bytes.saturating_sub(self.bytes);
        }
    }
}

impl SpaceReserve {
    pub(crate) fn new(root: &Path, reserve_bytes: u64) -> SpaceReserve {
        SpaceReserve { root: root.to_path_buf(), reserve_bytes, checked: Mutex::new(Checked::default()) }
    }

    pub(crate) fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// Claims room for a write of `bytes` (`op` names it in the error): refused with
    /// [`Error::ReserveReached`] when the file system would keep less than the reserve
    /// free. `space` asks the file system for (capacity, free) bytes; `fresh` makes the
    /// claim ask it whatever the last figure's age (a test's simulated file system, whose
    /// figure does not follow the writes; a claim again after a purge). A file system
    /// that cannot be asked lets the write try (a real lack of space still fails it with
    /// ENOSPC).
    pub(crate) fn claim(
        &self,
        bytes: u64,
        op: &'static str,
        fresh: bool,
        space: impl Fn() -> Result<(u64, u64)>,
    ) -> Result<Claim<'_>> {
        if self.reserve_bytes == 0 {
            return Ok(Claim { reserve: None, bytes: 0 });
        }
        let needed_bytes = bytes.saturating_add(self.reserve_bytes);
        let mut c = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        let recent = !fresh && c.at.is_some_and(|at| at.elapsed() < RECHECK_INTERVAL);
        if !recent || c.free_bytes.saturating_sub(c.claimed_bytes) < needed_bytes {
            match space() {
                Ok((_, free_bytes)) => {
                    c.at = Some(Instant::now());
                    c.free_bytes = free_bytes;
                    c.claimed_bytes = c.inflight_bytes;
                }
                Err(_) => return Ok(Claim { reserve: None, bytes: 0 }),
            }
        }
        if c.free_bytes.saturating_sub(c.claimed_bytes) < needed_bytes {
            return Err(Error::ReserveReached {
                path: self.root.clone(),
                op,
                free_bytes: c.free_bytes.saturating_sub(c.claimed_bytes),
                needed_bytes,
            });
        }
        c.claimed_bytes = c.claimed_bytes.saturating_add(bytes);
        c.inflight_bytes = c.inflight_bytes.saturating_add(bytes);
        Ok(Claim { reserve: Some(self), bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_would_eat_into_the_reserve_is_refused() {
        let reserve = SpaceReserve::new(Path::new("/d"), 100);
        let space = |free: u64| move || Ok((1000, free));
        assert!(reserve.claim(50, "append", true, space(150)).is_ok());
        let refused = reserve.claim(51, "append", true, space(150));
        assert!(
            matches!(refused, Err(Error::ReserveReached { free_bytes: 150, needed_bytes: 151, .. })),
            "{:?}",
            refused.err()
        );
        // A file system that cannot be asked lets the write try.
        assert!(reserve.claim(1 << 40, "append", true, || Err(Error::BadParameters("no".into()))).is_ok());
        // No reserve: never refused.
        assert!(SpaceReserve::new(Path::new("/d"), 0).claim(1 << 40, "append", true, space(0)).is_ok());
    }

    #[test]
    fn claims_count_against_a_recent_figure_and_a_short_one_is_asked_again() {
        let reserve = SpaceReserve::new(Path::new("/d"), 100);
        let asked = std::cell::Cell::new(0u32);
        let free = std::cell::Cell::new(400u64);
        let space = || {
            asked.set(asked.get() + 1);
            Ok((1000, free.get()))
        };
        drop(reserve.claim(100, "append", false, space).expect("asks: 400 free"));
        drop(reserve.claim(100, "append", false, space).expect("300 left of the figure"));
        assert_eq!(asked.get(), 1);
        // 200 left of the figure, 250 needed: asked again, and the file system has room
        // (a purge gave space back).
        free.set(1000);
        drop(reserve.claim(150, "append", false, space).expect("room after asking again"));
        assert_eq!(asked.get(), 2);
        // Asked again and really short: refused.
        free.set(120);
        assert!(reserve.claim(900, "append", false, space).is_err());
        assert_eq!(asked.get(), 3);
    }

    #[test]
    fn writes_under_way_count_against_a_new_figure() {
        let reserve = SpaceReserve::new(Path::new("/d"), 100);
        // The file system does not show the bytes of the writes under way yet.
        let space = || Ok((1000, 400));
        let first = reserve.claim(150, "append", true, space).expect("room for one");
        // Asked again (fresh): 400 free, but 150 are promised to the write under way.
        let refused = reserve.claim(151, "append", true, space);
        assert!(
            matches!(refused, Err(Error::ReserveReached { free_bytes: 250, needed_bytes: 251, .. })),
            "{:?}",
            refused.err()
        );
        drop(first);
        // Done (the figure would show it now): only the new figure counts.
        drop(reserve.claim(300, "append", true, space).expect("room once the write is done"));
    }
}
