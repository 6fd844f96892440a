//! The coordinator's Prometheus metrics, in the OpenMetrics text format: on the mutual-TLS
//! listener at `/metrics` (roles `metrics`, `viewer`, `operator`, `admin`) and, when
//! `[metrics] listen` is set, on a plain port of its own for a scraper on the same machine.
//!
//! Events are counted where they happen ([`CoordinatorMetrics`]: report ingestion time, policy
//! and optimiser pass durations, plans by origin, migrations by outcome and their durations;
//! connection refusals by kind in [`crate::transport::RefusalLog`]); what the state already counts (hosts, VMs, reports, anomalies,
//! open rollouts) is read at each scrape ([`render`]). No label takes a VM or host id: every
//! label has a handful of values, so a cluster's size never multiplies the series.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::shared::Shared;

/// One label, with a handful of values.
pub type Label = [(&'static str, &'static str); 1];

/// The metrics counted where their events happen; cloned into each scrape's registry (a clone
/// shares the counts).
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    /// Validating and applying one agent report to the state.
    pub report_ingest: Histogram,
    /// One pass of the consolidation policy.
    pub policy_pass: Histogram,
    /// One background pass of the cluster optimiser (model, search, plan).
    pub optimiser_pass: Histogram,
    /// Plans journaled, by origin (`policy`, `drain`, `operator`, `rollout`, ...).
    pub plans: Family<Label, Counter>,
    /// Migrations ended, by outcome (`done`, `failed`, `cancelled`, ...).
    pub migrations: Family<Label, Counter>,
    /// How long an ended migration took, from the command to the destination's confirmation.
    pub migration_duration: Histogram,
    /// REST calls of the operator API, by call (`rest.Status`, ...) and outcome (`ok`, `error`).
    pub api_request: CommandLatency,
    /// Candidates presage's learned scorer judged, by the guardrail's verdict (`model`,
    /// `out_of_range`, `disagreed`, `failed`: the last three fell back to the heuristic).
    pub learned_candidates: Family<Label, Counter>,
}

impl CoordinatorMetrics {
    /// Adds what the learned scorer's guardrail decided in a pass.
    pub fn count_learned(&self, c: &presage_decide::policy::learned::GuardCounts) {
        for (verdict, n) in [("model", c.model), ("out_of_range", c.out_of_range), ("disagreed", c.disagreed), ("failed", c.failed)] {
            self.learned_candidates.get_or_create(&[("verdict", verdict)]).inc_by(n);
        }
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        CoordinatorMetrics {
            // 50 us to about 1.6 s.
            report_ingest: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // 1 ms to about 65 s.
            policy_pass: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            optimiser_pass: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            plans: Family::default(),
            migrations: Family::default(),
            // 0.1 s to about 55 min.
            migration_duration: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
            api_request: CommandLatency::default(),
            learned_candidates: Family::default(),
        }
    }
}

/// Round trips of commands to agents, by kind and outcome (`answered`, `timeout`,
/// `session_closed`).
#[derive(Clone, Debug)]
pub struct CommandLatency(Family<KindOutcome, Histogram, fn() -> Histogram>);

/// `kind` and `outcome` labels.
pub type KindOutcome = [(&'static str, &'static str); 2];

impl Default for CommandLatency {
    fn default() -> Self {
        // 1 ms to about 65 s.
        CommandLatency(Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17))))
    }
}

impl CommandLatency {
    pub fn observe(&self, kind: &'static str, outcome: &'static str, took: std::time::Duration) {
        self.0.get_or_create(&[("kind", kind), ("outcome", outcome)]).observe(took.as_secs_f64());
    }
}

/// A refusal's reason as a label value of a few kinds (the reason itself goes to the log).
pub fn refusal_kind(reason: &str) -> &'static str {
    if reason.contains("timed out") {
        "handshake_timeout"
    } else if reason.starts_with("TLS handshake") {
        "handshake"
    } else if reason.contains("no client certificate") {
        "no_client_certificate"
    } else {
        "certificate"
    }
}

/// The exposition at this moment.
pub fn render(shared: &Shared) -> String {
    let m = &shared.metrics;
    let mut r = Registry::with_prefix("presage");
    r.register("build", "The coordinator's version", Info::new([("version", env!("CARGO_PKG_VERSION")), ("component", "coordinator")]));
    r.register_with_unit("report_ingest", "Time to validate and apply one agent report", Unit::Seconds, m.report_ingest.clone());
    r.register_with_unit("policy_pass", "Duration of a consolidation policy pass", Unit::Seconds, m.policy_pass.clone());
    r.register_with_unit("optimiser_pass", "Duration of a background cluster optimiser pass", Unit::Seconds, m.optimiser_pass.clone());
    r.register("plans", "Plans journaled, by origin", m.plans.clone());
    r.register("migrations", "Migrations ended, by outcome", m.migrations.clone());
    r.register(
        "learned_candidates",
        "Candidates presage's learned scorer judged, by the guardrail's verdict",
        m.learned_candidates.clone(),
    );
    r.register_with_unit("migration_duration", "Duration of ended migrations", Unit::Seconds, m.migration_duration.clone());
    r.register_with_unit("api_request", "REST calls of the operator API, by call and outcome", Unit::Seconds, m.api_request.0.clone());
    r.register("connection_refusals", "Connections refused on the listener, by kind", shared.refusals.by_kind.clone());
    r.register_with_unit(
        "agent_command",
        "Round trips of commands to agents, by kind and outcome",
        Unit::Seconds,
        shared.sessions.command_seconds.0.clone(),
    );

    // What the state holds, read now.
    let hosts: Family<Label, Gauge> = Family::default();
    let vms = Gauge::<i64>::default();
    let reports: Family<Label, Counter> = Family::default();
    let anomalies: Counter = Counter::default();
    {
        let state = shared.state();
        let (mut reachable, mut unreachable, mut running) = (0, 0, 0);
        for h in state.hosts() {
            if h.reachable {
                reachable += 1;
                running += h.vms.len() as i64;
            } else {
                unreachable += 1;
            }
        }
        hosts.get_or_create(&[("state", "reachable")]).set(reachable);
        hosts.get_or_create(&[("state", "unreachable")]).set(unreachable);
        vms.set(running);
        reports.get_or_create(&[("outcome", "ingested")]).inc_by(state.reports_ingested);
        reports.get_or_create(&[("outcome", "rejected")]).inc_by(state.reports_rejected);
        anomalies.inc_by(state.anomalies_received);
    }
    r.register("hosts", "Hosts known, by whether they report", hosts);
    r.register("vms", "VMs on reachable hosts", vms);
    r.register("reports_received", "Agent reports received, by outcome", reports);
    r.register("anomalies_received", "Anomaly events the agents reported", anomalies);
    let open = shared.rollouts.open_count().map(|n| n as i64).unwrap_or(-1);
    let rollouts = Gauge::<i64>::default();
    rollouts.set(open);
    r.register("rollouts_open", "Staged rollouts not finished (-1: the store could not be read)", rollouts);
    let executing = Gauge::<i64>::default();
    executing.set(shared.executing.lock().unwrap_or_else(|p| p.into_inner()).len() as i64);
    r.register("plans_executing", "Plans whose moves are being executed now", executing);

    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_become_a_few_kinds() {
        assert_eq!(refusal_kind("TLS handshake timed out"), "handshake_timeout");
        assert_eq!(refusal_kind("TLS handshake failed: unexpected EOF"), "handshake");
        assert_eq!(refusal_kind("no client certificate"), "no_client_certificate");
        assert_eq!(refusal_kind("certificate from the cluster CA but no role"), "certificate");
    }
}
