//! `GET /openapi.json`: the API's contract, generated from the handlers' annotations and the types they read and
//! write, so it cannot drift from the code (schemathesis checks the running API against it in the tests).

use super::{health, jobs, metrics, webhook};
use crate::answers::{Accepted, Ignored, JobPage, JobWithHistory, OneJob, Version, WebhookOutcome};
use crate::error::ErrorBody;
use axum::Json;
use signer_auth::webhook_hmac;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
};
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
        health::heartbeat, health::lbheartbeat, health::ready, health::version, metrics::scrape, openapi
    ),
    components(schemas(
        Accepted, Ignored, JobPage, JobWithHistory, OneJob, Version, WebhookOutcome, ErrorBody,
        signer_types::job::Job, signer_types::job::JobEvent, signer_types::job::Progress,
        signer_types::job::JobKind, signer_types::job::JobState, signer_types::job::Trigger,
    )),
    modifiers(&SecuritySchemes),
    tags(
        (name = "jobs", description = "Signing requests and their status"),
        (name = "webhook", description = "Kinto's events, from the listener plugin"),
        (name = "operations", description = "Health, version, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The credentials the API understands: every scheme of `[auth]` (each only when configured; anonymous calls
/// pass where `[permissions]` let everyone through), and the listener plugin's HMAC headers on the webhook.
struct SecuritySchemes;

/// The endpoints whose callers are identified (`identify` runs on them).
const IDENTIFIED: [&str; 4] = [
    "/v1/jobs",
    "/v1/jobs/{id}",
    "/v1/jobs/{id}/cancel",
    "/metrics",
];

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let header = |name: &str, description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                name,
                description,
            )))
        };
        let http = |scheme, description: &str| {
            let mut http = Http::new(scheme);
            http.description = Some(description.to_owned());
            SecurityScheme::Http(http)
        };
        let schemes = [
            ("basicauth", http(HttpAuthScheme::Basic, "[auth.basicauth] users (argon2 hashes); user id basicauth:<user>")),
            ("jwt", http(HttpAuthScheme::Bearer, "A JWT in `Authorization: <auth_type> <token>` (kinto_jwt's `JWT` by default, `Bearer` when configured) or in auth.jwt.http_header; user id jwt:<claim>")),
            ("cavage", header("Authorization", "`Signature keyId=...,headers=...,signature=...` (draft-cavage-http-signatures; the `Signature` header is read too); user id cavage:<keyId>")),
            ("rfc9421", header("Signature-Input", "RFC 9421 HTTP Message Signatures, with `Signature` and, for a body, `Content-Digest`; user id rfc9421:<keyid>")),
            ("mtls", SecurityScheme::MutualTls { description: Some("A client certificate from a CA of api.tls.client_ca_dir; user id mtls:<SAN or CN>, certificate policies as scope:<name>".into()), extensions: None }),
            ("kmsauth", header("X-Auth-Token", "A kmsauth token, with its username in `X-Auth-From` (or both as Basic credentials); user id kmsauth:<user_type>/<from>")),
        ];
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, scheme) in schemes.iter().cloned() {
            components.add_security_scheme(name, scheme);
        }
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
        // Any one scheme, or none (anonymous) where permissions allow it.
        let requirements: Vec<SecurityRequirement> =
            std::iter::once(SecurityRequirement::default())
                .chain(
                    schemes
                        .iter()
                        .map(|(name, _)| SecurityRequirement::new(*name, Vec::<String>::new())),
                )
                .collect();
        for path in IDENTIFIED {
            let Some(item) = openapi.paths.paths.get_mut(path) else {
                continue;
            };
            for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
                operation.security = Some(requirements.clone());
            }
        }
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
            "/__ready__",
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
        assert_eq!(schemes["mtls"]["type"], "mutualTLS");
        for path in IDENTIFIED {
            let operations = doc["paths"][path].as_object().unwrap();
            for (method, operation) in operations {
                let names: Vec<String> = operation["security"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{method} {path} names no security"))
                    .iter()
                    .flat_map(|r| r.as_object().unwrap().keys().cloned())
                    .collect();
                assert_eq!(names.len(), 6, "{method} {path}: {names:?}");
                for name in &names {
                    assert!(schemes.get(name).is_some(), "{name} is not declared");
                }
            }
        }
    }
}
