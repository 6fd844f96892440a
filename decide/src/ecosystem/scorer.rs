//! The dependency scorer of presage's destination ensemble: a destination costs the loss of
//! dependency score it causes to the VM and to the VMs it serves (a gain is a negative cost), so
//! the ensemble prefers hosts near what a VM needs and near what needs it, with the change shown
//! as one explanation term like every scorer's.

use std::sync::Arc;

use super::declaration::{Priority, Strength};
use super::graph::EcosystemGraph;
use super::score::{MoveEffect, Placement, move_effect, vm_score};
use super::topology::{LatencyRequirement, LatencyTable, Level, Location, level_between};
use crate::policy::FleetView;
use crate::policy::presage::{Candidate, PlacementFilter, PlacementScorer, Rejection, RepairCase, RepairSource};

/// The ecosystem as the policy's fleet indexes it.
#[derive(Clone, Debug, Default)]
pub struct FleetEcosystem {
    pub graph: EcosystemGraph,
    /// Per fleet VM, its graph VM (VMs without a declaration or a neighbour have none).
    pub graph_of_vm: Vec<Option<usize>>,
    /// Per graph VM, its fleet VM.
    pub vm_of_graph: Vec<Option<usize>>,
    /// Per fleet host, its place.
    pub locations: Vec<Location>,
    pub latency: LatencyTable,
    /// Per graph VM, the graph VMs it must share a host with (either way): a required
    /// dependency, met only on one host, between it and an exact match.
    pub host_bound: Vec<Vec<usize>>,
    /// Per graph VM, the graph VMs a required dependency with a latency requirement binds it to
    /// (either way, exact matches), with the requirement.
    pub latency_bound: Vec<Vec<(usize, LatencyRequirement)>>,
    /// Per graph VM, the VMs a fuzzy match joins it to (either way), with their similarity.
    pub similar: Vec<Vec<(usize, f64)>>,
    /// The fleet's hosts by rack and by zone.
    pub hosts_by_rack: std::collections::HashMap<u32, Vec<usize>>,
    pub hosts_by_zone: std::collections::HashMap<u32, Vec<usize>>,
}

impl FleetEcosystem {
    /// Indexes `graph` by fleet VM: `fleet_vm_of(name)` says which fleet VM a graph VM is.
    pub fn new(
        graph: EcosystemGraph,
        fleet_vms: usize,
        fleet_vm_of: &dyn Fn(&str) -> Option<usize>,
        locations: Vec<Location>,
        latency: LatencyTable,
    ) -> FleetEcosystem {
        let mut graph_of_vm = vec![None; fleet_vms];
        let vm_of_graph: Vec<Option<usize>> = (0..graph.len()).map(|g| fleet_vm_of(&graph.vm(g).name).filter(|&f| f < fleet_vms)).collect();
        for (g, f) in vm_of_graph.iter().enumerate() {
            if let Some(f) = f {
                graph_of_vm[*f] = Some(g);
            }
        }
        let latency_bound = latency_bound(&graph);
        let host_bound = latency_bound
            .iter()
            .map(|bound| bound.iter().filter(|(_, r)| latency.farthest_meeting(r) == Some(Level::Host)).map(|(w, _)| *w).collect())
            .collect();
        let mut similar: Vec<Vec<(usize, f64)>> = vec![Vec::new(); graph.len()];
        for e in graph.edges() {
            if let Some(s) = e.similarity {
                for (a, b) in [(e.from, e.to), (e.to, e.from)] {
                    if !similar[a].iter().any(|(w, _)| *w == b) {
                        similar[a].push((b, s));
                    }
                }
            }
        }
        let (mut hosts_by_rack, mut hosts_by_zone) = (std::collections::HashMap::new(), std::collections::HashMap::new());
        for (h, l) in locations.iter().enumerate() {
            hosts_by_rack.entry(l.rack).or_insert_with(Vec::new).push(h);
            hosts_by_zone.entry(l.zone).or_insert_with(Vec::new).push(h);
        }
        FleetEcosystem {
            graph,
            graph_of_vm,
            vm_of_graph,
            locations,
            latency,
            host_bound,
            latency_bound,
            similar,
            hosts_by_rack,
            hosts_by_zone,
        }
    }

    /// Where the fleet's VMs are as planned (`positions`, per fleet VM), as the graph sees it.
    fn host_of<'a>(&'a self, positions: &'a [Option<usize>]) -> impl Fn(usize) -> Option<usize> + 'a {
        move |g: usize| self.vm_of_graph.get(g).copied().flatten().and_then(|f| positions.get(f).copied().flatten())
    }

    /// The graph VMs of a group of fleet VMs (those outside the graph left out).
    fn graph_group(&self, group: &[usize]) -> Vec<usize> {
        group.iter().filter_map(|&v| self.graph_of_vm.get(v).copied().flatten()).collect()
    }

    /// What moving the fleet VMs of `group` to `host` does to the dependency scores (`None`
    /// when none of them is in the graph).
    pub fn effect(&self, positions: &[Option<usize>], group: &[usize], host: usize) -> Option<MoveEffect> {
        let members = self.graph_group(group);
        if members.is_empty() {
            return None;
        }
        let host_of = self.host_of(positions);
        let placement = Placement { host_of: &host_of, locations: &self.locations, latency: &self.latency };
        Some(move_effect(&self.graph, &placement, &members, host))
    }

    /// The fleet VMs that must move with fleet VM `vm`: those bound to it by host-level required
    /// dependencies, directly or through others, that share its host now.
    pub fn bundle(&self, positions: &[Option<usize>], vm: usize) -> Vec<usize> {
        let Some(g) = self.graph_of_vm.get(vm).copied().flatten() else { return Vec::new() };
        let host_of = self.host_of(positions);
        let Some(here) = host_of(g) else { return Vec::new() };
        let mut seen = vec![g];
        let mut at = 0;
        while at < seen.len() {
            let v = seen[at];
            at += 1;
            for &w in &self.host_bound[v] {
                if !seen.contains(&w) && host_of(w) == Some(here) {
                    seen.push(w);
                }
            }
        }
        seen[1..].iter().filter_map(|&w| self.vm_of_graph[w]).collect()
    }

    /// The fleet VMs outside `group` bound to a member by a required latency that is met now.
    pub fn companions(&self, positions: &[Option<usize>], group: &[usize]) -> Vec<usize> {
        let host_of = self.host_of(positions);
        let placement = Placement { host_of: &host_of, locations: &self.locations, latency: &self.latency };
        let members = self.graph_group(group);
        let mut out = Vec::new();
        for &g in &members {
            for &(w, r) in &self.latency_bound[g] {
                let Some(f) = self.vm_of_graph[w] else { continue };
                if members.contains(&w) || out.contains(&f) {
                    continue;
                }
                if placement.level(g, w).is_some_and(|l| r.is_met_by(self.latency.at(l))) {
                    out.push(f);
                }
            }
        }
        out
    }
}

/// Per graph VM, the VMs required dependencies with a latency requirement bind it to: exact
/// matches, both ways, with the requirement (the strictest where two bind the same pair).
fn latency_bound(graph: &EcosystemGraph) -> Vec<Vec<(usize, LatencyRequirement)>> {
    let mut bound: Vec<Vec<(usize, LatencyRequirement)>> = vec![Vec::new(); graph.len()];
    for v in 0..graph.len() {
        for (k, d) in graph.dependencies(v).iter().enumerate() {
            let Some(r) = d.latency.filter(|_| d.strength == Strength::Required) else { continue };
            for e in graph.serving(v, k).filter(|e| e.quality >= 1.0) {
                for (a, b) in [(v, e.to), (e.to, v)] {
                    match bound[a].iter_mut().find(|(w, _)| *w == b) {
                        Some((_, old)) if r.ms < old.ms => *old = r,
                        Some(_) => {}
                        None => bound[a].push((b, r)),
                    }
                }
            }
        }
    }
    bound
}

/// The ecosystem a long-lived policy scores with, replaced when the fleet's indexing changes
/// (the coordinator's pass renumbers its fleet every time).
#[derive(Debug, Default)]
pub struct EcosystemHandle(std::sync::RwLock<Arc<FleetEcosystem>>);

impl EcosystemHandle {
    pub fn new(ecosystem: FleetEcosystem) -> Arc<EcosystemHandle> {
        Arc::new(EcosystemHandle(std::sync::RwLock::new(Arc::new(ecosystem))))
    }

    pub fn set(&self, ecosystem: FleetEcosystem) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ecosystem);
    }

    pub fn get(&self) -> Arc<FleetEcosystem> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Scores with the dependency types' learned weights from now on
    /// ([`EcosystemGraph::set_type_weights`](super::graph::EcosystemGraph::set_type_weights)).
    pub fn set_type_weights(&self, weight_of: &dyn Fn(&str) -> f64) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        Arc::make_mut(&mut slot).graph.set_type_weights(weight_of);
    }
}

/// Required dependencies as a rule on destinations: a host is refused if a group there would
/// break a required dependency that is met now (its own, or one of a VM it serves); among the
/// others, hosts where every required dependency of the group and of the VMs it serves is met
/// are preferred whenever there is one (so a VM joins what it needs and what needs it, and goes
/// elsewhere only when no such host has room). VMs bound on one host move as one bundle.
pub struct RequiredDependencies {
    pub ecosystem: Arc<EcosystemHandle>,
    /// The least dependency-score gain a repair must bring.
    pub min_repair_gain: f64,
}

impl PlacementFilter for RequiredDependencies {
    fn judge(&self, _fleet: &FleetView<'_>, positions: &[Option<usize>], group: &[usize], host: usize) -> Result<bool, Rejection> {
        let Some(effect) = self.ecosystem.get().effect(positions, group, host) else { return Ok(true) };
        if !effect.breaks_required.is_empty() {
            return Err(Rejection::Dependency);
        }
        Ok(effect.own_unmet_after.is_empty() && effect.neighbours_unmet_after.is_empty())
    }

    fn bundle(&self, _fleet: &FleetView<'_>, positions: &[Option<usize>], vm: usize) -> Vec<usize> {
        self.ecosystem.get().bundle(positions, vm)
    }

    fn companions(&self, _fleet: &FleetView<'_>, positions: &[Option<usize>], group: &[usize]) -> Vec<usize> {
        self.ecosystem.get().companions(positions, group)
    }

    /// A repair meets at least one required dependency, gains at least the minimum, and
    /// lowers no VM's required satisfaction.
    fn repairs(&self, _fleet: &FleetView<'_>, positions: &[Option<usize>], group: &[usize], host: usize) -> bool {
        let Some(effect) = self.ecosystem.get().effect(positions, group, host) else { return false };
        !effect.meets_required.is_empty()
            && effect.breaks_required.is_empty()
            && effect.lowers_required().next().is_none()
            && effect.gain() >= self.min_repair_gain
    }
}

/// presage's policy with the ecosystem: the dependency scorer in its ensemble (weight
/// `weights.dependency`), required dependencies as a hard rule that binds host-level groups into
/// bundles, and repair moves for what is left unmet.
pub fn presage_with_ecosystem(
    cfg: crate::policy::presage::PresageConfig,
    ecosystem: Arc<EcosystemHandle>,
) -> crate::policy::presage::PresagePolicy {
    let weight = cfg.weights.dependency;
    let peaks = cfg.weights.peaks;
    let locality = cfg.weights.locality;
    let min_repair_gain = cfg.repair_min_gain;
    crate::policy::presage::PresagePolicy::new(cfg)
        .with_scorer(Box::new(DependencyScorer { ecosystem: ecosystem.clone() }), weight)
        .with_scorer(Box::new(CorrelatedPeaks { ecosystem: ecosystem.clone() }), peaks)
        .with_scorer(Box::new(CallLocality { ecosystem: ecosystem.clone() }), locality)
        .with_filter(Box::new(RequiredDependencies { ecosystem: ecosystem.clone(), min_repair_gain }))
        .with_repair(Box::new(RequiredRepairs { ecosystem }))
}

/// The VMs with a required dependency unmet where they are planned to be, and for each such
/// dependency the VM that could serve it (moving either can repair it); the VMs with more unmet
/// first.
pub struct RequiredRepairs {
    pub ecosystem: Arc<EcosystemHandle>,
}

impl RepairSource for RequiredRepairs {
    fn due(&self, fleet: &FleetView<'_>, positions: &[Option<usize>]) -> Vec<RepairCase> {
        let eco = &self.ecosystem.get();
        let host_of = eco.host_of(positions);
        let placement = Placement { host_of: &host_of, locations: &eco.locations, latency: &eco.latency };
        let mut cases: Vec<((Priority, usize), RepairCase)> = Vec::new();
        for g in 0..eco.graph.len() {
            let Some(vm) = eco.vm_of_graph[g].filter(|&f| f < fleet.vms.len()) else { continue };
            if host_of(g).is_none() {
                continue;
            }
            let score = vm_score(&eco.graph, g, &placement);
            let mut partners = Vec::new();
            let mut unmet = 0;
            // The farthest level a repair may land at: the loosest of the unmet requirements,
            // and at least the rack (VMs gathered onto a third host stay near their own).
            let mut widest = Level::Rack;
            for k in score.unmet_required() {
                let reach = eco.graph.dependencies(g)[k].latency.map_or(Some(Level::Region), |r| eco.latency.farthest_meeting(&r));
                widest = widest.max(reach.unwrap_or(Level::Host));
                // The nearest exact candidate that runs somewhere (with none, no move can meet
                // it).
                let nearest = eco
                    .graph
                    .serving(g, k)
                    .filter(|e| e.quality >= 1.0)
                    .filter_map(|e| placement.level(g, e.to).map(|l| (l, e.to)))
                    .min()
                    .and_then(|(_, to)| eco.vm_of_graph[to]);
                if let Some(p) = nearest {
                    unmet += 1;
                    if !partners.contains(&p) {
                        partners.push(p);
                    }
                }
            }
            if unmet > 0 {
                // Hosts within that level of the VM's partners (a move of the VM), or of the
                // VM (a move of a partner), are the only ones a repair can use.
                let near = (widest < Level::Region).then(|| {
                    let mut hosts: Vec<usize> = Vec::new();
                    for f in std::iter::once(vm).chain(partners.iter().copied()) {
                        let Some(h) = positions.get(f).copied().flatten() else { continue };
                        let l = eco.locations.get(h).copied().unwrap_or_default();
                        match widest {
                            Level::Host | Level::Rack => hosts.extend(eco.hosts_by_rack.get(&l.rack).into_iter().flatten()),
                            _ => hosts.extend(eco.hosts_by_zone.get(&l.zone).into_iter().flatten()),
                        }
                    }
                    hosts.sort_unstable();
                    hosts.dedup();
                    hosts
                });
                let urgency = (eco.graph.vm(g).priority, unmet);
                cases.push((urgency, RepairCase { vm, partners, near }));
            }
        }
        // The most critical first; among equals, those with more unmet, then the cheapest to
        // migrate (least memory to copy).
        let memory = |vm: usize| fleet.vms.get(vm).map_or(0.0, |v| v.ram_mb);
        cases.sort_by(|(a, x), (b, y)| b.cmp(a).then(memory(x.vm).total_cmp(&memory(y.vm))).then(x.vm.cmp(&y.vm)));
        cases.into_iter().map(|(_, c)| c).collect()
    }
}

/// Similar VMs are not stacked on one host when their demand peaks together: a destination
/// costs, per moving VM, the mean over the VMs a fuzzy match joins to it of similarity x the
/// correlation of their p90 forecasts over the horizon (when positive), counting those planned
/// on that host only (0..1 per VM, like a dependency score).
pub struct CorrelatedPeaks {
    pub ecosystem: Arc<EcosystemHandle>,
}

/// Pearson correlation of two VMs' p90 forecasts over the horizon (0 without both forecasts or
/// when either is flat).
pub fn peak_correlation(a: Option<&crate::demand::Forecast>, b: Option<&crate::demand::Forecast>) -> f64 {
    let (Some(a), Some(b)) = (a, b) else { return 0.0 };
    let (x, y): (Vec<f64>, Vec<f64>) = a.q.iter().zip(&b.q).map(|(p, q)| (p[2] as f64, q[2] as f64)).unzip();
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (p, q) in x.iter().zip(&y) {
        sxy += (p - mx) * (q - my);
        sxx += (p - mx) * (p - mx);
        syy += (q - my) * (q - my);
    }
    if sxx <= 1e-12 || syy <= 1e-12 { 0.0 } else { sxy / (sxx * syy).sqrt() }
}

impl PlacementScorer for CorrelatedPeaks {
    fn name(&self) -> &'static str {
        "peaks"
    }

    fn value(&self, c: &Candidate<'_>) -> f64 {
        let eco = self.ecosystem.get();
        let mut cost = 0.0;
        for &vm in c.group {
            let Some(g) = eco.graph_of_vm.get(vm).copied().flatten() else { continue };
            let mut stacked = 0.0;
            for &(w, similarity) in &eco.similar[g] {
                let Some(f) = eco.vm_of_graph[w] else { continue };
                if c.group.contains(&f) || c.positions.get(f).copied().flatten() != Some(c.host_index) {
                    continue;
                }
                let corr = peak_correlation(c.fleet.vms[vm].forecast.as_ref(), c.fleet.vms.get(f).and_then(|v| v.forecast.as_ref()));
                stacked += similarity * corr.max(0.0);
            }
            // The share of its similar VMs it would peak with there: 0..1 per moving VM, on
            // the scale of the dependency score.
            cost += stacked / eco.similar[g].len().max(1) as f64;
        }
        cost
    }
}

/// Calls stay local: the change, from where the moving VMs are to the destination, of the
/// latency between them and the VMs their edges join them to (either way; VMs moving together
/// count as on one host), weighted by each edge's weight x quality, over the total weight, as a
/// share of the cross-region latency (-1..1; a new VM counts from the region level).
pub struct CallLocality {
    pub ecosystem: Arc<EcosystemHandle>,
}

impl PlacementScorer for CallLocality {
    fn name(&self) -> &'static str {
        "locality"
    }

    fn value(&self, c: &Candidate<'_>) -> f64 {
        let eco = self.ecosystem.get();
        let members: Vec<usize> = c.group.iter().filter_map(|&v| eco.graph_of_vm.get(v).copied().flatten()).collect();
        if members.is_empty() {
            return 0.0;
        }
        let host_of = eco.host_of(c.positions);
        let far = eco.latency.at(Level::Region);
        let loc = |h: usize| eco.locations.get(h).copied().unwrap_or_default();
        let latency = |a: Option<usize>, b: usize| match a {
            Some(a) => eco.latency.at(level_between(a, loc(a), b, loc(b))),
            None => far,
        };
        let (mut weight, mut change) = (0.0, 0.0);
        for &g in &members {
            let from = host_of(g);
            let outgoing = (0..eco.graph.dependencies(g).len()).flat_map(|k| eco.graph.serving(g, k)).map(|e| (e.to, e));
            let incoming = eco.graph.served_by(g).map(|e| (e.from, e));
            for (other, e) in outgoing.chain(incoming) {
                if members.contains(&other) {
                    continue;
                }
                let Some(there) = host_of(other) else { continue };
                let w = e.weight * e.quality;
                weight += w;
                change += w * (latency(Some(c.host_index), there) - latency(from, there));
            }
        }
        if weight > 0.0 { change / weight / far } else { 0.0 }
    }
}

pub struct DependencyScorer {
    pub ecosystem: Arc<EcosystemHandle>,
}

impl PlacementScorer for DependencyScorer {
    fn name(&self) -> &'static str {
        "dependency"
    }

    fn value(&self, c: &Candidate<'_>) -> f64 {
        self.ecosystem.get().effect(c.positions, c.group, c.host_index).map_or(0.0, |e| -e.gain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demand::Forecast;
    use crate::ecosystem::declaration::{Declaration, Dependencies, DependencySpec, Profile};
    use crate::ecosystem::graph::MatchOptions;
    use crate::policy::power::HP_ML110_G5;
    use crate::policy::presage::{PresageConfig, PresagePolicy};
    use crate::policy::{FleetView, HostView, VmView};

    fn declaration(name: &str, kind: &str, needs: Option<&str>) -> Declaration {
        Declaration {
            vm_name: name.into(),
            application: None,
            priority: Priority::Normal,
            profile: Some(Profile { kind: kind.into(), ..Profile::default() }),
            dependencies: Dependencies {
                required: needs
                    .map(|k| DependencySpec {
                        kind: k.into(),
                        network_latency_requirement: Some("< 1ms".into()),
                        ..DependencySpec::default()
                    })
                    .into_iter()
                    .collect(),
                preferred: Vec::new(),
            },
        }
    }

    /// Hosts 0 and 1 in zone 0, hosts 2 and 3 in zone 1; the database runs on host 2 and an
    /// unrelated VM of the same size on host 0. The web VM, which requires the database within
    /// 1 ms, goes to zone 1 with the dependency scorer, and its explanation shows why.
    #[test]
    fn a_new_vm_is_placed_near_what_it_requires_and_the_term_says_so() {
        // The database on host 2, another VM on host 0, the web VM not placed yet.
        let (hosts, vms) = four_hosts_with(&[Some(2), Some(0), None]);
        let names = ["db", "other", "web"];
        let eco = policy_ecosystem(&names, vms.len());
        assert_eq!(eco.get().graph_of_vm.iter().filter(|g| g.is_some()).count(), 2);
        let fleet = FleetView { now_s: 10_000.0, hosts: &hosts, vms: &vms };
        let policy = PresagePolicy::new(PresageConfig::default()).with_scorer(Box::new(DependencyScorer { ecosystem: eco.clone() }), 10.0);
        let ranking = policy.rank_new(&fleet, 2, 4);
        let best = &ranking.ranked[0];
        assert!(best.host == 2 || best.host == 3, "placed in zone {} : {ranking:?}", if best.host < 2 { 0 } else { 1 });
        let term = |h: usize| {
            let s = ranking.ranked.iter().find(|s| s.host == h).expect("every host ranked");
            s.terms.iter().find(|t| t.scorer == "dependency").expect("a dependency term").value
        };
        // In zone 1 the requirement is met: the web VM's score goes from 0 to 1 (cost -1). From
        // zone 0 the database is 5 ms away: 0.9 x 1/5 = 0.18 (cost -0.18).
        assert!((term(2) + 1.0).abs() < 1e-12 && (term(3) + 1.0).abs() < 1e-12, "{ranking:?}");
        assert!((term(0) + 0.18).abs() < 1e-12 && (term(1) + 0.18).abs() < 1e-12, "{ranking:?}");

        // As a hard rule: zone 0 is refused outright, for the new VM and for the database, whose
        // move there would break the web VM's requirement once the web VM runs on host 3.
        let eco = policy_ecosystem(&names, vms.len());
        let strict = PresagePolicy::new(PresageConfig::default())
            .with_filter(Box::new(RequiredDependencies { ecosystem: eco.clone(), min_repair_gain: 0.05 }));
        let ranking = strict.rank_new(&fleet, 2, 4);
        assert_eq!(ranking.ranked.iter().map(|s| s.host).collect::<Vec<_>>().len(), 2, "{ranking:?}");
        assert!(ranking.ranked.iter().all(|s| s.host >= 2));
        assert_eq!(ranking.rejected, vec![(Rejection::Dependency, 2)]);
        let mut placed = vms.clone();
        placed[2].host = Some(3);
        let mut hosts3 = hosts.clone();
        hosts3[3].vms.push(2);
        let fleet3 = FleetView { now_s: 10_000.0, hosts: &hosts3, vms: &placed };
        let filter = RequiredDependencies { ecosystem: eco, min_repair_gain: 0.05 };
        let at = crate::policy::presage::positions(&fleet3);
        let refuses = |vm: usize, h: usize| filter.judge(&fleet3, &at, &[vm], h).err();
        assert_eq!(refuses(0, 0), Some(Rejection::Dependency), "the database may not leave the web VM's zone");
        assert_eq!(refuses(0, 3), None, "onto the web VM's host is fine");
        assert_eq!(refuses(1, 2), None, "a VM without dependencies goes anywhere");

        // With zone 1 closed (drained), the web VM still gets a host: the preference gives way.
        let mut full = hosts.clone();
        full[2].schedulable = false;
        full[3].schedulable = false;
        let fleet_full = FleetView { now_s: 10_000.0, hosts: &full, vms: &vms };
        let ranking = strict.rank_new(&fleet_full, 2, 4);
        assert!(!ranking.ranked.is_empty() && ranking.ranked.iter().all(|s| s.host < 2), "{ranking:?}");
        assert!(ranking.rejected.iter().all(|(r, _)| *r != Rejection::Dependency), "{ranking:?}");
    }

    /// The web VM runs in zone 0, its database in zone 1: once the requirement has been unmet
    /// for `repair_after_passes` passes (not before), a pass moves the web VM (or the database)
    /// so that it is met, as a repair, and the next pass has nothing to do.
    #[test]
    fn a_pass_repairs_a_required_dependency_left_unmet() {
        let (hosts, vms) = four_hosts_with(&[Some(2), Some(0), Some(0)]);
        // Fleet VM 0 is the database, 1 something else, 2 the web VM.
        let names = ["db", "other", "web"];
        let eco = policy_ecosystem(&names, vms.len());
        // Consolidation off, so that only repairs move anything.
        let cfg =
            PresageConfig { underload_utilisation: 0.0, underload_power_ratio: 1e9, repair_after_passes: 2, ..PresageConfig::default() };
        let mut policy = presage_with_ecosystem(cfg, eco.clone());
        let fleet = FleetView { now_s: 100_000.0, hosts: &hosts, vms: &vms };
        let first = crate::policy::ConsolidationPolicy::optimise(&mut policy, &fleet);
        assert!(first.is_empty(), "the first pass holds (hysteresis): {first:?}");
        let fleet = FleetView { now_s: 100_300.0, hosts: &hosts, vms: &vms };
        let moves = crate::policy::ConsolidationPolicy::optimise(&mut policy, &fleet);
        let repair = moves.iter().find(|m| matches!(m.reason, crate::policy::MoveReason::Repair(_))).expect("a repair move");
        let (mut after_hosts, mut after_vms) = (hosts.clone(), vms.clone());
        let from = after_vms[repair.vm].host.unwrap();
        after_hosts[from].vms.retain(|&v| v != repair.vm);
        after_hosts[repair.to].vms.push(repair.vm);
        after_vms[repair.vm].host = Some(repair.to);
        // The web VM's requirement is met after the move: database and web in one zone's rack.
        let (db, web) = (after_vms[0].host.unwrap(), after_vms[2].host.unwrap());
        assert!(db >= 2 && web >= 2, "db on {db}, web on {web}: {moves:?}");
        let fleet = FleetView { now_s: 200_000.0, hosts: &after_hosts, vms: &after_vms };
        let at = crate::policy::presage::positions(&fleet);
        assert!(RequiredRepairs { ecosystem: eco }.due(&fleet, &at).is_empty(), "nothing is left to repair");
    }

    /// A prefers, by fuzzy match, what is like B; C is (cosine 0.99), and runs on host 1; D,
    /// alike in load but not in profile, runs on host 2. A new A whose forecast rises with C's
    /// costs more on host 1 than on host 2 (the term says by how much); one whose forecast falls
    /// as C's rises costs nothing more there.
    #[test]
    fn similar_vms_whose_peaks_correlate_are_not_stacked_on_one_host() {
        let profile = |kind: &str, sig: [f64; 2]| Profile { kind: kind.into(), signature: Some(sig.to_vec()), ..Profile::default() };
        let decl = |name: &str, p: Profile, fuzzy: Option<&str>| Declaration {
            priority: Default::default(),
            vm_name: name.into(),
            application: Some("app".into()),
            profile: Some(p),
            dependencies: Dependencies {
                required: Vec::new(),
                preferred: fuzzy
                    .map(|k| DependencySpec { kind: k.into(), fuzzy_match: Some("similar".into()), ..DependencySpec::default() })
                    .into_iter()
                    .collect(),
            },
        };
        let decls = [
            decl("a", profile("svc", [1.0, 0.0]), Some("model")),
            decl("b", profile("model", [0.96, 0.28]), None),
            decl("c", profile("other", [0.95, 0.31]), None),
            decl("d", profile("batch", [0.0, 1.0]), None),
        ];
        let graph = EcosystemGraph::build(&decls, MatchOptions::default(), &|_, _| None);
        let fuzzy: Vec<_> = graph.edges().iter().filter(|e| e.similarity.is_some()).map(|e| graph.vm(e.to).name.clone()).collect();
        assert_eq!(fuzzy, vec!["c".to_string()], "only C is a fuzzy match");
        // Fleet: 0 = c on host 1, 1 = d on host 2, 2 = b on host 3, 3 = the new a.
        let (hosts, mut vms) = four_hosts_with(&[Some(1), Some(2), Some(3), None]);
        let rising = |up: bool| {
            let mut f = Forecast::flat([0.2, 0.3, 0.4]);
            for (h, q) in f.q.iter_mut().enumerate() {
                let x = if up { h as f32 * 0.03 } else { 0.33 - h as f32 * 0.03 };
                *q = [0.2 + x, 0.3 + x, 0.4 + x];
            }
            f
        };
        vms[0].forecast = Some(rising(true));
        vms[1].forecast = Some(rising(true));
        let names = ["c", "d", "b", "a"];
        let handle = EcosystemHandle::new(FleetEcosystem::new(
            graph,
            vms.len(),
            &|n| names.iter().position(|x| *x == n),
            vec![Location::default(); 4],
            LatencyTable::default(),
        ));
        let policy = PresagePolicy::new(PresageConfig::default()).with_scorer(Box::new(CorrelatedPeaks { ecosystem: handle }), 1.0);
        let peaks = |vms: &[VmView], hosts: &[HostView], h: usize| {
            let fleet = FleetView { now_s: 10_000.0, hosts, vms };
            let r = policy.rank_new(&fleet, 3, 4);
            r.ranked.iter().find(|s| s.host == h).expect("ranked").terms.iter().find(|t| t.scorer == "peaks").expect("a term").value
        };
        vms[3].forecast = Some(rising(true));
        let (with_c, with_d) = (peaks(&vms, &hosts, 1), peaks(&vms, &hosts, 2));
        // Identical rising p90s correlate at 1: the cost is C's similarity to B (cos(b, c)).
        let sim_bc = (0.96 * 0.95 + 0.28 * 0.31) / ((0.96f64 * 0.96 + 0.28 * 0.28).sqrt() * (0.95f64 * 0.95 + 0.31 * 0.31).sqrt());
        assert!((with_c - sim_bc).abs() < 1e-9, "{with_c} vs {sim_bc}");
        assert_eq!(with_d, 0.0);
        vms[3].forecast = Some(rising(false));
        assert_eq!(peaks(&vms, &hosts, 1), 0.0, "anti-correlated peaks may share a host");
    }

    /// Four 4-core hosts and one 1-core VM per entry, each running at 30 % on its host (or not
    /// placed).
    fn four_hosts_with(placement: &[Option<usize>]) -> (Vec<HostView>, Vec<VmView>) {
        let mut hosts: Vec<HostView> = (0..4).map(|_| HostView::new(4, 1000.0, 16_384.0, 100.0, HP_ML110_G5)).collect();
        let mut vms = Vec::new();
        for &at in placement {
            let mut v = VmView::unplaced(1, 1000.0, 500.0);
            if let Some(h) = at {
                v.host = Some(h);
                v.demand_mips = 300.0;
                v.forecast = Some(Forecast::flat([0.25, 0.3, 0.35]));
                hosts[h].observed_mips += 300.0;
                hosts[h].vms.push(vms.len());
            }
            vms.push(v);
        }
        (hosts, vms)
    }

    /// Three web VMs, each with its database a zone away: the critical one is repaired first,
    /// then, among equals, the one with less memory to copy.
    #[test]
    fn repairs_are_ordered_critical_first_then_cheapest_to_migrate() {
        // Fleet VMs: db-a, db-b, db-c on host 2; web-a, web-b, web-c on host 0.
        let (hosts, mut vms) = four_hosts_with(&[Some(2), Some(2), Some(2), Some(0), Some(0), Some(0)]);
        vms[3].ram_mb = 4096.0;
        vms[4].ram_mb = 512.0;
        vms[5].ram_mb = 8192.0;
        let app = |d: Declaration, a: &str| Declaration { application: Some(a.into()), ..d };
        let mut critical = app(declaration("web-c", "web", Some("database")), "c");
        critical.priority = Priority::Critical;
        let decls = vec![
            app(declaration("db-a", "database", None), "a"),
            app(declaration("db-b", "database", None), "b"),
            app(declaration("db-c", "database", None), "c"),
            app(declaration("web-a", "web", Some("database")), "a"),
            app(declaration("web-b", "web", Some("database")), "b"),
            critical,
        ];
        let graph = EcosystemGraph::build(&decls, MatchOptions::default(), &|_, _| None);
        let names = ["db-a", "db-b", "db-c", "web-a", "web-b", "web-c"];
        let locations = vec![
            Location { zone: 0, rack: 0 },
            Location { zone: 0, rack: 0 },
            Location { zone: 1, rack: 1 },
            Location { zone: 1, rack: 1 },
        ];
        let eco = EcosystemHandle::new(FleetEcosystem::new(
            graph,
            vms.len(),
            &|n| names.iter().position(|x| *x == n),
            locations,
            LatencyTable::default(),
        ));
        let fleet = FleetView { now_s: 0.0, hosts: &hosts, vms: &vms };
        let due = RequiredRepairs { ecosystem: eco }.due(&fleet, &crate::policy::presage::positions(&fleet));
        // web-c (critical, 8 GiB), then web-b (512 MiB) before web-a (4 GiB).
        assert_eq!(due.iter().map(|c| c.vm).collect::<Vec<_>>(), vec![5, 4, 3], "{due:?}");
    }

    fn policy_ecosystem(names: &[&str], fleet_vms: usize) -> Arc<EcosystemHandle> {
        let graph = EcosystemGraph::build(
            &[declaration("db", "database", None), declaration("web", "web", Some("database"))],
            MatchOptions::default(),
            &|_, _| None,
        );
        let locations = vec![
            Location { zone: 0, rack: 0 },
            Location { zone: 0, rack: 0 },
            Location { zone: 1, rack: 1 },
            Location { zone: 1, rack: 1 },
        ];
        EcosystemHandle::new(FleetEcosystem::new(
            graph,
            fleet_vms,
            &|n| names.iter().position(|x| *x == n),
            locations,
            LatencyTable::default(),
        ))
    }
}
