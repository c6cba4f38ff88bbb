//! `cellar bench ...`: benchmarks, printed as tables with the raw-hardware baseline from
//! the same run.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cellar_bench::{disk, disk_open, master, report};
use clap::Subcommand;

use crate::IoArg;

/// Concurrent writers of the put ceiling measurement (the dev cell has 12 disks).
const CEILING_WRITERS: [u64; 3] = [1, 3, 12];

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Blockstore append+fsync and read throughput beside raw write+fdatasync and pread.
    Disk {
        /// Fresh directory on the device to measure.
        #[arg(long)]
        dir: PathBuf,
        /// MiB written per 4 MiB-record measurement.
        #[arg(long, default_value_t = 512)]
        size_mib: u64,
        /// 4 KiB records written with 64 writers (a tenth of it with 1 writer).
        #[arg(long, default_value_t = 20_000)]
        small_records: u64,
        /// I/O backend.
        #[arg(long, value_enum, default_value_t = IoArg::Auto)]
        io: IoArg,
    },
    /// Index commits/s and lookups/s on a 3-member master group of real processes, and
    /// each master's peak resident memory.
    Master {
        /// Fresh directory for the masters' data.
        #[arg(long)]
        dir: PathBuf,
        /// Index entries to commit.
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        clients: u64,
        /// Entries per CommitIndex call.
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// Lookups to run.
        #[arg(long, default_value_t = 500_000)]
        lookups: u64,
        /// Hashes per Lookup call.
        #[arg(long, default_value_t = 100)]
        lookup_batch: u64,
        /// The `cellar` binary to run the masters with (default: this one), e.g. a build
        /// of an earlier commit to compare with in the same run.
        #[arg(long)]
        master_binary: Option<PathBuf>,
    },
    /// Load on a block API endpoint: put COUNT distinct blocks with CONCURRENCY clients,
    /// then get them back; throughput and p50/p99 latency. With --ceiling-dir, also the
    /// device's fsynced 4 MiB write bandwidth there divided by the replica count: what
    /// replicated puts cannot beat when every disk shares that device.
    Blocks {
        /// Base URL (default: the local cellar dev).
        #[arg(long)]
        endpoint: Option<String>,
        /// Block size in bytes.
        #[arg(long, default_value_t = 4 << 20)]
        size: usize,
        /// Blocks to put and get.
        #[arg(long, default_value_t = 256)]
        count: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 32)]
        concurrency: u64,
        /// Directory on the device the cell's disks live on, for the put ceiling (raw 4 MiB
        /// write+fdatasync with 1, 3 and 12 writers at once; the best).
        #[arg(long)]
        ceiling_dir: Option<PathBuf>,
        /// Replicas per block, for the ceiling.
        #[arg(long, default_value_t = 3)]
        replicas: u64,
        /// Times the get phase runs (more than one: a steady read load to profile).
        #[arg(long, default_value_t = 1)]
        get_rounds: u32,
        /// The cell's masters (comma-separated): between puts and gets, wait until they
        /// report no open task and no volume waiting to be coded, so that the gets do not
        /// compete with the cell's background coding of what was just put.
        #[arg(long)]
        idle_master: Option<String>,
        /// A shell command run between the puts and the gets (e.g. `kill -STOP PID`, to
        /// measure gets with a volume server frozen); the bench fails if it fails.
        #[arg(long)]
        before_gets: Option<String>,
    },
    /// Fills a bucket with KEYS zero-byte objects (`k/000000000`...) through the masters'
    /// namespace API directly (the `PutVersion` an S3 PutObject of an empty body commits),
    /// to measure listing on buckets larger than S3 clients could fill here.
    NsLoad {
        /// The cell's masters (comma-separated).
        #[arg(long)]
        master: String,
        /// Cluster secret.
        #[arg(long, env = "CELLAR_SECRET")]
        secret: Option<String>,
        /// The bucket (created if missing).
        #[arg(long)]
        bucket: String,
        /// Objects to put.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Number of the first key (to resume a load).
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Concurrent calls.
        #[arg(long, default_value_t = 128)]
        clients: u64,
    },
    /// A real cell of processes (1 master, 6 volume servers over 3 zones): fill one
    /// volume through 3 replicas, seal it, time its rs-6-3 encode and report every volume
    /// server's peak resident memory (the encoder's from the seal on).
    Encode {
        /// Fresh directory for the cell's data.
        #[arg(long)]
        dir: PathBuf,
        /// Volume size to fill and encode, in MiB.
        #[arg(long, default_value_t = 1024)]
        volume_mib: u64,
    },
    /// Resident memory of opening a disk with many extents and records (populates the
    /// directory first if it is empty, then opens it in a fresh process).
    DiskOpen {
        /// Directory of the disk.
        #[arg(long)]
        dir: PathBuf,
        /// Extents to create.
        #[arg(long, default_value_t = 10_000)]
        extents: u64,
        /// Records in all.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// How many extents stay open (recovered at open); the rest are sealed.
        #[arg(long, default_value_t = 10)]
        open_extents: u64,
        /// Internal: only open the disk and report (run in a child process).
        #[arg(long, hide = true)]
        open_only: bool,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Disk { dir, size_mib, small_records, io } => {
            let config = disk::DiskBenchConfig {
                dir,
                large_total_bytes: size_mib << 20,
                small_records,
                io: io.choice(),
            };
            let rows = disk::run(&config)?;
            print!("{}", report::table(&rows));
            Ok(())
        }
        BenchCommand::Master { dir, entries, clients, batch, lookups, lookup_batch, master_binary } => {
            let cellar = match master_binary {
                Some(path) => path,
                None => std::env::current_exe().context("find own executable")?,
            };
            let config =
                master::MasterBenchConfig { cellar, dir, entries, clients, batch, lookup_batch, lookups };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let result = runtime.block_on(master::run(&config))?;
            print!("{}", report::table(&result.rows));
            for (id, kib) in result.peak_rss_kib {
                println!("master {id} peak RSS {} MiB", kib / 1024);
            }
            println!(
                "leader {}; {:.0} bytes went to each follower per committed index entry (loopback bytes less the bench's calls, halved)",
                result.leader_id, result.replicated_bytes_per_entry
            );
            Ok(())
        }
        BenchCommand::Blocks {
            endpoint,
            size,
            count,
            concurrency,
            ceiling_dir,
            replicas,
            get_rounds,
            idle_master,
            before_gets,
        } => {
            let config = cellar_bench::blocks::BlocksBenchConfig {
                endpoint: crate::client_cmd::endpoint(endpoint),
                size_bytes: size,
                count,
                concurrency,
                get_rounds,
                idle_masters: idle_master
                    .iter()
                    .flat_map(|m| m.split(','))
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                before_gets,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let run = runtime.block_on(cellar_bench::blocks::run(&config))?;
            let phases = run.phases;
            println!(
                "{:<28} {:>7} {:>10} {:>10} {:>10} {:>10}",
                "phase", "ops", "ops/s", "MB/s", "p50 ms", "p99 ms"
            );
            for p in &phases {
                println!(
                    "{:<28} {:>7} {:>10.1} {:>10.1} {:>10.2} {:>10.2}",
                    format!("{} {} B x{}", p.name, size, concurrency),
                    p.ops,
                    p.ops_per_sec(),
                    p.mb_per_sec(),
                    p.p50.as_secs_f64() * 1e3,
                    p.p99.as_secs_f64() * 1e3
                );
            }
            if let Some(waited) = run.idle_wait {
                println!("gets waited {:.1} s for the cell to go idle", waited.as_secs_f64());
            }
            if let Some(dir) = ceiling_dir {
                // The device's fsynced write bandwidth, with one writer and with many files
                // written at once (as the cell's disks on one device are), through the page
                // cache and direct (as large appends are written); the best of them.
                let payload = vec![0x5au8; 4 << 20];
                let mut best = 0f64;
                for direct in [false, true] {
                    for writers in CEILING_WRITERS {
                        let Some(row) =
                            disk::raw_write_concurrent(&dir, &payload, 96 / writers, writers, direct)?
                        else {
                            println!("ceiling: direct writes refused by the file system");
                            break;
                        };
                        println!("ceiling: {} {:.1} MB/s", row.name, row.mb_per_sec());
                        best = best.max(row.mb_per_sec());
                    }
                }
                println!(
                    "ceiling: best fsynced write bandwidth {best:.1} MB/s / {replicas} replicas = {:.1} MB/s of puts",
                    best / replicas.max(1) as f64
                );
            }
            Ok(())
        }
        BenchCommand::NsLoad { master, secret, bucket, keys, first, clients } => {
            let config = cellar_bench::namespace::NsLoadConfig {
                masters: master.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                secret,
                bucket,
                keys,
                first,
                clients,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let result = runtime.block_on(cellar_bench::namespace::load(&config))?;
            let secs = result.elapsed.as_secs_f64();
            println!(
                "loaded {} objects in {secs:.1} s: {:.0} puts/s",
                result.objects,
                result.objects as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        BenchCommand::Encode { dir, volume_mib } => {
            let config = cellar_bench::encode::EncodeBenchConfig {
                cellar: std::env::current_exe().context("find own executable")?,
                dir,
                volume_bytes: volume_mib << 20,
            };
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let result = runtime.block_on(cellar_bench::encode::run(&config))?;
            print!("{}", report::table(&result.rows));
            for (node, zone, kib, encoder) in result.peak_rss_kib {
                let role = if encoder { "  <- encoder, peak since the seal" } else { "" };
                println!("volume server node {node} ({zone}) peak RSS {} MiB{role}", kib / 1024);
            }
            Ok(())
        }
        BenchCommand::DiskOpen { dir, extents, records, open_extents, open_only } => {
            if open_only {
                let (n, verified, secs) = disk_open::open_and_count(&dir)?;
                let rss = disk_open::peak_rss_kib().context("read VmHWM")?;
                println!(
                    "opened {n} extents in {secs:.2}s, recovery verified {verified} records, peak RSS {} MiB",
                    rss / 1024
                );
                return Ok(());
            }
            if !dir.join("catalog").exists() {
                let secs = disk_open::populate(&dir, extents, records, open_extents)?;
                println!("populated {extents} extents with {records} records in {secs:.0}s");
            }
            let exe = std::env::current_exe().context("find own executable")?;
            let status = Command::new(exe)
                .args(["bench", "disk-open", "--open-only", "--dir"])
                .arg(&dir)
                .status()
                .context("run the open step")?;
            if !status.success() {
                bail!("open step failed: {status}");
            }
            Ok(())
        }
    }
}
