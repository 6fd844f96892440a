//! presage's policy with application signals: confirmed suffering moves the VM that suffers,
//! to headroom, and never back to the host that hurt it; a guest's unconfirmed claim moves nothing.

use super::*;
use crate::demand::Forecast;
use crate::policy::ConsolidationPolicy;
use crate::policy::application::{AppSignal, Verdict};
use crate::policy::power::HP_ML110_G5;
use crate::policy::{HostView, PolicySpec, VmView};

/// A 4-core host of 1000 MIPS per core.
fn host() -> HostView {
    HostView::new(4, 1000.0, 16_384.0, 100.0, HP_ML110_G5)
}

/// A 1-core 1000-MIPS VM on `h` at `now` of its size, forecast flat around it (+-0.05).
fn vm_on(hosts: &mut [HostView], vms: &mut Vec<VmView>, h: usize, now: f64) {
    let mut v = VmView::unplaced(1, 1000.0, 500.0);
    v.host = Some(h);
    v.demand_mips = now * 1000.0;
    let q = now as f32;
    v.forecast = Some(Forecast::flat([q - 0.05, q, q + 0.05]));
    hosts[h].observed_mips += now * 1000.0;
    hosts[h].vms.push(vms.len());
    vms.push(v);
}

/// Host 0 at 85 % (VMs 0-3), host 1 at 52.5 % (VMs 4-6), host 2 at 80 % (VMs 7-10): no host
/// is at risk of exceeding its capacity, so without application signals nothing moves.
fn busy_fleet() -> (Vec<HostView>, Vec<VmView>) {
    let mut hs: Vec<HostView> = (0..3).map(|_| host()).collect();
    let mut vms = Vec::new();
    for _ in 0..4 {
        vm_on(&mut hs, &mut vms, 0, 0.85);
    }
    for _ in 0..3 {
        vm_on(&mut hs, &mut vms, 1, 0.7);
    }
    for _ in 0..4 {
        vm_on(&mut hs, &mut vms, 2, 0.8);
    }
    (hs, vms)
}

fn signal(latency_over_slo: f64, host_contention: f64, measured_on: usize, at_s: f64) -> AppSignal {
    AppSignal { latency_over_slo, host_contention, measured_on, at_s }
}

/// Runs passes every 5 minutes with VM 2 reporting `latency_over_slo` and its host measuring
/// `contention`; returns the pass's index and explanations of the first pass that moved anything.
fn passes(p: &mut PresagePolicy, latency_over_slo: f64, contention: f64) -> Option<(usize, Vec<MoveExplanation>)> {
    let (hs, mut vms) = busy_fleet();
    for k in 0..12 {
        let now = 10_000.0 + 300.0 * k as f64;
        vms[0].app = Some(signal(0.4, contention, 0, now));
        vms[2].app = Some(signal(latency_over_slo, contention, 0, now));
        let fleet = FleetView { now_s: now, hosts: &hs, vms: &vms };
        if !p.optimise(&fleet).is_empty() {
            return Some((k, p.explanations().to_vec()));
        }
    }
    None
}

#[test]
fn a_vm_that_suffers_with_its_host_agreeing_moves_first_to_a_host_with_headroom() {
    let mut p = PresagePolicy::new(PresageConfig::default());
    let (k, moves) = passes(&mut p, 3.0, 0.4).expect("the suffering VM never moved");
    // Its first confirmed report teaches the level at which it suffers: it moves within two
    // passes.
    assert!(k <= 1, "moved only at pass {k}");
    let first = &moves[0];
    assert_eq!((first.vm, first.from, first.reason), (2, 0, MoveReason::Overload(0)), "{moves:?}");
    // Host 2 would run at 100 % with it, host 1 at 74 %: under the level where it suffered.
    assert_eq!(first.to, 1);
    let app = first.application.expect("the explanation shows the application figures");
    assert_eq!(app.verdict, Verdict::Suffering);
    assert_eq!(app.latency_over_slo, 3.0);
    assert!(app.tolerance.is_some_and(|t| t < 0.85 && t > 0.8), "{app:?}");
    // The healthy VM on the same host stays.
    assert!(moves.iter().all(|m| m.vm != 0), "{moves:?}");
}

#[test]
fn a_guests_claim_its_host_does_not_confirm_moves_nothing() {
    let mut p = PresagePolicy::new(PresageConfig::default());
    // Ten times over its SLO, but its vCPUs never wait for a core.
    assert!(passes(&mut p, 10.0, 0.0).is_none());
    assert_eq!(p.application_book().unwrap().tolerance(2), None);
    assert!(p.application_book().unwrap().unconfirmed_for(2) >= 12);
}

#[test]
fn without_application_awareness_the_same_signals_move_nothing() {
    let cfg = PolicySpec::PresageNoApp.presage_config(&PresageConfig::default());
    assert!(!cfg.application_aware && cfg.weights.application == 0.0);
    assert!(passes(&mut PresagePolicy::new(cfg), 3.0, 0.4).is_none());
}

#[test]
fn a_host_that_hurt_a_vm_is_ranked_below_an_identical_one_for_it() {
    // No consolidation in the way: only the ranking is under test.
    let cfg = PresageConfig { underload_utilisation: 0.0, underload_power_ratio: 20.0, ..PresageConfig::default() };
    let mut p = PresagePolicy::new(cfg);
    let mut hs: Vec<HostView> = (0..3).map(|_| host()).collect();
    let mut vms = Vec::new();
    for h in 0..3 {
        vm_on(&mut hs, &mut vms, h, 0.5);
    }
    // VM 0 suffered on host 1 (confirmed), then was healthy on host 0, where it runs now.
    for (at, s) in [(10_000.0, signal(4.0, 0.5, 1, 10_000.0)), (10_300.0, signal(0.3, 0.01, 0, 10_300.0))] {
        vms[0].app = Some(s);
        p.optimise(&FleetView { now_s: at, hosts: &hs, vms: &vms });
    }
    let fleet = FleetView { now_s: 10_600.0, hosts: &hs, vms: &vms };
    let ranking = p.rank_resident(&fleet, &p.standing(&fleet), 0, 3);
    let term = |h: usize| {
        let s = ranking.ranked.iter().find(|s| s.host == h).unwrap_or_else(|| panic!("host {h} not ranked: {ranking:?}"));
        (s.score, s.terms.iter().find(|t| t.scorer == "application").map_or(0.0, |t| t.value))
    };
    let ((s1, a1), (s2, a2), (_, a0)) = (term(1), term(2), term(0));
    assert!(s1 > s2, "host 1 (hurt it) scored {s1}, host 2 {s2}");
    assert!((a1 - a2 - 1.0).abs() < 1e-9, "application terms: host 1 {a1}, host 2 {a2}");
    // Where it was last healthy counts in its favour.
    assert!(a0 < a2, "host 0 {a0}, host 2 {a2}");
}

#[test]
fn cpu_the_host_spends_outside_its_vms_counts_against_its_level() {
    let (mut hs, vms) = busy_fleet();
    let fleet = FleetView { now_s: 10_000.0, hosts: &hs, vms: &vms };
    assert!(PresagePolicy::new(PresageConfig::default()).optimise(&fleet).iter().all(|m| m.vm > 6), "host 1 relieved without cause");
    // A process outside presage takes 2 of host 1's 4 cores: its VMs (2.1 cores) no longer fit.
    hs.push(host());
    hs[1].other_mips = 2000.0;
    hs[1].observed_mips += 2000.0;
    let fleet = FleetView { now_s: 10_000.0, hosts: &hs, vms: &vms };
    let mut p = PresagePolicy::new(PresageConfig::default());
    let moves = p.optimise(&fleet);
    assert!(moves.iter().any(|m| m.reason == MoveReason::Overload(1)), "{moves:?}");
}

/// An advisory plan is not carried out: a move the policy decided but that never happened (the
/// VM is still where it was) does not hold the VM for the minimum residence, so the next pass
/// can decide it again, or otherwise (here, for its application).
#[test]
fn a_decided_move_that_never_happened_does_not_hold_the_vm() {
    let mut hs: Vec<HostView> = (0..3).map(|_| host()).collect();
    let mut vms = Vec::new();
    for _ in 0..3 {
        vm_on(&mut hs, &mut vms, 0, 0.7);
    }
    // Host 1 idles with one small VM: consolidation empties it onto host 0 or 2.
    vm_on(&mut hs, &mut vms, 1, 0.1);
    for _ in 0..3 {
        vm_on(&mut hs, &mut vms, 2, 0.6);
    }
    let mut p = PresagePolicy::new(PresageConfig::default());
    let first = p.optimise(&FleetView { now_s: 10_000.0, hosts: &hs, vms: &vms });
    assert!(first.iter().any(|m| m.vm == 3 && m.reason == MoveReason::Underload(1)), "{first:?}");
    // Five minutes later nothing has moved: the same decision stands.
    let again = p.optimise(&FleetView { now_s: 10_300.0, hosts: &hs, vms: &vms });
    assert!(again.iter().any(|m| m.vm == 3 && m.reason == MoveReason::Underload(1)), "{again:?}");
}
