//! The ROADEF/EURO 2012 instances a1_1..a1_5 (from `../shared/data/roadef`, or
//! `$PRESAGE_SHARED_DATA/roadef`): the judge agrees with the challenge's own cost of every
//! initial assignment; the local search's kept terms agree with the judge after thousands of
//! random moves; a short run improves an instance and stays feasible.

mod common;

use std::path::PathBuf;

use presage_decide::optimise::Rng;
use presage_decide::optimise::genetic::{Generations, Sequential};
use presage_decide::optimise::roadef::{Roadef, RoadefConfig, Search, optimise};

fn roadef_data() -> PathBuf {
    common::shared_set("roadef", "model_a1_1.txt")
}

fn instance(n: u32) -> (Roadef, Vec<u32>, i64) {
    let dir = roadef_data();
    let read = |f: String| std::fs::read_to_string(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let model = Roadef::parse(&read(format!("model_a1_{n}.txt"))).unwrap();
    let initial = model.parse_assignment(&read(format!("assignment_a1_{n}.txt"))).unwrap();
    let original: i64 = read(format!("original_cost_a1_{n}.txt")).trim().parse().unwrap();
    (model, initial, original)
}

#[test]
fn the_judge_counts_every_initial_assignment_as_the_challenge_did() {
    for n in 1..=5 {
        let (model, initial, original) = instance(n);
        let t = model.evaluate(&initial, &initial).unwrap_or_else(|v| panic!("a1_{n}'s initial assignment is infeasible: {v:?}"));
        assert_eq!(t.total, original, "a1_{n}: {t:?}");
        assert_eq!((t.process_moves, t.service_moves, t.machine_moves), (0, 0, 0));
        let kept = Search::new(&model, &initial, initial.clone());
        assert!(kept.feasible());
        assert_eq!(kept.terms(), t, "a1_{n}: the search's own count");
    }
}

#[test]
fn the_kept_terms_follow_every_move_and_agree_with_the_judge() {
    for n in [1, 2, 4] {
        let (model, initial, _) = instance(n);
        let mut st = Search::new(&model, &initial, initial.clone());
        let mut rng = Rng::new(n as u64);
        let (np, nm) = (model.processes.len(), model.machines.len());
        let mut feasible_seen = 0;
        for k in 0..5000 {
            let p = rng.below(np);
            st.shift(p, rng.below(nm) as u32);
            if k % 7 == 0 {
                // Back home now and then, so moves cancel and transient holds come back.
                st.shift(p, initial[p]);
            }
            match model.evaluate(&initial, &st.assignment) {
                Ok(t) => {
                    assert!(st.feasible(), "a1_{n} move {k}: the judge finds it feasible, the search does not");
                    assert_eq!(st.terms(), t, "a1_{n} move {k}");
                    feasible_seen += 1;
                }
                Err(v) => assert!(!st.feasible(), "a1_{n} move {k}: the search missed {v:?}"),
            }
            if k % 500 == 0 {
                // The machines' process lists (which the ejection move draws from) agree with
                // the assignment: every process listed once, on its machine.
                let mut listed = vec![0; np];
                for m in 0..nm as u32 {
                    for &q in st.hosted(m) {
                        assert_eq!(st.assignment[q as usize], m, "a1_{n} move {k}: process {q} listed on {m}");
                        listed[q as usize] += 1;
                    }
                }
                assert!(listed.iter().all(|c| *c == 1), "a1_{n} move {k}: a process listed twice or not at all");
            }
        }
        // Walk back to the initial assignment: every kept term returns to the start.
        for (p, home) in initial.iter().enumerate() {
            st.shift(p, *home);
        }
        assert_eq!(st.terms(), model.evaluate(&initial, &initial).unwrap(), "a1_{n} after the walk back");
        assert!(feasible_seen > 0, "a1_{n}: no feasible state was compared");
    }
}

#[test]
fn a_short_run_improves_a1_1_and_stays_feasible() {
    let (model, initial, original) = instance(1);
    let cfg = RoadefConfig { population: 2, epoch_moves: 200_000, epochs: 3, seed: 5, ..RoadefConfig::default() };
    let out = optimise(&model, &initial, &cfg, &Sequential, &mut Generations).unwrap();
    let judged = model.evaluate(&initial, &out.assignment).expect("feasible");
    assert_eq!(judged, out.terms);
    // The best known (and proven optimal) cost is 44,306,501; the initial 49,528,750.
    assert!(out.terms.total < original, "{:?}", out.terms);
    assert!(out.terms.total >= 44_306_501, "below the proven optimum: the judge is wrong: {:?}", out.terms);
    let again = optimise(&model, &initial, &cfg, &Sequential, &mut Generations).unwrap();
    assert_eq!(again.assignment, out.assignment, "the same seed, the same result");
}

#[test]
fn bad_models_and_assignments_are_named() {
    let e = Roadef::parse("2 0 10").unwrap_err().to_string();
    assert!(e.contains("ends before resource 1's transient flag"), "{e}");
    let e = Roadef::parse("1 2 10").unwrap_err().to_string();
    assert!(e.contains("resource 0's transient flag is 2"), "{e}");
    let e = Roadef::parse("1 0 x").unwrap_err().to_string();
    assert!(e.contains("number 3") && e.contains("\"x\""), "{e}");
    let (model, _, _) = instance(1);
    let e = model.parse_assignment("0 1 2").unwrap_err().to_string();
    assert!(e.contains("3 machines for 100 processes"), "{e}");
    let e = model.parse_assignment(&"9 ".repeat(100)).unwrap_err().to_string();
    assert!(e.contains("process 0's machine \"9\""), "{e}");
}
