//! The REST twins of the operator RPCs: `/v1/...` routes that decode a JSON body, query string
//! and path into the RPC's protobuf request (the canonical proto3 JSON mapping, proto field
//! names), call the same [`OperatorService`] method gRPC callers reach (same role check, same
//! tracing span, same validation), and answer with the response message as JSON. The table
//! below is the one place a twin is declared; the OpenAPI document's paths for these routes
//! and their schemas are generated from it and from the protobuf descriptors.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use presage_protocol::json_schema::Schemas;
use presage_protocol::pb::operator_server::Operator;
use presage_protocol::tls::Access;
use serde_json::{Map, Value, json};

use crate::api_error::ApiError;
use crate::service::OperatorService;
use crate::shared::Shared;
use crate::transport::PeerInfo;

/// The compiled protobuf descriptors, read once.
pub static SCHEMAS: LazyLock<Schemas> = LazyLock::new(Schemas::compiled);

type Answer = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send>>;
type Call = fn(OperatorService, Value, PeerInfo) -> Answer;

/// One REST twin of an operator RPC.
pub struct Twin {
    pub method: Method,
    /// An axum path; each `{param}` is a field of the request (or renamed by `path_fields`).
    pub path: &'static str,
    /// The RPC, as the proto names it.
    pub rpc: &'static str,
    /// Fully qualified protobuf names.
    pub request: String,
    pub response: String,
    /// Fields the route itself sets (`drain`: true on `/drain`).
    pub fixed: &'static [(&'static str, FixedValue)],
    /// Path parameters that fill a field of another name (`reservation_id` → `release.id`).
    pub path_fields: &'static [(&'static str, &'static str)],
    /// The request field the JSON body is (`reserve`: the body is a `Reserve`); none: the body
    /// is the request itself.
    pub body_field: Option<&'static str>,
    /// Who may call it (the RPC checks; this is for the document).
    pub access: Access,
    pub summary: &'static str,
    /// Answers besides 200 and the role refusals, as (status, when).
    pub errors: &'static [(u16, &'static str)],
    call: Call,
}

/// A value a route sets in its request.
#[derive(Clone, Copy)]
pub enum FixedValue {
    Bool(bool),
}

impl FixedValue {
    fn json(self) -> Value {
        match self {
            FixedValue::Bool(b) => Value::Bool(b),
        }
    }
}

/// The call of the service's `$method`, decoding its request from JSON and encoding its answer.
macro_rules! rpc {
    ($method:ident) => {
        |svc: OperatorService, body: Value, peer: PeerInfo| -> Answer {
            Box::pin(async move {
                let mut request = tonic::Request::new(decode(body)?);
                request.extensions_mut().insert(peer);
                let answer = svc.$method(request).await.map_err(status_error)?;
                serde_json::to_value(answer.into_inner()).map_err(|e| {
                    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encode", format!("the answer could not be written as JSON: {e}"))
                })
            })
        }
    };
}

const NOT_CONNECTED: (u16, &str) = (503, "the host's agent is not connected or did not answer in time");
const NO_PASS_YET: (u16, &str) = (503, "no policy pass has run yet (the first runs one [policy] interval after start)");

impl Twin {
    /// A twin of `rpc` (request `presage.v1.{rpc}Request`, answer `presage.v1.{rpc}Response`,
    /// unless [`Twin::answer`] says otherwise) at `method path`.
    fn new(method: Method, path: &'static str, rpc: &'static str, access: Access, call: Call, summary: &'static str) -> Twin {
        Twin {
            method,
            path,
            rpc,
            request: format!("presage.v1.{rpc}Request"),
            response: format!("presage.v1.{rpc}Response"),
            fixed: &[],
            path_fields: &[],
            body_field: None,
            access,
            summary,
            errors: &[],
            call,
        }
    }

    fn errors(self, errors: &'static [(u16, &'static str)]) -> Twin {
        Twin { errors, ..self }
    }

    fn answer(self, message: &str) -> Twin {
        Twin { response: format!("presage.v1.{message}"), ..self }
    }

    fn fixed(self, fixed: &'static [(&'static str, FixedValue)]) -> Twin {
        Twin { fixed, ..self }
    }

    fn path_fields(self, path_fields: &'static [(&'static str, &'static str)]) -> Twin {
        Twin { path_fields, ..self }
    }

    fn body_field(self, field: &'static str) -> Twin {
        Twin { body_field: Some(field), ..self }
    }
}

/// Every twin.
pub fn twins() -> &'static [Twin] {
    use Access::{Act, Read};
    use Method as M;
    static TWINS: LazyLock<Vec<Twin>> = LazyLock::new(|| {
        vec![
            Twin::new(M::GET, "/v1/status", "Status", Read, rpc!(status),
                "Cluster summary: hosts, VMs, capacity and use, the policy and its last proposal"),
            Twin::new(M::GET, "/v1/cluster", "ClusterStatus", Read, rpc!(cluster_status),
                "The coordinators and the store: who leads at which epoch, who stands by, each etcd member's health"),
            Twin::new(M::GET, "/v1/hosts", "ListHosts", Read, rpc!(list_hosts), "Hosts with capacity, usage, liveness and their agents' figures"),
            Twin::new(M::GET, "/v1/vms", "ListVms", Read, rpc!(list_vms),
                "VMs with their latest samples, recent usage and forecast (p10/p50/p90); `host_id` keeps one host's, `vm_id` one VM (id or name)")
                .errors(&[(404, "no such host, or no VM of that id or name")]),
            Twin::new(M::GET, "/v1/vms/{vm_id}", "ListVms", Read, rpc!(list_vms),
                "One VM (id or name; several when a name is on several hosts): samples, usage history, forecast")
                .errors(&[(404, "no VM of that id or name")]),
            Twin::new(M::GET, "/v1/vms/{vm_id}/explain", "Explain", Read, rpc!(explain),
                "Why the VM is where it is, or why the plan moves it: its predicted demand and every host ranked for it, each scorer's part")
                .errors(&[(404, "no such VM"), NO_PASS_YET]),
            Twin::new(M::GET, "/v1/plan", "GetPlan", Read, rpc!(get_plan),
                "The last policy pass's plan: ordered moves with reason, benefit, cost and the scores of the chosen host and the runner-up"),
            Twin::new(M::POST, "/v1/place", "Place", Read, rpc!(place),
                "Dry run: every host ranked for a new VM of this shape, with explanations; nothing is reserved")
                .errors(&[NO_PASS_YET, (409, "no host is known yet")]),
            Twin::new(M::POST, "/v1/hosts/{host_id}/reservations", "ReserveOnHost", Act, rpc!(reserve_on_host),
                "Ask the host's agent to hold a reservation; it admits or refuses it by its own rule and answers with what it holds")
                .body_field("reserve")
                .errors(&[(404, "no such host"), NOT_CONNECTED]),
            Twin::new(M::DELETE, "/v1/hosts/{host_id}/reservations/{reservation_id}", "ReserveOnHost", Act, rpc!(reserve_on_host),
                "Give a reservation up")
                .path_fields(&[("reservation_id", "release.id")])
                .errors(&[(404, "no such host"), NOT_CONNECTED]),
            Twin::new(M::POST, "/v1/hosts/{host_id}/drain", "SetDrain", Act, rpc!(set_drain),
                "Mark the host as taking no VMs; the plan moves every VM off it (automatic mode applies it)")
                .fixed(&[("drain", FixedValue::Bool(true))])
                .errors(&[(404, "no such host")]),
            Twin::new(M::POST, "/v1/hosts/{host_id}/undrain", "SetDrain", Act, rpc!(set_drain), "Clear the host's drain mark")
                .fixed(&[("drain", FixedValue::Bool(false))])
                .errors(&[(404, "no such host")]),
            Twin::new(M::POST, "/v1/hosts/{host_id}/ping", "PingHost", Read, rpc!(ping_host),
                "Send a ping through the host's agent stream and wait for its answer (`timeout_ms`: 0 for 10 s, or 100 to 60000)")
                .errors(&[(404, "no such host"), NOT_CONNECTED, (504, "the agent did not answer within the timeout")]),
            Twin::new(M::GET, "/v1/hosts/{host_id}/vms/{vm_id}", "InspectVm", Read, rpc!(inspect_vm),
                "Ask the host's hypervisor, through its agent, where the VM is now: present, running, migrating away, or an incoming migration's instance")
                .errors(&[(404, "no such host"), NOT_CONNECTED]),
            Twin::new(M::GET, "/v1/plans", "ListPlans", Read, rpc!(list_plans),
                "The executor's journal: recent plans (or the one `plan_id` names), each move's step, outcome, duration and live progress")
                .errors(&[(404, "no such plan")]),
            Twin::new(M::GET, "/v1/plans/{plan_id}", "ListPlans", Read, rpc!(list_plans), "One plan of the journal")
                .errors(&[(404, "no such plan")]),
            Twin::new(M::POST, "/v1/plans/{plan_id}/rollback", "RollbackPlan", Act, rpc!(rollback_plan),
                "Reverse a finished plan's done moves, last first, as a new plan")
                .errors(&[(404, "no such plan"), (409, "the plan is still running or has nothing to reverse")]),
            Twin::new(M::POST, "/v1/vms/{vm_id}/move", "MoveVm", Act, rpc!(move_vm),
                "Move the VM to `to_host` now, as a one-move plan through the executor (pre-checks, reservation, live migration, post-checks)")
                .errors(&[(404, "no such VM or host"), (409, "already there, already moving, or it would break a required dependency")]),
            Twin::new(M::GET, "/v1/anomalies", "ListAnomalies", Read, rpc!(list_anomalies),
                "The anomalies the agents' detectors reported, newest first (`vm_id` keeps one VM's)"),
            Twin::new(M::GET, "/v1/vms/{vm_id}/anomalies", "ListAnomalies", Read, rpc!(list_anomalies), "One VM's anomalies, newest first"),
            Twin::new(M::GET, "/v1/rollouts", "ListRollouts", Read, rpc!(list_rollouts), "The newest staged rollouts, where each stands, every step"),
            Twin::new(M::POST, "/v1/rollouts", "StartRollout", Act, rpc!(start_rollout),
                "Roll a plan of resizes (and moves) out in stages: a canary, watched against the VMs still waiting, then the rest, or everything put back")
                .answer("RolloutView")
                .errors(&[(400, "an empty or bad plan"), (404, "an unknown VM or host"), (409, "a VM of the plan is in another open rollout")]),
            Twin::new(M::POST, "/v1/rollouts/{id}/abort", "AbortRollout", Act, rpc!(abort_rollout), "Put every applied change of a rollout back")
                .answer("RolloutView")
                .errors(&[(404, "no such rollout"), (409, "the rollout has finished")]),
            Twin::new(M::POST, "/v1/optimise", "OptimiseCluster", Read, rpc!(optimise_cluster),
                "Run the genetic optimiser over the cluster: a plan of resizes and moves with reasons and the gain per goal (a dry run; `apply` starts a rollout and needs an operator). `time_limit_s` (0: 10 s) is cut to the coordinator's [optimiser] max_request_time")
                .errors(&[(400, "a bad time limit or canary"), (404, "`last_pass`: no background pass has run")]),
        ]
    });
    &TWINS
}

/// The twins' routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<Shared>>> = BTreeMap::new();
    for (index, twin) in twins().iter().enumerate() {
        let filter = MethodFilter::try_from(twin.method.clone()).expect("twins use GET, POST and DELETE");
        let handler =
            move |State(shared): State<Arc<Shared>>,
                  peer: Option<Extension<PeerInfo>>,
                  path: Path<BTreeMap<String, String>>,
                  RawQuery(query): RawQuery,
                  body: axum::body::Bytes| async move { answer(&twins()[index], shared, peer, path.0, query, body).await };
        let route = by_path.remove(twin.path).unwrap_or_default();
        by_path.insert(twin.path, route.merge(on(filter, handler)));
    }
    by_path.into_iter().fold(Router::new(), |r, (path, route)| r.route(path, route)).with_state(shared)
}

async fn answer(
    twin: &Twin,
    shared: Arc<Shared>,
    peer: Option<Extension<PeerInfo>>,
    path: BTreeMap<String, String>,
    query: Option<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(Extension(peer)) = peer else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "no authenticated peer on this connection").into_response();
    };
    let request = match request_json(twin, &path, query.as_deref(), &body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let started = std::time::Instant::now();
    let result = (twin.call)(OperatorService { shared: shared.clone() }, request, peer).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    shared.metrics.api_request.observe(twin.rpc, outcome, started.elapsed());
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The request message's JSON: the body's object (or `{}`), then the query string's fields,
/// then the path's, then the route's own; a field given twice with two values is refused.
fn request_json(twin: &Twin, path: &BTreeMap<String, String>, query: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let mut fields: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else if twin.method == Method::DELETE {
        return Err(ApiError::field(StatusCode::BAD_REQUEST, "bad_json", "body", "this call takes no body: the path says what to delete"));
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => match twin.body_field {
                Some(f) => Map::from_iter([(f.to_string(), Value::Object(m))]),
                None => m,
            },
            Ok(_) => return Err(ApiError::field(StatusCode::BAD_REQUEST, "bad_json", "body", "the body must be a JSON object")),
            Err(e) => {
                return Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    "body",
                    format!("the body is not JSON: {e} (line {} column {})", e.line(), e.column()),
                ));
            }
        }
    };
    let put = |fields: &mut Map<String, Value>, name: &str, value: Value, from: &str| -> Result<(), ApiError> {
        let (head, tail) = name.split_once('.').map_or((name, None), |(h, t)| (h, Some(t)));
        let slot = match tail {
            None => fields.entry(head.to_string()).or_insert(Value::Null),
            Some(t) => {
                let inner = fields.entry(head.to_string()).or_insert_with(|| json!({}));
                let Value::Object(inner) = inner else {
                    return Err(ApiError::field(StatusCode::BAD_REQUEST, "conflict", head, format!("{head} must be an object")));
                };
                inner.entry(t.to_string()).or_insert(Value::Null)
            }
        };
        if !slot.is_null() && *slot != value {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "conflict",
                name,
                format!("{name} is given in the body and in the {from} with two values"),
            ));
        }
        *slot = value;
        Ok(())
    };
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        for (key, raw) in form_pairs(query) {
            let known_elsewhere = path.contains_key(&key) || twin.fixed.iter().any(|(f, _)| *f == key);
            let value = match SCHEMAS.typed_value(&twin.request, &key, &raw) {
                Some(v) if !known_elsewhere => v,
                _ => {
                    let known = SCHEMAS.field_names(&twin.request).into_iter().filter(|f| !path.contains_key(f)).collect::<Vec<_>>();
                    return Err(ApiError::field(
                        StatusCode::BAD_REQUEST,
                        "bad_query",
                        &key,
                        format!(
                            "unknown query parameter {key:?} (this call takes: {})",
                            if known.is_empty() { "none".into() } else { known.join(", ") }
                        ),
                    ));
                }
            };
            put(&mut fields, &key, value, "query string")?;
        }
    }
    for (param, raw) in path {
        let field = twin.path_fields.iter().find(|(p, _)| p == param).map_or(param.as_str(), |(_, f)| f);
        let (message, leaf) = match field.split_once('.') {
            Some((_, leaf)) => (nested_message(&twin.request, field), leaf),
            None => (twin.request.to_string(), field),
        };
        let value = SCHEMAS.typed_value(&message, leaf, raw).unwrap_or_else(|| Value::String(raw.clone()));
        put(&mut fields, field, value, "path")?;
    }
    for (name, value) in twin.fixed {
        put(&mut fields, name, value.json(), "route")?;
    }
    Ok(Value::Object(fields))
}

/// The message type of `field`'s head (`release.id` in `ReserveOnHostRequest` → `Release`).
fn nested_message(request: &str, field: &str) -> String {
    let head = field.split('.').next().unwrap_or(field);
    let package = request.rsplit_once('.').map_or("", |(p, _)| p);
    // The proto's convention: a message field is named after its type in snake case.
    let type_name: String = head.split('_').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    format!("{package}.{type_name}")
}

/// `a=1&b=x%20y` as pairs, percent- and plus-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Numbers with no fractional part written as floats (`5.0`, `1e3`) as the integers they are:
/// JSON Schema counts them as integers, and an integer field takes them. Floats beyond the
/// 64-bit integers stay as they are (and are refused by integer fields).
pub fn integral_numbers(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() == 0.0 {
                if f >= 0.0 && f < u64::MAX as f64 {
                    *v = Value::from(f as u64);
                } else if f < 0.0 && f >= i64::MIN as f64 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// A protobuf request from its JSON, or a 400 naming the field at fault.
fn decode<T: serde::de::DeserializeOwned>(mut json: Value) -> Result<T, ApiError> {
    integral_numbers(&mut json);
    let whole = serde_json::from_value::<T>(json.clone());
    whole.map_err(|e| {
        // Which field: decode each alone; the first that fails is the one at fault.
        let field = match &json {
            Value::Object(m) => {
                m.iter().find(|(k, v)| serde_json::from_value::<T>(json!({ k.as_str(): v })).is_err()).map(|(k, _)| k.clone())
            }
            _ => None,
        };
        let reason = match &field {
            Some(f) => format!("{f}: {e}"),
            None => e.to_string(),
        };
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "bad_request", reason);
        err.field = field.or_else(|| field_in_message(&e.to_string()));
        err
    })
}

/// The field serde's message names: "unknown field `x`" or "missing field `x`".
pub fn field_in_message(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1).or_else(|| message.split("missing field `").nth(1))?;
    Some(rest.split('`').next()?.to_string())
}

/// The gRPC status metadata key a handler sets to name the request field at fault.
pub const FIELD_METADATA: &str = "presage-field";

/// An RPC's refusal as the API answers it: the gRPC code's HTTP twin, the message, the field.
fn status_error(s: tonic::Status) -> ApiError {
    use tonic::Code;
    let (status, code) = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => (StatusCode::BAD_REQUEST, "invalid"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        Code::FailedPrecondition | Code::Aborted => (StatusCode::CONFLICT, "conflict"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "exhausted"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        Code::Cancelled => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    let mut err = ApiError::new(status, code, s.message().to_string());
    err.field = s.metadata().get(FIELD_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string);
    err
}

/// A `Status::invalid_argument` that names the request field at fault (the REST answer's
/// `field`).
pub fn invalid_field(field: &str, message: impl Into<String>) -> tonic::Status {
    with_field(tonic::Status::invalid_argument(message), field)
}

/// A `Status::not_found` that names the request field whose value names nothing.
pub fn not_found_field(field: &str, message: impl Into<String>) -> tonic::Status {
    with_field(tonic::Status::not_found(message), field)
}

fn with_field(mut s: tonic::Status, field: &str) -> tonic::Status {
    if let Ok(v) = field.parse() {
        s.metadata_mut().insert(FIELD_METADATA, v);
    }
    s
}

/// What the service checks of a request message's fields beyond their protobuf type, as JSON
/// Schema keywords merged into the field's input schema (`"required": true` lists the field as
/// required; a `type` replaces the field's schema). The service's checks are the authority;
/// this is how the OpenAPI document tells clients, and the contract test holds the two together.
const INPUT_BOUNDS: &[(&str, &str, &str)] = &[
    ("presage.v1.PlaceRequest", "vcpus", r#"{"minimum": 1, "maximum": 1024, "required": true}"#),
    ("presage.v1.PlaceRequest", "memory_mib", r#"{"minimum": 0}"#),
    ("presage.v1.PlaceRequest", "cpu_mhz_per_vcpu", r#"{"minimum": 0}"#),
    ("presage.v1.Reserve", "id", r#"{"minLength": 1, "maxLength": 256, "required": true}"#),
    ("presage.v1.Reserve", "vm_id", r#"{"minLength": 1, "required": true}"#),
    ("presage.v1.Reserve", "cpu_mhz", r#"{"minimum": 0}"#),
    ("presage.v1.Reserve", "memory_mib", r#"{"minimum": 0}"#),
    ("presage.v1.Reserve", "ttl_ms", r#"{"type": "integer", "minimum": 1, "maximum": 604800000, "required": true}"#),
    ("presage.v1.PingHostRequest", "timeout_ms", r#"{"type": "integer", "anyOf": [{"const": 0}, {"minimum": 100, "maximum": 60000}]}"#),
    ("presage.v1.MoveVmRequest", "to_host", r#"{"minLength": 1, "required": true}"#),
    ("presage.v1.StartRolloutRequest", "changes", r#"{"minItems": 1, "required": true}"#),
    ("presage.v1.StartRolloutRequest", "canary_fraction", r#"{"exclusiveMinimum": 0, "maximum": 1, "required": true}"#),
    ("presage.v1.StartRolloutRequest", "watch_s", r#"{"type": "integer", "minimum": 1, "maximum": 604800, "required": true}"#),
    ("presage.v1.PlannedResize", "vm_id", r#"{"minLength": 1, "required": true}"#),
    ("presage.v1.PlannedResize", "cpu_cores", r#"{"minimum": 0.01, "required": true}"#),
    ("presage.v1.PlannedResize", "memory_mib", r#"{"minimum": 64, "required": true}"#),
    ("presage.v1.PlannedResize", "disk_bytes_per_s", r#"{"type": "number", "anyOf": [{"const": 0}, {"minimum": 1048576}]}"#),
    ("presage.v1.PlannedResize", "net_bytes_per_s", r#"{"type": "number", "anyOf": [{"const": 0}, {"minimum": 1048576}]}"#),
    ("presage.v1.OptimiseClusterRequest", "time_limit_s", r#"{"maximum": 600}"#),
    ("presage.v1.OptimiseClusterRequest", "canary_fraction", r#"{"minimum": 0, "maximum": 1}"#),
];

/// Input components with [`INPUT_BOUNDS`] applied.
fn bounded(mut components: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    for (message, field, bound) in INPUT_BOUNDS {
        let Some(schema) = components.get_mut(&Schemas::reference(message, true)) else { continue };
        let bound: Value = serde_json::from_str(bound).expect("INPUT_BOUNDS are JSON");
        let mut bound = bound.as_object().expect("INPUT_BOUNDS are objects").clone();
        if bound.remove("required") == Some(Value::Bool(true)) {
            let required = schema.as_object_mut().expect("a message schema").entry("required").or_insert_with(|| json!([]));
            required.as_array_mut().expect("required is a list").push(json!(field));
        }
        let property = &mut schema["properties"][*field];
        if bound.contains_key("type") {
            *property = Value::Object(bound);
        } else {
            property.as_object_mut().expect("a field schema").extend(bound);
        }
    }
    components
}

/// The twins' part of the OpenAPI document: `paths` and the schemas they refer to.
pub fn openapi_paths() -> (Map<String, Value>, BTreeMap<String, Value>) {
    let mut paths = Map::new();
    let mut components = BTreeMap::new();
    for twin in twins() {
        let params: Vec<&str> = twin.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
        let input = bounded(SCHEMAS.components(&[twin.request.as_str()], true).expect("twins name messages that exist"));
        let output = SCHEMAS.components(&[twin.response.as_str()], false).expect("twins name messages that exist");
        let request = &input[&Schemas::reference(&twin.request, true)];
        let mut parameters: Vec<Value> = params
            .iter()
            .map(|p| {
                let field = twin.path_fields.iter().find(|(q, _)| q == p).map_or(*p, |(_, f)| f);
                json!({"name": p, "in": "path", "required": true, "schema": path_schema(&request["properties"], field)})
            })
            .collect();
        let mut operation = json!({
            "operationId": operation_id(twin),
            "summary": format!("{} ({})", twin.summary, role_name(twin.access)),
            "description": format!("The REST twin of the gRPC call presage.v1.Operator/{}.", twin.rpc),
            "tags": [tag(twin.path)],
            "responses": crate::api_error::answers(
                &format!("#/components/schemas/{}", Schemas::component_name(&twin.response)),
                twin.errors,
            ),
        });
        if twin.method == Method::GET {
            // The request's scalar fields as query parameters.
            if let Some(props) = request["properties"].as_object() {
                for (name, schema) in props {
                    if params.contains(&name.as_str()) || schema.get("$ref").is_some() || schema["type"] == "array" {
                        continue;
                    }
                    parameters.push(json!({"name": name, "in": "query", "required": false, "schema": schema}));
                }
            }
        } else if twin.method != Method::DELETE {
            let mut body = match twin.body_field {
                Some(f) => {
                    let reference = request["properties"][f]["$ref"].as_str().expect("a body field is a message");
                    input[reference.trim_start_matches("#/components/schemas/")].clone()
                }
                None => request.clone(),
            };
            // Fields the path or the route sets are not the body's to give.
            if let Some(props) = body["properties"].as_object_mut() {
                for p in params.iter().copied().chain(twin.fixed.iter().map(|(f, _)| *f)) {
                    props.remove(p);
                }
                for (_, f) in twin.path_fields {
                    props.remove(f.split('.').next().unwrap_or(f));
                }
            }
            let has_fields = body["properties"].as_object().is_some_and(|p| !p.is_empty());
            if has_fields {
                let required = body.get("required").and_then(Value::as_array).is_some_and(|r| !r.is_empty());
                let body_name = format!("{}.Body", operation_id(twin));
                components.insert(body_name.clone(), body);
                operation["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body_name}")}}}});
                components.extend(input);
            }
        }
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        components.extend(output);
        let entry = paths.entry(twin.path.to_string()).or_insert_with(|| json!({}));
        entry[twin.method.as_str().to_ascii_lowercase()] = operation;
    }
    (paths, components)
}

/// A path parameter's schema: the field's (a 64-bit id is digits), any string for a nested one.
fn path_schema(properties: &Value, field: &str) -> Value {
    // A 64-bit id: its decimal string form.
    if let Some(string) = properties[field]["anyOf"].as_array().and_then(|a| a.iter().find(|s| s["type"] == "string")) {
        return string.clone();
    }
    match &properties[field] {
        Value::Object(s) if s.get("type") == Some(&json!("string")) && s.contains_key("pattern") => json!(s),
        Value::Object(s) if s.get("type") == Some(&json!("integer")) => json!(s),
        _ => json!({"type": "string", "minLength": 1}),
    }
}

fn operation_id(twin: &Twin) -> String {
    // GET /v1/vms/{vm_id}/explain → getVmsVmIdExplain
    let mut id = twin.method.as_str().to_ascii_lowercase();
    for seg in twin.path.trim_start_matches("/v1/").split('/') {
        for word in seg.trim_matches(|c| c == '{' || c == '}').split('_') {
            let mut c = word.chars();
            if let Some(f) = c.next() {
                id.push(f.to_ascii_uppercase());
                id.extend(c);
            }
        }
    }
    id
}

fn tag(path: &str) -> String {
    path.trim_start_matches("/v1/").split('/').next().unwrap_or("").to_string()
}

/// Who may make a call of `access`, for the document.
pub fn role_name(access: Access) -> &'static str {
    match access {
        Access::Scrape => "metrics, viewer, operator or admin",
        Access::Read => "viewer",
        Access::Act => "operator",
        Access::Manage => "admin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twin(path: &str, method: Method) -> &'static Twin {
        twins().iter().find(|t| t.path == path && t.method == method).unwrap()
    }

    #[test]
    fn every_twin_names_messages_and_path_fields_that_exist() {
        for t in twins() {
            assert!(SCHEMAS.has_message(&t.request), "{}", t.request);
            assert!(SCHEMAS.has_message(&t.response), "{}", t.response);
            for p in t.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))) {
                let field = t.path_fields.iter().find(|(q, _)| *q == p).map_or(p, |(_, f)| f);
                let head = field.split('.').next().unwrap();
                assert!(SCHEMAS.field_names(&t.request).contains(&head.to_string()), "{} has no field {head}", t.request);
            }
        }
    }

    #[test]
    fn requests_are_built_from_body_query_path_and_route() {
        let t = twin("/v1/hosts/{host_id}/drain", Method::POST);
        let path = BTreeMap::from([("host_id".to_string(), "hv-1".to_string())]);
        let v = request_json(t, &path, None, b"").unwrap();
        let r: presage_protocol::pb::SetDrainRequest = decode(v).unwrap();
        assert_eq!((r.host_id.as_str(), r.drain), ("hv-1", true));
        // The route's own value cannot be overridden by the body.
        let e = request_json(t, &path, None, br#"{"drain": false}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("drain"));

        let t = twin("/v1/plans", Method::GET);
        let v = request_json(t, &BTreeMap::new(), Some("limit=3&plan_id=12"), b"").unwrap();
        let r: presage_protocol::pb::ListPlansRequest = decode(v).unwrap();
        assert_eq!((r.plan_id, r.limit), (12, 3));
        let e = request_json(t, &BTreeMap::new(), Some("limt=3"), b"").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limt"));
        assert!(e.reason.contains("limit"), "{}", e.reason);
        let e = decode::<presage_protocol::pb::ListPlansRequest>(request_json(t, &BTreeMap::new(), Some("limit=many"), b"").unwrap())
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limit"));

        let t = twin("/v1/hosts/{host_id}/reservations/{reservation_id}", Method::DELETE);
        let path = BTreeMap::from([("host_id".to_string(), "hv-1".to_string()), ("reservation_id".to_string(), "r 1".to_string())]);
        let r: presage_protocol::pb::ReserveOnHostRequest = decode(request_json(t, &path, None, b"").unwrap()).unwrap();
        assert_eq!(r.release.unwrap().id, "r 1");

        let t = twin("/v1/place", Method::POST);
        let e = request_json(t, &BTreeMap::new(), None, b"[1]").unwrap_err();
        assert_eq!(e.code, "bad_json");
        let e =
            decode::<presage_protocol::pb::PlaceRequest>(request_json(t, &BTreeMap::new(), None, br#"{"vcpus": 2, "colour": 1}"#).unwrap())
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
    }

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(form_pairs("a=1&b=x%20y+z&c"), vec![("a".into(), "1".into()), ("b".into(), "x y z".into()), ("c".into(), "".into())]);
        assert_eq!(form_pairs("a=%zz%"), vec![("a".into(), "%zz%".into())]);
    }
}
