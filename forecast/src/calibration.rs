//! Online interval calibration: adaptive conformal correction per series and horizon.
//!
//! A forecaster's p10–p90 interval should hold the outcome 80 % of the time, on every workload.
//! Each horizon keeps a scale on the interval's two half-widths (around the median). When an
//! outcome arrives for a forecast made `h` steps earlier, the scale grows if the interval missed
//! and shrinks if it held: `log s += γ (miss − 0.2)`, the update of adaptive conformal inference
//! (Gibbs & Candès, 2021) applied to a width scale. In the long run the misses settle at 20 %
//! whatever the forecaster's own calibration.

use std::collections::VecDeque;

use crate::{Forecast, MAX_HORIZON};

/// The nominal share of outcomes outside [p10, p90].
pub const TARGET_MISS: f32 = 0.2;
/// Step size of the scale update (on the log scale).
pub const DEFAULT_GAMMA: f32 = 0.05;
/// Smallest half-width the scale acts on, so a flat raw interval can still widen.
pub const MIN_HALF_WIDTH: f32 = 0.002;
/// Bounds on the scale, so one burst cannot blow the interval up for good.
const MAX_LOG_SCALE: f32 = 4.0;

/// What was published for steps whose outcome has not arrived yet: per forecast step, its horizon
/// and `T`. A forecast for a first step already published replaces the earlier one (an agent
/// forecasts every sampling cycle, several times per step), so each outcome is scored once,
/// against the last forecast published for it at each horizon.
#[derive(Clone, Debug)]
pub struct AwaitingOutcome<T> {
    items: VecDeque<(u64, usize, T)>,
}

impl<T> Default for AwaitingOutcome<T> {
    fn default() -> Self {
        AwaitingOutcome { items: VecDeque::new() }
    }
}

impl<T: Copy> AwaitingOutcome<T> {
    /// Forgets what was published for the forecast starting at `first_step` (before it is
    /// published again).
    pub fn replace(&mut self, first_step: u64) {
        self.items.retain(|&(due, h, _)| due + 1 != first_step + h as u64);
    }

    /// Remembers `item`, published for horizon `h` of the forecast starting at `first_step`.
    pub fn push(&mut self, first_step: u64, h: usize, item: T) {
        self.items.push_back((first_step + h as u64 - 1, h, item));
    }

    /// The outcome of `step` arrived: `score(h, item)` for everything published for it; what was
    /// due at or before `step` is dropped.
    pub fn settle(&mut self, step: u64, mut score: impl FnMut(usize, T)) {
        self.items.retain(|&(due, h, item)| {
            if due == step {
                score(h, item);
            }
            due > step
        });
    }
}

/// Calibration state of one series.
#[derive(Clone, Debug)]
pub struct OnlineCalibrator {
    gamma: f32,
    log_scale: [f32; MAX_HORIZON],
    /// The intervals published, awaiting their outcomes.
    pending: AwaitingOutcome<[f32; 3]>,
}

impl Default for OnlineCalibrator {
    fn default() -> Self {
        OnlineCalibrator::new(DEFAULT_GAMMA)
    }
}

impl OnlineCalibrator {
    pub fn new(gamma: f32) -> OnlineCalibrator {
        OnlineCalibrator { gamma, log_scale: [0.0; MAX_HORIZON], pending: AwaitingOutcome::default() }
    }

    /// The learnt state worth keeping across restarts: the log width scale per horizon.
    /// (Intervals published but not yet scored are not kept: they belong to forecasts made
    /// before the restart.)
    pub fn log_scales(&self) -> [f32; MAX_HORIZON] {
        self.log_scale
    }

    /// A calibrator that resumes from saved [`log_scales`](Self::log_scales); values out of
    /// range (a damaged store) are clamped, non-finite ones reset to 0.
    pub fn resume(gamma: f32, log_scales: [f32; MAX_HORIZON]) -> OnlineCalibrator {
        let log_scale = log_scales.map(|v| if v.is_finite() { v.clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE) } else { 0.0 });
        OnlineCalibrator { gamma, log_scale, pending: AwaitingOutcome::default() }
    }

    /// The current width scale at `horizon`.
    pub fn scale(&self, horizon: usize) -> f32 {
        self.log_scale[horizon - 1].exp()
    }

    /// Applies the current scales to `raw`, made for the steps `first_step`, `first_step + 1`, …,
    /// and remembers the intervals it published so that [`observe`](Self::observe) can score them.
    /// A forecast for the same `first_step` as an earlier one replaces it ([`AwaitingOutcome`]).
    pub fn calibrate(&mut self, first_step: u64, raw: &Forecast) -> Forecast {
        self.pending.replace(first_step);
        let mut out = *raw;
        for h in 1..=MAX_HORIZON {
            let [lo, mid, hi] = raw.at(h);
            let s = self.scale(h);
            // Demand is a fraction of capacity: the widened interval stays within 0..=1.
            let q = [(mid - s * (mid - lo).max(MIN_HALF_WIDTH)).max(0.0), mid, (mid + s * (hi - mid).max(MIN_HALF_WIDTH)).min(1.0)];
            out.q[h - 1] = q;
            self.pending.push(first_step, h, q);
        }
        out
    }

    /// The sample of `step` arrived: every published interval for it moves its horizon's scale.
    pub fn observe(&mut self, step: u64, y: f32) {
        let (gamma, scales) = (self.gamma, &mut self.log_scale);
        self.pending.settle(step, |h, q| {
            let miss = if y < q[0] || y > q[2] { 1.0 } else { 0.0 };
            let s = &mut scales[h - 1];
            *s = (*s + gamma * (miss - TARGET_MISS)).clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Score;

    /// A deterministic uniform generator.
    fn lcg(seed: u64) -> impl FnMut() -> f32 {
        let mut x = seed;
        move || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// Outcomes 0.5 + noise uniform in ±0.2; a forecaster that claims [0.45, 0.55] (far too
    /// narrow: 25 % coverage) or [0.1, 0.9] (far too wide: 100 %). Calibrated, both land on 80 %.
    #[test]
    fn coverage_settles_at_the_nominal_80_percent() {
        for (lo, hi) in [(0.45f32, 0.55f32), (0.1, 0.9)] {
            let mut next = lcg(7);
            let mut cal = OnlineCalibrator::default();
            let raw = Forecast::flat([lo, 0.5, hi]);
            let mut score = Score::default();
            let mut published: VecDeque<Forecast> = VecDeque::new();
            for step in 0..40_000u64 {
                let y = 0.5 + (next() - 0.5) * 0.4;
                // The forecast made at step − 1 for this step (horizon 1).
                if let Some(f) = published.pop_front()
                    && step > 5_000
                {
                    score.add(y, f.at(1));
                }
                cal.observe(step, y);
                published.push_back(cal.calibrate(step + 1, &raw));
            }
            let c = score.coverage();
            assert!((c - 0.8).abs() < 0.02, "raw [{lo}, {hi}] -> coverage {c}");
        }
    }

    #[test]
    fn calibrated_intervals_stay_within_zero_and_one() {
        let mut cal = OnlineCalibrator::default();
        for (i, q) in [[0.0f32, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.001, 1.0]].into_iter().enumerate() {
            let f = cal.calibrate(i as u64, &Forecast::flat(q));
            for h in 1..=MAX_HORIZON {
                let [lo, mid, hi] = f.at(h);
                assert!((0.0..=1.0).contains(&lo) && lo <= mid && mid <= hi && hi <= 1.0, "{q:?} -> {:?}", f.at(h));
            }
        }
    }

    #[test]
    fn outcomes_only_move_the_horizon_they_belong_to() {
        let mut cal = OnlineCalibrator::new(0.1);
        let raw = Forecast::flat([0.4, 0.5, 0.6]);
        cal.calibrate(10, &raw);
        // Step 12 is horizon 3 of the forecast starting at step 10; a miss widens only it.
        cal.observe(12, 0.95);
        assert!(cal.scale(3) > 1.0);
        assert_eq!(cal.scale(1), 1.0);
        assert_eq!(cal.scale(2), 1.0);
    }
}
