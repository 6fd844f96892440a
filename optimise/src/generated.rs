//! Generated clusters for the benchmarks and experiments (`examples/scale.rs`,
//! `examples/guided.rs`): hosts of three kinds, VMs at requested sizes placed the way a
//! scheduler that fills hosts in turn would, each VM with two weeks of log-normal daily peaks
//! (a third of them growing).

use presage_decide::optimise::cluster::ClusterVm;
use presage_decide::optimise::{Host, Item, Problem, Rng, SizeOption, Solution, Tables};

#[derive(Debug, thiserror::Error)]
#[error("the generated cluster of {hosts} hosts does not hold its {vms} VMs at their requested sizes")]
pub struct DoesNotFit {
    pub hosts: usize,
    pub vms: usize,
}

/// A cluster of `n_hosts` hosts (32, 48 or 64 cores, 8 GiB a core; active cost 100 + 3 a
/// core) and `n_vms` VMs (1 to 8 cores, 2 to 8 GiB a core, using 10 to 80 % of it), about
/// 65 % of the cores requested, each VM placed (`ClusterVm::host`) by first fit at its
/// requested size over the hosts in a random order, each search starting where the last
/// placed and moving on a host every third VM.
pub fn cluster(n_hosts: usize, n_vms: usize, seed: u64) -> Result<(Vec<Host>, Vec<ClusterVm>), DoesNotFit> {
    let mut rng = Rng::new(seed);
    let kinds = [(32.0, 256.0 * 1024.0), (48.0, 384.0 * 1024.0), (64.0, 512.0 * 1024.0)];
    let hosts: Vec<Host> = (0..n_hosts)
        .map(|_| {
            let (cores, mib) = kinds[rng.below(kinds.len())];
            Host { capacity: vec![cores, mib], active_cost: 100.0 + 3.0 * cores }
        })
        .collect();
    let mut vms: Vec<ClusterVm> = (0..n_vms)
        .map(|_| {
            let cores = [1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 8.0][rng.below(7)];
            let mib = cores * 1024.0 * [2.0, 4.0, 8.0][rng.below(3)];
            let busy = 0.1 + 0.7 * rng.unit();
            let growth = if rng.below(3) == 0 { 0.02 * rng.unit() } else { 0.0 };
            let daily_peaks = (0..14)
                .map(|d| {
                    let noise = |r: &mut Rng| (0.15 * (r.unit() + r.unit() + r.unit() - 1.5)).exp();
                    let g = (growth * d as f64).exp();
                    vec![(cores * busy * noise(&mut rng) * g).min(cores), (mib * (0.3 + 0.5 * busy) * noise(&mut rng) * g).min(mib)]
                })
                .collect();
            ClusterVm {
                size: vec![cores, mib],
                daily_peaks,
                floor: vec![0.0, 0.0],
                ceiling: vec![cores, mib],
                grain: vec![1.0, 256.0],
                host: None,
                move_cost: 2.0 + cores,
                weight: 0.5 + rng.unit(),
            }
        })
        .collect();
    let fixed = requested_sizes(&hosts, &vms);
    let ft = Tables::new(&fixed);
    let mut now = Solution::empty(&ft);
    let mut order: Vec<u32> = (0..n_hosts as u32).collect();
    rng.shuffle(&mut order);
    let mut cursor = 0;
    for i in 0..n_vms as u32 {
        let found = (0..n_hosts).map(|k| (cursor + k) % n_hosts).find(|x| now.fits(&ft, i, 0, order[*x]));
        let Some(x) = found else { return Err(DoesNotFit { hosts: n_hosts, vms: n_vms }) };
        now.place(&ft, i, order[x]);
        cursor = (x + usize::from((i as usize).is_multiple_of(3))) % n_hosts;
    }
    for (i, vm) in vms.iter_mut().enumerate() {
        vm.host = Some(now.host_of[i]);
    }
    Ok((hosts, vms))
}

/// The VMs at their requested sizes alone (one option each, nothing placed): the problem
/// first-fit and best-fit decreasing are judged on.
pub fn requested_sizes(hosts: &[Host], vms: &[ClusterVm]) -> Problem {
    Problem {
        dims: 2,
        hosts: hosts.to_vec(),
        items: vms
            .iter()
            .map(|v| Item { options: vec![SizeOption { demand: v.size.clone(), cost: 0.0 }], current: None, move_cost: 0.0 })
            .collect(),
        ..Problem::default()
    }
}
