-- See migrations/postgres/20261122000003_workflow.sql.
ALTER TABLE jobs ADD COLUMN previous_status TEXT;
