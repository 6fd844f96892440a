//! The simulator against figures worked out by hand from the model's rules, with scripted
//! policies where a test needs a placement no real policy would choose.

use super::scenario::cloudsim_hosts;
use super::*;
use presage_decide::policy::power::HP_ML110_G5;
use presage_decide::policy::{Migration, MoveReason, PolicySpec};

/// Places VM i on `hosts[i]` whatever the fit, and plays a fixed list of moves:
/// `(update number starting at 1, vm, to, why)`.
struct Scripted {
    hosts: Vec<usize>,
    moves: Vec<(usize, usize, usize, MoveReason)>,
    updates: usize,
}

impl ConsolidationPolicy for Scripted {
    fn name(&self) -> String {
        "scripted".into()
    }
    fn place(&mut self, _: &FleetView<'_>, vm: usize) -> Option<usize> {
        self.hosts.get(vm).copied()
    }
    fn optimise(&mut self, _: &FleetView<'_>) -> Vec<Migration> {
        self.updates += 1;
        self.moves.iter().filter(|(u, ..)| *u == self.updates).map(|&(_, vm, to, reason)| Migration { vm, to, reason }).collect()
    }
}

/// [`Scripted`], every move for overload.
fn scripted(hosts: Vec<usize>, moves: Vec<(usize, usize, usize)>) -> Box<dyn ConsolidationPolicy> {
    let moves = moves.into_iter().map(|(u, vm, to)| (u, vm, to, MoveReason::Overload(0))).collect();
    Box::new(Scripted { hosts, moves, updates: 0 })
}

/// One core of 1000 MIPS with the ML110 G5's power curve, 62.5 MB/s for migrations.
fn small_host() -> HostView {
    HostView::new(1, 1000.0, 4096.0, 62.5, HP_ML110_G5)
}

fn run(s: &Scenario, p: Box<dyn ConsolidationPolicy>) -> RunReport {
    Simulation::new(s, p, PowerMode::FollowsLoad).run(|_, _| {})
}

#[test]
fn energy_of_a_steady_host_is_the_table_power_times_time() {
    // 4 trace points -> updates at 300.1, 600.1 and 900.1 s. The interval before the first
    // update is free (the host was off), then two intervals of 300 s at 50 %: 116 W each.
    let s = Scenario::synthetic(
        "steady",
        ResourceModel::CpuAndMemory,
        vec![small_host()],
        vec![(VmView::unplaced(1, 1000.0, 100.0), vec![0.5; 4])],
    );
    let r = run(&s, scripted(vec![0], vec![]));
    assert_eq!(r.steps, 3);
    let expected_j = 2.0 * 300.0 * 116.0;
    assert!((r.energy_kwh - expected_j / 3.6e6).abs() < 1e-12, "{} kWh", r.energy_kwh);
    assert_eq!(r.migrations, 0);
    assert_eq!(r.slatah_pct, 0.0);
}

#[test]
fn an_oversubscribed_host_violates_for_exactly_the_time_it_is_short() {
    // Two 1000-MIPS VMs on one 1000-MIPS core. VM b drops from 60 % to 20 % at trace point 3.
    // Updates at 300.1 (1200 asked), 600.1 (1199.87 asked: 600 + 600 -> 200 interpolated
    // 0.1 s in), 900.1, 1200.1, 1500.1 (800 asked). Short for 600 s of 1200 s active.
    let a = (VmView::unplaced(1, 1000.0, 100.0), vec![0.6; 6]);
    let b = (VmView::unplaced(1, 1000.0, 100.0), vec![0.6, 0.6, 0.6, 0.2, 0.2, 0.2]);
    let s = Scenario::synthetic("short", ResourceModel::CpuAndMemory, vec![small_host()], vec![a, b]);
    let r = run(&s, scripted(vec![0, 0], vec![]));
    assert!((r.slatah_pct - 50.0).abs() < 1e-9, "SLATAH {}", r.slatah_pct);
    assert_eq!(r.pdm_pct, 0.0);
    // Allocations, rounded down after proportional scaling: 500 + 500 = 1000 MIPS at 300.1,
    // 500 + 499 = 999 at 600.1, then 800. Power: 135 W, 134.98 W, 129 W.
    let j = 300.0 * ((135.0 + 134.98) / 2.0 + (134.98 + 129.0) / 2.0 + 129.0 + 129.0);
    assert!((r.energy_kwh - j / 3.6e6).abs() < 1e-9, "{} kWh vs {}", r.energy_kwh, j / 3.6e6);
}

/// What guests and hosts report under the interference model: latency over the SLO is
/// 1/(1-rho)/5 (the SLO met up to 80 %), the host's contention Erlang's C (the share of requests
/// that wait): rho itself on one core, 2 rho^2/(1+rho) on two; saturation and swapping are pain
/// both sides agree on.
#[test]
fn interference_signals_follow_the_queueing_model() {
    let s = interference_signal(0.5, 1, false, 3, 60.0);
    assert!((s.latency_over_slo - 0.4).abs() < 1e-12 && (s.host_contention - 0.5).abs() < 1e-12, "{s:?}");
    assert_eq!((s.measured_on, s.at_s), (3, 60.0));
    let s = interference_signal(0.5, 2, false, 0, 0.0);
    assert!((s.host_contention - 0.5 / 1.5).abs() < 1e-12, "{s:?}");
    let s = interference_signal(0.9, 2, false, 0, 0.0);
    assert!((s.latency_over_slo - 2.0).abs() < 1e-9 && (s.host_contention - 1.62 / 1.9).abs() < 1e-12, "{s:?}");
    for s in [interference_signal(1.3, 2, false, 0, 0.0), interference_signal(0.2, 2, true, 0, 0.0)] {
        assert!(s.latency_over_slo > 1.0 && s.host_contention == 1.0, "{s:?}");
    }
}

/// The interference model: two VMs on one core, asking 45 % each (90 % of the host: over the
/// 80 % the SLO allows) for the first trace points, then 30 % each (60 %). Updates at 300.1,
/// 600.1, 900.1, 1200.1, 1500.1 s; the demand at each comes from the trace point in progress
/// (interpolated 0.1 s in). The intervals 300.1-600.1 and 600.1-900.1 start at 90 %: 2 VMs x
/// 600 s = 20 VM-minutes; the rest start at or under 80 %.
#[test]
fn applications_violate_their_slo_for_exactly_the_time_their_host_is_over_the_bound() {
    let trace = vec![0.45, 0.45, 0.45, 0.3, 0.3, 0.3];
    let a = (VmView::unplaced(1, 1000.0, 100.0), trace.clone());
    let b = (VmView::unplaced(1, 1000.0, 100.0), trace);
    let s = Scenario::synthetic("hot", ResourceModel::CpuAndMemory, vec![small_host()], vec![a, b]);
    let r = run(&s, scripted(vec![0, 0], vec![]));
    assert!((r.app_slo_violation_minutes - 20.0).abs() < 1e-9, "{} VM-minutes", r.app_slo_violation_minutes);
    // The same VMs on two hosts never pass the bound.
    let a = (VmView::unplaced(1, 1000.0, 100.0), vec![0.45; 6]);
    let b = (VmView::unplaced(1, 1000.0, 100.0), vec![0.45; 6]);
    let s = Scenario::synthetic("apart", ResourceModel::CpuAndMemory, vec![small_host(), small_host()], vec![a, b]);
    assert_eq!(run(&s, scripted(vec![0, 1], vec![])).app_slo_violation_minutes, 0.0);
}

#[test]
fn a_migration_lasts_ram_over_bandwidth_and_costs_a_tenth_of_the_demand() {
    // Two idle-ish hosts, one VM each at 200 MIPS. THR-MMT-0.8 empties the least used host
    // (host 0, the first of two equals) onto the other at the first update.
    let a = (VmView::unplaced(1, 400.0, 625.0), vec![0.5; 4]);
    let b = (VmView::unplaced(1, 400.0, 1250.0), vec![0.5; 4]);
    let s = Scenario::synthetic("one-move", ResourceModel::CloudSimCpu, vec![small_host(), small_host()], vec![a, b]);
    let p = PolicySpec::Classic(presage_decide::policy::classic::Detector::Thr(0.8));
    let r = Simulation::new(&s, p.build(), p.power_mode()).run(|_, _| {});
    assert_eq!(r.migrations, 1);
    let m = &r.migration_log[0];
    assert_eq!((m.vm, m.from, m.to), (0, 0, 1));
    // 625 MB at 62.5 MB/s.
    assert!((m.finished_s - m.started_s - 10.0).abs() < 1e-9);
    assert!((m.started_s - 300.1).abs() < 1e-9);
    // PDM: 10 % of 200 MIPS for 10 s, over 2 VMs x 200 MIPS x 600 s.
    let pdm = 0.1 * 200.0 * 10.0 / (2.0 * 200.0 * 600.0);
    assert!((r.pdm_pct - pdm * 100.0).abs() < 1e-9, "PDM {}", r.pdm_pct);
    // SLATAH: the destination is short (it holds 10 % of the incoming VM) for the 10 s of the
    // copy; host 0 was active 10 s, host 1 600 s.
    assert!((r.slatah_pct - 10.0 / 610.0 * 100.0).abs() < 1e-9, "SLATAH {}", r.slatah_pct);
    assert_eq!(r.ping_pongs, 0);
}

#[test]
fn returning_within_an_hour_is_a_ping_pong_and_later_is_not() {
    let vms: Vec<(VmView, Vec<f64>)> = (0..2).map(|_| (VmView::unplaced(1, 400.0, 625.0), vec![0.3; 30])).collect();
    let hosts = vec![small_host(), small_host(), small_host()];
    let s = Scenario::synthetic("pp", ResourceModel::CpuAndMemory, hosts, vms);
    // VM 0: out at update 1, back at update 4 (15 min later). VM 1: out at 1, back at 20 (95 min).
    let r = run(&s, scripted(vec![0, 0], vec![(1, 0, 1), (4, 0, 0), (1, 1, 2), (20, 1, 0)]));
    assert_eq!(r.migrations, 4);
    assert_eq!(r.ping_pongs, 1);
}

#[test]
fn migrations_are_counted_by_reason_and_a_vm_moved_on_within_an_hour_of_arriving_is_counted() {
    let vms: Vec<(VmView, Vec<f64>)> = (0..2).map(|_| (VmView::unplaced(1, 400.0, 625.0), vec![0.3; 30])).collect();
    let hosts = vec![small_host(), small_host(), small_host()];
    let s = Scenario::synthetic("why", ResourceModel::CpuAndMemory, hosts, vms);
    // VM 0: emptied off host 0 at update 1, relieved off host 1 at update 4 (15 min after it
    // arrived), onto host 2 (not where it came from: no ping-pong). VM 1: drained at update 1,
    // repaired at update 20 (95 min later).
    let moves = vec![
        (1, 0, 1, MoveReason::Underload(0)),
        (4, 0, 2, MoveReason::Overload(1)),
        (1, 1, 2, MoveReason::Drain(0)),
        (20, 1, 1, MoveReason::Repair(2)),
    ];
    let r = run(&s, Box::new(Scripted { hosts: vec![0, 0], moves, updates: 0 }));
    assert_eq!(r.migrations, 4);
    assert_eq!(r.migrations_by_reason, MigrationsByReason { overload: 1, underload: 1, drain: 1, repair: 1 });
    assert_eq!(r.moved_again_within_hour, 1);
    assert_eq!(r.ping_pongs, 0);
}

/// A small deterministic fleet with bursty demand (a linear congruential generator).
fn bursty_fleet(model: ResourceModel) -> Scenario {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let types = presage_traces::CLOUDSIM_VM_TYPES;
    let vms = (0..60)
        .map(|i| {
            let (mips, ram) = types[i % 4];
            let mut level: f64 = next() * 0.5;
            let series = (0..48)
                .map(|_| {
                    level = (level + (next() - 0.5) * 0.3).clamp(0.01, 1.0);
                    (level * 100.0).round() / 100.0
                })
                .collect();
            (VmView::unplaced(1, mips, ram as f64), series)
        })
        .collect();
    Scenario::synthetic("bursty", model, cloudsim_hosts(40), vms)
}

#[test]
fn the_oracle_bound_is_never_above_any_policy() {
    let s = bursty_fleet(ResourceModel::CloudSimCpu);
    for p in PolicySpec::all_classic() {
        let r = Simulation::new(&s, p.build(), p.power_mode()).run(|_, _| {});
        assert!(r.oracle_energy_kwh > 0.0);
        assert!(r.oracle_energy_kwh <= r.energy_kwh, "{}: oracle {} > energy {}", r.policy, r.oracle_energy_kwh, r.energy_kwh);
    }
}

#[test]
fn a_policy_that_never_migrates_costs_what_dvfs_costs() {
    // First fit written out independently of the classic policies, never moving anything.
    struct FirstFitNeverMove;
    impl ConsolidationPolicy for FirstFitNeverMove {
        fn name(&self) -> String {
            "never-move".into()
        }
        fn place(&mut self, f: &FleetView<'_>, vm: usize) -> Option<usize> {
            let v = &f.vms[vm];
            (0..f.hosts.len()).find(|&h| {
                let host = &f.hosts[h];
                let used: f64 = host.vms.iter().map(|&o| f.vms[o].scheduled_mips).sum();
                let mem: f64 = host.vms.iter().map(|&o| f.vms[o].memory_request_mb).sum();
                host.pe_mips >= v.demand_mips && host.total_mips - used >= v.demand_mips && mem + v.memory_request_mb <= host.memory_mb
            })
        }
        fn optimise(&mut self, _: &FleetView<'_>) -> Vec<Migration> {
            Vec::new()
        }
    }
    let s = bursty_fleet(ResourceModel::CloudSimCpu);
    let dvfs = Simulation::new(&s, PolicySpec::Dvfs.build(), PowerMode::FollowsLoad).run(|_, _| {});
    let never = Simulation::new(&s, Box::new(FirstFitNeverMove), PowerMode::FollowsLoad).run(|_, _| {});
    assert!(dvfs.energy_kwh > 0.0);
    assert_eq!(never.energy_kwh, dvfs.energy_kwh);
    assert_eq!(never.slatah_pct, dvfs.slatah_pct);
    assert_eq!(never.migrations, 0);
}

#[test]
fn npa_charges_every_host_full_power_for_the_whole_run() {
    let s = bursty_fleet(ResourceModel::CloudSimCpu);
    let r = Simulation::new(&s, PolicySpec::Npa.build(), PowerMode::AlwaysFull).run(|_, _| {});
    // 20 G4 hosts at 117 W and 20 G5 at 135 W for 47 intervals of 300 s.
    let j = (20.0 * 117.0 + 20.0 * 135.0) * 47.0 * 300.0;
    assert!((r.energy_kwh - j / 3.6e6).abs() < 1e-9);
}

#[test]
fn multi_resource_mode_keeps_memory_within_hosts() {
    // Two hosts with 1000 MB each; three VMs of 600 MB cannot share; a fourth finds no room.
    let hosts = vec![HostView::new(4, 1000.0, 1000.0, 62.5, HP_ML110_G5), HostView::new(4, 1000.0, 1000.0, 62.5, HP_ML110_G5)];
    let vms = (0..3).map(|_| (VmView::unplaced(1, 500.0, 600.0), vec![0.2; 6])).collect();
    let s = Scenario::synthetic("mem", ResourceModel::CpuAndMemory, hosts, vms);
    let r = Simulation::new(&s, PolicySpec::Dvfs.build(), PowerMode::FollowsLoad).run(|_, _| {});
    assert_eq!(r.unplaced_vms, 1);
    assert_eq!(r.slatah_pct, 0.0);
}

#[test]
fn a_host_short_of_memory_is_in_violation() {
    // Two VMs using 600 MB each pinned on a 1000 MB host: CPU is ample, memory is not.
    let vms = (0..2).map(|_| (VmView::unplaced(1, 100.0, 600.0), vec![0.2; 5])).collect();
    let s = Scenario::synthetic("mem-short", ResourceModel::CpuAndMemory, vec![HostView::new(4, 1000.0, 1000.0, 62.5, HP_ML110_G5)], vms);
    let r = run(&s, scripted(vec![0, 0], vec![]));
    assert!((r.slatah_pct - 100.0).abs() < 1e-9, "SLATAH {}", r.slatah_pct);
}

mod bad_input {
    use std::path::Path;

    use super::*;

    fn day_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        dir
    }

    fn message(dir: &Path, order: Option<&Path>) -> String {
        match Scenario::planetlab(dir, order, 10) {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e}"),
        }
    }

    #[test]
    fn a_malformed_line_names_the_file_and_line() {
        let d = day_with(&[("a", "10\n20\n"), ("b", "10\nfoo\n30\n")]);
        let m = message(d.path(), None);
        assert!(m.contains("b") && m.contains(":2"), "{m}");
    }

    #[test]
    fn a_missing_vm_order_entry_names_the_order_file_and_the_trace() {
        let d = day_with(&[("a", "10\n20\n"), ("b", "10\n20\n")]);
        let order = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(order.path(), "vm_id,trace_file,vm_type,vm_mips,vm_pes,vm_ram_mb\n0,a,0,2500,1,870\n").unwrap();
        let m = message(d.path(), Some(order.path()));
        assert!(m.contains("\"b\"") || m.contains(" b"), "{m}");
        assert!(m.contains(&order.path().display().to_string()), "{m}");
    }

    #[test]
    fn an_order_entry_without_its_trace_file_is_named() {
        let d = day_with(&[("a", "10\n20\n")]);
        let order = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(order.path(), "vm_id,trace_file,vm_type,vm_mips,vm_pes,vm_ram_mb\n0,a,0,2500,1,870\n1,zz,0,2500,1,870\n").unwrap();
        let m = message(d.path(), Some(order.path()));
        assert!(m.contains("zz"), "{m}");
    }

    #[test]
    fn a_malformed_reference_csv_names_the_line() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            "policy,day,energy_kwh,migrations,slatah_pct,pdm_pct,slav,esv,host_shutdowns,wall_s\nTHR,1,x,0,0,0,0,0,0,0\n",
        )
        .unwrap();
        let m = reference::load(f.path()).unwrap_err().to_string();
        assert!(m.contains(":2") && m.contains("energy_kwh"), "{m}");
        std::fs::write(f.path(), "policy,day\n").unwrap();
        let m = reference::load(f.path()).unwrap_err().to_string();
        assert!(m.contains(":1") && m.contains("energy_kwh"), "{m}");
    }

    #[test]
    fn an_empty_folder_is_named() {
        let d = tempfile::tempdir().unwrap();
        let m = message(d.path(), None);
        assert!(m.contains(&d.path().display().to_string()), "{m}");
    }
}

/// Places VM i on `hosts[i]`, and offers every host to `log` as a candidate for the last VM.
struct Offering {
    hosts: Vec<usize>,
    log: std::sync::Arc<candidates::CandidateRecorder>,
}

impl ConsolidationPolicy for Offering {
    fn name(&self) -> String {
        "offering".into()
    }
    fn place(&mut self, fleet: &FleetView<'_>, vm: usize) -> Option<usize> {
        use presage_decide::policy::learned::CandidateLog;
        if vm + 1 == fleet.vms.len() {
            for h in 0..fleet.hosts.len() {
                let mut row = [0.0; presage_decide::policy::learned::N_FEATURES];
                row[0] = h as f32;
                self.log.record(fleet.now_s, &[vm], h, &row);
            }
        }
        self.hosts.get(vm).copied()
    }
    fn optimise(&mut self, _: &FleetView<'_>) -> Vec<Migration> {
        Vec::new()
    }
}

#[test]
fn a_recorded_candidate_is_labelled_short_when_its_vms_traces_exceed_the_hosts_cpu_or_memory_within_the_horizon() {
    let vm = |ram_mb: f64| VmView::unplaced(1, 1000.0, ram_mb);
    // Host 0's VM climbs to 90 % at step 3; host 1's stays at 10 % but holds 3000 MB of 4096.
    let s = Scenario::synthetic(
        "labels",
        ResourceModel::CpuAndMemory,
        vec![small_host(), small_host(), small_host()],
        vec![(vm(100.0), vec![0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9]), (vm(3000.0), vec![0.1; 8]), (vm(2000.0), vec![0.3; 8])],
    );
    let log = std::sync::Arc::new(candidates::CandidateRecorder::new(3, 1));
    let policy = Box::new(Offering { hosts: vec![0, 1, 2], log: log.clone() });
    Simulation::new(&s, policy, PowerMode::FollowsLoad).with_candidate_labels(Some(log.clone())).run(|_, _| {});
    let rows = log.rows();
    assert_eq!(rows.iter().map(|r| r.host).collect::<Vec<_>>(), [0, 1, 2], "one row per offered host");
    assert!(rows.iter().all(|r| r.step == 0 && r.vm == 2));
    // Host 0: 0.9 + 0.3 of one core at step 3, within the 3 steps ahead.
    assert!(rows[0].cpu_short && !rows[0].memory_short && (rows[0].worst_cpu - 1.2).abs() < 1e-9, "{:?}", rows[0]);
    // Host 1: CPU at 40 %, but 3000 + 2000 MB of 4096.
    assert!(!rows[1].cpu_short && rows[1].memory_short && (rows[1].worst_cpu - 0.4).abs() < 1e-9, "{:?}", rows[1]);
    assert!(!rows[2].short() && (rows[2].worst_cpu - 0.3).abs() < 1e-9, "{:?}", rows[2]);
    assert_eq!(rows[1].features[0], 1.0, "the row the policy gave is kept");

    let mut csv = Vec::new();
    log.write_csv(&mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("step,vm,host,risk_after,"));
    assert!(lines.next().unwrap().ends_with(",1.20000,1,0"));
}

#[test]
fn a_candidate_without_a_whole_horizon_left_in_the_trace_is_not_labelled() {
    let s = Scenario::synthetic(
        "short-trace",
        ResourceModel::CpuAndMemory,
        vec![small_host(), small_host()],
        vec![(VmView::unplaced(1, 1000.0, 100.0), vec![0.5; 3]), (VmView::unplaced(1, 1000.0, 100.0), vec![0.5; 3])],
    );
    let log = std::sync::Arc::new(candidates::CandidateRecorder::new(6, 1));
    let policy = Box::new(Offering { hosts: vec![0, 1], log: log.clone() });
    Simulation::new(&s, policy, PowerMode::FollowsLoad).with_candidate_labels(Some(log.clone())).run(|_, _| {});
    assert!(log.rows().is_empty(), "3 steps of trace cannot label 6 steps ahead");
}

#[test]
fn where_memory_is_counted_by_use_presage_sees_each_vms_memory_forecast_in_mb_of_what_it_was_given() {
    let vm = || VmView::unplaced(1, 1000.0, 2048.0);
    let s = Scenario::synthetic(
        "memory",
        ResourceModel::CpuAndMemory,
        vec![small_host(), small_host()],
        vec![(vm(), vec![0.2; 60]), (vm(), vec![0.2; 60])],
    );
    let presage = || PolicySpec::Presage.build();
    // The agents' baseline forecaster: half of its memory in use for 40 steps, then three quarters.
    let mut sim = Simulation::new(&s, presage(), PowerMode::FollowsLoad);
    assert!(sim.memory_forecaster.is_some());
    sim.vms[0].host = Some(0);
    for step in 0..48u64 {
        let used = if step < 40 { 0.5 } else { 0.75 };
        sim.memory_forecaster.as_mut().unwrap().observe(&0, step, used);
        sim.memory_series[0].push(used);
    }
    sim.forecast(47);
    let p90 = sim.vms[0].memory_p90_mb.expect("a forecast for the hosted VM with a history");
    assert!(p90.iter().all(|&mb| mb > 0.5 * 2048.0 && mb <= 2048.0), "{p90:?}");
    assert!(sim.vms[1].memory_p90_mb.is_none(), "no history, no forecast");

    let r = Simulation::new(&s, presage(), PowerMode::FollowsLoad).run(|_, _| {});
    assert!(r.memory_forecaster.is_some(), "the report names the memory forecaster");
    let r = Simulation::new(&s, presage(), PowerMode::FollowsLoad).without_memory_forecasts().run(|_, _| {});
    assert!(r.memory_forecaster.is_none());
    // CloudSim's model asks for memory only at creation: nothing to forecast.
    let cloudsim = Scenario::synthetic("cpu", ResourceModel::CloudSimCpu, vec![small_host()], vec![(vm(), vec![0.2; 10])]);
    assert!(Simulation::new(&cloudsim, presage(), PowerMode::FollowsLoad).memory_forecaster.is_none());
}
