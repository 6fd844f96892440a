//! Many lightweight agents in one process, for load and reconnect-storm measurements: each holds
//! its own mutual-TLS connection and session, registers, waits for the Welcome, reports a fixed
//! set of VMs, and — like the real agent's link — on any failure counts it, backs off
//! exponentially with jitter and tries again, forever. Nothing gives up; the counters say what it
//! cost to get back in.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use presage_protocol::pb::{
    AgentMessage, CoordinatorMessage, HostCapacity, HostUsage, Register, Report, VmSample, agent_link_client::AgentLinkClient,
    agent_message, coordinator_message,
};
use presage_protocol::tls::Role;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};

use crate::Pki;

/// What the simulated agents do.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub agents: usize,
    pub vms_per_agent: usize,
    /// Report period; `None`: as fast as the coordinator takes reports.
    pub every: Option<Duration>,
    /// Coordinator addresses, tried in turn as the real agent does.
    pub urls: Vec<String>,
    /// The agent's defaults: 500 ms doubling to 30 s, 0–20 % jitter.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl LoadSpec {
    pub fn new(agents: usize, vms_per_agent: usize, every: Option<Duration>, urls: Vec<String>) -> Self {
        LoadSpec { agents, vms_per_agent, every, urls, initial_backoff: Duration::from_millis(500), max_backoff: Duration::from_secs(30) }
    }
}

/// Counters shared by all simulated agents.
#[derive(Default)]
pub struct LoadStats {
    /// Sessions open now (Welcome received, not yet ended).
    pub in_session: AtomicUsize,
    /// Registrations (Welcomes received), all agents together.
    pub registrations: AtomicU64,
    /// Failed attempts to get in: connection refused or timed out, handshake failed, session
    /// refused, no Welcome.
    pub failures: AtomicU64,
    /// Sessions that ended after the Welcome (the coordinator went away, or closed it).
    pub sessions_lost: AtomicU64,
    /// Reports handed to the stream.
    pub reports_sent: AtomicU64,
    /// Per agent, how many times it registered.
    per_agent: Vec<AtomicU64>,
    /// Per agent, consecutive failed attempts now (0 while in session).
    failing_in_a_row: Vec<AtomicU64>,
    /// The most consecutive failed attempts any agent made before getting in.
    pub worst_streak: AtomicU64,
    /// Failure reasons with their counts.
    reasons: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl LoadStats {
    /// Per agent, how many times it has registered so far.
    pub fn registrations_per_agent(&self) -> Vec<u64> {
        self.per_agent.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    }

    /// How many agents have registered more often than `before` says (one entry per agent).
    pub fn registered_since(&self, before: &[u64]) -> usize {
        self.per_agent.iter().zip(before).filter(|(a, b)| a.load(Ordering::Relaxed) > **b).count()
    }

    /// Failure reasons (the error's first line with digits and addresses folded) and counts.
    pub fn reasons(&self) -> Vec<(String, u64)> {
        self.reasons.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn failed(&self, agent: usize, reason: &str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let streak = self.failing_in_a_row[agent].fetch_add(1, Ordering::Relaxed) + 1;
        self.worst_streak.fetch_max(streak, Ordering::Relaxed);
        self.count_reason(reason);
    }

    fn lost(&self, reason: &str) {
        self.sessions_lost.fetch_add(1, Ordering::Relaxed);
        self.count_reason(&format!("in session: {reason}"));
    }

    fn count_reason(&self, reason: &str) {
        let folded: String = reason.chars().filter(|c| !c.is_ascii_digit()).take(160).collect();
        *self.reasons.lock().unwrap_or_else(|p| p.into_inner()).entry(folded).or_default() += 1;
    }
}

/// Running simulated agents; stopped (and their connections closed) on drop.
pub struct LoadAgents {
    pub stats: Arc<LoadStats>,
    /// When the agents were set going.
    pub started: Instant,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LoadAgents {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The host name of simulated agent `i`.
pub fn load_host(i: usize) -> String {
    format!("load-{i:04}")
}

impl LoadAgents {
    /// Starts `spec.agents` agents (host `load-NNNN`, certificates from `pki`; VMs
    /// `load-NNNN-vmV`, 2 vCPUs, 4 GiB, 30 % busy; 20 hosts per rack, 5 racks per zone).
    pub fn start(pki: &Pki, spec: &LoadSpec) -> anyhow::Result<LoadAgents> {
        let stats = Arc::new(LoadStats {
            per_agent: (0..spec.agents).map(|_| AtomicU64::new(0)).collect(),
            failing_in_a_row: (0..spec.agents).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        });
        let stop = CancellationToken::new();
        // Certificates first, so that the agents start together.
        let mut agents = Vec::with_capacity(spec.agents);
        for i in 0..spec.agents {
            let host = load_host(i);
            let tls = pki.issue(Role::Agent, &host).load()?.client_config(presage_protocol::COORDINATOR_TLS_NAME);
            agents.push(LoadAgent { index: i, host, tls, spec: spec.clone(), stats: stats.clone(), stop: stop.clone() });
        }
        let tasks = agents.into_iter().map(|a| tokio::spawn(a.run())).collect();
        Ok(LoadAgents { stats, stop, tasks, started: Instant::now() })
    }

    /// Waits until `n` agents are in session at once, or `limit` passes (then says how many were);
    /// how long after the start that was.
    pub async fn wait_in_session(&self, n: usize, limit: Duration) -> anyhow::Result<Duration> {
        let t = self.started;
        loop {
            let now = self.stats.in_session.load(Ordering::Relaxed);
            if now >= n {
                return Ok(t.elapsed());
            }
            anyhow::ensure!(t.elapsed() < limit, "only {now} of {n} simulated agents in session after {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every agent has registered again since `before`
    /// ([`LoadStats::registrations_per_agent`]), or `limit` passes.
    pub async fn wait_all_registered_since(&self, before: &[u64], limit: Duration) -> anyhow::Result<Duration> {
        let t = Instant::now();
        loop {
            let n = self.stats.registered_since(before);
            if n == before.len() {
                return Ok(t.elapsed());
            }
            anyhow::ensure!(t.elapsed() < limit, "only {n} of {} simulated agents registered again after {limit:?}", before.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

enum Ended {
    BeforeWelcome(String),
    InSession(String),
}

struct LoadAgent {
    index: usize,
    host: String,
    tls: ClientTlsConfig,
    spec: LoadSpec,
    stats: Arc<LoadStats>,
    stop: CancellationToken,
}

impl LoadAgent {
    async fn run(self) {
        let mut backoff = self.spec.initial_backoff;
        let mut which = 0usize;
        while !self.stop.is_cancelled() {
            let url = self.spec.urls[which % self.spec.urls.len().max(1)].clone();
            let began = Instant::now();
            match self.session(&url).await {
                Ok(()) => return,
                Err(Ended::BeforeWelcome(reason)) => self.stats.failed(self.index, &reason),
                Err(Ended::InSession(reason)) => self.stats.lost(&reason),
            }
            which += 1;
            if !which.is_multiple_of(self.spec.urls.len().max(1)) && began.elapsed() < self.spec.max_backoff {
                continue;
            }
            if began.elapsed() > self.spec.max_backoff {
                backoff = self.spec.initial_backoff;
            }
            let jitter = backoff.mul_f64(fastrand::f64() * 0.2);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(self.spec.max_backoff);
        }
    }

    fn register(&self) -> Register {
        let i = self.index;
        Register {
            protocol_version: presage_protocol::PROTOCOL_VERSION,
            host_id: self.host.clone(),
            agent_version: "load".into(),
            capacity: Some(HostCapacity { cpu_cores: 32, cpu_mhz_per_core: 2600.0, memory_bytes: 256 << 30, ..Default::default() }),
            hypervisor_kind: "simulated".into(),
            boot_id: "b".into(),
            zone: format!("z{}", i / 100),
            rack: format!("r{}", i / 20),
            ..Default::default()
        }
    }

    /// One session, the real agent's way (same timeouts and keep-alives); `Ok` only when stopped.
    async fn session(&self, url: &str) -> Result<(), Ended> {
        self.get_in(url).await.map_err(Ended::BeforeWelcome)?.map_err(Ended::InSession)
    }

    /// Connects and registers; then reports until the session ends (the inner result).
    async fn get_in(&self, url: &str) -> Result<Result<(), String>, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .tls_config(self.tls.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect().await.map_err(|e| format!("connect: {}", presage_protocol::error_chain(&e)))?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage { body: Some(agent_message::Body::Register(self.register())) })
            .await
            .map_err(|_| "outbound closed".to_string())?;
        let mut inbound = AgentLinkClient::new(channel)
            .session(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("session refused: {}: {}", s.code(), s.message()))?
            .into_inner();
        match tokio::time::timeout(Duration::from_secs(10), inbound.message()).await {
            Err(_) => return Err("no Welcome within 10 s".into()),
            Ok(Err(s)) => return Err(format!("registration: {}: {}", s.code(), s.message())),
            Ok(Ok(Some(CoordinatorMessage { body: Some(coordinator_message::Body::Welcome(_)) }))) => {}
            Ok(Ok(other)) => return Err(format!("expected Welcome, got {other:?}")),
        }
        self.stats.failing_in_a_row[self.index].store(0, Ordering::Relaxed);
        self.stats.per_agent[self.index].fetch_add(1, Ordering::Relaxed);
        self.stats.registrations.fetch_add(1, Ordering::Relaxed);
        self.stats.in_session.fetch_add(1, Ordering::Relaxed);
        let ended = self.report(&tx, &mut inbound).await;
        self.stats.in_session.fetch_sub(1, Ordering::Relaxed);
        Ok(ended)
    }

    async fn report(&self, tx: &mpsc::Sender<AgentMessage>, inbound: &mut tonic::Streaming<CoordinatorMessage>) -> Result<(), String> {
        let vms: Vec<VmSample> = (0..self.spec.vms_per_agent)
            .map(|v| VmSample {
                vm_id: format!("{}-vm{v}", self.host),
                vcpus: 2,
                memory_bytes: 4 << 30,
                cpu_utilisation: 0.3,
                state: 1,
                ..Default::default()
            })
            .collect();
        let mut seq = 0u64;
        let mut next = tokio::time::Instant::now();
        loop {
            seq += 1;
            let report = Report {
                seq,
                sampled_at_ms: seq,
                host: Some(HostUsage { cpu_utilisation: 0.2, ..Default::default() }),
                vms: vms.clone(),
                ..Default::default()
            };
            // Sending and reading the coordinator's messages go together: a closed session is
            // noticed while waiting for room or for the next period.
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                sent = tx.send(AgentMessage { body: Some(agent_message::Body::Report(report)) }) => {
                    sent.map_err(|_| "outbound closed".to_string())?;
                    self.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
                }
                m = inbound.message() => match m {
                    // An acknowledgement; this report is made again.
                    Ok(Some(_)) => continue,
                    other => return Err(ended(other)),
                },
            }
            match self.spec.every {
                None => tokio::task::yield_now().await,
                Some(every) => {
                    next += every;
                    loop {
                        tokio::select! {
                            _ = self.stop.cancelled() => return Ok(()),
                            _ = tokio::time::sleep_until(next) => break,
                            m = inbound.message() => match m {
                                Ok(Some(_)) => continue,
                                other => return Err(ended(other)),
                            },
                        }
                    }
                }
            }
        }
    }
}

fn ended(m: Result<Option<CoordinatorMessage>, tonic::Status>) -> String {
    match m {
        Ok(Some(_)) => "unexpected message".into(),
        Ok(None) => "session closed by the coordinator".into(),
        Err(s) => format!("session broke: {}: {}", s.code(), s.message()),
    }
}
