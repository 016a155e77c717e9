-- Every failing row (delivery row number, raw key) of one ticket's latest run, for the
-- unit's XLSX; the report masks the keys before writing them.
-- Params: resource, interval_key, check_id.
SELECT row_num, row_key
FROM quality.check_failures
WHERE resource = :resource AND interval_key = :interval_key AND check_id = :check_id
ORDER BY row_num;
