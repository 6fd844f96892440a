//! The agent's Prometheus metrics (OpenMetrics text), served on `[metrics] listen` when it is
//! set (the agent has no listener of its own otherwise: it dials the coordinator).
//!
//! Events are counted where they happen ([`AgentMetrics`]: each sampling cycle's duration and
//! failures, reports produced, anomalies scored); what the agent holds (VMs, reservations,
//! leases, resizes, its own resident memory and CPU time) is read at each scrape ([`render`]).
//! No label takes a VM id.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

/// Counted where their events happen; cloned into each scrape's registry (clones share counts).
#[derive(Clone, Debug)]
pub struct AgentMetrics {
    /// One sampling cycle: host, VMs, history, forecasts.
    pub sampling: Histogram,
    /// Cycles that failed, and reports produced.
    pub sampling_failures: Counter,
    pub reports: Counter,
    /// Demand archive writes that failed (a full disk, permissions): those steps are missing
    /// from the archive; sampling goes on.
    pub archive_failures: Counter,
    /// Anomalies the detector flagged, by series kind (`cpu`, `memory`, `app`, `host_cpu`).
    pub anomalies: Family<[(&'static str, &'static str); 1], Counter>,
    /// VMs in the last report.
    pub vms: Gauge,
    /// Per resource and model: p10–p90 coverage of the raw forecasts, their mean pinball loss
    /// and the baseline's (exponentially weighted over about the last 2,000 outcomes), and the
    /// outcomes judged.
    pub forecast_coverage: Family<ForecastLabels, Gauge<f64, AtomicU64>>,
    pub forecast_pinball: Family<ForecastLabels, Gauge<f64, AtomicU64>>,
    pub forecast_outcomes: Family<ForecastLabels, Gauge>,
}

/// `resource` (`cpu`, `memory`), `model` (its name: a handful per release), and for the loss
/// `forecaster` (`model`, `baseline`).
pub type ForecastLabels = Vec<(&'static str, String)>;

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics {
            // 1 ms to about 33 s.
            sampling: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sampling_failures: Counter::default(),
            reports: Counter::default(),
            archive_failures: Counter::default(),
            anomalies: Family::default(),
            vms: Gauge::default(),
            forecast_coverage: Family::default(),
            forecast_pinball: Family::default(),
            forecast_outcomes: Family::default(),
        }
    }
}

impl AgentMetrics {
    /// Takes the forecast models' health as the cycle left it.
    pub fn forecast_health(&self, health: &[(&'static str, String, presage_forecast::fleet::ModelHealth)]) {
        for (resource, model, h) in health {
            let labels = vec![("resource", resource.to_string()), ("model", model.clone())];
            self.forecast_outcomes.get_or_create(&labels).set(h.outcomes as i64);
            if h.outcomes == 0 {
                continue;
            }
            self.forecast_coverage.get_or_create(&labels).set(h.coverage);
            for (who, loss) in [("model", h.model_loss), ("baseline", h.baseline_loss)] {
                let mut l = labels.clone();
                l.push(("forecaster", who.to_string()));
                self.forecast_pinball.get_or_create(&l).set(loss);
            }
        }
    }

    /// Counts a report's anomalies by the kind of their series.
    pub fn count_anomalies(&self, report: &presage_protocol::pb::Report) {
        for a in &report.anomalies {
            let kind = match a.series.as_str() {
                "cpu" => "cpu",
                "memory" => "memory",
                "host_cpu" => "host_cpu",
                s if s.starts_with("app:") => "app",
                _ => "other",
            };
            self.anomalies.get_or_create(&[("series", kind)]).inc();
        }
    }
}

/// What the agent holds, read at each scrape.
pub struct Held {
    pub reservations: Arc<Mutex<crate::reservations::ReservationDesk>>,
    pub sizing: Arc<Mutex<crate::sizing::SizingDesk>>,
    pub steps: Arc<crate::step_ledger::StepLedger>,
}

/// This process's resident memory (bytes) and CPU time (seconds), from `/proc/self`.
fn own_usage() -> Option<(u64, f64)> {
    let me = procfs::process::Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    Some((stat.rss * procfs::page_size(), (stat.utime + stat.stime) as f64 / ticks))
}

/// The exposition at this moment.
pub fn render(m: &AgentMetrics, held: &Held) -> String {
    let mut r = Registry::with_prefix("presage_agent");
    r.register("build", "The agent's version", Info::new([("version", env!("CARGO_PKG_VERSION")), ("component", "agent")]));
    r.register_with_unit("sampling", "Duration of a sampling cycle", Unit::Seconds, m.sampling.clone());
    r.register("sampling_failures", "Sampling cycles that failed", m.sampling_failures.clone());
    r.register("archive_failures", "Sampling cycles whose demand archive writes failed", m.archive_failures.clone());
    r.register("reports", "Reports produced for the coordinator", m.reports.clone());
    r.register("anomalies", "Anomalies flagged, by series kind", m.anomalies.clone());
    r.register("vms", "VMs in the last report", m.vms.clone());
    r.register("forecast_coverage", "Share of outcomes within the model's raw p10-p90, by resource and model", m.forecast_coverage.clone());
    r.register(
        "forecast_pinball",
        "Mean pinball loss of the raw forecasts and of the baseline's, by resource and model",
        m.forecast_pinball.clone(),
    );
    r.register("forecast_outcomes", "Outcomes the forecast health is judged on, by resource and model", m.forecast_outcomes.clone());
    let reservations = Gauge::<i64>::default();
    reservations.set(held.reservations.lock().unwrap_or_else(|p| p.into_inner()).book().entries().len() as i64);
    r.register("reservations", "Reservations held for incoming VMs", reservations);
    let (leases, resizes) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    {
        let desk = held.sizing.lock().unwrap_or_else(|p| p.into_inner());
        leases.set(desk.leases().len() as i64);
        resizes.set(desk.resizes().count() as i64);
    }
    r.register("leases", "Borrowing leases in force", leases);
    r.register("resizes", "Resizes the agent keeps a record of", resizes);
    let steps = Family::<[(&'static str, &'static str); 1], Counter>::default();
    for (admission, n) in held.steps.counts().snapshot() {
        steps.get_or_create(&[("admission", admission)]).inc_by(n);
    }
    r.register(
        "steps",
        "Coordinator steps (a migration's copy, hand-over, completion) by admission: run, answered again from the ledger, refused as unfinished",
        steps,
    );
    if let Some((rss, cpu)) = own_usage() {
        let resident = Gauge::<i64>::default();
        resident.set(rss as i64);
        r.register_with_unit("resident_memory", "The agent process's resident memory", Unit::Bytes, resident);
        let cpu_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        cpu_seconds.inc_by(cpu);
        r.register_with_unit("cpu", "CPU time the agent process has used", Unit::Seconds, cpu_seconds);
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}
