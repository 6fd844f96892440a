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

use crate::baselines::RollingQuantiles;
use crate::calibration::{AwaitingOutcome, DEFAULT_GAMMA, OnlineCalibrator};
use crate::{Forecast, Forecaster, MAX_HORIZON, QUANTILES, SeriesContext};

/// The baseline a model is mixed with: rolling empirical quantiles of the last 3 hours.
pub const MIX_BASELINE: RollingQuantiles = RollingQuantiles { window: 36 };
/// Learning rate of the weights (per unit of discounted pinball loss).
pub const MIX_ETA: f32 = 20.0;
/// Discount of past losses per outcome (a memory of about 200 outcomes per horizon).
pub const MIX_DISCOUNT: f32 = 0.995;
/// Bound on the loss difference kept (and on a resumed one).
const MAX_LEAD: f32 = 1000.0;

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

/// What is kept of a series' learning across restarts of the agent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearntState {
    /// The calibrator's log width scale per horizon.
    pub log_scales: [f32; MAX_HORIZON],
    /// The mixer's loss differences per horizon and quantile.
    pub mix_leads: [[f32; 3]; MAX_HORIZON],
}

impl LearntState {
    const SCALES_BYTES: usize = 4 * MAX_HORIZON;
    const BYTES: usize = Self::SCALES_BYTES + 4 * 3 * MAX_HORIZON;

    /// Little-endian f32s: 12 log scales, then 36 loss differences (horizon-major).
    pub fn encode(&self) -> Vec<u8> {
        self.log_scales.iter().chain(self.mix_leads.iter().flatten()).flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The inverse of [`encode`](Self::encode); an entry of 48 bytes (scales only, as written by
    /// agents before mixing) resumes with fresh mixing weights. `None` for any other length.
    pub fn decode(b: &[u8]) -> Option<LearntState> {
        if b.len() != Self::BYTES && b.len() != Self::SCALES_BYTES {
            return None;
        }
        let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut s = LearntState { log_scales: [0.0; MAX_HORIZON], mix_leads: [[0.0; 3]; MAX_HORIZON] };
        s.log_scales.copy_from_slice(&v[..MAX_HORIZON]);
        for (i, x) in v[MAX_HORIZON..].iter().enumerate() {
            s.mix_leads[i / 3][i % 3] = *x;
        }
        Some(s)
    }
}

/// Everything learnt online about one series: mixing (for a model), then calibration.
#[derive(Clone, Debug, Default)]
pub struct SeriesLearner {
    mixer: OnlineMixer,
    calibrator: OnlineCalibrator,
}

impl SeriesLearner {
    pub fn resume(state: &LearntState) -> SeriesLearner {
        SeriesLearner { mixer: OnlineMixer::resume(state.mix_leads), calibrator: OnlineCalibrator::resume(DEFAULT_GAMMA, state.log_scales) }
    }

    pub fn state(&self) -> LearntState {
        LearntState { log_scales: self.calibrator.log_scales(), mix_leads: self.mixer.leads() }
    }

    /// The forecast to publish for steps from `first_step`: `raw` mixed with `baseline` when
    /// there is one (the forecaster is a model), then calibrated.
    pub fn publish(&mut self, first_step: u64, raw: &Forecast, baseline: Option<&Forecast>) -> Forecast {
        let mixed = match baseline {
            Some(b) => self.mixer.mix(first_step, raw, b),
            None => *raw,
        };
        self.calibrator.calibrate(first_step, &mixed)
    }

    /// The sample of `step` arrived.
    pub fn observe(&mut self, step: u64, y: f32) {
        self.mixer.observe(step, y);
        self.calibrator.observe(step, y);
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
        assert!(s.mix_leads[0][1] > 0.0 && s.log_scales[0] != 0.0);
        assert_eq!(LearntState::decode(&s.encode()), Some(s));
        let old = LearntState::decode(&s.encode()[..48]).unwrap();
        assert_eq!((old.log_scales, old.mix_leads), (s.log_scales, [[0.0; 3]; MAX_HORIZON]));
        assert_eq!(LearntState::decode(&[0u8; 50]), None);
        let mut bad = s;
        bad.mix_leads[2][0] = f32::NAN;
        bad.mix_leads[3][0] = 1e9;
        let r = SeriesLearner::resume(&bad).state();
        assert_eq!((r.mix_leads[2][0], r.mix_leads[3][0]), (0.0, MAX_LEAD));
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
