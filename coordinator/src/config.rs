//! The coordinator's TOML configuration. Unknown keys and bad values are errors naming the key
//! and the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use presage_protocol::tls::TlsFiles;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: key `{key}`: {reason}")]
    Invalid { path: PathBuf, key: &'static str, reason: String },
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address agents and operators connect to.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A host that sends no report for this long is marked unreachable.
    #[serde(default = "default_host_timeout", with = "humantime_serde")]
    pub host_timeout: Duration,
    /// How long a graceful shutdown waits for open streams before closing them.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub tls: TlsFiles,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], presage_protocol::DEFAULT_COORDINATOR_PORT))
}
fn default_host_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

impl CoordinatorConfig {
    pub fn load(path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let mut cfg = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.tls.ca, &mut cfg.tls.cert, &mut cfg.tls.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let cfg: CoordinatorConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: presage_protocol::toml_message(text, &e) })?;
        let invalid = |key, reason: &str| Err(ConfigError::Invalid { path: path.into(), key, reason: reason.into() });
        if cfg.host_timeout < Duration::from_secs(1) {
            return invalid("host_timeout", "must be at least 1s");
        }
        if cfg.shutdown_timeout.is_zero() {
            return invalid("shutdown_timeout", "must be positive");
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "listen = \"127.0.0.1:7400\"\nhost_timeout = \"15s\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n";

    #[test]
    fn parses_and_names_bad_keys() {
        let c = CoordinatorConfig::parse(GOOD, Path::new("c.toml")).unwrap();
        assert_eq!(c.host_timeout, Duration::from_secs(15));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        let e = CoordinatorConfig::parse(&GOOD.replace("listen", "lisen"), Path::new("/etc/c.toml")).unwrap_err().to_string();
        assert!(e.contains("/etc/c.toml") && e.contains("lisen"), "{e}");
        let e = CoordinatorConfig::parse(&GOOD.replace("127.0.0.1:7400", "localhost"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = CoordinatorConfig::parse(&GOOD.replace("15s", "0s"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("`host_timeout`"), "{e}");
        let e = CoordinatorConfig::parse(&GOOD.replace("key = \"c.key\"\n", ""), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("key"), "{e}");
    }
}
