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
