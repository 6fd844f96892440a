//! `presagectl forecast-eval`: the forecasters and every baseline walked forward through a trace
//! folder, scored per horizon by the same code the agent forecasts with.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use presage_forecast::eval::{EvalConfig, MethodScore, Target, evaluate, series_of};
use presage_forecast::gbt::GbtPoint;
use presage_forecast::onnx::OnnxForecaster;
use presage_forecast::{MAX_HORIZON, baselines};
use presage_traces::{Selection, TraceFormat};

use super::view::OutputFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Planetlab,
    Bitbrains,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    Cpu,
    Memory,
}

#[derive(Args, Clone, Debug)]
pub struct ForecastEvalArgs {
    /// Trace folder (a PlanetLab day, a Bitbrains month).
    #[arg(long)]
    pub trace: PathBuf,
    /// Trace format (default: detected from the file names).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Score only this horizon, in 5-minute steps (1..=12; default: all).
    #[arg(long)]
    pub horizon: Option<usize>,
    /// What to forecast.
    #[arg(long, value_enum, default_value = "cpu")]
    pub target: TargetArg,
    /// Samples each series must have before the first forecast (the same for every method).
    #[arg(long, default_value_t = 36)]
    pub warmup: usize,
    /// Forecast every N-th step.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// At most this many VMs (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Only every N-th VM in name order, starting at I (`I/N`; Bitbrains' held-out VMs: `0/5`).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<(usize, usize)>,
    /// Score only forecasts made at or after this step (Bitbrains' last week: 6048).
    #[arg(long, default_value_t = 0)]
    pub from_step: usize,
    /// ONNX quantile models to score beside the baselines (repeatable).
    #[arg(long = "model")]
    pub models: Vec<PathBuf>,
    /// The gradient-boosted tree point baseline (train.py writes it). Default:
    /// models/hgb-point.json when it exists here; an explicit path must load.
    #[arg(long = "hgb-model")]
    pub hgb_model: Option<PathBuf>,
}

/// Where `forecast-eval` looks for the tree baseline when not told.
pub const DEFAULT_HGB_MODEL: &str = "models/hgb-point.json";

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected I/N, e.g. 0/5"))?;
    let (i, n): (usize, usize) =
        (i.parse().map_err(|_| format!("{i:?} is not a number"))?, n.parse().map_err(|_| format!("{n:?} is not a number"))?);
    if n == 0 || i >= n {
        return Err(format!("{s}: need 0 <= I < N"));
    }
    Ok((i, n))
}

pub fn run(args: ForecastEvalArgs, output: OutputFormat) -> anyhow::Result<()> {
    let horizons: Vec<usize> = match args.horizon {
        Some(h) if (1..=MAX_HORIZON).contains(&h) => vec![h],
        Some(h) => bail!("--horizon {h}: must be between 1 and {MAX_HORIZON} steps"),
        None => (1..=MAX_HORIZON).collect(),
    };
    if args.stride == 0 {
        bail!("--stride must be at least 1");
    }
    let format = args.format.map(|f| match f {
        FormatArg::Planetlab => TraceFormat::PlanetLab,
        FormatArg::Bitbrains => TraceFormat::Bitbrains,
    });
    let (index, count) = args.shard.unwrap_or((0, 1));
    let selection = Selection { index, count, limit: args.limit };
    let set = presage_traces::load_dir(&args.trace, format, selection, None)
        .with_context(|| format!("reading trace folder {}", args.trace.display()))?;
    let target = match args.target {
        TargetArg::Cpu => Target::Cpu,
        TargetArg::Memory => Target::Memory,
    };
    let series = series_of(&set, target);
    if series.is_empty() {
        bail!("{}: no VM has a {:?} series", args.trace.display(), target);
    }
    let mut methods = baselines::all();
    match &args.hgb_model {
        Some(path) => methods.push(Box::new(GbtPoint::load(path)?)),
        None => match GbtPoint::load(std::path::Path::new(DEFAULT_HGB_MODEL)) {
            Ok(m) => methods.push(Box::new(m)),
            Err(e) => eprintln!("warning: scoring without the gradient-boosted tree baseline: {e} (give --hgb-model)"),
        },
    }
    for m in &args.models {
        methods.push(Box::new(OnnxForecaster::load(m)?));
    }
    let cfg = EvalConfig { horizons, warmup: args.warmup.max(args.from_step), stride: args.stride, calibrated: true };
    let _span = tracing::info_span!("forecast_eval", trace = %args.trace.display(), vms = series.len()).entered();
    let rows = evaluate(&series, &methods, &cfg);
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?,
        OutputFormat::Csv => write!(out, "{}", csv(&rows))?,
        OutputFormat::Dot => anyhow::bail!("--output dot is only available for ecosystem"),
        OutputFormat::Table => write!(out, "{}", table(&rows))?,
    }
    Ok(())
}

fn csv(rows: &[MethodScore]) -> String {
    let mut s = String::from("method,horizon,pinball,mae,coverage,vms,points\n");
    for r in rows {
        s.push_str(&format!("{},{},{:.6},{:.6},{:.4},{},{}\n", r.method, r.horizon, r.pinball, r.mae, r.coverage, r.vms, r.points));
    }
    s
}

/// One block per horizon, best pinball loss first, with each method's loss relative to the best
/// raw baseline's.
fn table(rows: &[MethodScore]) -> String {
    let mut s = String::new();
    let mut horizons: Vec<usize> = rows.iter().map(|r| r.horizon).collect();
    horizons.sort_unstable();
    horizons.dedup();
    for h in horizons {
        let mut block: Vec<&MethodScore> = rows.iter().filter(|r| r.horizon == h && r.points > 0).collect();
        block.sort_by(|a, b| a.pinball.total_cmp(&b.pinball));
        let best = block.iter().filter(|r| !r.method.ends_with("+aci")).map(|r| r.pinball).fold(f64::INFINITY, f64::min);
        s.push_str(&format!("horizon {h} ({} min)\n", h * 5));
        s.push_str(&format!(
            "  {:<34} {:>9} {:>9} {:>9} {:>9} {:>5} {:>9}\n",
            "METHOD", "PINBALL", "x BEST", "MAE", "COVERAGE", "VMS", "POINTS"
        ));
        for r in block {
            s.push_str(&format!(
                "  {:<34} {:>9.5} {:>9.3} {:>9.5} {:>8.1}% {:>5} {:>9}\n",
                r.method,
                r.pinball,
                r.pinball / best,
                r.mae,
                r.coverage * 100.0,
                r.vms,
                r.points
            ));
        }
    }
    s
}
