//! Dockerflow endpoints, as Kinto and Autograph serve them.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// Every dependency, one boolean each: the job store, the Kinto servers, the signers (Autograph's own
/// heartbeat). 503 when any fails: for monitoring and readiness; liveness is `__lbheartbeat__`.
pub async fn heartbeat(State(state): State<AppState>) -> impl IntoResponse {
    let checks = state.health.report().await;
    let status = if checks.values().all(|ok| *ok) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!(checks)))
}

/// Liveness: the process serves HTTP.
pub async fn lbheartbeat() -> impl IntoResponse {
    Json(json!({}))
}

pub async fn version() -> impl IntoResponse {
    Json(json!({
        "name": "kinto-signer-rs",
        "version": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("SIGNER_GIT_COMMIT").unwrap_or("unknown"),
    }))
}
