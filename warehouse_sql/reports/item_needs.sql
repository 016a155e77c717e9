-- Per service item of one run date: how many sharing needs it has and how many are met.
-- Driven by need_status (per run date) so a backfilled bulletin shows that day's catalog.
-- Params: run_date.
SELECT s.item, i.name_zh AS item_name_zh, i.name_en AS item_name_en, s.handling_unit,
       COUNT(*) AS needs,
       SUM(s.met) AS met
FROM meta.need_status AS s
LEFT JOIN meta.catalog_items AS i ON i.code = s.item
WHERE s.run_date = :run_date
GROUP BY s.item, i.name_zh, i.name_en, s.handling_unit
ORDER BY s.item;
