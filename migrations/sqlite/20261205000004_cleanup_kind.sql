-- See migrations/postgres/20261205000006_cleanup_kind.sql. SQLite cannot change a CHECK constraint in place:
-- both tables are rebuilt. The history is copied to its new table first, referencing the new jobs table, so
-- that dropping the old jobs table cascades into nothing; renaming the new jobs table renames the reference.
CREATE TABLE jobs_new (
    id               TEXT    PRIMARY KEY,
    resource         TEXT    NOT NULL,
    destination      TEXT    NOT NULL,
    preview          TEXT,
    kind             TEXT    NOT NULL CHECK (kind IN ('sign', 'review', 'resign', 'rollback', 'cleanup')),
    state            TEXT    NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    run_at           INTEGER NOT NULL,
    lease_expires_at INTEGER,
    worker_id        TEXT,
    trigger          TEXT    NOT NULL CHECK (trigger IN ('webhook', 'api', 'feed')),
    requested_by     TEXT    NOT NULL,
    source_timestamp INTEGER,
    result           TEXT,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    progress         TEXT,
    previous_status  TEXT,
    CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK (state <> 'running' OR worker_id IS NOT NULL)
);
INSERT INTO jobs_new (id, resource, destination, preview, kind, state, priority, attempt, max_attempts, run_at,
                      lease_expires_at, worker_id, trigger, requested_by, source_timestamp, result, last_error,
                      created_at, started_at, finished_at, progress, previous_status)
    SELECT id, resource, destination, preview, kind, state, priority, attempt, max_attempts, run_at,
           lease_expires_at, worker_id, trigger, requested_by, source_timestamp, result, last_error,
           created_at, started_at, finished_at, progress, previous_status
    FROM jobs;

CREATE TABLE job_events_new (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    TEXT    NOT NULL REFERENCES jobs_new (id) ON DELETE CASCADE,
    at        INTEGER NOT NULL,
    event     TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    worker_id TEXT,
    detail    TEXT
);
INSERT INTO job_events_new (id, job_id, at, event, attempt, worker_id, detail)
    SELECT id, job_id, at, event, attempt, worker_id, detail FROM job_events;

DROP TABLE job_events;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
ALTER TABLE job_events_new RENAME TO job_events;

CREATE UNIQUE INDEX jobs_one_queued_per_resource ON jobs (resource) WHERE state = 'queued';
CREATE UNIQUE INDEX jobs_one_running_per_destination ON jobs (destination) WHERE state = 'running';
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, created_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_listing ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_resource ON jobs (resource, created_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX job_events_by_job ON job_events (job_id, id);
