//! The REST/JSON API, served by axum on the gRPC listener (one port, the same mutual TLS,
//! HTTP/1.1 or HTTP/2). The caller is the identity its client certificate carries: viewers read,
//! operators act (moves), admins manage (dependency declarations). Every refusal is logged with
//! the caller; errors are JSON with a code, the field at fault where there is one, and the reason.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use presage_protocol::tls::Access;
use serde::Deserialize;
use tracing::{Instrument, info, info_span, warn};

use crate::api_error::{ApiError, answers, caller};
use crate::ecosystem::{RegisterError, ViewFilter};
use crate::manual_move::MoveRefusal;
use crate::shared::Shared;
use crate::transport::PeerInfo;

/// The API's routes over `shared`: the calls written here, the REST twins of the operator RPCs
/// ([`crate::rest_gateway`]), and `/metrics` (Prometheus' customary path, unversioned).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/dependencies", post(set_dependencies))
        .route("/v1/ecosystem", get(ecosystem))
        .route("/v1/ecosystem/learned", get(learned))
        .route("/v1/vms/{vm_id}/dependencies", get(vm_dependencies))
        .route("/v1/migrate", post(migrate))
        .route("/v1/leases", get(leases).post(grant_lease))
        .route("/v1/leases/{id}", axum::routing::delete(revoke_lease))
        .route("/v1/vms/{vm_id}/resize", post(resize_vm))
        .route("/v1/vms/{vm_id}/config", get(config_history))
        .route("/v1/vms/{vm_id}/config/rollback", post(config_rollback))
        .route("/v1/sizing/pass", get(sizing_pass))
        .with_state(shared.clone())
        .merge(crate::rest_gateway::router(shared.clone()))
        .merge(crate::web::router(shared))
        // Declarations for a whole fleet come in one body.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// `GET /metrics`: the coordinator's Prometheus metrics (OpenMetrics text).
async fn metrics(State(shared): State<Arc<Shared>>, peer: Option<Extension<PeerInfo>>) -> Result<Response, ApiError> {
    caller(peer, Access::Scrape, "scrape metrics")?;
    let text = crate::metrics::render(&shared);
    Ok(([(axum::http::header::CONTENT_TYPE, presage_protocol::metrics_endpoint::CONTENT_TYPE)], text).into_response())
}

/// A JSON body, or a 400 that names what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("the body is not JSON: {e}"));
        err.field = Some(format!("line {} column {}", e.line(), e.column()));
        err
    })?;
    crate::rest_gateway::integral_numbers(&mut value);
    serde_json::from_value(value).map_err(|e| {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "bad_json", format!("the body is not what this call takes: {e}"));
        err.field = Some(crate::rest_gateway::field_in_message(&e.to_string()).unwrap_or_else(|| "body".into()));
        err
    })
}

/// `POST /dependencies`: one declaration or an array of them, registering or replacing each
/// VM's. Admins only.
async fn set_dependencies(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    bytes: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Manage, "register dependencies")?;
    let _span = info_span!("rest.dependencies", caller = %who.identity).entered();
    let declarations = crate::ecosystem::parse_declarations(&bytes).map_err(|(field, reason)| {
        let code = if field.starts_with('$') { "bad_declaration" } else { "bad_json" };
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, code, reason);
        err.field = Some(field);
        err
    })?;
    let registered = {
        let state = shared.state();
        shared.ecosystem.register(declarations.clone(), &state)
    };
    match registered {
        Ok(total) => {
            info!(declarations = declarations.len(), total, "dependencies registered");
            Ok(Json(serde_json::json!({
                "registered": declarations.iter().map(|d| d.vm_name.clone()).collect::<Vec<_>>(),
                "total": total,
            })))
        }
        Err(RegisterError::Refused(problems)) => {
            warn!(problems = problems.len(), "dependencies refused");
            let first = problems.first();
            // Declarations of VMs that do not exist name nothing to register: 404. Any other
            // problem (a cycle, a requirement no host can meet) is the declarations' own: 400.
            let unknown_only = problems.iter().all(|p| p.field.as_deref() == Some("vm_name") && p.reason.starts_with("no VM of this name"));
            let status = if unknown_only { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
            let mut err = ApiError::new(status, "refused", first.map_or_else(|| "refused".to_string(), |p| p.to_string()));
            err.field = first.and_then(|p| p.field.clone());
            err.problems = problems.iter().map(|p| serde_json::to_value(p).expect("serialisable")).collect();
            Err(err)
        }
        Err(RegisterError::Store(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EcosystemQuery {
    vm: Option<String>,
    app: Option<String>,
}

/// `GET /ecosystem[?vm=ID][&app=NAME]`: nodes with score and status, edges with weight and
/// satisfaction. Scored and written to JSON on a blocking thread.
async fn ecosystem(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    query: Result<Query<EcosystemQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = caller(peer, Access::Read, "read the ecosystem")?;
    let span = info_span!("rest.ecosystem", caller = %who.identity);
    let Query(q) = query.map_err(|e| {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text());
        err.field = Some("query".into());
        err
    })?;
    let json = scored(&shared, ViewFilter { vm: q.vm, application: q.app }, |v| serde_json::to_vec(&v).expect("a view serialises"))
        .instrument(span)
        .await;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// The ecosystem over the observed state: the state's lock is held only to read where VMs are;
/// the scoring runs on a blocking thread.
pub async fn view(shared: &Arc<Shared>, filter: ViewFilter) -> crate::ecosystem::EcosystemView {
    scored(shared, filter, |v| v).await
}

/// Scores the ecosystem as [`view`] does and hands the view to `then` on the same blocking thread.
async fn scored<T: Send + 'static>(
    shared: &Arc<Shared>,
    filter: ViewFilter,
    then: impl FnOnce(crate::ecosystem::EcosystemView) -> T + Send + 'static,
) -> T {
    let in_flight = crate::applier::vms_in_flight(shared);
    let facts = shared.ecosystem.facts(&shared.state());
    let shared = shared.clone();
    let work = tokio::task::spawn_blocking(move || then(shared.ecosystem.view(&facts, &|vm| in_flight.contains(vm), &filter)));
    work.await.expect("the ecosystem view does not panic")
}

/// `GET /ecosystem/learned`: what the dependency feedback loop learned from repair moves.
async fn learned(State(shared): State<Arc<Shared>>, peer: Option<Extension<PeerInfo>>) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Read, "read what the ecosystem learned")?;
    let _span = info_span!("rest.ecosystem_learned", caller = %who.identity).entered();
    let (learned, config) = shared.ecosystem.learned();
    Ok(Json(serde_json::json!({
        "noise_floor": config.noise_floor,
        "step": config.step,
        "types": learned.types,
        "recent": learned.recent,
        "unattributed": learned.unattributed,
    })))
}

/// `GET /vms/{id}/dependencies`: the VM's declaration, standing and edges.
async fn vm_dependencies(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Read, "read a VM's dependencies")?;
    let span = info_span!("rest.vm_dependencies", caller = %who.identity, vm = %id);
    let Some(declaration) = shared.ecosystem.declaration(&id) else {
        let mut err = ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no declaration names a VM {id:?}"));
        err.field = Some("id".into());
        return Err(err);
    };
    let v = view(&shared, ViewFilter { vm: Some(id.clone()), application: None }).instrument(span).await;
    Ok(Json(serde_json::json!({
        "declaration": declaration,
        "node": v.nodes.first(),
        "edges": v.edges().collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    vm: String,
    to: String,
    /// Move even if it breaks required dependencies (logged).
    #[serde(default)]
    force: bool,
}

/// `POST /migrate {"vm": ID, "to": HOST}`: plans the move and starts it; answers with the plan.
async fn migrate(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    bytes: axum::body::Bytes,
) -> Result<Json<crate::plan_journal::PlanRecord>, ApiError> {
    let who = caller(peer, Access::Act, "migrate VMs")?;
    let b: MigrateBody = body(&bytes)?;
    let _span = info_span!("rest.migrate", caller = %who.identity, vm = %b.vm, to = %b.to).entered();
    let plan = crate::manual_move::plan_and_start(&shared, &b.vm, &b.to, &who.identity.name, b.force).map_err(|e| {
        let reason = e.to_string();
        let (status, code, field) = match e {
            MoveRefusal::UnknownHost(_) => (StatusCode::NOT_FOUND, "not_found", Some("to")),
            MoveRefusal::UnknownVm(_) => (StatusCode::NOT_FOUND, "not_found", Some("vm")),
            MoveRefusal::AlreadyThere { .. } => (StatusCode::CONFLICT, "already_there", Some("to")),
            MoveRefusal::InFlight(_) => (StatusCode::CONFLICT, "in_flight", Some("vm")),
            MoveRefusal::BreaksRequired(_) => (StatusCode::CONFLICT, "breaks_required", Some("to")),
            MoveRefusal::Journal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "journal", None),
        };
        let mut err = ApiError::new(status, code, reason);
        err.field = field.map(Into::into);
        err
    })?;
    Ok(Json(plan))
}

fn sizing_error(e: crate::sizing_ops::SizingOpError) -> ApiError {
    use crate::sizing_ops::SizingOpError as E;
    let reason = e.to_string();
    let (status, code, field) = match &e {
        E::Invalid { field, .. } => (StatusCode::BAD_REQUEST, "invalid", Some((*field).to_string())),
        E::NotColocated { .. } => (StatusCode::BAD_REQUEST, "not_colocated", Some("lender".into())),
        E::UnknownVm(_) => (StatusCode::NOT_FOUND, "not_found", Some("vm".into())),
        E::UnknownHost(_) => (StatusCode::NOT_FOUND, "not_found", Some("host".into())),
        E::UnknownLease(_) => (StatusCode::NOT_FOUND, "not_found", Some("id".into())),
        E::UnknownVersion(_) => (StatusCode::NOT_FOUND, "not_found", Some("version".into())),
        E::Agent { .. } => (StatusCode::SERVICE_UNAVAILABLE, "agent_unavailable", None),
        E::Versions(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store", None),
    };
    let mut err = ApiError::new(status, code, reason);
    err.field = field;
    err
}

/// The agent's answer: 200 with its state when it admitted the request, 409 with its reason
/// (and its state) when it refused.
fn sizing_answer(r: presage_protocol::pb::SizingResponse) -> Result<Json<serde_json::Value>, ApiError> {
    let mut v = presage_protocol::sizing_wire::state_json(&r.host_id, r.state.as_ref());
    if r.accepted {
        return Ok(Json(v));
    }
    let mut err = ApiError::new(StatusCode::CONFLICT, "refused", format!("the agent on {} refused: {}", r.host_id, r.refusal));
    v["host"] = r.host_id.into();
    err.problems.push(v);
    Err(err)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeBody {
    cpu_cores: f64,
    memory_mib: f64,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    disk_bytes_per_s: Option<f64>,
    #[serde(default)]
    net_bytes_per_s: Option<f64>,
}

/// `POST /vms/{id}/resize {"cpu_cores", "memory_mib", "dry_run"?, "disk_bytes_per_s"?,
/// "net_bytes_per_s"?}` (operator).
async fn resize_vm(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Act, "resize VMs")?;
    let b: ResizeBody = body(&bytes)?;
    let req = presage_protocol::pb::ResizeVmRequest {
        vm_id: id,
        cpu_cores: b.cpu_cores,
        memory_mib: b.memory_mib,
        dry_run: b.dry_run,
        disk_bytes_per_s: b.disk_bytes_per_s,
        net_bytes_per_s: b.net_bytes_per_s,
    };
    sizing_answer(crate::sizing_ops::resize(&shared, req, &who.identity.name).await.map_err(sizing_error)?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    limit: Option<usize>,
}

/// `GET /vms/{id}/config[?limit=N]`: the VM's configuration versions, newest first (viewer).
async fn config_history(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller(peer, Access::Read, "read configuration versions")?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let versions = shared
        .versions
        .history(&id, q.limit.unwrap_or(100).min(1000))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string()))?;
    Ok(Json(serde_json::to_value(versions).unwrap_or_default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /vms/{id}/config/rollback {"version", "dry_run"?}` (operator): asks again for an old
/// version's configuration.
async fn config_rollback(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Act, "roll configurations back")?;
    let b: RollbackBody = body(&bytes)?;
    let (out, _) =
        crate::sizing_ops::rollback_config(&shared, &id, b.version, b.dry_run, &who.identity.name).await.map_err(sizing_error)?;
    sizing_answer(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeasesQuery {
    host: Option<String>,
}

/// `GET /leases[?host=H]`: every host's leases and resizes (viewer).
async fn leases(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    query: Result<Query<LeasesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller(peer, Access::Read, "read leases")?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let r = crate::sizing_ops::leases(&shared, q.host.as_deref().unwrap_or("")).map_err(sizing_error)?;
    Ok(Json(serde_json::Value::Array(
        r.hosts.iter().map(|h| presage_protocol::sizing_wire::state_json(&h.host_id, h.state.as_ref())).collect(),
    )))
}

/// `GET /sizing/pass`: the sizing pass's last proposals and what came of them.
async fn sizing_pass(State(shared): State<Arc<Shared>>, peer: Option<Extension<PeerInfo>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller(peer, Access::Read, "read the sizing pass")?;
    let pass = shared.sizing_pass.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match pass {
        Some(p) => Ok(Json(presage_protocol::sizing_wire::pass_json(&p))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no_sizing_pass", "no sizing pass has run yet (or [sizing] mode is off)")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    #[serde(default)]
    lender: String,
    borrower: String,
    resource: String,
    amount: f64,
    duration_s: u64,
    #[serde(default)]
    reason: String,
}

/// `POST /leases {"borrower", "lender"?, "resource", "amount", "duration_s", "reason"?}`
/// (operator).
async fn grant_lease(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    bytes: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Act, "grant leases")?;
    let b: GrantBody = body(&bytes)?;
    let req = presage_protocol::pb::GrantLeaseRequest {
        lender: b.lender,
        borrower: b.borrower,
        resource: b.resource,
        amount: b.amount,
        duration_s: b.duration_s,
        reason: b.reason,
    };
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    sizing_answer(crate::sizing_ops::grant(&shared, req, &who.identity.name, now_ms).await.map_err(sizing_error)?)
}

/// `DELETE /leases/{id}` (operator).
async fn revoke_lease(
    State(shared): State<Arc<Shared>>,
    peer: Option<Extension<PeerInfo>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(peer, Access::Act, "revoke leases")?;
    sizing_answer(crate::sizing_ops::revoke(&shared, &id, &who.identity.name).await.map_err(sizing_error)?)
}

/// `GET /openapi.json`: the API's OpenAPI 3.1 document (any person role).
async fn openapi(peer: Option<Extension<PeerInfo>>) -> Result<Json<serde_json::Value>, ApiError> {
    caller(peer, Access::Read, "read the API description")?;
    Ok(Json(openapi_document()))
}

/// The declaration format's JSON Schema as OpenAPI components: `Declaration`, and each of its
/// `$defs` as `Declaration.NAME` (references rewritten to match).
fn declaration_schemas() -> serde_json::Map<String, serde_json::Value> {
    let text = presage_decide::ecosystem::declaration::DECLARATION_SCHEMA.replace("\"#/$defs/", "\"#/components/schemas/Declaration.");
    let mut schema: serde_json::Value = serde_json::from_str(&text).expect("the declaration schema is JSON");
    let mut out = serde_json::Map::new();
    if let Some(serde_json::Value::Object(defs)) = schema.as_object_mut().and_then(|o| o.remove("$defs")) {
        for (name, def) in defs {
            out.insert(format!("Declaration.{name}"), def);
        }
    }
    if let Some(o) = schema.as_object_mut() {
        o.remove("$schema");
        o.remove("$id");
    }
    out.insert("Declaration".into(), schema);
    out
}

/// The OpenAPI document of [`router`]'s routes.
pub fn openapi_document() -> serde_json::Value {
    let answers = |ok: &str, codes: &[(&str, &str)]| {
        let codes: Vec<(u16, &str)> = codes.iter().filter_map(|(c, w)| Some((c.parse().ok()?, *w))).collect();
        let mut a = answers("", &codes);
        a["200"] = serde_json::json!({"description": ok, "content": {"application/json": {"schema": {}}}});
        a
    };
    let denied = [("401", "no client certificate"), ("403", "the certificate's role may not")];
    let io_limit = |over: &str| {
        serde_json::json!({"description": format!("A limit in bytes per second {over}; 0 removes it; absent, left as it is"),
            "anyOf": [{"const": 0}, {"type": "number", "minimum": crate::sizing_ops::MIN_IO_LIMIT}]})
    };
    let mut doc = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "presage coordinator", "version": presage_protocol::PRESAGE_VERSION,
                 "description": "Mutual TLS: the client certificate's role (viewer, operator, admin) decides what a caller may do."},
        "paths": {
            "/v1/dependencies": {"post": {
                "summary": "Register or replace dependency declarations (admin)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
                    {"$ref": "#/components/schemas/Declaration"},
                    {"type": "array", "items": {"$ref": "#/components/schemas/Declaration"}}]}}}},
                "responses": answers("registered", &[("400", "bad JSON or refused declarations, with the field and VMs at fault"),
                    ("404", "every refused declaration names a VM that does not run in the cluster"), denied[0], denied[1]])}},
            "/v1/ecosystem": {"get": {
                "summary": "The dependency graph: nodes with score and status, edges with weight and satisfaction (viewer)",
                "parameters": [
                    {"name": "vm", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "app", "in": "query", "required": false, "schema": {"type": "string"}}],
                "responses": answers("the ecosystem", &[("400", "unknown query parameter"), denied[0], denied[1]])}},
            "/v1/ecosystem/learned": {"get": {
                "summary": "What the feedback loop learned from repair moves: each dependency type's weight and evidence, the latest observations (viewer)",
                "responses": answers("what is learned", &[denied[0], denied[1]])}},
            "/v1/vms/{vm_id}/dependencies": {"get": {
                "summary": "One VM's declaration, standing and edges (viewer)",
                "parameters": [{"name": "vm_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": answers("the VM's dependencies", &[("404", "no declaration names the VM"), denied[0], denied[1]])}},
            "/v1/migrate": {"post": {
                "summary": "Ask for a move; it goes through the executor's pre-checks and answers with the plan (operator)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["vm", "to"], "additionalProperties": false,
                    "properties": {"vm": {"type": "string", "minLength": 1}, "to": {"type": "string", "minLength": 1}, "force": {"type": "boolean"}}}}}},
                "responses": answers("the plan", &[("400", "bad JSON"), ("404", "unknown VM or host"),
                    ("409", "already there, in a move, or it would break required dependencies"), denied[0], denied[1]])}},
            "/v1/vms/{vm_id}/resize": {"post": {
                "summary": "Resize a VM (CPU quota in cores, memory balloon, I/O and network limits); the host's agent admits, defers or refuses (operator)",
                "parameters": [{"name": "vm_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["cpu_cores", "memory_mib"], "additionalProperties": false,
                    "properties": {"cpu_cores": {"type": "number", "minimum": 0.01}, "memory_mib": {"type": "number", "minimum": 64}, "dry_run": {"type": "boolean"},
                        "disk_bytes_per_s": io_limit("over all of its disks, reads and writes together"),
                        "net_bytes_per_s": io_limit("over all of its interfaces, each direction")}}}}},
                "responses": answers("the host's leases and resizes", &[("400", "bad JSON or value, with the field"), ("404", "unknown VM"),
                    ("409", "the agent refused, with why"), ("503", "the VM's agent is not connected"), denied[0], denied[1]])}},
            "/v1/vms/{vm_id}/config": {"get": {
                "summary": "The VM's configuration versions, newest first: what each set and replaced, who proposed it, why, the predicted gain, the outcome (viewer)",
                "parameters": [{"name": "vm_id", "in": "path", "required": true, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "description": "at most 1000 are answered; default 100"}}],
                "responses": answers("versions, newest first", &[("400", "unknown query parameter"), denied[0], denied[1]])}},
            "/v1/vms/{vm_id}/config/rollback": {"post": {
                "summary": "Ask again for an old version's configuration, recorded as a new version (operator)",
                "parameters": [{"name": "vm_id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["version"], "additionalProperties": false,
                    "properties": {"version": {"type": "integer", "minimum": 1, "maximum": u64::MAX}, "dry_run": {"type": "boolean"}}}}}},
                "responses": answers("the host's leases and resizes", &[("400", "bad JSON"), ("404", "unknown VM, or no such version"),
                    ("409", "the agent refused, with why"), ("503", "the VM's agent is not connected"), denied[0], denied[1]])}},
            "/v1/leases": {
                "get": {"summary": "Every host's (or one's) leases and resizes (viewer)",
                    "parameters": [{"name": "host", "in": "query", "required": false, "schema": {"type": "string"}}],
                    "responses": answers("leases and resizes per host", &[("400", "unknown query parameter"), ("404", "unknown host"), denied[0], denied[1]])},
                "post": {"summary": "Grant a lease between two VMs of one host, or from the host's free CPU (operator)",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["borrower", "resource", "amount", "duration_s"], "additionalProperties": false,
                        "properties": {"borrower": {"type": "string", "minLength": 1}, "lender": {"type": "string"}, "resource": {"enum": ["cpu", "memory"]},
                            "amount": {"type": "number", "exclusiveMinimum": 0}, "duration_s": {"type": "integer", "minimum": 1, "maximum": crate::sizing_ops::MAX_LEASE_S},
                            "reason": {"type": "string"}}}}}},
                    "responses": answers("the host's leases and resizes", &[("400", "bad JSON or value, or VMs of two hosts"), ("404", "unknown VM"),
                        ("409", "the agent refused, with why"), ("503", "the agent is not connected"), denied[0], denied[1]])}},
            "/v1/leases/{id}": {"delete": {
                "summary": "End a lease now (operator)",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": answers("the host's leases and resizes", &[("404", "no host reports the lease"), ("503", "the agent is not connected"), denied[0], denied[1]])}},
            "/v1/sizing/pass": {"get": {
                "summary": "The automatic sizing pass's last proposals (resizes ahead of forecasts, CPU leases), each with its reason and outcome (viewer)",
                "responses": answers("the last pass", &[("404", "no pass has run yet, or [sizing] mode is off"), denied[0], denied[1]])}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": answers("OpenAPI 3.1", &[denied[0], denied[1]])}},
            "/metrics": {"get": {"summary": "The coordinator's Prometheus metrics (metrics, viewer, operator or admin)",
                "responses": {"200": {"description": "OpenMetrics text", "content": {presage_protocol::metrics_endpoint::CONTENT_TYPE: {"schema": {"type": "string"}}}},
                    "401": {"description": "no client certificate", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    "403": {"description": "the certificate's role may not", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["code", "reason"], "properties": {
                "code": {"type": "string"}, "field": {"type": "string"}, "reason": {"type": "string"},
                "problems": {"type": "array", "items": {"type": "object"}}}}
        }}
    });
    let (paths, components) = crate::rest_gateway::openapi_paths();
    doc["components"]["schemas"].as_object_mut().expect("schemas is an object").extend(declaration_schemas());
    for (path, operations) in paths {
        let entry = doc["paths"].as_object_mut().expect("paths is an object").entry(path).or_insert_with(|| serde_json::json!({}));
        for (method, operation) in operations.as_object().expect("operations by method").clone() {
            entry[method] = operation;
        }
    }
    let mut web = crate::web::openapi_paths();
    let web_components = web.as_object_mut().and_then(|o| o.remove("components")).unwrap_or_default();
    for (path, operations) in web.as_object().expect("paths by name") {
        doc["paths"][path] = operations.clone();
    }
    let schemas = doc["components"]["schemas"].as_object_mut().expect("schemas is an object");
    schemas.extend(components);
    if let serde_json::Value::Object(w) = web_components {
        schemas.extend(w);
    }
    doc
}
