//! The agent's demand forecaster: every cycle it turns each VM's samples into series of 5-minute
//! steps (CPU busy fraction, and memory in use where the hypervisor reports it), forecasts all
//! VMs in one batch per resource (an ONNX model through tract, or a baseline when no model is
//! configured or it cannot be loaded), calibrates each VM's intervals online on that VM's own
//! outcomes, and attaches the forecast to the VM's sample in the report.
//!
//! With a store, the step series and what was learnt of each VM survive a restart: every
//! completed step is written as it completes, so an agent restarted within the hour resumes
//! forecasting at once, with the week of history the models read.
//!
//! Runs inside the blocking sampling cycle (tract inference blocks).

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use presage_forecast::fleet::{FleetForecaster, SeriesRequest};
use presage_forecast::online::LearntState;
use presage_forecast::{Forecast, MAX_HORIZON, STEP_S, SeriesContext, WEEK};
use presage_protocol::pb::{QuantileForecast, VmForecast, VmSample};
use tracing::warn;

use crate::store::{BatchOp, KvStore, KvTree, Order, StoreError, describe_key, split_vm_key, vm_key, vm_prefix};

/// Completed steps kept per VM: a week and a little, for the models' week-ago features.
const KEEP_STEPS: usize = WEEK + MAX_HORIZON + 1;
/// Missing steps filled in rather than restarting the series; also how long a VM that is no
/// longer listed keeps its series (a listing that missed it once loses nothing).
const MAX_FILLED_GAP: u64 = MAX_HORIZON as u64;
/// What was learnt is saved once per this many completed steps (an hour), and at shutdown.
const SAVE_EVERY_STEPS: u64 = MAX_HORIZON as u64;

/// What the agent forecasts for every VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    /// Busy fraction of the VM's vCPUs.
    Cpu,
    /// Memory in use as a fraction of the memory allocated.
    Memory,
}

impl Resource {
    /// This resource's value in a sample; `None` when the hypervisor does not report it.
    fn value(self, vm: &VmSample) -> Option<f32> {
        match self {
            Resource::Cpu => Some(vm.cpu_utilisation as f32),
            Resource::Memory => vm.memory_fraction().map(|m| m as f32),
        }
    }

    /// The store tree that keeps what was learnt of each VM's forecasts (`LearntState::encode`:
    /// calibration scales and mixing weights), keyed by VM id.
    pub fn learnt_tree(self) -> &'static str {
        match self {
            Resource::Cpu => "calibration",
            Resource::Memory => "calibration-memory",
        }
    }

    /// The store tree of each VM's completed steps: key VM id, 0x00, step (big-endian), value
    /// the step's mean as a little-endian f32.
    pub fn steps_tree(self) -> &'static str {
        match self {
            Resource::Cpu => "steps-cpu",
            Resource::Memory => "steps-memory",
        }
    }
}

/// A step that completed, and the steps that left the series because of it.
#[derive(Debug, PartialEq)]
struct Completed {
    step: u64,
    value: f32,
    dropped: Range<u64>,
}

/// One VM's 5-minute series: completed steps, and the step in progress.
#[derive(Default)]
struct StepSeries {
    /// Completed step means, oldest first; the last one is step `last_step`.
    values: VecDeque<f32>,
    last_step: Option<u64>,
    current: Option<(u64, f64, u32)>,
    /// The step of the latest sample.
    seen: u64,
}

impl StepSeries {
    /// Adds a sample taken during `step`; returns a step that just completed, with its mean.
    fn add(&mut self, step: u64, value: f32) -> Option<Completed> {
        self.seen = self.seen.max(step);
        match &mut self.current {
            Some((s, sum, n)) if *s == step => {
                *sum += value as f64;
                *n += 1;
                None
            }
            Some((s, sum, n)) if step > *s => {
                let (done, mean) = (*s, (*sum / *n as f64) as f32);
                self.current = Some((step, value as f64, 1));
                Some(self.complete(done, mean))
            }
            Some(_) => None, // a sample from the past: ignore
            None => {
                self.current = Some((step, value as f64, 1));
                None
            }
        }
    }

    /// The step of the oldest value kept.
    fn first_step(&self) -> Option<u64> {
        self.last_step.map(|l| l + 1 - self.values.len() as u64)
    }

    /// Appends completed step `done`. Samples coarser than a step (a fast replay, or an agent
    /// that was down a few minutes) skip a few steps: they take the value that follows them. A
    /// long gap breaks the series: it starts again.
    fn complete(&mut self, done: u64, mean: f32) -> Completed {
        let mut dropped = 0..0;
        match (self.last_step, self.first_step()) {
            (Some(l), _) if done <= l => return Completed { step: done, value: mean, dropped },
            (Some(l), _) if done - l <= MAX_FILLED_GAP => self.values.extend(std::iter::repeat_n(mean, (done - l - 1) as usize)),
            (Some(l), Some(first)) => {
                dropped = first..l + 1;
                self.values.clear();
            }
            _ => {}
        }
        self.values.push_back(mean);
        self.last_step = Some(done);
        self.seen = self.seen.max(done);
        let excess = self.values.len().saturating_sub(KEEP_STEPS);
        if excess > 0 {
            let first = self.first_step().unwrap_or(done);
            dropped = first..first + excess as u64;
            self.values.drain(..excess);
        }
        Completed { step: done, value: mean, dropped }
    }
}

/// What one cycle changed in a resource's stored state.
#[derive(Default)]
struct Changes {
    /// Steps completed (inserted) and steps that left their series (removed).
    steps: Vec<BatchOp>,
    /// VMs forgotten: their stored steps and learnt state go too.
    gone: Vec<String>,
}

/// One resource's forecasting: the model (or its fallback), each VM's step series and online
/// learner, and where they are kept.
struct ResourceForecaster {
    resource: Resource,
    fleet: FleetForecaster<String>,
    series: HashMap<String, StepSeries>,
    /// The learnt-state and step trees, with a store.
    trees: Option<(Arc<dyn KvTree>, Arc<dyn KvTree>)>,
}

impl ResourceForecaster {
    fn new(resource: Resource, model: Option<&Path>) -> ResourceForecaster {
        ResourceForecaster { resource, fleet: FleetForecaster::load(model), series: HashMap::new(), trees: None }
    }

    /// Resumes what an earlier run learnt and the step series it kept. Entries that cannot be
    /// read are logged and skipped (relearnt, or overwritten as the series goes on).
    fn attach(&mut self, store: &dyn KvStore) -> Result<(), StoreError> {
        let learnt = store.tree(self.resource.learnt_tree())?;
        let steps = store.tree(self.resource.steps_tree())?;
        let mut resumed = 0;
        for (k, v) in learnt.scan_prefix(b"", Order::Ascending, usize::MAX)? {
            let key = String::from_utf8_lossy(&k).into_owned();
            match LearntState::decode(&v) {
                Some(state) => {
                    self.fleet.resume(key, &state);
                    resumed += 1;
                }
                None => warn!(resource = ?self.resource, vm = %key, bytes = v.len(), "unreadable calibration entry; relearning it"),
            }
        }
        // Steps that leave a series as it is rebuilt (older than it keeps, or before a long gap)
        // leave the store too.
        let mut stale = Vec::new();
        for (k, v) in steps.scan_prefix(b"", Order::Ascending, usize::MAX)? {
            let (Some((vm, step)), Ok(bytes)) = (split_vm_key(&k), <[u8; 4]>::try_from(v.as_slice())) else {
                warn!(resource = ?self.resource, key = %describe_key(&k), bytes = v.len(), "unreadable forecast step entry; skipped");
                continue;
            };
            let value = f32::from_le_bytes(bytes);
            if !(0.0..=1.0).contains(&value) {
                warn!(resource = ?self.resource, vm, step, value, "forecast step out of range; skipped");
                continue;
            }
            let c = self.series.entry(vm.to_string()).or_default().complete(step, value);
            stale.extend(c.dropped.map(|t| BatchOp::Remove(vm_key(vm, t))));
        }
        steps.apply(stale)?;
        if resumed > 0 || !self.series.is_empty() {
            tracing::info!(resource = ?self.resource, learnt = resumed, series = self.series.len(), "forecast state resumed from the store");
        }
        self.trees = Some((learnt, steps));
        Ok(())
    }

    /// Feeds this cycle's samples; returns what the store must follow.
    fn observe(&mut self, step: u64, vms: &[VmSample]) -> Changes {
        let mut changes = Changes::default();
        for vm in vms {
            let Some(value) = self.resource.value(vm) else { continue };
            let series = self.series.entry(vm.vm_id.clone()).or_default();
            if let Some(c) = series.add(step, value) {
                self.fleet.observe(&vm.vm_id, c.step, c.value);
                changes.steps.extend(c.dropped.map(|t| BatchOp::Remove(vm_key(&vm.vm_id, t))));
                changes.steps.push(BatchOp::Insert(vm_key(&vm.vm_id, c.step), c.value.to_le_bytes().to_vec()));
            }
        }
        // VMs not seen for longer than a filled gap are gone (migrated away, undefined).
        changes.gone = self.series.iter().filter(|(_, s)| s.seen + MAX_FILLED_GAP < step).map(|(id, _)| id.clone()).collect();
        for id in &changes.gone {
            self.series.remove(id);
        }
        let series = &self.series;
        self.fleet.retain(|id| series.contains_key(id));
        changes
    }

    /// Writes one cycle's changes (no-op without a store).
    fn persist(&self, changes: Changes) -> Result<(), StoreError> {
        let Some((learnt, steps)) = &self.trees else { return Ok(()) };
        let mut step_ops = changes.steps;
        for vm in &changes.gone {
            step_ops.extend(steps.scan_prefix(&vm_prefix(vm), Order::Ascending, usize::MAX)?.into_iter().map(|(k, _)| BatchOp::Remove(k)));
        }
        if !changes.gone.is_empty() {
            learnt.apply(changes.gone.iter().map(|vm| BatchOp::Remove(vm.as_bytes().to_vec())).collect())?;
        }
        if !step_ops.is_empty() {
            steps.apply(step_ops)?;
        }
        Ok(())
    }

    /// Forecasts every listed VM with enough history: per VM, the first forecast step and the
    /// published quantiles.
    fn forecast(&mut self, vms: &[VmSample]) -> Vec<Option<(u64, Forecast)>> {
        // Each series is read in place (made contiguous, which is free unless its ring
        // wrapped), not copied every cycle.
        for s in self.series.values_mut() {
            s.values.make_contiguous();
        }
        let min_history = self.fleet.min_history();
        let (ready, requests): (Vec<usize>, Vec<SeriesRequest<'_, String>>) = vms
            .iter()
            .enumerate()
            .filter_map(|(i, vm)| {
                self.resource.value(vm)?;
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
        let mut out: Vec<Option<(u64, Forecast)>> = vec![None; vms.len()];
        for ((i, r), f) in ready.into_iter().zip(&requests).zip(forecasts) {
            out[i] = f.map(|f| (r.first_step, f));
        }
        out
    }

    /// Writes what was learnt of every VM (no-op without a store).
    fn save(&self) -> Result<(), StoreError> {
        let Some((learnt, _)) = &self.trees else { return Ok(()) };
        learnt.apply(self.fleet.learnt().map(|(k, s)| BatchOp::Insert(k.as_bytes().to_vec(), s.encode())).collect())
    }
}

/// The agent's forecasts of every VM's CPU and memory demand.
pub struct DemandForecaster {
    cpu: ResourceForecaster,
    memory: ResourceForecaster,
    /// The step of the last save of what was learnt (with a store).
    last_save: Option<u64>,
}

impl DemandForecaster {
    /// The models at `cpu_model` and `memory_model`, each replaced by the rolling-quantile
    /// baseline when none is configured or it cannot be used (the reason goes into
    /// [`status`](Self::status), [`memory_status`](Self::memory_status) and the log).
    pub fn new(cpu_model: Option<&Path>, memory_model: Option<&Path>) -> DemandForecaster {
        DemandForecaster {
            cpu: ResourceForecaster::new(Resource::Cpu, cpu_model),
            memory: ResourceForecaster::new(Resource::Memory, memory_model),
            last_save: None,
        }
    }

    /// Keeps the step series and what was learnt in `store`, and resumes what an earlier run
    /// of the agent kept there.
    pub fn with_store(mut self, store: &dyn KvStore) -> Result<DemandForecaster, StoreError> {
        self.cpu.attach(store)?;
        self.memory.attach(store)?;
        Ok(self)
    }

    /// Writes what was learnt of every VM to the store (no-op without one).
    pub fn save(&mut self) -> Result<(), StoreError> {
        self.cpu.save()?;
        self.memory.save()
    }

    /// Which CPU forecaster runs, and why when it is a fallback.
    pub fn status(&self) -> &str {
        self.cpu.fleet.status()
    }

    /// Which memory forecaster runs, and why when it is a fallback.
    pub fn memory_status(&self) -> &str {
        self.memory.fleet.status()
    }

    /// Per resource (`cpu`, `memory`): the model forecasting now and how it is doing on its
    /// raw one-step-ahead forecasts against the baseline.
    pub fn health(&self) -> [(&'static str, String, presage_forecast::fleet::ModelHealth); 2] {
        [("cpu", self.cpu.fleet.name(), self.cpu.fleet.health()), ("memory", self.memory.fleet.name(), self.memory.fleet.health())]
    }

    /// Feeds this cycle's samples, taken during 5-minute step `step`, and attaches a forecast to
    /// every VM with enough history.
    pub fn update(&mut self, step: u64, vms: &mut [VmSample]) {
        let _span = tracing::debug_span!("forecast", vms = vms.len(), step).entered();
        for r in [&mut self.cpu, &mut self.memory] {
            let changes = r.observe(step, vms);
            if let Err(e) = r.persist(changes) {
                warn!(resource = ?r.resource, error = %e, "saving forecast steps failed; the series goes on in memory");
            }
        }
        let cpu = self.cpu.forecast(vms);
        let memory = self.memory.forecast(vms);
        let (cpu_name, memory_name) = (self.cpu.fleet.name(), self.memory.fleet.name());
        for ((vm, c), m) in vms.iter_mut().zip(cpu).zip(memory) {
            let Some((first, f)) = c else { continue };
            vm.forecast = Some(VmForecast {
                forecaster: cpu_name.clone(),
                step_seconds: STEP_S as u32,
                first_step: first,
                cpu_p10: f.q.iter().map(|q| q[0]).collect(),
                cpu_p50: f.q.iter().map(|q| q[1]).collect(),
                cpu_p90: f.q.iter().map(|q| q[2]).collect(),
                cpu_peak: f.peak,
                // Memory rides along when its series is at the same step as CPU's.
                memory: m.filter(|(m_first, _)| *m_first == first).map(|(_, f)| QuantileForecast {
                    forecaster: memory_name.clone(),
                    p10: f.q.iter().map(|q| q[0]).collect(),
                    p50: f.q.iter().map(|q| q[1]).collect(),
                    p90: f.q.iter().map(|q| q[2]).collect(),
                }),
            });
        }
        if self.cpu.trees.is_some() && self.last_save.is_none_or(|l| step >= l + SAVE_EVERY_STEPS) {
            match self.save() {
                Ok(()) => self.last_save = Some(step),
                Err(e) => warn!(error = %e, "saving forecast calibration failed; will retry"),
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

    /// A VM whose hypervisor reports memory: `used` of 1 GiB.
    fn with_memory(id: &str, cpu: f64, used: f64) -> VmSample {
        VmSample { memory_bytes: 1 << 30, memory_used_bytes: (used * (1u64 << 30) as f64) as u64, ..sample(id, cpu) }
    }

    fn models() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
    }

    fn model(resource: &str) -> std::path::PathBuf {
        models().join(format!("{resource}-quantiles-{}.onnx", presage_forecast::features::VERSION))
    }

    fn both_models() -> DemandForecaster {
        DemandForecaster::new(Some(&model("cpu")), Some(&model("memory")))
    }

    #[test]
    fn forecasts_appear_once_a_vm_has_enough_completed_steps() {
        let mut f = both_models();
        assert_eq!((f.status(), f.memory_status()), ("cpu-quantiles-v2", "memory-quantiles-v2"));
        // Two samples per step; step 1000 + i. After 24 completed steps (i = 24) a forecast exists.
        // "a" reports its memory (60 % in use); "young" does not.
        for i in 0..30u64 {
            for half in [0.2, 0.4] {
                let mut vms = vec![with_memory("a", half, 0.6), sample("young", 0.5)];
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
                    let m = fc.memory.as_ref().expect("a memory forecast rides along");
                    assert_eq!((m.forecaster.as_str(), m.p50.len()), ("memory-quantiles-v2", MAX_HORIZON));
                    assert!(m.p10.iter().zip(&m.p50).zip(&m.p90).all(|((lo, mid), hi)| lo <= mid && mid <= hi));
                    assert!((m.p50[5] - 0.6).abs() < 0.05, "{:?}", m.p50);
                }
                assert!(vms[1].forecast.as_ref().is_none_or(|fc| fc.memory.is_none()), "no memory reported, none forecast");
            }
        }
    }

    #[test]
    fn a_missing_or_corrupt_model_falls_back_to_a_baseline_and_says_why() {
        let f = DemandForecaster::new(None, None);
        assert!(f.status().contains("no model configured"), "{}", f.status());
        assert!(f.memory_status().contains("no model configured"), "{}", f.memory_status());
        let f = DemandForecaster::new(Some(Path::new("/nonexistent/cpu.onnx")), Some(&model("memory")));
        assert!(f.status().starts_with("rolling-quantiles-120min") && f.status().contains("/nonexistent/cpu.onnx"), "{}", f.status());
        assert_eq!(f.memory_status(), "memory-quantiles-v2");
        let f = DemandForecaster::new(Some(&model("cpu")), Some(&models().join("fixtures/wrong-input.onnx")));
        assert!(f.memory_status().contains("wrong-input.onnx"), "{}", f.memory_status());
        assert_eq!(f.status(), "cpu-quantiles-v2");
        // The fallback forecasts all the same.
        let mut f = DemandForecaster::new(None, None);
        for i in 0..40u64 {
            let mut vms = vec![with_memory("a", 0.1 * (i % 3) as f64, 0.5)];
            f.update(i, &mut vms);
            if i > 30 {
                let fc = vms[0].forecast.as_ref().expect("forecast");
                assert!(fc.memory.as_ref().is_some_and(|m| m.forecaster.starts_with("rolling-quantiles")));
            }
        }
    }

    /// The values of `vm`'s series of `resource`.
    fn series(f: &DemandForecaster, resource: Resource, vm: &str) -> Option<(u64, Vec<f32>)> {
        let r = if resource == Resource::Cpu { &f.cpu } else { &f.memory };
        let s = r.series.get(vm)?;
        Some((s.last_step?, s.values.iter().copied().collect()))
    }

    fn learnt(f: &DemandForecaster) -> Vec<(String, LearntState)> {
        let mut v: Vec<(String, LearntState)> = f.cpu.fleet.learnt().map(|(k, s)| (k.clone(), s)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn series_and_learning_survive_a_restart_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let noisy = |i: u64| if i.is_multiple_of(2) { 0.1 } else { 0.9 };
        let run = |f: &mut DemandForecaster, from: u64, to: u64| {
            let mut last = None;
            for i in from..to {
                let mut vms = vec![with_memory("a", noisy(i), 0.3 + 0.001 * i as f64)];
                f.update(i, &mut vms);
                last = vms[0].forecast.clone();
            }
            last
        };
        let mut first = both_models().with_store(&store).unwrap();
        run(&mut first, 0, 200);
        first.save().unwrap();
        let learnt_before = learnt(&first);
        assert!(learnt_before[0].1.log_scales.iter().any(|v| *v != 0.0), "no calibration was learnt: {learnt_before:?}");
        assert!(learnt_before[0].1.mix_leads.iter().flatten().any(|v| *v != 0.0), "no mixing was learnt: {learnt_before:?}");
        let (cpu_before, memory_before) = (series(&first, Resource::Cpu, "a").unwrap(), series(&first, Resource::Memory, "a").unwrap());
        assert_eq!(cpu_before.0, 198);
        drop(first);

        // A new agent process on the same store starts from the same series and what was learnt...
        let mut resumed = both_models().with_store(&store).unwrap();
        assert_eq!(learnt(&resumed), learnt_before);
        assert_eq!(series(&resumed, Resource::Cpu, "a").unwrap(), cpu_before);
        assert_eq!(series(&resumed, Resource::Memory, "a").unwrap(), memory_before);
        // ...so it forecasts at its first cycle, not two hours later, even after 4 minutes down.
        let fc = run(&mut resumed, 200, 201).expect("a forecast at once");
        assert!(fc.memory.is_some());

        // A damaged learnt entry is relearnt and damaged step entries are skipped, not fatal.
        drop(resumed);
        store.tree(Resource::Cpu.learnt_tree()).unwrap().insert(b"a", b"xx").unwrap();
        let steps = store.tree(Resource::Cpu.steps_tree()).unwrap();
        steps.insert(&vm_key("a", 199), b"xyz").unwrap(); // value of 3 bytes
        steps.insert(b"no-step", &0.5f32.to_le_bytes()).unwrap();
        let fresh = both_models().with_store(&store).unwrap();
        assert_eq!(fresh.cpu.fleet.learnt().count(), 0);
        let (last, values) = series(&fresh, Resource::Cpu, "a").unwrap();
        assert_eq!((last, values.len()), (198, 199), "the good entries are all read back");
    }

    #[test]
    fn the_store_follows_the_series_window_and_forgets_departed_vms() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SledStore::open(dir.path()).unwrap();
        let mut f = DemandForecaster::new(None, None).with_store(&store).unwrap();
        let stored = |vm: &str| store.tree(Resource::Cpu.steps_tree()).unwrap().count_prefix(&vm_prefix(vm)).unwrap();
        let end = KEEP_STEPS as u64 + 50;
        for i in 0..end {
            let mut vms = vec![sample("long", 0.5)];
            if !(100..=105).contains(&i) {
                vms.push(sample("blinks", 0.5)); // missing for 6 steps: kept
            }
            if i < 100 {
                vms.push(sample("leaves", 0.5)); // missing from step 100: forgotten after an hour
            }
            f.update(i, &mut vms);
        }
        // Only the steps the series holds are stored: a week and an hour, not everything seen.
        assert_eq!(series(&f, Resource::Cpu, "long").unwrap().1.len(), KEEP_STEPS);
        assert_eq!(stored("long"), KEEP_STEPS);
        // The blink was filled in (no restart); the filled steps are not stored.
        assert_eq!(series(&f, Resource::Cpu, "blinks").unwrap().1.len(), KEEP_STEPS);
        assert_eq!(stored("blinks"), KEEP_STEPS - 6);
        assert!(series(&f, Resource::Cpu, "leaves").is_none());
        assert_eq!(stored("leaves"), 0);
        f.save().unwrap();
        let learnt_keys: Vec<String> = learnt(&f).into_iter().map(|(k, _)| k).collect();
        assert_eq!(learnt_keys, ["blinks", "long"]);
        // A gap longer than an hour restarts the series, and the store drops the old steps.
        for i in end + 20..end + 22 {
            f.update(i, &mut [sample("long", 0.5)]);
        }
        assert_eq!(series(&f, Resource::Cpu, "long").unwrap(), (end + 20, vec![0.5]));
        assert_eq!(stored("long"), 1);
    }

    #[test]
    fn a_completed_step_says_which_steps_left_the_series() {
        let mut s = StepSeries::default();
        for step in 0..KEEP_STEPS as u64 {
            assert_eq!(s.complete(step, 0.5).dropped, 0..0);
        }
        assert_eq!(s.complete(KEEP_STEPS as u64, 0.5).dropped, 0..1);
        // Three filled steps push three more out.
        assert_eq!(s.complete(KEEP_STEPS as u64 + 4, 0.5).dropped, 1..5);
        assert_eq!(s.first_step(), Some(5));
        // A long gap drops all of it.
        let last = KEEP_STEPS as u64 + 4;
        assert_eq!(s.complete(last + 100, 0.5).dropped, 5..last + 1);
        assert_eq!((s.first_step(), s.values.len()), (Some(last + 100), 1));
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
