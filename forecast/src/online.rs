//! What a forecaster learns online about each series, from outcomes as they arrive: how much to
//! trust the model against a robust baseline ([`OnlineMixer`]), and how wide its intervals must be
//! ([`OnlineCalibrator`](crate::calibration::OnlineCalibrator)). [`SeriesLearner`] holds both for
//! one series; the agent, the simulator ([`fleet`](crate::fleet)) and `presagectl forecast-eval`
//! ([`eval`](crate::eval)) all publish forecasts through it, so what is measured is what runs.
//!
//! Mixing. A model trained on other VMs is good on most series and wrong on a few (a VM that
//! changed regime, a workload unlike any it saw). Per series, horizon and quantile, the mixer keeps
//! the discounted pinball loss of the baseline minus the model's, `D ← ρ·D + (loss_base − loss_model)`,
//! and publishes `w·q_model + (1 − w)·q_base` with `w = 1 / (1 + e^(−η·D))`: exponentially weighted
//! aggregation of two experts ("Hedge"; Cesa-Bianchi & Lugosi, *Prediction, Learning, and Games*,
//! 2006) on the quantile scale (Vincentisation). A series where the model keeps losing drifts to
//! the baseline within hours, and back when the model recovers.
//!
//! Guard. Mixing is Hedge with a discounted memory: where the two experts take turns at being
//! right faster than its weights follow, it backs the one that was right last time, and the mix
//! can lose to both. Per series and horizon, the [`MixGuard`] keeps the discounted pinball loss
//! of the mix's median and of its two inputs' (the model's, the baseline's) and moves the mix to
//! the better input's median wherever that loss is lower by more than [`GUARD_MARGIN`] (and
//! [`GUARD_FLOOR`]): the published median is never worse than the better input's beyond that
//! margin, on the outcomes seen so far.
//! Calibration comes after the guard, so the published intervals keep their coverage.

use crate::baselines::RollingQuantiles;
use crate::calibration::{AwaitingOutcome, DEFAULT_GAMMA, OnlineCalibrator};
use crate::{Forecast, Forecaster, MAX_HORIZON, QUANTILES, SeriesContext};

/// The baseline a model is mixed with: rolling empirical quantiles of the last 3 hours.
pub const MIX_BASELINE: RollingQuantiles = RollingQuantiles { window: 36 };
/// Learning rate of the weights (per unit of discounted pinball loss).
pub const MIX_ETA: f32 = 20.0;
/// Discount of past losses per outcome (a memory of about 200 outcomes per horizon).
pub const MIX_DISCOUNT: f32 = 0.995;
/// Bound on the loss difference kept (and on a resumed one), and on the guard's discounted
/// losses and counts (which stay far below it: at most 200 outcomes' worth).
const MAX_LEAD: f32 = 1000.0;
/// How much lower (a share) an input's discounted loss must be than the mix's for the guard to
/// pass that input on instead: the noise band within which the mix is kept. 2 %: on the public
/// sets a margin of 0, 2 % or 5 % publishes the same accuracy within 0.4 % (Bitbrains CPU
/// 0.841, 0.842, 0.844 x the best baseline), and the loss the issue measured on a later month,
/// the mix 2.4 % worse than the raw model, slips under 5 %.
pub const GUARD_MARGIN: f32 = 0.02;

/// The baseline `method`'s forecast of `ctx` is mixed with, if it mixes at all
/// ([`Forecaster::mixes_online`]).
pub fn mixing_baseline(method: &dyn Forecaster, ctx: &SeriesContext<'_>) -> Option<Forecast> {
    if method.mixes_online() { MIX_BASELINE.forecast(ctx) } else { None }
}

/// Pinball loss of quantile level `tau` at value `q` for outcome `y`.
fn pinball(tau: f32, q: f32, y: f32) -> f32 {
    let d = y - q;
    (tau * d).max((tau - 1.0) * d)
}

/// The mixing state of one series.
#[derive(Clone, Debug, Default)]
pub struct OnlineMixer {
    /// Per horizon and quantile: discounted loss of the baseline minus that of the model.
    lead: [[f32; 3]; MAX_HORIZON],
    /// Per published step: the model's quantiles and the baseline's.
    pending: AwaitingOutcome<([f32; 3], [f32; 3])>,
}

impl OnlineMixer {
    /// A mixer resuming from saved [`leads`](Self::leads); non-finite values reset, others clamped.
    pub fn resume(leads: [[f32; 3]; MAX_HORIZON]) -> OnlineMixer {
        let lead = leads.map(|q| q.map(|v| if v.is_finite() { v.clamp(-MAX_LEAD, MAX_LEAD) } else { 0.0 }));
        OnlineMixer { lead, pending: AwaitingOutcome::default() }
    }

    /// The learnt state worth keeping across restarts.
    pub fn leads(&self) -> [[f32; 3]; MAX_HORIZON] {
        self.lead
    }

    /// The model's weight for each quantile at `horizon` (0.5 before any outcome).
    pub fn weights(&self, horizon: usize) -> [f32; 3] {
        self.lead[horizon - 1].map(|d| 1.0 / (1.0 + (-MIX_ETA * d).exp()))
    }

    /// The mixed forecast for steps `first_step`, `first_step + 1`, …; remembers both experts'
    /// quantiles so that [`observe`](Self::observe) can score them.
    /// A forecast for the same `first_step` as an earlier one replaces it ([`AwaitingOutcome`]).
    pub fn mix(&mut self, first_step: u64, model: &Forecast, baseline: &Forecast) -> Forecast {
        self.pending.replace(first_step);
        let mut out = *model;
        for h in 1..=MAX_HORIZON {
            let (m, b, w) = (model.at(h), baseline.at(h), self.weights(h));
            out.q[h - 1] = [0, 1, 2].map(|k| w[k] * m[k] + (1.0 - w[k]) * b[k]);
            self.pending.push(first_step, h, (m, b));
        }
        out.tidy()
    }

    /// The sample of `step` arrived: every forecast for it moves its horizon's weights.
    pub fn observe(&mut self, step: u64, y: f32) {
        let lead = &mut self.lead;
        self.pending.settle(step, |h, (m, b)| {
            for k in 0..3 {
                let d = pinball(QUANTILES[k], b[k], y) - pinball(QUANTILES[k], m[k], y);
                let l = &mut lead[h - 1][k];
                *l = (MIX_DISCOUNT * *l + d).clamp(-MAX_LEAD, MAX_LEAD);
            }
        });
    }
}

/// The noise floor under the margin: a candidate's median must also beat the mix's by more than
/// this much pinball loss per outcome (a share of the VM's capacity). On a VM idle at exactly 0,
/// a baseline whose quantiles are all 0 beats any mix by far more than the margin, by amounts no
/// decision sees, and passing it on would only make its interval cover every outcome.
pub const GUARD_FLOOR: f32 = 0.0002;

/// What the guard has learnt of one series, per horizon: the discounted pinball loss of each
/// candidate's median (0 the mix, 1 the model's forecast, 2 the baseline's), and the discounted
/// count of outcomes scored.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GuardState {
    pub losses: [[f32; 3]; MAX_HORIZON],
    pub seen: [f32; MAX_HORIZON],
}

/// The mixing guard of one series (see the module): between the mixer and the calibrator.
#[derive(Clone, Debug, Default)]
pub struct MixGuard {
    state: GuardState,
    /// Per published step: each candidate's median.
    pending: AwaitingOutcome<[f32; 3]>,
}

impl MixGuard {
    /// A guard resuming from a saved [`state`](Self::state); non-finite or negative values reset,
    /// others are clamped.
    pub fn resume(state: GuardState) -> MixGuard {
        let fix = |v: f32| if v.is_finite() && v >= 0.0 { v.min(MAX_LEAD) } else { 0.0 };
        let state = GuardState { losses: state.losses.map(|c| c.map(fix)), seen: state.seen.map(fix) };
        MixGuard { state, pending: AwaitingOutcome::default() }
    }

    /// The learnt state worth keeping across restarts.
    pub fn state(&self) -> GuardState {
        self.state
    }

    /// The candidate whose median is passed on at `horizon` (0 the mix, 1 the model, 2 the
    /// baseline): the first, in the order mix, model, baseline, that no other beats
    /// by more than [`GUARD_MARGIN`] and [`GUARD_FLOOR`]. A fixed order, not the least loss: two
    /// inputs taking turns would otherwise be followed one step late, as the mixer was.
    pub fn choice(&self, horizon: usize) -> usize {
        let l = self.state.losses[horizon - 1];
        let floor = GUARD_FLOOR * self.state.seen[horizon - 1];
        let unbeaten = |c: usize| (0..3).all(|o| l[o] >= (1.0 - GUARD_MARGIN) * l[c] || l[c] - l[o] <= floor);
        (0..2).find(|&c| unbeaten(c)).unwrap_or(2)
    }

    /// What to pass on for steps from `first_step`: per horizon, the mix moved to the chosen
    /// candidate's median (the interval keeps the mix's shape; calibration sets its width).
    /// Remembers the three medians so that [`observe`](Self::observe) can score them.
    pub fn guard(&mut self, first_step: u64, mix: &Forecast, model: &Forecast, baseline: &Forecast) -> Forecast {
        self.pending.replace(first_step);
        let mut out = *mix;
        for h in 1..=MAX_HORIZON {
            let medians = [mix.at(h)[1], model.at(h)[1], baseline.at(h)[1]];
            let shift = medians[self.choice(h)] - medians[0];
            out.q[h - 1] = mix.at(h).map(|v| v + shift);
            self.pending.push(first_step, h, medians);
        }
        out.tidy()
    }

    /// The sample of `step` arrived: every forecast for it scores its horizon's candidates.
    pub fn observe(&mut self, step: u64, y: f32) {
        let state = &mut self.state;
        self.pending.settle(step, |h, medians| {
            state.seen[h - 1] = (MIX_DISCOUNT * state.seen[h - 1] + 1.0).min(MAX_LEAD);
            for (i, m) in medians.iter().enumerate() {
                let kept = &mut state.losses[h - 1][i];
                *kept = (MIX_DISCOUNT * *kept + pinball(0.5, *m, y)).min(MAX_LEAD);
            }
        });
    }
}

/// What is kept of a series' learning across restarts of the agent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearntState {
    /// The calibrator's log width scale per horizon.
    pub log_scales: [f32; MAX_HORIZON],
    /// The mixer's loss differences per horizon and quantile.
    pub mix_leads: [[f32; 3]; MAX_HORIZON],
    /// What the mixing guard has learnt.
    pub guard: GuardState,
}

impl LearntState {
    const SCALES_BYTES: usize = 4 * MAX_HORIZON;
    const MIXING_BYTES: usize = Self::SCALES_BYTES + 4 * 3 * MAX_HORIZON;
    const BYTES: usize = Self::MIXING_BYTES + 4 * 4 * MAX_HORIZON;

    /// Little-endian f32s: 12 log scales, 36 loss differences (horizon-major), 36 guard losses
    /// (horizon-major), 12 guard counts.
    pub fn encode(&self) -> Vec<u8> {
        let guard = self.guard.losses.iter().flatten().chain(&self.guard.seen);
        self.log_scales.iter().chain(self.mix_leads.iter().flatten()).chain(guard).flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The inverse of [`encode`](Self::encode). Entries written by older agents resume: 48 bytes
    /// (scales only, before mixing) with fresh mixing weights, 192 bytes (before the guard) with a
    /// fresh guard. `None` for any other length.
    pub fn decode(b: &[u8]) -> Option<LearntState> {
        if ![Self::BYTES, Self::MIXING_BYTES, Self::SCALES_BYTES].contains(&b.len()) {
            return None;
        }
        let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        // The entry's i-th value; what an older, shorter entry lacks is 0.
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        let table = |from: usize| std::array::from_fn(|h| std::array::from_fn(|k| at(from + 3 * h + k)));
        Some(LearntState {
            log_scales: std::array::from_fn(at),
            mix_leads: table(MAX_HORIZON),
            guard: GuardState { losses: table(4 * MAX_HORIZON), seen: std::array::from_fn(|h| at(7 * MAX_HORIZON + h)) },
        })
    }
}

/// Everything learnt online about one series: mixing and its guard (for a model), then
/// calibration.
#[derive(Clone, Debug, Default)]
pub struct SeriesLearner {
    mixer: OnlineMixer,
    calibrator: OnlineCalibrator,
    guard: MixGuard,
}

impl SeriesLearner {
    pub fn resume(state: &LearntState) -> SeriesLearner {
        SeriesLearner {
            mixer: OnlineMixer::resume(state.mix_leads),
            calibrator: OnlineCalibrator::resume(DEFAULT_GAMMA, state.log_scales),
            guard: MixGuard::resume(state.guard),
        }
    }

    pub fn state(&self) -> LearntState {
        LearntState { log_scales: self.calibrator.log_scales(), mix_leads: self.mixer.leads(), guard: self.guard.state() }
    }

    /// The forecast to publish for steps from `first_step`: `raw` mixed with `baseline` when
    /// there is one (the forecaster is a model) and guarded (per horizon, the better input
    /// instead where it has clearly beaten the mix on this series), then calibrated.
    pub fn publish(&mut self, first_step: u64, raw: &Forecast, baseline: Option<&Forecast>) -> Forecast {
        let mixed = match baseline {
            Some(b) => {
                let mix = self.mixer.mix(first_step, raw, b);
                self.guard.guard(first_step, &mix, raw, b)
            }
            None => *raw,
        };
        self.calibrator.calibrate(first_step, &mixed)
    }

    /// The sample of `step` arrived.
    pub fn observe(&mut self, step: u64, y: f32) {
        self.mixer.observe(step, y);
        self.calibrator.observe(step, y);
        self.guard.observe(step, y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model is right and the baseline wrong on one series, the other way round on another:
    /// each mixer moves its weight to the expert that is right there.
    #[test]
    fn weight_moves_to_the_expert_that_is_right_on_this_series() {
        let good = Forecast::flat([0.4, 0.5, 0.6]);
        let bad = Forecast::flat([0.1, 0.2, 0.3]);
        for (model, baseline, model_wins) in [(good, bad, true), (bad, good, false)] {
            let mut m = OnlineMixer::default();
            assert_eq!(m.weights(1), [0.5; 3]);
            for step in 0..300u64 {
                m.mix(step, &model, &baseline);
                m.observe(step, 0.5);
            }
            for h in 1..=MAX_HORIZON {
                for w in m.weights(h) {
                    assert!(if model_wins { w > 0.95 } else { w < 0.05 }, "h={h}: weight {w}");
                }
            }
            let q = m.mix(300, &model, &baseline).at(1);
            assert!((q[1] - 0.5).abs() < 0.02, "the mix follows the winner: {q:?}");
        }
    }

    #[test]
    fn only_due_outcomes_move_weights_and_each_horizon_its_own() {
        let mut m = OnlineMixer::default();
        m.mix(10, &Forecast::flat([0.4, 0.5, 0.6]), &Forecast::flat([0.0, 0.1, 0.2]));
        // Step 12 is horizon 3 of the forecast starting at step 10.
        m.observe(12, 0.5);
        assert!(m.weights(3).iter().all(|w| *w > 0.5));
        assert_eq!(m.weights(1), [0.5; 3]);
        assert_eq!(m.weights(4), [0.5; 3]);
    }

    #[test]
    fn learnt_state_round_trips_and_old_entries_resume() {
        let mut l = SeriesLearner::default();
        for step in 0..50u64 {
            l.publish(step, &Forecast::flat([0.4, 0.5, 0.6]), Some(&Forecast::flat([0.0, 0.1, 0.9])));
            l.observe(step, 0.55);
        }
        let s = l.state();
        assert!(s.mix_leads[0][1] > 0.0 && s.log_scales[0] != 0.0 && s.guard.losses[0][1] > 0.0 && s.guard.seen[0] > 0.0);
        assert_eq!(LearntState::decode(&s.encode()), Some(s));
        // Written before mixing (scales only) and before the guard (scales and mixing).
        let old = LearntState::decode(&s.encode()[..48]).unwrap();
        assert_eq!((old.log_scales, old.mix_leads, old.guard), (s.log_scales, [[0.0; 3]; MAX_HORIZON], GuardState::default()));
        let unguarded = LearntState::decode(&s.encode()[..192]).unwrap();
        assert_eq!((unguarded.mix_leads, unguarded.guard), (s.mix_leads, GuardState::default()));
        assert_eq!(LearntState::decode(&[0u8; 50]), None);
        let mut bad = s;
        bad.mix_leads[2][0] = f32::NAN;
        bad.mix_leads[3][0] = 1e9;
        bad.guard.losses[1] = [f32::NAN, -1.0, 1e9];
        bad.guard.seen[0] = f32::INFINITY;
        let r = SeriesLearner::resume(&bad).state();
        assert_eq!((r.mix_leads[2][0], r.mix_leads[3][0]), (0.0, MAX_LEAD));
        assert_eq!((r.guard.losses[1], r.guard.seen[0]), ([0.0, 0.0, MAX_LEAD], 0.0));
    }

    /// The guard passes on, per horizon, the median whose discounted loss is clearly the least:
    /// the mix's unless an input beats it by more than the margin and the floor.
    #[test]
    fn the_guard_passes_an_input_on_only_where_it_has_clearly_been_better() {
        let (good, fair, bad) = (Forecast::flat([0.45, 0.5, 0.55]), Forecast::flat([0.3, 0.45, 0.65]), Forecast::flat([0.0, 0.1, 0.2]));
        // Mix best: kept. Model best: the model. Baseline best: the baseline.
        for (mix, model, baseline, expected) in [(good, fair, bad, 0), (bad, good, fair, 1), (fair, bad, good, 2)] {
            let mut g = MixGuard::default();
            assert_eq!(g.choice(1), 0, "before any outcome the mix is passed on");
            for step in 0..100u64 {
                let out = g.guard(step, &mix, &model, &baseline);
                // The mix's interval, moved to the chosen median.
                let shift = [mix, model, baseline][g.choice(1)].at(1)[1] - mix.at(1)[1];
                assert_eq!(out.at(1), mix.at(1).map(|v| (v + shift).clamp(0.0, 1.0)));
                g.observe(step, 0.5);
            }
            for h in 1..=MAX_HORIZON {
                assert_eq!(g.choice(h), expected, "h={h}: {:?}", g.state());
            }
        }
        let at = |losses: [f32; 3], seen: f32| MixGuard::resume(GuardState { losses: [losses; MAX_HORIZON], seen: [seen; MAX_HORIZON] });
        // Within the margin, the mix stays: an input 1 % better is noise; so does the model
        // against the baseline.
        assert_eq!(at([1.0, 0.99, 2.0], 100.0).choice(1), 0);
        assert_eq!(at([1.0, 0.9, 0.89], 100.0).choice(1), 1);
        // Beyond it, the input: 3 % better.
        assert_eq!(at([1.0, 0.97, 2.0], 100.0).choice(1), 1);
        assert_eq!(at([1.0, 0.9, 0.5], 100.0).choice(1), 2);
        // Beyond the margin but under the floor (0.0002 per outcome over 100 outcomes): noise.
        assert_eq!(at([0.015, 0.0, 0.0], 100.0).choice(1), 0);
        assert_eq!(at([0.025, 0.0, 0.0], 100.0).choice(1), 1);
        // Only due outcomes score, each horizon its own.
        let mut g = MixGuard::default();
        g.guard(10, &bad, &good, &fair);
        g.observe(12, 0.5);
        let s = g.state();
        assert!(s.losses[2][0] > 0.0 && s.losses[2][1] == 0.0 && s.losses[2][2] > 0.0 && s.seen[2] == 1.0);
        assert_eq!((s.losses[0], s.losses[3], s.seen[0]), ([0.0; 3], [0.0; 3], 0.0));
    }

    /// The model is right on odd steps, the baseline on even ones. At the next step's horizon
    /// the mixer backs whichever was right last, which is wrong now: the mix loses to both
    /// inputs. The guard passes the model on (not whichever input was right last, which would
    /// lose the same way), and what is published is as good as the better input within the
    /// margin (judged on the median, which calibration leaves alone).
    #[test]
    fn what_is_published_is_never_worse_than_the_better_input_beyond_the_margin() {
        let y = |step: u64| if step % 2 == 1 { 0.8 } else { 0.2 };
        let (model, baseline) = (Forecast::flat([0.75, 0.8, 0.85]), Forecast::flat([0.15, 0.2, 0.25]));
        let median_loss = |q: [f32; 3], y: f32| pinball(0.5, q[1], y);
        let (mut guarded, mut unguarded) = (SeriesLearner::default(), OnlineMixer::default());
        let (mut published, mut mixed, mut of_model, mut of_baseline) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for step in 0..600u64 {
            let out = guarded.publish(step, &model, Some(&baseline));
            let mix = unguarded.mix(step, &model, &baseline);
            if step >= 100 {
                published += median_loss(out.at(1), y(step));
                mixed += median_loss(mix.at(1), y(step));
                of_model += median_loss(model.at(1), y(step));
                of_baseline += median_loss(baseline.at(1), y(step));
            }
            guarded.observe(step, y(step));
            unguarded.observe(step, y(step));
        }
        let better = of_model.min(of_baseline);
        // The premise: unguarded, the mix loses to both inputs by far more than the margin.
        assert!(mixed > 1.5 * better, "the mix should lose here: {mixed} against {better}");
        assert_eq!(guarded.guard.choice(1), 1);
        assert!(published <= (1.0 + GUARD_MARGIN) * better, "published {published} against the better input's {better}");
    }

    /// An agent forecasts every sampling cycle, many times per 5-minute step: what it learns from
    /// an outcome is the same as if it had forecast once (the last forecast for that step counts).
    #[test]
    fn forecasting_many_times_per_step_learns_as_forecasting_once() {
        let model = Forecast::flat([0.4, 0.5, 0.6]);
        let baseline = Forecast::flat([0.0, 0.1, 0.2]);
        let (mut once, mut often) = (SeriesLearner::default(), SeriesLearner::default());
        for step in 0..100u64 {
            once.publish(step, &model, Some(&baseline));
            for _ in 0..30 {
                often.publish(step, &model, Some(&baseline));
            }
            let y = if step % 3 == 0 { 0.9 } else { 0.45 };
            once.observe(step, y);
            often.observe(step, y);
        }
        assert_eq!(once.state(), often.state());
        assert!(once.state().mix_leads[0][1] > 0.0);
    }
}
