//! Fidelity: every classic policy on every public PlanetLab day, replayed by presage's
//! simulator, against the figures CloudSim 3 itself produced (`planetlab-public-days.csv`).

use presage_decide::policy::PolicySpec;
use presage_simulator::reference;
use presage_tests::{shared_data, shared_reference};
use presagectl::simulate::{SimulateArgs, simulate};

const DAYS: [&str; 5] = ["20110303", "20110306", "20110309", "20110322", "20110325"];

#[test]
fn the_classic_policies_reproduce_cloudsims_figures_on_the_five_public_days() {
    let data = shared_data();
    let reference_dir = shared_reference().join("cloudsim");
    let rows = reference::load(&reference_dir.join("planetlab-public-days.csv")).expect("CloudSim's figures");
    let args = SimulateArgs::new(DAYS.iter().map(|d| data.join("planetlab").join(d)).collect(), Some(reference_dir.join("vm_order")));
    let policies = PolicySpec::all_classic();
    let runs = simulate(&args, &policies, &indicatif::ProgressBar::hidden()).expect("simulation");
    assert_eq!(runs.len(), DAYS.len() * policies.len());
    let table = reference::compare(&runs, &rows);
    assert_eq!(table.len(), runs.len(), "every run has a CloudSim row");
    for c in &table {
        // The acceptance tolerances...
        assert!(c.within_tolerance, "{} {}: outside tolerance: {c:?}", c.policy, c.day);
        // ...and in fact the same model: migrations equal and energy equal to CloudSim's 5 decimals.
        assert_eq!(c.migrations.ours, c.migrations.cloudsim, "{} {}", c.policy, c.day);
        assert!(
            (c.energy_kwh.ratio - 1.0).abs() < 1e-5,
            "{} {}: energy {} vs {}",
            c.policy,
            c.day,
            c.energy_kwh.ours,
            c.energy_kwh.cloudsim
        );
    }
    for r in &runs {
        assert!(r.oracle_energy_kwh > 0.0 && r.oracle_energy_kwh <= r.energy_kwh, "{} {}: oracle above the policy", r.policy, r.day);
        assert_eq!(r.unplaced_vms, 0, "{} {}", r.policy, r.day);
    }
    // The classic policies move VMs back and forth within the hour: the metric sees it.
    assert!(runs.iter().filter(|r| r.migrations > 0).all(|r| r.ping_pongs > 0));
}

/// presage's policy on the same five days, with the agents' forecast model, against the best
/// classic policy of each day (CloudSim's figures, which the test above shows we reproduce).
#[test]
fn presage_beats_the_best_classic_policy_on_every_public_day() {
    let data = shared_data();
    let reference_dir = shared_reference().join("cloudsim");
    let rows = reference::load(&reference_dir.join("planetlab-public-days.csv")).expect("CloudSim's figures");
    let mut args = SimulateArgs::new(DAYS.iter().map(|d| data.join("planetlab").join(d)).collect(), Some(reference_dir.join("vm_order")));
    args.forecast_model = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"));
    let runs = simulate(&args, &[PolicySpec::Presage], &indicatif::ProgressBar::hidden()).expect("simulation");
    for r in &runs {
        assert_eq!(r.forecaster.as_deref(), Some("cpu-quantiles-v2"), "{}: the model was not used", r.day);
        let best = rows
            .iter()
            .filter(|c| c.day == r.day && c.migrations > 0.0)
            .min_by(|a, b| a.esv.total_cmp(&b.esv))
            .unwrap_or_else(|| panic!("no CloudSim row for {}", r.day));
        let msg = format!("{}: presage {r:?} vs {} {best:?}", r.day, best.policy);
        assert!(r.esv <= 0.25 * best.esv, "ESV: {msg}");
        assert!(r.migrations as f64 <= 0.1 * best.migrations, "migrations: {msg}");
        assert!(r.energy_kwh <= 1.15 * r.oracle_energy_kwh, "energy over the oracle: {msg}");
        assert_eq!(r.ping_pongs, 0, "ping-pong: {msg}");
        assert_eq!(r.unplaced_vms, 0, "{msg}");
    }
}

/// Application-aware placement (issue 17's acceptance): every VM runs presage-guest, so the
/// interference model's latency and the host's contention reach the policy. On every public day
/// presage keeps applications within their SLO for at least 30 % more VM-minutes than presage
/// without application awareness, with no more than 10 % more migrations and no ping-pong.
#[test]
fn application_awareness_cuts_slo_violations_without_more_migrations() {
    let data = shared_data();
    let reference_dir = shared_reference().join("cloudsim");
    let mut args = SimulateArgs::new(DAYS.iter().map(|d| data.join("planetlab").join(d)).collect(), Some(reference_dir.join("vm_order")));
    args.forecast_model = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"));
    args.guest_reports = true;
    let runs = simulate(&args, &[PolicySpec::Presage, PolicySpec::PresageNoApp], &indicatif::ProgressBar::hidden()).expect("simulation");
    for day in DAYS {
        let of = |name: &str| runs.iter().find(|r| r.day == day && r.policy == name).unwrap_or_else(|| panic!("no {name} run for {day}"));
        let (p, n) = (of("presage"), of("presage-noapp"));
        let msg = format!(
            "{day}: presage {} VM-min, {} migrations; presage-noapp {} VM-min, {} migrations",
            p.app_slo_violation_minutes, p.migrations, n.app_slo_violation_minutes, n.migrations
        );
        assert!(n.app_slo_violation_minutes > 0.0, "the model charged nothing: {msg}");
        assert!(p.app_slo_violation_minutes <= 0.7 * n.app_slo_violation_minutes, "SLO: {msg}");
        assert!(p.migrations as f64 <= 1.1 * n.migrations as f64, "migrations: {msg}");
        assert_eq!(p.ping_pongs, 0, "ping-pong: {msg}");
    }
}

/// The risk knob (issue 20): swept over one public day, presage uses less energy and leaves more
/// demand unserved as its appetite grows, with no ping-pong at any setting; every report says
/// its setting, and the other policies run once.
#[test]
fn the_risk_knob_trades_energy_for_unserved_demand_along_one_curve() {
    let data = shared_data();
    let reference_dir = shared_reference().join("cloudsim");
    let mut args = SimulateArgs::new(vec![data.join("planetlab").join(DAYS[0])], Some(reference_dir.join("vm_order")));
    args.forecast_model = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"));
    args.sweep = Some("risk=0,0.5,1".into());
    let runs = simulate(
        &args,
        &[PolicySpec::Presage, PolicySpec::Classic(presage_decide::policy::classic::Detector::Thr(0.8))],
        &indicatif::ProgressBar::hidden(),
    )
    .expect("simulation");
    let curve: Vec<_> = runs.iter().filter(|r| r.policy == "presage").collect();
    assert_eq!(curve.iter().map(|r| r.risk).collect::<Vec<_>>(), [Some(0.0), Some(0.5), Some(1.0)]);
    assert_eq!(runs.iter().filter(|r| r.risk.is_none()).count(), 1, "THR runs once");
    for pair in curve.windows(2) {
        let (cool, hot) = (pair[0], pair[1]);
        assert!(
            hot.energy_kwh < cool.energy_kwh,
            "risk {:?} -> {:?}: energy {} -> {}",
            cool.risk,
            hot.risk,
            cool.energy_kwh,
            hot.energy_kwh
        );
        assert!(
            hot.overall_sla_violation_pct > cool.overall_sla_violation_pct,
            "risk {:?} -> {:?}: unserved {} -> {}",
            cool.risk,
            hot.risk,
            cool.overall_sla_violation_pct,
            hot.overall_sla_violation_pct
        );
    }
    assert!(curve.iter().all(|r| r.ping_pongs == 0), "{curve:?}");
}
