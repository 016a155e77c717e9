-- Reproduces the failing rows of one check in one run: every failing row's delivery row
-- number and raw primary key (uncapped), with the quarantined record when the row was
-- quarantined (blocking failures) and NULL when it loaded (warnings). Personal data: run it
-- inside the warehouse only.
-- Params: resource, interval_key, check_id.
SELECT f.row_num, f.row_key, q.reasons, q.record
FROM quality.check_failures AS f
LEFT JOIN quality.quarantine AS q
       ON q.resource = f.resource AND q.interval_key = f.interval_key AND q.row_num = f.row_num
WHERE f.resource = :resource
  AND f.interval_key = :interval_key
  AND f.check_id = :check_id
ORDER BY f.row_num;
