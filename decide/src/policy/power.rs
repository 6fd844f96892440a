//! Host power models: SPECpower_ssj2008 tables (watts at 0 %, 10 %, …, 100 % CPU load) with
//! linear interpolation in between, and the interval energy rule the simulator charges.
//!
//! The arithmetic follows CloudSim's `PowerModelSpecPower` and `PowerHost` operation for
//! operation, so that replayed experiments land on CloudSim's published figures.

use serde::Serialize;

/// A server's power curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PowerModel {
    pub name: &'static str,
    /// Watts at 0 %, 10 %, …, 100 % utilisation.
    pub watts: [f64; 11],
}

/// HP ProLiant ML110 G4 (Intel Xeon 3040, 2 cores × 1860 MHz), SPECpower_ssj2008.
pub const HP_ML110_G4: PowerModel =
    PowerModel { name: "HP ProLiant ML110 G4", watts: [86.0, 89.4, 92.6, 96.0, 99.5, 102.0, 106.0, 108.0, 112.0, 114.0, 117.0] };

/// HP ProLiant ML110 G5 (Intel Xeon 3075, 2 cores × 2660 MHz), SPECpower_ssj2008.
pub const HP_ML110_G5: PowerModel =
    PowerModel { name: "HP ProLiant ML110 G5", watts: [93.7, 97.0, 101.0, 105.0, 110.0, 116.0, 121.0, 125.0, 129.0, 133.0, 135.0] };

/// IBM System x3550 M3 (2 × Intel Xeon X5675, 12 cores × 3067 MHz), SPECpower_ssj2008.
pub const IBM_X3550_M3_X5675: PowerModel =
    PowerModel { name: "IBM x3550 M3 (Xeon X5675)", watts: [58.4, 98.0, 109.0, 118.0, 128.0, 140.0, 153.0, 170.0, 189.0, 205.0, 222.0] };

impl PowerModel {
    /// Power in watts at `utilisation` (0..=1); values outside are clamped.
    pub fn watts_at(&self, utilisation: f64) -> f64 {
        let u = utilisation.clamp(0.0, 1.0);
        if u % 0.1 == 0.0 {
            return self.watts[(u * 10.0) as usize];
        }
        let lo = (u * 10.0).floor() as usize;
        let hi = (u * 10.0).ceil() as usize;
        let (p1, p2) = (self.watts[lo], self.watts[hi.min(10)]);
        let delta = (p2 - p1) / 10.0;
        p1 + delta * (u - lo as f64 / 10.0) * 100.0
    }

    pub fn max_watts(&self) -> f64 {
        self.watts[10]
    }

    pub fn idle_watts(&self) -> f64 {
        self.watts[0]
    }

    /// Energy in joules over an interval of `seconds` whose utilisation moved linearly from
    /// `from` to `to`. A host idle (0 %) at the start of the interval is taken as switched off
    /// and charged nothing, as CloudSim does.
    pub fn interval_joules(&self, from: f64, to: f64, seconds: f64) -> f64 {
        if from == 0.0 {
            return 0.0;
        }
        let p1 = self.watts_at(from);
        let p2 = self.watts_at(to);
        (p1 + (p2 - p1) / 2.0) * seconds
    }

    /// The least watts this server spends per unit of capacity used, over the table's points:
    /// the efficiency an ideal packing could reach with it.
    pub fn best_watts_per_capacity(&self) -> f64 {
        (1..=10).map(|i| self.watts[i] / (i as f64 / 10.0)).fold(f64::INFINITY, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_points_and_interpolation() {
        assert_eq!(HP_ML110_G5.watts_at(0.0), 93.7);
        assert_eq!(HP_ML110_G5.watts_at(1.0), 135.0);
        // Halfway between 40 % (110 W) and 50 % (116 W).
        assert!((HP_ML110_G5.watts_at(0.45) - 113.0).abs() < 1e-9);
        assert!((HP_ML110_G4.watts_at(0.05) - 87.7).abs() < 1e-9);
    }

    #[test]
    fn idle_start_costs_nothing_otherwise_trapezoid() {
        assert_eq!(HP_ML110_G4.interval_joules(0.0, 0.5, 300.0), 0.0);
        let e = HP_ML110_G4.interval_joules(0.5, 1.0, 300.0);
        assert!((e - (102.0 + 117.0) / 2.0 * 300.0).abs() < 1e-9);
    }
}
