//! `presagectl anomaly-eval`: the agents' anomaly detector over a corpus in the Numenta Anomaly
//! Benchmark's layout, scored by NAB's rules (`presage_traces::nab`).
//!
//! It writes, per file, `OUT/<category>/presage_<file>.csv` (`timestamp,value,anomaly_score,label`,
//! NAB's results format) and `OUT/thresholds.json` (one threshold per profile), and prints the
//! NAB scores. Thresholds are tuned on the corpus given (the best over every distinct score),
//! unless `--thresholds` gives them (a corpus the detector is judged on, never tuned on).
//! `--results DIR` scores another detector's results instead (NAB's layout,
//! `DIR/<category>/<detector>_<file>[.gz]`), e.g. the published ones, with their thresholds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use presage_forecast::anomaly::{AnomalyConfig, score_series};
use presage_traces::nab::{self, PROFILES, Profile, Series, Sweep};
use rayon::prelude::*;

use super::view::OutputFormat;

#[derive(Args, Clone, Debug)]
pub struct AnomalyEvalArgs {
    /// The corpus: `DIR/<category>/<file>.csv`, each `timestamp,value`.
    #[arg(long)]
    pub data: PathBuf,
    /// NAB's `combined_windows.json`: each file's anomaly windows.
    #[arg(long)]
    pub labels: PathBuf,
    /// Where the per-file results and `thresholds.json` go (not with `--results`).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Thresholds to score with (`{"standard": t, "reward_low_FP_rate": t,
    /// "reward_low_FN_rate": t}`) instead of tuning them on this corpus.
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Score another detector's results (NAB's results layout) instead of running presage's.
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// The scores of one profile over the corpus.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProfileScore {
    pub profile: &'static str,
    pub threshold: f64,
    /// Whether the threshold was tuned on this corpus.
    pub tuned: bool,
    pub score: f64,
    pub windows: usize,
    pub detected: usize,
    pub missed: usize,
    pub false_positives: usize,
    /// Per category, the normalised score at the same threshold.
    pub by_category: BTreeMap<String, f64>,
}

fn read_thresholds(path: &Path) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: BTreeMap<String, f64> =
        serde_json::from_str(&text).with_context(|| format!("{} is not a JSON object of numbers", path.display()))?;
    for p in PROFILES {
        match t.get(p.name) {
            Some(v) if v.is_finite() => {}
            Some(v) => bail!("{}: {} is {v}, not a number", path.display(), p.name),
            None => bail!("{}: no threshold for the {} profile", path.display(), p.name),
        }
    }
    Ok(t)
}

/// Where a detector's results for `key` (`<category>/<file>.csv`) are in `dir`.
fn results_file(dir: &Path, key: &str) -> anyhow::Result<PathBuf> {
    let (category, file) = key.split_once('/').context("a corpus key is <category>/<file>")?;
    let folder = dir.join(category);
    let entries = std::fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((_, rest)) = name.split_once('_')
            && (rest == file || rest.strip_suffix(".gz") == Some(file))
        {
            return Ok(e.path());
        }
    }
    bail!("no results for {key} in {} (expected <detector>_{file}[.gz])", folder.display())
}

/// Scores the corpus and writes what the layout asks for.
pub fn evaluate(args: &AnomalyEvalArgs) -> anyhow::Result<Vec<ProfileScore>> {
    let corpus = nab::corpus(&args.data).with_context(|| format!("reading the corpus in {}", args.data.display()))?;
    if corpus.is_empty() {
        bail!("{} holds no <category>/<file>.csv series", args.data.display());
    }
    let windows = nab::read_windows(&args.labels).with_context(|| format!("reading the labels {}", args.labels.display()))?;
    let no_windows = Vec::new();
    let scores: Vec<Vec<f64>> = match &args.results {
        Some(dir) => corpus.iter().map(|s| Ok(nab::read_scores(&results_file(dir, &s.key)?, s)?)).collect::<anyhow::Result<_>>()?,
        None => corpus.par_iter().map(|s| score_series(&s.values, AnomalyConfig::default())).collect(),
    };
    let given = args.thresholds.as_deref().map(read_thresholds).transpose()?;
    let mut out = Vec::new();
    let mut chosen = BTreeMap::new();
    for profile in PROFILES {
        let sweeps: Vec<Sweep> =
            corpus.iter().map(|s| nab::sweep(s, windows.get(&s.key).unwrap_or(&no_windows), profile)).collect::<Result<_, _>>()?;
        let (threshold, tuned) = match &given {
            Some(t) => (t[profile.name], false),
            None => {
                let pairs: Vec<(&Sweep, &[f64])> = sweeps.iter().zip(&scores).map(|(w, s)| (w, s.as_slice())).collect();
                (nab::best_threshold(&pairs, profile).0, true)
            }
        };
        chosen.insert(profile.name, threshold);
        out.push(score_at(&corpus, &sweeps, &scores, threshold, tuned, profile));
    }
    if let (Some(dir), None) = (&args.output_dir, &args.results) {
        write_results(dir, &corpus, &windows, &scores, &chosen)?;
    }
    Ok(out)
}

fn score_at(corpus: &[Series], sweeps: &[Sweep], scores: &[Vec<f64>], threshold: f64, tuned: bool, profile: Profile) -> ProfileScore {
    let mut total = nab::FileScore::default();
    let mut per_category: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for ((series, sweep), s) in corpus.iter().zip(sweeps).zip(scores) {
        let f = nab::score_file(sweep, s, threshold, profile);
        total.raw += f.raw;
        total.windows += f.windows;
        total.detected += f.detected;
        total.missed += f.missed;
        total.false_positives += f.false_positives;
        let category = series.key.split('/').next().unwrap_or("").to_string();
        let c = per_category.entry(category).or_default();
        c.0 += f.raw;
        c.1 += f.windows;
    }
    ProfileScore {
        profile: profile.name,
        threshold,
        tuned,
        score: nab::normalised(total.raw, total.windows, profile),
        windows: total.windows,
        detected: total.detected,
        missed: total.missed,
        false_positives: total.false_positives,
        // A category without windows has no normalised score (nothing to detect).
        by_category: per_category
            .into_iter()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(c, (raw, w))| (c, nab::normalised(raw, w, profile)))
            .collect(),
    }
}

fn write_results(
    dir: &Path,
    corpus: &[Series],
    windows: &BTreeMap<String, Vec<(String, String)>>,
    scores: &[Vec<f64>],
    thresholds: &BTreeMap<&str, f64>,
) -> anyhow::Result<()> {
    for (series, s) in corpus.iter().zip(scores) {
        let (category, file) = series.key.split_once('/').context("a corpus key is <category>/<file>")?;
        let folder = dir.join(category);
        std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
        let path = folder.join(format!("presage_{file}"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
        writeln!(w, "timestamp,value,anomaly_score,label")?;
        let limits = windows.get(&series.key).map(Vec::as_slice).unwrap_or(&[]);
        for (i, (t, v)) in series.timestamps.iter().zip(&series.values).enumerate() {
            // Timestamps of one fixed format compare in time order as text.
            let label = limits.iter().any(|(a, b)| a.as_str() <= t.as_str() && t.as_str() <= b.as_str());
            writeln!(w, "{t},{v},{},{}", s[i], u8::from(label))?;
        }
        w.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    let path = dir.join("thresholds.json");
    std::fs::write(&path, serde_json::to_string_pretty(thresholds)? + "\n").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn run(args: AnomalyEvalArgs, output: OutputFormat) -> anyhow::Result<()> {
    if args.results.is_some() && args.output_dir.is_some() {
        bail!("--output-dir writes presage's own results; with --results there are none to write");
    }
    let scores = evaluate(&args)?;
    match output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&scores)?),
        _ => {
            println!("{:<20} {:>10} {:>7} {:>8} {:>8} {:>6} {:>6}", "PROFILE", "THRESHOLD", "TUNED", "SCORE", "WINDOWS", "MISSED", "FP");
            for s in &scores {
                println!(
                    "{:<20} {:>10.6} {:>7} {:>8.2} {:>8} {:>6} {:>6}",
                    s.profile, s.threshold, s.tuned, s.score, s.windows, s.missed, s.false_positives
                );
            }
            if let Some(first) = scores.first() {
                println!("\nby category ({}):", first.profile);
                for (c, v) in &first.by_category {
                    println!("  {c:<24} {v:>8.2}");
                }
            }
        }
    }
    Ok(())
}
