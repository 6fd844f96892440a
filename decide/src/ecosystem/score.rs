//! How well each VM is served where the VMs are now: the satisfaction of each dependency and the
//! VM's dependency score.
//!
//! - A dependency's satisfaction is the best, over the VMs that can serve it (the graph's
//!   edges), of `quality x closeness`. Closeness is 1 when the two VMs' level (host, rack, zone,
//!   region) meets the dependency's latency requirement (any level, without one); otherwise
//!   `PARTIAL_LATENCY x requirement / latency at their level`, so nearer counts for more. A VM
//!   or neighbour that is not placed serves nothing.
//! - A required dependency is met when its satisfaction is 1: an exact match within the latency.
//! - A VM's score is the importance-weighted mean of its dependencies' satisfactions (required
//!   [`REQUIRED_WEIGHT`](super::graph::REQUIRED_WEIGHT), preferred
//!   [`PREFERRED_WEIGHT`](super::graph::PREFERRED_WEIGHT)); a VM without dependencies scores 1.

use serde::Serialize;

use super::declaration::Strength;
use super::graph::EcosystemGraph;
use super::topology::{LatencyTable, Level, Location, level_between};

/// The most a dependency whose latency requirement is not met can count for.
pub const PARTIAL_LATENCY: f64 = 0.9;

/// Where the graph's VMs are: a graph VM's host (none while it is not placed), and each host's
/// location (hosts past the end are at the default location).
pub struct Placement<'a> {
    pub host_of: &'a dyn Fn(usize) -> Option<usize>,
    pub locations: &'a [Location],
    pub latency: &'a LatencyTable,
}

impl Placement<'_> {
    /// The level between two placed VMs.
    pub fn level(&self, a: usize, b: usize) -> Option<Level> {
        let (ha, hb) = ((self.host_of)(a)?, (self.host_of)(b)?);
        let loc = |h: usize| self.locations.get(h).copied().unwrap_or_default();
        Some(level_between(ha, loc(ha), hb, loc(hb)))
    }
}

/// One VM's scores before and after a move.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct ScoreChange {
    pub vm: usize,
    pub before: f64,
    pub after: f64,
    /// [`VmScore::required_satisfaction`] before and after.
    pub required_before: f64,
    pub required_after: f64,
    /// How much the change counts ([`EcosystemGraph::emphasis`]).
    pub emphasis: f64,
}

/// What moving a group of VMs (one VM, or a bundle that travels together) to one host does to
/// the dependency scores: the moved VMs' own and those of the VMs they serve.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MoveEffect {
    /// The moved VMs, in the group's order.
    pub moved: Vec<ScoreChange>,
    /// The VMs outside the group that a moved VM serves.
    pub neighbours: Vec<ScoreChange>,
    /// Required dependencies met before and not after: (VM, dependency).
    pub breaks_required: Vec<(usize, usize)>,
    /// Required dependencies not met before and met after.
    pub meets_required: Vec<(usize, usize)>,
    /// The moved VMs' own required dependencies left unmet after the move: (VM, dependency).
    pub own_unmet_after: Vec<(usize, usize)>,
    /// Required dependencies of the VMs they serve, that a moved VM could serve, left unmet
    /// after the move: (VM, dependency).
    pub neighbours_unmet_after: Vec<(usize, usize)>,
}

impl MoveEffect {
    /// The change of the moved VMs' scores plus their neighbours' (positive: better served),
    /// each weighted by its VM's emphasis (the weights learned for its dependencies' types).
    pub fn gain(&self) -> f64 {
        self.moved.iter().chain(&self.neighbours).map(|c| c.emphasis * (c.after - c.before)).sum()
    }

    /// The VMs, moved or served, whose required satisfaction the move lowers.
    pub fn lowers_required(&self) -> impl Iterator<Item = usize> + '_ {
        self.moved.iter().chain(&self.neighbours).filter(|c| c.required_after < c.required_before - 1e-12).map(|c| c.vm)
    }
}

/// The effect of moving the VMs of `group` (graph VMs, not empty) to `host` under `placement`.
pub fn move_effect(graph: &EcosystemGraph, placement: &Placement, group: &[usize], host: usize) -> MoveEffect {
    let moved = |v: usize| if group.contains(&v) { Some(host) } else { (placement.host_of)(v) };
    let after = Placement { host_of: &moved, locations: placement.locations, latency: placement.latency };
    let mut effect = MoveEffect::default();
    let compare = |v: usize, effect: &mut MoveEffect| {
        let (b, a) = (vm_score(graph, v, placement), vm_score(graph, v, &after));
        if group.contains(&v) {
            effect.own_unmet_after.extend(a.unmet_required().map(|k| (v, k)));
        } else if (placement.host_of)(v).is_some() {
            // Only the dependencies a moved VM could serve, of neighbours that are placed.
            effect
                .neighbours_unmet_after
                .extend(a.unmet_required().filter(|&k| graph.serving(v, k).any(|e| group.contains(&e.to))).map(|k| (v, k)));
        }
        for (k, (db, da)) in b.dependencies.iter().zip(&a.dependencies).enumerate() {
            if db.strength == Strength::Required {
                if db.met && !da.met {
                    effect.breaks_required.push((v, k));
                } else if !db.met && da.met {
                    effect.meets_required.push((v, k));
                }
            }
        }
        ScoreChange {
            vm: v,
            before: b.score,
            after: a.score,
            required_before: b.required_satisfaction(),
            required_after: a.required_satisfaction(),
            emphasis: graph.emphasis(v),
        }
    };
    for &v in group {
        let change = compare(v, &mut effect);
        effect.moved.push(change);
    }
    let mut served: Vec<usize> = group.iter().flat_map(|&g| graph.served_by(g).map(|e| e.from)).filter(|v| !group.contains(v)).collect();
    served.sort_unstable();
    served.dedup();
    for v in served {
        let change = compare(v, &mut effect);
        effect.neighbours.push(change);
    }
    effect
}

/// One dependency of one VM, where things are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DependencyState {
    pub strength: Strength,
    pub satisfaction: f64,
    /// The neighbour that serves it best, and at what level.
    pub best: Option<(usize, Level)>,
    /// Satisfaction 1 (an exact neighbour within the latency).
    pub met: bool,
}

/// One VM's score.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmScore {
    pub score: f64,
    pub dependencies: Vec<DependencyState>,
}

impl VmScore {
    /// The required dependencies (indices) that are not met.
    pub fn unmet_required(&self) -> impl Iterator<Item = usize> + '_ {
        self.dependencies.iter().enumerate().filter(|(_, d)| d.strength == Strength::Required && !d.met).map(|(i, _)| i)
    }

    /// The weighted satisfaction of the required dependencies alone, in 0..1 (1 without any).
    pub fn required_satisfaction(&self) -> f64 {
        let required: Vec<f64> = self.dependencies.iter().filter(|d| d.strength == Strength::Required).map(|d| d.satisfaction).collect();
        if required.is_empty() { 1.0 } else { required.iter().sum::<f64>() / required.len() as f64 }
    }
}

/// The satisfaction of dependency `dep` of `vm` under `placement`.
pub fn dependency_state(graph: &EcosystemGraph, vm: usize, dep: usize, placement: &Placement) -> DependencyState {
    let d = &graph.dependencies(vm)[dep];
    let mut best: Option<(f64, usize, Level)> = None;
    for e in graph.serving(vm, dep) {
        let Some(level) = placement.level(vm, e.to) else { continue };
        let s = e.quality * closeness(d, placement.latency.at(level));
        // Ties go to the nearer neighbour, then the lower index: the same answer every time.
        if best.is_none_or(|(bs, bt, bl)| s > bs || (s == bs && (level, e.to) < (bl, bt))) {
            best = Some((s, e.to, level));
        }
    }
    let satisfaction = best.map_or(0.0, |(s, _, _)| s);
    DependencyState { strength: d.strength, satisfaction, best: best.map(|(_, to, l)| (to, l)), met: satisfaction >= 1.0 - 1e-12 }
}

/// How well `latency_ms` between two VMs meets dependency `d`'s latency requirement: 1 when
/// it does (or there is none), else [`PARTIAL_LATENCY`] x requirement / latency.
pub fn closeness(d: &super::graph::Dependency, latency_ms: f64) -> f64 {
    match &d.latency {
        None => 1.0,
        Some(r) if r.is_met_by(latency_ms) => 1.0,
        Some(r) => PARTIAL_LATENCY * (r.ms / latency_ms).min(1.0),
    }
}

/// How well edge `e` is served where its two VMs are: quality x closeness (0 while either is
/// not placed).
pub fn edge_satisfaction(graph: &EcosystemGraph, e: &super::graph::Edge, placement: &Placement) -> f64 {
    let Some(level) = placement.level(e.from, e.to) else { return 0.0 };
    e.quality * closeness(&graph.dependencies(e.from)[e.dependency], placement.latency.at(level))
}

/// A VM's standing with its dependencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Every required dependency met.
    Compliant,
    /// One is not, and a move that would meet it is planned or running.
    Pending,
    /// One is not, and nothing planned meets it.
    NonCompliant,
}

/// A VM's score, status, and (when not compliant) why and which VMs it waits on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Standing {
    pub score: f64,
    pub status: Status,
    pub reason: Option<String>,
    /// The graph VMs that could serve its unmet required dependencies.
    pub blockers: Vec<usize>,
}

/// `vm`'s standing under `placement`; `pending`: a move of it or a blocker is planned or running.
pub fn standing(graph: &EcosystemGraph, vm: usize, placement: &Placement, pending: bool) -> Standing {
    let s = vm_score(graph, vm, placement);
    let mut reasons = Vec::new();
    let mut blockers = Vec::new();
    for k in s.unmet_required() {
        let d = &graph.dependencies(vm)[k];
        let want = d.spec.network_latency_requirement.as_deref().map(str::trim).unwrap_or("anywhere");
        match s.dependencies[k].best {
            Some((to, level)) => {
                reasons.push(format!(
                    "requires {} {want}: the nearest ({}) is at {} level, {} ms",
                    d.spec.kind,
                    graph.vm(to).name,
                    level.name(),
                    placement.latency.at(level)
                ));
                blockers.push(to);
            }
            None => reasons.push(format!("requires {} {want}: no running VM serves it", d.spec.kind)),
        }
    }
    let status = if reasons.is_empty() {
        Status::Compliant
    } else if pending {
        Status::Pending
    } else {
        Status::NonCompliant
    };
    Standing { score: s.score, status, reason: (!reasons.is_empty()).then(|| reasons.join("; ")), blockers }
}

/// `vm`'s dependency score under `placement`.
pub fn vm_score(graph: &EcosystemGraph, vm: usize, placement: &Placement) -> VmScore {
    let deps = graph.dependencies(vm);
    let states: Vec<DependencyState> = (0..deps.len()).map(|k| dependency_state(graph, vm, k, placement)).collect();
    let total: f64 = deps.iter().map(|d| d.importance()).sum();
    let score = if total > 0.0 { deps.iter().zip(&states).map(|(d, s)| d.importance() * s.satisfaction).sum::<f64>() / total } else { 1.0 };
    VmScore { score, dependencies: states }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecosystem::declaration::{Declaration, Profile};
    use crate::ecosystem::graph::MatchOptions;

    const SEED: &str = r#"{"vm_name": "WebTier1", "application": "shop",
       "dependencies": {
         "required":  [{"type": "database", "version": "PostgreSQL 14", "network_latency_requirement": " < 1ms"}],
         "preferred": [{"type": "caching", "version": "Redis 6", "resource_profile": "high-memory"},
                       {"type": "analytics", "fuzzy_match": "similar ML model signature"}]}}"#;

    fn vm(name: &str, app: &str, kind: &str, version: Option<&str>, resource: Option<&str>, signature: Option<Vec<f64>>) -> Declaration {
        Declaration {
            vm_name: name.into(),
            application: Some(app.into()),
            profile: Some(Profile {
                kind: kind.into(),
                version: version.map(Into::into),
                resource_profile: resource.map(Into::into),
                labels: Vec::new(),
                signature,
            }),
            ..Declaration::default()
        }
    }

    /// The seed declaration and the VMs around it: which can serve what, and how well.
    fn shop() -> EcosystemGraph {
        let decls = vec![
            serde_json::from_str(SEED).unwrap(),
            vm("db1", "shop", "database", Some("PostgreSQL 14"), None, None),
            vm("db2", "shop", "database", Some("PostgreSQL 12"), None, None),
            vm("cache1", "shop", "caching", Some("Redis 6"), Some("high-memory"), None),
            vm("cache2", "shop", "caching", Some("Redis 6"), Some("cpu"), None),
            vm("ml1", "shop", "analytics", None, None, Some(vec![1.0, 0.0])),
            vm("ml2", "shop", "trainer", None, None, Some(vec![0.96, 0.28])),
            vm("ml3", "shop", "batch", None, None, Some(vec![0.0, 1.0])),
            vm("db-other", "other", "database", Some("PostgreSQL 14"), None, None),
        ];
        EcosystemGraph::build(&decls, MatchOptions::default(), &|_, _| None)
    }

    #[test]
    fn edges_go_to_the_vms_that_match_type_version_profile_or_similarity() {
        let g = shop();
        let web = g.find("WebTier1").unwrap();
        let served = |dep: usize| -> Vec<(String, f64)> {
            let mut v: Vec<(String, f64)> =
                g.serving(web, dep).map(|e| (g.vm(e.to).name.clone(), (e.quality * 1e6).round() / 1e6)).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        // PostgreSQL 12 is not 14; another application's database does not serve this one.
        assert_eq!(served(0), vec![("db1".to_string(), 1.0)]);
        // The wrong resource profile counts half.
        assert_eq!(served(1), vec![("cache1".to_string(), 1.0), ("cache2".to_string(), 0.5)]);
        // ml2's signature is at cosine 0.96 of ml1's (the analytics VM): fuzzy, 0.5 x 0.96.
        // ml3's is orthogonal.
        assert_eq!(served(2), vec![("ml1".to_string(), 1.0), ("ml2".to_string(), 0.48)]);
        assert_eq!(g.served_by(g.find("db1").unwrap()).count(), 1);
        assert_eq!(g.edges().iter().map(|e| e.weight).fold(0.0, f64::max), 3.0, "required edges weigh 3, without call rates");
    }

    #[test]
    fn the_score_weighs_required_over_preferred_and_counts_nearer_for_more() {
        let g = shop();
        let latency = LatencyTable::default();
        // Hosts 0 and 1 share a rack, 2 is another rack of zone 0, 3 is in zone 1.
        let locations =
            [Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 1 }, Location { zone: 1, rack: 5 }];
        let mut host_of = vec![None; g.len()];
        let at = |host_of: &mut Vec<Option<usize>>, name: &str, h: Option<usize>| host_of[g.find(name).unwrap()] = h;
        at(&mut host_of, "WebTier1", Some(0));
        at(&mut host_of, "db1", Some(1));
        at(&mut host_of, "cache1", Some(3));
        at(&mut host_of, "ml2", Some(0));
        let web = g.find("WebTier1").unwrap();
        let score = |host_of: &[Option<usize>]| {
            vm_score(&g, web, &Placement { host_of: &|v| host_of[v], locations: &locations, latency: &latency })
        };

        // database in the rack (0.25 ms < 1 ms): 1; caching anywhere (no latency asked): 1;
        // analytics only through ml2, fuzzy: 0.48. (3 x 1 + 1 + 0.48) / 5.
        let s = score(&host_of);
        assert!((s.score - 4.48 / 5.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.unmet_required().count(), 0);
        assert_eq!(s.dependencies[0].best, Some((g.find("db1").unwrap(), Level::Rack)));

        // The database two zones away (5 ms): 0.9 x 1/5 = 0.18, and the requirement is unmet.
        at(&mut host_of, "db1", Some(3));
        let s = score(&host_of);
        assert!((s.score - (3.0 * 0.18 + 1.48) / 5.0).abs() < 1e-12, "{s:?}");
        assert_eq!(s.unmet_required().collect::<Vec<_>>(), vec![0]);
        assert!((s.required_satisfaction() - 0.18).abs() < 1e-12);

        // Nothing serves a VM that is not placed; a VM without dependencies scores 1.
        at(&mut host_of, "WebTier1", None);
        assert_eq!(score(&host_of).score, 0.0);
        let db1 = g.find("db1").unwrap();
        assert_eq!(vm_score(&g, db1, &Placement { host_of: &|v| host_of[v], locations: &locations, latency: &latency }).score, 1.0);
    }

    /// Moving the database away from the web VM's rack breaks the web VM's required dependency
    /// (the database's own score does not change: it needs nothing); moving it back meets it.
    #[test]
    fn a_move_is_scored_by_what_it_does_to_the_vm_and_the_vms_it_serves() {
        let g = shop();
        let latency = LatencyTable::default();
        let locations = [Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 0 }, Location { zone: 1, rack: 5 }];
        let (web, db1, cache1) = (g.find("WebTier1").unwrap(), g.find("db1").unwrap(), g.find("cache1").unwrap());
        let host_of = |v: usize| [(web, 0), (db1, 1), (cache1, 0)].iter().find(|(x, _)| *x == v).map(|(_, h)| *h);
        let here = Placement { host_of: &host_of, locations: &locations, latency: &latency };
        // Web now: database met (rack), caching met, analytics nothing: (3 + 1 + 0) / 5.
        let away = move_effect(&g, &here, &[db1], 2);
        assert_eq!((away.moved[0].before, away.moved[0].after), (1.0, 1.0));
        assert_eq!(away.neighbours.len(), 1);
        let n = away.neighbours[0];
        assert_eq!(n.vm, web);
        assert!((n.before - 0.8).abs() < 1e-12 && (n.after - (3.0 * 0.18 + 1.0) / 5.0).abs() < 1e-12, "{away:?}");
        assert!((n.required_before - 1.0).abs() < 1e-12 && (n.required_after - 0.18).abs() < 1e-12, "{away:?}");
        assert_eq!(away.lowers_required().collect::<Vec<_>>(), vec![web]);
        assert_eq!(away.breaks_required, vec![(web, 0)]);
        assert!(away.gain() < 0.0);
        // Onto the web VM's own host: still met, no gain.
        let onto = move_effect(&g, &here, &[db1], 0);
        assert!(onto.breaks_required.is_empty() && onto.gain().abs() < 1e-12, "{onto:?}");
        // The web VM moving to the other zone breaks its own requirement.
        let web_away = move_effect(&g, &here, &[web], 2);
        assert_eq!(web_away.breaks_required, vec![(web, 0)]);
        assert!(web_away.moved[0].after < web_away.moved[0].before);
        // The web VM and its database as one bundle: nothing breaks between them; the cache
        // (no latency asked) still serves from anywhere.
        let both = move_effect(&g, &here, &[web, db1], 2);
        assert!(both.breaks_required.is_empty() && both.lowers_required().next().is_none(), "{both:?}");
        assert_eq!(both.moved.len(), 2);
    }
}
