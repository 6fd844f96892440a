//! Does guided mutation pay? `cargo run --release -p presage-optimise --example guided --
//! [hosts] [vms] [seeds]` (default 40 hosts, 400 VMs, 5 seeds). On a generated cluster
//! (`presage_optimise::generated`), the hints a coordinator would give the optimiser are made
//! the way its other deciders make them: the sizing pass's resizes (each VM to the option
//! nearest its last day's peak x 1.25, as the pass sizes to p90 x margin) and the placement
//! policy's consolidation moves (the VMs of hosts under 30 % full, first fit into the fullest
//! hosts with room at those sizes). The genetic optimiser then runs as the coordinator's pass
//! does for clusters of up to 64 hosts (population 16, one thread), within a few time limits
//! (what the pass has), with guided mutation off (0) and on (0.25, 0.5); the table is the mean
//! objective over the seeds, and how many of the seeds' runs the guided ones beat.

use presage_decide::optimise::cluster::{self, SizingGoals};
use presage_decide::optimise::genetic::{GeneticConfig, Sequential, optimise};
use presage_decide::optimise::{Hint, Solution, Tables};
use presage_optimise::Deadline;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |k: usize, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let n_hosts: usize = arg(0, "40").parse()?;
    let n_vms: usize = arg(1, "400").parse()?;
    let seeds: u64 = arg(2, "5").parse()?;
    let budgets = [0.5f64, 2.0, 8.0];
    let shares = [0.0, 0.25, 0.5];
    // sums[budget][share], wins[budget][share] (against share 0 on the same seed).
    let mut sums = vec![vec![0.0; shares.len()]; budgets.len()];
    let mut wins = vec![vec![0usize; shares.len()]; budgets.len()];
    let mut secs = vec![vec![0.0; shares.len()]; budgets.len()];
    let mut start_sum = 0.0;
    for seed in 1..=seeds {
        let (hosts, vms) = presage_optimise::generated::cluster(n_hosts, n_vms, seed)?;
        let (mut problem, options) = cluster::problem(&hosts, &vms, &SizingGoals::default())?;
        let t = Tables::new(&problem);
        let current = Solution::current(&t);
        start_sum += current.objective(&t);
        // The sizing pass: the option nearest the last day's peak x 1.25 (relative distance).
        let mut sized = Solution::empty(&t);
        let mut hints = Vec::new();
        for (i, vm) in vms.iter().enumerate() {
            let want: Vec<f64> = vm.daily_peaks.last().map_or(vm.size.clone(), |p| p.iter().map(|x| x * 1.25).collect());
            let distance = |s: &[f64]| s.iter().zip(&want).map(|(a, b)| ((a - b) / b.max(1e-9)).abs()).sum::<f64>();
            let o = (0..options[i].sizes.len())
                .min_by(|a, b| distance(&options[i].sizes[*a]).total_cmp(&distance(&options[i].sizes[*b])))
                .unwrap_or(0);
            hints.push(Hint { item: i as u32, host: None, option: Some(o as u16) });
            sized.set_option(i as u32, o as u16);
        }
        // The policy: at those sizes where they fit, drain the hosts under 30 % full into the fullest.
        for i in 0..n_vms as u32 {
            let h = current.host_of[i as usize];
            if !sized.fits(&t, i, sized.option_of[i as usize], h) {
                sized.set_option(i, current.option_of[i as usize]);
            }
            if sized.fits(&t, i, sized.option_of[i as usize], h) {
                sized.place(&t, i, h);
            }
        }
        let fill = |s: &Solution, h: u32| {
            let l = s.load(h, 2);
            let c = &problem.hosts[h as usize].capacity;
            (l[0] / c[0] + l[1] / c[1]) / 2.0
        };
        let mut by_fill: Vec<u32> = (0..n_hosts as u32).filter(|h| !sized.members(*h).is_empty()).collect();
        by_fill.sort_by(|a, b| fill(&sized, *b).total_cmp(&fill(&sized, *a)));
        let drained: Vec<u32> = by_fill.iter().rev().copied().filter(|h| fill(&sized, *h) < 0.3).collect();
        for h in drained {
            for i in sized.members(h).to_vec() {
                let o = sized.option_of[i as usize];
                let to = by_fill.iter().copied().find(|g| *g != h && fill(&sized, *g) >= 0.3 && sized.fits(&t, i, o, *g));
                if let Some(g) = to {
                    sized.move_item(&t, i, g);
                    hints.push(Hint { item: i, host: Some(g), option: Some(o) });
                }
            }
        }
        problem.hints = hints;
        for (b, &limit) in budgets.iter().enumerate() {
            let mut plain = 0.0;
            for (k, &guided) in shares.iter().enumerate() {
                let cfg = GeneticConfig { population: 16, generations: usize::MAX, guided, seed, ..GeneticConfig::default() };
                let mut deadline = Deadline::after(std::time::Duration::from_secs_f64(limit));
                let out = optimise(&problem, vec![current.clone()], &cfg, &Sequential, &mut deadline);
                secs[b][k] += out.generations as f64;
                let objective = out.best.objective(&Tables::new(&problem));
                sums[b][k] += objective;
                if k == 0 {
                    plain = objective;
                } else if objective < plain - 1e-6 {
                    wins[b][k] += 1;
                }
            }
        }
        eprintln!("seed {seed} done");
    }
    let n = seeds as f64;
    println!("{n_hosts} hosts, {n_vms} VMs, {seeds} seeds; current placement: mean objective {:.1}", start_sum / n);
    println!("{:>12} {:>8} {:>14} {:>10} {:>12}", "time limit", "guided", "mean objective", "vs off", "beats off");
    for (b, limit) in budgets.iter().enumerate() {
        for (k, share) in shares.iter().enumerate() {
            let mean = sums[b][k] / n;
            let off = sums[b][0] / n;
            println!(
                "{:>11}s {share:>8.2} {mean:>14.1} {:>9.2}% {:>8}/{seeds}   ({:.0} generations a run)",
                limit,
                (mean - off) / off * 100.0,
                if k == 0 { "-".to_string() } else { wins[b][k].to_string() },
                secs[b][k] / n
            );
        }
    }
    Ok(())
}
