//! The fault suite's network partition: the real `presage-agent` process runs in a network
//! namespace of its own, joined to the coordinator by a veth pair the test makes (addresses
//! 10.213.N.1 and .2/30, nothing else routed); the link is cut while the agent holds a borrowing
//! lease and reservations. Cut off, the agent ends the lease at its deadline by itself and keeps
//! its reservations; when the link comes back it rejoins on its own, and what it holds then is
//! exactly what its own rules say: the lease gone, the expired reservation gone, the live one
//! still held. Needs root (network namespaces); the test says so when it cannot make them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use presage_protocol::pb::{self, GrantLeaseRequest, ListHostsRequest, ListLeasesRequest, ReserveOnHostRequest};
use presage_protocol::tls::Role;
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(60);

/// `ip ARGS`, failing with what it said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() { Ok(()) } else { Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())) }
}

/// A namespace and a veth pair, removed on drop.
struct Partitionable {
    ns: String,
    host_side: String,
    coordinator_ip: String,
}

impl Partitionable {
    fn make() -> Result<Partitionable, String> {
        let n = std::process::id() % 250 + 1;
        let (ns, host_side, agent_side) = (format!("presage-p{n}"), format!("pvh{n}"), format!("pva{n}"));
        let (coordinator_ip, agent_ip) = (format!("10.213.{n}.1"), format!("10.213.{n}.2"));
        // Left over from an earlier run killed midway.
        let _ = ip(&["netns", "del", &ns]);
        let _ = ip(&["link", "del", &host_side]);
        let p = Partitionable { ns: ns.clone(), host_side: host_side.clone(), coordinator_ip: coordinator_ip.clone() };
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &host_side, "type", "veth", "peer", "name", &agent_side])?;
        ip(&["link", "set", &agent_side, "netns", &ns])?;
        ip(&["addr", "add", &format!("{coordinator_ip}/30"), "dev", &host_side])?;
        ip(&["link", "set", &host_side, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "addr", "add", &format!("{agent_ip}/30"), "dev", &agent_side])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &agent_side, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])?;
        Ok(p)
    }

    fn cut(&self) {
        ip(&["link", "set", &self.host_side, "down"]).expect("cutting the link");
    }

    fn heal(&self) {
        ip(&["link", "set", &self.host_side, "up"]).expect("bringing the link back");
    }
}

impl Drop for Partitionable {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_side]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// The agent's configuration file: simulated host `hv-p` replaying `traces`.
fn agent_toml(pki: &Pki, url: &str, data: &Path, traces: &Path) -> String {
    let tls = pki.issue(Role::Agent, "hv-p");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    format!(
        "host_id = \"hv-p\"\ncoordinator = \"{url}\"\ndata_dir = {:?}\nsample_interval = \"200ms\"\n\n\
         [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
         [hypervisor]\nkind = \"simulated\"\ntrace_dir = {:?}\ntime_compression = 600.0\n\n\
         [reconnect]\ninitial_backoff = \"100ms\"\nmax_backoff = \"2s\"\n\n\
         [forecast]\ncpu_model = {:?}\nmemory_model = {:?}\n",
        data,
        tls.ca,
        tls.cert,
        tls.key,
        traces,
        models.join("cpu-quantiles-v2.onnx"),
        models.join("memory-quantiles-v2.onnx"),
    )
}

struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the coordinator counts `hv-p` as up.
async fn host_up(op: &pb::operator_client::OperatorClient<tonic::transport::Channel>) -> Option<bool> {
    let hosts = op.clone().list_hosts(ListHostsRequest {}).await.ok()?.into_inner().hosts;
    Some(hosts.iter().any(|h| h.host_id == "hv-p" && h.reachable && h.connected))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_agent_keeps_enforcing_its_leases_and_reservations_and_rejoins() {
    let net = Partitionable::make().unwrap_or_else(|e| {
        panic!("this test makes a network namespace and a veth pair, which needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2: {e}")
    });
    let bin = built_binaries(&["presage-agent"]);
    let pki = Pki::new();
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(2), presage_coordinator::config::PolicyConfig::default());
    cfg.listen = format!("{}:0", net.coordinator_ip).parse().unwrap();
    let coord = RunningCoordinator::start_config(cfg).await;
    // busy wants all of its vCPU; other is idle, so the host has room to lend.
    let traces = synthetic_trace(&[("busy", &[100; 50]), ("other", &[5; 50])]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_toml(&pki, &coord.url, &dir.path().join("data"), traces.path())).unwrap();
    let log_path = dir.path().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _agent = AgentProcess(
        Command::new("ip")
            .args(["netns", "exec", &net.ns])
            .arg(bin.join("presage-agent"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the agent in its namespace"),
    );
    let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ops = pki.issue(Role::Operator, "ops");
    let mut op = client(&coord.url, &ops).await.unwrap();
    eventually("the agent registers across the veth pair", WAIT, || async { host_up(&op).await.filter(|up| *up).map(|_| ()) }).await;
    let busy = eventually("busy is reported", WAIT, || async {
        let vms = op.clone().list_vms(pb::ListVmsRequest::default()).await.ok()?.into_inner().vms;
        vms.into_iter().find_map(|v| v.sample.filter(|s| s.vm_id == "busy"))
    })
    .await;
    // Held to half its vCPU, so that it has room to borrow.
    let memory_mib = (busy.memory_bytes >> 20) as f64;
    let half = op
        .resize_vm(pb::ResizeVmRequest { vm_id: "busy".into(), cpu_cores: busy.vcpus as f64 / 2.0, memory_mib, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(half.accepted, "{half:?}");

    // What it holds when cut off: a lease of 6 s, a reservation of 6 s and one of 10 minutes.
    let lease = op
        .grant_lease(GrantLeaseRequest {
            lender: String::new(),
            borrower: "busy".into(),
            resource: "cpu".into(),
            amount: busy.vcpus as f64 / 4.0,
            duration_s: 6,
            reason: "partition test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lease.accepted, "{lease:?}");
    let lease_id = lease.state.unwrap().leases[0].id.clone();
    let reserve = |id: &str, ttl_ms: u64| ReserveOnHostRequest {
        host_id: "hv-p".into(),
        reserve: Some(pb::Reserve {
            id: id.into(),
            vm_id: format!("incoming-{id}"),
            hard: true,
            cpu_mhz: 100.0,
            memory_mib: 128.0,
            ttl_ms,
        }),
        release: None,
    };
    assert!(op.reserve_on_host(reserve("short", 6_000)).await.unwrap().into_inner().accepted);
    assert!(op.reserve_on_host(reserve("long", 600_000)).await.unwrap().into_inner().accepted);

    net.cut();
    let cut = Instant::now();
    eventually("the coordinator counts the host unreachable", WAIT, || async { host_up(&op).await.filter(|up| !up).map(|_| ()) }).await;
    // Past the lease's deadline and the short reservation's, still cut off.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(cut.elapsed())).await;
    assert!(!host_up(&op).await.unwrap(), "still cut off");
    let during = agent_log();
    assert!(
        during.lines().any(|l| l.contains("lease ended") && l.contains(&lease_id) && l.contains("deadline")),
        "the agent ended the lease at its deadline while cut off:\n{during}"
    );

    net.heal();
    let healed = Instant::now();
    eventually("the agent rejoins by itself", WAIT, || async { host_up(&op).await.filter(|up| *up).map(|_| ()) }).await;
    let rejoined_after = healed.elapsed();
    // Its own word on what it holds: no lease; the short reservation expired, the long one held.
    let leases = op.list_leases(ListLeasesRequest { host_id: "hv-p".into() }).await.unwrap().into_inner();
    let held: Vec<String> = leases.hosts.iter().flat_map(|h| h.state.iter().flat_map(|s| s.leases.iter().map(|l| l.id.clone()))).collect();
    assert!(held.is_empty(), "the lease ended while cut off is not back: {held:?}");
    let after = op.reserve_on_host(reserve("after", 60_000)).await.unwrap().into_inner();
    assert!(after.accepted, "{after:?}");
    let mut ids: Vec<String> = after.state.unwrap().held.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["after", "long"], "the expired reservation holds nothing, the live one is kept");
    // One host, one session: the rejoin replaced the old one.
    let hosts = op.list_hosts(ListHostsRequest {}).await.unwrap().into_inner().hosts;
    assert_eq!(hosts.iter().filter(|h| h.host_id == "hv-p").count(), 1);
    eprintln!(
        "partitioned {:.1} s: the agent ended the lease at its deadline and let the short reservation expire on its own; \
         it rejoined {:.2} s after the link came back, holding the long reservation",
        healed.duration_since(cut).as_secs_f64(),
        rejoined_after.as_secs_f64()
    );
    coord.stop().await;
}
