-- meta.metric_snapshots for one run date: the numbers leadership reads (DOMAIN.md).
-- Runs after need_status.sql. Params: run_date.
DELETE FROM meta.metric_snapshots WHERE run_date = :run_date;

-- Sharing ratio (数据共享比例): needs met ÷ all needs, overall.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'sharing_ratio', 'overall', 'all', SUM(met), COUNT(*), 1.0 * SUM(met) / COUNT(*)
FROM meta.need_status WHERE run_date = :run_date
HAVING COUNT(*) > 0;

-- ... per service item.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'sharing_ratio', 'item', item, SUM(met), COUNT(*), 1.0 * SUM(met) / COUNT(*)
FROM meta.need_status WHERE run_date = :run_date
GROUP BY item;

-- ... per consumer unit (the unit handling the item).
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'sharing_ratio', 'consumer_unit', handling_unit, SUM(met), COUNT(*), 1.0 * SUM(met) / COUNT(*)
FROM meta.need_status WHERE run_date = :run_date
GROUP BY handling_unit;

-- ... per source unit: needs whose deciding resource (the one meeting it, or its first
-- listed) that unit provides; needs with no resource have no source unit.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'sharing_ratio', 'source_unit', r.unit, SUM(ns.met), COUNT(*), 1.0 * SUM(ns.met) / COUNT(*)
FROM meta.need_status ns JOIN meta.catalog_resources r ON r.code = ns.resource
WHERE ns.run_date = :run_date
GROUP BY r.unit;

-- ... per region (division code of the handling unit).
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'sharing_ratio', 'region', u.region, SUM(ns.met), COUNT(*), 1.0 * SUM(ns.met) / COUNT(*)
FROM meta.need_status ns JOIN meta.catalog_units u ON u.code = ns.handling_unit
WHERE ns.run_date = :run_date
GROUP BY u.region;

-- Needs met (count), for the bulletin.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'needs_met', 'overall', 'all', SUM(met), COUNT(*), SUM(met)
FROM meta.need_status WHERE run_date = :run_date
HAVING COUNT(*) > 0;

-- Items fully served (一证通办 / 最多跑一次): items all of whose needs are met ÷ all items.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'items_fully_served', 'overall', 'all',
       SUM(CASE WHEN unmet = 0 THEN 1 ELSE 0 END), COUNT(*),
       1.0 * SUM(CASE WHEN unmet = 0 THEN 1 ELSE 0 END) / COUNT(*)
FROM (SELECT item, SUM(1 - met) AS unmet FROM meta.need_status WHERE run_date = :run_date GROUP BY item) per_item
HAVING COUNT(*) > 0;

-- Data provision rate (数据提供率): resources delivered on time ÷ resources on the unit's
-- responsibility list ("on time": delivered in this run's interval).
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'provision_rate', 'unit', rl.unit,
       SUM(COALESCE(s.delivered, 0)), COUNT(*), 1.0 * SUM(COALESCE(s.delivered, 0)) / COUNT(*)
FROM meta.catalog_responsibilities rl
LEFT JOIN meta.resource_status s ON s.resource = rl.resource AND s.run_date = :run_date
GROUP BY rl.unit;

-- Structuring rate (数据结构化率): delivered as schema-checked tables ÷ delivered.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'structuring_rate', 'unit', r.unit, SUM(s.structured), SUM(s.delivered),
       1.0 * SUM(s.structured) / SUM(s.delivered)
FROM meta.resource_status s JOIN meta.catalog_resources r ON r.code = s.resource
WHERE s.run_date = :run_date
GROUP BY r.unit
HAVING SUM(s.delivered) > 0;

-- Quality loop: live tickets per source unit, and those past their due date.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'open_tickets', 'unit', u.code, COUNT(t.ticket_id), NULL, COUNT(t.ticket_id)
FROM meta.catalog_units u
JOIN meta.catalog_resources r ON r.unit = u.code
LEFT JOIN quality.tickets t ON t.resource = r.code
     AND t.state IN ('new', 'acknowledged', 'rectifying', 'disputed', 'reopened')
GROUP BY u.code;

INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'overdue_tickets', 'unit', u.code, COUNT(t.ticket_id), NULL, COUNT(t.ticket_id)
FROM meta.catalog_units u
JOIN meta.catalog_resources r ON r.unit = u.code
LEFT JOIN quality.tickets t ON t.resource = r.code
     AND t.state IN ('new', 'acknowledged', 'rectifying', 'disputed', 'reopened')
     AND t.due_date < :run_date
GROUP BY u.code;

-- Exchange volume (数据交换量): rows moved into the centre and published out of it.
INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'exchange_rows_in', 'overall', 'all', SUM(extracted), NULL, SUM(extracted)
FROM meta.resource_status WHERE run_date = :run_date;

INSERT INTO meta.metric_snapshots (run_date, metric, scope_type, scope, numerator, denominator, value)
SELECT :run_date, 'exchange_rows_out', 'overall', 'all', SUM(shared_rows), NULL, SUM(shared_rows)
FROM meta.resource_status WHERE run_date = :run_date;
