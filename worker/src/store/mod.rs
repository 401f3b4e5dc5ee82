//! Where jobs live. Every transition a worker makes is guarded by its lease (job id + attempt + worker id), so a
//! worker that lost its lease cannot overwrite a newer attempt.

mod migrations;
mod postgres;
mod sqlite;
mod store_file;

pub use postgres::{OutboxEntry, PgStore};
pub use sqlite::SqliteStore;

use crate::error_text::redact;
use std::path::Path;

/// The `NOTIFY` channel of the Postgres store.
pub fn postgres_channel() -> &'static str {
    postgres::NOTIFY_CHANNEL
}

use chrono::{DateTime, Utc};
use signer_types::job::{Job, JobEvent, JobState, Lease, NewJob, Progress};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "database unreachable at {url}: {source} (start it, or drop SIGNER_DATABASE_URL / database_url to use the embedded store)"
    )]
    Unreachable { url: String, source: sqlx::Error },
    #[error(
        "the embedded store {path} cannot be used: {source} ({})",
        embedded_hint(source)
    )]
    Embedded { path: String, source: sqlx::Error },
    #[error(
        "database_url {0:?}: expected postgres://…, sqlite://<path>, or nothing for the embedded store"
    )]
    UnknownScheme(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt job row {id}: {reason}")]
    Corrupt { id: Uuid, reason: String },
    #[error("could not enqueue for {0}: the queued job kept changing under us")]
    Contended(String),
    /// The completions this attempt was recorded with failed together (the cause is the database's).
    #[error("recording finished jobs: {0}")]
    Flush(String),
    #[error("the job store is shutting down")]
    Closed,
    /// The embedded store's file was deleted or replaced, or its disk is full: said once by the store.
    #[error("the embedded store {path} {reason}")]
    Unusable { path: String, reason: String },
}

/// What to do about an embedded store that cannot be opened, by its cause: a file that is not (or no longer) an
/// SQLite database is not fixed by permissions or room on the disk.
fn embedded_hint(source: &sqlx::Error) -> &'static str {
    // SQLITE_CORRUPT and SQLITE_NOTADB, as primary result codes (sqlx gives the extended one).
    const CORRUPT: i32 = 11;
    const NOT_A_DATABASE: i32 = 26;
    let code = match source {
        sqlx::Error::Database(e) => e.code().and_then(|c| c.parse::<i32>().ok()),
        _ => None,
    };
    match code.map(|c| c & 0xff) {
        Some(CORRUPT | NOT_A_DATABASE) => {
            "the file is not an SQLite database or is damaged: restore it from a backup, or move it away to start \
             with an empty store"
        }
        _ => "its directory must be writable, with room on the disk",
    }
}

/// A new job's id: UUIDv7, so ids sort in creation order and the jobs of a burst sit together in the primary key's
/// index, which every transition of a job rewrites (against random ids: 11% less Postgres time per job, 14–38% more
/// jobs per second burning down a queue; BENCHMARKS.md).
/// A wait in milliseconds as a duration; a time already past waits for nothing.
fn until(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn new_job_id() -> Uuid {
    Uuid::now_v7()
}

/// What `enqueue` did.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job: Job,
    /// True when an already queued job for the resource was returned instead of a new one.
    pub coalesced: bool,
}

/// What a transient failure turned into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Queued again, to run after the delay.
    Scheduled,
    /// Out of attempts: failed for good.
    Exhausted,
    /// Another job for the same resource is already queued and will do the work.
    Superseded,
    /// The lease was gone: someone else owns the job now.
    LeaseLost,
}

/// A running job whose lease had expired, and what became of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rescued {
    pub job_id: Uuid,
    pub attempt: i32,
    pub previous_worker: Option<String>,
    pub state: JobState,
}

/// Why a running job goes back without finishing.
#[derive(Debug, Clone, Copy)]
pub enum Requeue<'a> {
    /// A transient failure: run again after `delay`, if attempts remain.
    Retry { error: &'a str, delay: Duration },
    /// Shutdown: give it back at once, the attempt not counted.
    Release,
}

/// What the job becomes, decided the same way by every store.
pub struct RequeueDecision {
    pub state: JobState,
    pub outcome: RetryOutcome,
    pub event: &'static str,
    pub detail: String,
}

impl Requeue<'_> {
    pub fn error(&self) -> Option<&str> {
        match self {
            Requeue::Retry { error, .. } => Some(error),
            Requeue::Release => None,
        }
    }

    pub fn delay(&self) -> Duration {
        match self {
            Requeue::Retry { delay, .. } => *delay,
            Requeue::Release => Duration::ZERO,
        }
    }

    pub fn refunds_attempt(&self) -> bool {
        matches!(self, Requeue::Release)
    }

    /// A queued job for the same resource will do the work (so this one is cancelled); a retry out of attempts
    /// fails; anything else is queued again.
    pub fn decide(&self, exhausted: bool, queued_other: Option<Uuid>) -> RequeueDecision {
        let (state, outcome, event, detail) =
            match (queued_other, exhausted && !self.refunds_attempt()) {
                (Some(other), _) => (
                    JobState::Cancelled,
                    RetryOutcome::Superseded,
                    "cancelled",
                    format!("superseded by queued job {other}"),
                ),
                (None, true) => (
                    JobState::Failed,
                    RetryOutcome::Exhausted,
                    "failed",
                    "out of attempts".to_owned(),
                ),
                (None, false) => match self {
                    Requeue::Retry { delay, .. } => (
                        JobState::Queued,
                        RetryOutcome::Scheduled,
                        "retry",
                        format!("next run in {} ms", delay.as_millis()),
                    ),
                    Requeue::Release => (
                        JobState::Queued,
                        RetryOutcome::Scheduled,
                        "released",
                        "released for another worker".into(),
                    ),
                },
            };
        let detail = match self.error() {
            Some(error) => format!("{error}; {detail}"),
            None => detail,
        };
        RequeueDecision {
            state,
            outcome,
            event,
            detail,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub resource: Option<String>,
    pub state: Option<JobState>,
    /// Keyset cursor: list jobs created before this one.
    pub before: Option<Uuid>,
    pub limit: i64,
    /// Only the jobs this principal asked for.
    pub requested_by: Option<String>,
}

/// The store a deployment runs on: Postgres to scale out, or the embedded SQLite file for a single node.
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// The embedded store's file inside the data directory.
pub const SQLITE_FILE: &str = "signer.db";

impl Store {
    /// `postgres://…` (or `postgresql://…`), `sqlite://<path>`, or nothing: `<data_dir>/signer.db`.
    pub async fn open(
        url: Option<&str>,
        data_dir: &Path,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        match url {
            None | Some("") => Ok(Store::Sqlite(
                SqliteStore::open(&data_dir.join(SQLITE_FILE)).await?,
            )),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => Ok(
                Store::Postgres(PgStore::connect(url, max_connections).await?),
            ),
            Some(url) => match url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
            {
                Some(path) => Ok(Store::Sqlite(SqliteStore::open(Path::new(path)).await?)),
                None => Err(StoreError::UnknownScheme(redact(url))),
            },
        }
    }

    /// Where the jobs live, without secrets (for logs).
    pub fn describe(&self) -> String {
        match self {
            Store::Postgres(s) => redact(s.url()),
            Store::Sqlite(s) => format!("sqlite://{}", s.path().display()),
        }
    }
}

macro_rules! delegate_to_backend {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)+) => {
        impl JobStore for Store {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match self {
                    Store::Postgres(s) => s.$name($($arg),*).await,
                    Store::Sqlite(s) => s.$name($($arg),*).await,
                }
            })+
        }
    };
}

delegate_to_backend! {
    fn enqueue(&self, job: NewJob) -> Result<Enqueued, StoreError>;
    fn get(&self, id: Uuid) -> Result<Option<Job>, StoreError>;
    fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError>;
    fn history(&self, id: Uuid) -> Result<Vec<JobEvent>, StoreError>;
    fn claim_one(&self, worker_id: &str, lease: Duration, id: Option<Uuid>) -> Result<Option<Job>, StoreError>;
    fn claim_many(&self, worker_id: &str, lease: Duration, limit: usize) -> Result<Vec<Job>, StoreError>;
    fn heartbeat(&self, lease: &Lease, duration: Duration, progress: Option<&Progress>) -> Result<bool, StoreError>;
    fn finish(&self, lease: &Lease, state: JobState, result: Option<serde_json::Value>, error: Option<&str>) -> Result<bool, StoreError>;
    fn requeue(&self, lease: &Lease, why: Requeue<'_>) -> Result<RetryOutcome, StoreError>;
    fn note(&self, lease: &Lease, event: &str, detail: &str) -> Result<bool, StoreError>;
    fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError>;
    fn cancel(&self, id: Uuid, by: &str) -> Result<bool, StoreError>;
    fn prune(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError>;
    fn next_run_in(&self) -> Result<Option<Duration>, StoreError>;
    fn ping(&self) -> Result<(), StoreError>;
    fn stats(&self) -> Result<QueueStats, StoreError>;
    fn first_use(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool, StoreError>;
}

pub trait JobStore: Send + Sync + 'static {
    /// Remembers `key` (a webhook call's signature) until `expires_at`: true the first time, false while it is
    /// remembered (a replay). Forgets what expired.
    fn first_use(
        &self,
        key: &str,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Durably records a job (or returns the queued one for the same resource) and wakes the workers.
    fn enqueue(&self, job: NewJob) -> impl Future<Output = Result<Enqueued, StoreError>> + Send;
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;
    fn list(&self, filter: &JobFilter)
        -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send;
    fn history(&self, id: Uuid) -> impl Future<Output = Result<Vec<JobEvent>, StoreError>> + Send;
    /// Takes job `id` (or, without one, the next runnable job) with a fresh lease, if it is runnable: queued,
    /// due, and its destination has no running job. A claim by id is recorded as the `doorbell`'s in the history.
    fn claim_one(
        &self,
        worker_id: &str,
        lease: Duration,
        id: Option<Uuid>,
    ) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send;
    /// Takes the next runnable job, in priority and `run_at` order.
    fn claim(
        &self,
        worker_id: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send {
        self.claim_one(worker_id, lease, None)
    }
    /// Takes up to `limit` runnable jobs at once (at most one per destination), in claim order: a pool with
    /// several free slots pays one round trip and one commit for all of them.
    fn claim_many(
        &self,
        worker_id: &str,
        lease: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Job>, StoreError>> + Send {
        async move {
            let mut jobs = Vec::new();
            while jobs.len() < limit {
                match self.claim(worker_id, lease).await? {
                    Some(job) => jobs.push(job),
                    None => break,
                }
            }
            Ok(jobs)
        }
    }
    /// Takes the job a doorbell named; `None` when it is not runnable (a duplicate or late message).
    fn claim_job(
        &self,
        worker_id: &str,
        lease: Duration,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<Job>, StoreError>> + Send {
        self.claim_one(worker_id, lease, Some(id))
    }
    /// Extends the lease (recording `progress` if given); false when it is no longer ours.
    fn heartbeat(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: Option<&Progress>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Records the final state of the attempt holding `lease`; false if the lease was gone.
    fn finish(
        &self,
        lease: &Lease,
        state: JobState,
        result: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Sends the running job back (a retry or a release), as `Requeue::decide` says.
    fn requeue(
        &self,
        lease: &Lease,
        why: Requeue<'_>,
    ) -> impl Future<Output = Result<RetryOutcome, StoreError>> + Send;

    fn succeed(
        &self,
        lease: &Lease,
        result: serde_json::Value,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.finish(lease, JobState::Succeeded, Some(result), None)
    }
    fn fail(
        &self,
        lease: &Lease,
        error: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.finish(lease, JobState::Failed, None, Some(error))
    }
    fn retry(
        &self,
        lease: &Lease,
        error: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<RetryOutcome, StoreError>> + Send {
        self.requeue(lease, Requeue::Retry { error, delay })
    }
    /// Gives a job back untouched (shutdown): queued again at once, the attempt not counted.
    fn release(&self, lease: &Lease) -> impl Future<Output = Result<bool, StoreError>> + Send {
        async move { Ok(self.requeue(lease, Requeue::Release).await? != RetryOutcome::LeaseLost) }
    }
    /// Appends a line to the running attempt's history (a retried call, a refusal); false if the lease was gone.
    fn note(
        &self,
        lease: &Lease,
        event: &str,
        detail: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Requeues (or fails, when out of attempts) running jobs whose lease expired.
    fn rescue_expired(&self) -> impl Future<Output = Result<Vec<Rescued>, StoreError>> + Send;
    /// Cancels a queued job; false if it is not queued.
    fn cancel(&self, id: Uuid, by: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Deletes finished jobs older than the retention, at most `batch` at a time; returns how many.
    fn prune(
        &self,
        older_than: Duration,
        batch: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// How long until the next queued job becomes runnable, by the store's clock (zero when one already is);
    /// `None` when nothing is queued.
    fn next_run_in(&self) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Jobs by state, and when the oldest runnable queued job became runnable.
    fn stats(&self) -> impl Future<Output = Result<QueueStats, StoreError>> + Send;
}

/// What the queue holds, for metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    pub by_state: Vec<(String, i64)>,
    pub oldest_runnable: Option<DateTime<Utc>>,
}

/// Sets the queue gauges (depth by state, oldest runnable age) from the store.
pub async fn publish_queue_metrics(store: &impl JobStore) -> Result<(), StoreError> {
    let stats = store.stats().await?;
    let m = crate::metrics::metrics();
    for state in JobState::ALL {
        let n = stats
            .by_state
            .iter()
            .find(|(s, _)| s == state.as_str())
            .map_or(0, |(_, n)| *n);
        m.queue_depth.with_label_values(&[state.as_str()]).set(n);
    }
    let age = stats.oldest_runnable.map_or(0.0, |at| {
        (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    m.oldest_runnable_age.set(age);
    Ok(())
}

/// Counts a recorded request in `signer_jobs_enqueued_total`.
pub fn count_enqueued(trigger: signer_types::job::Trigger, enqueued: &Enqueued) {
    crate::metrics::metrics()
        .jobs_enqueued
        .with_label_values(&[
            trigger.as_str(),
            if enqueued.coalesced { "true" } else { "false" },
        ])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_attempt_becomes_a_retry_a_failure_or_yields_to_a_queued_job() {
        let retry = Requeue::Retry {
            error: "503",
            delay: Duration::from_millis(1500),
        };
        let d = retry.decide(false, None);
        assert_eq!(
            (d.state, d.outcome, d.event),
            (JobState::Queued, RetryOutcome::Scheduled, "retry")
        );
        assert_eq!(d.detail, "503; next run in 1500 ms");
        let d = retry.decide(true, None);
        assert_eq!(
            (d.state, d.outcome, d.event),
            (JobState::Failed, RetryOutcome::Exhausted, "failed")
        );
        let other = Uuid::new_v4();
        let d = retry.decide(true, Some(other));
        assert_eq!(
            (d.state, d.outcome),
            (JobState::Cancelled, RetryOutcome::Superseded)
        );
        assert!(d.detail.contains(&other.to_string()));
        let d = Requeue::Release.decide(true, None);
        assert_eq!(
            (d.state, d.event),
            (JobState::Queued, "released"),
            "a release on the last attempt is not a failure"
        );
    }
}
