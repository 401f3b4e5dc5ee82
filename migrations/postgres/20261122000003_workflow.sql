-- The status the source collection had before the one that asked for this job: `to-resign` restores it, and a
-- refused `to-sign` puts it back.
ALTER TABLE jobs ADD COLUMN previous_status text;
-- The feed's leader lease is a session-level advisory lock: no table needed.
