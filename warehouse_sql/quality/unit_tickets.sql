-- Every ticket of one unit with the resource name, live or resolved, for reports, digests
-- and the supervision list. failed_keys is masked already (CheckResult); row keys are not here.
-- Params: unit.
SELECT t.ticket_id, t.unit, t.resource, r.name_zh AS resource_name_zh, r.name_en AS resource_name_en,
       t.check_id, t.field, t.severity, t.state, t.rule, t.assignee, t.evaluated, t.failed,
       t.failed_keys, t.sample, t.opened_interval, t.last_interval, t.due_date, t.opened_at,
       t.updated_at, t.closed_at, t.dispute_reason, t.dispute_comment, t.dispute_status, t.escalated_on
FROM quality.tickets AS t
LEFT JOIN meta.catalog_resources AS r ON r.code = t.resource
WHERE t.unit = :unit
ORDER BY CASE t.severity WHEN 'blocking' THEN 0 ELSE 1 END, t.resource, t.check_id;
