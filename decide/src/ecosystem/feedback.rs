//! The feedback loop: what repair moves did for the applications, and what that teaches about
//! the weight of each dependency type.
//!
//! Before and after each repair move the caller records the affected VMs' application figures
//! ([`AppFigures`]: call latency and throughput where their guests report them, else the
//! modelled call latency of [`modelled_call_latency`]). A figure's relative change is evidence
//! only beyond its noise floor ([`NoiseFloor`]: identical VMs measured run to run on Azure's
//! public VM noise data vary 1.5–7 % in PostgreSQL latency and 26 % p5–p95 in Redis GET
//! throughput, so the floors are 7 % and 26 %):
//! - better beyond the floor (latency down, or throughput up) and nothing worse beyond it: the
//!   weight of each dependency type the move served goes up, x (1 + `step`);
//! - worse beyond the floor and nothing better: it goes down, x (1 - `step`);
//! - otherwise (within the noise, or better in one figure and worse in the other): no change,
//!   and the observation is counted as such.
//!
//! Weights stay within `min_weight..=max_weight`. The types a move served are those of the
//! dependencies (of the moved VM and of the VMs it serves) whose satisfaction it changed. What a
//! type's weight does in decisions is [`EcosystemGraph::set_type_weights`]'s.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::graph::EcosystemGraph;
use super::score::{Placement, dependency_state};

/// The relative run-to-run variation below which a change in a figure is not evidence.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// Of latency: PostgreSQL latency varies 1.5–7 % run to run on identical VMs.
    pub latency: f64,
    /// Of throughput: Redis GET throughput spans 26 % p5–p95.
    pub throughput: f64,
}

impl Default for NoiseFloor {
    fn default() -> Self {
        NoiseFloor { latency: 0.07, throughput: 0.26 }
    }
}

/// How the loop learns.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LearningConfig {
    pub noise_floor: NoiseFloor,
    /// The relative change of a type's weight per observation beyond the noise floor.
    pub step: f64,
    pub min_weight: f64,
    pub max_weight: f64,
    /// How many observations are kept for the operator to read.
    pub keep_recent: usize,
}

impl Default for LearningConfig {
    fn default() -> Self {
        LearningConfig { noise_floor: NoiseFloor::default(), step: 0.1, min_weight: 0.5, max_weight: 2.0, keep_recent: 64 }
    }
}

/// What the applications around a move feel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppFigures {
    /// Call latency, milliseconds (lower is better).
    pub latency_ms: Option<f64>,
    /// Requests served per second (higher is better).
    pub throughput_per_s: Option<f64>,
}

/// What one observation says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Better,
    Worse,
    /// Within the noise floor, or better in one figure and worse in the other.
    WithinNoise,
}

/// One repair move's before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The moved VM.
    pub vm: String,
    /// When the move was judged (seconds, the caller's clock).
    pub at_s: f64,
    /// The dependency types whose satisfaction the move changed (the ones it teaches about).
    pub types: Vec<String>,
    pub before: AppFigures,
    pub after: AppFigures,
    /// Relative changes, percent (negative latency change: faster).
    pub latency_change_pct: Option<f64>,
    pub throughput_change_pct: Option<f64>,
    pub verdict: Verdict,
}

/// What is known of one dependency type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeLearning {
    pub weight: f64,
    /// Repair moves that changed a dependency of this type's satisfaction.
    pub observations: u64,
    pub better: u64,
    pub worse: u64,
    pub within_noise: u64,
    /// The mean relative latency change of its observations, percent.
    pub latency_change_pct_mean: Option<f64>,
}

impl Default for TypeLearning {
    fn default() -> Self {
        TypeLearning { weight: 1.0, observations: 0, better: 0, worse: 0, within_noise: 0, latency_change_pct_mean: None }
    }
}

/// What the loop has learned: per type, and the latest observations. This is what is persisted
/// and shown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub types: BTreeMap<String, TypeLearning>,
    pub recent: VecDeque<Observation>,
    /// Judged moves that changed no dependency's satisfaction (nothing to learn from).
    #[serde(default)]
    pub unattributed: u64,
}

impl Learned {
    /// The learned weight of `kind` (1 for a type nothing is known of).
    pub fn weight(&self, kind: &str) -> f64 {
        self.types.get(kind).map_or(1.0, |t| t.weight)
    }
}

/// Relative change in percent; `None` unless both figures are there and finite.
fn change_pct(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    let (b, a) = (before?, after?);
    if !(b.is_finite() && a.is_finite()) || b < 0.0 || a < 0.0 {
        return None;
    }
    if b == 0.0 {
        return Some(if a == 0.0 { 0.0 } else { 100.0 });
    }
    Some(100.0 * (a - b) / b)
}

/// The verdict on a before/after pair under `floor`, with the relative changes.
pub fn judge(before: AppFigures, after: AppFigures, floor: NoiseFloor) -> (Verdict, Option<f64>, Option<f64>) {
    let latency = change_pct(before.latency_ms, after.latency_ms);
    let throughput = change_pct(before.throughput_per_s, after.throughput_per_s);
    let beyond = |pct: Option<f64>, floor: f64| {
        pct.map_or(0, |p| {
            if p > 100.0 * floor {
                1
            } else if p < -100.0 * floor {
                -1
            } else {
                0
            }
        })
    };
    // +1: better, -1: worse (latency going up is worse).
    let signals = [-beyond(latency, floor.latency), beyond(throughput, floor.throughput)];
    let better = signals.contains(&1);
    let worse = signals.contains(&-1);
    let verdict = match (better, worse) {
        (true, false) => Verdict::Better,
        (false, true) => Verdict::Worse,
        _ => Verdict::WithinNoise,
    };
    (verdict, latency, throughput)
}

/// The call latency (ms) of the edges to and from `vms` under `placement`, weighted by their
/// call rate where it is known and by their declared importance where not; `None` when no such
/// edge has both ends placed.
pub fn modelled_call_latency(graph: &EcosystemGraph, placement: &Placement, vms: &[usize]) -> Option<f64> {
    let (mut sum, mut weights) = (0.0, 0.0);
    let mut seen = std::collections::HashSet::new();
    for &v in vms {
        let outgoing = (0..graph.dependencies(v).len()).flat_map(|k| graph.serving(v, k));
        for e in outgoing.chain(graph.served_by(v)) {
            if !seen.insert((e.from, e.to, e.dependency)) {
                continue;
            }
            let Some(level) = placement.level(e.from, e.to) else { continue };
            let w = if e.calls_per_s > 0.0 { e.calls_per_s } else { graph.dependencies(e.from)[e.dependency].declared_importance() };
            sum += w * placement.latency.at(level);
            weights += w;
        }
    }
    (weights > 0.0).then(|| sum / weights)
}

/// `measured` where the guests report figures, else the modelled call latency around `vm`.
fn figures_of(graph: &EcosystemGraph, placement: &Placement, vm: usize, measured: Option<AppFigures>) -> AppFigures {
    measured.unwrap_or_else(|| AppFigures { latency_ms: modelled_call_latency(graph, placement, &[vm]), throughput_per_s: None })
}

/// The satisfaction of every dependency a move of `vms` can change: theirs and those of the
/// VMs they serve, by (VM name, dependency index).
fn satisfactions(graph: &EcosystemGraph, placement: &Placement, vms: &[usize]) -> Vec<(String, usize, f64)> {
    let mut owners: Vec<usize> = vms.to_vec();
    owners.extend(vms.iter().flat_map(|&v| graph.served_by(v).map(|e| e.from)));
    owners.sort_unstable();
    owners.dedup();
    owners
        .into_iter()
        .flat_map(|v| {
            (0..graph.dependencies(v).len())
                .map(move |k| (graph.vm(v).name.clone(), k, dependency_state(graph, v, k, placement).satisfaction))
        })
        .collect()
}

#[derive(Clone, Debug)]
struct PendingRepair {
    vm: String,
    before: AppFigures,
    satisfactions: Vec<(String, usize, f64)>,
}

/// Follows repair moves from start to end and learns from each.
#[derive(Clone, Debug)]
pub struct FeedbackLoop {
    pub config: LearningConfig,
    learned: Learned,
    pending: HashMap<String, PendingRepair>,
}

impl FeedbackLoop {
    pub fn new(config: LearningConfig, learned: Learned) -> FeedbackLoop {
        FeedbackLoop { config, learned, pending: HashMap::new() }
    }

    pub fn learned(&self) -> &Learned {
        &self.learned
    }

    /// Moves started and not yet judged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records the figures before repair move `key` of graph VM `vm` starts: `measured` where
    /// its guests report them, else the modelled call latency.
    pub fn before(&mut self, key: String, graph: &EcosystemGraph, placement: &Placement, vm: usize, measured: Option<AppFigures>) {
        let before = figures_of(graph, placement, vm, measured);
        let satisfactions = satisfactions(graph, placement, &[vm]);
        self.pending.insert(key, PendingRepair { vm: graph.vm(vm).name.clone(), before, satisfactions });
    }

    /// Forgets move `key` (it did not happen).
    pub fn abandon(&mut self, key: &str) {
        self.pending.remove(key);
    }

    /// Judges move `key` now that it is done (`placement` has the VM where it went) and learns
    /// from it; `None` for a move `before` never saw, or whose VM left the graph. The returned
    /// observation says whether any weight changed through its verdict and types.
    pub fn after(
        &mut self,
        key: &str,
        graph: &EcosystemGraph,
        placement: &Placement,
        measured: Option<AppFigures>,
        at_s: f64,
    ) -> Option<Observation> {
        let p = self.pending.remove(key)?;
        let vm = graph.find(&p.vm)?;
        let after = figures_of(graph, placement, vm, measured);
        let mut types: Vec<String> = p
            .satisfactions
            .iter()
            .filter_map(|(name, k, before)| {
                let v = graph.find(name)?;
                let dep = graph.dependencies(v).get(*k)?;
                let now = dependency_state(graph, v, *k, placement).satisfaction;
                ((now - before).abs() > 1e-9).then(|| dep.spec.kind.clone())
            })
            .collect();
        types.sort();
        types.dedup();
        let (verdict, latency_change_pct, throughput_change_pct) = judge(p.before, after, self.config.noise_floor);
        let observation =
            Observation { vm: p.vm, at_s, types, before: p.before, after, latency_change_pct, throughput_change_pct, verdict };
        self.learn(&observation);
        Some(observation)
    }

    /// Folds `o` into what is learned.
    pub fn learn(&mut self, o: &Observation) {
        let c = self.config;
        if o.types.is_empty() {
            self.learned.unattributed += 1;
        }
        for kind in &o.types {
            let t = self.learned.types.entry(kind.clone()).or_default();
            t.observations += 1;
            match o.verdict {
                Verdict::Better => {
                    t.better += 1;
                    t.weight = (t.weight * (1.0 + c.step)).min(c.max_weight);
                }
                Verdict::Worse => {
                    t.worse += 1;
                    t.weight = (t.weight * (1.0 - c.step)).max(c.min_weight);
                }
                Verdict::WithinNoise => t.within_noise += 1,
            }
            if let Some(pct) = o.latency_change_pct {
                let n = t.observations as f64;
                t.latency_change_pct_mean = Some(t.latency_change_pct_mean.map_or(pct, |m| m + (pct - m) / n));
            }
        }
        self.learned.recent.push_back(o.clone());
        while self.learned.recent.len() > c.keep_recent {
            self.learned.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecosystem::declaration::{Declaration, Dependencies, DependencySpec, Profile};
    use crate::ecosystem::graph::MatchOptions;
    use crate::ecosystem::score::move_effect;
    use crate::ecosystem::topology::{LatencyTable, Location};

    fn figures(latency_ms: f64) -> AppFigures {
        AppFigures { latency_ms: Some(latency_ms), throughput_per_s: None }
    }

    #[test]
    fn only_changes_beyond_the_noise_floor_are_evidence() {
        let floor = NoiseFloor::default();
        // 6 % faster is within PostgreSQL's 7 % run-to-run noise; 8 % is not.
        assert_eq!(judge(figures(1.0), figures(0.94), floor).0, Verdict::WithinNoise);
        assert_eq!(judge(figures(1.0), figures(0.92), floor).0, Verdict::Better);
        assert_eq!(judge(figures(1.0), figures(1.08), floor).0, Verdict::Worse);
        // Throughput: 20 % more is within Redis's 26 % spread; 30 % is not.
        let tp = |t: f64| AppFigures { latency_ms: None, throughput_per_s: Some(t) };
        assert_eq!(judge(tp(100.0), tp(120.0), floor).0, Verdict::WithinNoise);
        assert_eq!(judge(tp(100.0), tp(130.0), floor).0, Verdict::Better);
        // Faster but serving far less: mixed evidence, no verdict.
        let both = |l: f64, t: f64| AppFigures { latency_ms: Some(l), throughput_per_s: Some(t) };
        assert_eq!(judge(both(1.0, 100.0), both(0.5, 60.0), floor).0, Verdict::WithinNoise);
        // Missing or absurd figures say nothing.
        assert_eq!(judge(AppFigures::default(), figures(0.1), floor).0, Verdict::WithinNoise);
        assert_eq!(judge(figures(f64::NAN), figures(0.1), floor).0, Verdict::WithinNoise);
        let (_, pct, _) = judge(figures(2.0), figures(1.0), floor);
        assert_eq!(pct, Some(-50.0));
    }

    fn observation(kind: &str, verdict: Verdict) -> Observation {
        Observation {
            vm: "v".into(),
            at_s: 0.0,
            types: vec![kind.into()],
            before: figures(1.0),
            after: figures(1.0),
            latency_change_pct: None,
            throughput_change_pct: None,
            verdict,
        }
    }

    #[test]
    fn weights_move_by_the_step_within_bounds_and_never_on_noise() {
        let mut f = FeedbackLoop::new(LearningConfig::default(), Learned::default());
        for _ in 0..5 {
            f.learn(&observation("database", Verdict::WithinNoise));
        }
        assert_eq!(f.learned().weight("database"), 1.0);
        assert_eq!(f.learned().types["database"].within_noise, 5);
        f.learn(&observation("database", Verdict::Better));
        assert!((f.learned().weight("database") - 1.1).abs() < 1e-12);
        for _ in 0..50 {
            f.learn(&observation("database", Verdict::Better));
            f.learn(&observation("caching", Verdict::Worse));
        }
        assert_eq!(f.learned().weight("database"), 2.0);
        assert_eq!(f.learned().weight("caching"), 0.5);
        assert_eq!(f.learned().weight("analytics"), 1.0);
        assert_eq!(f.learned().recent.len(), LearningConfig::default().keep_recent);
        // What is learned survives a round trip through its stored form.
        let json = serde_json::to_string(f.learned()).unwrap();
        assert_eq!(&serde_json::from_str::<Learned>(&json).unwrap(), f.learned());
    }

    fn decl(name: &str, kind: &str, required: &[&str]) -> Declaration {
        Declaration {
            priority: Default::default(),
            vm_name: name.into(),
            application: Some("shop".into()),
            profile: Some(Profile { kind: kind.into(), ..Profile::default() }),
            dependencies: Dependencies {
                required: required
                    .iter()
                    .map(|k| DependencySpec {
                        kind: (*k).into(),
                        network_latency_requirement: Some("< 1ms".into()),
                        ..DependencySpec::default()
                    })
                    .collect(),
                preferred: Vec::new(),
            },
        }
    }

    /// A web VM whose database is two zones away: the repair brings the database next to it;
    /// the modelled call latency falls from the region's 5 ms to the host's 0.05 ms, so the
    /// database type's weight goes up, and with it the web VM's emphasis and every gain that
    /// involves it.
    #[test]
    fn a_repair_that_brings_a_database_close_raises_the_database_weight() {
        let mut g =
            EcosystemGraph::build(&[decl("web", "web", &["database"]), decl("db", "database", &[])], MatchOptions::default(), &|_, _| None);
        let (web, db) = (g.find("web").unwrap(), g.find("db").unwrap());
        let latency = LatencyTable::default();
        let locations = [Location { zone: 0, rack: 0 }, Location { zone: 1, rack: 5 }];
        let apart = |v: usize| Some(if v == web { 0 } else { 1 });
        let together = |_: usize| Some(0);
        let before = Placement { host_of: &apart, locations: &locations, latency: &latency };
        let gain_before = move_effect(&g, &before, &[db], 0).gain();
        let mut f = FeedbackLoop::new(LearningConfig::default(), Learned::default());
        f.before("m1".into(), &g, &before, db, None);
        assert_eq!(f.pending(), 1);
        let after = Placement { host_of: &together, locations: &locations, latency: &latency };
        let o = f.after("m1", &g, &after, None, 60.0).unwrap();
        assert_eq!(o.types, vec!["database".to_string()]);
        assert_eq!(o.verdict, Verdict::Better);
        let near = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-12);
        assert!(near(o.before.latency_ms, latency.region) && near(o.after.latency_ms, latency.host), "{o:?}");
        assert!(f.learned().weight("database") > 1.0);
        // A move never started, or judged twice, teaches nothing.
        assert!(f.after("m1", &g, &after, None, 61.0).is_none());

        let learned = f.learned().clone();
        g.set_type_weights(&|k| learned.weight(k));
        assert!((g.emphasis(web) - learned.weight("database")).abs() < 1e-12);
        assert_eq!(g.emphasis(db), 1.0, "the database itself needs nothing");
        let gain_after = move_effect(&g, &before, &[db], 0).gain();
        assert!((gain_after - gain_before * learned.weight("database")).abs() < 1e-9, "{gain_before} {gain_after}");
        assert!(g.edges()[0].weight > 3.0, "the edge weighs its type's learned weight too");
    }

    /// A move that makes its VM's calls slower beyond the noise lowers its type's weight; one
    /// that changes no dependency's satisfaction teaches about no type.
    #[test]
    fn a_move_that_slows_calls_lowers_the_weight_and_one_that_changes_nothing_is_unattributed() {
        let g = EcosystemGraph::build(
            &[decl("web", "web", &["cache"]), decl("cache", "cache", &[]), decl("batch", "batch", &[])],
            MatchOptions::default(),
            &|_, _| None,
        );
        let (web, batch) = (g.find("web").unwrap(), g.find("batch").unwrap());
        let latency = LatencyTable::default();
        let locations = [Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 1 }];
        let near = |_: usize| Some(0);
        let far = |v: usize| Some(if v == web { 2 } else { 0 });
        let mut f = FeedbackLoop::new(LearningConfig::default(), Learned::default());
        f.before("m".into(), &g, &Placement { host_of: &near, locations: &locations, latency: &latency }, web, None);
        let o = f.after("m", &g, &Placement { host_of: &far, locations: &locations, latency: &latency }, None, 1.0).unwrap();
        assert_eq!((o.verdict, o.types.clone()), (Verdict::Worse, vec!["cache".to_string()]));
        assert!(f.learned().weight("cache") < 1.0);
        // The batch VM has no edges: no figures, no types.
        f.before("b".into(), &g, &Placement { host_of: &near, locations: &locations, latency: &latency }, batch, None);
        let o = f.after("b", &g, &Placement { host_of: &far, locations: &locations, latency: &latency }, None, 2.0).unwrap();
        assert!(o.types.is_empty() && o.verdict == Verdict::WithinNoise);
        assert_eq!(f.learned().unattributed, 1);
    }
}
