//! `GET /openapi.json`: the API's contract, generated from the handlers' annotations and the types they read and
//! write, so it cannot drift from the code (schemathesis checks the running API against it in the tests).

use crate::answers::{Accepted, Ignored, JobPage, JobWithHistory, OneJob, Version, WebhookOutcome};
use crate::auth::webhook_hmac;
use crate::error::ErrorBody;
use crate::routes::{health, jobs, metrics, webhook};
use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "kinto-signer-rs",
        description = "Signs Kinto collections asynchronously: requests become jobs in a queue, workers copy the \
                       source to its destination and sign it the way kinto-signer does. Errors have Kinto's shape.",
        license(name = "MPL-2.0"),
    ),
    paths(
        jobs::create, jobs::list, jobs::get, jobs::cancel, webhook::receive,
        health::heartbeat, health::lbheartbeat, health::version, metrics::scrape, openapi
    ),
    components(schemas(
        Accepted, Ignored, JobPage, JobWithHistory, OneJob, Version, WebhookOutcome, ErrorBody,
        signer_worker::job::Job, signer_worker::job::JobEvent, signer_worker::job::Progress,
        signer_worker::job::JobKind, signer_worker::job::JobState, signer_worker::job::Trigger,
    )),
    modifiers(&WebhookSignature),
    tags(
        (name = "jobs", description = "Signing requests and their status"),
        (name = "webhook", description = "Kinto's events, from the listener plugin"),
        (name = "operations", description = "Health, version, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The listener plugin's HMAC headers: both are required when `api.webhook_secret` is set.
struct WebhookSignature;

impl Modify for WebhookSignature {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        components.add_security_scheme(
            "webhook_timestamp",
            header(
                webhook_hmac::TIMESTAMP_HEADER,
                "Unix seconds when the call was signed; refused when more than 5 minutes off",
            ),
        );
        components.add_security_scheme(
            "webhook_signature",
            header(
                webhook_hmac::SIGNATURE_HEADER,
                "`sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` with api.webhook_secret",
            ),
        );
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_and_both_resource_patterns_agree() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/v1/jobs",
            "/v1/jobs/{id}",
            "/v1/jobs/{id}/cancel",
            "/v1/webhooks/kinto",
            "/__heartbeat__",
            "/__lbheartbeat__",
            "/__version__",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(paths.contains_key(path), "{path} is not described");
        }
        // utoipa takes only literals: the body's and the query's copies of the pattern must not drift apart.
        let body = &doc["components"]["schemas"]["CreateJob"]["properties"]["resource"]["pattern"];
        let query = doc["paths"]["/v1/jobs"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "resource")
            .unwrap()["schema"]["pattern"]
            .clone();
        assert!(body.is_string(), "{body}");
        assert_eq!(body, &query);
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(
            schemes["webhook_signature"]["name"],
            webhook_hmac::SIGNATURE_HEADER
        );
    }
}
