//! The fault suite's coordinator part: coordinator processes (the real binary) on a 3-member
//! etcd cluster. The leader killed with SIGKILL at random moments and in the middle of
//! migrations (`PRESAGE_FAILOVER_TRIALS`, default 20), frozen with SIGSTOP past its lease, and
//! `cluster status` through it all. `PRESAGE_FAILOVER_LEASE_S` sets the lease (default 2 s;
//! shipped: 5 s).

use std::time::{Duration, Instant};

use presage_protocol::pb::{
    ClusterStatusRequest, ConfigHistoryRequest, InspectVmRequest, ListPlansRequest, MoveVmRequest, PingHostRequest, ResizeVmRequest,
};
use presage_protocol::tls::{Role, TlsFiles};
use presage_store::{EtcdConfig, EtcdStore};
use presage_tests::coordinator_process::CoordinatorProcess;
use presage_tests::etcd::{EtcdCluster, free_port};
use presage_tests::*;

/// The leader's lease, whole seconds (`PRESAGE_FAILOVER_LEASE_S`, default 2; the shipped
/// default is 5), renewed every 0.3 of it.
fn lease_s() -> u64 {
    std::env::var("PRESAGE_FAILOVER_LEASE_S").ok().and_then(|t| t.parse().ok()).filter(|s| *s >= 2).unwrap_or(2)
}

fn config_text(port: u16, tls: &TlsFiles, endpoints: &[String]) -> String {
    let (lease, renew_ms) = (lease_s(), lease_s() * 300);
    let list = endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "listen = \"127.0.0.1:{port}\"\nhost_timeout = \"30s\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [cluster]\nstore = \"etcd\"\nelection = true\nlease_ttl = \"{lease}s\"\nrenew_every = \"{renew_ms}ms\"\n\n\
         [cluster.etcd]\nendpoints = [{list}]\nprefix = \"presage-failover/\"\n",
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    )
}

/// Two coordinator processes on a 3-member etcd, electing a leader.
struct Pair {
    bin: std::path::PathBuf,
    etcd: EtcdCluster,
    pki: Pki,
    dir: tempfile::TempDir,
    urls: Vec<String>,
    coordinators: Vec<CoordinatorProcess>,
    /// A plain store on the same etcd, to read who leads.
    watcher: EtcdStore,
}

impl Pair {
    fn start() -> Pair {
        let bin = built_binaries(&["presage-coordinator"]);
        let etcd = EtcdCluster::start(3);
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port()];
        let urls: Vec<String> = ports.iter().map(|p| format!("https://127.0.0.1:{p}")).collect();
        let tls = pki.issue(Role::Coordinator, "coordinator");
        let coordinators = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let config = dir.path().join(format!("c{i}.toml"));
                std::fs::write(&config, config_text(*port, &tls, &etcd.endpoints())).unwrap();
                CoordinatorProcess::start(&bin, config, dir.path().join(format!("c{i}.log")))
            })
            .collect();
        let watcher = EtcdStore::connect(&EtcdConfig {
            endpoints: etcd.endpoints(),
            prefix: "presage-failover/".into(),
            tls: None,
            request_timeout: Duration::from_secs(5),
        })
        .unwrap();
        Pair { bin, etcd, pki, dir, urls, coordinators, watcher }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The leader frozen (SIGSTOP) for three leases while operators keep asking it for resizes and
/// pings, then resumed: a standby leads meanwhile; when the frozen one runs again, every write
/// and every command it was asked for is refused (its mandate ran out while it was stopped:
/// its store writes nothing, its sessions send nothing), none of those resizes is in the new
/// leader's history, and it steps down by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_and_resumed_has_every_write_and_command_refused() {
    let wait = Duration::from_secs(60);
    let Pair { bin: _bin, mut etcd, pki, dir: _dir, urls, mut coordinators, watcher } = Pair::start();
    let leader = || {
        let watcher = watcher.clone();
        async move { watcher.leader("coordinator").await.ok().flatten() }
    };
    let first = eventually("a coordinator leads", wait, leader).await;
    let frozen = urls.iter().position(|u| *u == first.value).expect("the leader is one of ours");
    let trace = synthetic_trace(&[("web", &[30; 40])]);
    let data = tempfile::tempdir().unwrap();
    let mut agent_cfg = simulated_agent(&pki, "hv-a", &urls[frozen], data.path(), trace.path(), (0, 1), 0);
    agent_cfg.coordinator = presage_agent::config::CoordinatorUrls(urls.clone());
    let agent = RunningAgent::start(agent_cfg);
    let ops = pki.issue(Role::Operator, "ops");
    let resize = |cores: f64| ResizeVmRequest { vm_id: "web".into(), cpu_cores: cores, memory_mib: 256.0, ..Default::default() };
    // The agent is in session with the leader, which can command it.
    let mut op = eventually("the leader resizes the agent's VM", wait, || async {
        let mut op = client(&first.value, &ops).await.ok()?;
        op.resize_vm(resize(0.5)).await.ok()?.into_inner().accepted.then_some(op)
    })
    .await;
    op.ping_host(PingHostRequest { host_id: "hv-a".into(), timeout_ms: 5000 }).await.expect("the leader pings its agent");
    // presagectl cluster status: the leader first, the other standing by, etcd's members healthy.
    let standby = &urls[1 - frozen];
    let status = eventually("both coordinators stand in the election", wait, || async {
        let mut op = client(&first.value, &ops).await.ok()?;
        let s = op.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
        (s.members.len() == 2).then_some(s)
    })
    .await;
    assert_eq!((status.store.as_str(), status.elected), ("etcd", true));
    assert_eq!((status.leader.as_str(), status.epoch), (first.value.as_str(), first.epoch as u64));
    assert_eq!(status.this_coordinator, first.value);
    let roles: Vec<(&str, &str)> = status.members.iter().map(|m| (m.address.as_str(), m.role.as_str())).collect();
    assert_eq!(roles, [(first.value.as_str(), "leader"), (standby.as_str(), "standby")]);
    assert_eq!(status.etcd.len(), 3);
    assert!(status.etcd.iter().all(|e| e.healthy && e.member_id != 0), "{:?}", status.etcd);
    assert_eq!(status.etcd.iter().filter(|e| e.is_raft_leader).count(), 1, "one raft leader: {:?}", status.etcd);

    // Frozen; the operators' connections are open already, their requests wait in its sockets.
    coordinators[frozen].signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let asked: Vec<f64> = (0..20).map(|i| 0.2 + f64::from(i) * 0.01).collect();
    // Each request on its own task, all waiting in the frozen leader's sockets together.
    let mut resizes = Vec::new();
    let mut pings = Vec::new();
    for cores in &asked {
        let (mut to_resize, cores) = (op.clone(), *cores);
        resizes.push(tokio::spawn(async move {
            to_resize.resize_vm(resize(cores)).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
        }));
        let mut op = op.clone();
        pings.push(tokio::spawn(async move {
            op.ping_host(PingHostRequest { host_id: "hv-a".into(), timeout_ms: 5000 }).await.map_err(|s| s.message().to_string())
        }));
    }
    let next = eventually("a standby leads", wait, || async { leader().await.filter(|l| l.epoch != first.epoch) }).await;
    assert_ne!(next.value, first.value);
    let led_after = stopped.elapsed();
    let frozen_for = Duration::from_secs(3 * lease_s());
    tokio::time::sleep(frozen_for.saturating_sub(stopped.elapsed())).await;
    coordinators[frozen].signal(libc::SIGCONT);

    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    let (writes, commands) = (resizes.len(), pings.len());
    for r in resizes {
        let answer = tokio::time::timeout(wait, r).await.expect("the resumed coordinator answers or drops").unwrap();
        assert!(
            !matches!(&answer, Ok(a) if a.accepted),
            "a resize asked of the frozen leader was acknowledged after it resumed: {answer:?}"
        );
        *reasons.entry(format!("resize: {}", answer.err().unwrap_or_else(|| "not accepted".into()))).or_default() += 1;
    }
    for p in pings {
        let answer = tokio::time::timeout(wait, p).await.expect("the resumed coordinator answers or drops").unwrap();
        assert!(answer.is_err(), "a ping asked of the frozen leader reached its agent after it resumed: {answer:?}");
        *reasons.entry(format!("ping: {}", answer.unwrap_err())).or_default() += 1;
    }
    // It steps down by itself (an error exit, for its supervisor to start it again as a standby).
    let status = tokio::task::spawn_blocking(move || {
        let s = coordinators[frozen].wait();
        (s, coordinators)
    });
    let (status, coordinators) = tokio::time::timeout(wait, status).await.expect("the resumed leader exits").unwrap();
    assert!(status.is_some_and(|s| !s.success()), "the deposed leader exits with an error: {status:?}");
    let log = coordinators[frozen].log_text();
    assert!(log.contains("stepping down"), "the deposed leader says it steps down:\n{log}");

    // The new leader commands the agent and has none of the refused resizes on record.
    let applied = eventually("the new leader resizes the agent's VM", wait, || async {
        let mut op = client(&next.value, &ops).await.ok()?;
        op.resize_vm(resize(0.75)).await.ok()?.into_inner().accepted.then_some(op)
    })
    .await;
    let history =
        applied.clone().config_history(ConfigHistoryRequest { vm_id: "web".into(), limit: 1000 }).await.unwrap().into_inner().versions;
    let recorded: Vec<f64> = history.iter().filter_map(|v| v.config.map(|c| c.cpu_cores)).collect();
    assert!(recorded.iter().any(|c| (*c - 0.75).abs() < 1e-9), "the new leader's resize is on record: {recorded:?}");
    for a in &asked {
        assert!(!recorded.iter().any(|c| (*c - a).abs() < 1e-9), "a resize asked of the frozen leader is on record: {a} in {recorded:?}");
    }
    // The status from the new leader (REST twin): the deposed one is gone from the election;
    // an etcd member killed shows as down, the other two as a quorum. (A follower: killing
    // etcd's own leader starts an election there that can outlast this test's 2 s lease.)
    let rest =
        presage_protocol::rest_client::RestClient::new(&next.value, &ops.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap();
    let before = rest.get("/v1/cluster").await.unwrap();
    let follower = before.body["etcd"]
        .as_array()
        .and_then(|e| e.iter().position(|m| m["healthy"] == true && m["is_raft_leader"] == false))
        .unwrap_or_else(|| panic!("an etcd follower: {before:?}"));
    etcd.kill(follower);
    let cluster = rest.get("/v1/cluster").await.unwrap();
    assert_eq!(cluster.status, 200, "{cluster:?}");
    let v = &cluster.body;
    assert_eq!((v["leader"].as_str(), v["epoch"].as_str()), (Some(next.value.as_str()), Some(next.epoch.to_string().as_str())), "{v}");
    assert_eq!(v["members"].as_array().map(Vec::len), Some(1), "{v}");
    let health: Vec<bool> = v["etcd"].as_array().unwrap().iter().map(|e| e["healthy"].as_bool().unwrap_or(false)).collect();
    let expected: Vec<bool> = (0..3).map(|i| i != follower).collect();
    assert_eq!(health, expected, "{v}");
    assert!(v["etcd"][follower]["error"].as_str().is_some_and(|e| !e.is_empty()), "a down member says why: {v}");
    eprintln!(
        "leader frozen {:.1} s (lease {} s); a standby led {:.1} s after the freeze; after it resumed: {writes} of {writes} writes and {commands} of {commands} commands refused ({reasons:?}), and it stepped down",
        frozen_for.as_secs_f64(),
        lease_s(),
        led_after.as_secs_f64(),
    );
    agent.stop().await;
}

/// Where `vm` runs, by asking both hosts' agents (through whoever leads); `None` while a host
/// cannot be asked.
async fn hosts_running(url: &str, ops: &TlsFiles, vm: &str) -> Option<Vec<String>> {
    let mut op = client(url, ops).await.ok()?;
    let mut on = Vec::new();
    for host in ["hv-a", "hv-b"] {
        let p = op.inspect_vm(InspectVmRequest { host_id: host.into(), vm_id: vm.into() }).await.ok()?.into_inner().presence?;
        if p.running {
            on.push(host.to_string());
        }
    }
    Some(on)
}

/// The leader killed with SIGKILL `PRESAGE_FAILOVER_TRIALS` times (default 20), every other
/// time while a VM it was asked to move is being copied, the others at a random moment, while
/// an operator keeps resizing another VM through whoever leads. Each trial: a standby leads, it
/// accepts writes again, and every write a leader acknowledged is in its history; a move in
/// flight is settled by the next leader asking both hosts, and the VM then runs on exactly one
/// host (the agents' own answer). At the end: every plan is there and finished (none lost),
/// every VM on exactly one host, and the agents' step ledgers hold each step once, none left
/// half-run, with their own count of steps asked again. The killed coordinator is started
/// again as a standby each time. Prints the time to a new leader and to the first accepted
/// write (median and worst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_20_times_some_mid_migration_loses_no_plan_or_write_and_runs_no_step_twice() {
    let trials: usize = std::env::var("PRESAGE_FAILOVER_TRIALS").ok().and_then(|t| t.parse().ok()).unwrap_or(20);
    let wait = Duration::from_secs(90);
    let Pair { bin, etcd: _etcd, pki, dir: _dir, urls, mut coordinators, watcher } = Pair::start();
    let logs = |c: &[CoordinatorProcess]| c.iter().map(|p| p.log_text()).collect::<Vec<_>>().join("\n---\n");
    let leader = |previous: i64| {
        let watcher = watcher.clone();
        async move { watcher.leader("coordinator").await.ok().flatten().filter(|l| l.epoch != previous) }
    };
    let mut current = eventually("a coordinator leads", wait, || leader(-1)).await;
    // Two hosts sharing a trace (so VMs can move), copies of 2-6 s; vm-0..2 are moved, vm-3 resized.
    let trace = synthetic_trace(&[("vm-0", &[20; 60]), ("vm-1", &[20; 60]), ("vm-2", &[20; 60]), ("vm-3", &[20; 60])]);
    let data = tempfile::tempdir().unwrap();
    let agent = |host: &str, shard: usize| {
        let mut cfg = simulated_agent(&pki, host, &urls[0], &data.path().join(host), trace.path(), (shard, 2), 0);
        cfg.coordinator = presage_agent::config::CoordinatorUrls(urls.clone());
        cfg.metrics.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port())));
        if let presage_agent::config::HypervisorConfig::Simulated(s) = &mut cfg.hypervisor {
            s.migration_mb_per_s = Some(0.5);
        }
        let metrics = cfg.metrics.listen;
        (RunningAgent::start(cfg), metrics.unwrap())
    };
    let agents = [agent("hv-a", 0), agent("hv-b", 1)];
    let ops = pki.issue(Role::Operator, "ops");

    // One resize of vm-3 through whoever leads; Some(cores) when a leader acknowledged it.
    let write = |url: String, cores: f64| {
        let ops = ops.clone();
        async move {
            let mut op = client(&url, &ops).await.ok()?;
            let r = op
                .resize_vm(ResizeVmRequest { vm_id: "vm-3".into(), cpu_cores: cores, memory_mib: 256.0, ..Default::default() })
                .await
                .ok()?;
            r.into_inner().accepted.then_some(cores)
        }
    };
    let mut acknowledged: Vec<f64> = Vec::new();
    let mut k = 0u32;
    let mut next_cores = || {
        k += 1;
        // A value of its own for each write (up to 8,000 of them).
        0.1 + f64::from(k % 8000) * 0.0001
    };
    let first = eventually("the first leader accepts a write", wait, || write(current.value.clone(), 0.5)).await;
    acknowledged.push(first);

    let (mut to_lead, mut to_write, mut plans, mut settled_as) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for trial in 0..trials {
        let mid_migration = trial % 2 == 0;
        // A move taken by the leader, when this trial kills it mid-copy.
        let moving = if mid_migration {
            let vm = format!("vm-{}", (trial / 2) % 3);
            let from = eventually("the VM is found on one host", wait, || async {
                let on = hosts_running(&current.value, &ops, &vm).await?;
                (on.len() == 1).then(|| on[0].clone())
            })
            .await;
            let to = if from == "hv-a" { "hv-b" } else { "hv-a" };
            let plan = eventually("the leader takes the move", wait, || async {
                let mut op = client(&current.value, &ops).await.ok()?;
                op.move_vm(MoveVmRequest { vm_id: vm.clone(), to_host: to.into() }).await.ok()?.into_inner().plan
            })
            .await;
            plans.push(plan.id);
            Some((plan.id, vm, from, to))
        } else {
            None
        };
        // Writes go on for a random while (for a move: during its copy of 2-6 s, or around its
        // end), then the leader is killed.
        let span = if mid_migration { 300 + fastrand::u64(0..5_000) } else { 300 + fastrand::u64(0..2_500) };
        let until = Instant::now() + Duration::from_millis(span);
        while Instant::now() < until {
            let cores = next_cores();
            if let Some(c) = write(current.value.clone(), cores).await {
                acknowledged.push(c);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let victim = urls.iter().position(|u| *u == current.value).expect("the leader is one of ours");
        coordinators[victim].kill();
        let killed = Instant::now();
        let previous = current.epoch;
        current = loop {
            if let Some(l) = leader(previous).await {
                break l;
            }
            assert!(killed.elapsed() < wait, "trial {trial}: no standby led within {wait:?}\n{}", logs(&coordinators));
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        to_lead.push(killed.elapsed());
        assert_ne!(current.value, urls[victim], "trial {trial}: the killed coordinator cannot lead\n{}", logs(&coordinators));
        assert!(current.epoch > previous, "epochs grow: {previous} then {}", current.epoch);
        let cores = next_cores();
        let c = eventually("the new leader accepts a write", wait, || write(current.value.clone(), cores)).await;
        acknowledged.push(c);
        to_write.push(killed.elapsed());
        // Every acknowledged write is in the new leader's history (of the newest versions it
        // keeps: RETAINED_VERSIONS, 1,000 a VM).
        let mut op = client(&current.value, &ops).await.unwrap();
        let history = op.config_history(ConfigHistoryRequest { vm_id: "vm-3".into(), limit: 1000 }).await.unwrap().into_inner().versions;
        let applied: Vec<f64> = history.iter().filter(|v| v.outcome == "applied").filter_map(|v| v.config.map(|c| c.cpu_cores)).collect();
        let recent = &acknowledged[acknowledged.len().saturating_sub(900)..];
        // (A write applied whose answer the killed leader never sent is there too: not a loss.)
        let missing = recent.iter().filter(|a| !applied.iter().any(|x| (*x - **a).abs() < 1e-9)).count();
        assert_eq!(missing, 0, "trial {trial}: acknowledged writes lost");
        // The new leader has the move's plan and settles it by asking both hosts.
        if let Some((plan, vm, from, to)) = moving {
            let settled = eventually("the new leader settles the plan", wait, || async {
                let mut op = client(&current.value, &ops).await.ok()?;
                let p = op.list_plans(ListPlansRequest { plan_id: plan, limit: 1 }).await.ok()?.into_inner().plans.pop()?;
                (p.status != "running").then_some(p)
            })
            .await;
            let on = eventually("both hosts answer", wait, || hosts_running(&current.value, &ops, &vm)).await;
            assert_eq!(on.len(), 1, "trial {trial}: {vm} runs on {on:?} after the move was settled as {}", settled.status);
            let expected = if settled.status == "done" { to } else { from.as_str() };
            assert_eq!(on[0], expected, "trial {trial}: plan {} ended {} ({:?})", settled.id, settled.status, settled.moves);
            settled_as.push(settled.status.clone());
            eprintln!(
                "trial {trial}: {vm} {from} -> {to}, leader killed {span} ms into the move; the next settled it as {}, on {}",
                settled.status, on[0]
            );
        }
        coordinators[victim].spawn(&bin);
    }
    // Every plan there and finished; every VM on exactly one host.
    let mut op = client(&current.value, &ops).await.unwrap();
    for id in &plans {
        let p = op.list_plans(ListPlansRequest { plan_id: *id, limit: 1 }).await.unwrap().into_inner().plans.pop();
        assert!(p.as_ref().is_some_and(|p| p.status != "running"), "plan {id} is lost or unfinished: {p:?}");
    }
    for i in 0..4 {
        let vm = format!("vm-{i}");
        let on = eventually("both hosts answer", wait, || hosts_running(&current.value, &ops, &vm)).await;
        assert_eq!(on.len(), 1, "{vm} runs on {on:?}");
    }
    // The agents' own count of steps, then their ledgers: each step once, none left unfinished.
    let mut counts = Vec::new();
    for ((_, metrics), host) in agents.iter().zip(["hv-a", "hv-b"]) {
        let text = tokio::task::spawn_blocking({
            let m = *metrics;
            move || scrape_metrics(m)
        })
        .await
        .unwrap();
        let count = |admission: &str| -> u64 {
            let line = format!("presage_agent_steps_total{{admission=\"{admission}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(line.as_str())).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
        };
        counts.push((host, count("run"), count("answered_again"), count("refused_unfinished")));
    }
    let [(a, _), (b, _)] = agents;
    a.stop().await;
    b.stop().await;
    for (host, run, _, _) in &counts {
        let store = presage_store::SledStore::open(&data.path().join(host).join("store")).unwrap_or_else(|e| panic!("{host}'s store: {e}"));
        let steps = presage_store::KvStore::tree(&store, presage_agent::step_ledger::TREE).unwrap();
        let records = steps.scan_prefix(b"", presage_store::Order::Ascending, usize::MAX).unwrap();
        for (k, v) in &records {
            assert_eq!(v.first(), Some(&b'D'), "{host}: step {} was started and never finished", String::from_utf8_lossy(k));
        }
        // Each step run is one record: none was run a second time under the same id.
        assert_eq!(*run, records.len() as u64, "{host}: {run} steps run, {} recorded", records.len());
    }
    let (lead_median, lead_worst) = (median(&mut to_lead), *to_lead.iter().max().unwrap());
    let (write_median, write_worst) = (median(&mut to_write), *to_write.iter().max().unwrap());
    let run: u64 = counts.iter().map(|c| c.1).sum();
    let again: u64 = counts.iter().map(|c| c.2).sum();
    let unfinished: u64 = counts.iter().map(|c| c.3).sum();
    eprintln!(
        "{trials} leaders killed, {} of them mid-migration (lease {} s, renewals every {} ms): a new leader after {lead_median:?} median, \
         {lead_worst:?} worst; a write accepted after {write_median:?} median, {write_worst:?} worst; {} acknowledged writes, none lost; \
         {} plans, none lost, settled as {settled_as:?}; every VM on one host; steps: {run} run once each, {again} asked again and \
         answered from the ledger, {unfinished} refused as unfinished, 0 run twice",
        plans.len(),
        lease_s(),
        lease_s() * 300,
        acknowledged.len(),
        plans.len(),
    );
}

/// A standby keeps a warm copy of the store and serves the store's reads from it: the
/// configuration history and plans the leader wrote, the same as the leader's; everything else
/// (a resize, a read of the agents' reports, an agent's session) is refused with `unavailable`
/// naming the leader, so an agent given the standby's address first registers with the leader
/// and `presagectl` given both goes to the leader. The leader's cluster status shows the
/// standby's copy (revision, keys, lag); the standby's own says it is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_serves_reads_from_its_warm_copy_and_sends_everything_else_to_the_leader() {
    let wait = Duration::from_secs(60);
    let Pair { bin: _bin, etcd: _etcd, pki, dir: _dir, urls, coordinators, watcher } = Pair::start();
    let leader = eventually("a coordinator leads", wait, || async { watcher.leader("coordinator").await.ok().flatten() }).await;
    let standby = urls.iter().find(|u| **u != leader.value).unwrap().clone();
    let trace = synthetic_trace(&[("web", &[30; 40])]);
    let data = tempfile::tempdir().unwrap();
    let mut agent_cfg = simulated_agent(&pki, "hv-a", &standby, data.path(), trace.path(), (0, 1), 0);
    agent_cfg.coordinator = presage_agent::config::CoordinatorUrls(vec![standby.clone(), leader.value.clone()]);
    let agent = RunningAgent::start(agent_cfg);
    let ops = pki.issue(Role::Operator, "ops");

    for i in 0..10 {
        eventually("the leader accepts a resize", wait, || async {
            let mut op = client(&leader.value, &ops).await.ok()?;
            let r = op.resize_vm(ResizeVmRequest {
                vm_id: "web".into(),
                cpu_cores: 0.3 + f64::from(i) * 0.05,
                memory_mib: 256.0,
                ..Default::default()
            });
            r.await.ok()?.into_inner().accepted.then_some(())
        })
        .await;
    }
    let history = |url: String| {
        let ops = ops.clone();
        async move {
            let mut op = client(&url, &ops).await.ok()?;
            let h = op.config_history(ConfigHistoryRequest { vm_id: "web".into(), limit: 100 }).await.ok()?.into_inner().versions;
            Some(h.iter().map(|v| (v.version, v.outcome.clone(), v.config.map(|c| c.cpu_cores))).collect::<Vec<_>>())
        }
    };
    let plans = |url: String| {
        let ops = ops.clone();
        async move {
            let mut op = client(&url, &ops).await.ok()?;
            let p = op.list_plans(ListPlansRequest { plan_id: 0, limit: 100 }).await.ok()?.into_inner().plans;
            Some(p.iter().map(|p| (p.id, p.status.clone(), p.moves.len())).collect::<Vec<_>>())
        }
    };
    let on_leader = history(leader.value.clone()).await.unwrap();
    assert!(on_leader.iter().filter(|v| v.1 == "applied").count() >= 10, "{on_leader:?}");
    let copied = Instant::now();
    eventually("the standby's copy has the leader's history", wait, || async {
        let on_standby = history(standby.clone()).await?;
        (on_standby == on_leader).then_some(())
    })
    .await;
    let in_copy_after = copied.elapsed();
    assert_eq!(plans(standby.clone()).await, plans(leader.value.clone()).await);

    // Everything else is for the leader, which the refusal names.
    let mut op = client(&standby, &ops).await.unwrap();
    let e =
        op.resize_vm(ResizeVmRequest { vm_id: "web".into(), cpu_cores: 2.0, memory_mib: 256.0, ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("standby"), "{e:?}");
    assert_eq!(e.metadata().get("presage-leader").and_then(|v| v.to_str().ok()), Some(leader.value.as_str()), "{e:?}");
    let e = op.ping_host(PingHostRequest { host_id: "hv-a".into(), timeout_ms: 0 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    let rest =
        presage_protocol::rest_client::RestClient::new(&standby, &ops.load().unwrap(), presage_protocol::COORDINATOR_TLS_NAME).unwrap();
    let refused = rest.get("/v1/status").await.unwrap();
    assert_eq!((refused.status, refused.body["code"].as_str()), (503, Some("standby")), "{refused:?}");
    assert!(refused.body["reason"].as_str().is_some_and(|r| r.contains(&leader.value)), "{refused:?}");
    let served = rest.get("/v1/vms/web/config").await.unwrap();
    assert_eq!(served.status, 200, "{served:?}");
    // The agent, given the standby first, is with the leader.
    eventually("the agent registers with the leader", wait, || async {
        let mut op = client(&leader.value, &ops).await.ok()?;
        let r = op.ping_host(PingHostRequest { host_id: "hv-a".into(), timeout_ms: 0 }).await.ok()?;
        Some(r.into_inner())
    })
    .await;

    // The standby's copy in the leader's cluster status (once it reports one made after the
    // writes: a version record a write), and in its own.
    let status = eventually("the leader shows the standby's copy", wait, || async {
        let mut op = client(&leader.value, &ops).await.ok()?;
        let s = op.cluster_status(ClusterStatusRequest {}).await.ok()?.into_inner();
        s.members.iter().any(|m| m.address == standby && m.copy_reported && m.copy_keys >= 10).then_some(s)
    })
    .await;
    assert_eq!(status.role, "leader");
    let row = status.members.iter().find(|m| m.address == standby).unwrap();
    assert_eq!(row.role, "standby");
    assert!(row.copy_broken.is_empty(), "{row:?}");
    assert!(row.copy_revision <= status.store_revision, "{status:?}");
    let mine = status.members.iter().find(|m| m.address == leader.value).unwrap();
    assert!(!mine.copy_reported, "the leader reads etcd itself: {mine:?}");
    let own = op.cluster_status(ClusterStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (own.role.as_str(), own.leader.as_str(), own.this_coordinator.as_str()),
        ("standby", leader.value.as_str(), standby.as_str())
    );

    // presagectl given the standby first talks to the leader.
    let tls = pki.operator_dir("ctl");
    let out = std::process::Command::new(built_binaries(&["presagectl"]).join("presagectl"))
        .args(["--coordinator", &format!("{standby},{}", leader.value), "--tls-dir"])
        .arg(tls.path())
        .args(["cluster", "status", "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["role"].as_str(), v["this_coordinator"].as_str()), (Some("leader"), Some(leader.value.as_str())), "{v}");
    let lags: Vec<u64> = v["members"].as_array().unwrap().iter().filter_map(|m| m["copy"]["lag_ms"].as_u64()).collect();
    assert_eq!(lags.len(), 1, "the standby's copy, and only its: {v}");
    eprintln!(
        "standby: 10 resizes on the leader were in the standby's copy within {in_copy_after:?} of the last; its copy in cluster status: \
         revision {} of {}, {} keys, lag {} ms, reported {} ms before (presagectl: lag {lags:?} ms)",
        row.copy_revision, status.store_revision, row.copy_keys, row.copy_lag_ms, row.copy_report_age_ms
    );
    drop(coordinators);
    agent.stop().await;
}
