//! The small statistics the classic overload detectors use, computed the way CloudSim's
//! `MathUtil` (Apache Commons Math underneath) computes them: the median by the
//! `(n + 1) p` percentile rule, the IQR by rounded quartile positions, ordinary least squares.

/// Percentile by Commons Math's default estimator: position `p (n + 1)`, linear between
/// neighbours, clamped to the ends. `sorted` must be sorted ascending and non-empty.
fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 1 {
        return sorted[0];
    }
    let pos = p * (n as f64 + 1.0) / 100.0;
    let fpos = pos.floor();
    let d = pos - fpos;
    let i = fpos as usize;
    if pos < 1.0 {
        return sorted[0];
    }
    if pos >= n as f64 {
        return sorted[n - 1];
    }
    let lower = sorted[i - 1];
    let upper = sorted[i];
    lower + d * (upper - lower)
}

fn sorted(data: &[f64]) -> Vec<f64> {
    let mut v = data.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Median; 0 for an empty slice.
pub fn median(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    percentile_sorted(&sorted(data), 50.0)
}

/// Median absolute deviation from the median.
pub fn mad(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let m = median(data);
    let dev: Vec<f64> = data.iter().map(|x| (m - x).abs()).collect();
    median(&dev)
}

/// Interquartile range with quartile positions `round(q (n + 1)) - 1` (CloudSim's rule).
pub fn iqr(data: &[f64]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let s = sorted(data);
    let n = s.len() as f64;
    let q1 = ((0.25 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1).min(s.len() - 1);
    let q3 = ((0.75 * (n + 1.0) + 0.5).floor() as usize).saturating_sub(1).min(s.len() - 1);
    s[q3] - s[q1]
}

/// Length of `data` once trailing zeros are cut (the oldest end of a newest-first history).
pub fn len_without_zero_tail(data: &[f64]) -> usize {
    data.iter().rposition(|x| *x != 0.0).map_or(0, |i| i + 1)
}

/// Ordinary least squares of `y` on `x = 1..=n`: `(intercept, slope)`, or `None` when fewer
/// than two points.
pub fn ols_on_index(y: &[f64]) -> Option<(f64, f64)> {
    let n = y.len();
    if n < 2 {
        return None;
    }
    // Commons Math's SimpleRegression updates its sums incrementally; the closed form below
    // agrees with it to rounding.
    let nf = n as f64;
    let mean_x = (nf + 1.0) / 2.0;
    let mean_y = y.iter().sum::<f64>() / nf;
    let mut sxy = 0.0;
    let mut sxx = 0.0;
    for (i, yi) in y.iter().enumerate() {
        let dx = (i + 1) as f64 - mean_x;
        sxy += dx * (yi - mean_y);
        sxx += dx * dx;
    }
    let slope = sxy / sxx;
    Some((mean_y - slope * mean_x, slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn mad_by_hand() {
        // median 3; deviations 2,1,0,1,6 -> median 1
        assert_eq!(mad(&[1.0, 2.0, 3.0, 4.0, 9.0]), 1.0);
    }

    #[test]
    fn iqr_by_hand() {
        // n = 12: q1 = round(3.25) - 1 = 2, q3 = round(9.75) - 1 = 9 (0-based, sorted 1..=12)
        let d: Vec<f64> = (1..=12).map(|x| x as f64).collect();
        assert_eq!(iqr(&d), 10.0 - 3.0);
    }

    #[test]
    fn zero_tail() {
        assert_eq!(len_without_zero_tail(&[0.5, 0.0, 0.2, 0.0, 0.0]), 3);
        assert_eq!(len_without_zero_tail(&[0.0, 0.0]), 0);
    }

    #[test]
    fn ols_exact_line() {
        let y: Vec<f64> = (1..=10).map(|x| 0.1 + 0.05 * x as f64).collect();
        let (a, b) = ols_on_index(&y).unwrap();
        assert!((a - 0.1).abs() < 1e-12 && (b - 0.05).abs() < 1e-12);
    }
}
