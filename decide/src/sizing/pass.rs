//! One sizing pass over one host: the resize rule for every VM (decreases first, each admitted
//! by the host's room as the agent will admit it, else deferred), then the broker on the
//! allocations those resizes leave. The coordinator runs it every `[sizing] interval` over what
//! the agents report and sends what it proposes; the simulator's sizing replay runs the same
//! function, so what is measured is what ships.
//!
//! Pure: the caller keeps each VM's [`SizingMemory`] between passes and says what time it is.

use super::Allocation;
use super::broker::{BrokerHost, BrokerPlan, BrokerVm, broker_host};
use super::lease::{Lease, LeaseBook};
use super::progress::{Admission, admit_resize};
use super::resize::{ResizeDecision, ResizeInput, SizingMemory, recommend};
use super::rules::SizingRules;
use crate::demand::Forecast;

/// One VM of the host as the pass sees it.
#[derive(Clone, Debug)]
pub struct SizingVm<'a> {
    pub vm_id: &'a str,
    pub rules: &'a SizingRules,
    /// The domain's maximum (vCPUs as cores, maximum memory).
    pub limits: Allocation,
    /// Its own allocation (the agent's resize record, else as observed); leases not counted.
    pub allocated: Allocation,
    /// Demand forecasts, fractions of `limits`.
    pub cpu_forecast: Option<&'a Forecast>,
    pub memory_forecast: Option<&'a Forecast>,
    /// What it used in the last cycle.
    pub used: Allocation,
    /// The most it used within its rules' peak lookbacks (CPU, memory).
    pub recent_peak: Allocation,
    /// The most CPU it used in any cycle of the last `lend_lookback_s`, cores.
    pub cpu_lend_peak: f64,
    /// Its resident set on the host, MiB (0 where unknown).
    pub resident_mib: f64,
    /// The guest ran out of memory since the last pass.
    pub oom: bool,
}

/// One host as the pass sees it.
#[derive(Clone, Debug)]
pub struct SizingHost<'a> {
    pub host_id: &'a str,
    /// What VMs may be given in all.
    pub capacity: Allocation,
    /// Memory kept back for memory leases (not given to any VM's allocation).
    pub memory_reserve_mib: f64,
    pub vms: Vec<SizingVm<'a>>,
    /// Its live leases (the agent's book as last reported).
    pub leases: &'a LeaseBook,
}

/// A resize the host could not admit now, and why (re-proposed next pass).
#[derive(Clone, Debug, PartialEq)]
pub struct DeferredResize {
    pub decision: ResizeDecision,
    pub why: String,
}

/// What one pass proposes for one host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostSizingPlan {
    /// Resizes the host has room for, decreases first.
    pub resizes: Vec<ResizeDecision>,
    pub deferred: Vec<DeferredResize>,
    /// Resizes beyond the domain or the host: not proposed.
    pub infeasible: Vec<DeferredResize>,
    /// Leases on the allocations after `resizes`.
    pub grants: Vec<Lease>,
    /// Borrowers the broker could not serve in full, and the cores they still lack.
    pub unmet: Vec<(String, f64)>,
}

/// The pass over one host at `now_ms`. `memory[i]` is `host.vms[i]`'s memory; `use_free_cpu`:
/// the broker may lend the host's unallocated CPU too.
pub fn plan_host(host: &SizingHost<'_>, memory: &mut [SizingMemory], now_ms: u64, use_free_cpu: bool) -> HostSizingPlan {
    assert_eq!(memory.len(), host.vms.len(), "one SizingMemory per VM");
    let book = host.leases;
    let mut allocated: Vec<Allocation> = host.vms.iter().map(|v| v.allocated).collect();
    let mut decisions = Vec::new();
    for (i, v) in host.vms.iter().enumerate() {
        // A lender is sized on its own share: what it lends stays promised until the lease ends
        // (the agent takes it back early when the lender needs it), so it is added back on top.
        let (lent, borrowed) = book.flows(v.vm_id, now_ms);
        let own = Allocation::new(v.allocated.cpu_cores - lent.cpu_cores, v.allocated.memory_mib);
        let input = ResizeInput {
            vm_id: v.vm_id,
            rules: v.rules,
            limits: v.limits,
            allocated: own,
            effective: book.effective(v.vm_id, v.allocated, now_ms),
            cpu_forecast: v.cpu_forecast,
            memory_forecast: v.memory_forecast,
            used: v.used,
            recent_peak: v.recent_peak,
            resident_mib: v.resident_mib,
            oom: v.oom,
        };
        if let Some(mut d) = recommend(&input, &mut memory[i], now_ms) {
            d.from = v.allocated;
            // What it borrows rides on top of its allocation: together within its domain.
            d.to.cpu_cores = (d.to.cpu_cores + lent.cpu_cores).min(v.limits.cpu_cores - borrowed.cpu_cores);
            if d.to != d.from {
                decisions.push((i, d));
            }
        }
    }
    // Decreases first: what they free pays for the increases.
    decisions.sort_by_key(|(_, d)| d.grows());
    let room = Allocation::new(host.capacity.cpu_cores, host.capacity.memory_mib - host.memory_reserve_mib);
    let mut plan = HostSizingPlan::default();
    for (i, d) in decisions {
        let others = allocated.iter().enumerate().filter(|(j, _)| *j != i).fold(Allocation::default(), |a, (_, x)| a.plus(*x));
        // `room` already leaves the memory reserve out.
        let others = book.given_besides(others, 0.0, now_ms);
        match admit_resize(d.to, allocated[i], host.vms[i].limits, room, others) {
            Admission::Admit => {
                allocated[i] = d.to;
                plan.resizes.push(d);
            }
            Admission::Defer(why) => plan.deferred.push(DeferredResize { decision: d, why }),
            Admission::Infeasible(why) => plan.infeasible.push(DeferredResize { decision: d, why }),
        }
    }
    let vms: Vec<BrokerVm<'_>> = host
        .vms
        .iter()
        .zip(&allocated)
        .map(|(v, a)| BrokerVm {
            vm_id: v.vm_id,
            rules: v.rules,
            allocated: *a,
            limits: v.limits,
            cpu_forecast: v.cpu_forecast,
            cpu_used: v.used.cpu_cores,
            cpu_recent_peak: v.cpu_lend_peak,
        })
        .collect();
    let broker =
        BrokerHost { host_id: host.host_id, capacity: host.capacity, memory_reserve_mib: host.memory_reserve_mib, vms, leases: book };
    let BrokerPlan { grants, unmet } = broker_host(&broker, now_ms, use_free_cpu);
    plan.grants = grants;
    plan.unmet = unmet;
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm<'a>(id: &'a str, rules: &'a SizingRules, alloc: f64, used: f64, f: &'a Forecast) -> SizingVm<'a> {
        SizingVm {
            vm_id: id,
            rules,
            limits: Allocation::new(8.0, 8192.0),
            allocated: Allocation::new(alloc, 4096.0),
            cpu_forecast: Some(f),
            memory_forecast: None,
            used: Allocation::new(used, 1000.0),
            recent_peak: Allocation::new(used, 1000.0),
            cpu_lend_peak: used,
            resident_mib: 0.0,
            oom: false,
        }
    }

    #[test]
    fn a_grow_that_needs_a_shrink_on_a_full_host_comes_after_it_and_the_broker_sees_both() {
        let r = SizingRules { cpu_shrink_after_cycles: 1, ..SizingRules::default() };
        // Host of 9 cores, 8 allocated: `busy` (4 cores) forecasts p90 0.6 x 8 = 4.8 cores and
        // asks for 6; `idle` (4 cores) forecasts p90 0.05 x 8 = 0.4 cores and may shrink by 25 %.
        let busy_f = Forecast::flat([0.4, 0.5, 0.6]);
        let idle_f = Forecast::flat([0.01, 0.03, 0.05]);
        let book = LeaseBook::default();
        let host = SizingHost {
            host_id: "h",
            capacity: Allocation::new(9.0, 16384.0),
            memory_reserve_mib: 0.0,
            vms: vec![vm("busy", &r, 4.0, 3.5, &busy_f), vm("idle", &r, 4.0, 0.3, &idle_f)],
            leases: &book,
        };
        let mut mem = vec![SizingMemory::default(); 2];
        let plan = plan_host(&host, &mut mem, 0, false);
        // The shrink comes first and frees what the grow takes.
        assert_eq!(plan.resizes.len(), 2, "{plan:?}");
        assert_eq!(plan.resizes[0].vm_id, "idle");
        assert!(plan.resizes[0].to.cpu_cores < 4.0);
        assert_eq!(plan.resizes[1].vm_id, "busy");
        assert!(plan.resizes[1].to.cpu_cores > 4.0);
        let total: f64 = plan.resizes.iter().map(|d| d.to.cpu_cores).sum();
        assert!(total <= 9.0 + 1e-9, "{plan:?}");
        assert!(plan.deferred.is_empty());
        // Without the shrink (its votes not yet in), the grow waits for room instead.
        let slow = SizingRules::default();
        let host = SizingHost { vms: vec![vm("busy", &slow, 4.0, 3.5, &busy_f), vm("idle", &slow, 4.0, 0.3, &idle_f)], ..host };
        let plan = plan_host(&host, &mut vec![SizingMemory::default(); 2], 0, false);
        assert!(plan.resizes.is_empty(), "{plan:?}");
        assert_eq!(plan.deferred.len(), 1);
        assert_eq!(plan.deferred[0].decision.vm_id, "busy");
        // ... and the broker lends it `idle`'s confident slack meanwhile.
        assert_eq!(plan.grants.len(), 1, "{plan:?}");
        assert_eq!(plan.grants[0].lender.as_deref(), Some("idle"));
        assert_eq!(plan.grants[0].borrower, "busy");
    }

    /// A small deterministic generator (xorshift), so each seed replays exactly.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Random hosts over many passes, with the coordinator restarting (every VM's
    /// [`SizingMemory`] lost) and the agent restarting (its book read back from its entries) at
    /// random, demand jumping at random, and passes arriving late: after the agent's cycle no
    /// lease is held past its deadline, the VMs are never given more than the host has, and no
    /// allocation leaves its domain.
    #[test]
    fn across_random_coordinator_and_agent_restarts_no_overcommit_and_leases_end_by_their_deadline() {
        use crate::sizing::lease::{LeaseHost, LeaseParty};
        for seed in 1..=30u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let n = 3 + (rng.next() * 6.0) as usize;
            let names: Vec<String> = (0..n).map(|i| format!("vm{i}")).collect();
            let limits: Vec<Allocation> = (0..n).map(|_| Allocation::new(1.0 + (rng.next() * 7.0).floor(), 4096.0)).collect();
            let capacity = Allocation::new(limits.iter().map(|l| l.cpu_cores).sum::<f64>() * 0.7, 65_536.0);
            let rules: Vec<SizingRules> = (0..n)
                .map(|_| SizingRules {
                    max_lease_s: 60 + (rng.next() * 1800.0) as u64,
                    priority: (rng.next() * 3.0) as i32,
                    ..SizingRules::default()
                })
                .collect();
            // Start within the host: allocations scaled down to fit.
            let scale = (capacity.cpu_cores / limits.iter().map(|l| l.cpu_cores).sum::<f64>()).min(1.0);
            let mut allocated: Vec<Allocation> =
                limits.iter().map(|l| Allocation::new((l.cpu_cores * scale * 20.0).floor() / 20.0, 2048.0)).collect();
            let mut level: Vec<f64> = (0..n).map(|_| rng.next()).collect();
            let mut book = LeaseBook::default();
            let mut memory = vec![SizingMemory::default(); n];
            let mut now_ms = 1_700_000_000_000u64;
            for _ in 0..200 {
                now_ms += 60_000 + (rng.next() * 600_000.0) as u64;
                if rng.next() < 0.1 {
                    memory = vec![SizingMemory::default(); n]; // the coordinator restarts
                }
                if rng.next() < 0.1 {
                    book = LeaseBook::from_entries(book.entries().to_vec()); // the agent restarts
                }
                for l in level.iter_mut() {
                    if rng.next() < 0.2 {
                        *l = rng.next();
                    }
                }
                let forecasts: Vec<Forecast> =
                    level.iter().map(|&l| Forecast::flat([(l * 0.5) as f32, (l * 0.8) as f32, l as f32])).collect();
                let used: Vec<Allocation> = (0..n)
                    .map(|i| {
                        let eff = book.effective(&names[i], allocated[i], now_ms).cpu_cores;
                        Allocation::new((level[i] * limits[i].cpu_cores).min(eff.max(0.0)), 1000.0)
                    })
                    .collect();
                // The agent's cycle: what is due ends.
                let due = book.due(
                    now_ms,
                    |_| true,
                    |vm| names.iter().position(|x| x == vm).map_or_else(Allocation::default, |i| allocated[i]),
                    |_, _| None,
                );
                for (l, _) in due {
                    book.remove(&l.id);
                }
                assert!(book.entries().iter().all(|l| l.live(now_ms)), "seed {seed}: a lease outlived its deadline");
                // The coordinator's pass, then the agent admitting what it proposes.
                let host = SizingHost {
                    host_id: "h",
                    capacity,
                    memory_reserve_mib: 0.0,
                    vms: (0..n)
                        .map(|i| SizingVm {
                            vm_id: &names[i],
                            rules: &rules[i],
                            limits: limits[i],
                            allocated: allocated[i],
                            cpu_forecast: Some(&forecasts[i]),
                            memory_forecast: None,
                            used: used[i],
                            recent_peak: used[i],
                            cpu_lend_peak: used[i].cpu_cores,
                            resident_mib: 0.0,
                            oom: false,
                        })
                        .collect(),
                    leases: &book,
                };
                let plan = plan_host(&host, &mut memory, now_ms, rng.next() < 0.5);
                drop(host);
                for d in &plan.resizes {
                    let i = names.iter().position(|x| *x == d.vm_id).unwrap();
                    let others = (0..n).filter(|&j| j != i).fold(Allocation::default(), |a, j| a.plus(allocated[j]));
                    if matches!(
                        admit_resize(d.to, allocated[i], limits[i], capacity, book.given_besides(others, 0.0, now_ms)),
                        Admission::Admit
                    ) {
                        allocated[i] = d.to;
                    }
                }
                let parties: Vec<LeaseParty> = (0..n)
                    .map(|i| LeaseParty {
                        vm_id: names[i].clone(),
                        allocated: allocated[i],
                        limits: limits[i],
                        keep: Allocation::new(allocated[i].cpu_cores.min(used[i].cpu_cores * 1.25 + 0.05), allocated[i].memory_mib),
                        may_lend: true,
                        may_borrow: true,
                        max_borrow: Allocation::new(rules[i].max_borrow_cpu_cores, rules[i].max_borrow_memory_mib),
                        max_lease_ms: rules[i].max_lease_s * 1000,
                    })
                    .collect();
                let lease_host = LeaseHost { capacity, memory_reserve_mib: 0.0, vms: &parties };
                for l in plan.grants {
                    let _ = book.admit(l, &lease_host, now_ms);
                }
                // What every VM may use: its allocation, less what it lends, plus what it borrows
                // (from neighbours or the host's free CPU).
                let given: f64 = (0..n).map(|i| book.effective(&names[i], allocated[i], now_ms).cpu_cores).sum();
                assert!(given <= capacity.cpu_cores + 1e-6, "seed {seed}: {given} cores given on a {} core host", capacity.cpu_cores);
                for i in 0..n {
                    assert!(allocated[i].cpu_cores <= limits[i].cpu_cores + 1e-9, "seed {seed}: {} beyond its domain", names[i]);
                    let eff = book.effective(&names[i], allocated[i], now_ms).cpu_cores;
                    assert!(eff <= limits[i].cpu_cores + 1e-9 && eff >= -1e-9, "seed {seed}: {} may use {eff}", names[i]);
                }
            }
        }
    }
}
