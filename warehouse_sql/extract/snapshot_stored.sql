-- How many keys this interval's snapshot stored (a key staged twice counts once): the
-- unchanged keys are these minus the inserted and updated rows of snapshot_diff.sql.
-- Params: resource, interval_key.
SELECT COUNT(*) AS n
FROM meta.snapshot_hashes
WHERE resource = :resource
  AND interval_key = :interval_key
