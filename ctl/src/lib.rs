//! `presagectl`, the operator CLI: cluster status, hosts and VMs (as aligned tables or JSON),
//! a round trip through an agent's command channel, certificate issuance, and the one-command
//! local demo cluster.

pub mod anomaly_eval;
pub mod cli_docs;
pub mod client;
pub mod cluster_view;
pub mod config_view;
pub mod demo;
pub mod dependencies;
pub mod forecast_eval;
pub mod frontier;
pub mod optimise;
pub mod plan;
pub mod rollout_view;
pub mod simulate;
pub mod simulate_sizing;
pub mod sizing_view;
pub mod terminal;
pub mod view;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use presage_protocol::pb::{
    self, ExplainRequest, GetPlanRequest, ListHostsRequest, ListVmsRequest, PingHostRequest, PlaceRequest, ReserveOnHostRequest,
    StatusRequest,
};

use self::plan::{explain_json, place_json, plan_json};
use presage_protocol::pki::ClusterCa;
use presage_protocol::tls::{Role, TlsFiles};

use self::client::{Target, rpc_error};
use self::view::{HostView, OutputFormat, StatusView, VmView};

#[derive(Parser)]
#[command(name = "presagectl", version, about = "Operate a presage cluster")]
pub struct Cli {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Colour in tables: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long = "color", global = true, value_enum, default_value = "auto")]
    pub colour: terminal::ColourChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct ConnArgs {
    /// Coordinator URL; several separated by commas (the leader among them answers: standbys
    /// do not listen).
    #[arg(long, global = true, env = "PRESAGE_COORDINATOR", default_value = "https://127.0.0.1:7400")]
    pub coordinator: String,
    /// Directory holding ca.pem, operator.pem and operator.key (default ~/.config/presage/tls).
    #[arg(long, global = true, env = "PRESAGE_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Name the coordinator's certificate must carry.
    #[arg(long, global = true, default_value = presage_protocol::COORDINATOR_TLS_NAME)]
    pub server_name: String,
}

impl ConnArgs {
    pub fn target(&self) -> Target {
        let dir = self.tls_dir.clone().unwrap_or_else(client::default_tls_dir);
        Target { url: self.coordinator.clone(), server_name: self.server_name.clone(), tls: Target::operator_files(&dir) }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Cluster summary.
    Status {
        /// Redraw it every INTERVAL (default 2s) until Ctrl-C.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
    },
    /// Hosts with capacity, usage and liveness.
    Hosts,
    /// VMs with their latest samples.
    Vms {
        /// Only the VMs of this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// A VM's recent samples and its forecast (p50 with the p10–p90 interval).
    Forecast {
        /// VM id or name.
        vm: String,
        /// The host, when the name is not unique.
        #[arg(long)]
        host: Option<String>,
        /// What to chart (JSON output has both).
        #[arg(long, value_enum, default_value = "cpu")]
        resource: view::Resource,
    },
    /// The last advisory pass's plan: ordered moves, each with its reason, benefit and cost, and
    /// the scores of the chosen host and the runner-up.
    Plan,
    /// The executor's journal: recent plans (or one, with `--id`), each move's step, outcome,
    /// duration and, while it copies, its progress.
    Plans {
        /// Show this plan only.
        #[arg(long)]
        id: Option<u64>,
        /// How many recent plans.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Redraw them every INTERVAL (default 2s) until Ctrl-C: moves' steps and migration
        /// progress as they go.
        #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s", value_parser = humantime::parse_duration)]
        watch: Option<std::time::Duration>,
    },
    /// Reverses a finished plan's done moves, last first, one at a time, as a new plan.
    Rollback {
        /// The plan's id (`presagectl plans`).
        plan: u64,
        /// Wait until the rollback plan has finished and show it.
        #[arg(long)]
        wait: bool,
    },
    /// Moves one VM to a host now, through the executor (pre-checks, reservation, live
    /// migration, post-checks), as a one-move plan.
    Move {
        /// VM id.
        vm: String,
        /// Destination host.
        host: String,
        /// Wait until the move has finished and show it.
        #[arg(long)]
        wait: bool,
    },
    /// The anomalies the agents' detectors reported (every VM's and host's series), newest
    /// first.
    Anomalies {
        /// Only this VM's.
        #[arg(long)]
        vm: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Why a VM is where it is, or why the plan moves it: its predicted demand and every host
    /// ranked for it now, with each scorer's part.
    Explain {
        /// VM id.
        vm: String,
        /// How many hosts to rank.
        #[arg(long, default_value_t = 5)]
        top: u32,
    },
    /// Dry run: where a new VM would go and why (the ranking with explanations). Nothing is
    /// reserved or changed.
    Place {
        /// vCPUs.
        #[arg(long)]
        cpu: u32,
        /// Memory: MiB, or with a unit (4GiB).
        #[arg(long, value_parser = plan::parse_memory_mib)]
        mem: f64,
        /// Speed of one vCPU in MHz (default: the fastest core in the cluster).
        #[arg(long)]
        mhz: Option<f64>,
        /// How many hosts to rank.
        #[arg(long, default_value_t = 5)]
        top: u32,
    },
    /// Ask a host's agent to hold a reservation (pre-allocation); the agent admits or refuses it
    /// by its own rule and answers with what it holds.
    Reserve {
        host: String,
        /// Reservation id (unique on the host).
        #[arg(long)]
        id: String,
        /// The VM it is for.
        #[arg(long)]
        vm: String,
        /// CPU to hold, MHz.
        #[arg(long, default_value_t = 0.0)]
        cpu_mhz: f64,
        /// Memory to hold: MiB, or with a unit (4GiB).
        #[arg(long, value_parser = plan::parse_memory_mib, default_value = "0")]
        mem: f64,
        /// How long it holds.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A soft reservation (expected growth), which never blocks a hard one.
        #[arg(long)]
        soft: bool,
    },
    /// Give a reservation up.
    Release { host: String, id: String },
    /// Resize a VM on its host: its CPU quota (cores) and memory (balloon), admitted by the
    /// host's agent, and its disk and network limits; `--dry-run` checks only.
    Resize {
        /// VM id.
        vm: String,
        /// CPU, cores (a CFS quota; fractions allowed).
        #[arg(long)]
        cpus: f64,
        /// Memory: MiB, or with a unit (4GiB).
        #[arg(long, value_parser = plan::parse_memory_mib)]
        mem: f64,
        /// Disk limit over all of its disks, reads and writes together (100MiB/s, 200MB/s;
        /// `unlimited` removes it). Absent: left as it is.
        #[arg(long, value_name = "RATE", value_parser = plan::parse_rate_bytes_per_s)]
        disk: Option<f64>,
        /// Network limit over all of its interfaces, each direction (1Gbit/s, 50MiB/s;
        /// `unlimited` removes it). Absent: left as it is.
        #[arg(long, value_name = "RATE", value_parser = plan::parse_rate_bytes_per_s)]
        net: Option<f64>,
        #[arg(long)]
        dry_run: bool,
    },
    /// A VM's configuration versions: `config history VM`, `config diff VM A B`, `config
    /// rollback VM VERSION`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Staged rollouts of a plan of resizes: a canary first, watched against the plan's VMs
    /// still waiting, then the rest, or everything put back.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Every host's (or one host's) borrowing leases and resizes, as the agents hold them.
    Leases {
        #[arg(long)]
        host: Option<String>,
    },
    /// Grant or revoke a borrowing lease.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// The coordinators and the store: `cluster status` (who leads at which epoch, who stands
    /// by, each etcd member's health).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Maintenance: `host drain H` marks H as taking no VMs and makes the plan move every VM off
    /// it (automatic mode applies it); `host undrain H` clears the mark.
    #[command(subcommand)]
    Host(HostCommand),
    /// Dependency declarations: register them (admin) or show one VM's.
    #[command(subcommand)]
    Dependencies(DependenciesCommand),
    /// The dependency graph: each VM's score and status, each edge's satisfaction
    /// (`--output dot` for Graphviz).
    Ecosystem {
        /// Only this application's VMs.
        #[arg(long)]
        app: Option<String>,
        /// Only this VM (and its edges).
        #[arg(long)]
        vm: Option<String>,
    },
    /// Send a ping command through a host's agent stream and wait for its answer.
    Ping {
        host: String,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Ask a host's hypervisor, through its agent, where a VM is now (present, running,
    /// migrating away, or held as an incoming migration's instance).
    Inspect {
        /// The host to ask.
        host: String,
        /// VM id.
        vm: String,
    },
    /// Create or extend the cluster's certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Run a local cluster (a coordinator and N agents with simulated hypervisors replaying
    /// real traces) and watch it.
    Demo(demo::DemoArgs),
    /// Replay trace folders through placement policies and report energy, SLA and migrations
    /// (CloudSim's PlanetLab experiment, or Bitbrains with CPU and memory).
    Simulate(Box<simulate::SimulateArgs>),
    /// Walk forward through a trace folder scoring every forecaster and baseline per horizon
    /// (pinball loss, MAE of the median, p10–p90 coverage).
    ForecastEval(forecast_eval::ForecastEvalArgs),
    /// The genetic optimiser over placement and sizing, one-off: `--binpacking FILE|DIR` packs
    /// BPPLIB instances and reports the bins against the L2 bound and FFD/BFD.
    Optimise(optimise::OptimiseArgs),
    /// Run the agents' anomaly detector over a corpus in the Numenta Anomaly Benchmark's layout
    /// (or score another detector's results) and print the NAB scores.
    AnomalyEval(anomaly_eval::AnomalyEvalArgs),
    /// A shell completion script on stdout (e.g. `presagectl completions bash >
    /// /etc/bash_completion.d/presagectl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Man pages, generated from this CLI: presagectl.1 and one per subcommand, into a folder.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum DependenciesCommand {
    /// Register or replace the declarations in FILE (one JSON declaration or an array).
    Set { file: PathBuf },
    /// One VM's declaration, standing and edges.
    Show { vm: String },
    /// What the feedback loop learned from repair moves: each dependency type's weight, the
    /// evidence for it (before/after figures beyond the noise floor), the latest observations.
    Learned,
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// Start a rollout of a plan file (JSON: `[{"vm", "cpu_cores", "memory_mib", "to_host"?,
    /// "reason"?}]`).
    Start {
        plan: PathBuf,
        /// The canary's share of the plan's VMs (`10%` or `0.1`).
        #[arg(long, default_value = "10%", value_parser = rollout_view::parse_fraction)]
        canary: f64,
        /// How long each stage is watched before the next.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        watch: Duration,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The newest rollouts and where each stands (`--log`: every step).
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        log: bool,
    },
    /// Put every applied change of a rollout back.
    Abort { id: u64 },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Every configuration asked for the VM, newest first: what it set and replaced, who or
    /// what proposed it, why, the predicted gain, the outcome.
    History {
        vm: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// What changed between two versions of the VM's configuration.
    Diff { vm: String, from: u64, to: u64 },
    /// Ask again for an old version's configuration (recorded as a new version).
    Rollback {
        vm: String,
        version: u64,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
pub enum LeaseCommand {
    /// Lend CPU (cores) or memory (MiB, from the host's reserve) to a VM for a while.
    Grant {
        /// The borrower (VM id).
        #[arg(long)]
        to: String,
        /// The lender (VM id on the same host); without it, the host's unallocated CPU.
        #[arg(long)]
        from: Option<String>,
        /// CPU to lend, cores.
        #[arg(long, conflicts_with = "mem", required_unless_present = "mem")]
        cpu: Option<f64>,
        /// Memory to lend: MiB, or with a unit (512MiB).
        #[arg(long, value_parser = plan::parse_memory_mib)]
        mem: Option<f64>,
        /// How long (the agent ends it then, coordinator or not).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End a lease now.
    Revoke { id: String },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Who leads (address, epoch), who stands by, and each etcd endpoint's health.
    Status,
}

#[derive(Subcommand)]
pub enum HostCommand {
    /// Mark the host as taking no VMs; the plan moves every VM off it (automatic mode applies it).
    Drain { host: String },
    /// Clear the host's drain mark.
    Undrain { host: String },
}

#[derive(Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA and certificates for the coordinator, an operator and agents.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name, shown in the CA's name.
        #[arg(long, default_value = "presage")]
        cluster: String,
        /// Agent host ids to issue certificates for (repeatable).
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// Extra DNS names or IP addresses for the coordinator certificate (repeatable).
        #[arg(long = "coordinator-name")]
        coordinator_names: Vec<String>,
        /// The first person's name; they get an admin certificate (operator.pem), which may also
        /// register dependency declarations.
        #[arg(long, default_value = "admin")]
        operator: String,
    },
    /// Issue one more certificate from an existing CA directory.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, conflicts_with_all = ["operator", "coordinator_cert"])]
        agent: Option<String>,
        #[arg(long, conflicts_with = "coordinator_cert")]
        operator: Option<String>,
        /// The role for --operator: viewer (reads), operator (acts), admin (manages dependency
        /// declarations too), or metrics (a Prometheus scraper: `/metrics` only).
        #[arg(long, default_value = "operator", requires = "operator", value_parser = ["viewer", "operator", "admin", "metrics"])]
        role: String,
        /// Issue a new coordinator certificate (named so as not to clash with --coordinator URL).
        #[arg(long)]
        coordinator_cert: bool,
        /// Extra DNS names or IP addresses (coordinator certificates).
        #[arg(long = "coordinator-name")]
        coordinator_names: Vec<String>,
        /// Also write the operator's certificate, key and the CA as ROLE-NAME.p12 (PKCS#12), to
        /// import into a browser for the web view (https://COORDINATOR/ui/). Its password is
        /// $PRESAGE_P12_PASSWORD, or one generated and printed once.
        #[arg(long)]
        p12: bool,
    },
}

/// A view once, or redrawn every `watch` until Ctrl-C.
async fn show_or_watch<F, Fut>(watch: Option<std::time::Duration>, mut view: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    match watch {
        Some(every) if every.is_zero() => bail!("--watch: the interval must be longer than 0"),
        Some(every) => terminal::watch(every, view).await,
        None => {
            print!("{}", view().await?);
            Ok(())
        }
    }
}

/// Plans as the output format shows them.
fn plans_text(output: &OutputFormat, plans: &[presage_protocol::pb::PlanInfo]) -> anyhow::Result<String> {
    match output {
        OutputFormat::Json => Ok(serde_json::to_string_pretty(&plans.iter().map(plan::plan_info_json).collect::<Vec<_>>())? + "\n"),
        OutputFormat::Table => Ok(plan::render_plans(plans)),
        OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
    }
}

fn show_plans(output: &OutputFormat, plans: &[presage_protocol::pb::PlanInfo]) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => print_json(&plans.iter().map(plan::plan_info_json).collect::<Vec<_>>()),
        OutputFormat::Table => {
            print!("{}", plan::render_plans(plans));
            Ok(())
        }
        OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("plans"),
    }
}

/// Shows a plan the coordinator just started, after waiting for it to finish with `wait`.
async fn show_started_plan(
    c: &mut presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    output: &OutputFormat,
    plan: Option<presage_protocol::pb::PlanInfo>,
    wait: bool,
) -> anyhow::Result<()> {
    let p = plan.context("the coordinator answered without the plan")?;
    let p = if wait { wait_for_plan(c, p.id).await? } else { p };
    show_plans(output, &[p])
}

/// Polls plan `id` once a second until it is no longer running.
async fn wait_for_plan(
    c: &mut presage_protocol::pb::operator_client::OperatorClient<tonic::transport::Channel>,
    id: u64,
) -> anyhow::Result<presage_protocol::pb::PlanInfo> {
    loop {
        let r = c
            .list_plans(presage_protocol::pb::ListPlansRequest { plan_id: id, limit: 0 })
            .await
            .map_err(|s| rpc_error("plans", s))?
            .into_inner();
        let p = r.plans.into_iter().next().with_context(|| format!("plan {id} is not in the journal"))?;
        if p.status != "running" {
            return Ok(p);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    terminal::set_colour(cli.colour);
    match cli.command {
        Command::Status { watch } => {
            if matches!(cli.output, OutputFormat::Csv | OutputFormat::Dot) {
                bail!("--output csv is only available for simulate, dot for ecosystem");
            }
            let c = cli.conn.target().connect().await?;
            let output = cli.output;
            let view = move || {
                let mut c = c.clone();
                async move {
                    let s = c.status(StatusRequest {}).await.map_err(|s| rpc_error("status", s))?.into_inner();
                    let v = StatusView::from(s);
                    Ok(match output {
                        OutputFormat::Json => serde_json::to_string(&v)? + "\n",
                        _ => v.render(),
                    })
                }
            };
            show_or_watch(watch, view).await?;
        }
        Command::Hosts => {
            let mut c = cli.conn.target().connect().await?;
            let hosts: Vec<HostView> = c
                .list_hosts(ListHostsRequest {})
                .await
                .map_err(|s| rpc_error("list hosts", s))?
                .into_inner()
                .hosts
                .into_iter()
                .map(Into::into)
                .collect();
            match cli.output {
                OutputFormat::Json => print_json(&hosts)?,
                OutputFormat::Table => print!("{}", view::hosts_table(&hosts)),
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Vms { host } => {
            let mut c = cli.conn.target().connect().await?;
            let req = ListVmsRequest { host_id: host.unwrap_or_default(), ..Default::default() };
            let vms: Vec<VmView> =
                c.list_vms(req).await.map_err(|s| rpc_error("list VMs", s))?.into_inner().vms.into_iter().map(Into::into).collect();
            match cli.output {
                OutputFormat::Json => print_json(&vms)?,
                OutputFormat::Table => print!("{}", view::vms_table(&vms)),
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Forecast { vm, host, resource } => {
            let mut c = cli.conn.target().connect().await?;
            let req = ListVmsRequest { host_id: host.clone().unwrap_or_default(), ..Default::default() };
            let vms = c.list_vms(req).await.map_err(|s| rpc_error("list VMs", s))?.into_inner().vms;
            let total = vms.len();
            let mut matching: Vec<_> =
                vms.into_iter().filter(|v| v.sample.as_ref().is_some_and(|s| s.vm_id == vm || s.name == vm)).collect();
            let found = match matching.len() {
                0 => bail!("no VM {vm:?}{} among {total} VMs", host.map(|h| format!(" on host {h}")).unwrap_or_default()),
                1 => matching.remove(0),
                n => bail!(
                    "{n} VMs are called {vm:?} (on {}); say which with --host",
                    matching.iter().map(|v| v.host_id.as_str()).collect::<Vec<_>>().join(", ")
                ),
            };
            let report = view::ForecastReport::from(found);
            match cli.output {
                OutputFormat::Json => print_json(&report)?,
                OutputFormat::Table => print!("{}", report.render(resource)),
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Ping { host, timeout } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .ping_host(PingHostRequest { host_id: host.clone(), timeout_ms: timeout.as_millis() as u64 })
                .await
                .map_err(|s| rpc_error(&format!("ping {host}"), s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "host": r.host_id, "round_trip_us": r.round_trip_us, "agent_uptime_ms": r.agent_uptime_ms, "command_id": r.command_id,
                }))?,
                OutputFormat::Table => println!(
                    "{}: answered command {} in {:.2} ms (agent up {})",
                    r.host_id,
                    r.command_id,
                    r.round_trip_us as f64 / 1000.0,
                    humantime::format_duration(Duration::from_secs(r.agent_uptime_ms / 1000))
                ),
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Inspect { host, vm } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .inspect_vm(pb::InspectVmRequest { host_id: host.clone(), vm_id: vm.clone() })
                .await
                .map_err(|s| rpc_error(&format!("inspect {vm} on {host}"), s))?
                .into_inner();
            let p = r.presence.unwrap_or_default();
            match cli.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "host": r.host_id, "vm": vm, "present": p.present, "running": p.running,
                    "migrating": p.migrating, "incoming": p.incoming, "state": p.state,
                }))?,
                OutputFormat::Table => {
                    let what = if !p.present {
                        "not there".to_string()
                    } else if p.incoming {
                        format!("held as an incoming migration ({})", p.state)
                    } else if p.migrating {
                        format!("{}, migrating away", p.state)
                    } else {
                        p.state.clone()
                    };
                    println!("{vm} on {}: {what}", r.host_id)
                }
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Plans { id, limit, watch } => {
            let c = cli.conn.target().connect().await?;
            let output = cli.output;
            let view = move || {
                let mut c = c.clone();
                async move {
                    let r = c
                        .list_plans(presage_protocol::pb::ListPlansRequest { plan_id: id.unwrap_or(0), limit })
                        .await
                        .map_err(|s| rpc_error("plans", s))?
                        .into_inner();
                    plans_text(&output, &r.plans)
                }
            };
            show_or_watch(watch, view).await?;
        }
        Command::Rollback { plan, wait } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .rollback_plan(presage_protocol::pb::RollbackPlanRequest { plan_id: plan })
                .await
                .map_err(|s| rpc_error("rollback", s))?
                .into_inner();
            show_started_plan(&mut c, &cli.output, r.rollback, wait).await?;
        }
        Command::Move { vm, host, wait } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .move_vm(presage_protocol::pb::MoveVmRequest { vm_id: vm, to_host: host })
                .await
                .map_err(|s| rpc_error("move", s))?
                .into_inner();
            show_started_plan(&mut c, &cli.output, r.plan, wait).await?;
        }
        Command::Plan => {
            let mut c = cli.conn.target().connect().await?;
            let p = c.get_plan(GetPlanRequest {}).await.map_err(|s| rpc_error("plan", s))?.into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&plan_json(&p))?,
                OutputFormat::Table => print!("{}", plan::render_plan(&p)),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("plan")?,
            }
        }
        Command::Anomalies { vm, limit } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .list_anomalies(pb::ListAnomaliesRequest { vm_id: vm.unwrap_or_default(), limit })
                .await
                .map_err(|s| rpc_error("anomalies", s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&plan::anomalies_json(&r.anomalies))?,
                OutputFormat::Table => print!("{}", plan::render_anomalies(&r.anomalies)),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("anomalies")?,
            }
        }
        Command::Explain { vm, top } => {
            let mut c = cli.conn.target().connect().await?;
            let e = c
                .explain(ExplainRequest { vm_id: vm.clone(), top })
                .await
                .map_err(|s| rpc_error(&format!("explain {vm}"), s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&explain_json(&e))?,
                OutputFormat::Table => print!("{}", plan::render_explain(&e)),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("explain")?,
            }
        }
        Command::Place { cpu, mem, mhz, top } => {
            let mut c = cli.conn.target().connect().await?;
            let req = PlaceRequest { vcpus: cpu, cpu_mhz_per_vcpu: mhz.unwrap_or(0.0), memory_mib: mem, top };
            let p = c.place(req).await.map_err(|s| rpc_error("place", s))?.into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&place_json(&p))?,
                OutputFormat::Table => print!("{}", plan::render_place(&p)),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("place")?,
            }
        }
        Command::Reserve { host, id, vm, cpu_mhz, mem, ttl, soft } => {
            let reserve = pb::Reserve { id, vm_id: vm, hard: !soft, cpu_mhz, memory_mib: mem, ttl_ms: ttl.as_millis() as u64 };
            let req = ReserveOnHostRequest { host_id: host.clone(), reserve: Some(reserve), release: None };
            reservation_call(&cli.conn, cli.output, &host, req).await?;
        }
        Command::Resize { vm, cpus, mem, disk, net, dry_run } => {
            let mut c = cli.conn.target().connect().await?;
            let req = pb::ResizeVmRequest {
                vm_id: vm.clone(),
                cpu_cores: cpus,
                memory_mib: mem,
                dry_run,
                disk_bytes_per_s: disk,
                net_bytes_per_s: net,
            };
            let r = c.resize_vm(req).await.map_err(|s| rpc_error(&format!("resize {vm}"), s))?.into_inner();
            sizing_view::show_answer(&r, Some(&vm), cli.output)?;
        }
        Command::Config(ConfigCommand::History { vm, limit }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .config_history(pb::ConfigHistoryRequest { vm_id: vm.clone(), limit })
                .await
                .map_err(|s| rpc_error(&format!("config history {vm}"), s))?
                .into_inner();
            config_view::show_history(&vm, &r.versions, cli.output)?;
        }
        Command::Config(ConfigCommand::Diff { vm, from, to }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .config_history(pb::ConfigHistoryRequest { vm_id: vm.clone(), limit: 1000 })
                .await
                .map_err(|s| rpc_error(&format!("config diff {vm}"), s))?
                .into_inner();
            let find = |n: u64| {
                r.versions
                    .iter()
                    .find(|v| v.version == n)
                    .ok_or_else(|| anyhow::anyhow!("config diff: {vm} has no version {n} among its newest 1000"))
            };
            config_view::show_diff(&vm, find(from)?, find(to)?, cli.output)?;
        }
        Command::Config(ConfigCommand::Rollback { vm, version, dry_run }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .config_rollback(pb::ConfigRollbackRequest { vm_id: vm.clone(), version, dry_run })
                .await
                .map_err(|s| rpc_error(&format!("config rollback {vm} {version}"), s))?
                .into_inner();
            if let (Some(v), OutputFormat::Table) = (&r.version, cli.output) {
                println!("{vm}: version {} asks for version {version}'s configuration", v.version);
            }
            sizing_view::show_answer(&r.sizing.unwrap_or_default(), Some(&vm), cli.output)?;
        }
        Command::Rollout(RolloutCommand::Start { plan, canary, watch, seed }) => {
            let req = rollout_view::read_plan(&plan, canary, watch.as_secs().max(1), seed)?;
            let mut c = cli.conn.target().connect().await?;
            let r = c.start_rollout(req).await.map_err(|s| rpc_error("rollout start", s))?.into_inner();
            rollout_view::show(&[r], cli.output, true)?;
        }
        Command::Rollout(RolloutCommand::List { limit, log }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c.list_rollouts(pb::ListRolloutsRequest { limit }).await.map_err(|s| rpc_error("rollout list", s))?.into_inner();
            rollout_view::show(&r.rollouts, cli.output, log)?;
        }
        Command::Rollout(RolloutCommand::Abort { id }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .abort_rollout(pb::AbortRolloutRequest { id })
                .await
                .map_err(|s| rpc_error(&format!("rollout abort {id}"), s))?
                .into_inner();
            rollout_view::show(&[r], cli.output, true)?;
        }
        Command::Leases { host } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .list_leases(pb::ListLeasesRequest { host_id: host.unwrap_or_default() })
                .await
                .map_err(|s| rpc_error("leases", s))?
                .into_inner();
            sizing_view::show_leases(&r, cli.output)?;
        }
        Command::Lease(LeaseCommand::Grant { to, from, cpu, mem, duration, reason }) => {
            let (resource, amount) = match (cpu, mem) {
                (Some(c), _) => ("cpu", c),
                (None, Some(m)) => ("memory", m),
                (None, None) => anyhow::bail!("lease grant: give --cpu or --mem"),
            };
            let mut c = cli.conn.target().connect().await?;
            let req = pb::GrantLeaseRequest {
                lender: from.unwrap_or_default(),
                borrower: to.clone(),
                resource: resource.into(),
                amount,
                duration_s: duration.as_secs(),
                reason,
            };
            let r = c.grant_lease(req).await.map_err(|s| rpc_error("lease grant", s))?.into_inner();
            sizing_view::show_answer(&r, None, cli.output)?;
        }
        Command::Lease(LeaseCommand::Revoke { id }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .revoke_lease(pb::RevokeLeaseRequest { id: id.clone() })
                .await
                .map_err(|s| rpc_error(&format!("lease revoke {id}"), s))?
                .into_inner();
            sizing_view::show_answer(&r, None, cli.output)?;
        }
        Command::Release { host, id } => {
            let req = ReserveOnHostRequest { host_id: host.clone(), reserve: None, release: Some(pb::Release { id }) };
            reservation_call(&cli.conn, cli.output, &host, req).await?;
        }
        Command::Dependencies(DependenciesCommand::Set { file }) => {
            let declarations_json = dependencies::read_declarations(&file)?;
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .set_dependencies(pb::SetDependenciesRequest { declarations_json })
                .await
                .map_err(|s| rpc_error("dependencies set", s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&serde_json::json!({"registered": r.registered, "total": r.total}))?,
                OutputFormat::Table => println!("registered {} ({} declarations in all)", r.registered.join(", "), r.total),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("dependencies")?,
            }
        }
        Command::Dependencies(DependenciesCommand::Show { vm }) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .get_vm_dependencies(pb::GetVmDependenciesRequest { vm: vm.clone() })
                .await
                .map_err(|s| rpc_error(&format!("dependencies show {vm}"), s))?
                .into_inner();
            let declaration: serde_json::Value =
                serde_json::from_str(&r.declaration_json).context("the declaration the coordinator sent")?;
            match cli.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "declaration": declaration,
                    "node": r.node.as_ref().map(dependencies::node_json),
                    "edges": r.edges.iter().map(dependencies::edge_json).collect::<Vec<_>>(),
                }))?,
                OutputFormat::Table => {
                    println!("{}", r.declaration_json);
                    let view = pb::GetEcosystemResponse { nodes: r.node.into_iter().collect(), edges: r.edges };
                    print!("{}", dependencies::render_ecosystem(&view, &OutputFormat::Table)?);
                }
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("dependencies")?,
            }
        }
        Command::Dependencies(DependenciesCommand::Learned) => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .get_dependency_learning(pb::GetDependencyLearningRequest {})
                .await
                .map_err(|s| rpc_error("dependencies learned", s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&dependencies::learning_json(&r))?,
                OutputFormat::Table => print!("{}", dependencies::learning_table(&r)),
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("dependencies learned")?,
            }
        }
        Command::Ecosystem { app, vm } => {
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .get_ecosystem(pb::GetEcosystemRequest { vm: vm.unwrap_or_default(), application: app.unwrap_or_default() })
                .await
                .map_err(|s| rpc_error("ecosystem", s))?
                .into_inner();
            print!("{}", dependencies::render_ecosystem(&r, &cli.output)?);
        }
        Command::Cluster(ClusterCommand::Status) => {
            let mut c = cli.conn.target().connect().await?;
            let s = c.cluster_status(pb::ClusterStatusRequest {}).await.map_err(|s| rpc_error("cluster status", s))?.into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&cluster_view::cluster_json(&s))?,
                OutputFormat::Table => print!("{}", cluster_view::cluster_text(&s)),
                OutputFormat::Csv | OutputFormat::Dot => bail!("--output csv is only available for simulate, dot for ecosystem"),
            }
        }
        Command::Host(h) => {
            let (host, drain) = match h {
                HostCommand::Drain { host } => (host, true),
                HostCommand::Undrain { host } => (host, false),
            };
            let mut c = cli.conn.target().connect().await?;
            let r = c
                .set_drain(pb::SetDrainRequest { host_id: host.clone(), drain })
                .await
                .map_err(|s| rpc_error(&format!("host {} {host}", if drain { "drain" } else { "undrain" }), s))?
                .into_inner();
            match cli.output {
                OutputFormat::Json => print_json(&serde_json::json!({ "host": host, "changed": r.changed, "draining": r.draining }))?,
                OutputFormat::Table => {
                    let what = if drain { "drained: it takes no VMs and the next plan moves its VMs off" } else { "schedulable again" };
                    let already = if r.changed { "" } else { " (already)" };
                    println!(
                        "{host}: {what}{already}; draining now: {}",
                        if r.draining.is_empty() { "none".to_string() } else { r.draining.join(", ") }
                    );
                }
                OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("host")?,
            }
        }
        Command::Certs(c) => certs(c)?,
        Command::Demo(args) => demo::run(args).await?,
        Command::ForecastEval(args) => {
            let output = cli.output;
            tokio::task::spawn_blocking(move || forecast_eval::run(args, output)).await??
        }
        Command::AnomalyEval(args) => {
            let output = cli.output;
            tokio::task::spawn_blocking(move || anomaly_eval::run(args, output)).await??
        }
        Command::Simulate(args) => {
            let output = cli.output;
            tokio::task::spawn_blocking(move || simulate::run(*args, output)).await??
        }
        Command::Optimise(args) if args.cluster => {
            let mut c = cli.conn.target().connect().await?;
            let r =
                c.optimise_cluster(optimise::cluster_request(&args)).await.map_err(|s| rpc_error("optimise --cluster", s))?.into_inner();
            optimise::show_cluster(&r, args.apply, cli.output)?;
        }
        Command::Optimise(args) => {
            let output = cli.output;
            tokio::task::spawn_blocking(move || optimise::run(args, output)).await??
        }
        Command::Completions { shell } => {
            // Made in memory first: the generator panics on a write error (a closed pipe).
            let mut script = Vec::new();
            cli_docs::completions(shell, &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.context("writing the completion script")?,
            }
        }
        Command::Man { dir } => {
            for page in cli_docs::man_pages(&dir)? {
                println!("{}", page.display());
            }
        }
    }
    Ok(())
}

async fn reservation_call(conn: &ConnArgs, output: OutputFormat, host: &str, req: ReserveOnHostRequest) -> anyhow::Result<()> {
    let mut c = conn.target().connect().await?;
    let r = c.reserve_on_host(req).await.map_err(|s| rpc_error(&format!("reservation on {host}"), s))?.into_inner();
    match output {
        OutputFormat::Json => print_json(&plan::reservation_json(&r))?,
        OutputFormat::Table => print!("{}", plan::render_reservation(host, &r)),
        OutputFormat::Csv | OutputFormat::Dot => plan::no_csv("reserve")?,
    }
    if !r.accepted {
        bail!("{host} refused: {}", r.refusal);
    }
    Ok(())
}

fn certs(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Init { dir, cluster, agents, coordinator_names, operator } => {
            let ca = ClusterCa::generate(&cluster)?;
            ca.write(&dir)?;
            let mut made = vec![dir.join(presage_protocol::pki::CA_CERT_FILE), dir.join(presage_protocol::pki::CA_KEY_FILE)];
            let mut add = |f: TlsFiles| {
                made.push(f.cert);
                made.push(f.key);
            };
            add(ca.issue_to(&dir, "coordinator", Role::Coordinator, "coordinator", &coordinator_names)?);
            add(ca.issue_to(&dir, "operator", Role::Admin, &operator, &[])?);
            for a in &agents {
                add(ca.issue_to(&dir, &format!("agent-{a}"), Role::Agent, a, &[])?);
            }
            println!("created the cluster CA and certificates in {}:", dir.display());
            for m in made {
                println!("  {}", m.display());
            }
            println!("keep ca.key offline; copy ca.pem plus each host's agent-<host>.pem/.key to that host.");
        }
        CertsCommand::Issue { dir, agent, operator, role, coordinator_cert, coordinator_names, p12 } => {
            let person = Role::person(&role).with_context(|| format!("--role {role}: not viewer, operator, admin or metrics"))?;
            if p12 && operator.is_none() {
                bail!("--p12 is for a person's certificate (--operator NAME): agents and the coordinator use the PEM files");
            }
            let ca = ClusterCa::load(&dir).with_context(|| format!("loading the CA from {}", dir.display()))?;
            let files = match (agent, operator, coordinator_cert) {
                (Some(a), None, false) => ca.issue_to(&dir, &format!("agent-{a}"), Role::Agent, &a, &[])?,
                (None, Some(o), false) => ca.issue_to(&dir, &format!("{role}-{o}"), person, &o, &[])?,
                (None, None, true) => ca.issue_to(&dir, "coordinator", Role::Coordinator, "coordinator", &coordinator_names)?,
                _ => bail!("say what to issue: exactly one of --agent HOST, --operator NAME or --coordinator-cert"),
            };
            println!("issued {} and {}", files.cert.display(), files.key.display());
            if p12 {
                let out = files.cert.with_extension("p12");
                let (password, generated) = match std::env::var("PRESAGE_P12_PASSWORD") {
                    Ok(p) if !p.is_empty() => (p, false),
                    _ => ((0..20).map(|_| fastrand::alphanumeric()).collect::<String>(), true),
                };
                presage_protocol::pki::write_pkcs12(&files, &out, &password)?;
                println!("wrote {} (import it into the browser for https://COORDINATOR/ui/)", out.display());
                if generated {
                    println!("its password (shown once): {password}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        // Catches clashing argument names (a panic at parse time otherwise).
        super::Cli::command().debug_assert();
    }

    #[test]
    fn certs_issue_parses_next_to_the_global_coordinator_url() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "presagectl",
            "--coordinator",
            "https://c:7400",
            "certs",
            "issue",
            "--dir",
            "d",
            "--coordinator-cert",
        ])
        .unwrap();
        assert!(matches!(cli.command, super::Command::Certs(super::CertsCommand::Issue { coordinator_cert: true, .. })));
        assert_eq!(cli.conn.coordinator, "https://c:7400");
        assert!(super::Cli::try_parse_from(["presagectl", "certs", "issue", "--dir", "d", "--agent", "a", "--operator", "o"]).is_err());
    }

    #[test]
    fn optimise_cluster_last_asks_for_the_background_pass_and_excludes_apply() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(["presagectl", "optimise", "--cluster", "--last"]).unwrap();
        let super::Command::Optimise(args) = cli.command else { panic!("not optimise") };
        let r = super::optimise::cluster_request(&args);
        assert!(r.last_pass && !r.apply);
        for bad in [&["presagectl", "optimise", "--cluster", "--last", "--apply"][..], &["presagectl", "optimise", "--last"][..]] {
            assert!(super::Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
