//! What `presagectl` prints: one serialisable view per command, rendered either as an aligned
//! table or as JSON (`--output json`). The JSON field names are a stable interface for scripts.

use presage_protocol::pb::{HostInfo, StatusResponse, VmInfo, VmState};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    /// Comma-separated values (`simulate` and `forecast-eval` only).
    Csv,
    /// Graphviz (`ecosystem` only).
    Dot,
}

#[derive(Serialize)]
pub struct StatusView {
    pub coordinator_version: String,
    pub protocol_version: u32,
    pub uptime_s: f64,
    pub hosts_total: u32,
    pub hosts_reachable: u32,
    pub hosts_connected: u32,
    pub vms_total: u32,
    pub cpu_capacity_mhz: f64,
    pub cpu_demand_mhz: f64,
    pub memory_capacity_bytes: u64,
    pub memory_used_bytes: u64,
    pub reports_ingested: u64,
    pub reports_rejected: u64,
    pub tls_handshakes_refused: u64,
    pub last_refusal: String,
    pub policy: String,
    pub policy_mode: String,
    pub proposed_migrations: u32,
    /// Seconds since the last advisory pass; null before the first.
    pub proposal_age_s: Option<f64>,
}

impl From<StatusResponse> for StatusView {
    fn from(s: StatusResponse) -> Self {
        StatusView {
            coordinator_version: s.coordinator_version,
            protocol_version: s.protocol_version,
            uptime_s: s.uptime_ms as f64 / 1000.0,
            hosts_total: s.hosts_total,
            hosts_reachable: s.hosts_reachable,
            hosts_connected: s.hosts_connected,
            vms_total: s.vms_total,
            cpu_capacity_mhz: s.cpu_capacity_mhz,
            cpu_demand_mhz: s.cpu_used_mhz,
            memory_capacity_bytes: s.memory_capacity_bytes,
            memory_used_bytes: s.memory_used_bytes,
            reports_ingested: s.reports_ingested,
            reports_rejected: s.reports_rejected,
            tls_handshakes_refused: s.tls_handshakes_refused,
            last_refusal: s.last_refusal,
            policy: s.policy,
            policy_mode: s.policy_mode,
            proposed_migrations: s.proposed_migrations,
            proposal_age_s: (s.proposal_age_ms > 0).then(|| s.proposal_age_ms as f64 / 1000.0),
        }
    }
}

impl StatusView {
    pub fn render(&self) -> String {
        let pct = |a: f64, b: f64| if b > 0.0 { 100.0 * a / b } else { 0.0 };
        let rows = vec![
            (
                "coordinator",
                format!("{} (protocol v{}), up {}", self.coordinator_version, self.protocol_version, human_secs(self.uptime_s)),
            ),
            ("hosts", format!("{} reachable, {} connected, {} known", self.hosts_reachable, self.hosts_connected, self.hosts_total)),
            ("vms", self.vms_total.to_string()),
            (
                "cpu demand",
                format!(
                    "{:.1} of {:.1} GHz ({:.1} %)",
                    self.cpu_demand_mhz / 1e3,
                    self.cpu_capacity_mhz / 1e3,
                    pct(self.cpu_demand_mhz, self.cpu_capacity_mhz)
                ),
            ),
            (
                "memory",
                format!(
                    "{} of {} ({:.1} %)",
                    gib(self.memory_used_bytes),
                    gib(self.memory_capacity_bytes),
                    pct(self.memory_used_bytes as f64, self.memory_capacity_bytes as f64)
                ),
            ),
            ("reports", format!("{} ingested, {} rejected", self.reports_ingested, self.reports_rejected)),
            (
                "policy",
                match self.proposal_age_s {
                    Some(age) => {
                        format!(
                            "{} ({}): {} migrations proposed {} ago",
                            self.policy,
                            self.policy_mode,
                            self.proposed_migrations,
                            human_secs(age)
                        )
                    }
                    None => format!("{} ({}): no pass yet", self.policy, self.policy_mode),
                },
            ),
            (
                "tls refusals",
                if self.tls_handshakes_refused == 0 {
                    "0".into()
                } else {
                    format!("{} (last: {})", self.tls_handshakes_refused, self.last_refusal)
                },
            ),
        ];
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.into_iter().map(|(k, v)| format!("{k:<w$}  {v}\n")).collect()
    }
}

#[derive(Serialize)]
pub struct HostView {
    pub host: String,
    pub state: &'static str,
    pub connected: bool,
    pub hypervisor: String,
    pub vms: u32,
    pub cpu_cores: u32,
    pub cpu_capacity_mhz: f64,
    pub cpu_demand_mhz: f64,
    pub cpu_utilisation: f64,
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub last_seen_s: f64,
    pub reports: u64,
    pub trace_step: Option<u64>,
    pub agent_rss_bytes: Option<u64>,
    pub agent_version: String,
    /// The agent's CPU forecaster, and why when it fell back to a baseline.
    pub forecaster: Option<String>,
    /// The same for memory.
    pub memory_forecaster: Option<String>,
}

impl From<HostInfo> for HostView {
    fn from(h: HostInfo) -> Self {
        let cap = h.capacity.unwrap_or_default();
        let usage = h.usage.unwrap_or_default();
        HostView {
            host: h.host_id,
            state: if h.reachable { "reachable" } else { "unreachable" },
            connected: h.connected,
            hypervisor: h.hypervisor_kind,
            vms: h.vm_count,
            cpu_cores: cap.cpu_cores,
            cpu_capacity_mhz: cap.cpu_cores as f64 * cap.cpu_mhz_per_core,
            cpu_demand_mhz: h.vm_cpu_demand_mhz,
            cpu_utilisation: usage.cpu_utilisation,
            memory_bytes: cap.memory_bytes,
            memory_used_bytes: usage.memory_used_bytes,
            last_seen_s: h.last_seen_ago_ms as f64 / 1000.0,
            reports: h.reports,
            trace_step: h.trace.map(|t| t.step),
            agent_rss_bytes: h.agent.as_ref().map(|a| a.rss_bytes),
            agent_version: h.agent_version,
            forecaster: h.agent.as_ref().map(|a| a.forecaster.clone()),
            memory_forecaster: h.agent.map(|a| a.memory_forecaster),
        }
    }
}

pub fn hosts_table(hosts: &[HostView]) -> String {
    let rows = hosts
        .iter()
        .map(|h| {
            vec![
                h.host.clone(),
                h.state.to_string(),
                h.hypervisor.clone(),
                h.vms.to_string(),
                format!("{:.1}", h.cpu_utilisation * 100.0),
                format!("{:.1}/{:.1}", h.cpu_demand_mhz / 1e3, h.cpu_capacity_mhz / 1e3),
                format!("{:.1}", if h.memory_bytes > 0 { 100.0 * h.memory_used_bytes as f64 / h.memory_bytes as f64 } else { 0.0 }),
                gib(h.memory_bytes),
                format!("{:.1}s", h.last_seen_s),
                h.trace_step.map(|s| format!("{s} ({})", clock_of_step(s))).unwrap_or_else(|| "-".into()),
                h.agent_rss_bytes.map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64)).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &["HOST", "STATE", "HYPERVISOR", "VMS", "CPU%", "DEMAND/CAP GHz", "MEM%", "MEMORY", "LAST SEEN", "TRACE STEP", "AGENT RSS MiB"],
        &[false, false, false, true, true, true, true, true, true, true, true],
        rows,
    )
}

#[derive(Serialize)]
pub struct VmView {
    pub vm: String,
    pub name: String,
    pub host: String,
    pub state: &'static str,
    pub vcpus: u32,
    pub cpu_utilisation: f64,
    pub cpu_demand_mhz: f64,
    pub memory_bytes: u64,
    pub memory_used_bytes: u64,
    pub disk_read_bytes_per_s: f64,
    pub disk_write_bytes_per_s: f64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
    pub sampled_at_ms: u64,
    pub trace_step: Option<u64>,
    /// The agent's forecast, when the VM has enough history.
    pub forecast: Option<ForecastView>,
    /// What presage-guest in the VM reports (the guest's claim), when it has a port.
    pub guest: Option<GuestView>,
}

/// The latest report of a VM's presage-guest, and the frames its host dropped.
#[derive(Serialize)]
pub struct GuestView {
    pub received_ms: u64,
    pub interval_s: f64,
    pub apps: Vec<GuestAppView>,
    pub frames_accepted: u64,
    pub frames_dropped: std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
pub struct GuestAppView {
    pub name: String,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_p99_ms: f64,
    pub throughput_per_s: f64,
    pub error_rate: f64,
}

impl From<presage_protocol::pb::GuestApps> for GuestView {
    fn from(g: presage_protocol::pb::GuestApps) -> Self {
        let f = g.frames.unwrap_or_default();
        GuestView {
            received_ms: g.received_ms,
            interval_s: g.interval_s,
            apps: g
                .apps
                .into_iter()
                .map(|a| GuestAppView {
                    name: a.name,
                    latency_p50_ms: a.latency_p50_ms,
                    latency_p95_ms: a.latency_p95_ms,
                    latency_p99_ms: a.latency_p99_ms,
                    throughput_per_s: a.throughput_per_s,
                    error_rate: a.error_rate,
                })
                .collect(),
            frames_accepted: f.accepted,
            frames_dropped: [
                ("oversized", f.oversized),
                ("rate_limited", f.rate_limited),
                ("malformed", f.malformed),
                ("forged", f.forged),
                ("replayed", f.replayed),
                ("out_of_range", f.out_of_range),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// Quantiles of CPU busy fraction (and of memory in use, where the agent forecasts it) for the
/// next 5-minute steps.
#[derive(Serialize)]
pub struct ForecastView {
    pub forecaster: String,
    pub step_seconds: u32,
    pub first_step: u64,
    pub cpu_p10: Vec<f32>,
    pub cpu_p50: Vec<f32>,
    pub cpu_p90: Vec<f32>,
    /// The highest busy fraction of the last day: how far a burst may reach.
    pub cpu_peak: f32,
    pub memory: Option<QuantilesView>,
}

/// One resource's quantiles per step, as a fraction.
#[derive(Clone, Serialize)]
pub struct QuantilesView {
    pub forecaster: String,
    pub p10: Vec<f32>,
    pub p50: Vec<f32>,
    pub p90: Vec<f32>,
}

impl ForecastView {
    /// The quantiles of `resource`, when forecast.
    pub fn quantiles(&self, resource: Resource) -> Option<QuantilesView> {
        match resource {
            Resource::Cpu => Some(QuantilesView {
                forecaster: self.forecaster.clone(),
                p10: self.cpu_p10.clone(),
                p50: self.cpu_p50.clone(),
                p90: self.cpu_p90.clone(),
            }),
            Resource::Memory => self.memory.clone(),
        }
    }
}

/// What `presagectl forecast` charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Resource {
    /// Busy fraction of the VM's vCPUs.
    Cpu,
    /// Memory in use as a fraction of the memory allocated.
    Memory,
}

impl From<VmInfo> for VmView {
    fn from(v: VmInfo) -> Self {
        let s = v.sample.unwrap_or_default();
        let state = match VmState::try_from(s.state).unwrap_or(VmState::Unspecified) {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Shutoff => "shutoff",
            VmState::Crashed => "crashed",
            VmState::Other => "other",
            VmState::Unspecified => "unknown",
        };
        let forecast = s.forecast.map(|f| ForecastView {
            forecaster: f.forecaster,
            step_seconds: f.step_seconds,
            first_step: f.first_step,
            cpu_p10: f.cpu_p10,
            cpu_p50: f.cpu_p50,
            cpu_p90: f.cpu_p90,
            cpu_peak: f.cpu_peak,
            memory: f.memory.map(|m| QuantilesView { forecaster: m.forecaster, p10: m.p10, p50: m.p50, p90: m.p90 }),
        });
        VmView {
            forecast,
            vm: s.vm_id,
            name: s.name,
            host: v.host_id,
            state,
            vcpus: s.vcpus,
            cpu_utilisation: s.cpu_utilisation,
            cpu_demand_mhz: v.cpu_demand_mhz,
            memory_bytes: s.memory_bytes,
            memory_used_bytes: s.memory_used_bytes,
            disk_read_bytes_per_s: s.disk_read_bytes_per_s,
            disk_write_bytes_per_s: s.disk_write_bytes_per_s,
            net_rx_bytes_per_s: s.net_rx_bytes_per_s,
            net_tx_bytes_per_s: s.net_tx_bytes_per_s,
            sampled_at_ms: v.sampled_at_ms,
            trace_step: v.trace.map(|t| t.step),
            guest: s.guest.map(GuestView::from),
        }
    }
}

pub fn vms_table(vms: &[VmView]) -> String {
    let kib = |b: f64| format!("{:.0}", b / 1024.0);
    let rows = vms
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.host.clone(),
                v.state.to_string(),
                v.vcpus.to_string(),
                format!("{:.1}", v.cpu_utilisation * 100.0),
                format!("{:.0}", v.cpu_demand_mhz),
                format!("{}", v.memory_bytes >> 20),
                format!("{}", v.memory_used_bytes >> 20),
                kib(v.disk_read_bytes_per_s + v.disk_write_bytes_per_s),
                kib(v.net_rx_bytes_per_s + v.net_tx_bytes_per_s),
                v.forecast.as_ref().and_then(|f| forecast_cell(f, 6)).unwrap_or_else(|| "-".into()),
                v.guest.as_ref().and_then(guest_cell).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "VM",
            "HOST",
            "STATE",
            "VCPUS",
            "CPU%",
            "CPU MHZ",
            "MEM MiB",
            "USED MiB",
            "DISK KiB/s",
            "NET KiB/s",
            "CPU% +30m p50 [p10-p90]",
            "APP p99 ms (guest)",
        ],
        &[false, false, false, true, true, true, true, true, true, true, true, false],
        rows,
    )
}

/// The guest's applications' p99 latencies, and the frames dropped from it when any were.
fn guest_cell(g: &GuestView) -> Option<String> {
    let mut cell = g.apps.iter().map(|a| format!("{} {:.1}", a.name, a.latency_p99_ms)).collect::<Vec<_>>().join(", ");
    let dropped: u64 = g.frames_dropped.values().sum();
    if dropped > 0 {
        cell.push_str(&format!(" ({dropped} frames dropped)"));
    }
    (!cell.is_empty()).then_some(cell)
}

/// `p50 [p10-p90]` in percent at `steps` ahead (1 = the step in progress).
fn forecast_cell(f: &ForecastView, steps: usize) -> Option<String> {
    let k = steps.checked_sub(1)?;
    Some(format!("{:.0} [{:.0}-{:.0}]", f.cpu_p50.get(k)? * 100.0, f.cpu_p10.get(k)? * 100.0, f.cpu_p90.get(k)? * 100.0))
}

/// Renders rows under headers with every column as wide as its widest cell.
pub fn table(headers: &[&str], right_align: &[bool], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i > 0 {
                out.push_str("  ");
            }
            if right_align[i] {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if i + 1 < cells.len() {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn human_secs(s: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s as u64)).to_string()
}

/// The time of day a 5-minute trace step stands for.
fn clock_of_step(step: u64) -> String {
    let minutes = (step % 288) * 5;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forecast_chart_puts_history_median_and_interval_on_their_rows() {
        let r = ForecastReport {
            vm: "vm-1".into(),
            host: "hv".into(),
            cpu_utilisation: 0.5,
            memory_utilisation: Some(0.8),
            history: (0..30)
                .map(|i| HistoryPoint {
                    sampled_at_ms: i,
                    cpu_utilisation: 0.5,
                    memory_utilisation: (i >= 20).then_some(0.8),
                    trace_step: i,
                })
                .collect(),
            forecast: Some(ForecastView {
                forecaster: "m".into(),
                step_seconds: 300,
                first_step: 30,
                cpu_p10: vec![0.3; 12],
                cpu_p50: vec![0.5; 12],
                cpu_p90: vec![0.7; 12],
                cpu_peak: 0.9,
                memory: Some(QuantilesView { forecaster: "n".into(), p10: vec![0.8; 12], p50: vec![0.9; 12], p90: vec![0.9; 12] }),
            }),
        };
        let chart = r.render(Resource::Cpu);
        let row_of = |chart: &str, pct: &str| chart.lines().find(|l| l.trim_start().starts_with(pct)).unwrap().to_string();
        let row = |pct: &str| row_of(&chart, pct);
        // The last 24 samples at 50 %, then the median at 50 % for 12 steps.
        assert_eq!(row("50%"), format!("  50% |{}|{}", "*".repeat(24), "o".repeat(12)));
        assert_eq!(row("30%"), format!("  30% |{}|{}", " ".repeat(24), ":".repeat(12)));
        assert_eq!(row("70%"), format!("  70% |{}|{}", " ".repeat(24), ":".repeat(12)));
        assert_eq!(row("80%"), format!("  80% |{}|", " ".repeat(24)));
        assert!(chart.contains("+30 min: p50  50.0 %   p10-p90  30.0 -  70.0 %"), "{chart}");
        // Memory: reported for the last 10 samples only, which sit at 80 % (the p10 row), the
        // median at 90 %.
        let chart = r.render(Resource::Memory);
        assert!(chart.contains("memory in use 80.0 % now") && chart.contains("forecaster n,"), "{chart}");
        assert_eq!(row_of(&chart, "80%"), format!("  80% |{}{}|{}", " ".repeat(14), "*".repeat(10), ":".repeat(12)));
        assert_eq!(row_of(&chart, "90%"), format!("  90% |{}|{}", " ".repeat(24), "o".repeat(12)));
        let mut no_memory = r;
        no_memory.forecast.as_mut().unwrap().memory = None;
        assert!(no_memory.render(Resource::Memory).contains("no memory in use forecast"));
        let none = ForecastReport { forecast: None, ..no_memory };
        assert!(none.render(Resource::Cpu).contains("no forecast yet"));
    }

    #[test]
    fn table_columns_align() {
        let t = table(&["A", "NUM"], &[false, true], vec![vec!["long-name".into(), "7".into()], vec!["x".into(), "1234".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A           NUM");
        assert_eq!(lines[1], "long-name     7");
        assert_eq!(lines[2], "x          1234");
    }
}

/// `presagectl forecast VM`: the VM's recent samples and the agent's forecast.
#[derive(Serialize)]
pub struct ForecastReport {
    pub vm: String,
    pub host: String,
    pub cpu_utilisation: f64,
    /// Memory in use as a fraction of the memory allocated, where the hypervisor reports it.
    pub memory_utilisation: Option<f64>,
    pub history: Vec<HistoryPoint>,
    pub forecast: Option<ForecastView>,
}

#[derive(Serialize)]
pub struct HistoryPoint {
    pub sampled_at_ms: u64,
    pub cpu_utilisation: f32,
    pub memory_utilisation: Option<f32>,
    pub trace_step: u64,
}

impl From<VmInfo> for ForecastReport {
    fn from(v: VmInfo) -> Self {
        let history = v
            .usage_history
            .iter()
            .map(|p| HistoryPoint {
                sampled_at_ms: p.sampled_at_ms,
                cpu_utilisation: p.cpu_utilisation,
                memory_utilisation: (p.memory_utilisation > 0.0).then_some(p.memory_utilisation),
                trace_step: p.trace_step,
            })
            .collect();
        let host = v.host_id.clone();
        let memory_utilisation = v.sample.as_ref().and_then(|s| s.memory_fraction());
        let view = VmView::from(v);
        ForecastReport { vm: view.vm, host, cpu_utilisation: view.cpu_utilisation, memory_utilisation, history, forecast: view.forecast }
    }
}

impl ForecastReport {
    /// A terminal chart of `resource`, 10 % per row: `*` recent samples, `o` forecast median,
    /// `:` the p10–p90 interval; then the figures at 5, 15, 30 and 60 minutes.
    pub fn render(&self, resource: Resource) -> String {
        let (label, now, hist): (&str, Option<f64>, Vec<Option<f32>>) = match resource {
            Resource::Cpu => ("CPU", Some(self.cpu_utilisation), self.history.iter().map(|p| Some(p.cpu_utilisation)).collect()),
            Resource::Memory => ("memory in use", self.memory_utilisation, self.history.iter().map(|p| p.memory_utilisation).collect()),
        };
        let hist = &hist[hist.len().saturating_sub(24)..];
        let level = |v: f32| (v.clamp(0.0, 1.0) * 10.0).round() as i32;
        let mut s = match now {
            Some(now) => format!("{} on {}: {label} {:.1} % now\n", self.vm, self.host, now * 100.0),
            None => format!("{} on {}: {label} not reported by its hypervisor\n", self.vm, self.host),
        };
        let Some(f) = &self.forecast else {
            s.push_str("no forecast yet: the agent needs 2 hours of 5-minute history for this VM\n");
            return s;
        };
        let Some(q) = f.quantiles(resource) else {
            s.push_str(&format!("no {label} forecast for this VM\n"));
            return s;
        };
        s.push_str(&format!("forecaster {}, steps of {} s from step {}\n", q.forecaster, f.step_seconds, f.first_step));
        for row in (0..=10).rev() {
            let mut line = format!("{:>4}% |", row * 10);
            for v in hist {
                line.push(if v.is_some_and(|v| level(v) == row) { '*' } else { ' ' });
            }
            line.push('|');
            for k in 0..q.p50.len() {
                let (lo, mid, hi) = (level(q.p10[k]), level(q.p50[k]), level(q.p90[k]));
                line.push(if mid == row {
                    'o'
                } else if lo <= row && row <= hi {
                    ':'
                } else {
                    ' '
                });
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s.push_str(&format!("      {}^ now, then the next {} steps\n", " ".repeat(hist.len()), q.p50.len()));
        for steps in [1usize, 3, 6, 12] {
            if let Some(k) = steps.checked_sub(1).filter(|k| *k < q.p50.len()) {
                s.push_str(&format!(
                    "  +{:>2} min: p50 {:>5.1} %   p10-p90 {:>5.1} - {:>5.1} %\n",
                    steps as u32 * f.step_seconds / 60,
                    q.p50[k] * 100.0,
                    q.p10[k] * 100.0,
                    q.p90[k] * 100.0
                ));
            }
        }
        s
    }
}
