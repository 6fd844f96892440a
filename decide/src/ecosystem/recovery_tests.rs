//! presage's policy with the ecosystem on small fleets where the answers can be checked
//! independently: recovery from a host failure against the fewest moves found exhaustively,
//! repairs that never lower a VM's required satisfaction, and bundles that move whole.
//!
//! Every fleet: six hosts of four 1000-MIPS cores in two racks of three (hosts 0-2, 3-5), CPU
//! overcommit 1 (so a host holds four one-core VMs), each VM at 30 % of its size; applications
//! of three VMs — `svc` requires `cache` on its host (< 0.1 ms) and `db` in its rack (< 1 ms) —
//! and filler VMs without dependencies. Consolidation is off: only repairs and drains move.

use std::sync::Arc;

use super::declaration::{Declaration, Dependencies, DependencySpec, Profile};
use super::graph::{EcosystemGraph, MatchOptions};
use super::score::{Placement, vm_score};
use super::scorer::{EcosystemHandle, FleetEcosystem, presage_with_ecosystem};
use super::topology::{LatencyTable, Location};
use crate::demand::Forecast;
use crate::policy::power::HP_ML110_G5;
use crate::policy::presage::{PresageConfig, PresagePolicy};
use crate::policy::{ConsolidationPolicy, FleetView, HostView, Migration, MoveReason, VmView};

const HOSTS: usize = 6;
const PER_RACK: usize = 3;
const SLOTS: usize = 4;

fn rack(h: usize) -> usize {
    h / PER_RACK
}

/// A small deterministic generator (xorshift), so the cases are the same on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Fleet VM order: app a's svc, cache, db at 3a, 3a+1, 3a+2; then the fillers.
struct Fleet {
    apps: usize,
    hosts: Vec<HostView>,
    vms: Vec<VmView>,
    eco: Arc<FleetEcosystem>,
    handle: Arc<EcosystemHandle>,
}

fn spec(kind: &str, latency: &str) -> DependencySpec {
    DependencySpec { kind: kind.into(), network_latency_requirement: Some(latency.into()), ..DependencySpec::default() }
}

fn declaration(app: usize, role: &str) -> Declaration {
    let required = if role == "svc" { vec![spec("cache", "< 0.1ms"), spec("db", "< 1ms")] } else { Vec::new() };
    Declaration {
        priority: Default::default(),
        vm_name: format!("a{app}/{role}"),
        application: Some(format!("a{app}")),
        profile: Some(Profile { kind: role.into(), ..Profile::default() }),
        dependencies: Dependencies { required, preferred: Vec::new() },
    }
}

impl Fleet {
    /// `apps` applications and `fillers` fillers, placed by `host_of` (fleet VM order).
    fn new(apps: usize, fillers: usize, host_of: &[Option<usize>]) -> Fleet {
        let decls: Vec<Declaration> = (0..apps).flat_map(|a| ["svc", "cache", "db"].map(|r| declaration(a, r))).collect();
        let graph = EcosystemGraph::build(&decls, MatchOptions::default(), &|_, _| None);
        let names: Vec<String> = decls.iter().map(|d| d.vm_name.clone()).collect();
        let n = apps * 3 + fillers;
        let locations = (0..HOSTS).map(|h| Location { zone: 0, rack: rack(h) as u32 }).collect();
        let fleet_eco = FleetEcosystem::new(graph, n, &|name| names.iter().position(|x| x == name), locations, LatencyTable::default());
        let handle = EcosystemHandle::new(fleet_eco);
        let eco = handle.get();
        let hosts = (0..HOSTS).map(|_| HostView::new(SLOTS as u32, 1000.0, 65_536.0, 100.0, HP_ML110_G5)).collect();
        let vms = (0..n).map(|_| VmView::unplaced(1, 1000.0, 512.0)).collect();
        let mut fleet = Fleet { apps, hosts, vms, eco, handle };
        for (vm, h) in host_of.iter().enumerate() {
            if let Some(h) = h {
                fleet.put(vm, *h);
            }
        }
        fleet
    }

    fn put(&mut self, vm: usize, h: usize) {
        let v = &mut self.vms[vm];
        v.host = Some(h);
        v.demand_mips = 300.0;
        v.forecast = Some(Forecast::flat([0.25, 0.3, 0.35]));
        self.hosts[h].vms.push(vm);
        self.hosts[h].observed_mips += 300.0;
    }

    fn take(&mut self, vm: usize) {
        if let Some(h) = self.vms[vm].host.take() {
            self.hosts[h].vms.retain(|&v| v != vm);
            self.hosts[h].observed_mips -= 300.0;
        }
    }

    fn view(&self, now_s: f64) -> FleetView<'_> {
        FleetView { now_s, hosts: &self.hosts, vms: &self.vms }
    }

    fn host_of(&self) -> Vec<Option<usize>> {
        self.vms.iter().map(|v| v.host).collect()
    }

    fn apply(&mut self, moves: &[Migration]) {
        for m in moves {
            self.take(m.vm);
            self.put(m.vm, m.to);
        }
    }

    /// Each fleet VM's required satisfaction where the VMs are (1 outside the graph).
    fn required_satisfaction(&self) -> Vec<f64> {
        let at = self.host_of();
        let eco = &self.eco;
        let host_of = |g: usize| eco.vm_of_graph[g].and_then(|f| at[f]);
        let placement = Placement { host_of: &host_of, locations: &eco.locations, latency: &eco.latency };
        (0..self.vms.len())
            .map(|f| eco.graph_of_vm[f].map_or(1.0, |g| vm_score(&eco.graph, g, &placement).required_satisfaction()))
            .collect()
    }
}

/// The rule itself, written out without the code under test: every app's svc shares a host with
/// its cache and a rack with its db, and no host holds more than `SLOTS`.
fn compliant(apps: usize, at: &[Option<usize>], failed: usize) -> bool {
    let mut count = [0usize; HOSTS];
    for h in at.iter().flatten() {
        count[*h] += 1;
    }
    if count[failed] > 0 || count.iter().any(|&c| c > SLOTS) {
        return false;
    }
    (0..apps).all(|a| {
        let (svc, cache, db) = (at[3 * a], at[3 * a + 1], at[3 * a + 2]);
        matches!((svc, cache, db), (Some(s), Some(c), Some(d)) if s == c && rack(s) == rack(d))
    })
}

/// The fewest VMs that must change host for `at` to become compliant, up to `limit`.
fn fewest_moves(apps: usize, at: &[Option<usize>], failed: usize, limit: usize) -> Option<usize> {
    fn search(apps: usize, at: &mut Vec<Option<usize>>, failed: usize, from: usize, left: usize) -> bool {
        if compliant(apps, at, failed) {
            return true;
        }
        if left == 0 {
            return false;
        }
        for vm in from..at.len() {
            let Some(was) = at[vm] else { continue };
            for h in (0..HOSTS).filter(|&h| h != was && h != failed) {
                at[vm] = Some(h);
                if search(apps, at, failed, vm + 1, left - 1) {
                    at[vm] = Some(was);
                    return true;
                }
            }
            at[vm] = Some(was);
        }
        false
    }
    let mut work = at.to_vec();
    (0..=limit).find(|&k| search(apps, &mut work, failed, 0, k))
}

fn quiet_config() -> PresageConfig {
    PresageConfig { cpu_overcommit: 1.0, underload_utilisation: 0.0, underload_power_ratio: 1e9, ..PresageConfig::default() }
}

/// A compliant random placement: each app's svc and cache on one host, its db in that rack,
/// the fillers wherever there is room.
fn compliant_placement(rng: &mut Rng, apps: usize, fillers: usize) -> Option<Vec<Option<usize>>> {
    let mut at = vec![None; apps * 3 + fillers];
    let mut used = [0usize; HOSTS];
    for a in 0..apps {
        let pairs: Vec<usize> = (0..HOSTS).filter(|&h| used[h] + 2 <= SLOTS).collect();
        let h = *pairs.get(rng.below(pairs.len().max(1)))?;
        used[h] += 2;
        let dbs: Vec<usize> = (0..HOSTS).filter(|&d| rack(d) == rack(h) && used[d] < SLOTS).collect();
        let d = *dbs.get(rng.below(dbs.len().max(1)))?;
        used[d] += 1;
        (at[3 * a], at[3 * a + 1], at[3 * a + 2]) = (Some(h), Some(h), Some(d));
    }
    for f in 0..fillers {
        let free: Vec<usize> = (0..HOSTS).filter(|&h| used[h] < SLOTS).collect();
        let h = *free.get(rng.below(free.len().max(1)))?;
        used[h] += 1;
        at[apps * 3 + f] = Some(h);
    }
    Some(at)
}

/// One host fails and its VMs restart where the policy's placement puts them (as the simulator's
/// HA does); the passes that follow repair what the restart left unmet. Over many small cases,
/// every one is back in compliance within 5 passes, and the repair moves add up to at most
/// 1.2 x the fewest that could do it, found by exhaustive search against the rule written out
/// independently.
#[test]
fn after_a_host_failure_repairs_restore_every_requirement_within_five_passes_with_few_moves() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let (mut policy_moves, mut fewest_total, mut cases, mut broken_cases) = (0usize, 0usize, 0usize, 0usize);
    for _case in 0..40 {
        let apps = 3 + rng.below(2);
        let fillers = 4 + rng.below(4);
        let Some(at) = compliant_placement(&mut rng, apps, fillers) else { continue };
        let mut fleet = Fleet::new(apps, fillers, &at);
        let mut policy = presage_with_ecosystem(quiet_config(), fleet.handle.clone());
        // A host with VMs fails; they restart one by one through the policy's placement.
        let occupied: Vec<usize> = (0..HOSTS).filter(|&h| !fleet.hosts[h].vms.is_empty()).collect();
        let failed = occupied[rng.below(occupied.len())];
        fleet.hosts[failed].schedulable = false;
        let victims = fleet.hosts[failed].vms.clone();
        for &vm in &victims {
            fleet.take(vm);
        }
        let mut lost = false;
        for &vm in &victims {
            match policy.place(&fleet.view(10_000.0), vm) {
                Some(h) => fleet.put(vm, h),
                None => lost = true,
            }
        }
        if lost {
            continue;
        }
        let after_restart = fleet.host_of();
        // Cases the rule cannot be met in (no room anywhere) say nothing about repairs.
        let Some(fewest) = fewest_moves(apps, &after_restart, failed, 4) else { continue };
        cases += 1;
        if fewest > 0 {
            broken_cases += 1;
        }
        let mut repaired_after = None;
        for pass in 1..=8u32 {
            let moves = policy.optimise(&fleet.view(10_000.0 + 300.0 * pass as f64));
            assert!(moves.iter().all(|m| matches!(m.reason, MoveReason::Repair(_))), "only repairs move here: {moves:?}");
            policy_moves += moves.len();
            fleet.apply(&moves);
            if compliant(apps, &fleet.host_of(), failed) {
                repaired_after = Some(pass);
                break;
            }
        }
        let passes = repaired_after.unwrap_or_else(|| panic!("case {_case} not repaired in 8 passes: {after_restart:?}"));
        assert!(passes <= 5, "case {_case}: {passes} passes");
        fewest_total += fewest;
    }
    eprintln!("{cases} cases, {broken_cases} with something to repair: {policy_moves} repair moves, {fewest_total} at least");
    assert!(cases >= 20 && broken_cases >= 5, "too few informative cases: {cases} cases, {broken_cases} with something to repair");
    assert!(
        policy_moves as f64 <= 1.2 * fewest_total as f64,
        "{policy_moves} repair moves against at least {fewest_total} needed over {cases} cases"
    );
}

/// Random placements that break requirements everywhere: after every pass (repairs only), no
/// VM's required satisfaction is lower than before it.
#[test]
fn a_repair_never_lowers_any_vms_required_satisfaction() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    let mut moved = 0;
    for case in 0..60 {
        let apps = 2 + rng.below(3);
        let fillers = rng.below(6);
        let n = apps * 3 + fillers;
        let mut used = [0usize; HOSTS];
        let mut at = vec![None; n];
        for slot in at.iter_mut() {
            let free: Vec<usize> = (0..HOSTS).filter(|&h| used[h] < SLOTS).collect();
            let h = free[rng.below(free.len())];
            used[h] += 1;
            *slot = Some(h);
        }
        let mut fleet = Fleet::new(apps, fillers, &at);
        let cfg = PresageConfig { repair_after_passes: 1, ..quiet_config() };
        let mut policy = presage_with_ecosystem(cfg, fleet.handle.clone());
        for pass in 0..4 {
            let before = fleet.required_satisfaction();
            let moves = policy.optimise(&fleet.view(50_000.0 + 300.0 * pass as f64));
            moved += moves.len();
            fleet.apply(&moves);
            let after = fleet.required_satisfaction();
            for (vm, (b, a)) in before.iter().zip(&after).enumerate() {
                assert!(a + 1e-9 >= *b, "case {case} pass {pass}: VM {vm} went from {b} to {a} with {moves:?}");
            }
        }
    }
    assert!(moved > 30, "the cases should give repairs to check: {moved} moves");
}

/// A host holding an app's svc and cache is drained: the two leave together, for one host in
/// the db's rack, and their explanations name each other.
#[test]
fn a_bundle_leaves_a_drained_host_whole_and_stays_near_what_it_needs() {
    // svc and cache on host 0, db on host 1 (rack 0); fillers fill host 1 and host 3.
    let at = [Some(0), Some(0), Some(1), Some(1), Some(1), Some(3), Some(3)];
    let mut fleet = Fleet::new(1, 4, &at);
    fleet.hosts[0].schedulable = false;
    let mut policy: PresagePolicy = presage_with_ecosystem(quiet_config(), fleet.handle.clone());
    let moves = policy.optimise(&fleet.view(10_000.0));
    let svc = moves.iter().find(|m| m.vm == 0).expect("the svc leaves");
    let cache = moves.iter().find(|m| m.vm == 1).expect("the cache leaves");
    assert_eq!(svc.to, cache.to, "{moves:?}");
    assert_eq!(rack(svc.to), rack(2), "the db's rack: {moves:?}");
    let explained = policy.explanations();
    let with_of = |vm: usize| explained.iter().find(|m| m.vm == vm).map(|m| m.with.clone()).unwrap_or_default();
    assert_eq!((with_of(0), with_of(1)), (vec![1], vec![0]));
    fleet.apply(&moves);
    assert!(compliant(fleet.apps, &fleet.host_of(), 0));
}
