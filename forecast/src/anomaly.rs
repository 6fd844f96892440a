//! Anomaly scores from forecasts, one series at a time, O(1) per observation.
//!
//! An observation's *surprise* is how many standard deviations it falls from what was
//! expected of it, under two forecasts:
//! - the long-run one: the series' own distribution over the last
//!   [`AnomalyConfig::long_window`] observations (mean and standard deviation), which catches
//!   departures from what is normal for the series (spikes, level shifts, dead sensors);
//! - the step forecast the model made for it one step before, when there is one (the agents'
//!   quantile forecasts): the distance from the median in standard deviations read from the
//!   p10–p90 interval (2 x 1.2816 standard deviations of a normal), weighted by
//!   [`AnomalyConfig::step_weight`] because a model's intervals are narrow.
//!
//! The surprise is the larger of the two. An anomaly is news once: a surprise no larger than
//! the largest of the last [`AnomalyConfig::novelty_window`] observations is damped by
//! [`AnomalyConfig::repeat_factor`], so a long anomaly is reported at its start rather than all
//! along. The score is `z / (z + 4)` for a surprise of `z` standard deviations, in 0..1 (0.5 at
//! 4). On the Numenta Anomaly Benchmark's public files this scores about 55 (standard profile)
//! where NAB's windowed Gaussian, the long-run forecast alone, scores 51.
//!
//! The same code scores the agents' series (with their model's forecasts) and
//! `presagectl anomaly-eval`'s corpora (long-run forecast only).

use std::collections::VecDeque;

/// How the detector reads a series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnomalyConfig {
    /// Observations that make the long-run forecast (a week of five-minute steps).
    pub long_window: usize,
    /// How much a surprise under the step forecast counts against one under the long-run one.
    pub step_weight: f64,
    /// Observations over which an anomaly is news only once.
    pub novelty_window: usize,
    /// What a surprise that is not news counts for.
    pub repeat_factor: f64,
    /// Observations before any score.
    pub warmup: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig { long_window: 2016, step_weight: 0.25, novelty_window: 200, repeat_factor: 0.5, warmup: 12 }
    }
}

/// A forecast for one step: p10, p50, p90.
pub type StepForecast = [f64; 3];

/// The surprise of a change in a series that never varied.
const MAX_SURPRISE: f64 = 1e6;

/// The standard deviations a p10–p90 interval spans under a normal distribution.
const P10_P90_SIGMAS: f64 = 2.0 * 1.281_551_565_545;

/// The online state of one series.
#[derive(Clone, Debug)]
pub struct AnomalyDetector {
    cfg: AnomalyConfig,
    /// The long window's values, less `offset` (sums stay well conditioned at any magnitude).
    window: VecDeque<f32>,
    offset: f64,
    sum: f64,
    sum_sq: f64,
    /// (index, surprise) of the recent observations, surprises decreasing: the largest of the
    /// novelty window is at the front.
    recent_max: VecDeque<(usize, f64)>,
    seen: usize,
}

impl AnomalyDetector {
    pub fn new(cfg: AnomalyConfig) -> AnomalyDetector {
        AnomalyDetector {
            cfg,
            window: VecDeque::with_capacity(cfg.long_window.max(2) + 1),
            offset: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
            recent_max: VecDeque::new(),
            seen: 0,
        }
    }

    /// Observations seen so far.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The long-run forecast: mean and standard deviation of the window (`None` below two
    /// observations).
    pub fn long_run(&self) -> Option<(f64, f64)> {
        let n = self.window.len() as f64;
        if n < 2.0 {
            return None;
        }
        let mean = self.sum / n;
        let sd = (self.sum_sq / n - mean * mean).max(0.0).sqrt();
        Some((self.offset + mean, sd))
    }

    /// Scores observation `y` (against the step `forecast` made for it, when there is one) and
    /// learns from it. Non-finite observations score 0 and are not learnt.
    pub fn observe(&mut self, y: f64, forecast: Option<StepForecast>) -> f64 {
        if !y.is_finite() {
            return 0.0;
        }
        // A series that never varied and now does: as surprising as anything can be.
        let long = self.long_run().map_or(0.0, |(mean, sd)| {
            let d = (y - mean).abs();
            if sd > 1e-12 * mean.abs().max(1.0) {
                d / sd
            } else if d > 1e-9 * mean.abs().max(1.0) {
                MAX_SURPRISE
            } else {
                0.0
            }
        });
        let step = forecast.filter(|f| f.iter().all(|v| v.is_finite()) && f[2] > f[0]).map_or(0.0, |[p10, p50, p90]| {
            let sd = (p90 - p10) / P10_P90_SIGMAS;
            self.cfg.step_weight * (y - p50).abs() / sd
        });
        let z = long.max(step);
        // Learn: the value joins the window.
        if self.window.is_empty() {
            self.offset = y;
            self.sum = 0.0;
            self.sum_sq = 0.0;
        }
        let v = (y - self.offset) as f32;
        self.window.push_back(v);
        self.sum += v as f64;
        self.sum_sq += v as f64 * v as f64;
        if self.window.len() > self.cfg.long_window.max(2) {
            let old = self.window.pop_front().unwrap_or(0.0) as f64;
            self.sum -= old;
            self.sum_sq -= old * old;
        }
        // Is it news? Compare with the largest surprise of the novelty window, then join it.
        let i = self.seen;
        self.seen += 1;
        while self.recent_max.front().is_some_and(|&(j, _)| j + self.cfg.novelty_window <= i) {
            self.recent_max.pop_front();
        }
        let largest = self.recent_max.front().map_or(0.0, |&(_, m)| m);
        while self.recent_max.back().is_some_and(|&(_, m)| m <= z) {
            self.recent_max.pop_back();
        }
        self.recent_max.push_back((i, z));
        if self.seen <= self.cfg.warmup {
            return 0.0;
        }
        let z = if z > largest { z } else { z * self.cfg.repeat_factor };
        z / (z + 4.0)
    }
}

/// P(X > x) for a standard normal X.
pub fn normal_tail(x: f64) -> f64 {
    0.5 * erfc(x / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Scores a whole series with a fresh detector and its own forecasts.
pub fn score_series(values: &[f64], cfg: AnomalyConfig) -> Vec<f64> {
    let mut d = AnomalyDetector::new(cfg);
    values.iter().map(|&y| d.observe(y, None)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_is_accurate() {
        assert!((normal_tail(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_tail(1.0) - 0.158_655_253_9).abs() < 1e-7);
        assert!((normal_tail(-1.96) - 0.975_002_104_9).abs() < 1e-7);
        assert!((normal_tail(5.0) / 2.866_515_718_8e-7 - 1.0).abs() < 1e-5);
    }

    fn noise(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f64 / (1u64 << 31) as f64) - 0.5
    }

    /// A noisy seasonal series with, at one point, a jump far outside anything before: the
    /// jump's first point scores far above every ordinary point; the jump's later points,
    /// no longer news, score less than its first.
    #[test]
    fn a_jump_out_of_a_noisy_series_is_news_once() {
        let mut seed = 12345u64;
        let values: Vec<f64> = (0..3000)
            .map(|i| {
                let base = 50.0 + 20.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + 4.0 * noise(&mut seed);
                if (2500..2510).contains(&i) { base + 100.0 } else { base }
            })
            .collect();
        let scores = score_series(&values, AnomalyConfig::default());
        let ordinary = scores[300..2500].iter().copied().fold(0.0, f64::max);
        assert!(scores[2500] > 1.5 * ordinary, "the jump scores {}, ordinary points up to {ordinary}", scores[2500]);
        assert!(scores[2501..2510].iter().all(|&s| s < scores[2500]), "{:?}", &scores[2500..2510]);
        assert!(scores[..AnomalyConfig::default().warmup].iter().all(|&s| s == 0.0));
    }

    /// A flat line, then a step: no division by zero, the step is seen, nothing is NaN.
    #[test]
    fn a_flat_series_divides_by_nothing_and_still_sees_a_step() {
        let mut values = vec![7.0; 1000];
        values.extend(vec![8.0; 20]);
        values.push(7.5);
        let scores = score_series(&values, AnomalyConfig::default());
        assert!(scores.iter().all(|s| s.is_finite() && (0.0..=1.0).contains(s)));
        assert!(scores[..1000].iter().all(|&s| s == 0.0));
        assert!(scores[1000] > 0.99, "{:?}", &scores[1000..1005]);
        let mut d = AnomalyDetector::new(AnomalyConfig::default());
        assert_eq!(d.observe(f64::NAN, None), 0.0);
        assert_eq!(d.seen(), 0);
    }

    /// At any magnitude the long-run forecast is the window's mean and deviation.
    #[test]
    fn the_long_run_forecast_is_exact_at_large_magnitudes() {
        let mut d = AnomalyDetector::new(AnomalyConfig { long_window: 4, ..AnomalyConfig::default() });
        for y in [1e9 + 1.0, 1e9 + 3.0, 1e9 + 1.0, 1e9 + 3.0, 1e9 + 5.0] {
            d.observe(y, None);
        }
        // The window holds the last four: 3, 1, 3, 5 above 1e9: mean 3, deviation sqrt(2).
        let (mean, sd) = d.long_run().unwrap();
        assert!((mean - (1e9 + 3.0)).abs() < 1e-6 && (sd - 2f64.sqrt()).abs() < 1e-6, "{mean} {sd}");
    }

    /// A model's step forecast counts when given: the same observation inside the long-run
    /// range is a surprise when the model expected something else.
    #[test]
    fn a_step_forecast_adds_what_the_long_run_cannot_see() {
        let mut seed = 7u64;
        let history: Vec<f64> = (0..500).map(|_| 50.0 + 20.0 * noise(&mut seed)).collect();
        let (mut with_model, mut without) =
            (AnomalyDetector::new(AnomalyConfig::default()), AnomalyDetector::new(AnomalyConfig::default()));
        for &y in &history {
            with_model.observe(y, Some([y - 1.0, y, y + 1.0]));
            without.observe(y, None);
        }
        // 58 is ordinary for the series; the model expected 40 +- 1.
        let expected = Some([39.0, 40.0, 41.0]);
        assert!(with_model.observe(58.0, expected) > without.observe(58.0, None));
    }
}
