-- The sharing needs not met on one run date, why, and the resource that fails them.
-- Params: run_date.
SELECT s.item, i.name_zh AS item_name_zh, s.need, n.material_zh, s.handling_unit,
       s.reason, s.resource, r.name_zh AS resource_name_zh, r.unit AS provider_unit
FROM meta.need_status AS s
LEFT JOIN meta.catalog_items AS i ON i.code = s.item
LEFT JOIN meta.catalog_needs AS n ON n.item = s.item AND n.need = s.need
LEFT JOIN meta.catalog_resources AS r ON r.code = s.resource
WHERE s.run_date = :run_date AND s.met = 0
ORDER BY s.item, s.need;
