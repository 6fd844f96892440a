//! Checks on messages from agents before they touch the cluster state. An agent is trusted to
//! speak for its own host, but a bug or a corrupted agent must not put NaN utilisations, negative
//! rates or duplicate VMs into decisions. Each error names the offending field.

use std::collections::HashSet;

use presage_protocol::pb::{HostUsage, Register, Report, VmSample};

/// At most this many VMs per report (a KVM host runs a few hundred at most).
pub const MAX_VMS_PER_REPORT: usize = 20_000;

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidMessage {
    pub field: String,
    pub reason: String,
}

impl InvalidMessage {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidMessage { field: field.into(), reason: reason.into() }
    }
}

fn fraction(field: String, v: f64) -> Result<(), InvalidMessage> {
    // Counters sampled a few microseconds apart can overshoot 1 slightly.
    if v.is_finite() && (0.0..=1.01).contains(&v) {
        Ok(())
    } else {
        Err(InvalidMessage::new(field, format!("must be a fraction between 0 and 1, got {v}")))
    }
}

fn rate(field: String, v: f64) -> Result<(), InvalidMessage> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(InvalidMessage::new(field, format!("must be a finite non-negative number, got {v}")))
    }
}

pub fn register(r: &Register) -> Result<(), InvalidMessage> {
    presage_protocol::pki::validate_name(&r.host_id, presage_protocol::tls::Role::Agent)
        .map_err(|e| InvalidMessage::new("register.host_id", e.to_string()))?;
    let cap = r.capacity.as_ref().ok_or_else(|| InvalidMessage::new("register.capacity", "missing"))?;
    if cap.cpu_cores == 0 {
        return Err(InvalidMessage::new("register.capacity.cpu_cores", "must be at least 1"));
    }
    if !(cap.cpu_mhz_per_core.is_finite() && cap.cpu_mhz_per_core > 0.0) {
        return Err(InvalidMessage::new("register.capacity.cpu_mhz_per_core", format!("must be positive, got {}", cap.cpu_mhz_per_core)));
    }
    if cap.memory_bytes == 0 {
        return Err(InvalidMessage::new("register.capacity.memory_bytes", "must be positive"));
    }
    for (field, place) in [("register.zone", &r.zone), ("register.rack", &r.rack)] {
        if place.len() > 63 || place.chars().any(|c| c.is_control()) {
            return Err(InvalidMessage::new(field, "must be at most 63 bytes without control characters"));
        }
    }
    for (field, uri) in [("register.migration_uri", &r.migration_uri), ("register.migration_data_uri", &r.migration_data_uri)] {
        if !uri.is_empty() && (uri.len() > 1024 || uri.chars().any(char::is_control) || !uri.contains("://")) {
            return Err(InvalidMessage::new(
                field,
                "must be empty or a URI (scheme://...) of at most 1024 bytes without control characters",
            ));
        }
    }
    Ok(())
}

/// A migration progress report: about a VM id of sane length.
pub fn migration_progress(p: &presage_protocol::pb::MigrationProgress) -> Result<(), InvalidMessage> {
    if p.vm_id.is_empty() || p.vm_id.len() > 256 || p.vm_id.contains('\0') {
        return Err(InvalidMessage::new("migration_progress.vm_id", "must be 1 to 256 bytes without NUL"));
    }
    Ok(())
}

fn host_usage(u: &HostUsage) -> Result<(), InvalidMessage> {
    fraction("host.cpu_utilisation".into(), u.cpu_utilisation)?;
    rate("host.load_avg_1m".into(), u.load_avg_1m)?;
    rate("host.net_rx_bytes_per_s".into(), u.net_rx_bytes_per_s)?;
    rate("host.net_tx_bytes_per_s".into(), u.net_tx_bytes_per_s)
}

fn vm(i: usize, v: &VmSample) -> Result<(), InvalidMessage> {
    let f = |name: &str| format!("vms[{i}].{name}");
    if v.vm_id.is_empty() || v.vm_id.len() > 256 || v.vm_id.contains('\0') {
        return Err(InvalidMessage::new(f("vm_id"), "must be 1 to 256 bytes without NUL"));
    }
    fraction(f("cpu_utilisation"), v.cpu_utilisation)?;
    rate(f("vcpu_mhz"), v.vcpu_mhz)?;
    rate(f("disk_read_bytes_per_s"), v.disk_read_bytes_per_s)?;
    rate(f("disk_write_bytes_per_s"), v.disk_write_bytes_per_s)?;
    rate(f("net_rx_bytes_per_s"), v.net_rx_bytes_per_s)?;
    rate(f("net_tx_bytes_per_s"), v.net_tx_bytes_per_s)?;
    if let Some(fc) = &v.forecast {
        forecast(&f("forecast"), fc)?;
    }
    Ok(())
}

/// At most 12 steps, three equally long quantile lists, fractions, never crossing; memory, when
/// present, for the same steps.
fn forecast(at: &str, fc: &presage_protocol::pb::VmForecast) -> Result<(), InvalidMessage> {
    if fc.step_seconds == 0 {
        return Err(InvalidMessage::new(format!("{at}.step_seconds"), "must be positive"));
    }
    quantiles(at, "cpu_", [&fc.cpu_p10, &fc.cpu_p50, &fc.cpu_p90])?;
    fraction(format!("{at}.cpu_peak"), fc.cpu_peak as f64)?;
    if let Some(m) = &fc.memory {
        let at = format!("{at}.memory");
        quantiles(&at, "", [&m.p10, &m.p50, &m.p90])?;
        if m.p50.len() != fc.cpu_p50.len() {
            return Err(InvalidMessage::new(format!("{at}.p50"), format!("{} steps where CPU has {}", m.p50.len(), fc.cpu_p50.len())));
        }
    }
    Ok(())
}

/// Fields `{prefix}p10`, `{prefix}p50`, `{prefix}p90` under `at`: 1 to 12 steps each, alike,
/// fractions, never crossing.
fn quantiles(at: &str, prefix: &str, [p10, p50, p90]: [&Vec<f32>; 3]) -> Result<(), InvalidMessage> {
    let n = p50.len();
    if n == 0 || n > 12 || p10.len() != n || p90.len() != n {
        return Err(InvalidMessage::new(
            format!("{at}.{prefix}p50"),
            format!("need 1 to 12 steps with p10, p50 and p90 alike; got {}, {} and {}", p10.len(), n, p90.len()),
        ));
    }
    for k in 0..n {
        let (lo, mid, hi) = (p10[k], p50[k], p90[k]);
        for (name, v) in [("p10", lo), ("p50", mid), ("p90", hi)] {
            fraction(format!("{at}.{prefix}{name}[{k}]"), v as f64)?;
        }
        if !(lo <= mid && mid <= hi) {
            return Err(InvalidMessage::new(format!("{at}.{prefix}p50[{k}]"), format!("quantiles cross: {lo} / {mid} / {hi}")));
        }
    }
    Ok(())
}

/// A host's leases and resizes: bounded, finite, well-formed.
fn sizing(s: &presage_protocol::pb::SizingState) -> Result<(), InvalidMessage> {
    if s.leases.len() > MAX_VMS_PER_REPORT * 4 || s.resizes.len() > MAX_VMS_PER_REPORT {
        return Err(InvalidMessage::new("sizing", format!("{} leases / {} resizes is over the limit", s.leases.len(), s.resizes.len())));
    }
    for (i, l) in s.leases.iter().enumerate() {
        presage_decide::sizing::lease::Lease::try_from(l).map_err(|why| InvalidMessage::new(format!("sizing.leases[{i}]"), why))?;
    }
    for (i, r) in s.resizes.iter().enumerate() {
        for (f, v) in [
            ("desired_cpu_cores", r.desired_cpu_cores),
            ("desired_memory_mib", r.desired_memory_mib),
            ("allocated_cpu_cores", r.allocated_cpu_cores),
            ("allocated_memory_mib", r.allocated_memory_mib),
            ("acknowledged_cpu_cores", r.acknowledged_cpu_cores),
            ("actual_memory_mib", r.actual_memory_mib),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(InvalidMessage::new(format!("sizing.resizes[{i}].{f}"), format!("{v} is not a finite number >= 0")));
            }
        }
    }
    Ok(())
}

pub fn report(r: &Report) -> Result<(), InvalidMessage> {
    let host = r.host.as_ref().ok_or_else(|| InvalidMessage::new("host", "missing"))?;
    host_usage(host)?;
    if r.vms.len() > MAX_VMS_PER_REPORT {
        return Err(InvalidMessage::new("vms", format!("{} VMs is over the limit of {MAX_VMS_PER_REPORT}", r.vms.len())));
    }
    let mut seen = HashSet::with_capacity(r.vms.len());
    for (i, v) in r.vms.iter().enumerate() {
        vm(i, v)?;
        if !seen.insert(v.vm_id.as_str()) {
            return Err(InvalidMessage::new(format!("vms[{i}].vm_id"), format!("{:?} appears twice", v.vm_id)));
        }
    }
    if r.anomalies.len() > MAX_VMS_PER_REPORT * 4 {
        return Err(InvalidMessage::new(
            "anomalies",
            format!("{} events is over the limit of {}", r.anomalies.len(), MAX_VMS_PER_REPORT * 4),
        ));
    }
    for (i, a) in r.anomalies.iter().enumerate() {
        if a.series.is_empty() || a.series.len() > 128 {
            return Err(InvalidMessage::new(format!("anomalies[{i}].series"), "must be 1..=128 bytes"));
        }
        for (f, v) in [("value", a.value), ("expected", a.expected)] {
            if !v.is_finite() {
                return Err(InvalidMessage::new(format!("anomalies[{i}].{f}"), format!("{v} is not finite")));
            }
        }
        if !(a.score.is_finite() && (0.0..=1.0).contains(&a.score)) {
            return Err(InvalidMessage::new(format!("anomalies[{i}].score"), format!("{} is not in 0..=1", a.score)));
        }
    }
    if let Some(s) = &r.sizing {
        sizing(s)?;
    }
    Ok(())
}

/// A reservation an operator (or the planner) asks an agent to hold.
pub fn reservation(r: &presage_protocol::pb::Reserve) -> Result<(), InvalidMessage> {
    let bad = |field: &str, problem: String| Err(InvalidMessage::new(format!("reserve.{field}"), problem));
    if r.id.is_empty() || r.id.len() > 256 {
        return bad("id", "must be 1..=256 bytes".into());
    }
    if r.vm_id.is_empty() {
        return bad("vm_id", "must not be empty".into());
    }
    for (f, v) in [("cpu_mhz", r.cpu_mhz), ("memory_mib", r.memory_mib)] {
        if !v.is_finite() || v < 0.0 {
            return bad(f, format!("{v} must be a finite number >= 0"));
        }
    }
    if r.ttl_ms == 0 || r.ttl_ms > 7 * 24 * 3_600_000 {
        return bad("ttl_ms", format!("{} must be within 1 ms..=7 days", r.ttl_ms));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use presage_protocol::pb::HostCapacity;

    #[test]
    fn names_the_offending_field() {
        let ok = Report {
            host: Some(HostUsage::default()),
            vms: vec![VmSample { vm_id: "a".into(), ..Default::default() }],
            ..Default::default()
        };
        assert!(report(&ok).is_ok());
        let mut dup = ok.clone();
        dup.vms.push(dup.vms[0].clone());
        assert_eq!(report(&dup).unwrap_err().field, "vms[1].vm_id");
        let mut neg = ok.clone();
        neg.vms[0].net_tx_bytes_per_s = -1.0;
        assert_eq!(report(&neg).unwrap_err().field, "vms[0].net_tx_bytes_per_s");
        let fc = presage_protocol::pb::VmForecast {
            forecaster: "m".into(),
            step_seconds: 300,
            first_step: 1,
            cpu_p10: vec![0.1, 0.2],
            cpu_p50: vec![0.2, 0.3],
            cpu_p90: vec![0.3, 0.4],
            memory: Some(presage_protocol::pb::QuantileForecast {
                forecaster: "n".into(),
                p10: vec![0.5; 2],
                p50: vec![0.6; 2],
                p90: vec![0.7; 2],
            }),
            cpu_peak: 0.9,
        };
        let mut ok = ok.clone();
        ok.vms[0].forecast = Some(fc);
        assert!(report(&ok).is_ok());
        let mut crossing = ok.clone();
        crossing.vms[0].forecast.as_mut().unwrap().cpu_p10[1] = 0.35;
        assert_eq!(report(&crossing).unwrap_err().field, "vms[0].forecast.cpu_p50[1]");
        let mut short = ok.clone();
        short.vms[0].forecast.as_mut().unwrap().cpu_p90.pop();
        assert_eq!(report(&short).unwrap_err().field, "vms[0].forecast.cpu_p50");
        let mut nan = ok.clone();
        nan.vms[0].forecast.as_mut().unwrap().cpu_p90[0] = f32::NAN;
        assert_eq!(report(&nan).unwrap_err().field, "vms[0].forecast.cpu_p90[0]");
        let mut peak_over = ok.clone();
        peak_over.vms[0].forecast.as_mut().unwrap().cpu_peak = 1.5;
        assert_eq!(report(&peak_over).unwrap_err().field, "vms[0].forecast.cpu_peak");
        let mut memory_over = ok.clone();
        memory_over.vms[0].forecast.as_mut().unwrap().memory.as_mut().unwrap().p90[1] = 1.5;
        assert_eq!(report(&memory_over).unwrap_err().field, "vms[0].forecast.memory.p90[1]");
        let mut memory_crossing = ok.clone();
        memory_crossing.vms[0].forecast.as_mut().unwrap().memory.as_mut().unwrap().p10[0] = 0.65;
        assert_eq!(report(&memory_crossing).unwrap_err().field, "vms[0].forecast.memory.p50[0]");
        let mut memory_longer = ok.clone();
        let m = memory_longer.vms[0].forecast.as_mut().unwrap().memory.as_mut().unwrap();
        m.p10.push(0.5);
        m.p50.push(0.6);
        m.p90.push(0.7);
        assert_eq!(report(&memory_longer).unwrap_err().field, "vms[0].forecast.memory.p50");
        let mut over = ok.clone();
        over.host.as_mut().unwrap().cpu_utilisation = 3.0;
        assert_eq!(report(&over).unwrap_err().field, "host.cpu_utilisation");
        assert_eq!(report(&Report::default()).unwrap_err().field, "host");
        let r = Register {
            host_id: "h".into(),
            capacity: Some(HostCapacity { cpu_cores: 2, cpu_mhz_per_core: 0.0, memory_bytes: 1, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(register(&r).unwrap_err().field, "register.capacity.cpu_mhz_per_core");
        let r = Register { host_id: "h/x".into(), ..r };
        assert_eq!(register(&r).unwrap_err().field, "register.host_id");
        let ok = Register {
            host_id: "h".into(),
            capacity: Some(HostCapacity { cpu_cores: 2, cpu_mhz_per_core: 2000.0, memory_bytes: 1, ..Default::default() }),
            migration_uri: "qemu+tls://h/system".into(),
            ..Default::default()
        };
        assert!(register(&ok).is_ok());
        let bad = Register { migration_uri: "h:16509".into(), ..ok.clone() };
        assert_eq!(register(&bad).unwrap_err().field, "register.migration_uri");
        let bad = Register { migration_data_uri: "tcp://h\n".into(), ..ok };
        assert_eq!(register(&bad).unwrap_err().field, "register.migration_data_uri");
        let p = presage_protocol::pb::MigrationProgress { vm_id: "x".repeat(300), ..Default::default() };
        assert_eq!(migration_progress(&p).unwrap_err().field, "migration_progress.vm_id");
    }
}
