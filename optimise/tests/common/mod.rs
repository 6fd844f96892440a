//! What the optimiser's tests share: where the public instances are.

#![allow(dead_code, clippy::needless_range_loop)]

use std::path::PathBuf;

use presage_decide::optimise::{NOWHERE, Problem, Solution};

/// `$PRESAGE_SHARED_DATA/<set>` (default `../shared/data/<set>` beside the repository); panics
/// naming where it looked when `marker` is not there.
pub fn shared_set(set: &str, marker: &str) -> PathBuf {
    let root = std::env::var_os("PRESAGE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    let dir = root.join(set);
    assert!(dir.join(marker).exists(), "the {set} instances are not at {} (set PRESAGE_SHARED_DATA)", dir.display());
    dir
}

/// The objective of `s` counted here from the problem alone, after checking that every item is
/// placed within every host's capacity and no two of a group share a host.
pub fn checked_objective(p: &Problem, s: &Solution) -> f64 {
    let mut load = vec![vec![0.0; p.dims]; p.hosts.len()];
    let mut cost = 0.0;
    for (i, item) in p.items.iter().enumerate() {
        let (h, o) = (s.host_of[i], s.option_of[i]);
        assert_ne!(h, NOWHERE, "item {i} unplaced");
        let opt = &item.options[o as usize];
        for (k, d) in opt.demand.iter().enumerate() {
            load[h as usize][k] += d;
        }
        cost += opt.cost + if item.current.is_some_and(|(c, _)| c != h) { item.move_cost } else { 0.0 };
    }
    for (h, host) in p.hosts.iter().enumerate() {
        for k in 0..p.dims {
            assert!(load[h][k] <= host.capacity[k] + 1e-6, "host {h} dimension {k}: {} > {}", load[h][k], host.capacity[k]);
        }
        if load[h].iter().any(|l| *l > 0.0) {
            cost += host.active_cost;
        }
    }
    for g in &p.anti_affinity {
        let mut hosts: Vec<u32> = g.iter().map(|i| s.host_of[*i as usize]).collect();
        hosts.sort_unstable();
        hosts.dedup();
        assert_eq!(hosts.len(), g.len(), "anti-affinity group {g:?} shares a host");
    }
    cost
}
