//! The genetic optimiser over placement and VM sizing (pure: the caller supplies the
//! parallelism and the clock).
//!
//! - [`Problem`]: hosts with a capacity per resource dimension and a cost for being active;
//!   items (VMs) with one or more size options (a demand vector and a cost each, e.g. the SLA
//!   risk of the smaller sizes), where each is now, and what moving it costs; anti-affinity
//!   groups.
//! - [`Solution`]: each item's host and option, with each host's load and members kept up to
//!   date so that a move or a resize costs only the change it makes ([`Solution::move_item`]).
//!   A solution never overloads a host: every operator keeps capacity, and an item that fits
//!   nowhere is left unplaced (a penalty far above any host's cost).
//! - [`genetic`]: a grouping genetic algorithm (Falkenauer's representation: a solution is its
//!   set of host groups) with tournament selection, a crossover that carries whole host groups
//!   from the second parent, mutation that empties hosts, a memetic local search on every child
//!   ([`search`]: dominance swaps between a host and the items set free, then first-fit
//!   decreasing), and elitism. Every child is made from a random stream of its own, seeded by
//!   the run's seed, the generation and the child's index, so the result of a given seed is
//!   the same on any number of threads.
//! - [`binpacking`]: one-dimensional bin packing as a [`Problem`], Martello and Toth's L2 lower
//!   bound and first-fit / best-fit decreasing, to judge the optimiser against proven optima.

pub mod binpacking;
pub mod cluster;
pub mod decompose;
pub mod genetic;
pub mod roadef;
pub mod search;

use serde::Serialize;

/// The largest number of size options per item.
pub const MAX_OPTIONS: usize = u16::MAX as usize;

/// The cost of an item left unplaced (it fits on no host): above any sum of host costs.
pub const UNPLACED_COST: f64 = 1e9;

/// Marks an unplaced item in [`Solution::host_of`].
pub const NOWHERE: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Host {
    /// Capacity per dimension (e.g. cores, MiB).
    pub capacity: Vec<f64>,
    /// What having it active costs (e.g. its idle power, or 1 to count hosts).
    pub active_cost: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SizeOption {
    /// Demand per dimension.
    pub demand: Vec<f64>,
    /// What choosing it costs (e.g. the forecast SLA risk of a smaller size); 0 for none.
    pub cost: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    pub options: Vec<SizeOption>,
    /// Where it is now and with which option (`None`: not placed yet).
    pub current: Option<(u32, u16)>,
    /// What moving it from its current host costs.
    pub move_cost: f64,
}

/// What the optimiser places: checked by [`Problem::check`] before a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Problem {
    pub dims: usize,
    pub hosts: Vec<Host>,
    pub items: Vec<Item>,
    /// Groups of items no two of which may share a host.
    pub anti_affinity: Vec<Vec<u32>>,
    /// Weight of the packing pressure, a tie-breaker below one host's cost that prefers full
    /// hosts beside emptier ones (Falkenauer's fitness): it makes the last host easier to
    /// empty.
    pub packing_weight: f64,
    /// Weight of balance, a goal: the mean over hosts of their fill squared (a host's fill: the
    /// mean over dimensions of load / capacity) costs this much, so that evenly loaded hosts
    /// cost less than some full beside some idle (headroom for bursts everywhere). 0: no
    /// preference. Weighed against a host's active cost, it sets how much energy balance is
    /// worth.
    pub balance_weight: f64,
    /// A proven lower bound on the cost, where one is known: a run stops when it reaches it.
    pub lower_bound: Option<f64>,
    /// Moves and resizes suggested from outside the search (the placement policy's ensemble,
    /// the forecasts' sizing): the genetic algorithm's guided mutation tries them
    /// ([`genetic::GeneticConfig::guided`]). Suggestions, never constraints.
    pub hints: Vec<Hint>,
    /// Goals on pairs of items: what they cost by how far apart their hosts are (e.g. a
    /// dependency with a latency requirement, graded by how well each distance meets it).
    pub pairs: Vec<PairTerm>,
    /// Where each host is, for the pairs' distances; empty: every host at one site (two hosts
    /// are then a rack apart).
    pub sites: Vec<Site>,
}

/// A host's place in the topology: opaque zone and rack numbers (racks of different zones
/// are different racks, whatever their numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Site {
    pub zone: u32,
    pub rack: u32,
}

/// How far apart two placed items are: [`DISTANCES`] levels, nearest first.
pub const DISTANCES: usize = 4;

/// A goal on two items: what their being `d` apart costs, `d` one of: on one host, on two
/// hosts of one rack, in two racks of one zone, in two zones.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairTerm {
    pub a: u32,
    pub b: u32,
    pub cost: [f64; DISTANCES],
}

/// A suggested change of one item: to a host, to a size option, or both.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hint {
    pub item: u32,
    pub host: Option<u32>,
    pub option: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProblemError {
    #[error("the problem has no dimensions")]
    NoDimensions,
    #[error("host {host}: {why}")]
    Host { host: usize, why: String },
    #[error("item {item}: {why}")]
    Item { item: usize, why: String },
    #[error("anti-affinity group {group}: {why}")]
    Group { group: usize, why: String },
    #[error("goals: {0}")]
    Goal(String),
    #[error("hint {hint}: {why}")]
    Hint { hint: usize, why: String },
    #[error("pair {pair}: {why}")]
    Pair { pair: usize, why: String },
}

impl Problem {
    /// Every vector has `dims` finite, non-negative entries; every item has 1..=MAX_OPTIONS
    /// options; current placements and groups name hosts, options and items that exist.
    pub fn check(&self) -> Result<(), ProblemError> {
        if !(self.balance_weight.is_finite() && self.balance_weight >= 0.0) {
            return Err(ProblemError::Goal(format!("balance weight {} is not a finite value >= 0", self.balance_weight)));
        }
        if self.dims == 0 {
            return Err(ProblemError::NoDimensions);
        }
        let vector_ok = |v: &[f64]| v.len() == self.dims && v.iter().all(|x| x.is_finite() && *x >= 0.0);
        for (h, host) in self.hosts.iter().enumerate() {
            if !vector_ok(&host.capacity) {
                return Err(ProblemError::Host {
                    host: h,
                    why: format!("capacity {:?} is not {} finite values >= 0", host.capacity, self.dims),
                });
            }
            if !host.active_cost.is_finite() || host.active_cost < 0.0 {
                return Err(ProblemError::Host { host: h, why: format!("active cost {} is not a finite value >= 0", host.active_cost) });
            }
        }
        for (i, item) in self.items.iter().enumerate() {
            if item.options.is_empty() || item.options.len() > MAX_OPTIONS {
                return Err(ProblemError::Item { item: i, why: format!("{} size options (1..={MAX_OPTIONS})", item.options.len()) });
            }
            for (o, opt) in item.options.iter().enumerate() {
                if !vector_ok(&opt.demand) || !opt.cost.is_finite() {
                    return Err(ProblemError::Item {
                        item: i,
                        why: format!("option {o}: demand {:?} or cost {} is invalid", opt.demand, opt.cost),
                    });
                }
            }
            if let Some((h, o)) = item.current
                && (h as usize >= self.hosts.len() || o as usize >= item.options.len())
            {
                return Err(ProblemError::Item { item: i, why: format!("current placement (host {h}, option {o}) does not exist") });
            }
            if !item.move_cost.is_finite() || item.move_cost < 0.0 {
                return Err(ProblemError::Item { item: i, why: format!("move cost {} is not a finite value >= 0", item.move_cost) });
            }
        }
        for (g, group) in self.anti_affinity.iter().enumerate() {
            if let Some(i) = group.iter().find(|i| **i as usize >= self.items.len()) {
                return Err(ProblemError::Group { group: g, why: format!("item {i} does not exist") });
            }
        }
        for (n, pair) in self.pairs.iter().enumerate() {
            let bad = |why: String| Err(ProblemError::Pair { pair: n, why });
            if pair.a as usize >= self.items.len() || pair.b as usize >= self.items.len() || pair.a == pair.b {
                return bad(format!("items {} and {} are not two items of the problem", pair.a, pair.b));
            }
            if !pair.cost.iter().all(|c| c.is_finite() && *c >= 0.0) {
                return bad(format!("costs {:?} are not finite values >= 0", pair.cost));
            }
        }
        if !self.sites.is_empty() && self.sites.len() != self.hosts.len() {
            return Err(ProblemError::Goal(format!("{} sites for {} hosts (one per host, or none)", self.sites.len(), self.hosts.len())));
        }
        for (n, hint) in self.hints.iter().enumerate() {
            let Some(item) = self.items.get(hint.item as usize) else {
                return Err(ProblemError::Hint { hint: n, why: format!("item {} does not exist", hint.item) });
            };
            if hint.host.is_some_and(|h| h as usize >= self.hosts.len()) || hint.option.is_some_and(|o| o as usize >= item.options.len()) {
                return Err(ProblemError::Hint {
                    hint: n,
                    why: format!("host {:?} or option {:?} does not exist", hint.host, hint.option),
                });
            }
        }
        Ok(())
    }

    /// An item's demand under option `o`, as one number: the sum over dimensions of its share
    /// of the largest host's capacity (what "bigger" means when sorting).
    fn scalar(&self, item: u32, o: u16, scale: &[f64]) -> f64 {
        self.items[item as usize].options[o as usize].demand.iter().zip(scale).map(|(d, s)| d / s).sum()
    }
}

/// A placement and sizing of every item, with the per-host state its cost is kept from.
#[derive(Clone, Debug)]
pub struct Solution {
    pub host_of: Vec<u32>,
    pub option_of: Vec<u16>,
    /// Load per host and dimension (`hosts x dims`).
    load: Vec<f64>,
    members: Vec<Vec<u32>>,
    /// The cost but for the unplaced items' penalty (kept apart: adding and taking away a
    /// penalty of 1e9 would wear the small terms away).
    cost: f64,
    unplaced: usize,
    /// The packing term's sum of squared fills (kept to recompute the cost in O(1)).
    fill_sq: f64,
    active: usize,
}

/// The per-problem tables a solution's operators read.
#[derive(Debug)]
pub struct Tables<'a> {
    pub problem: &'a Problem,
    /// Each dimension's largest capacity (what a scalar size is a share of).
    scale: Vec<f64>,
    /// Anti-affinity groups each item belongs to.
    groups_of: Vec<Vec<u32>>,
    /// Hosts in the order an item opens a new one: cheapest per capacity first.
    open_order: Vec<u32>,
    /// Each item's options, cheapest first (ties: the order given).
    options_by_cost: Vec<Vec<u16>>,
    /// Whether any item has more than one option (sizing is part of the search).
    pub sized: bool,
    /// The pair terms each item is in (indices into the problem's pairs).
    pairs_of: Vec<Vec<u32>>,
}

impl<'a> Tables<'a> {
    pub fn new(problem: &'a Problem) -> Tables<'a> {
        let scale: Vec<f64> =
            (0..problem.dims).map(|d| problem.hosts.iter().map(|h| h.capacity[d]).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE)).collect();
        let mut groups_of = vec![Vec::new(); problem.items.len()];
        for (g, group) in problem.anti_affinity.iter().enumerate() {
            for i in group {
                groups_of[*i as usize].push(g as u32);
            }
        }
        let mut open_order: Vec<u32> = (0..problem.hosts.len() as u32).collect();
        let size = |h: u32| problem.hosts[h as usize].capacity.iter().zip(&scale).map(|(c, s)| c / s).sum::<f64>().max(1e-12);
        open_order.sort_by(|a, b| {
            let ca = problem.hosts[*a as usize].active_cost / size(*a);
            let cb = problem.hosts[*b as usize].active_cost / size(*b);
            ca.total_cmp(&cb).then(a.cmp(b))
        });
        let options_by_cost: Vec<Vec<u16>> = problem
            .items
            .iter()
            .map(|item| {
                let mut o: Vec<u16> = (0..item.options.len() as u16).collect();
                o.sort_by(|a, b| item.options[*a as usize].cost.total_cmp(&item.options[*b as usize].cost).then(a.cmp(b)));
                o
            })
            .collect();
        let sized = problem.items.iter().any(|i| i.options.len() > 1);
        let mut pairs_of = vec![Vec::new(); problem.items.len()];
        for (n, pair) in problem.pairs.iter().enumerate() {
            pairs_of[pair.a as usize].push(n as u32);
            pairs_of[pair.b as usize].push(n as u32);
        }
        Tables { problem, scale, groups_of, open_order, options_by_cost, sized, pairs_of }
    }

    /// How far apart two hosts are: 0 the same host, 1 one rack, 2 one zone, 3 two zones.
    pub fn distance(&self, a: u32, b: u32) -> usize {
        if a == b {
            return 0;
        }
        let sites = &self.problem.sites;
        if sites.is_empty() {
            return 1;
        }
        let (x, y) = (sites[a as usize], sites[b as usize]);
        match (x.zone == y.zone, x.rack == y.rack) {
            (true, true) => 1,
            (true, false) => 2,
            (false, _) => 3,
        }
    }

    /// What item `i`'s pair terms cost with `i` on `host` and the others where `s` has them
    /// (terms whose other item is not placed count nothing).
    pub fn pairs_cost(&self, s: &Solution, i: u32, host: u32) -> f64 {
        self.pairs_cost_besides(s, i, host, NOWHERE)
    }

    /// [`pairs_cost`](Self::pairs_cost) without the terms between `i` and item `besides`.
    pub fn pairs_cost_besides(&self, s: &Solution, i: u32, host: u32, besides: u32) -> f64 {
        if host == NOWHERE {
            return 0.0;
        }
        self.pairs_of[i as usize]
            .iter()
            .map(|n| {
                let pair = &self.problem.pairs[*n as usize];
                let other = if pair.a == i { pair.b } else { pair.a };
                let h = s.host_of[other as usize];
                if h == NOWHERE || other == besides { 0.0 } else { pair.cost[self.distance(host, h)] }
            })
            .sum()
    }

    /// What the pair terms between items `a` and `b` cost at distance `d`.
    pub fn shared_pairs_cost(&self, a: u32, b: u32, d: usize) -> f64 {
        self.pairs_of[a as usize]
            .iter()
            .map(|n| &self.problem.pairs[*n as usize])
            .filter(|p| (p.a == a && p.b == b) || (p.a == b && p.b == a))
            .map(|p| p.cost[d])
            .sum()
    }

    /// Whether item `i` is in any pair term.
    pub fn in_pairs(&self, i: u32) -> bool {
        !self.pairs_of[i as usize].is_empty()
    }

    pub fn options_by_cost(&self, item: u32) -> &[u16] {
        &self.options_by_cost[item as usize]
    }

    pub fn scalar(&self, item: u32, option: u16) -> f64 {
        self.problem.scalar(item, option, &self.scale)
    }

    pub fn option_cost(&self, item: u32, option: u16) -> f64 {
        self.problem.items[item as usize].options[option as usize].cost
    }

    /// Whether two items share an anti-affinity group.
    pub fn share_group(&self, a: u32, b: u32) -> bool {
        a != b && shares_group(self, a, b)
    }

    pub fn demand(&self, item: u32, option: u16) -> &[f64] {
        &self.problem.items[item as usize].options[option as usize].demand
    }
}

impl Solution {
    /// Nothing placed: every item at its first option.
    pub fn empty(t: &Tables<'_>) -> Solution {
        let p = t.problem;
        let n = p.items.len();
        let mut s = Solution {
            host_of: vec![NOWHERE; n],
            option_of: vec![0; n],
            load: vec![0.0; p.hosts.len() * p.dims],
            members: vec![Vec::new(); p.hosts.len()],
            cost: 0.0,
            unplaced: n,
            fill_sq: 0.0,
            active: 0,
        };
        s.recount(t);
        s
    }

    /// Where every item is now (items without a current host unplaced).
    pub fn current(t: &Tables<'_>) -> Solution {
        let mut s = Solution::empty(t);
        for (i, item) in t.problem.items.iter().enumerate() {
            if let Some((h, o)) = item.current {
                s.option_of[i] = o;
                s.place(t, i as u32, h);
            }
        }
        s
    }

    pub fn cost(&self) -> f64 {
        self.cost + self.unplaced as f64 * UNPLACED_COST
    }

    /// The cost without the packing tie-breaker: what the problem's goals add up to (the
    /// figure to compare with an exact solver's optimum).
    pub fn objective(&self, t: &Tables<'_>) -> f64 {
        self.cost() + t.problem.packing_weight * self.fill_sq / t.problem.hosts.len().max(1) as f64
    }

    /// What the pair terms cost where the items are (terms with an unplaced item: nothing).
    pub fn pairs_cost(&self, t: &Tables<'_>) -> f64 {
        t.problem
            .pairs
            .iter()
            .filter(|p| self.host_of[p.a as usize] != NOWHERE && self.host_of[p.b as usize] != NOWHERE)
            .map(|p| p.cost[t.distance(self.host_of[p.a as usize], self.host_of[p.b as usize])])
            .sum()
    }

    /// Hosts with at least one item.
    pub fn active_hosts(&self) -> usize {
        self.active
    }

    pub fn members(&self, host: u32) -> &[u32] {
        &self.members[host as usize]
    }

    pub fn load(&self, host: u32, dims: usize) -> &[f64] {
        &self.load[host as usize * dims..(host as usize + 1) * dims]
    }

    pub fn unplaced(&self) -> impl Iterator<Item = u32> + '_ {
        self.host_of.iter().enumerate().filter(|(_, h)| **h == NOWHERE).map(|(i, _)| i as u32)
    }

    /// The host's fill: the mean over dimensions of load / capacity.
    fn fill(&self, t: &Tables<'_>, host: u32) -> f64 {
        let d = t.problem.dims;
        let cap = &t.problem.hosts[host as usize].capacity;
        self.load(host, d).iter().zip(cap).map(|(l, c)| if *c > 0.0 { l / c } else { 0.0 }).sum::<f64>() / d as f64
    }

    /// The cost counted from scratch (what the incremental updates must agree with); resets
    /// the kept terms to it.
    pub fn recount(&mut self, t: &Tables<'_>) -> f64 {
        let p = t.problem;
        self.active = self.members.iter().filter(|m| !m.is_empty()).count();
        self.fill_sq = (0..p.hosts.len() as u32).map(|h| self.fill(t, h).powi(2)).sum();
        let mut cost: f64 = self.members.iter().enumerate().filter(|(_, m)| !m.is_empty()).map(|(h, _)| p.hosts[h].active_cost).sum();
        for i in 0..p.items.len() {
            cost += self.item_cost(t, i as u32, self.host_of[i], self.option_of[i]);
        }
        cost += self.pairs_cost(t);
        cost += self.fill_term(t);
        self.unplaced = self.host_of.iter().filter(|h| **h == NOWHERE).count();
        self.cost = cost;
        self.cost()
    }

    /// The cost of the hosts' fills: the packing tie-breaker (a reward) and the balance goal.
    fn fill_term(&self, t: &Tables<'_>) -> f64 {
        (t.problem.balance_weight - t.problem.packing_weight) * self.fill_sq / t.problem.hosts.len().max(1) as f64
    }

    /// What a placed item costs where it is: its option's cost and a move away from its
    /// current host (an unplaced one's penalty is counted apart).
    fn item_cost(&self, t: &Tables<'_>, i: u32, host: u32, option: u16) -> f64 {
        let item = &t.problem.items[i as usize];
        if host == NOWHERE {
            return 0.0;
        }
        let moved = item.current.is_some_and(|(h, _)| h != host);
        item.options[option as usize].cost + if moved { item.move_cost } else { 0.0 }
    }

    /// Whether item `i` with option `o` fits on `host` now (capacity and anti-affinity).
    pub fn fits(&self, t: &Tables<'_>, i: u32, o: u16, host: u32) -> bool {
        if !self.room_for(t, host, t.demand(i, o)) {
            return false;
        }
        t.groups_of[i as usize].is_empty() || !self.members[host as usize].iter().any(|m| *m != i && shares_group(t, *m, i))
    }

    /// Whether `host` has room for `extra` more than it holds (anti-affinity not checked).
    fn room_for(&self, t: &Tables<'_>, host: u32, extra: &[f64]) -> bool {
        let d = t.problem.dims;
        let cap = &t.problem.hosts[host as usize].capacity;
        let load = self.load(host, d);
        (0..d).all(|k| within_capacity(load[k] + extra[k], cap[k]))
    }

    /// Takes every item off `host` and adds them to `free`.
    pub fn empty_host(&mut self, t: &Tables<'_>, host: u32, free: &mut Vec<u32>) {
        for m in self.members(host).to_vec() {
            self.unplace(t, m);
            free.push(m);
        }
    }

    /// The hosts in use with their fill, emptiest first.
    pub fn hosts_by_fill(&self, t: &Tables<'_>) -> Vec<(f64, u32)> {
        let mut used: Vec<(f64, u32)> =
            (0..t.problem.hosts.len() as u32).filter(|h| !self.members(*h).is_empty()).map(|h| (self.fill(t, h), h)).collect();
        used.sort_by(|x, y| x.0.total_cmp(&y.0));
        used
    }

    /// Takes item `i` off its host (it becomes unplaced).
    pub fn unplace(&mut self, t: &Tables<'_>, i: u32) {
        let h = self.host_of[i as usize];
        if h == NOWHERE {
            return;
        }
        let before = self.host_terms(t, h);
        let o = self.option_of[i as usize];
        self.cost -= self.item_cost(t, i, h, o) + t.pairs_cost(self, i, h);
        let d = t.problem.dims;
        for (k, x) in t.demand(i, o).iter().enumerate() {
            self.load[h as usize * d + k] -= x;
        }
        let m = &mut self.members[h as usize];
        if let Some(pos) = m.iter().position(|x| *x == i) {
            m.swap_remove(pos);
        }
        if m.is_empty() {
            // No drift: an empty host's load is exactly zero.
            self.load[h as usize * d..(h as usize + 1) * d].fill(0.0);
        }
        self.host_of[i as usize] = NOWHERE;
        self.unplaced += 1;
        self.apply_host_terms(t, h, before);
    }

    /// Puts unplaced item `i` on `host` (the caller has checked it fits).
    pub fn place(&mut self, t: &Tables<'_>, i: u32, host: u32) {
        debug_assert_eq!(self.host_of[i as usize], NOWHERE);
        let before = self.host_terms(t, host);
        let o = self.option_of[i as usize];
        let d = t.problem.dims;
        for (k, x) in t.demand(i, o).iter().enumerate() {
            self.load[host as usize * d + k] += x;
        }
        self.members[host as usize].push(i);
        self.host_of[i as usize] = host;
        self.unplaced -= 1;
        self.cost += self.item_cost(t, i, host, o) + t.pairs_cost(self, i, host);
        self.apply_host_terms(t, host, before);
    }

    /// Moves item `i` to `host` (the caller has checked it fits).
    pub fn move_item(&mut self, t: &Tables<'_>, i: u32, host: u32) {
        self.unplace(t, i);
        self.place(t, i, host);
    }

    /// Changes unplaced item `i`'s option.
    pub fn set_option(&mut self, i: u32, o: u16) {
        debug_assert_eq!(self.host_of[i as usize], NOWHERE);
        self.option_of[i as usize] = o;
    }

    /// A host's share of the cost (active cost, packing term) before a change.
    fn host_terms(&self, t: &Tables<'_>, h: u32) -> (bool, f64) {
        (!self.members[h as usize].is_empty(), self.fill(t, h).powi(2))
    }

    fn apply_host_terms(&mut self, t: &Tables<'_>, h: u32, (was_active, was_sq): (bool, f64)) {
        let is_active = !self.members[h as usize].is_empty();
        let cost = t.problem.hosts[h as usize].active_cost;
        match (was_active, is_active) {
            (false, true) => {
                self.active += 1;
                self.cost += cost;
            }
            (true, false) => {
                self.active -= 1;
                self.cost -= cost;
            }
            _ => {}
        }
        let now_sq = self.fill(t, h).powi(2);
        let before = self.fill_term(t);
        self.fill_sq += now_sq - was_sq;
        self.cost += self.fill_term(t) - before;
    }
}

/// Whether a load is within a capacity (with room for floating-point rounding).
fn within_capacity(load: f64, capacity: f64) -> bool {
    load <= capacity * (1.0 + 1e-12) + 1e-9
}

fn shares_group(t: &Tables<'_>, a: u32, b: u32) -> bool {
    let (ga, gb) = (&t.groups_of[a as usize], &t.groups_of[b as usize]);
    ga.iter().any(|g| gb.contains(g))
}

/// A seeded random stream (SplitMix64): the decision core reads no entropy of its own.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A stream for one job of a run: the same (seed, a, b) always gives the same stream.
    pub fn for_job(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng(seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 11) as u128 * n as u128) >> 53) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod pair_tests {
    use super::genetic::{Generations, GeneticConfig, Sequential, optimise};
    use super::*;

    /// `n` items of one core with two sizes (one core free; half a core at a risk costing
    /// 0.6), on hosts of `per_host` cores, each at its current host.
    fn problem(n: usize, hosts: usize, per_host: f64, current: &[u32], pairs: Vec<PairTerm>, sites: Vec<Site>) -> Problem {
        let item = |h: u32| Item {
            options: vec![SizeOption { demand: vec![1.0], cost: 0.0 }, SizeOption { demand: vec![0.5], cost: 0.6 }],
            current: Some((h, 0)),
            move_cost: 0.1,
        };
        Problem {
            dims: 1,
            hosts: vec![Host { capacity: vec![per_host], active_cost: 1.0 }; hosts],
            items: (0..n).map(|i| item(current[i])).collect(),
            pairs,
            sites,
            ..Problem::default()
        }
    }

    #[test]
    fn pair_terms_grade_distance_by_topology_and_are_kept_incrementally() {
        // Hosts 0 and 1 share a rack, 2 is another rack of that zone, 3 another zone.
        let sites = vec![Site { zone: 0, rack: 0 }, Site { zone: 0, rack: 0 }, Site { zone: 0, rack: 1 }, Site { zone: 1, rack: 0 }];
        let pairs = vec![
            PairTerm { a: 0, b: 1, cost: [0.0, 0.2, 0.5, 1.0] },
            PairTerm { a: 1, b: 2, cost: [0.0, 0.1, 0.1, 0.3] },
            PairTerm { a: 0, b: 5, cost: [0.0, 0.4, 0.8, 2.0] },
        ];
        let p = problem(6, 4, 3.0, &[0, 3, 2, 1, 0, 2], pairs, sites);
        p.check().unwrap();
        let t = Tables::new(&p);
        assert_eq!((t.distance(0, 0), t.distance(0, 1), t.distance(1, 2), t.distance(2, 3)), (0, 1, 2, 3));
        let mut s = Solution::current(&t);
        // 4 hosts active; items 0 and 1 two zones apart (1.0), 1 and 2 too (0.3), 0 and 5 a
        // rack apart in one zone (0.8).
        assert!((s.cost() - (4.0 + 1.0 + 0.3 + 0.8)).abs() < 1e-9, "{}", s.cost());
        let mut rng = Rng::new(11);
        for _ in 0..3000 {
            let i = rng.below(p.items.len()) as u32;
            match rng.below(3) {
                0 => s.unplace(&t, i),
                1 if s.host_of[i as usize] == NOWHERE => {
                    s.set_option(i, rng.below(2) as u16);
                }
                _ => {
                    let h = rng.below(p.hosts.len()) as u32;
                    let o = s.option_of[i as usize];
                    if s.host_of[i as usize] != h && s.fits(&t, i, o, h) {
                        if s.host_of[i as usize] == NOWHERE {
                            s.place(&t, i, h);
                        } else {
                            s.move_item(&t, i, h);
                        }
                    }
                }
            }
            let kept = s.cost();
            assert!((kept - s.clone().recount(&t)).abs() < 1e-6, "kept {kept} drifted from the count");
        }
    }

    #[test]
    fn the_optimiser_brings_a_costly_pair_together_when_a_move_is_worth_it() {
        // Hosts of two cores; items 0 and 2 on host 0, item 1 on host 1: a pair (0, 1) apart
        // costs 1, a move 0.1. Moving 0 next to 1 pays; shrinking two items to share one host
        // does not (1.2 of risk for a host of 1).
        let run = |cost_apart: f64| {
            let p = problem(3, 2, 2.0, &[0, 1, 0], vec![PairTerm { a: 0, b: 1, cost: [0.0, cost_apart, cost_apart, cost_apart] }], vec![]);
            let t = Tables::new(&p);
            let cfg = GeneticConfig { population: 8, generations: 30, seed: 5, ..GeneticConfig::default() };
            let out = optimise(&p, vec![Solution::current(&t)], &cfg, &Sequential, &mut Generations);
            let mut check = out.best.clone();
            assert!((check.recount(&t) - out.best.cost()).abs() < 1e-9);
            out.best
        };
        let together = run(1.0);
        assert_eq!(together.host_of[0], together.host_of[1], "{:?}", together.host_of);
        assert!(together.cost() < 2.0 + 1.0, "cheaper than leaving them apart: {}", together.cost());
        // A pair that costs less apart than a move stays as it is.
        let apart = run(0.05);
        assert_eq!(apart.host_of, vec![0, 1, 0]);
    }
}
