-- The outcomes of a narrow-claim.sql round with nothing else kept (Graphile Worker's model): the queue rows deleted.
DELETE FROM job_queue WHERE worker_id = 'w' RETURNING id \g /dev/null
