//! The optimiser on a large generated cluster: `cargo run --release -p presage-optimise
//! --example scale -- [hosts] [vms] [seconds] [threads] [seed] [rounds]` (default 10,000 hosts,
//! 100,000 VMs, 60 s, 2 threads). The cluster runs at its requested sizes, placed by first fit
//! over the hosts in a random order; each VM has two weeks of log-normal daily peaks (a third
//! of them growing). Prints the objective of the current placement, of first-fit and best-fit
//! decreasing at the current sizes, and of the optimiser (decomposition into partitions, each a
//! genetic run, within the time limit), with active hosts, SLA risk and moves; and the peak
//! memory of the process.

use std::time::{Duration, Instant};

use presage_decide::optimise::cluster::{self, SizingGoals};
use presage_decide::optimise::decompose::{DecomposeConfig, optimise_decomposed};
use presage_decide::optimise::{Solution, Tables, search};
use presage_optimise::{Deadline, RayonChildren, pool};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: usize, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let n_hosts: usize = arg(0, "10000").parse()?;
    let n_vms: usize = arg(1, "100000").parse()?;
    let limit = Duration::from_secs_f64(arg(2, "60").parse()?);
    let threads: usize = arg(3, "2").parse()?;
    let seed: u64 = arg(4, "1").parse()?;
    let started = Instant::now();
    let (hosts, vms) = presage_optimise::generated::cluster(n_hosts, n_vms, seed)?;
    let fixed = presage_optimise::generated::requested_sizes(&hosts, &vms);
    let ft = Tables::new(&fixed);
    let generated = started.elapsed();
    let mut all: Vec<u32> = (0..n_vms as u32).collect();
    let t0 = Instant::now();
    let mut ffd = Solution::empty(&ft);
    search::first_fit_decreasing(&ft, &mut ffd, &mut all.clone());
    let ffd_s = t0.elapsed();
    let t0 = Instant::now();
    let mut bfd = Solution::empty(&ft);
    search::best_fit_decreasing(&ft, &mut bfd, &mut all);
    let bfd_s = t0.elapsed();

    let goals = SizingGoals { headroom_sigmas: vec![3.0, 1.5], ..SizingGoals::default() };
    let t0 = Instant::now();
    let (problem, _) = cluster::problem(&hosts, &vms, &goals)?;
    let t = Tables::new(&problem);
    let start = Solution::current(&t);
    let built = t0.elapsed();
    let pool = pool(threads)?;
    // `[rounds]` (6th argument): a fixed number of rounds (and no time limit), to compare
    // thread counts on the same work; the result is then the same on any number of threads.
    let rounds: usize = arg(5, "0").parse()?;
    let cfg = DecomposeConfig { rounds: if rounds == 0 { usize::MAX } else { rounds }, ..DecomposeConfig::default() };
    let t0 = Instant::now();
    let out = if rounds == 0 {
        optimise_decomposed(&problem, start.clone(), &cfg, &RayonChildren::new(&pool), &mut Deadline::after(limit.saturating_sub(built)))
    } else {
        optimise_decomposed(&problem, start.clone(), &cfg, &RayonChildren::new(&pool), &mut presage_decide::optimise::genetic::Generations)
    };
    let optimised = t0.elapsed();

    // Every placement judged by the sized problem's goals (FFD and BFD at the current sizes).
    let judge = |s: &Solution| -> Solution {
        let mut j = Solution::empty(&t);
        for i in 0..n_vms as u32 {
            j.set_option(i, s.option_of[i as usize]);
            j.place(&t, i, s.host_of[i as usize]);
        }
        j
    };
    let report = |name: &str, s: &Solution, took: Duration| {
        let moves = (0..n_vms).filter(|i| problem.items[*i].current.is_some_and(|(h, _)| h != s.host_of[*i])).count();
        let risk: f64 = (0..n_vms).map(|i| problem.items[i].options[s.option_of[i] as usize].cost).sum();
        println!(
            "{name:>10}: objective {:>12.0}  active hosts {:>6}  SLA risk cost {:>9.1}  moves {:>6}  ({:.1} s)",
            s.objective(&t),
            s.active_hosts(),
            risk,
            moves,
            took.as_secs_f64()
        );
    };
    println!(
        "{n_hosts} hosts, {n_vms} VMs, {threads} threads (generated in {:.1} s, problem built in {:.1} s)",
        generated.as_secs_f64(),
        built.as_secs_f64()
    );
    report("current", &start, Duration::ZERO);
    report("FFD", &judge(&ffd), ffd_s);
    report("BFD", &judge(&bfd), bfd_s);
    report("optimiser", &out.best, optimised);
    println!("optimiser: {} rounds, objective per round {:?}", out.rounds, out.progress.iter().map(|c| *c as i64).collect::<Vec<_>>());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(hwm) = status.lines().find(|l| l.starts_with("VmHWM")) {
        println!("peak memory: {}", hwm.trim_start_matches("VmHWM:").trim());
    }
    Ok(())
}
