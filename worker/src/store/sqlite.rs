//! The embedded store: one SQLite file, the default when no database URL is configured. The pool holds a single
//! connection, so statements are serialized and a transaction is all the locking a claim needs; wake-ups are
//! in-process. It honours the same contract as the Postgres store (the conformance suite runs on both).

use super::store_file::StoreFile;
use super::{
    until, Enqueued, JobFilter, JobStore, QueueStats, Requeue, Rescued, RetryOutcome, StoreError,
};
use crate::clock::Clock;
use chrono::{DateTime, TimeZone as _, Utc};
use signer_types::job::{Job, JobEvent, JobState, Lease, NewJob, Progress};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::Row as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    wake: Arc<Notify>,
    file: Arc<StoreFile>,
    /// The time transitions are written and compared with: this process's unless a test set one.
    clock: Clock,
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) and migrates the file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let unreachable = |source| StoreError::Embedded {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| unreachable(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A 202 promises the job is on disk.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Creating the file, switching it to WAL and migrating it are not safe for two processes at once (sqlx
        // locks migrations on Postgres only): processes starting together take turns on a lock file beside it.
        let turn = lock_file(path)
            .await
            .map_err(|e| unreachable(sqlx::Error::Io(e)))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        super::migrations::sqlite().run(&pool).await?;
        drop(turn);
        let file = StoreFile::open(path).map_err(|e| unreachable(sqlx::Error::Io(e)))?;
        Ok(Self {
            pool,
            wake: Arc::new(Notify::new()),
            file: Arc::new(file),
            clock: Clock::default(),
        })
    }

    /// Reads the time from `clock` from now on (tests; a clone shares the time with the caller).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn later_ms(&self, delay: Duration) -> i64 {
        self.now_ms()
            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Signalled whenever a job becomes runnable now (the in-process `NOTIFY`).
    pub fn wake_signal(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// Waits for, and holds until dropped, an exclusive lock on `<path>.lock` (an advisory lock the kernel releases
/// if the process dies).
async fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(name)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(std::io::Error::other)?
}

impl JobStore for SqliteStore {
    async fn requeue(&self, lease: &Lease, why: Requeue<'_>) -> Result<RetryOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = guarded(
            "SELECT j.attempt >= j.max_attempts AS exhausted,
                    (SELECT q.id FROM jobs q WHERE q.resource = j.resource AND q.state = 'queued') AS queued
             FROM jobs j WHERE j.id = ?1 AND j.state = 'running' AND j.attempt = ?2 AND j.worker_id = ?3",
            lease,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RetryOutcome::LeaseLost);
        };
        let queued: Option<String> = row.get("queued");
        let queued = queued.map(|id| parse_uuid(&id)).transpose()?;
        let decision = why.decide(row.get("exhausted"), queued);
        let now = self.now_ms();
        sqlx::query(
            "UPDATE jobs SET state = ?2, last_error = COALESCE(?3, last_error), attempt = attempt - ?5,
                    result = CASE WHEN ?2 = 'failed' THEN ?7 ELSE result END,
                    run_at = ?4, lease_expires_at = NULL,
                    worker_id = CASE WHEN ?2 = 'queued' THEN NULL ELSE worker_id END,
                    finished_at = CASE WHEN ?2 = 'queued' THEN NULL ELSE ?6 END
             WHERE id = ?1",
        )
        .bind(lease.job_id.to_string())
        .bind(decision.state.as_str())
        .bind(why.error())
        .bind(self.later_ms(why.delay()))
        .bind(i32::from(why.refunds_attempt()))
        .bind(now)
        .bind(signer_types::job::Job::out_of_retries().to_string())
        .execute(&mut *tx)
        .await?;
        let event = Event {
            job: lease.job_id,
            name: decision.event,
            attempt: lease.attempt,
            at: now,
        };
        event
            .insert(&mut tx, Some(&lease.worker_id), Some(&decision.detail))
            .await?;
        tx.commit().await?;
        if decision.state == JobState::Queued {
            self.wake.notify_one();
        }
        Ok(decision.outcome)
    }

    async fn finish(
        &self,
        lease: &Lease,
        state: JobState,
        result: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = self.now_ms();
        let done = guarded(
            "UPDATE jobs SET state = ?4, result = ?5, last_error = ?6, finished_at = ?7, lease_expires_at = NULL
             WHERE id = ?1 AND state = 'running' AND attempt = ?2 AND worker_id = ?3",
            lease,
        )
        .bind(state.as_str())
        .bind(result.map(|r| r.to_string()))
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        let event = Event {
            job: lease.job_id,
            name: state.as_str(),
            attempt: lease.attempt,
            at: now,
        };
        event.insert(&mut tx, Some(&lease.worker_id), error).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn enqueue(&self, new: NewJob) -> Result<Enqueued, StoreError> {
        self.file.check()?;
        let mut tx = self.pool.begin().await?;
        let now = self.now_ms();
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, resource, destination, preview, kind, state, priority, max_attempts, trigger,
                               requested_by, source_timestamp, run_at, created_at, previous_status)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12)
             ON CONFLICT (resource) WHERE state = 'queued' DO NOTHING
             RETURNING *",
        )
        .bind(super::new_job_id().to_string())
        .bind(&new.resource)
        .bind(&new.destination)
        .bind(&new.preview)
        .bind(new.kind.as_str())
        .bind(new.priority)
        .bind(new.max_attempts)
        .bind(new.trigger.as_str())
        .bind(&new.requested_by)
        .bind(new.source_timestamp)
        .bind(now)
        .bind(&new.previous_status)
        .fetch_optional(&mut *tx)
        .await?;
        let mut detail = format!("{} by {}", new.trigger, new.requested_by);
        let (job, coalesced) = match inserted {
            Some(row) => (job_from_row(&row)?, false),
            None => {
                let existing =
                    sqlx::query("SELECT * FROM jobs WHERE resource = ?1 AND state = 'queued'")
                        .bind(&new.resource)
                        .fetch_one(&mut *tx)
                        .await?;
                let mut job = job_from_row(&existing)?;
                if new.rewrites(&job) {
                    let row = sqlx::query(
                        "UPDATE jobs SET kind = ?2, requested_by = ?3, previous_status = ?4, trigger = ?5 WHERE id = ?1 RETURNING *",
                    )
                    .bind(job.id.to_string())
                    .bind(new.kind.as_str())
                    .bind(&new.requested_by)
                    .bind(&new.previous_status)
                    .bind(new.trigger.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    job = job_from_row(&row)?;
                    detail = format!("{detail}; now {}", job.kind);
                }
                (job, true)
            }
        };
        let name = if coalesced { "coalesced" } else { "queued" };
        Event {
            job: job.id,
            name,
            attempt: job.attempt,
            at: now,
        }
        .insert(&mut tx, None, Some(&detail))
        .await?;
        tx.commit().await?;
        if !coalesced {
            self.wake.notify_one();
        }
        Ok(Enqueued { job, coalesced })
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
             WHERE (?1 IS NULL OR resource = ?1) AND (?2 IS NULL OR state = ?2)
               AND (?3 IS NULL OR (created_at, id) < (SELECT created_at, id FROM jobs WHERE id = ?3))
               AND (?5 IS NULL OR requested_by = ?5)
             ORDER BY created_at DESC, id DESC LIMIT ?4",
        )
        .bind(&filter.resource)
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.before.map(|id| id.to_string()))
        .bind(filter.limit)
        .bind(&filter.requested_by)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn history(&self, id: Uuid) -> Result<Vec<JobEvent>, StoreError> {
        let rows =
            sqlx::query("SELECT at, event, attempt, worker_id, detail FROM job_events WHERE job_id = ?1 ORDER BY id")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .iter()
            .map(|r| JobEvent {
                at: time(r.get("at")),
                event: r.get("event"),
                attempt: r.get("attempt"),
                worker_id: r.get("worker_id"),
                detail: r.get("detail"),
            })
            .collect())
    }

    async fn claim_one(
        &self,
        worker_id: &str,
        lease: Duration,
        id: Option<Uuid>,
    ) -> Result<Option<Job>, StoreError> {
        self.file.check()?;
        let mut tx = self.pool.begin().await?;
        let now = self.now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = ?1, lease_expires_at = ?2,
                    started_at = COALESCE(started_at, ?3)
             WHERE id = (
                SELECT id FROM jobs j
                WHERE state = 'queued' AND run_at <= ?3 AND (?4 IS NULL OR id = ?4)
                  AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state = 'running' AND r.destination = j.destination)
                ORDER BY priority DESC, run_at, created_at, id
                LIMIT 1)
             RETURNING *",
        )
        .bind(worker_id)
        .bind(self.later_ms(lease))
        .bind(now)
        .bind(id.map(|id| id.to_string()))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row)?;
        Event {
            job: job.id,
            name: "running",
            attempt: job.attempt,
            at: now,
        }
        .insert(&mut tx, Some(worker_id), id.map(|_| "doorbell"))
        .await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: Option<&Progress>,
    ) -> Result<bool, StoreError> {
        let done = guarded(
            "UPDATE jobs SET lease_expires_at = ?4, progress = COALESCE(?5, progress)
             WHERE id = ?1 AND state = 'running' AND attempt = ?2 AND worker_id = ?3",
            lease,
        )
        .bind(self.later_ms(duration))
        .bind(progress.map(sqlx::types::Json))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn note(&self, lease: &Lease, event: &str, detail: &str) -> Result<bool, StoreError> {
        let done = guarded(
            "INSERT INTO job_events (job_id, at, event, attempt, worker_id, detail)
             SELECT id, ?4, ?5, attempt, worker_id, ?6 FROM jobs
             WHERE id = ?1 AND state = 'running' AND attempt = ?2 AND worker_id = ?3",
            lease,
        )
        .bind(self.now_ms())
        .bind(event)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = self.now_ms();
        let expired = sqlx::query(
            "SELECT id, attempt, worker_id, attempt >= max_attempts AS exhausted,
                    EXISTS (SELECT 1 FROM jobs q WHERE q.resource = j.resource AND q.state = 'queued') AS superseded
             FROM jobs j WHERE state = 'running' AND lease_expires_at < ?1",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut rescued = Vec::with_capacity(expired.len());
        for row in &expired {
            let (superseded, exhausted): (bool, bool) =
                (row.get("superseded"), row.get("exhausted"));
            let state = match (superseded, exhausted) {
                (true, _) => JobState::Cancelled,
                (false, true) => JobState::Failed,
                (false, false) => JobState::Queued,
            };
            let id: String = row.get("id");
            let previous_worker: Option<String> = row.get("worker_id");
            sqlx::query(
                "UPDATE jobs SET state = ?2, last_error = 'lease expired: worker ' || worker_id || ' stopped renewing it',
                        run_at = ?3, lease_expires_at = NULL, worker_id = NULL,
                        finished_at = CASE WHEN ?2 = 'queued' THEN NULL ELSE ?3 END
                 WHERE id = ?1 AND state = 'running' AND lease_expires_at < ?3",
            )
            .bind(&id)
            .bind(state.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let r = Rescued {
                job_id: parse_uuid(&id)?,
                attempt: row.get("attempt"),
                previous_worker,
                state,
            };
            let detail = format!("lease expired; now {state}");
            let event = Event {
                job: r.job_id,
                name: "rescued",
                attempt: r.attempt,
                at: now,
            };
            event
                .insert(&mut tx, r.previous_worker.as_deref(), Some(&detail))
                .await?;
            rescued.push(r);
        }
        tx.commit().await?;
        if rescued.iter().any(|r| r.state == JobState::Queued) {
            self.wake.notify_one();
        }
        Ok(rescued)
    }

    async fn first_use(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.file.check()?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_calls WHERE expires_at < ?1")
            .bind(self.now_ms())
            .execute(&mut *tx)
            .await?;
        let new = sqlx::query(
            "INSERT INTO webhook_calls (signature, expires_at) VALUES (?1, ?2) ON CONFLICT (signature) DO NOTHING",
        )
        .bind(key)
        .bind(expires_at.timestamp_millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new.rows_affected() == 1)
    }

    async fn cancel(&self, id: Uuid, by: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = self.now_ms();
        let row = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?2, last_error = 'cancelled by ' || ?3
             WHERE id = ?1 AND state = 'queued' RETURNING attempt",
        )
        .bind(id.to_string())
        .bind(now)
        .bind(by)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let event = Event {
            job: id,
            name: "cancelled",
            attempt: row.get("attempt"),
            at: now,
        };
        event
            .insert(&mut tx, None, Some(&format!("by {by}")))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn prune(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError> {
        let cutoff = self
            .now_ms()
            .saturating_sub(i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX));
        let done = sqlx::query(
            "DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ?1 LIMIT ?2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn next_run_in(&self) -> Result<Option<Duration>, StoreError> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT min(run_at) FROM jobs WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        Ok(next.map(|at| until(at - self.now_ms())))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.file.check()?;
        sqlx::query(
            "INSERT INTO store_heartbeat (id, at) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let rows = sqlx::query(
            "SELECT state, count(*) AS n,
                    min(CASE WHEN state = 'queued' AND run_at <= ?1 THEN run_at END) AS oldest
             FROM jobs GROUP BY state",
        )
        .bind(self.now_ms())
        .fetch_all(&self.pool)
        .await?;
        let mut stats = QueueStats::default();
        for row in rows {
            let state: String = row.get("state");
            stats.by_state.push((state, row.get("n")));
            if let Some(oldest) = row.get::<Option<i64>, _>("oldest") {
                stats.oldest_runnable = Some(time(oldest));
            }
        }
        Ok(stats)
    }
}

/// One history line, written in the transaction of the transition it records.
struct Event<'a> {
    job: Uuid,
    name: &'a str,
    attempt: i32,
    at: i64,
}

impl Event<'_> {
    async fn insert(
        &self,
        tx: &mut SqliteConnection,
        worker_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO job_events (job_id, at, event, attempt, worker_id, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(self.job.to_string())
        .bind(self.at)
        .bind(self.name)
        .bind(self.attempt)
        .bind(worker_id)
        .bind(detail)
        .execute(tx)
        .await?;
        Ok(())
    }
}

fn parse_uuid(text: &str) -> Result<Uuid, StoreError> {
    text.parse().map_err(|e| StoreError::Corrupt {
        id: Uuid::nil(),
        reason: format!("job id {text:?}: {e}"),
    })
}

fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
    let id = parse_uuid(&row.get::<String, _>("id"))?;
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
    let result: Option<String> = row.get("result");
    Ok(Job {
        id,
        resource: row.get("resource"),
        destination: row.get("destination"),
        preview: row.get("preview"),
        kind: row.get::<String, _>("kind").parse().map_err(corrupt)?,
        state: row.get::<String, _>("state").parse().map_err(corrupt)?,
        priority: row.get("priority"),
        attempt: row.get("attempt"),
        max_attempts: row.get("max_attempts"),
        run_at: time(row.get("run_at")),
        lease_expires_at: row.get::<Option<i64>, _>("lease_expires_at").map(time),
        worker_id: row.get("worker_id"),
        trigger: row.get::<String, _>("trigger").parse().map_err(corrupt)?,
        requested_by: row.get("requested_by"),
        source_timestamp: row.get("source_timestamp"),
        previous_status: row.get("previous_status"),
        result: result
            .map(|r| serde_json::from_str(&r))
            .transpose()
            .map_err(|e| corrupt(e.to_string()))?,
        last_error: row.get("last_error"),
        created_at: time(row.get("created_at")),
        started_at: row.get::<Option<i64>, _>("started_at").map(time),
        finished_at: row.get::<Option<i64>, _>("finished_at").map(time),
        progress: row
            .get::<Option<sqlx::types::Json<Progress>>, _>("progress")
            .map(|p| p.0),
    })
}

/// A statement whose first three parameters are the lease guard (`id`, `attempt`, `worker_id`): how every write
/// of a worker proves the attempt is still its own.
fn guarded<'q>(
    sql: &'q str,
    lease: &'q Lease,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query(sql)
        .bind(lease.job_id.to_string())
        .bind(lease.attempt)
        .bind(&lease.worker_id)
}
