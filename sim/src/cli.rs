//! `cellar sim`: arguments and entry point, shared by the `cellar` binary and the
//! crate's examples so that both print exactly the same thing.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::config::{Method, SimConfig};
use crate::sweep::{SweepParam, run_sweep};
use crate::{ClusterInput, simulate};

/// Arguments of `cellar sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// TOML file: cluster shape, failure and repair parameters (built-in defaults without it).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Simulated years per run (overrides `simulation.years`).
    #[arg(long, global = true)]
    pub years: Option<f64>,
    /// Independent runs (overrides `simulation.runs`).
    #[arg(long, global = true)]
    pub runs: Option<u64>,
    /// Master seed; the same seed gives the same numbers (overrides `simulation.seed`).
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Estimator (overrides `simulation.method`).
    #[arg(long, global = true, value_enum)]
    pub method: Option<MethodArg>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Worker threads (default: all cores); results do not depend on it.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// No progress lines on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Simulate the live cluster of these master addresses (comma-separated): its
    /// actual placement and hardware, with failure parameters from the config.
    #[arg(long, value_name = "ADDRS")]
    pub from_cluster: Option<String>,
    /// Sweep one parameter instead of a single simulation.
    #[command(subcommand)]
    pub sweep: Option<SimCommand>,
}

/// Subcommands of `cellar sim`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimCommand {
    /// Vary one parameter and chart nines against it.
    Sweep(SweepArgs),
}

/// Arguments of `cellar sim sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Parameter to vary.
    #[arg(long, value_enum)]
    pub param: SweepParam,
    /// Values, comma-separated (e.g. `0.25,0.5,1,2,4` or `r3,rs-6-3,rs-10-4`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub values: Vec<String>,
    /// Where to write the SVG chart.
    #[arg(long, value_name = "FILE", default_value = "sim-sweep.svg")]
    pub svg: PathBuf,
    /// Chart title (default: the parameter and scheme).
    #[arg(long)]
    pub title: Option<String>,
}

/// `--method` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    /// Count losses in plainly simulated histories.
    Plain,
    /// Failure-biased branches with likelihood ratios (rare events).
    Importance,
}

/// Loads the config and applies the command-line overrides.
pub fn load_config(args: &SimArgs) -> anyhow::Result<SimConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
            SimConfig::from_toml(&text).with_context(|| format!("parse config {}", path.display()))?
        }
        None => SimConfig::default(),
    };
    let sim = &mut config.simulation;
    if let Some(years) = args.years {
        anyhow::ensure!(years.is_finite() && years > 0.0, "--years must be > 0");
        sim.years = years;
    }
    if let Some(runs) = args.runs {
        anyhow::ensure!(
            (1..=crate::config::RUNS_MAX).contains(&runs),
            "--runs must be in 1..={}",
            crate::config::RUNS_MAX
        );
        sim.runs = runs;
    }
    if let Some(seed) = args.seed {
        sim.seed = seed;
    }
    if let Some(method) = args.method {
        sim.method = match method {
            MethodArg::Plain => Method::Plain,
            MethodArg::Importance => Method::Importance,
        };
    }
    Ok(config)
}

/// Runs `cellar sim` and prints the table, JSON or sweep (writing its SVG).
/// `from_cluster` is the live cluster fetched for `--from-cluster`, if any.
pub fn run(args: SimArgs, from_cluster: Option<ClusterInput>) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    anyhow::ensure!(
        args.from_cluster.is_none() || from_cluster.is_some(),
        "--from-cluster was given but no cluster description was fetched"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .clamp(1, crate::config::THREADS_MAX);
    let progress = !args.quiet;
    let input = from_cluster.as_ref();
    match &args.sweep {
        None => {
            let report = simulate(&config, input, threads, progress).context("simulate")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).context("encode report")?);
            } else {
                print!("{}", report.table());
            }
        }
        Some(SimCommand::Sweep(sweep)) => {
            let result =
                run_sweep(&config, input, sweep.param, &sweep.values, threads, progress).context("sweep")?;
            let title = sweep
                .title
                .clone()
                .unwrap_or_else(|| format!("{} vs nines ({})", sweep.param.title(), config.cluster.scheme));
            std::fs::write(&sweep.svg, result.svg(&title))
                .with_context(|| format!("write chart {}", sweep.svg.display()))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&result).context("encode sweep")?);
            } else {
                print!("{}", result.table());
                println!("chart written to {}", sweep.svg.display());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn flags_and_sweep_subcommand_parse() {
        let cli = Cli::try_parse_from([
            "sim",
            "--config",
            "c.toml",
            "--years",
            "2",
            "--runs",
            "5",
            "--seed",
            "9",
            "--json",
            "sweep",
            "--param",
            "scheme",
            "--values",
            "r3,rs-6-3",
        ])
        .expect("parse");
        assert_eq!(cli.sim.runs, Some(5));
        assert!(cli.sim.json);
        let Some(SimCommand::Sweep(sweep)) = cli.sim.sweep else { panic!("sweep expected") };
        assert_eq!(sweep.param, SweepParam::Scheme);
        assert_eq!(sweep.values, vec!["r3".to_string(), "rs-6-3".to_string()]);
    }

    #[test]
    fn overrides_apply_over_defaults() {
        let cli = Cli::try_parse_from(["sim", "--years", "3", "--method", "plain"]).expect("parse");
        let config = load_config(&cli.sim).expect("config");
        assert_eq!(config.simulation.years, 3.0);
        assert_eq!(config.simulation.method, Method::Plain);
    }
}
