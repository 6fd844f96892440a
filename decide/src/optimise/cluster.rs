//! A cluster's placement and sizing as a [`Problem`]: each VM's size options come from the
//! distribution of its daily peaks, each option costing the forecast SLA risk that a day's
//! peak exceeds it; hosts cost what being active costs; moving a VM costs what its migration
//! does. What the coordinator's background pass and the benchmarks both build.
//!
//! A VM's daily peaks in each dimension are taken as log-normal (peaks are positive and their
//! spread grows with their size): `mu` and `sigma` are the mean and standard deviation of their
//! logarithms (sigma at least [`SizingGoals::min_sigma`], as a few days of history understate
//! it). A size `s` is exceeded on a day with probability `P(peak > s) = 1 - Phi((ln s - mu) /
//! sigma)`; the options are the sizes at `mu + z * sigma` for each configured `z`, rounded up
//! to the VM's grain and never below its floor (e.g. resident memory) or the largest peak seen,
//! and the size it has now. An option's cost is `weight * sla_cost * risk * horizon_days`, its risk the most
//! likely of its dimensions to be exceeded.

use serde::{Deserialize, Serialize};

use super::{Host, Item, Problem, ProblemError, SizeOption};
use crate::policy::presage::normal_sf;

/// The most size options of a VM built as combinations of per-dimension levels.
pub const MAX_COMBINATIONS: usize = 64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SizingGoals {
    /// Sizes offered, as standard deviations of the log daily peak above its mean.
    pub headroom_sigmas: Vec<f64>,
    /// What a day with a peak above a VM's size costs, in the hosts' cost units (e.g. 1: as
    /// much as a host active for the horizon).
    pub sla_cost: f64,
    /// The least spread assumed for the log daily peaks.
    pub min_sigma: f64,
    /// Whether the size each VM has now stays an option.
    pub keep_current_size: bool,
    /// How many days the plan is to hold: a rising trend is carried that far, and an option's
    /// risk counts for each day.
    pub horizon_days: f64,
    /// The balance goal's weight ([`Problem::balance_weight`], in the hosts' cost units): 0
    /// packs the VMs on as few hosts as their risk allows; more spreads them evenly.
    pub balance_weight: f64,
    /// What a preferred dependency whose VMs are too far apart for its latency requirement
    /// costs, in the hosts' cost units, times its importance (the caller turns its dependency
    /// graph into the problem's [`Problem::pairs`] with it).
    pub dependency_weight: f64,
}

impl Default for SizingGoals {
    fn default() -> Self {
        SizingGoals {
            headroom_sigmas: vec![3.0, 2.0, 1.0],
            sla_cost: 1.0,
            min_sigma: 0.1,
            keep_current_size: true,
            horizon_days: 1.0,
            balance_weight: 0.0,
            dependency_weight: 0.2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterVm {
    /// The size it has now, per dimension.
    pub size: Vec<f64>,
    /// Its peak use per day (oldest first), each per dimension.
    pub daily_peaks: Vec<Vec<f64>>,
    /// The least size per dimension (e.g. its resident memory).
    pub floor: Vec<f64>,
    /// The most it can use per dimension (e.g. all of its vCPUs; infinite for memory): no
    /// size above it is offered.
    pub ceiling: Vec<f64>,
    /// Sizes are whole multiples of this per dimension (e.g. a core, 256 MiB).
    pub grain: Vec<f64>,
    /// Its host now (an index into the hosts), if placed.
    pub host: Option<u32>,
    pub move_cost: f64,
    /// How much its SLA matters (1: as much as any).
    pub weight: f64,
}

/// The options of one VM: sizes and their risks (the item's options, with the risk kept apart
/// from the cost for reports).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VmOptions {
    pub sizes: Vec<Vec<f64>>,
    pub risks: Vec<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ClusterError {
    #[error("VM {vm}: {why}")]
    Vm { vm: usize, why: String },
    #[error(transparent)]
    Problem(#[from] ProblemError),
}

/// The log-normal fit of one dimension's daily peaks, its trend carried to the end of the
/// horizon: (mu at the horizon's end, sigma of the residuals, largest peak).
fn fit(peaks: impl Iterator<Item = f64>, goals: &SizingGoals) -> Option<(f64, f64, f64)> {
    let v: Vec<(f64, f64)> = peaks.enumerate().filter(|(_, p)| *p > 0.0).map(|(d, p)| (d as f64, p.ln())).collect();
    let largest = v.iter().map(|(_, l)| l.exp()).fold(0.0, f64::max);
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let (mx, my) = (v.iter().map(|p| p.0).sum::<f64>() / n, v.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = v.iter().map(|p| (p.0 - mx).powi(2)).sum();
    // A rising trend is carried forward (a falling one is not trusted to go on falling).
    let slope = if v.len() >= 3 && sxx > 0.0 { (v.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx).max(0.0) } else { 0.0 };
    let resid = v.iter().map(|p| (p.1 - my - slope * (p.0 - mx)).powi(2)).sum::<f64>() / (v.len().max(3) - 2) as f64;
    let last = v.last().map_or(0.0, |p| p.0);
    let mu_end = my + slope * (last + goals.horizon_days - mx);
    Some((mu_end, resid.sqrt().max(goals.min_sigma), largest))
}

fn ceil_to(v: f64, grain: f64) -> f64 {
    if grain > 0.0 { (v / grain - 1e-9).ceil() * grain } else { v }
}

/// The size options of one VM and their risks.
pub fn vm_options(vm: &ClusterVm, goals: &SizingGoals) -> VmOptions {
    let dims = vm.size.len();
    let fits: Vec<Option<(f64, f64, f64)>> = (0..dims).map(|k| fit(vm.daily_peaks.iter().map(|d| d[k]), goals)).collect();
    let risk_of = |size: &[f64]| -> f64 {
        (0..dims)
            .map(|k| match fits[k] {
                Some((mu, sigma, _)) if size[k] > 0.0 => normal_sf((size[k].ln() - mu) / sigma),
                Some(_) => 1.0,
                // Nothing seen: only the size it has is offered (no risk to count against it).
                None => 0.0,
            })
            .fold(1.0, |none, r| none * (1.0 - r))
    };
    let risk_of = |size: &[f64]| 1.0 - risk_of(size);
    // Each dimension's levels: the size now, then one per headroom.
    let levels: Vec<Vec<f64>> = (0..dims)
        .map(|k| {
            let mut l: Vec<f64> = Vec::new();
            if goals.keep_current_size {
                l.push(vm.size[k]);
            }
            // Without any use seen in a dimension there is nothing to size it from: it keeps
            // the size it has.
            let Some((mu, sigma, largest)) = fits[k] else {
                if l.is_empty() {
                    l.push(vm.size[k]);
                }
                return l;
            };
            for z in &goals.headroom_sigmas {
                let want = (mu + z * sigma).exp().max(largest);
                let level = ceil_to(want.max(vm.floor[k]), vm.grain[k]).max(vm.grain[k]).min(vm.ceiling[k]);
                if !l.contains(&level) {
                    l.push(level);
                }
            }
            l
        })
        .collect();
    // Past MAX_COMBINATIONS, the later dimensions (the caller lists them by importance: cores
    // and memory before I/O and network) are sized more coarsely: their first level (the size
    // now) and the middle of the rest.
    let mut levels = levels;
    while levels.iter().map(|l| l.len()).product::<usize>() > MAX_COMBINATIONS {
        let Some(k) = levels.iter().rposition(|l| l.len() > 2) else { break };
        let rest = &levels[k][1..];
        levels[k] = vec![levels[k][0], rest[(rest.len() - 1) / 2]];
    }
    // Every combination of levels (a dimension that binds nowhere keeps its safest size while
    // another shrinks), the size now first; past MAX_COMBINATIONS still, the levels side by side.
    let combinations: usize = levels.iter().map(|l| l.len()).product();
    let mut sizes: Vec<Vec<f64>> = Vec::new();
    if combinations <= MAX_COMBINATIONS {
        let mut index = vec![0usize; dims];
        for _ in 0..combinations {
            sizes.push((0..dims).map(|k| levels[k][index[k]]).collect());
            for k in 0..dims {
                index[k] += 1;
                if index[k] < levels[k].len() {
                    break;
                }
                index[k] = 0;
            }
        }
    } else {
        let most = levels.iter().map(|l| l.len()).max().unwrap_or(0);
        for x in 0..most {
            let size: Vec<f64> = (0..dims).map(|k| levels[k][x.min(levels[k].len() - 1)]).collect();
            if !sizes.contains(&size) {
                sizes.push(size);
            }
        }
    }
    let risks = sizes.iter().map(|s| risk_of(s)).collect();
    VmOptions { sizes, risks }
}

/// The problem: every VM's options (costed by risk), every host, the current placement.
pub fn problem(hosts: &[Host], vms: &[ClusterVm], goals: &SizingGoals) -> Result<(Problem, Vec<VmOptions>), ClusterError> {
    let dims = hosts.first().map_or(0, |h| h.capacity.len());
    let mut items = Vec::with_capacity(vms.len());
    let mut options = Vec::with_capacity(vms.len());
    for (v, vm) in vms.iter().enumerate() {
        let bad = |why: String| ClusterError::Vm { vm: v, why };
        if [&vm.size, &vm.floor, &vm.grain, &vm.ceiling].iter().any(|v| v.len() != dims) {
            return Err(bad(format!("size, floor, grain and ceiling must each have {dims} values")));
        }
        if vm.ceiling.iter().zip(&vm.floor).any(|(c, f)| c.is_nan() || c < f) {
            return Err(bad(format!("ceiling {:?} is below floor {:?}", vm.ceiling, vm.floor)));
        }
        if let Some(d) = vm.daily_peaks.iter().find(|d| d.len() != dims || d.iter().any(|x| !x.is_finite() || *x < 0.0)) {
            return Err(bad(format!("daily peak {d:?} is not {dims} finite values >= 0")));
        }
        if !(vm.weight.is_finite() && vm.weight >= 0.0) {
            return Err(bad(format!("weight {} is not a finite value >= 0", vm.weight)));
        }
        let opts = vm_options(vm, goals);
        items.push(Item {
            options: opts
                .sizes
                .iter()
                .zip(&opts.risks)
                .map(|(s, r)| SizeOption { demand: s.clone(), cost: vm.weight * goals.sla_cost * r * goals.horizon_days.max(1.0) })
                .collect(),
            // With the size it has now kept, that is option 0; without, it is being resized anyway.
            current: vm.host.map(|h| (h, 0)),
            move_cost: vm.move_cost,
        });
        options.push(opts);
    }
    let min_host = hosts.iter().map(|h| h.active_cost).fold(f64::INFINITY, f64::min);
    let p = Problem {
        dims,
        hosts: hosts.to_vec(),
        items,
        anti_affinity: Vec::new(),
        packing_weight: if min_host.is_finite() && goals.balance_weight == 0.0 { 0.01 * min_host } else { 0.0 },
        balance_weight: goals.balance_weight,
        lower_bound: None,
        hints: Vec::new(),
        pairs: Vec::new(),
        sites: Vec::new(),
    };
    p.check()?;
    Ok((p, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(peaks: &[f64]) -> ClusterVm {
        ClusterVm {
            size: vec![8.0],
            daily_peaks: peaks.iter().map(|p| vec![*p]).collect(),
            floor: vec![0.0],
            ceiling: vec![f64::INFINITY],
            grain: vec![1.0],
            host: None,
            move_cost: 0.0,
            weight: 1.0,
        }
    }

    #[test]
    fn sizes_cover_every_peak_seen_and_smaller_sizes_are_riskier() {
        let o = vm_options(&vm(&[1.6, 2.0, 2.4, 1.8, 2.1, 2.2, 1.9]), &SizingGoals::default());
        assert_eq!(o.sizes[0], vec![8.0], "the size it has now comes first");
        for s in &o.sizes[1..] {
            assert!(s[0] >= 2.4 && s[0] < 8.0 && s[0].fract() == 0.0, "{s:?}");
        }
        // Larger sizes, no more risk; the largest peak is under every size offered.
        let mut by_size: Vec<(f64, f64)> = o.sizes.iter().map(|s| s[0]).zip(o.risks.iter().copied()).collect();
        by_size.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(by_size.windows(2).all(|w| w[1].1 <= w[0].1 + 1e-12), "{by_size:?}");
        assert!(o.risks[0] < 1e-6, "8 cores against peaks near 2: {}", o.risks[0]);
    }

    #[test]
    fn four_dimensions_keep_every_cpu_and_memory_combination_and_size_io_coarser() {
        // Cores, MiB, disk MiB/s, network MiB/s: four levels each would be 256 options.
        let days = [[1.6, 900.0, 40.0, 10.0], [2.0, 1000.0, 55.0, 14.0], [2.4, 1100.0, 35.0, 12.0], [1.8, 950.0, 60.0, 9.0]];
        let v = ClusterVm {
            size: vec![8.0, 4096.0, 200.0, 100.0],
            daily_peaks: days.iter().map(|d| d.to_vec()).collect(),
            floor: vec![0.1, 512.0, 1.0, 1.0],
            ceiling: vec![8.0, 4096.0, 1000.0, 1000.0],
            grain: vec![0.1, 64.0, 1.0, 1.0],
            host: None,
            move_cost: 0.0,
            weight: 1.0,
        };
        let o = vm_options(&v, &SizingGoals::default());
        assert!(o.sizes.len() <= MAX_COMBINATIONS, "{} options", o.sizes.len());
        assert_eq!(o.sizes[0], v.size, "the size it has now comes first");
        let levels = |k: usize| {
            let mut l: Vec<f64> = o.sizes.iter().map(|s| s[k]).collect();
            l.sort_by(f64::total_cmp);
            l.dedup();
            l
        };
        let (cpu, mem, disk, net) = (levels(0), levels(1), levels(2), levels(3));
        assert_eq!((cpu.len(), mem.len()), (4, 4), "cores {cpu:?}, memory {mem:?}: the size now and three headrooms each");
        assert_eq!((disk.len(), net.len()), (2, 2), "disk {disk:?}, network {net:?}: the size now and one headroom");
        for c in &cpu {
            for m in &mem {
                assert!(o.sizes.iter().any(|s| s[0] == *c && s[1] == *m), "{c} cores with {m} MiB is missing");
            }
        }
        // The I/O levels offered cover every peak seen.
        assert!(disk.iter().all(|d| *d >= 60.0) && net.iter().all(|n| *n >= 14.0), "{disk:?} {net:?}");
    }

    #[test]
    fn a_vm_that_has_outgrown_its_size_is_offered_more_and_its_size_now_is_risky() {
        let o = vm_options(&vm(&[9.0, 10.0, 11.0, 9.5, 10.5]), &SizingGoals::default());
        assert!(o.risks[0] > 0.9, "8 cores against peaks of 9 to 11: risk {}", o.risks[0]);
        assert!(o.sizes[1..].iter().all(|s| s[0] >= 11.0));
    }

    #[test]
    fn the_balance_goal_spreads_what_packing_would_put_on_one_host() {
        use crate::optimise::genetic::{Generations, GeneticConfig, Sequential, optimise};
        use crate::optimise::{Solution, Tables};
        // Two VMs of 6 cores (steady peaks) on two 16-core hosts, one of them now on each.
        let hosts = [Host { capacity: vec![16.0], active_cost: 1.0 }, Host { capacity: vec![16.0], active_cost: 1.0 }];
        let mut vms = vec![vm(&[6.0; 7]), vm(&[6.0; 7])];
        vms[0].size = vec![6.0];
        vms[1].size = vec![6.0];
        vms[0].host = Some(0);
        vms[1].host = Some(1);
        let hosts_used = |goals: &SizingGoals| {
            let (p, _) = problem(&hosts, &vms, goals).unwrap();
            let t = Tables::new(&p);
            let cfg = GeneticConfig { population: 8, generations: 20, seed: 3, ..GeneticConfig::default() };
            let out = optimise(&p, vec![Solution::current(&Tables::new(&p))], &cfg, &Sequential, &mut Generations);
            let mut check = out.best.clone();
            assert!((check.recount(&t) - out.best.cost()).abs() < 1e-9, "the kept cost is the counted one");
            out.best.active_hosts()
        };
        assert_eq!(hosts_used(&SizingGoals::default()), 1, "packed: one host is cheaper");
        // Balance worth more than a host: one host at 12/16 costs 10 x 0.5625 / 2 = 2.8 more,
        // two at 6/16 cost 10 x 0.28 / 2 = 1.4 more and one host.
        assert_eq!(hosts_used(&SizingGoals { balance_weight: 10.0, ..SizingGoals::default() }), 2, "spread for balance");
        let bad = problem(&hosts, &vms, &SizingGoals { balance_weight: f64::NAN, ..SizingGoals::default() }).unwrap_err();
        assert!(bad.to_string().contains("balance weight"), "{bad}");
    }

    #[test]
    fn hints_are_checked_followed_where_they_fit_and_never_break_a_constraint() {
        use crate::optimise::genetic::{Generations, GeneticConfig, Sequential, optimise};
        use crate::optimise::{Hint, Solution, Tables};
        // Six 4-core VMs (steady peaks) one per host on six 16-core hosts, and a 2-core host:
        // four fit on one host.
        let mut hosts = vec![Host { capacity: vec![16.0], active_cost: 1.0 }; 6];
        hosts.push(Host { capacity: vec![2.0], active_cost: 1.0 });
        let vms: Vec<ClusterVm> = (0..6)
            .map(|h| {
                let mut v = vm(&[4.0; 7]);
                v.size = vec![4.0];
                v.host = Some(h);
                v
            })
            .collect();
        let (mut p, _) = problem(&hosts, &vms, &SizingGoals::default()).unwrap();
        // Hints that name nothing are refused.
        p.hints = vec![Hint { item: 9, host: None, option: None }];
        assert!(matches!(p.check(), Err(ProblemError::Hint { hint: 0, .. })), "{:?}", p.check());
        p.hints = vec![Hint { item: 0, host: Some(7), option: None }];
        assert!(p.check().is_err());
        let run = |p: &Problem, generations: usize| {
            let cfg = GeneticConfig { population: 4, generations, guided: 1.0, intensify: 0, seed: 5, ..GeneticConfig::default() };
            let out = optimise(p, vec![Solution::current(&Tables::new(p))], &cfg, &Sequential, &mut Generations);
            let t = Tables::new(p);
            let mut check = out.best.clone();
            assert!((check.recount(&t) - out.best.cost()).abs() < 1e-9, "the kept cost is the counted one");
            // Every host within its capacity, counted here from the assignment.
            for h in 0..p.hosts.len() as u32 {
                let load: f64 = out.best.members(h).iter().map(|i| t.demand(*i, out.best.option_of[*i as usize])[0]).sum();
                assert!(load <= p.hosts[h as usize].capacity[0] + 1e-9, "host {h} holds {load}");
            }
            out.best
        };
        // Hints that mislead (a host too small for any of them, the same host again) change
        // nothing that matters: the constraints hold and the result is the same as without.
        p.hints = vec![Hint { item: 0, host: Some(6), option: None }, Hint { item: 1, host: Some(1), option: None }];
        let misled = run(&p, 30);
        p.hints.clear();
        let blind = run(&p, 30);
        assert_eq!(misled.active_hosts(), blind.active_hosts());
        // Consolidation suggested (VMs 1..3 to VM 0's host): taken at the first generation.
        p.hints = (1..4).map(|i| Hint { item: i, host: Some(0), option: None }).collect();
        let guided = run(&p, 1);
        assert!(guided.active_hosts() <= 3, "three of the four hinted moves fit at once: {} hosts", guided.active_hosts());
        // Same seed, same hints: the same result.
        p.hints = (1..4).map(|i| Hint { item: i, host: Some(0), option: None }).collect();
        assert_eq!(run(&p, 5).host_of, run(&p, 5).host_of);
    }

    #[test]
    fn bad_vms_are_named() {
        let mut v = vm(&[1.0]);
        v.daily_peaks.push(vec![f64::NAN]);
        let hosts = [Host { capacity: vec![16.0], active_cost: 1.0 }];
        let err = problem(&hosts, &[vm(&[1.0]), v], &SizingGoals::default()).unwrap_err();
        assert!(matches!(err, ClusterError::Vm { vm: 1, .. }), "{err}");
    }
}
