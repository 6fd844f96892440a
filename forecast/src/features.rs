//! Feature vector v1 of the ONNX forecasters, identical to `models/presage_models/features.py`
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
//!
//! The model's raw output per horizon is the median's offset from feature 60 (the median of the
//! last 36 samples) and the log half-widths below and above it ([`quantiles_from_raw`]).

use crate::{DAY, Forecast, MAX_HORIZON, SeriesContext, WEEK};

pub const WINDOW: usize = 24;
pub const N_FEATURES: usize = 66;
pub const N_OUTPUTS: usize = MAX_HORIZON * 3;
pub const BASE_FEATURE: usize = 60;

fn tail(x: &[f32], n: usize) -> &[f32] {
    &x[x.len().saturating_sub(n)..]
}

fn mean(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64).sum::<f64>() / x.len() as f64
}

fn quantiles(x: &[f32]) -> [f32; 3] {
    let mut v: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    [0.1, 0.5, 0.9].map(|p| {
        let h = (v.len() - 1) as f64 * p;
        let lo = h.floor() as usize;
        let hi = (lo + 1).min(v.len() - 1);
        (v[lo] + (h - lo as f64) * (v[hi] - v[lo])) as f32
    })
}

fn std(x: &[f32]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
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
    let tod = 2.0 * std::f64::consts::PI * (ctx.next_time_s % 86400) as f64 / 86400.0;
    let dow = 2.0 * std::f64::consts::PI * ((ctx.next_time_s / 86400 + 3) % 7) as f64 / 7.0;
    f[52] = tod.sin() as f32;
    f[53] = tod.cos() as f32;
    f[54] = dow.sin() as f32;
    f[55] = dow.cos() as f32;
    for (k, w) in [12, 36, 72].into_iter().enumerate() {
        f[56 + 3 * k..59 + 3 * k].copy_from_slice(&quantiles(tail(x, w)));
    }
    f[65] = std(tail(x, 36)) as f32;
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
