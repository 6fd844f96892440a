//! Process conventions shared by `presage-agent` and `presage-coordinator`: structured logging,
//! panics that end the process (so systemd restarts a clean one), and a cancellation token fired
//! by SIGTERM or SIGINT.

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (journald adds its own timestamps).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (expected text or json)")),
        }
    }
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`, else `default`.
pub fn init_tracing(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only on a terminal: journald and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Makes any panic, on any thread or task, log through tracing and exit the process with status
/// 101. A daemon with a panicked task is in an unknown state; a restart is the safe answer.
pub fn exit_on_panic(process: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".into());
        tracing::error!(%process, %location, panic = %payload, "panic; exiting so the service manager restarts a clean process");
        eprintln!("{process}: panic at {location}: {payload}");
        std::process::exit(101);
    }));
}

/// Returns a token that is cancelled on the first SIGTERM or SIGINT.
pub fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let name = wait_for_signal().await;
        tracing::info!(signal = name, "shutdown requested");
        fire.cancel();
    });
    token
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

/// The life of a daemon process: tracing, panics that exit, the configuration loaded from
/// `config` (and, with `check_only`, nothing more), then `run` with a token cancelled on
/// SIGTERM/SIGINT.
pub async fn run_daemon<C, E, Fut>(
    process: &'static str,
    config: &std::path::Path,
    log_format: LogFormat,
    check_only: bool,
    load: impl FnOnce(&std::path::Path) -> Result<C, E>,
    run: impl FnOnce(C, CancellationToken) -> Fut,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    init_tracing(log_format, "info");
    exit_on_panic(process);
    let cfg = load(config)?;
    if check_only {
        println!("{}: ok", config.display());
        return Ok(());
    }
    run(cfg, cancel_on_signal()).await.map_err(|e| e.context(format!("{process} failed")))
}
