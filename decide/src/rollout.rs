//! Rolling a plan of configuration changes out the careful way: a canary first, judged against
//! comparable VMs left as they were, then the rest, or everything put back.
//!
//! - [`split`]: which of a plan's VMs are treated first (the canary) and which wait (the
//!   control group): within each stratum (VMs alike: same kind of change, similar size), a
//!   seeded draw of the canary fraction, so both groups hold alike VMs.
//! - [`judge`]: after the watch, each figure that matters (forecast SLA risk, unserved
//!   demand, application latency, ...: larger is worse) is compared as each VM's change from
//!   before the rollout to during the watch; the canary is worse when its mean change exceeds
//!   the control's by more than both a minimum effect and `z` standard errors (Welch). Any
//!   figure worse means roll back; too few VMs with the figure means it is not judged.
//! - [`Rollout`]: the stages (e.g. 10 %, then all), where the rollout stands, and the next
//!   step ([`Rollout::next`]); the coordinator journals every step before it takes it, so a
//!   restart resumes from the record (or finishes a rollback), never from memory.

use serde::{Deserialize, Serialize};

use crate::optimise::Rng;

/// One VM of a plan, with what makes VMs alike for the canary's draw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedVm {
    pub vm: String,
    /// VMs of the same stratum are alike (e.g. "shrink memory, 2-4 GiB").
    pub stratum: String,
}

/// Splits the plan's VMs into the canary (`fraction` of each stratum, at least one VM of the
/// plan) and the rest, by a seeded draw.
pub fn split(vms: &[PlannedVm], fraction: f64, seed: u64) -> (Vec<String>, Vec<String>) {
    let mut strata: Vec<&str> = vms.iter().map(|v| v.stratum.as_str()).collect();
    strata.sort_unstable();
    strata.dedup();
    let (mut canary, mut rest) = (Vec::new(), Vec::new());
    for (k, stratum) in strata.iter().enumerate() {
        let mut members: Vec<&PlannedVm> = vms.iter().filter(|v| v.stratum == *stratum).collect();
        members.sort_by(|a, b| a.vm.cmp(&b.vm));
        Rng::for_job(seed, 0xCA9A, k as u64).shuffle(&mut members);
        let take = ((members.len() as f64 * fraction.clamp(0.0, 1.0)).round() as usize).min(members.len());
        for (x, m) in members.into_iter().enumerate() {
            if x < take { canary.push(m.vm.clone()) } else { rest.push(m.vm.clone()) }
        }
    }
    if canary.is_empty() && !rest.is_empty() && fraction > 0.0 {
        rest.sort();
        let pick = Rng::for_job(seed, 0xCA9A, u64::MAX).below(rest.len());
        canary.push(rest.remove(pick));
    }
    canary.sort();
    rest.sort();
    (canary, rest)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeConfig {
    /// Standard errors the canary's mean must exceed the control's by.
    pub z: f64,
    /// The least difference that counts, per figure (in the figure's units).
    pub min_effect: f64,
    /// The fewest VMs in each group for a figure to be judged.
    pub min_vms: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        // One canary VM is judged (a small plan's canary is one VM); its spread is then the
        // control's alone.
        JudgeConfig { z: 2.0, min_effect: 0.01, min_vms: 1 }
    }
}

/// One figure's changes (during the watch minus before), one per VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FigureChanges {
    pub figure: String,
    pub canary: Vec<f64>,
    pub control: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FigureVerdict {
    pub figure: String,
    /// NaN when not judged (kept as JSON's null).
    #[serde(with = "nan_as_null")]
    pub canary_mean: f64,
    #[serde(with = "nan_as_null")]
    pub control_mean: f64,
    /// The standard error of the difference of the means.
    #[serde(with = "nan_as_null")]
    pub standard_error: f64,
    /// `None`: not judged (too few VMs).
    pub worse: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub figures: Vec<FigureVerdict>,
    /// Whether any figure is worse beyond noise.
    pub roll_back: bool,
}

/// A figure not judged is NaN, which JSON cannot hold: it is written as null and read back as
/// NaN (a journaled verdict must read back, or its rollout is lost).
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() { s.serialize_f64(*x) } else { s.serialize_none() }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (m, var)
}

/// Judges the canary against the control on every figure (non-finite values are left out).
pub fn judge(figures: &[FigureChanges], cfg: &JudgeConfig) -> Verdict {
    let verdicts: Vec<FigureVerdict> = figures
        .iter()
        .map(|f| {
            let canary: Vec<f64> = f.canary.iter().copied().filter(|x| x.is_finite()).collect();
            let control: Vec<f64> = f.control.iter().copied().filter(|x| x.is_finite()).collect();
            if canary.len() < cfg.min_vms.max(1) || control.len() < cfg.min_vms.max(1) {
                return FigureVerdict {
                    figure: f.figure.clone(),
                    canary_mean: f64::NAN,
                    control_mean: f64::NAN,
                    standard_error: f64::NAN,
                    worse: None,
                };
            }
            let ((mc, vc), (mo, vo)) = (mean_var(&canary), mean_var(&control));
            let se = (vc / canary.len() as f64 + vo / control.len() as f64).sqrt();
            let diff = mc - mo;
            FigureVerdict {
                figure: f.figure.clone(),
                canary_mean: mc,
                control_mean: mo,
                standard_error: se,
                worse: Some(diff > cfg.min_effect && diff > cfg.z * se),
            }
        })
        .collect();
    let roll_back = verdicts.iter().any(|v| v.worse == Some(true));
    Verdict { figures: verdicts, roll_back }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Applying stage `stage`'s changes (to be applied, then watched).
    Applying { stage: usize },
    /// Stage `stage` applied at `since_ms`; watched until `since_ms + watch_ms`.
    Watching { stage: usize, since_ms: u64 },
    /// Putting every applied change back.
    RollingBack { reason: String },
    /// Every stage applied and watched.
    Done,
    /// Every applied change put back.
    RolledBack { reason: String },
}

/// What the coordinator does next for a rollout.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Apply these VMs' changes, then record [`Rollout::applied`].
    Apply(Vec<String>),
    /// Nothing until `until_ms`.
    Wait { until_ms: u64 },
    /// Judge the applied VMs (the canary) against those not yet applied (the control), then
    /// record [`Rollout::judged`].
    Judge { canary: Vec<String>, control: Vec<String> },
    /// Put these VMs' changes back, then record [`Rollout::rolled_back`].
    Revert(Vec<String>),
    /// Finished (done or rolled back).
    Finished,
}

/// A staged rollout of one plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// The VMs of each stage, in order (a VM in one stage only).
    pub stages: Vec<Vec<String>>,
    pub watch_ms: u64,
    pub phase: Phase,
    /// The VMs whose change has been applied (and not put back).
    pub applied: Vec<String>,
}

impl Rollout {
    /// A canary of `fraction` of the plan's VMs (stratified, seeded), then the rest.
    pub fn canary(vms: &[PlannedVm], fraction: f64, watch_ms: u64, seed: u64) -> Rollout {
        let (canary, rest) = split(vms, fraction, seed);
        let stages = if rest.is_empty() {
            vec![canary]
        } else if canary.is_empty() {
            vec![rest]
        } else {
            vec![canary, rest]
        };
        Rollout { stages, watch_ms, phase: Phase::Applying { stage: 0 }, applied: Vec::new() }
    }

    /// The next step at `now_ms`.
    pub fn next(&self, now_ms: u64) -> Action {
        match &self.phase {
            Phase::Applying { stage } => Action::Apply(self.stages.get(*stage).cloned().unwrap_or_default()),
            Phase::Watching { stage, since_ms } => {
                let until = since_ms.saturating_add(self.watch_ms);
                if now_ms < until {
                    return Action::Wait { until_ms: until };
                }
                let control: Vec<String> = self.stages[stage + 1..].iter().flatten().cloned().collect();
                Action::Judge { canary: self.applied.clone(), control }
            }
            Phase::RollingBack { .. } => Action::Revert(self.applied.clone()),
            Phase::Done | Phase::RolledBack { .. } => Action::Finished,
        }
    }

    /// Stage applied (those of `vms` that took effect) at `now_ms`: watch it, or, for the last
    /// stage, done. A stage none of whose changes took effect is rolled back.
    pub fn applied(&mut self, vms: &[String], now_ms: u64) {
        let Phase::Applying { stage } = self.phase else { return };
        for v in vms {
            if !self.applied.contains(v) {
                self.applied.push(v.clone());
            }
        }
        self.phase = if vms.is_empty() && !self.stages.get(stage).is_none_or(|s| s.is_empty()) {
            Phase::RollingBack { reason: format!("none of stage {}'s changes took effect", stage + 1) }
        } else if stage + 1 >= self.stages.len() {
            Phase::Done
        } else {
            Phase::Watching { stage, since_ms: now_ms }
        };
    }

    /// The watch judged: on to the next stage, or back.
    pub fn judged(&mut self, verdict: &Verdict) {
        let Phase::Watching { stage, .. } = self.phase else { return };
        self.phase = if verdict.roll_back {
            let worse: Vec<&str> = verdict.figures.iter().filter(|f| f.worse == Some(true)).map(|f| f.figure.as_str()).collect();
            Phase::RollingBack { reason: format!("the canary did worse on {}", worse.join(", ")) }
        } else {
            Phase::Applying { stage: stage + 1 }
        };
    }

    /// An operator's or a failure's rollback.
    pub fn abort(&mut self, reason: &str) {
        if !matches!(self.phase, Phase::Done | Phase::RolledBack { .. }) {
            self.phase = Phase::RollingBack { reason: reason.to_string() };
        }
    }

    /// The rollback ends with the changes still applied left as they are (they could not be
    /// put back: said in the reason, and kept in `applied`).
    pub fn give_up_rollback(&mut self, why: &str) {
        if let Phase::RollingBack { reason } = &self.phase {
            self.phase = Phase::RolledBack { reason: format!("{reason}; not put back ({why}): {}", self.applied.join(", ")) };
        }
    }

    /// These VMs' changes put back.
    pub fn rolled_back(&mut self, vms: &[String]) {
        self.applied.retain(|v| !vms.contains(v));
        if let Phase::RollingBack { reason } = &self.phase
            && self.applied.is_empty()
        {
            self.phase = Phase::RolledBack { reason: reason.clone() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> Vec<PlannedVm> {
        (0..n).map(|i| PlannedVm { vm: format!("vm{i:02}"), stratum: if i % 2 == 0 { "shrink".into() } else { "move".into() } }).collect()
    }

    #[test]
    fn the_canary_takes_the_fraction_of_each_stratum_and_no_vm_twice() {
        let (canary, rest) = split(&plan(40), 0.1, 7);
        assert_eq!(canary.len(), 4);
        assert_eq!(canary.iter().filter(|v| v[2..].parse::<usize>().unwrap() % 2 == 0).count(), 2, "{canary:?}");
        assert_eq!(canary.len() + rest.len(), 40);
        assert!(canary.iter().all(|v| !rest.contains(v)));
        assert_eq!(split(&plan(40), 0.1, 7), (canary.clone(), rest), "seeded");
        assert_ne!(split(&plan(40), 0.1, 8).0, canary, "another seed, another draw");
        // A tiny plan still gets a canary of one.
        assert_eq!(split(&plan(3), 0.1, 1).0.len(), 1);
    }

    #[test]
    fn a_canary_worse_beyond_noise_is_rolled_back_and_noise_is_not() {
        let cfg = JudgeConfig::default();
        let noise = |k: usize, shift: f64| (0..k).map(|i| shift + 0.02 * ((i * 7 % 5) as f64 - 2.0)).collect::<Vec<f64>>();
        let worse = judge(&[FigureChanges { figure: "unserved".into(), canary: noise(5, 0.2), control: noise(20, 0.0) }], &cfg);
        assert!(worse.roll_back);
        let same = judge(&[FigureChanges { figure: "unserved".into(), canary: noise(5, 0.005), control: noise(20, 0.0) }], &cfg);
        assert!(!same.roll_back, "{same:?}");
        // Better is never a reason to roll back; too few VMs is not judged.
        assert!(!judge(&[FigureChanges { figure: "risk".into(), canary: noise(5, -0.3), control: noise(20, 0.0) }], &cfg).roll_back);
        let one = judge(&[FigureChanges { figure: "latency".into(), canary: vec![9.0], control: vec![0.0, 0.1] }], &cfg);
        assert!(one.roll_back, "a single canary VM far worse than the control: {one:?}");
        let cfg = JudgeConfig { min_vms: 2, ..cfg };
        let few = judge(&[FigureChanges { figure: "latency".into(), canary: vec![9.0], control: vec![0.0, 0.1] }], &cfg);
        assert_eq!(few.figures[0].worse, None);
        assert!(!few.roll_back);
        // A verdict with a figure not judged (NaN means) is journaled as JSON and reads back.
        let text = serde_json::to_string(&few).unwrap();
        let back: Verdict = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(back.figures[0].canary_mean.is_nan() && back.figures[0].standard_error.is_nan() && back.figures[0].worse.is_none());
        let judged: Verdict = serde_json::from_str(&serde_json::to_string(&worse).unwrap()).unwrap();
        assert_eq!(judged, worse);
    }

    #[test]
    fn a_rollout_goes_canary_watch_judge_rest_or_back() {
        let mut r = Rollout::canary(&plan(20), 0.1, 60_000, 1);
        let Action::Apply(canary) = r.next(0) else { panic!() };
        assert_eq!(canary.len(), 2);
        r.applied(&canary, 1_000);
        assert_eq!(r.next(30_000), Action::Wait { until_ms: 61_000 });
        let Action::Judge { canary: judged, control } = r.next(61_000) else { panic!() };
        assert_eq!((judged.len(), control.len()), (2, 18));
        let mut back = r.clone();
        back.judged(&Verdict { figures: vec![], roll_back: true });
        assert_eq!(back.next(62_000), Action::Revert(canary.clone()));
        let mut stuck = back.clone();
        back.rolled_back(&canary);
        assert!(matches!(back.phase, Phase::RolledBack { .. }));
        // A rollback that cannot finish says what it left applied.
        stuck.rolled_back(&canary[..1]);
        stuck.give_up_rollback("refused");
        let Phase::RolledBack { reason } = &stuck.phase else { panic!("{:?}", stuck.phase) };
        assert!(reason.contains(&canary[1]) && !reason.contains(&canary[0]), "{reason}");
        assert_eq!(stuck.next(70_000), Action::Finished);
        assert_eq!(back.next(63_000), Action::Finished);
        r.judged(&Verdict { figures: vec![], roll_back: false });
        let Action::Apply(rest) = r.next(62_000) else { panic!() };
        assert_eq!(rest, control);
        r.applied(&rest, 63_000);
        assert_eq!(r.phase, Phase::Done);
        // A record read back (a restarted coordinator) takes the same next step.
        let again: Rollout = serde_json::from_str(&serde_json::to_string(&back).unwrap()).unwrap();
        assert_eq!(again, back);
    }
}
