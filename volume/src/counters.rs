//! A volume server's request and task counters, kept by the service and the task
//! executor (rendered by [`crate::metrics`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Requests and bytes of one kind of operation.
#[derive(Debug, Default)]
pub struct OpCounters {
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl OpCounters {
    /// Counts one operation; `bytes` only when it succeeded.
    pub fn record(&self, ok: bool, bytes: u64) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes of the successful operations so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// The counters of one volume server.
#[derive(Debug, Default)]
pub struct VolumeMetrics {
    /// Record appends (payload bytes).
    pub appends: OpCounters,
    /// Record reads (payload bytes).
    pub record_reads: OpCounters,
    /// Fragment range reads (bytes).
    pub fragment_reads: OpCounters,
    /// Fragment writes (fragment bytes).
    pub fragment_writes: OpCounters,
    /// Tasks run (bytes unused).
    pub tasks: OpCounters,
    /// Trash purges, one per disk per round (bytes: freed).
    pub trash_purges: OpCounters,
    /// Trash entries unlinked by purges.
    pub(crate) trash_purged_extents: AtomicU64,
    /// Of those, entries unlinked before their retention (the disk short of space).
    pub(crate) trash_purged_early_extents: AtomicU64,
    /// 1 while encodes are left queued because the server is busy with appends.
    pub(crate) encode_deferring: AtomicU64,
    /// The scrubber's progress and findings.
    pub scrub: ScrubCounters,
}

/// What the scrubber has done since the server started.
#[derive(Debug, Default)]
pub struct ScrubCounters {
    /// Bytes read and checked.
    pub bytes: AtomicU64,
    /// Extents checked.
    pub extents: AtomicU64,
    /// Corrupt extents found (each reported to the master).
    pub findings: AtomicU64,
    /// Extents that could not be read (other errors than corruption).
    pub errors: AtomicU64,
    /// Full passes over every disk completed.
    pub passes: AtomicU64,
    /// Whether the scrubber runs on this server.
    pub enabled: std::sync::atomic::AtomicBool,
    /// Bytes checked in the pass under way.
    pub pass_bytes_done: AtomicU64,
    /// Bytes of every extent when the pass under way started.
    pub pass_bytes_total: AtomicU64,
}

impl ScrubCounters {
    /// What the heartbeat tells the master (none when the scrubber is off).
    pub fn progress(&self) -> Option<cellar_proto::master::ScrubProgress> {
        self.enabled.load(Ordering::Relaxed).then(|| cellar_proto::master::ScrubProgress {
            node_id: 0,
            passes: self.passes.load(Ordering::Relaxed),
            pass_bytes_done: self.pass_bytes_done.load(Ordering::Relaxed),
            pass_bytes_total: self.pass_bytes_total.load(Ordering::Relaxed),
            bytes_total: self.bytes.load(Ordering::Relaxed),
            findings: self.findings.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        })
    }
}

impl VolumeMetrics {
    /// Records whether the task executor is deferring encodes now.
    pub fn set_encode_deferring(&self, deferring: bool) {
        self.encode_deferring.store(u64::from(deferring), Ordering::Relaxed);
    }

    /// Counts trash entries a purge unlinked, `early` of them before their retention.
    pub fn add_trash_purged_extents(&self, extents: u64, early: u64) {
        self.trash_purged_extents.fetch_add(extents, Ordering::Relaxed);
        self.trash_purged_early_extents.fetch_add(early, Ordering::Relaxed);
    }
}
