//! Test harness shared by the end-to-end tests (`tests/tests/cluster.rs`) and the benchmark
//! binary: a throwaway cluster PKI, a coordinator and agents running in-process on loopback with
//! real mutual TLS, real sled stores and real trace files, and an operator client.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use presage_agent::config::{AgentConfig, ForecastConfig, HypervisorConfig, ReconnectConfig, SimulatedConfig};
use presage_coordinator::config::{CoordinatorConfig, PolicyConfig};
use presage_coordinator::server::Coordinator;
use presage_coordinator::shared::Shared;
use presage_protocol::pb::operator_client::OperatorClient;
use presage_protocol::pki::ClusterCa;
use presage_protocol::tls::{Role, TlsFiles};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub mod coordinator_process;
pub mod etcd;
pub mod guest_image;
pub mod knob_timing;
pub mod load_agents;
pub mod reconnect_storm;

/// The shared trace data: `$PRESAGE_SHARED_DATA`, else `../shared/data` from the repository root.
/// Panics with the places it looked when absent, as the tests cannot run without it.
pub fn shared_data() -> PathBuf {
    shared_folder("PRESAGE_SHARED_DATA", "data", "planetlab")
}

/// Builds the binaries of `packages` with the profile this test binary was built with (cargo
/// runs from the workspace, offline, and does nothing when they are up to date) and returns the
/// folder they are in, `target/<profile>`. Tests that start presage's own processes (the demo,
/// the libvirt driver) use it: cargo builds only the binaries of the package under test.
pub fn built_binaries(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>, or target/<profile>/<binary> (presage-bench).
    let parent = exe.parent().expect("the binary is in a folder");
    let dir = if parent.ends_with("deps") { parent.parent().expect("target/<profile>/deps") } else { parent }.to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--offline", "--bins"]);
    for p in packages {
        build.args(["-p", p]);
    }
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
        None => panic!("the test binary is not in a profile folder: {}", exe.display()),
    }
    let status = build.current_dir(env!("CARGO_MANIFEST_DIR")).status().expect("running cargo build");
    assert!(status.success(), "building {packages:?} failed");
    dir
}

/// The shared reference material (CloudSim's figures): `$PRESAGE_SHARED_REFERENCE`, else
/// `../shared/reference`. Panics with the places it looked when absent.
pub fn shared_reference() -> PathBuf {
    shared_folder("PRESAGE_SHARED_REFERENCE", "reference", "cloudsim")
}

/// `$env`, else `../shared/<name>`: the first that holds `marker`.
fn shared_folder(env: &str, name: &str, marker: &str) -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os(env)
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared").join(name)])
        .collect();
    for c in &candidates {
        if c.join(marker).is_dir() {
            return c.canonicalize().unwrap_or_else(|_| c.clone());
        }
    }
    panic!(
        "the shared {name} folder is missing: looked for {marker}/ in {} (set {env})",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    );
}

/// How long a stopping daemon may take before a test calls it hung (rather than hang CI).
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A cluster CA in a temporary folder, issuing certificates on demand.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: ClusterCa,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::generate("test").expect("CA");
        ca.write(dir.path()).expect("write CA");
        Pki { dir, ca }
    }

    pub fn issue(&self, role: Role, name: &str) -> TlsFiles {
        let stem = format!("{role}-{name}");
        self.ca.issue_to(self.dir.path(), &stem, role, name, &[]).expect("issue")
    }

    /// A `presagectl --tls-dir` folder for an operator called `name`: ca.pem, operator.pem,
    /// operator.key.
    pub fn operator_dir(&self, name: &str) -> tempfile::TempDir {
        let files = self.issue(Role::Operator, name);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::copy(&files.ca, dir.path().join("ca.pem")).expect("ca.pem");
        std::fs::copy(&files.cert, dir.path().join("operator.pem")).expect("operator.pem");
        std::fs::copy(&files.key, dir.path().join("operator.key")).expect("operator.key");
        dir
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// A coordinator serving on a loopback port inside this process.
pub struct RunningCoordinator {
    pub url: String,
    pub port: u16,
    pub shared: Arc<Shared>,
    pub cancel: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    /// The plain `/metrics` port, when the configuration sets one.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl RunningCoordinator {
    /// Starts a coordinator on `port` (0: any free port), advising with THR-MMT-0.8 every second.
    pub async fn start(pki: &Pki, port: u16, host_timeout: Duration) -> RunningCoordinator {
        RunningCoordinator::start_with_policy(pki, port, host_timeout, "thr-mmt-0.8").await
    }

    /// Starts a coordinator whose advisory pass runs `policy` every second.
    pub async fn start_with_policy(pki: &Pki, port: u16, host_timeout: Duration, policy: &str) -> RunningCoordinator {
        let policy = PolicyConfig { name: policy.into(), interval: Duration::from_secs(1), ..Default::default() };
        RunningCoordinator::start_with(pki, port, host_timeout, policy).await
    }

    /// Starts a coordinator with the given `[policy]` section.
    pub async fn start_with(pki: &Pki, port: u16, host_timeout: Duration, policy: PolicyConfig) -> RunningCoordinator {
        RunningCoordinator::start_config(RunningCoordinator::config(pki, port, host_timeout, policy)).await
    }

    /// A loopback coordinator's configuration, to adjust before [`start_config`](Self::start_config).
    pub fn config(pki: &Pki, port: u16, host_timeout: Duration, policy: PolicyConfig) -> CoordinatorConfig {
        CoordinatorConfig {
            listen: ([127, 0, 0, 1], port).into(),
            host_timeout,
            shutdown_timeout: Duration::from_secs(5),
            tls: pki.issue(Role::Coordinator, "coordinator"),
            policy,
            executor: Default::default(),
            data_dir: None,
            ecosystem: Default::default(),
            sizing: Default::default(),
            optimiser: Default::default(),
            metrics: Default::default(),
            cluster: Default::default(),
        }
    }

    pub async fn start_config(cfg: CoordinatorConfig) -> RunningCoordinator {
        let cancel = CancellationToken::new();
        let c = Coordinator::bind(cfg, cancel.clone()).await.expect("coordinator binds");
        let addr = c.local_addr();
        let port = addr.port();
        // Loopback unless it listens on an address of its own.
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
        let metrics_addr = c.metrics_addr();
        let shared = c.shared.clone();
        let handle = tokio::spawn(c.serve());
        RunningCoordinator { url: format!("https://{host}:{port}"), port, shared, cancel, handle, metrics_addr }
    }

    /// Fires shutdown and waits for the server to stop.
    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(STOP_LIMIT, self.handle)
            .await
            .expect("the coordinator did not stop within a minute of its cancellation")
            .expect("coordinator task")
            .expect("coordinator stops cleanly");
    }
}

/// An agent running inside this process.
pub struct RunningAgent {
    pub cancel: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl RunningAgent {
    pub fn start(cfg: AgentConfig) -> RunningAgent {
        let cancel = CancellationToken::new();
        let handle = tokio::spawn(presage_agent::run(cfg, cancel.clone()));
        RunningAgent { cancel, handle }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(STOP_LIMIT, self.handle)
            .await
            .expect("the agent did not stop within a minute of its cancellation")
            .expect("agent task")
            .expect("agent stops cleanly");
    }
}

/// Two agents, hosts `hv-a` and `hv-b`, each replaying half of `trace_dir`'s VMs (the trace
/// shared, so VMs can move between them), their stores under `data`.
pub fn two_simulated_agents(pki: &Pki, coordinator: &str, data: &Path, trace_dir: &Path) -> (RunningAgent, RunningAgent) {
    let a = RunningAgent::start(simulated_agent(pki, "hv-a", coordinator, &data.join("a"), trace_dir, (0, 2), 0));
    let b = RunningAgent::start(simulated_agent(pki, "hv-b", coordinator, &data.join("b"), trace_dir, (1, 2), 0));
    (a, b)
}

/// An agent configuration with a simulated hypervisor replaying `trace_dir`.
pub fn simulated_agent(
    pki: &Pki,
    host: &str,
    url: &str,
    data_dir: &Path,
    trace_dir: &Path,
    shard: (usize, usize),
    max_vms: usize,
) -> AgentConfig {
    AgentConfig {
        host_id: Some(host.into()),
        coordinator: url.into(),
        coordinator_name: presage_protocol::COORDINATOR_TLS_NAME.into(),
        data_dir: data_dir.into(),
        sample_interval: Duration::from_millis(100),
        history_per_vm: 100_000,
        tls: pki.issue(Role::Agent, host),
        hypervisor: HypervisorConfig::Simulated(SimulatedConfig {
            time_compression: 600.0,
            shard_index: shard.0,
            shard_count: shard.1,
            max_vms,
            ..SimulatedConfig::replaying(trace_dir)
        }),
        reconnect: ReconnectConfig { initial_backoff: Duration::from_millis(50), max_backoff: Duration::from_millis(500) },
        forecast: ForecastConfig {
            cpu_model: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx")),
            memory_model: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/memory-quantiles-v2.onnx")),
            ..Default::default()
        },
        reservations: Default::default(),
        migration: Default::default(),
        topology: Default::default(),
        capacity: Default::default(),
        metrics: Default::default(),
    }
}

/// An operator API client presenting `files`.
pub async fn client(url: &str, files: &TlsFiles) -> Result<OperatorClient<Channel>, tonic::transport::Error> {
    let tls = files.load().expect("TLS files");
    let ch = Endpoint::from_shared(url.to_string())
        .expect("url")
        .tls_config(tls.client_config(presage_protocol::COORDINATOR_TLS_NAME))?
        .connect()
        .await?;
    Ok(OperatorClient::new(ch))
}

/// Where every VM runs, as the coordinator sees it: (vm id, host id), sorted; `None` when the
/// call fails.
pub async fn placement(mut op: OperatorClient<Channel>) -> Option<Vec<(String, String)>> {
    let vms =
        op.list_vms(presage_protocol::pb::ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
    let mut p: Vec<(String, String)> = vms.into_iter().filter_map(|v| Some((v.sample?.vm_id, v.host_id))).collect();
    p.sort();
    Some(p)
}

/// The reservations `host`'s agent holds now (asked by releasing an id nobody holds).
pub async fn held_reservations(mut op: OperatorClient<Channel>, host: &str) -> Option<Vec<presage_protocol::pb::ReservationEntry>> {
    let r = presage_protocol::pb::ReserveOnHostRequest {
        host_id: host.into(),
        reserve: None,
        release: Some(presage_protocol::pb::Release { id: "nothing".into() }),
    };
    Some(op.reserve_on_host(r).await.ok()?.into_inner().state?.held)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit` naming `what`.
/// The limit only bounds a hung test; no assertion depends on how long the wait took.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        // A check that never answers (an RPC without a deadline) must not hang the test either.
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(_) => panic!("timed out after {limit:?} waiting for: {what} (the last check did not answer)"),
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes small PlanetLab-format trace files (name -> percent per line) into a new folder.
pub fn synthetic_trace(files: &[(&str, &[u32])]) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    for (name, values) in files {
        let body: String = values.iter().map(|v| format!("{v}\n")).collect();
        std::fs::write(d.path().join(name), body).expect("write trace");
    }
    d
}

/// Two real libvirt daemons on this machine as hosts `a` and `b` (`tests/libvirt/two-hosts.sh`:
/// each in its own mount namespace), stopped with their guests destroyed when dropped. Needs
/// root, `/dev/kvm` and libvirtd.
pub struct TwoLibvirtHosts {
    base: tempfile::TempDir,
}

impl TwoLibvirtHosts {
    pub fn start() -> TwoLibvirtHosts {
        let base = tempfile::Builder::new().prefix("pv").tempdir_in("/tmp").expect("a folder for the daemons");
        let out = std::process::Command::new("bash").arg(Self::script()).arg("start").arg(base.path()).output().expect("running bash");
        assert!(
            out.status.success(),
            "two-hosts.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        TwoLibvirtHosts { base }
    }

    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("libvirt/two-hosts.sh")
    }

    /// Host `host`'s libvirt URI, from outside its namespace.
    pub fn uri(&self, host: &str) -> String {
        format!("qemu+unix:///system?socket={}/{host}/run/libvirt-sock", self.base.path().display())
    }

    /// A folder outside the daemons' private mounts, seen alike by them and by this process
    /// (for sockets a domain's XML names).
    pub fn shared_dir(&self) -> &Path {
        self.base.path()
    }
}

impl Drop for TwoLibvirtHosts {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(Self::script()).arg("stop").arg(self.base.path()).output();
    }
}

/// Why this machine cannot run a test on real libvirt daemons, if it cannot: not root, no usable
/// `/dev/kvm` (the two-daemon script needs it), or one of `tools` (besides libvirtd, virtlogd and
/// QEMU) not on PATH.
pub fn missing_libvirt_requirement(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Some("/dev/kvm cannot be opened".into());
    }
    for tool in ["libvirtd", "virtlogd", "qemu-system-x86_64"].iter().chain(tools) {
        let found = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// `GET /metrics` over plain HTTP/1.1 from a `[metrics] listen` port: the exposition (checked
/// to be a 200 with the OpenMetrics content type).
pub fn scrape_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to /metrics at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    body.to_string()
}
