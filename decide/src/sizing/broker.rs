//! The borrowing broker: from each VM's forecast, the borrowers about to exceed what they may use
//! and the lenders with confident slack on the same host, matched by priority (critical VMs
//! first) and cost (the lender whose loss costs least first), within every VM's policy. Every
//! lease it proposes passes the same admission rule the agent applies ([`LeaseBook::check`]), so
//! the agent refuses only what changed in between.
//!
//! Pure and linear in the VMs (a sort per host): the coordinator runs it over the whole cluster
//! every pass.

use super::Allocation;
use super::lease::{Lease, LeaseBook, LeaseHost, LeaseParty, LeaseResource};
use super::resize::upper_quantile;
use super::rules::{CPU_GRAIN, SizingRules, ceil_to, floor_to};
use crate::demand::Forecast;

/// One VM as the broker sees it.
#[derive(Clone, Debug)]
pub struct BrokerVm<'a> {
    pub vm_id: &'a str,
    pub rules: &'a SizingRules,
    pub allocated: Allocation,
    pub limits: Allocation,
    /// CPU demand forecast, fractions of `limits.cpu_cores`.
    pub cpu_forecast: Option<&'a Forecast>,
    /// CPU used in the last cycle, cores.
    pub cpu_used: f64,
    /// The most CPU it used in any cycle of the last `lend_lookback_s`, cores (a lender keeps it:
    /// slack is confident only when the recent past agrees with the forecast).
    pub cpu_recent_peak: f64,
}

impl BrokerVm<'_> {
    /// Its p90 CPU need over the lease horizon, cores (none without a forecast).
    pub fn cpu_need(&self) -> Option<f64> {
        self.cpu_forecast.map(|f| upper_quantile(f, self.rules.lease_horizon_steps) * self.limits.cpu_cores)
    }

    /// What it must keep when it lends: its floor, its need over the lease horizon and its last
    /// cycle's use with the margin, its recent peak (a VM without a forecast keeps everything).
    pub fn keep(&self) -> Allocation {
        let cpu = match self.cpu_need() {
            Some(n) => ceil_to(
                (n * self.rules.margin).max(self.cpu_used * self.rules.margin).max(self.cpu_recent_peak).max(self.rules.min_cpu_cores),
                CPU_GRAIN,
            ),
            None => f64::INFINITY,
        };
        Allocation { cpu_cores: cpu.min(self.allocated.cpu_cores.max(self.rules.min_cpu_cores)), memory_mib: self.allocated.memory_mib }
    }

    pub fn party(&self) -> LeaseParty {
        let r = self.rules;
        LeaseParty {
            vm_id: self.vm_id.to_string(),
            allocated: self.allocated,
            limits: self.limits,
            keep: match self.cpu_forecast {
                Some(_) => self.keep(),
                None => self.allocated,
            },
            may_lend: r.may_lend && self.cpu_forecast.is_some(),
            may_borrow: r.may_borrow,
            max_borrow: Allocation { cpu_cores: r.max_borrow_cpu_cores, memory_mib: r.max_borrow_memory_mib },
            max_lease_ms: r.max_lease_s.saturating_mul(1000),
        }
    }
}

/// One host as the broker sees it.
#[derive(Clone, Debug)]
pub struct BrokerHost<'a> {
    pub host_id: &'a str,
    pub capacity: Allocation,
    pub memory_reserve_mib: f64,
    pub vms: Vec<BrokerVm<'a>>,
    /// Its live leases (the agent's book as last reported).
    pub leases: &'a LeaseBook,
}

/// What the broker proposes for one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerPlan {
    pub grants: Vec<Lease>,
    /// Borrowers it could not serve in full, and the cores they still lack.
    pub unmet: Vec<(String, f64)>,
}

/// The broker's pass over one host at `now_ms`. `use_free_cpu`: lend the host's unallocated CPU
/// too (after lenders, which lend first so capacity left unallocated stays free for placement).
pub fn broker_host(host: &BrokerHost<'_>, now_ms: u64, use_free_cpu: bool) -> BrokerPlan {
    let mut book = host.leases.clone();
    let parties: Vec<LeaseParty> = host.vms.iter().map(BrokerVm::party).collect();
    let lease_host = LeaseHost { capacity: host.capacity, memory_reserve_mib: host.memory_reserve_mib, vms: &parties };
    // Borrowers: the need over the lease horizon (or last cycle's use, when it was higher) above
    // `grow_at` of what they may use.
    let mut borrowers: Vec<(usize, f64)> = Vec::new();
    for (i, v) in host.vms.iter().enumerate() {
        let Some(need) = v.cpu_need() else { continue };
        if !v.rules.may_borrow {
            continue;
        }
        let need = need.max(v.cpu_used);
        let effective = book.effective(v.vm_id, v.allocated, now_ms).cpu_cores;
        if need > v.rules.grow_at * effective {
            let want = (need * v.rules.margin - effective).min(v.limits.cpu_cores - effective);
            if want >= CPU_GRAIN {
                borrowers.push((i, want));
            }
        }
    }
    borrowers.sort_by(|a, b| {
        let (va, vb) = (&host.vms[a.0], &host.vms[b.0]);
        vb.rules.priority.cmp(&va.rules.priority).then(b.1.total_cmp(&a.1)).then(va.vm_id.cmp(vb.vm_id))
    });
    let mut plan = BrokerPlan::default();
    let mut seq = 0u32;
    for (bi, want) in borrowers {
        let b = &host.vms[bi];
        let mut left = want;
        // Lenders: confident slack (what they may use above what they must keep), cheapest
        // first, then the most slack; never one that borrows itself.
        let mut lenders: Vec<(usize, f64)> = host
            .vms
            .iter()
            .enumerate()
            .filter(|(i, v)| *i != bi && v.rules.may_lend && v.cpu_forecast.is_some())
            .filter_map(|(i, v)| {
                let (lent, borrowed) = book.flows(v.vm_id, now_ms);
                if borrowed.cpu_cores > 0.0 {
                    return None;
                }
                let spare = v.allocated.cpu_cores - lent.cpu_cores - v.keep().cpu_cores;
                (spare >= CPU_GRAIN).then_some((i, spare))
            })
            .collect();
        lenders.sort_by(|a, c| {
            let (la, lc) = (&host.vms[a.0], &host.vms[c.0]);
            la.rules.lend_cost.total_cmp(&lc.rules.lend_cost).then(c.1.total_cmp(&a.1)).then(la.vm_id.cmp(lc.vm_id))
        });
        let sources = lenders.into_iter().map(|(i, spare)| (Some(i), spare)).chain(use_free_cpu.then_some((None, f64::INFINITY)));
        for (li, spare) in sources {
            if left < CPU_GRAIN {
                break;
            }
            let amount = floor_to(left.min(spare), CPU_GRAIN);
            if amount < CPU_GRAIN {
                continue;
            }
            let lender = li.map(|i| &host.vms[i]);
            let max_s = lender.map_or(b.rules.max_lease_s, |l| l.rules.max_lease_s.min(b.rules.max_lease_s));
            seq += 1;
            let mut lease = Lease {
                id: format!("{}:{}:{now_ms}:{seq}", host.host_id, b.vm_id),
                resource: LeaseResource::Cpu,
                amount,
                lender: lender.map(|l| l.vm_id.to_string()),
                borrower: b.vm_id.to_string(),
                granted_at_ms: now_ms,
                deadline_ms: now_ms + max_s * 1000,
                reason: format!(
                    "{} p90 {:.2} cores within {} min > {:.0} % of {:.2} it may use; {}",
                    b.vm_id,
                    b.cpu_need().unwrap_or(0.0).max(b.cpu_used),
                    b.rules.lease_horizon_steps * 5,
                    b.rules.grow_at * 100.0,
                    book.effective(b.vm_id, b.allocated, now_ms).cpu_cores,
                    match lender {
                        Some(l) => format!("{} keeps {:.2} cores, its p90 x margin", l.vm_id, l.keep().cpu_cores),
                        None => "from the host's unallocated CPU".into(),
                    }
                ),
            };
            // Free capacity may be short: lend what is free.
            if li.is_none() {
                let allocated: f64 = host.vms.iter().map(|v| v.allocated.cpu_cores).sum();
                let free = host.capacity.cpu_cores - allocated - book.from_host(now_ms).cpu_cores;
                lease.amount = floor_to(lease.amount.min(free), CPU_GRAIN);
                if lease.amount < CPU_GRAIN {
                    continue;
                }
            }
            let amount = lease.amount;
            if book.admit(lease.clone(), &lease_host, now_ms).is_ok() {
                left -= amount;
                plan.grants.push(lease);
            }
        }
        if left >= CPU_GRAIN {
            plan.unmet.push((b.vm_id.to_string(), left));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm<'a>(id: &'a str, rules: &'a SizingRules, alloc: f64, f: &'a Forecast) -> BrokerVm<'a> {
        BrokerVm {
            vm_id: id,
            rules,
            allocated: Allocation { cpu_cores: alloc, memory_mib: 1024.0 },
            limits: Allocation { cpu_cores: 8.0, memory_mib: 4096.0 },
            cpu_forecast: Some(f),
            cpu_used: 0.0,
            cpu_recent_peak: 0.0,
        }
    }

    #[test]
    fn critical_borrowers_first_and_the_cheapest_lender_lends() {
        let std = SizingRules::default();
        let critical = SizingRules { priority: 100, ..SizingRules::default() };
        let dear = SizingRules { lend_cost: 5.0, ..SizingRules::default() };
        let busy = Forecast::flat([0.2, 0.3, 0.375]); // 3 cores; wants 3.75
        let idle = Forecast::flat([0.0, 0.01, 0.025]); // 0.2 cores; keeps 0.25
        let leases = LeaseBook::default();
        let host = BrokerHost {
            host_id: "h",
            capacity: Allocation { cpu_cores: 8.0, memory_mib: 8192.0 },
            memory_reserve_mib: 0.0,
            vms: vec![
                vm("plain", &std, 2.0, &busy),
                vm("crit", &critical, 2.0, &busy),
                vm("cheap", &std, 1.75, &idle),
                vm("dear", &dear, 2.25, &idle),
            ],
            leases: &leases,
        };
        let plan = broker_host(&host, 0, false);
        // crit wants 1.75: all of cheap's 1.5 spare, then 0.25 from dear.
        let g: Vec<(&str, &str, f64)> =
            plan.grants.iter().map(|l| (l.borrower.as_str(), l.lender.as_deref().unwrap(), (l.amount * 100.0).round() / 100.0)).collect();
        assert_eq!(g[..2], [("crit", "cheap", 1.5), ("crit", "dear", 0.25)]);
        // plain gets what dear has left (2.0 - 0.25 spare: 1.75).
        assert_eq!(g[2], ("plain", "dear", 1.75));
        assert!(plan.unmet.is_empty(), "{:?}", plan.unmet);
        // Every grant passes the agent's admission rule, one after the other.
        let parties: Vec<LeaseParty> = host.vms.iter().map(BrokerVm::party).collect();
        let lh = LeaseHost { capacity: host.capacity, memory_reserve_mib: 0.0, vms: &parties };
        let mut book = LeaseBook::default();
        for l in &plan.grants {
            book.admit(l.clone(), &lh, 0).unwrap();
        }
        // A lender keeps its p90 x margin.
        assert!(book.effective("cheap", host.vms[2].allocated, 0).cpu_cores >= 0.25 - 1e-9);
    }

    #[test]
    fn no_lender_without_a_forecast_or_with_a_need_and_free_cpu_only_when_asked() {
        let std = SizingRules::default();
        let busy = Forecast::flat([0.2, 0.3, 0.375]);
        let needy = Forecast::flat([0.2, 0.22, 0.25]); // 2 cores of its 2.5: nothing to spare, nothing to borrow
        let leases = LeaseBook::default();
        let mut unknown = vm("unknown", &std, 3.0, &needy);
        unknown.cpu_forecast = None;
        let host = BrokerHost {
            host_id: "h",
            capacity: Allocation { cpu_cores: 8.0, memory_mib: 8192.0 },
            memory_reserve_mib: 0.0,
            vms: vec![vm("b", &std, 2.0, &busy), vm("needy", &std, 2.5, &needy), unknown],
            leases: &leases,
        };
        let plan = broker_host(&host, 0, false);
        assert!(plan.grants.is_empty(), "{:?}", plan.grants);
        assert_eq!(plan.unmet.len(), 1);
        // 0.5 cores are unallocated (2 + 2.5 + 3 of 8); the host lends them when asked.
        let plan = broker_host(&host, 0, true);
        assert_eq!(plan.grants.len(), 1);
        assert!(plan.grants[0].lender.is_none() && (plan.grants[0].amount - 0.5).abs() < 1e-9, "{:?}", plan.grants);
    }
}
