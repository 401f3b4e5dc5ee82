//! Dockerflow endpoints, as Kinto and Autograph serve them.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use signer_worker::store::JobStore as _;

/// Readiness: every dependency answers (503 with the failing check otherwise).
pub async fn heartbeat(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.store.ping().await.is_ok();
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({"database": database})))
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
