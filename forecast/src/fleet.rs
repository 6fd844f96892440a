//! Forecasting a whole fleet of series at once, as the agent does every cycle and the simulator
//! does every step: one model (an ONNX model, or a baseline when none is usable, with the reason),
//! one batch for all series, and one [`SeriesLearner`] per series (a model's forecasts mixed with
//! the rolling baseline, then calibrated). The agent and the simulator
//! both forecast through this type, so the simulator's decisions stand on the agent's forecasts.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use crate::baselines::RollingQuantiles;
use crate::online::{LearntState, SeriesLearner, mixing_baseline};
use crate::onnx::OnnxForecaster;
use crate::{Forecast, Forecaster, SeriesContext};

/// The forecaster every agent falls back to: rolling empirical quantiles of the last 2 hours.
pub fn fallback_forecaster() -> Box<dyn Forecaster> {
    Box::new(RollingQuantiles { window: 24 })
}

/// Loads the model at `path`, or the fallback when there is no path or the model is unusable.
/// The status names the forecaster in use and, for a fallback, why.
pub fn load_or_fallback(path: Option<&Path>) -> (Box<dyn Forecaster>, String) {
    match path {
        None => {
            let f = fallback_forecaster();
            let s = format!("{} (baseline: no model configured)", f.name());
            (f, s)
        }
        Some(path) => match OnnxForecaster::load(path) {
            Ok(m) => {
                let s = m.name();
                (Box::new(m), s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "forecast model unusable; forecasting with a baseline");
                let f = fallback_forecaster();
                let s = format!("{} (baseline: {e})", f.name());
                (f, s)
            }
        },
    }
}

/// One series to forecast this round.
pub struct SeriesRequest<'a, K> {
    pub key: K,
    pub ctx: SeriesContext<'a>,
    /// The step index of the first forecast step (calibration matches outcomes by step).
    pub first_step: u64,
}

/// How the model is doing across the fleet, on its raw one-step-ahead forecasts (before mixing
/// and calibration), against the mixing baseline on the same outcomes: exponentially weighted
/// over about the last [`HEALTH_WINDOW`] outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelHealth {
    /// Outcomes judged.
    pub outcomes: u64,
    /// Share of outcomes within the model's p10–p90 (0.8 when calibrated).
    pub coverage: f64,
    /// Mean pinball loss (p10, p50, p90) of the model's and of the baseline's forecasts.
    pub model_loss: f64,
    pub baseline_loss: f64,
}

/// Outcomes the health is weighted over.
pub const HEALTH_WINDOW: f64 = 2000.0;
/// A model is judged once this many outcomes are in.
pub const HEALTH_MIN_OUTCOMES: u64 = 500;
/// Below this p10–p90 coverage, or above this multiple of the baseline's loss, the model has
/// drifted and the fleet forecasts with the baseline from then on.
pub const DRIFT_COVERAGE: f64 = 0.5;
pub const DRIFT_LOSS_RATIO: f64 = 1.5;

impl ModelHealth {
    fn observe(&mut self, model: [f32; 3], baseline: [f32; 3], y: f32) {
        let loss =
            |q: [f32; 3]| crate::QUANTILES.iter().zip(q).map(|(&tau, q)| crate::metrics::pinball(y, q, tau) as f64).sum::<f64>() / 3.0;
        let covered = if model[0] <= y && y <= model[2] { 1.0 } else { 0.0 };
        self.outcomes += 1;
        let a = (1.0 / self.outcomes as f64).max(1.0 / HEALTH_WINDOW);
        self.coverage += a * (covered - self.coverage);
        self.model_loss += a * (loss(model) - self.model_loss);
        self.baseline_loss += a * (loss(baseline) - self.baseline_loss);
    }

    /// Why the model has drifted, if it has.
    pub fn drift(&self) -> Option<String> {
        if self.outcomes < HEALTH_MIN_OUTCOMES {
            return None;
        }
        let ratio = if self.baseline_loss > 0.0 { self.model_loss / self.baseline_loss } else { 1.0 };
        (self.coverage < DRIFT_COVERAGE || ratio > DRIFT_LOSS_RATIO).then(|| {
            format!(
                "p10-p90 coverage {:.0} % and pinball loss {ratio:.2} x the baseline's over the last {} outcomes (limits: {:.0} %, {DRIFT_LOSS_RATIO} x)",
                100.0 * self.coverage,
                self.outcomes.min(HEALTH_WINDOW as u64),
                100.0 * DRIFT_COVERAGE
            )
        })
    }
}

/// A forecaster with one online learner per series, keyed by `K`.
pub struct FleetForecaster<K> {
    model: Box<dyn Forecaster>,
    status: String,
    learners: HashMap<K, SeriesLearner>,
    /// Per series, the model's and the baseline's raw forecast for the step awaiting its
    /// outcome (first step, p10/p50/p90 each), while the model is still on trial.
    pending: HashMap<K, (u64, [f32; 3], [f32; 3])>,
    health: ModelHealth,
    /// Set once the model drifted: the fleet forecasts with the fallback from then on.
    drifted: bool,
}

impl<K: Hash + Eq + Clone> FleetForecaster<K> {
    pub fn new(model: Box<dyn Forecaster>, status: String) -> FleetForecaster<K> {
        FleetForecaster { model, status, learners: HashMap::new(), pending: HashMap::new(), health: ModelHealth::default(), drifted: false }
    }

    /// The model at `path` (see [`load_or_fallback`]).
    pub fn load(path: Option<&Path>) -> FleetForecaster<K> {
        let (model, status) = load_or_fallback(path);
        FleetForecaster::new(model, status)
    }

    pub fn name(&self) -> String {
        self.model.name()
    }

    /// Which forecaster runs, and why when it is a fallback.
    pub fn status(&self) -> &str {
        &self.status
    }

    pub fn min_history(&self) -> usize {
        self.model.min_history()
    }

    /// How the model is doing across the fleet (zero outcomes for a baseline, which is not
    /// judged).
    pub fn health(&self) -> ModelHealth {
        self.health
    }

    /// The outcome of `step` for series `key` arrived.
    pub fn observe(&mut self, key: &K, step: u64, y: f32) {
        if let Some(l) = self.learners.get_mut(key) {
            l.observe(step, y);
        }
        if let Some(&(first, model, baseline)) = self.pending.get(key)
            && first == step
            && y.is_finite()
        {
            self.pending.remove(key);
            self.health.observe(model, baseline, y);
            if !self.drifted
                && let Some(why) = self.health.drift()
            {
                let fallback = fallback_forecaster();
                tracing::warn!(model = %self.model.name(), reason = %why, "the forecast model drifted; forecasting with the baseline");
                self.status = format!("{} (baseline: model {} drifted: {why})", fallback.name(), self.model.name());
                self.model = fallback;
                self.drifted = true;
                self.pending.clear();
            }
        }
    }

    /// What each series has learnt (calibration, mixing weights), to save across restarts.
    pub fn learnt(&self) -> impl Iterator<Item = (&K, LearntState)> {
        self.learners.iter().map(|(k, l)| (k, l.state()))
    }

    /// Resumes series `key` from saved state (before its first forecast).
    pub fn resume(&mut self, key: K, state: &LearntState) {
        self.learners.insert(key, SeriesLearner::resume(state));
    }

    /// Forgets every series for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.learners.retain(|k, _| keep(k));
        self.pending.retain(|k, _| keep(k));
    }

    /// The forecasts to publish for every request, in order (a model's mixed with the baseline,
    /// all calibrated; `None` with too little history).
    pub fn forecast(&mut self, requests: &[SeriesRequest<'_, K>]) -> Vec<Option<Forecast>> {
        let ctxs: Vec<SeriesContext<'_>> = requests.iter().map(|r| r.ctx).collect();
        let raw = self.model.forecast_batch(&ctxs);
        requests
            .iter()
            .zip(raw)
            .map(|(r, f)| {
                let f = f?;
                let baseline = mixing_baseline(self.model.as_ref(), &r.ctx);
                // A model (one mixed with the baseline) stays on trial: its raw one-step
                // forecast and the baseline's wait for the outcome.
                if let Some(b) = &baseline
                    && !self.drifted
                {
                    self.pending.insert(r.key.clone(), (r.first_step, f.at(1), b.at(1)));
                }
                let learner = self.learners.entry(r.key.clone()).or_default();
                Some(learner.publish(r.first_step, &f, baseline.as_ref()).with_peak_of(r.ctx.history))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose forecasts sit far above what happens: once enough outcomes are in, the
    /// fleet drops it for the baseline and says why; a model as good as the baseline stays.
    struct Fixed {
        band: [f32; 3],
    }

    impl Forecaster for Fixed {
        fn name(&self) -> String {
            format!("fixed-{}", self.band[1])
        }
        fn min_history(&self) -> usize {
            24
        }
        fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
            (ctx.history.len() >= 24).then(|| Forecast::flat(self.band))
        }
        fn mixes_online(&self) -> bool {
            true
        }
    }

    fn run(band: [f32; 3]) -> FleetForecaster<u32> {
        let mut f: FleetForecaster<u32> = FleetForecaster::new(Box::new(Fixed { band }), format!("fixed-{}", band[1]));
        let history: Vec<f32> = (0..48).map(|i| 0.2 + 0.02 * (i % 5) as f32).collect();
        for step in 0..(HEALTH_MIN_OUTCOMES / 4 + 50) {
            let reqs: Vec<SeriesRequest<'_, u32>> = (0..4)
                .map(|k| SeriesRequest { key: k, ctx: SeriesContext { history: &history, next_time_s: 0 }, first_step: step })
                .collect();
            f.forecast(&reqs);
            for k in 0..4 {
                f.observe(&k, step, 0.2 + 0.02 * ((step + k as u64) % 5) as f32);
            }
        }
        f
    }

    #[test]
    fn a_model_that_drifts_falls_back_to_the_baseline_with_the_reason() {
        let bad = run([0.8, 0.9, 0.95]);
        assert!(bad.status().contains("drifted") && bad.status().contains("coverage 0 %"), "{}", bad.status());
        assert_eq!(bad.name(), fallback_forecaster().name());
        assert!(bad.health().outcomes >= HEALTH_MIN_OUTCOMES);
        let good = run([0.19, 0.24, 0.29]);
        assert!(!good.status().contains("drifted"), "{} {:?}", good.status(), good.health());
        assert_eq!(good.name(), "fixed-0.24");
        assert!(good.health().coverage > 0.7, "{:?}", good.health());
    }

    #[test]
    fn calibration_is_kept_per_series_and_forgotten_with_it() {
        let mut f: FleetForecaster<u32> = FleetForecaster::load(None);
        assert!(f.status().contains("no model configured"));
        let flat = vec![0.5f32; 40];
        let noisy: Vec<f32> = (0..40).map(|i| if i % 2 == 0 { 0.2 } else { 0.8 }).collect();
        let width = |f: &mut FleetForecaster<u32>, step: u64| {
            let reqs = [
                SeriesRequest { key: 1, ctx: SeriesContext { history: &flat, next_time_s: 0 }, first_step: step },
                SeriesRequest { key: 2, ctx: SeriesContext { history: &noisy, next_time_s: 0 }, first_step: step },
            ];
            f.forecast(&reqs).into_iter().map(|q| q.map(|q| q.at(1)[2] - q.at(1)[0]).unwrap()).collect::<Vec<_>>()
        };
        let before = width(&mut f, 100);
        // Series 1 misses every time, series 2 never: 1 widens, 2 narrows.
        for step in 100..140 {
            f.observe(&1, step, 0.99);
            f.observe(&2, step, 0.5);
            width(&mut f, step + 1);
        }
        let after = width(&mut f, 141);
        assert!(after[0] > before[0] && after[1] < before[1], "{before:?} -> {after:?}");
        f.retain(|k| *k == 2);
        assert_eq!(width(&mut f, 142)[0], before[0]);
    }

    #[test]
    fn a_published_forecast_carries_the_series_peak_of_the_last_day() {
        let mut f: FleetForecaster<u32> = FleetForecaster::new(Box::new(Fixed { band: [0.1, 0.2, 0.3] }), "fixed".into());
        // An on/off series: quiet for the last 20 hours after a burst to 95 %; an older burst
        // to 100 % lies beyond the day.
        let mut history = vec![0.15f32; 400];
        history[50] = 1.0;
        history[400 - 240] = 0.95;
        let quiet = vec![0.15f32; 400];
        let reqs = [
            SeriesRequest { key: 1, ctx: SeriesContext { history: &history, next_time_s: 0 }, first_step: 400 },
            SeriesRequest { key: 2, ctx: SeriesContext { history: &quiet, next_time_s: 0 }, first_step: 400 },
        ];
        let out = f.forecast(&reqs);
        let (bursty, steady) = (out[0].unwrap(), out[1].unwrap());
        assert_eq!(bursty.peak, 0.95);
        assert_eq!(bursty.q, steady.q, "the same quantiles");
        // A steady series' peak is its highest p90.
        assert_eq!(steady.peak, steady.q.iter().map(|q| q[2]).fold(0.0, f32::max));
    }
}
