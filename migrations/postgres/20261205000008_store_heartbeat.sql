-- One row, rewritten by every health check: a store that takes reads but not writes (a read-only replica after a
-- failover, a full disk) fails `/__heartbeat__` and readiness instead of failing the next job request.
CREATE TABLE store_heartbeat (
    id integer     PRIMARY KEY CHECK (id = 1),
    at timestamptz NOT NULL
);
