-- Every feedback ticket not yet struck off (state <> 'resolved'), with its resource's name,
-- its dispute and escalation, and the reproducing query of its latest run, for the per-unit
-- quality reports. failed_keys is masked (CheckResult); the raw keys stay in check_failures.
-- Params: none.
SELECT t.ticket_id, t.unit, t.resource,
       r.name_zh AS resource_name_zh, r.name_en AS resource_name_en,
       t.check_id, t.field, t.severity, t.state, t.rule, t.assignee,
       t.evaluated, t.failed, t.failed_keys, t.sample,
       t.opened_interval, t.last_interval, t.due_date,
       t.dispute_reason, t.dispute_comment, t.dispute_status, t.escalated_on,
       c.reproduce_sql, c.waived, c.observed
FROM quality.tickets AS t
LEFT JOIN meta.catalog_resources AS r ON r.code = t.resource
LEFT JOIN quality.check_runs AS c
       ON c.resource = t.resource AND c.interval_key = t.last_interval AND c.check_id = t.check_id
WHERE t.state <> 'resolved'
ORDER BY t.unit,
         CASE t.severity WHEN 'blocking' THEN 0 ELSE 1 END,
         t.resource, t.check_id;
