//! Operators' sizing actions (`presagectl resize`, `leases`, `lease grant|revoke`): each VM is
//! found where its agent reports it (never from memory), the request is checked here, and the
//! host's agent admits it by its own rule and answers with its leases and resizes. One
//! implementation for gRPC and REST.

use std::sync::Arc;
use std::time::Duration;

use presage_protocol::pb::{self, CommandStatus, command, command_result};
use tracing::{Instrument, info, info_span};

use crate::sessions::CommandError;
use crate::shared::Shared;

/// How long an agent has to answer a sizing command (a resize calls libvirt).
pub const SIZING_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest lease an operator may grant.
pub const MAX_LEASE_S: u64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum SizingOpError {
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("no host reports a VM {0:?}")]
    UnknownVm(String),
    #[error("no host {0:?} has registered")]
    UnknownHost(String),
    #[error("no host reports a lease {0:?}")]
    UnknownLease(String),
    #[error("{lender} runs on {lender_host} and {borrower} on {borrower_host}: a lease is between VMs of one host")]
    NotColocated { lender: String, lender_host: String, borrower: String, borrower_host: String },
    #[error("{host}: {detail}")]
    Agent { host: String, detail: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SizingOpError {
    SizingOpError::Invalid { field, problem: problem.into() }
}

fn host_of(shared: &Shared, vm: &str) -> Result<String, SizingOpError> {
    shared.state().hosts().find(|h| h.vms.contains_key(vm)).map(|h| h.host_id.clone()).ok_or_else(|| SizingOpError::UnknownVm(vm.into()))
}

/// Sends `body` to `host` and turns the agent's answer into a response (a refusal is an answer,
/// not an error).
pub(crate) async fn ask(shared: &Arc<Shared>, host: &str, body: command::Body) -> Result<pb::SizingResponse, SizingOpError> {
    let result = shared
        .sessions
        .send(host, body, SIZING_TIMEOUT)
        .await
        .map_err(|e: CommandError| SizingOpError::Agent { host: host.into(), detail: e.to_string() })?;
    let state = match result.detail {
        Some(command_result::Detail::Sizing(s)) => Some(s),
        _ => None,
    };
    match CommandStatus::try_from(result.status) {
        Ok(CommandStatus::Ok) => Ok(pb::SizingResponse { accepted: true, refusal: String::new(), host_id: host.into(), state }),
        Ok(CommandStatus::Failed) => Ok(pb::SizingResponse { accepted: false, refusal: result.message, host_id: host.into(), state }),
        _ => Err(SizingOpError::Agent { host: host.into(), detail: format!("answered status {}: {}", result.status, result.message) }),
    }
}

pub async fn resize(shared: &Arc<Shared>, r: pb::ResizeVmRequest, operator: &str) -> Result<pb::SizingResponse, SizingOpError> {
    let span =
        info_span!("sizing.resize", operator, vm = %r.vm_id, cpu_cores = r.cpu_cores, memory_mib = r.memory_mib, dry_run = r.dry_run);
    async move {
        if r.vm_id.is_empty() {
            return Err(invalid("vm_id", "must not be empty"));
        }
        if !(r.cpu_cores.is_finite() && r.cpu_cores >= 0.01) {
            return Err(invalid("cpu_cores", format!("{} is not a number of cores >= 0.01", r.cpu_cores)));
        }
        if !(r.memory_mib.is_finite() && r.memory_mib >= 64.0) {
            return Err(invalid("memory_mib", format!("{} is not a memory size >= 64 MiB", r.memory_mib)));
        }
        let host = host_of(shared, &r.vm_id)?;
        let reason = format!("operator {operator}");
        let body = command::Body::Resize(pb::ResizeVm {
            vm_id: r.vm_id.clone(),
            cpu_cores: r.cpu_cores,
            memory_mib: r.memory_mib,
            reason,
            dry_run: r.dry_run,
        });
        let out = ask(shared, &host, body).await?;
        info!(host, accepted = out.accepted, refusal = %out.refusal, "resize asked");
        Ok(out)
    }
    .instrument(span)
    .await
}

/// The leases and resizes each host (or `host`) last reported.
pub fn leases(shared: &Shared, host: &str) -> Result<pb::ListLeasesResponse, SizingOpError> {
    let state = shared.state();
    if !host.is_empty() && state.host(host).is_none() {
        return Err(SizingOpError::UnknownHost(host.into()));
    }
    Ok(pb::ListLeasesResponse {
        hosts: state
            .hosts()
            .filter(|h| host.is_empty() || h.host_id == host)
            .map(|h| pb::HostSizing { host_id: h.host_id.clone(), state: h.sizing.clone() })
            .collect(),
        last_pass: shared.sizing_pass.lock().unwrap_or_else(|p| p.into_inner()).clone().map(|mut p| {
            if !host.is_empty() {
                p.proposals.retain(|x| x.host_id == host);
            }
            p
        }),
    })
}

pub async fn grant(
    shared: &Arc<Shared>,
    r: pb::GrantLeaseRequest,
    operator: &str,
    now_ms: u64,
) -> Result<pb::SizingResponse, SizingOpError> {
    let span = info_span!("sizing.grant", operator, lender = %r.lender, borrower = %r.borrower, resource = %r.resource, amount = r.amount);
    async move {
        if r.borrower.is_empty() {
            return Err(invalid("borrower", "must not be empty"));
        }
        if r.duration_s == 0 || r.duration_s > MAX_LEASE_S {
            return Err(invalid("duration_s", format!("{} is outside 1..={MAX_LEASE_S}", r.duration_s)));
        }
        let host = host_of(shared, &r.borrower)?;
        if !r.lender.is_empty() {
            let lender_host = host_of(shared, &r.lender)?;
            if lender_host != host {
                return Err(SizingOpError::NotColocated { lender: r.lender, lender_host, borrower: r.borrower, borrower_host: host });
            }
        }
        let reason =
            if r.reason.is_empty() { format!("granted by operator {operator}") } else { format!("{} (operator {operator})", r.reason) };
        let entry = pb::LeaseEntry {
            id: format!("op:{}:{now_ms}", r.borrower),
            resource: r.resource.clone(),
            amount: r.amount,
            lender: r.lender.clone(),
            borrower: r.borrower.clone(),
            granted_at_ms: now_ms,
            deadline_ms: now_ms + r.duration_s * 1000,
            reason,
        };
        // The same reading of the message as the agent's.
        presage_decide::sizing::lease::Lease::try_from(&entry).map_err(|why| invalid("lease", why))?;
        // An operator's lease is not held to the automatic borrowing limits (the domain's
        // maximum, the host's capacity and the lender's floor still bind, at the agent).
        let body = command::Body::GrantLease(pb::GrantLease {
            lease: Some(entry),
            max_borrow_cpu_cores: f64::MAX,
            max_borrow_memory_mib: f64::MAX,
        });
        let out = ask(shared, &host, body).await?;
        info!(host, accepted = out.accepted, refusal = %out.refusal, "lease asked");
        Ok(out)
    }
    .instrument(span)
    .await
}

pub async fn revoke(shared: &Arc<Shared>, id: &str, operator: &str) -> Result<pb::SizingResponse, SizingOpError> {
    if id.is_empty() {
        return Err(invalid("id", "must not be empty"));
    }
    let host = shared
        .state()
        .hosts()
        .find(|h| h.sizing.as_ref().is_some_and(|s| s.leases.iter().any(|l| l.id == id)))
        .map(|h| h.host_id.clone())
        .ok_or_else(|| SizingOpError::UnknownLease(id.into()))?;
    let out = ask(shared, &host, command::Body::RevokeLease(pb::RevokeLease { id: id.into(), by: format!("operator {operator}") })).await?;
    info!(host, id, operator, accepted = out.accepted, "lease revoked");
    Ok(out)
}
