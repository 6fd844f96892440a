//! Connecting `presagectl` to the coordinator's operator API over mutual TLS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use presage_protocol::pb::operator_client::OperatorClient;
use presage_protocol::tls::TlsFiles;
use tonic::transport::{Channel, Endpoint};

/// Where the coordinator is and which certificate to present.
#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub server_name: String,
    pub tls: TlsFiles,
}

impl Target {
    /// The conventional operator file set inside a `presagectl certs init` directory.
    pub fn operator_files(dir: &std::path::Path) -> TlsFiles {
        TlsFiles::in_dir(dir, "operator")
    }

    /// Connects to the coordinator at `url`, or to the first of several (comma-separated)
    /// that answers: the leader, when coordinators elect one (standbys do not listen).
    pub async fn connect(&self) -> anyhow::Result<OperatorClient<Channel>> {
        let material = self.tls.load().context("loading the operator's TLS files (see --tls-dir)")?;
        let tls = material.client_config(&self.server_name);
        let mut failures = Vec::new();
        for url in self.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let endpoint = Endpoint::from_shared(url.to_string())
                .with_context(|| format!("invalid coordinator URL {url:?}"))?
                .tls_config(tls.clone())
                .context("TLS configuration")?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30));
            match endpoint.connect().await {
                Ok(channel) => return Ok(OperatorClient::new(channel)),
                Err(e) => failures.push(format!("{url}: {}", presage_protocol::error_chain(&e))),
            }
        }
        anyhow::bail!(
            "cannot connect to the coordinator ({}) (is it running, and is your certificate issued by this cluster's CA?)",
            if failures.is_empty() { format!("no URL in {:?}", self.url) } else { failures.join("; ") }
        )
    }
}

/// The default TLS directory: `$PRESAGE_TLS_DIR`, else `~/.config/presage/tls`.
pub fn default_tls_dir() -> PathBuf {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/presage/tls")).unwrap_or_else(|| PathBuf::from("/etc/presage/tls"))
}

/// Turns a gRPC status into an error that says what the coordinator answered.
pub fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let mut msg = format!("{what}: {} ({:?})", s.message(), s.code());
    if let Some(src) = std::error::Error::source(&s) {
        msg.push_str(": ");
        msg.push_str(&presage_protocol::error_chain(src));
    }
    anyhow::anyhow!(msg)
}
