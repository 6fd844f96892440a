//! The REST twins of the operator RPCs, and the whole API against its OpenAPI document.
//!
//! The twins: a real coordinator and two simulated agents; each twin answers what its gRPC call
//! answers, by role, with errors that name the field at fault.
//!
//! The contract: schemathesis (a property-based API tester; `./presage.sh test` installs it in
//! a virtual environment and points `PRESAGE_SCHEMATHESIS` at it) reads `/v1/openapi.json`
//! from the running coordinator, generates requests from every operation's schemas (valid ones,
//! and invalid ones the server must refuse), and checks every answer: no server error, status
//! codes and content types the document lists, bodies that match the response schemas,
//! schema-valid requests not refused as malformed, schema-violating ones not accepted.

use std::time::Duration;

use presage_protocol::pb::{ListVmsRequest, StatusRequest};
use presage_protocol::rest_client::RestClient;
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn rest(pki: &Pki, url: &str, role: Role, name: &str) -> RestClient {
    let files = pki.issue(role, name);
    RestClient::new(url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap()
}

/// A coordinator (one-off optimiser runs cut to 1 s) with two simulated agents sharing one
/// synthetic trace, once both hosts report their VMs and a policy pass has run (placement and
/// explanations answer 503 before it).
async fn cluster(pki: &Pki, data: &std::path::Path, trace: &std::path::Path) -> (RunningCoordinator, RunningAgent, RunningAgent) {
    let policy = presage_coordinator::config::PolicyConfig { interval: Duration::from_secs(1), ..Default::default() };
    let mut cfg = RunningCoordinator::config(pki, 0, Duration::from_secs(30), policy);
    cfg.optimiser.max_request_time = Duration::from_secs(1);
    let coord = RunningCoordinator::start_config(cfg).await;
    let (a, b) = two_simulated_agents(pki, &coord.url, data, trace);
    let op = client(&coord.url, &pki.issue(Role::Viewer, "waiter")).await.unwrap();
    eventually("both hosts report their VMs", WAIT, || {
        let op = op.clone();
        async move {
            let vms = op.clone().list_vms(ListVmsRequest::default()).await.ok()?.into_inner().vms;
            let hosts: std::collections::BTreeSet<_> = vms.iter().map(|v| v.host_id.clone()).collect();
            let planned = op.clone().get_plan(presage_protocol::pb::GetPlanRequest {}).await.ok()?.into_inner().available;
            (hosts.len() == 2 && vms.len() == 4 && planned).then_some(())
        }
    })
    .await;
    (coord, a, b)
}

fn trace() -> tempfile::TempDir {
    synthetic_trace(&[
        ("vm-c-1", &[30u32; 60][..]),
        ("vm-c-2", &[40u32; 60][..]),
        ("vm-c-3", &[20u32; 60][..]),
        ("vm-c-4", &[10u32; 60][..]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_twin_answers_what_its_rpc_answers_by_role_naming_the_field_at_fault() {
    let pki = Pki::new();
    let (data, trace) = (tempfile::tempdir().unwrap(), trace());
    let (coord, a, b) = cluster(&pki, data.path(), trace.path()).await;
    let viewer = rest(&pki, &coord.url, Role::Viewer, "vera");
    let operator = rest(&pki, &coord.url, Role::Operator, "otto");
    let grpc = client(&coord.url, &pki.issue(Role::Viewer, "grpc")).await.unwrap();

    // Status: the same figures as gRPC (64-bit counters as decimal strings, the proto3 JSON form).
    let s = viewer.get("/v1/status").await.unwrap();
    assert_eq!(s.status, 200, "{s:?}");
    let g = grpc.clone().status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.body["hosts_total"], g.hosts_total);
    assert_eq!(s.body["vms_total"], 4);
    assert_eq!(s.body["memory_capacity_bytes"], g.memory_capacity_bytes.to_string());

    // One VM by name, with its host; unknown names and hosts are 404s naming the field.
    let v = viewer.get("/v1/vms/vm-c-3").await.unwrap();
    assert_eq!(v.status, 200, "{v:?}");
    let vms = v.body["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 1, "{v:?}");
    assert_eq!(vms[0]["sample"]["name"], "vm-c-3");
    let host = vms[0]["host_id"].as_str().unwrap().to_string();
    let on_host = viewer.get(&format!("/v1/vms?host_id={host}")).await.unwrap();
    assert_eq!(on_host.body["vms"].as_array().unwrap().len(), 2, "{on_host:?}");
    let missing = viewer.get("/v1/vms/no-such-vm").await.unwrap();
    assert_eq!((missing.status, missing.body["field"].as_str()), (404, Some("vm_id")), "{missing:?}");
    let missing = viewer.get("/v1/vms?host_id=no-such-host").await.unwrap();
    assert_eq!((missing.status, missing.body["field"].as_str()), (404, Some("host_id")), "{missing:?}");
    let typo = viewer.get("/v1/vms?hostid=x").await.unwrap();
    assert_eq!((typo.status, typo.body["field"].as_str()), (400, Some("hostid")), "{typo:?}");
    assert!(typo.body["reason"].as_str().unwrap().contains("host_id"), "the known parameters are listed: {typo:?}");

    // Explain, place: bodies and bounds.
    let e = viewer.get("/v1/vms/vm-c-3/explain?top=1").await.unwrap();
    assert_eq!(e.status, 200, "{e:?}");
    assert_eq!(e.body["host_id"], host.as_str());
    let placed = viewer.post("/v1/place", br#"{"vcpus": 2, "memory_mib": 1024.0}"#).await.unwrap();
    assert_eq!(placed.status, 200, "{placed:?}");
    assert!(placed.body["ranking"].as_array().is_some_and(|r| !r.is_empty()), "{placed:?}");
    let bad = viewer.post("/v1/place", br#"{"vcpus": 0}"#).await.unwrap();
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("vcpus")), "{bad:?}");
    let bad = viewer.post("/v1/place", br#"{"vcpus": "two"}"#).await.unwrap();
    assert_eq!((bad.status, bad.body["field"].as_str()), (400, Some("vcpus")), "{bad:?}");
    // 2.0 is the integer 2 (JSON Schema's reading).
    let two = viewer.post("/v1/place", br#"{"vcpus": 2.0, "memory_mib": 1024}"#).await.unwrap();
    assert_eq!(two.status, 200, "{two:?}");

    // Drain and undrain: operators only; the mark shows in the cluster's plan.
    let denied = viewer.post(&format!("/v1/hosts/{host}/drain"), b"").await.unwrap();
    assert_eq!(denied.status, 403, "{denied:?}");
    let drained = operator.post(&format!("/v1/hosts/{host}/drain"), b"").await.unwrap();
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(drained.body["draining"], serde_json::json!([host.clone()]));
    let conflicting = operator.post(&format!("/v1/hosts/{host}/drain"), br#"{"drain": false}"#).await.unwrap();
    assert_eq!((conflicting.status, conflicting.body["field"].as_str()), (400, Some("drain")), "{conflicting:?}");
    let undrained = operator.post(&format!("/v1/hosts/{host}/undrain"), b"").await.unwrap();
    assert_eq!(undrained.body["draining"], serde_json::json!([]), "{undrained:?}");
    let unknown = operator.post("/v1/hosts/hv-nowhere/drain", b"").await.unwrap();
    assert_eq!(unknown.status, 404, "{unknown:?}");

    // Commands through an agent: ping; an unknown host is a 404, not an unreachable one.
    let pong = viewer.post(&format!("/v1/hosts/{host}/ping"), br#"{"timeout_ms": 10000}"#).await.unwrap();
    assert_eq!(pong.status, 200, "{pong:?}");
    assert_eq!(pong.body["host_id"], host.as_str());
    let nowhere = viewer.post("/v1/hosts/hv-nowhere/ping", b"").await.unwrap();
    assert_eq!((nowhere.status, nowhere.body["field"].as_str()), (404, Some("host_id")), "{nowhere:?}");
    let held = operator
        .post(
            &format!("/v1/hosts/{host}/reservations"),
            br#"{"id": "r1", "vm_id": "incoming", "cpu_mhz": 100, "memory_mib": 128, "ttl_ms": 60000}"#,
        )
        .await
        .unwrap();
    assert_eq!(held.status, 200, "{held:?}");
    assert!(held.body["state"].to_string().contains("r1"), "{held:?}");
    let released = operator.delete(&format!("/v1/hosts/{host}/reservations/r1")).await.unwrap();
    assert_eq!(released.status, 200, "{released:?}");
    assert!(!released.body["state"].to_string().contains("\"r1\""), "{released:?}");

    // The journal, one plan, a move; the plan names the move.
    let other = if host == "hv-a" { "hv-b" } else { "hv-a" };
    let moved = operator.post("/v1/vms/vm-c-3/move", format!(r#"{{"to_host": "{other}"}}"#).as_bytes()).await.unwrap();
    assert_eq!(moved.status, 200, "{moved:?}");
    let plan_id = moved.body["plan"]["id"].as_str().expect("a u64 plan id as a string").to_string();
    assert_eq!(moved.body["plan"]["origin"], "operator", "{moved:?}");
    let plan = viewer.get(&format!("/v1/plans/{plan_id}")).await.unwrap();
    assert_eq!(plan.status, 200, "{plan:?}");
    assert_eq!(plan.body["plans"][0]["moves"][0]["vm_id"], "vm-c-3", "{plan:?}");
    let none = viewer.get("/v1/plans/999999").await.unwrap();
    assert_eq!(none.status, 404, "{none:?}");
    let bad_id = viewer.get("/v1/plans/abc").await.unwrap();
    assert_eq!((bad_id.status, bad_id.body["field"].as_str()), (400, Some("plan_id")), "{bad_id:?}");

    // Each twin is in the document, as the role that may call it.
    let doc = viewer.get("/v1/openapi.json").await.unwrap().body;
    for twin in presage_coordinator::rest_gateway::twins() {
        let op = &doc["paths"][twin.path][twin.method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} is not in the document", twin.method, twin.path);
    }
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

/// schemathesis' path: `PRESAGE_SCHEMATHESIS`, or `schemathesis` on the PATH.
fn schemathesis() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PRESAGE_SCHEMATHESIS") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("schemathesis")).find(|c| c.is_file()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "schemathesis is not installed: `./presage.sh test` installs it (a Python virtual environment) and sets \
             PRESAGE_SCHEMATHESIS; or set PRESAGE_SCHEMATHESIS to its path"
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_answers_as_its_openapi_document_says() {
    let tool = schemathesis();
    let pki = Pki::new();
    let (data, trace) = (tempfile::tempdir().unwrap(), trace());
    let (coord, a, b) = cluster(&pki, data.path(), trace.path()).await;
    // An admin may make every call: every operation is reached past the role check.
    let admin = pki.issue(Role::Admin, "contract");
    let reports = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(&tool)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", coord.url))
        .args(["--tls-verify"])
        .arg(&admin.ca)
        .arg("--request-cert")
        .arg(&admin.cert)
        .arg("--request-cert-key")
        .arg(&admin.key)
        .args(["--checks", "all", "--phases", "coverage,fuzzing", "--max-examples", "10", "--seed", "20261202"])
        .args(["--workers", "2", "--request-timeout", "30", "--max-response-time", "30", "--no-color"])
        // A connection dropped under a loaded machine (CI once: "EOF occurred in violation of
        // protocol" on a new TLS connection) says nothing of the contract: tried again; every
        // answer the API gives is still checked.
        .args(["--request-retries", "2"])
        .args(["--generation-database", "none", "--report", "junit", "--report-dir"])
        .arg(reports.path())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found the API and its document apart:\n{text}");
    // It did test: every operation, with requests answered.
    assert!(text.contains("Tested:") || text.contains("passed"), "{text}");
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}
