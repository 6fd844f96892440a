//! Staged rollouts end to end: a plan of resizes goes to a canary first, watched against the
//! plan's VMs still waiting; a canary made worse (its CPU below what it uses) is rolled back by
//! itself, a harmless plan goes on to every VM, and a coordinator restarted mid-watch finishes
//! what the journal says; the optimiser's plan for the live cluster goes out the same way, its
//! moves through the migration executor, asked for by an operator or by the coordinator's own
//! background pass. The configuration versions show every step.

use std::time::Duration;

use presage_protocol::pb::{ConfigHistoryRequest, ListRolloutsRequest, ListVmsRequest, PlannedResize, RolloutView, StartRolloutRequest};
use presage_protocol::tls::Role;
use presage_tests::*;
use tonic::transport::Channel;

type Operator = presage_protocol::pb::operator_client::OperatorClient<Channel>;

const WAIT: Duration = Duration::from_secs(60);
const VMS: usize = 10;

/// Ten VMs that use 60 % of their vCPUs all the time.
fn trace() -> tempfile::TempDir {
    let names: Vec<String> = (0..VMS).map(|i| format!("vm{i}")).collect();
    let busy = [60u32; 80];
    let vms: Vec<(&str, &[u32])> = names.iter().map(|n| (n.as_str(), &busy[..])).collect();
    synthetic_trace(&vms)
}

async fn reported_vcpus(op: &Operator) -> Option<f64> {
    let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
    let samples: Vec<_> = vms.into_iter().filter_map(|v| v.sample).collect();
    (samples.len() == VMS).then(|| samples[0].vcpus as f64)
}

/// A plan giving every VM `share` of its vCPUs.
fn plan(vcpus: f64, share: f64) -> StartRolloutRequest {
    StartRolloutRequest {
        changes: (0..VMS)
            .map(|i| PlannedResize {
                vm_id: format!("vm{i}"),
                cpu_cores: vcpus * share,
                memory_mib: 256.0,
                reason: format!("{share} of its vCPUs"),
                ..Default::default()
            })
            .collect(),
        canary_fraction: 0.2,
        watch_s: 4,
        seed: 1,
    }
}

async fn rollout(op: &Operator, id: u64) -> RolloutView {
    op.clone()
        .list_rollouts(ListRolloutsRequest { limit: 50 })
        .await
        .unwrap()
        .into_inner()
        .rollouts
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

async fn finished(op: &Operator, id: u64) -> RolloutView {
    let until = std::time::Instant::now() + WAIT;
    loop {
        let r = rollout(op, id).await;
        if r.phase == "done" || r.phase.starts_with("rolled back") {
            return r;
        }
        assert!(std::time::Instant::now() < until, "rollout {id} has not finished within {WAIT:?}: {:#?}", r.log);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn history(op: &Operator, vm: &str) -> Vec<presage_protocol::pb::ConfigVersion> {
    op.clone().config_history(ConfigHistoryRequest { vm_id: vm.into(), limit: 0 }).await.unwrap().into_inner().versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worse_canary_is_rolled_back_a_harmless_plan_goes_everywhere_and_a_restart_resumes() {
    let trace = trace();
    let pki = Pki::new();
    let store = tempfile::tempdir().unwrap();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), Default::default());
    cfg.data_dir = Some(store.path().into());
    let coord = RunningCoordinator::start_config(cfg.clone()).await;
    cfg.listen = ([127, 0, 0, 1], coord.port).into();
    let data = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(simulated_agent(&pki, "hv-r", &coord.url, data.path(), trace.path(), (0, 1), 0));
    let ops = pki.issue(Role::Operator, "ops");
    let op = client(&coord.url, &ops).await.unwrap();
    let vcpus = eventually("every VM is reported", WAIT, || reported_vcpus(&op)).await;
    // A watch's worth of samples before the first rollout (its baseline).
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Bad input is refused, naming what is wrong.
    let mut bad = plan(vcpus, 0.5);
    bad.canary_fraction = 1.5;
    let e = op.clone().start_rollout(bad).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("canary_fraction"), "{e:?}");
    let mut unknown = plan(vcpus, 0.5);
    unknown.changes[0].vm_id = "nope".into();
    let e = op.clone().start_rollout(unknown).await.unwrap_err();
    assert!(e.code() == tonic::Code::NotFound && e.message().contains("nope"), "{e:?}");

    // A quarter of their vCPUs, where they use 60 %: the canary is held at its quota (saturated)
    // while the control group is not, and the rollout puts it back by itself.
    let r = op.clone().start_rollout(plan(vcpus, 0.25)).await.unwrap().into_inner();
    assert_eq!(r.stages.len(), 2);
    let canary: Vec<String> = r.stages[0].split(',').map(String::from).collect();
    assert_eq!(canary.len(), 2, "20 % of ten");
    let done = finished(&op, r.id).await;
    assert!(done.phase.contains("cpu_saturation"), "{done:?}");
    assert!(done.applied.is_empty());
    for vm in &canary {
        let h = history(&op, vm).await;
        let steps: Vec<(&str, &str, f64)> =
            h.iter().map(|v| (v.proposed_by.as_str(), v.outcome.as_str(), v.config.unwrap().cpu_cores)).collect();
        let rollout_by = format!("rollout {}", r.id);
        assert_eq!(steps, [(rollout_by.as_str(), "applied", vcpus), (rollout_by.as_str(), "applied", vcpus * 0.25)], "{vm}: {h:?}");
        assert!(h[0].reason.contains("rolled back") && h.iter().all(|v| v.rollout_id == r.id));
    }
    let untouched = (0..VMS).map(|i| format!("vm{i}")).find(|v| !canary.contains(v)).unwrap();
    assert!(history(&op, &untouched).await.is_empty(), "the control group was never changed");

    // Nine tenths of their vCPUs: nothing gets worse, and the plan reaches every VM.
    let r = op.clone().start_rollout(plan(vcpus, 0.9)).await.unwrap().into_inner();
    let done = finished(&op, r.id).await;
    assert_eq!(done.phase, "done", "{done:?}");
    assert_eq!(done.applied.len(), VMS);
    assert_eq!(history(&op, &untouched).await[0].config.unwrap().cpu_cores, vcpus * 0.9);

    // A bad plan again, the coordinator stopped while its canary is watched: the restarted one
    // judges from the journal and rolls it back.
    let r = op.clone().start_rollout(plan(vcpus, 0.25)).await.unwrap().into_inner();
    eventually("the canary is watched", WAIT, || async { rollout(&op, r.id).await.phase.starts_with("watching").then_some(()) }).await;
    drop(op);
    coord.stop().await;
    let coord = RunningCoordinator::start_config(cfg).await;
    let op = client(&coord.url, &ops).await.unwrap();
    eventually("every VM is reported again", WAIT, || reported_vcpus(&op)).await;
    let done = finished(&op, r.id).await;
    assert!(done.phase.starts_with("rolled back"), "{done:?}");
    let canary: Vec<String> = done.stages[0].split(',').map(String::from).collect();
    for vm in &canary {
        assert_eq!(history(&op, vm).await[0].config.unwrap().cpu_cores, vcpus * 0.9, "{vm} put back to what it had");
    }
    agent.stop().await;
    coord.stop().await;
}

/// Two hosts, each replaying half of one trace folder of VMs that use a fifth of their vCPUs
/// (so a VM moved to the other host finds its trace there). Each host's cores are its VMs'
/// vCPUs (the simulator's default); memory for all ten, so that one host could take every VM
/// once they are sized to what they use.
struct LightCluster {
    a: RunningAgent,
    b: RunningAgent,
    _dirs: [tempfile::TempDir; 3],
}

impl LightCluster {
    fn start(pki: &Pki, url: &str) -> LightCluster {
        let names: Vec<String> = (0..VMS).map(|i| format!("vm{i}")).collect();
        let light = [20u32; 80];
        let all: Vec<(&str, &[u32])> = names.iter().map(|n| (n.as_str(), &light[..])).collect();
        let trace = synthetic_trace(&all);
        let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let roomy = |mut cfg: presage_agent::config::AgentConfig| {
            if let presage_agent::config::HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
                s.memory_mb = Some(64 * 1024);
            }
            cfg
        };
        let a = RunningAgent::start(roomy(simulated_agent(pki, "hv-a", url, data_a.path(), trace.path(), (0, 2), 0)));
        let b = RunningAgent::start(roomy(simulated_agent(pki, "hv-b", url, data_b.path(), trace.path(), (1, 2), 0)));
        LightCluster { a, b, _dirs: [trace, data_a, data_b] }
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimiser_plans_over_the_live_cluster_and_its_resizes_and_moves_go_out_through_a_canary_and_come_back() {
    use presage_protocol::pb::OptimiseClusterRequest;
    let half = VMS / 2;
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let cluster = LightCluster::start(&pki, &coord.url);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let vcpus = eventually("every VM is reported", WAIT, || reported_vcpus(&op)).await;
    // Some recent use to size from.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ask = |apply: bool| OptimiseClusterRequest { time_limit_s: 2, seed: 1, apply, canary_fraction: 0.2, watch_s: 3, last_pass: false };
    // No background pass is configured: there is no last one to show.
    let last = op.clone().optimise_cluster(OptimiseClusterRequest { last_pass: true, ..ask(false) }).await.unwrap_err();
    assert_eq!(last.code(), tonic::Code::NotFound, "{last:?}");
    let dry = op.clone().optimise_cluster(ask(false)).await.unwrap().into_inner();
    assert!(dry.rollout.is_none());
    assert!(!dry.resizes.is_empty(), "{dry:?}");
    for r in &dry.resizes {
        // Smaller than its vCPUs, never below the fifth it uses.
        assert!(r.cpu_cores < vcpus && r.cpu_cores >= vcpus * 0.2 - 1e-9, "{r:?}");
        assert!(!r.reason.is_empty());
    }
    // One host takes them all: the VMs of the other move.
    assert_eq!((dry.active_hosts_before, dry.active_hosts_after), (2, 1), "{dry:?}");
    assert_eq!(dry.moves.len(), half, "{dry:?}");
    assert!(dry.predicted_gain.contains_key("sla_risk") && dry.predicted_gain.contains_key("active_hosts"));
    assert!(history(&op, &dry.resizes[0].vm_id).await.is_empty(), "a dry run changes nothing");
    // A viewer may ask for a plan, not apply one.
    let viewer = client(&coord.url, &pki.issue(Role::Viewer, "eyes")).await.unwrap();
    assert!(viewer.clone().optimise_cluster(ask(false)).await.is_ok());
    assert_eq!(viewer.clone().optimise_cluster(ask(true)).await.unwrap_err().code(), tonic::Code::PermissionDenied);

    let applied = op.clone().optimise_cluster(ask(true)).await.unwrap().into_inner();
    let r = applied.rollout.expect("a rollout of the resizes");
    assert!(r.proposed_by.contains("optimiser"));
    assert_eq!(r.changes.iter().filter(|c| !c.to_host.is_empty()).count(), half, "the moves are in the rollout: {r:?}");
    let done = finished(&op, r.id).await;
    assert_eq!(done.phase, "done", "{done:?}");
    // Every change of every stage took effect (each stage's line reads "N of N applied").
    for stage in &done.stages {
        let n = stage.split(',').count();
        let line = format!("{n} of {n} applied");
        assert!(done.log.iter().any(|l| l.what.starts_with(&line)), "{line:?} not in {:?}", done.log);
    }
    // Moved by the migration executor: every VM on one host now, as the agents report.
    let hosts = eventually("every VM reported on one host", WAIT, || async {
        let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
        let mut hosts: Vec<String> = vms.iter().map(|v| v.host_id.clone()).collect();
        hosts.sort();
        hosts.dedup();
        (vms.len() == VMS && hosts.len() == 1).then_some(hosts)
    })
    .await;
    assert!(applied.moves.iter().all(|m| m.to_host == hosts[0]), "{:?} -> {hosts:?}", applied.moves);
    for c in &applied.resizes {
        let h = history(&op, &c.vm_id).await;
        assert_eq!(h[0].proposed_by, format!("rollout {}", r.id));
        assert_eq!(h[0].outcome, "applied");
        assert!(h[0].predicted_gain.contains_key("sla_risk"), "{:?}", h[0]);
    }

    // A plan that moves every VM to the empty host and starves it: the canary moves and
    // shrinks, does worse than the VMs still waiting, and comes back where it was, at its size.
    let (full, empty) = (hosts[0].clone(), if hosts[0] == "hv-a" { "hv-b" } else { "hv-a" });
    let mut starve = plan(vcpus, 0.05);
    let mut before = std::collections::BTreeMap::new();
    for c in &mut starve.changes {
        c.to_host = empty.into();
        // Only the CPU is starved: each VM keeps the memory it has.
        let now = history(&op, &c.vm_id).await.first().and_then(|v| v.config);
        c.memory_mib = now.map_or(c.memory_mib, |v| v.memory_mib);
        before.insert(c.vm_id.clone(), now.map_or(vcpus, |v| v.cpu_cores));
    }
    let r = op.clone().start_rollout(starve).await.unwrap().into_inner();
    let done = finished(&op, r.id).await;
    assert!(done.phase.starts_with("rolled back") && done.phase.contains("cpu_saturation"), "{done:?}");
    let canary: Vec<String> = done.stages[0].split(',').map(String::from).collect();
    // Moved back, as the agents report it (their reports may trail the executor's end).
    eventually("the canary reported back on its host", WAIT, || async {
        let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
        canary.iter().all(|vm| vms.iter().any(|v| v.sample.as_ref().is_some_and(|s| &s.vm_id == vm) && v.host_id == full)).then_some(())
    })
    .await;
    for vm in &canary {
        let h = history(&op, vm).await;
        assert_eq!(h[0].config.unwrap().cpu_cores, before[vm], "{vm} back at its size: {h:?}");
    }
    cluster.stop().await;
    coord.stop().await;
}

/// Two hosts, each half full of VMs that use a fifth of their vCPUs; the background pass
/// (`[optimiser] mode = "automatic"`) may start rollouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pass_rolls_its_plan_out_once_and_then_leaves_the_cluster_alone() {
    use presage_coordinator::config::{OptimiserConfig, OptimiserMode};
    use presage_protocol::pb::OptimiseClusterRequest;
    let pki = Pki::new();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), Default::default());
    let interval = Duration::from_secs(3);
    cfg.optimiser = OptimiserConfig {
        mode: OptimiserMode::Automatic,
        interval,
        time_limit: Duration::from_secs(1),
        threads: 1,
        min_gain: 0.05,
        canary: 0.2,
        watch: Duration::from_secs(3),
        balance_weight: 0.0,
        ..Default::default()
    };
    let coord = RunningCoordinator::start_config(cfg).await;
    let cluster = LightCluster::start(&pki, &coord.url);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let last = || async {
        op.clone().optimise_cluster(OptimiseClusterRequest { last_pass: true, ..Default::default() }).await.ok().map(|r| r.into_inner())
    };
    let background = || async {
        let all = op.clone().list_rollouts(ListRolloutsRequest { limit: 50 }).await.unwrap().into_inner().rollouts;
        all.into_iter().filter(|r| r.proposed_by == "optimiser (background pass)").collect::<Vec<_>>()
    };

    // The pass plans on its own: one host for every VM, and starts a rollout of it.
    let first = eventually("a rollout started by the background pass", WAIT, || async { background().await.into_iter().next() }).await;
    assert!(first.changes.iter().any(|c| !c.to_host.is_empty()), "the consolidation's moves are in it: {first:?}");
    let done = finished(&op, first.id).await;
    assert_eq!(done.phase, "done", "{done:?}");
    let ended = presage_coordinator::shared::unix_ms();
    // Passes while the rollout was open waited for it; the first pass after it sees a cluster
    // with nothing worth changing, and keeps its plan (if any) rather than start another.
    let after =
        eventually("a background pass after the rollout ended", WAIT, || async { last().await.filter(|p| p.ran_at_unix_ms > ended) }).await;
    assert!(after.rollout.is_none() && !after.note.starts_with("applied"), "{after:?}");
    assert!(after.note.starts_with("nothing to change") || after.note.starts_with("kept, not applied"), "{after:?}");
    assert_eq!(after.active_hosts_before, 1, "{after:?}");
    tokio::time::sleep(interval * 2).await;
    assert_eq!(background().await.len(), 1, "no second rollout for a cluster already optimised");
    cluster.stop().await;
    coord.stop().await;
}

/// A web VM on one host requires a database VM on the other within 1 ms: the optimiser may
/// consolidate the other VMs but moves neither of these two (the dependency repair does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_optimiser_leaves_vms_a_required_dependency_holds_where_they_are() {
    use presage_protocol::pb::{OptimiseClusterRequest, SetDependenciesRequest};
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let cluster = LightCluster::start(&pki, &coord.url);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    eventually("every VM is reported", WAIT, || reported_vcpus(&op)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.unwrap().into_inner().vms;
    let on = |host: &str| vms.iter().find(|v| v.host_id == host).and_then(|v| v.sample.as_ref()).map(|s| s.vm_id.clone()).unwrap();
    let (web, db) = (on("hv-a"), on("hv-b"));
    let declarations = serde_json::json!([
        {"vm_name": web, "profile": {"type": "web"},
         "dependencies": {"required": [{"type": "database", "network_latency_requirement": "< 1ms"}]}},
        {"vm_name": db, "profile": {"type": "database"}}
    ]);
    let ask = OptimiseClusterRequest { time_limit_s: 2, seed: 1, ..Default::default() };
    // Before: one host takes every VM, so one of the two moves.
    let free = op.clone().optimise_cluster(ask).await.unwrap().into_inner();
    assert_eq!(free.active_hosts_after, 1, "{free:?}");
    assert!(free.moves.iter().any(|m| m.vm_id == web || m.vm_id == db), "{:?}", free.moves);

    let mut admin = client(&coord.url, &pki.issue(Role::Admin, "ada")).await.unwrap();
    admin.set_dependencies(SetDependenciesRequest { declarations_json: declarations.to_string() }).await.unwrap();
    let held = op.clone().optimise_cluster(ask).await.unwrap().into_inner();
    assert!(held.moves.iter().all(|m| m.vm_id != web && m.vm_id != db), "{:?}", held.moves);
    // Each of them keeps its host busy: nothing to gain from moving the rest.
    assert_eq!(held.active_hosts_after, 2, "{held:?}");
    cluster.stop().await;
    coord.stop().await;
}

/// Four 2-core VMs in the Bitbrains format that read 20 to 40 MB/s and send 5 to 8 MB/s, on
/// two hosts with room in every dimension.
fn io_cluster(pki: &Pki, url: &str) -> (RunningAgent, RunningAgent, [tempfile::TempDir; 3]) {
    let trace = tempfile::tempdir().unwrap();
    for vm in 0..4 {
        let rows: String = (0..80u64)
            .map(|i| {
                let wave = (i % 6) as f64 / 5.0;
                let (read_kb, sent_kb) = (20_000.0 + 20_000.0 * wave, 5_000.0 + 3_000.0 * wave);
                format!(
                    "{};\t2;\t5000.0;\t1000.0;\t20.0;\t4194304.0;\t1048576.0;\t{read_kb};\t0.0;\t100.0;\t{sent_kb}\n",
                    1_372_629_804 + 300 * i
                )
            })
            .collect();
        std::fs::write(trace.path().join(format!("{vm}.csv")), format!("Timestamp [ms];\tCPU cores\n{rows}")).unwrap();
    }
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let roomy = |mut cfg: presage_agent::config::AgentConfig| {
        if let presage_agent::config::HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            s.memory_mb = Some(64 * 1024);
            s.nic_mbit_s = Some(10_000);
        }
        cfg.capacity.disk_mb_per_s = Some(2_000.0);
        cfg
    };
    let a = RunningAgent::start(roomy(simulated_agent(pki, "hv-a", url, data_a.path(), trace.path(), (0, 2), 0)));
    let b = RunningAgent::start(roomy(simulated_agent(pki, "hv-b", url, data_b.path(), trace.path(), (1, 2), 0)));
    (a, b, [trace, data_a, data_b])
}

/// The VM's reported disk rate (reads and writes), bytes per second.
async fn disk_rate(op: &Operator, vm: &str) -> Option<f64> {
    let vms = op.clone().list_vms(ListVmsRequest { vm_id: vm.into(), ..Default::default() }).await.ok()?.into_inner().vms;
    vms.into_iter().find_map(|v| v.sample).map(|s| s.disk_read_bytes_per_s + s.disk_write_bytes_per_s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_and_network_limits_go_from_the_optimisers_plan_to_the_agents_and_cap_what_the_vms_do() {
    use presage_protocol::pb::{ListLeasesRequest, OptimiseClusterRequest, ResizeVmRequest};
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let (a, b, _dirs) = io_cluster(&pki, &coord.url);
    let op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    eventually("every VM is reported with its disk traffic", WAIT, || async {
        let vms = op.clone().list_vms(ListVmsRequest::default()).await.ok()?.into_inner().vms;
        (vms.len() == 4 && vms.iter().all(|v| v.sample.as_ref().is_some_and(|s| s.disk_read_bytes_per_s > 0.0))).then_some(())
    })
    .await;
    // Some recent use to size from.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let ask = OptimiseClusterRequest { time_limit_s: 2, seed: 1, apply: true, canary_fraction: 0.5, watch_s: 2, last_pass: false };
    let applied = op.clone().optimise_cluster(ask).await.unwrap().into_inner();
    let limited: Vec<&PlannedResize> = applied.resizes.iter().filter(|r| r.disk_bytes_per_s.is_some_and(|d| d > 0.0)).collect();
    assert!(!limited.is_empty(), "hosts that say their disk bandwidth get disk limits planned: {:?}", applied.resizes);
    for r in &limited {
        // Never below what it was seen to read (40 MB/s at the top of its wave).
        assert!(r.disk_bytes_per_s.unwrap() >= 40e6 * 0.999, "{r:?}");
    }
    let done = finished(&op, applied.rollout.expect("a rollout").id).await;
    assert_eq!(done.phase, "done", "{done:?}");
    // Each host's agent holds the limits in its resize records, and the versions say so.
    let leases = op.clone().list_leases(ListLeasesRequest::default()).await.unwrap().into_inner();
    for r in &limited {
        let entry = leases.hosts.iter().filter_map(|h| h.state.as_ref()).flat_map(|s| &s.resizes).find(|e| e.vm_id == r.vm_id);
        assert_eq!(entry.and_then(|e| e.disk_bytes_per_s), r.disk_bytes_per_s, "{:?}", entry);
        assert_eq!(entry.and_then(|e| e.net_bytes_per_s), r.net_bytes_per_s, "{:?}", entry);
        let h = history(&op, &r.vm_id).await;
        assert_eq!(h[0].config.unwrap().disk_bytes_per_s, r.disk_bytes_per_s, "{h:?}");
        assert_eq!(h[0].outcome, "applied");
    }

    // An operator's limit far below what the VM reads caps it; 0 lifts the cap.
    let vm = limited[0].vm_id.clone();
    let mib = 1_048_576.0;
    let resize = |disk: f64| ResizeVmRequest {
        vm_id: vm.clone(),
        cpu_cores: limited[0].cpu_cores,
        memory_mib: limited[0].memory_mib,
        disk_bytes_per_s: Some(disk),
        ..Default::default()
    };
    let e = op.clone().resize_vm(resize(1000.0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("disk_bytes_per_s"), "{e:?}");
    assert!(op.clone().resize_vm(resize(2.0 * mib)).await.unwrap().into_inner().accepted);
    eventually("its reads held to 2 MiB/s", WAIT, || async { disk_rate(&op, &vm).await.filter(|r| *r <= 2.0 * mib + 1.0) }).await;
    assert!(op.clone().resize_vm(resize(0.0)).await.unwrap().into_inner().accepted);
    eventually("its reads back above 20 MB/s", WAIT, || async { disk_rate(&op, &vm).await.filter(|r| *r >= 20e6 * 0.999) }).await;
    a.stop().await;
    b.stop().await;
    coord.stop().await;
}
