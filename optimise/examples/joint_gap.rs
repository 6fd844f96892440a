//! The genetic optimiser's gap to the exact optimum (CBC) on seeded joint sizing-and-placement
//! instances (`presage_optimise::joint`): `cargo run --release -p presage-optimise --example
//! joint_gap -- [instances] [seed] [seconds per run] [threads] [exact limit s]`. Prints one line per instance
//! and the median and worst gap, and the optimiser's median and worst time. `[exact limit s]`
//! (default 300): instances CBC does not prove optimal within it are counted apart.

use std::time::{Duration, Instant};

use presage_decide::optimise::Solution;
use presage_decide::optimise::Tables;
use presage_decide::optimise::genetic::{GeneticConfig, first_fit_decreasing, optimise};
use presage_optimise::joint::JointSpec;
use presage_optimise::{Deadline, RayonChildren, exact, pool};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: usize, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let n: u64 = arg(0, "50").parse()?;
    let seed: u64 = arg(1, "1").parse()?;
    let limit = Duration::from_secs_f64(arg(2, "2").parse()?);
    let threads: usize = arg(3, "2").parse()?;
    let exact_limit = Duration::from_secs_f64(arg(4, "300").parse()?);
    let mut unproven = 0;
    let pool = pool(threads)?;
    let (mut gaps, mut times) = (Vec::new(), Vec::new());
    for k in 0..n {
        let spec = JointSpec::series(seed, k);
        let problem = spec.generate();
        let started = Instant::now();
        let best = match exact::solve(&problem, exact_limit) {
            Ok(b) => b,
            Err(exact::ExactError::NotProven(_)) => {
                println!("{k:2} vms {:2} hosts {}: CBC proved no optimum within {exact_limit:?}", spec.vms, spec.hosts);
                unproven += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let exact_s = started.elapsed().as_secs_f64();
        let t = Tables::new(&problem);
        let cfg = GeneticConfig { generations: usize::MAX, seed: 1, ..GeneticConfig::default() };
        let started = Instant::now();
        let mut seeds = vec![first_fit_decreasing(&t)];
        if problem.items.iter().all(|i| i.current.is_some()) {
            seeds.push(Solution::current(&t));
        }
        let out = optimise(&problem, seeds, &cfg, &RayonChildren::new(&pool), &mut Deadline::after(limit));
        let ga_s = started.elapsed().as_secs_f64();
        let got = out.best.objective(&t);
        if std::env::var_os("JOINT_DEBUG").is_some() {
            let cur = Solution::current(&t);
            let ffd = first_fit_decreasing(&t);
            println!(
                "   current {:.2} ({} hosts, {} unplaced) ffd {:.2} ({} hosts) best {} hosts; exact hosts {:?}",
                cur.objective(&t),
                cur.active_hosts(),
                cur.unplaced().count(),
                ffd.objective(&t),
                ffd.active_hosts(),
                out.best.active_hosts(),
                {
                    let mut h: Vec<u32> = best.assignment.iter().map(|a| a.0).collect();
                    h.sort();
                    h.dedup();
                    h
                }
            );
            let moved = |a: &dyn Fn(usize) -> u32| {
                problem.items.iter().enumerate().filter(|(i, it)| it.current.is_some_and(|(h, _)| h != a(*i))).count()
            };
            let sla =
                |o: &dyn Fn(usize) -> u16| problem.items.iter().enumerate().map(|(i, it)| it.options[o(i) as usize].cost).sum::<f64>();
            let mv = |a: &dyn Fn(usize) -> u32| {
                problem
                    .items
                    .iter()
                    .enumerate()
                    .filter(|(i, it)| it.current.is_some_and(|(h, _)| h != a(*i)))
                    .map(|(_, it)| it.move_cost)
                    .sum::<f64>()
            };
            println!(
                "   exact: moved {} ({:.2}) sla {:.2}; genetic: moved {} ({:.2}) sla {:.2}",
                moved(&|i| best.assignment[i].0),
                mv(&|i| best.assignment[i].0),
                sla(&|i| best.assignment[i].1),
                moved(&|i| out.best.host_of[i]),
                mv(&|i| out.best.host_of[i]),
                sla(&|i| out.best.option_of[i])
            );
            let mut eh: Vec<u32> = best.assignment.iter().map(|a| a.0).collect();
            eh.sort();
            eh.dedup();
            let mut gh: Vec<u32> = out.best.host_of.clone();
            gh.sort();
            gh.dedup();
            println!("   hosts exact {:?} genetic {:?}", eh, gh);
            println!("   progress {:?}", out.progress.iter().step_by(5).map(|c| *c as i64).collect::<Vec<_>>());
        }
        let gap = (got - best.objective) / best.objective * 100.0;
        println!(
            "{k:2} vms {:2} hosts {} placed {:5}  exact {:9.2} ({:5.2} s)  genetic {:9.2} ({:4.2} s, {} gens)  gap {:5.2} %",
            spec.vms,
            spec.hosts,
            spec.seed % 2 == 1,
            best.objective,
            exact_s,
            got,
            ga_s,
            out.generations,
            gap
        );
        gaps.push(gap);
        times.push(ga_s);
    }
    gaps.sort_by(f64::total_cmp);
    times.sort_by(f64::total_cmp);
    println!(
        "{} instances with a proven optimum ({unproven} without): median gap {:.2} %, worst {:.2} %; optimiser median {:.2} s, worst {:.2} s",
        gaps.len(),
        gaps[gaps.len() / 2],
        gaps[gaps.len() - 1],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}
