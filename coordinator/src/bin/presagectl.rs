//! `presagectl`: the presage operator CLI. See `presage_coordinator::ctl`.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = presage_coordinator::ctl::Cli::parse();
    if matches!(cli.command, presage_coordinator::ctl::Command::Demo(_)) {
        presage_protocol::lifecycle::init_tracing(presage_protocol::lifecycle::LogFormat::Text, "warn");
    }
    if let Err(e) = presage_coordinator::ctl::run(cli).await {
        eprintln!("presagectl: {e:#}");
        std::process::exit(1);
    }
}
