//! A grouping genetic algorithm with a memetic local search (after Falkenauer's HGGA and
//! Levine and Ducatelle's local search): a solution is its set of host groups, and the
//! operators move whole groups.
//!
//! Each generation makes `population` children, each from its own random stream
//! ([`Rng::for_job`]: the run's seed, the generation, the child's index), so the caller may
//! make them in parallel ([`Parallel`]) and get the same result on any number of threads:
//!
//! 1. two parents by tournament;
//! 2. crossover: the child is the first parent with a few of the second parent's host
//!    groups put in whole, the hosts that held any of their items emptied and those items
//!    set free;
//! 3. mutation: the emptiest hosts (and a random one) emptied too;
//! 4. local search ([`search::reinsert`]): the free items back by dominance swaps, then
//!    first-fit decreasing.
//!
//! The next population is the best `elite` of the old one and the best children, no two with
//! the same cost (clones would crowd out the rest); after `restart_after` generations without a
//! better best, all but the elite make way for fresh random solutions. The run stops after `generations`, when
//! the caller's [`Budget`] says so, or when the best reaches the problem's lower bound.

use serde::Serialize;

use super::search;
use super::{Problem, Rng, Solution, Tables};

/// Sets restart streams apart from the children's.
const RESTART_STREAM: u64 = 0x0005_EED0_F2E5_7A27;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GeneticConfig {
    pub population: usize,
    pub generations: usize,
    pub tournament: usize,
    pub elite: usize,
    /// The most host groups of the second parent a crossover brings in (1 to this many).
    pub crossover_groups: usize,
    /// The emptiest hosts a mutation empties.
    pub mutate_hosts: usize,
    /// Extra rounds of local search per child (empty the emptiest host and a random one,
    /// reinsert, keep if no worse).
    pub intensify: usize,
    /// Generations without a better best after which all but the elite are replaced by fresh
    /// random solutions (a population that has converged searches no more).
    pub restart_after: usize,
    /// The share of children given a guided mutation where the problem has hints: one to
    /// three of them applied (the item moved to the suggested host and size where it fits
    /// there, else set free to be placed anew), the local search then settling the rest.
    pub guided: f64,
    pub seed: u64,
}

impl Default for GeneticConfig {
    fn default() -> Self {
        GeneticConfig {
            population: 32,
            generations: 2000,
            tournament: 2,
            elite: 2,
            crossover_groups: 6,
            mutate_hosts: 3,
            intensify: 2,
            restart_after: 300,
            guided: 0.25,
            seed: 1,
        }
    }
}

/// Makes `n` results; `make(i)` is the i-th (pure: any order, any thread).
pub trait Parallel {
    fn map<T, F>(&self, n: usize, make: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync + Send;
}

/// One child after another, on the caller's thread.
pub struct Sequential;

impl Parallel for Sequential {
    fn map<T, F>(&self, n: usize, make: F) -> Vec<T>
    where
        T: Send,
        F: Fn(usize) -> T + Sync + Send,
    {
        (0..n).map(make).collect()
    }
}

/// Whether the run may go on after `generation` with the best cost so far (the caller's clock).
pub trait Budget {
    fn keep_going(&mut self, generation: usize, best_cost: f64) -> bool;
}

/// No limit but the configured generations.
#[derive(Clone, Copy, Debug)]
pub struct Generations;

impl Budget for Generations {
    fn keep_going(&mut self, _: usize, _: f64) -> bool {
        true
    }
}

#[derive(Clone, Debug)]
pub struct GeneticOutcome {
    pub best: Solution,
    pub generations: usize,
    /// The best cost after each generation (the first entry: the initial population's).
    pub progress: Vec<f64>,
    pub reached_lower_bound: bool,
}

/// Runs the algorithm from `seeds` (e.g. the current placement, first-fit decreasing); the
/// rest of the first population is made by randomised first-fit.
pub fn optimise<P: Parallel, B: Budget>(
    problem: &Problem,
    seeds: Vec<Solution>,
    cfg: &GeneticConfig,
    par: &P,
    budget: &mut B,
) -> GeneticOutcome {
    let t = Tables::new(problem);
    let pop_size = cfg.population.max(2);
    let mut population = seeds;
    // Out of time before the start (a partition of a decomposed run reached late): the best
    // seed as it is, without making a population.
    if !population.is_empty() {
        sort_unique(&mut population);
        if !budget.keep_going(0, population[0].cost()) {
            let best = population.swap_remove(0);
            let reached = problem.lower_bound.is_some_and(|lb| best.cost() <= lb + 1e-9);
            return GeneticOutcome { progress: vec![best.cost()], best, generations: 0, reached_lower_bound: reached };
        }
    }
    let extra = pop_size.saturating_sub(population.len());
    population.extend(par.map(extra, |i| {
        let mut rng = Rng::for_job(cfg.seed, 0, i as u64);
        random_first_fit(&t, &mut rng)
    }));
    sort_unique(&mut population);
    let mut progress = vec![population[0].cost()];
    let at_bound = |s: &Solution| problem.lower_bound.is_some_and(|lb| s.cost() <= lb + 1e-9);
    let mut generation = 0;
    let (mut best_cost, mut improved_at) = (population[0].cost(), 0);
    while generation < cfg.generations && !at_bound(&population[0]) && budget.keep_going(generation, population[0].cost()) {
        generation += 1;
        let parents = &population;
        let children = par.map(pop_size, |i| {
            let mut rng = Rng::for_job(cfg.seed, generation as u64, i as u64);
            let a = tournament(parents, cfg.tournament, &mut rng);
            let b = tournament(parents, cfg.tournament, &mut rng);
            child(&t, &parents[a], &parents[b], cfg, &mut rng)
        });
        let mut next: Vec<Solution> = population.drain(..cfg.elite.min(population.len())).collect();
        next.extend(children);
        sort_unique(&mut next);
        next.truncate(pop_size);
        population = next;
        progress.push(population[0].cost());
        if population[0].cost() < best_cost - 1e-9 {
            (best_cost, improved_at) = (population[0].cost(), generation);
        } else if generation - improved_at >= cfg.restart_after.max(1) {
            improved_at = generation;
            let keep = cfg.elite.clamp(1, population.len());
            population.truncate(keep);
            population.extend(par.map(pop_size - keep, |i| {
                let mut rng = Rng::for_job(cfg.seed ^ RESTART_STREAM, generation as u64, i as u64);
                random_first_fit(&t, &mut rng)
            }));
            sort_unique(&mut population);
        }
    }
    let reached = at_bound(&population[0]);
    GeneticOutcome { best: population.swap_remove(0), generations: generation, progress, reached_lower_bound: reached }
}

/// Sorts by cost, drops solutions whose cost equals a better one's.
fn sort_unique(v: &mut Vec<Solution>) {
    v.sort_by(|a, b| a.cost().total_cmp(&b.cost()));
    v.dedup_by(|b, a| (a.cost() - b.cost()).abs() <= 1e-9 * a.cost().abs().max(1.0));
}

fn tournament(pop: &[Solution], size: usize, rng: &mut Rng) -> usize {
    // The population is sorted: the smallest index drawn wins.
    (0..size.max(1)).map(|_| rng.below(pop.len())).min().unwrap_or(0)
}

/// Items in random order, first fit (a diverse, feasible start).
pub fn random_first_fit(t: &Tables<'_>, rng: &mut Rng) -> Solution {
    let mut s = Solution::empty(t);
    let mut free: Vec<u32> = (0..t.problem.items.len() as u32).collect();
    rng.shuffle(&mut free);
    for i in free {
        search::first_fit(t, &mut s, i);
    }
    search::settle_options(t, &mut s);
    s
}

/// First-fit decreasing from nothing.
pub fn first_fit_decreasing(t: &Tables<'_>) -> Solution {
    let mut s = Solution::empty(t);
    let mut free: Vec<u32> = (0..t.problem.items.len() as u32).collect();
    search::first_fit_decreasing(t, &mut s, &mut free);
    s
}

fn child(t: &Tables<'_>, a: &Solution, b: &Solution, cfg: &GeneticConfig, rng: &mut Rng) -> Solution {
    let n_hosts = t.problem.hosts.len() as u32;
    let mut s = a.clone();
    let mut free: Vec<u32> = s.unplaced().collect();
    // Crossover: whole groups of the second parent.
    let mut groups: Vec<u32> = (0..n_hosts).filter(|h| !b.members(*h).is_empty()).collect();
    rng.shuffle(&mut groups);
    let take = (1 + rng.below(cfg.crossover_groups.max(1))).min(groups.len());
    for &g in &groups[..take] {
        let items = b.members(g);
        // Empty every host of the child that holds one of the group's items.
        for &i in items {
            let h = s.host_of[i as usize];
            if h != super::NOWHERE {
                s.empty_host(t, h, &mut free);
            }
        }
        // The group goes in whole: on its own host if the child leaves that empty, else on
        // an empty host with room for all of it.
        let dims = t.problem.dims;
        let load = b.load(g, dims).to_vec();
        let target = if s.members(g).is_empty() {
            Some(g)
        } else {
            t.open_order.iter().copied().find(|h| s.members(*h).is_empty() && s.room_for(t, *h, &load))
        };
        let Some(h) = target else { continue };
        for &i in items {
            if s.host_of[i as usize] == super::NOWHERE && s.fits(t, i, b.option_of[i as usize], h) {
                s.set_option(i, b.option_of[i as usize]);
                s.place(t, i, h);
            }
        }
    }
    // Guided mutation: suggested moves and resizes (no random draw without hints: runs
    // without them are as they were).
    let hints = &t.problem.hints;
    if !hints.is_empty() && rng.unit() < cfg.guided {
        for _ in 0..1 + rng.below(3) {
            let hint = &hints[rng.below(hints.len())];
            let i = hint.item;
            if s.host_of[i as usize] != super::NOWHERE {
                s.unplace(t, i);
            }
            if let Some(o) = hint.option {
                s.set_option(i, o);
            }
            match hint.host {
                Some(h) if s.fits(t, i, s.option_of[i as usize], h) => s.place(t, i, h),
                _ => free.push(i),
            }
        }
    }
    free.retain(|i| s.host_of[*i as usize] == super::NOWHERE);
    free.sort_unstable();
    free.dedup();
    // Mutation: empty the emptiest hosts, and one at random.
    let used = s.hosts_by_fill(t);
    let k = 1 + rng.below(cfg.mutate_hosts.max(1));
    let mut victims: Vec<u32> = used.iter().take(k).map(|(_, h)| *h).collect();
    if !used.is_empty() {
        victims.push(used[rng.below(used.len())].1);
    }
    for h in victims {
        s.empty_host(t, h, &mut free);
    }
    // Where sizes are searched too: a few items anywhere set free to be placed and sized anew.
    if t.sized {
        for _ in 0..1 + rng.below(cfg.mutate_hosts.max(1)) {
            let i = rng.below(s.host_of.len()) as u32;
            if s.host_of[i as usize] != super::NOWHERE {
                s.unplace(t, i);
                free.push(i);
            }
        }
    }
    search::reinsert(t, &mut s, &mut free, rng);
    search::descend_sized(t, &mut s, rng);
    // Intensify: empty the emptiest host and one at random again, keep it if no worse.
    for _ in 0..cfg.intensify {
        let mut trial = s.clone();
        let used = trial.hosts_by_fill(t);
        if used.len() < 2 {
            break;
        }
        let mut free = Vec::new();
        for h in [used[0].1, used[1 + rng.below(used.len() - 1)].1] {
            trial.empty_host(t, h, &mut free);
        }
        search::reinsert(t, &mut trial, &mut free, rng);
        if trial.cost() <= s.cost() {
            s = trial;
        }
    }
    s
}
