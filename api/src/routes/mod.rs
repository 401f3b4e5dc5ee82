//! The HTTP surface: one module per group of endpoints.

pub(crate) mod health;
mod identify;
pub(crate) mod jobs;
pub(crate) mod metrics;
mod openapi;
pub(crate) mod webhook;

use crate::error::{ApiError, Errno};
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

pub fn router(state: AppState) -> Router {
    let max_body_bytes = state.max_body_bytes;
    // Who is calling matters here; the webhook has its own signature, the Dockerflow endpoints are public.
    let identified = Router::new()
        .route("/v1/jobs", post(jobs::create).get(jobs::list))
        .route("/v1/jobs/{id}", get(jobs::get))
        .route("/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/metrics", get(metrics::scrape))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            identify::identify,
        ));
    Router::new()
        .merge(identified)
        .route("/v1/webhooks/kinto", post(webhook::receive))
        .route("/__heartbeat__", get(health::heartbeat))
        .route("/__lbheartbeat__", get(health::lbheartbeat))
        .route("/__ready__", get(health::ready))
        .route("/__version__", get(health::version))
        .route("/openapi.json", get(openapi::openapi))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Errno::MissingResource,
                "no such endpoint",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Errno::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            crate::body::refuse_declared_oversize,
        ))
        .with_state(state)
}
