//! The agent's TOML configuration: parsing, defaults and validation. Every error names the file
//! and the key at fault; unknown keys are errors, not silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use presage_protocol::tls::TlsFiles;
use serde::Deserialize;

use presage_protocol::config_file;
pub use presage_protocol::config_file::ConfigError;

/// The whole agent configuration (`/etc/presage/agent.toml`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's id in the cluster; must equal the common name of the agent certificate.
    /// Defaults to the machine's host name.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Coordinator address, e.g. `https://coordinator.example:7400`, or the addresses of
    /// several (a leader and its standbys: the agent tries them in turn until one takes its
    /// session).
    pub coordinator: CoordinatorUrls,
    /// Name the coordinator's certificate must carry (default `presage-coordinator`).
    #[serde(default = "default_server_name")]
    pub coordinator_name: String,
    /// Where the agent keeps its sled store.
    pub data_dir: PathBuf,
    /// How often host and VMs are sampled.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub sample_interval: Duration,
    /// Samples kept per VM in the local history (oldest dropped first).
    #[serde(default = "default_history")]
    pub history_per_vm: usize,
    pub tls: TlsFiles,
    #[serde(deserialize_with = "hypervisor_section")]
    pub hypervisor: HypervisorConfig,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    #[serde(default)]
    pub forecast: ForecastConfig,
    #[serde(default)]
    pub reservations: ReservationsConfig,
    #[serde(default)]
    pub migration: MigrationConfig,
    #[serde(default)]
    pub topology: TopologyConfig,
    #[serde(default)]
    pub capacity: CapacityConfig,
    /// `[metrics]`: `/metrics` on a plain port (`listen = "127.0.0.1:9465"`); off by default.
    #[serde(default)]
    pub metrics: presage_protocol::metrics_endpoint::MetricsConfig,
}

/// One coordinator URL or several, in the order they are tried.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "OneOrMany")]
pub struct CoordinatorUrls(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for CoordinatorUrls {
    fn from(v: OneOrMany) -> Self {
        match v {
            OneOrMany::One(u) => CoordinatorUrls(vec![u]),
            OneOrMany::Many(us) => CoordinatorUrls(us),
        }
    }
}

impl From<&str> for CoordinatorUrls {
    fn from(u: &str) -> Self {
        CoordinatorUrls(vec![u.to_string()])
    }
}

impl From<String> for CoordinatorUrls {
    fn from(u: String) -> Self {
        CoordinatorUrls(vec![u])
    }
}

/// Where this host sits: its zone and rack (free-form names; empty: unknown). The coordinator
/// scores dependency latency requirements by them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyConfig {
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub rack: String,
}

/// `[capacity]`: what this host has that the hypervisor cannot tell.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// The disk bandwidth its VMs share, MB/s, reads and writes together (what its storage
    /// sustains; e.g. 2000 for a local NVMe RAID). Unset: unknown on a libvirt host (the
    /// optimiser then leaves disk limits out), the trace's peaks on a simulated one.
    #[serde(default)]
    pub disk_mb_per_s: Option<f64>,
}

/// `[migration]`: how this host takes part in live migrations (libvirt hosts).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// The libvirt URI other hosts open to migrate VMs here, e.g. `qemu+tls://kvm-07/system`.
    /// Sent in the registration; without it this host takes no incoming live migrations.
    #[serde(default)]
    pub uri: Option<String>,
    /// The migration data channel on this host, e.g. `tcp://10.0.0.7` (default: libvirt's
    /// choice from the host name).
    #[serde(default)]
    pub data_uri: Option<String>,
    /// `peer-to-peer` (this host's libvirtd drives the migration) or `direct` (the agent holds
    /// connections to both daemons).
    #[serde(default)]
    pub mode: MigrationMode,
    /// Define the VM on the destination (it survives a destination restart).
    #[serde(default = "yes")]
    pub persistent: bool,
    /// Undefine the VM here once it runs on the destination.
    #[serde(default = "yes")]
    pub undefine_source: bool,
    /// Throttle the guest's vCPUs when its memory is dirtied faster than it is copied.
    #[serde(default = "yes")]
    pub auto_converge: bool,
    /// Bandwidth limit per migration in MiB/s; 0: unlimited.
    #[serde(default)]
    pub bandwidth_mib_s: u64,
    /// Longest pause allowed at switch-over, in milliseconds (default: libvirt's).
    #[serde(default)]
    pub max_downtime_ms: Option<u64>,
    /// How often progress is read from the migration job and sent to the coordinator.
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    pub progress_interval: Duration,
    /// Compare the VM's CPU model and features with the destination's CPU before starting.
    #[serde(default = "yes")]
    pub check_cpu: bool,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            uri: None,
            data_uri: None,
            mode: MigrationMode::default(),
            persistent: true,
            undefine_source: true,
            auto_converge: true,
            bandwidth_mib_s: 0,
            max_downtime_ms: None,
            progress_interval: default_progress_interval(),
            check_cpu: true,
        }
    }
}

impl MigrationConfig {
    /// What the libvirt driver applies of these settings.
    pub fn libvirt_settings(&self) -> presage_protocol::pb::LibvirtMigrationSettings {
        presage_protocol::pb::LibvirtMigrationSettings {
            peer_to_peer: self.mode == MigrationMode::PeerToPeer,
            persistent: self.persistent,
            undefine_source: self.undefine_source,
            auto_converge: self.auto_converge,
            bandwidth_mib_s: self.bandwidth_mib_s,
            max_downtime_ms: self.max_downtime_ms,
            progress_interval_ms: self.progress_interval.as_millis().min(u64::MAX as u128) as u64,
            check_cpu: self.check_cpu,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationMode {
    #[default]
    PeerToPeer,
    Direct,
}

fn yes() -> bool {
    true
}

fn default_progress_interval() -> Duration {
    Duration::from_secs(1)
}

/// `[reservations]`: the agent's own admission of reservations.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReservationsConfig {
    /// The share of the host's CPU that its VMs' use plus hard reservations may reach.
    #[serde(default = "default_cpu_limit")]
    pub cpu_limit: f64,
    /// Memory kept back from VMs for memory leases, MiB (0: memory is never lent).
    #[serde(default)]
    pub lease_memory_reserve_mib: f64,
}

impl Default for ReservationsConfig {
    fn default() -> Self {
        ReservationsConfig { cpu_limit: default_cpu_limit(), lease_memory_reserve_mib: 0.0 }
    }
}

fn default_cpu_limit() -> f64 {
    presage_decide::reservation::DEFAULT_CPU_LIMIT
}

/// `[forecast]`: the demand forecasting models. Without one (or when it cannot be loaded) the
/// agent forecasts that resource with the rolling-quantile baseline and reports why.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForecastConfig {
    /// ONNX model of CPU demand (e.g. `/usr/share/presage/models/cpu-quantiles-v2.onnx`).
    #[serde(default)]
    pub cpu_model: Option<PathBuf>,
    /// ONNX model of memory in use (e.g. `/usr/share/presage/models/memory-quantiles-v2.onnx`).
    #[serde(default)]
    pub memory_model: Option<PathBuf>,
    /// Where every VM's 5-minute steps are archived, in monthly folders of Bitbrains-format
    /// files (see `demand_archive`); none: not archived.
    #[serde(default)]
    pub archive_dir: Option<PathBuf>,
    /// Month folders the archive keeps (default 3).
    #[serde(default)]
    pub archive_months: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum HypervisorConfig {
    /// A real KVM host reached through libvirt, by way of the `presage-libvirt` driver process.
    Libvirt {
        uri: String,
        /// The driver program; `None`: `presage-libvirt` beside the agent's binary, else on PATH.
        driver: Option<PathBuf>,
    },
    /// VMs whose usage replays trace files (demo, tests, scale experiments).
    Simulated(SimulatedConfig),
}

/// The `[hypervisor]` table as written. It is flat (not a serde-tagged enum) so that a wrong
/// value's error keeps its key name; [`hypervisor_section`] turns it into [`HypervisorConfig`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HypervisorSection {
    kind: HypervisorKind,
    uri: Option<String>,
    driver: Option<PathBuf>,
    trace_dir: Option<PathBuf>,
    format: Option<String>,
    time_compression: Option<f64>,
    shard_index: Option<usize>,
    shard_count: Option<usize>,
    max_vms: Option<usize>,
    start_step: Option<u64>,
    cpu_cores: Option<u32>,
    cpu_fraction: Option<f64>,
    cpu_mhz_per_core: Option<f64>,
    memory_mb: Option<u64>,
    migration_mb_per_s: Option<f64>,
    nic_mbit_s: Option<u64>,
    fault_fail_migration_at: Option<f64>,
    fault_hang_migrations: Option<bool>,
    fault_refuse_adopt: Option<bool>,
    fault_fail_vms: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    fault_linger_incoming: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum HypervisorKind {
    Libvirt,
    Simulated,
}

fn hypervisor_section<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HypervisorConfig, D::Error> {
    use serde::de::Error;
    let s = HypervisorSection::deserialize(d)?;
    Ok(match s.kind {
        HypervisorKind::Libvirt => {
            let simulated_only = [
                ("trace_dir", s.trace_dir.is_some()),
                ("format", s.format.is_some()),
                ("time_compression", s.time_compression.is_some()),
                ("shard_index", s.shard_index.is_some()),
                ("shard_count", s.shard_count.is_some()),
                ("max_vms", s.max_vms.is_some()),
                ("start_step", s.start_step.is_some()),
                ("cpu_cores", s.cpu_cores.is_some()),
                ("cpu_fraction", s.cpu_fraction.is_some()),
                ("cpu_mhz_per_core", s.cpu_mhz_per_core.is_some()),
                ("memory_mb", s.memory_mb.is_some()),
                ("migration_mb_per_s", s.migration_mb_per_s.is_some()),
                ("nic_mbit_s", s.nic_mbit_s.is_some()),
                ("fault_fail_migration_at", s.fault_fail_migration_at.is_some()),
                ("fault_hang_migrations", s.fault_hang_migrations.is_some()),
                ("fault_refuse_adopt", s.fault_refuse_adopt.is_some()),
                ("fault_fail_vms", s.fault_fail_vms.is_some()),
                ("fault_linger_incoming", s.fault_linger_incoming.is_some()),
            ];
            if let Some((key, _)) = simulated_only.iter().find(|(_, set)| *set) {
                return Err(D::Error::custom(format!("key `hypervisor.{key}` only applies to kind = \"simulated\"")));
            }
            HypervisorConfig::Libvirt { uri: s.uri.unwrap_or_else(default_libvirt_uri), driver: s.driver }
        }
        HypervisorKind::Simulated => {
            if let Some(key) = [("uri", s.uri.is_some()), ("driver", s.driver.is_some())].iter().find(|(_, set)| *set).map(|(k, _)| k) {
                return Err(D::Error::custom(format!("key `hypervisor.{key}` only applies to kind = \"libvirt\"")));
            }
            HypervisorConfig::Simulated(SimulatedConfig {
                trace_dir: s.trace_dir.ok_or_else(|| D::Error::missing_field("hypervisor.trace_dir"))?,
                format: s.format,
                time_compression: s.time_compression.unwrap_or_else(default_compression),
                shard_index: s.shard_index.unwrap_or(0),
                shard_count: s.shard_count.unwrap_or(1),
                max_vms: s.max_vms.unwrap_or(0),
                start_step: s.start_step.unwrap_or(0),
                cpu_cores: s.cpu_cores,
                cpu_fraction: s.cpu_fraction,
                cpu_mhz_per_core: s.cpu_mhz_per_core,
                memory_mb: s.memory_mb,
                nic_mbit_s: s.nic_mbit_s,
                migration_mb_per_s: s.migration_mb_per_s,
                faults: SimulatedFaults {
                    fail_migration_at: s.fault_fail_migration_at,
                    hang_migrations: s.fault_hang_migrations.unwrap_or(false),
                    refuse_adopt: s.fault_refuse_adopt.unwrap_or(false),
                    fail_vms: s.fault_fail_vms.unwrap_or_default(),
                    linger_incoming: s.fault_linger_incoming,
                },
            })
        }
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimulatedConfig {
    /// Folder of trace files (one per VM).
    pub trace_dir: PathBuf,
    /// `planetlab` or `bitbrains`; detected from the file names when absent.
    pub format: Option<String>,
    /// Trace seconds that pass per real second (60: a 5-minute trace step every 5 s).
    pub time_compression: f64,
    /// Take every `shard_count`-th file starting at `shard_index`, so several agents can share
    /// one trace folder.
    pub shard_index: usize,
    pub shard_count: usize,
    /// At most this many VMs (0: no limit).
    pub max_vms: usize,
    /// Trace step the replay starts at.
    pub start_step: u64,
    /// The simulated host's capacity. Defaults: CloudSim's HP ProLiant ML110 G5
    /// (2 cores x 2660 MIPS, 4 GiB) scaled up to hold the shard (see `simulated.rs`).
    pub cpu_cores: Option<u32>,
    /// Without `cpu_cores`: cores for this share of the shard's full demand (1: every VM at
    /// 100 % fits; 0.25: CPU oversubscribed four times, as KVM hosts often are).
    pub cpu_fraction: Option<f64>,
    pub cpu_mhz_per_core: Option<f64>,
    pub memory_mb: Option<u64>,
    /// The simulated NIC's speed, Mbit/s. Default: what every VM of the shard sends or
    /// receives at its own peak at once, at least 1 Gbit/s. (Its disk bandwidth: the trace's
    /// peaks likewise, or `[capacity] disk_mb_per_s`.)
    pub nic_mbit_s: Option<u64>,
    /// How fast a VM's memory is copied when it migrates away (trace time; default 125 MB/s,
    /// a 1 Gbit/s link): a migration takes memory / this / time_compression seconds of real time.
    pub migration_mb_per_s: Option<f64>,
    /// Injected faults, for testing plans at scale.
    pub faults: SimulatedFaults,
}

impl SimulatedConfig {
    /// The whole of `trace_dir` on one host from its first step, 60 x faster than real time,
    /// with the trace's sizes and no faults (what tests and benchmarks start from).
    pub fn replaying(trace_dir: impl Into<PathBuf>) -> SimulatedConfig {
        SimulatedConfig {
            trace_dir: trace_dir.into(),
            format: None,
            time_compression: 60.0,
            shard_index: 0,
            shard_count: 1,
            max_vms: 0,
            start_step: 0,
            cpu_cores: None,
            cpu_fraction: None,
            cpu_mhz_per_core: None,
            memory_mb: None,
            nic_mbit_s: None,
            migration_mb_per_s: None,
            faults: SimulatedFaults::default(),
        }
    }
}

/// Faults a simulated hypervisor can be told to inject into migrations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimulatedFaults {
    /// Migrations away from this host fail when this share (0..1) of the copy is done.
    pub fail_migration_at: Option<f64>,
    /// Migrations away from this host never finish copying (until aborted).
    pub hang_migrations: bool,
    /// This host refuses to adopt VMs (a destination that dies mid-move).
    pub refuse_adopt: bool,
    /// Migrations of these VMs away from this host fail halfway through the copy.
    pub fail_vms: Vec<String>,
    /// A VM this host refused to adopt stays here as an incoming instance (present, not
    /// running) this long after the refusal, as a libvirt destination keeps its paused incoming
    /// domain for a while after the source aborts.
    pub linger_incoming: Option<Duration>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig { initial_backoff: default_initial_backoff(), max_backoff: default_max_backoff() }
    }
}

fn default_server_name() -> String {
    presage_protocol::COORDINATOR_TLS_NAME.to_string()
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_history() -> usize {
    // 24 hours at the default 10 s interval.
    8640
}
fn default_libvirt_uri() -> String {
    "qemu:///system".to_string()
}
fn default_compression() -> f64 {
    1.0
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl AgentConfig {
    /// Reads, parses and validates a config file. Relative paths in it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let mut cfg = Self::parse(&config_file::read(path)?, path)?;
        for p in [&mut cfg.data_dir, &mut cfg.tls.ca, &mut cfg.tls.cert, &mut cfg.tls.key] {
            config_file::resolve(path, p);
        }
        if let HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            config_file::resolve(path, &mut s.trace_dir);
        }
        for m in [&mut cfg.forecast.cpu_model, &mut cfg.forecast.memory_model, &mut cfg.forecast.archive_dir].into_iter().flatten() {
            config_file::resolve(path, m);
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let cfg: AgentConfig = config_file::parse(text, path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| config_file::invalid(path, key, reason);
        if !(self.reservations.cpu_limit.is_finite() && self.reservations.cpu_limit > 0.0 && self.reservations.cpu_limit <= 4.0) {
            return invalid("reservations.cpu_limit", "must be within (0, 4]");
        }
        if !(self.reservations.lease_memory_reserve_mib.is_finite() && self.reservations.lease_memory_reserve_mib >= 0.0) {
            return invalid("reservations.lease_memory_reserve_mib", "must be a finite number >= 0");
        }
        if let Some(h) = &self.host_id
            && let Err(e) = presage_protocol::pki::validate_name(h, presage_protocol::tls::Role::Agent)
        {
            return invalid("host_id", &e.to_string());
        }
        if self.coordinator.0.is_empty() {
            return invalid("coordinator", "give at least one coordinator URL");
        }
        if let Some(u) = self.coordinator.0.iter().find(|u| !u.starts_with("https://")) {
            return invalid("coordinator", &format!("{u} must be an https:// URL (presage only speaks mutual TLS)"));
        }
        if self.sample_interval < Duration::from_millis(100) {
            return invalid("sample_interval", "must be at least 100ms");
        }
        if self.history_per_vm == 0 {
            return invalid("history_per_vm", "must be at least 1");
        }
        if self.forecast.archive_months.is_some_and(|m| m == 0 || m > 120) {
            return invalid("forecast.archive_months", "must be within 1..=120");
        }
        if self.reconnect.initial_backoff.is_zero() || self.reconnect.max_backoff < self.reconnect.initial_backoff {
            return invalid("reconnect.max_backoff", "backoffs must be positive and max_backoff >= initial_backoff");
        }
        for (key, value, schemes) in [
            (
                "migration.uri",
                &self.migration.uri,
                &["qemu", "qemu+tls", "qemu+ssh", "qemu+tcp", "qemu+unix", "qemu+libssh", "qemu+libssh2", "test"][..],
            ),
            ("migration.data_uri", &self.migration.data_uri, &["tcp", "rdma", "unix"][..]),
        ] {
            if let Some(v) = value {
                let scheme = v.split_once("://").map(|(s, _)| s);
                if !scheme.is_some_and(|s| schemes.contains(&s)) {
                    return invalid(key, &format!("must be a URI with one of the schemes {} (got {v:?})", schemes.join(", ")));
                }
            }
        }
        if self.migration.progress_interval < Duration::from_millis(100) {
            return invalid("migration.progress_interval", "must be at least 100ms");
        }
        if let HypervisorConfig::Simulated(s) = &self.hypervisor {
            if !(s.time_compression.is_finite() && s.time_compression > 0.0) {
                return invalid("hypervisor.time_compression", "must be a positive number");
            }
            if s.shard_count == 0 || s.shard_index >= s.shard_count {
                return invalid("hypervisor.shard_index", "must be below hypervisor.shard_count");
            }
            if let Some(f) = &s.format
                && let Err(e) = f.parse::<presage_traces::TraceFormat>()
            {
                return invalid("hypervisor.format", &e);
            }
            if let Some(f) = s.faults.fail_migration_at
                && !(0.0..=1.0).contains(&f)
            {
                return invalid("hypervisor.fault_fail_migration_at", "must be within 0..=1");
            }
            if let Some(r) = s.migration_mb_per_s
                && !(r.is_finite() && r > 0.0)
            {
                return invalid("hypervisor.migration_mb_per_s", "must be a number > 0");
            }
            if let Some(f) = s.cpu_fraction
                && !(f.is_finite() && f > 0.0 && f <= 1.0)
            {
                return invalid("hypervisor.cpu_fraction", "must be within (0, 1]");
            }
            if s.cpu_cores == Some(0) {
                return invalid("hypervisor.cpu_cores", "must be at least 1");
            }
            if s.cpu_mhz_per_core.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
                return invalid("hypervisor.cpu_mhz_per_core", "must be a positive number");
            }
            if s.memory_mb == Some(0) {
                return invalid("hypervisor.memory_mb", "must be at least 1");
            }
            if s.nic_mbit_s == Some(0) {
                return invalid("hypervisor.nic_mbit_s", "must be at least 1");
            }
        }
        if self.capacity.disk_mb_per_s.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
            return invalid("capacity.disk_mb_per_s", "must be a positive number of MB/s");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coordinator_is_one_url_or_several_all_https() {
        let with = |c: &str| AgentConfig::parse(&GOOD.replace("coordinator = \"https://127.0.0.1:7400\"", c), Path::new("a.toml"));
        let many = with("coordinator = [\"https://c1:7400\", \"https://c2:7400\"]").unwrap();
        assert_eq!(many.coordinator.0, vec!["https://c1:7400".to_string(), "https://c2:7400".to_string()]);
        assert_eq!(with("coordinator = \"https://c1:7400\"").unwrap().coordinator.0.len(), 1);
        let e = with("coordinator = [\"https://c1:7400\", \"http://c2:7400\"]").unwrap_err().to_string();
        assert!(e.contains("http://c2:7400"), "{e}");
        assert!(with("coordinator = []").unwrap_err().to_string().contains("at least one"));
    }

    const GOOD: &str = r#"
coordinator = "https://127.0.0.1:7400"
data_dir = "data"
sample_interval = "2s"
[tls]
ca = "ca.pem"
cert = "agent.pem"
key = "agent.key"
[hypervisor]
kind = "simulated"
trace_dir = "/traces/20110303"
time_compression = 60
shard_index = 1
shard_count = 4
"#;

    fn err(text: &str) -> String {
        AgentConfig::parse(text, Path::new("/etc/presage/agent.toml")).unwrap_err().to_string()
    }

    #[test]
    fn the_packaged_config_is_valid() {
        let c = AgentConfig::parse(include_str!("../../packaging/agent.toml"), Path::new("agent.toml")).unwrap();
        assert_eq!(c.forecast.cpu_model.as_deref(), Some(Path::new("/usr/share/presage/models/cpu-quantiles-v2.onnx")));
        assert_eq!(c.forecast.memory_model.as_deref(), Some(Path::new("/usr/share/presage/models/memory-quantiles-v2.onnx")));
        assert!(matches!(c.hypervisor, HypervisorConfig::Libvirt { .. }));
        assert_eq!(c.forecast.archive_dir.as_deref(), Some(Path::new("/var/lib/presage-agent/demand-archive")));
        assert!(err(&format!("{GOOD}[forecast]\narchive_months = 0\n")).contains("forecast.archive_months"));
        assert_eq!(AgentConfig::parse(GOOD, Path::new("a.toml")).unwrap().forecast, ForecastConfig::default());
        assert!(err(&format!("{GOOD}[forecast]\nmodel = \"x\"\n")).contains("model"));
        assert!(err(&format!("{GOOD}[reservations]\ncpu_limit = 0.0\n")).contains("reservations.cpu_limit"));
        assert_eq!(
            AgentConfig::parse(&format!("{GOOD}[reservations]\ncpu_limit = 1.5\n"), Path::new("a.toml")).unwrap().reservations.cpu_limit,
            1.5
        );
        assert_eq!(c.migration.uri.as_deref(), Some("qemu+tls://kvm-01.example/system"));
        assert_eq!(c.migration.mode, MigrationMode::PeerToPeer);
        assert_eq!(AgentConfig::parse(GOOD, Path::new("a.toml")).unwrap().migration, MigrationConfig::default());
    }

    #[test]
    fn bad_migration_settings_are_named() {
        assert!(err(&format!("{GOOD}[migration]\nuri = \"kvm-01:16509\"\n")).contains("migration.uri"));
        assert!(err(&format!("{GOOD}[migration]\ndata_uri = \"http://x\"\n")).contains("migration.data_uri"));
        assert!(err(&format!("{GOOD}[migration]\nmode = \"sideways\"\n")).contains("mode"));
        assert!(err(&format!("{GOOD}[migration]\nprogress_interval = \"1ms\"\n")).contains("migration.progress_interval"));
        assert!(err(&format!("{GOOD}[migration]\nbandwith_mib_s = 10\n")).contains("bandwith_mib_s"));
        let ok = AgentConfig::parse(
            &format!("{GOOD}[migration]\nuri = \"qemu+ssh://kvm-02/system\"\nmode = \"direct\"\nbandwidth_mib_s = 500\n"),
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!((ok.migration.mode, ok.migration.bandwidth_mib_s), (MigrationMode::Direct, 500));
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = AgentConfig::parse(GOOD, Path::new("a.toml")).unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(2));
        assert_eq!(c.history_per_vm, 8640);
        assert_eq!(c.coordinator_name, "presage-coordinator");
        let HypervisorConfig::Simulated(s) = c.hypervisor else { panic!("simulated expected") };
        assert_eq!((s.shard_index, s.shard_count, s.time_compression), (1, 4, 60.0));
        let lv = AgentConfig::parse(
            &GOOD.replace(
                "kind = \"simulated\"\ntrace_dir = \"/traces/20110303\"\ntime_compression = 60\nshard_index = 1\nshard_count = 4",
                "kind = \"libvirt\"",
            ),
            Path::new("a.toml"),
        )
        .unwrap();
        assert_eq!(lv.hypervisor, HypervisorConfig::Libvirt { uri: "qemu:///system".into(), driver: None });
        let libvirt = GOOD.replace(
            "kind = \"simulated\"\ntrace_dir = \"/traces/20110303\"\ntime_compression = 60\nshard_index = 1\nshard_count = 4",
            "kind = \"libvirt\"\ndriver = \"/opt/presage/presage-libvirt\"",
        );
        let lv = AgentConfig::parse(&libvirt, Path::new("a.toml")).unwrap();
        let HypervisorConfig::Libvirt { driver, .. } = lv.hypervisor else { panic!("libvirt expected") };
        assert_eq!(driver.as_deref(), Some(Path::new("/opt/presage/presage-libvirt")));
        let e = err(&GOOD.replace("shard_count = 4", "shard_count = 4\ndriver = \"/usr/bin/presage-libvirt\""));
        assert!(e.contains("hypervisor.driver") && e.contains("only applies to kind = \"libvirt\""), "{e}");
    }

    #[test]
    fn the_linger_fault_is_a_duration_for_simulated_hosts_only() {
        let with = |kv: &str| GOOD.replace("shard_count = 4", &format!("shard_count = 4\n{kv}"));
        let c = AgentConfig::parse(&with("fault_refuse_adopt = true\nfault_linger_incoming = \"4s\""), Path::new("a.toml")).unwrap();
        let HypervisorConfig::Simulated(s) = c.hypervisor else { panic!("simulated expected") };
        assert_eq!((s.faults.refuse_adopt, s.faults.linger_incoming), (true, Some(Duration::from_secs(4))));
        let e = err(&with("fault_linger_incoming = \"a while\""));
        assert!(e.contains("fault_linger_incoming"), "{e}");
        let e = err(&GOOD.replace(
            "kind = \"simulated\"\ntrace_dir = \"/traces/20110303\"\ntime_compression = 60\nshard_index = 1\nshard_count = 4",
            "kind = \"libvirt\"\nfault_linger_incoming = \"4s\"",
        ));
        assert!(e.contains("hypervisor.fault_linger_incoming") && e.contains("simulated"), "{e}");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = err(&GOOD.replace("sample_interval", "sample_intervall"));
        assert!(e.contains("/etc/presage/agent.toml") && e.contains("sample_intervall"), "{e}");
        let e = err(&GOOD.replace("shard_count = 4", "shard_count = 4\nshards = 2"));
        assert!(e.contains("shards"), "{e}");
    }

    #[test]
    fn ill_typed_and_invalid_values_are_named() {
        let e = err(&GOOD.replace("\"2s\"", "\"soon\""));
        assert!(e.contains("sample_interval"), "{e}");
        let e = err(&GOOD.replace("shard_count = 4", "shard_count = \"four\""));
        assert!(e.contains("shard_count"), "{e}");
        let e = err(&GOOD.replace("shard_index = 1", "shard_index = 4"));
        assert!(e.contains("hypervisor.shard_index"), "{e}");
        let e = err(&GOOD.replace("https://", "http://"));
        assert!(e.contains("`coordinator`"), "{e}");
        let e = err(&GOOD.replace("kind = \"simulated\"", "kind = \"xen\""));
        assert!(e.contains("xen"), "{e}");
        let e = err(&GOOD.replace("[tls]\n", "[tls]\nhost_id = 3\n"));
        assert!(e.contains("host_id"), "{e}");
    }
}
