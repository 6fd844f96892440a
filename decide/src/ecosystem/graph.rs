//! The ecosystem graph: every VM with its profile, and an edge from a VM to each VM that can
//! serve one of its declared dependencies, with how well it matches and how much it weighs.
//!
//! Matching, within the dependency's application (the declaring VM's own unless it names
//! another):
//! - a VM whose profile type is the dependency's type, and whose version is the one asked for
//!   (any, if none is), serves it with quality 1; with another resource profile than the one asked
//!   for, [`PROFILE_MISMATCH_QUALITY`];
//! - for a dependency that allows a fuzzy match, another VM whose profile is similar to the
//!   profile of the type's VMs (cosine of signatures, else Jaccard of labels) at least
//!   [`MatchOptions::fuzzy_threshold`] serves it with quality [`FUZZY_QUALITY`] x the similarity.
//!
//! An edge's weight is its dependency's importance ([`REQUIRED_WEIGHT`] or [`PREFERRED_WEIGHT`],
//! times the weight learned for its type, see [`EcosystemGraph::set_type_weights`]) times
//! `1 + log10(1 + calls per second)` when the call rate between the two VMs is known.

use std::collections::HashMap;

use serde::Serialize;

use super::declaration::{Declaration, DependencySpec, Priority, Profile, Strength};
use super::topology::LatencyRequirement;

/// How much a required dependency counts against a preferred one in a VM's score.
pub const REQUIRED_WEIGHT: f64 = 3.0;
pub const PREFERRED_WEIGHT: f64 = 1.0;
/// The quality of a neighbour of the right type and version but another resource profile.
pub const PROFILE_MISMATCH_QUALITY: f64 = 0.5;
/// A fuzzy neighbour's quality per unit of similarity: fuzzy counts less than exact.
pub const FUZZY_QUALITY: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatchOptions {
    /// The least similarity that makes a fuzzy match, in 0..1.
    pub fuzzy_threshold: f64,
}

impl Default for MatchOptions {
    fn default() -> Self {
        MatchOptions { fuzzy_threshold: 0.9 }
    }
}

/// One VM of the graph.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EcoVm {
    pub name: String,
    pub application: Option<String>,
    pub profile: Profile,
    pub priority: Priority,
}

/// One declared dependency of a VM, as the graph keeps it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dependency {
    pub strength: Strength,
    pub spec: DependencySpec,
    /// The parsed `network_latency_requirement`.
    pub latency: Option<LatencyRequirement>,
    /// The weight learned for its type from what repairs did (1 until something is learned).
    pub learned: f64,
}

impl Dependency {
    /// What its strength alone makes it weigh.
    pub fn declared_importance(&self) -> f64 {
        match self.strength {
            Strength::Required => REQUIRED_WEIGHT,
            Strength::Preferred => PREFERRED_WEIGHT,
        }
    }

    /// What it weighs in its VM's score: its strength's weight times its type's learned weight.
    pub fn importance(&self) -> f64 {
        self.declared_importance() * self.learned
    }
}

/// A VM (`to`) that can serve dependency `dependency` of VM `from`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edge {
    pub from: usize,
    pub to: usize,
    /// Index into `from`'s dependencies.
    pub dependency: usize,
    /// How well `to` matches, in 0..1 (1: exact).
    pub quality: f64,
    /// Importance x call-rate factor.
    pub weight: f64,
    /// For a fuzzy match, the two profiles' similarity.
    pub similarity: Option<f64>,
    /// The observed call rate from `from` to `to` (0 when unknown).
    pub calls_per_s: f64,
}

impl Edge {
    /// Importance x `1 + log10(1 + calls per second)`.
    fn weigh(importance: f64, calls_per_s: f64) -> f64 {
        importance * (1.0 + (1.0 + calls_per_s).log10())
    }
}

/// The graph: VMs, their dependencies, and the edges that can serve them.
#[derive(Clone, Debug, Default)]
pub struct EcosystemGraph {
    vms: Vec<EcoVm>,
    index: HashMap<String, usize>,
    dependencies: Vec<Vec<Dependency>>,
    edges: Vec<Edge>,
    /// Per VM, per dependency: the edges that can serve it.
    serving: Vec<Vec<Vec<usize>>>,
    /// Per VM: the edges that point at it (whom it serves).
    served: Vec<Vec<usize>>,
    /// Per VM: its dependencies' learned weights, importance-weighted (1 without any).
    emphasis: Vec<f64>,
}

/// Cosine similarity of two signatures of one length, clamped to 0..1.
fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    (na > 0.0 && nb > 0.0).then(|| (dot / (na * nb)).clamp(0.0, 1.0))
}

/// How alike two profiles are, in 0..1: the cosine of their signatures when both have one of
/// the same length, else the Jaccard index of their labels (0 when neither has labels).
pub fn similarity(a: &Profile, b: &Profile) -> f64 {
    if let (Some(x), Some(y)) = (&a.signature, &b.signature)
        && let Some(c) = cosine(x, y)
    {
        return c;
    }
    if a.labels.is_empty() && b.labels.is_empty() {
        return 0.0;
    }
    let common = a.labels.iter().filter(|l| b.labels.contains(l)).count();
    let union = a.labels.len() + b.labels.iter().filter(|l| !a.labels.contains(l)).count();
    common as f64 / union as f64
}

/// The quality with which a VM of `profile` serves `spec` by type: `None` if it does not.
fn exact_quality(spec: &DependencySpec, profile: &Profile) -> Option<f64> {
    if profile.kind != spec.kind {
        return None;
    }
    if let Some(v) = &spec.version
        && profile.version.as_ref() != Some(v)
    {
        return None;
    }
    match (&spec.resource_profile, &profile.resource_profile) {
        (Some(want), Some(has)) if want == has => Some(1.0),
        (Some(_), _) => Some(PROFILE_MISMATCH_QUALITY),
        (None, _) => Some(1.0),
    }
}

impl EcosystemGraph {
    /// Builds the graph of `declarations` (validated; one per VM name, the last wins).
    /// `calls_per_s` gives the observed call rate between two VMs (by index) where known.
    pub fn build(declarations: &[Declaration], options: MatchOptions, calls_per_s: &dyn Fn(usize, usize) -> Option<f64>) -> EcosystemGraph {
        let mut g = EcosystemGraph::default();
        for d in declarations {
            let vm =
                EcoVm { name: d.vm_name.clone(), application: d.application.clone(), profile: d.profile_or_name(), priority: d.priority };
            let deps: Vec<Dependency> = d
                .each_dependency()
                .map(|(strength, _, spec)| Dependency {
                    strength,
                    spec: spec.clone(),
                    latency: spec.network_latency_requirement.as_deref().and_then(|l| l.parse().ok()),
                    learned: 1.0,
                })
                .collect();
            match g.index.get(&d.vm_name) {
                Some(&i) => {
                    g.vms[i] = vm;
                    g.dependencies[i] = deps;
                }
                None => {
                    g.index.insert(d.vm_name.clone(), g.vms.len());
                    g.vms.push(vm);
                    g.dependencies.push(deps);
                }
            }
        }
        // VMs by (application, type), for exact matches; by application, for fuzzy ones.
        let mut by_type: HashMap<(Option<&str>, &str), Vec<usize>> = HashMap::new();
        let mut by_app: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
        for (i, vm) in g.vms.iter().enumerate() {
            by_type.entry((vm.application.as_deref(), vm.profile.kind.as_str())).or_default().push(i);
            by_app.entry(vm.application.as_deref()).or_default().push(i);
        }
        let n = g.vms.len();
        g.served = vec![Vec::new(); n];
        g.serving = g.dependencies.iter().map(|d| vec![Vec::new(); d.len()]).collect();
        let mut edges = Vec::new();
        for from in 0..n {
            for (k, dep) in g.dependencies[from].iter().enumerate() {
                let app = dep.spec.application.as_deref().or(g.vms[from].application.as_deref());
                let mut found: Vec<(usize, f64, Option<f64>)> = Vec::new();
                let exact = by_type.get(&(app, dep.spec.kind.as_str())).map(Vec::as_slice).unwrap_or(&[]);
                for &to in exact {
                    if to != from
                        && let Some(q) = exact_quality(&dep.spec, &g.vms[to].profile)
                    {
                        found.push((to, q, None));
                    }
                }
                if dep.spec.fuzzy_match.is_some() {
                    // The profile the type stands for: its first VM's, else one labelled by it.
                    let reference = exact.first().map(|&r| g.vms[r].profile.clone()).unwrap_or_else(|| Profile {
                        kind: dep.spec.kind.clone(),
                        labels: vec![dep.spec.kind.clone()],
                        ..Profile::default()
                    });
                    for &to in by_app.get(&app).map(Vec::as_slice).unwrap_or(&[]) {
                        if to == from || found.iter().any(|(f, _, _)| *f == to) {
                            continue;
                        }
                        let s = similarity(&reference, &g.vms[to].profile);
                        if s >= options.fuzzy_threshold {
                            found.push((to, FUZZY_QUALITY * s, Some(s)));
                        }
                    }
                }
                for (to, quality, similarity) in found {
                    let calls = calls_per_s(from, to).filter(|c| c.is_finite()).unwrap_or(0.0).max(0.0);
                    let weight = Edge::weigh(dep.importance(), calls);
                    edges.push(Edge { from, to, dependency: k, quality, weight, similarity, calls_per_s: calls });
                }
            }
        }
        for (e, edge) in edges.iter().enumerate() {
            g.serving[edge.from][edge.dependency].push(e);
            g.served[edge.to].push(e);
        }
        g.edges = edges;
        g.emphasis = vec![1.0; n];
        g
    }

    /// Sets each dependency type's learned weight (`weight_of(type)`, 1 for a type nothing was
    /// learned about): it multiplies the importance of the dependencies of that type in their
    /// VM's score and in their edges' weights, and a VM's *emphasis* (its dependencies' learned
    /// weights, importance-weighted) multiplies the change of its score when moves are ranked.
    pub fn set_type_weights(&mut self, weight_of: &dyn Fn(&str) -> f64) {
        for (v, deps) in self.dependencies.iter_mut().enumerate() {
            for d in deps.iter_mut() {
                let w = weight_of(&d.spec.kind);
                d.learned = if w.is_finite() && w > 0.0 { w } else { 1.0 };
            }
            let declared: f64 = deps.iter().map(Dependency::declared_importance).sum();
            self.emphasis[v] = if declared > 0.0 { deps.iter().map(Dependency::importance).sum::<f64>() / declared } else { 1.0 };
        }
        for e in &mut self.edges {
            e.weight = Edge::weigh(self.dependencies[e.from][e.dependency].importance(), e.calls_per_s);
        }
    }

    /// How much a change of `vm`'s score counts when moves are ranked (1 until weights are
    /// learned).
    pub fn emphasis(&self, vm: usize) -> f64 {
        self.emphasis.get(vm).copied().unwrap_or(1.0)
    }

    pub fn len(&self) -> usize {
        self.vms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vms.is_empty()
    }

    pub fn vm(&self, i: usize) -> &EcoVm {
        &self.vms[i]
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn dependencies(&self, vm: usize) -> &[Dependency] {
        &self.dependencies[vm]
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The edges that can serve dependency `dependency` of `vm`.
    pub fn serving(&self, vm: usize, dependency: usize) -> impl Iterator<Item = &Edge> {
        self.serving[vm][dependency].iter().map(|&e| &self.edges[e])
    }

    /// The edges from VMs that `vm` serves.
    pub fn served_by(&self, vm: usize) -> impl Iterator<Item = &Edge> {
        self.served[vm].iter().map(|&e| &self.edges[e])
    }
}
