//! `presagectl plan`, `presagectl explain VM` and `presagectl place`: the advisory pass's plan
//! with each move's reasons, why a VM is where it is, and a placement dry run; tables for people,
//! JSON for scripts (the protobuf messages as JSON).

use std::fmt::Write;

use anyhow::bail;
use presage_protocol::pb::{
    ExplainResponse, GetPlanResponse, HostScore, PlaceResponse, PlannedMove, RejectionCount, ReserveOnHostResponse,
};

/// Parses a memory size: a number of MiB, or a number with a unit (KiB, MiB, GiB, TiB; K, M, G,
/// T are read as binary units too).
pub fn parse_memory_mib(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?}: expected a size such as 4096, 4096MiB or 4GiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "m" | "mi" | "mib" | "mb" => 1.0,
        "k" | "ki" | "kib" | "kb" => 1.0 / 1024.0,
        "g" | "gi" | "gib" | "gb" => 1024.0,
        "t" | "ti" | "tib" | "tb" => 1024.0 * 1024.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (KiB, MiB, GiB or TiB)")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?}: must be a size >= 0"));
    }
    Ok(n * scale)
}

/// A rate limit in bytes per second from `100` (MiB/s), `100MiB/s`, `200MB/s`, `1Gbit/s`,
/// `800Mbit/s`, `512KiB/s`, or `0` / `unlimited` (no limit).
pub fn parse_rate_bytes_per_s(s: &str) -> Result<f64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(0.0);
    }
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?}: expected a rate such as 100MiB/s, 1Gbit/s or unlimited"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix("/s").or_else(|| unit.strip_suffix("ps")).unwrap_or(&unit);
    let scale = match unit {
        "" | "mib" | "m" => 1_048_576.0,
        "kib" | "k" => 1024.0,
        "gib" | "g" => 1_073_741_824.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (KiB/s, MiB/s, GiB/s, MB/s, GB/s, Mbit/s, Gbit/s)")),
    };
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?}: must be a rate >= 0"));
    }
    Ok(n * scale)
}

fn terms(s: &HostScore) -> String {
    s.terms.iter().map(|t| format!("{} {:.3}x{:.2}={:+.3}", t.scorer, t.value, t.weight, t.contribution)).collect::<Vec<_>>().join("  ")
}

fn score_lines(out: &mut String, label: &str, s: &HostScore) {
    let _ = writeln!(
        out,
        "    {label:<9} {:<16} score {:>8.3}  risk {:>5.1} %  load {:>5.1} %",
        s.host_id,
        s.score,
        s.risk_after * 100.0,
        s.utilisation_after * 100.0
    );
    let _ = writeln!(out, "              {}", terms(s));
}

fn rejected(r: &[RejectionCount]) -> String {
    if r.is_empty() {
        return "none".into();
    }
    r.iter().map(|c| format!("{} {}", c.hosts, c.reason)).collect::<Vec<_>>().join(", ")
}

fn move_block(out: &mut String, i: usize, m: &PlannedMove) {
    let _ = writeln!(out, "{:>3}. {}  {} -> {}  ({})", i + 1, m.vm_id, m.from_host, m.to_host, m.reason);
    if m.explained {
        let _ = writeln!(
            out,
            "    benefit {:.0} kJ > cost {:.0} kJ; source risk {:.1} % -> {:.1} %",
            m.benefit_j / 1000.0,
            m.cost_j / 1000.0,
            m.source_risk_before * 100.0,
            m.source_risk_after * 100.0
        );
        if let Some(c) = &m.confidence {
            let _ = writeln!(out, "    {}", confidence_line(c));
        }
        if let Some(c) = &m.chosen {
            score_lines(out, "chosen", c);
        }
        if let Some(r) = &m.runner_up {
            score_lines(out, "runner-up", r);
        }
        if let Some(a) = &m.application {
            let _ = writeln!(out, "    {}", app_line(a));
        }
    }
}

/// A VM's application figures as the policy judged them.
fn app_line(a: &presage_protocol::pb::AppHealth) -> String {
    let learned = if a.tolerance > 0.0 { format!("; suffers above {:.0} % host CPU", a.tolerance * 100.0) } else { String::new() };
    format!(
        "application: p99 {:.2} x its SLO, host contention {:.0} % ({}){learned}",
        a.latency_over_slo,
        a.host_contention * 100.0,
        a.verdict
    )
}

fn app_json(a: &presage_protocol::pb::AppHealth) -> serde_json::Value {
    serde_json::json!({
        "latency_over_slo": a.latency_over_slo, "host_contention": a.host_contention,
        "verdict": a.verdict, "tolerance": (a.tolerance > 0.0).then_some(a.tolerance),
    })
}

pub fn render_plan(p: &GetPlanResponse) -> String {
    let mut out = String::new();
    if !p.applied.is_empty() {
        let done = p.applied.iter().filter(|m| m.outcome == "done").count();
        let _ = writeln!(out, "applied (automatic mode): {done} done, {} not, of the last {}:", p.applied.len() - done, p.applied.len());
        for m in p.applied.iter().rev().take(10) {
            let detail = if m.detail.is_empty() { String::new() } else { format!(": {}", m.detail) };
            let _ = writeln!(
                out,
                "  {} {} -> {} {}{detail} ({:.0} s ago)",
                m.vm_id,
                m.from_host,
                m.to_host,
                m.outcome,
                m.ago_ms as f64 / 1000.0
            );
        }
    }
    if !p.available {
        let _ = writeln!(out, "policy {}: no advisory pass yet (the first runs one [policy] interval after start)", p.policy);
        return out;
    }
    let _ = writeln!(
        out,
        "policy {}: {} moves over {} hosts / {} VMs, planned {:.0} s ago (advisory: nothing is executed)",
        p.policy,
        p.moves.len(),
        p.hosts_considered,
        p.vms_considered,
        p.age_ms as f64 / 1000.0
    );
    for (i, m) in p.moves.iter().enumerate() {
        move_block(&mut out, i, m);
    }
    out
}

pub fn render_explain(e: &ExplainResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} runs on {} (plan {:.0} s old)", e.vm_id, e.host_id, e.plan_age_ms as f64 / 1000.0);
    let steps: Vec<String> = e.demand_mean_mhz.iter().zip(&e.demand_p90_mhz).map(|(m, p)| format!("{m:.0}/{p:.0}")).collect::<Vec<_>>();
    let _ = writeln!(out, "demand ({}), mean/p90 MHz per 5-minute step: {}", e.demand_source, steps.join(" "));
    if !e.demand_spread_mhz.is_empty() {
        let spread: Vec<String> = e.demand_spread_mhz.iter().map(|s| format!("{s:.0}")).collect();
        let _ = writeln!(
            out,
            "spread counted in its host's risk, MHz: {} (peak of the last day {:.0} MHz)",
            spread.join(" "),
            e.demand_peak_mhz
        );
    }
    if let Some(a) = &e.application {
        let _ = writeln!(out, "{}", app_line(a));
    }
    match &e.planned_move {
        Some(m) if e.planned => {
            let _ = writeln!(out, "the current plan moves it:");
            move_block(&mut out, 0, m);
        }
        _ => {
            let _ = writeln!(out, "the current plan leaves it where it is");
        }
    }
    let _ = writeln!(out, "hosts ranked for it now ({} could take it; rejected: {}):", e.feasible_hosts, rejected(&e.rejected));
    for (i, s) in e.ranking.iter().enumerate() {
        let label = if s.host_id == e.host_id { "(here)".to_string() } else { format!("#{}", i + 1) };
        score_lines(&mut out, &label, s);
    }
    if !e.anomalies.is_empty() {
        let _ = writeln!(out, "recent anomalies:");
        out.push_str(&render_anomalies(&e.anomalies));
    }
    out
}

/// Anomalies, newest first: when, where, which series, the value against what was expected.
pub fn render_anomalies(events: &[presage_protocol::pb::AnomalyEvent]) -> String {
    let mut out = String::new();
    if events.is_empty() {
        out.push_str("no anomalies\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<38} {:<16} {:>10} {:>10} {:>6}",
        "WHEN (UTC)", "HOST", "VM", "SERIES", "VALUE", "EXPECTED", "SCORE"
    );
    for a in events {
        let when = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(a.at_ms)).to_string();
        let vm = if a.vm_id.is_empty() { "(the host)" } else { &a.vm_id };
        let _ =
            writeln!(out, "{when:<24} {:<12} {vm:<38} {:<16} {:>10.3} {:>10.3} {:>6.3}", a.host_id, a.series, a.value, a.expected, a.score);
    }
    out
}

pub fn anomalies_json(events: &[presage_protocol::pb::AnomalyEvent]) -> serde_json::Value {
    serde_json::Value::Array(
        events
            .iter()
            .map(|a| {
                serde_json::json!({"host_id": a.host_id, "vm_id": a.vm_id, "series": a.series, "value": a.value,
                                   "expected": a.expected, "score": a.score, "at_ms": a.at_ms})
            })
            .collect(),
    )
}

pub fn render_place(p: &PlaceResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "dry run against the plan of {:.0} s ago: {} hosts could take it; rejected: {}",
        p.plan_age_ms as f64 / 1000.0,
        p.feasible_hosts,
        rejected(&p.rejected)
    );
    for (i, s) in p.ranking.iter().enumerate() {
        score_lines(&mut out, &format!("#{}", i + 1), s);
    }
    out
}

pub fn render_reservation(host: &str, r: &ReserveOnHostResponse) -> String {
    let mut out = String::new();
    if r.accepted {
        let _ = writeln!(out, "{host}: done");
    } else {
        let _ = writeln!(out, "{host}: refused: {}", r.refusal);
    }
    if let Some(s) = &r.state {
        let _ = writeln!(
            out,
            "  capacity {:.0} MHz / {:.0} MiB; its VMs use {:.0} MHz / {:.0} MiB",
            s.capacity_cpu_mhz, s.capacity_memory_mib, s.committed_cpu_mhz, s.committed_memory_mib
        );
        for e in &s.held {
            let _ = writeln!(
                out,
                "  {:<4} {:<24} vm {:<20} {:>8.0} MHz {:>8.0} MiB  expires at {} ms",
                if e.hard { "hard" } else { "soft" },
                e.id,
                e.vm_id,
                e.cpu_mhz,
                e.memory_mib,
                e.expires_at_ms
            );
        }
    }
    out
}

pub fn reservation_json(r: &ReserveOnHostResponse) -> serde_json::Value {
    let s = r.state.clone().unwrap_or_default();
    serde_json::json!({
        "accepted": r.accepted, "refusal": r.refusal,
        "capacity_cpu_mhz": s.capacity_cpu_mhz, "capacity_memory_mib": s.capacity_memory_mib,
        "committed_cpu_mhz": s.committed_cpu_mhz, "committed_memory_mib": s.committed_memory_mib,
        "held": s.held.iter().map(|e| serde_json::json!({
            "id": e.id, "vm_id": e.vm_id, "hard": e.hard, "cpu_mhz": e.cpu_mhz, "memory_mib": e.memory_mib, "expires_at_ms": e.expires_at_ms,
        })).collect::<Vec<_>>(),
    })
}

/// Refuses CSV for the commands that have no table of rows.
pub fn no_csv(cmd: &str) -> anyhow::Result<()> {
    bail!("--output csv and dot are not available for {cmd}; use table or json")
}

fn score_json(s: &HostScore) -> serde_json::Value {
    serde_json::json!({
        "host_id": s.host_id, "score": s.score, "risk_after": s.risk_after, "utilisation_after": s.utilisation_after,
        "terms": s.terms.iter().map(|t| serde_json::json!({
            "scorer": t.scorer, "value": t.value, "weight": t.weight, "contribution": t.contribution,
        })).collect::<Vec<_>>(),
    })
}

/// `confidence 0.62: forecast p10-p90 35 % of p50 (certainty 0.74), 84 % of the scorers' weight
/// for the chosen host (lead 0.21)`.
fn confidence_line(c: &presage_protocol::pb::Confidence) -> String {
    let forecast = if c.has_forecast {
        format!("forecast p10-p90 {:.0} % of p50 (certainty {:.2})", c.forecast_spread * 100.0, c.certainty)
    } else {
        format!("no forecast (certainty {:.2})", c.certainty)
    };
    let ensemble = if c.has_runner_up {
        format!("{:.0} % of the scorers' weight for the chosen host (lead {:.2})", c.agreement * 100.0, c.margin)
    } else {
        "no other host could take it".to_string()
    };
    format!("confidence {:.2}: {forecast}, {ensemble}", c.value)
}

fn move_json(m: &PlannedMove) -> serde_json::Value {
    let mut v = serde_json::json!({ "vm_id": m.vm_id, "from_host": m.from_host, "to_host": m.to_host, "reason": m.reason });
    if m.explained {
        v["benefit_j"] = m.benefit_j.into();
        v["cost_j"] = m.cost_j.into();
        v["source_risk_before"] = m.source_risk_before.into();
        v["source_risk_after"] = m.source_risk_after.into();
        v["chosen"] = m.chosen.as_ref().map(score_json).unwrap_or_default();
        v["runner_up"] = m.runner_up.as_ref().map(score_json).unwrap_or_default();
        if let Some(a) = &m.application {
            v["application"] = app_json(a);
        }
        if let Some(c) = &m.confidence {
            v["confidence"] = serde_json::json!({
                "value": c.value, "certainty": c.certainty, "agreement": c.agreement,
                "forecast_spread": c.has_forecast.then_some(c.forecast_spread),
                "margin": c.has_runner_up.then_some(c.margin),
            });
        }
    }
    v
}

fn rejected_json(r: &[RejectionCount]) -> serde_json::Value {
    r.iter().map(|c| (c.reason.clone(), serde_json::Value::from(c.hosts))).collect::<serde_json::Map<_, _>>().into()
}

pub fn plan_json(p: &GetPlanResponse) -> serde_json::Value {
    serde_json::json!({
        "policy": p.policy, "available": p.available, "age_ms": p.age_ms,
        "hosts_considered": p.hosts_considered, "vms_considered": p.vms_considered,
        "moves": p.moves.iter().map(move_json).collect::<Vec<_>>(),
        "applied": p.applied.iter().map(|m| serde_json::json!({
            "vm_id": m.vm_id, "from_host": m.from_host, "to_host": m.to_host, "outcome": m.outcome, "detail": m.detail, "ago_ms": m.ago_ms,
        })).collect::<Vec<_>>(),
    })
}

pub fn explain_json(e: &ExplainResponse) -> serde_json::Value {
    serde_json::json!({
        "vm_id": e.vm_id, "host_id": e.host_id, "demand_source": e.demand_source,
        "demand_mean_mhz": e.demand_mean_mhz, "demand_p90_mhz": e.demand_p90_mhz,
        "demand_spread_mhz": e.demand_spread_mhz, "demand_peak_mhz": e.demand_peak_mhz,
        "planned_move": e.planned_move.as_ref().filter(|_| e.planned).map(move_json),
        "ranking": e.ranking.iter().map(score_json).collect::<Vec<_>>(),
        "feasible_hosts": e.feasible_hosts, "rejected": rejected_json(&e.rejected), "plan_age_ms": e.plan_age_ms,
        "anomalies": anomalies_json(&e.anomalies),
        "application": e.application.as_ref().map(app_json),
    })
}

pub fn place_json(p: &PlaceResponse) -> serde_json::Value {
    serde_json::json!({
        "ranking": p.ranking.iter().map(score_json).collect::<Vec<_>>(),
        "feasible_hosts": p.feasible_hosts, "rejected": rejected_json(&p.rejected), "plan_age_ms": p.plan_age_ms,
    })
}

/// The executor's plans as a table: one block per plan, one line per move.
pub fn render_plans(plans: &[presage_protocol::pb::PlanInfo]) -> String {
    use crate::terminal::{paint, tone_of};
    use std::fmt::Write;
    let mut out = String::new();
    if plans.is_empty() {
        out.push_str("no plans in the journal yet\n");
    }
    for p in plans {
        let mut head = format!("plan {} ({}): {}", p.id, p.origin, paint(&p.status, tone_of(&p.status)));
        if p.rollback_of > 0 {
            let _ = write!(head, ", reverses plan {}", p.rollback_of);
        }
        if p.rolled_back_by > 0 {
            let _ = write!(head, ", reversed by plan {}", p.rolled_back_by);
        }
        let _ = writeln!(out, "{head}");
        for m in &p.moves {
            let mut line = format!("  {} {} -> {} [{}] {}", m.vm_id, m.from_host, m.to_host, m.reason, paint(&m.step, tone_of(&m.step)));
            if m.duration_ms > 0 {
                let _ = write!(line, " in {:.1} s", m.duration_ms as f64 / 1000.0);
            }
            if let Some(pr) = &m.progress
                && pr.data_total > 0
            {
                let _ = write!(
                    line,
                    " ({:.0} % of {} MiB, {} MiB/s)",
                    100.0 * pr.data_processed as f64 / pr.data_total as f64,
                    pr.data_total >> 20,
                    pr.bytes_per_s >> 20
                );
            }
            if !m.detail.is_empty() {
                let _ = write!(line, ": {}", m.detail);
            }
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// One plan as JSON.
pub fn plan_info_json(p: &presage_protocol::pb::PlanInfo) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "origin": p.origin,
        "status": p.status,
        "created_unix_ms": p.created_unix_ms,
        "rollback_of": (p.rollback_of > 0).then_some(p.rollback_of),
        "rolled_back_by": (p.rolled_back_by > 0).then_some(p.rolled_back_by),
        "moves": p.moves.iter().map(|m| serde_json::json!({
            "vm_id": m.vm_id,
            "from_host": m.from_host,
            "to_host": m.to_host,
            "reason": m.reason,
            "step": m.step,
            "detail": m.detail,
            "duration_ms": m.duration_ms,
            "progress": m.progress.as_ref().map(|pr| serde_json::json!({
                "elapsed_ms": pr.elapsed_ms,
                "data_total": pr.data_total,
                "data_processed": pr.data_processed,
                "data_remaining": pr.data_remaining,
                "bytes_per_s": pr.bytes_per_s,
            })),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_with_units_and_bad_ones_are_named() {
        assert_eq!(parse_memory_mib("4096").unwrap(), 4096.0);
        assert_eq!(parse_memory_mib("4GiB").unwrap(), 4096.0);
        assert_eq!(parse_memory_mib("512 MiB").unwrap(), 512.0);
        assert_eq!(parse_memory_mib("1t").unwrap(), 1_048_576.0);
        for bad in ["", "lots", "4 parsecs", "-1G", "NaN"] {
            assert!(parse_memory_mib(bad).unwrap_err().contains(&format!("{bad:?}")), "{bad}");
        }
    }

    #[test]
    fn an_explained_move_shows_both_hosts_and_every_term() {
        let score = |h: &str, s: f64| HostScore {
            host_id: h.into(),
            score: s,
            risk_after: 0.05,
            utilisation_after: 0.8,
            terms: vec![presage_protocol::pb::ScoreTerm { scorer: "fit".into(), value: 0.05, weight: 2.0, contribution: 0.1 }],
        };
        let p = GetPlanResponse {
            policy: "presage".into(),
            available: true,
            moves: vec![PlannedMove {
                vm_id: "vm-1".into(),
                from_host: "a".into(),
                to_host: "b".into(),
                reason: "overload".into(),
                explained: true,
                benefit_j: 90_000.0,
                cost_j: 5_000.0,
                chosen: Some(score("b", 0.1)),
                runner_up: Some(score("c", 0.2)),
                confidence: Some(presage_protocol::pb::Confidence {
                    value: 0.62,
                    certainty: 0.74,
                    has_forecast: true,
                    forecast_spread: 0.35,
                    agreement: 0.84,
                    has_runner_up: true,
                    margin: 0.1,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut p = p;
        p.applied.push(presage_protocol::pb::AppliedMove {
            vm_id: "vm-0".into(),
            from_host: "a".into(),
            to_host: "c".into(),
            outcome: "refused".into(),
            detail: "c: memory would be overcommitted".into(),
            ago_ms: 2000,
            plan_id: 1,
        });
        let t = render_plan(&p);
        assert!(t.contains("0 done, 1 not") && t.contains("vm-0 a -> c refused: c: memory would be overcommitted"), "{t}");
        assert!(t.contains("vm-1  a -> b  (overload)") && t.contains("benefit 90 kJ > cost 5 kJ"), "{t}");
        assert!(t.contains("chosen") && t.contains("runner-up") && t.contains("fit 0.050x2.00=+0.100"), "{t}");
        assert!(
            t.contains("confidence 0.62: forecast p10-p90 35 % of p50 (certainty 0.74), 84 % of the scorers' weight for the chosen host (lead 0.10)"),
            "{t}"
        );
        let j = plan_json(&p);
        assert_eq!(
            (j["moves"][0]["confidence"]["value"].as_f64(), j["moves"][0]["confidence"]["margin"].as_f64()),
            (Some(0.62), Some(0.1))
        );
    }

    #[test]
    fn plans_render_steps_progress_and_rollback_links() {
        use presage_protocol::pb::{MigrationProgress, PlanInfo, PlanMove};
        let p = PlanInfo {
            id: 7,
            origin: "policy".into(),
            status: "running".into(),
            rolled_back_by: 0,
            rollback_of: 3,
            moves: vec![
                PlanMove {
                    vm_id: "vm-1".into(),
                    from_host: "a".into(),
                    to_host: "b".into(),
                    reason: "drain".into(),
                    step: "migrating".into(),
                    progress: Some(MigrationProgress {
                        data_total: 4 << 30,
                        data_processed: 1 << 30,
                        bytes_per_s: 100 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                PlanMove {
                    vm_id: "vm-2".into(),
                    from_host: "a".into(),
                    to_host: "c".into(),
                    reason: "drain".into(),
                    step: "skipped".into(),
                    detail: "pre-check: CPU".into(),
                    duration_ms: 1500,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = render_plans(std::slice::from_ref(&p));
        assert!(t.contains("plan 7 (policy): running, reverses plan 3"), "{t}");
        assert!(t.contains("vm-1 a -> b [drain] migrating (25 % of 4096 MiB, 100 MiB/s)"), "{t}");
        assert!(t.contains("vm-2 a -> c [drain] skipped in 1.5 s: pre-check: CPU"), "{t}");
        let j = plan_info_json(&p);
        assert_eq!(j["rollback_of"], 3);
        assert!(j["rolled_back_by"].is_null());
        assert_eq!(j["moves"][0]["progress"]["data_processed"], 1u64 << 30);
    }
}
