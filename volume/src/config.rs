//! A volume server's configuration.

use std::path::PathBuf;
use std::time::Duration;

use cellar_blockstore::IoChoice;

/// Default time a deleted extent stays in the trash: a day, long enough for an operator
/// to notice a wrong delete and stop the server, short enough that a disk is not
/// holding a day's worth of encodes' replicas (3x the coded bytes) for long.
pub const TRASH_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 60 * 60);
/// Default free-space floor below which a disk purges its trash early: 5% of its capacity
/// (cells commonly run 80-90% full; below 5% free a disk is about to refuse writes).
pub const TRASH_FREE_MIN_PERCENT_DEFAULT: u64 = 5;
/// When encodes wait for the foreground.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeDefer {
    /// Append rate at or above which the server counts as busy.
    pub busy_bytes_per_sec: u64,
    /// Longest continuous deferral; zero turns deferral off.
    pub max: Duration,
}

impl Default for EncodeDefer {
    /// Busy from 32 MiB/s of appends; deferral for at most 60 s.
    fn default() -> Self {
        EncodeDefer { busy_bytes_per_sec: 32 << 20, max: Duration::from_secs(60) }
    }
}

/// Everything a volume server needs to start.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Address to serve gRPC on (`host:port`; port 0 picks one).
    pub listen: String,
    /// Address other processes reach it at; default: the bound address.
    pub advertise: Option<String>,
    /// The zone (failure domain) this node is in.
    pub zone: String,
    /// Directories of the disks it owns (each a blockstore disk).
    pub disks: Vec<PathBuf>,
    /// Master addresses.
    pub masters: Vec<String>,
    /// Cluster secret sent on every call between cellar processes.
    pub secret: Option<String>,
    /// I/O backend of the disks.
    pub io: IoChoice,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// How often idle task pulls happen.
    pub task_poll: Duration,
    /// When encode tasks wait for the append load to drop.
    pub encode_defer: EncodeDefer,
    /// Largest block payload accepted; none: the masters' `block_size_max_bytes`, read
    /// from the cluster map at start.
    pub block_size_max_bytes: Option<u64>,
    /// Request bytes held at once (see [`crate::SERVER_INFLIGHT_MAX_BYTES`]).
    pub inflight_max_bytes: u64,
    /// Deadlines of this server's calls to other volume servers (its tasks' reads and
    /// fragment writes).
    pub deadlines: crate::deadline::CallDeadlines,
    /// How long a deleted extent stays in a disk's trash before it is unlinked (see
    /// [`crate::trash`]).
    pub trash_retention: Duration,
    /// A disk with less than this percentage of its capacity free gives up trash entries
    /// before their retention, oldest first, until it has that much (0: never; see
    /// [`crate::trash`]).
    pub trash_free_min_percent: u64,
    /// Bytes of each disk's file system that data writes leave free for its catalog
    /// (see [`cellar_blockstore::DiskOptions::reserve_bytes`]); the master is told the
    /// free bytes less this. 0 keeps none.
    pub disk_reserve_bytes: u64,
    /// The scrubber's rate and pass period (see [`crate::scrub`]).
    pub scrub: ScrubConfig,
    /// Payload bytes of large records appended lately kept in memory for reads (see
    /// [`crate::recent`]); 0 keeps none.
    pub recent_records_bytes: u64,
    /// How long an operation on a disk (a read, an append and its fsync, a create) may
    /// stay under way, or a disk's stat go unanswered, before the disk is reported failed
    /// as hung: a device that stopped answering (see [`crate::disks::disk_failed`]).
    pub disk_hung_after: Duration,
}

/// Default [`VolumeConfig::disk_hung_after`]: far past any wait of a busy disk (appends'
/// deadlines are seconds), short beside a node being marked down (15 minutes).
pub const DISK_HUNG_AFTER_DEFAULT: Duration = Duration::from_secs(60);

/// How hard the scrubber works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Bytes read per second at most; 0 turns the scrubber off.
    pub bytes_per_sec: u64,
    /// Shortest time from the start of one full pass to the start of the next.
    pub period: Duration,
}

impl Default for ScrubConfig {
    /// 32 MB/s, a pass at most once a week.
    fn default() -> Self {
        ScrubConfig { bytes_per_sec: 32_000_000, period: Duration::from_secs(7 * 24 * 3600) }
    }
}

impl VolumeConfig {
    /// A configuration with the defaults: heartbeats every second, task polls every
    /// second, encodes deferred while busy (see [`EncodeDefer::default`]),
    /// io_uring where available, 4 MiB blocks, trash kept for
    /// [`TRASH_RETENTION_DEFAULT`], [`crate::recent::RECENT_RECORDS_DEFAULT_BYTES`] of recent
    /// records kept.
    pub fn new(
        listen: impl Into<String>,
        zone: impl Into<String>,
        disks: Vec<PathBuf>,
        masters: Vec<String>,
    ) -> Self {
        VolumeConfig {
            listen: listen.into(),
            advertise: None,
            zone: zone.into(),
            disks,
            masters,
            secret: None,
            io: IoChoice::Auto,
            heartbeat: Duration::from_secs(1),
            task_poll: Duration::from_secs(1),
            encode_defer: EncodeDefer::default(),
            block_size_max_bytes: None,
            inflight_max_bytes: crate::SERVER_INFLIGHT_MAX_BYTES,
            deadlines: crate::deadline::CallDeadlines::default(),
            trash_retention: TRASH_RETENTION_DEFAULT,
            trash_free_min_percent: TRASH_FREE_MIN_PERCENT_DEFAULT,
            disk_reserve_bytes: cellar_blockstore::DISK_RESERVE_BYTES_DEFAULT,
            scrub: ScrubConfig::default(),
            recent_records_bytes: crate::recent::RECENT_RECORDS_DEFAULT_BYTES,
            disk_hung_after: DISK_HUNG_AFTER_DEFAULT,
        }
    }

    /// Checks what can be checked before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.zone.is_empty() {
            return Err("--zone is required".into());
        }
        self.deadlines.validate()?;
        if self.disks.is_empty() {
            return Err("at least one --disk is required".into());
        }
        if self.masters.is_empty() {
            return Err("--master is required".into());
        }
        if self.disk_hung_after.is_zero() {
            return Err("disk_hung_after must be above zero".into());
        }
        for (i, d) in self.disks.iter().enumerate() {
            if self.disks[..i].contains(d) {
                return Err(format!("disk {} is given twice", d.display()));
            }
        }
        if let Some(block) = self.block_size_max_bytes {
            self.check_block_size(block)?;
        }
        Ok(())
    }

    /// Checks a block size limit, this server's own or the masters'.
    pub fn check_block_size(&self, block_size_max_bytes: u64) -> Result<(), String> {
        if block_size_max_bytes == 0 || block_size_max_bytes > 8 << 20 {
            return Err(format!("block_size_max_bytes {block_size_max_bytes} must be in 1..=8 MiB"));
        }
        if self.inflight_max_bytes < block_size_max_bytes {
            return Err("inflight_max_bytes must hold at least one block".into());
        }
        Ok(())
    }
}
