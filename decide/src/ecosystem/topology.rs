//! Where hosts are (zone, rack) and how far apart two VMs are: the [`Level`] of the topology
//! that separates them and its round-trip latency ([`LatencyTable`]), against which a
//! declaration's `network_latency_requirement` ([`LatencyRequirement`]) is met or not.

use serde::{Deserialize, Serialize};

/// How close two VMs are, nearest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// On one host.
    Host,
    /// On two hosts of one rack.
    Rack,
    /// In two racks of one zone.
    Zone,
    /// In two zones.
    Region,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Host, Level::Rack, Level::Zone, Level::Region];

    pub fn name(self) -> &'static str {
        match self {
            Level::Host => "host",
            Level::Rack => "rack",
            Level::Zone => "zone",
            Level::Region => "region",
        }
    }
}

/// Round-trip latency between two VMs separated by each level, in milliseconds (the
/// coordinator's `[topology]` configuration).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    pub host: f64,
    pub rack: f64,
    pub zone: f64,
    pub region: f64,
}

impl Default for LatencyTable {
    /// Typical figures: loopback through the hypervisor's bridge, one top-of-rack switch, a
    /// data-centre fabric, a metro link between zones.
    fn default() -> Self {
        LatencyTable { host: 0.05, rack: 0.25, zone: 1.5, region: 5.0 }
    }
}

impl LatencyTable {
    pub fn at(&self, level: Level) -> f64 {
        match level {
            Level::Host => self.host,
            Level::Rack => self.rack,
            Level::Zone => self.zone,
            Level::Region => self.region,
        }
    }

    /// The latencies must be finite, positive and grow with the level.
    pub fn validate(&self) -> Result<(), String> {
        let mut previous: Option<(Level, f64)> = None;
        for level in Level::ALL {
            let ms = self.at(level);
            if !ms.is_finite() || ms <= 0.0 {
                return Err(format!("latency_ms.{} is {ms}; it must be a positive number of milliseconds", level.name()));
            }
            if let Some((p, pms)) = previous
                && ms < pms
            {
                return Err(format!(
                    "latency_ms.{} ({ms}) is below latency_ms.{} ({pms}); farther levels cannot be faster",
                    level.name(),
                    p.name()
                ));
            }
            previous = Some((level, ms));
        }
        Ok(())
    }

    /// The farthest level at which `requirement` is met, if any.
    pub fn farthest_meeting(&self, requirement: &LatencyRequirement) -> Option<Level> {
        Level::ALL.into_iter().rev().find(|l| requirement.is_met_by(self.at(*l)))
    }
}

/// A host's place in the topology.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    pub zone: u32,
    /// Racks are numbered within the whole cluster (two zones never share a rack number's rack).
    pub rack: u32,
}

/// The level separating VMs on hosts `a` and `b` at `la` and `lb`.
pub fn level_between(a: usize, la: Location, b: usize, lb: Location) -> Level {
    if a == b {
        Level::Host
    } else if la.zone != lb.zone {
        Level::Region
    } else if la.rack != lb.rack {
        Level::Zone
    } else {
        Level::Rack
    }
}

/// A `network_latency_requirement` such as `" < 1ms"`, `"<=0.5 ms"` or `"< 200us"`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyRequirement {
    /// The bound in milliseconds.
    pub ms: f64,
    /// `<=` rather than `<`.
    pub inclusive: bool,
}

impl LatencyRequirement {
    pub fn is_met_by(&self, latency_ms: f64) -> bool {
        if self.inclusive { latency_ms <= self.ms } else { latency_ms < self.ms }
    }
}

impl std::str::FromStr for LatencyRequirement {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let t = text.trim();
        let (inclusive, rest) = if let Some(r) = t.strip_prefix("<=") {
            (true, r)
        } else if let Some(r) = t.strip_prefix('<') {
            (false, r)
        } else {
            return Err(format!("{text:?} is not a latency bound; write it as \"< 1ms\" or \"<= 500us\""));
        };
        let rest = rest.trim();
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, unit) = (&rest[..split], rest[split..].trim());
        let value: f64 = number.parse().map_err(|_| format!("{text:?}: {number:?} is not a number"))?;
        let scale = match unit {
            "ms" => 1.0,
            "us" | "µs" => 1e-3,
            "s" => 1e3,
            "" => return Err(format!("{text:?} has no unit; use ms, us or s")),
            other => return Err(format!("{text:?}: unknown unit {other:?}; use ms, us or s")),
        };
        let ms = value * scale;
        if !ms.is_finite() || ms <= 0.0 {
            return Err(format!("{text:?} is not a positive latency"));
        }
        Ok(LatencyRequirement { ms, inclusive })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_parse_in_the_forms_operators_write() {
        let r = |s: &str| s.parse::<LatencyRequirement>();
        assert_eq!(r(" < 1ms"), Ok(LatencyRequirement { ms: 1.0, inclusive: false }));
        assert_eq!(r("<=0.5 ms"), Ok(LatencyRequirement { ms: 0.5, inclusive: true }));
        assert_eq!(r("< 200us").unwrap().ms, 0.2);
        assert_eq!(r("<2s").unwrap().ms, 2000.0);
        for bad in ["1ms", "< fast", "< 1", "< 1 parsec", "< 0ms", "", "< .ms"] {
            assert!(r(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(r("< 1 parsec").unwrap_err().contains("parsec"));
    }

    #[test]
    fn a_requirement_is_met_at_the_levels_whose_latency_is_below_it() {
        let t = LatencyTable::default();
        let below_1ms: LatencyRequirement = "< 1ms".parse().unwrap();
        assert_eq!(t.farthest_meeting(&below_1ms), Some(Level::Rack), "0.25 ms in a rack, 1.5 ms across racks");
        assert_eq!(t.farthest_meeting(&"< 0.1ms".parse().unwrap()), Some(Level::Host));
        assert_eq!(t.farthest_meeting(&"< 0.01ms".parse().unwrap()), None);
        assert_eq!(t.farthest_meeting(&"<= 5ms".parse().unwrap()), Some(Level::Region));
        assert_eq!(t.farthest_meeting(&"< 5ms".parse().unwrap()), Some(Level::Zone));
    }

    #[test]
    fn levels_follow_hosts_racks_and_zones() {
        let (a, b, c) = (Location { zone: 0, rack: 0 }, Location { zone: 0, rack: 1 }, Location { zone: 1, rack: 7 });
        assert_eq!(level_between(3, a, 3, a), Level::Host);
        assert_eq!(level_between(3, a, 4, a), Level::Rack);
        assert_eq!(level_between(3, a, 4, b), Level::Zone);
        assert_eq!(level_between(3, a, 4, c), Level::Region);
        assert!(LatencyTable { host: 0.05, rack: 0.02, zone: 1.0, region: 2.0 }.validate().unwrap_err().contains("latency_ms.rack"));
        assert!(LatencyTable { region: f64::NAN, ..LatencyTable::default() }.validate().is_err());
        LatencyTable::default().validate().unwrap();
    }
}
