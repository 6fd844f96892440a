//! How `presagectl resize`, `leases` and `lease` show the agents' answers: a table (leases with
//! their deadlines and reasons; resizes with desired, allocated, acknowledged and actual) or JSON.

use std::fmt::Write as _;

use presage_protocol::pb::{ListLeasesResponse, SizingResponse, SizingState};
use presage_protocol::sizing_wire::state_json;

use crate::view::OutputFormat;

/// The table of one host's leases and resizes.
pub fn render_state(host: &str, s: Option<&SizingState>) -> String {
    let mut out = String::new();
    let Some(s) = s else {
        let _ = writeln!(out, "{host}: no sizing state reported yet");
        return out;
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    for l in &s.leases {
        let left = l.deadline_ms.saturating_sub(now_ms) / 1000;
        let lender = if l.lender.is_empty() { "(host)" } else { l.lender.as_str() };
        let unit = if l.resource == "cpu" { "cores" } else { "MiB" };
        let _ = writeln!(
            out,
            "{host}  lease {}  {lender} -> {}  {:.2} {unit} {}  ends in {left} s  {}",
            l.id, l.borrower, l.amount, l.resource, l.reason
        );
    }
    for r in &s.resizes {
        let _ = writeln!(
            out,
            "{host}  resize {}  {}  desired {:.2} cores/{:.0} MiB  allocated {:.2}/{:.0}  acknowledged {:.2}/{:.0}  actual {:.0} MiB{}",
            r.vm_id,
            r.status,
            r.desired_cpu_cores,
            r.desired_memory_mib,
            r.allocated_cpu_cores,
            r.allocated_memory_mib,
            r.acknowledged_cpu_cores,
            r.acknowledged_memory_mib,
            r.actual_memory_mib,
            if r.message.is_empty() { String::new() } else { format!("  ({})", r.message) }
        );
    }
    if s.leases.is_empty() && s.resizes.is_empty() {
        let _ = writeln!(out, "{host}: no leases, no resizes");
    }
    out
}

pub fn show_leases(r: &ListLeasesResponse, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            crate::print_json(&serde_json::Value::Array(r.hosts.iter().map(|h| state_json(&h.host_id, h.state.as_ref())).collect()))?
        }
        OutputFormat::Table => {
            r.hosts.iter().for_each(|h| print!("{}", render_state(&h.host_id, h.state.as_ref())));
            if let Some(p) = &r.last_pass {
                print!("{}", presage_protocol::sizing_wire::render_pass(p));
            }
        }
        OutputFormat::Csv | OutputFormat::Dot => crate::plan::no_csv("leases")?,
    }
    Ok(())
}

/// An agent's answer to a resize or a lease: accepted or why not, and the host's state (only
/// `vm`'s resize when one is named).
pub fn show_answer(r: &SizingResponse, vm: Option<&str>, output: OutputFormat) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => {
            let mut v = state_json(&r.host_id, r.state.as_ref());
            v["accepted"] = r.accepted.into();
            v["refusal"] = r.refusal.clone().into();
            crate::print_json(&v)?
        }
        OutputFormat::Table => {
            if r.accepted {
                println!("{}: accepted", r.host_id);
            } else {
                println!("{}: refused: {}", r.host_id, r.refusal);
            }
            let state = r.state.as_ref().map(|s| SizingState {
                leases: if vm.is_some() { Vec::new() } else { s.leases.clone() },
                resizes: s.resizes.iter().filter(|e| vm.is_none_or(|v| e.vm_id == v)).cloned().collect(),
            });
            print!("{}", render_state(&r.host_id, state.as_ref()));
        }
        OutputFormat::Csv | OutputFormat::Dot => crate::plan::no_csv("sizing")?,
    }
    if !r.accepted {
        anyhow::bail!("the agent on {} refused: {}", r.host_id, r.refusal);
    }
    Ok(())
}
