//! What does the capture's local HTTP endpoint serve?
//!
//! - `GET /health`: JSON with each node's connection, session and liveness state,
//!   generation, reconnect attempts and last error, plus queue depth and the writer's last
//!   error and the last periodic retention error, and an in-process forwarder's `status`
//!   (`ok`, `retrying`, `stopped`) and `last_error`. `status` is `ok` (200) when every node
//!   is ready, the last store write and retention run succeeded and no forwarder stopped;
//!   `degraded` (503) when a node is not ready, the last write or retention run failed, a
//!   store append has not returned for [`WRITER_STALL_AFTER`], items were dropped within
//!   [`RECENT_DROPS`], or the forwarder stopped on an error; `failed` (503) once the writer
//!   stopped on a persistent store failure (the capture then stops). `reasons` says why in
//!   words.
//!   With [`HealthForm::TelephonyEventSync`] the same answer also has that service's shape:
//!   `status` is `healthy` or `unhealthy`, and `data` holds `last_heartbeat`, `last_error`,
//!   `recovery_attempts`, `is_healthy` and `last_check`.
//! - `GET /metrics`: the Prometheus text exposition.
//! - `POST /v1/api` and `POST /v1/bgapi` with `{"command": "...", "node": "slug"?}`:
//!   the command gateway. They need `Authorization: Bearer <token or JWT>` ([`auth`]); the
//!   command goes out on the node's capture connection, so the dispatch and every reply
//!   are captured.
//! - `/api/v1/fs/…`: the fs-esl-gateway REST contract ([`rest`]), on the same gateway.
//!
//! Gateway errors answer 400 (refused: unknown node), 401 (not authorised), 429 (too many
//! commands in flight), 503 (the node is not ready) or 504 (outcome unknown), each with a
//! JSON body `{"error": …}`. On every gateway route (these and [`rest`]'s) the credential
//! is checked before the body is read; a body that is not the JSON above answers 400, 415
//! or 422, one over [`MAX_BODY_BYTES`](super::rest::MAX_BODY_BYTES) 413, one that does not
//! arrive within the server's body timeout 400.
//!
//! Bind it to 127.0.0.1 (the CLI default): it is a control API.
//!
//! [`auth`]: super::auth
//! [`rest`]: super::rest

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Gateway;
use super::auth::{self, JwtKey};
use super::client::{GatewayCommand, GatewayError};
use super::queue::CaptureQueue;
use super::telemetry::Telemetry;

/// `/health` is degraded while a store append has not returned for this long (a frozen or
/// hung file system): nothing is stored, and the queue fills up.
pub const WRITER_STALL_AFTER: Duration = Duration::from_secs(5);

/// `/health` is degraded for this long after an item was dropped.
pub const RECENT_DROPS: Duration = Duration::from_secs(60);

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Metrics and health.
    pub telemetry: Arc<Telemetry>,
    /// The command gateway.
    pub gateway: Gateway,
    /// The bearer token the gateway accepts (empty: none).
    pub token: Arc<str>,
    /// The secret of the HS256 JWTs the gateway accepts besides the token, if any.
    pub jwt: Option<JwtKey>,
    /// Queue depth for `/health`.
    pub queue: Option<Arc<CaptureQueue>>,
    /// The shape of `/health`.
    pub health: HealthForm,
}

/// The shape of the `/health` answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HealthForm {
    /// Ours: `status` `ok`, `degraded` or `failed`, with each node's state.
    #[default]
    EslReplay,
    /// Ours with telephony-event-sync's fields over it, so its health checks read it
    /// unchanged: `status` `healthy` or `unhealthy`, and
    /// `data: {last_heartbeat, last_error, recovery_attempts, is_healthy, last_check}`.
    TelephonyEventSync,
}

#[derive(Debug, Deserialize)]
struct CommandBody {
    command: String,
    node: Option<String>,
}

/// The router of the endpoints above.
pub fn router(state: HttpState) -> Router {
    // The credential is checked before any extractor runs, so a caller without one costs
    // no body reading (nor waiting for a body that never comes).
    let gateway = Router::new()
        .route("/v1/api", post(api))
        .route("/v1/bgapi", post(bgapi))
        .merge(super::rest::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            credential_first,
        ))
        .layer(DefaultBodyLimit::max(super::rest::MAX_BODY_BYTES));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(gateway)
        .with_state(state)
}

/// Answers 401 to a gateway request without a valid credential, before its body is read.
async fn credential_first(
    State(state): State<HttpState>,
    request: Request,
    next: Next,
) -> Result<Response, Failure> {
    authorize(&state, request.headers())?;
    Ok(next.run(request).await)
}

async fn health(State(state): State<HttpState>) -> Response {
    let nodes = state.telemetry.health();
    let all_ready = !nodes.is_empty() && nodes.values().all(|h| h.connection == "ready");
    let (items, bytes) = state.queue.as_ref().map_or((0, 0), |q| q.depth());
    let writer_error = state.telemetry.writer_error();
    let retention_error = state.telemetry.retention_error();
    let forwarding = state.telemetry.forwarding();
    // A forwarder that retries is fine (the store keeps the records); one that stopped is not.
    let forwarder_error = forwarding
        .as_ref()
        .filter(|forwarding| forwarding.status() == "stopped")
        .and_then(|forwarding| forwarding.last_error());
    let stalled = state
        .telemetry
        .append_in_progress()
        .filter(|took| *took >= WRITER_STALL_AFTER);
    let dropped = state
        .telemetry
        .since_last_drop()
        .filter(|ago| *ago < RECENT_DROPS);
    let mut reasons = Vec::new();
    if !all_ready {
        reasons.push("a node is not ready".to_owned());
    }
    if let Some(error) = &writer_error {
        reasons.push(format!("the last store write failed: {error}"));
    }
    if let Some(stalled) = stalled {
        reasons.push(format!(
            "a store append has not returned for {} s ({items} more items wait in the queue)",
            stalled.as_secs()
        ));
    }
    if let Some(ago) = dropped {
        reasons.push(format!(
            "captured items were dropped {} s ago (see esl_capture_dropped_artifacts_total)",
            ago.as_secs()
        ));
    }
    if let Some(error) = &retention_error {
        reasons.push(format!("the last retention run failed: {error}"));
    }
    if let Some(error) = &forwarder_error {
        reasons.push(format!("the forwarder stopped: {error}"));
    }
    let status = if state.telemetry.writer_failed.get() != 0 {
        "failed"
    } else if reasons.is_empty() {
        "ok"
    } else {
        "degraded"
    };
    let healthy = status == "ok";
    let mut body = json!({
        "status": status,
        "nodes": nodes,
        "queue": {"items": items, "bytes": bytes},
        "writer_error": writer_error,
        "retention_error": retention_error,
        "reasons": reasons,
    });
    if let Some(forwarding) = &forwarding {
        body["forwarder"] = json!({
            "status": forwarding.status(),
            "last_error": forwarding.last_error(),
        });
    }
    if state.health == HealthForm::TelephonyEventSync {
        let last_error = writer_error
            .or(retention_error)
            .or(forwarder_error)
            .or_else(|| reasons.first().cloned())
            .or_else(|| nodes.values().find_map(|h| h.last_error.clone()));
        let recovery_attempts: u64 = nodes.values().map(|h| h.reconnect_attempts).sum();
        body["status"] = (if healthy { "healthy" } else { "unhealthy" }).into();
        body["data"] = json!({
            "last_heartbeat": state.telemetry.last_frame_at().map(rfc3339),
            "last_error": last_error,
            "recovery_attempts": recovery_attempts,
            "is_healthy": healthy,
            "last_check": rfc3339(SystemTime::now()),
        });
    }
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// RFC 3339 in UTC, as Go's `time.Time` writes itself in JSON.
fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&Rfc3339)
        .unwrap_or_default()
}

async fn metrics(State(state): State<HttpState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.telemetry.encode(),
    )
        .into_response()
}

async fn api(State(state): State<HttpState>, request: Request) -> Result<Response, Failure> {
    dispatch(state, request, GatewayCommand::Api).await
}

async fn bgapi(State(state): State<HttpState>, request: Request) -> Result<Response, Failure> {
    dispatch(state, request, GatewayCommand::BgApi).await
}

/// Sends the body's command ([`credential_first`] has authorised the caller).
async fn dispatch(
    state: HttpState,
    request: Request,
    make: fn(String) -> GatewayCommand,
) -> Result<Response, Failure> {
    let Json(body) = Json::<CommandBody>::from_request(request, &state)
        .await
        .map_err(|rejection| Failure::new(rejection.status(), &rejection.body_text()))?;
    let reply = state
        .gateway
        .dispatch(body.node.as_deref(), make(body.command))
        .await?;
    Ok((StatusCode::OK, Json(reply)).into_response())
}

/// An answer that is not a success: its status and a JSON body holding at least `error`.
#[derive(Debug)]
pub(crate) struct Failure {
    code: StatusCode,
    body: serde_json::Value,
}

impl Failure {
    /// `{"error": text}` with `code`.
    pub(crate) fn new(code: StatusCode, text: &str) -> Failure {
        Failure {
            code,
            body: json!({"error": text}),
        }
    }

    /// `body` (an object with `error`) with `code`.
    pub(crate) fn with_body(code: StatusCode, body: serde_json::Value) -> Failure {
        Failure { code, body }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.code, Json(self.body)).into_response()
    }
}

/// The answer to a command the gateway could not get a reply to.
impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Failure {
        let code = match error {
            GatewayError::Refused(_) => StatusCode::BAD_REQUEST,
            GatewayError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::NotReady | GatewayError::NodeStopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::GATEWAY_TIMEOUT,
        };
        Failure::new(code, &error.to_string())
    }
}

/// Checks the caller's credential (401 when refused).
pub(crate) fn authorize(state: &HttpState, headers: &HeaderMap) -> Result<(), Failure> {
    auth::check(headers, &state.token, state.jwt.as_ref())
        .map_err(|refusal| Failure::new(StatusCode::UNAUTHORIZED, &refusal.to_string()))
}
