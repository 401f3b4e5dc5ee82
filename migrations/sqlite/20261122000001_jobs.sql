-- The embedded store: the same tables and invariants as migrations/postgres, in SQLite's types.
-- Times are milliseconds since the Unix epoch (INTEGER), so they compare and index exactly.
CREATE TABLE jobs (
    id               TEXT    PRIMARY KEY,
    resource         TEXT    NOT NULL,
    destination      TEXT    NOT NULL,
    preview          TEXT,
    kind             TEXT    NOT NULL CHECK (kind IN ('sign', 'review', 'resign', 'rollback')),
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
    CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK (state <> 'running' OR worker_id IS NOT NULL)
);

CREATE UNIQUE INDEX jobs_one_queued_per_resource ON jobs (resource) WHERE state = 'queued';
CREATE UNIQUE INDEX jobs_one_running_per_destination ON jobs (destination) WHERE state = 'running';
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, created_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_listing ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_resource ON jobs (resource, created_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');

CREATE TABLE job_events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id    TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at        INTEGER NOT NULL,
    event     TEXT    NOT NULL,
    attempt   INTEGER NOT NULL,
    worker_id TEXT,
    detail    TEXT
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);
