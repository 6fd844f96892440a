//! The reconnect storm: many agents in session with a real coordinator process, which is then
//! killed (SIGKILL) and started again at once, so every agent reconnects at the same moment.
//! Shared by the fault suite (`tests/reconnect_storm.rs`) and `presage-bench storm`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use presage_protocol::pb::StatusRequest;
use presage_protocol::tls::Role;

use crate::coordinator_process::CoordinatorProcess;
use crate::etcd::free_port;
use crate::load_agents::{LoadAgents, LoadSpec};
use crate::{Pki, client};

/// One restart.
#[derive(Debug)]
pub struct StormRound {
    /// From the kill until every agent had registered again (as the agents saw it).
    pub all_registered: Duration,
    /// From the kill until the coordinator counted every host connected.
    pub coordinator_counts_all: Duration,
    /// Sessions the kill ended.
    pub sessions_lost: u64,
    /// Failed attempts to get back in during the round (all agents).
    pub failures: u64,
    /// The most attempts in a row any one agent failed.
    pub worst_streak: u64,
}

#[derive(Debug)]
pub struct StormReport {
    pub agents: usize,
    /// Until every agent was first in session.
    pub first_registration: Duration,
    pub rounds: Vec<StormRound>,
    /// Failure reasons over the whole run, with counts.
    pub reasons: Vec<(String, u64)>,
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "reconnect storm: {} agents, first registration of all {:.2} s", self.agents, self.first_registration.as_secs_f64())?;
        for (i, r) in self.rounds.iter().enumerate() {
            writeln!(
                f,
                "  restart {}: {} sessions ended by the kill; every agent registered again {:.2} s after it (coordinator counts all: {:.2} s); {} failed attempts to get back in, at most {} in a row for one agent",
                i + 1,
                r.sessions_lost,
                r.all_registered.as_secs_f64(),
                r.coordinator_counts_all.as_secs_f64(),
                r.failures,
                r.worst_streak
            )?;
        }
        for (reason, n) in &self.reasons {
            writeln!(f, "      {n:>6}  {reason}")?;
        }
        Ok(())
    }
}

/// Runs `rounds` restarts of the coordinator in `bin` under `agents` agents reporting `vms`
/// VMs every `every`; fails (with the coordinator's log tail) when an agent is not back within
/// `limit`.
pub async fn reconnect_storm(
    bin: &Path,
    agents: usize,
    vms: usize,
    every: Duration,
    rounds: usize,
    limit: Duration,
) -> anyhow::Result<StormReport> {
    let pki = Pki::new();
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let tls = pki.issue(Role::Coordinator, "coordinator");
    let config = dir.path().join("coordinator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nhost_timeout = \"60s\"\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            dir.path().join("state"),
            tls.ca,
            tls.cert,
            tls.key
        ),
    )?;
    let mut coordinator = CoordinatorProcess::start(bin, config, dir.path().join("coordinator.log"));
    let ops = pki.issue(Role::Operator, "ops");
    let tail = |c: &CoordinatorProcess| {
        let log = c.log_text();
        log.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let load = LoadAgents::start(&pki, &LoadSpec::new(agents, vms, Some(every), vec![url.clone()]))?;
    let first_registration =
        load.wait_in_session(agents, limit).await.map_err(|e| e.context(format!("coordinator log:\n{}", tail(&coordinator))))?;
    let mut out = Vec::new();
    for round in 0..rounds {
        if round > 0 {
            // Settled before the next kill: the agents' sessions older than their longest
            // backoff, so that they start again from the shortest (as after any long session).
            tokio::time::sleep(LoadSpec::new(0, 0, None, Vec::new()).max_backoff + every).await;
        }
        let before = load.stats.registrations_per_agent();
        let failures_before = load.stats.failures.load(Ordering::Relaxed);
        let lost_before = load.stats.sessions_lost.load(Ordering::Relaxed);
        load.stats.worst_streak.store(0, Ordering::Relaxed);
        coordinator.kill();
        let killed = Instant::now();
        coordinator.spawn(bin);
        load.wait_all_registered_since(&before, limit).await.map_err(|e| e.context(format!("coordinator log:\n{}", tail(&coordinator))))?;
        let all_registered = killed.elapsed();
        // The coordinator's own count (a host is connected once its session is registered).
        loop {
            let counted = match client(&url, &ops).await {
                Ok(mut op) => op.status(StatusRequest {}).await.map(|s| s.into_inner().hosts_connected as usize).unwrap_or(0),
                Err(_) => 0,
            };
            if counted == agents {
                break;
            }
            anyhow::ensure!(killed.elapsed() < limit, "the coordinator counts {counted} of {agents} hosts connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        out.push(StormRound {
            all_registered,
            coordinator_counts_all: killed.elapsed(),
            sessions_lost: load.stats.sessions_lost.load(Ordering::Relaxed) - lost_before,
            failures: load.stats.failures.load(Ordering::Relaxed) - failures_before,
            worst_streak: load.stats.worst_streak.load(Ordering::Relaxed),
        });
    }
    let reasons = load.stats.reasons();
    drop(load);
    Ok(StormReport { agents, first_registration, rounds: out, reasons })
}
