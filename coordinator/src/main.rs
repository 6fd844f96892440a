//! `presage-coordinator`: the cluster coordinator daemon. See the library for what it does.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use presage_protocol::lifecycle::{self, LogFormat};

#[derive(Parser)]
#[command(name = "presage-coordinator", version, about = "presage cluster coordinator")]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/presage/coordinator.toml", env = "PRESAGE_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    lifecycle::init_tracing(args.log_format, "info");
    lifecycle::exit_on_panic("presage-coordinator");
    let cfg = presage_coordinator::config::CoordinatorConfig::load(&args.config)?;
    if args.check_config {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    let cancel = lifecycle::cancel_on_signal();
    presage_coordinator::server::run(cfg, cancel).await.context("presage-coordinator failed")
}
