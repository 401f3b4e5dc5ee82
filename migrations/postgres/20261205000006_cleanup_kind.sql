-- `cleanup`: a source collection was deleted in Kinto; its preview and destination are emptied (leaving
-- tombstones) and signed, as kinto-remote-settings does on source deletion.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('sign', 'review', 'resign', 'rollback', 'cleanup'));
