//! `cellar sim` without the rest of the `cellar` binary: parses the same arguments and
//! calls the same entry point, so its output is exactly what `cellar sim` prints.
//!
//! `cargo run --release -p cellar-sim --example sim -- --config docs/sim/3x10x12-rs-6-3.toml`

use clap::Parser;

#[derive(Parser)]
#[command(name = "cellar sim", about = "durability simulator")]
struct Cli {
    #[command(flatten)]
    sim: cellar_sim::cli::SimArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cellar_sim::cli::run(cli.sim, None)
}
