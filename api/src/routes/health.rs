//! Dockerflow endpoints, as Kinto and Autograph serve them.

use crate::answers::Version;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

#[utoipa::path(
    get, path = "/__heartbeat__", tag = "operations",
    responses(
        (status = 200, description = "Every dependency answers", body = std::collections::HashMap<String, bool>,
            example = json!({"database": true, "kinto_source": true, "signer": true})),
        (status = 503, description = "A dependency fails, or the process is draining", body = std::collections::HashMap<String, bool>,
            example = json!({"database": false, "kinto_source": true, "signer": true})),
    )
)]
/// Every dependency, one boolean each: the job store (written), the Kinto servers, the signers (Autograph's own
/// heartbeat), the broker. 503 when any fails: for monitoring and alerts; readiness is `__ready__`, liveness
/// `__lbheartbeat__`. A process that received SIGTERM answers 503 with `"draining": true`, so a load balancer stops
/// sending before it stops serving.
pub async fn heartbeat(State(state): State<AppState>) -> impl IntoResponse {
    checked(&state, json!(state.health.report().await))
}

/// 200 when every check passed and the process is not draining; 503 otherwise, saying `"draining": true` then.
fn checked(
    state: &AppState,
    mut checks: serde_json::Value,
) -> (StatusCode, Json<serde_json::Value>) {
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

/// Readiness: the process can take requests, that is record jobs. Only the job store counts (written, not only
/// read): Kinto, the signer or RabbitMQ being down delays the work, which waits in the store, and must not take
/// every instance out of its load balancer at once. 503 after SIGTERM, as `__heartbeat__`.
#[utoipa::path(
    get, path = "/__ready__", tag = "operations",
    responses(
        (status = 200, description = "Jobs can be recorded", body = std::collections::HashMap<String, bool>,
            example = json!({"database": true})),
        (status = 503, description = "The job store takes no writes, or the process is draining", body = std::collections::HashMap<String, bool>,
            example = json!({"database": false})),
    )
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    checked(
        &state,
        json!({ "database": state.health.store_writable().await }),
    )
}

/// Liveness: the process serves HTTP.
#[utoipa::path(
    get, path = "/__lbheartbeat__", tag = "operations",
    responses((status = 200, description = "The process serves", body = Object, example = json!({})))
)]
pub async fn lbheartbeat() -> impl IntoResponse {
    Json(json!({}))
}

/// What runs here.
#[utoipa::path(
    get, path = "/__version__", tag = "operations",
    responses((status = 200, description = "Name, version and commit", body = Version))
)]
pub async fn version() -> impl IntoResponse {
    Json(Version {
        name: "kinto-signer-rs",
        version: env!("CARGO_PKG_VERSION"),
        commit: option_env!("SIGNER_GIT_COMMIT").unwrap_or("unknown"),
    })
}
