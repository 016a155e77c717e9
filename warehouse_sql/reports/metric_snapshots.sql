-- Every metric snapshot of one run date, in a stable order (long format for the CSV export).
-- Params: run_date.
SELECT metric, scope_type, scope, numerator, denominator, value
FROM meta.metric_snapshots
WHERE run_date = :run_date
ORDER BY metric, scope_type, scope;
