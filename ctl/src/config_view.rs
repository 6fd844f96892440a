//! `presagectl config history|diff|rollback`: a VM's configuration versions as the coordinator
//! keeps them, the change between two, and asking for an old one again.

use presage_protocol::pb::{ConfigVersion, VmConfigValues};

use crate::view::OutputFormat;

fn values(v: Option<&VmConfigValues>) -> String {
    v.map_or("?".into(), |c| {
        format!("{} cores, {} MiB{}", trim(c.cpu_cores), trim(c.memory_mib), limits_text(c.disk_bytes_per_s, c.net_bytes_per_s))
    })
}

/// ", disk 50 MiB/s, net unlimited" for the limits that are set.
fn limits_text(disk: Option<f64>, net: Option<f64>) -> String {
    [("disk", disk), ("net", net)].iter().filter_map(|(name, l)| l.map(|l| format!(", {name} {}", rate(l)))).collect()
}

/// A limit in bytes per second as MiB/s; 0 is none.
pub fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s > 0.0 { format!("{} MiB/s", trim(bytes_per_s / 1_048_576.0)) } else { "unlimited".into() }
}

fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A configuration in JSON (limits left unset are null).
pub fn values_json(c: &VmConfigValues) -> serde_json::Value {
    serde_json::json!({"cpu_cores": c.cpu_cores, "memory_mib": c.memory_mib,
        "disk_bytes_per_s": c.disk_bytes_per_s, "net_bytes_per_s": c.net_bytes_per_s})
}

/// A planned change in JSON: what it sets, why, what the VM had.
pub fn planned_json(x: &presage_protocol::pb::PlannedResize) -> serde_json::Value {
    serde_json::json!({
        "vm": x.vm_id, "cpu_cores": x.cpu_cores, "memory_mib": x.memory_mib,
        "disk_bytes_per_s": x.disk_bytes_per_s, "net_bytes_per_s": x.net_bytes_per_s, "reason": x.reason,
        "from": x.from.as_ref().map(values_json),
    })
}

/// A planned change's new size for a table: "2.00 cores, 1024 MiB[, disk 50 MiB/s]".
pub fn planned_size(x: &presage_protocol::pb::PlannedResize) -> String {
    format!("{:.2} cores, {:.0} MiB{}", x.cpu_cores, x.memory_mib, limits_text(x.disk_bytes_per_s, x.net_bytes_per_s))
}

fn json(v: &ConfigVersion) -> serde_json::Value {
    let values = |c: Option<&VmConfigValues>| c.map(values_json);
    serde_json::json!({
        "vm": v.vm_id, "version": v.version, "at_ms": v.at_ms,
        "config": values(v.config.as_ref()), "previous": values(v.previous.as_ref()),
        "proposed_by": v.proposed_by, "reason": v.reason, "predicted_gain": v.predicted_gain,
        "rollout": (v.rollout_id != 0).then_some(v.rollout_id), "outcome": v.outcome,
    })
}

pub fn show_history(vm: &str, versions: &[ConfigVersion], output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => crate::print_json(&serde_json::Value::Array(versions.iter().map(json).collect()))?,
        OutputFormat::Table => {
            if versions.is_empty() {
                println!("{vm}: no configuration versions");
            }
            for v in versions {
                let gain: Vec<String> = v.predicted_gain.iter().map(|(k, g)| format!("{k} {g:+.3}")).collect();
                println!(
                    "v{:<4} {}  {} -> {}  by {}{}{}  [{}]",
                    v.version,
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(v.at_ms)),
                    values(v.previous.as_ref()),
                    values(v.config.as_ref()),
                    v.proposed_by,
                    if v.reason.is_empty() || v.reason == v.proposed_by { String::new() } else { format!(" ({})", v.reason) },
                    if gain.is_empty() { String::new() } else { format!("; predicted {}", gain.join(", ")) },
                    v.outcome
                );
            }
        }
        OutputFormat::Csv | OutputFormat::Dot => crate::plan::no_csv("config history")?,
    }
    Ok(())
}

/// The fields versions `from` and `to` of one VM differ in (a limit one of them leaves unset
/// is `None` on its side).
pub fn diff(from: &ConfigVersion, to: &ConfigVersion) -> Vec<(&'static str, Option<f64>, Option<f64>)> {
    let (a, b) = (from.config.unwrap_or_default(), to.config.unwrap_or_default());
    [
        ("cpu_cores", Some(a.cpu_cores), Some(b.cpu_cores)),
        ("memory_mib", Some(a.memory_mib), Some(b.memory_mib)),
        ("disk_bytes_per_s", a.disk_bytes_per_s, b.disk_bytes_per_s),
        ("net_bytes_per_s", a.net_bytes_per_s, b.net_bytes_per_s),
    ]
    .into_iter()
    .filter(|(_, x, y)| x != y)
    .collect()
}

pub fn show_diff(vm: &str, from: &ConfigVersion, to: &ConfigVersion, output: OutputFormat) -> anyhow::Result<()> {
    let changes = diff(from, to);
    match output {
        OutputFormat::Json => crate::print_json(&serde_json::json!({
            "vm": vm, "from": from.version, "to": to.version,
            "changes": changes.iter().map(|(f, a, b)| serde_json::json!({"field": f, "from": a, "to": b})).collect::<Vec<_>>(),
        }))?,
        OutputFormat::Table => {
            if changes.is_empty() {
                println!("{vm}: versions {} and {} set the same configuration", from.version, to.version);
            }
            for (field, a, b) in changes {
                let shown = |x: Option<f64>| match x {
                    None => "unset".to_string(),
                    Some(x) if field.ends_with("_per_s") => rate(x),
                    Some(x) => trim(x),
                };
                println!("{vm} {field}: {} (v{}) -> {} (v{})", shown(a), from.version, shown(b), to.version);
            }
        }
        OutputFormat::Csv | OutputFormat::Dot => crate::plan::no_csv("config diff")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64, cores: f64, mib: f64) -> ConfigVersion {
        ConfigVersion {
            version,
            config: Some(VmConfigValues { cpu_cores: cores, memory_mib: mib, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn a_diff_lists_only_the_fields_that_changed() {
        assert_eq!(diff(&v(1, 2.0, 1024.0), &v(3, 2.0, 768.0)), vec![("memory_mib", Some(1024.0), Some(768.0))]);
        assert!(diff(&v(1, 2.0, 1024.0), &v(2, 2.0, 1024.0)).is_empty());
        let mut limited = v(4, 2.0, 1024.0);
        limited.config.as_mut().unwrap().disk_bytes_per_s = Some(50.0 * 1_048_576.0);
        assert_eq!(diff(&v(1, 2.0, 1024.0), &limited), vec![("disk_bytes_per_s", None, Some(50.0 * 1_048_576.0))]);
    }
}
