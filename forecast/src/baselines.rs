//! The baselines every model must beat, each with honest quantiles: a point forecaster's
//! quantiles (its median included) are its point plus the quantiles of its own recent errors at
//! that horizon, so they never cross and a biased point is corrected.
//!
//! - [`Persistence`]: the last value.
//! - [`SeasonalNaive`]: the value one period (a day or a week) before the target.
//! - [`Ewma`]: an exponentially weighted moving average.
//! - [`RollingQuantiles`]: the empirical quantiles of the last N samples (the strong one).

use crate::{Forecast, Forecaster, MAX_HORIZON, QUANTILES, SeriesContext, quantile_of_sorted};

/// Samples of recent errors an interval is built from (3 hours).
pub const ERROR_WINDOW: usize = 36;

/// `point + quantiles of errors` (p10, p50, p90), per horizon; `None` if a horizon has no error
/// sample.
pub(crate) fn with_error_quantiles(points: [f32; MAX_HORIZON], errors: &mut [Vec<f32>; MAX_HORIZON]) -> Option<Forecast> {
    let mut f = Forecast::flat([0.0; 3]);
    for h in 0..MAX_HORIZON {
        let e = &mut errors[h];
        if e.is_empty() {
            return None;
        }
        e.sort_by(|a, b| a.total_cmp(b));
        f.q[h] = QUANTILES.map(|p| points[h] + quantile_of_sorted(e, p));
    }
    Some(f.tidy())
}

/// Per horizon h = 1..=12, the errors `error(i, h)` of the last [`ERROR_WINDOW`] outcomes
/// (indices `i < n`, at least `first(h)`).
pub(crate) fn recent_errors(n: usize, first: impl Fn(usize) -> usize, error: impl Fn(usize, usize) -> f32) -> [Vec<f32>; MAX_HORIZON] {
    std::array::from_fn(|k| {
        let h = k + 1;
        (n.saturating_sub(ERROR_WINDOW).max(first(h))..n).map(|i| error(i, h)).collect()
    })
}

/// Tomorrow is like today: the last value, with the spread of recent `h`-step changes.
#[derive(Clone, Copy, Debug)]
pub struct Persistence;

impl Forecaster for Persistence {
    fn name(&self) -> String {
        "persistence".into()
    }

    fn min_history(&self) -> usize {
        MAX_HORIZON + 1
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        let x = ctx.history;
        let n = x.len();
        if n < self.min_history() {
            return None;
        }
        let last = x[n - 1];
        let mut errors = recent_errors(n, |h| h, |i, h| x[i] - x[i - h]);
        with_error_quantiles([last; MAX_HORIZON], &mut errors)
    }
}

/// The value one `period` before the target step, with the spread of recent seasonal errors.
#[derive(Clone, Copy, Debug)]
pub struct SeasonalNaive {
    pub period: usize,
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> String {
        match self.period {
            crate::DAY => "seasonal-naive-day".into(),
            crate::WEEK => "seasonal-naive-week".into(),
            p => format!("seasonal-naive-{p}"),
        }
    }

    fn min_history(&self) -> usize {
        self.period + ERROR_WINDOW
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        let x = ctx.history;
        let n = x.len();
        let p = self.period;
        if n < self.min_history() {
            return None;
        }
        let mut points = [0.0; MAX_HORIZON];
        for (h, point) in points.iter_mut().enumerate() {
            // Target index n + h; one period earlier: n + h − p (< n since p > MAX_HORIZON).
            *point = x[n + h - p];
        }
        let seasonal: Vec<f32> = (n - ERROR_WINDOW..n).map(|i| x[i] - x[i - p]).collect();
        let mut errors: [Vec<f32>; MAX_HORIZON] = std::array::from_fn(|_| seasonal.clone());
        with_error_quantiles(points, &mut errors)
    }
}

/// An exponentially weighted moving average with smoothing `alpha`; the interval comes from
/// how far the value `h` steps after each recent level fell from it.
#[derive(Clone, Copy, Debug)]
pub struct Ewma {
    pub alpha: f32,
}

impl Forecaster for Ewma {
    fn name(&self) -> String {
        format!("ewma-{}", self.alpha)
    }

    fn min_history(&self) -> usize {
        MAX_HORIZON + 1
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        let x = ctx.history;
        let n = x.len();
        if n < self.min_history() {
            return None;
        }
        // Levels over the last ERROR_WINDOW + MAX_HORIZON samples, warmed up on a day at most.
        let start = n.saturating_sub(crate::DAY + ERROR_WINDOW + MAX_HORIZON);
        let mut level = x[start];
        let mut levels = Vec::with_capacity(n - start);
        for &v in &x[start..] {
            level += self.alpha * (v - level);
            levels.push(level);
        }
        // Level known at index i − h, outcome at i.
        let mut errors = recent_errors(n, |h| start + h, |i, h| x[i] - levels[i - h - start]);
        with_error_quantiles([level; MAX_HORIZON], &mut errors)
    }
}

/// The empirical quantiles of the last `window` samples, the same at every horizon.
#[derive(Clone, Copy, Debug)]
pub struct RollingQuantiles {
    pub window: usize,
}

impl Forecaster for RollingQuantiles {
    fn name(&self) -> String {
        format!("rolling-quantiles-{}min", self.window * 5)
    }

    fn min_history(&self) -> usize {
        self.window
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        let x = ctx.history;
        if x.len() < self.window || self.window == 0 {
            return None;
        }
        let mut w = x[x.len() - self.window..].to_vec();
        w.sort_by(|a, b| a.total_cmp(b));
        Some(Forecast::flat(QUANTILES.map(|p| quantile_of_sorted(&w, p))).tidy())
    }
}

/// Every baseline, as `forecast-eval` runs them.
pub fn all() -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(Persistence),
        Box::new(SeasonalNaive { period: crate::DAY }),
        Box::new(SeasonalNaive { period: crate::WEEK }),
        Box::new(Ewma { alpha: 0.3 }),
        Box::new(RollingQuantiles { window: 12 }),
        Box::new(RollingQuantiles { window: 24 }),
        Box::new(RollingQuantiles { window: 36 }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(history: &[f32]) -> SeriesContext<'_> {
        SeriesContext { history, next_time_s: 0 }
    }

    #[test]
    fn persistence_on_a_ramp_adds_the_ramps_changes() {
        // 0.00, 0.01, …: every h-step change is exactly 0.01·h, so all quantiles are last + 0.01·h.
        let x: Vec<f32> = (0..50).map(|i| i as f32 / 100.0).collect();
        let f = Persistence.forecast(&ctx(&x)).unwrap();
        for h in 1..=MAX_HORIZON {
            let [lo, mid, hi] = f.at(h);
            let expected = 0.49 + 0.01 * h as f32;
            for v in [lo, mid, hi] {
                assert!((v - expected).abs() < 1e-5, "h={h}: {v} != {expected}");
            }
        }
        assert!(Persistence.forecast(&ctx(&x[..5])).is_none());
    }

    #[test]
    fn seasonal_naive_repeats_the_period() {
        let period = 20;
        let x: Vec<f32> = (0..100).map(|i| if i % period < 10 { 0.2 } else { 0.6 }).collect();
        let f = SeasonalNaive { period }.forecast(&ctx(&x)).unwrap();
        // The next step is index 100: 100 % 20 = 0 -> 0.2; index 110 -> 0.6. Exact seasonality:
        // zero-width intervals.
        assert_eq!(f.at(1), [0.2, 0.2, 0.2]);
        assert_eq!(f.at(11), [0.6, 0.6, 0.6]);
    }

    #[test]
    fn rolling_quantiles_of_the_window() {
        let x: Vec<f32> = (0..=10).map(|i| i as f32 / 10.0).collect();
        let f = RollingQuantiles { window: 11 }.forecast(&ctx(&x)).unwrap();
        let [lo, mid, hi] = f.at(7);
        assert!((lo - 0.1).abs() < 1e-6 && (mid - 0.5).abs() < 1e-6 && (hi - 0.9).abs() < 1e-6);
    }

    #[test]
    fn ewma_of_a_constant_is_the_constant() {
        let x = vec![0.37f32; 80];
        let f = Ewma { alpha: 0.3 }.forecast(&ctx(&x)).unwrap();
        for h in 1..=MAX_HORIZON {
            for v in f.at(h) {
                assert!((v - 0.37).abs() < 1e-6);
            }
        }
    }
}
