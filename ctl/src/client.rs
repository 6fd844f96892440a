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

    /// Connects to the coordinator at `url`, or of several (comma-separated) to the first that
    /// answers and is not a standby (a standby when only standbys answer).
    pub async fn connect(&self) -> anyhow::Result<OperatorClient<Channel>> {
        let material = self.tls.load().context("loading the operator's TLS files (see --tls-dir)")?;
        let tls = material.client_config(&self.server_name);
        let mut failures = Vec::new();
        let urls: Vec<&str> = self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        // A standby answers reads from its copy and refuses the rest naming the leader: with
        // several addresses, the leader is preferred; a standby serves only when none leads.
        let mut standby = None;
        for url in &urls {
            let endpoint = Endpoint::from_shared(url.to_string())
                .with_context(|| format!("invalid coordinator URL {url:?}"))?
                .tls_config(tls.clone())
                .context("TLS configuration")?
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30));
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut client = OperatorClient::new(channel);
                    if urls.len() == 1 {
                        return Ok(client);
                    }
                    match client.cluster_status(presage_protocol::pb::ClusterStatusRequest {}).await {
                        Ok(s) if s.get_ref().role == "standby" => {
                            failures.push(format!("{url}: a standby (the leader is {})", s.get_ref().leader));
                            standby.get_or_insert(client);
                        }
                        _ => return Ok(client),
                    }
                }
                Err(e) => failures.push(format!("{url}: {}", presage_protocol::error_chain(&e))),
            }
        }
        if let Some(client) = standby {
            return Ok(client);
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
