//! The sizing messages (`LeaseEntry`, `ResizeEntry`) to and from the decision core's types, so
//! the agent and the coordinator translate them one way. A message that is not a lease is an
//! error naming the field.

use presage_decide::sizing::Allocation;
use presage_decide::sizing::lease::{Lease, LeaseResource};
use presage_decide::sizing::progress::ResizeRecord;

use crate::pb;

impl From<&Lease> for pb::LeaseEntry {
    fn from(l: &Lease) -> pb::LeaseEntry {
        pb::LeaseEntry {
            id: l.id.clone(),
            resource: l.resource.as_str().into(),
            amount: l.amount,
            lender: l.lender.clone().unwrap_or_default(),
            borrower: l.borrower.clone(),
            granted_at_ms: l.granted_at_ms,
            deadline_ms: l.deadline_ms,
            reason: l.reason.clone(),
        }
    }
}

impl TryFrom<&pb::LeaseEntry> for Lease {
    type Error = String;

    fn try_from(e: &pb::LeaseEntry) -> Result<Lease, String> {
        let resource = match e.resource.as_str() {
            "cpu" => LeaseResource::Cpu,
            "memory" => LeaseResource::Memory,
            other => return Err(format!("lease.resource: {other:?} is not cpu or memory")),
        };
        if e.id.trim().is_empty() {
            return Err("lease.id: empty".into());
        }
        if e.borrower.trim().is_empty() {
            return Err("lease.borrower: empty".into());
        }
        if !(e.amount.is_finite() && e.amount > 0.0) {
            return Err(format!("lease.amount: {} is not a finite number > 0", e.amount));
        }
        if e.deadline_ms <= e.granted_at_ms {
            return Err(format!("lease.deadline_ms: {} is not after granted_at_ms {}", e.deadline_ms, e.granted_at_ms));
        }
        Ok(Lease {
            id: e.id.clone(),
            resource,
            amount: e.amount,
            lender: (!e.lender.is_empty()).then(|| e.lender.clone()),
            borrower: e.borrower.clone(),
            granted_at_ms: e.granted_at_ms,
            deadline_ms: e.deadline_ms,
            reason: e.reason.clone(),
        })
    }
}

impl From<&ResizeRecord> for pb::ResizeEntry {
    fn from(r: &ResizeRecord) -> pb::ResizeEntry {
        let Allocation { cpu_cores: desired_cpu_cores, memory_mib: desired_memory_mib } = r.desired;
        pb::ResizeEntry {
            vm_id: r.vm_id.clone(),
            generation: r.generation,
            desired_cpu_cores,
            desired_memory_mib,
            allocated_cpu_cores: r.allocated.cpu_cores,
            allocated_memory_mib: r.allocated.memory_mib,
            acknowledged_cpu_cores: r.acknowledged.cpu_cores,
            acknowledged_memory_mib: r.acknowledged.memory_mib,
            actual_cpu_cores: r.actual.cpu_cores,
            actual_memory_mib: r.actual.memory_mib,
            status: r.status.as_str().into(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            attempts: r.attempts,
            updated_ms: r.updated_ms,
            disk_bytes_per_s: r.io.disk_bytes_per_s,
            net_bytes_per_s: r.io.net_bytes_per_s,
        }
    }
}

fn lease_json(l: &pb::LeaseEntry) -> serde_json::Value {
    serde_json::json!({
        "id": l.id, "resource": l.resource, "amount": l.amount,
        "lender": if l.lender.is_empty() { serde_json::Value::Null } else { l.lender.clone().into() },
        "borrower": l.borrower, "granted_at_ms": l.granted_at_ms, "deadline_ms": l.deadline_ms, "reason": l.reason,
    })
}

fn resize_json(r: &pb::ResizeEntry) -> serde_json::Value {
    serde_json::json!({
        "vm": r.vm_id, "generation": r.generation, "status": r.status, "reason": r.reason, "message": r.message,
        "desired": {"cpu_cores": r.desired_cpu_cores, "memory_mib": r.desired_memory_mib},
        "allocated": {"cpu_cores": r.allocated_cpu_cores, "memory_mib": r.allocated_memory_mib},
        "acknowledged": {"cpu_cores": r.acknowledged_cpu_cores, "memory_mib": r.acknowledged_memory_mib},
        "actual": {"cpu_cores": r.actual_cpu_cores, "memory_mib": r.actual_memory_mib},
        "attempts": r.attempts, "updated_ms": r.updated_ms,
        "disk_bytes_per_s": r.disk_bytes_per_s, "net_bytes_per_s": r.net_bytes_per_s,
    })
}

/// One host's leases and resizes as JSON (what `presagectl --output json` prints and the REST API
/// answers).
pub fn state_json(host: &str, s: Option<&pb::SizingState>) -> serde_json::Value {
    serde_json::json!({
        "host": host,
        "leases": s.map(|s| s.leases.iter().map(lease_json).collect::<Vec<_>>()).unwrap_or_default(),
        "resizes": s.map(|s| s.resizes.iter().map(resize_json).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

/// The coordinator's last sizing pass as JSON (`GET /sizing/pass`).
pub fn pass_json(p: &pb::SizingPass) -> serde_json::Value {
    serde_json::json!({
        "mode": p.mode, "at_ms": p.at_ms, "hosts": p.hosts, "vms": p.vms,
        "proposals": p.proposals.iter().map(|x| serde_json::json!({
            "host": x.host_id, "vm": x.vm_id, "kind": x.kind, "reason": x.reason, "outcome": x.outcome,
            "from": (x.kind == "resize").then(|| serde_json::json!({"cpu_cores": x.from_cpu_cores, "memory_mib": x.from_memory_mib})),
            "to": (x.kind == "resize").then(|| serde_json::json!({"cpu_cores": x.to_cpu_cores, "memory_mib": x.to_memory_mib})),
            "lease": x.lease.as_ref().map(lease_json),
        })).collect::<Vec<_>>(),
    })
}

/// The last pass as lines: one per proposal, with its reason and what came of it.
pub fn render_pass(p: &pb::SizingPass) -> String {
    use std::fmt::Write as _;
    let mut out = format!("sizing pass ({}): {} hosts, {} VMs, {} proposals\n", p.mode, p.hosts, p.vms, p.proposals.len());
    for x in &p.proposals {
        let what = match &x.lease {
            Some(l) => format!(
                "lease {:.2} {} {} -> {} for {} s",
                l.amount,
                l.resource,
                if l.lender.is_empty() { "(host)" } else { l.lender.as_str() },
                l.borrower,
                l.deadline_ms.saturating_sub(l.granted_at_ms) / 1000
            ),
            None => format!(
                "resize {}  {:.2} cores/{:.0} MiB -> {:.2}/{:.0}",
                x.vm_id, x.from_cpu_cores, x.from_memory_mib, x.to_cpu_cores, x.to_memory_mib
            ),
        };
        let _ = writeln!(out, "{}  {what}  [{}]  {}", x.host_id, x.outcome, x.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_cross_the_wire_and_bad_ones_name_the_field() {
        let l = Lease {
            id: "h:b:1".into(),
            resource: LeaseResource::Cpu,
            amount: 0.5,
            lender: None,
            borrower: "b".into(),
            granted_at_ms: 5,
            deadline_ms: 10,
            reason: "r".into(),
        };
        let wire = pb::LeaseEntry::from(&l);
        assert_eq!(Lease::try_from(&wire).unwrap(), l);
        for (bad, field) in [
            (pb::LeaseEntry { resource: "disk".into(), ..wire.clone() }, "lease.resource"),
            (pb::LeaseEntry { amount: f64::NAN, ..wire.clone() }, "lease.amount"),
            (pb::LeaseEntry { deadline_ms: 5, ..wire.clone() }, "lease.deadline_ms"),
            (pb::LeaseEntry { borrower: " ".into(), ..wire.clone() }, "lease.borrower"),
        ] {
            assert!(Lease::try_from(&bad).unwrap_err().starts_with(field));
        }
    }
}
