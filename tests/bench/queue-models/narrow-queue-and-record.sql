-- The lease on a narrow queue table, the job record written once at the outcome with one history row.
WITH candidates AS (
    SELECT id, destination, priority, run_at, created_at FROM job_queue q
    WHERE worker_id IS NULL AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM job_queue r WHERE r.worker_id IS NOT NULL AND r.destination = q.destination OFFSET 0)
    ORDER BY priority DESC, run_at, created_at LIMIT 1000 FOR UPDATE SKIP LOCKED),
 next AS (
    SELECT id FROM (SELECT DISTINCT ON (destination) id, priority, run_at, created_at FROM candidates
        ORDER BY destination, priority DESC, run_at, created_at) o
    ORDER BY priority DESC, run_at, created_at LIMIT 500),
 claimed AS (
    UPDATE job_queue SET attempt = attempt + 1, worker_id = 'w', lease_expires_at = now() + make_interval(secs => 60)
    FROM next WHERE job_queue.id = next.id RETURNING job_queue.*)
SELECT j.*, c.attempt, c.worker_id, c.lease_expires_at FROM claimed c JOIN jobs j USING (id) ORDER BY c.priority DESC, c.run_at, c.created_at \g /dev/null
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
