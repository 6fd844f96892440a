//! `presagectl simulate`: replays trace folders through placement policies, several days and
//! policies in parallel, and prints the figures (table, JSON or CSV), optionally beside
//! CloudSim's published ones and with a per-step timeline for plotting.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use presage_traces::TraceFormat;
use rayon::prelude::*;
use serde::Serialize;

use super::view::OutputFormat;
use presage_decide::ecosystem::graph::MatchOptions;
use presage_decide::ecosystem::scorer::{EcosystemHandle, FleetEcosystem, presage_with_ecosystem};
use presage_decide::policy::learned::ShortfallModel;
use presage_decide::policy::presage::PresageConfig;
use presage_decide::policy::{PolicyExtras, PolicySpec, parse_policy_list};
use presage_forecast::shortfall::OnnxShortfall;
use presage_simulator::candidates::CandidateRecorder;
use presage_simulator::ecosystem::{EcosystemScenario, EcosystemTracker};
use presage_simulator::reference::{self, Comparison};
use presage_simulator::scenario::PLANETLAB_HOSTS;
use presage_simulator::{RunReport, Scenario, Simulation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceKind {
    Planetlab,
    Bitbrains,
}

fn model_path(flag: &str, given: Option<&PathBuf>, default: &str) -> anyhow::Result<Option<PathBuf>> {
    match given {
        Some(p) if p.as_os_str() == "none" => Ok(None),
        Some(p) if !p.is_file() => bail!("{flag} {}: no such file", p.display()),
        Some(p) => Ok(Some(p.clone())),
        None => Ok(Some(PathBuf::from(default)).filter(|p| p.is_file())),
    }
}

#[derive(Args, Clone, Debug)]
pub struct SimulateArgs {
    /// Trace folder: a PlanetLab day or a Bitbrains month (repeat for several).
    #[arg(long = "trace", required = true)]
    pub traces: Vec<PathBuf>,
    /// CloudSim's VM order: a CSV file (one trace folder), or a folder holding DAY.csv per day.
    #[arg(long)]
    pub vm_order: Option<PathBuf>,
    /// Policies, comma-separated (thr-mmt-0.8, iqr-mmt-1.5, mad-mmt-2.5, lr-mmt-1.2,
    /// lrr-mmt-1.2, dvfs, npa) or `all`.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// Trace format (default: detected from the file names).
    #[arg(long, value_enum)]
    pub format: Option<TraceKind>,
    /// Number of hosts (PlanetLab: 800 as in CloudSim; Bitbrains: one per four VMs).
    #[arg(long)]
    pub hosts: Option<usize>,
    /// Replay at most this many 5-minute steps (Bitbrains; default: the longest trace).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Start the replay at this step of the traces (Bitbrains: a later part of the month, such
    /// as the week held back from training, from step 6048), with no history before it.
    #[arg(long, default_value_t = 0)]
    pub from_step: usize,
    /// Write per-step figures (active hosts, power, overloaded hosts) to this CSV file.
    #[arg(long)]
    pub timeline: Option<PathBuf>,
    /// CloudSim's figures (planetlab-public-days.csv): print ours beside them with the ratio.
    #[arg(long)]
    pub compare_reference: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Never draw the progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// The agents' CPU forecast model, for policies that read forecasts (presage); `none`: the
    /// agents' fallback baseline. Default: models/cpu-quantiles-v2.onnx when it exists here.
    #[arg(long)]
    pub forecast_model: Option<PathBuf>,
    /// A TOML file with presage's policy settings (the coordinator's [policy.presage] keys).
    #[arg(long)]
    pub presage_config: Option<PathBuf>,
    /// Every VM runs presage-guest: the interference model's application latency and the host's
    /// contention reach the policies (presage learns from them; `presage-noapp` ignores them).
    /// `app_slo_violation_minutes` is reported either way.
    #[arg(long)]
    pub guest_reports: bool,
    /// An ecosystem scenario (../shared/data/ecosystems format): trace VMs become its
    /// applications' services in order, `presage` runs with the dependency scorer and rule
    /// (`presage-nodeps` without), and every run reports the ecosystem's figures.
    #[arg(long)]
    pub ecosystem: Option<PathBuf>,
    /// Sizing methods, comma-separated (static, vpa, presage) or `all`: replay a Bitbrains
    /// folder with a per-VM allocation each method changes, one report per method (instead of
    /// the placement policies).
    #[arg(long)]
    pub sizing: Option<String>,
    /// A TOML file with presage's sizing policies: `[defaults]`, `[[group]]`, `[vm."ID"]`, or a coordinator's configuration (its `[sizing]` section).
    #[arg(long)]
    pub sizing_policy: Option<PathBuf>,
    /// The agents' memory forecast model for the sizing replay; `none`: the baseline. Default:
    /// models/memory-quantiles-v2.onnx when it exists here.
    #[arg(long)]
    pub memory_model: Option<PathBuf>,
    /// Replay at most this many VMs (the sizing replay; in file order).
    #[arg(long)]
    pub max_vms: Option<usize>,
    /// presage's risk appetite at several settings (`risk=0.2,0.4,0.6,0.8`, each 0..=1): one
    /// run of presage per setting and day (the others once a day), each report with its `risk`;
    /// the table ends with the frontier (each policy and setting over the days).
    #[arg(long)]
    pub sweep: Option<String>,
    /// Draw the frontier (energy against the oracle's, demand unserved) to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A learned shortfall model (models/placement-shortfall-v1.onnx) for presage's ensemble;
    /// `none`: the hand-set ensemble alone. Default: the settings' `learned_model`.
    #[arg(long)]
    pub learned_model: Option<PathBuf>,
    /// Record presage's shortlists, each candidate labelled with what the trace did next, as
    /// CSV files in this folder (one per run: DAY-POLICY[-rRISK].csv): the learned scorer's
    /// training data (`models/train_scorer.py`).
    #[arg(long)]
    pub record_candidates: Option<PathBuf>,
    /// presage counts memory as used now, without the agents' memory forecasts (an ablation;
    /// by default each VM's memory p90 within the horizon counts where memory is counted by use).
    #[arg(long)]
    pub no_memory_forecasts: bool,
    /// With --record-candidates: keep one row in this many.
    #[arg(long, default_value_t = 1)]
    pub record_every: usize,
}

/// The default model paths, relative to where presagectl runs (the repository root).
pub const DEFAULT_FORECAST_MODEL: &str = "models/cpu-quantiles-v2.onnx";
pub const DEFAULT_MEMORY_MODEL: &str = "models/memory-quantiles-v2.onnx";

impl SimulateArgs {
    /// The model the simulated agents forecast with: `None` for the baseline.
    pub fn forecast_model(&self) -> anyhow::Result<Option<PathBuf>> {
        model_path("--forecast-model", self.forecast_model.as_ref(), DEFAULT_FORECAST_MODEL)
    }

    /// The memory model the simulated agents forecast with (the sizing replay).
    pub fn memory_model(&self) -> anyhow::Result<Option<PathBuf>> {
        model_path("--memory-model", self.memory_model.as_ref(), DEFAULT_MEMORY_MODEL)
    }

    /// presage's settings: the file's, or the defaults; `--learned-model` overrides the file's
    /// `learned_model`.
    pub fn presage_config(&self) -> anyhow::Result<PresageConfig> {
        let mut cfg = match &self.presage_config {
            None => PresageConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("reading --presage-config {}", path.display()))?;
                let cfg: PresageConfig = toml::from_str(&text).with_context(|| format!("--presage-config {}", path.display()))?;
                cfg.validate().with_context(|| format!("--presage-config {}", path.display()))?;
                cfg
            }
        };
        match &self.learned_model {
            Some(p) if p.as_os_str() == "none" => cfg.learned_model = None,
            Some(p) => cfg.learned_model = Some(p.clone()),
            None => {}
        }
        Ok(cfg)
    }

    /// The learned shortfall model the settings name, loaded (`None` when they name none).
    fn shortfall_model(cfg: &PresageConfig) -> anyhow::Result<Option<Arc<dyn ShortfallModel>>> {
        let Some(path) = &cfg.learned_model else { return Ok(None) };
        let model = OnnxShortfall::load(path).context("loading the learned shortfall model")?;
        Ok(Some(Arc::new(model)))
    }
}

impl SimulateArgs {
    /// Every policy over `traces`, with the defaults of the command line.
    pub fn new(traces: Vec<PathBuf>, vm_order: Option<PathBuf>) -> SimulateArgs {
        SimulateArgs {
            traces,
            vm_order,
            policy: "all".into(),
            format: None,
            hosts: None,
            steps: None,
            from_step: 0,
            timeline: None,
            compare_reference: None,
            threads: None,
            no_progress: true,
            forecast_model: None,
            presage_config: None,
            guest_reports: false,
            ecosystem: None,
            sizing: None,
            sizing_policy: None,
            memory_model: None,
            max_vms: None,
            sweep: None,
            plot: None,
            learned_model: None,
            record_candidates: None,
            record_every: 1,
            no_memory_forecasts: false,
        }
    }
}

/// The risk settings of `--sweep risk=A,B,...`, in the order given.
pub fn parse_sweep(text: &str) -> anyhow::Result<Vec<f64>> {
    let Some(list) = text.trim().strip_prefix("risk=") else {
        bail!("--sweep {text:?}: expected risk=A,B,... (the only setting swept is presage's risk appetite)");
    };
    let values = list
        .split(',')
        .map(|v| {
            let r: f64 = v.trim().parse().with_context(|| format!("--sweep risk: {v:?} is not a number"))?;
            anyhow::ensure!((0.0..=1.0).contains(&r), "--sweep risk: {r} is outside 0..=1");
            Ok(r)
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    anyhow::ensure!(!values.is_empty(), "--sweep risk= names no setting");
    Ok(values)
}

/// One line of JSON output: the run's figures, and CloudSim's when compared.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    run: &'a RunReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    cloudsim: Option<&'a Comparison>,
}

fn resolve_order(args: &SimulateArgs, dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let Some(order) = &args.vm_order else { return Ok(None) };
    if order.is_dir() {
        let day = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let file = order.join(format!("{day}.csv"));
        if !file.is_file() {
            bail!("--vm-order {}: no {day}.csv for trace folder {}", order.display(), dir.display());
        }
        Ok(Some(file))
    } else if args.traces.len() > 1 {
        bail!("--vm-order names one file but {} trace folders were given; pass a folder of DAY.csv files", args.traces.len())
    } else {
        Ok(Some(order.clone()))
    }
}

fn load(args: &SimulateArgs, dir: &Path) -> anyhow::Result<Scenario> {
    let kind = match args.format {
        Some(k) => k,
        None => match presage_traces::detect_format(dir).with_context(|| format!("reading trace folder {}", dir.display()))? {
            TraceFormat::PlanetLab => TraceKind::Planetlab,
            TraceFormat::Bitbrains => TraceKind::Bitbrains,
        },
    };
    let scenario = match kind {
        TraceKind::Planetlab => {
            if args.from_step > 0 {
                bail!("--from-step is for Bitbrains months; {} is a PlanetLab day", dir.display());
            }
            let order = resolve_order(args, dir)?;
            Scenario::planetlab(dir, order.as_deref(), args.hosts.unwrap_or(PLANETLAB_HOSTS))
        }
        TraceKind::Bitbrains => Scenario::bitbrains_from(dir, args.hosts, args.from_step, args.steps),
    };
    scenario.with_context(|| format!("loading trace folder {}", dir.display()))
}

/// Runs every (folder, policy) pair; reports come back in folder-then-policy order.
pub fn simulate(args: &SimulateArgs, policies: &[PolicySpec], progress: &ProgressBar) -> anyhow::Result<Vec<RunReport>> {
    let scenarios: Vec<Arc<Scenario>> = args.traces.par_iter().map(|d| load(args, d).map(Arc::new)).collect::<anyhow::Result<Vec<_>>>()?;
    let model = args.forecast_model()?;
    let memory_model = args.memory_model()?;
    let presage = args.presage_config()?;
    let shortfall = SimulateArgs::shortfall_model(&presage)?;
    if let Some(dir) = &args.record_candidates {
        anyhow::ensure!(args.record_every >= 1, "--record-every must be at least 1 (one row kept in that many)");
        std::fs::create_dir_all(dir).with_context(|| format!("creating --record-candidates {}", dir.display()))?;
    }
    let ecosystem = args
        .ecosystem
        .as_deref()
        .map(|p| EcosystemScenario::load(p).with_context(|| format!("--ecosystem {}", p.display())))
        .transpose()?;
    // presage's family once per risk setting when sweeping; every other policy once.
    let sweep = args.sweep.as_deref().map(parse_sweep).transpose()?;
    let settings = |p: &PolicySpec| -> Vec<Option<f64>> {
        match (&sweep, p.is_presage()) {
            (Some(risks), true) => risks.iter().map(|r| Some(*r)).collect(),
            _ => vec![None],
        }
    };
    let jobs: Vec<(Arc<Scenario>, PolicySpec, Option<f64>)> = scenarios
        .iter()
        .flat_map(|s| policies.iter().flat_map(move |p| settings(p).into_iter().map(move |r| (s.clone(), *p, r))))
        .collect();
    let runs_per_day = policies.iter().map(|p| settings(p).len()).sum::<usize>() as u64;
    progress.set_length(scenarios.iter().map(|s| s.steps.saturating_sub(1) as u64).sum::<u64>() * runs_per_day);
    let reports = jobs
        .par_iter()
        .map(|(s, p, risk)| {
            let _span = tracing::info_span!("simulate", day = %s.name, policy = %p, risk = ?risk).entered();
            let presage = match risk {
                Some(r) => presage.at_risk(*r),
                None => presage.clone(),
            };
            let recorder = args
                .record_candidates
                .as_ref()
                .filter(|_| p.is_presage())
                .map(|_| Arc::new(CandidateRecorder::new(presage.horizon_steps, args.record_every)));
            let extras = PolicyExtras {
                shortfall: shortfall.clone(),
                candidate_log: recorder.clone().map(|r| r as Arc<dyn presage_decide::policy::learned::CandidateLog>),
            };
            let models = Models { cpu: model.as_deref(), memory: memory_model.as_deref() };
            let mut report = run_one(args, s, p, &presage, &extras, recorder.clone(), models, ecosystem.as_ref(), progress);
            report.risk = *risk;
            if let (Some(dir), Some(rec)) = (&args.record_candidates, recorder) {
                let name = match risk {
                    Some(r) => format!("{}-{}-r{r}.csv", s.name, p),
                    None => format!("{}-{}.csv", s.name, p),
                };
                let path = dir.join(name);
                let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                rec.write_csv(std::io::BufWriter::new(file)).with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(report)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(reports)
}

/// One run of `p` over `s`.
/// The agents' forecast models the simulated agents run (`None`: their baselines).
#[derive(Clone, Copy)]
struct Models<'a> {
    cpu: Option<&'a Path>,
    memory: Option<&'a Path>,
}

impl Models<'_> {
    /// `sim` forecasting with these models, memory too unless `--no-memory-forecasts`.
    fn apply<'s>(self, sim: Simulation<'s>, args: &SimulateArgs) -> Simulation<'s> {
        let sim = sim.with_forecast_model(self.cpu);
        if args.no_memory_forecasts { sim.without_memory_forecasts() } else { sim.with_memory_forecast_model(self.memory) }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    args: &SimulateArgs,
    s: &Arc<Scenario>,
    p: &PolicySpec,
    presage: &PresageConfig,
    extras: &PolicyExtras,
    recorder: Option<Arc<CandidateRecorder>>,
    models: Models<'_>,
    ecosystem: Option<&EcosystemScenario>,
    progress: &ProgressBar,
) -> RunReport {
    let Some(eco) = ecosystem else {
        let sim = models
            .apply(Simulation::new(s, p.build_with_extras(presage, extras), p.power_mode()), args)
            .with_guest_reports(args.guest_reports)
            .with_candidate_labels(recorder);
        return sim.run(|_, _| progress.inc(1));
    };
    // Trace VM i is the ecosystem's declaration i.
    let graph = eco.graph(MatchOptions::default());
    let mut tracker = EcosystemTracker::new(eco.clone(), graph.clone(), s.hosts.len());
    let policy: Box<dyn presage_decide::policy::ConsolidationPolicy> = if matches!(p, PolicySpec::Presage | PolicySpec::PresageNoApp) {
        let fleet = FleetEcosystem::new(graph.clone(), s.vms.len(), &|name| graph.find(name), eco.locations(s.hosts.len()), eco.latency);
        let handle = EcosystemHandle::new(fleet);
        tracker = tracker.learning_into(handle.clone());
        let policy = presage_with_ecosystem(p.presage_config(presage), handle).with_extras(extras);
        Box::new(if *p == PolicySpec::PresageNoApp { policy.labelled("presage-noapp") } else { policy })
    } else {
        p.build_with_extras(presage, extras)
    };
    let sim = models
        .apply(Simulation::new(s, policy, p.power_mode()), args)
        .with_guest_reports(args.guest_reports)
        .with_ecosystem(tracker)
        .with_candidate_labels(recorder);
    sim.run(|_, _| progress.inc(1))
}

pub fn run(args: SimulateArgs, output: OutputFormat) -> anyhow::Result<()> {
    if args.sizing.is_some() {
        return crate::simulate_sizing::run(&args, output);
    }
    let policies = parse_policy_list(&args.policy)?;
    if policies.is_empty() {
        bail!("--policy names no policy");
    }
    let reference_rows =
        args.compare_reference.as_deref().map(reference::load).transpose().context("reading the --compare-reference file")?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(args.threads.unwrap_or(0)).build()?;
    let progress = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} simulating [{bar:40}] {percent:>3}% {pos}/{len} steps, {elapsed} elapsed, ~{eta} left")
                .expect("a valid progress template")
                .progress_chars("=> "),
        );
        bar
    };
    let reports = pool.install(|| simulate(&args, &policies, &progress))?;
    progress.finish_and_clear();

    let comparisons = reference_rows.as_ref().map(|rows| reference::compare(&reports, rows)).unwrap_or_default();
    if let Some(path) = &args.timeline {
        write_timeline(path, &reports).with_context(|| format!("writing the timeline to {}", path.display()))?;
    }
    let points = crate::frontier::frontier(&reports.iter().map(crate::frontier::RunFigures::of).collect::<Vec<_>>());
    if let Some(path) = &args.plot {
        let days: std::collections::BTreeSet<&str> = reports.iter().map(|r| r.day.as_str()).collect();
        let title = format!("energy against unserved demand, mean over {} day(s)", days.len());
        std::fs::write(path, crate::frontier::frontier_svg(&points, &title))
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    let find = |r: &RunReport| comparisons.iter().find(|c| c.policy == r.policy && c.day == r.day);
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => {
            let rows: Vec<Row<'_>> = reports.iter().map(|r| Row { run: r, cloudsim: find(r) }).collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        }
        OutputFormat::Csv => write!(out, "{}", csv(&reports, &comparisons))?,
        OutputFormat::Dot => anyhow::bail!("--output dot is only available for ecosystem"),
        OutputFormat::Table => {
            write!(out, "{}", table(&reports))?;
            if args.sweep.is_some() {
                writeln!(out)?;
                write!(out, "{}", crate::frontier::frontier_table(&points))?;
            }
            if args.compare_reference.is_some() {
                writeln!(out)?;
                write!(out, "{}", comparison_table(&comparisons))?;
            }
        }
    }
    Ok(())
}

const COLUMNS: [&str; 18] = [
    "policy",
    "day",
    "hosts",
    "vms",
    "energy_kwh",
    "migrations",
    "slatah_pct",
    "pdm_pct",
    "slav",
    "esv",
    "ping_pongs",
    "oracle_energy_kwh",
    "energy_over_oracle",
    "host_shutdowns",
    "mean_active_hosts",
    "unplaced_vms",
    "app_slo_violation_minutes",
    "wall_s",
];

fn fields(r: &RunReport) -> Vec<String> {
    vec![
        r.policy.clone(),
        r.day.clone(),
        r.hosts.to_string(),
        r.vms.to_string(),
        format!("{:.3}", r.energy_kwh),
        r.migrations.to_string(),
        format!("{:.4}", r.slatah_pct),
        format!("{:.4}", r.pdm_pct),
        format!("{:.4e}", r.slav),
        format!("{:.4e}", r.esv),
        r.ping_pongs.to_string(),
        format!("{:.3}", r.oracle_energy_kwh),
        format!("{:.3}", r.energy_over_oracle),
        r.host_shutdowns.to_string(),
        format!("{:.1}", r.mean_active_hosts),
        r.unplaced_vms.to_string(),
        format!("{:.1}", r.app_slo_violation_minutes),
        format!("{:.3}", r.wall_s),
    ]
}

fn csv(reports: &[RunReport], comparisons: &[Comparison]) -> String {
    let mut s = COLUMNS.join(",");
    if !comparisons.is_empty() {
        s.push_str(",cloudsim_energy_kwh,cloudsim_migrations,cloudsim_slatah_pct,cloudsim_pdm_pct,cloudsim_esv,within_tolerance");
    }
    s.push('\n');
    for r in reports {
        s.push_str(&fields(r).join(","));
        if !comparisons.is_empty() {
            match comparisons.iter().find(|c| c.policy == r.policy && c.day == r.day) {
                Some(c) => s.push_str(&format!(
                    ",{},{},{},{},{},{}",
                    c.energy_kwh.cloudsim,
                    c.migrations.cloudsim,
                    c.slatah_pct.cloudsim,
                    c.pdm_pct.cloudsim,
                    c.esv.cloudsim,
                    c.within_tolerance
                )),
                None => s.push_str(",,,,,,"),
            }
        }
        s.push('\n');
    }
    s
}

fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        s.push_str(parts.join("  ").trim_end());
        s.push('\n');
    };
    line(&mut s, header.to_vec());
    for r in rows {
        line(&mut s, r.iter().map(String::as_str).collect());
    }
    s
}

fn table(reports: &[RunReport]) -> String {
    let header = [
        "POLICY",
        "DAY",
        "HOSTS",
        "VMS",
        "ENERGY kWh",
        "MIGR",
        "SLATAH %",
        "PDM %",
        "SLAV",
        "ESV",
        "PING-PONG",
        "ORACLE kWh",
        "x ORACLE",
        "APP SLO VM-min",
        "WALL s",
    ];
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let f = fields(r);
            vec![
                f[0].clone(),
                f[1].clone(),
                f[2].clone(),
                f[3].clone(),
                format!("{:.2}", r.energy_kwh),
                f[5].clone(),
                format!("{:.3}", r.slatah_pct),
                format!("{:.4}", r.pdm_pct),
                f[8].clone(),
                f[9].clone(),
                f[10].clone(),
                format!("{:.2}", r.oracle_energy_kwh),
                format!("{:.2}", r.energy_over_oracle),
                format!("{:.0}", r.app_slo_violation_minutes),
                format!("{:.2}", r.wall_s),
            ]
        })
        .collect();
    render(&header, &rows)
}

fn comparison_table(comparisons: &[Comparison]) -> String {
    let header = [
        "POLICY",
        "DAY",
        "ENERGY ours",
        "CloudSim",
        "ratio",
        "MIGR ours",
        "CloudSim",
        "ratio",
        "SLATAH ours",
        "CloudSim",
        "ratio",
        "PDM ours",
        "CloudSim",
        "ratio",
        "OK",
    ];
    let rows: Vec<Vec<String>> = comparisons
        .iter()
        .map(|c| {
            vec![
                c.policy.clone(),
                c.day.clone(),
                format!("{:.2}", c.energy_kwh.ours),
                format!("{:.2}", c.energy_kwh.cloudsim),
                format!("{:.3}", c.energy_kwh.ratio),
                format!("{:.0}", c.migrations.ours),
                format!("{:.0}", c.migrations.cloudsim),
                format!("{:.3}", c.migrations.ratio),
                format!("{:.3}", c.slatah_pct.ours),
                format!("{:.3}", c.slatah_pct.cloudsim),
                format!("{:.2}", c.slatah_pct.ratio),
                format!("{:.4}", c.pdm_pct.ours),
                format!("{:.4}", c.pdm_pct.cloudsim),
                format!("{:.2}", c.pdm_pct.ratio),
                if c.within_tolerance { "yes".into() } else { "NO".into() },
            ]
        })
        .collect();
    let mut s = render(&header, &rows);
    let ok = comparisons.iter().filter(|c| c.within_tolerance).count();
    s.push_str(&format!(
        "{ok} of {} runs within tolerance (energy ±5 %, migrations ±10 %, SLATAH and PDM within ×1.5; DVFS/NPA energy ±1 %)\n",
        comparisons.len()
    ));
    s
}

fn write_timeline(path: &Path, reports: &[RunReport]) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "policy,day,time_s,active_hosts,power_w,overloaded_hosts,migrations_started,oracle_power_w")?;
    for r in reports {
        for p in &r.timeline {
            writeln!(
                w,
                "{},{},{:.1},{},{:.1},{},{},{:.1}",
                r.policy, r.day, p.time_s, p.active_hosts, p.power_w, p.overloaded_hosts, p.migrations_started, p.oracle_power_w
            )?;
        }
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_decide::policy::power::HP_ML110_G5;
    use presage_decide::policy::{HostView, VmView};
    use presage_simulator::ResourceModel;

    #[test]
    fn json_rows_carry_the_documented_fields() {
        let s = Scenario::synthetic(
            "day",
            ResourceModel::CpuAndMemory,
            vec![HostView::new(2, 1000.0, 4096.0, 62.5, HP_ML110_G5)],
            vec![(VmView::unplaced(1, 500.0, 100.0), vec![0.4; 5])],
        );
        let r = Simulation::new(&s, PolicySpec::Dvfs.build(), PolicySpec::Dvfs.power_mode()).run(|_, _| {});
        let v = serde_json::to_value(vec![Row { run: &r, cloudsim: None }]).unwrap();
        // The fields the JSON output promises (README), and every CSV column.
        let promised = "policy day hosts vms energy_kwh migrations slatah_pct pdm_pct slav esv ping_pongs oracle_energy_kwh wall_s";
        for key in promised.split(' ').chain(COLUMNS) {
            assert!(v[0].get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v[0]["day"], "day");
        let c = csv(std::slice::from_ref(&r), &[]);
        assert_eq!(c.lines().count(), 2);
        assert!(c.starts_with("policy,day,hosts,vms,energy_kwh,migrations"));
    }

    #[test]
    fn the_timeline_has_a_row_per_step_and_run() {
        let s = Scenario::synthetic(
            "day",
            ResourceModel::CpuAndMemory,
            vec![HostView::new(2, 1000.0, 4096.0, 62.5, HP_ML110_G5)],
            vec![(VmView::unplaced(1, 500.0, 100.0), vec![0.4; 5])],
        );
        let runs: Vec<RunReport> =
            [PolicySpec::Dvfs, PolicySpec::Npa].iter().map(|p| Simulation::new(&s, p.build(), p.power_mode()).run(|_, _| {})).collect();
        let f = tempfile::NamedTempFile::new().unwrap();
        write_timeline(f.path(), &runs).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("policy,day,time_s,active_hosts,power_w,overloaded_hosts"));
        // 5 trace points: updates at 300.1, 600.1, 900.1 and 1200.1 s, for each of the two runs.
        assert_eq!(lines.len(), 1 + 2 * 4);
        assert!(lines[1].starts_with("DVFS,day,300.1,1,"), "{}", lines[1]);
        assert!(lines[5].starts_with("NPA,day,300.1,1,135.0,"), "{}", lines[5]);
    }

    #[test]
    fn cli_arguments_are_checked() {
        use clap::Parser;
        let cli =
            crate::Cli::try_parse_from(["presagectl", "simulate", "--trace", "d", "--policy", "thr-mmt-0.8,npa", "-o", "csv"]).unwrap();
        assert!(matches!(cli.command, crate::Command::Simulate(_)));
        assert!(crate::Cli::try_parse_from(["presagectl", "simulate", "--policy", "all"]).is_err(), "--trace is required");
        assert!(parse_policy_list("thr-mmt-0.8,bogus").is_err());
    }

    #[test]
    fn a_learned_model_that_cannot_be_loaded_and_a_later_start_on_a_planetlab_day_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("presagectl-simulate-learned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = SimulateArgs::new(vec![dir.clone()], None);
        args.learned_model = Some(dir.join("missing.onnx"));
        let e = format!("{:#}", SimulateArgs::shortfall_model(&args.presage_config().unwrap()).err().expect("refused"));
        assert!(e.contains("learned shortfall model") && e.contains("missing.onnx"), "{e}");
        // `none` overrides a settings file's model.
        let cfg = dir.join("presage.toml");
        std::fs::write(&cfg, "learned_model = \"elsewhere.onnx\"\n[learned]\nweight = 4.0\n").unwrap();
        args.presage_config = Some(cfg);
        args.learned_model = Some("none".into());
        let loaded = args.presage_config().unwrap();
        assert_eq!((loaded.learned_model, loaded.learned.weight), (None, 4.0));

        let day = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/planetlab/20110303");
        assert!(day.is_dir(), "the PlanetLab day is not at {} (../shared/data beside the repository)", day.display());
        let mut args = SimulateArgs::new(vec![day.clone()], None);
        args.from_step = 10;
        let e = format!("{:#}", load(&args, &day).unwrap_err());
        assert!(e.contains("--from-step") && e.contains("20110303"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_sweep_names_risk_settings_within_0_and_1_and_anything_else_is_refused_with_the_reason() {
        assert_eq!(parse_sweep("risk=0.2, 0.4,1").unwrap(), [0.2, 0.4, 1.0]);
        for (bad, says) in [
            ("0.2,0.4", "expected risk="),
            ("risk=0.2,x", "\"x\" is not a number"),
            ("risk=1.5", "outside 0..=1"),
            ("horizon=3", "expected risk="),
        ] {
            let e = format!("{:#}", parse_sweep(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
