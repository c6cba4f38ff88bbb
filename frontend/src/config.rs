//! A frontend's configuration.

use std::time::Duration;

/// Everything a frontend needs.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// HTTP block API address (`host:port`; port 0 picks one).
    pub http: String,
    /// gRPC block API address, if served.
    pub grpc: Option<String>,
    /// S3 API address, if served.
    pub s3: Option<String>,
    /// Bytes per second the compactor moves at most (0: off); see [`crate::compactor`].
    pub compaction_bytes_per_sec: u64,
    /// Master addresses.
    pub masters: Vec<String>,
    /// Cluster secret sent on every call between cellar processes.
    pub secret: Option<String>,
    /// This frontend's name as a lease holder (unique per frontend).
    pub holder: String,
    /// Largest block accepted; none: the masters' `block_size_max_bytes` (from the
    /// cluster map at start). A value over the masters' is refused at start.
    pub block_size_max_bytes: Option<u64>,
    /// Volume size: a volume is sealed when the next block would not fit. None: the
    /// masters' `volume_size_bytes` (from the cluster map at start); a value over the
    /// masters' is refused at start (the masters would refuse commits past theirs), a
    /// smaller one fills volumes less.
    pub volume_size_bytes: Option<u64>,
    /// Open volumes written at once (each takes one put at a time).
    pub writers: usize,
    /// How often write leases are renewed; none: a sixth of the masters' lease (from the
    /// cluster map at start). A period of half the masters' lease or more is refused.
    pub lease_renew: Option<Duration>,
    /// Payload bytes being appended to replicas at once (see
    /// [`crate::APPENDS_IN_FLIGHT_MAX_BYTES`]).
    pub appends_in_flight_max_bytes: u64,
    /// Batches being appended to replicas at once (see
    /// [`crate::APPEND_BATCHES_IN_FLIGHT_MAX`]).
    pub append_batches_in_flight_max: usize,
    /// Payload bytes below which a batch appends alone among such batches (see
    /// [`crate::APPEND_ALONE_BELOW_BYTES`]; 0: every batch may go beside the others).
    pub append_alone_below_bytes: u64,
    /// This host's busy CPU share, in percent, from which small batches append alone (see
    /// [`crate::APPEND_ALONE_HOST_BUSY_PERCENT`]; 0: whatever the load).
    pub append_alone_host_busy_percent: u64,
    /// Whether small reads to a volume server wait for the call in flight to it and go
    /// together (see [`crate::READ_GATHER_HOST_BUSY_PERCENT`]).
    pub gather_reads: bool,
    /// This host's busy CPU share, in percent, from which small reads are gathered (see
    /// [`crate::READ_GATHER_HOST_BUSY_PERCENT`]; 0: whatever the load).
    pub gather_reads_host_busy_percent: u64,
    /// Bytes of put bodies held at once (see [`crate::PUT_BODIES_IN_FLIGHT_MAX_BYTES`]).
    pub put_bodies_in_flight_max_bytes: u64,
    /// Bytes of blocks read for gets at once (see [`crate::GET_BLOCKS_IN_FLIGHT_MAX_BYTES`]).
    pub get_blocks_in_flight_max_bytes: u64,
    /// Smallest block a put looks up in the masters' index before storing it (see
    /// [`crate::PUT_LOOKUP_MIN_BYTES`]; 0: every block).
    pub put_lookup_min_bytes: u64,
    /// How long a cached index entry serves gets before it is looked up again in the
    /// background (see [`crate::INDEX_ENTRY_FRESH_MS`]).
    pub index_entry_fresh: Duration,
    /// Deadlines of the calls to volume servers, and the longest hedge delay of reads.
    /// A put's attempt ends at the append deadline: its volume is sealed and the put
    /// retried on another.
    pub deadlines: cellar_volume_api::deadline::CallDeadlines,
    /// Longest a put's body may take to arrive in total (see
    /// [`crate::PUT_BODY_TIMEOUT_MS`]).
    pub put_body_timeout: Duration,
    /// Longest a put's body may go without a byte (see
    /// [`crate::PUT_BODY_IDLE_TIMEOUT_MS`]).
    pub put_body_idle_timeout: Duration,
    /// Open HTTP connections served at once (see [`crate::HTTP_CONNECTIONS_MAX`]).
    pub http_connections_max: usize,
    /// Longest a response write may stay blocked (see
    /// [`crate::RESPONSE_WRITE_STALL_MAX_MS`]).
    pub response_write_stall_timeout: Duration,
    /// The storage watcher's sample and delay (see [`crate::watcher`]).
    pub watch: WatchConfig,
    /// Masters running in this process (`cellar dev`), called without a socket.
    pub local_masters: Option<cellar_master_api::client::LocalMasters>,
}

impl FrontendConfig {
    /// Defaults: block size, volume size and lease renewal from the masters' settings, 8
    /// writers.
    pub fn new(http: impl Into<String>, masters: Vec<String>) -> FrontendConfig {
        FrontendConfig {
            http: http.into(),
            grpc: None,
            s3: None,
            compaction_bytes_per_sec: crate::COMPACTION_BYTES_PER_SEC_DEFAULT,
            masters,
            secret: None,
            holder: format!("frontend-{}", std::process::id()),
            block_size_max_bytes: None,
            volume_size_bytes: None,
            writers: 8,
            lease_renew: None,
            appends_in_flight_max_bytes: crate::APPENDS_IN_FLIGHT_MAX_BYTES,
            append_batches_in_flight_max: crate::APPEND_BATCHES_IN_FLIGHT_MAX,
            append_alone_below_bytes: crate::APPEND_ALONE_BELOW_BYTES,
            append_alone_host_busy_percent: crate::APPEND_ALONE_HOST_BUSY_PERCENT,
            gather_reads: true,
            gather_reads_host_busy_percent: crate::READ_GATHER_HOST_BUSY_PERCENT,
            put_bodies_in_flight_max_bytes: crate::PUT_BODIES_IN_FLIGHT_MAX_BYTES,
            get_blocks_in_flight_max_bytes: crate::GET_BLOCKS_IN_FLIGHT_MAX_BYTES,
            put_lookup_min_bytes: crate::PUT_LOOKUP_MIN_BYTES,
            index_entry_fresh: Duration::from_millis(crate::INDEX_ENTRY_FRESH_MS),
            deadlines: cellar_volume_api::deadline::CallDeadlines::default(),
            put_body_timeout: Duration::from_millis(crate::PUT_BODY_TIMEOUT_MS),
            put_body_idle_timeout: Duration::from_millis(crate::PUT_BODY_IDLE_TIMEOUT_MS),
            watch: WatchConfig::default(),
            http_connections_max: crate::HTTP_CONNECTIONS_MAX,
            response_write_stall_timeout: Duration::from_millis(crate::RESPONSE_WRITE_STALL_MAX_MS),
            local_masters: None,
        }
    }

    /// The byte budgets, by name: each under 4 GiB (semaphore permits are counted in u32)
    /// and holding one largest block.
    fn byte_budgets(&self) -> [(&'static str, u64); 3] {
        [
            ("appends_in_flight_max_bytes", self.appends_in_flight_max_bytes),
            ("put_bodies_in_flight_max_bytes", self.put_bodies_in_flight_max_bytes),
            ("get_blocks_in_flight_max_bytes", self.get_blocks_in_flight_max_bytes),
        ]
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.masters.is_empty() {
            return Err("--master is required".into());
        }
        self.deadlines.validate()?;
        self.watch.validate()?;
        if self.writers == 0 || self.writers > 1024 {
            return Err("writers must be in 1..=1024".into());
        }
        if self.append_alone_host_busy_percent > 100 {
            return Err("append_alone_host_busy_percent must be at most 100".into());
        }
        if self.gather_reads_host_busy_percent > 100 {
            return Err("gather_reads_host_busy_percent must be at most 100".into());
        }
        if self.append_batches_in_flight_max == 0 || self.append_batches_in_flight_max > 1024 {
            return Err("append_batches_in_flight_max must be in 1..=1024".into());
        }
        for (name, v) in self.byte_budgets() {
            if v > u64::from(u32::MAX) {
                return Err(format!("{name} must be under 4 GiB"));
            }
        }
        // Answers read at the HTTP clients' pace hold the volume servers' connection
        // windows up to what this budget admits (cellar_volume_api::streamed).
        let window = u64::from(cellar_volume_api::ANSWER_CONNECTION_WINDOW_BYTES);
        if self.get_blocks_in_flight_max_bytes + cellar_volume_api::MESSAGE_MAX_BYTES as u64 > window {
            return Err(format!(
                "get_blocks_in_flight_max_bytes must leave one message's room under the {} MiB connection \
                 window of volume servers' answers",
                window >> 20
            ));
        }
        if self.put_body_idle_timeout.is_zero() || self.put_body_timeout < self.put_body_idle_timeout {
            return Err("put_body_idle_timeout must be above zero and at most put_body_timeout".into());
        }
        if self.response_write_stall_timeout.is_zero() {
            return Err("response_write_stall_timeout must be above zero".into());
        }
        if self.http_connections_max == 0 {
            return Err("http_connections_max must be at least 1".into());
        }
        Ok(())
    }

    /// The sizes this frontend works with: its own where set, at most the masters'
    /// (`cell`, from the cluster map), else the masters'.
    pub fn limits(&self, cell: &cellar_proto::master::CellSettings) -> Result<CellLimits, String> {
        let pick = |own: Option<u64>, masters: u64, name: &str| match own {
            Some(v) if v > masters => {
                Err(format!("{name} {v} is over the masters' {masters}: leave it unset to take theirs"))
            }
            Some(v) => Ok(v),
            None => Ok(masters),
        };
        let mut limits = CellLimits {
            lease_renew: Duration::ZERO,
            volume_size_bytes: pick(self.volume_size_bytes, cell.volume_size_bytes, "volume_size_bytes")?,
            block_size_max_bytes: pick(
                self.block_size_max_bytes,
                cell.block_size_max_bytes,
                "block_size_max_bytes",
            )?,
        };
        if limits.block_size_max_bytes == 0 {
            return Err("block_size_max_bytes is 0".into());
        }
        if limits.volume_size_bytes < limits.block_size_max_bytes + cellar_format::RECORD_HEADER_BYTES as u64
        {
            return Err(format!(
                "volume_size_bytes {} must hold at least one largest block ({} bytes)",
                limits.volume_size_bytes, limits.block_size_max_bytes
            ));
        }
        for (name, v) in self.byte_budgets() {
            if v < limits.block_size_max_bytes {
                return Err(format!("{name} must hold one largest block"));
            }
        }
        let lease = Duration::from_millis(cell.lease_ms);
        limits.lease_renew = match self.lease_renew {
            Some(p) if p.is_zero() || p * 2 >= lease => {
                return Err(format!(
                    "lease_renew {p:?} must be above zero and under half the masters' lease {lease:?}"
                ));
            }
            Some(p) => p,
            None => (lease / LEASE_RENEWALS_PER_LEASE).max(LEASE_RENEW_MIN),
        };
        Ok(limits)
    }
}

/// The block and volume sizes a running frontend works with (see
/// [`FrontendConfig::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellLimits {
    /// A volume is sealed when the next block would not fit.
    pub volume_size_bytes: u64,
    /// Largest block accepted.
    pub block_size_max_bytes: u64,
    /// How often write leases are renewed.
    pub lease_renew: Duration,
}

/// Renewals per lease period when the period is the masters' (a lease survives five
/// missed renewals: a slow master or a long pause does not cost the volume).
pub const LEASE_RENEWALS_PER_LEASE: u32 = 6;
/// Shortest renewal period derived from the masters' lease.
pub const LEASE_RENEW_MIN: Duration = Duration::from_millis(100);

/// Re-read delays the storage watcher takes at most.
pub const WATCH_DELAYS_MAX: usize = 8;

/// What the watcher checks and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// One stored put in this many is re-read; 0 turns the watcher off.
    pub sample_one_in: u64,
    /// How long after its put a sampled block is re-read: once at each delay (ascending),
    /// as long as it reads back intact.
    pub delays: Vec<Duration>,
}

impl Default for WatchConfig {
    /// One put in 100, re-read a minute and an hour later.
    fn default() -> Self {
        WatchConfig { sample_one_in: 100, delays: vec![Duration::from_secs(60), Duration::from_secs(3600)] }
    }
}

impl WatchConfig {
    /// Checks the delays: 1 to [`WATCH_DELAYS_MAX`] of them, strictly ascending.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_one_in == 0 {
            return Ok(());
        }
        if self.delays.is_empty() || self.delays.len() > WATCH_DELAYS_MAX {
            return Err(format!("the storage watcher takes 1 to {WATCH_DELAYS_MAX} delays"));
        }
        if self.delays.windows(2).any(|w| w[0] >= w[1]) {
            return Err("the storage watcher's delays must be strictly ascending".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellar_proto::master::CellSettings;

    fn cell() -> CellSettings {
        CellSettings {
            volume_size_bytes: 64 << 20,
            scheme: Some(cellar_proto::common::CodingScheme { data_fragments: 6, parity_fragments: 3 }),
            block_size_max_bytes: 1 << 20,
            lease_ms: 30_000,
        }
    }

    #[test]
    fn unset_sizes_and_renewal_come_from_the_masters() {
        let config = FrontendConfig::new("127.0.0.1:0", vec!["m:1".into()]);
        let limits = config.limits(&cell()).expect("limits");
        assert_eq!(limits.volume_size_bytes, 64 << 20);
        assert_eq!(limits.block_size_max_bytes, 1 << 20);
        assert_eq!(limits.lease_renew, Duration::from_secs(5));
    }

    #[test]
    fn own_sizes_may_be_smaller_than_the_masters_never_larger() {
        let mut config = FrontendConfig::new("127.0.0.1:0", vec!["m:1".into()]);
        config.volume_size_bytes = Some(8 << 20);
        config.block_size_max_bytes = Some(512 << 10);
        let limits = config.limits(&cell()).expect("smaller sizes are kept");
        assert_eq!((limits.volume_size_bytes, limits.block_size_max_bytes), (8 << 20, 512 << 10));
        config.volume_size_bytes = Some(128 << 20);
        let e = config.limits(&cell()).expect_err("a larger volume is refused");
        assert!(e.contains("volume_size_bytes 134217728 is over the masters' 67108864"), "{e}");
        config.volume_size_bytes = None;
        config.block_size_max_bytes = Some(2 << 20);
        assert!(config.limits(&cell()).is_err(), "a larger block limit is refused");
        config.block_size_max_bytes = None;
        config.lease_renew = Some(Duration::from_secs(15));
        assert!(config.limits(&cell()).is_err(), "renewing only every half lease is refused");
    }

    #[test]
    fn the_get_budget_stays_under_the_answers_connection_window() {
        let mut config = FrontendConfig::new("127.0.0.1:0", vec!["m:1".into()]);
        config.validate().expect("the default budget fits");
        config.get_blocks_in_flight_max_bytes = u64::from(cellar_volume_api::ANSWER_CONNECTION_WINDOW_BYTES);
        let e = config.validate().expect_err("a budget as large as the window");
        assert!(e.contains("connection window"), "{e}");
    }
}
