//! ONNX quantile forecasters run by tract: loaded once, optimised into a runnable plan, and run
//! on all series of a cycle as one batch. A missing, corrupt or wrongly shaped model is a
//! [`ModelError`] naming the file and what is wrong; the caller falls back to a baseline.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

use crate::features::{self, N_FEATURES, N_OUTPUTS, WINDOW};
use crate::{Forecast, Forecaster, SeriesContext};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read the model: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: not a usable ONNX model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: expected {what} {expected}, the model has {found}")]
    Shape { path: PathBuf, what: &'static str, expected: String, found: String },
}

type Plan = Arc<TypedRunnableModel>;

/// A forecaster backed by an ONNX model with input `[batch, N_FEATURES]` and output `[batch, 36]`.
pub struct OnnxForecaster {
    name: String,
    plan: Plan,
}

impl std::fmt::Debug for OnnxForecaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxForecaster").field("name", &self.name).finish()
    }
}

impl OnnxForecaster {
    /// Loads, checks and optimises the model at `path`; its name is the file stem.
    pub fn load(path: &Path) -> Result<OnnxForecaster, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Read { path: path.into(), reason: e.to_string() })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "onnx".into());
        let plan = Self::plan(&bytes).map_err(|e| match e {
            PlanError::Shape(what, expected, found) => ModelError::Shape { path: path.into(), what, expected, found },
            PlanError::Tract(e) => ModelError::Invalid { path: path.into(), reason: format!("{e:#}") },
        })?;
        Ok(OnnxForecaster { name, plan })
    }

    fn plan(bytes: &[u8]) -> Result<Plan, PlanError> {
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
        // Models from the training pipeline say which feature vector they were trained on; one
        // trained on another gets a clear refusal instead of a shape error deep in tract.
        if let Some(found) = metadata(&model, "presage.features")
            && found != features::VERSION
        {
            return Err(PlanError::Shape("feature vector", features::VERSION.into(), found));
        }
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(PlanError::Shape(
                "inputs and outputs",
                "1 and 1".into(),
                format!("{} and {}", model.inputs.len(), model.outputs.len()),
            ));
        }
        let n = model.sym("N");
        model = model.with_input_fact(0, f32::fact(dims!(n, N_FEATURES)).into())?;
        let typed = model.into_typed()?;
        let out = typed.output_fact(0)?.shape.clone();
        let last = out.last().and_then(|d| d.to_i64().ok());
        if out.len() != 2 || last != Some(N_OUTPUTS as i64) {
            return Err(PlanError::Shape("output shape", format!("[N, {N_OUTPUTS}]"), format!("{out:?}")));
        }
        Ok(typed.into_optimized()?.into_runnable()?)
    }

    /// Raw model outputs for a `[rows, N_FEATURES]` feature matrix.
    pub fn run_raw(&self, features: &[f32], rows: usize) -> TractResult<Vec<f32>> {
        let input = Tensor::from_shape(&[rows, N_FEATURES], features)?;
        let out = self.plan.run(tvec!(input.into_tvalue()))?;
        Ok(out[0].to_plain_array_view::<f32>()?.iter().copied().collect())
    }
}

/// A model's `metadata_props` entry `key` as text (the training pipeline writes strings; anything
/// else comes back as tract sees it, which no check will take for a valid value).
pub(crate) fn metadata(model: &InferenceModel, key: &str) -> Option<String> {
    let v = model.properties.get(&format!("onnx.metadata_props.{key}"))?;
    Some(v.to_plain_array_view::<String>().ok().and_then(|a| a.iter().next().cloned()).unwrap_or_else(|| format!("{v:?}")))
}

enum PlanError {
    Shape(&'static str, String, String),
    Tract(TractError),
}

impl From<TractError> for PlanError {
    fn from(e: TractError) -> Self {
        PlanError::Tract(e)
    }
}

impl Forecaster for OnnxForecaster {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn min_history(&self) -> usize {
        WINDOW
    }

    fn mixes_online(&self) -> bool {
        true
    }

    fn forecast(&self, ctx: &SeriesContext<'_>) -> Option<Forecast> {
        self.forecast_batch(std::slice::from_ref(ctx)).pop().flatten()
    }

    fn forecast_batch(&self, ctxs: &[SeriesContext<'_>]) -> Vec<Option<Forecast>> {
        // One row per series with enough history, written straight into the model's input.
        let mut input: Vec<f32> = Vec::with_capacity(ctxs.len() * N_FEATURES);
        let mut which: Vec<usize> = Vec::with_capacity(ctxs.len());
        let mut f = [0.0; N_FEATURES];
        for (i, c) in ctxs.iter().enumerate() {
            if features::features(c, &mut f).is_some() {
                input.extend_from_slice(&f);
                which.push(i);
            }
        }
        let mut out = vec![None; ctxs.len()];
        if which.is_empty() {
            return out;
        }
        let Ok(raw) = self.run_raw(&input, which.len()) else { return out };
        for (k, (&i, row)) in which.iter().zip(input.chunks_exact(N_FEATURES)).enumerate() {
            let row: &[f32; N_FEATURES] = row.try_into().expect("chunks of N_FEATURES");
            out[i] = Some(features::quantiles_from_raw(&raw[k * N_OUTPUTS..(k + 1) * N_OUTPUTS], row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::features::{N_FEATURES, features};

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }

    /// Python computed features, onnxruntime ran the committed models; the Rust features and
    /// tract must agree (features to float rounding, outputs within 1e-4).
    #[test]
    fn tract_and_the_rust_features_match_python_and_onnxruntime() {
        let text = std::fs::read_to_string(models_dir().join("fixtures/parity.json")).expect("models/fixtures/parity.json");
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let cases = fixture["cases"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for name in ["cpu", "memory"] {
            let model = OnnxForecaster::load(&models_dir().join(format!("{name}-quantiles-v2.onnx"))).unwrap();
            for case in cases {
                let history = floats(&case["history"]);
                let ctx = SeriesContext { history: &history, next_time_s: case["next_time_s"].as_u64().unwrap() };
                let mut f = [0.0; N_FEATURES];
                features(&ctx, &mut f).unwrap();
                let expected = floats(&case["features"]);
                for (i, (a, b)) in f.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                        "{} t={}: feature {i}: rust {a}, python {b}",
                        case["series"],
                        history.len()
                    );
                }
                let raw = model.run_raw(&f, 1).unwrap();
                for (i, (a, b)) in raw.iter().zip(floats(&case["models"][name]["raw"])).enumerate() {
                    assert!((a - b).abs() <= 1e-4, "{name} {}: output {i}: tract {a}, onnxruntime {b}", case["series"]);
                }
                let q = model.forecast(&ctx).unwrap();
                let want = floats(&case["models"][name]["quantiles"]);
                for h in 0..crate::MAX_HORIZON {
                    for k in 0..3 {
                        assert!((q.q[h][k] - want[3 * h + k]).abs() <= 1e-4, "{name}: h={} q{k}", h + 1);
                    }
                }
            }
        }
    }

    #[test]
    fn a_batch_gives_what_single_forecasts_give() {
        let model = OnnxForecaster::load(&models_dir().join("cpu-quantiles-v2.onnx")).unwrap();
        let a: Vec<f32> = (0..100).map(|i| (i % 7) as f32 / 10.0).collect();
        let b: Vec<f32> = (0..40).map(|i| (i % 3) as f32 / 5.0).collect();
        let short = [0.5f32; 5];
        let ctxs = [
            SeriesContext { history: &a, next_time_s: 0 },
            SeriesContext { history: &short, next_time_s: 0 },
            SeriesContext { history: &b, next_time_s: 3600 },
        ];
        let batch = model.forecast_batch(&ctxs);
        assert!(batch[1].is_none(), "5 samples are too few");
        assert_eq!(batch[0], model.forecast(&ctxs[0]));
        assert_eq!(batch[2], model.forecast(&ctxs[2]));
    }

    #[test]
    fn missing_corrupt_and_misshapen_models_are_named_errors() {
        let dir = tempfile_dir();
        let missing = dir.join("none.onnx");
        let e = OnnxForecaster::load(&missing).unwrap_err();
        assert!(matches!(e, ModelError::Read { .. }) && e.to_string().contains("none.onnx"), "{e}");

        let corrupt = dir.join("corrupt.onnx");
        let mut bytes = std::fs::read(models_dir().join("cpu-quantiles-v2.onnx")).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&corrupt, &bytes).unwrap();
        let e = OnnxForecaster::load(&corrupt).unwrap_err();
        assert!(matches!(e, ModelError::Invalid { .. }) && e.to_string().contains("corrupt.onnx"), "{e}");

        let e = OnnxForecaster::load(&models_dir().join("fixtures/wrong-input.onnx")).unwrap_err();
        assert!(e.to_string().contains("wrong-input.onnx"), "{e}");

        // Right shapes, other features: refused by name, not run on the wrong inputs.
        let e = OnnxForecaster::load(&models_dir().join("fixtures/old-features.onnx")).unwrap_err();
        assert!(matches!(e, ModelError::Shape { .. }) && e.to_string().contains("feature vector v2, the model has v1"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("presage-forecast-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
