//! The classic consolidation policies of Beloglazov & Buyya (CCPE 2012), as CloudSim 3 runs them:
//! an overload detector (static threshold, IQR, MAD, local regression), minimum-migration-time
//! VM selection, power-aware best-fit decreasing placement, and emptying of the least-used hosts.
//!
//! These are presage's baselines. Their quirks are kept on purpose, because the point is to
//! reproduce CloudSim's published figures: a candidate's power rise is measured from its power at
//! the last observation; VMs planned away from an under-used host still count on it; the hosts
//! that receive VMs from overloaded hosts may still be chosen as under-used in the same pass;
//! under-used hosts are ranked by their load at the last observation.

use std::fmt;

use super::{ConsolidationPolicy, FleetView, HISTORY_LEN, Migration, MoveReason, stats};

/// CloudSim's static threshold for a host with too little history for the adaptive detectors.
pub const FALLBACK_THRESHOLD: f64 = 0.7;
/// Samples the IQR and MAD detectors need before they trust the history.
const MIN_HISTORY_ROBUST: usize = 12;
/// Samples the local-regression detectors fit.
const REGRESSION_WINDOW: usize = 10;
/// CloudSim's scheduling interval, which the regression predicts in.
const INTERVAL_S: f64 = 300.0;

/// A host overload detector with its parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Detector {
    /// Overloaded when demand exceeds the threshold (fraction of capacity).
    Thr(f64),
    /// Threshold `1 - s * IQR(history)`.
    Iqr(f64),
    /// Threshold `1 - s * MAD(history)`.
    Mad(f64),
    /// Local regression over the last 10 samples, extrapolated over one migration, times `s`, ≥ 1.
    Lr(f64),
    /// Robust local regression. CloudSim's robust variant ends up with the same estimates as
    /// the plain one (its weights are only applied when 40 % of them are zero, which tricube
    /// weights never are), so this detector equals [`Detector::Lr`], as in CloudSim's figures.
    Lrr(f64),
}

impl Detector {
    pub fn parameter(self) -> f64 {
        match self {
            Detector::Thr(p) | Detector::Iqr(p) | Detector::Mad(p) | Detector::Lr(p) | Detector::Lrr(p) => p,
        }
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Detector::Thr(_) => "THR",
            Detector::Iqr(_) => "IQR",
            Detector::Mad(_) => "MAD",
            Detector::Lr(_) => "LR",
            Detector::Lrr(_) => "LRR",
        })
    }
}

/// A classic policy: migrating (detector + MMT + PABFD) or static first fit (DVFS, NPA).
pub struct ClassicPolicy {
    name: String,
    /// `None`: never migrate, place first fit.
    detector: Option<Detector>,
}

impl ClassicPolicy {
    pub fn migrating(detector: Detector) -> ClassicPolicy {
        ClassicPolicy { name: format!("{detector}-MMT-{}", detector.parameter()), detector: Some(detector) }
    }

    pub fn static_first_fit(name: String) -> ClassicPolicy {
        ClassicPolicy { name, detector: None }
    }
}

impl ConsolidationPolicy for ClassicPolicy {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn place(&mut self, fleet: &FleetView<'_>, vm: usize) -> Option<usize> {
        let plan = Plan::new(fleet);
        match self.detector {
            None => (0..fleet.hosts.len()).find(|&h| plan.suitable(h, vm)),
            Some(d) => {
                let mut plan = plan;
                plan.find_host(d, vm, &vec![false; fleet.hosts.len()])
            }
        }
    }

    fn optimise(&mut self, fleet: &FleetView<'_>) -> Vec<Migration> {
        let Some(detector) = self.detector else { return Vec::new() };
        let mut plan = Plan::new(fleet);
        let hosts = fleet.hosts.len();

        // 1. Overloaded hosts, in host order.
        let overloaded: Vec<usize> = (0..hosts).filter(|&h| plan.overloaded(detector, h)).collect();
        let mut overloaded_set = vec![false; hosts];
        for &h in &overloaded {
            overloaded_set[h] = true;
        }

        // 2. Take VMs off them (minimum migration time first) until they are no longer overloaded.
        let mut to_move: Vec<(usize, usize)> = Vec::new();
        for &h in &overloaded {
            while let Some(vm) = plan.min_migration_time_vm(h) {
                to_move.push((vm, h));
                plan.remove(vm, h);
                if !plan.overloaded(detector, h) {
                    break;
                }
            }
        }

        // 3. Place them, largest demand first, never back on an overloaded host.
        let mut migrations = Vec::new();
        sort_by_demand_desc(fleet, &mut to_move);
        for (vm, from) in to_move {
            if let Some(to) = plan.find_host(detector, vm, &overloaded_set) {
                plan.add(vm, to);
                migrations.push(Migration { vm, to, reason: MoveReason::Overload(from) });
            }
        }

        // 4. Empty under-used hosts, least used first, when all of their VMs fit elsewhere.
        let mut excluded_as_source = overloaded_set.clone();
        let mut excluded_count = overloaded.len();
        for (host, excluded) in fleet.hosts.iter().zip(excluded_as_source.iter_mut()) {
            if host.observed_utilisation() == 0.0 && !*excluded {
                *excluded = true;
                excluded_count += 1;
            }
        }
        let mut excluded_as_target = excluded_as_source.clone();

        let mut by_use: Vec<usize> = (0..hosts).collect();
        by_use.sort_by(|a, b| fleet.hosts[*a].observed_utilisation().total_cmp(&fleet.hosts[*b].observed_utilisation()));
        let mut cursor = 0;
        loop {
            if excluded_count >= hosts {
                break;
            }
            // The least-used eligible host. Eligibility only ever shrinks within a pass, so a
            // cursor over the hosts sorted by observed use finds what a full scan would.
            let mut found = None;
            while cursor < by_use.len() {
                let h = by_use[cursor];
                let u = fleet.hosts[h].observed_utilisation();
                if u >= 1.0 {
                    cursor = by_use.len();
                    break;
                }
                if !excluded_as_source[h] && u > 0.0 && !plan.all_migrating_out_or_any_in(h) {
                    found = Some(h);
                    break;
                }
                cursor += 1;
            }
            let Some(under) = found else { break };
            excluded_as_source[under] = true;
            excluded_count += 1;
            excluded_as_target[under] = true;

            let mut vms: Vec<(usize, usize)> =
                plan.host_vms[under].iter().copied().filter(|&v| !fleet.vms[v].in_migration).map(|v| (v, under)).collect();
            if vms.is_empty() {
                continue;
            }
            sort_by_demand_desc(fleet, &mut vms);
            let mut placed: Vec<Migration> = Vec::new();
            for (vm, _) in vms {
                match plan.find_host(detector, vm, &excluded_as_target) {
                    Some(to) => {
                        plan.add(vm, to);
                        placed.push(Migration { vm, to, reason: MoveReason::Underload(under) });
                    }
                    None => {
                        for m in placed.drain(..) {
                            plan.remove(m.vm, m.to);
                        }
                        break;
                    }
                }
            }
            for m in &placed {
                if !excluded_as_source[m.to] {
                    excluded_as_source[m.to] = true;
                    excluded_count += 1;
                }
            }
            migrations.extend(placed);
        }
        migrations
    }
}

/// Stable sort, largest current demand first (CloudSim's `sortByCpuUtilization`).
fn sort_by_demand_desc(fleet: &FleetView<'_>, vms: &mut [(usize, usize)]) {
    vms.sort_by(|a, b| fleet.vms[b.0].demand_mips.total_cmp(&fleet.vms[a.0].demand_mips));
}

/// The tentative allocation a policy pass works on: which VMs each host would hold.
struct Plan<'f, 'a> {
    fleet: &'f FleetView<'a>,
    host_vms: Vec<Vec<usize>>,
    /// CPU still unallocated on each host (0 when oversubscribed), as the hypervisor's scheduler
    /// would report it for the planned VMs.
    available: Vec<f64>,
    /// CPU the planned VMs would hold (counting all of a VM still migrating in).
    allocated: Vec<f64>,
    memory_used: Vec<f64>,
    /// Each host's power at its last observed load.
    power_now: Vec<f64>,
}

impl<'f, 'a> Plan<'f, 'a> {
    fn new(fleet: &'f FleetView<'a>) -> Plan<'f, 'a> {
        let host_vms: Vec<Vec<usize>> = fleet.hosts.iter().map(|h| h.vms.clone()).collect();
        let n = host_vms.len();
        let power_now = fleet.hosts.iter().map(|h| h.power.watts_at(h.observed_utilisation())).collect();
        let mut plan = Plan { fleet, available: vec![0.0; n], allocated: vec![0.0; n], memory_used: vec![0.0; n], power_now, host_vms };
        for h in 0..plan.host_vms.len() {
            plan.recompute(h);
        }
        plan
    }

    /// What the VM asks of a host's scheduler: its demand with each vCPU capped at one core,
    /// a tenth of it while it is still migrating in.
    fn scheduler_request(&self, h: usize, vm: usize) -> f64 {
        let v = &self.fleet.vms[vm];
        let per_pe = (self.request_of(h, vm) / v.pes as f64).min(self.fleet.hosts[h].pe_mips);
        let r = per_pe * v.pes as f64;
        if self.fleet.hosts[h].is_migrating_in(vm) { r * 0.1 } else { r }
    }

    /// Recomputes what the host's scheduler would allocate to the planned VMs: each its request
    /// while they fit, all scaled down in proportion (rounded down) once they do not.
    /// The request a host's scheduler would work with: what it already holds for its own VM,
    /// the current demand for a VM planned onto it.
    fn request_of(&self, h: usize, vm: usize) -> f64 {
        let v = &self.fleet.vms[vm];
        if v.host == Some(h) && !self.fleet.hosts[h].is_migrating_in(vm) { v.scheduled_mips } else { v.demand_mips }
    }

    fn recompute(&mut self, h: usize) {
        let host = &self.fleet.hosts[h];
        let mut available = host.total_mips;
        let mut over = false;
        let mut required = 0.0;
        let mut mem = 0.0;
        for &vm in &self.host_vms[h] {
            let r = self.scheduler_request(h, vm);
            required += r;
            if !over && available >= r {
                available -= r;
            } else if r > 0.0 {
                over = true;
            }
            mem += self.fleet.vms[vm].memory_request_mb;
        }
        let scaling = if over { host.total_mips / required } else { 1.0 };
        let mut allocated = 0.0;
        for &vm in &self.host_vms[h] {
            let v = &self.fleet.vms[vm];
            let per_pe = (self.request_of(h, vm) / v.pes as f64).min(host.pe_mips);
            let mig_in = host.is_migrating_in(vm);
            let mig_out = v.in_migration && !mig_in;
            let a = match (over, mig_out, mig_in) {
                (false, true, _) => per_pe * 0.9,
                (false, false, true) => per_pe * 0.1,
                (false, false, false) => per_pe,
                (true, true, _) => (per_pe * scaling * 0.9).floor(),
                (true, false, true) => (per_pe * 0.1 * scaling).floor(),
                (true, false, false) => (per_pe * scaling).floor(),
            } * v.pes as f64;
            // A VM still migrating in will need the rest of its demand here soon.
            allocated += if mig_in { a + a * 0.9 / 0.1 } else { a };
        }
        self.available[h] = if over { 0.0 } else { available };
        self.allocated[h] = allocated;
        self.memory_used[h] = mem;
    }

    fn add(&mut self, vm: usize, h: usize) {
        self.host_vms[h].push(vm);
        self.recompute(h);
    }

    fn remove(&mut self, vm: usize, h: usize) {
        if let Some(i) = self.host_vms[h].iter().position(|v| *v == vm) {
            self.host_vms[h].remove(i);
            self.recompute(h);
        }
    }

    /// Whether `vm` fits on `h` now: each vCPU within a core, enough unallocated CPU, memory.
    fn suitable(&self, h: usize, vm: usize) -> bool {
        let host = &self.fleet.hosts[h];
        let v = &self.fleet.vms[vm];
        host.schedulable
            && host.pe_mips >= v.demand_mips / v.pes as f64
            && self.available[h] >= v.demand_mips
            && self.memory_used[h] + v.memory_request_mb <= host.memory_mb
    }

    fn demand(&self, h: usize) -> f64 {
        self.host_vms[h].iter().map(|&v| self.fleet.vms[v].demand_mips).sum()
    }

    /// The host's utilisation history (newest first), summed over its planned VMs, with the
    /// all-zero oldest end cut off.
    fn history(&self, h: usize) -> Vec<f64> {
        let host = &self.fleet.hosts[h];
        let mut sum = [0.0; HISTORY_LEN];
        for &vm in &self.host_vms[h] {
            let v = &self.fleet.vms[vm];
            let scale = v.capacity_mips() / host.total_mips;
            for (i, u) in v.history.as_slice().iter().enumerate() {
                sum[i] += u * scale;
            }
        }
        sum[..stats::len_without_zero_tail(&sum)].to_vec()
    }

    fn threshold_exceeded(&self, h: usize, threshold: f64) -> bool {
        self.demand(h) / self.fleet.hosts[h].total_mips > threshold
    }

    fn overloaded(&self, d: Detector, h: usize) -> bool {
        match d {
            Detector::Thr(t) => self.threshold_exceeded(h, t),
            Detector::Iqr(s) | Detector::Mad(s) => {
                let hist = self.history(h);
                if hist.len() < MIN_HISTORY_ROBUST {
                    return self.threshold_exceeded(h, FALLBACK_THRESHOLD);
                }
                let spread = if matches!(d, Detector::Iqr(_)) { stats::iqr(&hist) } else { stats::mad(&hist) };
                self.threshold_exceeded(h, 1.0 - s * spread)
            }
            Detector::Lr(s) | Detector::Lrr(s) => {
                let hist = self.history(h);
                if hist.len() < REGRESSION_WINDOW {
                    return self.threshold_exceeded(h, FALLBACK_THRESHOLD);
                }
                let oldest_first: Vec<f64> = hist[..REGRESSION_WINDOW].iter().rev().copied().collect();
                let Some((a, b)) = stats::ols_on_index(&oldest_first) else {
                    return self.threshold_exceeded(h, FALLBACK_THRESHOLD);
                };
                let host = &self.fleet.hosts[h];
                let max_ram = self.host_vms[h].iter().map(|&v| self.fleet.vms[v].ram_mb).fold(f64::MIN, f64::max);
                let intervals = (max_ram / host.migration_mb_per_s / INTERVAL_S).ceil();
                let predicted = (a + b * (REGRESSION_WINDOW as f64 + intervals)) * s;
                predicted >= 1.0
            }
        }
    }

    /// The planned VM with the least memory to copy, not already migrating.
    fn min_migration_time_vm(&self, h: usize) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut best_ram = f64::MAX;
        for &vm in &self.host_vms[h] {
            let v = &self.fleet.vms[vm];
            if v.in_migration {
                continue;
            }
            if v.ram_mb < best_ram {
                best_ram = v.ram_mb;
                best = Some(vm);
            }
        }
        best
    }

    fn all_migrating_out_or_any_in(&self, h: usize) -> bool {
        for &vm in &self.host_vms[h] {
            if !self.fleet.vms[vm].in_migration {
                return false;
            }
            if self.fleet.hosts[h].is_migrating_in(vm) {
                return true;
            }
        }
        true
    }

    /// Power-aware best fit: the suitable host whose power rises least from its load at the last
    /// observation to the planned load plus this VM; a host with load must not become overloaded.
    fn find_host(&mut self, d: Detector, vm: usize, excluded: &[bool]) -> Option<usize> {
        let fleet = self.fleet;
        let demand = fleet.vms[vm].demand_mips;
        let mut best = None;
        let mut min_power = f64::MAX;
        for (h, host) in fleet.hosts.iter().enumerate() {
            if excluded[h] || !self.suitable(h, vm) {
                continue;
            }
            let after = (self.allocated[h] + demand) / host.total_mips;
            let diff = host.power.watts_at(after) - self.power_now[h];
            if diff >= min_power {
                continue;
            }
            // Only a host that would win needs the (costlier) overload check.
            if self.allocated[h] != 0.0 {
                self.host_vms[h].push(vm);
                let over = self.overloaded(d, h);
                self.host_vms[h].pop();
                if over {
                    continue;
                }
            }
            min_power = diff;
            best = Some(h);
        }
        best
    }
}
