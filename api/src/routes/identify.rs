//! The middleware that runs the configured policies on a request and attaches its [`Caller`]; a refused
//! credential is answered here (401, or 503 when it cannot be checked now), before any handler runs.

use crate::error::{ApiError, Errno};
use crate::server::ClientAddr;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use signer_auth::{Caller, Request, TlsPeer};

pub async fn identify(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if state.auth.is_empty() {
        let mut request = request;
        request.extensions_mut().insert(Caller::anonymous());
        return next.run(request).await;
    }
    let deadline = crate::body::deadline(&request);
    let (parts, body) = request.into_parts();
    // The signature schemes need the bytes (Digest, Content-Digest); the handlers get them back unchanged.
    let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, state.max_body_bytes));
    let Ok(read) = read.await else {
        return crate::body::too_slow(deadline).into_response();
    };
    let Ok(bytes) = read else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Errno::RequestTooLarge,
            "request body is too large",
        )
        .into_response();
    };
    let view = Request {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &bytes,
        tls: parts.extensions.get::<TlsPeer>(),
        client: parts.extensions.get::<ClientAddr>().map(|c| c.0),
        now: chrono::Utc::now().timestamp(),
    };
    let caller = match state.auth.authenticate(&view).await {
        Ok(caller) => caller,
        Err(refused) => return state.refused(refused).into_response(),
    };
    let mut request = axum::extract::Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(caller);
    next.run(request).await
}
