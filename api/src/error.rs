//! Errors in Kinto's shape (`{code, errno, error, message, details}`), so Kinto clients and operators read them
//! the way they read Kinto's own.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// Kinto's errno values (kinto/core/errors.py) for the cases the API meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Errno {
    Unauthorized = 104,
    BadJson = 106,
    InvalidParameters = 107,
    InvalidPostedData = 109,
    InvalidResourceId = 110,
    MissingResource = 111,
    RequestTooLarge = 113,
    MethodNotAllowed = 115,
    Forbidden = 121,
    Conflict = 122,
    Backend = 201,
}

/// Every error answer: Kinto's error shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status.
    pub code: u16,
    /// Kinto's error number (104 unauthorized, 106 bad JSON, 107 invalid parameters, 109 invalid body, 110
    /// invalid id, 111 missing, 113 too large, 115 method not allowed, 121 forbidden, 122 conflict, 201 backend
    /// unavailable).
    pub errno: u16,
    /// The status's reason phrase.
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub errno: Errno,
    pub message: String,
    pub details: Option<Value>,
    /// Sent with the answer (a 401's challenges).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, errno: Errno, message: impl Into<String>) -> Self {
        Self {
            status,
            errno,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        self.headers = headers;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Errno::InvalidPostedData, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Errno::MissingResource, message)
    }

    /// The database is down or failing: 503 so callers and load balancers retry, with the cause logged here.
    pub fn backend(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "job store failure");
        Self::store_unavailable()
    }

    fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Errno::Backend,
            "the job store is unavailable; retry later",
        )
    }
}

impl From<signer_worker::store::StoreError> for ApiError {
    fn from(error: signer_worker::store::StoreError) -> Self {
        match error {
            // Said once by the store, when it noticed: not again for every request it refuses.
            signer_worker::store::StoreError::Unusable { .. } => Self::store_unavailable(),
            other => Self::backend(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            errno: self.errno as u16,
            error: self.status.canonical_reason().unwrap_or("Error").into(),
            message: self.message,
            details: self.details,
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}
