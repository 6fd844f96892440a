//! The learned scorer's model run by tract: a `[N, 12]` candidate feature matrix in, one
//! shortfall probability per row out (`models/train_scorer.py` trains it). Loading checks what
//! the decision core needs of it — the feature vector it was trained on, its shapes, the range of
//! every feature in its training set — and names the file and what is wrong otherwise.

use std::path::Path;
use std::sync::Arc;

use presage_decide::policy::learned::{FEATURES_VERSION, FeatureRow, N_FEATURES, ShortfallModel};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

use crate::onnx::{ModelError, metadata};

/// A shortfall model loaded and optimised for tract.
pub struct OnnxShortfall {
    name: String,
    plan: Arc<TypedRunnableModel>,
    range: [(f32, f32); N_FEATURES],
}

impl std::fmt::Debug for OnnxShortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxShortfall").field("name", &self.name).finish()
    }
}

impl OnnxShortfall {
    /// Loads, checks and optimises the model at `path`; its name is the file stem.
    pub fn load(path: &Path) -> Result<OnnxShortfall, ModelError> {
        let read = |reason: String| ModelError::Read { path: path.into(), reason };
        let invalid = |reason: String| ModelError::Invalid { path: path.into(), reason };
        let shape = |what, expected: String, found: String| ModelError::Shape { path: path.into(), what, expected, found };
        let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "shortfall".into());
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(|e| invalid(format!("{e:#}")))?;
        let features = metadata(&model, "presage.features").unwrap_or_else(|| "none".into());
        if features != FEATURES_VERSION {
            return Err(shape("feature vector", FEATURES_VERSION.into(), features));
        }
        let range_text = metadata(&model, "presage.trained_range").ok_or_else(|| invalid("no presage.trained_range metadata".into()))?;
        let pairs: Vec<(f32, f32)> = serde_json::from_str(&range_text)
            .map_err(|e| invalid(format!("presage.trained_range is not a list of [low, high] pairs: {e}")))?;
        let range: [(f32, f32); N_FEATURES] =
            pairs.clone().try_into().map_err(|_| shape("trained ranges", N_FEATURES.to_string(), pairs.len().to_string()))?;
        if let Some(i) = range.iter().position(|(lo, hi)| !(lo.is_finite() && hi.is_finite() && lo <= hi)) {
            return Err(invalid(format!("presage.trained_range[{i}] is not a finite [low, high] pair")));
        }
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(shape("inputs and outputs", "1 and 1".into(), format!("{} and {}", model.inputs.len(), model.outputs.len())));
        }
        let plan = (|| -> TractResult<_> {
            let n = model.sym("N");
            model = model.clone().with_input_fact(0, f32::fact(dims!(n, N_FEATURES)).into())?;
            let typed = model.into_typed()?;
            let out = typed.output_fact(0)?.shape.clone();
            Ok((out, typed))
        })()
        .map_err(|e| invalid(format!("{e:#}")))?;
        let (out, typed) = plan;
        let width = out.last().and_then(|d| d.to_i64().ok());
        if out.len() != 2 || width != Some(1) {
            return Err(shape("output shape", "[N, 1]".into(), format!("{out:?}")));
        }
        let plan = typed.into_optimized().and_then(|m| m.into_runnable()).map_err(|e| invalid(format!("{e:#}")))?;
        Ok(OnnxShortfall { name, plan, range })
    }
}

impl ShortfallModel for OnnxShortfall {
    fn name(&self) -> &str {
        &self.name
    }

    fn predict(&self, rows: &[FeatureRow]) -> Result<Vec<f32>, String> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let input = Tensor::from_shape(&[rows.len(), N_FEATURES], &flat).map_err(|e| e.to_string())?;
        let out = self.plan.run(tvec!(input.into_tvalue())).map_err(|e| format!("{e:#}"))?;
        Ok(out[0].to_plain_array_view::<f32>().map_err(|e| e.to_string())?.iter().copied().collect())
    }

    fn trained_range(&self) -> &[(f32, f32); N_FEATURES] {
        &self.range
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn models_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    /// onnxruntime ran the committed model on held-back candidates (`train_scorer.py`); tract
    /// must agree within 1e-5.
    #[test]
    fn tract_runs_the_committed_shortfall_model_as_onnxruntime_does() {
        let model = OnnxShortfall::load(&models_dir().join("placement-shortfall-v1.onnx")).unwrap();
        let text =
            std::fs::read_to_string(models_dir().join("fixtures/shortfall-parity.json")).expect("models/fixtures/shortfall-parity.json");
        let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rows: Vec<FeatureRow> = fixture["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v: Vec<f32> = r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
                v.try_into().expect("12 features")
            })
            .collect();
        let want: Vec<f32> = fixture["shortfall"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(rows.len() >= 10 && rows.len() == want.len());
        let got = model.predict(&rows).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-5, "row {i}: tract {a}, onnxruntime {b}");
        }
        // One row at a time gives what the batch gave.
        assert_eq!(model.predict(&rows[3..4]).unwrap()[0], got[3]);
        // The ranges bound what it was trained on: probabilities and shares, finite.
        let range = model.trained_range();
        assert!(range.iter().all(|(lo, hi)| lo <= hi));
        assert!(range[0].0 >= 0.0 && range[0].1 <= 1.0, "risk_after is a probability: {:?}", range[0]);
    }

    #[test]
    fn missing_corrupt_and_foreign_models_are_named_errors() {
        let dir = std::env::temp_dir().join(format!("presage-shortfall-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = OnnxShortfall::load(&dir.join("none.onnx")).unwrap_err();
        assert!(matches!(e, ModelError::Read { .. }) && e.to_string().contains("none.onnx"), "{e}");

        let corrupt = dir.join("corrupt.onnx");
        let mut bytes = std::fs::read(models_dir().join("placement-shortfall-v1.onnx")).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&corrupt, &bytes).unwrap();
        let e = OnnxShortfall::load(&corrupt).unwrap_err();
        assert!(e.to_string().contains("corrupt.onnx"), "{e}");

        // A forecaster is not a shortfall model: refused by its feature vector's name.
        let e = OnnxShortfall::load(&models_dir().join("cpu-quantiles-v2.onnx")).unwrap_err();
        assert!(matches!(e, ModelError::Shape { .. }) && e.to_string().contains("feature vector shortfall-v1, the model has v2"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
