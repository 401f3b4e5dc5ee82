//! One job, step by step (kinto-signer's `sign_and_update_destination` and its review workflow, as
//! kinto-remote-settings runs them):
//! read the source → decide the action from its status → check who asked → snapshot → (for the preview, then the
//! destination:) ensure it exists → diff → push → list → canonical JSON → sign → publish the signature → check
//! the source did not move → write the source's status and tracking fields. Listings kept from the last job are
//! refreshed instead of read in full, and a target that had one is known to exist.

mod diff;
mod listings;
pub mod workflow;

pub use diff::{diff_records, Diff};

use crate::acl::{Action, Permissions};
use crate::canonical::{self, CanonicalError};
use crate::config::{ConfigError, ResourcePolicy, Settings};
use crate::kinto::{CollectionObject, KintoClient, KintoError, Listing};
use crate::report::Report;
use crate::signing::{AnySigner, Message, SignatureMetadata, Signer, SignerSet, SigningError};
use listings::Listings;
use serde::Serialize;
use serde_json::{Map, Value};
use signer_types::job::{Job, JobKind, Trigger};
use signer_types::{CollectionRef, Resource, Resources};
use std::sync::Arc;
use workflow::Plan;

/// Copied from the source collection metadata onto what we publish, so clients see the same schema and display.
const PUBLISHED_FIELDS: [&str; 5] = ["schema", "sort", "displayFields", "attachment", "flags"];

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0} is not a configured source collection")]
    UnknownResource(String),
    #[error("source collection {0} does not exist")]
    SourceMissing(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no signer was built for {0}")]
    NoSigner(String),
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
    #[error("source {uri} changed after its request was read (collection timestamp {before} then {after}): the request is looked at again")]
    SourceMoved {
        uri: String,
        before: i64,
        after: i64,
    },
    #[error("{0} has review enabled, but Kinto does not decide its review workflow: add kinto_signer_webhook.signoff to Kinto's kinto.includes (a status change checked by nobody is not carried out)")]
    NeedsSignoff(String),
    #[error("refused: {reason}; source status set back to {restored:?}")]
    Refused {
        reason: String,
        restored: String,
        /// The source object's timestamp after the status was put back (see `Outcome`).
        source_metadata_timestamp: i64,
    },
}

impl PipelineError {
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Kinto(e) => e.is_transient(),
            PipelineError::Signing(e) => e.is_transient(),
            PipelineError::SourceChanged { .. } | PipelineError::SourceMoved { .. } => true,
            _ => false,
        }
    }
}

/// What a finished job reports (stored as the job's `result`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Outcome {
    /// What was done (`sign`, `review`, `resign`, `rollback`), or absent when nothing was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<JobKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The records timestamp of the source snapshot that was published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_timestamp: Option<i64>,
    /// The source collection object's timestamp after this job wrote it: the change feed compares it with the
    /// source's to tell a handled request from a new one.
    pub source_metadata_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Published>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview: Option<Published>,
    /// Records the rollback wrote back into the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<Published>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Published {
    pub uri: String,
    pub timestamp: i64,
    pub records: usize,
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureMetadata>,
}

/// A job's working context: the collections, their settings, the signer, and who asked.
struct Context<'a> {
    job: &'a Job,
    resource: Resource,
    policy: ResourcePolicy,
    signer: &'a AnySigner,
    metadata: CollectionObject,
    report: &'a Report,
}

impl Context<'_> {
    fn status(&self) -> Option<&str> {
        self.metadata.data.get("status").and_then(Value::as_str)
    }
}
pub struct Pipeline {
    resources: Resources,
    permissions: Permissions,
    settings: Settings,
    source: Arc<KintoClient>,
    destination: Arc<KintoClient>,
    signers: SignerSet,
    listings: Listings,
}

impl Pipeline {
    pub fn new(
        settings: Settings,
        source: Arc<KintoClient>,
        destination: Arc<KintoClient>,
        signers: SignerSet,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            resources: settings.parsed_resources()?,
            permissions: Permissions::new(settings.permissions.clone())?,
            listings: Listings::new(settings.kinto.cached_records),
            settings,
            source,
            destination,
            signers,
        })
    }

    /// Which collections a source URI maps to, if it is configured.
    pub fn resolve(&self, source_uri: &str) -> Option<Resource> {
        self.resources
            .resolve(&CollectionRef::parse(source_uri).ok()?)
    }

    pub fn signers(&self) -> &SignerSet {
        &self.signers
    }

    pub async fn run(&self, job: &Job, report: &Report) -> Result<Outcome, PipelineError> {
        let resource = self
            .resolve(&job.resource)
            .ok_or_else(|| PipelineError::UnknownResource(job.resource.clone()))?;
        let policy = self.settings.policy(&resource.source)?;
        let signer = self
            .signers
            .get(&policy.signer)
            .ok_or_else(|| PipelineError::NoSigner(resource.source.uri()))?;
        // A cleanup is asked by the source's deletion and carried out while it stays deleted.
        let (metadata, plan) = match self.source.get_collection(&resource.source).await? {
            Some(metadata) => {
                let status = metadata.data.get("status").and_then(Value::as_str);
                let plan = workflow::plan(job.trigger, job.kind, status);
                (metadata, plan)
            }
            None if job.kind == JobKind::Cleanup => {
                (CollectionObject::absent(), Plan::Run(JobKind::Cleanup))
            }
            None => return Err(PipelineError::SourceMissing(resource.source.uri())),
        };
        let cx = Context {
            job,
            resource,
            policy,
            signer,
            metadata,
            report,
        };
        let action = match plan {
            Plan::Run(action) => action,
            Plan::Skip(reason) => {
                tracing::info!(%reason, "nothing to do");
                return Ok(Outcome {
                    skipped: Some(reason),
                    source_metadata_timestamp: cx.metadata.last_modified,
                    ..Outcome::default()
                });
            }
        };
        tracing::info!(%action, status = ?cx.status(), "running");
        self.check_permission(&cx, action).await?;
        if action != JobKind::Cleanup {
            self.require_signoff(&cx).await?;
        }
        // Learn that the signer works before anything is written anywhere.
        signer.probe(report).await?;
        match action {
            JobKind::Sign | JobKind::Review => self.sign(&cx, action).await,
            JobKind::Resign => self.resign(&cx).await,
            JobKind::Rollback => self.rollback(&cx).await,
            JobKind::Cleanup => self.cleanup(&cx).await,
        }
    }

    /// With `[permissions]`, a status change that Kinto relays (webhook or feed) needs a grant for the Kinto user
    /// who made it, as an API call needs one for its caller; a refusal puts the previous status back. Checked
    /// here rather than at the webhook so that the change feed, which finds the same status later, cannot
    /// bypass it. The service's own scheduled re-signs (the status asks for nothing) need no grant.
    async fn check_permission(
        &self,
        cx: &Context<'_>,
        action: JobKind,
    ) -> Result<(), PipelineError> {
        let asked = cx.status().and_then(workflow::kind_for_status) == Some(action);
        if cx.job.trigger == Trigger::Api || !asked {
            return Ok(());
        }
        let who = Permissions::kinto_user(&cx.job.requested_by);
        let wanted = Action::Request(action);
        if self.permissions.allows(&who, wanted, &cx.resource.source) {
            return Ok(());
        }
        crate::metrics::metrics()
            .auth_failures
            .with_label_values(&["kinto", "forbidden"])
            .inc();
        let reason = format!(
            "{} may not {wanted} {} (permissions)",
            cx.job.requested_by, cx.resource.source
        );
        let restored = workflow::status_after_refusal(action, cx.job.previous_status.as_deref());
        Err(self.refuse(cx, reason, restored).await)
    }

    /// On a review-enabled resource, a status change relayed from Kinto is carried out only if Kinto decided it
    /// (the plugin's `signer` capability): the service has no way to refuse a request once Kinto answered 200.
    async fn require_signoff(&self, cx: &Context<'_>) -> Result<(), PipelineError> {
        if reviewed(cx) && !self.source.decides_signoff().await? {
            return Err(PipelineError::NeedsSignoff(cx.resource.source.uri()));
        }
        Ok(())
    }

    /// A relayed request is carried out on the source as it was when Kinto accepted it: a change to the collection
    /// since the job read it (an edit puts it back to work in progress) is looked at again on the next attempt.
    /// Called after the source's records were read and before anything is written, so an edit cannot slip
    /// between an approval and what is published under it.
    async fn ensure_unmoved(&self, cx: &Context<'_>) -> Result<(), PipelineError> {
        if cx.job.trigger == Trigger::Api {
            return Ok(());
        }
        let now = self
            .source
            .get_collection(&cx.resource.source)
            .await?
            .map_or(0, |m| m.last_modified);
        if now == cx.metadata.last_modified {
            return Ok(());
        }
        Err(PipelineError::SourceMoved {
            uri: cx.resource.source.uri(),
            before: cx.metadata.last_modified,
            after: now,
        })
    }

    /// Puts the source's status back to `restored` and says why the job will not go ahead.
    async fn refuse(&self, cx: &Context<'_>, reason: String, restored: String) -> PipelineError {
        cx.report.note("refused", reason.clone());
        let written = self
            .source
            .patch_collection(
                &cx.resource.source,
                serde_json::json!({ "status": restored }),
                Some(cx.metadata.last_modified),
            )
            .await;
        match written {
            Ok(written) => PipelineError::Refused {
                reason,
                restored,
                source_metadata_timestamp: written.last_modified,
            },
            Err(e) => e.into(),
        }
    }

    /// `to-sign`: preview and destination brought in line with the source and signed. `to-review`: the preview
    /// only (with none configured, only the tracking fields are written).
    async fn sign(&self, cx: &Context<'_>, action: JobKind) -> Result<Outcome, PipelineError> {
        let source = &cx.resource.source;
        cx.report.enter("snapshot", source);
        // The targets' kept listings are refreshed while the source is read: both are reads, and a re-sign is
        // mostly such round trips. Nothing is written before the snapshot is known to be signable.
        let destination_target = (action == JobKind::Sign).then_some(&cx.resource.destination);
        let (snapshot, preview_before, destination_before) = tokio::join!(
            self.listings.current(&self.source, source, |n| {
                cx.report.update(|p| p.records_fetched = n)
            }),
            self.refresh_kept(cx.resource.preview.as_ref()),
            self.refresh_kept(destination_target),
        );
        let snapshot = snapshot?;
        tracing::info!(
            records = snapshot.records.len(),
            timestamp = snapshot.timestamp,
            "source snapshot"
        );
        // Refuse unsignable data before anything is written anywhere.
        canonical::ensure_signable(&snapshot.records)?;
        // Kinto accepted an approval only for a collection under review, and any edit since would have put it
        // back to work in progress: an unmoved source holds what the reviewers were shown.
        self.ensure_unmoved(cx).await?;

        let preview = match &cx.resource.preview {
            Some(preview) => Some(self.publish(cx, preview, &snapshot, preview_before).await?),
            None => None,
        };
        let destination = match action {
            JobKind::Sign => Some(
                self.publish(cx, &cx.resource.destination, &snapshot, destination_before)
                    .await?,
            ),
            _ => None,
        };

        // Never mark signed (or in review) what was not copied: the records must not have moved since the snapshot.
        cx.report.enter("finish", source);
        let now = self.source.records_timestamp(source).await?;
        if now != snapshot.timestamp {
            return Err(PipelineError::SourceChanged {
                uri: source.uri(),
                before: snapshot.timestamp,
                after: now,
            });
        }
        let written = self.update_source(cx, action).await?;
        let source_timestamp = snapshot.timestamp;
        self.listings.keep(&self.source, source, snapshot);
        Ok(Outcome {
            action: Some(action),
            source_timestamp: Some(source_timestamp),
            source_metadata_timestamp: written.last_modified,
            destination,
            preview,
            ..Outcome::default()
        })
    }

    /// `to-resign` (or the certificate schedule): new signatures on the destination and preview as they are,
    /// without moving records.
    async fn resign(&self, cx: &Context<'_>) -> Result<Outcome, PipelineError> {
        let mut published = Vec::new();
        for target in cx.resource.preview.iter().chain([&cx.resource.destination]) {
            let listing = self.destination.list_records(target, |_| {}).await?;
            published.push(
                self.sign_target(cx, target, &listing, Counts::default())
                    .await?,
            );
        }
        let destination = published.pop();
        let written = self.update_source(cx, JobKind::Resign).await?;
        Ok(Outcome {
            action: Some(JobKind::Resign),
            source_metadata_timestamp: written.last_modified,
            destination,
            preview: published.pop(),
            ..Outcome::default()
        })
    }

    /// The source collection was deleted: its preview and destination keep their collection but publish no
    /// record (each deletion leaves a tombstone, so clients that synced remove what they hold), signed. Targets
    /// already gone (`hard_delete_destination_on_source_deletion`, or deleted by hand) are left alone.
    async fn cleanup(&self, cx: &Context<'_>) -> Result<Outcome, PipelineError> {
        // What was kept of the deleted source describes nothing that exists now.
        drop(self.listings.take(&self.source, &cx.resource.source));
        let nothing = Listing::default();
        let mut published = Vec::new();
        for target in cx.resource.preview.iter().chain([&cx.resource.destination]) {
            let emptied = match self.destination.get_collection(target).await? {
                Some(_) => Some(self.publish(cx, target, &nothing, None).await?),
                None => None,
            };
            published.push(emptied);
        }
        let destination = published.pop().flatten();
        let preview = published.pop().flatten();
        let skipped = (destination.is_none() && preview.is_none())
            .then(|| "the preview and destination are gone too".to_owned());
        Ok(Outcome {
            action: Some(JobKind::Cleanup),
            skipped,
            destination,
            preview,
            ..Outcome::default()
        })
    }

    /// `to-rollback`: the source (then the preview, re-signed) put back to what the destination publishes.
    async fn rollback(&self, cx: &Context<'_>) -> Result<Outcome, PipelineError> {
        let published = self
            .destination
            .list_records(&cx.resource.destination, |_| {})
            .await?;
        let source = &cx.resource.source;
        cx.report.enter("rollback", source);
        let current = self.source.list_records(source, |_| {}).await?;
        self.ensure_unmoved(cx).await?;
        let diff = diff_records(&published.records, &current.records);
        let counts = Counts::of(&diff);
        self.source.apply(source, &diff.writes, |_| {}).await?;
        drop(diff);
        tracing::info!(
            created = counts.created,
            updated = counts.updated,
            deleted = counts.deleted,
            "source rolled back"
        );
        let restored = Published {
            uri: source.uri(),
            timestamp: self.source.records_timestamp(source).await?,
            records: published.records.len(),
            created: counts.created,
            updated: counts.updated,
            deleted: counts.deleted,
            payload_bytes: None,
            signature: None,
        };
        let preview = match &cx.resource.preview {
            Some(preview) => Some(self.publish(cx, preview, &published, None).await?),
            None => None,
        };
        let written = self.update_source(cx, JobKind::Rollback).await?;
        Ok(Outcome {
            action: Some(JobKind::Rollback),
            source_timestamp: Some(restored.timestamp),
            source_metadata_timestamp: written.last_modified,
            preview,
            restored: Some(restored),
            ..Outcome::default()
        })
    }

    /// Writes the status and tracking fields, guarded by the source object's timestamp seen at the start: a
    /// status someone changed meanwhile is not overwritten (the job retries and decides again).
    async fn update_source(
        &self,
        cx: &Context<'_>,
        action: JobKind,
    ) -> Result<CollectionObject, PipelineError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        let fields = workflow::source_update(
            action,
            &cx.job.requested_by,
            &now,
            cx.status(),
            cx.job.previous_status.as_deref(),
        );
        if fields.is_empty() {
            return Ok(cx.metadata.clone());
        }
        Ok(self
            .source
            .patch_collection(
                &cx.resource.source,
                Value::Object(fields),
                Some(cx.metadata.last_modified),
            )
            .await?)
    }

    /// The listing kept for a target since the last job, refreshed: the target existed then, so nothing needs
    /// creating. `None` without one, or when the refresh fails (the target was deleted since, say): the caller
    /// then ensures the target and lists it in full, and a real failure surfaces there.
    async fn refresh_kept(&self, target: Option<&CollectionRef>) -> Option<Listing> {
        let target = target?;
        let kept = self.listings.take(&self.destination, target)?;
        match self.destination.refresh(target, kept, None).await {
            Ok(listing) => Some(listing),
            Err(e) => {
                tracing::info!(target = %target, error = %e, "kept listing not refreshed: listing in full");
                None
            }
        }
    }

    /// Brings one target in line with `wanted`, then signs what it holds and publishes the signature. `before`:
    /// what the target holds, when already read.
    async fn publish(
        &self,
        cx: &Context<'_>,
        target: &CollectionRef,
        wanted: &Listing,
        before: Option<Listing>,
    ) -> Result<Published, PipelineError> {
        let kinto = &self.destination;
        cx.report.enter("push", target);
        let before = match before {
            Some(before) => Some(before),
            None => self.refresh_kept(Some(target)).await,
        };
        let before = match before {
            Some(before) => before,
            None => {
                kinto.ensure_bucket(&target.bucket).await?;
                kinto.ensure_collection(target).await?;
                kinto.list_records(target, |_| {}).await?
            }
        };
        let diff = diff_records(&wanted.records, &before.records);
        cx.report.update(|p| p.records_to_push = diff.writes.len());
        let counts = Counts::of(&diff);
        if !diff.writes.is_empty() && kinto.publishes_atomically().await? {
            if let Some(published) = self
                .publish_atomically(cx, target, wanted, &before, &diff, counts)
                .await?
            {
                return Ok(published);
            }
        }
        kinto
            .apply(target, &diff.writes, |n| {
                cx.report.update(|p| p.records_pushed = n)
            })
            .await?;
        let unchanged = diff.writes.is_empty();
        drop(diff);
        tracing::info!(target = %target, created = counts.created, updated = counts.updated, deleted = counts.deleted, "pushed");

        // Sign what the target holds now, with its own records timestamp: what clients will fetch. Our writes
        // are what changed since `before`, so only they are fetched back (with their new `last_modified`).
        let after = if unchanged {
            before
        } else {
            kinto.refresh(target, before, Some(wanted)).await?
        };
        let published = self.sign_target(cx, target, &after, counts).await?;
        self.listings.keep(kinto, target, after);
        Ok(published)
    }

    /// The target moved from one signed state to the next in one transaction of Kinto's: the records as they
    /// will be held (each write stamped by us, after the target's records timestamp) are signed first, then
    /// written with the signature. Clients never list records the signature does not cover. A target that moved
    /// meanwhile answers 412 and nothing is written (the job tries again). `None` when the server no longer
    /// takes atomic publications (nothing written).
    async fn publish_atomically(
        &self,
        cx: &Context<'_>,
        target: &CollectionRef,
        wanted: &Listing,
        before: &Listing,
        diff: &Diff<'_>,
        counts: Counts,
    ) -> Result<Option<Published>, PipelineError> {
        let now = chrono::Utc::now().timestamp_millis();
        let stamps_from = (before.timestamp + 1).max(now);
        let after = diff::stamped(before, wanted, diff, stamps_from);
        let (metadata, published) = self.signature(cx, target, &after, counts).await?;
        cx.report.enter("publish", target);
        let Some(written) = self
            .destination
            .publish_atomically(
                target,
                &diff.writes,
                stamps_from,
                before.timestamp,
                &metadata,
            )
            .await?
        else {
            return Ok(None);
        };
        if written != after.timestamp {
            return Err(PipelineError::Kinto(KintoError::Invalid {
                method: "POST".into(),
                url: target.uri(),
                reason: format!(
                    "records published at {written}, signed for {}",
                    after.timestamp
                ),
            }));
        }
        cx.report.update(|p| p.records_pushed = diff.writes.len());
        tracing::info!(target = %target, created = counts.created, updated = counts.updated, deleted = counts.deleted, timestamp = written, "published records and signature together");
        // Known complete up to where no other write can still appear: the next refresh reads from there, not
        // everything this publication wrote again.
        let settled = self
            .destination
            .settled_now(target, after.timestamp)
            .await?;
        let after = Listing { settled, ..after };
        self.listings.keep(&self.destination, target, after);
        Ok(Some(published))
    }

    async fn sign_target(
        &self,
        cx: &Context<'_>,
        target: &CollectionRef,
        listing: &Listing,
        counts: Counts,
    ) -> Result<Published, PipelineError> {
        let (metadata, published) = self.signature(cx, target, listing, counts).await?;
        cx.report.enter("publish", target);
        self.destination
            .patch_collection(target, Value::Object(metadata), None)
            .await?;
        tracing::info!(target = %target, timestamp = listing.timestamp, "signature published");
        Ok(published)
    }

    /// Signs `listing` as clients will fetch it: the collection fields to publish (the signatures, and what is
    /// copied from the source), and what the job reports of it.
    async fn signature(
        &self,
        cx: &Context<'_>,
        target: &CollectionRef,
        listing: &Listing,
        counts: Counts,
    ) -> Result<(Map<String, Value>, Published), PipelineError> {
        cx.report.enter("hash", target);
        let payload = canonical::SignedPayload::new(
            &listing.records,
            u64::try_from(listing.timestamp).unwrap_or_default(),
        )?;
        let message = Message::of_payload(&payload);
        crate::metrics::metrics()
            .payload_bytes
            .inc_by(message.len() as u64);
        cx.report.enter("sign", target);
        let signatures = cx.signer.sign(&message, cx.report).await?;
        let first = signatures.first().cloned().ok_or(SigningError::Mismatch)?;

        let mut metadata = Map::new();
        for field in PUBLISHED_FIELDS {
            if let Some(value) = cx.metadata.data.get(field) {
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
        let published = Published {
            uri: target.uri(),
            timestamp: listing.timestamp,
            records: listing.records.len(),
            created: counts.created,
            updated: counts.updated,
            deleted: counts.deleted,
            payload_bytes: Some(message.len()),
            signature: Some(first),
        };
        Ok((metadata, published))
    }
}

/// Review rules apply: the resource has review enabled and a status change (not an operator's API call) asked.
fn reviewed(cx: &Context<'_>) -> bool {
    cx.policy.to_review_enabled && cx.job.trigger != signer_types::job::Trigger::Api
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    created: usize,
    updated: usize,
    deleted: usize,
}

impl Counts {
    fn of(diff: &Diff<'_>) -> Self {
        Self {
            created: diff.created,
            updated: diff.updated,
            deleted: diff.deleted,
        }
    }
}
