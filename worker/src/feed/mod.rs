//! The change feed: the safety net behind the webhook. Kinto has no built-in webhook and a posted event can be
//! lost, so the leader among the workers lists, every interval, the source collections whose status asks for
//! work (`in_status=…`, with `If-None-Match` so an unchanged bucket costs a 304) and enqueues what no job has
//! handled yet. It also schedules re-signs before certificates expire (or at a fixed interval).

mod leader;

pub use leader::Leader;

use crate::config::Settings;
use crate::kinto::{KintoClient, KintoError};
use crate::pipeline::workflow;
use crate::signing::x5u;
use crate::store::{JobFilter, JobStore, Store, StoreError};
use serde_json::Value;
use signer_types::job::{Job, JobKind, JobState, NewJob, Trigger};
use signer_types::{CollectionRef, Resource, Resources};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The statuses that ask the service for work.
const ASKING: [&str; 4] = ["to-sign", "to-review", "to-resign", "to-rollback"];
/// Every this many ticks the remembered ETags are forgotten, so a collection whose job was cancelled by hand
/// (its status still asking, the bucket unchanged) is seen again.
const FULL_LOOK_EVERY: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Kinto(#[from] KintoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a request seen at source timestamp `metadata_ts` already has its job: one is queued or running, or
/// one was triggered by this very change (`source_timestamp`), or wrote it (`result.source_metadata_timestamp`).
/// A job that ran out of retries on transient failures (Kinto or the signer unreachable for longer than its
/// attempts last) has not handled it: the request is taken up again.
pub fn handled(jobs: &[Job], metadata_ts: i64) -> bool {
    jobs.iter().any(|job| {
        matches!(job.state, JobState::Queued | JobState::Running)
            || (job.source_timestamp == Some(metadata_ts) && !job.ran_out_of_retries())
            || job
                .result
                .as_ref()
                .and_then(|r| r.get("source_metadata_timestamp"))
                .and_then(Value::as_i64)
                == Some(metadata_ts)
    })
}

/// Why a signed destination should be signed again now, if it should: its certificate expires within
/// `before_expiry`, or its last signature is older than `interval`.
pub fn resign_reason(
    now: i64,
    certificate_expiry: Option<i64>,
    before_expiry: Option<Duration>,
    last_signature: Option<i64>,
    interval: Option<Duration>,
) -> Option<String> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if let (Some(expiry), Some(window)) = (certificate_expiry, before_expiry) {
        if expiry - now <= secs(window) {
            return Some(format!(
                "certificate expires in {} h",
                (expiry - now).max(0) / 3600
            ));
        }
    }
    if let (Some(last), Some(interval)) = (last_signature, interval) {
        if now - last >= secs(interval) {
            return Some(format!("last signed {} h ago", (now - last) / 3600));
        }
    }
    None
}

pub struct Feed {
    settings: Settings,
    resources: Resources,
    source: Arc<KintoClient>,
    destination: Arc<KintoClient>,
    store: Arc<Store>,
    http: reqwest::Client,
    etags: HashMap<String, i64>,
    expiries: HashMap<String, i64>,
    last_resign_check: Option<Instant>,
}

impl Feed {
    pub fn new(
        settings: Settings,
        resources: Resources,
        source: Arc<KintoClient>,
        destination: Arc<KintoClient>,
        store: Arc<Store>,
    ) -> Self {
        Self {
            settings,
            resources,
            source,
            destination,
            store,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a default HTTP client builds"),
            etags: HashMap::new(),
            expiries: HashMap::new(),
            last_resign_check: None,
        }
    }

    pub async fn run(mut self, mut leader: Leader, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(
            self.settings.feed.interval_seconds.max(1),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            if !leader.check().await {
                continue;
            }
            ticks += 1;
            if ticks.is_multiple_of(FULL_LOOK_EVERY) {
                self.etags.clear();
            }
            let polled = self.poll().await;
            count_check("changes", polled.is_ok());
            match polled {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    enqueued = n,
                    "change feed: found collections asking for work"
                ),
                Err(e) => tracing::warn!(error = %e, "change feed: poll failed"),
            }
            let check_every = Duration::from_secs(self.settings.feed.resign_check_seconds.max(1));
            if self
                .last_resign_check
                .is_none_or(|at| at.elapsed() >= check_every)
            {
                self.last_resign_check = Some(Instant::now());
                let scheduled = self.schedule_resigns().await;
                count_check("resigns", scheduled.is_ok());
                match scheduled {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(enqueued = n, "change feed: re-signs scheduled"),
                    Err(e) => tracing::warn!(error = %e, "change feed: re-sign check failed"),
                }
            }
        }
    }

    /// One look at every source bucket; returns how many jobs it enqueued.
    pub async fn poll(&mut self) -> Result<usize, FeedError> {
        let mut enqueued = 0;
        for bucket in self.resources.source_buckets() {
            let since = self.etags.get(&bucket).copied();
            let Some((collections, etag)) = self
                .source
                .collections_with_status(&bucket, &ASKING, since)
                .await?
            else {
                continue;
            };
            for collection in &collections {
                if self.consider(&bucket, collection).await? {
                    enqueued += 1;
                }
            }
            self.etags.insert(bucket, etag);
        }
        Ok(enqueued)
    }

    async fn jobs_of(&self, resource: &Resource) -> Result<Vec<Job>, StoreError> {
        self.store
            .list(&JobFilter {
                resource: Some(resource.source.uri()),
                limit: 20,
                ..JobFilter::default()
            })
            .await
    }

    /// Enqueues a job for one collection whose status asks for work, unless one already answers this change.
    async fn consider(&self, bucket: &str, collection: &Value) -> Result<bool, FeedError> {
        let (Some(id), Some(status), Some(ts)) = (
            collection["id"].as_str(),
            collection["status"].as_str(),
            collection["last_modified"].as_i64(),
        ) else {
            return Ok(false);
        };
        let Ok(source) = CollectionRef::from_ids(bucket, id) else {
            return Ok(false);
        };
        let (Some(resource), Some(kind)) = (
            self.resources.resolve(&source),
            workflow::kind_for_status(status),
        ) else {
            return Ok(false);
        };
        if handled(&self.jobs_of(&resource).await?, ts) {
            return Ok(false);
        }
        // The webhook names who asked; without it, Kinto's history plugin may.
        let (requested_by, previous_status) = self
            .source
            .status_author(&source, status)
            .await?
            .unwrap_or_else(|| (self.settings.plugin_userid.clone(), None));
        let mut new = NewJob::new(
            &resource,
            kind,
            Trigger::Feed,
            requested_by,
            self.settings.queue.max_attempts,
        );
        new.source_timestamp = Some(ts);
        new.previous_status = previous_status;
        let enqueued = self.store.enqueue(new).await?;
        crate::store::count_enqueued(Trigger::Feed, &enqueued);
        tracing::info!(job_id = %enqueued.job.id, resource = %source, status, "change feed: enqueued");
        Ok(true)
    }

    /// Enqueues a re-sign for every destination whose certificate nears expiry or whose signature is too old.
    pub async fn schedule_resigns(&mut self) -> Result<usize, FeedError> {
        let hours = |h: u64| (h > 0).then(|| Duration::from_secs(h * 3600));
        let before_expiry = hours(self.settings.feed.resign_before_expiry_hours);
        let interval = hours(self.settings.feed.resign_interval_hours);
        if before_expiry.is_none() && interval.is_none() {
            return Ok(0);
        }
        let now = chrono::Utc::now().timestamp();
        let mut enqueued = 0;
        let mut earliest: Option<i64> = None;
        for bucket in self.resources.source_buckets() {
            let Some((collections, _)) = self
                .source
                .collections_with_status(&bucket, &[], None)
                .await?
            else {
                continue;
            };
            for collection in &collections {
                let Some(resource) = collection["id"]
                    .as_str()
                    .and_then(|id| CollectionRef::from_ids(&bucket, id).ok())
                    .and_then(|source| self.resources.resolve(&source))
                else {
                    continue;
                };
                let Some(published) = self
                    .destination
                    .get_collection(&resource.destination)
                    .await?
                else {
                    continue;
                };
                let Some(x5u) = published
                    .data
                    .pointer("/signature/x5u")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                let expiry = self.certificate_expiry(x5u).await;
                if let Some(e) = expiry {
                    earliest = Some(earliest.map_or(e, |x| x.min(e)));
                }
                let last_signature = collection["last_signature_date"]
                    .as_str()
                    .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                    .map(|d| d.timestamp());
                let Some(reason) =
                    resign_reason(now, expiry, before_expiry, last_signature, interval)
                else {
                    continue;
                };
                let jobs = self.jobs_of(&resource).await?;
                if jobs.iter().any(|j| !j.state.is_final())
                    || signed_with(&jobs, x5u, expiry.is_some())
                {
                    continue;
                }
                let new = NewJob::new(
                    &resource,
                    JobKind::Resign,
                    Trigger::Feed,
                    self.settings.plugin_userid.clone(),
                    self.settings.queue.max_attempts,
                );
                let job = self.store.enqueue(new).await?;
                crate::store::count_enqueued(Trigger::Feed, &job);
                tracing::info!(job_id = %job.job.id, resource = %resource.source, %reason, "change feed: re-sign scheduled");
                enqueued += 1;
            }
        }
        crate::metrics::metrics()
            .certificate_expiry
            .set(earliest.unwrap_or(0));
        Ok(enqueued)
    }

    /// The end-entity certificate's expiry behind an `x5u` URL (cached; `None` if it cannot be read).
    async fn certificate_expiry(&mut self, x5u: &str) -> Option<i64> {
        if x5u.is_empty() {
            return None;
        }
        if let Some(expiry) = self.expiries.get(x5u) {
            return Some(*expiry);
        }
        let pem = async {
            self.http
                .get(x5u)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await
        };
        let expiry = match pem.await {
            Ok(pem) => x5u::end_entity_expiry(&pem)
                .map_err(|e| tracing::warn!(x5u, error = %e, "change feed: unreadable certificate chain"))
                .ok()
                .and_then(|s| i64::try_from(s).ok())?,
            Err(e) => {
                tracing::warn!(x5u, error = %e, "change feed: cannot fetch the certificate chain");
                return None;
            }
        };
        self.expiries.insert(x5u.to_owned(), expiry);
        Some(expiry)
    }
}

fn count_check(check: &str, ok: bool) {
    crate::metrics::metrics()
        .feed_checks
        .with_label_values(&[check, if ok { "ok" } else { "failed" }])
        .inc();
}

/// A certificate-driven re-sign is pointless when the last re-sign already used this certificate (the signer has
/// not rotated it yet): signing again would publish the same expiry.
fn signed_with(jobs: &[Job], x5u: &str, by_certificate: bool) -> bool {
    by_certificate
        && jobs.iter().any(|j| {
            j.kind == JobKind::Resign
                && j.state == JobState::Succeeded
                && j.result
                    .as_ref()
                    .and_then(|r| r.pointer("/destination/signature/x5u"))
                    .and_then(Value::as_str)
                    == Some(x5u)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn job(state: JobState, source_timestamp: Option<i64>, result: Option<Value>) -> Job {
        Job {
            id: uuid::Uuid::new_v4(),
            resource: "/buckets/ws/collections/cfr".into(),
            destination: "/buckets/main/collections/cfr".into(),
            preview: None,
            kind: JobKind::Sign,
            state,
            priority: 0,
            attempt: 1,
            max_attempts: 3,
            run_at: Utc::now(),
            lease_expires_at: None,
            worker_id: None,
            trigger: Trigger::Webhook,
            requested_by: "account:alice".into(),
            source_timestamp,
            previous_status: None,
            result,
            last_error: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            progress: None,
        }
    }

    #[test]
    fn a_change_is_handled_by_a_live_job_its_trigger_or_the_job_that_wrote_it() {
        assert!(!handled(&[], 10));
        assert!(handled(&[job(JobState::Running, None, None)], 10));
        assert!(handled(&[job(JobState::Failed, Some(10), None)], 10));
        assert!(
            !handled(
                &[job(JobState::Failed, Some(10), Some(Job::out_of_retries()))],
                10
            ),
            "a job that ran out of retries on transient failures is asked again"
        );
        let wrote = job(
            JobState::Succeeded,
            Some(5),
            Some(json!({"source_metadata_timestamp": 10})),
        );
        assert!(handled(std::slice::from_ref(&wrote), 10));
        assert!(!handled(&[wrote, job(JobState::Failed, Some(7), None)], 11));
    }

    #[test]
    fn re_signs_are_due_near_expiry_or_after_the_interval() {
        let day = 86_400;
        let week = Some(Duration::from_secs(7 * day as u64));
        assert!(resign_reason(0, Some(6 * day), week, None, None)
            .unwrap()
            .contains("expires in 144 h"));
        assert_eq!(resign_reason(0, Some(8 * day), week, None, None), None);
        assert_eq!(resign_reason(0, Some(day), None, None, None), None);
        assert!(resign_reason(8 * day, None, None, Some(0), week).is_some());
        assert_eq!(resign_reason(6 * day, None, None, Some(0), week), None);
    }

    #[test]
    fn a_certificate_already_used_by_a_re_sign_does_not_ask_again() {
        let resign = |x5u: &str| {
            let mut j = job(
                JobState::Succeeded,
                None,
                Some(json!({"destination": {"signature": {"x5u": x5u}}})),
            );
            j.kind = JobKind::Resign;
            j
        };
        assert!(signed_with(
            &[resign("https://a/1.chain")],
            "https://a/1.chain",
            true
        ));
        assert!(!signed_with(
            &[resign("https://a/1.chain")],
            "https://a/2.chain",
            true
        ));
        assert!(!signed_with(
            &[resign("https://a/1.chain")],
            "https://a/1.chain",
            false
        ));
    }
}
