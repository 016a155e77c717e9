-- meta.need_status for one run date: is each sharing need met, and if not, why.
-- A need is met when ANY of its listed resources is usable by the item's handling unit.
-- A resource is usable when it is delivered, shared, granted to the handling unit (for
-- conditional sharing; a unit always uses its own data), fresh and quality-passing; the
-- first failing condition in that order is the reason. An unmet need reports the reason of
-- its first listed resource, or no_resource when it lists none. Params: run_date.
DELETE FROM meta.need_status WHERE run_date = :run_date;

INSERT INTO meta.need_status (run_date, item, need, handling_unit, met, reason, resource)
WITH res AS (
    SELECT r.code, r.unit, r.sharing_type, r.status,
           COALESCE(s.delivered, 0) AS delivered,
           COALESCE(s.fresh, 0) AS fresh,
           COALESCE(s.quality_ok, 0) AS quality_ok
    FROM meta.catalog_resources r
    LEFT JOIN meta.resource_status s ON s.resource = r.code AND s.run_date = :run_date
),
candidate AS (
    SELECT nr.item, nr.need, nr.resource, nr.position,
           CASE
               WHEN res.status <> 'active' OR res.delivered = 0 THEN 'not_delivered'
               WHEN res.sharing_type = 'not_shared' THEN 'not_shared'
               WHEN res.sharing_type = 'conditional' AND res.unit <> i.handling_unit
                    AND NOT EXISTS (SELECT 1 FROM meta.catalog_grants g
                                    WHERE g.resource = res.code AND g.unit = i.handling_unit)
                   THEN 'not_granted'
               WHEN res.fresh = 0 THEN 'stale'
               WHEN res.quality_ok = 0 THEN 'failing_quality'
           END AS reason
    FROM meta.catalog_need_resources nr
    JOIN meta.catalog_items i ON i.code = nr.item
    JOIN res ON res.code = nr.resource
),
first_listed AS (
    SELECT item, need, MIN(position) AS position FROM candidate GROUP BY item, need
),
first_usable AS (
    SELECT item, need, MIN(position) AS position FROM candidate WHERE reason IS NULL GROUP BY item, need
)
SELECT :run_date,
       n.item,
       n.need,
       i.handling_unit,
       CASE WHEN fu.position IS NOT NULL THEN 1 ELSE 0 END,
       CASE WHEN fu.position IS NOT NULL THEN NULL
            WHEN fl.position IS NULL THEN 'no_resource'
            ELSE cf.reason END,
       COALESCE(cu.resource, cf.resource)
FROM meta.catalog_needs n
JOIN meta.catalog_items i ON i.code = n.item
LEFT JOIN first_usable fu ON fu.item = n.item AND fu.need = n.need
LEFT JOIN candidate cu ON cu.item = n.item AND cu.need = n.need AND cu.position = fu.position
LEFT JOIN first_listed fl ON fl.item = n.item AND fl.need = n.need
LEFT JOIN candidate cf ON cf.item = n.item AND cf.need = n.need AND cf.position = fl.position;
