//! The agent's demand forecaster: every cycle it turns each VM's samples into a series of
//! 5-minute steps, forecasts all VMs in one batch (an ONNX model through tract, or a baseline
//! when no model is configured or it cannot be loaded), calibrates each VM's intervals online
//! on that VM's own outcomes, and attaches the forecast to the VM's sample in the report.
//!
//! Runs inside the blocking sampling cycle (tract inference blocks).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use std::sync::Arc;

use presage_forecast::fleet::{FleetForecaster, SeriesRequest};
use presage_forecast::online::LearntState;
use presage_forecast::{MAX_HORIZON, STEP_S, SeriesContext, WEEK};
use presage_protocol::pb::{VmForecast, VmSample};
use tracing::warn;

use crate::store::{BatchOp, KvStore, KvTree, Order, StoreError};

/// Completed steps kept per VM: a week and a little, for the models' week-ago features.
const KEEP_STEPS: usize = WEEK + MAX_HORIZON + 1;
/// Missing steps filled in rather than restarting the series.
const MAX_FILLED_GAP: u64 = MAX_HORIZON as u64;

/// One VM's 5-minute series: completed steps, and the step in progress.
#[derive(Default)]
struct StepSeries {
    /// Completed step means, oldest first; the last one is step `last_step`.
    values: VecDeque<f32>,
    last_step: Option<u64>,
    current: Option<(u64, f64, u32)>,
}

impl StepSeries {
    /// Adds a sample taken during `step`; returns a step that just completed, with its mean.
    fn add(&mut self, step: u64, value: f32) -> Option<(u64, f32)> {
        let mut completed = None;
        match &mut self.current {
            Some((s, sum, n)) if *s == step => {
                *sum += value as f64;
                *n += 1;
            }
            Some((s, sum, n)) if step > *s => {
                let mean = (*sum / *n as f64) as f32;
                let done = *s;
                match self.last_step {
                    // Samples coarser than a step (a fast replay) skip a few steps: they take
                    // the value that follows them.
                    Some(l) if done > l + 1 && done - l <= MAX_FILLED_GAP => {
                        self.values.extend(std::iter::repeat_n(mean, (done - l - 1) as usize));
                    }
                    // A long gap (the agent was down) breaks the series: start again.
                    Some(l) if done > l + 1 => self.values.clear(),
                    _ => {}
                }
                self.values.push_back(mean);
                while self.values.len() > KEEP_STEPS {
                    self.values.pop_front();
                }
                self.last_step = Some(done);
                completed = Some((done, mean));
                self.current = Some((step, value as f64, 1));
            }
            Some(_) => {} // a sample from the past: ignore
            None => self.current = Some((step, value as f64, 1)),
        }
        completed
    }
}

pub struct DemandForecaster {
    fleet: FleetForecaster<String>,
    series: HashMap<String, StepSeries>,
    /// Where each VM's calibration is kept across restarts, and the step of the last save.
    store: Option<(Arc<dyn KvTree>, Option<u64>)>,
}

/// The store tree that keeps what was learnt of each VM's forecasts (`LearntState::encode`:
/// calibration scales and mixing weights).
pub const CALIBRATION_TREE: &str = "calibration";
/// Calibration is saved once per this many completed steps (an hour), and at shutdown.
const SAVE_EVERY_STEPS: u64 = MAX_HORIZON as u64;

impl DemandForecaster {
    /// The model at `cpu_model`, or the rolling-quantile baseline when none is configured or it
    /// cannot be used (the reason goes into [`status`](Self::status) and the log).
    pub fn new(cpu_model: Option<&Path>) -> DemandForecaster {
        DemandForecaster { fleet: FleetForecaster::load(cpu_model), series: HashMap::new(), store: None }
    }

    /// Keeps calibration in `store` and resumes what an earlier run of the agent learnt. An
    /// entry that cannot be read is logged and relearnt (it is overwritten at the next save).
    pub fn with_store(mut self, store: &dyn KvStore) -> Result<DemandForecaster, StoreError> {
        let tree = store.tree(CALIBRATION_TREE)?;
        let mut resumed = 0;
        for (k, v) in tree.scan_prefix(b"", Order::Ascending, usize::MAX)? {
            let key = String::from_utf8_lossy(&k).into_owned();
            match LearntState::decode(&v) {
                Some(state) => {
                    self.fleet.resume(key, &state);
                    resumed += 1;
                }
                None => warn!(vm = %key, bytes = v.len(), "unreadable calibration entry; relearning it"),
            }
        }
        if resumed > 0 {
            tracing::info!(vms = resumed, "forecast calibration resumed from the store");
        }
        self.store = Some((tree, None));
        Ok(self)
    }

    /// Writes every VM's calibration to the store (no-op without one).
    pub fn save(&mut self) -> Result<(), StoreError> {
        let Some((tree, _)) = &self.store else { return Ok(()) };
        let ops = self.fleet.learnt().map(|(k, s)| BatchOp::Insert(k.as_bytes().to_vec(), s.encode())).collect();
        tree.apply(ops)
    }

    /// Which forecaster runs, and why when it is a fallback.
    pub fn status(&self) -> &str {
        self.fleet.status()
    }

    /// Feeds this cycle's samples, taken during 5-minute step `step`, and attaches a forecast to
    /// every VM with enough history.
    pub fn update(&mut self, step: u64, vms: &mut [VmSample]) {
        let _span = tracing::debug_span!("forecast", vms = vms.len(), step).entered();
        for vm in vms.iter() {
            let series = self.series.entry(vm.vm_id.clone()).or_default();
            if let Some((done, y)) = series.add(step, vm.cpu_utilisation as f32) {
                self.fleet.observe(&vm.vm_id, done, y);
            }
        }
        let present: std::collections::HashSet<&str> = vms.iter().map(|v| v.vm_id.as_str()).collect();
        self.series.retain(|id, _| present.contains(id.as_str()));
        self.fleet.retain(|id| present.contains(id.as_str()));

        // Each series is read in place (made contiguous, which is free unless its ring wrapped),
        // not copied every cycle.
        for s in self.series.values_mut() {
            s.values.make_contiguous();
        }
        let min_history = self.fleet.min_history();
        let (ready, requests): (Vec<usize>, Vec<SeriesRequest<'_, String>>) = vms
            .iter()
            .enumerate()
            .filter_map(|(i, vm)| {
                let s = self.series.get(&vm.vm_id)?;
                let first = s.last_step? + 1;
                let history = s.values.as_slices().0;
                (history.len() >= min_history).then(|| {
                    (
                        i,
                        SeriesRequest {
                            key: vm.vm_id.clone(),
                            ctx: SeriesContext { history, next_time_s: first * STEP_S },
                            first_step: first,
                        },
                    )
                })
            })
            .unzip();
        let forecasts = self.fleet.forecast(&requests);
        let due = match &self.store {
            Some((_, last)) => last.is_none_or(|l| step >= l + SAVE_EVERY_STEPS),
            None => false,
        };
        let name = self.fleet.name();
        for ((&i, req), f) in ready.iter().zip(&requests).zip(forecasts) {
            let Some(f) = f else { continue };
            vms[i].forecast = Some(VmForecast {
                forecaster: name.clone(),
                step_seconds: STEP_S as u32,
                first_step: req.first_step,
                cpu_p10: f.q.iter().map(|q| q[0]).collect(),
                cpu_p50: f.q.iter().map(|q| q[1]).collect(),
                cpu_p90: f.q.iter().map(|q| q[2]).collect(),
            });
        }
        if due {
            drop(requests);
            if let Err(e) = self.save() {
                warn!(error = %e, "saving forecast calibration failed; will retry");
            } else if let Some((_, last)) = &mut self.store {
                *last = Some(step);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, cpu: f64) -> VmSample {
        VmSample { vm_id: id.into(), cpu_utilisation: cpu, ..Default::default() }
    }

    fn models() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    #[test]
    fn forecasts_appear_once_a_vm_has_enough_completed_steps() {
        let mut f = DemandForecaster::new(Some(&models().join("cpu-quantiles-v2.onnx")));
        assert_eq!(f.status(), "cpu-quantiles-v2");
        // Two samples per step; step 1000 + i. After 24 completed steps (i = 24) a forecast exists.
        for i in 0..30u64 {
            for half in [0.2, 0.4] {
                let mut vms = vec![sample("a", half), sample("young", 0.5)];
                if i >= 20 {
                    vms.truncate(1);
                    vms.push(sample("young", 0.5));
                }
                f.update(1000 + i, &mut vms);
                let a = vms[0].forecast.as_ref();
                assert_eq!(a.is_some(), i >= 24, "step {i}");
                if let Some(fc) = a {
                    assert_eq!((fc.first_step, fc.cpu_p50.len(), fc.step_seconds), (1000 + i, MAX_HORIZON, 300));
                    assert!(fc.cpu_p10.iter().zip(&fc.cpu_p90).all(|(lo, hi)| lo <= hi));
                    // The step means are 0.3; the median forecast stays near it.
                    assert!((fc.cpu_p50[0] - 0.3).abs() < 0.1, "{:?}", fc.cpu_p50);
                }
            }
        }
    }

    #[test]
    fn a_missing_or_corrupt_model_falls_back_to_a_baseline_and_says_why() {
        let f = DemandForecaster::new(None);
        assert!(f.status().contains("no model configured"), "{}", f.status());
        let f = DemandForecaster::new(Some(Path::new("/nonexistent/cpu.onnx")));
        assert!(f.status().starts_with("rolling-quantiles-120min") && f.status().contains("/nonexistent/cpu.onnx"), "{}", f.status());
        let f = DemandForecaster::new(Some(&models().join("fixtures/wrong-input.onnx")));
        assert!(f.status().contains("wrong-input.onnx"), "{}", f.status());
        // The fallback forecasts all the same.
        let mut f = DemandForecaster::new(None);
        for i in 0..40u64 {
            let mut vms = vec![sample("a", 0.1 * (i % 3) as f64)];
            f.update(i, &mut vms);
            if i > 30 {
                assert!(vms[0].forecast.is_some());
            }
        }
    }

    #[test]
    fn calibration_survives_a_restart_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let noisy = |i: u64| if i.is_multiple_of(2) { 0.1 } else { 0.9 };
        let run = |f: &mut DemandForecaster, from: u64, to: u64| {
            let mut last = None;
            for i in from..to {
                let mut vms = vec![sample("a", noisy(i))];
                f.update(i, &mut vms);
                last = vms[0].forecast.clone();
            }
            last
        };
        let model = models().join(format!("cpu-quantiles-{}.onnx", presage_forecast::features::VERSION));
        let mut first = DemandForecaster::new(Some(&model)).with_store(&store).unwrap();
        run(&mut first, 0, 200);
        first.save().unwrap();
        let learnt: Vec<(String, LearntState)> = first.fleet.learnt().map(|(k, s)| (k.clone(), s)).collect();
        assert!(learnt[0].1.log_scales.iter().any(|v| *v != 0.0), "no calibration was learnt: {learnt:?}");
        assert!(learnt[0].1.mix_leads.iter().flatten().any(|v| *v != 0.0), "no mixing was learnt: {learnt:?}");
        // A new agent process on the same store starts from what the first one learnt...
        let resumed = DemandForecaster::new(Some(&model)).with_store(&store).unwrap();
        let again: Vec<(String, LearntState)> = resumed.fleet.learnt().map(|(k, s)| (k.clone(), s)).collect();
        assert_eq!(again, learnt);
        // ...and a damaged entry is relearnt, not fatal.
        store.tree(CALIBRATION_TREE).unwrap().insert(b"a", b"xx").unwrap();
        let fresh = DemandForecaster::new(Some(&model)).with_store(&store).unwrap();
        assert_eq!(fresh.fleet.learnt().count(), 0);
    }

    #[test]
    fn a_gap_in_the_steps_restarts_the_series() {
        let mut s = StepSeries::default();
        for step in 0..30 {
            s.add(step, 0.5);
        }
        assert_eq!(s.values.len(), 29);
        s.add(100, 0.5); // completes step 29 (contiguous)
        s.add(101, 0.5); // completes step 100: a gap of 70 steps after 29
        assert_eq!(s.values.len(), 1);
        s.add(104, 0.7); // completes step 101
        s.add(105, 0.9); // completes step 104: steps 102 and 103 skipped, filled with step 104's value
        assert_eq!(s.values.iter().copied().collect::<Vec<_>>(), vec![0.5, 0.5, 0.7, 0.7, 0.7]);
    }
}
