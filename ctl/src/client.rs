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

    pub async fn connect(&self) -> anyhow::Result<OperatorClient<Channel>> {
        let material = self.tls.load().context("loading the operator's TLS files (see --tls-dir)")?;
        let endpoint = Endpoint::from_shared(self.url.clone())
            .with_context(|| format!("invalid coordinator URL {:?}", self.url))?
            .tls_config(material.client_config(&self.server_name))
            .context("TLS configuration")?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the coordinator at {}: {} (is it running, and is your certificate issued by this cluster's CA?)",
                self.url,
                presage_protocol::error_chain(&e)
            )
        })?;
        Ok(OperatorClient::new(channel))
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
