"""Feature vector v2, identical to `forecast/src/features.rs`.

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
  [66, 72)  for the windows 12, 36, 72: ln(max(p50 - p10, 0.001)), ln(max(p90 - p50, 0.001))
  [72, 75)  p10, p50, p90 of the last 288 samples (or of all there are)
  75, 76    their two log half-widths, as above
  77        ln(feature 60 + 0.01): the level on a log scale
  78        fraction of the last 36 samples at most 0.005 (idle)
  79        fraction of the last 36 samples within 0.001 of the last sample (flat)
  [80, 92)  daily profile: for h = 1..12, the mean over the previous days d = 1..7 with
            t >= d * 288 + 6 of the sample d days before the target step (else feature 25)
  92        how many days the profile has, / 7
  [93, 105) daily change: for h = 1..12, the mean over the same days of (the sample d days
            before the target step - the mean of the 6 samples before t - d * 288) (else 0)

The model's medians are offsets from feature 60 (the median of the last 36 samples).

`features` is the reference (one forecast at a time, as the agent computes it); `features_batch`
computes the same numbers for many forecast times of one series at once, for training.
"""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

VERSION = "v2"
WINDOW = 24
HORIZONS = 12
DAY = 288
WEEK = 7 * DAY
PROFILE_DAYS = 7
LEVEL_SPAN = 6
N_FEATURES = 105
BASE_FEATURE = 60
STEP_S = 300
MIN_WIDTH = 1e-3
IDLE = 0.005
FLAT = 1e-3
QS = (0.1, 0.5, 0.9)


def _log_widths(q):
    return math.log(max(q[1] - q[0], MIN_WIDTH)), math.log(max(q[2] - q[1], MIN_WIDTH))


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
        q = np.quantile(x[max(0, t - w):t].astype(np.float64), QS)
        f[56 + 3 * k:59 + 3 * k] = q
        f[66 + 2 * k:68 + 2 * k] = _log_widths(q)
    last36 = np.asarray(x[max(0, t - 36):t], dtype=np.float64)
    f[65] = np.std(last36)
    q = np.quantile(np.asarray(x[max(0, t - DAY):t], dtype=np.float64), QS)
    f[72:75] = q
    f[75:77] = _log_widths(q)
    f[77] = math.log(float(f[60]) + 0.01)
    f[78] = np.mean(last36 <= IDLE)
    f[79] = np.mean(np.abs(last36 - float(x[t - 1])) <= FLAT)
    days = [d for d in range(1, PROFILE_DAYS + 1) if t >= d * DAY + LEVEL_SPAN]
    f[92] = len(days) / PROFILE_DAYS
    for h in range(HORIZONS):
        if days:
            same = [float(x[t - d * DAY + h]) for d in days]
            level = [np.mean(x[t - d * DAY - LEVEL_SPAN:t - d * DAY], dtype=np.float64) for d in days]
            f[80 + h] = np.mean(same)
            f[93 + h] = np.mean(np.array(same) - np.array(level))
        else:
            f[80 + h] = f[25]
            f[93 + h] = 0.0
    return f


def _partial_then_sliding(x, ts, w, fn):
    """fn over the windows x[max(0, t - w):t] for each t in ts: one call per short window, one
    vectorised call for all full ones. fn maps a 2-D array of windows (rows) to rows of results."""
    ts = np.asarray(ts)
    full = ts >= w
    out = [None] * len(ts)
    if full.any():
        win = sliding_window_view(x, w)[ts[full] - w]
        res = fn(win)
        for i, r in zip(np.nonzero(full)[0], res):
            out[i] = r
    for i in np.nonzero(~full)[0]:
        out[i] = fn(x[None, :ts[i]])[0]
    return np.array(out)


def features_batch(x, ts, start_s):
    """features(x, t, start_s + t * STEP_S) for every t in ts, as one (len(ts), N_FEATURES) array."""
    x64 = np.asarray(x, dtype=np.float64)
    x32 = np.asarray(x, dtype=np.float32)
    ts = np.asarray(ts, dtype=np.int64)
    n = len(ts)
    F = np.empty((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return F
    F[:, 0:WINDOW] = sliding_window_view(x32, WINDOW)[ts - WINDOW]
    csum = np.concatenate([[0.0], np.cumsum(x32.astype(np.float64))])

    def mean_last(w):
        lo = np.maximum(0, ts - w)
        return (csum[ts] - csum[lo]) / (ts - lo)

    F[:, 24] = mean_last(72)
    F[:, 25] = mean_last(DAY)
    has_day = ts >= DAY
    has_week = ts >= WEEK
    for h in range(HORIZONS):
        F[:, 26 + h] = np.where(has_day, x32[np.maximum(ts - DAY + h, 0)], F[:, 25])
        F[:, 38 + h] = np.where(has_week, x32[np.maximum(ts - WEEK + h, 0)], F[:, 25])
    F[:, 50] = has_day
    F[:, 51] = has_week
    nt = start_s + ts * STEP_S
    tod = 2.0 * np.pi * (nt % 86400) / 86400.0
    dow = 2.0 * np.pi * ((nt // 86400 + 3) % 7) / 7.0
    F[:, 52], F[:, 53], F[:, 54], F[:, 55] = np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)

    def qfn(win):
        return np.quantile(win, QS, axis=1).T

    def log_widths(q):
        return np.log(np.maximum(q[:, 1] - q[:, 0], MIN_WIDTH)), np.log(np.maximum(q[:, 2] - q[:, 1], MIN_WIDTH))

    for k, w in enumerate((12, 36, 72)):
        q = _partial_then_sliding(x64, ts, w, qfn)
        F[:, 56 + 3 * k:59 + 3 * k] = q
        F[:, 66 + 2 * k], F[:, 67 + 2 * k] = log_widths(q)
    F[:, 65] = _partial_then_sliding(x64, ts, 36, lambda win: np.std(win, axis=1))
    q = _partial_then_sliding(x64, ts, DAY, qfn)
    F[:, 72:75] = q
    F[:, 75], F[:, 76] = log_widths(q)
    F[:, 77] = np.log(F[:, 60].astype(np.float64) + 0.01)
    last = x64[ts - 1]
    F[:, 78] = _partial_then_sliding(x64, ts, 36, lambda win: np.mean(win <= IDLE, axis=1))
    flat = np.empty(n)
    for i, t in enumerate(ts):
        flat[i] = np.mean(np.abs(x64[max(0, t - 36):t] - last[i]) <= FLAT)
    F[:, 79] = flat
    same_sum = np.zeros((n, HORIZONS))
    delta_sum = np.zeros((n, HORIZONS))
    count = np.zeros(n)
    for d in range(1, PROFILE_DAYS + 1):
        ok = ts >= d * DAY + LEVEL_SPAN
        base = np.where(ok, ts - d * DAY, LEVEL_SPAN)
        level = (csum[base] - csum[base - LEVEL_SPAN]) / LEVEL_SPAN
        for h in range(HORIZONS):
            v = x32[base + h].astype(np.float64)
            same_sum[:, h] += np.where(ok, v, 0.0)
            delta_sum[:, h] += np.where(ok, v - level, 0.0)
        count += ok
    F[:, 92] = count / PROFILE_DAYS
    safe = np.maximum(count, 1)[:, None]
    F[:, 80:92] = np.where(count[:, None] > 0, same_sum / safe, F[:, 25:26])
    F[:, 93:105] = np.where(count[:, None] > 0, delta_sum / safe, 0.0)
    return F


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
