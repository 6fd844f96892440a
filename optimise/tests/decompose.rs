//! Large problems by decomposition: never worse than where they start, every host within its
//! capacity, fewer hosts where the start wastes them, and the same result on one thread or two.

mod common;

use presage_decide::optimise::decompose::{DecomposeConfig, optimise_decomposed};
use presage_decide::optimise::genetic::Generations;
use presage_decide::optimise::{Solution, Tables};
use presage_optimise::joint::JointSpec;
use presage_optimise::{RayonChildren, pool};

#[test]
fn a_decomposed_run_is_never_worse_keeps_capacity_and_is_the_same_on_one_thread_or_two() {
    // 300 VMs placed at their largest sizes on 48 hosts (an odd seed: placed already).
    let problem = JointSpec { vms: 300, hosts: 48, seed: 21 }.generate();
    let t = Tables::new(&problem);
    let start = Solution::current(&t);
    assert_eq!(start.unplaced().count(), 0);
    let cfg = DecomposeConfig { rounds: 2, ..DecomposeConfig::default() };
    let run = |threads: usize| {
        let pool = pool(threads).unwrap();
        optimise_decomposed(&problem, start.clone(), &cfg, &RayonChildren::new(&pool), &mut Generations)
    };
    let (one, two) = (run(1), run(2));
    assert_eq!((&one.best.host_of, &one.best.option_of), (&two.best.host_of, &two.best.option_of));
    let before = common::checked_objective(&problem, &start);
    let after = common::checked_objective(&problem, &one.best);
    assert!((after - one.best.objective(&t)).abs() < 1e-6, "the run's own cost is its solution's");
    assert!(after < before, "{after} not below the start's {before}");
    assert!(one.best.active_hosts() < start.active_hosts(), "{} hosts, started on {}", one.best.active_hosts(), start.active_hosts());
    assert!(one.progress.windows(2).all(|w| w[1] <= w[0] + 1e-9), "{:?}", one.progress);
}
