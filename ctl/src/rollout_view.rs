//! `presagectl rollout start|list|abort`: staged rollouts of a plan of resizes, as the
//! coordinator journals them.

use std::path::Path;

use anyhow::Context;
use presage_protocol::pb::{PlannedResize, RolloutView, StartRolloutRequest};
use serde::Deserialize;

use crate::view::OutputFormat;

/// One change of a plan file: `[{"vm": "web-1", "cpu_cores": 2, "memory_mib": 2048, "to_host":
/// "hv-3", "reason": "..."}, ...]` (`to_host`, `reason` optional).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    vm: String,
    cpu_cores: f64,
    memory_mib: f64,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    predicted_gain: std::collections::BTreeMap<String, f64>,
    /// Where it moves (absent: it stays).
    #[serde(default)]
    to_host: Option<String>,
    /// I/O and network limits, bytes per second (absent: left as they are; 0: removed).
    #[serde(default)]
    disk_bytes_per_s: Option<f64>,
    #[serde(default)]
    net_bytes_per_s: Option<f64>,
}

/// Reads a plan file into a request (the fraction and watch from the command line).
pub fn read_plan(path: &Path, canary_fraction: f64, watch_s: u64, seed: u64) -> anyhow::Result<StartRolloutRequest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the plan {}", path.display()))?;
    let entries: Vec<PlanEntry> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON list of {{\"vm\", \"cpu_cores\", \"memory_mib\", \"reason\"?}}", path.display()))?;
    Ok(StartRolloutRequest {
        changes: entries
            .into_iter()
            .map(|e| PlannedResize {
                vm_id: e.vm,
                cpu_cores: e.cpu_cores,
                memory_mib: e.memory_mib,
                reason: e.reason,
                predicted_gain: e.predicted_gain.into_iter().collect(),
                to_host: e.to_host.unwrap_or_default(),
                disk_bytes_per_s: e.disk_bytes_per_s,
                net_bytes_per_s: e.net_bytes_per_s,
                ..Default::default()
            })
            .collect(),
        canary_fraction,
        watch_s,
        seed,
    })
}

/// `10%` or `0.1`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("{s:?} is not a fraction (10% or 0.1)"))?;
    if v > 0.0 && v <= 1.0 { Ok(v) } else { Err(format!("{s:?} is not in (0, 100%]")) }
}

fn json(r: &RolloutView) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "proposed_by": r.proposed_by, "created_ms": r.created_ms, "phase": r.phase,
        "stages": r.stages.iter().map(|s| s.split(',').collect::<Vec<_>>()).collect::<Vec<_>>(),
        "applied": r.applied,
        "changes": r.changes.iter().map(|c| {
            let mut j = crate::config_view::planned_json(c);
            j["from_host"] = c.from_host.clone().into();
            j["to_host"] = (!c.to_host.is_empty()).then(|| c.to_host.clone()).into();
            j["predicted_gain"] = serde_json::json!(c.predicted_gain);
            j
        }).collect::<Vec<_>>(),
        "log": r.log.iter().map(|l| serde_json::json!({"at_ms": l.at_ms, "what": l.what})).collect::<Vec<_>>(),
    })
}

pub fn show(rollouts: &[RolloutView], output: OutputFormat, with_log: bool) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => crate::print_json(&serde_json::Value::Array(rollouts.iter().map(json).collect()))?,
        OutputFormat::Table => {
            if rollouts.is_empty() {
                println!("no rollouts");
            }
            for r in rollouts {
                let sizes: Vec<usize> = r.stages.iter().map(|s| s.split(',').filter(|x| !x.is_empty()).count()).collect();
                println!("rollout {}  {}  by {}  stages {:?}  applied {}", r.id, r.phase, r.proposed_by, sizes, r.applied.len());
                if with_log {
                    for l in &r.log {
                        println!(
                            "  {}  {}",
                            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(l.at_ms)),
                            l.what
                        );
                    }
                }
            }
        }
        OutputFormat::Csv | OutputFormat::Dot => crate::plan::no_csv("rollout")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_take_per_cent_or_a_share_and_refuse_the_rest() {
        assert_eq!(parse_fraction("10%"), Ok(0.1));
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("0%").is_err());
        assert!(parse_fraction("150%").is_err());
        assert!(parse_fraction("ten").unwrap_err().contains("ten"));
    }

    #[test]
    fn a_plan_file_with_a_typo_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plan.json");
        std::fs::write(&p, r#"[{"vm": "a", "cpu_cores": 1, "memory_mib": 512, "cpus": 2}]"#).unwrap();
        let e = format!("{:#}", read_plan(&p, 0.1, 60, 1).unwrap_err());
        assert!(e.contains("cpus"), "{e}");
        std::fs::write(&p, r#"[{"vm": "a", "cpu_cores": 1, "memory_mib": 512, "reason": "slack"}]"#).unwrap();
        let r = read_plan(&p, 0.1, 60, 1).unwrap();
        assert_eq!((r.changes[0].vm_id.as_str(), r.changes[0].cpu_cores, r.canary_fraction), ("a", 1.0, 0.1));
    }
}
