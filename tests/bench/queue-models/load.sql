-- 100,000 queued jobs, one destination each, as queue_throughput loads them. Ids in creation order, as the store
-- makes them (UUIDv7: a millisecond timestamp first); with -v random_ids=1, random ones (UUIDv4, as before).
\if :{?random_ids}
INSERT INTO jobs (id, resource, destination, kind, state, max_attempts, trigger, requested_by)
SELECT gen_random_uuid(), 'b/c' || i, 'd/c' || i, 'sign', 'queued', 5, 'api', 'bench'
FROM generate_series(1, 100000) i;
\else
INSERT INTO jobs (id, resource, destination, kind, state, max_attempts, trigger, requested_by)
SELECT (lpad(to_hex(i), 12, '0') || '7000' || '8000' || substr(md5(i::text), 1, 12))::uuid,
       'b/c' || i, 'd/c' || i, 'sign', 'queued', 5, 'api', 'bench'
FROM generate_series(1, 100000) i;
\endif
