-- The catalog's units (snapshot refreshed by every run), for names in the bulletin.
-- Params: none.
SELECT code, name_zh, name_en, region
FROM meta.catalog_units
ORDER BY code;
