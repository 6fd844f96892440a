//! How the REST API answers errors: JSON with a code, the field at fault where there is one,
//! the reason, and per-item problems; and the OpenAPI `responses` every operation shares.

use axum::Json;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use presage_protocol::tls::Access;
use serde::Serialize;
use tracing::warn;

use crate::transport::PeerInfo;

/// An error as the API answers it.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    pub code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub reason: String,
    /// Per-VM problems (refused declarations).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, reason: impl Into<String>) -> ApiError {
        ApiError { status, code, field: None, reason: reason.into(), problems: Vec::new() }
    }

    /// An error that names the field (or body, or query parameter) at fault.
    pub fn field(status: StatusCode, code: &'static str, field: &str, reason: impl Into<String>) -> ApiError {
        ApiError { field: Some(field.to_string()), ..ApiError::new(status, code, reason) }
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

/// An operation's `responses`: 200 with `ok_schema` (a `$ref`; empty: any JSON), the role
/// refusals, and `errors`, each answered with an [`ApiError`] body.
pub fn answers(ok_schema: &str, errors: &[(u16, &str)]) -> serde_json::Value {
    let error = serde_json::json!({"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut m = serde_json::Map::new();
    let schema = if ok_schema.is_empty() { serde_json::json!({}) } else { serde_json::json!({"$ref": ok_schema}) };
    m.insert("200".into(), serde_json::json!({"description": "done", "content": {"application/json": {"schema": schema}}}));
    let mut all: Vec<(u16, &str)> = vec![
        (400, "a bad body, query or path value; `field` names it"),
        (401, "no client certificate"),
        (403, "the certificate's role may not make this call"),
    ];
    all.extend_from_slice(errors);
    for (code, what) in all {
        let mut e = error.clone();
        let key = code.to_string();
        let description = match m.get(&key) {
            Some(prev) => format!("{}; {what}", prev["description"].as_str().unwrap_or("")),
            None => what.to_string(),
        };
        e["description"] = description.into();
        m.insert(key, e);
    }
    serde_json::Value::Object(m)
}

/// The caller, if its certificate's role may make a call of `access`.
pub fn caller(peer: Option<Extension<PeerInfo>>, access: Access, what: &str) -> Result<PeerInfo, ApiError> {
    let Some(Extension(peer)) = peer else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "no authenticated peer on this connection"));
    };
    if !peer.identity.role.may(access) {
        warn!(peer = %peer.remote, identity = %peer.identity, call = what, "refused REST call: role may not");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("{} may not {what} (needs {})", peer.identity, access_name(access)),
        ));
    }
    Ok(peer)
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Scrape => "a metrics, viewer, operator or admin certificate",
        Access::Read => "a viewer, operator or admin certificate",
        Access::Act => "an operator or admin certificate",
        Access::Manage => "an admin certificate",
    }
}
