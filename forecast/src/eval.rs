//! Walk-forward evaluation: every method forecasts every series at every step from the history
//! before it, and is scored on what happened next, per horizon. Nothing after the forecast time
//! is ever seen; the online variants learn only from outcomes already due. For a model the
//! last variant, `+mix+aci`, is exactly what the agent publishes.

use rayon::prelude::*;
use serde::Serialize;

use crate::metrics::Score;
use crate::online::{SeriesLearner, mixing_baseline};
use crate::{Forecaster, MAX_HORIZON, STEP_S, SeriesContext};

/// Which demand to forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Busy fraction of the VM's vCPUs.
    Cpu,
    /// Memory in use as a fraction of the memory provisioned (traces that record it).
    Memory,
}

/// One series to forecast.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub values: Vec<f32>,
    /// Time of `values[0]`, seconds since the epoch (or since midnight of day 0).
    pub start_s: u64,
}

/// The series of a trace set for `target`; VMs without that signal are left out.
pub fn series_of(set: &presage_traces::TraceSet, target: Target) -> Vec<Series> {
    set.vms
        .iter()
        .filter_map(|vm| {
            let values: Vec<f32> = match target {
                Target::Cpu => vm.cpu_series().to_vec(),
                Target::Memory => {
                    let kb = vm.memory_kb_series();
                    let total_kb = vm.spec.memory_bytes as f32 / 1024.0;
                    if kb.is_empty() || total_kb <= 0.0 {
                        return None;
                    }
                    kb.iter().map(|v| (v / total_kb).clamp(0.0, 1.0)).collect()
                }
            };
            Some(Series { name: vm.name.clone(), values, start_s: vm.start_epoch_s.unwrap_or(0) })
        })
        .collect()
}

/// How to walk.
#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Horizons to score, 1..=12.
    pub horizons: Vec<usize>,
    /// No forecast before this many samples (every method starts at the same point).
    pub warmup: usize,
    /// Forecast every `stride`-th step.
    pub stride: usize,
    /// Also score each method with online calibration (as `<method>+aci`), and a model mixed
    /// online with the baseline and calibrated (`<method>+mix+aci`, what the agent publishes).
    pub calibrated: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { horizons: (1..=MAX_HORIZON).collect(), warmup: 36, stride: 1, calibrated: true }
    }
}

/// One method's figures at one horizon.
#[derive(Clone, Debug, Serialize)]
pub struct MethodScore {
    pub method: String,
    pub horizon: usize,
    pub pinball: f64,
    pub mae: f64,
    pub coverage: f64,
    /// Series that got at least one scored forecast.
    pub vms: usize,
    pub points: u64,
}

/// Scores of one method on one series per horizon: raw, calibrated, mixed and calibrated.
struct SeriesScores {
    variants: [[Score; MAX_HORIZON]; 3],
}

/// The variants a method is scored in, as (index into `SeriesScores::variants`, name suffix).
fn variants(method: &dyn Forecaster, cfg: &EvalConfig) -> &'static [(usize, &'static str)] {
    match (cfg.calibrated, method.mixes_online()) {
        (false, _) => &[(0, "")],
        (true, false) => &[(0, ""), (1, "+aci")],
        (true, true) => &[(0, ""), (1, "+aci"), (2, "+mix+aci")],
    }
}

fn walk(method: &dyn Forecaster, s: &Series, cfg: &EvalConfig) -> SeriesScores {
    let mut out = SeriesScores { variants: [[Score::default(); MAX_HORIZON]; 3] };
    let x = &s.values;
    let mixes = cfg.calibrated && method.mixes_online();
    // Calibration alone, and what the agent runs (mixing, then calibration).
    let (mut calibrated, mut published) = (SeriesLearner::default(), SeriesLearner::default());
    let start = cfg.warmup.max(1);
    let stride = cfg.stride.max(1);
    let ts: Vec<usize> = (start..x.len()).step_by(stride).collect();
    // All of a series' forecasts at once (a model runs them as one batch); each sees only the
    // samples before its own time.
    let ctxs: Vec<SeriesContext<'_>> =
        ts.iter().map(|&t| SeriesContext { history: &x[..t], next_time_s: s.start_s + t as u64 * STEP_S }).collect();
    let forecasts = method.forecast_batch(&ctxs);
    for ((&t, ctx), f) in ts.iter().zip(&ctxs).zip(forecasts) {
        // Outcomes up to t − 1 are known: let the calibrator learn from every one that is due.
        if cfg.calibrated {
            let from = t.saturating_sub(stride).max(start - 1);
            for (i, y) in x.iter().enumerate().take(t).skip(from) {
                calibrated.observe(i as u64, *y);
                if mixes {
                    published.observe(i as u64, *y);
                }
            }
        }
        if let Some(f) = f {
            let c = cfg.calibrated.then(|| calibrated.publish(t as u64, &f, None));
            let p = mixes.then(|| published.publish(t as u64, &f, mixing_baseline(method, ctx).as_ref()));
            for &h in &cfg.horizons {
                let Some(&y) = x.get(t + h - 1) else { continue };
                for (i, q) in [Some(f), c, p].into_iter().enumerate() {
                    if let Some(q) = q {
                        out.variants[i][h - 1].add(y, q.at(h));
                    }
                }
            }
        }
    }
    out
}

/// Every method over every series; rows by method (raw, then calibrated), then horizon.
pub fn evaluate(series: &[Series], methods: &[Box<dyn Forecaster>], cfg: &EvalConfig) -> Vec<MethodScore> {
    let mut rows = Vec::new();
    for m in methods {
        let per_series: Vec<SeriesScores> = series.par_iter().map(|s| walk(m.as_ref(), s, cfg)).collect();
        for &(variant, suffix) in variants(m.as_ref(), cfg) {
            for &h in &cfg.horizons {
                let mut total = Score::default();
                let mut vms = 0;
                for s in &per_series {
                    let sc = &s.variants[variant][h - 1];
                    if sc.points > 0 {
                        vms += 1;
                    }
                    total.merge(sc);
                }
                rows.push(MethodScore {
                    method: format!("{}{suffix}", m.name()),
                    horizon: h,
                    pinball: total.pinball(),
                    mae: total.mae(),
                    coverage: total.coverage(),
                    vms,
                    points: total.points,
                });
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::{Persistence, RollingQuantiles};

    #[test]
    fn persistence_scores_by_hand() {
        // 0, 0.1, 0.2, … 0.5: with a warm-up of 13 nothing is scored (only 6 samples).
        let short = Series { name: "s".into(), values: (0..6).map(|i| i as f32 / 10.0).collect(), start_s: 0 };
        let cfg = EvalConfig { horizons: vec![1], warmup: 13, stride: 1, calibrated: false };
        let rows = evaluate(&[short], &[Box::new(Persistence)], &cfg);
        assert_eq!((rows[0].points, rows[0].vms), (0, 0));

        // A series alternating 0.2 / 0.4 for 20 steps then 0.4 for 2: forecasts at t = 13..=21.
        let mut values: Vec<f32> = (0..20).map(|i| if i % 2 == 0 { 0.2 } else { 0.4 }).collect();
        values.extend([0.4, 0.4]);
        let s = Series { name: "alt".into(), values: values.clone(), start_s: 0 };
        let cfg = EvalConfig { horizons: vec![1], warmup: 13, stride: 1, calibrated: false };
        let rows = evaluate(&[s], &[Box::new(Persistence)], &cfg);
        // Hand computation: at each t the quantiles are x[t−1] plus the type-7 quantiles of the
        // 1-step changes seen so far (all of them: fewer than 36), clamped to 0..1.
        let mut expected = Score::default();
        for t in 13..values.len() {
            let last = values[t - 1];
            let changes: Vec<f32> = (1..t).map(|i| values[i] - values[i - 1]).collect();
            let mut sorted = changes.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let q = |p: f32| {
                let h = (sorted.len() - 1) as f32 * p;
                let lo = h.floor() as usize;
                sorted[lo] + (h - lo as f32) * (sorted[(lo + 1).min(sorted.len() - 1)] - sorted[lo])
            };
            let mut f = [last + q(0.1), last + q(0.5), last + q(0.9)];
            f.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
            f.sort_by(|a, b| a.total_cmp(b));
            expected.add(values[t], f);
        }
        assert_eq!(rows[0].points, 9);
        assert!((rows[0].pinball - expected.pinball()).abs() < 1e-7, "{} vs {}", rows[0].pinball, expected.pinball());
        assert!((rows[0].mae - expected.mae()).abs() < 1e-7);
        assert!((rows[0].coverage - expected.coverage()).abs() < 1e-9);
    }

    #[test]
    fn no_forecast_sees_the_future() {
        // A forecaster that would be perfect if it could read ahead: it can't, so on a series
        // that jumps once, the jump is missed at every horizon that crosses it.
        let mut values = vec![0.1f32; 60];
        values.extend(vec![0.9f32; 10]);
        let s = Series { name: "jump".into(), values, start_s: 0 };
        let cfg = EvalConfig { horizons: vec![1], warmup: 36, stride: 1, calibrated: false };
        let rows = evaluate(&[s], &[Box::new(RollingQuantiles { window: 12 })], &cfg);
        // The first 0.9 (t = 60) is forecast from twelve 0.1s: an error of 0.8 at least once.
        assert!(rows[0].mae > 0.8 / rows[0].points as f64 - 1e-6);
        assert!(rows[0].coverage < 1.0);
    }

    /// A "model" that is confidently wrong on this series: the variant the agent publishes
    /// (`+mix+aci`) moves to the rolling baseline and loses far less; baselines get no mix row.
    #[test]
    fn the_published_variant_leaves_a_model_that_is_wrong_on_this_series() {
        struct Wrong;
        impl Forecaster for Wrong {
            fn name(&self) -> String {
                "wrong".into()
            }
            fn min_history(&self) -> usize {
                1
            }
            fn mixes_online(&self) -> bool {
                true
            }
            fn forecast(&self, _: &SeriesContext<'_>) -> Option<crate::Forecast> {
                Some(crate::Forecast::flat([0.7, 0.8, 0.9]))
            }
        }
        let values: Vec<f32> = (0..600).map(|i| 0.2 + 0.05 * ((i * 37 % 11) as f32 / 10.0 - 0.5)).collect();
        let s = Series { name: "quiet".into(), values, start_s: 0 };
        let cfg = EvalConfig { horizons: vec![6], warmup: 36, stride: 1, calibrated: true };
        let rows = evaluate(&[s], &[Box::new(Wrong), Box::new(RollingQuantiles { window: 36 })], &cfg);
        let names: Vec<&str> = rows.iter().map(|r| r.method.as_str()).collect();
        assert_eq!(names, ["wrong", "wrong+aci", "wrong+mix+aci", "rolling-quantiles-180min", "rolling-quantiles-180min+aci"]);
        let (raw, mixed) = (rows[0].pinball, rows[2].pinball);
        assert!(mixed < 0.2 * raw, "mixing did not leave the wrong model: raw {raw}, published {mixed}");
    }
}
