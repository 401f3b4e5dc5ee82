//! Request bodies, refused the way Kinto refuses them: 413 past the size limit (a declared `Content-Length` before
//! anything is read), 408 when the body does not arrive in time, 415 for anything but `application/json` (a browser can send `text/plain`, a form or
//! multipart across origins without asking first; it cannot send `application/json`), 400 naming what is wrong.

use crate::error::{ApiError, Errno};
use crate::server::BodyDeadline;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Where no server set one (the router served some other way, as in tests).
const DEFAULT_BODY_DEADLINE: Duration = Duration::from_secs(30);

/// A JSON object body, parsed.
pub struct JsonBody<T>(pub T);

/// A JSON body's bytes, unparsed (for handlers that check a signature over the bytes before parsing them).
pub struct JsonBytes(pub Bytes);

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        Errno::RequestTooLarge,
        "request body is too large",
    )
}

/// Pure: whether the request says its body is JSON (`application/json`, parameters such as `charset` allowed).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Errno::InvalidParameters,
                "Content-Type header should be application/json",
            ));
        }
        let deadline = deadline(&req);
        let read = tokio::time::timeout(deadline, Bytes::from_request(req, state)).await;
        read.map_err(|_| too_slow(deadline))?
            .map(JsonBytes)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large()
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        Errno::BadJson,
                        rejection.body_text(),
                    )
                }
            })
    }
}

/// How long the request's body may take to arrive (`api.body_read_timeout_seconds`, set by the server).
pub fn deadline(req: &Request) -> Duration {
    req.extensions()
        .get::<BodyDeadline>()
        .map_or(DEFAULT_BODY_DEADLINE, |d| d.0)
}

/// 408: the body did not arrive in time; the connection is not kept.
pub fn too_slow(deadline: Duration) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        Errno::InvalidParameters,
        format!(
            "the request body did not arrive within {} s",
            deadline.as_secs()
        ),
    );
    error.headers.push((
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    ));
    error
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// 400/106 for bytes that are not JSON, 400/109 for anything but an object (serde would take an array as a
/// struct's fields in order) or for an object of the wrong shape, naming the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Errno::BadJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("invalid body: expected a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
}

/// Middleware: a request declaring a body larger than `max` bytes is answered 413 before any of it is read.
pub async fn refuse_declared_oversize(
    State(max): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large().into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_json_is_json() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        for other in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/xml",
            "application/jsonx",
            "text/plain; application/json",
            "",
        ] {
            assert!(!with(other), "{other}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn only_an_object_is_a_body() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Job {
            resource: String,
        }
        assert!(parse::<Job>(br#"{"resource": "a/b"}"#).is_ok());
        let array = parse::<Job>(br#"["a/b"]"#).unwrap_err();
        assert_eq!(array.errno as u16, 109);
        assert!(array.message.contains("object"), "{}", array.message);
        assert_eq!(parse::<Job>(b"[").unwrap_err().errno as u16, 106);
    }
}
