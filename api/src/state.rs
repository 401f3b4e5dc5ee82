use crate::error::{ApiError, Errno};
use crate::settings::ApiSettings;
use axum::http::StatusCode;
use signer_auth::{Authenticator, Caller, Reason, Refused};
use signer_types::job::{JobKind, NewJob, Trigger};
use signer_types::{CollectionRef, Resource, Resources};
use signer_worker::acl::Permissions;
use signer_worker::config::Settings;
use signer_worker::store::Store;
use std::sync::Arc;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub resources: Arc<Resources>,
    /// The source Kinto's base URL, to accept full record URIs in requests.
    pub source_url: Arc<str>,
    /// Recorded as `requested_by` for anonymous callers.
    pub default_principal: Arc<str>,
    pub max_attempts: i32,
    pub max_body_bytes: usize,
    /// Webhook calls must be signed with it when set.
    pub webhook_secret: Option<Arc<[u8]>>,
    pub auth: Arc<Authenticator>,
    pub permissions: Arc<Permissions>,
    pub health: Arc<signer_worker::health::Health>,
    /// Cancelled at SIGTERM: readiness fails from then on, while requests are still served for a moment.
    pub draining: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        settings: &Settings,
        api: &ApiSettings,
        health: signer_worker::health::Health,
        auth: Authenticator,
    ) -> anyhow::Result<Self> {
        let permissions = Permissions::new(settings.permissions.clone())?;
        if !permissions.enforced() {
            tracing::warn!(
                "no [permissions]: anyone who reaches the API may request signatures and read every job"
            );
        } else if api.webhook_secret.is_none() {
            tracing::warn!(
                "[permissions] without api.webhook_secret: the Kinto webhook refuses every call"
            );
        }
        Ok(Self {
            draining: tokio_util::sync::CancellationToken::new(),
            health: Arc::new(health),
            store,
            resources: Arc::new(settings.parsed_resources()?),
            source_url: settings.kinto.source.url.trim_end_matches('/').into(),
            default_principal: settings.plugin_userid.as_str().into(),
            max_attempts: settings.queue.max_attempts,
            max_body_bytes: api.max_body_bytes,
            webhook_secret: api.webhook_secret.as_ref().map(|s| Arc::from(s.as_bytes())),
            auth: Arc::new(auth),
            permissions: Arc::new(permissions),
        })
    }

    pub fn resolve(&self, source: &CollectionRef) -> Option<Resource> {
        self.resources.resolve(source)
    }

    pub fn new_job(
        &self,
        resource: &Resource,
        kind: JobKind,
        trigger: Trigger,
        requested_by: String,
        priority: i32,
    ) -> NewJob {
        NewJob {
            priority,
            ..NewJob::new(resource, kind, trigger, requested_by, self.max_attempts)
        }
    }

    /// Who a job records as having asked: the caller's user id, or the plugin's for anonymous callers.
    pub fn requester(&self, caller: &Caller) -> String {
        caller
            .principals
            .user_id()
            .map_or_else(|| self.default_principal.to_string(), str::to_owned)
    }

    /// A refused credential: counted, logged (never the credential), answered 401 with the accepted schemes, or
    /// 503 when it could not be checked.
    pub fn refused(&self, refused: Refused) -> ApiError {
        let Refused { scheme, refusal } = refused;
        count_refusal(scheme.name(), refusal.reason.label());
        tracing::info!(scheme = scheme.name(), reason = refusal.reason.label(), message = %refusal.message, "credentials refused");
        if refusal.reason == Reason::Unavailable {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Errno::Backend,
                refusal.message,
            );
        }
        if let Reason::Throttled {
            retry_after_seconds,
        } = refusal.reason
        {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                Errno::Unauthorized,
                refusal.message,
            );
            error.headers.push((
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_seconds),
            ));
            return error;
        }
        self.unauthorized(format!("{}: {}", scheme.name(), refusal.message))
    }

    /// Lets the request go on when `allowed`; otherwise 401 for an anonymous caller (who may yet prove who
    /// they are), 403 for a known one.
    pub fn require(
        &self,
        caller: &Caller,
        allowed: bool,
        what: impl FnOnce() -> String,
    ) -> Result<(), ApiError> {
        if allowed {
            Ok(())
        } else {
            Err(self.forbidden(caller, &what()))
        }
    }

    /// The answer to a caller who may not do `what`.
    pub fn forbidden(&self, caller: &Caller, what: &str) -> ApiError {
        match caller.principals.user_id() {
            None => {
                count_refusal("anonymous", "missing");
                self.unauthorized(format!("authentication required to {what}"))
            }
            Some(user) => {
                count_refusal(caller.scheme_label(), "forbidden");
                tracing::info!(user, scheme = caller.scheme_label(), %what, "forbidden");
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    Errno::Forbidden,
                    format!("{user} may not {what}"),
                )
            }
        }
    }

    fn unauthorized(&self, message: String) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, Errno::Unauthorized, message)
            .with_headers(self.auth.challenges().to_vec())
    }
}

fn count_refusal(scheme: &str, reason: &str) {
    signer_worker::metrics::metrics()
        .auth_failures
        .with_label_values(&[scheme, reason])
        .inc();
}
