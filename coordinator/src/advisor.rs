//! The advisory consolidation pass: every interval the coordinator turns its observed cluster
//! state into a [`FleetView`] and asks the configured [`ConsolidationPolicy`] (the very code the
//! simulator replays) which live migrations it would make. The result is a [`PlanSnapshot`]: the
//! plan (ordered moves with reasons and, for presage's policy, each decision's explanation) and
//! the fleet as the policy saw it, which `presagectl place` and `presagectl explain` rank against
//! until the next pass. Executing plans is the migration executor's job, not this module's.
//!
//! Pure apart from what it is handed: no I/O, no clock.

use std::collections::HashMap;
use std::sync::Arc;

use presage_decide::ecosystem::scorer::{EcosystemHandle, FleetEcosystem, presage_with_ecosystem};

use crate::ecosystem::EcosystemRegistry;

use serde::Serialize;

use crate::state::ClusterState;
use presage_decide::policy::application::{AppHealthFigures, AppSignal};
use presage_decide::policy::learned::GuardCounts;
use presage_decide::policy::power::IBM_X3550_M3_X5675;
use presage_decide::policy::presage::{
    DemandSource, HostScore, PresageConfig, PresagePolicy, Ranking, Rejection, ScoreTerm, Standing, VmDemand,
};
use presage_decide::policy::{
    ConsolidationPolicy, FleetView, HostView, MoveReason, PolicyExtras, PolicySpec, Renumbering, UtilisationHistory, VmView,
};

/// Migration bandwidth assumed for hosts whose NIC speed is unknown (half of 1 Gbit/s, MB/s).
const DEFAULT_MIGRATION_MB_PER_S: f64 = 62.5;

/// A host's score for a VM, with each scorer's part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreView {
    pub host_id: String,
    pub score: f64,
    pub risk_after: f64,
    pub utilisation_after: f64,
    pub terms: Vec<ScoreTerm>,
}

/// Why a move was decided (policies that explain themselves).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MoveWhy {
    pub benefit_j: f64,
    pub cost_j: f64,
    pub source_risk_before: f64,
    pub source_risk_after: f64,
    pub chosen: ScoreView,
    pub runner_up: Option<ScoreView>,
    /// The moving VM's application figures the decision saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<AppHealthFigures>,
    /// How sure the decision is.
    pub confidence: presage_decide::policy::presage::Confidence,
}

/// One move the policy would make now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProposedMove {
    pub vm_id: String,
    pub from_host: String,
    pub to_host: String,
    /// `overload` or `underload`: why its current host should give it up.
    pub reason: &'static str,
    pub why: Option<MoveWhy>,
    /// The VMs of its bundle that move with it to the same host.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub with: Vec<String>,
}

/// The outcome of one advisory pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Proposal {
    pub policy: String,
    pub hosts_considered: usize,
    pub vms_considered: usize,
    pub moves: Vec<ProposedMove>,
}

/// The fleet one pass decides over, as the state held it ([`Advisor::observe`]).
pub struct ObservedFleet {
    hosts: Vec<HostView>,
    vms: Vec<VmView>,
    host_ids: Vec<String>,
    vm_ids: Vec<String>,
    /// Each host's zone and rack, when the dependencies are scored.
    locations: Option<Vec<presage_decide::ecosystem::topology::Location>>,
}

/// One pass's plan and the fleet as the policy saw it.
pub struct PlanSnapshot {
    pub proposal: Proposal,
    now_s: f64,
    hosts: Vec<HostView>,
    vms: Vec<VmView>,
    host_ids: Vec<String>,
    vm_ids: Vec<String>,
    ranker: PresagePolicy,
    standing: Standing,
}

/// Hosts that could not take a VM, by reason.
pub type Rejections = Vec<(Rejection, usize)>;

/// `presagectl place`: how every host ranks for a new VM of a given shape.
#[derive(Clone, Debug, Serialize)]
pub struct PlaceOutcome {
    pub ranking: Vec<ScoreView>,
    pub feasible_hosts: usize,
    pub rejected: Rejections,
}

/// `presagectl explain VM`: why a VM is where it is, or why it would move.
#[derive(Clone, Debug, Serialize)]
pub struct ExplainOutcome {
    pub vm_id: String,
    pub host_id: String,
    /// Where the policy's view of its demand came from.
    pub demand_source: DemandSource,
    /// Its predicted demand at each step of the policy's horizon, capacity units: mean and p90.
    pub demand_mean: Vec<f64>,
    pub demand_p90: Vec<f64>,
    /// The spread the risk counts per step (the forecast's, with the VM's reach to its peak).
    pub demand_spread: Vec<f64>,
    /// Its highest demand of the last day, capacity units.
    pub demand_peak: f64,
    /// The move the last plan makes for it, if any.
    pub planned: Option<ProposedMove>,
    /// Every host ranked for it now, its own included (without the cost of a move).
    pub ranking: Vec<ScoreView>,
    pub feasible_hosts: usize,
    pub rejected: Rejections,
    /// Its application figures as the policy last judged them, when its guest reports them.
    pub application: Option<AppHealthFigures>,
}

/// A bad `place` request.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("no host is known yet (no advisory pass has seen a reachable host)")]
    NoHosts,
}

impl PlanSnapshot {
    fn fleet(&self) -> FleetView<'_> {
        FleetView { now_s: self.now_s, hosts: &self.hosts, vms: &self.vms }
    }

    fn view(&self, s: &HostScore) -> ScoreView {
        score_view(&self.host_ids, s)
    }

    fn views(&self, r: &Ranking) -> Vec<ScoreView> {
        r.ranked.iter().map(|s| self.view(s)).collect()
    }

    /// Ranks the hosts for a new VM of `vcpus` × `mhz_per_vcpu` (default: the fastest core in the
    /// fleet) and `memory_mib`, as presage would place it now. Nothing is reserved or changed.
    pub fn place(&self, vcpus: u32, mhz_per_vcpu: Option<f64>, memory_mib: f64, top: usize) -> Result<PlaceOutcome, PlaceError> {
        let invalid = |field, problem: String| Err(PlaceError::Invalid { field, problem });
        if vcpus == 0 || vcpus > 1024 {
            return invalid("vcpus", format!("{vcpus} is not within 1..=1024"));
        }
        if !memory_mib.is_finite() || memory_mib < 0.0 {
            return invalid("memory_mib", format!("{memory_mib} must be a finite number >= 0"));
        }
        if let Some(m) = mhz_per_vcpu
            && (!m.is_finite() || m <= 0.0)
        {
            return invalid("cpu_mhz_per_vcpu", format!("{m} must be a finite number > 0"));
        }
        if self.hosts.is_empty() {
            return Err(PlaceError::NoHosts);
        }
        let mhz = mhz_per_vcpu.unwrap_or_else(|| self.hosts.iter().map(|h| h.pe_mips).fold(0.0, f64::max));
        let mut vms = self.vms.clone();
        vms.push(VmView {
            alive: true,
            host: None,
            pes: vcpus,
            mips: mhz,
            ram_mb: memory_mib,
            demand_mips: vcpus as f64 * mhz,
            scheduled_mips: 0.0,
            memory_request_mb: memory_mib,
            history: UtilisationHistory::default(),
            in_migration: false,
            forecast: None,
            memory_p90_mb: None,
            app: None,
        });
        let fleet = FleetView { now_s: self.now_s, hosts: &self.hosts, vms: &vms };
        let r = self.ranker.rank_new_with(&fleet, &self.standing, vms.len() - 1, top.max(1));
        Ok(PlaceOutcome { ranking: self.views(&r), feasible_hosts: r.feasible, rejected: r.rejected })
    }

    /// What the destination should hold for `vm_id` while it moves: its highest p90 CPU demand
    /// over the horizon (MHz) and its memory (MiB).
    pub fn reservation_for(&self, vm_id: &str) -> Option<(f64, f64)> {
        let vm = self.vm_ids.iter().position(|v| v == vm_id)?;
        let d = VmDemand::of(&self.vms[vm], self.ranker.config());
        Some((d.reservation(), self.vms[vm].memory_request_mb))
    }

    /// Expected growth per host: for each host, the sum over its VMs of how far their p90 over
    /// the horizon exceeds their demand now (MHz), where it does.
    pub fn expected_growth(&self) -> Vec<(String, f64)> {
        let mut growth = vec![0.0; self.hosts.len()];
        for v in self.vms.iter().filter(|v| v.alive) {
            let Some(h) = v.host else { continue };
            let d = VmDemand::of(v, self.ranker.config());
            growth[h] += (d.reservation() - v.demand_mips).max(0.0);
        }
        self.host_ids.iter().cloned().zip(growth).filter(|(_, g)| *g > 0.0).collect()
    }

    /// Why `vm_id` is where it is; `None` for a VM the last pass did not see.
    pub fn explain(&self, vm_id: &str, top: usize) -> Option<ExplainOutcome> {
        let vm = self.vm_ids.iter().position(|v| v == vm_id)?;
        let fleet = self.fleet();
        let r = self.ranker.rank_resident(&fleet, &self.standing, vm, top.max(1));
        let d = VmDemand::of(&self.vms[vm], self.ranker.config());
        let steps = self.ranker.config().horizon_steps;
        Some(ExplainOutcome {
            vm_id: vm_id.to_string(),
            host_id: self.vms[vm].host.and_then(|h| self.host_ids.get(h)).cloned().unwrap_or_default(),
            demand_source: d.source,
            demand_mean: d.mean[..steps].to_vec(),
            demand_p90: d.high[..steps].to_vec(),
            demand_spread: d.sd[..steps].to_vec(),
            demand_peak: d.peak,
            planned: self.proposal.moves.iter().find(|m| m.vm_id == vm_id).cloned(),
            ranking: self.views(&r),
            feasible_hosts: r.feasible,
            rejected: r.rejected,
            application: self.ranker.application_book().and_then(|b| b.figures(vm, self.now_s)),
        })
    }
}

/// Keeps the policy and each VM's utilisation history between passes.
pub struct Advisor {
    policy: Box<dyn ConsolidationPolicy>,
    presage: PresageConfig,
    history: HashMap<String, UtilisationHistory>,
    /// The registered dependencies, and the handle through which presage's dependency scorer,
    /// rule and repairs see them indexed like each pass's fleet.
    ecosystem: Option<(Arc<EcosystemRegistry>, Arc<EcosystemHandle>)>,
    /// The last pass's VM and host ids in fleet order: what the policy's per-VM and per-host
    /// memory is indexed by until this pass renumbers it.
    numbering: Option<(Vec<String>, Vec<String>)>,
    /// What the policy and the rankers are built with besides the settings (a learned model).
    extras: PolicyExtras,
    /// The learned scorer's counts already reported ([`take_learned_counts`](Self::take_learned_counts)).
    learned_reported: GuardCounts,
}

impl Advisor {
    /// `spec` decides the plan; presage's settings also rank for `place` and `explain`.
    pub fn new(spec: PolicySpec, presage: &PresageConfig) -> Advisor {
        Advisor::with_extras(spec, presage, PolicyExtras::default())
    }

    /// [`new`](Self::new), presage built with `extras` (its learned model).
    pub fn with_extras(spec: PolicySpec, presage: &PresageConfig, extras: PolicyExtras) -> Advisor {
        Advisor {
            policy: spec.build_with_extras(presage, &extras),
            presage: presage.clone(),
            history: HashMap::new(),
            ecosystem: None,
            numbering: None,
            extras,
            learned_reported: GuardCounts::default(),
        }
    }

    /// [`new`](Self::new), with the registered dependencies: presage then scores, keeps and
    /// repairs them (the other policies ignore them); `place` and `explain` show their terms.
    pub fn with_ecosystem(spec: PolicySpec, presage: &PresageConfig, registry: Arc<EcosystemRegistry>, extras: PolicyExtras) -> Advisor {
        let handle = EcosystemHandle::new(FleetEcosystem::default());
        let policy: Box<dyn ConsolidationPolicy> = if spec == PolicySpec::Presage {
            Box::new(presage_with_ecosystem(presage.clone(), handle.clone()).with_extras(&extras))
        } else {
            spec.build_with_extras(presage, &extras)
        };
        Advisor {
            policy,
            presage: presage.clone(),
            history: HashMap::new(),
            ecosystem: Some((registry, handle)),
            numbering: None,
            extras,
            learned_reported: GuardCounts::default(),
        }
    }

    /// What the learned scorer's guardrail decided since the last call (`None` without one).
    pub fn take_learned_counts(&mut self) -> Option<GuardCounts> {
        let now = self.policy.learned_counts()?;
        let was = std::mem::replace(&mut self.learned_reported, now);
        Some(now.since(&was))
    }

    pub fn policy_name(&self) -> String {
        self.policy.name()
    }

    /// One pass over the reachable hosts: each VM's utilisation is added to its history, then
    /// the policy decides. `now_s` is only handed through to the policy.
    pub fn advise(&mut self, state: &ClusterState, now_s: f64) -> PlanSnapshot {
        self.advise_draining(state, now_s, &std::collections::HashSet::new())
    }

    /// [`advise`](Self::advise) with the hosts an operator is draining: they take no VMs, and
    /// the plan moves every VM off them.
    pub fn advise_draining(&mut self, state: &ClusterState, now_s: f64, draining: &std::collections::HashSet<String>) -> PlanSnapshot {
        let fleet = self.observe(state, now_s, draining);
        self.decide(fleet, now_s)
    }

    /// The fleet as the state holds it now (each VM's utilisation added to its history): all
    /// a pass needs of the state, taken quickly so that the state's lock is not held while the
    /// policy decides ([`decide`](Self::decide)).
    pub fn observe(&mut self, state: &ClusterState, now_s: f64, draining: &std::collections::HashSet<String>) -> ObservedFleet {
        let mut hosts = Vec::new();
        let mut host_ids = Vec::new();
        let mut vms = Vec::new();
        let mut vm_ids = Vec::new();
        for rec in state.hosts().filter(|h| h.reachable) {
            let cap = &rec.registration.capacity;
            if cap.cpu_cores == 0 || cap.cpu_mhz_per_core <= 0.0 {
                continue;
            }
            let h = hosts.len();
            let nic_mbps = cap.nics.iter().map(|n| n.speed_mbps).max().unwrap_or(0);
            let mut view = HostView {
                pes: cap.cpu_cores,
                pe_mips: cap.cpu_mhz_per_core,
                total_mips: cap.cpu_cores as f64 * cap.cpu_mhz_per_core,
                memory_mb: cap.memory_bytes as f64 / 1048576.0,
                migration_mb_per_s: if nic_mbps > 0 { nic_mbps as f64 / 2.0 / 8.0 } else { DEFAULT_MIGRATION_MB_PER_S },
                power: IBM_X3550_M3_X5675,
                observed_mips: 0.0,
                vms: Vec::new(),
                migrating_in: Vec::new(),
                schedulable: !draining.contains(&rec.host_id),
                reserved_mips: 0.0,
                other_mips: 0.0,
            };
            for sample in rec.vms.values() {
                let demand = rec.vm_cpu_demand(sample);
                let per_vcpu = if sample.vcpu_mhz > 0.0 { sample.vcpu_mhz } else { cap.cpu_mhz_per_core };
                let history = self.history.entry(sample.vm_id.clone()).or_default();
                history.push(sample.cpu_utilisation.clamp(0.0, 1.0));
                view.observed_mips += demand;
                view.vms.push(vms.len());
                vms.push(VmView {
                    alive: true,
                    host: Some(h),
                    pes: sample.vcpus.max(1),
                    mips: per_vcpu,
                    ram_mb: sample.memory_bytes as f64 / 1048576.0,
                    demand_mips: demand,
                    scheduled_mips: demand,
                    // A KVM guest keeps what it was given: reserve its allocation.
                    memory_request_mb: sample.memory_bytes as f64 / 1048576.0,
                    history: history.clone(),
                    in_migration: false,
                    forecast: sample.forecast.as_ref().and_then(presage_protocol::pb::VmForecast::cpu_quantiles),
                    // A fraction of what it was given: never above its allocation, so a KVM guest's
                    // reservation stands; a ballooned one's forecast is what it may take back.
                    memory_p90_mb: sample.forecast.as_ref().and_then(presage_protocol::pb::VmForecast::memory_quantiles).map(|f| {
                        let mb = sample.memory_bytes as f64 / 1048576.0;
                        std::array::from_fn(|h| (f.q[h][2].clamp(0.0, 1.0) as f64 * mb) as f32)
                    }),
                    app: app_signal(rec, sample, h, now_s),
                });
                vm_ids.push(sample.vm_id.clone());
            }
            // What the host's CPU does besides its VMs (its own processes, emulator threads, a
            // noisy neighbour presage does not manage) is load no move can take away.
            if let Some(u) = &rec.usage {
                let host_mips = u.cpu_utilisation.clamp(0.0, 1.0) * view.total_mips;
                view.other_mips = (host_mips - view.observed_mips).max(0.0);
                view.observed_mips = view.observed_mips.max(host_mips);
            }
            host_ids.push(rec.host_id.clone());
            hosts.push(view);
        }
        // VMs gone from every report no longer need a history.
        let present: std::collections::HashSet<&String> = vm_ids.iter().collect();
        self.history.retain(|id, _| present.contains(id));
        let locations = self.ecosystem.as_ref().map(|_| {
            let mut topology = crate::ecosystem::Topology::default();
            state
                .hosts()
                .filter(|h| host_ids.contains(&h.host_id))
                .map(|h| topology.place(&h.host_id, &h.registration.zone, &h.registration.rack))
                .collect()
        });
        ObservedFleet { hosts, vms, host_ids, vm_ids, locations }
    }

    /// The policy's pass over `fleet`: its plan, with each decision's explanation.
    pub fn decide(&mut self, fleet: ObservedFleet, now_s: f64) -> PlanSnapshot {
        let ObservedFleet { hosts, vms, host_ids, vm_ids, locations } = fleet;
        if let (Some((registry, handle)), Some(locations)) = (&self.ecosystem, locations) {
            let index: HashMap<&str, usize> = vm_ids.iter().enumerate().map(|(i, v)| (v.as_str(), i)).collect();
            let graph = (*registry.graph()).clone();
            handle.set(FleetEcosystem::new(graph, vms.len(), &|name| index.get(name).copied(), locations, registry.latency));
        }
        if let Some((old_vms, old_hosts)) = &self.numbering {
            self.policy.renumber(&Renumbering::between(old_vms, &vm_ids, old_hosts, &host_ids));
        }
        self.numbering = Some((vm_ids.clone(), host_ids.clone()));
        let fleet = FleetView { now_s, hosts: &hosts, vms: &vms };
        let span = tracing::info_span!("advise", policy = %self.policy.name(), hosts = hosts.len(), vms = vms.len());
        let enter = span.enter();
        let decisions = self.policy.optimise(&fleet);
        let explanations = self.policy.explanations();
        let score_view = |s: &HostScore| score_view(&host_ids, s);
        let moves = decisions
            .iter()
            .filter(|m| m.vm < vms.len() && m.to < hosts.len())
            .map(|m| ProposedMove {
                vm_id: vm_ids[m.vm].clone(),
                from_host: vms[m.vm].host.map(|h| host_ids[h].clone()).unwrap_or_default(),
                to_host: host_ids[m.to].clone(),
                reason: match m.reason {
                    MoveReason::Overload(_) => "overload",
                    MoveReason::Underload(_) => "underload",
                    MoveReason::Drain(_) => "drain",
                    MoveReason::Repair(_) => "repair",
                },
                with: explanations
                    .iter()
                    .find(|e| e.vm == m.vm && e.to == m.to)
                    .map(|e| e.with.iter().filter(|&&v| v < vm_ids.len()).map(|&v| vm_ids[v].clone()).collect())
                    .unwrap_or_default(),
                why: explanations.iter().find(|e| e.vm == m.vm && e.to == m.to).map(|e| MoveWhy {
                    benefit_j: e.benefit_j,
                    cost_j: e.cost_j,
                    source_risk_before: e.source_risk_before,
                    source_risk_after: e.source_risk_after,
                    chosen: score_view(&e.chosen),
                    runner_up: e.runner_up.as_ref().map(score_view),
                    application: e.application,
                    confidence: e.confidence,
                }),
            })
            .collect();
        drop(enter);
        let proposal = Proposal { policy: self.policy.name(), hosts_considered: hosts.len(), vms_considered: vms.len(), moves };
        let ranker = match &self.ecosystem {
            Some((_, handle)) => presage_with_ecosystem(self.presage.clone(), handle.clone()),
            None => PresagePolicy::new(self.presage.clone()),
        }
        .with_extras(&self.extras);
        // Rankings between passes see what the policy learned of the VMs' applications.
        let ranker = match self.policy.application_book() {
            Some(book) => ranker.with_application_book(book.clone()),
            None => ranker,
        };
        let standing = ranker.standing(&FleetView { now_s, hosts: &hosts, vms: &vms });
        PlanSnapshot { proposal, now_s, hosts, vms, host_ids, vm_ids, ranker, standing }
    }
}

/// A policy's host score with the host's id in place of its index.
fn score_view(host_ids: &[String], s: &HostScore) -> ScoreView {
    ScoreView {
        host_id: host_ids.get(s.host).cloned().unwrap_or_default(),
        score: s.score,
        risk_after: s.risk_after,
        utilisation_after: s.utilisation_after,
        terms: s.terms.clone(),
    }
}

/// Guest and host swap traffic at which a VM counts as wholly squeezed by memory pressure.
const SWAP_SQUEEZED_BYTES_PER_S: f64 = 16.0 * 1048576.0;

/// What the policy hears of a VM's applications: its guest's worst p99 over the declared SLO
/// (applications without an SLO, or without requests, say nothing), with what its host measured
/// of it over the same cycle — the share of each vCPU's wall time spent runnable but waiting for
/// a host CPU (`vcpu.N.delay`: VMware's "CPU ready"), or its swap traffic, whichever is worse;
/// dated by the age of the guest's report on the coordinator's clock.
pub fn app_signal(rec: &crate::state::HostRecord, sample: &presage_protocol::pb::VmSample, host: usize, now_s: f64) -> Option<AppSignal> {
    let guest = sample.guest.as_ref().filter(|g| g.received_ms > 0)?;
    let latency_over_slo = guest
        .apps
        .iter()
        .filter(|a| a.latency_slo_p99_ms > 0.0 && a.requests > 0)
        .map(|a| a.latency_p99_ms / a.latency_slo_p99_ms)
        .fold(None, |worst: Option<f64>, r| Some(worst.map_or(r, |w| w.max(r))))?;
    let c = sample.contention.unwrap_or_default();
    let delay_share = c.vcpu_delay_ms_per_s.max(0.0) / (1000.0 * sample.vcpus.max(1) as f64);
    let swap = ((c.swap_in_bytes_per_s + c.swap_out_bytes_per_s).max(0.0) / SWAP_SQUEEZED_BYTES_PER_S).min(1.0);
    let age_s = rec.sampled_at_ms.saturating_sub(guest.received_ms) as f64 / 1000.0 + rec.last_seen.elapsed().as_secs_f64();
    let signal =
        AppSignal { latency_over_slo, host_contention: delay_share.max(swap).clamp(0.0, 1.0), measured_on: host, at_s: now_s - age_s };
    signal.is_valid().then_some(signal)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::state::test_messages::{reg, report};
    use presage_decide::policy::classic::Detector;

    fn register(state: &mut ClusterState, host: &str, session: u64, now: Instant) {
        state.register(&reg(host, "b"), session, now);
    }

    #[test]
    fn the_live_state_goes_through_the_same_policy_as_the_simulator() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            register(&mut state, h, i as u64, now);
        }
        // Host a: 4 VMs x 2 vCPUs x 2000 MHz at 95 % = 15.2 GHz on an 8 GHz host.
        state.ingest("a", 0, report(1, &[("a1", 0.95), ("a2", 0.95), ("a3", 0.95), ("a4", 0.95)]), now).unwrap();
        state.ingest("b", 1, report(1, &[("b1", 0.10)]), now).unwrap();
        state.ingest("c", 2, report(1, &[]), now).unwrap();
        let mut advisor = Advisor::new(PolicySpec::Classic(Detector::Thr(0.8)), &PresageConfig::default());
        let p = advisor.advise(&state, 0.0).proposal;
        assert_eq!(p.policy, "THR-MMT-0.8");
        assert_eq!((p.hosts_considered, p.vms_considered), (3, 5));
        let from_a: Vec<&ProposedMove> = p.moves.iter().filter(|m| m.from_host == "a").collect();
        assert!(!from_a.is_empty(), "the overloaded host is relieved: {p:?}");
        assert!(from_a.iter().all(|m| m.reason == "overload" && m.to_host != "a"));
        // Never two moves of one VM, never a move onto the overloaded host.
        let mut ids: Vec<&str> = p.moves.iter().map(|m| m.vm_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), p.moves.len());
    }

    #[test]
    fn expected_growth_sums_how_far_each_hosts_vms_p90_exceeds_their_demand_now() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        register(&mut state, "a", 0, now);
        register(&mut state, "b", 1, now);
        // VM g on host a runs at 20 % of 2 x 2000 MHz now and is forecast to reach 60 % (p90);
        // VM f on host b is forecast to stay flat at its 50 %.
        let mut r = report(1, &[("g", 0.2)]);
        let fc = |p90: f32, mid: f32| presage_protocol::pb::VmForecast {
            forecaster: "t".into(),
            step_seconds: 300,
            first_step: 1,
            cpu_p10: vec![mid - 0.05; 12],
            cpu_p50: vec![mid; 12],
            cpu_p90: vec![p90; 12],
            memory: None,
            cpu_peak: p90,
        };
        r.vms[0].forecast = Some(fc(0.6, 0.3));
        state.ingest("a", 0, r, now).unwrap();
        let mut r = report(1, &[("f", 0.5)]);
        r.vms[0].forecast = Some(fc(0.5, 0.5));
        state.ingest("b", 1, r, now).unwrap();
        let plan = Advisor::new(PolicySpec::Presage, &PresageConfig::default()).advise(&state, 0.0);
        let growth = plan.expected_growth();
        // Host a: 0.6 x 4000 - 0.2 x 4000 = 1600 MHz; host b: nothing to add.
        assert_eq!(growth.len(), 1, "{growth:?}");
        assert_eq!(growth[0].0, "a");
        assert!((growth[0].1 - 1600.0).abs() < 1.0, "{growth:?}");
    }

    #[test]
    fn a_drained_host_is_emptied_in_one_plan_and_takes_no_vm() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            register(&mut state, h, i as u64, now);
        }
        state.ingest("a", 0, report(1, &[("a1", 0.2), ("a2", 0.3), ("a3", 0.1)]), now).unwrap();
        state.ingest("b", 1, report(1, &[("b1", 0.2)]), now).unwrap();
        state.ingest("c", 2, report(1, &[("c1", 0.2)]), now).unwrap();
        let draining: std::collections::HashSet<String> = ["a".to_string()].into();
        let plan = Advisor::new(PolicySpec::Presage, &PresageConfig::default()).advise_draining(&state, 0.0, &draining).proposal;
        let drain: Vec<&ProposedMove> = plan.moves.iter().filter(|m| m.reason == "drain").collect();
        let mut moved: Vec<&str> = drain.iter().map(|m| m.vm_id.as_str()).collect();
        moved.sort();
        assert_eq!(moved, ["a1", "a2", "a3"], "{plan:?}");
        assert!(plan.moves.iter().all(|m| m.to_host != "a"), "{plan:?}");
        // No VM moves twice in the plan.
        let mut all: Vec<&str> = plan.moves.iter().map(|m| m.vm_id.as_str()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), plan.moves.len());
    }

    #[test]
    fn unreachable_hosts_are_left_out() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(1));
        register(&mut state, "a", 0, now);
        state.ingest("a", 0, report(1, &[("a1", 0.5)]), now).unwrap();
        state.sweep(now + Duration::from_secs(5));
        let p = Advisor::new(PolicySpec::Dvfs, &PresageConfig::default()).advise(&state, 0.0).proposal;
        assert_eq!((p.hosts_considered, p.vms_considered), (0, 0));
        assert!(p.moves.is_empty());
    }

    /// What reaches the policy of a VM's applications: the worst p99 over a declared SLO (apps
    /// without one, or idle, say nothing), beside the share of its runnable time its vCPUs waited
    /// and its host's utilisation; no guest, no SLO: no signal.
    #[test]
    fn a_guests_figures_reach_the_policy_against_their_slo_with_the_hosts_contention() {
        use presage_protocol::guest_pb::AppFigures;
        use presage_protocol::pb::{GuestApps, HostUsage, VmContention};
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        register(&mut state, "a", 0, now);
        let app = |name: &str, p99: f64, slo: f64, requests: u64| AppFigures {
            name: name.into(),
            latency_p50_ms: p99 / 4.0,
            latency_p95_ms: p99 / 2.0,
            latency_p99_ms: p99,
            latency_slo_p99_ms: slo,
            requests,
            ..Default::default()
        };
        let mut r = report(1, &[("web", 0.5), ("quiet", 0.5), ("bare", 0.5)]);
        r.sampled_at_ms = 10_000;
        r.host = Some(HostUsage { cpu_utilisation: 0.9, ..Default::default() });
        // web: api at 3x its SLO, db within it, a batch job with no SLO far slower; its two vCPUs
        // waited 250 ms per second between them (12.5 % of each one's time).
        r.vms[0].guest = Some(GuestApps {
            received_ms: 8_000,
            interval_s: 5.0,
            apps: vec![app("api", 150.0, 50.0, 100), app("db", 4.0, 10.0, 100), app("batch", 9_000.0, 0.0, 100)],
            frames: None,
            oom_kills: 0,
        });
        r.vms[0].contention = Some(VmContention { vcpu_delay_ms_per_s: 250.0, ..Default::default() });
        // quiet: its SLO app saw no requests.
        r.vms[1].guest =
            Some(GuestApps { received_ms: 8_000, interval_s: 5.0, apps: vec![app("api", 500.0, 50.0, 0)], frames: None, oom_kills: 0 });
        state.ingest("a", 0, r, now).unwrap();
        let rec = state.hosts().next().unwrap();
        let s = app_signal(rec, &rec.vms["web"], 0, 100.0).expect("a signal");
        assert!((s.latency_over_slo - 3.0).abs() < 1e-12, "{s:?}");
        assert!((s.host_contention - 250.0 / 2000.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.measured_on, 0);
        // Dated by its age: 2 s older than the host's report, which is itself a little old.
        assert!(s.at_s <= 98.0 && s.at_s > 90.0, "{s:?}");
        assert_eq!(s.verdict(), presage_decide::policy::application::Verdict::Suffering);
        assert!(app_signal(rec, &rec.vms["quiet"], 0, 100.0).is_none());
        assert!(app_signal(rec, &rec.vms["bare"], 0, 100.0).is_none());
    }

    /// The live path end to end: a guest over its SLO whose host sees its vCPU waiting, on a
    /// host busy besides its VMs, is the plan's first move (and the VM beside it stays).
    #[test]
    fn a_guests_pain_its_host_confirms_puts_it_first_in_the_plan() {
        use presage_protocol::guest_pb::AppFigures;
        use presage_protocol::pb::{GuestApps, HostUsage, VmContention};
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        register(&mut state, "a", 0, now);
        register(&mut state, "b", 1, now);
        let mut advisor = Advisor::new(PolicySpec::Presage, &PresageConfig::default());
        for seq in 1..=4u64 {
            let mut r = report(seq, &[("calm", 0.1), ("hurt", 0.3)]);
            r.sampled_at_ms = 1_000 * seq;
            // Two of a's 4 cores busy with something that is not a VM.
            r.host = Some(HostUsage { cpu_utilisation: 0.66, ..Default::default() });
            r.vms[1].guest = Some(GuestApps {
                received_ms: 1_000 * seq,
                interval_s: 2.0,
                apps: vec![AppFigures {
                    name: "web".into(),
                    latency_p50_ms: 100.0,
                    latency_p95_ms: 200.0,
                    latency_p99_ms: 300.0,
                    latency_slo_p99_ms: 180.0,
                    requests: 8,
                    ..Default::default()
                }],
                frames: None,
                oom_kills: 0,
            });
            r.vms[1].contention = Some(VmContention { vcpu_delay_ms_per_s: 1600.0, ..Default::default() });
            state.ingest("a", 0, r, now).unwrap();
            state.ingest("b", 1, report(seq, &[("light", 0.05)]), now).unwrap();
            let plan = advisor.advise(&state, 10.0 * seq as f64);
            if let Some(m) = plan.proposal.moves.first() {
                assert!(seq <= 2, "moved only at pass {seq}");
                assert_eq!(
                    (m.vm_id.as_str(), m.from_host.as_str(), m.to_host.as_str(), m.reason),
                    ("hurt", "a", "b", "overload"),
                    "{:?}",
                    plan.proposal
                );
                let app = m.why.as_ref().and_then(|w| w.application).expect("application figures");
                assert_eq!(app.verdict, presage_decide::policy::application::Verdict::Suffering);
                assert!(plan.proposal.moves.iter().all(|m| m.vm_id != "calm"), "{:?}", plan.proposal);
                return;
            }
        }
        panic!("the suffering guest was never moved");
    }
}
