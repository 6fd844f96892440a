//! Large clusters by decomposition: the hosts are dealt into partitions of a few dozen, each
//! partition (its hosts and the items on them) is optimised by the genetic algorithm as a
//! problem of its own, and the partitions' results are put back together; rounds deal the
//! hosts anew, so that what one round could not bring together the next may. Partitions are
//! independent: the caller's [`Parallel`] runs them side by side, each from a random stream of
//! its own (the run's seed, the round, the partition), so the result of a seed does not depend
//! on the number of threads.
//!
//! A partition's problem keeps each item's move cost where its current host is in the
//! partition (elsewhere it has moved already, whatever this round does); anti-affinity groups
//! stay within a partition, as a partition's hosts hold none of another's items. Pair terms
//! between items of two partitions are left out of both (a round's result is kept only if the
//! whole, with them, costs no more).

use std::collections::HashMap;

use super::genetic::{Budget, GeneticConfig, Parallel, Sequential, optimise};
use super::{Item, NOWHERE, Problem, Rng, Solution, Tables};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DecomposeConfig {
    /// Hosts per partition (in use and not).
    pub hosts_per_partition: usize,
    pub rounds: usize,
    /// The genetic algorithm each partition runs.
    pub genetic: GeneticConfig,
}

impl Default for DecomposeConfig {
    fn default() -> Self {
        DecomposeConfig {
            hosts_per_partition: 16,
            rounds: 3,
            genetic: GeneticConfig { population: 4, generations: 3, restart_after: 1000, ..GeneticConfig::default() },
        }
    }
}

#[derive(Clone, Debug)]
pub struct DecomposeOutcome {
    pub best: Solution,
    pub rounds: usize,
    /// The cost after each round (the first entry: the start's).
    pub progress: Vec<f64>,
}

/// Improves `start` round by round until `cfg.rounds` or the budget stops it (checked between
/// rounds, and by each partition's run between its generations: a partition stopped early
/// keeps what it found). Unplaced items of `start` are dealt to partitions with room.
pub fn optimise_decomposed<P: Parallel, B: Budget + Clone + Send + Sync>(
    problem: &Problem,
    start: Solution,
    cfg: &DecomposeConfig,
    par: &P,
    budget: &mut B,
) -> DecomposeOutcome {
    let t = Tables::new(problem);
    let mut best = start;
    let mut progress = vec![best.cost()];
    let n_hosts = problem.hosts.len();
    let per = cfg.hosts_per_partition.max(2);
    let mut round = 0;
    while round < cfg.rounds && budget.keep_going(round, best.cost()) {
        round += 1;
        let mut rng = Rng::for_job(cfg.genetic.seed, 0xDEC0, round as u64);
        // Deal the hosts: in use ones mixed with empty ones in every partition, so each has
        // somewhere to move to and some to empty.
        let (mut used, mut empty): (Vec<u32>, Vec<u32>) = (0..n_hosts as u32).partition(|h| !best.members(*h).is_empty());
        rng.shuffle(&mut used);
        rng.shuffle(&mut empty);
        let parts = n_hosts.div_ceil(per).max(1);
        let mut partitions: Vec<Vec<u32>> = vec![Vec::new(); parts];
        for (k, h) in used.iter().chain(&empty).enumerate() {
            partitions[k % parts].push(*h);
        }
        let mut unplaced: Vec<u32> = best.unplaced().collect();
        rng.shuffle(&mut unplaced);
        let mut extra: Vec<Vec<u32>> = vec![Vec::new(); parts];
        for (k, i) in unplaced.into_iter().enumerate() {
            extra[k % parts].push(i);
        }
        let results = par.map(parts, |p| solve_partition(&t, &best, &partitions[p], &extra[p], cfg, round, p, &mut budget.clone()));
        let mut next = best.clone();
        for assign in results.into_iter().flatten() {
            for &(i, _, _) in &assign {
                next.unplace(&t, i);
            }
            for (i, h, o) in assign {
                if h != NOWHERE {
                    next.set_option(i, o);
                    next.place(&t, i, h);
                }
            }
        }
        next.recount(&t);
        if next.cost() <= best.cost() {
            best = next;
        }
        progress.push(best.cost());
    }
    DecomposeOutcome { best, rounds: round, progress }
}

/// One partition's better assignment (item, host, option) of its items, or `None` when the
/// optimiser found nothing better than what it has.
#[allow(clippy::too_many_arguments)]
fn solve_partition(
    t: &Tables<'_>,
    s: &Solution,
    hosts: &[u32],
    extra: &[u32],
    cfg: &DecomposeConfig,
    round: usize,
    part: usize,
    budget: &mut impl Budget,
) -> Option<Vec<(u32, u32, u16)>> {
    let problem = t.problem;
    let items: Vec<u32> = hosts.iter().flat_map(|h| s.members(*h).iter().copied()).chain(extra.iter().copied()).collect();
    if items.is_empty() {
        return None;
    }
    let host_index: HashMap<u32, u32> = hosts.iter().enumerate().map(|(l, h)| (*h, l as u32)).collect();
    let item_index: HashMap<u32, u32> = items.iter().enumerate().map(|(l, i)| (*i, l as u32)).collect();
    let local_host = |h: u32| host_index.get(&h).copied();
    let local_item = |i: u32| item_index.get(&i).copied();
    let sub = Problem {
        dims: problem.dims,
        hosts: hosts.iter().map(|h| problem.hosts[*h as usize].clone()).collect(),
        items: items
            .iter()
            .map(|i| {
                let item = &problem.items[*i as usize];
                Item {
                    options: item.options.clone(),
                    current: item.current.and_then(|(h, o)| local_host(h).map(|l| (l, o))),
                    move_cost: item.move_cost,
                }
            })
            .collect(),
        anti_affinity: problem
            .anti_affinity
            .iter()
            .map(|g| g.iter().filter_map(|i| local_item(*i)).collect::<Vec<u32>>())
            .filter(|g| g.len() > 1)
            .collect(),
        packing_weight: problem.packing_weight,
        balance_weight: problem.balance_weight,
        lower_bound: None,
        // The part's share of the hints: those about its items, to its hosts or none.
        hints: problem
            .hints
            .iter()
            .filter_map(|h| {
                let item = local_item(h.item)?;
                let host = match h.host {
                    Some(g) => Some(local_host(g)?),
                    None => None,
                };
                Some(super::Hint { item, host, option: h.option })
            })
            .collect(),
        // Pairs within the partition (one whose other item is elsewhere is left out: the
        // whole solution is judged with it after the round).
        pairs: problem
            .pairs
            .iter()
            .filter_map(|p| Some(super::PairTerm { a: local_item(p.a)?, b: local_item(p.b)?, cost: p.cost }))
            .collect(),
        sites: if problem.sites.is_empty() { Vec::new() } else { hosts.iter().map(|h| problem.sites[*h as usize]).collect() },
    };
    let st = Tables::new(&sub);
    // The partition as it is now is the first seed: the result is never worse.
    let mut now = Solution::empty(&st);
    for (l, i) in items.iter().enumerate() {
        let h = s.host_of[*i as usize];
        now.set_option(l as u32, s.option_of[*i as usize]);
        if let Some(lh) = (h != NOWHERE).then(|| local_host(h)).flatten() {
            now.place(&st, l as u32, lh);
        }
    }
    let genetic = GeneticConfig { seed: Rng::for_job(cfg.genetic.seed, round as u64, part as u64).next_u64(), ..cfg.genetic.clone() };
    let out = optimise(&sub, vec![now.clone()], &genetic, &Sequential, budget);
    if out.best.cost() >= now.cost() - 1e-9 {
        return None;
    }
    Some(
        items
            .iter()
            .enumerate()
            .map(|(l, i)| {
                let h = out.best.host_of[l];
                (*i, if h == NOWHERE { NOWHERE } else { hosts[h as usize] }, out.best.option_of[l])
            })
            .collect(),
    )
}
