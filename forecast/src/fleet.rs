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

/// A forecaster with one online learner per series, keyed by `K`.
pub struct FleetForecaster<K> {
    model: Box<dyn Forecaster>,
    status: String,
    learners: HashMap<K, SeriesLearner>,
}

impl<K: Hash + Eq + Clone> FleetForecaster<K> {
    pub fn new(model: Box<dyn Forecaster>, status: String) -> FleetForecaster<K> {
        FleetForecaster { model, status, learners: HashMap::new() }
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

    /// The outcome of `step` for series `key` arrived.
    pub fn observe(&mut self, key: &K, step: u64, y: f32) {
        if let Some(l) = self.learners.get_mut(key) {
            l.observe(step, y);
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
                let learner = self.learners.entry(r.key.clone()).or_default();
                Some(learner.publish(r.first_step, &f, baseline.as_ref()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
