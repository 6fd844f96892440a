//! Joint sizing and placement on the Bitbrains trace (from `../shared/data/bitbrains-rnd`, or
//! `$PRESAGE_SHARED_DATA/bitbrains-rnd`): sizes chosen from the first 14 days, judged on the
//! days after. The optimiser needs at least 15 % fewer active hosts than placing every VM at its
//! requested size by first-fit decreasing, with no more VM-intervals short of what the VM used
//! (its host's CPU saturated, or its memory above its size).

#![allow(clippy::needless_range_loop)]

mod common;

use presage_decide::optimise::cluster::{self, ClusterVm, SizingGoals};
use presage_decide::optimise::genetic::{Generations, GeneticConfig, first_fit_decreasing, optimise};
use presage_decide::optimise::{Host, Item, Problem, SizeOption, Solution, Tables};
use presage_optimise::{RayonChildren, pool};
use presage_traces::VmTrace;

/// Samples a day (5-minute steps).
const DAY: usize = 288;
const TRAINING_DAYS: usize = 14;

/// CPU in MHz and memory in MiB at each step.
fn usage(vm: &VmTrace) -> Vec<[f64; 2]> {
    let mhz = vm.spec.vcpus as f64 * vm.spec.cpu_mhz_per_core;
    vm.cpu_series().iter().zip(vm.memory_kb_series()).map(|(c, m)| [*c as f64 * mhz, *m as f64 / 1024.0]).collect()
}

fn requested(vm: &VmTrace) -> Vec<f64> {
    vec![vm.spec.vcpus as f64 * vm.spec.cpu_mhz_per_core, vm.spec.memory_bytes as f64 / (1 << 20) as f64]
}

/// VM-steps after the training days where a VM was short: its host's CPU was saturated (CPU
/// is shared: a VM's CPU size is what the placement reserves for it, and it may use up to all
/// of its vCPUs while its neighbours leave room), or it used more memory than its size
/// (memory is not shared).
fn under_provisioned(used: &[Vec<[f64; 2]>], sizes: &[Vec<f64>], s: &Solution, host_cpu: f64, hosts: usize) -> usize {
    let steps = used.iter().map(|u| u.len()).min().unwrap_or(0);
    let mut short = 0;
    for step in TRAINING_DAYS * DAY..steps {
        for h in 0..hosts as u32 {
            let members = s.members(h);
            let cpu: f64 = members.iter().map(|i| used[*i as usize][step][0]).sum();
            let saturated = cpu > host_cpu + 1e-6;
            short += members.iter().filter(|i| saturated || used[**i as usize][step][1] > sizes[**i as usize][1] + 1e-6).count();
        }
    }
    short
}

#[test]
fn sized_from_two_weeks_the_trace_needs_fewer_hosts_and_is_no_more_under_provisioned() {
    let dir = common::shared_set("bitbrains-rnd/2013-7", "1.csv.gz");
    let mut vms: Vec<VmTrace> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vm = presage_traces::read_bitbrains(&path, name.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        if vm.len() > (TRAINING_DAYS + 7) * DAY {
            vms.push(vm);
        }
    }
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(vms.len() >= 400, "only {} Bitbrains VMs with three weeks of samples in {}", vms.len(), dir.display());
    let used: Vec<Vec<[f64; 2]>> = vms.iter().map(usage).collect();
    // Hosts: two sockets of 32 cores at 2.9 GHz and 768 GiB (the trace's largest VM has 512
    // GiB), as many as the VMs could need.
    let host = Host { capacity: vec![64.0 * 2900.0, 768.0 * 1024.0], active_cost: 1.0 };
    let hosts = vec![host; vms.len()];

    // The baseline: every VM at its requested size, first-fit decreasing.
    let baseline = Problem {
        dims: 2,
        hosts: hosts.clone(),
        items: vms
            .iter()
            .map(|v| Item { options: vec![SizeOption { demand: requested(v), cost: 0.0 }], current: None, move_cost: 0.0 })
            .collect(),
        anti_affinity: vec![],
        packing_weight: 0.0,
        balance_weight: 0.0,
        lower_bound: None,
        hints: Vec::new(),
        pairs: Vec::new(),
        sites: Vec::new(),
    };
    let ffd = first_fit_decreasing(&Tables::new(&baseline));
    assert_eq!(ffd.unplaced().count(), 0);
    let baseline_hosts = ffd.active_hosts();
    let requested_sizes: Vec<Vec<f64>> = vms.iter().map(requested).collect();
    let baseline_under = under_provisioned(&used, &requested_sizes, &ffd, hosts[0].capacity[0], hosts.len());

    // The optimiser: sizes from the training days' daily peaks.
    let cluster_vms: Vec<ClusterVm> = vms
        .iter()
        .zip(&used)
        .map(|(v, u)| ClusterVm {
            size: requested(v),
            daily_peaks: u[..TRAINING_DAYS * DAY]
                .chunks(DAY)
                .map(|day| vec![day.iter().map(|x| x[0]).fold(0.0, f64::max), day.iter().map(|x| x[1]).fold(0.0, f64::max)])
                .collect(),
            floor: vec![0.0, 0.0],
            // A VM uses at most what it was given: all of its vCPUs, all of its memory.
            ceiling: requested(v),
            // Whole cores and 256 MiB.
            grain: vec![v.spec.cpu_mhz_per_core, 256.0],
            host: None,
            move_cost: 0.0,
            weight: 1.0,
        })
        .collect();
    let (problem, options) = cluster::problem(
        &hosts,
        &cluster_vms,
        &SizingGoals { horizon_days: (vms[0].len() / DAY - TRAINING_DAYS) as f64, ..SizingGoals::default() },
    )
    .unwrap();
    let t = Tables::new(&problem);
    let cfg = GeneticConfig { population: 8, generations: 6, seed: 1, ..GeneticConfig::default() };
    let pool = pool(2).unwrap();
    let out = optimise(&problem, vec![first_fit_decreasing(&t)], &cfg, &RayonChildren::new(&pool), &mut Generations);
    let s = out.best;
    assert_eq!(s.unplaced().count(), 0);
    let sizes: Vec<Vec<f64>> = (0..vms.len()).map(|i| options[i].sizes[s.option_of[i] as usize].clone()).collect();
    let optimised_under = under_provisioned(&used, &sizes, &s, hosts[0].capacity[0], hosts.len());
    // Every host within its capacity at the chosen sizes.
    for h in 0..hosts.len() as u32 {
        for k in 0..2 {
            let load: f64 = s.members(h).iter().map(|i| sizes[*i as usize][k]).sum();
            assert!(load <= hosts[0].capacity[k] + 1e-6, "host {h} over capacity in dimension {k}");
        }
    }
    if std::env::var_os("BITBRAINS_DEBUG").is_some() {
        let req: Vec<Vec<f64>> = vms.iter().map(requested).collect();
        for k in 0..2 {
            let r: f64 = req.iter().map(|x| x[k]).sum();
            let c: f64 = sizes.iter().map(|x| x[k]).sum();
            println!("dim {k}: requested {r:.0} chosen {c:.0} host capacity {:.0}", hosts[0].capacity[k]);
        }
        let mut hist = [0usize; 8];
        for i in 0..vms.len() {
            hist[s.option_of[i] as usize] += 1;
        }
        println!("options chosen {hist:?}");
        let mem_short: usize =
            used.iter().zip(&sizes).map(|(u, sz)| u.iter().skip(TRAINING_DAYS * DAY).filter(|x| x[1] > sz[1] + 1e-6).count()).sum();
        let mem_vms = used.iter().zip(&sizes).filter(|(u, sz)| u.iter().skip(TRAINING_DAYS * DAY).any(|x| x[1] > sz[1] + 1e-6)).count();
        println!("memory short: {mem_short} steps, {mem_vms} VMs");
    }
    let steps: usize = used.iter().map(|u| u.len().saturating_sub(TRAINING_DAYS * DAY)).sum();
    println!(
        "{} VMs: requested sizes + FFD {} hosts, {} under-provisioned VM-steps; optimiser {} hosts ({:.1} % fewer), {} under-provisioned VM-steps (of {steps})",
        vms.len(),
        baseline_hosts,
        baseline_under,
        s.active_hosts(),
        100.0 * (1.0 - s.active_hosts() as f64 / baseline_hosts as f64),
        optimised_under
    );
    assert!(s.active_hosts() as f64 <= 0.85 * baseline_hosts as f64, "{} hosts against {baseline_hosts}", s.active_hosts());
    assert!(optimised_under <= baseline_under, "{optimised_under} under-provisioned VM-steps against {baseline_under}");
}
