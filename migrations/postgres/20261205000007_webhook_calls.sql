-- Webhook calls already received (their HMAC signature), until their timestamp leaves the accepted window: a
-- call sent again is refused, whichever API process it reaches.
CREATE TABLE webhook_calls (
    signature  text        PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX webhook_calls_expiry ON webhook_calls (expires_at);
