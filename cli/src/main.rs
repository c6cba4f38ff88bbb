//! The one `cellar` binary: every process role and operator command is a subcommand.

mod admin_cmd;
mod bench_cmd;
mod client_cmd;
mod deadline_args;
mod dev_cmd;
mod disk_cmd;
mod frontend_cmd;
mod master_cmd;
mod metrics_http;
mod selfcheck;
mod signals;
mod sim_cmd;
mod volume_cmd;

use std::path::PathBuf;

use anyhow::Result;
use cellar_blockstore::IoChoice;
use clap::{Parser, Subcommand, ValueEnum};

// glibc's malloc showed up as ~13% of a busy cell's CPU (many small allocations per
// request across many threads); mimalloc's thread-local free lists cost a fraction.
// Built without transparent huge pages (feature `no_thp`: mimalloc does not madvise its
// memory MADV_HUGEPAGE): with them, the first touch of any byte of a 2 MiB region zeroed
// all of it (44% of the volume servers' CPU in the first 4 KiB puts of a fresh cell, in
// `clear_page_erms`), again after every purge of freed memory, and the sparse use of huge
// pages inflated every process's RSS (masters 99-102 -> 69-71 MiB, see
// docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// cellar: an erasure-coded, content-addressed block storage cluster.
#[derive(Debug, Parser)]
#[command(name = "cellar", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exercise the blockstore on a scratch directory: appends, reads, group commit,
    /// sealing, fragments, corruption detection, reopen and trash. Exits non-zero on any
    /// failure.
    Selfcheck {
        /// Directory to use (must be empty or absent); default: a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// I/O backend.
        #[arg(long, value_enum, default_value_t = IoArg::Auto)]
        io: IoArg,
    },
    /// Inspect a disk that no process has open: stat, list extents, verify checksums.
    #[command(subcommand)]
    Disk(disk_cmd::DiskCommand),
    /// Benchmarks; figures are printed beside the raw hardware measured in the same run.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// Run one member of the master Raft group.
    Master(master_cmd::MasterArgs),
    /// Run a volume server: owns disks, serves extents, runs the master's tasks.
    Volume(volume_cmd::VolumeArgs),
    /// Run a frontend: the HTTP block API.
    Frontend(frontend_cmd::FrontendArgs),
    /// Run a whole local cell in one process (3 masters, 6 volume servers, a frontend).
    Dev(dev_cmd::DevArgs),
    /// Durability simulator: P(data loss)/year of a layout by Monte Carlo (with importance
    /// sampling for rare losses) beside the Markov model; `sweep` charts nines against a
    /// parameter; `--from-cluster` simulates a live cell's placement.
    Sim(cellar_sim::cli::SimArgs),
    /// Store a block (a file, or - for standard input); prints its SHA-256.
    Put {
        /// The block API endpoint (default: $CELLAR_ENDPOINT, else the local cellar dev).
        #[arg(long)]
        endpoint: Option<String>,
        /// The file (at most 4 MiB), or - for standard input.
        file: PathBuf,
    },
    /// Fetch a block by its hash.
    Get {
        /// The block API endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// The block's SHA-256 (64 hex digits).
        hash: String,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Show where a block is: volume, state, scheme, placement.
    Stat {
        /// The block API endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// The block's SHA-256.
        hash: String,
    },
    /// Drop one reference to a block.
    Rm {
        /// The block API endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// The block's SHA-256.
        hash: String,
    },
    /// Operator commands against a running cell.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
}

/// The I/O backend to use.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum IoArg {
    /// io_uring where the kernel allows it, else pread/pwrite.
    Auto,
    /// io_uring only.
    Uring,
    /// pread/pwrite only.
    Pread,
}

impl IoArg {
    fn choice(self) -> IoChoice {
        match self {
            IoArg::Auto => IoChoice::Auto,
            IoArg::Uring => IoChoice::Uring,
            IoArg::Pread => IoChoice::Pread,
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Like other Unix tools, the commands that print die quietly when the reader of their
    // output goes away (`cellar admin status | head`) instead of panicking on a broken
    // pipe. Servers (and the load generator) keep SIGPIPE ignored: a socket write to a
    // peer that has gone must fail that write with EPIPE, not kill the process (seen:
    // `cellar dev` killed by SIGPIPE while stopping).
    let serves = matches!(
        cli.command,
        Command::Master(_) | Command::Volume(_) | Command::Frontend(_) | Command::Dev(_) | Command::Bench(_)
    );
    if !serves {
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs redirected to files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Selfcheck { dir, io } => selfcheck::run(dir, io.choice()),
        Command::Disk(cmd) => disk_cmd::run(cmd),
        Command::Bench(cmd) => bench_cmd::run(cmd),
        Command::Master(args) => master_cmd::run(args),
        Command::Volume(args) => volume_cmd::run(args),
        Command::Frontend(args) => frontend_cmd::run(args),
        Command::Dev(args) => dev_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Put { endpoint, file } => client_cmd::put(endpoint, file),
        Command::Get { endpoint, hash, output } => client_cmd::get(endpoint, hash, output),
        Command::Stat { endpoint, hash } => client_cmd::stat(endpoint, hash),
        Command::Rm { endpoint, hash } => client_cmd::rm(endpoint, hash),
        Command::Admin(cmd) => admin_cmd::run(cmd),
    }
}
