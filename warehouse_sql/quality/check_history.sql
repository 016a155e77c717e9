-- Every check result of one unit's resources up to a cutoff, newest interval first: the
-- trend of each check (rows evaluated, failed, the stored failure percent) for the unit's report.
-- Params: unit, cutoff ('YYYY-MM-DD': intervals ending before it).
SELECT c.resource, c.check_id, c.severity, c.interval_key, c.evaluated, c.failed,
       COALESCE(c.failed_pct, 0) AS percent
FROM quality.check_results AS c
JOIN meta.runs AS r ON r.resource = c.resource AND r.interval_key = c.interval_key
WHERE r.unit = :unit
  AND r.interval_end < :cutoff
ORDER BY c.resource, c.check_id, r.interval_end DESC;
