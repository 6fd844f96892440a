//! Anomaly detection on every series the agent samples: each VM's CPU and memory (judged
//! against the forecast the agent made for the step one cycle before, and against the series'
//! long-run distribution) and the latency its guest reports, and the host's CPU. One
//! [`AnomalyDetector`] per series (`presage_forecast::anomaly`, O(1) per observation); a score at
//! or above the threshold is an [`AnomalyEvent`] in the report. Each VM's highest score of the
//! cycle rides in its sample.

use std::collections::{HashMap, HashSet};

use presage_forecast::anomaly::{AnomalyConfig, AnomalyDetector, StepForecast};
use presage_protocol::pb::{AnomalyEvent, Report, VmForecast};

/// The standard-profile threshold tuned on the Numenta Anomaly Benchmark's public files
/// (`presagectl anomaly-eval`): 0.667, a surprise of about 8 standard deviations.
pub const DEFAULT_THRESHOLD: f64 = 0.667;

pub struct AnomalyWatch {
    cfg: AnomalyConfig,
    threshold: f64,
    /// Per owner (a VM id; "" for the host), per series name.
    detectors: HashMap<String, HashMap<String, AnomalyDetector>>,
    /// Each VM's forecast from the last cycle, for judging this cycle's observation.
    last_forecast: HashMap<String, VmForecast>,
    /// The guest report already scored per VM (its arrival time): a report is scored once.
    last_guest: HashMap<String, u64>,
}

fn quantiles_at(first_step: u64, p10: &[f32], p50: &[f32], p90: &[f32], step: u64) -> Option<StepForecast> {
    let k = step.checked_sub(first_step)? as usize;
    Some([*p10.get(k)? as f64, *p50.get(k)? as f64, *p90.get(k)? as f64])
}

impl AnomalyWatch {
    pub fn new(cfg: AnomalyConfig, threshold: f64) -> AnomalyWatch {
        AnomalyWatch { cfg, threshold, detectors: HashMap::new(), last_forecast: HashMap::new(), last_guest: HashMap::new() }
    }

    pub fn series(&self) -> usize {
        self.detectors.values().map(HashMap::len).sum()
    }

    fn score(&mut self, owner: &str, series: &str, y: f64, forecast: Option<StepForecast>) -> (f64, f64) {
        // Looked up by reference: names are copied only for a series seen the first time.
        if !self.detectors.contains_key(owner) {
            self.detectors.insert(owner.to_string(), HashMap::new());
        }
        let per_owner = self.detectors.get_mut(owner).expect("inserted above");
        if !per_owner.contains_key(series) {
            per_owner.insert(series.to_string(), AnomalyDetector::new(self.cfg));
        }
        let d = per_owner.get_mut(series).expect("inserted above");
        let expected = forecast.map(|f| f[1]).or_else(|| d.long_run().map(|(m, _)| m)).unwrap_or(y);
        (d.observe(y, forecast), expected)
    }

    /// Scores this cycle's observations (taken during 5-minute step `step`, at `at_ms`), adds
    /// the anomalies to the report and each VM's highest score to its sample. Call after the
    /// forecaster has attached this cycle's forecasts: they judge the next cycle.
    pub fn observe(&mut self, step: u64, at_ms: u64, report: &mut Report) {
        let mut events = Vec::new();
        let threshold = self.threshold;
        let mut present = HashSet::new();
        for i in 0..report.vms.len() {
            let vm_id = report.vms[i].vm_id.clone();
            present.insert(vm_id.clone());
            let mut series: Vec<(String, f64, Option<StepForecast>)> = Vec::new();
            let prior = self.last_forecast.get(&vm_id);
            let v = &report.vms[i];
            let cpu_forecast = prior.and_then(|f| quantiles_at(f.first_step, &f.cpu_p10, &f.cpu_p50, &f.cpu_p90, step));
            series.push(("cpu".into(), v.cpu_utilisation, cpu_forecast));
            if let Some(m) = v.memory_fraction() {
                let f = prior
                    .and_then(|f| Some((f.first_step, f.memory.as_ref()?)))
                    .and_then(|(first, q)| quantiles_at(first, &q.p10, &q.p50, &q.p90, step));
                series.push(("memory".into(), m, f));
            }
            if let Some(g) = &v.guest
                && g.received_ms > 0
                && self.last_guest.get(&vm_id) != Some(&g.received_ms)
            {
                self.last_guest.insert(vm_id.clone(), g.received_ms);
                for a in &g.apps {
                    series.push((format!("app:{}:p99", a.name), a.latency_p99_ms, None));
                }
            }
            let (mut best, mut best_series) = (0.0, String::new());
            for (name, y, f) in series {
                let (score, expected) = self.score(&vm_id, &name, y, f);
                if score > best {
                    best = score;
                    best_series = name.clone();
                }
                if score >= threshold {
                    events.push(AnomalyEvent {
                        vm_id: vm_id.clone(),
                        series: name,
                        value: y,
                        expected,
                        score,
                        at_ms,
                        host_id: String::new(),
                    });
                }
            }
            let v = &mut report.vms[i];
            v.anomaly_score = best;
            v.anomaly_series = best_series;
            if let Some(f) = &v.forecast {
                self.last_forecast.insert(vm_id.clone(), f.clone());
            }
        }
        if let Some(h) = &report.host {
            let (score, expected) = self.score("", "host_cpu", h.cpu_utilisation, None);
            if score >= threshold {
                events.push(AnomalyEvent {
                    vm_id: String::new(),
                    series: "host_cpu".into(),
                    value: h.cpu_utilisation,
                    expected,
                    score,
                    at_ms,
                    host_id: String::new(),
                });
            }
        }
        // VMs that left: their series go.
        self.detectors.retain(|owner, _| owner.is_empty() || present.contains(owner));
        self.last_forecast.retain(|vm, _| present.contains(vm));
        self.last_guest.retain(|vm, _| present.contains(vm));
        report.anomalies = events;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_protocol::pb::{HostUsage, VmSample};

    fn report(cpu: f64) -> Report {
        Report {
            host: Some(HostUsage { cpu_utilisation: 0.3, ..HostUsage::default() }),
            vms: vec![VmSample { vm_id: "vm-1".into(), cpu_utilisation: cpu, ..VmSample::default() }],
            ..Report::default()
        }
    }

    /// A VM steady around 20 % that jumps to 95 %: the jump is an event naming the VM and the
    /// series, its sample carries the score; the steady cycles raise nothing.
    #[test]
    fn a_jump_in_a_vms_cpu_is_an_event_and_steady_cycles_are_not() {
        let mut w = AnomalyWatch::new(AnomalyConfig::default(), DEFAULT_THRESHOLD);
        for i in 0..300u64 {
            let mut r = report(0.2 + 0.01 * ((i % 7) as f64 - 3.0));
            w.observe(i, i * 1000, &mut r);
            assert!(r.anomalies.is_empty(), "cycle {i}: {:?}", r.anomalies);
        }
        let mut r = report(0.95);
        w.observe(300, 300_000, &mut r);
        assert_eq!(r.anomalies.len(), 1, "{:?}", r.anomalies);
        let e = &r.anomalies[0];
        assert_eq!((e.vm_id.as_str(), e.series.as_str(), e.value, e.at_ms), ("vm-1", "cpu", 0.95, 300_000));
        assert!((e.expected - 0.2).abs() < 0.02, "{e:?}");
        assert_eq!((r.vms[0].anomaly_score, r.vms[0].anomaly_series.as_str()), (e.score, "cpu"));
        // The VM leaves: its detectors go with it.
        let mut empty = Report { host: report(0.0).host, ..Report::default() };
        w.observe(301, 301_000, &mut empty);
        assert_eq!(w.series(), 1, "only the host's series is left");
    }
}
