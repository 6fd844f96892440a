//! The optimiser over the live cluster (`presagectl optimise --cluster`): the cluster as the
//! agents last reported it becomes a [`Problem`] (the decision core's
//! [`presage_decide::optimise::cluster`]: each VM's size options from the peaks of its recent
//! use, costed by the risk that a peak exceeds them; each host costs one for being active;
//! moving a VM costs a little, more for more memory), the genetic optimiser improves the
//! current placement and sizing within a time limit (large clusters by decomposition), and the
//! answer is a plan: each resize and move with its reason, and the gain predicted per goal.
//! Applied, its resizes and moves become a staged rollout ([`crate::rollouts`]).
//!
//! The same plan runs in the background every `[optimiser] interval` ([`background`]): kept for
//! `presagectl optimise --cluster --last`, and in automatic mode rolled out when it gains at
//! least `min_gain` of the current objective and no other rollout is open.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use presage_decide::optimise::cluster::{self, ClusterVm, SizingGoals, VmOptions};
use presage_decide::optimise::decompose::{DecomposeConfig, optimise_decomposed};
use presage_decide::optimise::genetic::{GeneticConfig, optimise};
use presage_decide::optimise::{Host, Problem, Solution, Tables};
use presage_protocol::pb;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::{OptimiserConfig, OptimiserMode};
use crate::config_versions::VmConfig;
use crate::shared::Shared;
use crate::state::ClusterState;

/// Recent samples per peak: the history is cut into windows of this many, each window's
/// largest use one peak of the distribution the sizes come from.
const SAMPLES_PER_PEAK: usize = 6;
/// Clusters of more hosts than this are optimised by decomposition.
const DECOMPOSE_ABOVE_HOSTS: usize = 64;

/// MiB: the model's unit of memory, and (per second) of disk and network rates.
const MIB: f64 = 1_048_576.0;

/// The dimensions the model sizes beyond cores and memory: disk bandwidth (reads and writes
/// together) and network bandwidth (the busier direction), MiB/s, each only where every
/// reachable host says what it has (else a limit could not be weighed against anything).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoDims {
    pub disk: Option<usize>,
    pub net: Option<usize>,
}

impl IoDims {
    fn of(hosts: &[&crate::state::HostRecord]) -> IoDims {
        let disk = !hosts.is_empty() && hosts.iter().all(|h| host_disk_mib_s(h) > 0.0);
        let net = !hosts.is_empty() && hosts.iter().all(|h| host_net_mib_s(h) > 0.0);
        IoDims { disk: disk.then_some(2), net: net.then_some(if disk { 3 } else { 2 }) }
    }
}

fn host_disk_mib_s(h: &crate::state::HostRecord) -> f64 {
    h.registration.capacity.disk_bytes_per_s / MIB
}

/// Its NICs' speeds together, each direction.
fn host_net_mib_s(h: &crate::state::HostRecord) -> f64 {
    h.registration.capacity.nics.iter().map(|n| n.speed_mbps as f64 * 1e6 / 8.0).sum::<f64>() / MIB
}

/// A point's disk and network rates, MiB/s.
fn io_of(p: &pb::UsagePoint) -> (f64, f64) {
    (p.disk_bytes_per_s as f64 / MIB, p.net_bytes_per_s as f64 / MIB)
}

/// The cluster as the optimiser sees it, with what maps its indices back to names.
pub struct ClusterModel {
    pub problem: Problem,
    /// Where disk and network sit among the dimensions (after cores and MiB), if modelled.
    pub io: IoDims,
    /// Each VM's I/O and network limits now (0: none).
    pub io_now: Vec<presage_decide::sizing::IoLimits>,
    pub options: Vec<VmOptions>,
    pub hosts: Vec<String>,
    pub vms: Vec<String>,
    /// VMs a required dependency holds in place (never in a plan's moves).
    pub held: std::collections::HashSet<String>,
}

/// The most a guest's latency figures can raise a VM's weight (they are the guest's word).
const MAX_APP_WEIGHT: f64 = 4.0;

/// How much a VM's SLA risk counts: 1, plus the mean of its applications' worst p99 over
/// their SLO where its guest reports one (an application near or over its SLO makes an
/// undersized VM costlier), at most [`MAX_APP_WEIGHT`].
fn app_weight(points: &[&pb::UsagePoint]) -> f64 {
    crate::state::mean_reported(points, |p| p.app_latency_over_slo).map_or(1.0, |latency| (1.0 + latency).min(MAX_APP_WEIGHT))
}

/// What moving a VM that a required dependency holds in place costs the optimiser: more than
/// any cluster's hosts, so it moves one only when nothing else fits (and the plan is then
/// refused, see [`plan`]).
const HELD_MOVE_COST: f64 = 1e9;

/// Builds the model from every reachable host's last report (running VMs only); the VMs in
/// `held` stay on their hosts (they may be resized).
pub fn model(
    state: &ClusterState,
    goals: &SizingGoals,
    held: &std::collections::HashSet<String>,
) -> Result<ClusterModel, cluster::ClusterError> {
    let mut hosts = Vec::new();
    let mut host_names = Vec::new();
    let mut vms = Vec::new();
    let mut vm_names = Vec::new();
    let mut io_now = Vec::new();
    let reachable: Vec<&crate::state::HostRecord> = state.hosts().filter(|h| h.reachable).collect();
    // Where each host is, numbered as the ecosystem numbers them (an empty zone or rack: one
    // of its own), for pair goals' distances.
    let mut topology = crate::ecosystem::Topology::default();
    let sites: Vec<presage_decide::optimise::Site> = reachable
        .iter()
        .map(|h| {
            let l = topology.place(&h.host_id, &h.registration.zone, &h.registration.rack);
            presage_decide::optimise::Site { zone: l.zone, rack: l.rack }
        })
        .collect();
    let io = IoDims::of(&reachable);
    let most_disk = reachable.iter().map(|h| host_disk_mib_s(h)).fold(0.0, f64::max);
    let most_net = reachable.iter().map(|h| host_net_mib_s(h)).fold(0.0, f64::max);
    let least_io = crate::sizing_ops::MIN_IO_LIMIT / MIB;
    for h in reachable {
        let index = hosts.len() as u32;
        let cap = &h.registration.capacity;
        let mut capacity = vec![cap.cpu_cores as f64, (cap.memory_bytes >> 20) as f64];
        capacity.extend(io.disk.map(|_| host_disk_mib_s(h)));
        capacity.extend(io.net.map(|_| host_net_mib_s(h)));
        hosts.push(Host { capacity, active_cost: 1.0 });
        host_names.push(h.host_id.clone());
        for v in h.vms.values().filter(|v| v.state == pb::VmState::Running as i32) {
            let (vcpus, mib) = (v.vcpus.max(1) as f64, (v.memory_bytes >> 20) as f64);
            let (cores_given, mib_given) = h.vm_allocation(v);
            let points: Vec<&pb::UsagePoint> = h.usage_history.get(&v.vm_id).map(|q| q.iter().collect()).unwrap_or_default();
            let daily_peaks: Vec<Vec<f64>> = points
                .chunks(SAMPLES_PER_PEAK)
                .map(|w| {
                    let cpu = w.iter().map(|p| p.cpu_utilisation as f64 * vcpus).fold(0.0, f64::max);
                    let mem = w.iter().map(|p| p.memory_utilisation as f64 * mib).fold(0.0, f64::max);
                    let mut peak = vec![cpu, mem];
                    peak.extend(io.disk.map(|_| w.iter().map(|p| io_of(p).0).fold(0.0, f64::max)));
                    peak.extend(io.net.map(|_| w.iter().map(|p| io_of(p).1).fold(0.0, f64::max)));
                    peak
                })
                .collect();
            let resident = (v.memory_used_bytes >> 20) as f64;
            let mut size = vec![cores_given, mib_given];
            let mut floor = vec![0.1, resident.min(mib)];
            let mut ceiling = vec![vcpus, mib];
            let mut grain = vec![0.1, 64.0];
            // A limit it has is its size; without one, the most it was seen to use (what it
            // takes of the host now), which leaves it without a limit if chosen.
            let limits = h.resize_entry(&v.vm_id);
            let limit_of = |l: Option<f64>| l.filter(|b| *b > 0.0).map(|b| b / MIB);
            let (disk_limit, net_limit) =
                (limit_of(limits.and_then(|r| r.disk_bytes_per_s)), limit_of(limits.and_then(|r| r.net_bytes_per_s)));
            let seen = |k: usize| daily_peaks.iter().map(|d| d[k]).fold(0.0, f64::max);
            for (dim, limit, most) in [(io.disk, disk_limit, most_disk), (io.net, net_limit, most_net)] {
                if let Some(k) = dim {
                    size.push(limit.unwrap_or_else(|| seen(k)).min(most));
                    floor.push(least_io.min(most));
                    ceiling.push(most);
                    grain.push(1.0);
                }
            }
            io_now.push(presage_decide::sizing::IoLimits {
                disk_bytes_per_s: Some(disk_limit.map_or(0.0, |l| l * MIB)),
                net_bytes_per_s: Some(net_limit.map_or(0.0, |l| l * MIB)),
            });
            vms.push(ClusterVm {
                size,
                daily_peaks,
                floor,
                ceiling,
                grain,
                host: Some(index),
                // Twenty moves cost as much as a host; a GiB more of memory to copy, a little more.
                move_cost: if held.contains(&v.vm_id) { HELD_MOVE_COST } else { 0.05 + 0.005 * mib / 1024.0 },
                weight: app_weight(&points),
            });
            vm_names.push(v.vm_id.clone());
        }
    }
    let (mut problem, options) = cluster::problem(&hosts, &vms, goals)?;
    problem.sites = sites;
    Ok(ClusterModel { problem, io, io_now, options, hosts: host_names, vms: vm_names, held: held.clone() })
}

impl ClusterModel {
    /// Pair goals by VM name (e.g. [`crate::ecosystem::EcosystemRegistry::pair_goals`]) as the
    /// problem's pair terms; those naming a VM the model does not hold are left out.
    pub fn set_pair_goals(&mut self, goals: &[(String, String, [f64; presage_decide::optimise::DISTANCES])]) {
        let index: std::collections::HashMap<&str, u32> = self.vms.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32)).collect();
        self.problem.pairs = goals
            .iter()
            .filter_map(|(a, b, cost)| {
                let (a, b) = (*index.get(a.as_str())?, *index.get(b.as_str())?);
                (a != b).then_some(presage_decide::optimise::PairTerm { a, b, cost: *cost })
            })
            .collect();
    }
}

/// The totals a plan is judged by.
#[derive(Clone, Debug, PartialEq)]
pub struct Totals {
    pub active_hosts: usize,
    pub sla_risk: f64,
    /// What the preferred dependencies too far apart cost (the pair goals).
    pub dependencies: f64,
    pub objective: f64,
}

fn totals(t: &Tables<'_>, s: &Solution) -> Totals {
    let risk = (0..t.problem.items.len()).map(|i| t.option_cost(i as u32, s.option_of[i])).sum();
    Totals { active_hosts: s.active_hosts(), sla_risk: risk, dependencies: s.pairs_cost(t), objective: s.objective(t) }
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
            ("dependencies".to_string(), self.before.dependencies - self.after.dependencies),
            ("objective".to_string(), self.before.objective - self.after.objective),
            ("moves".to_string(), -(self.moves.len() as f64)),
        ])
    }

    /// The objective's gain as a share of the current objective (0 when there is none).
    pub fn relative_gain(&self) -> f64 {
        if self.before.objective > 0.0 { (self.before.objective - self.after.objective) / self.before.objective } else { 0.0 }
    }

    pub fn is_empty(&self) -> bool {
        self.resizes.is_empty() && self.moves.is_empty()
    }

    /// The plan as the operator API answers it.
    pub fn to_wire(&self, rollout: Option<pb::RolloutView>) -> pb::OptimiseClusterResponse {
        pb::OptimiseClusterResponse {
            predicted_gain: self.predicted_gain().into_iter().collect(),
            active_hosts_before: self.before.active_hosts as u32,
            active_hosts_after: self.after.active_hosts as u32,
            generations: self.generations as u64,
            seconds: self.elapsed.as_secs_f64(),
            resizes: self.resizes.clone(),
            moves: self.moves.clone(),
            rollout,
            ran_at_unix_ms: 0,
            note: String::new(),
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("no reachable host reports a running VM")]
    NothingToPlan,
    #[error("the cluster cannot be modelled: {0}")]
    Model(#[from] cluster::ClusterError),
    #[error("the optimiser failed: {0:#}")]
    Search(anyhow::Error),
}

/// What the rest of the coordinator suggests to the optimiser's guided mutation: the moves of
/// the placement policy's last plan (hosts chosen by the ensemble of scorers on forecasts) and
/// the resizes of the sizing pass's last proposals (sizes ahead of forecasts).
#[derive(Clone, Debug, Default)]
pub struct Guidance {
    /// (VM, host) moves.
    pub moves: Vec<(String, String)>,
    /// (VM, cores, MiB) sizes.
    pub sizes: Vec<(String, f64, f64)>,
}

impl Guidance {
    /// The coordinator's suggestions now.
    pub fn of(shared: &Shared) -> Guidance {
        let moves = shared
            .plan
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, p)| p.proposal.moves.iter().map(|m| (m.vm_id.clone(), m.to_host.clone())).collect())
            .unwrap_or_default();
        let sizes = shared
            .sizing_pass
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|p| {
                p.proposals.iter().filter(|x| x.kind == "resize").map(|x| (x.vm_id.clone(), x.to_cpu_cores, x.to_memory_mib)).collect()
            })
            .unwrap_or_default();
        Guidance { moves, sizes }
    }

    /// As the problem's hints: each suggested move to its host (the VM's size kept), each
    /// suggested size as the option nearest to it (relative distance over cores and memory).
    pub fn hints(&self, m: &ClusterModel) -> Vec<presage_decide::optimise::Hint> {
        use presage_decide::optimise::Hint;
        // Indexed once: a large cluster has many VMs and the plan many moves.
        let items: std::collections::HashMap<&str, u32> = m.vms.iter().enumerate().map(|(i, v)| (v.as_str(), i as u32)).collect();
        let hosts: std::collections::HashMap<&str, u32> = m.hosts.iter().enumerate().map(|(i, h)| (h.as_str(), i as u32)).collect();
        let vm_index = |vm: &str| items.get(vm).copied();
        let mut hints = Vec::new();
        for (vm, host) in &self.moves {
            if let (Some(item), Some(&h)) = (vm_index(vm), hosts.get(host.as_str())) {
                hints.push(Hint { item, host: Some(h), option: None });
            }
        }
        for (vm, cores, mib) in &self.sizes {
            let Some(item) = vm_index(vm) else { continue };
            let distance = |s: &[f64]| ((s[0] - cores) / cores.max(0.01)).abs() + ((s[1] - mib) / mib.max(1.0)).abs();
            let nearest = m.options[item as usize].sizes.iter().enumerate().min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)));
            if let Some((o, _)) = nearest {
                hints.push(Hint { item, host: None, option: Some(o as u16) });
            }
        }
        hints
    }
}

/// Models the cluster as it is now and runs the optimiser over it on a blocking thread.
pub async fn plan_now(shared: &Shared, limit: Duration, threads: usize, seed: u64) -> Result<ClusterPlan, PassError> {
    let held = shared.ecosystem.held_in_place();
    let mut model = model(&shared.state(), &shared.optimiser_goals, &held)?;
    model.problem.hints = Guidance::of(shared).hints(&model);
    model.set_pair_goals(&shared.ecosystem.pair_goals(shared.optimiser_goals.dependency_weight));
    if model.vms.is_empty() {
        return Err(PassError::NothingToPlan);
    }
    tokio::task::spawn_blocking(move || plan(&model, limit, threads, seed))
        .await
        .map_err(|e| PassError::Search(e.into()))?
        .map_err(PassError::Search)
}

/// Starts the staged rollout of `plan`'s resizes and moves (none for an empty plan).
pub fn roll_out(
    shared: &Arc<Shared>,
    plan: &ClusterPlan,
    proposer: &str,
    canary: f64,
    watch_ms: u64,
    seed: u64,
) -> Result<Option<crate::rollouts::RolloutRecord>, crate::rollouts::RolloutError> {
    if plan.is_empty() {
        return Ok(None);
    }
    let now = crate::shared::unix_ms();
    crate::rollouts::create_at(
        shared,
        proposer,
        rollout_changes(plan),
        canary,
        watch_ms,
        seed,
        presage_decide::rollout::JudgeConfig::default(),
        now,
    )
    .map(Some)
}

/// The background pass: every `interval`, a plan over the cluster, kept in
/// [`Shared::optimiser_pass`]; in automatic mode rolled out when it gains enough and no other
/// rollout is open (one staged change of the cluster at a time: a canary is judged against VMs
/// nothing else is changing).
pub async fn background(shared: Arc<Shared>, cfg: OptimiserConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut pass: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass += 1;
        let span = info_span!("optimiser.background_pass", pass, mode = ?cfg.mode);
        let began = Instant::now();
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = background_pass(&shared, &cfg, pass).instrument(span) => a,
        };
        shared.metrics.optimiser_pass.observe(began.elapsed().as_secs_f64());
        *shared.optimiser_pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(answer);
    }
}

async fn background_pass(shared: &Arc<Shared>, cfg: &OptimiserConfig, pass: u64) -> pb::OptimiseClusterResponse {
    let ran_at = crate::shared::unix_ms();
    let noted = |note: String| pb::OptimiseClusterResponse { ran_at_unix_ms: ran_at, note, ..Default::default() };
    let open = match shared.rollouts.open_ones() {
        Ok(open) => open,
        Err(e) => {
            warn!(error = %e, "reading the rollouts failed; the pass waits for the next tick");
            return noted(format!("skipped: reading the rollouts failed: {e}"));
        }
    };
    if cfg.mode == OptimiserMode::Automatic && !open.is_empty() {
        let ids: Vec<String> = open.iter().map(|r| r.id.to_string()).collect();
        info!(open = ?ids, "a rollout is open; the pass waits for it to end");
        return noted(format!("skipped: rollout {} is still open", ids.join(", ")));
    }
    let plan = match plan_now(shared, cfg.time_limit, cfg.threads, pass).await {
        Ok(p) => p,
        Err(e) => {
            info!(error = %e, "no plan this pass");
            return noted(format!("no plan: {e}"));
        }
    };
    let gain = plan.relative_gain();
    info!(
        resizes = plan.resizes.len(),
        moves = plan.moves.len(),
        hosts_before = plan.before.active_hosts,
        hosts_after = plan.after.active_hosts,
        gain,
        "background optimiser pass"
    );
    let (rollout, note) = if plan.is_empty() {
        (None, "nothing to change".to_string())
    } else if cfg.mode == OptimiserMode::Advisory {
        (None, format!("advisory: a gain of {:.1} % proposed, not applied", gain * 100.0))
    } else if gain < cfg.min_gain {
        (None, format!("kept, not applied: a gain of {:.2} % is below min_gain ({:.2} %)", gain * 100.0, cfg.min_gain * 100.0))
    } else {
        match roll_out(shared, &plan, "optimiser (background pass)", cfg.canary, cfg.watch.as_millis() as u64, pass) {
            Ok(Some(r)) => {
                info!(rollout = r.id, "background optimiser plan rolling out");
                let note = format!("applied as rollout {} (a gain of {:.1} %)", r.id, gain * 100.0);
                (Some(r.to_wire()), note)
            }
            Ok(None) => (None, "nothing to change".to_string()),
            Err(e) => {
                warn!(error = %e, "starting the rollout failed");
                (None, format!("not applied: starting the rollout failed: {e}"))
            }
        }
    };
    pb::OptimiseClusterResponse { ran_at_unix_ms: ran_at, note, ..plan.to_wire(rollout) }
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
        let cfg = DecomposeConfig {
            rounds: usize::MAX,
            genetic: GeneticConfig { seed, ..DecomposeConfig::default().genetic },
            ..Default::default()
        };
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
        sizes_now.insert(vm.clone(), VmConfig::sized(m.options[i].sizes[0][0], m.options[i].sizes[0][1]));
        let (o, h) = (best.option_of[i] as usize, best.host_of[i]);
        let (from, to) = (&m.options[i].sizes[0], &m.options[i].sizes[o]);
        if o != 0 && from != to {
            let risk = m.options[i].risks[o];
            let now = VmConfig { cpu_cores: from[0], memory_mib: from[1], io: m.io_now[i] };
            // A limit changes only where the chosen level differs from the size now.
            let changed = |k: Option<usize>| k.filter(|k| from[*k] != to[*k]).map(|k| to[k] * MIB);
            let (disk, net) = (changed(m.io.disk), changed(m.io.net));
            let to_config = VmConfig {
                cpu_cores: to[0],
                memory_mib: to[1],
                io: presage_decide::sizing::IoLimits { disk_bytes_per_s: disk, net_bytes_per_s: net },
            };
            resizes.push(pb::PlannedResize {
                vm_id: vm.clone(),
                cpu_cores: to[0],
                memory_mib: to[1],
                disk_bytes_per_s: disk,
                net_bytes_per_s: net,
                reason: format!(
                    "from {} to {}: peaks of its recent use exceed the new size with probability {:.3}",
                    now.describe(),
                    to_config.describe(),
                    risk
                ),
                predicted_gain: [("sla_risk".to_string(), m.options[i].risks[0] - risk)].into_iter().collect(),
                from: Some(now.to_wire()),
                ..Default::default()
            });
        }
        let was = current.host_of[i];
        if h != was && m.held.contains(vm) {
            anyhow::bail!("the plan would move {vm}, which a required dependency holds in place: the cluster has no room without it");
        }
        if h != was {
            moves.push(pb::ClusterMove {
                vm_id: vm.clone(),
                from_host: m.hosts[was as usize].clone(),
                to_host: m.hosts[h as usize].clone(),
            });
        }
    }
    Ok(ClusterPlan {
        sizes_now,
        resizes,
        moves,
        before: totals(&t, &current),
        after: totals(&t, &best),
        generations,
        elapsed: started.elapsed(),
    })
}

/// The plan as a rollout's changes: each VM it resizes or moves (a VM that only moves keeps
/// its size).
pub fn rollout_changes(plan: &ClusterPlan) -> Vec<crate::rollouts::Change> {
    let mut changes: Vec<crate::rollouts::Change> = plan
        .resizes
        .iter()
        .map(|r| crate::rollouts::Change {
            vm: r.vm_id.clone(),
            to: VmConfig {
                cpu_cores: r.cpu_cores,
                memory_mib: r.memory_mib,
                io: presage_decide::sizing::IoLimits { disk_bytes_per_s: r.disk_bytes_per_s, net_bytes_per_s: r.net_bytes_per_s },
            },
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::state::test_messages::{reg, report};

    /// Two 4-core hosts, each running one 2-vCPU VM of 1 GiB that uses a tenth of its vCPUs:
    /// one host could take both.
    fn two_light_hosts() -> ClusterState {
        with_latency(0.0)
    }

    /// The same, vm-b's guest reporting its applications' worst p99 at `latency` of the SLO.
    fn with_latency(latency: f64) -> ClusterState {
        use presage_protocol::guest_pb::AppFigures;
        use presage_protocol::pb::GuestApps;
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(60));
        for (session, host, vm) in [(1, "a", "vm-a"), (2, "b", "vm-b")] {
            s.register(&reg(host, "1"), session, t0);
            for seq in 1..=24 {
                let mut r = report(seq, &[(vm, 0.1)]);
                r.sampled_at_ms = seq * 1000;
                r.vms[0].memory_bytes = 1 << 30;
                if vm == "vm-b" && latency > 0.0 {
                    let app = AppFigures {
                        name: "api".into(),
                        latency_p99_ms: latency * 100.0,
                        latency_slo_p99_ms: 100.0,
                        requests: 50,
                        ..Default::default()
                    };
                    r.vms[0].guest =
                        Some(GuestApps { received_ms: r.sampled_at_ms, interval_s: 5.0, apps: vec![app], ..Default::default() });
                }
                s.ingest(host, session, r, t0).unwrap();
            }
        }
        s
    }

    /// Two hosts of `disk_mb_per_s` disk bandwidth (0: not said) and one 1 Gbit/s NIC, each
    /// running one light VM of 1 GiB that reads 50 to 70 MB/s and sends 8 to 12 MB/s.
    fn io_heavy_hosts(disk_mb_per_s: f64) -> ClusterState {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(60));
        for (session, host, vm) in [(1, "a", "vm-a"), (2, "b", "vm-b")] {
            let mut r = reg(host, "1");
            let cap = r.capacity.as_mut().unwrap();
            cap.disk_bytes_per_s = disk_mb_per_s * 1e6;
            cap.nics = vec![pb::Nic { name: "eth0".into(), speed_mbps: 1000 }];
            s.register(&r, session, t0);
            for seq in 1..=36u64 {
                let mut r = report(seq, &[(vm, 0.1)]);
                r.sampled_at_ms = seq * 1000;
                r.vms[0].memory_bytes = 1 << 30;
                let wave = (seq % 5) as f64 / 4.0;
                r.vms[0].disk_read_bytes_per_s = (50.0 + 20.0 * wave) * 1e6;
                r.vms[0].net_tx_bytes_per_s = (8.0 + 4.0 * wave) * 1e6;
                r.vms[0].net_rx_bytes_per_s = 1e6;
                s.ingest(host, session, r, t0).unwrap();
            }
        }
        s
    }

    #[test]
    fn disk_and_network_are_sized_and_packed_where_hosts_say_what_they_have() {
        let none = HashSet::new();
        let plan_for = |disk_mb_per_s: f64| {
            let m = model(&io_heavy_hosts(disk_mb_per_s), &SizingGoals::default(), &none).unwrap();
            let p = plan(&m, Duration::from_millis(300), 1, 7).unwrap();
            (m.io, p)
        };
        // Both VMs' reads (up to 70 MB/s each) do not fit one host's 100 MB/s: two hosts stay,
        // though their CPU and memory would share one.
        let (io, tight) = plan_for(100.0);
        assert_eq!(io, IoDims { disk: Some(2), net: Some(3) });
        assert_eq!(tight.after.active_hosts, 2, "{:?}", tight.moves);
        // With 1 GB/s each, one host takes both.
        let (_, roomy) = plan_for(1000.0);
        assert_eq!(roomy.after.active_hosts, 1, "{:?}", roomy.moves);
        // The limits it sets never throttle what the VM was seen to do, nor exceed a host.
        let disk_limited: Vec<&pb::PlannedResize> = roomy.resizes.iter().filter(|r| r.disk_bytes_per_s.is_some()).collect();
        assert!(!disk_limited.is_empty(), "{:?}", roomy.resizes);
        for r in &roomy.resizes {
            if let Some(d) = r.disk_bytes_per_s {
                assert!((70e6..=1000e6).contains(&d), "{r:?}");
                assert!(r.reason.contains("disk") && r.reason.contains("MiB/s"), "{}", r.reason);
            }
            if let Some(n) = r.net_bytes_per_s {
                assert!((12e6..=125e6).contains(&n), "{r:?}");
            }
            assert_eq!(r.from.unwrap().disk_bytes_per_s, Some(0.0), "unlimited before");
        }
        // Hosts that do not say their disk bandwidth: disk is left out, network is still sized.
        let (io, unknown) = plan_for(0.0);
        assert_eq!(io, IoDims { disk: None, net: Some(2) });
        assert!(unknown.resizes.iter().all(|r| r.disk_bytes_per_s.is_none()), "{:?}", unknown.resizes);
    }

    /// Two hosts of 4 cores and 8 GiB, each running two busy 2-vCPU VMs of 3 GiB they hold
    /// whole: no host can take a third. `a` holds vm-web and vm-x, `b` vm-db and vm-y.
    fn two_full_hosts() -> ClusterState {
        let t0 = Instant::now();
        let mut s = ClusterState::new(Duration::from_secs(60));
        for (session, host, vms) in [(1, "a", ["vm-web", "vm-x"]), (2, "b", ["vm-db", "vm-y"])] {
            s.register(&reg(host, "1"), session, t0);
            for seq in 1..=24u64 {
                let mut r = report(seq, &[(vms[0], 0.8), (vms[1], 0.8)]);
                r.sampled_at_ms = seq * 1000;
                for v in &mut r.vms {
                    v.memory_bytes = 3 << 30;
                    v.memory_used_bytes = 3 << 30;
                }
                s.ingest(host, session, r, t0).unwrap();
            }
        }
        s
    }

    #[test]
    fn a_preferred_dependency_too_far_apart_brings_its_vms_together_graded_by_its_weight() {
        use presage_decide::ecosystem::{Declaration, LatencyTable};
        let state = two_full_hosts();
        let store = presage_store::MemoryStore::new();
        let eco =
            crate::ecosystem::EcosystemRegistry::open(&store, LatencyTable::default(), Default::default(), Default::default()).unwrap();
        let declarations: Vec<Declaration> = serde_json::from_value(serde_json::json!([
            {"vm_name": "vm-web", "profile": {"type": "web"},
             "dependencies": {"preferred": [{"type": "database", "network_latency_requirement": "< 1ms"}]}},
            {"vm_name": "vm-db", "profile": {"type": "database"}}
        ]))
        .unwrap();
        eco.register(declarations, &state).unwrap();
        let goals = eco.pair_goals(0.5);
        assert_eq!(goals.len(), 1, "{goals:?}");
        let (from, to, cost) = &goals[0];
        assert_eq!((from.as_str(), to.as_str()), ("vm-web", "vm-db"));
        // Met on one host (0.05 ms), a rack (0.25 ms) and a zone (1.5 ms... not below 1 ms):
        // graded, nearer cheaper, never above the weight.
        assert_eq!((cost[0], cost[1]), (0.0, 0.0), "{cost:?}");
        assert!(cost[2] > 0.0 && cost[2] < cost[3] && cost[3] <= 0.5, "{cost:?}");
        assert_eq!(eco.pair_goals(0.0), vec![], "weight 0: no goals");

        let none = HashSet::new();
        let plan_with = |weight: f64| {
            let mut m = model(&state, &SizingGoals::default(), &none).unwrap();
            m.set_pair_goals(&eco.pair_goals(weight));
            let p = plan(&m, Duration::from_millis(300), 1, 7).unwrap();
            let host_after = |vm: &str| {
                p.moves
                    .iter()
                    .find(|x| x.vm_id == vm)
                    .map(|x| x.to_host.clone())
                    .unwrap_or_else(|| if vm == "vm-web" { "a".into() } else { "b".into() })
            };
            (host_after("vm-web") == host_after("vm-db"), p)
        };
        // Hosts without a zone are a zone each: the two are a region apart, costing the
        // weight; a swap (two moves, 0.05 and a little each) brings them together.
        let (together, p) = plan_with(0.5);
        assert!(together, "{:?}", p.moves);
        assert!(p.predicted_gain()["dependencies"] > 0.4, "{:?}", p.predicted_gain());
        // Worth less than the moves: left as they are.
        let (together, p) = plan_with(0.05);
        assert!(!together && p.moves.is_empty(), "{:?}", p.moves);
    }

    fn planned(held: &[&str]) -> ClusterPlan {
        let held: HashSet<String> = held.iter().map(|v| v.to_string()).collect();
        let m = model(&two_light_hosts(), &SizingGoals::default(), &held).unwrap();
        plan(&m, Duration::from_millis(300), 1, 7).unwrap()
    }

    #[test]
    fn the_policy_plan_and_the_sizing_pass_become_hints_on_the_right_items_hosts_and_sizes() {
        let m = model(&two_light_hosts(), &SizingGoals::default(), &HashSet::new()).unwrap();
        let vm_b = m.vms.iter().position(|v| v == "vm-b").unwrap() as u32;
        let host_a = m.hosts.iter().position(|h| h == "a").unwrap() as u32;
        // The size nearest to what the sizing pass proposed for vm-b.
        let sizes = &m.options[vm_b as usize].sizes;
        let (want, target) = sizes.iter().enumerate().max_by(|a, b| a.1[0].total_cmp(&b.1[0])).map(|(o, s)| (o as u16, s.clone())).unwrap();
        let g = Guidance {
            moves: vec![("vm-b".into(), "a".into()), ("vm-gone".into(), "a".into()), ("vm-a".into(), "no-such-host".into())],
            sizes: vec![("vm-b".into(), target[0] * 1.01, target[1])],
        };
        let hints = g.hints(&m);
        use presage_decide::optimise::Hint;
        assert_eq!(
            hints,
            vec![Hint { item: vm_b, host: Some(host_a), option: None }, Hint { item: vm_b, host: None, option: Some(want) }],
            "moves and sizes that name no VM or host of the model are dropped"
        );
        let mut p = m.problem.clone();
        p.hints = hints;
        assert!(p.check().is_ok());
    }

    #[test]
    fn an_application_near_its_slo_makes_undersizing_its_vm_costlier() {
        let none = HashSet::new();
        let plain = model(&with_latency(0.0), &SizingGoals::default(), &none).unwrap();
        let slow = model(&with_latency(1.5), &SizingGoals::default(), &none).unwrap();
        let b = slow.vms.iter().position(|v| v == "vm-b").unwrap();
        let risky: Vec<usize> =
            (0..plain.problem.items[b].options.len()).filter(|o| plain.problem.items[b].options[*o].cost > 0.0).collect();
        assert!(!risky.is_empty(), "some size of vm-b carries a risk");
        for o in risky {
            let (p, q) = (plain.problem.items[b].options[o].cost, slow.problem.items[b].options[o].cost);
            assert!((q / p - 2.5).abs() < 1e-6, "option {o}: {q} against {p}: weighed 1 + 1.5");
        }
        // A guest claiming a thousand times its SLO raises the weight to the bound, no further.
        let wild = model(&with_latency(1000.0), &SizingGoals::default(), &none).unwrap();
        let o = (0..plain.problem.items[b].options.len()).find(|o| plain.problem.items[b].options[*o].cost > 0.0).unwrap();
        assert!((wild.problem.items[b].options[o].cost / plain.problem.items[b].options[o].cost - MAX_APP_WEIGHT).abs() < 1e-6);
    }

    #[test]
    fn vms_a_required_dependency_holds_stay_where_they_are() {
        let free = planned(&[]);
        assert_eq!((free.before.active_hosts, free.after.active_hosts, free.moves.len()), (2, 1, 1), "consolidated");
        // One held: the other comes to it.
        let one = planned(&["vm-b"]);
        assert_eq!(one.moves.len(), 1);
        assert_eq!((one.moves[0].vm_id.as_str(), one.moves[0].to_host.as_str()), ("vm-a", "b"));
        // Both held: resized perhaps, never moved.
        let both = planned(&["vm-a", "vm-b"]);
        assert!(both.moves.is_empty(), "{:?}", both.moves);
        assert_eq!(both.after.active_hosts, 2);
    }
}
