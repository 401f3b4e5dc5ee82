use std::time::Duration;

/// A failed Kinto request, classified so the job engine knows whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum KintoError {
    #[error("{method} {url}: {source}")]
    Network {
        method: String,
        url: String,
        source: reqwest::Error,
    },
    #[error("{method} {url} answered {status}{}: {message}", errno.map(|e| format!(" (errno {e})")).unwrap_or_default())]
    Status {
        method: String,
        url: String,
        status: u16,
        errno: Option<i64>,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{method} {url}: unexpected response: {reason}")]
    Invalid {
        method: String,
        url: String,
        reason: String,
    },
    /// A success answer whose body is cut short or is not the JSON it should be: a connection dropped by a proxy
    /// or load balancer mid-body, with a `Content-Length` matching what arrived. The same request may well
    /// succeed next time.
    #[error("{method} {url}: the answer's body was cut short or garbled on the way: {reason}")]
    Garbled {
        method: String,
        url: String,
        reason: String,
    },
    #[error(
        "the records of {uri} changed while they were being listed (ETag {first} then {last})"
    )]
    ListingMoved { uri: String, first: i64, last: i64 },
    #[error("batch request {path} answered {status}: {message}")]
    BatchItem {
        path: String,
        status: u16,
        message: String,
    },
}

impl KintoError {
    /// Network trouble (a body cut short included), 5xx, 429 and the 409/412 races are worth retrying; other 4xx
    /// are configuration or data problems that retrying cannot fix.
    pub fn is_transient(&self) -> bool {
        match self {
            KintoError::Network { .. }
            | KintoError::Garbled { .. }
            | KintoError::ListingMoved { .. } => true,
            KintoError::Status { status, .. } | KintoError::BatchItem { status, .. } => {
                *status >= 500 || matches!(status, 408 | 409 | 412 | 429)
            }
            KintoError::Invalid { .. } => false,
        }
    }

    /// Worth repeating the same request at once: the network, an overloaded or failing server, a read whose
    /// answer arrived garbled. A 412 is not: it means the data moved, which only the job can decide about; nor a
    /// write whose answer arrived garbled: it was probably applied, and the job re-plans from what is there.
    pub fn is_retryable_in_place(&self) -> bool {
        match self {
            KintoError::Network { .. } => true,
            KintoError::Garbled { method, .. } => method == "GET" || method == "HEAD",
            KintoError::Status { status, .. } => {
                *status >= 500 || matches!(status, 408 | 409 | 429)
            }
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            KintoError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            KintoError::Status { status, .. } | KintoError::BatchItem { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }
}
