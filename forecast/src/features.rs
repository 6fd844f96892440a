//! Feature vector v2 of the ONNX forecasters, identical to `models/presage_models/features.py`
//! (the parity test holds both to the same numbers):
//!
//! | index | feature |
//! |---|---|
//! | 0..24 | the last 24 samples (2 h), oldest first |
//! | 24, 25 | mean of the last 72 / 288 samples (or of all there are) |
//! | 26..38 | for h = 1..12, the sample one day before the target step (else feature 25) |
//! | 38..50 | for h = 1..12, the sample one week before the target step (else feature 25) |
//! | 50, 51 | 1 if a day / a week of history exists |
//! | 52, 53 | sin, cos of the first forecast step's time of day |
//! | 54, 55 | sin, cos of its day of the week (Monday = 0) |
//! | 56..65 | p10, p50, p90 (type 7) of the last 12, 36 and 72 samples |
//! | 65 | standard deviation of the last 36 samples |
//! | 66..72 | for the windows 12, 36, 72: ln(max(p50 − p10, 0.001)), ln(max(p90 − p50, 0.001)) |
//! | 72..75 | p10, p50, p90 of the last 288 samples |
//! | 75, 76 | their two log half-widths, as above |
//! | 77 | ln(feature 60 + 0.01): the level on a log scale |
//! | 78 | fraction of the last 36 samples at most 0.005 (idle) |
//! | 79 | fraction of the last 36 samples within 0.001 of the last one (flat) |
//! | 80..92 | daily profile: for h = 1..12, the mean over the previous days d = 1..7 with t ≥ d·288 + 6 of the sample d days before the target step (else feature 25) |
//! | 92 | how many days the profile has, / 7 |
//! | 93..105 | daily change: for h = 1..12, the mean over those days of (the sample d days before the target step − the mean of the 6 samples before t − d·288) (else 0) |
//!
//! "Or of all there are" wherever a window is longer than the history; t is the history's
//! length.
//!
//! The model's raw output per horizon is the median's offset from feature 60 (the median of the
//! last 36 samples) and the log half-widths below and above it ([`quantiles_from_raw`]).

use crate::{DAY, Forecast, MAX_HORIZON, SeriesContext, WEEK};

/// Which feature vector this is; the training pipeline writes the same into each model's
/// `presage.features` metadata.
pub const VERSION: &str = "v2";
pub const WINDOW: usize = 24;
pub const N_FEATURES: usize = 105;
pub const N_OUTPUTS: usize = MAX_HORIZON * 3;
pub const BASE_FEATURE: usize = 60;
const PROFILE_DAYS: usize = 7;
const LEVEL_SPAN: usize = 6;
const MIN_WIDTH: f64 = 1e-3;
const IDLE: f64 = 0.005;
const FLAT: f64 = 1e-3;

fn tail(x: &[f32], n: usize) -> &[f32] {
    &x[x.len().saturating_sub(n)..]
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64
}

fn quantiles(x: &[f32]) -> [f64; 3] {
    let mut v: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    [0.1, 0.5, 0.9].map(|p| {
        let h = (v.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(v.len() - 1);
        v[lo] + (h - lo as f64) * (v[hi] - v[lo])
    })
}

/// p10, p50, p90 of `x` and the two log half-widths.
fn quantiles_and_widths(x: &[f32]) -> ([f32; 3], [f32; 2]) {
    let q = quantiles(x);
    (q.map(|v| v as f32), [((q[1] - q[0]).max(MIN_WIDTH)).ln() as f32, ((q[2] - q[1]).max(MIN_WIDTH)).ln() as f32])
}

fn fraction(x: &[f32], pred: impl Fn(f64) -> bool) -> f32 {
    (x.iter().filter(|v| pred(**v as f64)).count() as f64 / x.len() as f64) as f32
}

fn std(x: &[f32]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

/// sin, cos of the time of day and of the day of the week (Monday = 0) of `time_s` (seconds since
/// the epoch): features 52..56, also the tree baseline's calendar inputs.
pub fn calendar(time_s: u64) -> [f32; 4] {
    let tod = 2.0 * std::f64::consts::PI * (time_s % 86400) as f64 / 86400.0;
    let dow = 2.0 * std::f64::consts::PI * ((time_s / 86400 + 3) % 7) as f64 / 7.0;
    [tod.sin() as f32, tod.cos() as f32, dow.sin() as f32, dow.cos() as f32]
}

/// Writes the features of `ctx` into `f`; `None` with less than [`WINDOW`] samples.
pub fn features(ctx: &SeriesContext<'_>, f: &mut [f32; N_FEATURES]) -> Option<()> {
    let x = ctx.history;
    let t = x.len();
    if t < WINDOW {
        return None;
    }
    f[..WINDOW].copy_from_slice(&x[t - WINDOW..]);
    f[24] = mean(tail(x, 72)) as f32;
    f[25] = mean(tail(x, DAY)) as f32;
    let (has_day, has_week) = (t >= DAY, t >= WEEK);
    for h in 0..MAX_HORIZON {
        f[26 + h] = if has_day { x[t - DAY + h] } else { f[25] };
        f[38 + h] = if has_week { x[t - WEEK + h] } else { f[25] };
    }
    f[50] = if has_day { 1.0 } else { 0.0 };
    f[51] = if has_week { 1.0 } else { 0.0 };
    f[52..56].copy_from_slice(&calendar(ctx.next_time_s));
    for (k, w) in [12, 36, 72].into_iter().enumerate() {
        let (q, widths) = quantiles_and_widths(tail(x, w));
        f[56 + 3 * k..59 + 3 * k].copy_from_slice(&q);
        f[66 + 2 * k..68 + 2 * k].copy_from_slice(&widths);
    }
    let last36 = tail(x, 36);
    f[65] = std(last36) as f32;
    let (q, widths) = quantiles_and_widths(tail(x, DAY));
    f[72..75].copy_from_slice(&q);
    f[75..77].copy_from_slice(&widths);
    f[77] = (f[60] as f64 + 0.01).ln() as f32;
    f[78] = fraction(last36, |v| v <= IDLE);
    let last = x[t - 1] as f64;
    f[79] = fraction(last36, |v| (v - last).abs() <= FLAT);
    // The days the profile has, and each one's level before the forecast time of that day.
    let mut days = [(0usize, 0.0f64); PROFILE_DAYS];
    let mut n = 0;
    for d in (1..=PROFILE_DAYS).filter(|d| t >= d * DAY + LEVEL_SPAN) {
        days[n] = (t - d * DAY, mean(&x[t - d * DAY - LEVEL_SPAN..t - d * DAY]));
        n += 1;
    }
    f[92] = (n as f64 / PROFILE_DAYS as f64) as f32;
    for h in 0..MAX_HORIZON {
        if n == 0 {
            f[80 + h] = f[25];
            f[93 + h] = 0.0;
            continue;
        }
        let (mut same, mut change) = (0.0f64, 0.0f64);
        for &(then, level) in &days[..n] {
            let v = x[then + h] as f64;
            same += v;
            change += v - level;
        }
        f[80 + h] = (same / n as f64) as f32;
        f[93 + h] = (change / n as f64) as f32;
    }
    Some(())
}

/// The model's raw outputs for one series and its features -> quantiles per horizon.
pub fn quantiles_from_raw(raw: &[f32], f: &[f32; N_FEATURES]) -> Forecast {
    let mut out = Forecast::flat([0.0; 3]);
    for h in 0..MAX_HORIZON {
        let r = &raw[3 * h..3 * h + 3];
        let mid = r[0] + f[BASE_FEATURE];
        out.q[h] = [mid - r[1].exp(), mid, mid + r[2].exp()];
    }
    out.tidy()
}
