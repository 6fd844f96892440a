//! `presagectl`: the presage operator CLI. See the `presagectl` library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = presagectl::Cli::parse();
    if matches!(cli.command, presagectl::Command::Demo(_)) {
        presage_protocol::lifecycle::init_tracing(presage_protocol::lifecycle::LogFormat::Text, "warn");
    }
    if let Err(e) = presagectl::run(cli).await {
        eprintln!("presagectl: {e:#}");
        std::process::exit(1);
    }
}
