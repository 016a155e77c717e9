-- 0005: store the failure percentage of every check run beside its counts (issue 5:
-- "per run and check, rows evaluated, failed, percent"); NULL when no row was evaluated.
ALTER TABLE quality.check_results ADD COLUMN failed_pct DOUBLE PRECISION;

UPDATE quality.check_results
SET failed_pct = CASE WHEN evaluated > 0 THEN 100.0 * failed / evaluated END;
