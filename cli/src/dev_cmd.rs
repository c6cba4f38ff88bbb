//! `cellar dev`: a whole local cell in one process (3 masters, 3 zones x 2 volume servers
//! x 2 disks, one frontend) under one data directory, until Ctrl-C.

use std::path::PathBuf;

use anyhow::{Context, Result};
use cellar_dev::{DevCell, DevOptions};
use clap::Args;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Data directory (kept across restarts).
    #[arg(long, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Address of the HTTP block API.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: String,
    /// Address of the gRPC block API.
    #[arg(long, default_value = "127.0.0.1:7481")]
    grpc: String,
    /// Address of the S3 API.
    #[arg(long, default_value = "127.0.0.1:7482")]
    s3: String,
    /// Volume size in MiB: small, so that sealing and coding happen within minutes of use.
    #[arg(long, default_value_t = 64)]
    volume_mib: u64,
    /// Have the cell's parts talk over gRPC on loopback, as on separate machines (by
    /// default the frontend calls the volume servers, and the masters each other,
    /// in-process).
    #[arg(long)]
    over_grpc: bool,
}

/// Default address of the dev cell's HTTP API (also the client commands' default).
pub const DEFAULT_HTTP: &str = "127.0.0.1:7480";

/// `$HOME/.cellar/dev`, or `./cellar-dev` without a home.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("cellar-dev"), |h| PathBuf::from(h).join(".cellar").join("dev"))
}

pub fn run(args: DevArgs) -> Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(async move {
        let options = DevOptions {
            data_dir: args.data_dir.clone(),
            http: args.http,
            grpc: args.grpc,
            s3: args.s3,
            volume_size_bytes: args.volume_mib << 20,
            lease_ms: 10_000,
            over_grpc: args.over_grpc,
        };
        let cell = DevCell::start(options).await?;
        let e = &cell.endpoints;
        println!("cellar dev is up (data in {})", args.data_dir.display());
        println!("  http     {}", e.http);
        println!("  grpc     {}", e.grpc.as_deref().unwrap_or("-"));
        println!("  s3       {}  (access key {}, secret key {})", e.s3, e.access_key, e.secret_key);
        println!("  masters  {}", e.masters.join(","));
        println!("  volumes  {}", e.volumes.join(","));
        println!("  endpoints written to {}", args.data_dir.join("endpoints.json").display());
        println!("try:  echo hello | cellar put -   then   cellar get HASH");
        println!(
            "      AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {} s3 ls",
            e.access_key, e.secret_key, e.s3
        );
        crate::signals::wait_for_stop().await;
        println!("stopping cellar dev");
        cell.shutdown(&args.data_dir).await;
        Ok(())
    })
}
