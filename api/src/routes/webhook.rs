//! `POST /v1/webhooks/kinto`: Kinto's event payload (a collection changed), as the listener plugin of
//! `deploy/kinto` posts it; a collection whose `status` became `to-sign`, `to-review`, `to-resign` or
//! `to-rollback` gets a job, and a deleted source collection a cleanup of its preview and destination. Batched
//! changes arrive as one event with several impacted objects, each decided alone.

use crate::answers::{Accepted, Ignored, WebhookOutcome};
use crate::body::{parse, JsonBytes};
use crate::error::{ApiError, Errno, ErrorBody};
use crate::prefer;
use crate::routes::jobs::accepted;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use signer_auth::webhook_hmac;
use signer_types::job::{JobKind, Trigger};
use signer_types::CollectionRef;
use signer_worker::pipeline::workflow;
use signer_worker::store::JobStore as _;

/// The most changed objects one call may carry: a Kinto batch holds at most `batch_max_requests` (25 by default)
/// sub-requests, so a bigger event did not come from Kinto.
pub const MAX_IMPACTED_OBJECTS: usize = 100;

/// Kinto's event payload (`ResourceChanged`), as the listener plugin of `deploy/kinto` posts it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct KintoEvent {
    action: String,
    resource_name: String,
    bucket_id: Option<String>,
    #[serde(default)]
    collection_id: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    timestamp: Option<i64>,
    /// Each changed object, `{"old": {...}, "new": {...}}` (an object, not serde's tuple form of a struct).
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    impacted_objects: Vec<serde_json::Map<String, Value>>,
}

/// What to do with one impacted object of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Enqueue {
        collection: CollectionRef,
        kind: JobKind,
        previous_status: Option<String>,
    },
    Ignore {
        uri: Option<String>,
        reason: String,
    },
}

/// Pure: which collections of the event asked for work. A status asks when it *becomes* one of `to-sign`,
/// `to-review`, `to-resign`, `to-rollback`. Leaving `to-sign`, `to-resign` or `to-rollback` is the service
/// writing its answer (a refused approval put back to `to-review`, a re-sign restoring the status), not a request.
pub fn decide(event: &KintoEvent) -> Vec<Decision> {
    let ignore_all = |reason: String| {
        vec![Decision::Ignore {
            uri: event.uri.clone(),
            reason,
        }]
    };
    if event.resource_name != "collection" {
        return ignore_all(format!(
            "{} events do not request signatures",
            event.resource_name
        ));
    }
    let deleted = match event.action.as_str() {
        "create" | "update" => false,
        "delete" => true,
        other => {
            return ignore_all(format!(
                "{other} of a collection does not request a signature"
            ))
        }
    };
    let Some(bucket) = event.bucket_id.as_deref() else {
        return ignore_all("the event has no bucket_id".into());
    };
    if event.impacted_objects.is_empty() {
        return ignore_all("the event has no impacted_objects".into());
    }
    if deleted {
        return event
            .impacted_objects
            .iter()
            .map(|o| cleanup(bucket, o))
            .collect();
    }
    event
        .impacted_objects
        .iter()
        .map(|object| {
            let status = |v: Option<&Value>| {
                v.and_then(|v| v.get("status"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let id = object
                .get("new")
                .and_then(|n| n.get("id"))
                .and_then(Value::as_str)
                .or(event.collection_id.as_deref());
            let Some(id) = id else {
                return Decision::Ignore {
                    uri: event.uri.clone(),
                    reason: "impacted object has no id".into(),
                };
            };
            let collection = match CollectionRef::from_ids(bucket, id) {
                Ok(collection) => collection,
                Err(e) => {
                    return Decision::Ignore {
                        uri: None,
                        reason: e.to_string(),
                    }
                }
            };
            let ignore = |reason: String| Decision::Ignore {
                uri: Some(collection.uri()),
                reason,
            };
            let (old, new) = (status(object.get("old")), status(object.get("new")));
            let Some(new) = new else {
                return ignore("collection has no status".into());
            };
            let Some(kind) = workflow::kind_for_status(&new) else {
                return ignore(format!("status {new:?} asks for nothing"));
            };
            match old {
                Some(old) if old == new => ignore(format!("status was already {new:?}")),
                Some(old) if matches!(old.as_str(), "to-sign" | "to-resign" | "to-rollback") => {
                    ignore(format!("{old:?} -> {new:?} is the signer's own answer"))
                }
                // A source is created unreviewed and first signed as it is (empty): nothing was reviewed, so the
                // job records no reviewer, as kinto-remote-settings' first signature does (it too counts the
                // previous status as `signed`).
                _ if event.action == "create" => Decision::Enqueue {
                    collection,
                    kind,
                    previous_status: Some(workflow::SIGNED.to_owned()),
                },
                previous_status => Decision::Enqueue {
                    collection,
                    kind,
                    previous_status,
                },
            }
        })
        .collect()
}

/// A deleted collection (if it is a configured source) has its preview and destination emptied and signed.
fn cleanup(bucket: &str, object: &serde_json::Map<String, Value>) -> Decision {
    let old = object.get("old");
    let id = old.and_then(|o| o.get("id")).and_then(Value::as_str);
    match id.map(|id| CollectionRef::from_ids(bucket, id)) {
        Some(Err(e)) => Decision::Ignore {
            uri: None,
            reason: e.to_string(),
        },
        Some(Ok(collection)) => Decision::Enqueue {
            collection,
            kind: JobKind::Cleanup,
            previous_status: old
                .and_then(|o| o.get("status"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        },
        None => Decision::Ignore {
            uri: None,
            reason: "deleted object has no id".into(),
        },
    }
}

/// Kinto's event for committed collection changes. A collection whose `status` became `to-sign`, `to-review`,
/// `to-resign` or `to-rollback` gets a job; anything else is ignored, with the reason. With `api.webhook_secret`
/// set, the call must carry the listener's HMAC headers. With `Prefer: wait=N` (RFC 7240, at most 60 s) the
/// answer is held until the jobs are final or N seconds passed (`Preference-Applied: wait=N`); the jobs in it
/// show which.
#[utoipa::path(
    post, path = "/v1/webhooks/kinto", tag = "webhook",
    request_body = KintoEvent,
    security((), ("webhook_timestamp" = [], "webhook_signature" = [])),
    responses(
        (status = 202, description = "Jobs recorded: one job (as `POST /v1/jobs` answers), or several with what was ignored",
            content((Accepted), (WebhookOutcome))),
        (status = 200, description = "Nothing to do: every change was ignored, with the reason", body = WebhookOutcome),
        (status = 400, description = "Not JSON, or not a Kinto event", body = ErrorBody),
        (status = 401, description = "Missing, stale or wrong HMAC signature (when a secret is configured), or no secret while permissions are enforced", body = ErrorBody),
        (status = 409, description = "This signed call was already received (a replay)", body = ErrorBody),
        (status = 413, description = "Body larger than api.max_body_bytes (a declared Content-Length is refused before reading)", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 503, description = "The job store is unavailable: nothing was recorded", body = ErrorBody),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    if state.webhook_secret.is_none() && state.permissions.enforced() {
        signer_worker::metrics::metrics()
            .auth_failures
            .with_label_values(&["webhook_hmac", "missing"])
            .inc();
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            Errno::Unauthorized,
            "the webhook is closed: [permissions] are enforced and api.webhook_secret is not set, so no call can be authenticated",
        ));
    }
    if let Some(secret) = &state.webhook_secret {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let verified = webhook_hmac::verify(
            secret,
            header(webhook_hmac::TIMESTAMP_HEADER),
            header(webhook_hmac::SIGNATURE_HEADER),
            &body,
            chrono::Utc::now().timestamp(),
        )
        .map_err(|e| {
            tracing::warn!(error = %e, "webhook call refused");
            signer_worker::metrics::metrics()
                .auth_failures
                .with_label_values(&["webhook_hmac", e.reason()])
                .inc();
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                Errno::Unauthorized,
                format!("webhook signature: {e}"),
            )
        })?;
        let remember_until = chrono::DateTime::from_timestamp(verified.acceptable_until, 0)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        if !state.store.first_use(&verified.mac, remember_until).await? {
            tracing::warn!("webhook call refused: already received");
            signer_worker::metrics::metrics()
                .auth_failures
                .with_label_values(&["webhook_hmac", "replayed"])
                .inc();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                Errno::Conflict,
                "webhook call already received: each signed call is accepted once",
            ));
        }
    }
    let event: KintoEvent = parse(&body)?;
    if event.impacted_objects.len() > MAX_IMPACTED_OBJECTS {
        return Err(ApiError::invalid(format!(
            "{} impacted objects in one event: at most {MAX_IMPACTED_OBJECTS} (Kinto's batches are smaller)",
            event.impacted_objects.len()
        )));
    }
    let requested_by = event
        .user_id
        .clone()
        .unwrap_or_else(|| state.default_principal.to_string());
    let mut enqueued = Vec::new();
    let mut ignored = Vec::new();
    for decision in decide(&event) {
        match decision {
            Decision::Enqueue {
                collection,
                kind,
                previous_status,
            } => match state.resolve(&collection) {
                Some(resource) => {
                    let mut new =
                        state.new_job(&resource, kind, Trigger::Webhook, requested_by.clone(), 0);
                    new.source_timestamp = event.timestamp;
                    new.previous_status = previous_status;
                    let job = state.store.enqueue(new).await?;
                    signer_worker::store::count_enqueued(Trigger::Webhook, &job);
                    enqueued.push(job);
                }
                None => ignored.push(Ignored {
                    uri: Some(collection.uri()),
                    reason: "not a configured source collection".into(),
                }),
            },
            Decision::Ignore { uri, reason } => ignored.push(Ignored { uri, reason }),
        }
    }
    let waited = prefer::wait(&headers);
    if let Some(seconds) = waited.filter(|_| !enqueued.is_empty()) {
        let jobs = enqueued.iter().map(|e| e.job.clone()).collect();
        let now = prefer::until_final(&state.store, jobs, seconds).await?;
        for (enqueued, job) in enqueued.iter_mut().zip(now) {
            enqueued.job = job;
        }
    }
    let mut response = match enqueued.as_slice() {
        [single] if ignored.is_empty() => accepted(single),
        _ => {
            let status = if enqueued.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let jobs = enqueued.iter().map(Accepted::from).collect();
            (status, Json(WebhookOutcome { jobs, ignored })).into_response()
        }
    };
    if let Some(seconds) = waited {
        response.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_str(&format!("wait={seconds}")).expect("digits are a header value"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> KintoEvent {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn status_becoming_to_sign_requests_a_signature() {
        let e = event(json!({
            "action": "update", "resource_name": "collection", "bucket_id": "ws", "collection_id": "cfr",
            "uri": "/buckets/ws/collections/cfr", "user_id": "account:alice", "timestamp": 1,
            "impacted_objects": [{"old": {"id": "cfr", "status": "work-in-progress"}, "new": {"id": "cfr", "status": "to-sign"}}]
        }));
        assert_eq!(
            decide(&e),
            vec![Decision::Enqueue {
                collection: CollectionRef::new("ws", "cfr"),
                kind: JobKind::Sign,
                previous_status: Some("work-in-progress".into())
            }]
        );
    }

    #[test]
    fn batched_event_decides_each_collection() {
        let e = event(json!({
            "action": "update", "resource_name": "collection", "bucket_id": "ws",
            "impacted_objects": [
                {"old": {"id": "a", "status": "signed"}, "new": {"id": "a", "status": "to-sign"}},
                {"old": {"id": "b", "status": "to-sign"}, "new": {"id": "b", "status": "to-sign"}},
                {"old": {"id": "c"}, "new": {"id": "c", "status": "to-review"}},
                {"new": {"id": "d", "status": "to-rollback"}},
                {"new": {"id": "e"}},
                {"old": {"id": "f", "status": "to-sign"}, "new": {"id": "f", "status": "to-review"}},
                {"old": {"id": "g", "status": "to-resign"}, "new": {"id": "g", "status": "to-review"}},
                {"old": {"id": "h", "status": "to-review"}, "new": {"id": "h", "status": "work-in-progress"}}
            ]
        }));
        let decisions = decide(&e);
        let enqueue = |id: &str, kind, previous: Option<&str>| Decision::Enqueue {
            collection: CollectionRef::new("ws", id),
            kind,
            previous_status: previous.map(str::to_owned),
        };
        assert_eq!(decisions[0], enqueue("a", JobKind::Sign, Some("signed")));
        assert!(
            matches!(&decisions[1], Decision::Ignore { reason, .. } if reason.contains("already"))
        );
        assert_eq!(decisions[2], enqueue("c", JobKind::Review, None));
        assert_eq!(decisions[3], enqueue("d", JobKind::Rollback, None));
        assert!(
            matches!(&decisions[4], Decision::Ignore { reason, .. } if reason.contains("no status"))
        );
        for refused_or_restored in &decisions[5..7] {
            assert!(
                matches!(refused_or_restored, Decision::Ignore { reason, .. } if reason.contains("own answer")),
                "{refused_or_restored:?}"
            );
        }
        assert!(
            matches!(&decisions[7], Decision::Ignore { reason, .. } if reason.contains("asks for nothing"))
        );
    }

    #[test]
    fn a_created_source_is_signed_without_a_reviewer() {
        let e = event(json!({
            "action": "create", "resource_name": "collection", "bucket_id": "ws",
            "impacted_objects": [{"new": {"id": "cfr", "status": "to-sign"}}]
        }));
        assert_eq!(
            decide(&e),
            vec![Decision::Enqueue {
                collection: CollectionRef::new("ws", "cfr"),
                kind: JobKind::Sign,
                previous_status: Some("signed".into())
            }]
        );
        let fields = workflow::source_update(
            JobKind::Sign,
            "account:alice",
            "now",
            Some("to-sign"),
            Some("signed"),
        );
        assert_eq!(fields["last_signature_by"], "account:alice");
        assert!(!fields.contains_key("last_review_by"), "{fields:?}");
    }

    #[test]
    fn record_events_are_ignored_and_a_deleted_collection_is_cleaned_up() {
        let record = event(
            json!({"action": "create", "resource_name": "record", "bucket_id": "ws", "impacted_objects": [{}]}),
        );
        assert!(
            matches!(&decide(&record)[0], Decision::Ignore { reason, .. } if reason.contains("record events"))
        );
        let delete = event(json!({
            "action": "delete", "resource_name": "collection", "bucket_id": "ws",
            "impacted_objects": [{"old": {"id": "cfr", "status": "signed"}, "new": {"id": "cfr", "deleted": true}}, {}]
        }));
        let decisions = decide(&delete);
        assert_eq!(
            decisions[0],
            Decision::Enqueue {
                collection: CollectionRef::new("ws", "cfr"),
                kind: JobKind::Cleanup,
                previous_status: Some("signed".into())
            }
        );
        assert!(
            matches!(&decisions[1], Decision::Ignore { reason, .. } if reason.contains("no id"))
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use signer_types::check_id;

        /// Ids as a hostile sender would write them, beside valid ones.
        fn id() -> impl Strategy<Value = Value> {
            prop_oneof![
                "[a-z0-9][a-z0-9_-]{0,10}".prop_map(Value::from),
                Just(Value::from("x/../../../ws-b/collections/things")),
                Just(Value::from("regions?_since=1")),
                Just(Value::from("")),
                Just(Value::from("-lead")),
                Just(Value::from("r\u{e9}gions")),
                Just(Value::from("x".repeat(300))),
                "\\PC{0,12}".prop_map(Value::from),
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
            ]
        }

        fn status() -> impl Strategy<Value = Value> {
            prop_oneof![
                prop::sample::select(vec![
                    "to-sign",
                    "to-review",
                    "to-resign",
                    "to-rollback",
                    "signed",
                    "work-in-progress",
                ])
                .prop_map(Value::from),
                "\\PC{0,10}".prop_map(Value::from),
                Just(Value::Null),
            ]
        }

        fn object() -> impl Strategy<Value = Value> {
            (id(), status(), any::<bool>(), any::<bool>()).prop_map(
                |(id, status, with_old, deleted)| {
                    let new = if deleted {
                        json!({"id": id, "deleted": true})
                    } else {
                        json!({"id": id, "status": status})
                    };
                    if with_old {
                        json!({"new": new, "old": {"id": id, "status": "work-in-progress"}})
                    } else {
                        json!({"new": new})
                    }
                },
            )
        }

        fn event() -> impl Strategy<Value = Value> {
            (
                prop::sample::select(vec!["create", "update", "delete", "read", ""]),
                prop::sample::select(vec!["collection", "record", "bucket", "group"]),
                id(),
                prop::collection::vec(object(), 0..5),
            )
                .prop_map(|(action, resource_name, bucket_id, impacted)| {
                    json!({"action": action, "resource_name": resource_name, "bucket_id": bucket_id,
                           "uri": "/buckets/x", "impacted_objects": impacted})
                })
        }

        proptest! {
            /// Whatever the event says, work is only ever queued for collections whose ids pass the check.
            #[test]
            fn only_valid_ids_are_ever_enqueued(event in event()) {
                let Ok(event) = serde_json::from_value::<KintoEvent>(event) else { return Ok(()) };
                for decision in decide(&event) {
                    if let Decision::Enqueue { collection, .. } = decision {
                        prop_assert!(check_id(&collection.bucket).is_ok() && check_id(&collection.collection).is_ok(),
                            "{collection:?}");
                    }
                }
            }

            /// Any bytes as a body: an event or a refusal, never a panic.
            #[test]
            fn any_body_parses_or_is_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(event) = parse::<KintoEvent>(&bytes) {
                    let _ = decide(&event);
                }
            }
        }
    }
}
