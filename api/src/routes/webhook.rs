//! `POST /v1/webhooks/kinto`: Kinto's event payload (a collection changed); a collection whose `status` became
//! `to-sign` gets a job. Batched changes arrive as one event with several impacted objects, each decided alone.

use crate::body::JsonBody;
use crate::error::ApiError;
use crate::routes::jobs::accepted;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use signer_worker::config::CollectionRef;
use signer_worker::job::Trigger;
use signer_worker::store::JobStore as _;

#[derive(Debug, Deserialize)]
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
    #[serde(default)]
    impacted_objects: Vec<Impacted>,
}

#[derive(Debug, Deserialize)]
struct Impacted {
    #[serde(default)]
    new: Option<Value>,
    #[serde(default)]
    old: Option<Value>,
}

/// What to do with one impacted object of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Sign(CollectionRef),
    Ignore { uri: Option<String>, reason: String },
}

/// Pure: which collections of the event asked for a signature.
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
    if !matches!(event.action.as_str(), "create" | "update") {
        return ignore_all(format!(
            "{} of a collection does not request a signature",
            event.action
        ));
    }
    let Some(bucket) = event.bucket_id.as_deref() else {
        return ignore_all("the event has no bucket_id".into());
    };
    if event.impacted_objects.is_empty() {
        return ignore_all("the event has no impacted_objects".into());
    }
    event
        .impacted_objects
        .iter()
        .map(|object| {
            let status = |v: &Option<Value>| {
                v.as_ref()
                    .and_then(|v| v.get("status"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let id = object
                .new
                .as_ref()
                .and_then(|n| n.get("id"))
                .and_then(Value::as_str)
                .or(event.collection_id.as_deref());
            let Some(id) = id else {
                return Decision::Ignore {
                    uri: event.uri.clone(),
                    reason: "impacted object has no id".into(),
                };
            };
            let collection = CollectionRef::new(bucket, id);
            match (status(&object.old), status(&object.new)) {
                (_, Some(new)) if new != "to-sign" => Decision::Ignore {
                    uri: Some(collection.uri()),
                    reason: format!("status is {new:?}, not \"to-sign\""),
                },
                (_, None) => Decision::Ignore {
                    uri: Some(collection.uri()),
                    reason: "collection has no status".into(),
                },
                (Some(old), _) if old == "to-sign" => Decision::Ignore {
                    uri: Some(collection.uri()),
                    reason: "status was already \"to-sign\"".into(),
                },
                _ => Decision::Sign(collection),
            }
        })
        .collect()
}

pub async fn receive(
    State(state): State<AppState>,
    JsonBody(event): JsonBody<KintoEvent>,
) -> Result<Response, ApiError> {
    let requested_by = event
        .user_id
        .clone()
        .unwrap_or_else(|| state.default_principal.to_string());
    let mut enqueued = Vec::new();
    let mut ignored = Vec::new();
    for decision in decide(&event) {
        match decision {
            Decision::Sign(source) => match state.resolve(&source) {
                Some(resource) => {
                    let mut new =
                        state.new_job(&resource, Trigger::Webhook, requested_by.clone(), 0);
                    new.source_timestamp = event.timestamp;
                    enqueued.push(state.store.enqueue(new).await?);
                }
                None => ignored.push(
                    json!({"uri": source.uri(), "reason": "not a configured source collection"}),
                ),
            },
            Decision::Ignore { uri, reason } => ignored.push(json!({"uri": uri, "reason": reason})),
        }
    }
    if let [single] = enqueued.as_slice() {
        if ignored.is_empty() {
            return Ok(accepted(single));
        }
    }
    let status = if enqueued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let jobs: Vec<Value> = enqueued
        .iter()
        .map(|e| json!({"data": e.job, "coalesced": e.coalesced}))
        .collect();
    Ok((status, Json(json!({"jobs": jobs, "ignored": ignored}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            vec![Decision::Sign(CollectionRef::new("ws", "cfr"))]
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
                {"new": {"id": "d", "status": "to-sign"}},
                {"new": {"id": "e"}}
            ]
        }));
        let decisions = decide(&e);
        assert_eq!(decisions[0], Decision::Sign(CollectionRef::new("ws", "a")));
        assert!(
            matches!(&decisions[1], Decision::Ignore { reason, .. } if reason.contains("already"))
        );
        assert!(
            matches!(&decisions[2], Decision::Ignore { reason, .. } if reason.contains("to-review"))
        );
        assert_eq!(decisions[3], Decision::Sign(CollectionRef::new("ws", "d")));
        assert!(
            matches!(&decisions[4], Decision::Ignore { reason, .. } if reason.contains("no status"))
        );
    }

    #[test]
    fn record_and_delete_events_are_ignored() {
        let record = event(
            json!({"action": "create", "resource_name": "record", "bucket_id": "ws", "impacted_objects": [{}]}),
        );
        assert!(
            matches!(&decide(&record)[0], Decision::Ignore { reason, .. } if reason.contains("record events"))
        );
        let delete = event(
            json!({"action": "delete", "resource_name": "collection", "bucket_id": "ws", "impacted_objects": [{}]}),
        );
        assert!(
            matches!(&decide(&delete)[0], Decision::Ignore { reason, .. } if reason.contains("delete"))
        );
    }
}
