"""Feature vector v1, identical to `forecast/src/features.rs`.

For a series x (oldest first) and a forecast whose first step falls at `next_time_s`:
  [0, 24)   the last 24 samples (2 h), oldest first
  24        mean of the last 72 samples (or of all there are)
  25        mean of the last 288 samples (or of all there are)
  [26, 38)  for h = 1..12, the sample one day before the target step (else feature 25)
  [38, 50)  for h = 1..12, the sample one week before the target step (else feature 25)
  50, 51    1 if a day / a week of history exists, else 0
  52, 53    sin, cos of the time of day of the first forecast step
  54, 55    sin, cos of its day of the week (Monday = 0)
  [56, 65)  p10, p50, p90 of the last 12, 36 and 72 samples (or of all there are), type 7
  65        standard deviation of the last 36 samples (or of all there are)

The model's medians are offsets from feature 60 (the median of the last 36 samples).
"""

import math

import numpy as np

WINDOW = 24
HORIZONS = 12
DAY = 288
WEEK = 7 * DAY
N_FEATURES = 66
BASE_FEATURE = 60
STEP_S = 300


def features(x, t, next_time_s):
    """Features for forecasting x[t], x[t+1], ... from x[:t] (t >= WINDOW)."""
    f = np.empty(N_FEATURES, dtype=np.float32)
    f[0:WINDOW] = x[t - WINDOW:t]
    f[24] = np.mean(x[max(0, t - 72):t], dtype=np.float64)
    f[25] = np.mean(x[max(0, t - DAY):t], dtype=np.float64)
    has_day = t >= DAY
    has_week = t >= WEEK
    for h in range(HORIZONS):
        f[26 + h] = x[t - DAY + h] if has_day else f[25]
        f[38 + h] = x[t - WEEK + h] if has_week else f[25]
    f[50] = 1.0 if has_day else 0.0
    f[51] = 1.0 if has_week else 0.0
    tod = 2.0 * math.pi * (next_time_s % 86400) / 86400.0
    dow = 2.0 * math.pi * ((next_time_s // 86400 + 3) % 7) / 7.0
    f[52], f[53] = math.sin(tod), math.cos(tod)
    f[54], f[55] = math.sin(dow), math.cos(dow)
    for k, w in enumerate((12, 36, 72)):
        f[56 + 3 * k:59 + 3 * k] = np.quantile(x[max(0, t - w):t].astype(np.float64), [0.1, 0.5, 0.9])
    f[65] = np.std(x[max(0, t - 36):t].astype(np.float64))
    return f


def quantiles_from_raw(raw, X):
    """Model output (…, 36) and its features -> (…, 12, 3) quantiles: per horizon the median's
    offset from feature BASE_FEATURE, and the log half-widths below and above it."""
    r = raw.reshape(raw.shape[:-1] + (HORIZONS, 3))
    p50 = r[..., 0] + X[..., BASE_FEATURE:BASE_FEATURE + 1]
    p10 = p50 - np.exp(r[..., 1])
    p90 = p50 + np.exp(r[..., 2])
    q = np.stack([p10, p50, p90], axis=-1)
    q = np.clip(q, 0.0, 1.0)
    return np.sort(q, axis=-1)
