//! A VM's demand forecast as the decision core reads it: quantiles (p10, p50, p90) of its demand,
//! as a fraction of its capacity, for each of the next [`MAX_HORIZON`] steps of [`STEP_S`]
//! seconds. `presage-forecast` produces them; policies read them.

/// The quantiles every forecast gives, in order.
pub const QUANTILES: [f32; 3] = [0.1, 0.5, 0.9];
/// The furthest horizon, in steps (12 × 5 min = 1 h).
pub const MAX_HORIZON: usize = 12;
/// Seconds per step.
pub const STEP_S: u64 = 300;

/// Steps of history a forecast's [`Forecast::peak`] looks back over: a day.
pub const PEAK_STEPS: usize = 288;

/// Quantiles per horizon: `q[h - 1] = [p10, p50, p90]` for `h` steps ahead, and the series'
/// recent peak. Values are fractions of the VM's capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    pub q: [[f32; 3]; MAX_HORIZON],
    /// The highest value the series reached over its last [`PEAK_STEPS`] steps, never below the
    /// highest p90: how far a burst of this VM may reach, which 80 % intervals do not say (an
    /// on/off VM idle for hours forecasts a low p90 and can still jump to its whole size).
    pub peak: f32,
}

impl Forecast {
    /// The same quantiles at every horizon (the peak at their p90).
    pub fn flat(q: [f32; 3]) -> Forecast {
        Forecast { q: [q; MAX_HORIZON], peak: q[2] }
    }

    /// Sorts each horizon's quantiles (no crossing) and clamps them to `0..=1`; the peak too,
    /// and lifted to the highest p90.
    pub fn tidy(mut self) -> Forecast {
        for q in &mut self.q {
            for v in q.iter_mut() {
                *v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
            }
            q.sort_by(|a, b| a.total_cmp(b));
        }
        let p90 = self.q.iter().fold(0.0f32, |a, q| a.max(q[2]));
        self.peak = if self.peak.is_finite() { self.peak.clamp(0.0, 1.0) } else { 0.0 }.max(p90);
        self
    }

    /// This forecast with its peak taken from `history` (oldest first): the highest of its last
    /// [`PEAK_STEPS`] values.
    pub fn with_peak_of(mut self, history: &[f32]) -> Forecast {
        let recent = &history[history.len().saturating_sub(PEAK_STEPS)..];
        self.peak = recent.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max);
        self.tidy()
    }

    pub fn at(&self, horizon: usize) -> [f32; 3] {
        self.q[horizon - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_orders_and_clamps() {
        let f = Forecast::flat([0.7, -0.2, 1.5]).tidy();
        assert_eq!(f.at(1), [0.0, 0.7, 1.0]);
        assert_eq!(f.at(12), [0.0, 0.7, 1.0]);
        let g = Forecast::flat([f32::NAN, 0.3, 0.2]).tidy();
        assert_eq!(g.at(6), [0.0, 0.2, 0.3]);
        assert_eq!(g.peak, 0.3, "a peak below the highest p90 is lifted to it");
    }

    #[test]
    fn the_peak_is_the_highest_value_of_the_last_day_only() {
        let mut history = vec![0.1f32; 1000];
        history[100] = 0.95; // more than a day ago
        history[900] = 0.6;
        let f = Forecast::flat([0.05, 0.1, 0.2]).with_peak_of(&history);
        assert_eq!(f.peak, 0.6);
        let quiet = Forecast::flat([0.05, 0.1, 0.2]).with_peak_of(&history[..200]);
        assert_eq!(quiet.peak, 0.95);
        let short = Forecast::flat([0.05, 0.1, 0.2]).with_peak_of(&[0.1, f32::NAN]);
        assert_eq!(short.peak, 0.2, "never below the p90");
    }
}
