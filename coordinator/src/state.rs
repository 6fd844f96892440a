//! The coordinator's picture of the cluster: every host that ever registered, its capacity, its
//! latest report and VMs, when it was last heard from, and whether it counts as reachable.
//!
//! This module is pure: no I/O, no clock. Callers pass `now`, so liveness is testable without
//! waiting, and the same code will serve the simulator.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use presage_protocol::pb::{AgentSelf, HostCapacity, HostUsage, Register, Report, TracePosition, UsagePoint, VmSample};

/// CPU samples kept per VM for `presagectl forecast`.
pub const USAGE_HISTORY: usize = 48;

use crate::validate::{self, InvalidMessage};

/// What a host told us when it registered.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub capacity: HostCapacity,
    pub hypervisor_kind: String,
    pub agent_version: String,
    pub protocol_version: u32,
    pub boot_id: String,
    /// How peers reach this host for live migration (libvirt URI, data URI; empty if none).
    pub migration_uri: String,
    pub migration_data_uri: String,
    /// Where the host sits (its agent's `[topology]`; empty: unknown).
    pub zone: String,
    pub rack: String,
}

#[derive(Clone, Debug)]
pub struct HostRecord {
    pub host_id: String,
    pub registration: Registration,
    pub last_seen: Instant,
    pub reachable: bool,
    /// The id of the open agent session, if any.
    pub session: Option<u64>,
    pub reports: u64,
    pub last_seq: u64,
    pub sampled_at_ms: u64,
    pub usage: Option<HostUsage>,
    pub trace: Option<TracePosition>,
    pub agent: Option<AgentSelf>,
    /// Latest sample per VM id.
    pub vms: BTreeMap<String, VmSample>,
    /// Recent CPU and memory samples per VM id, oldest first, at most [`USAGE_HISTORY`].
    pub usage_history: BTreeMap<String, VecDeque<UsagePoint>>,
    /// The host's leases and resizes, as its agent last reported them.
    pub sizing: Option<presage_protocol::pb::SizingState>,
}

impl HostRecord {
    /// A VM's CPU demand in this host's CPU units.
    pub fn vm_cpu_demand(&self, vm: &VmSample) -> f64 {
        let per_vcpu = if vm.vcpu_mhz > 0.0 { vm.vcpu_mhz } else { self.registration.capacity.cpu_mhz_per_core };
        vm.cpu_utilisation * vm.vcpus as f64 * per_vcpu
    }

    /// What `vm` is given as its agent last reported it (cores, MiB): its resize record's
    /// allocation, else its domain's vCPUs and memory.
    /// The VM's resize record as its agent last reported it.
    pub fn resize_entry(&self, vm_id: &str) -> Option<&presage_protocol::pb::ResizeEntry> {
        self.sizing.iter().flat_map(|s| &s.resizes).find(|r| r.vm_id == vm_id)
    }

    pub fn vm_allocation(&self, vm: &VmSample) -> (f64, f64) {
        match self.resize_entry(&vm.vm_id) {
            Some(r) => (r.allocated_cpu_cores, r.allocated_memory_mib),
            None => (vm.vcpus.max(1) as f64, (vm.memory_bytes >> 20) as f64),
        }
    }

    pub fn cpu_capacity(&self) -> f64 {
        self.registration.capacity.cpu_cores as f64 * self.registration.capacity.cpu_mhz_per_core
    }
}

/// A change in a host's reachability, for logging and (later) for the planners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    Unreachable { host_id: String, silent_for: Duration },
    Reachable { host_id: String },
}

#[derive(Debug)]
pub struct ClusterState {
    host_timeout: Duration,
    hosts: BTreeMap<String, HostRecord>,
    pub reports_ingested: u64,
    pub reports_rejected: u64,
    /// Anomaly events the agents have reported.
    pub anomalies_received: u64,
    /// The latest anomalies the agents reported, oldest first (at most [`MAX_ANOMALIES`]).
    anomalies: std::collections::VecDeque<presage_protocol::pb::AnomalyEvent>,
}

/// Anomalies the coordinator keeps for operators.
pub const MAX_ANOMALIES: usize = 10_000;

/// A guest's report counts as the VM's figures at a sample while it is at most this many of
/// its own intervals old (and at least [`GUEST_FRESH_MIN_MS`]): a guest that stopped reporting
/// does not stand for the VM's applications for ever.
const GUEST_FRESH_INTERVALS: f64 = 3.0;
const GUEST_FRESH_MIN_MS: u64 = 30_000;

/// The mean of an application figure (`app_latency_over_slo`, `app_throughput_per_s`) over the
/// samples a recent guest report covers (0 or nonsense is "not reported"); none if none does.
pub fn mean_reported(points: &[&UsagePoint], figure: fn(&UsagePoint) -> f32) -> Option<f64> {
    let v: Vec<f64> = points.iter().map(|p| figure(p) as f64).filter(|x| *x > 0.0 && x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// A VM's application figures at a sample taken at `sampled_at_ms` (the host's clock, as the
/// guest report's receipt): the worst p99 over the declared SLO among applications that served
/// requests (0: none declares one), and the requests completed per second, summed; both 0 when
/// the guest's last report is not recent.
pub fn app_figures(v: &VmSample, sampled_at_ms: u64) -> (f32, f32) {
    let Some(g) = v.guest.as_ref().filter(|g| g.received_ms > 0) else { return (0.0, 0.0) };
    let fresh_ms = ((g.interval_s.max(0.0) * GUEST_FRESH_INTERVALS * 1000.0) as u64).max(GUEST_FRESH_MIN_MS);
    if sampled_at_ms.saturating_sub(g.received_ms) > fresh_ms {
        return (0.0, 0.0);
    }
    let finite = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
    let latency = g
        .apps
        .iter()
        .filter(|a| a.latency_slo_p99_ms > 0.0 && a.requests > 0)
        .map(|a| finite(a.latency_p99_ms / a.latency_slo_p99_ms))
        .fold(0.0, f64::max);
    let throughput: f64 = g.apps.iter().map(|a| finite(a.throughput_per_s)).sum();
    (latency as f32, throughput as f32)
}

/// Totals over all hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub hosts_total: u32,
    pub hosts_reachable: u32,
    pub hosts_connected: u32,
    pub vms_total: u32,
    pub cpu_capacity: f64,
    pub cpu_used: f64,
    pub memory_capacity: u64,
    pub memory_used: u64,
}

impl ClusterState {
    pub fn new(host_timeout: Duration) -> ClusterState {
        ClusterState {
            host_timeout,
            hosts: BTreeMap::new(),
            reports_ingested: 0,
            reports_rejected: 0,
            anomalies_received: 0,
            anomalies: Default::default(),
        }
    }

    pub fn host_timeout(&self) -> Duration {
        self.host_timeout
    }

    /// Records a validated registration over session `session`. A host that registers again (a
    /// restarted agent, a reconnect) keeps its VMs until its first report replaces them.
    pub fn register(&mut self, reg: &Register, session: u64, now: Instant) -> Option<Liveness> {
        let registration = Registration {
            capacity: reg.capacity.clone().unwrap_or_default(),
            hypervisor_kind: reg.hypervisor_kind.clone(),
            agent_version: reg.agent_version.clone(),
            protocol_version: reg.protocol_version,
            boot_id: reg.boot_id.clone(),
            migration_uri: reg.migration_uri.clone(),
            migration_data_uri: reg.migration_data_uri.clone(),
            zone: reg.zone.clone(),
            rack: reg.rack.clone(),
        };
        match self.hosts.get_mut(&reg.host_id) {
            Some(h) => {
                if h.registration.boot_id != registration.boot_id {
                    h.last_seq = 0;
                }
                h.registration = registration;
                h.session = Some(session);
                h.last_seen = now;
                if !h.reachable {
                    h.reachable = true;
                    return Some(Liveness::Reachable { host_id: reg.host_id.clone() });
                }
                None
            }
            None => {
                self.hosts.insert(
                    reg.host_id.clone(),
                    HostRecord {
                        host_id: reg.host_id.clone(),
                        registration,
                        last_seen: now,
                        reachable: true,
                        session: Some(session),
                        reports: 0,
                        last_seq: 0,
                        sampled_at_ms: 0,
                        usage: None,
                        trace: None,
                        agent: None,
                        vms: BTreeMap::new(),
                        usage_history: BTreeMap::new(),
                        sizing: None,
                    },
                );
                Some(Liveness::Reachable { host_id: reg.host_id.clone() })
            }
        }
    }

    /// Validates and applies a report from `host_id`'s session `session`. The report's VM list
    /// replaces the host's VMs (a VM missing from it has left the host).
    pub fn ingest(&mut self, host_id: &str, session: u64, report: Report, now: Instant) -> Result<Option<Liveness>, InvalidMessage> {
        let host = match self.hosts.get_mut(host_id) {
            Some(h) if h.session == Some(session) => h,
            _ => {
                self.reports_rejected += 1;
                return Err(InvalidMessage::new("report", "the session is not registered (or was replaced by a newer one)"));
            }
        };
        if let Err(e) = validate::report(&report) {
            self.reports_rejected += 1;
            return Err(e);
        }
        host.last_seen = now;
        host.reports += 1;
        host.last_seq = report.seq;
        host.sampled_at_ms = report.sampled_at_ms;
        host.usage = report.host;
        host.trace = report.trace;
        host.agent = report.agent;
        host.sizing = report.sizing;
        let step = host.trace.as_ref().map(|t| t.step).unwrap_or(0);
        let replay = host.trace.is_some();
        for v in &report.vms {
            let h = host.usage_history.entry(v.vm_id.clone()).or_default();
            let (app_latency_over_slo, app_throughput_per_s) = app_figures(v, report.sampled_at_ms);
            let point = UsagePoint {
                sampled_at_ms: report.sampled_at_ms,
                cpu_utilisation: v.cpu_utilisation as f32,
                trace_step: step,
                memory_utilisation: v.memory_fraction().unwrap_or(0.0) as f32,
                app_latency_over_slo,
                app_throughput_per_s,
                disk_bytes_per_s: (v.disk_read_bytes_per_s + v.disk_write_bytes_per_s) as f32,
                net_bytes_per_s: v.net_rx_bytes_per_s.max(v.net_tx_bytes_per_s) as f32,
            };
            // A replayed trace sampled twice within one of its steps (an agent running late
            // catches up with ticks close together) keeps one point per step: the newest.
            match h.back_mut() {
                Some(last) if replay && last.trace_step == step => *last = point,
                _ => h.push_back(point),
            }
            while h.len() > USAGE_HISTORY {
                h.pop_front();
            }
        }
        self.anomalies_received += report.anomalies.len() as u64;
        for mut a in report.anomalies {
            a.host_id = host_id.to_string();
            self.anomalies.push_back(a);
        }
        while self.anomalies.len() > MAX_ANOMALIES {
            self.anomalies.pop_front();
        }
        host.vms = report.vms.into_iter().map(|v| (v.vm_id.clone(), v)).collect();
        let vms = &host.vms;
        host.usage_history.retain(|id, _| vms.contains_key(id));
        self.reports_ingested += 1;
        if !host.reachable {
            host.reachable = true;
            return Ok(Some(Liveness::Reachable { host_id: host_id.to_string() }));
        }
        Ok(None)
    }

    /// Notes that a session ended. Reachability is left to [`ClusterState::sweep`]: a brief
    /// reconnect must not flap the host.
    pub fn session_closed(&mut self, host_id: &str, session: u64) {
        if let Some(h) = self.hosts.get_mut(host_id)
            && h.session == Some(session)
        {
            h.session = None;
        }
    }

    /// Marks hosts silent for longer than the timeout as unreachable.
    pub fn sweep(&mut self, now: Instant) -> Vec<Liveness> {
        let mut changes = Vec::new();
        for h in self.hosts.values_mut() {
            let silent_for = now.saturating_duration_since(h.last_seen);
            if h.reachable && silent_for > self.host_timeout {
                h.reachable = false;
                changes.push(Liveness::Unreachable { host_id: h.host_id.clone(), silent_for });
            }
        }
        changes
    }

    /// The kept anomalies of `vm_id` (every one when `None`), newest first, at most `limit`.
    pub fn anomalies(&self, vm_id: Option<&str>, limit: usize) -> Vec<presage_protocol::pb::AnomalyEvent> {
        self.anomalies.iter().rev().filter(|a| vm_id.is_none_or(|v| a.vm_id == v)).take(limit).cloned().collect()
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostRecord> {
        self.hosts.values()
    }

    pub fn host(&self, id: &str) -> Option<&HostRecord> {
        self.hosts.get(id)
    }

    /// The host whose agent last reported `vm`.
    pub fn host_of_vm(&self, vm: &str) -> Option<&HostRecord> {
        self.hosts.values().find(|h| h.vms.contains_key(vm))
    }

    /// An agent's answer to a sizing command carries its leases and resizes as they are after
    /// it: newer than its last report (which the next one replaces anyway).
    pub fn sizing_answered(&mut self, host_id: &str, state: presage_protocol::pb::SizingState) {
        if let Some(h) = self.hosts.get_mut(host_id) {
            h.sizing = Some(state);
        }
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for h in self.hosts.values() {
            s.hosts_total += 1;
            s.hosts_reachable += h.reachable as u32;
            s.hosts_connected += h.session.is_some() as u32;
            if !h.reachable {
                continue;
            }
            s.vms_total += h.vms.len() as u32;
            s.cpu_capacity += h.cpu_capacity();
            s.cpu_used += h.vms.values().map(|v| h.vm_cpu_demand(v)).sum::<f64>();
            s.memory_capacity += h.registration.capacity.memory_bytes;
            s.memory_used += h.usage.as_ref().map(|u| u.memory_used_bytes).unwrap_or(0);
        }
        s
    }
}

/// Agent messages for tests of the modules that read the cluster state.
#[cfg(test)]
pub(crate) mod test_messages {
    use presage_protocol::pb::{HostCapacity, HostUsage, Register, Report, VmSample, VmState};

    /// A registration: 4 cores x 2000 MHz, 8 GiB.
    pub(crate) fn reg(host: &str, boot: &str) -> Register {
        Register {
            protocol_version: 1,
            host_id: host.into(),
            agent_version: "t".into(),
            capacity: Some(HostCapacity {
                cpu_cores: 4,
                cpu_mhz_per_core: 2000.0,
                memory_bytes: 8 << 30,
                nics: vec![],
                cpu_model: String::new(),
                disk_bytes_per_s: 0.0,
            }),
            migration_uri: String::new(),
            migration_data_uri: String::new(),
            hypervisor_kind: "simulated".into(),
            boot_id: boot.into(),
            zone: String::new(),
            rack: String::new(),
        }
    }

    /// A report with 2-vCPU VMs at the given utilisations.
    pub(crate) fn report(seq: u64, vms: &[(&str, f64)]) -> Report {
        Report {
            seq,
            sampled_at_ms: 1,
            host: Some(HostUsage::default()),
            vms: vms
                .iter()
                .map(|(id, cpu)| VmSample {
                    vm_id: id.to_string(),
                    state: VmState::Running as i32,
                    vcpus: 2,
                    cpu_utilisation: *cpu,
                    ..Default::default()
                })
                .collect(),
            trace: None,
            agent: None,
            anomalies: Vec::new(),
            sizing: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_messages::{reg, report};
    use super::*;

    #[test]
    fn liveness_follows_reports_and_the_timeout() {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(10));
        assert_eq!(s.register(&reg("a", "1"), 1, t0), Some(Liveness::Reachable { host_id: "a".into() }));
        s.ingest("a", 1, report(1, &[("vm", 0.5)]), t0 + Duration::from_secs(5)).unwrap();
        assert!(s.sweep(t0 + Duration::from_secs(15)).is_empty(), "10 s after the last report is not yet over the timeout");
        let changes = s.sweep(t0 + Duration::from_secs(16));
        assert!(matches!(&changes[..], [Liveness::Unreachable { host_id, .. }] if host_id == "a"));
        assert!(s.sweep(t0 + Duration::from_secs(30)).is_empty(), "reported once");
        assert_eq!(s.summary().vms_total, 0, "VMs of unreachable hosts are not counted");
        let back = s.ingest("a", 1, report(2, &[("vm", 0.5)]), t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(back, Some(Liveness::Reachable { host_id: "a".into() }));
        assert_eq!(s.summary().hosts_reachable, 1);
    }

    #[test]
    fn a_recent_guest_report_is_the_vm_s_application_figures_a_stale_one_says_nothing() {
        use presage_protocol::guest_pb::AppFigures;
        use presage_protocol::pb::GuestApps;
        let app = |name: &str, p99: f64, slo: f64, tput: f64, requests: u64| AppFigures {
            name: name.into(),
            latency_p99_ms: p99,
            latency_slo_p99_ms: slo,
            throughput_per_s: tput,
            requests,
            ..Default::default()
        };
        let mut vm = VmSample { vm_id: "x".into(), ..Default::default() };
        assert_eq!(app_figures(&vm, 100_000), (0.0, 0.0), "no guest");
        // The worst p99 over its SLO among apps with an SLO and requests; throughput summed.
        vm.guest = Some(GuestApps {
            received_ms: 95_000,
            interval_s: 5.0,
            apps: vec![
                app("api", 150.0, 100.0, 40.0, 200),
                app("db", 9.0, 10.0, 60.0, 300),
                app("idle", 500.0, 100.0, 0.0, 0),
                app("batch", 9e3, 0.0, 1.0, 5),
            ],
            ..Default::default()
        });
        assert_eq!(app_figures(&vm, 100_000), (1.5, 101.0));
        // 31 s after the report (3 intervals are 15 s; 30 s at least): stale.
        assert_eq!(app_figures(&vm, 126_001), (0.0, 0.0));
        assert_eq!(app_figures(&vm, 125_000), (1.5, 101.0));
        // Nonsense from the guest is no figure.
        vm.guest.as_mut().unwrap().apps = vec![app("api", f64::NAN, 100.0, f64::INFINITY, 10)];
        assert_eq!(app_figures(&vm, 100_000), (0.0, 0.0));
        // Ingested: the history point carries them.
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(10));
        s.register(&reg("a", "1"), 7, t0);
        let mut r = report(1, &[("x", 0.5)]);
        r.sampled_at_ms = 100_000;
        r.vms[0].guest =
            Some(GuestApps { received_ms: 99_000, interval_s: 5.0, apps: vec![app("api", 80.0, 100.0, 12.0, 60)], ..Default::default() });
        s.ingest("a", 7, r, t0).unwrap();
        let p = s.host("a").unwrap().usage_history["x"][0];
        assert_eq!((p.app_latency_over_slo, p.app_throughput_per_s), (0.8, 12.0));
    }

    #[test]
    fn a_report_replaces_the_vm_set_and_demand_uses_vcpu_speed() {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(10));
        s.register(&reg("a", "1"), 7, t0);
        s.ingest("a", 7, report(1, &[("x", 0.5), ("y", 0.25)]), t0).unwrap();
        s.ingest("a", 7, report(2, &[("y", 1.0)]), t0).unwrap();
        let h = s.host("a").unwrap();
        assert_eq!(h.vms.keys().collect::<Vec<_>>(), vec!["y"]);
        // 1.0 x 2 vCPUs x 2000 MHz (host core speed, vcpu_mhz unset)
        assert_eq!(s.summary().cpu_used, 4000.0);
        assert_eq!(s.summary().cpu_capacity, 8000.0);
    }

    #[test]
    fn a_trace_step_sampled_twice_keeps_one_history_point_the_newest() {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(10));
        s.register(&reg("a", "1"), 7, t0);
        let at = |seq: u64, step: u64, cpu: f64| {
            let mut r = report(seq, &[("x", cpu)]);
            r.trace = Some(presage_protocol::pb::TracePosition { trace_set: "d".into(), step, step_seconds: 300 });
            r
        };
        for (seq, step, cpu) in [(1, 10, 0.1), (2, 11, 0.2), (3, 11, 0.3), (4, 12, 0.4)] {
            s.ingest("a", 7, at(seq, step, cpu), t0).unwrap();
        }
        let h = &s.host("a").unwrap().usage_history["x"];
        let points: Vec<(u64, f32)> = h.iter().map(|p| (p.trace_step, p.cpu_utilisation)).collect();
        assert_eq!(points, vec![(10, 0.1), (11, 0.3), (12, 0.4)]);
        // Real hosts (no trace) keep every sample.
        s.register(&reg("b", "1"), 8, t0);
        for seq in 1..=3 {
            s.ingest("b", 8, report(seq, &[("y", 0.5)]), t0).unwrap();
        }
        assert_eq!(s.host("b").unwrap().usage_history["y"].len(), 3);
    }

    #[test]
    fn stale_sessions_and_invalid_reports_are_rejected_and_counted() {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(10));
        s.register(&reg("a", "1"), 1, t0);
        s.register(&reg("a", "2"), 2, t0);
        assert!(s.ingest("a", 1, report(1, &[]), t0).is_err(), "the replaced session may not report");
        s.session_closed("a", 1);
        assert_eq!(s.host("a").unwrap().session, Some(2), "closing an old session leaves the new one");
        let mut bad = report(1, &[("v", 0.5)]);
        bad.vms[0].cpu_utilisation = f64::NAN;
        let err = s.ingest("a", 2, bad, t0).unwrap_err().to_string();
        assert!(err.contains("vms[0].cpu_utilisation"), "{err}");
        assert_eq!((s.reports_ingested, s.reports_rejected), (0, 2));
        assert!(s.ingest("nobody", 1, report(1, &[]), t0).is_err());
    }
}
