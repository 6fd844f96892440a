//! Seeded joint sizing-and-placement instances small enough for an exact solver (the
//! optimiser's gap to a proven optimum, where the benchmarks with known answers place only).
//!
//! Each instance is a cluster of a few heterogeneous hosts (cores and GiB; an active host
//! costs its idle power, 100 W plus 3 W a core) and a few dozen VMs, each with a forecast
//! demand and three or four sizes around it: 1.5x the forecast (no risk), 1.25x, 1.0x and, for
//! some, 0.85x, each smaller size costing more forecast SLA risk (weighted by how much the VM
//! matters, in the same units as the power). On odd seeds the VMs are already placed (at
//! their largest size, by first fit in a random order) and moving one costs 2 to 10: the
//! optimiser re-plans a running cluster rather than an empty one. A few VMs form
//! anti-affinity pairs (replicas).

use presage_decide::optimise::{Host, Item, Problem, Rng, SizeOption, Solution, Tables, search};

/// The sizes offered, as multiples of the forecast, and the SLA risk of each per forecast core
/// (before the VM's weight).
const SIZES: [(f64, f64); 4] = [(1.5, 0.0), (1.25, 1.5), (1.0, 5.0), (0.85, 14.0)];

#[derive(Clone, Copy, Debug)]
pub struct JointSpec {
    pub vms: usize,
    pub hosts: usize,
    pub seed: u64,
}

impl JointSpec {
    /// The spec of the `k`-th instance of a seeded series: 20 to 40 VMs, 4 to 8 hosts.
    pub fn series(seed: u64, k: u64) -> JointSpec {
        let mut rng = Rng::for_job(seed, 0x101A7, k);
        JointSpec { vms: 20 + rng.below(21), hosts: 4 + rng.below(5), seed: seed.wrapping_mul(1000).wrapping_add(k) }
    }

    pub fn generate(&self) -> Problem {
        let mut rng = Rng::new(self.seed);
        let kinds = [(16.0, 64.0), (24.0, 96.0), (32.0, 128.0)];
        let hosts: Vec<Host> = (0..self.hosts)
            .map(|_| {
                let (cores, gib) = kinds[rng.below(kinds.len())];
                Host { capacity: vec![cores, gib], active_cost: 100.0 + 3.0 * cores }
            })
            .collect();
        let capacity: f64 = hosts.iter().map(|h| h.capacity[0]).sum();
        // The VMs' largest sizes take up to ~85% of the cluster's cores.
        let mean_cores = 0.85 * capacity / (1.5 * self.vms as f64);
        let mut items: Vec<Item> = (0..self.vms)
            .map(|_| {
                let cores = (mean_cores * (0.25 + 1.5 * rng.unit())).max(0.25);
                let gib = cores * (2.0 + 3.0 * rng.unit());
                let weight = 0.5 + 1.5 * rng.unit();
                let n = 3 + rng.below(2);
                let options = SIZES[..n]
                    .iter()
                    .map(|(m, risk)| SizeOption {
                        demand: vec![round_to(cores * m, 0.25), round_to(gib * m, 0.5)],
                        cost: round_to(weight * risk * cores, 0.01),
                    })
                    .collect();
                Item { options, current: None, move_cost: round_to(2.0 + 8.0 * rng.unit(), 0.01) }
            })
            .collect();
        let pairs = self.vms / 10;
        let mut order: Vec<u32> = (0..self.vms as u32).collect();
        rng.shuffle(&mut order);
        let anti_affinity: Vec<Vec<u32>> = order.chunks(2).take(pairs).map(|c| c.to_vec()).collect();
        let mut problem = Problem {
            dims: 2,
            hosts,
            items: items.clone(),
            anti_affinity,
            packing_weight: 1.0,
            balance_weight: 0.0,
            lower_bound: None,
            hints: Vec::new(),
            pairs: Vec::new(),
            sites: Vec::new(),
        };
        if self.seed % 2 == 1 {
            // Placed already: largest sizes, first fit in a random order (on hosts in a random order).
            let t = Tables::new(&problem);
            let mut s = Solution::empty(&t);
            let mut host_order: Vec<u32> = (0..self.hosts as u32).collect();
            rng.shuffle(&mut host_order);
            rng.shuffle(&mut order);
            for &i in &order {
                if let Some(h) = host_order.iter().copied().find(|h| s.fits(&t, i, 0, *h)) {
                    s.place(&t, i, h);
                } else {
                    search::first_fit(&t, &mut s, i);
                }
            }
            for (i, item) in items.iter_mut().enumerate() {
                let h = s.host_of[i];
                if h != presage_decide::optimise::NOWHERE {
                    item.current = Some((h, s.option_of[i]));
                }
            }
            problem.items = items;
        }
        problem
    }
}

fn round_to(x: f64, step: f64) -> f64 {
    ((x / step).round() * step).max(step)
}
