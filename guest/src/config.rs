//! `presage-guest.toml`: where the port is, how often to report, and each application to
//! measure (a statsd address it pushes timings to, and/or a local HTTP endpoint to probe).
//!
//! ```toml
//! port = "auto"            # the virtio-serial port named org.presage.guest.0, found in /sys
//! interval = "5s"
//!
//! [[app]]
//! name = "web"
//! statsd = "127.0.0.1:8125" # UDP: `web.latency:12.5|ms`, `web.errors:1|c`
//! http = "127.0.0.1:9125"   # or the same lines in an HTTP POST
//! probe = "http://127.0.0.1:8080/health"
//! probe_every = "500ms"
//! slo_p99_ms = 50           # the p99 it must keep: presage's placement acts on it
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use presage_protocol::config_file::{self, ConfigError};
use presage_protocol::guest::{MAX_APPS, MAX_NAME_BYTES};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// `auto` (find the port named `org.presage.guest.0` under `/sys/class/virtio-ports`), a
    /// device path, or `unix:PATH` (a Unix socket, for tests and other transports).
    #[serde(default = "auto")]
    pub port: String,
    /// How often a report is sent.
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default, rename = "app")]
    pub apps: Vec<AppConfig>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// A UDP address to receive the application's statsd timings and counters on.
    #[serde(default)]
    pub statsd: Option<SocketAddr>,
    /// A TCP address where the application `POST`s the same lines over HTTP.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// An `http://host:port/path` endpoint to probe; each probe is a request whose latency and
    /// success count.
    #[serde(default)]
    pub probe: Option<String>,
    #[serde(default = "half_a_second", with = "humantime_serde")]
    pub probe_every: Duration,
    /// The p99 latency the application must keep, ms. Reported with its figures; without one
    /// the host shows its latency but presage's placement does not act on it.
    #[serde(default)]
    pub slo_p99_ms: f64,
}

fn auto() -> String {
    "auto".into()
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn half_a_second() -> Duration {
    Duration::from_millis(500)
}

/// Where the port is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortPath {
    Device(PathBuf),
    Unix(PathBuf),
}

impl GuestConfig {
    pub fn load(path: &Path) -> Result<GuestConfig, ConfigError> {
        let text = config_file::read(path)?;
        let cfg: GuestConfig = config_file::parse(&text, path)?;
        cfg.validate().map_err(|(key, reason)| ConfigError::Invalid { path: path.into(), key, reason })?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval < Duration::from_millis(100) || self.interval > Duration::from_secs(3600) {
            return Err(("interval", format!("{:?}: it must be between 100ms and 1h", self.interval)));
        }
        if self.apps.len() > MAX_APPS {
            return Err(("app", format!("{} applications; at most {MAX_APPS}", self.apps.len())));
        }
        for (i, a) in self.apps.iter().enumerate() {
            if a.name.is_empty() || a.name.len() > MAX_NAME_BYTES || a.name.chars().any(|c| c.is_control() || c == ':' || c == '|') {
                return Err((
                    "app.name",
                    format!("app {i}: {:?} must be 1..={MAX_NAME_BYTES} bytes, without ':', '|' or control characters", a.name),
                ));
            }
            if self.apps[..i].iter().any(|b| b.name == a.name) {
                return Err(("app.name", format!("app {i}: {:?} is named twice", a.name)));
            }
            if a.statsd.is_none() && a.http.is_none() && a.probe.is_none() {
                return Err(("app", format!("app {:?}: give statsd, http, probe or several", a.name)));
            }
            if let Some(p) = &a.probe {
                crate::probe::HttpTarget::parse(p).map_err(|why| ("app.probe", format!("app {:?}: {why}", a.name)))?;
            }
            if a.probe_every < Duration::from_millis(10) {
                return Err(("app.probe_every", format!("app {:?}: {:?} is below 10ms", a.name, a.probe_every)));
            }
            if !(a.slo_p99_ms.is_finite() && (0.0..=presage_protocol::guest::MAX_LATENCY_MS).contains(&a.slo_p99_ms)) {
                return Err((
                    "app.slo_p99_ms",
                    format!(
                        "app {:?}: {} must be 0 (none) or a latency in ms up to {}",
                        a.name,
                        a.slo_p99_ms,
                        presage_protocol::guest::MAX_LATENCY_MS
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The port to open: `auto` looks under `sys_root/class/virtio-ports` for the port's name.
    pub fn port_path(&self, sys_root: &Path) -> Result<PortPath, String> {
        if let Some(p) = self.port.strip_prefix("unix:") {
            return Ok(PortPath::Unix(p.into()));
        }
        if self.port != "auto" {
            return Ok(PortPath::Device(self.port.clone().into()));
        }
        let dir = sys_root.join("class/virtio-ports");
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e} (is the virtio_console module loaded?)", dir.display()))?;
        for e in entries.filter_map(Result::ok) {
            let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
            if name.trim() == presage_protocol::guest::PORT_NAME {
                return Ok(PortPath::Device(Path::new("/dev").join(e.file_name())));
            }
        }
        Err(format!("no virtio-serial port named {} under {}", presage_protocol::guest::PORT_NAME, dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GuestConfig, String> {
        let cfg: GuestConfig = config_file::parse(text, Path::new("g.toml")).map_err(|e| e.to_string())?;
        cfg.validate().map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(cfg)
    }

    #[test]
    fn configs_are_checked_and_name_what_is_wrong() {
        let ok = parse("interval = \"2s\"\n[[app]]\nname = \"web\"\nstatsd = \"127.0.0.1:8125\"\n").unwrap();
        assert_eq!((ok.port.as_str(), ok.interval, ok.apps[0].probe_every), ("auto", Duration::from_secs(2), Duration::from_millis(500)));
        assert!(parse("[[app]]\nname = \"web\"\n").unwrap_err().contains("give statsd, http, probe or several"));
        assert!(parse("[[app]]\nname = \"a:b\"\nstatsd = \"127.0.0.1:1\"\n").unwrap_err().contains("app.name"));
        assert!(parse("[[app]]\nname = \"w\"\nprobe = \"ftp://x\"\n").unwrap_err().contains("app.probe"));
        assert!(parse("[[app]]\nname = \"w\"\nstatsd = \"127.0.0.1:1\"\nslo_p99_ms = -5\n").unwrap_err().contains("app.slo_p99_ms"));
        assert_eq!(parse("[[app]]\nname = \"w\"\nstatsd = \"127.0.0.1:1\"\nslo_p99_ms = 40\n").unwrap().apps[0].slo_p99_ms, 40.0);
        assert!(parse("interval = \"1ms\"\n").unwrap_err().contains("interval"));
        assert!(parse("colour = 1\n").unwrap_err().contains("colour"));
    }

    #[test]
    fn the_port_is_found_by_its_name_under_sys() {
        let sys = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p1", "org.qemu.guest_agent.0"), ("vport0p2", "org.presage.guest.0")] {
            let d = sys.path().join("class/virtio-ports").join(port);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        }
        let cfg = parse("").unwrap();
        assert_eq!(cfg.port_path(sys.path()).unwrap(), PortPath::Device("/dev/vport0p2".into()));
        let empty = tempfile::tempdir().unwrap();
        assert!(cfg.port_path(empty.path()).unwrap_err().contains("virtio_console"));
        let unix = parse("port = \"unix:/tmp/p.sock\"").unwrap();
        assert_eq!(unix.port_path(sys.path()).unwrap(), PortPath::Unix("/tmp/p.sock".into()));
    }
}
