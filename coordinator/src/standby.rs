//! A standby coordinator (elected mode, not leading): it keeps a warm copy of the store
//! (`presage_store::WarmCopy`, followed by a watch) and serves the reads that need nothing but
//! the store from it — the plan journal, configuration histories, rollouts, and the cluster's
//! status. Every other call, and every agent session, is refused with `unavailable` naming the
//! leader (gRPC: the `presage-leader` metadata; REST: a 503 with the `presage-leader` header),
//! so agents and `presagectl` move on to it. It reports how current its copy is in the store
//! ([`STANDBYS_TREE`], under its address) for the leader's `cluster status`.
//!
//! Architecture Invariant: a standby never decides. It runs no policy pass, executor,
//! reconciler or sizing pass, holds no agent session, and writes nothing but its own report;
//! the copy it reads from serves reads only — a standby that wins the election reads its state
//! from etcd itself, not from the copy.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use presage_store::{EtcdStore, KvStore, LeaderInfo, Order, STANDBYS_TREE, WarmCopy};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::api_error::ApiError;
use crate::shared::Shared;

/// How often a standby reports its copy's progress.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The metadata key (gRPC) and header (REST) naming the leader in a refusal.
pub const LEADER_HEADER: &str = "presage-leader";

/// The operator RPCs a standby answers (from its copy).
const READ_RPCS: [&str; 4] = ["ListPlans", "ConfigHistory", "ListRollouts", "ClusterStatus"];

/// What a standby holds: its copy, and who it last saw leading.
pub struct Standby {
    pub copy: WarmCopy,
    pub leader: Mutex<Option<LeaderInfo>>,
}

impl Standby {
    pub fn new(copy: WarmCopy) -> Standby {
        Standby { copy, leader: Mutex::new(None) }
    }

    pub fn leader(&self) -> Option<LeaderInfo> {
        self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_leader(&self, l: Option<LeaderInfo>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = l;
    }
}

/// Whether a standby serves `method path` (gRPC paths are `/presage.v1.Operator/Rpc`).
pub fn serves(method: &Method, path: &str) -> bool {
    if let Some(rpc) = path.strip_prefix("/presage.v1.Operator/") {
        return READ_RPCS.contains(&rpc);
    }
    if method != Method::GET {
        return false;
    }
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["", "v1", "cluster"]
            | ["", "v1", "plans"]
            | ["", "v1", "plans", _]
            | ["", "v1", "rollouts"]
            | ["", "v1", "vms", _, "config"]
            | ["", "v1", "openapi.json"]
    )
}

/// Lets through what a standby serves and refuses the rest naming the leader; does nothing on
/// a leader or a single coordinator.
pub async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(standby) = shared.standby() else { return next.run(request).await };
    if serves(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    // The hint the standby keeps (renewed every second); asked of etcd when it has none.
    let leader = match standby.leader() {
        Some(l) => Some(l.value),
        None => match shared.store.get().and_then(|v| v.etcd.as_ref()) {
            Some(etcd) => {
                let found = etcd.leader(crate::server::ELECTION).await.ok().flatten();
                standby.set_leader(found.clone());
                found.map(|l| l.value)
            }
            None => None,
        },
    };
    let reason = format!(
        "this coordinator is a standby: it serves plans, configuration histories, rollouts and the cluster's status from its copy of the store; {}",
        match &leader {
            Some(l) => format!("everything else goes to the leader, {l}"),
            None => "nobody leads at the moment: try again shortly".into(),
        }
    );
    let grpc = request.headers().get(axum::http::header::CONTENT_TYPE).is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    let mut response = if grpc {
        let mut status = tonic::Status::unavailable(reason);
        if let Some(v) = leader.as_deref().and_then(|l| l.parse().ok()) {
            status.metadata_mut().insert(LEADER_HEADER, v);
        }
        status.into_http::<axum::body::Body>()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "standby", reason).into_response()
    };
    if let Some(v) = leader.as_deref().and_then(|l| HeaderValue::from_str(l).ok()) {
        response.headers_mut().insert(LEADER_HEADER, v);
    }
    response
}

/// A standby's report of its copy, kept in the store under its address.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CopyReport {
    /// The store revision the copy holds every change up to, and its keys.
    pub revision: i64,
    pub keys: usize,
    /// When the copy was last confirmed to hold everything etcd had (Unix ms, the standby's clock).
    pub confirmed_unix_ms: u64,
    /// When the report was written (Unix ms).
    pub written_unix_ms: u64,
    /// Why the copy is not following etcd, while it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

impl CopyReport {
    pub fn of(copy: &WarmCopy) -> CopyReport {
        let p = copy.progress();
        CopyReport {
            revision: p.revision,
            keys: p.keys,
            confirmed_unix_ms: p.confirmed_unix_ms,
            written_unix_ms: crate::shared::unix_ms(),
            broken: p.broken,
        }
    }

    /// How stale a read from the copy could be when the report was made.
    pub fn lag_ms(&self) -> u64 {
        self.written_unix_ms.saturating_sub(self.confirmed_unix_ms)
    }

    /// How old the report is at `now_unix_ms`.
    pub fn age_ms(&self, now_unix_ms: u64) -> u64 {
        now_unix_ms.saturating_sub(self.written_unix_ms)
    }
}

/// Writes this standby's report every [`REPORT_EVERY`] until `stop`, then removes it.
pub async fn report_progress(store: EtcdStore, advertise: String, copy: WarmCopy, stop: CancellationToken) {
    let tree = match store.tree(STANDBYS_TREE) {
        Ok(t) => t,
        Err(e) => return warn!(error = %e, "standby: cannot report the copy's progress"),
    };
    let mut tick = tokio::time::interval(REPORT_EVERY);
    let mut broken_before = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let report = CopyReport::of(&copy);
        if let Some(why) = &report.broken
            && !broken_before
        {
            warn!(error = %why, "standby: the warm copy stopped following etcd; loading it again");
        }
        broken_before = report.broken.is_some();
        let (tree, key, value) = (tree.clone(), advertise.clone(), serde_json::to_vec(&report).unwrap_or_default());
        match tokio::task::spawn_blocking(move || tree.insert(key.as_bytes(), &value)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "standby: reporting the copy's progress failed"),
            Err(e) => warn!(error = %e, "standby: reporting the copy's progress failed"),
        }
    }
    let _ = tokio::task::spawn_blocking(move || tree.remove(advertise.as_bytes())).await;
}

/// Every standby's last report, by address (unreadable ones left out, named in the log).
pub fn reports(store: &EtcdStore) -> Result<std::collections::HashMap<String, CopyReport>, presage_store::StoreError> {
    let tree = store.tree(STANDBYS_TREE)?;
    let mut out = std::collections::HashMap::new();
    for (k, v) in tree.scan_prefix(b"", Order::Ascending, usize::MAX)? {
        let address = String::from_utf8_lossy(&k).into_owned();
        match serde_json::from_slice::<CopyReport>(&v) {
            Ok(r) => {
                out.insert(address, r);
            }
            Err(e) => warn!(standby = %address, error = %e, "a standby's copy report is unreadable"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_serves_reads_of_the_store_and_nothing_else() {
        for (m, p) in [
            (Method::POST, "/presage.v1.Operator/ListPlans"),
            (Method::POST, "/presage.v1.Operator/ClusterStatus"),
            (Method::GET, "/v1/plans"),
            (Method::GET, "/v1/plans/12"),
            (Method::GET, "/v1/vms/web-1/config"),
            (Method::GET, "/v1/cluster"),
            (Method::GET, "/v1/rollouts/"),
        ] {
            assert!(serves(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "/presage.v1.AgentLink/Session"),
            (Method::POST, "/presage.v1.Operator/MoveVm"),
            (Method::POST, "/presage.v1.Operator/Status"),
            (Method::POST, "/v1/vms/web-1/resize"),
            (Method::POST, "/v1/vms/web-1/config/rollback"),
            (Method::GET, "/v1/status"),
            (Method::GET, "/v1/vms/web-1"),
            (Method::GET, "/v1/plans/12/rollback"),
            (Method::GET, "/metrics"),
            (Method::GET, "/"),
        ] {
            assert!(!serves(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn a_copy_report_reads_back_and_tells_its_lag_from_its_age() {
        let r = CopyReport { revision: 42, keys: 7, confirmed_unix_ms: 1_000, written_unix_ms: 1_200, broken: None };
        let back: CopyReport = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!((r.lag_ms(), r.age_ms(1_750)), (200, 550));
        assert_eq!(r.age_ms(900), 0, "a clock behind the standby's reads as no age, not a wrap-around");
    }
}
