//! Runs the coordinator: binds the TLS listener, serves both gRPC services, and runs the liveness
//! reconciler (which marks silent hosts unreachable) and the advisory consolidation pass. Shutdown order when `cancel` fires: stop
//! accepting, end agent sessions, let the gRPC server drain (bounded by `shutdown_timeout`), then
//! stop the background tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use presage_protocol::pb::{agent_link_server::AgentLinkServer, operator_server::OperatorServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::advisor::Advisor;
use crate::config::CoordinatorConfig;
use crate::service::{AgentLinkService, OperatorService};
use crate::shared::{Shared, log_liveness};
use crate::transport;

/// The pause before a failed campaign is started again.
const CAMPAIGN_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a standby's reads in flight may take once it stops serving to lead.
const STANDBY_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// A coordinator bound to its port, not yet serving.
pub struct Coordinator {
    listener: TcpListener,
    /// `[metrics] listen`, bound.
    metrics_listener: Option<TcpListener>,
    tls: Arc<rustls::ServerConfig>,
    cfg: CoordinatorConfig,
    policy: presage_decide::policy::PolicySpec,
    /// presage's learned model, loaded at start (`[policy.presage] learned_model`).
    extras: presage_decide::policy::PolicyExtras,
    pub shared: Arc<Shared>,
}

/// Loads `[policy.presage] learned_model` when set: a model that cannot be loaded stops the
/// coordinator at start, naming the file and what is wrong.
fn learned_extras(presage: &presage_decide::policy::presage::PresageConfig) -> anyhow::Result<presage_decide::policy::PolicyExtras> {
    let Some(path) = &presage.learned_model else { return Ok(Default::default()) };
    let model = presage_forecast::shortfall::OnnxShortfall::load(path).context("[policy.presage] learned_model")?;
    tracing::info!(model = %path.display(), "presage's ensemble re-ranks with a learned shortfall model");
    Ok(presage_decide::policy::PolicyExtras { shortfall: Some(Arc::new(model)), candidate_log: None })
}

impl Coordinator {
    /// Loads the TLS material, opens the store `cfg` names and binds `cfg.listen`.
    pub async fn bind(cfg: CoordinatorConfig, cancel: CancellationToken) -> anyhow::Result<Coordinator> {
        let (store, view) = open_store(&cfg).await?;
        let c = Coordinator::bind_with_store(cfg, cancel, store).await?;
        let _ = c.shared.store.set(view);
        Ok(c)
    }

    /// [`bind`](Self::bind) on a store opened by the caller (an elected leader's, fenced).
    pub async fn bind_with_store(
        cfg: CoordinatorConfig,
        cancel: CancellationToken,
        store: Arc<dyn presage_store::KvStore>,
    ) -> anyhow::Result<Coordinator> {
        let material = cfg.tls.load().context("loading the coordinator's TLS files")?;
        let tls = material.server_config().context("building the TLS server configuration")?;
        let listener = TcpListener::bind(cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
        let metrics_listener = match cfg.metrics.listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding [metrics] listen {addr}"))?),
            None => None,
        };
        let spec = cfg.policy.spec().context("the [policy] section")?;
        let extras = learned_extras(&cfg.policy.presage)?;
        let mode = match cfg.policy.mode {
            crate::config::PolicyMode::Advisory => "advisory",
            crate::config::PolicyMode::Automatic => "automatic",
        };
        let options = presage_decide::ecosystem::MatchOptions { fuzzy_threshold: cfg.ecosystem.fuzzy_threshold };
        let ecosystem = Arc::new(
            crate::ecosystem::EcosystemRegistry::open(store.as_ref(), cfg.ecosystem.latency_ms, options, cfg.ecosystem.learning())
                .context("opening the dependency declarations")?,
        );
        let durable = crate::shared::Durable {
            versions: Arc::new(crate::config_versions::ConfigVersions::open(store.clone()).context("opening the configuration versions")?),
            rollouts: Arc::new(crate::rollouts::RolloutJournal::open(store.clone()).context("opening the rollouts")?),
            journal: Arc::new(crate::plan_journal::PlanJournal::open(store).context("opening the plan journal")?),
        };
        let shared = Shared::new(
            crate::shared::Settings {
                host_timeout: cfg.host_timeout,
                policy_name: spec.to_string(),
                policy_mode: mode,
                limits: cfg.executor,
                optimiser_goals: cfg.optimiser.goals(),
                optimiser_request_limit: cfg.optimiser.max_request_time,
            },
            durable,
            cancel,
            ecosystem,
        );
        Ok(Coordinator { listener, metrics_listener, tls, cfg, policy: spec, extras, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Where the plain `/metrics` port listens, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until the shared cancellation token fires.
    pub async fn serve(self) -> anyhow::Result<()> {
        let Coordinator { listener, metrics_listener, tls, cfg, policy, extras, shared } = self;
        let cancel = shared.cancel.clone();
        let addr = listener.local_addr()?;
        let background = CancellationToken::new();
        // A standby decides nothing: it runs none of the passes, reconcilers or executors.
        let mut tasks = Vec::new();
        if shared.standby().is_none() {
            tasks.push(tokio::spawn(liveness_reconciler(shared.clone(), background.clone())));
            tasks.push(tokio::spawn(plan_reconciler(shared.clone(), background.clone())));
            tasks.push(tokio::spawn(advisory_pass(
                shared.clone(),
                Advisor::with_ecosystem(policy, &cfg.policy.presage, shared.ecosystem.clone(), extras),
                cfg.policy.clone(),
                cfg.executor,
                background.clone(),
            )));
            // Staged rollouts go on from their journal (a restart resumes them).
            tasks.push(tokio::spawn(crate::rollouts::runner(shared.clone(), std::time::Duration::from_secs(1), background.clone())));
            if cfg.sizing.mode != crate::config::SizingMode::Off {
                tasks.push(tokio::spawn(sizing_loop(shared.clone(), cfg.sizing.clone(), background.clone())));
            }
            if cfg.optimiser.mode != crate::config::OptimiserMode::Off {
                tasks.push(tokio::spawn(crate::optimiser_pass::background(shared.clone(), cfg.optimiser.clone(), background.clone())));
            }
        }
        if let Some(listener) = metrics_listener {
            info!(addr = %listener.local_addr()?, "serving /metrics on a plain port");
            let shared = shared.clone();
            let render: presage_protocol::metrics_endpoint::Render = Arc::new(move || crate::metrics::render(&shared));
            tasks.push(tokio::spawn(presage_protocol::metrics_endpoint::serve(listener, render, background.clone())));
        }

        let (incoming, accepting) = transport::accept(listener, tls, shared.refusals.clone(), cancel.clone());
        // gRPC and the REST API on one port: HTTP/2 for gRPC, HTTP/1.1 or HTTP/2 for REST.
        let routes = tonic::service::Routes::new(AgentLinkServer::new(AgentLinkService { shared: shared.clone() }))
            .add_service(OperatorServer::new(OperatorService { shared: shared.clone() }))
            .into_axum_router()
            .merge(crate::rest::router(shared.clone()))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), crate::standby::guard));
        let server = tonic::transport::Server::builder()
            .accept_http1(true)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .add_routes(tonic::service::Routes::from(routes))
            .serve_with_incoming_shutdown(incoming, cancel.clone().cancelled_owned());
        info!(%addr, host_timeout = ?cfg.host_timeout, "coordinator listening (mutual TLS)");
        let mut server = std::pin::pin!(server);
        tokio::select! {
            r = &mut server => r.context("gRPC server failed")?,
            _ = cancel.cancelled() => {
                shared.sessions.close_all();
                // A standby stopping to lead holds only reads: they get a moment, not the
                // whole drain, so that taking over is not held up by an idle connection.
                let drain = if shared.standby().is_some() { STANDBY_DRAIN.min(cfg.shutdown_timeout) } else { cfg.shutdown_timeout };
                match tokio::time::timeout(drain, &mut server).await {
                    Ok(r) => r.context("gRPC server failed during shutdown")?,
                    Err(_) => warn!(timeout = ?drain, "gRPC server did not drain in time; closing connections"),
                }
            }
        }
        // The port is free once this returns (a standby's is the leader's next).
        let _ = accepting.await;
        info!("gRPC server stopped; stopping background tasks");
        background.cancel();
        for task in tasks {
            let _ = task.await;
        }
        info!("coordinator stopped");
        Ok(())
    }
}

/// A background loop's clock: a pass that overruns its period delays the next instead of
/// bunching the missed ones.
fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Marks hosts unreachable when they fall silent. Checks four times per timeout, so a host is
/// marked within 1.25 x the timeout.
async fn liveness_reconciler(shared: Arc<Shared>, stop: CancellationToken) {
    let period = shared.state().host_timeout() / 4;
    let mut tick = ticker(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changes = shared.state().sweep(Instant::now());
        for c in &changes {
            log_liveness(c);
        }
    }
}

/// Settles journaled moves no executor is running (after a coordinator restart, or when a
/// move's hosts could not be asked): every few seconds until none is left, then on each tick.
async fn plan_reconciler(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = ticker(std::time::Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let wait = shared.state().host_timeout();
        tokio::select! {
            _ = stop.cancelled() => return,
            n = crate::applier::reconcile(&shared, wait) => if n > 0 {
                info!(settled = n, "settled interrupted moves");
            }
        }
    }
}

/// Runs the sizing pass every `[sizing] interval` (advisory: proposals kept for `presagectl
/// leases`; automatic: sent to the agents).
async fn sizing_loop(shared: Arc<Shared>, cfg: crate::config::SizingConfig, stop: CancellationToken) {
    let mut engine = crate::sizing_pass::SizingEngine::new(&cfg);
    let mut tick = ticker(cfg.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pass = tokio::select! {
            _ = stop.cancelled() => return,
            p = crate::sizing_pass::run_pass(&shared, &mut engine, cfg.mode) => p,
        };
        *shared.sizing_pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(pass);
    }
}

/// Runs the configured consolidation policy over the observed state every `interval` and keeps
/// its plan for `presagectl plan`, `explain` and `place` (advisory: nothing is executed).
async fn advisory_pass(
    shared: Arc<Shared>,
    mut advisor: Advisor,
    cfg: crate::config::PolicyConfig,
    limits: presage_decide::migration_queue::MigrationLimits,
    stop: CancellationToken,
) {
    let started = Instant::now();
    let mut tick = ticker(cfg.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = shared.wake_policy.notified() => {}
        }
        let began = Instant::now();
        // The state's lock is held only while the fleet is read, not while the policy decides.
        let now_s = started.elapsed().as_secs_f64();
        let fleet = {
            let draining = shared.draining.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let state = shared.state();
            advisor.observe(&state, now_s, &draining)
        };
        // The decision is CPU work (seconds for the largest fleets): off the runtime's threads,
        // which serve the agents' sessions meanwhile.
        let decided = tokio::task::spawn_blocking(move || {
            let plan = advisor.decide(fleet, now_s);
            (advisor, plan)
        });
        let plan = match decided.await {
            Ok((back, plan)) => {
                advisor = back;
                plan
            }
            Err(e) => {
                tracing::error!(error = %e, "the policy pass failed; no more passes until the coordinator restarts");
                return;
            }
        };
        shared.metrics.policy_pass.observe(began.elapsed().as_secs_f64());
        if let Some(c) = advisor.take_learned_counts() {
            shared.metrics.count_learned(&c);
        }
        let proposal = &plan.proposal;
        info!(policy = %proposal.policy, hosts = proposal.hosts_considered, vms = proposal.vms_considered, moves = proposal.moves.len(), "advisory consolidation pass");
        for m in &proposal.moves {
            tracing::debug!(vm = %m.vm_id, from = %m.from_host, to = %m.to_host, reason = m.reason, "proposed migration");
        }
        let plan = Arc::new(plan);
        *shared.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), plan.clone()));
        start_drain_plans(&shared, &plan, limits);
        if cfg.mode == crate::config::PolicyMode::Automatic {
            let ttl = (cfg.interval * 2).as_millis() as u64;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = crate::applier::record_growth(&shared, &plan, ttl) => {}
            }
        }
        if cfg.mode == crate::config::PolicyMode::Automatic && !plan.proposal.moves.is_empty() {
            // VMs whose last move is not settled yet stay out of new plans.
            let moves = crate::applier::moves_of(&plan, cfg.moves_per_pass, &crate::applier::vms_in_flight(&shared));
            if moves.is_empty() {
                continue;
            }
            let record = match crate::applier::record_plan(&shared, "policy", moves, None) {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "journaling the plan failed; not applying it");
                    continue;
                }
            };
            // The executor journals every step; a shutdown stops starting moves and lets the
            // running ones end (each within its time budget).
            let ended = crate::applier::execute(&shared, record, limits).await;
            info!(plan = ended.id, status = ended.status(), "plan applied");
        }
    }
}

/// For hosts just marked drained: every VM the pass moves off them, in one plan per pass
/// (`origin = "drain"`), executed now whatever the policy mode, each VM to a host that fits its
/// forecast. A host whose VMs cannot all be placed yet stays requested for the next pass.
fn start_drain_plans(shared: &Arc<Shared>, plan: &crate::advisor::PlanSnapshot, limits: presage_decide::migration_queue::MigrationLimits) {
    let requested: std::collections::HashSet<String> = shared.drain_requests.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if requested.is_empty() {
        return;
    }
    let in_flight = crate::applier::vms_in_flight(shared);
    let moves: Vec<_> =
        crate::applier::moves_of(plan, usize::MAX, &in_flight).into_iter().filter(|m| requested.contains(&m.from_host)).collect();
    let state = shared.state();
    let mut requests = shared.drain_requests.lock().unwrap_or_else(|p| p.into_inner());
    for host in &requested {
        let resident = state.host(host).map(|h| h.vms.len()).unwrap_or(0);
        let planned = moves.iter().filter(|m| &m.from_host == host).count();
        if planned >= resident {
            requests.remove(host);
        } else {
            info!(host = %host, resident, planned, "not every VM of the drained host has a destination yet; the next pass plans the rest");
        }
    }
    drop((requests, state));
    if moves.is_empty() {
        return;
    }
    match crate::applier::record_plan(shared, "drain", moves, None) {
        Ok(record) => {
            info!(plan = record.id, moves = record.moves.len(), "drain plan started");
            let shared = shared.clone();
            tokio::spawn(async move { crate::applier::execute(&shared, record, limits).await }.in_current_span());
        }
        Err(e) => warn!(error = %e, "journaling the drain plan failed; the next pass tries again"),
    }
}

/// Binds and serves until `cancel` fires.
pub async fn run(cfg: CoordinatorConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    if cfg.cluster.election {
        return run_elected(cfg, cancel).await;
    }
    Coordinator::bind(cfg, cancel).await?.serve().await
}

/// The election among coordinators sharing one etcd.
pub const ELECTION: &str = "coordinator";

/// Opens the durable store `cfg` names: etcd, sled in `data_dir`, or memory.
async fn open_store(cfg: &CoordinatorConfig) -> anyhow::Result<(Arc<dyn presage_store::KvStore>, crate::shared::StoreView)> {
    use crate::shared::StoreView;
    Ok(match (&cfg.cluster.store, &cfg.data_dir) {
        (crate::config::StoreKind::Etcd, _) => {
            let store = connect_etcd(cfg).await?;
            info!(endpoints = %cfg.cluster.etcd.endpoints.join(","), prefix = %cfg.cluster.etcd.prefix, "durable state in etcd");
            (Arc::new(store.clone()), StoreView::single("etcd", Some(store)))
        }
        (crate::config::StoreKind::Sled, Some(dir)) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating data_dir {}", dir.display()))?;
            let path = dir.join("journal");
            let store = presage_store::SledStore::open(&path).with_context(|| format!("opening the plan journal in {}", path.display()))?;
            (Arc::new(store), StoreView::single("sled", None))
        }
        (crate::config::StoreKind::Sled, None) => {
            warn!("no data_dir configured: the plan journal and drain marks are kept in memory and lost on restart");
            (Arc::new(presage_store::MemoryStore::new()), StoreView::single("memory", None))
        }
    })
}

/// Connects to etcd (the call blocks: off the runtime's threads).
async fn connect_etcd(cfg: &CoordinatorConfig) -> anyhow::Result<presage_store::EtcdStore> {
    let etcd = cfg.cluster.etcd.store_config().map_err(anyhow::Error::msg).context("[cluster.etcd]")?;
    let endpoints = etcd.endpoints.join(",");
    tokio::task::spawn_blocking(move || presage_store::EtcdStore::connect(&etcd))
        .await?
        .with_context(|| format!("opening the etcd store at {endpoints}"))
}

/// A coordinator among several on one etcd: waits as a standby until it leads, then serves
/// with every durable write fenced on its leadership (a deposed leader's writes fail), the
/// journal's moves in flight settled as after a restart. It steps down — stops serving and
/// returns an error, for its supervisor to start it again as a standby — when it can no
/// longer be sure it leads; `cancel` (SIGTERM) resigns at once.
pub async fn run_elected(cfg: CoordinatorConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let store = connect_etcd(&cfg).await?;
    let advertise = cfg.cluster.advertise.clone().unwrap_or_else(|| format!("https://{}", cfg.listen));
    let timing = cfg.cluster.lease_timing();
    // Standing by: a warm copy of the store, reads served from it, its progress reported.
    let standing = stand_by(&cfg, &store, &advertise, &cancel).await;
    let mut look = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut told: Option<(Option<presage_store::LeaderInfo>, Instant)> = None;
    // Campaigns until it leads; a campaign that fails (etcd unreachable, a connection broken)
    // is withdrawn (its lease revoked) and started again, the standby serving meanwhile.
    let won = 'standing: loop {
        let campaign = store.campaign(ELECTION, &advertise, timing);
        tokio::pin!(campaign);
        let outcome = loop {
            tokio::select! {
                _ = cancel.cancelled() => break 'standing None,
                won = &mut campaign => break won,
                _ = look.tick() => match store.leader(ELECTION).await {
                    Ok(l) => {
                        if let Some(s) = standing.as_ref().and_then(|s| s.shared.standby()) {
                            s.set_leader(l.clone());
                        }
                        // Said when it changes, and every minute.
                        if told.as_ref().is_none_or(|(t, at)| *t != l || at.elapsed().as_secs() >= 60) {
                            match &l {
                                Some(l) => info!(leader = %l.value, epoch = l.epoch, "standby: another coordinator leads"),
                                None => info!("standby: nobody leads yet"),
                            }
                            told = Some((l, Instant::now()));
                        }
                    }
                    Err(e) => warn!(error = %e, "standby: cannot read who leads"),
                },
            }
        };
        match outcome {
            Ok(leadership) => break Some(leadership),
            Err(e) => {
                warn!(error = %e, retry_in = ?CAMPAIGN_RETRY, "standby: the campaign failed; campaigning again");
                tokio::select! {
                    _ = cancel.cancelled() => break None,
                    _ = tokio::time::sleep(CAMPAIGN_RETRY) => {}
                }
            }
        }
    };
    // The port the standby served reads on is the leader's now.
    if let Some(s) = standing {
        s.stop().await;
    }
    let Some(mut leadership) = won else { return Ok(()) };
    let epoch = leadership.epoch;
    info!(epoch, advertise, "leading: serving with writes fenced on this leadership");
    let serving_cancel = cancel.child_token();
    let fenced: Arc<dyn presage_store::KvStore> = Arc::new(store.fenced(leadership.fence.clone()));
    let coordinator = match Coordinator::bind_with_store(cfg, serving_cancel.clone(), fenced).await {
        Ok(c) => {
            // Agents refuse the commands of any older leader from the first welcome on.
            c.shared.sessions.set_leadership(epoch.max(1) as u64, leadership.mandate.clone());
            let view =
                crate::shared::StoreView { kind: "etcd", etcd: Some(store.clone()), advertise: Some(advertise.clone()), standby: None };
            let _ = c.shared.store.set(view);
            c
        }
        Err(e) => {
            leadership.resign().await;
            return Err(e);
        }
    };
    let mut serving = tokio::spawn(coordinator.serve());
    tokio::select! {
        _ = leadership.lost() => {
            tracing::error!(epoch, "leadership lost (its lease could not be renewed): stepping down");
            serving_cancel.cancel();
            let _ = serving.await;
            anyhow::bail!("leadership of epoch {epoch} lost: stepped down; start again to stand by")
        }
        _ = cancel.cancelled() => {
            serving_cancel.cancel();
            let served = serving.await;
            leadership.resign().await;
            info!(epoch, "resigned");
            served?
        }
        served = &mut serving => {
            leadership.resign().await;
            served?
        }
    }
}

/// A standby serving reads from its warm copy, and reporting the copy's progress.
struct StandingBy {
    cancel: CancellationToken,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    reporting: tokio::task::JoinHandle<()>,
    shared: Arc<Shared>,
}

impl StandingBy {
    /// Stops serving (the port is free when it returns) and withdraws the copy's report.
    async fn stop(self) {
        self.cancel.cancel();
        match self.serving.await {
            Ok(Err(e)) => warn!(error = %e, "standby: serving reads ended with an error"),
            Err(e) => warn!(error = %e, "standby: serving reads failed"),
            Ok(Ok(())) => {}
        }
        let _ = self.reporting.await;
    }
}

/// Loads the warm copy and serves reads from it on `cfg.listen`; `None` (said in the log) when
/// either cannot be done: the coordinator then stands by without serving until it leads.
async fn stand_by(
    cfg: &CoordinatorConfig,
    store: &presage_store::EtcdStore,
    advertise: &str,
    cancel: &CancellationToken,
) -> Option<StandingBy> {
    let began = Instant::now();
    let copy = match store.warm_copy().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "standby: no warm copy of the store; standing by without serving reads");
            return None;
        }
    };
    let standby_cancel = cancel.child_token();
    let c = match Coordinator::bind_with_store(cfg.clone(), standby_cancel.clone(), Arc::new(copy.clone())).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = format!("{e:#}"), "standby: cannot serve reads from the warm copy; standing by without serving");
            return None;
        }
    };
    let view = crate::shared::StoreView {
        kind: "etcd",
        etcd: Some(store.clone()),
        advertise: Some(advertise.to_string()),
        standby: Some(crate::standby::Standby::new(copy.clone())),
    };
    let _ = c.shared.store.set(view);
    let progress = copy.progress();
    info!(addr = %c.local_addr(), keys = progress.keys, revision = progress.revision, loaded_in = ?began.elapsed(), "standby: serving reads from a warm copy of the store");
    let shared = c.shared.clone();
    let serving = tokio::spawn(c.serve().in_current_span());
    let reporting = tokio::spawn(crate::standby::report_progress(store.clone(), advertise.to_string(), copy, standby_cancel.clone()));
    Some(StandingBy { cancel: standby_cancel, serving, reporting, shared })
}
