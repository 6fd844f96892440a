//! The OpenNebula-style baseline: a gradient-boosted tree point forecaster (scikit-learn's
//! HistGradientBoostingRegressor, trained by `models/train.py` on the same training data as the
//! quantile models) over the last 2 hours, the calendar and the horizon. Its trees are stored as
//! JSON (`models/hgb-point.json`) and walked here; its intervals, like every point baseline's,
//! are its point plus the quantiles of its own recent errors on this series.
//!
//! Inputs of one prediction: the 24 samples before the forecast time (oldest first); sin, cos
//! of the first forecast step's time of day and day of week (as features 52..56 of
//! [`features`](crate::features)); the horizon in steps.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::baselines::{ERROR_WINDOW, recent_errors, with_error_quantiles};
use crate::features::WINDOW;
use crate::{Forecast, Forecaster, MAX_HORIZON, STEP_S, SeriesContext};

/// Inputs per prediction: 24 samples, 4 calendar values, the horizon.
pub const INPUTS: usize = WINDOW + 4 + 1;
const FORMAT: &str = "presage-hgb-point-v1";

#[derive(Debug, thiserror::Error)]
pub enum GbtError {
    #[error("{path}: cannot read the tree model: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a usable tree model: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Deserialize)]
struct TreeFile {
    feature: Vec<usize>,
    threshold: Vec<f64>,
    left: Vec<usize>,
    right: Vec<usize>,
    leaf: Vec<bool>,
    value: Vec<f64>,
}

#[derive(Deserialize)]
struct ModelFile {
    format: String,
    inputs: usize,
    baseline: f64,
    trees: Vec<TreeFile>,
}

/// One node: a split (`x[feature] <= threshold` goes left) or a leaf with its value.
#[derive(Clone, Copy, Debug)]
enum Node {
    Split { feature: u16, threshold: f32, left: u32, right: u32 },
    Leaf(f32),
}

/// The ensemble: a constant plus the leaf each tree sends the inputs to.
#[derive(Clone, Debug)]
pub struct GbtPoint {
    name: String,
    baseline: f32,
    trees: Vec<Vec<Node>>,
}

impl GbtPoint {
    /// Reads and checks `path`: every child index points forward within its tree (so a walk
    /// always ends at a leaf) and every split reads an input that exists.
    pub fn load(path: &Path) -> Result<GbtPoint, GbtError> {
        let text = std::fs::read_to_string(path).map_err(|e| GbtError::Read { path: path.into(), reason: e.to_string() })?;
        let invalid = |reason: String| GbtError::Invalid { path: path.into(), reason };
        let file: ModelFile = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if file.format != FORMAT {
            return Err(invalid(format!("format {:?}, expected {FORMAT:?}", file.format)));
        }
        if file.inputs != INPUTS {
            return Err(invalid(format!("{} inputs, expected {INPUTS}", file.inputs)));
        }
        let mut trees = Vec::with_capacity(file.trees.len());
        for (t, tree) in file.trees.iter().enumerate() {
            let n = tree.leaf.len();
            if n == 0
                || [tree.feature.len(), tree.threshold.len(), tree.left.len(), tree.right.len(), tree.value.len()].iter().any(|&l| l != n)
            {
                return Err(invalid(format!("tree {t}: node arrays of different lengths or empty")));
            }
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                if tree.leaf[i] {
                    nodes.push(Node::Leaf(tree.value[i] as f32));
                    continue;
                }
                let (f, l, r) = (tree.feature[i], tree.left[i], tree.right[i]);
                if f >= INPUTS || l <= i || r <= i || l >= n || r >= n {
                    return Err(invalid(format!("tree {t} node {i}: feature {f}, children {l} and {r} out of range")));
                }
                nodes.push(Node::Split { feature: f as u16, threshold: tree.threshold[i] as f32, left: l as u32, right: r as u32 });
            }
            trees.push(nodes);
        }
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "hgb-point".into());
        Ok(GbtPoint { name, baseline: file.baseline as f32, trees })
    }

    /// The ensemble's value for one input row.
    pub fn predict(&self, x: &[f32; INPUTS]) -> f32 {
        let mut sum = self.baseline;
        for tree in &self.trees {
            let mut i = 0;
            loop {
                match tree[i] {
                    Node::Leaf(v) => {
                        sum += v;
                        break;
                    }
                    Node::Split { feature, threshold, left, right } => {
                        i = if x[feature as usize] <= threshold { left } else { right } as usize;
                    }
                }
            }
        }
        sum
    }

    /// The point for horizon `h` of a forecast made with history `x[..origin]`, whose first
    /// step falls at `first_step_s`.
    fn point(&self, x: &[f32], origin: usize, first_step_s: u64, h: usize) -> f32 {
        let mut row = [0.0f32; INPUTS];
        row[..WINDOW].copy_from_slice(&x[origin - WINDOW..origin]);
        row[WINDOW..WINDOW + 4].copy_from_slice(&crate::features::calendar(first_step_s));
        row[WINDOW + 4] = h as f32;
        self.predict(&row)
    }
}

impl Forecaster for GbtPoint {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn min_history(&self) -> usize {
        WINDOW + MAX_HORIZON
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        let x = ctx.history;
        let n = x.len();
        if n < self.min_history() {
            return None;
        }
        let time_of = |origin: usize| ctx.next_time_s.saturating_sub((n - origin) as u64 * STEP_S);
        let points: [f32; MAX_HORIZON] = std::array::from_fn(|k| self.point(x, n, ctx.next_time_s, k + 1));
        // The outcome at i was forecast h steps ahead from the history before i − h + 1.
        let mut errors = recent_errors(
            n,
            |h| WINDOW + h - 1,
            |i, h| {
                let origin = i + 1 - h;
                x[i] - self.point(x, origin, time_of(origin), h)
            },
        );
        debug_assert!(errors.iter().all(|e| e.len() <= ERROR_WINDOW));
        with_error_quantiles(points, &mut errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    /// scikit-learn's own predictions (written by train.py) on rows of the training data.
    #[test]
    fn the_trees_predict_what_scikit_learn_predicts() {
        let m = GbtPoint::load(&models_dir().join("hgb-point.json")).unwrap();
        let text = std::fs::read_to_string(models_dir().join("fixtures/hgb-parity.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let inputs = v["inputs"].as_array().unwrap();
        assert!(inputs.len() >= 10);
        for (row, want) in inputs.iter().zip(v["predictions"].as_array().unwrap()) {
            let row: Vec<f32> = row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            let got = m.predict(&row.try_into().unwrap());
            let want = want.as_f64().unwrap() as f32;
            assert!((got - want).abs() <= 1e-4, "rust {got}, scikit-learn {want}");
        }
    }

    #[test]
    fn damaged_tree_files_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("presage-gbt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = std::fs::read_to_string(models_dir().join("hgb-point.json")).unwrap();
        let cases = [
            ("truncated", good[..good.len() / 2].to_string(), "not a usable tree model"),
            ("inputs", good.replacen("\"inputs\":29", "\"inputs\":66", 1), "66 inputs, expected 29"),
            ("loop", r#"{"format":"presage-hgb-point-v1","inputs":29,"baseline":0,"trees":[{"feature":[0,0],"threshold":[0.5,0],"left":[0,0],"right":[1,0],"leaf":[false,true],"value":[0,1]}]}"#.to_string(), "children 0 and 1 out of range"),
        ];
        for (name, text, want) in cases {
            let p = dir.join(format!("{name}.json"));
            std::fs::write(&p, text).unwrap();
            let e = GbtPoint::load(&p).unwrap_err().to_string();
            assert!(e.contains(&format!("{name}.json")) && e.contains(want), "{name}: {e}");
        }
        let e = GbtPoint::load(&dir.join("none.json")).unwrap_err();
        assert!(matches!(e, GbtError::Read { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Intervals from its own errors: a series the trees cannot follow gets a wide interval, a
    /// steady one a narrow one, and forecasts need 24 + 12 samples.
    #[test]
    fn intervals_come_from_its_own_recent_errors() {
        let m = GbtPoint::load(&models_dir().join("hgb-point.json")).unwrap();
        let steady = vec![0.3f32; 100];
        let jumpy: Vec<f32> = (0..100).map(|i| if (i * 7) % 5 < 2 { 0.9 } else { 0.05 }).collect();
        let width = |x: &[f32]| {
            let f = m.forecast(&SeriesContext { history: x, next_time_s: 0 }).unwrap();
            f.at(6)[2] - f.at(6)[0]
        };
        assert!(width(&jumpy) > 0.3 && width(&steady) < 0.05, "jumpy {}, steady {}", width(&jumpy), width(&steady));
        assert!(m.forecast(&SeriesContext { history: &steady[..35], next_time_s: 0 }).is_none());
    }
}
