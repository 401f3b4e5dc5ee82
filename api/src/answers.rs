//! The bodies the API answers with, typed so that the handlers and the OpenAPI document share one definition.

use serde::Serialize;
use signer_types::job::{Job, JobEvent};
use signer_worker::store::Enqueued;
use utoipa::ToSchema;

/// A recorded signing request: the new job, or the queued one it joined.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub data: Job,
    /// True when an already queued job for the collection was returned instead of a new one.
    pub coalesced: bool,
}

impl From<&Enqueued> for Accepted {
    fn from(enqueued: &Enqueued) -> Self {
        Self {
            data: enqueued.job.clone(),
            coalesced: enqueued.coalesced,
        }
    }
}

/// A job and every transition it went through.
#[derive(Serialize, ToSchema)]
pub struct JobWithHistory {
    pub data: Job,
    pub history: Vec<JobEvent>,
}

/// One page of jobs, newest first; the `Next-Page` header links the next one.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    pub data: Vec<Job>,
}

/// A job.
#[derive(Serialize, ToSchema)]
pub struct OneJob {
    pub data: Job,
}

/// What a webhook call became when it did not make exactly one job: the jobs it recorded and the collections
/// it ignored, with why.
#[derive(Serialize, ToSchema)]
pub struct WebhookOutcome {
    pub jobs: Vec<Accepted>,
    pub ignored: Vec<Ignored>,
}

#[derive(Serialize, ToSchema)]
pub struct Ignored {
    pub uri: Option<String>,
    pub reason: String,
}

/// `GET /__version__`, as Kinto and Autograph answer it.
#[derive(Serialize, ToSchema)]
pub struct Version {
    pub name: &'static str,
    pub version: &'static str,
    pub commit: &'static str,
}
