//! The advisory consolidation pass: every interval the coordinator turns its observed cluster
//! state into a [`FleetView`] and asks the configured [`ConsolidationPolicy`] (the very code the
//! simulator replays) which live migrations it would make. The proposal is logged and shown by
//! `presagectl status`; executing it is the migration executor's job, not this module's.
//!
//! Pure apart from what it is handed: no I/O, no clock.

use std::collections::HashMap;

use serde::Serialize;

use crate::policy::power::IBM_X3550_M3_X5675;
use crate::policy::{ConsolidationPolicy, FleetView, HostView, MoveReason, PolicySpec, UtilisationHistory, VmView};
use crate::state::ClusterState;

/// Migration bandwidth assumed for hosts whose NIC speed is unknown (half of 1 Gbit/s, MB/s).
const DEFAULT_MIGRATION_MB_PER_S: f64 = 62.5;

/// One move the policy would make now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProposedMove {
    pub vm_id: String,
    pub from_host: String,
    pub to_host: String,
    /// `overload` or `underload`: why its current host should give it up.
    pub reason: &'static str,
}

/// The outcome of one advisory pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Proposal {
    pub policy: String,
    pub hosts_considered: usize,
    pub vms_considered: usize,
    pub moves: Vec<ProposedMove>,
}

/// Keeps the policy and each VM's utilisation history between passes.
pub struct Advisor {
    policy: Box<dyn ConsolidationPolicy>,
    history: HashMap<String, UtilisationHistory>,
}

impl Advisor {
    pub fn new(spec: PolicySpec) -> Advisor {
        Advisor { policy: spec.build(), history: HashMap::new() }
    }

    pub fn policy_name(&self) -> String {
        self.policy.name()
    }

    /// One pass over the reachable hosts: each VM's utilisation is added to its history, then
    /// the policy decides. `now_s` is only handed through to the policy.
    pub fn advise(&mut self, state: &ClusterState, now_s: f64) -> Proposal {
        let mut hosts = Vec::new();
        let mut host_ids = Vec::new();
        let mut vms = Vec::new();
        let mut vm_ids = Vec::new();
        for rec in state.hosts().filter(|h| h.reachable) {
            let cap = &rec.registration.capacity;
            if cap.cpu_cores == 0 || cap.cpu_mhz_per_core <= 0.0 {
                continue;
            }
            let h = hosts.len();
            let nic_mbps = cap.nics.iter().map(|n| n.speed_mbps).max().unwrap_or(0);
            let mut view = HostView {
                pes: cap.cpu_cores,
                pe_mips: cap.cpu_mhz_per_core,
                total_mips: cap.cpu_cores as f64 * cap.cpu_mhz_per_core,
                memory_mb: cap.memory_bytes as f64 / 1048576.0,
                migration_mb_per_s: if nic_mbps > 0 { nic_mbps as f64 / 2.0 / 8.0 } else { DEFAULT_MIGRATION_MB_PER_S },
                power: IBM_X3550_M3_X5675,
                observed_mips: 0.0,
                vms: Vec::new(),
                migrating_in: Vec::new(),
                schedulable: true,
                reserved_mips: 0.0,
            };
            for sample in rec.vms.values() {
                let demand = rec.vm_cpu_demand(sample);
                let per_vcpu = if sample.vcpu_mhz > 0.0 { sample.vcpu_mhz } else { cap.cpu_mhz_per_core };
                let history = self.history.entry(sample.vm_id.clone()).or_default();
                history.push(sample.cpu_utilisation.clamp(0.0, 1.0));
                view.observed_mips += demand;
                view.vms.push(vms.len());
                vms.push(VmView {
                    alive: true,
                    host: Some(h),
                    pes: sample.vcpus.max(1),
                    mips: per_vcpu,
                    ram_mb: sample.memory_bytes as f64 / 1048576.0,
                    demand_mips: demand,
                    scheduled_mips: demand,
                    // A KVM guest keeps what it was given: reserve its allocation.
                    memory_request_mb: sample.memory_bytes as f64 / 1048576.0,
                    history: history.clone(),
                    in_migration: false,
                    forecast: sample.forecast.as_ref().and_then(forecast_of),
                });
                vm_ids.push(sample.vm_id.clone());
            }
            host_ids.push(rec.host_id.clone());
            hosts.push(view);
        }
        // VMs gone from every report no longer need a history.
        let present: std::collections::HashSet<&String> = vm_ids.iter().collect();
        self.history.retain(|id, _| present.contains(id));
        let fleet = FleetView { now_s, hosts: &hosts, vms: &vms };
        let span = tracing::info_span!("advise", policy = %self.policy.name(), hosts = hosts.len(), vms = vms.len());
        let _enter = span.enter();
        let decisions = self.policy.optimise(&fleet);
        let moves = decisions
            .iter()
            .filter(|m| m.vm < vms.len() && m.to < hosts.len())
            .map(|m| ProposedMove {
                vm_id: vm_ids[m.vm].clone(),
                from_host: vms[m.vm].host.map(|h| host_ids[h].clone()).unwrap_or_default(),
                to_host: host_ids[m.to].clone(),
                reason: match m.reason {
                    MoveReason::Overload(_) => "overload",
                    MoveReason::Underload(_) => "underload",
                },
            })
            .collect();
        Proposal { policy: self.policy.name(), hosts_considered: hosts.len(), vms_considered: vms.len(), moves }
    }
}

/// The quantiles of an agent's forecast, when it covers every horizon.
fn forecast_of(f: &presage_protocol::pb::VmForecast) -> Option<presage_forecast::Forecast> {
    use presage_forecast::MAX_HORIZON;
    if f.cpu_p10.len() < MAX_HORIZON || f.cpu_p50.len() < MAX_HORIZON || f.cpu_p90.len() < MAX_HORIZON {
        return None;
    }
    let mut out = presage_forecast::Forecast::flat([0.0; 3]);
    for h in 0..MAX_HORIZON {
        out.q[h] = [f.cpu_p10[h], f.cpu_p50[h], f.cpu_p90[h]];
    }
    Some(out.tidy())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::policy::classic::Detector;
    use crate::state::test_messages::{reg, report};

    fn register(state: &mut ClusterState, host: &str, session: u64, now: Instant) {
        state.register(&reg(host, "b"), session, now);
    }

    #[test]
    fn the_live_state_goes_through_the_same_policy_as_the_simulator() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(30));
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            register(&mut state, h, i as u64, now);
        }
        // Host a: 4 VMs x 2 vCPUs x 2000 MHz at 95 % = 15.2 GHz on an 8 GHz host.
        state.ingest("a", 0, report(1, &[("a1", 0.95), ("a2", 0.95), ("a3", 0.95), ("a4", 0.95)]), now).unwrap();
        state.ingest("b", 1, report(1, &[("b1", 0.10)]), now).unwrap();
        state.ingest("c", 2, report(1, &[]), now).unwrap();
        let mut advisor = Advisor::new(PolicySpec::Classic(Detector::Thr(0.8)));
        let p = advisor.advise(&state, 0.0);
        assert_eq!(p.policy, "THR-MMT-0.8");
        assert_eq!((p.hosts_considered, p.vms_considered), (3, 5));
        let from_a: Vec<&ProposedMove> = p.moves.iter().filter(|m| m.from_host == "a").collect();
        assert!(!from_a.is_empty(), "the overloaded host is relieved: {p:?}");
        assert!(from_a.iter().all(|m| m.reason == "overload" && m.to_host != "a"));
        // Never two moves of one VM, never a move onto the overloaded host.
        let mut ids: Vec<&str> = p.moves.iter().map(|m| m.vm_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), p.moves.len());
    }

    #[test]
    fn unreachable_hosts_are_left_out() {
        let now = Instant::now();
        let mut state = ClusterState::new(Duration::from_secs(1));
        register(&mut state, "a", 0, now);
        state.ingest("a", 0, report(1, &[("a1", 0.5)]), now).unwrap();
        state.sweep(now + Duration::from_secs(5));
        let p = Advisor::new(PolicySpec::Dvfs).advise(&state, 0.0);
        assert_eq!((p.hosts_considered, p.vms_considered), (0, 0));
        assert!(p.moves.is_empty());
    }
}
