-- The keys that changed between the baseline interval and this one: inserted (no baseline
-- row), updated (hash differs), deleted (in the baseline only); unchanged keys are left out
-- (their number is snapshot_stored.sql's count minus the inserted and updated rows). Every lookup is on the primary key of
-- meta.snapshot_hashes (resource, interval_key, row_key): written as plain joins, not CTEs,
-- which SQLite would scan once per row.
-- Params: resource, interval_key, baseline (NULL: first snapshot, every key inserted).
SELECT c.row_key,
       CASE WHEN b.row_key IS NULL THEN 'inserted' ELSE 'updated' END AS change
FROM meta.snapshot_hashes c
LEFT JOIN meta.snapshot_hashes b
       ON b.resource = c.resource
      AND b.interval_key = :baseline
      AND b.row_key = c.row_key
WHERE c.resource = :resource
  AND c.interval_key = :interval_key
  AND (b.row_key IS NULL OR b.row_hash <> c.row_hash)
UNION ALL
SELECT b.row_key, 'deleted' AS change
FROM meta.snapshot_hashes b
WHERE b.resource = :resource
  AND b.interval_key = :baseline
  AND NOT EXISTS (
      SELECT 1
      FROM meta.snapshot_hashes c
      WHERE c.resource = b.resource
        AND c.interval_key = :interval_key
        AND c.row_key = b.row_key
  )
