//! The learned scorer's training data: every shortlist presage's ranking produced during a
//! replay, each candidate labelled with what the trace did next — whether the destination, with
//! the moving VMs on it and nothing else changed, would have been short of CPU (the demand its
//! VMs' traces ask for above its capacity) or of memory within the horizon.
//!
//! The rows come from the decision core's own [`candidate_features`]
//! (`presage_decide::policy::learned`) through the [`CandidateLog`] seam, so the model is trained
//! on exactly what it is later asked about. The label is a counterfactual computed from the
//! trace: it needs no rollout of the alternative, since a host's demand is the sum of its VMs'.
//!
//! [`candidate_features`]: presage_decide::policy::learned::candidate_features

use std::io::Write;
use std::sync::Mutex;

use presage_decide::policy::learned::{CandidateLog, FEATURE_NAMES, FeatureRow};

/// A row the policy produced, waiting for its label.
struct Pending {
    now_s: f64,
    group: Vec<usize>,
    host: usize,
    features: FeatureRow,
}

/// A labelled candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledCandidate {
    /// The scheduling step the decision was taken at.
    pub step: usize,
    pub vm: usize,
    pub host: usize,
    pub features: FeatureRow,
    /// The highest demand over capacity the host would have reached within the horizon.
    pub worst_cpu: f64,
    pub cpu_short: bool,
    pub memory_short: bool,
}

impl LabelledCandidate {
    /// Short of CPU or memory: what the model predicts.
    pub fn short(&self) -> bool {
        self.cpu_short || self.memory_short
    }
}

/// Collects shortlists during one run (a [`CandidateLog`]), keeping one row in `every`.
pub struct CandidateRecorder {
    /// Steps ahead a label looks (the policy's horizon).
    pub horizon: usize,
    every: usize,
    state: Mutex<RecorderState>,
}

#[derive(Default)]
struct RecorderState {
    offered: u64,
    pending: Vec<Pending>,
    rows: Vec<LabelledCandidate>,
}

impl CandidateRecorder {
    pub fn new(horizon: usize, every: usize) -> CandidateRecorder {
        CandidateRecorder { horizon: horizon.max(1), every: every.max(1), state: Mutex::new(RecorderState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        // A panic elsewhere while holding the lock leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the rows waiting for a label to the simulator.
    pub(crate) fn take_pending(&self) -> Vec<(f64, Vec<usize>, usize, FeatureRow)> {
        std::mem::take(&mut self.lock().pending).into_iter().map(|p| (p.now_s, p.group, p.host, p.features)).collect()
    }

    pub(crate) fn push(&self, row: LabelledCandidate) {
        self.lock().rows.push(row);
    }

    /// The labelled rows so far.
    pub fn rows(&self) -> Vec<LabelledCandidate> {
        self.lock().rows.clone()
    }

    /// Writes the rows as CSV: `step,vm,host`, the features by name, `worst_cpu,cpu_short,memory_short`.
    pub fn write_csv(&self, mut out: impl Write) -> std::io::Result<()> {
        writeln!(out, "step,vm,host,{},worst_cpu,cpu_short,memory_short", FEATURE_NAMES.join(","))?;
        for r in &self.lock().rows {
            write!(out, "{},{},{}", r.step, r.vm, r.host)?;
            for f in r.features {
                write!(out, ",{f}")?;
            }
            writeln!(out, ",{:.5},{},{}", r.worst_cpu, u8::from(r.cpu_short), u8::from(r.memory_short))?;
        }
        out.flush()
    }
}

impl CandidateLog for CandidateRecorder {
    fn record(&self, now_s: f64, group: &[usize], host: usize, features: &FeatureRow) {
        let mut s = self.lock();
        s.offered += 1;
        if (s.offered - 1).is_multiple_of(self.every as u64) {
            s.pending.push(Pending { now_s, group: group.to_vec(), host, features: *features });
        }
    }
}
