-- The outcomes of a narrow-claim.sql round: the queue rows deleted, the job record written once, one history row.
WITH finished AS (
    SELECT id, attempt, worker_id, 'succeeded'::text AS state, NULL::jsonb AS result, NULL::text AS error FROM job_queue WHERE worker_id = 'w'),
 gone AS (
    DELETE FROM job_queue q USING finished f WHERE q.id = f.id AND q.attempt = f.attempt AND q.worker_id = f.worker_id
    RETURNING q.id, q.attempt, q.worker_id, q.lease_expires_at),
 done AS (
    UPDATE jobs SET state = f.state, result = f.result, last_error = f.error, finished_at = now(), attempt = g.attempt,
           worker_id = g.worker_id, started_at = COALESCE(started_at, g.lease_expires_at - interval '60 seconds')
    FROM finished f JOIN gone g USING (id)
    WHERE jobs.id = f.id
    RETURNING jobs.id, jobs.attempt, jobs.worker_id, jobs.state, jobs.last_error, jobs.started_at),
 events AS (
    INSERT INTO job_events (job_id, event, attempt, worker_id, detail, at)
    SELECT id, state, attempt, worker_id, last_error, started_at FROM done)
SELECT id, attempt, worker_id FROM done \g /dev/null
