//! `cellar master`: runs one member of the master Raft group until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use cellar_master::config::{MasterConfig, RawMasterConfig, parse_peers};
use clap::Args;

#[derive(Debug, Args)]
pub struct MasterArgs {
    /// This member's Raft id (1, 2, 3, ...; never reuse the id of a removed member).
    #[arg(long)]
    id: u64,
    /// Address to listen on (Raft and client API), e.g. 127.0.0.1:7001.
    #[arg(long)]
    listen: String,
    /// Address the others reach this master at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory of the RocksDB store and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    /// Every member: 1=ADDR,2=ADDR,3=ADDR.
    #[arg(long)]
    peers: String,
    /// Form the group from --peers on first start (a no-op once it exists); give it to one
    /// member only.
    #[arg(long)]
    init: bool,
    /// TOML file with further settings (see cellar_master::config::RawMasterConfig).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cluster secret required on every call between cellar processes.
    #[arg(long, env = "CELLAR_SECRET")]
    secret: Option<String>,
    /// Address to serve GET /metrics (Prometheus text) on, e.g. 127.0.0.1:9101.
    #[arg(long)]
    metrics: Option<String>,
}

pub fn run(args: MasterArgs) -> Result<()> {
    let peers = parse_peers(&args.peers).map_err(|e| anyhow!(e))?;
    let raw: RawMasterConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?
        }
        None => RawMasterConfig::default(),
    };
    let mut config = MasterConfig::new(args.id, args.listen.clone(), args.data_dir, peers).with_raw(raw);
    if let Some(advertise) = args.advertise {
        config.advertise = advertise;
    }
    config.init = args.init;
    if args.secret.is_some() {
        config.secret = args.secret;
    }
    config.validate().map_err(|e| anyhow!(e))?;
    let replicas = config.replicas;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(async move {
        let listener = cellar_master::node::bind(&config.listen).await?;
        let handle = cellar_master::node::start(config, listener).await?;
        tracing::info!(id = handle.id, addr = %handle.addr, "master running");
        if let Some(addr) = &args.metrics {
            let (id, raft, reader, observed) =
                (handle.id, handle.raft.clone(), handle.reader.clone(), handle.observed.clone());
            let replicas = usize::from(replicas);
            let render: crate::metrics_http::Render = std::sync::Arc::new(move || {
                let text = cellar_master::metrics::render(id, &raft, &reader, replicas, &observed);
                Box::pin(async move { text })
            });
            let bound = crate::metrics_http::serve(addr, render).await?;
            tracing::info!(%bound, "metrics served");
        }
        let failed = tokio::select! {
            () = crate::signals::wait_for_stop() => None,
            error = handle.stopped() => Some(error),
        };
        match &failed {
            None => tracing::info!("stopping master"),
            Some(error) => tracing::error!(%error, "the master's Raft stopped; the master exits"),
        }
        handle.shutdown().await;
        match failed {
            None => Ok(()),
            Some(error) => Err(anyhow!("the master's Raft stopped: {error}")),
        }
    })
}
