//! The ecosystem scenarios in `../shared/data/ecosystems` (DeathStarBench's applications): every
//! file loads, its declarations are admitted, and the figures follow the placement.

use presage_decide::ecosystem::graph::MatchOptions;
use presage_decide::ecosystem::registration::{Cluster, Room, Size, admit};
use presage_simulator::ecosystem::EcosystemScenario;
use presage_tests::shared_data;

#[test]
fn every_shared_scenario_loads_is_admitted_and_is_served_best_one_copy_per_host() {
    let dir = shared_data().join("ecosystems");
    let mut files: Vec<_> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    files.sort();
    assert!(files.len() >= 2, "no scenarios in {}", dir.display());
    for path in files {
        let s = EcosystemScenario::load(&path).unwrap();
        // Counted from the file itself: copies x services per application.
        let raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let expected: u64 = raw["applications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["copies"].as_u64().unwrap() * a["services"].as_array().unwrap().len() as u64)
            .sum();
        assert_eq!(s.declarations.len() as u64, expected, "{}", path.display());

        let names: std::collections::HashSet<&str> = s.declarations.iter().map(|d| d.vm_name.as_str()).collect();
        let big = Size { cpu: 1e6, memory: 1e7 };
        let cluster = Cluster {
            knows: &|n: &str| names.contains(n),
            size_of: &|_| Some(Size { cpu: 1000.0, memory: 1024.0 }),
            room: Room { host: big, rack: big, zone: big },
            latency: &s.latency,
        };
        let graph = admit(&s.declarations, MatchOptions::default(), &cluster).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(!graph.edges().is_empty());

        // Each application copy on a host of its own: no call leaves a host, every required
        // dependency is met (a host meets any latency a level can).
        let app_of: Vec<String> = s.declarations.iter().map(|d| d.application.clone().unwrap()).collect();
        let mut apps: Vec<&String> = app_of.iter().collect();
        apps.dedup();
        let hosts = apps.len();
        let together = |v: usize| apps.iter().position(|a| **a == app_of[v]);
        let f = s.figures(&graph, hosts, &together);
        assert_eq!(f.cross_host_calls_pct, 0.0, "{}", path.display());
        assert_eq!(f.vms_violating_required, 0, "{}", path.display());
        assert!((f.call_latency_ms_mean - s.latency.host).abs() < 1e-9);

        // Every VM on a host of its own, a zone apart from the next: every call crosses hosts
        // and required dependencies below the zone's latency are violated.
        let per_zone = s.hosts_per_rack * s.racks_per_zone;
        let spread = |v: usize| Some(v * per_zone);
        let f = s.figures(&graph, s.declarations.len() * per_zone, &spread);
        assert_eq!(f.cross_host_calls_pct, 100.0, "{}", path.display());
        assert!(f.vms_violating_required > 0 && f.dependency_score_mean < 1.0, "{}: {f:?}", path.display());
    }
}

const DAYS: [&str; 5] = ["20110303", "20110306", "20110309", "20110322", "20110325"];

/// The dependency issue's acceptance: on every public PlanetLab day and every scenario without
/// failures, presage with the ecosystem against presage without the dependency scorer, in the
/// same run: no required dependency unmet after the first hour, at most half the cross-host call
/// traffic, energy within 5 % and ESV within 10 % of presage-nodeps, no ping-pong.
#[test]
fn presage_keeps_required_dependencies_and_local_calls_at_little_energy_on_every_public_day() {
    use presage_decide::policy::PolicySpec;
    use presagectl::simulate::{SimulateArgs, simulate};
    let data = shared_data();
    let order = presage_tests::shared_reference().join("cloudsim").join("vm_order");
    for scenario in ["social-network.json", "hotel-reservation.json"] {
        let mut args = SimulateArgs::new(DAYS.iter().map(|d| data.join("planetlab").join(d)).collect(), Some(order.clone()));
        args.forecast_model = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"));
        args.ecosystem = Some(data.join("ecosystems").join(scenario));
        let runs =
            simulate(&args, &[PolicySpec::Presage, PolicySpec::PresageNoDeps], &indicatif::ProgressBar::hidden()).expect("simulation");
        assert_eq!(runs.len(), 2 * DAYS.len());
        for pair in runs.chunks(2) {
            let (p, n) = (&pair[0], &pair[1]);
            assert_eq!((p.policy.as_str(), n.policy.as_str()), ("presage", "presage-nodeps"));
            let (pe, ne) = (p.ecosystem.as_ref().expect("figures"), n.ecosystem.as_ref().expect("figures"));
            let msg = format!("{scenario} {}: presage {p:?}\nnodeps {n:?}", p.day);
            assert_eq!(pe.required_violation_vm_hours, 0.0, "{msg}");
            assert_eq!(pe.noncompliant_vms_end, 0, "{msg}");
            assert!(ne.required_violation_vm_hours > 0.0, "without the scorer requirements break: {msg}");
            assert!(pe.cross_host_calls_pct <= 0.5 * ne.cross_host_calls_pct, "cross-host calls: {msg}");
            assert!(p.energy_kwh <= 1.05 * n.energy_kwh, "energy: {msg}");
            assert!(p.esv <= 1.1 * n.esv, "ESV: {msg}");
            assert_eq!(p.ping_pongs, 0, "ping-pong: {msg}");
            assert_eq!(p.unplaced_vms, 0, "{msg}");
            // The feedback loop judged the repair moves (those not cut off by the run's end),
            // and most of them made the calls around them faster beyond the noise floor.
            assert!(pe.feedback_observations <= pe.repair_moves && pe.feedback_observations + 2 >= pe.repair_moves, "{msg}");
            assert!(pe.feedback_better > 2 * pe.feedback_worse, "repairs should mostly pay: {msg}");
            assert!(
                pe.learned.values().all(|t| (0.5..=2.0).contains(&t.weight) && t.better + t.worse + t.within_noise == t.observations),
                "{msg}"
            );
            assert_eq!(ne.feedback_observations, 0, "presage-nodeps makes no repairs: {msg}");
        }
    }
}

/// The host-failure scenario: host 3 fails at noon; its VMs restart elsewhere, and within 5
/// policy passes no VM has a required dependency unmet, on every public day (on all but at most
/// one of them the host still holds VMs at noon).
#[test]
fn after_a_host_fails_every_vm_is_compliant_again_within_five_passes_on_every_public_day() {
    use presage_decide::policy::PolicySpec;
    use presagectl::simulate::{SimulateArgs, simulate};
    let data = shared_data();
    let order = presage_tests::shared_reference().join("cloudsim").join("vm_order");
    let mut args = SimulateArgs::new(DAYS.iter().map(|d| data.join("planetlab").join(d)).collect(), Some(order));
    args.forecast_model = Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"));
    args.ecosystem = Some(data.join("ecosystems").join("social-network-host-failure.json"));
    let runs = simulate(&args, &[PolicySpec::Presage], &indicatif::ProgressBar::hidden()).expect("simulation");
    let mut exercised = 0;
    for r in &runs {
        let e = r.ecosystem.as_ref().expect("figures");
        assert_eq!(e.host_failures.len(), 1, "{}: {e:?}", r.day);
        let f = &e.host_failures[0];
        assert_eq!(f.host, 3);
        assert_eq!(f.vms_lost, 0, "{}: {f:?}", r.day);
        // The scenario fails host 3 at noon: on a day the policy had emptied it by then there is
        // nothing to restart, and every VM must simply stay compliant.
        exercised += usize::from(f.vms_restarted > 0);
        assert_eq!(f.noncompliant_before, 0, "{}: {f:?}", r.day);
        assert!(f.recovery_passes.is_some_and(|p| p <= 5), "{}: {f:?}", r.day);
        assert_eq!(e.noncompliant_vms_end, 0, "{}: {e:?}", r.day);
    }
    assert!(exercised + 1 >= runs.len(), "the failed host held VMs on only {exercised} of {} days", runs.len());
}
