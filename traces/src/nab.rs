//! The Numenta Anomaly Benchmark (NAB): its corpus layout (`data/<category>/<file>.csv` with
//! `timestamp,value` rows, `labels/combined_windows.json` with each file's anomaly windows) and
//! its score, implemented from the benchmark's rules:
//!
//! - The first 15 % of a file (at most 750 rows) is probationary: nothing there is scored.
//! - A detection is a row whose anomaly score is at or above the detector's threshold. Within a
//!   window only the earliest detection counts, rewarded `A_TP x σ(y) / σ(-1)` where
//!   `σ(y) = 2 / (1 + e^(5y)) - 1` and `y = -(right - i + 1) / width` runs from -1 at the
//!   window's left edge towards 0 at its right edge (so a detection at the left edge earns
//!   exactly `A_TP`). A window without a detection costs `A_FN`.
//! - A detection outside every window costs `A_FP x σ(|i - right| / (width - 1))` after a window
//!   (`right`, `width` of the last window before it; -1 beyond 3 widths), and `A_FP` when no
//!   window precedes it.
//! - A corpus's score sums its files'; the normalised score is
//!   `100 x (raw - null) / (perfect - null)` with `null = -A_FN x windows` (never detects) and
//!   `perfect = A_TP x windows` (detects every window at its left edge).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One of NAB's application profiles: the weights of a true positive, a false positive and a
/// false negative.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

pub const STANDARD: Profile = Profile { name: "standard", tp: 1.0, fp: 0.11, fn_: 1.0 };
pub const LOW_FP: Profile = Profile { name: "reward_low_FP_rate", tp: 1.0, fp: 0.22, fn_: 1.0 };
pub const LOW_FN: Profile = Profile { name: "reward_low_FN_rate", tp: 1.0, fp: 0.11, fn_: 2.0 };
pub const PROFILES: [Profile; 3] = [STANDARD, LOW_FP, LOW_FN];

/// The share of a file that is probationary; at most that share of 5,000 rows (750).
pub const PROBATION_SHARE: f64 = 0.15;

#[derive(Debug, thiserror::Error)]
pub enum NabError {
    #[error("{path} cannot be read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}: {reason}")]
    Malformed { path: PathBuf, line: usize, reason: String },
    #[error("{path}: {reason}")]
    Labels { path: PathBuf, reason: String },
    #[error("{file}: window [{start}, {end}]: {reason}")]
    Window { file: String, start: String, end: String, reason: String },
}

/// One series of the corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// `<category>/<file>.csv`, the key of the labels file.
    pub key: String,
    /// `YYYY-MM-DD HH:MM:SS`, as in the file.
    pub timestamps: Vec<String>,
    pub values: Vec<f64>,
}

/// A timestamp without fractional seconds (the labels write `.000000`).
fn whole_seconds(t: &str) -> &str {
    t.trim().split('.').next().unwrap_or("")
}

/// Reads one `timestamp,value` file (a header line first).
pub fn read_series(path: &Path, key: String) -> Result<Series, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Read { path: path.into(), source })?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if header.trim() != "timestamp,value" {
        return Err(NabError::Malformed {
            path: path.into(),
            line: 1,
            reason: format!("expected the header timestamp,value, found {header:?}"),
        });
    }
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| NabError::Malformed { path: path.into(), line: i + 2, reason };
        let (t, v) = line.split_once(',').ok_or_else(|| bad(format!("expected timestamp,value, found {line:?}")))?;
        let v: f64 = v.trim().parse().map_err(|e| bad(format!("value {v:?}: {e}")))?;
        if !v.is_finite() {
            return Err(bad(format!("value {v} is not finite")));
        }
        let t = whole_seconds(t);
        if t.len() != 19 {
            return Err(bad(format!("timestamp {t:?} is not YYYY-MM-DD HH:MM:SS")));
        }
        timestamps.push(t.to_string());
        values.push(v);
    }
    if values.is_empty() {
        return Err(NabError::Malformed { path: path.into(), line: 1, reason: "no rows".into() });
    }
    Ok(Series { key, timestamps, values })
}

/// A detector's results for one file (NAB's results layout: a CSV, gzip-compressed when its name
/// ends in `.gz`, whose header names a `timestamp` and an `anomaly_score` column): the scores,
/// checked row by row against `series`' timestamps.
pub fn read_scores(path: &Path, series: &Series) -> Result<Vec<f64>, NabError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| NabError::Read { path: path.into(), source })?;
    let mut text = String::new();
    let read = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(file).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    read.map_err(|source| NabError::Read { path: path.into(), source })?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').map(str::trim).collect();
    let column = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| NabError::Malformed {
            path: path.into(),
            line: 1,
            reason: format!("no {name} column in the header {header:?}"),
        })
    };
    let (tc, sc) = (column("timestamp")?, column("anomaly_score")?);
    let mut scores = Vec::with_capacity(series.values.len());
    for (i, line) in lines.filter(|l| !l.trim().is_empty()).enumerate() {
        let bad = |reason: String| NabError::Malformed { path: path.into(), line: i + 2, reason };
        let cells: Vec<&str> = line.split(',').collect();
        let (Some(t), Some(s)) = (cells.get(tc), cells.get(sc)) else { return Err(bad(format!("too few columns in {line:?}"))) };
        if series.timestamps.get(i).map(String::as_str) != Some(whole_seconds(t)) {
            return Err(bad(format!("timestamp {t:?} is not row {} of {}", i + 1, series.key)));
        }
        scores.push(s.trim().parse::<f64>().map_err(|e| bad(format!("anomaly_score {s:?}: {e}")))?);
    }
    if scores.len() != series.values.len() {
        return Err(NabError::Malformed {
            path: path.into(),
            line: scores.len() + 1,
            reason: format!("{} scores for the {} rows of {}", scores.len(), series.values.len(), series.key),
        });
    }
    Ok(scores)
}

/// Every `<category>/<file>.csv` under `data_dir`, sorted.
pub fn corpus(data_dir: &Path) -> Result<Vec<Series>, NabError> {
    let read_dir = |dir: &Path| -> Result<Vec<PathBuf>, NabError> {
        let entries = std::fs::read_dir(dir).map_err(|source| NabError::Read { path: dir.into(), source })?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        Ok(paths)
    };
    let mut out = Vec::new();
    for category in read_dir(data_dir)?.into_iter().filter(|p| p.is_dir()) {
        let cat = category.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for file in read_dir(&category)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "csv")) {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(read_series(&file, format!("{cat}/{name}"))?);
        }
    }
    Ok(out)
}

/// Each file's anomaly windows (`[start, end]` timestamps), from `combined_windows.json`.
pub fn read_windows(path: &Path) -> Result<BTreeMap<String, Vec<(String, String)>>, NabError> {
    let text = std::fs::read_to_string(path).map_err(|source| NabError::Read { path: path.into(), source })?;
    let raw: BTreeMap<String, Vec<Vec<String>>> =
        serde_json::from_str(&text).map_err(|e| NabError::Labels { path: path.into(), reason: e.to_string() })?;
    raw.into_iter()
        .map(|(key, windows)| {
            let windows = windows
                .into_iter()
                .map(|w| match w.as_slice() {
                    [a, b] => Ok((whole_seconds(a).to_string(), whole_seconds(b).to_string())),
                    _ => Err(NabError::Labels { path: path.into(), reason: format!("{key}: a window is [start, end], found {w:?}") }),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((key, windows))
        })
        .collect()
}

/// What each scorable row of one file is worth if detected, under one profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    /// Per scorable row (after the probation): its index, its weighted reward (positive inside a
    /// window, negative outside) and its window (index into the file's windows).
    pub rows: Vec<(usize, f64, Option<usize>)>,
    /// Windows with at least one scorable row (those scored; the others are in the probation).
    pub windows: usize,
}

/// NAB's scaled sigmoid of a relative position.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 { -1.0 } else { 2.0 / (1.0 + (5.0 * y).exp()) - 1.0 }
}

/// The probationary rows of a file of `n` rows.
pub fn probation(n: usize) -> usize {
    (PROBATION_SHARE * n as f64).floor().min(PROBATION_SHARE * 5000.0) as usize
}

/// The reward of every scorable row of `series` under `profile`.
pub fn sweep(series: &Series, windows: &[(String, String)], profile: Profile) -> Result<Sweep, NabError> {
    let index: std::collections::HashMap<&str, usize> = series.timestamps.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut limits = Vec::with_capacity(windows.len());
    for (start, end) in windows {
        let bad =
            |reason: &str| NabError::Window { file: series.key.clone(), start: start.clone(), end: end.clone(), reason: reason.into() };
        let (Some(&a), Some(&b)) = (index.get(start.as_str()), index.get(end.as_str())) else {
            return Err(bad("a limit is not a timestamp of the file"));
        };
        if b < a || limits.last().is_some_and(|&(_, pb)| a <= pb) {
            return Err(bad("windows must be ordered and must not overlap"));
        }
        limits.push((a, b));
    }
    let max_tp = scaled_sigmoid(-1.0);
    let first = probation(series.values.len());
    let mut rows = Vec::with_capacity(series.values.len().saturating_sub(first));
    let mut scored = vec![false; limits.len()];
    let mut next = 0;
    let mut current: Option<usize> = None;
    let mut previous: Option<usize> = None;
    for i in 0..series.values.len() {
        if current.is_none() && next < limits.len() && i == limits[next].0 {
            current = Some(next);
            next += 1;
        }
        let (reward, window) = match current {
            Some(w) => {
                let (a, b) = limits[w];
                let width = (b - a + 1) as f64;
                let y = -((b - i + 1) as f64) / width;
                (scaled_sigmoid(y) * profile.tp / max_tp, Some(w))
            }
            None => {
                let unweighted = match previous {
                    None => -1.0,
                    Some(w) => {
                        let (a, b) = limits[w];
                        // A one-row window has no width to measure by: anything after it is far.
                        let width = (b - a) as f64;
                        if width > 0.0 { scaled_sigmoid(i.abs_diff(b) as f64 / width) } else { -1.0 }
                    }
                };
                (unweighted * profile.fp, None)
            }
        };
        if i >= first {
            rows.push((i, reward, window));
            if let Some(w) = window {
                scored[w] = true;
            }
        }
        if let Some(w) = current
            && i == limits[w].1
        {
            previous = Some(w);
            current = None;
        }
    }
    Ok(Sweep { rows, windows: scored.iter().filter(|s| **s).count() })
}

/// One file's raw score and counts at one threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FileScore {
    pub raw: f64,
    pub windows: usize,
    /// Windows detected, detections outside windows, windows missed.
    pub detected: usize,
    pub false_positives: usize,
    pub missed: usize,
}

/// Scores `anomaly_scores` (one per row of the file `sweep` was made for) at `threshold`.
pub fn score_file(sweep: &Sweep, anomaly_scores: &[f64], threshold: f64, profile: Profile) -> FileScore {
    let mut best: BTreeMap<usize, f64> = BTreeMap::new();
    let mut s = FileScore { windows: sweep.windows, ..FileScore::default() };
    for &(i, reward, window) in &sweep.rows {
        // A NaN score detects nothing.
        if anomaly_scores.get(i).is_none_or(|&a| a.partial_cmp(&threshold).is_none_or(|o| o.is_lt())) {
            continue;
        }
        match window {
            Some(w) => {
                let b = best.entry(w).or_insert(f64::NEG_INFINITY);
                *b = b.max(reward);
            }
            None => {
                s.raw += reward;
                s.false_positives += 1;
            }
        }
    }
    s.detected = best.len();
    s.missed = sweep.windows - s.detected;
    s.raw += best.values().sum::<f64>() - profile.fn_ * s.missed as f64;
    s
}

/// The normalised score of a corpus whose files' raw scores sum to `raw` over `windows` windows.
pub fn normalised(raw: f64, windows: usize, profile: Profile) -> f64 {
    let null = -profile.fn_ * windows as f64;
    let perfect = profile.tp * windows as f64;
    if perfect > null { 100.0 * (raw - null) / (perfect - null) } else { 0.0 }
}

/// The threshold that maximises the corpus's raw score under `profile`, over every distinct
/// anomaly score (a detection at or above it), with that score normalised. `files` pairs each
/// file's sweep with its anomaly scores.
pub fn best_threshold(files: &[(&Sweep, &[f64])], profile: Profile) -> (f64, f64) {
    // Every scorable row, highest anomaly score first: lowering the threshold past a row adds it.
    let mut points: Vec<(f64, usize, f64, Option<usize>)> = Vec::new();
    let mut windows = 0;
    for (f, (sweep, scores)) in files.iter().enumerate() {
        windows += sweep.windows;
        for &(i, reward, window) in &sweep.rows {
            if let Some(&a) = scores.get(i).filter(|a| a.is_finite()) {
                points.push((a, f, reward, window));
            }
        }
    }
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best_window: std::collections::HashMap<(usize, usize), f64> = std::collections::HashMap::new();
    let mut raw = -profile.fn_ * windows as f64;
    let (mut best_raw, mut best_t) = (raw, f64::INFINITY);
    let mut k = 0;
    while k < points.len() {
        let t = points[k].0;
        while k < points.len() && points[k].0 == t {
            let (_, f, reward, window) = points[k];
            match window {
                Some(w) => {
                    let b = best_window.entry((f, w)).or_insert(-profile.fn_);
                    if reward > *b {
                        raw += reward - *b;
                        *b = reward;
                    }
                }
                None => raw += reward,
            }
            k += 1;
        }
        if raw > best_raw {
            best_raw = raw;
            best_t = t;
        }
    }
    (best_t, normalised(best_raw, windows, profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Series {
        Series {
            key: "c/f.csv".into(),
            timestamps: (0..n).map(|i| format!("2020-01-01 {:02}:{:02}:00", i / 60, i % 60)).collect(),
            values: vec![0.0; n],
        }
    }

    #[test]
    fn the_sigmoid_rewards_early_detections_and_fades_after_a_window() {
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_5).abs() < 1e-15);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.986_614_298_151_430_5).abs() < 1e-15);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    /// 100 rows (15 probationary), one window over rows 40..=49: a detection at its left edge
    /// earns exactly A_TP; only the first detection of a window counts; a detection before any
    /// window costs A_FP; one just after the window costs less than A_FP; a missed window costs
    /// A_FN.
    #[test]
    fn a_file_is_scored_by_the_rules() {
        let s = series(100);
        let w = vec![(s.timestamps[40].clone(), s.timestamps[49].clone())];
        let sweep = sweep(&s, &w, STANDARD).unwrap();
        assert_eq!((sweep.rows.len(), sweep.windows), (85, 1));
        let mut scores = vec![0.0; 100];
        scores[40] = 1.0;
        scores[45] = 1.0;
        let f = score_file(&sweep, &scores, 0.5, STANDARD);
        assert!((f.raw - 1.0).abs() < 1e-12, "{f:?}");
        assert_eq!((f.detected, f.false_positives, f.missed), (1, 0, 0));
        // A detection in the probation is not scored; one at row 20 (no window before) costs 0.11.
        scores[5] = 1.0;
        scores[20] = 1.0;
        let f = score_file(&sweep, &scores, 0.5, STANDARD);
        assert!((f.raw - (1.0 - 0.11)).abs() < 1e-12, "{f:?}");
        // Right after the window (row 50: one row past its right edge, width 10): σ(1/9) x 0.11.
        let mut after = vec![0.0; 100];
        after[50] = 1.0;
        let f = score_file(&sweep, &after, 0.5, STANDARD);
        assert!((f.raw - (scaled_sigmoid(1.0 / 9.0) * 0.11 - 1.0)).abs() < 1e-12, "{f:?}");
        assert_eq!(f.missed, 1);
        // Nothing detected: null.
        assert_eq!(score_file(&sweep, &[0.0; 100], 0.5, LOW_FN).raw, -2.0);
        assert_eq!(normalised(-2.0, 1, LOW_FN), 0.0);
        assert_eq!(normalised(1.0, 1, LOW_FN), 100.0);
    }

    #[test]
    fn the_best_threshold_is_found_over_every_score() {
        let s = series(100);
        let w = vec![(s.timestamps[40].clone(), s.timestamps[49].clone())];
        let sweep = sweep(&s, &w, STANDARD).unwrap();
        // The window's left edge scores 0.6; a false positive scores 0.8; the rest 0.1.
        let mut scores = vec![0.1; 100];
        scores[40] = 0.6;
        scores[70] = 0.8;
        let (t, score) = best_threshold(&[(&sweep, &scores)], STANDARD);
        assert_eq!(t, 0.6);
        let f = score_file(&sweep, &scores, t, STANDARD);
        assert!((score - normalised(f.raw, 1, STANDARD)).abs() < 1e-12);
    }

    #[test]
    fn bad_windows_and_files_say_what_is_wrong() {
        let s = series(10);
        let e = sweep(&s, &[("2020-01-01 09:00:00".into(), s.timestamps[2].clone())], STANDARD).unwrap_err().to_string();
        assert!(e.contains("not a timestamp of the file"), "{e}");
        let e = sweep(&s, &[(s.timestamps[5].clone(), s.timestamps[2].clone())], STANDARD).unwrap_err().to_string();
        assert!(e.contains("ordered"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        std::fs::write(&p, "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:05:00,abc\n").unwrap();
        let e = read_series(&p, "c/x.csv".into()).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("abc"), "{e}");
    }
}
