//! `presagectl optimise`: the genetic optimiser of the decision core, one-off. With
//! `--binpacking FILE|DIR` it packs BPPLIB instances and reports, per instance, the bins it
//! used against the L2 lower bound (the optimum on almost all of them) and first-fit / best-fit
//! decreasing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presage_decide::optimise::Tables;
use presage_decide::optimise::genetic::{GeneticConfig, first_fit_decreasing, optimise};
use presage_optimise::{Deadline, RayonChildren, bpplib};
use serde::Serialize;

use crate::OutputFormat;

#[derive(clap::Args, Debug)]
pub struct OptimiseArgs {
    /// A BPPLIB bin-packing instance file, or a folder of them (searched recursively).
    #[arg(long, value_name = "FILE|DIR")]
    pub binpacking: Option<PathBuf>,
    /// Wall-clock limit per instance.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub time_limit: Duration,
    /// The most generations per instance.
    #[arg(long, default_value_t = 1_000_000)]
    pub generations: usize,
    #[arg(long, default_value_t = 32)]
    pub population: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Threads making each generation's children (0: one per core). The result of a seed does
    /// not depend on it when the run ends by generations, not by time.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// One instance's result.
#[derive(Clone, Debug, Serialize)]
pub struct BinPackingResult {
    pub instance: String,
    pub items: usize,
    pub capacity: u64,
    pub bins: usize,
    pub l2_bound: u64,
    pub ffd_bins: usize,
    pub bfd_bins: usize,
    pub optimal: bool,
    pub generations: usize,
    pub seconds: f64,
}

pub fn run(args: OptimiseArgs, output: OutputFormat) -> anyhow::Result<()> {
    let Some(path) = &args.binpacking else {
        bail!("say what to optimise: --binpacking FILE|DIR (the cluster's own placement and ROADEF instances come later)");
    };
    if args.population < 2 {
        bail!("--population {} is too small (at least 2)", args.population);
    }
    let files = bpplib::instance_files(path)?;
    let pool = presage_optimise::pool(args.threads).context("starting the optimiser's threads")?;
    let mut results = Vec::new();
    for f in &files {
        let r = pack(&args, f, &pool)?;
        if output == OutputFormat::Table {
            println!(
                "{:<28} n={:<5} bins {:>4}  L2 {:>4}  FFD {:>4}  BFD {:>4}  {}  {:>6.2} s  {} generations",
                r.instance,
                r.items,
                r.bins,
                r.l2_bound,
                r.ffd_bins,
                r.bfd_bins,
                if r.optimal { "optimal" } else { "above L2" },
                r.seconds,
                r.generations
            );
        }
        results.push(r);
    }
    match output {
        OutputFormat::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "instances": results, "summary": summary(&results) }))?)
        }
        OutputFormat::Table => {
            let s = summary(&results);
            println!(
                "{} instances: {} at the L2 bound ({:.1} %); bins over L2 {:+.2} % (FFD {:+.2} %, BFD {:+.2} %); FFD's excess closed {:.1} %; mean {:.2} s, worst {:.2} s",
                s.instances,
                s.optimal,
                s.optimal_pct,
                s.excess_pct,
                s.ffd_excess_pct,
                s.bfd_excess_pct,
                s.ffd_excess_closed_pct,
                s.mean_seconds,
                s.max_seconds
            );
        }
        OutputFormat::Csv | OutputFormat::Dot => bail!("optimise prints a table or JSON (-o table|json)"),
    }
    Ok(())
}

fn pack(args: &OptimiseArgs, file: &std::path::Path, pool: &rayon::ThreadPool) -> anyhow::Result<BinPackingResult> {
    let instance = bpplib::read(file)?;
    let problem = instance.problem();
    let started = Instant::now();
    let t = Tables::new(&problem);
    let ffd = first_fit_decreasing(&t);
    let cfg = GeneticConfig { population: args.population, generations: args.generations, seed: args.seed, ..GeneticConfig::default() };
    let out = optimise(&problem, vec![ffd], &cfg, &RayonChildren::new(pool), &mut Deadline::after(args.time_limit));
    let seconds = started.elapsed().as_secs_f64();
    if out.best.unplaced().next().is_some() {
        bail!("{}: the optimiser left items unplaced (a bug: first-fit decreasing places all)", file.display());
    }
    let l2 = instance.l2_bound();
    Ok(BinPackingResult {
        instance: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        items: instance.weights.len(),
        capacity: instance.capacity,
        bins: out.best.active_hosts(),
        l2_bound: l2,
        ffd_bins: instance.first_fit_decreasing(),
        bfd_bins: instance.best_fit_decreasing(),
        optimal: out.best.active_hosts() as u64 <= l2,
        generations: out.generations,
        seconds,
    })
}

#[derive(Debug, Serialize)]
pub struct BinPackingSummary {
    pub instances: usize,
    pub optimal: usize,
    pub optimal_pct: f64,
    /// Mean over instances of (bins - L2) / L2, percent.
    pub excess_pct: f64,
    pub ffd_excess_pct: f64,
    pub bfd_excess_pct: f64,
    /// Share of FFD's bins above L2 (summed over instances) the optimiser removed, percent.
    pub ffd_excess_closed_pct: f64,
    pub mean_seconds: f64,
    pub max_seconds: f64,
}

pub fn summary(r: &[BinPackingResult]) -> BinPackingSummary {
    let n = r.len().max(1) as f64;
    let excess = |bins: usize, l2: u64| (bins as f64 - l2 as f64) / l2.max(1) as f64 * 100.0;
    let ffd_over: u64 = r.iter().map(|x| (x.ffd_bins as u64).saturating_sub(x.l2_bound)).sum();
    let ours_over: u64 = r.iter().map(|x| (x.bins as u64).saturating_sub(x.l2_bound)).sum();
    let optimal = r.iter().filter(|x| x.optimal).count();
    BinPackingSummary {
        instances: r.len(),
        optimal,
        optimal_pct: optimal as f64 / n * 100.0,
        excess_pct: r.iter().map(|x| excess(x.bins, x.l2_bound)).sum::<f64>() / n,
        ffd_excess_pct: r.iter().map(|x| excess(x.ffd_bins, x.l2_bound)).sum::<f64>() / n,
        bfd_excess_pct: r.iter().map(|x| excess(x.bfd_bins, x.l2_bound)).sum::<f64>() / n,
        ffd_excess_closed_pct: if ffd_over == 0 { 100.0 } else { (ffd_over - ours_over.min(ffd_over)) as f64 / ffd_over as f64 * 100.0 },
        mean_seconds: r.iter().map(|x| x.seconds).sum::<f64>() / n,
        max_seconds: r.iter().map(|x| x.seconds).fold(0.0, f64::max),
    }
}
