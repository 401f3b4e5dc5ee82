-- One claim of 500 jobs on a narrow queue table (narrow-queue.sql): the lease is taken there, the job record only read.
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
