//! The REST API end to end: a real coordinator and two simulated agents on loopback, HTTP/1.1
//! over the cluster's mutual TLS, with a viewer's, an operator's and an admin's certificate.

use std::time::Duration;

use presage_agent::config::TopologyConfig;
use presage_protocol::rest_client::{Answer, RestClient};
use presage_protocol::tls::Role;
use presage_tests::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn rest(pki: &Pki, url: &str, role: Role, name: &str) -> RestClient {
    let files = pki.issue(role, name);
    RestClient::new(url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap()
}

fn code(a: &Answer) -> &str {
    a.body["code"].as_str().unwrap_or("")
}

/// Stops `coord` and starts it again on the same port with `cfg` (the same store).
async fn restart(coord: RunningCoordinator, cfg: &presage_coordinator::config::CoordinatorConfig) -> RunningCoordinator {
    let port = coord.port;
    coord.stop().await;
    let mut again = cfg.clone();
    again.listen = ([127, 0, 0, 1], port).into();
    RunningCoordinator::start_config(again).await
}

/// The VM ids `host` reports.
async fn vms_on(url: &str, pki: &Pki, host: &str) -> Vec<String> {
    let op = client(url, &pki.issue(Role::Viewer, "lister")).await.unwrap();
    let p = eventually("the host reports its VMs", WAIT, || {
        let op = op.clone();
        async move { placement(op).await.filter(|p| p.iter().filter(|(_, h)| h == host).count() >= 2) }
    })
    .await;
    p.into_iter().filter(|(_, h)| h == host).map(|(v, _)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_registers_dependencies_scores_them_and_moves_by_role_over_mutual_tls() {
    let day = shared_data().join("planetlab/20110303");
    let pki = Pki::new();
    let store = tempfile::tempdir().unwrap();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), Default::default());
    cfg.data_dir = Some(store.path().to_path_buf());
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    let data = tempfile::tempdir().unwrap();
    // Two hosts in one zone, different racks: 1.5 ms apart.
    let agent = |host: &str, rack: &str, shard: usize| {
        let mut a = simulated_agent(&pki, host, &coord.url, &data.path().join(host), &day, (shard, 2), 2);
        a.topology = TopologyConfig { zone: "z1".into(), rack: rack.into() };
        RunningAgent::start(a)
    };
    let (a, b) = (agent("hv-a", "r1", 0), agent("hv-b", "r2", 1));
    let (on_a, on_b) = (vms_on(&coord.url, &pki, "hv-a").await, vms_on(&coord.url, &pki, "hv-b").await);
    let (web, db) = (on_a[0].clone(), on_b[0].clone());

    let viewer = rest(&pki, &coord.url, Role::Viewer, "vera");
    let operator = rest(&pki, &coord.url, Role::Operator, "otto");
    let admin = rest(&pki, &coord.url, Role::Admin, "ada");

    let declarations = json!([
        {"vm_name": web, "application": "shop", "profile": {"type": "web"},
         "dependencies": {"required": [{"type": "database", "version": "PostgreSQL 14", "network_latency_requirement": " < 1ms"}]}},
        {"vm_name": db, "application": "shop", "profile": {"type": "database", "version": "PostgreSQL 14"}}
    ]);
    let body = serde_json::to_vec(&declarations).unwrap();

    // Only admins register declarations.
    for (who, c) in [("viewer", &viewer), ("operator", &operator)] {
        let r = c.post("/v1/dependencies", &body).await.unwrap();
        assert_eq!((r.status, code(&r)), (403, "forbidden"), "{who}: {r:?}");
    }
    // Bad JSON, an unknown VM and a bad field are refused with what is wrong.
    let r = admin.post("/v1/dependencies", b"{\"vm_name\": ").await.unwrap();
    assert_eq!((r.status, code(&r)), (400, "bad_json"), "{r:?}");
    // A declaration of a VM that does not run names nothing: 404.
    let r = admin.post("/v1/dependencies", br#"{"vm_name": "no-such-vm", "profile": {"type": "web"}}"#).await.unwrap();
    assert_eq!((r.status, code(&r)), (404, "refused"), "{r:?}");
    assert_eq!(r.body["problems"][0]["vm"], "no-such-vm", "{r:?}");
    let bad_latency = json!({"vm_name": web, "dependencies": {"required": [{"type": "database", "network_latency_requirement": "fast"}]}});
    let r = admin.post("/v1/dependencies", &serde_json::to_vec(&bad_latency).unwrap()).await.unwrap();
    assert_eq!((r.status, code(&r)), (400, "refused"), "{r:?}");
    assert!(r.body["field"].as_str().unwrap().contains("network_latency_requirement"), "{r:?}");
    let r = admin.post("/v1/dependencies", br#"{"vm_name": "x", "colour": "blue"}"#).await.unwrap();
    assert_eq!((r.status, code(&r)), (400, "bad_declaration"), "{r:?}");
    // Nothing refused was kept.
    let r = viewer.get(&format!("/v1/vms/{web}/dependencies")).await.unwrap();
    assert_eq!(r.status, 404, "{r:?}");

    let r = admin.post("/v1/dependencies", &body).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["total"], 2);

    // The web VM's database is a zone away (1.5 ms > 1 ms): not compliant, blocked by the
    // database; the edge counts 0.9 x 1 / 1.5 = 0.6. The database needs nothing.
    let r = viewer.get("/v1/ecosystem").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let node = |r: &Answer, vm: &str| r.body["nodes"].as_array().unwrap().iter().find(|n| n["vm"] == vm).cloned().unwrap();
    let w = node(&r, &web);
    assert_eq!(w["status"], "NonCompliant", "{w}");
    assert_eq!(w["host"], "hv-a");
    assert_eq!(w["blockers"], json!([db]), "{w}");
    assert!(w["reason"].as_str().unwrap().contains("database"), "{w}");
    assert!((w["score"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{w}");
    assert_eq!(node(&r, &db)["status"], "Compliant");
    let edges = r.body["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!((edges[0]["from"].as_str().unwrap(), edges[0]["to"].as_str().unwrap()), (web.as_str(), db.as_str()));
    assert!((edges[0]["satisfaction"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{edges:?}");
    assert_eq!(edges[0]["strength"], "required");
    // Filters.
    let r = viewer.get("/v1/ecosystem?app=other").await.unwrap();
    assert!(r.body["nodes"].as_array().unwrap().is_empty(), "{r:?}");
    let r = viewer.get(&format!("/v1/ecosystem?vm={db}")).await.unwrap();
    assert_eq!(r.body["nodes"].as_array().unwrap().len(), 1, "{r:?}");
    let r = viewer.get("/v1/ecosystem?colour=blue").await.unwrap();
    assert_eq!((r.status, code(&r)), (400, "bad_query"), "{r:?}");
    let r = viewer.get(&format!("/v1/vms/{web}/dependencies")).await.unwrap();
    assert_eq!(r.body["declaration"]["dependencies"]["required"][0]["type"], "database", "{r:?}");

    // The same over gRPC, as presagectl calls it: only admins register; everyone reads.
    let mut grpc_operator = client(&coord.url, &pki.issue(Role::Operator, "otto")).await.unwrap();
    let err = grpc_operator
        .set_dependencies(presage_protocol::pb::SetDependenciesRequest { declarations_json: String::from_utf8(body.clone()).unwrap() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let mut grpc_admin = client(&coord.url, &pki.issue(Role::Admin, "ada")).await.unwrap();
    let err = grpc_admin
        .set_dependencies(presage_protocol::pb::SetDependenciesRequest { declarations_json: "[{\"vm_name\": 3}]".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("$[0]"), "{err}");
    let eco = grpc_operator.get_ecosystem(presage_protocol::pb::GetEcosystemRequest::default()).await.unwrap().into_inner();
    let statuses: Vec<(String, String)> = eco.nodes.iter().map(|n| (n.vm.clone(), n.status.clone())).collect();
    assert!(
        statuses.contains(&(web.clone(), "NonCompliant".into())) && statuses.contains(&(db.clone(), "Compliant".into())),
        "{statuses:?}"
    );
    let dot = presagectl::dependencies::render_ecosystem(&eco, &presagectl::view::OutputFormat::Dot).unwrap();
    assert!(dot.contains(&format!("\"{web}\" -> \"{db}\"")) && dot.contains("fillcolor=salmon"), "{dot}");
    let shown =
        grpc_operator.get_vm_dependencies(presage_protocol::pb::GetVmDependenciesRequest { vm: web.clone() }).await.unwrap().into_inner();
    assert!(shown.declaration_json.contains("PostgreSQL 14") && shown.edges.len() == 1, "{shown:?}");

    // A viewer may not move anything (REST and gRPC); an operator may.
    let to_a = serde_json::to_vec(&json!({"vm": db, "to": "hv-a"})).unwrap();
    let r = viewer.post("/v1/migrate", &to_a).await.unwrap();
    assert_eq!((r.status, code(&r)), (403, "forbidden"), "{r:?}");
    let mut grpc_viewer = client(&coord.url, &pki.issue(Role::Viewer, "vera")).await.unwrap();
    let err = grpc_viewer.move_vm(presage_protocol::pb::MoveVmRequest { vm_id: db.clone(), to_host: "hv-a".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let r = operator.post("/v1/migrate", br#"{"vm": 1}"#).await.unwrap();
    assert_eq!((r.status, code(&r)), (400, "bad_json"), "{r:?}");
    let r = operator.post("/v1/migrate", &to_a).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["moves"][0]["vm_id"], db.as_str(), "{r:?}");
    assert_eq!(r.body["moves"][0]["to_host"], "hv-a", "{r:?}");
    // Once the database runs beside it, the web VM is compliant...
    eventually("the web VM is compliant", WAIT, || {
        let viewer = viewer.clone();
        let web = web.clone();
        async move {
            let r = viewer.get(&format!("/v1/ecosystem?vm={web}")).await.ok()?;
            (r.body["nodes"][0]["status"] == "Compliant").then_some(())
        }
    })
    .await;
    // ...and moving it away again is refused for what it would break.
    let r = eventually("the move has finished", WAIT, || {
        let operator = operator.clone();
        let back = serde_json::to_vec(&json!({"vm": db, "to": "hv-b"})).unwrap();
        async move {
            let r = operator.post("/v1/migrate", &back).await.ok()?;
            (code(&r) != "in_flight").then_some(r)
        }
    })
    .await;
    assert_eq!((r.status, code(&r)), (409, "breaks_required"), "{r:?}");
    assert!(r.body["reason"].as_str().unwrap().contains(&web), "{r:?}");

    let r = viewer.get("/v1/openapi.json").await.unwrap();
    assert_eq!(r.body["openapi"], "3.1.0");
    for path in
        ["/v1/dependencies", "/v1/ecosystem", "/v1/vms/{vm_id}/dependencies", "/v1/migrate", "/v1/status", "/v1/hosts/{host_id}/drain"]
    {
        assert!(r.body["paths"][path].is_object(), "{path} is not described");
    }

    // The declarations survive a coordinator restart (same store).
    a.stop().await;
    b.stop().await;
    let coord = restart(coord, &cfg).await;
    let viewer = rest(&pki, &coord.url, Role::Viewer, "vera2");
    let r = viewer.get(&format!("/v1/vms/{web}/dependencies")).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["declaration"]["vm_name"], web.as_str());
    let r = viewer.get("/v1/ecosystem").await.unwrap();
    assert_eq!(r.body["edges"].as_array().unwrap().len(), 1, "the graph is rebuilt from the store: {r:?}");
    coord.stop().await;
}

/// The dependency feedback loop on a live cluster: the coordinator (automatic mode) repairs a
/// web VM whose database is a zone away (1.5 ms against a required 1 ms); the repair move is
/// judged before and after (modelled call latency 1.5 ms, then 0.05 ms on one host: far beyond
/// the 7 % noise floor), the database type's weight goes up by one step, and what is learned is
/// served over REST and gRPC and kept across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_move_is_judged_before_and_after_and_what_is_learned_survives_a_restart() {
    use presage_coordinator::config::{PolicyConfig, PolicyMode};
    // Four VMs at a steady 20 %: nothing is overloaded; consolidation is off (see below).
    let steady: Vec<u32> = vec![20; 288];
    let trace = synthetic_trace(&[("vm-1", &steady), ("vm-2", &steady), ("vm-3", &steady), ("vm-4", &steady)]);
    let pki = Pki::new();
    let store = tempfile::tempdir().unwrap();
    let mut policy =
        PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), mode: PolicyMode::Automatic, ..Default::default() };
    // No host is ever emptied for energy: the only reason to move is the repair.
    policy.presage.underload_utilisation = 0.0;
    policy.presage.min_residence_s = 0.0;
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy);
    cfg.data_dir = Some(store.path().to_path_buf());
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let agent = |host: &str, rack: &str, shard: usize| {
        let mut a = simulated_agent(&pki, host, &coord.url, &data.path().join(host), trace.path(), (shard, 2), 0);
        a.topology = TopologyConfig { zone: "z1".into(), rack: rack.into() };
        RunningAgent::start(a)
    };
    // hv-a replays vm-1 and vm-3, hv-b vm-2 and vm-4.
    let (a, b) = (agent("hv-a", "r1", 0), agent("hv-b", "r2", 1));
    vms_on(&coord.url, &pki, "hv-a").await;
    vms_on(&coord.url, &pki, "hv-b").await;
    let viewer = rest(&pki, &coord.url, Role::Viewer, "vera");
    let admin = rest(&pki, &coord.url, Role::Admin, "ada");
    let r = viewer.get("/v1/ecosystem/learned").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["types"].as_object().unwrap().is_empty(), "nothing is learned before any repair: {r:?}");

    let declarations = json!([
        {"vm_name": "vm-1", "application": "shop", "profile": {"type": "web"},
         "dependencies": {"required": [{"type": "database", "network_latency_requirement": "< 1ms"}]}},
        {"vm_name": "vm-2", "application": "shop", "profile": {"type": "database"}}
    ]);
    let r = admin.post("/v1/dependencies", &serde_json::to_vec(&declarations).unwrap()).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    let learned = eventually("a repair move judged", Duration::from_secs(60), || {
        let viewer = viewer.clone();
        async move {
            let r = viewer.get("/v1/ecosystem/learned").await.ok()?;
            (r.body["recent"].as_array()?.len() == 1).then_some(r.body)
        }
    })
    .await;
    let o = &learned["recent"][0];
    assert_eq!((o["types"].clone(), o["verdict"].as_str()), (json!(["database"]), Some("better")), "{learned}");
    assert!(
        (o["before"]["latency_ms"].as_f64().unwrap() - 1.5).abs() < 1e-9
            && (o["after"]["latency_ms"].as_f64().unwrap() - 0.05).abs() < 1e-9,
        "{learned}"
    );
    let database = &learned["types"]["database"];
    assert_eq!((database["observations"].as_u64(), database["better"].as_u64()), (Some(1), Some(1)), "{learned}");
    assert!((database["weight"].as_f64().unwrap() - 1.1).abs() < 1e-9, "{learned}");
    // The repaired VM is compliant, and the edge weighs its type's learned weight: 3 x 1.1.
    // (once the agents have reported the VM where it went).
    let r = eventually("the repaired VM is compliant", WAIT, || {
        let viewer = viewer.clone();
        async move {
            let r = viewer.get("/v1/ecosystem?vm=vm-1").await.ok()?;
            (r.body["nodes"][0]["status"] == "Compliant").then_some(r)
        }
    })
    .await;
    assert!((r.body["edges"][0]["weight"].as_f64().unwrap() - 3.3).abs() < 1e-6, "{r:?}");
    // presagectl reads the same over gRPC.
    let mut grpc = client(&coord.url, &pki.issue(Role::Viewer, "vera")).await.unwrap();
    let g = grpc.get_dependency_learning(presage_protocol::pb::GetDependencyLearningRequest {}).await.unwrap().into_inner();
    assert_eq!((g.types.len(), g.types[0].r#type.as_str()), (1, "database"), "{g:?}");
    assert!((g.latency_noise_floor_pct - 7.0).abs() < 1e-9, "{g:?}");
    let table = presagectl::dependencies::learning_table(&g);
    assert!(table.contains("database") && table.contains("1.100") && table.contains("better"), "{table}");

    a.stop().await;
    b.stop().await;
    let coord = restart(coord, &cfg).await;
    let viewer = rest(&pki, &coord.url, Role::Viewer, "vera2");
    let r = viewer.get("/v1/ecosystem/learned").await.unwrap();
    assert_eq!(r.body["types"]["database"], learned["types"]["database"], "what is learned is kept in the store: {r:?}");
    coord.stop().await;
}
