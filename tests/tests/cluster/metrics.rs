//! Both daemons' `/metrics`, scraped over loopback as Prometheus would (the coordinator on its
//! mutual-TLS listener and on its plain port, the agent on its plain port) and parsed by the
//! official Prometheus client's OpenMetrics parser (Debian's python3-prometheus-client, which
//! `./presage.sh deps` installs): the exposition is valid, the counters move between scrapes,
//! roles are enforced, and no label carries a VM id.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use presage_protocol::metrics_endpoint::MetricsConfig;
use presage_protocol::pb::ListVmsRequest;
use presage_protocol::rest_client::RestClient;
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// Each sample of a parsed exposition: name -> [(labels, value)].
type Samples = BTreeMap<String, Vec<(BTreeMap<String, String>, f64)>>;

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;

/// The exposition parsed by the OpenMetrics parser (which refuses anything invalid).
fn parse(text: &str) -> Samples {
    let python = "/usr/bin/python3";
    let mut child = std::process::Command::new(python)
        .args(["-c", PARSER])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python}: {e} (./presage.sh deps installs python3 and python3-prometheus-client)"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition (or is missing: ./presage.sh deps installs python3-prometheus-client): {stderr}\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(s: &Samples, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = s.get(name).and_then(|v| v.iter().find(|(l, _)| label.is_none_or(|(k, val)| l.get(k).map(String::as_str) == Some(val))));
    found.unwrap_or_else(|| panic!("no {name} {label:?} in {:?}", s.keys().collect::<Vec<_>>())).1
}

fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_daemons_expose_metrics_a_stock_prometheus_parses_and_the_counters_move() {
    let pki = Pki::new();
    let policy = presage_coordinator::config::PolicyConfig { interval: Duration::from_secs(1), ..Default::default() };
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy);
    cfg.metrics = MetricsConfig { listen: Some("127.0.0.1:0".parse().unwrap()) };
    let coord = RunningCoordinator::start_config(cfg).await;
    let coord_metrics = coord.metrics_addr.expect("the plain metrics port is bound");
    let trace = synthetic_trace(&[("vm-metrics-a", &[30u32; 40][..]), ("vm-metrics-b", &[50u32; 40][..])]);
    let data = tempfile::tempdir().unwrap();
    let mut agent_cfg = simulated_agent(&pki, "hv-m", &coord.url, data.path(), trace.path(), (0, 1), 0);
    let agent_metrics = free_port();
    agent_cfg.metrics = MetricsConfig { listen: Some(agent_metrics) };
    let agent = RunningAgent::start(agent_cfg);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    eventually("both VMs reported", WAIT, || async {
        let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
        (vms.len() == 2).then_some(())
    })
    .await;

    let first = parse(&tokio::task::spawn_blocking(move || scrape_metrics(coord_metrics)).await.unwrap());
    assert_eq!(value(&first, "presage_build_info", Some(("component", "coordinator"))), 1.0);
    assert_eq!(value(&first, "presage_hosts", Some(("state", "reachable"))), 1.0);
    assert_eq!(value(&first, "presage_vms", None), 2.0);
    let ingested = value(&first, "presage_reports_received_total", Some(("outcome", "ingested")));
    assert!(ingested >= 1.0);
    assert!(value(&first, "presage_report_ingest_seconds_count", None) >= ingested);

    let agent_first = parse(&tokio::task::spawn_blocking(move || scrape_metrics(agent_metrics)).await.unwrap());
    assert_eq!(value(&agent_first, "presage_agent_build_info", Some(("component", "agent"))), 1.0);
    assert_eq!(value(&agent_first, "presage_agent_vms", None), 2.0);
    assert!(value(&agent_first, "presage_agent_resident_memory_bytes", None) > 1e6);
    let samples = value(&agent_first, "presage_agent_sampling_seconds_count", None);
    assert!(samples >= 1.0 && value(&agent_first, "presage_agent_reports_total", None) >= 1.0);

    // A command's round trip is timed by kind and outcome.
    op.clone().ping_host(presage_protocol::pb::PingHostRequest { host_id: "hv-m".into(), timeout_ms: 10_000 }).await.unwrap();
    // Counters move: more reports ingested, policy passes (one a second here), more cycles sampled.
    let later = eventually("more reports ingested and a policy pass", WAIT, || async move {
        let s = parse(&tokio::task::spawn_blocking(move || scrape_metrics(coord_metrics)).await.unwrap());
        let moved = value(&s, "presage_reports_received_total", Some(("outcome", "ingested"))) > ingested
            && value(&s, "presage_policy_pass_seconds_count", None) >= 1.0;
        moved.then_some(s)
    })
    .await;
    assert!(value(&later, "presage_report_ingest_seconds_sum", None) >= value(&first, "presage_report_ingest_seconds_sum", None));
    let pings = later["presage_agent_command_seconds_count"].iter().find(|(l, _)| l["kind"] == "ping" && l["outcome"] == "answered");
    assert_eq!(pings.map(|p| p.1), Some(1.0), "{:?}", later.get("presage_agent_command_seconds_count"));
    // More cycles; and once forecasts meet their outcomes, the models' health per resource.
    let agent_later = eventually("more sampling cycles and judged forecasts", WAIT, || async move {
        let s = parse(&tokio::task::spawn_blocking(move || scrape_metrics(agent_metrics)).await.unwrap());
        let judged = s.get("presage_agent_forecast_outcomes").is_some_and(|v| v.iter().any(|(l, x)| l["resource"] == "cpu" && *x > 0.0));
        (value(&s, "presage_agent_sampling_seconds_count", None) > samples && judged).then_some(s)
    })
    .await;
    let coverage = value(&agent_later, "presage_agent_forecast_coverage", Some(("resource", "cpu")));
    assert!((0.0..=1.0).contains(&coverage), "{coverage}");
    let losses = &agent_later["presage_agent_forecast_pinball"];
    assert!(
        losses.iter().any(|(l, _)| l["forecaster"] == "model") && losses.iter().any(|(l, _)| l["forecaster"] == "baseline"),
        "{losses:?}"
    );
    assert!(losses.iter().all(|(_, x)| x.is_finite() && *x >= 0.0), "{losses:?}");

    // No label value is a VM id (nor a host id): series stay bounded whatever the cluster size.
    for (name, series) in later.iter().chain(agent_first.iter()) {
        for (labels, _) in series {
            for v in labels.values() {
                assert!(!v.contains("vm-metrics") && v != "hv-m", "{name} carries {v}");
            }
        }
    }

    // The same over mutual TLS: the metrics role and the people roles may scrape; an agent may not.
    let get = |role: Role, name: &str| {
        let files = pki.issue(role, name);
        let client = RestClient::new(&coord.url, &files.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap();
        async move { client.get_raw("/metrics").await.unwrap() }
    };
    let (status, body) = get(Role::Metrics, "prometheus").await;
    assert_eq!(status, 200);
    let over_tls = parse(std::str::from_utf8(&body).unwrap());
    assert!(value(&over_tls, "presage_reports_received_total", Some(("outcome", "ingested"))) >= ingested);
    assert_eq!(get(Role::Viewer, "vera").await.0, 200);
    assert_eq!(get(Role::Agent, "hv-x").await.0, 403);
    // A metrics certificate reads nothing else.
    let files = pki.issue(Role::Metrics, "prometheus");
    let scraper = client(&coord.url, &files).await.unwrap();
    let denied = scraper.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    agent.stop().await;
    coord.stop().await;
}

/// The committed learned shortfall model.
fn shortfall_model() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/placement-shortfall-v1.onnx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_a_learned_model_explains_its_shortfall_term_and_counts_the_guardrails_verdicts() {
    let day = shared_data().join("planetlab/20110303");
    let pki = Pki::new();
    let mut policy =
        presage_coordinator::config::PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), ..Default::default() };
    policy.presage.learned_model = Some(shortfall_model());
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy.clone());
    cfg.metrics = MetricsConfig { listen: Some("127.0.0.1:0".parse().unwrap()) };
    let coord = RunningCoordinator::start_config(cfg).await;
    let coord_metrics = coord.metrics_addr.expect("the plain metrics port is bound");
    let data = tempfile::tempdir().unwrap();
    let a = RunningAgent::start(simulated_agent(&pki, "hv-la", &coord.url, &data.path().join("a"), &day, (0, 2), 4));
    let b = RunningAgent::start(simulated_agent(&pki, "hv-lb", &coord.url, &data.path().join("b"), &day, (1, 2), 4));
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let vm = eventually("both hosts' VMs reported", WAIT, || {
        let mut op = op.clone();
        async move {
            let vms = op.list_vms(ListVmsRequest { host_id: "hv-la".into(), ..Default::default() }).await.ok()?.into_inner().vms;
            let hosts = op.list_hosts(presage_protocol::pb::ListHostsRequest {}).await.ok()?.into_inner().hosts;
            (vms.len() == 4 && hosts.len() == 2).then(|| vms[0].sample.clone().unwrap().vm_id)
        }
    })
    .await;

    // Explain ranks every host with the learned term beside the hand-set ones; each score is
    // still the sum of its terms, and the term is a probability.
    let e = eventually("explain with a shortfall term", WAIT, || {
        let (mut op, vm) = (op.clone(), vm.clone());
        async move {
            let e = op.explain(presage_protocol::pb::ExplainRequest { vm_id: vm, top: 10 }).await.ok()?.into_inner();
            e.ranking.iter().any(|s| s.terms.iter().any(|t| t.scorer == "shortfall")).then_some(e)
        }
    })
    .await;
    for s in &e.ranking {
        let t = s.terms.iter().find(|t| t.scorer == "shortfall").unwrap_or_else(|| panic!("{s:?}"));
        assert!((0.0..=1.0).contains(&t.value) && t.weight == policy.presage.learned.weight, "{t:?}");
        let total: f64 = s.terms.iter().map(|t| t.contribution).sum();
        assert!((total - s.score).abs() < 1e-9, "{s:?}");
    }

    // The passes' candidates are counted by the guardrail's verdict.
    let counted = eventually("the learned scorer's verdicts counted", WAIT, || async move {
        let s = parse(&tokio::task::spawn_blocking(move || scrape_metrics(coord_metrics)).await.unwrap());
        let total: f64 = s.get("presage_learned_candidates_total")?.iter().map(|(_, v)| v).sum();
        (total > 0.0).then_some(s)
    })
    .await;
    let verdicts: Vec<&str> = counted["presage_learned_candidates_total"].iter().map(|(l, _)| l["verdict"].as_str()).collect();
    for v in ["model", "out_of_range", "disagreed", "failed"] {
        assert!(verdicts.contains(&v), "{verdicts:?}");
    }
    assert_eq!(value(&counted, "presage_learned_candidates_total", Some(("verdict", "failed"))), 0.0);
    a.stop().await;
    b.stop().await;
    coord.stop().await;

    // A model that cannot be loaded stops the coordinator at start, naming the setting and file.
    let mut broken = policy;
    broken.presage.learned_model = Some(data.path().join("missing-shortfall.onnx"));
    let cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), broken);
    let e = presage_coordinator::server::Coordinator::bind(cfg, tokio_util::sync::CancellationToken::new()).await.err().expect("refused");
    let text = format!("{e:#}");
    assert!(text.contains("[policy.presage] learned_model") && text.contains("missing-shortfall.onnx"), "{text}");
}
