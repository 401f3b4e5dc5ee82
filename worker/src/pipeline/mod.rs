//! One `sign` job, step by step (kinto-signer's `sign_and_update_destination`, spec §3.3):
//! snapshot source → (for the preview, then the destination:) ensure it exists → diff → push → list →
//! canonical JSON → sign → publish the signature → check the source did not move → mark the source `signed`.

mod diff;

pub use diff::{diff_records, Diff};

use crate::canonical::{self, CanonicalError};
use crate::config::{CollectionRef, Resource, Resources};
use crate::job::{Job, JobKind, Progress};
use crate::kinto::{KintoClient, KintoError, Listing};
use crate::signing::{SignatureMetadata, Signer, SigningError};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Where the pipeline says how far it got; the pool writes the latest value with the job's heartbeat.
pub type ProgressSender = tokio::sync::watch::Sender<Progress>;

fn enter(progress: &ProgressSender, phase: &str, collection: &CollectionRef) {
    progress.send_modify(|p| {
        p.phase = phase.to_owned();
        p.collection = collection.uri();
    });
}

/// Copied from the source collection metadata onto what we publish, so clients see the same schema and display.
const PUBLISHED_FIELDS: [&str; 5] = ["schema", "sort", "displayFields", "attachment", "flags"];

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0} is not a configured source collection")]
    UnknownResource(String),
    #[error("source collection {0} does not exist")]
    SourceMissing(String),
    #[error("job kind {0} is not handled by this worker")]
    UnsupportedKind(JobKind),
    #[error(transparent)]
    Kinto(#[from] KintoError),
    #[error("cannot sign: {0}")]
    Canonical(#[from] CanonicalError),
    #[error("signer: {0}")]
    Signing(#[from] SigningError),
    #[error("source {uri} changed during the job (records timestamp {before} then {after}): it will be signed again")]
    SourceChanged {
        uri: String,
        before: i64,
        after: i64,
    },
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Kinto(e) => e.is_transient(),
            PipelineError::SourceChanged { .. } => true,
            _ => false,
        }
    }
}

/// What a finished sign reports (stored as the job's `result`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SignOutcome {
    pub source_timestamp: i64,
    pub destination: Published,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Published>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Published {
    pub uri: String,
    pub timestamp: i64,
    pub records: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub payload_bytes: usize,
    pub signature: SignatureMetadata,
}

pub struct Pipeline<S> {
    resources: Resources,
    source: Arc<KintoClient>,
    destination: Arc<KintoClient>,
    signer: S,
}

impl<S: Signer> Pipeline<S> {
    pub fn new(
        resources: Resources,
        source: Arc<KintoClient>,
        destination: Arc<KintoClient>,
        signer: S,
    ) -> Self {
        Self {
            resources,
            source,
            destination,
            signer,
        }
    }

    /// Which collections a source URI maps to, if it is configured.
    pub fn resolve(&self, source_uri: &str) -> Option<Resource> {
        self.resources
            .resolve(&CollectionRef::parse(source_uri).ok()?)
    }

    pub async fn run(
        &self,
        job: &Job,
        progress: &ProgressSender,
    ) -> Result<SignOutcome, PipelineError> {
        if job.kind != JobKind::Sign {
            return Err(PipelineError::UnsupportedKind(job.kind));
        }
        let resource = self
            .resolve(&job.resource)
            .ok_or_else(|| PipelineError::UnknownResource(job.resource.clone()))?;
        let source_ref = &resource.source;
        let metadata = self
            .source
            .get_collection(source_ref)
            .await?
            .ok_or_else(|| PipelineError::SourceMissing(source_ref.uri()))?;
        enter(progress, "snapshot", source_ref);
        let snapshot = self
            .source
            .list_records(source_ref, |n| {
                progress.send_modify(|p| p.records_fetched = n)
            })
            .await?;
        tracing::info!(
            records = snapshot.records.len(),
            timestamp = snapshot.timestamp,
            "source snapshot"
        );
        // Refuse unsignable data before anything is written anywhere.
        canonical::signed_payload(&snapshot.records, 0)?;

        let preview = match &resource.preview {
            Some(preview) => Some(
                self.publish(preview, &snapshot, &metadata.data, progress)
                    .await?,
            ),
            None => None,
        };
        let destination = self
            .publish(&resource.destination, &snapshot, &metadata.data, progress)
            .await?;

        // Never mark signed what was not copied: the records must not have moved since the snapshot.
        enter(progress, "finish", source_ref);
        let now = self.source.records_timestamp(source_ref).await?;
        if now != snapshot.timestamp {
            return Err(PipelineError::SourceChanged {
                uri: source_ref.uri(),
                before: snapshot.timestamp,
                after: now,
            });
        }
        let status = json!({
            "status": "signed",
            "last_signature_by": job.requested_by,
            "last_signature_date": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
        });
        self.source
            .patch_collection(source_ref, status, Some(metadata.last_modified))
            .await?;
        Ok(SignOutcome {
            source_timestamp: snapshot.timestamp,
            destination,
            preview,
        })
    }

    /// Brings one target in line with the snapshot, signs what it holds afterwards and publishes the signature.
    async fn publish(
        &self,
        target: &CollectionRef,
        snapshot: &Listing,
        source_metadata: &Value,
        progress: &ProgressSender,
    ) -> Result<Published, PipelineError> {
        let kinto = &self.destination;
        enter(progress, "push", target);
        kinto.ensure_bucket(&target.bucket).await?;
        kinto.ensure_collection(target).await?;
        let before = kinto.list_records(target, |_| {}).await?;
        let diff = diff_records(&snapshot.records, &before.records);
        progress.send_modify(|p| p.records_to_push = diff.writes.len());
        kinto
            .apply(target, &diff.writes, |n| {
                progress.send_modify(|p| p.records_pushed = n)
            })
            .await?;
        let (created, updated, deleted, unchanged) = (
            diff.created,
            diff.updated,
            diff.deleted,
            diff.writes.is_empty(),
        );
        drop(diff);
        tracing::info!(target = %target, created, updated, deleted, "pushed");

        // Sign what the target holds now, with its own records timestamp: what clients will fetch.
        let after = if unchanged {
            before
        } else {
            drop(before);
            kinto.list_records(target, |_| {}).await?
        };
        enter(progress, "sign", target);
        let payload = canonical::signed_payload(
            &after.records,
            u64::try_from(after.timestamp).unwrap_or_default(),
        )?;
        let signatures = self.signer.sign(payload.as_bytes()).await?;
        let first = signatures.first().cloned().ok_or(SigningError::Mismatch)?;

        let mut metadata = Map::new();
        for field in PUBLISHED_FIELDS {
            if let Some(value) = source_metadata.get(field) {
                metadata.insert(field.to_owned(), value.clone());
            }
        }
        metadata.insert(
            "signature".into(),
            serde_json::to_value(&first).expect("metadata serializes"),
        );
        metadata.insert(
            "signatures".into(),
            serde_json::to_value(&signatures).expect("metadata serializes"),
        );
        enter(progress, "publish", target);
        kinto
            .patch_collection(target, Value::Object(metadata), None)
            .await?;
        tracing::info!(target = %target, timestamp = after.timestamp, "signature published");

        Ok(Published {
            uri: target.uri(),
            timestamp: after.timestamp,
            records: after.records.len(),
            created,
            updated,
            deleted,
            payload_bytes: payload.len(),
            signature: first,
        })
    }
}
