//! `presagectl demo`: a whole presage cluster on this machine. It creates a temporary CA and data
//! folders, starts one `presage-coordinator` and N `presage-agent` processes on loopback (mutual
//! TLS, simulated hypervisors replaying a real trace folder split across the agents), pings every
//! agent through its command stream, prints the live cluster every few seconds, and stops every
//! process with SIGTERM after `--duration` or on SIGINT (Ctrl-C), SIGTERM or SIGHUP, whenever one
//! arrives, start-up included. Each daemon also gets SIGTERM from the kernel if presagectl dies
//! without stopping them (`PR_SET_PDEATHSIG`), so no demo process outlives it.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use presage_protocol::pb::{GetPlanRequest, ListHostsRequest, ListVmsRequest, PingHostRequest, StatusRequest};
use presage_protocol::pki::ClusterCa;

/// The password of the demo operator's browser certificate (a throwaway cluster on loopback).
pub const DEMO_P12_PASSWORD: &str = "presage-demo";
use presage_protocol::tls::Role;
use tokio::process::{Child, Command};

use super::client::Target;
use super::view::{self, HostView, StatusView, VmView};

/// The trace the demo replays unless told otherwise, relative to the repository's parent.
pub const DEFAULT_TRACE: &str = "shared/data/planetlab/20110303";

#[derive(clap::Args, Clone, Debug)]
pub struct DemoArgs {
    /// Number of agents (simulated hypervisors).
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Trace folder (PlanetLab or Bitbrains); default ../shared/data/planetlab/20110303.
    #[arg(long, env = "PRESAGE_TRACE_DIR")]
    pub trace: Option<PathBuf>,
    /// Stop after this long (e.g. 60s); default: run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Trace seconds per real second (60: a 5-minute trace step every 5 s).
    #[arg(long, default_value_t = 60.0)]
    pub time_compression: f64,
    /// Agents' sampling interval.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub sample_interval: Duration,
    /// How often the cluster table is printed.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// At most this many VMs per agent (0: the whole shard).
    #[arg(long, default_value_t = 0)]
    pub max_vms_per_agent: usize,
    /// Simulated hosts get CPU for about this share of their VMs' full demand (oversubscribed, as
    /// KVM hosts are; the first hosts less, the last more), so the hot ones shed VMs to the others.
    #[arg(long, default_value_t = 0.2)]
    pub host_cpu_fraction: f64,
    /// `automatic`: the coordinator applies its plans (VMs move between the simulated hosts);
    /// `advisory`: it only shows them.
    #[arg(long, default_value = "automatic", value_parser = ["automatic", "advisory"])]
    pub mode: String,
    /// Keep certificates, configs, stores and logs in this folder instead of a temporary one.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let exe = std::env::current_exe().context("locating presagectl")?;
    let dir = exe.parent().context("presagectl has no parent folder")?;
    let coordinator = dir.join("presage-coordinator");
    let agent = dir.join("presage-agent");
    for b in [&coordinator, &agent] {
        if !b.exists() {
            bail!(
                "{} is missing: the demo starts the real daemons next to presagectl; build them with `cargo build --bins` (add `--release` for optimised ones)",
                b.display()
            );
        }
    }
    Ok((coordinator, agent))
}

/// Finds the default trace folder: `../shared/...` from the working directory, else from the
/// repository that holds this binary (`target/<profile>/presagectl`).
pub fn find_trace(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_dir() {
            // Absolute: the agents' configs live in the work folder, and a relative path in a
            // config is read from the config's folder.
            return Ok(p.canonicalize().unwrap_or_else(|_| p.to_path_buf()));
        }
        bail!("trace folder {} does not exist", p.display());
    }
    let mut candidates = vec![PathBuf::from("..").join(DEFAULT_TRACE)];
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        candidates.push(dir.join("../../..").join(DEFAULT_TRACE));
    }
    for c in &candidates {
        if c.is_dir() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    bail!(
        "no trace folder given and none found; looked in: {} (pass --trace DIR)",
        candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn spawn(name: &str, bin: &Path, config: &Path, logs: &Path) -> anyhow::Result<Proc> {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = Command::new(bin);
    command.arg("--config").arg(config).stdin(std::process::Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2) and
    // getppid(2), which are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // SIGTERM when presagectl dies, even by SIGKILL; if it died before this line, stop now.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 || libc::getppid() == 1 {
                return Err(std::io::Error::other("the demo's presagectl is gone"));
            }
            Ok(())
        });
    }
    let child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc { name: name.into(), child, log })
}

fn terminate(p: &Proc) {
    if let Some(pid) = p.child.id() {
        // SAFETY: kill(2) with a pid we started and still own; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

async fn stop(p: &mut Proc) -> anyhow::Result<ExitStatus> {
    terminate(p);
    match tokio::time::timeout(Duration::from_secs(15), p.child.wait()).await {
        Ok(s) => Ok(s?),
        Err(_) => {
            p.child.kill().await?;
            bail!("{} did not stop within 15 s of SIGTERM and was killed (log: {})", p.name, p.log.display())
        }
    }
}

/// The demo's daemons, as far as they have started.
#[derive(Default)]
struct Cluster {
    coordinator: Option<Proc>,
    agents: Vec<Proc>,
}

impl Cluster {
    /// Stops the agents, then the coordinator; says what did not stop cleanly. A daemon that
    /// SIGTERM reached before it had set up its own handling (one just starting) ends by the
    /// signal itself: stopped as asked, too.
    async fn stop(&mut self) -> Vec<String> {
        use std::os::unix::process::ExitStatusExt;
        let stopped = |s: &ExitStatus| s.success() || s.signal() == Some(libc::SIGTERM);
        let mut failures = Vec::new();
        for a in &self.agents {
            terminate(a);
        }
        for a in self.agents.iter_mut() {
            match stop(a).await {
                Ok(s) if stopped(&s) => {}
                Ok(s) => failures.push(format!("{} exited with {s} (log: {})", a.name, a.log.display())),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if let Some(c) = &mut self.coordinator {
            match stop(c).await {
                Ok(s) if stopped(&s) => {}
                Ok(s) => failures.push(format!("coordinator exited with {s} (log: {})", c.log.display())),
                Err(e) => failures.push(e.to_string()),
            }
        }
        failures
    }

    fn processes(&self) -> usize {
        self.agents.len() + usize::from(self.coordinator.is_some())
    }
}

/// SIGINT, SIGTERM and SIGHUP: installed before the first daemon starts, so any of them stops
/// the demo's cluster instead of killing presagectl under it.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<StopSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
        })
    }

    /// The name of the next signal that arrives.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut signals = StopSignals::install()?;
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    let binaries = binaries()?;
    let trace = find_trace(args.trace.as_deref())?;
    // Detect here so a wrong folder fails before any process starts.
    let format = presage_traces::detect_format(&trace)?.name();
    let temp;
    let work = match &args.workdir {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.canonicalize()?
        }
        None => {
            temp = tempfile::Builder::new().prefix("presage-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let mut cluster = Cluster::default();
    let outcome = tokio::select! {
        r = run_cluster(&args, binaries, &trace, format, &work, &mut cluster) => r,
        signal = signals.next() => Ok(signal.to_string()),
    };
    let stop_reason = match &outcome {
        Ok(reason) => reason.clone(),
        Err(e) => format!("{e:#}"),
    };
    if cluster.processes() > 0 {
        println!("stopping ({stop_reason}): agents first, then the coordinator");
    } else {
        println!("stopping ({stop_reason}): no daemon had started yet");
    }
    let failures = cluster.stop().await;
    outcome?;
    if !failures.is_empty() {
        bail!("unclean shutdown:\n  {}", failures.join("\n  "));
    }
    println!("all {} processes stopped cleanly", cluster.processes());
    if args.workdir.is_none() {
        println!("(temporary work folder removed; pass --workdir DIR to keep logs and stores)");
    }
    Ok(())
}

/// Starts the cluster into `cluster` and shows it until `--duration` passes; returns why it
/// ended. Every daemon is in `cluster` as soon as it is started, so the caller stops them
/// whether this returns, fails, or is dropped at a signal.
async fn run_cluster(
    args: &DemoArgs,
    (coordinator_bin, agent_bin): (PathBuf, PathBuf),
    trace: &Path,
    format: &str,
    work: &Path,
    cluster: &mut Cluster,
) -> anyhow::Result<String> {
    let tls = work.join("tls");
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let ca = ClusterCa::generate("demo")?;
    ca.write(&tls)?;
    let coord_tls = ca.issue_to(&tls, "coordinator", Role::Coordinator, "coordinator", &[])?;
    let operator = ca.issue_to(&tls, "operator", Role::Admin, "demo-operator", &[])?;
    let port = free_port()?;
    let url = format!("https://127.0.0.1:{port}");

    let coord_cfg = work.join("coordinator.toml");
    std::fs::write(
        &coord_cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nhost_timeout = \"{}s\"\nshutdown_timeout = \"5s\"\ndata_dir = {:?}\n[policy]\nname = \"presage\"\nmode = \"{}\"\ninterval = \"{}s\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            (args.sample_interval.as_secs() * 5).max(10),
            work.join("coordinator"),
            args.mode,
            (args.sample_interval.as_secs() * 3).max(5),
            coord_tls.ca,
            coord_tls.cert,
            coord_tls.key
        ),
    )?;
    println!("presage demo: 1 coordinator + {} agents on {url}, replaying {} ({format})", args.agents, trace.display());
    println!("work folder (certificates, configs, stores, logs): {}", work.display());
    // The web view, for a browser: the demo operator's certificate as PKCS#12.
    let p12 = tls.join("operator.p12");
    presage_protocol::pki::write_pkcs12(&operator, &p12, DEMO_P12_PASSWORD)?;
    println!(
        "web view: {url}/ui/ (import {} into the browser, password {DEMO_P12_PASSWORD:?}; its certificate is from the demo's own CA)",
        p12.display()
    );
    if cfg!(debug_assertions) {
        println!(
            "unoptimised build (quick to compile; the agents' RSS is about twice a release build's): `./presage.sh demo --release` runs release binaries"
        );
    }
    let coordinator = cluster.coordinator.insert(spawn("coordinator", &coordinator_bin, &coord_cfg, &logs)?);

    let target = Target { url: url.clone(), server_name: presage_protocol::COORDINATOR_TLS_NAME.into(), tls: operator };
    let mut client = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.is_none() {
        if let Ok(Some(status)) = coordinator.child.try_wait() {
            bail!("the coordinator exited at start ({status}); see {}", coordinator.log.display());
        }
        match target.connect().await {
            Ok(c) => client = Some(c),
            Err(e) if Instant::now() > deadline => return Err(e.context("the coordinator did not come up within 20 s")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let mut client = client.expect("loop ends with a client");

    // The repository's models, when the demo runs from a checkout.
    let model = |name: &str| std::env::current_dir().ok().map(|d| d.join("models").join(name)).filter(|p| p.is_file());
    let models = [("cpu_model", model("cpu-quantiles-v2.onnx")), ("memory_model", model("memory-quantiles-v2.onnx"))];
    for i in 0..args.agents {
        let host = format!("sim-{:02}", i + 1);
        let files = ca.issue_to(&tls, &format!("agent-{host}"), Role::Agent, &host, &[])?;
        let cfg = work.join(format!("agent-{host}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "host_id = \"{host}\"\ncoordinator = \"{url}\"\ndata_dir = {:?}\nsample_interval = \"{}ms\"\n\
                 [tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
                 [reconnect]\ninitial_backoff = \"200ms\"\nmax_backoff = \"5s\"\n\
                 [hypervisor]\nkind = \"simulated\"\ntrace_dir = {:?}\ntime_compression = {}\nshard_index = {i}\nshard_count = {}\nmax_vms = {}\ncpu_fraction = {}\n",
                work.join("data").join(&host),
                args.sample_interval.as_millis(),
                files.ca,
                files.cert,
                files.key,
                trace,
                args.time_compression,
                args.agents,
                args.max_vms_per_agent,
                // Uneven hosts: from half the fraction to one and a half times it, so the first
                // hosts run hot and the last have room.
                args.host_cpu_fraction * (0.5 + i as f64 / args.agents.max(1) as f64),
            ),
        )?;
        // Every VM's steps are archived as a trace folder per month (`forecast-eval --trace` reads it).
        let mut forecast = format!("[forecast]\narchive_dir = {:?}\n", work.join("data").join(&host).join("demand-archive"));
        for (key, path) in &models {
            if let Some(path) = path {
                forecast.push_str(&format!("{key} = {path:?}\n"));
            }
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&cfg)?;
        std::io::Write::write_all(&mut f, forecast.as_bytes())?;
        cluster.agents.push(spawn(&host, &agent_bin, &cfg, &logs)?);
    }

    // Wait until every agent has registered and reported, then prove the command channel works.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts = client.list_hosts(ListHostsRequest {}).await?.into_inner().hosts;
        if hosts.iter().filter(|h| h.reachable && h.reports > 0).count() == args.agents {
            break;
        }
        for a in cluster.agents.iter_mut() {
            if let Ok(Some(status)) = a.child.try_wait() {
                bail!("agent {} exited at start ({status}); see {}", a.name, a.log.display());
            }
        }
        if Instant::now() > deadline {
            bail!("not every agent reported within 60 s; see the logs in {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for a in &cluster.agents {
        let r = client.ping_host(PingHostRequest { host_id: a.name.clone(), timeout_ms: 5000 }).await?.into_inner();
        println!("command channel: {} answered ping #{} in {:.2} ms", a.name, r.command_id, r.round_trip_us as f64 / 1000.0);
    }

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(args.refresh);
    loop {
        tick.tick().await;
        if let Some(d) = args.duration
            && started.elapsed() >= d
        {
            return Ok(format!("--duration {} reached", humantime::format_duration(d)));
        }
        if let Some(c) = &mut cluster.coordinator
            && let Ok(Some(s)) = c.child.try_wait()
        {
            bail!("the coordinator exited unexpectedly ({s}); see {}", c.log.display());
        }
        let frame = render_frame(&mut client, args, trace, started.elapsed()).await;
        match frame {
            Ok(f) => {
                if tty {
                    print!("\x1b[2J\x1b[H");
                }
                println!("{f}");
            }
            Err(e) => eprintln!("presagectl demo: cannot read the cluster: {e:#}"),
        }
    }
}

async fn render_frame(
    client: &mut presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    args: &DemoArgs,
    trace: &Path,
    elapsed: Duration,
) -> anyhow::Result<String> {
    let status = StatusView::from(client.status(StatusRequest {}).await?.into_inner());
    let hosts: Vec<HostView> = client.list_hosts(ListHostsRequest {}).await?.into_inner().hosts.into_iter().map(Into::into).collect();
    let mut vms: Vec<VmView> = client.list_vms(ListVmsRequest::default()).await?.into_inner().vms.into_iter().map(Into::into).collect();
    vms.sort_by(|a, b| b.cpu_demand_mhz.total_cmp(&a.cpu_demand_mhz));
    vms.truncate(8);
    let mut out = format!(
        "presage demo: {} agents, trace {}, x{} time, running {}  (Ctrl-C stops)\n\n",
        args.agents,
        trace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        args.time_compression,
        humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
    );
    out.push_str(&view::hosts_table(&hosts));
    out.push('\n');
    out.push_str(&status.render());
    let plan = client.get_plan(GetPlanRequest {}).await?.into_inner();
    let done = plan.applied.iter().filter(|m| m.outcome == "done").count();
    out.push_str(&format!(
        "plan ({}): {} moves proposed now; applied so far: {done} moved, {} refused or failed\n",
        plan.policy,
        plan.moves.len(),
        plan.applied.len() - done
    ));
    for m in plan.applied.iter().rev().take(4) {
        out.push_str(&format!("  {} {} -> {} ({}) {:.0} s ago\n", m.vm_id, m.from_host, m.to_host, m.outcome, m.ago_ms as f64 / 1000.0));
    }
    out.push_str("\nbusiest VMs:\n");
    out.push_str(&view::vms_table(&vms));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_trace_folder_becomes_absolute_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("day")).unwrap();
        // Relative to the working directory (the test runs in the crate's folder).
        let cwd = std::env::current_dir().unwrap();
        let relative: PathBuf = std::iter::repeat_n("..", cwd.components().count())
            .collect::<PathBuf>()
            .join(dir.path().strip_prefix("/").unwrap())
            .join("day");
        assert!(relative.is_relative());
        let found = find_trace(Some(&relative)).unwrap();
        assert!(found.is_absolute() && found.ends_with("day"), "{}", found.display());
        let err = find_trace(Some(Path::new("no/such/day"))).unwrap_err().to_string();
        assert!(err.contains("no/such/day") && err.contains("does not exist"), "{err}");
    }
}
