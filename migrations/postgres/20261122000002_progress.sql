-- How far a running job got (records fetched and pushed), written with its heartbeat.
ALTER TABLE jobs ADD COLUMN progress jsonb;
