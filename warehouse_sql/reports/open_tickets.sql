-- Every feedback ticket not yet struck off (state <> 'resolved'), with its resource's name,
-- for the per-unit quality reports. failed_keys is personal data: the report masks it.
-- Params: none.
SELECT t.ticket_id, t.unit, t.resource,
       r.name_zh AS resource_name_zh, r.name_en AS resource_name_en,
       t.check_id, t.field, t.severity, t.state, t.rule, t.assignee,
       t.evaluated, t.failed, t.failed_keys, t.sample,
       t.opened_interval, t.last_interval, t.due_date
FROM quality.tickets AS t
LEFT JOIN meta.catalog_resources AS r ON r.code = t.resource
WHERE t.state <> 'resolved'
ORDER BY t.unit,
         CASE t.severity WHEN 'blocking' THEN 0 ELSE 1 END,
         t.resource, t.check_id;
