//! `presage-coordinator`: the cluster coordinator daemon. See the library for what it does.

use std::path::PathBuf;

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
    lifecycle::run_daemon(
        "presage-coordinator",
        &args.config,
        args.log_format,
        args.check_config,
        presage_coordinator::config::CoordinatorConfig::load,
        presage_coordinator::server::run,
    )
    .await
}
