-- Keys the data centre accepted as false positives (accepted disputes), per check.
-- Params: resource.
SELECT check_id, row_key
FROM quality.waivers
WHERE resource = :resource
ORDER BY check_id, row_key;
