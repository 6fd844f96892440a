//! One-dimensional bin packing, the benchmark with proven optima the optimiser is judged on
//! (BPPLIB): an instance as a [`Problem`] (every bin costs 1), Martello and Toth's L2 lower
//! bound, and first-fit / best-fit decreasing.

use super::{Host, Item, Problem, SizeOption};

/// Items of integer weights, bins of one capacity.
#[derive(Clone, Debug, PartialEq)]
pub struct BinPacking {
    pub capacity: u64,
    pub weights: Vec<u64>,
}

impl BinPacking {
    /// As an optimiser problem: as many bins as first-fit decreasing needs (an upper bound on
    /// the optimum), each of cost 1, and the L2 bound as the lower bound (a run that reaches it
    /// is optimal and stops).
    pub fn problem(&self) -> Problem {
        let bins = self.first_fit_decreasing().max(1);
        Problem {
            dims: 1,
            hosts: (0..bins).map(|_| Host { capacity: vec![self.capacity as f64], active_cost: 1.0 }).collect(),
            items: self
                .weights
                .iter()
                .map(|w| Item { options: vec![SizeOption { demand: vec![*w as f64], cost: 0.0 }], current: None, move_cost: 0.0 })
                .collect(),
            anti_affinity: Vec::new(),
            packing_weight: 0.5,
            balance_weight: 0.0,
            // The packing term is at most the weight below the count: a solution with the
            // bound's bins costs less than bound - 0.5 + 0.5.
            lower_bound: Some(self.l2_bound() as f64),
            hints: Vec::new(),
            pairs: Vec::new(),
            sites: Vec::new(),
        }
    }

    /// Martello and Toth's L2 bound: for each threshold K in 0..=c/2, the items above c - K
    /// each need a bin, those in (c/2, c - K] each need one too, and the items in [K, c/2]
    /// need what room the second kind leave them, rounded up.
    pub fn l2_bound(&self) -> u64 {
        let c = self.capacity;
        let total: u64 = self.weights.iter().sum();
        let l1 = total.div_ceil(c.max(1));
        let mut ks: Vec<u64> = self.weights.iter().copied().filter(|w| *w <= c / 2).collect();
        ks.push(0);
        ks.sort_unstable();
        ks.dedup();
        let mut best = l1;
        for k in ks {
            let (mut j1, mut j2, mut room2, mut sum3) = (0u64, 0u64, 0u64, 0u64);
            for &w in &self.weights {
                if w > c - k {
                    j1 += 1;
                } else if 2 * w > c {
                    j2 += 1;
                    room2 += c - w;
                } else if w >= k {
                    sum3 += w;
                }
            }
            let rest = sum3.saturating_sub(room2).div_ceil(c.max(1));
            best = best.max(j1 + j2 + rest);
        }
        best
    }

    /// Bins first-fit decreasing uses.
    pub fn first_fit_decreasing(&self) -> usize {
        self.decreasing(|bins: &[u64], w| bins.iter().position(|l| l + w <= self.capacity))
    }

    /// Bins best-fit decreasing uses (each item into the fullest bin it fits).
    pub fn best_fit_decreasing(&self) -> usize {
        self.decreasing(|bins: &[u64], w| {
            bins.iter()
                .enumerate()
                .filter(|(_, l)| **l + w <= self.capacity)
                .max_by_key(|(i, l)| (**l, std::cmp::Reverse(*i)))
                .map(|(i, _)| i)
        })
    }

    fn decreasing(&self, choose: impl Fn(&[u64], u64) -> Option<usize>) -> usize {
        let mut w = self.weights.clone();
        w.sort_unstable_by(|a, b| b.cmp(a));
        let mut bins: Vec<u64> = Vec::new();
        for x in w {
            match choose(&bins, x) {
                Some(i) => bins[i] += x,
                None => bins.push(x),
            }
        }
        bins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optimise::genetic::{Generations, GeneticConfig, Sequential, first_fit_decreasing, optimise};
    use crate::optimise::{Rng, Tables};

    #[test]
    fn the_l2_bound_counts_big_items_and_the_room_they_leave() {
        // Three items above half a bin need three bins although their sum fits in two.
        let p = BinPacking { capacity: 100, weights: vec![51, 51, 51] };
        assert_eq!(p.l2_bound(), 3);
        // Triplets summing to exactly a bin: the bound is n / 3.
        let t = BinPacking { capacity: 1000, weights: vec![380, 320, 300, 400, 350, 250] };
        assert_eq!(t.l2_bound(), 2);
        // Items of 60 with capacity 100: one per bin.
        let big = BinPacking { capacity: 100, weights: vec![60; 7] };
        assert_eq!(big.l2_bound(), 7);
    }

    #[test]
    fn first_fit_decreasing_is_not_optimal_where_the_optimiser_is() {
        // Three bins hold them exactly ({64,22,8,6} {56,44} {24,24,21,17,8,6}); first-fit
        // decreasing needs four.
        let p = BinPacking { capacity: 100, weights: vec![44, 24, 24, 22, 21, 17, 8, 8, 6, 6, 56, 64] };
        let total: u64 = p.weights.iter().sum();
        assert_eq!(total, 300);
        let problem = p.problem();
        let out =
            optimise(&problem, vec![], &GeneticConfig { generations: 200, ..GeneticConfig::default() }, &Sequential, &mut Generations);
        assert_eq!(out.best.active_hosts(), 3, "three full bins: {:?}", out.best.host_of);
        assert!(out.reached_lower_bound);
        assert_eq!(p.first_fit_decreasing(), 4);
    }

    #[test]
    fn the_incremental_cost_agrees_with_a_recount() {
        let p = BinPacking { capacity: 150, weights: (0..120).map(|i| 20 + (i * 37) % 81).collect() };
        let problem = p.problem();
        let t = Tables::new(&problem);
        let mut s = first_fit_decreasing(&t);
        let mut rng = Rng::new(3);
        for _ in 0..2000 {
            let i = rng.below(problem.items.len()) as u32;
            let h = rng.below(problem.hosts.len()) as u32;
            if s.host_of[i as usize] != h && s.fits(&t, i, 0, h) {
                s.move_item(&t, i, h);
            }
        }
        let kept = s.cost();
        let counted = s.clone().recount(&t);
        assert!((kept - counted).abs() < 1e-6, "kept {kept} counted {counted}");
        assert_eq!(s.unplaced().count(), 0);
        // No host over its capacity.
        for h in 0..problem.hosts.len() as u32 {
            assert!(s.load(h, 1)[0] <= 150.0, "host {h} {:?}", s.load(h, 1));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_packing() {
        let p = BinPacking { capacity: 150, weights: (0..200).map(|i| 20 + (i * 53) % 81).collect() };
        let problem = p.problem();
        let cfg = GeneticConfig { generations: 30, seed: 9, ..GeneticConfig::default() };
        let a = optimise(&problem, vec![], &cfg, &Sequential, &mut Generations);
        let b = optimise(&problem, vec![], &cfg, &Sequential, &mut Generations);
        assert_eq!(a.best.host_of, b.best.host_of);
        assert_eq!(a.progress, b.progress);
    }
}
