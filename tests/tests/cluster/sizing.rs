//! Resizes and borrowing leases end to end: an operator's requests through the coordinator's
//! API reach the host's agent, which admits them by its own rule, applies them to its
//! (simulated) hypervisor and ends every lease at its deadline by itself, coordinator or not.

use std::time::Duration;

use presage_protocol::pb::{GrantLeaseRequest, ListLeasesRequest, ListVmsRequest, ResizeVmRequest, RevokeLeaseRequest};
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(30);

/// What the coordinator last heard of VM `id`.
async fn sample_of(
    op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    id: &str,
) -> Option<presage_protocol::pb::VmSample> {
    let mut op = op.clone();
    op.list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() })
        .await
        .ok()?
        .into_inner()
        .vms
        .into_iter()
        .find_map(|v| v.sample.filter(|s| s.vm_id == id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_resize_and_lend_and_the_agent_ends_leases_on_time_without_a_coordinator() {
    // Both VMs want all of their vCPU all the time.
    let trace = synthetic_trace(&[("busy", &[100; 50]), ("other", &[100; 50])]);
    let elsewhere = synthetic_trace(&[("far", &[10; 50])]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let port = coord.port;
    let data = tempfile::tempdir().unwrap();
    let data_b = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-s", &coord.url, data.path(), trace.path(), (0, 1), 0));
    let agent_b = RunningAgent::start(simulated_agent(&pki, "hv-t", &coord.url, data_b.path(), elsewhere.path(), (0, 1), 0));
    let ops = pki.issue(Role::Operator, "ops");
    let mut op = client(&coord.url, &ops).await.unwrap();
    let sample = eventually("busy is reported", WAIT, || sample_of(&op, "busy")).await;
    eventually("far is reported", WAIT, || sample_of(&op, "far")).await;
    let (vcpus, memory_mib) = (sample.vcpus as f64, (sample.memory_bytes >> 20) as f64);
    assert!(sample.cpu_utilisation > 0.9, "{sample:?}");

    // A resize to half its vCPUs' time: admitted, applied, and the VM gets no more.
    let half = vcpus / 2.0;
    let r = op
        .resize_vm(ResizeVmRequest { vm_id: "busy".into(), cpu_cores: half, memory_mib, dry_run: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted && r.host_id == "hv-s", "{r:?}");
    let entry = r.state.as_ref().unwrap().resizes.iter().find(|e| e.vm_id == "busy").unwrap().clone();
    assert_eq!((entry.status.as_str(), entry.allocated_cpu_cores), ("done", half), "{entry:?}");
    eventually("the quota holds busy to half its vCPUs", WAIT, || async {
        let s = sample_of(&op, "busy").await?;
        (s.cpu_utilisation <= 0.5 + 1e-9).then_some(())
    })
    .await;
    // Beyond the domain: refused with the reason, nothing applied.
    let r = op
        .resize_vm(ResizeVmRequest { vm_id: "busy".into(), cpu_cores: vcpus * 4.0, memory_mib, dry_run: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.accepted && r.refusal.contains("domain's maximum"), "{r:?}");
    // Bad values and unknown VMs never reach an agent.
    let e = op
        .resize_vm(ResizeVmRequest { vm_id: "busy".into(), cpu_cores: f64::NAN, memory_mib, dry_run: false, ..Default::default() })
        .await
        .unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("cpu_cores"), "{e:?}");
    let e = op
        .resize_vm(ResizeVmRequest { vm_id: "nope".into(), cpu_cores: 1.0, memory_mib, dry_run: false, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

    // A lease from the host's free CPU lifts busy above its allocation until the deadline.
    let quarter = vcpus / 4.0;
    let grant = |duration_s: u64, lender: &str| GrantLeaseRequest {
        lender: lender.into(),
        borrower: "busy".into(),
        resource: "cpu".into(),
        amount: quarter,
        duration_s,
        reason: "test".into(),
    };
    let r = op.grant_lease(grant(600, "")).await.unwrap().into_inner();
    assert!(r.accepted, "{r:?}");
    let id = r.state.unwrap().leases[0].id.clone();
    eventually("busy uses what it borrows", WAIT, || async {
        let s = sample_of(&op, "busy").await?;
        (s.cpu_utilisation > 0.5 + 1e-9 && s.cpu_utilisation <= 0.75 + 1e-9).then_some(())
    })
    .await;
    let listed = op.list_leases(ListLeasesRequest { host_id: "hv-s".into() }).await.unwrap().into_inner();
    assert!(listed.hosts[0].state.as_ref().unwrap().leases.iter().any(|l| l.id == id), "{listed:?}");
    // Revoked: back to its allocation.
    assert!(op.revoke_lease(RevokeLeaseRequest { id: id.clone() }).await.unwrap().into_inner().accepted);
    let e = op.revoke_lease(RevokeLeaseRequest { id: "no-such".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    // A lease between VMs of two hosts is refused before any agent sees it.
    let e = op.grant_lease(grant(60, "far")).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("one host"), "{e:?}");

    // The same through the REST API, with roles and errors naming the field.
    let rest = |role: Role, name: &str| {
        let files = pki.issue(role, name);
        presage_protocol::rest_client::RestClient::new(&coord.url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap()
    };
    let (viewer, operator) = (rest(Role::Viewer, "eyes"), rest(Role::Operator, "hands"));
    let all = viewer.get("/v1/leases").await.unwrap();
    assert!(all.status == 200 && all.body.as_array().unwrap().iter().any(|h| h["host"] == "hv-s"), "{all:?}");
    let body = |v: serde_json::Value| v.to_string().into_bytes();
    let denied = viewer.post("/v1/vms/busy/resize", &body(serde_json::json!({"cpu_cores": 0.5, "memory_mib": memory_mib}))).await.unwrap();
    assert_eq!(denied.status, 403, "{denied:?}");
    let bad = operator.post("/v1/vms/busy/resize", &body(serde_json::json!({"cpu_cores": -1.0, "memory_mib": memory_mib}))).await.unwrap();
    assert!(bad.status == 400 && bad.body["field"] == "cpu_cores", "{bad:?}");
    let typo = operator.post("/v1/vms/busy/resize", &body(serde_json::json!({"cpus": 1.0, "memory_mib": memory_mib}))).await.unwrap();
    assert!(typo.status == 400 && typo.body["reason"].as_str().unwrap().contains("cpus"), "{typo:?}");
    let refused = operator
        .post("/v1/vms/busy/resize", &body(serde_json::json!({"cpu_cores": vcpus * 4.0, "memory_mib": memory_mib, "dry_run": true})))
        .await
        .unwrap();
    assert!(refused.status == 409 && refused.body["reason"].as_str().unwrap().contains("domain's maximum"), "{refused:?}");
    let granted = operator
        .post("/v1/leases", &body(serde_json::json!({"borrower": "busy", "resource": "cpu", "amount": quarter, "duration_s": 600})))
        .await
        .unwrap();
    assert_eq!(granted.status, 200, "{granted:?}");
    let rest_id = granted.body["leases"][0]["id"].as_str().unwrap().to_string();
    // Revocation finds the lease where its agent reports it: after the next report.
    eventually("the REST lease is reported", WAIT, || async {
        let all = viewer.get("/v1/leases?host=hv-s").await.ok()?;
        all.body[0]["leases"].as_array()?.iter().any(|l| l["id"] == rest_id.as_str()).then_some(())
    })
    .await;
    assert_eq!(operator.delete(&format!("/v1/leases/{rest_id}")).await.unwrap().status, 200);
    assert_eq!(operator.delete("/v1/leases/no-such").await.unwrap().status, 404);

    // A short lease, then the coordinator goes away: the agent ends it at its deadline alone.
    let r = op.grant_lease(grant(3, "")).await.unwrap().into_inner();
    assert!(r.accepted, "{r:?}");
    let deadline_ms = r.state.unwrap().leases[0].deadline_ms;
    coord.stop().await;
    let agent_data = data.path().to_path_buf();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(now_ms > deadline_ms);
    let coord = RunningCoordinator::start(&pki, port, Duration::from_secs(30)).await;
    let mut op = client(&coord.url, &ops).await.unwrap();
    let state = eventually("the agent reports its leases to the new coordinator", WAIT, || async {
        let mut op = op.clone();
        op.list_leases(ListLeasesRequest { host_id: "hv-s".into() }).await.ok()?.into_inner().hosts.into_iter().next()?.state
    })
    .await;
    assert!(state.leases.is_empty(), "the lease ended at its deadline without a coordinator: {state:?}");
    let s = sample_of(&op, "busy").await.unwrap();
    assert!(s.cpu_utilisation <= 0.5 + 1e-9, "back to its own allocation: {s:?}");
    // The resize outlives a restart of the agent: it is re-applied from the agent's store.
    agent.stop().await;
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-s", &coord.url, &agent_data, trace.path(), (0, 1), 0));
    eventually("the restarted agent holds busy to its resized allocation", WAIT, || async {
        let mut op = op.clone();
        let h = op.list_leases(ListLeasesRequest { host_id: "hv-s".into() }).await.ok()?.into_inner().hosts.into_iter().next()?;
        let resized = h.state?.resizes.iter().any(|e| e.vm_id == "busy" && e.status == "done" && e.allocated_cpu_cores == half);
        let s = sample_of(&op, "busy").await?;
        (resized && s.cpu_utilisation <= 0.5 + 1e-9).then_some(())
    })
    .await;
    let _ = op.list_leases(ListLeasesRequest::default()).await.unwrap();
    agent.stop().await;
    agent_b.stop().await;
    coord.stop().await;
}

/// The coordinator's automatic pass (`[sizing] mode = "automatic"`): from the agents' forecasts
/// it shrinks a VM with confident slack, and when that VM's demand comes back (its quota
/// saturates) gives it CPU again — by a resize or a lease — every change with its reason, the
/// pass visible through gRPC and REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_pass_shrinks_idle_vms_and_gives_cpu_back_when_demand_returns() {
    // `wave` idles for 70 steps (35 s at 600x with 100 ms samples), then wants all its vCPUs;
    // `idle` idles throughout.
    let wave: Vec<u32> = (0..400).map(|i| if i < 70 { 3 } else { 100 }).collect();
    let trace = synthetic_trace(&[("wave", &wave), ("idle", &[3; 400])]);
    let pki = Pki::new();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), presage_coordinator::config::PolicyConfig::default());
    cfg.sizing = presage_coordinator::config::CoordinatorConfig::parse(
        "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[sizing]\nmode = \"automatic\"\ninterval = \"1s\"\n\
         [sizing.defaults]\ncpu_shrink_after_cycles = 2\n",
        std::path::Path::new("test.toml"),
    )
    .unwrap()
    .sizing;
    let coord = RunningCoordinator::start_config(cfg).await;
    let data = tempfile::tempdir().unwrap();
    let _agent = RunningAgent::start(simulated_agent(&pki, "hv-a", &coord.url, data.path(), trace.path(), (0, 1), 0));
    let ops = pki.issue(Role::Operator, "ops");
    let op = client(&coord.url, &ops).await.unwrap();
    let leases = |op: &presage_protocol::pb::operator_client::OperatorClient<_>| {
        let mut op = op.clone();
        async move { op.list_leases(ListLeasesRequest { host_id: "hv-a".into() }).await.ok().map(|r| r.into_inner()) }
    };
    let vcpus = eventually("wave is reported", WAIT, || sample_of(&op, "wave")).await.vcpus as f64;
    // Once the forecasts are in, both idle VMs are shrunk, each change with its reason.
    let shrunk = eventually("the pass shrinks both idle VMs", Duration::from_secs(60), || async {
        let l = leases(&op).await?;
        let resizes = &l.hosts.first()?.state.as_ref()?.resizes;
        let small =
            |id: &str| resizes.iter().find(|r| r.vm_id == id && r.status == "done" && r.allocated_cpu_cores <= vcpus / 2.0).cloned();
        Some((small("wave")?, small("idle")?, l.last_pass?))
    })
    .await;
    let (wave_shrunk, _, pass) = shrunk;
    assert!(wave_shrunk.reason.starts_with("automatic: cpu p90"), "{wave_shrunk:?}");
    assert_eq!(pass.mode, "automatic");
    // When wave's demand returns its quota saturates, and the pass gives it CPU back.
    eventually("wave gets its CPU back", Duration::from_secs(90), || async {
        let s = sample_of(&op, "wave").await?;
        (s.cpu_utilisation >= 0.9).then_some(())
    })
    .await;
    let l = leases(&op).await.unwrap();
    let state = l.hosts[0].state.clone().unwrap();
    let regrown = state.resizes.iter().find(|r| r.vm_id == "wave").unwrap();
    let borrowed: f64 = state.leases.iter().filter(|x| x.borrower == "wave").map(|x| x.amount).sum();
    assert!(regrown.allocated_cpu_cores + borrowed >= 0.9 * vcpus, "{regrown:?} {:?}", state.leases);
    // Idle stays small: its slack is not handed back.
    let idle = state.resizes.iter().find(|r| r.vm_id == "idle").unwrap();
    assert!(idle.allocated_cpu_cores <= vcpus / 2.0, "{idle:?}");
    // The last pass through REST: each proposal with its reason and what came of it.
    let files = pki.issue(Role::Viewer, "eyes");
    let rest =
        presage_protocol::rest_client::RestClient::new(&coord.url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap();
    let p = rest.get("/v1/sizing/pass").await.unwrap();
    assert!(p.status == 200 && p.body["mode"] == "automatic" && p.body["vms"].as_u64() == Some(2), "{p:?}");
    for x in p.body["proposals"].as_array().unwrap() {
        assert!(!x["reason"].as_str().unwrap().is_empty() && !x["outcome"].as_str().unwrap().is_empty(), "{x}");
    }
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resize_is_a_version_kept_across_a_restart_and_a_rollback_asks_for_an_old_one_again() {
    use presage_protocol::pb::{ConfigHistoryRequest, ConfigRollbackRequest};
    let trace = synthetic_trace(&[("busy", &[100; 50])]);
    let pki = Pki::new();
    let store = tempfile::tempdir().unwrap();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), Default::default());
    cfg.data_dir = Some(store.path().into());
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    let data = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-s", &coord.url, data.path(), trace.path(), (0, 1), 0));
    let ops = pki.issue(Role::Operator, "ops");
    let mut op = client(&coord.url, &ops).await.unwrap();
    let sample = eventually("busy is reported", WAIT, || sample_of(&op, "busy")).await;
    let (vcpus, memory_mib) = (sample.vcpus as f64, (sample.memory_bytes >> 20) as f64);
    let resize =
        |cores: f64, dry_run: bool| ResizeVmRequest { vm_id: "busy".into(), cpu_cores: cores, memory_mib, dry_run, ..Default::default() };
    assert!(op.resize_vm(resize(vcpus / 2.0, false)).await.unwrap().into_inner().accepted);
    assert!(op.resize_vm(resize(vcpus / 4.0, false)).await.unwrap().into_inner().accepted);
    // A dry run is not a version; a refusal is, with the reason.
    assert!(op.resize_vm(resize(vcpus / 8.0, true)).await.unwrap().into_inner().accepted);
    assert!(!op.resize_vm(resize(vcpus * 4.0, false)).await.unwrap().into_inner().accepted);
    let history = |op: &mut presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>| {
        let mut op = op.clone();
        async move { op.config_history(ConfigHistoryRequest { vm_id: "busy".into(), limit: 0 }).await.unwrap().into_inner().versions }
    };
    let h = history(&mut op).await;
    assert_eq!(h.iter().map(|v| v.version).collect::<Vec<_>>(), [3, 2, 1], "newest first: {h:?}");
    assert!(h[0].outcome.starts_with("refused: ") && h[0].outcome.contains("domain's maximum"), "{:?}", h[0]);
    assert_eq!((h[1].outcome.as_str(), h[1].config.unwrap().cpu_cores), ("applied", vcpus / 4.0));
    assert_eq!(h[2].previous.unwrap().cpu_cores, vcpus, "version 1 replaced the domain's full vCPUs");
    assert_eq!(h[1].previous.unwrap().cpu_cores, vcpus / 2.0, "version 2 replaced version 1's");
    assert!(h.iter().all(|v| v.proposed_by == "operator ops"));

    // The versions outlive the coordinator.
    drop(op);
    cfg.listen = ([127, 0, 0, 1], coord.port).into();
    coord.stop().await;
    let coord = RunningCoordinator::start_config(cfg).await;
    let mut op = client(&coord.url, &ops).await.unwrap();
    eventually("busy is reported again", WAIT, || sample_of(&op, "busy")).await;
    assert_eq!(history(&mut op).await.len(), 3);

    // Rolled back to version 1: a new version with its configuration, applied by the agent.
    let r = op.config_rollback(ConfigRollbackRequest { vm_id: "busy".into(), version: 1, dry_run: false }).await.unwrap().into_inner();
    let v = r.version.unwrap();
    assert_eq!((v.version, v.config.unwrap().cpu_cores, v.outcome.as_str()), (4, vcpus / 2.0, "applied"));
    assert!(v.reason.contains("rollback to version 1"), "{v:?}");
    let entry = r.sizing.unwrap().state.unwrap().resizes.into_iter().find(|e| e.vm_id == "busy").unwrap();
    assert_eq!(entry.allocated_cpu_cores, vcpus / 2.0);
    let e = op.config_rollback(ConfigRollbackRequest { vm_id: "busy".into(), version: 99, dry_run: false }).await.unwrap_err();
    assert!(e.code() == tonic::Code::NotFound && e.message().contains("version 99"), "{e:?}");

    // REST: viewers read the versions, only operators roll back.
    let rest = |role: Role, name: &str| {
        let files = pki.issue(role, name);
        presage_protocol::rest_client::RestClient::new(&coord.url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap()
    };
    let viewer = rest(Role::Viewer, "eyes");
    let listed = viewer.get("/v1/vms/busy/config?limit=2").await.unwrap();
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.body.as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 3]);
    let denied = viewer.post("/v1/vms/busy/config/rollback", br#"{"version": 2}"#).await.unwrap();
    assert_eq!(denied.status, 403, "{denied:?}");
    let operator = rest(Role::Operator, "hands");
    let bad = operator.post("/v1/vms/busy/config/rollback", br#"{"version": "two"}"#).await.unwrap();
    assert_eq!(bad.status, 400, "{bad:?}");
    let back = operator.post("/v1/vms/busy/config/rollback", br#"{"version": 2}"#).await.unwrap();
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(history(&mut op).await[0].proposed_by, "operator hands");
    agent.stop().await;
    coord.stop().await;
}
