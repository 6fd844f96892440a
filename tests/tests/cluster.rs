//! End-to-end tests of a presage cluster on loopback: a real coordinator and real agents (in this
//! process), real gRPC with mutual TLS, real sled stores, and real PlanetLab trace files.

use std::path::Path;
use std::time::Duration;

use presage_agent::store::{SampleHistory, SledStore};
use presage_protocol::pb::{
    AgentMessage, ListHostsRequest, ListVmsRequest, PingHostRequest, Register, StatusRequest, agent_link_client::AgentLinkClient,
    agent_message,
};
use presage_protocol::pki::ClusterCa;
use presage_protocol::tls::Role;
use presage_tests::*;

/// The trace-replay simulator against CloudSim's published PlanetLab figures.
#[path = "cluster/simulator.rs"]
mod simulator;

/// `presagectl demo` and signals: no process of the demo outlives it.
#[path = "cluster/demo_signals.rs"]
mod demo_signals;

/// The model scripts' plain-Python unit tests (the tuning objective).
#[path = "cluster/model_scripts.rs"]
mod model_scripts;

/// The shared DeathStarBench ecosystem scenarios.
#[path = "cluster/ecosystems.rs"]
mod ecosystems;

/// The agent's libvirt hypervisor: the presage-libvirt driver process.
#[path = "cluster/libvirt_driver.rs"]
mod libvirt_driver;

/// The REST API over mutual TLS with the three person roles.
#[path = "cluster/rest_api.rs"]
mod rest_api;

/// The anomaly detector and the NAB scorer over the shared part of the Numenta Anomaly Benchmark.
#[path = "cluster/anomaly_eval.rs"]
mod anomaly_eval;

/// presage-guest's figures through a VM's port to the coordinator; a hostile guest.
#[path = "cluster/guest_channel.rs"]
mod guest_channel;

/// A real KVM live migration between two libvirt daemons.
#[path = "cluster/live_migration.rs"]
mod live_migration;
// Resizes and borrowing leases through the operator API and the agents.
/// Staged rollouts: a canary watched against the VMs still waiting, rolled back when worse,
/// resumed across a coordinator restart.
#[path = "cluster/rollouts.rs"]
mod rollouts;

#[path = "cluster/sizing.rs"]
mod sizing;

const WAIT: Duration = Duration::from_secs(30);

/// The trace file's values as fractions, read independently of the code under test.
fn trace_values(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse::<u32>().unwrap() as f64 / 100.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_report_the_trace_lines_they_replay() {
    let day = shared_data().join("planetlab/20110303");
    let mut files: Vec<String> = std::fs::read_dir(&day).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let data = tempfile::tempdir().unwrap();
    let a = RunningAgent::start(simulated_agent(&pki, "hv-a", &coord.url, &data.path().join("a"), &day, (0, 2), 6));
    let b = RunningAgent::start(simulated_agent(&pki, "hv-b", &coord.url, &data.path().join("b"), &day, (1, 2), 6));
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "alice")).await.unwrap();

    let hosts = eventually("both hosts report twice", WAIT, || {
        let mut op = op.clone();
        async move {
            let hosts = op.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts;
            (hosts.len() == 2 && hosts.iter().all(|h| h.reachable && h.reports >= 2)).then_some(hosts)
        }
    })
    .await;
    assert_eq!(hosts.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(), ["hv-a", "hv-b"]);

    let block = files.len().div_ceil(4);
    for (shard, host) in ["hv-a", "hv-b"].iter().enumerate() {
        let vms = op.list_vms(ListVmsRequest { host_id: host.to_string(), ..Default::default() }).await.unwrap().into_inner().vms;
        // The shard: every second file in name order, starting at the shard index, first six.
        let expected: Vec<&String> = files.iter().enumerate().filter(|(i, _)| i % 2 == shard).map(|(_, f)| f).take(6).collect();
        let mut got: Vec<&str> = vms.iter().map(|v| v.sample.as_ref().unwrap().vm_id.as_str()).collect();
        got.sort();
        assert_eq!(got, expected.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "{host} holds its shard");
        for v in &vms {
            let s = v.sample.as_ref().unwrap();
            let step = v.trace.as_ref().expect("simulated samples carry their trace position").step;
            let values = trace_values(&day.join(&s.vm_id));
            let want = values[(step as usize) % values.len()];
            assert!((s.cpu_utilisation - want).abs() < 1e-6, "{}: step {step}: got {}, trace says {want}", s.vm_id, s.cpu_utilisation);
            // CloudSim's VM types in contiguous blocks of the folder's files.
            let index = files.iter().position(|f| f == &s.vm_id).unwrap();
            let (mips, ram_mb) = [(2500.0, 870u64), (2000.0, 1740), (1000.0, 1740), (500.0, 613)][index / block];
            assert_eq!(s.memory_bytes, ram_mb << 20, "{}", s.vm_id);
            assert!((v.cpu_demand_mhz - want * mips).abs() < 1e-3, "{}: demand {} != {want} x {mips}", s.vm_id, v.cpu_demand_mhz);
        }
    }
    let status = op.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.hosts_reachable, status.vms_total, status.reports_rejected), (2, 12, 0));
    // The advisory pass runs the configured policy (the simulator's code) over the live state.
    let status = eventually("an advisory pass over both hosts", WAIT, || {
        let mut op = op.clone();
        let shared = coord.shared.clone();
        async move {
            let s = op.status(StatusRequest {}).await.ok()?.into_inner();
            let considered = shared.plan.lock().unwrap().as_ref().map(|(_, p)| (p.proposal.hosts_considered, p.proposal.vms_considered));
            (s.proposal_age_ms > 0 && considered == Some((2, 12))).then_some(s)
        }
    })
    .await;
    assert_eq!(status.policy, "THR-MMT-0.8");
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agent_turns_unreachable_and_returns_with_its_history() {
    let trace = synthetic_trace(&[("vm-1", &[10, 20, 30, 40]), ("vm-2", &[50, 60, 70, 80])]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(1)).await;
    let data = tempfile::tempdir().unwrap();
    let cfg = simulated_agent(&pki, "hv-r", &coord.url, data.path(), trace.path(), (0, 1), 0);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let host = |op: &presage_protocol::pb::operator_client::OperatorClient<_>| {
        let mut op = op.clone();
        async move { op.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts.into_iter().find(|h| h.host_id == "hv-r") }
    };

    let agent = RunningAgent::start(cfg.clone());
    eventually("the host reports", WAIT, || async { host(&op).await.filter(|h| h.reachable && h.reports >= 3) }).await;
    agent.stop().await;
    let gone = eventually("the host turns unreachable", WAIT, || async { host(&op).await.filter(|h| !h.reachable) }).await;
    assert!(!gone.connected);
    assert!(gone.last_seen_ago_ms >= 1000, "unreachable only after the 1 s timeout, was {} ms", gone.last_seen_ago_ms);

    let store_dir = data.path().join("store");
    let (first_before, len_before) = {
        let store = SledStore::open(&store_dir).unwrap();
        let h = SampleHistory::open(&store, 100_000, &store_dir).unwrap();
        let rows = h.recent("vm-1", usize::MAX).unwrap();
        assert!(rows.len() >= 3, "the agent recorded its samples");
        (rows[0].0, rows.len())
    };

    let agent = RunningAgent::start(cfg);
    let back = eventually("the host is reachable again", WAIT, || async { host(&op).await.filter(|h| h.reachable && h.connected) }).await;
    assert_eq!(back.vm_count, 2);
    eventually("a report after the restart", WAIT, || async { host(&op).await.filter(|h| h.last_report_seq >= 2) }).await;
    agent.stop().await;

    let store = SledStore::open(&store_dir).unwrap();
    let h = SampleHistory::open(&store, 100_000, &store_dir).unwrap();
    let rows = h.recent("vm-1", usize::MAX).unwrap();
    assert_eq!(rows[0].0, first_before, "the oldest sample from before the restart is still there");
    assert!(rows.len() > len_before, "the restarted agent appended to the same history");
    drop(store);
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_keeps_sampling_without_a_coordinator_and_reconnects() {
    let trace = synthetic_trace(&[("vm-x", &[5, 15, 25])]);
    let pki = Pki::new();
    // Reserve a port, then start the agent while nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("https://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-late", &url, data.path(), trace.path(), (0, 1), 0));
    // Give the agent a few sampling intervals with nobody to talk to.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let coord = RunningCoordinator::start(&pki, port, Duration::from_secs(30)).await;
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let first = eventually("the late agent registers and reports", WAIT, || {
        let mut op = op.clone();
        async move { op.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts.into_iter().find(|h| h.reports >= 1) }
    })
    .await;
    assert!(
        first.last_report_seq > first.reports,
        "the agent sampled while disconnected: seq {} after {} delivered reports",
        first.last_report_seq,
        first.reports
    );
    // The coordinator restarts on the same port; the agent finds it again.
    coord.stop().await;
    let coord = RunningCoordinator::start(&pki, port, Duration::from_secs(30)).await;
    let op2 = client(&coord.url, &pki.issue(Role::Operator, "ops2")).await.unwrap();
    eventually("the agent reconnects to the restarted coordinator", WAIT, || {
        let mut op2 = op2.clone();
        async move { op2.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts.into_iter().find(|h| h.connected && h.reports >= 1) }
    })
    .await;
    let _ = op.status(StatusRequest {}).await; // the old channel may or may not have reconnected; no assertion
    agent.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_stream_carries_a_ping_and_its_answer() {
    let trace = synthetic_trace(&[("vm", &[1])]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let data = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-p", &coord.url, data.path(), trace.path(), (0, 1), 0));
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    eventually("registered", WAIT, || {
        let mut op = op.clone();
        async move { op.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts.into_iter().find(|h| h.connected) }
    })
    .await;
    let first = op.ping_host(PingHostRequest { host_id: "hv-p".into(), timeout_ms: 5000 }).await.unwrap().into_inner();
    let second = op.ping_host(PingHostRequest { host_id: "hv-p".into(), timeout_ms: 5000 }).await.unwrap().into_inner();
    assert_eq!(first.host_id, "hv-p");
    assert!(second.command_id > first.command_id, "each command gets its own id");
    assert!(second.agent_uptime_ms >= first.agent_uptime_ms, "the answer comes from the running agent");
    // A host that never registered is not found; one whose agent is away (below) is unavailable.
    let err = op.ping_host(PingHostRequest { host_id: "nobody".into(), timeout_ms: 500 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    agent.stop().await;
    // A ping racing the closing session is ABORTED ("closed before it answered"); once closed,
    // pings are UNAVAILABLE. Nothing else may come back.
    let err = eventually("the stopped agent's session closes", WAIT, || {
        let mut op = op.clone();
        async move {
            let e = op.ping_host(PingHostRequest { host_id: "hv-p".into(), timeout_ms: 500 }).await.err()?;
            assert!(matches!(e.code(), tonic::Code::Aborted | tonic::Code::Unavailable), "{e}");
            (e.code() == tonic::Code::Unavailable).then_some(e)
        }
    })
    .await;
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_certificates_and_wrong_roles_are_refused() {
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;

    // A perfectly formed operator certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let other_ca = ClusterCa::generate("other").unwrap();
    let foreign = other_ca.issue_to(other.path(), "operator", Role::Operator, "mallory", &[]).unwrap();
    // The client trusts our coordinator (our CA), but presents the foreign certificate.
    let mixed = presage_protocol::tls::TlsFiles { ca: pki.dir.path().join("ca.pem"), ..foreign };
    let refused = match client(&coord.url, &mixed).await {
        Err(e) => presage_protocol::error_chain(&e),
        Ok(mut c) => c.status(StatusRequest {}).await.expect_err("a foreign certificate must not get an answer").to_string(),
    };
    assert!(!refused.is_empty());

    let mut op = client(&coord.url, &pki.issue(Role::Operator, "alice")).await.unwrap();
    let status = op.status(StatusRequest {}).await.unwrap().into_inner();
    assert!(status.tls_handshakes_refused >= 1, "the refusal is counted");
    assert!(status.last_refusal.contains("UnknownIssuer") || status.last_refusal.contains("unknown issuer"), "{}", status.last_refusal);

    // An agent certificate cannot use the operator API.
    let mut as_agent = client(&coord.url, &pki.issue(Role::Agent, "hv-1")).await.unwrap();
    let err = as_agent.list_hosts(ListHostsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // An agent may only register as the host its certificate names.
    let files = pki.issue(Role::Agent, "hv-1");
    let tls = files.load().unwrap();
    let ch = tonic::transport::Endpoint::from_shared(coord.url.clone())
        .unwrap()
        .tls_config(tls.client_config(presage_protocol::COORDINATOR_TLS_NAME))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let register = |host: &str| AgentMessage {
        body: Some(agent_message::Body::Register(Register {
            protocol_version: presage_protocol::PROTOCOL_VERSION,
            host_id: host.into(),
            capacity: Some(presage_protocol::pb::HostCapacity {
                cpu_cores: 1,
                cpu_mhz_per_core: 1.0,
                memory_bytes: 1,
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    let err = AgentLinkClient::new(ch.clone()).session(tokio_stream::iter(vec![register("hv-2")])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    // And an agent of a future protocol version is told which versions are supported.
    let mut future = register("hv-1");
    if let Some(agent_message::Body::Register(r)) = &mut future.body {
        r.protocol_version = presage_protocol::PROTOCOL_VERSION + 1;
    }
    let err = AgentLinkClient::new(ch).session(tokio_stream::iter(vec![future])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("supports"), "{}", err.message());
    assert!(op.list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts.is_empty(), "nothing registered");
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_forecast_their_vms_with_the_onnx_model_and_the_coordinator_shows_it() {
    let day = shared_data().join("planetlab/20110303");
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(5)).await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = simulated_agent(&pki, "hv-f", &coord.url, data.path(), &day, (0, 1), 4);
    // One trace step (5 minutes) per 100 ms sample: the model's 2 hours of history in 2.4 s.
    if let presage_agent::config::HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
        s.time_compression = 3000.0;
    }
    let archive = data.path().join("demand-archive");
    cfg.forecast.archive_dir = Some(archive.clone());
    let agent = RunningAgent::start(cfg);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let vms = eventually("every VM carries a forecast", WAIT, || {
        let mut op = op.clone();
        async move {
            let vms = op.list_vms(ListVmsRequest { host_id: "hv-f".into(), ..Default::default() }).await.ok()?.into_inner().vms;
            (vms.len() == 4 && vms.iter().all(|v| v.sample.as_ref().is_some_and(|s| s.forecast.is_some()))).then_some(vms)
        }
    })
    .await;
    for v in &vms {
        let s = v.sample.as_ref().unwrap();
        let f = s.forecast.as_ref().unwrap();
        assert_eq!(f.forecaster, "cpu-quantiles-v2", "{}", s.vm_id);
        assert_eq!((f.step_seconds, f.cpu_p50.len()), (300, 12));
        // The forecast starts at the step in progress, the one this sample belongs to.
        assert_eq!(f.first_step, v.trace.as_ref().unwrap().step, "{}", s.vm_id);
        for k in 0..12 {
            assert!(f.cpu_p10[k] <= f.cpu_p50[k] && f.cpu_p50[k] <= f.cpu_p90[k]);
        }
        // Memory rides along, for the same steps (the simulated PlanetLab VMs use all theirs).
        let m = f.memory.as_ref().unwrap_or_else(|| panic!("{}: no memory forecast", s.vm_id));
        assert_eq!((m.forecaster.as_str(), m.p50.len()), ("memory-quantiles-v2", 12));
        assert_eq!(s.memory_fraction(), Some(1.0));
        assert!(m.p90.iter().all(|p| *p > 0.9), "{}: {:?}", s.vm_id, m.p90);
        // The coordinator keeps the recent samples for `presagectl forecast`, oldest first, the
        // newest being this sample.
        assert!(v.usage_history.len() >= 24, "{}: {} points", s.vm_id, v.usage_history.len());
        assert!(v.usage_history.windows(2).all(|w| w[0].trace_step < w[1].trace_step));
        assert_eq!(v.usage_history.last().unwrap().cpu_utilisation, s.cpu_utilisation as f32);
        assert_eq!(v.usage_history.last().unwrap().memory_utilisation, 1.0);
        let chart = presagectl::view::ForecastReport::from(v.clone()).render(presagectl::view::Resource::Cpu);
        assert!(chart.contains("forecaster cpu-quantiles-v2") && chart.contains("+30 min"), "{chart}");
    }
    let hosts = op.clone().list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts;
    assert_eq!(hosts[0].agent.as_ref().unwrap().forecaster, "cpu-quantiles-v2");
    assert_eq!(hosts[0].agent.as_ref().unwrap().memory_forecaster, "memory-quantiles-v2");
    // `presagectl hosts --output json` says which forecasters run.
    let view = presagectl::view::HostView::from(hosts[0].clone());
    assert_eq!((view.forecaster.as_deref(), view.memory_forecaster.as_deref()), (Some("cpu-quantiles-v2"), Some("memory-quantiles-v2")));
    // Every report, forecasts included, passed the coordinator's validation.
    assert_eq!(op.clone().status(StatusRequest {}).await.unwrap().into_inner().reports_rejected, 0);
    agent.stop().await;
    coord.stop().await;

    // The agent archived every VM's steps as a trace folder: the replay starts at step 0 (the
    // epoch's month), one segment per VM, each step the trace's own value (a step the agent
    // missed holds the value of the step that filled it, at most an hour on).
    let month = archive.join("1970-1");
    let back = presage_traces::load_dir(&month, None, Default::default(), None).unwrap();
    let trace = presage_traces::load_dir(&day, None, presage_traces::Selection { limit: 4, ..Default::default() }, None).unwrap();
    assert_eq!(back.vms.len(), 4);
    for (vm, archived) in trace.vms.iter().zip(&back.vms) {
        assert_eq!(archived.name, format!("{}.0", presage_agent::demand_archive::encode_vm(&vm.name)));
        assert!(archived.len() >= 24, "{}: {} steps archived", vm.name, archived.len());
        let same = archived.cpu_series().iter().enumerate().filter(|(i, v)| vm.cpu_series()[*i] == **v).count();
        for (i, v) in archived.cpu_series().iter().enumerate() {
            assert!(vm.cpu_series()[i..(i + 13).min(vm.len())].contains(v), "{} step {i}: {v} is not the trace's", vm.name);
        }
        assert!(same * 2 >= archived.len(), "{}: only {same} of {} steps as sampled", vm.name, archived.len());
        // PlanetLab VMs hold their whole allocation.
        assert!(archived.memory_kb_series().iter().all(|kb| *kb as u64 * 1024 == archived.spec.memory_bytes));
    }
    // models/train.py (`--archive`) reads the same series from it.
    let script = "import json, sys\nfrom presage_models import traces\n\
                  print(json.dumps({n: c for n, (_, c, _) in traces.bitbrains_month(sys.argv[1]).items()}))";
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(&month)
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models"))
        .output()
        .expect("python3 (./presage.sh deps installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: std::collections::BTreeMap<String, Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(read.len(), 4);
    for archived in &back.vms {
        let py = &read[&archived.name];
        assert_eq!(py.len(), archived.len(), "{}", archived.name);
        assert!(py.iter().zip(archived.cpu_series()).all(|(a, b)| (*a as f32 - b).abs() < 1e-6), "{}", archived.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_plans_with_presage_and_explains_its_rankings() {
    let day = shared_data().join("planetlab/20110303");
    let pki = Pki::new();
    let coord = RunningCoordinator::start_with_policy(&pki, 0, Duration::from_secs(30), "presage").await;
    let data = tempfile::tempdir().unwrap();
    let a = RunningAgent::start(simulated_agent(&pki, "hv-a", &coord.url, &data.path().join("a"), &day, (0, 2), 6));
    let b = RunningAgent::start(simulated_agent(&pki, "hv-b", &coord.url, &data.path().join("b"), &day, (1, 2), 6));
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "alice")).await.unwrap();

    let plan = eventually("a presage plan over both hosts", WAIT, || {
        let mut op = op.clone();
        async move {
            let p = op.get_plan(presage_protocol::pb::GetPlanRequest {}).await.ok()?.into_inner();
            (p.available && p.hosts_considered == 2 && p.vms_considered == 12).then_some(p)
        }
    })
    .await;
    assert_eq!(plan.policy, "presage");
    let sums = |s: &presage_protocol::pb::HostScore| {
        let total: f64 = s.terms.iter().map(|t| t.contribution).sum();
        assert!((total - s.score).abs() < 1e-9, "{s:?}");
        for t in &s.terms {
            assert!((t.value * t.weight - t.contribution).abs() < 1e-12, "{t:?}");
        }
    };
    for m in &plan.moves {
        assert!(m.explained && m.benefit_j > m.cost_j, "{m:?}");
        let chosen = m.chosen.as_ref().unwrap();
        assert_eq!(chosen.host_id, m.to_host);
        sums(chosen);
        if let Some(r) = &m.runner_up {
            sums(r);
            assert!(r.score >= chosen.score);
        }
    }

    // A dry run: both hosts ranked, best first, each score the sum of its terms.
    let place = op
        .place(presage_protocol::pb::PlaceRequest { vcpus: 1, cpu_mhz_per_vcpu: 1000.0, memory_mib: 512.0, top: 10 })
        .await
        .unwrap()
        .into_inner();
    assert!(!place.ranking.is_empty() && place.feasible_hosts as usize >= place.ranking.len());
    assert!(place.ranking.windows(2).all(|w| w[0].score <= w[1].score));
    place.ranking.iter().for_each(sums);
    // Bad requests name the field.
    let e = op.place(presage_protocol::pb::PlaceRequest { vcpus: 0, memory_mib: 512.0, ..Default::default() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("vcpus"), "{e:?}");
    let e = op.place(presage_protocol::pb::PlaceRequest { vcpus: 1, memory_mib: -1.0, ..Default::default() }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("memory_mib"), "{e:?}");

    // Explain: the VM's own host is in its ranking, the others with a migration cost.
    let vm = op.list_vms(ListVmsRequest { host_id: "hv-a".into(), ..Default::default() }).await.unwrap().into_inner().vms[0]
        .sample
        .clone()
        .unwrap()
        .vm_id;
    let e = op.explain(presage_protocol::pb::ExplainRequest { vm_id: vm.clone(), top: 10 }).await.unwrap().into_inner();
    assert_eq!((e.vm_id.as_str(), e.host_id.as_str()), (vm.as_str(), "hv-a"));
    assert_eq!(e.demand_mean_mhz.len(), 6);
    // The spread its host's risk counts, per step, and the day's peak it reaches to.
    assert_eq!(e.demand_spread_mhz.len(), 6);
    assert!(e.demand_spread_mhz.iter().all(|s| *s > 0.0), "{:?}", e.demand_spread_mhz);
    assert!(e.demand_p90_mhz.iter().all(|p| e.demand_peak_mhz >= *p), "peak {} below a p90 {:?}", e.demand_peak_mhz, e.demand_p90_mhz);
    let here = e.ranking.iter().find(|s| s.host_id == "hv-a").expect("its own host is ranked");
    let migration = |s: &presage_protocol::pb::HostScore| s.terms.iter().find(|t| t.scorer == "migration").map_or(0.0, |t| t.value);
    assert_eq!(migration(here), 0.0);
    if let Some(other) = e.ranking.iter().find(|s| s.host_id == "hv-b") {
        assert!(migration(other) > 0.0, "{other:?}");
    }
    e.ranking.iter().for_each(sums);
    let e = op.explain(presage_protocol::pb::ExplainRequest { vm_id: "no-such-vm".into(), top: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_an_overcommitting_reservation_and_keeps_its_book_across_restarts_of_both_sides() {
    use presage_protocol::pb::{Release, Reserve, ReserveOnHostRequest};
    let trace = synthetic_trace(&[("vm-1", &[10, 20, 30, 40]), ("vm-2", &[50, 60, 70, 80])]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let port = coord.port;
    let data = tempfile::tempdir().unwrap();
    let cfg = simulated_agent(&pki, "hv-r", &coord.url, data.path(), trace.path(), (0, 1), 0);
    let agent = RunningAgent::start(cfg.clone());
    let op_files = pki.issue(Role::Operator, "ops");
    let mut op = client(&coord.url, &op_files).await.unwrap();
    let reports = |op: &presage_protocol::pb::operator_client::OperatorClient<_>| {
        let mut op = op.clone();
        async move {
            op.list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts.into_iter().find(|h| h.host_id == "hv-r" && h.reports >= 2)
        }
    };
    eventually("the host reports", WAIT, || reports(&op)).await;
    let reserve = |id: &str, memory_mib: f64| ReserveOnHostRequest {
        host_id: "hv-r".into(),
        reserve: Some(Reserve { id: id.into(), vm_id: format!("vm-{id}"), hard: true, cpu_mhz: 0.0, memory_mib, ttl_ms: 3_600_000 }),
        release: None,
    };
    // A zero-size reservation tells what the host has and what its VMs hold.
    let probe = op.reserve_on_host(reserve("probe", 0.0)).await.unwrap().into_inner();
    assert!(probe.accepted, "{probe:?}");
    let s = probe.state.unwrap();
    let free = s.capacity_memory_mib - s.committed_memory_mib;
    assert!(free > 0.0 && s.committed_memory_mib > 0.0, "{s:?}");
    let first = op.reserve_on_host(reserve("plan-1", free * 0.6)).await.unwrap().into_inner();
    assert!(first.accepted, "{first:?}");
    let second = op.reserve_on_host(reserve("plan-2", free * 0.6)).await.unwrap().into_inner();
    assert!(!second.accepted && second.refusal.contains("memory would be overcommitted"), "{second:?}");
    // Bad requests are named before they reach the agent.
    let e = op.reserve_on_host(reserve("bad", -1.0)).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("reserve.memory_mib"), "{e:?}");

    // Both sides restart: the coordinator forgets everything, the agent reloads its book.
    coord.stop().await;
    agent.stop().await;
    let agent = RunningAgent::start(cfg);
    let coord = RunningCoordinator::start(&pki, port, Duration::from_secs(30)).await;
    let mut op = client(&coord.url, &op_files).await.unwrap();
    eventually("the restarted host reports to the new coordinator", WAIT, || reports(&op)).await;
    let again = op.reserve_on_host(reserve("plan-2", free * 0.6)).await.unwrap().into_inner();
    assert!(!again.accepted && again.refusal.contains("overcommitted"), "{again:?}");
    let held: Vec<String> = again.state.unwrap().held.into_iter().map(|r| r.id).collect();
    assert!(held.contains(&"plan-1".to_string()) && !held.contains(&"plan-2".to_string()), "{held:?}");
    // Releasing the first frees room for the second.
    let rel = ReserveOnHostRequest { host_id: "hv-r".into(), reserve: None, release: Some(Release { id: "plan-1".into() }) };
    assert!(op.reserve_on_host(rel).await.unwrap().into_inner().accepted);
    assert!(op.reserve_on_host(reserve("plan-2", free * 0.6)).await.unwrap().into_inner().accepted);
    agent.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_automatic_mode_an_overloaded_simulated_host_is_relieved_and_every_vm_runs_exactly_once() {
    use presage_agent::config::HypervisorConfig;
    use presage_coordinator::config::{PolicyConfig, PolicyMode};
    use presage_protocol::pb::GetPlanRequest;
    // Four VMs at a steady 80 %: CloudSim sizes 2500, 2000, 1000, 500 MIPS in file order.
    let busy: Vec<u32> = vec![80; 288];
    let trace = synthetic_trace(&[("vm-1", &busy), ("vm-2", &busy), ("vm-3", &busy), ("vm-4", &busy)]);
    let pki = Pki::new();
    let policy =
        PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), mode: PolicyMode::Automatic, ..Default::default() };
    let coord = RunningCoordinator::start_with(&pki, 0, Duration::from_secs(30), policy).await;
    let data = tempfile::tempdir().unwrap();
    // hv-a replays vm-1 and vm-3 (2000 + 800 MIPS of demand) on one 2660-MIPS core: overloaded.
    let mut a_cfg = simulated_agent(&pki, "hv-a", &coord.url, &data.path().join("a"), trace.path(), (0, 2), 0);
    let mut b_cfg = simulated_agent(&pki, "hv-b", &coord.url, &data.path().join("b"), trace.path(), (1, 2), 0);
    if let HypervisorConfig::Simulated(s) = &mut a_cfg.hypervisor {
        s.cpu_cores = Some(1);
    }
    if let HypervisorConfig::Simulated(s) = &mut b_cfg.hypervisor {
        s.cpu_cores = Some(4);
    }
    let a = RunningAgent::start(a_cfg);
    let b = RunningAgent::start(b_cfg);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();

    let placement = eventually("a move applied and every VM reported exactly once", WAIT, || {
        let mut op = op.clone();
        async move {
            let plan = op.get_plan(GetPlanRequest {}).await.ok()?.into_inner();
            let done: Vec<_> = plan.applied.iter().filter(|m| m.outcome == "done").cloned().collect();
            if done.is_empty() {
                return None;
            }
            let vms = op.list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
            let mut seen: Vec<(String, String)> =
                vms.iter().map(|v| (v.sample.as_ref().unwrap().vm_id.clone(), v.host_id.clone())).collect();
            seen.sort();
            let ids: Vec<&str> = seen.iter().map(|(v, _)| v.as_str()).collect();
            (ids == ["vm-1", "vm-2", "vm-3", "vm-4"] && done.iter().all(|m| seen.iter().any(|(v, h)| *v == m.vm_id && *h == m.to_host)))
                .then_some((done, seen))
        }
    })
    .await;
    let (done, seen) = placement;
    assert!(done.iter().all(|m| m.from_host == "hv-a" && m.to_host == "hv-b"), "{done:?}");
    let on_a = seen.iter().filter(|(_, h)| h == "hv-a").count();
    assert!(on_a < 2, "hv-a still runs both VMs: {seen:?}");
    // The reservations the moves held became allocations: no hard one is left on either host
    // (soft ones record the VMs' expected growth).
    for host in ["hv-a", "hv-b"] {
        let held = held_reservations(op.clone(), host).await.unwrap();
        assert!(held.iter().all(|r| !r.hard && r.id == format!("growth/{host}")), "{host}: {held:?}");
    }
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_host_is_emptied_and_takes_vms_again_once_undrained() {
    use presage_agent::config::HypervisorConfig;
    use presage_coordinator::config::{PolicyConfig, PolicyMode};
    use presage_protocol::pb::SetDrainRequest;
    let quiet: Vec<u32> = vec![20; 288];
    let trace = synthetic_trace(&[("vm-1", &quiet), ("vm-2", &quiet), ("vm-3", &quiet), ("vm-4", &quiet)]);
    let pki = Pki::new();
    let policy =
        PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), mode: PolicyMode::Automatic, ..Default::default() };
    let coord = RunningCoordinator::start_with(&pki, 0, Duration::from_secs(30), policy).await;
    let data = tempfile::tempdir().unwrap();
    let mut cfgs = Vec::new();
    for (i, host) in ["hv-a", "hv-b"].iter().enumerate() {
        let mut cfg = simulated_agent(&pki, host, &coord.url, &data.path().join(host), trace.path(), (i, 2), 0);
        if let HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            s.cpu_cores = Some(4);
            s.memory_mb = Some(8192);
        }
        cfgs.push(cfg);
    }
    let agents: Vec<RunningAgent> = cfgs.into_iter().map(RunningAgent::start).collect();
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let hosts_of = |op: &presage_protocol::pb::operator_client::OperatorClient<_>| {
        let mut op = op.clone();
        async move {
            let vms = op.list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
            let mut v: Vec<(String, String)> = vms.into_iter().map(|v| (v.sample.unwrap().vm_id, v.host_id)).collect();
            v.sort();
            Some(v)
        }
    };
    eventually("both hosts report their VMs", WAIT, || async { hosts_of(&op).await.filter(|v| v.len() == 4) }).await;
    let e = op.set_drain(SetDrainRequest { host_id: "nowhere".into(), drain: true }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let r = op.set_drain(SetDrainRequest { host_id: "hv-a".into(), drain: true }).await.unwrap().into_inner();
    assert!(r.changed && r.draining == ["hv-a"]);
    let after = eventually("every VM off the drained host, each exactly once", WAIT, || async {
        hosts_of(&op).await.filter(|v| v.len() == 4 && v.iter().all(|(_, h)| h == "hv-b"))
    })
    .await;
    assert_eq!(after.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["vm-1", "vm-2", "vm-3", "vm-4"]);
    let r = op.set_drain(SetDrainRequest { host_id: "hv-a".into(), drain: false }).await.unwrap().into_inner();
    assert!(r.changed && r.draining.is_empty());
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
}

/// One overloaded simulated host (hv-a) and one with room (hv-b) under presage in automatic mode,
/// with `faults` injected into hv-a (the source) and hv-b (the destination). Waits for the first
/// applied move whose outcome is not `done`, and returns it with where every VM runs then.
async fn faulty_move(
    a_faults: presage_agent::config::SimulatedFaults,
    b_faults: presage_agent::config::SimulatedFaults,
) -> (presage_protocol::pb::AppliedMove, Vec<(String, String)>, Vec<presage_protocol::pb::ReservationEntry>) {
    use presage_agent::config::HypervisorConfig;
    use presage_coordinator::config::{PolicyConfig, PolicyMode};
    use presage_protocol::pb::GetPlanRequest;
    let busy: Vec<u32> = vec![80; 288];
    let trace = synthetic_trace(&[("vm-1", &busy), ("vm-2", &busy), ("vm-3", &busy), ("vm-4", &busy)]);
    let pki = Pki::new();
    let policy =
        PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), mode: PolicyMode::Automatic, ..Default::default() };
    let mut coord_cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy);
    coord_cfg.executor.timeout_floor_ms = 1500;
    coord_cfg.executor.assumed_mb_per_s = 1_000_000;
    let coord = RunningCoordinator::start_config(coord_cfg).await;
    let data = tempfile::tempdir().unwrap();
    let mut agents = Vec::new();
    for (i, (host, cores, faults)) in [("hv-a", 1, a_faults), ("hv-b", 4, b_faults)].into_iter().enumerate() {
        let mut cfg = simulated_agent(&pki, host, &coord.url, &data.path().join(host), trace.path(), (i, 2), 0);
        if let HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            s.cpu_cores = Some(cores);
            s.faults = faults;
        }
        agents.push(RunningAgent::start(cfg));
    }
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let failed = eventually("a move that did not go through", WAIT, || {
        let mut op = op.clone();
        async move { op.get_plan(GetPlanRequest {}).await.ok()?.into_inner().applied.into_iter().find(|m| m.outcome != "done") }
    })
    .await;
    // A VM that resumed on its source is in the source's next report (a paused one is not).
    let placement = eventually("all four VMs reported", WAIT, || {
        let op = op.clone();
        async move { placement(op).await.filter(|p| p.len() >= 4) }
    })
    .await;
    // Moves that ended released their hard reservations: with later passes retrying, wait for a
    // moment when no move is in flight.
    let held = eventually("no hard reservation left on the destination between moves", WAIT, || {
        let op = op.clone();
        async move { held_reservations(op, "hv-b").await.filter(|held| held.iter().all(|r| !r.hard)) }
    })
    .await;
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
    (failed, placement, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_hung_or_refused_move_leaves_every_vm_running_once_on_its_source() {
    use presage_agent::config::SimulatedFaults;
    let on_a = |p: &[(String, String)]| p.iter().filter(|(_, h)| h == "hv-a").map(|(v, _)| v.clone()).collect::<Vec<_>>();
    for (name, a, b, outcome, says) in [
        (
            "copy fails at 50 %",
            SimulatedFaults { fail_migration_at: Some(0.5), ..Default::default() },
            SimulatedFaults::default(),
            "failed",
            "failed at 50 %",
        ),
        ("copy hangs", SimulatedFaults { hang_migrations: true, ..Default::default() }, SimulatedFaults::default(), "aborted", "budget"),
        (
            "destination dies",
            SimulatedFaults::default(),
            SimulatedFaults { refuse_adopt: true, ..Default::default() },
            "rolled_back",
            "injected fault",
        ),
    ] {
        let (m, placement, held) = faulty_move(a, b).await;
        assert_eq!(m.outcome, outcome, "{name}: {m:?}");
        assert!(m.detail.contains(says), "{name}: {m:?}");
        // Every VM exactly once, and the two of hv-a still there.
        assert_eq!(placement.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["vm-1", "vm-2", "vm-3", "vm-4"], "{name}");
        assert_eq!(on_a(&placement), ["vm-1", "vm-3"], "{name}: {placement:?}");
        // Only soft reservations (expected growth) are left once no move is in flight.
        assert!(held.iter().all(|r| !r.hard && r.id.starts_with("growth/")), "{name}: {held:?}");
    }
}

/// Two simulated hosts under a coordinator whose `[executor] silent_destination_ms` is
/// `silent_ms`: hv-a runs vm-1 and vm-2, hv-b refuses hand-overs and keeps the refused VM as an
/// incoming instance for `linger`. Starts the move of vm-1 to hv-b and returns its plan id.
async fn move_to_a_lingering_destination(
    pki: &Pki,
    data: &Path,
    trace: &Path,
    linger: Duration,
    silent_ms: u64,
) -> (RunningCoordinator, Vec<RunningAgent>, presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>, u64) {
    use presage_agent::config::{HypervisorConfig, SimulatedFaults};
    use presage_protocol::pb::MoveVmRequest;
    let mut cfg = RunningCoordinator::config(pki, 0, Duration::from_secs(30), Default::default());
    cfg.executor.silent_destination_ms = silent_ms;
    let coord = RunningCoordinator::start_config(cfg).await;
    let mut agents = Vec::new();
    for (i, host) in ["hv-a", "hv-b"].into_iter().enumerate() {
        let mut cfg = simulated_agent(pki, host, &coord.url, &data.join(host), trace, (i, 2), 0);
        if let HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            s.cpu_cores = Some(4);
            if host == "hv-b" {
                s.faults = SimulatedFaults { refuse_adopt: true, linger_incoming: Some(linger), ..Default::default() };
            }
        }
        agents.push(RunningAgent::start(cfg));
    }
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let plan = eventually("both agents up and the move accepted", WAIT, || {
        let mut op = op.clone();
        async move { op.move_vm(MoveVmRequest { vm_id: "vm-1".into(), to_host: "hv-b".into() }).await.ok() }
    })
    .await
    .into_inner()
    .plan
    .unwrap()
    .id;
    (coord, agents, op, plan)
}

async fn presence(
    op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    host: &str,
) -> Option<presage_protocol::pb::VmPresence> {
    let mut op = op.clone();
    let r = presage_protocol::pb::InspectVmRequest { host_id: host.into(), vm_id: "vm-1".into() };
    op.inspect_vm(r).await.ok()?.into_inner().presence
}

async fn plan_info(
    op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    plan: u64,
) -> Option<presage_protocol::pb::PlanInfo> {
    let mut op = op.clone();
    op.list_plans(presage_protocol::pb::ListPlansRequest { plan_id: plan, limit: 0 }).await.ok()?.into_inner().plans.pop()
}

/// The move of vm-1 ended rolled back, its detail says `says` and that it stayed on hv-a, and
/// hv-a runs it, not migrating.
async fn rolled_back_to_hv_a(
    op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    ended: &presage_protocol::pb::PlanInfo,
    says: &str,
) {
    let m = &ended.moves[0];
    assert_eq!(m.step, "rolled_back", "{ended:?}");
    assert!(m.detail.contains(says) && m.detail.contains("stayed on hv-a"), "{ended:?}");
    let source = presence(op, "hv-a").await.unwrap();
    assert!(source.running && !source.migrating, "{source:?}");
}

/// A destination that keeps the incoming VM for a while after the move is abandoned (as libvirt
/// keeps its paused incoming domain after an abort): the move stays open until the destination
/// has let go, and only then ends `rolled_back` with the VM on its source alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_ends_only_after_its_destination_lets_go_of_the_incoming_vm() {
    let busy: Vec<u32> = vec![30; 288];
    let trace = synthetic_trace(&[("vm-1", &busy), ("vm-2", &busy)]);
    let (pki, data) = (Pki::new(), tempfile::tempdir().unwrap());
    let (coord, agents, op, plan) = move_to_a_lingering_destination(&pki, data.path(), trace.path(), Duration::from_secs(4), 600_000).await;
    // The plan is read before the destination is asked: a destination lets go once and for
    // all, so a plan seen finished must never be followed by a destination that still holds it.
    let open_while_held = std::sync::atomic::AtomicUsize::new(0);
    let ended = eventually("the move to end", Duration::from_secs(60), || {
        let (op, open_while_held) = (&op, &open_while_held);
        async move {
            let p = plan_info(op, plan).await?;
            let held = presence(op, "hv-b").await.expect("hv-b answers");
            if p.status == "running" {
                open_while_held.fetch_add(usize::from(held.incoming), std::sync::atomic::Ordering::Relaxed);
                return None;
            }
            assert!(!held.incoming && !held.running, "the move ended while hv-b still held vm-1: {held:?} ({p:?})");
            Some(p)
        }
    })
    .await;
    assert!(open_while_held.into_inner() > 0, "hv-b held the incoming vm-1 while the move was open");
    rolled_back_to_hv_a(&op, &ended, "did not take it").await;
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
}

/// The same destination goes silent while it holds the incoming VM: the move stays open, and
/// ends once the destination has been silent for `[executor] silent_destination_ms`, saying so,
/// with the VM running on its source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_whose_destination_stays_silent_ends_after_the_configured_time() {
    let busy: Vec<u32> = vec![30; 288];
    let trace = synthetic_trace(&[("vm-1", &busy), ("vm-2", &busy)]);
    let (pki, data) = (Pki::new(), tempfile::tempdir().unwrap());
    let (coord, mut agents, op, plan) =
        move_to_a_lingering_destination(&pki, data.path(), trace.path(), Duration::from_secs(600), 3_000).await;
    eventually("hv-b holding the incoming vm-1 while the move is open", WAIT, || {
        let op = &op;
        async move {
            let open = plan_info(op, plan).await?.status == "running";
            (open && presence(op, "hv-b").await?.incoming).then_some(())
        }
    })
    .await;
    agents.pop().unwrap().stop().await;
    let ended =
        eventually("the move to end", Duration::from_secs(60), || async { plan_info(&op, plan).await.filter(|p| p.status != "running") })
            .await;
    rolled_back_to_hv_a(&op, &ended, "hv-b has been silent").await;
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
}

/// A plan interrupted by a restart of the coordinator, then by a restart of the source agent,
/// then by the loss of the destination agent mid-copy:
/// the journal says where each move was, the reconciler (or the executor, once the agent is
/// back) settles it, and every VM ends on exactly one host with no hard reservation left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_the_coordinator_or_an_agent_mid_plan_leave_every_vm_on_one_host() {
    use presage_agent::config::{HypervisorConfig, SimulatedFaults};
    use presage_protocol::pb::{ListPlansRequest, MoveVmRequest};
    let busy: Vec<u32> = vec![50; 288];
    let trace = synthetic_trace(&[("vm-1", &busy), ("vm-2", &busy), ("vm-3", &busy), ("vm-4", &busy)]);
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), presage_coordinator::config::PolicyConfig::default());
    cfg.data_dir = Some(data.path().join("coordinator"));
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    cfg.listen = ([127, 0, 0, 1], coord.port).into();
    // Copies away from hv-a hang: every move stays "migrating" until something gives.
    let agent_cfg = |host: &str, shard: usize, url: &str| {
        let mut c = simulated_agent(&pki, host, url, &data.path().join(host), trace.path(), (shard, 2), 0);
        if let HypervisorConfig::Simulated(s) = &mut c.hypervisor {
            s.faults = SimulatedFaults { hang_migrations: host == "hv-a", ..Default::default() };
            // Room for every VM on either host.
            s.cpu_cores = Some(8);
            s.memory_mb = Some(16 << 10);
            // hv-b's copies take seconds (a slow link), so its destination can vanish mid-copy.
            if host == "hv-b" {
                s.migration_mb_per_s = Some(0.5);
            }
        }
        c
    };
    let a_cfg = agent_cfg("hv-a", 0, &coord.url);
    let mut agent_a = RunningAgent::start(a_cfg.clone());
    let agent_b = RunningAgent::start(agent_cfg("hv-b", 1, &coord.url));
    let operator = pki.issue(Role::Operator, "ops");
    let op = client(&coord.url, &operator).await.unwrap();
    let initial = eventually("both hosts reporting their two VMs", WAIT, || {
        let op = op.clone();
        async move { placement(op).await.filter(|p| p.len() == 4) }
    })
    .await;
    let on = |p: &[(String, String)], vm: &str| p.iter().filter(|(v, _)| v == vm).map(|(_, h)| h.clone()).collect::<Vec<_>>();
    assert_eq!(on(&initial, "vm-1"), ["hv-a"]);
    let step_of = |op: presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>, id: u64| async move {
        let mut op = op;
        let p = op.list_plans(ListPlansRequest { plan_id: id, limit: 0 }).await.ok()?.into_inner().plans.pop()?;
        Some((p.moves[0].step.clone(), p.moves[0].detail.clone()))
    };

    // 1. The coordinator restarts while vm-1's copy runs.
    let mut o = op.clone();
    let plan1 = o.move_vm(MoveVmRequest { vm_id: "vm-1".into(), to_host: "hv-b".into() }).await.unwrap().into_inner().plan.unwrap().id;
    eventually("vm-1 migrating", WAIT, || {
        let op = op.clone();
        async move { step_of(op, plan1).await.filter(|(s, _)| s == "migrating") }
    })
    .await;
    coord.stop().await;
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    let op = client(&coord.url, &operator).await.unwrap();
    let (step, detail) = eventually("the restarted coordinator to settle vm-1's move", WAIT, || {
        let op = op.clone();
        async move { step_of(op, plan1).await.filter(|(s, _)| s != "migrating") }
    })
    .await;
    assert_eq!(step, "aborted", "{detail}");
    assert!(detail.contains("interrupted while migrating") && detail.contains("stayed on hv-a"), "{detail}");

    // 2. The source agent restarts while vm-3's copy runs.
    let mut o = op.clone();
    let plan2 = eventually("the agents back on the new coordinator and the move accepted", WAIT, || {
        let mut o = o.clone();
        async move { o.move_vm(MoveVmRequest { vm_id: "vm-3".into(), to_host: "hv-b".into() }).await.ok() }
    })
    .await
    .into_inner()
    .plan
    .unwrap()
    .id;
    let _ = &mut o;
    eventually("vm-3 migrating", WAIT, || {
        let op = op.clone();
        async move { step_of(op, plan2).await.filter(|(s, _)| s == "migrating") }
    })
    .await;
    agent_a.stop().await;
    agent_a = RunningAgent::start(a_cfg.clone());
    let (step, detail) = eventually("vm-3's move to end", WAIT, || {
        let op = op.clone();
        async move { step_of(op, plan2).await.filter(|(s, _)| s != "migrating") }
    })
    .await;
    assert!(step == "failed" || step == "aborted", "{step}: {detail}");
    assert!(detail.contains("stayed on hv-a"), "{detail}");

    // 3. The destination dies while vm-2 is copied to it: the hand-over cannot reach it, the copy
    // is abandoned and vm-2 resumes on hv-b.
    let vm2_plan = eventually("hv-a back and the move accepted", WAIT, || {
        let mut o = op.clone();
        async move { o.move_vm(MoveVmRequest { vm_id: "vm-2".into(), to_host: "hv-a".into() }).await.ok() }
    })
    .await
    .into_inner()
    .plan
    .unwrap()
    .id;
    eventually("vm-2 migrating", WAIT, || {
        let op = op.clone();
        async move { step_of(op, vm2_plan).await.filter(|(s, _)| s == "migrating") }
    })
    .await;
    agent_a.stop().await;
    let (step, detail) = eventually("vm-2's move to end", Duration::from_secs(90), || {
        let op = op.clone();
        async move { step_of(op, vm2_plan).await.filter(|(s, _)| s != "migrating" && s != "handing_over") }
    })
    .await;
    assert_eq!(step, "rolled_back", "{detail}");
    assert!(detail.contains("did not take it") && detail.contains("stayed on hv-b"), "{detail}");
    agent_a = RunningAgent::start(a_cfg.clone());

    // Every VM on exactly one host, where it started; no hard reservation left.
    let after = eventually("all four VMs reported again", WAIT, || {
        let op = op.clone();
        async move { placement(op).await.filter(|p| p.len() == 4) }
    })
    .await;
    assert_eq!(after, initial, "every VM once, on its source");
    let held = held_reservations(op.clone(), "hv-b").await.unwrap();
    assert!(held.iter().all(|r| !r.hard), "{held:?}");
    agent_a.stop().await;
    agent_b.stop().await;
    coord.stop().await;
}

/// `[executor] on_failure = "rollback"`: a drain plan one of whose moves fails stops, and its
/// done move is reversed (a rollback plan), so the drained host ends as it began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_whose_move_fails_is_rolled_back_when_configured() {
    use presage_agent::config::{HypervisorConfig, SimulatedFaults};
    use presage_coordinator::config::PolicyConfig;
    use presage_decide::migration_queue::OnFailure;
    use presage_protocol::pb::{ListPlansRequest, SetDrainRequest};
    let busy: Vec<u32> = vec![30; 288];
    let names = ["vm-1", "vm-2", "vm-3", "vm-4", "vm-5", "vm-6"];
    let files: Vec<(&str, &[u32])> = names.iter().map(|n| (*n, busy.as_slice())).collect();
    let trace = synthetic_trace(&files);
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let policy = PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), ..Default::default() };
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy);
    cfg.data_dir = Some(data.path().join("coordinator"));
    cfg.executor.on_failure = OnFailure::Rollback;
    let coord = RunningCoordinator::start_config(cfg).await;
    let mut agents = Vec::new();
    for (i, host) in ["hv-a", "hv-b", "hv-c"].into_iter().enumerate() {
        // hv-a replays vm-1 and vm-4; moving vm-4 away fails halfway.
        let mut c = simulated_agent(&pki, host, &coord.url, &data.path().join(host), trace.path(), (i, 3), 0);
        if let HypervisorConfig::Simulated(s) = &mut c.hypervisor {
            s.cpu_cores = Some(8);
            s.memory_mb = Some(16 << 10);
            if host == "hv-a" {
                s.faults = SimulatedFaults { fail_vms: vec!["vm-4".into()], ..Default::default() };
            }
        }
        agents.push(RunningAgent::start(c));
    }
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let initial = eventually("six VMs reported", WAIT, || {
        let op = op.clone();
        async move { placement(op).await.filter(|p| p.len() == 6) }
    })
    .await;
    let on_a: Vec<&str> = initial.iter().filter(|(_, h)| h == "hv-a").map(|(v, _)| v.as_str()).collect();
    assert_eq!(on_a, ["vm-1", "vm-4"]);
    // Let the policy see the VMs before the drain.
    eventually("a policy pass over all six VMs", WAIT, || {
        let mut op = op.clone();
        async move { (op.get_plan(presage_protocol::pb::GetPlanRequest {}).await.ok()?.into_inner().vms_considered == 6).then_some(()) }
    })
    .await;
    let mut o = op.clone();
    o.set_drain(SetDrainRequest { host_id: "hv-a".into(), drain: true }).await.unwrap();
    let (drain, back) = eventually("the drain plan to fail and its rollback to finish", WAIT, || {
        let mut op = op.clone();
        async move {
            let plans = op.list_plans(ListPlansRequest { plan_id: 0, limit: 20 }).await.ok()?.into_inner().plans;
            let drain = plans.iter().find(|p| p.origin == "drain")?.clone();
            let back = plans.iter().find(|p| p.rollback_of == drain.id && p.status != "running")?.clone();
            Some((drain, back))
        }
    })
    .await;
    let steps: Vec<(&str, &str)> = drain.moves.iter().map(|m| (m.vm_id.as_str(), m.step.as_str())).collect();
    assert!(steps.contains(&("vm-1", "done")) && steps.contains(&("vm-4", "failed")), "{drain:?}");
    assert_eq!((drain.status.as_str(), drain.rolled_back_by), ("rolled_back", back.id));
    let vm1 = drain.moves.iter().find(|m| m.vm_id == "vm-1").unwrap();
    assert_eq!(back.moves.len(), 1, "only the done move is reversed: {back:?}");
    assert_eq!(
        (back.moves[0].vm_id.as_str(), back.moves[0].from_host.as_str(), back.moves[0].to_host.as_str(), back.moves[0].step.as_str()),
        ("vm-1", vm1.to_host.as_str(), "hv-a", "done")
    );
    let after = eventually("the VMs back where they were", WAIT, || {
        let op = op.clone();
        let initial = initial.clone();
        async move { placement(op).await.filter(|p| *p == initial) }
    })
    .await;
    assert_eq!(after.len(), 6, "every VM once");
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
}

/// A bundle (VMs a required dependency binds to one host) moves whole or not at all: the
/// destination holds every member's reservation before any member starts. With room for one
/// member only (an operator holds the rest), neither moves and no reservation of the plan is
/// left behind; with the room back, both move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_moves_whole_or_not_at_all() {
    use presage_coordinator::plan_journal::{MoveRecord, Step};
    use presage_protocol::pb::{Release, Reserve, ReserveOnHostRequest};
    let steady: Vec<u32> = vec![20; 288];
    let trace = synthetic_trace(&[("vm-1", &steady), ("vm-2", &steady), ("vm-3", &steady), ("vm-4", &steady)]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let data = tempfile::tempdir().unwrap();
    // hv-a replays vm-1 and vm-3, hv-b vm-2 and vm-4.
    let a = RunningAgent::start(simulated_agent(&pki, "hv-a", &coord.url, &data.path().join("a"), trace.path(), (0, 2), 0));
    let mut b_cfg = simulated_agent(&pki, "hv-b", &coord.url, &data.path().join("b"), trace.path(), (1, 2), 0);
    if let presage_agent::config::HypervisorConfig::Simulated(s) = &mut b_cfg.hypervisor {
        s.memory_mb = Some(16_384);
    }
    let b = RunningAgent::start(b_cfg);
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let memory_of = |vm: &str| {
        let state = coord.shared.state();
        state.hosts().find_map(|h| h.vms.get(vm).map(|s| s.memory_bytes as f64 / 1048576.0))
    };
    eventually("both hosts report their VMs", WAIT, || {
        let ok = ["vm-1", "vm-2", "vm-3", "vm-4"].iter().all(|v| memory_of(v).is_some());
        async move { ok.then_some(()) }
    })
    .await;
    let (m1, m3) = (memory_of("vm-1").unwrap(), memory_of("vm-3").unwrap());
    let reserve = |id: &str, memory_mib: f64| ReserveOnHostRequest {
        host_id: "hv-b".into(),
        reserve: Some(Reserve { id: id.into(), vm_id: "*".into(), hard: true, cpu_mhz: 0.0, memory_mib, ttl_ms: 3_600_000 }),
        release: None,
    };
    let probe = op.reserve_on_host(reserve("probe", 0.0)).await.unwrap().into_inner().state.unwrap();
    let free = probe.capacity_memory_mib - probe.committed_memory_mib;
    // Room for the bigger of the two, not for both.
    let blocker = free - m1.max(m3) - 1.0;
    assert!(blocker > 0.0, "{probe:?} {m1} {m3}");
    assert!(op.reserve_on_host(reserve("blocker", blocker)).await.unwrap().into_inner().accepted);

    let bundle = || {
        let mut one = MoveRecord::new("vm-1", "hv-a", "hv-b", "repair", 100.0, m1);
        one.with = vec!["vm-3".into()];
        let mut three = MoveRecord::new("vm-3", "hv-a", "hv-b", "repair", 100.0, m3);
        three.with = vec!["vm-1".into()];
        vec![one, three]
    };
    let plan = presage_coordinator::applier::record_plan(&coord.shared, "test", bundle(), None).unwrap();
    let ended = presage_coordinator::applier::execute(&coord.shared, plan, coord.shared.limits).await;
    assert!(ended.moves.iter().all(|m| m.step == Step::Refused && m.detail.contains("cannot hold the whole bundle")), "{ended:?}");
    let held = held_reservations(op.clone(), "hv-b").await.unwrap();
    assert!(held.iter().all(|r| !r.id.starts_with("plan-")), "the bundle's reservations are released: {held:?}");
    let on_a = vms_reported(&coord, "hv-a");
    assert!(on_a.contains(&"vm-1".to_string()) && on_a.contains(&"vm-3".to_string()), "{on_a:?}");

    let rel = ReserveOnHostRequest { host_id: "hv-b".into(), reserve: None, release: Some(Release { id: "blocker".into() }) };
    assert!(op.reserve_on_host(rel).await.unwrap().into_inner().accepted);
    let plan = presage_coordinator::applier::record_plan(&coord.shared, "test", bundle(), None).unwrap();
    let ended = presage_coordinator::applier::execute(&coord.shared, plan, coord.shared.limits).await;
    assert!(ended.moves.iter().all(|m| m.step == Step::Done), "{ended:?}");
    eventually("both VMs run on hv-b", WAIT, || {
        let on_b = vms_reported(&coord, "hv-b");
        async move { (on_b.contains(&"vm-1".to_string()) && on_b.contains(&"vm-3".to_string())).then_some(()) }
    })
    .await;
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}

/// The VMs `host` last reported.
fn vms_reported(coord: &RunningCoordinator, host: &str) -> Vec<String> {
    coord.shared.state().host(host).map(|h| h.vms.keys().cloned().collect()).unwrap_or_default()
}

/// A VM steady at 20 % that jumps to 95 %: its agent's detector reports the jump, the
/// coordinator keeps it, and `presagectl anomalies` and `explain` show it; the steady VM beside
/// it raises nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anomalous_vm_is_reported_by_its_agent_and_shown_by_the_coordinator() {
    use presage_agent::config::HypervisorConfig;
    use presage_protocol::pb::{ExplainRequest, ListAnomaliesRequest};
    let mut jumpy: Vec<u32> = vec![20; 60];
    jumpy.extend(vec![95; 228]);
    let steady: Vec<u32> = vec![30; 288];
    let trace = synthetic_trace(&[("vm-jump", &jumpy), ("vm-steady", &steady)]);
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let data = tempfile::tempdir().unwrap();
    let mut cfg = simulated_agent(&pki, "hv-a", &coord.url, data.path(), trace.path(), (0, 1), 0);
    if let HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
        // One trace step per 100 ms sampling cycle.
        s.time_compression = 3000.0;
    }
    let agent = RunningAgent::start(cfg);
    let mut op = client(&coord.url, &pki.issue(Role::Viewer, "vera")).await.unwrap();
    let events = eventually("the jump is reported", Duration::from_secs(60), || {
        let mut op = op.clone();
        async move {
            let a = op.list_anomalies(ListAnomaliesRequest { vm_id: String::new(), limit: 0 }).await.ok()?.into_inner().anomalies;
            a.iter().any(|e| e.vm_id == "vm-jump").then_some(a)
        }
    })
    .await;
    let jump = events.iter().find(|e| e.vm_id == "vm-jump").unwrap();
    assert_eq!((jump.host_id.as_str(), jump.series.as_str()), ("hv-a", "cpu"), "{jump:?}");
    assert!((jump.value - 0.95).abs() < 1e-6 && (jump.expected - 0.2).abs() < 0.05, "{jump:?}");
    assert!(events.iter().all(|e| e.vm_id != "vm-steady"), "{events:?}");
    let only = op.list_anomalies(ListAnomaliesRequest { vm_id: "vm-steady".into(), limit: 0 }).await.unwrap().into_inner().anomalies;
    assert!(only.is_empty(), "{only:?}");
    let table = presagectl::plan::render_anomalies(&events);
    assert!(table.contains("vm-jump") && table.contains("cpu"), "{table}");
    // explain shows the VM's anomalies once a plan exists.
    let e = eventually("explain answers", Duration::from_secs(30), || {
        let mut op = op.clone();
        async move { op.explain(ExplainRequest { vm_id: "vm-jump".into(), top: 3 }).await.ok().map(|r| r.into_inner()) }
    })
    .await;
    assert!(e.anomalies.iter().any(|a| a.series == "cpu"), "{e:?}");
    agent.stop().await;
    coord.stop().await;
}

/// Both daemons' Prometheus metrics, scraped and parsed by the official client's parser.
#[path = "cluster/metrics.rs"]
mod metrics;

/// The REST twins of the operator RPCs, and the API against its OpenAPI document (schemathesis).
#[path = "cluster/rest_contract.rs"]
mod rest_contract;

/// The web view in headless Chromium, driven by Playwright.
#[path = "cluster/web_view.rs"]
mod web_view;

/// presagectl's --watch and colour.
#[path = "cluster/cli_terminal.rs"]
mod cli_terminal;
