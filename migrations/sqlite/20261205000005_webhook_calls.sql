-- See migrations/postgres/20261205000007_webhook_calls.sql. Times in milliseconds since the Unix epoch.
CREATE TABLE webhook_calls (
    signature  TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX webhook_calls_expiry ON webhook_calls (expires_at);
