//! The ROADEF/EURO 2012 Machine Reassignment problem (Google's): processes (VMs) on machines
//! (hosts) under capacity, conflict (a service's processes on distinct machines), spread (over
//! at least `spread_min` locations), dependency (a service's neighbourhoods hold its
//! dependencies) and transient-resource constraints, at a cost of load over safety capacity,
//! balance between resources, and process, service and machine moves.
//!
//! - [`Roadef::parse`]: the challenge's model format (one stream of integers).
//! - [`Roadef::evaluate`]: the judge: an assignment's cost terms, or the first hard constraint it
//!   breaks, counted from scratch.
//! - [`Search`]: the state a local search keeps (usage, transient usage, per-service machine,
//!   location and neighbourhood counts, moved counts and their histogram, every cost term), in
//!   which a shift or a swap changes only what it touches, and every broken constraint is
//!   counted so that an infeasible move is seen at once and undone.
//! - [`optimise`]: a population of late-acceptance hill climbers (shift and swap moves; each
//!   keeps its history from epoch to epoch), each epoch from its own seeded stream; every few
//!   epochs the worse half restarts from the best (elitism). Results depend on the seed and the
//!   population, not on the threads.

use serde::Serialize;

use super::Rng;
use super::genetic::{Budget, Parallel};

#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub transient: bool,
    pub weight_load: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    pub neighborhood: u32,
    pub location: u32,
    pub capacity: Vec<i64>,
    pub safety: Vec<i64>,
    pub move_cost: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub spread_min: u32,
    pub depends_on: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    pub service: u32,
    pub requirement: Vec<i64>,
    pub move_cost: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Balance {
    pub r1: u32,
    pub r2: u32,
    pub target: i64,
    pub weight: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Roadef {
    pub resources: Vec<Resource>,
    pub machines: Vec<Machine>,
    pub services: Vec<Service>,
    pub processes: Vec<Process>,
    pub balances: Vec<Balance>,
    pub weight_process_move: i64,
    pub weight_service_move: i64,
    pub weight_machine_move: i64,
    /// Neighbourhoods and locations are numbered 0..these.
    pub neighborhoods: usize,
    pub locations: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RoadefError {
    #[error("model: {0}")]
    Model(String),
    #[error("assignment: {0}")]
    Assignment(String),
}

/// The objective's terms (the challenge's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CostTerms {
    pub total: i64,
    pub load: i64,
    pub balance: i64,
    pub process_moves: i64,
    pub service_moves: i64,
    pub machine_moves: i64,
}

/// A broken hard constraint, named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub constraint: &'static str,
    pub detail: String,
}

struct Ints<'a> {
    it: std::iter::Enumerate<std::str::SplitAsciiWhitespace<'a>>,
}

impl Ints<'_> {
    fn next(&mut self, what: &str) -> Result<i64, RoadefError> {
        let (i, tok) = self.it.next().ok_or_else(|| RoadefError::Model(format!("the file ends before {what}")))?;
        tok.parse::<i64>().map_err(|_| RoadefError::Model(format!("number {} ({what}) is {tok:?}, not an integer", i + 1)))
    }

    fn count(&mut self, what: &str, max: i64) -> Result<usize, RoadefError> {
        let n = self.next(what)?;
        if !(0..=max).contains(&n) {
            return Err(RoadefError::Model(format!("{what} is {n}, outside 0..={max}")));
        }
        Ok(n as usize)
    }

    fn nonneg(&mut self, what: &str) -> Result<i64, RoadefError> {
        let v = self.next(what)?;
        if v < 0 {
            return Err(RoadefError::Model(format!("{what} is {v}, below 0")));
        }
        Ok(v)
    }
}

impl Roadef {
    /// Parses the model file's text.
    pub fn parse(text: &str) -> Result<Roadef, RoadefError> {
        let mut n = Ints { it: text.split_ascii_whitespace().enumerate() };
        let r = n.count("the number of resources", 1_000)?;
        let mut resources = Vec::with_capacity(r);
        for i in 0..r {
            let t = n.next(&format!("resource {i}'s transient flag"))?;
            if !(0..=1).contains(&t) {
                return Err(RoadefError::Model(format!("resource {i}'s transient flag is {t}, not 0 or 1")));
            }
            resources.push(Resource { transient: t == 1, weight_load: n.nonneg(&format!("resource {i}'s load cost weight"))? });
        }
        let m = n.count("the number of machines", 100_000)?;
        let mut machines = Vec::with_capacity(m);
        for i in 0..m {
            let neighborhood = n.count(&format!("machine {i}'s neighbourhood"), u32::MAX as i64 / 2)? as u32;
            let location = n.count(&format!("machine {i}'s location"), u32::MAX as i64 / 2)? as u32;
            let capacity = (0..r).map(|k| n.nonneg(&format!("machine {i}'s capacity {k}"))).collect::<Result<Vec<_>, _>>()?;
            let safety = (0..r).map(|k| n.nonneg(&format!("machine {i}'s safety capacity {k}"))).collect::<Result<Vec<_>, _>>()?;
            let move_cost = (0..m).map(|k| n.nonneg(&format!("machine {i}'s move cost to {k}"))).collect::<Result<Vec<_>, _>>()?;
            machines.push(Machine { neighborhood, location, capacity, safety, move_cost });
        }
        let s = n.count("the number of services", 10_000_000)?;
        let mut services = Vec::with_capacity(s);
        for i in 0..s {
            let spread_min = n.count(&format!("service {i}'s spreadMin"), u32::MAX as i64)? as u32;
            let d = n.count(&format!("service {i}'s number of dependencies"), s as i64)?;
            let depends_on = (0..d)
                .map(|k| n.count(&format!("service {i}'s dependency {k}"), s as i64 - 1).map(|x| x as u32))
                .collect::<Result<Vec<_>, _>>()?;
            services.push(Service { spread_min, depends_on });
        }
        let p = n.count("the number of processes", 10_000_000)?;
        let mut processes = Vec::with_capacity(p);
        for i in 0..p {
            let service = n.count(&format!("process {i}'s service"), s as i64 - 1)? as u32;
            let requirement = (0..r).map(|k| n.nonneg(&format!("process {i}'s requirement {k}"))).collect::<Result<Vec<_>, _>>()?;
            processes.push(Process { service, requirement, move_cost: n.nonneg(&format!("process {i}'s move cost"))? });
        }
        let b = n.count("the number of balance objectives", 1_000)?;
        let mut balances = Vec::with_capacity(b);
        for i in 0..b {
            let r1 = n.count(&format!("balance {i}'s first resource"), r as i64 - 1)? as u32;
            let r2 = n.count(&format!("balance {i}'s second resource"), r as i64 - 1)? as u32;
            let target = n.nonneg(&format!("balance {i}'s target"))?;
            balances.push(Balance { r1, r2, target, weight: n.nonneg(&format!("balance {i}'s weight"))? });
        }
        let weight_process_move = n.nonneg("the process move weight")?;
        let weight_service_move = n.nonneg("the service move weight")?;
        let weight_machine_move = n.nonneg("the machine move weight")?;
        if let Some((i, tok)) = n.it.next() {
            return Err(RoadefError::Model(format!("number {} ({tok:?}) follows the last field", i + 1)));
        }
        let neighborhoods = machines.iter().map(|m| m.neighborhood as usize + 1).max().unwrap_or(0);
        let locations = machines.iter().map(|m| m.location as usize + 1).max().unwrap_or(0);
        Ok(Roadef {
            resources,
            machines,
            services,
            processes,
            balances,
            weight_process_move,
            weight_service_move,
            weight_machine_move,
            neighborhoods,
            locations,
        })
    }

    /// Parses an assignment (one machine index per process).
    pub fn parse_assignment(&self, text: &str) -> Result<Vec<u32>, RoadefError> {
        let v: Vec<u32> = text
            .split_ascii_whitespace()
            .enumerate()
            .map(|(i, t)| match t.parse::<u32>() {
                Ok(m) if (m as usize) < self.machines.len() => Ok(m),
                _ => Err(RoadefError::Assignment(format!("process {i}'s machine {t:?} is not one of 0..{}", self.machines.len()))),
            })
            .collect::<Result<_, _>>()?;
        if v.len() != self.processes.len() {
            return Err(RoadefError::Assignment(format!("{} machines for {} processes", v.len(), self.processes.len())));
        }
        Ok(v)
    }

    /// The cost of `assignment` starting from `initial`, or the first hard constraint it breaks;
    /// counted from scratch (the judge the search is checked against).
    pub fn evaluate(&self, initial: &[u32], assignment: &[u32]) -> Result<CostTerms, Violation> {
        let (nm, nr) = (self.machines.len(), self.resources.len());
        let mut usage = vec![0i64; nm * nr];
        let mut transient = vec![0i64; nm * nr];
        for (p, proc_) in self.processes.iter().enumerate() {
            let (m, m0) = (assignment[p] as usize, initial[p] as usize);
            for r in 0..nr {
                usage[m * nr + r] += proc_.requirement[r];
                if self.resources[r].transient && m != m0 {
                    transient[m0 * nr + r] += proc_.requirement[r];
                }
            }
        }
        for m in 0..nm {
            for r in 0..nr {
                let u = usage[m * nr + r] + transient[m * nr + r];
                if u > self.machines[m].capacity[r] {
                    let what = if transient[m * nr + r] > 0 { "transient usage" } else { "usage" };
                    return Err(Violation {
                        constraint: "capacity",
                        detail: format!("machine {m} resource {r}: {what} {u} > capacity {}", self.machines[m].capacity[r]),
                    });
                }
            }
        }
        let ns = self.services.len();
        let mut machines_of: Vec<Vec<u32>> = vec![Vec::new(); ns];
        let mut nbs: Vec<Vec<bool>> = vec![vec![false; self.neighborhoods]; ns];
        let mut moved = vec![0i64; ns];
        for (p, proc_) in self.processes.iter().enumerate() {
            let s = proc_.service as usize;
            machines_of[s].push(assignment[p]);
            nbs[s][self.machines[assignment[p] as usize].neighborhood as usize] = true;
            if assignment[p] != initial[p] {
                moved[s] += 1;
            }
        }
        for (s, ms) in machines_of.iter_mut().enumerate() {
            ms.sort_unstable();
            if let Some(w) = ms.windows(2).find(|w| w[0] == w[1]) {
                return Err(Violation { constraint: "conflict", detail: format!("service {s} has two processes on machine {}", w[0]) });
            }
            let mut locs: Vec<u32> = ms.iter().map(|m| self.machines[*m as usize].location).collect();
            locs.sort_unstable();
            locs.dedup();
            if (locs.len() as u32) < self.services[s].spread_min {
                return Err(Violation {
                    constraint: "spread",
                    detail: format!("service {s} spans {} locations, fewer than {}", locs.len(), self.services[s].spread_min),
                });
            }
        }
        for (s, svc) in self.services.iter().enumerate() {
            for &d in &svc.depends_on {
                if let Some(n) = (0..self.neighborhoods).find(|n| nbs[s][*n] && !nbs[d as usize][*n]) {
                    return Err(Violation {
                        constraint: "dependency",
                        detail: format!("service {s} is in neighbourhood {n} but service {d}, which it depends on, is not"),
                    });
                }
            }
        }
        let mut t = CostTerms::default();
        for m in 0..nm {
            let mach = &self.machines[m];
            for r in 0..nr {
                t.load += self.resources[r].weight_load * (usage[m * nr + r] - mach.safety[r]).max(0);
            }
            for b in &self.balances {
                let a = |r: u32| mach.capacity[r as usize] - usage[m * nr + r as usize];
                t.balance += b.weight * (b.target * a(b.r1) - a(b.r2)).max(0);
            }
        }
        for (p, proc_) in self.processes.iter().enumerate() {
            if assignment[p] != initial[p] {
                t.process_moves += proc_.move_cost;
            }
            t.machine_moves += self.machines[initial[p] as usize].move_cost[assignment[p] as usize];
        }
        t.process_moves *= self.weight_process_move;
        t.machine_moves *= self.weight_machine_move;
        t.service_moves = self.weight_service_move * moved.iter().copied().max().unwrap_or(0);
        t.total = t.load + t.balance + t.process_moves + t.service_moves + t.machine_moves;
        Ok(t)
    }
}

/// A local search's state over one assignment: everything the cost and the constraints are
/// kept from, changed move by move.
#[derive(Clone, Debug)]
pub struct Search<'a> {
    model: &'a Roadef,
    initial: &'a [u32],
    pub assignment: Vec<u32>,
    /// The processes on each machine, and each process's index in its machine's list.
    hosted: Vec<Vec<u32>>,
    hosted_at: Vec<u32>,
    usage: Vec<i64>,
    /// Usage plus what processes that started here and moved away still hold (transient
    /// resources only; equals `usage` elsewhere).
    held: Vec<i64>,
    /// Processes of each service per machine (`services x machines`, dense).
    on_machine: Vec<u16>,
    /// Processes of each service per location, and the distinct locations per service.
    per_location: Vec<u32>,
    locations_of: Vec<u32>,
    /// Processes of each service per neighbourhood.
    per_neighborhood: Vec<u32>,
    /// Services that depend on each service.
    dependents: Vec<Vec<u32>>,
    moved: Vec<u32>,
    /// How many services have each moved count.
    moved_hist: Vec<u32>,
    max_moved: u32,
    /// Broken constraints, counted: capacity cells over, extra processes of a service on one
    /// machine, services short of their spread, (service, dependency, neighbourhood) triples
    /// missing.
    violations: i64,
    load: i64,
    balance: i64,
    process_moves: i64,
    machine_moves: i64,
}

impl<'a> Search<'a> {
    /// The state of `assignment` (which may break constraints: they are counted).
    pub fn new(model: &'a Roadef, initial: &'a [u32], assignment: Vec<u32>) -> Search<'a> {
        let (nm, nr, ns) = (model.machines.len(), model.resources.len(), model.services.len());
        let mut dependents = vec![Vec::new(); ns];
        for (s, svc) in model.services.iter().enumerate() {
            for d in &svc.depends_on {
                dependents[*d as usize].push(s as u32);
            }
        }
        let mut st = Search {
            model,
            initial,
            assignment: vec![u32::MAX; model.processes.len()],
            hosted: vec![Vec::new(); nm],
            hosted_at: vec![u32::MAX; model.processes.len()],
            usage: vec![0; nm * nr],
            held: vec![0; nm * nr],
            on_machine: vec![0; ns * nm],
            per_location: vec![0; ns * model.locations],
            locations_of: vec![0; ns],
            per_neighborhood: vec![0; ns * model.neighborhoods],
            dependents,
            moved: vec![0; ns],
            moved_hist: vec![0; model.processes.len() + 2],
            max_moved: 0,
            violations: 0,
            load: 0,
            balance: 0,
            process_moves: 0,
            machine_moves: 0,
        };
        st.moved_hist[0] = ns as u32;
        // A process holds its transient resources on its original machine wherever it is.
        for (p, proc_) in model.processes.iter().enumerate() {
            let m0 = initial[p] as usize;
            for r in 0..nr {
                if model.resources[r].transient {
                    st.held[m0 * nr + r] += proc_.requirement[r];
                }
            }
        }
        // Costs and violations of the machines without their processes, then every process added.
        for m in 0..nm {
            st.load += st.machine_load(m);
            st.balance += st.machine_balance(m);
            st.violations += st.over(m);
        }
        for s in 0..ns {
            if model.services[s].spread_min > 0 {
                st.violations += 1;
            }
        }
        for (p, m) in assignment.into_iter().enumerate() {
            st.add(p, m);
        }
        st
    }

    pub fn cost(&self) -> i64 {
        self.load + self.balance + self.process_moves + self.machine_moves + self.model.weight_service_move * self.max_moved as i64
    }

    pub fn feasible(&self) -> bool {
        self.violations == 0
    }

    fn machine_load(&self, m: usize) -> i64 {
        let nr = self.model.resources.len();
        let mach = &self.model.machines[m];
        (0..nr).map(|r| self.model.resources[r].weight_load * (self.usage[m * nr + r] - mach.safety[r]).max(0)).sum()
    }

    fn machine_balance(&self, m: usize) -> i64 {
        let nr = self.model.resources.len();
        let mach = &self.model.machines[m];
        self.model
            .balances
            .iter()
            .map(|b| {
                let a = |r: u32| mach.capacity[r as usize] - self.usage[m * nr + r as usize];
                b.weight * (b.target * a(b.r1) - a(b.r2)).max(0)
            })
            .sum()
    }

    fn over(&self, m: usize) -> i64 {
        let nr = self.model.resources.len();
        (0..nr).filter(|r| self.held[m * nr + r] > self.model.machines[m].capacity[*r]).count() as i64
    }

    /// Adds unassigned process `p` on machine `m`.
    fn add(&mut self, p: usize, m: u32) {
        let model = self.model;
        let (nm, nr) = (model.machines.len(), model.resources.len());
        let proc_ = &model.processes[p];
        let s = proc_.service as usize;
        let mi = m as usize;
        let m0 = self.initial[p] as usize;
        self.load -= self.machine_load(mi);
        self.balance -= self.machine_balance(mi);
        self.violations -= self.over(mi);
        for r in 0..nr {
            self.usage[mi * nr + r] += proc_.requirement[r];
            // A transient resource is held on the origin for good (see `new`).
            if !(model.resources[r].transient && mi == m0) {
                self.held[mi * nr + r] += proc_.requirement[r];
            }
        }
        self.load += self.machine_load(mi);
        self.balance += self.machine_balance(mi);
        self.violations += self.over(mi);
        // Conflict.
        let c = &mut self.on_machine[s * nm + mi];
        if *c >= 1 {
            self.violations += 1;
        }
        *c += 1;
        // Spread.
        let loc = model.machines[mi].location as usize;
        let spread = model.services[s].spread_min;
        let pl = &mut self.per_location[s * model.locations + loc];
        *pl += 1;
        if *pl == 1 {
            let before = self.locations_of[s];
            self.locations_of[s] += 1;
            if before < spread && before + 1 >= spread {
                self.violations -= 1;
            }
        }
        // Dependency.
        let nb = model.machines[mi].neighborhood as usize;
        let nn = model.neighborhoods;
        self.per_neighborhood[s * nn + nb] += 1;
        if self.per_neighborhood[s * nn + nb] == 1 {
            for d in &model.services[s].depends_on {
                if self.per_neighborhood[*d as usize * nn + nb] == 0 {
                    self.violations += 1;
                }
            }
            for t in &self.dependents[s] {
                if self.per_neighborhood[*t as usize * nn + nb] > 0 {
                    self.violations -= 1;
                }
            }
        }
        // Moves.
        if mi != m0 {
            self.process_moves += model.weight_process_move * proc_.move_cost;
            self.bump_moved(s, true);
        }
        self.machine_moves += model.weight_machine_move * model.machines[m0].move_cost[mi];
        self.assignment[p] = m;
        self.hosted_at[p] = self.hosted[mi].len() as u32;
        self.hosted[mi].push(p as u32);
    }

    /// Takes process `p` off its machine.
    fn remove(&mut self, p: usize) {
        let model = self.model;
        let (nm, nr) = (model.machines.len(), model.resources.len());
        let proc_ = &model.processes[p];
        let s = proc_.service as usize;
        let mi = self.assignment[p] as usize;
        let m0 = self.initial[p] as usize;
        self.load -= self.machine_load(mi);
        self.balance -= self.machine_balance(mi);
        self.violations -= self.over(mi);
        for r in 0..nr {
            self.usage[mi * nr + r] -= proc_.requirement[r];
            // A transient resource stays held on the origin while the process is away.
            if !(model.resources[r].transient && mi == m0) {
                self.held[mi * nr + r] -= proc_.requirement[r];
            }
        }
        self.load += self.machine_load(mi);
        self.balance += self.machine_balance(mi);
        self.violations += self.over(mi);
        let c = &mut self.on_machine[s * nm + mi];
        *c -= 1;
        if *c >= 1 {
            self.violations -= 1;
        }
        let loc = model.machines[mi].location as usize;
        let spread = model.services[s].spread_min;
        let pl = &mut self.per_location[s * model.locations + loc];
        *pl -= 1;
        if *pl == 0 {
            let before = self.locations_of[s];
            self.locations_of[s] -= 1;
            if before >= spread && before - 1 < spread {
                self.violations += 1;
            }
        }
        let nb = model.machines[mi].neighborhood as usize;
        let nn = model.neighborhoods;
        self.per_neighborhood[s * nn + nb] -= 1;
        if self.per_neighborhood[s * nn + nb] == 0 {
            for d in &model.services[s].depends_on {
                if self.per_neighborhood[*d as usize * nn + nb] == 0 {
                    self.violations -= 1;
                }
            }
            for t in &self.dependents[s] {
                if self.per_neighborhood[*t as usize * nn + nb] > 0 {
                    self.violations += 1;
                }
            }
        }
        if mi != m0 {
            self.process_moves -= model.weight_process_move * proc_.move_cost;
            self.bump_moved(s, false);
        }
        self.machine_moves -= model.weight_machine_move * model.machines[m0].move_cost[mi];
        self.assignment[p] = u32::MAX;
        let at = self.hosted_at[p] as usize;
        self.hosted[mi].swap_remove(at);
        if let Some(&moved_in) = self.hosted[mi].get(at) {
            self.hosted_at[moved_in as usize] = at as u32;
        }
    }

    fn bump_moved(&mut self, s: usize, up: bool) {
        let c = self.moved[s];
        self.moved_hist[c as usize] -= 1;
        let n = if up { c + 1 } else { c - 1 };
        self.moved[s] = n;
        self.moved_hist[n as usize] += 1;
        if n > self.max_moved {
            self.max_moved = n;
        }
        while self.max_moved > 0 && self.moved_hist[self.max_moved as usize] == 0 {
            self.max_moved -= 1;
        }
    }

    /// The processes on machine `m`, in no particular order.
    pub fn hosted(&self, m: u32) -> &[u32] {
        &self.hosted[m as usize]
    }

    /// Moves process `p` to machine `m`.
    pub fn shift(&mut self, p: usize, m: u32) {
        self.remove(p);
        self.add(p, m);
    }

    /// The cost terms as kept (equal to [`Roadef::evaluate`]'s when feasible).
    pub fn terms(&self) -> CostTerms {
        let service_moves = self.model.weight_service_move * self.max_moved as i64;
        CostTerms {
            total: self.cost(),
            load: self.load,
            balance: self.balance,
            process_moves: self.process_moves,
            service_moves,
            machine_moves: self.machine_moves,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoadefConfig {
    /// Climbers, each improved from its own seeded stream every epoch.
    pub population: usize,
    /// Moves per climber per epoch (the caller's clock is read between epochs).
    pub epoch_moves: usize,
    /// Late acceptance's history length at 100 processes; it grows as the number of processes
    /// to the power 1.5 (2,000 at 100, 63,000 at 1,000): larger instances need longer walks
    /// before they settle. At least 1,000.
    pub history_at_100: usize,
    /// Every this many epochs the worse half of the climbers restarts from the best.
    pub share_every: usize,
    /// Epochs without a gain of 0.001 % after which the climbers are reheated from the best.
    pub patience: usize,
    /// A reheat's allowance, as a share of the best cost (the climbers take one, two or
    /// three times it in turn).
    pub reheat: f64,
    pub epochs: usize,
    pub seed: u64,
}

impl Default for RoadefConfig {
    fn default() -> Self {
        RoadefConfig {
            population: 2,
            epoch_moves: 2_000_000,
            history_at_100: 2_000,
            share_every: 10,
            patience: 8,
            reheat: 0.03,
            epochs: usize::MAX,
            seed: 1,
        }
    }
}

#[derive(Clone, Debug)]
pub struct RoadefOutcome {
    pub assignment: Vec<u32>,
    pub terms: CostTerms,
    pub epochs: usize,
    pub moves: u64,
}

/// One climber: where it is, the best it has seen, and its late-acceptance history (kept from
/// epoch to epoch).
#[derive(Clone, Debug)]
struct Climber {
    current: Vec<u32>,
    best: Vec<u32>,
    best_cost: i64,
    history: Vec<i64>,
    step: usize,
}

/// One epoch of a climber: late-acceptance hill climbing with shift and swap moves.
fn climb(model: &Roadef, initial: &[u32], mut c: Climber, moves: usize, rng: &mut Rng) -> Climber {
    let mut st = Search::new(model, initial, std::mem::take(&mut c.current));
    let (np, nm) = (model.processes.len(), model.machines.len() as u32);
    if np == 0 || nm < 2 {
        c.current = st.assignment;
        return c;
    }
    let mut undo: Vec<(usize, u32)> = Vec::with_capacity(4);
    for _ in 0..moves {
        c.step += 1;
        let before = st.cost();
        let p = rng.below(np);
        let from = st.assignment[p];
        undo.clear();
        match rng.below(8) {
            // Shift: p to another machine (home, if it is away, one time in four).
            0..=2 => {
                undo.push((p, from));
                let home = initial[p];
                let to = if home != from && rng.below(HOMING) == 0 { home } else { other_machine(from, nm, rng) };
                st.shift(p, to);
            }
            // Swap: p and q trade machines.
            3..=5 => {
                let q = rng.below(np);
                let to = st.assignment[q];
                if to == from {
                    continue;
                }
                undo.push((p, from));
                st.shift(p, to);
                undo.push((q, to));
                st.shift(q, from);
            }
            // Ejection: p to another machine, and processes drawn there (p among them) go home
            // when they are away (which gives back what they hold there, transient resources
            // included). Machines whose room is taken by earlier arrivals need this: it trades
            // arrivals for a better one.
            _ => {
                let to = other_machine(from, nm, rng);
                undo.push((p, from));
                st.shift(p, to);
                // Three draws at most, while the move breaks a constraint; a draw of a process
                // at home there sends nothing.
                for _ in 0..EJECT_TRIES {
                    if st.feasible() {
                        break;
                    }
                    let on = st.hosted(to);
                    if on.is_empty() {
                        break;
                    }
                    let q = on[rng.below(on.len())] as usize;
                    let home = initial[q];
                    if home == to {
                        continue;
                    }
                    undo.push((q, to));
                    st.shift(q, home);
                }
            }
        }
        let after = st.cost();
        let slot = c.step % c.history.len();
        if st.feasible() && (after <= before || after <= c.history[slot]) {
            if after < c.best_cost {
                c.best_cost = after;
                c.best.clone_from(&st.assignment);
            }
        } else {
            for &(p, m) in undo.iter().rev() {
                st.shift(p, m);
            }
        }
        let now = st.cost();
        if now < c.history[slot] {
            c.history[slot] = now;
        }
    }
    c.current = st.assignment;
    c
}

/// How many processes an ejection move may try to send home.
const EJECT_TRIES: usize = 3;

/// A shift sends a process that is away home one time in this many (it gives back the
/// transient resources it holds at home).
const HOMING: usize = 4;

/// A machine other than `m`, uniformly.
fn other_machine(m: u32, machines: u32, rng: &mut Rng) -> u32 {
    let o = rng.below(machines as usize - 1) as u32;
    if o >= m { o + 1 } else { o }
}

/// Runs the climbers from `initial` (which must be feasible) until `cfg.epochs` or the budget
/// says stop; returns the best assignment found and its terms as [`Roadef::evaluate`] counts
/// them.
pub fn optimise<P: Parallel, B: Budget>(
    model: &Roadef,
    initial: &[u32],
    cfg: &RoadefConfig,
    par: &P,
    budget: &mut B,
) -> Result<RoadefOutcome, Violation> {
    let start = model.evaluate(initial, initial)?.total;
    let n = cfg.population.max(1);
    let history = ((cfg.history_at_100 as f64 * (model.processes.len() as f64 / 100.0).powf(1.5)) as usize).max(1000);
    let fresh = Climber { current: initial.to_vec(), best: initial.to_vec(), best_cost: start, history: vec![start; history], step: 0 };
    let mut members: Vec<Climber> = vec![fresh; n];
    let mut epoch = 0;
    let (mut last_gain, mut stale, mut reheats) = (start, 0usize, 0usize);
    while epoch < cfg.epochs && budget.keep_going(epoch, members.iter().map(|m| m.best_cost).min().unwrap_or(start) as f64) {
        epoch += 1;
        let current = std::mem::take(&mut members);
        members = par.map(n, |i| {
            let mut rng = Rng::for_job(cfg.seed, epoch as u64, i as u64);
            climb(model, initial, current[i].clone(), cfg.epoch_moves, &mut rng)
        });
        let best_now = members.iter().map(|m| m.best_cost).min().unwrap_or(start);
        if (best_now as f64) < last_gain as f64 * (1.0 - 1e-5) {
            last_gain = best_now;
            stale = 0;
        } else {
            stale += 1;
        }
        if stale >= cfg.patience {
            // Converged: every climber goes back to the best and walks on from there, first
            // allowed to get worse by a little (its history raised), then settling again.
            stale = 0;
            reheats += 1;
            let (best, cost) = {
                let b = members.iter().min_by_key(|m| m.best_cost).expect("a population of at least one");
                (b.best.clone(), b.best_cost)
            };
            for (i, m) in members.iter_mut().enumerate() {
                let heat = cfg.reheat * (1 + (reheats + i) % 3) as f64;
                m.current.clone_from(&best);
                m.best.clone_from(&best);
                m.best_cost = cost;
                m.history.fill(cost + (cost as f64 * heat) as i64);
            }
            continue;
        }
        if epoch % cfg.share_every.max(1) == 0 {
            // Elitism: the worse half restarts from the best one's best.
            members.sort_by_key(|m| m.best_cost);
            for i in n.div_ceil(2)..n {
                let (best, cost) = (members[0].best.clone(), members[0].best_cost);
                let m = &mut members[i];
                m.current.clone_from(&best);
                m.best = best;
                m.best_cost = cost;
                m.history.fill(cost);
            }
        }
    }
    let best = members.into_iter().min_by_key(|m| m.best_cost).expect("a population of at least one");
    let terms = model.evaluate(initial, &best.best)?;
    Ok(RoadefOutcome { assignment: best.best, terms, epochs: epoch, moves: (epoch * n * cfg.epoch_moves) as u64 })
}
