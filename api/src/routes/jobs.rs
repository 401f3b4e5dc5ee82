//! `POST /v1/jobs`, `GET /v1/jobs`, `GET /v1/jobs/{id}`, `POST /v1/jobs/{id}/cancel`.

use crate::body::JsonBody;
use crate::error::{ApiError, Errno};
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use signer_worker::config::CollectionRef;
use signer_worker::job::{Job, JobKind, JobState, Trigger};
use signer_worker::store::{Enqueued, JobFilter, JobStore as _};
use std::collections::HashMap;
use uuid::Uuid;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// `bucket/collection`, `/buckets/b/collections/c`, or the full URL on the source server.
    resource: String,
    #[serde(default = "default_kind")]
    kind: JobKind,
    #[serde(default)]
    priority: i32,
}

fn default_kind() -> JobKind {
    JobKind::Sign
}

pub async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateJob>,
) -> Result<Response, ApiError> {
    let source = parse_source(&state, &body.resource)?;
    let resource = state.resolve(&source).ok_or_else(|| {
        ApiError::not_found(format!("{source} is not a configured source collection"))
    })?;
    let new = state.new_job(
        &resource,
        body.kind,
        Trigger::Api,
        state.default_principal.to_string(),
        body.priority,
    );
    let enqueued = state.store.enqueue(new).await?;
    signer_worker::store::count_enqueued(Trigger::Api, &enqueued);
    Ok(accepted(&enqueued))
}

/// 202 with the job and its `Location`, whether it is new or the queued job it coalesced onto.
pub fn accepted(enqueued: &Enqueued) -> Response {
    let location = format!("/v1/jobs/{}", enqueued.job.id);
    let body = json!({"data": enqueued.job, "coalesced": enqueued.coalesced});
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("a uuid path is ASCII"),
    );
    response
}

fn parse_source(state: &AppState, text: &str) -> Result<CollectionRef, ApiError> {
    let text = text.trim();
    let path = if text.starts_with("http://") || text.starts_with("https://") {
        text.strip_prefix(&*state.source_url).ok_or_else(|| {
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

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, &id).await?;
    let history = state.store.history(job.id).await?;
    Ok(Json(json!({"data": job, "history": history})).into_response())
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let invalid =
        |message: String| ApiError::new(StatusCode::BAD_REQUEST, Errno::InvalidParameters, message);
    let mut filter = JobFilter {
        limit: DEFAULT_PAGE,
        ..JobFilter::default()
    };
    for (name, value) in &params {
        match name.as_str() {
            "resource" => filter.resource = Some(parse_source(&state, value)?.uri()),
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
    let jobs = state.store.list(&filter).await?;
    let mut response = Json(json!({"data": jobs})).into_response();
    if let Some(last) = jobs.last().filter(|_| jobs.len() as i64 == filter.limit) {
        let next = next_page_url(&headers, &params, last.id);
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

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = find_job(&state, &id).await?;
    let id = job.id;
    if !state.store.cancel(id, &state.default_principal).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            Errno::Conflict,
            format!(
                "job {id} is {}: only queued jobs can be cancelled",
                job.state
            ),
        ));
    }
    let job = state.store.get(id).await?;
    Ok(Json(json!({"data": job})).into_response())
}

async fn find_job(state: &AppState, id: &str) -> Result<Job, ApiError> {
    let id = parse_id(id)?;
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
