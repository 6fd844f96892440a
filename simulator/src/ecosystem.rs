//! Ecosystem scenarios (the format of `../shared/data/ecosystems/README.md`): which trace VMs
//! form which multi-tier application, what each is and needs of its neighbours, how often they
//! call each other, the topology's shape and latencies, and host failures. [`EcosystemScenario`]
//! turns a file into declarations (one per service instance, named `<app>-<copy>/<vm_name>`,
//! each application copy an application of its own) and call rates; [`EcosystemFigures`] are
//! what a placement gives: calls across hosts and racks, their mean latency, dependency scores
//! and required dependencies violated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::collections::BTreeMap;
use std::sync::Arc;

use presage_decide::ecosystem::declaration::{Declaration, Dependencies, Profile};
use presage_decide::ecosystem::feedback::{FeedbackLoop, Learned, LearningConfig, TypeLearning, Verdict};
use presage_decide::ecosystem::graph::{EcosystemGraph, MatchOptions};
use presage_decide::ecosystem::score::{Placement, vm_score};
use presage_decide::ecosystem::scorer::EcosystemHandle;
use presage_decide::ecosystem::topology::{LatencyTable, Level, Location};

#[derive(Debug, thiserror::Error)]
pub enum EcosystemError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    topology: TopologyFile,
    applications: Vec<ApplicationFile>,
    #[serde(default)]
    events: Vec<HostFailure>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    hosts_per_rack: usize,
    racks_per_zone: usize,
    latency_ms: LatencyTable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationFile {
    name: String,
    copies: usize,
    requests_per_s: f64,
    services: Vec<ServiceFile>,
    #[serde(default)]
    calls: Vec<CallFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    vm_name: String,
    profile: Profile,
    #[serde(default)]
    dependencies: Dependencies,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallFile {
    from: String,
    to: String,
    per_request: f64,
}

/// A host that fails at `at_s` seconds into the run; its VMs restart elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFailure {
    pub at_s: f64,
    pub fail_host: usize,
}

/// A scenario, unrolled: one declaration per service instance, in trace-VM order.
#[derive(Clone, Debug)]
pub struct EcosystemScenario {
    pub name: String,
    pub hosts_per_rack: usize,
    pub racks_per_zone: usize,
    pub latency: LatencyTable,
    /// Declaration `i` belongs to trace VM `i` (the VMs after the last one belong to no
    /// application).
    pub declarations: Vec<Declaration>,
    /// Calls per second between two declarations (by index).
    pub calls: Vec<(usize, usize, f64)>,
    pub events: Vec<HostFailure>,
}

impl EcosystemScenario {
    pub fn load(path: &Path) -> Result<EcosystemScenario, EcosystemError> {
        let text = std::fs::read_to_string(path).map_err(|source| EcosystemError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a scenario; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<EcosystemScenario, EcosystemError> {
        let file: File = serde_json::from_str(text).map_err(|source| EcosystemError::Parse { path: path.into(), source })?;
        let invalid = |what: String| EcosystemError::Invalid { path: path.into(), what };
        if file.topology.hosts_per_rack == 0 || file.topology.racks_per_zone == 0 {
            return Err(invalid("topology: hosts_per_rack and racks_per_zone must be at least 1".into()));
        }
        file.topology.latency_ms.validate().map_err(|e| invalid(format!("topology: {e}")))?;
        let mut declarations = Vec::new();
        let mut calls = Vec::new();
        for (a, app) in file.applications.iter().enumerate() {
            if !(app.requests_per_s.is_finite() && app.requests_per_s >= 0.0) {
                return Err(invalid(format!("applications[{a}].requests_per_s is {}", app.requests_per_s)));
            }
            let index: HashMap<&str, usize> = app.services.iter().enumerate().map(|(i, s)| (s.vm_name.as_str(), i)).collect();
            if index.len() != app.services.len() {
                return Err(invalid(format!("applications[{a}] ({}) names a service twice", app.name)));
            }
            for (c, call) in app.calls.iter().enumerate() {
                for end in [&call.from, &call.to] {
                    if !index.contains_key(end.as_str()) {
                        return Err(invalid(format!("applications[{a}].calls[{c}] names {end:?}, which is not a service of {}", app.name)));
                    }
                }
                if !(call.per_request.is_finite() && call.per_request >= 0.0) {
                    return Err(invalid(format!("applications[{a}].calls[{c}].per_request is {}", call.per_request)));
                }
            }
            for copy in 0..app.copies {
                let first = declarations.len();
                let application = format!("{}-{copy}", app.name);
                for s in &app.services {
                    declarations.push(Declaration {
                        priority: Default::default(),
                        vm_name: format!("{application}/{}", s.vm_name),
                        application: Some(application.clone()),
                        profile: Some(s.profile.clone()),
                        dependencies: s.dependencies.clone(),
                    });
                }
                for call in &app.calls {
                    calls.push((first + index[call.from.as_str()], first + index[call.to.as_str()], app.requests_per_s * call.per_request));
                }
            }
        }
        for (i, d) in declarations.iter().enumerate() {
            d.validate().map_err(|errors| {
                invalid(format!("declaration {i}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
            })?;
        }
        Ok(EcosystemScenario {
            name: file.name,
            hosts_per_rack: file.topology.hosts_per_rack,
            racks_per_zone: file.topology.racks_per_zone,
            latency: file.topology.latency_ms,
            declarations,
            calls,
            events: file.events,
        })
    }

    /// Host `h`'s place: rack h / hosts_per_rack, zone rack / racks_per_zone.
    pub fn location(&self, host: usize) -> Location {
        let rack = (host / self.hosts_per_rack) as u32;
        Location { rack, zone: rack / self.racks_per_zone as u32 }
    }

    pub fn locations(&self, hosts: usize) -> Vec<Location> {
        (0..hosts).map(|h| self.location(h)).collect()
    }

    /// The graph of the scenario's declarations, edges weighted by the call rates.
    pub fn graph(&self, options: MatchOptions) -> EcosystemGraph {
        let rates: HashMap<(usize, usize), f64> = self.calls.iter().map(|&(a, b, r)| ((a, b), r)).collect();
        EcosystemGraph::build(&self.declarations, options, &|a, b| rates.get(&(a, b)).copied())
    }

    /// What placing declaration `i` on `host_of(i)` gives.
    pub fn figures(&self, graph: &EcosystemGraph, hosts: usize, host_of: &dyn Fn(usize) -> Option<usize>) -> EcosystemFigures {
        let locations = self.locations(hosts);
        let placement = Placement { host_of, locations: &locations, latency: &self.latency };
        let (mut total, mut cross_host, mut cross_rack, mut latency) = (0.0, 0.0, 0.0, 0.0);
        for &(a, b, rate) in &self.calls {
            let Some(level) = placement.level(a, b) else { continue };
            total += rate;
            if level != Level::Host {
                cross_host += rate;
            }
            if level > Level::Rack {
                cross_rack += rate;
            }
            latency += rate * self.latency.at(level);
        }
        let mut scores = Vec::new();
        let mut violating = 0;
        for vm in 0..graph.len() {
            if host_of(vm).is_none() {
                continue;
            }
            let s = vm_score(graph, vm, &placement);
            // A requirement nothing running can serve (every candidate gone) is the application's
            // outage, not the placement's: it is not counted.
            if s.unmet_required().any(|k| s.dependencies[k].best.is_some()) {
                violating += 1;
            }
            scores.push(s.score);
        }
        scores.sort_by(f64::total_cmp);
        let pct = |x: f64| if total > 0.0 { 100.0 * x / total } else { 0.0 };
        EcosystemFigures {
            cross_host_calls_pct: pct(cross_host),
            cross_rack_calls_pct: pct(cross_rack),
            call_latency_ms_mean: if total > 0.0 { latency / total } else { 0.0 },
            dependency_score_mean: if scores.is_empty() { 1.0 } else { scores.iter().sum::<f64>() / scores.len() as f64 },
            dependency_score_p5: scores.get(((scores.len() as f64 * 0.05).ceil() as usize).saturating_sub(1)).copied().unwrap_or(1.0),
            vms_violating_required: violating,
        }
    }
}

/// What one placement of a scenario's VMs gives.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct EcosystemFigures {
    /// The share of call traffic between VMs on different hosts, percent.
    pub cross_host_calls_pct: f64,
    /// Between VMs in different racks.
    pub cross_rack_calls_pct: f64,
    /// Calls weighted by the latency of the level between caller and callee.
    pub call_latency_ms_mean: f64,
    pub dependency_score_mean: f64,
    /// The 5th percentile of the VMs' dependency scores.
    pub dependency_score_p5: f64,
    /// VMs with a required dependency unmet.
    pub vms_violating_required: usize,
}

/// Follows a run over an ecosystem: the figures at every scheduling step, VM-hours of required
/// dependencies violated after the first hour, and the VMs still violating at the end.
#[derive(Clone, Debug)]
pub struct EcosystemTracker {
    scenario: EcosystemScenario,
    graph: EcosystemGraph,
    hosts: usize,
    steps: usize,
    sum: EcosystemFigures,
    p5_sum: f64,
    violation_vm_hours: f64,
    last: EcosystemFigures,
    failures: Vec<FailureRecovery>,
    /// Repair moves judged: all, better, worse.
    observed: [u64; 3],
    /// The feedback loop over repair moves, and the policy's ecosystem it teaches (the tracker's
    /// own graph keeps the declared weights, so figures compare across policies).
    feedback: FeedbackLoop,
    learner: Option<Arc<EcosystemHandle>>,
}

/// How the ecosystem came back from one host failure.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FailureRecovery {
    pub at_s: f64,
    pub host: usize,
    /// VMs that ran there and restarted elsewhere, and those no host could take.
    pub vms_restarted: usize,
    pub vms_lost: usize,
    /// VMs with a required dependency unmet at the last pass before the failure and at the
    /// first pass after it.
    pub noncompliant_before: usize,
    pub noncompliant_after: usize,
    /// Policy passes after the failure until no more VMs had a required dependency unmet than
    /// before it (the pass that found it so not counted); `None` while it never happened.
    pub recovery_passes: Option<u32>,
}

/// What a run over an ecosystem gives, added to its report.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EcosystemReport {
    pub ecosystem: String,
    /// VM-hours with a required dependency unmet, after the first hour.
    pub required_violation_vm_hours: f64,
    /// Means over the scheduling steps.
    pub dependency_score_mean: f64,
    pub dependency_score_p5: f64,
    pub cross_host_calls_pct: f64,
    pub cross_rack_calls_pct: f64,
    pub call_latency_ms_mean: f64,
    /// Migrations started to repair a dependency.
    pub repair_moves: u64,
    /// The host failures of the scenario's events, and how the VMs came back from each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_failures: Vec<FailureRecovery>,
    /// VMs with a required dependency unmet at the end.
    pub noncompliant_vms_end: usize,
    /// What the feedback loop learned from the repair moves, per dependency type.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub learned: BTreeMap<String, TypeLearning>,
    /// Repair moves judged before and after, and how many of them were better, worse or
    /// within the noise floor.
    pub feedback_observations: u64,
    pub feedback_better: u64,
    pub feedback_worse: u64,
}

impl EcosystemTracker {
    pub fn new(scenario: EcosystemScenario, graph: EcosystemGraph, hosts: usize) -> EcosystemTracker {
        EcosystemTracker {
            scenario,
            graph,
            hosts,
            steps: 0,
            sum: EcosystemFigures::default(),
            p5_sum: 0.0,
            violation_vm_hours: 0.0,
            last: EcosystemFigures::default(),
            failures: Vec::new(),
            feedback: FeedbackLoop::new(LearningConfig::default(), Learned::default()),
            learner: None,
            observed: [0; 3],
        }
    }

    /// Teaches `handle` (the policy's ecosystem) the weights the feedback loop learns.
    pub fn learning_into(mut self, handle: Arc<EcosystemHandle>) -> EcosystemTracker {
        self.learner = Some(handle);
        self
    }

    /// Records the modelled figures before repair move `key` of trace VM `vm` starts.
    pub fn repair_started(&mut self, key: u64, vm: usize, host_of: &dyn Fn(usize) -> Option<usize>) {
        if vm >= self.graph.len() {
            return;
        }
        let locations = self.scenario.locations(self.hosts);
        let placement = Placement { host_of, locations: &locations, latency: &self.scenario.latency };
        self.feedback.before(key.to_string(), &self.graph, &placement, vm, None);
    }

    /// Forgets repair move `key` (it was cut off).
    pub fn repair_abandoned(&mut self, key: u64) {
        self.feedback.abandon(&key.to_string());
    }

    /// Judges repair move `key`, done at `t`, and passes what is learned to the policy.
    pub fn repair_finished(&mut self, key: u64, t: f64, host_of: &dyn Fn(usize) -> Option<usize>) {
        let locations = self.scenario.locations(self.hosts);
        let placement = Placement { host_of, locations: &locations, latency: &self.scenario.latency };
        let Some(o) = self.feedback.after(&key.to_string(), &self.graph, &placement, None, t) else { return };
        self.observed[0] += 1;
        match o.verdict {
            Verdict::Better => self.observed[1] += 1,
            Verdict::Worse => self.observed[2] += 1,
            Verdict::WithinNoise => {}
        }
        if o.verdict != Verdict::WithinNoise
            && !o.types.is_empty()
            && let Some(handle) = &self.learner
        {
            let learned = self.feedback.learned();
            handle.set_type_weights(&|kind| learned.weight(kind));
        }
    }

    /// The scenario's host failures.
    pub fn events(&self) -> &[HostFailure] {
        &self.scenario.events
    }

    /// Records that host `host` failed at `t`, its VMs restarted elsewhere (or lost).
    pub fn host_failed(&mut self, t: f64, host: usize, vms_restarted: usize, vms_lost: usize) {
        let noncompliant_before = self.last.vms_violating_required;
        self.failures.push(FailureRecovery {
            at_s: t,
            host,
            vms_restarted,
            vms_lost,
            noncompliant_before,
            noncompliant_after: 0,
            recovery_passes: None,
        });
    }

    /// Records the placement at `t` seconds, which holds for the next `step_s` seconds.
    pub fn observe(&mut self, t: f64, step_s: f64, host_of: &dyn Fn(usize) -> Option<usize>) {
        let f = self.scenario.figures(&self.graph, self.hosts, host_of);
        self.steps += 1;
        self.sum.cross_host_calls_pct += f.cross_host_calls_pct;
        self.sum.cross_rack_calls_pct += f.cross_rack_calls_pct;
        self.sum.call_latency_ms_mean += f.call_latency_ms_mean;
        self.sum.dependency_score_mean += f.dependency_score_mean;
        self.p5_sum += f.dependency_score_p5;
        if t > 3600.0 {
            self.violation_vm_hours += f.vms_violating_required as f64 * step_s / 3600.0;
        }
        for failure in self.failures.iter_mut().filter(|r| r.recovery_passes.is_none() && r.at_s <= t) {
            // Observed after each pass: the first observation is the pass at the failure.
            let passes = ((t - failure.at_s) / step_s).round() as u32;
            if passes == 0 {
                failure.noncompliant_after = f.vms_violating_required;
            }
            if f.vms_violating_required <= failure.noncompliant_before {
                failure.recovery_passes = Some(passes);
            }
        }
        self.last = f;
    }

    pub fn report(&self) -> EcosystemReport {
        let n = self.steps.max(1) as f64;
        EcosystemReport {
            ecosystem: self.scenario.name.clone(),
            required_violation_vm_hours: self.violation_vm_hours,
            dependency_score_mean: self.sum.dependency_score_mean / n,
            dependency_score_p5: self.p5_sum / n,
            cross_host_calls_pct: self.sum.cross_host_calls_pct / n,
            cross_rack_calls_pct: self.sum.cross_rack_calls_pct / n,
            call_latency_ms_mean: self.sum.call_latency_ms_mean / n,
            repair_moves: 0,
            host_failures: self.failures.clone(),
            noncompliant_vms_end: self.last.vms_violating_required,
            learned: self.feedback.learned().types.clone(),
            feedback_observations: self.observed[0],
            feedback_better: self.observed[1],
            feedback_worse: self.observed[2],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{"name": "small", "source": "by hand",
      "topology": {"hosts_per_rack": 2, "racks_per_zone": 2, "latency_ms": {"host": 0.05, "rack": 0.25, "zone": 1.5, "region": 5.0}},
      "applications": [{"name": "shop", "copies": 2, "requests_per_s": 10.0,
        "services": [
          {"vm_name": "web", "profile": {"type": "web"},
           "dependencies": {"required": [{"type": "db", "network_latency_requirement": "< 1ms"}]}},
          {"vm_name": "db", "profile": {"type": "db"}}],
        "calls": [{"from": "web", "to": "db", "per_request": 2.0}]}],
      "events": [{"at_s": 600, "fail_host": 1}]}"#;

    #[test]
    fn copies_unroll_into_applications_of_their_own_with_their_calls() {
        let s = EcosystemScenario::parse(SMALL, Path::new("small.json")).unwrap();
        let names: Vec<&str> = s.declarations.iter().map(|d| d.vm_name.as_str()).collect();
        assert_eq!(names, vec!["shop-0/web", "shop-0/db", "shop-1/web", "shop-1/db"]);
        assert_eq!(s.calls, vec![(0, 1, 20.0), (2, 3, 20.0)]);
        assert_eq!(s.events, vec![HostFailure { at_s: 600.0, fail_host: 1 }]);
        assert_eq!((s.location(3), s.location(4)), (Location { rack: 1, zone: 0 }, Location { rack: 2, zone: 1 }));
        // Each web VM is served by its own copy's database only.
        let g = s.graph(MatchOptions::default());
        let served: Vec<(usize, usize)> = g.edges().iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(served, vec![(0, 1), (2, 3)]);
        // 20 calls/s: weight 3 x (1 + log10 21).
        assert!((g.edges()[0].weight - 3.0 * (1.0 + 21f64.log10())).abs() < 1e-12);
    }

    #[test]
    fn figures_follow_the_placement() {
        let s = EcosystemScenario::parse(SMALL, Path::new("small.json")).unwrap();
        let g = s.graph(MatchOptions::default());
        // Copy 0 on one host; copy 1 split across zones (hosts 0 and 4).
        let hosts = [Some(0), Some(0), Some(0), Some(4)];
        let f = s.figures(&g, 6, &|v| hosts[v]);
        assert_eq!(f.cross_host_calls_pct, 50.0);
        assert_eq!(f.cross_rack_calls_pct, 50.0);
        assert!((f.call_latency_ms_mean - (0.05 + 5.0) / 2.0).abs() < 1e-12);
        assert_eq!(f.vms_violating_required, 1);
        // Scores: web 1, db 1, web 0.9 x 1/5 = 0.18, db 1.
        assert!((f.dependency_score_mean - 3.18 / 4.0).abs() < 1e-12);
        assert!((f.dependency_score_p5 - 0.18).abs() < 1e-12);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let e = |text: String| EcosystemScenario::parse(&text, Path::new("x.json")).unwrap_err().to_string();
        assert!(e(SMALL.replace("\"to\": \"db\"", "\"to\": \"cache\"")).contains("\"cache\", which is not a service of shop"));
        assert!(e(SMALL.replace("\"hosts_per_rack\": 2", "\"hosts_per_rack\": 0")).contains("hosts_per_rack"));
        assert!(e(SMALL.replace("< 1ms", "soon")).contains("dependencies.required[0].network_latency_requirement"));
        assert!(e(SMALL.replace("\"copies\"", "\"copys\"")).contains("copys"));
        assert!(e(SMALL.replace("\"zone\": 1.5", "\"zone\": 0.1")).contains("latency_ms.zone"));
    }
}
