//! Operators' sizing actions (`presagectl resize`, `leases`, `lease grant|revoke`, `config
//! rollback`): each VM is
//! found where its agent reports it (never from memory), the request is checked here, and the
//! host's agent admits it by its own rule and answers with its leases and resizes. Every resize
//! is a configuration version ([`crate::config_versions`]), written before the agent is asked.
//! One implementation for gRPC and REST.

use std::sync::Arc;
use std::time::Duration;

use presage_protocol::pb::{self, CommandStatus, command, command_result};
use tracing::{Instrument, info, info_span, warn};

use crate::config_versions::{ConfigVersion, VmConfig};
use presage_decide::sizing::IoLimits;

/// The least I/O or network limit a resize may set, bytes per second (1 MiB/s): below it a VM
/// can hardly boot; 0 removes a limit instead.
pub const MIN_IO_LIMIT: f64 = 1_048_576.0;

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
    /// The VM has no configuration version of that number.
    #[error("{0}")]
    UnknownVersion(String),
    #[error("{lender} runs on {lender_host} and {borrower} on {borrower_host}: a lease is between VMs of one host")]
    NotColocated { lender: String, lender_host: String, borrower: String, borrower_host: String },
    #[error("{host}: {detail}")]
    Agent { host: String, detail: String },
    #[error("{0}")]
    Versions(String),
}

fn invalid(field: &'static str, problem: impl Into<String>) -> SizingOpError {
    SizingOpError::Invalid { field, problem: problem.into() }
}

fn host_of(shared: &Shared, vm: &str) -> Result<String, SizingOpError> {
    shared.state().host_of_vm(vm).map(|h| h.host_id.clone()).ok_or_else(|| SizingOpError::UnknownVm(vm.into()))
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
    if let Some(s) = &state {
        shared.state.lock().unwrap_or_else(|p| p.into_inner()).sizing_answered(host, s.clone());
    }
    match CommandStatus::try_from(result.status) {
        Ok(CommandStatus::Ok) => Ok(pb::SizingResponse { accepted: true, refusal: String::new(), host_id: host.into(), state }),
        Ok(CommandStatus::Failed) => Ok(pb::SizingResponse { accepted: false, refusal: result.message, host_id: host.into(), state }),
        _ => Err(SizingOpError::Agent { host: host.into(), detail: format!("answered status {}: {}", result.status, result.message) }),
    }
}

pub async fn resize(shared: &Arc<Shared>, r: pb::ResizeVmRequest, operator: &str) -> Result<pb::SizingResponse, SizingOpError> {
    let proposal = Proposal { proposed_by: format!("operator {operator}"), reason: format!("operator {operator}"), ..Proposal::default() };
    resize_versioned(shared, r, proposal, now_ms()).await.map(|(out, _)| out)
}

/// Why `io` cannot be asked for: each limit is 0 (none) or at least [`MIN_IO_LIMIT`]; the
/// field at fault and what is wrong.
pub fn check_io(io: &IoLimits) -> Result<(), (&'static str, String)> {
    for (field, v) in [("disk_bytes_per_s", io.disk_bytes_per_s), ("net_bytes_per_s", io.net_bytes_per_s)] {
        if let Some(v) = v
            && !(v.is_finite() && (v == 0.0 || v >= MIN_IO_LIMIT))
        {
            return Err((field, format!("{v} is neither 0 (no limit) nor a rate >= {MIN_IO_LIMIT} bytes per second")));
        }
    }
    Ok(())
}

/// Who or what asks for a configuration, and what it expects of it.
#[derive(Clone, Debug, Default)]
pub struct Proposal {
    pub proposed_by: String,
    pub reason: String,
    pub predicted_gain: std::collections::BTreeMap<String, f64>,
    pub rollout: Option<u64>,
    /// The host to ask (a VM just moved there, before its reports say so); none: where its
    /// agent last reported it.
    pub host: Option<String>,
}

use crate::shared::unix_ms as now_ms;

/// What the VM has now, as its agent last reported (the resize record's allocation, else its
/// domain's vCPUs and memory).
pub(crate) fn current_config(shared: &Shared, vm: &str) -> Option<VmConfig> {
    let state = shared.state();
    let h = state.host_of_vm(vm)?;
    let (cpu_cores, memory_mib) = h.vm_allocation(h.vms.get(vm)?);
    // Limits no resize record sets are none (as far as presage knows).
    let entry = h.resize_entry(vm);
    let io = IoLimits {
        disk_bytes_per_s: Some(entry.and_then(|e| e.disk_bytes_per_s).unwrap_or(0.0)),
        net_bytes_per_s: Some(entry.and_then(|e| e.net_bytes_per_s).unwrap_or(0.0)),
    };
    Some(VmConfig { cpu_cores, memory_mib, io })
}

/// A resize as a configuration version: checked, written as a version ("asked") before the
/// agent is asked, its outcome written after. A dry run is not a version.
pub async fn resize_versioned(
    shared: &Arc<Shared>,
    r: pb::ResizeVmRequest,
    proposal: Proposal,
    now_ms: u64,
) -> Result<(pb::SizingResponse, Option<ConfigVersion>), SizingOpError> {
    let span = info_span!("sizing.resize", proposed_by = %proposal.proposed_by, vm = %r.vm_id, cpu_cores = r.cpu_cores, memory_mib = r.memory_mib, dry_run = r.dry_run);
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
        let io = IoLimits { disk_bytes_per_s: r.disk_bytes_per_s, net_bytes_per_s: r.net_bytes_per_s };
        check_io(&io).map_err(|(field, why)| invalid(field, why))?;
        let host = match &proposal.host {
            Some(h) => h.clone(),
            None => host_of(shared, &r.vm_id)?,
        };
        let mut version = if r.dry_run {
            None
        } else {
            let v = ConfigVersion {
                vm: r.vm_id.clone(),
                version: 0,
                at_ms: now_ms,
                config: VmConfig { cpu_cores: r.cpu_cores, memory_mib: r.memory_mib, io },
                previous: current_config(shared, &r.vm_id),
                proposed_by: proposal.proposed_by.clone(),
                reason: proposal.reason.clone(),
                predicted_gain: proposal.predicted_gain.clone(),
                rollout: proposal.rollout,
                outcome: "asked".into(),
            };
            Some(shared.versions.record(v).map_err(|e| SizingOpError::Versions(e.to_string()))?)
        };
        let body = command::Body::Resize(pb::ResizeVm {
            vm_id: r.vm_id.clone(),
            cpu_cores: r.cpu_cores,
            memory_mib: r.memory_mib,
            reason: proposal.reason.clone(),
            dry_run: r.dry_run,
            disk_bytes_per_s: io.disk_bytes_per_s,
            net_bytes_per_s: io.net_bytes_per_s,
        });
        let out = ask(shared, &host, body).await;
        if let Some(v) = version.as_mut() {
            v.outcome = match &out {
                Ok(o) if o.accepted => "applied".into(),
                Ok(o) => format!("refused: {}", o.refusal),
                Err(e) => format!("failed: {e}"),
            };
            if let Err(e) = shared.versions.save(v) {
                warn!(error = %e, vm = %v.vm, version = v.version, "recording a configuration version's outcome failed");
                // Not acknowledged: what was done is not on record (a deposed leader's write, a
                // store gone). Asking again, of whoever leads, is safe: a resize is idempotent.
                out?;
                return Err(SizingOpError::Versions(format!("the resize was asked of {host} but its outcome could not be recorded: {e}")));
            }
        }
        let out = out?;
        info!(host, accepted = out.accepted, refusal = %out.refusal, version = version.as_ref().map(|v| v.version), "resize asked");
        Ok((out, version))
    }
    .instrument(span)
    .await
}

/// Asks again for the configuration of `version` of `vm` (a new version that says so).
pub async fn rollback_config(
    shared: &Arc<Shared>,
    vm: &str,
    version: u64,
    dry_run: bool,
    operator: &str,
) -> Result<(pb::SizingResponse, Option<ConfigVersion>), SizingOpError> {
    let old = shared.versions.get(vm, version).map_err(|e| match e {
        crate::config_versions::VersionError::NoSuchVersion { .. } => SizingOpError::UnknownVersion(e.to_string()),
        other => SizingOpError::Versions(other.to_string()),
    })?;
    let r = pb::ResizeVmRequest {
        vm_id: vm.into(),
        cpu_cores: old.config.cpu_cores,
        memory_mib: old.config.memory_mib,
        dry_run,
        disk_bytes_per_s: old.config.io.disk_bytes_per_s,
        net_bytes_per_s: old.config.io.net_bytes_per_s,
    };
    let proposal = Proposal {
        proposed_by: format!("operator {operator}"),
        reason: format!("rollback to version {version} by operator {operator}"),
        ..Proposal::default()
    };
    resize_versioned(shared, r, proposal, now_ms()).await
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
