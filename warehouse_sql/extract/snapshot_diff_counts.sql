-- How many keys of each change: inserted, updated, unchanged, deleted (the rows of
-- snapshot_diff.sql plus the unchanged ones, counted). Lookups on the primary key only.
-- Params: resource, interval_key, baseline.
SELECT change, COUNT(*) AS n
FROM (
    SELECT CASE
               WHEN b.row_key IS NULL THEN 'inserted'
               WHEN b.row_hash = c.row_hash THEN 'unchanged'
               ELSE 'updated'
           END AS change
    FROM meta.snapshot_hashes c
    LEFT JOIN meta.snapshot_hashes b
           ON b.resource = c.resource
          AND b.interval_key = :baseline
          AND b.row_key = c.row_key
    WHERE c.resource = :resource
      AND c.interval_key = :interval_key
    UNION ALL
    SELECT 'deleted' AS change
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
) changes
GROUP BY change
