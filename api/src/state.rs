use signer_worker::config::{CollectionRef, Resource, Resources, Settings};
use signer_worker::job::{JobKind, NewJob, Trigger};
use signer_worker::store::Store;
use std::sync::Arc;

/// What every handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub resources: Arc<Resources>,
    /// The source Kinto's base URL, to accept full record URIs in requests.
    pub source_url: Arc<str>,
    /// Recorded as `requested_by` for API calls until callers authenticate.
    pub default_principal: Arc<str>,
    pub max_attempts: i32,
    /// Webhook calls must be signed with it when set.
    pub webhook_secret: Option<Arc<[u8]>>,
    pub health: Arc<signer_worker::health::Health>,
    /// Cancelled at SIGTERM: readiness fails from then on, while requests are still served for a moment.
    pub draining: tokio_util::sync::CancellationToken,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        settings: &Settings,
        health: signer_worker::health::Health,
    ) -> Result<Self, signer_worker::config::ConfigError> {
        Ok(Self {
            draining: tokio_util::sync::CancellationToken::new(),
            health: Arc::new(health),
            store,
            resources: Arc::new(settings.parsed_resources()?),
            source_url: settings.kinto.source.url.trim_end_matches('/').into(),
            default_principal: settings.plugin_userid.as_str().into(),
            max_attempts: settings.queue.max_attempts,
            webhook_secret: settings
                .api
                .webhook_secret
                .as_ref()
                .map(|s| Arc::from(s.as_bytes())),
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
}
