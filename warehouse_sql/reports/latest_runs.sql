-- The latest run of each resource whose interval ends before the cutoff (the day after the
-- run date's interval end, as 'YYYY-MM-DD'), so a backfilled report never shows later runs.
-- Comparing with a date-only text works on SQLite whichever separator the timestamp text
-- uses ('T' or ' '), and on PostgreSQL the literal casts to a timestamp.
-- Params: cutoff.
WITH ranked AS (
    SELECT resource, unit, interval_key, interval_start, interval_end, status,
           extracted, loaded, quarantined, warned, latest_update, error,
           ROW_NUMBER() OVER (PARTITION BY resource ORDER BY interval_end DESC, interval_key DESC) AS rn
    FROM meta.runs
    WHERE interval_end < :cutoff
)
SELECT resource, unit, interval_key, interval_start, interval_end, status,
       extracted, loaded, quarantined, warned, latest_update, error
FROM ranked
WHERE rn = 1
ORDER BY unit, resource;
