//! Forecasts of a VM's demand as quantiles (p10, p50, p90) for the next 1 to 12 five-minute
//! steps, from its recent history: the [`Forecaster`] interface, the baselines every model is
//! measured against ([`baselines`]), what is learnt online per series ([`online`]: mixing with a
//! baseline, and interval calibration, [`calibration`]), the metrics
//! ([`metrics`]) and the walk-forward evaluation ([`eval`]) that `presagectl forecast-eval` runs.
//!
//! Shared by the agent (which forecasts its VMs every cycle) and presagectl, so the figures an
//! operator measures come from the code that runs. Pure: no I/O, no clock.

pub mod anomaly;
pub mod baselines;
pub mod calibration;
pub mod eval;
pub mod features;
pub mod fleet;
pub mod gbt;
pub mod metrics;
pub mod online;
pub mod onnx;
pub mod shortfall;

pub use presage_decide::demand::{Forecast, MAX_HORIZON, QUANTILES, STEP_S};

/// Steps per day and per week.
pub const DAY: usize = 288;
pub const WEEK: usize = 7 * DAY;

/// What a forecaster sees of one series.
#[derive(Clone, Copy, Debug)]
pub struct SeriesContext<'a> {
    /// Samples, oldest first; the last one was taken one step before the first forecast step.
    pub history: &'a [f32],
    /// When the first forecast step falls, seconds since the Unix epoch (or since midnight of
    /// day 0 for traces without dates); used for time-of-day and day-of-week features.
    pub next_time_s: u64,
}

/// A demand forecaster.
pub trait Forecaster: Send + Sync {
    fn name(&self) -> String;

    /// Samples of history it needs; with fewer it cannot forecast.
    fn min_history(&self) -> usize;

    /// Quantiles for horizons 1..=12, or `None` with too little history.
    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast>;

    /// Whether its forecasts are mixed online, per series, with [`online::MIX_BASELINE`] (a
    /// model trained on other series is; a baseline is not).
    fn mixes_online(&self) -> bool {
        false
    }

    /// Many series at once (a model batches them); the default forecasts one by one.
    fn forecast_batch(&self, ctxs: &[SeriesContext<'_>]) -> Vec<Option<Forecast>> {
        ctxs.iter().map(|c| self.forecast(c)).collect()
    }
}

/// The `p`-quantile of `values` with linear interpolation between order statistics (the
/// "type 7" rule, numpy's default). `values` is reordered. `None` when empty.
pub fn empirical_quantile(values: &mut [f32], p: f32) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    Some(quantile_of_sorted(values, p))
}

/// The `p`-quantile of sorted, non-empty `sorted` (type 7).
pub fn quantile_of_sorted(sorted: &[f32], p: f32) -> f32 {
    let h = (sorted.len() - 1) as f32 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f32) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type7_quantiles_by_hand() {
        let mut v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(empirical_quantile(&mut v, 0.5), Some(3.0));
        // h = 4 × 0.1 = 0.4: 1 + 0.4 × (2 − 1)
        assert!((quantile_of_sorted(&v, 0.1) - 1.4).abs() < 1e-6);
        assert!((quantile_of_sorted(&v, 0.9) - 4.6).abs() < 1e-6);
        assert_eq!(empirical_quantile(&mut [], 0.5), None);
    }
}
