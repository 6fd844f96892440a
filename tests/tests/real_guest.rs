//! A real Linux guest through the whole chain (a test binary of its own: cargo runs test binaries
//! one after the other, so no other test's CPU load blurs what the guest and its host measure). Debian's cloud kernel and a busybox-static
//! initramfs (built by `tests/guest-image/build.sh` from Debian's packages and cached under
//! `target/guest-image`) run a small CPU-bound HTTP application and the static presage-guest,
//! which probes it and reports over the virtio-serial port `org.presage.guest.0`. The guest runs
//! under TCG (`<domain type='qemu'>`: this machine's `/dev/kvm` cannot run a stock kernel) on a
//! real libvirt daemon, its vCPU pinned to one host core, beside a second (firmware-only) VM; a
//! real presage-agent on that daemon and a simulated host report to the coordinator.
//!
//! 1. The guest's figures reach `presagectl vms` (the time from the guest's report to the
//!    coordinator is printed; the acceptance figure is in the issue's notes).
//! 2. CPU hogs pinned to the guest's core, 0 to 8 of them: the vCPU delay the host measures and
//!    the p99 latency the guest measures rise together (Spearman's rho over every report).
//! 3. Under the heaviest hog the coordinator's plan moves the suffering guest first, within two
//!    passes of the first report showing it, off its host and not the VM beside it, and the
//!    explanation shows the application figures it acted on.
//!
//! Needs root, `/dev/kvm` (the two-daemon script checks it), libvirtd, QEMU, `cpio`, `dpkg-deb`,
//! `apt-get` (to download two packages) and two CPUs. Where one is missing the test says which
//! and passes without running, unless `PRESAGE_REQUIRE_KVM=1` (set by `.ci/run` where KVM and
//! root are there), when it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use presage_agent::config::HypervisorConfig;
use presage_coordinator::config::PolicyConfig;
use presage_protocol::pb::{GetPlanRequest, GetPlanResponse, ListVmsRequest, VmSample};
use presage_protocol::tls::Role;
use presage_tests::guest_image::{burner_xml, guest_image};
use presage_tests::*;

const WAIT: Duration = Duration::from_secs(240);

/// How many CPU hogs share the guest's core at each intensity.
const HOG_LEVELS: [usize; 5] = [0, 2, 4, 6, 8];

/// The application's declared p99 SLO, as a multiple of the (median) p99 it shows on a quiet
/// host (the guest is booted again with it once that is measured: TCG's speed differs between
/// machines).
const SLO_OVER_QUIET: f64 = 1.5;

/// Host-side contention at which the policy takes a guest's pain as confirmed.
const AGREES: f64 = presage_decide::policy::application::CONTENTION_AGREES;

/// The real-guest tests measure CPU time and delay: one at a time, never beside each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `test` cannot run here (said on stderr); a failure instead where PRESAGE_REQUIRE_KVM
/// says it must run.
fn skipped(test: &str) -> bool {
    let Some(why) = missing_requirement() else { return false };
    assert!(std::env::var("PRESAGE_REQUIRE_KVM").is_err(), "PRESAGE_REQUIRE_KVM is set but {why}");
    eprintln!("SKIPPED {test}: {why}");
    true
}

fn missing_requirement() -> Option<String> {
    if let Some(why) = missing_libvirt_requirement(&["cpio", "dpkg-deb", "apt-get", "taskset", "setsid"]) {
        return Some(why);
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Some("fewer than two CPUs (the guest's core and the rest)".into());
    }
    None
}

/// What every real-guest test starts from: the guest image, the presage-libvirt driver, the
/// host CPU the guests' vCPUs are pinned to (the last; QEMU's own threads go to CPU 0), and the
/// two libvirt daemons.
fn real_hosts() -> (PathBuf, PathBuf, usize, TwoLibvirtHosts) {
    let image = guest_image();
    let driver = built_binaries(&["presage-libvirt"]).join("presage-libvirt");
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    (image, driver, cpu, TwoLibvirtHosts::start())
}

/// The application guest: 256 MiB, one vCPU pinned to host CPU `cpu` (QEMU's own threads to CPU
/// 0),
/// direct kernel boot, the presage port as a unix socket at `channel`, its console in `console`,
/// its application's p99 SLO `slo_ms` (0: none).
fn app_guest_xml(image: &Path, channel: &Path, console: &Path, cpu: usize, slo_ms: u64) -> String {
    format!(
        "<domain type='qemu'><name>app-guest</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/><emulatorpin cpuset='0'/></cputune>\
         <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{}</kernel><initrd>{}</initrd>\
         <cmdline>console=ttyS0 panic=-1 quiet presage_slo_ms={slo_ms} presage_probe_ms=250</cmdline></os>\
         <devices><serial type='file'><source path='{}'/></serial>\
         <channel type='unix'><source mode='bind' path='{}'/><target type='virtio' name='org.presage.guest.0'/></channel>\
         <memballoon model='virtio'/></devices></domain>",
        image.join("vmlinuz").display(),
        image.join("initrd.gz").display(),
        console.display(),
        channel.display()
    )
}

/// A firmware-only VM (no disk: it idles in the firmware) on host CPU `cpu`.
fn firmware_xml(name: &str, cpu: usize) -> String {
    format!(
        "<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <cputune><vcpupin vcpu='0' cpuset='{cpu}'/><emulatorpin cpuset='{cpu}'/></cputune>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>"
    )
}

/// `n` busy loops pinned to host CPU `cpu`, killed when dropped. Each runs in a session of its
/// own: the kernel's autogroup scheduling would otherwise weigh all of them together as one
/// against the guest.
struct Hogs(Vec<Child>);

impl Hogs {
    fn start(n: usize, cpu: usize) -> Hogs {
        Hogs(
            (0..n)
                .map(|_| {
                    Command::new("setsid")
                        .args(["taskset", "-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("starting a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The application guest's latest sample at the coordinator.
async fn app_sample(op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>) -> Option<VmSample> {
    let vms = op.clone().list_vms(ListVmsRequest { host_id: "real-a".into(), ..Default::default() }).await.ok()?.into_inner().vms;
    vms.into_iter().find_map(|v| v.sample.filter(|s| s.name == "app-guest"))
}

/// One guest report as the coordinator holds it: when the host took it, the web app's p99, and
/// the host's vCPU delay for the VM over the cycle that carried it (ms per s, and as a share of
/// its vCPU's time: what the policy compares with [`AGREES`]).
#[derive(Clone, Copy, Debug)]
struct Point {
    received_ms: u64,
    p99_ms: f64,
    delay_ms_per_s: f64,
    delay_share: f64,
    p50_ms: f64,
    requests: u64,
    cpu: f64,
}

fn point(s: &VmSample) -> Option<Point> {
    let g = s.guest.as_ref().filter(|g| g.received_ms > 0)?;
    let web = g.apps.iter().find(|a| a.name == "web" && a.requests > 0)?;
    let delay = s.contention.as_ref().map_or(0.0, |c| c.vcpu_delay_ms_per_s);
    Some(Point {
        received_ms: g.received_ms,
        p99_ms: web.latency_p99_ms,
        delay_ms_per_s: delay,
        delay_share: delay / (1000.0 * s.vcpus.max(1) as f64),
        p50_ms: web.latency_p50_ms,
        requests: web.requests,
        cpu: s.cpu_utilisation,
    })
}

/// The next `n` guest reports newer than `after` (each once).
async fn next_points(
    op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    after: u64,
    n: usize,
) -> Vec<Point> {
    let mut out: Vec<Point> = Vec::new();
    let mut last = after;
    while out.len() < n {
        let p = eventually("a new guest report at the coordinator", WAIT, || {
            let op = op.clone();
            async move { app_sample(&op).await.as_ref().and_then(point).filter(|p| p.received_ms > last) }
        })
        .await;
        last = p.received_ms;
        out.push(p);
    }
    out
}

/// From the guest's console: presage-guest's last resident memory (KiB) and the CPU it used
/// between the first and last `presage-guest-stats` lines (percent of one vCPU), and over how long.
fn guest_cost(console: &str) -> Option<(f64, f64, f64)> {
    let stats: Vec<(f64, f64, f64, f64)> = console
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("presage-guest-stats ")?;
            let field = |k: &str| rest.split_whitespace().find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<f64>().ok());
            Some((field("rss_kb")?, field("cpu_ticks")?, field("hz")?, field("uptime_s")?))
        })
        .collect();
    let (first, last) = (stats.first()?, stats.last()?);
    let span = last.3 - first.3;
    (span > 0.0).then(|| (last.0, (last.1 - first.1) / last.2 / span * 100.0, span))
}

#[test]
fn guest_cost_reads_the_console_lines() {
    let console = "boot noise\npresage-guest-stats rss_kb=2048 cpu_ticks=10 hz=100 uptime_s=20.5\n\
                   presage-guest: something\npresage-guest-stats rss_kb=2304 cpu_ticks=30 hz=100 uptime_s=120.5\n";
    let (rss, cpu, span) = guest_cost(console).unwrap();
    assert_eq!((rss, span), (2304.0, 100.0));
    assert!((cpu - 0.2).abs() < 1e-12, "{cpu}");
    assert!(guest_cost("no stats here").is_none());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Spearman's rank correlation (ties take their mean rank).
fn spearman(xs: &[f64], ys: &[f64]) -> f64 {
    fn ranks(v: &[f64]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0 + 1.0;
            }
            i = j + 1;
        }
        r
    }
    let (rx, ry) = (ranks(xs), ranks(ys));
    let n = xs.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let (vx, vy): (f64, f64) = (rx.iter().map(|a| (a - mx).powi(2)).sum(), ry.iter().map(|b| (b - my).powi(2)).sum());
    cov / (vx * vy).sqrt()
}

#[test]
fn spearman_matches_known_cases() {
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    // One adjacent swap in five: 1 - 6*2/(5*24) = 0.9.
    assert!((spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[1.0, 2.0, 4.0, 3.0, 5.0]) - 0.9).abs() < 1e-12);
}

/// The plan's first move, and a value that changes with every pass (its age drops).
async fn plan(op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>) -> Option<GetPlanResponse> {
    op.clone().get_plan(GetPlanRequest {}).await.ok().map(|r| r.into_inner()).filter(|p| p.available)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_guests_pain_confirmed_by_its_host_moves_it_first() {
    let _alone = ONE_AT_A_TIME.lock().await;
    if skipped("a_real_guests_pain_confirmed_by_its_host_moves_it_first") {
        return;
    }
    let (image, driver, cpu, hosts) = real_hosts();
    let channel = hosts.shared_dir().join("app-guest.port");
    let console = hosts.shared_dir().join("app-guest.console");
    let a = virt::connect::Connect::open(Some(&hosts.uri("a"))).unwrap();
    a.create_domain_xml(&firmware_xml("fw-a", 0), 0).expect("the firmware VM starts");
    let guest = a.create_domain_xml(&app_guest_xml(&image, &channel, &console, cpu, 0), 0).expect("the application guest starts");

    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let policy = PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), ..Default::default() };
    let coord = RunningCoordinator::start_with(&pki, 0, Duration::from_secs(30), policy).await;
    let mut a_cfg =
        simulated_agent(&pki, "real-a", &coord.url, &data.path().join("a"), &shared_data().join("planetlab/20110303"), (0, 1), 1);
    a_cfg.sample_interval = Duration::from_secs(1);
    a_cfg.hypervisor = HypervisorConfig::Libvirt { uri: hosts.uri("a"), driver: Some(driver) };
    let agent_a = RunningAgent::start(a_cfg);
    // The destination: a simulated host with room, running one light VM.
    let trace = synthetic_trace(&[("light-vm", &[10; 64])]);
    let mut b_cfg = simulated_agent(&pki, "sim-b", &coord.url, &data.path().join("b"), trace.path(), (0, 1), 1);
    if let HypervisorConfig::Simulated(s) = &mut b_cfg.hypervisor {
        s.cpu_cores = Some(8);
        s.cpu_mhz_per_core = Some(4000.0);
        s.memory_mb = Some(16_384);
        s.time_compression = 1.0;
    }
    let agent_b = RunningAgent::start(b_cfg);
    let op = client(&coord.url, &pki.issue(Role::Viewer, "vera")).await.unwrap();

    // 1. The guest's figures at the coordinator, and in `presagectl vms`.
    let first = eventually("the guest's first report at the coordinator", WAIT, || {
        let op = op.clone();
        async move { app_sample(&op).await.as_ref().and_then(point) }
    })
    .await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    eprintln!("guest report taken by the host {} ms before the coordinator showed it", now_ms.saturating_sub(first.received_ms));
    let vms = op.clone().list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.unwrap().into_inner().vms;
    let views: Vec<presagectl::view::VmView> = vms.into_iter().map(Into::into).collect();
    let table = presagectl::view::vms_table(&views);
    assert!(table.lines().any(|l| l.contains("app-guest") && l.contains("web ")), "{table}");

    // Its p99 on a quiet host; then the same guest booted again, declaring 1.5 times that as its
    // SLO.
    let quiet = next_points(&op, first.received_ms, 4).await;
    let quiet_p99 = median(quiet[1..].iter().map(|p| p.p99_ms).collect());
    let slo_ms = (quiet_p99 * SLO_OVER_QUIET).ceil();
    eprintln!("quiet p99 {quiet_p99:.1} ms: the application's SLO is {slo_ms} ms");
    guest.destroy().expect("the guest stops");
    a.create_domain_xml(&app_guest_xml(&image, &channel, &console, cpu, slo_ms as u64), 0).expect("the application guest starts again");
    let first = eventually("the rebooted guest's report with its SLO", WAIT, || {
        let op = op.clone();
        async move {
            let s = app_sample(&op).await?;
            let declared = s.guest.as_ref()?.apps.iter().any(|a| a.latency_slo_p99_ms == slo_ms);
            point(&s).filter(|_| declared)
        }
    })
    .await;

    // 2. Hogs on the guest's core, 0 to 8 (the guest's share of its core falls from all of it
    // to a ninth): the host's delay and the guest's p99 rise together. Per intensity, the median
    // of five reports of each; every report is printed, and its own rank correlation too.
    let (mut delays, mut p99s) = (Vec::new(), Vec::new());
    let (mut level_delays, mut level_p99s) = (Vec::new(), Vec::new());
    let mut last = first.received_ms;
    let mut quiet_share = 0.0;
    let mut hogs = Hogs::start(0, cpu);
    for n in HOG_LEVELS {
        hogs = {
            drop(hogs);
            Hogs::start(n, cpu)
        };
        // The first two reports after a change straddle it.
        let settle = next_points(&op, last, 2).await;
        last = settle[1].received_ms;
        let points = next_points(&op, last, 5).await;
        last = points[4].received_ms;
        level_delays.push(median(points.iter().map(|p| p.delay_ms_per_s).collect()));
        level_p99s.push(median(points.iter().map(|p| p.p99_ms).collect()));
        for p in &points {
            eprintln!(
                "hogs {n}: delay {:.0} ms/s ({:.0} %), p99 {:.1} ms, p50 {:.1} ms, {} requests, cpu {:.2}",
                p.delay_ms_per_s,
                p.delay_share * 100.0,
                p.p99_ms,
                p.p50_ms,
                p.requests,
                p.cpu
            );
            delays.push(p.delay_ms_per_s);
            p99s.push(p.p99_ms);
        }
        if n == 0 {
            quiet_share = median(points.iter().map(|p| p.delay_share).collect());
        }
    }
    let per_report = spearman(&delays, &p99s);
    let rho = spearman(&level_delays, &level_p99s);
    eprintln!(
        "Spearman rho, vCPU delay vs p99: {rho:.3} over the intensities' medians ({level_delays:.0?} ms/s, {level_p99s:.1?} ms), \
         {per_report:.3} over all {} reports",
        delays.len()
    );
    assert!(rho >= 0.8, "rho {rho:.3}: delays {level_delays:?}, p99s {level_p99s:?}");
    // On a quiet host, the host does not back the guest's word (whatever its latency).
    assert!(quiet_share < AGREES, "without hogs the host already sees {:.0} % delay", quiet_share * 100.0);

    // 3. Still under the most hogs: from the first report of confirmed pain, within two passes the
    // plan's first move takes the guest (not the VM beside it) off its host, and says why.
    let pained = eventually("a report of pain the host confirms", WAIT, || {
        let op = op.clone();
        async move { app_sample(&op).await.as_ref().and_then(point).filter(|p| p.p99_ms > slo_ms && p.delay_share >= AGREES) }
    })
    .await;
    eprintln!("confirmed pain: p99 {:.1} ms over a {slo_ms} ms SLO, delay {:.0} %", pained.p99_ms, pained.delay_share * 100.0);
    let mut passes = 0;
    let mut age = u64::MAX;
    let chosen = loop {
        let p = eventually("the plan", WAIT, || {
            let op = op.clone();
            async move { plan(&op).await }
        })
        .await;
        if p.age_ms < age {
            passes += 1;
        }
        age = p.age_ms;
        if let Some(m) = p.moves.first().filter(|m| m.from_host == "real-a") {
            break (passes, m.clone());
        }
        if passes > 3 {
            let id = app_sample(&op).await.map(|s| s.vm_id).unwrap_or_default();
            let why = op.clone().explain(presage_protocol::pb::ExplainRequest { vm_id: id, top: 3 }).await.map(|r| r.into_inner());
            let hosts = op.clone().list_hosts(presage_protocol::pb::ListHostsRequest {}).await.map(|r| r.into_inner());
            panic!("no move off real-a within two passes of confirmed pain: {p:?}\nexplain: {why:?}\nhosts: {hosts:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (passes, m) = chosen;
    eprintln!("moved in pass {passes} after the report: {m:?}");
    // The pass under way when the report arrived counts as the first only if it started after it.
    assert!(passes <= 3, "moved only after {passes} plan refreshes");
    let vms = op.clone().list_vms(ListVmsRequest { host_id: "real-a".into(), ..Default::default() }).await.unwrap().into_inner().vms;
    let id_of = |name: &str| vms.iter().find_map(|v| v.sample.as_ref().filter(|s| s.name == name).map(|s| s.vm_id.clone())).unwrap();
    assert_eq!(m.vm_id, id_of("app-guest"), "the first move is not the suffering guest: {m:?}");
    assert_eq!((m.reason.as_str(), m.to_host.as_str()), ("overload", "sim-b"));
    // The explanation shows the figures the pass saw (the latest report, which may already be
    // a better one) and the tolerance learned from the confirmed breach, which the move is for.
    let app = m.application.as_ref().expect("the explanation shows the application figures");
    assert!(app.latency_over_slo > 0.0 && app.host_contention >= AGREES && app.tolerance > 0.0, "{app:?}");
    // `presagectl explain` shows the figures the policy holds for it too.
    let why = op.clone().explain(presage_protocol::pb::ExplainRequest { vm_id: m.vm_id.clone(), top: 3 }).await.unwrap().into_inner();
    assert!(why.application.as_ref().is_some_and(|a| a.latency_over_slo > 0.0 && a.tolerance > 0.0), "{why:?}");
    drop(hogs);

    // What presage-guest cost inside the guest over this boot (its console; figures for the notes:
    // TCG runs the guest many times slower than hardware would).
    if let Some((rss_kb, cpu_pct, span_s)) = guest_cost(&std::fs::read_to_string(&console).unwrap_or_default()) {
        eprintln!(
            "presage-guest inside the guest: RSS {:.1} MiB, CPU {cpu_pct:.2} % of its vCPU over {span_s:.0} s (under TCG)",
            rss_kb / 1024.0
        );
    }

    agent_a.stop().await;
    agent_b.stop().await;
    coord.stop().await;
    drop(hosts);
}

/// A domain's CFS quota per vCPU as libvirt reads it back, in cores (`None`: unlimited).
fn quota_cores(uri: &str, name: &str) -> Option<f64> {
    let out = Command::new("virsh").args(["-c", uri, "schedinfo", name]).output().expect("running virsh");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_prefix(':')?.trim().parse::<f64>().ok());
    let (quota, period) = (field("vcpu_quota")?, field("vcpu_period")?);
    (quota > 0.0).then(|| quota / period)
}

/// Leases between real guests on a real libvirt host: a burning guest cannot lend what it needs;
/// a lease gives a burning borrower CFS quota and its burner's speed follows within a report
/// while its neighbour's does not; an agent
/// restarted mid-lease keeps the lease and its deadline; with the coordinator stopped the agent
/// still ends the lease at its deadline and both quotas go back; a balloon target a guest does
/// not meet is reported, not assumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_between_real_guests_moves_cpu_and_ends_on_time_without_a_coordinator() {
    let _alone = ONE_AT_A_TIME.lock().await;
    if skipped("a_lease_between_real_guests_moves_cpu_and_ends_on_time_without_a_coordinator") {
        return;
    }
    use presage_protocol::pb::{GrantLeaseRequest, ListLeasesRequest, ResizeVmRequest};
    let (image, driver, cpu, hosts) = real_hosts();
    let uri = hosts.uri("a");
    let a = virt::connect::Connect::open(Some(&uri)).unwrap();
    // Both burners on one host core: what each gets is what its quota allows.
    for name in ["lender", "borrower"] {
        let console = hosts.shared_dir().join(format!("{name}.console"));
        a.create_domain_xml(&burner_xml(name, &image, &console, cpu, 1, true), 0).expect("a burner guest starts");
    }
    let stubborn_console = hosts.shared_dir().join("stubborn.console");
    a.create_domain_xml(&burner_xml("stubborn", &image, &stubborn_console, 0, 0, false), 0)
        .expect("the guest without a balloon driver starts");

    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let mut cfg = simulated_agent(&pki, "real-a", &coord.url, data.path(), &shared_data().join("planetlab/20110303"), (0, 1), 1);
    cfg.sample_interval = Duration::from_secs(1);
    cfg.hypervisor = HypervisorConfig::Libvirt { uri: uri.clone(), driver: Some(driver) };
    let agent = RunningAgent::start(cfg.clone());
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "ops")).await.unwrap();
    let by_name_at = |op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>, name: &'static str| {
        let mut op = op.clone();
        async move {
            let v = op.list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await.ok()?.into_inner().vms;
            v.into_iter().find_map(|v| {
                let at = v.sampled_at_ms;
                v.sample.filter(|s| s.name == name).map(|s| (s, at))
            })
        }
    };
    let by_name = |op: &presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>, name: &'static str| {
        let f = by_name_at(op, name);
        async move { f.await.map(|(s, _)| s) }
    };
    let lender = eventually("the lender burns", WAIT, || async { by_name(&op, "lender").await.filter(|s| s.cpu_utilisation > 0.2) }).await;
    let borrower =
        eventually("the borrower burns", WAIT, || async { by_name(&op, "borrower").await.filter(|s| s.cpu_utilisation > 0.2) }).await;
    let memory_mib = (lender.memory_bytes >> 20) as f64;

    // Half a core each.
    for s in [&lender, &borrower] {
        let r = op
            .resize_vm(ResizeVmRequest { vm_id: s.vm_id.clone(), cpu_cores: 0.5, memory_mib, dry_run: false, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert!(r.accepted, "{r:?}");
        let rec = r.state.as_ref().unwrap().resizes.iter().find(|e| e.vm_id == s.vm_id).unwrap().clone();
        assert_eq!((rec.status.as_str(), rec.acknowledged_cpu_cores), ("done", 0.5), "{rec:?}");
        assert_eq!(quota_cores(&uri, &s.name), Some(0.5), "{rec:?}");
    }
    eventually("both burners at half a core", WAIT, || async {
        let (l, b) = (by_name(&op, "lender").await?, by_name(&op, "borrower").await?);
        (l.cpu_utilisation <= 0.55 && b.cpu_utilisation <= 0.55).then_some(())
    })
    .await;

    // A burning lender needs all it has (and has no forecast yet): the agent refuses to take
    // CPU from it.
    let from_lender = GrantLeaseRequest {
        lender: lender.vm_id.clone(),
        borrower: borrower.vm_id.clone(),
        resource: "cpu".into(),
        amount: 0.25,
        duration_s: 600,
        reason: "real-guest test".into(),
    };
    let r = op.grant_lease(from_lender).await.unwrap().into_inner();
    assert!(!r.accepted && r.refusal.contains("may not lend"), "{r:?}");
    eprintln!("a lease from the burning lender: refused ({})", r.refusal);
    // The guest without a balloon driver gives back most of its core (a decrease is admitted on
    // a host whose vCPUs are overcommitted), which leaves the host CPU to lend.
    let stubborn = eventually("the stubborn guest is reported", WAIT, || by_name(&op, "stubborn")).await;
    let r = op
        .resize_vm(ResizeVmRequest { vm_id: stubborn.vm_id.clone(), cpu_cores: 0.25, memory_mib, dry_run: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted, "{r:?}");
    // The lender down to a quarter core: its burner slows; the core they share now has room
    // for the borrower to take three quarters.
    let r = op
        .resize_vm(ResizeVmRequest { vm_id: lender.vm_id.clone(), cpu_cores: 0.25, memory_mib, dry_run: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted, "{r:?}");
    eventually("the lender's burner at a quarter core", WAIT, || async {
        by_name(&op, "lender").await.filter(|s| s.cpu_utilisation <= 0.3)
    })
    .await;
    // A quarter core from the host's free CPU to the borrower: the next full report after it
    // shows the borrower's burner at its new speed, the lender's unchanged.
    let grant = |duration_s: u64| GrantLeaseRequest {
        lender: String::new(),
        borrower: borrower.vm_id.clone(),
        resource: "cpu".into(),
        amount: 0.25,
        duration_s,
        reason: "real-guest test".into(),
    };
    let started = std::time::Instant::now();
    let r = op.grant_lease(grant(600)).await.unwrap().into_inner();
    assert!(r.accepted, "{r:?}");
    let granted_ms = r.state.as_ref().unwrap().leases[0].granted_at_ms;
    assert_eq!(quota_cores(&uri, "lender"), Some(0.25));
    assert_eq!(quota_cores(&uri, "borrower"), Some(0.75));
    // Reports whose whole interval (1 s) lies after the grant.
    let (l, b) = eventually("a report a full cycle after the grant", WAIT, || async {
        let ((l, la), (b, ba)) = (by_name_at(&op, "lender").await?, by_name_at(&op, "borrower").await?);
        (la >= granted_ms + 1000 && ba >= granted_ms + 1000).then_some((l, b))
    })
    .await;
    eprintln!(
        "lease applied: lender {:.2} cores, borrower {:.2} cores in the first full report, {:.1} s after the grant",
        l.cpu_utilisation,
        b.cpu_utilisation,
        started.elapsed().as_secs_f64()
    );
    assert!(l.cpu_utilisation <= 0.3 && b.cpu_utilisation >= 0.6, "lender {} borrower {}", l.cpu_utilisation, b.cpu_utilisation);
    let id = r.state.unwrap().leases[0].id.clone();
    assert!(op.revoke_lease(presage_protocol::pb::RevokeLeaseRequest { id }).await.unwrap().into_inner().accepted);
    assert_eq!(quota_cores(&uri, "borrower"), Some(0.5));

    // A balloon target the guest without a driver does not meet: reported, not assumed.
    let r = op
        .resize_vm(ResizeVmRequest {
            vm_id: stubborn.vm_id.clone(),
            cpu_cores: 0.25,
            memory_mib: memory_mib / 2.0,
            dry_run: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rec = r.state.as_ref().unwrap().resizes.iter().find(|e| e.vm_id == stubborn.vm_id).unwrap().clone();
    // The executor watches the balloon, sees it make no progress, sets the target back and
    // says so; the record holds what the guest has, not what was asked.
    assert!(rec.status == "error" && rec.message.contains("not the balloon target"), "{rec:?}");
    assert!(rec.actual_memory_mib > memory_mib / 2.0 + 16.0, "{rec:?}");
    eprintln!("balloon target unmet, reported: {}", rec.message);
    // Retried, then given up: the VM keeps the size it was acknowledged, and nothing more is
    // tried until another size is asked for.
    let settled = eventually("the unmet balloon is given up after its attempts", WAIT, || async {
        let l = op.clone().list_leases(ListLeasesRequest { host_id: "real-a".into() }).await.ok()?.into_inner();
        l.hosts.first()?.state.as_ref()?.resizes.iter().find(|e| e.vm_id == stubborn.vm_id && e.status == "infeasible").cloned()
    })
    .await;
    assert_eq!(settled.attempts, presage_agent::sizing::GUEST_ATTEMPTS, "{settled:?}");
    assert!((settled.allocated_memory_mib - memory_mib).abs() < 1.0, "allocated back to what it holds: {settled:?}");
    // A guest with the driver follows its balloon: done once it holds the target.
    let target = memory_mib - 64.0;
    let r = op
        .resize_vm(ResizeVmRequest {
            vm_id: lender.vm_id.clone(),
            cpu_cores: 0.25,
            memory_mib: target,
            dry_run: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let rec = r.state.as_ref().unwrap().resizes.iter().find(|e| e.vm_id == lender.vm_id).unwrap().clone();
    assert_eq!(rec.status, "done", "{rec:?}");
    assert!((rec.actual_memory_mib - target).abs() <= 2.0 && (rec.acknowledged_memory_mib - target).abs() <= 2.0, "{rec:?}");
    eprintln!("balloon followed: {} MiB of a {target} MiB target", rec.actual_memory_mib);

    // A short lease; the agent restarts mid-lease and keeps it; then the coordinator goes away
    // and the agent ends the lease at its deadline by itself.
    let r = op.grant_lease(grant(20)).await.unwrap().into_inner();
    assert!(r.accepted, "{r:?}");
    let lease = r.state.unwrap().leases[0].clone();
    agent.stop().await;
    assert_eq!(quota_cores(&uri, "borrower"), Some(0.75), "the quota stays while the agent is down");
    let agent = RunningAgent::start(cfg);
    let kept = eventually("the restarted agent reports the lease", WAIT, || async {
        let l = op.clone().list_leases(ListLeasesRequest { host_id: "real-a".into() }).await.ok()?.into_inner();
        l.hosts.first()?.state.as_ref()?.leases.iter().find(|x| x.id == lease.id).cloned()
    })
    .await;
    assert_eq!(kept.deadline_ms, lease.deadline_ms);
    coord.stop().await;
    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    while now_ms() < lease.deadline_ms {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended_after = std::time::Instant::now();
    eventually("the agent ends the lease at its deadline, coordinator or not", Duration::from_secs(10), || async {
        (quota_cores(&uri, "lender") == Some(0.25) && quota_cores(&uri, "borrower") == Some(0.5)).then_some(())
    })
    .await;
    eprintln!("lease ended {:.1} s after its deadline (agent cycle 1 s)", ended_after.elapsed().as_secs_f64());
    agent.stop().await;
}
