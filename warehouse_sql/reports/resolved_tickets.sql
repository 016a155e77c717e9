-- Tickets struck off (resolved) by a run, with the interval of the run that resolved them;
-- the report keeps those whose run date is the report's.
-- Params: none.
SELECT t.ticket_id, t.unit, t.resource, r.name_zh AS resource_name_zh, t.check_id, t.severity,
       t.opened_interval, t.last_interval, t.closed_at
FROM quality.tickets AS t
LEFT JOIN meta.catalog_resources AS r ON r.code = t.resource
WHERE t.state = 'resolved'
ORDER BY t.unit, t.resource, t.check_id;
