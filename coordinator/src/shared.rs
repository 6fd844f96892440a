//! The coordinator's shared state: what the gRPC services, the executor and the background
//! tasks (liveness and plan reconcilers, the policy pass) all read and write. One module of its
//! own, so the services and the executor both depend on it and never on each other.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use presage_protocol::pb;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sessions::Sessions;
use crate::state::{ClusterState, Liveness};
use crate::transport::RefusalLog;

/// Where the durable state lives and, on etcd, how to ask about the cluster (for
/// `ClusterStatus`); set once when the coordinator binds.
pub struct StoreView {
    /// "etcd", "sled" or "memory".
    pub kind: &'static str,
    /// The unfenced store, for reads about the cluster.
    pub etcd: Option<presage_store::EtcdStore>,
    /// This coordinator's address in the election, when elected.
    pub advertise: Option<String>,
    /// While this coordinator stands by: its warm copy (what it serves reads from).
    pub standby: Option<crate::standby::Standby>,
}

impl StoreView {
    /// A store with no election.
    pub fn single(kind: &'static str, etcd: Option<presage_store::EtcdStore>) -> StoreView {
        StoreView { kind, etcd, advertise: None, standby: None }
    }
}

/// State shared by the services and the background tasks.
pub struct Shared {
    pub store: std::sync::OnceLock<StoreView>,
    pub state: Mutex<ClusterState>,
    pub sessions: Sessions,
    pub refusals: Arc<RefusalLog>,
    pub started: Instant,
    /// Fired at shutdown; open agent sessions end when it does.
    pub cancel: CancellationToken,
    /// The advisory pass's last plan (with the fleet it saw) and when it was made.
    pub plan: Mutex<Option<(Instant, Arc<crate::advisor::PlanSnapshot>)>>,
    /// Hosts an operator is draining (not schedulable; the plan empties them).
    pub draining: Mutex<std::collections::HashSet<String>>,
    pub policy_name: String,
    /// `advisory` or `automatic`.
    pub policy_mode: &'static str,
    /// The executor's durable record of plans and drain marks.
    pub journal: Arc<crate::plan_journal::PlanJournal>,
    /// Plans an executor task is running now (the reconciler leaves them alone).
    pub executing: Mutex<std::collections::HashSet<u64>>,
    /// The latest progress each migrating VM's source streamed.
    pub progress: Mutex<std::collections::HashMap<String, pb::MigrationProgress>>,
    /// How many progress reports arrived since start.
    pub progress_reports: std::sync::atomic::AtomicU64,
    /// The `[executor]` limits every plan runs within.
    pub limits: presage_decide::migration_queue::MigrationLimits,
    /// Serialises rollback requests (a plan is rolled back once).
    pub rollbacks: Mutex<()>,
    /// Hosts just marked drained whose VMs the next pass moves off in one drain plan.
    pub drain_requests: Mutex<std::collections::HashSet<String>>,
    /// Wakes the policy pass early (a drain was requested).
    pub wake_policy: tokio::sync::Notify,
    /// The registered dependency declarations and their graph.
    pub ecosystem: Arc<crate::ecosystem::EcosystemRegistry>,
    /// The sizing pass's last proposals and what came of them.
    pub sizing_pass: Mutex<Option<pb::SizingPass>>,
    /// Every VM's configuration versions.
    pub versions: Arc<crate::config_versions::ConfigVersions>,
    /// Staged rollouts of configuration plans.
    pub rollouts: Arc<crate::rollouts::RolloutJournal>,
    /// The background optimiser pass's last answer (`[optimiser]`).
    pub optimiser_pass: Mutex<Option<pb::OptimiseClusterResponse>>,
    /// The goals the cluster optimiser plans for (`[optimiser]`), on request or in the background.
    pub optimiser_goals: presage_decide::optimise::cluster::SizingGoals,
    /// `[optimiser] max_request_time`: the longest one-off optimiser run an operator may ask.
    pub optimiser_request_limit: Duration,
    /// Events counted for `/metrics`.
    pub metrics: crate::metrics::CoordinatorMetrics,
}

/// What the coordinator keeps in its store.
pub struct Durable {
    /// Plans and drain marks.
    pub journal: Arc<crate::plan_journal::PlanJournal>,
    pub versions: Arc<crate::config_versions::ConfigVersions>,
    pub rollouts: Arc<crate::rollouts::RolloutJournal>,
}

/// What the configuration sets for the coordinator's shared state.
pub struct Settings {
    pub host_timeout: Duration,
    pub policy_name: String,
    pub policy_mode: &'static str,
    pub limits: presage_decide::migration_queue::MigrationLimits,
    pub optimiser_goals: presage_decide::optimise::cluster::SizingGoals,
    /// `[optimiser] max_request_time`.
    pub optimiser_request_limit: Duration,
}

impl Shared {
    pub fn new(
        settings: Settings,
        durable: Durable,
        cancel: CancellationToken,
        ecosystem: Arc<crate::ecosystem::EcosystemRegistry>,
    ) -> Arc<Shared> {
        let Settings { host_timeout, policy_name, policy_mode, limits, optimiser_goals, optimiser_request_limit } = settings;
        let Durable { journal, versions, rollouts } = durable;
        let metrics = crate::metrics::CoordinatorMetrics::default();
        let drained = journal.drained().unwrap_or_else(|e| {
            warn!(error = %e, "reading the drain marks failed; no host is drained");
            Default::default()
        });
        // A drain interrupted by a restart goes on: the first pass plans whatever is still on
        // a drained host.
        let drain_requests = drained.clone();
        Arc::new(Shared {
            store: std::sync::OnceLock::new(),
            plan: Mutex::new(None),
            sizing_pass: Mutex::new(None),
            optimiser_pass: Mutex::new(None),
            optimiser_goals,
            optimiser_request_limit,
            draining: Mutex::new(drained),
            journal,
            executing: Mutex::default(),
            progress: Mutex::default(),
            progress_reports: Default::default(),
            limits,
            rollbacks: Mutex::new(()),
            drain_requests: Mutex::new(drain_requests),
            wake_policy: tokio::sync::Notify::new(),
            policy_name,
            policy_mode,
            state: Mutex::new(ClusterState::new(host_timeout)),
            sessions: Sessions::default(),
            refusals: Arc::new(RefusalLog::default()),
            metrics,
            started: Instant::now(),
            cancel,
            ecosystem,
            versions,
            rollouts,
        })
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this coordinator holds while it stands by (none when it leads or is alone).
    pub fn standby(&self) -> Option<&crate::standby::Standby> {
        self.store.get().and_then(|v| v.standby.as_ref())
    }
}

/// Now, Unix milliseconds: the coordinator's wall clock for journal records, reports and passes.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn log_liveness(change: &Liveness) {
    match change {
        Liveness::Unreachable { host_id, silent_for } => warn!(%host_id, silent_for = ?silent_for, "host unreachable"),
        Liveness::Reachable { host_id } => info!(%host_id, "host reachable"),
    }
}
