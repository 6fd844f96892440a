//! The coordinator's automatic sizing pass (`[sizing]`): every `interval`, from what each agent
//! last reported (its VMs' sizes, use and forecasts, its leases and resizes), the decision
//! core's [`plan_host`] proposes resizes ahead of the forecasts and CPU leases from VMs with
//! confident slack to VMs about to exceed what they may use. In `advisory` mode the proposals
//! are kept for `presagectl leases`; in `automatic` mode each goes to its host's agent, which
//! admits it by its own rule (the coordinator's view may be a cycle old) and ends every lease at
//! its deadline on its own.
//!
//! What the pass keeps between runs is only what the rule needs to be slow: each VM's shrink
//! votes and raised floors ([`SizingMemory`]) and its peaks ([`PeakWindow`]). A restarted
//! coordinator starts them empty, which delays shrinks (votes restart) and never causes one.
//! Where a VM runs and what it is given always come from the agents' reports.

use std::collections::HashMap;
use std::sync::Arc;

use presage_decide::demand::Forecast;
use presage_decide::sizing::Allocation;
use presage_decide::sizing::lease::{Lease, LeaseBook};
use presage_decide::sizing::pass::{HostSizingPlan, SizingHost, SizingVm, plan_host};
use presage_decide::sizing::peaks::PeakWindow;
use presage_decide::sizing::resize::SizingMemory;
use presage_decide::sizing::rules::{SizingPolicies, SizingRules};
use presage_protocol::pb::{self, command};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{SizingConfig, SizingMode};
use crate::shared::Shared;
use crate::state::{ClusterState, HostRecord};

/// A host's VMs as the pass reads them from its agent's report.
struct VmInputs {
    vm_id: String,
    rules: SizingRules,
    limits: Allocation,
    allocated: Allocation,
    cpu_forecast: Option<Forecast>,
    memory_forecast: Option<Forecast>,
    used: Allocation,
    /// The guest kernel's OOM kills since boot, as its presage-guest last claimed (none: no
    /// guest agent).
    oom_kills: Option<u64>,
}

/// What one pass proposed for one host.
#[derive(Clone, Debug)]
pub struct HostProposal {
    pub host_id: String,
    pub plan: HostSizingPlan,
}

/// The pass's state between runs.
pub struct SizingEngine {
    policies: SizingPolicies,
    lend_free_cpu: bool,
    memory: HashMap<String, SizingMemory>,
    peaks: HashMap<String, PeakWindow>,
    /// Each VM's OOM-kill count at the last pass: a rise since is an OOM.
    oom_kills: HashMap<String, u64>,
}

impl SizingEngine {
    pub fn new(cfg: &SizingConfig) -> SizingEngine {
        SizingEngine {
            policies: cfg.policies(),
            lend_free_cpu: cfg.lend_free_cpu,
            memory: HashMap::new(),
            peaks: HashMap::new(),
            oom_kills: HashMap::new(),
        }
    }

    fn inputs(&self, h: &HostRecord) -> Vec<VmInputs> {
        let records: HashMap<&str, &pb::ResizeEntry> = h.sizing.iter().flat_map(|s| &s.resizes).map(|r| (r.vm_id.as_str(), r)).collect();
        h.vms
            .values()
            .filter(|v| v.state == pb::VmState::Running as i32)
            .map(|v| {
                // As the agent's desk sees it: vCPUs as cores, the memory the domain reports.
                let limits = Allocation::new(v.vcpus.max(1) as f64, (v.memory_bytes >> 20) as f64);
                let allocated =
                    records.get(v.vm_id.as_str()).map_or(limits, |r| Allocation::new(r.allocated_cpu_cores, r.allocated_memory_mib));
                let f = v.forecast.as_ref();
                VmInputs {
                    vm_id: v.vm_id.clone(),
                    rules: self.policies.rules_for(&v.vm_id),
                    limits,
                    allocated,
                    cpu_forecast: f.and_then(pb::VmForecast::cpu_quantiles),
                    memory_forecast: f.and_then(pb::VmForecast::memory_quantiles),
                    used: Allocation::new(v.cpu_utilisation * limits.cpu_cores, (v.memory_used_bytes >> 20) as f64),
                    oom_kills: v.guest.as_ref().filter(|g| g.received_ms > 0).map(|g| g.oom_kills),
                }
            })
            .collect()
    }

    /// Folds every VM's recent samples into its peaks and drops what belongs to VMs no host
    /// reports any more.
    fn observe(&mut self, state: &ClusterState) {
        let mut seen = std::collections::HashSet::new();
        for h in state.hosts() {
            for (vm, points) in &h.usage_history {
                let Some(v) = h.vms.get(vm) else { continue };
                seen.insert(vm.clone());
                let (cores, mib) = (v.vcpus.max(1) as f64, (v.memory_bytes >> 20) as f64);
                let w = self.peaks.entry(vm.clone()).or_default();
                // `observe` skips what it has seen.
                for p in points {
                    w.observe(p.sampled_at_ms, Allocation::new(p.cpu_utilisation as f64 * cores, p.memory_utilisation as f64 * mib));
                }
            }
        }
        self.peaks.retain(|vm, _| seen.contains(vm));
        self.memory.retain(|vm, _| seen.contains(vm));
        self.oom_kills.retain(|vm, _| seen.contains(vm));
    }

    /// Whether `v`'s guest ran out of memory since the last pass (a count below the last one is
    /// a rebooted guest: the new count is the baseline; a restarted coordinator starts without
    /// one, so the first count it sees is never an OOM).
    fn oom_since_last_pass(&mut self, v: &VmInputs) -> bool {
        let Some(now) = v.oom_kills else { return false };
        let before = self.oom_kills.insert(v.vm_id.clone(), now);
        before.is_some_and(|b| now > b)
    }

    /// One pass over every reachable host at `now_ms`.
    pub fn plan(&mut self, state: &ClusterState, now_ms: u64) -> Vec<HostProposal> {
        self.observe(state);
        let mut out = Vec::new();
        for h in state.hosts().filter(|h| h.reachable && h.session.is_some()) {
            let inputs = self.inputs(h);
            if inputs.is_empty() {
                continue;
            }
            let ooms: Vec<bool> = inputs.iter().map(|v| self.oom_since_last_pass(v)).collect();
            let book = LeaseBook::from_entries(
                h.sizing.iter().flat_map(|s| &s.leases).filter_map(|e| Lease::try_from(e).ok()).filter(|l| l.live(now_ms)).collect(),
            );
            let peaks: Vec<(Allocation, f64)> = inputs
                .iter()
                .map(|v| {
                    let w = self.peaks.get(&v.vm_id);
                    let hour = w.map_or(v.used, |w| {
                        Allocation::new(
                            w.peak(now_ms, v.rules.cpu_peak_lookback_s).cpu_cores,
                            w.peak(now_ms, v.rules.memory_peak_lookback_s).memory_mib,
                        )
                    });
                    let lend = w.map_or(v.used.cpu_cores, |w| w.peak(now_ms, v.rules.lend_lookback_s).cpu_cores);
                    (hour, lend)
                })
                .collect();
            let cap = &h.registration.capacity;
            let host = SizingHost {
                host_id: &h.host_id,
                capacity: Allocation::new(cap.cpu_cores as f64, cap.memory_bytes as f64 / 1048576.0),
                // Memory leases come from a reserve only the agent knows; the pass lends CPU.
                memory_reserve_mib: 0.0,
                vms: inputs
                    .iter()
                    .zip(&peaks)
                    .zip(&ooms)
                    .map(|((v, (hour, lend)), oom)| SizingVm {
                        vm_id: &v.vm_id,
                        rules: &v.rules,
                        limits: v.limits,
                        allocated: v.allocated,
                        cpu_forecast: v.cpu_forecast.as_ref(),
                        memory_forecast: v.memory_forecast.as_ref(),
                        used: v.used,
                        recent_peak: *hour,
                        cpu_lend_peak: *lend,
                        // What the guest has in use: a memory limit never goes below it.
                        resident_mib: v.used.memory_mib,
                        oom: *oom,
                    })
                    .collect(),
                leases: &book,
            };
            let mut memory: Vec<SizingMemory> = inputs.iter().map(|v| self.memory.remove(&v.vm_id).unwrap_or_default()).collect();
            let plan = plan_host(&host, &mut memory, now_ms, self.lend_free_cpu);
            for (v, m) in inputs.iter().zip(memory) {
                self.memory.insert(v.vm_id.clone(), m);
            }
            if !(plan.resizes.is_empty() && plan.grants.is_empty() && plan.deferred.is_empty()) {
                out.push(HostProposal { host_id: h.host_id.clone(), plan });
            }
        }
        out
    }
}

fn resize_proposal(host: &str, d: &presage_decide::sizing::resize::ResizeDecision, outcome: String) -> pb::SizingProposal {
    pb::SizingProposal {
        host_id: host.into(),
        vm_id: d.vm_id.clone(),
        kind: "resize".into(),
        from_cpu_cores: d.from.cpu_cores,
        from_memory_mib: d.from.memory_mib,
        to_cpu_cores: d.to.cpu_cores,
        to_memory_mib: d.to.memory_mib,
        lease: None,
        reason: d.reason.clone(),
        outcome,
    }
}

fn lease_proposal(host: &str, l: &Lease, outcome: String) -> pb::SizingProposal {
    pb::SizingProposal {
        host_id: host.into(),
        vm_id: l.borrower.clone(),
        kind: "lease".into(),
        lease: Some(pb::LeaseEntry::from(l)),
        reason: l.reason.clone(),
        outcome,
        ..Default::default()
    }
}

/// Sends one host's proposals in order (decreases, increases, then leases) and says what came
/// of each.
async fn apply_host(shared: &Arc<Shared>, policies: &SizingPolicies, p: HostProposal) -> Vec<pb::SizingProposal> {
    let host = p.host_id.as_str();
    let mut out = Vec::new();
    let outcome = |r: Result<pb::SizingResponse, crate::sizing_ops::SizingOpError>| match r {
        Ok(a) if a.accepted => "applied".to_string(),
        Ok(a) => format!("refused: {}", a.refusal),
        Err(e) => format!("failed: {e}"),
    };
    for d in &p.plan.resizes {
        let body = command::Body::Resize(pb::ResizeVm {
            vm_id: d.vm_id.clone(),
            cpu_cores: d.to.cpu_cores,
            memory_mib: d.to.memory_mib,
            reason: format!("automatic: {}", d.reason),
            dry_run: false,
            ..Default::default()
        });
        let o = outcome(crate::sizing_ops::ask(shared, host, body).await);
        info!(host, vm = %d.vm_id, from = ?d.from, to = ?d.to, reason = %d.reason, outcome = %o, "automatic resize");
        out.push(resize_proposal(host, d, o));
    }
    for l in &p.plan.grants {
        let rules = policies.rules_for(&l.borrower);
        let body = command::Body::GrantLease(pb::GrantLease {
            lease: Some(pb::LeaseEntry::from(l)),
            max_borrow_cpu_cores: rules.max_borrow_cpu_cores,
            max_borrow_memory_mib: rules.max_borrow_memory_mib,
        });
        let o = outcome(crate::sizing_ops::ask(shared, host, body).await);
        info!(host, lease = %l.id, borrower = %l.borrower, lender = ?l.lender, amount = l.amount, reason = %l.reason, outcome = %o, "automatic lease");
        out.push(lease_proposal(host, l, o));
    }
    out.extend(deferred(&p));
    out
}

/// A host's deferred resizes (never sent: the host has no room yet) with why.
fn deferred(p: &HostProposal) -> impl Iterator<Item = pb::SizingProposal> + '_ {
    p.plan.deferred.iter().map(|d| resize_proposal(&p.host_id, &d.decision, format!("deferred: {}", d.why)))
}

/// One pass: plans every host, then (automatic) sends the proposals, hosts concurrently.
pub async fn run_pass(shared: &Arc<Shared>, engine: &mut SizingEngine, mode: SizingMode) -> pb::SizingPass {
    let now_ms = crate::shared::unix_ms();
    let (proposals, hosts, vms) = {
        let state = shared.state();
        let hosts = state.hosts().filter(|h| h.reachable).count() as u32;
        let vms = state.hosts().map(|h| h.vms.len()).sum::<usize>() as u32;
        (engine.plan(&state, now_ms), hosts, vms)
    };
    let span = info_span!("sizing.pass", mode = mode.as_str(), hosts, vms, proposing = proposals.len());
    async move {
        let mut out = Vec::new();
        match mode {
            SizingMode::Automatic => {
                let mut tasks = tokio::task::JoinSet::new();
                for p in proposals {
                    let (shared, policies) = (shared.clone(), engine.policies.clone());
                    tasks.spawn(async move { apply_host(&shared, &policies, p).await }.in_current_span());
                }
                while let Some(r) = tasks.join_next().await {
                    match r {
                        Ok(v) => out.extend(v),
                        Err(e) => warn!(error = %e, "a host's sizing task ended abnormally"),
                    }
                }
            }
            _ => {
                for p in &proposals {
                    out.extend(p.plan.resizes.iter().map(|d| resize_proposal(&p.host_id, d, "proposed".into())));
                    out.extend(p.plan.grants.iter().map(|l| lease_proposal(&p.host_id, l, "proposed".into())));
                    out.extend(deferred(p));
                }
            }
        }
        out.sort_by(|a, b| (&a.host_id, &a.vm_id, &a.kind).cmp(&(&b.host_id, &b.vm_id, &b.kind)));
        for p in &out {
            debug!(host = %p.host_id, vm = %p.vm_id, kind = %p.kind, outcome = %p.outcome, reason = %p.reason, "sizing proposal");
        }
        info!(proposals = out.len(), "sizing pass");
        pb::SizingPass { mode: mode.as_str().into(), at_ms: now_ms, hosts, vms, proposals: out }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(oom_kills: Option<u64>) -> VmInputs {
        VmInputs {
            vm_id: "vm-1".into(),
            rules: SizingRules::default(),
            limits: Allocation::new(2.0, 2048.0),
            allocated: Allocation::new(2.0, 2048.0),
            cpu_forecast: None,
            memory_forecast: None,
            used: Allocation::new(0.5, 1024.0),
            oom_kills,
        }
    }

    #[test]
    fn an_oom_is_a_rise_of_the_guests_count_since_the_last_pass() {
        let mut e = SizingEngine::new(&SizingConfig::default());
        assert!(!e.oom_since_last_pass(&vm(Some(4))), "the first count seen is the baseline, not an OOM");
        assert!(!e.oom_since_last_pass(&vm(Some(4))));
        assert!(e.oom_since_last_pass(&vm(Some(5))));
        assert!(!e.oom_since_last_pass(&vm(Some(5))), "counted once");
        assert!(!e.oom_since_last_pass(&vm(Some(0))), "a rebooted guest starts a new baseline");
        assert!(e.oom_since_last_pass(&vm(Some(1))));
        assert!(!e.oom_since_last_pass(&vm(None)), "no guest agent, no signal");
    }
}
