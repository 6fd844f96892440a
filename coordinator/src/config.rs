//! The coordinator's TOML configuration. Unknown keys and bad values are errors naming the key
//! and the file.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use presage_protocol::tls::TlsFiles;
use serde::Deserialize;

use presage_decide::ecosystem::feedback::{LearningConfig, NoiseFloor};
use presage_protocol::config_file;
pub use presage_protocol::config_file::ConfigError;

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
    /// The consolidation policy the coordinator runs in advisory mode.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[executor]`: how many moves may run at once per host (out, in) and in the cluster.
    #[serde(default)]
    pub executor: presage_decide::migration_queue::MigrationLimits,
    /// Where the coordinator keeps its plan journal and drain marks (a sled store). Without it
    /// they live in memory only, and a restart forgets plans in progress (logged at start).
    #[serde(default)]
    pub data_dir: Option<std::path::PathBuf>,
    /// `[ecosystem]`: how far apart the topology's levels are, for dependency requirements.
    #[serde(default)]
    pub ecosystem: EcosystemConfig,
    /// `[sizing]`: the automatic resize and borrowing pass and its policies per VM or group.
    #[serde(default)]
    pub sizing: SizingConfig,
    /// `[optimiser]`: the periodic background pass of the genetic optimiser over the cluster.
    #[serde(default)]
    pub optimiser: OptimiserConfig,
    /// `[metrics]`: `/metrics` on a plain port too (it is always on the mutual-TLS listener).
    #[serde(default)]
    pub metrics: presage_protocol::metrics_endpoint::MetricsConfig,
    /// `[cluster]`: where the durable state lives (sled in `data_dir`, or etcd shared with
    /// standbys).
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: `store = "sled"` (the default: the plan journal, drain marks, dependency
/// declarations, configuration versions and rollouts in `data_dir`) or `store = "etcd"` (all of
/// it in an etcd cluster, `[cluster.etcd]`, which several coordinators share).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    #[serde(default)]
    pub store: StoreKind,
    #[serde(default)]
    pub etcd: EtcdSection,
    /// Campaign for leadership with the other coordinators on the same etcd (`store =
    /// "etcd"` only): one leads and serves; the others wait, and one of them leads when it goes.
    #[serde(default)]
    pub election: bool,
    /// The URL agents and operators reach this coordinator at (what `presagectl cluster
    /// status` shows as the leader); default `https://LISTEN`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The leader's lease in etcd (whole seconds, at least 2) and how often it is renewed (at
    /// most half of it): a leader that has not renewed for `lease_ttl - renew_every` steps down.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
    #[serde(default = "default_renew_every", with = "humantime_serde")]
    pub renew_every: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            store: StoreKind::default(),
            etcd: EtcdSection::default(),
            election: false,
            advertise: None,
            lease_ttl: default_lease_ttl(),
            renew_every: default_renew_every(),
        }
    }
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(5)
}

fn default_renew_every() -> Duration {
    Duration::from_millis(1500)
}

impl ClusterConfig {
    pub fn lease_timing(&self) -> presage_store::LeaseTiming {
        presage_store::LeaseTiming { ttl: self.lease_ttl, renew_every: self.renew_every }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Sled,
    Etcd,
}

/// `[cluster.etcd]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSection {
    /// The members' client URLs: `https://` with `tls`, or `http://` on loopback only.
    pub endpoints: Vec<String>,
    /// Every key presage writes starts with it.
    pub prefix: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// The CA of etcd's members and this coordinator's client certificate and key.
    pub tls: Option<TlsFiles>,
    /// The name on the members' certificates (default: each endpoint's host).
    pub server_name: Option<String>,
}

impl Default for EtcdSection {
    fn default() -> Self {
        EtcdSection {
            endpoints: Vec::new(),
            prefix: "presage/".into(),
            request_timeout: Duration::from_secs(5),
            tls: None,
            server_name: None,
        }
    }
}

impl EtcdSection {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.endpoints.is_empty() {
            return Err(("cluster.etcd.endpoints", "store = \"etcd\" needs at least one endpoint".into()));
        }
        for e in &self.endpoints {
            let loopback = ["http://127.", "http://localhost:", "http://[::1]:"].iter().any(|p| e.starts_with(p));
            match (e.starts_with("https://"), self.tls.is_some()) {
                (true, true) => {}
                (true, false) => return Err(("cluster.etcd.tls", format!("{e} is https: give the CA, cert and key"))),
                (false, _) if !e.starts_with("http://") => {
                    return Err(("cluster.etcd.endpoints", format!("{e} is not an http:// or https:// URL")));
                }
                (false, _) if !loopback => {
                    return Err((
                        "cluster.etcd.endpoints",
                        format!("{e}: plain http to etcd only on loopback; use https with [cluster.etcd.tls]"),
                    ));
                }
                (false, _) => {}
            }
        }
        if self.prefix.is_empty() {
            return Err(("cluster.etcd.prefix", "must not be empty".into()));
        }
        if self.request_timeout < Duration::from_millis(100) || self.request_timeout > Duration::from_secs(60) {
            return Err(("cluster.etcd.request_timeout", "must be between 100ms and 60s".into()));
        }
        Ok(())
    }

    /// The store's configuration, its TLS files read.
    pub fn store_config(&self) -> Result<presage_store::EtcdConfig, String> {
        let tls = match &self.tls {
            Some(files) => {
                let read = |p: &std::path::PathBuf| std::fs::read(p).map_err(|e| format!("reading {}: {e}", p.display()));
                Some(presage_store::EtcdTls {
                    ca_pem: read(&files.ca)?,
                    cert_pem: read(&files.cert)?,
                    key_pem: read(&files.key)?,
                    server_name: self.server_name.clone(),
                })
            }
            None => None,
        };
        Ok(presage_store::EtcdConfig {
            endpoints: self.endpoints.clone(),
            prefix: self.prefix.clone(),
            tls,
            request_timeout: self.request_timeout,
        })
    }
}

/// `[optimiser]`: how often the genetic optimiser plans over the whole cluster (placement and
/// sizing together, as `presagectl optimise --cluster` does), and what happens to its plan:
/// `off`, `advisory` (kept for `presagectl optimise --cluster --last`) or `automatic` (a plan
/// that gains enough starts a staged rollout with a canary, one at a time).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimiserConfig {
    pub mode: OptimiserMode,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long one pass may search.
    #[serde(with = "humantime_serde")]
    pub time_limit: Duration,
    /// Threads the search uses (0: one per core). One keeps the coordinator's other work free.
    pub threads: usize,
    /// The least gain, as a share of the current objective, for which an automatic pass starts
    /// a rollout (below it the plan is kept, not applied: moves and resizes for noise are churn).
    pub min_gain: f64,
    /// The canary's share of the plan's VMs, and how long each stage is watched.
    pub canary: f64,
    #[serde(with = "humantime_serde")]
    pub watch: Duration,
    /// The balance goal's weight, in hosts: 0 packs VMs on as few hosts as their forecast risk
    /// allows; 1 counts evenly loaded hosts against some full beside some idle about as much
    /// as one host's energy. Applies to `presagectl optimise --cluster` too.
    pub balance_weight: f64,
    /// What a preferred dependency with a latency requirement costs the optimiser when its two
    /// VMs are too far apart to meet it (graded: nearer counts for more), in hosts, times the
    /// dependency's importance. 0: the optimiser ignores preferred dependencies (required ones
    /// with a latency requirement always hold their VMs in place).
    pub dependency_weight: f64,
    /// The longest one-off run an operator's `optimise --cluster` (or `POST /v1/optimise`) may
    /// search; longer asks are cut to it (the coordinator's CPU is shared with everything else).
    #[serde(with = "humantime_serde")]
    pub max_request_time: Duration,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimiserMode {
    #[default]
    Off,
    Advisory,
    Automatic,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        OptimiserConfig {
            mode: OptimiserMode::Off,
            interval: Duration::from_secs(3600),
            time_limit: Duration::from_secs(30),
            threads: 1,
            min_gain: 0.05,
            canary: 0.1,
            watch: Duration::from_secs(600),
            balance_weight: 0.0,
            dependency_weight: 0.2,
            max_request_time: Duration::from_secs(600),
        }
    }
}

impl OptimiserConfig {
    /// The goals the cluster optimiser plans for.
    pub fn goals(&self) -> presage_decide::optimise::cluster::SizingGoals {
        presage_decide::optimise::cluster::SizingGoals {
            balance_weight: self.balance_weight,
            dependency_weight: self.dependency_weight,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval < Duration::from_secs(1) {
            return Err(("optimiser.interval", "must be at least 1s".into()));
        }
        if self.time_limit < Duration::from_millis(100) || self.time_limit > Duration::from_secs(600) {
            return Err(("optimiser.time_limit", "must be between 100ms and 600s".into()));
        }
        if self.max_request_time < Duration::from_millis(100) || self.max_request_time > Duration::from_secs(600) {
            return Err(("optimiser.max_request_time", "must be between 100ms and 600s".into()));
        }
        if self.time_limit >= self.interval {
            return Err(("optimiser.time_limit", format!("must be shorter than the interval ({:?})", self.interval)));
        }
        if self.threads > 1024 {
            return Err(("optimiser.threads", "must be at most 1024".into()));
        }
        if !(0.0..1.0).contains(&self.min_gain) {
            return Err(("optimiser.min_gain", format!("{} is not a share in [0, 1)", self.min_gain)));
        }
        if !(self.canary > 0.0 && self.canary <= 1.0) {
            return Err(("optimiser.canary", format!("{} is not a share in (0, 1]", self.canary)));
        }
        if self.watch < Duration::from_secs(1) {
            return Err(("optimiser.watch", "must be at least 1s".into()));
        }
        if !(self.balance_weight.is_finite() && self.balance_weight >= 0.0) {
            return Err(("optimiser.balance_weight", format!("{} is not a finite value >= 0", self.balance_weight)));
        }
        if !(self.dependency_weight.is_finite() && self.dependency_weight >= 0.0) {
            return Err(("optimiser.dependency_weight", format!("{} is not a finite value >= 0", self.dependency_weight)));
        }
        Ok(())
    }
}

/// `[sizing]`: whether and how often the coordinator resizes VMs ahead of their forecasts and
/// brokers CPU leases between VMs of a host, and the policies it does so under
/// (`[sizing.defaults]`, `[[sizing.group]]` with `name` and `match = ["db-*"]`,
/// `[sizing.vm."ID"]`; every field of `presage_decide::sizing::rules::SizingRules`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SizingConfig {
    /// `off`, `advisory` (the pass proposes; `presagectl leases` shows it) or `automatic` (it
    /// sends its resizes and leases to the agents, each with its reason).
    pub mode: SizingMode,
    /// How often the pass runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The broker may lend a host's unallocated CPU, after what lenders can give.
    pub lend_free_cpu: bool,
    pub defaults: presage_decide::sizing::rules::SizingRules,
    #[serde(rename = "group")]
    pub groups: Vec<presage_decide::sizing::rules::GroupRules>,
    #[serde(rename = "vm")]
    pub vms: std::collections::BTreeMap<String, presage_decide::sizing::rules::RulesOverride>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SizingMode {
    Off,
    #[default]
    Advisory,
    Automatic,
}

impl SizingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SizingMode::Off => "off",
            SizingMode::Advisory => "advisory",
            SizingMode::Automatic => "automatic",
        }
    }
}

impl Default for SizingConfig {
    fn default() -> Self {
        SizingConfig {
            mode: SizingMode::default(),
            interval: Duration::from_secs(60),
            lend_free_cpu: true,
            defaults: Default::default(),
            groups: Vec::new(),
            vms: Default::default(),
        }
    }
}

impl SizingConfig {
    /// The policies as the decision core reads them.
    pub fn policies(&self) -> presage_decide::sizing::rules::SizingPolicies {
        presage_decide::sizing::rules::SizingPolicies {
            defaults: self.defaults.clone(),
            groups: self.groups.clone(),
            vms: self.vms.clone(),
        }
    }
}

/// `[ecosystem]`: the round trip between two VMs on one host, in one rack, in one zone and
/// across zones (`[ecosystem.latency_ms]`), how alike two profiles must be for a fuzzy match,
/// and how the feedback loop learns from repair moves: the relative run-to-run noise of latency
/// and throughput below which a change is not evidence, and the relative step of a weight.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EcosystemConfig {
    pub latency_ms: presage_decide::ecosystem::LatencyTable,
    pub fuzzy_threshold: f64,
    pub latency_noise_floor: f64,
    pub throughput_noise_floor: f64,
    pub learning_step: f64,
}

impl Default for EcosystemConfig {
    fn default() -> Self {
        let learning = LearningConfig::default();
        EcosystemConfig {
            latency_ms: Default::default(),
            fuzzy_threshold: presage_decide::ecosystem::MatchOptions::default().fuzzy_threshold,
            latency_noise_floor: learning.noise_floor.latency,
            throughput_noise_floor: learning.noise_floor.throughput,
            learning_step: learning.step,
        }
    }
}

impl EcosystemConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.latency_ms.validate().map_err(|e| format!("[ecosystem] {e}"))?;
        for (name, value) in [
            ("fuzzy_threshold", self.fuzzy_threshold),
            ("latency_noise_floor", self.latency_noise_floor),
            ("throughput_noise_floor", self.throughput_noise_floor),
            ("learning_step", self.learning_step),
        ] {
            if !(value > 0.0 && value <= 1.0) {
                return Err(format!("[ecosystem] {name} is {value}; it must be within (0, 1]"));
            }
        }
        if self.learning_step >= 1.0 {
            return Err(format!("[ecosystem] learning_step is {}; it must be below 1", self.learning_step));
        }
        Ok(())
    }

    /// How the feedback loop learns.
    pub fn learning(&self) -> LearningConfig {
        LearningConfig {
            noise_floor: NoiseFloor { latency: self.latency_noise_floor, throughput: self.throughput_noise_floor },
            step: self.learning_step,
            ..LearningConfig::default()
        }
    }
}

/// `[policy]`: which consolidation policy proposes migrations, and how often.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// A policy name as `presagectl simulate --policy` takes it (e.g. `lr-mmt-1.2`).
    #[serde(default = "default_policy")]
    pub name: String,
    /// How often the advisory pass runs.
    #[serde(default = "default_policy_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// `advisory` (plans are only shown) or `automatic` (the coordinator applies them).
    #[serde(default)]
    pub mode: PolicyMode,
    /// Most moves applied per pass in automatic mode, one after another.
    #[serde(default = "default_moves_per_pass")]
    pub moves_per_pass: usize,
    /// `[policy.presage]`: presage's settings (also what `presagectl place` and `explain` rank with).
    #[serde(default)]
    pub presage: presage_decide::policy::presage::PresageConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            name: default_policy(),
            interval: default_policy_interval(),
            mode: PolicyMode::default(),
            moves_per_pass: default_moves_per_pass(),
            presage: Default::default(),
        }
    }
}

impl PolicyConfig {
    pub fn spec(&self) -> Result<presage_decide::policy::PolicySpec, presage_decide::policy::UnknownPolicy> {
        self.name.parse()
    }
}

/// Whether plans are applied.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    #[default]
    Advisory,
    Automatic,
}

fn default_moves_per_pass() -> usize {
    8
}

fn default_policy() -> String {
    "presage".into()
}
fn default_policy_interval() -> Duration {
    Duration::from_secs(300)
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
        let mut cfg = Self::parse(&config_file::read(path)?, path)?;
        for p in [&mut cfg.tls.ca, &mut cfg.tls.cert, &mut cfg.tls.key] {
            config_file::resolve(path, p);
        }
        if let Some(t) = &mut cfg.cluster.etcd.tls {
            for p in [&mut t.ca, &mut t.cert, &mut t.key] {
                config_file::resolve(path, p);
            }
        }
        Ok(cfg)
    }

    pub fn parse(text: &str, path: &Path) -> Result<CoordinatorConfig, ConfigError> {
        let cfg: CoordinatorConfig = config_file::parse(text, path)?;
        let invalid = |key, reason: &str| config_file::invalid(path, key, reason);
        if cfg.host_timeout < Duration::from_secs(1) {
            return invalid("host_timeout", "must be at least 1s");
        }
        if cfg.shutdown_timeout.is_zero() {
            return invalid("shutdown_timeout", "must be positive");
        }
        if let Err(e) = cfg.policy.spec() {
            return invalid("policy.name", &e.to_string());
        }
        if let Err(e) = cfg.policy.presage.validate() {
            return invalid("policy.presage", &e.to_string());
        }
        if let Err(e) = cfg.executor.validate() {
            return invalid("executor", &e);
        }
        if let Err(e) = cfg.ecosystem.validate() {
            return invalid("ecosystem", &e);
        }
        if cfg.policy.interval < Duration::from_secs(1) {
            return invalid("policy.interval", "must be at least 1s");
        }
        if cfg.sizing.interval < Duration::from_secs(1) {
            return invalid("sizing.interval", "must be at least 1s");
        }
        if let Err(e) = cfg.sizing.policies().validate() {
            return invalid("sizing", &format!("{}: {}", e.field, e.problem));
        }
        if let Err((key, e)) = cfg.optimiser.validate() {
            return invalid(key, &e);
        }
        if cfg.cluster.store == StoreKind::Etcd
            && let Err((key, e)) = cfg.cluster.etcd.validate()
        {
            return invalid(key, &e);
        }
        if cfg.cluster.election && cfg.cluster.store != StoreKind::Etcd {
            return invalid("cluster.election", "needs store = \"etcd\" (the coordinators elect a leader there)");
        }
        if let Err(e) = cfg.cluster.lease_timing().check() {
            return invalid("cluster.lease_ttl", &e);
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "listen = \"127.0.0.1:7400\"\nhost_timeout = \"15s\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"c.key\"\n";

    #[test]
    fn the_packaged_config_is_valid() {
        let c = CoordinatorConfig::parse(include_str!("../../packaging/coordinator.toml"), Path::new("coordinator.toml")).unwrap();
        assert_eq!(c.policy.spec().unwrap().to_string(), "presage");
        assert_eq!(c.policy.interval, Duration::from_secs(300));
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/var/lib/presage-coordinator")));
        assert_eq!(c.executor.on_failure, presage_decide::migration_queue::OnFailure::Continue);
        let e =
            CoordinatorConfig::parse(&format!("{GOOD}[executor]\non_failure = \"retry\"\n"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("on_failure") || e.contains("retry"), "{e}");
        assert_eq!(c.executor.silent_destination_ms, 600_000);
        assert_eq!(c.sizing.mode, SizingMode::Advisory);
        // The packaged [sizing.defaults] spell out the built-in defaults, so they cannot drift.
        assert_eq!(c.sizing.defaults, presage_decide::sizing::rules::SizingRules::default());
        // A bad sizing policy is refused naming the field, a misspelt one naming the key.
        let e = CoordinatorConfig::parse(
            &format!("{GOOD}[sizing]\nmode = \"automatic\"\n[[sizing.group]]\nname = \"db\"\nmatch = [\"db-*\"]\nmax_lease_s = 0\n"),
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("group[0].max_lease_s"), "{e}");
        let e = CoordinatorConfig::parse(&format!("{GOOD}[sizing.defaults]\nmargn = 1.2\n"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("margn"), "{e}");
        let e = CoordinatorConfig::parse(&format!("{GOOD}[sizing]\nmode = \"sometimes\"\n"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("sometimes") || e.contains("mode"), "{e}");
        let e = CoordinatorConfig::parse(&format!("{GOOD}[executor]\nsilent_destination_ms = 0\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("executor") && e.contains("silent_destination_ms"), "{e}");
        // The packaged [optimiser] spells out the built-in defaults.
        assert_eq!(c.optimiser, OptimiserConfig::default());
        // The packaged [policy.presage] runs with the built-in defaults (`PresageConfig::default`).
        let shipped = presage_decide::policy::presage::PresageConfig::default();
        assert_eq!(c.policy.presage.resolved(), presage_decide::policy::presage::PresageConfig { risk: c.policy.presage.risk, ..shipped });
        let c = CoordinatorConfig::parse(
            &format!("{GOOD}[optimiser]\nmode = \"automatic\"\ninterval = \"2h\"\ntime_limit = \"45s\"\nmin_gain = 0.1\n"),
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            (c.optimiser.mode, c.optimiser.interval, c.optimiser.time_limit),
            (OptimiserMode::Automatic, Duration::from_secs(7200), Duration::from_secs(45))
        );
        assert_eq!((c.optimiser.min_gain, c.optimiser.canary, c.optimiser.threads), (0.1, 0.1, 1));
        for (bad, key) in [
            ("interval = \"1m\"\ntime_limit = \"2m\"", "optimiser.time_limit"),
            ("min_gain = 1.5", "optimiser.min_gain"),
            ("canary = 0.0", "optimiser.canary"),
            ("watch = \"0s\"", "optimiser.watch"),
            ("balance_weight = -1.0", "optimiser.balance_weight"),
            ("dependency_weight = nan", "optimiser.dependency_weight"),
            ("mode = \"sometimes\"", "sometimes"),
        ] {
            let e = CoordinatorConfig::parse(&format!("{GOOD}[optimiser]\n{bad}\n"), Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn the_etcd_store_needs_endpoints_and_tls_beyond_loopback() {
        let parse = |cluster: &str| CoordinatorConfig::parse(&format!("{GOOD}{cluster}"), Path::new("c.toml"));
        let ok = parse("[cluster]\nstore = \"etcd\"\n[cluster.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n").unwrap();
        assert_eq!(ok.cluster.store, StoreKind::Etcd);
        assert_eq!(ok.cluster.etcd.prefix, "presage/");
        assert_eq!(parse("").unwrap().cluster.store, StoreKind::Sled, "sled unless asked");
        for (bad, key) in [
            ("[cluster]\nstore = \"etcd\"\n", "cluster.etcd.endpoints"),
            ("[cluster]\nstore = \"etcd\"\n[cluster.etcd]\nendpoints = [\"http://10.0.0.5:2379\"]\n", "only on loopback"),
            ("[cluster]\nstore = \"etcd\"\n[cluster.etcd]\nendpoints = [\"https://10.0.0.5:2379\"]\n", "cluster.etcd.tls"),
            ("[cluster]\nstore = \"etcd\"\n[cluster.etcd]\nendpoints = [\"10.0.0.5:2379\"]\n", "not an http"),
            ("[cluster]\nstore = \"zookeeper\"\n", "zookeeper"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
    }

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
        assert_eq!(c.policy.name, "presage");
        let p = CoordinatorConfig::parse(&format!("{GOOD}[policy]\nname = \"thr-mmt-0.9\"\ninterval = \"60s\"\n"), Path::new("c.toml"))
            .unwrap();
        assert_eq!((p.policy.spec().unwrap().to_string().as_str(), p.policy.interval), ("THR-MMT-0.9", Duration::from_secs(60)));
        let e = CoordinatorConfig::parse(&format!("{GOOD}[policy]\nname = \"best\"\n"), Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("policy.name") && e.contains("best"), "{e}");
        let p = CoordinatorConfig::parse(&format!("{GOOD}[policy.presage]\nplacement_risk = 0.1\n"), Path::new("c.toml")).unwrap();
        assert_eq!(p.policy.presage.placement_risk, 0.1);
        let e = CoordinatorConfig::parse(&format!("{GOOD}[policy.presage]\nplacement_risk = 2.0\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.presage") && e.contains("placement_risk"), "{e}");
        let e = CoordinatorConfig::parse(&format!("{GOOD}[policy.presage]\nplacment_risk = 0.1\n"), Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("placment_risk"), "{e}");
    }
}
