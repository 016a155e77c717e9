-- The published sharing list (共享清单) of one run date, one row per resource.
-- Params: run_date.
SELECT run_date, resource, table_name, name_zh, name_en, provider_unit,
       sharing_type, sharing_condition, granted_to, update_cycle, base_library,
       fields, shared_rows, latest_update, pass_rate, quality_status
FROM share.sharing_list
WHERE run_date = :run_date
ORDER BY resource;
