//! The coordinator's dependency ecosystem: the declarations operators registered (persisted in
//! the coordinator's store, one entry per VM), the graph built from them, and what it looks like
//! over the cluster's observed state (each VM's score and status, each edge's satisfaction).
//!
//! The graph is rebuilt from the declarations on every registration; scores are computed from
//! where the agents report the VMs, never from memory, so arrivals, departures and moves show at
//! the next report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use presage_decide::ecosystem::feedback::{FeedbackLoop, Learned, LearningConfig, Observation};
use presage_decide::ecosystem::graph::{EcosystemGraph, MatchOptions};
use presage_decide::ecosystem::registration::{Cluster, RegistrationError, Room, Size, admit};
use presage_decide::ecosystem::score::{Placement, Status, edge_satisfaction, standing};
use presage_decide::ecosystem::{Declaration, LatencyTable, Location};
use presage_store::{BatchOp, KvStore, KvTree, Order, StoreError};
use serde::Serialize;

use crate::state::ClusterState;

/// The store tree holding one declaration (JSON) per VM name.
pub const DECLARATIONS_TREE: &str = "ecosystem-declarations";
/// The store tree holding what the feedback loop learned, under [`LEARNED_KEY`].
pub const LEARNING_TREE: &str = "ecosystem-learning";
pub const LEARNED_KEY: &[u8] = b"learned";

#[derive(Debug, thiserror::Error)]
pub enum EcosystemStoreError {
    #[error("the ecosystem store failed: {0}")]
    Store(#[from] StoreError),
    #[error("stored declaration {key:?} is unreadable ({reason}); it is left in place: fix or remove it")]
    Corrupt { key: String, reason: String },
}

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("the declarations were refused: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Refused(Vec<RegistrationError>),
    #[error(transparent)]
    Store(#[from] EcosystemStoreError),
}

struct Registered {
    declarations: BTreeMap<String, Declaration>,
    graph: Arc<EcosystemGraph>,
}

/// The registered declarations and their graph.
pub struct EcosystemRegistry {
    tree: Arc<dyn KvTree>,
    registered: Mutex<Registered>,
    /// The feedback loop over repair moves; what it learns is stored in `learning_tree` and
    /// applied to the graph.
    feedback: Mutex<FeedbackLoop>,
    learning_tree: Arc<dyn KvTree>,
    pub latency: LatencyTable,
    pub options: MatchOptions,
}

impl EcosystemRegistry {
    /// Loads the declarations kept in `store`; an unreadable one stops the start (nothing is
    /// deleted).
    pub fn open(
        store: &dyn KvStore,
        latency: LatencyTable,
        options: MatchOptions,
        learning: LearningConfig,
    ) -> Result<EcosystemRegistry, EcosystemStoreError> {
        let tree = store.tree(DECLARATIONS_TREE)?;
        let mut declarations = BTreeMap::new();
        for kv in tree.scan_prefix(b"", Order::Ascending, usize::MAX)? {
            let key = String::from_utf8_lossy(&kv.0).into_owned();
            let d: Declaration =
                serde_json::from_slice(&kv.1).map_err(|e| EcosystemStoreError::Corrupt { key: key.clone(), reason: e.to_string() })?;
            declarations.insert(d.vm_name.clone(), d);
        }
        let learning_tree = store.tree(LEARNING_TREE)?;
        let learned: Learned = match learning_tree.get(LEARNED_KEY)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| EcosystemStoreError::Corrupt {
                key: format!("{LEARNING_TREE}/{}", String::from_utf8_lossy(LEARNED_KEY)),
                reason: e.to_string(),
            })?,
            None => Learned::default(),
        };
        let all: Vec<Declaration> = declarations.values().cloned().collect();
        let mut graph = EcosystemGraph::build(&all, options, &|_, _| None);
        graph.set_type_weights(&|kind| learned.weight(kind));
        Ok(EcosystemRegistry {
            tree,
            registered: Mutex::new(Registered { declarations, graph: Arc::new(graph) }),
            feedback: Mutex::new(FeedbackLoop::new(learning, learned)),
            learning_tree,
            latency,
            options,
        })
    }

    /// What the feedback loop has learned.
    pub fn learned(&self) -> (Learned, LearningConfig) {
        let f = self.feedback.lock().expect("feedback lock");
        (f.learned().clone(), f.config)
    }

    /// Records the figures around VM `vm_id` before repair move `key` starts (the modelled
    /// call latency: guests report no application figures to the coordinator yet).
    pub fn repair_started(&self, state: &ClusterState, key: &str, vm_id: &str) {
        let graph = self.graph();
        let Some(g) = graph.find(vm_id) else { return };
        let facts = ClusterFacts::of(state, Some(graph.clone()), false);
        let lookup = |v: usize| facts.graph_hosts[v];
        let placement = Placement { host_of: &lookup, locations: &facts.locations, latency: &self.latency };
        self.feedback.lock().expect("feedback lock").before(key.to_string(), &graph, &placement, g, None);
    }

    /// Forgets repair move `key` (it did not happen).
    pub fn repair_abandoned(&self, key: &str) {
        self.feedback.lock().expect("feedback lock").abandon(key);
    }

    /// Judges repair move `key` of `vm_id`, done: it runs on `to_host` (whatever the agents'
    /// last reports say), learns from it, stores what is learned and scores with it from now on.
    pub fn repair_finished(
        &self,
        state: &ClusterState,
        key: &str,
        vm_id: &str,
        to_host: &str,
        at_s: f64,
    ) -> Result<Option<Observation>, EcosystemStoreError> {
        let graph = self.graph();
        let mut facts = ClusterFacts::of(state, Some(graph.clone()), false);
        if let (Some(g), Some(h)) = (graph.find(vm_id), facts.host_ids.iter().position(|h| h == to_host)) {
            facts.graph_hosts[g] = Some(h);
        }
        let lookup = |v: usize| facts.graph_hosts[v];
        let placement = Placement { host_of: &lookup, locations: &facts.locations, latency: &self.latency };
        let mut feedback = self.feedback.lock().expect("feedback lock");
        let Some(observation) = feedback.after(key, &graph, &placement, None, at_s) else { return Ok(None) };
        let learned = feedback.learned().clone();
        drop(feedback);
        let bytes = serde_json::to_vec(&learned).expect("what is learned serialises");
        self.learning_tree.apply(vec![BatchOp::Insert(LEARNED_KEY.to_vec(), bytes)])?;
        let mut registered = self.registered.lock().expect("ecosystem lock");
        let mut graph = (*registered.graph).clone();
        graph.set_type_weights(&|kind| learned.weight(kind));
        registered.graph = Arc::new(graph);
        Ok(Some(observation))
    }

    pub fn graph(&self) -> Arc<EcosystemGraph> {
        self.registered.lock().expect("ecosystem lock").graph.clone()
    }

    pub fn declaration(&self, vm: &str) -> Option<Declaration> {
        self.registered.lock().expect("ecosystem lock").declarations.get(vm).cloned()
    }

    /// Registers `new` (replacing earlier declarations of the same VMs) if the whole set, with
    /// everything registered before, is admitted against the cluster in `state`; persists it
    /// before the graph changes. Returns the number of declarations now registered.
    pub fn register(&self, new: Vec<Declaration>, state: &ClusterState) -> Result<usize, RegisterError> {
        let mut registered = self.registered.lock().expect("ecosystem lock");
        let mut merged = registered.declarations.clone();
        for d in &new {
            merged.insert(d.vm_name.clone(), d.clone());
        }
        let all: Vec<Declaration> = merged.values().cloned().collect();
        let facts = ClusterFacts::of(state, None, true);
        // Only the new declarations must name VMs the cluster runs now: earlier ones may belong
        // to VMs that left since (their edges simply serve nothing).
        let new_names: Vec<&str> = new.iter().map(|d| d.vm_name.as_str()).collect();
        let knows = |name: &str| facts.sizes.contains_key(name) || !new_names.contains(&name);
        let size_of = |name: &str| facts.sizes.get(name).copied();
        let cluster = Cluster { knows: &knows, size_of: &size_of, room: facts.room, latency: &self.latency };
        let graph = admit(&all, self.options, &cluster).map_err(RegisterError::Refused)?;
        let ops: Vec<BatchOp> = new
            .iter()
            .map(|d| {
                let value = serde_json::to_vec(d).expect("a declaration serialises");
                BatchOp::Insert(d.vm_name.as_bytes().to_vec(), value)
            })
            .collect();
        // In batches a distributed store takes in one transaction. Each declaration stands
        // alone: one that failed to be written is registered again by asking again, and none
        // is in the graph until all are written.
        for batch in ops.chunks(presage_store::MAX_TXN_OPS) {
            self.tree.apply(batch.to_vec()).map_err(EcosystemStoreError::from)?;
        }
        let mut graph = graph;
        let learned = self.feedback.lock().expect("feedback lock").learned().clone();
        graph.set_type_weights(&|kind| learned.weight(kind));
        registered.declarations = merged;
        registered.graph = Arc::new(graph);
        Ok(registered.declarations.len())
    }

    /// The ecosystem over the observed state: every graph VM with its score and status, every
    /// edge with its satisfaction; `filter` keeps the VMs it names (and their edges).
    /// What [`view`](Self::view) needs of the observed state, read under its lock.
    pub fn facts(&self, state: &ClusterState) -> ClusterFacts {
        ClusterFacts::of(state, Some(self.graph()), false)
    }

    pub fn view(&self, facts: &ClusterFacts, pending: &dyn Fn(&str) -> bool, filter: &ViewFilter) -> EcosystemView {
        let graph = facts.graph.clone().unwrap_or_else(|| self.graph());
        let host_of = &facts.graph_hosts;
        let lookup = |g: usize| host_of[g];
        let placement = Placement { host_of: &lookup, locations: &facts.locations, latency: &self.latency };
        let keep: Vec<bool> = (0..graph.len())
            .map(|g| {
                let v = graph.vm(g);
                filter.vm.as_ref().is_none_or(|x| *x == v.name)
                    && filter.application.as_ref().is_none_or(|a| v.application.as_ref() == Some(a))
            })
            .collect();
        let mut nodes = Vec::new();
        for g in (0..graph.len()).filter(|&g| keep[g]) {
            let v = graph.vm(g);
            let mut s = standing(&graph, g, &placement, false);
            if s.status == Status::NonCompliant && (pending(&v.name) || s.blockers.iter().any(|&b| pending(&graph.vm(b).name))) {
                s.status = Status::Pending;
            }
            nodes.push(NodeView {
                vm: v.name.clone(),
                application: v.application.clone(),
                kind: v.profile.kind.clone(),
                host: host_of[g].map(|h| facts.host_ids[h].clone()),
                score: s.score,
                status: s.status,
                reason: s.reason,
                blockers: s.blockers.iter().map(|&b| graph.vm(b).name.clone()).collect(),
            });
        }
        let edges = graph
            .edges()
            .iter()
            .enumerate()
            .filter(|(_, e)| keep[e.from] || keep[e.to])
            .map(|(i, e)| (i, edge_satisfaction(&graph, e, &placement)))
            .collect();
        EcosystemView { graph, nodes, edges }
    }
}

impl EcosystemRegistry {
    /// The VMs the cluster optimiser leaves on their hosts: both ends of every edge that can
    /// serve a required dependency with a latency requirement (moving either could break it;
    /// the policy's repair, which scores dependencies, is what moves them).
    pub fn held_in_place(&self) -> HashSet<String> {
        let g = self.graph();
        let mut held = HashSet::new();
        for e in g.edges() {
            let d = &g.dependencies(e.from)[e.dependency];
            if d.strength == presage_decide::ecosystem::Strength::Required && d.latency.is_some() {
                held.insert(g.vm(e.from).name.clone());
                held.insert(g.vm(e.to).name.clone());
            }
        }
        held
    }

    /// The preferred dependencies with a latency requirement as the optimiser's pair goals:
    /// per edge (a VM, one that can serve it), what each distance (host, rack, zone, region)
    /// costs: `weight x importance x quality x (1 - closeness there)` (0 where the distance
    /// meets the requirement), shared evenly over the dependency's serving edges (a pair goal
    /// sees two VMs, not the best of several).
    pub fn pair_goals(&self, weight: f64) -> Vec<(String, String, [f64; presage_decide::optimise::DISTANCES])> {
        use presage_decide::ecosystem::Strength;
        use presage_decide::ecosystem::topology::Level;
        if weight <= 0.0 {
            return Vec::new();
        }
        let g = self.graph();
        let mut out = Vec::new();
        for e in g.edges() {
            let d = &g.dependencies(e.from)[e.dependency];
            if d.strength != Strength::Preferred || d.latency.is_none() {
                continue;
            }
            let serving = g.serving(e.from, e.dependency).count().max(1) as f64;
            let scale = weight * d.importance() * e.quality / serving;
            let cost = Level::ALL.map(|level| scale * (1.0 - presage_decide::ecosystem::score::closeness(d, self.latency.at(level))));
            out.push((g.vm(e.from).name.clone(), g.vm(e.to).name.clone(), cost));
        }
        out
    }

    /// The required dependencies (as "VM requires TYPE") that moving `vm` to `to_host` would
    /// break where the VMs are now.
    pub fn move_breaks(&self, state: &ClusterState, vm: &str, to_host: &str) -> Vec<String> {
        let graph = self.graph();
        let Some(g) = graph.find(vm) else { return Vec::new() };
        let facts = ClusterFacts::of(state, Some(graph.clone()), false);
        let Some(to) = facts.host_ids.iter().position(|h| h == to_host) else { return Vec::new() };
        let host_of = &facts.graph_hosts;
        let lookup = |v: usize| host_of[v];
        let placement = Placement { host_of: &lookup, locations: &facts.locations, latency: &self.latency };
        let effect = presage_decide::ecosystem::score::move_effect(&graph, &placement, &[g], to);
        effect
            .breaks_required
            .iter()
            .map(|&(v, k)| format!("{} requires {}", graph.vm(v).name, graph.dependencies(v)[k].spec.kind))
            .collect()
    }
}

/// A body of one declaration or an array of them; `Err((field, reason))` names the element
/// (`$` or `$[i]`) and what is wrong with it.
pub fn parse_declarations(bytes: &[u8]) -> Result<Vec<Declaration>, (String, String)> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| (format!("line {} column {}", e.line(), e.column()), format!("not JSON: {e}")))?;
    let one = |v: serde_json::Value, field: String| serde_json::from_value::<Declaration>(v).map_err(|e| (field, e.to_string()));
    match value {
        serde_json::Value::Array(items) => items.into_iter().enumerate().map(|(i, v)| one(v, format!("$[{i}]"))).collect(),
        v => Ok(vec![one(v, "$".into())?]),
    }
}

/// Which part of the ecosystem to show.
#[derive(Clone, Debug, Default)]
pub struct ViewFilter {
    pub vm: Option<String>,
    pub application: Option<String>,
}

/// Scores to 6 decimals in JSON: a fleet's worth of them is megabytes otherwise.
fn rounded<S: serde::Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((x * 1e6).round() / 1e6)
}

#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub vm: String,
    pub application: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub host: Option<String>,
    #[serde(serialize_with = "rounded")]
    pub score: f64,
    pub status: Status,
    pub reason: Option<String>,
    pub blockers: Vec<String>,
}

/// One edge as the API shows it, borrowed from the graph.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeView<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub dependency: &'a str,
    pub strength: &'static str,
    #[serde(serialize_with = "rounded")]
    pub weight: f64,
    #[serde(serialize_with = "rounded")]
    pub quality: f64,
    #[serde(serialize_with = "rounded")]
    pub satisfaction: f64,
}

/// The scored ecosystem: its nodes, and its edges (by index into the graph it was scored on,
/// with their satisfaction) read through [`EcosystemView::edges`] without copying names.
#[derive(Clone, Debug)]
pub struct EcosystemView {
    graph: Arc<EcosystemGraph>,
    pub nodes: Vec<NodeView>,
    edges: Vec<(usize, f64)>,
}

impl EcosystemView {
    pub fn edges(&self) -> impl Iterator<Item = EdgeView<'_>> {
        self.edges.iter().map(|&(i, satisfaction)| {
            let e = &self.graph.edges()[i];
            let d = &self.graph.dependencies(e.from)[e.dependency];
            EdgeView {
                from: &self.graph.vm(e.from).name,
                to: &self.graph.vm(e.to).name,
                dependency: &d.spec.kind,
                strength: match d.strength {
                    presage_decide::ecosystem::Strength::Required => "required",
                    presage_decide::ecosystem::Strength::Preferred => "preferred",
                },
                weight: e.weight,
                quality: e.quality,
                satisfaction,
            }
        })
    }
}

/// `{"nodes": [...], "edges": [...]}`, the edges written straight from the graph.
impl Serialize for EcosystemView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        struct Edges<'a>(&'a EcosystemView);
        impl Serialize for Edges<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.edges())
            }
        }
        let mut st = s.serialize_struct("EcosystemView", 2)?;
        st.serialize_field("nodes", &self.nodes)?;
        st.serialize_field("edges", &Edges(self))?;
        st.end()
    }
}

#[derive(Debug, Default)]
pub struct Topology {
    names: HashMap<String, u32>,
}

impl Topology {
    pub fn place(&mut self, host_id: &str, zone: &str, rack: &str) -> Location {
        let own = format!("\u{0}host:{host_id}");
        let zone_key = if zone.is_empty() { own.clone() } else { format!("zone:{zone}") };
        let rack_key = if rack.is_empty() { own } else { format!("rack:{zone}/{rack}") };
        Location { zone: self.number(zone_key), rack: self.number(rack_key) }
    }

    fn number(&mut self, key: String) -> u32 {
        let n = self.names.len() as u32;
        *self.names.entry(key).or_insert(n)
    }
}

/// What the ecosystem needs of the observed state: hosts in a fixed order with their places,
/// each VM's host and size, and the room a host, rack and zone offer.
pub struct ClusterFacts {
    host_ids: Vec<String>,
    locations: Vec<Location>,
    /// The graph the facts were read for, and per graph VM the host it runs on.
    graph: Option<Arc<EcosystemGraph>>,
    graph_hosts: Vec<Option<usize>>,
    /// Each VM's size, by id (when asked for).
    sizes: HashMap<String, Size>,
    room: Room,
}

impl ClusterFacts {
    /// Read under the state's lock, then scored without it.
    fn of(state: &ClusterState, graph: Option<Arc<EcosystemGraph>>, with_sizes: bool) -> ClusterFacts {
        let mut topology = Topology::default();
        let (mut host_ids, mut locations, mut sizes) = (Vec::new(), Vec::new(), HashMap::new());
        let mut graph_hosts = vec![None; graph.as_ref().map_or(0, |g| g.len())];
        let mut per_rack: HashMap<u32, Size> = HashMap::new();
        let mut per_zone: HashMap<u32, Size> = HashMap::new();
        let mut biggest = Size { cpu: 0.0, memory: 0.0 };
        for (i, h) in state.hosts().enumerate() {
            let r = &h.registration;
            let Location { zone, rack } = topology.place(&h.host_id, &r.zone, &r.rack);
            host_ids.push(h.host_id.clone());
            locations.push(Location { zone, rack });
            let cap =
                Size { cpu: r.capacity.cpu_cores as f64 * r.capacity.cpu_mhz_per_core, memory: r.capacity.memory_bytes as f64 / 1048576.0 };
            biggest = Size { cpu: biggest.cpu.max(cap.cpu), memory: biggest.memory.max(cap.memory) };
            for (sum, key) in [(&mut per_rack, rack), (&mut per_zone, zone)] {
                let e = sum.entry(key).or_insert(Size { cpu: 0.0, memory: 0.0 });
                e.cpu += cap.cpu;
                e.memory += cap.memory;
            }
            for (id, vm) in &h.vms {
                if let Some(g) = graph.as_ref().and_then(|g| g.find(id)) {
                    graph_hosts[g] = Some(i);
                }
                if with_sizes {
                    let per_vcpu = if vm.vcpu_mhz > 0.0 { vm.vcpu_mhz } else { r.capacity.cpu_mhz_per_core };
                    sizes.insert(id.clone(), Size { cpu: vm.vcpus as f64 * per_vcpu, memory: vm.memory_bytes as f64 / 1048576.0 });
                }
            }
        }
        let most = |m: &HashMap<u32, Size>| m.values().fold(biggest, |a, s| Size { cpu: a.cpu.max(s.cpu), memory: a.memory.max(s.memory) });
        let room = Room { host: biggest, rack: most(&per_rack), zone: most(&per_zone) };
        ClusterFacts { host_ids, locations, graph, graph_hosts, sizes, room }
    }
}
