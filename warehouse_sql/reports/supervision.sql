-- The supervision list (挂牌督办) as of now: overdue tickets listed and not yet struck off.
-- Params: none.
SELECT s.ticket_id, s.unit, u.name_zh AS unit_name_zh, s.resource, r.name_zh AS resource_name_zh,
       s.check_id, s.severity, s.due_date, s.listed_on, t.state, t.failed, t.evaluated
FROM quality.supervision AS s
JOIN quality.tickets AS t ON t.ticket_id = s.ticket_id
LEFT JOIN meta.catalog_units AS u ON u.code = s.unit
LEFT JOIN meta.catalog_resources AS r ON r.code = s.resource
WHERE s.delisted_on IS NULL
ORDER BY s.listed_on, s.unit, s.ticket_id;
