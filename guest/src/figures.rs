//! What an application did over one interval: request latencies (a bounded sample), requests
//! and failures; turned into the report's percentiles, throughput and error rate.
//!
//! Statsd lines (UDP datagrams, one or more lines each): `APP.latency:12.5|ms` (one request that
//! took 12.5 ms; any `|ms` timing of the app counts), `APP.errors:N|c` (N failed requests),
//! `APP.requests:N|c` (N requests whose latency is not reported). A sample rate (`|@0.1`) scales
//! counters. Lines for other apps or that do not parse are ignored (counted).

use presage_protocol::guest_pb::AppFigures;

/// The most latencies kept per interval: beyond it, a reservoir keeps a uniform sample.
pub const MAX_SAMPLES: usize = 10_000;

#[derive(Clone, Debug, Default)]
pub struct Interval {
    latencies_ms: Vec<f64>,
    seen: u64,
    requests: u64,
    errors: u64,
    /// A deterministic generator for the reservoir.
    rng: u64,
    pub ignored_lines: u64,
    /// The application's declared p99 SLO, ms (0: none), carried into every report.
    pub slo_p99_ms: f64,
}

impl Interval {
    /// One request that took `ms` and succeeded or not.
    pub fn request(&mut self, ms: f64, ok: bool) {
        if !(ms.is_finite() && ms >= 0.0) {
            self.ignored_lines += 1;
            return;
        }
        self.requests += 1;
        if !ok {
            self.errors += 1;
        }
        self.seen += 1;
        if self.latencies_ms.len() < MAX_SAMPLES {
            self.latencies_ms.push(ms);
        } else {
            self.rng = self.rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (self.rng >> 11) % self.seen;
            if (j as usize) < MAX_SAMPLES {
                self.latencies_ms[j as usize] = ms;
            }
        }
    }

    /// Reads one statsd datagram addressed to `app`.
    pub fn statsd(&mut self, app: &str, datagram: &str) {
        for line in datagram.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !self.statsd_line(app, line) {
                self.ignored_lines += 1;
            }
        }
    }

    fn statsd_line(&mut self, app: &str, line: &str) -> bool {
        let Some((name, rest)) = line.split_once(':') else { return false };
        let Some(metric) = name.strip_prefix(app).and_then(|m| m.strip_prefix('.')) else { return false };
        let mut parts = rest.split('|');
        let (Some(value), Some(kind)) = (parts.next(), parts.next()) else { return false };
        let Ok(value) = value.parse::<f64>() else { return false };
        let rate = parts
            .next()
            .and_then(|r| r.strip_prefix('@'))
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| *r > 0.0 && *r <= 1.0)
            .unwrap_or(1.0);
        match (kind, metric) {
            ("ms", _) => {
                self.request(value, true);
                true
            }
            ("c", "errors") | ("c", "requests") if value.is_finite() && value >= 0.0 && value / rate < 1e9 => {
                let n = (value / rate).round() as u64;
                self.requests += n;
                if metric == "errors" {
                    self.errors += n;
                }
                true
            }
            _ => false,
        }
    }

    /// An empty interval for an application whose declared p99 SLO is `slo_p99_ms` (0: none).
    pub fn with_slo(slo_p99_ms: f64) -> Interval {
        Interval { slo_p99_ms, ..Interval::default() }
    }

    /// The interval's figures (over `seconds`), and a fresh interval.
    pub fn close(&mut self, name: &str, seconds: f64) -> AppFigures {
        let mut l = std::mem::take(&mut self.latencies_ms);
        l.sort_by(f64::total_cmp);
        let q = |p: f64| if l.is_empty() { 0.0 } else { l[((p * l.len() as f64).ceil() as usize).clamp(1, l.len()) - 1] };
        let f = AppFigures {
            name: name.to_string(),
            latency_p50_ms: q(0.50),
            latency_p95_ms: q(0.95),
            latency_p99_ms: q(0.99),
            throughput_per_s: if seconds > 0.0 { self.requests as f64 / seconds } else { 0.0 },
            error_rate: if self.requests > 0 { (self.errors as f64 / self.requests as f64).min(1.0) } else { 0.0 },
            requests: self.requests,
            latency_slo_p99_ms: self.slo_p99_ms,
        };
        let ignored = self.ignored_lines;
        *self = Interval { rng: self.rng, ignored_lines: ignored, slo_p99_ms: self.slo_p99_ms, ..Interval::default() };
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_timings_and_counters_make_the_figures() {
        let mut i = Interval::default();
        let lines: String = (1..=100).map(|ms| format!("web.latency:{ms}|ms\n")).collect();
        i.statsd("web", &lines);
        i.statsd("web", "web.errors:1|c|@0.1\nother.latency:5|ms\nweb.latency:abc|ms\ngarbage");
        let f = i.close("web", 10.0);
        // 100 timed requests plus 10 failed ones (1 at a 0.1 sample rate).
        assert_eq!(f.requests, 110);
        assert_eq!((f.latency_p50_ms, f.latency_p95_ms, f.latency_p99_ms), (50.0, 95.0, 99.0));
        assert!((f.throughput_per_s - 11.0).abs() < 1e-12 && (f.error_rate - 10.0 / 110.0).abs() < 1e-12);
        assert_eq!(i.ignored_lines, 3);
        // The next interval starts empty.
        assert_eq!(i.close("web", 10.0).requests, 0);
    }

    #[test]
    fn the_sample_stays_bounded() {
        let mut i = Interval::default();
        for k in 0..50_000 {
            i.request((k % 1000) as f64, true);
        }
        assert_eq!(i.latencies_ms.len(), MAX_SAMPLES);
        let f = i.close("x", 1.0);
        assert_eq!(f.requests, 50_000);
        assert!(f.latency_p50_ms > 400.0 && f.latency_p50_ms < 600.0, "{f:?}");
    }
}
