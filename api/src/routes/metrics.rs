//! `GET /metrics` (Prometheus text format), and the middleware that times every routed request.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use signer_auth::Caller;

/// The `signer_*` series (README: Operations), in Prometheus' text format; `permissions.metrics` may restrict it.
#[utoipa::path(
    get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition", content_type = "text/plain; version=0.0.4", body = String),
        (status = 401, description = "Credentials refused, or none given and metrics are restricted", body = ErrorBody),
        (status = 403, description = "Not among permissions.metrics", body = ErrorBody),
    )
)]
pub async fn scrape(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<impl IntoResponse, ApiError> {
    let allowed = state.permissions.may_scrape_metrics(&caller.principals);
    state.require(&caller, allowed, || "read the metrics".to_owned())?;
    if let Err(e) = signer_worker::store::publish_queue_metrics(state.store.as_ref()).await {
        tracing::warn!(error = %e, "queue metrics not updated");
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        signer_worker::metrics::metrics().render(),
    ))
}

/// Observes `signer_http_request_duration_seconds{route, status}`; the route is the matched pattern
/// (`/v1/jobs/{id}`), never the raw path, so ids do not explode the series.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    signer_worker::metrics::metrics()
        .http_requests
        .with_label_values(&[&route, response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}
