//! `cellar volume`: runs one volume server until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use cellar_volume::VolumeConfig;
use clap::Args;

use crate::IoArg;

#[derive(Debug, Args)]
pub struct VolumeArgs {
    /// Address to serve the extent API on, e.g. 127.0.0.1:7201.
    #[arg(long)]
    listen: String,
    /// Address the others reach this server at (default: the bound address).
    #[arg(long)]
    advertise: Option<String>,
    /// The zone (failure domain) of this node.
    #[arg(long)]
    zone: String,
    /// A disk directory; repeat for every disk.
    #[arg(long = "disk", required = true)]
    disks: Vec<PathBuf>,
    /// Master addresses, comma separated.
    #[arg(long)]
    master: String,
    /// Cluster secret required on every call between cellar processes.
    #[arg(long, env = "CELLAR_SECRET")]
    secret: Option<String>,
    /// I/O backend of the disks.
    #[arg(long, value_enum, default_value_t = IoArg::Auto)]
    io: IoArg,
    /// Heartbeat period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// Idle task poll period in milliseconds.
    #[arg(long, default_value_t = 1000)]
    task_poll_ms: u64,
    /// Append rate (MiB/s) at or above which encode tasks wait for the load to drop.
    #[arg(long, default_value_t = 32)]
    encode_defer_busy_mib_per_sec: u64,
    /// Longest time encodes wait for a busy server, in seconds (0: never wait).
    #[arg(long, default_value_t = 60)]
    encode_defer_max_secs: u64,
    /// How long deleted extents stay in a disk's trash before they are unlinked, in
    /// seconds (default: a day).
    #[arg(long, default_value_t = cellar_volume::trash::TRASH_RETENTION_DEFAULT.as_secs())]
    trash_retention_secs: u64,
    /// A disk with less than this percentage of its capacity free gives up trash entries
    /// before their retention, oldest delete first, until it has that much (0: never).
    #[arg(long, default_value_t = cellar_volume::trash::TRASH_FREE_MIN_PERCENT_DEFAULT)]
    trash_free_min_percent: u64,
    /// MiB of each disk's file system that data writes leave free, for the disk's catalog
    /// (RocksDB), whose writes record deletes and trash purges: a disk this close to full
    /// takes no new extents or appends (0: no reserve).
    #[arg(long, default_value_t = cellar_blockstore::DISK_RESERVE_BYTES_DEFAULT >> 20)]
    disk_reserve_mib: u64,
    /// Bytes per second the scrubber reads and checks at most (0: no scrubbing).
    #[arg(long, default_value_t = cellar_volume::scrub::ScrubConfig::default().bytes_per_sec)]
    scrub_bytes_per_sec: u64,
    /// Shortest time between the starts of two full scrub passes, in seconds (default: a week).
    #[arg(long, default_value_t = cellar_volume::scrub::ScrubConfig::default().period.as_secs())]
    scrub_period_secs: u64,
    /// MiB of large records appended lately kept in memory, so that their reads need no
    /// device read (0: none). Records of 64 KiB and more; the oldest go first.
    #[arg(long, default_value_t = cellar_volume::recent::RECENT_RECORDS_DEFAULT_BYTES >> 20)]
    recent_records_mib: u64,
    /// Seconds an operation on a disk (a read, an append, a create) may stay under way, or
    /// a disk's stat go unanswered, before the disk is reported failed as hung.
    #[arg(long, default_value_t = cellar_volume::config::DISK_HUNG_AFTER_DEFAULT.as_secs())]
    disk_hung_after_secs: u64,
    /// Address to serve GET /metrics (Prometheus text) on, e.g. 127.0.0.1:9201.
    #[arg(long)]
    metrics: Option<String>,
    #[command(flatten)]
    deadlines: crate::deadline_args::DeadlineArgs,
}

pub fn run(args: VolumeArgs) -> Result<()> {
    let metrics = args.metrics.clone();
    let masters: Vec<String> =
        args.master.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let mut config = VolumeConfig::new(args.listen, args.zone, args.disks, masters);
    config.advertise = args.advertise;
    config.secret = args.secret;
    config.io = args.io.choice();
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(10));
    config.task_poll = Duration::from_millis(args.task_poll_ms.max(10));
    config.encode_defer = cellar_volume::tasks::EncodeDefer {
        busy_bytes_per_sec: args.encode_defer_busy_mib_per_sec.saturating_mul(1 << 20),
        max: Duration::from_secs(args.encode_defer_max_secs),
    };
    config.deadlines = args.deadlines.deadlines();
    config.trash_retention = Duration::from_secs(args.trash_retention_secs);
    if args.trash_free_min_percent > 100 {
        anyhow::bail!("--trash-free-min-percent must be 0..=100, not {}", args.trash_free_min_percent);
    }
    config.trash_free_min_percent = args.trash_free_min_percent;
    config.disk_reserve_bytes = args.disk_reserve_mib.saturating_mul(1 << 20);
    config.recent_records_bytes = args.recent_records_mib.saturating_mul(1 << 20);
    config.disk_hung_after = Duration::from_secs(args.disk_hung_after_secs);
    config.scrub = cellar_volume::scrub::ScrubConfig {
        bytes_per_sec: args.scrub_bytes_per_sec,
        period: Duration::from_secs(args.scrub_period_secs),
    };
    config.validate().map_err(|e| anyhow!(e))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(async move {
        let handle = cellar_volume::start(config).await?;
        tracing::info!(node = handle.node_id, addr = %handle.addr, "volume server running");
        if let Some(addr) = &metrics {
            let shared = handle.shared.clone();
            let render: crate::metrics_http::Render = std::sync::Arc::new(move || {
                let shared = shared.clone();
                Box::pin(async move { cellar_volume::metrics::render(&shared).await })
            });
            let bound = crate::metrics_http::serve(addr, render).await?;
            tracing::info!(%bound, "metrics served");
        }
        crate::signals::wait_for_stop().await;
        tracing::info!("stopping volume server");
        handle.shutdown().await;
        Ok(())
    })
}
