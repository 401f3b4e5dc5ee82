-- One row, rewritten by every health check: a file that takes reads but not writes (read-only, corrupt) fails
-- `/__heartbeat__` and readiness instead of failing the next job request.
CREATE TABLE store_heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at INTEGER NOT NULL
);
