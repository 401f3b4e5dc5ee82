//! Dockerflow endpoints, as Kinto and Autograph serve them.

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

/// Every dependency, one boolean each: the job store, the Kinto servers, the signers (Autograph's own
/// heartbeat). 503 when any fails: for monitoring and readiness; liveness is `__lbheartbeat__`. A process that
/// received SIGTERM answers 503 with `"draining": true`, so a load balancer stops sending before it stops serving.
pub async fn heartbeat(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = json!(state.health.report().await);
    let healthy = checks
        .as_object()
        .is_some_and(|c| c.values().all(|ok| ok == true));
    let draining = state.draining.is_cancelled();
    if draining {
        checks["draining"] = json!(true);
    }
    let status = if healthy && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(checks))
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
