//! The optimiser over the live cluster (`presagectl optimise --cluster`): the cluster as the
//! agents last reported it becomes a [`Problem`] (the decision core's
//! [`presage_decide::optimise::cluster`]: each VM's size options from the peaks of its recent
//! use, costed by the risk that a peak exceeds them; each host costs one for being active;
//! moving a VM costs a little, more for more memory), the genetic optimiser improves the
//! current placement and sizing within a time limit (large clusters by decomposition), and the
//! answer is a plan: each resize and move with its reason, and the gain predicted per goal.
//! Applied, its resizes and moves become a staged rollout ([`crate::rollouts`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use presage_decide::optimise::cluster::{self, ClusterVm, SizingGoals, VmOptions};
use presage_decide::optimise::decompose::{DecomposeConfig, optimise_decomposed};
use presage_decide::optimise::genetic::{GeneticConfig, optimise};
use presage_decide::optimise::{Host, Problem, Solution, Tables};
use presage_protocol::pb;

use crate::config_versions::VmConfig;
use crate::state::ClusterState;

/// Recent samples per peak: the history is cut into windows of this many, each window's
/// largest use one peak of the distribution the sizes come from.
const SAMPLES_PER_PEAK: usize = 6;
/// Clusters of more hosts than this are optimised by decomposition.
const DECOMPOSE_ABOVE_HOSTS: usize = 64;

/// The cluster as the optimiser sees it, with what maps its indices back to names.
pub struct ClusterModel {
    pub problem: Problem,
    pub options: Vec<VmOptions>,
    pub hosts: Vec<String>,
    pub vms: Vec<String>,
}

/// Builds the model from every reachable host's last report (running VMs only).
pub fn model(state: &ClusterState, goals: &SizingGoals) -> Result<ClusterModel, cluster::ClusterError> {
    let mut hosts = Vec::new();
    let mut host_names = Vec::new();
    let mut vms = Vec::new();
    let mut vm_names = Vec::new();
    for h in state.hosts().filter(|h| h.reachable) {
        let index = hosts.len() as u32;
        let cap = &h.registration.capacity;
        hosts.push(Host { capacity: vec![cap.cpu_cores as f64, (cap.memory_bytes >> 20) as f64], active_cost: 1.0 });
        host_names.push(h.host_id.clone());
        for v in h.vms.values().filter(|v| v.state == pb::VmState::Running as i32) {
            let (vcpus, mib) = (v.vcpus.max(1) as f64, (v.memory_bytes >> 20) as f64);
            let (cores_given, mib_given) = h.vm_allocation(v);
            let size = vec![cores_given, mib_given];
            let points: Vec<&pb::UsagePoint> = h.usage_history.get(&v.vm_id).map(|q| q.iter().collect()).unwrap_or_default();
            let daily_peaks: Vec<Vec<f64>> = points
                .chunks(SAMPLES_PER_PEAK)
                .map(|w| {
                    let cpu = w.iter().map(|p| p.cpu_utilisation as f64 * vcpus).fold(0.0, f64::max);
                    let mem = w.iter().map(|p| p.memory_utilisation as f64 * mib).fold(0.0, f64::max);
                    vec![cpu, mem]
                })
                .collect();
            let resident = (v.memory_used_bytes >> 20) as f64;
            vms.push(ClusterVm {
                size,
                daily_peaks,
                floor: vec![0.1, resident.min(mib)],
                ceiling: vec![vcpus, mib],
                grain: vec![0.1, 64.0],
                host: Some(index),
                // Twenty moves cost as much as a host; a GiB more of memory to copy, a little more.
                move_cost: 0.05 + 0.005 * mib / 1024.0,
                weight: 1.0,
            });
            vm_names.push(v.vm_id.clone());
        }
    }
    let (problem, options) = cluster::problem(&hosts, &vms, goals)?;
    Ok(ClusterModel { problem, options, hosts: host_names, vms: vm_names })
}

/// The totals a plan is judged by.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub active_hosts: usize,
    pub sla_risk: f64,
    pub objective: f64,
}

fn totals(t: &Tables<'_>, s: &Solution) -> Totals {
    let risk = (0..t.problem.items.len()).map(|i| t.option_cost(i as u32, s.option_of[i])).sum();
    Totals { active_hosts: s.active_hosts(), sla_risk: risk, objective: s.objective(t) }
}

pub struct ClusterPlan {
    /// Each VM's size now (what a VM that only moves keeps).
    pub sizes_now: BTreeMap<String, VmConfig>,
    pub resizes: Vec<pb::PlannedResize>,
    pub moves: Vec<pb::ClusterMove>,
    pub before: Totals,
    pub after: Totals,
    pub generations: usize,
    pub elapsed: Duration,
}

impl ClusterPlan {
    pub fn predicted_gain(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            ("active_hosts".to_string(), self.before.active_hosts as f64 - self.after.active_hosts as f64),
            ("sla_risk".to_string(), self.before.sla_risk - self.after.sla_risk),
            ("objective".to_string(), self.before.objective - self.after.objective),
            ("moves".to_string(), -(self.moves.len() as f64)),
        ])
    }
}

/// Runs the optimiser over `m` for at most `limit` on `threads` threads (blocking: call it
/// from `spawn_blocking`).
pub fn plan(m: &ClusterModel, limit: Duration, threads: usize, seed: u64) -> anyhow::Result<ClusterPlan> {
    let started = Instant::now();
    let t = Tables::new(&m.problem);
    let current = Solution::current(&t);
    let pool = presage_optimise::pool(threads)?;
    let par = presage_optimise::RayonChildren::new(&pool);
    let mut deadline = presage_optimise::Deadline::after(limit);
    let (best, generations) = if m.problem.hosts.len() > DECOMPOSE_ABOVE_HOSTS {
        let cfg = DecomposeConfig { rounds: usize::MAX, genetic: GeneticConfig { seed, ..DecomposeConfig::default().genetic }, ..Default::default() };
        let out = optimise_decomposed(&m.problem, current.clone(), &cfg, &par, &mut deadline);
        (out.best, out.rounds)
    } else {
        let cfg = GeneticConfig { population: 16, generations: usize::MAX, seed, ..GeneticConfig::default() };
        let out = optimise(&m.problem, vec![current.clone()], &cfg, &par, &mut deadline);
        (out.best, out.generations)
    };
    let mut resizes = Vec::new();
    let mut moves = Vec::new();
    let mut sizes_now = BTreeMap::new();
    for (i, vm) in m.vms.iter().enumerate() {
        sizes_now.insert(vm.clone(), VmConfig { cpu_cores: m.options[i].sizes[0][0], memory_mib: m.options[i].sizes[0][1] });
        let (o, h) = (best.option_of[i] as usize, best.host_of[i]);
        let (from, to) = (&m.options[i].sizes[0], &m.options[i].sizes[o]);
        if o != 0 && from != to {
            let risk = m.options[i].risks[o];
            resizes.push(pb::PlannedResize {
                vm_id: vm.clone(),
                cpu_cores: to[0],
                memory_mib: to[1],
                reason: format!(
                    "from {:.2} cores, {:.0} MiB: peaks of its recent use exceed the new size with probability {:.3}",
                    from[0], from[1], risk
                ),
                predicted_gain: [("sla_risk".to_string(), m.options[i].risks[0] - risk)].into_iter().collect(),
                from: Some(pb::VmConfigValues { cpu_cores: from[0], memory_mib: from[1] }),
                ..Default::default()
            });
        }
        let was = current.host_of[i];
        if h != was {
            moves.push(pb::ClusterMove { vm_id: vm.clone(), from_host: m.hosts[was as usize].clone(), to_host: m.hosts[h as usize].clone() });
        }
    }
    Ok(ClusterPlan { sizes_now, resizes, moves, before: totals(&t, &current), after: totals(&t, &best), generations, elapsed: started.elapsed() })
}

/// The plan as a rollout's changes: each VM it resizes or moves (a VM that only moves keeps
/// its size).
pub fn rollout_changes(plan: &ClusterPlan) -> Vec<crate::rollouts::Change> {
    let mut changes: Vec<crate::rollouts::Change> = plan
        .resizes
        .iter()
        .map(|r| crate::rollouts::Change {
            vm: r.vm_id.clone(),
            to: VmConfig { cpu_cores: r.cpu_cores, memory_mib: r.memory_mib },
            to_host: plan.moves.iter().find(|m| m.vm_id == r.vm_id).map(|m| m.to_host.clone()),
            reason: r.reason.clone(),
            predicted_gain: r.predicted_gain.clone().into_iter().collect(),
        })
        .collect();
    for m in &plan.moves {
        if plan.resizes.iter().any(|r| r.vm_id == m.vm_id) {
            continue;
        }
        let Some(size) = plan.sizes_now.get(&m.vm_id) else { continue };
        changes.push(crate::rollouts::Change {
            vm: m.vm_id.clone(),
            to: size.clone(),
            to_host: Some(m.to_host.clone()),
            reason: format!("moves from {} to {}", m.from_host, m.to_host),
            predicted_gain: BTreeMap::new(),
        });
    }
    changes
}
