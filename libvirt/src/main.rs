//! `presage-libvirt`: the libvirt driver a presage agent starts for a libvirt host. It speaks
//! length-delimited protobuf on stdin and stdout (see the library) and logs to stderr, which the
//! agent passes through. It is not run by hand.

use presage_protocol::lifecycle::{self, LogFormat};

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).is_some_and(|a| a == "--version" || a == "-V") {
        println!("presage-libvirt {}", presage_protocol::PRESAGE_VERSION);
        return std::process::ExitCode::SUCCESS;
    }
    let format = std::env::var("PRESAGE_LOG_FORMAT").ok().and_then(|f| f.parse().ok()).unwrap_or(LogFormat::Text);
    lifecycle::init_tracing(format, "info");
    lifecycle::exit_on_panic("presage-libvirt");
    match presage_libvirt::driver::serve(std::io::stdin().lock(), std::io::BufWriter::new(std::io::stdout())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "presage-libvirt stops");
            std::process::ExitCode::from(2)
        }
    }
}
