//! A VM's demand forecast as the decision core reads it: quantiles (p10, p50, p90) of its demand,
//! as a fraction of its capacity, for each of the next [`MAX_HORIZON`] steps of [`STEP_S`]
//! seconds. `presage-forecast` produces them; policies read them.

/// The quantiles every forecast gives, in order.
pub const QUANTILES: [f32; 3] = [0.1, 0.5, 0.9];
/// The furthest horizon, in steps (12 × 5 min = 1 h).
pub const MAX_HORIZON: usize = 12;
/// Seconds per step.
pub const STEP_S: u64 = 300;

/// Quantiles per horizon: `q[h - 1] = [p10, p50, p90]` for `h` steps ahead. Values are
/// fractions of the VM's capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    pub q: [[f32; 3]; MAX_HORIZON],
}

impl Forecast {
    /// The same quantiles at every horizon.
    pub fn flat(q: [f32; 3]) -> Forecast {
        Forecast { q: [q; MAX_HORIZON] }
    }

    /// Sorts each horizon's quantiles (no crossing) and clamps them to `0..=1`.
    pub fn tidy(mut self) -> Forecast {
        for q in &mut self.q {
            for v in q.iter_mut() {
                *v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
            }
            q.sort_by(|a, b| a.total_cmp(b));
        }
        self
    }

    pub fn at(&self, horizon: usize) -> [f32; 3] {
        self.q[horizon - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_orders_and_clamps() {
        let f = Forecast::flat([0.7, -0.2, 1.5]).tidy();
        assert_eq!(f.at(1), [0.0, 0.7, 1.0]);
        assert_eq!(f.at(12), [0.0, 0.7, 1.0]);
        let g = Forecast::flat([f32::NAN, 0.3, 0.2]).tidy();
        assert_eq!(g.at(6), [0.0, 0.2, 0.3]);
    }
}
