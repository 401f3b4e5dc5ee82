//! `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`.

use crate::answers::{Accepted, JobPage, JobWithHistory, OneJob};
use crate::body::JsonBody;
use crate::error::{ApiError, Errno, ErrorBody};
use crate::state::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Deserialize;
use signer_auth::Caller;
use signer_types::job::{Job, JobKind, JobState, Trigger};
use signer_types::CollectionRef;
use signer_worker::acl::Action;
use signer_worker::store::{Enqueued, JobFilter, JobStore as _};
use std::collections::HashMap;
use uuid::Uuid;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

/// A signing request.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The source collection: `bucket/collection`, `/buckets/b/collections/c`, or its full URL on the source
    /// server. It must match a configured resource.
    #[schema(
        example = "main-workspace/cfr",
        pattern = r"^\s*(https?://\S+)?(/buckets/[A-Za-z0-9_-]+/collections/[A-Za-z0-9_-]+|[A-Za-z0-9_-]+/[A-Za-z0-9_-]+)\s*$"
    )]
    resource: String,
    /// What to do; `sign` unless said otherwise.
    #[serde(default = "default_kind")]
    #[schema(default = "sign")]
    kind: JobKind,
    /// Higher runs first.
    #[serde(default)]
    #[schema(default = 0)]
    priority: i32,
}

fn default_kind() -> JobKind {
    JobKind::Sign
}

/// Ask for a signature (or a review, re-sign, rollback) of a source collection. The job is recorded before the
/// answer; a request for a collection that already has a queued job joins it (`coalesced`).
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    request_body = CreateJob,
    responses(
        (status = 202, description = "Recorded; `Location` is the job", body = Accepted,
            headers(("Location" = String, description = "/v1/jobs/{id}"))),
        (status = 400, description = "Not JSON, wrong shape, not a collection reference, or a URL on another server", body = ErrorBody),
        (status = 401, description = "Credentials refused, or none given where a permission needs them", body = ErrorBody),
        (status = 403, description = "The caller may not request this kind of job on this collection", body = ErrorBody),
        (status = 404, description = "Not a configured source collection", body = ErrorBody),
        (status = 413, description = "Body larger than api.max_body_bytes (a declared Content-Length is refused before reading)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "The job store (or a credential's verifier) is unavailable: nothing was recorded", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CreateJob>,
) -> Result<Response, ApiError> {
    let source = parse_source(&state, &body.resource)?;
    let action = Action::Request(body.kind);
    let allowed = state
        .permissions
        .allows(&caller.principals, action, &source);
    state.require(&caller, allowed, || format!("{action} {source}"))?;
    let resource = state.resolve(&source).ok_or_else(|| {
        ApiError::not_found(format!("{source} is not a configured source collection"))
    })?;
    let new = state.new_job(
        &resource,
        body.kind,
        Trigger::Api,
        state.requester(&caller),
        body.priority,
    );
    let enqueued = state.store.enqueue(new).await?;
    signer_worker::store::count_enqueued(Trigger::Api, &enqueued);
    Ok(accepted(&enqueued))
}

/// 202 with the job and its `Location`, whether it is new or the queued job it coalesced onto.
pub fn accepted(enqueued: &Enqueued) -> Response {
    let location = format!("/v1/jobs/{}", enqueued.job.id);
    let mut response = (StatusCode::ACCEPTED, Json(Accepted::from(enqueued))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("a uuid path is ASCII"),
    );
    response
}

fn parse_source(state: &AppState, text: &str) -> Result<CollectionRef, ApiError> {
    let text = text.trim();
    let path = if text.starts_with("http://") || text.starts_with("https://") {
        // On a `/` boundary: `http://kinto/v1ws-a/regions` is not under `http://kinto/v1`.
        let base = state.source_url.trim_end_matches('/');
        let under = text.strip_prefix(base).filter(|rest| rest.starts_with('/'));
        under.ok_or_else(|| {
            ApiError::invalid(format!(
                "{text} is not on the source server {}",
                state.source_url
            ))
        })?
    } else {
        text
    };
    CollectionRef::parse(path).map_err(|e| ApiError::invalid(e.to_string()))
}

/// A job, its progress while it runs, its result or error, and its history.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job", body = JobWithHistory),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "Credentials refused, or none given where a permission needs them", body = ErrorBody),
        (status = 403, description = "Neither the requester nor a reader of the job's collection", body = ErrorBody),
        (status = 404, description = "No such job (or pruned after queue.retention_hours)", body = ErrorBody),
        (status = 503, description = "The job store (or a credential's verifier) is unavailable", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, id).await?;
    let requester = caller.principals.user_id() == Some(job.requested_by.as_str());
    let reader = CollectionRef::parse(&job.resource).is_ok_and(|source| {
        state
            .permissions
            .allows(&caller.principals, Action::Read, &source)
    });
    state.require(&caller, requester || reader, || {
        format!("read job {}", job.id)
    })?;
    let history = state.store.history(job.id).await?;
    Ok(Json(JobWithHistory { data: job, history }).into_response())
}

/// Jobs, newest first, optionally of one collection or in one state; pages of `_limit` linked by `Next-Page`.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs",
    params(
        ("resource" = Option<String>, Query, pattern = r"^\s*(https?://\S+)?(/buckets/[A-Za-z0-9_-]+/collections/[A-Za-z0-9_-]+|[A-Za-z0-9_-]+/[A-Za-z0-9_-]+)\s*$", description = "Only this source collection"),
        ("state" = Option<JobState>, Query, description = "Only jobs in this state"),
        ("_limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Page size (default 50)"),
        ("_token" = Option<Uuid>, Query, description = "From a `Next-Page` link"),
    ),
    responses(
        (status = 200, description = "A page of jobs: all of them for an admin, a collection's for its readers, \
            otherwise the caller's own", body = JobPage,
            headers(("Next-Page" = String, description = "The next page, when this one is full"))),
        (status = 400, description = "Unknown parameter or invalid value", body = ErrorBody),
        (status = 401, description = "Credentials refused, or none given where a permission needs them", body = ErrorBody),
        (status = 503, description = "The job store (or a credential's verifier) is unavailable", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // Parsed by hand: percent-decoding is lossy instead of a plain-text rejection, and every error is Kinto's.
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, Errno::InvalidParameters, message);
    let mut filter = JobFilter {
        limit: DEFAULT_PAGE,
        ..JobFilter::default()
    };
    let mut collection = None;
    for (name, value) in &params {
        match name.as_str() {
            "resource" => {
                let source = parse_source(&state, value)?;
                filter.resource = Some(source.uri());
                collection = Some(source);
            }
            "state" => filter.state = Some(value.parse::<JobState>().map_err(invalid)?),
            "_limit" => {
                filter.limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| invalid(format!("_limit must be between 1 and {MAX_PAGE}")))?
            }
            "_token" => {
                filter.before = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("_token is not a valid page token".into()))?,
                )
            }
            other => {
                return Err(invalid(format!(
                    "unknown parameter {other:?} (use resource, state, _limit, _token)"
                )))
            }
        }
    }
    let who = &caller.principals;
    let reader = collection
        .as_ref()
        .is_some_and(|c| state.permissions.allows(who, Action::Read, c));
    if !state.permissions.is_admin(who) && !reader {
        // Everyone else sees the jobs they asked for.
        let Some(user) = who.user_id() else {
            return Err(state.forbidden(&caller, "list jobs"));
        };
        filter.requested_by = Some(user.to_owned());
    }
    let jobs = state.store.list(&filter).await?;
    let last = jobs.last().map(|j| j.id);
    let full = jobs.len() as i64 == filter.limit;
    let mut response = Json(JobPage { data: jobs }).into_response();
    if let Some(last) = last.filter(|_| full) {
        let next = next_page_url(&headers, &params, last);
        if let Ok(value) = HeaderValue::from_str(&next) {
            response.headers_mut().insert("next-page", value);
        }
    }
    Ok(response)
}

/// Kinto-style `Next-Page`: the same query with the page token of the last job shown.
fn next_page_url(headers: &HeaderMap, params: &HashMap<String, String>, last: Uuid) -> String {
    let mut query: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| *k != "_token")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    query.push(("_token".into(), last.to_string()));
    query.sort();
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/v1/jobs?{encoded}")
}

/// Cancel a queued job (a running one finishes its attempt).
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job id")),
    responses(
        (status = 200, description = "Cancelled", body = OneJob),
        (status = 400, description = "Not a job id", body = ErrorBody),
        (status = 401, description = "Credentials refused, or none given where a permission needs them", body = ErrorBody),
        (status = 403, description = "Neither the requester nor an admin", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is not queued", body = ErrorBody),
        (status = 503, description = "The job store (or a credential's verifier) is unavailable", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, id).await?;
    let id = job.id;
    let requester = caller.principals.user_id() == Some(job.requested_by.as_str());
    let admin = state.permissions.is_admin(&caller.principals);
    state.require(&caller, requester || admin, || format!("cancel job {id}"))?;
    if !state.store.cancel(id, &state.requester(&caller)).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Errno::Conflict,
            format!(
                "job {id} is {}: only queued jobs can be cancelled",
                job.state
            ),
        ));
    }
    let job = state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(OneJob { data: job }).into_response())
}

async fn find_job(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
) -> Result<Job, ApiError> {
    let id = match id {
        Ok(Path(id)) => parse_id(&id)?,
        Err(rejection) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                Errno::InvalidResourceId,
                rejection.body_text(),
            ))
        }
    };
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Errno::InvalidResourceId,
            format!("{text:?} is not a job id"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::parse;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "\\PC{0,10}".prop_map(Value::from),
            prop::sample::select(JobKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>())
                .prop_map(Value::from),
            Just(json!([])),
            Just(json!({})),
        ]
    }

    proptest! {
        /// The oracle: a body is taken exactly when it holds no field but `resource` (text), `kind` (a job kind)
        /// and `priority` (an i32).
        #[test]
        fn a_job_body_is_taken_exactly_when_its_fields_are_right(
            fields in prop::collection::btree_map(
                prop::sample::select(vec!["resource", "kind", "priority", "Resource", "extra"]),
                any_value(),
                0..4,
            )
        ) {
            let body: Map<String, Value> = fields.clone().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let valid = fields.iter().all(|(name, value)| match *name {
                "resource" => value.is_string(),
                "kind" => value.as_str().is_some_and(|k| k.parse::<JobKind>().is_ok()),
                "priority" => value.as_i64().is_some_and(|p| i32::try_from(p).is_ok()),
                _ => false,
            }) && fields.contains_key("resource");
            let bytes = serde_json::to_vec(&body).unwrap();
            prop_assert_eq!(parse::<CreateJob>(&bytes).is_ok(), valid, "{}", Value::Object(body));
        }

        /// Any bytes: a body or a refusal, never a panic; arrays and scalars are refused.
        #[test]
        fn any_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if parse::<CreateJob>(&bytes).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&bytes).unwrap().is_object());
            }
        }
    }
}
