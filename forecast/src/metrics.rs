//! Forecast scores: pinball loss averaged over the three quantiles, absolute error of the
//! median, and coverage of the p10–p90 interval.

use crate::QUANTILES;

/// Pinball (quantile) loss of predicting `q` for quantile level `tau` when `y` happened.
pub fn pinball(y: f32, q: f32, tau: f32) -> f32 {
    let d = y - q;
    if d >= 0.0 { tau * d } else { (tau - 1.0) * d }
}

/// Running totals for one method at one horizon.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    pinball_sum: f64,
    abs_error_sum: f64,
    covered: u64,
    pub points: u64,
}

impl Score {
    /// Adds one outcome `y` against the forecast quantiles `q = [p10, p50, p90]`.
    pub fn add(&mut self, y: f32, q: [f32; 3]) {
        let mean_pinball: f32 = q.iter().zip(QUANTILES).map(|(q, tau)| pinball(y, *q, tau)).sum::<f32>() / 3.0;
        self.pinball_sum += mean_pinball as f64;
        self.abs_error_sum += (y - q[1]).abs() as f64;
        if y >= q[0] && y <= q[2] {
            self.covered += 1;
        }
        self.points += 1;
    }

    pub fn merge(&mut self, other: &Score) {
        self.pinball_sum += other.pinball_sum;
        self.abs_error_sum += other.abs_error_sum;
        self.covered += other.covered;
        self.points += other.points;
    }

    /// Mean pinball loss over the three quantiles.
    pub fn pinball(&self) -> f64 {
        self.mean(self.pinball_sum)
    }

    /// Mean absolute error of the median.
    pub fn mae(&self) -> f64 {
        self.mean(self.abs_error_sum)
    }

    /// Share of outcomes inside [p10, p90].
    pub fn coverage(&self) -> f64 {
        self.mean(self.covered as f64)
    }

    fn mean(&self, sum: f64) -> f64 {
        if self.points == 0 { f64::NAN } else { sum / self.points as f64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinball_by_hand() {
        // Under-forecast by 0.2 at the 90th percentile costs 0.9 × 0.2.
        assert!((pinball(0.5, 0.3, 0.9) - 0.18).abs() < 1e-6);
        // Over-forecast by 0.2 at the 90th percentile costs 0.1 × 0.2.
        assert!((pinball(0.3, 0.5, 0.9) - 0.02).abs() < 1e-6);
    }

    #[test]
    fn score_by_hand() {
        let mut s = Score::default();
        // y = 0.5 inside [0.2, 0.6]: losses 0.1·0.3, 0.5·0.1, 0.9·... (0.5 − 0.6 < 0) 0.1·0.1
        s.add(0.5, [0.2, 0.4, 0.6]);
        // y = 0.9 above [0.2, 0.8]: losses 0.1·0.7, 0.5·0.4, 0.9·0.1
        s.add(0.9, [0.2, 0.5, 0.8]);
        let first = (0.03 + 0.05 + 0.01) / 3.0;
        let second = (0.07 + 0.2 + 0.09) / 3.0;
        assert!((s.pinball() - (first + second) / 2.0).abs() < 1e-6, "{}", s.pinball());
        assert!((s.mae() - (0.1 + 0.4) / 2.0).abs() < 1e-6);
        assert_eq!(s.coverage(), 0.5);
        assert_eq!(s.points, 2);
    }
}
