-- RabbitMQ dispatch (DESIGN §4): a transactional outbox of doorbells. A row is written in the transaction that
-- makes a job runnable (enqueue, retry, release, rescue, a destination freed) and deleted once the broker
-- confirmed the message carrying its job id. Postgres stays the truth: a lost message only costs latency.
CREATE TABLE job_outbox (
    job_id        uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    -- Not before: a retry's doorbell rings when the retry is due, never held unacked in the broker.
    publish_after timestamptz NOT NULL DEFAULT now(),
    -- A relay publishing it holds it until then; a relay that died mid-publish only delays it.
    relay_until   timestamptz,
    relayed       integer     NOT NULL DEFAULT 0
);
CREATE INDEX job_outbox_due ON job_outbox (publish_after);
