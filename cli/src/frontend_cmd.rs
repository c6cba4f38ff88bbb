//! `cellar frontend`: the HTTP block API gateway, until Ctrl-C or SIGTERM.

use anyhow::{Context, Result, anyhow};
use cellar_frontend::FrontendConfig;
use clap::Args;

#[derive(Debug, Args)]
pub struct FrontendArgs {
    /// Address of the HTTP block API.
    #[arg(long)]
    http: String,
    /// Address of the gRPC block API (not served without it).
    #[arg(long)]
    grpc: Option<String>,
    /// Address of the S3 API (not served without it); access keys: `cellar admin key`.
    #[arg(long)]
    s3: Option<String>,
    /// Bytes per second the compactor moves at most (0: this frontend moves nothing).
    #[arg(long, default_value_t = cellar_frontend::COMPACTION_BYTES_PER_SEC_DEFAULT)]
    compaction_bytes_per_sec: u64,
    /// Master addresses, comma separated.
    #[arg(long)]
    master: String,
    /// Cluster secret sent on every call between cellar processes.
    #[arg(long, env = "CELLAR_SECRET")]
    secret: Option<String>,
    /// Volume size in MiB (default: the masters' volume_size_bytes, from the cluster map;
    /// a smaller value fills volumes less, a larger one is refused).
    #[arg(long)]
    volume_mib: Option<u64>,
    /// Open volumes written at once.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    #[command(flatten)]
    deadlines: crate::deadline_args::DeadlineArgs,
    /// Longest a put body may take to arrive, in milliseconds (then 408).
    #[arg(long, default_value_t = cellar_frontend::PUT_BODY_TIMEOUT_MS)]
    put_body_timeout_ms: u64,
    /// Longest a put body may go without a byte, in milliseconds (then 408).
    #[arg(long, default_value_t = cellar_frontend::PUT_BODY_IDLE_TIMEOUT_MS)]
    put_body_idle_timeout_ms: u64,
    /// MiB of put bodies held at once (more puts wait); at least the largest block.
    #[arg(long, default_value_t = cellar_frontend::PUT_BODIES_IN_FLIGHT_MAX_BYTES >> 20)]
    put_bodies_in_flight_max_mib: u64,
    /// MiB of blocks read for gets at once (more gets wait); at least the largest block.
    #[arg(long, default_value_t = cellar_frontend::GET_BLOCKS_IN_FLIGHT_MAX_BYTES >> 20)]
    get_blocks_in_flight_max_mib: u64,
    /// KiB: a put of a smaller block skips asking the masters whether it is stored already
    /// (its index commit deduplicates it; the copy written is reclaimed by compaction); 0:
    /// every put asks.
    #[arg(long, default_value_t = cellar_frontend::PUT_LOOKUP_MIN_BYTES >> 10)]
    put_lookup_min_kib: u64,
    /// KiB: a batch of puts whose payload is smaller appends alone among such batches (the
    /// next small one waits for it, gathering the puts queued meanwhile): fewer, larger
    /// Appends and Raft entries under many small puts; 0: every batch may append beside
    /// the others (up to 4 at once).
    #[arg(long, default_value_t = cellar_frontend::APPEND_ALONE_BELOW_BYTES >> 10)]
    append_alone_below_kib: u64,
    /// Percent of this host's CPU time busy from which small batches append alone (sampled
    /// every 100 ms; they go beside each other again 20 points below); 0: whatever the load.
    #[arg(long, default_value_t = cellar_frontend::APPEND_ALONE_HOST_BUSY_PERCENT)]
    append_alone_host_busy_percent: u64,
    /// Whether small reads to a volume server wait for the call in flight to it and then go
    /// together in one ReadRecords call (while this host is saturated, see
    /// --gather-reads-host-busy-percent): fewer calls under many small gets.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    gather_reads: bool,
    /// Percent of this host's CPU time busy from which small reads are gathered (sampled
    /// every 100 ms; no longer 20 points below); 0: whatever the load.
    #[arg(long, default_value_t = cellar_frontend::READ_GATHER_HOST_BUSY_PERCENT)]
    gather_reads_host_busy_percent: u64,
    /// Milliseconds a cached index entry serves gets before it is looked up again: an older
    /// one still serves the get at once and is refreshed in the background, so a block
    /// deleted through another frontend stops being served here soon after the first get
    /// past this age (gets never wait on the masters for a block the frontend knows).
    #[arg(long, default_value_t = cellar_frontend::INDEX_ENTRY_FRESH_MS)]
    index_entry_fresh_ms: u64,
    /// Open HTTP connections served at once (more wait in the listen backlog).
    #[arg(long, default_value_t = cellar_frontend::HTTP_CONNECTIONS_MAX)]
    http_connections_max: usize,
    /// Longest a response write may stay blocked, in milliseconds: a client that reads
    /// nothing for this long has its connection closed (and gives back the get budget its
    /// unsent bytes held).
    #[arg(long, default_value_t = cellar_frontend::RESPONSE_WRITE_STALL_MAX_MS)]
    response_write_stall_timeout_ms: u64,
    /// Storage watcher: one stored put in this many is read back later (0: off).
    #[arg(long, default_value_t = cellar_frontend::config::WatchConfig::default().sample_one_in)]
    watch_sample_one_in: u64,
    /// Storage watcher: how long after its put a sampled block is read back, in seconds; a
    /// comma-separated ascending list re-reads it at each delay.
    #[arg(long, value_delimiter = ',', default_values_t = cellar_frontend::config::WatchConfig::default().delays.iter().map(|d| d.as_secs()).collect::<Vec<u64>>())]
    watch_delay_secs: Vec<u64>,
}

pub fn run(args: FrontendArgs) -> Result<()> {
    let masters =
        args.master.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    let mut config = FrontendConfig::new(args.http, masters);
    config.secret = args.secret;
    config.grpc = args.grpc;
    config.s3 = args.s3;
    config.compaction_bytes_per_sec = args.compaction_bytes_per_sec;
    config.volume_size_bytes = args.volume_mib.map(|m| m << 20);
    config.writers = args.writers;
    config.deadlines = args.deadlines.deadlines();
    config.put_body_timeout = std::time::Duration::from_millis(args.put_body_timeout_ms);
    config.put_body_idle_timeout = std::time::Duration::from_millis(args.put_body_idle_timeout_ms);
    config.http_connections_max = args.http_connections_max;
    config.response_write_stall_timeout =
        std::time::Duration::from_millis(args.response_write_stall_timeout_ms);
    config.put_bodies_in_flight_max_bytes = args.put_bodies_in_flight_max_mib.saturating_mul(1 << 20);
    config.get_blocks_in_flight_max_bytes = args.get_blocks_in_flight_max_mib.saturating_mul(1 << 20);
    config.put_lookup_min_bytes = args.put_lookup_min_kib.saturating_mul(1 << 10);
    config.append_alone_below_bytes = args.append_alone_below_kib.saturating_mul(1 << 10);
    config.append_alone_host_busy_percent = args.append_alone_host_busy_percent;
    config.gather_reads = args.gather_reads;
    config.gather_reads_host_busy_percent = args.gather_reads_host_busy_percent;
    config.index_entry_fresh = std::time::Duration::from_millis(args.index_entry_fresh_ms);
    config.watch = cellar_frontend::config::WatchConfig {
        sample_one_in: args.watch_sample_one_in,
        delays: args.watch_delay_secs.iter().map(|s| std::time::Duration::from_secs(*s)).collect(),
    };
    config.validate().map_err(|e| anyhow!(e))?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(async move {
        let handle = cellar_frontend::start(config).await?;
        // Written, not printed: a reader that went away (a closed pipe) must not stop the
        // frontend (println! panics on a write error).
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "frontend serving http://{}", handle.addr);
            if let Some(s3) = handle.s3_addr {
                let _ = writeln!(out, "frontend serving S3 at http://{s3}");
            }
            let _ = out.flush();
        }
        crate::signals::wait_for_stop().await;
        handle.shutdown().await;
        Ok(())
    })
}
