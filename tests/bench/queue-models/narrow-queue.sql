-- The hot queue apart from the job record: claimed and deleted like Graphile Worker's table, the lease on it.
CREATE TABLE job_queue (
    id               uuid PRIMARY KEY,
    destination      text        NOT NULL,
    priority         integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempt          integer     NOT NULL DEFAULT 0,
    worker_id        text,
    lease_expires_at timestamptz
);
CREATE INDEX job_queue_runnable ON job_queue (priority DESC, run_at, created_at) WHERE worker_id IS NULL;
CREATE UNIQUE INDEX job_queue_one_per_destination ON job_queue (destination) WHERE worker_id IS NOT NULL;
INSERT INTO job_queue (id, destination, created_at) SELECT id, destination, created_at FROM jobs;
