//! The optimiser on real BPPLIB instances (from `../shared/data/binpacking`, or
//! `$PRESAGE_SHARED_DATA/binpacking`): optimal packings where the optimum is proven, never worse
//! than first-fit decreasing, and the same result for a seed on one thread or two.

mod common;

use std::path::PathBuf;

use presage_decide::optimise::Tables;
use presage_decide::optimise::binpacking::BinPacking;
use presage_decide::optimise::genetic::{Generations, GeneticConfig, GeneticOutcome, first_fit_decreasing, optimise};
use presage_optimise::{RayonChildren, bpplib, pool};

fn binpacking_data() -> PathBuf {
    common::shared_set("binpacking", "falkenauer-u")
}

fn instance(set: &str, name: &str) -> BinPacking {
    bpplib::read(&binpacking_data().join(set).join(name)).expect("a BPPLIB instance")
}

fn run(p: &BinPacking, generations: usize, seed: u64, threads: usize) -> GeneticOutcome {
    let problem = p.problem();
    let t = Tables::new(&problem);
    let pool = pool(threads).unwrap();
    let cfg = GeneticConfig { generations, seed, ..GeneticConfig::default() };
    optimise(&problem, vec![first_fit_decreasing(&t)], &cfg, &RayonChildren::new(&pool), &mut Generations)
}

#[test]
fn the_l2_bound_is_the_known_optimum_of_the_triplets() {
    // Falkenauer's triplets are built so that the optimum packs three items per bin.
    for name in ["Falkenauer_t60_00.txt", "Falkenauer_t120_05.txt", "Falkenauer_t249_10.txt", "Falkenauer_t501_19.txt"] {
        let p = instance("falkenauer-t", name);
        assert_eq!(p.l2_bound() as usize * 3, p.weights.len(), "{name}");
    }
}

#[test]
fn the_optimiser_packs_real_instances_at_their_optimum_and_never_worse_than_ffd() {
    let cases = [
        ("falkenauer-u", "Falkenauer_u120_00.txt"),
        ("falkenauer-u", "Falkenauer_u250_03.txt"),
        ("falkenauer-u", "Falkenauer_u500_07.txt"),
        ("falkenauer-t", "Falkenauer_t60_00.txt"),
        ("falkenauer-t", "Falkenauer_t120_01.txt"),
        ("scholl-1", "N2C1W2_A.txt"),
    ];
    let mut optimal = 0;
    for (set, name) in cases {
        let p = instance(set, name);
        let out = run(&p, 3000, 1, 0);
        let bins = out.best.active_hosts();
        assert_eq!(out.best.unplaced().count(), 0, "{name}: every item placed");
        assert!(bins <= p.first_fit_decreasing(), "{name}: {bins} bins, FFD {}", p.first_fit_decreasing());
        assert!(bins as u64 >= p.l2_bound(), "{name}: below a lower bound ({bins} < {}): the packing is wrong", p.l2_bound());
        // Every bin within its capacity, every item once.
        let mut seen = vec![0; p.weights.len()];
        for h in 0..p.problem().hosts.len() as u32 {
            let load: u64 = out.best.members(h).iter().map(|i| p.weights[*i as usize]).sum();
            assert!(load <= p.capacity, "{name}: bin {h} holds {load} > {}", p.capacity);
            for i in out.best.members(h) {
                seen[*i as usize] += 1;
            }
        }
        assert!(seen.iter().all(|n| *n == 1), "{name}: an item is packed twice or not at all");
        optimal += usize::from(out.reached_lower_bound);
        eprintln!("{name}: {bins} bins (L2 {}, FFD {}) after {} generations", p.l2_bound(), p.first_fit_decreasing(), out.generations);
    }
    assert!(optimal >= 5, "{optimal} of 6 at the proven optimum");
}

#[test]
fn a_seed_gives_the_same_packing_on_one_thread_or_two() {
    let p = instance("falkenauer-t", "Falkenauer_t120_03.txt");
    let one = run(&p, 40, 7, 1);
    let two = run(&p, 40, 7, 2);
    assert_eq!(one.progress, two.progress);
    assert_eq!(one.best.host_of, two.best.host_of);
}
