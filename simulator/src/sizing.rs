//! The sizing replay: every VM of a Bitbrains-layout trace keeps its own allocation (CPU cores as
//! a quota, memory), and a sizing method changes it as the trace unfolds. Static allocation (the
//! trace's provisioned size), a VPA-like baseline (p90 + 15 % of a decaying 24 h histogram,
//! updated every step) and presage (the decision core's resize rule on the agents' forecasts,
//! plus borrowing leases from the broker, admitted by the agents' rule) run side by side on the
//! same hosts.
//!
//! An allocation is decided at the start of a step from what was observed before it, and judged
//! against the step's demand. Bitbrains recorded usage under the static caps, so a sample at its
//! cap (>= [`CENSORED_AT`] of the provisioned size) only says the demand was at least the cap:
//! such samples are *censored* and reported apart. A censored sample counts as under-provisioned
//! when the method's allocation was at most the cap (the VM was held at or below what it
//! demanded), and as unknown when the method gave more than the cap.

use std::time::Instant;

use presage_decide::demand::Forecast;
use presage_decide::sizing::Allocation;
use presage_decide::sizing::broker::BrokerVm;
use presage_decide::sizing::lease::{LeaseBook, LeaseHost, LeaseParty, LeaseResource};
use presage_decide::sizing::pass::{SizingHost, SizingVm, plan_host};
use presage_decide::sizing::resize::SizingMemory;
use presage_decide::sizing::rules::SizingPolicies;
use presage_forecast::fleet::{FleetForecaster, SeriesRequest};
use presage_forecast::{STEP_S, SeriesContext};
use presage_traces::{Selection, TraceFormat};
use serde::Serialize;

use crate::scenario::ScenarioError;

/// A sample at or above this share of the provisioned size is censored.
pub const CENSORED_AT: f64 = 0.98;
/// Hosts of the sizing replay: cores and memory (a two-socket hypervisor of the trace's era).
pub const HOST_CORES: f64 = 32.0;
pub const HOST_MEMORY_MIB: f64 = 256.0 * 1024.0;
/// A resizable VM's domain maximum, as a multiple of its provisioned size (what libvirt's
/// `maxvcpus` and `maxMemory` allow it to grow to; static allocation keeps the provisioned size).
pub const DOMAIN_HEADROOM: f64 = 2.0;
/// Memory each host keeps back for memory leases, MiB.
pub const HOST_MEMORY_RESERVE_MIB: f64 = 4096.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SizingMethod {
    Static,
    Vpa,
    Presage,
}

impl SizingMethod {
    pub fn parse(s: &str) -> Option<SizingMethod> {
        match s {
            "static" => Some(SizingMethod::Static),
            "vpa" => Some(SizingMethod::Vpa),
            "presage" => Some(SizingMethod::Presage),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SizingMethod::Static => "static",
            SizingMethod::Vpa => "vpa",
            SizingMethod::Presage => "presage",
        }
    }
}

/// One VM of the replay.
#[derive(Clone, Debug)]
pub struct SizedVm {
    pub name: String,
    /// Provisioned size: the static allocation.
    pub provisioned: Allocation,
    /// The domain's maximum (what resizing may grow it to).
    pub limits: Allocation,
    /// CPU used per step, cores (the VM leaves when its trace ends).
    pub cpu: Vec<f32>,
    /// Memory in use per step, MiB.
    pub memory: Vec<f32>,
}

impl SizedVm {
    fn alive(&self, t: usize) -> bool {
        t < self.cpu.len()
    }

    fn censored(&self, t: usize) -> (bool, bool) {
        (self.cpu[t] as f64 >= CENSORED_AT * self.provisioned.cpu_cores, self.memory[t] as f64 >= CENSORED_AT * self.provisioned.memory_mib)
    }
}

/// The VMs, their hosts (first fit by provisioned size, no overcommit) and the steps.
#[derive(Clone, Debug)]
pub struct SizingScenario {
    pub name: String,
    pub vms: Vec<SizedVm>,
    pub hosts: Vec<Vec<usize>>,
    pub host_capacity: Allocation,
    pub steps: usize,
    pub start_epoch_s: u64,
}

impl SizingScenario {
    /// A Bitbrains-layout folder; at most `max_vms` VMs (in file order) and `max_steps` steps
    /// (default: the median trace length, as the placement replay; VMs whose trace is shorter
    /// leave when it ends).
    pub fn bitbrains(dir: &std::path::Path, max_vms: Option<usize>, max_steps: Option<usize>) -> Result<SizingScenario, ScenarioError> {
        let set = presage_traces::load_dir(dir, Some(TraceFormat::Bitbrains), Selection::default(), None)?;
        let mut traces = set.vms;
        if let Some(n) = max_vms {
            traces.truncate(n);
        }
        let mut lengths: Vec<usize> = traces.iter().map(|t| t.len()).collect();
        lengths.sort_unstable();
        let median = lengths.get(lengths.len() / 2).copied().unwrap_or(0);
        let steps = max_steps.map_or(median, |m| m.min(lengths.last().copied().unwrap_or(0)));
        if steps < 2 {
            return Err(ScenarioError::Invalid { dir: dir.into(), what: "the traces need at least two samples".into() });
        }
        let start_epoch_s = traces.iter().filter_map(|t| t.start_epoch_s).min().unwrap_or(0);
        let vms = traces
            .iter()
            .map(|t| {
                let cores = (t.spec.vcpus.max(1) as f64).min(HOST_CORES);
                let mem = (t.spec.memory_bytes as f64 / 1048576.0).clamp(256.0, HOST_MEMORY_MIB - HOST_MEMORY_RESERVE_MIB);
                SizedVm {
                    name: t.name.clone(),
                    provisioned: Allocation::new(cores, mem),
                    limits: Allocation::new(
                        (cores * DOMAIN_HEADROOM).min(HOST_CORES),
                        (mem * DOMAIN_HEADROOM).min(HOST_MEMORY_MIB - HOST_MEMORY_RESERVE_MIB),
                    ),
                    cpu: t.cpu_series().iter().take(steps).map(|u| u * cores as f32).collect(),
                    memory: t.memory_kb_series().iter().take(steps).map(|k| (*k as f64 / 1024.0).min(mem) as f32).collect(),
                }
            })
            .collect::<Vec<_>>();
        Ok(SizingScenario::assemble(set.name, vms, steps, start_epoch_s))
    }

    /// Places `vms` first fit (largest first) on as many hosts as they need.
    pub fn assemble(name: String, vms: Vec<SizedVm>, steps: usize, start_epoch_s: u64) -> SizingScenario {
        let cap = Allocation::new(HOST_CORES, HOST_MEMORY_MIB - HOST_MEMORY_RESERVE_MIB);
        let mut order: Vec<usize> = (0..vms.len()).collect();
        order.sort_by(|a, b| vms[*b].provisioned.cpu_cores.total_cmp(&vms[*a].provisioned.cpu_cores).then(a.cmp(b)));
        let mut hosts: Vec<(Allocation, Vec<usize>)> = Vec::new();
        for i in order {
            let p = vms[i].provisioned;
            match hosts
                .iter_mut()
                .find(|(used, _)| used.cpu_cores + p.cpu_cores <= cap.cpu_cores && used.memory_mib + p.memory_mib <= cap.memory_mib)
            {
                Some((used, members)) => {
                    *used = used.plus(p);
                    members.push(i);
                }
                None => hosts.push((p, vec![i])),
            }
        }
        SizingScenario {
            name,
            vms,
            hosts: hosts.into_iter().map(|(_, m)| m).collect(),
            host_capacity: Allocation::new(HOST_CORES, HOST_MEMORY_MIB),
            steps,
            start_epoch_s,
        }
    }
}

/// What one sizing method did over the replay.
#[derive(Clone, Debug, Serialize)]
pub struct SizingReport {
    pub sizing: SizingMethod,
    pub trace: String,
    pub vms: usize,
    pub hosts: usize,
    pub steps: usize,
    /// CPU allocated but unused, % of CPU allocated (VM-steps).
    pub cpu_slack_pct: f64,
    pub mem_slack_pct: f64,
    /// VM-steps whose demand reached above the allocation (CPU or memory), %: uncensored demand
    /// above it, or a censored sample with the allocation at most the cap.
    pub underprovisioned_pct: f64,
    /// The part of `underprovisioned_pct` from censored samples.
    pub underprovisioned_censored_pct: f64,
    /// VM-steps with a censored sample (the trace's VM at its provisioned cap), %.
    pub censored_pct: f64,
    /// Censored VM-steps where the method gave more than the cap (demand unknown), %.
    pub censored_unknown_pct: f64,
    /// Lender-steps where a lender's demand exceeded what it kept, % of lender-steps.
    pub lender_harm_pct: f64,
    pub resize_actions_per_vm_hour: f64,
    pub lease_grants_per_vm_hour: f64,
    /// Leases the agents took back before their deadline because the lender needed them.
    pub leases_revoked_early: u64,
    /// Leases that outlived their deadline (must be 0).
    pub lease_deadline_overruns: u64,
    /// Host-steps where the VMs were given more than the host has (must be 0 for presage; the
    /// static and VPA methods are not held to it, and report it).
    pub host_overcommits: u64,
    /// Resizes a host could not admit at once (re-checked every step).
    pub resizes_deferred: u64,
    pub forecaster: Option<String>,
    pub wall_s: f64,
}

#[derive(Default)]
struct Tally {
    alloc_cpu: f64,
    unused_cpu: f64,
    alloc_mem: f64,
    unused_mem: f64,
    vm_steps: u64,
    under: u64,
    under_censored: u64,
    censored: u64,
    censored_unknown: u64,
    lender_steps: u64,
    lender_harm: u64,
    resizes: u64,
    grants: u64,
    revoked_early: u64,
    overruns: u64,
    overcommits: u64,
    deferred: u64,
}

impl Tally {
    fn judge(&mut self, vm: &SizedVm, t: usize, given: Allocation) {
        let (cpu, mem) = (vm.cpu[t] as f64, vm.memory[t] as f64);
        self.alloc_cpu += given.cpu_cores;
        self.unused_cpu += (given.cpu_cores - cpu).max(0.0);
        self.alloc_mem += given.memory_mib;
        self.unused_mem += (given.memory_mib - mem).max(0.0);
        self.vm_steps += 1;
        let (cc, mc) = vm.censored(t);
        if cc || mc {
            self.censored += 1;
        }
        let short = |censored: bool, demand: f64, given: f64, cap: f64| -> (bool, bool) {
            if censored { (given <= cap + 1e-9, given > cap + 1e-9) } else { (demand > given + 1e-6, false) }
        };
        let (c_short, c_unknown) = short(cc, cpu, given.cpu_cores, vm.provisioned.cpu_cores);
        let (m_short, m_unknown) = short(mc, mem, given.memory_mib, vm.provisioned.memory_mib);
        if c_short || m_short {
            self.under += 1;
            if (c_short && cc) || (m_short && mc) {
                self.under_censored += 1;
            }
        } else if c_unknown || m_unknown {
            self.censored_unknown += 1;
        }
    }
}

/// VPA's recommender, as the baseline runs it per VM and resource: a histogram with buckets
/// growing 5 % from `first`, each sample's weight doubling every `half_life` steps (so older
/// samples decay), the target its p90 + 15 %.
struct DecayingHistogram {
    first: f64,
    weights: Vec<f64>,
    total: f64,
    scale: f64,
}

const VPA_HALF_LIFE_STEPS: f64 = 24.0 * 3600.0 / STEP_S as f64;

impl DecayingHistogram {
    fn new(first: f64, max: f64) -> DecayingHistogram {
        let n = ((max / first).ln() / 1.05f64.ln()).ceil() as usize + 2;
        DecayingHistogram { first, weights: vec![0.0; n], total: 0.0, scale: 1.0 }
    }

    fn add(&mut self, v: f64) {
        let i = if v <= self.first { 0 } else { (((v / self.first).ln() / 1.05f64.ln()).ceil() as usize).min(self.weights.len() - 1) };
        self.weights[i] += self.scale;
        self.total += self.scale;
        // Newer samples weigh more; renormalise before the numbers grow large.
        self.scale *= 2f64.powf(1.0 / VPA_HALF_LIFE_STEPS);
        if self.scale > 1e12 {
            self.weights.iter_mut().for_each(|w| *w /= self.scale);
            self.total /= self.scale;
            self.scale = 1.0;
        }
    }

    fn quantile(&self, p: f64) -> Option<f64> {
        if self.total <= 0.0 {
            return None;
        }
        let mut acc = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            acc += w;
            if acc >= p * self.total {
                return Some(self.first * 1.05f64.powi(i as i32));
            }
        }
        Some(self.first * 1.05f64.powi(self.weights.len() as i32 - 1))
    }
}

/// Runs one sizing method over the scenario. `policies`: presage's rules (ignored by the others);
/// `forecast_models`: the CPU and memory models the simulated agents forecast with.
pub fn run(
    scenario: &SizingScenario,
    method: SizingMethod,
    policies: &SizingPolicies,
    forecast_models: (Option<&std::path::Path>, Option<&std::path::Path>),
    mut on_step: impl FnMut(usize, usize),
) -> SizingReport {
    let started = Instant::now();
    let n = scenario.vms.len();
    let mut tally = Tally::default();
    let mut allocated: Vec<Allocation> = scenario.vms.iter().map(|v| v.provisioned).collect();
    let rules: Vec<_> = scenario.vms.iter().map(|v| policies.rules_for(&v.name)).collect();
    // VPA's state.
    let mut vpa: Vec<(DecayingHistogram, DecayingHistogram)> = match method {
        SizingMethod::Vpa => scenario
            .vms
            .iter()
            .map(|v| {
                (DecayingHistogram::new(0.01, v.provisioned.cpu_cores * 2.0), DecayingHistogram::new(16.0, v.provisioned.memory_mib * 2.0))
            })
            .collect(),
        _ => Vec::new(),
    };
    // presage's state: forecasters, per-VM resize memory, each host's lease book.
    let presage = method == SizingMethod::Presage;
    let mut cpu_fc: Option<FleetForecaster<usize>> = presage.then(|| FleetForecaster::load(forecast_models.0));
    let mut mem_fc: Option<FleetForecaster<usize>> = presage.then(|| FleetForecaster::load(forecast_models.1));
    let mut cpu_series: Vec<Vec<f32>> = vec![Vec::new(); n];
    let mut mem_series: Vec<Vec<f32>> = vec![Vec::new(); n];
    let mut memory: Vec<SizingMemory> = vec![SizingMemory::default(); n];
    let mut books: Vec<LeaseBook> = vec![LeaseBook::default(); scenario.hosts.len()];
    let mut cpu_f: Vec<Option<Forecast>> = vec![None; n];
    let mut mem_f: Vec<Option<Forecast>> = vec![None; n];
    let cap = scenario.host_capacity;
    for t in 0..scenario.steps {
        let now_ms = (scenario.start_epoch_s + t as u64 * STEP_S) * 1000;
        let live: Vec<Vec<usize>> =
            scenario.hosts.iter().map(|m| m.iter().copied().filter(|&i| scenario.vms[i].alive(t)).collect()).collect();
        match method {
            SizingMethod::Static => {}
            SizingMethod::Vpa if t > 0 => {
                for (i, v) in scenario.vms.iter().enumerate().filter(|(_, v)| v.alive(t)) {
                    let (hc, hm) = &mut vpa[i];
                    let (Some(c), Some(m)) = (hc.quantile(0.9), hm.quantile(0.9)) else { continue };
                    let r = &rules[i];
                    let target = Allocation::new(
                        (c * 1.15).clamp(r.min_cpu_cores, v.limits.cpu_cores),
                        (m * 1.15).clamp(r.min_memory_mib, v.limits.memory_mib),
                    );
                    // VPA's updater acts when the target leaves a 10 % band around what is set.
                    let off = |a: f64, b: f64| (a - b).abs() > 0.1 * b;
                    if off(target.cpu_cores, allocated[i].cpu_cores) || off(target.memory_mib, allocated[i].memory_mib) {
                        allocated[i] = target;
                        tally.resizes += 1;
                    }
                }
            }
            SizingMethod::Vpa => {}
            SizingMethod::Presage => {
                let alive = |i: usize| scenario.vms[i].alive(t);
                forecast_all(cpu_fc.as_mut().unwrap(), &cpu_series, alive, t, scenario.start_epoch_s, &mut cpu_f);
                forecast_all(mem_fc.as_mut().unwrap(), &mem_series, alive, t, scenario.start_epoch_s, &mut mem_f);
                // Sizing reads forecasts as fractions of the domain's maximum.
                for (i, v) in scenario.vms.iter().enumerate() {
                    let rescale = |f: &mut Option<Forecast>, k: f64| {
                        if let Some(f) = f.as_mut() {
                            f.q.iter_mut().flatten().for_each(|x| *x = (*x as f64 * k) as f32);
                        }
                    };
                    rescale(&mut cpu_f[i], v.provisioned.cpu_cores / v.limits.cpu_cores);
                    rescale(&mut mem_f[i], v.provisioned.memory_mib / v.limits.memory_mib);
                }
                for (h, members) in live.iter().enumerate() {
                    presage_host_cycle(
                        scenario,
                        members,
                        &rules,
                        &mut allocated,
                        &mut memory,
                        &mut books[h],
                        &cpu_f,
                        &mem_f,
                        t,
                        now_ms,
                        &mut tally,
                    );
                }
            }
        }
        // Judge the step.
        for (h, members) in live.iter().enumerate() {
            let book = &books[h];
            let mut given = Allocation::default();
            for &i in members {
                let v = &scenario.vms[i];
                let eff = if presage { book.effective(&v.name, allocated[i], now_ms) } else { allocated[i] };
                given = given.plus(eff);
                tally.judge(v, t, eff);
                let (lent, _) = book.flows(&v.name, now_ms);
                if lent.cpu_cores > 0.0 {
                    tally.lender_steps += 1;
                    if v.cpu[t] as f64 > eff.cpu_cores + 1e-6 {
                        tally.lender_harm += 1;
                    }
                }
            }
            if presage {
                let reserve_leases = book.from_host(now_ms).memory_mib;
                given.memory_mib += HOST_MEMORY_RESERVE_MIB - reserve_leases;
                tally.overruns += book.entries().iter().filter(|l| !l.live(now_ms)).count() as u64;
            }
            if given.cpu_cores > cap.cpu_cores + 1e-6 || given.memory_mib > cap.memory_mib + 1e-6 {
                tally.overcommits += 1;
            }
        }
        // What the step showed becomes history.
        for (i, v) in scenario.vms.iter().enumerate().filter(|(_, v)| v.alive(t)) {
            if let Some((hc, hm)) = vpa.get_mut(i) {
                hc.add(v.cpu[t] as f64);
                hm.add(v.memory[t] as f64);
            }
            if presage {
                // The agents forecast in units of the size the VM was given at boot (its
                // provisioned size), the scale the models were trained on.
                let cf = v.cpu[t] / v.provisioned.cpu_cores as f32;
                let mf = v.memory[t] / v.provisioned.memory_mib as f32;
                cpu_fc.as_mut().unwrap().observe(&i, t as u64, cf);
                mem_fc.as_mut().unwrap().observe(&i, t as u64, mf);
                cpu_series[i].push(cf);
                mem_series[i].push(mf);
                // The forecasters read a week and a little.
                for s in [&mut cpu_series[i], &mut mem_series[i]] {
                    if s.len() > 2100 {
                        s.drain(..100);
                    }
                }
            }
        }
        // VMs whose trace ends leave: their forecasters' state goes.
        if presage && scenario.vms.iter().any(|v| v.cpu.len() == t + 1) {
            for fc in [cpu_fc.as_mut(), mem_fc.as_mut()].into_iter().flatten() {
                fc.retain(|&i| scenario.vms[i].alive(t + 1));
            }
        }
        on_step(t + 1, scenario.steps);
    }
    let hours = tally.vm_steps as f64 * STEP_S as f64 / 3600.0;
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
    SizingReport {
        sizing: method,
        trace: scenario.name.clone(),
        vms: n,
        hosts: scenario.hosts.len(),
        steps: scenario.steps,
        cpu_slack_pct: 100.0 * tally.unused_cpu / tally.alloc_cpu.max(1e-9),
        mem_slack_pct: 100.0 * tally.unused_mem / tally.alloc_mem.max(1e-9),
        underprovisioned_pct: pct(tally.under, tally.vm_steps),
        underprovisioned_censored_pct: pct(tally.under_censored, tally.vm_steps),
        censored_pct: pct(tally.censored, tally.vm_steps),
        censored_unknown_pct: pct(tally.censored_unknown, tally.vm_steps),
        lender_harm_pct: pct(tally.lender_harm, tally.lender_steps),
        resize_actions_per_vm_hour: tally.resizes as f64 / hours.max(1e-9),
        lease_grants_per_vm_hour: tally.grants as f64 / hours.max(1e-9),
        leases_revoked_early: tally.revoked_early,
        lease_deadline_overruns: tally.overruns,
        host_overcommits: tally.overcommits,
        resizes_deferred: tally.deferred,
        forecaster: cpu_fc.as_ref().map(|f| format!("cpu {}; memory {}", f.status(), mem_fc.as_ref().map_or("", |m| m.status()))),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// The most of `series` used in any step of the `seconds` before `t`.
fn peak_over(series: &[f32], t: usize, seconds: u64) -> f64 {
    let from = t.saturating_sub((seconds / STEP_S) as usize);
    series[from..t].iter().fold(0.0f64, |m, v| m.max(*v as f64))
}

/// The most `vm` used in any step of its rules' peak lookbacks before `t`.
fn recent_peak(vm: &SizedVm, r: &presage_decide::sizing::rules::SizingRules, t: usize) -> Allocation {
    Allocation::new(peak_over(&vm.cpu, t, r.cpu_peak_lookback_s), peak_over(&vm.memory, t, r.memory_peak_lookback_s))
}

/// Forecasts step `t` onwards for every VM still running (`alive`), from its history before `t`.
fn forecast_all(
    fc: &mut FleetForecaster<usize>,
    series: &[Vec<f32>],
    alive: impl Fn(usize) -> bool,
    t: usize,
    start_s: u64,
    out: &mut [Option<Forecast>],
) {
    let min = fc.min_history();
    let mut keys = Vec::new();
    let mut requests = Vec::new();
    for (i, s) in series.iter().enumerate() {
        if s.len() >= min && alive(i) {
            keys.push(i);
            requests.push(SeriesRequest {
                key: i,
                ctx: SeriesContext { history: s, next_time_s: start_s + t as u64 * STEP_S },
                first_step: t as u64,
            });
        }
    }
    out.iter_mut().for_each(|f| *f = None);
    for (i, f) in keys.into_iter().zip(fc.forecast(&requests)) {
        out[i] = f;
    }
}

/// One agent cycle on one host, as the agent and the coordinator's broker run it: leases due
/// end, the resize rule runs (decreases first, increases admitted by the host's room, else
/// deferred), then the broker lends to VMs still about to exceed what they may use.
#[allow(clippy::too_many_arguments)]
fn presage_host_cycle(
    s: &SizingScenario,
    members: &[usize],
    rules: &[presage_decide::sizing::rules::SizingRules],
    allocated: &mut [Allocation],
    memory: &mut [SizingMemory],
    book: &mut LeaseBook,
    cpu_f: &[Option<Forecast>],
    mem_f: &[Option<Forecast>],
    t: usize,
    now_ms: u64,
    tally: &mut Tally,
) {
    let name = |i: usize| s.vms[i].name.as_str();
    let index_of = |vm: &str| members.iter().copied().find(|&i| s.vms[i].name == vm);
    let last =
        |i: usize| if t == 0 { Allocation::default() } else { Allocation::new(s.vms[i].cpu[t - 1] as f64, s.vms[i].memory[t - 1] as f64) };
    // 1. Leases that are due end (deadline, or the lender's need over the lease horizon: what the
    // broker would have it keep now).
    let broker_vm = |i: usize, allocated: &[Allocation]| BrokerVm {
        vm_id: name(i),
        rules: &rules[i],
        allocated: allocated[i],
        limits: s.vms[i].limits,
        cpu_forecast: cpu_f[i].as_ref(),
        cpu_used: last(i).cpu_cores,
        cpu_recent_peak: peak_over(&s.vms[i].cpu, t, rules[i].lend_lookback_s),
    };
    let need = |vm: &str, res: LeaseResource| -> Option<f64> {
        let i = index_of(vm)?;
        match res {
            LeaseResource::Cpu => cpu_f[i].as_ref().map(|_| broker_vm(i, allocated).keep().cpu_cores),
            LeaseResource::Memory => None,
        }
    };
    for (l, end) in
        book.due(now_ms, |vm| index_of(vm).is_some(), |vm| index_of(vm).map_or_else(Allocation::default, |i| allocated[i]), need)
    {
        if !matches!(end, presage_decide::sizing::lease::LeaseEnd::Deadline) {
            tally.revoked_early += 1;
        }
        book.remove(&l.id);
    }
    // 2. The coordinator's pass (resizes, decreases first, then the broker on what they leave);
    // the agent applies the resizes it admitted and admits each lease by the same rule.
    let vms: Vec<SizingVm<'_>> = members
        .iter()
        .map(|&i| SizingVm {
            vm_id: name(i),
            rules: &rules[i],
            limits: s.vms[i].limits,
            allocated: allocated[i],
            cpu_forecast: cpu_f[i].as_ref(),
            memory_forecast: mem_f[i].as_ref(),
            used: last(i),
            recent_peak: recent_peak(&s.vms[i], &rules[i], t),
            cpu_lend_peak: peak_over(&s.vms[i].cpu, t, rules[i].lend_lookback_s),
            // As the coordinator's pass: what the guest has in use (the traces record no OOMs).
            resident_mib: last(i).memory_mib,
            oom: false,
        })
        .collect();
    let mut mem: Vec<SizingMemory> = members.iter().map(|&i| std::mem::take(&mut memory[i])).collect();
    let host = SizingHost { host_id: "h", capacity: s.host_capacity, memory_reserve_mib: HOST_MEMORY_RESERVE_MIB, vms, leases: &*book };
    let plan = plan_host(&host, &mut mem, now_ms, true);
    drop(host);
    for (&i, m) in members.iter().zip(mem) {
        memory[i] = m;
    }
    for d in &plan.resizes {
        let i = index_of(&d.vm_id).expect("a member");
        allocated[i] = d.to;
        tally.resizes += 1;
    }
    tally.deferred += plan.deferred.len() as u64;
    // The agent admits each lease against the allocations the resizes left.
    let parties: Vec<LeaseParty> = members.iter().map(|&i| broker_vm(i, allocated).party()).collect();
    let lease_host = LeaseHost { capacity: s.host_capacity, memory_reserve_mib: HOST_MEMORY_RESERVE_MIB, vms: &parties };
    for l in plan.grants {
        if book.admit(l, &lease_host, now_ms).is_ok() {
            tally.grants += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, cores: f64, cpu: Vec<f32>) -> SizedVm {
        let n = cpu.len();
        SizedVm {
            name: name.into(),
            provisioned: Allocation::new(cores, 4096.0),
            limits: Allocation::new(cores * DOMAIN_HEADROOM, 8192.0),
            cpu,
            memory: vec![1024.0; n],
        }
    }

    /// One full host: four idle VMs and four that burst to their provisioned cap for an hour in
    /// every four (pinned there: the trace is censored), then fall back.
    fn scenario(steps: usize) -> SizingScenario {
        let mut vms = Vec::new();
        for k in 0..4 {
            vms.push(vm(&format!("idle-{k}"), 4.0, (0..steps).map(|t| 0.2 + 0.05 * ((t + k) % 3) as f32).collect()));
        }
        for k in 0..4 {
            let phase = k * 12;
            vms.push(vm(&format!("burst-{k}"), 4.0, (0..steps).map(|t| if (t + phase) % 48 < 12 { 4.0 } else { 0.5 }).collect()));
        }
        SizingScenario::assemble("synthetic".into(), vms, steps, 1_372_629_600)
    }

    #[test]
    fn presage_borrows_without_overcommitting_and_leases_end_by_their_deadline() {
        let s = scenario(600);
        assert_eq!(s.hosts.len(), 1, "eight 4-core VMs fill one 32-core host");
        let p = SizingPolicies::default();
        let fixed = run(&s, SizingMethod::Static, &p, (None, None), |_, _| {});
        let presage = run(&s, SizingMethod::Presage, &p, (None, None), |_, _| {});
        assert_eq!(presage.host_overcommits, 0);
        assert_eq!(presage.lease_deadline_overruns, 0);
        assert!(presage.lease_grants_per_vm_hour > 0.0, "the bursting VMs borrow: {presage:?}");
        assert!(presage.lender_harm_pct < 1.0, "lenders keep their recent peak: {presage:?}");
        // Static leaves the idle VMs' cores unused and pins the bursting ones at their cap.
        assert!(presage.cpu_slack_pct < fixed.cpu_slack_pct, "{presage:?} vs {fixed:?}");
        assert!(presage.underprovisioned_pct < fixed.underprovisioned_pct, "{presage:?} vs {fixed:?}");
        assert!(fixed.censored_pct > 10.0 && fixed.underprovisioned_censored_pct == fixed.censored_pct, "{fixed:?}");
        assert!(presage.censored_unknown_pct > 0.0, "presage grows the pinned VMs past their cap: {presage:?}");
    }

    #[test]
    fn the_vpa_histogram_decays_old_samples() {
        let mut h = DecayingHistogram::new(0.01, 16.0);
        for _ in 0..288 {
            h.add(4.0);
        }
        let p90 = h.quantile(0.9).unwrap();
        assert!((3.8..4.3).contains(&p90), "{p90}");
        // A day of a lower level: samples half as heavy as new ones; after three days of it
        // the old level is below the 10 % tail.
        for _ in 0..3 * 288 {
            h.add(1.0);
        }
        let p90 = h.quantile(0.9).unwrap();
        assert!((0.95..1.1).contains(&p90), "{p90}");
        assert_eq!(DecayingHistogram::new(0.01, 1.0).quantile(0.9), None);
    }
}
