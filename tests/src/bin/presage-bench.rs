//! presage benchmarks, printed as tables (figures for the issue notes, never test assertions).
//!
//! `presage-bench agent`  — cost of the real `presage-agent` process per sampling cycle with N
//!                          simulated VMs (CPU time per cycle, resident memory), plus the cost of
//!                          one in-process sampling cycle.
//! `presage-bench ingest` — reports per second the real `presage-coordinator` ingests from N
//!                          simulated agents, each on its own mutual-TLS connection.
//!
//! `presage-bench storm`  — the reconnect storm: N simulated agents in session with the real
//!                          coordinator, which is killed and started again; time until every
//!                          agent is back, failed attempts and their reasons.
//!
//! `presage-bench forecast` — forecast inference per agent cycle (features, tract, quantiles)
//!                          for N VMs, against the strongest baseline.
//! `presage-bench simulate` — wall time of the trace-replay simulator: each classic policy on
//!                          each public PlanetLab day alone on one thread, then all of them at
//!                          once on every core, with the process's peak memory.
//!
//! `presage-bench drain` — the migration executor end to end: an in-process coordinator and
//!                          simulated agents over mutual TLS; one host of N VMs is drained
//!                          (`SetDrain`) with the default `[executor]` limits; prints the time
//!                          to empty it and each move's duration, and the executor's overhead per
//!                          move (duration minus the simulated copy).
//!
//! Build with `cargo build --release --bins`; `agent` and `ingest` start the release daemons
//! next to this binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use presage_agent::SamplingCycle;
use presage_agent::config::SimulatedConfig;
use presage_agent::hypervisor::simulated::SimulatedHypervisor;
use presage_agent::store::{SampleHistory, SledStore};
use presage_protocol::pb::{HostUsage, ListHostsRequest, Report, StatusRequest, VmSample};
use presage_protocol::tls::Role;
use presage_tests::load_agents::{LoadAgents, LoadSpec};
use presage_tests::{Pki, RunningCoordinator, client, shared_data};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Agent {
        #[arg(long, default_value_t = 100)]
        vms: usize,
        /// Sampling interval of the measured agent process.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: Duration,
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// In-process cycles to time.
        #[arg(long, default_value_t = 500)]
        cycles: usize,
    },
    /// Forecast inference per agent cycle: N VMs x 12 horizons x 3 quantiles in one batch.
    Forecast {
        #[arg(long, default_value_t = 100)]
        vms: usize,
        #[arg(long, default_value_t = 2000)]
        cycles: usize,
        #[arg(long, default_value = "models/cpu-quantiles-v2.onnx")]
        model: PathBuf,
    },
    Simulate {
        /// PlanetLab days to replay (folders under the shared data's planetlab/).
        #[arg(long, value_delimiter = ',', default_value = "20110303,20110306,20110309,20110322,20110325")]
        days: Vec<String>,
    },
    /// presage's decisions at fleet scale: single placements among all hosts (p50/p99) and one
    /// full rebalance pass, on a fleet whose VMs carry forecasts from real PlanetLab series.
    Decide {
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
        #[arg(long, default_value_t = 100_000)]
        vms: usize,
        #[arg(long, default_value_t = 1000)]
        placements: usize,
    },
    /// The borrowing broker over `hosts` hosts / `vms` VMs (random forecasts, seeded), and an
    /// agent's sizing cycle (lease enforcement) with `leases` leases on a simulated host.
    Sizing {
        #[arg(long, default_value_t = 10_000)]
        hosts: usize,
        #[arg(long, default_value_t = 100_000)]
        vms: usize,
        #[arg(long, default_value_t = 100)]
        leases: usize,
    },
    /// Decision to effect per resize knob on a real guest under a real libvirt daemon (root,
    /// /dev/kvm, libvirtd, QEMU): CPU quota, CPU shares, disk limit, memory balloon, vCPUs,
    /// interface bandwidth, each `rounds` times each way.
    Knobs {
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Drain one host of `vms` VMs onto `destinations` empty hosts with the default limits.
    Drain {
        #[arg(long, default_value_t = 40)]
        vms: usize,
        #[arg(long, default_value_t = 4)]
        destinations: usize,
        /// Simulated copy bandwidth, MB/s (1250: 10 GbE; 1e9: copies take no time, so a move's
        /// duration is the executor's own overhead).
        #[arg(long, default_value_t = 1250.0)]
        mb_per_s: f64,
    },
    /// The dependency ecosystem: score updates per VM change and `GET /ecosystem` at `vms` VMs
    /// with 5 dependencies each, and one repair pass of presage's policy at `repair_vms` VMs.
    Ecosystem {
        #[arg(long, default_value_t = 10_000)]
        vms: usize,
        #[arg(long, default_value_t = 100_000)]
        repair_vms: usize,
    },
    /// presage-guest and anomaly scoring: one agent cycle's anomaly scoring at `vms` VMs (CPU,
    /// memory, one guest application each), the host's cost per guest frame, and the
    /// presage-guest process's RSS and CPU over `seconds` under a statsd load.
    Guest {
        #[arg(long, default_value_t = 100)]
        vms: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// statsd timings per second pushed to the guest.
        #[arg(long, default_value_t = 1000)]
        timings_per_s: u64,
    },
    /// The coordinator's `/metrics` rendering with `hosts` hosts of `vms` VMs each in its state
    /// (in process: the cost of a scrape itself, apart from the connection).
    Metrics {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 100)]
        vms: usize,
    },
    /// The web view's overview with `hosts` hosts of `vms` VMs each in the coordinator's state
    /// (24 samples of history, 12-step forecasts): `/v1/overview`'s build time and size, and the
    /// page's load time to its first full render in Chromium (Playwright: PRESAGE_PLAYWRIGHT,
    /// as `./presage.sh deps` installs it).
    Web {
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        #[arg(long, default_value_t = 10)]
        vms: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The durable store, sled against a 3-member etcd on loopback: single writes, and the plan
    /// journal as the executor writes it (a plan of N moves, every move through its steps).
    Store {
        #[arg(long, default_value_t = 1000)]
        writes: usize,
        /// Plan sizes (moves), comma-separated.
        #[arg(long, default_value = "10,100,1000", value_delimiter = ',')]
        moves: Vec<usize>,
    },
    /// The reconnect storm: the coordinator killed and started again under N agents.
    Storm {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 10)]
        vms: usize,
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        every: Duration,
        #[arg(long, default_value_t = 3)]
        restarts: usize,
    },
    Ingest {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        #[arg(long, default_value_t = 10)]
        vms: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Each agent reports this often (as real agents do: `sample_interval`); without it,
        /// as fast as the coordinator takes reports (a flood: the ingest ceiling).
        #[arg(long, value_parser = humantime::parse_duration)]
        every: Option<Duration>,
        /// The coordinator's durable state on a 3-member etcd (started here) instead of sled.
        #[arg(long)]
        etcd: bool,
        /// How often the coordinator's policy pass runs (advisory), to time it under the load.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        policy_every: Duration,
    },
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.parent().context("exe folder")?.join(name);
    if !p.exists() {
        bail!("{} is missing: run `cargo build --release --bins` first", p.display());
    }
    Ok(p)
}

/// (CPU seconds, RSS bytes, peak RSS bytes) of a process.
fn proc_cost(pid: i32) -> anyhow::Result<(f64, u64, u64)> {
    let p = procfs::process::Process::new(pid)?;
    let stat = p.stat()?;
    let status = p.status()?;
    let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    Ok((cpu, status.vmrss.unwrap_or(0) * 1024, status.vmhwm.unwrap_or(0) * 1024))
}

fn self_cpu() -> f64 {
    proc_cost(std::process::id() as i32).map(|c| c.0).unwrap_or(0.0)
}

async fn bench_agent(vms: usize, interval: Duration, duration: Duration, cycles: usize) -> anyhow::Result<()> {
    let trace = shared_data().join("planetlab/20110303");
    // 1. In-process: one sampling cycle (simulated observation + sled history append + report).
    let dir = tempfile::tempdir()?;
    let sim_cfg = SimulatedConfig { max_vms: vms, ..SimulatedConfig::replaying(trace.clone()) };
    let hv = Arc::new(SimulatedHypervisor::load(&sim_cfg)?);
    let store = SledStore::open(dir.path())?;
    let history = Arc::new(SampleHistory::open(&store, 8640, dir.path())?);
    let mut cycle = SamplingCycle::new(hv, history);
    cycle.run_once()?;
    let (cpu0, t0) = (self_cpu(), Instant::now());
    for _ in 0..cycles {
        std::hint::black_box(cycle.run_once()?);
    }
    let (cpu_in, wall_in) = ((self_cpu() - cpu0) / cycles as f64, t0.elapsed().as_secs_f64() / cycles as f64);

    // 2. The real agent process against a real coordinator.
    let agent_bin = sibling("presage-agent")?;
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(30)).await;
    let files = pki.issue(Role::Agent, "bench-agent");
    let cfg_path = dir.path().join("agent.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "host_id = \"bench-agent\"\ncoordinator = \"{}\"\ndata_dir = {:?}\nsample_interval = \"{}ms\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
             [hypervisor]\nkind = \"simulated\"\ntrace_dir = {:?}\ntime_compression = {}\nmax_vms = {vms}\n\
             [forecast]\ncpu_model = {:?}\nmemory_model = {:?}\n",
            coord.url,
            dir.path().join("agent-data"),
            interval.as_millis(),
            files.ca,
            files.cert,
            files.key,
            trace,
            // One 5-minute trace step per sample, so the forecaster runs after 24 samples.
            300.0 / interval.as_secs_f64(),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/cpu-quantiles-v2.onnx"),
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/memory-quantiles-v2.onnx"),
        ),
    )?;
    let mut child = tokio::process::Command::new(&agent_bin)
        .arg("--config")
        .arg(&cfg_path)
        .env("RUST_LOG", "warn")
        .envs(std::env::var("BENCH_AGENT_ENV").ok().and_then(|v| v.split_once('=').map(|(a, b)| (a.to_string(), b.to_string()))))
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("agent pid")? as i32;
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "bench")).await?;
    // Warm up: wait for the first delivered report.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hosts = op.list_hosts(ListHostsRequest {}).await?.into_inner().hosts;
        if hosts.iter().any(|h| h.reports >= 2) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent did not report within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seq0 = op.list_hosts(ListHostsRequest {}).await?.into_inner().hosts[0].last_report_seq;
    let (c0, _, _) = proc_cost(pid)?;
    let mut rss_max = 0;
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(proc_cost(pid)?.1);
    }
    let (c1, rss, hwm) = proc_cost(pid)?;
    let st = procfs::process::Process::new(pid)?.status()?;
    let (anon, file) = (st.rssanon.unwrap_or(0) as f64 / 1024.0, st.rssfile.unwrap_or(0) as f64 / 1024.0);
    let seq1 = op.list_hosts(ListHostsRequest {}).await?.into_inner().hosts[0].last_report_seq;
    terminate(pid);
    let status = child.wait().await?;
    coord.stop().await;
    let n = (seq1 - seq0).max(1) as f64;
    let per_cycle = (c1 - c0) / n;
    println!("agent benchmark: {vms} simulated VMs (PlanetLab 20110303), release build");
    println!("  in-process sampling cycle   cpu {:.1} us/cycle, wall {:.1} us/cycle ({cycles} cycles)", cpu_in * 1e6, wall_in * 1e6);
    println!("  agent process               {n:.0} cycles at {interval:?} over {duration:?}, exit {status}");
    println!(
        "    CPU per cycle             {:.2} ms (everything the process did: sampling, store, TLS stream, keepalives)",
        per_cycle * 1e3
    );
    println!("    CPU at a 10 s interval    {:.4} % of one core", per_cycle / 10.0 * 100.0);
    println!(
        "    RSS                       {:.1} MiB now, {:.1} MiB max seen, {:.1} MiB peak (VmHWM)",
        rss as f64 / 1048576.0,
        rss_max as f64 / 1048576.0,
        hwm as f64 / 1048576.0
    );
    println!(
        "      of which private heap   {anon:.1} MiB anonymous; {file:.1} MiB file-backed (the binary's code and the C library; libvirt lives in presage-libvirt)"
    );
    Ok(())
}

/// sled and etcd side by side: write latency and rate, and the plan journal's saves.
async fn bench_store(writes: usize, moves: &[usize]) -> anyhow::Result<()> {
    use presage_coordinator::plan_journal::{MoveRecord, PlanJournal, Step};
    use presage_store::{EtcdConfig, EtcdStore, KvStore, SledStore};
    let etcd = tokio::task::spawn_blocking(|| presage_tests::etcd::EtcdCluster::start(3)).await?;
    let dir = tempfile::tempdir()?;
    let endpoints = etcd.endpoints();
    let etcd_store = tokio::task::spawn_blocking(move || {
        EtcdStore::connect(&EtcdConfig { endpoints, prefix: "bench/".into(), tls: None, request_timeout: Duration::from_secs(5) })
    })
    .await??;
    let backends: Vec<(&str, Arc<dyn KvStore>)> =
        vec![("sled", Arc::new(SledStore::open(&dir.path().join("sled"))?)), ("etcd (3 members)", Arc::new(etcd_store))];
    println!("durable store benchmark: sled in a temporary folder against a 3-member etcd 3.4 on loopback (same machine)");
    for (name, store) in backends {
        let (writes_line, journal_lines) = tokio::task::spawn_blocking({
            let moves = moves.to_vec();
            move || -> anyhow::Result<(String, Vec<String>)> {
                // Single writes, each durable before the next (as the journal and drain marks write).
                let tree = store.tree("bench")?;
                let value = vec![7u8; 512];
                let mut times = Vec::with_capacity(writes);
                let t0 = Instant::now();
                for i in 0..writes {
                    let t = Instant::now();
                    tree.insert(format!("k{i:08}").as_bytes(), &value)?;
                    store.flush()?;
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
                let rate = writes as f64 / t0.elapsed().as_secs_f64();
                times.sort_by(f64::total_cmp);
                let writes_line = format!(
                    "  {name:<17} {writes} writes of 512 B: {rate:.0} writes/s, median {:.2} ms, p99 {:.2} ms",
                    times[times.len() / 2],
                    times[times.len() * 99 / 100]
                );
                // The journal: a plan created, then each move through reserving, migrating,
                // completing and done, the whole record saved at each step (as the executor does).
                let journal = PlanJournal::open(store.clone())?;
                let mut lines = Vec::new();
                for &n in &moves {
                    let records: Vec<MoveRecord> =
                        (0..n).map(|i| MoveRecord::new(&format!("vm-{i:05}"), "hv-a", "hv-b", "overload", 2000.0, 4096.0)).collect();
                    let t = Instant::now();
                    let mut plan = match journal.create("bench", records, 0, None) {
                        Ok(p) => p,
                        Err(e) => {
                            lines.push(format!("    plan of {n} moves: refused: {e}"));
                            continue;
                        }
                    };
                    let created = t.elapsed();
                    let bytes = serde_json::to_vec(&plan)?.len();
                    let steps = [Step::Reserving, Step::Migrating, Step::Completing, Step::Done];
                    let saves = (n * steps.len()).min(400);
                    let t = Instant::now();
                    let mut done = 0;
                    'moves: for m in 0..n {
                        for step in steps {
                            if done == saves {
                                break 'moves;
                            }
                            plan.moves[m].step = step;
                            journal.save(&plan)?;
                            done += 1;
                        }
                    }
                    let per_save = t.elapsed().as_secs_f64() / done as f64;
                    lines.push(format!(
                        "    plan of {n:>5} moves ({:.1} KiB): created in {:.1} ms; {done} step saves at {:.0} saves/s ({:.2} ms each)",
                        bytes as f64 / 1024.0,
                        created.as_secs_f64() * 1e3,
                        1.0 / per_save,
                        per_save * 1e3
                    ));
                }
                Ok((writes_line, lines))
            }
        })
        .await??;
        println!("{writes_line}");
        for l in journal_lines {
            println!("{l}");
        }
    }
    let limits = presage_decide::migration_queue::MigrationLimits::default();
    println!(
        "  the executor at its limits ({} moves at once in the cluster, 4 saves a move, a move >= {} s for 4 GiB at {} MB/s): at most {:.1} saves/s",
        limits.cluster,
        4096 / limits.assumed_mb_per_s,
        limits.assumed_mb_per_s,
        limits.cluster as f64 * 4.0 / (4096.0 / limits.assumed_mb_per_s as f64)
    );
    drop(etcd);
    Ok(())
}

/// Sends SIGTERM to a child this benchmark started.
fn terminate(pid: i32) {
    // SAFETY: kill(2) on a pid we own; no memory is shared.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// The release coordinator binary serving on a free loopback port (its config in the returned
/// folder, which must outlive it).
async fn coordinator_process(pki: &Pki) -> anyhow::Result<(tokio::process::Child, String, tempfile::TempDir)> {
    coordinator_process_with(pki, "").await
}

/// [`coordinator_process`] with `extra` appended to its configuration file.
async fn coordinator_process_with(pki: &Pki, extra: &str) -> anyhow::Result<(tokio::process::Child, String, tempfile::TempDir)> {
    let coord_bin = sibling("presage-coordinator")?;
    let dir = tempfile::tempdir()?;
    let files = pki.issue(Role::Coordinator, "coordinator");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nhost_timeout = \"60s\"\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n[metrics]\nlisten = \"127.0.0.1:{}\"\n{extra}",
            dir.path().join("state"),
            files.ca,
            files.cert,
            files.key,
            port + 1
        ),
    )?;
    let coord = tokio::process::Command::new(&coord_bin).arg("--config").arg(&cfg).env("RUST_LOG", "warn").kill_on_drop(true).spawn()?;
    Ok((coord, format!("https://127.0.0.1:{port}"), dir))
}

/// Registers host `h` (`hv-NNNNN`: 64 cores at 2.5 GHz, 512 GiB) straight into the coordinator's
/// state, as its session would; its name.
fn register_big_host(coord: &RunningCoordinator, h: usize, now: Instant) -> String {
    use presage_protocol::pb::{HostCapacity, Register};
    let host = format!("hv-{h:05}");
    let reg = Register {
        protocol_version: presage_protocol::PROTOCOL_VERSION,
        host_id: host.clone(),
        capacity: Some(HostCapacity { cpu_cores: 64, cpu_mhz_per_core: 2500.0, memory_bytes: 512 << 30, ..Default::default() }),
        hypervisor_kind: "simulated".into(),
        boot_id: "b".into(),
        ..Default::default()
    };
    coord.shared.state().register(&reg, h as u64 + 1, now);
    host
}

async fn bench_metrics(hosts: usize, vms: usize) -> anyhow::Result<()> {
    use presage_protocol::pb::{Report, VmSample, VmState};
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(3600)).await;
    let now = Instant::now();
    for h in 0..hosts {
        let host = register_big_host(&coord, h, now);
        let report = Report {
            seq: 1,
            sampled_at_ms: 1,
            host: Some(Default::default()),
            vms: (0..vms)
                .map(|v| VmSample {
                    vm_id: format!("{host}-vm{v:03}"),
                    state: VmState::Running as i32,
                    vcpus: 2,
                    cpu_utilisation: 0.3,
                    memory_bytes: 4 << 30,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let mut state = coord.shared.state();
        state.ingest(&host, h as u64 + 1, report, now).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        size = presage_coordinator::metrics::render(&coord.shared).len();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let text = presage_coordinator::metrics::render(&coord.shared);
    anyhow::ensure!(text.contains(&format!("presage_vms {}\n", hosts * vms)), "the state does not hold what was ingested:\n{text}");
    println!("coordinator /metrics rendering: {hosts} hosts x {vms} VMs in its state, release build");
    println!("  render                      median {:.2} ms, worst {:.2} ms of 20; {size} bytes", times[10] * 1e3, times[19] * 1e3);
    coord.stop().await;
    Ok(())
}

async fn bench_web(hosts: usize, vms: usize, runs: usize) -> anyhow::Result<()> {
    use presage_protocol::pb::{HostUsage, Report, VmForecast, VmSample, VmState};
    let playwright =
        std::env::var("PRESAGE_PLAYWRIGHT").context("PRESAGE_PLAYWRIGHT: the playwright-core package folder (./presage.sh deps)")?;
    let pki = Pki::new();
    let coord = RunningCoordinator::start(&pki, 0, Duration::from_secs(3600)).await;
    let now = Instant::now();
    let t_fill = Instant::now();
    for h in 0..hosts {
        let host = register_big_host(&coord, h, now);
        // 24 cycles: each VM's history fills; the last carries 12-step forecasts.
        for cycle in 0..24u64 {
            let load = |v: usize| (0.2 + 0.5 * (((h * 7 + v * 13) as f64 + cycle as f64 / 3.0).sin() + 1.0) / 2.0) as f32;
            let report = Report {
                seq: cycle + 1,
                sampled_at_ms: 1_700_000_000_000 + cycle * 300_000,
                host: Some(HostUsage { memory_used_bytes: 200 << 30, ..Default::default() }),
                vms: (0..vms)
                    .map(|v| VmSample {
                        vm_id: format!("{host}-vm{v:03}"),
                        name: format!("{host}-vm{v:03}"),
                        state: VmState::Running as i32,
                        vcpus: 4,
                        cpu_utilisation: load(v) as f64,
                        memory_bytes: 16 << 30,
                        forecast: (cycle == 23).then(|| VmForecast {
                            forecaster: "cpu-quantiles-v2".into(),
                            step_seconds: 300,
                            first_step: 1_700_000_000 / 300 + 24,
                            cpu_p10: (0..12).map(|i| load(v) * 0.8 + i as f32 * 0.001).collect(),
                            cpu_p50: (0..12).map(|_| load(v)).collect(),
                            cpu_p90: (0..12).map(|i| (load(v) * 1.2 + i as f32 * 0.002).min(1.0)).collect(),
                            memory: None,
                            cpu_peak: (load(v) * 1.5).min(1.0),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            };
            coord.shared.state().ingest(&host, h as u64 + 1, report, now).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    let fill = t_fill.elapsed();
    let mut builds = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t = Instant::now();
        size = serde_json::to_vec(&presage_coordinator::web::overview_of(&coord.shared))?.len();
        builds.push(t.elapsed().as_secs_f64());
    }
    builds.sort_by(f64::total_cmp);
    let files = pki.issue(Role::Operator, "browser");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/load-time.mjs");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artefacts/web");
    std::fs::create_dir_all(&shots)?;
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .env("PRESAGE_PLAYWRIGHT", &playwright)
        .env("PRESAGE_URL", &coord.url)
        .env("PRESAGE_CERT", &files.cert)
        .env("PRESAGE_KEY", &files.key)
        .env("PRESAGE_RUNS", runs.to_string())
        .env("PRESAGE_SHOTS", &shots)
        .output()
        .await
        .context("running node")?;
    anyhow::ensure!(out.status.success(), "the browser run failed: {}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut loads: Vec<f64> = seen["runs_ms"].as_array().context("runs_ms")?.iter().filter_map(|v| v.as_f64()).collect();
    loads.sort_by(f64::total_cmp);
    anyhow::ensure!(seen["rows"].as_u64() == Some(hosts as u64), "the page drew {} host rows, not {hosts}", seen["rows"]);
    println!("web overview: {hosts} hosts x {vms} VMs in the coordinator's state (filled in {:.1} s), release build", fill.as_secs_f64());
    println!("  /v1/overview build+JSON     median {:.1} ms, worst {:.1} ms of 10; {size} bytes", builds[5] * 1e3, builds[9] * 1e3);
    println!(
        "  Chromium, /ui/ to the full overview drawn (mutual TLS on loopback): median {:.0} ms, worst {:.0} ms of {} ({:?} first contentful paint)",
        loads[loads.len() / 2],
        loads[loads.len() - 1],
        loads.len(),
        seen["first_paint_ms"]
    );
    coord.stop().await;
    Ok(())
}

async fn bench_ingest(
    agents: usize,
    vms: usize,
    duration: Duration,
    every: Option<Duration>,
    etcd: bool,
    policy_every: Duration,
) -> anyhow::Result<()> {
    let pki = Pki::new();
    let cluster = if etcd { Some(tokio::task::spawn_blocking(|| presage_tests::etcd::EtcdCluster::start(3)).await?) } else { None };
    // The policy pass (advisory), timed over the state under load.
    let mut extra = format!("[policy]\ninterval = \"{}\"\n", humantime::format_duration(policy_every));
    if let Some(c) = &cluster {
        extra.push_str(&format!(
            "[cluster]\nstore = \"etcd\"\n[cluster.etcd]\nendpoints = [{}]\nprefix = \"bench/\"\n",
            c.endpoints().iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")
        ));
    }
    let (mut coord, url, _dir) = coordinator_process_with(&pki, &extra).await?;
    let cpid = coord.id().context("pid")? as i32;
    let op_files = pki.issue(Role::Operator, "bench");
    let mut op = loop {
        match client(&url, &op_files).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let t_setup = Instant::now();
    let load = LoadAgents::start(&pki, &LoadSpec::new(agents, vms, every, vec![url.clone()]))?;
    // Every simulated agent in session (they retry as real agents do; the counts say how often).
    load.wait_in_session(agents, Duration::from_secs(300)).await?;
    loop {
        let s = op.status(StatusRequest {}).await?.into_inner();
        if s.hosts_connected as usize == agents {
            break;
        }
        anyhow::ensure!(t_setup.elapsed() < Duration::from_secs(300), "the coordinator counts {} of {agents} agents", s.hosts_connected);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let setup = t_setup.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s0 = op.status(StatusRequest {}).await?.into_inner();
    let (cc0, _, _) = proc_cost(cpid)?;
    let (bc0, t0) = (self_cpu(), Instant::now());
    tokio::time::sleep(duration).await;
    let s1 = op.status(StatusRequest {}).await?.into_inner();
    let (cc1, rss, _) = proc_cost(cpid)?;
    let (bc1, el) = (self_cpu(), t0.elapsed().as_secs_f64());
    // /metrics as Prometheus scrapes it (mutual TLS, a metrics certificate), under the load.
    let scraper = {
        let files = pki.issue(Role::Metrics, "prometheus").load()?;
        presage_protocol::rest_client::RestClient::new(&url, &files, presage_protocol::COORDINATOR_TLS_NAME)?
    };
    let mut scrapes = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (status, body) = scraper.get_raw("/metrics").await?;
        scrapes.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(status == 200, "/metrics answered {status}");
        size = body.len();
    }
    scrapes.sort_by(f64::total_cmp);
    // The same on the plain port (no TLS handshake): what rendering costs.
    let plain_addr: std::net::SocketAddr = format!("127.0.0.1:{}", url.rsplit(':').next().unwrap_or("0").parse::<u16>()? + 1).parse()?;
    let mut plain = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let body = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(plain_addr)?;
            write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            Ok(raw.len())
        })
        .await??;
        anyhow::ensure!(body > 0, "the plain /metrics port answered nothing");
        plain.push(t.elapsed().as_secs_f64());
    }
    plain.sort_by(f64::total_cmp);
    // The policy passes' durations, from the coordinator's own histogram.
    let text = tokio::task::spawn_blocking(move || presage_tests::scrape_metrics(plain_addr)).await?;
    let sample = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let (passes, pass_seconds) = (sample("presage_policy_pass_seconds_count"), sample("presage_policy_pass_seconds_sum"));
    let failures = load.stats.failures.load(std::sync::atomic::Ordering::Relaxed);
    let lost = load.stats.sessions_lost.load(std::sync::atomic::Ordering::Relaxed);
    let reasons = load.stats.reasons();
    drop(load);
    terminate(cpid);
    let _ = coord.wait().await;
    let n = (s1.reports_ingested - s0.reports_ingested) as f64;
    let rate = every.map_or("as fast as taken".to_string(), |e| format!("every {}", humantime::format_duration(e)));
    println!(
        "coordinator ingest benchmark: {agents} agents (one mTLS connection each), {vms} VMs per report, reports {rate}, state in {}, release build",
        if etcd { "a 3-member etcd" } else { "sled" }
    );
    println!("  all agents registered in    {:.1} s", setup.as_secs_f64());
    println!("  reports ingested            {n:.0} in {el:.1} s = {:.0} reports/s ({:.0} VM samples/s)", n / el, n * vms as f64 / el);
    println!("  rejected                    {}", s1.reports_rejected);
    println!("  failed attempts to get in   {failures} (each retried with the agent's backoff); {lost} sessions lost");
    for (reason, n) in reasons {
        println!("      {n:>6}  {reason}");
    }
    println!(
        "  /metrics scrape             median {:.1} ms, worst {:.1} ms of 5 over mutual TLS (a new connection each), {:.1} / {:.1} ms on the plain port; {size} bytes",
        scrapes[2] * 1e3,
        scrapes[4] * 1e3,
        plain[2] * 1e3,
        plain[4] * 1e3
    );
    println!("  coordinator CPU             {:.2} cores busy, RSS {:.1} MiB", (cc1 - cc0) / el, rss as f64 / 1048576.0);
    println!(
        "  policy pass (every {})  {passes:.0} passes, mean {:.1} ms ({} hosts, {} VMs)",
        humantime::format_duration(policy_every),
        if passes > 0.0 { pass_seconds / passes * 1e3 } else { f64::NAN },
        agents,
        agents * vms
    );
    println!(
        "  load generator CPU          {:.2} cores busy (same machine, {} cores)",
        (bc1 - bc0) / el,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    Ok(())
}

/// VM `g` of a fleet of `apps` applications of 10 VMs whose members are scattered over the
/// fleet (VM g is member (g x 7919 mod 10 x apps) of the list of all apps' VMs): its declaration
/// (type t(i mod 10), requires the next type within 1 ms, prefers the four after).
fn bench_declaration(name: &str, g: usize, apps: usize) -> serde_json::Value {
    let l = (g * 7919) % (10 * apps).max(1);
    let (app, t) = (l / 10, l % 10);
    let ty = |k: usize| format!("t{}", (t + k) % 10);
    serde_json::json!({
        "vm_name": name, "application": format!("app{app}"), "profile": {"type": ty(0)},
        "dependencies": {
            "required": [{"type": ty(1), "network_latency_requirement": "< 1ms"}],
            "preferred": (2..6).map(|k| serde_json::json!({"type": ty(k)})).collect::<Vec<_>>()
        }
    })
}

async fn bench_ecosystem(n_vms: usize, repair_vms: usize) -> anyhow::Result<()> {
    use presage_decide::ecosystem::graph::{EcosystemGraph, MatchOptions};
    use presage_decide::ecosystem::score::{Placement, move_effect};
    use presage_decide::ecosystem::scorer::{EcosystemHandle, FleetEcosystem, presage_with_ecosystem};
    use presage_decide::ecosystem::{Declaration, LatencyTable, Location};
    use presage_decide::policy::presage::PresageConfig;
    use presage_decide::policy::{ConsolidationPolicy, FleetView, HostView, VmView};

    // The decision core: a graph of n_vms on n_vms / 100 hosts (20 per rack, 5 racks a zone).
    let hosts = (n_vms / 100).max(1);
    let per_host = n_vms.div_ceil(hosts);
    let name = |h: usize, v: usize| format!("load-{h:04}-vm{v}");
    let decls: Vec<Declaration> = (0..n_vms)
        .map(|g| serde_json::from_value(bench_declaration(&name(g / per_host, g % per_host), g, n_vms / 10)).expect("a declaration"))
        .collect();
    let t = Instant::now();
    let graph = EcosystemGraph::build(&decls, MatchOptions::default(), &|_, _| None);
    let build = t.elapsed();
    let locations: Vec<Location> = (0..hosts).map(|h| Location { zone: (h / 100) as u32, rack: (h / 20) as u32 }).collect();
    let latency = LatencyTable::default();
    let host_of = |g: usize| Some(g / per_host);
    let placement = Placement { host_of: &host_of, locations: &locations, latency: &latency };
    let mut rng = fastrand::Rng::with_seed(7);
    let mut times = Vec::new();
    for _ in 0..2000 {
        let (vm, to) = (rng.usize(..graph.len()), rng.usize(..hosts));
        let t = Instant::now();
        let e = move_effect(&graph, &placement, &[vm], to);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(e);
    }
    let (mean, p99) = mean_and_p99(times);
    println!("dependency ecosystem benchmark, release build, one thread");
    println!("  graph of {} VMs, {} edges, {hosts} hosts: built in {:.0} ms", graph.len(), graph.edges().len(), build.as_secs_f64() * 1e3);
    println!("  score update per VM change (the VM and its neighbours, before and after): mean {mean:.3} ms, p99 {p99:.3} ms");

    // One repair pass of presage's policy at repair_vms VMs on repair_vms / 10 hosts.
    let r_hosts = (repair_vms / 10).max(1);
    let rdecls: Vec<Declaration> = (0..repair_vms)
        .map(|g| serde_json::from_value(bench_declaration(&format!("vm{g}"), g, repair_vms / 10)).expect("a declaration"))
        .collect();
    let rgraph = EcosystemGraph::build(&rdecls, MatchOptions::default(), &|_, _| None);
    let redges = rgraph.edges().len();
    let mut hv: Vec<HostView> =
        (0..r_hosts).map(|_| HostView::new(32, 2600.0, 262_144.0, 1250.0, presage_decide::policy::power::IBM_X3550_M3_X5675)).collect();
    let mut vms = Vec::with_capacity(repair_vms);
    for g in 0..repair_vms {
        let h = g % r_hosts;
        let mut v = VmView::unplaced(2, 2600.0, 4096.0);
        v.host = Some(h);
        v.demand_mips = 0.3 * v.capacity_mips();
        v.forecast = Some(presage_decide::demand::Forecast::flat([0.25, 0.3, 0.35]));
        v.memory_request_mb = 4096.0;
        hv[h].vms.push(g);
        hv[h].observed_mips += v.demand_mips;
        vms.push(v);
    }
    let rlocations: Vec<Location> = (0..r_hosts).map(|h| Location { zone: (h / 100) as u32, rack: (h / 20) as u32 }).collect();
    let index: std::collections::HashMap<String, usize> = (0..repair_vms).map(|g| (format!("vm{g}"), g)).collect();
    let t = Instant::now();
    let eco = FleetEcosystem::new(rgraph, repair_vms, &|n| index.get(n).copied(), rlocations, latency);
    let index_time = t.elapsed();
    let cfg = PresageConfig { underload_utilisation: 0.0, underload_power_ratio: 1e9, repair_after_passes: 1, ..PresageConfig::default() };
    let mut policy = presage_with_ecosystem(cfg, EcosystemHandle::new(eco));
    let fleet = FleetView { now_s: 100_000.0, hosts: &hv, vms: &vms };
    let t = Instant::now();
    let moves = policy.optimise(&fleet);
    let pass = t.elapsed();
    println!(
        "  repair pass at {repair_vms} VMs ({redges} edges) on {r_hosts} hosts: fleet index {:.0} ms, pass {:.2} s, {} repair moves (cap {} per pass)",
        index_time.as_secs_f64() * 1e3,
        pass.as_secs_f64(),
        moves.len(),
        PresageConfig::default().max_moves_per_pass
    );
    println!("  peak RSS (VmHWM) so far            {:.1} MiB", peak_rss_mib());

    // GET /ecosystem against a coordinator process holding n_vms VMs reported by fake agents.
    let pki = Pki::new();
    let (mut coord, url, _dir) = coordinator_process(&pki).await?;
    let cpid = coord.id().context("pid")? as i32;
    let admin_files = pki.issue(Role::Admin, "bench");
    let mut op = loop {
        match client(&url, &admin_files).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let load = LoadAgents::start(&pki, &LoadSpec::new(hosts, per_host, Some(Duration::from_secs(1)), vec![url.clone()]))?;
    let t0 = Instant::now();
    loop {
        let s = op.status(StatusRequest {}).await?.into_inner();
        if s.vms_total as usize >= hosts * per_host {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {} VMs reported", s.vms_total, hosts * per_host);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rest = presage_protocol::rest_client::RestClient::new(&url, &admin_files.load()?, presage_protocol::COORDINATOR_TLS_NAME)?;
    let body: Vec<serde_json::Value> =
        (0..hosts * per_host).map(|g| bench_declaration(&name(g / per_host, g % per_host), g, n_vms / 10)).collect();
    let body = serde_json::to_vec(&body)?;
    let t = Instant::now();
    let r = rest.post("/v1/dependencies", &body).await?;
    let register = t.elapsed();
    if r.status != 200 {
        bail!("registration refused: {}", r.body);
    }
    let mut times = Vec::new();
    let mut size = 0;
    let mut nodes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let (status, bytes) = rest.get_raw("/v1/ecosystem").await?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("GET /ecosystem answered {status}");
        }
        size = bytes.len();
        nodes = serde_json::from_slice::<serde_json::Value>(&bytes)?["nodes"].as_array().map_or(0, |n| n.len());
    }
    // The same scoring with a one-VM answer: what the JSON and its transfer cost.
    let mut one = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (status, _) = rest.get_raw(&format!("/v1/ecosystem?vm={}", name(0, 0))).await?;
        one.push(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("GET /ecosystem?vm= answered {status}");
        }
    }
    let (cc, rss, _) = proc_cost(cpid)?;
    drop(load);
    terminate(cpid);
    let _ = coord.wait().await;
    let (mean, p99) = mean_and_p99(times);
    println!(
        "  POST /dependencies with {} declarations ({:.1} MB): {:.0} ms",
        hosts * per_host,
        body.len() as f64 / 1e6,
        register.as_secs_f64() * 1e3
    );
    println!(
        "  GET /ecosystem, {nodes} nodes ({:.1} MB of JSON), HTTP/1.1 over mutual TLS, until the last byte: mean {mean:.0} ms, p99 {p99:.0} ms",
        size as f64 / 1e6
    );
    let (one_mean, one_p99) = mean_and_p99(one);
    println!("  GET /ecosystem?vm=ONE (one node scored and sent, with its edges): mean {one_mean:.0} ms, p99 {one_p99:.0} ms");
    println!("  coordinator: RSS {:.1} MiB, {cc:.1} CPU-seconds in all", rss as f64 / 1048576.0);
    Ok(())
}

fn peak_rss_mib() -> f64 {
    proc_cost(std::process::id() as i32).map(|c| c.2 as f64 / 1048576.0).unwrap_or(0.0)
}

fn bench_simulate(days: &[String]) -> anyhow::Result<()> {
    use presage_decide::policy::PolicySpec;
    use presage_simulator::{Scenario, Simulation};
    use presagectl::simulate::{SimulateArgs, simulate};

    let data = shared_data().join("planetlab");
    let order = presage_tests::shared_reference().join("cloudsim/vm_order");
    let policies = PolicySpec::all_classic();
    println!("simulator: {} policies x {} PlanetLab days, 800 hosts, release build", policies.len(), days.len());
    println!("  one run at a time, one thread (load = reading and parsing the day's traces):");
    let mut runs: Vec<(String, String, f64)> = Vec::new();
    for day in days {
        let t0 = Instant::now();
        let scenario = Scenario::planetlab(&data.join(day), Some(&order.join(format!("{day}.csv"))), 800)?;
        let load = t0.elapsed().as_secs_f64();
        let mut line = format!("    {day} ({} VMs): load {:.3} s;", scenario.vms.len(), load);
        for p in &policies {
            let t = Instant::now();
            let r = Simulation::new(&scenario, p.build(), p.power_mode()).run(|_, _| {});
            let s = t.elapsed().as_secs_f64();
            line.push_str(&format!(" {}={s:.3}", r.policy));
            runs.push((r.policy, day.clone(), s + load));
        }
        println!("{line}");
    }
    let worst = runs.iter().cloned().fold((String::new(), String::new(), 0.0), |a, b| if b.2 > a.2 { b } else { a });
    println!("  slowest day x policy, load included: {} on {} in {:.3} s", worst.0, worst.1, worst.2);
    println!("  peak RSS so far                     {:.1} MiB", peak_rss_mib());
    let args = SimulateArgs::new(days.iter().map(|d| data.join(d)).collect(), Some(order));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let t = Instant::now();
    let all = simulate(&args, &policies, &indicatif::ProgressBar::hidden())?;
    println!("  all {} runs at once on {cores} cores: {:.2} s wall, load included", all.len(), t.elapsed().as_secs_f64());
    println!("  peak RSS (VmHWM)                    {:.1} MiB", peak_rss_mib());
    Ok(())
}

/// Mean and 99th percentile (nearest rank from below) of timings.
fn mean_and_p99(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(|a, b| a.total_cmp(b));
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    (mean, times[(times.len() * 99 / 100).min(times.len() - 1)])
}

fn bench_forecast(vms: usize, cycles: usize, model: &std::path::Path) -> anyhow::Result<()> {
    use presage_forecast::onnx::OnnxForecaster;
    use presage_forecast::{Forecaster, SeriesContext, baselines::RollingQuantiles};

    use presage_forecast::fleet::{FleetForecaster, SeriesRequest};

    // Bitbrains VMs with more than a week of history, so every feature (the 7-day profile
    // included) is computed as on a long-running agent.
    let month = shared_data().join("bitbrains-rnd/2013-7");
    let set = presage_traces::load_dir(&month, None, presage_traces::Selection { index: 0, count: 1, limit: vms * 2 }, None)?;
    let series: Vec<Vec<f32>> = set.vms.iter().map(|v| v.cpu_series().to_vec()).filter(|s| s.len() > 6000).take(vms).collect();
    let t0 = Instant::now();
    let onnx = OnnxForecaster::load(model)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let forecasters: Vec<(String, Box<dyn Forecaster>)> =
        vec![(onnx.name(), Box::new(onnx)), ("rolling-quantiles-120min".into(), Box::new(RollingQuantiles { window: 24 }))];
    println!("forecast inference: {} VMs x 12 horizons x 3 quantiles per cycle, one thread, release build", series.len());
    println!("  model load + optimise   {load_ms:.1} ms ({})", model.display());
    for (name, f) in &forecasters {
        let mut times = Vec::with_capacity(cycles);
        for c in 0..cycles {
            // A different point of the month each cycle, as an agent moving through time.
            let t = presage_forecast::WEEK + 100 + c % 3000;
            let ctxs: Vec<SeriesContext<'_>> =
                series.iter().map(|s| SeriesContext { history: &s[..t], next_time_s: t as u64 * 300 }).collect();
            let start = Instant::now();
            let out = f.forecast_batch(&ctxs);
            times.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(out.iter().all(Option::is_some));
        }
        let (mean, p99) = mean_and_p99(times);
        println!("  {name:<26} mean {mean:.3} ms, p99 {p99:.3} ms per cycle (features + inference + quantiles)");
    }
    // What the agent runs: the model, mixing with the 3-hour rolling quantiles, calibration.
    let mut fleet: FleetForecaster<usize> = FleetForecaster::load(Some(model));
    let mut times = Vec::with_capacity(cycles);
    for c in 0..cycles {
        let t = presage_forecast::WEEK + 100 + c;
        let reqs: Vec<SeriesRequest<'_, usize>> = series
            .iter()
            .enumerate()
            .map(|(k, s)| SeriesRequest {
                key: k,
                ctx: SeriesContext { history: &s[..t], next_time_s: t as u64 * 300 },
                first_step: t as u64,
            })
            .collect();
        let start = Instant::now();
        for (k, s) in series.iter().enumerate() {
            fleet.observe(&k, t as u64 - 1, s[t - 1]);
        }
        let out = fleet.forecast(&reqs);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(out.iter().all(Option::is_some));
    }
    let (mean, p99) = mean_and_p99(times);
    println!("  {:<26} mean {mean:.3} ms, p99 {p99:.3} ms per cycle (as the agent: + mixing + calibration)", "published");

    // The agent's whole forecaster: CPU and memory, one 5-minute step completing every cycle
    // (the worst case: an agent sampling every 10 s completes one every 30 cycles) after a week
    // of warm-up; without a store, then writing each completed step to sled as the agent does.
    let vms: Vec<&presage_traces::VmTrace> =
        set.vms.iter().filter(|v| v.len() > 6000 && !v.memory_kb_series().is_empty()).take(vms).collect();
    let memory_model = model.with_file_name(format!("memory-quantiles-{}.onnx", presage_forecast::features::VERSION));
    let samples = |t: usize| -> Vec<presage_protocol::pb::VmSample> {
        vms.iter()
            .map(|v| {
                let u = v.usage(t as u64);
                presage_protocol::pb::VmSample {
                    vm_id: v.name.clone(),
                    cpu_utilisation: u.cpu_utilisation,
                    memory_bytes: v.spec.memory_bytes,
                    memory_used_bytes: u.memory_used_bytes.unwrap_or(0),
                    ..Default::default()
                }
            })
            .collect()
    };
    for with_store in [false, true] {
        let store_dir = tempfile::tempdir()?;
        let mut agent = presage_agent::forecaster::DemandForecaster::new(Some(model), Some(&memory_model));
        if with_store {
            agent = agent.with_store(&presage_agent::store::SledStore::open(store_dir.path())?)?;
        }
        let warm = presage_forecast::WEEK + 100;
        for t in 0..warm {
            agent.update(t as u64, &mut samples(t));
        }
        let (mut times, mut with_memory) = (Vec::with_capacity(cycles), 0);
        for c in 0..cycles {
            let mut vms = samples(warm + c);
            let start = Instant::now();
            agent.update((warm + c) as u64, &mut vms);
            times.push(start.elapsed().as_secs_f64() * 1e3);
            assert!(vms.iter().all(|v| v.forecast.is_some()));
            // A sample whose memory reads 0 (a gap in the trace) gets no memory forecast then.
            with_memory += vms.iter().filter(|v| v.forecast.as_ref().is_some_and(|f| f.memory.is_some())).count();
        }
        let (mean, p99) = mean_and_p99(times);
        println!(
            "  {:<26} mean {mean:.3} ms, p99 {p99:.3} ms per cycle ({} VMs, CPU + memory, {}; {:.1} % with a memory forecast)",
            "agent forecaster",
            vms.len(),
            if with_store { "each step written to sled" } else { "no store" },
            100.0 * with_memory as f64 / (cycles * vms.len()) as f64
        );
    }
    println!("  peak RSS (VmHWM)         {:.1} MiB", peak_rss_mib());
    Ok(())
}

fn bench_decide(n_hosts: usize, n_vms: usize, placements: usize) -> anyhow::Result<()> {
    use presage_decide::policy::power::IBM_X3550_M3_X5675;
    use presage_decide::policy::presage::{PresageConfig, PresagePolicy};
    use presage_decide::policy::{ConsolidationPolicy, FleetView};
    use presage_decide::policy::{HostView, VmView};
    use presage_forecast::{Forecaster, SeriesContext, baselines::RollingQuantiles};

    // Forecasts from real series: each PlanetLab VM of one day, forecast at mid-day by the
    // agents' fallback forecaster, handed out to the fleet's VMs in turn.
    let day = shared_data().join("planetlab/20110303");
    let set = presage_traces::load_dir(&day, None, presage_traces::Selection { index: 0, count: 1, limit: usize::MAX }, None)?;
    let rq = RollingQuantiles { window: 24 };
    let forecasts: Vec<_> =
        set.vms.iter().filter_map(|v| rq.forecast(&SeriesContext { history: &v.cpu_series()[..144], next_time_s: 144 * 300 })).collect();
    let mut hosts: Vec<_> = (0..n_hosts).map(|_| HostView::new(12, 3067.0, 65_536.0, 625.0, IBM_X3550_M3_X5675)).collect();
    let mut vms = Vec::with_capacity(n_vms + 1);
    for i in 0..n_vms {
        let f = forecasts[i % forecasts.len()];
        let mut v = VmView::unplaced(1 + (i % 4) as u32, 3067.0, 2048.0 * (1 + i % 4) as f64);
        // Every 8th VM crowds onto the first 5 % of hosts: those are overloaded.
        let h = if i % 8 == 0 { (i / 8) % (n_hosts / 20).max(1) } else { i % n_hosts };
        v.host = Some(h);
        v.forecast = Some(f);
        v.demand_mips = f.at(1)[1] as f64 * v.capacity_mips();
        v.memory_request_mb = v.ram_mb;
        hosts[h].vms.push(i);
        hosts[h].observed_mips += v.demand_mips;
        vms.push(v);
    }
    vms.push(VmView::unplaced(2, 3067.0, 4096.0));
    let new_vm = vms.len() - 1;
    let fleet = FleetView { now_s: 43_200.0, hosts: &hosts, vms: &vms };
    println!(
        "presage decisions: {n_hosts} hosts (12 x 3067 MHz, 64 GiB), {n_vms} VMs (1-4 vCPUs, forecasts from PlanetLab series), one thread, release build"
    );

    // The learned scorer (the committed model, run by tract) re-ranks the ensemble's shortlist.
    let model_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/placement-shortfall-v1.onnx");
    let model: std::sync::Arc<dyn presage_decide::policy::learned::ShortfallModel> =
        std::sync::Arc::new(presage_forecast::shortfall::OnnxShortfall::load(&model_path)?);
    {
        // The model alone: one shortlist's batch, as a ranking runs it.
        let rows = [[0.1f32; presage_decide::policy::learned::N_FEATURES]; 8];
        let mut times: Vec<f64> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                model.predict(&rows).expect("the model runs");
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(|a, b| a.total_cmp(b));
        println!("  learned model alone, one batch of 8 rows  p50 {:.0} us, p99 {:.0} us (tract, 2000 runs)", times[1000], times[1980]);
    }
    let variants =
        |cfg: PresageConfig| [("", PresagePolicy::new(cfg.clone())), (" + learned", PresagePolicy::new(cfg).with_learned(model.clone()))];
    for (label, policy) in variants(PresageConfig::default()) {
        let t = Instant::now();
        let standing = policy.standing(&fleet);
        println!("  standing state (once per plan){label:10}  {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        let mut times = Vec::with_capacity(placements);
        for _ in 0..placements {
            let t = Instant::now();
            let r = policy.rank_new_with(&fleet, &standing, new_vm, 2);
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(!r.ranked.is_empty(), "no host could take the VM");
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
        println!(
            "  one placement among {n_hosts} hosts{label:10}  p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({placements} runs, with explanation of the best two)",
            pct(50),
            pct(99),
            times[times.len() - 1]
        );
        if let Some(c) = policy.learned_counts() {
            println!("    learned scorer: {} candidates judged, {:.1} % fell back to the heuristic", c.judged, 100.0 * c.fallback_share());
        }
    }
    for (label, cfg) in [
        ("full rebalance pass (defaults)", PresageConfig::default()),
        (
            "full rebalance pass (no move cap)",
            PresageConfig { max_moves_per_pass: usize::MAX, failed_empty_attempts_per_pass: usize::MAX, ..Default::default() },
        ),
    ] {
        for (variant, mut policy) in variants(cfg) {
            let t = Instant::now();
            let moves = policy.optimise(&fleet);
            let pass = t.elapsed().as_secs_f64();
            let overload = moves.iter().filter(|m| matches!(m.reason, presage_decide::policy::MoveReason::Overload(_))).count();
            println!(
                "  {:45}  {pass:.2} s: {} moves ({overload} relieving overload, {} emptying hosts)",
                format!("{label}{variant}"),
                moves.len(),
                moves.len() - overload
            );
        }
    }
    println!("  peak RSS (VmHWM)                    {:.1} MiB", peak_rss_mib());
    Ok(())
}

async fn bench_drain(vms: usize, destinations: usize, mb_per_s: f64) -> anyhow::Result<()> {
    use presage_agent::config::HypervisorConfig;
    use presage_coordinator::config::PolicyConfig;
    use presage_protocol::pb::{ListPlansRequest, ListVmsRequest, SetDrainRequest};
    // One folder for every host (a VM's trace must be readable where it lands): the source
    // replays the first `vms` files, destination j the file after them.
    let busy: Vec<u32> = vec![30; 288];
    let names: Vec<String> = (0..vms).map(|i| format!("vm-{i:03}")).chain((0..destinations).map(|j| format!("w-{j}"))).collect();
    let files: Vec<(&str, &[u32])> = names.iter().map(|n| (n.as_str(), busy.as_slice())).collect();
    let trace = presage_tests::synthetic_trace(&files);
    let pki = Pki::new();
    let data = tempfile::tempdir()?;
    let policy = PolicyConfig { name: "presage".into(), interval: Duration::from_secs(1), ..Default::default() };
    let mut cfg = RunningCoordinator::config(&pki, 0, Duration::from_secs(30), policy);
    cfg.data_dir = Some(data.path().join("coordinator"));
    let limits = cfg.executor;
    let coord = RunningCoordinator::start_config(cfg).await;
    let mut agents = Vec::new();
    let total = vms + destinations;
    for h in 0..=destinations {
        let host = if h == 0 { "source".to_string() } else { format!("dest-{h}") };
        let shard = if h == 0 { (0, 1) } else { (vms + h - 1, total) };
        let mut a = presage_tests::simulated_agent(
            &pki,
            &host,
            &coord.url,
            &data.path().join(&host),
            trace.path(),
            shard,
            if h == 0 { vms } else { 0 },
        );
        a.sample_interval = Duration::from_millis(500);
        a.forecast.cpu_model = None;
        if let HypervisorConfig::Simulated(s) = &mut a.hypervisor {
            s.time_compression = 1.0;
            s.migration_mb_per_s = Some(mb_per_s);
            if h > 0 {
                s.cpu_cores = Some(64);
                s.memory_mb = Some(256 << 10);
            }
        }
        agents.push(presage_tests::RunningAgent::start(a));
    }
    let mut op = client(&coord.url, &pki.issue(Role::Operator, "bench")).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let memory: std::collections::HashMap<String, u64> = loop {
        let all = op.list_vms(ListVmsRequest { host_id: String::new(), ..Default::default() }).await?.into_inner().vms;
        if all.len() == total {
            break all.into_iter().filter_map(|v| v.sample.map(|s| (s.vm_id, s.memory_bytes))).collect();
        }
        if Instant::now() > deadline {
            bail!("only {} of {total} VMs reported within a minute", all.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Let the policy see each VM a few times first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let started = Instant::now();
    op.set_drain(SetDrainRequest { host_id: "source".into(), drain: true }).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut most_in_flight = 0;
    let plans = loop {
        let plans = op.list_plans(ListPlansRequest { plan_id: 0, limit: 100 }).await?.into_inner().plans;
        let drains: Vec<_> = plans.into_iter().filter(|p| p.origin == "drain").collect();
        let in_flight = drains
            .iter()
            .flat_map(|p| &p.moves)
            .filter(|m| {
                !matches!(m.step.as_str(), "pending" | "done" | "refused" | "skipped" | "failed" | "aborted" | "rolled_back" | "cancelled")
            })
            .count();
        most_in_flight = most_in_flight.max(in_flight);
        let moved: usize = drains.iter().flat_map(|p| &p.moves).filter(|m| m.step == "done").count();
        if moved >= vms && drains.iter().all(|p| p.status != "running") {
            break drains;
        }
        if Instant::now() > deadline {
            bail!("the drain did not finish in 30 minutes ({moved} of {vms} moved)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drained_in = started.elapsed();
    // The source's next report shows it empty.
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = op.list_vms(ListVmsRequest { host_id: "source".into(), ..Default::default() }).await?.into_inner().vms.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let moves: Vec<_> = plans.iter().flat_map(|p| p.moves.clone()).collect();
    let mut durations: Vec<f64> = moves.iter().filter(|m| m.step == "done").map(|m| m.duration_ms as f64 / 1000.0).collect();
    let mut overheads: Vec<f64> = moves
        .iter()
        .filter(|m| m.step == "done")
        .map(|m| {
            let copy = memory.get(&m.vm_id).copied().unwrap_or(0) as f64 / 1e6 / mb_per_s;
            m.duration_ms as f64 / 1000.0 - copy.min(60.0)
        })
        .collect();
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() { 0.0 } else { v[((v.len() - 1) as f64 * q).round() as usize] }
    };
    println!(
        "drain of one host of {vms} VMs onto {destinations} hosts, limits {}/{}/{} (out/in/cluster), copies at {mb_per_s} MB/s",
        limits.per_host_out, limits.per_host_in, limits.cluster
    );
    println!("  plans                       {}", plans.len());
    println!("  moves done / not            {} / {}", durations.len(), moves.len() - durations.len());
    println!("  VMs left on the source      {left}");
    println!("  time to drain               {:.2} s", drained_in.as_secs_f64());
    println!("  most moves seen in flight   {most_in_flight} (sampled every 50 ms)");
    let total_copy: f64 = moves.iter().map(|m| memory.get(&m.vm_id).copied().unwrap_or(0) as f64 / 1e6 / mb_per_s).sum();
    println!("  copy time of all VMs        {total_copy:.2} s (memory / bandwidth, summed)");
    println!(
        "  move duration min/p50/p90/max {:.3} / {:.3} / {:.3} / {:.3} s",
        pct(&mut durations, 0.0),
        pct(&mut durations, 0.5),
        pct(&mut durations, 0.9),
        pct(&mut durations, 1.0)
    );
    println!(
        "  executor overhead per move  p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms (duration minus the simulated copy)",
        pct(&mut overheads, 0.5) * 1e3,
        pct(&mut overheads, 0.9) * 1e3,
        pct(&mut overheads, 1.0) * 1e3
    );
    for a in agents {
        a.stop().await;
    }
    coord.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Cmd::Decide { hosts, vms, placements } = &args.cmd {
        return bench_decide(*hosts, *vms, *placements);
    }
    if let Cmd::Forecast { vms, cycles, model } = &args.cmd {
        return bench_forecast(*vms, *cycles, model);
    }
    if let Cmd::Simulate { days } = &args.cmd {
        return bench_simulate(days);
    }
    if let Cmd::Sizing { hosts, vms, leases } = &args.cmd {
        return bench_sizing(*hosts, *vms, *leases);
    }
    if let Cmd::Knobs { rounds } = &args.cmd {
        return bench_knobs(*rounds);
    }
    if let Cmd::Guest { vms, seconds, timings_per_s } = &args.cmd {
        return bench_guest(*vms, *seconds, *timings_per_s);
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        match args.cmd {
            Cmd::Agent { vms, interval, duration, cycles } => bench_agent(vms, interval, duration, cycles).await,
            Cmd::Ingest { agents, vms, duration, every, etcd, policy_every } => {
                bench_ingest(agents, vms, duration, every, etcd, policy_every).await
            }
            Cmd::Store { writes, moves } => bench_store(writes, &moves).await,
            Cmd::Storm { agents, vms, every, restarts } => {
                let bin = sibling("presage-coordinator")?;
                let dir = bin.parent().context("the binaries' folder")?;
                let report =
                    presage_tests::reconnect_storm::reconnect_storm(dir, agents, vms, every, restarts, Duration::from_secs(300)).await?;
                print!("{report}");
                Ok(())
            }
            Cmd::Metrics { hosts, vms } => bench_metrics(hosts, vms).await,
            Cmd::Web { hosts, vms, runs } => bench_web(hosts, vms, runs).await,
            Cmd::Drain { vms, destinations, mb_per_s } => bench_drain(vms, destinations, mb_per_s).await,
            Cmd::Ecosystem { vms, repair_vms } => bench_ecosystem(vms, repair_vms).await,
            Cmd::Simulate { .. }
            | Cmd::Forecast { .. }
            | Cmd::Decide { .. }
            | Cmd::Guest { .. }
            | Cmd::Sizing { .. }
            | Cmd::Knobs { .. } => {
                unreachable!("handled above")
            }
        }
    })
}

fn bench_knobs(rounds: usize) -> anyhow::Result<()> {
    use presage_tests::knob_timing::{self, median_max};
    if let Some(why) = presage_tests::missing_libvirt_requirement(&["cpio", "dpkg-deb", "apt-get"]) {
        bail!("the knob benchmark needs a real libvirt host: {why}");
    }
    let report = knob_timing::run(rounds)?;
    println!("decision to effect per knob on a real guest (TCG, one vCPU pinned to a core; executor = set + read back + verify)");
    println!("  {:<11} {:<28} {:>16} {:>22} {:>8}", "knob", "change", "executor p50/max", "effect p50/max", "unmet");
    let mut seen: Vec<(&str, String)> = Vec::new();
    for t in &report.timings {
        if !seen.contains(&(t.knob, t.change.clone())) {
            seen.push((t.knob, t.change.clone()));
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (knob, change) in seen {
        let of: Vec<_> = report.timings.iter().filter(|t| t.knob == knob && t.change == change).collect();
        let (ep, em) = median_max(of.iter().map(|t| t.executor).collect()).unwrap_or_default();
        let effects: Vec<Duration> = of.iter().filter_map(|t| t.effect).collect();
        let effect = match median_max(effects.clone()) {
            Some((p, m)) => format!("{:.0} / {:.0} ms", ms(p), ms(m)),
            None => "not measured".into(),
        };
        let unmet = if knob == "interface" { "-".to_string() } else { format!("{}/{}", of.len() - effects.len(), of.len()) };
        println!("  {knob:<11} {change:<28} {:>16} {effect:>22} {unmet:>8}", format!("{:.0} / {:.0} ms", ms(ep), ms(em)));
    }
    for r in &report.refusals {
        println!("  refused: {} {}: {}", r.knob, r.change, r.error);
    }
    println!(
        "  (rates over {} ms windows for the CPU, {} ms for the disk: no rate-based figure is below its window)",
        knob_timing::CPU_WINDOW.as_millis(),
        knob_timing::DISK_WINDOW.as_millis()
    );
    Ok(())
}

fn bench_sizing(n_hosts: usize, n_vms: usize, n_leases: usize) -> anyhow::Result<()> {
    use presage_agent::sizing::{SizingDesk, VmView};
    use presage_decide::demand::Forecast;
    use presage_decide::sizing::Allocation;
    use presage_decide::sizing::lease::{Lease, LeaseBook, LeaseResource};
    use presage_decide::sizing::pass::{SizingHost, SizingVm, plan_host};
    use presage_decide::sizing::resize::SizingMemory;
    use presage_decide::sizing::rules::SizingRules;
    // 1. The coordinator's sizing pass over the cluster (resizes, then the broker): each VM 4
    // vCPUs, a flat forecast between 2 % and 60 %; the second of two passes is timed (shrink
    // votes accumulated as in steady state).
    let mut rng = fastrand::Rng::with_seed(7);
    let rules = SizingRules::default();
    let per_host = n_vms.div_ceil(n_hosts.max(1));
    let forecasts: Vec<Forecast> = (0..n_vms)
        .map(|_| {
            let p90 = 0.02 + 0.58 * rng.f32();
            Forecast::flat([p90 * 0.3, p90 * 0.6, p90])
        })
        .collect();
    let names: Vec<String> = (0..n_vms).map(|i| format!("vm-{i}")).collect();
    let books: Vec<LeaseBook> = vec![LeaseBook::default(); n_hosts];
    let mut memory: Vec<Vec<SizingMemory>> = (0..n_hosts).map(|_| vec![SizingMemory::default(); per_host]).collect();
    let (mut grants, mut unmet, mut resizes) = (0usize, 0usize, 0usize);
    let mut started = std::time::Instant::now();
    for pass in 0..2 {
        if pass == 1 {
            (grants, unmet, resizes) = (0, 0, 0);
            started = std::time::Instant::now();
        }
        for (h, book) in books.iter().enumerate() {
            let range = h * per_host..((h + 1) * per_host).min(n_vms);
            let vms: Vec<SizingVm<'_>> = range
                .clone()
                .map(|i| SizingVm {
                    vm_id: &names[i],
                    rules: &rules,
                    limits: Allocation::new(4.0, 8192.0),
                    allocated: Allocation::new(1.0 + (i % 3) as f64, 4096.0),
                    cpu_forecast: Some(&forecasts[i]),
                    memory_forecast: None,
                    used: Allocation::new(0.5, 2048.0),
                    recent_peak: Allocation::new(1.0, 2048.0),
                    cpu_lend_peak: 1.0,
                    resident_mib: 0.0,
                    oom: false,
                })
                .collect();
            // Hosts as full as their allocations: growth waits for room, so the broker lends.
            let full = vms.iter().map(|v| v.allocated.cpu_cores).sum::<f64>();
            let host =
                SizingHost { host_id: "h", capacity: Allocation::new(full, 512.0 * 1024.0), memory_reserve_mib: 0.0, vms, leases: book };
            let plan = plan_host(&host, &mut memory[h][..range.len()], 0, false);
            grants += plan.grants.len();
            unmet += plan.unmet.len();
            resizes += plan.resizes.len();
        }
    }
    let broker_s = started.elapsed().as_secs_f64();
    // 2. An agent's sizing cycle with `n_leases` leases held (steady state: nothing to apply).
    let dir = tempfile::tempdir()?;
    let traces = dir.path().join("traces");
    std::fs::create_dir_all(&traces)?;
    let n_vm_agent = (2 * n_leases).max(2);
    for i in 0..n_vm_agent {
        std::fs::write(traces.join(format!("vm-{i}")), "50\n".repeat(50))?;
    }
    let hv = SimulatedHypervisor::load(&SimulatedConfig::replaying(traces))?;
    let store: Arc<dyn presage_agent::store::KvStore> = Arc::new(SledStore::open(&dir.path().join("store"))?);
    let mut desk = SizingDesk::open(store, Allocation::new(n_vm_agent as f64, 1e7), 0.0)?;
    let views: Vec<VmView> = (0..n_vm_agent)
        .map(|i| VmView {
            vm_id: format!("vm-{i}"),
            allocated: Allocation::new(if i % 2 == 0 { 1.0 } else { 0.5 }, 1024.0),
            limits: Allocation::new(1.0, 1740.0),
            cpu_need: Some(0.3),
            disks: Vec::new(),
            interfaces: Vec::new(),
        })
        .collect();
    for k in 0..n_leases {
        let lease = Lease {
            id: format!("l{k}"),
            resource: LeaseResource::Cpu,
            amount: 0.25,
            lender: Some(format!("vm-{}", 2 * k)),
            borrower: format!("vm-{}", 2 * k + 1),
            granted_at_ms: 0,
            deadline_ms: u64::MAX / 2,
            reason: "bench".into(),
        };
        desk.grant(lease, &views, Allocation::new(4.0, 0.0), 0, &hv)?;
    }
    let cycles = 200;
    let started = std::time::Instant::now();
    for c in 0..cycles {
        desk.enforce(&views, 1000 + c, &hv);
    }
    let cycle_us = started.elapsed().as_secs_f64() * 1e6 / cycles as f64;
    println!(
        "{}",
        serde_json::json!({
            "broker_hosts": n_hosts, "broker_vms": n_vms, "sizing_pass_s": broker_s, "resizes": resizes, "grants": grants, "unmet": unmet,
            "agent_leases": desk.leases().len(), "agent_vms": n_vm_agent, "agent_sizing_cycle_us": cycle_us,
        })
    );
    Ok(())
}

fn bench_guest(n_vms: usize, seconds: u64, timings_per_s: u64) -> anyhow::Result<()> {
    use presage_agent::anomalies::{AnomalyWatch, DEFAULT_THRESHOLD};
    use presage_protocol::guest::{GuestSession, HostSession, new_key};
    use presage_protocol::guest_pb::{AppFigures, GuestReport};
    use presage_protocol::pb::{GuestApps, QuantileForecast, VmForecast};
    use std::io::{Read, Write};
    println!("guest channel and anomaly benchmark, release build, one thread");

    // 1. Anomaly scoring, one agent cycle: every VM's CPU, memory and one application's p99.
    let mut watch = AnomalyWatch::new(Default::default(), DEFAULT_THRESHOLD);
    let mut times = Vec::new();
    let mut seed = 1u64;
    let mut noise = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    for cycle in 0..2000u64 {
        let vms = (0..n_vms)
            .map(|i| VmSample {
                vm_id: format!("vm-{i}"),
                cpu_utilisation: 0.3 + 0.1 * noise(),
                memory_bytes: 1 << 30,
                memory_used_bytes: (1u64 << 29) + (noise() * 1e8) as u64,
                forecast: Some(VmForecast {
                    first_step: cycle,
                    cpu_p10: vec![0.25; 12],
                    cpu_p50: vec![0.35; 12],
                    cpu_p90: vec![0.45; 12],
                    memory: Some(QuantileForecast { p10: vec![0.45; 12], p50: vec![0.5; 12], p90: vec![0.55; 12], ..Default::default() }),
                    ..Default::default()
                }),
                guest: Some(GuestApps {
                    received_ms: cycle + 1,
                    apps: vec![AppFigures { name: "web".into(), latency_p99_ms: 10.0 + noise(), ..Default::default() }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut report = Report { host: Some(HostUsage { cpu_utilisation: 0.4, ..Default::default() }), vms, ..Default::default() };
        let t = Instant::now();
        watch.observe(cycle, cycle * 1000, &mut report);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (mean, p99) = mean_and_p99(times);
    println!("  anomaly scoring per agent cycle, {n_vms} VMs x 3 series + the host: mean {mean:.3} ms, p99 {p99:.3} ms");

    // 2. The host's cost per frame: split, rate limit, MAC check, decode, validate.
    let mut host = HostSession::new(new_key(), u32::MAX);
    let mut guest = GuestSession::from_hello(&host.hello()[2..])?;
    let report = GuestReport {
        interval_s: 5.0,
        apps: (0..4)
            .map(|i| AppFigures {
                name: format!("app-{i}"),
                latency_p50_ms: 1.0,
                latency_p95_ms: 2.0,
                latency_p99_ms: 3.0,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let frames: Vec<Vec<u8>> = (0..100_000).map(|_| guest.seal(&report)).collect::<Result<_, _>>()?;
    let t = Instant::now();
    let mut accepted = 0;
    for (i, f) in frames.iter().enumerate() {
        accepted += host.receive(f, i as u64).len();
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
    println!("  host cost per guest frame (4 applications, {} bytes): {per:.2} us ({accepted} accepted)", frames[0].len());

    // 3. The presage-guest process under a statsd load, against a host that reads its frames.
    let bin = presage_tests::built_binaries(&["presage-guest"]).join("presage-guest");
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("port.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock)?;
    let statsd = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let statsd_addr = statsd.local_addr()?;
    drop(statsd);
    let cfg = dir.path().join("guest.toml");
    std::fs::write(
        &cfg,
        format!("port = \"unix:{}\"\ninterval = \"1s\"\n[[app]]\nname = \"web\"\nstatsd = \"{statsd_addr}\"\n", sock.display()),
    )?;
    let mut child = std::process::Command::new(&bin).arg("--config").arg(&cfg).spawn()?;
    let (mut conn, _) = listener.accept()?;
    let session = HostSession::new(new_key(), 10);
    conn.write_all(&session.hello())?;
    let reader = std::thread::spawn(move || {
        let mut session = session;
        let mut buf = [0u8; 4096];
        let mut reports = 0;
        let began = Instant::now();
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            reports += session.receive(&buf[..n], began.elapsed().as_millis() as u64).len();
        }
        reports
    });
    let app = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let start = Instant::now();
    let (cpu0, _, _) = proc_cost(child.id() as i32)?;
    let batch = (timings_per_s / 10).max(1);
    while start.elapsed() < Duration::from_secs(seconds) {
        let lines: String = (0..batch).map(|i| format!("web.latency:{}|ms\n", i % 200)).collect();
        app.send_to(lines.as_bytes(), statsd_addr)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (cpu1, rss, hwm) = proc_cost(child.id() as i32)?;
    let wall = start.elapsed().as_secs_f64();
    child.kill()?;
    let _ = child.wait();
    let reports = reader.join().unwrap_or(0);
    println!(
        "  presage-guest over {wall:.0} s at {timings_per_s} statsd timings/s: CPU {:.3} % of one core, RSS {:.1} MiB (peak {:.1} MiB), {reports} reports read by the host",
        100.0 * (cpu1 - cpu0) / wall,
        rss as f64 / 1048576.0,
        hwm as f64 / 1048576.0
    );
    Ok(())
}
