//! The Postgres job store: `FOR UPDATE SKIP LOCKED` claims, partial unique indexes for coalescing and one writer
//! per destination, guarded transitions that append their history in the same statement, `NOTIFY` on enqueue.

use super::{
    until, Enqueued, JobFilter, JobStore, QueueStats, Requeue, Rescued, RetryOutcome, StoreError,
};
use crate::clock::Clock;
use crate::error_text::redact;
use chrono::{DateTime, Utc};
use signer_types::job::{Job, JobEvent, JobState, Lease, NewJob, Progress};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool, Row as _};
use std::str::FromStr as _;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// A pooled connection unused for this long is pinged before it is handed out (and replaced if dead), as HikariCP
/// does (`aliveBypassWindowMs`, 500 ms). sqlx's default pings on every acquire: a round trip more for every
/// statement, which under load only ever finds the connection alive. One that died within this window of its
/// last use (a terminated backend; a restart takes longer) fails its next statement, which callers
/// already handle as the store being briefly unavailable (the API answers 503, workers retry).
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(500);

/// The channel workers `LISTEN` on; the payload is the job id.
pub const NOTIFY_CHANNEL: &str = "signer_jobs";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    url: String,
    /// RabbitMQ dispatch: every transition that makes a job runnable also writes its doorbell to `job_outbox`.
    outbox: bool,
    /// The time transitions are written and compared with: Postgres's own unless a test set one.
    clock: Clock,
    /// Finished attempts waiting for the next group commit.
    completions: mpsc::UnboundedSender<Completion>,
}

/// One `finish`, queued for the flusher, and where its answer goes.
struct Completion {
    lease: Lease,
    state: JobState,
    result: Option<serde_json::Value>,
    error: Option<String>,
    outbox: bool,
    /// When it finished, if the store's clock was set by hand (otherwise Postgres's `now()` at the flush).
    at: Option<DateTime<Utc>>,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// The most completions one statement records.
const COMPLETIONS_PER_FLUSH: usize = 500;

/// A candidate `j` whose destination has no running job. `OFFSET 0` keeps it a probe of the one-writer index per
/// candidate: as an anti-join, the planner (expecting few running jobs) compares every candidate with every
/// running job, which made large claims an order of magnitude slower with many jobs running.
const DESTINATION_FREE: &str =
    "NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state = 'running' AND r.destination = j.destination OFFSET 0)";

/// The jobs of a `next` CTE become running under a fresh lease (`$1` worker, `$2` seconds, from `$5` the store's
/// time) with their history row (`$4` its detail): the tail of every claim statement.
const CLAIM_NEXT: &str = "claimed AS (
                UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = $1,
                       lease_expires_at = COALESCE($5, now()) + make_interval(secs => $2),
                       started_at = COALESCE(started_at, $5, now())
                FROM next WHERE jobs.id = next.id
                RETURNING jobs.*),
             event AS (
                INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
                SELECT id, 'running', attempt, worker_id, $4::text FROM claimed)";

impl PgStore {
    /// Connects (failing fast with an actionable message) and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let unreachable = |source| StoreError::Unreachable {
            url: redact(url),
            source,
        };
        let options = PgConnectOptions::from_str(url).map_err(unreachable)?;
        // One direct connection first: a refused connection fails start-up at once, not after the pool's timeout.
        PgConnection::connect_with(&options)
            .await
            .map_err(unreachable)?
            .close()
            .await
            .map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= CHECK_IDLE_AFTER {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        let (completions, queued) = mpsc::unbounded_channel();
        tokio::spawn(flush_completions(pool.clone(), queued));
        let store = Self {
            pool,
            url: url.to_owned(),
            outbox: false,
            clock: Clock::default(),
            completions,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        super::migrations::postgres().run(&self.pool).await?;
        Ok(())
    }

    /// Writes doorbells for the RabbitMQ relay from now on.
    pub fn with_outbox(mut self, on: bool) -> Self {
        self.outbox = on;
        self
    }

    /// Reads the time from `clock` from now on (tests; a clone shares the time with the caller).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The time a statement binds: `None` leaves it to Postgres (`COALESCE($n, now())`).
    fn now(&self) -> Option<DateTime<Utc>> {
        self.clock.fixed()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl JobStore for PgStore {
    async fn requeue(&self, lease: &Lease, why: Requeue<'_>) -> Result<RetryOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = guarded(
            "SELECT j.attempt >= j.max_attempts AS exhausted,
                    (SELECT q.id FROM jobs q WHERE q.resource = j.resource AND q.state = 'queued') AS queued
             FROM jobs j WHERE j.id = $1 AND j.state = 'running' AND j.attempt = $2 AND j.worker_id = $3
             FOR UPDATE",
            lease,
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RetryOutcome::LeaseLost);
        };
        let decision = why.decide(row.get("exhausted"), row.get("queued"));
        sqlx::query(
            "UPDATE jobs SET state = $2, last_error = COALESCE($3, last_error),
                    result = CASE WHEN $2 = 'failed' THEN $6 ELSE result END,
                    attempt = attempt - $5::int,
                    run_at = COALESCE($7, now()) + make_interval(secs => $4),
                    lease_expires_at = NULL,
                    worker_id = CASE WHEN $2 = 'queued' THEN NULL ELSE worker_id END,
                    finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE COALESCE($7, now()) END
             WHERE id = $1",
        )
        .bind(lease.job_id)
        .bind(decision.state.as_str())
        .bind(why.error())
        .bind(why.delay().as_secs_f64())
        .bind(i32::from(why.refunds_attempt()))
        .bind(signer_types::job::Job::out_of_retries())
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        insert_event(
            &mut tx,
            lease.job_id,
            decision.event,
            lease.attempt,
            Some(&lease.worker_id),
            Some(&decision.detail),
        )
        .await?;
        if decision.state == JobState::Queued {
            notify(&mut tx, lease.job_id).await?;
            self.ring(&mut tx, lease.job_id, why.delay()).await?;
        } else {
            self.ring_next_for_destination(&mut tx, lease.job_id)
                .await?;
        }
        tx.commit().await?;
        Ok(decision.outcome)
    }

    /// Group commit: every attempt finishing while a flush is under way is recorded by the next one, in one
    /// statement (a lone finish goes out at once). Many workers finishing short jobs then cost one commit, not
    /// one each.
    async fn finish(
        &self,
        lease: &Lease,
        state: JobState,
        result: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let (answer, answered) = oneshot::channel();
        let completion = Completion {
            lease: lease.clone(),
            state,
            result,
            error: error.map(str::to_owned),
            outbox: self.outbox,
            at: self.now(),
            answer,
        };
        self.completions
            .send(completion)
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    async fn enqueue(&self, new: NewJob) -> Result<Enqueued, StoreError> {
        let detail = format!("{} by {}", new.trigger, new.requested_by);
        // Insert, or join the queued job; that job may be claimed between the two: then insert again.
        for _ in 0..5 {
            if let Some(job) = self.insert_queued(&new, &detail).await? {
                return Ok(Enqueued {
                    job,
                    coalesced: false,
                });
            }
            let mut tx = self.pool.begin().await?;
            let existing = sqlx::query(
                "SELECT * FROM jobs WHERE resource = $1 AND state = 'queued' FOR UPDATE",
            )
            .bind(&new.resource)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = existing {
                let mut job = job_from_row(&row)?;
                let mut detail = detail;
                if new.rewrites(&job) {
                    let row = sqlx::query(
                        "UPDATE jobs SET kind = $2, requested_by = $3, previous_status = $4, trigger = $5 WHERE id = $1 RETURNING *",
                    )
                    .bind(job.id)
                    .bind(new.kind.as_str())
                    .bind(&new.requested_by)
                    .bind(&new.previous_status)
                    .bind(new.trigger.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    job = job_from_row(&row)?;
                    detail = format!("{detail}; now {}", job.kind);
                }
                insert_event(
                    &mut tx,
                    job.id,
                    "coalesced",
                    job.attempt,
                    None,
                    Some(&detail),
                )
                .await?;
                tx.commit().await?;
                return Ok(Enqueued {
                    job,
                    coalesced: true,
                });
            }
        }
        Err(StoreError::Contended(new.resource))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM jobs
             WHERE ($1::text IS NULL OR resource = $1) AND ($2::text IS NULL OR state = $2)
               AND ($3::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM jobs WHERE id = $3))
               AND ($5::text IS NULL OR requested_by = $5)
             ORDER BY created_at DESC, id DESC LIMIT $4",
        )
        .bind(&filter.resource)
        .bind(filter.state.map(JobState::as_str))
        .bind(filter.before)
        .bind(filter.limit)
        .bind(&filter.requested_by)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn history(&self, id: Uuid) -> Result<Vec<JobEvent>, StoreError> {
        let rows = sqlx::query("SELECT at, event, attempt, worker_id, detail FROM job_events WHERE job_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| JobEvent {
                at: r.get("at"),
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
        // The next job skips rows others are claiming; a named job waits for its lock (an enqueue may be
        // coalescing onto it) and is then re-checked, so two doorbells for one job claim it once.
        let lock = if id.is_some() {
            "FOR UPDATE"
        } else {
            "FOR UPDATE SKIP LOCKED"
        };
        let sql = format!(
            "WITH next AS (
                SELECT id FROM jobs j
                WHERE state = 'queued' AND run_at <= COALESCE($5, now()) AND ($3::uuid IS NULL OR id = $3)
                  AND {DESTINATION_FREE}
                ORDER BY priority DESC, run_at, created_at
                LIMIT 1
                {lock}),
             {CLAIM_NEXT}
             SELECT * FROM claimed"
        );
        let claimed = sqlx::query(&sql)
            .bind(worker_id)
            .bind(lease.as_secs_f64())
            .bind(id)
            .bind(id.map(|_| "doorbell"))
            .bind(self.now())
            .fetch_optional(&self.pool)
            .await;
        match claimed {
            Ok(row) => row.as_ref().map(job_from_row).transpose(),
            // Two workers claimed jobs of different resources writing the same destination at the same instant:
            // the index kept one; the other simply finds nothing this round.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn claim_many(
        &self,
        worker_id: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        // Candidates in claim order (twice as many, for destinations met twice), then one per destination (the
        // one-writer index would refuse a second), then the batch.
        let sql = format!(
            "WITH candidates AS (
                SELECT id, destination, priority, run_at, created_at FROM jobs j
                WHERE state = 'queued' AND run_at <= COALESCE($5, now())
                  AND {DESTINATION_FREE}
                ORDER BY priority DESC, run_at, created_at
                LIMIT $3 * 2
                FOR UPDATE SKIP LOCKED),
             next AS (
                SELECT id FROM (
                    SELECT DISTINCT ON (destination) id, priority, run_at, created_at FROM candidates
                    ORDER BY destination, priority DESC, run_at, created_at) one_per_destination
                ORDER BY priority DESC, run_at, created_at
                LIMIT $3),
             {CLAIM_NEXT}
             SELECT * FROM claimed ORDER BY priority DESC, run_at, created_at"
        );
        let claimed = sqlx::query(&sql)
            .bind(worker_id)
            .bind(lease.as_secs_f64())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(None::<&str>)
            .bind(self.now())
            .fetch_all(&self.pool)
            .await;
        match claimed {
            Ok(rows) => rows.iter().map(job_from_row).collect(),
            // As for one claim: a concurrent claim took a job of the same destination; none this round.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn heartbeat(
        &self,
        lease: &Lease,
        duration: Duration,
        progress: Option<&Progress>,
    ) -> Result<bool, StoreError> {
        let done = guarded(
            "UPDATE jobs SET lease_expires_at = COALESCE($6, now()) + make_interval(secs => $4),
                    progress = COALESCE($5, progress)
             WHERE id = $1 AND state = 'running' AND attempt = $2 AND worker_id = $3",
            lease,
        )
        .bind(duration.as_secs_f64())
        .bind(progress.map(sqlx::types::Json))
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn note(&self, lease: &Lease, event: &str, detail: &str) -> Result<bool, StoreError> {
        let done = guarded(
            "INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
             SELECT id, $4, attempt, worker_id, $5 FROM jobs
             WHERE id = $1 AND state = 'running' AND attempt = $2 AND worker_id = $3",
            lease,
        )
        .bind(event)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn rescue_expired(&self) -> Result<Vec<Rescued>, StoreError> {
        // One statement: rows are re-checked under their lock, so a job that finished or was renewed between
        // the scan and the update is left alone (the guard River #1302 lacked).
        let rows = sqlx::query(
            "WITH expired AS (
                SELECT id, worker_id AS previous_worker FROM jobs
                WHERE state = 'running' AND lease_expires_at < COALESCE($2, now())
                FOR UPDATE SKIP LOCKED),
             moved AS (
                UPDATE jobs j SET
                    state = CASE
                        WHEN EXISTS (SELECT 1 FROM jobs q WHERE q.resource = j.resource AND q.state = 'queued')
                            THEN 'cancelled'
                        WHEN j.attempt >= j.max_attempts THEN 'failed'
                        ELSE 'queued' END,
                    last_error = 'lease expired: worker ' || e.previous_worker || ' stopped renewing it',
                    run_at = COALESCE($2, now()), lease_expires_at = NULL, worker_id = NULL
                FROM expired e
                WHERE j.id = e.id AND j.state = 'running' AND j.lease_expires_at < COALESCE($2, now())
                RETURNING j.id, j.attempt, j.state, j.destination, e.previous_worker),
             finished AS (
                UPDATE jobs SET finished_at = COALESCE($2, now()) FROM moved WHERE jobs.id = moved.id AND moved.state <> 'queued'),
             event AS (
                INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
                SELECT id, 'rescued', attempt, previous_worker, 'lease expired; now ' || state FROM moved),
             bells AS (
                INSERT INTO job_outbox (job_id)
                SELECT id FROM moved WHERE $1 AND state = 'queued'
                UNION
                SELECT q.id FROM jobs q JOIN moved m ON q.destination = m.destination
                WHERE $1 AND m.state <> 'queued' AND q.state = 'queued'
                ON CONFLICT (job_id) DO UPDATE SET publish_after = COALESCE($2, now()), relay_until = NULL)
             SELECT * FROM moved",
        )
        .bind(self.outbox)
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        let rescued = rows
            .iter()
            .map(|r| {
                let state: String = r.get("state");
                Ok(Rescued {
                    job_id: r.get("id"),
                    attempt: r.get("attempt"),
                    previous_worker: r.get("previous_worker"),
                    state: state.parse().map_err(|reason| StoreError::Corrupt {
                        id: r.get("id"),
                        reason,
                    })?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if rescued.iter().any(|r| r.state == JobState::Queued) {
            sqlx::query("SELECT pg_notify($1, 'rescued')")
                .bind(NOTIFY_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(rescued)
    }

    async fn first_use(&self, key: &str, expires_at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM webhook_calls WHERE expires_at < COALESCE($1, now())")
            .bind(self.now())
            .execute(&mut *tx)
            .await?;
        let new = sqlx::query(
            "INSERT INTO webhook_calls (signature, expires_at) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING",
        )
        .bind(key)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new.rows_affected() == 1)
    }

    async fn cancel(&self, id: Uuid, by: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "WITH done AS (
                UPDATE jobs SET state = 'cancelled', finished_at = COALESCE($3, now()), last_error = 'cancelled by ' || $2
                WHERE id = $1 AND state = 'queued' RETURNING id, attempt)
             INSERT INTO job_events (job_id, event, attempt, detail) SELECT id, 'cancelled', attempt, 'by ' || $2 FROM done",
        )
        .bind(id)
        .bind(by)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn prune(&self, older_than: Duration, batch: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "WITH gone AS (
                DELETE FROM jobs WHERE id IN (
                    SELECT id FROM jobs
                    WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < COALESCE($3, now()) - make_interval(secs => $1)
                    LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING id),
             history AS (DELETE FROM job_events WHERE job_id IN (SELECT id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(older_than.as_secs_f64())
        .bind(batch)
        .bind(self.now())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(done.get::<i64, _>(0)).unwrap_or_default())
    }

    async fn next_run_in(&self) -> Result<Option<Duration>, StoreError> {
        let millis: Option<i64> = sqlx::query_scalar(
            "SELECT (EXTRACT(EPOCH FROM min(run_at) - COALESCE($1, now())) * 1000)::bigint
             FROM jobs WHERE state = 'queued'",
        )
        .bind(self.now())
        .fetch_one(&self.pool)
        .await?;
        Ok(millis.map(until))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO store_heartbeat (id, at) VALUES (1, now())
             ON CONFLICT (id) DO UPDATE SET at = excluded.at",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, StoreError> {
        let rows = sqlx::query(
            "SELECT state, count(*) AS n,
                    min(run_at) FILTER (WHERE state = 'queued' AND run_at <= COALESCE($1, now())) AS oldest
             FROM jobs GROUP BY state",
        )
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        let mut stats = QueueStats::default();
        for row in rows {
            let state: String = row.get("state");
            stats.by_state.push((state, row.get("n")));
            if let Some(oldest) = row.get::<Option<DateTime<Utc>>, _>("oldest") {
                stats.oldest_runnable = Some(oldest);
            }
        }
        Ok(stats)
    }
}

impl PgStore {
    /// Writes job `id`'s doorbell, due after `delay`, in the caller's transaction (RabbitMQ dispatch only).
    /// A new queued job, its first history row, its wake-up (`NOTIFY`, and the doorbell with RabbitMQ), in one
    /// statement: one round trip and one commit. `None` when the resource already has a queued job.
    async fn insert_queued(&self, new: &NewJob, detail: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(
            "WITH inserted AS (
                INSERT INTO jobs (id, resource, destination, preview, kind, state, priority, max_attempts, trigger,
                                  requested_by, source_timestamp, previous_status, run_at)
                VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8, $9, $10, $11, COALESCE($15, now()))
                ON CONFLICT (resource) WHERE state = 'queued' DO NOTHING
                RETURNING *),
             event AS (
                INSERT INTO job_events (job_id, event, attempt, detail)
                SELECT id, 'queued', 0, $12 FROM inserted),
             doorbell AS (
                INSERT INTO job_outbox (job_id, publish_after)
                SELECT id, run_at FROM inserted WHERE $13
                ON CONFLICT (job_id) DO UPDATE SET publish_after = EXCLUDED.publish_after, relay_until = NULL),
             wake AS (
                SELECT pg_notify($14, id::text) FROM inserted)
             SELECT inserted.*, (SELECT count(*) FROM wake) AS woken FROM inserted",
        )
        .bind(super::new_job_id())
        .bind(&new.resource)
        .bind(&new.destination)
        .bind(&new.preview)
        .bind(new.kind.as_str())
        .bind(new.priority)
        .bind(new.max_attempts)
        .bind(new.trigger.as_str())
        .bind(&new.requested_by)
        .bind(new.source_timestamp)
        .bind(&new.previous_status)
        .bind(detail)
        .bind(self.outbox)
        .bind(NOTIFY_CHANNEL)
        .bind(self.now())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn ring(
        &self,
        tx: &mut sqlx::PgConnection,
        id: Uuid,
        delay: Duration,
    ) -> Result<(), sqlx::Error> {
        if self.outbox {
            sqlx::query(
                "INSERT INTO job_outbox (job_id, publish_after) VALUES ($1, COALESCE($3, now()) + make_interval(secs => $2))
                 ON CONFLICT (job_id) DO UPDATE SET publish_after = EXCLUDED.publish_after, relay_until = NULL",
            )
            .bind(id)
            .bind(delay.as_secs_f64())
            .bind(self.now())
            .execute(tx)
            .await?;
        }
        Ok(())
    }

    /// A job that stops running frees its destination: ring for the job that waited for it.
    async fn ring_next_for_destination(
        &self,
        tx: &mut sqlx::PgConnection,
        finished: Uuid,
    ) -> Result<(), sqlx::Error> {
        if self.outbox {
            sqlx::query(
                "INSERT INTO job_outbox (job_id, publish_after)
                 SELECT q.id, q.run_at FROM jobs q JOIN jobs f ON q.destination = f.destination
                 WHERE f.id = $1 AND q.state = 'queued'
                 ON CONFLICT (job_id) DO NOTHING",
            )
            .bind(finished)
            .execute(tx)
            .await?;
        }
        Ok(())
    }

    /// Takes up to `limit` due doorbells for `hold` (so a relay that dies mid-publish only delays them), oldest
    /// first; other relays skip them meanwhile.
    pub async fn outbox_take(
        &self,
        limit: i64,
        hold: Duration,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "UPDATE job_outbox o SET relay_until = COALESCE($3, now()) + make_interval(secs => $2), relayed = relayed + 1
             FROM (SELECT job_id FROM job_outbox
                   WHERE publish_after <= COALESCE($3, now())
                     AND (relay_until IS NULL OR relay_until < COALESCE($3, now()))
                   ORDER BY publish_after LIMIT $1 FOR UPDATE SKIP LOCKED) due
             WHERE o.job_id = due.job_id
             RETURNING o.job_id, o.relay_until",
        )
        .bind(limit)
        .bind(hold.as_secs_f64())
        .bind(self.now())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| OutboxEntry {
                job_id: r.get("job_id"),
                held_until: r.get("relay_until"),
            })
            .collect())
    }

    /// Deletes the doorbells the broker confirmed, unless one was rung again meanwhile (a retry scheduled
    /// while its previous doorbell was in flight keeps its new row).
    pub async fn outbox_done(&self, confirmed: &[OutboxEntry]) -> Result<u64, StoreError> {
        let ids: Vec<Uuid> = confirmed.iter().map(|e| e.job_id).collect();
        let held: Vec<DateTime<Utc>> = confirmed.iter().map(|e| e.held_until).collect();
        let done = sqlx::query(
            "DELETE FROM job_outbox o USING unnest($1::uuid[], $2::timestamptz[]) AS c(job_id, held_until)
             WHERE o.job_id = c.job_id AND o.relay_until = c.held_until",
        )
        .bind(&ids)
        .bind(&held)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Doorbells not yet confirmed by the broker, and when the next one falls due.
    pub async fn outbox_pending(&self) -> Result<(i64, Option<DateTime<Utc>>), StoreError> {
        let row = sqlx::query(
            "SELECT count(*) AS n, min(GREATEST(publish_after, relay_until)) AS next FROM job_outbox",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get("n"), row.get("next")))
    }
}

/// A doorbell taken by a relay: the job to publish, and the hold that proves the row is still this relay's.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub job_id: Uuid,
    pub held_until: DateTime<Utc>,
}

async fn insert_event(
    tx: &mut sqlx::PgConnection,
    job_id: Uuid,
    event: &str,
    attempt: i32,
    worker_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO job_events (job_id, event, attempt, worker_id, detail) VALUES ($1, $2, $3, $4, $5)")
        .bind(job_id)
        .bind(event)
        .bind(attempt)
        .bind(worker_id)
        .bind(detail)
        .execute(tx)
        .await?;
    Ok(())
}

/// Delivered at commit, so a worker never wakes for a job it cannot see yet.
async fn notify(tx: &mut sqlx::PgConnection, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(job_id.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

fn job_from_row(row: &sqlx::postgres::PgRow) -> Result<Job, StoreError> {
    let id: Uuid = row.get("id");
    let corrupt = |reason: String| StoreError::Corrupt { id, reason };
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
        run_at: row.get("run_at"),
        lease_expires_at: row.get("lease_expires_at"),
        worker_id: row.get("worker_id"),
        trigger: row.get::<String, _>("trigger").parse().map_err(corrupt)?,
        requested_by: row.get("requested_by"),
        source_timestamp: row.get("source_timestamp"),
        previous_status: row.get("previous_status"),
        result: row.get("result"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
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
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
}

/// Records queued completions, as many per statement as are waiting, until every store handle is gone.
async fn flush_completions(pool: PgPool, mut queued: mpsc::UnboundedReceiver<Completion>) {
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < COMPLETIONS_PER_FLUSH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match record_completions(&pool, &batch).await {
            Ok(recorded) => {
                for completion in batch {
                    // The whole lease: a stale attempt of a job finished in the same batch wrote nothing.
                    let ours = recorded.contains(&completion.lease);
                    let _ = completion.answer.send(Ok(ours));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for completion in batch {
                    let _ = completion
                        .answer
                        .send(Err(StoreError::Flush(message.clone())));
                }
            }
        }
    }
}

/// One statement: the guarded transitions (still running, same attempt, same worker), their history, and with
/// RabbitMQ the doorbells of jobs that were waiting for the destinations just freed. Returns the leases that
/// still held.
async fn record_completions(
    pool: &PgPool,
    batch: &[Completion],
) -> Result<Vec<Lease>, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|c| c.lease.job_id).collect();
    let attempts: Vec<i32> = batch.iter().map(|c| c.lease.attempt).collect();
    let workers: Vec<&str> = batch.iter().map(|c| c.lease.worker_id.as_str()).collect();
    let states: Vec<&str> = batch.iter().map(|c| c.state.as_str()).collect();
    let results: Vec<Option<serde_json::Value>> = batch.iter().map(|c| c.result.clone()).collect();
    let errors: Vec<Option<&str>> = batch.iter().map(|c| c.error.as_deref()).collect();
    let times: Vec<Option<DateTime<Utc>>> = batch.iter().map(|c| c.at).collect();
    let outbox = batch.iter().any(|c| c.outbox);
    let rows = sqlx::query(
        "WITH finished AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::jsonb[], $6::text[],
                                 $8::timestamptz[])
                AS f(id, attempt, worker_id, state, result, error, at)),
         done AS (
            UPDATE jobs SET state = f.state, result = f.result, last_error = f.error, finished_at = COALESCE(f.at, now()),
                   lease_expires_at = NULL
            FROM finished f
            WHERE jobs.id = f.id AND jobs.state = 'running' AND jobs.attempt = f.attempt AND jobs.worker_id = f.worker_id
            RETURNING jobs.id, jobs.attempt, jobs.worker_id, jobs.state, jobs.last_error, jobs.destination),
         events AS (
            INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
            SELECT id, state, attempt, worker_id, last_error FROM done),
         doorbells AS (
            INSERT INTO job_outbox (job_id, publish_after)
            SELECT q.id, q.run_at FROM jobs q JOIN done ON q.destination = done.destination
            WHERE $7 AND q.state = 'queued'
            ON CONFLICT (job_id) DO NOTHING)
         SELECT id, attempt, worker_id FROM done",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&workers)
    .bind(&states)
    .bind(&results)
    .bind(&errors)
    .bind(outbox)
    .bind(&times)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Lease {
            job_id: r.get("id"),
            attempt: r.get("attempt"),
            worker_id: r.get("worker_id"),
        })
        .collect())
}
