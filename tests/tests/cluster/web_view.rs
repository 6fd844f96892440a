//! The web view in a real browser: Debian's Chromium, driven by Playwright (`playwright-core`
//! from npm; `./presage.sh test` installs both and points `PRESAGE_PLAYWRIGHT` at the package),
//! with an operator's client certificate, against a coordinator and two simulated agents on
//! loopback. The overview, a host's VMs and one VM's page reached by clicks, the ecosystem graph
//! and the plans are compared with what the API says; a screenshot of each page is kept in
//! `target/artefacts/web/` (or `PRESAGE_ARTEFACTS`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use presage_protocol::pb::{ListHostsRequest, ListVmsRequest};
use presage_protocol::rest_client::RestClient;
use presage_protocol::tls::Role;
use presage_tests::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

fn rest(pki: &Pki, url: &str, role: Role, name: &str) -> RestClient {
    RestClient::new(url, &pki.issue(role, name).load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap()
}

fn playwright() -> PathBuf {
    let p: PathBuf = std::env::var_os("PRESAGE_PLAYWRIGHT").map(Into::into).unwrap_or_else(|| {
        panic!("PRESAGE_PLAYWRIGHT is not set: `./presage.sh test` installs playwright-core from npm and sets it (the playwright-core package folder)")
    });
    assert!(p.join("package.json").is_file(), "PRESAGE_PLAYWRIGHT={} is not the playwright-core package folder", p.display());
    p
}

fn artefacts() -> PathBuf {
    let dir = std::env::var_os("PRESAGE_ARTEFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artefacts"))
        .join("web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `rgb(r, g, b)` as numbers.
fn rgb(colour: &str) -> (f64, f64, f64) {
    let inner = colour.trim_start_matches("rgb(").trim_end_matches(')');
    let v: Vec<f64> = inner.split(',').map(|x| x.trim().parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_shows_the_cluster_a_vm_with_its_forecast_band_the_graph_and_the_plans_in_chromium() {
    let package = playwright();
    let chromium = std::env::var("PRESAGE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: ./presage.sh test installs Debian's chromium");
    let pki = Pki::new();
    let policy = presage_coordinator::config::PolicyConfig { interval: Duration::from_secs(1), ..Default::default() };
    let coord = RunningCoordinator::start_config(RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy)).await;
    let trace = synthetic_trace(&[
        ("vm-w-web", &[30u32; 200][..]),
        ("vm-w-db", &[45u32; 200][..]),
        ("vm-w-cache", &[20u32; 200][..]),
        ("vm-w-batch", &[60u32; 200][..]),
    ]);
    let data = tempfile::tempdir().unwrap();
    let (a, b) = two_simulated_agents(&pki, &coord.url, data.path(), trace.path());
    let op = client(&coord.url, &pki.issue(Role::Viewer, "lister")).await.unwrap();
    // Every VM reported with a forecast, and a policy pass run.
    let vms = eventually("four VMs with forecasts and a plan", WAIT, || {
        let op = op.clone();
        async move {
            let vms = op.clone().list_vms(ListVmsRequest::default()).await.ok()?.into_inner().vms;
            let forecast = vms.iter().all(|v| v.sample.as_ref().and_then(|s| s.forecast.as_ref()).is_some_and(|f| f.cpu_p50.len() > 1));
            let planned = op.clone().get_plan(presage_protocol::pb::GetPlanRequest {}).await.ok()?.into_inner().available;
            (vms.len() == 4 && forecast && planned).then_some(vms)
        }
    })
    .await;
    let admin = rest(&pki, &coord.url, Role::Admin, "ada");
    let declarations = json!([
        {"vm_name": "vm-w-web", "application": "shop", "profile": {"type": "web"},
         "dependencies": {"required": [{"type": "database", "network_latency_requirement": "< 1ms"}], "preferred": [{"type": "cache"}]}},
        {"vm_name": "vm-w-db", "application": "shop", "profile": {"type": "database"}},
        {"vm_name": "vm-w-cache", "application": "shop", "profile": {"type": "cache"}}
    ]);
    let r = admin.post("/v1/dependencies", &serde_json::to_vec(&declarations).unwrap()).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // A plan in the journal: the batch VM moved by an operator.
    let batch = vms.iter().find(|v| v.sample.as_ref().unwrap().name == "vm-w-batch").unwrap();
    let to = if batch.host_id == "hv-a" { "hv-b" } else { "hv-a" };
    let operator = rest(&pki, &coord.url, Role::Operator, "otto");
    let moved = operator.post("/v1/vms/vm-w-batch/move", json!({"to_host": to}).to_string().as_bytes()).await.unwrap();
    assert_eq!(moved.status, 200, "{moved:?}");
    let plan_id = moved.body["plan"]["id"].as_str().unwrap().to_string();

    // The browser, with the operator's certificate.
    let web = vms.iter().find(|v| v.sample.as_ref().unwrap().name == "vm-w-web").unwrap();
    let web_sample = web.sample.as_ref().unwrap();
    let files = pki.issue(Role::Operator, "browser");
    let shots = artefacts();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/browser.mjs");
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("PRESAGE_PLAYWRIGHT", &package)
        .env("PRESAGE_CHROMIUM", &chromium)
        .env("PRESAGE_URL", &coord.url)
        .env("PRESAGE_CERT", &files.cert)
        .env("PRESAGE_KEY", &files.key)
        .env("PRESAGE_SHOTS", &shots)
        .env("PRESAGE_VM", &web_sample.vm_id)
        .env("PRESAGE_HOST", &web.host_id)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running node {}: {e} (./presage.sh test installs nodejs)", script.display()));
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pages = &seen["pages"];

    // The overview lists every host the API knows, with the cluster's VM count.
    let hosts: BTreeSet<String> =
        op.clone().list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts.into_iter().map(|h| h.host_id).collect();
    let shown: BTreeSet<String> = pages["overview"]["hosts"].as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect();
    assert_eq!(shown, hosts);
    assert_eq!(pages["overview"]["tiles"][1], "4", "{pages}");
    assert_eq!(pages["overview"]["chart"], 1, "the cluster chart is drawn: {pages}");
    // The clicked host shows its VMs (the operator's move has ended by now: the plans page
    // shows it done, below).
    let on_host =
        op.clone().list_vms(ListVmsRequest { host_id: web.host_id.clone(), ..Default::default() }).await.unwrap().into_inner().vms.len();
    assert_eq!(pages["overview"]["vm_links"], on_host, "the clicked host shows its VMs: {pages}");

    // The VM page, reached by clicks: its host, and its CPU chart with the forecast band.
    let vm = &pages["vm"];
    assert_eq!(vm["hash"], format!("#/vm/{}", web_sample.vm_id));
    assert!(vm["title"].as_str().unwrap().contains("vm-w-web"), "{vm}");
    assert_eq!(vm["host"], web.host_id.as_str());
    let forecaster = &web_sample.forecast.as_ref().unwrap().forecaster;
    assert!(vm["chart_title"].as_str().unwrap().contains(forecaster.as_str()), "the chart names the forecaster {forecaster}: {vm}");
    let legend = vm["chart_series"].to_string();
    for series in ["measured", "forecast p50", "p10", "p90"] {
        assert!(legend.contains(series), "{series} is not on the chart: {legend}");
    }
    assert!(vm["explain_rows"].as_u64().unwrap() >= 1, "the ranking of hosts is shown: {vm}");
    assert!(vm["dependencies"].as_str().unwrap().contains("vm-w-db"), "its dependency edges are shown: {vm}");

    // The graph: the API's nodes and edges, coloured by score and satisfaction.
    let api_view = rest(&pki, &coord.url, Role::Viewer, "vera").get("/v1/ecosystem").await.unwrap().body;
    let graph = &pages["ecosystem"];
    let ids =
        |v: &Value, key: &str| -> BTreeSet<String> { v.as_array().unwrap().iter().map(|n| n[key].as_str().unwrap().to_string()).collect() };
    assert_eq!(ids(&graph["nodes"], "id"), ids(&api_view["nodes"], "vm"));
    assert_eq!(graph["edges"].as_array().unwrap().len(), api_view["edges"].as_array().unwrap().len());
    for node in api_view["nodes"].as_array().unwrap() {
        let drawn = graph["nodes"].as_array().unwrap().iter().find(|n| n["id"] == node["vm"]).unwrap();
        let (r, g, _) = rgb(drawn["colour"].as_str().unwrap());
        let score = node["score"].as_f64().unwrap();
        if score >= 0.99 {
            assert!(g > r, "a met VM is green: {drawn} {node}");
        } else if score <= 0.01 {
            assert!(r > g, "an unmet VM is red: {drawn} {node}");
        }
        assert_eq!(drawn["status"], node["status"]);
    }

    // The plans: the operator's move in the journal.
    let journal = pages["plans"]["journal"].as_array().unwrap();
    let plan = journal.iter().find(|p| p["id"] == plan_id.as_str()).unwrap_or_else(|| panic!("plan {plan_id} is not shown: {journal:?}"));
    assert!(plan["text"].as_str().unwrap().contains("vm-w-batch") && plan["text"].as_str().unwrap().contains("done"), "{plan}");

    // No script errors (the dependency 404 of a VM without a declaration is an answer, not one).
    let errors: Vec<&str> = seen["errors"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|e| !e.contains("404")).collect();
    assert!(errors.is_empty(), "the pages logged errors: {errors:?}");
    for page in ["overview", "vm", "ecosystem", "plans"] {
        let png = std::fs::read(shots.join(format!("{page}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{page}.png is not a screenshot of a page");
    }
    eprintln!("screenshots in {}", shots.display());
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}
