//! presage-agent: runs on every KVM host. It samples the host and its VMs, keeps a bounded
//! per-VM history in a sled store, and streams reports to the coordinator over mutual TLS,
//! executing the commands it receives back.
//!
//! Modules: [`config`] (TOML), [`host_sampler`] (procfs/sysinfo), [`hypervisor`] (libvirt and
//! simulated), [`store`] (the KV trait, its backends and the sample history), [`link`] (the
//! coordinator stream), [`forecaster`] (demand forecasts per VM), [`demand_archive`] (months of
//! 5-minute steps on disk, to measure and retrain the models on). [`run`] wires them together.

pub mod anomalies;
pub mod config;
pub mod coordinator_epoch;
pub mod demand_archive;
pub mod forecaster;
pub mod guest_channels;
pub mod host_sampler;
pub mod hypervisor;
pub mod link;
pub mod metrics;
pub mod reservations;
pub mod sizing;
pub mod step_ledger;

/// Now, Unix milliseconds: the agent's wall clock for samples, reservations, leases and steps.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use presage_protocol::pb::{Register, Report};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{AgentConfig, HypervisorConfig};
use crate::host_sampler::HostSampler;
use crate::hypervisor::Hypervisor;
use crate::store::{KvStore, SampleHistory, SledStore};

/// Opens the hypervisor the configuration names (blocking: run on a blocking thread). A
/// simulated host keeps which VMs it adopted and let go in `store`.
pub fn open_hypervisor(cfg: &AgentConfig, store: Arc<dyn KvStore>) -> anyhow::Result<Arc<dyn Hypervisor>> {
    Ok(match &cfg.hypervisor {
        HypervisorConfig::Libvirt { uri, driver } => {
            let program = driver.clone().unwrap_or_else(hypervisor::libvirt::default_driver);
            Arc::new(hypervisor::libvirt::LibvirtDriver::start(uri, &program, cfg.migration.libvirt_settings())?)
        }
        HypervisorConfig::Simulated(s) => Arc::new(hypervisor::simulated::SimulatedHypervisor::load(s)?.with_membership(store)?),
    })
}

/// The host id: configured, else the machine's host name.
pub fn host_id(cfg: &AgentConfig) -> anyhow::Result<String> {
    match &cfg.host_id {
        Some(h) => Ok(h.clone()),
        None => sysinfo::System::host_name().context("host_id is not configured and the host name cannot be read"),
    }
}

/// Everything one sampling cycle needs; owned by the sampling task, used on blocking threads.
pub struct SamplingCycle {
    hypervisor: Arc<dyn Hypervisor>,
    history: Arc<SampleHistory>,
    host_sampler: HostSampler,
    forecaster: forecaster::DemandForecaster,
    archive: Option<demand_archive::DemandArchive>,
    /// The step of the last archive failure logged (one warning a step, not one a cycle).
    archive_warned: Option<u64>,
    /// Cycles whose archive writes failed, since [`take_archive_failures`](Self::take_archive_failures).
    archive_failures: u64,
    anomalies: anomalies::AnomalyWatch,
    seq: u64,
}

impl SamplingCycle {
    /// A cycle forecasting with the baseline; see [`with_forecaster`](Self::with_forecaster).
    pub fn new(hypervisor: Arc<dyn Hypervisor>, history: Arc<SampleHistory>) -> SamplingCycle {
        let forecaster = forecaster::DemandForecaster::new(None, None);
        let anomalies = anomalies::AnomalyWatch::new(Default::default(), anomalies::DEFAULT_THRESHOLD);
        SamplingCycle {
            hypervisor,
            history,
            host_sampler: HostSampler::new(),
            forecaster,
            archive: None,
            archive_warned: None,
            archive_failures: 0,
            anomalies,
            seq: 0,
        }
    }

    /// How the forecast models are doing (see [`forecaster::DemandForecaster::health`]).
    pub fn forecast_health(&self) -> [(&'static str, String, presage_forecast::fleet::ModelHealth); 2] {
        self.forecaster.health()
    }

    /// Saves the forecaster's calibration (at shutdown).
    pub fn save_calibration(&mut self) -> Result<(), store::StoreError> {
        self.forecaster.save()
    }

    /// Scores the report's series for anomalies (after the guests' figures are attached).
    pub fn score_anomalies(&mut self, report: &mut Report) {
        let step = match &report.trace {
            Some(t) if t.step_seconds == presage_forecast::STEP_S => t.step,
            _ => report.sampled_at_ms / (presage_forecast::STEP_S * 1000),
        };
        let _span = tracing::debug_span!("anomalies", vms = report.vms.len()).entered();
        self.anomalies.observe(step, report.sampled_at_ms, report);
        for e in &report.anomalies {
            tracing::info!(vm = %e.vm_id, series = %e.series, value = e.value, expected = e.expected, score = e.score, "anomaly");
        }
    }

    pub fn with_forecaster(mut self, forecaster: forecaster::DemandForecaster) -> SamplingCycle {
        self.forecaster = forecaster;
        self
    }

    /// Cycles whose demand archive writes failed since the last call.
    pub fn take_archive_failures(&mut self) -> u64 {
        std::mem::take(&mut self.archive_failures)
    }

    /// Archives every VM's completed steps in `archive`.
    pub fn with_archive(mut self, archive: demand_archive::DemandArchive) -> SamplingCycle {
        self.archive = Some(archive);
        self
    }

    /// Observes the VMs and the host, records the VM samples in the history and builds the report
    /// (blocking).
    pub fn run_once(&mut self) -> anyhow::Result<Report> {
        let at_ms = unix_ms();
        let mut obs = self.hypervisor.observe()?;
        let host = match obs.host_usage {
            Some(h) => h,
            None => self.host_sampler.sample()?,
        };
        self.history.record(at_ms, &obs.vms)?;
        // Forecasts work in 5-minute steps: the trace's step for replayed VMs, wall time otherwise.
        let step = match &obs.trace {
            Some(t) if t.step_seconds == presage_forecast::STEP_S => t.step,
            _ => at_ms / (presage_forecast::STEP_S * 1000),
        };
        self.forecaster.update(step, &mut obs.vms);
        if let Some(archive) = &mut self.archive
            && let Err(e) = archive.record(step, &obs.vms)
        {
            self.archive_failures += 1;
            if self.archive_warned != Some(step) {
                self.archive_warned = Some(step);
                warn!(error = %e, "archiving demand steps failed; sampling goes on");
            }
        }
        let mut agent = host_sampler::agent_self();
        agent.forecaster = self.forecaster.status().to_string();
        agent.memory_forecaster = self.forecaster.memory_status().to_string();
        self.seq += 1;
        Ok(Report {
            seq: self.seq,
            sampled_at_ms: at_ms,
            host: Some(host),
            vms: obs.vms,
            trace: obs.trace,
            agent: Some(agent),
            anomalies: Vec::new(),
            sizing: None,
        })
    }
}

/// The agent's async runtime, sized for a daemon that samples once per interval and streams one
/// connection whatever the host's size: two worker threads (not one per core: a 128-core
/// hypervisor would otherwise carry 128 idle workers, each with its stack and malloc arena) and at
/// most 64 blocking threads (the sampling cycle, libvirt calls, migrations and their progress).
/// glibc's allocator gets at most two arenas for the same reason.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).max_blocking_threads(64).thread_name("presage-agent").enable_all().build()
}

/// Runs the agent until `cancel` fires: opens the store and the hypervisor, then samples on a
/// fixed interval while the link streams the reports.
pub async fn run(cfg: AgentConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    let host_id = host_id(&cfg)?;
    let span = info_span!("agent", host_id = %host_id);
    async move {
        let tls = cfg.tls.load().context("loading the agent's TLS files")?;
        let identity = tls.own_identity().context("reading the agent certificate")?;
        if identity.role != presage_protocol::tls::Role::Agent || identity.name != host_id {
            bail!(
                "the certificate {} is for {identity}, but this agent is host {host_id:?}: issue one with `presagectl certs issue --dir DIR --agent {host_id}`",
                cfg.tls.cert.display()
            );
        }
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("creating data_dir {}", cfg.data_dir.display()))?;
        let store_dir = cfg.data_dir.join("store");
        let store = Arc::new(SledStore::open(&store_dir)?);
        let history = Arc::new(SampleHistory::open(&*store, cfg.history_per_vm, &store_dir)?);

        let (hv_cfg, hv_store) = (cfg.clone(), store.clone());
        let hypervisor = tokio::task::spawn_blocking(move || open_hypervisor(&hv_cfg, hv_store)).await??;
        let hv = hypervisor.clone();
        let mut capacity = tokio::task::spawn_blocking(move || hv.capacity()).await??;
        if capacity.nics.is_empty() {
            capacity.nics = HostSampler::capacity().map(|c| c.nics).unwrap_or_default();
        }
        if let Some(mb) = cfg.capacity.disk_mb_per_s {
            capacity.disk_bytes_per_s = mb * 1e6;
        }
        info!(
            hypervisor = hypervisor.kind(),
            cores = capacity.cpu_cores,
            mhz_per_core = capacity.cpu_mhz_per_core,
            memory_mb = capacity.memory_bytes >> 20,
            store = %store_dir.display(),
            "agent started"
        );

        let host_mhz_per_core = capacity.cpu_mhz_per_core;
        let register = Register {
            protocol_version: presage_protocol::PROTOCOL_VERSION,
            host_id: host_id.clone(),
            agent_version: presage_protocol::PRESAGE_VERSION.into(),
            capacity: Some(capacity),
            hypervisor_kind: hypervisor.kind().into(),
            boot_id: format!("{:016x}", fastrand::u64(..)),
            migration_uri: cfg.migration.uri.clone().unwrap_or_default(),
            migration_data_uri: cfg.migration.data_uri.clone().unwrap_or_default(),
            zone: cfg.topology.zone.clone(),
            rack: cfg.topology.rack.clone(),
        };
        let reservations = {
            let cap = register.capacity.as_ref().expect("set above");
            let capacity = presage_decide::reservation::Resources {
                cpu_mhz: cap.cpu_cores as f64 * cap.cpu_mhz_per_core,
                memory_mib: cap.memory_bytes as f64 / 1048576.0,
            };
            let desk = reservations::ReservationDesk::open(store.clone(), capacity, cfg.reservations.cpu_limit)
                .with_context(|| format!("opening the reservations in {}", store_dir.display()))?;
            info!(held = desk.book().entries().len(), "reservations loaded");
            Arc::new(std::sync::Mutex::new(desk))
        };
        let sizing_desk = {
            let cap = register.capacity.as_ref().expect("set above");
            let capacity = presage_decide::sizing::Allocation::new(cap.cpu_cores as f64, cap.memory_bytes as f64 / 1048576.0);
            let desk = sizing::SizingDesk::open(store.clone(), capacity, cfg.reservations.lease_memory_reserve_mib)
                .with_context(|| format!("opening the leases and resizes in {}", store_dir.display()))?;
            info!(leases = desk.leases().len(), resizes = desk.resizes().count(), "leases and resizes loaded");
            Arc::new(std::sync::Mutex::new(desk))
        };
        let steps = Arc::new(step_ledger::StepLedger::open(store.clone(), unix_ms()).context("opening the step ledger")?);
        let metrics = metrics::AgentMetrics::default();
        let metrics_task = match cfg.metrics.listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding [metrics] listen {addr}"))?;
                info!(addr = %listener.local_addr()?, "serving /metrics on a plain port");
                let (m, held) = (metrics.clone(), metrics::Held { reservations: reservations.clone(), sizing: sizing_desk.clone(), steps: steps.clone() });
                let render: presage_protocol::metrics_endpoint::Render = Arc::new(move || metrics::render(&m, &held));
                Some(tokio::spawn(presage_protocol::metrics_endpoint::serve(listener, render, cancel.clone())))
            }
            None => None,
        };
        let (report_tx, report_rx) = watch::channel(None);
        let link = link::CoordinatorLink {
            urls: cfg.coordinator.0.clone(),
            epochs: Arc::new(coordinator_epoch::EpochGuard::open(store.clone()).context("reading the newest coordinator epoch")?),
            tls: tls.client_config(&cfg.coordinator_name),
            register,
            reconnect: cfg.reconnect.clone(),
            commands: link::CommandHandler {
                started,
                reservations,
                sizing: sizing_desk.clone(),
                hypervisor: hypervisor.clone(),
                migrations: Default::default(),
                steps,
            },
        };
        let link_task = tokio::spawn(link.run(report_rx, cancel.clone()).in_current_span());

        let models = cfg.forecast.clone();
        let forecast_store = store.clone();
        let forecaster = tokio::task::spawn_blocking(move || {
            forecaster::DemandForecaster::new(models.cpu_model.as_deref(), models.memory_model.as_deref()).with_store(&*forecast_store)
        })
        .await?
        .context("resuming the forecast state from the store")?;
        info!(cpu = forecaster.status(), memory = forecaster.memory_status(), "forecasting");
        let shutdown_hypervisor = hypervisor.clone();
        let sizing_hypervisor = hypervisor.clone();
        let mut cycle = SamplingCycle::new(hypervisor, history).with_forecaster(forecaster);
        if let Some(dir) = cfg.forecast.archive_dir.clone() {
            let months = cfg.forecast.archive_months.unwrap_or(demand_archive::DEFAULT_MONTHS);
            let (archive, opened) = tokio::task::spawn_blocking(move || demand_archive::DemandArchive::open(&dir, months, host_mhz_per_core))
                .await?
                .context("opening the demand archive (forecast.archive_dir)")?;
            info!(months, resumed = opened.resumed, torn_rows_cut = opened.torn_rows_cut, months_removed = opened.months_removed, "archiving demand");
            cycle = cycle.with_archive(archive);
        }
        let mut cycle = Some(cycle);
        let guest_channels = guest_channels::GuestChannels::new(presage_protocol::guest::DEFAULT_MAX_FRAMES_PER_S, cancel.clone());
        let mut ticker = tokio::time::interval(cfg.sample_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let mut c = cycle.take().expect("cycle is returned after every run");
            let began = Instant::now();
            let (c, result) = tokio::task::spawn_blocking(move || {
                let r = c.run_once();
                (c, r)
            })
            .instrument(info_span!("sample"))
            .await?;
            metrics.sampling.observe(began.elapsed().as_secs_f64());
            cycle = Some(c);
            match result {
                Ok(mut report) => {
                    // Leases end at their deadline here, coordinator or not.
                    let (desk, hv, views) = (sizing_desk.clone(), sizing_hypervisor.clone(), sizing::views(&report));
                    let now_ms = report.sampled_at_ms;
                    report.sizing = tokio::task::spawn_blocking(move || {
                        let mut desk = desk.lock().unwrap_or_else(|p| p.into_inner());
                        desk.enforce(&views, now_ms, &*hv);
                        desk.state()
                    })
                    .instrument(info_span!("sizing"))
                    .await
                    .ok();
                    guest_channels.attach(&mut report.vms);
                    let c = cycle.as_mut().expect("cycle is back");
                    c.score_anomalies(&mut report);
                    metrics.count_anomalies(&report);
                    metrics.forecast_health(&c.forecast_health());
                    metrics.archive_failures.inc_by(c.take_archive_failures());
                    metrics.reports.inc();
                    metrics.vms.set(report.vms.len() as i64);
                    debug!(seq = report.seq, vms = report.vms.len(), "sampled");
                    report_tx.send_replace(Some(report));
                }
                Err(e) => {
                    metrics.sampling_failures.inc();
                    warn!(error = format!("{e:#}"), "sampling failed; will retry next interval");
                }
            }
        }
        info!("shutting down: closing the coordinator stream, flushing the store");
        // Migrations in progress give up; a libvirt abort may take a few seconds to be accepted.
        let _ = tokio::task::spawn_blocking(move || shutdown_hypervisor.shutdown()).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), link_task).await;
        if let Some(t) = metrics_task {
            let _ = t.await;
        }
        if let Some(mut c) = cycle.take()
            && let Err(e) = c.save_calibration()
        {
            warn!(error = %e, "saving forecast calibration at shutdown failed");
        }
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.flush()).await??;
        info!("agent stopped");
        Ok(())
    }
    .instrument(span)
    .await
}
