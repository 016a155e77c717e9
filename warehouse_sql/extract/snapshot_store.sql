-- Store the incoming hashes as this interval's (a rerun replaces its own), one row per key:
-- a key staged twice keeps its LAST row, as a dictionary filled in staged order would.
-- Older baselines are dropped (newer intervals keep theirs for reruns); a NULL :baseline
-- (first snapshot) drops nothing.
-- Params: resource, interval_key, baseline.
DELETE FROM meta.snapshot_hashes
WHERE resource = :resource
  AND interval_key = :interval_key;

INSERT INTO meta.snapshot_hashes (resource, interval_key, row_key, row_hash)
SELECT :resource, :interval_key, row_key, row_hash
FROM (
    SELECT row_key, row_hash,
           ROW_NUMBER() OVER (PARTITION BY row_key ORDER BY seq DESC) AS nth
    FROM snapshot_incoming
) latest
WHERE nth = 1;

DELETE FROM meta.snapshot_hashes
WHERE resource = :resource
  AND interval_key < :baseline;

DROP TABLE snapshot_incoming;
