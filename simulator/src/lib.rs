//! Trace-replay simulator: a fleet of hosts and VMs driven by real utilisation traces, with a
//! [`ConsolidationPolicy`] deciding placements and migrations every scheduling interval.
//!
//! The host and VM model is CloudSim's power model (Beloglazov & Buyya, CCPE 2012) reproduced
//! event for event, so the classic policies give CloudSim's published figures:
//! - the clock starts at 0.1 s (CloudSim's VM-creation acknowledgement) and advances in steps of
//!   300 s; a VM's demand between trace points is interpolated linearly;
//! - every update recomputes each host's CPU allocation with oversubscription (demands scaled
//!   down proportionally, rounded down, when they exceed capacity);
//! - a migrating VM keeps 90 % of its demand on the source, which still counts the whole of it,
//!   and holds 10 % on the destination; the migration lasts RAM / (half the NIC);
//! - a migration's completion is an event of its own: energy is split there;
//! - energy per interval is the trapezoid of the SPECpower curve, and nothing for a host idle at
//!   the interval's start; a VM whose demand reaches 0 has finished and leaves (CloudSim mode).
//!
//! The simulator only applies what the policy returns; it has no policy logic of its own.

pub mod candidates;
pub mod ecosystem;
pub mod reference;
pub mod scenario;
pub mod sizing;
#[cfg(test)]
mod tests;

use std::time::Instant;

use serde::Serialize;

use presage_forecast::fleet::{FleetForecaster, SeriesRequest};
use presage_forecast::{STEP_S, SeriesContext};

use presage_decide::reservation::{Refusal, Reservation, ReservationBook, ReservationKind, Resources};

use presage_decide::policy::application::AppSignal;
use presage_decide::policy::{ConsolidationPolicy, FleetView, HostView, MoveReason, PowerMode, VmView};

pub use self::scenario::{Scenario, ScenarioError};

/// A VM is a ping-pong move when it returns to a host it left less than this long ago.
pub const PING_PONG_WINDOW_S: f64 = 3600.0;
/// The offset of CloudSim's first scheduling event (its minimum time between events).
pub const CLOUDSIM_START_S: f64 = 0.1;

/// One interval's state of a host or VM, kept until the next one so that time can be charged.
#[derive(Clone, Copy, Debug)]
struct Entry {
    time: f64,
    allocated: f64,
    requested: f64,
    /// Hosts: active. VMs: migrating out.
    flag: bool,
    /// Hosts: short of memory for their VMs.
    short: bool,
}

impl Entry {
    fn violating(&self) -> bool {
        self.allocated < self.requested || self.short
    }
}

#[derive(Default)]
struct HostAccount {
    last: Option<Entry>,
    active_s: f64,
    violation_s: f64,
    shutdowns: u32,
    was_active: Option<bool>,
}

/// Keeps the newest entry; an entry for the same instant replaces it (CloudSim's state
/// histories do the same). When time advances, returns the entry that held over the interval
/// that just closed, and the interval's length.
fn advance(last: &mut Option<Entry>, e: Entry) -> Option<(Entry, f64)> {
    let closed = match *last {
        Some(prev) if prev.time != e.time => Some((prev, e.time - prev.time)),
        _ => None,
    };
    *last = Some(e);
    closed
}

impl HostAccount {
    fn record(&mut self, e: Entry) {
        if let Some((last, dt)) = advance(&mut self.last, e) {
            self.finalise(last);
            if last.flag {
                self.active_s += dt;
                if last.violating() {
                    self.violation_s += dt;
                }
            }
        }
    }

    fn finalise(&mut self, e: Entry) {
        if self.was_active.unwrap_or(true) && !e.flag {
            self.shutdowns += 1;
        }
        self.was_active = Some(e.flag);
    }
}

#[derive(Default)]
struct VmAccount {
    last: Option<Entry>,
    requested: f64,
    allocated: f64,
    lost_to_migration: f64,
}

impl VmAccount {
    fn record(&mut self, e: Entry) {
        if let Some((last, dt)) = advance(&mut self.last, e) {
            self.requested += last.requested * dt;
            self.allocated += last.allocated * dt;
            if last.allocated < last.requested && last.flag {
                self.lost_to_migration += (last.requested - last.allocated) * dt;
            }
        }
    }
}

/// How VMs end and what they ask of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceModel {
    /// CloudSim's PlanetLab model: CPU only; a VM asks for its RAM only while being created and
    /// ends when its demand reaches 0.
    CloudSimCpu,
    /// CPU and memory from the trace; memory is reserved by what the VM uses and counts for
    /// fit; a host whose VMs use more memory than it has is in violation; a VM ends with its trace.
    CpuAndMemory,
}

/// A simulated VM: its demand series and the model's bookkeeping.
#[derive(Clone, Debug)]
pub struct SimVm {
    pub name: String,
    /// Demand as a fraction of the VM's capacity per trace step; one extra point at the end.
    pub cpu: Vec<f64>,
    /// Memory in use per trace step, MB (CPU-and-memory model only).
    pub memory_mb: Vec<f64>,
    /// The step at which the VM's trace ends.
    pub end_step: usize,
    /// Memory asked for at creation, MB.
    pub create_memory_mb: f64,
    /// Memory the VM was given, MB: what its memory forecasts are fractions of.
    pub memory_provisioned_mb: f64,
}

/// Per-step figures for plotting.
#[derive(Clone, Debug, Serialize)]
pub struct TimelinePoint {
    pub time_s: f64,
    pub active_hosts: usize,
    pub power_w: f64,
    pub overloaded_hosts: usize,
    pub migrations_started: usize,
    pub oracle_power_w: f64,
}

/// Migrations started, by why the policy moved the VM ([`MoveReason`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MigrationsByReason {
    /// Its host was (predicted to be) overloaded.
    pub overload: u64,
    /// Its host was under-used and being emptied.
    pub underload: u64,
    /// Its host was being drained.
    pub drain: u64,
    /// A required dependency was unmet where it ran.
    pub repair: u64,
}

impl MigrationsByReason {
    fn count(&mut self, reason: MoveReason) {
        match reason {
            MoveReason::Overload(_) => self.overload += 1,
            MoveReason::Underload(_) => self.underload += 1,
            MoveReason::Drain(_) => self.drain += 1,
            MoveReason::Repair(_) => self.repair += 1,
        }
    }
}

/// One completed migration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MigrationRecord {
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    pub started_s: f64,
    pub finished_s: f64,
}

/// The figures of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub policy: String,
    /// presage's risk appetite in a sweep (`PresageConfig::at_risk`); none otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
    /// The forecaster behind the policy's forecasts, for policies that read them.
    pub forecaster: Option<String>,
    /// The memory forecaster, where memory is counted by use and the policy reads forecasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_forecaster: Option<String>,
    /// Moves skipped because the destination refused the hard reservation.
    pub reservations_refused: u64,
    pub day: String,
    pub hosts: usize,
    pub vms: usize,
    pub energy_kwh: f64,
    pub migrations: u64,
    pub slatah_pct: f64,
    pub pdm_pct: f64,
    pub slav: f64,
    pub esv: f64,
    pub ping_pongs: u64,
    /// Where the migrations went: why each VM was moved.
    pub migrations_by_reason: MigrationsByReason,
    /// Migrations of a VM that had arrived on its host less than [`PING_PONG_WINDOW_S`] before
    /// (to any host: the moves a ping-pong count misses, such as a VM packed onto a host that
    /// is emptied in turn).
    pub moved_again_within_hour: u64,
    pub oracle_energy_kwh: f64,
    pub energy_over_oracle: f64,
    pub overall_sla_violation_pct: f64,
    pub host_shutdowns: u64,
    pub mean_active_hosts: f64,
    pub unplaced_vms: usize,
    /// VM-minutes the interference model puts an application over its latency SLO
    /// ([`APP_SLO_LATENCY_FACTOR`] x its unloaded latency).
    pub app_slo_violation_minutes: f64,
    pub steps: usize,
    pub wall_s: f64,
    /// The ecosystem's figures, for a run over one (`--ecosystem`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub ecosystem: Option<ecosystem::EcosystemReport>,
    /// How often the learned scorer's guardrail let its model decide, when the policy has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<presage_decide::policy::learned::GuardCounts>,
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
    #[serde(skip)]
    pub migration_log: Vec<MigrationRecord>,
}

struct Completion {
    time: f64,
    started: f64,
    seq: u64,
    vm: usize,
    to: usize,
    /// The destination's hard reservation for the VM, when reservations are kept.
    reservation: Option<String>,
}

/// One run of one policy over one scenario.
pub struct Simulation<'s> {
    scenario: &'s Scenario,
    /// Labels the candidates the policy's shortlists logged (training data), when recording.
    candidates: Option<std::sync::Arc<candidates::CandidateRecorder>>,
    policy: Box<dyn ConsolidationPolicy>,
    power_mode: PowerMode,
    hosts: Vec<HostView>,
    vms: Vec<VmView>,
    host_prev_mips: Vec<f64>,
    host_acct: Vec<HostAccount>,
    vm_acct: Vec<VmAccount>,
    /// (time, demand) of each VM's last demand evaluation.
    demand_at: Vec<f64>,
    history_time: Vec<f64>,
    left: Vec<Vec<(usize, f64)>>,
    last_process: f64,
    energy_j: f64,
    oracle_j: f64,
    migrations: u64,
    ping_pongs: u64,
    pending: Vec<Completion>,
    seq: u64,
    timeline: Vec<TimelinePoint>,
    migration_log: Vec<MigrationRecord>,
    unplaced: usize,
    /// The agents' forecaster, for policies that read forecasts, with each VM's step series.
    forecaster: Option<FleetForecaster<usize>>,
    series: Vec<Vec<f32>>,
    /// The agents' memory forecaster (memory in use over memory given), for such policies where
    /// memory is counted by use (the CPU-and-memory model), with each VM's step series.
    memory_forecaster: Option<FleetForecaster<usize>>,
    memory_series: Vec<Vec<f32>>,
    /// Each host's reservation book (the agents' admission rule, in-process), for policies that
    /// plan on forecasts; and how many reservations the hosts refused.
    books: Option<Vec<ReservationBook>>,
    refused: u64,
    migrations_by_reason: MigrationsByReason,
    /// When each VM last arrived on a host by migration.
    arrived_at: Vec<Option<f64>>,
    moved_again_within_hour: u64,
    /// The interference model's state per host: (CPU demand over capacity, resident VMs, short
    /// of memory) as of its last update, and the VM-seconds of application SLO violation so far.
    app_load: Vec<(f64, usize, bool)>,
    /// The same as of the update before (what held during the interval being charged).
    app_load_before: Vec<(f64, usize, bool)>,
    app_slo_violation_s: f64,
    /// Whether every VM's guest reports its application figures (presage-guest in every VM):
    /// the interference model's latency and the host's contention reach the policy.
    guest_reports: bool,
    /// Host failures still to come (the ecosystem's events), soonest first, and per host
    /// whether it has failed (it takes nothing and draws nothing from then on).
    failures: Vec<ecosystem::HostFailure>,
    failed: Vec<bool>,
    /// The ecosystem whose figures the run follows (trace VM i is its declaration i).
    ecosystem: Option<ecosystem::EcosystemTracker>,
}

/// The interference model: each VM's application is served by its host's CPU as an M/M/1 queue,
/// its latency the unloaded latency / (1 - rho) with rho the host's CPU demand over capacity
/// (and unbounded while the host is short of memory: it swaps). Its SLO is this many times the
/// unloaded latency, so it holds while rho stays at or under [`APP_SLO_UTILISATION`].
pub const APP_SLO_LATENCY_FACTOR: f64 = 5.0;
pub const APP_SLO_UTILISATION: f64 = 1.0 - 1.0 / APP_SLO_LATENCY_FACTOR;

/// What the interference model makes a VM's guest and host report on host `h` at `t`, its CPU
/// demand `rho` of capacity over `pes` cores: the application's latency over its SLO
/// (`1/(1-rho)` over [`APP_SLO_LATENCY_FACTOR`]; 100 once the host is saturated or short of
/// memory) and, as the host's contention signal, the share of requests that wait for a core
/// (Erlang's C formula for `pes` servers; 1 when saturated or swapping).
pub fn interference_signal(rho: f64, pes: u32, memory_short: bool, h: usize, t: f64) -> AppSignal {
    const SATURATED_OVER_SLO: f64 = 100.0;
    let rho = rho.max(0.0);
    let (latency_over_slo, host_contention) = if memory_short || rho >= 1.0 {
        (SATURATED_OVER_SLO, 1.0)
    } else {
        ((1.0 / (1.0 - rho) / APP_SLO_LATENCY_FACTOR).min(SATURATED_OVER_SLO), erlang_c(pes.max(1), rho))
    };
    AppSignal { latency_over_slo, host_contention, measured_on: h, at_s: t }
}

/// Erlang's C formula: the probability that a request waits in an M/M/c queue at utilisation
/// `rho` (< 1) of its `c` servers.
fn erlang_c(c: u32, rho: f64) -> f64 {
    let a = c as f64 * rho;
    // sum_{k<c} a^k/k!, and a^c/c!, accumulated term by term.
    let (mut sum, mut term) = (0.0, 1.0);
    for k in 0..c {
        sum += term;
        term *= a / (k + 1) as f64;
    }
    let top = term / (1.0 - rho);
    (top / (sum + top)).clamp(0.0, 1.0)
}

/// The share of a host's CPU that its use plus hard reservations may reach (the agents' default).
pub const RESERVATION_CPU_LIMIT: f64 = presage_decide::reservation::DEFAULT_CPU_LIMIT;

impl<'s> Simulation<'s> {
    pub fn new(scenario: &'s Scenario, policy: Box<dyn ConsolidationPolicy>, power_mode: PowerMode) -> Simulation<'s> {
        let hosts = scenario.hosts.clone();
        let vms = scenario.vm_views.clone();
        let (nh, nv) = (hosts.len(), vms.len());
        Simulation {
            scenario,
            candidates: None,
            policy,
            power_mode,
            hosts,
            vms,
            host_prev_mips: vec![0.0; nh],
            host_acct: (0..nh).map(|_| HostAccount::default()).collect(),
            vm_acct: (0..nv).map(|_| VmAccount::default()).collect(),
            demand_at: vec![f64::NAN; nv],
            history_time: vec![0.0; nv],
            left: vec![Vec::new(); nv],
            last_process: CLOUDSIM_START_S,
            energy_j: 0.0,
            oracle_j: 0.0,
            migrations: 0,
            ping_pongs: 0,
            pending: Vec::new(),
            seq: 0,
            timeline: Vec::new(),
            migration_log: Vec::new(),
            unplaced: 0,
            forecaster: None,
            series: vec![Vec::new(); nv],
            memory_forecaster: None,
            memory_series: vec![Vec::new(); nv],
            books: None,
            refused: 0,
            migrations_by_reason: MigrationsByReason::default(),
            arrived_at: vec![None; nv],
            moved_again_within_hour: 0,
            app_load: vec![(0.0, 0, false); nh],
            app_load_before: vec![(0.0, 0, false); nh],
            app_slo_violation_s: 0.0,
            guest_reports: false,
            failures: Vec::new(),
            failed: vec![false; nh],
            ecosystem: None,
        }
        .with_forecast_model(None)
        .with_memory_forecast_model(None)
    }

    /// Forecasts with the model at `path` (the agents' ONNX model) for a policy that reads
    /// forecasts; `None`: the agents' fallback baseline. Policies that do not read forecasts
    /// get none either way.
    pub fn with_forecast_model(mut self, path: Option<&std::path::Path>) -> Simulation<'s> {
        self.forecaster = self.policy.wants_forecasts().then(|| FleetForecaster::load(path));
        self.books = self.policy.wants_forecasts().then(|| vec![ReservationBook::default(); self.hosts.len()]);
        self
    }

    /// Labels what `recorder` receives from the policy's shortlists (the policy must log to the
    /// same recorder: `PolicyExtras::candidate_log`); `None`: no recording.
    pub fn with_candidate_labels(mut self, recorder: Option<std::sync::Arc<candidates::CandidateRecorder>>) -> Simulation<'s> {
        self.candidates = recorder;
        self
    }

    /// Labels the rows the policy logged since the last call, as of `t`: the destination's
    /// VMs now (those arriving included, the moving ones added once) and what their traces ask
    /// for over the next `horizon` steps. Rows too near the end of the trace for a whole horizon
    /// are dropped.
    fn label_candidates(&self) {
        let Some(rec) = self.candidates.as_ref() else { return };
        let s = self.scenario;
        for (now_s, group, host, features) in rec.take_pending() {
            let step = (now_s / s.step_s).round() as usize;
            if step + rec.horizon >= s.steps || host >= self.hosts.len() {
                continue;
            }
            let h = &self.hosts[host];
            let mut members: Vec<usize> =
                h.vms.iter().copied().chain(h.migrating_in.iter().map(|(v, _)| *v)).filter(|v| !group.contains(v)).collect();
            members.extend(group.iter().copied());
            members.sort_unstable();
            members.dedup();
            let (mut worst_cpu, mut memory_short) = (0.0f64, false);
            for k in step + 1..=step + rec.horizon {
                let cpu: f64 = members.iter().map(|&v| s.vms[v].cpu.get(k).copied().unwrap_or(0.0) * self.vms[v].capacity_mips()).sum();
                worst_cpu = worst_cpu.max(cpu / h.total_mips.max(1e-9));
                if s.model == ResourceModel::CpuAndMemory {
                    let mem: f64 = members.iter().map(|&v| s.vms[v].memory_mb.get(k).copied().unwrap_or(0.0)).sum();
                    memory_short |= mem > h.memory_mb;
                }
            }
            rec.push(candidates::LabelledCandidate {
                step,
                vm: group.first().copied().unwrap_or(usize::MAX),
                host,
                features,
                worst_cpu,
                cpu_short: worst_cpu > 1.0,
                memory_short,
            });
        }
    }

    /// Forecasts memory with the model at `path` (the agents' memory model; `None`: their
    /// baseline) for a policy that reads forecasts, where memory is counted by use; each VM's
    /// p90 within the horizon then counts in its host's memory (`VmView::memory_p90_mb`).
    pub fn with_memory_forecast_model(mut self, path: Option<&std::path::Path>) -> Simulation<'s> {
        for v in &mut self.vms {
            v.memory_p90_mb = None;
        }
        let counted_by_use = self.scenario.model == ResourceModel::CpuAndMemory;
        self.memory_forecaster = (counted_by_use && self.policy.wants_forecasts()).then(|| FleetForecaster::load(path));
        self
    }

    /// No memory forecasts: memory counts as used now (an ablation).
    pub fn without_memory_forecasts(mut self) -> Simulation<'s> {
        self.memory_forecaster = None;
        self
    }

    /// Every VM runs presage-guest: its application's figures (the interference model's) and
    /// its host's contention reach the policy each update. Without it the model still charges
    /// `app_slo_violation_minutes`, but no policy hears of it (as in a fleet without guests).
    pub fn with_guest_reports(mut self, on: bool) -> Simulation<'s> {
        self.guest_reports = on;
        self
    }

    /// Follows `tracker`'s ecosystem through the run (trace VM i is its declaration i).
    pub fn with_ecosystem(mut self, tracker: ecosystem::EcosystemTracker) -> Simulation<'s> {
        self.failures = tracker.events().to_vec();
        self.failures.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        self.ecosystem = Some(tracker);
        self
    }

    /// Fails the hosts whose failure is due by `t`: migrations to or from a failed host are
    /// cut off (a VM bound for it stays where it was), and every VM that ran on it restarts on
    /// the host the policy's placement gives it, as an HA manager would restart it (the boot
    /// itself is not modelled); a VM no host can take is lost.
    fn fail_hosts_due(&mut self, t: f64) {
        while self.failures.first().is_some_and(|f| f.at_s <= t) {
            let failure = self.failures.remove(0);
            let h = failure.fail_host;
            if h >= self.hosts.len() || self.failed[h] {
                continue;
            }
            self.failed[h] = true;
            self.hosts[h].schedulable = false;
            let mut restart: Vec<usize> = Vec::new();
            let mut touched = vec![h];
            let pending = std::mem::take(&mut self.pending);
            for c in pending {
                let source = self.vms[c.vm].host;
                if c.to != h && source != Some(h) {
                    self.pending.push(c);
                    continue;
                }
                if let (Some(books), Some(id)) = (self.books.as_mut(), c.reservation.as_deref()) {
                    books[c.to].remove(id);
                }
                self.hosts[c.to].migrating_in.retain(|(v, _)| *v != c.vm);
                self.hosts[c.to].vms.retain(|v| *v != c.vm);
                self.vms[c.vm].in_migration = false;
                if let Some(tracker) = self.ecosystem.as_mut() {
                    tracker.repair_abandoned(c.seq);
                }
                touched.push(c.to);
                if source == Some(h) {
                    restart.push(c.vm);
                }
            }
            for vm in std::mem::take(&mut self.hosts[h].vms) {
                if self.vms[vm].host == Some(h) && !restart.contains(&vm) {
                    restart.push(vm);
                }
            }
            self.hosts[h].migrating_in.clear();
            self.hosts[h].observed_mips = 0.0;
            let restarted = restart.len();
            let mut lost = 0;
            for vm in restart {
                self.vms[vm].host = None;
                self.vms[vm].in_migration = false;
                let fleet = FleetView { now_s: t, hosts: &self.hosts, vms: &self.vms };
                match self.policy.place(&fleet, vm) {
                    Some(to) if to != h && to < self.hosts.len() => {
                        self.hosts[to].vms.push(vm);
                        self.vms[vm].host = Some(to);
                        touched.push(to);
                    }
                    _ => {
                        self.vms[vm].alive = false;
                        lost += 1;
                    }
                }
            }
            if let Some(books) = self.books.as_mut() {
                let now_ms = (t * 1000.0) as u64;
                for &x in &touched {
                    self.hosts[x].reserved_mips = books[x].held(ReservationKind::Hard, now_ms).cpu_mhz;
                }
            }
            for x in touched {
                self.update_host(x, t);
            }
            if let Some(tracker) = self.ecosystem.as_mut() {
                tracker.host_failed(t, h, restarted, lost);
            }
        }
    }

    /// Gives every hosted VM the forecasts its agent would publish now: calibrated quantiles from
    /// its history up to step `step` (nothing later) of its CPU and, where memory is counted by
    /// use, the p90 of its memory per horizon in MB (see
    /// [`with_memory_forecast_model`](Self::with_memory_forecast_model)).
    fn forecast(&mut self, step: u64) {
        if let Some(fc) = self.forecaster.as_mut() {
            let forecasts = hosted_forecasts(fc, &self.vms, &self.series, step);
            for v in self.vms.iter_mut() {
                v.forecast = None;
            }
            for (vm, f) in forecasts {
                self.vms[vm].forecast = f;
            }
        }
        if let Some(fc) = self.memory_forecaster.as_mut() {
            let forecasts = hosted_forecasts(fc, &self.vms, &self.memory_series, step);
            for v in self.vms.iter_mut() {
                v.memory_p90_mb = None;
            }
            for (vm, f) in forecasts {
                let given = self.scenario.vms[vm].memory_provisioned_mb;
                self.vms[vm].memory_p90_mb = f.map(|f| std::array::from_fn(|h| (f64::from(f.q[h][2]).clamp(0.0, 1.0) * given) as f32));
            }
        }
    }

    /// Runs to the end of the trace; `on_step` is called after every step with (done, total).
    pub fn run(mut self, mut on_step: impl FnMut(usize, usize)) -> RunReport {
        let started = Instant::now();
        self.place_all();
        let limit = self.scenario.steps as f64 * self.scenario.step_s;
        let total_steps = self.scenario.steps.saturating_sub(1);
        let mut t = CLOUDSIM_START_S + self.scenario.step_s;
        let mut prev_oracle_w: Option<f64> = None;
        let mut prev_t = t;
        let mut done = 0;
        while t <= limit {
            self.update_all(t, true);
            self.forecast(((t - CLOUDSIM_START_S) / self.scenario.step_s).round() as u64);
            if let Some(books) = self.books.as_mut() {
                let now_ms = (t * 1000.0) as u64;
                for (h, b) in books.iter_mut().enumerate() {
                    b.purge_expired(now_ms);
                    self.hosts[h].reserved_mips = b.held(ReservationKind::Hard, now_ms).cpu_mhz;
                }
            }
            self.fail_hosts_due(t);
            let started_before = self.migrations;
            let fleet = FleetView { now_s: t, hosts: &self.hosts, vms: &self.vms };
            let decisions = self.policy.optimise(&fleet);
            self.label_candidates();
            self.start_migrations(t, &decisions);
            if let Some(tracker) = self.ecosystem.as_mut() {
                let vms = &self.vms;
                tracker.observe(t, self.scenario.step_s, &|d| vms.get(d).filter(|v| v.alive).and_then(|v| v.host));
            }
            let oracle_w = self.oracle_watts();
            if let Some(pw) = prev_oracle_w {
                self.oracle_j += (pw + oracle_w) / 2.0 * (t - prev_t);
            }
            prev_oracle_w = Some(oracle_w);
            prev_t = t;
            self.record_timeline(t, (self.migrations - started_before) as usize, oracle_w);
            let next = t + self.scenario.step_s;
            self.complete_migrations_before(next.min(limit + 1e-9), limit);
            t = next;
            done += 1;
            on_step(done, total_steps);
        }
        self.report(started.elapsed().as_secs_f64())
    }

    fn place_all(&mut self) {
        for &vm in &self.scenario.creation_order {
            // A VM is created at its full size.
            let cap = self.vms[vm].capacity_mips();
            self.vms[vm].demand_mips = cap;
            self.vms[vm].memory_request_mb = self.scenario.vms[vm].create_memory_mb;
            let fleet = FleetView { now_s: 0.0, hosts: &self.hosts, vms: &self.vms };
            let choice = self.policy.place(&fleet, vm);
            self.label_candidates();
            match choice {
                Some(h) => {
                    self.hosts[h].vms.push(vm);
                    let v = &mut self.vms[vm];
                    v.host = Some(h);
                    v.scheduled_mips = v.demand_mips;
                    // Created, but its workload has not started: it asks for nothing until the
                    // first update (while its creation-time CPU allocation stays in place), as
                    // CloudSim's VMs do until their cloudlet arrives.
                    v.demand_mips = 0.0;
                }
                None => {
                    self.vms[vm].alive = false;
                    self.unplaced += 1;
                }
            }
        }
        if self.scenario.model == ResourceModel::CloudSimCpu {
            // CloudSim's PlanetLab VMs ask for RAM only while being created.
            for v in &mut self.vms {
                v.memory_request_mb = 0.0;
            }
        }
    }

    /// The VM's demand at `t`, interpolated between trace points (CloudSim's PlanetLab model).
    fn demand(&mut self, vm: usize, t: f64) -> f64 {
        let s = &self.scenario;
        let data = &s.vms[vm].cpu;
        let step = s.step_s;
        let u = if t % step == 0.0 {
            data[(t as i64 / step as i64) as usize]
        } else {
            let t1 = (t / step).floor() as usize;
            let t2 = (t / step).ceil() as usize;
            let (u1, u2) = (data[t1.min(data.len() - 1)], data[t2.min(data.len() - 1)]);
            let delta = (u2 - u1) / ((t2 - t1) as f64 * step);
            u1 + delta * (t - t1 as f64 * step)
        };
        let d = u * self.vms[vm].capacity_mips();
        self.vms[vm].demand_mips = d;
        if s.model == ResourceModel::CpuAndMemory {
            let i = ((t / step) as usize).min(s.vms[vm].memory_mb.len().saturating_sub(1));
            let mem = s.vms[vm].memory_mb.get(i).copied().unwrap_or(0.0);
            self.vms[vm].memory_request_mb = mem;
            self.vms[vm].ram_mb = mem.max(1.0);
        }
        // The history takes one sample per scheduling step (CloudSim's `PowerVm`).
        if (t - CLOUDSIM_START_S) % step == 0.0 && t > self.history_time[vm] {
            self.vms[vm].history.push(u);
            self.history_time[vm] = t;
            let step = ((t - CLOUDSIM_START_S) / step).round() as u64;
            if let Some(fc) = self.forecaster.as_mut() {
                fc.observe(&vm, step, u as f32);
                self.series[vm].push(u as f32);
            }
            let given = s.vms[vm].memory_provisioned_mb;
            if let (Some(fc), true) = (self.memory_forecaster.as_mut(), given > 0.0) {
                let used = (self.vms[vm].memory_request_mb / given).clamp(0.0, 1.0) as f32;
                fc.observe(&vm, step, used);
                self.memory_series[vm].push(used);
            }
        }
        self.demand_at[vm] = t;
        d
    }

    fn update_host(&mut self, h: usize, t: f64) {
        let vms = std::mem::take(&mut self.hosts[h].vms);
        for &vm in &vms {
            if self.demand_at[vm] != t {
                self.demand(vm, t);
            }
        }
        let host = &self.hosts[h];
        let (total, pe) = (host.total_mips, host.pe_mips);
        // The scheduler's allocation pass, in arrival order.
        let mut available = total;
        let mut over = false;
        let mut required_sum = 0.0;
        for &vm in &vms {
            let v = &self.vms[vm];
            let capped = (v.demand_mips / v.pes as f64).min(pe) * v.pes as f64;
            let r = if host.is_migrating_in(vm) { capped * 0.1 } else { capped };
            required_sum += r;
            if !over && available >= r {
                available -= r;
            } else if r > 0.0 {
                over = true;
            }
        }
        let scaling = if over { total / required_sum } else { 1.0 };
        let mut util = 0.0;
        let mut requested = 0.0;
        let mut memory = 0.0;
        let mut held_in: Vec<(usize, f64)> = Vec::with_capacity(host.migrating_in.len());
        let mut scheduled: Vec<(usize, f64)> = Vec::with_capacity(vms.len());
        for &vm in &vms {
            let v = &self.vms[vm];
            let per_pe = (v.demand_mips / v.pes as f64).min(pe);
            let pes = v.pes as f64;
            let mig_in = host.is_migrating_in(vm);
            let mig_out = v.in_migration && !mig_in;
            let alloc = if !over {
                if mig_out {
                    per_pe * 0.9 * pes
                } else if mig_in {
                    per_pe * 0.1 * pes
                } else {
                    per_pe * pes
                }
            } else if mig_out {
                (per_pe * scaling * 0.9).floor() * pes
            } else if mig_in {
                (per_pe * 0.1 * scaling).floor() * pes
            } else {
                (per_pe * scaling).floor() * pes
            };
            if mig_in {
                held_in.push((vm, alloc));
                util += alloc;
            } else {
                scheduled.push((vm, v.demand_mips));
                self.vm_acct[vm].record(Entry { time: t, allocated: alloc, requested: v.demand_mips, flag: mig_out, short: false });
                util += if v.in_migration { alloc / 0.9 } else { alloc };
                memory += v.memory_request_mb;
            }
            requested += v.demand_mips;
        }
        let memory_over = self.scenario.model == ResourceModel::CpuAndMemory && memory > host.memory_mb;
        let app_load = (requested / total, scheduled.len(), memory_over);
        // What each resident VM's guest and host would report for the interval ahead.
        let signal = self.guest_reports.then(|| interference_signal(requested / total, host.pes, memory_over, h, t));
        for (vm, request) in scheduled {
            self.vms[vm].scheduled_mips = request;
            self.vms[vm].app = signal;
        }
        let host = &mut self.hosts[h];
        host.vms = vms;
        host.migrating_in = held_in;
        self.app_load_before[h] = std::mem::replace(&mut self.app_load[h], app_load);
        self.host_prev_mips[h] = host.observed_mips;
        host.observed_mips = util;
        // A host short of memory violates its VMs' SLA as surely as one short of CPU.
        self.host_acct[h].record(Entry { time: t, allocated: util, requested, flag: util > 0.0, short: memory_over });
    }

    /// CloudSim's datacenter-wide update: every host, then energy since the last update, then
    /// VMs that have finished leave.
    fn update_all(&mut self, t: f64, charge: bool) {
        for h in 0..self.hosts.len() {
            self.update_host(h, t);
        }
        let dt = t - self.last_process;
        if charge && dt > 0.0 {
            for h in 0..self.hosts.len() {
                if self.failed[h] {
                    continue;
                }
                let host = &self.hosts[h];
                // The interference model: every resident VM's application violates its SLO while
                // its host's CPU demand is over APP_SLO_UTILISATION of capacity, or the host is
                // short of memory.
                let (load, resident, short) = self.app_load_before[h];
                if load > APP_SLO_UTILISATION || short {
                    self.app_slo_violation_s += resident as f64 * dt;
                }
                self.energy_j += match self.power_mode {
                    PowerMode::AlwaysFull => host.power.max_watts() * dt,
                    PowerMode::FollowsLoad => {
                        let from = capped_utilisation(self.host_prev_mips[h] / host.total_mips);
                        host.power.interval_joules(from, host.observed_utilisation(), dt)
                    }
                };
            }
        }
        self.remove_finished(t);
        self.last_process = t;
    }

    fn remove_finished(&mut self, t: f64) {
        let step_index = (t / self.scenario.step_s) as usize;
        for h in 0..self.hosts.len() {
            let mut i = 0;
            while i < self.hosts[h].vms.len() {
                let vm = self.hosts[h].vms[i];
                let v = &self.vms[vm];
                let finished = !v.in_migration
                    && match self.scenario.model {
                        ResourceModel::CloudSimCpu => v.demand_mips == 0.0,
                        ResourceModel::CpuAndMemory => step_index >= self.scenario.vms[vm].end_step,
                    };
                if finished && v.host == Some(h) {
                    self.hosts[h].vms.remove(i);
                    self.vms[vm].alive = false;
                    self.vms[vm].host = None;
                } else {
                    i += 1;
                }
            }
        }
    }

    fn start_migrations(&mut self, t: f64, decisions: &[presage_decide::policy::Migration]) {
        let mut dirty = vec![false; self.hosts.len()];
        // A bundle (the VMs the policy moves together to one host) is reserved whole on its
        // destination before any member starts, or none of it moves (as the executor does).
        let mut reserved: std::collections::HashMap<usize, Option<String>> = std::collections::HashMap::new();
        let mut refused_vms: std::collections::HashSet<usize> = std::collections::HashSet::new();
        for m in decisions {
            let Some(e) = self.policy.explanations().iter().find(|e| e.vm == m.vm && e.to == m.to && !e.with.is_empty()) else { continue };
            if m.to >= self.hosts.len() || reserved.contains_key(&m.vm) || refused_vms.contains(&m.vm) {
                continue;
            }
            let members: Vec<usize> = std::iter::once(m.vm)
                .chain(e.with.iter().copied())
                .filter(|&v| v < self.vms.len() && self.vms[v].alive && self.vms[v].host.is_some())
                .filter(|&v| decisions.iter().any(|d| d.vm == v && d.to == m.to))
                .collect();
            let mut held: Vec<(usize, Option<String>)> = Vec::new();
            let mut ok = true;
            for &v in &members {
                let duration = self.vms[v].migration_seconds(self.hosts[m.to].migration_mb_per_s);
                match self.reserve(v, m.to, t, duration) {
                    Ok(r) => held.push((v, r)),
                    Err(e) => {
                        tracing::debug!(error = %e, "destination refused a bundle member's reservation; the bundle stays");
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                reserved.extend(held);
            } else {
                if let Some(books) = self.books.as_mut() {
                    for (_, id) in &held {
                        if let Some(id) = id {
                            books[m.to].remove(id);
                        }
                    }
                }
                self.refused += 1;
                refused_vms.extend(members);
            }
        }
        for m in decisions {
            let (vm, to) = (m.vm, m.to);
            if to >= self.hosts.len() || vm >= self.vms.len() || !self.vms[vm].alive || refused_vms.contains(&vm) {
                continue;
            }
            let Some(from) = self.vms[vm].host else { continue };
            let duration = self.vms[vm].migration_seconds(self.hosts[to].migration_mb_per_s);
            let reservation = match reserved.remove(&vm) {
                Some(r) => r,
                None => match self.reserve(vm, to, t, duration) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "destination refused the reservation; move skipped");
                        self.refused += 1;
                        continue;
                    }
                },
            };
            self.vms[vm].in_migration = true;
            if !self.hosts[to].is_migrating_in(vm) {
                self.hosts[to].migrating_in.push((vm, 0.0));
                self.hosts[to].vms.push(vm);
            }
            dirty[to] = true;
            dirty[from] = true;
            self.migrations += 1;
            self.migrations_by_reason.count(m.reason);
            if self.arrived_at[vm].is_some_and(|at| t - at < PING_PONG_WINDOW_S) {
                self.moved_again_within_hour += 1;
            }
            self.seq += 1;
            if matches!(m.reason, MoveReason::Repair(_)) {
                if let Some(tracker) = self.ecosystem.as_mut() {
                    let vms = &self.vms;
                    tracker.repair_started(self.seq, vm, &|v| vms.get(v).and_then(|x| x.host));
                }
            }
            self.pending.push(Completion { time: t + duration, started: t, seq: self.seq, vm, to, reservation });
        }
        for (h, d) in dirty.into_iter().enumerate() {
            if d {
                self.update_host(h, t);
            }
        }
    }

    /// The destination agent's hard reservation for `vm`'s p90 demand before its migration starts
    /// (as the daemons do); `Ok(None)` when this run keeps no reservations.
    fn reserve(&mut self, vm: usize, to: usize, t: f64, duration: f64) -> Result<Option<String>, Refusal> {
        let Some(books) = self.books.as_mut() else { return Ok(None) };
        let v = &self.vms[vm];
        let p90 = v.forecast.map_or(v.demand_mips, |f| f.q.iter().map(|q| q[2] as f64).fold(0.0, f64::max) * v.capacity_mips());
        let host = &self.hosts[to];
        let memory_used: f64 = host.vms.iter().filter(|&&o| self.vms[o].host == Some(to)).map(|&o| self.vms[o].memory_request_mb).sum();
        let id = format!("{vm}@{t}");
        let now_ms = (t * 1000.0) as u64;
        let r = Reservation {
            id: id.clone(),
            vm_id: vm.to_string(),
            kind: ReservationKind::Hard,
            cpu_mhz: p90,
            memory_mib: v.memory_request_mb,
            expires_at_ms: now_ms + ((duration + self.scenario.step_s) * 1000.0) as u64,
        };
        let capacity = Resources { cpu_mhz: host.total_mips, memory_mib: host.memory_mb };
        let committed = Resources { cpu_mhz: host.observed_mips, memory_mib: memory_used };
        books[to].purge_expired(now_ms);
        books[to].admit(r, now_ms, capacity, committed, RESERVATION_CPU_LIMIT)?;
        Ok(Some(id))
    }

    /// Processes migration completions due before `until` (and not after the run's end).
    fn complete_migrations_before(&mut self, until: f64, limit: f64) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_by(|a, b| a.time.total_cmp(&b.time).then(a.seq.cmp(&b.seq)));
        let mut i = 0;
        while i < self.pending.len() && self.pending[i].time < until {
            let t = self.pending[i].time;
            if t > limit {
                break;
            }
            self.update_all(t, true);
            while i < self.pending.len() && self.pending[i].time == t {
                let (vm, to, started) = (self.pending[i].vm, self.pending[i].to, self.pending[i].started);
                // The VM arrived: its reservation becomes an allocation.
                if let (Some(books), Some(id)) = (self.books.as_mut(), self.pending[i].reservation.as_deref()) {
                    books[to].remove(id);
                    self.hosts[to].reserved_mips = books[to].held(ReservationKind::Hard, (t * 1000.0) as u64).cpu_mhz;
                }
                let from = self.vms[vm].host.unwrap_or(to);
                self.finish_migration(vm, to, t);
                if let Some(tracker) = self.ecosystem.as_mut() {
                    let vms = &self.vms;
                    tracker.repair_finished(self.pending[i].seq, t, &|v| vms.get(v).and_then(|x| x.host));
                }
                self.migration_log.push(MigrationRecord { vm, from, to, started_s: started, finished_s: t });
                i += 1;
            }
            self.update_all(t, false);
        }
        self.pending.drain(..i);
        // Completions past the end of the run never happen.
        self.pending.retain(|c| c.time <= limit);
    }

    fn finish_migration(&mut self, vm: usize, to: usize, t: f64) {
        if let Some(from) = self.vms[vm].host
            && let Some(i) = self.hosts[from].vms.iter().position(|v| *v == vm)
        {
            self.hosts[from].vms.remove(i);
            self.left[vm].push((from, t));
        }
        let target = &mut self.hosts[to];
        target.migrating_in.retain(|(v, _)| *v != vm);
        if let Some(i) = target.vms.iter().position(|v| *v == vm) {
            target.vms.remove(i);
        }
        target.vms.push(vm);
        self.vms[vm].in_migration = false;
        self.vms[vm].host = Some(to);
        self.arrived_at[vm] = Some(t);
        if self.left[vm].iter().any(|&(h, at)| h == to && t - at < PING_PONG_WINDOW_S) {
            self.ping_pongs += 1;
        }
        self.left[vm].retain(|&(_, at)| t - at < PING_PONG_WINDOW_S);
    }

    /// The least power that could serve the current demand: the most efficient hosts filled
    /// completely, the rest on the host that draws least for it, no migrations, no headroom.
    fn oracle_watts(&self) -> f64 {
        let demand: f64 = self.vms.iter().filter(|v| v.alive && v.host.is_some()).map(|v| v.demand_mips).sum();
        self.scenario.oracle.watts_for(demand)
    }

    fn record_timeline(&mut self, t: f64, migrations_started: usize, oracle_w: f64) {
        let mut active = 0;
        let mut overloaded = 0;
        let mut power = 0.0;
        for (h, host) in self.hosts.iter().enumerate() {
            let u = host.observed_utilisation();
            match self.power_mode {
                PowerMode::AlwaysFull => power += host.power.max_watts(),
                PowerMode::FollowsLoad if u > 0.0 => power += host.power.watts_at(u),
                _ => {}
            }
            if u > 0.0 {
                active += 1;
            }
            if let Some(e) = self.host_acct[h].last
                && e.violating()
            {
                overloaded += 1;
            }
        }
        self.timeline.push(TimelinePoint {
            time_s: t,
            active_hosts: active,
            power_w: power,
            overloaded_hosts: overloaded,
            migrations_started,
            oracle_power_w: oracle_w,
        });
    }

    fn report(mut self, wall_s: f64) -> RunReport {
        let (mut active, mut violation, mut shutdowns) = (0.0, 0.0, 0u64);
        for a in &mut self.host_acct {
            if let Some(last) = a.last {
                a.finalise(last);
            }
            active += a.active_s;
            violation += a.violation_s;
            shutdowns += a.shutdowns as u64;
        }
        let (mut req, mut alloc, mut lost) = (0.0, 0.0, 0.0);
        for a in &self.vm_acct {
            req += a.requested;
            alloc += a.allocated;
            lost += a.lost_to_migration;
        }
        let slatah = if active > 0.0 { violation / active } else { 0.0 };
        let pdm = if req > 0.0 { lost / req } else { 0.0 };
        let energy_kwh = self.energy_j / 3.6e6;
        let oracle_kwh = self.oracle_j / 3.6e6;
        let slav = slatah * pdm;
        let mean_active = if self.timeline.is_empty() {
            0.0
        } else {
            self.timeline.iter().map(|p| p.active_hosts as f64).sum::<f64>() / self.timeline.len() as f64
        };
        RunReport {
            policy: self.policy.name(),
            risk: None,
            forecaster: self.forecaster.as_ref().map(|f| f.status().to_string()),
            memory_forecaster: self.memory_forecaster.as_ref().map(|f| f.status().to_string()),
            reservations_refused: self.refused,
            day: self.scenario.name.clone(),
            hosts: self.hosts.len(),
            vms: self.vms.len(),
            energy_kwh,
            migrations: self.migrations,
            slatah_pct: slatah * 100.0,
            pdm_pct: pdm * 100.0,
            slav,
            esv: energy_kwh * slav,
            ping_pongs: self.ping_pongs,
            migrations_by_reason: self.migrations_by_reason,
            moved_again_within_hour: self.moved_again_within_hour,
            oracle_energy_kwh: oracle_kwh,
            energy_over_oracle: if oracle_kwh > 0.0 { energy_kwh / oracle_kwh } else { f64::NAN },
            overall_sla_violation_pct: if req > 0.0 { (req - alloc) / req * 100.0 } else { 0.0 },
            host_shutdowns: shutdowns,
            mean_active_hosts: mean_active,
            unplaced_vms: self.unplaced,
            app_slo_violation_minutes: self.app_slo_violation_s / 60.0,
            steps: self.timeline.len(),
            wall_s,
            ecosystem: self
                .ecosystem
                .as_ref()
                .map(|t| ecosystem::EcosystemReport { repair_moves: self.migrations_by_reason.repair, ..t.report() }),
            learned: self.policy.learned_counts(),
            timeline: std::mem::take(&mut self.timeline),
            migration_log: std::mem::take(&mut self.migration_log),
        }
    }
}

/// `fc`'s forecasts from step `step` on for every hosted VM with enough of `series` (its step
/// series per VM), one batch.
fn hosted_forecasts(
    fc: &mut FleetForecaster<usize>,
    vms: &[VmView],
    series: &[Vec<f32>],
    step: u64,
) -> Vec<(usize, Option<presage_decide::demand::Forecast>)> {
    let min = fc.min_history();
    let mut keys = Vec::new();
    let mut requests = Vec::new();
    for (vm, v) in vms.iter().enumerate() {
        if !v.alive || v.host.is_none() || series[vm].len() < min {
            continue;
        }
        keys.push(vm);
        requests.push(SeriesRequest {
            key: vm,
            ctx: SeriesContext { history: &series[vm], next_time_s: (step + 1) * STEP_S },
            first_step: step + 1,
        });
    }
    let forecasts = fc.forecast(&requests);
    keys.into_iter().zip(forecasts).collect()
}

fn capped_utilisation(u: f64) -> f64 {
    if u > 1.0 && u < 1.01 { 1.0 } else { u }
}

/// The physical lower bound on power: capacity of each host type and its best efficiency.
#[derive(Clone, Debug)]
pub struct OracleFleet {
    /// (capacity, count, power model), most efficient first.
    types: Vec<(f64, usize, presage_decide::policy::PowerModel)>,
}

impl OracleFleet {
    pub fn new(hosts: &[HostView]) -> OracleFleet {
        let mut types: Vec<(f64, usize, presage_decide::policy::PowerModel)> = Vec::new();
        for h in hosts {
            match types.iter_mut().find(|(c, _, p)| *c == h.total_mips && *p == h.power) {
                Some(t) => t.1 += 1,
                None => types.push((h.total_mips, 1, h.power.clone())),
            }
        }
        types.sort_by(|a, b| (a.2.max_watts() / a.0).total_cmp(&(b.2.max_watts() / b.0)));
        OracleFleet { types }
    }

    /// Watts to serve `demand` at best: whole hosts of the most efficient kinds at full load,
    /// the remainder on whichever single host draws least for it.
    pub fn watts_for(&self, demand: f64) -> f64 {
        let mut left = demand;
        let mut watts = 0.0;
        let mut used: Vec<usize> = vec![0; self.types.len()];
        for (i, (cap, count, power)) in self.types.iter().enumerate() {
            while left >= *cap && used[i] < *count {
                left -= cap;
                watts += power.max_watts();
                used[i] += 1;
            }
        }
        if left > 1e-9 {
            let best = self
                .types
                .iter()
                .enumerate()
                .filter(|(i, (cap, count, _))| used[*i] < *count && *cap >= left)
                .map(|(_, (cap, _, power))| power.watts_at(left / cap))
                .fold(f64::INFINITY, f64::min);
            // More demand than the whole fleet can serve: charge it at the best full-load rate.
            watts += if best.is_finite() {
                best
            } else {
                let (cap, _, power) = &self.types[0];
                power.max_watts() * left / cap
            };
        }
        watts
    }
}
