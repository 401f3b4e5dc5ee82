-- Jobs: the whole truth of every signing request (state, attempts, lease, result). See DESIGN.md §4.
CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    resource         text        NOT NULL,
    destination      text        NOT NULL,
    preview          text,
    kind             text        NOT NULL CHECK (kind IN ('sign', 'review', 'resign', 'rollback')),
    state            text        NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    priority         integer     NOT NULL DEFAULT 0,
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL CHECK (max_attempts >= 1),
    run_at           timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    worker_id        text,
    trigger          text        NOT NULL CHECK (trigger IN ('webhook', 'api', 'feed')),
    requested_by     text        NOT NULL,
    source_timestamp bigint,
    result           jsonb,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- A running job always has an owner and a lease; nothing else holds a lease.
    CHECK ((state = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK (state <> 'running' OR worker_id IS NOT NULL)
);

-- Invariant 2: repeated triggers coalesce onto the one queued job of a resource ...
CREATE UNIQUE INDEX jobs_one_queued_per_resource ON jobs (resource) WHERE state = 'queued';
-- ... and a destination has at most one writer.
CREATE UNIQUE INDEX jobs_one_running_per_destination ON jobs (destination) WHERE state = 'running';
-- The claim reads only runnable rows, in claim order.
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at, created_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_listing ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_by_resource ON jobs (resource, created_at DESC);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('succeeded', 'failed', 'cancelled');

-- Every transition, appended in the statement that makes it.
CREATE TABLE job_events (
    id        bigserial PRIMARY KEY,
    job_id    uuid        NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    event     text        NOT NULL,
    attempt   integer     NOT NULL,
    worker_id text,
    detail    text
);
CREATE INDEX job_events_by_job ON job_events (job_id, id);

-- The queue table churns: vacuum it early.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
