-- One round: claim 500 jobs as PgStore::claim_many does, then record their outcomes as record_completions does.
-- A copy of those statements (worker/src/store/postgres.rs, as of ca10843) with their parameters written in: a
-- change there is to be made here too, or this measures the old queue.
-- run.sh cuts the marked history out for its variants without it.
WITH candidates AS (
    SELECT id, destination, priority, run_at, created_at FROM jobs j
    WHERE state = 'queued' AND run_at <= now()
      AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.state = 'running' AND r.destination = j.destination OFFSET 0)
    ORDER BY priority DESC, run_at, created_at LIMIT 1000 FOR UPDATE SKIP LOCKED),
 next AS (
    SELECT id FROM (SELECT DISTINCT ON (destination) id, priority, run_at, created_at FROM candidates
        ORDER BY destination, priority DESC, run_at, created_at) o
    ORDER BY priority DESC, run_at, created_at LIMIT 500),
 claimed AS (
    UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = 'w',
           lease_expires_at = now() + make_interval(secs => 60), started_at = COALESCE(started_at, now())
    FROM next WHERE jobs.id = next.id RETURNING jobs.*)
-- history:claim
 , event AS (
    INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
    SELECT id, 'running', attempt, worker_id, NULL::text FROM claimed)
-- end
SELECT * FROM claimed ORDER BY priority DESC, run_at, created_at \g /dev/null
WITH finished AS (
    SELECT id, attempt, worker_id, 'succeeded'::text AS state, NULL::jsonb AS result, NULL::text AS error FROM jobs WHERE state = 'running' AND worker_id = 'w'),
 done AS (
    UPDATE jobs SET state = f.state, result = f.result, last_error = f.error, finished_at = now(), lease_expires_at = NULL
    FROM finished f
    WHERE jobs.id = f.id AND jobs.state = 'running' AND jobs.attempt = f.attempt AND jobs.worker_id = f.worker_id
    RETURNING jobs.id, jobs.attempt, jobs.worker_id, jobs.state, jobs.last_error, jobs.destination)
-- history:outcome
 , events AS (
    INSERT INTO job_events (job_id, event, attempt, worker_id, detail)
    SELECT id, state, attempt, worker_id, last_error FROM done)
-- end
SELECT id, attempt, worker_id FROM done \g /dev/null
