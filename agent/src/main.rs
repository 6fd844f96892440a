//! `presage-agent`: the host agent daemon. See the library for what it does.

use std::path::PathBuf;

use clap::Parser;
use presage_protocol::lifecycle::{self, LogFormat};

#[derive(Parser)]
#[command(name = "presage-agent", version, about = "presage host agent")]
struct Args {
    /// Configuration file.
    #[arg(long, short, default_value = "/etc/presage/agent.toml", env = "PRESAGE_AGENT_CONFIG")]
    config: PathBuf,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    presage_agent::runtime()?.block_on(lifecycle::run_daemon(
        "presage-agent",
        &args.config,
        args.log_format,
        args.check_config,
        presage_agent::config::AgentConfig::load,
        presage_agent::run,
    ))
}
