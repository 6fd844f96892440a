//! A learned member of the destination ensemble: a model that predicts whether a candidate
//! destination will be short of CPU or memory within the horizon if the moving VMs land on it,
//! trained on simulator rollouts of the public traces (`models/train_scorer.py`).
//!
//! - What the model sees of a candidate is [`candidate_features`]: the destination's forecast
//!   demand after the move (mean, spread, the heuristic's own probabilities), the moving VMs'
//!   share of it, their reach above their forecasts, memory and how full the host is by size.
//!   The same function fills the rows the simulator records for training ([`CandidateLog`]), so
//!   what is trained on is what is judged.
//! - The heuristic ensemble keeps the first word: it shortlists the best `shortlist` feasible hosts
//!   (every hard limit applied), and the learned scorer re-ranks only those, with one batched
//!   model run per ranking. Its value is the predicted probability of a shortfall, a cost like
//!   `fit`'s.
//! - A guardrail stands between the model and the decision: a row with a feature outside the
//!   range the model was trained on (widened by `range_slack` of its width), or a prediction
//!   further than `max_disagreement` from the heuristic's own estimate of the same event (the
//!   normal approximation of the host's demand exceeding its capacity), takes the heuristic's
//!   estimate instead. A model that fails to run does the same for the whole shortlist. Each
//!   case is counted ([`GuardCounts`]) and each explained host says which it was ([`Verdict`]).
//!
//! Architecture invariant: no model runtime here. [`ShortfallModel`] is the seam; tract runs
//! behind it in `presage-forecast` (`forecast/src/shortfall.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::presage::Candidate;

/// The feature vector's name, stored in the model's `presage.features` metadata: a model trained
/// on another vector is refused when loaded.
pub const FEATURES_VERSION: &str = "shortfall-v1";

/// What the model sees of one candidate, in this order.
pub const FEATURE_NAMES: [&str; N_FEATURES] = [
    "risk_after",
    "risk_at_capacity",
    "mean_utilisation_after",
    "peak_mean_utilisation_after",
    "spread_after",
    "spread_next_step",
    "unit_mean_share",
    "unit_size_share",
    "unit_reach_share",
    "log_vms_after",
    "memory_fill_after",
    "size_fill_after",
];

pub const N_FEATURES: usize = 12;

/// One candidate's features.
pub type FeatureRow = [f32; N_FEATURES];

/// Where the heuristic's own estimate of a shortfall sits in a row.
const HEURISTIC: usize = 1;

/// A candidate destination's features (see [`FEATURE_NAMES`]), all shares of the host's capacity
/// or probabilities. `correlation` is the policy's between VMs on one host.
pub fn candidate_features(c: &Candidate<'_>, correlation: f64) -> FeatureRow {
    let cap = c.host.total_mips.max(1e-9);
    let steps = c.steps.max(1);
    let a = c.after;
    let sd_at = |h: usize| {
        let var = (1.0 - correlation) * a.sum_var[h].max(0.0) + correlation * a.sum_sd[h].max(0.0).powi(2);
        var.sqrt() / cap
    };
    let peak_mean = a.mean[..steps].iter().fold(0.0f64, |m, &x| m.max(x)) / cap;
    let spread = (0..steps).map(sd_at).fold(0.0f64, f64::max);
    let unit_mean = (a.mean[0] - c.before.mean[0]) / cap;
    let unit_size = (a.size - c.before.size) / cap;
    let reach: f64 = c
        .group
        .iter()
        .filter_map(|&v| c.fleet.vms.get(v))
        .filter_map(|v| {
            let f = v.forecast.as_ref()?;
            let p90 = (1..=steps.min(crate::demand::MAX_HORIZON)).map(|h| f64::from(f.at(h)[2])).fold(0.0f64, f64::max);
            Some((f64::from(f.peak) - p90).max(0.0) * v.capacity_mips())
        })
        .sum::<f64>()
        / cap;
    let memory = if c.host.memory_mb > 0.0 { a.memory_mb / c.host.memory_mb } else { 0.0 };
    [
        c.risk_after,
        a.risk(cap, steps, correlation),
        a.utilisation(cap, steps),
        peak_mean,
        spread,
        sd_at(0),
        unit_mean,
        unit_size,
        reach,
        (1.0 + a.vms as f64).ln(),
        memory,
        a.size / cap,
    ]
    .map(|x| if x.is_finite() { x as f32 } else { 0.0 })
}

/// A trained model of a candidate's shortfall. Implementations run the model (tract, in
/// `presage-forecast`); they must be deterministic.
pub trait ShortfallModel: Send + Sync {
    /// The model's name (its file's stem), for reports.
    fn name(&self) -> &str;
    /// One probability (0..=1) per row, in order.
    fn predict(&self, rows: &[FeatureRow]) -> Result<Vec<f32>, String>;
    /// Per feature, the least and greatest value in the model's training set.
    fn trained_range(&self) -> &[(f32, f32); N_FEATURES];
}

/// Receives the rows a ranking's shortlist produced (the simulator labels them with what the
/// trace did next: the learned scorer's training data).
pub trait CandidateLog: Send + Sync {
    /// `group`: the moving VMs (the VM first); `host`: the candidate; `now_s`: the fleet's time.
    fn record(&self, now_s: f64, group: &[usize], host: usize, features: &FeatureRow);
}

/// Which estimate a host's learned term used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The model's prediction.
    Model,
    /// A feature was outside what the model was trained on: the heuristic's estimate.
    OutOfRange,
    /// The model and the heuristic disagreed beyond the bound: the heuristic's estimate.
    Disagreed,
    /// The model failed to run: the heuristic's estimate.
    Failed,
}

/// The learned term of one explained host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LearnedTerm {
    /// The value used (a probability of a shortfall within the horizon).
    pub value: f64,
    /// The model's prediction (`None` when it failed to run).
    pub predicted: Option<f64>,
    /// The heuristic's estimate of the same event.
    pub heuristic: f64,
    pub verdict: Verdict,
}

/// How often the guardrail let the model decide, and why it did not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GuardCounts {
    /// Candidates judged (every row of every shortlist).
    pub judged: u64,
    pub model: u64,
    pub out_of_range: u64,
    pub disagreed: u64,
    pub failed: u64,
}

impl GuardCounts {
    /// What was counted after `earlier` (a snapshot of the same counts).
    pub fn since(&self, earlier: &GuardCounts) -> GuardCounts {
        GuardCounts {
            judged: self.judged.saturating_sub(earlier.judged),
            model: self.model.saturating_sub(earlier.model),
            out_of_range: self.out_of_range.saturating_sub(earlier.out_of_range),
            disagreed: self.disagreed.saturating_sub(earlier.disagreed),
            failed: self.failed.saturating_sub(earlier.failed),
        }
    }

    /// The share of judged candidates that fell back to the heuristic.
    pub fn fallback_share(&self) -> f64 {
        if self.judged == 0 { 0.0 } else { (self.out_of_range + self.disagreed + self.failed) as f64 / self.judged as f64 }
    }
}

#[derive(Default)]
struct AtomicCounts {
    judged: AtomicU64,
    model: AtomicU64,
    out_of_range: AtomicU64,
    disagreed: AtomicU64,
    failed: AtomicU64,
}

/// The learned scorer's settings (`[policy.presage.learned]`).
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnedSettings {
    /// Weight of the predicted shortfall probability in a host's score (a cost, like `fit`'s).
    /// 16: the best of 2, 8 and 16 on the training replays (`models/train_scorer.py`).
    pub weight: f64,
    /// How many of the heuristic's best feasible hosts the model re-ranks.
    pub shortlist: usize,
    /// The most the model's probability may differ from the heuristic's before it is ignored.
    pub max_disagreement: f64,
    /// How far outside its training range (a share of the range's width) a feature may lie.
    pub range_slack: f64,
}

impl Default for LearnedSettings {
    fn default() -> Self {
        LearnedSettings { weight: 16.0, shortlist: 8, max_disagreement: 0.5, range_slack: 0.05 }
    }
}

impl LearnedSettings {
    pub fn validate(&self) -> Result<(), super::presage::ConfigError> {
        let bad = |field, problem: &str| Err(super::presage::ConfigError { field, problem: problem.into() });
        if !self.weight.is_finite() || self.weight < 0.0 {
            return bad("learned.weight", "must be a finite number >= 0");
        }
        if !(1..=256).contains(&self.shortlist) {
            return bad("learned.shortlist", "must be 1..=256");
        }
        if !(0.0..=1.0).contains(&self.max_disagreement) {
            return bad("learned.max_disagreement", "must be 0..=1");
        }
        if !self.range_slack.is_finite() || self.range_slack < 0.0 {
            return bad("learned.range_slack", "must be a finite number >= 0");
        }
        Ok(())
    }
}

/// The learned scorer: a model behind its guardrail.
pub struct LearnedScorer {
    model: Arc<dyn ShortfallModel>,
    pub settings: LearnedSettings,
    counts: AtomicCounts,
}

impl LearnedScorer {
    pub fn new(model: Arc<dyn ShortfallModel>, settings: LearnedSettings) -> LearnedScorer {
        LearnedScorer { model, settings, counts: AtomicCounts::default() }
    }

    pub fn model_name(&self) -> &str {
        self.model.name()
    }

    /// The counts so far.
    pub fn counts(&self) -> GuardCounts {
        let c = &self.counts;
        GuardCounts {
            judged: c.judged.load(Ordering::Relaxed),
            model: c.model.load(Ordering::Relaxed),
            out_of_range: c.out_of_range.load(Ordering::Relaxed),
            disagreed: c.disagreed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
        }
    }

    fn in_range(&self, row: &FeatureRow) -> bool {
        let slack = self.settings.range_slack as f32;
        row.iter().zip(self.model.trained_range()).all(|(&x, &(lo, hi))| {
            let pad = slack * (hi - lo).max(0.0);
            x >= lo - pad && x <= hi + pad
        })
    }

    /// The learned term of every row, through the guardrail (one model run for all).
    pub fn judge(&self, rows: &[FeatureRow]) -> Vec<LearnedTerm> {
        if rows.is_empty() {
            return Vec::new();
        }
        let c = &self.counts;
        c.judged.fetch_add(rows.len() as u64, Ordering::Relaxed);
        let predicted = match self.model.predict(rows) {
            Ok(p) if p.len() == rows.len() => Some(p),
            Ok(p) => {
                tracing::warn!(
                    model = self.model.name(),
                    rows = rows.len(),
                    got = p.len(),
                    "learned scorer returned the wrong number of rows"
                );
                None
            }
            Err(e) => {
                tracing::warn!(model = self.model.name(), error = %e, "learned scorer failed to run; the heuristic decides");
                None
            }
        };
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let heuristic = f64::from(row[HEURISTIC]);
                let fallback = |verdict, predicted| LearnedTerm { value: heuristic, predicted, heuristic, verdict };
                let Some(p) = predicted.as_ref().map(|p| f64::from(p[i])) else {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    return fallback(Verdict::Failed, None);
                };
                if !p.is_finite() {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    return fallback(Verdict::Failed, None);
                }
                if !self.in_range(row) {
                    c.out_of_range.fetch_add(1, Ordering::Relaxed);
                    return fallback(Verdict::OutOfRange, Some(p));
                }
                if (p - heuristic).abs() > self.settings.max_disagreement {
                    c.disagreed.fetch_add(1, Ordering::Relaxed);
                    return fallback(Verdict::Disagreed, Some(p));
                }
                c.model.fetch_add(1, Ordering::Relaxed);
                LearnedTerm { value: p.clamp(0.0, 1.0), predicted: Some(p), heuristic, verdict: Verdict::Model }
            })
            .collect()
    }
}

impl std::fmt::Debug for LearnedScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LearnedScorer").field("model", &self.model.name()).field("settings", &self.settings).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::demand::Forecast;
    use crate::policy::power::HP_ML110_G5;
    use crate::policy::presage::{PresageConfig, PresagePolicy};
    use crate::policy::{FleetView, HostView, VmView};

    /// A model given as a function of a row, trained on [0, 1] for every feature.
    struct FnModel<F: Fn(&FeatureRow) -> f32 + Send + Sync>(F, [(f32, f32); N_FEATURES]);

    impl<F: Fn(&FeatureRow) -> f32 + Send + Sync> ShortfallModel for FnModel<F> {
        fn name(&self) -> &str {
            "fn"
        }
        fn predict(&self, rows: &[FeatureRow]) -> Result<Vec<f32>, String> {
            Ok(rows.iter().map(&self.0).collect())
        }
        fn trained_range(&self) -> &[(f32, f32); N_FEATURES] {
            &self.1
        }
    }

    fn model(f: impl Fn(&FeatureRow) -> f32 + Send + Sync + 'static) -> Arc<dyn ShortfallModel> {
        Arc::new(FnModel(f, [(0.0, 10.0); N_FEATURES]))
    }

    struct Broken;
    impl ShortfallModel for Broken {
        fn name(&self) -> &str {
            "broken"
        }
        fn predict(&self, _: &[FeatureRow]) -> Result<Vec<f32>, String> {
            Err("no plan".into())
        }
        fn trained_range(&self) -> &[(f32, f32); N_FEATURES] {
            &[(0.0, 1.0); N_FEATURES]
        }
    }

    fn row(heuristic: f32) -> FeatureRow {
        let mut r = [0.5; N_FEATURES];
        r[HEURISTIC] = heuristic;
        r
    }

    #[test]
    fn the_guardrail_keeps_the_model_within_its_training_range_and_near_the_heuristic_and_counts_each_fallback() {
        let settings = LearnedSettings { max_disagreement: 0.3, range_slack: 0.1, ..Default::default() };
        let scorer = LearnedScorer::new(Arc::new(FnModel(|r: &FeatureRow| r[0], [(0.0, 1.0); N_FEATURES])), settings.clone());
        let mut agreeing = row(0.2);
        agreeing[0] = 0.35;
        let mut outside = row(0.2);
        outside[0] = 0.25;
        outside[7] = 1.2; // beyond 1 + 10 % of the range
        let mut within_slack = row(0.2);
        within_slack[0] = 0.3;
        within_slack[7] = 1.05;
        let mut far = row(0.1);
        far[0] = 0.9;
        let terms = scorer.judge(&[agreeing, outside, within_slack, far]);
        assert_eq!(
            terms.iter().map(|t| t.verdict).collect::<Vec<_>>(),
            [Verdict::Model, Verdict::OutOfRange, Verdict::Model, Verdict::Disagreed]
        );
        assert!((terms[0].value - 0.35).abs() < 1e-6, "the model's value is used: {:?}", terms[0]);
        assert!((terms[1].value - 0.2).abs() < 1e-6 && terms[1].predicted.is_some(), "out of range: the heuristic's: {:?}", terms[1]);
        assert!((terms[3].value - 0.1).abs() < 1e-6, "disagreeing: the heuristic's: {:?}", terms[3]);
        assert_eq!(scorer.counts(), GuardCounts { judged: 4, model: 2, out_of_range: 1, disagreed: 1, failed: 0 });
        assert!((scorer.counts().fallback_share() - 0.5).abs() < 1e-12);

        let broken = LearnedScorer::new(Arc::new(Broken), settings);
        let terms = broken.judge(&[row(0.4), row(0.05)]);
        assert!(terms.iter().all(|t| t.verdict == Verdict::Failed && t.predicted.is_none()));
        assert_eq!((terms[0].value, terms[1].value), (f64::from(0.4f32), f64::from(0.05f32)));
        assert_eq!(broken.counts().failed, 2);
    }

    /// VMs forecast at half a core on each of the three hosts.
    const RESIDENTS: [usize; 3] = [4, 2, 3];

    /// Three 4-core hosts holding [`RESIDENTS`] VMs; a new 1-core VM to place.
    fn fleet() -> (Vec<HostView>, Vec<VmView>) {
        let mut hosts: Vec<HostView> = (0..3).map(|_| HostView::new(4, 1000.0, 16_384.0, 100.0, HP_ML110_G5)).collect();
        let mut vms = Vec::new();
        for (h, n) in RESIDENTS.into_iter().enumerate() {
            for _ in 0..n {
                let mut v = VmView::unplaced(1, 1000.0, 500.0);
                v.host = Some(h);
                v.demand_mips = 500.0;
                v.forecast = Some(Forecast::flat([0.4, 0.5, 0.6]));
                hosts[h].observed_mips += 500.0;
                hosts[h].vms.push(vms.len());
                vms.push(v);
            }
        }
        let mut new = VmView::unplaced(1, 1000.0, 500.0);
        new.demand_mips = 1000.0;
        vms.push(new);
        (hosts, vms)
    }

    #[test]
    fn a_learned_shortfall_re_ranks_the_shortlist_is_explained_and_is_overruled_when_it_disagrees_too_far() {
        let (hosts, vms) = fleet();
        let fleet = FleetView { now_s: 0.0, hosts: &hosts, vms: &vms };
        let vm = vms.len() - 1;
        let plain = PresagePolicy::new(PresageConfig::default()).rank_new(&fleet, vm, 3);
        let first = plain.ranked[0].clone();
        assert!(first.learned.is_none() && first.terms.iter().all(|t| t.scorer != "shortfall"));

        // A model sure that the heuristic's favourite will be short, and of nothing else.
        let u = first.utilisation_after as f32;
        let doubts_first = move || model(move |r: &FeatureRow| if (r[2] - u).abs() < 1e-4 { 0.95 } else { 0.0 });
        let trusting =
            PresageConfig { learned: LearnedSettings { weight: 10.0, max_disagreement: 1.0, ..Default::default() }, ..Default::default() };
        let policy = PresagePolicy::new(trusting).with_learned(doubts_first());
        let ranked = policy.rank_new(&fleet, vm, 3).ranked;
        assert_ne!(ranked[0].host, first.host, "the model's doubt moves the VM elsewhere");
        let demoted = ranked.iter().find(|s| s.host == first.host).expect("the favourite is still ranked");
        let term = demoted.terms.iter().find(|t| t.scorer == "shortfall").expect("the learned term is explained");
        assert!((term.value - 0.95).abs() < 1e-6 && term.weight == 10.0);
        assert_eq!(demoted.learned.map(|l| l.verdict), Some(Verdict::Model));
        for s in &ranked {
            let sum: f64 = s.terms.iter().map(|t| t.contribution).sum();
            assert!((sum - s.score).abs() < 1e-9, "the terms add up to the score");
        }
        assert_eq!(policy.learned_counts().map(|c| (c.judged, c.model)), Some((3, 3)));

        // The heuristic puts every host's shortfall near 0: a model at 0.95 is too far off.
        let cautious =
            PresageConfig { learned: LearnedSettings { weight: 10.0, max_disagreement: 0.5, ..Default::default() }, ..Default::default() };
        let guarded = PresagePolicy::new(cautious).with_learned(doubts_first());
        let ranked = guarded.rank_new(&fleet, vm, 3).ranked;
        assert_eq!(ranked[0].host, first.host, "overruled: the heuristic's choice stands");
        assert_eq!(ranked[0].learned.map(|l| l.verdict), Some(Verdict::Disagreed));
        let counts = guarded.learned_counts().unwrap();
        assert_eq!((counts.judged, counts.disagreed), (3, 1));
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<(usize, usize, FeatureRow)>>);
    impl CandidateLog for Log {
        fn record(&self, _now_s: f64, group: &[usize], host: usize, features: &FeatureRow) {
            self.0.lock().unwrap().push((group[0], host, *features));
        }
    }

    #[test]
    fn a_candidate_log_receives_the_shortlist_with_the_features_of_each_destination() {
        let (hosts, vms) = fleet();
        let fleet = FleetView { now_s: 0.0, hosts: &hosts, vms: &vms };
        let vm = vms.len() - 1;
        let log = Arc::new(Log::default());
        let cfg = PresageConfig { learned: LearnedSettings { shortlist: 2, ..Default::default() }, ..Default::default() };
        let policy = PresagePolicy::new(cfg).with_candidate_log(log.clone());
        let ranking = policy.rank_new(&fleet, vm, 1);
        let rows = log.0.lock().unwrap().clone();
        assert_eq!(rows.len(), 2, "the shortlist, not only the one host asked for");
        assert_eq!(rows[0].1, ranking.ranked[0].host, "the best first");
        assert!(rows.iter().all(|r| r.0 == vm) && rows[0].1 != rows[1].1);
        // Each resident VM is forecast at 500 MIPS of the host's 4000: the hosts' mean
        // utilisation after the move differs by 1/8 per VM they hold more.
        let (a, b) = (&rows[0], &rows[1]);
        let more = RESIDENTS[a.1] as f32 - RESIDENTS[b.1] as f32;
        assert!((a.2[2] - b.2[2] - more / 8.0).abs() < 1e-4, "mean utilisation after: {} vs {}", a.2[2], b.2[2]);
        assert!(((a.2[9] - b.2[9]) * more).max(0.0) > 0.0, "more VMs after where there were more");
        assert!(rows.iter().all(|r| (r.2[7] - 0.25).abs() < 1e-6), "the unit's size is a quarter of each host");
        assert!(policy.learned_counts().is_none(), "recording alone judges nothing");
    }

    #[test]
    fn bad_learned_settings_are_named() {
        for (s, field) in [
            (LearnedSettings { weight: -1.0, ..Default::default() }, "learned.weight"),
            (LearnedSettings { shortlist: 0, ..Default::default() }, "learned.shortlist"),
            (LearnedSettings { max_disagreement: 1.5, ..Default::default() }, "learned.max_disagreement"),
            (LearnedSettings { range_slack: f64::NAN, ..Default::default() }, "learned.range_slack"),
        ] {
            let cfg = PresageConfig { learned: s, ..Default::default() };
            assert_eq!(cfg.validate().unwrap_err().field, field);
        }
        let text = "[learned]\nweight = 1.5\nshortlist = 4\n";
        let cfg: PresageConfig = toml::from_str(text).unwrap();
        assert_eq!((cfg.learned.weight, cfg.learned.shortlist), (1.5, 4));
        assert!(toml::from_str::<PresageConfig>("[learned]\nwieght = 1\n").unwrap_err().to_string().contains("wieght"));
    }
}
