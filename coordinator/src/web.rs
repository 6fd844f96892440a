//! The web view: static pages embedded in the binary (`coordinator/web/`: the application and
//! the vendored uPlot and Cytoscape.js with their licences; nothing is fetched from the network
//! at build or run time), served at `/ui/` on the coordinator's port over the same mutual TLS —
//! a browser presents the operator's certificate (`presagectl certs issue --operator NAME
//! --p12`, imported into the browser) — and `GET /v1/overview`, the cluster in one answer
//! sized for a page: each host's capacity, use, recent demand and forecast band.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use presage_protocol::tls::Access;
use serde::Serialize;
use tracing::info_span;

use crate::api_error::{ApiError, caller};
use crate::shared::Shared;
use crate::transport::PeerInfo;

/// The embedded files: path under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../web/app.css")),
    ("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../web/vendor/uplot/uPlot.iife.min.js")),
    ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../web/vendor/uplot/uPlot.min.css")),
    ("vendor/uplot/LICENSE", "text/plain; charset=utf-8", include_bytes!("../web/vendor/uplot/LICENSE")),
    ("vendor/cytoscape/cytoscape.min.js", "text/javascript; charset=utf-8", include_bytes!("../web/vendor/cytoscape/cytoscape.min.js")),
    ("vendor/cytoscape/LICENSE", "text/plain; charset=utf-8", include_bytes!("../web/vendor/cytoscape/LICENSE")),
];

/// How many recent samples of each host's demand the overview carries.
pub const OVERVIEW_HISTORY: usize = 24;

/// The web view's routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
        .route("/v1/overview", get(overview))
        .with_state(shared)
}

async fn index(peer: Option<Extension<PeerInfo>>) -> Result<Response, ApiError> {
    serve("index.html", peer)
}

async fn asset(Path(path): Path<String>, peer: Option<Extension<PeerInfo>>) -> Result<Response, ApiError> {
    serve(&path, peer)
}

fn serve(path: &str, peer: Option<Extension<PeerInfo>>) -> Result<Response, ApiError> {
    caller(peer, Access::Read, "open the web view")?;
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return Err(ApiError::field(StatusCode::NOT_FOUND, "not_found", "path", format!("the web view has no file {path:?}")));
    };
    // The pages change with the binary: a browser revalidates them on each load.
    Ok(([(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "no-cache")], *bytes).into_response())
}

/// One host on the overview. CPU in MHz; the forecast is the sum of its VMs' quantiles per
/// step (for the p10 and p90, an envelope rather than the quantile of the sum: the band is
/// the wider for it).
#[derive(Debug, Serialize)]
pub struct HostOverview {
    pub host_id: String,
    pub reachable: bool,
    pub drained: bool,
    pub cpu_capacity_mhz: f64,
    pub cpu_used_mhz: f64,
    pub memory_capacity_bytes: u64,
    pub memory_used_bytes: u64,
    /// The host's VMs: id, name (empty where it is the id), CPU demand now (MHz).
    pub vms: Vec<(String, String, f64)>,
    /// The VMs' summed CPU demand at the host's last samples, oldest first, and when each was
    /// taken (seconds on the forecasts' clock: the trace's on simulated hosts, Unix time on
    /// real ones).
    pub history_mhz: Vec<f64>,
    pub history_at_s: Vec<f64>,
    /// When the first forecast step is (same clock).
    pub forecast_first_s: f64,
    pub forecast_p10_mhz: Vec<f64>,
    pub forecast_p50_mhz: Vec<f64>,
    pub forecast_p90_mhz: Vec<f64>,
    /// Seconds between forecast steps (0: no forecast yet).
    pub step_seconds: u32,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub hosts_total: usize,
    pub vms_total: usize,
    pub cpu_capacity_mhz: f64,
    pub cpu_used_mhz: f64,
    pub memory_capacity_bytes: u64,
    pub memory_used_bytes: u64,
    /// Moves in the last policy pass's plan, and plans being executed now.
    pub planned_moves: usize,
    pub plans_executing: usize,
    pub hosts: Vec<HostOverview>,
}

/// The overview of the observed state now.
pub fn overview_of(shared: &Shared) -> Overview {
    let drained = shared.draining.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let planned_moves = shared.plan.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map_or(0, |(_, p)| p.proposal.moves.len());
    let plans_executing = shared.executing.lock().unwrap_or_else(|p| p.into_inner()).len();
    let state = shared.state();
    let hosts: Vec<HostOverview> = state.hosts().map(|h| host_overview(h, drained.contains(&h.host_id))).collect();
    Overview {
        hosts_total: hosts.len(),
        vms_total: hosts.iter().map(|h| h.vms.len()).sum(),
        cpu_capacity_mhz: hosts.iter().map(|h| h.cpu_capacity_mhz).sum(),
        cpu_used_mhz: hosts.iter().map(|h| h.cpu_used_mhz).sum(),
        memory_capacity_bytes: hosts.iter().map(|h| h.memory_capacity_bytes).sum(),
        memory_used_bytes: hosts.iter().map(|h| h.memory_used_bytes).sum(),
        planned_moves,
        plans_executing,
        hosts,
    }
}

fn host_overview(h: &crate::state::HostRecord, drained: bool) -> HostOverview {
    let cap = &h.registration.capacity;
    let mut history = vec![0.0; OVERVIEW_HISTORY];
    let mut filled = 0;
    let (mut p10, mut p50, mut p90) = (Vec::new(), Vec::new(), Vec::new());
    let mut step_seconds = 0;
    let mut first_step = 0;
    let mut longest: Option<&std::collections::VecDeque<presage_protocol::pb::UsagePoint>> = None;
    let mut vms = Vec::with_capacity(h.vms.len());
    for v in h.vms.values() {
        let per_vcpu = if v.vcpu_mhz > 0.0 { v.vcpu_mhz } else { cap.cpu_mhz_per_core };
        let scale = v.vcpus as f64 * per_vcpu;
        // A name that is the id again is left empty: a large cluster's overview is megabytes.
        let name = if v.name == v.vm_id { String::new() } else { v.name.clone() };
        vms.push((v.vm_id.clone(), name, h.vm_cpu_demand(v)));
        // VMs on one host are sampled in the same cycle: their histories align from the end.
        if let Some(points) = h.usage_history.get(&v.vm_id) {
            let n = points.len().min(OVERVIEW_HISTORY);
            filled = filled.max(n);
            if longest.is_none_or(|l| l.len() < points.len()) {
                longest = Some(points);
            }
            for (i, p) in points.iter().skip(points.len() - n).enumerate() {
                if p.cpu_utilisation.is_finite() {
                    history[OVERVIEW_HISTORY - n + i] += p.cpu_utilisation as f64 * scale;
                }
            }
        }
        if let Some(f) = &v.forecast {
            step_seconds = step_seconds.max(f.step_seconds);
            first_step = first_step.max(f.first_step);
            for (sum, q) in [(&mut p10, &f.cpu_p10), (&mut p50, &f.cpu_p50), (&mut p90, &f.cpu_p90)] {
                if sum.len() < q.len() {
                    sum.resize(q.len(), 0.0);
                }
                for (s, x) in sum.iter_mut().zip(q) {
                    if x.is_finite() {
                        *s += *x as f64 * scale;
                    }
                }
            }
        }
    }
    let usage = h.usage.unwrap_or_default();
    let step = if step_seconds > 0 { step_seconds as f64 } else { 300.0 };
    let history_at_s: Vec<f64> = longest
        .map(|points| {
            points
                .iter()
                .skip(points.len() - filled)
                .map(|p| if p.trace_step > 0 { p.trace_step as f64 * step } else { p.sampled_at_ms as f64 / 1000.0 })
                .collect()
        })
        .unwrap_or_default();
    // To 0.1 MHz: a page needs no more, and full-precision floats were most of the bytes.
    let tenth = |v: Vec<f64>| v.into_iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<f64>>();
    // The host's demand from its VMs' (already computed above), before they are rounded.
    let cpu_used_mhz = vms.iter().map(|v| v.2).sum();
    for vm in &mut vms {
        vm.2 = (vm.2 * 10.0).round() / 10.0;
    }
    HostOverview {
        host_id: h.host_id.clone(),
        reachable: h.reachable,
        drained,
        cpu_capacity_mhz: cap.cpu_cores as f64 * cap.cpu_mhz_per_core,
        cpu_used_mhz,
        memory_capacity_bytes: cap.memory_bytes,
        memory_used_bytes: usage.memory_used_bytes,
        vms,
        history_mhz: tenth(history.split_off(OVERVIEW_HISTORY - filled)),
        history_at_s,
        forecast_first_s: first_step as f64 * step,
        forecast_p10_mhz: tenth(p10),
        forecast_p50_mhz: tenth(p50),
        forecast_p90_mhz: tenth(p90),
        step_seconds,
    }
}

/// `GET /v1/overview` (viewer): the cluster for the web view's first page.
async fn overview(State(shared): State<Arc<Shared>>, peer: Option<Extension<PeerInfo>>) -> Result<Response, ApiError> {
    let who = caller(peer, Access::Read, "read the overview")?;
    let span = info_span!("rest.overview", caller = %who.identity);
    // Summed and written on a blocking thread: a large cluster's overview is megabytes.
    let json = tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        serde_json::to_vec(&overview_of(&shared)).expect("the overview serialises")
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// The web view's part of the OpenAPI document.
pub fn openapi_paths() -> serde_json::Value {
    let mhz = serde_json::json!({"type": "array", "items": {"type": "number"}});
    serde_json::json!({
        "/v1/overview": {"get": {
            "summary": "The cluster for the web view: totals, and per host its capacity, use, VMs, recent demand and forecast band (viewer)",
            "responses": crate::api_error::answers("#/components/schemas/Overview", &[])}},
        "components": {
            "Overview": {"type": "object", "required": ["hosts_total", "vms_total", "hosts"], "properties": {
                "hosts_total": {"type": "integer"}, "vms_total": {"type": "integer"},
                "cpu_capacity_mhz": {"type": "number"}, "cpu_used_mhz": {"type": "number"},
                "memory_capacity_bytes": {"type": "integer"}, "memory_used_bytes": {"type": "integer"},
                "planned_moves": {"type": "integer"}, "plans_executing": {"type": "integer"},
                "hosts": {"type": "array", "items": {"$ref": "#/components/schemas/HostOverview"}}}},
            "HostOverview": {"type": "object", "required": ["host_id", "reachable", "drained", "vms", "history_mhz"], "properties": {
                "host_id": {"type": "string"}, "reachable": {"type": "boolean"}, "drained": {"type": "boolean"},
                "cpu_capacity_mhz": {"type": "number"}, "cpu_used_mhz": {"type": "number"},
                "memory_capacity_bytes": {"type": "integer"}, "memory_used_bytes": {"type": "integer"},
                "vms": {"type": "array", "items": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "string"}, {"type": "number"}],
                    "minItems": 3, "maxItems": 3, "description": "id, name (empty where it is the id), CPU demand now (MHz)"}},
                "history_mhz": mhz, "history_at_s": mhz, "forecast_first_s": {"type": "number"}, "forecast_p10_mhz": mhz, "forecast_p50_mhz": mhz, "forecast_p90_mhz": mhz,
                "step_seconds": {"type": "integer", "minimum": 0}}}
        }
    })
}
